//! Webhook endpoints: register (the secret is shown once), list, delete, rotate the secret, list
//! an endpoint's deliveries, replay one.
//!
//! Roles: every route takes a service key (or an admin key). Endpoints receive the same payment
//! data service keys can already read, so no wider right is granted; every change (register,
//! delete, rotate, replay) is written with an audit event naming the API key, so admins see who
//! pointed events where (`GET /v1/audit-events`, subject type `webhook`).

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiPath, ApiQuery, PathValue};
use super::users::page_size;
use super::{AppState, audit_context};
use crate::api_key::Caller;
use crate::error::{Error, ErrorBody, Result};
use crate::model::{RequestId, Timestamp, WebhookId};
use crate::store::webhooks::{DeliveryRecord, EndpointRecord, Replay};
use crate::webhooks::signature::WebhookSecret;
use crate::webhooks::{EventType, TargetUrl};

impl PathValue for WebhookId {
    fn parse_path(raw: &str) -> Result<Self> {
        WebhookId::parse(raw)
    }
}

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where events are POSTed: `https://` (plain `http://` only when the gateway's config
    /// allows it), at most 2048 characters, no user info. Hosts that are or resolve to loopback,
    /// private, link-local or other non-public addresses are refused unless the config allows
    /// them; the address is checked again at every delivery.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// The event types to receive (1 to 6, no repeats).
    #[schema(schema_with = event_types_schema)]
    pub event_types: Vec<EventType>,
}

/// `event_types`: 1 to 6 distinct `EventType`s (utoipa has no `unique_items` attribute).
fn event_types_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name("EventType"))
        .min_items(Some(1))
        .max_items(Some(EventType::ALL.len()))
        .unique_items(true)
        .description(Some("The event types to receive (1 to 6, no repeats)."))
        .build()
}

/// A registered endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct Webhook {
    /// Id.
    #[schema(value_type = String)]
    pub id: WebhookId,
    /// Target URL.
    pub url: String,
    /// Subscribed event types.
    pub event_types: Vec<String>,
    /// When registered.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl From<EndpointRecord> for Webhook {
    fn from(r: EndpointRecord) -> Self {
        Webhook {
            id: r.id,
            url: r.url,
            event_types: r.event_types,
            created_at: r.created_at,
        }
    }
}

/// A registered endpoint with its signing secret (shown only in this answer).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookWithSecret {
    /// The endpoint.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_` + base64 of 32 random bytes: the Standard Webhooks signing secret. Shown once.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]+={0,2}$")]
    pub secret: String,
}

/// The answer to a rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    /// The endpoint.
    #[schema(value_type = String)]
    pub id: WebhookId,
    /// The new secret (shown once).
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]+={0,2}$")]
    pub secret: String,
    /// How long the previous secret keeps signing alongside the new one (both signatures in
    /// `webhook-signature`), in milliseconds.
    pub previous_secret_valid_for_ms: u64,
}

/// The live endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub webhooks: Vec<Webhook>,
}

/// Paging parameters of the deliveries list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListDeliveriesQuery {
    /// Page size, 1..=500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Return deliveries older than this delivery id (the `next_before` of the previous page).
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

/// One delivery of one event to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// Id (increasing).
    pub id: i64,
    /// The event id, sent as `webhook-id` (the same at every attempt and replay).
    pub event_id: String,
    /// The event type.
    pub event_type: EventTypeName,
    /// The wallet the event belongs to.
    pub wallet_id: String,
    /// The event's number in its wallet (1, 2, ...; delivered in this order).
    pub wallet_sequence: i64,
    /// `PENDING` (to send, or retrying), `DELIVERED` (a 2xx came back), `DEAD` (the retry
    /// budget ran out; replay to try again) or `CANCELLED` (the endpoint was deleted).
    #[schema(pattern = "^(PENDING|DELIVERED|DEAD|CANCELLED)$")]
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the last attempt was made.
    pub last_attempt_at: Option<String>,
    /// The HTTP status of the last attempt, when an answer came.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered, given up or cancelled.
    pub finished_at: Option<String>,
}

/// An event type name as stored (one of [`EventType`]'s names).
pub type EventTypeName = String;

impl From<DeliveryRecord> for Delivery {
    fn from(r: DeliveryRecord) -> Self {
        Delivery {
            id: r.id,
            event_id: r.event_id,
            event_type: r.event_type,
            wallet_id: r.wallet_id,
            wallet_sequence: r.wallet_sequence,
            state: r.state,
            attempts: r.attempts,
            last_attempt_at: r.last_attempt_at,
            last_status: r.last_status,
            last_error: r.last_error,
            finished_at: r.finished_at,
        }
    }
}

/// One page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// The deliveries.
    pub deliveries: Vec<Delivery>,
    /// Pass as `before` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// What a webhook request carries: headers `webhook-id` (the event id), `webhook-timestamp`
/// (Unix seconds of the attempt) and `webhook-signature` (`v1,<base64 HMAC-SHA256>` of
/// `{webhook-id}.{webhook-timestamp}.{body}` keyed by the secret's base64-decoded bytes, one per
/// live secret, space-separated), per Standard Webhooks 1.0; the body is this object.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEvent {
    /// The event id (`evt_<n>`), also the `webhook-id` header.
    #[schema(pattern = "^evt_[0-9]+$")]
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When the change happened (RFC 3339).
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// The wallet.
    pub wallet_id: String,
    /// The event's number in its wallet: 1, 2, 3, ... without gaps, in the order of the changes.
    #[schema(minimum = 1)]
    pub wallet_sequence: i64,
    /// The payment after the change (`payment.*`), or the deposit (`deposit.received`).
    pub data: EventData,
}

/// An event's subject: a payment (`payment.*` events) or a deposit (`deposit.received`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EventData {
    /// A payment after the change.
    Payment(PaymentEventData),
    /// A deposit.
    Deposit(crate::http::deposits::DepositEventData),
}

/// A payment's public fields in an event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentEventData {
    /// Payment id.
    pub id: String,
    /// Status after the change (a `PaymentStatus`).
    #[schema(value_type = crate::payments::PaymentStatus)]
    pub status: String,
    /// The paying wallet.
    pub source_wallet_id: String,
    /// The destination as given.
    pub destination: String,
    /// The destination account.
    pub destination_account: String,
    /// Amount in lumens (7 decimals).
    pub amount: String,
    /// Amount in stroops.
    pub amount_stroops: i64,
    /// Memo.
    pub memo: Option<String>,
    /// The current transaction's hash (from `SIGNED` on).
    pub tx_hash: Option<String>,
    /// Its sequence number.
    pub sequence: Option<i64>,
    /// The ledger it applied in (`SUCCESS`).
    pub ledger: Option<i64>,
    /// Fee charged in stroops.
    pub fee_stroops: Option<i64>,
    /// Why it failed (`FAILED`).
    pub failure_reason: Option<String>,
    /// What the transition says.
    pub detail: Option<String>,
    /// When the payment was accepted.
    pub created_at: String,
    /// When it changed.
    pub updated_at: String,
}

fn event_type_names(types: &[EventType]) -> Result<Vec<&'static str>> {
    if types.is_empty() || types.len() > EventType::ALL.len() {
        return Err(Error::Validation(
            "event_types: list 1 to 6 event types".into(),
        ));
    }
    let mut names: Vec<&'static str> = types.iter().map(|t| t.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() != types.len() {
        return Err(Error::Validation("event_types: repeated type".into()));
    }
    Ok(names)
}

async fn live_webhook(state: &AppState, id: WebhookId) -> Result<EndpointRecord> {
    state
        .store
        .webhook(id)
        .await?
        .ok_or_else(|| Error::WebhookNotFound(format!("webhook {id} not found")))
}

/// Registers an endpoint. Every event of the subscribed types from now on is POSTed to it,
/// signed (see the `WebhookEvent` schema for the request the endpoint receives).
#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks",
    request_body = CreateWebhookRequest,
    params(("Idempotency-Key" = String, Header, description = "Required on every POST")),
    responses(
        (status = 201, description = "Registered; the secret is shown only here", body = WebhookWithSecret),
        (status = 400, description = "VALIDATION_FAILED (URL scheme, private target, event types)", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED (with Retry-After)", body = ErrorBody),
        (status = 409, description = "IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_CONFLICT", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<WebhookWithSecret>)> {
    let url = TargetUrl::parse(&body.url, &state.webhooks)?;
    url.check_resolved(&state.webhooks).await?;
    let types = event_type_names(&body.event_types)?;
    let secret = WebhookSecret::generate()?;
    let endpoint = state
        .store
        .create_webhook(
            url.as_str(),
            &types,
            &secret,
            &audit_context(&caller, &request_id),
        )
        .await?;
    tracing::info!(webhook_id = %endpoint.id, "webhook registered");
    Ok((
        StatusCode::CREATED,
        Json(WebhookWithSecret {
            webhook: endpoint.into(),
            secret: secret.expose().to_owned(),
        }),
    ))
}

/// The live endpoints (secrets are never shown again).
#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    responses(
        (status = 200, body = WebhookList),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED (with Retry-After)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_webhooks(State(state): State<AppState>) -> Result<Json<WebhookList>> {
    let webhooks = state.store.webhooks().await?;
    Ok(Json(WebhookList {
        webhooks: webhooks.into_iter().map(Webhook::from).collect(),
    }))
}

/// Deletes an endpoint: no new deliveries; pending ones are cancelled.
#[utoipa::path(
    delete, path = "/v1/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "A UUID")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "VALIDATION_FAILED (malformed id)", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED (with Retry-After)", body = ErrorBody),
        (status = 404, description = "WEBHOOK_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<WebhookId>,
) -> Result<StatusCode> {
    if !state
        .store
        .delete_webhook(id, &audit_context(&caller, &request_id))
        .await?
    {
        return Err(Error::WebhookNotFound(format!("webhook {id} not found")));
    }
    tracing::info!(webhook_id = %id, "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the signing secret. The previous one keeps signing too (a second signature in
/// `webhook-signature`) for `webhooks.rotation_overlap_ms`, so receivers can switch without
/// dropping events.
#[utoipa::path(
    post, path = "/v1/webhooks/{webhook_id}/rotate-secret", tag = "webhooks",
    params(
        ("webhook_id" = String, Path, description = "A UUID"),
        ("Idempotency-Key" = String, Header, description = "Required on every POST"),
    ),
    responses(
        (status = 200, description = "The new secret, shown only here", body = RotatedSecret),
        (status = 400, description = "VALIDATION_FAILED (malformed id)", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED (with Retry-After)", body = ErrorBody),
        (status = 404, description = "WEBHOOK_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_CONFLICT", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<WebhookId>,
) -> Result<Json<RotatedSecret>> {
    let secret = WebhookSecret::generate()?;
    let overlap = state.webhooks.rotation_overlap_ms;
    if !state
        .store
        .rotate_webhook_secret(id, &secret, overlap, &audit_context(&caller, &request_id))
        .await?
    {
        return Err(Error::WebhookNotFound(format!("webhook {id} not found")));
    }
    tracing::info!(webhook_id = %id, "webhook secret rotated");
    Ok(Json(RotatedSecret {
        id,
        secret: secret.expose().to_owned(),
        previous_secret_valid_for_ms: overlap,
    }))
}

/// An endpoint's deliveries, newest first.
#[utoipa::path(
    get, path = "/v1/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "A UUID"), ListDeliveriesQuery),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, description = "VALIDATION_FAILED (malformed id, limit out of range)", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED (with Retry-After)", body = ErrorBody),
        (status = 404, description = "WEBHOOK_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<WebhookId>,
    ApiQuery(query): ApiQuery<ListDeliveriesQuery>,
) -> Result<Json<DeliveryPage>> {
    live_webhook(&state, id).await?;
    let limit = page_size(query.limit)?;
    if query.before.is_some_and(|b| b < 1) {
        return Err(Error::Validation("before must be a delivery id".into()));
    }
    let deliveries = state
        .store
        .webhook_deliveries(id, limit, query.before)
        .await?;
    let next_before = (deliveries.len() == limit as usize)
        .then(|| deliveries.last().map(|d| d.id))
        .flatten();
    Ok(Json(DeliveryPage {
        deliveries: deliveries.into_iter().map(Delivery::from).collect(),
        next_before,
    }))
}

/// Queues a `DELIVERED` or `DEAD` delivery again: due now, with a fresh retry budget, the same
/// `webhook-id` and body. Later pending events of its wallet to this endpoint wait for it.
#[utoipa::path(
    post, path = "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay", tag = "webhooks",
    params(
        ("webhook_id" = String, Path, description = "A UUID"),
        ("delivery_id" = i64, Path, description = "A delivery id", minimum = 1),
        ("Idempotency-Key" = String, Header, description = "Required on every POST"),
    ),
    responses(
        (status = 202, description = "Queued", body = Delivery),
        (status = 400, description = "VALIDATION_FAILED (malformed id)", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED (with Retry-After)", body = ErrorBody),
        (status = 404, description = "WEBHOOK_NOT_FOUND (endpoint or delivery)", body = ErrorBody),
        (status = 409, description = "DELIVERY_PENDING (not finished yet, or cancelled); IDEMPOTENCY_IN_PROGRESS", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_CONFLICT", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn replay_delivery(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    Path((raw_id, raw_delivery)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Delivery>)> {
    let id = WebhookId::parse(&raw_id)?;
    let delivery = raw_delivery
        .parse::<i64>()
        .ok()
        .filter(|d| *d >= 1)
        .ok_or_else(|| Error::Validation("delivery_id must be a positive integer".into()))?;
    let replayed = match state
        .store
        .replay_webhook_delivery(id, delivery, &audit_context(&caller, &request_id))
        .await?
    {
        Some(Replay::Queued(record)) => record,
        Some(Replay::NotFinished(record)) => {
            return Err(Error::DeliveryPending(format!(
                "delivery {delivery} is {}: only DELIVERED or DEAD deliveries can be replayed",
                record.state
            )));
        }
        None => {
            return Err(Error::WebhookNotFound(format!(
                "delivery {delivery} of webhook {id} not found"
            )));
        }
    };
    tracing::info!(webhook_id = %id, delivery_id = delivery, "webhook delivery replayed");
    Ok((StatusCode::ACCEPTED, Json(replayed.into())))
}

/// The OpenAPI 3.1 `webhooks` entry: the request the gateway sends to a registered endpoint
/// (headers, body schema `WebhookEvent`, the answers it understands).
pub fn openapi_webhooks() -> serde_json::Value {
    serde_json::json!({
        "paymentEvent": {
            "post": {
                "summary": "A payment event, POSTed to every endpoint subscribed to its type",
                "description": "Signed per Standard Webhooks 1.0. Sent at least once: a retry or \
                    a replay carries the same webhook-id and body; drop duplicates by \
                    webhook-id. A wallet's events arrive in wallet_sequence order.",
                "parameters": [
                    { "name": "webhook-id", "in": "header", "required": true,
                      "description": "The event id (evt_<n>)",
                      "schema": { "type": "string", "pattern": "^evt_[0-9]+$" } },
                    { "name": "webhook-timestamp", "in": "header", "required": true,
                      "description": "Unix seconds of this attempt",
                      "schema": { "type": "string", "pattern": "^[0-9]+$" } },
                    { "name": "webhook-signature", "in": "header",
                      "required": true,
                      "description": "v1,<base64 HMAC-SHA256 of {webhook-id}.{webhook-timestamp}.{body} keyed by the base64-decoded secret after whsec_>; during a rotation's overlap two, space-separated",
                      "schema": { "type": "string", "pattern": "^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)?$" } },
                ],
                "requestBody": {
                    "required": true,
                    "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/WebhookEvent" } } },
                },
                "responses": {
                    "2XX": { "description": "Delivered" },
                    "default": { "description": "Any other answer, a redirect or a timeout: retried with exponential backoff and jitter, up to webhooks.retry_for_ms (24 h) or webhooks.max_attempts, then DEAD" },
                },
            }
        }
    })
}
