//! Wallets: `POST /v1/users/{user_id}/wallet` gets or creates the user's one wallet; reads by
//! user and by id; admins freeze and unfreeze.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::extract::{ApiJson, ApiPath};
use super::users::AdminActionRequest;
use super::{AppState, audit_context};
use crate::api_key::Caller;
use crate::error::{Error, ErrorBody, Result};
use crate::model::{Reason, RequestId, UserId, Wallet, WalletId};
use crate::provision::Provisioned;
use crate::store::WalletRecord;

/// Gets or creates the user's wallet: 201 when this request created it, 200 when it existed.
/// Safe to repeat and to run concurrently: a user never gets a second wallet or key.
#[utoipa::path(
    post, path = "/v1/users/{user_id}/wallet", tag = "wallets",
    params(("user_id" = String, Path, description = "A UUID"), ("Idempotency-Key" = String, Header)),
    responses(
        (status = 201, description = "Created by this request", body = Wallet),
        (status = 200, description = "Already existed", body = Wallet),
        (status = 404, description = "USER_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "USER_BLOCKED or WALLET_FROZEN", body = ErrorBody),
        (status = 502, description = "SIGNER_ERROR: signerd refused or answered something unusable", body = ErrorBody),
        (status = 503, description = "SIGNER_UNAVAILABLE: retry later; the same wallet is completed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_wallet(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(user_id): ApiPath<UserId>,
) -> Result<(StatusCode, Json<Wallet>)> {
    let (wallet, outcome) = state
        .provisioner
        .get_or_create(user_id, &caller, &request_id)
        .await?;
    let status = match outcome {
        Provisioned::Created => StatusCode::CREATED,
        Provisioned::Existing => StatusCode::OK,
    };
    Ok((status, Json(wallet)))
}

/// The user's wallet (frozen wallets are shown with `status: frozen`).
#[utoipa::path(
    get, path = "/v1/users/{user_id}/wallet", tag = "wallets",
    params(("user_id" = String, Path, description = "A UUID")),
    responses(
        (status = 200, body = Wallet),
        (status = 404, description = "USER_NOT_FOUND or WALLET_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_user_wallet(
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<UserId>,
) -> Result<Json<Wallet>> {
    if state.store.user(user_id).await?.is_none() {
        return Err(Error::UserNotFound(user_id));
    }
    state
        .store
        .wallet_of_user(user_id)
        .await?
        .and_then(WalletRecord::complete)
        .map(Json)
        .ok_or_else(|| Error::WalletNotFound(format!("user {user_id} has no wallet")))
}

/// One wallet.
#[utoipa::path(
    get, path = "/v1/wallets/{wallet_id}", tag = "wallets",
    params(("wallet_id" = String, Path, description = "A UUID")),
    responses(
        (status = 200, body = Wallet),
        (status = 404, description = "WALLET_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_wallet(
    State(state): State<AppState>,
    ApiPath(wallet_id): ApiPath<WalletId>,
) -> Result<Json<Wallet>> {
    state
        .store
        .wallet(wallet_id)
        .await?
        .and_then(WalletRecord::complete)
        .map(Json)
        .ok_or_else(|| Error::WalletNotFound(format!("wallet {wallet_id} not found")))
}

/// Freezes a wallet (admin). Freezing twice is harmless.
#[utoipa::path(
    post, path = "/v1/wallets/{wallet_id}/freeze", tag = "admin",
    params(("wallet_id" = String, Path, description = "A UUID"), ("Idempotency-Key" = String, Header)),
    request_body = AdminActionRequest,
    responses(
        (status = 200, body = Wallet),
        (status = 403, description = "FORBIDDEN (not an admin key)", body = ErrorBody),
        (status = 404, description = "WALLET_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn freeze_wallet(
    state: State<AppState>,
    caller: Extension<Caller>,
    request_id: Extension<RequestId>,
    path: ApiPath<WalletId>,
    body: ApiJson<AdminActionRequest>,
) -> Result<Json<Wallet>> {
    set_frozen(state, caller, request_id, path, body, true).await
}

/// Unfreezes a wallet (admin).
#[utoipa::path(
    post, path = "/v1/wallets/{wallet_id}/unfreeze", tag = "admin",
    params(("wallet_id" = String, Path, description = "A UUID"), ("Idempotency-Key" = String, Header)),
    request_body = AdminActionRequest,
    responses(
        (status = 200, body = Wallet),
        (status = 403, description = "FORBIDDEN (not an admin key)", body = ErrorBody),
        (status = 404, description = "WALLET_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn unfreeze_wallet(
    state: State<AppState>,
    caller: Extension<Caller>,
    request_id: Extension<RequestId>,
    path: ApiPath<WalletId>,
    body: ApiJson<AdminActionRequest>,
) -> Result<Json<Wallet>> {
    set_frozen(state, caller, request_id, path, body, false).await
}

async fn set_frozen(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(wallet_id): ApiPath<WalletId>,
    ApiJson(body): ApiJson<AdminActionRequest>,
    frozen: bool,
) -> Result<Json<Wallet>> {
    let reason = Reason::parse(&body.reason)?;
    let wallet = state
        .store
        .set_wallet_frozen(
            wallet_id,
            frozen,
            &reason,
            &audit_context(&caller, &request_id),
        )
        .await?;
    tracing::info!(wallet_id = %wallet_id, frozen, "wallet freeze state set");
    Ok(Json(wallet))
}
