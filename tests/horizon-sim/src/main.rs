//! `horizon-sim`: the Horizon simulator as a process, for the local stack.
//!
//! Prints `horizon-sim listening on ADDR` on stdout once it accepts connections, and stops
//! cleanly on SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use horizon_sim::{HorizonSim, SimConfig, TESTNET_PASSPHRASE};
use tokio::signal::unix::{SignalKind, signal};

/// A Horizon simulator: Horizon's HTTP API over a simulated Stellar ledger (tests only).
#[derive(Debug, Parser)]
#[command(name = "horizon-sim", version)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8000", env = "HORIZON_SIM_LISTEN")]
    listen: SocketAddr,
    /// The network passphrase transactions must be signed for.
    #[arg(long, default_value = TESTNET_PASSPHRASE, env = "HORIZON_SIM_NETWORK_PASSPHRASE")]
    network_passphrase: String,
    /// Milliseconds between ledger closes (0: only through `POST /_sim/ledgers`).
    #[arg(long, default_value_t = 1000, env = "HORIZON_SIM_LEDGER_INTERVAL_MS")]
    ledger_interval_ms: u64,
    /// The public network's cadence: a ledger every 5 s (overrides --ledger-interval-ms).
    #[arg(long)]
    realistic_cadence: bool,
    /// Ledgers a queued transaction may be left out of (outbid) before it is evicted.
    #[arg(long, default_value_t = 4)]
    queue_ledgers: u32,
    /// Serve friendbot on its own port; Horizon's /friendbot answers a 307 to it (as testnet).
    #[arg(long)]
    friendbot_redirect: bool,
    /// Base fee per operation, in stroops.
    #[arg(long, default_value_t = 100)]
    base_fee: u32,
    /// Operations that fit in one ledger.
    #[arg(long, default_value_t = 1000)]
    max_operations_per_ledger: u32,
    /// How many accounts friendbot pays from (accounts funded per ledger).
    #[arg(long, default_value_t = 16)]
    friendbot_accounts: usize,
    /// Seconds `POST /transactions` waits for a result before answering 504.
    #[arg(long, default_value_t = 30)]
    submission_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = SimConfig {
        listen: args.listen,
        network_passphrase: args.network_passphrase,
        ledger_interval: if args.realistic_cadence {
            Some(horizon_sim::config::REALISTIC_LEDGER_INTERVAL)
        } else {
            (args.ledger_interval_ms > 0).then(|| Duration::from_millis(args.ledger_interval_ms))
        },
        queue_ledgers: args.queue_ledgers,
        friendbot_redirect: args.friendbot_redirect,
        base_fee: args.base_fee,
        max_operations_per_ledger: args.max_operations_per_ledger,
        friendbot_accounts: args.friendbot_accounts,
        submission_timeout: Duration::from_secs(args.submission_timeout_secs),
        ..SimConfig::default()
    };
    let sim = HorizonSim::start(config)
        .await
        .context("starting horizon-sim")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "horizon-sim listening on {}", sim.addr())?;
    writeln!(stdout, "horizon-sim rpc on {}", sim.rpc_url())?;
    if let Some(friendbot) = sim.friendbot_url() {
        writeln!(stdout, "horizon-sim friendbot on {friendbot}")?;
    }
    stdout.flush()?;

    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    sim.shutdown().await;
    Ok(())
}
