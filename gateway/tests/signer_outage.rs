//! End to end, on SQLite and on Postgres: signerd going away and coming back. While it is down
//! wallet requests get 503 `SIGNER_UNAVAILABLE` and no half-made wallet is visible; once it is
//! back the same request completes the same wallet, with one key in the HSM.

mod support;

use std::time::Duration;

use signer_proto::v1 as pb;
use sqlx::Row;
use support::*;

/// The reservation row of a user's wallet, straight from the database: (wallet id, key id,
/// public key).
async fn reservation(db: &TestDatabase, user_id: &str) -> Option<(String, String, Option<String>)> {
    let store = db.store().await;
    let row = must(
        sqlx::query("SELECT id, key_id, public_key FROM wallets WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(store.pool())
            .await,
    );
    store.close().await;
    row.map(|row| {
        (
            must(row.try_get("id")),
            must(row.try_get("key_id")),
            must(row.try_get("public_key")),
        )
    })
}

async fn wait_until_ready(stack: &Stack) {
    let ready = eventually(Duration::from_secs(30), || async {
        stack.http.get("/health/ready", None).await.status == 200
    })
    .await;
    assert!(
        ready,
        "gateway never became ready:\n{}",
        stack.gateway.log()
    );
}

on_both_databases! {
    async fn signer_down_gives_503_and_the_same_request_completes_after_restart(kind: DatabaseKind) {
        let mut stack = Stack::start(kind).await;
        let user_id = stack.create_user("customer-outage").await;
        let path = format!("/v1/users/{user_id}/wallet");
        must(stack.signerd.terminate().await);

        let reply = stack.http.post_with_idempotency_key(&path, &stack.service_key, "wallet-attempt", "").await;
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.error_code(), "SIGNER_UNAVAILABLE");
        // Nothing half-made is visible: no wallet for the user, only an internal reservation.
        let visible = stack.http.get(&path, Some(&stack.service_key)).await;
        assert_eq!((visible.status, visible.error_code().as_str()), (404, "WALLET_NOT_FOUND"));
        let (wallet_id, key_id, public_key) = reservation(&stack.db, &user_id).await
            .unwrap_or_else(|| panic!("no reservation row"));
        assert_eq!(public_key, None);
        assert_eq!(stack.http.get(&format!("/v1/wallets/{wallet_id}"), Some(&stack.service_key)).await.status, 404);
        let ready = stack.http.get("/health/ready", None).await;
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert_ne!(ready.json()["signer"], "ok");
        assert_eq!(ready.json()["database"], "ok");
        // Repeated requests fail fast once the breaker opens; still nothing visible.
        let again = stack.http.post_with_idempotency_key(&path, &stack.service_key, "wallet-attempt", "").await;
        assert_eq!(again.error_code(), "SIGNER_UNAVAILABLE");

        restart_signerd_on_same_port(&mut stack.signerd).await;
        wait_until_ready(&stack).await;
        let done = stack.http.post_with_idempotency_key(&path, &stack.service_key, "wallet-attempt", "").await;
        assert_eq!(done.status, 201, "{}", done.body);
        let wallet = done.json();
        assert_eq!(wallet["id"], wallet_id.as_str(), "the reservation was not the wallet completed");
        assert_eq!(wallet["key_id"], key_id.as_str());
        let key = stack.signerd_key(&key_id).await;
        assert_eq!(wallet["public_key"], key.public_key.as_str());
        assert_eq!(stack.signerd_keys().await.len(), 1);
        let replay = stack.http.post_with_idempotency_key(&path, &stack.service_key, "wallet-attempt", "").await;
        assert_eq!(replay.body, done.body);
        assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"));
    }

    async fn a_wallet_request_failed_by_the_outage_frees_its_key_for_a_corrected_request(kind: DatabaseKind) {
        let mut stack = Stack::start(kind).await;
        let wrong = stack.create_user("customer-wrong").await;
        let right = stack.create_user("customer-right").await;
        must(stack.signerd.terminate().await);
        // Sent for the wrong user while signerd is down: 503, a reservation for that user.
        let path_wrong = format!("/v1/users/{wrong}/wallet");
        let failed = stack.http.post_with_idempotency_key(&path_wrong, &stack.service_key, "fixable", "").await;
        assert_eq!(failed.error_code(), "SIGNER_UNAVAILABLE", "{}", failed.body);
        assert!(reservation(&stack.db, &wrong).await.is_some(), "no reservation row");

        restart_signerd_on_same_port(&mut stack.signerd).await;
        wait_until_ready(&stack).await;
        // The failed request kept nothing: the key runs the corrected request (not 422/409).
        let path_right = format!("/v1/users/{right}/wallet");
        let corrected = stack.http.post_with_idempotency_key(&path_right, &stack.service_key, "fixable", "").await;
        assert_eq!(corrected.status, 201, "{}", corrected.body);
        assert_eq!(corrected.header("idempotent-replayed"), None);
        // The wrong user's reservation is completed by its next request, with any key, and the
        // key now belongs to the corrected request.
        let other = stack.http.post(&path_wrong, &stack.service_key, "").await;
        assert_eq!(other.status, 201, "{}", other.body);
        let reused = stack.http.post_with_idempotency_key(&path_wrong, &stack.service_key, "fixable", "").await;
        assert_eq!((reused.status, reused.error_code().as_str()), (422, "IDEMPOTENCY_CONFLICT"));
        let replay = stack.http.post_with_idempotency_key(&path_right, &stack.service_key, "fixable", "").await;
        assert_eq!((replay.status, replay.body.as_str()), (201, corrected.body.as_str()));
        assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(stack.signerd_keys().await.len(), 2);
    }

    async fn a_key_created_before_a_crash_is_adopted_not_duplicated(kind: DatabaseKind) {
        let mut stack = Stack::start(kind).await;
        let user_id = stack.create_user("customer-crash").await;
        let path = format!("/v1/users/{user_id}/wallet");
        must(stack.signerd.terminate().await);
        let reply = stack.http.post(&path, &stack.service_key, "").await;
        assert_eq!(reply.error_code(), "SIGNER_UNAVAILABLE");
        let (_, key_id, _) = reservation(&stack.db, &user_id).await
            .unwrap_or_else(|| panic!("no reservation row"));

        // As if a gateway had reached CreateKey and then crashed before storing the answer.
        restart_signerd_on_same_port(&mut stack.signerd).await;
        let mut client = must(stack.signerd.client(GATEWAY_IDENTITY).await);
        let created = must(client.create_key(pb::CreateKeyRequest { key_id: key_id.clone(), backend: String::new() }).await)
            .into_inner();
        assert!(created.created);
        let orphan_candidate = created.key.map(|k| k.public_key).unwrap_or_default();

        wait_until_ready(&stack).await;
        let done = stack.http.post(&path, &stack.service_key, "").await;
        assert_eq!(done.status, 201, "{}", done.body);
        assert_eq!(done.json()["public_key"], orphan_candidate.as_str());
        let keys = stack.signerd_keys().await;
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(keys[0].key_id, key_id);
    }
}
