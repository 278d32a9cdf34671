//! The running daemon: connects the backends, terminates mutual TLS, serves gRPC and keeps the
//! health service honest. `Signerd::serve(listener, shutdown)` returns once in-flight requests
//! have drained.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signer_proto::v1::signer_server::SignerServer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::audit::log::AuditLog;
use crate::authz::Acl;
use crate::backend::gcp_kms::GcpKmsBackend;
use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::{KeyBackend, Keyring};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::guard::{GuardLimits, SequenceGuard};
use crate::limits::VelocityCaps;
use crate::metrics::{BackendLabels, Metrics};
use crate::policy::PolicySet;
use crate::service::SignerService;
use crate::tls::{self, AuthenticatedStream, ReloadableCertificate};

/// The gRPC service name reported by the health service.
pub const SIGNER_SERVICE_NAME: &str = "signer.v1.Signer";

/// A started (backends connected, audit log verified and open, TLS loaded) but not yet serving
/// signerd.
pub struct Signerd {
    config: Config,
    keyring: Arc<Keyring>,
    acl: Arc<Acl>,
    guard: Arc<Mutex<SequenceGuard>>,
    audit: Arc<AuditLog>,
    caps: Arc<VelocityCaps>,
    metrics: Arc<Metrics>,
    certificate: Arc<ReloadableCertificate>,
    tls: Arc<rustls::ServerConfig>,
    health_interval: Duration,
}

impl Signerd {
    /// Loads TLS material and connects every configured backend. Any failure here means signerd
    /// does not start, with an error that names the problem.
    pub async fn start(config: Config) -> Result<Self> {
        let certificate = Arc::new(ReloadableCertificate::load(
            &config.tls.cert,
            &config.tls.key,
            tls::provider(),
        )?);
        let tls = Arc::new(tls::server_config(&config.tls, certificate.clone())?);
        let mut backends: Vec<Arc<dyn KeyBackend>> = Vec::new();
        let mut health_interval = Duration::from_secs(5);
        if let Some(p11) = &config.backend.pkcs11 {
            backends.push(Arc::new(Pkcs11Backend::connect(p11).await?));
            health_interval = health_interval.min(p11.health_check_interval());
        }
        if let Some(kms) = &config.backend.gcp_kms {
            backends.push(Arc::new(GcpKmsBackend::connect(kms).await?));
            health_interval = health_interval.min(kms.health_check_interval());
        }
        let keyring = Arc::new(Keyring::new(backends, &config.backend.default)?);
        let acl = Arc::new(Acl::new(&config.acl));
        let metrics = Metrics::new();
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
            acl,
            guard,
            audit,
            caps,
            metrics,
            certificate,
            tls,
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

    /// Re-reads the server certificate and key from the configured files. Existing connections
    /// keep their session; new handshakes use the new certificate.
    pub fn reload_certificate(&self) -> Result<()> {
        self.certificate
            .reload(&self.config.tls.cert, &self.config.tls.key)
    }

    /// A handle that reloads the certificate, for a signal handler.
    pub fn certificate_reloader(&self) -> impl Fn() -> Result<()> + Send + Sync + 'static {
        let certificate = self.certificate.clone();
        let (cert, key) = (self.config.tls.cert.clone(), self.config.tls.key.clone());
        move || certificate.reload(&cert, &key)
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
            TlsAcceptor::from(self.tls.clone()),
            self.config.server.handshake_timeout(),
            Arc::new(Semaphore::new(self.config.server.max_connections)),
            conn_tx,
            stop_rx,
        ));

        let service = SignerServer::new(SignerService::new(
            self.keyring.clone(),
            self.acl.clone(),
            PolicySet::new(&self.config.policy),
            self.guard.clone(),
            self.audit.clone(),
            self.caps.clone(),
            self.metrics.clone(),
        ))
        .max_decoding_message_size(self.config.server.max_message_bytes)
        .max_encoding_message_size(self.config.server.max_message_bytes);
        let stop = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, draining in-flight requests");
            let _ = stop_tx.send(true);
        };
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), stop)
            .await;
        accept_task.abort();
        health_task.abort();
        // Wait for the aborted tasks to be gone: they may hold backend handles.
        let _ = accept_task.await;
        let _ = health_task.await;
        let _ = checkpoint_task.await;
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

/// Accepts TCP connections and runs each TLS handshake in its own task, so a slow or hostile
/// client cannot hold up the others. Only connections that present a valid client certificate
/// naming an identity reach the gRPC server.
async fn accept_connections(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
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
        let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "connection limit reached; refusing connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let verified = verified.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
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
            match AuthenticatedStream::new(stream, slot) {
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
