//! The simulated network behind Horizon: stellar-core's transaction queue (one transaction per
//! source account), ledger closes that apply the queue in order, Horizon's ingested history of
//! applied transactions (possibly late, see [`Faults::ingestion_delay_ledgers`]), the fee
//! statistics of recent ledgers, and friendbot.
//!
//! Everything here is synchronous and runs under one lock (see [`crate::sim`]); submitters that
//! wait for a result get a [`tokio::sync::oneshot`] receiver.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountId, Asset, ClaimClaimableBalanceOp, ClaimPredicate, ClaimableBalanceId, Claimant,
    ClaimantV0, CreateAccountOp, CreateClaimableBalanceOp, Hash, Limits, Memo, MuxedAccount,
    Operation, OperationBody, PaymentOp, Preconditions, PublicKey, SequenceNumber, Transaction,
    TransactionExt, TransactionResult, Uint256, WriteXdr,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::account::{AccountEntry, AccountKey};
use crate::amount::TOTAL_SUPPLY;
use crate::envelope::{SubmittedTransaction, TxHash};
use crate::faults::Faults;
use crate::ledger::{Applied, LedgerState, Moment, Rejection};
use crate::results;

/// How many recent ledgers `GET /fee_stats` summarises (as Horizon does).
const FEE_STATS_LEDGERS: usize = 5;

/// How many recent ledgers RPC's `getFeeStats` summarises for classic transactions
/// (stellar-rpc's `classic-fee-stats-retention-window` default).
pub const RPC_CLASSIC_FEE_LEDGERS: usize = 10;

/// How many ledgers a Horizon node may lag behind the network: the accounts of that many past
/// ledgers are kept for lagging nodes to answer from (a larger lag is served from the oldest).
pub const MAX_NODE_LAG: u32 = 64;

/// Where a client stands against the request budget (Horizon's `X-RateLimit-*` headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateStanding {
    /// Requests allowed per window.
    pub limit: u32,
    /// Requests left in this window.
    pub remaining: u32,
    /// Until the window ends.
    pub reset: Duration,
}

/// Whether a Horizon request is served or refused by the rate limit faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestAdmission {
    /// Served; the standing if a budget is in force.
    Served(Option<RateStanding>),
    /// 429 `rate_limit_exceeded`: retry after this long.
    Refused {
        /// What `Retry-After` says.
        retry_after: Duration,
        /// The standing if a budget is in force.
        standing: Option<RateStanding>,
    },
}

/// A closed ledger that is no longer the latest, as lagging Horizon nodes still see it.
struct PastLedger {
    sequence: u32,
    close_time: u64,
    accounts: Arc<BTreeMap<AccountKey, AccountEntry>>,
}

/// An applied transaction as Horizon's history holds it.
#[derive(Clone, Debug)]
pub struct TransactionRecord {
    /// The transaction as submitted.
    pub tx: Arc<SubmittedTransaction>,
    /// The ledger it was applied in.
    pub ledger: u32,
    /// That ledger's close time (Unix seconds).
    pub close_time: u64,
    /// Its position in the ledger, from 1.
    pub application_order: u32,
    /// The result core recorded.
    pub result: TransactionResult,
    /// The result as base64 XDR.
    pub result_xdr: String,
    /// The fee account's entry before and after the fee, as base64 `LedgerEntryChanges`.
    pub fee_meta_xdr: String,
    /// The `TransactionMeta` (each operation's ledger entry changes), base64.
    pub result_meta_xdr: String,
    /// The fee taken, in stroops.
    pub fee_charged: i64,
    /// Whether every operation succeeded.
    pub successful: bool,
    /// The first ledger after whose close Horizon shows the transaction.
    pub ingested_from_ledger: u32,
}

impl TransactionRecord {
    /// Horizon's paging token (its TOID): the ledger, then the position in it.
    pub fn paging_token(&self) -> i64 {
        (i64::from(self.ledger) << 32) | (i64::from(self.application_order) << 12)
    }
}

/// What a submitter waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitUntil {
    /// The ledger close that applies (or drops) the transaction.
    Applied,
    /// The moment Horizon shows the applied transaction (later, with an ingestion delay).
    Ingested,
}

/// How a queued transaction ended.
#[derive(Clone, Debug)]
pub enum Settlement {
    /// Applied (successfully or not) in a ledger.
    Applied(Arc<TransactionRecord>),
    /// Found invalid at the ledger close (e.g. its time bounds expired) and dropped, unapplied.
    Dropped(Rejection),
    /// Left out of every ledger while it was queued (outbid in a surge) and evicted, unapplied:
    /// Horizon never hears of a result and answers its submitter at the submission timeout.
    Evicted,
}

/// stellar-core's answer to a submission (`POST /tx`).
#[derive(Debug)]
pub enum Admission {
    /// Queued for the next ledger.
    Pending,
    /// This very transaction is already queued.
    Duplicate,
    /// Another transaction from the same source account is queued.
    TryAgainLater,
    /// Invalid; nothing changed.
    Rejected(Rejection),
}

/// What closing a ledger did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedLedger {
    /// The ledger's sequence number.
    pub sequence: u32,
    /// Its close time (Unix seconds).
    pub close_time: u64,
    /// The hashes applied, in order.
    pub applied: Vec<TxHash>,
    /// The hashes dropped as invalid at the close.
    pub dropped: Vec<TxHash>,
    /// The hashes evicted from the queue, left out of too many ledgers.
    pub evicted: Vec<TxHash>,
    /// How many transactions stay queued for later ledgers (over capacity).
    pub still_queued: usize,
}

/// Why friendbot did not fund an account right away.
#[derive(Debug)]
pub enum FriendbotRefusal {
    /// The account exists already.
    AlreadyFunded,
    /// Every friendbot account has a transaction queued: try after the next ledger close.
    Busy,
}

struct Queued {
    tx: Arc<SubmittedTransaction>,
    waiters: Vec<(WaitUntil, oneshot::Sender<Settlement>)>,
    /// Submitters of transactions this one replaced by fee: their sequence number is used
    /// (or they are evicted) along with this one.
    superseded: Vec<(TxHash, oneshot::Sender<Settlement>)>,
    /// The last closed ledger when it was queued.
    queued_in: u32,
}

/// Which page of an account's transactions to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionPage {
    /// Start after (ascending) or before (descending) this paging token.
    pub cursor: Option<i64>,
    /// Newest first.
    pub descending: bool,
    /// At most this many records.
    pub limit: u32,
    /// Also failed transactions (Horizon's `include_failed`).
    pub include_failed: bool,
}

/// The accounts a transaction involves, as Horizon's participants: its source, fee account,
/// operation sources and the destinations of its payments and account creations.
fn participants(tx: &SubmittedTransaction) -> Vec<AccountKey> {
    let mut accounts = vec![tx.source_account(), tx.fee_account()];
    for op in &tx.operations {
        if let Some(source) = &op.source_account {
            accounts.push(AccountKey::of_muxed(source));
        }
        match &op.body {
            OperationBody::Payment(payment) => {
                accounts.push(AccountKey::of_muxed(&payment.destination));
            }
            OperationBody::CreateAccount(create) => {
                let PublicKey::PublicKeyTypeEd25519(Uint256(key)) = &create.destination.0;
                accounts.push(AccountKey(*key));
            }
            _ => {}
        }
    }
    let mut unique = Vec::with_capacity(accounts.len());
    for account in accounts {
        if !unique.contains(&account) {
            unique.push(account);
        }
    }
    unique
}

/// A change other parties make to the ledger, applied at the next close before the queue.
enum OutsideChange {
    /// A transaction another signer of its source account submitted elsewhere: it takes the
    /// account's next sequence number.
    Transaction(Arc<SubmittedTransaction>),
    /// The account is merged into another by its owner (an `account_merge`): it is gone.
    Merge {
        /// The account that disappears.
        account: AccountKey,
        /// The account that receives its lumens.
        into: AccountKey,
    },
}

/// Whether the queue can take one more transaction.
enum QueueRoom {
    /// Yes.
    Room,
    /// No, and bidding more would not help.
    Full,
    /// Only for a bid of at least this fee (the whole transaction's, in stroops).
    OutbidBy(i64),
}

/// What the next ledger takes from the queue.
struct LedgerSelection {
    /// For each queued transaction, in queue order, whether it is in the ledger.
    included: Vec<bool>,
    /// What each included transaction pays per operation.
    clearing_rate: i64,
    /// Operations of other parties' surge demand in the ledger.
    surge_operations: u64,
}

impl LedgerSelection {
    /// How many entries other parties' operations add to the fee statistics (bounded, so a
    /// huge simulated surge costs no memory; the percentiles are what matter).
    fn surge_entries(&self) -> usize {
        usize::try_from(self.surge_operations.min(1_000)).unwrap_or(1_000)
    }
}

/// How much higher a fee rate must be to replace a queued transaction (stellar-core's
/// `TransactionQueue::FEE_MULTIPLIER`).
pub const REPLACE_BY_FEE_MULTIPLIER: i64 = 10;

/// The queue holds this many ledgers' worth of operations (core's
/// `TRANSACTION_QUEUE_SIZE_MULTIPLIER`).
const QUEUE_CAPACITY_LEDGERS: u64 = 2;

/// How many ledgers an evicted transaction is refused (`TRY_AGAIN_LATER`) after its eviction,
/// as core bans it.
pub const BAN_LEDGERS: u32 = 10;

/// Operations in `tx` (the capacity it takes).
fn operation_count(tx: &SubmittedTransaction) -> u64 {
    u64::try_from(tx.operations.len()).unwrap_or(u64::MAX)
}

/// What `tx` bids per operation (a fee bump counts one more operation, as in core).
fn fee_rate(tx: &SubmittedTransaction) -> i64 {
    tx.max_fee() / tx.fee_operation_count().max(1)
}

/// The least fee with which `replacement` may replace `queued` (core's `canReplaceByFee`):
/// [`REPLACE_BY_FEE_MULTIPLIER`] times its fee rate.
fn replacement_fee(queued: &SubmittedTransaction, replacement: &SubmittedTransaction) -> i64 {
    let old_operations = i128::from(queued.fee_operation_count().max(1));
    let new_operations = i128::from(replacement.fee_operation_count().max(1));
    let scaled =
        i128::from(REPLACE_BY_FEE_MULTIPLIER) * i128::from(queued.max_fee()) * new_operations;
    // Rounded up: the fee must reach the multiple, not fall just short of it.
    let needed = (scaled + old_operations - 1) / old_operations;
    i64::try_from(needed).unwrap_or(i64::MAX)
}

/// `tx_insufficient_fee` whose `fee_charged` is the fee that would have been enough, as core
/// reports it when a queue is full or a replacement bids too little.
fn insufficient_fee(needed: i64) -> Rejection {
    Rejection {
        result: results::transaction_result(
            needed,
            results::TxFailure::InsufficientFee.into_outer(),
        ),
        detail: None,
    }
}

/// `tx_bad_seq` with no fee: what Horizon tells the submitter of a transaction whose sequence
/// number another transaction used.
fn sequence_used() -> Rejection {
    Rejection {
        result: results::transaction_result(0, results::TxFailure::BadSeq.into_outer()),
        detail: None,
    }
}

struct LedgerFees {
    sequence: u32,
    operations: u64,
    fee_charged_per_operation: Vec<i64>,
    max_fee_per_operation: Vec<i64>,
    /// One entry per transaction, as RPC's fee window counts them: the fee charged divided by
    /// the (inner) operations.
    inclusion_fee_per_transaction: Vec<i64>,
}

/// Fee figures for `GET /fee_stats`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeeStats {
    /// The last closed ledger.
    pub last_ledger: u32,
    /// Its base fee.
    pub last_ledger_base_fee: u32,
    /// Operations in the last ledger over the ledger's capacity.
    pub ledger_capacity_usage: f64,
    /// Fees charged per operation over the recent ledgers, sorted.
    pub fee_charged: Vec<i64>,
    /// Maximum fees bid per operation over the recent ledgers, sorted.
    pub max_fee: Vec<i64>,
}

/// The network: ledger, queue, history, faults and friendbot.
pub struct Network {
    /// The ledger state.
    pub ledger: LedgerState,
    /// The faults in force.
    pub faults: Faults,
    max_operations_per_ledger: u32,
    queue: Vec<Queued>,
    records: HashMap<TxHash, Arc<TransactionRecord>>,
    applications: HashMap<TxHash, u32>,
    history: Vec<Arc<TransactionRecord>>,
    awaiting_ingestion: Vec<(Arc<TransactionRecord>, oneshot::Sender<Settlement>)>,
    recent_fees: VecDeque<LedgerFees>,
    friendbot: Friendbot,
    /// The ledgers before the latest, oldest first, at most [`MAX_NODE_LAG`] of them.
    past: VecDeque<PastLedger>,
    /// The Horizon node (an index into `faults.node_lags`) that serves the next read.
    next_node: usize,
    /// The request budget's current window: when it started and how many requests it served.
    rate_window: Option<(Instant, u32)>,
    /// Every applied transaction by the accounts that took part in it.
    by_participant: HashMap<AccountKey, Vec<Arc<TransactionRecord>>>,
    /// Transactions evicted lately, and the first ledger that accepts them again.
    banned: HashMap<TxHash, u32>,
    /// How many ledgers a queued transaction may be left out of before it is evicted.
    queue_ledgers: u32,
    /// Other parties' changes to apply at the next ledger close, before the queue.
    outside: Vec<OutsideChange>,
    /// Every closed ledger's close time, ledger 1 first.
    close_times: Vec<u64>,
    /// Transactions applied with an ingestion delay that some node may not have ingested yet
    /// (kept until every node is past their ingestion).
    late: Vec<Arc<TransactionRecord>>,
}

/// Network parameters fixed at genesis.
#[derive(Clone, Debug)]
pub struct Genesis {
    /// The network passphrase.
    pub network_passphrase: String,
    /// Base fee per operation.
    pub base_fee: u32,
    /// Base reserve.
    pub base_reserve: i64,
    /// Ledger capacity in operations.
    pub max_operations_per_ledger: u32,
    /// What friendbot gives a new account.
    pub friendbot_amount: i64,
    /// How many accounts friendbot submits from (one transaction each per ledger).
    pub friendbot_accounts: usize,
    /// How many ledgers a queued transaction may be left out of before it is evicted.
    pub queue_ledgers: u32,
    /// Ledger 1's close time.
    pub close_time: u64,
}

impl Network {
    /// A new network at ledger 1. The root account's key is derived from the network id, as
    /// stellar-core does; friendbot's accounts are funded from it.
    pub fn genesis(genesis: &Genesis) -> Self {
        let network_id: [u8; 32] = Sha256::digest(genesis.network_passphrase.as_bytes()).into();
        let root = SigningKey::from_bytes(&network_id);
        let mut ledger = LedgerState::genesis(
            network_id,
            AccountKey(root.verifying_key().to_bytes()),
            genesis.base_fee,
            genesis.base_reserve,
            genesis.close_time,
        );
        let friendbot = Friendbot::new(
            &network_id,
            genesis.friendbot_accounts,
            genesis.friendbot_amount,
        );
        let count = i64::try_from(friendbot.accounts.len().max(1)).unwrap_or(1);
        let share = TOTAL_SUPPLY / 2 / count;
        for account in &friendbot.accounts {
            ledger.insert_account(AccountKey(account.verifying_key().to_bytes()), share);
        }
        Network {
            ledger,
            faults: Faults::default(),
            max_operations_per_ledger: genesis.max_operations_per_ledger,
            queue: Vec::new(),
            records: HashMap::new(),
            applications: HashMap::new(),
            history: Vec::new(),
            awaiting_ingestion: Vec::new(),
            recent_fees: VecDeque::new(),
            friendbot,
            past: VecDeque::new(),
            next_node: 0,
            rate_window: None,
            by_participant: HashMap::new(),
            banned: HashMap::new(),
            queue_ledgers: genesis.queue_ledgers,
            outside: Vec::new(),
            close_times: vec![genesis.close_time],
            late: Vec::new(),
        }
    }

    /// Counts one Horizon request (received `now`) against the rate limit faults.
    pub fn admit_request(&mut self, now: Instant) -> RequestAdmission {
        if self.faults.rate_limited > 0 {
            self.faults.rate_limited -= 1;
            return RequestAdmission::Refused {
                retry_after: Duration::from_secs(1),
                standing: None,
            };
        }
        let limit = self.faults.rate_limit_requests;
        let window = Duration::from_millis(self.faults.rate_limit_window_ms);
        let standing = if limit > 0 && !window.is_zero() {
            let (started, used) = match self.rate_window {
                Some((started, used)) if now.saturating_duration_since(started) < window => {
                    (started, used)
                }
                _ => (now, 0),
            };
            let reset = window.saturating_sub(now.saturating_duration_since(started));
            if used >= limit {
                self.rate_window = Some((started, used));
                let standing = RateStanding {
                    limit,
                    remaining: 0,
                    reset,
                };
                return RequestAdmission::Refused {
                    retry_after: reset,
                    standing: Some(standing),
                };
            }
            self.rate_window = Some((started, used + 1));
            Some(RateStanding {
                limit,
                remaining: limit - used - 1,
                reset,
            })
        } else {
            self.rate_window = None;
            None
        };
        RequestAdmission::Served(standing)
    }

    /// Picks the Horizon node that serves the next read (round robin over
    /// [`Faults::node_lags`]) and returns the ledger that node has ingested: the latest one
    /// minus its lag, never before the oldest ledger kept.
    pub fn serving_ledger(&mut self) -> u32 {
        let lags = &self.faults.node_lags;
        if lags.is_empty() {
            return self.ledger.sequence;
        }
        let node = self.next_node % lags.len();
        let lag = lags.get(node).copied().unwrap_or(0);
        self.next_node = (node + 1) % lags.len();
        let oldest = self
            .past
            .front()
            .map_or(self.ledger.sequence, |past| past.sequence);
        self.ledger.sequence.saturating_sub(lag).max(oldest).max(1)
    }

    /// `account` as it was when `ledger` closed (the latest state for the latest ledger).
    pub fn account_at(&self, account: &AccountKey, ledger: u32) -> Option<&AccountEntry> {
        // Without lagging nodes no past state is kept: a read picked at ledger L that a close
        // overtook before it was answered is answered from the latest state (as a real node's
        // would be, a moment later), never as "no such account".
        match self.past_ledger(ledger) {
            Some(past) if ledger < self.ledger.sequence => past.accounts.get(account),
            _ => self.ledger.account(account),
        }
    }

    /// The close time of `ledger` (of the oldest kept ledger if it is older still).
    pub fn close_time_at(&self, ledger: u32) -> u64 {
        if ledger >= self.ledger.sequence {
            return self.ledger.close_time;
        }
        self.past_ledger(ledger)
            .map_or(self.ledger.close_time, |past| past.close_time)
    }

    fn past_ledger(&self, ledger: u32) -> Option<&PastLedger> {
        let oldest = self.past.front()?.sequence;
        let index = usize::try_from(ledger.saturating_sub(oldest)).ok()?;
        self.past.get(index).or_else(|| self.past.front())
    }

    /// The applied transaction named `hash` as a Horizon node that has ingested up to `ledger`
    /// shows it.
    pub fn ingested_at(&self, hash: &TxHash, ledger: u32) -> Option<&Arc<TransactionRecord>> {
        let elder = self.history_elder_ledger(ledger);
        self.records
            .get(hash)
            .filter(|record| record.ingested_from_ledger <= ledger && record.ledger >= elder)
    }

    /// The oldest ledger whose transactions a Horizon node that has ingested up to `ledger`
    /// still shows (see [`Faults::history_retention_ledgers`]).
    pub fn history_elder_ledger(&self, ledger: u32) -> u32 {
        match self.faults.history_retention_ledgers {
            0 => 1,
            kept => ledger.saturating_sub(kept - 1).max(1),
        }
    }

    /// How many operations fit in one ledger.
    pub fn max_operations_per_ledger(&self) -> u32 {
        self.max_operations_per_ledger
    }

    /// How many transactions wait for a ledger close.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Submits `tx` to the queue (stellar-core's `POST /tx`). With `wait`, also returns a
    /// receiver for how it ends (for `Pending` and `Duplicate`).
    ///
    /// As in core: one transaction per source account (another one is `TRY_AGAIN_LATER`,
    /// except a fee bump of the same sequence number bidding [`REPLACE_BY_FEE_MULTIPLIER`]×
    /// the queued fee rate, which replaces it); a transaction evicted lately is
    /// `TRY_AGAIN_LATER` (banned); and when the queue is full (other parties' surge demand
    /// counts), a bid that cannot displace the cheapest queued demand is `tx_insufficient_fee`
    /// whose `fee_charged` is the fee that would have been enough.
    pub fn admit(
        &mut self,
        tx: Arc<SubmittedTransaction>,
        wait: Option<WaitUntil>,
    ) -> (Admission, Option<oneshot::Receiver<Settlement>>) {
        let waiter = || {
            wait.map(|until| {
                let (sender, receiver) = oneshot::channel();
                ((until, sender), receiver)
            })
        };
        if let Some(queued) = self.queue.iter_mut().find(|q| q.tx.hash == tx.hash) {
            let receiver = waiter().map(|(entry, receiver)| {
                queued.waiters.push(entry);
                receiver
            });
            return (Admission::Duplicate, receiver);
        }
        if self.banned.contains_key(&tx.hash) {
            return (Admission::TryAgainLater, None);
        }
        let source = tx.source_account();
        let mut replaces = None;
        if let Some(index) = self
            .queue
            .iter()
            .position(|q| q.tx.source_account() == source)
        {
            let queued = &self.queue[index].tx;
            if tx.fee_bump.is_none() || tx.sequence != queued.sequence {
                return (Admission::TryAgainLater, None);
            }
            let needed = replacement_fee(queued, &tx);
            if tx.max_fee() < needed {
                return (Admission::Rejected(insufficient_fee(needed)), None);
            }
            replaces = Some(index);
        }
        if replaces.is_none() {
            match self.queue_room_for(&tx) {
                QueueRoom::Room => {}
                QueueRoom::Full => return (Admission::TryAgainLater, None),
                QueueRoom::OutbidBy(needed) => {
                    return (Admission::Rejected(insufficient_fee(needed)), None);
                }
            }
        }
        if let Err(rejection) = self.ledger.check_valid(&tx, self.ledger.admission_moment()) {
            return (Admission::Rejected(rejection), None);
        }
        let (waiters, receiver) = match waiter() {
            Some((entry, receiver)) => (vec![entry], Some(receiver)),
            None => (Vec::new(), None),
        };
        let entry = Queued {
            tx,
            waiters,
            superseded: Vec::new(),
            queued_in: self.ledger.sequence,
        };
        match replaces {
            Some(index) => {
                let old = std::mem::replace(&mut self.queue[index], entry);
                // The replaced transaction's submitters learn its fate when its sequence number
                // is used: Horizon answers them `tx_bad_seq`.
                let queued = &mut self.queue[index];
                queued.superseded = old.superseded;
                let old_hash = old.tx.hash;
                queued.superseded.extend(
                    old.waiters
                        .into_iter()
                        .map(|(_, sender)| (old_hash, sender)),
                );
            }
            None => self.queue.push(entry),
        }
        (Admission::Pending, receiver)
    }

    /// Whether the queue (at most [`QUEUE_CAPACITY_LEDGERS`] ledgers' worth of operations,
    /// other parties' surge demand included) can take `tx`.
    fn queue_room_for(&self, tx: &SubmittedTransaction) -> QueueRoom {
        let limit = u64::from(self.max_operations_per_ledger) * QUEUE_CAPACITY_LEDGERS;
        let surge = u64::from(self.faults.surge_operations);
        let queued: u64 = self.queue.iter().map(|q| operation_count(&q.tx)).sum();
        let needed = operation_count(tx);
        if queued + surge + needed <= limit {
            return QueueRoom::Room;
        }
        // Only other parties' demand can be displaced here; it goes if `tx` bids more.
        if queued + needed > limit || surge == 0 {
            return QueueRoom::Full;
        }
        let surge_rate = self.surge_fee_rate();
        if fee_rate(tx) > surge_rate {
            QueueRoom::Room
        } else {
            QueueRoom::OutbidBy((surge_rate + 1).saturating_mul(tx.fee_operation_count().max(1)))
        }
    }

    /// What other parties bid per operation during a surge (never under the base fee).
    fn surge_fee_rate(&self) -> i64 {
        i64::from(self.faults.surge_fee.max(self.ledger.base_fee))
    }

    /// Waits for `hash` if it is queued (a submitter joining an earlier submission).
    pub fn wait_for_queued(
        &mut self,
        hash: &TxHash,
        until: WaitUntil,
    ) -> Option<oneshot::Receiver<Settlement>> {
        let queued = self.queue.iter_mut().find(|q| q.tx.hash == *hash)?;
        let (sender, receiver) = oneshot::channel();
        queued.waiters.push((until, sender));
        Some(receiver)
    }

    /// Closes the next ledger at `close_time`: picks what fits the ledger's operation capacity,
    /// applies it, drops the transactions no longer valid, evicts those queued too long, and
    /// makes due transactions visible to Horizon.
    ///
    /// While demand (the queue plus other parties' [`Faults::surge_operations`]) fits, every
    /// queued transaction is applied in arrival order at the base fee. Past capacity it is a
    /// surge: the highest bids per operation win (the gateway's transactions before other
    /// parties' on a tie), and everyone included pays the lowest included bid per operation,
    /// the clearing price.
    pub fn close_ledger(&mut self, close_time: u64) -> ClosedLedger {
        // Past states cost a copy of every account per ledger: they are kept only while some
        // node lags (a node that starts lagging stalls until it is as far behind as it should).
        if self.faults.node_lags.iter().any(|lag| *lag > 0) {
            self.past.push_back(PastLedger {
                sequence: self.ledger.sequence,
                close_time: self.ledger.close_time,
                accounts: Arc::new(self.ledger.accounts_snapshot()),
            });
            while self.past.len() > MAX_NODE_LAG as usize {
                self.past.pop_front();
            }
        } else {
            self.past.clear();
        }
        let selection = self.select_for_ledger();
        let at = self.ledger.begin_ledger(close_time);
        self.close_times.push(at.close_time);
        let delay = self.faults.ingestion_delay_ledgers;
        let mut closed = ClosedLedger {
            sequence: at.ledger,
            close_time: at.close_time,
            applied: Vec::new(),
            dropped: Vec::new(),
            evicted: Vec::new(),
            still_queued: 0,
        };
        self.apply_outside_changes(at, &mut closed);
        let mut fees = LedgerFees {
            sequence: at.ledger,
            operations: selection.surge_operations,
            fee_charged_per_operation: vec![selection.clearing_rate; selection.surge_entries()],
            max_fee_per_operation: vec![self.surge_fee_rate(); selection.surge_entries()],
            // Other parties' demand is one-operation transactions.
            inclusion_fee_per_transaction: vec![selection.clearing_rate; selection.surge_entries()],
        };
        let mut deferred = Vec::new();
        for (queued, included) in std::mem::take(&mut self.queue)
            .into_iter()
            .zip(selection.included)
        {
            if !included {
                let waited = at.ledger.saturating_sub(queued.queued_in);
                if waited >= self.queue_ledgers {
                    closed.evicted.push(queued.tx.hash);
                    self.banned
                        .insert(queued.tx.hash, at.ledger.saturating_add(BAN_LEDGERS));
                    for (_, sender) in queued.waiters {
                        let _ = sender.send(Settlement::Evicted);
                    }
                    for (_, sender) in queued.superseded {
                        let _ = sender.send(Settlement::Evicted);
                    }
                } else {
                    deferred.push(queued);
                }
                continue;
            }
            match self
                .ledger
                .apply_at_rate(&queued.tx, at, selection.clearing_rate)
            {
                Ok(applied) => {
                    let operations = operation_count(&queued.tx);
                    let fee_operations = queued.tx.fee_operation_count().max(1);
                    fees.operations += operations;
                    fees.fee_charged_per_operation
                        .push(applied.fee_charged / fee_operations);
                    fees.max_fee_per_operation
                        .push(queued.tx.max_fee() / fee_operations);
                    fees.inclusion_fee_per_transaction
                        .push(applied.fee_charged / i64::try_from(operations.max(1)).unwrap_or(1));
                    let record = self.record_applied(&queued.tx, applied, at, &mut closed);
                    for (until, sender) in queued.waiters {
                        if until == WaitUntil::Applied || delay == 0 {
                            let _ = sender.send(Settlement::Applied(record.clone()));
                        } else {
                            self.awaiting_ingestion.push((record.clone(), sender));
                        }
                    }
                    // A fee bump of the replaced transaction applied it: Horizon finds it by its
                    // (inner) hash. Anything else used its sequence number.
                    for (hash, sender) in queued.superseded {
                        let named = record.tx.hash == hash || record.tx.inner_hash() == Some(hash);
                        let _ = sender.send(if named {
                            Settlement::Applied(record.clone())
                        } else {
                            Settlement::Dropped(sequence_used())
                        });
                    }
                }
                Err(rejection) => {
                    closed.dropped.push(queued.tx.hash);
                    for (_, sender) in queued.waiters {
                        let _ = sender.send(Settlement::Dropped(rejection.clone()));
                    }
                    for (_, sender) in queued.superseded {
                        let _ = sender.send(Settlement::Dropped(rejection.clone()));
                    }
                }
            }
        }
        closed.still_queued = deferred.len();
        self.queue = deferred;
        let sequence = self.ledger.sequence;
        self.banned.retain(|_, until| *until > sequence);
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.awaiting_ingestion)
            .into_iter()
            .partition(|(record, _)| record.ingested_from_ledger <= sequence);
        self.awaiting_ingestion = later;
        for (record, sender) in due {
            let _ = sender.send(Settlement::Applied(record));
        }
        self.recent_fees.push_back(fees);
        while self.recent_fees.len() > FEE_STATS_LEDGERS.max(RPC_CLASSIC_FEE_LEDGERS) {
            self.recent_fees.pop_front();
        }
        // A late transaction is kept while a node lagging at most MAX_NODE_LAG ledgers may not
        // have ingested it.
        self.late
            .retain(|record| record.ingested_from_ledger.saturating_add(MAX_NODE_LAG) > sequence);
        closed
    }

    /// Which queued transactions the next ledger takes, and at what price.
    fn select_for_ledger(&self) -> LedgerSelection {
        let capacity = u64::from(self.max_operations_per_ledger);
        let base_rate = i64::from(self.ledger.base_fee);
        let surge = u64::from(self.faults.surge_operations);
        let demand: u64 = self
            .queue
            .iter()
            .map(|q| operation_count(&q.tx))
            .sum::<u64>()
            + surge;
        if demand <= capacity {
            return LedgerSelection {
                included: vec![true; self.queue.len()],
                clearing_rate: base_rate,
                surge_operations: surge,
            };
        }
        // Highest bid per operation first; a stable sort keeps arrival order among equals.
        let mut order: Vec<usize> = (0..self.queue.len()).collect();
        order.sort_by_key(|index| std::cmp::Reverse(fee_rate(&self.queue[*index].tx)));
        let surge_rate = self.surge_fee_rate();
        let mut included = vec![false; self.queue.len()];
        let mut room = capacity;
        let mut surge_left = surge;
        let mut surge_taken = 0;
        let mut clearing_rate = i64::MAX;
        for index in order {
            let tx = &self.queue[index].tx;
            let rate = fee_rate(tx);
            if surge_left > 0 && surge_rate > rate {
                let taken = surge_left.min(room);
                if taken > 0 {
                    clearing_rate = clearing_rate.min(surge_rate);
                }
                surge_taken += taken;
                room -= taken;
                surge_left = 0;
            }
            let operations = operation_count(tx);
            if operations <= room {
                room -= operations;
                included[index] = true;
                clearing_rate = clearing_rate.min(rate);
            }
        }
        if surge_left > 0 && room > 0 {
            surge_taken += surge_left.min(room);
            clearing_rate = clearing_rate.min(surge_rate);
        }
        LedgerSelection {
            included,
            clearing_rate: if clearing_rate == i64::MAX {
                base_rate
            } else {
                clearing_rate.max(base_rate)
            },
            surge_operations: surge_taken,
        }
    }

    /// Records `tx`, applied in ledger `at`, in the history and in `closed`.
    fn record_applied(
        &mut self,
        tx: &Arc<SubmittedTransaction>,
        applied: Applied,
        at: Moment,
        closed: &mut ClosedLedger,
    ) -> Arc<TransactionRecord> {
        let record = Arc::new(TransactionRecord {
            ledger: at.ledger,
            close_time: at.close_time,
            application_order: u32::try_from(closed.applied.len() + 1).unwrap_or(u32::MAX),
            result_xdr: applied
                .result
                .to_xdr_base64(Limits::none())
                .unwrap_or_default(),
            successful: results::is_success(&applied.result),
            result: applied.result,
            fee_meta_xdr: applied.fee_meta_xdr,
            result_meta_xdr: applied.result_meta_xdr,
            fee_charged: applied.fee_charged,
            ingested_from_ledger: at
                .ledger
                .saturating_add(self.faults.ingestion_delay_ledgers),
            tx: tx.clone(),
        });
        self.record(&record);
        closed.applied.push(record.tx.hash);
        record
    }

    /// Applies other parties' changes in ledger `at`, first: their transactions take their
    /// sequence numbers before anything queued here can.
    fn apply_outside_changes(&mut self, at: Moment, closed: &mut ClosedLedger) {
        let base_rate = i64::from(self.ledger.base_fee);
        for change in std::mem::take(&mut self.outside) {
            match change {
                OutsideChange::Transaction(tx) => {
                    match self.ledger.apply_at_rate(&tx, at, base_rate) {
                        Ok(applied) => {
                            self.record_applied(&tx, applied, at, closed);
                        }
                        Err(_) => closed.dropped.push(tx.hash),
                    }
                }
                OutsideChange::Merge { account, into } => {
                    self.ledger.merge_account(&account, &into, at);
                }
            }
        }
    }

    /// Another signer of `account` uses its next sequence number (a 1-stroop payment to
    /// itself, paying the base fee) in the next ledger, ahead of anything queued. `None` if the
    /// account does not exist.
    pub fn consume_sequence(&mut self, account: AccountKey) -> Option<Arc<SubmittedTransaction>> {
        self.outside_payment(account, account.to_muxed(), 1, Memo::None)
    }

    /// Another holder of `account` pays `amount` stroops to `to` (which must exist; a muxed
    /// `M...` destination pays its base account) in the next ledger, ahead of anything queued,
    /// with `memo`: a deposit from a party the simulator's clients do not control. `None` if
    /// `account` does not exist.
    pub fn outside_payment(
        &mut self,
        account: AccountKey,
        to: MuxedAccount,
        amount: i64,
        memo: Memo,
    ) -> Option<Arc<SubmittedTransaction>> {
        let payment = OperationBody::Payment(PaymentOp {
            destination: to,
            asset: Asset::Native,
            amount,
        });
        self.outside_transaction(account, vec![(None, payment)], memo)
    }

    /// Another holder of `account` creates a claimable balance of `amount` stroops that
    /// `claimant` may claim unconditionally, in the next ledger ahead of anything queued. The
    /// transaction and the balance's id (its hash); `None` if `account` does not exist.
    pub fn outside_claimable_balance(
        &mut self,
        account: AccountKey,
        claimant: AccountKey,
        amount: i64,
    ) -> Option<(Arc<SubmittedTransaction>, [u8; 32])> {
        let create = OperationBody::CreateClaimableBalance(CreateClaimableBalanceOp {
            asset: Asset::Native,
            amount,
            claimants: vec![Claimant::ClaimantTypeV0(ClaimantV0 {
                destination: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(claimant.0))),
                predicate: ClaimPredicate::Unconditional,
            })]
            .try_into()
            .unwrap_or_default(),
        });
        let tx = self.outside_transaction(account, vec![(None, create)], Memo::None)?;
        let id = crate::ledger::claimable_balance_id(account, tx.sequence, 0);
        Some((tx, id))
    }

    /// `claimant`'s owner claims balance `id` in the next ledger, ahead of anything queued, in
    /// a transaction `submitter` sends and pays for (the claim is the operation of `claimant`,
    /// its source; with `submitter == claimant` a plain transaction of the claimant's).
    /// `None` if either account does not exist.
    pub fn outside_claim(
        &mut self,
        submitter: AccountKey,
        claimant: AccountKey,
        id: [u8; 32],
    ) -> Option<Arc<SubmittedTransaction>> {
        self.ledger.account(&claimant)?;
        let claim = OperationBody::ClaimClaimableBalance(ClaimClaimableBalanceOp {
            balance_id: ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(id)),
        });
        let op_source = (submitter != claimant).then_some(claimant);
        self.outside_transaction(submitter, vec![(op_source, claim)], Memo::None)
    }

    /// A transaction of `account` with `operations` (each with its own source, if any), signed
    /// by other signers of the accounts involved (outside the simulator's clients), applied in
    /// the next ledger ahead of anything queued.
    fn outside_transaction(
        &mut self,
        account: AccountKey,
        operations: Vec<(Option<AccountKey>, OperationBody)>,
        memo: Memo,
    ) -> Option<Arc<SubmittedTransaction>> {
        let current = self.ledger.account(&account)?.sequence;
        let pending = self
            .outside
            .iter()
            .filter(|change| {
                matches!(change, OutsideChange::Transaction(tx) if tx.source_account() == account)
            })
            .count();
        let sequence = current
            .saturating_add(1)
            .saturating_add(i64::try_from(pending).unwrap_or(i64::MAX));
        let network_id = self.ledger.network_id();
        let other_signer = |of: AccountKey| {
            let seed: [u8; 32] = Sha256::new()
                .chain_update(network_id)
                .chain_update(b"horizon-sim other signer")
                .chain_update(of.0)
                .finalize()
                .into();
            SigningKey::from_bytes(&seed)
        };
        let mut signing_accounts = vec![account];
        for (source, _) in &operations {
            if let Some(source) = source
                && !signing_accounts.contains(source)
            {
                signing_accounts.push(*source);
            }
        }
        let signers: Vec<SigningKey> = signing_accounts.iter().map(|a| other_signer(*a)).collect();
        let unsigned = Transaction {
            source_account: account.to_muxed(),
            fee: self
                .ledger
                .base_fee
                .saturating_mul(u32::try_from(operations.len()).unwrap_or(u32::MAX)),
            seq_num: SequenceNumber(sequence),
            cond: Preconditions::None,
            memo,
            operations: operations
                .into_iter()
                .map(|(source, body)| Operation {
                    source_account: source.map(AccountKey::to_muxed),
                    body,
                })
                .collect::<Vec<_>>()
                .try_into()
                .unwrap_or_default(),
            ext: TransactionExt::V0,
        };
        let signer_refs: Vec<&SigningKey> = signers.iter().collect();
        let mut tx = SubmittedTransaction::sign(unsigned, network_id, &signer_refs).ok()?;
        // The simulator keeps no signer lists: another signer's signature counts as its
        // account's, as it would with that signer added to the account.
        tx.signers = signing_accounts.into_iter().map(Some).collect();
        let tx = Arc::new(tx);
        self.outside.push(OutsideChange::Transaction(tx.clone()));
        Some(tx)
    }

    /// `account` is merged into `into` at the next ledger close (its owner's `account_merge`,
    /// outside the simulator's clients). False if either does not exist or they are the same.
    pub fn merge_account(&mut self, account: AccountKey, into: AccountKey) -> bool {
        if account == into
            || self.ledger.account(&account).is_none()
            || self.ledger.account(&into).is_none()
        {
            return false;
        }
        self.outside.push(OutsideChange::Merge { account, into });
        true
    }

    fn record(&mut self, record: &Arc<TransactionRecord>) {
        if record.ingested_from_ledger > record.ledger {
            self.late.push(record.clone());
        }
        let mut hashes = vec![record.tx.hash];
        hashes.extend(record.tx.inner_hash());
        for hash in hashes {
            self.records.insert(hash, record.clone());
            *self.applications.entry(hash).or_default() += 1;
        }
        for account in participants(&record.tx) {
            self.by_participant
                .entry(account)
                .or_default()
                .push(record.clone());
        }
        self.history.push(record.clone());
    }

    /// The transactions `account` took part in (Horizon's `/accounts/{id}/transactions`) as a
    /// node that has ingested up to `ledger` shows them: in ledger order, from after `cursor`
    /// (a paging token) in `order`, at most `limit`, failed ones only if `include_failed`.
    pub fn account_transactions(
        &self,
        account: &AccountKey,
        ledger: u32,
        page: &TransactionPage,
    ) -> Vec<Arc<TransactionRecord>> {
        let elder = self.history_elder_ledger(ledger);
        let visible = self
            .by_participant
            .get(account)
            .into_iter()
            .flatten()
            .filter(|record| record.ingested_from_ledger <= ledger && record.ledger >= elder)
            .filter(|record| record.successful || page.include_failed);
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        match (page.descending, page.cursor) {
            (false, cursor) => visible
                .filter(|record| cursor.is_none_or(|after| record.paging_token() > after))
                .take(limit)
                .cloned()
                .collect(),
            (true, cursor) => {
                let mut records: Vec<_> = visible
                    .filter(|record| cursor.is_none_or(|before| record.paging_token() < before))
                    .cloned()
                    .collect();
                records.reverse();
                records.truncate(limit);
                records
            }
        }
    }

    /// The applied transaction named `hash` (outer or inner), whether Horizon shows it yet or not.
    pub fn applied(&self, hash: &TxHash) -> Option<&Arc<TransactionRecord>> {
        self.records.get(hash)
    }

    /// The applied transaction named `hash` if Horizon has ingested it.
    pub fn ingested(&self, hash: &TxHash) -> Option<&Arc<TransactionRecord>> {
        self.ingested_at(hash, self.ledger.sequence)
    }

    /// How many times the transaction named `hash` has been applied.
    pub fn applications(&self, hash: &TxHash) -> u32 {
        self.applications.get(hash).copied().unwrap_or(0)
    }

    /// Every applied transaction, in ledger order.
    pub fn history(&self) -> &[Arc<TransactionRecord>] {
        &self.history
    }

    /// The applied transactions of ledgers `first..=last`, in ledger and application order.
    pub fn transactions_in_ledgers(&self, first: u32, last: u32) -> &[Arc<TransactionRecord>] {
        let start = self.history.partition_point(|record| record.ledger < first);
        let end = self.history.partition_point(|record| record.ledger <= last);
        self.history.get(start..end.max(start)).unwrap_or_default()
    }

    /// The close time of ledger `sequence`, if it has closed.
    pub fn ledger_close_time(&self, sequence: u32) -> Option<u64> {
        let index = usize::try_from(sequence.checked_sub(1)?).ok()?;
        self.close_times.get(index).copied()
    }

    /// The latest ledger an RPC node whose core is at `node_ledger` has ingested into its
    /// store. RPC ingests whole ledgers, so a transaction that ingests late (see
    /// [`Faults::ingestion_delay_ledgers`]) holds back the node's latest ledger instead of
    /// going missing from a ledger it reports: a `NOT_FOUND` next to a `latestLedger` is the
    /// truth about every ledger up to it.
    pub fn rpc_ingested_ledger(&self, node_ledger: u32) -> u32 {
        self.late
            .iter()
            .filter(|record| {
                record.ledger <= node_ledger && node_ledger < record.ingested_from_ledger
            })
            .map(|record| record.ledger.saturating_sub(1))
            .fold(node_ledger, u32::min)
            .max(1)
    }

    /// RPC's classic fee window as a node that has ingested up to `ledger` holds it: every
    /// transaction's inclusion fee per operation over the last [`RPC_CLASSIC_FEE_LEDGERS`]
    /// ledgers (sorted), and how many ledgers that is.
    pub fn rpc_inclusion_fees(&self, ledger: u32) -> (Vec<i64>, u32) {
        let window: Vec<&LedgerFees> = self
            .recent_fees
            .iter()
            .filter(|fees| fees.sequence <= ledger)
            .rev()
            .take(RPC_CLASSIC_FEE_LEDGERS)
            .collect();
        let mut fees: Vec<i64> = window
            .iter()
            .flat_map(|fees| fees.inclusion_fee_per_transaction.iter().copied())
            .collect();
        fees.sort_unstable();
        (fees, u32::try_from(window.len()).unwrap_or(u32::MAX))
    }

    /// Fee statistics over the recent ledgers.
    pub fn fee_stats(&self) -> FeeStats {
        let mut fee_charged: Vec<i64> = self
            .recent_fees
            .iter()
            .rev()
            .take(FEE_STATS_LEDGERS)
            .flat_map(|l| l.fee_charged_per_operation.iter().copied())
            .collect();
        let mut max_fee: Vec<i64> = self
            .recent_fees
            .iter()
            .rev()
            .take(FEE_STATS_LEDGERS)
            .flat_map(|l| l.max_fee_per_operation.iter().copied())
            .collect();
        fee_charged.sort_unstable();
        max_fee.sort_unstable();
        let last_operations = self
            .recent_fees
            .back()
            .filter(|l| l.sequence == self.ledger.sequence)
            .map(|l| l.operations)
            .unwrap_or(0);
        FeeStats {
            last_ledger: self.ledger.sequence,
            last_ledger_base_fee: self.ledger.base_fee,
            ledger_capacity_usage: last_operations as f64
                / f64::from(self.max_operations_per_ledger.max(1)),
            fee_charged,
            max_fee,
        }
    }

    /// Drops every waiter (shutdown): their submitters see the wait end without a result.
    pub fn abandon_waiters(&mut self) {
        for queued in &mut self.queue {
            queued.waiters.clear();
        }
        self.awaiting_ingestion.clear();
    }

    /// An unsigned transaction from a friendbot account with nothing queued, creating
    /// `destination` with friendbot's amount, and the key to sign it with. Successive calls start
    /// from successive friendbot accounts, so concurrent requests rarely pick the same one.
    pub fn friendbot_transaction(
        &mut self,
        destination: AccountKey,
    ) -> Result<(Transaction, SigningKey), FriendbotRefusal> {
        if self.ledger.account(&destination).is_some() {
            return Err(FriendbotRefusal::AlreadyFunded);
        }
        let count = self.friendbot.accounts.len();
        let start = self.friendbot.next;
        self.friendbot.next = (start + 1) % count.max(1);
        let busy = |key: &AccountKey| self.queue.iter().any(|q| q.tx.source_account() == *key);
        let (signing_key, source, sequence) = (0..count)
            .filter_map(|offset| self.friendbot.accounts.get((start + offset) % count))
            .map(|k| (k, AccountKey(k.verifying_key().to_bytes())))
            .filter(|(_, key)| !busy(key))
            .find_map(|(k, key)| {
                self.ledger
                    .account(&key)
                    .map(|entry| (k.clone(), key, entry.sequence))
            })
            .ok_or(FriendbotRefusal::Busy)?;
        let tx = Transaction {
            source_account: source.to_muxed(),
            fee: self.ledger.base_fee,
            seq_num: SequenceNumber(sequence.saturating_add(1)),
            cond: Preconditions::None,
            memo: Memo::None,
            operations: vec![Operation {
                source_account: None,
                body: OperationBody::CreateAccount(CreateAccountOp {
                    destination: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(destination.0))),
                    starting_balance: self.friendbot.amount,
                }),
            }]
            .try_into()
            .unwrap_or_default(),
            ext: TransactionExt::V0,
        };
        Ok((tx, signing_key))
    }

    /// The accounts friendbot submits from.
    pub fn friendbot_accounts(&self) -> Vec<AccountKey> {
        self.friendbot
            .accounts
            .iter()
            .map(|k| AccountKey(k.verifying_key().to_bytes()))
            .collect()
    }
}

/// Friendbot's accounts: like testnet's friendbot, several accounts so that several accounts can
/// be funded in one ledger. Their keys are derived from the network id, so they are stable.
struct Friendbot {
    accounts: Vec<SigningKey>,
    amount: i64,
    /// The account the next request tries first.
    next: usize,
}

impl Friendbot {
    fn new(network_id: &[u8; 32], count: usize, amount: i64) -> Self {
        let accounts = (0..count)
            .map(|index| {
                let seed: [u8; 32] = Sha256::new()
                    .chain_update(network_id)
                    .chain_update(b"horizon-sim friendbot")
                    .chain_update(index.to_be_bytes())
                    .finalize()
                    .into();
                SigningKey::from_bytes(&seed)
            })
            .collect();
        Friendbot {
            accounts,
            amount,
            next: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> Network {
        Network::genesis(&Genesis {
            network_passphrase: "Test SDF Network ; September 2015".into(),
            base_fee: 100,
            base_reserve: 5_000_000,
            max_operations_per_ledger: 1_000,
            friendbot_amount: 100_000_000_000,
            friendbot_accounts: 1,
            queue_ledgers: 4,
            close_time: 1_000,
        })
    }

    #[test]
    fn a_read_overtaken_by_a_close_still_finds_the_account_without_lagging_nodes() {
        let mut network = network();
        let account = AccountKey([5; 32]);
        assert!(network.ledger.insert_account(account, 50_000_000));
        let picked = network.serving_ledger();
        network.close_ledger(1_005);
        assert!(picked < network.ledger.sequence);
        assert!(network.account_at(&account, picked).is_some());
    }

    #[test]
    fn a_lagging_node_answers_from_the_ledger_it_is_at() {
        let mut network = network();
        let account = AccountKey([6; 32]);
        network.faults.node_lags = vec![1];
        network.close_ledger(1_005);
        let before = network.ledger.sequence;
        assert!(network.ledger.insert_account(account, 50_000_000));
        network.close_ledger(1_010);
        let picked = network.serving_ledger();
        assert_eq!(picked, before);
        // Inserted while `before` was the latest ledger: the state kept for it includes it.
        assert!(network.account_at(&account, picked).is_some());
        assert!(network.account_at(&account, picked - 1).is_none());
    }
}
