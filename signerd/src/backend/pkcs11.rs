//! The PKCS#11 backend (cryptoki): keys generated inside a token as non-extractable, sensitive
//! Ed25519 key pairs, `CKA_ID` = the key id.
//!
//! One `Pkcs11` context per process. At connect time the slot is found by token label, the user
//! logs in, a pool of sessions is opened and an id → handle index is built with a single
//! `C_FindObjects` pass; the signing path never searches the token again.
//!
//! A session that breaks is replaced. When the token itself is gone (removed, device error,
//! logged out) the whole connection is dropped, RPCs answer `UNAVAILABLE`, and the health probe
//! reconnects (finalize, initialize, find by label, log in, rebuild the index) until it succeeds.

use std::collections::BTreeMap;
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
use secrecy::SecretString;
use tokio::sync::Semaphore;

use super::KeyBackend;
use crate::config::Pkcs11Config;
use crate::error::{Error, Result};
use crate::keys::{KeyId, KeyInfo, PublicKey};

/// DER encoding of the Ed25519 curve OID 1.3.101.112, the `CKA_EC_PARAMS` of an Ed25519 key.
pub const ED25519_EC_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

const NAME: &str = "pkcs11";

/// Why one PKCS#11 operation failed.
#[derive(Debug)]
enum Failure {
    /// The token said no.
    Token(CkError),
    /// Something on our side (a worker task died, the token returned nonsense).
    Internal(String),
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
            Failure::Internal(m) => f.write_str(m),
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

/// A live connection to the token: context, logged-in session pool and key index.
struct Token {
    pkcs11: Pkcs11,
    slot: Slot,
    idle_sessions: Mutex<Vec<Session>>,
    /// One permit per idle session: holding a permit guarantees a session to pop.
    permits: Arc<Semaphore>,
    index: RwLock<BTreeMap<KeyId, IndexedKey>>,
}

impl Drop for Token {
    fn drop(&mut self) {
        lock(&self.idle_sessions).clear();
        if let Err(e) = self.pkcs11.clone().finalize() {
            tracing::debug!(error = %e, "C_Finalize failed while dropping the token connection");
        }
    }
}

/// The PKCS#11 backend.
pub struct Pkcs11Backend {
    settings: Settings,
    /// `None` while the token is unavailable.
    token: RwLock<Option<Arc<Token>>>,
    /// One reconnect attempt at a time.
    reconnecting: tokio::sync::Mutex<()>,
}

impl Pkcs11Backend {
    /// Connects to the token. Fails when the module cannot be loaded, no token has the label or
    /// the PIN is refused: signerd does not start half-configured.
    pub async fn connect(config: &Pkcs11Config) -> Result<Self> {
        let settings = Settings {
            module: config.module.clone(),
            token_label: config.token_label.clone(),
            pin: config.read_pin()?,
            sessions: config.sessions,
        };
        let backend = Pkcs11Backend {
            settings,
            token: RwLock::new(None),
            reconnecting: tokio::sync::Mutex::new(()),
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
        let settings = Settings {
            module: self.settings.module.clone(),
            token_label: self.settings.token_label.clone(),
            pin: self.settings.pin.clone(),
            sessions: self.settings.sessions,
        };
        let token = tokio::task::spawn_blocking(move || open_token(&settings))
            .await
            .map_err(|e| Error::Backend(format!("pkcs11 connect task: {e}")))??;
        let keys = read(&token.index).len();
        *write(&self.token) = Some(Arc::new(token));
        tracing::info!(keys, label = %self.settings.token_label, "pkcs11 token connected");
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
        if matches!(&err, Failure::Token(e) if token_lost(e)) {
            self.mark_lost(token, &err);
            Error::Unavailable("pkcs11 token unavailable".into())
        } else {
            tracing::error!(error = %err, "pkcs11 operation failed");
            Error::Backend(err.to_string())
        }
    }
}

#[async_trait]
impl KeyBackend for Pkcs11Backend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_key(&self, id: &KeyId) -> Result<(KeyInfo, bool)> {
        let token = self.token()?;
        if let Some(key) = read(&token.index).get(id) {
            return Ok((key_info(id, key), false));
        }
        let key_id = id.clone();
        let created = run(&token, move |session| generate_key_pair(session, &key_id))
            .await
            .map_err(|e| self.fail(&token, e))?;
        write(&token.index).insert(id.clone(), created);
        tracing::info!(key_id = %id, public_key = %created.public.account_id(), "key created in pkcs11 token");
        Ok((key_info(id, &created), true))
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<KeyInfo>> {
        let token = self.token()?;
        let index = read(&token.index);
        Ok(index.get(id).map(|key| key_info(id, key)))
    }

    fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let token = self.token()?;
        let index = read(&token.index);
        Ok(index.iter().map(|(id, key)| key_info(id, key)).collect())
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

    async fn check_health(&self) -> bool {
        match self.token() {
            Ok(token) => {
                let (pkcs11, slot) = (token.pkcs11.clone(), token.slot);
                let probe = run(&token, move |session| {
                    session.get_session_info()?;
                    pkcs11.get_token_info(slot)?;
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

/// Runs one blocking PKCS#11 operation on a pooled session. A session that turns out broken is
/// replaced and the operation retried once on the new session.
async fn run<T, F>(token: &Arc<Token>, op: F) -> std::result::Result<T, Failure>
where
    T: Send + 'static,
    F: Fn(&Session) -> std::result::Result<T, Failure> + Send + 'static,
{
    let permit = token
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Failure::Internal("pkcs11 session pool closed".into()))?;
    let token = token.clone();
    let task = tokio::task::spawn_blocking(move || {
        let Some(mut session) = lock(&token.idle_sessions).pop() else {
            // Only reachable if the permit/session invariant broke; fail this request, not the process.
            return Err(Failure::Internal("no idle pkcs11 session".into()));
        };
        let mut result = op(&session);
        if matches!(&result, Err(Failure::Token(e)) if session_broken(e)) {
            drop(session);
            match token.pkcs11.open_rw_session(token.slot) {
                Ok(fresh) => {
                    tracing::warn!("replaced a broken pkcs11 session");
                    session = fresh;
                    result = op(&session);
                }
                Err(e) => {
                    // The pool shrinks by one; the token-lost path rebuilds it on reconnect.
                    permit.forget();
                    return Err(e.into());
                }
            }
        }
        lock(&token.idle_sessions).push(session);
        drop(permit);
        result
    });
    task.await
        .map_err(|e| Failure::Internal(format!("pkcs11 worker task failed: {e}")))?
}

fn open_token(settings: &Settings) -> Result<Token> {
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
    // From here on, failures must finalize the context again.
    let finalize_on_error = |err: Error| {
        let _ = pkcs11.clone().finalize();
        err
    };
    let slot = find_slot(&pkcs11, &settings.token_label).map_err(finalize_on_error)?;
    let mut sessions = Vec::with_capacity(settings.sessions);
    for _ in 0..settings.sessions {
        let session = pkcs11
            .open_rw_session(slot)
            .map_err(|e| finalize_on_error(p11_err("open session", e)))?;
        sessions.push(session);
    }
    match sessions[0].login(UserType::User, Some(&settings.pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            drop(sessions);
            return Err(finalize_on_error(Error::Config(
                "backend.pkcs11: the token refused the pin".into(),
            )));
        }
        Err(e) => {
            drop(sessions);
            return Err(finalize_on_error(p11_err("login", e)));
        }
    }
    let index = match build_index(&sessions[0]) {
        Ok(index) => index,
        Err(e) => {
            drop(sessions);
            return Err(finalize_on_error(p11_err("index keys", e)));
        }
    };
    Ok(Token {
        pkcs11: pkcs11.clone(),
        slot,
        permits: Arc::new(Semaphore::new(sessions.len())),
        idle_sessions: Mutex::new(sessions),
        index: RwLock::new(index),
    })
}

fn find_slot(pkcs11: &Pkcs11, label: &str) -> Result<Slot> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| Error::Unavailable(format!("pkcs11 list slots: {e}")))?;
    for slot in slots {
        if let Ok(info) = pkcs11.get_token_info(slot) {
            if info.label() == label {
                return Ok(slot);
            }
        }
    }
    Err(Error::Unavailable(format!(
        "pkcs11: no token labelled {label:?}"
    )))
}

/// One pass over the token's Ed25519 keys, pairing private and public objects by `CKA_ID`.
fn build_index(session: &Session) -> std::result::Result<BTreeMap<KeyId, IndexedKey>, CkError> {
    let mut public_keys = BTreeMap::new();
    let public_template = [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
    ];
    for handle in session.find_objects(&public_template)? {
        let attrs = session.get_attributes(handle, &[AttributeType::Id, AttributeType::EcPoint])?;
        let (mut id, mut point) = (None, None);
        for attr in attrs {
            match attr {
                Attribute::Id(bytes) => id = key_id_from_bytes(&bytes),
                Attribute::EcPoint(bytes) => point = parse_ec_point(&bytes),
                _ => {}
            }
        }
        match (id, point) {
            (Some(id), Some(point)) => {
                public_keys.insert(id, point);
            }
            _ => tracing::warn!(
                "skipping an Ed25519 public key with an unusable CKA_ID or CKA_EC_POINT"
            ),
        }
    }
    let mut index = BTreeMap::new();
    let private_template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
    ];
    for handle in session.find_objects(&private_template)? {
        let attrs = session.get_attributes(handle, &[AttributeType::Id])?;
        let Some(id) = attrs.into_iter().find_map(|a| match a {
            Attribute::Id(bytes) => key_id_from_bytes(&bytes),
            _ => None,
        }) else {
            tracing::warn!("skipping an Ed25519 private key whose CKA_ID is not a key id");
            continue;
        };
        let Some(public) = public_keys.get(&id) else {
            tracing::warn!(key_id = %id, "skipping a private key without its public key");
            continue;
        };
        if index.contains_key(&id) {
            tracing::warn!(key_id = %id, "two private keys share one CKA_ID; using the first");
            continue;
        }
        index.insert(
            id,
            IndexedKey {
                private: handle,
                public: *public,
            },
        );
    }
    Ok(index)
}

fn generate_key_pair(session: &Session, id: &KeyId) -> std::result::Result<IndexedKey, Failure> {
    let id_bytes = id.as_str().as_bytes().to_vec();
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(ED25519_EC_PARAMS.to_vec()),
        Attribute::Id(id_bytes.clone()),
        Attribute::Label(id_bytes.clone()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Id(id_bytes.clone()),
        Attribute::Label(id_bytes),
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
    Ok(IndexedKey {
        private: private_handle,
        public,
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
