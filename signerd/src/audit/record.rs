//! What audit records say. Writers build one of the `*Record` types and hand its JSON members to
//! the [`super::writer::AuditWriter`]; tools read any record back as a [`RecordView`].

use serde::{Deserialize, Serialize};

use crate::soroban::SorobanRecord;
use crate::stellar::OperationSummary;

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let millis = now.millisecond();
    let now = now.replace_millisecond(millis).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The current time in Unix milliseconds.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds (the `time` of a record whose `time_ms`
/// is signed, so the two always agree).
pub fn rfc3339_of_ms(time_ms: u64) -> String {
    let nanos = i128::from(time_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The current time in Unix seconds.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The outcome recorded for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Policy allowed it; the signature is produced after this record is durable.
    Signed,
    /// Refused (ACL, policy, guard, velocity).
    Denied,
    /// Allowed, but the backend failed to sign (follows a `signed` record with the same request id).
    Failed,
    /// A key was created.
    Created,
}

/// A decision about one request. Field order is the order on disk.
#[derive(Debug, Default, Serialize)]
pub struct DecisionRecord {
    /// Always `decision`.
    pub kind: &'static str,
    /// When signerd decided (RFC 3339, UTC).
    pub time: String,
    /// The caller's request id (`x-request-id`) or one signerd made up.
    pub request_id: String,
    /// The caller's certificate identity.
    pub identity: String,
    /// The RPC.
    pub rpc: &'static str,
    /// The key asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The key's public half (G...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The network passphrase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The envelope hash (hex), as Horizon reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    /// The hash signed or to be signed (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_hash: Option<String>,
    /// For a fee bump: the inner transaction's hash (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner_tx_hash: Option<String>,
    /// Source account of the (inner) transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_account: Option<String>,
    /// Its sequence number (a string: it is a 64-bit value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    /// For a fee bump: the fee source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_source: Option<String>,
    /// The upper time bound (Unix seconds), when the transaction has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_time: Option<u64>,
    /// The sequence numbers of `source_account` on `network` this signature holds in the
    /// sequence guard: present exactly when the key is the transaction source and signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_sequences: Option<SequenceRange>,
    /// What the operations do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<OperationSummary>>,
    /// For a denial whose record would exceed the size cap: how many operations (from the end)
    /// are left out of `operations`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operations_truncated: Option<usize>,
    /// A contract authorization (`SignAuthEntry`, or the source-account authorizations of an
    /// `invoke_host_function`): contract, function, arguments, nonce, expiration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soroban: Option<Vec<SorobanRecord>>,
    /// A SEP-10 challenge: the home domain it logs into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_auth_domain: Option<String>,
    /// A SEP-53 message: its length in bytes (`signed_hash` is what was signed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_bytes: Option<usize>,
    /// The outcome.
    pub decision: Option<Decision>,
    /// For a denial: the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    /// For a denial or failure: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a denial: how many earlier denials of this identity were refused over its denial
    /// budget without a record of their own (since its previous record). A `denial_budget`
    /// summary record carries only this count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed_denials: Option<u64>,
}

/// An inclusive range of sequence numbers (strings: they are 64-bit values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceRange {
    /// The lowest.
    pub first: String,
    /// The highest.
    pub last: String,
}

/// A signed checkpoint (version 2, see [`super::checkpoint`]): the audit key's signature over
/// the checkpoint's own position, the record right before it, `final`, `time_ms` and the guard
/// snapshot's digest.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// Always `checkpoint`.
    pub kind: String,
    /// The checkpoint format: 2. Version-1 checkpoints have no such member.
    pub version: u8,
    /// When it was written (RFC 3339, the same instant as `time_ms`).
    pub time: String,
    /// When it was written, Unix milliseconds: the signed value.
    pub time_ms: u64,
    /// The record right before this one (and, through the chain, every record before it).
    pub covers_seq: u64,
    /// That record's hash (hex).
    pub covers_hash: String,
    /// SHA-256 (hex) of the guard snapshot saved with this checkpoint; 64 zeros when none.
    pub guard_digest: String,
    /// The audit public key (G...).
    pub audit_key: String,
    /// Ed25519 signature (hex) over [`super::checkpoint::Claim::message`].
    pub signature: String,
    /// Written at a clean shutdown: nothing follows until signerd starts again.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// An operator accepted, with `signerd serve --accept-audit-gap`, that the log on disk is behind
/// (or not the continuation of) the checkpoint anchored in the backend: records between the
/// anchor and what was found are missing, and the sequence guard forgot what they held.
#[derive(Debug, Serialize)]
pub struct GapRecord {
    /// Always `gap`.
    pub kind: &'static str,
    /// When.
    pub time: String,
    /// The anchored checkpoint's seq.
    pub anchored_seq: u64,
    /// The anchored checkpoint's hash (hex).
    pub anchored_hash: String,
    /// The last record found on disk before this one (0: the log was empty).
    pub found_seq: u64,
    /// Its hash (hex).
    pub found_hash: String,
    /// What was wrong, in words.
    pub message: String,
}

/// A lifecycle event: start, recovery of a torn tail, audit key creation.
#[derive(Debug, Serialize)]
pub struct EventRecord {
    /// `start` or `recovery`.
    pub kind: &'static str,
    /// When.
    pub time: String,
    /// What happened.
    pub message: String,
}

/// Any record, read back by tools. Members a record kind does not have are `None`.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
pub struct RecordView {
    /// Chain position.
    pub seq: u64,
    /// `decision`, `checkpoint`, `start`, `recovery`, `gap`.
    #[serde(default)]
    pub kind: String,
    /// RFC 3339 time.
    #[serde(default)]
    pub time: String,
    /// See [`DecisionRecord`].
    pub request_id: Option<String>,
    /// See [`DecisionRecord`].
    pub identity: Option<String>,
    /// See [`DecisionRecord`].
    pub rpc: Option<String>,
    /// See [`DecisionRecord`].
    pub key_id: Option<String>,
    /// See [`DecisionRecord`].
    pub public_key: Option<String>,
    /// See [`DecisionRecord`].
    pub network: Option<String>,
    /// See [`DecisionRecord`].
    pub tx_hash: Option<String>,
    /// See [`DecisionRecord`].
    pub signed_hash: Option<String>,
    /// See [`DecisionRecord`].
    pub inner_tx_hash: Option<String>,
    /// See [`DecisionRecord`].
    pub source_account: Option<String>,
    /// See [`DecisionRecord`].
    pub sequence: Option<String>,
    /// See [`DecisionRecord`].
    pub fee_source: Option<String>,
    /// See [`DecisionRecord`].
    pub max_time: Option<u64>,
    /// See [`DecisionRecord`].
    pub reserved_sequences: Option<SequenceRange>,
    /// See [`DecisionRecord`].
    pub operations: Option<Vec<OperationSummary>>,
    /// See [`DecisionRecord`].
    pub operations_truncated: Option<usize>,
    /// See [`DecisionRecord`].
    pub soroban: Option<Vec<SorobanRecord>>,
    /// See [`DecisionRecord`].
    pub web_auth_domain: Option<String>,
    /// See [`DecisionRecord`].
    pub message_bytes: Option<usize>,
    /// See [`DecisionRecord`].
    pub decision: Option<Decision>,
    /// See [`DecisionRecord`].
    pub rule: Option<String>,
    /// See [`DecisionRecord`].
    pub reason: Option<String>,
    /// See [`DecisionRecord`].
    pub suppressed_denials: Option<u64>,
    /// See [`CheckpointRecord`] (absent: a version-1 checkpoint).
    pub version: Option<u8>,
    /// See [`CheckpointRecord`].
    pub time_ms: Option<u64>,
    /// See [`CheckpointRecord`].
    pub guard_digest: Option<String>,
    /// See [`CheckpointRecord`].
    pub covers_seq: Option<u64>,
    /// See [`CheckpointRecord`].
    pub covers_hash: Option<String>,
    /// See [`CheckpointRecord`].
    pub audit_key: Option<String>,
    /// See [`CheckpointRecord`].
    pub signature: Option<String>,
    /// See [`CheckpointRecord`].
    #[serde(rename = "final")]
    pub is_final: Option<bool>,
    /// See [`EventRecord`].
    pub message: Option<String>,
    /// See [`GapRecord`].
    pub anchored_seq: Option<u64>,
    /// See [`GapRecord`].
    pub anchored_hash: Option<String>,
    /// See [`GapRecord`].
    pub found_seq: Option<u64>,
    /// See [`GapRecord`].
    pub found_hash: Option<String>,
}

/// The JSON members of `record` without the surrounding braces, ready for
/// [`super::chain::seal`].
pub fn members<T: Serialize>(record: &T) -> String {
    let json = serde_json::to_string(record).unwrap_or_else(|_| "{}".to_owned());
    json.strip_prefix('{')
        .and_then(|j| j.strip_suffix('}'))
        .unwrap_or_default()
        .to_owned()
}
