//! The Horizon backend of [`Network`]: plain HTTP/JSON with Horizon's real shapes
//! (`GET /accounts/{id}`, `GET /fee_stats`, `GET /`, `POST /transactions`,
//! `GET /transactions/{hash}`, `GET /accounts/{id}/transactions`, `GET /friendbot`). Every call
//! has a deadline; reads are retried with backoff on outage errors; the circuit breaker of the
//! shared [`HttpStack`] makes an outage cost a fast [`NetworkError::Unavailable`] instead of a
//! pile of waiting calls. Freshness comes from Horizon's `Latest-Ledger` header.
//!
//! Submission is never retried here: what to do after an ambiguous submission (resubmit the
//! same bytes, poll the hash) is the payment worker's decision, so [`Horizon::submit`] reports
//! exactly what happened as a [`Submission`].

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use serde::Deserialize;

use super::{
    AccountInfo, AtLedger, Classify, FeeCache, HttpStack, LatestLedger, LedgerRange,
    LedgerTransaction, Network, NetworkError, RawReply, ResultCodes, RetryPolicy, SequenceUse,
    Submission, TransactionRead, TransactionRecord, with_retries,
};
use crate::config::NetworkConfig;
use crate::metrics::Metrics;

/// The Horizon client.
pub struct Horizon {
    http: HttpStack,
    base: String,
    timeout: Duration,
    submit_timeout: Duration,
    retry: RetryPolicy,
    /// The last recommended fee and when it was read.
    fee_cache: FeeCache,
}

/// Records per page of an account's history.
const HISTORY_PAGE: u32 = 200;
/// Pages of an account's history searched for a sequence number before it counts as pruned.
const HISTORY_PAGES: u32 = 10;
/// Horizon's largest page, for a ledger's transactions.
const LEDGER_PAGE: usize = 200;

/// How Horizon's replies are read by the shared stack: a submission's 504 `timeout` /
/// `transaction_submission_timeout` is "not decided yet" (a surge), not an outage.
const CLASSIFY: Classify = Classify {
    not_decided: |reply| reply.status == 504 && is_submission_timeout(&reply.body),
    describe: |reply| {
        serde_json::from_slice::<ProblemJson>(&reply.body)
            .map(|p| problem_type(&p.r#type).to_owned())
            .unwrap_or_default()
    },
};

/// Submissions are the only POSTs, and the only calls whose 504 can mean "not decided".
const CLASSIFY_READ: Classify = Classify {
    not_decided: |_| false,
    describe: CLASSIFY.describe,
};

impl Horizon {
    /// A client for the configured Horizon: `https://` (TLS with the system's root
    /// certificates, rustls with ring) or plain `http://` (a local Horizon or the simulator).
    pub fn new(config: &NetworkConfig, metrics: Metrics) -> crate::error::Result<Self> {
        Ok(Horizon {
            http: HttpStack::new(
                "horizon",
                &config.url,
                Duration::from_millis(config.connect_timeout_ms),
                &config.circuit_breaker,
                metrics,
            )?,
            base: config.url.trim_end_matches('/').to_owned(),
            timeout: Duration::from_millis(config.timeout_ms),
            submit_timeout: Duration::from_millis(config.submit_timeout_ms),
            retry: RetryPolicy::from_config(config),
            fee_cache: FeeCache::default(),
        })
    }
}

#[async_trait::async_trait]
impl Network for Horizon {
    fn kind(&self) -> &'static str {
        "horizon"
    }

    /// `GET /accounts/{id}`; `None` when the account does not exist (404), with the ledger the
    /// answering node had ingested (`Latest-Ledger`).
    async fn account_at(
        &self,
        account_id: &str,
    ) -> Result<AtLedger<Option<AccountInfo>>, NetworkError> {
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
            .map_err(|_| NetworkError::Protocol("account.sequence is not an integer".into()))?;
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
    async fn recommended_fee(&self) -> Result<i64, NetworkError> {
        self.fee_cache
            .get_or(async {
                let reply = self.read("fee_stats", "/fee_stats").await?;
                fee_from_stats(&parse_ok("fee_stats", &reply)?)
            })
            .await
    }

    /// The latest closed ledger (`GET /`: `history_latest_ledger` and its close time).
    async fn latest_ledger(&self) -> Result<LatestLedger, NetworkError> {
        let reply = self.read("root", "/").await?;
        latest_from_root(&parse_ok("root", &reply)?)
    }

    /// `GET /transactions/{hash}`; `None` while Horizon has not ingested it (404), with the
    /// ledger the answering node had ingested (a 404 says nothing about later ledgers).
    async fn transaction(&self, hash: &str) -> Result<TransactionRead, NetworkError> {
        let reply = self
            .read("transaction", &format!("/transactions/{hash}"))
            .await?;
        let ledger = reply.latest_ledger;
        let value = if reply.status == 404 {
            None
        } else {
            Some(parse_ok::<TransactionJson>("transaction", &reply)?.into_record()?)
        };
        Ok(TransactionRead {
            read: AtLedger { value, ledger },
            history_from: None,
        })
    }
    /// Which transaction used `sequence` of `account`, from Horizon's history of the account
    /// (`GET /accounts/{id}/transactions`, newest first, paged back until the sequence is
    /// passed). `as_of` is a ledger at which the account's sequence was seen at or past
    /// `sequence`: an answer from a node behind it is [`SequenceUse::Behind`].
    async fn sequence_use(
        &self,
        account: &str,
        sequence: i64,
        as_of: i64,
    ) -> Result<SequenceUse, NetworkError> {
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

    /// `GET /ledgers/{n}/transactions` for each ledger of the range (successful transactions,
    /// which are the only ones that credit), bounded by `GET /`'s `history_latest_ledger` and by
    /// the `Latest-Ledger` of each answer (a lagging node's empty page proves nothing). A ledger
    /// older than `history_elder_ledger`, or a 410 `before_history`, is a gap.
    async fn ledger_transactions(&self, from: i64, to: i64) -> Result<LedgerRange, NetworkError> {
        let latest = self.latest_ledger().await?;
        if from < latest.elder {
            return Err(NetworkError::Gap {
                from,
                oldest: latest.elder,
            });
        }
        let to = to.min(latest.sequence);
        let mut transactions = Vec::new();
        let mut through = from - 1;
        'ledgers: for ledger in from..=to {
            let mut cursor = String::new();
            let mut found = Vec::new();
            loop {
                let reply = self
                    .read(
                        "ledger_transactions",
                        &format!(
                            "/ledgers/{ledger}/transactions?order=asc&limit={LEDGER_PAGE}{cursor}"
                        ),
                    )
                    .await?;
                if reply.status == 410 {
                    return Err(NetworkError::Gap {
                        from: ledger,
                        oldest: latest.elder,
                    });
                }
                if reply.latest_ledger.is_none_or(|seen| seen < ledger) {
                    break 'ledgers;
                }
                let page: PageJson<LedgerTransactionJson> =
                    parse_ok("ledger_transactions", &reply)?;
                let count = page.embedded.records.len();
                for record in page.embedded.records {
                    let token = parse_int("paging_token", &record.paging_token)?;
                    cursor = format!("&cursor={token}");
                    if record.ledger != ledger {
                        return Err(NetworkError::Protocol(format!(
                            "ledger {ledger}'s transactions: one of ledger {}",
                            record.ledger
                        )));
                    }
                    found.push(LedgerTransaction {
                        ledger,
                        application_order: (token >> 12) & 0xF_FFFF,
                        hash: record.hash,
                        successful: record.successful,
                        envelope_xdr: record.envelope_xdr,
                        result_xdr: record.result_xdr,
                        result_meta_xdr: record.result_meta_xdr.filter(|m| !m.is_empty()),
                    });
                }
                if count < LEDGER_PAGE {
                    break;
                }
            }
            transactions.extend(found);
            through = ledger;
        }
        Ok(LedgerRange {
            transactions,
            through,
            latest: latest.sequence,
        })
    }

    /// `GET /friendbot?addr=`: funds a test-network account. Ok(false) when it already exists.
    /// Horizon run with a separate friendbot answers with a redirect to it (`--friendbot-url`):
    /// one redirect is followed, to an `http(s)` URL only.
    async fn friendbot(&self, account_id: &str) -> Result<bool, NetworkError> {
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
                NetworkError::Protocol("friendbot redirect without a Location".into())
            })?;
            url = if location.starts_with("http://") || location.starts_with("https://") {
                location
            } else if location.starts_with('/') {
                format!("{}{location}", self.base)
            } else {
                return Err(NetworkError::Protocol(format!(
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
            other => Err(NetworkError::Protocol(format!(
                "friendbot answered {other}"
            ))),
        }
    }

    /// `POST /transactions` with the base64 envelope; see [`Submission`].
    async fn submit(&self, envelope_base64: &str) -> Submission {
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
            Err(NetworkError::RateLimited { retry_after }) => {
                return Submission::RateLimited(retry_after);
            }
            Err(NetworkError::NotYetDecided) => return Submission::NotYetDecided,
            Err(e) => return Submission::Unknown(e.to_string()),
        };
        match reply.status {
            200 => match serde_json::from_slice::<TransactionJson>(&reply.body)
                .map_err(|e| NetworkError::Protocol(format!("transaction json: {e}")))
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

    async fn check_ready(&self) -> Result<(), NetworkError> {
        self.latest_ledger().await.map(|_| ())
    }
}

impl Horizon {
    /// The account's history ended above `sequence`. An account's first sequence number is
    /// its creation ledger shifted left 32 bits, so the transaction that used `sequence` was
    /// applied in ledger `sequence >> 32` or later: if Horizon still keeps that ledger, the
    /// transaction is not ingested yet; if not, it may be pruned.
    async fn history_end(&self, sequence: i64) -> Result<SequenceUse, NetworkError> {
        let root = self.latest_ledger().await?;
        Ok(if root.elder > sequence >> 32 {
            SequenceUse::Pruned
        } else {
            SequenceUse::NotShown
        })
    }

    /// A read, with retries on outage errors.
    async fn read(&self, what: &'static str, path: &str) -> Result<RawReply, NetworkError> {
        let url = format!("{}{path}", self.base);
        with_retries(what, &self.retry, || {
            self.once_url(what, hyper::Method::GET, &url, None, self.timeout)
        })
        .await
    }

    /// One request to a path of the configured Horizon; see [`Horizon::once_url`].
    async fn once(
        &self,
        what: &'static str,
        method: hyper::Method,
        path: &str,
        form: Option<String>,
        deadline: Duration,
    ) -> Result<RawReply, NetworkError> {
        let url = format!("{}{path}", self.base);
        self.once_url(what, method, &url, form, deadline).await
    }

    /// One request through the shared stack. A submission's (the only POST's) 504 `timeout`
    /// is Horizon saying the network has not decided yet (a surge), not that Horizon is down.
    async fn once_url(
        &self,
        what: &'static str,
        method: hyper::Method,
        url: &str,
        form: Option<String>,
        deadline: Duration,
    ) -> Result<RawReply, NetworkError> {
        let classify = if method == hyper::Method::POST {
            &CLASSIFY
        } else {
            &CLASSIFY_READ
        };
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
            .map_err(|e| NetworkError::Protocol(format!("request: {e}")))?;
        self.http.call(what, request, deadline, classify).await
    }
}

/// The fee per operation to offer: `fee_stats`' `fee_charged.p90`, at least
/// `last_ledger_base_fee`.
fn fee_from_stats(stats: &FeeStatsJson) -> Result<i64, NetworkError> {
    let base = parse_int("last_ledger_base_fee", &stats.last_ledger_base_fee)?;
    let p90 = parse_int("fee_charged.p90", &stats.fee_charged.p90)?;
    Ok(base.max(p90))
}

/// The latest closed ledger from `GET /`: `history_latest_ledger`, its close time and
/// `history_elder_ledger`.
fn latest_from_root(root: &RootJson) -> Result<LatestLedger, NetworkError> {
    let closed_at = time::OffsetDateTime::parse(
        &root.history_latest_ledger_closed_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| NetworkError::Protocol("history_latest_ledger_closed_at".into()))?;
    Ok(LatestLedger {
        sequence: root.history_latest_ledger,
        closed_at: closed_at.unix_timestamp(),
        elder: root.history_elder_ledger.max(1),
    })
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
) -> Result<T, NetworkError> {
    if reply.status != 200 {
        return Err(NetworkError::Protocol(format!(
            "{what}: status {}",
            reply.status
        )));
    }
    serde_json::from_slice(&reply.body)
        .map_err(|e| NetworkError::Protocol(format!("{what} json: {e}")))
}

fn parse_int(field: &str, raw: &str) -> Result<i64, NetworkError> {
    raw.parse()
        .map_err(|_| NetworkError::Protocol(format!("{field} is not an integer")))
}

/// Horizon amounts ("12.3400000") to stroops.
fn parse_amount(raw: &str) -> Result<i64, NetworkError> {
    crate::payments::parse_amount(raw)
        .ok_or_else(|| NetworkError::Protocol(format!("amount {raw:?}")))
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
struct LedgerTransactionJson {
    hash: String,
    paging_token: String,
    ledger: i64,
    successful: bool,
    envelope_xdr: String,
    result_xdr: String,
    /// Null or absent when Horizon skips transaction meta (`SKIP_TXMETA=true`).
    #[serde(default)]
    result_meta_xdr: Option<String>,
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
    fn into_record(self) -> Result<TransactionRecord, NetworkError> {
        let fee_charged = match &self.fee_charged {
            serde_json::Value::String(s) => parse_int("fee_charged", s)?,
            serde_json::Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| NetworkError::Protocol("fee_charged".into()))?,
            _ => return Err(NetworkError::Protocol("fee_charged".into())),
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
    fn submission_timeouts_are_not_outages_but_a_proxys_504_is() {
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
