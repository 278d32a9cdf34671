//! The HTTP server: Horizon's endpoints ([`horizon`]) and Stellar RPC's `POST /rpc` ([`rpc`]),
//! each behind the latency, rate limit and outage faults, and the simulator's control API under
//! `/_sim` ([`control`]), which faults never touch.

mod control;
mod horizon;
mod rpc;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;

use crate::network::{RateStanding, RequestAdmission};
use crate::problem::Problem;
use crate::sim::Shared;

/// Every route, with the shared state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let horizon = horizon::routes()
        .fallback(|| async { Problem::not_found() })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            horizon_faults,
        ));
    let rpc = Router::new()
        .route("/rpc", post(rpc::endpoint))
        // stellar-rpc's maxHTTPRequestSize.
        .layer(DefaultBodyLimit::max(RPC_MAX_REQUEST_BYTES))
        .layer(middleware::from_fn_with_state(shared.clone(), rpc_faults));
    Router::new()
        .nest("/_sim", control::routes())
        .merge(rpc)
        .merge(horizon)
        .with_state(shared)
}

/// The largest JSON-RPC request body stellar-rpc reads (half a megabyte).
const RPC_MAX_REQUEST_BYTES: usize = 512 * 1024;

/// What the faults let through, before any endpoint sees the request.
enum Gate {
    /// Served, with the rate budget's standing if one is in force.
    Pass(Option<RateStanding>),
    /// Refused by the rate limit faults.
    RateLimited {
        retry_after: Duration,
        standing: Option<RateStanding>,
    },
    /// The outage fault.
    Outage,
}

/// The faults every request to the network's APIs goes through, in order: latency, the rate
/// limit (one budget for Horizon and RPC: one provider), the outage.
async fn gate(shared: &Shared) -> Gate {
    let (outage, latency_ms) = {
        let network = shared.lock();
        (network.faults.outage, network.faults.latency_ms)
    };
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    match shared.lock().admit_request(tokio::time::Instant::now()) {
        RequestAdmission::Refused {
            retry_after,
            standing,
        } => Gate::RateLimited {
            retry_after,
            standing,
        },
        RequestAdmission::Served(_) if outage => Gate::Outage,
        RequestAdmission::Served(standing) => Gate::Pass(standing),
    }
}

/// A 429 `response` with `Retry-After` in whole seconds, rounded up (a client that waits that
/// long is served), and the budget's standing.
fn refused(
    mut response: Response,
    retry_after: Duration,
    standing: Option<RateStanding>,
) -> Response {
    let seconds = retry_after.as_millis().div_ceil(1000).max(1);
    let headers = response.headers_mut();
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(u64::try_from(seconds).unwrap_or(u64::MAX)),
    );
    insert_rate_standing(headers, standing);
    response
}

/// Applies the latency, rate limit and outage faults to `POST /rpc` as an RPC provider shows
/// them: 429 with `Retry-After` (and a JSON-RPC error body), a bare 503 during an outage.
async fn rpc_faults(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let standing = match gate(&shared).await {
        Gate::Pass(standing) => standing,
        Gate::RateLimited {
            retry_after,
            standing,
        } => return refused(rpc::rate_limited(), retry_after, standing),
        Gate::Outage => return rpc::proxy_error(axum::http::StatusCode::SERVICE_UNAVAILABLE),
    };
    let mut response = next.run(request).await;
    insert_rate_standing(response.headers_mut(), standing);
    response
}

/// Horizon's header naming the latest ledger the answering node has ingested.
const LATEST_LEDGER: &str = "latest-ledger";

/// The Horizon node serving a request, by the ledger it has ingested (see
/// [`crate::Faults::node_lags`]): reads answer as of that ledger.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServingNode {
    /// The latest ledger that node has ingested.
    pub(crate) ledger: u32,
}

/// The separate friendbot (testnet's `friendbot.stellar.org`): `GET /?addr=G...`.
pub(crate) fn friendbot_router(shared: Arc<Shared>) -> Router {
    horizon::friendbot_routes()
        .fallback(|| async { Problem::not_found() })
        .with_state(shared)
}

/// Applies the outage and latency faults to Horizon's endpoints, and picks the node that serves
/// the request: reads go to the nodes in turn, submissions to an up-to-date one.
async fn horizon_faults(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let standing = match gate(&shared).await {
        Gate::Pass(standing) => standing,
        Gate::RateLimited {
            retry_after,
            standing,
        } => {
            return refused(
                Problem::rate_limit_exceeded().into_response(),
                retry_after,
                standing,
            );
        }
        Gate::Outage => return Problem::server_over_capacity().into_response(),
    };
    let node = {
        let mut network = shared.lock();
        let ledger = if request.method() == Method::GET {
            network.serving_ledger()
        } else {
            network.ledger.sequence
        };
        ServingNode { ledger }
    };
    request.extensions_mut().insert(node);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(LATEST_LEDGER, HeaderValue::from(node.ledger));
    insert_rate_standing(headers, standing);
    response
}

/// Horizon's advisory `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds) headers.
fn insert_rate_standing(headers: &mut HeaderMap, standing: Option<RateStanding>) {
    let Some(standing) = standing else {
        return;
    };
    let reset = standing.reset.as_millis().div_ceil(1000);
    headers.insert("x-ratelimit-limit", HeaderValue::from(standing.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(standing.remaining),
    );
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(u64::try_from(reset).unwrap_or(u64::MAX)),
    );
}

/// A Horizon resource: JSON with Horizon's HAL content type.
pub(crate) fn hal_json<T: Serialize>(status: axum::http::StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/hal+json; charset=utf-8"),
    );
    response
}
