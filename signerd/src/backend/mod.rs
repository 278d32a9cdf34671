//! Where private keys live. [`KeyBackend`] is the single joint a backend plugs into; the
//! [`Keyring`] holds every configured backend and routes each key id to the one that holds it.
//!
//! Backends never hand out private key material: they create keys, report public halves and
//! sign 32-byte hashes.

pub mod gcp_kms;
pub mod pkcs11;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::audit::anchor::AuditAnchor;
use crate::error::{Error, Result};
use crate::keys::{KeyId, KeyInfo, PublicKey};
use crate::pool::Origin;

/// One place that holds Ed25519 private keys.
#[async_trait]
pub trait KeyBackend: Send + Sync + 'static {
    /// The name used in config and in API responses (`pkcs11`, `gcp-kms`).
    fn name(&self) -> &'static str;

    /// Creates a key with this id, or returns the existing one (`false`: it was already there).
    async fn create_key(&self, id: &KeyId) -> Result<(KeyInfo, bool)>;

    /// The key with this id, if this backend holds it. Should answer from memory on the signing
    /// path (an index or cache); a backend may go remote on a miss.
    async fn get_key(&self, id: &KeyId) -> Result<Option<KeyInfo>>;

    /// Every key this backend holds, in key id order.
    async fn list_keys(&self) -> Result<Vec<KeyInfo>>;

    /// How many keys this backend holds (for metrics). Backends with an index override this to
    /// avoid listing.
    async fn key_count(&self) -> Result<usize> {
        Ok(self.list_keys().await?.len())
    }

    /// Signs a 32-byte hash with the key (pure Ed25519 over exactly these bytes).
    async fn sign(&self, id: &KeyId, hash: &[u8; 32]) -> Result<[u8; 64]>;

    /// Whether this backend keeps the audit anchor ([`AuditAnchor`]) beside the audit key. An
    /// audit key in a backend that cannot needs `audit.anchor = "none"` in the config.
    fn holds_audit_anchor(&self) -> bool {
        false
    }

    /// The audit anchor stored for the audit key `audit_key`; `None` when there is none yet.
    async fn audit_anchor(&self, audit_key: &KeyId) -> Result<Option<AuditAnchor>> {
        let _ = audit_key;
        Err(self.no_audit_anchor())
    }

    /// Stores (replaces) the audit anchor of `audit_key`. Called only after the anchored
    /// checkpoint is durable in the log.
    async fn store_audit_anchor(&self, audit_key: &KeyId, anchor: &AuditAnchor) -> Result<()> {
        let _ = (audit_key, anchor);
        Err(self.no_audit_anchor())
    }

    /// The error of the default anchor methods.
    fn no_audit_anchor(&self) -> Error {
        Error::Config(format!(
            "audit.anchor: the {} backend cannot keep the audit anchor; set audit.anchor = \"none\"",
            self.name()
        ))
    }

    /// [`Self::create_key`] for `CreateKey`: a backend that can may leave a crash-recovery
    /// marker on the new key until [`Self::confirm_binding`] (after its `created` record), so
    /// that a crash in between still gets the key recorded at the next start.
    async fn create_key_unconfirmed(&self, id: &KeyId) -> Result<(KeyInfo, bool)> {
        self.create_key(id).await
    }

    /// Generates one key for the pool (see [`crate::pool`]) under a fresh pool id, with the
    /// protection of any other key, and stages it: it is offered to `CreateKey` once
    /// [`Self::release_pool_keys`] is called (after its audit record is durable). Backends that
    /// cannot rename a key refuse.
    async fn generate_pool_key(&self) -> Result<PublicKey> {
        Err(Error::Config(format!(
            "the {} backend cannot keep a key pool",
            self.name()
        )))
    }

    /// Offers the staged pool keys to `CreateKey`.
    fn release_pool_keys(&self) {}

    /// Keys ready in the pool (0 while the backend is unavailable).
    fn pool_depth(&self) -> usize {
        0
    }

    /// Takes a key off the pool and binds it to `id`; `None` when the pool is empty. The
    /// caller holds the creation lock of `id` and has checked that no backend holds `id`. After
    /// the `created` record is durable the caller calls [`Self::confirm_binding`].
    async fn bind_pool_key(&self, id: &KeyId) -> Result<Option<KeyInfo>> {
        let _ = id;
        Ok(None)
    }

    /// Marks the binding of `id` as recorded in the audit log (clears the crash-recovery
    /// marker).
    async fn confirm_binding(&self, id: &KeyId) -> Result<()> {
        let _ = id;
        Ok(())
    }

    /// Bindings found half-done when the index was (re)built: completed in the backend, but
    /// perhaps without their `created` record. Each is returned once.
    fn take_unrecorded_bindings(&self) -> Vec<KeyInfo> {
        Vec::new()
    }

    /// Probes the backend; while it is down, tries to reconnect. `true` when it can serve.
    async fn check_health(&self) -> bool;

    /// Releases the backend at shutdown (after the last request and the final audit
    /// checkpoint): closes sessions, stops worker threads, finalizes libraries.
    async fn shutdown(&self);
}

/// Every configured backend, and the lock that makes `CreateKey` idempotent across them.
pub struct Keyring {
    backends: Vec<Arc<dyn KeyBackend>>,
    default: usize,
    /// Striped locks serialise creation per key id (two requests for the same id never race to
    /// create two keys) without serialising creation of different ids.
    create_locks: Vec<Arc<Mutex<()>>>,
}

/// A key `CreateKey` found or made, holding its id's creation lock until dropped: the caller
/// writes the `created` record and confirms the binding ([`Keyring::confirm_binding`]) before
/// letting go, so that no other request for the id is answered the key before its record is
/// durable.
pub struct Creation {
    /// The key.
    pub key: KeyInfo,
    /// Where it came from ([`Origin::Existing`]: nothing was created).
    pub origin: Origin,
    _lock: OwnedMutexGuard<()>,
}

impl Keyring {
    /// Builds a keyring; `default` names the backend used when `CreateKey` names none.
    pub fn new(backends: Vec<Arc<dyn KeyBackend>>, default: &str) -> Result<Self> {
        let default = backends
            .iter()
            .position(|b| b.name() == default)
            .ok_or_else(|| {
                Error::Config(format!("backend.default: {default:?} is not configured"))
            })?;
        Ok(Keyring {
            backends,
            default,
            create_locks: (0..64).map(|_| Arc::new(Mutex::new(()))).collect(),
        })
    }

    /// The backend `CreateKey` uses when a request names none.
    pub fn default_backend(&self) -> &Arc<dyn KeyBackend> {
        &self.backends[self.default]
    }

    /// The configured backends.
    pub fn backends(&self) -> &[Arc<dyn KeyBackend>] {
        &self.backends
    }

    /// Finds the key and the backend that holds it.
    ///
    /// A backend that cannot answer does not hide keys held by the others: its error is
    /// returned only when no other backend has the key (the key may be in the one that is down).
    pub async fn find(&self, id: &KeyId) -> Result<(KeyInfo, &Arc<dyn KeyBackend>)> {
        let mut failure = None;
        for backend in &self.backends {
            match backend.get_key(id).await {
                Ok(Some(key)) => return Ok((key, backend)),
                Ok(None) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        Err(failure.unwrap_or_else(|| Error::KeyNotFound(id.to_string())))
    }

    /// Creates a key in the named backend (or the default), unless a key with this id already
    /// exists in any backend, in which case that key is returned unchanged.
    pub async fn create_key(&self, id: &KeyId, backend: Option<&str>) -> Result<(KeyInfo, bool)> {
        let target = match backend {
            None => &self.backends[self.default],
            Some(name) => self
                .backends
                .iter()
                .find(|b| b.name() == name)
                .ok_or_else(|| Error::InvalidArgument(format!("unknown backend {name:?}")))?,
        };
        let _guard = self.create_locks[stripe(id, self.create_locks.len())]
            .lock()
            .await;
        match self.find(id).await {
            Ok((existing, _)) => Ok((existing, false)),
            Err(Error::KeyNotFound(_)) => target.create_key(id).await,
            Err(e) => Err(e),
        }
    }

    /// [`Self::create_key`] for `CreateKey`: when no backend holds `id`, binds a key from the
    /// target backend's pool, or (pool empty or absent) generates one. The audit key is created
    /// with [`Self::create_key`], never from the pool. The [`Creation`] holds the id's creation
    /// lock until the caller has recorded it.
    pub async fn create_key_pooled(&self, id: &KeyId, backend: Option<&str>) -> Result<Creation> {
        let target = self.target(backend)?;
        let lock = self.create_locks[stripe(id, self.create_locks.len())]
            .clone()
            .lock_owned()
            .await;
        let (key, origin) = match self.find(id).await {
            Ok((existing, _)) => (existing, Origin::Existing),
            Err(Error::KeyNotFound(_)) => match target.bind_pool_key(id).await? {
                Some(bound) => (bound, Origin::Pool),
                None => match target.create_key_unconfirmed(id).await? {
                    (key, true) => (key, Origin::Inline),
                    (key, false) => (key, Origin::Existing),
                },
            },
            Err(e) => return Err(e),
        };
        Ok(Creation {
            key,
            origin,
            _lock: lock,
        })
    }

    /// Tells the backend holding `key` that its binding is recorded.
    pub async fn confirm_binding(&self, key: &KeyInfo) -> Result<()> {
        match self.backends.iter().find(|b| b.name() == key.backend) {
            Some(backend) => backend.confirm_binding(&key.id).await,
            None => Ok(()),
        }
    }

    fn target(&self, backend: Option<&str>) -> Result<&Arc<dyn KeyBackend>> {
        match backend {
            None => Ok(&self.backends[self.default]),
            Some(name) => self
                .backends
                .iter()
                .find(|b| b.name() == name)
                .ok_or_else(|| Error::InvalidArgument(format!("unknown backend {name:?}"))),
        }
    }

    /// Every key in every backend, in key id order.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut keys = Vec::new();
        for backend in &self.backends {
            keys.extend(backend.list_keys().await?);
        }
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(keys)
    }

    /// Shuts every backend down.
    pub async fn shutdown(&self) {
        for backend in &self.backends {
            backend.shutdown().await;
        }
    }

    /// Probes every backend; `true` when all can serve.
    pub async fn check_health(&self) -> bool {
        let mut healthy = true;
        for backend in &self.backends {
            healthy &= backend.check_health().await;
        }
        healthy
    }
}

fn stripe(id: &KeyId, stripes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    (hasher.finish() % stripes as u64) as usize
}
