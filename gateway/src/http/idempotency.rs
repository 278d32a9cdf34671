//! `Idempotency-Key` on every POST. The header is required: a POST without it is refused, so a
//! caller's retry is always safe. The key is scoped to the caller's API key and bound to the
//! request (method, path and the SHA-256 of the body):
//!
//! - first use: the request runs; a successful response is stored;
//! - same key, same request: the stored response is returned (`Idempotent-Replayed: true`);
//! - same key, different request: 422 `IDEMPOTENCY_CONFLICT`;
//! - same key while the first is still running: 409 `IDEMPOTENCY_IN_PROGRESS`, `Retry-After: 1`.
//!
//! A request that fails changes nothing (handlers guarantee it), so its key is released and a
//! corrected or later retry with the same key runs normally.
//!
//! `POST /v1/payments` and `POST /v1/users/{user_id}/wallet` do not come through here: they keep
//! the key on their own row (the payment, the wallet), written in the transactions the request
//! makes anyway, with the same rules as above; see their handlers.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::AppState;
use crate::api_key::Caller;
use crate::error::{Error, Result};
use crate::model::IdempotencyKey;
use crate::store::IdempotencyClaim;

/// The request header.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The response header marking a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// See the module documentation. Runs after authentication (keys are per API key).
pub async fn idempotency(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response> {
    if req.method() != Method::POST {
        return Ok(next.run(req).await);
    }
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or(Error::Unauthorized("missing API key"))?;
    let key = idempotency_key(req.headers())?;
    let (parts, body) = req.into_parts();
    let bytes = body_bytes(&state, body).await?;
    let request_hash = request_hash(&parts.method, parts.uri.path(), &bytes);
    let claim = state
        .store
        .claim_idempotency_key(caller.key_id, &key, &request_hash, state.idempotency_lock())
        .await?;
    match claim {
        IdempotencyClaim::Acquired => {}
        IdempotencyClaim::Replay { status, body } => return Ok(replay(status, body)),
        IdempotencyClaim::Conflict => {
            return Err(Error::IdempotencyConflict(
                "this Idempotency-Key was already used with a different request".into(),
            ));
        }
        IdempotencyClaim::InProgress => return Err(Error::IdempotencyInProgress),
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() {
        if let Err(e) = state
            .store
            .release_idempotency_key(caller.key_id, &key)
            .await
        {
            // The claim expires at its lock time anyway; the caller can retry then.
            tracing::error!(error = %e, "cannot release an Idempotency-Key");
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    // Our own JSON responses are small; the limit only guards against a handler bug.
    let body = to_bytes(body, 16 * 1024 * 1024)
        .await
        .map_err(|e| Error::CorruptData(format!("response body: {e}")))?;
    let text = String::from_utf8_lossy(&body);
    if let Err(e) = state
        .store
        .store_idempotent_response(caller.key_id, &key, parts.status.as_u16(), &text)
        .await
    {
        // The work is done and the caller gets its answer; a retry after the claim expires
        // re-runs the request, which every handler tolerates (wallets resume, users conflict).
        tracing::error!(error = %e, "cannot store an idempotent response");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// The request's `Idempotency-Key`, required and parsed.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey> {
    headers
        .get(IDEMPOTENCY_KEY_HEADER)
        .ok_or_else(|| {
            Error::Validation("the Idempotency-Key header is required on every POST".into())
        })?
        .to_str()
        .map_err(|_| Error::Validation("Idempotency-Key must be visible ASCII".into()))
        .and_then(IdempotencyKey::parse)
}

/// The whole request body (what the request hash covers), refused above `server.max_body_bytes`.
pub(crate) async fn body_bytes(state: &AppState, body: Body) -> Result<axum::body::Bytes> {
    to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|_| Error::BodyTooLarge {
            limit: state.max_body_bytes,
        })
}

pub(crate) fn request_hash(method: &Method, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// A stored answer, marked `Idempotent-Replayed: true`.
pub(crate) fn replay(status: u16, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_binds_method_path_and_body() {
        let base = request_hash(&Method::POST, "/v1/users", b"{\"a\":1}");
        assert_eq!(base, request_hash(&Method::POST, "/v1/users", b"{\"a\":1}"));
        assert_ne!(base, request_hash(&Method::POST, "/v1/users", b"{\"a\":2}"));
        assert_ne!(
            base,
            request_hash(&Method::POST, "/v1/users/x", b"{\"a\":1}")
        );
        assert_ne!(base, request_hash(&Method::PUT, "/v1/users", b"{\"a\":1}"));
    }
}
