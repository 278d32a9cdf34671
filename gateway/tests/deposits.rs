//! Deposits end to end: the real gateway binary ingesting the simulator's ledgers through Stellar
//! RPC (`getTransactions`) and through Horizon (`GET /ledgers/{n}/transactions`), on SQLite and
//! Postgres. Payments from an account the gateway does not control are made with the
//! simulator's `pay_from_outside` (`pay_muxed_from_outside` to a muxed address), claimable
//! balances with `create_claimable_balance` and `claim_claimable_balance` (the amount read from
//! the transaction meta); the wallet history (`/history`) merges payments and deposits; crash-safety is checked by SIGKILL
//! and restart (and, on Postgres, by a second replica taking over the ingestion lease), with
//! exact counts of deposits and of `deposit.received` outbox events.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use horizon_sim::{AccountKey, HorizonSim, SimConfig};
use serde_json::{Value, json};
use sqlx::Row;
use support::*;

/// Ledgers close every this long in these tests.
const LEDGER_INTERVAL: Duration = Duration::from_millis(200);
/// One lumen.
const XLM: i64 = 10_000_000;
/// Generous: a loaded 2-core CI machine.
const WAIT: Duration = Duration::from_secs(60);

struct DepositStack {
    stack: Stack,
    sim: HorizonSim,
}

impl DepositStack {
    async fn start(target: Target) -> DepositStack {
        let sim = must(HorizonSim::start(SimConfig::with_ledger_interval(LEDGER_INTERVAL)).await);
        let stack = Stack::start_with(
            target.db,
            GatewayOptions {
                network_url: Some(target.backend.url(&sim.url())),
                network_kind: target.backend.kind(),
                extra_toml: "\n[payments]\npoll_interval_ms = 50\nlease_ms = 2000\n\n\
                    [deposits]\ningest = true\npoll_interval_ms = 50\nlease_ms = 2000\nbatch_ledgers = 3\n"
                    .into(),
                ..GatewayOptions::default()
            },
        )
        .await;
        let s = DepositStack { stack, sim };
        // Deposits count from the ledger the ingester started at: wait for its cursor.
        let started = eventually(WAIT, || async { s.cursor().await.is_some() }).await;
        assert!(
            started,
            "the ingester never set its cursor:\n{}",
            s.stack.gateway.log()
        );
        s
    }

    async fn cursor(&self) -> Option<i64> {
        let store = self.stack.db.store().await;
        let row = sqlx::query("SELECT ledger FROM deposit_cursor")
            .fetch_optional(store.pool())
            .await
            .ok()
            .flatten();
        store.close().await;
        row.map(|r| must(r.try_get::<i64, _>("ledger")))
    }

    /// A wallet whose account exists on the simulator with `balance` stroops.
    async fn wallet(&self, name: &str, balance: i64) -> (String, AccountKey) {
        let user = self.stack.create_user(name).await;
        let reply = self
            .stack
            .http
            .post(
                &format!("/v1/users/{user}/wallet"),
                &self.stack.service_key,
                "{}",
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let wallet = reply.json();
        let account = must(wallet["public_key"].as_str().unwrap_or_default().parse());
        must(self.sim.create_account(account, balance));
        (
            wallet["id"].as_str().unwrap_or_default().to_owned(),
            account,
        )
    }

    /// An account no gateway wallet owns.
    fn outsider(&self, seed: u8) -> AccountKey {
        let account = AccountKey([seed; 32]);
        must(self.sim.create_account(account, 1_000 * XLM));
        account
    }

    /// A service GET that must answer 200; its JSON.
    async fn get_ok(&self, path: &str) -> Value {
        let reply = self
            .stack
            .http
            .get(path, Some(&self.stack.service_key))
            .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        reply.json()
    }

    async fn deposits(&self, wallet: &str) -> Vec<Value> {
        self.get_ok(&format!("/v1/wallets/{wallet}/deposits?limit=500"))
            .await["deposits"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `deposit.received` events in the outbox for `wallet`.
    async fn deposit_events(&self, wallet: &str) -> i64 {
        let store = self.stack.db.store().await;
        let row = must(
            sqlx::query(
                "SELECT COUNT(*) AS n FROM outbox_events WHERE wallet_id = $1 \
                 AND event_type = 'deposit.received'",
            )
            .bind(wallet)
            .fetch_one(store.pool())
            .await,
        );
        store.close().await;
        must(row.try_get::<i64, _>("n"))
    }

    /// Waits until the cursor covers `ledger` and the wallet shows `count` deposits.
    async fn wait_for(&self, wallet: &str, count: usize, ledger: u32, log: &GatewayProcess) {
        let done = eventually(WAIT, || async {
            self.cursor().await.is_some_and(|c| c >= i64::from(ledger))
                && self.deposits(wallet).await.len() >= count
        })
        .await;
        assert!(
            done,
            "deposits not ingested through ledger {ledger} (cursor {:?}, {} of {count}):\n{}",
            self.cursor().await,
            self.deposits(wallet).await.len(),
            log.log()
        );
    }

    /// Asserts exactly `count` deposits, distinct operation ids, and as many outbox events.
    async fn assert_exactly(&self, wallet: &str, count: usize) {
        let deposits = self.deposits(wallet).await;
        let ids: HashSet<String> = deposits
            .iter()
            .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(deposits.len(), count, "{deposits:#?}");
        assert_eq!(
            ids.len(),
            count,
            "an operation recorded twice: {deposits:#?}"
        );
        assert_eq!(self.deposit_events(wallet).await, count as i64);
    }

    /// Makes a deposit from `from` and waits for the ledger that applies it; returns that ledger.
    async fn deposit(&self, from: AccountKey, to: AccountKey, amount: i64, memo: &str) -> u32 {
        let hash = must(self.sim.pay_from_outside(from, to, amount, Some(memo)));
        let next = self.sim.ledger_sequence() + 1;
        must(self.sim.wait_for_ledger(next, WAIT).await);
        self.sim
            .ledger_of(hash)
            .unwrap_or_else(|| panic!("the outside payment did not apply"))
    }

    /// Waits for the ledger after the current one, which applies what was just made outside;
    /// returns the ledger `hash` applied in.
    async fn applied(&self, hash: horizon_sim::TxHash) -> u32 {
        let next = self.sim.ledger_sequence() + 1;
        must(self.sim.wait_for_ledger(next, WAIT).await);
        let ledger = self
            .sim
            .ledger_of(hash)
            .unwrap_or_else(|| panic!("the outside transaction did not apply"));
        assert_eq!(
            self.sim.transaction(hash).successful,
            Some(true),
            "the outside transaction failed"
        );
        ledger
    }

    /// Waits until the cursor covers `ledger`.
    async fn ingested_through(&self, ledger: u32) {
        let done = eventually(WAIT, || async {
            self.cursor().await.is_some_and(|c| c >= i64::from(ledger))
        })
        .await;
        assert!(
            done,
            "not ingested through {ledger}:\n{}",
            self.stack.gateway.log()
        );
    }

    /// Every deposit recorded, of any wallet.
    async fn all_deposits(&self) -> i64 {
        let store = self.stack.db.store().await;
        let row = must(
            sqlx::query("SELECT COUNT(*) AS n FROM deposits")
                .fetch_one(store.pool())
                .await,
        );
        store.close().await;
        must(row.try_get::<i64, _>("n"))
    }

    /// One page of `wallet`'s history.
    async fn history_page(&self, wallet: &str, query: &str) -> Value {
        self.get_ok(&format!("/v1/wallets/{wallet}/history?{query}"))
            .await
    }
}

on_both_backends! {
    async fn an_outside_deposit_appears_once_with_amount_and_memo(target: Target) {
        let s = DepositStack::start(target).await;
        let (wallet, account) = s.wallet("depositor", 10 * XLM).await;
        let outsider = s.outsider(7);
        let ledger = s.deposit(outsider, account, 12 * XLM + 5, "invoice 42").await;
        // Several ledgers past it, so a repeated read would have had the chance to repeat it.
        let later = ledger + 6;
        must(s.sim.wait_for_ledger(later, WAIT).await);
        s.wait_for(&wallet, 1, later, &s.stack.gateway).await;
        s.assert_exactly(&wallet, 1).await;
        let deposit = &s.deposits(&wallet).await[0];
        assert_eq!(deposit["amount_stroops"], 12 * XLM + 5, "{deposit}");
        assert_eq!(deposit["amount"], "12.0000005", "{deposit}");
        assert_eq!(deposit["memo"], "invoice 42", "{deposit}");
        assert_eq!(deposit["memo_type"], "text", "{deposit}");
        assert_eq!(deposit["kind"], "payment", "{deposit}");
        assert_eq!(deposit["source_account"], outsider.address(), "{deposit}");
        assert_eq!(deposit["ledger"], i64::from(ledger), "{deposit}");
        assert!(deposit.get("asset_code").is_none(), "{deposit}");
        // The operation id is Horizon's TOID: its ledger in the high 32 bits.
        let id: i64 = must(deposit["id"].as_str().unwrap_or_default().parse());
        assert_eq!(id >> 32, i64::from(ledger));
        let unknown = s
            .stack
            .http
            .get(
                &format!("/v1/wallets/{}/deposits", uuid::Uuid::new_v4()),
                Some(&s.stack.service_key),
            )
            .await;
        assert_eq!(unknown.status, 404, "{}", unknown.body);
    }

    async fn nodes_lagging_behind_the_cursor_make_it_wait_never_skip(target: Target) {
        // Reads alternate between an up-to-date node and one 6 ledgers behind. The lagging node
        // has not ingested the ledgers the cursor asks for next: taking its (empty or missing)
        // answer as "no transactions there" would move the cursor past deposits.
        let s = DepositStack::start(target).await;
        let (wallet, account) = s.wallet("lagged", 10 * XLM).await;
        let outsider = s.outsider(13);
        s.sim.set_node_lags(&[0, 6]);
        let mut last = 0;
        for i in 0..5 {
            last = s.deposit(outsider, account, XLM + i, &format!("lagged {i}")).await;
        }
        let later = last + 8;
        must(s.sim.wait_for_ledger(later, WAIT).await);
        s.wait_for(&wallet, 5, later, &s.stack.gateway).await;
        s.sim.set_node_lags(&[]);
        s.assert_exactly(&wallet, 5).await;
        let total: i64 = s
            .deposits(&wallet)
            .await
            .iter()
            .map(|d| d["amount_stroops"].as_i64().unwrap_or_default())
            .sum();
        assert_eq!(total, 5 * XLM + 10);
    }

    async fn a_payment_between_wallets_is_a_deposit_of_the_receiver(target: Target) {
        let s = DepositStack::start(target).await;
        let (payer, payer_account) = s.wallet("payer", 100 * XLM).await;
        let (payee, payee_account) = s.wallet("payee", 10 * XLM).await;
        let reply = s
            .stack
            .http
            .post(
                "/v1/payments",
                &s.stack.service_key,
                &json!({ "source_wallet_id": payer, "destination": payee_account.address(), "amount": "3" })
                    .to_string(),
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        let got = eventually(WAIT, || async { !s.deposits(&payee).await.is_empty() }).await;
        assert!(got, "no deposit for the payee:\n{}", s.stack.gateway.log());
        let deposit = &s.deposits(&payee).await[0];
        assert_eq!(deposit["amount_stroops"], 3 * XLM, "{deposit}");
        assert_eq!(deposit["source_account"], payer_account.address(), "{deposit}");
        let ledger = u32::try_from(deposit["ledger"].as_i64().unwrap_or_default()).unwrap_or(0);
        s.wait_for(&payee, 1, ledger + 3, &s.stack.gateway).await;
        s.assert_exactly(&payee, 1).await;
        assert!(s.deposits(&payer).await.is_empty(), "the payer's own payment is no deposit");
    }

    async fn a_sigkill_and_restart_neither_skip_nor_repeat(target: Target) {
        let mut s = DepositStack::start(target).await;
        let (wallet, account) = s.wallet("crash", 10 * XLM).await;
        let outsider = s.outsider(9);
        let mut last = 0;
        for i in 0..4 {
            last = s.deposit(outsider, account, XLM + i, &format!("before {i}")).await;
        }
        s.wait_for(&wallet, 4, last, &s.stack.gateway).await;
        s.stack.gateway.sigkill();
        let _ = s.stack.gateway.wait().await;
        // Deposits while no gateway runs.
        for i in 0..4 {
            last = s.deposit(outsider, account, 2 * XLM + i, &format!("down {i}")).await;
        }
        s.stack.gateway.launch().await;
        s.stack.http = Http::new(s.stack.gateway.addr);
        for i in 0..4 {
            last = s.deposit(outsider, account, 3 * XLM + i, &format!("after {i}")).await;
        }
        let later = last + 4;
        must(s.sim.wait_for_ledger(later, WAIT).await);
        s.wait_for(&wallet, 12, later, &s.stack.gateway).await;
        s.assert_exactly(&wallet, 12).await;
        let total: i64 = s
            .deposits(&wallet)
            .await
            .iter()
            .map(|d| d["amount_stroops"].as_i64().unwrap_or_default())
            .sum();
        assert_eq!(total, 4 * XLM + 6 + 4 * 2 * XLM + 6 + 4 * 3 * XLM + 6);
    }
}

on_both_backends! {
    async fn ledgers_pruned_while_down_are_a_reported_gap_never_skipped(target: Target) {
        let mut s = DepositStack::start(target).await;
        let (wallet, account) = s.wallet("gap", 10 * XLM).await;
        let outsider = s.outsider(13);
        let first = s.deposit(outsider, account, XLM, "kept").await;
        s.wait_for(&wallet, 1, first, &s.stack.gateway).await;
        s.stack.gateway.sigkill();
        let _ = s.stack.gateway.wait().await;
        let cursor = s.cursor().await;
        // The API keeps 3 ledgers; 10 close while the gateway is down.
        s.sim.set_history_retention(3);
        must(s.sim.wait_for_ledger(s.sim.ledger_sequence() + 10, WAIT).await);
        let after = s.deposit(outsider, account, 2 * XLM, "after the gap").await;
        s.stack.gateway.launch().await;
        s.stack.http = Http::new(s.stack.gateway.addr);
        let reported = eventually(WAIT, || async {
            s.stack.gateway.log().contains("deposit ingestion gap")
        })
        .await;
        assert!(reported, "no gap reported:\n{}", s.stack.gateway.log());
        let metrics = s.stack.http.get("/metrics", None).await;
        assert!(
            metrics.body.lines().any(|l| l == "gateway_deposit_ingestion_lag_ledgers -1"),
            "{}",
            metrics.body
        );
        assert!(
            metrics.body.lines().any(|l| l == "gateway_deposit_ingestion_stalled 1"),
            "{}",
            metrics.body
        );
        // Retried with exponential backoff from the poll interval (50 ms here), not every poll.
        let backing_off = eventually(WAIT, || async {
            stalled_retry_waits(&s.stack.gateway.log()).len() >= 4
        })
        .await;
        assert!(backing_off, "no backoff:\n{}", s.stack.gateway.log());
        let waits = stalled_retry_waits(&s.stack.gateway.log());
        assert_eq!(&waits[..4], &[50, 100, 200, 400], "{}", s.stack.gateway.log());
        must(s.sim.wait_for_ledger(after + 2, WAIT).await);
        // Nothing past the gap was taken: the cursor stays where the history ends.
        assert_eq!(s.cursor().await, cursor);
        s.assert_exactly(&wallet, 1).await;
    }
}

on_both_backends! {
    async fn a_claimed_balance_is_a_deposit_once_and_creating_it_is_none(target: Target) {
        let s = DepositStack::start(target).await;
        let (wallet, account) = s.wallet("claimant", 10 * XLM).await;
        let creator = s.outsider(21);
        let submitter = s.outsider(22);
        let stranger = s.outsider(23);
        let amount = 5 * XLM + 3;
        let (create, balance_id) =
            must(s.sim.create_claimable_balance(creator, account, amount));
        let created = s.applied(create).await;
        // Creating a balance for a wallet credits nothing until it is claimed.
        s.ingested_through(created + 2).await;
        assert!(s.deposits(&wallet).await.is_empty());
        assert_eq!(s.sim.balance(account), Some(10 * XLM));
        assert_eq!(s.sim.claimable_balance(&balance_id), Some(amount));

        // The wallet's owner claims it in a transaction another account sends and pays for:
        // the claim is the wallet's operation, and credits the wallet.
        let claim = must(s.sim.claim_claimable_balance(account, &balance_id, submitter));
        let claimed = s.applied(claim).await;
        assert_eq!(s.sim.balance(account), Some(10 * XLM + amount));
        assert_eq!(s.sim.claimable_balance(&balance_id), None);
        // A claim by an account that is no wallet is nobody's deposit.
        let (other, other_id) = must(s.sim.create_claimable_balance(creator, stranger, XLM));
        s.applied(other).await;
        let stranger_claim = must(s.sim.claim_claimable_balance(stranger, &other_id, stranger));
        let last = s.applied(stranger_claim).await;

        let later = last + 4;
        must(s.sim.wait_for_ledger(later, WAIT).await);
        s.wait_for(&wallet, 1, later, &s.stack.gateway).await;
        s.assert_exactly(&wallet, 1).await;
        assert_eq!(s.all_deposits().await, 1);
        let deposit = &s.deposits(&wallet).await[0];
        assert_eq!(deposit["kind"], "claim_claimable_balance", "{deposit}");
        assert_eq!(deposit["amount_stroops"], amount, "{deposit}");
        assert_eq!(deposit["account"], account.address(), "{deposit}");
        // Who paid: the balance's creator (its sponsor), not the claim's fee payer.
        assert_eq!(deposit["source_account"], creator.address(), "{deposit}");
        assert_eq!(deposit["ledger"], i64::from(claimed), "{deposit}");
        assert_eq!(deposit["tx_hash"], claim.to_hex(), "{deposit}");
        assert!(deposit["muxed_id"].is_null(), "{deposit}");
    }

    async fn a_payment_to_a_muxed_address_is_a_deposit_with_its_muxed_id(target: Target) {
        let s = DepositStack::start(target).await;
        let (wallet, account) = s.wallet("muxed", 10 * XLM).await;
        let outsider = s.outsider(24);
        // Above i64::MAX: kept as a decimal string end to end.
        let muxed_id = u64::MAX - 5;
        let muxed = must(s.sim.pay_muxed_from_outside(outsider, account, muxed_id, 4 * XLM));
        s.applied(muxed).await;
        let plain = s.deposit(outsider, account, XLM, "plain").await;
        s.wait_for(&wallet, 2, plain + 2, &s.stack.gateway).await;
        s.assert_exactly(&wallet, 2).await;
        assert_eq!(s.sim.balance(account), Some(15 * XLM));
        let deposits = s.deposits(&wallet).await;
        // Newest first.
        assert_eq!(deposits[1]["muxed_id"], muxed_id.to_string(), "{deposits:?}");
        assert_eq!(deposits[1]["amount_stroops"], 4 * XLM, "{deposits:?}");
        assert_eq!(deposits[1]["account"], account.address(), "{deposits:?}");
        assert!(deposits[0]["muxed_id"].is_null(), "{deposits:?}");
        // The deposit.received event carries it too.
        let store = s.stack.db.store().await;
        let rows = must(
            sqlx::query(
                "SELECT payload FROM outbox_events WHERE wallet_id = $1 \
                 AND event_type = 'deposit.received' ORDER BY wallet_sequence",
            )
            .bind(&wallet)
            .fetch_all(store.pool())
            .await,
        );
        store.close().await;
        let payloads: Vec<Value> = rows
            .iter()
            .map(|r| must(serde_json::from_str(&must(r.try_get::<String, _>("payload")))))
            .collect();
        assert_eq!(payloads[0]["muxed_id"], muxed_id.to_string(), "{payloads:?}");
        assert!(payloads[1]["muxed_id"].is_null(), "{payloads:?}");
    }

    async fn the_history_merges_payments_and_deposits_and_pages_each_once(target: Target) {
        let s = DepositStack::start(target).await;
        let (wallet, account) = s.wallet("history", 100 * XLM).await;
        let outsider = s.outsider(25);
        // Alternate: a deposit in, a payment out; each recorded before the next is made, so the
        // history's order is the order of these steps.
        let mut expected: Vec<(&str, i64)> = Vec::new();
        for i in 0..3_i64 {
            let amount = XLM + i;
            let ledger = s.deposit(outsider, account, amount, &format!("in {i}")).await;
            s.wait_for(&wallet, usize::try_from(i + 1).unwrap_or(0), ledger, &s.stack.gateway)
                .await;
            expected.push(("in", amount));
            let out = 2 * XLM + i;
            let reply = s
                .stack
                .http
                .post(
                    "/v1/payments",
                    &s.stack.service_key,
                    &json!({
                        "source_wallet_id": wallet,
                        "destination": outsider.address(),
                        "amount": format!("2.000000{i}"),
                    })
                    .to_string(),
                )
                .await;
            assert_eq!(reply.status, 202, "{}", reply.body);
            let id = reply.json()["id"].as_str().unwrap_or_default().to_owned();
            let done = eventually(WAIT, || async {
                let p = s.stack.http.get(&format!("/v1/payments/{id}"), Some(&s.stack.service_key)).await;
                p.json()["status"] == "SUCCESS"
            })
            .await;
            assert!(done, "payment {id} did not succeed:\n{}", s.stack.gateway.log());
            expected.push(("out", out));
        }
        expected.reverse();

        // Page 1 of 2 entries, then a new deposit arrives, then the rest: every entry of the
        // walk once, newest first, nothing shifted by the newcomer.
        let first = s.history_page(&wallet, "limit=2").await;
        let late = s.deposit(outsider, account, 9 * XLM, "late").await;
        s.wait_for(&wallet, 4, late, &s.stack.gateway).await;
        let mut entries: Vec<Value> = first["entries"].as_array().cloned().unwrap_or_default();
        let mut next = first["next_before"].as_str().map(str::to_owned);
        while let Some(before) = next {
            let page = s.history_page(&wallet, &format!("limit=2&before={before}")).await;
            let items = page["entries"].as_array().cloned().unwrap_or_default();
            assert!(items.len() <= 2);
            entries.extend(items);
            next = page["next_before"].as_str().map(str::to_owned);
        }
        let seen: Vec<(String, i64)> = entries
            .iter()
            .map(|e| {
                (
                    e["direction"].as_str().unwrap_or_default().to_owned(),
                    e["amount_stroops"].as_i64().unwrap_or_default(),
                )
            })
            .collect();
        let want: Vec<(String, i64)> =
            expected.iter().map(|(d, a)| ((*d).to_owned(), *a)).collect();
        assert_eq!(seen, want, "{entries:#?}");
        let ids: Vec<i64> = entries
            .iter()
            .map(|e| must(e["id"].as_str().unwrap_or_default().parse::<i64>()))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "not newest first: {ids:?}");
        for entry in &entries {
            assert_eq!(entry["asset_code"], Value::Null, "{entry}");
            match entry["direction"].as_str() {
                Some("out") => {
                    assert_eq!(entry["status"], "SUCCESS", "{entry}");
                    assert_eq!(entry["counterparty"], outsider.address(), "{entry}");
                    assert!(entry["payment_id"].is_string(), "{entry}");
                    assert!(entry["deposit_id"].is_null(), "{entry}");
                }
                Some("in") => {
                    assert!(entry["status"].is_null(), "{entry}");
                    assert_eq!(entry["counterparty"], outsider.address(), "{entry}");
                    assert!(entry["deposit_id"].is_string(), "{entry}");
                    assert!(entry["payment_id"].is_null(), "{entry}");
                    assert_eq!(entry["kind"], "payment", "{entry}");
                }
                other => panic!("direction {other:?}: {entry}"),
            }
        }
        // A fresh walk starts with the newcomer.
        let fresh = s.history_page(&wallet, "limit=500").await;
        let top = &fresh["entries"][0];
        assert_eq!((top["direction"].as_str(), top["amount_stroops"].as_i64()), (Some("in"), Some(9 * XLM)));
        assert_eq!(fresh["entries"].as_array().map(Vec::len), Some(7));
        assert!(fresh.get("next_before").is_none(), "{fresh}");
        // The limits of every list route.
        for bad in ["limit=0", "limit=501", "before=x", "before=-1", "unknown=1"] {
            let reply = s
                .stack
                .http
                .get(&format!("/v1/wallets/{wallet}/history?{bad}"), Some(&s.stack.service_key))
                .await;
            assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        }
        let unknown = s
            .stack
            .http
            .get(&format!("/v1/wallets/{}/history", uuid::Uuid::new_v4()), Some(&s.stack.service_key))
            .await;
        assert_eq!(unknown.status, 404, "{}", unknown.body);
        let anonymous = s.stack.http.get(&format!("/v1/wallets/{wallet}/history"), None).await;
        assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    }
}

/// The `retry_in_ms` of each "stalled on a gap" log line, in order.
fn stalled_retry_waits(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|line| line.contains("stalled on a gap"))
        .filter_map(|line| {
            let line = without_ansi_colours(line);
            let rest = &line[line.find("retry_in_ms")? + "retry_in_ms".len()..];
            let digits: String = rest
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// `line` without its terminal colour codes (`ESC [ ... m`).
fn without_ansi_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Two replicas on Postgres: the one holding the ingestion lease is SIGKILLed and the other
/// takes over, missing and repeating nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_takes_over_ingestion_rpc() {
    takeover(Backend::Rpc).await;
}

/// [`a_second_replica_takes_over_ingestion_rpc`] through Horizon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_takes_over_ingestion_horizon() {
    takeover(Backend::Horizon).await;
}

async fn takeover(backend: Backend) {
    let mut s = DepositStack::start(Target {
        db: DatabaseKind::Postgres,
        backend,
    })
    .await;
    let (wallet, account) = s.wallet("takeover", 10 * XLM).await;
    let outsider = s.outsider(11);
    // The first gateway set the cursor, so it holds the lease (renewed every step): the replica
    // cannot take it while the first lives.
    let mut replica = GatewayProcess::start_replica(&s.stack.gateway.config).await;
    let mut last = 0;
    for i in 0..3 {
        last = s
            .deposit(outsider, account, XLM + i, &format!("first {i}"))
            .await;
    }
    s.wait_for(&wallet, 3, last, &s.stack.gateway).await;
    s.stack.gateway.sigkill();
    let _ = s.stack.gateway.wait().await;
    s.stack.http = Http::new(replica.addr);
    for i in 0..3 {
        last = s
            .deposit(outsider, account, 2 * XLM + i, &format!("second {i}"))
            .await;
    }
    let later = last + 4;
    must(s.sim.wait_for_ledger(later, WAIT).await);
    s.wait_for(&wallet, 6, later, &replica).await;
    s.assert_exactly(&wallet, 6).await;
    assert!(
        replica.log().contains("deposit ingestion lease taken"),
        "the replica never took the lease:\n{}",
        replica.log()
    );
    let _ = replica.terminate().await;
}

/// `gateway worker` (no HTTP API) follows the ledgers too: with the serving gateway stopped, a
/// worker alone records the next deposit, once, with its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_worker_ingests_deposits_without_serve() {
    let mut s = DepositStack::start(Target {
        db: DatabaseKind::Sqlite,
        backend: Backend::Horizon,
    })
    .await;
    let (wallet, account) = s.wallet("worker", 10 * XLM).await;
    let outsider = s.outsider(12);
    let status = s.stack.gateway.terminate().await;
    assert!(status.success(), "{status}");
    let worker = GatewayProcess::start_worker(&s.stack.gateway.config).await;
    let ledger = s.deposit(outsider, account, 3 * XLM, "to the worker").await;
    let ingested = eventually(WAIT, || async {
        s.cursor().await.is_some_and(|c| c >= i64::from(ledger))
            && s.deposit_events(&wallet).await == 1
    })
    .await;
    assert!(
        ingested,
        "the worker did not ingest ledger {ledger} (cursor {:?}):\n{}",
        s.cursor().await,
        worker.log()
    );
    assert!(
        worker.log().contains("deposit ingestion lease taken"),
        "{}",
        worker.log()
    );
}
