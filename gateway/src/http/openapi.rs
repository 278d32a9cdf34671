//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the handlers' annotations
//! and the response types, so it cannot drift from the code. What the layers in front of every
//! handler answer (authentication, rate limit, role, idempotency, body limit, id parsing) is
//! added to every operation by [`document`] from the router's structure, so no route can forget
//! one; `tests/api_fuzz.rs` checks the running server against the result.

use std::sync::Arc;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, deposits, health, history, payments, users, wallets, webhooks};
use crate::api_key::Role;
use crate::error::ErrorBody;
use crate::model::{AuditEvent, User, UserStatus, Wallet, WalletStatus};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "stellar-signer gateway",
        description = "Users, wallets and API keys; keys live in signerd, never here. \
            Every error is JSON {code, message} with a stable code. Every POST needs an \
            Idempotency-Key header. Send x-request-id to correlate logs and signerd's audit log."
    ),
    paths(
        users::create_user, users::list_users, users::get_user,
        users::block_user, users::unblock_user,
        wallets::create_wallet, wallets::get_user_wallet, wallets::get_wallet,
        wallets::freeze_wallet, wallets::unfreeze_wallet,
        audit::list_audit_events,
        payments::create_payment, payments::get_payment, payments::list_wallet_payments,
        payments::get_balance, payments::fund_wallet, payments::get_limits, payments::set_limits,
        payments::resolve_payment, deposits::list_wallet_deposits, history::list_wallet_history,
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::delete_webhook,
        webhooks::rotate_webhook_secret, webhooks::list_deliveries, webhooks::replay_delivery,
        health::live, health::ready, health::metrics,
    ),
    components(schemas(
        User, UserStatus, Wallet, WalletStatus, AuditEvent, ErrorBody, Role,
        users::CreateUserRequest, users::AdminActionRequest, users::UserPage,
        audit::AuditPage, health::Readiness,
        payments::CreatePaymentRequest, payments::PaymentAccepted, payments::Payment,
        payments::PaymentPage, payments::Balance, payments::Funded, payments::SetLimitsRequest,
        payments::ResolvePaymentRequest, crate::store::Resolution,
        crate::payments::PaymentStatus, crate::store::DailyLimits, crate::store::PaymentEvent,
        webhooks::CreateWebhookRequest, webhooks::Webhook, webhooks::WebhookWithSecret,
        webhooks::RotatedSecret, webhooks::WebhookList, webhooks::Delivery, webhooks::DeliveryPage,
        webhooks::WebhookEvent, webhooks::PaymentEventData, crate::webhooks::EventType,
        webhooks::EventData, deposits::Deposit, deposits::DepositPage, deposits::DepositEventData,
        history::HistoryPage, history::HistoryItem, history::HistoryDirection,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "users"), (name = "wallets"),
        (name = "payments", description = "Native payments through the Stellar network (Horizon or RPC); never paid twice"),
        (name = "webhooks", description = "Signed event delivery (Standard Webhooks); service keys; every change audited"),
        (name = "admin", description = "Needs an admin API key"),
        (name = "health", description = "No API key needed"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key from `gateway api-key create`"))
                    .build(),
            ),
        );
    }
}

/// The document as JSON text.
pub fn document() -> String {
    // Serialising the generated document cannot fail (it is plain data); an empty object would
    // still be valid JSON.
    // utoipa has no OpenAPI 3.1 `webhooks` object; it is added to the generated JSON.
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    complete_contract(&mut doc);
    if let Some(root) = doc.as_object_mut() {
        root.insert("webhooks".into(), webhooks::openapi_webhooks());
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_owned())
}

/// The pattern of every UUID id the API takes (the hyphenated lowercase form only, as
/// `model::*Id::parse` accepts).
pub const UUID_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// What the layers in front of every handler can answer, added to each operation from the
/// router's structure rather than copied into every annotation (where one was forgotten per
/// route before):
///
/// - every `/v1` route: 401 (authentication), 429 with `Retry-After` (the per-key rate limit),
///   503 (`DATABASE_UNAVAILABLE`, `TIMEOUT`);
/// - admin routes (tag `admin`): 403;
/// - a path id, query parameters or a POST (its required `Idempotency-Key`): 400;
/// - a path id: 404 (every id is looked up) and the id's UUID format;
/// - every POST: 413, 409 `IDEMPOTENCY_IN_PROGRESS` with `Retry-After`, 422
///   `IDEMPOTENCY_CONFLICT`, the `Idempotency-Key` header with its limits, and the
///   `Idempotent-Replayed` header on its success answers.
///
/// A status a handler already documents keeps its description, extended by the common code.
fn complete_contract(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            complete_operation(path, method, op);
            declare_request_id(op);
        }
    }
}

fn complete_operation(path: &str, method: &str, op: &mut serde_json::Value) {
    use serde_json::json;
    let v1 = path.starts_with("/v1/");
    let post = method == "post";
    let admin = op["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "admin"));
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let has_path_id = path.contains('{');
    let has_query = params.iter().any(|p| p["in"] == "query");
    if !v1 {
        return;
    }
    let mut common: Vec<(&str, &str, bool)> = vec![
        (
            "401",
            "UNAUTHORIZED: no, malformed or unknown API key",
            false,
        ),
        (
            "429",
            "RATE_LIMITED: the API key's request rate is exceeded",
            true,
        ),
        ("503", "DATABASE_UNAVAILABLE or TIMEOUT: retry later", false),
    ];
    if admin {
        common.push(("403", "FORBIDDEN: not an admin key", false));
    }
    if has_path_id || has_query || post {
        common.push(("400", "VALIDATION_FAILED", false));
    }
    if has_path_id {
        common.push(("404", "NOT_FOUND: no such id", false));
    }
    if post {
        common.push((
            "413",
            "PAYLOAD_TOO_LARGE: body over server.max_body_bytes",
            false,
        ));
        common.push((
            "409",
            "IDEMPOTENCY_IN_PROGRESS: a request with this Idempotency-Key is still running",
            true,
        ));
        common.push((
            "422",
            "IDEMPOTENCY_CONFLICT: this Idempotency-Key was used with a different request",
            false,
        ));
    }
    let error_content = json!({ "application/json": {
        "schema": { "$ref": "#/components/schemas/ErrorBody" } } });
    let retry_after = json!({ "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": { "type": "integer", "minimum": 1 } } });
    if !op["responses"].is_object() {
        op["responses"] = json!({});
    }
    let responses = &mut op["responses"];
    for (status, description, with_retry_after) in common {
        let code = description.split(':').next().unwrap_or(description);
        match responses.get_mut(status) {
            Some(existing) => {
                let old = existing["description"].as_str().unwrap_or("").to_owned();
                if !old.contains(code) {
                    existing["description"] = if old.is_empty() {
                        json!(description)
                    } else {
                        json!(format!("{old}; {description}"))
                    };
                }
                if existing.get("content").is_none() {
                    existing["content"] = error_content.clone();
                }
                if with_retry_after {
                    existing["headers"] = retry_after.clone();
                }
            }
            None => {
                let mut response = json!({ "description": description, "content": error_content });
                if with_retry_after {
                    response["headers"] = retry_after.clone();
                }
                responses[status] = response;
            }
        }
    }
    if post && let Some(responses) = responses.as_object_mut() {
        for (status, response) in responses.iter_mut() {
            if status.starts_with('2') {
                response["headers"]["Idempotent-Replayed"] = json!({
                    "description": "`true` when this is the stored answer to an earlier \
                        request with the same Idempotency-Key (nothing was done again)",
                    "schema": { "type": "string", "enum": ["true"] } });
            }
        }
    }
    let mut params: Vec<serde_json::Value> = params
        .into_iter()
        .filter(|p| !(p["in"] == "header" && p["name"] == "Idempotency-Key"))
        .collect();
    for param in &mut params {
        let name = param["name"].as_str().unwrap_or_default();
        if param["in"] == "path" && name.ends_with("_id") && param["schema"]["type"] == "string" {
            param["schema"] = json!({ "type": "string", "format": "uuid",
                "minLength": 36, "maxLength": 36, "pattern": UUID_PATTERN });
        }
    }
    if post {
        params.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": true,
            "description": "Required on every POST; scoped to the API key and bound to the \
                request (method, path, body). 1 to 255 visible ASCII characters.",
            "schema": { "type": "string", "minLength": 1,
                "maxLength": crate::model::IdempotencyKey::MAX_LEN, "pattern": "^[!-~]+$" } }));
    }
    if !params.is_empty() {
        op["parameters"] = serde_json::Value::Array(params);
    }
}

/// Every route (the outermost layer) takes an optional `x-request-id` and answers with one.
fn declare_request_id(op: &mut serde_json::Value) {
    use serde_json::json;
    let param = json!({
        "name": "x-request-id", "in": "header", "required": false,
        "description": "Correlates logs and signerd's audit log; used when 1 to 128 characters \
            of [A-Za-z0-9._:-], else the gateway makes one",
        "schema": { "type": "string", "maxLength": crate::model::RequestId::MAX_LEN } });
    match op["parameters"].as_array_mut() {
        Some(params) => params.push(param),
        None => op["parameters"] = json!([param]),
    }
    if let Some(responses) = op["responses"].as_object_mut() {
        for response in responses.values_mut() {
            response["headers"]["x-request-id"] = json!({
                "description": "The request id (the caller's when sane)",
                "schema": { "type": "string" } });
        }
    }
}

/// Serves the document built at start.
pub async fn serve(document: Arc<String>) -> Response {
    let mut response = document.as_str().to_owned().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_api_route() {
        let doc: serde_json::Value =
            serde_json::from_str(&document()).unwrap_or_else(|e| panic!("{e}"));
        let paths = doc["paths"].as_object().map(|p| p.len()).unwrap_or(0);
        for path in [
            "/v1/users",
            "/v1/users/{user_id}",
            "/v1/users/{user_id}/wallet",
            "/v1/users/{user_id}/block",
            "/v1/wallets/{wallet_id}/freeze",
            "/v1/audit-events",
            "/health/ready",
            "/v1/payments",
            "/v1/payments/{payment_id}",
            "/v1/wallets/{wallet_id}/payments",
            "/v1/wallets/{wallet_id}/deposits",
            "/v1/wallets/{wallet_id}/history",
            "/v1/wallets/{wallet_id}/balance",
            "/v1/wallets/{wallet_id}/fund",
            "/v1/wallets/{wallet_id}/limits",
            "/v1/payments/{payment_id}/resolve",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert_eq!(
            paths, 26,
            "a route was added without documenting it (or vice versa)"
        );
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        let statuses = &doc["components"]["schemas"]["PaymentStatus"]["enum"];
        assert!(
            statuses
                .as_array()
                .is_some_and(|s| s.iter().any(|v| v == "NEEDS_ATTENTION")),
            "{statuses}"
        );
        for schema in ["WebhookEvent", "PaymentEventData", "EventType", "Delivery"] {
            assert!(
                doc["components"]["schemas"].get(schema).is_some(),
                "{schema} missing"
            );
        }
        let types = &doc["components"]["schemas"]["EventType"]["enum"];
        assert!(
            types
                .as_array()
                .is_some_and(|t| t.iter().any(|v| v == "payment.needs_attention")),
            "{types}"
        );
        let sent = &doc["webhooks"]["paymentEvent"]["post"];
        assert_eq!(
            sent["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/WebhookEvent"
        );
        let create = &doc["paths"]["/v1/webhooks"]["post"]["responses"];
        for status in ["201", "400", "401", "413", "422"] {
            assert!(
                create.get(status).is_some(),
                "create webhook answers {status}"
            );
        }
        let resolve = &doc["paths"]["/v1/payments/{payment_id}/resolve"]["post"]["responses"];
        for status in ["200", "400", "401", "403", "404", "409"] {
            assert!(
                resolve.get(status).is_some(),
                "resolve answers {status}: {resolve}"
            );
        }
    }

    /// The routes as `http::router` mounts them: (method, path, admin, takes a JSON body,
    /// takes query parameters). Kept by hand on purpose: the document must agree with this
    /// independent list, and the schema-driven fuzzer (`tests/api_fuzz.rs`) checks both against
    /// the running server.
    const ROUTES: &[(&str, &str, bool, bool, bool)] = &[
        ("post", "/v1/users", false, true, false),
        ("get", "/v1/users", false, false, true),
        ("get", "/v1/users/{user_id}", false, false, false),
        ("post", "/v1/users/{user_id}/wallet", false, false, false),
        ("get", "/v1/users/{user_id}/wallet", false, false, false),
        ("get", "/v1/wallets/{wallet_id}", false, false, false),
        ("get", "/v1/payments/{payment_id}", false, false, false),
        (
            "get",
            "/v1/wallets/{wallet_id}/payments",
            false,
            false,
            true,
        ),
        (
            "get",
            "/v1/wallets/{wallet_id}/deposits",
            false,
            false,
            true,
        ),
        ("get", "/v1/wallets/{wallet_id}/history", false, false, true),
        (
            "get",
            "/v1/wallets/{wallet_id}/balance",
            false,
            false,
            false,
        ),
        ("post", "/v1/wallets/{wallet_id}/fund", false, false, false),
        ("post", "/v1/webhooks", false, true, false),
        ("get", "/v1/webhooks", false, false, false),
        ("delete", "/v1/webhooks/{webhook_id}", false, false, false),
        (
            "post",
            "/v1/webhooks/{webhook_id}/rotate-secret",
            false,
            false,
            false,
        ),
        (
            "get",
            "/v1/webhooks/{webhook_id}/deliveries",
            false,
            false,
            true,
        ),
        (
            "post",
            "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
            false,
            false,
            false,
        ),
        ("post", "/v1/payments", false, true, false),
        ("post", "/v1/users/{user_id}/block", true, true, false),
        ("post", "/v1/users/{user_id}/unblock", true, true, false),
        ("post", "/v1/wallets/{wallet_id}/freeze", true, true, false),
        (
            "post",
            "/v1/wallets/{wallet_id}/unfreeze",
            true,
            true,
            false,
        ),
        ("get", "/v1/audit-events", true, false, true),
        (
            "post",
            "/v1/payments/{payment_id}/resolve",
            true,
            true,
            false,
        ),
        ("get", "/v1/wallets/{wallet_id}/limits", true, false, false),
        ("post", "/v1/wallets/{wallet_id}/limits", true, true, false),
    ];

    #[test]
    fn every_route_lists_every_status_its_layers_can_answer() {
        let doc: serde_json::Value =
            serde_json::from_str(&document()).unwrap_or_else(|e| panic!("{e}"));
        let mut missing = Vec::new();
        let mut documented = 0;
        for (_, item) in doc["paths"].as_object().into_iter().flatten() {
            documented += item
                .as_object()
                .map(|m| m.keys().filter(|k| k.as_str() != "parameters").count())
                .unwrap_or(0);
        }
        for &(method, path, admin, body, query) in ROUTES {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is not documented");
            let mut expected = vec!["401", "429"];
            let has_id = path.contains('{');
            if admin {
                expected.push("403");
            }
            if has_id || body || query || method == "post" {
                expected.push("400");
            }
            if has_id {
                expected.push("404");
            }
            if method == "post" {
                expected.extend(["413", "422", "409"]);
            }
            if body {
                assert!(
                    op["requestBody"].is_object(),
                    "{method} {path} has no request body"
                );
            }
            for status in expected {
                let response = &op["responses"][status];
                if !response.is_object() {
                    missing.push(format!("{method} {path} {status}"));
                } else if status != "404" && !status.starts_with('2') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
            let retried: &[&str] = if method == "post" {
                &["429", "409"]
            } else {
                &["429"]
            };
            for status in retried {
                assert!(
                    op["responses"][status]["headers"]["Retry-After"].is_object(),
                    "{method} {path} {status} declares Retry-After"
                );
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for p in params.iter().filter(|p| p["in"] == "path") {
                if p["name"] != "delivery_id" {
                    assert_eq!(p["schema"]["format"], "uuid", "{method} {path} {p}");
                    assert_eq!(p["schema"]["pattern"], UUID_PATTERN, "{method} {path}");
                }
            }
            assert!(
                params.iter().any(|p| p["name"] == "x-request-id"),
                "{method} {path} takes x-request-id"
            );
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                assert!(
                    response["headers"]["x-request-id"].is_object(),
                    "{method} {path} {status} declares x-request-id"
                );
            }
            let key = params
                .iter()
                .find(|p| p["in"] == "header" && p["name"] == "Idempotency-Key");
            if method == "post" {
                let key = key.unwrap_or_else(|| panic!("{method} {path}: no Idempotency-Key"));
                assert_eq!(key["required"], true, "{path}");
                assert_eq!(key["schema"]["minLength"], 1, "{path}");
                assert_eq!(key["schema"]["maxLength"], 255, "{path}");
                let successes: Vec<_> = op["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(s, _)| s.starts_with('2'))
                    .collect();
                assert!(!successes.is_empty(), "{path}");
                for (status, response) in successes {
                    assert!(
                        response["headers"]["Idempotent-Replayed"].is_object(),
                        "{method} {path} {status} declares Idempotent-Replayed"
                    );
                }
            } else {
                assert!(key.is_none(), "{method} {path} takes no Idempotency-Key");
            }
        }
        assert!(missing.is_empty(), "undocumented answers: {missing:#?}");
        assert_eq!(
            documented,
            ROUTES.len() + 3,
            "the routes above plus the 3 health routes"
        );
    }

    #[test]
    fn limits_are_in_the_schemas_not_only_in_prose() {
        let doc: serde_json::Value =
            serde_json::from_str(&document()).unwrap_or_else(|e| panic!("{e}"));
        let schemas = &doc["components"]["schemas"];
        let field = |schema: &str, name: &str| schemas[schema]["properties"][name].clone();
        let ext = field("CreateUserRequest", "external_ref");
        assert_eq!(
            (ext["minLength"].clone(), ext["maxLength"].clone()),
            (1.into(), 128.into())
        );
        for schema in ["AdminActionRequest", "ResolvePaymentRequest"] {
            let reason = field(schema, "reason");
            assert_eq!(reason["minLength"], 1, "{schema}");
            assert_eq!(reason["maxLength"], 500, "{schema}");
        }
        let pay = |name: &str| field("CreatePaymentRequest", name);
        assert_eq!(pay("source_wallet_id")["pattern"], UUID_PATTERN);
        assert_eq!(pay("source_wallet_id")["format"], "uuid");
        assert!(
            pay("amount")["pattern"]
                .as_str()
                .is_some_and(|p| p.contains("{1,7}"))
        );
        assert!(pay("destination")["pattern"].is_string());
        assert_eq!(pay("memo")["maxLength"], 28);
        assert_eq!(field("SetLimitsRequest", "daily_count")["minimum"], 0);
        let types = field("CreateWebhookRequest", "event_types");
        assert_eq!(types["uniqueItems"], true, "{types}");
        assert_eq!(types["minItems"], 1, "{types}");
        assert!(field("SetLimitsRequest", "daily_amount")["pattern"].is_string());
        for (path, method) in [
            ("/v1/users", "get"),
            ("/v1/audit-events", "get"),
            ("/v1/wallets/{wallet_id}/payments", "get"),
            ("/v1/webhooks/{webhook_id}/deliveries", "get"),
        ] {
            let params = doc["paths"][path][method]["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let limit = params
                .iter()
                .find(|p| p["name"] == "limit")
                .unwrap_or_else(|| panic!("{path} has no limit"));
            assert_eq!(limit["schema"]["minimum"], 1, "{path}");
            assert_eq!(limit["schema"]["maximum"], 500, "{path}");
        }
        for (path, name) in [
            ("/v1/users", "after"),
            ("/v1/wallets/{wallet_id}/payments", "before"),
        ] {
            let params = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let p = params.iter().find(|p| p["name"] == name);
            assert_eq!(
                p.map(|p| p["schema"]["pattern"].clone()),
                Some(UUID_PATTERN.into()),
                "{path} {name}"
            );
        }
    }
}
