//! End to end, on SQLite and on Postgres: the real gateway binary creating users and wallets
//! through a real signerd on SoftHSM over mutual TLS.

mod support;

use std::collections::HashSet;

use futures::future::join_all;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::*;

fn field(value: &Value, name: &str) -> String {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {name} in {value}"))
        .to_owned()
}

on_both_databases! {
    async fn user_and_wallet_match_signerd_and_the_database_holds_no_secret(kind: DatabaseKind) {
        let stack = Stack::start(kind).await;
        let request_id = format!("test-{}", uuid::Uuid::new_v4().simple());
        let user_id = stack.create_user("customer-1").await;

        let auth = format!("Bearer {}", stack.service_key);
        let reply = stack
            .http
            .send(
                "POST",
                &format!("/v1/users/{user_id}/wallet"),
                &[
                    ("authorization", &auth),
                    ("idempotency-key", "wallet-of-customer-1"),
                    ("x-request-id", &request_id),
                ],
                None,
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(reply.header("x-request-id").as_deref(), Some(request_id.as_str()));
        let wallet = reply.json();
        let wallet_id = field(&wallet, "id");
        assert_eq!(field(&wallet, "user_id"), user_id);
        assert_eq!(field(&wallet, "status"), "active");
        assert_eq!(field(&wallet, "key_id"), format!("wallet-{wallet_id}"));

        // signerd's own view of the key is the wallet's public key.
        let key = stack.signerd_key(&field(&wallet, "key_id")).await;
        assert_eq!(key.public_key, field(&wallet, "public_key"));
        assert_eq!(key.backend, "pkcs11");

        // The same wallet by id, by user, and from a repeated create (200, not 201).
        let by_id = stack.http.get(&format!("/v1/wallets/{wallet_id}"), Some(&stack.service_key)).await;
        assert_eq!(by_id.status, 200, "{}", by_id.body);
        assert_eq!(by_id.json(), wallet);
        let by_user = stack.http.get(&format!("/v1/users/{user_id}/wallet"), Some(&stack.service_key)).await;
        assert_eq!(by_user.json(), wallet);
        let again = stack.http.post(&format!("/v1/users/{user_id}/wallet"), &stack.service_key, "").await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(again.json(), wallet);

        // The request id reached signerd (its log) and the audit events (who, what, when).
        assert!(
            stack.signerd.log().contains(&request_id),
            "signerd never logged request id {request_id}"
        );
        let events = stack.audit_events("wallet", &wallet_id).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(field(&events[0], "action"), "wallet.created");
        assert_eq!(field(&events[0], "request_id"), request_id);
        assert!(field(&events[0], "actor").starts_with("api-key:"));
        assert_eq!(field(&events[0], "occurred_at").len(), 24);
        let user_events = stack.audit_events("user", &user_id).await;
        assert_eq!(field(&user_events[0], "action"), "user.created");

        // No secret in the database: the API keys appear only as their SHA-256, and nothing
        // stored is a Stellar secret seed.
        let stored = stack.db.all_text().await;
        for key in [&stack.admin_key, &stack.service_key] {
            assert!(
                !stored.iter().any(|value| value.contains(key.as_str())),
                "an API key is stored in plaintext"
            );
            let hash = hex::encode(Sha256::digest(key.as_bytes()));
            assert!(stored.contains(&hash), "the API key's hash is not stored");
        }
        assert!(
            !stored.iter().any(|value| value.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|word| stellar_strkey::ed25519::PrivateKey::from_string(word).is_ok())),
            "a secret seed is stored"
        );
        assert!(stored.contains(&field(&wallet, "public_key")));
    }

    async fn fifty_concurrent_wallet_requests_make_one_wallet_and_one_key(kind: DatabaseKind) {
        let stack = Stack::start(kind).await;
        let user_id = stack.create_user("customer-concurrent").await;
        let path = format!("/v1/users/{user_id}/wallet");
        let replies = join_all((0..50).map(|_| stack.http.post(&path, &stack.service_key, ""))).await;

        let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
        assert!(statuses.iter().all(|s| *s == 200 || *s == 201), "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
        let wallets: HashSet<(String, String)> = replies
            .iter()
            .map(|r| (field(&r.json(), "id"), field(&r.json(), "public_key")))
            .collect();
        assert_eq!(wallets.len(), 1, "{wallets:?}");
        let (wallet_id, public_key) = wallets.into_iter().next().unwrap_or_default();

        let keys = stack.signerd_keys().await;
        assert_eq!(keys.len(), 1, "signerd holds {} keys", keys.len());
        assert_eq!(keys[0].key_id, format!("wallet-{wallet_id}"));
        assert_eq!(keys[0].public_key, public_key);
        assert_eq!(stack.db.row_counts().await["wallets"], 1);
        assert_eq!(stack.audit_events("wallet", &wallet_id).await.len(), 1);
        // Requests for one user queue in the gateway: one CreateKey call, not 50.
        let metrics = stack.http.get("/metrics", None).await;
        assert!(
            metrics.body.contains(r#"gateway_signer_calls_total{rpc="CreateKey",outcome="ok"} 1"#),
            "{}",
            metrics.body
        );
    }

    async fn blocked_users_get_no_wallet_and_frozen_wallets_report_frozen(kind: DatabaseKind) {
        let stack = Stack::start(kind).await;
        let blocked = stack.create_user("customer-blocked").await;
        let reason = json!({ "reason": "fraud review #12" }).to_string();
        let reply = stack.http.post(&format!("/v1/users/{blocked}/block"), &stack.admin_key, &reason).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(field(&reply.json(), "status"), "blocked");

        let refused = stack.http.post(&format!("/v1/users/{blocked}/wallet"), &stack.service_key, "").await;
        assert_eq!(refused.status, 409, "{}", refused.body);
        assert_eq!(refused.error_code(), "USER_BLOCKED");
        assert!(stack.signerd_keys().await.is_empty(), "a blocked user's request made a key");
        let missing = stack.http.get(&format!("/v1/users/{blocked}/wallet"), Some(&stack.service_key)).await;
        assert_eq!(missing.error_code(), "WALLET_NOT_FOUND");

        let events = stack.audit_events("user", &blocked).await;
        let block = events.iter().find(|e| e["action"] == "user.blocked")
            .unwrap_or_else(|| panic!("no user.blocked event: {events:?}"));
        assert_eq!(block["details"]["reason"], "fraud review #12");

        // Unblocked, the same user gets a wallet.
        let reply = stack.http.post(&format!("/v1/users/{blocked}/unblock"), &stack.admin_key, &reason).await;
        assert_eq!(field(&reply.json(), "status"), "active");
        let created = stack.http.post(&format!("/v1/users/{blocked}/wallet"), &stack.service_key, "").await;
        assert_eq!(created.status, 201, "{}", created.body);
        let wallet_id = field(&created.json(), "id");

        // Frozen: reported frozen everywhere, and no wallet is handed out.
        let reply = stack.http.post(&format!("/v1/wallets/{wallet_id}/freeze"), &stack.admin_key, &reason).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let shown = stack.http.get(&format!("/v1/wallets/{wallet_id}"), Some(&stack.service_key)).await;
        assert_eq!(field(&shown.json(), "status"), "frozen");
        assert!(shown.json()["frozen_at"].is_string());
        let by_user = stack.http.get(&format!("/v1/users/{blocked}/wallet"), Some(&stack.service_key)).await;
        assert_eq!(field(&by_user.json(), "status"), "frozen");
        let refused = stack.http.post(&format!("/v1/users/{blocked}/wallet"), &stack.service_key, "").await;
        assert_eq!(refused.status, 409, "{}", refused.body);
        assert_eq!(refused.error_code(), "WALLET_FROZEN");
        assert!(refused.message().contains(&wallet_id));

        let reply = stack.http.post(&format!("/v1/wallets/{wallet_id}/unfreeze"), &stack.admin_key, &reason).await;
        assert_eq!(field(&reply.json(), "status"), "active");
        let actions: Vec<String> = stack.audit_events("wallet", &wallet_id).await
            .iter().map(|e| field(e, "action")).collect();
        assert_eq!(actions, ["wallet.created", "wallet.frozen", "wallet.unfrozen"]);
    }

    async fn idempotency_keys_replay_the_stored_response_and_refuse_a_different_body(kind: DatabaseKind) {
        let stack = Stack::start(kind).await;
        let body = json!({ "external_ref": "customer-idem" }).to_string();
        let first = stack.http.post_with_idempotency_key("/v1/users", &stack.service_key, "create-1", &body).await;
        assert_eq!(first.status, 201, "{}", first.body);
        assert_eq!(first.header("idempotent-replayed"), None);

        let replay = stack.http.post_with_idempotency_key("/v1/users", &stack.service_key, "create-1", &body).await;
        assert_eq!(replay.status, 201);
        assert_eq!(replay.body, first.body);
        assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(stack.db.row_counts().await["users"], 1);

        let other = json!({ "external_ref": "customer-other" }).to_string();
        let conflict = stack.http.post_with_idempotency_key("/v1/users", &stack.service_key, "create-1", &other).await;
        assert_eq!(conflict.status, 422, "{}", conflict.body);
        assert_eq!(conflict.error_code(), "IDEMPOTENCY_CONFLICT");
        assert_eq!(stack.db.row_counts().await["users"], 1);

        // Without the header a POST is refused before anything happens.
        let auth = format!("Bearer {}", stack.service_key);
        let missing = stack.http.send(
            "POST", "/v1/users",
            &[("authorization", &auth), ("content-type", "application/json")],
            Some(other.clone().into_bytes()),
        ).await;
        assert_eq!(missing.status, 400);
        assert_eq!(missing.error_code(), "VALIDATION_FAILED");
        assert!(missing.message().contains("Idempotency-Key"), "{}", missing.body);

        // A duplicate external reference is a clear conflict naming the existing user.
        let duplicate = stack.http.post("/v1/users", &stack.service_key, &body).await;
        assert_eq!(duplicate.status, 409);
        assert_eq!(duplicate.error_code(), "USER_EXISTS");
        assert!(duplicate.message().contains(&field(&first.json(), "id")));
        assert_eq!(stack.db.row_counts().await["users"], 1);
    }
}
