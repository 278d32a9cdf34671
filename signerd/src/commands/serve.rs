//! `signerd serve --config FILE [--accept-audit-gap]`: run the daemon until SIGTERM or SIGINT;
//! SIGHUP reloads the server certificate and key, the client CA, the CRLs and the ACL, all or
//! nothing.

use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Config, LogFormat};
use crate::server::Signerd;

/// Loads the config, connects the backends, binds the listener and serves.
///
/// Once ready, prints `signerd listening on ADDR` on stdout (the address is the real one when
/// `server.listen` uses port 0), which scripts and tests wait for.
///
/// `accept_audit_gap`: start even though the audit log is behind its anchor, recording a `gap`.
pub fn run(config_path: &Path, accept_audit_gap: bool) -> anyhow::Result<()> {
    let mut config = Config::load(config_path)
        .with_context(|| format!("invalid config {}", config_path.display()))?;
    config.audit.accept_gap = accept_audit_gap;
    init_logging(config.log.format, config.log.level.as_deref());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.worker_threads())
        .enable_all()
        .build()?
        .block_on(serve(config, config_path))
}

async fn serve(config: Config, config_path: &Path) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let signerd = Signerd::start(config)
        .await
        .context("signerd cannot start")?;
    let metrics = signerd.bind_metrics().await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("server.listen: cannot bind {listen}"))?;
    let local = listener.local_addr()?;
    // Before the readiness line: a SIGTERM sent as soon as it is printed must find the handler
    // installed, or the default action kills signerd without its final checkpoint.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    println!("signerd audit key {}", signerd.audit_public_key());
    if let Some(metrics) = &metrics {
        let addr = metrics.local_addr()?;
        tracing::info!(%addr, "metrics listening");
        println!("signerd metrics on {addr}");
    }
    tracing::info!(%local, "signerd listening");
    println!("signerd listening on {local}");

    let reload = signerd.trust_reloader(config_path.to_path_buf());
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            // The reload reads files: keep it off the async workers.
            let reload = reload.clone();
            let outcome = tokio::task::spawn_blocking(reload).await;
            match outcome {
                Ok(Ok(())) => tracing::info!(
                    "SIGHUP: reloaded the server certificate, client CA, CRLs and ACL; \
                     other settings need a restart"
                ),
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "SIGHUP: reload refused; keeping the old server certificate, client CA, CRLs and ACL"
                ),
                Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed"),
            }
        }
    });

    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    signerd.serve(listener, metrics, shutdown).await?;
    Ok(())
}

/// Logs go to stderr; stdout is kept for the readiness line.
pub fn init_logging(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
