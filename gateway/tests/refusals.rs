//! End to end, on SQLite and on Postgres: callers without the right key and requests with bad
//! input get a 4xx with a stable code and a clear message, and nothing is written.

mod support;

use serde_json::json;
use support::*;

on_both_databases! {
    async fn callers_without_the_right_key_are_refused(kind: DatabaseKind) {
        let stack = Stack::start(kind).await;
        let user_id = stack.create_user("customer-auth").await;
        let before = stack.db.row_counts().await;

        let no_key = stack.http.get("/v1/users", None).await;
        assert_eq!((no_key.status, no_key.error_code().as_str()), (401, "UNAUTHORIZED"));
        assert!(no_key.message().contains("Bearer"), "{}", no_key.body);

        let unknown = format!("gwk_{}", "ab".repeat(32));
        for header in [
            format!("Bearer {unknown}"),
            "Bearer not-a-key".to_owned(),
            format!("Basic {}", stack.service_key),
            format!("Bearer {}", stack.service_key.to_uppercase()),
        ] {
            let reply = stack.http.send("GET", "/v1/users", &[("authorization", &header)], None).await;
            assert_eq!((reply.status, reply.error_code().as_str()), (401, "UNAUTHORIZED"), "{header}");
        }
        let wrong_key_post = stack
            .http
            .post(&format!("/v1/users/{user_id}/wallet"), &unknown, "")
            .await;
        assert_eq!(wrong_key_post.status, 401);

        // A service key on admin routes: 403, and the user is not blocked.
        let reason = json!({ "reason": "try" }).to_string();
        let forbidden = stack.http.post(&format!("/v1/users/{user_id}/block"), &stack.service_key, &reason).await;
        assert_eq!((forbidden.status, forbidden.error_code().as_str()), (403, "FORBIDDEN"));
        let audit = stack.http.get("/v1/audit-events", Some(&stack.service_key)).await;
        assert_eq!((audit.status, audit.error_code().as_str()), (403, "FORBIDDEN"));
        let user = stack.http.get(&format!("/v1/users/{user_id}"), Some(&stack.service_key)).await;
        assert_eq!(user.json()["status"], "active");
        assert_eq!(stack.db.row_counts().await, before, "a refused request wrote something");

        // The scheme is case-insensitive; the key is not (checked above).
        let lowercase_scheme = format!("bearer {}", stack.service_key);
        let reply = stack.http.send("GET", "/v1/users", &[("authorization", &lowercase_scheme)], None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);

        // An admin key works on both kinds of routes.
        assert_eq!(stack.http.get("/v1/users", Some(&stack.admin_key)).await.status, 200);
        assert_eq!(stack.http.get("/v1/audit-events", Some(&stack.admin_key)).await.status, 200);

        // A revoked key stops working at once.
        let listed = stack.gateway.cli(&["api-key", "list"]);
        let service_id = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|key| key["role"] == "service")
            .and_then(|key| key["id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no service key listed"));
        let revoked = stack.gateway.cli(&["api-key", "revoke", &service_id]);
        assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
        let after = stack.http.get("/v1/users", Some(&stack.service_key)).await;
        assert_eq!((after.status, after.error_code().as_str()), (401, "UNAUTHORIZED"));
    }

    async fn bad_input_gets_a_clear_4xx_and_writes_nothing(kind: DatabaseKind) {
        let stack = Stack::start(kind).await;
        let user_id = stack.create_user("customer-valid").await;
        let before = stack.db.row_counts().await;
        let key = &stack.service_key;
        let auth = format!("Bearer {key}");

        // (method, path, body, content type, status, code, words the message must contain)
        let oversized = json!({ "external_ref": "x".repeat(5000) }).to_string();
        let cases: Vec<(&str, String, String, &str, u16, &str, &str)> = vec![
            ("POST", "/v1/users".into(), "{\"external_ref\":".into(), "application/json", 400, "VALIDATION_FAILED", "not valid JSON"),
            ("POST", "/v1/users".into(), "[1, 2]".into(), "application/json", 400, "VALIDATION_FAILED", "invalid request body"),
            ("POST", "/v1/users".into(), json!({ "external_ref": "a", "nickname": "b" }).to_string(), "application/json", 400, "VALIDATION_FAILED", "unknown field `nickname`"),
            ("POST", "/v1/users".into(), json!({ "external_ref": 42 }).to_string(), "application/json", 400, "VALIDATION_FAILED", "invalid type"),
            ("POST", "/v1/users".into(), json!({}).to_string(), "application/json", 400, "VALIDATION_FAILED", "missing field `external_ref`"),
            ("POST", "/v1/users".into(), json!({ "external_ref": "" }).to_string(), "application/json", 400, "VALIDATION_FAILED", "external_ref must be 1 to 128"),
            ("POST", "/v1/users".into(), json!({ "external_ref": "tab\there" }).to_string(), "application/json", 400, "VALIDATION_FAILED", "control characters"),
            ("POST", "/v1/users".into(), json!({ "external_ref": "a" }).to_string(), "text/plain", 400, "VALIDATION_FAILED", "Content-Type: application/json"),
            ("POST", "/v1/users".into(), oversized, "application/json", 413, "PAYLOAD_TOO_LARGE", "4096 bytes"),
            ("POST", "/v1/users/not-a-uuid/wallet".into(), String::new(), "application/json", 400, "VALIDATION_FAILED", "user id must be"),
            ("POST", format!("/v1/users/{}/wallet", user_id.to_uppercase()), String::new(), "application/json", 400, "VALIDATION_FAILED", "user id must be"),
            ("POST", format!("/v1/users/{user_id}/block"), json!({ "reason": "x" }).to_string(), "application/json", 403, "FORBIDDEN", "admin"),
            ("GET", "/v1/users/123".into(), String::new(), "", 400, "VALIDATION_FAILED", "user id must be"),
            ("GET", "/v1/wallets/%FF%FE".into(), String::new(), "", 400, "VALIDATION_FAILED", "invalid path"),
            ("GET", "/v1/users?limit=0".into(), String::new(), "", 400, "VALIDATION_FAILED", "limit must be"),
            ("GET", "/v1/users?limit=abc".into(), String::new(), "", 400, "VALIDATION_FAILED", "invalid query"),
            ("GET", "/v1/users?sort=desc".into(), String::new(), "", 400, "VALIDATION_FAILED", "unknown field `sort`"),
            ("GET", "/v1/users?after=nope".into(), String::new(), "", 400, "VALIDATION_FAILED", "user id must be"),
            ("GET", format!("/v1/users/{}", uuid::Uuid::now_v7()), String::new(), "", 404, "USER_NOT_FOUND", "not found"),
            ("GET", format!("/v1/wallets/{}", uuid::Uuid::now_v7()), String::new(), "", 404, "WALLET_NOT_FOUND", "not found"),
            ("POST", format!("/v1/users/{}/wallet", uuid::Uuid::now_v7()), String::new(), "application/json", 404, "USER_NOT_FOUND", "not found"),
            ("GET", "/v1/nothing-here".into(), String::new(), "", 404, "NOT_FOUND", "no such route"),
            ("DELETE", "/v1/users".into(), String::new(), "", 405, "METHOD_NOT_ALLOWED", "method"),
        ];
        for (method, path, body, content_type, status, code, words) in cases {
            let mut headers = vec![("authorization", auth.as_str()), ("idempotency-key", "k-1")];
            if !content_type.is_empty() {
                headers.push(("content-type", content_type));
            }
            let reply = stack.http.send(method, &path, &headers, Some(body.into_bytes())).await;
            assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
            assert_eq!(reply.error_code(), code, "{method} {path}");
            assert!(reply.message().contains(words), "{method} {path}: {:?} lacks {words:?}", reply.message());
        }
        let bad_idempotency_key = stack.http.post_with_idempotency_key("/v1/users", key, "has space", "{}").await;
        assert_eq!(bad_idempotency_key.error_code(), "VALIDATION_FAILED");
        assert!(bad_idempotency_key.message().contains("Idempotency-Key"));

        assert_eq!(stack.db.row_counts().await, before, "bad input wrote something");
        // A failed request releases its Idempotency-Key: the same key with a good body works.
        let fixed = stack.http.post_with_idempotency_key(
            "/v1/users", key, "k-1", &json!({ "external_ref": "customer-fixed" }).to_string(),
        ).await;
        assert_eq!(fixed.status, 201, "{}", fixed.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_with_retry_after_per_key() {
    let stack = Stack::start_with(
        DatabaseKind::Sqlite,
        GatewayOptions {
            rate_limit: (1, 3),
            ..Default::default()
        },
    )
    .await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..20 {
        let reply = stack.http.get("/v1/users", Some(&stack.service_key)).await;
        statuses.push(reply.status);
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert!(
        statuses.len() >= 4,
        "limited before the burst of 3 was used: {statuses:?}"
    );
    assert_eq!(limited.error_code(), "RATE_LIMITED");
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", limited.headers));
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // Another key has its own bucket.
    assert_eq!(
        stack
            .http
            .get("/v1/users", Some(&stack.admin_key))
            .await
            .status,
        200
    );
    let metrics = stack.http.get("/metrics", None).await;
    assert!(
        metrics
            .body
            .contains("gateway_rate_limited_requests_total 1"),
        "{}",
        metrics.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_openapi_need_no_key_and_request_ids_are_echoed() {
    let stack = Stack::start(DatabaseKind::Sqlite).await;
    let live = stack.http.get("/health/live", None).await;
    assert_eq!(live.status, 200);
    let ready = stack.http.get("/health/ready", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["database"], "ok");
    assert_eq!(ready.json()["signer"], "ok");

    let doc = stack.http.get("/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.json()["paths"]["/v1/users/{user_id}/wallet"]["post"].is_object());

    let sent = stack
        .http
        .send(
            "GET",
            "/v1/users",
            &[("x-request-id", "trace-abc-123")],
            None,
        )
        .await;
    assert_eq!(
        sent.header("x-request-id").as_deref(),
        Some("trace-abc-123")
    );
    let hostile = stack
        .http
        .send(
            "GET",
            "/v1/users",
            &[("x-request-id", "bad id with spaces")],
            None,
        )
        .await;
    let generated = hostile.header("x-request-id").unwrap_or_default();
    assert!(generated.starts_with("gw-"), "{generated}");
    assert!(
        stack.gateway.log().contains("trace-abc-123"),
        "request id not logged"
    );

    let metrics = stack.http.get("/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains(
            r#"gateway_http_requests_total{method="GET",route="/v1/users",status="401"} 2"#
        ),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("gateway_signer_calls_total{rpc=\"Health\",outcome=\"ok\"}")
    );
}
