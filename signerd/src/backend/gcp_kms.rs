//! The Google Cloud KMS backend (`gcp-kms`), on the official `google-cloud-kms-v1` client.
//!
//! Each signerd key is a CryptoKey in one configured key ring: the key id is the CryptoKey id,
//! the purpose is `ASYMMETRIC_SIGN`, the algorithm `EC_SIGN_ED25519` and the protection level
//! `HSM` unless configured otherwise. signerd only ever uses version 1 of a key: a Stellar
//! account *is* its public key, so an Ed25519 key is never rotated.
//!
//! Public keys are read once (PEM SPKI, checked against `pem_crc32c`) and cached; at start the
//! whole ring is listed (paged) to fill the cache, so the signing path makes exactly one remote
//! call: `AsymmetricSign` with `data` = the 32-byte hash and its CRC32C. A response is refused,
//! and no signature leaves signerd, when KMS did not verify `data_crc32c`, when
//! `signature_crc32c` does not match the signature, when it names another key version, or when
//! the signature does not verify under the cached public key.
//!
//! Every call has a deadline (retries included); `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, HTTP
//! 429/503 and transport errors are retried with exponential backoff (the client crate's retry
//! loop), and a circuit breaker (failsafe) stops calling a KMS that keeps failing: while it is
//! open, RPCs answer `UNAVAILABLE` at once and health says `NOT_SERVING`; the health probe is
//! the trial call that closes it again. Quota errors (HTTP 429 / `RESOURCE_EXHAUSTED`) are
//! retried too, but once retries are spent they answer `RESOURCE_EXHAUSTED` and leave the
//! breaker alone: KMS is up, and a quota hit must not shut out every key for `breaker_open_ms`.
//!
//! An id KMS does not hold is remembered as unknown for `unknown_key_cache_ms`, and lookups of
//! ids in neither cache are rate-limited (`unknown_key_lookups_per_second`), so requests for
//! made-up ids cannot spend the quota that signing needs.
//!
//! The audit anchor ([`AuditAnchor`]) lives in labels of the audit key's CryptoKey
//! ([`ANCHOR_SEQ_LABEL`], [`ANCHOR_HASH_LABELS`]): label values are at most 63 characters of
//! `[a-z0-9_-]`, so the 64 hex digits of the hash are split into two labels of 32. It is read
//! with `GetCryptoKey` and written with `UpdateCryptoKey` (`update_mask = labels`, other labels
//! kept); a new audit key is created with the empty anchor in its labels, in the same call.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use failsafe::StateMachine;
use failsafe::backoff::Constant;
use failsafe::failure_policy::ConsecutiveFailures;
use futures::StreamExt;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::options::RequestOptionsBuilder;
use google_cloud_gax::retry_policy::{Aip194Strict, NeverRetry, RetryPolicyExt};
use google_cloud_gax::retry_throttler::CircuitBreaker as RetryBudget;
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::crypto_key::CryptoKeyPurpose;
use google_cloud_kms_v1::model::crypto_key_version::{
    CryptoKeyVersionAlgorithm, CryptoKeyVersionState,
};
use google_cloud_kms_v1::model::{CryptoKey, CryptoKeyVersionTemplate, KeyRing, ProtectionLevel};
use google_cloud_wkt::FieldMask;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use super::KeyBackend;
use crate::audit::anchor::AuditAnchor;
use crate::error::{Error, Result};
use crate::keys::{KeyId, KeyInfo, PublicKey};

const NAME: &str = "gcp-kms";

/// The longest CryptoKey id Cloud KMS accepts (`[a-zA-Z0-9_-]{1,63}`); signerd key ids may be
/// one longer, and such ids cannot live in this backend.
pub const MAX_CRYPTO_KEY_ID_LEN: usize = 63;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) }, followed by the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The label holding the anchored checkpoint's seq (decimal).
pub const ANCHOR_SEQ_LABEL: &str = "signerd-anchor-seq";

/// The labels holding the anchored checkpoint's hash: lowercase hex, first and second half (a
/// label value is at most 63 characters, the hash is 64 hex digits).
pub const ANCHOR_HASH_LABELS: [&str; 2] = ["signerd-anchor-hash-a", "signerd-anchor-hash-b"];

/// Keys listed per page at start.
const LIST_PAGE_SIZE: i32 = 500;

/// Unknown key ids remembered at most (a bound on memory, whatever ids callers make up).
const MAX_UNKNOWN_CACHED: usize = 10_000;

/// Public keys fetched at once while filling the cache at start.
const STARTUP_FETCH_CONCURRENCY: usize = 8;

/// `[backend.gcp_kms]`: one Cloud KMS key ring.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpKmsConfig {
    /// The key ring holding signerd's keys: `projects/P/locations/L/keyRings/R`.
    pub key_ring: KeyRingName,
    /// Create the key ring at start when it does not exist (needs `cloudkms.keyRings.create`).
    /// Off by default: in production the ring is made by whoever grants signerd its IAM roles.
    #[serde(default)]
    pub create_key_ring: bool,
    /// Protection level of new keys: `HSM` (default) or `SOFTWARE`.
    #[serde(default)]
    pub protection_level: KmsProtectionLevel,
    /// Endpoint override (`http://127.0.0.1:8080` for the fake KMS, a private endpoint in
    /// production). Default: the public Cloud KMS endpoint.
    pub endpoint: Option<String>,
    /// Where credentials come from: `environment` (default: Application Default Credentials,
    /// i.e. `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's config or the metadata server) or
    /// `anonymous` (no credentials; only with an `endpoint`, for the fake KMS in tests).
    #[serde(default)]
    pub credentials: KmsCredentials,
    /// Deadline of one KMS call, retries included.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Deadline of one attempt of a call.
    #[serde(default = "default_attempt_timeout_ms")]
    pub attempt_timeout_ms: u64,
    /// Attempts per call (1 = no retries). Only transient failures are retried.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; each further delay doubles, up to `retry_max_delay_ms` (with jitter).
    #[serde(default = "default_retry_initial_delay_ms")]
    pub retry_initial_delay_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_retry_max_delay_ms")]
    pub retry_max_delay_ms: u64,
    /// Consecutive failed calls (after their retries) that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long the breaker stays open before a trial call (the health probe or a request) is
    /// let through.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
    /// How long `CreateKey` waits for a new key's first version to become `ENABLED`.
    #[serde(default = "default_key_creation_timeout_ms")]
    pub key_creation_timeout_ms: u64,
    /// How often KMS is probed (`GetKeyRing`, no retries).
    #[serde(default = "default_health_check_interval_ms")]
    pub health_check_interval_ms: u64,
    /// How long "no such key" from KMS is remembered for a key id, so repeated requests for an
    /// unknown id do not each cost a KMS call. A key created by another signerd in that window
    /// is found once it passes.
    #[serde(default = "default_unknown_key_cache_ms")]
    pub unknown_key_cache_ms: u64,
    /// KMS lookups of key ids not in the cache, per second (also the burst). Beyond it a request
    /// for an unknown id is refused with `RESOURCE_EXHAUSTED` without calling KMS, so a caller
    /// cycling through made-up ids cannot spend signerd's KMS quota.
    #[serde(default = "default_unknown_key_lookups_per_second")]
    pub unknown_key_lookups_per_second: u32,
}

fn default_deadline_ms() -> u64 {
    10_000
}
fn default_attempt_timeout_ms() -> u64 {
    3_000
}
fn default_max_attempts() -> u32 {
    5
}
fn default_retry_initial_delay_ms() -> u64 {
    50
}
fn default_retry_max_delay_ms() -> u64 {
    2_000
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open_ms() -> u64 {
    5_000
}
fn default_key_creation_timeout_ms() -> u64 {
    60_000
}
fn default_health_check_interval_ms() -> u64 {
    5_000
}
fn default_unknown_key_cache_ms() -> u64 {
    5_000
}
fn default_unknown_key_lookups_per_second() -> u32 {
    10
}

impl GcpKmsConfig {
    /// Cross-field rules; errors name the field.
    pub fn check(&self) -> Result<()> {
        let field =
            |name: &str, why: &str| Err(Error::Config(format!("backend.gcp_kms.{name}: {why}")));
        if let Some(endpoint) = &self.endpoint {
            let plain = endpoint.starts_with("http://");
            if !plain && !endpoint.starts_with("https://") {
                return field("endpoint", "must start with https:// or http://");
            }
            // An OAuth token must never travel in clear text.
            if plain && self.credentials != KmsCredentials::Anonymous {
                return field(
                    "endpoint",
                    "plain http:// is only allowed with credentials = \"anonymous\"",
                );
            }
        } else if self.credentials == KmsCredentials::Anonymous {
            return field(
                "credentials",
                "\"anonymous\" needs an endpoint override (Cloud KMS refuses anonymous calls)",
            );
        }
        if self.deadline_ms == 0 {
            return field("deadline_ms", "must be positive");
        }
        if self.attempt_timeout_ms == 0 || self.attempt_timeout_ms > self.deadline_ms {
            return field("attempt_timeout_ms", "must be between 1 and deadline_ms");
        }
        if !(1..=20).contains(&self.max_attempts) {
            return field("max_attempts", "must be between 1 and 20");
        }
        if self.retry_initial_delay_ms == 0 {
            return field("retry_initial_delay_ms", "must be positive");
        }
        if self.retry_max_delay_ms < self.retry_initial_delay_ms {
            return field(
                "retry_max_delay_ms",
                "must be at least retry_initial_delay_ms",
            );
        }
        if self.breaker_failures == 0 {
            return field("breaker_failures", "must be positive");
        }
        if self.breaker_open_ms == 0 {
            return field("breaker_open_ms", "must be positive");
        }
        if self.key_creation_timeout_ms == 0 {
            return field("key_creation_timeout_ms", "must be positive");
        }
        if self.health_check_interval_ms < 10 {
            return field("health_check_interval_ms", "must be at least 10");
        }
        if self.unknown_key_cache_ms > 3_600_000 {
            return field("unknown_key_cache_ms", "must be at most 3600000 (one hour)");
        }
        if self.unknown_key_lookups_per_second == 0 {
            return field("unknown_key_lookups_per_second", "must be positive");
        }
        Ok(())
    }

    /// The probe interval.
    pub fn health_check_interval(&self) -> Duration {
        Duration::from_millis(self.health_check_interval_ms)
    }
}

/// A key ring resource name, `projects/P/locations/L/keyRings/R`, parsed at load.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct KeyRingName {
    full: String,
    /// `projects/P/locations/L`, the parent `CreateKeyRing` needs.
    location: String,
    /// `R`.
    id: String,
}

impl TryFrom<String> for KeyRingName {
    type Error = String;

    fn try_from(raw: String) -> std::result::Result<Self, String> {
        let bad = || {
            format!(
                "backend.gcp_kms.key_ring: {raw:?} is not projects/PROJECT/locations/LOCATION/keyRings/RING"
            )
        };
        let parts: Vec<&str> = raw.split('/').collect();
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        match parts.as_slice() {
            ["projects", project, "locations", location, "keyRings", ring]
                if [project, location, ring].iter().all(|s| segment_ok(s)) =>
            {
                Ok(KeyRingName {
                    location: format!("projects/{project}/locations/{location}"),
                    id: (*ring).to_owned(),
                    full: raw,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl KeyRingName {
    /// The full resource name.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    fn first_version(&self, id: &KeyId) -> String {
        format!("{}/cryptoKeys/{id}/cryptoKeyVersions/1", self.full)
    }

    fn crypto_key(&self, id: &KeyId) -> String {
        format!("{}/cryptoKeys/{id}", self.full)
    }
}

impl fmt::Display for KeyRingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Protection level of the keys signerd creates.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum KmsProtectionLevel {
    /// Keys live in Cloud HSM (FIPS 140-2 Level 3).
    #[default]
    #[serde(rename = "HSM")]
    Hsm,
    /// Software keys (cheaper; for development projects).
    #[serde(rename = "SOFTWARE")]
    Software,
}

/// Where KMS credentials come from.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KmsCredentials {
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user
    /// config, or the metadata server of the VM / GKE workload identity.
    #[default]
    Environment,
    /// No credentials at all: only for an endpoint override such as the fake KMS.
    Anonymous,
}

/// A key as cached: its version to sign with and its public half.
#[derive(Clone, Debug)]
struct CachedKey {
    version: String,
    public: PublicKey,
    verifier: VerifyingKey,
}

/// Why a KMS call did not produce a value.
#[derive(Debug)]
enum CallError {
    /// KMS could not be reached or kept failing transiently (after retries), or the breaker is
    /// open: the caller gets `UNAVAILABLE`.
    Unavailable(String),
    /// KMS is up but over quota (HTTP 429 / `RESOURCE_EXHAUSTED`, after retries): the caller
    /// gets `RESOURCE_EXHAUSTED`. Not a sign of an outage, so it does not count against the
    /// breaker: a quota hit must not turn into minutes of refusing every key.
    Throttled(String),
    /// KMS answered, and said no.
    Refused(google_cloud_gax::error::Error),
}

impl CallError {
    fn code(&self) -> Option<Code> {
        match self {
            CallError::Refused(e) => e.status().map(|s| s.code),
            CallError::Unavailable(_) | CallError::Throttled(_) => None,
        }
    }

    /// Turns a failure nobody handled into signerd's error (details stay in the log).
    fn into_error(self, what: &str) -> Error {
        match self {
            CallError::Unavailable(m) => Error::Unavailable(m),
            CallError::Throttled(m) => Error::ResourceExhausted(m),
            CallError::Refused(e) => {
                tracing::error!(error = %e, "gcp-kms {what} refused");
                Error::Backend(format!("gcp-kms {what}: {e}"))
            }
        }
    }
}

/// The circuit breaker: opens after `breaker_failures` consecutive failed calls, stays open
/// for `breaker_open_ms`, then lets one trial through (half-open).
type Breaker = StateMachine<ConsecutiveFailures<Constant>, ()>;

/// The Cloud KMS backend.
pub struct GcpKmsBackend {
    client: KeyManagementService,
    key_ring: KeyRingName,
    protection_level: ProtectionLevel,
    deadline: Duration,
    probe_timeout: Duration,
    key_creation_timeout: Duration,
    breaker: Breaker,
    keys: RwLock<BTreeMap<KeyId, CachedKey>>,
    /// Ids KMS said it does not hold, and until when that answer stands.
    unknown: Mutex<HashMap<KeyId, Instant>>,
    unknown_ttl: Duration,
    /// KMS lookups of ids in neither cache.
    unknown_lookups: DefaultDirectRateLimiter,
    /// The labels last read from or written to each audit key, so that storing an anchor keeps
    /// the operator's own labels without reading them first (labels an operator changes while
    /// signerd runs are overwritten by the next anchor update).
    audit_labels: Mutex<HashMap<KeyId, HashMap<String, String>>>,
    /// Anchors stored for audit keys that do not exist yet: `create_key` puts them in the new
    /// CryptoKey's labels, so a key never exists without its anchor.
    anchors_at_creation: Mutex<HashMap<KeyId, AuditAnchor>>,
}

impl GcpKmsBackend {
    /// Builds the client, checks the key ring exists (creating it when configured to) and
    /// fills the public key cache from a listing of the ring. Fails when KMS cannot be reached
    /// or refuses: signerd does not start half-configured.
    pub async fn connect(config: &GcpKmsConfig) -> Result<Self> {
        // The client's HTTP stack (reqwest with rustls, no bundled provider) and the credential
        // loaders use the process-wide rustls provider; signerd uses ring everywhere. An error
        // means a provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(config.retry_initial_delay_ms))
            .with_maximum_delay(Duration::from_millis(config.retry_max_delay_ms))
            .with_scaling(2.0)
            .build()
            .map_err(|e| Error::Config(format!("backend.gcp_kms.retry_*_delay_ms: {e}")))?;
        let deadline = Duration::from_millis(config.deadline_ms);
        let retry = Aip194Strict
            .continue_on_too_many_requests()
            .with_attempt_limit(config.max_attempts)
            .with_time_limit(deadline);
        let mut builder = KeyManagementService::builder()
            .with_retry_policy(retry)
            .with_backoff_policy(backoff)
            .with_attempt_timeout(Duration::from_millis(config.attempt_timeout_ms))
            // The crate's default throttler drops retries at random while failures dominate;
            // failsafe is the breaker here, so retries only get a fixed budget: every retried
            // failure costs a token, every success earns one back.
            .with_retry_throttler(RetryBudget::clamp(1_000, 0, 1));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        builder = match config.credentials {
            KmsCredentials::Anonymous => builder.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            ),
            KmsCredentials::Environment => builder.with_credentials(
                google_cloud_auth::credentials::Builder::default()
                    .build()
                    .map_err(|e| {
                        Error::Config(format!(
                            "backend.gcp_kms.credentials: no credentials in the environment: {e}"
                        ))
                    })?,
            ),
        };
        let client = builder
            .build()
            .await
            .map_err(|e| Error::Config(format!("backend.gcp_kms: cannot build the client: {e}")))?;

        let backend = GcpKmsBackend {
            client,
            key_ring: config.key_ring.clone(),
            protection_level: match config.protection_level {
                KmsProtectionLevel::Hsm => ProtectionLevel::Hsm,
                KmsProtectionLevel::Software => ProtectionLevel::Software,
            },
            deadline,
            probe_timeout: Duration::from_millis(config.attempt_timeout_ms),
            key_creation_timeout: Duration::from_millis(config.key_creation_timeout_ms),
            breaker: failsafe::Config::new()
                .failure_policy(failsafe::failure_policy::consecutive_failures(
                    config.breaker_failures,
                    failsafe::backoff::constant(Duration::from_millis(config.breaker_open_ms)),
                ))
                .build(),
            keys: RwLock::new(BTreeMap::new()),
            unknown: Mutex::new(HashMap::new()),
            unknown_ttl: Duration::from_millis(config.unknown_key_cache_ms),
            unknown_lookups: RateLimiter::direct(Quota::per_second(
                NonZeroU32::new(config.unknown_key_lookups_per_second).unwrap_or(NonZeroU32::MIN),
            )),
            audit_labels: Mutex::new(HashMap::new()),
            anchors_at_creation: Mutex::new(HashMap::new()),
        };
        backend.ensure_key_ring(config.create_key_ring).await?;
        backend.fill_cache().await?;
        Ok(backend)
    }

    /// Runs one KMS call under the deadline and the breaker, and sorts its failure into
    /// "unavailable" (counts against the breaker) or "refused" (KMS is up and said no).
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = google_cloud_kms_v1::Result<T>>,
    ) -> std::result::Result<T, CallError> {
        if !self.breaker.is_call_permitted() {
            return Err(CallError::Unavailable(
                "gcp-kms unavailable (circuit open)".into(),
            ));
        }
        match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(value)) => {
                self.breaker.on_success();
                Ok(value)
            }
            Ok(Err(e)) if is_quota(&e) => {
                // KMS answered: it is reachable, only out of quota for now.
                self.breaker.on_success();
                tracing::warn!(error = %e, "gcp-kms {what} over quota");
                Err(CallError::Throttled(
                    "gcp-kms quota exhausted; retry later".into(),
                ))
            }
            Ok(Err(e)) if is_transient(&e) => {
                self.breaker.on_error();
                tracing::warn!(error = %e, "gcp-kms {what} failed");
                Err(CallError::Unavailable("gcp-kms unavailable".into()))
            }
            Ok(Err(e)) => {
                // KMS answered: it is reachable, whatever it said.
                self.breaker.on_success();
                Err(CallError::Refused(e))
            }
            Err(_) => {
                self.breaker.on_error();
                tracing::warn!(deadline = ?self.deadline, "gcp-kms {what} missed its deadline");
                Err(CallError::Unavailable(
                    "gcp-kms unavailable (deadline exceeded)".into(),
                ))
            }
        }
    }

    async fn ensure_key_ring(&self, create: bool) -> Result<()> {
        let get = self
            .client
            .get_key_ring()
            .set_name(self.key_ring.as_str())
            .send();
        match self.call("get key ring", get).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some(Code::NotFound) && create => {}
            Err(e) if e.code() == Some(Code::NotFound) => {
                return Err(Error::Config(format!(
                    "backend.gcp_kms.key_ring: {} does not exist (create it, or set create_key_ring = true)",
                    self.key_ring
                )));
            }
            Err(e) => return Err(e.into_error("get key ring")),
        }
        let create = self
            .client
            .create_key_ring()
            .set_parent(&self.key_ring.location)
            .set_key_ring_id(&self.key_ring.id)
            .set_key_ring(KeyRing::new())
            .with_idempotency(true)
            .send();
        match self.call("create key ring", create).await {
            Ok(_) => {
                tracing::info!(key_ring = %self.key_ring, "gcp-kms key ring created");
                Ok(())
            }
            // Another signerd made it in between.
            Err(e) if e.code() == Some(Code::AlreadyExists) => Ok(()),
            Err(e) => Err(e.into_error("create key ring")),
        }
    }

    /// Lists every CryptoKey of the ring (all pages) and caches the public keys of those that
    /// are Ed25519 signing keys under a valid signerd key id.
    async fn fill_cache(&self) -> Result<()> {
        let mut ids = Vec::new();
        let mut page_token = String::new();
        loop {
            let list = self
                .client
                .list_crypto_keys()
                .set_parent(self.key_ring.as_str())
                .set_page_size(LIST_PAGE_SIZE)
                .set_page_token(page_token.clone())
                .send();
            let page = self
                .call("list keys", list)
                .await
                .map_err(|e| e.into_error("list keys"))?;
            for key in page.crypto_keys {
                if let Some(id) = self.signing_key_id(&key) {
                    ids.push(id);
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let fetched: Vec<(KeyId, Result<Option<CachedKey>>)> = futures::stream::iter(ids)
            .map(|id| async move {
                let key = self.fetch_public_key(&id).await;
                (id, key)
            })
            .buffer_unordered(STARTUP_FETCH_CONCURRENCY)
            .collect()
            .await;
        let mut cache = write(&self.keys);
        for (id, key) in fetched {
            match key? {
                Some(key) => {
                    cache.insert(id, key);
                }
                None => {
                    tracing::warn!(key_id = %id, "gcp-kms key has no enabled first version; skipped")
                }
            }
        }
        tracing::info!(keys = cache.len(), key_ring = %self.key_ring, "gcp-kms key ring loaded");
        Ok(())
    }

    /// The signerd key id of a listed CryptoKey, when it is one of ours.
    fn signing_key_id(&self, key: &CryptoKey) -> Option<KeyId> {
        let id = key.name.rsplit('/').next()?;
        let ours = key.purpose == CryptoKeyPurpose::AsymmetricSign
            && key
                .version_template
                .as_ref()
                .is_some_and(|t| t.algorithm == CryptoKeyVersionAlgorithm::EcSignEd25519);
        match KeyId::parse(id) {
            Ok(id) if ours => Some(id),
            _ => {
                tracing::debug!(name = %key.name, "gcp-kms key is not an Ed25519 signing key with a signerd id; ignored");
                None
            }
        }
    }

    /// Reads version 1's public key. `None` when the key or its version does not exist or is
    /// not enabled (yet).
    async fn fetch_public_key(&self, id: &KeyId) -> Result<Option<CachedKey>> {
        let version = self.key_ring.first_version(id);
        let get = self.client.get_public_key().set_name(&version).send();
        let response = match self.call("get public key", get).await {
            Ok(r) => r,
            Err(e) if matches!(e.code(), Some(Code::NotFound | Code::FailedPrecondition)) => {
                return Ok(None);
            }
            Err(e) => return Err(e.into_error("get public key")),
        };
        let integrity = |why: &str| {
            tracing::error!(key_id = %id, version = %version, "gcp-kms public key refused: {why}");
            Err(Error::Backend(format!("gcp-kms public key of {id}: {why}")))
        };
        if response.name != version {
            return integrity(&format!("response names {:?}", response.name));
        }
        if response.algorithm != CryptoKeyVersionAlgorithm::EcSignEd25519 {
            return integrity(&format!("algorithm is {:?}", response.algorithm));
        }
        if response.pem_crc32c != Some(i64::from(crc32c::crc32c(response.pem.as_bytes()))) {
            return integrity("pem_crc32c does not match the PEM");
        }
        let Some(public) = parse_ed25519_pem(&response.pem) else {
            return integrity("not an Ed25519 SPKI PEM");
        };
        let Ok(verifier) = VerifyingKey::from_bytes(&public.0) else {
            return integrity("not a valid Ed25519 point");
        };
        Ok(Some(CachedKey {
            version,
            public,
            verifier,
        }))
    }

    /// Polls version 1 until it is `ENABLED`, for at most `key_creation_timeout`.
    async fn wait_until_enabled(&self, id: &KeyId) -> Result<()> {
        let version = self.key_ring.first_version(id);
        let give_up = tokio::time::Instant::now() + self.key_creation_timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            let get = self
                .client
                .get_crypto_key_version()
                .set_name(&version)
                .send();
            let state = self
                .call("get key version", get)
                .await
                .map_err(|e| e.into_error("get key version"))?
                .state;
            match state {
                CryptoKeyVersionState::Enabled => return Ok(()),
                CryptoKeyVersionState::PendingGeneration => {}
                other => {
                    tracing::error!(key_id = %id, state = ?other, "gcp-kms key version will not become enabled");
                    return Err(Error::Backend(format!(
                        "gcp-kms key {id}: first version is {other:?}"
                    )));
                }
            }
            if tokio::time::Instant::now() + delay > give_up {
                return Err(Error::Unavailable(format!(
                    "gcp-kms key {id} not enabled after {:?}",
                    self.key_creation_timeout
                )));
            }
            // Polling a remote state machine (not test synchronisation): KMS offers no watch.
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// The labels of the CryptoKey `id` (remembered for the next anchor update); `None` when
    /// the key does not exist.
    async fn read_labels(&self, id: &KeyId) -> Result<Option<HashMap<String, String>>> {
        let get = self
            .client
            .get_crypto_key()
            .set_name(self.key_ring.crypto_key(id))
            .send();
        let key = match self.call("get key", get).await {
            Ok(key) => key,
            Err(e) if e.code() == Some(Code::NotFound) => return Ok(None),
            Err(e) => return Err(e.into_error("get key")),
        };
        lock(&self.audit_labels).insert(id.clone(), key.labels.clone());
        Ok(Some(key.labels))
    }

    fn cached(&self, id: &KeyId) -> Option<CachedKey> {
        read(&self.keys).get(id).cloned()
    }

    /// The key from the cache, else from KMS (another signerd may have created it).
    ///
    /// A miss in KMS is remembered for `unknown_key_cache_ms`, and KMS lookups of ids in neither
    /// cache are rate-limited (`RESOURCE_EXHAUSTED` beyond the rate): a caller asking for
    /// made-up ids must not spend the KMS quota that signing needs.
    async fn lookup(&self, id: &KeyId) -> Result<Option<CachedKey>> {
        if let Some(key) = self.cached(id) {
            return Ok(Some(key));
        }
        if id.as_str().len() > MAX_CRYPTO_KEY_ID_LEN || self.known_unknown(id) {
            return Ok(None);
        }
        if self.unknown_lookups.check().is_err() {
            return Err(Error::ResourceExhausted(
                "gcp-kms: too many lookups of unknown key ids; retry later".into(),
            ));
        }
        let key = self.fetch_public_key(id).await?;
        match &key {
            Some(key) => {
                write(&self.keys).insert(id.clone(), key.clone());
            }
            None => self.remember_unknown(id),
        }
        Ok(key)
    }

    /// Whether KMS recently said it does not hold `id`.
    fn known_unknown(&self, id: &KeyId) -> bool {
        let mut unknown = lock(&self.unknown);
        match unknown.get(id) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                unknown.remove(id);
                false
            }
            None => false,
        }
    }

    fn remember_unknown(&self, id: &KeyId) {
        if self.unknown_ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut unknown = lock(&self.unknown);
        if unknown.len() >= MAX_UNKNOWN_CACHED {
            unknown.retain(|_, until| *until > now);
        }
        // Still full of live entries: the lookup rate limit bounds the cost instead.
        if unknown.len() < MAX_UNKNOWN_CACHED {
            unknown.insert(id.clone(), now + self.unknown_ttl);
        }
    }
}

#[async_trait]
impl KeyBackend for GcpKmsBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_key(&self, id: &KeyId) -> Result<(KeyInfo, bool)> {
        if let Some(key) = self.cached(id) {
            return Ok((key_info(id, &key), false));
        }
        if id.as_str().len() > MAX_CRYPTO_KEY_ID_LEN {
            return Err(Error::InvalidArgument(format!(
                "gcp-kms key ids are at most {MAX_CRYPTO_KEY_ID_LEN} characters"
            )));
        }
        let template = CryptoKeyVersionTemplate::new()
            .set_algorithm(CryptoKeyVersionAlgorithm::EcSignEd25519)
            .set_protection_level(self.protection_level.clone());
        let labels = lock(&self.anchors_at_creation)
            .get(id)
            .map(anchor_labels)
            .unwrap_or_default();
        let create = self
            .client
            .create_crypto_key()
            .set_parent(self.key_ring.as_str())
            .set_crypto_key_id(id.as_str())
            .set_crypto_key(
                CryptoKey::new()
                    .set_purpose(CryptoKeyPurpose::AsymmetricSign)
                    .set_version_template(template)
                    .set_labels(labels.clone()),
            )
            // A retry after a lost response finds ALREADY_EXISTS, handled below.
            .with_idempotency(true)
            .send();
        let created = match self.call("create key", create).await {
            Ok(key) => {
                tracing::info!(key_id = %id, name = %key.name, "gcp-kms key created");
                true
            }
            Err(e) if e.code() == Some(Code::AlreadyExists) => false,
            Err(e) => return Err(e.into_error("create key")),
        };
        self.wait_until_enabled(id).await?;
        let key = self.fetch_public_key(id).await?.ok_or_else(|| {
            Error::Backend(format!("gcp-kms key {id}: no public key once enabled"))
        })?;
        write(&self.keys).insert(id.clone(), key.clone());
        lock(&self.unknown).remove(id);
        if lock(&self.anchors_at_creation).remove(id).is_some() && created {
            lock(&self.audit_labels).insert(id.clone(), labels);
        }
        tracing::info!(key_id = %id, created, public_key = %key.public.account_id(), "gcp-kms key ready");
        Ok((key_info(id, &key), created))
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<KeyInfo>> {
        Ok(self.lookup(id).await?.map(|key| key_info(id, &key)))
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let cache = read(&self.keys);
        Ok(cache.iter().map(|(id, key)| key_info(id, key)).collect())
    }

    async fn sign(&self, id: &KeyId, hash: &[u8; 32]) -> Result<[u8; 64]> {
        let key = self
            .lookup(id)
            .await?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        let sign = self
            .client
            .asymmetric_sign()
            .set_name(&key.version)
            .set_data(hash.to_vec())
            .set_data_crc32c(i64::from(crc32c::crc32c(hash)))
            // Signing has no side effect and Ed25519 is deterministic: safe to repeat.
            .with_idempotency(true)
            .send();
        let response = self
            .call("sign", sign)
            .await
            .map_err(|e| e.into_error("sign"))?;
        check_signature(&key, hash, &response).map_err(|why| {
            tracing::error!(key_id = %id, version = %key.version, "gcp-kms signature refused: {why}");
            Error::Backend(format!("gcp-kms signature refused: {why}"))
        })
    }

    fn holds_audit_anchor(&self) -> bool {
        true
    }

    async fn audit_anchor(&self, audit_key: &KeyId) -> Result<Option<AuditAnchor>> {
        let Some(labels) = self.read_labels(audit_key).await? else {
            return Ok(None);
        };
        anchor_of_labels(&labels).map_err(|why| {
            Error::Backend(format!(
                "gcp-kms audit anchor in the labels of {audit_key}: {why}"
            ))
        })
    }

    /// For a key that does not exist yet, the anchor waits for `create_key`, which creates the
    /// key with it. Otherwise one `UpdateCryptoKey` replaces the anchor labels and keeps the
    /// others. No compare-and-swap: KMS offers none on labels, and one audit key has one
    /// signerd writing it.
    async fn store_audit_anchor(&self, audit_key: &KeyId, anchor: &AuditAnchor) -> Result<()> {
        let known = lock(&self.audit_labels).get(audit_key).cloned();
        let mut labels = match known {
            Some(labels) => labels,
            None => match self.read_labels(audit_key).await? {
                Some(labels) => labels,
                None => {
                    lock(&self.anchors_at_creation).insert(audit_key.clone(), *anchor);
                    return Ok(());
                }
            },
        };
        labels.extend(anchor_labels(anchor));
        let update = self
            .client
            .update_crypto_key()
            .set_crypto_key(
                CryptoKey::new()
                    .set_name(self.key_ring.crypto_key(audit_key))
                    .set_labels(labels.clone()),
            )
            .set_update_mask(FieldMask::default().set_paths(["labels"]))
            // Writing the same labels twice leaves the same labels.
            .with_idempotency(true)
            .send();
        let updated = self
            .call("update audit anchor", update)
            .await
            .map_err(|e| e.into_error("update audit anchor"))?;
        lock(&self.audit_labels).insert(audit_key.clone(), updated.labels);
        Ok(())
    }

    async fn shutdown(&self) {
        // Nothing to release: HTTP connections close with the client, and no thread runs inside
        // a native library.
    }

    async fn check_health(&self) -> bool {
        let probe = self
            .client
            .get_key_ring()
            .set_name(self.key_ring.as_str())
            .with_retry_policy(NeverRetry)
            .with_attempt_timeout(self.probe_timeout)
            .send();
        match self.call("health probe", probe).await {
            Ok(_) => true,
            Err(CallError::Unavailable(m)) => {
                tracing::warn!(reason = %m, "gcp-kms unavailable");
                false
            }
            // Reachable; requests get RESOURCE_EXHAUSTED until the quota refills.
            Err(CallError::Throttled(m)) => {
                tracing::warn!(reason = %m, "gcp-kms over quota");
                true
            }
            // KMS answered (e.g. the ring was deleted, or IAM changed): reachable, but signerd
            // cannot work with it.
            Err(CallError::Refused(e)) => {
                tracing::error!(error = %e, "gcp-kms health probe refused");
                false
            }
        }
    }
}

/// The integrity checks on a sign response; the signature is returned only if all pass.
fn check_signature(
    key: &CachedKey,
    hash: &[u8; 32],
    response: &google_cloud_kms_v1::model::AsymmetricSignResponse,
) -> std::result::Result<[u8; 64], String> {
    if response.name != key.version {
        return Err(format!(
            "response is for {:?}, not {:?}",
            response.name, key.version
        ));
    }
    if !response.verified_data_crc32c {
        return Err("kms did not verify data_crc32c".into());
    }
    if response.signature_crc32c != Some(i64::from(crc32c::crc32c(&response.signature))) {
        return Err("signature_crc32c does not match the signature".into());
    }
    let signature: [u8; 64] = response
        .signature
        .as_ref()
        .try_into()
        .map_err(|_| format!("signature is {} bytes", response.signature.len()))?;
    key.verifier
        .verify_strict(hash, &Signature::from_bytes(&signature))
        .map_err(|_| "signature does not verify under the key's public key".to_owned())?;
    Ok(signature)
}

/// The anchor as CryptoKey labels.
pub fn anchor_labels(anchor: &AuditAnchor) -> HashMap<String, String> {
    let hash = hex::encode(anchor.hash);
    let (first, second) = hash.split_at(32);
    HashMap::from([
        (ANCHOR_SEQ_LABEL.to_owned(), anchor.seq.to_string()),
        (ANCHOR_HASH_LABELS[0].to_owned(), first.to_owned()),
        (ANCHOR_HASH_LABELS[1].to_owned(), second.to_owned()),
    ])
}

/// Reads [`anchor_labels`] back: `None` when none of them is there (a key from before
/// anchors), an error when they are there but incomplete or malformed.
pub fn anchor_of_labels(
    labels: &HashMap<String, String>,
) -> std::result::Result<Option<AuditAnchor>, String> {
    let seq = labels.get(ANCHOR_SEQ_LABEL);
    let halves = ANCHOR_HASH_LABELS.map(|name| labels.get(name));
    if seq.is_none() && halves.iter().all(Option::is_none) {
        return Ok(None);
    }
    let (Some(seq), [Some(first), Some(second)]) = (seq, halves) else {
        return Err(format!(
            "{ANCHOR_SEQ_LABEL} and {} need each other",
            ANCHOR_HASH_LABELS.join(" and ")
        ));
    };
    let seq = match seq.parse::<u64>() {
        // Only the canonical form ("+7" and "07" parse too).
        Ok(parsed) if parsed.to_string() == *seq => parsed,
        _ => return Err(format!("{ANCHOR_SEQ_LABEL} is {seq:?}, not a decimal seq")),
    };
    let hex_hash = [first.as_str(), second.as_str()].concat();
    let Some(hash) = hex::decode(&hex_hash)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
    else {
        return Err(format!(
            "the hash labels hold {hex_hash:?}, not 64 hex digits"
        ));
    };
    Ok(Some(AuditAnchor { seq, hash }))
}

/// Quota errors: KMS is up and refuses more calls for now (HTTP 429, `RESOURCE_EXHAUSTED`),
/// also when the retry loop gave up on one (its error then wraps the last answer).
fn is_quota(e: &google_cloud_gax::error::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if let Some(kms) = error.downcast_ref::<google_cloud_gax::error::Error>()
            && (kms
                .status()
                .is_some_and(|s| s.code == Code::ResourceExhausted)
                || kms.http_status_code() == Some(429))
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Errors that mean "KMS not reachable or overloaded right now" (after the crate's retries).
fn is_transient(e: &google_cloud_gax::error::Error) -> bool {
    let transient_code = e.status().is_some_and(|s| {
        matches!(
            s.code,
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
        )
    });
    let transient_http = e
        .http_status_code()
        .is_some_and(|c| matches!(c, 429 | 502 | 503 | 504));
    transient_code
        || transient_http
        || e.is_timeout()
        || e.is_connect()
        || e.is_io()
        || e.is_exhausted()
        || e.is_transport()
        || e.is_authentication()
}

/// Reads an Ed25519 public key from a PEM `PUBLIC KEY` block (SPKI, RFC 8410).
pub fn parse_ed25519_pem(pem: &str) -> Option<PublicKey> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")?
        .strip_suffix("-----END PUBLIC KEY-----")?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let raw = der.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    Some(PublicKey(raw.try_into().ok()?))
}

fn key_info(id: &KeyId, key: &CachedKey) -> KeyInfo {
    KeyInfo {
        id: id.clone(),
        public_key: key.public,
        backend: NAME,
    }
}

// Poisoning only records that another thread panicked while holding the lock; the cache stays
// consistent (entries are inserted whole), so serving continues.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> std::result::Result<GcpKmsConfig, String> {
        let text = format!("key_ring = \"projects/p/locations/global/keyRings/signerd\"\n{extra}");
        let config: GcpKmsConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        config.check().map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn error_of(extra: &str) -> String {
        match config(extra) {
            Ok(_) => panic!("config accepted: {extra}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_are_hsm_environment_credentials_and_bounded_calls() {
        let c = config("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.protection_level, KmsProtectionLevel::Hsm);
        assert_eq!(c.credentials, KmsCredentials::Environment);
        assert!(!c.create_key_ring);
        assert!(c.attempt_timeout_ms <= c.deadline_ms);
        assert_eq!(c.key_ring.location, "projects/p/locations/global");
        assert_eq!(c.key_ring.id, "signerd");
    }

    #[test]
    fn key_ring_must_be_a_full_resource_name() {
        for bad in [
            "signerd",
            "projects/p/locations/global/keyRings/",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k",
            "projects/p/locations/g/keyRing/r",
            "projects/p/locations/g l/keyRings/r",
        ] {
            let err = match toml::from_str::<GcpKmsConfig>(&format!("key_ring = {bad:?}")) {
                Ok(_) => panic!("{bad:?} accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("backend.gcp_kms.key_ring"), "{err}");
        }
    }

    #[test]
    fn anonymous_credentials_need_an_endpoint() {
        let err = error_of("credentials = \"anonymous\"");
        assert!(err.contains("backend.gcp_kms.credentials"), "{err}");
    }

    #[test]
    fn plain_http_only_without_real_credentials() {
        let err = error_of("endpoint = \"http://127.0.0.1:9\"");
        assert!(err.contains("backend.gcp_kms.endpoint"), "{err}");
        config("endpoint = \"http://127.0.0.1:9\"\ncredentials = \"anonymous\"")
            .unwrap_or_else(|e| panic!("{e}"));
        let err = error_of("endpoint = \"ftp://kms\"");
        assert!(err.contains("backend.gcp_kms.endpoint"), "{err}");
    }

    #[test]
    fn bad_numbers_are_named() {
        for (extra, field) in [
            ("deadline_ms = 0", "deadline_ms"),
            ("attempt_timeout_ms = 20000", "attempt_timeout_ms"),
            ("max_attempts = 0", "max_attempts"),
            ("retry_initial_delay_ms = 0", "retry_initial_delay_ms"),
            (
                "retry_initial_delay_ms = 500\nretry_max_delay_ms = 100",
                "retry_max_delay_ms",
            ),
            ("breaker_failures = 0", "breaker_failures"),
            ("breaker_open_ms = 0", "breaker_open_ms"),
            ("key_creation_timeout_ms = 0", "key_creation_timeout_ms"),
            ("health_check_interval_ms = 1", "health_check_interval_ms"),
            ("unknown_key_cache_ms = 3600001", "unknown_key_cache_ms"),
            (
                "unknown_key_lookups_per_second = 0",
                "unknown_key_lookups_per_second",
            ),
        ] {
            let err = error_of(extra);
            assert!(
                err.contains(&format!("backend.gcp_kms.{field}")),
                "{extra}: {err}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_levels_are_refused() {
        let err = match toml::from_str::<GcpKmsConfig>(
            "key_ring = \"projects/p/locations/l/keyRings/r\"\nregion = \"x\"",
        ) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("region"), "{err}");
        assert!(
            toml::from_str::<GcpKmsConfig>(
                "key_ring = \"projects/p/locations/l/keyRings/r\"\nprotection_level = \"EXTERNAL\""
            )
            .is_err()
        );
    }

    #[test]
    fn quota_errors_are_recognised_also_when_retries_gave_up_on_them() {
        use google_cloud_gax::error::Error as KmsError;
        use google_cloud_gax::error::rpc::Status;
        let answer = |code| KmsError::service(Status::default().set_code(code));
        assert!(is_quota(&answer(Code::ResourceExhausted)));
        assert!(is_quota(&KmsError::exhausted(answer(
            Code::ResourceExhausted
        ))));
        assert!(!is_quota(&answer(Code::Unavailable)));
        assert!(!is_quota(&KmsError::exhausted(answer(Code::Unavailable))));
    }

    const RFC8410_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

    #[test]
    fn the_anchor_round_trips_through_labels_that_kms_accepts() {
        let anchor = AuditAnchor {
            seq: 1234,
            hash: std::array::from_fn(|i| (i * 7) as u8),
        };
        let labels = anchor_labels(&anchor);
        for (key, value) in &labels {
            assert!(key.len() <= 63 && value.len() <= 63, "{key}={value}");
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{value}"
            );
        }
        assert_eq!(anchor_of_labels(&labels), Ok(Some(anchor)));
        let mut with_others = labels.clone();
        with_others.insert("team".into(), "payments".into());
        assert_eq!(anchor_of_labels(&with_others), Ok(Some(anchor)));
        assert_eq!(anchor_of_labels(&HashMap::new()), Ok(None));
    }

    #[test]
    fn partial_or_malformed_anchor_labels_are_refused() {
        let labels = anchor_labels(&AuditAnchor {
            seq: 5,
            hash: [0xab; 32],
        });
        for missing in [
            ANCHOR_SEQ_LABEL,
            ANCHOR_HASH_LABELS[0],
            ANCHOR_HASH_LABELS[1],
        ] {
            let mut cut = labels.clone();
            cut.remove(missing);
            assert!(anchor_of_labels(&cut).is_err(), "without {missing}");
        }
        for (label, value) in [
            (ANCHOR_SEQ_LABEL, "07"),
            (ANCHOR_SEQ_LABEL, "+7"),
            (ANCHOR_SEQ_LABEL, "seven"),
            (ANCHOR_HASH_LABELS[0], "ab"),
            (ANCHOR_HASH_LABELS[1], "zz"),
        ] {
            let mut bad = labels.clone();
            bad.insert(label.into(), value.into());
            assert!(anchor_of_labels(&bad).is_err(), "{label}={value}");
        }
    }

    #[test]
    fn pem_spki_yields_the_raw_key() {
        // The example key of RFC 8410, section 10.1.
        let key = parse_ed25519_pem(RFC8410_PEM).unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(
            hex::encode(key.0),
            "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
        );
    }

    #[test]
    fn pem_of_another_algorithm_or_length_is_refused() {
        // An X25519 SPKI (OID 1.3.101.110) of the same length.
        let x25519 = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VuAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----";
        assert_eq!(parse_ed25519_pem(x25519), None);
        let truncated = RFC8410_PEM.replace("ZuE=", "");
        assert_eq!(parse_ed25519_pem(&truncated), None);
        assert_eq!(parse_ed25519_pem("MCowBQYDK2VwAyEA"), None);
    }

    fn cached_key() -> (ed25519_dalek::SigningKey, CachedKey) {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let verifier = signing.verifying_key();
        (
            signing,
            CachedKey {
                version: "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
                    .into(),
                public: PublicKey(verifier.to_bytes()),
                verifier,
            },
        )
    }

    fn good_response(
        signing: &ed25519_dalek::SigningKey,
        key: &CachedKey,
        hash: &[u8; 32],
    ) -> google_cloud_kms_v1::model::AsymmetricSignResponse {
        use ed25519_dalek::Signer;
        let signature = signing.sign(hash).to_bytes();
        google_cloud_kms_v1::model::AsymmetricSignResponse::new()
            .set_name(key.version.clone())
            .set_signature(signature.to_vec())
            .set_signature_crc32c(i64::from(crc32c::crc32c(&signature)))
            .set_verified_data_crc32c(true)
    }

    #[test]
    fn a_sound_response_passes_every_check() {
        let (signing, key) = cached_key();
        let hash = [9u8; 32];
        let response = good_response(&signing, &key, &hash);
        assert!(check_signature(&key, &hash, &response).is_ok());
    }

    #[test]
    fn each_corruption_is_refused() {
        let (signing, key) = cached_key();
        let hash = [9u8; 32];
        let good = good_response(&signing, &key, &hash);
        let other_name = good.clone().set_name(key.version.replace("/1", "/2"));
        let unverified = good.clone().set_verified_data_crc32c(false);
        let bad_crc = good
            .clone()
            .set_signature_crc32c(good.signature_crc32c.unwrap_or_default() ^ 1);
        let mut flipped = good.signature.to_vec();
        flipped[0] ^= 1;
        // A consistent CRC over a wrong signature: only the local verification catches it.
        let wrong_signature = good
            .clone()
            .set_signature_crc32c(i64::from(crc32c::crc32c(&flipped)))
            .set_signature(flipped);
        let short = good
            .clone()
            .set_signature(vec![1u8; 63])
            .set_signature_crc32c(i64::from(crc32c::crc32c(&[1u8; 63])));
        for (what, response) in [
            ("name", other_name),
            ("verified", unverified),
            ("crc", bad_crc),
            ("signature", wrong_signature),
            ("length", short),
        ] {
            assert!(
                check_signature(&key, &hash, &response).is_err(),
                "{what} corruption accepted"
            );
        }
        // A signature over another hash does not pass either.
        assert!(check_signature(&key, &[8u8; 32], &good).is_err());
    }
}
