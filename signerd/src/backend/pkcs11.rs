//! The PKCS#11 backend (cryptoki): keys generated inside a token as non-extractable, sensitive,
//! non-copyable, non-destroyable Ed25519 key pairs, `CKA_ID` = the key id.
//!
//! One `Pkcs11` context per process. At connect time the slot is found by token label, the user
//! logs in, a pool of sessions is opened and an id → handle index is built with a single
//! `C_FindObjects` pass; the signing path never searches the token again. The index refuses a
//! token whose objects contradict each other (two keys under one id, or a private key that does
//! not sign for the public key of its id): see `build_index`.
//!
//! Keys may also be generated ahead into a pool (ids in the `pool:` namespace, see
//! [`crate::pool`] for the binding protocol and what a crash leaves): the index pass also
//! collects the pool and rolls forward bindings a crash interrupted.
//!
//! A session that breaks is replaced. When the token itself is gone (removed, device error,
//! logged out) the whole connection is dropped, RPCs answer `UNAVAILABLE`, and the health probe
//! reconnects (finalize, initialize, find by label, log in, rebuild the index) until it succeeds.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use ed25519_dalek::{Signature, VerifyingKey};
use prometheus_client::metrics::counter::Counter;
use secrecy::SecretString;

use super::KeyBackend;
use crate::audit::anchor::AuditAnchor;
use crate::config::Pkcs11Config;
use crate::error::{Error, Result};
use crate::keys::{KeyId, KeyInfo, PublicKey};
use crate::pool::{is_pool_id, new_pool_id};

/// DER encoding of the Ed25519 curve OID 1.3.101.112, the `CKA_EC_PARAMS` of an Ed25519 key.
pub const ED25519_EC_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

const NAME: &str = "pkcs11";

/// `CKA_APPLICATION` of the audit anchor data object; its `CKA_LABEL` is the audit key id.
pub const ANCHOR_APPLICATION: &str = "signerd-audit-anchor";

/// `CKA_APPLICATION` of the marker data object "key created or bound, `created` record not yet
/// durable"; its `CKA_LABEL` is the key id, or [`FREE_MARKER_LABEL`] once the record is durable.
/// See [`crate::pool`].
pub const PENDING_APPLICATION: &str = "signerd-pending-key";

/// `CKA_LABEL` of a creation marker that names no key (its key's `created` record is durable):
/// kept for the next creation. Not a key id (`:` is outside the key id alphabet).
pub const FREE_MARKER_LABEL: &str = "marker:free";

/// Why one PKCS#11 operation failed.
#[derive(Debug)]
enum Failure {
    /// The token said no.
    Token(CkError),
    /// Something on our side (a worker task died, the token returned nonsense).
    Internal(String),
    /// The token's objects contradict each other (duplicate or mismatched key objects).
    Inconsistent(String),
}

impl From<CkError> for Failure {
    fn from(err: CkError) -> Self {
        Failure::Token(err)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Token(e) => write!(f, "{e}"),
            Failure::Internal(m) | Failure::Inconsistent(m) => f.write_str(m),
        }
    }
}

/// What is needed to (re)connect to the token.
struct Settings {
    module: PathBuf,
    token_label: String,
    pin: SecretString,
    sessions: usize,
}

/// A key as indexed at connect time.
#[derive(Clone, Copy, Debug)]
struct IndexedKey {
    private: ObjectHandle,
    public: PublicKey,
}

/// An unassigned key of the pool: both objects still carry its pool id.
#[derive(Clone, Debug)]
struct PoolKey {
    private: ObjectHandle,
    public_handle: ObjectHandle,
    public: PublicKey,
    /// This process generated the pair (its handles came from `C_GenerateKeyPair`), so it is a
    /// pair; a key found in the token at connect is checked (one `C_Sign`) when bound.
    generated_here: bool,
}

/// What one pass over the token found.
struct TokenKeys {
    index: BTreeMap<KeyId, IndexedKey>,
    pool: VecDeque<PoolKey>,
    /// Keys whose creation marker was found: created or bound, perhaps without their
    /// `created` record.
    unrecorded: Vec<KeyId>,
    /// The markers of `unrecorded`.
    markers: Markers,
    /// Markers that name no key, ready for reuse.
    free_markers: Vec<ObjectHandle>,
}

/// The initialised PKCS#11 library. Finalized when the last holder (the token connection or a
/// session worker still finishing a call) lets go, never while a call may be running.
struct Context {
    pkcs11: Pkcs11,
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Err(e) = self.pkcs11.clone().finalize() {
            tracing::debug!(error = %e, "C_Finalize failed while dropping the token connection");
        }
    }
}

/// A unit of work for a session worker. Called with `last_chance = false` first; returning `true`
/// asks for a retry on a fresh session (the first one turned out broken), which comes with
/// `last_chance = true`. The job reports its result to the waiting request itself.
type Job = Box<dyn FnMut(&Session, bool) -> bool + Send>;

/// A live connection to the token: one worker thread per logged-in session, fed from one queue,
/// and the key index.
///
/// Dedicated threads (rather than a blocking pool behind a semaphore) keep each session on one
/// thread, and under load a worker that finishes a signature takes the next job at once instead
/// of going to sleep and being woken again.
struct Token {
    context: Arc<Context>,
    slot: Slot,
    /// Dropping the sender stops the workers once the queue is drained.
    jobs: crossbeam_channel::Sender<Job>,
    workers: Vec<std::thread::JoinHandle<()>>,
    index: RwLock<BTreeMap<KeyId, IndexedKey>>,
    /// Pool keys ready to be bound, oldest first. A key taken off is never put back.
    pool: Mutex<VecDeque<PoolKey>>,
    /// Pool keys generated but not yet recorded in the audit log: not offered yet.
    staged: Mutex<Vec<PoolKey>>,
    /// Creation markers (see [`PENDING_APPLICATION`]) of keys whose `created` record is not yet
    /// known to be durable.
    markers: Mutex<Markers>,
    /// Creations waiting for the marker write in progress to end, to share the next one (see
    /// [`Pkcs11Backend::mark`]).
    marking: Mutex<MarkQueue>,
    /// Markers that name no key. A creation relabels one instead of creating an object, and
    /// the confirmation relabels it free again instead of destroying it: SoftHSM rescans the
    /// whole token directory after every object creation or destruction (its token generation
    /// changes), so a creation and a destruction per `CreateKey` cost two full rescans, while a
    /// relabel rewrites one small file.
    free_markers: Mutex<Vec<ObjectHandle>>,
    /// Audit anchor objects found or created on this connection, by audit key id, so that
    /// storing an anchor never searches the token.
    anchors: Mutex<BTreeMap<KeyId, AnchorObject>>,
}

/// The creation markers in use: which marker names each key id whose `created` record is not
/// yet known to be durable, and for each marker how many of the ids it names are still awaited.
/// A marker whose count reaches zero is relabelled free and reused.
#[derive(Default)]
struct Markers {
    by_id: BTreeMap<KeyId, ObjectHandle>,
    awaited: Vec<(ObjectHandle, usize)>,
}

impl Markers {
    /// Records that `marker` names `ids` (none of them named by another marker).
    fn named(&mut self, marker: ObjectHandle, ids: impl IntoIterator<Item = KeyId>) {
        let mut count = 0;
        for id in ids {
            self.by_id.insert(id, marker);
            count += 1;
        }
        match self.awaited.iter_mut().find(|(m, _)| *m == marker) {
            Some((_, awaited)) => *awaited += count,
            None => self.awaited.push((marker, count)),
        }
    }

    /// Takes `id` off its marker; returns the marker when no id it names is awaited any more.
    fn recorded(&mut self, id: &KeyId) -> Option<ObjectHandle> {
        let marker = self.by_id.remove(id)?;
        let position = self.awaited.iter().position(|(m, _)| *m == marker)?;
        self.awaited[position].1 -= 1;
        (self.awaited[position].1 == 0).then(|| self.awaited.swap_remove(position).0)
    }
}

/// Creations waiting to be named by the next marker write (see [`Pkcs11Backend::mark`]).
#[derive(Default)]
struct MarkQueue {
    /// A marker write is in progress; its writer hands over to the first waiter when done.
    writing: bool,
    waiting: Vec<(KeyId, tokio::sync::oneshot::Sender<MarkReply>)>,
}

/// What a creation waiting in the [`MarkQueue`] is told.
enum MarkReply {
    /// Its id is named by this marker, durable in the token.
    Marked(ObjectHandle),
    /// The marker write failed.
    Failed(String),
    /// Write the next marker: for this id and every creation queued by then.
    Lead,
}

/// The label of a creation marker naming `ids`: the ids separated by spaces (outside the key
/// id alphabet). A marker naming one id is labelled with that id alone.
fn marker_label(ids: &[KeyId]) -> Vec<u8> {
    ids.iter()
        .map(KeyId::as_str)
        .collect::<Vec<_>>()
        .join(" ")
        .into_bytes()
}

impl Token {
    /// A creation marker that names no key, if one is ready.
    fn take_free_marker(&self) -> Option<ObjectHandle> {
        lock(&self.free_markers).pop()
    }

    /// Returns a marker that names no key (again).
    fn put_free_marker(&self, marker: ObjectHandle) {
        lock(&self.free_markers).push(marker);
    }

    /// Stops the workers after the queued jobs, waits for them, and finalizes the context, so
    /// that nothing is left running inside the PKCS#11 library when the process exits.
    fn shut_down(self) {
        let Token {
            context,
            jobs,
            workers,
            ..
        } = self;
        drop(jobs);
        for worker in workers {
            let _ = worker.join();
        }
        // The workers held the other references: this drop finalizes.
        drop(context);
    }
}

fn spawn_session_worker(
    context: Arc<Context>,
    slot: Slot,
    mut session: Session,
    jobs: crossbeam_channel::Receiver<Job>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pkcs11-session".into())
        .spawn(move || {
            for mut job in jobs.iter() {
                if job(&session, false) {
                    match context.pkcs11.open_rw_session(slot) {
                        Ok(fresh) => {
                            tracing::warn!("replaced a broken pkcs11 session");
                            session = fresh;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot replace a broken pkcs11 session")
                        }
                    }
                    job(&session, true);
                }
            }
            // Sessions close before the context they belong to can be finalized.
            drop(session);
            drop(context);
        })
}

/// The PKCS#11 backend.
pub struct Pkcs11Backend {
    settings: Settings,
    /// `None` while the token is unavailable.
    token: RwLock<Option<Arc<Token>>>,
    /// The context of the previous connection: a new one is not initialised while the old one
    /// is still alive (a worker stuck in a call), since finalizing it later would tear down the
    /// new one too.
    previous_context: Mutex<std::sync::Weak<Context>>,
    /// One reconnect attempt at a time.
    reconnecting: tokio::sync::Mutex<()>,
    /// Bindings a connect found half-done and completed, until the pool task records them.
    unrecorded: Mutex<Vec<KeyInfo>>,
    /// Counts creation markers written (`signerd_pool_marker_writes_total`).
    marker_writes: Counter,
}

impl Pkcs11Backend {
    /// Connects to the token. Fails when the module cannot be loaded, no token has the label or
    /// the PIN is refused: signerd does not start half-configured.
    pub async fn connect(config: &Pkcs11Config, marker_writes: Counter) -> Result<Self> {
        let settings = Settings {
            module: config.module.clone(),
            token_label: config.token_label.clone(),
            pin: config.read_pin()?,
            sessions: config.sessions,
        };
        let backend = Pkcs11Backend {
            settings,
            token: RwLock::new(None),
            previous_context: Mutex::new(std::sync::Weak::new()),
            reconnecting: tokio::sync::Mutex::new(()),
            unrecorded: Mutex::new(Vec::new()),
            marker_writes,
        };
        backend.reconnect().await?;
        Ok(backend)
    }

    fn token(&self) -> Result<Arc<Token>> {
        read(&self.token)
            .clone()
            .ok_or_else(|| Error::Unavailable("pkcs11 token unavailable".into()))
    }

    async fn reconnect(&self) -> Result<()> {
        let _one_at_a_time = self.reconnecting.lock().await;
        if read(&self.token).is_some() {
            return Ok(());
        }
        if lock(&self.previous_context).strong_count() > 0 {
            return Err(Error::Unavailable(
                "pkcs11: previous connection still finishing a call".into(),
            ));
        }
        let settings = Settings {
            module: self.settings.module.clone(),
            token_label: self.settings.token_label.clone(),
            pin: self.settings.pin.clone(),
            sessions: self.settings.sessions,
        };
        let (token, unrecorded) = tokio::task::spawn_blocking(move || open_token(&settings))
            .await
            .map_err(|e| Error::Backend(format!("pkcs11 connect task: {e}")))??;
        let keys = read(&token.index).len();
        let pool = lock(&token.pool).len();
        {
            let index = read(&token.index);
            let mut pending = lock(&self.unrecorded);
            for id in unrecorded {
                if let Some(key) = index.get(&id) {
                    pending.retain(|k| k.id != id);
                    pending.push(key_info(&id, key));
                }
            }
        }
        *lock(&self.previous_context) = Arc::downgrade(&token.context);
        *write(&self.token) = Some(Arc::new(token));
        tracing::info!(keys, pool, label = %self.settings.token_label, "pkcs11 token connected");
        Ok(())
    }

    /// Drops the connection after a token-level failure, so that the next probe reconnects.
    fn mark_lost(&self, token: &Arc<Token>, cause: &Failure) {
        let mut current = write(&self.token);
        if current.as_ref().is_some_and(|t| Arc::ptr_eq(t, token)) {
            tracing::error!(error = %cause, "pkcs11 token lost; answering UNAVAILABLE until it is back");
            *current = None;
        }
    }

    /// Maps a cryptoki error to a signerd error, dropping the connection when the token is gone.
    fn fail(&self, token: &Arc<Token>, err: Failure) -> Error {
        // A session still broken after the worker's retry on a fresh one means the token is gone.
        if matches!(&err, Failure::Token(e) if token_lost(e) || session_broken(e)) {
            self.mark_lost(token, &err);
            Error::Unavailable("pkcs11 token unavailable".into())
        } else {
            tracing::error!(error = %err, "pkcs11 operation failed");
            Error::Backend(err.to_string())
        }
    }
}

impl Pkcs11Backend {
    /// Generates the key `id` inline; its private key's `CKA_LABEL` is `private_label`. With
    /// `marked`, a creation marker is stored first (see [`crate::pool`]).
    async fn create_key_labelled(
        &self,
        id: &KeyId,
        private_label: Vec<u8>,
        marked: bool,
    ) -> Result<(KeyInfo, bool)> {
        let token = self.token()?;
        if let Some(key) = read(&token.index).get(id) {
            return Ok((key_info(id, key), false));
        }
        if marked {
            self.mark(&token, id).await?;
        }
        let id_bytes = id.as_str().as_bytes().to_vec();
        let created = run(&token, move |session| {
            generate_key_pair(session, &id_bytes, &private_label)
        })
        .await
        .map_err(|e| self.fail(&token, e))?;
        let created = IndexedKey {
            private: created.private,
            public: created.public,
        };
        write(&token.index).insert(id.clone(), created);
        tracing::info!(key_id = %id, public_key = %created.public.account_id(), "key created in pkcs11 token");
        Ok((key_info(id, &created), true))
    }

    /// Stores a creation marker naming `id` (step 1 in [`crate::pool`]), before its key is
    /// bound or generated. Creations that arrive while a marker is being written queue, and the
    /// next write names them all: one object write per group of concurrent creations rather
    /// than one per creation. An id a marker already names (an earlier attempt of the same
    /// creation) is not written again.
    async fn mark(&self, token: &Arc<Token>, id: &KeyId) -> Result<ObjectHandle> {
        if let Some(marker) = lock(&token.markers).by_id.get(id) {
            return Ok(*marker);
        }
        let queued = {
            let mut queue = lock(&token.marking);
            if queue.writing {
                let (reply, answer) = tokio::sync::oneshot::channel();
                queue.waiting.push((id.clone(), reply));
                Some(answer)
            } else {
                queue.writing = true;
                None
            }
        };
        if let Some(answer) = queued {
            match answer.await {
                Ok(MarkReply::Marked(marker)) => return Ok(marker),
                Ok(MarkReply::Failed(why)) => return Err(Error::Backend(why)),
                Ok(MarkReply::Lead) => {}
                Err(_) => {
                    return Err(Error::Backend(
                        "pkcs11 creation marker writer went away".into(),
                    ));
                }
            }
        }
        self.write_marker(token, id).await
    }

    /// Writes one marker naming `id` and every creation queued so far, answers those, and
    /// hands the writing over to the first creation queued meanwhile (or ends it).
    async fn write_marker(&self, token: &Arc<Token>, id: &KeyId) -> Result<ObjectHandle> {
        let queued = std::mem::take(&mut lock(&token.marking).waiting);
        let mut ids = vec![id.clone()];
        ids.extend(queued.iter().map(|(id, _)| id.clone()));
        let free = token.take_free_marker();
        let label = marker_label(&ids);
        let written = run(token, move |session| Ok(mark(session, free, &label)?)).await;
        let result = match written {
            Ok(marker) => {
                self.marker_writes.inc();
                lock(&token.markers).named(marker, ids);
                Ok(marker)
            }
            Err(e) => Err(self.fail(token, e)),
        };
        for (_, reply) in queued {
            let _ = reply.send(match &result {
                Ok(marker) => MarkReply::Marked(*marker),
                Err(e) => MarkReply::Failed(format!("creation marker: {e}")),
            });
        }
        let mut queue = lock(&token.marking);
        loop {
            if queue.waiting.is_empty() {
                queue.writing = false;
                break;
            }
            let (_, next) = queue.waiting.remove(0);
            if next.send(MarkReply::Lead).is_ok() {
                break;
            }
        }
        result
    }
}

#[async_trait]
impl KeyBackend for Pkcs11Backend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_key(&self, id: &KeyId) -> Result<(KeyInfo, bool)> {
        self.create_key_labelled(id, id.as_str().as_bytes().to_vec(), false)
            .await
    }

    /// A creation marker is stored before the key is generated, and the private key's label is
    /// a fresh pool id, as a bound pool key's: a leftover of a generation a crash cut short is
    /// then recognisable at the next start (see `build_index`).
    async fn create_key_unconfirmed(&self, id: &KeyId) -> Result<(KeyInfo, bool)> {
        self.create_key_labelled(id, new_pool_id()?.into_bytes(), true)
            .await
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<KeyInfo>> {
        let token = self.token()?;
        let index = read(&token.index);
        Ok(index.get(id).map(|key| key_info(id, key)))
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let token = self.token()?;
        let index = read(&token.index);
        Ok(index.iter().map(|(id, key)| key_info(id, key)).collect())
    }

    async fn key_count(&self) -> Result<usize> {
        Ok(read(&self.token()?.index).len())
    }

    async fn sign(&self, id: &KeyId, hash: &[u8; 32]) -> Result<[u8; 64]> {
        let token = self.token()?;
        let key = read(&token.index)
            .get(id)
            .copied()
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        let hash = *hash;
        let signature = run(&token, move |session| {
            let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
            Ok(session.sign(&mechanism, key.private, &hash)?)
        })
        .await
        .map_err(|e| self.fail(&token, e))?;
        signature.try_into().map_err(|bad: Vec<u8>| {
            Error::Backend(format!("token returned a {}-byte signature", bad.len()))
        })
    }

    async fn generate_pool_key(&self) -> Result<PublicKey> {
        let token = self.token()?;
        let pool_id = new_pool_id()?.into_bytes();
        let key = run(&token, move |session| {
            generate_key_pair(session, &pool_id, &pool_id)
        })
        .await
        .map_err(|e| self.fail(&token, e))?;
        let public = key.public;
        lock(&token.staged).push(key);
        Ok(public)
    }

    fn release_pool_keys(&self) {
        if let Ok(token) = self.token() {
            let staged = std::mem::take(&mut *lock(&token.staged));
            lock(&token.pool).extend(staged);
        }
    }

    fn pool_depth(&self) -> usize {
        self.token().map_or(0, |token| lock(&token.pool).len())
    }

    async fn bind_pool_key(&self, id: &KeyId) -> Result<Option<KeyInfo>> {
        let token = self.token()?;
        loop {
            // Off the pool before anything touches the token: whatever happens next, no other
            // request can take this key.
            let Some(key) = lock(&token.pool).pop_front() else {
                return Ok(None);
            };
            self.mark(&token, id).await?;
            let id_bytes = id.as_str().as_bytes().to_vec();
            let pool_key = key.clone();
            let bound = run(&token, move |session| {
                bind_pool_key(session, &pool_key, &id_bytes)
            })
            .await;
            match bound {
                Ok(()) => {
                    let indexed = IndexedKey {
                        private: key.private,
                        public: key.public,
                    };
                    write(&token.index).insert(id.clone(), indexed);
                    tracing::info!(key_id = %id, public_key = %key.public.account_id(), "pool key bound");
                    return Ok(Some(key_info(id, &indexed)));
                }
                Err(Failure::Inconsistent(why)) => {
                    // Never bound (the pair check comes before the commit point); left in the
                    // token, unused. The marker naming `id` serves the next pool key.
                    tracing::error!(reason = %why, "skipping a pool key whose objects do not match");
                }
                Err(e) => return Err(self.fail(&token, e)),
            }
        }
    }

    /// Clears the key's creation marker (relabels it free, for the next creation). The key's
    /// own objects are never written after `CreateKey` answered: a token that rewrites an
    /// object file in place (SoftHSM) could lose the key to a crash during the write. A crash
    /// during the marker's rewrite tears only the marker, after the record is durable.
    async fn confirm_binding(&self, id: &KeyId) -> Result<()> {
        let token = self.token()?;
        // A marker naming several keys is freed with the last of their confirmations.
        let Some(marker) = lock(&token.markers).recorded(id) else {
            return Ok(());
        };
        run(&token, move |session| {
            Ok(session.update_attributes(
                marker,
                &[Attribute::Label(FREE_MARKER_LABEL.as_bytes().to_vec())],
            )?)
        })
        .await
        .map_err(|e| self.fail(&token, e))?;
        token.put_free_marker(marker);
        Ok(())
    }

    fn take_unrecorded_bindings(&self) -> Vec<KeyInfo> {
        std::mem::take(&mut *lock(&self.unrecorded))
    }

    fn holds_audit_anchor(&self) -> bool {
        true
    }

    async fn audit_anchor(&self, audit_key: &KeyId) -> Result<Option<AuditAnchor>> {
        let token = self.token()?;
        let key = audit_key.clone();
        let found = run(&token, move |session| find_anchor(session, &key))
            .await
            .map_err(|e| self.fail(&token, e))?;
        let Some((object, value)) = found else {
            return Ok(None);
        };
        lock(&token.anchors).insert(audit_key.clone(), object);
        AuditAnchor::from_bytes(&value).map(Some).ok_or_else(|| {
            Error::Backend(format!(
                "the token's audit anchor for {audit_key} holds {} unreadable bytes",
                value.len()
            ))
        })
    }

    /// Tokens may refuse to change a data object's `CKA_VALUE` (SoftHSM does), so each anchor
    /// is a new object with the next generation number, and the previous one is destroyed
    /// after it: a crash in between leaves two, and the reader keeps the newer.
    async fn store_audit_anchor(&self, audit_key: &KeyId, anchor: &AuditAnchor) -> Result<()> {
        let token = self.token()?;
        let cached = lock(&token.anchors).get(audit_key).copied();
        let (key, anchor) = (audit_key.clone(), *anchor);
        let stored = run(&token, move |session| {
            let previous = match cached {
                Some(object) => Some(object),
                None => find_anchor(session, &key)?.map(|(object, _)| object),
            };
            let generation = previous.map_or(1, |p| p.generation + 1);
            let mut value = generation.to_be_bytes().to_vec();
            value.extend(anchor.to_bytes());
            let mut template = anchor_template(&key);
            template.extend([
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Value(value),
            ]);
            let handle = session.create_object(&template)?;
            if let Some(previous) = previous {
                session.destroy_object(previous.handle)?;
            }
            Ok(AnchorObject { handle, generation })
        })
        .await
        .map_err(|e| self.fail(&token, e))?;
        lock(&token.anchors).insert(audit_key.clone(), stored);
        Ok(())
    }

    async fn shutdown(&self) {
        let Some(token) = write(&self.token).take() else {
            return;
        };
        match Arc::try_unwrap(token) {
            Ok(token) => {
                let joined = tokio::task::spawn_blocking(move || token.shut_down()).await;
                if joined.is_err() {
                    tracing::error!("pkcs11 shutdown task failed");
                }
            }
            Err(_) => tracing::warn!("pkcs11 token still in use at shutdown; not finalizing"),
        }
    }

    async fn check_health(&self) -> bool {
        match self.token() {
            Ok(token) => {
                let (context, slot) = (token.context.clone(), token.slot);
                let probe = run(&token, move |session| {
                    session.get_session_info()?;
                    context.pkcs11.get_token_info(slot)?;
                    Ok(())
                })
                .await;
                match probe {
                    Ok(()) => true,
                    Err(e) => {
                        let _ = self.fail(&token, e);
                        false
                    }
                }
            }
            Err(_) => match self.reconnect().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "pkcs11 token still unavailable");
                    false
                }
            },
        }
    }
}

/// Runs one PKCS#11 operation on the next free session worker and waits for its result.
async fn run<T, F>(token: &Token, op: F) -> std::result::Result<T, Failure>
where
    T: Send + 'static,
    F: Fn(&Session) -> std::result::Result<T, Failure> + Send + 'static,
{
    let (reply, result) = tokio::sync::oneshot::channel();
    let mut reply = Some(reply);
    let job: Job = Box::new(move |session, last_chance| {
        let outcome = op(session);
        if !last_chance && matches!(&outcome, Err(Failure::Token(e)) if session_broken(e)) {
            return true;
        }
        if let Some(reply) = reply.take() {
            // The caller may have gone away (deadline); the result is then simply dropped.
            let _ = reply.send(outcome);
        }
        false
    });
    token
        .jobs
        .send(job)
        .map_err(|_| Failure::Internal("pkcs11 session workers stopped".into()))?;
    result
        .await
        .map_err(|_| Failure::Internal("pkcs11 session worker dropped a request".into()))?
}

fn open_token(settings: &Settings) -> Result<(Token, Vec<KeyId>)> {
    let p11_err = |what: &str, e: CkError| Error::Unavailable(format!("pkcs11 {what}: {e}"));
    let pkcs11 = Pkcs11::new(&settings.module).map_err(|e| {
        Error::Config(format!(
            "backend.pkcs11.module {}: {e}",
            settings.module.display()
        ))
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(p11_err("initialize", e)),
    }
    // From here on the context finalizes itself when dropped, on success or failure.
    let context = Arc::new(Context { pkcs11 });
    let slot = find_slot(&context.pkcs11, &settings.token_label)?;
    let mut sessions = Vec::with_capacity(settings.sessions);
    for _ in 0..settings.sessions {
        let session = context
            .pkcs11
            .open_rw_session(slot)
            .map_err(|e| p11_err("open session", e))?;
        sessions.push(session);
    }
    match sessions[0].login(UserType::User, Some(&settings.pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            return Err(Error::Config(
                "backend.pkcs11: the token refused the pin".into(),
            ));
        }
        Err(e) => return Err(p11_err("login", e)),
    }
    let found = build_index(&sessions[0]).map_err(|e| match e {
        Failure::Token(e) => p11_err("index keys", e),
        Failure::Inconsistent(m) => Error::Config(format!("backend.pkcs11: {m}")),
        Failure::Internal(m) => Error::Backend(format!("pkcs11 index keys: {m}")),
    })?;
    let (jobs, queue) = crossbeam_channel::unbounded();
    let mut workers = Vec::with_capacity(sessions.len());
    for session in sessions {
        let worker = spawn_session_worker(context.clone(), slot, session, queue.clone())
            .map_err(|e| Error::io("starting a pkcs11 session worker", e))?;
        workers.push(worker);
    }
    let token = Token {
        context,
        slot,
        jobs,
        workers,
        index: RwLock::new(found.index),
        pool: Mutex::new(found.pool),
        staged: Mutex::new(Vec::new()),
        markers: Mutex::new(found.markers),
        marking: Mutex::new(MarkQueue::default()),
        free_markers: Mutex::new(found.free_markers),
        anchors: Mutex::new(BTreeMap::new()),
    };
    Ok((token, found.unrecorded))
}

/// The template that finds the audit anchor of `audit_key`: a `CKO_DATA` object whose
/// `CKA_APPLICATION` is [`ANCHOR_APPLICATION`] and whose `CKA_LABEL` is the audit key id.
pub fn anchor_template(audit_key: &KeyId) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Application(ANCHOR_APPLICATION.as_bytes().to_vec()),
        Attribute::Label(audit_key.as_str().as_bytes().to_vec()),
    ]
}

/// A stored anchor object: its handle and its generation (each store writes the next).
#[derive(Clone, Copy, Debug)]
struct AnchorObject {
    handle: ObjectHandle,
    generation: u64,
}

/// Reads the anchor objects of `audit_key` and keeps the newest (highest generation), destroying
/// older ones a crash between "create the new" and "destroy the old" may have left.
fn find_anchor(
    session: &Session,
    audit_key: &KeyId,
) -> std::result::Result<Option<(AnchorObject, Vec<u8>)>, Failure> {
    let mut newest: Option<(AnchorObject, Vec<u8>)> = None;
    let mut older = Vec::new();
    for handle in session.find_objects(&anchor_template(audit_key))? {
        let value = session
            .get_attributes(handle, &[AttributeType::Value])?
            .into_iter()
            .find_map(|a| match a {
                Attribute::Value(bytes) => Some(bytes),
                _ => None,
            })
            .unwrap_or_default();
        let Some((generation, anchor)) = value.split_first_chunk::<8>() else {
            return Err(Failure::Internal(format!(
                "an audit anchor object for {audit_key} holds {} bytes",
                value.len()
            )));
        };
        let object = AnchorObject {
            handle,
            generation: u64::from_be_bytes(*generation),
        };
        match &newest {
            Some((best, _)) if best.generation >= object.generation => older.push(handle),
            _ => {
                if let Some((replaced, _)) = newest.replace((object, anchor.to_vec())) {
                    older.push(replaced.handle);
                }
            }
        }
    }
    for handle in older {
        session.destroy_object(handle)?;
    }
    Ok(newest)
}
fn find_slot(pkcs11: &Pkcs11, label: &str) -> Result<Slot> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| Error::Unavailable(format!("pkcs11 list slots: {e}")))?;
    for slot in slots {
        if pkcs11
            .get_token_info(slot)
            .is_ok_and(|info| info.label() == label)
        {
            return Ok(slot);
        }
    }
    Err(Error::Unavailable(format!(
        "pkcs11: no token labelled {label:?}"
    )))
}

/// The message each indexed key signs at connect time, to prove its private object belongs to
/// the public object with the same `CKA_ID`. The signature never leaves the process, and the
/// message is 48 bytes: it can never be taken for a signature over a 32-byte Stellar hash.
const PAIR_CHECK_MESSAGE: &[u8] = b"signerd: this private key matches its public key";

/// One pass over the token's Ed25519 keys, pairing private and public objects by `CKA_ID`.
///
/// The index is what every later signature trusts, so it is built strictly: two public objects
/// with usable points sharing a key id, two private objects sharing one (unless the extra ones
/// are leftovers, below), or a private key whose signature does not verify under the public
/// key of the same id, fail the whole connection (signerd does not start; a reconnect stays
/// `UNAVAILABLE`) with an error naming the key id. Picking one of two candidates would let
/// whoever can write to the token choose which key a wallet signs with. The pair check costs one
/// `C_Sign` and one verification per key at connect time (0.6 to 1 ms per key measured with
/// SoftHSM on a busy 2-core machine).
///
/// The same pass collects the pool (both objects under one `pool:` id; their pair is checked
/// when bound, not here, so a large pool does not slow the start), rolls forward bindings a
/// crash interrupted, and reads the creation markers (see [`crate::pool`]):
///
/// - a private key with a key id but no public key under it, whose label names a pool public
///   key still under that pool id, was committed to the key id before the crash: the public
///   object is renamed to the key id;
/// - a private key labelled with a pool id (every key `CreateKey` made) that does not sign for
///   the public key of its id, or cannot sign at all, is the leftover of a creation a crash cut
///   short (SoftHSM rewrites an object file in place, so a SIGKILL during a write leaves it
///   torn). It was never answered (the answer comes after every write) and cannot sign for the
///   id's public key, so it is skipped; the id's good key, if any, is indexed.
fn build_index(session: &Session) -> std::result::Result<TokenKeys, Failure> {
    let mut public_keys = BTreeMap::new();
    let mut pool_publics: BTreeMap<Vec<u8>, (ObjectHandle, PublicKey)> = BTreeMap::new();
    let public_template = [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
    ];
    for handle in session.find_objects(&public_template)? {
        let attrs = session.get_attributes(handle, &[AttributeType::Id, AttributeType::EcPoint])?;
        let (mut raw_id, mut point) = (None, None);
        for attr in attrs {
            match attr {
                Attribute::Id(bytes) => raw_id = Some(bytes),
                Attribute::EcPoint(bytes) => point = parse_ec_point(&bytes),
                _ => {}
            }
        }
        let Some(point) = point else {
            tracing::warn!("skipping an Ed25519 public key with an unusable CKA_EC_POINT");
            continue;
        };
        match raw_id {
            Some(raw) if is_pool_id(&raw) => {
                if pool_publics.insert(raw.clone(), (handle, point)).is_some() {
                    return Err(Failure::Inconsistent(format!(
                        "two public keys share the pool id {}",
                        String::from_utf8_lossy(&raw)
                    )));
                }
            }
            Some(raw) => match key_id_from_bytes(&raw) {
                Some(id) => {
                    if public_keys.insert(id.clone(), point).is_some() {
                        return Err(inconsistent(&id, "two public keys share this CKA_ID"));
                    }
                }
                None => tracing::warn!("skipping an Ed25519 public key with an unusable CKA_ID"),
            },
            None => tracing::warn!("skipping an Ed25519 public key without a CKA_ID"),
        }
    }
    let private_template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
    ];
    // Every private key is listed before any pair is checked, so that a duplicate is named as
    // such whatever order the token returns its objects in.
    let mut private_keys: BTreeMap<KeyId, Vec<PrivateCandidate>> = BTreeMap::new();
    let mut pool_privates: BTreeMap<Vec<u8>, ObjectHandle> = BTreeMap::new();
    for handle in session.find_objects(&private_template)? {
        let attrs = session.get_attributes(handle, &[AttributeType::Id, AttributeType::Label])?;
        let (mut raw_id, mut label) = (None, None);
        for attr in attrs {
            match attr {
                Attribute::Id(bytes) => raw_id = Some(bytes),
                Attribute::Label(bytes) => label = Some(bytes),
                _ => {}
            }
        }
        if let Some(raw) = raw_id.as_ref().filter(|raw| is_pool_id(raw)) {
            if pool_privates.insert(raw.clone(), handle).is_some() {
                return Err(Failure::Inconsistent(format!(
                    "two private keys share the pool id {}",
                    String::from_utf8_lossy(raw)
                )));
            }
            continue;
        }
        let Some(id) = raw_id.as_deref().and_then(key_id_from_bytes) else {
            tracing::warn!("skipping an Ed25519 private key whose CKA_ID is not a key id");
            continue;
        };
        let pool_label = label.filter(|l| is_pool_id(l));
        private_keys
            .entry(id)
            .or_default()
            .push((handle, pool_label));
    }
    // Roll forward bindings committed on the private key before the public key was renamed.
    for (id, candidates) in &private_keys {
        if public_keys.contains_key(id) {
            continue;
        }
        for (_, pool_label) in candidates {
            let Some((public_handle, point)) =
                pool_label.as_ref().and_then(|l| pool_publics.remove(l))
            else {
                continue;
            };
            let id_bytes = id.as_str().as_bytes().to_vec();
            session.update_attributes(
                public_handle,
                &[Attribute::Id(id_bytes.clone()), Attribute::Label(id_bytes)],
            )?;
            public_keys.insert(id.clone(), point);
            tracing::warn!(key_id = %id, "completed a pool binding interrupted by a crash");
            break;
        }
    }
    let mut index = BTreeMap::new();
    for (id, candidates) in private_keys {
        let Some(public) = public_keys.get(&id) else {
            tracing::warn!(key_id = %id, "skipping a private key without its public key");
            continue;
        };
        let mut good = None;
        for (handle, pool_label) in &candidates {
            let signs = match pair_matches(session, *handle, public) {
                Ok(signs) => signs,
                // SoftHSM answers CKR_GENERAL_ERROR for a torn object too; only a key made
                // by CreateKey (pool label) is given that benefit of the doubt.
                Err(e)
                    if object_unusable(&e)
                        || (pool_label.is_some()
                            && matches!(e, CkError::Pkcs11(RvError::GeneralError, _))) =>
                {
                    tracing::warn!(key_id = %id, error = %e, "a private key under this id cannot sign");
                    false
                }
                Err(e) => return Err(e.into()),
            };
            match (signs, pool_label.is_some()) {
                (true, _) if good.is_some() => {
                    return Err(inconsistent(&id, "two private keys share this CKA_ID"));
                }
                (true, _) => good = Some(*handle),
                (false, true) => tracing::warn!(
                    key_id = %id,
                    "skipping the leftover of a key creation a crash cut short"
                ),
                (false, false) if candidates.len() > 1 => {
                    return Err(inconsistent(&id, "two private keys share this CKA_ID"));
                }
                (false, false) => {
                    return Err(inconsistent(
                        &id,
                        "its private key does not sign for the public key with the same CKA_ID",
                    ));
                }
            }
        }
        if let Some(private) = good {
            index.insert(
                id,
                IndexedKey {
                    private,
                    public: *public,
                },
            );
        }
    }
    let mut pool = VecDeque::new();
    for (pool_id, private) in pool_privates {
        match pool_publics.remove(&pool_id) {
            Some((public_handle, public)) => pool.push_back(PoolKey {
                private,
                public_handle,
                public,
                generated_here: false,
            }),
            None => tracing::warn!(
                pool_id = %String::from_utf8_lossy(&pool_id),
                "skipping a pool private key without its public key"
            ),
        }
    }
    // Creation markers: a key that exists may lack its `created` record; a marker without a
    // key is what a crash before the key existed leaves, and is freed for reuse.
    let mut unrecorded = Vec::new();
    let mut markers = Markers::default();
    let mut free_markers = Vec::new();
    let marker_template = [
        Attribute::Class(ObjectClass::DATA),
        Attribute::Application(PENDING_APPLICATION.as_bytes().to_vec()),
    ];
    for handle in session.find_objects(&marker_template)? {
        let label = session
            .get_attributes(handle, &[AttributeType::Label])
            .ok()
            .and_then(|attrs| {
                attrs.into_iter().find_map(|a| match a {
                    Attribute::Label(bytes) => Some(bytes),
                    _ => None,
                })
            });
        let Some(label) = label else {
            // Torn by a crash during its rewrite: it names nothing anyone relies on (a
            // marker is rewritten only before its keys are bound or after their records are
            // durable).
            if let Err(e) = session.destroy_object(handle) {
                tracing::warn!(error = %e, "could not destroy an unreadable key creation marker");
            }
            continue;
        };
        if label == FREE_MARKER_LABEL.as_bytes() {
            free_markers.push(handle);
            continue;
        }
        // The ids it names that exist may lack their `created` record; the others never
        // got a key (the crash came before their binding's commit point).
        let named: Vec<KeyId> = label
            .split(|b| *b == b' ')
            .filter_map(key_id_from_bytes)
            .filter(|id| index.contains_key(id) && !markers.by_id.contains_key(id))
            .collect();
        if !named.is_empty() {
            unrecorded.extend(named.iter().cloned());
            markers.named(handle, named);
            continue;
        }
        match session.update_attributes(
            handle,
            &[Attribute::Label(FREE_MARKER_LABEL.as_bytes().to_vec())],
        ) {
            Ok(()) => free_markers.push(handle),
            Err(e) => {
                tracing::warn!(error = %e, "could not free a stale key creation marker");
            }
        }
    }
    Ok(TokenKeys {
        index,
        pool,
        unrecorded,
        markers,
        free_markers,
    })
}

/// A private key object under a key id, with its label when that is a pool id (a key
/// `CreateKey` made).
type PrivateCandidate = (ObjectHandle, Option<Vec<u8>>);

/// Errors from using one object that mean the object itself is broken (a torn write), not the
/// token.
fn object_unusable(err: &CkError) -> bool {
    matches!(
        err,
        CkError::Pkcs11(
            RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::KeyFunctionNotPermitted
                | RvError::KeyTypeInconsistent
                | RvError::TemplateIncomplete
                | RvError::AttributeTypeInvalid,
            _
        )
    )
}

/// A creation marker labelled `label` (see [`PENDING_APPLICATION`] and [`marker_label`]).
fn pending_marker(label: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Application(PENDING_APPLICATION.as_bytes().to_vec()),
        Attribute::Label(label.to_vec()),
    ]
}

/// Stores a creation marker labelled `label` (see [`marker_label`]): relabels `free` (a marker
/// naming no key) when there is one, else creates a marker object.
fn mark(
    session: &Session,
    free: Option<ObjectHandle>,
    label: &[u8],
) -> std::result::Result<ObjectHandle, CkError> {
    match free {
        Some(marker) => {
            session.update_attributes(marker, &[Attribute::Label(label.to_vec())])?;
            Ok(marker)
        }
        None => session.create_object(&pending_marker(label)),
    }
}

/// Binds a pool key to the key id `id` (a creation marker already names it): checks its pair
/// (when it was found in the token rather than generated by this process), then commits (the
/// private key's `CKA_ID`) and renames the public key. A pool key that cannot sign for its
/// public key is refused as [`Failure::Inconsistent`] before anything is written.
fn bind_pool_key(session: &Session, key: &PoolKey, id: &[u8]) -> std::result::Result<(), Failure> {
    // Every token operation costs SoftHSM a rescan of the token directory: a pair this
    // process generated is not checked again on the request path.
    // A torn pool key (a SIGKILL during its generation) makes SoftHSM answer even
    // CKR_GENERAL_ERROR: whatever the error, this pool key is skipped, not the token declared
    // lost (which would rebuild the same pool and meet the same key again).
    let signs = key.generated_here
        || match pair_matches(session, key.private, &key.public) {
            Ok(signs) => signs,
            Err(e) if session_broken(&e) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "a pool key cannot sign");
                false
            }
        };
    if !signs {
        return Err(Failure::Inconsistent(
            "a pool private key does not sign for its public key".into(),
        ));
    }
    // The commit point: one attribute of one object.
    session.update_attributes(key.private, &[Attribute::Id(id.to_vec())])?;
    session.update_attributes(
        key.public_handle,
        &[Attribute::Id(id.to_vec()), Attribute::Label(id.to_vec())],
    )?;
    Ok(())
}

fn inconsistent(id: &KeyId, why: &str) -> Failure {
    Failure::Inconsistent(format!(
        "key {id}: {why}; signerd will not guess which object is the key (fix the token)"
    ))
}

/// Whether `private` signs for `public`: a fixed message signed in the token, verified here.
fn pair_matches(
    session: &Session,
    private: ObjectHandle,
    public: &PublicKey,
) -> std::result::Result<bool, CkError> {
    let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
    let signature = session.sign(&mechanism, private, PAIR_CHECK_MESSAGE)?;
    let (Ok(verifier), Ok(signature)) = (
        VerifyingKey::from_bytes(&public.0),
        <[u8; 64]>::try_from(signature.as_slice()),
    ) else {
        return Ok(false);
    };
    Ok(verifier
        .verify_strict(PAIR_CHECK_MESSAGE, &Signature::from_bytes(&signature))
        .is_ok())
}

/// Generates a key pair with `CKA_ID` = `id_bytes` (a key id, or a pool id: pool keys get
/// exactly this template too), the public key's `CKA_LABEL` the same and the private key's
/// `private_label` (a pool id while the key's creation is not yet recorded).
fn generate_key_pair(
    session: &Session,
    id_bytes: &[u8],
    private_label: &[u8],
) -> std::result::Result<PoolKey, Failure> {
    let id_bytes = id_bytes.to_vec();
    // No copies: a copy is a second object holding the same key under attributes of the
    // copier's choosing (another CKA_ID, a session object). Modifiable stays true (the default):
    // a key pool binds a pre-generated key to its id by setting CKA_ID and CKA_LABEL, and the
    // attributes that protect the key bytes are one-way by the standard (CKA_SENSITIVE can only
    // become true, CKA_EXTRACTABLE only false). Not destroyable: the key is a Stellar account;
    // deleting it loses the funds, and signerd never deletes a key.
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Copyable(false),
        Attribute::EcParams(ED25519_EC_PARAMS.to_vec()),
        Attribute::Id(id_bytes.clone()),
        Attribute::Label(id_bytes.clone()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Copyable(false),
        Attribute::Destroyable(false),
        Attribute::Sign(true),
        Attribute::Id(id_bytes),
        Attribute::Label(private_label.to_vec()),
    ];
    let (public_handle, private_handle) = session.generate_key_pair(
        &Mechanism::EccEdwardsKeyPairGen,
        &public_template,
        &private_template,
    )?;
    let attrs = session.get_attributes(public_handle, &[AttributeType::EcPoint])?;
    let public = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(bytes) => parse_ec_point(&bytes),
            _ => None,
        })
        .ok_or_else(|| Failure::Internal("new key has an unusable CKA_EC_POINT".into()))?;
    Ok(PoolKey {
        private: private_handle,
        public_handle,
        public,
        generated_here: true,
    })
}

fn key_id_from_bytes(bytes: &[u8]) -> Option<KeyId> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| KeyId::parse(s).ok())
}

/// Reads an Ed25519 `CKA_EC_POINT`, which tokens return either DER-wrapped (an OCTET STRING,
/// as PKCS#11 3.0 specifies) or as the raw 32 bytes (as some tokens do).
pub fn parse_ec_point(bytes: &[u8]) -> Option<PublicKey> {
    let raw = match bytes {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        raw if raw.len() == 32 => raw,
        _ => return None,
    };
    let mut key = [0u8; 32];
    key.copy_from_slice(raw);
    Some(PublicKey(key))
}

fn key_info(id: &KeyId, key: &IndexedKey) -> KeyInfo {
    KeyInfo {
        id: id.clone(),
        public_key: key.public,
        backend: NAME,
    }
}

/// Errors after which the session is unusable but the token may be fine.
fn session_broken(err: &CkError) -> bool {
    matches!(
        err,
        CkError::Pkcs11(RvError::SessionHandleInvalid | RvError::SessionClosed, _)
    )
}

/// Errors that mean the token (or our login, or our index) is gone: reconnect from scratch.
fn token_lost(err: &CkError) -> bool {
    matches!(
        err,
        CkError::Pkcs11(
            RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SlotIdInvalid
                | RvError::CryptokiNotInitialized
                | RvError::UserNotLoggedIn
                | RvError::GeneralError
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid,
            _
        )
    )
}

// Poisoning only records that another thread panicked while holding the lock; the protected
// values (a session list, an index, an Option<Arc>) stay consistent, so serving continues.
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

    #[test]
    fn ec_point_accepts_der_and_raw() {
        let raw = [7u8; 32];
        let mut der = vec![0x04, 0x20];
        der.extend_from_slice(&raw);
        assert_eq!(parse_ec_point(&der), Some(PublicKey(raw)));
        assert_eq!(parse_ec_point(&raw), Some(PublicKey(raw)));
    }

    #[test]
    fn ec_point_rejects_other_lengths() {
        assert_eq!(parse_ec_point(&[0x04, 0x20, 1, 2]), None);
        assert_eq!(parse_ec_point(&[0u8; 31]), None);
        assert_eq!(parse_ec_point(&[0u8; 65]), None);
    }
}
