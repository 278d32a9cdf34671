//! The gateway's whole view of the Stellar network, behind one trait: [`Network`]. Two
//! implementations plug in, chosen by `[network] kind` at start:
//!
//! - [`horizon`]: Horizon's REST API (`GET /accounts/{id}`, `POST /transactions`, ...).
//! - [`rpc`]: Stellar RPC's JSON-RPC 2.0 API (`getLedgerEntries`, `sendTransaction`,
//!   `getTransaction`, ...), SDF's recommended API now that Horizon gets no new features.
//!
//! Both share one HTTP stack ([`HttpStack`]: hyper with rustls, deadlines, a circuit breaker that
//! counts only outages, 429 `Retry-After`) and answer in the same backend-neutral values, so the
//! payment worker, the balance and fund routes and the readiness probe never know which one runs.
//!
//! Freshness: nodes behind a load balancer lag differently, so every read that a never-pay-twice
//! decision rests on comes as an [`AtLedger`] (or a [`TransactionRead`]) naming the last ledger
//! the answering node had seen; the worker takes "absent" only from reads at or past the ledger
//! that proves it.

pub mod horizon;
pub mod rpc;

use std::sync::Arc;
use std::time::Duration;

use failsafe::futures::CircuitBreaker;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::config::{CircuitBreakerConfig, NetworkConfig, NetworkKind};
use crate::metrics::Metrics;

/// Why a network call did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The network API is down, overloaded (503), too slow, or the circuit breaker is open.
    /// Safe to retry.
    #[error("network unavailable: {0}")]
    Unavailable(String),
    /// The API answered 429: come back after `retry_after` (its `Retry-After`, 1 s when it
    /// gave none). Not an outage: the circuit breaker does not count it.
    #[error("network rate limit exceeded; retry after {} ms", retry_after.as_millis())]
    RateLimited {
        /// How long the API asked to wait.
        retry_after: Duration,
    },
    /// A submission the API could not decide in time (Horizon's 504 `timeout`): not an outage.
    #[error("network: the submission timed out before the network decided")]
    NotYetDecided,
    /// The API answered something the gateway cannot use (a bug on one side or the other).
    #[error("unexpected network answer: {0}")]
    Protocol(String),
    /// Ledgers asked for are older than the API still keeps (pruned past its retention): what
    /// they held cannot be read from it. Reported, never skipped over.
    #[error("ledger {from} is before the oldest ledger the network API keeps ({oldest})")]
    Gap {
        /// The first ledger asked for.
        from: i64,
        /// The oldest ledger the API keeps.
        oldest: i64,
    },
}

impl NetworkError {
    /// The least wait before asking again: the API's `Retry-After` on a 429, else nothing.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            NetworkError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// One transaction of a ledger, as applied, with its XDR for whoever decodes its operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerTransaction {
    /// The ledger it was applied in.
    pub ledger: i64,
    /// Its position in the ledger, from 1 (the transaction part of its operations' ids).
    pub application_order: i64,
    /// Its hash (a fee bump's outer hash).
    pub hash: String,
    /// Whether it succeeded.
    pub successful: bool,
    /// The `TransactionEnvelope`, base64.
    pub envelope_xdr: String,
    /// The `TransactionResult`, base64.
    pub result_xdr: String,
    /// The `TransactionMeta`, base64: Horizon's `result_meta_xdr` (null on a Horizon run with
    /// `SKIP_TXMETA`), RPC's `resultMetaXdr`. Only claimable balance claims need it.
    pub result_meta_xdr: Option<String>,
}

/// The transactions of a range of ledgers, complete through `through`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRange {
    /// Every transaction of the ledgers from the start asked for through `through`, in ledger
    /// and application order, each once.
    pub transactions: Vec<LedgerTransaction>,
    /// The last ledger covered completely (the start minus one when the API had not closed the
    /// start yet).
    pub through: i64,
    /// The API's latest ledger as it answered.
    pub latest: i64,
}

/// An account as the network shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountInfo {
    /// The account's current sequence number.
    pub sequence: i64,
    /// The native balance in stroops.
    pub native_balance_stroops: i64,
}

/// What a transaction looks like once it is in a ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionRecord {
    /// The ledger it was applied in.
    pub ledger: i64,
    /// Whether it succeeded.
    pub successful: bool,
    /// The fee charged, in stroops.
    pub fee_charged: i64,
    /// The result codes (`tx_failed`, `op_underfunded`, ...) decoded from the result XDR.
    pub result_codes: ResultCodes,
}

/// Result codes in Horizon's `extras.result_codes` spelling (`tx_bad_seq`, `op_underfunded`),
/// whichever backend decoded them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ResultCodes {
    /// The transaction-level code, e.g. `tx_failed`, `tx_bad_seq`.
    pub transaction: String,
    /// One code per operation, e.g. `op_underfunded`.
    #[serde(default)]
    pub operations: Vec<String>,
}

/// The outcome of one submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submission {
    /// Applied (successfully or not: a `tx_failed` in a ledger is `Applied` with
    /// `successful: false`). Horizon's synchronous submission answers this way; RPC's never
    /// does (its `PENDING` is [`Submission::Unknown`]: confirm by hash).
    Applied(TransactionRecord),
    /// Refused before reaching a ledger, with the result codes (`tx_bad_seq`, `tx_too_late`,
    /// `tx_insufficient_fee`, `tx_bad_auth`, ...).
    Rejected(ResultCodes),
    /// The API could not say, or took the transaction without deciding it (Horizon's 504, 503,
    /// a network error, the breaker open; RPC's `PENDING` and `DUPLICATE`): the transaction may
    /// or may not land. Resubmit the same bytes and poll the hash.
    Unknown(String),
    /// Not taken (429, or RPC's `TRY_AGAIN_LATER` past the client's own retries): resubmit the
    /// same bytes after this long.
    RateLimited(Duration),
    /// The network has not decided (in a surge, the transaction waits outside the ledgers). It
    /// may still land.
    NotYetDecided,
}

/// The most recent closed ledger the API knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatestLedger {
    /// Its sequence.
    pub sequence: i64,
    /// Its close time, unix seconds.
    pub closed_at: i64,
    /// The oldest ledger whose history the API still keeps (older ones are pruned).
    pub elder: i64,
}

/// Who used a sequence number of an account; see [`Network::sequence_use`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SequenceUse {
    /// This transaction did (for a fee bump, `hash` is the outer hash and `inner_hash` the
    /// wrapped transaction's).
    By {
        /// Its hash.
        hash: String,
        /// A fee bump's inner transaction hash.
        inner_hash: Option<String>,
        /// How it went.
        record: TransactionRecord,
    },
    /// The history reaches below the sequence but does not show it (not ingested yet).
    NotShown,
    /// The history does not reach back to it (pruned, or too far back to page through).
    Pruned,
    /// The node that answered had not ingested the ledger asked for.
    Behind,
}

/// A read and the ledger the node that answered had ingested (`None` when it did not say). A
/// decision that needs "as of ledger L" takes only reads with `ledger >= L`: a lagging node's
/// "not found" proves nothing about later ledgers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtLedger<T> {
    /// What was read.
    pub value: T,
    /// The answering node's latest ingested ledger.
    pub ledger: Option<i64>,
}

impl<T> AtLedger<T> {
    /// Whether this read is known to reflect every ledger up to and including `ledger`.
    pub fn covers(&self, ledger: i64) -> bool {
        self.ledger.is_some_and(|seen| seen >= ledger)
    }
}

/// A transaction looked up by hash, with how far the answering node's view reaches at both
/// ends: a "not found" proves the transaction absent only if the node had seen the ledger that
/// proves it (`read.ledger`) and still kept the ledgers it could have been applied in
/// (`history_from`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionRead {
    /// The record, or `None` when the node does not know the hash, and the node's latest ledger.
    pub read: AtLedger<Option<TransactionRecord>>,
    /// The close time (unix seconds) of the oldest ledger the node keeps, when it says (RPC's
    /// `oldestLedgerCloseTime`). Horizon's transaction lookup does not say; its retention is
    /// checked where it matters, in [`Network::sequence_use`].
    pub history_from: Option<i64>,
}

impl TransactionRead {
    /// Whether this read proves the transaction was not applied in any ledger up to `ledger`,
    /// given it cannot have been submitted before `submitted_after` (unix seconds).
    pub fn proves_absent(&self, ledger: i64, submitted_after: i64) -> bool {
        self.read.value.is_none()
            && self.read.covers(ledger)
            && self
                .history_from
                .is_none_or(|oldest| oldest <= submitted_after)
    }
}

/// The one joint where a network API plugs in. Every method has a deadline, retries reads on
/// outages with backoff, and goes through a circuit breaker that counts only outages (not 429s,
/// not undecided submissions).
#[async_trait::async_trait]
pub trait Network: Send + Sync {
    /// Which API this is (`horizon`, `rpc`): for logs and the readiness report.
    fn kind(&self) -> &'static str;

    /// An account's sequence and native balance, `None` when it does not exist, with the
    /// ledger the answer reflects.
    async fn account_at(
        &self,
        account_id: &str,
    ) -> Result<AtLedger<Option<AccountInfo>>, NetworkError>;

    /// [`Network::account_at`] without the freshness.
    async fn account(&self, account_id: &str) -> Result<Option<AccountInfo>, NetworkError> {
        Ok(self.account_at(account_id).await?.value)
    }

    /// The fee per operation the network asks for now (an estimate; the worker bids its cap).
    async fn recommended_fee(&self) -> Result<i64, NetworkError>;

    /// The latest closed ledger, its close time and the oldest ledger still kept.
    async fn latest_ledger(&self) -> Result<LatestLedger, NetworkError>;

    /// A transaction by hash (hex), with the freshness it was read at.
    async fn transaction(&self, hash: &str) -> Result<TransactionRead, NetworkError>;

    /// Which transaction used `sequence` of `account`. `as_of` is a ledger at which the
    /// account's sequence was seen at or past `sequence`: an answer from a node behind it is
    /// [`SequenceUse::Behind`].
    async fn sequence_use(
        &self,
        account: &str,
        sequence: i64,
        as_of: i64,
    ) -> Result<SequenceUse, NetworkError>;

    /// Funds a test-network account through friendbot; `false` when it already exists.
    async fn friendbot(&self, account_id: &str) -> Result<bool, NetworkError>;

    /// Submits a base64 envelope once; see [`Submission`]. What to do after an ambiguous
    /// outcome (resubmit the same bytes, poll the hash) is the payment worker's decision.
    async fn submit(&self, envelope_base64: &str) -> Submission;

    /// Whether the API is up and current enough to serve (readiness).
    async fn check_ready(&self) -> Result<(), NetworkError>;

    /// The transactions of ledgers `from..=to` (fewer ledgers when the API has not closed them
    /// all: see [`LedgerRange::through`]). A `from` older than the API keeps is
    /// [`NetworkError::Gap`].
    async fn ledger_transactions(&self, from: i64, to: i64) -> Result<LedgerRange, NetworkError> {
        let _ = (from, to);
        Err(NetworkError::Protocol(format!(
            "{}: reading ledgers' transactions is not implemented for this API",
            self.kind()
        )))
    }
}

/// The configured backend.
pub fn connect(config: &NetworkConfig, metrics: Metrics) -> crate::error::Result<Arc<dyn Network>> {
    Ok(match config.kind {
        NetworkKind::Horizon => Arc::new(horizon::Horizon::new(config, metrics)?),
        NetworkKind::Rpc => Arc::new(rpc::StellarRpc::new(config, metrics)?),
    })
}

type Breaker =
    failsafe::StateMachine<failsafe::failure_policy::ConsecutiveFailures<OpenDurations>, ()>;

/// Breaker open durations: `next`, doubling, capped at `max`.
#[derive(Clone, Debug)]
struct OpenDurations {
    next: Duration,
    max: Duration,
}

impl Iterator for OpenDurations {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(current)
    }
}

/// One HTTP answer, whatever its status.
pub(crate) struct RawReply {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    /// Horizon's `Latest-Ledger` header: the last ledger the answering node had ingested.
    pub(crate) latest_ledger: Option<i64>,
    /// `Retry-After` (seconds) on a 429.
    pub(crate) retry_after: Option<Duration>,
    /// `Location` on a redirect.
    pub(crate) location: Option<String>,
}

/// How a backend reads a reply that is neither a 429 nor an outage of the transport.
pub(crate) struct Classify {
    /// A reply that says "not decided yet" (Horizon's submission 504): not an outage.
    pub(crate) not_decided: fn(&RawReply) -> bool,
    /// A short description of a 5xx reply (Horizon's problem type) for the error.
    pub(crate) describe: fn(&RawReply) -> String,
}

enum CallFailure {
    Outage(String),
    OutageReply(RawReply),
    /// 429: the API is up and asks to slow down.
    RateLimited(RawReply),
    /// The network has not decided yet.
    NotDecided,
}

impl CallFailure {
    /// What the circuit breaker counts: the API down or unreachable, not the API answering
    /// "slow down" or "not decided yet".
    fn is_outage(&self) -> bool {
        matches!(self, CallFailure::Outage(_) | CallFailure::OutageReply(_))
    }
}

/// The HTTP client both backends use: one connection pool, TLS with the system's roots (plain
/// HTTP for a local API or the simulator), per-call deadlines, one circuit breaker.
pub(crate) struct HttpStack {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    breaker: Breaker,
    metrics: Metrics,
    backend: &'static str,
}

impl HttpStack {
    pub(crate) fn new(
        backend: &'static str,
        url: &str,
        connect_timeout: Duration,
        circuit_breaker: &CircuitBreakerConfig,
        metrics: Metrics,
    ) -> crate::error::Result<Self> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let with_roots = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider());
        let builder = match with_roots {
            Ok(builder) => builder,
            // A plain-HTTP API does not need roots: a host without any must still work.
            Err(e) if url.starts_with("http://") => {
                tracing::debug!(error = %e, "no system root certificates; plain HTTP only");
                let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| crate::error::Error::Config(format!("network: tls: {e}")))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
            }
            Err(e) => {
                return Err(crate::error::Error::io(
                    "network: loading the system's root certificates",
                    e,
                ));
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let breaker = failsafe::Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                circuit_breaker.consecutive_failures,
                OpenDurations {
                    next: Duration::from_millis(circuit_breaker.open_ms),
                    max: Duration::from_millis(circuit_breaker.max_open_ms),
                },
            ))
            .build();
        Ok(HttpStack {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(256)
                .build(connector),
            breaker,
            metrics,
            backend,
        })
    }

    /// One request through the breaker. 5xx and transport errors are outages, except a reply
    /// `classify` calls "not decided" (a surge, not the API down: it must not open the breaker
    /// for everyone). A 429 is not an outage either.
    pub(crate) async fn call(
        &self,
        what: &'static str,
        request: hyper::Request<Full<Bytes>>,
        deadline: Duration,
        classify: &Classify,
    ) -> Result<RawReply, NetworkError> {
        let client = self.client.clone();
        let not_decided = classify.not_decided;
        let call = async move {
            let response = tokio::time::timeout(deadline, client.request(request))
                .await
                .map_err(|_| CallFailure::Outage("deadline exceeded".into()))?
                .map_err(|e| CallFailure::Outage(format!("network: {e}")))?;
            let status = response.status().as_u16();
            let latest_ledger = response
                .headers()
                .get("latest-ledger")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok());
            let retry_after = (status == 429).then(|| {
                response
                    .headers()
                    .get(hyper::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs)
            });
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = tokio::time::timeout(deadline, response.into_body().collect())
                .await
                .map_err(|_| CallFailure::Outage("deadline exceeded reading body".into()))?
                .map_err(|e| CallFailure::Outage(format!("network: {e}")))?
                .to_bytes();
            let reply = RawReply {
                status,
                body,
                latest_ledger,
                retry_after,
                location,
            };
            if status == 429 {
                return Err(CallFailure::RateLimited(reply));
            }
            if not_decided(&reply) {
                return Err(CallFailure::NotDecided);
            }
            if status >= 500 {
                // 503 server_over_capacity, 504 timeout, 502 from a proxy: all "try later".
                return Err(CallFailure::OutageReply(reply));
            }
            Ok(reply)
        };
        match self.breaker.call_with(CallFailure::is_outage, call).await {
            Ok(reply) => {
                self.metrics.network_call(self.backend, what, "ok");
                Ok(reply)
            }
            Err(failsafe::Error::Rejected) => {
                self.metrics
                    .network_call(self.backend, what, "rejected_open");
                Err(NetworkError::Unavailable("circuit breaker open".into()))
            }
            Err(failsafe::Error::Inner(CallFailure::Outage(reason))) => {
                self.metrics.network_call(self.backend, what, "unavailable");
                Err(NetworkError::Unavailable(reason))
            }
            Err(failsafe::Error::Inner(CallFailure::RateLimited(reply))) => {
                self.metrics
                    .network_call(self.backend, what, "rate_limited");
                Err(NetworkError::RateLimited {
                    retry_after: reply.retry_after.unwrap_or(Duration::from_secs(1)),
                })
            }
            Err(failsafe::Error::Inner(CallFailure::NotDecided)) => {
                self.metrics
                    .network_call(self.backend, what, "submission_timeout");
                Err(NetworkError::NotYetDecided)
            }
            Err(failsafe::Error::Inner(CallFailure::OutageReply(reply))) => {
                self.metrics.network_call(self.backend, what, "unavailable");
                Err(NetworkError::Unavailable(format!(
                    "status {} {}",
                    reply.status,
                    (classify.describe)(&reply)
                )))
            }
        }
    }
}

/// Retries `attempt` on outages with doubling backoff, and on a 429 whose `Retry-After` fits
/// within `deadline` (a longer wait is the caller's: the worker parks the payment that long).
pub(crate) async fn with_retries<T, F, Fut>(
    what: &'static str,
    retry: &RetryPolicy,
    mut attempt: F,
) -> Result<T, NetworkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, NetworkError>>,
{
    let mut backoff = retry.initial_backoff;
    let mut attempts_left = retry.attempts;
    loop {
        attempts_left = attempts_left.saturating_sub(1);
        match attempt().await {
            Err(NetworkError::Unavailable(reason)) if attempts_left > 0 => {
                tracing::debug!(what, %reason, "network read failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max_backoff);
            }
            Err(NetworkError::RateLimited { retry_after })
                if attempts_left > 0 && retry_after <= retry.deadline =>
            {
                tracing::debug!(
                    what,
                    retry_after_ms = retry_after.as_millis() as u64,
                    "network rate limited; retrying after Retry-After"
                );
                tokio::time::sleep(retry_after).await;
            }
            other => return other,
        }
    }
}

/// Read retries, from the config.
#[derive(Clone, Debug)]
pub(crate) struct RetryPolicy {
    pub(crate) attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    /// One read's deadline: the longest `Retry-After` honoured inside a read.
    pub(crate) deadline: Duration,
}

impl RetryPolicy {
    pub(crate) fn from_config(config: &NetworkConfig) -> Self {
        RetryPolicy {
            attempts: config.retry.attempts,
            initial_backoff: Duration::from_millis(config.retry.initial_backoff_ms),
            max_backoff: Duration::from_millis(config.retry.max_backoff_ms),
            deadline: Duration::from_millis(config.timeout_ms),
        }
    }
}

/// How long a fee estimate is reused: it changes once per ledger, so one read per second
/// serves every payment built meanwhile.
pub(crate) const FEE_CACHE_TTL: Duration = Duration::from_secs(1);

/// A fee estimate with the time it was read.
#[derive(Default)]
pub(crate) struct FeeCache(std::sync::Mutex<Option<(tokio::time::Instant, i64)>>);

impl FeeCache {
    /// The cached fee, or a fresh one from `read`.
    pub(crate) async fn get_or<F>(&self, read: F) -> Result<i64, NetworkError>
    where
        F: std::future::Future<Output = Result<i64, NetworkError>>,
    {
        if let Ok(cache) = self.0.lock()
            && let Some((at, fee)) = *cache
            && at.elapsed() < FEE_CACHE_TTL
        {
            return Ok(fee);
        }
        let fee = read.await?;
        if let Ok(mut cache) = self.0.lock() {
            *cache = Some((tokio::time::Instant::now(), fee));
        }
        Ok(fee)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_outages_count_toward_the_breaker() {
        let reply = |status: u16| RawReply {
            status,
            body: Bytes::new(),
            latest_ledger: None,
            retry_after: None,
            location: None,
        };
        assert!(CallFailure::Outage("x".into()).is_outage());
        assert!(CallFailure::OutageReply(reply(503)).is_outage());
        assert!(!CallFailure::RateLimited(reply(429)).is_outage());
        assert!(!CallFailure::NotDecided.is_outage());
    }

    #[test]
    fn a_not_found_proves_absence_only_fresh_and_retained() {
        let read = |ledger: Option<i64>, history_from: Option<i64>| TransactionRead {
            read: AtLedger {
                value: None,
                ledger,
            },
            history_from,
        };
        assert!(read(Some(100), Some(1_000)).proves_absent(100, 1_000));
        assert!(read(Some(100), None).proves_absent(100, 1_000));
        // A node behind the fence.
        assert!(!read(Some(99), Some(1_000)).proves_absent(100, 1_000));
        assert!(!read(None, None).proves_absent(100, 1_000));
        // A node whose history starts after the transaction could have been submitted.
        assert!(!read(Some(100), Some(1_001)).proves_absent(100, 1_000));
    }
}
