//! The key pool's refill next to raw key generation, and signing throughput while a refill runs
//! next to signing with no refill.
//!
//! ```text
//! cargo build --release -p signerd
//! cargo bench -p signerd --bench pool_refill -- [--seconds 5] [--in-flight 32] [--fill 300] [--refill-rate 20]
//! ```
//!
//! One after the other, so they never compete for the cores:
//!
//! 1. raw: this binary re-executed with `SOFTHSM2_CONF` on a fresh token, generating Ed25519
//!    key pairs through cryptoki with signerd's template, one thread (the refill's one session);
//! 2. refill: a release `signerd` with `[pool.pkcs11] target = --fill` and no rate bound to
//!    speak of (10000/s): keys per second until the pool holds `--fill` keys, read from its
//!    `signerd_pool_keys` metric;
//! 3. signing, no refill: `SignHash` (blind signing: the same audit record and fsync per
//!    signature as `SignTransaction`, without the policy work) with `--in-flight` calls in
//!    flight over two connections, for `--seconds`, on a signerd without a pool;
//! 4. signing during a refill: the same on a signerd whose pool (target far above what can be
//!    made meanwhile) refills the whole time at `--refill-rate` keys/s (20 is the default
//!    `refill_per_second`), and again with the refill unbounded.

use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use signer_proto::v1 as pb;
use signer_testkit::{Grant, SOFTHSM_MODULE, SignerdOptions, SignerdProcess, TEST_PIN, Token};

struct Args {
    seconds: u64,
    in_flight: usize,
    fill: usize,
    refill_rate: u32,
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 5,
        in_flight: 32,
        fill: 300,
        refill_rate: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match flag.as_str() {
            "--seconds" => args.seconds = value().unwrap_or(5),
            "--in-flight" => args.in_flight = value().unwrap_or(32) as usize,
            "--fill" => args.fill = value().unwrap_or(300) as usize,
            "--refill-rate" => args.refill_rate = value().unwrap_or(20) as u32,
            _ => {} // cargo bench passes --bench; ignore what we do not know.
        }
    }
    args
}

fn main() -> anyhow::Result<()> {
    if let Ok(spec) = std::env::var("POOL_BENCH_RAW") {
        return raw_child(&spec);
    }
    let args = parse_args();
    let raw = raw_rate(args.seconds)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(run(&args, raw))
}

async fn run(args: &Args, raw: f64) -> anyhow::Result<()> {
    let refill = refill_rate(args.fill).await?;
    let quiet = signing_rate(args, None).await?;
    let bounded = signing_rate(args, Some(args.refill_rate)).await?;
    let unbounded = signing_rate(args, Some(10_000)).await?;
    println!("raw SoftHSM Ed25519 key generation, 1 thread      {raw:>8.1} keys/s");
    println!(
        "pool refill (one key at a time, unbounded rate)   {refill:>8.1} keys/s  ({:.2} of raw)",
        refill / raw
    );
    println!(
        "SignHash, {} in flight, no refill                {:>8.1} sig/s",
        args.in_flight, quiet.signatures
    );
    for (label, run) in [
        (format!("refill at most {}/s", args.refill_rate), bounded),
        ("refill unbounded".to_owned(), unbounded),
    ] {
        println!(
            "SignHash, {} in flight, {label:<22} {:>8.1} sig/s  ({:.2} of no refill; {:.1} pool keys/s made meanwhile)",
            args.in_flight,
            run.signatures,
            run.signatures / quiet.signatures,
            run.pool_keys
        );
    }
    Ok(())
}

fn grants() -> Vec<Grant> {
    let mut grant = Grant::keys("bench", &["bench-*"]);
    grant.blind_sign = true;
    vec![grant]
}

fn pool_toml(target: usize, rate: u32) -> String {
    format!(
        "\n[pool.pkcs11]\ntarget = {target}\nlow_water = {target}\nrefill_per_second = {rate}\n"
    )
}

async fn pool_depth(signerd: &SignerdProcess) -> f64 {
    let text = signerd.metrics().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("signerd_pool_keys{backend=\"pkcs11\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Keys per second a pool refill makes, from launch until `fill` keys are ready.
async fn refill_rate(fill: usize) -> anyhow::Result<f64> {
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: grants(),
        extra_toml: pool_toml(fill, 10_000),
        ..Default::default()
    })
    .await?;
    let ready = Instant::now();
    let deadline = ready + Duration::from_secs(600);
    while pool_depth(&signerd).await < fill as f64 {
        anyhow::ensure!(Instant::now() < deadline, "the pool never filled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(fill as f64 / ready.elapsed().as_secs_f64())
}

struct Signing {
    signatures: f64,
    pool_keys: f64,
}

/// SignHash throughput, with a pool refilling at `refill` keys/s (or no pool).
async fn signing_rate(args: &Args, refill: Option<u32>) -> anyhow::Result<Signing> {
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: grants(),
        extra_toml: refill.map(|r| pool_toml(1_000_000, r)).unwrap_or_default(),
        ..Default::default()
    })
    .await?;
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(signerd.client("bench").await?);
    }
    let mut first = clients[0].clone();
    signer_testkit::create_key(&mut first, "bench-1").await;
    // Let a refill get going before the clock starts.
    if refill.is_some() {
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool_depth(&signerd).await < 1.0 {
            anyhow::ensure!(Instant::now() < deadline, "the refill never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let depth_before = pool_depth(&signerd).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for i in 0..args.in_flight {
        let mut client = clients[i % clients.len()].clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let signed = client
                    .sign_hash(pb::SignHashRequest {
                        key_id: "bench-1".into(),
                        hash: vec![(n % 251) as u8; 32],
                    })
                    .await;
                if signed.is_ok() {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let depth_after = pool_depth(&signerd).await;
    Ok(Signing {
        signatures: total as f64 / elapsed,
        pool_keys: (depth_after - depth_before).max(0.0) / elapsed,
    })
}

/// Runs the raw loop in a child process on a fresh token; returns key pairs per second.
fn raw_rate(seconds: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let token = Token::init(dir.path())?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .env("POOL_BENCH_RAW", format!("{seconds}:{}", token.label))
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
    let (seconds, label) = spec
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("bad spec {spec}"))?;
    let seconds: u64 = seconds.parse()?;
    let pkcs11 = Pkcs11::new(SOFTHSM_MODULE)?;
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = pkcs11
        .get_slots_with_token()?
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).is_ok_and(|t| t.label() == label))
        .ok_or_else(|| anyhow::anyhow!("no token {label}"))?;
    let session = pkcs11.open_rw_session(slot)?;
    session.login(UserType::User, Some(&TEST_PIN.to_owned().into()))?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut n = 0u64;
    while Instant::now() < deadline {
        let id = format!("raw-{n}").into_bytes();
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Copyable(false),
            Attribute::EcParams(signerd::backend::pkcs11::ED25519_EC_PARAMS.to_vec()),
            Attribute::Id(id.clone()),
            Attribute::Label(id.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Copyable(false),
            Attribute::Destroyable(false),
            Attribute::Sign(true),
            Attribute::Id(id.clone()),
            Attribute::Label(id),
        ];
        session.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)?;
        n += 1;
    }
    println!("{}", n as f64 / started.elapsed().as_secs_f64());
    Ok(())
}
