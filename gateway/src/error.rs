//! The one error type of the gateway, and the one place it becomes an HTTP response.
//!
//! Every response error is JSON `{"code": "...", "message": "..."}`. Codes are stable and part of
//! the API; messages are short, lowercase and safe to show a caller. Internal detail (SQL errors,
//! file paths, signerd's own messages on internal failures) goes to the log, never to the caller.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::{UserId, WalletId};

/// Everything that can go wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: bad JSON, unknown fields, bad ids, missing headers.
    #[error("{0}")]
    Validation(String),

    /// The request body is larger than `server.max_body_bytes`.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },

    /// No API key, or one the gateway does not know (or that was revoked).
    #[error("{0}")]
    Unauthorized(&'static str),

    /// A valid API key whose role does not allow the route.
    #[error("{0}")]
    Forbidden(String),

    /// No route matches the path.
    #[error("no such route")]
    RouteNotFound,

    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,

    /// The user does not exist.
    #[error("user {0} not found")]
    UserNotFound(UserId),

    /// No (complete) wallet matches.
    #[error("{0}")]
    WalletNotFound(String),

    /// Another user already has this external reference.
    #[error("a user with this external_ref already exists: {0}")]
    UserExists(UserId),

    /// The user is blocked; nothing may be done on their behalf.
    #[error("user {0} is blocked")]
    UserBlocked(UserId),

    /// The wallet is frozen.
    #[error("wallet {0} is frozen")]
    WalletFrozen(WalletId),

    /// The Idempotency-Key was used before with a different request.
    #[error("{0}")]
    IdempotencyConflict(String),

    /// A request with the same Idempotency-Key is still being processed.
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyInProgress,

    /// A wallet's daily payment count or amount limit would be exceeded.
    #[error("{0}")]
    LimitExceeded(String),

    /// No payment with this id.
    #[error("payment {0} not found")]
    PaymentNotFound(crate::model::PaymentId),

    /// No live webhook endpoint (or delivery of it) with this id.
    #[error("{0}")]
    WebhookNotFound(String),

    /// A delivery still pending (or being sent) cannot be replayed.
    #[error("{0}")]
    DeliveryPending(String),

    /// Only a `NEEDS_ATTENTION` payment can be resolved by an operator.
    #[error("payment {0} does not need attention")]
    PaymentNotNeedingAttention(crate::model::PaymentId),

    /// The gateway has no `[network]` configured, or the operation needs a test network.
    #[error("{0}")]
    NetworkNotConfigured(&'static str),

    /// The network API (Horizon or RPC) cannot be reached or answered something unusable.
    /// Retrying later is safe.
    #[error("{0}")]
    NetworkUnavailable(String),

    /// The API key exceeded its request rate.
    #[error("rate limit exceeded; retry after {} s", retry_after_secs(*.retry_after))]
    RateLimited {
        /// How long until a request will be accepted again.
        retry_after: Duration,
    },

    /// signerd cannot be reached (down, deadline exceeded, circuit open). Retrying later is safe.
    #[error("signer unavailable: {0}")]
    SignerUnavailable(String),

    /// signerd answered something the gateway cannot use, or failed inside (an internal
    /// error): not its considered refusal, so asking again later may succeed.
    #[error("signer error: {0}")]
    Signer(String),

    /// signerd refused the request on its merits (its policy, an unknown key, a malformed
    /// request): asking again with the same request gets the same answer.
    #[error("signer refused: {0}")]
    SignerRefused(String),

    /// signerd refused a transaction because its `max_time` had already passed when it got
    /// there (it was built, then waited). Nothing was signed; built again with fresh time
    /// bounds it is signed.
    #[error("signer refused stale time bounds: {0}")]
    StaleTimeBounds(String),

    /// signerd's sequence guard refused: another transaction for this account and sequence was
    /// signed and may still be applied. Not final: once that one lands or expires, a transaction
    /// built on the account's new state is signed.
    #[error("signer sequence guard: {0}")]
    SequenceInUse(String),

    /// The request took longer than `server.request_timeout_ms`.
    #[error("request timed out")]
    Timeout,

    /// A database error. Pool timeouts and I/O errors become 503, the rest 500.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    /// Migrations could not be applied.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// A stored value does not parse: the database was edited by hand or is corrupt.
    #[error("corrupt stored data: {0}")]
    CorruptData(String),

    /// The configuration is invalid; the message names the field.
    #[error("config: {0}")]
    Config(String),

    /// A file could not be read.
    #[error("{context}: {source}")]
    Io {
        /// What the gateway was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what the gateway was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The HTTP status and the stable error code for this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Validation(_) => (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
            Error::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Error::RouteNotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Error::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            Error::UserNotFound(_) => (StatusCode::NOT_FOUND, "USER_NOT_FOUND"),
            Error::WalletNotFound(_) => (StatusCode::NOT_FOUND, "WALLET_NOT_FOUND"),
            Error::UserExists(_) => (StatusCode::CONFLICT, "USER_EXISTS"),
            Error::UserBlocked(_) => (StatusCode::CONFLICT, "USER_BLOCKED"),
            Error::WalletFrozen(_) => (StatusCode::CONFLICT, "WALLET_FROZEN"),
            Error::IdempotencyConflict(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_CONFLICT")
            }
            Error::IdempotencyInProgress => (StatusCode::CONFLICT, "IDEMPOTENCY_IN_PROGRESS"),
            Error::LimitExceeded(_) => (StatusCode::UNPROCESSABLE_ENTITY, "LIMIT_EXCEEDED"),
            Error::PaymentNotFound(_) => (StatusCode::NOT_FOUND, "PAYMENT_NOT_FOUND"),
            Error::WebhookNotFound(_) => (StatusCode::NOT_FOUND, "WEBHOOK_NOT_FOUND"),
            Error::DeliveryPending(_) => (StatusCode::CONFLICT, "DELIVERY_PENDING"),
            Error::PaymentNotNeedingAttention(_) => {
                (StatusCode::CONFLICT, "PAYMENT_NOT_NEEDING_ATTENTION")
            }
            Error::NetworkNotConfigured(_) => (StatusCode::CONFLICT, "NETWORK_NOT_CONFIGURED"),
            Error::NetworkUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "NETWORK_UNAVAILABLE")
            }
            Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            Error::SignerUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "SIGNER_UNAVAILABLE"),
            Error::Signer(_)
            | Error::SignerRefused(_)
            | Error::StaleTimeBounds(_)
            | Error::SequenceInUse(_) => (StatusCode::BAD_GATEWAY, "SIGNER_ERROR"),
            Error::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "TIMEOUT"),
            Error::Database(e) if database_unavailable(e) => {
                (StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE")
            }
            Error::Database(_)
            | Error::Migrate(_)
            | Error::CorruptData(_)
            | Error::Config(_)
            | Error::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }

    /// True for a unique-constraint violation (the database enforcing "only one").
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Error::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

fn database_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    )
}

fn retry_after_secs(d: Duration) -> u64 {
    // Retry-After has one-second resolution; round up so a caller that obeys it succeeds.
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Result alias used throughout the gateway.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `USER_NOT_FOUND`.
    pub code: &'static str,
    /// A short human-readable explanation.
    pub message: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message =
            if status.is_server_error() && !matches!(status, StatusCode::SERVICE_UNAVAILABLE) {
                // Internal detail stays in the log; the caller learns only the category.
                tracing::error!(error = %self, code, "internal error");
                "internal error".to_owned()
            } else {
                if status.is_server_error() {
                    tracing::warn!(error = %self, code, "dependency unavailable");
                }
                match &self {
                    Error::Database(_) => "database unavailable".to_owned(),
                    other => other.to_string(),
                }
            };
        let mut response = (status, axum::Json(ErrorBody { code, message })).into_response();
        if let Error::RateLimited { retry_after } = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(retry_after)),
            );
        }
        if matches!(self, Error::IdempotencyInProgress) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn rate_limited_carries_retry_after_header() {
        let response = Error::RateLimited {
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(2u64))
        );
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let err = Error::CorruptData("users.id \"x\" at /var/lib/secret".into());
        assert_eq!(err.status_and_code().1, "INTERNAL");
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn pool_timeouts_are_unavailable_not_internal() {
        let err = Error::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(
            err.status_and_code(),
            (StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE")
        );
    }
}
