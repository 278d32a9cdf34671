//! API keys: created and revoked from the command line, looked up by hash on every request.

use sqlx::any::AnyRow;

use super::{AuditContext, Store, audit, optional_timestamp, stored, text};
use crate::api_key::{ApiKeyHash, ApiKeyInfo, Caller, Role};
use crate::error::Result;
use crate::model::{ApiKeyId, AuditAction, Timestamp};

impl Store {
    /// Stores a new key's hash with its role and name; records `api_key.created`.
    pub async fn create_api_key(
        &self,
        name: &str,
        role: Role,
        hash: &ApiKeyHash,
        ctx: &AuditContext,
    ) -> Result<ApiKeyId> {
        let id = ApiKeyId::generate();
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, role, key_hash, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(role.as_str())
        .bind(hash.as_str())
        .bind(now.as_str())
        .execute(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            ctx,
            &now,
            AuditAction::ApiKeyCreated,
            "api_key",
            &id.to_string(),
            serde_json::json!({ "name": name, "role": role.as_str() }),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The caller a presented key belongs to, unless unknown or revoked.
    pub async fn caller_by_key_hash(&self, hash: &ApiKeyHash) -> Result<Option<Caller>> {
        let row =
            sqlx::query("SELECT id, role FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
                .bind(hash.as_str())
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Caller {
            key_id: stored("api_keys.id", ApiKeyId::parse(&text(&row, "id")?))?,
            role: stored("api_keys.role", Role::parse(&text(&row, "role")?))?,
        }))
    }

    /// Every key, oldest first (never the hash).
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        let rows =
            sqlx::query("SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(info_from_row).collect()
    }

    /// Revokes a key: it stops working at once. Returns false when no active key has that id.
    pub async fn revoke_api_key(&self, id: ApiKeyId, ctx: &AuditContext) -> Result<bool> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        let revoked =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now.as_str())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        if revoked {
            audit::record(
                &mut tx,
                ctx,
                &now,
                AuditAction::ApiKeyRevoked,
                "api_key",
                &id.to_string(),
                serde_json::json!({}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }
}

fn info_from_row(row: &AnyRow) -> Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: stored("api_keys.id", ApiKeyId::parse(&text(row, "id")?))?,
        name: text(row, "name")?,
        role: stored("api_keys.role", Role::parse(&text(row, "role")?))?,
        created_at: Timestamp::from_stored(text(row, "created_at")?)?,
        revoked_at: optional_timestamp(row, "revoked_at")?,
    })
}
