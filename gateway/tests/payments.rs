//! Payments end to end: the real gateway binary, a real signerd on SoftHSM, the Horizon
//! simulator in process (ledgers closing on a short timer), on SQLite and on Postgres. The
//! simulator counts how many times each transaction was applied, which is what "never pays
//! twice" is checked against.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use horizon_sim::{AccountKey, HorizonSim, SimConfig};
use serde_json::{Value, json};
use sqlx::Row;
use support::*;

/// Ledgers close every this long in these tests.
const LEDGER_INTERVAL: Duration = Duration::from_millis(200);
/// One lumen.
const XLM: i64 = 10_000_000;

/// The stack plus a simulator.
struct PaymentStack {
    stack: Stack,
    sim: HorizonSim,
}

impl PaymentStack {
    async fn start(kind: Target) -> PaymentStack {
        Self::start_with(kind, "").await
    }

    async fn start_with(kind: Target, extra_toml: &str) -> PaymentStack {
        Self::start_with_validity(kind, extra_toml, 60).await
    }

    async fn start_with_validity(
        kind: Target,
        extra_toml: &str,
        max_validity_secs: u64,
    ) -> PaymentStack {
        let sim = must(HorizonSim::start(SimConfig::with_ledger_interval(LEDGER_INTERVAL)).await);
        let stack = Stack::start_with(
            kind.db,
            GatewayOptions {
                network_url: Some(kind.backend.url(&sim.url())),
                network_kind: kind.backend.kind(),
                extra_toml: format!(
                    "\n[payments]\n{}{}{extra_toml}\n",
                    if extra_toml.contains("poll_interval_ms") {
                        ""
                    } else {
                        "poll_interval_ms = 50\n"
                    },
                    if extra_toml.contains("lease_ms") {
                        ""
                    } else {
                        "lease_ms = 2000\n"
                    },
                ),
                max_validity_secs,
                ..GatewayOptions::default()
            },
        )
        .await;
        PaymentStack { stack, sim }
    }

    /// A user with a complete wallet whose account exists on the simulator with `balance`
    /// stroops (no account when `None`). Returns (wallet id, account).
    async fn wallet(&self, name: &str, balance: Option<i64>) -> (String, AccountKey) {
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
        if let Some(balance) = balance {
            must(self.sim.create_account(account, balance));
        }
        (
            wallet["id"].as_str().unwrap_or_default().to_owned(),
            account,
        )
    }

    async fn pay(&self, source: &str, destination: &str, amount: &str) -> Reply {
        self.pay_with_key(
            source,
            destination,
            amount,
            &uuid::Uuid::new_v4().to_string(),
        )
        .await
    }

    async fn pay_with_key(
        &self,
        source: &str,
        destination: &str,
        amount: &str,
        idempotency_key: &str,
    ) -> Reply {
        self.stack
            .http
            .post_with_idempotency_key(
                "/v1/payments",
                &self.stack.service_key,
                idempotency_key,
                &json!({ "source_wallet_id": source, "destination": destination, "amount": amount })
                    .to_string(),
            )
            .await
    }

    /// Accepts a payment as a careful client does: on a 5xx or 409 `IDEMPOTENCY_IN_PROGRESS`
    /// (an overloaded machine) it retries with the *same* Idempotency-Key, which can never make a
    /// second payment. Every retry is printed, so an overloaded run is visible.
    async fn accepted(&self, source: &str, destination: &str, amount: &str) -> String {
        let key = uuid::Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut reply = self.pay_with_key(source, destination, amount, &key).await;
        while (reply.status >= 500 || reply.status == 409)
            && reply.body.contains("UNAVAILABLE")
                | reply.body.contains("IN_PROGRESS")
                | reply.body.contains("INTERNAL")
            && tokio::time::Instant::now() < deadline
        {
            eprintln!(
                "POST /v1/payments answered {} {}; retrying with the same key",
                reply.status, reply.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            reply = self.pay_with_key(source, destination, amount, &key).await;
        }
        assert_eq!(reply.status, 202, "{}", reply.body);
        assert_eq!(reply.json()["status"], "CREATED");
        reply.json()["id"].as_str().unwrap_or_default().to_owned()
    }

    async fn payment(&self, id: &str) -> Value {
        let reply = self
            .stack
            .http
            .get(&format!("/v1/payments/{id}"), Some(&self.stack.service_key))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// Waits (at most 90 s) until the payment is SUCCESS or FAILED and returns it.
    async fn finished(&self, id: &str) -> Value {
        self.finished_within(id, Duration::from_secs(90)).await
    }

    /// The payment once `SUCCESS` or `FAILED`; fails the test when that takes longer than
    /// `limit` (a bound some tests make tight to show a path was not the slow one).
    async fn finished_within(&self, id: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let payment = self.payment(id).await;
            if payment["status"] == "SUCCESS" || payment["status"] == "FAILED" {
                return payment;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "payment {id} not finished after {limit:?}: {payment}\n{}",
                self.stack.gateway.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn hash_of(payment: &Value) -> horizon_sim::TxHash {
        must(payment["tx_hash"].as_str().unwrap_or_default().parse())
    }
}

fn statuses(payment: &Value) -> Vec<String> {
    payment["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

on_both_backends! {
    async fn a_source_funded_ledgers_ago_read_from_lagging_nodes_is_paid_not_failed(kind: Target) {
        // Every Horizon node lags 40 ledgers (8 s); alice's account is created after they
        // stalled, so for 8 s every read of it is a 404 from a node behind its creation. That
        // 404 proves nothing: the payment must wait for a read that covers a ledger closed after
        // it was accepted, not fail with SOURCE_ACCOUNT_NOT_FOUND.
        let s = PaymentStack::start(kind).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        s.sim.set_node_lags(&[40, 40]);
        // A close after the lag began, so the nodes answer from a past ledger without alice.
        must(s.sim.wait_for_ledger(s.sim.ledger_sequence() + 2, Duration::from_secs(30)).await);
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let id = s.accepted(&alice, &bob, "3").await;
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}\n{}", s.stack.gateway.log());
        assert_eq!(s.sim.applied_from(alice_account).len(), 1);
        assert_eq!(s.sim.balance(bob_account), Some(13 * XLM));
        let metrics = s.stack.http.get("/metrics", None).await.body;
        assert!(metrics.contains("gateway_network_reads_behind_total{read=\"source_absent\"}"), "{metrics}");
    }

    async fn a_source_that_does_not_exist_still_fails_once_a_read_covers_the_fence(kind: Target) {
        // The other side of the fence: a source that never existed is reported, not waited on.
        let s = PaymentStack::start(kind).await;
        let (alice, _) = s.wallet("alice", None).await;
        let (bob, _) = s.wallet("bob", Some(10 * XLM)).await;
        let id = s.accepted(&alice, &bob, "3").await;
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "FAILED", "{payment}");
        assert!(payment["failure_reason"].as_str().unwrap_or_default().starts_with("SOURCE_ACCOUNT_NOT_FOUND"), "{payment}");
    }

    async fn a_destination_lagging_nodes_report_absent_is_paid_not_created(kind: Target) {
        // bob's account is created after every node stalled 40 ledgers behind: their 404 for it
        // would make the gateway build create_account, which fails in its ledger with
        // op_already_exists. The destination read must be fenced like the source's.
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        s.sim.set_node_lags(&[40, 40]);
        must(s.sim.wait_for_ledger(s.sim.ledger_sequence() + 2, Duration::from_secs(30)).await);
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        let id = s.accepted(&alice, &bob, "3").await;
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}\n{}", s.stack.gateway.log());
        let applied = s.sim.applied_from(alice_account);
        assert_eq!(applied.len(), 1, "{applied:?}");
        assert_eq!(s.sim.balance(bob_account), Some(13 * XLM));
    }

    async fn a_create_account_that_finds_the_destination_existing_is_rebuilt_as_a_payment(kind: Target) {
        // bob does not exist when the payment is built (a fenced 404), so it is a
        // create_account; its submissions are lost, and bob's account is created meanwhile.
        // The resubmitted bytes fail in their ledger with op_already_exists: nothing was paid
        // and the sequence is spent, so the payment is rebuilt as a payment on a new one, not
        // left FAILED.
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", None).await;
        s.sim.timeout_without_apply(1_000);
        let id = s.accepted(&alice, &bob, "3").await;
        let submitted = eventually(Duration::from_secs(30), || async { s.payment(&id).await["status"] == "SUBMITTED" }).await;
        assert!(submitted, "{}\n{}", s.payment(&id).await, s.stack.gateway.log());
        must(s.sim.create_account(bob_account, 10 * XLM));
        s.sim.clear_faults();
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}\n{}", s.stack.gateway.log());
        assert!(payment.to_string().contains("op_already_exists"), "the create_account never failed: the test proved nothing\n{payment}");
        // The failed create_account and the payment: two applied, one paid.
        assert_eq!(s.sim.applied_from(alice_account).len(), 2);
        assert_eq!(s.sim.balance(bob_account), Some(13 * XLM));
    }

    async fn a_sequence_read_from_a_node_behind_the_last_applied_payment_is_not_used(kind: Target) {
        // Every node lags 40 ledgers. The first payment applies at ledger L (the submission says
        // so); the second one's account read comes from a node 40 ledgers behind L and shows the
        // sequence the first one used. Building on it makes a transaction signerd's guard (or
        // the network, tx_bad_seq) refuses; the read must be retried instead.
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        s.sim.set_node_lags(&[40, 40]);
        must(s.sim.wait_for_ledger(s.sim.ledger_sequence() + 2, Duration::from_secs(30)).await);
        let first = s.accepted(&alice, &bob, "1").await;
        assert_eq!(s.finished(&first).await["status"], "SUCCESS");
        let second = s.accepted(&alice, &bob, "2").await;
        let payment = s.finished(&second).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
        let log = s.stack.gateway.log();
        assert!(!log.contains("sequence in use"), "a stale sequence was used:\n{log}");
        assert_eq!(s.sim.applied_from(alice_account).len(), 2);
        assert_eq!(s.sim.balance(bob_account), Some(13 * XLM));
        // Horizon's synchronous submission answers from an up-to-date node, so the gateway
        // knows of ledger L before any lagging node has it and must refuse their reads. RPC's
        // answer comes from getTransaction polling through the same lagging nodes: the gateway
        // never learns of a ledger ahead of them, so there is no behind read to refuse.
        if kind.backend == Backend::Horizon {
            let metrics = s.stack.http.get("/metrics", None).await.body;
            assert!(metrics.contains("gateway_network_reads_behind_total{read=\"source_sequence\"}"), "{metrics}");
        }
    }

    async fn a_transaction_that_never_landed_is_rebuilt_once_provably_dead(kind: Target) {
        // max_time 1 s ahead, so the first transaction expires at once; signerd's guard then
        // holds the rebuild until max_time + 60 s: this test takes about a minute.
        let s = PaymentStack::start_with_validity(kind, "", 1).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        s.sim.timeout_without_apply(1_000);
        let id = s.accepted(&alice, &bob, "7").await;
        // Wait for the rebuild decision (back to CREATED after a SIGNED transaction).
        let rebuilt = eventually(Duration::from_secs(30), || async {
            statuses(&s.payment(&id).await).iter().skip(1).any(|st| st == "CREATED")
        })
        .await;
        assert!(rebuilt, "never rebuilt: {}\n{}", s.payment(&id).await, s.stack.gateway.log());
        let first_hash = s.payment(&id).await["history"][1]["tx_hash"].as_str().unwrap_or_default().to_owned();
        s.sim.clear_faults();
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
        let signed: Vec<&Value> = payment["history"].as_array().map(|h| h.iter().filter(|e| e["status"] == "SIGNED").collect()).unwrap_or_default();
        assert_eq!(signed.len(), 2, "{payment}");
        assert_ne!(payment["tx_hash"].as_str(), Some(first_hash.as_str()));
        // The first transaction never landed, the second once, the same sequence number reused.
        assert_eq!(s.sim.applications(must(first_hash.parse())), 0);
        assert_eq!(s.sim.applications(PaymentStack::hash_of(&payment)), 1);
        assert_eq!(s.sim.applied_from(alice_account).len(), 1);
        assert_eq!(s.sim.balance(bob_account), Some(17 * XLM));
    }

    async fn a_stale_read_after_an_applied_504_never_pays_twice(kind: Target) {
        // Issue 12's double payment. Reads alternate between a Horizon node 40 ledgers (8 s)
        // behind and an up-to-date one; the submission is applied but answered 504; the
        // transaction shows in Horizon only 100 ledgers (20 s) after it applied. A confirmation
        // that takes the fresh node's ledger (past max_time) with the stale node's account (the
        // sequence not yet used) and a 404 proves nothing; a rebuild that then reads the account
        // afresh signs a second payment at S+1.
        let s = PaymentStack::start_with_validity(kind, "", 2).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        s.sim.set_node_lags(&[40, 0]);
        s.sim.delay_ingestion(100);
        s.sim.timeout_after_apply(1);
        let id = s.accepted(&alice, &bob, "7").await;
        let payment = s.finished(&id).await;
        let applied = s.sim.applied_from(alice_account);
        assert_eq!(applied.len(), 1, "paid {} times: {applied:?}\n{payment}\n{}", applied.len(), s.stack.gateway.log());
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
        assert_eq!(s.sim.applications(PaymentStack::hash_of(&payment)), 1, "{payment}");
        assert_eq!(payment["sequence"].as_i64(), Some(applied[0].sequence), "{payment}");
        assert_eq!(s.sim.balance(bob_account), Some(17 * XLM));
    }

    async fn a_signature_refused_for_stale_time_bounds_is_built_again_not_failed(kind: Target) {
        // The payment is built with max_time 3 s ahead, then signerd stalls (SIGSTOP) past it:
        // the gateway's call times out (10 s) and is retried once signerd runs again, and signerd
        // refuses the now stale time bounds. Nothing was signed, so the payment must be built
        // again with fresh bounds, not failed. No wall-clock boundary: the stall is at least
        // 10 s against 3 s of validity.
        let s = PaymentStack::start_with_validity(kind, "", 3).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        must(s.stack.signerd.signal("STOP"));
        let id = s.accepted(&alice, &bob, "2").await;
        let timed_out = eventually(Duration::from_secs(60), || async {
            s.stack.gateway.log().contains("signerd call failed; retrying")
        })
        .await;
        must(s.stack.signerd.signal("CONT"));
        assert!(timed_out, "the signing call never timed out:\n{}", s.stack.gateway.log());
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}\n{}", s.stack.gateway.log());
        assert!(
            s.stack.gateway.log().contains("time bounds went stale"),
            "signerd never refused stale bounds: the test proved nothing\n{}",
            s.stack.gateway.log()
        );
        assert_eq!(s.sim.applied_from(alice_account).len(), 1);
        assert_eq!(s.sim.balance(bob_account), Some(12 * XLM));
    }

    async fn a_sequence_spent_by_another_signer_is_rebuilt_on_a_new_one_and_the_wallet_goes_on(kind: Target) {
        // The payment is signed at S, its submissions are lost, and another signer of the
        // account uses S meanwhile. Its transaction can never apply: the account's history
        // shows S taken by a transaction that is not the payment's, so it is rebuilt on a new
        // sequence (not confirmed forever), and the wallet's next payment follows.
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        s.sim.timeout_without_apply(1_000);
        let id = s.accepted(&alice, &bob, "3").await;
        let submitted = eventually(Duration::from_secs(30), || async { s.payment(&id).await["status"] == "SUBMITTED" }).await;
        assert!(submitted, "{}\n{}", s.payment(&id).await, s.stack.gateway.log());
        let signed_at = s.payment(&id).await["sequence"].as_i64();
        let other = must(s.sim.consume_sequence(alice_account));
        let used = eventually(Duration::from_secs(30), || async { s.sim.applications(other) == 1 }).await;
        assert!(used, "the other signer's transaction never applied");
        s.sim.clear_faults();
        let next = s.accepted(&alice, &bob, "4").await;
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}\n{}", s.stack.gateway.log());
        assert_ne!(payment["sequence"].as_i64(), signed_at, "{payment}");
        assert_eq!(s.finished(&next).await["status"], "SUCCESS");
        // Three transactions from alice: the other signer's and the two payments, once each.
        assert_eq!(s.sim.applied_from(alice_account).len(), 3);
        assert_eq!(s.sim.balance(bob_account), Some(17 * XLM));
    }

    async fn a_spent_sequence_the_history_no_longer_shows_needs_attention_and_an_admin_resolves_it(kind: Target) {
        // As above, but Horizon keeps 5 ledgers of history and the other signer's transaction
        // is gone from it when the gateway looks: nobody can tell from Horizon whether the
        // payment's transaction was the one that used S. It is parked as NEEDS_ATTENTION (not
        // confirmed forever, not failed, not rebuilt), the wallet's next payment goes on, and an
        // admin resolves it.
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        s.sim.set_history_retention(5);
        s.sim.timeout_without_apply(1_000);
        let id = s.accepted(&alice, &bob, "3").await;
        let submitted = eventually(Duration::from_secs(30), || async { s.payment(&id).await["status"] == "SUBMITTED" }).await;
        assert!(submitted, "{}\n{}", s.payment(&id).await, s.stack.gateway.log());
        // Horizon is down while the other signer's transaction applies and leaves the history,
        // so the gateway cannot see it there.
        s.sim.set_outage(true);
        let other = must(s.sim.consume_sequence(alice_account));
        let used = eventually(Duration::from_secs(30), || async { s.sim.ledger_of(other).is_some() }).await;
        assert!(used, "the other signer's transaction never applied");
        let applied_in = s.sim.ledger_of(other).unwrap_or_default();
        must(s.sim.wait_for_ledger(applied_in + 10, Duration::from_secs(30)).await);
        s.sim.set_faults(horizon_sim::Faults { history_retention_ledgers: 5, ..Default::default() });
        let parked = eventually(Duration::from_secs(60), || async { s.payment(&id).await["status"] == "NEEDS_ATTENTION" }).await;
        assert!(parked, "{}\n{}", s.payment(&id).await, s.stack.gateway.log());
        let payment = s.payment(&id).await;
        assert!(payment["failure_reason"].as_str().unwrap_or_default().starts_with("SEQUENCE_SPENT_UNKNOWN"), "{payment}");
        let metrics = s.stack.http.get("/metrics", None).await.body;
        assert!(metrics.contains("gateway_payments_needing_attention_total 1"), "{metrics}");
        // The wallet is not blocked by it.
        let next = s.accepted(&alice, &bob, "4").await;
        assert_eq!(s.finished(&next).await["status"], "SUCCESS");
        // Resolving: admin only, only a payment that needs attention, with a reason.
        let resolve = |key: String, id: String, body: Value| {
            let s = &s;
            async move { s.stack.http.post(&format!("/v1/payments/{id}/resolve"), &key, &body.to_string()).await }
        };
        let by_service = resolve(s.stack.service_key.clone(), id.clone(), json!({ "resolution": "FAILED", "reason": "x" })).await;
        assert_eq!(by_service.status, 403, "{}", by_service.body);
        let no_reason = resolve(s.stack.admin_key.clone(), id.clone(), json!({ "resolution": "FAILED", "reason": "" })).await;
        assert_eq!(no_reason.error_code(), "VALIDATION_FAILED", "{}", no_reason.body);
        let not_parked = resolve(s.stack.admin_key.clone(), next.clone(), json!({ "resolution": "FAILED", "reason": "x" })).await;
        assert_eq!(not_parked.error_code(), "PAYMENT_NOT_NEEDING_ATTENTION", "{}", not_parked.body);
        let resolved = resolve(s.stack.admin_key.clone(), id.clone(), json!({ "resolution": "FAILED", "reason": "the other signer's transaction, checked in the archive" })).await;
        assert_eq!(resolved.status, 200, "{}", resolved.body);
        assert_eq!(resolved.json()["status"], "FAILED");
        assert_eq!(statuses(&resolved.json()).last().map(String::as_str), Some("FAILED"));
        // The admin's decision is an audit event (and the refused attempts left none).
        let events = s
            .stack
            .http
            .get(&format!("/v1/audit-events?subject_type=payment&subject_id={id}"), Some(&s.stack.admin_key))
            .await
            .json();
        let events = events["events"].as_array().cloned().unwrap_or_default();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["action"], "payment.resolved");
        assert_eq!(events[0]["details"]["resolution"], "FAILED");
        // Nothing of the payment's was ever applied: bob got the second payment only.
        assert_eq!(s.sim.applied_from(alice_account).len(), 2);
        assert_eq!(s.sim.balance(bob_account), Some(14 * XLM));
    }

    async fn a_rate_limited_read_is_retried_after_its_retry_after(kind: Target) {
        // Horizon answers 429 with Retry-After: 1 to the balance read; the read is made again
        // after that second instead of failing.
        let s = PaymentStack::start(kind).await;
        let (alice, _) = s.wallet("alice", Some(100 * XLM)).await;
        s.sim.rate_limited(1);
        let balance = s.stack.http.get(&format!("/v1/wallets/{alice}/balance"), Some(&s.stack.service_key)).await;
        assert_eq!(balance.status, 200, "{}", balance.body);
        assert_eq!(balance.json()["balance"], "100.0000000");
        assert_eq!(s.sim.faults().rate_limited, 0, "the 429 was never served");
    }

    async fn friendbot_behind_a_redirect_funds_the_wallet(kind: Target) {
        // Horizon with a separate friendbot answers /friendbot with a 307 to it.
        let mut config = SimConfig::with_ledger_interval(LEDGER_INTERVAL);
        config.friendbot_redirect = true;
        let sim = must(HorizonSim::start(config).await);
        let stack = Stack::start_with(
            kind.db,
            GatewayOptions {
                network_url: Some(kind.backend.url(&sim.url())),
                network_kind: kind.backend.kind(),
                ..GatewayOptions::default()
            },
        )
        .await;
        let s = PaymentStack { stack, sim };
        let (alice, alice_account) = s.wallet("alice", None).await;
        let funded = s.stack.http.post(&format!("/v1/wallets/{alice}/fund"), &s.stack.service_key, "{}").await;
        assert_eq!(funded.status, 200, "{}", funded.body);
        assert_eq!(funded.json()["funded"], true, "{}", funded.body);
        let exists = eventually(Duration::from_secs(30), || async { s.sim.balance(alice_account).is_some() }).await;
        assert!(exists, "friendbot never created the account");
    }

    async fn a_payment_bids_up_to_the_cap_and_clears_a_surge_at_the_clearing_price(kind: Target) {
        // A surge begins just before the payment: other parties fill every ledger bidding 1,000
        // stroops per operation, more than fee_stats (the last 5 ledgers) showed. A bid taken
        // from fee_stats is refused (tx_insufficient_fee) until it expires; a bid at the cap
        // (10,000) is included at once and pays the clearing price, not its bid.
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        s.sim.set_surge(1_000, 1_000);
        let id = s.accepted(&alice, &bob, "5").await;
        let payment = s.finished_within(&id, Duration::from_secs(30)).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
        let charged = payment["fee_stroops"].as_i64().unwrap_or(-1);
        assert!((1_000..10_000).contains(&charged), "charged {charged}: not the clearing price\n{payment}");
        assert_eq!(s.sim.applied_from(alice_account).len(), 1);
        assert_eq!(s.sim.balance(bob_account), Some(15 * XLM));
    }

    async fn a_transaction_stuck_in_a_surge_is_fee_bumped_not_left_to_expire(kind: Target) {
        // A payment signed under a 100-stroop cap is stuck in a surge (others bid 1,000 and fill
        // every ledger; its bid is refused). The cap is raised and the gateway restarted: the
        // stored transaction is wrapped in a fee bump at the new cap (same inner transaction,
        // same sequence), included at once, instead of waiting for max_time (60 s) and
        // signerd's guard (60 s more) to rebuild it.
        let mut s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        let config = s.stack.gateway.config.clone();
        let with_cap = |cap: u32| {
            let text = must(std::fs::read_to_string(&config));
            let text = text
                .lines()
                .filter(|line| !line.starts_with("max_fee_stroops"))
                .map(|line| {
                    if line.starts_with("max_validity_secs") {
                        format!("{line}\nmax_fee_stroops = {cap}")
                    } else {
                        line.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            must(std::fs::write(&config, text));
        };
        s.stack.gateway.terminate().await;
        with_cap(100);
        s.stack.gateway.launch().await;
        s.stack.http = Http::new(s.stack.gateway.addr);
        s.sim.set_surge(1_000, 1_000);
        let id = s.accepted(&alice, &bob, "5").await;
        let stuck = eventually(Duration::from_secs(30), || async {
            let payment = s.payment(&id).await;
            payment["status"] == "SUBMITTED" && payment["attempts"].as_i64().unwrap_or(0) >= 2
        })
        .await;
        assert!(stuck, "{}\n{}", s.payment(&id).await, s.stack.gateway.log());
        let inner: String = s.payment(&id).await["tx_hash"].as_str().unwrap_or_default().to_owned();
        s.stack.gateway.terminate().await;
        with_cap(10_000);
        s.stack.gateway.launch().await;
        s.stack.http = Http::new(s.stack.gateway.addr);
        let payment = s.finished_within(&id, Duration::from_secs(30)).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
        // The fee bump carried the very transaction signed first: its inner hash applied once.
        assert_eq!(s.sim.applications(must(inner.parse())), 1, "{payment}");
        assert_ne!(payment["tx_hash"].as_str(), Some(inner.as_str()), "{payment}");
        let applied = s.sim.applied_from(alice_account);
        assert_eq!(applied.len(), 1, "{applied:?}");
        assert_eq!(applied[0].inner_hash.map(|h| h.to_string()), Some(inner.clone()), "{applied:?}");
        assert_eq!(s.sim.balance(bob_account), Some(15 * XLM));
    }

    async fn readiness_reports_the_network_without_depending_on_it(kind: Target) {
        // Payments wait out a network outage, so the gateway stays ready; the report names the
        // backend and why it is not usable.
        let s = PaymentStack::start(kind).await;
        let ready = s.stack.http.get("/health/ready", None).await;
        assert_eq!(ready.status, 200, "{}", ready.body);
        assert_eq!(ready.json()["network"], "ok", "{}", ready.body);
        s.sim.set_outage(true);
        let ready = s.stack.http.get("/health/ready", None).await;
        assert_eq!(ready.status, 200, "{}", ready.body);
        let network = ready.json()["network"].as_str().unwrap_or_default().to_owned();
        assert!(network.starts_with(&format!("{}: ", kind.backend.kind())), "{}", ready.body);
        s.sim.set_outage(false);
    }

    async fn a_payment_reaches_success_and_moves_the_balances(kind: Target) {
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        let id = s.accepted(&alice, &bob, "12.5").await;
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
        assert_eq!(statuses(&payment), ["CREATED", "SIGNED", "SUBMITTED", "SUCCESS"]);
        assert_eq!(payment["amount"], "12.5000000");
        let hash = PaymentStack::hash_of(&payment);
        assert_eq!(s.sim.applications(hash), 1);
        assert_eq!(payment["ledger"].as_i64().map(|l| l as u32), s.sim.ledger_of(hash));
        let fee = payment["fee_stroops"].as_i64().unwrap_or(-1);
        assert!(fee >= 100, "{payment}");
        assert_eq!(s.sim.balance(bob_account), Some(10 * XLM + 125_000_000));
        assert_eq!(s.sim.balance(alice_account), Some(100 * XLM - 125_000_000 - fee));

        // The balance route reads the same numbers from Horizon.
        let balance = s.stack.http.get(&format!("/v1/wallets/{bob}/balance"), Some(&s.stack.service_key)).await;
        assert_eq!(balance.status, 200, "{}", balance.body);
        assert_eq!(balance.json()["balance"], "22.5000000");
        // And the wallet's list shows it.
        let list = s.stack.http.get(&format!("/v1/wallets/{alice}/payments"), Some(&s.stack.service_key)).await;
        assert_eq!(list.status, 200, "{}", list.body);
        assert_eq!(list.json()["payments"].as_array().map(Vec::len), Some(1));
        assert_eq!(list.json()["payments"][0]["id"], id.as_str());

        // A payment to a G... address (not a wallet) also goes through.
        let outsider = AccountKey([9; 32]);
        must(s.sim.create_account(outsider, XLM));
        let id = s.accepted(&alice, &outsider.address(), "1").await;
        assert_eq!(s.finished(&id).await["status"], "SUCCESS");
        assert_eq!(s.sim.balance(outsider), Some(2 * XLM));
    }

    async fn a_wallet_is_held_for_its_next_payment_and_given_up_when_another_needs_the_slot(kind: Target) {
        // One slot, no scan unless woken (every 10 min), an idle wallet held up to 5 min: each
        // payment below finishes within `finished`'s 90 s only if the API hands it to the drive
        // holding its wallet, or the held wallet gives way to the one that needs the slot.
        let s = PaymentStack::start_with(
            kind,
            "worker_concurrency = 1\npoll_interval_ms = 600000\nlease_ms = 900000\nidle_hold_ms = 300000",
        )
        .await;
        let (alice, _) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        let (carol, _) = s.wallet("carol", Some(100 * XLM)).await;
        let store = s.stack.db.store().await;
        let lease = |wallet: String| {
            let store = store.clone();
            async move {
                must(sqlx::query("SELECT owner FROM payment_leases WHERE wallet_id = $1 AND expires_at_ms > 0")
                    .bind(wallet)
                    .fetch_optional(store.pool())
                    .await)
                .is_some()
            }
        };

        let first = s.accepted(&alice, &bob, "1").await;
        assert_eq!(s.finished(&first).await["status"], "SUCCESS");
        assert!(lease(alice.clone()).await, "alice's wallet was given back, not held");
        let second = s.accepted(&alice, &bob, "2").await;
        assert_eq!(s.finished(&second).await["status"], "SUCCESS");
        let other = s.accepted(&carol, &bob, "4").await;
        assert_eq!(s.finished(&other).await["status"], "SUCCESS");
        assert!(!lease(alice.clone()).await, "alice's idle wallet kept the only slot");
        assert_eq!(s.sim.balance(bob_account), Some(17 * XLM));
        store.close().await;
    }

    async fn the_same_idempotency_key_twice_makes_one_payment(kind: Target) {
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, _) = s.wallet("bob", Some(10 * XLM)).await;
        let first = s.pay_with_key(&alice, &bob, "3", "pay-once").await;
        let second = s.pay_with_key(&alice, &bob, "3", "pay-once").await;
        assert_eq!(first.status, 202, "{}", first.body);
        assert_eq!(second.status, 202, "{}", second.body);
        assert_eq!(first.json()["id"], second.json()["id"]);
        assert!(first.headers.get("idempotent-replayed").is_none());
        assert_eq!(second.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
        // Same key, different request: refused, not a second payment.
        let other = s.pay_with_key(&alice, &bob, "4", "pay-once").await;
        assert_eq!(other.status, 422, "{}", other.body);
        assert_eq!(other.error_code(), "IDEMPOTENCY_CONFLICT", "{}", other.body);
        let id = first.json()["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(s.finished(&id).await["status"], "SUCCESS");
        // A replay still answers the payment after the wallet was frozen; a new request does not.
        let frozen = s.stack.http.post(&format!("/v1/wallets/{alice}/freeze"), &s.stack.admin_key,
            &json!({ "reason": "test" }).to_string()).await;
        assert_eq!(frozen.status, 200, "{}", frozen.body);
        let replay = s.pay_with_key(&alice, &bob, "3", "pay-once").await;
        assert_eq!(replay.status, 202, "{}", replay.body);
        assert_eq!(replay.json()["id"], first.json()["id"]);
        assert_eq!(replay.json()["status"], "SUCCESS");
        assert_eq!(s.pay_with_key(&alice, &bob, "3", "pay-twice").await.error_code(), "WALLET_FROZEN");

        // Requests racing on one key: the unique index lets one insert, the others replay it.
        let (carol, _) = s.wallet("carol", Some(100 * XLM)).await;
        let racing = futures::future::join_all((0..8).map(|_| s.pay_with_key(&carol, &bob, "2", "raced"))).await;
        let ids: HashSet<String> = racing
            .iter()
            .map(|r| {
                assert_eq!(r.status, 202, "{}", r.body);
                r.json()["id"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 1, "{ids:?}");
        let replays = racing.iter().filter(|r| r.headers.contains_key("idempotent-replayed")).count();
        assert_eq!(replays, racing.len() - 1);
        assert_eq!(s.sim.applied_from(alice_account).len(), 1);
        let list = s.stack.http.get(&format!("/v1/wallets/{alice}/payments"), Some(&s.stack.service_key)).await;
        assert_eq!(list.json()["payments"].as_array().map(Vec::len), Some(1));
    }

    async fn a_504_after_apply_pays_exactly_once(kind: Target) {
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        s.sim.timeout_after_apply(1);
        let id = s.accepted(&alice, &bob, "5").await;
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
        assert_eq!(s.sim.faults().timeout_after_apply, 0, "the fault was never hit");
        assert_eq!(s.sim.applications(PaymentStack::hash_of(&payment)), 1);
        assert_eq!(s.sim.applied_from(alice_account).len(), 1);
        assert_eq!(s.sim.balance(bob_account), Some(15 * XLM));
    }

    async fn a_transaction_applied_but_not_yet_ingested_is_waited_for_not_rebuilt(kind: Target) {
        // max_time 1 s ahead; the submission answers 504 after applying, and Horizon shows the
        // transaction only 15 ledgers (3 s) later. Meanwhile a closed ledger passes max_time with
        // the hash unknown: only the account's consumed sequence tells the worker the
        // transaction landed. A rebuild would be built on the next sequence and pay twice.
        let s = PaymentStack::start_with_validity(kind, "", 1).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        s.sim.delay_ingestion(15);
        s.sim.timeout_after_apply(1);
        let id = s.accepted(&alice, &bob, "3").await;
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
        assert_eq!(s.sim.faults().timeout_after_apply, 0, "the fault was never hit");
        assert_eq!(statuses(&payment).iter().filter(|st| *st == "SIGNED").count(), 1, "{payment}");
        assert_eq!(s.sim.applications(PaymentStack::hash_of(&payment)), 1);
        assert_eq!(s.sim.applied_from(alice_account).len(), 1);
        assert_eq!(s.sim.balance(bob_account), Some(13 * XLM));
    }

    async fn a_504_without_apply_is_resubmitted_and_pays_once(kind: Target) {
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        s.sim.timeout_without_apply(1);
        let id = s.accepted(&alice, &bob, "5").await;
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
        assert_eq!(s.sim.faults().timeout_without_apply, 0, "the fault was never hit");
        assert!(payment["attempts"].as_i64().unwrap_or(0) >= 2, "{payment}");
        // The same signed transaction, not a rebuilt one: one SIGNED step.
        assert_eq!(statuses(&payment).iter().filter(|s| *s == "SIGNED").count(), 1);
        assert_eq!(s.sim.applications(PaymentStack::hash_of(&payment)), 1);
        assert_eq!(s.sim.applied_from(alice_account).len(), 1);
        assert_eq!(s.sim.balance(bob_account), Some(15 * XLM));
    }

    async fn payments_wait_out_a_horizon_outage(kind: Target) {
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        s.sim.set_outage(true);
        let ids = [
            s.accepted(&alice, &bob, "1").await,
            s.accepted(&alice, &bob, "2").await,
        ];
        // The worker has met the outage (its calls fail) ...
        let met_outage = eventually(Duration::from_secs(30), || async {
            let metrics = s.stack.http.get("/metrics", None).await.body;
            metrics.lines().any(|l| {
                l.starts_with("gateway_network_calls_total")
                    && (l.contains("outcome=\"unavailable\"") || l.contains("outcome=\"rejected_open\""))
                    && !l.ends_with(" 0")
            })
        })
        .await;
        assert!(met_outage, "the worker never called Horizon during the outage");
        // ... and nothing is lost or failed meanwhile.
        for id in &ids {
            let payment = s.payment(id).await;
            assert_eq!(payment["status"], "CREATED", "{payment}");
        }
        s.sim.set_outage(false);
        for id in &ids {
            assert_eq!(s.finished(id).await["status"], "SUCCESS");
        }
        assert_eq!(s.sim.applied_from(alice_account).len(), 2);
        assert_eq!(s.sim.balance(bob_account), Some(13 * XLM));
    }

    async fn insufficient_balance_fails_with_op_underfunded(kind: Target) {
        let s = PaymentStack::start(kind).await;
        let (alice, alice_account) = s.wallet("alice", Some(5 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        let id = s.accepted(&alice, &bob, "50").await;
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "FAILED", "{payment}");
        assert_eq!(payment["result_codes"]["transaction"], "tx_failed", "{payment}");
        assert_eq!(payment["result_codes"]["operations"], json!(["op_underfunded"]), "{payment}");
        assert_eq!(s.sim.balance(bob_account), Some(10 * XLM));
        // Failed in a ledger: the fee was charged once, nothing else moved.
        assert_eq!(s.sim.applied_from(alice_account).len(), 1);
        let fee = payment["fee_stroops"].as_i64().unwrap_or(-1);
        assert_eq!(s.sim.balance(alice_account), Some(5 * XLM - fee));
    }

    async fn paying_an_account_that_does_not_exist_creates_it(kind: Target) {
        let s = PaymentStack::start(kind).await;
        let (alice, _) = s.wallet("alice", Some(100 * XLM)).await;
        let (carol, carol_account) = s.wallet("carol", None).await;
        assert_eq!(s.sim.balance(carol_account), None, "carol's account must not exist yet");
        let id = s.accepted(&alice, &carol, "25").await;
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
        assert_eq!(s.sim.balance(carol_account), Some(25 * XLM));
        // Below the base reserve the network refuses to create it: FAILED with op_low_reserve.
        let (dave, dave_account) = s.wallet("dave", None).await;
        let id = s.accepted(&alice, &dave, "0.5").await;
        let payment = s.finished(&id).await;
        assert_eq!(payment["status"], "FAILED", "{payment}");
        assert_eq!(payment["result_codes"]["operations"], json!(["op_low_reserve"]), "{payment}");
        assert_eq!(s.sim.balance(dave_account), None);
    }

    async fn validation_limits_and_blocks_are_enforced(kind: Target) {
        let s = PaymentStack::start(kind).await;
        let (alice, _) = s.wallet("alice", Some(100 * XLM)).await;
        let (bob, bob_account) = s.wallet("bob", Some(10 * XLM)).await;
        for (amount, destination) in [
            ("0", bob.as_str()), ("-1", bob.as_str()), ("1.00000001", bob.as_str()),
            ("1e3", bob.as_str()), ("1", "GNOTANACCOUNT"), ("1", alice.as_str()),
        ] {
            let reply = s.pay(&alice, destination, amount).await;
            assert_eq!(reply.status, 400, "{amount} {destination}: {}", reply.body);
            assert_eq!(reply.error_code(), "VALIDATION_FAILED");
        }
        let memo = s.stack.http.post("/v1/payments", &s.stack.service_key, &json!({
            "source_wallet_id": alice, "destination": bob, "amount": "1", "memo": "x".repeat(29)
        }).to_string()).await;
        assert_eq!(memo.error_code(), "VALIDATION_FAILED", "{}", memo.body);
        let asset = s.stack.http.post("/v1/payments", &s.stack.service_key, &json!({
            "source_wallet_id": alice, "destination": bob, "amount": "1", "asset": "USDC"
        }).to_string()).await;
        assert_eq!(asset.error_code(), "VALIDATION_FAILED", "{}", asset.body);

        // Daily count limit (admin override): 2 payments, the third refused.
        let limits = s.stack.http.post(&format!("/v1/wallets/{alice}/limits"), &s.stack.admin_key,
            &json!({ "daily_count": 2, "daily_amount": "100" }).to_string()).await;
        assert_eq!(limits.status, 200, "{}", limits.body);
        let service_cannot = s.stack.http.post(&format!("/v1/wallets/{alice}/limits"), &s.stack.service_key,
            &json!({ "daily_count": 100 }).to_string()).await;
        assert_eq!(service_cannot.status, 403);
        let first = s.accepted(&alice, &bob, "1").await;
        let _second = s.accepted(&alice, &bob, "1").await;
        let third = s.pay(&alice, &bob, "1").await;
        assert_eq!(third.status, 422, "{}", third.body);
        assert_eq!(third.error_code(), "LIMIT_EXCEEDED");
        // Daily amount limit: raise the count, 98 lumens left of 100.
        s.stack.http.post(&format!("/v1/wallets/{alice}/limits"), &s.stack.admin_key,
            &json!({ "daily_count": 100, "daily_amount": "100" }).to_string()).await;
        let too_much = s.pay(&alice, &bob, "98.0000001").await;
        assert_eq!(too_much.error_code(), "LIMIT_EXCEEDED", "{}", too_much.body);
        assert_eq!(s.finished(&first).await["status"], "SUCCESS");
        // A refusal leaves nothing behind (the payment row is inserted, then rolled back).
        let stack = &s.stack;
        let count = |wallet: String| async move {
            stack.http.get(&format!("/v1/wallets/{wallet}/payments"), Some(&stack.service_key)).await.json()["payments"]
                .as_array().map(Vec::len)
        };
        assert_eq!(count(alice.clone()).await, Some(2));

        // Frozen wallet and blocked user are refused at accept time.
        let frozen = s.stack.http.post(&format!("/v1/wallets/{alice}/freeze"), &s.stack.admin_key,
            &json!({ "reason": "test" }).to_string()).await;
        assert_eq!(frozen.status, 200, "{}", frozen.body);
        assert_eq!(s.pay(&alice, &bob, "1").await.error_code(), "WALLET_FROZEN");
        let bob_user = s.stack.http.get(&format!("/v1/wallets/{bob}"), Some(&s.stack.service_key)).await.json()["user_id"]
            .as_str().unwrap_or_default().to_owned();
        let blocked = s.stack.http.post(&format!("/v1/users/{bob_user}/block"), &s.stack.admin_key,
            &json!({ "reason": "test" }).to_string()).await;
        assert_eq!(blocked.status, 200, "{}", blocked.body);
        let (carol, _) = s.wallet("carol", Some(100 * XLM)).await;
        assert_eq!(s.pay(&bob, &carol, "1").await.error_code(), "USER_BLOCKED");
        // A limit of zero refuses even the day's first payment.
        let zero = s.stack.http.post(&format!("/v1/wallets/{carol}/limits"), &s.stack.admin_key,
            &json!({ "daily_count": 0 }).to_string()).await;
        assert_eq!(zero.status, 200, "{}", zero.body);
        assert_eq!(s.pay(&carol, &alice, "1").await.error_code(), "LIMIT_EXCEEDED");
        assert_eq!(count(carol.clone()).await, Some(0));

        // Blocked after acceptance: the worker re-checks before signing and fails it. Horizon
        // is down meanwhile so the worker cannot sign it first.
        let (dave, dave_account) = s.wallet("dave", Some(100 * XLM)).await;
        s.sim.set_outage(true);
        let late = s.accepted(&dave, &carol, "1").await;
        let dave_user = s.stack.http.get(&format!("/v1/wallets/{dave}"), Some(&s.stack.service_key)).await.json()["user_id"]
            .as_str().unwrap_or_default().to_owned();
        let blocked = s.stack.http.post(&format!("/v1/users/{dave_user}/block"), &s.stack.admin_key,
            &json!({ "reason": "test" }).to_string()).await;
        assert_eq!(blocked.status, 200, "{}", blocked.body);
        s.sim.set_outage(false);
        let payment = s.finished(&late).await;
        assert_eq!(payment["status"], "FAILED", "{payment}\n{}", s.stack.gateway.log());
        assert!(payment["failure_reason"].as_str().unwrap_or_default().starts_with("USER_BLOCKED"), "{payment}");
        assert!(s.sim.applied_from(dave_account).is_empty());
        let _ = bob_account;
    }

    async fn two_hundred_concurrent_payments_from_ten_wallets(kind: Target) {
        let s = PaymentStack::start(kind).await;
        let (sink, sink_account) = s.wallet("sink", Some(10 * XLM)).await;
        let mut sources = Vec::new();
        for i in 0..10 {
            sources.push(s.wallet(&format!("source-{i}"), Some(1_000 * XLM)).await);
        }
        let starting: Vec<i64> = sources.iter().map(|(_, a)| s.sim.sequence(*a).unwrap_or(-1)).collect();
        let posts = (0..200).map(|i| {
            let source = sources[i % 10].0.clone();
            let sink = sink.clone();
            let s = &s;
            async move { s.accepted(&source, &sink, "1").await }
        });
        let ids: Vec<String> = futures::future::join_all(posts).await;
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 200);
        let mut by_source: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut hashes = HashSet::new();
        for id in &ids {
            let payment = s.finished(id).await;
            assert_eq!(payment["status"], "SUCCESS", "{payment}");
            by_source
                .entry(payment["source_wallet_id"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(payment["sequence"].as_i64().unwrap_or(-1));
            let hash = PaymentStack::hash_of(&payment);
            assert_eq!(s.sim.applications(hash), 1, "{payment}");
            assert!(hashes.insert(hash));
        }
        for (i, (wallet, account)) in sources.iter().enumerate() {
            let mut sequences = by_source.remove(wallet).unwrap_or_default();
            sequences.sort_unstable();
            let wanted: Vec<i64> = (1..=20).map(|k| starting[i] + k).collect();
            assert_eq!(sequences, wanted, "sequence numbers of {wallet} are not contiguous");
            assert_eq!(s.sim.applied_from(*account).len(), 20, "{wallet} paid a different number of times");
        }
        assert_eq!(s.sim.balance(sink_account), Some(210 * XLM));
    }

    async fn a_gateway_killed_mid_flight_never_pays_twice(kind: Target) {
        let mut s = PaymentStack::start(kind).await;
        let (sink, sink_account) = s.wallet("sink", Some(10 * XLM)).await;
        let mut sources = Vec::new();
        for i in 0..3 {
            sources.push(s.wallet(&format!("source-{i}"), Some(1_000 * XLM)).await);
        }
        // Slow ingestion and a few 504s make sure some payments are between "sent" and "known".
        s.sim.delay_ingestion(2);
        s.sim.timeout_after_apply(3);
        let mut ids = Vec::new();
        for i in 0..30 {
            ids.push(s.accepted(&sources[i % 3].0, &sink, "1").await);
        }
        let some_done = eventually(Duration::from_secs(60), || async {
            let mut done = 0;
            for id in &ids {
                if s.payment(id).await["status"] == "SUCCESS" {
                    done += 1;
                }
            }
            done >= 3
        })
        .await;
        assert!(some_done, "nothing finished before the kill:\n{}", s.stack.gateway.log());
        s.stack.gateway.sigkill();
        let _ = s.stack.gateway.wait().await;
        let unfinished = {
            let mut n = 0;
            let store = s.stack.db.store().await;
            for id in &ids {
                let row = must(sqlx::query("SELECT status FROM payments WHERE id = $1").bind(id).fetch_one(store.pool()).await);
                let status: String = must(sqlx::Row::try_get(&row, "status"));
                if status != "SUCCESS" && status != "FAILED" { n += 1; }
            }
            store.close().await;
            n
        };
        assert!(unfinished > 0, "every payment finished before the kill: the test proves nothing");
        s.sim.delay_ingestion(0);
        s.stack.gateway.launch().await;
        s.stack.http = Http::new(s.stack.gateway.addr);
        let mut succeeded = 0;
        for id in &ids {
            let payment = s.finished(id).await;
            assert_eq!(payment["status"], "SUCCESS", "{payment}");
            assert_eq!(s.sim.applications(PaymentStack::hash_of(&payment)), 1, "{payment}");
            succeeded += 1;
        }
        let applied: usize = sources.iter().map(|(_, a)| s.sim.applied_from(*a).len()).sum();
        assert_eq!(applied, succeeded, "the ledger holds a payment the gateway does not know");
        assert_eq!(s.sim.balance(sink_account), Some((10 + 30) * XLM));
    }
}

/// Two `gateway worker` processes on one Postgres (the `serve` process runs none, so every
/// payment is driven by a standalone worker) share the work without ever having two
/// transactions in flight for one account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_one_postgres_share_the_work_and_never_pay_twice_on_horizon() {
    workers_on_one_postgres_share_the_work_and_never_pay_twice(Backend::Horizon).await
}

/// As above, through Stellar RPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_one_postgres_share_the_work_and_never_pay_twice_on_rpc() {
    workers_on_one_postgres_share_the_work_and_never_pay_twice(Backend::Rpc).await
}

async fn workers_on_one_postgres_share_the_work_and_never_pay_twice(backend: Backend) {
    let s = PaymentStack::start_with(
        Target {
            db: DatabaseKind::Postgres,
            backend,
        },
        "worker = false",
    )
    .await;
    let _workers = [
        GatewayProcess::start_worker(&s.stack.gateway.config).await,
        GatewayProcess::start_worker(&s.stack.gateway.config).await,
    ];
    let (sink, sink_account) = s.wallet("sink", Some(10 * XLM)).await;
    let mut sources = Vec::new();
    for i in 0..8 {
        sources.push(s.wallet(&format!("source-{i}"), Some(1_000 * XLM)).await);
    }
    let starting: Vec<i64> = sources
        .iter()
        .map(|(_, a)| s.sim.sequence(*a).unwrap_or(-1))
        .collect();
    let posts = (0..80).map(|i| {
        let source = sources[i % 8].0.clone();
        let sink = sink.clone();
        let s = &s;
        async move { s.accepted(&source, &sink, "1").await }
    });
    let ids: Vec<String> = futures::future::join_all(posts).await;
    let mut by_source: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for id in &ids {
        let payment = s.finished(id).await;
        assert_eq!(payment["status"], "SUCCESS", "{payment}");
        assert_eq!(
            s.sim.applications(PaymentStack::hash_of(&payment)),
            1,
            "{payment}"
        );
        by_source
            .entry(
                payment["source_wallet_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
            .or_default()
            .push(payment["sequence"].as_i64().unwrap_or(-1));
    }
    for (i, (wallet, account)) in sources.iter().enumerate() {
        let mut sequences = by_source.remove(wallet).unwrap_or_default();
        sequences.sort_unstable();
        let wanted: Vec<i64> = (1..=10).map(|k| starting[i] + k).collect();
        assert_eq!(sequences, wanted, "sequence numbers of {wallet}");
        assert_eq!(s.sim.applied_from(*account).len(), 10);
    }
    assert_eq!(s.sim.balance(sink_account), Some(90 * XLM));
}

/// Debian's libfaketime: preloaded into one replica, it moves that process's clock (and only
/// that process's).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Today's UTC day by the Postgres server's clock.
async fn database_day(store: &gateway::store::Store) -> String {
    let row = must(
        sqlx::query("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day")
            .fetch_one(store.pool())
            .await,
    );
    must(row.try_get::<String, _>("day"))
}

/// Leases and daily-limit days follow the database's clock, not a replica's: a replica whose
/// clock runs three days ahead (libfaketime) accepts a payment for a wallet another replica is
/// holding. It must not take the lease over (a trigger records every change of hands with the
/// old lease's expiry by the database's clock: none may happen before it), nothing is paid
/// twice, and the payment counts toward the database's day, not the replica's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_runs_ahead_takes_no_live_lease_and_counts_the_database_day() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's faketime package (`apt-get install faketime`; \
         scripts/test.sh does). This test never skips."
    );
    // The first replica holds an idle wallet for 20 s under a 60 s lease: the skewed replica's
    // payment arrives while that lease is live by the database's clock.
    // Leases and days are the database's business: one backend shows it.
    let s = PaymentStack::start_with(
        Target::horizon(DatabaseKind::Postgres),
        "lease_ms = 60000\nidle_hold_ms = 20000\n",
    )
    .await;
    let store = s.stack.db.store().await;
    for statement in [
        "CREATE TABLE lease_handovers (old_owner TEXT, new_owner TEXT, old_expires_at_ms BIGINT, \
         at_ms BIGINT)",
        "CREATE FUNCTION record_lease_handover() RETURNS trigger AS $$ BEGIN \
           INSERT INTO lease_handovers VALUES (OLD.owner, NEW.owner, OLD.expires_at_ms, \
             CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)); \
           RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER lease_handover AFTER UPDATE OF epoch ON payment_leases FOR EACH ROW \
         WHEN (OLD.epoch <> NEW.epoch) EXECUTE FUNCTION record_lease_handover()",
    ] {
        must(sqlx::query(statement).execute(store.pool()).await);
    }
    let (sink, sink_account) = s.wallet("sink", Some(10 * XLM)).await;
    let (source, _) = s.wallet("source", Some(1_000 * XLM)).await;
    let day_before = database_day(&store).await;
    let first = s.accepted(&source, &sink, "1").await;
    let first = s.finished(&first).await;
    assert_eq!(first["status"], "SUCCESS", "{first}");
    // Started once the first replica holds the wallet, so it cannot lease it first.
    let ahead = GatewayProcess::start_replica_with_env(
        &s.stack.gateway.config,
        &[("LD_PRELOAD", LIBFAKETIME), ("FAKETIME", "+3d")],
    )
    .await;
    let ahead_http = Http::new(ahead.addr);
    let lease = must(
        sqlx::query(
            "SELECT owner, expires_at_ms > \
               CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) AS live \
             FROM payment_leases WHERE wallet_id = $1",
        )
        .bind(&source)
        .fetch_one(store.pool())
        .await,
    );
    let holder: String = must(lease.try_get("owner"));
    let live: bool = must(lease.try_get("live"));
    assert!(
        live,
        "the first replica should still hold the idle wallet (idle_hold_ms = 20000)"
    );

    let reply = ahead_http
        .post(
            "/v1/payments",
            &s.stack.service_key,
            &json!({ "source_wallet_id": source, "destination": sink, "amount": "2" }).to_string(),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let second = reply.json()["id"].as_str().unwrap_or_default().to_owned();
    let day_after = database_day(&store).await;
    // The skew is real: the replica stamped the payment with its own (three days ahead) clock.
    let created = must(
        sqlx::query("SELECT created_at FROM payments WHERE id = $1")
            .bind(&second)
            .fetch_one(store.pool())
            .await,
    );
    let created: String = must(created.try_get("created_at"));
    assert!(
        created.get(..10) > Some(day_after.as_str()),
        "the replica's clock is not ahead (created_at {created}, database day {day_after}): \
         libfaketime did not take effect\n{}",
        ahead.log()
    );

    // The skewed replica drives its own payment (its `next_attempt_at` is three days ahead for
    // everyone else) once the first replica gives the wallet back. signerd may refuse the time
    // bounds its clock sets; what matters here is that it waited for the lease and paid once.
    let second = s.finished(&second).await;
    assert_eq!(
        s.sim.applications(PaymentStack::hash_of(&first)),
        1,
        "{first}"
    );
    let paid_second = i64::from(second["status"] == "SUCCESS");
    if paid_second == 1 {
        assert_eq!(
            s.sim.applications(PaymentStack::hash_of(&second)),
            1,
            "{second}"
        );
    }
    assert_eq!(
        s.sim.balance(sink_account),
        Some(11 * XLM + paid_second * 2 * XLM),
        "{second}"
    );

    let handovers = must(
        sqlx::query("SELECT old_owner, new_owner, old_expires_at_ms, at_ms FROM lease_handovers")
            .fetch_all(store.pool())
            .await,
    );
    for row in &handovers {
        let old_owner: String = must(row.try_get("old_owner"));
        let expires: i64 = must(row.try_get("old_expires_at_ms"));
        let at: i64 = must(row.try_get("at_ms"));
        assert!(
            expires < at,
            "{old_owner}'s lease was taken over {} ms before it expired by the database's clock \
             (the skewed replica judged it by its own)\n{}",
            expires - at,
            ahead.log()
        );
    }
    // The skewed replica drove its payment only after the first replica gave the wallet back.
    assert!(
        handovers
            .iter()
            .any(|row| row.try_get::<String, _>("old_owner").ok().as_ref() == Some(&holder)),
        "the wallet never left the first replica ({} handovers)",
        handovers.len()
    );

    let usage = must(
        sqlx::query(
            "SELECT day, payment_count FROM wallet_daily_usage WHERE wallet_id = $1 ORDER BY day",
        )
        .bind(&source)
        .fetch_all(store.pool())
        .await,
    );
    let days: Vec<(String, i64)> = usage
        .iter()
        .map(|row| (must(row.try_get("day")), must(row.try_get("payment_count"))))
        .collect();
    let total: i64 = days.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 2, "{days:?}");
    for (day, _) in &days {
        assert!(
            *day == day_before || *day == day_after,
            "a payment counted toward {day}, not the database's day {day_after}: {days:?}"
        );
    }
    store.close().await;
}

/// When a payment is next due, and when it was accepted, follow the database's clock too: a
/// payment accepted by a replica whose clock runs three days ahead (libfaketime), which then
/// stops before it could work on it (the first replica holds the wallet), is due for the first
/// replica at once, and its new destination is proven absent (create_account) by a ledger that
/// closed after the acceptance. With the replica's own timestamps it was not due anywhere else
/// for three days, and no ledger for three days could prove the destination absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_accepted_by_a_replica_whose_clock_runs_ahead_is_due_for_the_others_at_once() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's faketime package (`apt-get install faketime`; \
         scripts/test.sh does). This test never skips."
    );
    let s = PaymentStack::start_with(
        Target::horizon(DatabaseKind::Postgres),
        "lease_ms = 60000\nidle_hold_ms = 20000\n",
    )
    .await;
    let (sink, sink_account) = s.wallet("sink", Some(10 * XLM)).await;
    let (source, _) = s.wallet("source", Some(1_000 * XLM)).await;
    let (newcomer, newcomer_account) = s.wallet("newcomer", None).await;
    let first = s.accepted(&source, &sink, "1").await;
    let first = s.finished(&first).await;
    assert_eq!(first["status"], "SUCCESS", "{first}");
    let mut ahead = GatewayProcess::start_replica_with_env(
        &s.stack.gateway.config,
        &[("LD_PRELOAD", LIBFAKETIME), ("FAKETIME", "+3d")],
    )
    .await;
    let reply = Http::new(ahead.addr)
        .post(
            "/v1/payments",
            &s.stack.service_key,
            &json!({ "source_wallet_id": source, "destination": newcomer, "amount": "2" })
                .to_string(),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let second = reply.json()["id"].as_str().unwrap_or_default().to_owned();
    // Stopped while the first replica still holds the wallet: the skewed replica never worked
    // on the payment, so only its acceptance (and its clock) is in the row.
    let status = ahead.terminate().await;
    assert!(status.success(), "{status}\n{}", ahead.log());
    let untouched = s.payment(&second).await;
    assert_eq!(
        untouched["status"],
        "CREATED",
        "{untouched}\n{}",
        ahead.log()
    );

    let second = s.finished(&second).await;
    assert_eq!(second["status"], "SUCCESS", "{second}");
    assert_eq!(
        s.sim.applications(PaymentStack::hash_of(&second)),
        1,
        "{second}"
    );
    assert_eq!(s.sim.balance(sink_account), Some(11 * XLM), "{second}");
    assert_eq!(s.sim.balance(newcomer_account), Some(2 * XLM), "{second}");
}

/// The Horizon client speaks TLS for `https://` URLs: against the simulator's plain-HTTP port the
/// handshake fails (an outage, never a panic or a plaintext request), while `http://` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_horizon_client_uses_tls_for_https_urls() {
    use gateway::network::Network;
    let sim = must(HorizonSim::start(SimConfig::default()).await);
    let config = |url: String| {
        must(gateway::config::Config::parse(&format!(
            "[signer]\nendpoint = \"https://127.0.0.1:1\"\nca = \"x\"\ncert = \"x\"\nkey = \"x\"\n\n[network]\nkind = \"horizon\"\nurl = \"{url}\"\n\n[network.retry]\nattempts = 1\n"
        )))
    };
    let plain = config(sim.url());
    let horizon = must(gateway::network::horizon::Horizon::new(
        plain
            .network
            .as_ref()
            .unwrap_or_else(|| panic!("no network")),
        gateway::metrics::Metrics::new(),
    ));
    let latest = must(horizon.latest_ledger().await);
    assert_eq!(latest.sequence, i64::from(sim.ledger_sequence()));
    let tls = config(sim.url().replacen("http://", "https://", 1));
    let horizon = must(gateway::network::horizon::Horizon::new(
        tls.network.as_ref().unwrap_or_else(|| panic!("no network")),
        gateway::metrics::Metrics::new(),
    ));
    match horizon.latest_ledger().await {
        Err(gateway::network::NetworkError::Unavailable(reason)) => {
            assert!(reason.contains("network"), "{reason}")
        }
        other => panic!("https to a plain-HTTP port answered {other:?}"),
    }
}

/// A Horizon that answers every submission with its 504 "not decided yet" is up: those answers
/// do not count toward the circuit breaker, so reads keep working. The breaker here opens on one
/// counted failure for a minute, and an outage shows it does: had the timeouts counted, the first
/// one would have opened it and the ledger read after them would be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_timeouts_do_not_open_the_horizon_breaker() {
    use gateway::network::horizon::Horizon;
    use gateway::network::{Network, NetworkError, Submission};
    use signer_testkit::stellar::{Tx, payment};
    let sim = must(HorizonSim::start(SimConfig::default()).await);
    let config = must(gateway::config::Config::parse(&format!(
        "[signer]\nendpoint = \"https://127.0.0.1:1\"\nca = \"x\"\ncert = \"x\"\nkey = \"x\"\n\n\
         [network]\nkind = \"horizon\"\nurl = \"{}\"\n\n[network.retry]\nattempts = 1\n\n\
         [network.circuit_breaker]\nconsecutive_failures = 1\nopen_ms = 60000\nmax_open_ms = 60000\n",
        sim.url()
    )));
    let horizon = must(Horizon::new(
        config
            .network
            .as_ref()
            .unwrap_or_else(|| panic!("no network")),
        gateway::metrics::Metrics::new(),
    ));
    let mut tx = Tx::new([7; 32], 1);
    tx.operations = vec![payment([8; 32], XLM)];
    let envelope = base64_of(&tx.xdr());

    sim.timeout_without_apply(5);
    for attempt in 1..=5 {
        let outcome = horizon.submit(&envelope).await;
        assert!(
            matches!(outcome, Submission::NotYetDecided),
            "submission {attempt}: {outcome:?}"
        );
    }
    let latest = horizon.latest_ledger().await;
    assert!(
        latest.is_ok(),
        "a read after five submission timeouts was refused: {latest:?}"
    );

    // The breaker is armed: one outage opens it, and it stays open after the outage ends.
    sim.set_outage(true);
    assert!(matches!(
        horizon.latest_ledger().await,
        Err(NetworkError::Unavailable(_))
    ));
    sim.set_outage(false);
    match horizon.latest_ledger().await {
        Err(NetworkError::Unavailable(reason)) => {
            assert!(reason.contains("circuit breaker"), "{reason}")
        }
        other => panic!("the breaker did not open on an outage: {other:?}"),
    }
}

/// Standard base64 of `bytes` (what Horizon's `tx=` form field takes).
fn base64_of(bytes: &[u8]) -> String {
    use stellar_xdr::{Limits, ReadXdr, TransactionEnvelope, WriteXdr};
    let envelope = must(TransactionEnvelope::from_xdr(bytes, Limits::none()));
    must(envelope.to_xdr_base64(Limits::none()))
}
