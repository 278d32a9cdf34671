//! Faults on demand, through the library handle and through `POST /_sim/faults`: each one does
//! what it says to the client and to the ledger.

mod common;

use std::time::Duration;

use common::*;
use horizon_sim::{Faults, HorizonSim, SimConfig};
use serde_json::json;
use signer_testkit::stellar::{Tx, payment};

struct Payment {
    envelope: String,
    hash: horizon_sim::TxHash,
    from: horizon_sim::AccountKey,
    to: horizon_sim::AccountKey,
}

/// Two funded accounts and a signed 1 XLM payment between them.
fn payment_between_new_accounts(sim: &HorizonSim, label: &str) -> Payment {
    let pair = Pair::new(sim, label, 100 * XLM);
    let envelope = pair.next_payment(sim, XLM);
    Payment {
        hash: hash_of(&envelope, sim.network_id()),
        envelope,
        from: account(&pair.alice),
        to: account(&pair.bob),
    }
}

fn spawn_submit(horizon: &Horizon, envelope: &str) -> tokio::task::JoinHandle<Reply> {
    let horizon = horizon.clone();
    let envelope = envelope.to_owned();
    tokio::spawn(async move { horizon.submit(&envelope).await })
}

#[tokio::test]
async fn timeout_after_apply_lands_once_and_the_resubmission_finds_it() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pay = payment_between_new_accounts(&sim, "after apply");
    sim.timeout_after_apply(1);

    let reply = submit_closing(&sim, &horizon, &pay.envelope).await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.problem_type(), "timeout");
    assert_eq!(reply.body["title"], "Timeout");
    assert_eq!(sim.applications(pay.hash), 1, "applied despite the 504");
    let fetched = horizon.transaction(&pay.hash).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["successful"], true);

    // The client does what Horizon's detail says: the same bytes again.
    let again = horizon.submit(&pay.envelope).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["ledger"], fetched.body["ledger"]);
    sim.close_ledger();
    assert_eq!(sim.applications(pay.hash), 1);
    assert_eq!(sim.balance(pay.to), Some(11 * XLM), "paid exactly once");
    assert_eq!(sim.applied_from(pay.from).len(), 1);
}

#[tokio::test]
async fn timeout_without_apply_leaves_nothing_and_the_resubmission_lands() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pay = payment_between_new_accounts(&sim, "without apply");
    let sequence = sim.sequence(pay.from);
    sim.timeout_without_apply(1);

    let reply = horizon.submit(&pay.envelope).await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.problem_type(), "timeout");
    assert_eq!(sim.queued(), 0);
    sim.close_ledger();
    assert_eq!(sim.applications(pay.hash), 0);
    assert_eq!(horizon.transaction(&pay.hash).await.status, 404);
    assert_eq!(sim.sequence(pay.from), sequence);
    assert_eq!(sim.balance(pay.to), Some(10 * XLM));

    let again = submit_closing(&sim, &horizon, &pay.envelope).await;
    assert_eq!(again.status, 200);
    assert_eq!(sim.applications(pay.hash), 1);
    assert_eq!(sim.balance(pay.to), Some(11 * XLM), "paid exactly once");
}

#[tokio::test]
async fn async_submissions_suffer_the_same_timeouts() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let dropped = payment_between_new_accounts(&sim, "async without apply");
    let landed = payment_between_new_accounts(&sim, "async after apply");

    sim.timeout_without_apply(1);
    let reply = horizon.submit_async(&dropped.envelope).await;
    assert_eq!(reply.status, 504);
    assert_eq!(sim.queued(), 0);

    sim.timeout_after_apply(1);
    let horizon_for_task = horizon.clone();
    let envelope = landed.envelope.clone();
    let reply = closing_ledgers(&sim, async move {
        horizon_for_task.submit_async(&envelope).await
    })
    .await;
    assert_eq!(reply.status, 504);
    assert_eq!(sim.applications(landed.hash), 1);
    assert_eq!(sim.applications(dropped.hash), 0);
}

#[tokio::test]
async fn unavailable_answers_503_and_drops_the_submission() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pay = payment_between_new_accounts(&sim, "unavailable");
    sim.unavailable(2);

    let sync = horizon.submit(&pay.envelope).await;
    assert_eq!(sync.status, 503);
    assert!(sync.content_type.starts_with("application/problem+json"));
    assert_eq!(sync.problem_type(), "server_over_capacity");
    let asynchronous = horizon.submit_async(&pay.envelope).await;
    assert_eq!(asynchronous.status, 503);
    assert_eq!(asynchronous.body["tx_status"], "TRY_AGAIN_LATER");
    assert_eq!(asynchronous.body["hash"], pay.hash.to_hex());
    assert_eq!(sim.queued(), 0);
    assert_eq!(sim.faults(), Faults::default(), "both counts used");

    let third = submit_closing(&sim, &horizon, &pay.envelope).await;
    assert_eq!(third.status, 200);
    assert_eq!(sim.applications(pay.hash), 1);
}

#[tokio::test]
async fn delayed_ingestion_hides_an_applied_transaction_for_k_ledgers() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pay = payment_between_new_accounts(&sim, "late ingestion");
    sim.delay_ingestion(2);

    let waiting = spawn_submit(&horizon, &pay.envelope);
    sim.wait_for_queued(1, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let applied_in = sim.close_ledger();
    assert_eq!(applied_in.applied, vec![pay.hash]);
    assert_eq!(sim.ledger_of(pay.hash), Some(applied_in.sequence));
    assert_eq!(sim.balance(pay.to), Some(11 * XLM), "the ledger has it");
    assert_eq!(
        horizon.transaction(&pay.hash).await.status,
        404,
        "Horizon does not"
    );
    assert!(
        !waiting.is_finished(),
        "the synchronous submitter waits for ingestion"
    );

    // Resubmitted while Horizon lags: core sees a used sequence number, Horizon finds nothing.
    let resubmitted = horizon.submit(&pay.envelope).await;
    assert_eq!(resubmitted.status, 400);
    assert_eq!(resubmitted.transaction_code(), "tx_bad_seq");

    sim.close_ledger();
    assert_eq!(horizon.transaction(&pay.hash).await.status, 404);
    assert!(!waiting.is_finished());
    sim.close_ledger();
    let fetched = horizon.transaction(&pay.hash).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["ledger"], applied_in.sequence);
    let reply = waiting.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["ledger"], applied_in.sequence);
    assert_eq!(sim.applications(pay.hash), 1);
}

#[tokio::test]
async fn an_outage_answers_503_everywhere_but_the_control_api() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pay = payment_between_new_accounts(&sim, "outage");
    sim.set_outage(true);
    for path in ["/", "/fee_stats", &format!("/accounts/{}", pay.from)] {
        let reply = horizon.get(path).await;
        assert_eq!(reply.status, 503, "{path}");
        assert_eq!(reply.problem_type(), "server_over_capacity");
    }
    assert_eq!(horizon.submit(&pay.envelope).await.status, 503);
    assert_eq!(horizon.submit_async(&pay.envelope).await.status, 503);
    assert_eq!(horizon.get("/_sim/state").await.status, 200);
    let ledger = sim.ledger_sequence();
    assert_eq!(
        horizon.post_json("/_sim/ledgers", &json!({})).await.status,
        200
    );
    assert_eq!(
        sim.ledger_sequence(),
        ledger + 1,
        "ledgers close during an outage"
    );
    assert_eq!(sim.applications(pay.hash), 0);

    sim.set_outage(false);
    assert_eq!(
        submit_closing(&sim, &horizon, &pay.envelope).await.status,
        200
    );
}

#[tokio::test]
async fn latency_delays_every_horizon_answer() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let latency = Duration::from_secs(1);
    sim.set_latency(latency);
    let started = std::time::Instant::now();
    assert_eq!(horizon.get("/fee_stats").await.status, 200);
    assert!(started.elapsed() >= latency);
    let started = std::time::Instant::now();
    assert_eq!(horizon.get("/_sim/faults").await.status, 200);
    assert!(started.elapsed() < latency, "not the control API");
}

#[tokio::test]
async fn faults_are_set_read_and_cleared_over_http() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pay = payment_between_new_accounts(&sim, "control faults");

    let set = horizon
        .post_json(
            "/_sim/faults",
            &json!({ "timeout_without_apply": 1, "ingestion_delay_ledgers": 3 }),
        )
        .await;
    assert_eq!(set.status, 200);
    assert_eq!(set.body["timeout_without_apply"], 1);
    assert_eq!(set.body["timeout_after_apply"], 0);
    let read = horizon.get("/_sim/faults").await;
    assert_eq!(read.body["ingestion_delay_ledgers"], 3);
    assert_eq!(sim.faults().ingestion_delay_ledgers, 3);

    assert_eq!(horizon.submit(&pay.envelope).await.status, 504);
    assert_eq!(
        horizon.get("/_sim/faults").await.body["timeout_without_apply"],
        0
    );

    let typo = horizon
        .post_json("/_sim/faults", &json!({ "timeout_afer_apply": 1 }))
        .await;
    assert_eq!(typo.status, 400);
    assert!(
        typo.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown field"))
    );

    let cleared = horizon
        .send_raw("DELETE", "/_sim/faults", "application/json", "")
        .await;
    assert_eq!(cleared.status, 200);
    assert_eq!(sim.faults(), Faults::default());
}

#[tokio::test]
async fn the_control_api_closes_ledgers_creates_accounts_and_reports_applications() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let carol = account(&key("control carol"));

    let created = horizon
        .post_json(
            "/_sim/accounts",
            &json!({ "account_id": carol.address(), "balance_stroops": 50 * XLM }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(sim.balance(carol), Some(50 * XLM));
    let duplicate = horizon
        .post_json(
            "/_sim/accounts",
            &json!({ "account_id": carol.address(), "balance_stroops": 1 }),
        )
        .await;
    assert_eq!(duplicate.status, 409);
    let read = horizon.get(&format!("/_sim/accounts/{carol}")).await;
    assert_eq!(read.body["balance_stroops"], 50 * XLM);
    assert_eq!(read.body["balance"], "50.0000000");

    let pay = payment_between_new_accounts(&sim, "control");
    assert_eq!(horizon.submit_async(&pay.envelope).await.status, 201);
    let closed = horizon
        .post_json(
            "/_sim/ledgers",
            &json!({ "close_time": sim.ledger_close_time() + 5 }),
        )
        .await;
    assert_eq!(closed.status, 200);
    assert_eq!(closed.body["applied"][0], pay.hash.to_hex());
    assert_eq!(closed.body["sequence"], sim.ledger_sequence());
    assert_eq!(closed.body["close_time"], sim.ledger_close_time());

    let state = horizon
        .get(&format!("/_sim/transactions/{}", pay.hash))
        .await;
    assert_eq!(state.body["applications"], 1);
    assert_eq!(state.body["ledger"], sim.ledger_sequence());
    assert_eq!(state.body["successful"], true);
    assert_eq!(state.body["ingested"], true);
    let unknown = horizon
        .get(&format!("/_sim/transactions/{}", "ab".repeat(32)))
        .await;
    assert_eq!(unknown.body["applications"], 0);

    let everything = horizon.get("/_sim/state").await.body;
    assert_eq!(everything["ledger"], sim.ledger_sequence());
    let applied = everything["transactions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0]["source"], pay.from.address());
    // Lumens are conserved: balances plus fees are the total supply.
    let total: i64 = everything["accounts"]
        .as_array()
        .map(|accounts| {
            accounts
                .iter()
                .map(|a| a["balance_stroops"].as_i64().unwrap_or_default())
                .sum()
        })
        .unwrap_or_default();
    let fee_pool = everything["fee_pool"].as_i64().unwrap_or_default();
    assert_eq!(fee_pool, 100);
    assert_eq!(total + fee_pool, horizon_sim::amount::TOTAL_SUPPLY);
}

#[tokio::test]
async fn a_future_sequence_number_is_held_until_the_account_catches_up() {
    let sim = start_with(SimConfig {
        submission_timeout: Duration::from_secs(5),
        ..SimConfig::default()
    })
    .await;
    let horizon = Horizon::new(&sim);
    let alice = key("held alice");
    let bob = key("held bob");
    let sequence = funded(&sim, &alice, 100 * XLM);
    funded(&sim, &bob, 10 * XLM);
    let envelope = |n: i64| {
        let mut tx = Tx::new(public(&alice), n);
        tx.operations = vec![payment(public(&bob), XLM)];
        signed(&tx, sim.network_id(), &[&alice])
    };
    // The second payment arrives first: Horizon holds it.
    let second = spawn_submit(&horizon, &envelope(sequence + 2));
    let first = spawn_submit(&horizon, &envelope(sequence + 1));
    sim.wait_for_queued(1, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sim.close_ledger();
    assert_eq!(first.await.unwrap_or_else(|e| panic!("{e}")).status, 200);
    sim.wait_for_queued(1, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sim.close_ledger();
    assert_eq!(second.await.unwrap_or_else(|e| panic!("{e}")).status, 200);
    assert_eq!(sim.sequence(account(&alice)), Some(sequence + 2));
    assert_eq!(sim.balance(account(&bob)), Some(12 * XLM));
}

#[tokio::test]
async fn a_future_sequence_number_that_never_fits_ends_as_bad_seq() {
    let sim = start_with(SimConfig {
        submission_timeout: Duration::from_millis(500),
        ..SimConfig::default()
    })
    .await;
    let horizon = Horizon::new(&sim);
    let alice = key("never alice");
    let sequence = funded(&sim, &alice, 100 * XLM);
    let mut tx = Tx::new(public(&alice), sequence + 5);
    tx.operations = vec![payment(public(&key("never bob")), XLM)];
    let reply = horizon
        .submit(&signed(&tx, sim.network_id(), &[&alice]))
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.transaction_code(), "tx_bad_seq");
    assert_eq!(sim.sequence(account(&alice)), Some(sequence));
}
