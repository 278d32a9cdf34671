//! What an RPC node knows, under the faults that change it: a lagging node answers every
//! method from its older ledger and says so in `latestLedger`; a late ingestion holds a node's
//! `latestLedger` back instead of hiding a transaction from a ledger it reports (RPC ingests
//! whole ledgers: `NOT_FOUND` next to a `latestLedger` is true of every ledger up to it); a
//! pruned history moves `oldestLedger` up; other parties' sequence numbers and merges show in
//! `getLedgerEntries`.

mod common;

use common::*;
use horizon_sim::{HorizonSim, TxHash};
use serde_json::json;

/// Alice pays Bob 1 XLM through `sendTransaction`, then a ledger closes; returns the hash and
/// the ledger it was applied in.
async fn pay_once(sim: &HorizonSim, rpc: &Rpc, pair: &Pair) -> (TxHash, u32) {
    let envelope = pair.next_payment(sim, XLM);
    let hash = hash_of(&envelope, sim.network_id());
    assert_eq!(rpc.send(&envelope).await["status"], "PENDING");
    let closed = sim.close_ledger();
    assert_eq!(closed.applied, vec![hash]);
    (hash, closed.sequence)
}

#[tokio::test]
async fn a_lagging_node_answers_every_method_from_its_older_ledger() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc lagging", 100 * XLM);
    let alice = account(&pair.alice);
    sim.set_node_lags(&[2]);
    // A node that starts lagging stalls until it is as far behind as it should be.
    sim.close_ledger();
    sim.close_ledger();
    let (hash, applied_in) = pay_once(&sim, &rpc, &pair).await;
    let behind = applied_in - 2;

    let (entry, latest) = rpc.account(&alice).await;
    assert_eq!(
        latest, behind,
        "getLedgerEntries' latestLedger is the node's"
    );
    let entry = entry.unwrap_or_else(|| panic!("alice existed then"));
    assert_eq!(entry.seq_num.0, pair.alice_sequence, "the stale sequence");
    assert_eq!(entry.balance, 100 * XLM);
    let missing = rpc.transaction(&hash).await;
    assert_eq!(missing["status"], "NOT_FOUND");
    assert_eq!(as_u32(&missing["latestLedger"]), behind);
    assert_eq!(
        as_u32(&rpc.result("getLatestLedger", json!(null)).await["sequence"]),
        behind
    );
    assert_eq!(
        as_u32(&rpc.result("getHealth", json!(null)).await["latestLedger"]),
        behind
    );
    assert_eq!(
        as_u32(&rpc.result("getFeeStats", json!(null)).await["latestLedger"]),
        behind
    );
    let error = rpc
        .error("getTransactions", json!({ "startLedger": applied_in }))
        .await;
    assert_eq!(error["code"], -32600, "the node has no such ledger yet");
    let other = pair.next_payment(&sim, 2 * XLM);
    let sent = rpc.send(&other).await;
    assert_eq!(
        as_u32(&sent["latestLedger"]),
        behind,
        "a lagging node's submission answer says where it is"
    );

    sim.close_ledger();
    sim.close_ledger();
    let found = rpc.transaction(&hash).await;
    assert_eq!(found["status"], "SUCCESS");
    assert_eq!(as_u32(&found["latestLedger"]), applied_in);
    let (entry, latest) = rpc.account(&alice).await;
    assert_eq!(latest, applied_in);
    assert_eq!(
        entry.map(|e| e.seq_num.0),
        Some(pair.alice_sequence + 1),
        "caught up"
    );
}

#[tokio::test]
async fn nodes_take_turns_and_every_answer_is_true_of_the_ledger_it_reports() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc round robin", 100 * XLM);
    sim.set_node_lags(&[0, 3]);
    let (hash, applied_in) = pay_once(&sim, &rpc, &pair).await;
    for _ in 0..3 {
        sim.close_ledger();
    }
    let mut latest_seen = Vec::new();
    for _ in 0..4 {
        let answer = rpc.transaction(&hash).await;
        let latest = as_u32(&answer["latestLedger"]);
        let expected = if latest >= applied_in {
            "SUCCESS"
        } else {
            "NOT_FOUND"
        };
        assert_eq!(answer["status"], expected, "at ledger {latest}: {answer}");
        latest_seen.push(latest);
    }
    latest_seen.sort_unstable();
    latest_seen.dedup();
    assert_eq!(
        latest_seen,
        vec![applied_in, applied_in + 3],
        "both nodes served"
    );
}

#[tokio::test]
async fn a_late_ingestion_holds_latest_ledger_back_instead_of_hiding_the_transaction() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "rpc late", 100 * XLM);
    sim.delay_ingestion(2);
    let (hash, applied_in) = pay_once(&sim, &rpc, &pair).await;

    for _ in 0..2 {
        let answer = rpc.transaction(&hash).await;
        assert_eq!(answer["status"], "NOT_FOUND");
        assert_eq!(
            as_u32(&answer["latestLedger"]),
            applied_in - 1,
            "the node has not ingested the ledger that applied it"
        );
        assert_eq!(
            as_u32(&rpc.result("getLatestLedger", json!(null)).await["sequence"]),
            applied_in - 1
        );
        // Horizon, meanwhile, reports the ledger without the transaction.
        let horizon_answer = horizon.transaction(&hash).await;
        assert_eq!(horizon_answer.status, 404);
        assert!(horizon_answer.latest_ledger() >= applied_in);
        sim.close_ledger();
    }
    let found = rpc.transaction(&hash).await;
    assert_eq!(found["status"], "SUCCESS");
    assert_eq!(as_u32(&found["latestLedger"]), applied_in + 2);
    // The core is not late: getLedgerEntries always showed the payment.
    let (entry, latest) = rpc.account(&account(&pair.alice)).await;
    assert_eq!(latest, applied_in + 2);
    assert_eq!(entry.map(|e| e.seq_num.0), Some(pair.alice_sequence + 1));
}

#[tokio::test]
async fn pruned_history_moves_oldest_ledger_up_and_older_ledgers_are_out_of_range() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc pruned", 100 * XLM);
    let (hash, applied_in) = pay_once(&sim, &rpc, &pair).await;
    sim.set_history_retention(3);
    sim.close_ledger();
    sim.close_ledger();
    let kept = rpc.transaction(&hash).await;
    assert_eq!(kept["status"], "SUCCESS", "3 ledgers kept");
    assert_eq!(as_u32(&kept["oldestLedger"]), applied_in);

    sim.close_ledger();
    let pruned = rpc.transaction(&hash).await;
    assert_eq!(pruned["status"], "NOT_FOUND");
    assert_eq!(as_u32(&pruned["oldestLedger"]), applied_in + 1);
    assert_eq!(as_u32(&pruned["latestLedger"]), applied_in + 3);
    assert_eq!(
        as_i64_string(&pruned["oldestLedgerCloseTime"]),
        i64::try_from(sim.ledger_close_time()).unwrap_or(0),
        "ledgers closed by hand share close times here"
    );
    let health = rpc.result("getHealth", json!(null)).await;
    assert_eq!(as_u32(&health["oldestLedger"]), applied_in + 1);
    assert_eq!(health["ledgerRetentionWindow"], 3);

    let error = rpc
        .error("getTransactions", json!({ "startLedger": applied_in }))
        .await;
    assert_eq!(error["code"], -32600);
    assert_eq!(
        error["message"],
        format!(
            "start ledger ({applied_in}) must be between the oldest ledger: {} and the latest ledger: {} for this rpc instance",
            applied_in + 1,
            applied_in + 3
        )
    );
    let cursor_in_pruned_ledger = (i64::from(applied_in) << 32) | (1 << 12) | 1;
    let error = rpc
        .error(
            "getTransactions",
            json!({ "pagination": { "cursor": cursor_in_pruned_ledger.to_string() } }),
        )
        .await;
    assert_eq!(error["code"], -32602);
    assert_eq!(
        error["message"],
        format!("database does not contain metadata for ledger: {applied_in}")
    );
    assert_eq!(sim.applications(hash), 1, "the ledger still has it");
}

#[tokio::test]
async fn other_parties_sequence_numbers_and_merges_show_in_get_ledger_entries() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc other parties", 100 * XLM);
    let (alice, bob) = (account(&pair.alice), account(&pair.bob));
    let envelope = pair.next_payment(&sim, XLM);
    let hash = hash_of(&envelope, sim.network_id());

    let other = sim
        .consume_sequence(alice)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rpc.send(&envelope).await["status"], "PENDING");
    let closed = sim.close_ledger();
    assert_eq!(
        closed.applied,
        vec![other],
        "the other signer's comes first"
    );
    let (entry, _) = rpc.account(&alice).await;
    let entry = entry.unwrap_or_else(|| panic!("alice exists"));
    assert_eq!(entry.seq_num.0, pair.alice_sequence + 1, "used by another");
    assert_eq!(entry.balance, 100 * XLM - 100, "only the other's fee");
    assert_eq!(
        rpc.transaction(&hash).await["status"],
        "NOT_FOUND",
        "ours was dropped and never appears"
    );
    assert_eq!(rpc.transaction(&other).await["status"], "SUCCESS");

    sim.merge_account(alice, bob)
        .unwrap_or_else(|e| panic!("{e}"));
    let (still, _) = rpc.account(&alice).await;
    assert!(still.is_some(), "gone at the next ledger");
    sim.close_ledger();
    let result = rpc.account_entries(&alice).await;
    assert_eq!(
        result["entries"],
        json!([]),
        "a merged account has no entry"
    );
    let (bob_entry, _) = rpc.account(&bob).await;
    assert_eq!(
        bob_entry.map(|e| e.balance),
        Some(10 * XLM + 100 * XLM - 100)
    );
}
