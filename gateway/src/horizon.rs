//! The Horizon client: plain HTTP/JSON with Horizon's real shapes (`GET /accounts/{id}`,
//! `GET /fee_stats`, `GET /`, `POST /transactions`, `GET /transactions/{hash}`,
//! `GET /friendbot`). Every call has a deadline; reads are retried with backoff on outage errors;
//! a circuit breaker (failsafe, the same policy as the signerd client) makes an outage cost a
//! fast [`HorizonError::Unavailable`] instead of a pile of waiting calls.
//!
//! Submission is never retried here: what to do after an ambiguous submission (resubmit the
//! same bytes, poll the hash) is the payment worker's decision, so [`Horizon::submit`] reports
//! exactly what happened as a [`Submission`].

use std::time::Duration;

use failsafe::futures::CircuitBreaker;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::config::HorizonConfig;
use crate::metrics::Metrics;

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

/// Why a Horizon call did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum HorizonError {
    /// Horizon is down, overloaded (503), too slow, or the circuit breaker is open. Safe to retry.
    #[error("horizon unavailable: {0}")]
    Unavailable(String),
    /// Horizon answered 429: come back after `retry_after` (its `Retry-After`, 1 s when it
    /// gave none). Not an outage: the circuit breaker does not count it.
    #[error("horizon rate limit exceeded; retry after {} ms", retry_after.as_millis())]
    RateLimited {
        /// How long Horizon asked to wait.
        retry_after: Duration,
    },
    /// A submission's 504 `timeout` / `transaction_submission_timeout`: not an outage.
    #[error("horizon: the submission timed out before the network decided")]
    NotYetDecided,
    /// Horizon answered something the gateway cannot use (a bug on one side or the other).
    #[error("unexpected horizon answer: {0}")]
    Protocol(String),
}

impl HorizonError {
    /// The least wait before asking again: Horizon's `Retry-After` on a 429, else nothing.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HorizonError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// An account as Horizon shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountInfo {
    /// The account's current sequence number.
    pub sequence: i64,
    /// The native balance in stroops.
    pub native_balance_stroops: i64,
}

/// What a transaction looks like once Horizon has ingested it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionRecord {
    /// The ledger it was applied in.
    pub ledger: i64,
    /// Whether it succeeded.
    pub successful: bool,
    /// The fee charged, in stroops.
    pub fee_charged: i64,
    /// The result codes (`tx_failed`, `op_underfunded`, ...) decoded from `result_xdr`.
    pub result_codes: ResultCodes,
}

/// Horizon's `extras.result_codes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ResultCodes {
    /// The transaction-level code, e.g. `tx_failed`, `tx_bad_seq`.
    pub transaction: String,
    /// One code per operation, e.g. `op_underfunded`.
    #[serde(default)]
    pub operations: Vec<String>,
}

/// The outcome of one synchronous submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submission {
    /// Applied (successfully or not: a `tx_failed` in a ledger is `Applied` with
    /// `successful: false`).
    Applied(TransactionRecord),
    /// Refused before reaching a ledger, with Horizon's codes (`tx_bad_seq`, `tx_too_late`,
    /// `tx_insufficient_fee`, `tx_bad_auth`, ...).
    Rejected(ResultCodes),
    /// Horizon could not say (504 timeout, 503, network error, breaker open): the transaction
    /// may or may not land. Resubmit the same bytes and poll the hash.
    Unknown(String),
    /// Horizon answered 429 and did not take the transaction: resubmit the same bytes after
    /// this long.
    RateLimited(Duration),
    /// Horizon's 504 `timeout` / `transaction_submission_timeout`: the network has not decided
    /// (in a surge, the transaction waits outside the ledgers). It may still land.
    NotYetDecided,
}

/// The most recent closed ledger Horizon knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatestLedger {
    /// Its sequence.
    pub sequence: i64,
    /// Its close time, unix seconds.
    pub closed_at: i64,
    /// The oldest ledger whose history Horizon still keeps (older ones are pruned).
    pub elder: i64,
}

/// The Horizon client.
pub struct Horizon {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    timeout: Duration,
    submit_timeout: Duration,
    attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    breaker: Breaker,
    metrics: Metrics,
    /// The last recommended fee and when it was read: `fee_stats` changes once per ledger, so
    /// one read per second serves every payment built meanwhile.
    fee_cache: std::sync::Mutex<Option<(tokio::time::Instant, i64)>>,
}

/// Records per page of an account's history.
const HISTORY_PAGE: u32 = 200;
/// Pages of an account's history searched for a sequence number before it counts as pruned.
const HISTORY_PAGES: u32 = 10;

/// Who used a sequence number of an account; see [`Horizon::sequence_use`].
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

/// How long a `fee_stats` answer is reused.
const FEE_CACHE_TTL: Duration = Duration::from_secs(1);

struct RawReply {
    status: u16,
    body: Bytes,
    /// The `Latest-Ledger` header: the last ledger the answering node had ingested. Behind a
    /// load balancer nodes lag differently, so this (not the wall clock) says how fresh a read is.
    latest_ledger: Option<i64>,
    /// `Retry-After` (seconds) on a 429.
    retry_after: Option<Duration>,
    /// `Location` on a redirect.
    location: Option<String>,
}

/// A read and the ledger the node that answered had ingested (its `Latest-Ledger` header;
/// `None` when absent). A decision that needs "as of ledger L" takes only reads with
/// `ledger >= L`: a lagging node's 404 proves nothing about later ledgers.
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

impl Horizon {
    /// A client for the configured Horizon: `https://` (TLS with the system's root
    /// certificates, rustls with ring) or plain `http://` (a local Horizon or the simulator).
    pub fn new(config: &HorizonConfig, metrics: Metrics) -> crate::error::Result<Self> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        http.set_nodelay(true);
        http.enforce_http(false);
        let with_roots = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider());
        let builder = match with_roots {
            Ok(builder) => builder,
            // A plain-HTTP Horizon does not need roots: a host without any must still work.
            Err(e) if config.url.starts_with("http://") => {
                tracing::debug!(error = %e, "no system root certificates; plain HTTP only");
                let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| crate::error::Error::Config(format!("horizon: tls: {e}")))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
            }
            Err(e) => {
                return Err(crate::error::Error::io(
                    "horizon: loading the system's root certificates",
                    e,
                ));
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let breaker = failsafe::Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                config.circuit_breaker.consecutive_failures,
                OpenDurations {
                    next: Duration::from_millis(config.circuit_breaker.open_ms),
                    max: Duration::from_millis(config.circuit_breaker.max_open_ms),
                },
            ))
            .build();
        Ok(Horizon {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(256)
                .build(connector),
            base: config.url.trim_end_matches('/').to_owned(),
            timeout: Duration::from_millis(config.timeout_ms),
            submit_timeout: Duration::from_millis(config.submit_timeout_ms),
            attempts: config.retry.attempts,
            initial_backoff: Duration::from_millis(config.retry.initial_backoff_ms),
            max_backoff: Duration::from_millis(config.retry.max_backoff_ms),
            breaker,
            metrics,
            fee_cache: std::sync::Mutex::new(None),
        })
    }

    /// `GET /accounts/{id}`; `None` when the account does not exist (404).
    pub async fn account(&self, account_id: &str) -> Result<Option<AccountInfo>, HorizonError> {
        Ok(self.account_at(account_id).await?.value)
    }

    /// [`Horizon::account`] with the ledger the answering node had ingested.
    pub async fn account_at(
        &self,
        account_id: &str,
    ) -> Result<AtLedger<Option<AccountInfo>>, HorizonError> {
        let reply = self
            .read("account", &format!("/accounts/{account_id}"))
            .await?;
        let ledger = reply.latest_ledger;
        if reply.status == 404 {
            return Ok(AtLedger {
                value: None,
                ledger,
            });
        }
        let account: AccountJson = parse_ok("account", &reply)?;
        let sequence = account
            .sequence
            .parse::<i64>()
            .map_err(|_| HorizonError::Protocol("account.sequence is not an integer".into()))?;
        let native = account
            .balances
            .iter()
            .find(|b| b.asset_type == "native")
            .map(|b| parse_amount(&b.balance))
            .transpose()?
            .unwrap_or(0);
        Ok(AtLedger {
            value: Some(AccountInfo {
                sequence,
                native_balance_stroops: native,
            }),
            ledger,
        })
    }

    /// The fee per operation to offer: `fee_stats`' `fee_charged.p90`, at least
    /// `last_ledger_base_fee`.
    pub async fn recommended_fee(&self) -> Result<i64, HorizonError> {
        if let Ok(cache) = self.fee_cache.lock()
            && let Some((at, fee)) = *cache
            && at.elapsed() < FEE_CACHE_TTL
        {
            return Ok(fee);
        }
        let fee = self.read_recommended_fee().await?;
        if let Ok(mut cache) = self.fee_cache.lock() {
            *cache = Some((tokio::time::Instant::now(), fee));
        }
        Ok(fee)
    }

    async fn read_recommended_fee(&self) -> Result<i64, HorizonError> {
        let reply = self.read("fee_stats", "/fee_stats").await?;
        let stats: FeeStatsJson = parse_ok("fee_stats", &reply)?;
        let base = parse_int("last_ledger_base_fee", &stats.last_ledger_base_fee)?;
        let p90 = parse_int("fee_charged.p90", &stats.fee_charged.p90)?;
        Ok(base.max(p90))
    }

    /// The latest closed ledger (`GET /`: `history_latest_ledger` and its close time).
    pub async fn latest_ledger(&self) -> Result<LatestLedger, HorizonError> {
        let reply = self.read("root", "/").await?;
        let root: RootJson = parse_ok("root", &reply)?;
        let closed_at = time::OffsetDateTime::parse(
            &root.history_latest_ledger_closed_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| HorizonError::Protocol("history_latest_ledger_closed_at".into()))?;
        Ok(LatestLedger {
            sequence: root.history_latest_ledger,
            closed_at: closed_at.unix_timestamp(),
            elder: root.history_elder_ledger.max(1),
        })
    }

    /// `GET /transactions/{hash}`; `None` while Horizon has not ingested it (404), with the
    /// ledger the answering node had ingested (a 404 says nothing about later ledgers).
    pub async fn transaction(
        &self,
        hash: &str,
    ) -> Result<AtLedger<Option<TransactionRecord>>, HorizonError> {
        let reply = self
            .read("transaction", &format!("/transactions/{hash}"))
            .await?;
        let ledger = reply.latest_ledger;
        if reply.status == 404 {
            return Ok(AtLedger {
                value: None,
                ledger,
            });
        }
        let tx: TransactionJson = parse_ok("transaction", &reply)?;
        Ok(AtLedger {
            value: Some(tx.into_record()?),
            ledger,
        })
    }

    /// Which transaction used `sequence` of `account`, from Horizon's history of the account
    /// (`GET /accounts/{id}/transactions`, newest first, paged back until the sequence is
    /// passed). `as_of` is a ledger at which the account's sequence was seen at or past
    /// `sequence`: an answer from a node behind it is [`SequenceUse::Behind`].
    pub async fn sequence_use(
        &self,
        account: &str,
        sequence: i64,
        as_of: i64,
    ) -> Result<SequenceUse, HorizonError> {
        let mut cursor = String::new();
        for _ in 0..HISTORY_PAGES {
            let reply = self
                .read(
                    "account_transactions",
                    &format!(
                        "/accounts/{account}/transactions?order=desc&limit={HISTORY_PAGE}&include_failed=true{cursor}"
                    ),
                )
                .await?;
            if reply.latest_ledger.is_none_or(|seen| seen < as_of) {
                return Ok(SequenceUse::Behind);
            }
            if reply.status == 404 {
                // The account (just seen) is unknown to this node: it is behind.
                return Ok(SequenceUse::Behind);
            }
            let page: PageJson<HistoryJson> = parse_ok("account_transactions", &reply)?;
            let records = page.embedded.records;
            let Some(last) = records.last() else {
                return self.history_end(sequence).await;
            };
            cursor = format!("&cursor={}", form_encode(&last.paging_token));
            for entry in records {
                if entry.source_account != account {
                    continue;
                }
                let used = parse_int("source_account_sequence", &entry.source_account_sequence)?;
                if used == sequence {
                    let inner_hash = entry.inner_transaction.as_ref().map(|i| i.hash.clone());
                    let hash = entry.hash.clone();
                    return Ok(SequenceUse::By {
                        hash,
                        inner_hash,
                        record: entry.transaction.into_record()?,
                    });
                }
                if used < sequence {
                    // The history reaches below the sequence without it: not ingested yet.
                    return Ok(SequenceUse::NotShown);
                }
            }
        }
        Ok(SequenceUse::Pruned)
    }

    /// The account's history ended above `sequence`. An account's first sequence number is
    /// its creation ledger shifted left 32 bits, so the transaction that used `sequence` was
    /// applied in ledger `sequence >> 32` or later: if Horizon still keeps that ledger, the
    /// transaction is not ingested yet; if not, it may be pruned.
    async fn history_end(&self, sequence: i64) -> Result<SequenceUse, HorizonError> {
        let root = self.latest_ledger().await?;
        Ok(if root.elder > sequence >> 32 {
            SequenceUse::Pruned
        } else {
            SequenceUse::NotShown
        })
    }

    /// `GET /friendbot?addr=`: funds a test-network account. Ok(false) when it already exists.
    /// Horizon run with a separate friendbot answers with a redirect to it (`--friendbot-url`):
    /// one redirect is followed, to an `http(s)` URL only.
    pub async fn friendbot(&self, account_id: &str) -> Result<bool, HorizonError> {
        let mut url = format!("{}/friendbot?addr={account_id}", self.base);
        let mut reply = self
            .once_url(
                "friendbot",
                hyper::Method::GET,
                &url,
                None,
                self.submit_timeout,
            )
            .await?;
        if matches!(reply.status, 301 | 302 | 303 | 307 | 308) {
            let location = reply.location.take().ok_or_else(|| {
                HorizonError::Protocol("friendbot redirect without a Location".into())
            })?;
            url = if location.starts_with("http://") || location.starts_with("https://") {
                location
            } else if location.starts_with('/') {
                format!("{}{location}", self.base)
            } else {
                return Err(HorizonError::Protocol(format!(
                    "friendbot redirected to {location:?}"
                )));
            };
            reply = self
                .once_url(
                    "friendbot",
                    hyper::Method::GET,
                    &url,
                    None,
                    self.submit_timeout,
                )
                .await?;
        }
        match reply.status {
            200 => Ok(true),
            400 => Ok(false),
            other => Err(HorizonError::Protocol(format!(
                "friendbot answered {other}"
            ))),
        }
    }

    /// `POST /transactions` with the base64 envelope; see [`Submission`].
    pub async fn submit(&self, envelope_base64: &str) -> Submission {
        let body = format!("tx={}", form_encode(envelope_base64));
        let reply = match self
            .once(
                "submit",
                hyper::Method::POST,
                "/transactions",
                Some(body),
                self.submit_timeout,
            )
            .await
        {
            Ok(reply) => reply,
            Err(HorizonError::RateLimited { retry_after }) => {
                return Submission::RateLimited(retry_after);
            }
            Err(HorizonError::NotYetDecided) => return Submission::NotYetDecided,
            Err(e) => return Submission::Unknown(e.to_string()),
        };
        match reply.status {
            200 => match serde_json::from_slice::<TransactionJson>(&reply.body)
                .map_err(|e| HorizonError::Protocol(format!("transaction json: {e}")))
                .and_then(TransactionJson::into_record)
            {
                Ok(record) => Submission::Applied(record),
                Err(e) => Submission::Unknown(e.to_string()),
            },
            400 => {
                let problem: ProblemJson = match serde_json::from_slice(&reply.body) {
                    Ok(p) => p,
                    Err(e) => return Submission::Unknown(format!("problem json: {e}")),
                };
                let codes = problem
                    .extras
                    .and_then(|e| e.result_codes)
                    .unwrap_or_else(|| ResultCodes {
                        transaction: problem_type(&problem.r#type).to_owned(),
                        operations: Vec::new(),
                    });
                Submission::Rejected(codes)
            }
            other => Submission::Unknown(format!("horizon answered {other}")),
        }
    }

    /// A read, with retries on outage errors.
    async fn read(&self, what: &'static str, path: &str) -> Result<RawReply, HorizonError> {
        let mut backoff = self.initial_backoff;
        let mut attempts_left = self.attempts;
        loop {
            attempts_left = attempts_left.saturating_sub(1);
            match self
                .once(what, hyper::Method::GET, path, None, self.timeout)
                .await
            {
                Err(HorizonError::Unavailable(reason)) if attempts_left > 0 => {
                    tracing::debug!(what, %reason, "horizon read failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
                // Honour Retry-After within the read's own deadline; a longer wait is the
                // caller's (the worker parks the payment that long).
                Err(HorizonError::RateLimited { retry_after })
                    if attempts_left > 0 && retry_after <= self.timeout =>
                {
                    tracing::debug!(
                        what,
                        retry_after_ms = retry_after.as_millis() as u64,
                        "horizon rate limited; retrying after Retry-After"
                    );
                    tokio::time::sleep(retry_after).await;
                }
                other => return other,
            }
        }
    }

    /// One request to a path of the configured Horizon; see [`Horizon::once_url`].
    async fn once(
        &self,
        what: &'static str,
        method: hyper::Method,
        path: &str,
        form: Option<String>,
        deadline: Duration,
    ) -> Result<RawReply, HorizonError> {
        let url = format!("{}{path}", self.base);
        self.once_url(what, method, &url, form, deadline).await
    }

    /// One request through the breaker. 5xx and transport errors are outages, except a
    /// submission's 504 (`timeout`, `transaction_submission_timeout`): that is Horizon saying
    /// the network has not decided yet (a surge), not that Horizon is down, so it does not open
    /// the breaker for everyone. A 429 is not an outage either.
    async fn once_url(
        &self,
        what: &'static str,
        method: hyper::Method,
        url: &str,
        form: Option<String>,
        deadline: Duration,
    ) -> Result<RawReply, HorizonError> {
        let is_submission = method == hyper::Method::POST;
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header(hyper::header::ACCEPT, "application/json");
        if form.is_some() {
            builder = builder.header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        }
        let request = builder
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|e| HorizonError::Protocol(format!("request: {e}")))?;
        let client = self.client.clone();
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
            if status == 504 && is_submission && is_submission_timeout(&reply.body) {
                return Err(CallFailure::SubmissionTimeout);
            }
            if status >= 500 {
                // 503 server_over_capacity, 504 timeout, 502 from a proxy: all "try later".
                return Err(CallFailure::OutageReply(reply));
            }
            Ok(reply)
        };
        match self.breaker.call_with(CallFailure::is_outage, call).await {
            Ok(reply) => {
                self.metrics.horizon_call(what, "ok");
                Ok(reply)
            }
            Err(failsafe::Error::Rejected) => {
                self.metrics.horizon_call(what, "rejected_open");
                Err(HorizonError::Unavailable("circuit breaker open".into()))
            }
            Err(failsafe::Error::Inner(CallFailure::Outage(reason))) => {
                self.metrics.horizon_call(what, "unavailable");
                Err(HorizonError::Unavailable(reason))
            }
            Err(failsafe::Error::Inner(CallFailure::RateLimited(reply))) => {
                self.metrics.horizon_call(what, "rate_limited");
                Err(HorizonError::RateLimited {
                    retry_after: reply.retry_after.unwrap_or(Duration::from_secs(1)),
                })
            }
            Err(failsafe::Error::Inner(CallFailure::SubmissionTimeout)) => {
                self.metrics.horizon_call(what, "submission_timeout");
                Err(HorizonError::NotYetDecided)
            }
            Err(failsafe::Error::Inner(CallFailure::OutageReply(reply))) => {
                self.metrics.horizon_call(what, "unavailable");
                let kind = serde_json::from_slice::<ProblemJson>(&reply.body)
                    .map(|p| problem_type(&p.r#type).to_owned())
                    .unwrap_or_default();
                Err(HorizonError::Unavailable(format!(
                    "status {} {kind}",
                    reply.status
                )))
            }
        }
    }
}

enum CallFailure {
    Outage(String),
    OutageReply(RawReply),
    /// 429: Horizon is up and asks to slow down.
    RateLimited(RawReply),
    /// A submission's 504: the network has not decided yet.
    SubmissionTimeout,
}

impl CallFailure {
    /// What the circuit breaker counts: Horizon down or unreachable, not Horizon answering
    /// "slow down" or "not decided yet".
    fn is_outage(&self) -> bool {
        matches!(self, CallFailure::Outage(_) | CallFailure::OutageReply(_))
    }
}

/// Whether a submission's 504 body is Horizon's `timeout` or `transaction_submission_timeout`
/// problem (a proxy's bare 504 is an outage like any other).
fn is_submission_timeout(body: &[u8]) -> bool {
    serde_json::from_slice::<ProblemJson>(body).is_ok_and(|p| {
        matches!(
            problem_type(&p.r#type),
            "timeout" | "transaction_submission_timeout"
        )
    })
}

fn problem_type(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

fn parse_ok<T: serde::de::DeserializeOwned>(
    what: &str,
    reply: &RawReply,
) -> Result<T, HorizonError> {
    if reply.status != 200 {
        return Err(HorizonError::Protocol(format!(
            "{what}: status {}",
            reply.status
        )));
    }
    serde_json::from_slice(&reply.body)
        .map_err(|e| HorizonError::Protocol(format!("{what} json: {e}")))
}

fn parse_int(field: &str, raw: &str) -> Result<i64, HorizonError> {
    raw.parse()
        .map_err(|_| HorizonError::Protocol(format!("{field} is not an integer")))
}

/// Horizon amounts ("12.3400000") to stroops.
fn parse_amount(raw: &str) -> Result<i64, HorizonError> {
    crate::payments::parse_amount(raw)
        .ok_or_else(|| HorizonError::Protocol(format!("amount {raw:?}")))
}

/// `application/x-www-form-urlencoded` for base64 text.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[derive(Deserialize)]
struct AccountJson {
    sequence: String,
    #[serde(default)]
    balances: Vec<BalanceJson>,
}

#[derive(Deserialize)]
struct BalanceJson {
    balance: String,
    asset_type: String,
}

#[derive(Deserialize)]
struct FeeStatsJson {
    last_ledger_base_fee: String,
    fee_charged: FeeDistributionJson,
}

#[derive(Deserialize)]
struct FeeDistributionJson {
    p90: String,
}

#[derive(Deserialize)]
struct RootJson {
    history_latest_ledger: i64,
    #[serde(default)]
    history_elder_ledger: i64,
    history_latest_ledger_closed_at: String,
}

#[derive(Deserialize)]
struct PageJson<T> {
    #[serde(rename = "_embedded")]
    embedded: EmbeddedJson<T>,
}

#[derive(Deserialize)]
struct EmbeddedJson<T> {
    records: Vec<T>,
}

#[derive(Deserialize)]
struct HistoryJson {
    hash: String,
    paging_token: String,
    source_account: String,
    source_account_sequence: String,
    #[serde(default)]
    inner_transaction: Option<InnerTransactionJson>,
    #[serde(flatten)]
    transaction: TransactionJson,
}

#[derive(Deserialize)]
struct InnerTransactionJson {
    hash: String,
}

#[derive(Deserialize)]
struct TransactionJson {
    ledger: i64,
    successful: bool,
    fee_charged: serde_json::Value,
    #[serde(default)]
    result_xdr: String,
}

impl TransactionJson {
    fn into_record(self) -> Result<TransactionRecord, HorizonError> {
        let fee_charged = match &self.fee_charged {
            serde_json::Value::String(s) => parse_int("fee_charged", s)?,
            serde_json::Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| HorizonError::Protocol("fee_charged".into()))?,
            _ => return Err(HorizonError::Protocol("fee_charged".into())),
        };
        let result_codes = crate::payments::transaction::result_codes(&self.result_xdr)
            .unwrap_or_else(|| ResultCodes {
                transaction: if self.successful {
                    "tx_success".into()
                } else {
                    "tx_failed".into()
                },
                operations: Vec::new(),
            });
        Ok(TransactionRecord {
            ledger: self.ledger,
            successful: self.successful,
            fee_charged,
            result_codes,
        })
    }
}

#[derive(Deserialize)]
struct ProblemJson {
    #[serde(default)]
    r#type: String,
    #[serde(default)]
    extras: Option<ProblemExtras>,
}

#[derive(Deserialize)]
struct ProblemExtras {
    #[serde(default)]
    result_codes: Option<ResultCodes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_form_encoded() {
        assert_eq!(form_encode("ab+/=="), "ab%2B%2F%3D%3D");
    }

    #[test]
    fn only_outages_count_toward_the_breaker() {
        let reply = |status: u16, body: &str| RawReply {
            status,
            body: Bytes::from(body.to_owned()),
            latest_ledger: None,
            retry_after: None,
            location: None,
        };
        assert!(CallFailure::Outage("x".into()).is_outage());
        assert!(CallFailure::OutageReply(reply(503, "")).is_outage());
        assert!(!CallFailure::RateLimited(reply(429, "")).is_outage());
        assert!(!CallFailure::SubmissionTimeout.is_outage());
        let problem = |kind: &str| {
            format!(r#"{{"type":"https://stellar.org/horizon-errors/{kind}","status":504}}"#)
        };
        assert!(is_submission_timeout(
            problem("transaction_submission_timeout").as_bytes()
        ));
        assert!(is_submission_timeout(problem("timeout").as_bytes()));
        assert!(!is_submission_timeout(b"<html>gateway timeout</html>"));
    }

    #[test]
    fn problem_types_are_their_last_segment() {
        assert_eq!(
            problem_type("https://stellar.org/horizon-errors/transaction_failed"),
            "transaction_failed"
        );
    }
}
