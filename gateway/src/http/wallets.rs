//! Wallets: `POST /v1/users/{user_id}/wallet` gets or creates the user's one wallet; reads by
//! user and by id; admins freeze and unfreeze.

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::extract::{ApiJson, ApiPath};
use super::idempotency::{REPLAYED_HEADER, body_bytes, idempotency_key, replay, request_hash};
use super::users::AdminActionRequest;
use super::{AppState, audit_context};
use crate::api_key::Caller;
use crate::error::{Error, ErrorBody, Result};
use crate::model::{Reason, RequestId, UserId, Wallet, WalletId};
use crate::provision::Provisioned;
use crate::store::{EarlierRequest, WalletRecord, WalletRequest};

/// Gets or creates the user's wallet: 201 when this request created it, 200 when it existed.
/// Safe to repeat and to run concurrently: a user never gets a second wallet or key.
///
/// The `Idempotency-Key` follows the rules of every POST (scoped to the API key, bound to method,
/// path and body; a replay answers the stored response with `Idempotent-Replayed: true`; a
/// different request, 422 `IDEMPOTENCY_CONFLICT`; a failed request keeps nothing), but the key
/// of the request that creates the wallet lives on the wallet row, written by the reservation
/// and the completion: a new wallet costs two commits. An answer 200 (the wallet existed) is
/// stored in the generic table, one write.
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
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let idempotency_key = idempotency_key(&headers)?;
    let bytes = body_bytes(&state, body).await?;
    let request = WalletRequest {
        api_key_id: caller.key_id,
        idempotency_key,
        request_hash: request_hash(&Method::POST, uri.path(), &bytes),
    };
    let found = state.store.wallet_request_state(user_id, &request).await?;
    match found.earlier {
        None => {}
        Some(EarlierRequest::Created(wallet)) => return created(wallet, true),
        Some(EarlierRequest::Stored { status, body }) => return Ok(replay(status, body)),
        Some(EarlierRequest::Conflict) => {
            return Err(Error::IdempotencyConflict(
                "this Idempotency-Key was already used with a different request".into(),
            ));
        }
        Some(EarlierRequest::InProgress) => return Err(Error::IdempotencyInProgress),
    }
    let (wallet, outcome) = state
        .provisioner
        .get_or_create(user_id, found.user, &caller, &request_id, &request)
        .await?;
    match outcome {
        Provisioned::Created => created(wallet, false),
        Provisioned::Replayed => created(wallet, true),
        Provisioned::Existing => {
            let body = serde_json::to_string(&wallet)
                .map_err(|e| Error::CorruptData(format!("wallet as JSON: {e}")))?;
            if let Err(e) = state
                .store
                .store_wallet_answer(&request, StatusCode::OK.as_u16(), &body)
                .await
            {
                // The caller gets its answer; a retry re-reads the same wallet (200 again).
                tracing::error!(error = %e, "cannot store an idempotent response");
            }
            Ok((StatusCode::OK, Json(wallet)).into_response())
        }
    }
}

/// The 201 of the request that completed the wallet, first sent or replayed (the same bytes:
/// both serialize the same [`Wallet`]).
fn created(wallet: Wallet, replayed: bool) -> Result<Response> {
    let mut response = (StatusCode::CREATED, Json(wallet)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
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
