//! Wallets: one per user (the UNIQUE constraint on `user_id` decides, across replicas), reserved
//! first and completed once signerd has confirmed the key. See [`crate::provision`] for the
//! sequence.
//!
//! The `Idempotency-Key` of `POST /v1/users/{user_id}/wallet` lives on the wallet row (as a
//! payment's does), not in the generic claim table: reserving writes the key with the row, and
//! completing writes the completing request's key with the public key and the audit event. A new
//! wallet is two commits, shared with other requests' writes on SQLite ([`Store::write_transaction`]).

use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use sqlx::Row;

use super::{
    AuditContext, Backend, Flag, Store, audit, optional_text, optional_timestamp, stored, text,
};
use crate::error::{Error, Result};
use crate::model::{
    AccountId, ApiKeyId, AuditAction, IdempotencyKey, Reason, SignerKeyId, Timestamp, UserId,
    Wallet, WalletId, WalletStatus,
};

/// A wallet request as its `Idempotency-Key` binds it: the caller's API key (keys are scoped to
/// it), the key, and the hash of the request (method, path, body) it was sent with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletRequest {
    /// The caller's API key.
    pub api_key_id: ApiKeyId,
    /// The caller's Idempotency-Key.
    pub idempotency_key: IdempotencyKey,
    /// SHA-256 of method, path and body (see `http::idempotency::request_hash`).
    pub request_hash: String,
}

/// What an Idempotency-Key was already used for, as a wallet request sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum EarlierRequest {
    /// The same request created this wallet: its answer was 201 with the wallet as completed.
    Created(Wallet),
    /// The same request's answer is stored in the claim table (a 200, or another route's
    /// answer to an identical request made before migration 0009).
    Stored {
        /// The stored HTTP status.
        status: u16,
        /// The stored JSON body.
        body: String,
    },
    /// The key was used with a different request (another user's wallet, another route).
    Conflict,
    /// A request with this key holds a live claim in the generic table.
    InProgress,
}

/// What a wallet request finds before it provisions (see [`Store::wallet_request_state`]).
#[derive(Debug)]
pub struct WalletRequestState {
    /// What its Idempotency-Key was already used for, if anything.
    pub earlier: Option<EarlierRequest>,
    /// The user, or `None` when there is no such user.
    pub user: Option<UserWallet>,
}

/// A user as a wallet request sees it.
#[derive(Clone, Debug)]
pub struct UserWallet {
    /// An admin blocked the user.
    pub blocked: bool,
    /// The user's wallet row (complete or a reservation), if any.
    pub wallet: Option<WalletRecord>,
}

/// What the wallet row holding a request's Idempotency-Key says about the request. A
/// reservation with the key and the same request is nothing: the request resumes it (its first
/// attempt crashed, or runs on another replica and the two meet at the completion). A
/// reservation with the key and another request is that request still running (a failed one
/// released its key, see [`Store::release_wallet_key`]).
fn earlier_wallet(record: &WalletRecord, request: &WalletRequest) -> Option<EarlierRequest> {
    match record.created_by(request) {
        Some(wallet) => Some(EarlierRequest::Created(wallet)),
        None if record.request.as_ref() == Some(request) => None,
        None if record.public_key.is_none() => Some(EarlierRequest::InProgress),
        None => Some(EarlierRequest::Conflict),
    }
}

/// What the generic claim table's row for a request's Idempotency-Key (its columns named
/// `{prefix}request_hash` and so on) says about the request.
fn earlier_claim(
    claim: &AnyRow,
    prefix: &str,
    request: &WalletRequest,
) -> Result<Option<EarlierRequest>> {
    let column = |name: &str| format!("{prefix}{name}");
    if text(claim, &column("request_hash"))? != request.request_hash {
        return Ok(Some(EarlierRequest::Conflict));
    }
    if let Some(status) = claim.try_get::<Option<i64>, _>(column("response_status").as_str())? {
        return Ok(Some(EarlierRequest::Stored {
            status: u16::try_from(status).unwrap_or(500),
            body: optional_text(claim, &column("response_body"))?.unwrap_or_default(),
        }));
    }
    // An identical request claimed through the generic table (a gateway from before
    // migration 0009): running while its lock lasts, abandoned after.
    let live = text(claim, &column("locked_until"))?.as_str() >= Timestamp::now().as_str();
    Ok(live.then_some(EarlierRequest::InProgress))
}

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
    /// The request that completed it (or, while it is a reservation, reserved it); `None` for
    /// wallets made before migration 0009 or reserved without a key.
    pub request: Option<WalletRequest>,
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

    /// The wallet as the 201 answer to `request` showed it, when `request` completed it: the
    /// answer a replay repeats. Only complete wallets can be frozen, so the answer was never
    /// frozen, whatever happened since.
    pub fn created_by(&self, request: &WalletRequest) -> Option<Wallet> {
        if self.request.as_ref() != Some(request) {
            return None;
        }
        WalletRecord {
            frozen_at: None,
            ..self.clone()
        }
        .complete()
    }
}

const COLUMNS: &str = "id, user_id, key_id, public_key, frozen_at, created_at, api_key_id, idempotency_key, request_hash";

fn wallet_from_row(row: &AnyRow) -> Result<WalletRecord> {
    prefixed_wallet_from_row(row, "")
}

/// A wallet row whose [`COLUMNS`] were selected with `prefix` before each name (a join).
fn prefixed_wallet_from_row(row: &AnyRow, prefix: &str) -> Result<WalletRecord> {
    let column = |name: &str| format!("{prefix}{name}");
    Ok(WalletRecord {
        id: stored("wallets.id", WalletId::parse(&text(row, &column("id"))?))?,
        user_id: stored(
            "wallets.user_id",
            UserId::parse(&text(row, &column("user_id"))?),
        )?,
        key_id: stored(
            "wallets.key_id",
            SignerKeyId::parse(&text(row, &column("key_id"))?),
        )?,
        public_key: optional_text(row, &column("public_key"))?
            .map(|pk| stored("wallets.public_key", AccountId::parse(&pk)))
            .transpose()?,
        frozen_at: optional_timestamp(row, &column("frozen_at"))?,
        created_at: Timestamp::from_stored(text(row, &column("created_at"))?)?,
        request: request_from_row(row, prefix)?,
    })
}

/// [`COLUMNS`] of the wallets table aliased `table`, each renamed `{prefix}{column}`.
fn prefixed_columns(table: &str, prefix: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{table}.{c} AS {prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn request_from_row(row: &AnyRow, prefix: &str) -> Result<Option<WalletRequest>> {
    let (Some(api_key_id), Some(key), Some(hash)) = (
        optional_text(row, &format!("{prefix}api_key_id"))?,
        optional_text(row, &format!("{prefix}idempotency_key"))?,
        optional_text(row, &format!("{prefix}request_hash"))?,
    ) else {
        return Ok(None);
    };
    Ok(Some(WalletRequest {
        api_key_id: stored("wallets.api_key_id", ApiKeyId::parse(&api_key_id))?,
        idempotency_key: stored("wallets.idempotency_key", IdempotencyKey::parse(&key))?,
        request_hash: hash,
    }))
}

const FROZEN: Flag = Flag {
    table: "wallets",
    column: "frozen_at",
    subject_type: "wallet",
    on_action: AuditAction::WalletFrozen,
    off_action: AuditAction::WalletUnfrozen,
};

/// The statements of [`Store::reserve_wallet_for`], on a connection inside a transaction.
async fn reserve_on(
    conn: &mut AnyConnection,
    backend: Backend,
    user_id: UserId,
    request: &WalletRequest,
) -> Result<WalletRecord> {
    // On Postgres the share lock holds off a concurrent block until this commits; SQLite's
    // single writer already does.
    let lock = match backend {
        Backend::Postgres => " FOR SHARE",
        Backend::Sqlite => "",
    };
    let id = WalletId::generate();
    let now = Timestamp::now();
    // The common case in one statement: the user exists, is not blocked and has no wallet.
    // Inserts nothing when the user already has a wallet; a key already on another user's
    // wallet fails the unique index instead: the caller reports the conflict.
    let inserted = sqlx::query(&format!(
        "INSERT INTO wallets (id, user_id, key_id, public_key, frozen_at, created_at, updated_at, \
         api_key_id, idempotency_key, request_hash) \
         SELECT $1, id, $3, NULL, NULL, $4, $4, $5, $6, $7 FROM users \
         WHERE id = $2 AND blocked_at IS NULL{lock} \
         ON CONFLICT (user_id) DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(id.to_string())
    .bind(user_id.to_string())
    .bind(SignerKeyId::for_wallet(id).as_str())
    .bind(now.as_str())
    .bind(request.api_key_id.to_string())
    .bind(request.idempotency_key.as_str())
    .bind(request.request_hash.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return wallet_from_row(&row);
    }
    // Nothing inserted: the user is missing or blocked, or has a wallet.
    let user = sqlx::query(&format!("SELECT blocked_at FROM users WHERE id = $1{lock}"))
        .bind(user_id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::UserNotFound(user_id))?;
    if optional_text(&user, "blocked_at")?.is_some() {
        return Err(Error::UserBlocked(user_id));
    }
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM wallets WHERE user_id = $1"))
        .bind(user_id.to_string())
        .fetch_one(&mut *conn)
        .await?;
    wallet_from_row(&row)
}

/// Stores the public key on the reservation, with the completing request's key (which replaces
/// the reserving one's: the 201 is this request's answer; a reserving request that failed had
/// its key released, as the claim table did). Binds `$1`..`$6`, see [`bind_completion`].
const COMPLETE: &str = "UPDATE wallets SET public_key = $1, updated_at = $2, \
     api_key_id = $3, idempotency_key = $4, request_hash = $5 \
     WHERE id = $6 AND public_key IS NULL";

/// Binds the parameters of [`COMPLETE`].
fn bind_completion<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    id: WalletId,
    public_key: &AccountId,
    request: &WalletRequest,
    now: &Timestamp,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(public_key.as_str().to_owned())
        .bind(now.as_str().to_owned())
        .bind(request.api_key_id.to_string())
        .bind(request.idempotency_key.as_str().to_owned())
        .bind(request.request_hash.clone())
        .bind(id.to_string())
}

/// The details of the `wallet.created` event.
fn created_details(id: WalletId, public_key: &AccountId) -> serde_json::Value {
    serde_json::json!({
        "key_id": SignerKeyId::for_wallet(id).as_str(),
        "public_key": public_key.as_str(),
    })
}

/// The statements of [`Store::complete_wallet`], on a connection inside a transaction.
async fn complete_on(
    conn: &mut AnyConnection,
    id: WalletId,
    public_key: &AccountId,
    request: &WalletRequest,
    ctx: &AuditContext,
) -> Result<bool> {
    let now = Timestamp::now();
    let completed = bind_completion(sqlx::query(COMPLETE), id, public_key, request, &now)
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
            created_details(id, public_key),
        )
        .await?;
    }
    Ok(completed)
}

/// [`complete_on`] as one Postgres statement (a data-modifying CTE), which commits itself: one
/// round trip instead of four (begin, update, insert, commit). The event is the one
/// [`audit::record`] writes.
async fn complete_in_one_statement(
    conn: &mut AnyConnection,
    id: WalletId,
    public_key: &AccountId,
    request: &WalletRequest,
    ctx: &AuditContext,
) -> Result<bool> {
    let now = Timestamp::now();
    let statement = format!(
        "WITH completed AS ({COMPLETE} RETURNING id) \
         INSERT INTO audit_events \
         (occurred_at, actor, action, subject_type, subject_id, request_id, details) \
         SELECT $2, $7, $8, 'wallet', id, $9, $10 FROM completed"
    );
    let recorded = bind_completion(sqlx::query(&statement), id, public_key, request, &now)
        .bind(ctx.actor.to_string())
        .bind(AuditAction::WalletCreated.as_str())
        .bind(ctx.request_id.as_ref().map(|r| r.as_str().to_owned()))
        .bind(created_details(id, public_key).to_string())
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(recorded == 1)
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
             wallets.created_at AS created_at, wallets.api_key_id AS api_key_id, \
             wallets.idempotency_key AS idempotency_key, wallets.request_hash AS request_hash, \
             users.blocked_at AS blocked_at \
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
    /// exist (the foreign key refuses otherwise). The reservation carries no Idempotency-Key:
    /// the API reserves with [`Store::reserve_wallet_for`]; this is for tools and tests.
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

    /// The user (whether blocked) with its wallet row if it has one, in one read; `None` when
    /// there is no such user.
    pub async fn user_with_wallet(&self, user_id: UserId) -> Result<Option<UserWallet>> {
        let row = sqlx::query(&format!(
            "SELECT users.blocked_at AS blocked_at, {} \
             FROM users LEFT JOIN wallets ON wallets.user_id = users.id WHERE users.id = $1",
            prefixed_columns("wallets", "")
        ))
        .bind(user_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(UserWallet {
            blocked: optional_text(&row, "blocked_at")?.is_some(),
            wallet: match optional_text(&row, "id")? {
                Some(_) => Some(wallet_from_row(&row)?),
                None => None,
            },
        }))
    }

    /// Reserves a wallet for the user carrying `request`'s key, or returns the row the user
    /// already has (concurrent callers, here or on another replica, all get the same row). One
    /// transaction with the check that the user exists and is not blocked; on SQLite in a group
    /// commit. A key already on another wallet fails with a unique violation.
    pub async fn reserve_wallet_for(
        &self,
        user_id: UserId,
        request: &WalletRequest,
    ) -> Result<WalletRecord> {
        let (backend, request) = (self.backend, request.clone());
        // The reservation itself is one statement (the reads after it only explain why it
        // inserted nothing): on Postgres it commits itself, one round trip.
        self.write(Box::new(move |conn| {
            Box::pin(async move { reserve_on(conn, backend, user_id, &request).await })
        }))
        .await
    }

    /// Stores the confirmed public key of a reserved wallet with `request` (the answer a replay
    /// of it repeats) and records `wallet.created`, atomically: on SQLite in one savepoint of a
    /// group commit (sharing its fsync with other requests' writes), on Postgres in one
    /// statement. Returns true when this call completed it, false when it already was complete
    /// (another request got there first). A key already on another wallet fails with a unique
    /// violation.
    pub async fn complete_wallet(
        &self,
        id: WalletId,
        public_key: &AccountId,
        request: &WalletRequest,
        ctx: &AuditContext,
    ) -> Result<bool> {
        let (public_key, request, ctx) = (public_key.clone(), request.clone(), ctx.clone());
        match self.backend {
            Backend::Sqlite => {
                self.write_transaction(Box::new(move |conn| {
                    Box::pin(
                        async move { complete_on(conn, id, &public_key, &request, &ctx).await },
                    )
                }))
                .await
            }
            Backend::Postgres => {
                self.write(Box::new(move |conn| {
                    Box::pin(async move {
                        complete_in_one_statement(conn, id, &public_key, &request, &ctx).await
                    })
                }))
                .await
            }
        }
    }

    /// What `request`'s Idempotency-Key was already used for, if anything (see
    /// `earlier_wallet` and `earlier_claim` for how the rows are read).
    pub async fn earlier_wallet_request(
        &self,
        request: &WalletRequest,
    ) -> Result<Option<EarlierRequest>> {
        let wallet = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM wallets WHERE api_key_id = $1 AND idempotency_key = $2"
        ))
        .bind(request.api_key_id.to_string())
        .bind(request.idempotency_key.as_str())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = wallet {
            return Ok(earlier_wallet(&wallet_from_row(&row)?, request));
        }
        let Some(claim) = sqlx::query(
            "SELECT request_hash, locked_until, response_status, response_body \
             FROM idempotency_keys WHERE api_key_id = $1 AND idempotency_key = $2",
        )
        .bind(request.api_key_id.to_string())
        .bind(request.idempotency_key.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        earlier_claim(&claim, "", request)
    }

    /// [`Store::earlier_wallet_request`] and [`Store::user_with_wallet`] in one read: what a
    /// wallet request checks before it provisions.
    pub async fn wallet_request_state(
        &self,
        user_id: UserId,
        request: &WalletRequest,
    ) -> Result<WalletRequestState> {
        let row = sqlx::query(&format!(
            "SELECT u.id AS u_id, u.blocked_at AS u_blocked_at, {}, {}, \
             c.request_hash AS c_request_hash, c.locked_until AS c_locked_until, \
             c.response_status AS c_response_status, c.response_body AS c_response_body \
             FROM (SELECT CAST($1 AS TEXT) AS user_id, CAST($2 AS TEXT) AS api_key_id, \
             CAST($3 AS TEXT) AS idempotency_key) q \
             LEFT JOIN users u ON u.id = q.user_id \
             LEFT JOIN wallets w ON w.user_id = q.user_id \
             LEFT JOIN wallets k ON k.api_key_id = q.api_key_id AND k.idempotency_key = q.idempotency_key \
             LEFT JOIN idempotency_keys c ON c.api_key_id = q.api_key_id AND c.idempotency_key = q.idempotency_key",
            prefixed_columns("w", "w_"),
            prefixed_columns("k", "k_"),
        ))
        .bind(user_id.to_string())
        .bind(request.api_key_id.to_string())
        .bind(request.idempotency_key.as_str())
        .fetch_one(&self.pool)
        .await?;
        let earlier = if optional_text(&row, "k_id")?.is_some() {
            earlier_wallet(&prefixed_wallet_from_row(&row, "k_")?, request)
        } else if optional_text(&row, "c_request_hash")?.is_some() {
            earlier_claim(&row, "c_", request)?
        } else {
            None
        };
        let user = match optional_text(&row, "u_id")? {
            None => None,
            Some(_) => Some(UserWallet {
                blocked: optional_text(&row, "u_blocked_at")?.is_some(),
                wallet: match optional_text(&row, "w_id")? {
                    Some(_) => Some(prefixed_wallet_from_row(&row, "w_")?),
                    None => None,
                },
            }),
        };
        Ok(WalletRequestState { earlier, user })
    }

    /// Takes `request`'s key off the wallet's reservation after the request failed (signerd
    /// unavailable or refusing): a failed request keeps nothing, so the key is free for a
    /// corrected request, as the generic table's release does. The reservation stays for the
    /// next request for the user. Costs a write on the failure path only.
    pub async fn release_wallet_key(&self, id: WalletId, request: &WalletRequest) -> Result<()> {
        self.write_statement(
            sqlx::query(
                "UPDATE wallets SET api_key_id = NULL, idempotency_key = NULL, request_hash = NULL \
                 WHERE id = $1 AND public_key IS NULL AND api_key_id = $2 AND idempotency_key = $3",
            )
            .bind(id.to_string())
            .bind(request.api_key_id.to_string())
            .bind(request.idempotency_key.as_str().to_owned()),
        )
        .await?;
        Ok(())
    }

    /// Stores the answer to a wallet request that did not complete the wallet (a 200: it
    /// existed), so that a replay repeats it, in one write (on SQLite in a group commit). An
    /// answer already stored for the key is kept.
    pub async fn store_wallet_answer(
        &self,
        request: &WalletRequest,
        status: u16,
        body: &str,
    ) -> Result<()> {
        let now = Timestamp::now();
        self.write_statement(
            sqlx::query(
                "INSERT INTO idempotency_keys \
                 (api_key_id, idempotency_key, request_hash, locked_until, response_status, response_body, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $4) \
                 ON CONFLICT (api_key_id, idempotency_key) DO UPDATE \
                 SET response_status = excluded.response_status, response_body = excluded.response_body \
                 WHERE idempotency_keys.response_status IS NULL \
                 AND idempotency_keys.request_hash = excluded.request_hash",
            )
            .bind(request.api_key_id.to_string())
            .bind(request.idempotency_key.as_str().to_owned())
            .bind(request.request_hash.clone())
            .bind(now.as_str().to_owned())
            .bind(i64::from(status))
            .bind(body.to_owned()),
        )
        .await?;
        Ok(())
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
