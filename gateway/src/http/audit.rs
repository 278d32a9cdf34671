//! `GET /v1/audit-events` (admin): the audit log, in order, optionally about one subject.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::ApiQuery;
use super::users::page_size;
use crate::error::{Error, ErrorBody, Result};
use crate::model::AuditEvent;

/// Filters and paging of `GET /v1/audit-events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size, 1..=500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Return events after this event id (the `next_after` of the previous page).
    pub after: Option<i64>,
    /// Only events about this kind of subject (`user`, `wallet`, `api_key`, `payment`,
    /// `webhook`); needs `subject_id`.
    #[param(pattern = "^[!-~]{1,64}$")]
    pub subject_type: Option<String>,
    /// Only events about this subject; needs `subject_type`.
    #[param(pattern = "^[!-~]{1,64}$")]
    pub subject_id: Option<String>,
}

/// One page of audit events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The events.
    pub events: Vec<AuditEvent>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

/// A subject type or id as the store writes them: 1 to 64 visible ASCII characters. Anything
/// else matches nothing, and is refused so that it never reaches the database (Postgres refuses
/// a NUL byte in text with an error, not an empty answer).
fn subject_part(raw: &str) -> Result<&str> {
    if raw.is_empty() || raw.len() > 64 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Validation(
            "subject_type and subject_id are 1 to 64 visible ASCII characters".into(),
        ));
    }
    Ok(raw)
}

/// The audit log.
#[utoipa::path(
    get, path = "/v1/audit-events", tag = "admin",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, body = ErrorBody),
        (status = 403, description = "FORBIDDEN (not an admin key)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_audit_events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>> {
    let limit = page_size(query.limit)?;
    let subject = match (&query.subject_type, &query.subject_id) {
        (Some(kind), Some(id)) => Some((subject_part(kind)?, subject_part(id)?)),
        (None, None) => None,
        _ => {
            return Err(Error::Validation(
                "subject_type and subject_id go together".into(),
            ));
        }
    };
    let events = state
        .store
        .audit_events(query.after, subject, limit)
        .await?;
    let next_after = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditPage { events, next_after }))
}
