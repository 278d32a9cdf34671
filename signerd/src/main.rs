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
        /// Start even though the audit log is behind the checkpoint anchored in the token
        /// (files deleted or cut): records a `gap` that `audit verify` reports. Use once, after
        /// finding out what was lost.
        #[arg(long)]
        accept_audit_gap: bool,
    },
    /// Write a development PKI: CA, localhost server certificate, client certificates.
    DevPki {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// A client to issue a certificate for (CN = NAME, no SAN: ACL identity `cn:NAME`);
        /// repeatable.
        #[arg(long = "client")]
        clients: Vec<String>,
    },
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
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

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify a log file or a directory of rotated files; exit non-zero at the first bad record.
    Verify {
        /// A log file, or the audit directory.
        path: PathBuf,
        /// The audit public key (G...): verify checkpoint signatures and require the final one.
        #[arg(long)]
        audit_key: Option<String>,
        /// The log is still being written: accept records after the last checkpoint.
        #[arg(long)]
        live: bool,
        /// With --live: fail when the last checkpoint is older than this many seconds.
        #[arg(long, requires = "live")]
        max_checkpoint_age: Option<u64>,
        /// Let a version-1 checkpoint (logs from before checkpoint version 2, whose `final`
        /// flag and time are not signed) seal the log or date it.
        #[arg(long)]
        accept_v1: bool,
        /// SEQ:HASH of a version-2 checkpoint already verified: check only what follows it.
        #[arg(long, requires = "audit_key")]
        from_checkpoint: Option<String>,
    },
    /// List records, filtered.
    Show {
        /// A log file, or the audit directory.
        path: PathBuf,
        /// Only this key id.
        #[arg(long)]
        key_id: Option<String>,
        /// Only this caller identity, as the audit log writes it (`cn:gateway`, `uri:…`).
        #[arg(long)]
        identity: Option<String>,
        /// Only this transaction hash (hex; matches tx, inner tx or signed hash).
        #[arg(long)]
        tx_hash: Option<String>,
        /// Only this decision: signed, denied, failed, created.
        #[arg(long)]
        decision: Option<String>,
        /// Only records at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only records before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            accept_audit_gap,
        } => signerd::commands::serve::run(&config, accept_audit_gap),
        Command::DevPki { out, clients } => signerd::commands::dev_pki::run(&out, &clients),
        Command::Audit(AuditCommand::Verify {
            path,
            audit_key,
            live,
            max_checkpoint_age,
            accept_v1,
            from_checkpoint,
        }) => {
            let args = signerd::commands::audit_verify::VerifyArgs {
                audit_key,
                live,
                max_checkpoint_age_secs: max_checkpoint_age,
                accept_v1,
                from_checkpoint,
            };
            match signerd::commands::audit_verify::run(&path, &args) {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("audit log verification FAILED: {e:#}");
                    std::process::exit(1);
                }
            }
        }
        Command::Audit(AuditCommand::Show {
            path,
            key_id,
            identity,
            tx_hash,
            decision,
            since,
            until,
            json,
        }) => {
            let args = signerd::commands::audit_show::ShowArgs {
                key_id,
                identity,
                tx_hash,
                decision,
                since,
                until,
                json,
            };
            signerd::commands::audit_show::run(&path, &args, &mut std::io::stdout().lock())?;
            Ok(())
        }
        Command::InspectKey { config, key_id } => {
            signerd::commands::inspect_key::run(&config, &key_id)
        }
    }
}
