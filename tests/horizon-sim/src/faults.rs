//! Faults on demand: what the next submissions suffer, how late ingestion runs, added latency and
//! full outages. Set through `POST /_sim/faults` or the library handle.

use serde::{Deserialize, Serialize};

/// The faults in force. Counters are consumed one per submission (`POST /transactions` or
/// `POST /transactions_async`), in the order: outage, `unavailable`, `timeout_without_apply`,
/// `timeout_after_apply`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// The next N submissions are processed normally (queued and applied at the next ledger
    /// close), but the client gets a 504 `timeout` instead of the result, sent once the
    /// transaction has been applied (or refused).
    pub timeout_after_apply: u32,
    /// The next N submissions are dropped before reaching the ledger and answered 504 `timeout`.
    pub timeout_without_apply: u32,
    /// The next N submissions are answered 503 (problem JSON for `/transactions`,
    /// `TRY_AGAIN_LATER` for `/transactions_async`) and dropped.
    pub unavailable: u32,
    /// Transactions applied while this is set become visible to `GET /transactions/{hash}` (and
    /// to the synchronous submit) only this many ledgers later.
    pub ingestion_delay_ledgers: u32,
    /// Milliseconds added before answering any Horizon request (not the control API).
    pub latency_ms: u64,
    /// While true, every Horizon endpoint answers 503 (the control API keeps working and ledgers
    /// keep closing).
    pub outage: bool,
}

/// What one submission suffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmissionFault {
    /// Nothing: a normal submission.
    None,
    /// 503, not applied.
    Unavailable,
    /// 504, not applied.
    TimeoutWithoutApply,
    /// 504 once applied.
    TimeoutAfterApply,
}

impl Faults {
    /// Takes the fault for the next submission, consuming one count.
    pub fn take_submission_fault(&mut self) -> SubmissionFault {
        if self.outage {
            SubmissionFault::Unavailable
        } else if self.unavailable > 0 {
            self.unavailable -= 1;
            SubmissionFault::Unavailable
        } else if self.timeout_without_apply > 0 {
            self.timeout_without_apply -= 1;
            SubmissionFault::TimeoutWithoutApply
        } else if self.timeout_after_apply > 0 {
            self.timeout_after_apply -= 1;
            SubmissionFault::TimeoutAfterApply
        } else {
            SubmissionFault::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_consumed_in_order_then_submissions_are_normal() {
        let mut faults = Faults {
            timeout_after_apply: 1,
            timeout_without_apply: 1,
            unavailable: 1,
            ..Faults::default()
        };
        assert_eq!(faults.take_submission_fault(), SubmissionFault::Unavailable);
        assert_eq!(
            faults.take_submission_fault(),
            SubmissionFault::TimeoutWithoutApply
        );
        assert_eq!(
            faults.take_submission_fault(),
            SubmissionFault::TimeoutAfterApply
        );
        assert_eq!(faults.take_submission_fault(), SubmissionFault::None);
        assert_eq!(faults, Faults::default());
    }

    #[test]
    fn an_outage_is_not_consumed() {
        let mut faults = Faults {
            outage: true,
            ..Faults::default()
        };
        assert_eq!(faults.take_submission_fault(), SubmissionFault::Unavailable);
        assert_eq!(faults.take_submission_fault(), SubmissionFault::Unavailable);
        assert!(faults.outage);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let parsed: Result<Faults, _> = serde_json::from_str(r#"{"timeout_afterapply": 1}"#);
        assert!(parsed.is_err());
        let parsed: Faults =
            serde_json::from_str(r#"{"unavailable": 2}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.unavailable, 2);
        assert_eq!(parsed.timeout_after_apply, 0);
    }
}
