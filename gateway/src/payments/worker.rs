//! The [`PaymentWorker`]: drives accepted payments to Horizon, never paying twice.
//!
//! **Claiming.** The worker scans for source wallets with due, unfinished payments and takes a
//! lease on each (`payment_leases`: a row per wallet with an owner and an expiry, taken with a
//! conditional upsert, renewed while working). The lease is what makes "one transaction in
//! flight per source account" hold across replicas; on Postgres the scan itself uses
//! `FOR UPDATE SKIP LOCKED` so replicas scanning at once skip each other's rows. A wallet's
//! payments are processed strictly one at a time: the one in flight first, then the oldest
//! `CREATED` (a payment accepted concurrently may commit after a later one was already signed;
//! building it then would reuse the in-flight sequence number). A worker that dies leaves its
//! leases to expire (`payments.lease_ms`); the next worker resumes from the stored state.
//!
//! **Per payment.**
//! - `CREATED`: FAILED if the user was blocked or the wallet frozen since acceptance (read with
//!   the payment); read the sequence from Horizon, the fee from `fee_stats` (capped), set
//!   `max_time` to now + `max_validity_secs`; build, ask signerd to sign, check signerd's hash
//!   equals ours, and store the exact signed envelope and hash: `SIGNED`. That write is
//!   conditional on the wallet still being allowed to pay; a block or freeze that came while the
//!   transaction was built throws the signature away unsent and fails the payment. Nothing is
//!   sent before that commit.
//! - `SIGNED`/`SUBMITTED`: submit the *stored* bytes. Applied → `SUCCESS` (or `FAILED` with the
//!   result codes when it failed in a ledger, e.g. `op_underfunded`). Rejected with a final code
//!   (`tx_bad_auth`, `tx_insufficient_balance`, ...) → `FAILED`. Anything ambiguous (504, 503,
//!   network error, open breaker, `tx_bad_seq`, `tx_too_late`, `tx_insufficient_fee`) → *confirm*.
//! - *Confirm*: look up every hash ever signed for the payment. Found → its outcome. Not found:
//!   the payment is rebuilt (back to `CREATED`) only when Horizon's latest closed ledger closed
//!   after `max_time` **and** the source account's sequence is still below the transaction's (so
//!   no version of it was applied but not yet ingested). Otherwise the same bytes are resubmitted
//!   after a backoff.
//! - A rebuild reuses the sequence number; signerd's sequence guard refuses a different
//!   transaction for that sequence until `max_time + sequence_guard_secs`, so the rebuild waits
//!   until then (keep `max_validity_secs` short).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};

use super::transaction::PaymentTransaction;
use super::{DestinationAccount, MemoText, PaymentStatus};
use crate::config::{HorizonConfig, PaymentsConfig};
use crate::error::{Error, Result};
use crate::horizon::{Horizon, HorizonError, ResultCodes, Submission, TransactionRecord};
use crate::metrics::Metrics;
use crate::model::{AccountId, RequestId, SignerKeyId, Timestamp, WalletId};
use crate::signer::Signer;
use crate::store::{NextPayment, PaymentRecord, Store, WalletRecord};

/// Waits longer than this release the wallet's lease and the worker slot.
const PARK_THRESHOLD: Duration = Duration::from_secs(3);

/// The least time between two scans for due work.
const SCAN_SPACING: Duration = Duration::from_millis(10);

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

/// How accepted payments reach the worker in this process. A payment for a wallet the worker
/// is driving (or holding, idle) goes to that wallet's drive; any other wakes the scan for due
/// work. Replicas learn of each other's payments from their scans.
#[derive(Default)]
pub struct PaymentWake {
    scan: Notify,
    /// Idle wallets give themselves back when the scan finds more work than free slots.
    crowded: Notify,
    drives: Mutex<HashMap<WalletId, Arc<Notify>>>,
}

impl PaymentWake {
    /// A payment of `wallet` was accepted (committed).
    pub fn accepted(&self, wallet: WalletId) {
        let drive = self
            .drives
            .lock()
            .ok()
            .and_then(|drives| drives.get(&wallet).cloned());
        match drive {
            Some(drive) => drive.notify_one(),
            None => self.scan.notify_one(),
        }
    }

    fn drive_started(&self, wallet: WalletId) -> Arc<Notify> {
        let inbox = Arc::new(Notify::new());
        if let Ok(mut drives) = self.drives.lock() {
            drives.insert(wallet, inbox.clone());
        }
        inbox
    }

    fn drive_ending(&self, wallet: WalletId) {
        if let Ok(mut drives) = self.drives.lock() {
            drives.remove(&wallet);
        }
    }
}

/// What to do after one step.
enum Next {
    /// Look at the wallet's next state at once.
    Continue,
    /// The payment reached `SUCCESS` or `FAILED` (this step wrote it).
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
    /// Fee cap per operation.
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
}

impl WorkerSettings {
    /// From the config sections.
    pub fn new(horizon: &HorizonConfig, payments: &PaymentsConfig) -> Self {
        WorkerSettings {
            network_passphrase: horizon.network_passphrase.clone(),
            max_fee_stroops: horizon.max_fee_stroops,
            max_validity_secs: horizon.max_validity_secs,
            sequence_guard_secs: horizon.sequence_guard_secs,
            concurrency: payments.worker_concurrency,
            poll_interval: Duration::from_millis(payments.poll_interval_ms),
            lease: Duration::from_millis(payments.lease_ms),
            idle_hold: Duration::from_millis(payments.idle_hold_ms.min(payments.lease_ms / 3)),
        }
    }
}

/// See the module documentation.
pub struct PaymentWorker {
    store: Store,
    signer: Arc<Signer>,
    horizon: Arc<Horizon>,
    settings: WorkerSettings,
    metrics: Metrics,
    owner: String,
    wake: Arc<PaymentWake>,
    active: Mutex<HashSet<WalletId>>,
    /// Destination accounts seen to exist.
    known_accounts: Remembered<String, ()>,
    /// The signerd key and account of source wallets (fixed once a wallet is complete).
    sources: Remembered<WalletId, (SignerKeyId, AccountId)>,
}

impl PaymentWorker {
    /// A worker; the API tells `wake` when a payment is accepted.
    pub fn new(
        store: Store,
        signer: Arc<Signer>,
        horizon: Arc<Horizon>,
        settings: WorkerSettings,
        metrics: Metrics,
        wake: Arc<PaymentWake>,
    ) -> Self {
        PaymentWorker {
            store,
            signer,
            horizon,
            settings,
            metrics,
            owner: format!("worker-{}", uuid::Uuid::now_v7()),
            wake,
            active: Mutex::new(HashSet::new()),
            known_accounts: Remembered::new(),
            sources: Remembered::new(),
        }
    }

    /// Runs until `stop` turns true. Whatever was in flight when a previous worker died is
    /// found by the first scan (its leases expire) and resumed from the stored state.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tracing::info!(owner = %self.owner, "payment worker started");
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut last_scan: Option<tokio::time::Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            // Every accepted payment and every finished wallet wakes the worker: under load,
            // scans are spaced so that one scan serves many wake-ups.
            if let Some(at) = last_scan {
                tokio::select! {
                    _ = tokio::time::sleep_until(at + SCAN_SPACING) => {}
                    _ = stop.changed() => continue,
                }
            }
            last_scan = Some(tokio::time::Instant::now());
            // Scanned even with every slot taken: due work then makes idle wallets give way.
            let capacity = slots.available_permits().max(1);
            match self
                .store
                .due_source_wallets(i64::try_from(capacity * 4).unwrap_or(1024))
                .await
            {
                Ok(wallets) => {
                    for wallet in wallets {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            // More due wallets than slots: idle ones make room.
                            self.wake.crowded.notify_waiters();
                            break;
                        };
                        if !self.mark_active(wallet) {
                            continue;
                        }
                        let worker = self.clone();
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            worker.drive_wallet(wallet, stop).await;
                            worker.unmark_active(wallet);
                            drop(permit);
                            worker.wake.scan.notify_one();
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "payment worker cannot scan for work"),
            }
            tokio::select! {
                _ = self.wake.scan.notified() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
        tracing::info!("payment worker stopped");
    }

    fn mark_active(&self, wallet: WalletId) -> bool {
        self.active
            .lock()
            .map(|mut set| set.insert(wallet))
            .unwrap_or(false)
    }

    fn unmark_active(&self, wallet: WalletId) {
        if let Ok(mut set) = self.active.lock() {
            set.remove(&wallet);
        }
    }

    async fn lease(&self, wallet: WalletId) -> bool {
        let until = Timestamp::after(self.settings.lease);
        match self.store.lease_wallet(wallet, &self.owner, &until).await {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(error = %e, %wallet, "cannot lease a source wallet");
                false
            }
        }
    }

    /// Processes one source wallet's payments in order while holding its lease, then keeps the
    /// wallet a while (`idle_hold`) for its next payment, unless other wallets need the slot.
    async fn drive_wallet(&self, wallet: WalletId, mut stop: watch::Receiver<bool>) {
        if !self.lease(wallet).await {
            return;
        }
        let inbox = self.wake.drive_started(wallet);
        self.drive(wallet, &inbox, &mut stop).await;
        // Unregistered before the lease goes: a payment accepted from here on wakes the scan,
        // which the end of this drive wakes again once the lease is gone.
        self.wake.drive_ending(wallet);
        if let Err(e) = self.store.release_wallet(wallet, &self.owner).await {
            tracing::warn!(error = %e, %wallet, "cannot release a lease (it expires on its own)");
        }
    }

    async fn drive(&self, wallet: WalletId, inbox: &Notify, stop: &mut watch::Receiver<bool>) {
        let mut renewed = tokio::time::Instant::now();
        let mut known: Option<PaymentRecord> = None;
        // Whether the last read found nothing else to do: the wallet's payments accepted since
        // then are handed over through `inbox`.
        let mut last = false;
        loop {
            if *stop.borrow() {
                break;
            }
            if renewed.elapsed() > self.settings.lease / 3 {
                if !self.lease(wallet).await {
                    // Another worker took over (ours expired): it owns the wallet now.
                    return;
                }
                renewed = tokio::time::Instant::now();
            }
            let read = match known.take() {
                Some(payment) => Ok(Some(NextPayment {
                    payment,
                    refusal: None,
                    last,
                })),
                None => self.store.next_unfinished_payment(wallet).await,
            };
            let (payment, refusal) = match read {
                Ok(Some(next)) => {
                    last = next.last;
                    (next.payment, next.refusal)
                }
                Ok(None) => {
                    if self.hold_idle(inbox, stop).await {
                        continue;
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, %wallet, "cannot read the next payment");
                    break;
                }
            };
            if payment.next_attempt_at > Timestamp::now() {
                break;
            }
            // The lease is renewed while a step runs (a synchronous submission can take longer
            // than the lease), so another worker never takes the wallet over mid-step.
            let step = self.step(&payment, refusal);
            tokio::pin!(step);
            let mut lost = false;
            let outcome = loop {
                tokio::select! {
                    outcome = &mut step => break outcome,
                    _ = tokio::time::sleep(self.settings.lease / 3) => {
                        if self.lease(wallet).await {
                            renewed = tokio::time::Instant::now();
                        } else {
                            // Finish the step (every write is conditional on the status it
                            // read), then leave the wallet to its new owner.
                            lost = true;
                        }
                    }
                }
            };
            if lost {
                return;
            }
            let next = match outcome {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, payment_id = %payment.id, "payment step failed; will retry");
                    Next::Wait(backoff(payment.attempts))
                }
            };
            match next {
                Next::Continue => {}
                Next::Finished if last => {
                    if !self.hold_idle(inbox, stop).await {
                        break;
                    }
                }
                Next::Finished => {}
                Next::Submit(signed) => known = Some(*signed),
                // Long waits (and any wait the lease would not outlive) park the payment in
                // the database and free the wallet.
                Next::Wait(wait) if wait >= PARK_THRESHOLD.min(self.settings.lease / 3) => {
                    let at = Timestamp::after(wait);
                    if let Err(e) = self.store.postpone_payment(payment.id, &at).await {
                        tracing::warn!(error = %e, payment_id = %payment.id, "cannot postpone");
                    }
                    break;
                }
                Next::Wait(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => break,
                    }
                }
            }
        }
    }

    /// With nothing left to do: holds the wallet for its next payment (the API hands it over
    /// through `inbox`), unless other wallets need the slot. True when one came.
    async fn hold_idle(&self, inbox: &Notify, stop: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = inbox.notified() => true,
            _ = self.wake.crowded.notified() => false,
            _ = tokio::time::sleep(self.settings.idle_hold) => false,
            _ = stop.changed() => false,
        }
    }

    /// One step of a payment; `refusal` is why its wallet may not pay, as read with it.
    async fn step(&self, payment: &PaymentRecord, refusal: Option<String>) -> Result<Next> {
        match payment.status {
            PaymentStatus::Created => self.build_and_sign(payment, refusal).await,
            PaymentStatus::Signed | PaymentStatus::Submitted => self.submit(payment).await,
            PaymentStatus::Success | PaymentStatus::Failed => Ok(Next::Continue),
        }
    }

    /// Fails a payment that has no signed transaction (only from `CREATED`: if another worker
    /// signed it meanwhile, that transaction may be on its way and must not be declared failed).
    async fn fail(&self, payment: &PaymentRecord, reason: &str) -> Result<Next> {
        tracing::info!(payment_id = %payment.id, reason, "payment failed");
        if self.store.fail_unsigned_payment(payment.id, reason).await? {
            self.metrics.payment_finished("FAILED");
            return Ok(Next::Finished);
        }
        Ok(Next::Continue)
    }

    async fn build_and_sign(
        &self,
        payment: &PaymentRecord,
        refusal: Option<String>,
    ) -> Result<Next> {
        // Blocked or frozen since acceptance (as read with the payment): nothing to build. A
        // block or freeze from here on is caught when the signed transaction is stored.
        if let Some(reason) = refusal {
            return self.fail(payment, &reason).await;
        }
        let (key_id, source) = match self.sources.get(&payment.source_wallet_id) {
            Some(known) => known,
            None => {
                let wallet = self
                    .store
                    .wallet(payment.source_wallet_id)
                    .await?
                    .ok_or_else(|| Error::CorruptData("payment of a missing wallet".into()))?;
                let WalletRecord {
                    key_id,
                    public_key: Some(source),
                    ..
                } = wallet
                else {
                    return self.fail(payment, "source wallet has no key").await;
                };
                self.sources
                    .remember(payment.source_wallet_id, (key_id.clone(), source.clone()));
                (key_id, source)
            }
        };
        let account = match self.horizon.account(source.as_str()).await {
            Ok(Some(account)) => account,
            Ok(None) => {
                return self
                    .fail(
                        payment,
                        "SOURCE_ACCOUNT_NOT_FOUND: the source account does not exist on the network",
                    )
                    .await;
            }
            Err(e) => return Ok(self.horizon_wait(payment, &e)),
        };
        let sequence = account.sequence + 1;
        let now = unix_now();
        // signerd's guard: a different transaction for a sequence it already signed is refused
        // until that one's max_time + grace. Wait rather than be refused. (Only a rebuild has
        // earlier transactions.)
        let earlier = if payment.builds > 0 {
            self.store.payment_hashes(payment.id).await?
        } else {
            Vec::new()
        };
        let guard_until = earlier
            .iter()
            .filter(|(_, seq, _)| *seq == sequence)
            .map(|(_, _, max_time)| max_time + self.guard_secs() + 1)
            .max();
        if let Some(until) = guard_until
            && until > now
        {
            let wait = Duration::from_secs(u64::try_from(until - now).unwrap_or(1));
            tracing::info!(payment_id = %payment.id, wait_secs = wait.as_secs(), "rebuild waits for signerd's sequence guard");
            return Ok(Next::Wait(wait));
        }
        let fee = match self.horizon.recommended_fee().await {
            Ok(fee) => fee.clamp(100, i64::from(self.settings.max_fee_stroops)),
            Err(e) => return Ok(self.horizon_wait(payment, &e)),
        };
        let fee = u32::try_from(fee).unwrap_or(self.settings.max_fee_stroops);
        let max_time = u64::try_from(now).unwrap_or(0) + self.settings.max_validity_secs;
        let destination = DestinationAccount::parse(&payment.destination_account)
            .map_err(|e| Error::CorruptData(format!("payments.destination_account: {e}")))?;
        let memo = payment
            .memo
            .as_deref()
            .map(MemoText::parse)
            .transpose()
            .map_err(|e| Error::CorruptData(format!("payments.memo: {e}")))?;
        // A plain destination that does not exist yet is created (create_account) instead of
        // paid, as wallets do; the amount must then cover the base reserve (op_low_reserve).
        let create_destination = match &destination {
            DestinationAccount::Account(account) => match self.destination_exists(account).await {
                Ok(exists) => !exists,
                Err(e) => return Ok(self.horizon_wait(payment, &e)),
            },
            DestinationAccount::Muxed { .. } => false,
        };
        let unsigned = PaymentTransaction {
            source: &source,
            sequence,
            fee,
            max_time,
            destination: &destination,
            amount: payment.amount,
            memo: memo.as_ref(),
            create_destination,
        }
        .build(&self.settings.network_passphrase)?;
        let request_id = RequestId::from_caller(&format!("payment-{}", payment.id))
            .unwrap_or_else(RequestId::generate);
        let signature = match self
            .signer
            .sign_transaction(
                &key_id,
                &unsigned.xdr,
                &self.settings.network_passphrase,
                &request_id,
            )
            .await
        {
            Ok(signature) => signature,
            Err(Error::SignerUnavailable(reason)) => {
                tracing::warn!(payment_id = %payment.id, %reason, "signerd unavailable; payment waits");
                return Ok(Next::Wait(backoff(payment.builds + payment.attempts)));
            }
            // Another transaction holds this sequence (an earlier payment of the wallet not yet
            // visible on Horizon, or another worker after a lost lease): nothing was signed for
            // this one, so wait and build again on the account's next state.
            Err(Error::SequenceInUse(reason)) => {
                tracing::warn!(payment_id = %payment.id, %reason, "sequence in use; payment waits and is rebuilt");
                return Ok(Next::Wait(backoff(payment.builds + payment.attempts)));
            }
            Err(e) => {
                // Nothing was ever sent for this transaction, and no earlier one can land (a
                // rebuild happens only once that is proven), so failing here cannot lose money.
                return self.fail(payment, &format!("SIGNER_REFUSED: {e}")).await;
            }
        };
        if signature.tx_hash.as_slice() != unsigned.hash.as_slice() {
            return Err(Error::Signer(
                "signerd signed a different transaction hash than the gateway computed".into(),
            ));
        }
        let hash = hex::encode(unsigned.hash);
        let envelope = unsigned.attach(&signature.hint, &signature.signature)?;
        let max_time = i64::try_from(max_time).unwrap_or(i64::MAX);
        let signed = self
            .store
            .mark_signed(
                payment.id,
                sequence,
                max_time,
                i64::from(fee),
                &hash,
                &envelope,
            )
            .await?;
        if !signed {
            // The wallet was blocked or frozen while this was built: the signature is thrown
            // away unsent, and the payment fails. Otherwise another worker moved the payment
            // on meanwhile: read what it did.
            if let Some(reason) = self.store.wallet_refusal(payment.source_wallet_id).await? {
                return self.fail(payment, &reason).await;
            }
            return Ok(Next::Continue);
        }
        tracing::debug!(payment_id = %payment.id, tx_hash = %hash, sequence, "payment signed");
        Ok(Next::Submit(Box::new(PaymentRecord {
            status: PaymentStatus::Signed,
            sequence: Some(sequence),
            max_time: Some(max_time),
            fee_stroops: Some(i64::from(fee)),
            tx_hash: Some(hash),
            envelope_xdr: Some(envelope),
            builds: payment.builds + 1,
            ..payment.clone()
        })))
    }

    /// Whether a destination account exists. Accounts once seen are remembered (an account
    /// is only removed by a merge, and a payment to a merged account fails in its ledger with
    /// `op_no_destination`), so a busy destination costs one Horizon read, not one per payment.
    async fn destination_exists(&self, account: &AccountId) -> Result<bool, HorizonError> {
        if self.known_accounts.get(account.as_str()).is_some() {
            return Ok(true);
        }
        let exists = self.horizon.account(account.as_str()).await?.is_some();
        if exists {
            self.known_accounts
                .remember(account.as_str().to_owned(), ());
        }
        Ok(exists)
    }

    fn guard_secs(&self) -> i64 {
        i64::try_from(self.settings.sequence_guard_secs).unwrap_or(60)
    }

    async fn submit(&self, payment: &PaymentRecord) -> Result<Next> {
        let (Some(envelope), Some(hash)) = (&payment.envelope_xdr, &payment.tx_hash) else {
            return Err(Error::CorruptData(format!(
                "payment {} is {} without an envelope",
                payment.id,
                payment.status.as_str()
            )));
        };
        self.store.mark_submitted(payment.id).await?;
        match self.horizon.submit(envelope).await {
            Submission::Applied(record) => self.finish(payment, hash, &record).await,
            Submission::Rejected(codes) if is_final_rejection(&codes) => {
                tracing::info!(payment_id = %payment.id, ?codes, "transaction rejected");
                if self
                    .store
                    .finish_payment(
                        payment.id,
                        PaymentStatus::Failed,
                        Some(hash),
                        None,
                        None,
                        Some(&codes),
                        Some("HORIZON_REJECTED"),
                    )
                    .await?
                {
                    self.metrics.payment_finished("FAILED");
                    return Ok(Next::Finished);
                }
                Ok(Next::Continue)
            }
            Submission::Rejected(codes) => {
                tracing::info!(payment_id = %payment.id, code = %codes.transaction, "ambiguous rejection; confirming by hash");
                self.confirm(payment).await
            }
            Submission::Unknown(reason) => {
                tracing::info!(payment_id = %payment.id, %reason, "submission outcome unknown; confirming by hash");
                self.confirm(payment).await
            }
        }
    }

    async fn finish(
        &self,
        payment: &PaymentRecord,
        hash: &str,
        record: &TransactionRecord,
    ) -> Result<Next> {
        let status = if record.successful {
            PaymentStatus::Success
        } else {
            PaymentStatus::Failed
        };
        let codes = (!record.successful).then_some(&record.result_codes);
        if self
            .store
            .finish_payment(
                payment.id,
                status,
                Some(hash),
                Some(record.ledger),
                Some(record.fee_charged),
                codes,
                (!record.successful).then_some("TRANSACTION_FAILED"),
            )
            .await?
        {
            self.metrics.payment_finished(status.as_str());
            return Ok(Next::Finished);
        }
        Ok(Next::Continue)
    }

    /// After an ambiguous submission: find the transaction, or prove it can never land.
    async fn confirm(&self, payment: &PaymentRecord) -> Result<Next> {
        for (hash, _, _) in self.store.payment_hashes(payment.id).await? {
            match self.horizon.transaction(&hash).await {
                Ok(Some(record)) => return self.finish(payment, &hash, &record).await,
                Ok(None) => {}
                Err(e) => return Ok(self.horizon_wait(payment, &e)),
            }
        }
        let (Some(sequence), Some(max_time)) = (payment.sequence, payment.max_time) else {
            return Err(Error::CorruptData(
                "in-flight payment without sequence".into(),
            ));
        };
        let latest = match self.horizon.latest_ledger().await {
            Ok(latest) => latest,
            Err(e) => return Ok(self.horizon_wait(payment, &e)),
        };
        let wallet = self
            .store
            .wallet(payment.source_wallet_id)
            .await?
            .and_then(|w| w.public_key)
            .ok_or_else(|| Error::CorruptData("payment of a wallet without a key".into()))?;
        let account = match self.horizon.account(wallet.as_str()).await {
            Ok(account) => account,
            Err(e) => return Ok(self.horizon_wait(payment, &e)),
        };
        let sequence_used = account.is_some_and(|a| a.sequence >= sequence);
        if latest.closed_at > max_time && !sequence_used {
            let why = format!(
                "rebuild: no signed transaction found, ledger {} closed at {} after max_time {max_time}, sequence {sequence} unused",
                latest.sequence, latest.closed_at
            );
            tracing::info!(payment_id = %payment.id, "{why}");
            self.store.reset_for_rebuild(payment.id, &why).await?;
            return Ok(Next::Continue);
        }
        if sequence_used {
            // One of its transactions was applied but Horizon has not ingested it yet.
            return Ok(Next::Wait(Duration::from_millis(500)));
        }
        Ok(Next::Wait(backoff(payment.attempts)))
    }

    fn horizon_wait(&self, payment: &PaymentRecord, e: &HorizonError) -> Next {
        tracing::warn!(payment_id = %payment.id, error = %e, "horizon unavailable; payment waits");
        Next::Wait(backoff(payment.attempts))
    }
}

/// Codes after which the stored bytes can never succeed.
fn is_final_rejection(codes: &ResultCodes) -> bool {
    !matches!(
        codes.transaction.as_str(),
        // tx_failed was applied in a ledger: confirming by hash records its ledger and fee.
        "tx_failed"
            | "tx_bad_seq"
            | "tx_too_late"
            | "tx_too_early"
            | "tx_insufficient_fee"
            | "tx_internal_error"
    ) && !codes.transaction.is_empty()
}

/// 250 ms doubling per attempt, at most 5 s.
fn backoff(attempts: i64) -> Duration {
    let shift = u32::try_from(attempts.clamp(0, 5)).unwrap_or(5);
    Duration::from_millis(250u64 << shift).min(Duration::from_secs(5))
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_codes_fail_a_payment_outright() {
        let codes = |tx: &str| ResultCodes {
            transaction: tx.into(),
            operations: vec![],
        };
        assert!(is_final_rejection(&codes("tx_bad_auth")));
        assert!(is_final_rejection(&codes("tx_insufficient_balance")));
        assert!(!is_final_rejection(&codes("tx_bad_seq")));
        assert!(!is_final_rejection(&codes("tx_too_late")));
        assert!(!is_final_rejection(&codes("")));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(50), Duration::from_secs(5));
    }
}
