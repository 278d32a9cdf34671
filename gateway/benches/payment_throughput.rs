//! Payments per second from `POST /v1/payments` to `SUCCESS`, against the Horizon simulator
//! closing a ledger every second, with many source wallets.
//!
//! ```text
//! cargo build --release -p signerd
//! cargo bench -p gateway --bench payment_throughput -- [--payments 3000] [--wallets 600] [--in-flight 64] [--database sqlite|postgres] [--backend horizon|rpc] [--webhooks [--webhook-in-flight 8]]
//! ```
//!
//! `--backend` (or `GATEWAY_BENCH_BACKEND`) picks the network API the gateway uses: the
//! simulator's Horizon endpoints (default) or its Stellar RPC endpoint, over the same ledger, so
//! both can be reported side by side.
//!
//! Set-up (not timed): the release `gateway` binary with its worker, a release `signerd` on a
//! fresh SoftHSM token, the simulator in this process (1 s ledgers), `--wallets` users with
//! wallets (real `CreateKey` calls) whose accounts the simulator funds directly.
//!
//! Timed: `--payments` POSTs (1 lumen each, round-robin over the source wallets, `--in-flight`
//! at a time, each with its own Idempotency-Key) until every payment is `SUCCESS` in the
//! database. Reported: payments/s over that whole span, p50/p99 accept latency (the POST's
//! answer), and a check that the simulator applied exactly one transaction per payment.
//!
//! Stellar lets an account have one transaction per ledger in the queue, and the gateway keeps
//! one in flight per source account, so the ceiling is `wallets / ledger interval`: 500/s needs
//! more than 500 source wallets.
//!
//! `--webhooks`: the same run goes on with a second, webhook phase. The first phase (above,
//! no endpoint registered) is the raw reference; then a webhook subscribed to every payment
//! event is registered, pointing at a receiver in this process (`[webhooks]` allows `http://`
//! and loopback targets, polls every 50 ms, `max_in_flight_per_endpoint` from
//! `--webhook-in-flight`, 8 by default as in the gateway; otherwise the gateway's defaults), and
//! `--payments` more go at full speed while the dispatcher delivers. Reported for that phase:
//! payments/s with webhooks on next to the raw figure, events delivered per second (while the
//! payments run, and from the phase's start to the last event), the backlog when the last
//! payment finished, and the delivery lag p50/p99/max, from the event's outbox row
//! (`created_at_ms`, the database's clock, written in the payment's transaction) to the
//! receiver's first receipt (this machine's clock, which the database server shares). Checked:
//! every delivery row of the endpoint is `DELIVERED` and its event arrived, nothing arrived that
//! has no row, and every request's `webhook-signature` verifies under the endpoint's secret (the
//! gateway's own signer recomputes it); duplicates (same `webhook-id`) are counted.
//!
//! ```text
//! nice -n 10 cargo build --release -p signerd -p gateway
//! cargo bench -p gateway --bench payment_throughput -- --webhooks --database sqlite
//! GATEWAY_TEST_POSTGRES_URL=postgres://... cargo bench -p gateway --bench payment_throughput -- --webhooks --database postgres
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway::webhooks::signature::WebhookSecret;
use horizon_sim::{AccountKey, HorizonSim, SimConfig};
use sqlx::Row;
use support::{Backend, DatabaseKind, GatewayOptions, Stack};

struct Args {
    payments: usize,
    wallets: usize,
    in_flight: usize,
    database: DatabaseKind,
    backend: Backend,
    /// Run the webhook phase after the raw one.
    webhooks: bool,
    /// `webhooks.max_in_flight_per_endpoint` for it.
    webhook_in_flight: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        payments: 3000,
        wallets: 600,
        in_flight: 64,
        database: DatabaseKind::Sqlite,
        backend: match std::env::var("GATEWAY_BENCH_BACKEND") {
            Ok(raw) => Backend::parse(&raw)
                .ok_or_else(|| anyhow::anyhow!("GATEWAY_BENCH_BACKEND horizon|rpc, got {raw:?}"))?,
            Err(_) => Backend::Horizon,
        },
        webhooks: false,
        webhook_in_flight: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut number = |default: usize| it.next().and_then(|v| v.parse().ok()).unwrap_or(default);
        match flag.as_str() {
            "--payments" => args.payments = number(3000),
            "--wallets" => args.wallets = number(600),
            "--in-flight" => args.in_flight = number(64),
            "--webhook-in-flight" => args.webhook_in_flight = number(8),
            "--webhooks" => args.webhooks = true,
            "--backend" => {
                let raw = it.next().unwrap_or_default();
                args.backend = Backend::parse(&raw)
                    .ok_or_else(|| anyhow::anyhow!("--backend horizon|rpc, got {raw:?}"))?;
            }
            "--database" => {
                args.database = match it.next().as_deref() {
                    Some("postgres") => DatabaseKind::Postgres,
                    Some("sqlite") => DatabaseKind::Sqlite,
                    other => anyhow::bail!("--database sqlite|postgres, got {other:?}"),
                }
            }
            _ => {} // cargo bench passes --bench; ignore what we do not know.
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let signerd = signer_testkit::signerd_bin();
    anyhow::ensure!(
        signerd.exists(),
        "no release signerd at {}: run `cargo build --release -p signerd` first",
        signerd.display()
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let sim = HorizonSim::start(SimConfig::with_ledger_interval(Duration::from_secs(1))).await?;
    let stack = Stack::start_with(
        args.database,
        GatewayOptions {
            network_url: Some(args.backend.url(&sim.url())),
            network_kind: args.backend.kind(),
            rate_limit: (1_000_000, 1_000_000),
            log_level: "warn",
            // SQLite has one writer: more connections only add lock contention.
            max_connections: match args.database {
                DatabaseKind::Postgres => 32,
                DatabaseKind::Sqlite => 10,
            },
            extra_toml: format!(
                "\n[payments]\nworker_concurrency = {}\npoll_interval_ms = 50\n{}",
                args.wallets + 64,
                if args.webhooks {
                    format!(
                        "\n[webhooks]\nallow_http = true\nallow_private_targets = true\n\
                         poll_interval_ms = 50\nmax_in_flight_per_endpoint = {}\n",
                        args.webhook_in_flight
                    )
                } else {
                    String::new()
                }
            ),
            ..GatewayOptions::default()
        },
    )
    .await;

    // Source wallets, funded straight in the simulator.
    let mut wallets = Vec::with_capacity(args.wallets);
    for i in 0..args.wallets {
        let user = stack.create_user(&format!("bench-{i}")).await;
        let reply = stack
            .http
            .post(
                &format!("/v1/users/{user}/wallet"),
                &stack.service_key,
                "{}",
            )
            .await;
        anyhow::ensure!(reply.status == 201, "wallet: {}", reply.body);
        let wallet = reply.json();
        let account: AccountKey = wallet["public_key"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        sim.create_account(account, 100_000 * 10_000_000)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        wallets.push(wallet["id"].as_str().unwrap_or_default().to_owned());
    }
    let sink = AccountKey([42; 32]);
    sim.create_account(sink, 10_000_000)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sink = sink.address();
    let wallets = Arc::new(wallets);
    let store = stack.db.store().await;

    let bench = Bench {
        stack,
        store,
        wallets,
        sink,
        args,
    };
    let raw = bench.pay_at_full_speed().await?;
    let args = &bench.args;
    println!(
        "payments POST -> SUCCESS ({:?}, {:?}, {} source wallets, {} in flight, 1 s ledgers):",
        args.database, args.backend, args.wallets, args.in_flight
    );
    raw.print(args.payments);
    let mut finished = raw.success + raw.failed;
    if args.webhooks {
        finished += bench.webhook_phase(&raw).await?;
    }
    let applied = sim.state().transactions.len();
    println!(
        "  simulator applied {applied} transactions for {finished} finished payments (equal = none paid twice)"
    );
    bench.store.close().await;
    drop(bench);
    sim.shutdown().await;
    Ok(())
}

/// The running stack, its source wallets and where they pay.
struct Bench {
    stack: Stack,
    store: gateway::store::Store,
    wallets: Arc<Vec<String>>,
    sink: String,
    args: Args,
}

/// What one timed run of `--payments` POSTs gave.
struct Phase {
    success: i64,
    failed: i64,
    refused: usize,
    /// Seconds from the first POST until every accepted payment was final.
    elapsed: f64,
    /// Seconds until the last POST was answered.
    accepted_in: f64,
    latencies: Vec<Duration>,
    /// CPU microseconds per payment: gateway, signerd, this process.
    cpu_per_payment: [f64; 3],
    started: SystemTime,
}

impl Phase {
    fn payments_per_second(&self) -> f64 {
        self.success as f64 / self.elapsed
    }

    fn print(&self, payments: usize) {
        let percentile = |p: f64| {
            self.latencies
                .get(((self.latencies.len() as f64 - 1.0) * p).round() as usize)
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(f64::NAN)
        };
        println!(
            "  {} SUCCESS, {} FAILED, {} refused of {payments} in {:.1} s = {:.1} payments/s",
            self.success,
            self.failed,
            self.refused,
            self.elapsed,
            self.payments_per_second()
        );
        println!(
            "  accepting took {:.1} s ({:.1} accepts/s); accept latency p50 {:.1} ms p99 {:.1} ms",
            self.accepted_in,
            self.latencies.len() as f64 / self.accepted_in,
            percentile(0.50),
            percentile(0.99)
        );
        println!(
            "  cpu per payment: gateway {:.0} us, signerd {:.0} us, simulator + load generator {:.0} us (database server not counted)",
            self.cpu_per_payment[0], self.cpu_per_payment[1], self.cpu_per_payment[2]
        );
    }
}

/// Finished payments so far: (SUCCESS, FAILED).
async fn finished_payments(store: &gateway::store::Store) -> anyhow::Result<(i64, i64)> {
    let row = sqlx::query(
        "SELECT SUM(CASE WHEN status = 'SUCCESS' THEN 1 ELSE 0 END) AS ok, \
         SUM(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END) AS bad FROM payments",
    )
    .fetch_one(store.pool())
    .await?;
    Ok((
        row.try_get::<Option<i64>, _>("ok")?.unwrap_or(0),
        row.try_get::<Option<i64>, _>("bad")?.unwrap_or(0),
    ))
}

impl Bench {
    /// `--payments` POSTs, `--in-flight` at a time, then a wait until every accepted one is final.
    async fn pay_at_full_speed(&self) -> anyhow::Result<Phase> {
        let Bench {
            stack,
            store,
            wallets,
            sink,
            args,
        } = self;
        let (success_before, failed_before) = finished_payments(store).await?;
        let cpu = || {
            [
                signer_testkit::process_cpu_seconds(stack.gateway.pid()),
                signer_testkit::process_cpu_seconds(stack.signerd.pid()),
                signer_testkit::process_cpu_seconds(Some(std::process::id())),
            ]
        };
        let cpu_before = cpu();
        let started_at = SystemTime::now();
        let started = Instant::now();
        let cursor = Arc::new(AtomicUsize::new(0));
        let mut posters = Vec::new();
        for _ in 0..args.in_flight {
            let (http, key, wallets, cursor, sink) = (
                stack.http.clone(),
                stack.service_key.clone(),
                wallets.clone(),
                cursor.clone(),
                sink.to_owned(),
            );
            let total = args.payments;
            posters.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                loop {
                    let n = cursor.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let body = serde_json::json!({
                        "source_wallet_id": wallets[n % wallets.len()],
                        "destination": sink,
                        "amount": "1",
                    })
                    .to_string();
                    let t = Instant::now();
                    let reply = http.post("/v1/payments", &key, &body).await;
                    if reply.status == 202 {
                        latencies.push(t.elapsed());
                    } else {
                        errors += 1;
                        eprintln!("POST failed: {} {}", reply.status, reply.body);
                    }
                }
                (latencies, errors)
            }));
        }
        let mut latencies = Vec::new();
        let mut refused = 0;
        for poster in posters {
            let (l, e) = poster.await?;
            latencies.extend(l);
            refused += e;
        }
        let accepted_in = started.elapsed().as_secs_f64();
        let accepted = latencies.len() as i64;
        // Wait for every accepted payment to finish (polling the database, not the API, so the
        // measurement does not load the gateway).
        let deadline = Instant::now() + Duration::from_secs(600);
        let (mut success, mut failed);
        loop {
            let (ok, bad) = finished_payments(store).await?;
            (success, failed) = (ok - success_before, bad - failed_before);
            if success + failed >= accepted || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_after = cpu();
        latencies.sort_unstable();
        Ok(Phase {
            success,
            failed,
            refused,
            elapsed,
            accepted_in,
            latencies,
            cpu_per_payment: [0, 1, 2]
                .map(|i| (cpu_after[i] - cpu_before[i]) * 1e6 / (success.max(1) as f64)),
            started: started_at,
        })
    }

    /// The `--webhooks` phase: registers an endpoint for every payment event, pays again at full
    /// speed, waits for every delivery, checks and reports. Returns the payments it finished.
    async fn webhook_phase(&self, raw: &Phase) -> anyhow::Result<i64> {
        let Bench {
            stack, store, args, ..
        } = self;
        let (url, receipts) = start_receiver().await?;
        let reply = stack
            .http
            .post(
                "/v1/webhooks",
                &stack.service_key,
                &serde_json::json!({
                    "url": url,
                    "event_types": gateway::webhooks::EventType::ALL
                        .iter()
                        .map(|t| t.as_str())
                        .filter(|t| t.starts_with("payment."))
                        .collect::<Vec<_>>(),
                })
                .to_string(),
            )
            .await;
        anyhow::ensure!(reply.status == 201, "webhook: {}", reply.body);
        let endpoint = reply.json()["id"].as_str().unwrap_or_default().to_owned();
        let secret = WebhookSecret::parse(reply.json()["secret"].as_str().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        let phase = self.pay_at_full_speed().await?;
        let phase_start = unix_ms(phase.started);
        let phase_end = phase_start + (phase.elapsed * 1000.0) as i64;
        let pending = || async {
            let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = $1 AND state = 'PENDING'",
        )
        .bind(&endpoint)
        .fetch_one(store.pool())
        .await?;
            anyhow::Ok(row.try_get::<i64, _>("n")?)
        };
        let backlog_at_end = pending().await?;
        let deadline = Instant::now() + Duration::from_secs(600);
        while pending().await? > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rows = sqlx::query(
            "SELECT d.event_id AS event_id, d.state AS state, o.created_at_ms AS created_at_ms \
         FROM webhook_deliveries d JOIN outbox_events o ON o.id = d.event_id \
         WHERE d.endpoint_id = $1",
        )
        .bind(&endpoint)
        .fetch_all(store.pool())
        .await?;
        let mut created: HashMap<String, i64> = HashMap::new();
        let mut undelivered = 0usize;
        for row in &rows {
            let id = format!("evt_{}", row.try_get::<i64, _>("event_id")?);
            if row.try_get::<String, _>("state")? != "DELIVERED" {
                undelivered += 1;
            }
            created.insert(id, row.try_get::<i64, _>("created_at_ms")?);
        }

        let receipts = std::mem::take(
            &mut *receipts
                .lock()
                .map_err(|_| anyhow::anyhow!("receiver lock poisoned"))?,
        );
        let mut first: HashMap<&str, i64> = HashMap::new();
        let mut bad_signatures = 0usize;
        for r in &receipts {
            let expected = secret.sign(&r.id, r.timestamp, &r.body);
            if !r.signature.split(' ').any(|s| s == expected) {
                bad_signatures += 1;
            }
            let at = first.entry(r.id.as_str()).or_insert(r.at_ms);
            *at = (*at).min(r.at_ms);
        }
        let unknown = first
            .keys()
            .filter(|id| !created.contains_key(**id))
            .count();
        let missing = created
            .keys()
            .filter(|id| !first.contains_key(id.as_str()))
            .count();
        let mut lags: Vec<i64> = first
            .iter()
            .filter_map(|(id, at)| created.get(*id).map(|c| at - c))
            .collect();
        lags.sort_unstable();
        let lag = |p: f64| {
            lags.get(((lags.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(-1)
        };
        let during = first
            .values()
            .filter(|at| (phase_start..=phase_end).contains(*at))
            .count();
        let last = first.values().copied().max().unwrap_or(phase_start);

        println!(
            "with a webhook for every payment event (max_in_flight_per_endpoint {}):",
            args.webhook_in_flight
        );
        phase.print(args.payments);
        println!(
            "  payments/s: {:.1} with webhooks, {:.1} without (the first phase of this run)",
            phase.payments_per_second(),
            raw.payments_per_second()
        );
        println!(
            "  events: {} created, {} delivered while the payments ran = {:.1} events/s; all {} by {:.1} s after the start = {:.1} events/s; backlog {} when the last payment finished",
            created.len(),
            during,
            during as f64 / phase.elapsed,
            first.len(),
            (last - phase_start) as f64 / 1000.0,
            first.len() as f64 * 1000.0 / ((last - phase_start).max(1) as f64),
            backlog_at_end
        );
        println!(
            "  delivery lag (outbox row -> receiver): p50 {} ms, p99 {} ms, max {} ms",
            lag(0.50),
            lag(0.99),
            lag(1.0)
        );
        println!(
            "  check: {} requests, {} duplicates, {} missing, {} unknown, {} not DELIVERED, {} bad signatures{}",
            receipts.len(),
            receipts.len() - first.len(),
            missing,
            unknown,
            undelivered,
            bad_signatures,
            if missing + unknown + undelivered + bad_signatures == 0 {
                " (every event arrived, signed)"
            } else {
                " (FAILED)"
            }
        );
        anyhow::ensure!(
            missing + unknown + undelivered + bad_signatures == 0,
            "webhook check failed"
        );
        Ok(phase.success + phase.failed)
    }
}

/// Milliseconds since the Unix epoch by this machine's clock.
fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One request the receiver got.
struct Receipt {
    at_ms: i64,
    id: String,
    timestamp: i64,
    signature: String,
    body: axum::body::Bytes,
}

/// A webhook receiver in this process: records every request with its arrival time, answers 204.
async fn start_receiver() -> anyhow::Result<(String, Arc<Mutex<Vec<Receipt>>>)> {
    let receipts = Arc::new(Mutex::new(Vec::<Receipt>::new()));
    let record = receipts.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let at_ms = unix_ms(SystemTime::now());
                let header = |name: &str| support::header_text(&headers, name);
                let receipt = Receipt {
                    at_ms,
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp").parse().unwrap_or(0),
                    signature: header("webhook-signature"),
                    body,
                };
                if let Ok(mut all) = record.lock() {
                    all.push(receipt);
                }
                async { axum::http::StatusCode::NO_CONTENT }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, receipts))
}
