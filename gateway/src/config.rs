//! The gateway's configuration: one TOML file, every table `deny_unknown_fields`, cross-field
//! rules checked at load with an error that names the field. Relative paths (the SQLite file, the
//! PEM files) are resolved against the config file's directory.
//!
//! `gateway/gateway.example.toml` documents every option.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Where the config is read from when neither `--config` nor `$GATEWAY_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/gateway/gateway.toml";

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP listener and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// The database.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// How to reach signerd.
    pub signer: SignerConfig,
    /// Per-API-key request rate.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Idempotency-Key bookkeeping.
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The Stellar network API (Horizon or Stellar RPC). Without it the payment routes answer
    /// `NETWORK_NOT_CONFIGURED` and no payment worker runs.
    pub network: Option<NetworkConfig>,
    /// The `[horizon]` section of earlier versions, kept only to refuse it with a message
    /// saying what replaced it (rather than serde's bare "unknown field").
    #[serde(default)]
    horizon: Option<toml::Value>,
    /// Payments: limits and the worker.
    #[serde(default)]
    pub payments: PaymentsConfig,
    /// Webhooks: which targets endpoints may name, and the dispatcher.
    #[serde(default)]
    pub webhooks: crate::webhooks::WebhooksConfig,
    /// Deposits: the ingester.
    #[serde(default)]
    pub deposits: crate::deposits::DepositsConfig,
    /// The config file's directory, which a relative SQLite path is relative to.
    #[serde(skip)]
    database_base: Option<PathBuf>,
}

/// The HTTP listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// A request still running after this long is answered 503 `TIMEOUT`.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// On SIGTERM, in-flight requests get this long to finish before the process exits anyway.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            request_timeout_ms: default_request_timeout_ms(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_shutdown_grace_ms() -> u64 {
    30_000
}

impl ServerConfig {
    /// The per-request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long shutdown waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// The database: SQLite (a file, the default) or Postgres.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:PATH` (relative to the config file; created when missing) or
    /// `postgres://user:password@host:port/db`. Exclusive with `url_env`.
    pub url: Option<String>,
    /// Name of an environment variable holding the URL (keeps a password out of the file).
    pub url_env: Option<String>,
    /// Most connections held open.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a request waits for a free connection before it gets 503.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            url_env: None,
            max_connections: default_max_connections(),
            acquire_timeout_ms: default_acquire_timeout_ms(),
        }
    }
}

fn default_max_connections() -> u32 {
    10
}
fn default_acquire_timeout_ms() -> u64 {
    5_000
}

/// The SQLite file used when `database` names no URL.
pub const DEFAULT_SQLITE_FILE: &str = "gateway.db";

/// A parsed database location.
#[derive(Debug, Clone)]
pub enum DatabaseUrl {
    /// A SQLite file (created when missing).
    Sqlite(PathBuf),
    /// A Postgres connection URL; it may carry a password, so it is kept secret.
    Postgres(SecretString),
}

impl DatabaseUrl {
    /// Parses `sqlite:PATH`, `sqlite://PATH`, `postgres://...` or `postgresql://...`.
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        if let Some(path) = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
        {
            if path.is_empty() || path.contains(['?', '#']) || path == ":memory:" {
                return Err(Error::Config(format!(
                    "{field}: sqlite needs a file path without ? or # (an in-memory database would lose everything)"
                )));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(SecretString::from(raw.to_owned())));
        }
        Err(Error::Config(format!(
            "{field}: must start with sqlite: or postgres:// (the value is not shown: it may hold a password)"
        )))
    }

    /// A form safe to log: the Postgres password is replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            DatabaseUrl::Postgres(url) => {
                let url = url.expose_secret();
                match (url.find("://"), url.rfind('@')) {
                    (Some(scheme), Some(at)) if at > scheme => {
                        let creds = &url[scheme + 3..at];
                        let user = creds.split(':').next().unwrap_or_default();
                        format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
                    }
                    _ => url.to_owned(),
                }
            }
        }
    }
}

/// How to reach signerd: mutual TLS with a client certificate its ACL knows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerConfig {
    /// signerd's address, e.g. `https://signerd.internal:7443`.
    pub endpoint: String,
    /// The name signerd's server certificate is checked against.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// The CA signerd's server certificate chains to (PEM).
    pub ca: PathBuf,
    /// The gateway's client certificate (PEM).
    pub cert: PathBuf,
    /// The gateway's client private key (PEM). Read once at start, kept in secret memory.
    pub key: PathBuf,
    /// Deadline for establishing a connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline for one call (sent to signerd as the gRPC deadline too). Key generation on a
    /// loaded HSM takes tens of milliseconds, so this is generous.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Retries of calls that failed with `UNAVAILABLE` or a deadline.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The circuit breaker around signerd.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
}

fn default_server_name() -> String {
    "localhost".to_owned()
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_call_timeout_ms() -> u64 {
    10_000
}

impl SignerConfig {
    /// The connect deadline.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The per-call deadline.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

/// Retries with exponential backoff.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all (1 = no retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Wait before the first retry; doubles each time.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// The longest wait between attempts.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: default_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}

fn default_attempts() -> u32 {
    3
}
fn default_initial_backoff_ms() -> u64 {
    50
}
fn default_max_backoff_ms() -> u64 {
    1_000
}

/// The circuit breaker: after `consecutive_failures` outage errors in a row, calls fail at once
/// (503 `SIGNER_UNAVAILABLE`) for `open_ms`, doubling up to `max_open_ms` while signerd stays
/// down; then one trial call decides whether it closes.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Outage errors in a row that open the breaker.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// How long the breaker stays open the first time.
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
    /// The longest it stays open.
    #[serde(default = "default_max_open_ms")]
    pub max_open_ms: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            consecutive_failures: default_consecutive_failures(),
            open_ms: default_open_ms(),
            max_open_ms: default_max_open_ms(),
        }
    }
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_open_ms() -> u64 {
    1_000
}
fn default_max_open_ms() -> u64 {
    30_000
}

/// Stellar's test network passphrase.
pub const TESTNET_PASSPHRASE: &str = "Test SDF Network ; September 2015";
/// Stellar's futurenet passphrase.
pub const FUTURENET_PASSPHRASE: &str = "Test SDF Future Network ; October 2022";

/// Which network API the gateway talks to.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// Horizon's REST API.
    Horizon,
    /// Stellar RPC's JSON-RPC 2.0 API.
    Rpc,
}

/// How to reach the network API and how transactions are built for it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// `horizon` or `rpc`.
    pub kind: NetworkKind,
    /// The API's base URL (Horizon) or JSON-RPC endpoint (RPC):
    /// `https://horizon-testnet.stellar.org`, `https://soroban-testnet.stellar.org` (TLS, the
    /// system's root certificates) or `http://...` for a local node or the simulator.
    pub url: String,
    /// The network passphrase transactions are signed for.
    #[serde(default = "default_network_passphrase")]
    pub network_passphrase: String,
    /// Deadline for establishing a connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline for one read.
    #[serde(default = "default_network_timeout_ms")]
    pub timeout_ms: u64,
    /// Deadline for one submission (Horizon itself answers 504 after ~30 s; RPC answers at once).
    #[serde(default = "default_submit_timeout_ms")]
    pub submit_timeout_ms: u64,
    /// The highest fee per operation offered, in stroops (fee_stats' p90 is capped to this).
    #[serde(default = "default_max_fee")]
    pub max_fee_stroops: u32,
    /// How far ahead a transaction's `max_time` is set. Must not exceed signerd's
    /// `policy.max_validity_secs`. Short is better: a payment whose transaction never landed can
    /// only be rebuilt after `max_time`, and signerd's sequence guard refuses the rebuilt one
    /// until `max_time + sequence_guard_secs`.
    #[serde(default = "default_max_validity_secs")]
    pub max_validity_secs: u64,
    /// signerd's sequence-guard grace after `max_time` (60 s in signerd).
    #[serde(default = "default_sequence_guard_secs")]
    pub sequence_guard_secs: u64,
    /// Read retries.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The circuit breaker around the API.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// RPC only: how the client walks the API's limits.
    #[serde(default)]
    pub rpc: RpcLimits,
}

/// Limits of the Stellar RPC client (ignored for Horizon).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RpcLimits {
    /// Ledger keys per `getLedgerEntries` call (stellar-rpc's limit is 200).
    #[serde(default = "default_ledger_entries_batch")]
    pub ledger_entries_batch: usize,
    /// `sendTransaction` attempts while the node answers `TRY_AGAIN_LATER` (same bytes, with
    /// the read backoff), before the worker is told to come back later.
    #[serde(default = "default_try_again_attempts")]
    pub try_again_attempts: u32,
    /// Ledgers of history `getTransactions` searches for the transaction that used a sequence
    /// number, counted back from the ledger it was seen used at.
    #[serde(default = "default_history_ledgers")]
    pub history_ledgers: u32,
    /// Transactions per `getTransactions` page (stellar-rpc's limit is 200).
    #[serde(default = "default_history_page")]
    pub history_page: u32,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            ledger_entries_batch: default_ledger_entries_batch(),
            try_again_attempts: default_try_again_attempts(),
            history_ledgers: default_history_ledgers(),
            history_page: default_history_page(),
        }
    }
}

fn default_ledger_entries_batch() -> usize {
    200
}
fn default_try_again_attempts() -> u32 {
    3
}
fn default_history_ledgers() -> u32 {
    // 30 minutes of 5-second ledgers.
    360
}
fn default_history_page() -> u32 {
    200
}

fn default_network_passphrase() -> String {
    TESTNET_PASSPHRASE.to_owned()
}
fn default_network_timeout_ms() -> u64 {
    10_000
}
fn default_submit_timeout_ms() -> u64 {
    40_000
}
fn default_max_fee() -> u32 {
    10_000
}
fn default_max_validity_secs() -> u64 {
    60
}
fn default_sequence_guard_secs() -> u64 {
    60
}

impl NetworkConfig {
    /// True on a test network (friendbot allowed).
    pub fn is_test_network(&self) -> bool {
        self.network_passphrase == TESTNET_PASSPHRASE
            || self.network_passphrase == FUTURENET_PASSPHRASE
    }
}

/// Payments: daily limits per wallet and the worker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    /// Payments a wallet may make per UTC day (admins can override per wallet).
    #[serde(default = "default_daily_count")]
    pub daily_count: i64,
    /// Stroops a wallet may send per UTC day (admins can override per wallet).
    #[serde(default = "default_daily_amount_stroops")]
    pub daily_amount_stroops: i64,
    /// Run the payment worker inside `gateway serve` (`gateway worker` runs it alone).
    #[serde(default = "default_true")]
    pub worker: bool,
    /// Source wallets processed at once by one worker.
    #[serde(default = "default_worker_concurrency")]
    pub worker_concurrency: usize,
    /// How often the worker looks for due work when nothing woke it.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long a worker's lease on a source wallet lasts without renewal.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// How long a worker keeps a source wallet whose payments are all done, waiting for its
    /// next one (0: give it back at once). A held wallet's next payment costs no lease
    /// round trips; one accepted by another replica waits for the hold to end. Capped at
    /// `lease_ms / 3` (the lease is renewed between payments); `gateway worker` never holds.
    #[serde(default = "default_idle_hold_ms")]
    pub idle_hold_ms: u64,
    /// Confirmations of a payment whose sequence number is spent, while Horizon's history of
    /// the account does not yet show which transaction spent it (ingestion behind), before the
    /// payment is parked as `NEEDS_ATTENTION` rather than confirmed forever.
    #[serde(default = "default_attention_after_confirmations")]
    pub attention_after_confirmations: i64,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        PaymentsConfig {
            daily_count: default_daily_count(),
            daily_amount_stroops: default_daily_amount_stroops(),
            worker: true,
            worker_concurrency: default_worker_concurrency(),
            poll_interval_ms: default_poll_interval_ms(),
            lease_ms: default_lease_ms(),
            idle_hold_ms: default_idle_hold_ms(),
            attention_after_confirmations: default_attention_after_confirmations(),
        }
    }
}

fn default_daily_count() -> i64 {
    10_000
}
fn default_daily_amount_stroops() -> i64 {
    1_000_000 * 10_000_000
}
fn default_true() -> bool {
    true
}
fn default_worker_concurrency() -> usize {
    256
}
fn default_poll_interval_ms() -> u64 {
    200
}
fn default_lease_ms() -> u64 {
    60_000
}
fn default_attention_after_confirmations() -> i64 {
    30
}
fn default_idle_hold_ms() -> u64 {
    2_000
}

/// Per-API-key request rate: a token bucket refilled at `per_second`, holding `burst`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second per API key.
    #[serde(default = "default_per_second")]
    pub per_second: u32,
    /// Requests a key may make at once after being idle.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: default_per_second(),
            burst: default_burst(),
        }
    }
}

fn default_per_second() -> u32 {
    100
}
fn default_burst() -> u32 {
    200
}

/// Idempotency-Key bookkeeping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// Stored responses are kept this long; after that the key may be reused.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            retention_hours: default_retention_hours(),
        }
    }
}

fn default_retention_hours() -> u64 {
    24
}

impl IdempotencyConfig {
    /// How long stored responses are kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_hours * 3600)
    }
}

/// Logging.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `gateway=debug`. `RUST_LOG` overrides it.
    pub level: Option<String>,
}

/// Log output format.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Reads, parses and checks a config file, and resolves relative paths against its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading config {}", path.display()), e))?;
        let mut config = Self::parse(&text)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    /// Parses and checks config text (paths are left as written).
    pub fn parse(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.signer.ca);
        resolve(&mut self.signer.cert);
        resolve(&mut self.signer.key);
        self.database_base = Some(base.to_path_buf());
    }

    /// The database location: `url`, else the variable named by `url_env`, else
    /// [`DEFAULT_SQLITE_FILE`]; a relative SQLite path is relative to the config file.
    pub fn database_url(&self) -> Result<DatabaseUrl> {
        let parsed = match (&self.database.url, &self.database.url_env) {
            (Some(url), None) => DatabaseUrl::parse("database.url", url)?,
            (None, Some(var)) => {
                let url = std::env::var(var).map_err(|_| {
                    Error::Config(format!("database.url_env: variable {var} is not set"))
                })?;
                DatabaseUrl::parse("database.url_env", &url)?
            }
            (None, None) => DatabaseUrl::Sqlite(PathBuf::from(DEFAULT_SQLITE_FILE)),
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "database: set at most one of url or url_env".into(),
                ));
            }
        };
        Ok(match (parsed, &self.database_base) {
            (DatabaseUrl::Sqlite(path), Some(base)) if path.is_relative() => {
                DatabaseUrl::Sqlite(base.join(path))
            }
            (other, _) => other,
        })
    }

    fn check(&self) -> Result<()> {
        let field = |name: &str, why: &str| Err(Error::Config(format!("{name}: {why}")));
        self.webhooks.check()?;
        if !(1024..=16 * 1024 * 1024).contains(&self.server.max_body_bytes) {
            return field("server.max_body_bytes", "must be between 1 KiB and 16 MiB");
        }
        if self.server.request_timeout_ms == 0 {
            return field("server.request_timeout_ms", "must be positive");
        }
        if self.database.url.is_some() && self.database.url_env.is_some() {
            return field("database", "set at most one of url or url_env");
        }
        if let Some(url) = &self.database.url {
            DatabaseUrl::parse("database.url", url)?;
        }
        if self.database.max_connections == 0 {
            return field("database.max_connections", "must be positive");
        }
        if self.database.acquire_timeout_ms == 0 {
            return field("database.acquire_timeout_ms", "must be positive");
        }
        if !(self.signer.endpoint.starts_with("https://")) {
            return field(
                "signer.endpoint",
                "must start with https:// (signerd speaks only mutual TLS)",
            );
        }
        if self.signer.server_name.is_empty() {
            return field("signer.server_name", "must not be empty");
        }
        if self.signer.connect_timeout_ms == 0 {
            return field("signer.connect_timeout_ms", "must be positive");
        }
        if self.signer.call_timeout_ms == 0 {
            return field("signer.call_timeout_ms", "must be positive");
        }
        let retry = &self.signer.retry;
        if retry.attempts == 0 {
            return field("signer.retry.attempts", "must be at least 1");
        }
        if retry.max_backoff_ms < retry.initial_backoff_ms {
            return field(
                "signer.retry.max_backoff_ms",
                "must not be less than initial_backoff_ms",
            );
        }
        let breaker = &self.signer.circuit_breaker;
        if breaker.consecutive_failures == 0 {
            return field(
                "signer.circuit_breaker.consecutive_failures",
                "must be at least 1",
            );
        }
        if breaker.open_ms == 0 {
            return field("signer.circuit_breaker.open_ms", "must be positive");
        }
        if breaker.max_open_ms < breaker.open_ms {
            return field(
                "signer.circuit_breaker.max_open_ms",
                "must not be less than open_ms",
            );
        }
        if self.rate_limit.per_second == 0 {
            return field("rate_limit.per_second", "must be positive");
        }
        if self.rate_limit.burst == 0 {
            return field("rate_limit.burst", "must be positive");
        }
        if self.idempotency.retention_hours == 0 {
            return field("idempotency.retention_hours", "must be positive");
        }
        if self.horizon.is_some() {
            return field(
                "horizon",
                "the [horizon] section is now [network] with kind = \"horizon\" (same keys)",
            );
        }
        if let Some(network) = &self.network {
            if !(network.url.starts_with("https://") || network.url.starts_with("http://")) {
                return field("network.url", "must start with https:// or http://");
            }
            if network.network_passphrase.trim().is_empty() {
                return field("network.network_passphrase", "must not be empty");
            }
            if network.max_validity_secs == 0 || network.max_validity_secs > 300 {
                return field("network.max_validity_secs", "must be between 1 and 300");
            }
            if network.max_fee_stroops < 100 {
                return field(
                    "network.max_fee_stroops",
                    "must be at least 100 (the minimum fee)",
                );
            }
            if network.timeout_ms == 0 {
                return field("network.timeout_ms", "must be positive");
            }
            if network.submit_timeout_ms == 0 {
                return field("network.submit_timeout_ms", "must be positive");
            }
            if network.retry.attempts == 0 {
                return field("network.retry.attempts", "must be at least 1");
            }
            if network.circuit_breaker.consecutive_failures == 0 {
                return field(
                    "network.circuit_breaker.consecutive_failures",
                    "must be at least 1",
                );
            }
            if network.circuit_breaker.max_open_ms < network.circuit_breaker.open_ms {
                return field(
                    "network.circuit_breaker.max_open_ms",
                    "must not be less than open_ms",
                );
            }
            let rpc = &network.rpc;
            if rpc.ledger_entries_batch == 0 || rpc.ledger_entries_batch > 200 {
                return field(
                    "network.rpc.ledger_entries_batch",
                    "must be between 1 and 200 (getLedgerEntries' limit)",
                );
            }
            if rpc.try_again_attempts == 0 {
                return field("network.rpc.try_again_attempts", "must be at least 1");
            }
            if rpc.history_ledgers == 0 {
                return field("network.rpc.history_ledgers", "must be positive");
            }
            if rpc.history_page == 0 || rpc.history_page > 200 {
                return field(
                    "network.rpc.history_page",
                    "must be between 1 and 200 (getTransactions' limit)",
                );
            }
        }
        let payments = &self.payments;
        if payments.daily_count <= 0 {
            return field("payments.daily_count", "must be positive");
        }
        if payments.daily_amount_stroops <= 0 {
            return field("payments.daily_amount_stroops", "must be positive");
        }
        if payments.worker_concurrency == 0 {
            return field("payments.worker_concurrency", "must be positive");
        }
        if self.payments.attention_after_confirmations < 1 {
            return field(
                "payments.attention_after_confirmations",
                "must be at least 1",
            );
        }
        if payments.poll_interval_ms == 0 || payments.lease_ms < 1000 {
            return field(
                "payments.lease_ms",
                "poll_interval_ms must be positive and lease_ms at least 1000",
            );
        }

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[signer]
endpoint = "https://127.0.0.1:7700"
ca = "pki/ca.pem"
cert = "pki/gateway.pem"
key = "pki/gateway.key"
"#;

    fn config_error(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_takes_documented_defaults() {
        let config = Config::parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.server.max_body_bytes, 64 * 1024);
        assert_eq!(config.signer.retry.attempts, 3);
        assert!(matches!(
            config.database_url(),
            Ok(DatabaseUrl::Sqlite(p)) if p == Path::new(DEFAULT_SQLITE_FILE)
        ));
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../gateway.example.toml");
        Config::parse(text).unwrap_or_else(|e| panic!("gateway.example.toml: {e}"));
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = config_error(&format!("{MINIMAL}\n[server]\nlisten_addr = \"x\"\n"));
        assert!(err.contains("listen_addr"), "{err}");
        let err = config_error(&MINIMAL.replace("[signer]", "[signer]\nretries = 3"));
        assert!(err.contains("retries"), "{err}");
    }

    #[test]
    fn the_old_horizon_section_is_refused_with_what_replaced_it() {
        let err = config_error(&format!("{MINIMAL}\n[horizon]\nurl = \"http://x\"\n"));
        assert!(err.contains("[network]") && err.contains("kind"), "{err}");
    }

    #[test]
    fn the_network_kind_is_horizon_or_rpc() {
        for kind in ["horizon", "rpc"] {
            let text = format!("{MINIMAL}\n[network]\nkind = \"{kind}\"\nurl = \"http://x\"\n");
            let config = Config::parse(&text).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert!(config.network.is_some());
        }
        let err = config_error(&format!(
            "{MINIMAL}\n[network]\nkind = \"soroban\"\nurl = \"http://x\"\n"
        ));
        assert!(err.contains("kind") || err.contains("soroban"), "{err}");
        let err = config_error(&format!("{MINIMAL}\n[network]\nurl = \"http://x\"\n"));
        assert!(err.contains("kind"), "{err}");
        let err = config_error(&format!(
            "{MINIMAL}\n[network]\nkind = \"rpc\"\nurl = \"http://x\"\n[network.rpc]\nledger_entries_batch = 201\n"
        ));
        assert!(err.contains("network.rpc.ledger_entries_batch"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("[server]\nmax_body_bytes = 10", "server.max_body_bytes"),
            ("[database]\nurl = \"mysql://x\"", "database.url"),
            ("[database]\nurl = \"sqlite::memory:\"", "database.url"),
            (
                "[database]\nurl = \"sqlite:a.db\"\nurl_env = \"X\"",
                "database: set at most one",
            ),
            ("[rate_limit]\nburst = 0", "rate_limit.burst"),
        ];
        for (extra, wanted) in cases {
            let err = config_error(&format!("{MINIMAL}\n{extra}\n"));
            assert!(err.contains(wanted), "{extra}: {err}");
        }
        let err = config_error(&MINIMAL.replace("https://", "http://"));
        assert!(err.contains("signer.endpoint"), "{err}");
        let err = config_error(&format!(
            "{MINIMAL}\n[signer.retry]\ninitial_backoff_ms = 500\nmax_backoff_ms = 100\n"
        ));
        assert!(err.contains("signer.retry.max_backoff_ms"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            format!("{MINIMAL}\n[database]\nurl = \"sqlite:data/gw.db\"\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.signer.ca, dir.path().join("pki/ca.pem"));
        assert!(matches!(
            config.database_url(),
            Ok(DatabaseUrl::Sqlite(p)) if p == dir.path().join("data/gw.db")
        ));
    }

    #[test]
    fn postgres_passwords_are_redacted() {
        let url = DatabaseUrl::parse("database.url", "postgres://gw:s3cret@db:5432/gateway")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.redacted(), "postgres://gw:***@db:5432/gateway");
        assert!(!format!("{url:?}").contains("s3cret"));
    }
}
