//! SignTransaction throughput through the `gcp-kms` backend, against the fake Cloud KMS with
//! added latency: shows the backend is not serialised (many KMS calls in flight at once).
//!
//! ```text
//! cargo bench -p signerd --bench kms_throughput -- [--in-flight 64] [--connections 4] [--latency-ms 20] [--seconds 5]
//! ```
//!
//! The bench starts the fake KMS in this process, then the release `signerd` with a KMS-only
//! config pointed at it (the official client over HTTP, anonymous credentials), creates one key,
//! sets the fake's latency and runs N concurrent `SignTransaction` calls over mTLS. Every
//! signature of the run is checked against the key. With L ms of latency the ceiling is
//! N / L signatures/s (64 / 20 ms = 3,200/s); the goal is at least 2,500/s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, VerifyingKey};
use signer_proto::v1 as pb;
use signer_testkit::fake_kms::{FakeKms, KmsCall};
use signer_testkit::{GcpKmsOptions, Grant, SignerdOptions, SignerdProcess, process_cpu_seconds};

const KEY_ID: &str = "bench-1";

struct Args {
    in_flight: usize,
    connections: usize,
    latency_ms: u64,
    seconds: u64,
    /// signerd's `server.worker_threads`; its default is half the cores.
    worker_threads: Option<usize>,
}

fn parse_args() -> Args {
    let mut args = Args {
        in_flight: 64,
        connections: 4,
        latency_ms: 20,
        seconds: 5,
        worker_threads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match flag.as_str() {
            "--in-flight" => args.in_flight = value().unwrap_or(64) as usize,
            "--connections" => args.connections = value().unwrap_or(4) as usize,
            "--latency-ms" => args.latency_ms = value().unwrap_or(20),
            "--seconds" => args.seconds = value().unwrap_or(5),
            "--worker-threads" => args.worker_threads = value().map(|n| n as usize),
            _ => {} // cargo bench passes --bench; ignore what we do not know.
        }
    }
    args
}

fn main() -> anyhow::Result<()> {
    let args = parse_args();
    // The fake KMS and the load generator share this process's two threads.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let kms = FakeKms::start().await?;
    let mut kms_options = GcpKmsOptions::fake(&kms);
    // Production-like call settings, not the tests' short ones.
    kms_options.settings = "deadline_ms = 10000\nattempt_timeout_ms = 3000\n\
        retry_initial_delay_ms = 50\nretry_max_delay_ms = 2000\n\
        breaker_failures = 5\nbreaker_open_ms = 5000\nhealth_check_interval_ms = 5000"
        .into();
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![Grant::keys("bench", &["bench-*"])],
        binary: Some(PathBuf::from(env!("CARGO_BIN_EXE_signerd"))),
        gcp_kms: Some(kms_options),
        worker_threads: args.worker_threads,
        // The reference vector is old and from another account: lift the source and time-bound
        // rules for the bench key; ACL, caps, guard and the durable audit log all run.
        extra_toml: signer_testkit::vector_policy("bench-*"),
        ..Default::default()
    })
    .await?;
    let mut client = signerd.client("bench").await?;
    let key = client
        .create_key(pb::CreateKeyRequest {
            key_id: KEY_ID.into(),
            backend: String::new(),
        })
        .await?
        .into_inner()
        .key
        .ok_or_else(|| anyhow::anyhow!("no key"))?;
    anyhow::ensure!(key.backend == "gcp-kms", "key made in {}", key.backend);
    let public = VerifyingKey::from_bytes(
        key.public_key_bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("public key is not 32 bytes"))?,
    )?;

    let vector = signer_testkit::vectors::first();
    let xdr = vector.envelope_xdr();
    let passphrase = vector.network_passphrase.clone();

    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(signerd.client("bench").await?);
    }
    kms.set_latency(Duration::from_millis(args.latency_ms));
    // Warm-up: every connection, and enough parallel calls to open the client's HTTP pool.
    let warm_up: Vec<_> = (0..args.in_flight)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let request = request(&xdr, &passphrase);
            tokio::spawn(async move { client.sign_transaction(request).await })
        })
        .collect();
    for task in warm_up {
        task.await??;
    }

    let sign_calls_before = kms.calls(KmsCall::AsymmetricSign);
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
            let mut signed = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.sign_transaction(request(&xdr, &passphrase)).await {
                    Ok(response) => {
                        latencies.push(t.elapsed());
                        signed.push(response.into_inner());
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors, signed)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut signed = Vec::new();
    for task in tasks {
        let (l, e, s) = task.await?;
        latencies.extend(l);
        errors += e;
        signed.extend(s);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = process_cpu_seconds(signerd.pid()) - server_cpu_before;
    let own_cpu = process_cpu_seconds(Some(std::process::id())) - own_cpu_before;
    let kms_calls = kms.calls(KmsCall::AsymmetricSign) - sign_calls_before;

    // Every signature of the run must verify: a fast wrong answer is no answer.
    let bad = signed
        .iter()
        .filter(|s| {
            let Ok(sig) = <[u8; 64]>::try_from(s.signature.as_slice()) else {
                return true;
            };
            public
                .verify_strict(&s.signed_hash, &Signature::from_bytes(&sig))
                .is_err()
        })
        .count();

    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    let rate = latencies.len() as f64 / elapsed;
    let ceiling = args.in_flight as f64 / (args.latency_ms.max(1) as f64 / 1000.0);
    println!(
        "signerd SignTransaction via gcp-kms (fake KMS, +{} ms per call), {} in flight on {} connections, {} s, signerd worker threads {}:",
        args.latency_ms,
        args.in_flight,
        args.connections,
        args.seconds,
        args.worker_threads
            .map_or_else(|| "default".to_owned(), |n| n.to_string())
    );
    println!(
        "  {rate:>8.0} signatures/s  p50 {:.2} ms  p99 {:.2} ms  errors {errors}  bad signatures {bad}",
        pct(0.50),
        pct(0.99)
    );
    println!(
        "  ceiling at this latency: {ceiling:.0}/s ({:.0}% of it); KMS sign calls {kms_calls}",
        rate / ceiling * 100.0
    );
    let done = latencies.len().max(1) as f64;
    println!(
        "  cpu: signerd {:.0} us/signature ({:.2} cores), load generator + fake kms {:.0} us/request ({:.2} cores)",
        server_cpu / done * 1e6,
        server_cpu / elapsed,
        own_cpu / done * 1e6,
        own_cpu / elapsed
    );
    anyhow::ensure!(bad == 0, "{bad} signatures did not verify");
    Ok(())
}

fn request(xdr: &[u8], passphrase: &str) -> pb::SignTransactionRequest {
    pb::SignTransactionRequest {
        key_id: KEY_ID.into(),
        envelope_xdr: xdr.to_vec(),
        network_passphrase: passphrase.to_owned(),
    }
}
