//! Horizon's errors: RFC 7807 problem JSON (`application/problem+json`) with Horizon's types,
//! titles and details, copied from Horizon's source (`support/render/problem`,
//! `services/horizon/internal/render/problem`, `actions/submit_transaction.go`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use stellar_xdr::{Limits, TransactionResult, WriteXdr};

use crate::envelope::TxHash;
use crate::results::ResultCodes;

/// Horizon prefixes every problem type with this.
const PROBLEM_TYPE_PREFIX: &str = "https://stellar.org/horizon-errors/";

/// One Horizon problem response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    /// The problem type URL, e.g. `https://stellar.org/horizon-errors/not_found`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The short title, e.g. `Resource Missing`.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// The long explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Machine-readable details (result codes, the envelope, the invalid field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extras: Option<Value>,
}

impl Problem {
    fn new(problem_type: &str, title: &str, status: StatusCode, detail: &str) -> Self {
        Problem {
            problem_type: format!("{PROBLEM_TYPE_PREFIX}{problem_type}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: Some(detail.to_owned()),
            extras: None,
        }
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Problem::new(
            "not_found",
            "Resource Missing",
            StatusCode::NOT_FOUND,
            "The resource at the url requested was not found.  This usually occurs for one of \
             two reasons:  The url requested is not valid, or no data in our database could be \
             found with the parameters provided.",
        )
    }

    /// 410 `before_history`: data older than the oldest ledger Horizon keeps (its
    /// `history_elder_ledger`), as Horizon's `problem.BeforeHistory`.
    pub fn before_history() -> Self {
        Problem::new(
            "before_history",
            "Data Requested Is Before Recorded History",
            StatusCode::GONE,
            "This horizon instance is configured to only track a portion of the stellar \
             network's latest history. This request is asking for results prior to the \
             recorded history known to this horizon instance.",
        )
    }

    /// 500 `server_error`: a bug in the simulator.
    pub fn server_error() -> Self {
        Problem::new(
            "server_error",
            "Internal Server Error",
            StatusCode::INTERNAL_SERVER_ERROR,
            "An error occurred while processing this request.  This is usually due to a bug \
             within the server software.  Trying this request again may succeed if the bug is \
             transient. Otherwise, please contact the system administrator.",
        )
    }

    /// 400 `bad_request` with Horizon's generic detail.
    pub fn bad_request() -> Self {
        Problem::new(
            "bad_request",
            "Bad Request",
            StatusCode::BAD_REQUEST,
            "The request you sent was invalid in some way.",
        )
    }

    /// 400 `bad_request` naming the invalid field, as Horizon's `MakeInvalidFieldProblem`.
    pub fn invalid_field(field: &str, reason: &str) -> Self {
        Problem {
            extras: Some(json!({ "invalid_field": field, "reason": reason })),
            ..Problem::bad_request()
        }
    }

    /// 400 `bad_request` with a specific detail (friendbot's "already funded").
    pub fn bad_request_with_detail(detail: &str) -> Self {
        Problem {
            detail: Some(detail.to_owned()),
            ..Problem::bad_request()
        }
    }

    /// 415 `unsupported_media_type`: a submission that is not form-encoded.
    pub fn unsupported_media_type() -> Self {
        Problem::new(
            "unsupported_media_type",
            "Unsupported Media Type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The request has an unsupported content type. Presently, the only supported content \
             type is application/x-www-form-urlencoded.",
        )
    }

    /// 400 `transaction_malformed`, echoing the envelope.
    pub fn transaction_malformed(envelope_xdr: &str) -> Self {
        Problem {
            extras: Some(json!({ "envelope_xdr": envelope_xdr })),
            ..Problem::new(
                "transaction_malformed",
                "Transaction Malformed",
                StatusCode::BAD_REQUEST,
                "Horizon could not decode the transaction envelope in this request. A \
                 transaction should be an XDR TransactionEnvelope struct encoded using base64.  \
                 The envelope read from this request is echoed in the `extras.envelope_xdr` \
                 field of this response for your convenience.",
            )
        }
    }

    /// 400 `transaction_failed` with the result XDR and its codes as seen for `requested`.
    /// `simulator_note` (an unsupported feature) is appended to Horizon's detail.
    pub fn transaction_failed(
        envelope_xdr: &str,
        result: &TransactionResult,
        requested: &TxHash,
        simulator_note: Option<&str>,
    ) -> Self {
        let mut problem = Problem::new(
            "transaction_failed",
            "Transaction Failed",
            StatusCode::BAD_REQUEST,
            "The transaction failed when submitted to the stellar network. The \
             `extras.result_codes` field on this response contains further details.  \
             Descriptions of each code can be found at: \
             https://developers.stellar.org/api/errors/http-status-codes/horizon-specific/transaction-failed/",
        );
        if let (Some(note), Some(detail)) = (simulator_note, problem.detail.as_mut()) {
            detail.push_str(" Horizon simulator: ");
            detail.push_str(note);
        }
        problem.extras = Some(json!({
            "envelope_xdr": envelope_xdr,
            "result_xdr": result.to_xdr_base64(Limits::none()).unwrap_or_default(),
            "result_codes": ResultCodes::of(result, requested),
        }));
        problem
    }

    /// 504 `timeout`.
    pub fn timeout() -> Self {
        Problem::new(
            "timeout",
            "Timeout",
            StatusCode::GATEWAY_TIMEOUT,
            "Your request timed out before completing.  Please try your request again. If you \
             are submitting a transaction make sure you are sending exactly the same \
             transaction (with the same sequence number).",
        )
    }

    /// 429 `rate_limit_exceeded` (Horizon's `RateLimitExceeded`); the caller adds `Retry-After`.
    pub fn rate_limit_exceeded() -> Self {
        Problem::new(
            "rate_limit_exceeded",
            "Rate Limit Exceeded",
            StatusCode::TOO_MANY_REQUESTS,
            "The rate limit for the requesting IP address is over its alloted limit.  The \
             allowed limit and requests left per time period are communicated to clients via \
             the http response headers 'X-RateLimit-*' headers.",
        )
    }

    /// 504 `transaction_submission_timeout` (Horizon v2.28 and later): no result before the
    /// submission timeout; `extras.hash` names the transaction to poll for.
    pub fn transaction_submission_timeout(hash: &TxHash, envelope_xdr: &str) -> Self {
        Problem {
            extras: Some(json!({ "hash": hash.to_hex(), "envelope_xdr": envelope_xdr })),
            ..Problem::new(
                "transaction_submission_timeout",
                "Transaction Submission Timeout",
                StatusCode::GATEWAY_TIMEOUT,
                "Your transaction submission request has timed out. This does not necessarily \
                 mean the submission has failed. Before resubmitting, please use the \
                 transaction hash provided in `extras.hash` to poll the GET /transactions \
                 endpoint for sometime and check if it was included in a ledger.",
            )
        }
    }

    /// 503 `server_over_capacity`, Horizon's own 503 problem.
    pub fn server_over_capacity() -> Self {
        Problem::new(
            "server_over_capacity",
            "Server Over Capacity",
            StatusCode::SERVICE_UNAVAILABLE,
            "This horizon server is currently overloaded.  Please wait for several minutes \
             before trying your request again.",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec_pretty(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json; charset=utf-8"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_carry_horizons_type_urls_and_statuses() {
        let not_found = serde_json::to_value(Problem::not_found()).unwrap_or_default();
        assert_eq!(
            not_found["type"],
            "https://stellar.org/horizon-errors/not_found"
        );
        assert_eq!(not_found["title"], "Resource Missing");
        assert_eq!(not_found["status"], 404);
        assert!(not_found.get("extras").is_none());
        assert_eq!(Problem::timeout().status, 504);
        assert_eq!(Problem::server_over_capacity().status, 503);
        let field =
            serde_json::to_value(Problem::invalid_field("tx", "missing")).unwrap_or_default();
        assert_eq!(field["extras"]["invalid_field"], "tx");
    }
}
