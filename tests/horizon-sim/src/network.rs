//! The simulated network behind Horizon: stellar-core's transaction queue (one transaction per
//! source account), ledger closes that apply the queue in order, Horizon's ingested history of
//! applied transactions (possibly late, see [`Faults::ingestion_delay_ledgers`]), the fee
//! statistics of recent ledgers, and friendbot.
//!
//! Everything here is synchronous and runs under one lock (see [`crate::sim`]); submitters that
//! wait for a result get a [`tokio::sync::oneshot`] receiver.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountId, CreateAccountOp, Limits, Memo, Operation, OperationBody, Preconditions, PublicKey,
    SequenceNumber, Transaction, TransactionExt, TransactionResult, Uint256, WriteXdr,
};
use tokio::sync::oneshot;

use crate::account::AccountKey;
use crate::amount::TOTAL_SUPPLY;
use crate::envelope::{SubmittedTransaction, TxHash};
use crate::faults::Faults;
use crate::ledger::{LedgerState, Rejection};
use crate::results;

/// How many recent ledgers `GET /fee_stats` summarises (as Horizon does).
const FEE_STATS_LEDGERS: usize = 5;

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
    /// The fee taken, in stroops.
    pub fee_charged: i64,
    /// Whether every operation succeeded.
    pub successful: bool,
    /// The first ledger after whose close Horizon shows the transaction.
    pub ingested_from_ledger: u32,
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
}

struct LedgerFees {
    sequence: u32,
    operations: u64,
    fee_charged_per_operation: Vec<i64>,
    max_fee_per_operation: Vec<i64>,
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
        }
    }

    /// How many transactions wait for a ledger close.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Submits `tx` to the queue (stellar-core's `POST /tx`). With `wait`, also returns a
    /// receiver for how it ends (for `Pending` and `Duplicate`).
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
        let source = tx.source_account();
        if self.queue.iter().any(|q| q.tx.source_account() == source) {
            return (Admission::TryAgainLater, None);
        }
        if let Err(rejection) = self.ledger.check_valid(&tx, self.ledger.admission_moment()) {
            return (Admission::Rejected(rejection), None);
        }
        let (waiters, receiver) = match waiter() {
            Some((entry, receiver)) => (vec![entry], Some(receiver)),
            None => (Vec::new(), None),
        };
        self.queue.push(Queued { tx, waiters });
        (Admission::Pending, receiver)
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

    /// Closes the next ledger at `close_time`: applies queued transactions in order up to the
    /// ledger's operation capacity, drops the ones no longer valid, and makes due transactions
    /// visible to Horizon.
    pub fn close_ledger(&mut self, close_time: u64) -> ClosedLedger {
        let at = self.ledger.begin_ledger(close_time);
        let delay = self.faults.ingestion_delay_ledgers;
        let mut capacity = u64::from(self.max_operations_per_ledger);
        let mut closed = ClosedLedger {
            sequence: at.ledger,
            close_time: at.close_time,
            applied: Vec::new(),
            dropped: Vec::new(),
            still_queued: 0,
        };
        let mut fees = LedgerFees {
            sequence: at.ledger,
            operations: 0,
            fee_charged_per_operation: Vec::new(),
            max_fee_per_operation: Vec::new(),
        };
        let mut deferred = Vec::new();
        for queued in std::mem::take(&mut self.queue) {
            let operations = u64::try_from(queued.tx.operations.len()).unwrap_or(u64::MAX);
            if operations > capacity {
                deferred.push(queued);
                continue;
            }
            match self.ledger.apply(&queued.tx, at) {
                Ok(applied) => {
                    capacity -= operations;
                    let fee_operations = queued.tx.fee_operation_count().max(1);
                    fees.operations += operations;
                    fees.fee_charged_per_operation
                        .push(applied.fee_charged / fee_operations);
                    fees.max_fee_per_operation
                        .push(queued.tx.max_fee() / fee_operations);
                    let record = Arc::new(TransactionRecord {
                        ledger: at.ledger,
                        close_time: at.close_time,
                        application_order: u32::try_from(closed.applied.len() + 1)
                            .unwrap_or(u32::MAX),
                        result_xdr: applied
                            .result
                            .to_xdr_base64(Limits::none())
                            .unwrap_or_default(),
                        successful: results::is_success(&applied.result),
                        result: applied.result,
                        fee_meta_xdr: applied.fee_meta_xdr,
                        fee_charged: applied.fee_charged,
                        ingested_from_ledger: at.ledger.saturating_add(delay),
                        tx: queued.tx.clone(),
                    });
                    self.record(&record);
                    closed.applied.push(record.tx.hash);
                    for (until, sender) in queued.waiters {
                        if until == WaitUntil::Applied || delay == 0 {
                            let _ = sender.send(Settlement::Applied(record.clone()));
                        } else {
                            self.awaiting_ingestion.push((record.clone(), sender));
                        }
                    }
                }
                Err(rejection) => {
                    closed.dropped.push(queued.tx.hash);
                    for (_, sender) in queued.waiters {
                        let _ = sender.send(Settlement::Dropped(rejection.clone()));
                    }
                }
            }
        }
        closed.still_queued = deferred.len();
        self.queue = deferred;
        let sequence = self.ledger.sequence;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.awaiting_ingestion)
            .into_iter()
            .partition(|(record, _)| record.ingested_from_ledger <= sequence);
        self.awaiting_ingestion = later;
        for (record, sender) in due {
            let _ = sender.send(Settlement::Applied(record));
        }
        self.recent_fees.push_back(fees);
        while self.recent_fees.len() > FEE_STATS_LEDGERS {
            self.recent_fees.pop_front();
        }
        closed
    }

    fn record(&mut self, record: &Arc<TransactionRecord>) {
        let mut hashes = vec![record.tx.hash];
        hashes.extend(record.tx.inner_hash());
        for hash in hashes {
            self.records.insert(hash, record.clone());
            *self.applications.entry(hash).or_default() += 1;
        }
        self.history.push(record.clone());
    }

    /// The applied transaction named `hash` (outer or inner), whether Horizon shows it yet or not.
    pub fn applied(&self, hash: &TxHash) -> Option<&Arc<TransactionRecord>> {
        self.records.get(hash)
    }

    /// The applied transaction named `hash` if Horizon has ingested it.
    pub fn ingested(&self, hash: &TxHash) -> Option<&Arc<TransactionRecord>> {
        self.records
            .get(hash)
            .filter(|record| record.ingested_from_ledger <= self.ledger.sequence)
    }

    /// How many times the transaction named `hash` has been applied.
    pub fn applications(&self, hash: &TxHash) -> u32 {
        self.applications.get(hash).copied().unwrap_or(0)
    }

    /// Every applied transaction, in ledger order.
    pub fn history(&self) -> &[Arc<TransactionRecord>] {
        &self.history
    }

    /// Fee statistics over the recent ledgers.
    pub fn fee_stats(&self) -> FeeStats {
        let mut fee_charged: Vec<i64> = self
            .recent_fees
            .iter()
            .flat_map(|l| l.fee_charged_per_operation.iter().copied())
            .collect();
        let mut max_fee: Vec<i64> = self
            .recent_fees
            .iter()
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
