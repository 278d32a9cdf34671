//! A fake Google Cloud KMS: a local HTTP server speaking the KMS v1 REST API (paths, JSON
//! field names, proto3 JSON encodings) for the calls signerd's `gcp-kms` backend makes, so the
//! real `google-cloud-kms-v1` client can be tested end to end without the cloud.
//!
//! Not for production: keys are ordinary Ed25519 keys (ed25519-dalek) held in memory. What is
//! real: the signatures, the CRC32C checksums (`dataCrc32c` is checked, `signatureCrc32c` and
//! `pemCrc32c` are computed), the PEM SPKI public keys, the Google error format
//! (`{"error": {"code", "message", "status"}}`), proto3 JSON (camelCase fields, int64 as
//! strings, bytes as base64, enums as names or, when the client asks with
//! `$alt=json;enum-encoding=int` as the official client does, as numbers) and paging (the fake
//! returns at most [`FakeKms::set_max_page_size`] keys per page, 2 by default, so clients must
//! follow `nextPageToken`). New key versions start in `PENDING_GENERATION` and become `ENABLED`
//! after [`FakeKms::set_pending_polls`] reads (1 by default), as Cloud HSM keys do.
//!
//! Served: `CreateKeyRing`, `GetKeyRing`, `CreateCryptoKey`, `GetCryptoKey`,
//! `ListCryptoKeys`, `GetCryptoKeyVersion`, `GetPublicKey`, `AsymmetricSign`. Only Ed25519
//! signing keys (`ASYMMETRIC_SIGN` + `EC_SIGN_ED25519`) can be created.
//!
//! Faults on demand, through the in-process handle ([`FakeKms::inject`]) or the control API
//! (`POST /control/fault` with a JSON [`FaultPlan`], `DELETE /control/fault`,
//! `POST /control/latency` with `{"ms": N}`, `GET /control/calls`): HTTP 503 `UNAVAILABLE`,
//! HTTP 429 `RESOURCE_EXHAUSTED`, a wrong `signatureCrc32c`, a wrong key version `name`,
//! `verifiedDataCrc32c = false`, a corrupt signature with a matching CRC, and added latency.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Something the fake does wrong on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 503 with status `UNAVAILABLE`.
    Unavailable,
    /// HTTP 429 with status `RESOURCE_EXHAUSTED`.
    TooManyRequests,
    /// A sign response whose `signatureCrc32c` does not match the signature.
    WrongSignatureCrc32c,
    /// A sign response naming another key version than the one asked for.
    WrongKeyName,
    /// A sign response with `verifiedDataCrc32c = false` (as if the checksum was not seen).
    DataCrc32cNotVerified,
    /// A sign response whose signature is wrong but whose CRC32C matches it (only a signature
    /// check against the public key catches this).
    CorruptSignature,
}

impl Fault {
    /// Faults that replace the whole answer with an error (the others corrupt sign responses).
    fn is_error(self) -> bool {
        matches!(self, Fault::Unavailable | Fault::TooManyRequests)
    }
}

/// Which calls a fault hits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every KMS call.
    #[default]
    All,
    /// `AsymmetricSign` only.
    Sign,
    /// `UpdateCryptoKey` only (the audit anchor's label updates).
    UpdateCryptoKey,
}

/// A fault, the calls it hits and how many times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// What goes wrong.
    pub fault: Fault,
    /// Which calls (corrupt-response faults only ever hit `AsymmetricSign`).
    #[serde(default)]
    pub scope: Scope,
    /// How many calls it hits; `None`: every call until cleared.
    #[serde(default)]
    pub count: Option<u32>,
}

impl FaultPlan {
    /// `fault` on every call it applies to, until cleared.
    pub fn always(fault: Fault) -> FaultPlan {
        FaultPlan {
            fault,
            scope: Scope::All,
            count: None,
        }
    }

    /// `fault` on the next `count` calls it applies to.
    pub fn times(fault: Fault, count: u32) -> FaultPlan {
        FaultPlan {
            fault,
            scope: Scope::All,
            count: Some(count),
        }
    }

    /// Restricts the plan to `AsymmetricSign`.
    pub fn on_sign(mut self) -> FaultPlan {
        self.scope = Scope::Sign;
        self
    }

    /// Restricts the plan (an error fault) to `UpdateCryptoKey`.
    pub fn on_update(mut self) -> FaultPlan {
        self.scope = Scope::UpdateCryptoKey;
        self
    }
}

/// The KMS calls the fake serves (names as in the API, used by [`FakeKms::calls`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KmsCall {
    /// `POST /v1/{parent}/keyRings`.
    CreateKeyRing,
    /// `GET /v1/{keyRing}`.
    GetKeyRing,
    /// `POST /v1/{keyRing}/cryptoKeys`.
    CreateCryptoKey,
    /// `GET /v1/{keyRing}/cryptoKeys`.
    ListCryptoKeys,
    /// `GET /v1/{cryptoKey}`.
    GetCryptoKey,
    /// `GET /v1/{cryptoKeyVersion}`.
    GetCryptoKeyVersion,
    /// `GET /v1/{cryptoKeyVersion}/publicKey`.
    GetPublicKey,
    /// `POST /v1/{cryptoKeyVersion}:asymmetricSign`.
    AsymmetricSign,
    /// `PATCH /v1/{cryptoKey}?updateMask=labels`.
    UpdateCryptoKey,
}

impl KmsCall {
    const ALL: [KmsCall; 9] = [
        KmsCall::CreateKeyRing,
        KmsCall::GetKeyRing,
        KmsCall::CreateCryptoKey,
        KmsCall::ListCryptoKeys,
        KmsCall::GetCryptoKey,
        KmsCall::GetCryptoKeyVersion,
        KmsCall::GetPublicKey,
        KmsCall::AsymmetricSign,
        KmsCall::UpdateCryptoKey,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

const PURPOSE_ASYMMETRIC_SIGN: (&str, i64) = ("ASYMMETRIC_SIGN", 5);
const ALGORITHM_EC_SIGN_ED25519: (&str, i64) = ("EC_SIGN_ED25519", 40);
const PROTECTION_LEVELS: [(&str, i64); 2] = [("SOFTWARE", 1), ("HSM", 2)];
const STATE_ENABLED: (&str, i64) = ("ENABLED", 1);
const STATE_PENDING_GENERATION: (&str, i64) = ("PENDING_GENERATION", 5);
const PUBLIC_KEY_FORMAT_PEM: (&str, i64) = ("PEM", 1);
/// The fake has no clock worth reporting; every resource carries this creation time.
const CREATE_TIME: &str = "2025-01-01T00:00:00Z";

struct FakeKey {
    signing: SigningKey,
    protection_level: i64,
    /// Reads of version 1 still to answer `PENDING_GENERATION`.
    pending_reads: u32,
    labels: BTreeMap<String, String>,
}

#[derive(Default)]
struct Store {
    key_rings: BTreeMap<String, ()>,
    /// By full CryptoKey name.
    keys: BTreeMap<String, FakeKey>,
}

struct Shared {
    store: Mutex<Store>,
    fault: Mutex<Option<FaultPlan>>,
    latency_ms: AtomicU64,
    pending_polls: AtomicU32,
    max_page_size: AtomicUsize,
    calls: [AtomicU64; KmsCall::ALL.len()],
    /// `AsymmetricSign` calls being answered right now, and the most there ever were at once.
    signs_in_flight: AtomicU64,
    max_signs_in_flight: AtomicU64,
}

/// A running fake KMS on 127.0.0.1. Stops when dropped.
pub struct FakeKms {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKms {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeKms {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> Result<FakeKms> {
        FakeKms::start_on(([127, 0, 0, 1], 0).into()).await
    }

    /// Starts on `addr` (port 0 picks a free port).
    pub async fn start_on(addr: SocketAddr) -> Result<FakeKms> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("fake kms: binding {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            fault: Mutex::new(None),
            latency_ms: AtomicU64::new(0),
            pending_polls: AtomicU32::new(1),
            max_page_size: AtomicUsize::new(2),
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            signs_in_flight: AtomicU64::new(0),
            max_signs_in_flight: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .route("/control/fault", post(set_fault).delete(clear_fault))
            .route("/control/latency", post(set_latency))
            .route("/control/calls", get(call_counts))
            .fallback(kms_api)
            .with_state(shared.clone());
        // Responses go out at once, as from a real front end; with Nagle on, a response
        // written in two parts can wait for the client's delayed ACK (tens of ms).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake kms stopped: {e}");
            }
        });
        Ok(FakeKms {
            addr,
            shared,
            server,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint to give the client (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Installs a fault (replacing any other).
    pub fn inject(&self, plan: FaultPlan) {
        *lock(&self.shared.fault) = Some(plan);
    }

    /// Removes the fault.
    pub fn clear_fault(&self) {
        *lock(&self.shared.fault) = None;
    }

    /// Adds this much latency to every KMS call.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// How many reads of a new key's version answer `PENDING_GENERATION` before `ENABLED`.
    pub fn set_pending_polls(&self, reads: u32) {
        self.shared.pending_polls.store(reads, Ordering::Relaxed);
    }

    /// The most keys one `ListCryptoKeys` page returns.
    pub fn set_max_page_size(&self, keys: usize) {
        self.shared
            .max_page_size
            .store(keys.max(1), Ordering::Relaxed);
    }

    /// How many times `call` was received (faulted calls included).
    pub fn calls(&self, call: KmsCall) -> u64 {
        self.shared.calls[call.index()].load(Ordering::Relaxed)
    }

    /// The most `AsymmetricSign` calls the fake was answering at one time (latency included).
    pub fn max_concurrent_signs(&self) -> u64 {
        self.shared.max_signs_in_flight.load(Ordering::SeqCst)
    }

    /// The raw public key of a CryptoKey (full resource name), if it exists.
    pub fn public_key(&self, crypto_key: &str) -> Option<[u8; 32]> {
        lock(&self.shared.store)
            .keys
            .get(crypto_key)
            .map(|k| k.signing.verifying_key().to_bytes())
    }

    /// The protection level (`HSM`, `SOFTWARE`) of a CryptoKey (full resource name).
    pub fn protection_level(&self, crypto_key: &str) -> Option<&'static str> {
        lock(&self.shared.store)
            .keys
            .get(crypto_key)
            .map(|k| protection_level_name(k.protection_level).0)
    }

    /// The labels of CryptoKey `key_id` in `key_ring`, if it exists.
    pub fn labels(&self, key_ring: &str, key_id: &str) -> Option<BTreeMap<String, String>> {
        lock(&self.shared.store)
            .keys
            .get(&format!("{key_ring}/cryptoKeys/{key_id}"))
            .map(|k| k.labels.clone())
    }

    /// Replaces the labels of CryptoKey `key_id` in `key_ring` (as an operator would); `false`
    /// when there is no such key.
    pub fn set_labels(
        &self,
        key_ring: &str,
        key_id: &str,
        labels: BTreeMap<String, String>,
    ) -> bool {
        match lock(&self.shared.store)
            .keys
            .get_mut(&format!("{key_ring}/cryptoKeys/{key_id}"))
        {
            Some(key) => {
                key.labels = labels;
                true
            }
            None => false,
        }
    }

    /// Whether the store holds CryptoKey `key_id` in `key_ring`.
    pub fn has_key(&self, key_ring: &str, key_id: &str) -> bool {
        lock(&self.shared.store)
            .keys
            .contains_key(&format!("{key_ring}/cryptoKeys/{key_id}"))
    }

    /// Creates an Ed25519 signing key directly in the store (as another signerd or an operator
    /// would have), already enabled; creates the key ring too if needed.
    pub fn preload_key(&self, key_ring: &str, key_id: &str) -> Result<[u8; 32]> {
        let signing = SigningKey::from_bytes(&random_seed()?);
        let public = signing.verifying_key().to_bytes();
        let mut store = lock(&self.shared.store);
        store.key_rings.insert(key_ring.to_owned(), ());
        store.keys.insert(
            format!("{key_ring}/cryptoKeys/{key_id}"),
            FakeKey {
                signing,
                protection_level: 2,
                pending_reads: 0,
                labels: BTreeMap::new(),
            },
        );
        Ok(public)
    }
}

fn random_seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    Ok(seed)
}

// The fake's state is only touched in short critical sections without awaits; a panic in one
// leaves whole values behind, so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn set_fault(State(shared): State<Arc<Shared>>, Json(plan): Json<FaultPlan>) -> StatusCode {
    *lock(&shared.fault) = Some(plan);
    StatusCode::NO_CONTENT
}

async fn clear_fault(State(shared): State<Arc<Shared>>) -> StatusCode {
    *lock(&shared.fault) = None;
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Latency {
    ms: u64,
}

async fn set_latency(State(shared): State<Arc<Shared>>, Json(l): Json<Latency>) -> StatusCode {
    shared.latency_ms.store(l.ms, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn call_counts(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let counts: serde_json::Map<String, Value> = KmsCall::ALL
        .iter()
        .map(|c| {
            (
                format!("{c:?}"),
                json!(shared.calls[c.index()].load(Ordering::Relaxed)),
            )
        })
        .collect();
    Json(Value::Object(counts))
}

/// A routed KMS request.
enum Route {
    CreateKeyRing { parent: String },
    GetKeyRing { name: String },
    CreateCryptoKey { key_ring: String },
    ListCryptoKeys { key_ring: String },
    GetCryptoKey { name: String },
    GetCryptoKeyVersion { name: String },
    GetPublicKey { version: String },
    AsymmetricSign { version: String },
    UpdateCryptoKey { name: String },
}

impl Route {
    fn call(&self) -> KmsCall {
        match self {
            Route::CreateKeyRing { .. } => KmsCall::CreateKeyRing,
            Route::GetKeyRing { .. } => KmsCall::GetKeyRing,
            Route::CreateCryptoKey { .. } => KmsCall::CreateCryptoKey,
            Route::ListCryptoKeys { .. } => KmsCall::ListCryptoKeys,
            Route::GetCryptoKey { .. } => KmsCall::GetCryptoKey,
            Route::GetCryptoKeyVersion { .. } => KmsCall::GetCryptoKeyVersion,
            Route::GetPublicKey { .. } => KmsCall::GetPublicKey,
            Route::AsymmetricSign { .. } => KmsCall::AsymmetricSign,
            Route::UpdateCryptoKey { .. } => KmsCall::UpdateCryptoKey,
        }
    }

    /// Maps `METHOD /v1/...` to a call, checking the resource name's shape.
    fn parse(method: &Method, path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v1/")?;
        if let Some(version) = rest.strip_suffix(":asymmetricSign") {
            return (method == Method::POST && is_version_name(version)).then(|| {
                Route::AsymmetricSign {
                    version: version.to_owned(),
                }
            });
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let shape_ok = segments.iter().enumerate().all(|(i, s)| {
            let literal = match i {
                0 => Some("projects"),
                2 => Some("locations"),
                4 => Some("keyRings"),
                6 => Some("cryptoKeys"),
                8 => Some("cryptoKeyVersions"),
                10 => Some("publicKey"),
                _ => None,
            };
            literal.map_or(!s.is_empty(), |l| *s == l)
        });
        if !shape_ok {
            return None;
        }
        let name = |n: usize| segments[..n].join("/");
        let get = method == Method::GET;
        let post = method == Method::POST;
        match segments.len() {
            5 if post => Some(Route::CreateKeyRing { parent: name(4) }),
            6 if get => Some(Route::GetKeyRing { name: name(6) }),
            7 if post => Some(Route::CreateCryptoKey { key_ring: name(6) }),
            7 if get => Some(Route::ListCryptoKeys { key_ring: name(6) }),
            8 if get => Some(Route::GetCryptoKey { name: name(8) }),
            8 if method == Method::PATCH => Some(Route::UpdateCryptoKey { name: name(8) }),
            10 if get => Some(Route::GetCryptoKeyVersion { name: name(10) }),
            11 if get => Some(Route::GetPublicKey { version: name(10) }),
            _ => None,
        }
    }
}

fn is_version_name(name: &str) -> bool {
    let segments: Vec<&str> = name.split('/').collect();
    segments.len() == 10
        && segments[0] == "projects"
        && segments[2] == "locations"
        && segments[4] == "keyRings"
        && segments[6] == "cryptoKeys"
        && segments[8] == "cryptoKeyVersions"
        && segments.iter().all(|s| !s.is_empty())
}

/// A Google API error: `{"error": {"code", "message", "status"}}` with the matching HTTP status.
fn api_error(http: StatusCode, status: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "error": {
            "code": http.as_u16(),
            "message": message.into(),
            "status": status,
        }
    });
    (http, Json(body)).into_response()
}

fn not_found(what: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("{what} not found."),
    )
}

fn invalid(message: impl Into<String>) -> Response {
    api_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

/// How enums are written: numbers when the client asked for `enum-encoding=int`.
#[derive(Clone, Copy)]
struct Enums {
    as_numbers: bool,
}

impl Enums {
    fn of(query: &HashMap<String, String>) -> Enums {
        Enums {
            as_numbers: query
                .get("$alt")
                .is_some_and(|alt| alt.contains("enum-encoding=int")),
        }
    }

    fn write(self, (name, number): (&str, i64)) -> Value {
        if self.as_numbers {
            json!(number)
        } else {
            json!(name)
        }
    }
}

/// Reads an enum sent as a name or a number.
fn read_enum(value: Option<&Value>, known: &[(&str, i64)]) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => known.iter().find(|(name, _)| name == s).map(|(_, n)| *n),
        _ => None,
    }
}

fn protection_level_name(level: i64) -> (&'static str, i64) {
    PROTECTION_LEVELS
        .iter()
        .copied()
        .find(|(_, n)| *n == level)
        .unwrap_or(("PROTECTION_LEVEL_UNSPECIFIED", 0))
}

fn crc32c_string(bytes: &[u8]) -> Value {
    // proto3 JSON writes int64 as a decimal string.
    json!(crc32c::crc32c(bytes).to_string())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn spki_pem(public: &[u8; 32]) -> String {
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(public);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        b64(&der)
    )
}

async fn kms_api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(route) = Route::parse(&method, uri.path()) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("the fake kms does not serve {method} {}", uri.path()),
        );
    };
    let call = route.call();
    shared.calls[call.index()].fetch_add(1, Ordering::Relaxed);
    let _in_flight = (call == KmsCall::AsymmetricSign).then(|| SignInFlight::enter(&shared));
    let latency = shared.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let fault = take_fault(&shared, call);
    match fault {
        Some(Fault::Unavailable) => {
            return api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is currently unavailable.",
            );
        }
        Some(Fault::TooManyRequests) => {
            return api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Cryptographic requests'.",
            );
        }
        _ => {}
    }
    let enums = Enums::of(&query);
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return invalid(format!("Invalid JSON payload received. {e}")),
        }
    };
    match route {
        Route::CreateKeyRing { parent } => create_key_ring(&shared, &parent, &query),
        Route::GetKeyRing { name } => {
            if lock(&shared.store).key_rings.contains_key(&name) {
                (
                    StatusCode::OK,
                    Json(json!({"name": name, "createTime": CREATE_TIME})),
                )
                    .into_response()
            } else {
                not_found(&format!("KeyRing {name}"))
            }
        }
        Route::CreateCryptoKey { key_ring } => {
            create_crypto_key(&shared, &key_ring, &query, &body, enums)
        }
        Route::ListCryptoKeys { key_ring } => list_crypto_keys(&shared, &key_ring, &query, enums),
        Route::GetCryptoKey { name } => match lock(&shared.store).keys.get(&name) {
            Some(key) => Json(crypto_key_json(&name, key, enums)).into_response(),
            None => not_found(&format!("CryptoKey {name}")),
        },
        Route::GetCryptoKeyVersion { name } => get_version(&shared, &name, enums),
        Route::GetPublicKey { version } => get_public_key(&shared, &version, enums),
        Route::AsymmetricSign { version } => {
            asymmetric_sign(&shared, &version, &body, enums, fault)
        }
        Route::UpdateCryptoKey { name } => update_crypto_key(&shared, &name, &query, &body, enums),
    }
}

/// Counts one `AsymmetricSign` as in flight while alive (also when the client gives up and the
/// handler is dropped mid-latency).
struct SignInFlight(Arc<Shared>);

impl SignInFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        let now = shared.signs_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_signs_in_flight.fetch_max(now, Ordering::SeqCst);
        SignInFlight(shared.clone())
    }
}

impl Drop for SignInFlight {
    fn drop(&mut self) {
        self.0.signs_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The fault that hits this call, if any, counting it down.
fn take_fault(shared: &Shared, call: KmsCall) -> Option<Fault> {
    let mut slot = lock(&shared.fault);
    let plan = (*slot)?;
    let applies = if plan.fault.is_error() {
        match plan.scope {
            Scope::All => true,
            Scope::Sign => call == KmsCall::AsymmetricSign,
            Scope::UpdateCryptoKey => call == KmsCall::UpdateCryptoKey,
        }
    } else {
        call == KmsCall::AsymmetricSign
    };
    if !applies {
        return None;
    }
    match plan.count {
        Some(0) | Some(1) => *slot = None,
        Some(n) => {
            *slot = Some(FaultPlan {
                count: Some(n - 1),
                ..plan
            })
        }
        None => {}
    }
    if plan.count == Some(0) {
        return None;
    }
    Some(plan.fault)
}

fn valid_id(id: &str, max: usize) -> bool {
    !id.is_empty()
        && id.len() <= max
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn create_key_ring(shared: &Shared, parent: &str, query: &HashMap<String, String>) -> Response {
    let id = query.get("keyRingId").map(String::as_str).unwrap_or("");
    if !valid_id(id, 63) {
        return invalid("keyRingId must match [a-zA-Z0-9_-]{1,63}.");
    }
    let name = format!("{parent}/keyRings/{id}");
    let mut store = lock(&shared.store);
    if store.key_rings.contains_key(&name) {
        return api_error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("KeyRing {name} already exists."),
        );
    }
    store.key_rings.insert(name.clone(), ());
    Json(json!({"name": name, "createTime": CREATE_TIME})).into_response()
}

fn crypto_key_json(name: &str, key: &FakeKey, enums: Enums) -> Value {
    let mut json = json!({
        "name": name,
        "purpose": enums.write(PURPOSE_ASYMMETRIC_SIGN),
        "createTime": CREATE_TIME,
        "versionTemplate": {
            "protectionLevel": enums.write(protection_level_name(key.protection_level)),
            "algorithm": enums.write(ALGORITHM_EC_SIGN_ED25519),
        },
        "destroyScheduledDuration": "2592000s",
    });
    // proto3 JSON leaves an empty map out.
    if !key.labels.is_empty() {
        json["labels"] = json!(key.labels);
    }
    json
}

/// A CryptoKey's `labels` as Cloud KMS checks them: at most 64; keys 1-63 characters starting
/// with a lowercase letter, values at most 63; both only lowercase letters, digits, `_`, `-`.
fn read_labels(body: &Value) -> std::result::Result<BTreeMap<String, String>, String> {
    let Some(labels) = body.get("labels") else {
        return Ok(BTreeMap::new());
    };
    let Some(labels) = labels.as_object() else {
        return Err("labels must be a map of strings".into());
    };
    if labels.len() > 64 {
        return Err("a resource has at most 64 labels".into());
    }
    let allowed = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    };
    let mut read = BTreeMap::new();
    for (key, value) in labels {
        let Some(value) = value.as_str() else {
            return Err(format!("label {key:?}: the value must be a string"));
        };
        let key_ok =
            key.len() <= 63 && key.starts_with(|c: char| c.is_ascii_lowercase()) && allowed(key);
        if !key_ok || value.len() > 63 || !allowed(value) {
            return Err(format!(
                "label {key:?}={value:?} breaks the label requirements"
            ));
        }
        read.insert(key.clone(), value.to_owned());
    }
    Ok(read)
}

/// `PATCH /v1/{cryptoKey.name}?updateMask=labels`: replaces the labels (the only field the fake
/// updates) and answers the updated CryptoKey.
fn update_crypto_key(
    shared: &Shared,
    name: &str,
    query: &HashMap<String, String>,
    body: &Value,
    enums: Enums,
) -> Response {
    match query.get("updateMask").map(String::as_str) {
        Some("labels") => {}
        Some(other) => return invalid(format!("the fake kms only updates labels, not {other:?}")),
        None => return invalid("update_mask is required"),
    }
    if body.get("name").and_then(Value::as_str) != Some(name) {
        return invalid("crypto_key.name must name the CryptoKey of the path");
    }
    let labels = match read_labels(body) {
        Ok(labels) => labels,
        Err(why) => return invalid(why),
    };
    let mut store = lock(&shared.store);
    let Some(key) = store.keys.get_mut(name) else {
        return not_found(&format!("CryptoKey {name}"));
    };
    key.labels = labels;
    Json(crypto_key_json(name, key, enums)).into_response()
}

fn create_crypto_key(
    shared: &Shared,
    key_ring: &str,
    query: &HashMap<String, String>,
    body: &Value,
    enums: Enums,
) -> Response {
    let id = query.get("cryptoKeyId").map(String::as_str).unwrap_or("");
    if !valid_id(id, 63) {
        return invalid("cryptoKeyId must match [a-zA-Z0-9_-]{1,63}.");
    }
    if query
        .get("skipInitialVersionCreation")
        .is_some_and(|v| v == "true")
    {
        return invalid("the fake kms always creates the first version");
    }
    let purpose = read_enum(body.get("purpose"), &[PURPOSE_ASYMMETRIC_SIGN]);
    let template = body.get("versionTemplate");
    let algorithm = read_enum(
        template.and_then(|t| t.get("algorithm")),
        &[ALGORITHM_EC_SIGN_ED25519],
    );
    if purpose != Some(PURPOSE_ASYMMETRIC_SIGN.1) || algorithm != Some(ALGORITHM_EC_SIGN_ED25519.1)
    {
        return invalid("the fake kms only creates ASYMMETRIC_SIGN keys with EC_SIGN_ED25519");
    }
    // Cloud KMS defaults to SOFTWARE when the template names no protection level.
    let protection_level = read_enum(
        template.and_then(|t| t.get("protectionLevel")),
        &PROTECTION_LEVELS,
    )
    .filter(|l| *l != 0)
    .unwrap_or(1);
    if !PROTECTION_LEVELS
        .iter()
        .any(|(_, n)| *n == protection_level)
    {
        return invalid("the fake kms supports protection levels SOFTWARE and HSM");
    }
    let labels = match read_labels(body) {
        Ok(labels) => labels,
        Err(why) => return invalid(why),
    };
    let seed = match random_seed() {
        Ok(seed) => seed,
        Err(e) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()),
    };
    let name = format!("{key_ring}/cryptoKeys/{id}");
    let mut store = lock(&shared.store);
    if !store.key_rings.contains_key(key_ring) {
        return not_found(&format!("KeyRing {key_ring}"));
    }
    if store.keys.contains_key(&name) {
        return api_error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("CryptoKey {name} already exists."),
        );
    }
    let key = FakeKey {
        signing: SigningKey::from_bytes(&seed),
        protection_level,
        pending_reads: shared.pending_polls.load(Ordering::Relaxed),
        labels,
    };
    let response = crypto_key_json(&name, &key, enums);
    store.keys.insert(name, key);
    Json(response).into_response()
}

fn list_crypto_keys(
    shared: &Shared,
    key_ring: &str,
    query: &HashMap<String, String>,
    enums: Enums,
) -> Response {
    let max = shared.max_page_size.load(Ordering::Relaxed);
    let page_size = match query.get("pageSize").map(|s| s.parse::<usize>()) {
        None | Some(Ok(0)) => max,
        Some(Ok(n)) => n.min(max),
        Some(Err(_)) => return invalid("pageSize must be a number"),
    };
    let after = query.get("pageToken").filter(|t| !t.is_empty());
    let store = lock(&shared.store);
    if !store.key_rings.contains_key(key_ring) {
        return not_found(&format!("KeyRing {key_ring}"));
    }
    let prefix = format!("{key_ring}/cryptoKeys/");
    let in_ring: Vec<(&String, &FakeKey)> = store
        .keys
        .iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .collect();
    let total = in_ring.len();
    let page: Vec<(&String, &FakeKey)> = in_ring
        .into_iter()
        .filter(|(name, _)| after.is_none_or(|a| *name > a))
        .take(page_size + 1)
        .collect();
    let more = page.len() > page_size;
    let page = &page[..page.len().min(page_size)];
    let mut response = json!({
        "cryptoKeys": page.iter().map(|(n, k)| crypto_key_json(n, k, enums)).collect::<Vec<_>>(),
        "totalSize": total,
    });
    if more && let Some((last, _)) = page.last() {
        response["nextPageToken"] = json!(last);
    }
    Json(response).into_response()
}

/// Splits `.../cryptoKeys/K/cryptoKeyVersions/V` into the key name and `V`.
fn split_version(version: &str) -> Option<(&str, &str)> {
    version.rsplit_once("/cryptoKeyVersions/")
}

fn get_version(shared: &Shared, version: &str, enums: Enums) -> Response {
    let Some((key_name, number)) = split_version(version) else {
        return not_found(&format!("CryptoKeyVersion {version}"));
    };
    let mut store = lock(&shared.store);
    let Some(key) = store.keys.get_mut(key_name).filter(|_| number == "1") else {
        return not_found(&format!("CryptoKeyVersion {version}"));
    };
    let state = if key.pending_reads > 0 {
        key.pending_reads -= 1;
        STATE_PENDING_GENERATION
    } else {
        STATE_ENABLED
    };
    Json(json!({
        "name": version,
        "state": enums.write(state),
        "protectionLevel": enums.write(protection_level_name(key.protection_level)),
        "algorithm": enums.write(ALGORITHM_EC_SIGN_ED25519),
        "createTime": CREATE_TIME,
    }))
    .into_response()
}

/// The signing key of an enabled version, or the error KMS would answer.
fn enabled_key(shared: &Shared, version: &str) -> Result<(SigningKey, i64), Box<Response>> {
    let Some((key_name, number)) = split_version(version) else {
        return Err(Box::new(not_found(&format!("CryptoKeyVersion {version}"))));
    };
    let store = lock(&shared.store);
    let Some(key) = store.keys.get(key_name).filter(|_| number == "1") else {
        return Err(Box::new(not_found(&format!("CryptoKeyVersion {version}"))));
    };
    if key.pending_reads > 0 {
        return Err(Box::new(api_error(
            StatusCode::BAD_REQUEST,
            "FAILED_PRECONDITION",
            format!(
                "CryptoKeyVersion {version} is not enabled, current state is: PENDING_GENERATION."
            ),
        )));
    }
    Ok((key.signing.clone(), key.protection_level))
}

fn get_public_key(shared: &Shared, version: &str, enums: Enums) -> Response {
    let (signing, protection_level) = match enabled_key(shared, version) {
        Ok(k) => k,
        Err(response) => return *response,
    };
    let pem = spki_pem(&signing.verifying_key().to_bytes());
    Json(json!({
        "pem": pem,
        "algorithm": enums.write(ALGORITHM_EC_SIGN_ED25519),
        "pemCrc32c": crc32c_string(pem.as_bytes()),
        "name": version,
        "protectionLevel": enums.write(protection_level_name(protection_level)),
        "publicKeyFormat": enums.write(PUBLIC_KEY_FORMAT_PEM),
    }))
    .into_response()
}

fn asymmetric_sign(
    shared: &Shared,
    version: &str,
    body: &Value,
    enums: Enums,
    fault: Option<Fault>,
) -> Response {
    let (signing, protection_level) = match enabled_key(shared, version) {
        Ok(k) => k,
        Err(response) => return *response,
    };
    if body.get("digest").is_some() {
        return invalid("EC_SIGN_ED25519 keys sign data, not digests.");
    }
    let Some(data) = body
        .get("data")
        .and_then(Value::as_str)
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
    else {
        return invalid("data is required (base64).");
    };
    // int64 arrives as a decimal string (proto3 JSON), though a number is accepted too.
    let data_crc32c = match body.get("dataCrc32c") {
        None => None,
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        Some(_) => return invalid("dataCrc32c must be an int64"),
    };
    if let Some(sent) = data_crc32c
        && sent != u64::from(crc32c::crc32c(&data))
    {
        return invalid("The checksum in field data_crc32c did not match the data in field data.");
    }
    let mut signature = signing.sign(&data).to_bytes().to_vec();
    let mut signature_crc32c = crc32c_string(&signature);
    let mut name = version.to_owned();
    let mut verified_data_crc32c = data_crc32c.is_some();
    match fault {
        Some(Fault::WrongSignatureCrc32c) => {
            signature_crc32c = json!((u64::from(crc32c::crc32c(&signature)) ^ 1).to_string());
        }
        Some(Fault::WrongKeyName) => {
            name = version.replace("/cryptoKeyVersions/1", "/cryptoKeyVersions/2");
        }
        Some(Fault::DataCrc32cNotVerified) => verified_data_crc32c = false,
        Some(Fault::CorruptSignature) => {
            signature[0] ^= 0x01;
            signature_crc32c = crc32c_string(&signature);
        }
        Some(Fault::Unavailable | Fault::TooManyRequests) | None => {}
    }
    Json(json!({
        "signature": b64(&signature),
        "signatureCrc32c": signature_crc32c,
        "verifiedDigestCrc32c": false,
        "name": name,
        "verifiedDataCrc32c": verified_data_crc32c,
        "protectionLevel": enums.write(protection_level_name(protection_level)),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_rest_paths() {
        let ring = "/v1/projects/p/locations/l/keyRings/r";
        assert!(matches!(
            Route::parse(&Method::GET, ring),
            Some(Route::GetKeyRing { .. })
        ));
        assert!(matches!(
            Route::parse(&Method::POST, "/v1/projects/p/locations/l/keyRings"),
            Some(Route::CreateKeyRing { .. })
        ));
        assert!(matches!(
            Route::parse(&Method::POST, &format!("{ring}/cryptoKeys")),
            Some(Route::CreateCryptoKey { .. })
        ));
        assert!(matches!(
            Route::parse(&Method::GET, &format!("{ring}/cryptoKeys")),
            Some(Route::ListCryptoKeys { .. })
        ));
        assert!(matches!(
            Route::parse(
                &Method::GET,
                &format!("{ring}/cryptoKeys/k/cryptoKeyVersions/1/publicKey")
            ),
            Some(Route::GetPublicKey { .. })
        ));
        assert!(matches!(
            Route::parse(
                &Method::POST,
                &format!("{ring}/cryptoKeys/k/cryptoKeyVersions/1:asymmetricSign")
            ),
            Some(Route::AsymmetricSign { .. })
        ));
        assert!(matches!(
            Route::parse(&Method::PATCH, &format!("{ring}/cryptoKeys/k")),
            Some(Route::UpdateCryptoKey { .. })
        ));
        assert!(Route::parse(&Method::PATCH, ring).is_none());
        assert!(Route::parse(&Method::GET, "/v1/projects/p/zones/l/keyRings/r").is_none());
        assert!(Route::parse(&Method::DELETE, ring).is_none());
        assert!(
            Route::parse(
                &Method::POST,
                &format!("{ring}/cryptoKeys/k:asymmetricSign")
            )
            .is_none()
        );
    }

    #[test]
    fn counted_faults_run_out() {
        let shared = Shared {
            store: Mutex::new(Store::default()),
            fault: Mutex::new(Some(FaultPlan::times(Fault::Unavailable, 2).on_sign())),
            latency_ms: AtomicU64::new(0),
            pending_polls: AtomicU32::new(0),
            max_page_size: AtomicUsize::new(2),
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            signs_in_flight: AtomicU64::new(0),
            max_signs_in_flight: AtomicU64::new(0),
        };
        assert_eq!(take_fault(&shared, KmsCall::GetPublicKey), None);
        assert_eq!(
            take_fault(&shared, KmsCall::AsymmetricSign),
            Some(Fault::Unavailable)
        );
        assert_eq!(
            take_fault(&shared, KmsCall::AsymmetricSign),
            Some(Fault::Unavailable)
        );
        assert_eq!(take_fault(&shared, KmsCall::AsymmetricSign), None);
    }

    /// One HTTP/1.1 exchange over a fresh connection; returns the status code and the body.
    async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: fake\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut response = String::new();
        tcp.read_to_string(&mut response)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn the_control_api_injects_and_clears_faults() {
        let kms = FakeKms::start().await.unwrap_or_else(|e| panic!("{e:#}"));
        let ring = "/v1/projects/p/locations/l/keyRings/r";
        let (status, body) = http(kms.addr(), "GET", ring, "").await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("\"status\":\"NOT_FOUND\""), "{body}");

        let (status, _) = http(
            kms.addr(),
            "POST",
            "/control/fault",
            r#"{"fault": "too_many_requests", "count": 1}"#,
        )
        .await;
        assert_eq!(status, 204);
        let (status, body) = http(kms.addr(), "GET", ring, "").await;
        assert_eq!(status, 429, "{body}");
        assert!(body.contains("RESOURCE_EXHAUSTED"), "{body}");
        let (status, _) = http(kms.addr(), "GET", ring, "").await;
        assert_eq!(status, 404, "a one-shot fault is spent");

        http(
            kms.addr(),
            "POST",
            "/control/fault",
            r#"{"fault": "unavailable"}"#,
        )
        .await;
        for _ in 0..3 {
            assert_eq!(http(kms.addr(), "GET", ring, "").await.0, 503);
        }
        let (status, _) = http(kms.addr(), "DELETE", "/control/fault", "").await;
        assert_eq!(status, 204);
        assert_eq!(http(kms.addr(), "GET", ring, "").await.0, 404);

        let (_, calls) = http(kms.addr(), "GET", "/control/calls", "").await;
        assert!(calls.contains("\"GetKeyRing\":7"), "{calls}");
        assert_eq!(kms.calls(KmsCall::GetKeyRing), 7);
    }

    #[test]
    fn pem_is_rfc8410_spki() {
        let pem = spki_pem(&[0x11; 32]);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
    }
}
