//! The HTTP server: Horizon's endpoints ([`horizon`]) behind the outage and latency faults, and
//! the simulator's control API under `/_sim` ([`control`]), which faults never touch.

mod control;
mod horizon;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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
    Router::new()
        .nest("/_sim", control::routes())
        .merge(horizon)
        .with_state(shared)
}

/// Applies the outage and latency faults to Horizon's endpoints.
async fn horizon_faults(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let (outage, latency_ms) = {
        let network = shared.lock();
        (network.faults.outage, network.faults.latency_ms)
    };
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    if outage {
        return Problem::server_over_capacity().into_response();
    }
    next.run(request).await
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
