//! Horizon's JSON resources, field for field as Horizon renders them (`protocols/horizon` in the
//! Go SDK): accounts, transactions, fee stats and the async submission response. Int64 values are
//! strings, as in Horizon.

use serde::Serialize;
use serde_json::{Value, json};
use stellar_xdr::Memo;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::account::{AccountEntry, AccountKey, muxed_address};
use crate::amount::format_stroops;
use crate::envelope::TxHash;
use crate::network::{FeeStats, TransactionRecord};

/// The protocol version the simulator claims (Stellar's current one).
pub const PROTOCOL_VERSION: u32 = 23;

/// A HAL link.
#[derive(Clone, Debug, Serialize)]
pub struct Link {
    /// The URL (or URL template).
    pub href: String,
    /// Whether `href` is a template.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub templated: bool,
}

impl Link {
    fn to(href: String) -> Self {
        Link {
            href,
            templated: false,
        }
    }

    fn template(href: String) -> Self {
        Link {
            href,
            templated: true,
        }
    }
}

/// RFC 3339 in UTC with second precision, as Horizon writes times.
pub fn format_time(unix_seconds: u64) -> String {
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// `GET /accounts/{id}`.
#[derive(Clone, Debug, Serialize)]
pub struct AccountResource {
    _links: AccountLinks,
    id: String,
    account_id: String,
    sequence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence_ledger: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence_time: Option<String>,
    subentry_count: u32,
    last_modified_ledger: u32,
    last_modified_time: String,
    thresholds: Thresholds,
    flags: Flags,
    balances: Vec<Balance>,
    signers: Vec<AccountSigner>,
    data: serde_json::Map<String, Value>,
    num_sponsoring: u32,
    num_sponsored: u32,
    paging_token: String,
}

#[derive(Clone, Debug, Serialize)]
struct AccountLinks {
    #[serde(rename = "self")]
    self_: Link,
    transactions: Link,
    operations: Link,
    payments: Link,
    effects: Link,
    offers: Link,
    trades: Link,
    data: Link,
}

#[derive(Clone, Debug, Serialize)]
struct Thresholds {
    low_threshold: u8,
    med_threshold: u8,
    high_threshold: u8,
}

#[derive(Clone, Debug, Serialize)]
struct Flags {
    auth_required: bool,
    auth_revocable: bool,
    auth_immutable: bool,
    auth_clawback_enabled: bool,
}

#[derive(Clone, Debug, Serialize)]
struct Balance {
    balance: String,
    buying_liabilities: String,
    selling_liabilities: String,
    asset_type: &'static str,
}

#[derive(Clone, Debug, Serialize)]
struct AccountSigner {
    weight: u32,
    key: String,
    #[serde(rename = "type")]
    signer_type: &'static str,
}

impl AccountResource {
    /// The resource for `key` (links under `base_url`).
    pub fn new(base_url: &str, key: &AccountKey, entry: &AccountEntry) -> Self {
        let id = key.address();
        let account_url = format!("{base_url}/accounts/{id}");
        let listing =
            |what: &str| Link::template(format!("{account_url}/{what}{{?cursor,limit,order}}"));
        AccountResource {
            _links: AccountLinks {
                self_: Link::to(account_url.clone()),
                transactions: listing("transactions"),
                operations: listing("operations"),
                payments: listing("payments"),
                effects: listing("effects"),
                offers: listing("offers"),
                trades: listing("trades"),
                data: Link::template(format!("{account_url}/data/{{key}}")),
            },
            account_id: id.clone(),
            paging_token: id.clone(),
            sequence: entry.sequence.to_string(),
            sequence_ledger: entry.sequence_bumped.map(|(ledger, _)| ledger),
            sequence_time: entry.sequence_bumped.map(|(_, time)| time.to_string()),
            subentry_count: entry.subentry_count,
            last_modified_ledger: entry.last_modified_ledger,
            last_modified_time: format_time(entry.last_modified_time),
            thresholds: Thresholds {
                low_threshold: 0,
                med_threshold: 0,
                high_threshold: 0,
            },
            flags: Flags {
                auth_required: false,
                auth_revocable: false,
                auth_immutable: false,
                auth_clawback_enabled: false,
            },
            balances: vec![Balance {
                balance: format_stroops(entry.balance),
                buying_liabilities: format_stroops(0),
                selling_liabilities: format_stroops(0),
                asset_type: "native",
            }],
            signers: vec![AccountSigner {
                weight: 1,
                key: id.clone(),
                signer_type: "ed25519_public_key",
            }],
            data: serde_json::Map::new(),
            num_sponsoring: entry.num_sponsoring,
            num_sponsored: 0,
            id,
        }
    }
}

/// `GET /transactions/{hash}` and the body of a successful `POST /transactions`.
#[derive(Clone, Debug, Serialize)]
pub struct TransactionResource {
    _links: TransactionLinks,
    id: String,
    paging_token: String,
    successful: bool,
    hash: String,
    ledger: u32,
    created_at: String,
    source_account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_muxed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_muxed_id: Option<String>,
    source_account_sequence: String,
    fee_account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fee_account_muxed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fee_account_muxed_id: Option<String>,
    fee_charged: String,
    max_fee: String,
    operation_count: usize,
    envelope_xdr: String,
    result_xdr: String,
    /// Null when Horizon skips transaction meta (`SKIP_TXMETA`); always here.
    result_meta_xdr: Option<String>,
    fee_meta_xdr: String,
    memo_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    memo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memo_bytes: Option<String>,
    signatures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preconditions: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fee_bump_transaction: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inner_transaction: Option<Value>,
}

#[derive(Clone, Debug, Serialize)]
struct TransactionLinks {
    #[serde(rename = "self")]
    self_: Link,
    account: Link,
    ledger: Link,
    operations: Link,
    effects: Link,
    precedes: Link,
    succeeds: Link,
    transaction: Link,
}

impl TransactionResource {
    /// The resource for `record` as asked for by `requested` (a fee bump asked for by its inner
    /// hash shows the inner hash and signatures, as Horizon does).
    pub fn new(base_url: &str, record: &TransactionRecord, requested: &TxHash) -> Self {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let tx = &record.tx;
        let by_inner = tx.inner_hash() == Some(*requested);
        let hash = if by_inner { *requested } else { tx.hash }.to_hex();
        let signatures_of = |sigs: &[stellar_xdr::DecoratedSignature]| {
            sigs.iter().map(|s| b64(&s.signature.0)).collect::<Vec<_>>()
        };
        let outer_signatures = tx
            .fee_bump
            .as_ref()
            .map(|bump| signatures_of(&bump.signatures));
        let signatures = match (&outer_signatures, by_inner) {
            (Some(outer), false) => outer.clone(),
            _ => signatures_of(&tx.signatures),
        };
        let paging_token = record.paging_token().to_string();
        let transaction_url = format!("{base_url}/transactions/{hash}");
        let source = tx.source_account();
        let source_muxed = muxed_address(&tx.source);
        let fee_muxed = tx
            .fee_bump
            .as_ref()
            .and_then(|bump| muxed_address(&bump.fee_source))
            .or_else(|| {
                tx.fee_bump
                    .is_none()
                    .then(|| source_muxed.clone())
                    .flatten()
            });
        let (memo_type, memo, memo_bytes) = match &tx.memo {
            Memo::None => ("none", None, None),
            Memo::Text(text) => (
                "text",
                Some(String::from_utf8_lossy(text.as_slice()).into_owned()),
                Some(b64(text.as_slice())),
            ),
            Memo::Id(id) => ("id", Some(id.to_string()), None),
            Memo::Hash(hash) => ("hash", Some(b64(&hash.0)), None),
            Memo::Return(hash) => ("return", Some(b64(&hash.0)), None),
        };
        let mut preconditions = serde_json::Map::new();
        if let Some(bounds) = &tx.time_bounds {
            let mut timebounds = serde_json::Map::new();
            timebounds.insert("min_time".into(), json!(bounds.min_time.0.to_string()));
            if bounds.max_time.0 != 0 {
                timebounds.insert("max_time".into(), json!(bounds.max_time.0.to_string()));
            }
            preconditions.insert("timebounds".into(), Value::Object(timebounds));
        }
        if let Some(bounds) = &tx.ledger_bounds {
            let mut ledgerbounds = serde_json::Map::new();
            ledgerbounds.insert("min_ledger".into(), json!(bounds.min_ledger));
            if bounds.max_ledger != 0 {
                ledgerbounds.insert("max_ledger".into(), json!(bounds.max_ledger));
            }
            preconditions.insert("ledgerbounds".into(), Value::Object(ledgerbounds));
        }
        TransactionResource {
            _links: TransactionLinks {
                self_: Link::to(transaction_url.clone()),
                account: Link::to(format!("{base_url}/accounts/{}", source.address())),
                ledger: Link::to(format!("{base_url}/ledgers/{}", record.ledger)),
                operations: Link::template(format!(
                    "{transaction_url}/operations{{?cursor,limit,order}}"
                )),
                effects: Link::template(format!(
                    "{transaction_url}/effects{{?cursor,limit,order}}"
                )),
                precedes: Link::to(format!(
                    "{base_url}/transactions?order=asc&cursor={paging_token}"
                )),
                succeeds: Link::to(format!(
                    "{base_url}/transactions?order=desc&cursor={paging_token}"
                )),
                transaction: Link::to(transaction_url),
            },
            id: hash.clone(),
            paging_token,
            successful: record.successful,
            ledger: record.ledger,
            created_at: format_time(record.close_time),
            source_account: source.address(),
            account_muxed: source_muxed.as_ref().map(|(address, _)| address.clone()),
            account_muxed_id: source_muxed.as_ref().map(|(_, id)| id.to_string()),
            source_account_sequence: tx.sequence.to_string(),
            fee_account: tx.fee_account().address(),
            fee_account_muxed: fee_muxed.as_ref().map(|(address, _)| address.clone()),
            fee_account_muxed_id: fee_muxed.as_ref().map(|(_, id)| id.to_string()),
            fee_charged: record.fee_charged.to_string(),
            max_fee: tx.max_fee().to_string(),
            operation_count: tx.operations.len(),
            envelope_xdr: tx.envelope_xdr.clone(),
            result_xdr: record.result_xdr.clone(),
            result_meta_xdr: Some(record.result_meta_xdr.clone()),
            fee_meta_xdr: record.fee_meta_xdr.clone(),
            memo_type,
            memo,
            memo_bytes,
            signatures,
            preconditions: (!preconditions.is_empty()).then_some(Value::Object(preconditions)),
            fee_bump_transaction: tx.fee_bump.as_ref().map(|_| {
                json!({
                    "hash": tx.hash.to_hex(),
                    "signatures": outer_signatures.clone().unwrap_or_default(),
                })
            }),
            inner_transaction: tx.fee_bump.as_ref().map(|bump| {
                json!({
                    "hash": bump.inner_hash.to_hex(),
                    "signatures": signatures_of(&tx.signatures),
                    "max_fee": tx.fee.to_string(),
                })
            }),
            hash,
        }
    }
}

/// `GET /fee_stats`.
#[derive(Clone, Debug, Serialize)]
pub struct FeeStatsResource {
    last_ledger: String,
    last_ledger_base_fee: String,
    ledger_capacity_usage: String,
    fee_charged: FeeDistribution,
    max_fee: FeeDistribution,
}

/// Percentiles of per-operation fees, as strings.
#[derive(Clone, Debug, Serialize)]
struct FeeDistribution {
    max: String,
    min: String,
    mode: String,
    p10: String,
    p20: String,
    p30: String,
    p40: String,
    p50: String,
    p60: String,
    p70: String,
    p80: String,
    p90: String,
    p95: String,
    p99: String,
}

impl FeeDistribution {
    /// The distribution of `sorted` fees; the base fee everywhere when there were none.
    fn of(sorted: &[i64], base_fee: u32) -> Self {
        let base = i64::from(base_fee);
        let percentile = |p: usize| -> String {
            if sorted.is_empty() {
                return base.to_string();
            }
            // Nearest rank.
            let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
            sorted.get(rank - 1).copied().unwrap_or(base).to_string()
        };
        let mode = {
            let mut best = (base, 0usize);
            let mut index = 0;
            while let Some(value) = sorted.get(index) {
                let run = sorted[index..].iter().take_while(|v| *v == value).count();
                if run > best.1 {
                    best = (*value, run);
                }
                index += run;
            }
            best.0
        };
        FeeDistribution {
            max: sorted.last().copied().unwrap_or(base).to_string(),
            min: sorted.first().copied().unwrap_or(base).to_string(),
            mode: mode.to_string(),
            p10: percentile(10),
            p20: percentile(20),
            p30: percentile(30),
            p40: percentile(40),
            p50: percentile(50),
            p60: percentile(60),
            p70: percentile(70),
            p80: percentile(80),
            p90: percentile(90),
            p95: percentile(95),
            p99: percentile(99),
        }
    }
}

impl FeeStatsResource {
    /// The resource for `stats`.
    pub fn new(stats: &FeeStats) -> Self {
        FeeStatsResource {
            last_ledger: stats.last_ledger.to_string(),
            last_ledger_base_fee: stats.last_ledger_base_fee.to_string(),
            ledger_capacity_usage: format!("{:.2}", stats.ledger_capacity_usage),
            fee_charged: FeeDistribution::of(&stats.fee_charged, stats.last_ledger_base_fee),
            max_fee: FeeDistribution::of(&stats.max_fee, stats.last_ledger_base_fee),
        }
    }
}

/// The body of `POST /transactions_async`.
#[derive(Clone, Debug, Serialize)]
pub struct AsyncSubmissionResponse {
    /// The `TransactionResult` XDR, only for `ERROR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_result_xdr: Option<String>,
    /// `PENDING`, `DUPLICATE`, `TRY_AGAIN_LATER` or `ERROR`.
    pub tx_status: &'static str,
    /// The transaction hash.
    pub hash: String,
}

/// `GET /`: Horizon's root document.
pub fn root_resource(
    base_url: &str,
    passphrase: &str,
    ledger: u32,
    close_time: u64,
    elder_ledger: u32,
) -> Value {
    let link = |path: &str| json!({ "href": format!("{base_url}{path}") });
    let template = |path: &str| json!({ "href": format!("{base_url}{path}"), "templated": true });
    json!({
        "_links": {
            "account": template("/accounts/{account_id}"),
            "fee_stats": link("/fee_stats"),
            "friendbot": template("/friendbot{?addr}"),
            "self": link("/"),
            "transaction": template("/transactions/{hash}"),
        },
        "horizon_version": concat!("horizon-sim-", env!("CARGO_PKG_VERSION")),
        "core_version": concat!("horizon-sim-", env!("CARGO_PKG_VERSION")),
        "ingest_latest_ledger": ledger,
        "history_latest_ledger": ledger,
        "history_latest_ledger_closed_at": format_time(close_time),
        "history_elder_ledger": elder_ledger,
        "core_latest_ledger": ledger,
        "network_passphrase": passphrase,
        "current_protocol_version": PROTOCOL_VERSION,
        "supported_protocol_version": PROTOCOL_VERSION,
        "core_supported_protocol_version": PROTOCOL_VERSION,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn fee_distribution_uses_nearest_rank_and_the_base_fee_when_empty() {
        let empty = serde_json::to_value(FeeDistribution::of(&[], 100)).unwrap_or_default();
        assert_eq!(empty["p99"], "100");
        assert_eq!(empty["mode"], "100");
        let values: Vec<i64> = (1..=10).map(|v| v * 100).collect();
        let dist = serde_json::to_value(FeeDistribution::of(&values, 100)).unwrap_or_default();
        assert_eq!(dist["min"], "100");
        assert_eq!(dist["max"], "1000");
        assert_eq!(dist["p10"], "100");
        assert_eq!(dist["p50"], "500");
        assert_eq!(dist["p95"], "1000");
        let dist = serde_json::to_value(FeeDistribution::of(&[100, 200, 200, 300], 100))
            .unwrap_or_default();
        assert_eq!(dist["mode"], "200");
    }
}
