//! `gateway serve --config FILE`: run the HTTP API until SIGTERM or SIGINT.

use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Config, LogFormat};
use crate::server::Gateway;

/// Loads the config, connects and migrates the database, binds the listener and serves.
///
/// Once ready, prints `gateway listening on ADDR` on stdout (the real address when
/// `server.listen` uses port 0), which scripts and tests wait for.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)
        .with_context(|| format!("invalid config {}", config_path.display()))?;
    init_logging(config.log.format, config.log.level.as_deref());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen;
    // Signal handlers first: a SIGTERM during start-up must not kill the process half-way.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let gateway = Gateway::start(config)
        .await
        .context("gateway cannot start")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("server.listen: cannot bind {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "gateway listening");
    println!("gateway listening on {local}");
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    gateway.serve(listener, shutdown).await?;
    Ok(())
}

/// Logs go to stderr; stdout is kept for the readiness line.
pub fn init_logging(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => subscriber.json().try_init(),
        LogFormat::Text => subscriber.try_init(),
    };
    if installed.is_err() {
        eprintln!("a logger was already installed; keeping it");
    }
}
