//! The dispatcher: claims due deliveries, POSTs them signed, records each outcome.
//!
//! Scheduling (which delivery goes when) lives in the database: [`Store::claim_webhook_deliveries`]
//! hands out only due deliveries whose wallet has no earlier pending one to that endpoint, with a
//! lease by the database's clock, under a cap of leased deliveries per endpoint. A dispatcher that
//! dies leaves leases that expire; the next claimer sends again with the same `webhook-id`.
//!
//! One attempt ([`Dispatcher::attempt`]): the URL rules again (config may have changed), a
//! connection only to addresses the resolver let through (private ones refused unless allowed,
//! so a name re-pointed at the gateway's network after registration is still refused), one
//! deadline over connect, send and response, and at most `max_response_bytes` of the body read.
//! A 2xx is delivered; anything else (redirects included) is retried with exponential backoff and
//! full jitter until the retry budget (`retry_for_ms`, `max_attempts`) is spent, then dead.
//!
//! Retention ([`Dispatcher::prune_history`]): beside the sends, delivered history older than
//! `retention_days` is deleted in bounded batches ([`Store::prune_webhook_history`]), at start
//! and then every [`PRUNE_INTERVAL`], sooner while a pass ends on its bound (a backlog of old
//! rows is worked off without one long pass). Replicas may prune at the same time: the
//! statements skip each other's rows.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::signature::signature_header;
use super::{TargetUrl, WebhooksConfig, is_public};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::webhooks::{AttemptOutcome, ClaimedDelivery, event_id};

/// How often the backlog gauges are refreshed.
const BACKLOG_INTERVAL: Duration = Duration::from_secs(1);
/// Characters of an error kept on a delivery row.
const MAX_ERROR_CHARS: usize = 300;
/// How often old delivered history is pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// The wait before the next pass when one ended on its bound (more old rows remain).
const PRUNE_CATCH_UP: Duration = Duration::from_secs(1);
/// Rows of each table one batch deletes at most (one short write each).
const PRUNE_BATCH: i64 = 1000;
/// Batches one pass runs at most.
const PRUNE_BATCHES_PER_PASS: usize = 10;

/// Resolves host names and drops the answer when any address is not public (unless allowed):
/// the check happens on the addresses actually connected to, not on an earlier lookup.
#[derive(Clone)]
struct GuardedResolver {
    allow_private: bool,
}

type ResolveFuture =
    Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if !allow_private && addresses.iter().any(|a| !is_public(a.ip())) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "target resolves to a private, loopback or link-local address",
                ));
            }
            Ok(addresses.into_iter())
        })
    }
}

type WebhookClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// Sends due deliveries until stopped. One per process; replicas share the work.
pub struct Dispatcher {
    store: Store,
    config: WebhooksConfig,
    client: WebhookClient,
    metrics: Metrics,
    owner: String,
}

impl Dispatcher {
    /// A dispatcher with its own HTTP client (system roots, rustls with ring).
    pub fn new(store: Store, config: WebhooksConfig, metrics: Metrics) -> Result<Self> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            allow_private: config.allow_private_targets,
        });
        http.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        http.set_nodelay(true);
        http.enforce_http(false);
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        {
            Ok(builder) => builder,
            Err(e) => {
                // No system roots: https targets cannot be verified and fail at connect;
                // plain-http targets (when allowed) still work.
                tracing::warn!(error = %e, "no system root certificates; https webhooks will fail");
                let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Config(format!("webhooks: tls: {e}")))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(8)
            .build(connector);
        Ok(Dispatcher {
            store,
            config,
            client,
            metrics,
            owner: format!("dispatcher-{}", uuid::Uuid::now_v7().simple()),
        })
    }

    /// Claims and sends until `stop` turns true; in-flight attempts are awaited (each is
    /// bounded by `timeout_ms`), unrecorded ones are sent again after their lease expires.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let pruner = tokio::spawn(self.clone().prune_history(stop.clone()));
        let mut in_flight = JoinSet::new();
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let mut last_backlog = tokio::time::Instant::now() - BACKLOG_INTERVAL;
        loop {
            if *stop.borrow() {
                break;
            }
            if last_backlog.elapsed() >= BACKLOG_INTERVAL {
                last_backlog = tokio::time::Instant::now();
                match self.store.webhook_backlog().await {
                    Ok(backlog) => self.metrics.webhook_backlog(backlog),
                    Err(e) => tracing::warn!(error = %e, "cannot read the webhook backlog"),
                }
            }
            let room = self.config.concurrency.saturating_sub(in_flight.len());
            let mut claimed_any = false;
            if room > 0 {
                match self
                    .store
                    .claim_webhook_deliveries(
                        &self.owner,
                        room,
                        self.config.lease_ms,
                        self.config.max_in_flight_per_endpoint,
                    )
                    .await
                {
                    Ok(claimed) => {
                        claimed_any = !claimed.is_empty();
                        for delivery in claimed {
                            let this = self.clone();
                            in_flight.spawn(async move { this.deliver(delivery).await });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot claim webhook deliveries"),
                }
            }
            if claimed_any && in_flight.len() < self.config.concurrency {
                // More may be due at once (a burst); look again without waiting, but let a
                // finished attempt free its per-wallet successor first.
                tokio::task::yield_now().await;
                while in_flight.try_join_next().is_some() {}
                continue;
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(poll) => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
        // A batch in progress is one bounded statement; let it finish.
        let _ = pruner.await;
    }

    /// Deletes delivered history past `retention_days` until `stop` turns true: a pass at
    /// start, then one every [`PRUNE_INTERVAL`] (every [`PRUNE_CATCH_UP`] while a pass ends on
    /// its bound of [`PRUNE_BATCHES_PER_PASS`] full batches).
    async fn prune_history(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let retention_ms = self.config.retention_ms();
        loop {
            let mut more = false;
            for _ in 0..PRUNE_BATCHES_PER_PASS {
                if *stop.borrow() {
                    return;
                }
                match self
                    .store
                    .prune_webhook_history(retention_ms, PRUNE_BATCH)
                    .await
                {
                    Ok(pruned) => {
                        self.metrics.webhook_pruned(pruned);
                        more = pruned.deliveries == PRUNE_BATCH as u64
                            || pruned.events == PRUNE_BATCH as u64;
                        if !more {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot prune old webhook history");
                        more = false;
                        break;
                    }
                }
            }
            let wait = if more { PRUNE_CATCH_UP } else { PRUNE_INTERVAL };
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn deliver(&self, delivery: ClaimedDelivery) {
        let outcome = match self.attempt(&delivery).await {
            Ok(status) if (200..300).contains(&status) => AttemptOutcome::Delivered { status },
            Ok(status) => self.failure(&delivery, Some(status), format!("HTTP {status}")),
            Err(error) => self.failure(&delivery, None, error),
        };
        let label = match &outcome {
            AttemptOutcome::Delivered { .. } => "delivered",
            AttemptOutcome::Failed {
                retry_in_ms: Some(_),
                ..
            } => "retried",
            AttemptOutcome::Failed { .. } => "dead",
        };
        self.metrics.webhook_delivery(label);
        if label == "dead" {
            tracing::warn!(delivery_id = delivery.id, endpoint_id = %delivery.endpoint_id, "webhook delivery dead after its retry budget");
        }
        match self
            .store
            .finish_webhook_attempt(&delivery, &self.owner, &outcome)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                delivery_id = delivery.id,
                "webhook delivery was reclaimed before its outcome was recorded (lease expired)"
            ),
            // The lease expires and the delivery is sent again (same webhook-id).
            Err(e) => {
                tracing::warn!(delivery_id = delivery.id, error = %e, "cannot record a webhook attempt")
            }
        }
    }

    fn failure(
        &self,
        delivery: &ClaimedDelivery,
        status: Option<u16>,
        error: String,
    ) -> AttemptOutcome {
        let attempts = delivery.attempts + 1;
        let age = u64::try_from(delivery.age_ms).unwrap_or(0);
        let retry_in_ms = (attempts < self.config.max_attempts && age < self.config.retry_for_ms)
            .then(|| {
                let wait = backoff(
                    self.config.initial_backoff_ms,
                    self.config.max_backoff_ms,
                    attempts,
                );
                // The last try lands at the end of the budget, not past it.
                wait.min(self.config.retry_for_ms - age).max(1)
            });
        AttemptOutcome::Failed {
            status,
            error: error.chars().take(MAX_ERROR_CHARS).collect(),
            retry_in_ms,
        }
    }

    /// One POST; the response status, or why there was none.
    async fn attempt(&self, delivery: &ClaimedDelivery) -> std::result::Result<u16, String> {
        let url = TargetUrl::parse(&delivery.url, &self.config).map_err(|e| e.to_string())?;
        let body = render_body(delivery).map_err(|e| e.to_string())?;
        let webhook_id = event_id(delivery.event_row);
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = signature_header(&delivery.secrets, &webhook_id, timestamp, &body);
        let request = hyper::Request::post(url.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "stellar-signer-gateway")
            .header("webhook-id", &webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        let limit = self.config.max_response_bytes;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{e}: {}", innermost(&e)))?;
            let status = response.status().as_u16();
            // Read at most `limit` bytes (receivers may log it for us); never the rest.
            let mut body = response.into_body();
            let mut read = 0usize;
            while read < limit {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
            Ok::<u16, String>(status)
        };
        match tokio::time::timeout(Duration::from_millis(self.config.timeout_ms), exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {} ms", self.config.timeout_ms)),
        }
    }
}

fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// `initial * 2^(attempts-1)`, capped, with full jitter over its upper half (so retries of many
/// deliveries that failed together spread out, and no wait is shorter than half the step).
fn backoff(initial_ms: u64, max_ms: u64, attempts: i64) -> u64 {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 40)).unwrap_or(40);
    let step = initial_ms.saturating_mul(1u64 << exponent).min(max_ms);
    let half = step / 2;
    let jitter = getrandom::u64().unwrap_or(0) % (half + 1);
    half + jitter
}

/// The JSON body of a delivery: `{id, type, timestamp, wallet_id, wallet_sequence, data}`, the
/// payment's public fields in `data` with the amount also in lumens. Built the same way at every
/// attempt (keys sorted), so a retry carries the same bytes under the same `webhook-id`.
pub fn render_body(delivery: &ClaimedDelivery) -> Result<Vec<u8>> {
    let mut data: serde_json::Value = serde_json::from_str(&delivery.payload)
        .map_err(|e| Error::CorruptData(format!("outbox_events.payload: {e}")))?;
    if let Some(stroops) = data
        .get("amount_stroops")
        .and_then(serde_json::Value::as_i64)
    {
        data["amount"] = serde_json::Value::String(crate::payments::format_amount(stroops));
    }
    let body = serde_json::json!({
        "id": event_id(delivery.event_row),
        "type": delivery.event_type,
        "timestamp": delivery.occurred_at,
        "wallet_id": delivery.wallet_id,
        "wallet_sequence": delivery.wallet_sequence,
        "data": data,
    });
    serde_json::to_vec(&body).map_err(|e| Error::CorruptData(format!("event body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for attempts in 1..=30 {
            let step = (1000u64 << (attempts - 1).min(40)).min(60_000);
            let wait = backoff(1000, 60_000, attempts);
            assert!(wait >= step / 2 && wait <= step, "{attempts}: {wait}");
        }
    }
}
