//! The steps of one payment: build and sign (`CREATED`), submit (`SIGNED`/`SUBMITTED`), and
//! confirm after an ambiguous submission. Each writes its transition through the store naming
//! the lease it works under and the version of the payment it read, so a step decided on stale
//! state, or by a worker that lost the wallet, changes nothing. Scheduling is in
//! [`super::scheduling`].

use std::time::Duration;

use super::{Next, PaymentWorker, backoff};
use crate::error::{Error, Result};
use crate::model::{AccountId, RequestId, SignerKeyId};
use crate::network::{
    AccountInfo, AtLedger, NetworkError, ResultCodes, SequenceUse, Submission, TransactionRead,
    TransactionRecord,
};
use crate::payments::transaction::{PaymentTransaction, UnsignedFeeBump};
use crate::payments::{DestinationAccount, MemoText, PaymentStatus};
use crate::store::{
    Lease, Outcome, PaymentRecord, Rebuild, SignedEnvelope, SignedTransaction, WalletRecord,
};

/// How far the database's clock and the network's ledger close times may differ: an account's
/// absence is proven only by a read covering a ledger that closed this long after the payment
/// was accepted (by the database's clock).
const ABSENCE_CLOCK_SKEW_SECS: i64 = 5;

/// How long a payment waits before building again after signerd refused its stale time bounds.
const STALE_BOUNDS_RETRY: Duration = Duration::from_millis(100);

impl PaymentWorker {
    /// One step of a payment; `refusal` is why its wallet may not pay, as read with it.
    pub(super) async fn step(
        &self,
        lease: &Lease,
        payment: &PaymentRecord,
        refusal: Option<String>,
    ) -> Result<Next> {
        match payment.status {
            PaymentStatus::Created => self.build_and_sign(lease, payment, refusal).await,
            PaymentStatus::Signed | PaymentStatus::Submitted => self.submit(lease, payment).await,
            PaymentStatus::Success | PaymentStatus::Failed | PaymentStatus::NeedsAttention => {
                Ok(Next::Continue)
            }
        }
    }

    /// Fails a `CREATED` payment: none of its transactions can land (never signed, or every one
    /// proven dead before the rebuild that brought it back to `CREATED`).
    async fn fail(&self, lease: &Lease, payment: &PaymentRecord, reason: &str) -> Result<Next> {
        tracing::info!(payment_id = %payment.id, reason, "payment failed");
        if self
            .store
            .fail_unsigned_payment(lease, payment, reason)
            .await?
        {
            self.metrics.payment_finished("FAILED");
            return Ok(Next::Finished);
        }
        Ok(Next::Continue)
    }

    /// The source wallet's signerd key and account.
    async fn source_of(&self, payment: &PaymentRecord) -> Result<Option<(SignerKeyId, AccountId)>> {
        if let Some(known) = self.sources.get(&payment.source_wallet_id) {
            return Ok(Some(known));
        }
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
            return Ok(None);
        };
        self.sources
            .remember(payment.source_wallet_id, (key_id.clone(), source.clone()));
        Ok(Some((key_id, source)))
    }

    async fn build_and_sign(
        &self,
        lease: &Lease,
        payment: &PaymentRecord,
        refusal: Option<String>,
    ) -> Result<Next> {
        // Blocked or frozen since acceptance (as read with the payment): nothing to build. A
        // block or freeze from here on is caught when the signed transaction is stored.
        if let Some(reason) = refusal {
            return self.fail(lease, payment, &reason).await;
        }
        let Some((key_id, source)) = self.source_of(payment).await? else {
            return self.fail(lease, payment, "source wallet has no key").await;
        };
        let read = match self.network.account_at(source.as_str()).await {
            Ok(read) => read,
            Err(e) => return Ok(self.network_wait(payment, &e)),
        };
        let account = match &read.value {
            Some(account) => account.clone(),
            None => {
                return match self.absence_proven(payment, &source, &read).await {
                    Ok(true) => {
                        self.fail(
                            lease,
                            payment,
                            "SOURCE_ACCOUNT_NOT_FOUND: the source account does not exist on the network",
                        )
                        .await
                    }
                    Ok(false) => Ok(self.read_behind(payment, "source_absent")),
                    Err(e) => Ok(self.network_wait(payment, &e)),
                };
            }
        };
        // The sequence is taken only from a read at or past the last ledger known to reflect the
        // account (a read that showed it, or the ledger of its last applied payment): a node
        // behind it shows a sequence already used, and a transaction built on it is refused by
        // signerd's guard or by the network (tx_bad_seq).
        if !self.saw_account(&source, read.ledger) {
            return Ok(self.read_behind(payment, "source_sequence"));
        }
        // A rebuild reuses the payment's sequence number, always: a fresh read could be stale
        // and sign a second transaction at S+1 while the first one applied at S.
        let sequence = match payment.sequence {
            Some(own) if account.sequence >= own => {
                let why = format!(
                    "rebuild found the account at sequence {} (the payment's is {own}): back to confirming",
                    account.sequence
                );
                tracing::warn!(payment_id = %payment.id, "{why}");
                self.store.back_to_confirming(lease, payment, &why).await?;
                return Ok(Next::Continue);
            }
            Some(own) => own,
            None => account.sequence + 1,
        };
        let now = unix_now();
        // signerd's guard: a different transaction for a sequence it already signed is refused
        // until that one's max_time + grace. Wait rather than be refused.
        let earlier = if payment.builds > 0 {
            self.store.payment_transactions(payment.id).await?
        } else {
            Vec::new()
        };
        let guard_until = earlier
            .iter()
            .filter(|tx| tx.sequence == sequence)
            .map(|tx| tx.max_time + self.guard_secs() + 1)
            .max();
        if let Some(until) = guard_until
            && until > now
        {
            let wait = Duration::from_secs(u64::try_from(until - now).unwrap_or(1));
            tracing::info!(payment_id = %payment.id, wait_secs = wait.as_secs(), "rebuild waits for signerd's sequence guard");
            return Ok(Next::Wait(wait));
        }
        // Bid the cap: every transaction in a ledger pays the same clearing price (the base fee
        // outside a surge), not its bid, so a lower bid saves nothing and, in a surge that
        // began after the last fee_stats, leaves the transaction out until it expires.
        let fee = self.settings.max_fee_stroops;
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
        // Absent only as read by a node at or past the payment's absence fence: a lagging node's
        // 404 for an existing destination would build a create_account that fails in its ledger
        // (op_already_exists).
        let create_destination = match &destination {
            DestinationAccount::Account(account) => {
                match self.destination_exists(payment, account).await {
                    Ok(Some(exists)) => !exists,
                    Ok(None) => return Ok(self.read_behind(payment, "destination_absent")),
                    Err(e) => return Ok(self.network_wait(payment, &e)),
                }
            }
            DestinationAccount::Muxed { .. } => false,
        };
        // The time bounds are set last, right before signing, from a fresh clock reading.
        let max_time = u64::try_from(unix_now()).unwrap_or(0) + self.settings.max_validity_secs;
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
            Err(Error::StaleTimeBounds(reason)) => {
                // The build outlived its max_time before signerd saw it (a slow machine, a
                // signerd outage with retries). Nothing was signed: build again, fresh bounds.
                tracing::warn!(payment_id = %payment.id, %reason, "time bounds went stale before signing; building again");
                return Ok(Next::Wait(STALE_BOUNDS_RETRY));
            }
            Err(Error::SignerUnavailable(reason)) => {
                tracing::warn!(payment_id = %payment.id, %reason, "signerd unavailable; payment waits");
                return Ok(Next::Wait(backoff(payment.builds + payment.attempts)));
            }
            // Another transaction holds this sequence (an earlier payment of the wallet not yet
            // visible on Horizon, or signerd's guard on an earlier build): nothing was signed
            // for this one, so wait and build again.
            Err(Error::SequenceInUse(reason)) => {
                tracing::warn!(payment_id = %payment.id, %reason, "sequence in use; payment waits and is rebuilt");
                return Ok(Next::Wait(backoff(payment.builds + payment.attempts)));
            }
            // signerd failed inside or answered something unusable: not a decision about this
            // payment, so it waits rather than fails.
            Err(Error::Signer(reason)) => {
                tracing::warn!(payment_id = %payment.id, %reason, "signerd failed; payment waits");
                return Ok(Next::Wait(backoff(payment.builds + payment.attempts)));
            }
            Err(Error::SignerRefused(reason)) => {
                // signerd's considered refusal. Nothing was ever sent for this transaction, and
                // no earlier one can land (a rebuild happens only once that is proven).
                return self
                    .fail(lease, payment, &format!("SIGNER_REFUSED: {reason}"))
                    .await;
            }
            Err(e) => return Err(e),
        };
        if signature.tx_hash.as_slice() != unsigned.hash.as_slice() {
            return Err(Error::Signer(
                "signerd signed a different transaction hash than the gateway computed".into(),
            ));
        }
        let hash = hex::encode(unsigned.hash);
        let envelope = unsigned.attach(&signature.hint, &signature.signature)?;
        let max_time = i64::try_from(max_time).unwrap_or(i64::MAX);
        let stored = self
            .store
            .mark_signed(
                lease,
                payment,
                &SignedEnvelope {
                    sequence,
                    max_time,
                    fee: i64::from(fee),
                    hash: &hash,
                    envelope_xdr: &envelope,
                },
            )
            .await?;
        if !stored {
            // The wallet was blocked or frozen while this was built: the signature is thrown
            // away unsent, and the payment fails. Otherwise the payment moved on or the lease
            // was lost: read again (the fenced writes decide).
            if let Some(reason) = self.store.wallet_refusal(payment.source_wallet_id).await? {
                return self.fail(lease, payment, &reason).await;
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

    /// Whether a destination account exists; `None` when a 404 came from a node that may be
    /// behind it (see [`PaymentWorker::absence_proven`]). Accounts once seen are remembered (an
    /// account is only removed by a merge, and a payment to a merged account fails in its ledger
    /// with `op_no_destination`), so a busy destination costs one Horizon read, not one per payment.
    async fn destination_exists(
        &self,
        payment: &PaymentRecord,
        account: &AccountId,
    ) -> Result<Option<bool>, NetworkError> {
        if self.known_accounts.get(account.as_str()).is_some() {
            return Ok(Some(true));
        }
        let read = self.network.account_at(account.as_str()).await?;
        if read.value.is_some() {
            self.saw_account(account, read.ledger);
            return Ok(Some(true));
        }
        Ok(self
            .absence_proven(payment, account, &read)
            .await?
            .then_some(false))
    }

    /// Records that `account` exists as of `ledger` (the read's `Latest-Ledger`); false when
    /// that read is behind a ledger already known to reflect the account.
    fn saw_account(&self, account: &AccountId, ledger: Option<i64>) -> bool {
        let known = self.known_accounts.get(account.as_str());
        match (known, ledger) {
            (Some(seen), Some(read)) if read < seen => false,
            (Some(seen), Some(read)) if read == seen => true,
            (_, Some(read)) => {
                self.known_accounts
                    .remember(account.as_str().to_owned(), read);
                true
            }
            // No Latest-Ledger header: nothing to compare the read with; it is taken as it is.
            (Some(_), None) => true,
            (None, None) => {
                self.known_accounts.remember(account.as_str().to_owned(), 0);
                true
            }
        }
    }

    /// Whether a 404 for `account` proves it absent for this payment. The read must cover
    /// (1) any ledger at which the account was already seen, and (2) the payment's absence
    /// fence: a ledger that closed at least [`ABSENCE_CLOCK_SKEW_SECS`] after the payment was
    /// accepted, so the read reflects every account that existed when the payment was
    /// accepted. A lagging node's 404 (an account funded a few ledgers ago) postpones the
    /// decision; a node never lags forever, so an account that truly does not exist is
    /// reported once a read reaches the fence.
    async fn absence_proven(
        &self,
        payment: &PaymentRecord,
        account: &AccountId,
        read: &AtLedger<Option<AccountInfo>>,
    ) -> Result<bool, NetworkError> {
        if let Some(seen) = self.known_accounts.get(account.as_str())
            && !read.covers(seen)
        {
            return Ok(false);
        }
        let fence = match self.absence_fences.get(&payment.id) {
            Some(fence) => fence,
            None => {
                let accepted = payment.accepted_at_ms.div_euclid(1000);
                let latest = self.network.latest_ledger().await?;
                if latest.closed_at < accepted + ABSENCE_CLOCK_SKEW_SECS {
                    return Ok(false);
                }
                self.absence_fences.remember(payment.id, latest.sequence);
                latest.sequence
            }
        };
        Ok(read.covers(fence))
    }

    /// Postpones a decision whose read came from a node behind the ledger that proves it.
    fn read_behind(&self, payment: &PaymentRecord, read: &'static str) -> Next {
        tracing::info!(payment_id = %payment.id, read, "network read from a node behind; decision postponed");
        self.metrics.read_behind(read);
        let waited = (unix_now() - payment.accepted_at_ms.div_euclid(1000)).max(0);
        Next::Wait(backoff(waited / 2).min(Duration::from_secs(2)))
    }

    fn validity_secs(&self) -> i64 {
        i64::try_from(self.settings.max_validity_secs).unwrap_or(300)
    }

    fn guard_secs(&self) -> i64 {
        i64::try_from(self.settings.sequence_guard_secs).unwrap_or(60)
    }

    async fn submit(&self, lease: &Lease, payment: &PaymentRecord) -> Result<Next> {
        let (Some(envelope), Some(hash)) = (&payment.envelope_xdr, &payment.tx_hash) else {
            return Err(Error::CorruptData(format!(
                "payment {} is {} without an envelope",
                payment.id,
                payment.status.as_str()
            )));
        };
        // Already sent once and bidding below the cap (signed before the cap was raised): in a
        // surge it would wait outside the ledgers until it expires, so bump it first.
        if payment.status == PaymentStatus::Submitted
            && payment
                .fee_stroops
                .is_some_and(|fee| fee < i64::from(self.settings.max_fee_stroops))
            && let Some(next) = self.fee_bump(lease, payment).await?
        {
            return Ok(next);
        }
        if !self.store.mark_submitted(lease, payment).await? {
            // Moved on, or the lease is lost: nothing is sent.
            return Ok(Next::Continue);
        }
        let payment = &PaymentRecord {
            status: PaymentStatus::Submitted,
            attempts: payment.attempts + 1,
            ..payment.clone()
        };
        match self.network.submit(envelope).await {
            Submission::Applied(record) => self.finish(lease, payment, hash, &record).await,
            Submission::Rejected(codes) if is_final_rejection(&codes) => {
                tracing::info!(payment_id = %payment.id, ?codes, "transaction rejected");
                let outcome = Outcome {
                    status: PaymentStatus::Failed,
                    tx_hash: Some(hash),
                    ledger: None,
                    fee_charged: None,
                    codes: Some(&codes),
                    reason: Some("NETWORK_REJECTED"),
                };
                if self.store.finish_payment(lease, payment, &outcome).await? {
                    self.metrics.payment_finished("FAILED");
                    return Ok(Next::Finished);
                }
                Ok(Next::Continue)
            }
            Submission::Rejected(codes) if codes.transaction == "tx_insufficient_fee" => {
                tracing::info!(payment_id = %payment.id, "fee too low for the surge");
                self.fee_bump_or_confirm(lease, payment).await
            }
            Submission::NotYetDecided => {
                tracing::info!(payment_id = %payment.id, "submission not decided (surge)");
                self.fee_bump_or_confirm(lease, payment).await
            }
            Submission::Rejected(codes) => {
                tracing::info!(payment_id = %payment.id, code = %codes.transaction, "ambiguous rejection; confirming by hash");
                self.confirm(lease, payment).await
            }
            Submission::RateLimited(retry_after) => {
                // Not taken: the same bytes go again once the API's Retry-After has passed.
                tracing::info!(payment_id = %payment.id, retry_after_ms = retry_after.as_millis() as u64, "submission rate limited");
                Ok(Next::Wait(retry_after.max(backoff(0))))
            }
            Submission::Unknown(reason) => {
                tracing::info!(payment_id = %payment.id, %reason, "submission outcome unknown; confirming by hash");
                self.fee_bump_or_confirm(lease, payment).await
            }
        }
    }

    /// A transaction stuck in a surge whose fee is below the cap (signed before the cap was
    /// raised) is wrapped in a fee bump at the cap, paid by the wallet itself: the same inner
    /// transaction (same sequence, same hash inside), so nothing new can be paid, and it is
    /// included now instead of after its expiry. Otherwise, or if signerd will not sign the
    /// bump, confirm as for any ambiguous answer.
    async fn fee_bump_or_confirm(&self, lease: &Lease, payment: &PaymentRecord) -> Result<Next> {
        match self.fee_bump(lease, payment).await? {
            Some(next) => Ok(next),
            None => self.confirm(lease, payment).await,
        }
    }

    /// The fee bump itself; `None` when it does not apply (fee at the cap, expired, already a
    /// fee bump) or signerd would not sign it.
    async fn fee_bump(&self, lease: &Lease, payment: &PaymentRecord) -> Result<Option<Next>> {
        let cap = i64::from(self.settings.max_fee_stroops);
        let (Some(envelope), Some(sequence), Some(max_time)) =
            (&payment.envelope_xdr, payment.sequence, payment.max_time)
        else {
            return Ok(None);
        };
        if payment.fee_stroops.is_some_and(|fee| fee >= cap) || unix_now() >= max_time {
            return Ok(None);
        }
        let Some((key_id, source)) = self.source_of(payment).await? else {
            return Ok(None);
        };
        // One operation inside: a fee bump pays for it and for itself, at the cap's rate.
        let bump = match UnsignedFeeBump::wrap(
            envelope,
            &source,
            cap.saturating_mul(2),
            &self.settings.network_passphrase,
        ) {
            Ok(bump) => bump,
            Err(e) => {
                tracing::warn!(payment_id = %payment.id, error = %e, "cannot fee-bump; confirming");
                return Ok(None);
            }
        };
        let request_id = RequestId::from_caller(&format!("payment-{}", payment.id))
            .unwrap_or_else(RequestId::generate);
        let signature = match self
            .signer
            .sign_transaction(
                &key_id,
                &bump.xdr,
                &self.settings.network_passphrase,
                &request_id,
            )
            .await
        {
            Ok(signature) => signature,
            Err(e) => {
                tracing::warn!(payment_id = %payment.id, error = %e, "signerd did not sign the fee bump; confirming");
                return Ok(None);
            }
        };
        if signature.tx_hash.as_slice() != bump.hash.as_slice() {
            return Err(Error::Signer(
                "signerd signed a different fee-bump hash than the gateway computed".into(),
            ));
        }
        let hash = hex::encode(bump.hash);
        let inner_hash = hex::encode(bump.inner_hash);
        let bumped = bump.attach(&signature.hint, &signature.signature)?;
        let stored = self
            .store
            .mark_fee_bumped(
                lease,
                payment,
                &SignedEnvelope {
                    sequence,
                    max_time,
                    fee: cap,
                    hash: &hash,
                    envelope_xdr: &bumped,
                },
            )
            .await?;
        if !stored {
            return Ok(Some(Next::Continue));
        }
        tracing::info!(payment_id = %payment.id, tx_hash = %hash, %inner_hash, fee = cap, "fee bump signed");
        Ok(Some(Next::Submit(Box::new(PaymentRecord {
            status: PaymentStatus::Signed,
            fee_stroops: Some(cap),
            tx_hash: Some(hash),
            envelope_xdr: Some(bumped),
            ..payment.clone()
        }))))
    }

    async fn finish(
        &self,
        lease: &Lease,
        payment: &PaymentRecord,
        hash: &str,
        record: &TransactionRecord,
    ) -> Result<Next> {
        // The source's state as of this ledger includes this transaction: later sequence reads
        // must come from a node at or past it.
        if let Some((_, source)) = self.source_of(payment).await? {
            self.saw_account(&source, Some(record.ledger));
        }
        if !record.successful
            && record
                .result_codes
                .operations
                .iter()
                .any(|code| code == "op_already_exists")
            && let Ok(DestinationAccount::Account(destination)) =
                DestinationAccount::parse(&payment.destination_account)
        {
            // A create_account built on a 404 for a destination that existed (created after the
            // fenced read, or between build and apply). It failed in its ledger and paid nothing;
            // its sequence is spent, so no transaction of this payment can apply any more:
            // rebuild on a new sequence, as a payment now that the ledger proved the account.
            self.known_accounts
                .remember(destination.as_str().to_owned(), record.ledger);
            let why = format!(
                "transaction {hash} created an account that already existed (op_already_exists, ledger {}): rebuilt as a payment on a new sequence",
                record.ledger
            );
            tracing::warn!(payment_id = %payment.id, "{why}");
            self.store
                .reset_for_rebuild(lease, payment, Rebuild::NewSequence, &why)
                .await?;
            return Ok(Next::Continue);
        }
        let status = if record.successful {
            PaymentStatus::Success
        } else {
            PaymentStatus::Failed
        };
        let outcome = Outcome {
            status,
            tx_hash: Some(hash),
            ledger: Some(record.ledger),
            fee_charged: Some(record.fee_charged),
            codes: (!record.successful).then_some(&record.result_codes),
            reason: (!record.successful).then_some("TRANSACTION_FAILED"),
        };
        if self.store.finish_payment(lease, payment, &outcome).await? {
            self.metrics.payment_finished(status.as_str());
            return Ok(Next::Finished);
        }
        Ok(Next::Continue)
    }

    /// After an ambiguous submission: find the transaction, or prove it can never land.
    async fn confirm(&self, lease: &Lease, payment: &PaymentRecord) -> Result<Next> {
        let (Some(sequence), Some(max_time)) = (payment.sequence, payment.max_time) else {
            return Err(Error::CorruptData(
                "in-flight payment without sequence".into(),
            ));
        };
        // The fence: every read below must come from a node at or past this ledger for an
        // absence to count. Read first, so a later read from a node behind it is detected.
        let latest = match self.network.latest_ledger().await {
            Ok(latest) => latest,
            Err(e) => return Ok(self.network_wait(payment, &e)),
        };
        let signed = self.store.payment_transactions(payment.id).await?;
        let mut reads_behind = false;
        for tx in &signed {
            match self.network.transaction(&tx.hash).await {
                Ok(TransactionRead {
                    read:
                        AtLedger {
                            value: Some(record),
                            ..
                        },
                    ..
                }) => return self.finish(lease, payment, &tx.hash, &record).await,
                Ok(absent) => {
                    // A transaction on this sequence cannot have been submitted before it was
                    // signed (its max_time less the validity window): a node whose history
                    // starts later cannot show it, so its "not found" proves nothing. One on an
                    // earlier sequence was proven dead when that sequence went to another
                    // transaction; only the freshness of its read matters.
                    let signed_at = if tx.sequence == sequence {
                        tx.max_time - self.validity_secs()
                    } else {
                        i64::MAX
                    };
                    reads_behind |= !absent.proves_absent(latest.sequence, signed_at);
                }
                Err(e) => return Ok(self.network_wait(payment, &e)),
            }
        }
        let Some((_, source)) = self.source_of(payment).await? else {
            return Err(Error::CorruptData(
                "payment of a wallet without a key".into(),
            ));
        };
        let account = match self.network.account_at(source.as_str()).await {
            Ok(account) => account,
            Err(e) => return Ok(self.network_wait(payment, &e)),
        };
        if let Some(info) = &account.value
            && info.sequence >= sequence
        {
            // Used: by one of this payment's transactions (not ingested yet, or its hash lookup
            // was answered by a lagging node) or by someone else. The history tells which.
            let as_of = account.ledger.unwrap_or(latest.sequence);
            return self
                .sequence_spent(lease, payment, &source, sequence, as_of, &signed)
                .await;
        }
        if latest.closed_at <= max_time {
            // Still valid: resubmit the same bytes after a backoff.
            return Ok(Next::Wait(backoff(payment.attempts)));
        }
        if reads_behind || !account.covers(latest.sequence) {
            tracing::info!(
                payment_id = %payment.id,
                ledger = latest.sequence,
                "a read came from a node behind the ledger that closed after max_time; absence not proven"
            );
            return Ok(Next::Wait(backoff(payment.attempts)));
        }
        let why = format!(
            "rebuild on sequence {sequence}: no signed transaction found and the sequence unused as of ledger {} (closed at {}, after max_time {max_time})",
            latest.sequence, latest.closed_at
        );
        tracing::info!(payment_id = %payment.id, "{why}");
        self.store
            .reset_for_rebuild(lease, payment, Rebuild::SameSequence, &why)
            .await?;
        Ok(Next::Continue)
    }

    /// The account's sequence is at or past the payment's: find which transaction used it.
    async fn sequence_spent(
        &self,
        lease: &Lease,
        payment: &PaymentRecord,
        source: &AccountId,
        sequence: i64,
        as_of: i64,
        signed: &[SignedTransaction],
    ) -> Result<Next> {
        let ours = |hash: &str| signed.iter().any(|tx| tx.hash == hash);
        let usage = match self
            .network
            .sequence_use(source.as_str(), sequence, as_of)
            .await
        {
            Ok(usage) => usage,
            Err(e) => {
                tracing::warn!(payment_id = %payment.id, error = %e, "cannot read the account's history");
                SequenceUse::NotShown
            }
        };
        match usage {
            SequenceUse::By {
                hash,
                inner_hash,
                record,
            } => {
                if ours(&hash) {
                    return self.finish(lease, payment, &hash, &record).await;
                }
                if let Some(inner) = inner_hash.as_deref().filter(|h| ours(h)) {
                    return self.finish(lease, payment, inner, &record).await;
                }
                // Spent by a transaction that is not this payment's: none of its transactions
                // (all on this sequence, or on earlier ones already proven dead) can ever apply.
                let why = format!(
                    "sequence {sequence} was used by transaction {hash}, not this payment's: rebuilt on a new sequence"
                );
                tracing::warn!(payment_id = %payment.id, "{why}");
                self.store
                    .reset_for_rebuild(lease, payment, Rebuild::NewSequence, &why)
                    .await?;
                Ok(Next::Continue)
            }
            SequenceUse::Pruned => {
                self.park(
                    lease,
                    payment,
                    &format!(
                        "SEQUENCE_SPENT_UNKNOWN: sequence {sequence} is used and the network's history of the account no longer reaches it"
                    ),
                )
                .await
            }
            SequenceUse::NotShown | SequenceUse::Behind
                if payment.attempts >= self.settings.attention_after_confirmations =>
            {
                self.park(
                    lease,
                    payment,
                    &format!(
                        "SEQUENCE_SPENT_UNKNOWN: sequence {sequence} is used and after {} confirmations the network's history does not show by which transaction",
                        payment.attempts
                    ),
                )
                .await
            }
            SequenceUse::NotShown | SequenceUse::Behind => {
                // Applied but not ingested yet (or a lagging node): look again shortly.
                Ok(Next::Wait(backoff(payment.attempts).min(Duration::from_secs(1))))
            }
        }
    }

    /// Parks a payment whose sequence is spent as `NEEDS_ATTENTION`, with a metric and a log
    /// line; the admin resolve route settles it.
    async fn park(&self, lease: &Lease, payment: &PaymentRecord, why: &str) -> Result<Next> {
        if self.store.park_for_attention(lease, payment, why).await? {
            tracing::error!(payment_id = %payment.id, wallet = %payment.source_wallet_id, reason = why, "payment needs attention");
            self.metrics.payment_needs_attention();
            return Ok(Next::Finished);
        }
        Ok(Next::Continue)
    }

    fn network_wait(&self, payment: &PaymentRecord, e: &NetworkError) -> Next {
        tracing::warn!(payment_id = %payment.id, error = %e, "network unavailable; payment waits");
        let wait = backoff(payment.attempts);
        Next::Wait(e.retry_after().map_or(wait, |asked| asked.max(wait)))
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
}
