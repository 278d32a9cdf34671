//! Wallet provisioning: the sequence that makes "get or create the user's wallet" atomic,
//! idempotent and resumable.
//!
//! 1. **Reserve.** Insert a wallet row for the user with a fresh id and the key id derived from
//!    it (`wallet-<id>`), or find the existing one: the UNIQUE constraint on `user_id` makes the
//!    database the single arbiter, across requests and replicas.
//! 2. **Create the key.** Ask signerd `CreateKey(wallet-<id>)`. It is idempotent on the key id,
//!    so asking again after a crash or a lost answer returns the same key; no orphan keys.
//! 3. **Complete.** Store the public key (only while it is still NULL) with the audit event.
//!
//! A crash or an unavailable signerd between 1 and 3 leaves a reservation that nobody sees (the
//! API shows only complete wallets); the next request for the user finds it in step 1 and
//! resumes at step 2. Within one process, requests for the same user queue on a lock so that 50
//! concurrent requests make one `CreateKey` call, not 50.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::api_key::Caller;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{Actor, RequestId, UserId, UserStatus, Wallet};
use crate::signer::Signer;
use crate::store::{AuditContext, Store, WalletRecord};

/// How many lock stripes requests for different users are spread over.
const LOCK_STRIPES: usize = 256;

/// Whether the wallet returned was completed by this request or already existed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// This request completed the wallet (HTTP 201).
    Created,
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

    /// The user's wallet, created (or completed) when needed. Refused for a missing or blocked
    /// user and for a frozen wallet; [`Error::SignerUnavailable`] when signerd cannot be reached,
    /// in which case a later call completes the same wallet.
    pub async fn get_or_create(
        &self,
        user_id: UserId,
        caller: &Caller,
        request_id: &RequestId,
    ) -> Result<(Wallet, Provisioned)> {
        let _same_user = self.lock_for(user_id).lock().await;
        let user = self
            .store
            .user(user_id)
            .await?
            .ok_or(Error::UserNotFound(user_id))?;
        if user.status == UserStatus::Blocked {
            return Err(Error::UserBlocked(user_id));
        }
        let record = self.store.reserve_wallet(user_id).await?;
        if record.is_frozen() {
            return Err(Error::WalletFrozen(record.id));
        }
        if let Some(wallet) = record.clone().complete() {
            return Ok((wallet, Provisioned::Existing));
        }
        self.complete(record, caller, request_id).await
    }

    async fn complete(
        &self,
        record: WalletRecord,
        caller: &Caller,
        request_id: &RequestId,
    ) -> Result<(Wallet, Provisioned)> {
        let key = self.signer.create_key(&record.key_id, request_id).await?;
        let ctx = AuditContext {
            actor: Actor::ApiKey(caller.key_id),
            request_id: Some(request_id.clone()),
        };
        let completed_here = self
            .store
            .complete_wallet(record.id, &key.public_key, &ctx)
            .await?;
        if completed_here {
            self.metrics.wallet_created();
            tracing::info!(wallet_id = %record.id, key_id = %record.key_id, public_key = %key.public_key, "wallet created");
            // This request stored exactly this key (the UPDATE matched the reservation), so the
            // wallet is the reservation plus the key: no need to read it back.
            let wallet = WalletRecord {
                public_key: Some(key.public_key),
                ..record
            }
            .complete()
            .ok_or_else(|| Error::CorruptData("completed wallet without a key".into()))?;
            return Ok((wallet, Provisioned::Created));
        }
        // Another request (here or on another replica) completed it first: show what it stored.
        let wallet = self
            .store
            .wallet(record.id)
            .await?
            .and_then(WalletRecord::complete)
            .ok_or_else(|| {
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
        Ok((wallet, Provisioned::Existing))
    }

    fn lock_for(&self, user_id: UserId) -> &Mutex<()> {
        let bytes = user_id.to_string();
        // The last hex digits of a UUIDv7 are random: a fine stripe index.
        let tail = u64::from_str_radix(&bytes[bytes.len() - 8..], 16).unwrap_or(0);
        &self.user_locks[(tail as usize) % LOCK_STRIPES]
    }
}
