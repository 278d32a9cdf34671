//! Submitting transactions over HTTP: what lands on the ledger, what is refused and with which
//! result code, and what each refusal leaves unchanged.

mod common;

use common::*;
use horizon_sim::HorizonSim;
use sha2::{Digest, Sha256};
use signer_testkit::stellar::{Tx, create_account, payment, payment_to_muxed, set_home_domain};
use stellar_xdr::{InnerTransactionResultResult, TransactionResultResult};

#[tokio::test]
async fn a_payment_moves_balances_and_is_served_by_hash() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let p = Pair::new(&sim, "payment", 100 * XLM);
    let envelope = p.next_payment(&sim, 25 * XLM);
    let hash = hash_of(&envelope, sim.network_id());

    let reply = submit_closing(&sim, &horizon, &envelope).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = &reply.body;
    assert_eq!(body["hash"], hash.to_hex());
    assert_eq!(body["id"], hash.to_hex());
    assert_eq!(body["successful"], true);
    assert_eq!(body["ledger"], sim.ledger_sequence());
    assert_eq!(body["envelope_xdr"], envelope.as_str());
    assert_eq!(body["fee_charged"], "100");
    assert_eq!(body["max_fee"], "100");
    assert_eq!(body["operation_count"], 1);
    assert_eq!(body["source_account"], account(&p.alice).address());
    assert_eq!(body["fee_account"], account(&p.alice).address());
    assert_eq!(
        body["source_account_sequence"],
        (p.alice_sequence + 1).to_string()
    );
    assert_eq!(body["memo_type"], "none");
    assert_eq!(body["signatures"].as_array().map(Vec::len), Some(1));
    assert!(body["preconditions"]["timebounds"]["max_time"].is_string());
    assert!(body["fee_meta_xdr"].as_str().is_some_and(|x| !x.is_empty()));
    let result = decode_result(&body["result_xdr"]);
    assert_eq!(result.fee_charged, 100);
    assert!(matches!(
        result.result,
        TransactionResultResult::TxSuccess(_)
    ));

    assert_eq!(sim.balance(account(&p.alice)), Some(75 * XLM - 100));
    assert_eq!(sim.balance(account(&p.bob)), Some(35 * XLM));
    assert_eq!(sim.sequence(account(&p.alice)), Some(p.alice_sequence + 1));
    assert_eq!(sim.applications(hash), 1);
    assert_eq!(sim.ledger_of(hash), Some(sim.ledger_sequence()));

    let fetched = horizon.transaction(&hash).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["hash"], body["hash"]);
    assert_eq!(fetched.body["ledger"], body["ledger"]);
    assert_eq!(fetched.body["result_xdr"], body["result_xdr"]);
    assert_eq!(
        fetched.body["_links"]["self"]["href"],
        format!("{}/transactions/{hash}", sim.url())
    );

    let account_json = horizon.account(&account(&p.alice)).await.body;
    assert_eq!(account_json["balances"][0]["balance"], "74.9999900");
    assert_eq!(account_json["sequence_ledger"], sim.ledger_sequence());
}

#[tokio::test]
async fn the_same_transaction_twice_is_applied_once() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let p = Pair::new(&sim, "twice", 100 * XLM);
    let envelope = p.next_payment(&sim, XLM);
    let hash = hash_of(&envelope, sim.network_id());
    let first = submit_closing(&sim, &horizon, &envelope).await;
    assert_eq!(first.status, 200);

    // Horizon answers a synchronous resubmission from its history: the original result.
    let again = horizon.submit(&envelope).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["ledger"], first.body["ledger"]);
    // Core itself (the async endpoint) sees a used sequence number.
    let core = horizon.submit_async(&envelope).await;
    assert_eq!(core.status, 400);
    assert_eq!(core.body["tx_status"], "ERROR");
    let result = decode_result(&core.body["error_result_xdr"]);
    assert!(matches!(result.result, TransactionResultResult::TxBadSeq));

    sim.close_ledger();
    assert_eq!(sim.applications(hash), 1);
    assert_eq!(sim.balance(account(&p.bob)), Some(11 * XLM));
    assert_eq!(sim.applied_from(account(&p.alice)).len(), 1);
}

/// Submits and expects a transaction-level refusal that changes nothing.
async fn expect_refusal(sim: &HorizonSim, horizon: &Horizon, envelope: &str, code: &str, p: &Pair) {
    let alice_before = sim.balance(account(&p.alice));
    let sequence_before = sim.sequence(account(&p.alice));
    let bob_before = sim.balance(account(&p.bob));
    let applied_before = sim.applied_count();
    let reply = horizon.submit(envelope).await;
    assert_eq!(reply.status, 400, "{code}: {}", reply.body);
    assert_eq!(reply.problem_type(), "transaction_failed");
    assert_eq!(reply.body["title"], "Transaction Failed");
    assert_eq!(reply.transaction_code(), code);
    assert_eq!(reply.body["extras"]["envelope_xdr"], envelope);
    let result = decode_result(&reply.body["extras"]["result_xdr"]);
    assert_eq!(
        horizon_sim::results::outer_code_name(&result.result),
        code,
        "result_xdr carries the same code"
    );
    assert_eq!(sim.queued(), 0, "{code}: nothing queued");
    sim.close_ledger();
    assert_eq!(
        sim.balance(account(&p.alice)),
        alice_before,
        "{code}: no fee"
    );
    assert_eq!(
        sim.sequence(account(&p.alice)),
        sequence_before,
        "{code}: no sequence"
    );
    assert_eq!(sim.balance(account(&p.bob)), bob_before);
    assert_eq!(sim.applied_count(), applied_before);
    let hash = hash_of(envelope, sim.network_id());
    assert_eq!(horizon.transaction(&hash).await.status, 404);
}

#[tokio::test]
async fn transaction_level_rejections_have_their_codes_and_change_nothing() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let network = sim.network_id();
    let p = Pair::new(&sim, "rejections", 100 * XLM);
    let next = p.alice_sequence + 1;

    let public_network: [u8; 32] =
        Sha256::digest(b"Public Global Stellar Network ; September 2015").into();
    let now = sim.ledger_close_time();
    let with = |change: &dyn Fn(&mut Tx)| {
        let mut tx = p.payment(next, XLM);
        change(&mut tx);
        signed(&tx, network, &[&p.alice])
    };
    let cases = [
        // A used sequence number (Horizon's own check).
        (
            signed(&p.payment(next - 1, XLM), network, &[&p.alice]),
            "tx_bad_seq",
        ),
        // Signed by the wrong key, for another network, not at all.
        (
            signed(&p.payment(next, XLM), network, &[&p.bob]),
            "tx_bad_auth",
        ),
        (
            signed(&p.payment(next, XLM), public_network, &[&p.alice]),
            "tx_bad_auth",
        ),
        (signed(&p.payment(next, XLM), network, &[]), "tx_bad_auth"),
        // An extra signature nobody asked for.
        (
            signed(&p.payment(next, XLM), network, &[&p.alice, &p.bob]),
            "tx_bad_auth_extra",
        ),
        // Below the base fee.
        (with(&|tx| tx.fee = 99), "tx_insufficient_fee"),
        // Time bounds against the ledger clock.
        (
            with(&|tx| tx.time_bounds = Some((0, now - 1))),
            "tx_too_late",
        ),
        (
            with(&|tx| tx.time_bounds = Some((now + 3_600, 0))),
            "tx_too_early",
        ),
        // No operations.
        (with(&|tx| tx.operations.clear()), "tx_missing_operation"),
    ];
    for (envelope, code) in &cases {
        expect_refusal(&sim, &horizon, envelope, code, &p).await;
    }

    // Nothing above consumed the sequence number: the right transaction still goes through.
    let good = signed(&p.payment(next, XLM), network, &[&p.alice]);
    assert_eq!(submit_closing(&sim, &horizon, &good).await.status, 200);
}

#[tokio::test]
async fn unknown_source_and_unaffordable_fee_are_refused() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let network = sim.network_id();
    // Alice holds exactly her reserve (1 XLM): she cannot pay a fee.
    let p = Pair::new(&sim, "no funds", XLM);
    let tx = p.payment(p.alice_sequence + 1, 1);
    expect_refusal(
        &sim,
        &horizon,
        &signed(&tx, network, &[&p.alice]),
        "tx_insufficient_balance",
        &p,
    )
    .await;

    let ghost = key("no funds ghost");
    let mut tx = Tx::new(public(&ghost), 1);
    tx.operations = vec![payment(public(&p.bob), 1)];
    let reply = horizon.submit(&signed(&tx, network, &[&ghost])).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.transaction_code(), "tx_no_source_account");
    let async_reply = horizon.submit_async(&signed(&tx, network, &[&ghost])).await;
    assert_eq!(async_reply.status, 400);
    let result = decode_result(&async_reply.body["error_result_xdr"]);
    assert!(matches!(
        result.result,
        TransactionResultResult::TxNoAccount
    ));
}

#[tokio::test]
async fn a_failed_transaction_still_costs_its_fee_and_sequence_number() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let network = sim.network_id();
    let p = Pair::new(&sim, "underfunded", 3 * XLM);
    // 3 XLM with a 1 XLM reserve: 2.5 XLM is more than she can spend.
    let envelope = signed(
        &p.payment(p.alice_sequence + 1, 25 * XLM / 10),
        network,
        &[&p.alice],
    );
    let hash = hash_of(&envelope, network);
    let reply = submit_closing(&sim, &horizon, &envelope).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.problem_type(), "transaction_failed");
    assert_eq!(reply.transaction_code(), "tx_failed");
    assert_eq!(reply.operation_codes(), vec!["op_underfunded"]);
    let result = decode_result(&reply.body["extras"]["result_xdr"]);
    assert_eq!(result.fee_charged, 100, "the fee actually charged");

    assert_eq!(sim.balance(account(&p.alice)), Some(3 * XLM - 100));
    assert_eq!(sim.sequence(account(&p.alice)), Some(p.alice_sequence + 1));
    assert_eq!(sim.balance(account(&p.bob)), Some(10 * XLM));
    assert_eq!(sim.applications(hash), 1);
    let fetched = horizon.transaction(&hash).await;
    assert_eq!(
        fetched.status, 200,
        "failed transactions are in the history"
    );
    assert_eq!(fetched.body["successful"], false);
    assert_eq!(fetched.body["fee_charged"], "100");

    // Paying an account that does not exist.
    let mut tx = p.payment(p.alice_sequence + 2, 1);
    tx.operations = vec![payment(public(&key("underfunded nobody")), XLM / 10)];
    let reply = submit_closing(&sim, &horizon, &signed(&tx, network, &[&p.alice])).await;
    assert_eq!(reply.operation_codes(), vec!["op_no_destination"]);
    assert_eq!(sim.sequence(account(&p.alice)), Some(p.alice_sequence + 2));
}

#[tokio::test]
async fn create_account_applies_and_fails_with_core_codes() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let network = sim.network_id();
    let p = Pair::new(&sim, "create", 100 * XLM);
    let newcomer = key("create newcomer");
    let mut sequence = p.alice_sequence;
    let mut create = |destination: [u8; 32], stroops: i64| {
        sequence += 1;
        let mut tx = Tx::new(public(&p.alice), sequence);
        tx.operations = vec![create_account(destination, stroops)];
        signed(&tx, network, &[&p.alice])
    };
    let exists = submit_closing(&sim, &horizon, &create(public(&p.bob), 5 * XLM)).await;
    assert_eq!(exists.operation_codes(), vec!["op_already_exists"]);
    let low = submit_closing(&sim, &horizon, &create(public(&newcomer), XLM / 2)).await;
    assert_eq!(low.operation_codes(), vec!["op_low_reserve"]);
    let broke = submit_closing(&sim, &horizon, &create(public(&newcomer), 1_000 * XLM)).await;
    assert_eq!(broke.operation_codes(), vec!["op_underfunded"]);
    assert_eq!(sim.balance(account(&newcomer)), None);
    let created = submit_closing(&sim, &horizon, &create(public(&newcomer), 5 * XLM)).await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(sim.balance(account(&newcomer)), Some(5 * XLM));
    assert_eq!(sim.balance(account(&p.alice)), Some(95 * XLM - 4 * 100));
}

#[tokio::test]
async fn a_muxed_destination_pays_its_account() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let p = Pair::new(&sim, "muxed", 100 * XLM);
    let mut tx = Tx::new(public(&p.alice), p.alice_sequence + 1);
    tx.operations = vec![payment_to_muxed(public(&p.bob), 42, 3 * XLM)];
    let reply = submit_closing(&sim, &horizon, &signed(&tx, sim.network_id(), &[&p.alice])).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(sim.balance(account(&p.bob)), Some(13 * XLM));
}

#[tokio::test]
async fn unsupported_operations_fail_with_op_not_supported_and_name_the_type() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let p = Pair::new(&sim, "unsupported", 100 * XLM);
    let mut tx = Tx::new(public(&p.alice), p.alice_sequence + 1);
    tx.operations = vec![payment(public(&p.bob), XLM), set_home_domain("example.com")];
    tx.fee = 200;
    let envelope = signed(&tx, sim.network_id(), &[&p.alice]);
    let reply = horizon.submit(&envelope).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.transaction_code(), "tx_failed");
    assert_eq!(
        reply.operation_codes(),
        vec!["op_success", "op_not_supported"]
    );
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("SetOptions"), "{detail}");
    // Refused before the ledger: nothing charged.
    sim.close_ledger();
    assert_eq!(sim.sequence(account(&p.alice)), Some(p.alice_sequence));
    assert_eq!(sim.balance(account(&p.alice)), Some(100 * XLM));
}

#[tokio::test]
async fn a_fee_bump_is_paid_by_its_fee_source_and_found_by_either_hash() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let network = sim.network_id();
    let p = Pair::new(&sim, "fee bump", 100 * XLM);
    let sponsor = key("fee bump sponsor");
    funded(&sim, &sponsor, 50 * XLM);
    let mut inner = p.payment(p.alice_sequence + 1, XLM);
    inner.fee = 0;
    let envelope = signed_fee_bump(&inner, &sponsor, 1_000, network, &[&p.alice], &[&sponsor]);
    let outer_hash = hash_of(&envelope, network);
    let inner_hash = inner_hash_of(&envelope, network);

    let reply = submit_closing(&sim, &horizon, &envelope).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["hash"], outer_hash.to_hex());
    assert_eq!(reply.body["fee_account"], account(&sponsor).address());
    assert_eq!(reply.body["source_account"], account(&p.alice).address());
    assert_eq!(
        reply.body["fee_charged"], "200",
        "base fee × (1 operation + 1)"
    );
    assert_eq!(reply.body["max_fee"], "1000");
    assert_eq!(
        reply.body["fee_bump_transaction"]["hash"],
        outer_hash.to_hex()
    );
    assert_eq!(reply.body["inner_transaction"]["hash"], inner_hash.to_hex());
    assert_eq!(reply.body["inner_transaction"]["max_fee"], "0");
    let result = decode_result(&reply.body["result_xdr"]);
    assert!(matches!(
        result.result,
        TransactionResultResult::TxFeeBumpInnerSuccess(_)
    ));

    assert_eq!(sim.balance(account(&sponsor)), Some(50 * XLM - 200));
    assert_eq!(sim.balance(account(&p.alice)), Some(99 * XLM));
    assert_eq!(sim.sequence(account(&p.alice)), Some(p.alice_sequence + 1));
    let by_inner = horizon.transaction(&inner_hash).await;
    assert_eq!(by_inner.status, 200);
    assert_eq!(by_inner.body["hash"], inner_hash.to_hex());
    assert_eq!(sim.applications(inner_hash), 1);
    assert_eq!(sim.applications(outer_hash), 1);
}

#[tokio::test]
async fn fee_bump_signatures_are_checked_on_both_levels() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let network = sim.network_id();
    let p = Pair::new(&sim, "fee bump auth", 100 * XLM);
    let sponsor = key("fee bump auth sponsor");
    funded(&sim, &sponsor, 50 * XLM);
    let inner = p.payment(p.alice_sequence + 1, XLM);

    // The outer transaction signed by the inner source instead of the fee source.
    let envelope = signed_fee_bump(&inner, &sponsor, 1_000, network, &[&p.alice], &[&p.alice]);
    expect_refusal(&sim, &horizon, &envelope, "tx_bad_auth", &p).await;

    // The inner transaction signed by the fee source instead of its source.
    let envelope = signed_fee_bump(&inner, &sponsor, 1_000, network, &[&sponsor], &[&sponsor]);
    expect_refusal(&sim, &horizon, &envelope, "tx_fee_bump_inner_failed", &p).await;
    let reply = horizon.submit(&envelope).await;
    assert_eq!(
        reply.body["extras"]["result_codes"]["inner_transaction"],
        "tx_bad_auth"
    );
    let result = decode_result(&reply.body["extras"]["result_xdr"]);
    let TransactionResultResult::TxFeeBumpInnerFailed(pair) = result.result else {
        panic!("a fee bump result: {:?}", result.result);
    };
    assert!(matches!(
        pair.result.result,
        InnerTransactionResultResult::TxBadAuth
    ));
    assert_eq!(sim.balance(account(&sponsor)), Some(50 * XLM));
}

#[tokio::test]
async fn malformed_submissions_are_refused_like_horizon() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);

    let garbage = horizon.submit("bm90IGFuIGVudmVsb3Bl").await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.problem_type(), "transaction_malformed");
    assert_eq!(garbage.body["title"], "Transaction Malformed");
    assert_eq!(
        garbage.body["extras"]["envelope_xdr"],
        "bm90IGFuIGVudmVsb3Bl"
    );

    let not_base64 = horizon.submit_async("%%%").await;
    assert_eq!(not_base64.status, 400);
    assert_eq!(not_base64.problem_type(), "transaction_malformed");

    let missing = horizon.post_form("/transactions", &[("other", "x")]).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.problem_type(), "bad_request");
    assert_eq!(missing.body["extras"]["invalid_field"], "tx");

    let json = horizon
        .send_raw(
            "POST",
            "/transactions",
            "application/json",
            r#"{"tx":"AAAA"}"#,
        )
        .await;
    assert_eq!(json.status, 415);
    assert_eq!(json.problem_type(), "unsupported_media_type");

    let bad_hash = horizon.get("/transactions/1234").await;
    assert_eq!(bad_hash.status, 400);
    assert_eq!(bad_hash.body["extras"]["invalid_field"], "tx_id");
    assert_eq!(sim.queued(), 0);
}

#[tokio::test]
async fn async_submission_answers_before_the_ledger_with_cores_statuses() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let network = sim.network_id();
    let p = Pair::new(&sim, "async", 100 * XLM);
    let envelope = signed(&p.payment(p.alice_sequence + 1, XLM), network, &[&p.alice]);
    let hash = hash_of(&envelope, network);

    let pending = horizon.submit_async(&envelope).await;
    assert_eq!(pending.status, 201);
    assert_eq!(pending.body["tx_status"], "PENDING");
    assert_eq!(pending.body["hash"], hash.to_hex());
    assert!(pending.body.get("error_result_xdr").is_none());
    assert_eq!(sim.queued(), 1);
    assert_eq!(
        horizon.transaction(&hash).await.status,
        404,
        "not in a ledger yet"
    );

    let duplicate = horizon.submit_async(&envelope).await;
    assert_eq!(duplicate.status, 409);
    assert_eq!(duplicate.body["tx_status"], "DUPLICATE");

    // Another transaction from the same account while one is queued.
    let rival = signed(
        &p.payment(p.alice_sequence + 1, 2 * XLM),
        network,
        &[&p.alice],
    );
    let later = horizon.submit_async(&rival).await;
    assert_eq!(later.status, 503);
    assert_eq!(later.body["tx_status"], "TRY_AGAIN_LATER");

    let closed = sim.close_ledger();
    assert_eq!(closed.applied, vec![hash]);
    let fetched = horizon.transaction(&hash).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["ledger"], closed.sequence);
    assert_eq!(sim.balance(account(&p.bob)), Some(11 * XLM));

    // The rival's sequence number is now used.
    let error = horizon.submit_async(&rival).await;
    assert_eq!(error.status, 400);
    assert_eq!(error.body["tx_status"], "ERROR");
    let result = decode_result(&error.body["error_result_xdr"]);
    assert!(matches!(result.result, TransactionResultResult::TxBadSeq));
}

#[tokio::test]
async fn a_queued_transaction_whose_time_runs_out_is_dropped_at_the_close() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let network = sim.network_id();
    let p = Pair::new(&sim, "expiry", 100 * XLM);
    let now = sim.ledger_close_time();
    let mut tx = p.payment(p.alice_sequence + 1, XLM);
    tx.time_bounds = Some((0, now + 30));
    let envelope = signed(&tx, network, &[&p.alice]);
    let hash = hash_of(&envelope, network);
    assert_eq!(horizon.submit_async(&envelope).await.status, 201);

    let closed = sim.close_ledger_at(now + 31);
    assert_eq!(closed.dropped, vec![hash]);
    assert!(closed.applied.is_empty());
    assert_eq!(sim.queued(), 0);
    assert_eq!(horizon.transaction(&hash).await.status, 404);
    assert_eq!(sim.sequence(account(&p.alice)), Some(p.alice_sequence));
    // And now it is too late for good.
    assert_eq!(
        horizon.submit(&envelope).await.transaction_code(),
        "tx_too_late"
    );
}

#[tokio::test]
async fn a_synchronous_submission_answers_after_the_ledger_closes() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let p = Pair::new(&sim, "sync waits", 100 * XLM);
    let envelope = p.next_payment(&sim, XLM);
    let waiting = {
        let horizon = horizon.clone();
        let envelope = envelope.clone();
        tokio::spawn(async move { horizon.submit(&envelope).await })
    };
    sim.wait_for_queued(1, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!waiting.is_finished(), "no answer before the ledger closes");
    let closed = sim.close_ledger();
    let reply = waiting.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["ledger"], closed.sequence);
}

#[tokio::test]
async fn ledgers_close_on_the_timer() {
    let sim = start_with(horizon_sim::SimConfig::with_ledger_interval(
        std::time::Duration::from_millis(50),
    ))
    .await;
    let horizon = Horizon::new(&sim);
    let p = Pair::new(&sim, "timer", 100 * XLM);
    let start_ledger = sim.ledger_sequence();
    let envelope = p.next_payment(&sim, XLM);
    // Nobody closes ledgers by hand here.
    let reply = horizon.submit(&envelope).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(sim.ledger_sequence() > start_ledger);
    sim.wait_for_ledger(sim.ledger_sequence() + 2, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}
