//! Stellar RPC's endpoint: `POST /rpc`, JSON-RPC 2.0 as stellar-rpc's HTTP bridge (jrpc2's
//! `jhttp`) serves it: `405` for another HTTP method, `415` for a body that is not
//! `application/json`, `500` with `[-32700] invalid request value` as text for a body that is not
//! JSON, `200` with the response object(s) otherwise, `204` when there is nothing to answer
//! (every call a notification, or an empty batch).
//!
//! Each HTTP request is served by one RPC node behind the URL (see [`crate::Faults::node_lags`]):
//! every answer in it, `latestLedger` included, is that node's. A submission's reply can be lost
//! on the way back (the provider's proxy answers `503` or `504`, see `submission`), which is a
//! bare HTTP error, not a JSON-RPC one.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use stellar_xdr::{Limits, WriteXdr};

use crate::envelope::SubmittedTransaction;
use crate::rpc::methods::{self, RpcNode, SendTransactionParams, SendTransactionResult};
use crate::rpc::protocol::{self, Call, Message, RpcError};
use crate::sim::Shared;
use crate::submission::{self, AsyncOutcome};

/// A JSON body with stellar-rpc's content type.
fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// What the provider's proxy answers when the node's reply never comes: a bare HTTP error.
pub(crate) fn proxy_error(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("error");
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{} {reason}\n", status.as_u16()),
    )
        .into_response()
}

/// The 429 a rate-limited RPC provider answers: a JSON-RPC error object (id `null`: the request
/// was not read) with [`protocol::LIMIT_EXCEEDED`].
pub(crate) fn rate_limited() -> Response {
    json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &protocol::failure(&Value::Null, &RpcError::limit_exceeded()),
    )
}

/// How one call ends.
enum Outcome {
    /// A result or an error object for the caller.
    Answer(Result<Value, RpcError>),
    /// The reply is lost: the whole HTTP request gets this instead.
    Lost(Response),
}

/// `POST /rpc`.
pub(super) async fn endpoint(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let mut parts = content_type.split(';').map(str::trim);
    let media_type = parts.next().unwrap_or_default();
    let charset_ok = parts
        .filter_map(|part| part.strip_prefix("charset="))
        .all(|charset| matches!(charset.trim_matches('"'), "utf-8" | "utf8"));
    if !media_type.eq_ignore_ascii_case("application/json") || !charset_ok {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(header::ACCEPT, "application/json")],
            "content-type must be application/json\n",
        )
            .into_response();
    }
    let parsed = match protocol::parse_body(&body) {
        Ok(parsed) => parsed,
        // jrpc2's bridge fails the whole request: a 500 with the error's text, not JSON.
        Err(error) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("[{}] {}\n", error.code, error.message),
            )
                .into_response();
        }
    };
    let node = {
        let mut network = shared.lock();
        let core_ledger = network.serving_ledger();
        RpcNode::at(&network, core_ledger)
    };
    let mut replies = Vec::new();
    for message in parsed.messages {
        match message {
            Message::Invalid { id, error } => replies.push(protocol::failure(&id, &error)),
            Message::Call(call) => match dispatch(&shared, node, &call).await {
                Outcome::Lost(response) => return response,
                Outcome::Answer(answer) => {
                    let Some(id) = &call.id else { continue };
                    replies.push(match answer {
                        Ok(result) => protocol::success(id, result),
                        Err(error) => protocol::failure(id, &error),
                    });
                }
            },
        }
    }
    // As jrpc2's bridge: a lone reply is sent bare, even for a batch of one.
    match replies.len() {
        0 => StatusCode::NO_CONTENT.into_response(),
        1 => json_response(StatusCode::OK, &replies.remove(0)),
        _ => json_response(StatusCode::OK, &Value::Array(replies)),
    }
}

fn to_value<T: Serialize>(result: Result<T, RpcError>) -> Outcome {
    Outcome::Answer(result.and_then(|value| {
        serde_json::to_value(value).map_err(|e| RpcError::internal(e.to_string()))
    }))
}

/// Runs one call on `node`.
async fn dispatch(shared: &Shared, node: RpcNode, call: &Call) -> Outcome {
    let params = call.params.as_ref();
    match call.method.as_str() {
        "getHealth" => to_value(Ok(methods::get_health(&shared.lock(), node))),
        "getNetwork" => to_value(Ok(methods::NetworkResult {
            friendbot_url: Some(friendbot_url(shared)),
            passphrase: shared.config.network_passphrase.clone(),
            protocol_version: crate::resources::PROTOCOL_VERSION,
        })),
        "getLatestLedger" => to_value(methods::get_latest_ledger(&shared.lock(), node)),
        "getLedgerEntries" => to_value(
            methods::params(params)
                .and_then(|params| methods::get_ledger_entries(&shared.lock(), node, &params)),
        ),
        "getTransaction" => to_value(
            methods::params(params)
                .and_then(|params| methods::get_transaction(&shared.lock(), node, &params)),
        ),
        "getTransactions" => to_value(
            methods::params(params)
                .and_then(|params| methods::get_transactions(&shared.lock(), node, &params)),
        ),
        "getFeeStats" => to_value(Ok(methods::get_fee_stats(&shared.lock(), node))),
        "sendTransaction" => match methods::params::<SendTransactionParams>(params) {
            Ok(params) => send_transaction(shared, node, params).await,
            Err(error) => Outcome::Answer(Err(error)),
        },
        _ => Outcome::Answer(Err(RpcError::method_not_found())),
    }
}

/// Where friendbot answers `?addr=`: the separate friendbot, or Horizon's `/friendbot`.
fn friendbot_url(shared: &Shared) -> String {
    match &shared.friendbot_url {
        Some(url) => format!("{url}/"),
        None => format!("{}/friendbot", shared.base_url),
    }
}

/// `sendTransaction`: core's answer to the submission, passed through as stellar-rpc does.
async fn send_transaction(
    shared: &Shared,
    node: RpcNode,
    params: SendTransactionParams,
) -> Outcome {
    if let Err(error) = params.check() {
        return Outcome::Answer(Err(error));
    }
    let network_id = shared.lock().ledger.network_id();
    let envelope = params.transaction;
    // Decoding verifies the signatures: CPU work, kept off the async workers.
    let decoded =
        tokio::task::spawn_blocking(move || SubmittedTransaction::decode(&envelope, network_id))
            .await;
    let tx = match decoded {
        Ok(Ok(tx)) => Arc::new(tx),
        Ok(Err(_)) => return Outcome::Answer(Err(RpcError::invalid_params("invalid_xdr"))),
        Err(_) => return Outcome::Answer(Err(RpcError::internal("could not decode"))),
    };
    let hash = tx.hash.to_hex();
    let outcome = submission::submit_async(shared, tx).await;
    tracing::debug!(%hash, ?outcome, "sendTransaction");
    let answer = |status: &'static str| {
        SendTransactionResult::new(&shared.lock(), node, status, hash.clone())
    };
    match outcome {
        AsyncOutcome::Pending => to_value(Ok(answer("PENDING"))),
        AsyncOutcome::Duplicate => to_value(Ok(answer("DUPLICATE"))),
        AsyncOutcome::TryAgainLater => to_value(Ok(answer("TRY_AGAIN_LATER"))),
        AsyncOutcome::Error(rejection) => {
            let mut result = answer("ERROR");
            result.error_result_xdr = rejection.result.to_xdr_base64(Limits::none()).ok();
            to_value(Ok(result))
        }
        AsyncOutcome::Unavailable => Outcome::Lost(proxy_error(StatusCode::SERVICE_UNAVAILABLE)),
        AsyncOutcome::Timeout => Outcome::Lost(proxy_error(StatusCode::GATEWAY_TIMEOUT)),
    }
}
