//! The `signerd` command line. Parsing and dispatch only; each subcommand lives in
//! `signerd::commands`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Hardware-backed Stellar transaction signer.
#[derive(Parser)]
#[command(name = "signerd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the signing daemon (mutual-TLS gRPC).
    Serve {
        /// Config file; else $SIGNERD_CONFIG; else /etc/signerd/signerd.toml.
        #[arg(
            long,
            env = "SIGNERD_CONFIG",
            default_value = "/etc/signerd/signerd.toml"
        )]
        config: PathBuf,
    },
    /// Write a development PKI: CA, localhost server certificate, client certificates.
    DevPki {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// A client identity to issue a certificate for (CN = NAME); repeatable.
        #[arg(long = "client")]
        clients: Vec<String>,
    },
    /// Print a key's protection attributes, read straight from the PKCS#11 token, as JSON.
    InspectKey {
        /// Config file; else $SIGNERD_CONFIG; else /etc/signerd/signerd.toml.
        #[arg(
            long,
            env = "SIGNERD_CONFIG",
            default_value = "/etc/signerd/signerd.toml"
        )]
        config: PathBuf,
        /// The key id.
        key_id: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => signerd::commands::serve::run(&config),
        Command::DevPki { out, clients } => signerd::commands::dev_pki::run(&out, &clients),
        Command::InspectKey { config, key_id } => {
            signerd::commands::inspect_key::run(&config, &key_id)
        }
    }
}
