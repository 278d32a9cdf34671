//! The `gateway` command line. Parsing and dispatch only; each subcommand lives in
//! `gateway::commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The stellar-signer gateway: users, wallets and API keys, signing through signerd.
#[derive(Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConfigArg {
    /// Config file; else $GATEWAY_CONFIG; else /etc/gateway/gateway.toml.
    #[arg(long, env = "GATEWAY_CONFIG", default_value = gateway::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (migrates the database first).
    Serve(ConfigArg),
    /// Run only the payment worker (no HTTP API); several may run against one Postgres.
    Worker(ConfigArg),
    /// Apply pending database migrations and exit.
    Migrate(ConfigArg),
    /// Manage API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key and print it (once) on stdout.
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// `service` (users and wallets) or `admin` (also block, freeze, audit log).
        #[arg(long)]
        role: String,
        /// A label for the key (who or what uses it).
        #[arg(long, default_value = "unnamed")]
        name: String,
    },
    /// List keys (never the keys themselves) as JSON lines.
    List(ConfigArg),
    /// Revoke a key by id.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The key's id (from `create` or `list`).
        id: String,
    },
}

fn main() -> anyhow::Result<()> {
    use gateway::commands::{api_key, migrate, serve, worker};
    match Cli::parse().command {
        Command::Serve(c) => serve::run(&c.config),
        Command::Worker(c) => worker::run(&c.config),
        Command::Migrate(c) => migrate::run(&c.config),
        Command::ApiKey(ApiKeyCommand::Create { config, role, name }) => {
            api_key::create(&config.config, &role, &name)
        }
        Command::ApiKey(ApiKeyCommand::List(c)) => api_key::list(&c.config),
        Command::ApiKey(ApiKeyCommand::Revoke { config, id }) => {
            api_key::revoke(&config.config, &id)
        }
    }
}
