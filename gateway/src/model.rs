//! Values parsed once at the edge, and the records the API returns.
//!
//! Anything that arrives from a caller, from signerd or from a database row becomes one of these
//! types exactly once; inner code never re-checks. Parsing failures are [`Error::Validation`] for
//! caller input; the store maps them to [`Error::CorruptData`] for stored values.

use std::fmt;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Result};

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id. UUIDv7: ordered by creation time, so paging by id is paging by age.
            pub fn generate() -> Self {
                $name(Uuid::now_v7())
            }

            /// Parses an id from untrusted text (the hyphenated UUID form only).
            pub fn parse(raw: &str) -> Result<Self> {
                // Uuid::try_parse also accepts braced, URN and simple forms; one spelling per id
                // keeps URLs, logs and the database consistent.
                let parsed = Uuid::try_parse(raw)
                    .ok()
                    .filter(|id| raw.len() == 36 && id.hyphenated().to_string() == raw);
                parsed.map($name).ok_or_else(|| {
                    Error::Validation(format!(
                        "{} must be a lowercase hyphenated UUID, got {:?}",
                        $what,
                        truncate_for_message(raw)
                    ))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A user's id, chosen by the gateway.
    UserId,
    "user id"
);
uuid_id!(
    /// A wallet's id, chosen by the gateway. The signerd key id is derived from it.
    WalletId,
    "wallet id"
);
uuid_id!(
    /// A payment's id, chosen by the gateway.
    PaymentId,
    "payment id"
);
uuid_id!(
    /// A webhook endpoint's id, chosen by the gateway.
    WebhookId,
    "webhook id"
);
uuid_id!(
    /// An API key's id (not the secret: the id is safe to log and show).
    ApiKeyId,
    "api key id"
);

/// Untrusted text quoted in an error message is cut short so a huge input cannot make a huge
/// response or log line.
pub(crate) fn truncate_for_message(raw: &str) -> String {
    const MAX: usize = 80;
    match raw.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &raw[..cut]),
        None => raw.to_owned(),
    }
}

fn check_text(field: &str, raw: &str, max_chars: usize) -> Result<()> {
    let chars = raw.chars().count();
    if chars == 0 || chars > max_chars {
        return Err(Error::Validation(format!(
            "{field} must be 1 to {max_chars} characters"
        )));
    }
    if raw.chars().any(char::is_control) {
        return Err(Error::Validation(format!(
            "{field} must not contain control characters"
        )));
    }
    if raw.trim() != raw {
        return Err(Error::Validation(format!(
            "{field} must not start or end with whitespace"
        )));
    }
    Ok(())
}

/// The caller's own reference for a user (their customer id). Unique across users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ExternalRef(String);

impl ExternalRef {
    /// The longest reference accepted, in characters.
    pub const MAX_CHARS: usize = 128;

    /// Parses untrusted text.
    pub fn parse(raw: &str) -> Result<Self> {
        check_text("external_ref", raw, Self::MAX_CHARS)?;
        Ok(ExternalRef(raw.to_owned()))
    }

    /// The reference as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why an admin blocked, unblocked, froze or unfroze something; kept in the audit event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    /// The longest reason accepted, in characters.
    pub const MAX_CHARS: usize = 500;

    /// Parses untrusted text.
    pub fn parse(raw: &str) -> Result<Self> {
        check_text("reason", raw, Self::MAX_CHARS)?;
        Ok(Reason(raw.to_owned()))
    }

    /// The reason as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A signerd key id. A wallet's key id is always `wallet-<wallet id>`, so the id alone tells
/// signerd's ACL (`wallet-*`) and its audit log which wallet a key belongs to, and a reservation
/// that crashed before storing anything still maps to exactly one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SignerKeyId(String);

impl SignerKeyId {
    /// The key id of a wallet.
    pub fn for_wallet(wallet: WalletId) -> Self {
        SignerKeyId(format!("wallet-{wallet}"))
    }

    /// Parses a stored or returned key id: signerd's alphabet, `[A-Za-z0-9_-]{1,64}`.
    pub fn parse(raw: &str) -> Result<Self> {
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if raw.is_empty() || raw.len() > 64 || !raw.chars().all(valid) {
            return Err(Error::Validation(format!(
                "signer key id must match [A-Za-z0-9_-]{{1,64}}, got {:?}",
                truncate_for_message(raw)
            )));
        }
        Ok(SignerKeyId(raw.to_owned()))
    }

    /// The key id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SignerKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Stellar account id (`G...` strkey of an Ed25519 public key), checksum verified.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AccountId(String);

impl AccountId {
    /// Parses a strkey account id, checking version byte and checksum.
    pub fn parse(raw: &str) -> Result<Self> {
        let key = stellar_strkey::ed25519::PublicKey::from_string(raw).map_err(|_| {
            Error::Validation(format!(
                "not a Stellar account id (G...): {:?}",
                truncate_for_message(raw)
            ))
        })?;
        Ok(AccountId(format!("{key}")))
    }

    /// The raw 32-byte public key.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        // The string was produced from a parsed key in `parse`, so it always parses back.
        stellar_strkey::ed25519::PublicKey::from_string(&self.0)
            .map(|k| k.0)
            .unwrap_or([0; 32])
    }

    /// The strkey.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A UTC instant, stored and shown as fixed-width RFC 3339 with milliseconds
/// (`2025-01-31T09:15:00.123Z`). Fixed width makes text order equal time order, so both
/// databases compare and sort these columns correctly as plain text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Timestamp(String);

const TIMESTAMP_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// [`TIMESTAMP_FORMAT`] without its `Z`, for parsing.
const TIMESTAMP_PARSE: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]"
);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from_offset(time::OffsetDateTime::now_utc())
    }

    /// This instant plus `d`.
    pub fn after(d: std::time::Duration) -> Self {
        Self::from_offset(time::OffsetDateTime::now_utc() + d)
    }

    /// This instant minus `d`.
    pub fn before(d: std::time::Duration) -> Self {
        Self::from_offset(time::OffsetDateTime::now_utc() - d)
    }

    fn from_offset(t: time::OffsetDateTime) -> Self {
        // Formatting a UTC OffsetDateTime with a year in 0..=9999 cannot fail.
        Timestamp(t.format(TIMESTAMP_FORMAT).unwrap_or_default())
    }

    /// Takes a stored value; only checks its shape (the database is trusted to hold what the
    /// gateway wrote, but a hand edit is reported rather than shown).
    pub fn from_stored(raw: String) -> Result<Self> {
        let shape_ok = raw.len() == 24
            && raw.ends_with('Z')
            && raw.as_bytes().get(10) == Some(&b'T')
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || b"-:.TZ".contains(&b));
        if !shape_ok {
            return Err(Error::CorruptData(format!("timestamp {raw:?}")));
        }
        Ok(Timestamp(raw))
    }

    /// The instant as unix seconds; `None` if the stored text does not parse.
    pub fn unix_seconds(&self) -> Option<i64> {
        time::PrimitiveDateTime::parse(self.0.trim_end_matches('Z'), TIMESTAMP_PARSE)
            .ok()
            .map(|t| t.assume_utc().unix_timestamp())
    }

    /// The timestamp as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request id: the caller's `x-request-id` when sane, else one the gateway makes. It is logged
/// with every line about the request, stored in audit events and sent to signerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The longest request id accepted from a caller.
    pub const MAX_LEN: usize = 128;

    /// The caller's value when it is 1..=128 characters of `[A-Za-z0-9._:-]`, else `None`.
    pub fn from_caller(raw: &str) -> Option<Self> {
        let sane = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        sane.then(|| RequestId(raw.to_owned()))
    }

    /// A fresh request id.
    pub fn generate() -> Self {
        RequestId(format!("gw-{}", Uuid::now_v7().simple()))
    }

    /// The id as text (always a valid HTTP header and gRPC metadata value).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a user may act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// The user may get a wallet (and, later, pay).
    Active,
    /// An admin blocked the user.
    Blocked,
}

/// A user as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct User {
    /// The gateway's id for the user.
    #[schema(value_type = String)]
    pub id: UserId,
    /// The caller's reference, unique across users.
    #[schema(value_type = String)]
    pub external_ref: ExternalRef,
    /// `active` or `blocked`.
    pub status: UserStatus,
    /// When the user was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When an admin blocked the user (absent while active).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub blocked_at: Option<Timestamp>,
}

/// Whether a wallet may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WalletStatus {
    /// Usable.
    Active,
    /// An admin froze the wallet.
    Frozen,
}

/// A complete wallet: its key exists in signerd and its public key is stored. A reservation whose
/// key is not confirmed yet is never shown (see [`crate::store::WalletRecord`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Wallet {
    /// The gateway's id for the wallet.
    #[schema(value_type = String)]
    pub id: WalletId,
    /// The owner; a user has at most one wallet.
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// The signerd key id (`wallet-<id>`).
    #[schema(value_type = String)]
    pub key_id: SignerKeyId,
    /// The Stellar account id (`G...`) of the wallet's key.
    #[schema(value_type = String)]
    pub public_key: AccountId,
    /// `active` or `frozen`.
    pub status: WalletStatus,
    /// When the wallet was reserved.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When an admin froze the wallet (absent while active).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub frozen_at: Option<Timestamp>,
}

/// Who did something: an API key, or an operator at the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A caller authenticated by an API key.
    ApiKey(ApiKeyId),
    /// The `gateway` command line (e.g. `api-key create`).
    Cli,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::ApiKey(id) => write!(f, "api-key:{id}"),
            Actor::Cli => f.write_str("cli"),
        }
    }
}

/// What an audit event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    /// A user was created.
    UserCreated,
    /// An admin blocked a user.
    UserBlocked,
    /// An admin unblocked a user.
    UserUnblocked,
    /// A wallet was completed (its key confirmed by signerd).
    WalletCreated,
    /// An admin froze a wallet.
    WalletFrozen,
    /// An admin unfroze a wallet.
    WalletUnfrozen,
    /// An API key was created.
    ApiKeyCreated,
    /// An API key was revoked.
    ApiKeyRevoked,
    /// An admin settled a payment that needed attention.
    PaymentResolved,
    /// A webhook endpoint was registered.
    WebhookCreated,
    /// A webhook endpoint was deleted (its pending deliveries cancelled).
    WebhookDeleted,
    /// A webhook endpoint's signing secret was rotated.
    WebhookSecretRotated,
    /// A webhook delivery was queued again by hand.
    WebhookDeliveryReplayed,
    /// An admin set (or reset to the defaults) a wallet's daily payment limits.
    WalletLimitsSet,
}

impl AuditAction {
    /// The stored and shown name, e.g. `user.blocked`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::UserCreated => "user.created",
            AuditAction::UserBlocked => "user.blocked",
            AuditAction::UserUnblocked => "user.unblocked",
            AuditAction::WalletCreated => "wallet.created",
            AuditAction::WalletFrozen => "wallet.frozen",
            AuditAction::WalletUnfrozen => "wallet.unfrozen",
            AuditAction::ApiKeyCreated => "api_key.created",
            AuditAction::ApiKeyRevoked => "api_key.revoked",
            AuditAction::PaymentResolved => "payment.resolved",
            AuditAction::WebhookCreated => "webhook.created",
            AuditAction::WebhookDeleted => "webhook.deleted",
            AuditAction::WebhookSecretRotated => "webhook.secret_rotated",
            AuditAction::WebhookDeliveryReplayed => "webhook.delivery_replayed",
            AuditAction::WalletLimitsSet => "wallet.limits_set",
        }
    }
}

/// One audit event as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditEvent {
    /// Position in the log (increasing).
    pub id: i64,
    /// When it happened.
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: Timestamp,
    /// Who: `api-key:<id>` or `cli`.
    pub actor: String,
    /// What, e.g. `user.blocked`.
    pub action: String,
    /// The kind of thing acted on: `user`, `wallet` or `api_key`.
    pub subject_type: String,
    /// Its id.
    pub subject_id: String,
    /// The request id, when the action came through the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Action-specific details (e.g. the admin's reason).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// The `Idempotency-Key` header of a POST: 1 to 255 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key accepted.
    pub const MAX_LEN: usize = 255;

    /// Parses the header value.
    pub fn parse(raw: &str) -> Result<Self> {
        let visible = raw.bytes().all(|b| b.is_ascii_graphic());
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !visible {
            return Err(Error::Validation(format!(
                "Idempotency-Key must be 1 to {} visible ASCII characters",
                Self::MAX_LEN
            )));
        }
        Ok(IdempotencyKey(raw.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_reads_back_as_unix_seconds() {
        let stored = Timestamp::from_stored("2025-01-31T09:15:00.123Z".into());
        assert_eq!(
            stored.ok().and_then(|t| t.unix_seconds()),
            Some(1_738_314_900)
        );
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let read = Timestamp::now().unix_seconds().unwrap_or_default();
        assert!((read - now).abs() <= 1, "{read} vs {now}");
    }

    #[test]
    fn ids_accept_only_the_hyphenated_lowercase_form() {
        let id = UserId::generate();
        assert_eq!(UserId::parse(&id.to_string()).ok(), Some(id));
        let simple = id.0.simple().to_string();
        let upper = id.to_string().to_uppercase();
        for bad in [
            "",
            "123",
            "not-a-uuid",
            &simple,
            &upper,
            &format!("{{{id}}}"),
        ] {
            let err = UserId::parse(bad).err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|m| m.starts_with("user id must be")),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn external_ref_refuses_empty_long_padded_and_control_characters() {
        assert!(ExternalRef::parse("customer-42").is_ok());
        assert!(ExternalRef::parse("Ünïcödé ok").is_ok());
        assert!(ExternalRef::parse(&"x".repeat(128)).is_ok());
        for bad in ["", " padded", "tab\there", &"x".repeat(129)] {
            assert!(ExternalRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn wallet_key_id_fits_signerd_alphabet() {
        let key = SignerKeyId::for_wallet(WalletId::generate());
        assert!(key.as_str().starts_with("wallet-"));
        assert_eq!(SignerKeyId::parse(key.as_str()).ok(), Some(key));
        assert!(SignerKeyId::parse("a/b").is_err());
        assert!(SignerKeyId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn account_id_checks_the_checksum() {
        let good = format!("{}", stellar_strkey::ed25519::PublicKey([7; 32]));
        let parsed = AccountId::parse(&good).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.public_key_bytes(), [7; 32]);
        let mut corrupted = good.into_bytes();
        corrupted[10] = if corrupted[10] == b'A' { b'B' } else { b'A' };
        let corrupted = String::from_utf8(corrupted).unwrap_or_default();
        assert!(AccountId::parse(&corrupted).is_err());
        assert!(AccountId::parse("SBXXX").is_err());
    }

    #[test]
    fn timestamps_are_fixed_width_and_sort_as_text() {
        let a = Timestamp::now();
        let b = Timestamp::after(std::time::Duration::from_secs(1));
        assert_eq!(a.as_str().len(), 24, "{}", a.as_str());
        assert!(a < b);
        assert!(Timestamp::from_stored(a.as_str().to_owned()).is_ok());
        assert!(Timestamp::from_stored("yesterday".into()).is_err());
    }

    #[test]
    fn request_ids_from_callers_are_sanitised() {
        assert!(RequestId::from_caller("abc-123_x.y:z").is_some());
        for bad in ["", "has space", "new\nline", "ünï", &"a".repeat(129)] {
            assert!(RequestId::from_caller(bad).is_none(), "{bad:?} accepted");
        }
        assert!(RequestId::from_caller(RequestId::generate().as_str()).is_some());
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::parse("order-42/retry:1").is_ok());
        for bad in ["", "with space", "tab\t", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn long_input_is_truncated_in_messages() {
        let msg = truncate_for_message(&"é".repeat(1000));
        assert!(msg.chars().count() <= 83);
    }
}
