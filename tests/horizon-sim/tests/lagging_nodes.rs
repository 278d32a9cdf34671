//! Lagging Horizon nodes behind one URL: each read is served by one node in turn, and a node
//! `K` ledgers behind answers from that older ledger — a stale sequence number, a 404 for a
//! transaction that already applied — with a `Latest-Ledger` header (and ledger fields) telling
//! the truth about that node, as real load-balanced Horizon deployments do.

mod common;

use common::*;
use serde_json::json;

/// Alice pays Bob 1 XLM (async submit, then a ledger close); returns the payment's hash and the
/// ledger it was applied in.
async fn pay_once(
    sim: &horizon_sim::HorizonSim,
    horizon: &Horizon,
    pair: &Pair,
) -> (horizon_sim::TxHash, u32) {
    let envelope = pair.next_payment(sim, XLM);
    let hash = hash_of(&envelope, sim.network_id());
    assert_eq!(horizon.submit_async(&envelope).await.status, 201);
    let closed = sim.close_ledger();
    assert_eq!(closed.applied, vec![hash]);
    (hash, closed.sequence)
}

#[tokio::test]
async fn a_lagging_node_serves_a_stale_sequence_and_says_which_ledger_it_is_at() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "lagging read", 100 * XLM);
    let alice = account(&pair.alice);
    sim.set_node_lags(&[2]);
    // A node that starts lagging stalls until it is as far behind as it should be.
    sim.close_ledger();
    sim.close_ledger();
    let (_, applied_in) = pay_once(&sim, &horizon, &pair).await;
    assert_eq!(sim.sequence(alice), Some(pair.alice_sequence + 1));

    // The node is 2 ledgers behind: it has not seen the payment.
    let stale = horizon.account(&alice).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.latest_ledger(), applied_in - 2);
    assert_eq!(
        stale.body["sequence"],
        pair.alice_sequence.to_string(),
        "the stale sequence"
    );
    assert_eq!(stale.body["balances"][0]["balance"], "100.0000000");
    let modified = stale.body["last_modified_ledger"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(
        modified <= u64::from(stale.latest_ledger()),
        "{}",
        stale.body
    );

    let root = horizon.get("/").await;
    assert_eq!(root.latest_ledger(), applied_in - 2);
    assert_eq!(root.body["history_latest_ledger"], applied_in - 2);
    assert_eq!(root.body["core_latest_ledger"], applied_in - 2);
    assert_eq!(root.body["ingest_latest_ledger"], applied_in - 2);

    // Two more ledgers and the node has caught up with the payment.
    sim.close_ledger();
    sim.close_ledger();
    let caught_up = horizon.account(&alice).await;
    assert_eq!(caught_up.latest_ledger(), applied_in);
    assert_eq!(
        caught_up.body["sequence"],
        (pair.alice_sequence + 1).to_string()
    );
    assert_eq!(caught_up.body["last_modified_ledger"], applied_in);
}

#[tokio::test]
async fn a_lagging_node_answers_404_for_a_transaction_that_already_applied() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "lagging 404", 100 * XLM);
    sim.set_node_lags(&[3]);
    let (hash, applied_in) = pay_once(&sim, &horizon, &pair).await;
    assert_eq!(sim.applications(hash), 1, "the ledger has it");

    for _ in 0..3 {
        let missing = horizon.transaction(&hash).await;
        assert_eq!(
            missing.status, 404,
            "the node is behind the ledger that applied it"
        );
        assert_eq!(missing.problem_type(), "not_found");
        assert!(missing.latest_ledger() < applied_in);
        sim.close_ledger();
    }
    let found = horizon.transaction(&hash).await;
    assert_eq!(found.status, 200);
    assert_eq!(found.latest_ledger(), applied_in);
    assert_eq!(found.body["ledger"], applied_in);
}

#[tokio::test]
async fn reads_take_turns_between_nodes_and_each_answer_is_consistent_with_its_header() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "round robin", 100 * XLM);
    let alice = account(&pair.alice);
    sim.set_node_lags(&[0, 4]);
    let (hash, applied_in) = pay_once(&sim, &horizon, &pair).await;
    for _ in 0..4 {
        sim.close_ledger();
    }
    let latest = sim.ledger_sequence();
    assert_eq!(latest, applied_in + 4);

    let mut seen = Vec::new();
    for _ in 0..4 {
        let reply = horizon.account(&alice).await;
        let at = reply.latest_ledger();
        let expected = if at >= applied_in {
            pair.alice_sequence + 1
        } else {
            pair.alice_sequence
        };
        assert_eq!(reply.body["sequence"], expected.to_string(), "at {at}");
        seen.push(at);
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![latest - 4, latest - 4, latest, latest]);

    // A node 4 behind is exactly at the ledger that applied the payment: it shows it.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let reply = horizon.transaction(&hash).await;
        statuses.push((reply.latest_ledger(), reply.status));
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![(applied_in, 200), (latest, 200)]);
}

#[tokio::test]
async fn without_lagging_nodes_every_answer_carries_the_latest_ledger() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "no lag", 100 * XLM);
    sim.close_ledger();
    let latest = sim.ledger_sequence();
    for path in [
        "/".to_owned(),
        "/fee_stats".to_owned(),
        format!("/accounts/{}", account(&pair.alice)),
        format!("/accounts/{}", account(&key("nobody"))),
    ] {
        assert_eq!(horizon.get(&path).await.latest_ledger(), latest, "{path}");
    }
    let envelope = pair.next_payment(&sim, XLM);
    let submitted = horizon.submit_async(&envelope).await;
    assert_eq!(submitted.status, 201);
    assert_eq!(submitted.latest_ledger(), latest);
    assert!(
        horizon
            .get("/_sim/state")
            .await
            .header("latest-ledger")
            .is_none(),
        "the control API is not Horizon"
    );
}

#[tokio::test]
async fn node_lags_are_set_over_http_and_bounded() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let set = horizon
        .post_json("/_sim/faults", &json!({ "node_lags": [0, 5] }))
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(sim.faults().node_lags, vec![0, 5]);
    let too_far = horizon
        .post_json("/_sim/faults", &json!({ "node_lags": [65] }))
        .await;
    assert_eq!(too_far.status, 400);
    assert!(
        too_far.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("node_lags")),
        "{}",
        too_far.body
    );
    assert_eq!(sim.faults().node_lags, vec![0, 5], "unchanged");
}
