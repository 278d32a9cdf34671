//! The per-API-key request rate (governor, a GCRA token bucket per key). Over the limit a caller
//! gets 429 `RATE_LIMITED` with `Retry-After`. The limit is per gateway process: with N replicas
//! a key may reach N times the rate (the database-backed daily payment limits are global).

use std::num::NonZeroU32;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::Clock;
use governor::{Quota, RateLimiter};

use super::AppState;
use crate::api_key::Caller;
use crate::config::RateLimitConfig;
use crate::error::{Error, Result};
use crate::model::ApiKeyId;

/// A rate limiter keyed by API key id.
pub type KeyedLimiter = governor::DefaultKeyedRateLimiter<ApiKeyId>;

/// Builds the limiter from the config (both numbers are checked positive at load).
pub fn limiter(config: &RateLimitConfig) -> KeyedLimiter {
    let per_second = NonZeroU32::new(config.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
}

/// See the module documentation. Runs after authentication.
pub async fn rate_limit(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .ok_or(Error::Unauthorized("missing API key"))?;
    if let Err(not_until) = state.limiter.check_key(&caller.key_id) {
        state.metrics.rate_limited();
        let retry_after = not_until.wait_time_from(state.limiter.clock().now());
        return Err(Error::RateLimited { retry_after });
    }
    Ok(next.run(req).await)
}
