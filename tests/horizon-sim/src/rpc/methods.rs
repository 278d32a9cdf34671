//! RPC's methods over the simulated network, as one RPC node answers them: parameters as
//! stellar-rpc decodes them, results field for field as it encodes them, and its error messages.
//!
//! Every read is answered by one node ([`RpcNode`]): its core's ledger (what
//! `getLedgerEntries` reads, as stellar-rpc asks its captive core) and the latest ledger its
//! store has ingested (what `latestLedger` says everywhere else, and what bounds the history).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountEntryExt, AccountEntryExtensionV1, AccountEntryExtensionV1Ext, AccountEntryExtensionV2,
    AccountEntryExtensionV2Ext, AccountEntryExtensionV3, AccountId, ExtensionPoint, Hash,
    LedgerCloseMeta, LedgerCloseMetaV2, LedgerEntryData, LedgerEntryExt, LedgerHeader,
    LedgerHeaderHistoryEntry, LedgerKey, Liabilities, Limits, PublicKey, ReadXdr, SequenceNumber,
    StellarValue, Thresholds, TimePoint, Uint256, WriteXdr,
};

use crate::account::{AccountEntry, AccountKey};
use crate::amount::TOTAL_SUPPLY;
use crate::network::{Network, TransactionRecord};
use crate::resources::PROTOCOL_VERSION;
use crate::rpc::protocol::RpcError;

/// `getLedgerEntries` takes at most this many keys (stellar-rpc's `getLedgerEntriesMaxKeys`).
pub const MAX_LEDGER_KEYS: usize = 200;
/// `getTransactions`' page size when none is asked for (`default-transactions-limit`).
pub const DEFAULT_TRANSACTIONS_LIMIT: u64 = 50;
/// `getTransactions`' largest page (`max-transactions-limit`).
pub const MAX_TRANSACTIONS_LIMIT: u64 = 200;
/// The retention window `getHealth` reports when the simulator keeps all history: stellar-rpc's
/// default `history-retention-window`, seven days of ledgers (the simulator has fewer).
pub const DEFAULT_RETENTION_WINDOW: u32 = 120_960;

/// One RPC node behind the URL, as of the request it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcNode {
    /// The ledger its core is at (lagging nodes: behind the network).
    pub core_ledger: u32,
    /// The latest ledger its store has ingested (at most `core_ledger`; behind it while a late
    /// transaction is not ingested yet).
    pub ingested: u32,
}

impl RpcNode {
    /// The node serving a request whose core is at `core_ledger`.
    pub fn at(network: &Network, core_ledger: u32) -> Self {
        RpcNode {
            core_ledger,
            ingested: network.rpc_ingested_ledger(core_ledger),
        }
    }

    /// The oldest ledger the node's store still holds.
    pub fn oldest(&self, network: &Network) -> u32 {
        network.history_elder_ledger(self.ingested)
    }
}

/// The close time of `ledger` (0 if unknown, which cannot happen for a closed ledger).
fn close_time(network: &Network, ledger: u32) -> i64 {
    network
        .ledger_close_time(ledger)
        .and_then(|time| i64::try_from(time).ok())
        .unwrap_or(0)
}

/// Decodes a method's parameters as jrpc2 does for stellar-rpc's handlers: absent or `null` is
/// the zero value, an object is decoded field by field, an array is refused.
pub fn params<T: for<'de> Deserialize<'de> + Default>(
    params: Option<&Value>,
) -> Result<T, RpcError> {
    match params {
        None => Ok(T::default()),
        Some(Value::Array(_)) => Err(RpcError::invalid_params(
            "invalid parameters: array parameters are not supported",
        )),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|e| RpcError::invalid_params(format!("invalid parameters: {e}"))),
    }
}

/// stellar-rpc's `IsValidFormat`, plus the simulator's one refusal: it encodes only base64.
fn check_format(format: Option<&str>) -> Result<(), RpcError> {
    match format {
        None | Some("") | Some("base64") => Ok(()),
        Some("json") => Err(RpcError::invalid_params(
            "the simulator answers only xdrFormat base64",
        )),
        Some(other) => Err(RpcError::invalid_params(format!(
            "got '{other}': expected base64, json for optional 'xdrFormat'"
        ))),
    }
}

fn to_base64<T: WriteXdr>(value: &T) -> Result<String, RpcError> {
    value
        .to_xdr_base64(Limits::none())
        .map_err(|e| RpcError::internal(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// getHealth

/// `getHealth`'s result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResult {
    /// Always `healthy` (an unhealthy node answers an error, or nothing).
    pub status: &'static str,
    /// The latest ingested ledger.
    pub latest_ledger: u32,
    /// Its close time, a string (as developers.stellar.org documents getHealth today).
    pub latest_ledger_close_time: String,
    /// The oldest ledger held.
    pub oldest_ledger: u32,
    /// Its close time, a string.
    pub oldest_ledger_close_time: String,
    /// How many ledgers the node keeps.
    pub ledger_retention_window: u32,
}

/// `getHealth`.
pub fn get_health(network: &Network, node: RpcNode) -> HealthResult {
    let oldest = node.oldest(network);
    HealthResult {
        status: "healthy",
        latest_ledger: node.ingested,
        latest_ledger_close_time: close_time(network, node.ingested).to_string(),
        oldest_ledger: oldest,
        oldest_ledger_close_time: close_time(network, oldest).to_string(),
        ledger_retention_window: match network.faults.history_retention_ledgers {
            0 => DEFAULT_RETENTION_WINDOW,
            kept => kept,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// getNetwork

/// `getNetwork`'s result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkResult {
    /// Where friendbot answers `GET ?addr=G...`.
    #[serde(rename = "friendbotUrl", skip_serializing_if = "Option::is_none")]
    pub friendbot_url: Option<String>,
    /// The network passphrase.
    pub passphrase: String,
    /// The protocol version of the latest ledger.
    pub protocol_version: u32,
}

// ---------------------------------------------------------------------------------------------
// getLatestLedger

/// `getLatestLedger`'s result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatestLedgerResult {
    /// The ledger's hash, hex.
    pub id: String,
    /// Its protocol version.
    pub protocol_version: u32,
    /// Its sequence number.
    pub sequence: u32,
    /// Its close time, a string.
    pub close_time: String,
    /// Its `LedgerHeader`, base64.
    pub header_xdr: String,
    /// Its `LedgerCloseMeta`, base64 (the header only: the simulator keeps no ledger meta).
    pub metadata_xdr: String,
}

/// The header of `ledger` as the simulator can tell it: sequence, close time, fees, coins. Its
/// previous-ledger hash is derived from the network and sequence (no hash chain is kept).
fn ledger_header(network: &Network, ledger: u32) -> LedgerHeader {
    let previous: [u8; 32] = Sha256::new()
        .chain_update(network.ledger.network_id())
        .chain_update(b"horizon-sim ledger")
        .chain_update(ledger.saturating_sub(1).to_be_bytes())
        .finalize()
        .into();
    LedgerHeader {
        ledger_version: PROTOCOL_VERSION,
        previous_ledger_hash: Hash(previous),
        scp_value: StellarValue {
            close_time: TimePoint(network.ledger_close_time(ledger).unwrap_or_default()),
            ..StellarValue::default()
        },
        ledger_seq: ledger,
        total_coins: TOTAL_SUPPLY,
        fee_pool: network.ledger.fee_pool,
        base_fee: network.ledger.base_fee,
        base_reserve: u32::try_from(network.ledger.base_reserve).unwrap_or(u32::MAX),
        max_tx_set_size: network.max_operations_per_ledger(),
        ..LedgerHeader::default()
    }
}

/// `getLatestLedger`.
pub fn get_latest_ledger(network: &Network, node: RpcNode) -> Result<LatestLedgerResult, RpcError> {
    let header = ledger_header(network, node.ingested);
    let header_bytes = header
        .to_xdr(Limits::none())
        .map_err(|e| RpcError::internal(e.to_string()))?;
    // A ledger's hash is the sha256 of its header.
    let hash: [u8; 32] = Sha256::digest(&header_bytes).into();
    // v2, protocol 23's close meta, with the header and nothing else.
    let meta = LedgerCloseMeta::V2(LedgerCloseMetaV2 {
        ledger_header: LedgerHeaderHistoryEntry {
            hash: Hash(hash),
            header,
            ..LedgerHeaderHistoryEntry::default()
        },
        ..LedgerCloseMetaV2::default()
    });
    Ok(LatestLedgerResult {
        id: hex::encode(hash),
        protocol_version: PROTOCOL_VERSION,
        sequence: node.ingested,
        close_time: close_time(network, node.ingested).to_string(),
        header_xdr: BASE64.encode(&header_bytes),
        metadata_xdr: to_base64(&meta)?,
    })
}

// ---------------------------------------------------------------------------------------------
// getLedgerEntries

/// `getLedgerEntries`' parameters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntriesParams {
    /// Base64 `LedgerKey`s.
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    /// `base64` (default) or `json`.
    #[serde(default)]
    pub xdr_format: Option<String>,
}

/// One entry found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryResult {
    /// The `LedgerKey`, base64.
    pub key: String,
    /// The `LedgerEntryData`, base64.
    pub xdr: String,
    /// The ledger that last changed it.
    pub last_modified_ledger_seq: u32,
    /// The `LedgerEntryExt`, base64.
    pub ext_xdr: String,
}

/// `getLedgerEntries`' result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntriesResult {
    /// The entries found, in the order of the keys (absent keys are left out).
    pub entries: Vec<LedgerEntryResult>,
    /// The ledger the node's core answered at.
    pub latest_ledger: u32,
}

/// The ledger's `AccountEntry` for `key`: master key weight 1, no signers or subentries, and
/// the sequence number's ledger and time (`AccountEntryExtensionV3`) once it has been bumped.
pub fn account_entry_xdr(key: &AccountKey, entry: &AccountEntry) -> stellar_xdr::AccountEntry {
    let v2 = |ext: AccountEntryExtensionV2Ext| {
        AccountEntryExt::V1(AccountEntryExtensionV1 {
            liabilities: Liabilities {
                buying: 0,
                selling: 0,
            },
            ext: AccountEntryExtensionV1Ext::V2(AccountEntryExtensionV2 {
                num_sponsored: 0,
                num_sponsoring: entry.num_sponsoring,
                signer_sponsoring_i_ds: Default::default(),
                ext,
            }),
        })
    };
    let ext = match entry.sequence_bumped {
        None if entry.num_sponsoring == 0 => AccountEntryExt::V0,
        None => v2(AccountEntryExtensionV2Ext::V0),
        Some((seq_ledger, seq_time)) => {
            v2(AccountEntryExtensionV2Ext::V3(AccountEntryExtensionV3 {
                ext: ExtensionPoint::V0,
                seq_ledger,
                seq_time: TimePoint(seq_time),
            }))
        }
    };
    stellar_xdr::AccountEntry {
        account_id: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key.0))),
        balance: entry.balance,
        seq_num: SequenceNumber(entry.sequence),
        num_sub_entries: entry.subentry_count,
        inflation_dest: None,
        flags: 0,
        home_domain: Default::default(),
        thresholds: Thresholds([1, 0, 0, 0]),
        signers: Default::default(),
        ext,
    }
}

/// A `LedgerKey` decoded with a small budget, as stellar-rpc bounds untrusted keys.
fn decode_key(text: &str) -> Option<LedgerKey> {
    let bytes = BASE64.decode(text.trim()).ok()?;
    let limits = Limits {
        depth: 64,
        len: bytes.len(),
    };
    LedgerKey::from_xdr(&bytes, limits).ok()
}

/// `getLedgerEntries`: accounts as the node's core holds them (only accounts exist here).
pub fn get_ledger_entries(
    network: &Network,
    node: RpcNode,
    params: &LedgerEntriesParams,
) -> Result<LedgerEntriesResult, RpcError> {
    check_format(params.xdr_format.as_deref())?;
    let keys = params.keys.as_deref().unwrap_or_default();
    if keys.len() > MAX_LEDGER_KEYS {
        return Err(RpcError::invalid_params(format!(
            "key count ({}) exceeds maximum supported ({MAX_LEDGER_KEYS})",
            keys.len()
        )));
    }
    let mut decoded = Vec::with_capacity(keys.len());
    for (index, text) in keys.iter().enumerate() {
        let Some(key) = decode_key(text) else {
            return Err(RpcError::invalid_params(format!(
                "cannot unmarshal key value {text} at index {index}"
            )));
        };
        if matches!(key, LedgerKey::Ttl(_)) {
            return Err(RpcError::invalid_params(
                "ledger ttl entries cannot be queried directly",
            ));
        }
        decoded.push(key);
    }
    let mut entries = Vec::new();
    for key in decoded {
        let LedgerKey::Account(account) = &key else {
            continue;
        };
        let PublicKey::PublicKeyTypeEd25519(Uint256(bytes)) = &account.account_id.0;
        let account_key = AccountKey(*bytes);
        let Some(entry) = network.account_at(&account_key, node.core_ledger) else {
            continue;
        };
        let data = LedgerEntryData::Account(account_entry_xdr(&account_key, entry));
        entries.push(LedgerEntryResult {
            key: to_base64(&key)?,
            xdr: to_base64(&data)?,
            last_modified_ledger_seq: entry.last_modified_ledger,
            ext_xdr: to_base64(&LedgerEntryExt::V0)?,
        });
    }
    Ok(LedgerEntriesResult {
        entries,
        latest_ledger: node.core_ledger,
    })
}

// ---------------------------------------------------------------------------------------------
// getTransaction, getTransactions

/// `getTransaction`'s parameters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionParams {
    /// The transaction hash, hex.
    #[serde(default)]
    pub hash: String,
    /// `base64` (default) or `json`.
    #[serde(default)]
    pub xdr_format: Option<String>,
}

/// The events of a transaction (always empty: no Soroban here). Go encodes the struct even
/// when empty: `"events": {}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Events {}

/// What getTransaction and getTransactions say about one transaction (stellar-rpc's
/// `TransactionDetails`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionDetails {
    /// `SUCCESS`, `FAILED` or `NOT_FOUND`.
    pub status: &'static str,
    /// The hash: as asked in getTransaction; the outer one of a fee bump in getTransactions.
    pub tx_hash: String,
    /// Its position in its ledger, from 1 (0 when not found).
    pub application_order: u32,
    /// Whether it is a fee bump.
    pub fee_bump: bool,
    /// The `TransactionEnvelope`, base64.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub envelope_xdr: String,
    /// The `TransactionResult`, base64.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub result_xdr: String,
    /// The `TransactionMeta`, base64.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub result_meta_xdr: String,
    /// Its events.
    pub events: Events,
    /// The ledger it was applied in (0 when not found).
    pub ledger: u32,
}

impl TransactionDetails {
    fn not_found(hash: &str) -> Self {
        TransactionDetails {
            status: "NOT_FOUND",
            tx_hash: hash.to_owned(),
            application_order: 0,
            fee_bump: false,
            envelope_xdr: String::new(),
            result_xdr: String::new(),
            result_meta_xdr: String::new(),
            events: Events::default(),
            ledger: 0,
        }
    }

    fn of(record: &TransactionRecord) -> Result<Self, RpcError> {
        Ok(TransactionDetails {
            status: if record.successful {
                "SUCCESS"
            } else {
                "FAILED"
            },
            tx_hash: record.tx.hash.to_hex(),
            application_order: record.application_order,
            fee_bump: record.tx.fee_bump.is_some(),
            envelope_xdr: record.tx.envelope_xdr.clone(),
            result_xdr: record.result_xdr.clone(),
            result_meta_xdr: record.result_meta_xdr.clone(),
            events: Events::default(),
            ledger: record.ledger,
        })
    }
}

/// `getTransaction`'s result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionResult {
    /// The latest ingested ledger.
    pub latest_ledger: u32,
    /// Its close time, a string.
    pub latest_ledger_close_time: String,
    /// The oldest ledger held.
    pub oldest_ledger: u32,
    /// Its close time, a string.
    pub oldest_ledger_close_time: String,
    /// The transaction.
    #[serde(flatten)]
    pub details: TransactionDetails,
    /// Its ledger's close time, a string (`"0"` when not found).
    pub created_at: String,
}

/// Go's `encoding/hex` complaint about `text`, for stellar-rpc's "incorrect hash" message.
fn hex_error(text: &str) -> Option<String> {
    if let Some(bad) = text.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Some(format!(
            "encoding/hex: invalid byte: U+{:04X} {bad:?}",
            u32::from(bad)
        ));
    }
    (text.len() % 2 == 1).then(|| "encoding/hex: odd length hex string".to_owned())
}

/// `getTransaction`: found by its hash (a fee bump by its outer or its inner hash, as
/// stellar-rpc indexes both; `txHash` is the hash as asked), once the node has ingested its
/// ledger and while that ledger is in the retention window.
pub fn get_transaction(
    network: &Network,
    node: RpcNode,
    params: &TransactionParams,
) -> Result<TransactionResult, RpcError> {
    check_format(params.xdr_format.as_deref())?;
    // Go's hex.DecodedLen is len / 2.
    if params.hash.len() / 2 != 32 {
        return Err(RpcError::invalid_params(format!(
            "unexpected hash length ({})",
            params.hash.len()
        )));
    }
    if let Some(error) = hex_error(&params.hash) {
        return Err(RpcError::invalid_params(format!("incorrect hash: {error}")));
    }
    let hash = crate::envelope::TxHash::parse(&params.hash)
        .map_err(|e| RpcError::invalid_params(format!("incorrect hash: {e}")))?;
    let oldest = node.oldest(network);
    let record = network
        .applied(&hash)
        .filter(|record| oldest <= record.ledger && record.ledger <= node.ingested);
    let (details, created_at) = match record {
        Some(record) => {
            let mut details = TransactionDetails::of(record)?;
            details.tx_hash = params.hash.clone();
            (details, record.close_time.to_string())
        }
        None => (TransactionDetails::not_found(&params.hash), "0".to_owned()),
    };
    Ok(TransactionResult {
        latest_ledger: node.ingested,
        latest_ledger_close_time: close_time(network, node.ingested).to_string(),
        oldest_ledger: oldest,
        oldest_ledger_close_time: close_time(network, oldest).to_string(),
        details,
        created_at,
    })
}

/// `getTransactions`' paging.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Pagination {
    /// Start after this cursor (a TOID).
    #[serde(default)]
    pub cursor: Option<String>,
    /// At most this many transactions.
    #[serde(default)]
    pub limit: Option<u64>,
}

/// `getTransactions`' parameters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionsParams {
    /// The first ledger (without a cursor).
    #[serde(default)]
    pub start_ledger: u32,
    /// Cursor and limit.
    #[serde(default)]
    pub pagination: Option<Pagination>,
    /// `base64` (default) or `json`.
    #[serde(default)]
    pub xdr_format: Option<String>,
}

/// One transaction of a `getTransactions` page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionInfo {
    /// The transaction.
    #[serde(flatten)]
    pub details: TransactionDetails,
    /// Its ledger's close time: a number here (a string in getTransaction, as in RPC).
    pub created_at: i64,
}

/// `getTransactions`' result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionsResult {
    /// The page.
    pub transactions: Vec<TransactionInfo>,
    /// The latest ingested ledger.
    pub latest_ledger: u32,
    /// Its close time (a number, named `...Timestamp` here, as in RPC).
    pub latest_ledger_close_timestamp: i64,
    /// The oldest ledger held.
    pub oldest_ledger: u32,
    /// Its close time.
    pub oldest_ledger_close_timestamp: i64,
    /// Where the next page starts.
    pub cursor: String,
}

/// A TOID (ledger, transaction order, operation index) as RPC's cursors encode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Toid {
    ledger: i64,
    transaction: i64,
    operation: i64,
}

impl Toid {
    fn parse(id: i64) -> Self {
        Toid {
            ledger: id >> 32,
            transaction: (id >> 12) & 0xF_FFFF,
            operation: id & 0xFFF,
        }
    }

    fn encode(self) -> i64 {
        (self.ledger << 32) | (self.transaction << 12) | self.operation
    }
}

/// Go's `strconv.ParseInt` complaint about `text`.
fn parse_int_error(text: &str) -> String {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let reason = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        "value out of range"
    } else {
        "invalid syntax"
    };
    format!("strconv.ParseInt: parsing {text:?}: {reason}")
}

/// `getTransactions`: the transactions of the node's ledgers from `startLedger` (or after the
/// cursor), a page at a time, as stellar-rpc v27 pages them.
///
/// Faithful to stellar-rpc, quirks included: the cursor names the last transaction returned,
/// or, when a page ends in a ledger with nothing after the start, that ledger with transaction
/// order 0 — so a page that ends exactly at the latest ledger's last transaction and is asked
/// again returns that ledger's cursor with order 0, and the page after it reads that ledger
/// again (clients dedupe by hash).
pub fn get_transactions(
    network: &Network,
    node: RpcNode,
    params: &TransactionsParams,
) -> Result<TransactionsResult, RpcError> {
    let latest = node.ingested;
    let oldest = node.oldest(network);
    let out_of_range = || {
        RpcError::invalid_request(format!(
            "start ledger ({}) must be between the oldest ledger: {oldest} and the latest ledger: {latest} for this rpc instance",
            params.start_ledger
        ))
    };
    let in_range = |ledger: u32| oldest <= ledger && ledger <= latest;
    let cursor_text = params
        .pagination
        .as_ref()
        .and_then(|p| p.cursor.as_deref())
        .filter(|cursor| !cursor.is_empty());
    let requested_limit = params
        .pagination
        .as_ref()
        .and_then(|p| p.limit)
        .unwrap_or(0);
    match (&params.pagination, cursor_text) {
        (Some(_), Some(cursor)) if params.start_ledger != 0 => {
            return Err(RpcError::invalid_request(format!(
                "startLedger ({}) and cursor ({cursor}) cannot both be set",
                params.start_ledger
            )));
        }
        (Some(_), Some(_)) => {}
        _ if !in_range(params.start_ledger) => return Err(out_of_range()),
        _ => {}
    }
    if requested_limit > MAX_TRANSACTIONS_LIMIT {
        return Err(RpcError::invalid_request(format!(
            "limit must not exceed {MAX_TRANSACTIONS_LIMIT}"
        )));
    }
    check_format(params.xdr_format.as_deref())?;
    let mut start = Toid {
        ledger: i64::from(params.start_ledger),
        transaction: 1,
        operation: 1,
    };
    if let Some(cursor) = cursor_text {
        let id: i64 = cursor
            .parse()
            .map_err(|_| RpcError::invalid_params(parse_int_error(cursor)))?;
        start = Toid::parse(id);
        // The page starts with the transaction after the cursor.
        start.transaction += 1;
    }
    let limit = match requested_limit {
        0 => DEFAULT_TRANSACTIONS_LIMIT,
        limit => limit,
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut transactions = Vec::new();
    let mut cursor = Toid {
        ledger: 0,
        transaction: 0,
        operation: 0,
    };
    let mut ledger = start.ledger;
    'ledgers: while ledger <= i64::from(latest) {
        if ledger < 0 {
            return Err(RpcError::invalid_params(
                "cursor ledger sequence cannot be negative",
            ));
        }
        let sequence = u32::try_from(ledger).unwrap_or(u32::MAX);
        if !in_range(sequence) {
            return Err(RpcError::invalid_params(format!(
                "database does not contain metadata for ledger: {sequence}"
            )));
        }
        let records = network.transactions_in_ledgers(sequence, sequence);
        let first = if ledger == start.ledger {
            start.transaction.max(1)
        } else {
            1
        };
        cursor = Toid {
            ledger,
            transaction: 0,
            operation: 1,
        };
        let skip = usize::try_from(first - 1).unwrap_or(usize::MAX);
        for (index, record) in records.iter().enumerate().skip(skip) {
            cursor.transaction = i64::try_from(index + 1).unwrap_or(i64::MAX);
            transactions.push(TransactionInfo {
                details: TransactionDetails::of(record)?,
                created_at: i64::try_from(record.close_time).unwrap_or(i64::MAX),
            });
            if transactions.len() >= limit {
                break 'ledgers;
            }
        }
        ledger += 1;
    }
    Ok(TransactionsResult {
        transactions,
        latest_ledger: latest,
        latest_ledger_close_timestamp: close_time(network, latest),
        oldest_ledger: oldest,
        oldest_ledger_close_timestamp: close_time(network, oldest),
        cursor: cursor.encode().to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// getFeeStats

/// A fee distribution as RPC shapes it: 64-bit values as strings, `transactionCount` a string,
/// `ledgerCount` a number. All zero when the window saw no transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeeDistribution {
    /// Highest.
    pub max: String,
    /// Lowest.
    pub min: String,
    /// Most frequent.
    pub mode: String,
    /// 10th percentile.
    pub p10: String,
    /// 20th percentile.
    pub p20: String,
    /// 30th percentile.
    pub p30: String,
    /// 40th percentile.
    pub p40: String,
    /// Median.
    pub p50: String,
    /// 60th percentile.
    pub p60: String,
    /// 70th percentile.
    pub p70: String,
    /// 80th percentile.
    pub p80: String,
    /// 90th percentile.
    pub p90: String,
    /// 95th percentile.
    pub p95: String,
    /// 99th percentile.
    pub p99: String,
    /// How many transactions the window holds.
    pub transaction_count: String,
    /// How many ledgers.
    pub ledger_count: u32,
}

impl FeeDistribution {
    /// stellar-rpc's `computeFeeDistribution` over `sorted` fees (nearest rank; its mode).
    pub fn of(sorted: &[i64], ledger_count: u32) -> Self {
        let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else {
            return FeeDistribution::of_nothing();
        };
        let mut mode = first;
        let mut previous = first;
        let mut best_run = 0;
        let mut run = 0;
        for &fee in sorted.iter().skip(1) {
            if fee == previous {
                run += 1;
                continue;
            }
            if run > best_run {
                best_run = run;
                mode = previous;
            }
            previous = fee;
            run = 0;
        }
        if run > best_run {
            mode = last;
        }
        let count = sorted.len();
        let percentile = |p: usize| {
            let kth = (p * count).div_ceil(100).clamp(1, count);
            sorted.get(kth - 1).copied().unwrap_or(last).to_string()
        };
        FeeDistribution {
            max: last.to_string(),
            min: first.to_string(),
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
            transaction_count: count.to_string(),
            ledger_count,
        }
    }

    /// The zero distribution (RPC's `FeeDistribution{}`, ledger count included).
    fn of_nothing() -> Self {
        let zero = || "0".to_owned();
        FeeDistribution {
            max: zero(),
            min: zero(),
            mode: zero(),
            p10: zero(),
            p20: zero(),
            p30: zero(),
            p40: zero(),
            p50: zero(),
            p60: zero(),
            p70: zero(),
            p80: zero(),
            p90: zero(),
            p95: zero(),
            p99: zero(),
            transaction_count: zero(),
            ledger_count: 0,
        }
    }
}

/// `getFeeStats`' result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeeStatsResult {
    /// Soroban transactions' inclusion fees (none here: all zero).
    pub soroban_inclusion_fee: FeeDistribution,
    /// Classic transactions' fee charged per operation, over the last ten ledgers.
    pub inclusion_fee: FeeDistribution,
    /// The latest ingested ledger.
    pub latest_ledger: u32,
}

/// `getFeeStats`.
pub fn get_fee_stats(network: &Network, node: RpcNode) -> FeeStatsResult {
    let (fees, ledgers) = network.rpc_inclusion_fees(node.ingested);
    FeeStatsResult {
        soroban_inclusion_fee: FeeDistribution::of_nothing(),
        inclusion_fee: FeeDistribution::of(&fees, ledgers),
        latest_ledger: node.ingested,
    }
}

// ---------------------------------------------------------------------------------------------
// sendTransaction

/// `sendTransaction`'s parameters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendTransactionParams {
    /// The base64 `TransactionEnvelope`.
    #[serde(default)]
    pub transaction: String,
    /// `base64` (default) or `json`.
    #[serde(default)]
    pub xdr_format: Option<String>,
}

impl SendTransactionParams {
    /// Checks the format as stellar-rpc does first.
    pub fn check(&self) -> Result<(), RpcError> {
        check_format(self.xdr_format.as_deref())
    }
}

/// `sendTransaction`'s result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendTransactionResult {
    /// For `ERROR`: the `TransactionResult`, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_result_xdr: Option<String>,
    /// `PENDING`, `DUPLICATE`, `TRY_AGAIN_LATER` or `ERROR`.
    pub status: &'static str,
    /// The transaction's hash.
    pub hash: String,
    /// The node's latest ingested ledger when it handled the submission.
    pub latest_ledger: u32,
    /// Its close time, a string.
    pub latest_ledger_close_time: String,
}

impl SendTransactionResult {
    /// The answer `status` for `hash`, as of `node`.
    pub fn new(network: &Network, node: RpcNode, status: &'static str, hash: String) -> Self {
        SendTransactionResult {
            error_result_xdr: None,
            status,
            hash,
            latest_ledger: node.ingested,
            latest_ledger_close_time: close_time(network, node.ingested).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_distribution_is_rpcs_nearest_rank_and_mode() {
        let fees: Vec<i64> = (1..=10).map(|v| v * 100).collect();
        let dist = FeeDistribution::of(&fees, 3);
        assert_eq!(dist.p10, "100");
        assert_eq!(dist.p50, "500");
        assert_eq!(dist.p99, "1000");
        assert_eq!(dist.transaction_count, "10");
        assert_eq!(dist.ledger_count, 3);
        assert_eq!(FeeDistribution::of(&[100, 200, 200, 300], 1).mode, "200");
        let empty = FeeDistribution::of(&[], 7);
        assert_eq!(empty.p50, "0");
        assert_eq!(empty.ledger_count, 0, "RPC's zero distribution");
    }

    #[test]
    fn toids_round_trip_as_rpc_encodes_them() {
        let toid = Toid {
            ledger: 5,
            transaction: 2,
            operation: 1,
        };
        assert_eq!(toid.encode(), (5 << 32) | (2 << 12) | 1);
        assert_eq!(Toid::parse(toid.encode()), toid);
    }

    #[test]
    fn go_error_texts() {
        assert_eq!(
            parse_int_error("abc"),
            "strconv.ParseInt: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            parse_int_error("99999999999999999999"),
            "strconv.ParseInt: parsing \"99999999999999999999\": value out of range"
        );
        assert_eq!(
            hex_error(&format!("{}zz", "a".repeat(62))).as_deref(),
            Some("encoding/hex: invalid byte: U+007A 'z'")
        );
    }
}
