//! Webhooks end to end: the real gateway binary, signerd, the Horizon simulator in process and a
//! receiver (an axum server in the test) that records every request. Each signature is checked
//! by an HMAC written here (not the gateway's code) and, for the main test, by the Standard
//! Webhooks reference library for Python (`pip install standardwebhooks`).
//!
//! The main test (`every_event_of_payments_and_deposits_arrives_once_signed_in_wallet_order_across_sigkills`)
//! is the showing: payments and outside deposits at once, a receiver refusing the first
//! attempt of a third of the events, the gateway SIGKILLed while deliveries are in flight.
//! `WEBHOOK_TEST_PAYMENTS` and `WEBHOOK_TEST_DEPOSITS` set its size (the is 500 and 100).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use horizon_sim::{AccountKey, HorizonSim, SimConfig};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::Row;
use support::*;

const XLM: i64 = 10_000_000;
/// Generous: a loaded 2-core CI machine.
const WAIT: Duration = Duration::from_secs(120);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Captured {
    id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
    /// Whether the receiver answered 2xx (or will, for a request held at a kill).
    accepted: bool,
    /// When it arrived (Unix seconds, receiver's clock): the "now" its signature's timestamp is
    /// checked against, as a receiver does on arrival.
    received_at: f64,
}

impl Captured {
    fn json(&self) -> Value {
        must(serde_json::from_slice(&self.body))
    }
}

/// How the receiver answers.
struct Behaviour {
    /// Answer 503 to the first attempt of every third webhook-id.
    fail_first_of_every_third: AtomicBool,
    /// Answer 500 to everything.
    fail_all: AtomicBool,
    /// Wait this long (ms) before answering.
    delay_ms: AtomicU64,
    /// Requests being answered now, and the most seen at once.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// While true, requests are recorded and then held unanswered (deliveries kept in flight
    /// for a kill); answered when it turns false.
    hold: tokio::sync::watch::Sender<bool>,
    /// Requests held unanswered now.
    holding: AtomicU64,
    /// The webhook-ids of every request held since the last release.
    held_ids: Mutex<Vec<String>>,
    /// When the latest held request arrived.
    last_held_at: Mutex<Option<std::time::Instant>>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            fail_first_of_every_third: AtomicBool::new(false),
            fail_all: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            hold: tokio::sync::watch::Sender::new(false),
            holding: AtomicU64::new(0),
            held_ids: Mutex::new(Vec::new()),
            last_held_at: Mutex::new(None),
        }
    }
}

/// Counts a request out of `in_flight` (and of `holding`, when held) also when the gateway
/// hangs up and the handler is dropped.
struct InFlight {
    behaviour: Arc<Behaviour>,
    held: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.behaviour.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.held {
            self.behaviour.holding.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

struct Receiver {
    addr: SocketAddr,
    captured: Arc<Mutex<Vec<Captured>>>,
    behaviour: Arc<Behaviour>,
}

impl Receiver {
    async fn start() -> Receiver {
        let captured = Arc::new(Mutex::new(Vec::<Captured>::new()));
        let behaviour = Arc::new(Behaviour::default());
        let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
        let app = {
            let captured = captured.clone();
            let behaviour = behaviour.clone();
            axum::Router::new().route(
                "/hook",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let captured = captured.clone();
                    let behaviour = behaviour.clone();
                    let seen = seen.clone();
                    async move {
                        let header = |name: &str| header_text(&headers, name);
                        let id = header("webhook-id");
                        let received_at = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or_default();
                        let now = behaviour.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        behaviour.max_in_flight.fetch_max(now, Ordering::SeqCst);
                        let mut in_flight = InFlight {
                            behaviour: behaviour.clone(),
                            held: false,
                        };
                        let delay = behaviour.delay_ms.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let first = seen
                            .lock()
                            .map(|mut s| s.insert(id.clone()))
                            .unwrap_or(false);
                        let number: u64 = id.trim_start_matches("evt_").parse().unwrap_or(0);
                        let fail = behaviour.fail_all.load(Ordering::SeqCst)
                            || (first
                                && number.is_multiple_of(3)
                                && behaviour.fail_first_of_every_third.load(Ordering::SeqCst));
                        if let Ok(mut c) = captured.lock() {
                            c.push(Captured {
                                id: id.clone(),
                                timestamp: header("webhook-timestamp"),
                                signature: header("webhook-signature"),
                                body,
                                accepted: !fail,
                                received_at,
                            });
                        }
                        let mut hold = behaviour.hold.subscribe();
                        if *hold.borrow_and_update() {
                            behaviour.holding.fetch_add(1, Ordering::SeqCst);
                            in_flight.held = true;
                            if let Ok(mut held) = behaviour.held_ids.lock() {
                                held.push(id);
                            }
                            if let Ok(mut at) = behaviour.last_held_at.lock() {
                                *at = Some(std::time::Instant::now());
                            }
                            let _ = hold.wait_for(|h| !*h).await;
                        }
                        if fail {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::NO_CONTENT
                        }
                    }
                }),
            )
        };
        let listener = must(tokio::net::TcpListener::bind("127.0.0.1:0").await);
        let addr = must(listener.local_addr());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            captured,
            behaviour,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn captured(&self) -> Vec<Captured> {
        self.captured.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn captured_len(&self) -> usize {
        self.captured.lock().map(|c| c.len()).unwrap_or_default()
    }

    /// From now on, requests are recorded and held unanswered.
    fn hold(&self) {
        self.behaviour.hold.send_replace(true);
    }

    /// Whether a request is held now that arrived within `recently`.
    fn holding_since(&self, recently: Duration) -> bool {
        self.behaviour.holding.load(Ordering::SeqCst) >= 1
            && self
                .behaviour
                .last_held_at
                .lock()
                .ok()
                .and_then(|at| *at)
                .is_some_and(|at| at.elapsed() < recently)
    }

    /// Answers the held requests (and the later ones at once); returns the held webhook-ids.
    fn release(&self) -> Vec<String> {
        self.behaviour.hold.send_replace(false);
        if let Ok(mut at) = self.behaviour.last_held_at.lock() {
            *at = None;
        }
        self.behaviour
            .held_ids
            .lock()
            .map(|mut held| std::mem::take(&mut *held))
            .unwrap_or_default()
    }

    /// Accepted deliveries, first arrival of each webhook-id.
    fn accepted(&self) -> BTreeMap<String, Captured> {
        let mut out = BTreeMap::new();
        for c in self.captured() {
            if c.accepted {
                out.entry(c.id.clone()).or_insert(c);
            }
        }
        out
    }
}

/// Signature check written here, from the Standard Webhooks spec: `v1,` + base64 of
/// HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed by the secret's base64-decoded bytes.
fn signed_by(secret: &str, c: &Captured) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|k| STANDARD.decode(k).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return false;
    };
    mac.update(format!("{}.{}.", c.id, c.timestamp).as_bytes());
    mac.update(&c.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    c.signature.split(' ').any(|s| s == expected)
}

/// Runs the reference library over the captured deliveries.
fn verify_with_reference_library(secret: &str, captured: &[Captured], dir: &std::path::Path) {
    let input = dir.join("captured.jsonl");
    let mut lines = String::new();
    for c in captured {
        let line = json!({
            "secret": secret,
            "headers": {
                "webhook-id": c.id,
                "webhook-timestamp": c.timestamp,
                "webhook-signature": c.signature,
            },
            "body": String::from_utf8_lossy(&c.body),
            "received_at": c.received_at,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    must(std::fs::write(&input, lines));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/webhooks/verify_standardwebhooks.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&input)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Standard Webhooks reference library refused a delivery (is it installed? \
         `pip install standardwebhooks`): {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("verified {}", captured.len()),
        "{stdout}"
    );
}

struct WebhookStack {
    stack: Stack,
    sim: HorizonSim,
}

impl WebhookStack {
    async fn start(kind: DatabaseKind, webhooks_toml: &str) -> WebhookStack {
        Self::start_with_sections(kind, webhooks_toml, "").await
    }

    /// `webhooks_toml` is the `[webhooks]` section's body; `sections` more whole sections.
    async fn start_with_sections(
        kind: DatabaseKind,
        webhooks_toml: &str,
        sections: &str,
    ) -> WebhookStack {
        let sim = must(
            HorizonSim::start(SimConfig::with_ledger_interval(Duration::from_millis(200))).await,
        );
        let stack = Stack::start_with(
            kind,
            GatewayOptions {
                network_url: Some(sim.url()),
                extra_toml: format!(
                    "\n[payments]\npoll_interval_ms = 50\nlease_ms = 2000\n\n[webhooks]\n{webhooks_toml}\n\n{sections}\n"
                ),
                ..GatewayOptions::default()
            },
        )
        .await;
        WebhookStack { stack, sim }
    }

    /// The last ledger the deposit ingester covered, once it started.
    async fn deposit_cursor(&self) -> Option<i64> {
        let store = self.stack.db.store().await;
        let row = sqlx::query("SELECT ledger FROM deposit_cursor")
            .fetch_optional(store.pool())
            .await
            .ok()
            .flatten();
        store.close().await;
        row.and_then(|r| sqlx::Row::try_get::<i64, _>(&r, "ledger").ok())
    }

    /// Deliveries not finished, and those of them claimed by a dispatcher and not yet recorded
    /// (in flight), from the database.
    async fn pending_and_in_flight(&self) -> (i64, i64) {
        let store = self.stack.db.store().await;
        let row = must(
            sqlx::query(
                "SELECT COUNT(*) AS pending, \
                   COALESCE(SUM(CASE WHEN lease_owner IS NOT NULL THEN 1 ELSE 0 END), 0) AS leased \
                 FROM webhook_deliveries WHERE state = 'PENDING'",
            )
            .fetch_one(store.pool())
            .await,
        );
        store.close().await;
        (
            must(sqlx::Row::try_get::<i64, _>(&row, "pending")),
            must(sqlx::Row::try_get::<i64, _>(&row, "leased")),
        )
    }

    /// Deliveries by state, and outbox events, from the database.
    async fn outbox_counts(&self) -> (BTreeMap<String, i64>, i64) {
        let store = self.stack.db.store().await;
        let rows = must(
            sqlx::query("SELECT state, COUNT(*) AS n FROM webhook_deliveries GROUP BY state")
                .fetch_all(store.pool())
                .await,
        );
        let states = rows
            .iter()
            .map(|r| {
                (
                    must(sqlx::Row::try_get::<String, _>(r, "state")),
                    must(sqlx::Row::try_get::<i64, _>(r, "n")),
                )
            })
            .collect();
        let events = must(
            sqlx::query("SELECT COUNT(*) AS n FROM outbox_events")
                .fetch_one(store.pool())
                .await,
        );
        store.close().await;
        (states, must(sqlx::Row::try_get::<i64, _>(&events, "n")))
    }

    /// SIGKILLs the gateway while the receiver holds deliveries unanswered, and proves from the
    /// dead gateway's database that deliveries were in flight (claimed, outcome unrecorded) and
    /// undelivered events remained; then answers the held requests (to a dead socket) and
    /// starts the gateway again. Returns what was held and how many requests came before.
    async fn sigkill_mid_delivery(&mut self, receiver: &Receiver) -> Kill {
        receiver.hold();
        // A request held for less than a second stays in flight (its attempt times out only
        // after 5 s) until the kill a moment later, however loaded the machine.
        let caught = eventually(WAIT, || async {
            let (pending, in_flight) = self.pending_and_in_flight().await;
            receiver.holding_since(Duration::from_secs(1)) && in_flight >= 1 && pending > in_flight
        })
        .await;
        assert!(
            caught,
            "no delivery in flight with more waiting (pending, in flight: {:?})\n{}",
            self.pending_and_in_flight().await,
            self.stack.gateway.log()
        );
        self.stack.gateway.sigkill();
        let _ = self.stack.gateway.wait().await;
        // Nothing writes the database now: it shows what the gateway left when it died.
        let (pending, in_flight) = self.pending_and_in_flight().await;
        assert!(
            in_flight >= 1,
            "no delivery was in flight when the gateway died: the kill proves nothing"
        );
        assert!(
            pending > in_flight,
            "no undelivered event waited beyond those in flight ({pending} pending)"
        );
        let captured_before_restart = receiver.captured_len();
        let held = receiver.release();
        assert!(!held.is_empty(), "the receiver held nothing");
        self.stack.gateway.launch().await;
        self.stack.http = Http::new(self.stack.gateway.addr);
        Kill {
            held,
            pending,
            in_flight,
            captured_before_restart,
        }
    }

    /// A test-receiver-friendly dispatcher: http and loopback allowed, quick retries.
    async fn start_open(kind: DatabaseKind, extra: &str) -> WebhookStack {
        Self::start(
            kind,
            &format!(
                "allow_http = true\nallow_private_targets = true\npoll_interval_ms = 50\n\
                 initial_backoff_ms = 100\nmax_backoff_ms = 400\ntimeout_ms = 2000\n\
                 lease_ms = 4000\n{extra}"
            ),
        )
        .await
    }

    async fn wallet(&self, name: &str, balance: i64) -> String {
        self.wallet_and_account(name, balance).await.0
    }

    /// A wallet whose account exists on the simulator with `balance` stroops.
    async fn wallet_and_account(&self, name: &str, balance: i64) -> (String, AccountKey) {
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

    async fn register(&self, url: &str, types: &[&str]) -> Reply {
        self.stack
            .http
            .post(
                "/v1/webhooks",
                &self.stack.service_key,
                &json!({ "url": url, "event_types": types }).to_string(),
            )
            .await
    }

    async fn pay(&self, source: &str, destination: &str) -> String {
        let key = uuid::Uuid::new_v4().to_string();
        let body = json!({ "source_wallet_id": source, "destination": destination, "amount": "1" })
            .to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self
                .stack
                .http
                .post_with_idempotency_key("/v1/payments", &self.stack.service_key, &key, &body)
                .await;
            if reply.status == 202 {
                return reply.json()["id"].as_str().unwrap_or_default().to_owned();
            }
            assert!(
                (reply.status >= 500 || reply.status == 409)
                    && tokio::time::Instant::now() < deadline,
                "{} {}",
                reply.status,
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The payment (with its status history) once it is final.
    async fn final_payment(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            let reply = self
                .stack
                .http
                .get(&format!("/v1/payments/{id}"), Some(&self.stack.service_key))
                .await;
            let payment = reply.json();
            if payment["status"] == "SUCCESS" || payment["status"] == "FAILED" {
                return payment;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "payment {id} not final: {payment}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn deliveries(&self, webhook: &str) -> Vec<Value> {
        let reply = self
            .stack
            .http
            .get(
                &format!("/v1/webhooks/{webhook}/deliveries?limit=500"),
                Some(&self.stack.service_key),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn event_type(status: &str) -> &'static str {
    match status {
        "CREATED" => "payment.created",
        "SIGNED" => "payment.signed",
        "SUBMITTED" => "payment.submitted",
        "SUCCESS" => "payment.succeeded",
        "FAILED" => "payment.failed",
        _ => "payment.needs_attention",
    }
}

const ALL_TYPES: [&str; 7] = [
    "payment.created",
    "payment.signed",
    "payment.submitted",
    "payment.succeeded",
    "payment.failed",
    "payment.needs_attention",
    "deposit.received",
];

/// What a receiver must get, worked out from the API and the simulator (not from the outbox):
/// per subject (a payment, or one transaction's credit to one wallet) its wallet and its event
/// types in order.
#[derive(Default)]
struct Expected {
    subjects: HashMap<String, (String, Vec<String>)>,
}

impl Expected {
    /// A final payment's events: one per status of its history, in its paying wallet.
    fn payment(&mut self, payment: &Value) {
        let history: Vec<String> = payment["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|e| event_type(e["status"].as_str().unwrap_or_default()).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(!history.is_empty(), "a payment without history: {payment}");
        self.subjects.insert(
            format!("payment {}", payment["id"].as_str().unwrap_or_default()),
            (
                payment["source_wallet_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                history,
            ),
        );
    }

    /// One `deposit.received` of `wallet` for the transaction `tx_hash` (hex).
    fn deposit(&mut self, wallet: &str, tx_hash: &str) {
        let previous = self.subjects.insert(
            deposit_subject(wallet, tx_hash),
            (wallet.to_owned(), vec!["deposit.received".to_owned()]),
        );
        assert!(previous.is_none(), "one transaction expected twice");
    }

    fn events(&self) -> usize {
        self.subjects.values().map(|(_, types)| types.len()).sum()
    }
}

fn deposit_subject(wallet: &str, tx_hash: &str) -> String {
    format!("deposit {wallet} {}", tx_hash.to_ascii_lowercase())
}

/// Which subject a delivered event is about.
fn subject_of(event: &Value) -> String {
    let data = &event["data"];
    if event["type"] == "deposit.received" {
        deposit_subject(
            event["wallet_id"].as_str().unwrap_or_default(),
            data["tx_hash"].as_str().unwrap_or_default(),
        )
    } else {
        format!("payment {}", data["id"].as_str().unwrap_or_default())
    }
}

/// The expected events of final payments (no deposits: no ingestion).
fn expected_payments(payments: &[Value]) -> Expected {
    let mut expected = Expected::default();
    for payment in payments {
        expected.payment(payment);
    }
    expected
}

/// Checks what a receiver got against what was expected: every event of every subject, once
/// (one webhook-id each; a webhook-id always with the same body; two events never under one
/// webhook-id), in its wallet; a wallet's events never ahead of an earlier one of the same
/// wallet; wallet numbers 1..=n without gaps.
fn assert_complete_and_ordered(receiver: &Receiver, expected: &Expected) {
    let captured = receiver.captured();
    let mut bodies: HashMap<String, Bytes> = HashMap::new();
    for c in &captured {
        let first = bodies.entry(c.id.clone()).or_insert_with(|| c.body.clone());
        assert_eq!(first, &c.body, "{} sent with two different bodies", c.id);
    }
    // Per wallet: an event arrives only once every earlier one of its wallet was accepted.
    let mut accepted_by_wallet: HashMap<String, HashSet<i64>> = HashMap::new();
    for c in &captured {
        let event = c.json();
        let wallet = event["wallet_id"].as_str().unwrap_or_default().to_owned();
        let sequence = event["wallet_sequence"].as_i64().unwrap_or(0);
        let done = accepted_by_wallet.entry(wallet.clone()).or_default();
        for earlier in 1..sequence {
            assert!(
                done.contains(&earlier),
                "{wallet}: event {sequence} arrived before event {earlier} was delivered"
            );
        }
        if c.accepted {
            done.insert(sequence);
        }
    }
    // One webhook-id per event (wallet, number), one event per webhook-id.
    let mut ids_by_event: HashMap<(String, i64), String> = HashMap::new();
    let mut got: HashMap<String, Vec<(i64, String, String)>> = HashMap::new();
    for c in receiver.accepted().values() {
        let event = c.json();
        assert_eq!(event["id"], c.id.as_str());
        let wallet = event["wallet_id"].as_str().unwrap_or_default().to_owned();
        let sequence = event["wallet_sequence"].as_i64().unwrap_or(0);
        if let Some(other) = ids_by_event.insert((wallet.clone(), sequence), c.id.clone()) {
            panic!(
                "{wallet} event {sequence} delivered under two webhook-ids: {other} and {}",
                c.id
            );
        }
        got.entry(subject_of(&event)).or_default().push((
            sequence,
            event["type"].as_str().unwrap_or_default().to_owned(),
            wallet,
        ));
    }
    for (subject, (wallet, types)) in &expected.subjects {
        let mut events = got.remove(subject).unwrap_or_default();
        events.sort();
        let delivered: Vec<&str> = events.iter().map(|(_, t, _)| t.as_str()).collect();
        let wanted: Vec<&str> = types.iter().map(String::as_str).collect();
        assert_eq!(delivered, wanted, "{subject}");
        for (sequence, _, in_wallet) in &events {
            assert_eq!(
                in_wallet, wallet,
                "{subject}: event {sequence} in another wallet"
            );
        }
    }
    assert!(got.is_empty(), "events of unknown subjects: {got:?}");
    for (wallet, done) in accepted_by_wallet {
        let n = i64::try_from(done.len()).unwrap_or(0);
        assert_eq!(
            done,
            (1..=n).collect::<HashSet<_>>(),
            "{wallet}: numbers with gaps"
        );
    }
}

async fn metric(stack: &Stack, prefix: &str) -> f64 {
    let text = stack.http.get("/metrics", None).await.body;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A size from the environment (`name`), or `default`.
fn size_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// One SIGKILL of the gateway mid-delivery, as seen by [`WebhookStack::sigkill_mid_delivery`].
struct Kill {
    /// The webhook-ids the receiver held unanswered when the gateway died.
    held: Vec<String>,
    /// Deliveries left pending by the dead gateway, and those of them in flight.
    pending: i64,
    in_flight: i64,
    /// Requests the receiver had got when the gateway was started again.
    captured_before_restart: usize,
}

on_both_databases! {
    async fn every_event_of_payments_and_deposits_arrives_once_signed_in_wallet_order_across_sigkills(kind: DatabaseKind) {
        // WEBHOOK_TEST_PAYMENTS=500 WEBHOOK_TEST_DEPOSITS=100 is the size; the defaults
        // keep CI quick.
        let payments = size_from_env("WEBHOOK_TEST_PAYMENTS", 30);
        let deposits = size_from_env("WEBHOOK_TEST_DEPOSITS", 10);
        assert!(payments >= 6, "WEBHOOK_TEST_PAYMENTS: at least 6 (two kills between payments)");
        let began = std::time::Instant::now();
        // Attempts time out after 5 s (longer than the test needs to kill the gateway while the
        // receiver holds them); leases last 8 s, so a dead gateway's claims expire that long
        // after the kill.
        let mut s = WebhookStack::start_with_sections(
            kind,
            "allow_http = true\nallow_private_targets = true\npoll_interval_ms = 50\n\
             initial_backoff_ms = 100\nmax_backoff_ms = 400\ntimeout_ms = 5000\nlease_ms = 8000",
            "[deposits]\ningest = true\npoll_interval_ms = 50\nlease_ms = 2000\nbatch_ledgers = 3",
        )
        .await;
        // Deposits count from the ledger the ingester starts at: wait for its cursor.
        let ingesting = eventually(WAIT, || async { s.deposit_cursor().await.is_some() }).await;
        assert!(ingesting, "the ingester never set its cursor\n{}", s.stack.gateway.log());
        let receiver = Receiver::start().await;
        receiver.behaviour.fail_first_of_every_third.store(true, Ordering::SeqCst);
        let reply = s.register(&receiver.url(), &ALL_TYPES).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let secret = reply.json()["secret"].as_str().unwrap_or_default().to_owned();
        assert!(secret.starts_with("whsec_"), "{secret}");
        let webhook = reply.json()["id"].as_str().unwrap_or_default().to_owned();
        // Four wallets pay three others; outsiders deposit into all seven, so deposits and
        // payment events share the payers' numbering, and payments between wallets are
        // deposits of the payees too.
        let mut payers = Vec::new();
        for i in 0..4 {
            payers.push(s.wallet_and_account(&format!("payer-{i}"), 1_000 * XLM).await);
        }
        let mut payees = Vec::new();
        for i in 0..3 {
            payees.push(s.wallet_and_account(&format!("payee-{i}"), 10 * XLM).await);
        }
        let everyone: Vec<&(String, AccountKey)> = payers.iter().chain(&payees).collect();
        let outsiders: Vec<AccountKey> = (0..2u8)
            .map(|i| {
                let account = AccountKey([0xd0 + i; 32]);
                must(s.sim.create_account(account, 100_000 * XLM));
                account
            })
            .collect();
        let mut expected = Expected::default();
        let mut ids = Vec::new();
        let mut outside = Vec::new();
        let mut kills = Vec::new();
        for i in 0..payments {
            let (payer, _) = &payers[i % payers.len()];
            let (payee, _) = &payees[i % payees.len()];
            ids.push(s.pay(payer, payee).await);
            // Outside deposits spread over the payments, made while those are in flight.
            while outside.len() < deposits && outside.len() * payments <= i * deposits {
                let n = outside.len();
                let (wallet, account) = everyone[n % everyone.len()];
                let amount = XLM + i64::try_from(n).unwrap_or(0);
                let hash = must(s.sim.pay_from_outside(
                    outsiders[n % outsiders.len()],
                    *account,
                    amount,
                    Some(&format!("deposit {n}")),
                ));
                outside.push((wallet.clone(), hash));
            }
            // Two kills, a third and two thirds of the way through the payments.
            if i + 1 == payments / 3 || i + 1 == 2 * payments / 3 {
                kills.push(s.sigkill_mid_delivery(&receiver).await);
            }
        }
        // Deposits left over by rounding come last.
        while outside.len() < deposits {
            let n = outside.len();
            let (wallet, account) = everyone[n % everyone.len()];
            let hash = must(s.sim.pay_from_outside(outsiders[n % outsiders.len()], *account, XLM, None));
            outside.push((wallet.clone(), hash));
        }
        let submitted = began.elapsed();
        let mut succeeded = 0;
        for id in &ids {
            let payment = s.final_payment(id).await;
            expected.payment(&payment);
            if payment["status"] == "SUCCESS" {
                succeeded += 1;
                let payee = payment["destination"].as_str().unwrap_or_default();
                expected.deposit(payee, payment["tx_hash"].as_str().unwrap_or_default());
            }
        }
        assert!(succeeded > 0, "no payment succeeded");
        let finished = began.elapsed();
        for (wallet, hash) in &outside {
            let applied = eventually(WAIT, || async { s.sim.ledger_of(*hash).is_some() }).await;
            assert!(applied, "the outside payment {hash} never applied");
            expected.deposit(wallet, &hash.to_hex());
        }
        let events = expected.events();
        // Generous: every event of a wallet waits for the one before it.
        let within = WAIT.max(Duration::from_millis(250) * u32::try_from(events).unwrap_or(u32::MAX));
        let all_arrived = eventually(within, || async { receiver.accepted().len() >= events }).await;
        assert!(
            all_arrived,
            "{} of {events} events arrived\n{}",
            receiver.accepted().len(),
            s.stack.gateway.log()
        );
        let delivered = began.elapsed();
        // Nothing left pending, one delivery per event, and no event the test did not expect.
        let drained = eventually(WAIT, || async {
            let (states, _) = s.outbox_counts().await;
            !states.contains_key("PENDING")
        })
        .await;
        let (states, outbox_events) = s.outbox_counts().await;
        assert!(drained, "{states:?}");
        assert_eq!(states.get("DELIVERED").copied(), Some(events as i64), "{states:?}");
        assert_eq!(states.len(), 1, "{states:?}");
        assert_eq!(outbox_events, events as i64);
        assert!(
            eventually(WAIT, || async { metric(&s.stack, "gateway_webhook_outbox_backlog ").await == 0.0 }).await,
            "the backlog gauge never drained"
        );

        assert_complete_and_ordered(&receiver, &expected);
        let captured = receiver.captured();
        for c in &captured {
            assert!(signed_by(&secret, c), "bad signature on {c:?}");
            // The body is what the OpenAPI document's WebhookEvent schema says (no field more,
            // none missing).
            let parsed: Result<gateway::http::webhooks::WebhookEvent, _> = serde_json::from_slice(&c.body);
            assert!(parsed.is_ok(), "{parsed:?}: {}", String::from_utf8_lossy(&c.body));
        }
        // Every refused attempt came again, with the same webhook-id and body, and was taken.
        let refused: Vec<&Captured> = captured.iter().filter(|c| !c.accepted).collect();
        assert!(!refused.is_empty(), "the receiver refused nothing: the test proves less");
        for failed in &refused {
            assert!(
                captured.iter().any(|c| c.accepted && c.id == failed.id && c.body == failed.body),
                "{} was refused and never sent again with the same id and body", failed.id
            );
        }
        // What the receiver held when the gateway died came again after the restart (same id;
        // the body is the same by the check above).
        for kill in &kills {
            for id in &kill.held {
                assert!(
                    captured[kill.captured_before_restart..].iter().any(|c| c.accepted && &c.id == id),
                    "{id} was in flight at a kill and never delivered after the restart"
                );
            }
        }
        verify_with_reference_library(&secret, &captured, s.stack.db.dir());
        assert!(metric(&s.stack, "gateway_webhook_delivery_attempts_total{outcome=\"delivered\"}").await >= 1.0);
        let audit = s.stack.audit_events("webhook", &webhook).await;
        assert!(audit.iter().any(|e| e["action"] == "webhook.created"), "{audit:?}");

        let mut attempts: HashMap<&str, usize> = HashMap::new();
        for c in captured.iter().filter(|c| c.accepted) {
            *attempts.entry(c.id.as_str()).or_default() += 1;
        }
        let duplicates: usize = attempts.values().map(|n| n - 1).sum();
        let deposit_events = expected.subjects.keys().filter(|k| k.starts_with("deposit ")).count();
        eprintln!(
            "webhooks {kind:?}: {payments} payments ({succeeded} succeeded), {deposits} outside \
             deposits; {events} events ({deposit_events} deposit.received); {} requests: {} \
             refused, {duplicates} accepted again (duplicates); kills (held, pending, in flight): \
             {:?}; all submitted after {:.1} s, all final after {:.1} s, all delivered after {:.1} s, \
             checked after {:.1} s",
            captured.len(),
            refused.len(),
            kills.iter().map(|k| (k.held.len(), k.pending, k.in_flight)).collect::<Vec<_>>(),
            submitted.as_secs_f64(),
            finished.as_secs_f64(),
            delivered.as_secs_f64(),
            began.elapsed().as_secs_f64(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_plain_http_targets_are_refused_at_registration_and_at_delivery() {
    // Default rules: https only, public addresses only.
    let strict = WebhookStack::start(DatabaseKind::Sqlite, "poll_interval_ms = 50").await;
    let before = strict.stack.db.row_counts().await;
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://localhost/hook",
        "not a url",
    ] {
        let reply = strict.register(url, &["payment.created"]).await;
        assert_eq!(reply.status, 400, "{url}: {}", reply.body);
        assert_eq!(reply.error_code(), "VALIDATION_FAILED");
    }
    let reply = strict.register("https://example.com/hook", &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(
        strict.stack.db.row_counts().await,
        before,
        "a refused registration wrote something"
    );
    drop(strict);

    // Plain http allowed, private targets not: an endpoint whose name resolves to loopback
    // (as if re-pointed after registration) is refused when the dispatcher connects.
    let s = WebhookStack::start(
        DatabaseKind::Sqlite,
        "allow_http = true\npoll_interval_ms = 50\ninitial_backoff_ms = 100\nmax_backoff_ms = 200\n\
         max_attempts = 100000",
    )
    .await;
    let receiver = Receiver::start().await;
    let store = s.stack.db.store().await;
    let webhook = uuid::Uuid::now_v7().to_string();
    must(
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, event_types, secret, created_at) \
             VALUES ($1, $2, ',payment.created,', $3, '2026-01-01T00:00:00Z')",
        )
        .bind(&webhook)
        .bind(format!("http://localhost:{}/hook", receiver.addr.port()))
        .bind("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .execute(store.pool())
        .await,
    );
    let sink = s.wallet("sink", 10 * XLM).await;
    let source = s.wallet("source", 100 * XLM).await;
    s.pay(&source, &sink).await;
    let refused = eventually(Duration::from_secs(30), || async {
        let row = sqlx::query("SELECT last_error FROM webhook_deliveries WHERE attempts >= 2")
            .fetch_optional(store.pool())
            .await
            .ok()
            .flatten();
        row.and_then(|r| {
            sqlx::Row::try_get::<Option<String>, _>(&r, "last_error")
                .ok()
                .flatten()
        })
        .is_some_and(|e| e.contains("private"))
    })
    .await;
    assert!(
        refused,
        "no refused attempt recorded\n{}",
        s.stack.gateway.log()
    );
    assert!(
        receiver.captured().is_empty(),
        "a private target was reached"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_alongside_the_new_one_until_the_overlap_ends() {
    let s = WebhookStack::start_open(DatabaseKind::Sqlite, "").await;
    let receiver = Receiver::start().await;
    let reply = s.register(&receiver.url(), &["payment.created"]).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let old = reply.json()["secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let webhook = reply.json()["id"].as_str().unwrap_or_default().to_owned();
    let rotated = s
        .stack
        .http
        .post(
            &format!("/v1/webhooks/{webhook}/rotate-secret"),
            &s.stack.service_key,
            "",
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new = rotated.json()["secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(old, new);
    let listed = s
        .stack
        .http
        .get("/v1/webhooks", Some(&s.stack.service_key))
        .await;
    assert!(
        !listed.body.contains("whsec_"),
        "a secret was shown again: {}",
        listed.body
    );
    let sink = s.wallet("sink", 10 * XLM).await;
    let source = s.wallet("source", 100 * XLM).await;
    s.pay(&source, &sink).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            receiver.accepted().len() == 1
        })
        .await
    );
    let first = receiver.captured().remove(0);
    assert!(
        signed_by(&old, &first) && signed_by(&new, &first),
        "{first:?}"
    );
    assert_eq!(first.signature.split(' ').count(), 2);
    // The overlap ends (by the database's clock): only the new secret signs.
    let store = s.stack.db.store().await;
    must(
        sqlx::query("UPDATE webhook_endpoints SET previous_secret_until_ms = 0")
            .execute(store.pool())
            .await,
    );
    store.close().await;
    s.pay(&source, &sink).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            receiver.accepted().len() == 2
        })
        .await
    );
    let second = receiver
        .accepted()
        .into_values()
        .find(|c| c.id != first.id)
        .unwrap_or_else(|| panic!("no second"));
    assert!(
        signed_by(&new, &second) && !signed_by(&old, &second),
        "{second:?}"
    );
    let audit = s.stack.audit_events("webhook", &webhook).await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "webhook.secret_rotated"),
        "{audit:?}"
    );
    // Deleting stops deliveries and answers 404 afterwards.
    let deleted = s
        .stack
        .http
        .send(
            "DELETE",
            &format!("/v1/webhooks/{webhook}"),
            &[("authorization", &format!("Bearer {}", s.stack.service_key))],
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let again = s
        .stack
        .http
        .send(
            "DELETE",
            &format!("/v1/webhooks/{webhook}"),
            &[("authorization", &format!("Bearer {}", s.stack.service_key))],
            None,
        )
        .await;
    assert_eq!(again.status, 404, "{}", again.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_past_its_retry_budget_is_dead_and_a_replay_sends_it_with_the_same_id() {
    let s = WebhookStack::start_open(DatabaseKind::Sqlite, "max_attempts = 3").await;
    let receiver = Receiver::start().await;
    receiver.behaviour.fail_all.store(true, Ordering::SeqCst);
    let reply = s.register(&receiver.url(), &["payment.created"]).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let webhook = reply.json()["id"].as_str().unwrap_or_default().to_owned();
    let secret = reply.json()["secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let sink = s.wallet("sink", 10 * XLM).await;
    let source = s.wallet("source", 100 * XLM).await;
    s.pay(&source, &sink).await;
    let dead = eventually(Duration::from_secs(30), || async {
        s.deliveries(&webhook)
            .await
            .first()
            .is_some_and(|d| d["state"] == "DEAD")
    })
    .await;
    assert!(
        dead,
        "{:?}\n{}",
        s.deliveries(&webhook).await,
        s.stack.gateway.log()
    );
    let delivery = s.deliveries(&webhook).await.remove(0);
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    assert_eq!(delivery["last_status"], 503, "{delivery}");
    assert_eq!(
        receiver.captured().len(),
        3,
        "attempts after the budget was spent"
    );
    assert!(
        metric(
            &s.stack,
            "gateway_webhook_delivery_attempts_total{outcome=\"dead\"}"
        )
        .await
            >= 1.0
    );
    receiver.behaviour.fail_all.store(false, Ordering::SeqCst);
    let id = delivery["id"].as_i64().unwrap_or(0);
    let replay = s
        .stack
        .http
        .post(
            &format!("/v1/webhooks/{webhook}/deliveries/{id}/replay"),
            &s.stack.service_key,
            "",
        )
        .await;
    assert_eq!(replay.status, 202, "{}", replay.body);
    assert!(
        eventually(Duration::from_secs(30), || async {
            receiver.accepted().len() == 1
        })
        .await
    );
    let captured = receiver.captured();
    assert!(
        captured
            .iter()
            .all(|c| c.id == captured[0].id && c.body == captured[0].body)
    );
    assert!(captured.iter().all(|c| signed_by(&secret, c)));
    assert!(
        eventually(Duration::from_secs(30), || async {
            s.deliveries(&webhook)
                .await
                .first()
                .is_some_and(|d| d["state"] == "DELIVERED")
        })
        .await
    );
    let missing = s
        .stack
        .http
        .post(
            &format!("/v1/webhooks/{webhook}/deliveries/999999/replay"),
            &s.stack.service_key,
            "",
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let audit = s.stack.audit_events("webhook", &webhook).await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "webhook.delivery_replayed"),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_is_capped_and_does_not_stall_another() {
    let s = WebhookStack::start(
        DatabaseKind::Sqlite,
        "allow_http = true\nallow_private_targets = true\npoll_interval_ms = 50\n\
         initial_backoff_ms = 100\nmax_backoff_ms = 400\nmax_in_flight_per_endpoint = 2\n\
         timeout_ms = 1000\nlease_ms = 3000",
    )
    .await;
    let hanging = Receiver::start().await;
    hanging.behaviour.delay_ms.store(60_000, Ordering::SeqCst);
    let healthy = Receiver::start().await;
    for receiver in [&hanging, &healthy] {
        let reply = s.register(&receiver.url(), &ALL_TYPES).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let sink = s.wallet("sink", 10 * XLM).await;
    let mut sources = Vec::new();
    for i in 0..6 {
        sources.push(s.wallet(&format!("source-{i}"), 100 * XLM).await);
    }
    let mut ids = Vec::new();
    for source in &sources {
        ids.push(s.pay(source, &sink).await);
    }
    let mut finals = Vec::new();
    for id in &ids {
        finals.push(s.final_payment(id).await);
    }
    let expected_events = expected_payments(&finals);
    let expected = expected_events.events();
    let arrived = eventually(Duration::from_secs(60), || async {
        healthy.accepted().len() >= expected
    })
    .await;
    assert!(
        arrived,
        "{} of {expected} reached the healthy endpoint\n{}",
        healthy.accepted().len(),
        s.stack.gateway.log()
    );
    assert_complete_and_ordered(&healthy, &expected_events);
    // Six wallets had events for the hanging endpoint at once; at most two were sent to it at a
    // time, and each attempt was cut at the timeout (so retries came).
    let retried = eventually(Duration::from_secs(30), || async {
        metric(
            &s.stack,
            "gateway_webhook_delivery_attempts_total{outcome=\"retried\"}",
        )
        .await
            >= 4.0
    })
    .await;
    assert!(
        retried,
        "timed-out attempts were not recorded as retried\n{}",
        s.stack.gateway.log()
    );
    let most = hanging.behaviour.max_in_flight.load(Ordering::SeqCst);
    assert_eq!(most, 2, "in flight at once to the hanging endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_share_deliveries_and_keep_wallet_order() {
    let s = WebhookStack::start_open(DatabaseKind::Postgres, "").await;
    let mut replica = GatewayProcess::start_replica(&s.stack.gateway.config).await;
    let receiver = Receiver::start().await;
    receiver
        .behaviour
        .fail_first_of_every_third
        .store(true, Ordering::SeqCst);
    let reply = s.register(&receiver.url(), &ALL_TYPES).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let secret = reply.json()["secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let sink = s.wallet("sink", 10 * XLM).await;
    let mut sources = Vec::new();
    for i in 0..4 {
        sources.push(s.wallet(&format!("source-{i}"), 1_000 * XLM).await);
    }
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(s.pay(&sources[i % 4], &sink).await);
    }
    let mut finals = Vec::new();
    for id in &ids {
        finals.push(s.final_payment(id).await);
    }
    let expected_events = expected_payments(&finals);
    let expected = expected_events.events();
    let all_arrived = eventually(Duration::from_secs(120), || async {
        receiver.accepted().len() >= expected
    })
    .await;
    assert!(
        all_arrived,
        "{} of {expected} events arrived",
        receiver.accepted().len()
    );
    assert_complete_and_ordered(&receiver, &expected_events);
    for c in receiver.captured() {
        assert!(signed_by(&secret, &c), "bad signature on {c:?}");
    }
    let _ = replica.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_worker_delivers_when_serve_runs_no_dispatcher() {
    let s = WebhookStack::start_open(DatabaseKind::Sqlite, "dispatcher = false").await;
    let receiver = Receiver::start().await;
    let reply = s.register(&receiver.url(), &["payment.created"]).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let webhook = reply.json()["id"].as_str().unwrap_or_default().to_owned();
    let sink = s.wallet("sink", 10 * XLM).await;
    let source = s.wallet("source", 100 * XLM).await;
    let payment = s.pay(&source, &sink).await;
    s.final_payment(&payment).await;
    // `serve` alone sends nothing.
    let queued = s.deliveries(&webhook).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["state"], "PENDING", "{queued:?}");
    assert!(receiver.captured().is_empty());
    let mut worker = GatewayProcess::start_worker(&s.stack.gateway.config).await;
    let delivered = eventually(Duration::from_secs(30), || async {
        receiver.accepted().len() == 1
    })
    .await;
    assert!(delivered, "`gateway worker` sent nothing\n{}", worker.log());
    let _ = worker.terminate().await;
}

/// A day in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// `(delivery id, event id, state)` of every delivery, and every event id.
async fn outbox_rows(
    store: &gateway::store::Store,
) -> (BTreeMap<i64, (i64, String)>, HashSet<i64>) {
    let rows = must(
        sqlx::query("SELECT id, event_id, state FROM webhook_deliveries")
            .fetch_all(store.pool())
            .await,
    );
    let mut deliveries = BTreeMap::new();
    for row in &rows {
        deliveries.insert(
            must(row.try_get::<i64, _>("id")),
            (
                must(row.try_get::<i64, _>("event_id")),
                must(row.try_get::<String, _>("state")),
            ),
        );
    }
    let rows = must(
        sqlx::query("SELECT id FROM outbox_events")
            .fetch_all(store.pool())
            .await,
    );
    let events = rows
        .iter()
        .map(|row| must(row.try_get::<i64, _>("id")))
        .collect();
    (deliveries, events)
}

async fn pending_deliveries(store: &gateway::store::Store) -> i64 {
    let row = must(
        sqlx::query("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE state = 'PENDING'")
            .fetch_one(store.pool())
            .await,
    );
    must(row.try_get::<i64, _>("n"))
}

on_both_databases! {
    async fn retention_deletes_old_delivered_history_and_keeps_pending_dead_recent_rows_and_order(kind: DatabaseKind) {
        let mut s = WebhookStack::start_open(kind, "max_attempts = 3\nretention_days = 2").await;
        let accepting = Receiver::start().await;
        let failing = Receiver::start().await;
        failing.behaviour.fail_all.store(true, Ordering::SeqCst);
        let reply = s.register(&accepting.url(), &ALL_TYPES).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let webhook = reply.json()["id"].as_str().unwrap_or_default().to_owned();
        // Every `payment.succeeded` also goes to an endpoint that always fails: dead letters.
        let reply = s.register(&failing.url(), &["payment.succeeded"]).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let sink = s.wallet("sink", 10 * XLM).await;
        let waiting = s.wallet("waiting", 1_000 * XLM).await;
        let other = s.wallet("other", 1_000 * XLM).await;
        let store = s.stack.db.store().await;
        let all_finished = || async { pending_deliveries(&store).await == 0 };

        // History to age: two payments of each wallet, every delivery finished.
        for source in [&waiting, &other, &waiting, &other] {
            let id = s.pay(source, &sink).await;
            s.final_payment(&id).await;
        }
        assert!(eventually(Duration::from_secs(120), all_finished).await, "{}", s.stack.gateway.log());
        let (old_deliveries, old_events) = outbox_rows(&store).await;
        let last_old_event = old_events.iter().max().copied().unwrap_or(0);
        let last_old_delivery = old_deliveries.keys().max().copied().unwrap_or(0);
        // Recent history: one more payment, not aged.
        let id = s.pay(&other, &sink).await;
        s.final_payment(&id).await;
        assert!(eventually(Duration::from_secs(120), all_finished).await, "{}", s.stack.gateway.log());

        // With the gateway stopped, the first history goes three days back (past the two days
        // of retention), and the last event of `waiting` to the accepting endpoint becomes a
        // retry scheduled far ahead: old, but pending.
        s.stack.gateway.terminate().await;
        must(sqlx::query("UPDATE outbox_events SET created_at_ms = created_at_ms - $1 WHERE id <= $2")
            .bind(3 * DAY_MS).bind(last_old_event).execute(store.pool()).await);
        must(sqlx::query("UPDATE webhook_deliveries SET created_at_ms = created_at_ms - $1, \
                due_at_ms = due_at_ms - $1 WHERE id <= $2")
            .bind(3 * DAY_MS).bind(last_old_delivery).execute(store.pool()).await);
        let (pending_event, pending_sequence, pending_type) = {
            let row = must(sqlx::query("SELECT d.event_id AS event_id, d.wallet_sequence AS wallet_sequence, \
                    o.event_type AS event_type FROM webhook_deliveries d JOIN outbox_events o ON o.id = d.event_id \
                    WHERE d.endpoint_id = $1 AND d.wallet_id = $2 ORDER BY d.wallet_sequence DESC LIMIT 1")
                .bind(&webhook).bind(&waiting).fetch_one(store.pool()).await);
            (
                must(row.try_get::<i64, _>("event_id")),
                must(row.try_get::<i64, _>("wallet_sequence")),
                must(row.try_get::<String, _>("event_type")),
            )
        };
        must(sqlx::query("UPDATE webhook_deliveries SET state = 'PENDING', finished_at = NULL, \
                due_at_ms = 4102444800000 WHERE endpoint_id = $1 AND event_id = $2")
            .bind(&webhook).bind(pending_event).execute(store.pool()).await);

        // What retention must do, from the rows themselves: aged DELIVERED deliveries go; an
        // aged event goes once none of its deliveries is left.
        let (before, events_before) = outbox_rows(&store).await;
        let doomed: HashSet<i64> = before
            .iter()
            .filter(|(id, (_, state))| **id <= last_old_delivery && state == "DELIVERED")
            .map(|(id, _)| *id)
            .collect();
        let expected_deliveries: BTreeMap<i64, (i64, String)> =
            before.into_iter().filter(|(id, _)| !doomed.contains(id)).collect();
        let needed: HashSet<i64> = expected_deliveries.values().map(|(event, _)| *event).collect();
        let expected_events: HashSet<i64> = events_before
            .iter()
            .copied()
            .filter(|event| *event > last_old_event || needed.contains(event))
            .collect();
        let states: HashSet<&str> = expected_deliveries.values().map(|(_, s)| s.as_str()).collect();
        assert!(
            states.contains("DEAD") && states.contains("PENDING") && states.contains("DELIVERED"),
            "the test needs dead, pending and recent delivered rows to keep: {states:?}"
        );
        assert!(
            !doomed.is_empty() && expected_events.len() < events_before.len(),
            "nothing to prune: the test proves nothing"
        );
        assert!(
            expected_events.iter().any(|e| *e <= last_old_event && *e != pending_event),
            "no old event kept by a dead letter"
        );

        // Pruning runs when the dispatcher starts.
        s.stack.gateway.launch().await;
        s.stack.http = Http::new(s.stack.gateway.addr);
        let pruned = eventually(Duration::from_secs(60), || async {
            outbox_rows(&store).await.0 == expected_deliveries
        })
        .await;
        let (after, events_after) = outbox_rows(&store).await;
        assert!(pruned, "deliveries left {after:?}, expected {expected_deliveries:?}\n{}", s.stack.gateway.log());
        assert!(
            eventually(Duration::from_secs(30), || async { outbox_rows(&store).await.1 == expected_events }).await,
            "events left {events_after:?}, expected {expected_events:?}"
        );
        let counted = eventually(Duration::from_secs(30), || async {
            metric(&s.stack, "gateway_webhook_pruned_rows_total{table=\"webhook_deliveries\"}").await
                == doomed.len() as f64
                && metric(&s.stack, "gateway_webhook_pruned_rows_total{table=\"outbox_events\"}").await
                    == (events_before.len() - expected_events.len()) as f64
        })
        .await;
        assert!(counted, "{}", s.stack.http.get("/metrics", None).await.body);

        // Order afterwards: a new payment of `waiting` numbers on from its last event and waits
        // behind the old pending delivery; once that is due, it goes first, then the new ones
        // in order.
        let id = s.pay(&waiting, &sink).await;
        let history: Vec<String> = s.final_payment(&id).await["history"]
            .as_array()
            .map(|h| h.iter().map(|e| e["status"].as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default();
        let new_events = || {
            accepting
                .captured()
                .into_iter()
                .filter(|c| {
                    let event = c.json();
                    event["wallet_id"] == waiting.as_str()
                        && event["wallet_sequence"].as_i64().unwrap_or(0) > pending_sequence
                })
                .count()
        };
        assert_eq!(new_events(), 0, "a new event went ahead of the pending one");
        let arrived_before = accepting.captured().len();
        must(sqlx::query("UPDATE webhook_deliveries SET due_at_ms = 0 WHERE endpoint_id = $1 AND event_id = $2")
            .bind(&webhook).bind(pending_event).execute(store.pool()).await);
        assert!(
            eventually(Duration::from_secs(60), || async { new_events() == history.len() }).await,
            "{:?}\n{}",
            accepting.captured(),
            s.stack.gateway.log()
        );
        let arrivals: Vec<(String, i64, String)> = accepting.captured()[arrived_before..]
            .iter()
            .filter(|c| c.json()["wallet_id"] == waiting.as_str())
            .map(|c| {
                let event = c.json();
                (
                    c.id.clone(),
                    event["wallet_sequence"].as_i64().unwrap_or(0),
                    event["type"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let mut expected = vec![(format!("evt_{pending_event}"), pending_sequence, pending_type)];
        for (n, status) in history.iter().enumerate() {
            expected.push((
                arrivals.get(n + 1).map(|a| a.0.clone()).unwrap_or_default(),
                pending_sequence + 1 + i64::try_from(n).unwrap_or(0),
                event_type(status).to_owned(),
            ));
        }
        assert_eq!(arrivals, expected);
        store.close().await;
    }
}
