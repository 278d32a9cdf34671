//! The [`PaymentWorker`]: drives accepted payments to the network (Horizon or RPC), never paying twice. It reads as
//! two parts: [`scheduling`] (who works on which wallet: scans, leases, idle holds, slots) and
//! [`steps`] (what one payment goes through: build, sign, submit, confirm).
//!
//! **Scheduling.** The worker scans for source wallets with due, unfinished payments and takes a
//! lease on each (`payment_leases`: owner, epoch, expiry by the database's clock). The lease is
//! what makes "one transaction in flight per source account" hold across replicas, and its epoch
//! is a fencing token: every transition of a payment names the lease it was decided under and
//! the version of the payment it read (status, transaction hash, build number), so a worker that
//! lost its lease (paused, partitioned, slow) cannot finish, fail or reset anything. A wallet's
//! payments are processed strictly one at a time: the one in flight first, then the oldest
//! `CREATED`. A worker that dies leaves its leases to expire (`payments.lease_ms`).
//!
//! **Steps.**
//! - `CREATED`: FAILED if the user was blocked or the wallet frozen since acceptance. The
//!   sequence number is the payment's own once it has one (a rebuild reuses it, always); only
//!   the first build reads it from the account. If the account's sequence is already at or
//!   past the payment's, the payment goes back to confirming, never to building. Build, ask
//!   signerd to sign, check its hash, store the exact envelope and hash: `SIGNED`. Nothing is
//!   sent before that commit. signerd refusing stale time bounds (the build outlived
//!   `max_time`; nothing was signed) builds again with fresh bounds; signerd failing inside or
//!   unreachable waits; only a considered refusal fails the payment.
//! - `SIGNED`/`SUBMITTED`: submit the *stored* bytes. Applied → `SUCCESS` (or `FAILED` with the
//!   result codes). A final rejection (`tx_bad_auth`, ...) → `FAILED`. Anything ambiguous (504,
//!   503, network error, `tx_bad_seq`, `tx_too_late`, ...) → *confirm*.
//! - *Confirm*: look every signed hash up. Found → its outcome. If the account's sequence is at
//!   or past the payment's, find which transaction used it in the account's history: one of the
//!   payment's → its outcome; another's → every transaction of the payment is dead, rebuilt on
//!   a new sequence; history pruned or never showing it → `NEEDS_ATTENTION`. Otherwise the
//!   payment is rebuilt on the same sequence only when every read (hashes, account) comes from
//!   a node at or past a ledger that closed after `max_time` (`Latest-Ledger`); a lagging
//!   node's 404 proves nothing. Else the same bytes are resubmitted after a backoff.
//! - signerd's sequence guard refuses a different transaction for a sequence it signed until
//!   `max_time + sequence_guard_secs`, so a rebuild on the same sequence waits until then.

mod scheduling;
mod steps;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use scheduling::PaymentWake;

use crate::config::{NetworkConfig, PaymentsConfig};
use crate::metrics::Metrics;
use crate::model::{AccountId, PaymentId, SignerKeyId, WalletId};
use crate::network::Network;
use crate::signer::Signer;
use crate::store::{PaymentRecord, Store};

/// Entries kept in each of the worker's caches.
const CACHE_CAP: usize = 100_000;

/// Facts that never change once true (a wallet's key, an account's existence), remembered up to
/// [`CACHE_CAP`] entries; a full cache starts over.
struct Remembered<K, V>(Mutex<HashMap<K, V>>);

impl<K: Eq + std::hash::Hash, V: Clone> Remembered<K, V> {
    fn new() -> Self {
        Remembered(Mutex::new(HashMap::new()))
    }

    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn remember(&self, key: K, value: V) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= CACHE_CAP {
                map.clear();
            }
            map.insert(key, value);
        }
    }
}

/// What to do after one step.
enum Next {
    /// Look at the wallet's next state at once.
    Continue,
    /// The payment left the wallet's queue (`SUCCESS`, `FAILED`, `NEEDS_ATTENTION`; this step
    /// wrote it).
    Finished,
    /// Submit this payment, just signed, at once (its stored state, without reading it back).
    Submit(Box<PaymentRecord>),
    /// Come back after this long.
    Wait(Duration),
}

/// Settings the worker needs from the config.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// The network passphrase transactions are signed for.
    pub network_passphrase: String,
    /// Fee cap per operation: what every transaction bids (it pays the clearing price).
    pub max_fee_stroops: u32,
    /// How far ahead `max_time` goes.
    pub max_validity_secs: u64,
    /// signerd's guard grace after `max_time`.
    pub sequence_guard_secs: u64,
    /// Wallets processed at once.
    pub concurrency: usize,
    /// Scan interval.
    pub poll_interval: Duration,
    /// Lease length.
    pub lease: Duration,
    /// How long a wallet with nothing left to do stays with the worker.
    pub idle_hold: Duration,
    /// Confirmations of a spent sequence the history does not show before `NEEDS_ATTENTION`.
    pub attention_after_confirmations: i64,
}

impl WorkerSettings {
    /// From the config sections.
    pub fn new(network: &NetworkConfig, payments: &PaymentsConfig) -> Self {
        WorkerSettings {
            network_passphrase: network.network_passphrase.clone(),
            max_fee_stroops: network.max_fee_stroops,
            max_validity_secs: network.max_validity_secs,
            sequence_guard_secs: network.sequence_guard_secs,
            concurrency: payments.worker_concurrency,
            poll_interval: Duration::from_millis(payments.poll_interval_ms),
            lease: Duration::from_millis(payments.lease_ms),
            idle_hold: Duration::from_millis(payments.idle_hold_ms.min(payments.lease_ms / 3)),
            attention_after_confirmations: payments.attention_after_confirmations,
        }
    }
}

/// See the module documentation.
pub struct PaymentWorker {
    store: Store,
    signer: Arc<Signer>,
    network: Arc<dyn Network>,
    settings: WorkerSettings,
    metrics: Metrics,
    owner: String,
    wake: Arc<PaymentWake>,
    active: Mutex<HashSet<WalletId>>,
    /// Accounts seen to exist (destinations and sources), with the highest ledger known to
    /// reflect them: a read that showed the account, or one where a payment of its applied. A
    /// read from a node behind that ledger may show an older sequence or no account at all.
    known_accounts: Remembered<String, i64>,
    /// Per payment, a ledger that closed after the payment was accepted (plus clock skew): a
    /// read covering it shows every account that existed at acceptance, so only its 404 proves
    /// an account absent.
    absence_fences: Remembered<PaymentId, i64>,
    /// The signerd key and account of source wallets (fixed once a wallet is complete).
    sources: Remembered<WalletId, (SignerKeyId, AccountId)>,
}

impl PaymentWorker {
    /// A worker; the API tells `wake` when a payment is accepted.
    pub fn new(
        store: Store,
        signer: Arc<Signer>,
        network: Arc<dyn Network>,
        settings: WorkerSettings,
        metrics: Metrics,
        wake: Arc<PaymentWake>,
    ) -> Self {
        PaymentWorker {
            store,
            signer,
            network,
            settings,
            metrics,
            owner: format!("worker-{}", uuid::Uuid::now_v7()),
            wake,
            active: Mutex::new(HashSet::new()),
            known_accounts: Remembered::new(),
            absence_fences: Remembered::new(),
            sources: Remembered::new(),
        }
    }
}

/// 250 ms doubling per attempt, at most 5 s.
fn backoff(attempts: i64) -> Duration {
    let shift = u32::try_from(attempts.clamp(0, 5)).unwrap_or(5);
    Duration::from_millis(250u64 << shift).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(50), Duration::from_secs(5));
    }
}
