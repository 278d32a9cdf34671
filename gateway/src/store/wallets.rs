//! Wallets: one per user (the UNIQUE constraint on `user_id` decides, across replicas), reserved
//! first and completed once signerd has confirmed the key. See [`crate::provision`] for the
//! sequence.

use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::{
    AuditContext, Backend, Flag, Store, audit, optional_text, optional_timestamp, stored, text,
};
use crate::error::{Error, Result};
use crate::model::{
    AccountId, AuditAction, Reason, SignerKeyId, Timestamp, UserId, Wallet, WalletId, WalletStatus,
};

/// A wallet row, complete or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletRecord {
    /// The wallet's id.
    pub id: WalletId,
    /// Its owner.
    pub user_id: UserId,
    /// The signerd key id, fixed at reservation (`wallet-<id>`).
    pub key_id: SignerKeyId,
    /// The public key, once signerd has confirmed the key; `None` for a reservation.
    pub public_key: Option<AccountId>,
    /// When an admin froze it.
    pub frozen_at: Option<Timestamp>,
    /// When it was reserved.
    pub created_at: Timestamp,
}

impl WalletRecord {
    /// The wallet as the API shows it, or `None` while it is only a reservation: a wallet whose
    /// key is not confirmed is never shown to anyone.
    pub fn complete(self) -> Option<Wallet> {
        let public_key = self.public_key?;
        Some(Wallet {
            id: self.id,
            user_id: self.user_id,
            key_id: self.key_id,
            public_key,
            status: if self.frozen_at.is_some() {
                WalletStatus::Frozen
            } else {
                WalletStatus::Active
            },
            created_at: self.created_at,
            frozen_at: self.frozen_at,
        })
    }

    /// True when an admin froze the wallet.
    pub fn is_frozen(&self) -> bool {
        self.frozen_at.is_some()
    }
}

const COLUMNS: &str = "id, user_id, key_id, public_key, frozen_at, created_at";

fn wallet_from_row(row: &AnyRow) -> Result<WalletRecord> {
    Ok(WalletRecord {
        id: stored("wallets.id", WalletId::parse(&text(row, "id")?))?,
        user_id: stored("wallets.user_id", UserId::parse(&text(row, "user_id")?))?,
        key_id: stored("wallets.key_id", SignerKeyId::parse(&text(row, "key_id")?))?,
        public_key: optional_text(row, "public_key")?
            .map(|pk| stored("wallets.public_key", AccountId::parse(&pk)))
            .transpose()?,
        frozen_at: optional_timestamp(row, "frozen_at")?,
        created_at: Timestamp::from_stored(text(row, "created_at")?)?,
    })
}

const FROZEN: Flag = Flag {
    table: "wallets",
    column: "frozen_at",
    subject_type: "wallet",
    on_action: AuditAction::WalletFrozen,
    off_action: AuditAction::WalletUnfrozen,
};

/// The statements of [`Store::complete_wallet`], on a connection inside a transaction.
async fn complete_on(
    conn: &mut AnyConnection,
    id: WalletId,
    public_key: &AccountId,
    ctx: &AuditContext,
) -> Result<bool> {
    let now = Timestamp::now();
    let completed = sqlx::query(
        "UPDATE wallets SET public_key = $1, updated_at = $2 \
         WHERE id = $3 AND public_key IS NULL",
    )
    .bind(public_key.as_str())
    .bind(now.as_str())
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if completed {
        audit::record(
            conn,
            ctx,
            &now,
            AuditAction::WalletCreated,
            "wallet",
            &id.to_string(),
            serde_json::json!({
                "key_id": SignerKeyId::for_wallet(id).as_str(),
                "public_key": public_key.as_str(),
            }),
        )
        .await?;
    }
    Ok(completed)
}

impl Store {
    /// A wallet with whether its owner is blocked, in one read (what accepting a payment
    /// checks).
    pub async fn wallet_with_owner_blocked(
        &self,
        id: WalletId,
    ) -> Result<Option<(WalletRecord, bool)>> {
        let row = sqlx::query(
            "SELECT wallets.id AS id, wallets.user_id AS user_id, wallets.key_id AS key_id, \
             wallets.public_key AS public_key, wallets.frozen_at AS frozen_at, \
             wallets.created_at AS created_at, users.blocked_at AS blocked_at \
             FROM wallets JOIN users ON users.id = wallets.user_id WHERE wallets.id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok((
                wallet_from_row(&row)?,
                optional_text(&row, "blocked_at")?.is_some(),
            ))
        })
        .transpose()
    }

    /// Returns the user's wallet row, reserving one first when the user has none. Concurrent
    /// callers (in this process or another replica) all get the same row: the insert does
    /// nothing when the UNIQUE constraint on `user_id` finds an existing wallet. The user must
    /// exist (the foreign key refuses otherwise).
    pub async fn reserve_wallet(&self, user_id: UserId) -> Result<WalletRecord> {
        if let Some(existing) = self.wallet_of_user(user_id).await? {
            return Ok(existing);
        }
        let id = WalletId::generate();
        let now = Timestamp::now();
        // On SQLite in a group commit, sharing its fsync with other requests' writes.
        self.write_statement(
            sqlx::query(
                "INSERT INTO wallets (id, user_id, key_id, public_key, frozen_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, NULL, NULL, $4, $4) \
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(user_id.to_string())
            .bind(SignerKeyId::for_wallet(id).as_str().to_owned())
            .bind(now.as_str().to_owned()),
        )
        .await?;
        self.wallet_of_user(user_id).await?.ok_or_else(|| {
            Error::CorruptData(format!(
                "wallet of user {user_id} vanished after reservation"
            ))
        })
    }

    /// Stores the confirmed public key of a reserved wallet and records `wallet.created`,
    /// atomically: on SQLite in one savepoint of a group commit (sharing its fsync with other
    /// requests' writes), on Postgres in one transaction. Returns true when this call completed
    /// it, false when it already was complete (another request got there first).
    pub async fn complete_wallet(
        &self,
        id: WalletId,
        public_key: &AccountId,
        ctx: &AuditContext,
    ) -> Result<bool> {
        let (public_key, ctx) = (public_key.clone(), ctx.clone());
        if self.backend == Backend::Sqlite {
            return self
                .write(Box::new(move |conn| {
                    Box::pin(async move { complete_on(conn, id, &public_key, &ctx).await })
                }))
                .await;
        }
        let mut tx = self.pool.begin().await?;
        let completed = complete_on(&mut tx, id, &public_key, &ctx).await?;
        tx.commit().await?;
        Ok(completed)
    }

    /// One wallet row by id (complete or not).
    pub async fn wallet(&self, id: WalletId) -> Result<Option<WalletRecord>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM wallets WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(wallet_from_row)
            .transpose()
    }

    /// The user's wallet row (complete or not).
    pub async fn wallet_of_user(&self, user_id: UserId) -> Result<Option<WalletRecord>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM wallets WHERE user_id = $1"))
            .bind(user_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(wallet_from_row)
            .transpose()
    }

    /// Freezes (`frozen = true`) or unfreezes a wallet, recording who and why. Only complete
    /// wallets can be found this way (a reservation has no id anyone was told).
    pub async fn set_wallet_frozen(
        &self,
        id: WalletId,
        frozen: bool,
        reason: &Reason,
        ctx: &AuditContext,
    ) -> Result<Wallet> {
        let not_found = || Error::WalletNotFound(format!("wallet {id} not found"));
        match self.wallet(id).await?.and_then(WalletRecord::complete) {
            Some(_) => {}
            None => return Err(not_found()),
        }
        self.set_flag(FROZEN, &id.to_string(), frozen, reason, ctx)
            .await?;
        self.wallet(id)
            .await?
            .and_then(WalletRecord::complete)
            .ok_or_else(not_found)
    }
}
