//! The simulator's faults on Stellar RPC, driven by the same knobs as on Horizon: what an RPC
//! provider's client sees when its requests are rate limited (HTTP 429 with `Retry-After` and a
//! JSON-RPC error body), the provider is down (a bare 503), a submission's reply is lost after
//! or without the transaction reaching the ledger (a bare 504 or 503), a request is slow, and
//! the network surges (low bids refused, one queued transaction per account, the clearing price
//! charged, evicted transactions never appearing).

mod common;

use std::time::Duration;

use common::*;
use horizon_sim::SimConfig;
use serde_json::{Value, json};
use signer_testkit::stellar::{Tx, payment};
use stellar_xdr::{TransactionResult, TransactionResultResult};

#[tokio::test]
async fn a_rate_limited_call_is_429_with_retry_after_and_is_not_served() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc rate limited", 100 * XLM);
    let envelope = pair.next_payment(&sim, XLM);
    sim.rate_limited(1);

    let refused = rpc
        .call("sendTransaction", json!({ "transaction": envelope }))
        .await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.content_type, "application/json");
    assert_eq!(refused.body["jsonrpc"], "2.0");
    assert_eq!(refused.body["id"], Value::Null, "the request was not read");
    assert_eq!(refused.body["error"]["code"], -32005);
    assert_eq!(sim.queued(), 0, "a refused request is not served");

    assert_eq!(rpc.send(&envelope).await["status"], "PENDING");
}

#[tokio::test]
async fn a_request_budget_counts_down_then_answers_429_until_the_window_ends() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    sim.set_rate_limit(2, Duration::from_secs(60));
    let first = rpc.call("getHealth", json!(null)).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(
        rpc.call("getLatestLedger", json!(null))
            .await
            .header("x-ratelimit-remaining"),
        Some("0")
    );
    let refused = rpc.call("getHealth", json!(null)).await;
    assert_eq!(refused.status, 429);
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After in seconds: {:?}", refused.headers));
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    // One provider, one budget: Horizon's requests are refused too.
    assert_eq!(Horizon::new(&sim).get("/").await.status, 429);
    sim.set_rate_limit(0, Duration::from_secs(1));
    assert_eq!(rpc.call("getHealth", json!(null)).await.status, 200);
}

#[tokio::test]
async fn an_outage_answers_a_bare_503_to_every_call_and_queues_nothing() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc outage", 100 * XLM);
    let envelope = pair.next_payment(&sim, XLM);
    sim.set_outage(true);
    for (method, params) in [
        ("getHealth", json!(null)),
        ("sendTransaction", json!({ "transaction": envelope })),
    ] {
        let down = rpc.call(method, params).await;
        assert_eq!(down.status, 503, "{method}");
        assert_eq!(down.body, Value::Null, "{method}: not a JSON-RPC answer");
    }
    assert_eq!(sim.queued(), 0);
    // Ledgers keep closing and the control API answers.
    sim.close_ledger();
    sim.set_outage(false);
    let health = rpc.result("getHealth", json!(null)).await;
    assert_eq!(as_u32(&health["latestLedger"]), sim.ledger_sequence());
    assert_eq!(rpc.send(&envelope).await["status"], "PENDING");
}

#[tokio::test]
async fn an_unavailable_submission_is_a_bare_503_and_is_dropped() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc unavailable", 100 * XLM);
    let envelope = pair.next_payment(&sim, XLM);
    let hash = hash_of(&envelope, sim.network_id());
    sim.unavailable(1);
    let lost = rpc
        .call("sendTransaction", json!({ "transaction": envelope }))
        .await;
    assert_eq!(lost.status, 503);
    assert_eq!(sim.queued(), 0, "dropped");
    sim.close_ledger();
    assert_eq!(rpc.transaction(&hash).await["status"], "NOT_FOUND");
    // The same bytes again: accepted this time.
    assert_eq!(rpc.send(&envelope).await["status"], "PENDING");
}

#[tokio::test]
async fn a_timeout_without_apply_is_a_504_and_the_transaction_never_appears() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc timeout without", 100 * XLM);
    let envelope = pair.next_payment(&sim, XLM);
    let hash = hash_of(&envelope, sim.network_id());
    sim.timeout_without_apply(1);
    let lost = rpc
        .call("sendTransaction", json!({ "transaction": envelope }))
        .await;
    assert_eq!(lost.status, 504);
    assert_eq!(lost.body, Value::Null, "the proxy's answer, not RPC's");
    assert_eq!(sim.queued(), 0);
    sim.close_ledger();
    sim.close_ledger();
    let missing = rpc.transaction(&hash).await;
    assert_eq!(missing["status"], "NOT_FOUND");
    assert!(as_u32(&missing["latestLedger"]) > 1);
    assert_eq!(sim.applications(hash), 0);
    assert_eq!(rpc.send(&envelope).await["status"], "PENDING");
}

#[tokio::test]
async fn a_timeout_after_apply_is_a_504_sent_once_the_transaction_is_in_the_ledger() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc timeout after", 100 * XLM);
    let envelope = pair.next_payment(&sim, XLM);
    let hash = hash_of(&envelope, sim.network_id());
    sim.timeout_after_apply(1);
    let reply = {
        let rpc = rpc.clone();
        let envelope = envelope.clone();
        closing_ledgers(&sim, async move {
            rpc.call("sendTransaction", json!({ "transaction": envelope }))
                .await
        })
        .await
    };
    assert_eq!(reply.status, 504);
    assert_eq!(sim.applications(hash), 1, "applied before the 504");
    let found = rpc.transaction(&hash).await;
    assert_eq!(found["status"], "SUCCESS");
    // Resending the same bytes cannot apply them twice: core says the sequence is used.
    let again = rpc.send(&envelope).await;
    assert_eq!(again["status"], "ERROR");
    let result: TransactionResult = decode_xdr(&again["errorResultXdr"]);
    assert!(matches!(result.result, TransactionResultResult::TxBadSeq));
    sim.close_ledger();
    assert_eq!(sim.applications(hash), 1);
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    sim.set_latency(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    assert_eq!(rpc.call("getHealth", json!(null)).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn in_a_surge_the_winners_pay_the_clearing_price_and_the_low_bid_waits() {
    let sim = start_with(small_ledgers()).await;
    let rpc = Rpc::new(&sim);
    let payee = key("rpc surge payee");
    funded(&sim, &payee, 10 * XLM);
    let (high, high_hash, _) = payment_bidding(&sim, "rpc surge high", &payee, 2_000);
    let (low, low_hash, _) = payment_bidding(&sim, "rpc surge low", &payee, 100);
    // Other parties want 99 of the 100 operations at 500 stroops.
    sim.set_surge(99, 500);
    assert_eq!(rpc.send(&low).await["status"], "PENDING");
    assert_eq!(rpc.send(&high).await["status"], "PENDING");

    sim.close_ledger();
    let won = rpc.transaction(&high_hash).await;
    assert_eq!(won["status"], "SUCCESS");
    let result: TransactionResult = decode_xdr(&won["resultXdr"]);
    assert_eq!(result.fee_charged, 500, "the clearing price, not the bid");
    assert_eq!(
        rpc.transaction(&low_hash).await["status"],
        "NOT_FOUND",
        "outbid: still queued"
    );
    let stats = rpc.result("getFeeStats", json!(null)).await;
    assert_eq!(stats["inclusionFee"]["p50"], "500");
    assert_eq!(stats["inclusionFee"]["min"], "500");

    sim.set_surge(0, 0);
    sim.close_ledger();
    let late = rpc.transaction(&low_hash).await;
    assert_eq!(late["status"], "SUCCESS");
    let result: TransactionResult = decode_xdr(&late["resultXdr"]);
    assert_eq!(result.fee_charged, 100);
}

#[tokio::test]
async fn a_full_queue_refuses_a_low_bid_and_a_source_gets_one_queued_transaction() {
    let sim = start_with(small_ledgers()).await;
    let rpc = Rpc::new(&sim);
    let payee = key("rpc full payee");
    funded(&sim, &payee, 10 * XLM);
    let (low, _, _) = payment_bidding(&sim, "rpc full low", &payee, 500);
    // Two ledgers' worth of other parties' operations at 500: the queue is full.
    sim.set_surge(200, 500);
    let refused = rpc.send(&low).await;
    assert_eq!(refused["status"], "ERROR", "{refused}");
    let result: TransactionResult = decode_xdr(&refused["errorResultXdr"]);
    assert!(matches!(
        result.result,
        TransactionResultResult::TxInsufficientFee
    ));
    assert_eq!(result.fee_charged, 501, "the fee that would be enough");
    assert_eq!(sim.queued(), 0);

    let (enough, enough_hash, tx) = payment_bidding(&sim, "rpc full enough", &payee, 501);
    assert_eq!(rpc.send(&enough).await["status"], "PENDING");
    // Another transaction from the same account, bidding more but not by 10×: later.
    let payer = key("rpc full enough");
    let mut other = tx.clone();
    other.sequence += 1;
    other.fee = 2_000;
    let other = signed(&other, sim.network_id(), &[&payer]);
    assert_eq!(rpc.send(&other).await["status"], "TRY_AGAIN_LATER");
    assert_eq!(sim.queued(), 1);
    sim.close_ledger();
    assert_eq!(rpc.transaction(&enough_hash).await["status"], "SUCCESS");
}

#[tokio::test]
async fn a_queue_full_of_transactions_answers_try_again_later_whatever_the_bid() {
    // Ledgers of 100 operations: the queue holds 200, two transactions of 100 payments.
    let sim = start_with(small_ledgers()).await;
    let rpc = Rpc::new(&sim);
    let payee = key("rpc queue full payee");
    funded(&sim, &payee, 10 * XLM);
    for label in ["rpc queue full a", "rpc queue full b"] {
        let payer = key(label);
        let sequence = funded(&sim, &payer, 1_000 * XLM);
        let mut tx = Tx::new(public(&payer), sequence + 1);
        tx.operations = vec![payment(public(&payee), XLM); 100];
        tx.fee = 100 * 100;
        let envelope = signed(&tx, sim.network_id(), &[&payer]);
        assert_eq!(rpc.send(&envelope).await["status"], "PENDING");
    }
    let (third, third_hash, _) = payment_bidding(&sim, "rpc queue full c", &payee, 10_000);
    let answer = rpc.send(&third).await;
    assert_eq!(answer["status"], "TRY_AGAIN_LATER", "{answer}");
    assert_eq!(sim.queued(), 2);
    sim.close_ledger();
    assert_eq!(rpc.send(&third).await["status"], "PENDING", "room again");
    sim.close_ledger();
    assert_eq!(rpc.transaction(&third_hash).await["status"], "SUCCESS");
}

#[tokio::test]
async fn an_evicted_transaction_never_appears_and_is_refused_for_a_while() {
    let sim = start_with(SimConfig {
        queue_ledgers: 2,
        ..small_ledgers()
    })
    .await;
    let rpc = Rpc::new(&sim);
    let payee = key("rpc evicted payee");
    funded(&sim, &payee, 10 * XLM);
    let (envelope, hash, _) = payment_bidding(&sim, "rpc evicted payer", &payee, 100);
    let first_ledger = sim.ledger_sequence();
    // Other parties fill every ledger with higher bids (the queue still has room).
    sim.set_surge(100, 500);
    assert_eq!(rpc.send(&envelope).await["status"], "PENDING");
    assert!(sim.close_ledger().applied.is_empty());
    assert_eq!(sim.close_ledger().evicted, vec![hash]);

    assert_eq!(
        rpc.send(&envelope).await["status"],
        "TRY_AGAIN_LATER",
        "core bans it"
    );
    sim.set_surge(0, 0);
    for _ in 0..3 {
        sim.close_ledger();
    }
    assert_eq!(rpc.transaction(&hash).await["status"], "NOT_FOUND");
    let page = rpc
        .result("getTransactions", json!({ "startLedger": first_ledger }))
        .await;
    let listed = page["transactions"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"));
    assert!(
        listed.iter().all(|tx| tx["txHash"] != hash.to_hex()),
        "{page}"
    );
    assert_eq!(sim.applications(hash), 0);
}
