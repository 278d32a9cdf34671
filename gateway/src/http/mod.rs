//! The HTTP/JSON API (axum).
//!
//! Request path through the layers, outermost first:
//! [`request_context`] (request id, log span, metrics, deadline) → routing →
//! for `/v1/...`: [`auth::authenticate`] (bearer API key) → [`rate_limit`] (per key) →
//! [`auth::require_admin`] (admin routes only) → [`idempotency`] (POSTs; `POST /v1/payments`
//! keeps its key on the payment row instead) → handler.
//!
//! Handlers live in one module per resource ([`users`], [`wallets`], [`payments`], [`audit`]); [`health`] has
//! liveness, readiness and `/metrics`; [`openapi`] the document at `/openapi.json`; [`extract`]
//! the extractors that turn bad input into `VALIDATION_FAILED` instead of axum's plain text.

pub mod audit;
pub mod auth;
pub mod deposits;
pub mod extract;
pub mod health;
pub mod history;
pub mod idempotency;
pub mod openapi;
pub mod payments;
pub mod rate_limit;
pub mod request_context;
pub mod users;
pub mod wallets;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{delete, get, post};

use crate::api_key::Caller;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model::{Actor, RequestId};
use crate::network::Network;
use crate::provision::WalletProvisioner;
use crate::signer::Signer;
use crate::store::{AuditContext, DailyLimits, Store};

/// What every handler and middleware shares.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The signerd client.
    pub signer: Arc<Signer>,
    /// Wallet creation.
    pub provisioner: Arc<WalletProvisioner>,
    /// Metrics.
    pub metrics: Metrics,
    /// The per-API-key rate limiter.
    pub limiter: Arc<rate_limit::KeyedLimiter>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Deadline of a whole request.
    pub request_timeout: Duration,
    /// The network API (Horizon or RPC, one trait), when `[network]` is configured.
    pub network: Option<Arc<dyn Network>>,
    /// Whether the configured network is a test network (friendbot allowed).
    pub test_network: bool,
    /// The configured default daily limits per wallet.
    pub payment_limits: DailyLimits,
    /// Tells this process's payment worker about accepted payments.
    pub payment_wake: Arc<crate::payments::worker::PaymentWake>,
    /// Webhook target rules and rotation overlap.
    pub webhooks: Arc<crate::webhooks::WebhooksConfig>,
}

impl AppState {
    /// How long an Idempotency-Key claim lasts: past the request deadline, so a live request
    /// never loses its claim, and short enough that a crashed one frees it soon.
    pub fn idempotency_lock(&self) -> Duration {
        self.request_timeout + Duration::from_secs(5)
    }
}

/// The audit context of an API request.
pub fn audit_context(caller: &Caller, request_id: &RequestId) -> AuditContext {
    AuditContext {
        actor: Actor::ApiKey(caller.key_id),
        request_id: Some(request_id.clone()),
    }
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let service_routes = Router::new()
        .route("/v1/users", post(users::create_user).get(users::list_users))
        .route("/v1/users/{user_id}", get(users::get_user))
        .route(
            "/v1/users/{user_id}/wallet",
            post(wallets::create_wallet).get(wallets::get_user_wallet),
        )
        .route("/v1/wallets/{wallet_id}", get(wallets::get_wallet))
        .route("/v1/payments/{payment_id}", get(payments::get_payment))
        .route(
            "/v1/wallets/{wallet_id}/payments",
            get(payments::list_wallet_payments),
        )
        .route(
            "/v1/wallets/{wallet_id}/deposits",
            get(deposits::list_wallet_deposits),
        )
        .route(
            "/v1/wallets/{wallet_id}/history",
            get(history::list_wallet_history),
        )
        .route(
            "/v1/wallets/{wallet_id}/balance",
            get(payments::get_balance),
        )
        .route("/v1/wallets/{wallet_id}/fund", post(payments::fund_wallet))
        .route(
            "/v1/webhooks",
            post(webhooks::create_webhook).get(webhooks::list_webhooks),
        )
        .route(
            "/v1/webhooks/{webhook_id}",
            delete(webhooks::delete_webhook),
        )
        .route(
            "/v1/webhooks/{webhook_id}/rotate-secret",
            post(webhooks::rotate_webhook_secret),
        )
        .route(
            "/v1/webhooks/{webhook_id}/deliveries",
            get(webhooks::list_deliveries),
        )
        .route(
            "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
            post(webhooks::replay_delivery),
        )
        .route_layer(from_fn_with_state(state.clone(), idempotency::idempotency))
        // Payments keep their Idempotency-Key on the payment row (see the handler).
        .route("/v1/payments", post(payments::create_payment));
    let admin_routes = Router::new()
        .route("/v1/users/{user_id}/block", post(users::block_user))
        .route("/v1/users/{user_id}/unblock", post(users::unblock_user))
        .route(
            "/v1/wallets/{wallet_id}/freeze",
            post(wallets::freeze_wallet),
        )
        .route(
            "/v1/wallets/{wallet_id}/unfreeze",
            post(wallets::unfreeze_wallet),
        )
        .route("/v1/audit-events", get(audit::list_audit_events))
        .route(
            "/v1/payments/{payment_id}/resolve",
            post(payments::resolve_payment),
        )
        .route(
            "/v1/wallets/{wallet_id}/limits",
            get(payments::get_limits).post(payments::set_limits),
        )
        .route_layer(from_fn_with_state(state.clone(), idempotency::idempotency))
        .route_layer(from_fn(auth::require_admin));
    let api = service_routes
        .merge(admin_routes)
        .route_layer(from_fn_with_state(state.clone(), rate_limit::rate_limit))
        .route_layer(from_fn_with_state(state.clone(), auth::authenticate));
    let document = Arc::new(openapi::document());
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route(
            "/openapi.json",
            get(move || openapi::serve(document.clone())),
        )
        .merge(api)
        .fallback(|| async { Error::RouteNotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(from_fn_with_state(
            state.clone(),
            request_context::request_context,
        ))
        .with_state(state)
}
