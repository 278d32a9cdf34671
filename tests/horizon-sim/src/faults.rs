//! Faults on demand: what the next submissions suffer, how late ingestion runs, added latency and
//! full outages. Set through `POST /_sim/faults` or the library handle. The same faults act on
//! Horizon's endpoints and on Stellar RPC's `POST /rpc` (one network, one provider); each field
//! says how RPC shows it where that differs.

use serde::{Deserialize, Serialize};

/// The faults in force. Counters are consumed one per submission (`POST /transactions`,
/// `POST /transactions_async` or RPC's `sendTransaction`), in the order: outage, `unavailable`,
/// `timeout_without_apply`, `timeout_after_apply`. On RPC a lost reply is the provider's bare
/// HTTP 503 or 504 (no JSON-RPC body).
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
    /// to the synchronous submit) only this many ledgers later. RPC ingests whole ledgers: its
    /// nodes' `latestLedger` (and history) stays before such a transaction's ledger until then.
    pub ingestion_delay_ledgers: u32,
    /// Milliseconds added before answering any Horizon request (not the control API).
    pub latency_ms: u64,
    /// While true, every Horizon endpoint answers 503, and `POST /rpc` a bare 503 (the control
    /// API keeps working and ledgers keep closing).
    pub outage: bool,
    /// The Horizon nodes behind the one URL, by how many ledgers each lags (empty: one node, up
    /// to date). Reads take turns (round robin); a node `K` ledgers behind answers
    /// `GET /accounts/{id}`, `/accounts/{id}/transactions`, `/transactions/{hash}` and `/` from
    /// the ledger `K` before the latest, and its `Latest-Ledger` header and ledger fields say so.
    /// Each `POST /rpc` is served by one node in turn, every method in it answering from that
    /// node's ledger (`latestLedger` says which; `getLedgerEntries` shows its accounts).
    /// At most [`crate::network::MAX_NODE_LAG`].
    pub node_lags: Vec<u32>,
    /// The next N requests (Horizon or RPC) are answered 429 (with `Retry-After`) and not
    /// served: Horizon's `rate_limit_exceeded` problem, or for RPC a JSON-RPC error object
    /// (`id` null, code `-32005`) as RPC providers answer.
    pub rate_limited: u32,
    /// A request budget: at most this many requests (Horizon and RPC together) per
    /// `rate_limit_window_ms`; past it, 429 with `Retry-After` until the window ends. 0: no
    /// budget.
    pub rate_limit_requests: u32,
    /// The budget's window, in milliseconds (required with `rate_limit_requests`).
    pub rate_limit_window_ms: u64,
    /// A surge: other parties bid for this many operations in every ledger (and keep that many
    /// in the queue), at `surge_fee` per operation. Past the ledger's capacity the highest bids
    /// win and everyone included pays the clearing price; a full queue refuses lower bids with
    /// `tx_insufficient_fee`. 0: no competing demand.
    pub surge_operations: u32,
    /// What other parties bid per operation during a surge, in stroops (at least the base fee).
    pub surge_fee: u32,
    /// Horizon keeps only this many ledgers of history (`history_elder_ledger` moves up;
    /// older transactions answer 404), and so does RPC (its retention window: `oldestLedger`
    /// moves up, `getTransaction` says `NOT_FOUND`, `getTransactions` refuses older ledgers).
    /// 0: everything.
    pub history_retention_ledgers: u32,
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
    /// Checks values a client sent; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self
            .node_lags
            .iter()
            .any(|lag| *lag > crate::network::MAX_NODE_LAG)
        {
            return Err(format!(
                "node_lags: a node can lag at most {} ledgers",
                crate::network::MAX_NODE_LAG
            ));
        }
        if self.rate_limit_requests > 0 && self.rate_limit_window_ms == 0 {
            return Err("rate_limit_window_ms must be positive with rate_limit_requests".into());
        }
        Ok(())
    }

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
