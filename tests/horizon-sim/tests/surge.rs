//! Surge pricing as stellar-core does it: a per-ledger operation capacity; past it, the highest
//! bids per operation win and everyone included pays the clearing price; one queued
//! transaction per account, replaced only by a fee bump bidding 10× the rate; transactions left
//! out of a few ledgers are evicted (Horizon's synchronous submitter then gets 504
//! `transaction_submission_timeout` with `extras.hash` at its deadline); a full queue refuses a
//! low bid with `tx_insufficient_fee` whose `fee_charged` is the fee that would have been enough.

mod common;

use std::time::Duration;

use common::*;
use horizon_sim::{HorizonSim, SimConfig};
use serde_json::json;
use signer_testkit::stellar::payment;

fn fee_charged(sim: &HorizonSim, hash: horizon_sim::TxHash) -> i64 {
    sim.state()
        .transactions
        .iter()
        .find(|t| t.hash == hash)
        .map(|t| t.fee_charged)
        .unwrap_or_else(|| panic!("{hash} not applied"))
}

#[tokio::test]
async fn past_capacity_the_highest_bids_win_and_pay_the_clearing_price() {
    let sim = start_with(small_ledgers()).await;
    let horizon = Horizon::new(&sim);
    let payee = key("surge payee");
    funded(&sim, &payee, 10 * XLM);
    let (high, high_hash, _) = payment_bidding(&sim, "surge high", &payee, 2_000);
    let (middle, middle_hash, _) = payment_bidding(&sim, "surge middle", &payee, 1_000);
    let (low, low_hash, _) = payment_bidding(&sim, "surge low", &payee, 100);
    // Other parties want 98 of the 100 operations at 500 stroops: 101 wanted.
    sim.set_surge(98, 500);
    for envelope in [&low, &middle, &high] {
        assert_eq!(horizon.submit_async(envelope).await.status, 201);
    }

    let closed = sim.close_ledger();
    assert_eq!(closed.applied.len(), 2, "{closed:?}");
    assert!(closed.applied.contains(&high_hash) && closed.applied.contains(&middle_hash));
    assert_eq!(closed.still_queued, 1, "the lowest bid waits");
    assert_eq!(
        fee_charged(&sim, high_hash),
        500,
        "the clearing price, not the bid"
    );
    assert_eq!(fee_charged(&sim, middle_hash), 500);
    let stats = horizon.get("/fee_stats").await.body;
    assert_eq!(stats["ledger_capacity_usage"], "1.00");
    assert_eq!(stats["fee_charged"]["p50"], "500");
    assert_eq!(stats["max_fee"]["max"], "2000");

    // The surge ends: the low bid gets in at the base fee.
    sim.set_surge(0, 0);
    let closed = sim.close_ledger();
    assert_eq!(closed.applied, vec![low_hash]);
    assert_eq!(fee_charged(&sim, low_hash), 100);
    assert_eq!(sim.balance(account(&payee)), Some(13 * XLM));
}

#[tokio::test]
async fn an_outbid_transaction_is_evicted_and_its_synchronous_submitter_gets_a_submission_timeout()
{
    let sim = start_with(SimConfig {
        queue_ledgers: 2,
        submission_timeout: Duration::from_secs(2),
        ..small_ledgers()
    })
    .await;
    let horizon = Horizon::new(&sim);
    let payee = key("evicted payee");
    funded(&sim, &payee, 10 * XLM);
    let (envelope, hash, tx) = payment_bidding(&sim, "evicted payer", &payee, 100);
    let payer = horizon_sim::AccountKey(tx.source);
    let sequence = sim.sequence(payer);
    // Other parties fill every ledger with higher bids (the queue still has room).
    sim.set_surge(100, 500);

    let waiting = {
        let horizon = horizon.clone();
        let envelope = envelope.clone();
        tokio::spawn(async move { horizon.submit(&envelope).await })
    };
    sim.wait_for_queued(1, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(sim.close_ledger().applied.is_empty());
    let second = sim.close_ledger();
    assert_eq!(second.evicted, vec![hash], "left out of 2 ledgers");
    assert_eq!(sim.queued(), 0);

    let reply = waiting.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, 504);
    assert!(reply.content_type.starts_with("application/problem+json"));
    assert_eq!(reply.problem_type(), "transaction_submission_timeout");
    assert_eq!(reply.body["title"], "Transaction Submission Timeout");
    assert_eq!(reply.body["extras"]["hash"], hash.to_hex());
    assert_eq!(reply.body["extras"]["envelope_xdr"], envelope);
    assert_eq!(sim.applications(hash), 0);
    assert_eq!(sim.sequence(payer), sequence, "nothing used");

    // Core bans an evicted transaction for a while.
    let again = horizon.submit_async(&envelope).await;
    assert_eq!(again.status, 503);
    assert_eq!(again.body["tx_status"], "TRY_AGAIN_LATER");
}

#[tokio::test]
async fn a_full_queue_refuses_a_low_bid_with_the_fee_that_would_have_been_enough() {
    let sim = start_with(small_ledgers()).await;
    let horizon = Horizon::new(&sim);
    let payee = key("full queue payee");
    funded(&sim, &payee, 10 * XLM);
    let (low, low_hash, _) = payment_bidding(&sim, "full queue low", &payee, 500);
    // Two ledgers' worth of other parties' operations at 500: the queue is full.
    let set = horizon
        .post_json(
            "/_sim/faults",
            &json!({ "surge_operations": 200, "surge_fee": 500 }),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);

    let refused = horizon.submit_async(&low).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["tx_status"], "ERROR");
    let result = decode_result(&refused.body["error_result_xdr"]);
    assert_eq!(
        result.fee_charged, 501,
        "one stroop per operation over the surge"
    );
    assert!(matches!(
        result.result,
        stellar_xdr::TransactionResultResult::TxInsufficientFee
    ));
    let sync = horizon.submit(&low).await;
    assert_eq!(sync.status, 400);
    assert_eq!(sync.transaction_code(), "tx_insufficient_fee");
    assert_eq!(
        decode_result(&sync.body["extras"]["result_xdr"]).fee_charged,
        501
    );
    assert_eq!(sim.queued(), 0);
    assert_eq!(sim.applications(low_hash), 0);

    // Bidding what it said is enough gets in, at the clearing price.
    let (enough, enough_hash, _) = payment_bidding(&sim, "full queue enough", &payee, 501);
    assert_eq!(horizon.submit_async(&enough).await.status, 201);
    let closed = sim.close_ledger();
    assert_eq!(closed.applied, vec![enough_hash]);
    assert_eq!(fee_charged(&sim, enough_hash), 500);
}

#[tokio::test]
async fn one_queued_transaction_per_account_replaced_only_by_a_fee_bump_bidding_ten_times() {
    let sim = start_with(small_ledgers()).await;
    let horizon = Horizon::new(&sim);
    let payee = key("replace payee");
    funded(&sim, &payee, 10 * XLM);
    let (original, original_hash, tx) = payment_bidding(&sim, "replace payer", &payee, 100);
    let payer = key("replace payer");
    sim.set_surge(100, 500);
    let waiting = {
        let horizon = horizon.clone();
        let envelope = original.clone();
        tokio::spawn(async move { horizon.submit(&envelope).await })
    };
    sim.wait_for_queued(1, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Another transaction from the account, even with the same sequence number: later.
    let mut other = tx.clone();
    other.fee = 10_000;
    other.operations = vec![payment(public(&payee), 2 * XLM)];
    let other = signed(&other, sim.network_id(), &[&payer]);
    assert_eq!(
        horizon.submit_async(&other).await.body["tx_status"],
        "TRY_AGAIN_LATER"
    );

    // A fee bump of it must bid 10× the rate: 10 × 100 per operation, over 2 "operations".
    let low_bump = signed_fee_bump(&tx, &payer, 1_999, sim.network_id(), &[&payer], &[&payer]);
    let refused = horizon.submit_async(&low_bump).await;
    assert_eq!(refused.body["tx_status"], "ERROR", "{}", refused.body);
    assert_eq!(
        decode_result(&refused.body["error_result_xdr"]).fee_charged,
        2_000
    );
    let bump = signed_fee_bump(&tx, &payer, 2_000, sim.network_id(), &[&payer], &[&payer]);
    let bump_hash = hash_of(&bump, sim.network_id());
    assert_eq!(horizon.submit_async(&bump).await.status, 201);
    assert_eq!(sim.queued(), 1, "replaced, not added");

    let closed = sim.close_ledger();
    assert_eq!(closed.applied, vec![bump_hash]);
    assert_eq!(
        fee_charged(&sim, bump_hash),
        1_000,
        "2 × the clearing price of 500"
    );
    assert_eq!(
        sim.applications(original_hash),
        1,
        "the inner transaction, once"
    );
    assert_eq!(sim.balance(account(&payee)), Some(11 * XLM));
    // The original's submitter finds it applied, inside the fee bump, as Horizon would.
    let reply = waiting.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["hash"], original_hash.to_hex());
    assert_eq!(reply.body["ledger"], closed.sequence);
}
