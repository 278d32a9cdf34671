//! Every admin action leaves an audit event: who (the admin key), with which request id, and
//! what changed. Here: a wallet's daily limits, set and reset.

mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_a_wallets_limits_records_who_and_the_old_and_new_limits_sqlite() {
    limits_are_audited(DatabaseKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_a_wallets_limits_records_who_and_the_old_and_new_limits_postgres() {
    limits_are_audited(DatabaseKind::Postgres).await;
}

async fn limits_are_audited(kind: DatabaseKind) {
    let stack = Stack::start(kind).await;
    let user = stack.create_user("limits-audit").await;
    let wallet = stack
        .http
        .post(&format!("/v1/users/{user}/wallet"), &stack.service_key, "")
        .await;
    assert_eq!(wallet.status, 201, "{}", wallet.body);
    let wallet_id = wallet.json()["id"].as_str().unwrap_or_default().to_owned();

    // The admin key's actor name, from an action only it can do.
    let freeze = stack
        .http
        .post(
            &format!("/v1/wallets/{wallet_id}/freeze"),
            &stack.admin_key,
            &json!({ "reason": "check" }).to_string(),
        )
        .await;
    assert_eq!(freeze.status, 200, "{}", freeze.body);

    let set_limits = |body: serde_json::Value, request_id: &'static str| {
        let auth = format!("Bearer {}", stack.admin_key);
        let path = format!("/v1/wallets/{wallet_id}/limits");
        let http = stack.http.clone();
        async move {
            http.send(
                "POST",
                &path,
                &[
                    ("authorization", auth.as_str()),
                    ("idempotency-key", request_id),
                    ("content-type", "application/json"),
                    ("x-request-id", request_id),
                ],
                Some(body.to_string().into_bytes()),
            )
            .await
        }
    };
    let first = set_limits(
        json!({ "daily_count": 7, "daily_amount": "12.5" }),
        "limits-1",
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = set_limits(
        json!({ "daily_count": null, "daily_amount": "3" }),
        "limits-2",
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    // A service key may not, and a refusal records nothing.
    let refused = stack
        .http
        .post(
            &format!("/v1/wallets/{wallet_id}/limits"),
            &stack.service_key,
            &json!({ "daily_count": 1 }).to_string(),
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    let events = stack.audit_events("wallet", &wallet_id).await;
    let admin_actor = events
        .iter()
        .find(|e| e["action"] == "wallet.frozen")
        .map(|e| e["actor"].clone())
        .unwrap_or_else(|| panic!("no wallet.frozen event: {events:#?}"));
    let limit_events: Vec<_> = events
        .iter()
        .filter(|e| e["action"] == "wallet.limits_set")
        .collect();
    assert_eq!(limit_events.len(), 2, "{events:#?}");
    for event in &limit_events {
        assert_eq!(event["actor"], admin_actor, "{event}");
        assert_eq!(event["subject_type"], "wallet");
        assert_eq!(event["subject_id"], wallet_id.as_str());
    }
    assert_eq!(limit_events[0]["request_id"], "limits-1");
    assert_eq!(
        limit_events[0]["details"],
        json!({
            "old": { "daily_count": null, "daily_amount_stroops": null },
            "new": { "daily_count": 7, "daily_amount_stroops": 125_000_000 },
        })
    );
    assert_eq!(limit_events[1]["request_id"], "limits-2");
    assert_eq!(
        limit_events[1]["details"],
        json!({
            "old": { "daily_count": 7, "daily_amount_stroops": 125_000_000 },
            "new": { "daily_count": null, "daily_amount_stroops": 30_000_000 },
        })
    );
}
