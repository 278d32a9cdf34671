//! The running daemon: connects the backends, terminates mutual TLS, serves gRPC and keeps the
//! health service honest. `Signerd::serve(listener, shutdown)` returns once in-flight requests
//! have drained.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signer_proto::v1::signer_server::SignerServer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::audit::log::AuditLog;
use crate::backend::gcp_kms::GcpKmsBackend;
use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::{KeyBackend, Keyring};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::guard::{GuardLimits, SequenceGuard};
use crate::limits::VelocityCaps;
use crate::metrics::{BackendLabels, Metrics};
use crate::policy::PolicySet;
use crate::pool::PoolLabels;
use crate::service::SignerService;
use crate::soroban::ledger::LedgerClocks;
use crate::tls::AuthenticatedStream;
use crate::trust::{ReloadableTrust, Trust};

/// The gRPC service name reported by the health service.
pub const SIGNER_SERVICE_NAME: &str = "signer.v1.Signer";

/// A started (backends connected, audit log verified and open, TLS loaded) but not yet serving
/// signerd.
pub struct Signerd {
    config: Config,
    keyring: Arc<Keyring>,
    guard: Arc<Mutex<SequenceGuard>>,
    audit: Arc<AuditLog>,
    caps: Arc<VelocityCaps>,
    metrics: Arc<Metrics>,
    trust: Arc<ReloadableTrust>,
    health_interval: Duration,
}

impl Signerd {
    /// Loads TLS material and connects every configured backend. Any failure here means signerd
    /// does not start, with an error that names the problem.
    pub async fn start(config: Config) -> Result<Self> {
        let trust = Arc::new(ReloadableTrust::new(Trust::load(&config)?));
        let mut backends: Vec<Arc<dyn KeyBackend>> = Vec::new();
        let mut health_interval = Duration::from_secs(5);
        let metrics = Metrics::new();
        if let Some(p11) = &config.backend.pkcs11 {
            let marker_writes = metrics
                .pool
                .marker_writes
                .get_or_create(&PoolLabels { backend: "pkcs11" })
                .clone();
            backends.push(Arc::new(Pkcs11Backend::connect(p11, marker_writes).await?));
            health_interval = health_interval.min(p11.health_check_interval());
        }
        if let Some(kms) = &config.backend.gcp_kms {
            backends.push(Arc::new(GcpKmsBackend::connect(kms).await?));
            health_interval = health_interval.min(kms.health_check_interval());
        }
        let keyring = Arc::new(Keyring::new(backends, &config.backend.default)?);
        let guard = Arc::new(Mutex::new(SequenceGuard::new(GuardLimits {
            max_entries: config.audit.guard_max_entries,
            max_entries_per_identity: config.policy.guard_max_entries_per_identity,
        })));
        let audit = AuditLog::open(&config.audit, &keyring, guard.clone(), metrics.clone()).await?;
        tracing::info!(
            audit_key = %audit.public_key().account_id(),
            "audit log open; verify with `signerd audit verify --audit-key {}`",
            audit.public_key().account_id()
        );
        let caps = Arc::new(VelocityCaps::new(&config.limits));
        Ok(Signerd {
            config,
            keyring,
            guard,
            audit,
            caps,
            metrics,
            trust,
            health_interval,
        })
    }

    /// The audit public key (G...), for `signerd audit verify`.
    pub fn audit_public_key(&self) -> String {
        self.audit.public_key().account_id()
    }

    /// Binds the metrics listener (when enabled); returns its address.
    pub async fn bind_metrics(&self) -> Result<Option<TcpListener>> {
        if !self.config.metrics.enabled {
            return Ok(None);
        }
        let listen = self.config.metrics.listen;
        TcpListener::bind(listen)
            .await
            .map(Some)
            .map_err(|e| Error::io(format!("metrics.listen: cannot bind {listen}"), e))
    }

    /// A handle that reloads the TLS material and the ACL from `config_path`, for a signal
    /// handler (see [`ReloadableTrust::reload`]). New handshakes and every request from then on
    /// use the new trust; established connections stay open and are held to it.
    pub fn trust_reloader(
        &self,
        config_path: PathBuf,
    ) -> impl Fn() -> Result<()> + Clone + Send + Sync + 'static {
        let trust = self.trust.clone();
        move || trust.reload(&config_path)
    }

    /// Serves until `shutdown` completes, then stops accepting and drains in-flight requests.
    ///
    /// Order at shutdown: stop accepting, drain in-flight requests, stop the background tasks,
    /// then write the final audit checkpoint and close the audit log, last.
    pub async fn serve(
        self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        // Before any task starts: a failure here leaves nothing running.
        let ledgers = Arc::new(LedgerClocks::new(&self.config.stellar_rpc)?);
        let reflection = reflection()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        set_health(&health_reporter, &self.metrics, true).await;
        let health_task = tokio::spawn(watch_health(
            HealthInputs {
                keyring: self.keyring.clone(),
                audit: self.audit.clone(),
                caps: self.caps.clone(),
                guard: self.guard.clone(),
                metrics: self.metrics.clone(),
            },
            health_reporter,
            self.health_interval,
            stop_rx.clone(),
        ));
        let checkpoint_task = self.audit.spawn_checkpoints(stop_rx.clone());
        let pool_tasks = crate::pool::spawn_refills(
            &self.config.pool,
            &self.keyring,
            self.audit.clone(),
            self.metrics.clone(),
            stop_rx.clone(),
        );
        let metrics_task = metrics_listener.map(|listener| {
            let mut stop = stop_rx.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.changed().await;
                };
                if let Err(e) = crate::metrics::serve(listener, metrics, stopped).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            })
        });

        let (conn_tx, conn_rx) = mpsc::channel(64);
        let accept_task = tokio::spawn(accept_connections(
            listener,
            self.trust.clone(),
            Handshakes::new(
                self.config.server.max_handshakes,
                self.config.server.handshake_timeout(),
            ),
            Arc::new(Semaphore::new(self.config.server.max_connections)),
            conn_tx,
            stop_rx,
        ));

        let service = SignerServer::new(
            SignerService::new(
                self.keyring.clone(),
                self.trust.clone(),
                PolicySet::new(&self.config.policy),
                self.guard.clone(),
                self.audit.clone(),
                self.caps.clone(),
                self.metrics.clone(),
            )
            .with_ledger_clocks(ledgers),
        )
        .max_decoding_message_size(self.config.server.max_message_bytes)
        .max_encoding_message_size(self.config.server.max_message_bytes);
        let stop = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, draining in-flight requests");
            let _ = stop_tx.send(true);
        };
        // Per connection, at most max_concurrent_streams requests run (HTTP/2 SETTINGS; the
        // client queues the rest), and no request outlives request_timeout.
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(Some(self.config.server.max_concurrent_streams))
            .timeout(self.config.server.request_timeout())
            .add_service(health_service)
            .add_service(reflection)
            .add_service(service)
            .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), stop)
            .await;
        accept_task.abort();
        health_task.abort();
        // Wait for the aborted tasks to be gone: they may hold backend handles.
        let _ = accept_task.await;
        let _ = health_task.await;
        let _ = checkpoint_task.await;
        for task in pool_tasks {
            let _ = task.await;
        }
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        self.audit.close().await;
        self.keyring.shutdown().await;
        served.map_err(|e| Error::Backend(format!("grpc server: {e}")))?;
        tracing::info!("signerd stopped; audit log closed with a final checkpoint");
        Ok(())
    }
}

/// gRPC server reflection (v1) for `signer.v1` and `grpc.health.v1`, so that `grpcurl` can list
/// and call every RPC; behind the same mutual TLS as everything else.
fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(signer_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("grpc reflection: {e}")))
}

/// The connections still in their TLS handshake. They have a budget of their own, apart from
/// `server.max_connections`, and a short deadline; when the budget is full the oldest pending
/// handshake is closed to make room. An idle socket costs an attacker a connect, and to keep a
/// real client (whose handshake takes one round trip) out, an attacker would have to open
/// `max_handshakes` connections within that round trip, again and again.
struct Handshakes {
    budget: usize,
    timeout: Duration,
    next_id: u64,
    /// Pending handshakes, oldest first; dropping a sender closes that connection.
    pending: Arc<Mutex<BTreeMap<u64, oneshot::Sender<()>>>>,
}

impl Handshakes {
    fn new(budget: usize, timeout: Duration) -> Self {
        Handshakes {
            budget,
            timeout,
            next_id: 0,
            pending: Arc::default(),
        }
    }

    /// Registers a new handshake, closing the oldest pending one when the budget is full.
    /// Returns the ticket the handshake task holds and the future that resolves when it is
    /// closed to make room.
    fn admit(&mut self) -> (HandshakeTicket, oneshot::Receiver<()>) {
        let id = self.next_id;
        self.next_id += 1;
        let (evict, evicted) = oneshot::channel();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while pending.len() >= self.budget {
            // Dropping the sender wakes that task, which closes its connection.
            pending.pop_first();
        }
        pending.insert(id, evict);
        (
            HandshakeTicket {
                id,
                pending: self.pending.clone(),
            },
            evicted,
        )
    }
}

/// A handshake's place in [`Handshakes`]; gives it up when the handshake ends, whichever way.
struct HandshakeTicket {
    id: u64,
    pending: Arc<Mutex<BTreeMap<u64, oneshot::Sender<()>>>>,
}

impl Drop for HandshakeTicket {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Accepts TCP connections and runs each TLS handshake in its own task, so a slow or hostile
/// client cannot hold up the others. Each handshake uses the trust in force when the
/// connection arrived. Only connections that present a valid client certificate naming an
/// identity reach the gRPC server, and only those count against `server.max_connections`.
async fn accept_connections(
    listener: TcpListener,
    trust: Arc<ReloadableTrust>,
    mut handshakes: Handshakes,
    connection_slots: Arc<Semaphore>,
    verified: mpsc::Sender<std::io::Result<AuthenticatedStream>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let trust_now = trust.current();
        let (acceptor, generation) = (
            TlsAcceptor::from(trust_now.tls.clone()),
            trust_now.generation,
        );
        let trust = trust.clone();
        let (ticket, evicted) = handshakes.admit();
        let timeout = handshakes.timeout;
        let connection_slots = connection_slots.clone();
        let verified = verified.clone();
        tokio::spawn(async move {
            let handshake = tokio::select! {
                done = tokio::time::timeout(timeout, acceptor.accept(tcp)) => done,
                _ = evicted => {
                    tracing::debug!(%remote, "handshake budget full: oldest pending connection closed");
                    return;
                }
            };
            drop(ticket);
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::warn!(%remote, error = %e, "tls handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%remote, "tls handshake timed out");
                    return;
                }
            };
            let Ok(slot) = connection_slots.try_acquire_owned() else {
                tracing::warn!(%remote, "connection limit reached; closing the connection");
                return;
            };
            match AuthenticatedStream::new(stream, slot, trust, generation) {
                Ok(stream) => {
                    tracing::debug!(%remote, identity = %stream.identity(), "client authenticated");
                    let _ = verified.send(Ok(stream)).await;
                }
                Err(e) => tracing::warn!(%remote, error = %e, "client certificate refused"),
            }
        });
    }
}

/// What the health loop looks at and maintains.
struct HealthInputs {
    keyring: Arc<Keyring>,
    audit: Arc<AuditLog>,
    caps: Arc<VelocityCaps>,
    guard: Arc<Mutex<SequenceGuard>>,
    metrics: Arc<Metrics>,
}

/// Probes the backends and the audit log on a timer and publishes the result through
/// `grpc.health.v1` and the metrics; also prunes idle velocity-cap state.
async fn watch_health(
    inputs: HealthInputs,
    reporter: HealthReporter,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_healthy = true;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let backends_ok = inputs.keyring.check_health().await;
        let audit_ok = inputs.audit.writer.healthy();
        let healthy = backends_ok && audit_ok;
        for backend in inputs.keyring.backends() {
            if let Ok(count) = backend.key_count().await {
                inputs
                    .metrics
                    .keys_loaded
                    .get_or_create(&BackendLabels {
                        backend: backend.name(),
                    })
                    .set(count as i64);
            }
        }
        let guard_entries = inputs.guard.lock().unwrap_or_else(|p| p.into_inner()).len();
        inputs.metrics.guard_entries.set(guard_entries as i64);
        inputs.caps.prune();
        if healthy != was_healthy {
            if healthy {
                tracing::info!("backends healthy again: SERVING");
            } else {
                tracing::error!(
                    backends_ok,
                    audit_ok,
                    "a backend or the audit log is unavailable: NOT_SERVING"
                );
            }
            was_healthy = healthy;
        }
        set_health(&reporter, &inputs.metrics, healthy).await;
    }
}

async fn set_health(reporter: &HealthReporter, metrics: &Metrics, healthy: bool) {
    metrics.health.set(i64::from(healthy));
    let status = if healthy {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(SIGNER_SERVICE_NAME, status)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_handshake_budget_closes_the_oldest_pending_handshake() {
        let mut handshakes = Handshakes::new(2, Duration::from_secs(3));
        let (first, mut first_evicted) = handshakes.admit();
        let (second, mut second_evicted) = handshakes.admit();
        assert!(
            first_evicted
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        let (_third, mut third_evicted) = handshakes.admit();
        // The oldest was closed to make room; the others keep going.
        assert_eq!(
            first_evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(
            second_evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(
            third_evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        drop(first);
        // A finished handshake gives its place back.
        drop(second);
        let pending = handshakes
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        assert_eq!(pending, 1);
    }
}
