//! Horizon's endpoints: `GET /`, `/health`, `/accounts/{id}`, `/fee_stats`,
//! `/transactions/{hash}`, `/friendbot`, and `POST /transactions`, `/transactions_async`.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Extension, Form, FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use stellar_xdr::{Limits, WriteXdr};

use crate::account::AccountKey;
use crate::envelope::{SubmittedTransaction, TxHash};
use crate::http::{ServingNode, hal_json};
use crate::network::TransactionPage;
use crate::problem::Problem;
use crate::resources::{
    AccountResource, AsyncSubmissionResponse, FeeStatsResource, TransactionResource, root_resource,
};
use crate::sim::Shared;
use crate::submission::{self, AsyncOutcome, FriendbotOutcome, SyncOutcome};

/// Horizon's reason for a bad account id.
const INVALID_ACCOUNT_ID: &str =
    "Account ID must start with `G` and contain 56 alphanum characters";

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/accounts/{account_id}", get(account))
        .route(
            "/accounts/{account_id}/transactions",
            get(account_transactions),
        )
        .route("/ledgers/{sequence}/transactions", get(ledger_transactions))
        .route("/fee_stats", get(fee_stats))
        .route("/transactions", post(submit_transaction))
        .route("/transactions_async", post(submit_transaction_async))
        .route("/transactions/{tx_id}", get(transaction))
        .route("/friendbot", get(friendbot_or_redirect))
}

async fn root(
    State(shared): State<Arc<Shared>>,
    Extension(node): Extension<ServingNode>,
) -> Response {
    let (close_time, elder) = {
        let network = shared.lock();
        (
            network.close_time_at(node.ledger),
            network.history_elder_ledger(node.ledger),
        )
    };
    let body = root_resource(
        &shared.base_url,
        &shared.config.network_passphrase,
        node.ledger,
        close_time,
        elder,
    );
    hal_json(StatusCode::OK, &body)
}

async fn health() -> Response {
    Json(json!({ "database_connected": true, "core_up": true, "core_synced": true }))
        .into_response()
}

async fn account(
    State(shared): State<Arc<Shared>>,
    Extension(node): Extension<ServingNode>,
    Path(account_id): Path<String>,
) -> Response {
    let Ok(key) = AccountKey::parse(&account_id) else {
        return Problem::invalid_field("account_id", INVALID_ACCOUNT_ID).into_response();
    };
    let resource = {
        let network = shared.lock();
        network
            .account_at(&key, node.ledger)
            .map(|entry| AccountResource::new(&shared.base_url, &key, entry))
    };
    match resource {
        Some(resource) => hal_json(StatusCode::OK, &resource),
        None => Problem::not_found().into_response(),
    }
}

/// The query of a collection endpoint (Horizon's paging parameters).
#[derive(Debug, Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    order: Option<String>,
    limit: Option<String>,
    include_failed: Option<String>,
}

impl PageQuery {
    /// The page asked for, or the problem Horizon answers for a bad parameter.
    fn parse(&self) -> Result<TransactionPage, Problem> {
        let cursor = match self.cursor.as_deref().map(str::trim) {
            None | Some("") => None,
            Some("now") => Some(i64::MAX),
            Some(text) => match text.parse::<i64>() {
                Ok(token) if token >= 0 => Some(token),
                _ => {
                    return Err(Problem::invalid_field(
                        "cursor",
                        "Paging token must be a non-negative integer or `now`",
                    ));
                }
            },
        };
        let descending = match self.order.as_deref() {
            None | Some("") | Some("asc") => false,
            Some("desc") => true,
            Some(_) => {
                return Err(Problem::invalid_field(
                    "order",
                    "order: invalid value, must be `asc` or `desc`",
                ));
            }
        };
        let limit = match self.limit.as_deref() {
            None | Some("") => DEFAULT_PAGE_LIMIT,
            Some(text) => match text.parse::<u32>() {
                Ok(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => limit,
                _ => {
                    return Err(Problem::invalid_field(
                        "limit",
                        "limit must be a positive integer of at most 200",
                    ));
                }
            },
        };
        let include_failed = match self.include_failed.as_deref() {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(Problem::invalid_field(
                    "include_failed",
                    "Filter should be true or false",
                ));
            }
        };
        Ok(TransactionPage {
            cursor,
            descending,
            limit,
            include_failed,
        })
    }
}

/// Horizon's default and largest page sizes.
const DEFAULT_PAGE_LIMIT: u32 = 10;
const MAX_PAGE_LIMIT: u32 = 200;

/// `GET /accounts/{id}/transactions`: the transactions the account took part in, a page at a
/// time, as the serving node has ingested them.
async fn account_transactions(
    State(shared): State<Arc<Shared>>,
    Extension(node): Extension<ServingNode>,
    Path(account_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Ok(key) = AccountKey::parse(&account_id) else {
        return Problem::invalid_field("account_id", INVALID_ACCOUNT_ID).into_response();
    };
    let page = match query.parse() {
        Ok(page) => page,
        Err(problem) => return problem.into_response(),
    };
    let records = shared.lock().account_transactions(&key, node.ledger, &page);
    let resources: Vec<TransactionResource> = records
        .iter()
        .map(|record| TransactionResource::new(&shared.base_url, record, &record.tx.hash))
        .collect();
    let collection = format!("{}/accounts/{}/transactions", shared.base_url, key);
    let order = |descending: bool| if descending { "desc" } else { "asc" };
    let href = |cursor: String, descending: bool| {
        json!({ "href": format!(
            "{collection}?cursor={cursor}&limit={}&order={}{}",
            page.limit,
            order(descending),
            if page.include_failed { "&include_failed=true" } else { "" },
        ) })
    };
    let requested = query.cursor.clone().unwrap_or_default();
    let first = records
        .first()
        .map_or(requested.clone(), |r| r.paging_token().to_string());
    let last = records
        .last()
        .map_or(requested.clone(), |r| r.paging_token().to_string());
    let body = json!({
        "_links": {
            "self": href(requested, page.descending),
            "next": href(last, page.descending),
            "prev": href(first, !page.descending),
        },
        "_embedded": { "records": resources },
    });
    hal_json(StatusCode::OK, &body)
}

/// `GET /ledgers/{sequence}/transactions`: the ledger's transactions in application order
/// (successful ones only unless `include_failed=true`), paged by `paging_token`; a ledger older
/// than `history_elder_ledger` is 410 `before_history`, one not closed yet an empty page.
async fn ledger_transactions(
    State(shared): State<Arc<Shared>>,
    Extension(node): Extension<ServingNode>,
    Path(sequence): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Ok(sequence) = sequence.parse::<u32>() else {
        return Problem::invalid_field("sequence", "Ledger sequence must be a positive integer")
            .into_response();
    };
    let page = match query.parse() {
        Ok(page) => page,
        Err(problem) => return problem.into_response(),
    };
    let records: Vec<_> = {
        let network = shared.lock();
        if sequence < network.history_elder_ledger(node.ledger) {
            return Problem::before_history().into_response();
        }
        let mut visible: Vec<_> = network
            .transactions_in_ledgers(sequence, sequence)
            .iter()
            .filter(|record| record.ingested_from_ledger <= node.ledger)
            .filter(|record| record.successful || page.include_failed)
            .filter(|record| match (page.descending, page.cursor) {
                (_, None) => true,
                (false, Some(after)) => record.paging_token() > after,
                (true, Some(before)) => record.paging_token() < before,
            })
            .cloned()
            .collect();
        if page.descending {
            visible.reverse();
        }
        visible.truncate(usize::try_from(page.limit).unwrap_or(usize::MAX));
        visible
    };
    let resources: Vec<TransactionResource> = records
        .iter()
        .map(|record| TransactionResource::new(&shared.base_url, record, &record.tx.hash))
        .collect();
    let collection = format!("{}/ledgers/{sequence}/transactions", shared.base_url);
    let order = |descending: bool| if descending { "desc" } else { "asc" };
    let href = |cursor: String, descending: bool| {
        json!({ "href": format!(
            "{collection}?cursor={cursor}&limit={}&order={}{}",
            page.limit,
            order(descending),
            if page.include_failed { "&include_failed=true" } else { "" },
        ) })
    };
    let requested = query.cursor.clone().unwrap_or_default();
    let first = records
        .first()
        .map_or(requested.clone(), |r| r.paging_token().to_string());
    let last = records
        .last()
        .map_or(requested.clone(), |r| r.paging_token().to_string());
    let body = json!({
        "_links": {
            "self": href(requested, page.descending),
            "next": href(last, page.descending),
            "prev": href(first, !page.descending),
        },
        "_embedded": { "records": resources },
    });
    hal_json(StatusCode::OK, &body)
}

async fn fee_stats(State(shared): State<Arc<Shared>>) -> Response {
    let stats = shared.lock().fee_stats();
    hal_json(StatusCode::OK, &FeeStatsResource::new(&stats))
}

async fn transaction(
    State(shared): State<Arc<Shared>>,
    Extension(node): Extension<ServingNode>,
    Path(tx_id): Path<String>,
) -> Response {
    let Ok(hash) = TxHash::parse(&tx_id) else {
        return Problem::invalid_field("tx_id", "Transaction hash must be 64 hex characters")
            .into_response();
    };
    let record = shared.lock().ingested_at(&hash, node.ledger).cloned();
    match record {
        Some(record) => hal_json(
            StatusCode::OK,
            &TransactionResource::new(&shared.base_url, &record, &hash),
        ),
        None => Problem::not_found().into_response(),
    }
}

/// The form of `POST /transactions` and `POST /transactions_async`.
#[derive(Debug, Deserialize)]
struct SubmissionForm {
    tx: Option<String>,
}

/// The `tx` field of a submission, decoded; a request that has none is refused with the
/// problem Horizon would answer.
struct Submission(Arc<SubmittedTransaction>);

impl FromRequest<Arc<Shared>> for Submission {
    type Rejection = Problem;

    async fn from_request(request: Request, shared: &Arc<Shared>) -> Result<Self, Problem> {
        let form = match Form::<SubmissionForm>::from_request(request, shared).await {
            Ok(Form(form)) => form,
            Err(FormRejection::InvalidFormContentType(_)) => {
                return Err(Problem::unsupported_media_type());
            }
            Err(rejection) => return Err(Problem::invalid_field("tx", &rejection.body_text())),
        };
        let Some(raw) = form.tx.filter(|tx| !tx.trim().is_empty()) else {
            return Err(Problem::invalid_field("tx", "field is required"));
        };
        let network_id = shared.lock().ledger.network_id();
        // Decoding verifies the signatures: CPU work, kept off the async workers.
        let envelope = raw.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            SubmittedTransaction::decode(&envelope, network_id)
        })
        .await
        .map_err(|_| Problem::server_error())?;
        decoded
            .map(|tx| Submission(Arc::new(tx)))
            .map_err(|_| Problem::transaction_malformed(&raw))
    }
}

async fn submit_transaction(
    State(shared): State<Arc<Shared>>,
    Submission(tx): Submission,
) -> Response {
    let outcome = submission::submit_sync(&shared, tx.clone()).await;
    tracing::debug!(hash = %tx.hash, outcome = ?outcome_name(&outcome), "POST /transactions");
    sync_response(&shared, &tx, outcome)
}

async fn submit_transaction_async(
    State(shared): State<Arc<Shared>>,
    Submission(tx): Submission,
) -> Response {
    let hash = tx.hash.to_hex();
    let answer = |status: StatusCode, tx_status: &'static str, error_result_xdr: Option<String>| {
        hal_json(
            status,
            &AsyncSubmissionResponse {
                error_result_xdr,
                tx_status,
                hash: hash.clone(),
            },
        )
    };
    match submission::submit_async(&shared, tx).await {
        AsyncOutcome::Pending => answer(StatusCode::CREATED, "PENDING", None),
        AsyncOutcome::Duplicate => answer(StatusCode::CONFLICT, "DUPLICATE", None),
        AsyncOutcome::TryAgainLater | AsyncOutcome::Unavailable => {
            answer(StatusCode::SERVICE_UNAVAILABLE, "TRY_AGAIN_LATER", None)
        }
        AsyncOutcome::Error(rejection) => answer(
            StatusCode::BAD_REQUEST,
            "ERROR",
            rejection.result.to_xdr_base64(Limits::none()).ok(),
        ),
        AsyncOutcome::Timeout => Problem::timeout().into_response(),
    }
}

/// The separate friendbot's routes: friendbot at its root.
pub(super) fn friendbot_routes() -> Router<Arc<Shared>> {
    Router::new().route("/", get(friendbot))
}

/// Horizon's `/friendbot` when friendbot runs apart: a 307 to it with the same query, as
/// Horizon's `--friendbot-url` does; otherwise friendbot itself.
async fn friendbot_or_redirect(
    State(shared): State<Arc<Shared>>,
    query: axum::extract::RawQuery,
    friendbot_query: Query<FriendbotQuery>,
) -> Response {
    let Some(url) = &shared.friendbot_url else {
        return friendbot(State(shared), friendbot_query).await;
    };
    let location = match query.0 {
        Some(query) => format!("{url}/?{query}"),
        None => format!("{url}/"),
    };
    match axum::http::HeaderValue::from_str(&location) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => Problem::invalid_field("addr", "invalid address").into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct FriendbotQuery {
    addr: Option<String>,
}

async fn friendbot(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<FriendbotQuery>,
) -> Response {
    let Some(Ok(destination)) = query.addr.as_deref().map(AccountKey::parse) else {
        return Problem::invalid_field("addr", "invalid address").into_response();
    };
    match submission::fund_with_friendbot(&shared, destination).await {
        FriendbotOutcome::AlreadyFunded => {
            Problem::bad_request_with_detail("account already funded to starting balance")
                .into_response()
        }
        FriendbotOutcome::Submitted(tx, outcome) => sync_response(&shared, &tx, outcome),
        FriendbotOutcome::Timeout => Problem::timeout().into_response(),
    }
}

/// Horizon's answer to a synchronous submission of `tx`.
fn sync_response(shared: &Shared, tx: &SubmittedTransaction, outcome: SyncOutcome) -> Response {
    match outcome {
        SyncOutcome::Applied(record) if record.successful => hal_json(
            StatusCode::OK,
            &TransactionResource::new(&shared.base_url, &record, &tx.hash),
        ),
        SyncOutcome::Applied(record) => {
            Problem::transaction_failed(&tx.envelope_xdr, &record.result, &tx.hash, None)
                .into_response()
        }
        SyncOutcome::Rejected { result, detail } => {
            Problem::transaction_failed(&tx.envelope_xdr, &result, &tx.hash, detail.as_deref())
                .into_response()
        }
        SyncOutcome::Timeout => Problem::timeout().into_response(),
        SyncOutcome::SubmissionTimeout => {
            Problem::transaction_submission_timeout(&tx.hash, &tx.envelope_xdr).into_response()
        }
        SyncOutcome::Unavailable => Problem::server_over_capacity().into_response(),
    }
}

fn outcome_name(outcome: &SyncOutcome) -> &'static str {
    match outcome {
        SyncOutcome::Applied(record) if record.successful => "success",
        SyncOutcome::Applied(_) => "tx_failed",
        SyncOutcome::Rejected { .. } => "rejected",
        SyncOutcome::Timeout => "timeout",
        SyncOutcome::SubmissionTimeout => "transaction_submission_timeout",
        SyncOutcome::Unavailable => "unavailable",
    }
}
