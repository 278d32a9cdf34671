//! `gateway worker --config FILE`: run only the payment worker, the webhook dispatcher and (when
//! `[deposits] ingest` is on) the deposit ingester (no HTTP API) until SIGTERM or SIGINT. Several
//! workers (and `serve` processes with them on) may share one Postgres: leases decide who works.

use std::path::Path;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use super::serve::init_logging;
use crate::config::Config;
use crate::server::Gateway;

/// Loads the config, connects and migrates the database and runs the worker.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)
        .with_context(|| format!("invalid config {}", config_path.display()))?;
    init_logging(config.log.format, config.log.level.as_deref());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let mut terminate = signal(SignalKind::terminate())?;
            let mut interrupt = signal(SignalKind::interrupt())?;
            let gateway = Gateway::start(config)
                .await
                .context("gateway cannot start")?;
            println!("gateway worker running");
            let shutdown = async move {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            };
            gateway.work(shutdown).await?;
            Ok(())
        })
}
