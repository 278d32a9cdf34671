//! `/v1/users`: create, get, list; admins block and unblock.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{AppState, audit_context};
use crate::api_key::Caller;
use crate::error::{Error, ErrorBody, Result};
use crate::model::{ExternalRef, Reason, RequestId, User, UserId};

/// Largest page a list returns.
pub const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 100;

/// `POST /v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// The caller's reference for the user (1..=128 characters, unique; no control characters,
    /// no leading or trailing whitespace).
    #[schema(min_length = 1, max_length = 128, pattern = r"^\S(.*\S)?$")]
    pub external_ref: String,
}

/// The body of admin actions (block, unblock, freeze, unfreeze).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminActionRequest {
    /// Why (1..=500 characters; no control characters, no leading or trailing whitespace);
    /// kept in the audit event.
    #[schema(min_length = 1, max_length = 500, pattern = r"^\S(.*\S)?$")]
    pub reason: String,
}

/// Paging parameters of `GET /v1/users`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListUsersQuery {
    /// Page size, 1..=500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Return users created after this user id (the `next_after` of the previous page).
    #[param(
        format = "uuid",
        pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub after: Option<String>,
}

/// One page of users, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    /// The users.
    pub users: Vec<User>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Checks a page size.
pub fn page_size(limit: Option<u32>) -> Result<u32> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        _ => Err(Error::Validation(format!("limit must be 1 to {MAX_PAGE}"))),
    }
}

/// Checks a `before` cursor: a positive row id, or a validation error naming `what` it is.
pub fn before_id(before: Option<&str>, what: &str) -> Result<Option<i64>> {
    before
        .map(|b| {
            b.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| Error::Validation(format!("before: {what}")))
        })
        .transpose()
}

/// Creates a user.
#[utoipa::path(
    post, path = "/v1/users", tag = "users",
    request_body = CreateUserRequest,
    params(("Idempotency-Key" = String, Header, description = "Required on every POST")),
    responses(
        (status = 201, description = "Created", body = User),
        (status = 400, description = "VALIDATION_FAILED", body = ErrorBody),
        (status = 409, description = "USER_EXISTS", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<User>)> {
    let external_ref = ExternalRef::parse(&body.external_ref)?;
    let user = state
        .store
        .create_user(&external_ref, &audit_context(&caller, &request_id))
        .await?;
    tracing::info!(user_id = %user.id, "user created");
    Ok((StatusCode::CREATED, Json(user)))
}

/// One user.
#[utoipa::path(
    get, path = "/v1/users/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "A UUID")),
    responses(
        (status = 200, body = User),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_user(
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<UserId>,
) -> Result<Json<User>> {
    let user = state
        .store
        .user(user_id)
        .await?
        .ok_or(Error::UserNotFound(user_id))?;
    Ok(Json(user))
}

/// Users, oldest first, one page at a time.
#[utoipa::path(
    get, path = "/v1/users", tag = "users",
    params(ListUsersQuery),
    responses((status = 200, body = UserPage), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_users(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListUsersQuery>,
) -> Result<Json<UserPage>> {
    let limit = page_size(query.limit)?;
    let after = query.after.as_deref().map(UserId::parse).transpose()?;
    let users = state.store.list_users(after, limit).await?;
    let next_after = (users.len() == limit as usize)
        .then(|| users.last().map(|u| u.id.to_string()))
        .flatten();
    Ok(Json(UserPage { users, next_after }))
}

/// Blocks a user (admin): they can no longer get a wallet. Blocking twice is harmless.
#[utoipa::path(
    post, path = "/v1/users/{user_id}/block", tag = "admin",
    params(("user_id" = String, Path, description = "A UUID"), ("Idempotency-Key" = String, Header)),
    request_body = AdminActionRequest,
    responses(
        (status = 200, body = User),
        (status = 403, description = "FORBIDDEN (not an admin key)", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn block_user(
    state: State<AppState>,
    caller: Extension<Caller>,
    request_id: Extension<RequestId>,
    path: ApiPath<UserId>,
    body: ApiJson<AdminActionRequest>,
) -> Result<Json<User>> {
    set_blocked(state, caller, request_id, path, body, true).await
}

/// Unblocks a user (admin).
#[utoipa::path(
    post, path = "/v1/users/{user_id}/unblock", tag = "admin",
    params(("user_id" = String, Path, description = "A UUID"), ("Idempotency-Key" = String, Header)),
    request_body = AdminActionRequest,
    responses(
        (status = 200, body = User),
        (status = 403, description = "FORBIDDEN (not an admin key)", body = ErrorBody),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn unblock_user(
    state: State<AppState>,
    caller: Extension<Caller>,
    request_id: Extension<RequestId>,
    path: ApiPath<UserId>,
    body: ApiJson<AdminActionRequest>,
) -> Result<Json<User>> {
    set_blocked(state, caller, request_id, path, body, false).await
}

async fn set_blocked(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(user_id): ApiPath<UserId>,
    ApiJson(body): ApiJson<AdminActionRequest>,
    blocked: bool,
) -> Result<Json<User>> {
    let reason = Reason::parse(&body.reason)?;
    let user = state
        .store
        .set_user_blocked(
            user_id,
            blocked,
            &reason,
            &audit_context(&caller, &request_id),
        )
        .await?;
    tracing::info!(user_id = %user_id, blocked, "user block state set");
    Ok(Json(user))
}
