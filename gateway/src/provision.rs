//! Wallet provisioning: the sequence that makes "get or create the user's wallet" atomic,
//! idempotent and resumable, in two commits per new wallet.
//!
//! 1. **Reserve.** In one transaction: check the user exists and is not blocked, and insert a
//!    wallet row with a fresh id, the key id derived from it (`wallet-<id>`) and the request's
//!    Idempotency-Key, or find the existing one: the UNIQUE constraint on `user_id` makes the
//!    database the single arbiter, across requests and replicas. Skipped when a read already
//!    found the user's row.
//! 2. **Create the key.** Ask signerd `CreateKey(wallet-<id>)`. It is idempotent on the key id,
//!    so asking again after a crash or a lost answer returns the same key; no orphan keys.
//! 3. **Complete.** Store the public key (only while it is still NULL) with the audit event and
//!    the completing request's Idempotency-Key, in one transaction: the row is then that key's
//!    stored answer (201 and the wallet as completed).
//!
//! A crash or an unavailable signerd between 1 and 3 leaves a reservation that nobody sees (the
//! API shows only complete wallets); the next request for the user, with any key, finds it and
//! resumes at step 2. A request that fails there (signerd unavailable or refusing) takes its
//! Idempotency-Key off the reservation, so that a corrected request may use the key (a write on
//! the failure path only); after a crash the key stays, and the same request resumes.
//!
//! Within one process, requests for the same user queue on a lock so that 50 concurrent requests
//! make one `CreateKey` call, not 50. On SQLite both commits go through the group commit,
//! sharing their fsync with other requests' writes.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::api_key::Caller;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{Actor, RequestId, UserId, Wallet};
use crate::signer::Signer;
use crate::store::{AuditContext, EarlierRequest, Store, UserWallet, WalletRecord, WalletRequest};

/// How many lock stripes requests for different users are spread over.
const LOCK_STRIPES: usize = 256;

/// Whether the wallet returned was completed by this request or already existed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// This request completed the wallet (HTTP 201).
    Created,
    /// An earlier request with the same Idempotency-Key completed it: its 201 is answered
    /// again (`Idempotent-Replayed: true`). Seen when identical requests race.
    Replayed,
    /// The wallet was already complete (HTTP 200).
    Existing,
}

/// Gets or creates users' wallets.
pub struct WalletProvisioner {
    store: Store,
    signer: Arc<Signer>,
    metrics: Metrics,
    user_locks: Vec<Mutex<()>>,
}

impl WalletProvisioner {
    /// A provisioner over the store and the signerd client.
    pub fn new(store: Store, signer: Arc<Signer>, metrics: Metrics) -> Self {
        WalletProvisioner {
            store,
            signer,
            metrics,
            user_locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The user's wallet, created (or completed) when needed, for `request` (whose
    /// Idempotency-Key the caller has checked was not used before, see
    /// [`Store::wallet_request_state`], which also read `user`: the user as it stood, `None`
    /// for no such user). Refused for a missing or blocked user and for a frozen wallet;
    /// [`Error::SignerUnavailable`] when signerd cannot be reached, in which case a later call
    /// completes the same wallet; [`Error::IdempotencyConflict`] when the key went to another
    /// wallet meanwhile.
    ///
    /// When no other request for a user of the same lock stripe is running here, `user` is
    /// used as read: the reservation re-checks the user and returns the wallet another request
    /// (here or on another replica) made meanwhile, and the completion stores nothing over a
    /// completed wallet. After waiting for the lock, the user is read again, so that requests
    /// queued behind the one creating the wallet answer it without asking signerd.
    pub async fn get_or_create(
        &self,
        user_id: UserId,
        user: Option<UserWallet>,
        caller: &Caller,
        request_id: &RequestId,
        request: &WalletRequest,
    ) -> Result<(Wallet, Provisioned)> {
        let lock = self.lock_for(user_id);
        let (_same_user, user) = match lock.try_lock() {
            Ok(guard) => (guard, user),
            Err(_) => {
                let guard = lock.lock().await;
                (guard, self.store.user_with_wallet(user_id).await?)
            }
        };
        let UserWallet {
            blocked,
            wallet: existing,
        } = user.ok_or(Error::UserNotFound(user_id))?;
        // An identical request completed it while this one queued: the same answer.
        if let Some(wallet) = existing.as_ref().and_then(|r| r.created_by(request)) {
            return Ok((wallet, Provisioned::Replayed));
        }
        if blocked {
            return Err(Error::UserBlocked(user_id));
        }
        let record = match existing {
            Some(record) => record,
            None => self.reserve(user_id, request).await?,
        };
        if record.is_frozen() {
            return Err(Error::WalletFrozen(record.id));
        }
        if let Some(wallet) = record.created_by(request) {
            return Ok((wallet, Provisioned::Replayed));
        }
        if let Some(wallet) = record.clone().complete() {
            return Ok((wallet, Provisioned::Existing));
        }
        let (id, holds_key) = (record.id, record.request.as_ref() == Some(request));
        let completed = self.complete(record, caller, request_id, request).await;
        if completed.is_err()
            && holds_key
            && let Err(e) = self.store.release_wallet_key(id, request).await
        {
            // The key stays on the reservation: the same request still resumes it; another
            // request with this key gets 409 until the wallet is completed.
            tracing::warn!(error = %e, wallet_id = %id, "cannot release a wallet request's Idempotency-Key");
        }
        completed
    }

    async fn reserve(&self, user_id: UserId, request: &WalletRequest) -> Result<WalletRecord> {
        match self.store.reserve_wallet_for(user_id, request).await {
            Err(e) if e.is_unique_violation() => Err(self.key_reused(request, e).await),
            other => other,
        }
    }

    /// A write refused by the unique index on (API key, Idempotency-Key): the key went to
    /// another wallet since the caller checked it.
    async fn key_reused(&self, request: &WalletRequest, e: Error) -> Error {
        match self.store.earlier_wallet_request(request).await {
            Ok(Some(EarlierRequest::Conflict)) => Error::IdempotencyConflict(
                "this Idempotency-Key was already used with a different request".into(),
            ),
            _ => e,
        }
    }

    async fn complete(
        &self,
        record: WalletRecord,
        caller: &Caller,
        request_id: &RequestId,
        request: &WalletRequest,
    ) -> Result<(Wallet, Provisioned)> {
        let key = self.signer.create_key(&record.key_id, request_id).await?;
        let ctx = AuditContext {
            actor: Actor::ApiKey(caller.key_id),
            request_id: Some(request_id.clone()),
        };
        let completed_here = match self
            .store
            .complete_wallet(record.id, &key.public_key, request, &ctx)
            .await
        {
            Err(e) if e.is_unique_violation() => return Err(self.key_reused(request, e).await),
            other => other?,
        };
        if completed_here {
            self.metrics.wallet_created();
            tracing::info!(wallet_id = %record.id, key_id = %record.key_id, public_key = %key.public_key, "wallet created");
            // This request stored exactly this key (the UPDATE matched the reservation), so the
            // wallet is the reservation plus the key: no need to read it back.
            let wallet = WalletRecord {
                public_key: Some(key.public_key),
                request: Some(request.clone()),
                ..record
            }
            .complete()
            .ok_or_else(|| Error::CorruptData("completed wallet without a key".into()))?;
            return Ok((wallet, Provisioned::Created));
        }
        // Another request (here or on another replica) completed it first: show what it stored.
        let stored = self.store.wallet(record.id).await?.ok_or_else(|| {
            Error::CorruptData(format!("wallet {} vanished after completion", record.id))
        })?;
        // An identical request (another replica, the same key) completed it: its 201 again.
        let (wallet, outcome) = match stored.created_by(request) {
            Some(wallet) => (Some(wallet), Provisioned::Replayed),
            None => (stored.complete(), Provisioned::Existing),
        };
        let wallet = wallet.ok_or_else(|| {
            Error::CorruptData(format!("wallet {} incomplete after completion", record.id))
        })?;
        if wallet.public_key != key.public_key {
            // Impossible while signerd's CreateKey is idempotent on the key id, so it is
            // reported rather than papered over.
            return Err(Error::CorruptData(format!(
                "wallet {} stored a public key signerd does not report",
                wallet.id
            )));
        }
        Ok((wallet, outcome))
    }

    fn lock_for(&self, user_id: UserId) -> &Mutex<()> {
        let bytes = user_id.to_string();
        // The last hex digits of a UUIDv7 are random: a fine stripe index.
        let tail = u64::from_str_radix(&bytes[bytes.len() - 8..], 16).unwrap_or(0);
        &self.user_locks[(tail as usize) % LOCK_STRIPES]
    }
}
