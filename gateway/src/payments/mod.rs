//! Payments: the values a payment request becomes once parsed ([`Stroops`], [`Destination`],
//! [`MemoText`]), the Stellar transaction built for it ([`transaction`]) and the
//! [`worker::PaymentWorker`] that drives it to Horizon and makes sure it never pays twice.
//!
//! Status machine (every step recorded in `payment_events`):
//!
//! ```text
//! CREATED ──build+sign──▶ SIGNED ──submit──▶ SUBMITTED ──▶ SUCCESS
//!  ▲  │                                        │ │  └────▶ FAILED (result codes)
//!  │  └── sequence already used: back to ──────┘ └───────▶ NEEDS_ATTENTION (sequence spent,
//!  │      confirming, never building                        history cannot say by whom)
//!  └── rebuild on the same sequence: every hash absent and the sequence unused in reads at or
//!      past a ledger that closed after max_time; on a new sequence only once another
//!      transaction is shown to have spent it
//! ```

pub mod transaction;
pub mod worker;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::AccountId;

/// Stroops per lumen.
pub const STROOPS_PER_XLM: i64 = 10_000_000;

/// A positive amount of native lumens in stroops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stroops(i64);

impl Stroops {
    /// Parses a decimal string with at most 7 decimal places, greater than zero.
    pub fn parse(raw: &str) -> Result<Self> {
        parse_amount(raw)
            .filter(|s| *s > 0)
            .map(Stroops)
            .ok_or_else(|| {
                Error::Validation(format!(
                    "amount must be a positive decimal string with at most 7 decimal places, got {:?}",
                    raw.chars().take(40).collect::<String>()
                ))
            })
    }

    /// A stored value (positive by the table's CHECK).
    pub fn from_stored(stroops: i64) -> Self {
        Stroops(stroops)
    }

    /// The amount in stroops.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Formats stroops as Horizon does: `12.3400000`.
pub fn format_amount(stroops: i64) -> String {
    let sign = if stroops < 0 { "-" } else { "" };
    let abs = stroops.unsigned_abs();
    let per = STROOPS_PER_XLM.unsigned_abs();
    format!("{sign}{}.{:07}", abs / per, abs % per)
}

/// Parses `123`, `123.4567890`: digits, at most one point, at most 7 decimals, no sign, no
/// exponent, fits in an i64 of stroops. Zero is allowed here (balances); callers refuse it.
pub fn parse_amount(raw: &str) -> Option<i64> {
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    if whole.is_empty()
        || whole.len() > 12
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 7
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || (raw.contains('.') && fraction.is_empty())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let mut frac: i64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    for _ in fraction.len()..7 {
        frac *= 10;
    }
    whole
        .checked_mul(STROOPS_PER_XLM)
        .and_then(|w| w.checked_add(frac))
}

/// Where a payment goes, once resolved: a plain account or a muxed (M...) one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestinationAccount {
    /// `G...`
    Account(AccountId),
    /// `M...`: an account plus a 64-bit id.
    Muxed {
        /// The `M...` strkey.
        address: String,
        /// The underlying account's key.
        ed25519: [u8; 32],
        /// The mux id.
        id: u64,
    },
}

impl DestinationAccount {
    /// Parses `G...` or `M...`.
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.starts_with('G') {
            return AccountId::parse(raw).map(DestinationAccount::Account);
        }
        if raw.starts_with('M') {
            let muxed = stellar_strkey::ed25519::MuxedAccount::from_string(raw).map_err(|_| {
                Error::Validation("destination is not a valid muxed account (M...)".into())
            })?;
            return Ok(DestinationAccount::Muxed {
                address: format!("{muxed}"),
                ed25519: muxed.ed25519,
                id: muxed.id,
            });
        }
        Err(Error::Validation(
            "destination must be a wallet id, a G... account or an M... muxed account".into(),
        ))
    }

    /// The strkey.
    pub fn as_str(&self) -> &str {
        match self {
            DestinationAccount::Account(a) => a.as_str(),
            DestinationAccount::Muxed { address, .. } => address,
        }
    }
}

/// A text memo: at most 28 bytes of UTF-8, without NUL (a Postgres text column cannot hold it,
/// and no reader of a memo expects one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoText(String);

impl MemoText {
    /// Parses a memo.
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.len() > 28 {
            return Err(Error::Validation(format!(
                "memo must be at most 28 bytes, got {}",
                raw.len()
            )));
        }
        if raw.contains('\0') {
            return Err(Error::Validation("memo must not contain NUL".into()));
        }
        Ok(MemoText(raw.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A payment's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum PaymentStatus {
    /// Accepted; no transaction signed yet (or a rebuild is due).
    #[serde(rename = "CREATED")]
    Created,
    /// A transaction is signed and stored; it may already have been sent.
    #[serde(rename = "SIGNED")]
    Signed,
    /// Sent to Horizon at least once; the outcome is not known yet.
    #[serde(rename = "SUBMITTED")]
    Submitted,
    /// Applied successfully.
    #[serde(rename = "SUCCESS")]
    Success,
    /// Will never be paid (refused, blocked, or failed in a ledger).
    #[serde(rename = "FAILED")]
    Failed,
    /// Its sequence number was spent and Horizon cannot show by which transaction (the
    /// account's history is pruned, or another signer used it and the history never shows
    /// it): none of its transactions can apply any more, but whether one did is for an operator
    /// to decide (`POST /v1/payments/{id}/resolve`). It does not hold up the wallet.
    #[serde(rename = "NEEDS_ATTENTION")]
    NeedsAttention,
}

impl PaymentStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Created => "CREATED",
            PaymentStatus::Signed => "SIGNED",
            PaymentStatus::Submitted => "SUBMITTED",
            PaymentStatus::Success => "SUCCESS",
            PaymentStatus::Failed => "FAILED",
            PaymentStatus::NeedsAttention => "NEEDS_ATTENTION",
        }
    }

    /// Parses the stored form.
    pub fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "CREATED" => PaymentStatus::Created,
            "SIGNED" => PaymentStatus::Signed,
            "SUBMITTED" => PaymentStatus::Submitted,
            "SUCCESS" => PaymentStatus::Success,
            "FAILED" => PaymentStatus::Failed,
            "NEEDS_ATTENTION" => PaymentStatus::NeedsAttention,
            other => return Err(Error::CorruptData(format!("payment status {other:?}"))),
        })
    }

    /// SUCCESS or FAILED.
    pub fn is_terminal(self) -> bool {
        matches!(self, PaymentStatus::Success | PaymentStatus::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_to_stroops() {
        assert_eq!(Stroops::parse("1").map(Stroops::get).ok(), Some(10_000_000));
        assert_eq!(Stroops::parse("0.0000001").map(Stroops::get).ok(), Some(1));
        assert_eq!(
            Stroops::parse("12.34").map(Stroops::get).ok(),
            Some(123_400_000)
        );
        for bad in [
            "0",
            "0.0",
            "-1",
            "1.",
            ".5",
            "1.00000001",
            "1e3",
            "",
            " 1",
            "abc",
            "99999999999999",
        ] {
            assert!(Stroops::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format_amount(123_400_000), "12.3400000");
        assert_eq!(parse_amount("10000.0000000"), Some(100_000_000_000));
    }

    #[test]
    fn memos_are_at_most_28_bytes() {
        assert!(MemoText::parse(&"a".repeat(28)).is_ok());
        assert!(MemoText::parse(&"a".repeat(29)).is_err());
        assert!(MemoText::parse(&"é".repeat(15)).is_err());
    }

    #[test]
    fn destinations_are_checked_strkeys() {
        let g = format!("{}", stellar_strkey::ed25519::PublicKey([7; 32]));
        assert!(matches!(
            DestinationAccount::parse(&g),
            Ok(DestinationAccount::Account(_))
        ));
        let m = format!(
            "{}",
            stellar_strkey::ed25519::MuxedAccount {
                ed25519: [7; 32],
                id: 42
            }
        );
        assert!(matches!(
            DestinationAccount::parse(&m),
            Ok(DestinationAccount::Muxed { id: 42, .. })
        ));
        assert!(DestinationAccount::parse("GABC").is_err());
        assert!(DestinationAccount::parse("hello").is_err());
    }
}
