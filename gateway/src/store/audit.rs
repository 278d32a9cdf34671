//! Audit events: who (an API key or the CLI), what (`user.blocked`, ...), when, on which subject,
//! with which request id. Written only inside the transaction of the change they describe.

use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, optional_text, stored, text};
use crate::error::Result;
use crate::model::{Actor, AuditAction, AuditEvent, RequestId, Timestamp};

/// Who is acting, and the request id when it came through the API.
#[derive(Clone, Debug)]
pub struct AuditContext {
    /// The actor recorded on every event.
    pub actor: Actor,
    /// The request id recorded on every event.
    pub request_id: Option<RequestId>,
}

impl AuditContext {
    /// An operator at the command line.
    pub fn cli() -> Self {
        AuditContext {
            actor: Actor::Cli,
            request_id: None,
        }
    }
}

/// Appends one event on `conn` (the caller's open transaction).
pub(crate) async fn record(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    at: &Timestamp,
    action: AuditAction,
    subject_type: &str,
    subject_id: &str,
    details: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events \
         (occurred_at, actor, action, subject_type, subject_id, request_id, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(at.as_str())
    .bind(ctx.actor.to_string())
    .bind(action.as_str())
    .bind(subject_type)
    .bind(subject_id)
    .bind(ctx.request_id.as_ref().map(|r| r.as_str().to_owned()))
    .bind(details.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

fn event_from_row(row: &AnyRow) -> Result<AuditEvent> {
    let details = text(row, "details")?;
    Ok(AuditEvent {
        id: row.try_get::<i64, _>("id")?,
        occurred_at: Timestamp::from_stored(text(row, "occurred_at")?)?,
        actor: text(row, "actor")?,
        action: text(row, "action")?,
        subject_type: text(row, "subject_type")?,
        subject_id: text(row, "subject_id")?,
        request_id: optional_text(row, "request_id")?,
        details: stored(
            "audit_events.details",
            serde_json::from_str(&details)
                .map_err(|e| crate::error::Error::CorruptData(e.to_string())),
        )?,
    })
}

impl Store {
    /// Events in log order after `after` (an event id), optionally only those about one subject.
    pub async fn audit_events(
        &self,
        after: Option<i64>,
        subject: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let (subject_type, subject_id) = subject.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT id, occurred_at, actor, action, subject_type, subject_id, request_id, details \
             FROM audit_events \
             WHERE id > $1 AND ($2 = '' OR (subject_type = $2 AND subject_id = $3)) \
             ORDER BY id LIMIT $4",
        )
        .bind(after.unwrap_or(0))
        .bind(subject_type)
        .bind(subject_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }
}
