//! Scheduling: which wallet the worker drives, under which lease, and for how long. Scans for
//! due work, takes and renews leases (their epoch is the fencing token every step's write
//! names), holds idle wallets for their next payment, and gives slots to wallets that need
//! them. What happens to one payment is in [`super::steps`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};

use super::{Next, PaymentWorker, backoff};
use crate::model::WalletId;
use crate::store::{Lease, NextPayment, PaymentRecord};

/// Waits longer than this release the wallet's lease and the worker slot.
const PARK_THRESHOLD: Duration = Duration::from_secs(3);

/// The least time between two scans for due work.
const SCAN_SPACING: Duration = Duration::from_millis(10);

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

impl PaymentWorker {
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

    /// Extends the lease; false when it was lost (expired and maybe taken over).
    async fn renew(&self, lease: &Lease) -> bool {
        match self.store.renew_lease(lease, self.settings.lease).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, wallet = %lease.wallet, "cannot renew a lease");
                false
            }
        }
    }

    /// Processes one source wallet's payments in order while holding its lease, then keeps the
    /// wallet a while (`idle_hold`) for its next payment, unless other wallets need the slot.
    async fn drive_wallet(&self, wallet: WalletId, mut stop: watch::Receiver<bool>) {
        let lease = match self
            .store
            .lease_wallet(wallet, &self.owner, self.settings.lease)
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, %wallet, "cannot lease a source wallet");
                return;
            }
        };
        let inbox = self.wake.drive_started(wallet);
        self.drive(&lease, &inbox, &mut stop).await;
        // Unregistered before the lease goes: a payment accepted from here on wakes the scan,
        // which the end of this drive wakes again once the lease is gone.
        self.wake.drive_ending(wallet);
        if let Err(e) = self.store.release_wallet(&lease).await {
            tracing::warn!(error = %e, %wallet, "cannot release a lease (it expires on its own)");
        }
    }

    async fn drive(&self, lease: &Lease, inbox: &Notify, stop: &mut watch::Receiver<bool>) {
        let wallet = lease.wallet;
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
                if !self.renew(lease).await {
                    // Lost (ours expired): whoever holds it now owns the wallet.
                    return;
                }
                renewed = tokio::time::Instant::now();
            }
            let read = match known.take() {
                Some(payment) => Ok(Some(NextPayment {
                    payment,
                    refusal: None,
                    due: true,
                    last,
                })),
                None => self.store.next_unfinished_payment(wallet).await,
            };
            let (payment, refusal) = match read {
                Ok(Some(next)) if !next.due => break,
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
            // The lease is renewed while a step runs (a synchronous submission can take longer
            // than the lease), so another worker never takes the wallet over mid-step.
            let step = self.step(lease, &payment, refusal);
            tokio::pin!(step);
            let mut lost = false;
            let outcome = loop {
                tokio::select! {
                    outcome = &mut step => break outcome,
                    _ = tokio::time::sleep(self.settings.lease / 3) => {
                        if self.renew(lease).await {
                            renewed = tokio::time::Instant::now();
                        } else {
                            // Finish the step (its writes name the lease's epoch, so they
                            // change nothing now), then leave the wallet to its new owner.
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
                    if let Err(e) = self.store.postpone_payment(lease, payment.id, wait).await {
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
}
