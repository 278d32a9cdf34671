//! Authentication (bearer API keys, looked up by SHA-256) and the admin role check.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::api_key::{ApiKeySecret, Caller};
use crate::error::{Error, Result};

/// Resolves `Authorization: Bearer <key>` to a [`Caller`] (put in the request's extensions), or
/// answers 401 `UNAUTHORIZED`.
pub async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response> {
    let header = req.headers().get(AUTHORIZATION).ok_or(Error::Unauthorized(
        "missing API key: send Authorization: Bearer <key>",
    ))?;
    // The scheme name is case-insensitive (RFC 9110); the key itself is not.
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .ok_or(Error::Unauthorized(
            "malformed Authorization header: expected Bearer <key>",
        ))?;
    let secret = ApiKeySecret::parse(token.trim()).ok_or(Error::Unauthorized("invalid API key"))?;
    let caller = state
        .store
        .caller_by_key_hash(&secret.hash())
        .await?
        .ok_or(Error::Unauthorized("invalid API key"))?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Lets only admin keys through (403 `FORBIDDEN` for service keys). Runs after
/// [`authenticate`], so a caller is always present; if it were not, the request is refused.
pub async fn require_admin(req: Request, next: Next) -> Result<Response> {
    req.extensions()
        .get::<Caller>()
        .ok_or(Error::Unauthorized("missing API key"))?
        .require_admin()?;
    Ok(next.run(req).await)
}
