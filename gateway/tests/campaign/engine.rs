//! The randomized campaign behind "never pays twice, never loses an accepted payment": many
//! payments between many wallets through the real gateway (one or more replicas on one
//! database) and a real signerd, while the simulator lags, surges, rate-limits, times out before
//! and after applying, and lets another party use the wallets' sequence numbers — and while the
//! gateway is SIGKILLed every few seconds and signerd now and then. The invariants are checked
//! against the simulator's ledger, not the gateway's word:
//!
//! - no payment applied twice (every payment has its own amount, so the ledger's payments name
//!   the payment they belong to);
//! - none lost: every accepted payment ends `SUCCESS` exactly when the ledger applied it, and
//!   nothing the ledger applied is unknown to the gateway;
//! - none unfinished after a bounded time once the faults stop;
//! - every balance exact: start + received − sent (by the gateway's `SUCCESS`es) − fees (by the
//!   ledger) is what the ledger holds, and the gateway's recorded fee is what the ledger charged.
//!
//! Everything random comes from one seed, printed first: a failing seed replays the same plan
//! (payments, fault schedule, kills); the machine's timing is what differs between runs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use horizon_sim::{AccountKey, AppliedOperation, HorizonSim, SimConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use sqlx::Row;

use crate::support::{
    Backend, DatabaseKind, GatewayOptions, GatewayProcess, Http, TestDatabase, create_api_key,
    must, start_signerd,
};

/// One lumen in stroops.
const XLM: i64 = 10_000_000;
/// The gateway's `max_validity_secs`: a transaction that never landed is rebuilt only after
/// its `max_time`, and signerd refuses the rebuilt one until 60 s after that.
pub const MAX_VALIDITY_SECS: u64 = 10;
/// What every wallet starts with.
const START_BALANCE: i64 = 10_000 * XLM;

/// How big and how hostile a campaign is.
#[derive(Clone, Debug)]
pub struct Campaign {
    /// Everything random derives from it.
    pub seed: u64,
    /// Payments to make.
    pub payments: usize,
    /// Wallets that pay each other.
    pub wallets: usize,
    /// The database the gateway replicas share.
    pub database: DatabaseKind,
    /// The network API the gateways talk to (the simulator serves both over one ledger).
    pub backend: Backend,
    /// `gateway serve` processes on that database.
    pub replicas: usize,
    /// The simulator's ledger cadence.
    pub ledger_interval: Duration,
    /// Payments posted per second (spread over the chaos).
    pub posts_per_second: f64,
    /// A gateway replica is SIGKILLed every this long (randomly, between half and all of it);
    /// `None`: never.
    pub gateway_kill_every: Option<Duration>,
    /// signerd is SIGKILLed every this long (between half and all of it); `None`: never.
    pub signerd_kill_every: Option<Duration>,
    /// Network faults (lag, surge, 504s, 429s, 503s, other parties) while posting.
    pub network_faults: bool,
    /// Surges only (the latency figure with realistic ledgers).
    pub surges: bool,
    /// Another signer uses the wallets' sequence numbers now and then.
    pub other_parties: bool,
    /// Once the faults stop, every payment must be finished within this long.
    pub finish_within: Duration,
}

/// What happened, and whether the promise held.
#[derive(Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Payments accepted (202 or an idempotent replay).
    pub accepted: usize,
    /// Ended `SUCCESS`.
    pub succeeded: usize,
    /// Ended `FAILED`.
    pub failed: usize,
    /// Still running at the deadline.
    pub unfinished: usize,
    /// Gateway SIGKILLs.
    pub gateway_kills: usize,
    /// signerd SIGKILLs.
    pub signerd_kills: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// POST accepted → `SUCCESS` seen, per successful payment.
    pub latencies: Vec<Duration>,
    /// Broken invariants, one line each (empty: the promise held).
    pub violations: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// The `p`-th percentile of the POST → `SUCCESS` latencies.
    pub fn latency_percentile(&self, p: usize) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = (p * sorted.len())
            .div_ceil(100)
            .clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied()
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "campaign seed {}: {} accepted, {} SUCCESS, {} FAILED, {} unfinished; {} gateway kills, \
             {} signerd kills; faults {:?}; POST->SUCCESS p50 {:?} p99 {:?}; {:.1} s; {} violation(s)",
            self.seed,
            self.accepted,
            self.succeeded,
            self.failed,
            self.unfinished,
            self.gateway_kills,
            self.signerd_kills,
            self.faults,
            self.latency_percentile(50),
            self.latency_percentile(99),
            self.elapsed.as_secs_f64(),
            self.violations.len(),
        );
        for violation in self.violations.iter().take(30) {
            text.push_str("\n  - ");
            text.push_str(violation);
        }
        if self.violations.len() > 30 {
            text.push_str(&format!("\n  ... and {} more", self.violations.len() - 30));
        }
        text
    }
}

/// A seeded pseudo-random generator (SplitMix64): the same seed makes the same choices.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }
}

/// A payment as the database holds it: status, transaction hash, fee, failure reason.
type PaymentRow = (String, Option<String>, Option<i64>, Option<String>);

/// One planned payment: its own amount names it on the ledger.
#[derive(Clone, Debug)]
struct PlannedPayment {
    source: usize,
    destination: usize,
    amount: i64,
    idempotency_key: String,
}

/// One thing the chaos does, at an offset from the start.
#[derive(Clone, Debug)]
enum Chaos {
    Lag(Vec<u32>),
    Surge { operations: u32, fee: u32 },
    SurgeOff,
    TimeoutWithoutApply(u32),
    TimeoutAfterApply(u32),
    RateLimited(u32),
    Unavailable(u32),
    IngestionDelay(u32),
    ConsumeSequence(usize),
    KillGateway(usize),
    KillSignerd,
}

impl Chaos {
    fn kind(&self) -> &'static str {
        match self {
            Chaos::Lag(_) => "lagging nodes",
            Chaos::Surge { .. } => "surge",
            Chaos::SurgeOff => "surge end",
            Chaos::TimeoutWithoutApply(_) => "504 before apply",
            Chaos::TimeoutAfterApply(_) => "504 after apply",
            Chaos::RateLimited(_) => "429",
            Chaos::Unavailable(_) => "503",
            Chaos::IngestionDelay(_) => "late ingestion",
            Chaos::ConsumeSequence(_) => "sequence used by another signer",
            Chaos::KillGateway(_) => "gateway SIGKILL",
            Chaos::KillSignerd => "signerd SIGKILL",
        }
    }
}

/// The plan a seed makes: payments, and the chaos over `window`.
fn plan(campaign: &Campaign, window: Duration) -> (Vec<PlannedPayment>, Vec<(Duration, Chaos)>) {
    let mut rng = Rng::new(campaign.seed);
    let wallets = campaign.wallets.max(2) as u64;
    let payments = (0..campaign.payments)
        .map(|i| {
            let source = rng.below(wallets) as usize;
            let destination = (source + 1 + rng.below(wallets - 1) as usize) % wallets as usize;
            PlannedPayment {
                source,
                destination,
                // 1 XLM plus the payment's number in stroops: unique on the ledger.
                amount: XLM + i as i64 + 1,
                idempotency_key: format!("campaign-{}-{i}", campaign.seed),
            }
        })
        .collect();
    let mut chaos = Vec::new();
    let window_ms = window.as_millis() as u64;
    if campaign.network_faults || campaign.surges {
        let mut at = rng.between(200, 800);
        while at < window_ms {
            let event = if !campaign.network_faults {
                if rng.below(2) == 0 {
                    Chaos::Surge {
                        operations: rng.between(120, 260) as u32,
                        fee: rng.between(150, 2_000) as u32,
                    }
                } else {
                    Chaos::SurgeOff
                }
            } else {
                match rng.below(10) {
                    0 => Chaos::Lag(vec![0, rng.between(1, 4) as u32]),
                    1 => Chaos::Lag(Vec::new()),
                    2 => Chaos::Surge {
                        operations: rng.between(120, 260) as u32,
                        fee: rng.between(150, 2_000) as u32,
                    },
                    3 => Chaos::SurgeOff,
                    4 => Chaos::TimeoutWithoutApply(rng.between(1, 3) as u32),
                    5 => Chaos::TimeoutAfterApply(rng.between(1, 3) as u32),
                    6 => Chaos::RateLimited(rng.between(1, 6) as u32),
                    7 => Chaos::Unavailable(rng.between(1, 2) as u32),
                    8 => Chaos::IngestionDelay(rng.below(3) as u32),
                    _ => {
                        let wallet = rng.below(wallets) as usize;
                        if campaign.other_parties {
                            Chaos::ConsumeSequence(wallet)
                        } else {
                            Chaos::Lag(Vec::new())
                        }
                    }
                }
            };
            // Surges come in bursts of 1–3 s, as on the public network.
            if matches!(event, Chaos::Surge { .. }) {
                chaos.push((
                    Duration::from_millis(at + rng.between(1_000, 3_000)),
                    Chaos::SurgeOff,
                ));
            }
            chaos.push((Duration::from_millis(at), event));
            at += rng.between(300, 1_200);
        }
    }
    if let Some(every) = campaign.gateway_kill_every {
        let every = every.as_millis() as u64;
        let mut at = rng.between(every / 2, every);
        while at < window_ms {
            let replica = rng.below(campaign.replicas.max(1) as u64) as usize;
            chaos.push((Duration::from_millis(at), Chaos::KillGateway(replica)));
            at += rng.between(every / 2, every);
        }
    }
    if let Some(every) = campaign.signerd_kill_every {
        let every = every.as_millis() as u64;
        let mut at = rng.between(every / 2, every);
        while at < window_ms {
            chaos.push((Duration::from_millis(at), Chaos::KillSignerd));
            at += rng.between(every / 2, every);
        }
    }
    chaos.sort_by_key(|(at, _)| *at);
    (payments, chaos)
}

/// A client that reports failures instead of panicking: the gateway is killed under it.
#[derive(Clone)]
struct TolerantClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl TolerantClient {
    fn new() -> Self {
        TolerantClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn post_payment(
        &self,
        addr: SocketAddr,
        key: &str,
        payment: &PlannedPayment,
        wallets: &[(String, AccountKey)],
    ) -> Result<(u16, serde_json::Value), String> {
        let body = json!({
            "source_wallet_id": wallets[payment.source].0,
            "destination": wallets[payment.destination].1.address(),
            "amount": format_amount(payment.amount),
        })
        .to_string();
        let request = hyper::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/v1/payments"))
            .header("authorization", format!("Bearer {key}"))
            .header("idempotency-key", &payment.idempotency_key)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(15), self.client.request(request))
            .await
            .map_err(|_| "no answer in 15 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = tokio::time::timeout(Duration::from_secs(15), response.into_body().collect())
            .await
            .map_err(|_| "no body in 15 s".to_owned())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        ))
    }
}

/// Stroops as the API's decimal amount.
fn format_amount(stroops: i64) -> String {
    format!("{}.{:07}", stroops / XLM, stroops % XLM)
}

/// The gateway replicas and where they listen now (addresses change at every restart).
struct Replicas {
    processes: Vec<GatewayProcess>,
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
}

/// A TCP relay in front of signerd, on a port that never closes: the gateways' config names
/// the relay, and a signerd restarted after a SIGKILL (on a fresh port) is reached through it.
/// Restarting signerd on its old port instead races with the gateways' reconnect attempts,
/// which on Linux can take that very port as their own source port (a TCP self-connect).
struct SignerdRelay {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl SignerdRelay {
    async fn start(target: SocketAddr) -> SignerdRelay {
        let listener = must(tokio::net::TcpListener::bind("127.0.0.1:0").await);
        let addr = must(listener.local_addr());
        let target = Arc::new(Mutex::new(target));
        let current = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *current.lock().unwrap_or_else(|e| e.into_inner());
                tokio::spawn(async move {
                    // signerd down: the connection just closes, as a dead server's would.
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        SignerdRelay { addr, target, task }
    }

    fn point_at(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }
}

impl Drop for SignerdRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs one campaign and checks the invariants.
pub async fn run(campaign: &Campaign) -> Report {
    let started = Instant::now();
    let mut report = Report {
        seed: campaign.seed,
        ..Report::default()
    };
    eprintln!("campaign seed {} ({campaign:?})", campaign.seed);
    let sim = must(
        HorizonSim::start(SimConfig {
            ledger_interval: Some(campaign.ledger_interval),
            max_operations_per_ledger: 100,
            submission_timeout: Duration::from_secs(5).max(campaign.ledger_interval * 3),
            ..SimConfig::default()
        })
        .await,
    );
    let db = TestDatabase::create(campaign.database).await;
    let mut signerd = start_signerd().await;
    let relay = SignerdRelay::start(signerd.addr).await;
    // The gateways' config names the relay, not this signerd's port.
    let signerd_addr = signerd.addr;
    signerd.addr = relay.addr;
    let gateway = GatewayProcess::start(
        &db,
        &signerd,
        &GatewayOptions {
            network_url: Some(campaign.backend.url(&sim.url())),
            network_kind: campaign.backend.kind(),
            extra_toml: "\n[payments]\npoll_interval_ms = 50\nlease_ms = 2000\n".to_owned(),
            max_validity_secs: MAX_VALIDITY_SECS,
            max_connections: 10,
            ..GatewayOptions::default()
        },
    )
    .await;
    signerd.addr = signerd_addr;
    let service_key = create_api_key(&gateway.config, "service");
    let http = Http::new(gateway.addr);

    // Wallets, funded directly on the ledger.
    let mut wallets = Vec::new();
    for i in 0..campaign.wallets.max(2) {
        let user = http
            .post(
                "/v1/users",
                &service_key,
                &json!({ "external_ref": format!("campaign-{i}") }).to_string(),
            )
            .await;
        assert_eq!(user.status, 201, "{}", user.body);
        let user_id = user.json()["id"].as_str().unwrap_or_default().to_owned();
        let wallet = http
            .post(&format!("/v1/users/{user_id}/wallet"), &service_key, "{}")
            .await;
        assert_eq!(wallet.status, 201, "{}", wallet.body);
        let wallet = wallet.json();
        let account: AccountKey = must(wallet["public_key"].as_str().unwrap_or_default().parse());
        must(sim.create_account(account, START_BALANCE));
        wallets.push((
            wallet["id"].as_str().unwrap_or_default().to_owned(),
            account,
        ));
    }
    let wallets = Arc::new(wallets);

    let config: PathBuf = gateway.config.clone();
    let mut processes = vec![gateway];
    for _ in 1..campaign.replicas.max(1) {
        processes.push(GatewayProcess::start_replica(&config).await);
    }
    let replicas = Replicas {
        addrs: Arc::new(Mutex::new(processes.iter().map(|p| p.addr).collect())),
        processes,
    };

    // Watches the database for payments reaching SUCCESS (for the latency figure).
    let finished_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let store = db.store().await;
        let finished_at = finished_at.clone();
        let watching = watching.clone();
        tokio::spawn(async move {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let rows = sqlx::query("SELECT id FROM payments WHERE status = 'SUCCESS'")
                    .fetch_all(store.pool())
                    .await
                    .unwrap_or_default();
                let now = Instant::now();
                {
                    let mut finished = finished_at.lock().unwrap_or_else(|e| e.into_inner());
                    for row in rows {
                        let id: String = row.try_get("id").unwrap_or_default();
                        finished.entry(id).or_insert(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            store.close().await;
        })
    };

    let window =
        Duration::from_secs_f64(campaign.payments as f64 / campaign.posts_per_second.max(0.1))
            + Duration::from_secs(3);
    let (payments, chaos) = plan(campaign, window);
    eprintln!(
        "campaign plan: {} payments over {} wallets, {} chaos events over {:?}",
        payments.len(),
        wallets.len(),
        chaos.len(),
        window
    );

    // Post the payments at the planned pace, each retried with its own key until accepted.
    let accepted: Arc<Mutex<HashMap<usize, (String, Instant)>>> =
        Arc::new(Mutex::new(HashMap::new()));
    let violations: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let poster = {
        let payments = payments.clone();
        let addrs = replicas.addrs.clone();
        let wallets = wallets.clone();
        let accepted = accepted.clone();
        let violations = violations.clone();
        let key = service_key.clone();
        let pace = Duration::from_secs_f64(1.0 / campaign.posts_per_second.max(0.1));
        tokio::spawn(async move {
            let client = TolerantClient::new();
            let mut tasks = Vec::new();
            let begin = tokio::time::Instant::now();
            for (index, payment) in payments.into_iter().enumerate() {
                tokio::time::sleep_until(begin + pace * index as u32).await;
                let client = client.clone();
                let addrs = addrs.clone();
                let wallets = wallets.clone();
                let accepted = accepted.clone();
                let violations = violations.clone();
                let key = key.clone();
                tasks.push(tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(120);
                    let mut attempt = 0usize;
                    loop {
                        let addr = {
                            let addrs = addrs.lock().unwrap_or_else(|e| e.into_inner());
                            addrs[(index + attempt) % addrs.len()]
                        };
                        attempt += 1;
                        match client.post_payment(addr, &key, &payment, &wallets).await {
                            Ok((200 | 202, body)) => {
                                let id = body["id"].as_str().unwrap_or_default().to_owned();
                                let mut accepted = accepted.lock().unwrap_or_else(|e| e.into_inner());
                                if let Some((earlier, _)) = accepted.get(&index) {
                                    if *earlier != id {
                                        violations.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                                            "idempotency key {} made two payments: {earlier} and {id}",
                                            payment.idempotency_key
                                        ));
                                    }
                                } else {
                                    accepted.insert(index, (id, Instant::now()));
                                }
                                return;
                            }
                            Ok((status, body)) if status < 500 && status != 409 && status != 429 => {
                                violations.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                                    "payment {index} refused: {status} {body}"
                                ));
                                return;
                            }
                            _ if Instant::now() > deadline => {
                                violations.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                                    "payment {index} never accepted in 120 s"
                                ));
                                return;
                            }
                            _ => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
        })
    };

    // The chaos, on its schedule.
    let mut replicas = replicas;
    let begin = tokio::time::Instant::now();
    for (at, event) in chaos {
        tokio::time::sleep_until(begin + at).await;
        *report.faults.entry(event.kind()).or_default() += 1;
        match event {
            Chaos::Lag(lags) => sim.set_node_lags(&lags),
            Chaos::Surge { operations, fee } => sim.set_surge(operations, fee),
            Chaos::SurgeOff => sim.set_surge(0, 0),
            Chaos::TimeoutWithoutApply(n) => {
                let mut faults = sim.faults();
                faults.timeout_without_apply += n;
                sim.set_faults(faults);
            }
            Chaos::TimeoutAfterApply(n) => {
                let mut faults = sim.faults();
                faults.timeout_after_apply += n;
                sim.set_faults(faults);
            }
            Chaos::RateLimited(n) => {
                let mut faults = sim.faults();
                faults.rate_limited += n;
                sim.set_faults(faults);
            }
            Chaos::Unavailable(n) => {
                let mut faults = sim.faults();
                faults.unavailable += n;
                sim.set_faults(faults);
            }
            Chaos::IngestionDelay(k) => sim.delay_ingestion(k),
            Chaos::ConsumeSequence(wallet) => {
                let _ = sim.consume_sequence(wallets[wallet].1);
            }
            Chaos::KillGateway(replica) => {
                let replica = replica % replicas.processes.len();
                let process = &mut replicas.processes[replica];
                if let Some(pid) = process.pid() {
                    let _ = std::process::Command::new("kill")
                        .arg("-KILL")
                        .arg(pid.to_string())
                        .status();
                    let _ = process.wait().await;
                    report.gateway_kills += 1;
                }
                process.launch().await;
                replicas.addrs.lock().unwrap_or_else(|e| e.into_inner())[replica] = process.addr;
            }
            Chaos::KillSignerd => {
                if signerd.signal("KILL").is_ok() {
                    report.signerd_kills += 1;
                    let addr = signerd.addr;
                    let closed =
                        crate::support::eventually(Duration::from_secs(10), || async move {
                            tokio::net::TcpStream::connect(addr).await.is_err()
                        })
                        .await;
                    assert!(closed, "signerd still listening after SIGKILL");
                    must(signerd.launch().await);
                    relay.point_at(signerd.addr);
                }
            }
        }
    }
    let _ = poster.await;

    // Calm: every fault off, every process up; then everything must finish in time.
    sim.clear_faults();
    let calm = Instant::now();
    let store = db.store().await;
    let accepted = accepted.lock().unwrap_or_else(|e| e.into_inner()).clone();
    report.accepted = accepted.len();
    let mut rows: HashMap<String, PaymentRow> = HashMap::new();
    loop {
        let fetched =
            sqlx::query("SELECT id, status, tx_hash, fee_stroops, failure_reason FROM payments")
                .fetch_all(store.pool())
                .await;
        if let Ok(fetched) = fetched {
            rows.clear();
            for row in fetched {
                let id: String = row.try_get("id").unwrap_or_default();
                let status: String = row.try_get("status").unwrap_or_default();
                rows.insert(
                    id,
                    (
                        status,
                        row.try_get("tx_hash").unwrap_or_default(),
                        row.try_get("fee_stroops").unwrap_or_default(),
                        row.try_get("failure_reason").unwrap_or_default(),
                    ),
                );
            }
        }
        let done = accepted.values().all(|(id, _)| {
            rows.get(id)
                .is_some_and(|(status, ..)| status == "SUCCESS" || status == "FAILED")
        });
        if done || calm.elapsed() > campaign.finish_within {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What an unfinished payment went through, for the report.
    let mut histories: HashMap<String, String> = HashMap::new();
    for (id, _) in accepted.values() {
        let unfinished = rows
            .get(id)
            .is_none_or(|(status, ..)| status != "SUCCESS" && status != "FAILED");
        if !unfinished {
            continue;
        }
        let events = sqlx::query(
            "SELECT status, detail FROM payment_events WHERE payment_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(store.pool())
        .await
        .unwrap_or_default();
        let history: Vec<String> = events
            .iter()
            .map(|row| {
                let status: String = row.try_get("status").unwrap_or_default();
                let detail: Option<String> = row.try_get("detail").unwrap_or_default();
                match detail {
                    Some(detail) => format!("{status} ({detail})"),
                    None => status,
                }
            })
            .collect();
        histories.insert(id.clone(), history.join(" -> "));
    }
    store.close().await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.await;
    let finished_at = finished_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();

    // The ledger's view.
    let state = sim.state();
    let wallet_of: HashMap<AccountKey, usize> = wallets
        .iter()
        .enumerate()
        .map(|(i, (_, account))| (*account, i))
        .collect();
    let by_amount: HashMap<i64, usize> = payments
        .iter()
        .enumerate()
        .map(|(i, p)| (p.amount, i))
        .collect();
    let mut applications: HashMap<usize, Vec<horizon_sim::TxHash>> = HashMap::new();
    let mut fees: HashMap<AccountKey, i64> = HashMap::new();
    let mut charged: HashMap<horizon_sim::TxHash, i64> = HashMap::new();
    for tx in &state.transactions {
        if !wallet_of.contains_key(&tx.source) {
            continue;
        }
        *fees.entry(tx.source).or_default() += tx.fee_charged;
        charged.insert(tx.hash, tx.fee_charged);
        if !tx.successful {
            continue;
        }
        for op in &tx.operations {
            let AppliedOperation::Payment {
                destination,
                amount,
                ..
            } = op
            else {
                continue;
            };
            if *destination == tx.source && *amount == 1 {
                continue; // another signer's sequence-number use
            }
            match by_amount.get(amount) {
                Some(index) => applications.entry(*index).or_default().push(tx.hash),
                None => report.violations.push(format!(
                    "the ledger applied a payment of {amount} stroops from {} that no one asked for (tx {})",
                    tx.source, tx.hash
                )),
            }
        }
    }

    let mut balances: Vec<i64> = vec![START_BALANCE; wallets.len()];
    for (index, payment) in payments.iter().enumerate() {
        let applied = applications.get(&index).map(Vec::len).unwrap_or(0);
        if applied > 1 {
            report.violations.push(format!(
                "payment {index} ({} stroops) applied {applied} times: {:?}",
                payment.amount,
                applications.get(&index)
            ));
        }
        let Some((id, posted)) = accepted.get(&index) else {
            if applied > 0 {
                report
                    .violations
                    .push(format!("payment {index} never accepted but applied"));
            }
            continue;
        };
        let Some((status, tx_hash, fee, reason)) = rows.get(id) else {
            report.violations.push(format!(
                "payment {index} ({id}) accepted but not in the database"
            ));
            continue;
        };
        match status.as_str() {
            "SUCCESS" => {
                report.succeeded += 1;
                if let Some(seen) = finished_at.get(id) {
                    report
                        .latencies
                        .push(seen.saturating_duration_since(*posted));
                }
                if applied != 1 {
                    report.violations.push(format!(
                        "payment {index} ({id}) SUCCESS but applied {applied} times"
                    ));
                }
                balances[payment.source] -= payment.amount;
                balances[payment.destination] += payment.amount;
                let hash = tx_hash
                    .as_deref()
                    .and_then(|h| h.parse::<horizon_sim::TxHash>().ok());
                let ledger_fee = hash.and_then(|h| charged.get(&h).copied());
                if ledger_fee.is_none() || *fee != ledger_fee {
                    report.violations.push(format!(
                        "payment {index} ({id}) records fee {fee:?} for tx {tx_hash:?}, the ledger charged {ledger_fee:?}"
                    ));
                }
            }
            "FAILED" => {
                report.failed += 1;
                if applied > 0 {
                    report.violations.push(format!(
                        "payment {index} ({id}) FAILED ({reason:?}) but the ledger applied it: lost"
                    ));
                } else {
                    report.violations.push(format!(
                        "payment {index} ({id}) FAILED ({reason:?}) though it could succeed (funded source, existing destination)"
                    ));
                }
            }
            other => {
                report.unfinished += 1;
                report.violations.push(format!(
                    "payment {index} ({id}, wallet {}) still {other} {:?} after the faults stopped: {}",
                    payment.source,
                    campaign.finish_within,
                    histories.get(id).map(String::as_str).unwrap_or_default()
                ));
            }
        }
    }
    for (i, (_, account)) in wallets.iter().enumerate() {
        let expected = balances[i] - fees.get(account).copied().unwrap_or(0);
        let actual = sim.balance(*account).unwrap_or(-1);
        if actual != expected {
            report.violations.push(format!(
                "wallet {i} ({account}) holds {actual} stroops, the gateway's SUCCESSes and the ledger's fees say {expected}"
            ));
        }
    }
    report.violations.extend(
        violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..),
    );
    report.elapsed = started.elapsed();
    drop(replicas);
    drop(relay);
    drop(signerd);
    drop(db);
    report
}
