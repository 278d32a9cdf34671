//! The Stellar RPC backend of [`Network`]: JSON-RPC 2.0 over HTTP `POST`, with stellar-rpc's
//! real request and response shapes (camelCase fields, some integers as strings, XDR in base64).
//!
//! | need | method |
//! | --- | --- |
//! | sequence and native balance | `getLedgerEntries` with account `LedgerKey`s (batched) |
//! | submit | `sendTransaction`, then `getTransaction` polling |
//! | status by hash | `getTransaction` (`latestLedger` and `oldestLedgerCloseTime` say how far the answer reaches) |
//! | latest ledger | `getLatestLedger` (`sequence`, `closeTime`) and `getHealth` (`oldestLedger`) |
//! | fee estimate | `getFeeStats` (`inclusionFee.p90`) |
//! | who used a sequence | `getTransactions` over a bounded ledger range; see [`StellarRpc::sequence_use`] |
//! | friendbot | `getNetwork` (`friendbotUrl`), then `GET {friendbotUrl}?addr=` |
//! | readiness | `getHealth` (`healthy`) and `getNetwork` (the passphrase matches the config) |
//!
//! `sendTransaction`'s answers: `PENDING` and `DUPLICATE` (already queued) are followed by
//! `getTransaction` polling until the transaction is in a ledger (`SUCCESS`/`FAILED` →
//! [`Submission::Applied`]) or the submission deadline passes ([`Submission::NotYetDecided`]);
//! `TRY_AGAIN_LATER` (the node did not take it) sends the same bytes again after a backoff, a few
//! times, then tells the worker to come back later ([`Submission::RateLimited`]: never final);
//! `ERROR` decodes `errorResultXdr` into the result codes Horizon would give
//! ([`Submission::Rejected`]).
//!
//! Transport, deadlines, 429 `Retry-After` and the circuit breaker are the shared
//! [`HttpStack`]'s, as for Horizon. A JSON-RPC error object is an answer, not an outage: the
//! breaker does not count it; an internal error (`-32603`) is retried as a read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use stellar_xdr::{
    AccountId as XdrAccountId, FeeBumpTransactionInnerTx, LedgerEntryData, LedgerKey,
    LedgerKeyAccount, Limits, PublicKey, ReadXdr, TransactionEnvelope, TransactionResult, Uint256,
    WriteXdr,
};

use super::{
    AccountInfo, AtLedger, Classify, FeeCache, HttpStack, LatestLedger, LedgerRange,
    LedgerTransaction, Network, NetworkError, RawReply, RetryPolicy, SequenceUse, Submission,
    TransactionRead, TransactionRecord, with_retries,
};
use crate::config::{NetworkConfig, RpcLimits};
use crate::metrics::Metrics;

/// Replies are JSON-RPC over plain HTTP statuses: no reply means "not decided".
const CLASSIFY: Classify = Classify {
    not_decided: |_| false,
    describe: |_| String::new(),
};

/// JSON-RPC's "internal error": the node failed answering (its database, its core), not a
/// problem with the request. Retried like an outage.
const INTERNAL_ERROR: i64 = -32603;

/// How long `getTransaction` polling waits between polls at first (doubling, at most
/// [`POLL_MAX`]): ledgers close every ~5 s on the real networks, faster in tests.
const POLL_FIRST: Duration = Duration::from_millis(50);
/// The longest wait between two polls.
const POLL_MAX: Duration = Duration::from_secs(1);

/// The Stellar RPC client.
pub struct StellarRpc {
    http: HttpStack,
    url: String,
    passphrase: String,
    timeout: Duration,
    submit_timeout: Duration,
    retry: RetryPolicy,
    limits: RpcLimits,
    fee_cache: FeeCache,
    next_id: AtomicU64,
}

impl StellarRpc {
    /// A client for the configured RPC endpoint (`https://` with the system's roots, or
    /// `http://` for a local node or the simulator).
    pub fn new(config: &NetworkConfig, metrics: Metrics) -> crate::error::Result<Self> {
        Ok(StellarRpc {
            http: HttpStack::new(
                "rpc",
                &config.url,
                Duration::from_millis(config.connect_timeout_ms),
                &config.circuit_breaker,
                metrics,
            )?,
            url: config.url.clone(),
            passphrase: config.network_passphrase.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            submit_timeout: Duration::from_millis(config.submit_timeout_ms),
            retry: RetryPolicy::from_config(config),
            limits: config.rpc.clone(),
            fee_cache: FeeCache::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// Several accounts at once: `getLedgerEntries` with up to `ledger_entries_batch` keys per
    /// call. Each answer carries the `latestLedger` of the call that read it.
    pub async fn accounts_at(
        &self,
        account_ids: &[&str],
    ) -> Result<Vec<AtLedger<Option<AccountInfo>>>, NetworkError> {
        let mut out = Vec::with_capacity(account_ids.len());
        for chunk in account_ids.chunks(self.limits.ledger_entries_batch.max(1)) {
            let keys = chunk
                .iter()
                .map(|id| account_key(id))
                .collect::<Result<Vec<_>, _>>()?;
            let result: LedgerEntriesJson = self
                .read("getLedgerEntries", json!({ "keys": keys }))
                .await?;
            let ledger = Some(result.latest_ledger.0);
            let mut found = std::collections::HashMap::new();
            for entry in result.entries.iter().flatten() {
                let (key, account) = parse_account_entry(entry)?;
                found.insert(key, account);
            }
            for key in &keys {
                out.push(AtLedger {
                    value: found.remove(key),
                    ledger,
                });
            }
        }
        Ok(out)
    }

    /// One JSON-RPC call, retried on outages (and on the node's internal errors) as a read.
    async fn read<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: serde_json::Value,
    ) -> Result<T, NetworkError> {
        with_retries(method, &self.retry, || async {
            match self.call(method, &params, self.timeout).await? {
                Ok(result) => Ok(result),
                Err(e) if e.code == INTERNAL_ERROR => Err(NetworkError::Unavailable(format!(
                    "{method}: {}",
                    e.message
                ))),
                Err(e) => Err(NetworkError::Protocol(format!(
                    "{method}: error {}: {}",
                    e.code, e.message
                ))),
            }
        })
        .await
    }

    /// One JSON-RPC request: the transport's errors, or the JSON-RPC answer (result or error
    /// object).
    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: &serde_json::Value,
        deadline: Duration,
    ) -> Result<Result<T, RpcErrorJson>, NetworkError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let request = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(&self.url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| NetworkError::Protocol(format!("request: {e}")))?;
        let reply = self.http.call(method, request, deadline, &CLASSIFY).await?;
        parse_reply(method, &reply)
    }

    /// `getTransaction` once.
    async fn get_transaction(&self, hash: &str) -> Result<TransactionRead, NetworkError> {
        let tx: GetTransactionJson = self.read("getTransaction", json!({ "hash": hash })).await?;
        transaction_read(&tx)
    }

    /// `getNetwork`.
    async fn network_info(&self) -> Result<NetworkJson, NetworkError> {
        self.read("getNetwork", json!({})).await
    }

    /// `sendTransaction` until the node takes the bytes or refuses them: `TRY_AGAIN_LATER`
    /// sends the same bytes again after a backoff, `try_again_attempts` times in all.
    async fn send(&self, envelope_base64: &str) -> Result<SendJson, Submission> {
        let params = json!({ "transaction": envelope_base64 });
        let mut backoff = self.retry.initial_backoff;
        for attempt in 1..=self.limits.try_again_attempts {
            let sent: SendJson = match self
                .call("sendTransaction", &params, self.submit_timeout)
                .await
            {
                Ok(Ok(sent)) => sent,
                Ok(Err(e)) => {
                    return Err(Submission::Unknown(format!(
                        "sendTransaction: error {}: {}",
                        e.code, e.message
                    )));
                }
                Err(NetworkError::RateLimited { retry_after }) => {
                    return Err(Submission::RateLimited(retry_after));
                }
                Err(NetworkError::NotYetDecided) => return Err(Submission::NotYetDecided),
                Err(e) => return Err(Submission::Unknown(e.to_string())),
            };
            if sent.status != "TRY_AGAIN_LATER" {
                return Ok(sent);
            }
            tracing::debug!(
                attempt,
                "sendTransaction: TRY_AGAIN_LATER; same bytes again"
            );
            if attempt < self.limits.try_again_attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.retry.max_backoff);
            }
        }
        Err(Submission::RateLimited(backoff))
    }

    /// Polls `getTransaction` for a transaction the node took, until it is in a ledger or the
    /// submission deadline passes.
    async fn poll(&self, hash: &str) -> Submission {
        let until = tokio::time::Instant::now() + self.submit_timeout;
        let mut wait = POLL_FIRST;
        loop {
            match self.get_transaction(hash).await {
                Ok(TransactionRead {
                    read:
                        AtLedger {
                            value: Some(record),
                            ..
                        },
                    ..
                }) => return Submission::Applied(record),
                Ok(_) => {}
                Err(NetworkError::RateLimited { retry_after }) => {
                    wait = wait.max(retry_after);
                }
                Err(e) => return Submission::Unknown(format!("polling getTransaction: {e}")),
            }
            if tokio::time::Instant::now() + wait >= until {
                return Submission::NotYetDecided;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(POLL_MAX);
        }
    }

    /// The source account and sequence number of an envelope, and for a fee bump its inner
    /// transaction's hash.
    fn source_and_sequence(&self, envelope_xdr: &str) -> Option<(String, i64, Option<String>)> {
        let envelope =
            TransactionEnvelope::from_xdr_base64(envelope_xdr, Limits::len(256 * 1024)).ok()?;
        let network_id = crate::payments::transaction::network_id(&self.passphrase);
        let (tx, inner_hash) = match &envelope {
            TransactionEnvelope::Tx(v1) => (v1.tx.clone(), None),
            TransactionEnvelope::TxFeeBump(bump) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &bump.tx.inner_tx;
                let hash = inner.tx.hash(network_id).ok().map(hex::encode);
                (inner.tx.clone(), hash)
            }
            // V0 envelopes (pre-protocol-13 clients) carry a bare ed25519 source.
            TransactionEnvelope::TxV0(v0) => {
                let source = stellar_strkey::ed25519::PublicKey(v0.tx.source_account_ed25519.0);
                return Some((format!("{source}"), v0.tx.seq_num.0, None));
            }
        };
        let source = match &tx.source_account {
            stellar_xdr::MuxedAccount::Ed25519(key) => stellar_strkey::ed25519::PublicKey(key.0),
            stellar_xdr::MuxedAccount::MuxedEd25519(muxed) => {
                stellar_strkey::ed25519::PublicKey(muxed.ed25519.0)
            }
        };
        Some((format!("{source}"), tx.seq_num.0, inner_hash))
    }

    /// Scans `getTransactions` forward from `start` through `end` for the transaction of
    /// `account` at `sequence`. `Ok(None)`: not in the range.
    async fn scan(
        &self,
        account: &str,
        sequence: i64,
        start: u32,
        end: u32,
    ) -> Result<Option<SequenceUse>, NetworkError> {
        let limit = self.limits.history_page;
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(cursor) => json!({ "pagination": { "cursor": cursor, "limit": limit } }),
                None => json!({ "startLedger": start, "pagination": { "limit": limit } }),
            };
            let page: TransactionsJson = self.read("getTransactions", params).await?;
            for tx in &page.transactions {
                if tx.ledger.0 > i64::from(end) {
                    return Ok(None);
                }
                let Some((source, used, inner_hash)) = self.source_and_sequence(&tx.envelope_xdr)
                else {
                    continue;
                };
                if source == account && used == sequence {
                    return Ok(Some(SequenceUse::By {
                        hash: tx.tx_hash.clone(),
                        inner_hash,
                        record: record_of(&tx.status, tx.ledger.0, &tx.result_xdr)?,
                    }));
                }
            }
            // A short page is the node's latest ledger: nothing more to read yet.
            if page.transactions.len() < limit as usize || page.cursor.is_empty() {
                return Ok(None);
            }
            cursor = Some(page.cursor);
        }
    }
}

#[async_trait::async_trait]
impl Network for StellarRpc {
    fn kind(&self) -> &'static str {
        "rpc"
    }

    /// `getLedgerEntries` for the account's key; `latestLedger` is the ledger the answer
    /// reflects.
    async fn account_at(
        &self,
        account_id: &str,
    ) -> Result<AtLedger<Option<AccountInfo>>, NetworkError> {
        self.accounts_at(&[account_id])
            .await?
            .pop()
            .ok_or_else(|| NetworkError::Protocol("getLedgerEntries: no answer".into()))
    }

    /// `getFeeStats`' `inclusionFee.p90`, at least the 100-stroop minimum.
    async fn recommended_fee(&self) -> Result<i64, NetworkError> {
        self.fee_cache
            .get_or(async {
                let stats: FeeStatsJson = self.read("getFeeStats", json!({})).await?;
                fee_from_stats(&stats)
            })
            .await
    }

    /// `getLatestLedger` (sequence and close time) with `getHealth`'s `oldestLedger`.
    async fn latest_ledger(&self) -> Result<LatestLedger, NetworkError> {
        let (latest, health) = tokio::join!(
            self.read::<LatestLedgerJson>("getLatestLedger", json!({})),
            self.read::<HealthJson>("getHealth", json!({})),
        );
        latest_ledger(&latest?, &health?)
    }

    /// `getTransaction`: `SUCCESS`/`FAILED` with the ledger, fee charged and codes from
    /// `resultXdr`; `NOT_FOUND` with `latestLedger` (how fresh) and `oldestLedgerCloseTime`
    /// (how far back the node keeps history).
    async fn transaction(&self, hash: &str) -> Result<TransactionRead, NetworkError> {
        self.get_transaction(hash).await
    }

    /// Which transaction used `sequence` of `account`, from `getTransactions`.
    ///
    /// RPC has no per-account history, so the ledgers are searched, newest windows first:
    /// the transaction that used the sequence is in a ledger at or before `as_of` (the ledger
    /// at which the account was seen at or past it), and, since an account's first sequence
    /// number is its creation ledger shifted left 32 bits, at or after `sequence >> 32`. The
    /// windows ending at `as_of` span 10, 100, 1000, ... ledgers, up to `rpc.history_ledgers`
    /// in all, each scanned forward page by page (`getTransactions` only pages forward), so
    /// the usual case (the sequence used moments ago) costs a page or two.
    ///
    /// Beyond the retention window (ledgers before the node's `oldestLedger`) nothing can be
    /// read: when the searched range had to stop at `oldestLedger` or at `history_ledgers`
    /// before reaching `sequence >> 32`, the answer is [`SequenceUse::Pruned`] (the payment
    /// needs an operator); when it reached `sequence >> 32` it is [`SequenceUse::NotShown`]
    /// (the worker looks again). A node whose `latestLedger` is before `as_of` is
    /// [`SequenceUse::Behind`].
    async fn sequence_use(
        &self,
        account: &str,
        sequence: i64,
        as_of: i64,
    ) -> Result<SequenceUse, NetworkError> {
        let health: HealthJson = self.read("getHealth", json!({})).await?;
        if health.latest_ledger.0 < as_of {
            return Ok(SequenceUse::Behind);
        }
        let as_of = u32::try_from(as_of.max(1)).unwrap_or(u32::MAX);
        let created = u32::try_from((sequence >> 32).max(1)).unwrap_or(u32::MAX);
        let oldest = u32::try_from(health.oldest_ledger.0.max(1)).unwrap_or(u32::MAX);
        let reach = as_of.saturating_sub(self.limits.history_ledgers.saturating_sub(1));
        let floor = created.max(oldest).max(reach);
        let mut end = as_of;
        let mut span: u32 = 10;
        while end >= floor {
            let start = end.saturating_sub(span - 1).max(floor);
            if let Some(found) = self.scan(account, sequence, start, end).await? {
                return Ok(found);
            }
            if start == floor {
                break;
            }
            end = start - 1;
            span = span.saturating_mul(10);
        }
        Ok(if floor > created {
            SequenceUse::Pruned
        } else {
            SequenceUse::NotShown
        })
    }

    /// `getNetwork`'s `friendbotUrl`, then `GET {friendbotUrl}?addr=`: 200 funded, 400 already
    /// funded (friendbot's `op_already_exists`).
    async fn friendbot(&self, account_id: &str) -> Result<bool, NetworkError> {
        let network = self.network_info().await?;
        let Some(base) = network.friendbot_url.filter(|u| !u.is_empty()) else {
            return Err(NetworkError::Protocol(
                "getNetwork: this network has no friendbot".into(),
            ));
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(NetworkError::Protocol(format!(
                "getNetwork: friendbotUrl {base:?}"
            )));
        }
        let separator = if base.contains('?') { '&' } else { '?' };
        let request = hyper::Request::builder()
            .method(hyper::Method::GET)
            .uri(format!("{base}{separator}addr={account_id}"))
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| NetworkError::Protocol(format!("request: {e}")))?;
        let reply = self
            .http
            .call("friendbot", request, self.submit_timeout, &CLASSIFY)
            .await?;
        match reply.status {
            200 => Ok(true),
            400 => Ok(false),
            other => Err(NetworkError::Protocol(format!(
                "friendbot answered {other}"
            ))),
        }
    }

    async fn submit(&self, envelope_base64: &str) -> Submission {
        let sent = match self.send(envelope_base64).await {
            Ok(sent) => sent,
            Err(outcome) => return outcome,
        };
        match sent.status.as_str() {
            "PENDING" | "DUPLICATE" => self.poll(&sent.hash).await,
            "ERROR" => match sent
                .error_result_xdr
                .as_deref()
                .and_then(crate::payments::transaction::result_codes)
            {
                Some(codes) => Submission::Rejected(codes),
                None => Submission::Unknown("sendTransaction: ERROR without a result".into()),
            },
            other => Submission::Unknown(format!("sendTransaction: status {other:?}")),
        }
    }

    /// `getHealth` says `healthy` and `getNetwork`'s passphrase is the configured one (a
    /// gateway pointed at the wrong network would sign transactions no ledger accepts).
    /// `getTransactions` from `startLedger = from`, following its cursor until past `to` or a
    /// short page. A `from` below `getHealth`'s `oldestLedger` is a gap. stellar-rpc may read a
    /// ledger twice across pages (see its cursor quirk), so transactions are deduplicated by hash.
    async fn ledger_transactions(&self, from: i64, to: i64) -> Result<LedgerRange, NetworkError> {
        let latest = self.latest_ledger().await?;
        if from < latest.elder {
            return Err(NetworkError::Gap {
                from,
                oldest: latest.elder,
            });
        }
        let to = to.min(latest.sequence);
        if from > to {
            return Ok(LedgerRange {
                transactions: Vec::new(),
                through: from - 1,
                latest: latest.sequence,
            });
        }
        let start = u32::try_from(from)
            .map_err(|_| NetworkError::Protocol(format!("ledger {from} out of range")))?;
        let limit = self.limits.history_page;
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        let mut transactions = Vec::new();
        let mut node_latest = i64::MAX;
        loop {
            let params = match &cursor {
                Some(cursor) => json!({ "pagination": { "cursor": cursor, "limit": limit } }),
                None => json!({ "startLedger": start, "pagination": { "limit": limit } }),
            };
            let page: TransactionsJson = match self.read("getTransactions", params).await {
                Ok(page) => page,
                // Pruned between the health check and this read.
                Err(NetworkError::Protocol(message)) if message.contains("oldest ledger") => {
                    return Err(NetworkError::Gap {
                        from,
                        oldest: latest.elder,
                    });
                }
                Err(e) => return Err(e),
            };
            if let Some(page_latest) = page.latest_ledger {
                node_latest = node_latest.min(page_latest.0);
            }
            let mut past = false;
            for tx in &page.transactions {
                if tx.ledger.0 > to {
                    past = true;
                    break;
                }
                if !seen.insert(tx.tx_hash.clone()) {
                    continue;
                }
                transactions.push(LedgerTransaction {
                    ledger: tx.ledger.0,
                    application_order: tx.application_order.map_or(0, |order| order.0),
                    hash: tx.tx_hash.clone(),
                    successful: tx.status == "SUCCESS",
                    envelope_xdr: tx.envelope_xdr.clone(),
                    result_xdr: tx.result_xdr.clone(),
                    result_meta_xdr: tx.result_meta_xdr.clone().filter(|m| !m.is_empty()),
                });
            }
            if past || page.transactions.len() < limit as usize || page.cursor.is_empty() {
                break;
            }
            cursor = Some(page.cursor);
        }
        // A node behind the one that answered getHealth covers only what it had ingested.
        let through = to.min(node_latest);
        transactions.retain(|tx| tx.ledger <= through);
        Ok(LedgerRange {
            transactions,
            through,
            latest: latest.sequence,
        })
    }

    async fn check_ready(&self) -> Result<(), NetworkError> {
        let health: HealthJson = self.read("getHealth", json!({})).await?;
        if health.status != "healthy" {
            return Err(NetworkError::Unavailable(format!(
                "getHealth: {}",
                health.status
            )));
        }
        let network = self.network_info().await?;
        if network.passphrase != self.passphrase {
            return Err(NetworkError::Protocol(format!(
                "the node serves {:?}, not the configured network passphrase",
                network.passphrase
            )));
        }
        Ok(())
    }
}

/// The base64 `LedgerKey` of an account.
fn account_key(account_id: &str) -> Result<String, NetworkError> {
    let key = stellar_strkey::ed25519::PublicKey::from_string(account_id)
        .map_err(|_| NetworkError::Protocol(format!("account id {account_id:?}")))?;
    LedgerKey::Account(LedgerKeyAccount {
        account_id: XdrAccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key.0))),
    })
    .to_xdr_base64(Limits::none())
    .map_err(|e| NetworkError::Protocol(format!("ledger key: {e}")))
}

/// An account entry of `getLedgerEntries`: its key (as sent) and sequence and balance.
fn parse_account_entry(entry: &LedgerEntryJson) -> Result<(String, AccountInfo), NetworkError> {
    let data = LedgerEntryData::from_xdr_base64(&entry.xdr, Limits::len(64 * 1024))
        .map_err(|e| NetworkError::Protocol(format!("getLedgerEntries: entry xdr: {e}")))?;
    let LedgerEntryData::Account(account) = data else {
        return Err(NetworkError::Protocol(
            "getLedgerEntries: not an account entry".into(),
        ));
    };
    // The key as the node spelled it may differ in padding; re-encode from the entry itself.
    let key = LedgerKey::Account(LedgerKeyAccount {
        account_id: account.account_id.clone(),
    })
    .to_xdr_base64(Limits::none())
    .map_err(|e| NetworkError::Protocol(format!("ledger key: {e}")))?;
    Ok((
        key,
        AccountInfo {
            sequence: account.seq_num.0,
            native_balance_stroops: account.balance,
        },
    ))
}

/// The JSON-RPC envelope: `result`, or an `error` object.
fn parse_reply<T: DeserializeOwned>(
    method: &'static str,
    reply: &RawReply,
) -> Result<Result<T, RpcErrorJson>, NetworkError> {
    if reply.status != 200 {
        return Err(NetworkError::Protocol(format!(
            "{method}: status {}",
            reply.status
        )));
    }
    let envelope: ReplyJson<T> = serde_json::from_slice(&reply.body)
        .map_err(|e| NetworkError::Protocol(format!("{method} json: {e}")))?;
    match (envelope.result, envelope.error) {
        (_, Some(error)) => Ok(Err(error)),
        (Some(result), None) => Ok(Ok(result)),
        (None, None) => Err(NetworkError::Protocol(format!(
            "{method}: neither result nor error"
        ))),
    }
}

/// A `getTransaction` answer as a [`TransactionRead`].
fn transaction_read(tx: &GetTransactionJson) -> Result<TransactionRead, NetworkError> {
    let value = match tx.status.as_str() {
        "NOT_FOUND" => None,
        "SUCCESS" | "FAILED" => Some(record_of(
            &tx.status,
            tx.ledger.map_or(0, |l| l.0),
            tx.result_xdr.as_deref().unwrap_or_default(),
        )?),
        other => {
            return Err(NetworkError::Protocol(format!(
                "getTransaction: status {other:?}"
            )));
        }
    };
    Ok(TransactionRead {
        read: AtLedger {
            value,
            ledger: Some(tx.latest_ledger.0),
        },
        history_from: tx.oldest_ledger_close_time.as_ref().map(|t| t.0),
    })
}

/// A transaction in a ledger: `SUCCESS` or `FAILED`, its ledger, and from `resultXdr` its fee
/// charged and result codes.
fn record_of(
    status: &str,
    ledger: i64,
    result_xdr: &str,
) -> Result<TransactionRecord, NetworkError> {
    let result = TransactionResult::from_xdr_base64(result_xdr, Limits::len(256 * 1024))
        .map_err(|e| NetworkError::Protocol(format!("resultXdr: {e}")))?;
    let successful = status == "SUCCESS";
    let result_codes = crate::payments::transaction::result_codes(result_xdr)
        .ok_or_else(|| NetworkError::Protocol("resultXdr: no result codes".into()))?;
    Ok(TransactionRecord {
        ledger,
        successful,
        fee_charged: result.fee_charged,
        result_codes,
    })
}

/// The fee per operation to offer: `inclusionFee.p90`, at least 100 stroops.
fn fee_from_stats(stats: &FeeStatsJson) -> Result<i64, NetworkError> {
    Ok(stats.inclusion_fee.p90.0.max(100))
}

/// `getLatestLedger`'s sequence and close time (`closeTime`; from `headerXdr` when an older
/// node does not send it) with `getHealth`'s oldest ledger.
fn latest_ledger(
    latest: &LatestLedgerJson,
    health: &HealthJson,
) -> Result<LatestLedger, NetworkError> {
    let closed_at = match (&latest.close_time, &latest.header_xdr) {
        (Some(time), _) => time.0,
        (None, Some(header)) => {
            let header = stellar_xdr::LedgerHeader::from_xdr_base64(header, Limits::len(64 * 1024))
                .map_err(|e| NetworkError::Protocol(format!("getLatestLedger: headerXdr: {e}")))?;
            i64::try_from(header.scp_value.close_time.0).unwrap_or(i64::MAX)
        }
        (None, None) => {
            return Err(NetworkError::Protocol(
                "getLatestLedger: no closeTime".into(),
            ));
        }
    };
    Ok(LatestLedger {
        sequence: latest.sequence.0,
        closed_at,
        elder: health.oldest_ledger.0.max(1),
    })
}

/// An integer sent as a JSON string (`"1700000000"`) or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s
                .trim()
                .parse()
                .map(Int)
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer"))),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(Int)
                .ok_or_else(|| serde::de::Error::custom("not an i64")),
            other => Err(serde::de::Error::custom(format!(
                "{other} is not an integer"
            ))),
        }
    }
}

#[derive(Deserialize)]
struct ReplyJson<T> {
    #[serde(default = "Option::default")]
    result: Option<T>,
    #[serde(default)]
    error: Option<RpcErrorJson>,
}

/// A JSON-RPC error object.
#[derive(Debug, Deserialize)]
struct RpcErrorJson {
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LedgerEntriesJson {
    /// `null` (not `[]`) when no key matched, from some versions.
    #[serde(default)]
    entries: Option<Vec<LedgerEntryJson>>,
    latest_ledger: Int,
}

#[derive(Deserialize)]
struct LedgerEntryJson {
    /// Base64 `LedgerEntryData`.
    xdr: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendJson {
    status: String,
    hash: String,
    #[serde(default)]
    error_result_xdr: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetTransactionJson {
    status: String,
    latest_ledger: Int,
    #[serde(default)]
    oldest_ledger_close_time: Option<Int>,
    #[serde(default)]
    ledger: Option<Int>,
    #[serde(default)]
    result_xdr: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransactionsJson {
    #[serde(default)]
    transactions: Vec<TransactionInfoJson>,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    latest_ledger: Option<Int>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransactionInfoJson {
    status: String,
    #[serde(default)]
    application_order: Option<Int>,
    tx_hash: String,
    ledger: Int,
    envelope_xdr: String,
    result_xdr: String,
    #[serde(default)]
    result_meta_xdr: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeeStatsJson {
    inclusion_fee: FeeDistributionJson,
}

#[derive(Deserialize)]
struct FeeDistributionJson {
    p90: Int,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LatestLedgerJson {
    sequence: Int,
    #[serde(default)]
    close_time: Option<Int>,
    #[serde(default)]
    header_xdr: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthJson {
    status: String,
    latest_ledger: Int,
    oldest_ledger: Int,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetworkJson {
    #[serde(default)]
    friendbot_url: Option<String>,
    passphrase: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_come_as_strings_or_numbers() {
        let parsed: Vec<Int> =
            serde_json::from_str(r#"["1700000000", 12]"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, vec![Int(1_700_000_000), Int(12)]);
        assert!(serde_json::from_str::<Int>(r#""12a""#).is_err());
    }

    #[test]
    fn an_account_key_is_the_ledger_key_of_its_public_key() {
        let id = "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7";
        let key = account_key(id).unwrap_or_else(|e| panic!("{e}"));
        let decoded =
            LedgerKey::from_xdr_base64(&key, Limits::none()).unwrap_or_else(|e| panic!("{e}"));
        let LedgerKey::Account(account) = decoded else {
            panic!("not an account key");
        };
        let XdrAccountId(PublicKey::PublicKeyTypeEd25519(Uint256(bytes))) = account.account_id;
        assert_eq!(format!("{}", stellar_strkey::ed25519::PublicKey(bytes)), id);
        assert!(account_key("not an account").is_err());
    }
}
