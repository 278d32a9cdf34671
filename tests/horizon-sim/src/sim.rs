//! The running simulator: [`HorizonSim::start`] binds the HTTP server, starts the ledger timer,
//! and returns the handle tests drive (close ledgers, inject faults, inspect balances).
//!
//! All state lives in one [`Network`] behind one mutex, never held across an `await`; watch
//! channels tell waiting submitters about ledger closes, queue changes and shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::account::AccountKey;
use crate::amount::format_stroops;
use crate::config::SimConfig;
use crate::envelope::{SubmittedTransaction, TxHash};
use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::http;
use crate::network::{Admission, ClosedLedger, Genesis, Network, Settlement, WaitUntil};

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// State shared by the HTTP handlers, the ledger timer and the handle.
pub(crate) struct Shared {
    network: Mutex<Network>,
    pub(crate) config: SimConfig,
    pub(crate) base_url: String,
    /// The separate friendbot's base URL, when Horizon redirects to one.
    pub(crate) friendbot_url: Option<String>,
    ledger_closed: watch::Sender<u32>,
    queue_length: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    /// The network. A panic while holding the lock cannot leave it half-updated in a way that
    /// matters to a test double, so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Network> {
        self.network.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Submits to the queue (see [`Network::admit`]).
    pub(crate) fn admit(
        &self,
        tx: Arc<SubmittedTransaction>,
        wait: Option<WaitUntil>,
    ) -> (Admission, Option<oneshot::Receiver<Settlement>>) {
        let mut network = self.lock();
        self.admit_locked(&mut network, tx, wait)
    }

    /// [`Shared::admit`] with the lock already held.
    pub(crate) fn admit_locked(
        &self,
        network: &mut Network,
        tx: Arc<SubmittedTransaction>,
        wait: Option<WaitUntil>,
    ) -> (Admission, Option<oneshot::Receiver<Settlement>>) {
        let admitted = network.admit(tx, wait);
        self.queue_length.send_replace(network.queue_len());
        admitted
    }

    /// Closes a ledger at `close_time` (default: now) and wakes whoever waits for one.
    pub(crate) fn close_ledger(&self, close_time: Option<u64>) -> ClosedLedger {
        let closed = {
            let mut network = self.lock();
            let closed = network.close_ledger(close_time.unwrap_or_else(unix_now));
            self.queue_length.send_replace(network.queue_len());
            closed
        };
        self.ledger_closed.send_replace(closed.sequence);
        if !closed.applied.is_empty() || !closed.dropped.is_empty() {
            tracing::debug!(
                ledger = closed.sequence,
                applied = closed.applied.len(),
                dropped = closed.dropped.len(),
                "ledger closed"
            );
        }
        closed
    }

    /// Ledger closes (the watched value is the last closed ledger).
    pub(crate) fn subscribe_ledgers(&self) -> watch::Receiver<u32> {
        self.ledger_closed.subscribe()
    }

    /// Becomes true when the simulator stops.
    pub(crate) fn subscribe_shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Creates a funded account directly (test setup).
    pub(crate) fn create_account(&self, account: AccountKey, balance: i64) -> Result<()> {
        let mut network = self.lock();
        if network.ledger.account(&account).is_some() {
            return Err(Error::AccountExists(account.address()));
        }
        if network.ledger.insert_account(account, balance) {
            Ok(())
        } else {
            Err(Error::InvalidBalance(format!(
                "{balance} stroops cannot be given to {account}"
            )))
        }
    }

    /// What a test wants to know about one transaction.
    pub(crate) fn transaction_state(&self, hash: &TxHash) -> TransactionState {
        let network = self.lock();
        let record = network.applied(hash);
        TransactionState {
            hash: *hash,
            applications: network.applications(hash),
            ledger: record.map(|r| r.ledger),
            successful: record.map(|r| r.successful),
            ingested: network.ingested(hash).is_some(),
        }
    }

    /// Everything, for `GET /_sim/state`.
    pub(crate) fn snapshot(&self) -> SimState {
        let network = self.lock();
        let sequence = network.ledger.sequence;
        SimState {
            ledger: sequence,
            close_time: network.ledger.close_time,
            base_fee: network.ledger.base_fee,
            base_reserve: network.ledger.base_reserve,
            fee_pool: network.ledger.fee_pool,
            queued: network.queue_len(),
            faults: network.faults.clone(),
            accounts: network
                .ledger
                .accounts()
                .map(|(key, entry)| AccountState {
                    account_id: *key,
                    balance: format_stroops(entry.balance),
                    balance_stroops: entry.balance,
                    sequence: entry.sequence.to_string(),
                })
                .collect(),
            transactions: network
                .history()
                .iter()
                .map(|record| AppliedTransaction {
                    hash: record.tx.hash,
                    inner_hash: record.tx.inner_hash(),
                    source: record.tx.source_account(),
                    sequence: record.tx.sequence,
                    ledger: record.ledger,
                    successful: record.successful,
                    fee_charged: record.fee_charged,
                    ingested: record.ingested_from_ledger <= sequence,
                    operations: record
                        .tx
                        .operations
                        .iter()
                        .filter_map(AppliedOperation::of)
                        .collect(),
                })
                .collect(),
        }
    }

    /// Stops waits and asks the server and timer to stop.
    fn stop(&self) {
        self.shutdown.send_replace(true);
        self.lock().abandon_waiters();
    }
}

/// One applied transaction, for inspection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppliedTransaction {
    /// Its hash (the outer hash for a fee bump).
    pub hash: TxHash,
    /// A fee bump's inner hash.
    pub inner_hash: Option<TxHash>,
    /// The source account (whose sequence number it used).
    pub source: AccountKey,
    /// The sequence number it used.
    pub sequence: i64,
    /// The ledger it was applied in.
    pub ledger: u32,
    /// Whether its operations succeeded (`false`: `tx_failed`, fee and sequence still taken).
    pub successful: bool,
    /// The fee taken, in stroops.
    pub fee_charged: i64,
    /// Whether Horizon shows it yet.
    pub ingested: bool,
    /// Its payments and account creations (what moved lumens, if it succeeded).
    pub operations: Vec<AppliedOperation>,
}

/// What one operation of an applied transaction was meant to move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AppliedOperation {
    /// A native payment.
    Payment {
        /// The operation's source (the transaction's unless the operation names one).
        source: Option<AccountKey>,
        /// Who is paid.
        destination: AccountKey,
        /// Stroops.
        amount: i64,
    },
    /// An account creation.
    CreateAccount {
        /// The operation's source (the transaction's unless the operation names one).
        source: Option<AccountKey>,
        /// The new account.
        destination: AccountKey,
        /// Its starting balance, in stroops.
        starting_balance: i64,
    },
}

impl AppliedOperation {
    /// The operation, if it is one the simulator applies.
    fn of(op: &stellar_xdr::Operation) -> Option<Self> {
        let source = op.source_account.as_ref().map(AccountKey::of_muxed);
        match &op.body {
            stellar_xdr::OperationBody::Payment(payment) => Some(AppliedOperation::Payment {
                source,
                destination: AccountKey::of_muxed(&payment.destination),
                amount: payment.amount,
            }),
            stellar_xdr::OperationBody::CreateAccount(create) => {
                let stellar_xdr::PublicKey::PublicKeyTypeEd25519(key) = &create.destination.0;
                Some(AppliedOperation::CreateAccount {
                    source,
                    destination: AccountKey(key.0),
                    starting_balance: create.starting_balance,
                })
            }
            _ => None,
        }
    }
}

/// One account, for inspection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountState {
    /// The `G...` address.
    pub account_id: AccountKey,
    /// The native balance as Horizon shows it.
    pub balance: String,
    /// The native balance in stroops.
    pub balance_stroops: i64,
    /// The last sequence number used, as a string (as Horizon shows it).
    pub sequence: String,
}

/// What the simulator knows about one transaction hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransactionState {
    /// The hash asked about.
    pub hash: TxHash,
    /// How many times it has been applied (0 or 1 on a correct ledger).
    pub applications: u32,
    /// The ledger it was applied in.
    pub ledger: Option<u32>,
    /// Whether it succeeded.
    pub successful: Option<bool>,
    /// Whether `GET /transactions/{hash}` shows it.
    pub ingested: bool,
}

/// The whole simulator state, for `GET /_sim/state`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimState {
    /// The last closed ledger.
    pub ledger: u32,
    /// Its close time.
    pub close_time: u64,
    /// The base fee.
    pub base_fee: u32,
    /// The base reserve.
    pub base_reserve: i64,
    /// Fees collected.
    pub fee_pool: i64,
    /// Transactions waiting for a ledger.
    pub queued: usize,
    /// Faults in force.
    pub faults: Faults,
    /// Every account.
    pub accounts: Vec<AccountState>,
    /// Every applied transaction, in order.
    pub transactions: Vec<AppliedTransaction>,
}

/// A running simulator. Dropping it stops it; [`HorizonSim::shutdown`] also waits for the server
/// to finish.
pub struct HorizonSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl HorizonSim {
    /// Starts a simulator: binds `config.listen`, serves Horizon, Stellar RPC (`POST /rpc`) and
    /// the control API, and closes ledgers every `config.ledger_interval` (if set).
    pub async fn start(config: SimConfig) -> Result<HorizonSim> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
        let network = Network::genesis(&Genesis {
            network_passphrase: config.network_passphrase.clone(),
            base_fee: config.base_fee,
            base_reserve: config.base_reserve,
            max_operations_per_ledger: config.max_operations_per_ledger,
            friendbot_amount: config.friendbot_amount,
            friendbot_accounts: config.friendbot_accounts,
            queue_ledgers: config.queue_ledgers,
            close_time: config.genesis_close_time.unwrap_or_else(unix_now),
        });
        let friendbot_listener = if config.friendbot_redirect {
            let friendbot_at = SocketAddr::new(addr.ip(), 0);
            let listener =
                TcpListener::bind(friendbot_at)
                    .await
                    .map_err(|source| Error::Listen {
                        addr: friendbot_at.to_string(),
                        source,
                    })?;
            let bound = listener.local_addr().map_err(|source| Error::Listen {
                addr: friendbot_at.to_string(),
                source,
            })?;
            Some((listener, format!("http://{bound}")))
        } else {
            None
        };
        let shared = Arc::new(Shared {
            ledger_closed: watch::Sender::new(network.ledger.sequence),
            queue_length: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            network: Mutex::new(network),
            base_url: format!("http://{addr}"),
            friendbot_url: friendbot_listener.as_ref().map(|(_, url)| url.clone()),
            config,
        });

        let mut tasks = Vec::new();
        if let Some((listener, _)) = friendbot_listener {
            let router = http::friendbot_router(shared.clone());
            let mut stopping = shared.subscribe_shutdown();
            tasks.push(tokio::spawn(async move {
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = stopping.wait_for(|stop| *stop).await;
                });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "friendbot server stopped");
                }
            }));
        }
        let router = http::router(shared.clone());
        let mut stopping = shared.subscribe_shutdown();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "horizon-sim server stopped");
            }
        }));
        if let Some(interval) = shared.config.ledger_interval {
            tasks.push(tokio::spawn(close_ledgers_every(shared.clone(), interval)));
        }
        Ok(HorizonSim {
            shared,
            addr,
            tasks,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Stellar RPC's JSON-RPC endpoint on the same listener, e.g. `http://127.0.0.1:41234/rpc`:
    /// the same ledger, and the same faults, as [`HorizonSim::url`]'s Horizon.
    pub fn rpc_url(&self) -> String {
        format!("{}/rpc", self.shared.base_url)
    }

    /// The network passphrase transactions must be signed for.
    pub fn network_passphrase(&self) -> &str {
        &self.shared.config.network_passphrase
    }

    /// The network id (sha256 of the passphrase).
    pub fn network_id(&self) -> [u8; 32] {
        self.shared.lock().ledger.network_id()
    }

    /// Closes a ledger now, applying the queue.
    pub fn close_ledger(&self) -> ClosedLedger {
        self.shared.close_ledger(None)
    }

    /// Closes a ledger with the given close time (never before the previous one), for tests of
    /// time bounds.
    pub fn close_ledger_at(&self, close_time: u64) -> ClosedLedger {
        self.shared.close_ledger(Some(close_time))
    }

    /// The last closed ledger.
    pub fn ledger_sequence(&self) -> u32 {
        self.shared.lock().ledger.sequence
    }

    /// The last closed ledger's close time (Unix seconds): what time bounds are checked against.
    pub fn ledger_close_time(&self) -> u64 {
        self.shared.lock().ledger.close_time
    }

    /// Transactions waiting for a ledger close.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue_len()
    }

    /// Waits until at least `count` transactions are queued (a submission has reached the
    /// ledger's queue), for at most `within`.
    pub async fn wait_for_queued(&self, count: usize, within: Duration) -> Result<()> {
        let mut queue = self.shared.queue_length.subscribe();
        match tokio::time::timeout(within, queue.wait_for(|len| *len >= count)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::WaitTimedOut(format!("{count} queued transactions"))),
        }
    }

    /// Waits until ledger `sequence` has closed, for at most `within`.
    pub async fn wait_for_ledger(&self, sequence: u32, within: Duration) -> Result<()> {
        let mut ledgers = self.shared.subscribe_ledgers();
        match tokio::time::timeout(within, ledgers.wait_for(|closed| *closed >= sequence)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::WaitTimedOut(format!("ledger {sequence}"))),
        }
    }

    /// Creates a funded account at once, without a transaction (test setup; the lumens come from
    /// the root account).
    pub fn create_account(&self, account: AccountKey, balance_stroops: i64) -> Result<()> {
        self.shared.create_account(account, balance_stroops)
    }

    /// The root account (holds every lumen not given out; its key is derived from the network
    /// id as in stellar-core).
    pub fn root_account(&self) -> AccountKey {
        self.shared.lock().ledger.root()
    }

    /// The accounts friendbot pays from.
    pub fn friendbot_accounts(&self) -> Vec<AccountKey> {
        self.shared.lock().friendbot_accounts()
    }

    /// An account's native balance in stroops, `None` if it does not exist.
    pub fn balance(&self, account: AccountKey) -> Option<i64> {
        self.shared
            .lock()
            .ledger
            .account(&account)
            .map(|a| a.balance)
    }

    /// An account's last used sequence number, `None` if it does not exist.
    pub fn sequence(&self, account: AccountKey) -> Option<i64> {
        self.shared
            .lock()
            .ledger
            .account(&account)
            .map(|a| a.sequence)
    }

    /// The ledger the transaction named `hash` (outer or inner) was applied in, whether Horizon
    /// shows it yet or not.
    pub fn ledger_of(&self, hash: TxHash) -> Option<u32> {
        self.shared.lock().applied(&hash).map(|r| r.ledger)
    }

    /// How many times the transaction named `hash` was applied.
    pub fn applications(&self, hash: TxHash) -> u32 {
        self.shared.lock().applications(&hash)
    }

    /// Everything known about one hash.
    pub fn transaction(&self, hash: TxHash) -> TransactionState {
        self.shared.transaction_state(&hash)
    }

    /// How many transactions have been applied in all.
    pub fn applied_count(&self) -> usize {
        self.shared.lock().history().len()
    }

    /// The applied transactions whose source is `account`, in order.
    pub fn applied_from(&self, account: AccountKey) -> Vec<AppliedTransaction> {
        self.state()
            .transactions
            .into_iter()
            .filter(|t| t.source == account)
            .collect()
    }

    /// A snapshot of everything (as `GET /_sim/state`).
    pub fn state(&self) -> SimState {
        self.shared.snapshot()
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Clears every fault.
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    /// The next `count` submissions are applied but answered 504.
    pub fn timeout_after_apply(&self, count: u32) {
        self.shared.lock().faults.timeout_after_apply = count;
    }

    /// The next `count` submissions are dropped and answered 504.
    pub fn timeout_without_apply(&self, count: u32) {
        self.shared.lock().faults.timeout_without_apply = count;
    }

    /// The next `count` submissions are dropped and answered 503.
    pub fn unavailable(&self, count: u32) {
        self.shared.lock().faults.unavailable = count;
    }

    /// Transactions applied from now on show in Horizon `ledgers` ledgers late.
    pub fn delay_ingestion(&self, ledgers: u32) {
        self.shared.lock().faults.ingestion_delay_ledgers = ledgers;
    }

    /// Adds `latency` before every Horizon answer.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().faults.latency_ms =
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    }

    /// Puts several nodes behind the URL (Horizon's and RPC's), lagging by `lags` ledgers each
    /// (reads, and RPC requests, take turns; see [`Faults::node_lags`]); an empty slice: one
    /// up-to-date node. Lags above [`crate::network::MAX_NODE_LAG`] are capped.
    pub fn set_node_lags(&self, lags: &[u32]) {
        self.shared.lock().faults.node_lags = lags
            .iter()
            .map(|lag| (*lag).min(crate::network::MAX_NODE_LAG))
            .collect();
    }

    /// The next `count` requests (Horizon or RPC) are answered 429.
    pub fn rate_limited(&self, count: u32) {
        self.shared.lock().faults.rate_limited = count;
    }

    /// A request budget: at most `requests` requests (Horizon and RPC together) per `window`,
    /// then 429 with `Retry-After` until the window ends; `requests` 0 lifts it.
    pub fn set_rate_limit(&self, requests: u32, window: Duration) {
        let mut network = self.shared.lock();
        network.faults.rate_limit_requests = requests;
        network.faults.rate_limit_window_ms =
            u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    }

    /// A surge: other parties bid for `operations` operations per ledger at `fee_per_operation`
    /// stroops each (see [`Faults::surge_operations`]); 0 operations ends it.
    pub fn set_surge(&self, operations: u32, fee_per_operation: u32) {
        let mut network = self.shared.lock();
        network.faults.surge_operations = operations;
        network.faults.surge_fee = fee_per_operation;
    }

    /// Another signer of `account` uses its next sequence number, outside the simulator's
    /// clients: a 1-stroop payment to itself at the base fee, applied first in the next ledger
    /// (a transaction of the account's queued meanwhile then fails `tx_bad_seq`). Returns its
    /// hash.
    pub fn consume_sequence(&self, account: AccountKey) -> Result<TxHash> {
        self.shared
            .lock()
            .consume_sequence(account)
            .map(|tx| tx.hash)
            .ok_or_else(|| Error::NoAccount(account.address()))
    }

    /// A party outside the simulator's clients pays `amount` stroops from `from` to `to` with a
    /// text `memo` (at most 28 bytes), applied first in the next ledger. Returns its hash.
    pub fn pay_from_outside(
        &self,
        from: AccountKey,
        to: AccountKey,
        amount: i64,
        memo: Option<&str>,
    ) -> Result<TxHash> {
        let memo = match memo {
            Some(text) => stellar_xdr::Memo::Text(
                text.as_bytes()
                    .to_vec()
                    .try_into()
                    .map_err(|_| Error::NoAccount(format!("memo {text:?} too long")))?,
            ),
            None => stellar_xdr::Memo::None,
        };
        self.shared
            .lock()
            .outside_payment(from, to.to_muxed(), amount, memo)
            .map(|tx| tx.hash)
            .ok_or_else(|| Error::NoAccount(from.address()))
    }

    /// [`HorizonSim::pay_from_outside`] to the muxed (`M...`) address of `to` with id
    /// `muxed_id`: `to` receives it; the payment names the muxed account.
    pub fn pay_muxed_from_outside(
        &self,
        from: AccountKey,
        to: AccountKey,
        muxed_id: u64,
        amount: i64,
    ) -> Result<TxHash> {
        let destination =
            stellar_xdr::MuxedAccount::MuxedEd25519(stellar_xdr::MuxedAccountMed25519 {
                id: muxed_id,
                ed25519: stellar_xdr::Uint256(to.0),
            });
        self.shared
            .lock()
            .outside_payment(from, destination, amount, stellar_xdr::Memo::None)
            .map(|tx| tx.hash)
            .ok_or_else(|| Error::NoAccount(from.address()))
    }

    /// A party outside the simulator's clients creates, from `from`, a claimable balance of
    /// `amount` stroops that `claimant` may claim unconditionally (sponsored by `from`: a base
    /// reserve of its is held until the claim), applied first in the next ledger. Nothing is
    /// credited until the claim. Returns the transaction's hash and the balance id as Horizon
    /// shows it (`00000000` and the hash, in hex).
    pub fn create_claimable_balance(
        &self,
        from: AccountKey,
        claimant: AccountKey,
        amount: i64,
    ) -> Result<(TxHash, String)> {
        self.shared
            .lock()
            .outside_claimable_balance(from, claimant, amount)
            .map(|(tx, id)| (tx.hash, crate::ledger::balance_id_hex(&id)))
            .ok_or_else(|| Error::NoAccount(from.address()))
    }

    /// `claimant`'s owner, outside the simulator's clients (its signature is not needed),
    /// claims balance `balance_id` (as [`HorizonSim::create_claimable_balance`] returned it) in
    /// a transaction `submitter` sends and pays the fee of (the claimant's own when they are the
    /// same), applied first in the next ledger: the claimant receives the amount. Returns the
    /// transaction's hash; a balance that is gone or not the claimant's fails in the ledger
    /// (`op_does_not_exist`, `op_cannot_claim`).
    pub fn claim_claimable_balance(
        &self,
        claimant: AccountKey,
        balance_id: &str,
        submitter: AccountKey,
    ) -> Result<TxHash> {
        let id = crate::ledger::parse_balance_id(balance_id)
            .ok_or_else(|| Error::NoAccount(format!("balance id {balance_id:?}")))?;
        self.shared
            .lock()
            .outside_claim(submitter, claimant, id)
            .map(|tx| tx.hash)
            .ok_or_else(|| Error::NoAccount(format!("{submitter} or {claimant}")))
    }

    /// The amount of lumens claimable balance `balance_id` holds, while it is unclaimed.
    pub fn claimable_balance(&self, balance_id: &str) -> Option<i64> {
        let id = crate::ledger::parse_balance_id(balance_id)?;
        self.shared
            .lock()
            .ledger
            .claimable_balance(&id)
            .map(|balance| balance.amount)
    }

    /// `account` is merged into `into` at the next ledger close, by its owner, outside the
    /// simulator's clients: it disappears and `into` receives its lumens.
    pub fn merge_account(&self, account: AccountKey, into: AccountKey) -> Result<()> {
        if self.shared.lock().merge_account(account, into) {
            Ok(())
        } else {
            Err(Error::NoAccount(format!("{account} or {into}")))
        }
    }

    /// Horizon and RPC keep only the last `ledgers` ledgers of history (0: all of it): RPC's
    /// retention window.
    pub fn set_history_retention(&self, ledgers: u32) {
        self.shared.lock().faults.history_retention_ledgers = ledgers;
    }

    /// The separate friendbot Horizon's `/friendbot` redirects to, with
    /// [`SimConfig::friendbot_redirect`].
    pub fn friendbot_url(&self) -> Option<String> {
        self.shared.friendbot_url.clone()
    }

    /// While `down`, every Horizon endpoint and `POST /rpc` answer 503.
    pub fn set_outage(&self, down: bool) {
        self.shared.lock().faults.outage = down;
    }

    /// Sets the base fee (as surge pricing would raise it): fees below it are refused.
    pub fn set_base_fee(&self, base_fee: u32) {
        self.shared.lock().ledger.base_fee = base_fee.max(1);
    }

    /// Stops serving and waits for the server and timer to finish. Submitters still waiting get
    /// a 504.
    pub async fn shutdown(mut self) {
        self.shared.stop();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for HorizonSim {
    fn drop(&mut self) {
        self.shared.stop();
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn close_ledgers_every(shared: Arc<Shared>, interval: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = shared.subscribe_shutdown();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                shared.close_ledger(None);
            }
            _ = stopping.wait_for(|stop| *stop) => break,
        }
    }
}
