//! Users: created with a unique external reference; admins block and unblock them.

use sqlx::any::AnyRow;

use super::{AuditContext, Flag, Store, audit, optional_timestamp, stored, text};
use crate::error::{Error, Result};
use crate::model::{AuditAction, ExternalRef, Reason, Timestamp, User, UserId, UserStatus};

const COLUMNS: &str = "id, external_ref, blocked_at, created_at";

fn user_from_row(row: &AnyRow) -> Result<User> {
    let blocked_at = optional_timestamp(row, "blocked_at")?;
    Ok(User {
        id: stored("users.id", UserId::parse(&text(row, "id")?))?,
        external_ref: stored(
            "users.external_ref",
            ExternalRef::parse(&text(row, "external_ref")?),
        )?,
        status: if blocked_at.is_some() {
            UserStatus::Blocked
        } else {
            UserStatus::Active
        },
        created_at: Timestamp::from_stored(text(row, "created_at")?)?,
        blocked_at,
    })
}

const BLOCKED: Flag = Flag {
    table: "users",
    column: "blocked_at",
    subject_type: "user",
    on_action: AuditAction::UserBlocked,
    off_action: AuditAction::UserUnblocked,
};

impl Store {
    /// Creates a user. A second user with the same external reference is refused with
    /// [`Error::UserExists`] naming the existing user (the database's UNIQUE decides, so this
    /// holds across replicas and under concurrency).
    pub async fn create_user(
        &self,
        external_ref: &ExternalRef,
        ctx: &AuditContext,
    ) -> Result<User> {
        let id = UserId::generate();
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, external_ref, blocked_at, created_at, updated_at) \
             VALUES ($1, $2, NULL, $3, $3)",
        )
        .bind(id.to_string())
        .bind(external_ref.as_str())
        .bind(now.as_str())
        .execute(&mut *tx)
        .await
        .map_err(Error::from);
        match inserted {
            Ok(_) => {}
            Err(e) if e.is_unique_violation() => {
                drop(tx);
                return Err(match self.user_by_external_ref(external_ref).await? {
                    Some(existing) => Error::UserExists(existing.id),
                    None => e,
                });
            }
            Err(e) => return Err(e),
        }
        audit::record(
            &mut tx,
            ctx,
            &now,
            AuditAction::UserCreated,
            "user",
            &id.to_string(),
            serde_json::json!({ "external_ref": external_ref.as_str() }),
        )
        .await?;
        tx.commit().await?;
        Ok(User {
            id,
            external_ref: external_ref.clone(),
            status: UserStatus::Active,
            created_at: now,
            blocked_at: None,
        })
    }

    /// One user.
    pub async fn user(&self, id: UserId) -> Result<Option<User>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    /// The user with this external reference.
    pub async fn user_by_external_ref(&self, external_ref: &ExternalRef) -> Result<Option<User>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM users WHERE external_ref = $1"
        ))
        .bind(external_ref.as_str())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    /// Users in id (= creation) order, after `after`.
    pub async fn list_users(&self, after: Option<UserId>, limit: u32) -> Result<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.map(|id| id.to_string()).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Blocks (`blocked = true`) or unblocks a user, recording who and why. Doing it twice is
    /// harmless and records one event.
    pub async fn set_user_blocked(
        &self,
        id: UserId,
        blocked: bool,
        reason: &Reason,
        ctx: &AuditContext,
    ) -> Result<User> {
        if !self
            .set_flag(BLOCKED, &id.to_string(), blocked, reason, ctx)
            .await?
        {
            return Err(Error::UserNotFound(id));
        }
        self.user(id).await?.ok_or(Error::UserNotFound(id))
    }
}
