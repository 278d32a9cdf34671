//! Extractors that parse requests into typed values and report every problem as
//! `VALIDATION_FAILED` (or `PAYLOAD_TOO_LARGE`) JSON naming what was wrong, instead of axum's
//! plain-text rejections.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::model::{PaymentId, UserId, WalletId};

/// A JSON body; unknown fields are refused by the target type's `deny_unknown_fields`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let limit = max_body_hint(&req);
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection, limit)),
        }
    }
}

fn max_body_hint(req: &Request) -> usize {
    req.extensions()
        .get::<MaxBodyBytes>()
        .map(|m| m.0)
        .unwrap_or_default()
}

/// The configured body limit, put in the request's extensions so rejections can name it.
#[derive(Clone, Copy, Debug)]
pub struct MaxBodyBytes(pub usize);

fn json_rejection(rejection: JsonRejection, limit: usize) -> Error {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            Error::Validation("expected Content-Type: application/json".into())
        }
        JsonRejection::JsonSyntaxError(e) => {
            Error::Validation(format!("body is not valid JSON: {}", innermost(&e)))
        }
        JsonRejection::JsonDataError(e) => {
            Error::Validation(format!("invalid request body: {}", innermost(&e)))
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Error::BodyTooLarge { limit },
        other => Error::Validation(format!(
            "cannot read the request body: {}",
            other.body_text()
        )),
    }
}

/// Query parameters; unknown parameters are refused by the target type's `deny_unknown_fields`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(Error::Validation(
                format!("invalid query: {}", innermost(&e)),
            )),
            Err(other) => Err(Error::Validation(format!(
                "invalid query: {}",
                other.body_text()
            ))),
        }
    }
}

/// A value that appears as the single path parameter of a route.
pub trait PathValue: Sized {
    /// Parses the raw (percent-decoded) segment.
    fn parse_path(raw: &str) -> Result<Self>;
}

impl PathValue for UserId {
    fn parse_path(raw: &str) -> Result<Self> {
        UserId::parse(raw)
    }
}

impl PathValue for WalletId {
    fn parse_path(raw: &str) -> Result<Self> {
        WalletId::parse(raw)
    }
}

impl PathValue for PaymentId {
    fn parse_path(raw: &str) -> Result<Self> {
        PaymentId::parse(raw)
    }
}

/// The route's single path parameter, parsed.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: PathValue> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::Validation(format!("invalid path: {}", e.body_text())))?;
        T::parse_path(&raw).map(ApiPath)
    }
}

/// The message of the deepest error in a chain (serde's own words, with line and column).
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}
