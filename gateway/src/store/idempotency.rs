//! Idempotency-Key records. A POST first *claims* its key (scoped to the caller's API key):
//! the first claim wins and runs the request; a repeat with the same request gets the stored
//! response; a repeat with a different request is refused. Only successful responses are
//! stored: a failed request changed nothing, so its key is released for a corrected retry.
//! A claim left by a crashed process expires at `locked_until` and can be taken over.

use std::time::Duration;

use sqlx::Row;

use super::{Store, optional_text, text};
use crate::error::Result;
use crate::model::{ApiKeyId, IdempotencyKey, Timestamp};

/// The outcome of claiming a key.
#[derive(Debug, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// This request owns the key: run it, then store or release.
    Acquired,
    /// The same request already succeeded: answer with its stored response.
    Replay {
        /// The stored HTTP status.
        status: u16,
        /// The stored JSON body.
        body: String,
    },
    /// The key was used with a different request (method, path or body).
    Conflict,
    /// The same key is being processed by another request right now.
    InProgress,
}

impl Store {
    /// Claims `key` for a request whose method, path and body hash to `request_hash`. The claim
    /// lasts `lock_for` (longer than any request may run).
    pub async fn claim_idempotency_key(
        &self,
        api_key: ApiKeyId,
        key: &IdempotencyKey,
        request_hash: &str,
        lock_for: Duration,
    ) -> Result<IdempotencyClaim> {
        // Two rounds at most: a row can disappear between the failed insert and the read when
        // its owner releases it; the second insert then wins or sees a new owner.
        for _ in 0..2 {
            let now = Timestamp::now();
            let locked_until = Timestamp::after(lock_for);
            // On SQLite in a group commit, sharing its fsync with other requests' writes.
            let inserted = self
                .write_statement(
                    sqlx::query(
                        "INSERT INTO idempotency_keys \
                         (api_key_id, idempotency_key, request_hash, locked_until, response_status, response_body, created_at) \
                         VALUES ($1, $2, $3, $4, NULL, NULL, $5) \
                         ON CONFLICT (api_key_id, idempotency_key) DO NOTHING",
                    )
                    .bind(api_key.to_string())
                    .bind(key.as_str().to_owned())
                    .bind(request_hash.to_owned())
                    .bind(locked_until.as_str().to_owned())
                    .bind(now.as_str().to_owned()),
                )
                .await?;
            if inserted == 1 {
                return Ok(IdempotencyClaim::Acquired);
            }
            let Some(row) = sqlx::query(
                "SELECT request_hash, locked_until, response_status, response_body \
                 FROM idempotency_keys WHERE api_key_id = $1 AND idempotency_key = $2",
            )
            .bind(api_key.to_string())
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await?
            else {
                continue;
            };
            if text(&row, "request_hash")? != request_hash {
                return Ok(IdempotencyClaim::Conflict);
            }
            if let Some(status) = row.try_get::<Option<i64>, _>("response_status")? {
                return Ok(IdempotencyClaim::Replay {
                    status: u16::try_from(status).unwrap_or(500),
                    body: optional_text(&row, "response_body")?.unwrap_or_default(),
                });
            }
            let previous_lock = text(&row, "locked_until")?;
            if previous_lock.as_str() >= now.as_str() {
                return Ok(IdempotencyClaim::InProgress);
            }
            // The owner died (its lock expired): take over, unless someone else just did.
            let taken = sqlx::query(
                "UPDATE idempotency_keys SET locked_until = $1 \
                 WHERE api_key_id = $2 AND idempotency_key = $3 \
                 AND response_status IS NULL AND locked_until = $4",
            )
            .bind(locked_until.as_str())
            .bind(api_key.to_string())
            .bind(key.as_str())
            .bind(previous_lock)
            .execute(&self.pool)
            .await?
            .rows_affected();
            return Ok(if taken == 1 {
                IdempotencyClaim::Acquired
            } else {
                IdempotencyClaim::InProgress
            });
        }
        Ok(IdempotencyClaim::InProgress)
    }

    /// Stores the successful response of a claimed key.
    pub async fn store_idempotent_response(
        &self,
        api_key: ApiKeyId,
        key: &IdempotencyKey,
        status: u16,
        body: &str,
    ) -> Result<()> {
        // On SQLite in a group commit, sharing its fsync with other requests' writes.
        self.write_statement(
            sqlx::query(
                "UPDATE idempotency_keys SET response_status = $1, response_body = $2 \
                 WHERE api_key_id = $3 AND idempotency_key = $4",
            )
            .bind(i64::from(status))
            .bind(body.to_owned())
            .bind(api_key.to_string())
            .bind(key.as_str().to_owned()),
        )
        .await?;
        Ok(())
    }

    /// Releases a claimed key whose request failed (nothing was done, so it may be reused).
    pub async fn release_idempotency_key(
        &self,
        api_key: ApiKeyId,
        key: &IdempotencyKey,
    ) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE api_key_id = $1 AND idempotency_key = $2 AND response_status IS NULL",
        )
        .bind(api_key.to_string())
        .bind(key.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes finished records created before `before`; returns how many.
    pub async fn purge_idempotency_keys(&self, before: &Timestamp) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < $1 AND response_status IS NOT NULL",
        )
        .bind(before.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
