//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the handlers' annotations
//! and the response types, so it cannot drift from the code.

use std::sync::Arc;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, health, payments, users, wallets, webhooks};
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
        payments::resolve_payment,
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
    if let Some(root) = doc.as_object_mut() {
        root.insert("webhooks".into(), webhooks::openapi_webhooks());
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_owned())
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
            "/v1/wallets/{wallet_id}/balance",
            "/v1/wallets/{wallet_id}/fund",
            "/v1/wallets/{wallet_id}/limits",
            "/v1/payments/{payment_id}/resolve",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert_eq!(
            paths, 24,
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
}
