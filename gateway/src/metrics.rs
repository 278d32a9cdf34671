//! The Prometheus registry behind `/metrics` (OpenMetrics text). Labels are bounded: routes are
//! the matched route templates (`/v1/users/{user_id}`), never raw paths.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PaymentLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    read: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabels {
    backend: &'static str,
    rpc: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignerLabels {
    rpc: &'static str,
    outcome: &'static str,
}

/// Every metric the gateway exports.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    signer_calls: Family<SignerLabels, Counter>,
    network_calls: Family<NetworkLabels, Counter>,
    payments_finished: Family<PaymentLabels, Counter>,
    payments_needing_attention: Counter,
    wallets_created: Counter,
    rate_limited: Counter,
    reads_behind: Family<ReadLabels, Counter>,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    webhook_backlog: Gauge,
    webhook_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    webhook_pruned: Family<TableLabels, Counter>,
    deposit_lag: Gauge,
    deposit_stalled: Gauge,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    /// A registry with every metric registered (at zero).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gateway");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            http_requests.clone(),
        );
        let http_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            http_duration.clone(),
        );
        let signer_calls = Family::<SignerLabels, Counter>::default();
        registry.register(
            "signer_calls",
            "Calls to signerd by RPC and outcome (ok, retried, unavailable, rejected_open, error)",
            signer_calls.clone(),
        );
        let network_calls = Family::<NetworkLabels, Counter>::default();
        registry.register(
            "network_calls",
            "Calls to the network API by backend (horizon, rpc), endpoint or method (in the rpc label) and outcome",
            network_calls.clone(),
        );
        let payments_finished = Family::<PaymentLabels, Counter>::default();
        registry.register(
            "payments_finished",
            "Payments that reached a terminal status (SUCCESS or FAILED)",
            payments_finished.clone(),
        );
        let payments_needing_attention = Counter::default();
        registry.register(
            "payments_needing_attention",
            "Payments parked as NEEDS_ATTENTION (sequence spent, history cannot say by whom)",
            payments_needing_attention.clone(),
        );
        let wallets_created = Counter::default();
        registry.register(
            "wallets_created",
            "Wallets completed (key confirmed by signerd)",
            wallets_created.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited_requests",
            "Requests refused with 429 by the per-API-key rate limit",
            rate_limited.clone(),
        );
        let reads_behind = Family::<ReadLabels, Counter>::default();
        registry.register(
            "network_reads_behind",
            "Payment decisions postponed because the network read came from a node behind the ledger that would prove them, by read (source_absent, destination_absent, source_sequence)",
            reads_behind.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_delivery_attempts",
            "Webhook delivery attempts by outcome (delivered, retried, dead)",
            webhook_deliveries.clone(),
        );
        let webhook_backlog = Gauge::default();
        registry.register(
            "webhook_outbox_backlog",
            "Webhook deliveries not yet delivered nor dead",
            webhook_backlog.clone(),
        );
        let webhook_oldest_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "webhook_oldest_undelivered_age_seconds",
            "Age of the oldest webhook delivery not yet delivered nor dead (database clock)",
            webhook_oldest_age.clone(),
        );
        let webhook_pruned = Family::<TableLabels, Counter>::default();
        registry.register(
            "webhook_pruned_rows",
            "Rows deleted by webhook retention, by table (webhook_deliveries, outbox_events)",
            webhook_pruned.clone(),
        );
        let deposit_lag = Gauge::default();
        registry.register(
            "deposit_ingestion_lag_ledgers",
            "Ledgers the network API has closed that deposit ingestion has not covered (-1: stuck on a gap past the API's retention)",
            deposit_lag.clone(),
        );
        let deposit_stalled = Gauge::default();
        registry.register(
            "deposit_ingestion_stalled",
            "1 while deposit ingestion is stuck on a gap past the network API's retention (never skipped: an operator must act), else 0",
            deposit_stalled.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                http_requests,
                http_duration,
                signer_calls,
                network_calls,
                payments_finished,
                payments_needing_attention,
                wallets_created,
                rate_limited,
                reads_behind,
                webhook_deliveries,
                webhook_backlog,
                webhook_oldest_age,
                webhook_pruned,
                deposit_lag,
                deposit_stalled,
            }),
        }
    }

    /// Counts one answered HTTP request.
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.inner
            .http_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts one signerd call attempt outcome.
    pub fn signer_call(&self, rpc: &'static str, outcome: &'static str) {
        self.inner
            .signer_calls
            .get_or_create(&SignerLabels { rpc, outcome })
            .inc();
    }

    /// Counts one network API call outcome.
    pub fn network_call(
        &self,
        backend: &'static str,
        endpoint: &'static str,
        outcome: &'static str,
    ) {
        self.inner
            .network_calls
            .get_or_create(&NetworkLabels {
                backend,
                rpc: endpoint,
                outcome,
            })
            .inc();
    }

    /// Counts a payment that reached a terminal status.
    pub fn payment_finished(&self, status: &'static str) {
        self.inner
            .payments_finished
            .get_or_create(&PaymentLabels { status })
            .inc();
    }

    /// Counts a payment parked as `NEEDS_ATTENTION`.
    pub fn payment_needs_attention(&self) {
        self.inner.payments_needing_attention.inc();
    }

    /// Counts a completed wallet.
    pub fn wallet_created(&self) {
        self.inner.wallets_created.inc();
    }

    /// Counts a request refused by the rate limit.
    pub fn rate_limited(&self) {
        self.inner.rate_limited.inc();
    }

    /// Counts a payment decision postponed because its network read was behind.
    pub fn read_behind(&self, read: &'static str) {
        self.inner
            .reads_behind
            .get_or_create(&ReadLabels { read })
            .inc();
    }

    /// Counts one webhook delivery attempt by outcome (`delivered`, `retried`, `dead`).
    pub fn webhook_delivery(&self, outcome: &'static str) {
        self.inner
            .webhook_deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts the rows one retention batch deleted.
    pub fn webhook_pruned(&self, pruned: crate::store::webhooks::Pruned) {
        for (table, rows) in [
            ("webhook_deliveries", pruned.deliveries),
            ("outbox_events", pruned.events),
        ] {
            self.inner
                .webhook_pruned
                .get_or_create(&TableLabels { table })
                .inc_by(rows);
        }
    }

    /// Sets the deposit ingestion lag in ledgers (-1: stuck on a retention gap).
    pub fn set_deposit_lag(&self, ledgers: i64) {
        self.inner.deposit_lag.set(ledgers);
    }

    /// Sets whether deposit ingestion is stuck on a retention gap.
    pub fn set_deposit_stalled(&self, stalled: bool) {
        self.inner.deposit_stalled.set(i64::from(stalled));
    }

    /// Sets the outbox backlog gauges.
    pub fn webhook_backlog(&self, backlog: crate::store::webhooks::Backlog) {
        self.inner.webhook_backlog.set(backlog.pending);
        self.inner
            .webhook_oldest_age
            .set(backlog.oldest_age_ms.max(0) as f64 / 1000.0);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_up_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.http_request("POST", "/v1/users", 201, 0.004);
        metrics.signer_call("CreateKey", "ok");
        metrics.wallet_created();
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"gateway_http_requests_total{method="POST",route="/v1/users",status="201"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"gateway_signer_calls_total{rpc="CreateKey",outcome="ok"} 1"#));
        assert!(text.contains("gateway_wallets_created_total 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
