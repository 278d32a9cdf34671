//! The control API under `/_sim`, for tests and the local stack: faults, ledger closes, direct
//! account creation, the base fee, and state inspection. Bodies are JSON (the content type is not
//! checked); errors are `{"error": "..."}`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::account::AccountKey;
use crate::amount::format_stroops;
use crate::envelope::TxHash;
use crate::error::Error;
use crate::faults::Faults;
use crate::sim::Shared;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/state", get(state))
        .route("/faults", get(faults).post(set_faults).delete(clear_faults))
        .route("/ledgers", post(close_ledger))
        .route("/accounts", post(create_account))
        .route("/accounts/{account_id}", get(account).delete(merge_account))
        .route("/accounts/{account_id}/sequence", post(consume_sequence))
        .route("/transactions/{hash}", get(transaction))
        .route("/base_fee", post(set_base_fee))
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// Parses a JSON body; an empty body is the type's default.
fn parse_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.snapshot()).into_response()
}

async fn faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.lock().faults.clone()).into_response()
}

/// Replaces the faults in force with the body (absent fields are 0 / false).
async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults: Faults = match parse_body(&body) {
        Ok(faults) => faults,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    shared.lock().faults = faults.clone();
    tracing::info!(?faults, "faults set");
    Json(faults).into_response()
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    shared.lock().faults = Faults::default();
    Json(Faults::default()).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseLedgerRequest {
    /// Unix seconds; default now.
    close_time: Option<u64>,
}

async fn close_ledger(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: CloseLedgerRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let closed = shared.close_ledger(request.close_time);
    Json(json!({
        "sequence": closed.sequence,
        "close_time": closed.close_time,
        "applied": closed.applied,
        "dropped": closed.dropped,
        "evicted": closed.evicted,
        "still_queued": closed.still_queued,
    }))
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccountRequest {
    account_id: String,
    balance_stroops: i64,
}

async fn create_account(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: CreateAccountRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let account = match AccountKey::parse(&request.account_id) {
        Ok(account) => account,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match shared.create_account(account, request.balance_stroops) {
        Ok(()) => (
            StatusCode::CREATED,
            Json(json!({
                "account_id": account,
                "balance": format_stroops(request.balance_stroops),
                "balance_stroops": request.balance_stroops,
            })),
        )
            .into_response(),
        Err(e @ Error::AccountExists(_)) => error(StatusCode::CONFLICT, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn account(State(shared): State<Arc<Shared>>, Path(account_id): Path<String>) -> Response {
    let account = match AccountKey::parse(&account_id) {
        Ok(account) => account,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let entry = shared.lock().ledger.account(&account).cloned();
    match entry {
        Some(entry) => Json(json!({
            "account_id": account,
            "balance": format_stroops(entry.balance),
            "balance_stroops": entry.balance,
            "sequence": entry.sequence.to_string(),
        }))
        .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no account {account}")),
    }
}

/// Another signer of the account uses its next sequence number in the next ledger.
async fn consume_sequence(
    State(shared): State<Arc<Shared>>,
    Path(account_id): Path<String>,
) -> Response {
    let account = match AccountKey::parse(&account_id) {
        Ok(account) => account,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let consumed = shared.lock().consume_sequence(account);
    match consumed {
        Some(tx) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "hash": tx.hash,
                "account_id": account,
                "sequence": tx.sequence.to_string(),
            })),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no account {account}")),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeRequest {
    /// Who receives the lumens; default the root account.
    into: Option<String>,
}

/// The account is merged away (into `into`, default the root account) at the next ledger.
async fn merge_account(
    State(shared): State<Arc<Shared>>,
    Path(account_id): Path<String>,
    body: Bytes,
) -> Response {
    let request: MergeRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let account = match AccountKey::parse(&account_id) {
        Ok(account) => account,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut network = shared.lock();
    let into = match request.into.as_deref().map(AccountKey::parse) {
        None => network.ledger.root(),
        Some(Ok(into)) => into,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    if network.merge_account(account, into) {
        (
            StatusCode::ACCEPTED,
            Json(json!({ "account_id": account, "into": into })),
        )
            .into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("cannot merge {account} into {into}"),
        )
    }
}

async fn transaction(State(shared): State<Arc<Shared>>, Path(hash): Path<String>) -> Response {
    match TxHash::parse(&hash) {
        Ok(hash) => Json(shared.transaction_state(&hash)).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseFeeRequest {
    base_fee: u32,
}

async fn set_base_fee(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: BaseFeeRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if request.base_fee == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "base_fee must be at least 1 stroop",
        );
    }
    shared.lock().ledger.base_fee = request.base_fee;
    Json(json!({ "base_fee": request.base_fee })).into_response()
}
