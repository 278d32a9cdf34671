//! Payments per second from `POST /v1/payments` to `SUCCESS`, against the Horizon simulator
//! closing a ledger every second, with many source wallets.
//!
//! ```text
//! cargo build --release -p signerd
//! cargo bench -p gateway --bench payment_throughput -- [--payments 3000] [--wallets 600] [--in-flight 64] [--database sqlite|postgres] [--backend horizon|rpc]
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

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use horizon_sim::{AccountKey, HorizonSim, SimConfig};
use sqlx::Row;
use support::{Backend, DatabaseKind, GatewayOptions, Stack};

struct Args {
    payments: usize,
    wallets: usize,
    in_flight: usize,
    database: DatabaseKind,
    backend: Backend,
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
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut number = |default: usize| it.next().and_then(|v| v.parse().ok()).unwrap_or(default);
        match flag.as_str() {
            "--payments" => args.payments = number(3000),
            "--wallets" => args.wallets = number(600),
            "--in-flight" => args.in_flight = number(64),
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
                "\n[payments]\nworker_concurrency = {}\npoll_interval_ms = 50\n",
                args.wallets + 64
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

    let cpu_before = [
        signer_testkit::process_cpu_seconds(stack.gateway.pid()),
        signer_testkit::process_cpu_seconds(stack.signerd.pid()),
        signer_testkit::process_cpu_seconds(Some(std::process::id())),
    ];
    let started = Instant::now();
    let cursor = Arc::new(AtomicUsize::new(0));
    let mut posters = Vec::new();
    for _ in 0..args.in_flight {
        let (http, key, wallets, cursor, sink) = (
            stack.http.clone(),
            stack.service_key.clone(),
            wallets.clone(),
            cursor.clone(),
            sink.clone(),
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
    let mut errors = 0;
    for poster in posters {
        let (l, e) = poster.await?;
        latencies.extend(l);
        errors += e;
    }
    let accepted_in = started.elapsed().as_secs_f64();
    let accepted = latencies.len() as i64;
    // Wait for every accepted payment to finish (polling the database, not the API, so the
    // measurement does not load the gateway).
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut success, mut failed);
    loop {
        let row = sqlx::query(
            "SELECT SUM(CASE WHEN status = 'SUCCESS' THEN 1 ELSE 0 END) AS ok, \
             SUM(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END) AS bad FROM payments",
        )
        .fetch_one(store.pool())
        .await?;
        success = row.try_get::<Option<i64>, _>("ok")?.unwrap_or(0);
        failed = row.try_get::<Option<i64>, _>("bad")?.unwrap_or(0);
        if success + failed >= accepted || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = [
        signer_testkit::process_cpu_seconds(stack.gateway.pid()),
        signer_testkit::process_cpu_seconds(stack.signerd.pid()),
        signer_testkit::process_cpu_seconds(Some(std::process::id())),
    ];
    let per_payment = |i: usize| (cpu_after[i] - cpu_before[i]) * 1e6 / (success.max(1) as f64);
    let applied = sim.state().transactions.len();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    println!(
        "payments POST -> SUCCESS ({:?}, {:?}, {} source wallets, {} in flight, 1 s ledgers):",
        args.database, args.backend, args.wallets, args.in_flight
    );
    println!(
        "  {success} SUCCESS, {failed} FAILED, {errors} refused of {} in {elapsed:.1} s = {:.1} payments/s",
        args.payments,
        success as f64 / elapsed
    );
    println!(
        "  accepting took {accepted_in:.1} s ({:.1} accepts/s); accept latency p50 {:.1} ms p99 {:.1} ms",
        accepted as f64 / accepted_in,
        percentile(0.50),
        percentile(0.99)
    );
    println!(
        "  cpu per payment: gateway {:.0} us, signerd {:.0} us, simulator + load generator {:.0} us (database server not counted)",
        per_payment(0),
        per_payment(1),
        per_payment(2)
    );
    println!(
        "  simulator applied {applied} transactions for {} finished payments (equal = none paid twice)",
        success + failed
    );
    store.close().await;
    drop(stack);
    sim.shutdown().await;
    Ok(())
}
