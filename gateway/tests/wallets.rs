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

/// Counts the write transactions the gateway commits, from the database itself, so that a commit
/// made by any code path (a store method, a middleware, a statement on the pool) is seen.
///
/// SQLite: the commit frames of the current WAL generation (a frame whose "database size after
/// commit" field is set, with the header's salts). Postgres: a row trigger on every gateway table
/// logs the id of the transaction that changed the row; the count is of distinct ids.
struct CommitCounter<'a> {
    db: &'a TestDatabase,
    wal_salts: Option<[u8; 8]>,
}

impl<'a> CommitCounter<'a> {
    async fn install(db: &'a TestDatabase) -> CommitCounter<'a> {
        if db.kind == DatabaseKind::Postgres {
            let store = db.store().await;
            let statements = [
                "CREATE TABLE test_commit_log (xid BIGINT NOT NULL)".to_owned(),
                "CREATE FUNCTION test_log_commit() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN INSERT INTO test_commit_log VALUES (txid_current()); RETURN NULL; END $$"
                    .to_owned(),
            ];
            let triggers = support::TABLES.iter().map(|table| {
                format!(
                    "CREATE TRIGGER test_log_commit AFTER INSERT OR UPDATE OR DELETE ON {table} \
                     FOR EACH ROW EXECUTE FUNCTION test_log_commit()"
                )
            });
            for sql in statements.into_iter().chain(triggers) {
                must(sqlx::query(&sql).execute(store.pool()).await);
            }
            store.close().await;
        }
        CommitCounter {
            db,
            wal_salts: None,
        }
    }

    /// Write transactions committed so far (SQLite: in this WAL generation, which must not
    /// change between two reads: a test writes far less than a checkpoint's worth).
    async fn commits(&mut self) -> u64 {
        match self.db.kind {
            DatabaseKind::Postgres => {
                let store = self.db.store().await;
                let n: i64 = must(
                    sqlx::query_scalar("SELECT COUNT(DISTINCT xid) FROM test_commit_log")
                        .fetch_one(store.pool())
                        .await,
                );
                store.close().await;
                u64::try_from(n).unwrap_or_default()
            }
            DatabaseKind::Sqlite => {
                let wal = must(std::fs::read(self.db.dir().join("gateway.db-wal")));
                assert!(wal.len() >= 32, "no WAL header");
                let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                let page_size = be(&wal[8..12]) as usize;
                let salts: [u8; 8] = must(<[u8; 8]>::try_from(&wal[16..24]));
                assert!(
                    self.wal_salts.is_none_or(|s| s == salts),
                    "the WAL was restarted between two counts"
                );
                self.wal_salts = Some(salts);
                wal[32..]
                    .chunks_exact(24 + page_size)
                    .filter(|frame| frame[8..16] == salts && be(&frame[4..8]) != 0)
                    .count() as u64
            }
        }
    }
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
        assert_eq!(events[0]["subject_type"], "wallet", "{events:?}");
        assert_eq!(events[0]["details"]["public_key"], wallet["public_key"], "{events:?}");
        assert_eq!(events[0]["details"]["key_id"], wallet["key_id"], "{events:?}");
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

    async fn a_new_wallet_costs_two_commits_a_repeat_one_and_a_replay_none(kind: DatabaseKind) {
        let stack = Stack::start(kind).await;
        let user_id = stack.create_user("customer-commits").await;
        let path = format!("/v1/users/{user_id}/wallet");
        let mut counter = CommitCounter::install(&stack.db).await;
        // The gateway commits nothing while idle (else the counts below would be noise).
        let idle = counter.commits().await;
        let _ = stack.http.get(&path, Some(&stack.service_key)).await;
        assert_eq!(counter.commits().await, idle, "the gateway committed while idle");

        // Reservation (user check, key, row) and completion (public key, audit event, the key's
        // answer): two, whatever the path between them.
        let before = counter.commits().await;
        let created = stack.http.post_with_idempotency_key(&path, &stack.service_key, "commits-1", "").await;
        assert_eq!(created.status, 201, "{}", created.body);
        assert_eq!(counter.commits().await - before, 2, "write transactions for one new wallet");

        // The replay reads only; a repeat with another key stores its 200, once.
        let before = counter.commits().await;
        let replay = stack.http.post_with_idempotency_key(&path, &stack.service_key, "commits-1", "").await;
        assert_eq!((replay.status, replay.body.as_str()), (201, created.body.as_str()));
        assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(counter.commits().await - before, 0, "write transactions for a replay");
        let again = stack.http.post_with_idempotency_key(&path, &stack.service_key, "commits-2", "").await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(again.header("idempotent-replayed"), None);
        assert_eq!(counter.commits().await - before, 1, "write transactions for a repeat");
        let replay = stack.http.post_with_idempotency_key(&path, &stack.service_key, "commits-2", "").await;
        assert_eq!((replay.status, replay.body.as_str()), (200, again.body.as_str()));
        assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"));
    }

    async fn wallet_idempotency_keys_replay_conflict_and_are_scoped_to_the_api_key(kind: DatabaseKind) {
        let stack = Stack::start(kind).await;
        let (alice, bob) = (stack.create_user("customer-a").await, stack.create_user("customer-b").await);
        let path_a = format!("/v1/users/{alice}/wallet");
        let path_b = format!("/v1/users/{bob}/wallet");
        let key = stack.service_key.clone();
        let first = stack.http.post_with_idempotency_key(&path_a, &key, "scoped", "").await;
        assert_eq!(first.status, 201, "{}", first.body);
        assert_eq!(first.header("idempotent-replayed"), None);

        // The same key with a different request (another body, another user): refused, nothing made.
        let body = stack.http.post_with_idempotency_key(&path_a, &key, "scoped", "{\"x\":1}").await;
        assert_eq!((body.status, body.error_code().as_str()), (422, "IDEMPOTENCY_CONFLICT"), "{}", body.body);
        let other_user = stack.http.post_with_idempotency_key(&path_b, &key, "scoped", "").await;
        assert_eq!((other_user.status, other_user.error_code().as_str()), (422, "IDEMPOTENCY_CONFLICT"));
        assert_eq!(stack.db.row_counts().await["wallets"], 1);
        // A key first used on another route conflicts here too.
        let user_body = json!({ "external_ref": "customer-c" }).to_string();
        let made = stack.http.post_with_idempotency_key("/v1/users", &key, "used-on-users", &user_body).await;
        assert_eq!(made.status, 201, "{}", made.body);
        let reused = stack.http.post_with_idempotency_key(&path_b, &key, "used-on-users", "").await;
        assert_eq!((reused.status, reused.error_code().as_str()), (422, "IDEMPOTENCY_CONFLICT"));

        // Keys are per API key: another key's "scoped" is a request of its own (200: the wallet
        // exists), and the original replays still.
        let other_key = create_api_key(&stack.gateway.config, "service");
        let theirs = stack.http.post_with_idempotency_key(&path_a, &other_key, "scoped", "").await;
        assert_eq!(theirs.status, 200, "{}", theirs.body);
        assert_eq!(theirs.header("idempotent-replayed"), None);
        let bobs = stack.http.post_with_idempotency_key(&path_b, &other_key, "scoped-b", "").await;
        assert_eq!(bobs.status, 201, "{}", bobs.body);
        let replay = stack.http.post_with_idempotency_key(&path_a, &key, "scoped", "").await;
        assert_eq!((replay.status, replay.body.as_str()), (201, first.body.as_str()));
        assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"));

        // The replay is the stored answer, not the wallet now: frozen since, it still shows active.
        let wallet_id = field(&first.json(), "id");
        let reason = json!({ "reason": "review" }).to_string();
        let frozen = stack.http.post(&format!("/v1/wallets/{wallet_id}/freeze"), &stack.admin_key, &reason).await;
        assert_eq!(frozen.status, 200, "{}", frozen.body);
        let replay = stack.http.post_with_idempotency_key(&path_a, &key, "scoped", "").await;
        assert_eq!((replay.status, replay.body.as_str()), (201, first.body.as_str()));
        let refused = stack.http.post_with_idempotency_key(&path_a, &key, "after-freeze", "").await;
        assert_eq!(refused.error_code(), "WALLET_FROZEN");
    }

    async fn concurrent_identical_requests_make_one_wallet_and_all_answer_its_201(kind: DatabaseKind) {
        let stack = Stack::start(kind).await;
        let user_id = stack.create_user("customer-same-key").await;
        let path = format!("/v1/users/{user_id}/wallet");
        let replies = join_all(
            (0..20).map(|_| stack.http.post_with_idempotency_key(&path, &stack.service_key, "same", "")),
        )
        .await;
        let first = replies.iter().find(|r| r.header("idempotent-replayed").is_none())
            .unwrap_or_else(|| panic!("every answer is a replay"));
        for reply in &replies {
            assert_eq!((reply.status, reply.body.as_str()), (201, first.body.as_str()));
        }
        let fresh = replies.iter().filter(|r| r.header("idempotent-replayed").is_none()).count();
        assert_eq!(fresh, 1, "answers not marked replayed");
        assert_eq!(stack.signerd_keys().await.len(), 1);
        assert_eq!(stack.db.row_counts().await["wallets"], 1);
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
