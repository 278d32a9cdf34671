//! Horizon's read endpoints and friendbot, over HTTP: the JSON shapes a Horizon client parses.

mod common;

use common::*;
use horizon_sim::{AccountKey, SimConfig};
use signer_testkit::stellar::{Tx, payment};

#[tokio::test]
async fn account_json_has_horizons_shape() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let alice = key("account-shape alice");
    let sequence = funded(&sim, &alice, 100 * XLM);

    let reply = horizon.account(&account(&alice)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("application/hal+json"));
    let body = &reply.body;
    let id = account(&alice).address();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["account_id"], id.as_str());
    assert_eq!(body["paging_token"], id.as_str());
    assert_eq!(
        body["sequence"],
        sequence.to_string(),
        "sequence is a string"
    );
    assert_eq!(body["subentry_count"], 0);
    assert_eq!(body["balances"][0]["balance"], "100.0000000");
    assert_eq!(body["balances"][0]["asset_type"], "native");
    assert_eq!(body["balances"][0]["buying_liabilities"], "0.0000000");
    assert_eq!(body["signers"][0]["key"], id.as_str());
    assert_eq!(body["signers"][0]["weight"], 1);
    assert_eq!(body["signers"][0]["type"], "ed25519_public_key");
    assert_eq!(body["thresholds"]["low_threshold"], 0);
    assert_eq!(body["flags"]["auth_required"], false);
    assert_eq!(
        body["_links"]["self"]["href"],
        format!("{}/accounts/{id}", sim.url())
    );
    assert_eq!(body["_links"]["transactions"]["templated"], true);
    assert!(
        body.get("sequence_ledger").is_none(),
        "no sequence bump yet, so no sequence_ledger"
    );
}

#[tokio::test]
async fn an_unknown_account_is_a_404_problem_and_a_bad_id_a_400() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);

    let reply = horizon.account(&account(&key("nobody"))).await;
    assert_eq!(reply.status, 404);
    assert!(reply.content_type.starts_with("application/problem+json"));
    assert_eq!(
        reply.body["type"],
        "https://stellar.org/horizon-errors/not_found"
    );
    assert_eq!(reply.body["title"], "Resource Missing");
    assert_eq!(reply.body["status"], 404);
    assert!(reply.body["detail"].as_str().is_some());

    let reply = horizon.get("/accounts/GNOTANACCOUNT").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.problem_type(), "bad_request");
    assert_eq!(reply.body["extras"]["invalid_field"], "account_id");

    let reply = horizon.get("/no/such/route").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.problem_type(), "not_found");
}

#[tokio::test]
async fn friendbot_creates_and_funds_an_account_once() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let newcomer = account(&key("friendbot newcomer"));

    let reply = friendbot_closing(&sim, &horizon, &newcomer).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["successful"], true);
    let ledger = sim.ledger_sequence();
    assert_eq!(reply.body["ledger"], ledger);
    assert_eq!(sim.balance(newcomer), Some(10_000 * XLM));
    assert_eq!(sim.sequence(newcomer), Some(i64::from(ledger) << 32));

    let account_json = horizon.account(&newcomer).await;
    assert_eq!(account_json.body["balances"][0]["balance"], "10000.0000000");
    assert_eq!(
        account_json.body["sequence"],
        (i64::from(ledger) << 32).to_string()
    );

    let again = horizon.get(&format!("/friendbot?addr={newcomer}")).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.problem_type(), "bad_request");
    assert_eq!(
        again.body["detail"],
        "account already funded to starting balance"
    );
    assert_eq!(sim.balance(newcomer), Some(10_000 * XLM));

    let bad = horizon.get("/friendbot?addr=nope").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["extras"]["invalid_field"], "addr");
}

#[tokio::test]
async fn friendbot_funds_as_many_accounts_per_ledger_as_it_has_accounts() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let per_ledger = sim.friendbot_accounts().len();
    assert_eq!(per_ledger, 16);
    let accounts: Vec<AccountKey> = (0..per_ledger + 4)
        .map(|i| account(&key(&format!("friendbot batch {i}"))))
        .collect();
    let requests: Vec<_> = accounts
        .iter()
        .map(|a| {
            let horizon = horizon.clone();
            let path = format!("/friendbot?addr={a}");
            tokio::spawn(async move { horizon.get(&path).await })
        })
        .collect();
    sim.wait_for_queued(per_ledger, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = sim.close_ledger();
    assert_eq!(first.applied.len(), per_ledger);
    sim.wait_for_queued(4, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let second = sim.close_ledger();
    assert_eq!(second.applied.len(), 4);
    for request in requests {
        let reply = request.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    for a in accounts {
        assert_eq!(sim.balance(a), Some(10_000 * XLM));
    }
}

#[tokio::test]
async fn fee_stats_have_horizons_shape_and_follow_the_ledger() {
    let sim = start().await;
    let horizon = Horizon::new(&sim);
    let reply = horizon.get("/fee_stats").await;
    assert_eq!(reply.status, 200);
    let body = &reply.body;
    assert_eq!(body["last_ledger"], sim.ledger_sequence().to_string());
    assert_eq!(body["last_ledger_base_fee"], "100");
    assert_eq!(body["ledger_capacity_usage"], "0.00");
    for distribution in ["fee_charged", "max_fee"] {
        for field in [
            "max", "min", "mode", "p10", "p20", "p30", "p40", "p50", "p60", "p70", "p80", "p90",
            "p95", "p99",
        ] {
            assert_eq!(
                body[distribution][field], "100",
                "{distribution}.{field} is the base fee as a string when ledgers are empty"
            );
        }
    }

    // A payment bidding 1,000 per operation is charged the base fee.
    let alice = key("fee stats alice");
    let bob = key("fee stats bob");
    let sequence = funded(&sim, &alice, 100 * XLM);
    funded(&sim, &bob, 100 * XLM);
    let mut tx = Tx::new(public(&alice), sequence + 1);
    tx.operations = vec![payment(public(&bob), XLM)];
    tx.fee = 1_000;
    let reply = submit_closing(&sim, &horizon, &signed(&tx, sim.network_id(), &[&alice])).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let stats = horizon.get("/fee_stats").await.body;
    assert_eq!(stats["fee_charged"]["max"], "100");
    assert_eq!(stats["max_fee"]["max"], "1000");
    assert_eq!(
        stats["ledger_capacity_usage"], "0.00",
        "1 of 1000 operations"
    );

    // Surge pricing, as the control API sets it.
    let reply = horizon
        .post_json("/_sim/base_fee", &serde_json::json!({ "base_fee": 500 }))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        horizon.get("/fee_stats").await.body["last_ledger_base_fee"],
        "500"
    );
}

#[tokio::test]
async fn root_and_health_documents_name_the_network() {
    let sim = start_with(SimConfig {
        network_passphrase: "Standalone Network ; February 2017".into(),
        ..SimConfig::default()
    })
    .await;
    let horizon = Horizon::new(&sim);
    let root = horizon.get("/").await;
    assert_eq!(root.status, 200);
    assert_eq!(
        root.body["network_passphrase"],
        "Standalone Network ; February 2017"
    );
    assert_eq!(root.body["core_latest_ledger"], sim.ledger_sequence());
    assert_eq!(root.body["history_latest_ledger"], sim.ledger_sequence());
    let health = horizon.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["core_synced"], true);
}
