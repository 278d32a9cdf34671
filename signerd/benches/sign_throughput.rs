//! SignTransaction throughput over mutual TLS, next to a raw `C_Sign` loop on the same token.
//!
//! ```text
//! cargo bench -p signerd --bench sign_throughput -- [--in-flight 32] [--connections 2] [--sessions 4] [--seconds 5]
//! ```
//!
//! The bench creates a SoftHSM token and a PKI in a temp dir, starts the release `signerd`, and
//! creates one key. It then runs, one after the other so they never compete for the two cores:
//! the raw loop (this same binary re-executed with `SOFTHSM2_CONF` set, signing with the key's
//! handle directly through cryptoki, 1 and 2 threads), then N concurrent `SignTransaction` calls
//! from this process. It prints signatures/s, p50/p99 latency and the ratio to the raw rate.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use signer_proto::v1 as pb;
use signer_testkit::{
    Grant, SOFTHSM_MODULE, SignerdOptions, SignerdProcess, TEST_PIN, process_cpu_seconds,
    vector_policy,
};

const KEY_ID: &str = "bench-1";

struct Args {
    sessions: usize,
    in_flight: usize,
    connections: usize,
    seconds: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        sessions: 4,
        in_flight: 32,
        connections: 2,
        seconds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match flag.as_str() {
            "--sessions" => args.sessions = value().unwrap_or(4) as usize,
            "--in-flight" => args.in_flight = value().unwrap_or(32) as usize,
            "--connections" => args.connections = value().unwrap_or(2) as usize,
            "--seconds" => args.seconds = value().unwrap_or(5),
            _ => {} // cargo bench passes --bench; ignore what we do not know.
        }
    }
    args
}

fn main() -> anyhow::Result<()> {
    // Re-executed as the raw C_Sign loop: SoftHSM reads SOFTHSM2_CONF from the environment at
    // C_Initialize, so the raw loop runs in a process started with it set.
    if let Ok(spec) = std::env::var("SIGN_BENCH_RAW") {
        return raw_child(&spec);
    }
    let args = parse_args();
    // The load generator takes one thread so it steals as little as possible from signerd.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![Grant::keys("bench", &["bench-*"])],
        binary: Some(PathBuf::from(env!("CARGO_BIN_EXE_signerd"))),
        sessions: Some(args.sessions),
        // The reference vector is old and from another account: lift the source and time-bound
        // rules for the bench key; every other check (ACL, caps, guard, audit) runs as usual.
        extra_toml: vector_policy("bench-*"),
        ..Default::default()
    })
    .await?;
    let mut client = signerd.client("bench").await?;
    client
        .create_key(pb::CreateKeyRequest {
            key_id: KEY_ID.into(),
            backend: String::new(),
        })
        .await?;

    let raw1 = raw_rate(&signerd, 1, args.seconds)?;
    let raw2 = raw_rate(&signerd, 2, args.seconds)?;

    let vector = signer_testkit::vectors::first();
    let xdr = vector.envelope_xdr();
    let passphrase = vector.network_passphrase.clone();

    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(signerd.client("bench").await?);
    }
    // Warm-up: every connection does a few calls first.
    for client in &mut clients {
        for _ in 0..10 {
            client.sign_transaction(request(&xdr, &passphrase)).await?;
        }
    }
    let audit_before = audit_counters(&signerd).await;
    let server_cpu_before = process_cpu_seconds(signerd.pid());
    let own_cpu_before = process_cpu_seconds(Some(std::process::id()));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.in_flight {
        let mut client = clients[i % clients.len()].clone();
        let (xdr, passphrase) = (xdr.clone(), passphrase.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.sign_transaction(request(&xdr, &passphrase)).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = process_cpu_seconds(signerd.pid()) - server_cpu_before;
    let audit_after = audit_counters(&signerd).await;
    let own_cpu = process_cpu_seconds(Some(std::process::id())) - own_cpu_before;
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    let rate = latencies.len() as f64 / elapsed;
    println!("raw C_Sign, 1 thread:   {raw1:>8.0} signatures/s");
    println!("raw C_Sign, 2 threads:  {raw2:>8.0} signatures/s");
    println!(
        "signerd SignTransaction over mTLS, {} in flight on {} connections, {} sessions, {} s:",
        args.in_flight, args.connections, args.sessions, args.seconds
    );
    println!(
        "  {rate:>8.0} signatures/s  p50 {:.2} ms  p99 {:.2} ms  errors {errors}",
        pct(0.50),
        pct(0.99)
    );
    println!(
        "  ratio to raw: {:.2} (vs 2 threads), {:.2} (vs 1 thread)",
        rate / raw2,
        rate / raw1
    );
    let records = audit_after.0 - audit_before.0;
    let fsyncs = audit_after.1 - audit_before.1;
    println!(
        "  audit log: {records:.0} records in {fsyncs:.0} fsyncs, {:.1} records per fsync, mean fsync {:.2} ms",
        records / fsyncs.max(1.0),
        (audit_after.2 - audit_before.2) / fsyncs.max(1.0) * 1000.0
    );
    let signed = latencies.len().max(1) as f64;
    println!(
        "  cpu: signerd {:.0} us/signature ({:.2} cores), load generator {:.0} us/request ({:.2} cores)",
        server_cpu / signed * 1e6,
        server_cpu / elapsed,
        own_cpu / signed * 1e6,
        own_cpu / elapsed
    );
    Ok(())
}

/// (records, fsyncs, fsync seconds) so far, from signerd's metrics.
async fn audit_counters(signerd: &SignerdProcess) -> (f64, f64, f64) {
    let text = signerd.metrics().await.unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("signerd_audit_batch_records_sum"),
        value("signerd_audit_batch_records_count"),
        value("signerd_audit_fsync_seconds_sum"),
    )
}

fn request(xdr: &[u8], passphrase: &str) -> pb::SignTransactionRequest {
    pb::SignTransactionRequest {
        key_id: KEY_ID.into(),
        envelope_xdr: xdr.to_vec(),
        network_passphrase: passphrase.to_owned(),
    }
}

/// Runs the raw loop in a child process on the same token and returns signatures/s.
fn raw_rate(signerd: &SignerdProcess, threads: usize, seconds: u64) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .env(
            "SIGN_BENCH_RAW",
            format!("{threads}:{seconds}:{}", signerd.token.label),
        )
        .env("SOFTHSM2_CONF", &signerd.token.conf)
        .output()?;
    if !out.status.success() {
        anyhow::bail!("raw loop failed: {}", String::from_utf8_lossy(&out.stderr));
    }
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
    let key = *login
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(KEY_ID.as_bytes().to_vec()),
        ])?
        .first()
        .ok_or_else(|| anyhow::anyhow!("no key {KEY_ID}"))?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let pkcs11 = pkcs11.clone();
                scope.spawn(move || -> anyhow::Result<u64> {
                    let session = pkcs11.open_rw_session(slot)?;
                    let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
                    let hash = [7u8; 32];
                    let mut n = 0;
                    while Instant::now() < deadline {
                        session.sign(&mechanism, key, &hash)?;
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
