//! Liveness, readiness and metrics. Unauthenticated: probes and scrapers carry no API key, and
//! these endpoints reveal nothing about users or wallets.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::model::RequestId;

/// How long readiness waits for each dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The readiness report.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// `ok`, or why the database is not usable.
    pub database: String,
    /// `ok`, or why signerd is not usable.
    pub signer: String,
    /// `ok`, `not configured`, or why the network API (Horizon or RPC) is not usable. Reported
    /// but not required: payments are accepted and wait while the network is down, so a
    /// network outage must not take the gateway out of its load balancer.
    pub network: String,
}

/// The process is up (no dependency is checked: restarting would not fix them).
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200)))]
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "live" }))
}

/// Ready to serve: the database answers and signerd reports `SERVING`. 503 otherwise, with the
/// reason per dependency. The network API's state is reported beside them.
#[utoipa::path(
    get, path = "/health/ready", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness))
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let request_id = RequestId::generate();
    let network = async {
        match &state.network {
            Some(network) => match tokio::time::timeout(PROBE_TIMEOUT, network.check_ready()).await
            {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => format!("{}: {e}", network.kind()),
                Err(_) => format!("{}: timed out", network.kind()),
            },
            None => "not configured".to_owned(),
        }
    };
    let (database, signer, network) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()),
        tokio::time::timeout(PROBE_TIMEOUT, state.signer.check_health(&request_id)),
        network,
    );
    let describe = |outcome: Result<crate::error::Result<()>, _>| match outcome {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    let (database, signer) = (describe(database), describe(signer));
    let ready = database == "ok" && signer == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let report = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        database,
        signer,
        network,
    };
    (status, Json(report))
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
