//! Wallet creations per second end to end, next to raw SoftHSM key generation in the same run.
//!
//! ```text
//! cargo build --release -p signerd
//! cargo bench -p gateway --bench wallet_throughput -- [--seconds 10] [--in-flight 32] [--database sqlite|postgres] [--pool warm|empty] [--pool-size 4000]
//! ```
//!
//! `--pool warm`: signerd keeps a key pool (`[pool.pkcs11]`, target `--pool-size`), the clock
//! starts once it is full, and the run ends after `--seconds` or when the pool's keys are spent
//! (users are made for exactly that many wallets), so every measured wallet binds a pool key.
//! `--pool empty` (the default): no pool, every key is generated on the request path (as
//! before the pool existed, and as with a pool drained to zero).
//!
//! End to end means: HTTP `POST /v1/users/{id}/wallet` with a bearer key and an Idempotency-Key
//! into the release `gateway` binary (database: a fresh SQLite file, or a fresh Postgres
//! database from `GATEWAY_TEST_POSTGRES_URL`), which reserves the row, calls signerd `CreateKey`
//! over mutual TLS (release `signerd`, fresh SoftHSM token), and stores the public key with the
//! audit event (two commits; on SQLite both group-committed). Users are created before the clock
//! starts.
//!
//! Raw means: this binary re-executed with `SOFTHSM2_CONF` pointing at another fresh token,
//! generating Ed25519 key pairs in the token through cryptoki with the attributes signerd uses
//! (token objects, private key sensitive and non-extractable), with 1, 2 and 4 threads (4 =
//! signerd's sessions), and with 4 again after the end-to-end run. The runs happen one after the
//! other, so they never compete for the cores. The ratio is end to end over the best raw figure.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use signer_testkit::{SOFTHSM_MODULE, TEST_PIN, Token};
use support::{DatabaseKind, Stack};

/// `backend.pkcs11.sessions` of the test signerd (the testkit's default).
const SIGNERD_SESSIONS: usize = 4;

/// DER of the Ed25519 curve OID (what signerd puts in CKA_EC_PARAMS).
const ED25519_EC_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

struct Args {
    seconds: u64,
    in_flight: usize,
    database: DatabaseKind,
    warm_pool: bool,
    pool_size: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        seconds: 10,
        in_flight: 32,
        database: DatabaseKind::Sqlite,
        warm_pool: false,
        pool_size: 4000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--seconds" => args.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--in-flight" => args.in_flight = it.next().and_then(|v| v.parse().ok()).unwrap_or(32),
            "--pool-size" => {
                args.pool_size = it.next().and_then(|v| v.parse().ok()).unwrap_or(4000)
            }
            "--pool" => {
                args.warm_pool = match it.next().as_deref() {
                    Some("warm") => true,
                    Some("empty") => false,
                    other => anyhow::bail!("--pool warm|empty, got {other:?}"),
                }
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
    // Re-executed as the raw key generation loop: SoftHSM reads SOFTHSM2_CONF at C_Initialize,
    // so the loop runs in a process started with it set.
    if let Ok(spec) = std::env::var("WALLET_BENCH_RAW") {
        return raw_child(&spec);
    }
    let args = parse_args()?;
    let signerd = signer_testkit::signerd_bin();
    anyhow::ensure!(
        signerd.exists(),
        "no release signerd at {}: run `cargo build --release -p signerd` first",
        signerd.display()
    );
    // Raw capacity: 1 and 2 threads, and as many threads as signerd has sessions (4), since
    // SoftHSM key generation is dominated by writing the token's object files and overlaps
    // across sessions. Measured again after the end-to-end run to expose drift (the machine is
    // shared); the ratio is taken against the best raw figure, the conservative choice.
    let mut raw = Vec::new();
    for threads in [1, 2, SIGNERD_SESSIONS] {
        raw.push((
            format!("{threads} thread(s)"),
            raw_rate(threads, args.seconds)?,
        ));
    }
    let best_before = raw.iter().map(|(_, rate)| *rate).fold(0.0, f64::max);
    // The load generator takes one thread so it steals as little as possible from the servers.
    let e2e = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(end_to_end(&args, best_before))?;
    raw.push((
        format!("{SIGNERD_SESSIONS} thread(s), after"),
        raw_rate(SIGNERD_SESSIONS, args.seconds)?,
    ));
    let best = raw.iter().map(|(_, rate)| *rate).fold(0.0, f64::max);

    for (label, rate) in &raw {
        println!("raw SoftHSM Ed25519 key generation, {label:<20} {rate:>7.1} keys/s");
    }
    println!(
        "gateway wallet creation end to end ({:?}, {} in flight, {:.1} s, pool {}):",
        args.database,
        args.in_flight,
        e2e.seconds,
        if args.warm_pool { "warm" } else { "empty" }
    );
    println!(
        "  {:>7.1} wallets/s  p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  errors {}",
        e2e.rate, e2e.p50_ms, e2e.p95_ms, e2e.p99_ms, e2e.errors
    );
    println!(
        "  keys from the pool {}, generated inline {}, creation marker writes {} ({:.2} per wallet)",
        e2e.from_pool,
        e2e.inline,
        e2e.marker_writes,
        e2e.marker_writes / (e2e.from_pool + e2e.inline).max(1.0)
    );
    println!(
        "  cpu per wallet: gateway {:.0} us, signerd {:.0} us, load generator {:.0} us",
        e2e.cpu_us[0], e2e.cpu_us[1], e2e.cpu_us[2]
    );
    println!("  ratio to the best raw rate: {:.2}", e2e.rate / best);
    Ok(())
}

struct EndToEnd {
    rate: f64,
    seconds: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    from_pool: f64,
    inline: f64,
    /// Creation markers signerd wrote (a write names every creation queued meanwhile).
    marker_writes: f64,
    errors: usize,
    /// CPU microseconds per wallet: gateway, signerd, load generator.
    cpu_us: [f64; 3],
}

async fn end_to_end(args: &Args, raw_rate: f64) -> anyhow::Result<EndToEnd> {
    // The pool fills from empty as fast as one session makes keys (low water 1: a refill runs
    // from empty to target), and does not refill again until it is empty, so the refill does
    // not compete with the measured wallets once the clock runs.
    let signerd_toml = if args.warm_pool {
        format!(
            "\n[pool.pkcs11]\ntarget = {}\nlow_water = 1\nrefill_per_second = 10000\n",
            args.pool_size
        )
    } else {
        String::new()
    };
    let stack = Stack::start_with_signerd(
        args.database,
        support::GatewayOptions::default(),
        &signerd_toml,
    )
    .await;
    // Enough users that the workers never run out even at several times the raw rate; made
    // straight in the database (before the clock starts) because only wallets are measured.
    // With a warm pool, exactly as many as it holds: the run ends when the pool is spent.
    let users_needed = if args.warm_pool {
        args.pool_size
    } else {
        (raw_rate * args.seconds as f64 * 4.0) as usize + 500
    };
    let store = stack.db.store().await;
    let ctx = gateway::store::AuditContext::cli();
    let mut users = Vec::with_capacity(users_needed);
    for _ in 0..users_needed {
        let external_ref = gateway::model::ExternalRef::parse(&uuid::Uuid::new_v4().to_string())?;
        users.push(store.create_user(&external_ref, &ctx).await?.id.to_string());
    }
    store.close().await;
    let users = Arc::new(users);

    // Warm-up: a few wallets so connections and caches exist before the clock starts.
    let cursor = Arc::new(AtomicUsize::new(0));
    for _ in 0..args.in_flight.min(8) {
        let user = &users[cursor.fetch_add(1, Ordering::Relaxed)];
        let reply = stack
            .http
            .post(&format!("/v1/users/{user}/wallet"), &stack.service_key, "")
            .await;
        anyhow::ensure!(reply.status == 201, "warm-up failed: {}", reply.body);
    }

    if args.warm_pool {
        let deadline = Instant::now() + Duration::from_secs(1800);
        // The refill runs on to target while the warm-up wallets take their keys.
        while pool_keys(&stack).await.0 + 8.0 < args.pool_size as f64 {
            anyhow::ensure!(Instant::now() < deadline, "the pool never filled");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let created_before = pool_keys(&stack).await;
    let cpu_before = [
        process_cpu_seconds(stack.gateway.pid()),
        process_cpu_seconds(stack.signerd.pid()),
        process_cpu_seconds(Some(std::process::id())),
    ];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for _ in 0..args.in_flight {
        let (http, key) = (stack.http.clone(), stack.service_key.clone());
        let (users, cursor) = (users.clone(), cursor.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let Some(user) = users.get(cursor.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let t = Instant::now();
                let reply = http
                    .post(&format!("/v1/users/{user}/wallet"), &key, "")
                    .await;
                if reply.status == 201 {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let created_after = pool_keys(&stack).await;
    let cpu_after = [
        process_cpu_seconds(stack.gateway.pid()),
        process_cpu_seconds(stack.signerd.pid()),
        process_cpu_seconds(Some(std::process::id())),
    ];
    let per_wallet_us =
        |i: usize| (cpu_after[i] - cpu_before[i]) / latencies.len().max(1) as f64 * 1e6;
    let cpu_us = [per_wallet_us(0), per_wallet_us(1), per_wallet_us(2)];
    anyhow::ensure!(
        args.warm_pool || cursor.load(Ordering::Relaxed) < users.len(),
        "ran out of users: the measurement is cut short"
    );
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    // Every wallet the gateway reports is a key in the HSM: count them to be sure.
    let keys = stack.signerd_keys().await.len();
    let created = latencies.len() + args.in_flight.min(8);
    anyhow::ensure!(
        keys == created,
        "signerd holds {keys} keys for {created} wallets"
    );
    Ok(EndToEnd {
        rate: latencies.len() as f64 / elapsed,
        seconds: elapsed,
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        from_pool: created_after.1 - created_before.1,
        inline: created_after.2 - created_before.2,
        marker_writes: created_after.3 - created_before.3,
        errors,
        cpu_us,
    })
}

/// signerd's pool depth, its keys created from the pool and inline so far, and the creation
/// markers it wrote (metrics).
async fn pool_keys(stack: &Stack) -> (f64, f64, f64, f64) {
    let text = stack.signerd.metrics().await.unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (
        value("signerd_pool_keys{backend=\"pkcs11\"} "),
        value("signerd_keys_created_total{backend=\"pkcs11\",origin=\"pool\"} "),
        value("signerd_keys_created_total{backend=\"pkcs11\",origin=\"inline\"} "),
        value("signerd_pool_marker_writes_total{backend=\"pkcs11\"} "),
    )
}

/// User + system CPU seconds of a process, from /proc (0 when unavailable).
fn process_cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// Runs the raw loop in a child process on a fresh token; returns key pairs per second.
fn raw_rate(threads: usize, seconds: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let token = Token::init(dir.path())?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .env(
            "WALLET_BENCH_RAW",
            format!("{threads}:{seconds}:{}", token.label),
        )
        .env("SOFTHSM2_CONF", &token.conf)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "raw loop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn raw_child(spec: &str) -> anyhow::Result<()> {
    let mut parts = spec.splitn(3, ':');
    let threads: usize = parts.next().unwrap_or("1").parse()?;
    let seconds: u64 = parts.next().unwrap_or("5").parse()?;
    let label = parts.next().unwrap_or_default().to_owned();
    let pkcs11 = Pkcs11::new(SOFTHSM_MODULE)?;
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = pkcs11
        .get_slots_with_token()?
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).is_ok_and(|t| t.label() == label))
        .ok_or_else(|| anyhow::anyhow!("no token {label}"))?;
    let login = pkcs11.open_rw_session(slot)?;
    login.login(UserType::User, Some(&TEST_PIN.to_owned().into()))?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let next_id = AtomicUsize::new(0);
    let total: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (pkcs11, next_id) = (pkcs11.clone(), &next_id);
                scope.spawn(move || -> anyhow::Result<u64> {
                    let session = pkcs11.open_rw_session(slot)?;
                    let mut n = 0;
                    while Instant::now() < deadline {
                        let id =
                            format!("raw-{}", next_id.fetch_add(1, Ordering::Relaxed)).into_bytes();
                        let public = [
                            Attribute::Token(true),
                            Attribute::Private(false),
                            Attribute::Verify(true),
                            Attribute::EcParams(ED25519_EC_PARAMS.to_vec()),
                            Attribute::Id(id.clone()),
                            Attribute::Label(id.clone()),
                        ];
                        let private = [
                            Attribute::Token(true),
                            Attribute::Private(true),
                            Attribute::Sensitive(true),
                            Attribute::Extractable(false),
                            Attribute::Sign(true),
                            Attribute::Id(id.clone()),
                            Attribute::Label(id),
                        ];
                        session.generate_key_pair(
                            &Mechanism::EccEdwardsKeyPairGen,
                            &public,
                            &private,
                        )?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().and_then(Result::ok).unwrap_or(0))
            .sum()
    });
    println!("{}", total as f64 / started.elapsed().as_secs_f64());
    Ok(())
}
