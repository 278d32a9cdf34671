//! The running gateway: [`Gateway::start`] connects the database (migrating it) and prepares the
//! signerd client; [`Gateway::serve`] answers HTTP (and runs the payment worker and the webhook
//! dispatcher, unless configured off) until `shutdown` completes, then stops
//! accepting, lets in-flight requests finish (up to `server.shutdown_grace_ms`) and closes the
//! database pool last.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::{self, AppState, rate_limit};
use crate::metrics::Metrics;
use crate::model::Timestamp;
use crate::payments::worker::{PaymentWorker, WorkerSettings};
use crate::provision::WalletProvisioner;
use crate::signer::Signer;
use crate::store::Store;
use crate::webhooks::dispatcher::Dispatcher;

/// How often finished Idempotency-Key records past their retention are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// A started (database migrated, signerd client ready) but not yet serving gateway.
pub struct Gateway {
    config: Config,
    state: AppState,
}

impl Gateway {
    /// Connects and migrates the database and prepares the signerd client. signerd need not be
    /// up yet: the gateway starts, reports not-ready and answers `SIGNER_UNAVAILABLE` until it is.
    pub async fn start(config: Config) -> Result<Self> {
        let database_url = config.database_url()?;
        let store = Store::connect(&database_url, &config.database).await?;
        let migrations = store.migrate().await?;
        tracing::info!(database = %database_url.redacted(), migrations, "database ready");
        let metrics = Metrics::new();
        let signer = Arc::new(Signer::connect(&config.signer, metrics.clone())?);
        let provisioner = Arc::new(WalletProvisioner::new(
            store.clone(),
            signer.clone(),
            metrics.clone(),
        ));
        let network = config
            .network
            .as_ref()
            .map(|n| crate::network::connect(n, metrics.clone()))
            .transpose()?;
        let state = AppState {
            store,
            signer,
            provisioner,
            metrics,
            limiter: Arc::new(rate_limit::limiter(&config.rate_limit)),
            max_body_bytes: config.server.max_body_bytes,
            request_timeout: config.server.request_timeout(),
            network,
            test_network: config.network.as_ref().is_some_and(|n| n.is_test_network()),
            payment_limits: http::payments::default_limits(&config.payments),
            payment_wake: Arc::new(crate::payments::worker::PaymentWake::default()),
            webhooks: Arc::new(config.webhooks.clone()),
        };
        Ok(Gateway { config, state })
    }

    /// The shared state (tests use its store).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The payment worker, when the network is configured. `with_api`: whether this process also
    /// accepts payments (only then can a wallet held idle be handed its next payment).
    pub fn payment_worker(&self, with_api: bool) -> Option<Arc<PaymentWorker>> {
        let network_config = self.config.network.as_ref()?;
        let network = self.state.network.clone()?;
        let mut settings = WorkerSettings::new(network_config, &self.config.payments);
        if !with_api {
            settings.idle_hold = std::time::Duration::ZERO;
        }
        Some(Arc::new(PaymentWorker::new(
            self.state.store.clone(),
            self.state.signer.clone(),
            network,
            settings,
            self.state.metrics.clone(),
            self.state.payment_wake.clone(),
        )))
    }

    /// The webhook dispatcher.
    pub fn dispatcher(&self) -> Result<Arc<Dispatcher>> {
        Ok(Arc::new(Dispatcher::new(
            self.state.store.clone(),
            self.config.webhooks.clone(),
            self.state.metrics.clone(),
        )?))
    }

    /// The deposit ingester, when `[deposits] ingest` is on and a network is configured,
    /// running until `stop`.
    fn ingester(&self, stop: watch::Receiver<bool>) -> Option<tokio::task::JoinHandle<()>> {
        let network = self.state.network.as_ref()?;
        self.config.deposits.ingest.then(|| {
            tokio::spawn(
                Arc::new(crate::deposits::Ingester::new(
                    self.state.store.clone(),
                    network.clone(),
                    self.config.deposits.clone(),
                    self.state.metrics.clone(),
                ))
                .run(stop),
            )
        })
    }

    /// Runs only the payment worker (when `[network]` is configured), the webhook dispatcher and
    /// the deposit ingester (when on) until `shutdown` completes (`gateway worker`).
    pub async fn work(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let worker = self.payment_worker(false).ok_or_else(|| {
            Error::Config("network: `gateway worker` needs a [network] section".into())
        })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let dispatching = tokio::spawn(self.dispatcher()?.run(stop_rx.clone()));
        let ingester = self.ingester(stop_rx.clone());
        let running = tokio::spawn(worker.run(stop_rx));
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = running.await;
        let _ = dispatching.await;
        if let Some(ingester) = ingester {
            // Every step commits whole or not at all: aborting one is safe.
            ingester.abort();
        }
        self.state.store.close().await;
        Ok(())
    }

    /// Serves until `shutdown` completes; see the module documentation.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let purge = tokio::spawn(purge_idempotency_keys(
            self.state.store.clone(),
            self.config.idempotency.retention(),
            stop_rx.clone(),
        ));
        let worker = if self.config.payments.worker {
            self.payment_worker(true)
                .map(|worker| tokio::spawn(worker.run(stop_rx.clone())))
        } else {
            None
        };
        let dispatcher = if self.config.webhooks.dispatcher {
            Some(tokio::spawn(self.dispatcher()?.run(stop_rx.clone())))
        } else {
            None
        };
        let ingester = self.ingester(stop_rx.clone());
        let store = self.state.store.clone();
        let app = http::router(self.state);
        let mut graceful_rx = stop_rx.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = graceful_rx.wait_for(|stop| *stop).await;
        });
        let grace = self.config.server.shutdown_grace();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, draining in-flight requests");
            let _ = stop_tx.send(true);
            // Keep the sender alive while the server drains.
            std::future::pending::<()>().await;
        };
        let grace_expired = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        };
        let served = tokio::select! {
            served = server => served.map_err(|e| Error::io("http server", e)),
            _ = signal => Ok(()),
            _ = grace_expired => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown grace expired with requests still in flight");
                Ok(())
            }
        };
        purge.abort();
        if let Some(worker) = worker {
            // The worker saw the stop signal; it finishes its current steps (every step is
            // resumable, so aborting would be safe too).
            if tokio::time::timeout(Duration::from_secs(5), worker)
                .await
                .is_err()
            {
                tracing::warn!("payment worker did not stop within 5 s");
            }
        }
        if let Some(dispatcher) = dispatcher {
            // In-flight attempts end within webhooks.timeout_ms; an unrecorded one is sent
            // again (same webhook-id) once its lease expires.
            if tokio::time::timeout(Duration::from_secs(15), dispatcher)
                .await
                .is_err()
            {
                tracing::warn!("webhook dispatcher did not stop within 15 s");
            }
        }
        if let Some(ingester) = ingester {
            // Every step commits whole or not at all: aborting one is safe.
            ingester.abort();
        }
        store.close().await;
        tracing::info!("gateway stopped");
        served
    }
}

async fn purge_idempotency_keys(
    store: Store,
    retention: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        match store
            .purge_idempotency_keys(&Timestamp::before(retention))
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired Idempotency-Key records deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot purge Idempotency-Key records"),
        }
    }
}
