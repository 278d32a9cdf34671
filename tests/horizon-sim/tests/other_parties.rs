//! Other parties use the network too: another signer of a wallet's account takes its next
//! sequence number, a destination is merged away, Horizon prunes old history, and testnet's
//! friendbot lives apart behind a 307. `/accounts/{id}/transactions` (Horizon's paging: cursor,
//! order, limit, include_failed) shows who used a sequence number.

mod common;

use std::time::Duration;

use common::*;
use horizon_sim::SimConfig;
use serde_json::{Value, json};

fn records(reply: &Reply) -> Vec<Value> {
    reply.body["_embedded"]["records"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not a page: {}", reply.body))
}

#[tokio::test]
async fn another_signer_takes_the_next_sequence_and_the_queued_payment_fails_bad_seq() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "other signer", 100 * XLM);
    let (alice, bob) = (account(&pair.alice), account(&pair.bob));
    let envelope = pair.next_payment(&sim, XLM);
    let hash = hash_of(&envelope, sim.network_id());

    let other = sim
        .consume_sequence(alice)
        .unwrap_or_else(|e| panic!("{e}"));
    let waiting = {
        let horizon = horizon.clone();
        let envelope = envelope.clone();
        tokio::spawn(async move { horizon.submit(&envelope).await })
    };
    sim.wait_for_queued(1, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let closed = sim.close_ledger();
    assert_eq!(
        closed.applied,
        vec![other],
        "the other signer's comes first"
    );
    assert_eq!(closed.dropped, vec![hash]);

    let reply = waiting.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.transaction_code(), "tx_bad_seq");
    assert_eq!(sim.applications(hash), 0);
    assert_eq!(sim.sequence(alice), Some(pair.alice_sequence + 1));
    assert_eq!(sim.balance(alice), Some(100 * XLM - 100), "only its fee");
    assert_eq!(sim.balance(bob), Some(10 * XLM));
    let recorded = sim.applied_from(alice);
    assert_eq!(
        recorded.last().map(|t| t.operations.clone()),
        Some(vec![horizon_sim::AppliedOperation::Payment {
            source: None,
            destination: alice,
            amount: 1,
        }]),
        "what the ledger shows the other signer did"
    );

    // Who used it: the account's newest transaction.
    let newest = horizon
        .get(&format!(
            "/accounts/{alice}/transactions?order=desc&limit=1"
        ))
        .await;
    assert_eq!(newest.status, 200);
    assert!(newest.content_type.starts_with("application/hal+json"));
    let found = records(&newest);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["hash"], other.to_hex());
    assert_eq!(
        found[0]["source_account_sequence"],
        (pair.alice_sequence + 1).to_string()
    );
    assert_eq!(found[0]["fee_charged"], "100");

    // Over HTTP, the next one.
    let consumed = horizon
        .post_json(&format!("/_sim/accounts/{alice}/sequence"), &json!({}))
        .await;
    assert_eq!(consumed.status, 202, "{}", consumed.body);
    assert_eq!(
        consumed.body["sequence"],
        (pair.alice_sequence + 2).to_string()
    );
    sim.close_ledger();
    assert_eq!(sim.sequence(alice), Some(pair.alice_sequence + 2));
    let unknown = account(&key("nobody at all"));
    assert!(sim.consume_sequence(unknown).is_err());
    assert_eq!(
        horizon
            .post_json(&format!("/_sim/accounts/{unknown}/sequence"), &json!({}))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_destination_merged_away_is_gone_and_a_payment_to_it_fails_in_the_ledger() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "merged", 100 * XLM);
    let (alice, bob) = (account(&pair.alice), account(&pair.bob));
    let root = sim.root_account();
    let root_before = sim.balance(root).unwrap_or_default();

    let merged = horizon
        .send_raw(
            "DELETE",
            &format!("/_sim/accounts/{bob}"),
            "application/json",
            "",
        )
        .await;
    assert_eq!(merged.status, 202, "{}", merged.body);
    assert_eq!(merged.body["into"], root.address());
    assert_eq!(
        horizon.account(&bob).await.status,
        200,
        "gone at the next ledger"
    );
    sim.close_ledger();
    assert_eq!(horizon.account(&bob).await.status, 404);
    assert_eq!(sim.balance(root), Some(root_before + 10 * XLM));

    let envelope = pair.next_payment(&sim, XLM);
    let reply = submit_closing(&sim, &horizon, &envelope).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.transaction_code(), "tx_failed");
    assert_eq!(reply.operation_codes(), vec!["op_no_destination"]);
    assert_eq!(sim.balance(alice), Some(100 * XLM - 100));
    assert_eq!(sim.sequence(alice), Some(pair.alice_sequence + 1));
    assert!(sim.merge_account(bob, root).is_err(), "already gone");
}

#[tokio::test]
async fn pruned_history_answers_404_and_moves_the_elder_ledger() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "pruned", 100 * XLM);
    let alice = account(&pair.alice);
    let envelope = pair.next_payment(&sim, XLM);
    let hash = hash_of(&envelope, sim.network_id());
    let applied = submit_closing(&sim, &horizon, &envelope).await;
    assert_eq!(applied.status, 200);
    let applied_in = sim.ledger_of(hash).unwrap_or_default();

    sim.set_history_retention(2);
    sim.close_ledger();
    assert_eq!(
        horizon.transaction(&hash).await.status,
        200,
        "2 ledgers kept"
    );
    sim.close_ledger();
    assert_eq!(horizon.transaction(&hash).await.status, 404, "pruned");
    let root = horizon.get("/").await;
    assert_eq!(root.body["history_elder_ledger"], applied_in + 1);
    assert_eq!(root.body["history_latest_ledger"], applied_in + 2);
    let listed = horizon
        .get(&format!("/accounts/{alice}/transactions"))
        .await;
    assert!(records(&listed).is_empty());
    // Resubmitted, Horizon cannot find it any more: the sequence number is simply used.
    let again = horizon.submit(&envelope).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.transaction_code(), "tx_bad_seq");
    assert_eq!(sim.applications(hash), 1, "the ledger still has it once");

    sim.set_history_retention(0);
    assert_eq!(horizon.get("/").await.body["history_elder_ledger"], 1);
}

#[tokio::test]
async fn account_transactions_page_by_cursor_and_order_from_the_serving_node() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "paging", 100 * XLM);
    let (alice, bob) = (account(&pair.alice), account(&pair.bob));
    let mut hashes = Vec::new();
    for n in 1..=3 {
        let tx = pair.payment(pair.alice_sequence + n, XLM);
        let envelope = signed(&tx, sim.network_id(), &[&pair.alice]);
        assert_eq!(submit_closing(&sim, &horizon, &envelope).await.status, 200);
        hashes.push(hash_of(&envelope, sim.network_id()).to_hex());
    }
    // A failed one: a payment to an account that does not exist.
    let mut failing =
        signer_testkit::stellar::Tx::new(public(&pair.alice), pair.alice_sequence + 4);
    failing.operations = vec![signer_testkit::stellar::payment(
        public(&key("paging nobody")),
        XLM,
    )];
    let failing = signed(&failing, sim.network_id(), &[&pair.alice]);
    assert_eq!(submit_closing(&sim, &horizon, &failing).await.status, 400);
    let failed_hash = hash_of(&failing, sim.network_id()).to_hex();

    let hashes_of = |reply: &Reply| -> Vec<String> {
        records(reply)
            .iter()
            .map(|r| r["hash"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let first = horizon
        .get(&format!("/accounts/{alice}/transactions?limit=2"))
        .await;
    assert_eq!(hashes_of(&first), hashes[..2].to_vec());
    let next = first.body["_links"]["next"]["href"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches(&sim.url())
        .to_owned();
    let second = horizon.get(&next).await;
    assert_eq!(
        hashes_of(&second),
        hashes[2..].to_vec(),
        "failed ones left out"
    );
    let with_failed = horizon.get(&format!("{next}&include_failed=true")).await;
    assert_eq!(
        hashes_of(&with_failed),
        vec![hashes[2].clone(), failed_hash.clone()]
    );
    let newest_first = horizon
        .get(&format!("/accounts/{alice}/transactions?order=desc"))
        .await;
    let mut reversed = hashes.clone();
    reversed.reverse();
    assert_eq!(hashes_of(&newest_first), reversed);
    let payee = horizon.get(&format!("/accounts/{bob}/transactions")).await;
    assert_eq!(hashes_of(&payee), hashes, "the payee took part too");

    for bad in [
        "limit=0",
        "limit=201",
        "order=up",
        "cursor=abc",
        "include_failed=yes",
    ] {
        let reply = horizon
            .get(&format!("/accounts/{alice}/transactions?{bad}"))
            .await;
        assert_eq!(reply.status, 400, "{bad}");
        let field = bad.split('=').next().unwrap_or_default();
        assert_eq!(reply.body["extras"]["invalid_field"], field, "{bad}");
    }

    // A node one ledger behind has not seen the newest.
    sim.set_node_lags(&[1]);
    sim.close_ledger();
    sim.close_ledger();
    let lagging = horizon
        .get(&format!(
            "/accounts/{alice}/transactions?order=desc&limit=1&include_failed=true"
        ))
        .await;
    assert_eq!(lagging.latest_ledger(), sim.ledger_sequence() - 1);
    assert_eq!(hashes_of(&lagging), vec![failed_hash]);
}

#[tokio::test]
async fn friendbot_redirects_to_a_separate_friendbot_as_on_testnet() {
    let sim = start_with(SimConfig {
        friendbot_redirect: true,
        ..SimConfig::default()
    })
    .await;
    let horizon = Horizon::new(&sim);
    let friendbot_url = sim.friendbot_url().unwrap_or_else(|| panic!("a friendbot"));
    assert_ne!(friendbot_url, sim.url());
    let newcomer = account(&key("redirected newcomer"));

    let redirect = horizon.get(&format!("/friendbot?addr={newcomer}")).await;
    assert_eq!(redirect.status, 307);
    let location = redirect
        .header("location")
        .unwrap_or_else(|| panic!("no Location"))
        .to_owned();
    assert_eq!(location, format!("{friendbot_url}/?addr={newcomer}"));
    assert_eq!(sim.balance(newcomer), None, "a redirect funds nothing");

    let friendbot = Horizon::at(friendbot_url);
    let path = location
        .trim_start_matches(&sim.friendbot_url().unwrap_or_default())
        .to_owned();
    let funded = {
        let friendbot = friendbot.clone();
        let path = path.clone();
        closing_ledgers(&sim, async move { friendbot.get(&path).await }).await
    };
    assert_eq!(funded.status, 200, "{}", funded.body);
    assert_eq!(sim.balance(newcomer), Some(10_000 * XLM));
    let again = friendbot.get(&path).await;
    assert_eq!(again.status, 400);
}

#[tokio::test]
async fn the_realistic_cadence_closes_a_ledger_every_five_seconds() {
    let config = SimConfig::realistic();
    assert_eq!(config.ledger_interval, Some(Duration::from_secs(5)));
    let sim = start_with(config).await;
    let first = sim.ledger_sequence();
    let started = std::time::Instant::now();
    sim.wait_for_ledger(first + 1, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        started.elapsed() >= Duration::from_millis(4_500),
        "{:?}",
        started.elapsed()
    );
}

/// The claim's `ClaimableBalance` state in a base64 `TransactionMeta`: (amount, sponsor).
fn claimed_in_meta(meta: &str) -> Option<(i64, Option<stellar_xdr::AccountId>)> {
    use stellar_xdr::{LedgerEntryChange, LedgerEntryData, LedgerEntryExt, ReadXdr};
    let meta = stellar_xdr::TransactionMeta::from_xdr_base64(meta, stellar_xdr::Limits::none())
        .unwrap_or_else(|e| panic!("{e}"));
    let stellar_xdr::TransactionMeta::V4(meta) = meta else {
        panic!("not meta v4")
    };
    meta.operations
        .first()?
        .changes
        .0
        .iter()
        .find_map(|change| match change {
            LedgerEntryChange::State(entry) => match (&entry.data, &entry.ext) {
                (LedgerEntryData::ClaimableBalance(balance), LedgerEntryExt::V1(v1)) => {
                    Some((balance.amount, v1.sponsoring_id.0.clone()))
                }
                _ => None,
            },
            _ => None,
        })
}

#[tokio::test]
async fn a_claimable_balance_is_held_until_its_claimant_claims_it_and_both_apis_show_the_meta() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "claimable", 100 * XLM);
    let (alice, bob) = (account(&pair.alice), account(&pair.bob));
    let (alice_before, bob_before) = (
        sim.balance(alice).unwrap_or_default(),
        sim.balance(bob).unwrap_or_default(),
    );

    let (create, id) = sim
        .create_claimable_balance(alice, bob, 3 * XLM)
        .unwrap_or_else(|e| panic!("{e}"));
    sim.close_ledger();
    // Held, not credited; the creator's reserve covers the entry.
    assert_eq!(sim.claimable_balance(&id), Some(3 * XLM));
    assert_eq!(sim.balance(bob), Some(bob_before));
    assert_eq!(sim.balance(alice), Some(alice_before - 3 * XLM - 100));
    let shown = horizon.account(&alice).await;
    assert_eq!(shown.body["num_sponsoring"], 1, "{}", shown.body);
    // The create's result names the balance id the simulator returned.
    let created = horizon.transaction(&create).await;
    assert_eq!(created.status, 200, "{}", created.body);
    let result = decode_result(&created.body["result_xdr"]);
    let stellar_xdr::TransactionResultResult::TxSuccess(ops) = &result.result else {
        panic!("{result:?}")
    };
    let Some(stellar_xdr::OperationResult::OpInner(
        stellar_xdr::OperationResultTr::CreateClaimableBalance(
            stellar_xdr::CreateClaimableBalanceResult::Success(
                stellar_xdr::ClaimableBalanceId::ClaimableBalanceIdTypeV0(hash),
            ),
        ),
    )) = ops.first()
    else {
        panic!("{ops:?}")
    };
    assert_eq!(id, format!("00000000{}", hex::encode(hash.0)));

    // Bob's owner claims it in a transaction alice sends and pays for.
    let claim = sim
        .claim_claimable_balance(bob, &id, alice)
        .unwrap_or_else(|e| panic!("{e}"));
    sim.close_ledger();
    assert_eq!(sim.transaction(claim).successful, Some(true));
    assert_eq!(sim.claimable_balance(&id), None);
    assert_eq!(sim.balance(bob), Some(bob_before + 3 * XLM));
    assert_eq!(
        sim.balance(alice),
        Some(alice_before - 3 * XLM - 200),
        "two fees"
    );
    let shown = horizon.account(&alice).await;
    assert_eq!(shown.body["num_sponsoring"], 0, "{}", shown.body);

    // Horizon's result_meta_xdr and RPC's resultMetaXdr: the balance as it was, its sponsor.
    let on_horizon = horizon.transaction(&claim).await;
    let meta = on_horizon.body["result_meta_xdr"]
        .as_str()
        .unwrap_or_default();
    let alice_id = stellar_xdr::AccountId(stellar_xdr::PublicKey::PublicKeyTypeEd25519(
        stellar_xdr::Uint256(alice.0),
    ));
    assert_eq!(claimed_in_meta(meta), Some((3 * XLM, Some(alice_id))));
    let on_rpc = rpc
        .result("getTransaction", json!({ "hash": claim.to_hex() }))
        .await;
    assert_eq!(on_rpc["resultMetaXdr"].as_str(), Some(meta));
    let ledger = sim.ledger_of(claim).unwrap_or_default();
    let page = rpc
        .result(
            "getTransactions",
            json!({ "startLedger": ledger, "pagination": { "limit": 10 } }),
        )
        .await;
    let listed = page["transactions"]
        .as_array()
        .and_then(|txs| txs.iter().find(|t| t["txHash"] == claim.to_hex()).cloned())
        .unwrap_or_else(|| panic!("{page}"));
    assert_eq!(listed["resultMetaXdr"].as_str(), Some(meta));

    // Claimed once: again, it does not exist.
    let again = sim
        .claim_claimable_balance(bob, &id, bob)
        .unwrap_or_else(|e| panic!("{e}"));
    sim.close_ledger();
    assert_eq!(sim.transaction(again).successful, Some(false));
    let failed = horizon.transaction(&again).await;
    let result = decode_result(&failed.body["result_xdr"]);
    assert!(format!("{result:?}").contains("DoesNotExist"), "{result:?}");
}

#[tokio::test]
async fn an_outside_payment_to_a_muxed_address_credits_its_account_and_names_it() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "muxed", 100 * XLM);
    let (alice, bob) = (account(&pair.alice), account(&pair.bob));
    let bob_before = sim.balance(bob).unwrap_or_default();
    let hash = sim
        .pay_muxed_from_outside(alice, bob, u64::MAX, 2 * XLM)
        .unwrap_or_else(|e| panic!("{e}"));
    sim.close_ledger();
    assert_eq!(sim.balance(bob), Some(bob_before + 2 * XLM));
    let reply = horizon.transaction(&hash).await;
    let operation = first_operation(&reply.body["envelope_xdr"]);
    let stellar_xdr::OperationBody::Payment(payment) = &operation else {
        panic!("{operation:?}")
    };
    assert_eq!(
        payment.destination,
        stellar_xdr::MuxedAccount::MuxedEd25519(stellar_xdr::MuxedAccountMed25519 {
            id: u64::MAX,
            ed25519: stellar_xdr::Uint256(bob.0),
        })
    );
}

/// The first operation's body of a served base64 envelope.
fn first_operation(xdr: &Value) -> stellar_xdr::OperationBody {
    use stellar_xdr::ReadXdr;
    let envelope = stellar_xdr::TransactionEnvelope::from_xdr_base64(
        xdr.as_str().unwrap_or_default(),
        stellar_xdr::Limits::none(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stellar_xdr::TransactionEnvelope::Tx(v1) = envelope else {
        panic!("not a v1 envelope")
    };
    v1.tx.operations[0].body.clone()
}
