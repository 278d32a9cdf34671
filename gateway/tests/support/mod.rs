//! The gateway's test harness: a fresh database per test (a SQLite file, or a Postgres database
//! with a random name), a real signerd on its own SoftHSM token (signer-testkit), and the real
//! `gateway` binary on port 0 with API keys made by its own CLI.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gateway::config::{DatabaseConfig, DatabaseUrl};
use gateway::store::Store;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use signer_testkit::{Grant, SignerdOptions, SignerdProcess};
use sqlx::{Connection, Row};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The Postgres server tests use when `GATEWAY_TEST_POSTGRES_URL` is not set: the role that
/// `scripts/test.sh` creates.
pub const DEFAULT_POSTGRES_URL: &str =
    "postgres://gateway_test:gateway_test@127.0.0.1:5432/postgres";

/// The identity the gateway's client certificate carries, as signerd's ACL knows it.
pub const GATEWAY_IDENTITY: &str = "gateway";

/// Every table the gateway writes.
pub const TABLES: [&str; 19] = [
    "api_keys",
    "users",
    "wallets",
    "audit_events",
    "idempotency_keys",
    "payments",
    "payment_events",
    "payment_transactions",
    "payment_leases",
    "wallet_daily_usage",
    "wallet_limits",
    "wallet_event_sequences",
    "outbox_events",
    "webhook_endpoints",
    "webhook_deliveries",
    "deposits",
    "deposit_cursor",
    "deposit_lease",
    "wallet_history",
];

/// Panics with the error chain.
pub fn must<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    /// A SQLite file in a temp dir.
    Sqlite,
    /// A fresh database on the test Postgres server.
    Postgres,
}

/// Which network API the gateway talks to in a test: the simulator's Horizon endpoints or its
/// Stellar RPC endpoint (`POST /rpc`), over the same ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `[network] kind = "horizon"`, at the simulator's root.
    Horizon,
    /// `[network] kind = "rpc"`, at the simulator's `/rpc`.
    Rpc,
}

impl Backend {
    /// `network.kind`.
    pub fn kind(self) -> &'static str {
        match self {
            Backend::Horizon => "horizon",
            Backend::Rpc => "rpc",
        }
    }

    /// The URL of this backend on a simulator whose Horizon root is `horizon_url`.
    pub fn url(self, horizon_url: &str) -> String {
        match self {
            Backend::Horizon => horizon_url.to_owned(),
            Backend::Rpc => format!("{}/rpc", horizon_url.trim_end_matches('/')),
        }
    }

    /// From `GATEWAY_BENCH_BACKEND` / a flag value: `horizon` (default) or `rpc`.
    pub fn parse(raw: &str) -> Option<Backend> {
        match raw {
            "horizon" => Some(Backend::Horizon),
            "rpc" => Some(Backend::Rpc),
            _ => None,
        }
    }
}

/// A database and a network backend: what an end-to-end test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The database.
    pub db: DatabaseKind,
    /// The network API.
    pub backend: Backend,
}

impl Target {
    /// Horizon on `db` (for tests whose fault only Horizon has).
    pub fn horizon(db: DatabaseKind) -> Target {
        Target {
            db,
            backend: Backend::Horizon,
        }
    }
}

/// Runs a test body once per network backend and database: `name::horizon_sqlite`,
/// `name::horizon_postgres`, `name::rpc_sqlite`, `name::rpc_postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($target:ident: Target) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports, reason = "not every test uses every import")]
                use super::*;

                async fn run($target: Target) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn horizon_sqlite() {
                    run(Target { db: DatabaseKind::Sqlite, backend: Backend::Horizon }).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn horizon_postgres() {
                    run(Target { db: DatabaseKind::Postgres, backend: Backend::Horizon }).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn rpc_sqlite() {
                    run(Target { db: DatabaseKind::Sqlite, backend: Backend::Rpc }).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn rpc_postgres() {
                    run(Target { db: DatabaseKind::Postgres, backend: Backend::Rpc }).await
                }
            }
        )*
    };
}

/// Runs a test body once per database: `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_databases {
    ($(async fn $name:ident($kind:ident: DatabaseKind) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports, reason = "not every test uses every import")]
                use super::*;

                async fn run($kind: DatabaseKind) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run(DatabaseKind::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    run(DatabaseKind::Postgres).await
                }
            }
        )*
    };
}

/// A database of its own for one test. A Postgres database is dropped when this is dropped.
pub struct TestDatabase {
    /// Which kind.
    pub kind: DatabaseKind,
    /// The URL to put in the gateway's config.
    pub url: String,
    dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// Creates an empty database (a path for SQLite; `CREATE DATABASE` for Postgres).
    pub async fn create(kind: DatabaseKind) -> TestDatabase {
        let dir = must(tempfile::tempdir());
        match kind {
            DatabaseKind::Sqlite => TestDatabase {
                kind,
                url: format!("sqlite:{}", dir.path().join("gateway.db").display()),
                dir,
                postgres: None,
            },
            DatabaseKind::Postgres => {
                let admin_url = std::env::var("GATEWAY_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                let name = format!("gateway_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = connect_postgres_admin(&admin_url).await;
                must(
                    sqlx::query(&format!("CREATE DATABASE {name}"))
                        .execute(&mut admin)
                        .await,
                );
                let _ = admin.close().await;
                TestDatabase {
                    kind,
                    url: with_database(&admin_url, &name),
                    dir,
                    postgres: Some((admin_url, name)),
                }
            }
        }
    }

    /// A temp dir that lives as long as the database (for configs and PEM files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Opens the database as the gateway does (no migration).
    pub async fn store(&self) -> Store {
        let url = must(DatabaseUrl::parse("test", &self.url));
        must(Store::connect(&url, &DatabaseConfig::default()).await)
    }

    /// Opens and migrates.
    pub async fn migrated_store(&self) -> Store {
        let store = self.store().await;
        must(store.migrate().await);
        store
    }

    /// Row counts of every gateway table.
    pub async fn row_counts(&self) -> BTreeMap<&'static str, i64> {
        let store = self.store().await;
        let mut counts = BTreeMap::new();
        for table in TABLES {
            let row = must(
                sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                    .fetch_one(store.pool())
                    .await,
            );
            counts.insert(table, must(row.try_get::<i64, _>("n")));
        }
        store.close().await;
        counts
    }

    /// Every text value stored in any gateway table.
    pub async fn all_text(&self) -> Vec<String> {
        let store = self.store().await;
        let mut values = Vec::new();
        for table in TABLES {
            let rows = must(
                sqlx::query(&format!("SELECT * FROM {table}"))
                    .fetch_all(store.pool())
                    .await,
            );
            for row in &rows {
                for i in 0..row.len() {
                    if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                        values.push(text);
                    }
                }
            }
        }
        store.close().await;
        values
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async context rules: use a thread with its own small runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                sqlx::any::install_default_drivers();
                let mut admin = sqlx::AnyConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: could not drop test database {}", self.url);
        }
    }
}

async fn connect_postgres_admin(admin_url: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    match sqlx::AnyConnection::connect(admin_url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "Postgres is not reachable for the gateway's storage tests ({e}). \
             Run `bash scripts/test.sh` (it installs and starts Postgres and creates the test \
             role), or point GATEWAY_TEST_POSTGRES_URL at a server where the user may CREATE \
             DATABASE. These tests never skip."
        ),
    }
}

/// The admin URL with its database name replaced.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// How to configure the gateway under test.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
    /// `rate_limit.per_second` and `rate_limit.burst`.
    pub rate_limit: (u32, u32),
    /// `log.level`.
    pub log_level: &'static str,
    /// A `[network]` section pointing at this URL (the simulator's Horizon root or its RPC
    /// endpoint), when set.
    pub network_url: Option<String>,
    /// `network.kind`: `horizon` or `rpc`.
    pub network_kind: &'static str,
    /// Extra TOML appended to the config (e.g. a `[payments]` section).
    pub extra_toml: String,
    /// `network.max_validity_secs`.
    pub max_validity_secs: u64,
    /// `database.max_connections`.
    pub max_connections: u32,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            max_body_bytes: 4096,
            rate_limit: (10_000, 10_000),
            log_level: "info",
            network_url: None,
            network_kind: "horizon",
            extra_toml: String::new(),
            max_validity_secs: 60,
            max_connections: 10,
        }
    }
}

/// The gateway binary built for these tests.
pub fn gateway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gateway"))
}

/// Starts a real signerd (granting the gateway `wallet-*` keys), after checking its binary
/// exists, with a message that says how to build it when it does not.
pub async fn start_signerd() -> SignerdProcess {
    start_signerd_with("").await
}

/// [`start_signerd`] with more TOML for signerd's config (e.g. a `[pool.pkcs11]` table).
pub async fn start_signerd_with(extra_toml: &str) -> SignerdProcess {
    let bin = signer_testkit::signerd_bin();
    assert!(
        bin.exists(),
        "the signerd binary is missing at {}. `cargo test --workspace` builds it; with \
         `cargo test -p gateway` build it first: `cargo build -p signerd` (same \
         CARGO_TARGET_DIR), or set SIGNERD_BIN.",
        bin.display()
    );
    must(
        SignerdProcess::start(SignerdOptions {
            acl: vec![Grant::keys(GATEWAY_IDENTITY, &["wallet-*"])],
            extra_toml: extra_toml.to_owned(),
            ..Default::default()
        })
        .await,
    )
}

/// Starts signerd again at the address it had, so the gateway's config still points at it.
pub async fn restart_signerd_on_same_port(signerd: &mut SignerdProcess) {
    let config = must(std::fs::read_to_string(&signerd.config));
    let pinned = config.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", signerd.addr),
        1,
    );
    must(std::fs::write(&signerd.config, pinned));
    // Between the kill and the restart, the freed port (from the ephemeral range, as port 0
    // gave it) can be taken as the local port of some outgoing connection on this busy
    // machine. That connection ends soon; try the bind again meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match signerd.launch().await {
            Ok(()) => return,
            Err(e)
                if format!("{e:#}").contains("in use")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("signerd did not restart on {}: {e:#}", signerd.addr),
        }
    }
}

/// A real `gateway serve` process.
pub struct GatewayProcess {
    /// The config file.
    pub config: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    log: PathBuf,
    /// Environment variables set for the process (e.g. a faked clock).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl GatewayProcess {
    /// Writes a config next to `db` pointing at `signerd`, and starts the gateway.
    pub async fn start(
        db: &TestDatabase,
        signerd: &SignerdProcess,
        options: &GatewayOptions,
    ) -> GatewayProcess {
        let dir = db.dir();
        let cert = must(signerd.pki.client(GATEWAY_IDENTITY));
        must(std::fs::write(dir.join("gateway.pem"), &cert.cert_pem));
        must(std::fs::write(dir.join("gateway.key"), &cert.key_pem));
        let config = dir.join("gateway.toml");
        must(std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:0"
max_body_bytes = {max_body}
request_timeout_ms = 30000
shutdown_grace_ms = 10000

[database]
url = "{url}"
max_connections = {max_connections}

[signer]
endpoint = "https://{signerd}"
server_name = "localhost"
ca = "{ca}"
cert = "gateway.pem"
key = "gateway.key"
connect_timeout_ms = 2000
call_timeout_ms = 10000

[signer.retry]
attempts = 3
initial_backoff_ms = 20
max_backoff_ms = 100

[signer.circuit_breaker]
consecutive_failures = 3
open_ms = 200
max_open_ms = 1000

[rate_limit]
per_second = {per_second}
burst = {burst}

[log]
level = "{log_level}"
{network}
{extra}
"#,
                max_body = options.max_body_bytes,
                url = db.url,
                signerd = signerd.addr,
                ca = signerd.pki.dir.join("ca.pem").display(),
                per_second = options.rate_limit.0,
                burst = options.rate_limit.1,
                log_level = options.log_level,
                network = options
                    .network_url
                    .as_ref()
                    .map(|url| format!(
                        "\n[network]\nkind = \"{}\"\nurl = \"{url}\"\nconnect_timeout_ms = 1000\ntimeout_ms = 5000\nsubmit_timeout_ms = 20000\nmax_validity_secs = {}\n\n[network.retry]\nattempts = 2\ninitial_backoff_ms = 20\nmax_backoff_ms = 100\n\n[network.circuit_breaker]\nconsecutive_failures = 5\nopen_ms = 100\nmax_open_ms = 500\n",
                        options.network_kind,
                        options.max_validity_secs
                    ))
                    .unwrap_or_default(),
                extra = options.extra_toml,
                max_connections = options.max_connections,
            ),
        ));
        let mut process = GatewayProcess {
            config,
            addr: ([127, 0, 0, 1], 0).into(),
            log: dir.join("gateway.log"),
            env: Vec::new(),
            child: None,
        };
        process.launch().await;
        process
    }

    /// Starts `gateway worker` (the payment worker alone) on the config of a running gateway.
    pub async fn start_worker(config: &Path) -> GatewayProcess {
        let dir = config.parent().unwrap_or(Path::new("."));
        let mut process = GatewayProcess {
            config: config.to_path_buf(),
            addr: ([127, 0, 0, 1], 0).into(),
            log: dir.join(format!("worker-{}.log", uuid::Uuid::new_v4().simple())),
            env: Vec::new(),
            child: None,
        };
        let log = must(std::fs::File::create(&process.log));
        let mut child = must(
            Command::new(gateway_bin())
                .arg("worker")
                .arg("--config")
                .arg(config)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .kill_on_drop(true)
                .spawn(),
        );
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "gateway worker running" {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "gateway worker not ready:\n{}",
            process.log()
        );
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        process.child = Some(child);
        process
    }

    /// Starts another `gateway serve` replica on the config of a running gateway (same
    /// database, same signerd), with its own log; port 0, so it listens elsewhere.
    pub async fn start_replica(config: &Path) -> GatewayProcess {
        Self::start_replica_with_env(config, &[]).await
    }

    /// [`Self::start_replica`] with these environment variables set for the process.
    pub async fn start_replica_with_env(config: &Path, env: &[(&str, &str)]) -> GatewayProcess {
        let dir = config.parent().unwrap_or(Path::new("."));
        let mut process = GatewayProcess {
            config: config.to_path_buf(),
            addr: ([127, 0, 0, 1], 0).into(),
            log: dir.join(format!("replica-{}.log", uuid::Uuid::new_v4().simple())),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
        };
        process.launch().await;
        process
    }

    /// Starts the binary and waits for its readiness line.
    pub async fn launch(&mut self) {
        let log = must(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log),
        );
        let mut child = must(
            Command::new(gateway_bin())
                .arg("serve")
                .arg("--config")
                .arg(&self.config)
                .env_remove("RUST_LOG")
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .kill_on_drop(true)
                .spawn(),
        );
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("gateway listening on ") {
                    return addr.parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await;
        match ready {
            Ok(Some(addr)) => self.addr = addr,
            Ok(None) => panic!("gateway exited before it was ready:\n{}", self.log()),
            Err(_) => panic!("gateway not ready after 60 s:\n{}", self.log()),
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Sends SIGKILL (no chance to clean up); the caller waits for the exit.
    pub fn sigkill(&self) {
        let pid = self.pid().unwrap_or_else(|| panic!("gateway not running"));
        let killed = must(
            std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status(),
        );
        assert!(killed.success());
    }

    /// Everything the gateway logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a CLI subcommand against this gateway's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        run_cli(&self.config, args)
    }

    /// Waits (at most 30 s) for the process to exit on its own.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap_or_else(|| panic!("not running"));
        must(tokio::time::timeout(Duration::from_secs(30), child.wait()).await)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap_or_else(|| panic!("not running"));
        let pid = child.id().unwrap_or_else(|| panic!("already exited"));
        let status = must(
            std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status(),
        );
        assert!(status.success(), "kill -TERM {pid}");
        must(tokio::time::timeout(Duration::from_secs(30), child.wait()).await)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Runs `gateway ARGS... --config CONFIG`.
pub fn run_cli(config: &Path, args: &[&str]) -> std::process::Output {
    must(
        std::process::Command::new(gateway_bin())
            .args(args)
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .output(),
    )
}

/// A request header as text; empty when absent or not text.
pub fn header_text(headers: &hyper::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Creates an API key with the CLI and returns it.
pub fn create_api_key(config: &Path, role: &str) -> String {
    let out = run_cli(
        config,
        &["api-key", "create", "--role", role, "--name", "test"],
    );
    assert!(
        out.status.success(),
        "api-key create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// signerd, a database and the gateway, with one admin and one service key.
pub struct Stack {
    /// The database (dropped last: fields drop in order, so it is declared last).
    pub signerd: SignerdProcess,
    /// The gateway process.
    pub gateway: GatewayProcess,
    /// An admin key.
    pub admin_key: String,
    /// A service key.
    pub service_key: String,
    /// An HTTP client for the gateway.
    pub http: Http,
    /// The database.
    pub db: TestDatabase,
}

impl Stack {
    /// Everything with default options.
    pub async fn start(kind: DatabaseKind) -> Stack {
        Self::start_with(kind, GatewayOptions::default()).await
    }

    /// Everything with these gateway options.
    pub async fn start_with(kind: DatabaseKind, options: GatewayOptions) -> Stack {
        Self::start_with_signerd(kind, options, "").await
    }

    /// Everything with these gateway options and more TOML for signerd's config.
    pub async fn start_with_signerd(
        kind: DatabaseKind,
        options: GatewayOptions,
        signerd_toml: &str,
    ) -> Stack {
        let db = TestDatabase::create(kind).await;
        let signerd = start_signerd_with(signerd_toml).await;
        let gateway = GatewayProcess::start(&db, &signerd, &options).await;
        let admin_key = create_api_key(&gateway.config, "admin");
        let service_key = create_api_key(&gateway.config, "service");
        let http = Http::new(gateway.addr);
        Stack {
            signerd,
            gateway,
            admin_key,
            service_key,
            http,
            db,
        }
    }

    /// Creates a user with the service key and returns its id.
    pub async fn create_user(&self, external_ref: &str) -> String {
        let reply = self
            .http
            .post(
                "/v1/users",
                &self.service_key,
                &serde_json::json!({ "external_ref": external_ref }).to_string(),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()["id"].as_str().unwrap_or_default().to_owned()
    }

    /// Every key signerd holds that the gateway's identity can see (all pages).
    pub async fn signerd_keys(&self) -> Vec<signer_proto::v1::Key> {
        let mut client = must(self.signerd.client(GATEWAY_IDENTITY).await);
        let mut keys = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = must(
                client
                    .list_keys(signer_proto::v1::ListKeysRequest {
                        page_size: 1000,
                        page_token,
                    })
                    .await,
            )
            .into_inner();
            keys.extend(page.keys);
            if page.next_page_token.is_empty() {
                return keys;
            }
            page_token = page.next_page_token;
        }
    }

    /// signerd's own view of one key (`GetKey`).
    pub async fn signerd_key(&self, key_id: &str) -> signer_proto::v1::Key {
        let mut client = must(self.signerd.client(GATEWAY_IDENTITY).await);
        let got = must(
            client
                .get_key(signer_proto::v1::GetKeyRequest {
                    key_id: key_id.to_owned(),
                })
                .await,
        );
        got.into_inner()
            .key
            .unwrap_or_else(|| panic!("GetKey({key_id}) returned no key"))
    }

    /// The audit events the admin API returns about one subject.
    pub async fn audit_events(&self, subject_type: &str, subject_id: &str) -> Vec<Value> {
        let reply = self
            .http
            .get(
                &format!(
                    "/v1/audit-events?subject_type={subject_type}&subject_id={subject_id}&limit=500"
                ),
                Some(&self.admin_key),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body text.
    pub body: String,
}

impl Reply {
    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The error `code` of a JSON error body, after checking the body is exactly
    /// `{code, message}` with a non-empty message.
    pub fn error_code(&self) -> String {
        let json = self.json();
        let fields = json.as_object().map(|o| o.len()).unwrap_or(0);
        assert_eq!(
            fields, 2,
            "error body must be {{code, message}}: {}",
            self.body
        );
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "empty message: {}",
            self.body
        );
        json["code"].as_str().unwrap_or_default().to_owned()
    }

    /// The error message.
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// A plain HTTP/1.1 client for the gateway.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    /// A client for the gateway at `addr`.
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    /// Sends a request with these headers and body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = must(builder.body(Full::new(Bytes::from(body.unwrap_or_default()))));
        let response =
            must(tokio::time::timeout(Duration::from_secs(60), self.client.request(request)).await)
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = must(response.into_body().collect().await).to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// `GET path` with an optional API key.
    pub async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        self.send("GET", path, &headers, None).await
    }

    /// `POST path` with a JSON body, the key, and a fresh Idempotency-Key.
    pub async fn post(&self, path: &str, key: &str, body: &str) -> Reply {
        let idempotency_key = uuid::Uuid::new_v4().to_string();
        self.post_with_idempotency_key(path, key, &idempotency_key, body)
            .await
    }

    /// `POST path` with a JSON body, the key, and the given Idempotency-Key.
    pub async fn post_with_idempotency_key(
        &self,
        path: &str,
        key: &str,
        idempotency_key: &str,
        body: &str,
    ) -> Reply {
        let auth = format!("Bearer {key}");
        self.send(
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("idempotency-key", idempotency_key),
                ("content-type", "application/json"),
            ],
            Some(body.as_bytes().to_vec()),
        )
        .await
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
