//! Transaction submission as Horizon does it, with the faults in force.
//!
//! - [`submit_sync`] (`POST /transactions`) follows Horizon's `txsub.System.Submit`: answer from
//!   the ingested history if the hash is already there; check the source account's sequence
//!   number (Horizon's own `tx_bad_seq` for a used one, hold a future one until the account
//!   catches up); hand the transaction to core; wait for the ledger close and ingestion; on core's
//!   `tx_bad_seq`, look in the history once more.
//! - [`submit_async`] (`POST /transactions_async`, and RPC's `sendTransaction`) passes core's
//!   answer straight through.
//! - [`fund_with_friendbot`] builds friendbot's create-account transaction and submits it like
//!   `POST /transactions`.

use std::sync::Arc;
use std::time::Duration;

use stellar_xdr::TransactionResult;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::account::AccountKey;
use crate::envelope::SubmittedTransaction;
use crate::faults::SubmissionFault;
use crate::ledger::Rejection;
use crate::network::{Admission, FriendbotRefusal, Settlement, TransactionRecord, WaitUntil};
use crate::results::{TxFailure, transaction_result};
use crate::sim::Shared;

/// How long Horizon holds a submission whose sequence number is ahead of its account's before
/// answering `tx_bad_seq` (`AccountTxSubmissionQueue`'s timeout).
const FUTURE_SEQUENCE_HOLD: Duration = Duration::from_secs(10);

/// How a synchronous submission ends.
#[derive(Debug)]
pub enum SyncOutcome {
    /// In the ledger: 200 if successful, 400 `transaction_failed` (`tx_failed`) otherwise.
    Applied(Arc<TransactionRecord>),
    /// Refused at the transaction level, nothing changed: 400 `transaction_failed`.
    Rejected {
        /// The result.
        result: TransactionResult,
        /// The simulator's note, for features it does not implement.
        detail: Option<String>,
    },
    /// A timeout fault: 504 `timeout` (a proxy or Horizon's request timeout).
    Timeout,
    /// No result before the submission timeout (never in a ledger, or evicted from the queue):
    /// 504 `transaction_submission_timeout` naming the hash, as Horizon v2.28+ answers.
    SubmissionTimeout,
    /// A 503 fault.
    Unavailable,
}

impl From<Rejection> for SyncOutcome {
    fn from(rejection: Rejection) -> Self {
        SyncOutcome::Rejected {
            result: rejection.result,
            detail: rejection.detail,
        }
    }
}

/// Horizon's own canned answer (fee 0) when its sequence check fails before core sees the
/// transaction.
fn horizon_canned(failure: TxFailure) -> SyncOutcome {
    SyncOutcome::Rejected {
        result: transaction_result(0, failure.into_outer()),
        detail: None,
    }
}

/// How an asynchronous submission ends.
#[derive(Debug)]
pub enum AsyncOutcome {
    /// 201 `PENDING`: queued for the next ledger.
    Pending,
    /// 409 `DUPLICATE`: already queued.
    Duplicate,
    /// 503 `TRY_AGAIN_LATER`: another transaction from the account is queued.
    TryAgainLater,
    /// A 503 fault: dropped (Horizon answers `TRY_AGAIN_LATER`; RPC's provider a bare 503).
    Unavailable,
    /// 400 `ERROR` with the result.
    Error(Rejection),
    /// 504 `timeout` (a timeout fault).
    Timeout,
}

/// `POST /transactions`.
pub async fn submit_sync(shared: &Shared, tx: Arc<SubmittedTransaction>) -> SyncOutcome {
    let fault = shared.lock().faults.take_submission_fault();
    match fault {
        SubmissionFault::Unavailable => SyncOutcome::Unavailable,
        SubmissionFault::TimeoutWithoutApply => SyncOutcome::Timeout,
        SubmissionFault::TimeoutAfterApply => {
            let _ = horizon_submit(shared, tx, WaitUntil::Applied).await;
            SyncOutcome::Timeout
        }
        SubmissionFault::None => horizon_submit(shared, tx, WaitUntil::Ingested).await,
    }
}

/// `POST /transactions_async`.
pub async fn submit_async(shared: &Shared, tx: Arc<SubmittedTransaction>) -> AsyncOutcome {
    let fault = shared.lock().faults.take_submission_fault();
    match fault {
        SubmissionFault::Unavailable => AsyncOutcome::Unavailable,
        SubmissionFault::TimeoutWithoutApply => AsyncOutcome::Timeout,
        SubmissionFault::TimeoutAfterApply => {
            let (_, receiver) = shared.admit(tx, Some(WaitUntil::Applied));
            if let Some(receiver) = receiver {
                let deadline = Instant::now() + shared.config.submission_timeout;
                let _ = wait_for_settlement(shared, receiver, deadline).await;
            }
            AsyncOutcome::Timeout
        }
        SubmissionFault::None => match shared.admit(tx, None).0 {
            Admission::Pending => AsyncOutcome::Pending,
            Admission::Duplicate => AsyncOutcome::Duplicate,
            Admission::TryAgainLater => AsyncOutcome::TryAgainLater,
            Admission::Rejected(rejection) => AsyncOutcome::Error(rejection),
        },
    }
}

/// How a friendbot request ends.
#[derive(Debug)]
pub enum FriendbotOutcome {
    /// The account exists already: 400 "account already funded to starting balance".
    AlreadyFunded,
    /// The create-account transaction was submitted; this is how it ended.
    Submitted(Arc<SubmittedTransaction>, SyncOutcome),
    /// No friendbot account was free before the submission timeout: 504.
    Timeout,
}

/// `GET /friendbot?addr=`: creates `destination` with friendbot's amount, submitted from a free
/// friendbot account and waited for like `POST /transactions`.
pub async fn fund_with_friendbot(shared: &Shared, destination: AccountKey) -> FriendbotOutcome {
    let deadline = Instant::now() + shared.config.submission_timeout;
    while Instant::now() < deadline {
        let mut ledgers = shared.subscribe_ledgers();
        let built = shared.lock().friendbot_transaction(destination);
        let (unsigned, key) = match built {
            Ok(built) => built,
            Err(FriendbotRefusal::AlreadyFunded) => return FriendbotOutcome::AlreadyFunded,
            Err(FriendbotRefusal::Busy) => {
                if !next_ledger_before(shared, &mut ledgers, deadline).await {
                    break;
                }
                continue;
            }
        };
        let network_id = shared.lock().ledger.network_id();
        let signing = tokio::task::spawn_blocking(move || {
            SubmittedTransaction::sign(unsigned, network_id, &[&key])
        });
        // Signing our own well-formed transaction cannot fail.
        let Ok(Ok(tx)) = signing.await else {
            break;
        };
        let tx = Arc::new(tx);
        match shared.admit(tx.clone(), Some(WaitUntil::Ingested)) {
            (Admission::Pending | Admission::Duplicate, Some(receiver)) => {
                let outcome = wait_for_settlement(shared, receiver, deadline).await;
                return FriendbotOutcome::Submitted(tx, outcome);
            }
            // Another request took this friendbot account meanwhile: pick again.
            (Admission::TryAgainLater, _) => continue,
            (Admission::Rejected(rejection), _) if rejection.is_bad_seq() => continue,
            (Admission::Rejected(rejection), _) => {
                return FriendbotOutcome::Submitted(tx, rejection.into());
            }
            (Admission::Pending | Admission::Duplicate, None) => break,
        }
    }
    FriendbotOutcome::Timeout
}

/// Horizon's `txsub.System.Submit`, waiting `until` the transaction is applied or ingested.
async fn horizon_submit(
    shared: &Shared,
    tx: Arc<SubmittedTransaction>,
    until: WaitUntil,
) -> SyncOutcome {
    let deadline = Instant::now() + shared.config.submission_timeout;
    let source = tx.source_account();
    let mut hold_until = (Instant::now() + FUTURE_SEQUENCE_HOLD).min(deadline);
    loop {
        let mut ledgers = shared.subscribe_ledgers();
        let step = {
            let mut network = shared.lock();
            if let Some(record) = network.ingested(&tx.hash) {
                return SyncOutcome::Applied(record.clone());
            }
            let Some(account_sequence) = network.ledger.account(&source).map(|a| a.sequence) else {
                return horizon_canned(TxFailure::NoAccount);
            };
            if tx.sequence <= account_sequence {
                return horizon_canned(TxFailure::BadSeq);
            }
            if tx.sequence > account_sequence.saturating_add(1) {
                None
            } else {
                Some(shared.admit_locked(&mut network, tx.clone(), Some(until)))
            }
        };
        match step {
            // Horizon holds a future sequence number until the account catches up.
            None => {
                if !next_ledger_before(shared, &mut ledgers, hold_until).await {
                    return horizon_canned(TxFailure::BadSeq);
                }
                hold_until = (Instant::now() + FUTURE_SEQUENCE_HOLD).min(deadline);
            }
            Some((Admission::Rejected(rejection), _)) => {
                let applied_meanwhile = if rejection.is_bad_seq() {
                    shared.lock().ingested(&tx.hash).cloned()
                } else {
                    None
                };
                return match applied_meanwhile {
                    Some(record) => SyncOutcome::Applied(record),
                    None => rejection.into(),
                };
            }
            Some((Admission::Pending | Admission::Duplicate, Some(receiver))) => {
                return wait_for_settlement(shared, receiver, deadline).await;
            }
            // Core did not take it, but Horizon counts TRY_AGAIN_LATER as submitted and waits for
            // a result that never comes: the client gets a 504 at the deadline.
            Some((Admission::TryAgainLater, _)) | Some((_, None)) => {
                wait_until_deadline(shared, deadline).await;
                return SyncOutcome::SubmissionTimeout;
            }
        }
    }
}

async fn wait_for_settlement(
    shared: &Shared,
    receiver: oneshot::Receiver<Settlement>,
    deadline: Instant,
) -> SyncOutcome {
    let mut shutdown = shared.subscribe_shutdown();
    let settled = tokio::select! {
        settled = timeout_at(deadline, receiver) => settled,
        _ = shutdown.wait_for(|stopping| *stopping) => return SyncOutcome::SubmissionTimeout,
    };
    match settled {
        Ok(Ok(Settlement::Applied(record))) => SyncOutcome::Applied(record),
        Ok(Ok(Settlement::Dropped(rejection))) => rejection.into(),
        // Horizon never hears of an evicted transaction: it waits until its deadline.
        Ok(Ok(Settlement::Evicted)) => {
            wait_until_deadline(shared, deadline).await;
            SyncOutcome::SubmissionTimeout
        }
        // Abandoned at shutdown, or no ledger in time.
        Ok(Err(_)) | Err(_) => SyncOutcome::SubmissionTimeout,
    }
}

/// Waits for the next ledger close; false if `deadline` (or shutdown) comes first.
async fn next_ledger_before(
    shared: &Shared,
    ledgers: &mut tokio::sync::watch::Receiver<u32>,
    deadline: Instant,
) -> bool {
    let mut shutdown = shared.subscribe_shutdown();
    tokio::select! {
        changed = timeout_at(deadline, ledgers.changed()) => matches!(changed, Ok(Ok(()))),
        _ = shutdown.wait_for(|stopping| *stopping) => false,
    }
}

async fn wait_until_deadline(shared: &Shared, deadline: Instant) {
    let mut shutdown = shared.subscribe_shutdown();
    tokio::select! {
        _ = sleep_until(deadline) => {}
        _ = shutdown.wait_for(|stopping| *stopping) => {}
    }
}
