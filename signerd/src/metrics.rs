//! Prometheus metrics, served on a separate plain-HTTP listener (loopback by default) so that
//! scraping never needs a client certificate and never shares the gRPC port.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Labels of `signerd_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The RPC.
    pub rpc: &'static str,
    /// `signed`, `denied`, `failed`, `ok`.
    pub result: &'static str,
}

/// Labels carrying one `rule` name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The policy rule.
    pub rule: &'static str,
}

/// Labels carrying one `backend` name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// The backend.
    pub backend: &'static str,
}

/// Every metric signerd exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by RPC and result.
    pub requests: Family<RequestLabels, Counter>,
    /// Denials by rule.
    pub denials: Family<RuleLabels, Counter>,
    /// Denials refused over a caller's denial budget, without a record of their own.
    pub denials_suppressed: Counter,
    /// Backend sign latency (seconds).
    pub backend_sign_seconds: Family<BackendLabels, Histogram>,
    /// Keys loaded per backend.
    pub keys_loaded: Family<BackendLabels, Gauge>,
    /// Audit fsync latency (seconds).
    pub audit_fsync_seconds: Histogram,
    /// Records per audit fsync (group commit batch size).
    pub audit_batch_records: Histogram,
    /// Audit records written.
    pub audit_records: Counter,
    /// Audit anchor updates that failed (the anchor stays at an older checkpoint until the
    /// next checkpoint's update succeeds).
    pub audit_anchor_failures: Counter,
    /// 1 when serving, 0 when not.
    pub health: Gauge,
    /// Entries in the sequence guard.
    pub guard_entries: Gauge,
    /// The key pool's depth, refills and bindings, and where created keys came from.
    pub pool: crate::pool::PoolMetrics,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("signerd");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests by RPC and result", requests.clone());
        let denials = Family::<RuleLabels, Counter>::default();
        registry.register("denials", "Denials by rule", denials.clone());
        let denials_suppressed = Counter::default();
        registry.register(
            "denials_suppressed",
            "Denials over a caller's denial budget, counted in a summary record instead of one each",
            denials_suppressed.clone(),
        );
        let backend_sign_seconds = Family::<BackendLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "backend_sign_seconds",
            "Backend sign latency",
            backend_sign_seconds.clone(),
        );
        let keys_loaded = Family::<BackendLabels, Gauge>::default();
        registry.register("keys_loaded", "Keys known per backend", keys_loaded.clone());
        let audit_fsync_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "audit_fsync_seconds",
            "Audit log fsync latency",
            audit_fsync_seconds.clone(),
        );
        let audit_batch_records = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "audit_batch_records",
            "Audit records made durable per fsync",
            audit_batch_records.clone(),
        );
        let audit_records = Counter::default();
        registry.register(
            "audit_records",
            "Audit records written",
            audit_records.clone(),
        );
        let audit_anchor_failures = Counter::default();
        registry.register(
            "audit_anchor_failures",
            "Audit anchor updates that failed (retried at the next checkpoint)",
            audit_anchor_failures.clone(),
        );
        let health = Gauge::default();
        registry.register("health", "1 when serving, 0 when not", health.clone());
        let guard_entries = Gauge::default();
        registry.register(
            "guard_entries",
            "Entries held by the sequence guard",
            guard_entries.clone(),
        );
        let pool = crate::pool::PoolMetrics::register(&mut registry);
        Arc::new(Metrics {
            registry,
            requests,
            denials,
            denials_suppressed,
            backend_sign_seconds,
            keys_loaded,
            audit_fsync_seconds,
            audit_batch_records,
            audit_records,
            audit_anchor_failures,
            health,
            guard_entries,
            pool,
        })
    }

    /// Counts one request outcome.
    pub fn request(&self, rpc: &'static str, result: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { rpc, result })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Where metrics are served: `[metrics] listen`, loopback by default.
pub fn default_listen() -> SocketAddr {
    ([127, 0, 0, 1], 9700).into()
}
