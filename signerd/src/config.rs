//! signerd's configuration: one TOML file, every table `deny_unknown_fields`, cross-field rules
//! checked at load with an error that names the field. Relative paths are resolved against the
//! directory of the config file, so a config and its PKI can move together.
//!
//! `hsm-config/signerd.toml` documents every option.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;
use serde::Deserialize;

use crate::audit::log::AuditConfig;
use crate::authz::CallerIdentity;
use crate::backend::gcp_kms::GcpKmsConfig;
use crate::error::{Error, Result};
use crate::policy::PolicyConfig;
use crate::soroban::ledger::StellarRpcConfig;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The gRPC listener.
    pub server: ServerConfig,
    /// TLS material. Mutual TLS is not optional.
    pub tls: TlsConfig,
    /// Where keys live.
    pub backend: BackendConfig,
    /// Who may do what. Empty means nobody may do anything.
    #[serde(default)]
    pub acl: Vec<AclEntry>,
    /// What keys may sign (networks, sources, time bounds, operation types).
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The tamper-evident audit log.
    pub audit: AuditConfig,
    /// Backstop velocity caps.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Where the current ledger of each network is read (`getLatestLedger`), to bound the
    /// expiration of Soroban authorizations. None for a network: its entries are refused.
    #[serde(default)]
    pub stellar_rpc: Vec<StellarRpcConfig>,
    /// Key pools (`[pool.pkcs11]`): keys generated ahead for `CreateKey`.
    #[serde(default)]
    pub pool: crate::pool::PoolSection,
}

/// `[limits]`: signatures per second, per caller identity and per key. A backstop against a
/// compromised or runaway caller, far above normal use; exceeding it is `RESOURCE_EXHAUSTED`.
///
/// Also the denial budget: how many refused requests per caller identity get an audit record of
/// their own. Each one is an fsynced record, so without a budget any certificate holder (even one
/// outside the ACL) could fill the disk and stop all signing.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sustained signatures per second per identity.
    #[serde(default = "default_identity_rate")]
    pub per_identity_per_second: u32,
    /// Burst per identity.
    #[serde(default = "default_identity_rate")]
    pub per_identity_burst: u32,
    /// Sustained signatures per second per key.
    #[serde(default = "default_key_rate")]
    pub per_key_per_second: u32,
    /// Burst per key.
    #[serde(default = "default_key_burst")]
    pub per_key_burst: u32,
    /// Sustained recorded denials per second per identity. Denials beyond the budget are refused
    /// with `RESOURCE_EXHAUSTED` and counted, and the count is written as one summary record.
    #[serde(default = "default_denials_per_second")]
    pub denials_per_second: u32,
    /// Burst of recorded denials per identity.
    #[serde(default = "default_denial_burst")]
    pub denial_burst: u32,
}

fn default_identity_rate() -> u32 {
    10_000
}
fn default_key_rate() -> u32 {
    50
}
fn default_key_burst() -> u32 {
    100
}
fn default_denials_per_second() -> u32 {
    10
}
fn default_denial_burst() -> u32 {
    50
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            per_identity_per_second: default_identity_rate(),
            per_identity_burst: default_identity_rate(),
            per_key_per_second: default_key_rate(),
            per_key_burst: default_key_burst(),
            denials_per_second: default_denials_per_second(),
            denial_burst: default_denial_burst(),
        }
    }
}

/// `[metrics]`: plain-HTTP Prometheus endpoint, loopback by default.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address for `GET /metrics`; port 0 picks a free port (printed at start).
    #[serde(default = "crate::metrics::default_listen")]
    pub listen: SocketAddr,
    /// Set to false to serve no metrics.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: crate::metrics::default_listen(),
            enabled: true,
        }
    }
}

/// The gRPC listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// Largest request message accepted, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How long a client has from its TCP connect to the end of the TLS handshake.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Connections still in their TLS handshake, a budget of their own: when it is full, a new
    /// connection closes the oldest pending one, so idle sockets cannot keep real clients out.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Authenticated connections (handshake done) beyond this many are closed until others
    /// close.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// HTTP/2 streams (concurrent requests) one connection may have open; the client queues the
    /// rest.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// How long one request may run, end to end; a request still running then is cancelled
    /// (`CANCELLED`) and its resources freed. Keep it above `backend.gcp_kms.deadline_ms` and
    /// `key_creation_timeout_ms`, or those are cut short.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Threads for the async side (TLS, HTTP/2, gRPC). Token calls run on their own session
    /// threads, so by default the async side gets half the cores (at least one), leaving the
    /// rest to the token.
    pub worker_threads: Option<usize>,
}

fn default_max_message_bytes() -> usize {
    256 * 1024
}
fn default_handshake_timeout_ms() -> u64 {
    3_000
}
fn default_max_handshakes() -> usize {
    64
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_concurrent_streams() -> u32 {
    128
}
fn default_request_timeout_ms() -> u64 {
    60_000
}

impl ServerConfig {
    /// The number of async worker threads to start.
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / 2).max(1)
        })
    }

    /// The TLS handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The deadline of one request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// TLS material, PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain.
    pub cert: PathBuf,
    /// The server private key.
    pub key: PathBuf,
    /// The CA (one or more certificates) that client certificates must chain to.
    pub client_ca: PathBuf,
    /// PEM files of CRLs (from the CAs in `client_ca`); a revoked client certificate is refused
    /// at the handshake. With CRLs, a client certificate no CRL covers is refused too.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
}

/// Backends holding keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The backend `CreateKey` uses when the request names none.
    #[serde(default = "default_backend")]
    pub default: String,
    /// The PKCS#11 token.
    pub pkcs11: Option<Pkcs11Config>,
    /// A Google Cloud KMS key ring (`[backend.gcp_kms]`; the backend is named `gcp-kms`).
    pub gcp_kms: Option<GcpKmsConfig>,
}

fn default_backend() -> String {
    "pkcs11".to_owned()
}

/// A PKCS#11 token, found by label.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (for SoftHSM: `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Label of the token; the slot is found by this label, never by number.
    pub token_label: String,
    /// File holding the user PIN (trailing newline ignored). Exactly one of `pin_file`, `pin_env`.
    pub pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// Sessions in the pool; each can run one operation at a time.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// How often the token is probed, and reconnected while it is gone.
    #[serde(default = "default_health_interval_ms")]
    pub health_check_interval_ms: u64,
}

fn default_sessions() -> usize {
    4
}
fn default_health_interval_ms() -> u64 {
    1_000
}

impl Pkcs11Config {
    /// Reads the PIN from its file or environment variable. Never logged; every copy signerd
    /// makes is zeroized when dropped. A `pin_env` variable is erased from the process
    /// environment once read (see [`crate::environment`]), so neither `/proc/PID/environ` nor a
    /// core dump shows it; reading it a second time therefore fails.
    pub fn read_pin(&self) -> Result<SecretString> {
        match (&self.pin_file, &self.pin_env) {
            (Some(path), None) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    Error::io(format!("backend.pkcs11.pin_file {}", path.display()), e)
                })?);
                Ok(SecretString::from(text.trim_end_matches(['\n', '\r'])))
            }
            (None, Some(var)) => {
                let pin = std::env::var(var).map(SecretString::from).map_err(|_| {
                    Error::Config(format!("backend.pkcs11.pin_env: variable {var} is not set"))
                })?;
                match crate::environment::erase_variable(var) {
                    Ok(_) => {}
                    Err(e) => tracing::error!(
                        error = %e,
                        variable = %var,
                        "could not erase the PIN variable from the process environment"
                    ),
                }
                Ok(pin)
            }
            _ => Err(Error::Config(
                "backend.pkcs11: set exactly one of pin_file or pin_env".into(),
            )),
        }
    }

    /// The probe interval.
    pub fn health_check_interval(&self) -> Duration {
        Duration::from_millis(self.health_check_interval_ms)
    }
}

/// What one caller identity may do. Anything not granted is denied.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AclEntry {
    /// The typed identity from the client certificate: `uri:` its SAN URI, else `dns:` its SAN
    /// DNS name, else (a certificate without a SAN extension) `cn:` its subject CN.
    pub identity: CallerIdentity,
    /// May create keys (only with ids matching `keys`).
    #[serde(default)]
    pub create_keys: bool,
    /// Glob patterns (`*`, `?`) of key ids this identity may see and sign with.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Glob patterns of the keys this identity may blind-sign with (sign bare hashes); each key
    /// must also match `keys`. Empty (the default): no blind signing.
    #[serde(default)]
    pub blind_sign: Vec<String>,
}

/// Logging.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `signerd=debug`. `RUST_LOG` overrides it.
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
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading config {}", path.display()), e))?;
        let mut config = Self::parse(&text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
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
        resolve(&mut self.tls.cert);
        resolve(&mut self.tls.key);
        resolve(&mut self.tls.client_ca);
        self.tls.crls.iter_mut().for_each(resolve);
        resolve(&mut self.audit.dir);
        if let Some(pin_file) = self
            .backend
            .pkcs11
            .as_mut()
            .and_then(|p11| p11.pin_file.as_mut())
        {
            resolve(pin_file);
        }
    }

    fn check(&self) -> Result<()> {
        let field = |name: &str, why: &str| Err(Error::Config(format!("{name}: {why}")));
        if !(1024..=16 * 1024 * 1024).contains(&self.server.max_message_bytes) {
            return field(
                "server.max_message_bytes",
                "must be between 1 KiB and 16 MiB",
            );
        }
        if self.server.handshake_timeout_ms == 0 {
            return field("server.handshake_timeout_ms", "must be positive");
        }
        if !(1..=65_536).contains(&self.server.max_handshakes) {
            return field("server.max_handshakes", "must be between 1 and 65536");
        }
        if self.server.max_connections == 0 {
            return field("server.max_connections", "must be positive");
        }
        if !(1..=10_000).contains(&self.server.max_concurrent_streams) {
            return field(
                "server.max_concurrent_streams",
                "must be between 1 and 10000",
            );
        }
        if !(100..=600_000).contains(&self.server.request_timeout_ms) {
            return field(
                "server.request_timeout_ms",
                "must be between 100 and 600000",
            );
        }
        if self
            .server
            .worker_threads
            .is_some_and(|n| !(1..=256).contains(&n))
        {
            return field("server.worker_threads", "must be between 1 and 256");
        }
        match self.backend.default.as_str() {
            "pkcs11" if self.backend.pkcs11.is_none() => {
                return field(
                    "backend.default",
                    "is pkcs11 but [backend.pkcs11] is missing",
                );
            }
            "pkcs11" => {}
            "gcp-kms" if self.backend.gcp_kms.is_none() => {
                return field(
                    "backend.default",
                    "is gcp-kms but [backend.gcp_kms] is missing",
                );
            }
            "gcp-kms" => {}
            other => return field("backend.default", &format!("unknown backend {other:?}")),
        }
        if let Some(kms) = &self.backend.gcp_kms {
            kms.check()?;
        }
        if let Some(p11) = &self.backend.pkcs11 {
            if p11.token_label.is_empty() || p11.token_label.len() > 32 {
                return field("backend.pkcs11.token_label", "must be 1 to 32 bytes");
            }
            if p11.pin_file.is_some() == p11.pin_env.is_some() {
                return field("backend.pkcs11", "set exactly one of pin_file or pin_env");
            }
            if !(1..=256).contains(&p11.sessions) {
                return field("backend.pkcs11.sessions", "must be between 1 and 256");
            }
            if p11.health_check_interval_ms < 10 {
                return field(
                    "backend.pkcs11.health_check_interval_ms",
                    "must be at least 10",
                );
            }
        }
        self.pool.check()?;
        if self.pool.pkcs11.is_some() && self.backend.pkcs11.is_none() {
            return field("pool.pkcs11", "needs [backend.pkcs11]");
        }
        self.policy.check().map_err(Error::Config)?;
        for (i, rpc) in self.stellar_rpc.iter().enumerate() {
            rpc.check(&format!("stellar_rpc[{i}]."))
                .map_err(Error::Config)?;
            if self.stellar_rpc[..i]
                .iter()
                .any(|r| r.network == rpc.network)
            {
                return Err(Error::Config(format!(
                    "stellar_rpc[{i}].network: {:?} has an endpoint already",
                    rpc.network
                )));
            }
        }
        self.audit.check().map_err(Error::Config)?;
        let limits = &self.limits;
        for (name, value) in [
            (
                "limits.per_identity_per_second",
                limits.per_identity_per_second,
            ),
            ("limits.per_identity_burst", limits.per_identity_burst),
            ("limits.per_key_per_second", limits.per_key_per_second),
            ("limits.per_key_burst", limits.per_key_burst),
            ("limits.denials_per_second", limits.denials_per_second),
            ("limits.denial_burst", limits.denial_burst),
        ] {
            if value == 0 {
                return field(name, "must be positive");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, entry) in self.acl.iter().enumerate() {
            if !seen.insert(&entry.identity) {
                return field(
                    &format!("acl[{i}].identity"),
                    &format!("{:?} appears twice", entry.identity.as_str()),
                );
            }
            if let Some(bad) = entry.keys.iter().find(|p| !valid_pattern(p)) {
                return field(
                    &format!("acl[{i}].keys"),
                    &format!("{bad:?} is not a pattern over [A-Za-z0-9_-*?]"),
                );
            }
            if let Some(bad) = entry.blind_sign.iter().find(|p| !valid_pattern(p)) {
                return field(
                    &format!("acl[{i}].blind_sign"),
                    &format!("{bad:?} is not a pattern over [A-Za-z0-9_-*?]"),
                );
            }
            if (entry.create_keys || !entry.blind_sign.is_empty()) && entry.keys.is_empty() {
                return field(
                    &format!("acl[{i}].keys"),
                    "must name the keys that create_keys or blind_sign apply to",
                );
            }
        }
        Ok(())
    }
}

fn valid_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 64
        && pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '*' | '?'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [server]
        listen = "127.0.0.1:0"
        [tls]
        cert = "server.pem"
        key = "server.key"
        client_ca = "ca.pem"
        [backend.pkcs11]
        module = "/usr/lib/softhsm/libsofthsm2.so"
        token_label = "signerd"
        pin_env = "SIGNERD_PIN"
        [audit]
        dir = "audit"
        [[acl]]
        identity = "uri:spiffe://test/gateway"
        create_keys = true
        keys = ["wallet-*"]
    "#;

    fn error_of(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => panic!("config accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let config = Config::parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.server.max_message_bytes, 256 * 1024);
        assert_eq!(config.server.max_handshakes, 64);
        assert_eq!(config.server.handshake_timeout(), Duration::from_secs(3));
        assert!(config.tls.crls.is_empty());
        assert_eq!(config.backend.default, "pkcs11");
        assert!(config.acl[0].blind_sign.is_empty());
        assert!(
            config.policy.networks.is_empty(),
            "no network is allowed unless configured"
        );
        assert!(config.policy.require_source && config.policy.require_time_bounds);
        assert_eq!(config.policy.max_validity_secs, 300);
        assert!(!config.policy.allow_sequence_preconditions && !config.policy.allow_signer_changes);
        assert_eq!(config.policy.operations, crate::policy::DEFAULT_OPERATIONS);
        assert_eq!(config.audit.key_id, "signerd-audit");
        assert!(config.metrics.listen.ip().is_loopback());
        assert_eq!(config.server.max_concurrent_streams, 128);
        assert_eq!(config.server.request_timeout(), Duration::from_secs(60));
        assert_eq!(
            (config.limits.denials_per_second, config.limits.denial_burst),
            (10, 50)
        );
    }

    #[test]
    fn the_example_config_parses() {
        let config = Config::parse(include_str!("../../hsm-config/signerd.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.limits.denial_burst, 50);
        assert_eq!(config.server.request_timeout_ms, 60_000);
    }

    #[test]
    fn stream_timeout_and_denial_limits_are_checked() {
        for (line, name) in [
            (
                "max_concurrent_streams = 0",
                "server.max_concurrent_streams",
            ),
            ("request_timeout_ms = 0", "server.request_timeout_ms"),
        ] {
            let err = error_of(&MINIMAL.replace("[server]", &format!("[server]\n{line}")));
            assert!(err.contains(name), "{err}");
        }
        for line in ["denials_per_second = 0", "denial_burst = 0"] {
            let err = error_of(&format!("{MINIMAL}\n[limits]\n{line}\n"));
            assert!(
                err.contains(&format!("limits.{}", &line[..line.len() - 4])),
                "{err}"
            );
        }
    }

    #[test]
    fn the_example_config_is_valid() {
        let example = include_str!("../../hsm-config/signerd.toml");
        let config = Config::parse(example).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.policy.operations, crate::policy::DEFAULT_OPERATIONS);
    }

    /// The token-transfer-only key of the README, with its Stellar RPC endpoint.
    const TOKEN_TRANSFER_ONLY: &str = r#"
[[policy.keys]]
pattern = "payer-*"
networks = ["Test SDF Network ; September 2015"]
operations = ["invoke_host_function"]

[policy.keys.soroban]
max_expiration_ledgers = 60
allow_delegates = false

[[policy.keys.soroban.contracts]]
contract = "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC"
functions = ["transfer"]
token = true
max_amount = "1000000000"
destinations = ["GBZXN7PIRZGNMHGA7MUUUF4GWPY5AYPV6LY4UV2GL6VJGIQRXFDNMADI"]

[[stellar_rpc]]
network = "Test SDF Network ; September 2015"
url = "https://soroban-testnet.stellar.org"
max_staleness_secs = 30
"#;

    #[test]
    fn the_token_transfer_only_example_loads_and_its_errors_name_the_field() {
        let config = Config::parse(&format!("{MINIMAL}{TOKEN_TRANSFER_ONLY}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.stellar_rpc.len(), 1);
        for (from, to, field) in [
            (
                "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC",
                "GBZXN7PIRZGNMHGA7MUUUF4GWPY5AYPV6LY4UV2GL6VJGIQRXFDNMADI",
                "policy.keys[0].soroban.contracts[0].contract",
            ),
            (
                "max_amount = \"1000000000\"",
                "max_amount = \"1e9\"",
                "policy.keys[0].soroban.contracts[0].max_amount",
            ),
            (
                "https://soroban-testnet.stellar.org",
                "soroban-testnet.stellar.org",
                "stellar_rpc[0].url",
            ),
            (
                "max_expiration_ledgers = 60",
                "max_expiration_ledgers = 0",
                "max_expiration_ledgers",
            ),
        ] {
            let err = error_of(&format!(
                "{MINIMAL}{}",
                TOKEN_TRANSFER_ONLY.replace(from, to)
            ));
            assert!(err.contains(field), "{field}: {err}");
        }
        let twice = format!(
            "{MINIMAL}{TOKEN_TRANSFER_ONLY}\n[[stellar_rpc]]\nnetwork = \"Test SDF Network ; September 2015\"\nurl = \"http://127.0.0.1:8000\"\n"
        );
        assert!(error_of(&twice).contains("stellar_rpc[1].network"));
    }

    #[test]
    fn missing_audit_section_is_named() {
        let err = error_of(&MINIMAL.replace("[audit]\n        dir = \"audit\"", ""));
        assert!(err.contains("audit"), "{err}");
    }

    #[test]
    fn policy_errors_name_the_field() {
        let err = error_of(&format!("{MINIMAL}\n[policy]\nmax_validity_secs = 0\n"));
        assert!(err.contains("policy.max_validity_secs"), "{err}");
    }

    #[test]
    fn unknown_field_is_named() {
        let err = error_of(&MINIMAL.replace("[tls]", "[tls]\nciphers = \"all\""));
        assert!(err.contains("ciphers"), "{err}");
    }

    #[test]
    fn pin_source_must_be_exactly_one() {
        let err = error_of(&MINIMAL.replace("pin_env = \"SIGNERD_PIN\"", ""));
        assert!(
            err.contains("backend.pkcs11") && err.contains("pin_file"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_identity_is_named() {
        let dup = format!("{MINIMAL}\n[[acl]]\nidentity = \"uri:spiffe://test/gateway\"\n");
        assert!(error_of(&dup).contains("acl[1].identity"));
    }

    #[test]
    fn the_example_config_loads() {
        let example = include_str!("../../hsm-config/signerd.toml");
        let config = Config::parse(example).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.acl[0].identity.as_str(), "cn:gateway");
    }

    #[test]
    fn untyped_identity_is_refused_with_the_fix() {
        let err = error_of(&MINIMAL.replace("uri:spiffe://test/gateway", "gateway"));
        assert!(
            err.contains("acl.identity") && err.contains("\"cn:gateway\""),
            "{err}"
        );
        let err = error_of(&MINIMAL.replace("uri:spiffe://test/gateway", "email:ops@example"));
        assert!(err.contains("acl.identity"), "{err}");
        let err = error_of(&MINIMAL.replace("uri:spiffe://test/gateway", "cn:"));
        assert!(
            err.contains("acl.identity") && err.contains("empty"),
            "{err}"
        );
    }

    #[test]
    fn bad_pattern_is_named() {
        let err = error_of(&MINIMAL.replace("wallet-*", "wallet/*"));
        assert!(err.contains("acl[0].keys"), "{err}");
        let err = error_of(&MINIMAL.replace(
            "keys = [\"wallet-*\"]",
            "keys = [\"wallet-*\"]\nblind_sign = [\"ops/*\"]",
        ));
        assert!(err.contains("acl[0].blind_sign"), "{err}");
    }

    #[test]
    fn blind_sign_is_a_list_of_key_patterns_not_a_switch() {
        let err = error_of(&MINIMAL.replace(
            "keys = [\"wallet-*\"]",
            "keys = [\"wallet-*\"]\nblind_sign = true",
        ));
        assert!(err.contains("blind_sign"), "{err}");
    }

    #[test]
    fn gcp_kms_alone_can_be_the_default_backend() {
        let text = MINIMAL
            .replace(
                "[backend.pkcs11]\n        module = \"/usr/lib/softhsm/libsofthsm2.so\"\n        token_label = \"signerd\"\n        pin_env = \"SIGNERD_PIN\"",
                "[backend]\n        default = \"gcp-kms\"\n        [backend.gcp_kms]\n        key_ring = \"projects/p/locations/global/keyRings/signerd\"",
            );
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.backend.pkcs11.is_none());
        assert_eq!(config.backend.default, "gcp-kms");
    }

    #[test]
    fn gcp_kms_default_needs_its_table_and_its_errors_are_named() {
        let err = error_of(&format!("{MINIMAL}\n[backend]\ndefault = \"gcp-kms\"\n"));
        assert!(err.contains("backend.default"), "{err}");
        let err = error_of(&format!(
            "{MINIMAL}\n[backend.gcp_kms]\nkey_ring = \"projects/p/locations/l/keyRings/r\"\ncredentials = \"anonymous\"\n"
        ));
        assert!(err.contains("backend.gcp_kms.credentials"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let mut config = Config::parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        config.resolve_paths(Path::new("/etc/signerd"));
        assert_eq!(config.tls.cert, Path::new("/etc/signerd/server.pem"));
    }
}
