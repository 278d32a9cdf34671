//! The key pool: Ed25519 keys generated ahead of time in the backend, so that `CreateKey` binds
//! an existing key to the caller's id instead of waiting for the HSM to generate one.
//!
//! # Namespace
//!
//! A pool key lives in the backend under an id starting with [`POOL_ID_PREFIX`] (`pool:` and
//! 32 random hex digits). `:` is outside the [`KeyId`](crate::keys::KeyId) alphabet, so no caller can name a pool
//! key: it is not in the key index, not listed by `ListKeys`, and `SignTransaction`/`SignHash`
//! cannot reach it. A pool key is generated with exactly the template of any other key
//! (sensitive, never extractable, not copyable, not destroyable, modifiable so that binding
//! can set its id).
//!
//! # Binding, and what a crash leaves (PKCS#11)
//!
//! `CreateKey(X)` holds the per-id creation lock (see [`crate::backend::Keyring`]) from before
//! it looks for `X` until its `created` record is durable and its marker freed, and runs in a
//! task of its own, so a caller that goes away (a deadline, a dropped connection) cannot cut a
//! creation between its binding and its record, and a retry of `X` is answered only after the
//! record. Having found no key `X` in any backend, it takes a key off the in-memory pool (never
//! put back: a key whose binding failed comes back only through the next start's index, so an
//! assigned key is never handed out again), and then:
//!
//! 1. stores a *creation marker*: a `CKO_DATA` object with `CKA_APPLICATION`
//!    `signerd-pending-key` whose `CKA_LABEL` names `X` ("a key for `X` exists or is being
//!    made, its `created` record is not known to be durable"), by relabelling a free marker
//!    (label `marker:free`, not a key id) when there is one, else by creating one. Creations
//!    that arrive while a marker is being written queue, and the next write names them all
//!    (ids separated by spaces, outside the key id alphabet): under load one object write
//!    serves a group of creations (`signerd_pool_marker_writes_total`);
//! 2. checks that the pool key's private object signs for its public object (a key found in
//!    the token at connect; a pair this process generated is one by construction), and sets
//!    the private key's `CKA_ID` to `X`: the commit point. A single attribute of a single
//!    object, so the key is bound to one id or to none, never to two;
//! 3. sets the public key's `CKA_ID` and `CKA_LABEL` to `X`;
//! 4. writes the `created` audit record (key id, public key) and waits until it is durable;
//! 5. when every id the marker names is recorded, relabels it `marker:free`; the marker serves
//!    a later creation. Then it answers.
//!
//! Markers are recycled rather than created and destroyed because SoftHSM rescans the whole
//! token directory (one entry per object: every key, every pool key) after any object is created
//! or destroyed, holding its token lock; rewriting one small object does not. So a binding
//! creates and destroys no object at all once as many markers exist as marker writes run at
//! once. Every object rewrite costs SoftHSM a truncate, a write and a close of its file, which
//! on ext4 starts writeback of the file (its replace-by-truncate heuristic): the grouping of
//! steps 1 and 5 is what keeps a binding near two rewrites under load instead of four.
//!
//! A key generated inline (empty pool) gets a marker the same way, and its private key a
//! `pool:` label. The key's own objects are never written after the answer: SoftHSM rewrites an
//! object file in place (truncate, then one write per attribute), so a SIGKILL during a write
//! leaves a torn object, and a key given to a caller must not be exposed to that.
//!
//! At start the index is rebuilt from the token in one pass (see `build_index` in
//! [`crate::backend::pkcs11`]):
//!
//! - a private key under `X` with no public key under `X`, labelled `pool:N` while the public key
//!   `pool:N` still exists, crashed between 2 and 3: the public key is renamed to `X` (rolled
//!   forward);
//! - a private key labelled `pool:` that does not sign for the public key under its id (or
//!   cannot sign at all) is the leftover of a creation cut short by a crash, never answered: it
//!   is skipped (it cannot sign for `X`'s key, so it cannot be chosen), and `X` keeps its one good
//!   key, if it has one;
//! - a marker naming a key `X` that is indexed means the `created` record may be missing: the
//!   refill task writes it (request id [`RECOVERY_REQUEST_ID`]) and then frees the marker once
//!   every indexed key it names is recorded, so a crash between 4 and 5 writes the same record
//!   (same id, same public key) twice, never zero times; a marker naming no existing key is
//!   freed, and one a crash tore (unreadable) is destroyed (a marker is rewritten only before
//!   its keys are committed or after their records are durable, so a torn one guards nothing).
//!
//! A `CreateKey(X)` retried after the crash finds `X` bound (crash after 2), or binds another
//! pool key (crash before 2, or `X`'s objects torn before the answer). Two good keys under one
//! id, or a private key without a `pool:` label that does not match, still stop signerd from
//! starting: the index stays strict about what a crash cannot produce.
//!
//! Cloud KMS names a key by its CryptoKey id, fixed at creation, so a pool key could only be
//! bound through a mapping of labels that every lookup would then have to trust; signerd
//! refuses `[pool.gcp_kms]` at load instead.
//!
//! # Refill
//!
//! One task per pooled backend keeps the pool between `low_water` and `target`: when the depth
//! falls below `low_water` it generates keys one at a time (one token session at a time, the
//! others stay free for signing), at most `refill_per_second`, until `target`. Keys are made
//! available to `CreateKey` only after the `pool` audit record listing their public keys (one
//! record per batch) is durable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::log::AuditLog;
use crate::audit::record::{self, Decision, DecisionRecord};
use crate::backend::{KeyBackend, Keyring};
use crate::error::{Error, Result};
use crate::keys::{KeyInfo, PublicKey};
use crate::metrics::Metrics;

/// The id (and label) prefix of an unassigned pool key. Not a [`KeyId`](crate::keys::KeyId) (`:` is outside its
/// alphabet), so callers cannot name one.
pub const POOL_ID_PREFIX: &str = "pool:";

/// The request id of `created` records written at start for bindings a crash left unrecorded.
pub const RECOVERY_REQUEST_ID: &str = "pool-recovery";

/// Keys generated before their `pool` record is written and they are offered to `CreateKey`.
const AUDIT_BATCH_KEYS: usize = 16;

/// The longest a generated key waits for its batch's record.
const AUDIT_BATCH_WAIT: Duration = Duration::from_millis(500);

/// How often a full pool is looked at again.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// A fresh pool id: [`POOL_ID_PREFIX`] and 128 random bits in hex.
pub fn new_pool_id() -> Result<String> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce)
        .map_err(|e| Error::Backend(format!("no randomness for a pool key id: {e}")))?;
    Ok(format!("{POOL_ID_PREFIX}{}", hex::encode(nonce)))
}

/// `[pool]`: one table per backend that keeps a pool (`[pool.pkcs11]`). No table: no pool, and
/// every `CreateKey` generates its key inline.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// The PKCS#11 token's pool.
    pub pkcs11: Option<PoolConfig>,
    /// Refused at load: Cloud KMS cannot rename a key (see the module docs).
    pub gcp_kms: Option<PoolConfig>,
}

/// One backend's pool.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Keys kept ready.
    pub target: usize,
    /// Refill starts when fewer keys than this are ready (and runs up to `target`).
    pub low_water: usize,
    /// Most keys generated per second by the refill (one at a time, on one token session).
    #[serde(default = "default_refill_per_second")]
    pub refill_per_second: u32,
}

fn default_refill_per_second() -> u32 {
    20
}

impl PoolSection {
    /// Cross-field rules; errors name the field.
    pub fn check(&self) -> Result<()> {
        if self.gcp_kms.is_some() {
            return Err(Error::Config(
                "pool.gcp_kms: Cloud KMS names a key by its CryptoKey id, fixed at creation, so \
                 a pre-generated key cannot be bound to a key id; remove [pool.gcp_kms] (keys \
                 in gcp-kms are created on CreateKey)"
                    .into(),
            ));
        }
        if let Some(pool) = &self.pkcs11 {
            pool.check("pool.pkcs11")?;
        }
        Ok(())
    }

    /// The pool configured for the backend named `backend`.
    pub fn for_backend(&self, backend: &str) -> Option<&PoolConfig> {
        match backend {
            "pkcs11" => self.pkcs11.as_ref(),
            _ => None,
        }
    }
}

impl PoolConfig {
    fn check(&self, table: &str) -> Result<()> {
        let field = |name: &str, why: &str| Err(Error::Config(format!("{table}.{name}: {why}")));
        if !(1..=1_000_000).contains(&self.target) {
            return field("target", "must be between 1 and 1000000");
        }
        if self.low_water > self.target {
            return field("low_water", "must not exceed target");
        }
        if !(1..=10_000).contains(&self.refill_per_second) {
            return field("refill_per_second", "must be between 1 and 10000");
        }
        Ok(())
    }
}

/// Where a key returned by `CreateKey` came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The id already had a key: nothing was created.
    Existing,
    /// A pool key was bound to the id.
    Pool,
    /// The key was generated on the request path (no pool, or the pool was empty).
    Inline,
}

impl Origin {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Origin::Existing => "existing",
            Origin::Pool => "pool",
            Origin::Inline => "inline",
        }
    }
}

/// Labels of the pool metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// The backend.
    pub backend: &'static str,
}

/// Labels of `signerd_keys_created_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CreationLabels {
    /// The backend.
    pub backend: &'static str,
    /// `pool` or `inline`.
    pub origin: &'static str,
}

/// The pool's metrics.
#[derive(Clone, Default)]
pub struct PoolMetrics {
    /// Keys ready in the pool.
    pub depth: Family<PoolLabels, Gauge>,
    /// Keys generated by the refill task.
    pub generated: Family<PoolLabels, Counter>,
    /// Refill runs (low water reached, refilled towards target).
    pub refills: Family<PoolLabels, Counter>,
    /// Pool keys bound to a key id.
    pub bound: Family<PoolLabels, Counter>,
    /// Keys created by `CreateKey`, by origin.
    pub created: Family<CreationLabels, Counter>,
    /// Creation markers written (one write names every creation queued meanwhile).
    pub marker_writes: Family<PoolLabels, Counter>,
}

impl PoolMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = PoolMetrics::default();
        registry.register(
            "pool_keys",
            "Keys ready in the key pool, per backend",
            metrics.depth.clone(),
        );
        registry.register(
            "pool_generated",
            "Keys generated ahead of time by the pool refill",
            metrics.generated.clone(),
        );
        registry.register(
            "pool_refills",
            "Pool refills started (depth fell below low_water)",
            metrics.refills.clone(),
        );
        registry.register(
            "pool_bound",
            "Pool keys bound to a key id by CreateKey",
            metrics.bound.clone(),
        );
        registry.register(
            "keys_created",
            "Keys created by CreateKey, by origin (pool or inline)",
            metrics.created.clone(),
        );
        registry.register(
            "pool_marker_writes",
            "Creation markers written to the backend; one write names every creation queued meanwhile",
            metrics.marker_writes.clone(),
        );
        metrics
    }

    /// Counts one key created by `CreateKey`.
    pub fn count_creation(&self, backend: &'static str, origin: Origin) {
        if origin == Origin::Existing {
            return;
        }
        self.created
            .get_or_create(&CreationLabels {
                backend,
                origin: origin.label(),
            })
            .inc();
        if origin == Origin::Pool {
            self.bound.get_or_create(&PoolLabels { backend }).inc();
        }
    }
}

/// The audit record of keys added to a pool (one per batch), or of the pool found at start.
#[derive(Debug, Serialize)]
pub struct PoolRecord {
    /// Always `pool`.
    pub kind: &'static str,
    /// When.
    pub time: String,
    /// `generated` (these keys were made and join the pool) or `loaded` (the pool found in the
    /// backend at start).
    pub event: &'static str,
    /// The backend.
    pub backend: &'static str,
    /// How many keys.
    pub count: usize,
    /// The public keys (G...) of generated keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
}

/// Starts one refill task per backend with a `[pool.*]` table. Each stops when `stop` turns
/// true, after recording the keys it generated.
pub fn spawn_refills(
    pools: &PoolSection,
    keyring: &Keyring,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for backend in keyring.backends() {
        // Recovered bindings are recorded even when the pool is no longer configured.
        let config = pools.for_backend(backend.name()).cloned();
        let refill = Refill {
            backend: backend.clone(),
            config,
            audit: audit.clone(),
            metrics: metrics.clone(),
        };
        tasks.push(tokio::spawn(refill.run(stop.clone())));
    }
    tasks
}

/// One backend's refill loop.
struct Refill {
    backend: Arc<dyn KeyBackend>,
    config: Option<PoolConfig>,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
}

impl Refill {
    fn labels(&self) -> PoolLabels {
        PoolLabels {
            backend: self.backend.name(),
        }
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        self.record_recovered().await;
        let loaded = self.backend.pool_depth();
        if loaded > 0 {
            let record = PoolRecord {
                kind: "pool",
                time: record::now_rfc3339(),
                event: "loaded",
                backend: self.backend.name(),
                count: loaded,
                public_keys: Vec::new(),
            };
            if let Err(e) = self.audit.writer.append(record::members(&record)).await {
                tracing::error!(error = %e, "could not record the key pool found at start");
            }
        }
        let Some(config) = self.config.clone() else {
            return;
        };
        let pace = Duration::from_secs_f64(1.0 / f64::from(config.refill_per_second));
        let mut refilling = false;
        loop {
            if *stop.borrow() {
                return;
            }
            self.record_recovered().await;
            let depth = self.backend.pool_depth();
            self.metrics
                .pool
                .depth
                .get_or_create(&self.labels())
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
            if depth < config.low_water && !refilling {
                refilling = true;
                self.metrics
                    .pool
                    .refills
                    .get_or_create(&self.labels())
                    .inc();
                tracing::info!(
                    backend = self.backend.name(),
                    depth,
                    target = config.target,
                    "key pool below low water; refilling"
                );
            }
            if !refilling || depth >= config.target {
                refilling = false;
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_CHECK) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            let wanted = (config.target - depth).min(AUDIT_BATCH_KEYS);
            if self.generate_batch(wanted, pace, &mut stop).await.is_err() {
                // The backend is down or refusing: try again later, at the same pace.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// Generates up to `wanted` keys at `pace`, records them in one `pool` record and offers
    /// them to `CreateKey`. Stops early (recording what it made) when asked to stop or when the
    /// batch has waited [`AUDIT_BATCH_WAIT`].
    async fn generate_batch(
        &self,
        wanted: usize,
        pace: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        let started = Instant::now();
        let mut made: Vec<PublicKey> = Vec::with_capacity(wanted);
        let mut failure = None;
        while made.len() < wanted {
            let next = Instant::now() + pace;
            match self.backend.generate_pool_key().await {
                Ok(key) => {
                    made.push(key);
                    self.metrics
                        .pool
                        .generated
                        .get_or_create(&self.labels())
                        .inc();
                }
                Err(e) => {
                    tracing::warn!(backend = self.backend.name(), error = %e, "key pool refill failed");
                    failure = Some(e);
                    break;
                }
            }
            if *stop.borrow() || started.elapsed() >= AUDIT_BATCH_WAIT {
                break;
            }
            // Not synchronisation: the refill's rate bound.
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = stop.changed() => break,
            }
        }
        if !made.is_empty() {
            let record = PoolRecord {
                kind: "pool",
                time: record::now_rfc3339(),
                event: "generated",
                backend: self.backend.name(),
                count: made.len(),
                public_keys: made.iter().map(PublicKey::account_id).collect(),
            };
            match self.audit.writer.append(record::members(&record)).await {
                Ok(_) => self.backend.release_pool_keys(),
                Err(e) => {
                    // Unrecorded keys are not offered; the next start finds them and records
                    // them as `loaded`.
                    tracing::error!(error = %e, "could not record generated pool keys; not offering them");
                    return Err(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes the `created` record of every binding a crash left unrecorded, then clears its
    /// marker in the backend.
    async fn record_recovered(&self) {
        for key in self.backend.take_unrecorded_bindings() {
            if let Err(e) = record_recovered_binding(&self.audit, &key).await {
                tracing::error!(error = %e, key_id = %key.id, "could not record a recovered pool binding; retried at the next start");
                continue;
            }
            if let Err(e) = self.backend.confirm_binding(&key.id).await {
                tracing::warn!(error = %e, key_id = %key.id, "could not clear a recovered binding's marker; recorded again at the next start");
            }
        }
    }
}

/// The `created` record of a binding recovered at start.
async fn record_recovered_binding(audit: &AuditLog, key: &KeyInfo) -> Result<()> {
    let record = DecisionRecord {
        kind: "decision",
        time: record::now_rfc3339(),
        request_id: RECOVERY_REQUEST_ID.to_owned(),
        identity: "signerd".to_owned(),
        rpc: "CreateKey",
        key_id: Some(key.id.to_string()),
        public_key: Some(key.public_key.account_id()),
        decision: Some(Decision::Created),
        reason: Some("pool binding completed at start after a crash".to_owned()),
        ..DecisionRecord::default()
    };
    audit.writer.append(record::members(&record)).await?;
    tracing::warn!(key_id = %key.id, public_key = %key.public_key.account_id(), "recorded a pool binding a crash left unrecorded");
    Ok(())
}

/// Whether `raw` (a `CKA_ID` or label) is in the pool namespace.
pub fn is_pool_id(raw: &[u8]) -> bool {
    raw.starts_with(POOL_ID_PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyId;

    #[test]
    fn no_caller_can_name_a_pool_key() {
        let id = new_pool_id().unwrap_or_else(|e| panic!("{e}"));
        assert!(is_pool_id(id.as_bytes()));
        assert!(KeyId::parse(&id).is_err(), "{id} parses as a key id");
        assert_ne!(id, new_pool_id().unwrap_or_else(|e| panic!("{e}")));
    }

    #[test]
    fn pool_limits_are_checked_and_gcp_kms_is_refused() {
        let parse = |text: &str| -> Result<PoolSection> {
            let section: PoolSection =
                toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
            section.check()?;
            Ok(section)
        };
        let ok =
            parse("[pkcs11]\ntarget = 100\nlow_water = 20\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.pkcs11.map(|p| p.refill_per_second), Some(20));
        for (text, name) in [
            (
                "[pkcs11]\ntarget = 0\nlow_water = 0\n",
                "pool.pkcs11.target",
            ),
            (
                "[pkcs11]\ntarget = 10\nlow_water = 11\n",
                "pool.pkcs11.low_water",
            ),
            (
                "[pkcs11]\ntarget = 10\nlow_water = 1\nrefill_per_second = 0\n",
                "pool.pkcs11.refill_per_second",
            ),
            ("[gcp_kms]\ntarget = 10\nlow_water = 1\n", "pool.gcp_kms"),
        ] {
            match parse(text) {
                Ok(_) => panic!("{text} accepted"),
                Err(e) => assert!(e.to_string().contains(name), "{e}"),
            }
        }
        assert!(parse("[pkcs11]\ntarget = 1\nlow_water = 1\nsize = 3\n").is_err());
    }

    #[test]
    fn a_pool_needs_its_backend_and_the_whole_config_names_the_field() {
        let config = |extra: &str| {
            format!(
                r#"
                [server]
                listen = "127.0.0.1:0"
                [tls]
                cert = "server.pem"
                key = "server.key"
                client_ca = "ca.pem"
                [backend]
                default = "gcp-kms"
                [backend.gcp_kms]
                key_ring = "projects/p/locations/global/keyRings/signerd"
                [audit]
                dir = "audit"
                {extra}
                "#
            )
        };
        let error_of = |text: String| match crate::config::Config::parse(&text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        };
        let err = error_of(config("[pool.pkcs11]\ntarget = 10\nlow_water = 5"));
        assert!(err.contains("pool.pkcs11: needs [backend.pkcs11]"), "{err}");
        let err = error_of(config("[pool.gcp_kms]\ntarget = 10\nlow_water = 5"));
        assert!(err.contains("pool.gcp_kms: Cloud KMS"), "{err}");
        assert!(crate::config::Config::parse(&config("")).is_ok());
    }
}
