//! What every simulator test needs: a simulator on port 0, keys, signed envelopes built with the
//! testkit's builders, and a small HTTP client that speaks to it over real sockets.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the helpers"
)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::SigningKey;
use horizon_sim::envelope::decorated_signature;
use horizon_sim::{AccountKey, HorizonSim, SimConfig, SubmittedTransaction, TxHash};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sha2::{Digest, Sha256};
use signer_testkit::stellar::{Tx, payment};
use stellar_xdr::{Limits, ReadXdr, TransactionEnvelope, TransactionResult, WriteXdr};

/// One XLM in stroops.
pub const XLM: i64 = 10_000_000;

/// How long any wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A simulator with ledgers closed by hand.
pub async fn start() -> HorizonSim {
    start_with(SimConfig::default()).await
}

/// A simulator with `config`.
pub async fn start_with(config: SimConfig) -> HorizonSim {
    HorizonSim::start(config)
        .await
        .unwrap_or_else(|e| panic!("starting the simulator: {e}"))
}

/// A key derived from `label`, so every test names its own accounts.
pub fn key(label: &str) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(label.as_bytes()).into())
}

/// The raw public key.
pub fn public(key: &SigningKey) -> [u8; 32] {
    key.verifying_key().to_bytes()
}

/// The account of `key`.
pub fn account(key: &SigningKey) -> AccountKey {
    AccountKey(public(key))
}

/// `key`'s account created directly with `stroops`, and its sequence number.
pub fn funded(sim: &HorizonSim, key: &SigningKey, stroops: i64) -> i64 {
    sim.create_account(account(key), stroops)
        .unwrap_or_else(|e| panic!("{e}"));
    sim.sequence(account(key))
        .unwrap_or_else(|| panic!("created"))
}

/// Two funded accounts: Alice pays, Bob (10 XLM) is paid.
pub struct Pair {
    /// The payer.
    pub alice: SigningKey,
    /// The payee.
    pub bob: SigningKey,
    /// Alice's sequence number when created.
    pub alice_sequence: i64,
}

impl Pair {
    /// Alice with `alice_stroops` and Bob with 10 XLM, named after `label`.
    pub fn new(sim: &HorizonSim, label: &str, alice_stroops: i64) -> Self {
        let alice = key(&format!("{label} alice"));
        let bob = key(&format!("{label} bob"));
        let alice_sequence = funded(sim, &alice, alice_stroops);
        funded(sim, &bob, 10 * XLM);
        Pair {
            alice,
            bob,
            alice_sequence,
        }
    }

    /// An unsigned payment of `stroops` from Alice to Bob with `sequence`.
    pub fn payment(&self, sequence: i64, stroops: i64) -> Tx {
        let mut tx = Tx::new(public(&self.alice), sequence);
        tx.operations = vec![payment(public(&self.bob), stroops)];
        tx
    }

    /// Alice's next payment of `stroops` to Bob, signed, as base64 envelope XDR.
    pub fn next_payment(&self, sim: &HorizonSim, stroops: i64) -> String {
        let tx = self.payment(self.alice_sequence + 1, stroops);
        signed(&tx, sim.network_id(), &[&self.alice])
    }
}

/// `tx` signed by `signers` for `network_id`, as base64 envelope XDR.
pub fn signed(tx: &Tx, network_id: [u8; 32], signers: &[&SigningKey]) -> String {
    SubmittedTransaction::sign(tx.v1().tx, network_id, signers)
        .unwrap_or_else(|e| panic!("{e}"))
        .envelope_xdr
}

/// A fee bump of `tx` paid by `fee_source`, the inner transaction signed by `inner_signers` and
/// the outer one by `outer_signers`, as base64 envelope XDR.
pub fn signed_fee_bump(
    tx: &Tx,
    fee_source: &SigningKey,
    fee: i64,
    network_id: [u8; 32],
    inner_signers: &[&SigningKey],
    outer_signers: &[&SigningKey],
) -> String {
    let inner = BASE64
        .decode(signed(tx, network_id, inner_signers))
        .unwrap_or_else(|e| panic!("{e}"));
    let TransactionEnvelope::Tx(inner) =
        TransactionEnvelope::from_xdr(&inner, Limits::none()).unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!("a v1 envelope");
    };
    let unsigned =
        TransactionEnvelope::from_xdr(tx.fee_bump_xdr(public(fee_source), fee), Limits::none())
            .unwrap_or_else(|e| panic!("{e}"));
    let TransactionEnvelope::TxFeeBump(mut bump) = unsigned else {
        panic!("a fee bump envelope");
    };
    bump.tx.inner_tx = stellar_xdr::FeeBumpTransactionInnerTx::Tx(inner);
    let hash = bump.hash(network_id).unwrap_or_else(|e| panic!("{e}"));
    bump.signatures = outer_signers
        .iter()
        .map(|key| decorated_signature(key, &hash))
        .collect::<Vec<_>>()
        .try_into()
        .unwrap_or_else(|e| panic!("{e}"));
    to_base64(&TransactionEnvelope::TxFeeBump(bump))
}

fn to_base64(envelope: &TransactionEnvelope) -> String {
    envelope
        .to_xdr_base64(Limits::none())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The hash of a base64 envelope.
pub fn hash_of(envelope: &str, network_id: [u8; 32]) -> TxHash {
    let envelope = TransactionEnvelope::from_xdr_base64(envelope, Limits::none())
        .unwrap_or_else(|e| panic!("{e}"));
    TxHash(envelope.hash(network_id).unwrap_or_else(|e| panic!("{e}")))
}

/// A fee bump's inner hash.
pub fn inner_hash_of(envelope: &str, network_id: [u8; 32]) -> TxHash {
    let envelope = TransactionEnvelope::from_xdr_base64(envelope, Limits::none())
        .unwrap_or_else(|e| panic!("{e}"));
    let TransactionEnvelope::TxFeeBump(bump) = envelope else {
        panic!("a fee bump envelope");
    };
    let stellar_xdr::FeeBumpTransactionInnerTx::Tx(inner) = bump.tx.inner_tx;
    TxHash(inner.hash(network_id).unwrap_or_else(|e| panic!("{e}")))
}

/// Decodes a `result_xdr`.
pub fn decode_result(result_xdr: &Value) -> TransactionResult {
    let text = result_xdr
        .as_str()
        .unwrap_or_else(|| panic!("result_xdr should be a string: {result_xdr}"));
    TransactionResult::from_xdr_base64(text, Limits::none()).unwrap_or_else(|e| panic!("{e}"))
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body as JSON (`Null` if it is not JSON).
    pub body: Value,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Horizon's `Latest-Ledger` header, parsed.
    pub fn latest_ledger(&self) -> u32 {
        self.header("latest-ledger")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Latest-Ledger header in {:?}", self.headers))
    }

    /// `extras.result_codes.transaction` of a problem.
    pub fn transaction_code(&self) -> &str {
        self.body["extras"]["result_codes"]["transaction"]
            .as_str()
            .unwrap_or_default()
    }

    /// `extras.result_codes.operations` of a problem.
    pub fn operation_codes(&self) -> Vec<String> {
        self.body["extras"]["result_codes"]["operations"]
            .as_array()
            .map(|codes| {
                codes
                    .iter()
                    .map(|c| c.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The problem type without Horizon's URL prefix.
    pub fn problem_type(&self) -> &str {
        self.body["type"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("https://stellar.org/horizon-errors/")
    }
}

/// A plain HTTP/1 client for one simulator.
#[derive(Clone)]
pub struct Horizon {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Horizon {
    /// A client for `sim`.
    pub fn new(sim: &HorizonSim) -> Self {
        Horizon::at(sim.url())
    }

    /// A client for the server at `base`.
    pub fn at(base: String) -> Self {
        Horizon {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base,
        }
    }

    async fn send(&self, request: hyper::Request<Full<Bytes>>) -> Reply {
        let response = tokio::time::timeout(Duration::from_secs(60), self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("no answer within 60 s"))
            .unwrap_or_else(|e| panic!("request failed: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    value.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("reading the body: {e}"))
            .to_bytes();
        Reply {
            status,
            content_type,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        }
    }

    fn request(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        let request = self
            .request("GET", path)
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|e| panic!("{e}"));
        self.send(request).await
    }

    /// `POST path` with a form body.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = fields
            .iter()
            .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
            .collect::<Vec<_>>()
            .join("&");
        let request = self
            .request("POST", path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|e| panic!("{e}"));
        self.send(request).await
    }

    /// `method path` with a raw body and content type.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Reply {
        let request = self
            .request(method, path)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap_or_else(|e| panic!("{e}"));
        self.send(request).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send_raw("POST", path, "application/json", &body.to_string())
            .await
    }

    /// `POST /transactions`.
    pub async fn submit(&self, envelope: &str) -> Reply {
        self.post_form("/transactions", &[("tx", envelope)]).await
    }

    /// `POST /transactions_async`.
    pub async fn submit_async(&self, envelope: &str) -> Reply {
        self.post_form("/transactions_async", &[("tx", envelope)])
            .await
    }

    /// `GET /transactions/{hash}`.
    pub async fn transaction(&self, hash: &TxHash) -> Reply {
        self.get(&format!("/transactions/{hash}")).await
    }

    /// `GET /accounts/{id}`.
    pub async fn account(&self, account: &AccountKey) -> Reply {
        self.get(&format!("/accounts/{account}")).await
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
fn form_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                encoded.push(char::from(byte));
            }
            b' ' => encoded.push('+'),
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    encoded
}

/// Runs `request` (a synchronous submission or friendbot call) and closes a ledger each time a
/// transaction reaches the queue, until the request answers. Fails after [`DEADLINE`].
pub async fn closing_ledgers<F>(sim: &HorizonSim, request: F) -> Reply
where
    F: std::future::Future<Output = Reply> + Send + 'static,
{
    let mut request = std::pin::pin!(tokio::spawn(request));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        tokio::select! {
            reply = &mut request => return reply.unwrap_or_else(|e| panic!("request task: {e}")),
            queued = sim.wait_for_queued(1, DEADLINE) => {
                queued.unwrap_or_else(|e| panic!("{e}"));
                sim.close_ledger();
            }
            _ = tokio::time::sleep_until(deadline) => panic!("no answer within {DEADLINE:?}"),
        }
    }
}

/// Submits `envelope` with `POST /transactions`, closing ledgers until it answers.
pub async fn submit_closing(sim: &HorizonSim, horizon: &Horizon, envelope: &str) -> Reply {
    let horizon = horizon.clone();
    let envelope = envelope.to_owned();
    closing_ledgers(sim, async move { horizon.submit(&envelope).await }).await
}

/// Funds `account` through `GET /friendbot`, closing ledgers until it answers.
pub async fn friendbot_closing(sim: &HorizonSim, horizon: &Horizon, account: &AccountKey) -> Reply {
    let horizon = horizon.clone();
    let path = format!("/friendbot?addr={account}");
    closing_ledgers(sim, async move { horizon.get(&path).await }).await
}

/// A JSON-RPC 2.0 client for the simulator's Stellar RPC endpoint, over real sockets.
#[derive(Clone)]
pub struct Rpc {
    http: Horizon,
    next_id: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Rpc {
    /// A client for `sim`'s `rpc_url()`.
    pub fn new(sim: &HorizonSim) -> Self {
        let url = sim.rpc_url();
        let base = url
            .strip_suffix("/rpc")
            .unwrap_or_else(|| panic!("rpc_url ends with /rpc: {url}"))
            .to_owned();
        Rpc {
            http: Horizon::at(base),
            next_id: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }

    /// `POST /rpc` with a raw JSON body.
    pub async fn post(&self, body: &Value) -> Reply {
        self.http.post_json("/rpc", body).await
    }

    /// Calls `method` with `params`; the whole HTTP answer.
    pub async fn call(&self, method: &str, params: Value) -> Reply {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reply = self
            .post(&serde_json::json!({
                "jsonrpc": "2.0", "id": id, "method": method, "params": params,
            }))
            .await;
        if reply.status == 200 {
            assert_eq!(reply.body["jsonrpc"], "2.0", "{}", reply.body);
            assert_eq!(reply.body["id"], id, "the id is echoed: {}", reply.body);
        }
        reply
    }

    /// Calls `method`, expecting a result; returns it.
    pub async fn result(&self, method: &str, params: Value) -> Value {
        let reply = self.call(method, params).await;
        assert_eq!(reply.status, 200, "{method}: {:?}", reply);
        assert!(
            reply.body.get("error").is_none(),
            "{method} failed: {}",
            reply.body
        );
        reply.body["result"].clone()
    }

    /// Calls `method`, expecting a JSON-RPC error; returns the error object.
    pub async fn error(&self, method: &str, params: Value) -> Value {
        let reply = self.call(method, params).await;
        assert_eq!(reply.status, 200, "{method}: {:?}", reply);
        assert!(
            reply.body.get("result").is_none(),
            "{method} should fail: {}",
            reply.body
        );
        reply.body["error"].clone()
    }

    /// `sendTransaction` of `envelope`; its result.
    pub async fn send(&self, envelope: &str) -> Value {
        self.result(
            "sendTransaction",
            serde_json::json!({ "transaction": envelope }),
        )
        .await
    }

    /// `getTransaction` of `hash`; its result.
    pub async fn transaction(&self, hash: &TxHash) -> Value {
        self.result(
            "getTransaction",
            serde_json::json!({ "hash": hash.to_hex() }),
        )
        .await
    }

    /// `getLedgerEntries` of one account; the result.
    pub async fn account_entries(&self, account: &AccountKey) -> Value {
        self.result(
            "getLedgerEntries",
            serde_json::json!({ "keys": [account_ledger_key(account)] }),
        )
        .await
    }

    /// The account's entry through `getLedgerEntries` (`None` if there is none) and the
    /// answer's `latestLedger`.
    pub async fn account(&self, account: &AccountKey) -> (Option<stellar_xdr::AccountEntry>, u32) {
        let result = self.account_entries(account).await;
        let latest = as_u32(&result["latestLedger"]);
        let entries = result["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("entries is an array: {result}"));
        let entry = entries.first().map(|entry| {
            match decode_xdr::<stellar_xdr::LedgerEntryData>(&entry["xdr"]) {
                stellar_xdr::LedgerEntryData::Account(account) => account,
                other => panic!("an account entry, not {other:?}"),
            }
        });
        (entry, latest)
    }
}

/// An account's `LedgerKey`, base64.
pub fn account_ledger_key(account: &AccountKey) -> String {
    stellar_xdr::LedgerKey::Account(stellar_xdr::LedgerKeyAccount {
        account_id: stellar_xdr::AccountId(stellar_xdr::PublicKey::PublicKeyTypeEd25519(
            stellar_xdr::Uint256(account.0),
        )),
    })
    .to_xdr_base64(Limits::none())
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Decodes a base64 XDR string field.
pub fn decode_xdr<T: ReadXdr>(value: &Value) -> T {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("an XDR string, not {value}"));
    T::from_xdr_base64(text, Limits::none()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A JSON number that must be a `u32`.
pub fn as_u32(value: &Value) -> u32 {
    value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or_else(|| panic!("a u32 number, not {value}"))
}

/// A JSON string holding a 64-bit integer (RPC's string-encoded fields).
pub fn as_i64_string(value: &Value) -> i64 {
    value
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("an integer in a string, not {value}"))
}

/// Ledgers of 100 operations, closed by hand (a surge is easy to make).
pub fn small_ledgers() -> SimConfig {
    SimConfig {
        max_operations_per_ledger: 100,
        ..SimConfig::default()
    }
}

/// A funded payer named `label` and its signed 1 XLM payment to `to`, bidding `fee`.
pub fn payment_bidding(
    sim: &HorizonSim,
    label: &str,
    to: &SigningKey,
    fee: u32,
) -> (String, TxHash, Tx) {
    let payer = key(label);
    let sequence = funded(sim, &payer, 100 * XLM);
    let mut tx = Tx::new(public(&payer), sequence + 1);
    tx.operations = vec![payment(public(to), XLM)];
    tx.fee = fee;
    let envelope = signed(&tx, sim.network_id(), &[&payer]);
    (envelope.clone(), hash_of(&envelope, sim.network_id()), tx)
}
