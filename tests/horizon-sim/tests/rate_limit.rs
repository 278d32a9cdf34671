//! Rate limiting as public Horizon does it: past a request budget, 429 `rate_limit_exceeded`
//! (problem JSON, Horizon's `RateLimitExceeded` type and title) with `Retry-After`, and the
//! advisory `X-RateLimit-*` headers on every answer. A refused request is not served: a refused
//! submission never reaches the ledger.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn assert_rate_limited(reply: &Reply) {
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert!(reply.content_type.starts_with("application/problem+json"));
    assert_eq!(
        reply.body["type"],
        "https://stellar.org/horizon-errors/rate_limit_exceeded"
    );
    assert_eq!(reply.body["title"], "Rate Limit Exceeded");
    assert_eq!(reply.body["status"], 429);
    let retry_after: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {:?}", reply.headers));
    assert!(retry_after >= 1, "{retry_after}");
}

#[tokio::test]
async fn past_the_budget_every_horizon_request_is_refused_with_retry_after() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "budget", 100 * XLM);
    sim.set_rate_limit(3, Duration::from_secs(600));

    for remaining in ["2", "1", "0"] {
        let served = horizon.get("/fee_stats").await;
        assert_eq!(served.status, 200);
        assert_eq!(served.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(served.header("x-ratelimit-remaining"), Some(remaining));
    }
    let refused = horizon.account(&account(&pair.alice)).await;
    assert_rate_limited(&refused);
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(
        retry_after <= 600,
        "the window's end, not later: {retry_after}"
    );

    let envelope = pair.next_payment(&sim, XLM);
    assert_rate_limited(&horizon.submit_async(&envelope).await);
    assert_rate_limited(&horizon.submit(&envelope).await);
    assert_eq!(sim.queued(), 0, "a refused submission is not processed");
    assert_eq!(
        horizon.get("/_sim/state").await.status,
        200,
        "never the control API"
    );

    sim.set_rate_limit(0, Duration::ZERO);
    let served = horizon.submit_async(&envelope).await;
    assert_eq!(served.status, 201);
    assert!(served.header("x-ratelimit-limit").is_none());
    sim.close_ledger();
    assert_eq!(sim.balance(account(&pair.bob)), Some(11 * XLM));
}

#[tokio::test]
async fn a_client_that_waits_retry_after_is_served_again() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    sim.set_rate_limit(2, Duration::from_millis(300));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    // The window may end between any two requests on a slow machine: count until a refusal.
    let refused = loop {
        let reply = horizon.get("/").await;
        if reply.status == 429 {
            break reply;
        }
        assert_eq!(reply.status, 200);
        assert!(tokio::time::Instant::now() < deadline, "never refused");
    };
    assert_rate_limited(&refused);
    assert_eq!(
        refused.header("retry-after"),
        Some("1"),
        "300 ms, rounded up"
    );
    // What a well-behaved client does: wait as told, then ask again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(horizon.get("/").await.status, 200);
}

#[tokio::test]
async fn the_next_n_requests_can_be_refused_outright() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "burst", 100 * XLM);
    let envelope = pair.next_payment(&sim, XLM);
    let hash = hash_of(&envelope, sim.network_id());
    sim.rate_limited(2);

    let first = horizon.submit(&envelope).await;
    assert_rate_limited(&first);
    assert_eq!(first.header("retry-after"), Some("1"));
    assert!(
        first.header("x-ratelimit-limit").is_none(),
        "no budget in force"
    );
    assert_rate_limited(&horizon.transaction(&hash).await);
    assert_eq!(sim.faults().rate_limited, 0, "both used");
    assert_eq!(sim.queued(), 0);

    let served = submit_closing(&sim, &horizon, &envelope).await;
    assert_eq!(served.status, 200);
    assert_eq!(sim.applications(hash), 1);
}

#[tokio::test]
async fn rate_limits_are_set_over_http_and_a_budget_needs_a_window() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let set = horizon
        .post_json(
            "/_sim/faults",
            &json!({ "rate_limit_requests": 1, "rate_limit_window_ms": 600_000 }),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(horizon.get("/").await.status, 200);
    assert_eq!(horizon.get("/").await.status, 429);

    let no_window = horizon
        .post_json("/_sim/faults", &json!({ "rate_limit_requests": 1 }))
        .await;
    assert_eq!(no_window.status, 400);
    assert!(
        no_window.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("rate_limit_window_ms")),
        "{}",
        no_window.body
    );
    let burst = horizon
        .post_json("/_sim/faults", &json!({ "rate_limited": 1 }))
        .await;
    assert_eq!(burst.status, 200);
    assert_eq!(horizon.get("/").await.status, 429);
    assert_eq!(horizon.get("/").await.status, 200);
}
