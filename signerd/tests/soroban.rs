//! Contract calls, signed messages and web auth, attacked as a caller with a valid certificate
//! would: every promise of `SignAuthEntry` (credentials of the key's own account, every node of
//! the tree allowed, SEP-41 token rules, an expiration bounded by a trusted current ledger, one
//! invocation per nonce, delegates only where allowed), `invoke_host_function` transactions held
//! to the same rules, SEP-53 messages never taken as hashes, SEP-10 challenges only for allowed
//! home domains. The current ledger comes from a tiny JSON-RPC server in the test answering
//! `getLatestLedger` in Stellar RPC's shape.
//!
//! And the reference vectors (Python stellar-sdk 16.1.1, `tests/vectors/README.md`): with the
//! vector keys imported into signerd's SoftHSM token, signerd returns the SDK's signed entries
//! byte for byte.

#[path = "support/token.rs"]
mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use signer_proto::v1 as pb;
use signer_proto::v1::signer_client::SignerClient;
use signer_testkit::stellar::{Tx, key_bytes, now, with_source};
use signer_testkit::{Grant, SignerdOptions, SignerdProcess, TESTNET, with_request_id};
use stellar_xdr::{
    AccountId, ContractId, DataValue, Hash, HostFunction, Int128Parts, InvokeContractArgs,
    InvokeHostFunctionOp, Limits, ManageDataOp, Operation, OperationBody, PublicKey as XdrKey,
    ReadXdr, ScAddress, ScSymbol, ScVal, SorobanAddressCredentials,
    SorobanAddressCredentialsWithDelegates, SorobanAuthorizationEntry, SorobanAuthorizedFunction,
    SorobanAuthorizedInvocation, SorobanCredentials, String64, Uint256, WriteXdr,
};
use tonic::Code;
use tonic::transport::Channel;

const PUBNET: &str = "Public Global Stellar Network ; September 2015";
/// The token every fixture key may move (contract id bytes all 1).
const TOKEN: [u8; 32] = [1; 32];
/// A router allowed to call the token.
const ROUTER: [u8; 32] = [2; 32];
/// A contract no key may call.
const STRANGER: [u8; 32] = [3; 32];
/// The one allowed destination of transfers.
const DEST: [u8; 32] = [5; 32];

fn contract_id(id: [u8; 32]) -> String {
    format!("{}", stellar_strkey::Contract(id))
}

fn account_id(key: [u8; 32]) -> String {
    format!("{}", stellar_strkey::ed25519::PublicKey(key))
}

fn account(key: [u8; 32]) -> ScAddress {
    ScAddress::Account(AccountId(XdrKey::PublicKeyTypeEd25519(Uint256(key))))
}

fn amount(v: i128) -> ScVal {
    ScVal::I128(Int128Parts {
        hi: (v >> 64) as i64,
        lo: v as u64,
    })
}

fn args(contract: [u8; 32], function: &str, args: Vec<ScVal>) -> InvokeContractArgs {
    InvokeContractArgs {
        contract_address: ScAddress::Contract(ContractId(Hash(contract))),
        function_name: ScSymbol(function.try_into().unwrap_or_default()),
        args: args.try_into().unwrap_or_default(),
    }
}

fn call(
    contract: [u8; 32],
    function: &str,
    arguments: Vec<ScVal>,
    subs: Vec<SorobanAuthorizedInvocation>,
) -> SorobanAuthorizedInvocation {
    SorobanAuthorizedInvocation {
        function: SorobanAuthorizedFunction::ContractFn(args(contract, function, arguments)),
        sub_invocations: subs.try_into().unwrap_or_default(),
    }
}

/// `TOKEN.transfer(from, to, value)`.
fn transfer(from: [u8; 32], to: [u8; 32], value: i128) -> SorobanAuthorizedInvocation {
    call(
        TOKEN,
        "transfer",
        vec![
            ScVal::Address(account(from)),
            ScVal::Address(account(to)),
            amount(value),
        ],
        Vec::new(),
    )
}

#[derive(Clone, Copy)]
enum Creds {
    V1,
    V2,
    Delegates,
}

/// An unsigned entry for `address` with `nonce` around `root`, as raw XDR.
fn entry(
    creds: Creds,
    address: [u8; 32],
    nonce: i64,
    root: SorobanAuthorizedInvocation,
) -> Vec<u8> {
    let address_credentials = SorobanAddressCredentials {
        address: account(address),
        nonce,
        signature_expiration_ledger: 0,
        signature: ScVal::Void,
    };
    let credentials = match creds {
        Creds::V1 => SorobanCredentials::Address(address_credentials),
        Creds::V2 => SorobanCredentials::AddressV2(address_credentials),
        Creds::Delegates => {
            SorobanCredentials::AddressWithDelegates(SorobanAddressCredentialsWithDelegates {
                address_credentials,
                delegates: Default::default(),
            })
        }
    };
    SorobanAuthorizationEntry {
        credentials,
        root_invocation: root,
    }
    .to_xdr(Limits::none())
    .unwrap_or_default()
}

/// A Stellar RPC stand-in answering `getLatestLedger` with the real response's members.
struct Rpc {
    addr: SocketAddr,
    ledger: AtomicU32,
    /// 0: fresh answers; 1: HTTP 503; 2: answers about a ledger closed an hour ago.
    mode: AtomicU8,
}

const FRESH: u8 = 0;
const DOWN: u8 = 1;
const STALE: u8 = 2;

impl Rpc {
    async fn start(ledger: u32) -> Arc<Rpc> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rpc = Arc::new(Rpc {
            addr: listener.local_addr().unwrap_or_else(|e| panic!("{e}")),
            ledger: AtomicU32::new(ledger),
            mode: AtomicU8::new(FRESH),
        });
        let state = rpc.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: axum::body::Bytes| {
                let state = state.clone();
                async move { state.answer(&body) }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        rpc
    }

    fn answer(&self, body: &[u8]) -> axum::response::Response {
        use axum::response::IntoResponse;
        let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        if request["method"] != "getLatestLedger" {
            return (axum::http::StatusCode::BAD_REQUEST, "unknown method").into_response();
        }
        let closed = match self.mode.load(Ordering::SeqCst) {
            DOWN => {
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
            }
            STALE => now() - 3600,
            _ => now(),
        };
        let sequence = self.ledger.load(Ordering::SeqCst);
        axum::Json(serde_json::json!({
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": {
                "id": hex::encode(Sha256::digest(sequence.to_be_bytes())),
                "protocolVersion": 23,
                "sequence": sequence,
                "closeTime": closed.to_string(),
                // Base64 XDR in the real answer; signerd reads neither.
                "headerXdr": "AAAAAA==",
                "metadataXdr": "AAAAAA=="
            }
        }))
        .into_response()
    }

    fn toml(&self, networks: &[&str]) -> String {
        networks
            .iter()
            .map(|network| {
                format!(
                    "\n[[stellar_rpc]]\nnetwork = {network:?}\nurl = \"http://{}/\"\nrefresh_ms = 0\nmax_staleness_secs = 30\n",
                    self.addr
                )
            })
            .collect()
    }
}

/// The policy of the fixture: testnet, transfers of at most 1000 to `DEST` on `TOKEN`, approvals
/// for `ROUTER`, `ROUTER.swap`, SEP-10 for example.com, SEP-53 messages; `delegating-*` keys
/// may sign delegated credentials, `silent-*` keys sign no message.
fn policy() -> String {
    let token_rule = format!(
        "contract = {:?}\nfunctions = [\"transfer\", \"approve\"]\ntoken = true\nmax_amount = \"1000\"\ndestinations = [{:?}]\nspenders = [{:?}]\n",
        contract_id(TOKEN),
        account_id(DEST),
        contract_id(ROUTER)
    );
    format!(
        r#"[policy]
networks = [{TESTNET:?}, {PUBNET:?}]
operations = ["payment", "invoke_host_function"]
web_auth_domains = ["example.com"]
sign_messages = true

[policy.soroban]
max_expiration_ledgers = 100

[[policy.soroban.contracts]]
{token_rule}
[[policy.soroban.contracts]]
contract = {router:?}
functions = ["swap"]

[[policy.keys]]
pattern = "delegating-*"

[policy.keys.soroban]
allow_delegates = true

[[policy.keys.soroban.contracts]]
{token_rule}
[[policy.keys]]
pattern = "silent-*"
sign_messages = false
"#,
        router = contract_id(ROUTER),
    )
}

struct Fixture {
    signerd: SignerdProcess,
    client: SignerClient<Channel>,
    key: [u8; 32],
    rpc: Arc<Rpc>,
    next_request: u32,
}

impl Fixture {
    /// signerd with [`policy`], RPC endpoints for the networks in `rpc_networks` and key
    /// `wallet-1`; the RPC reports ledger 1000.
    async fn start(rpc_networks: &[&str]) -> Fixture {
        let rpc = Rpc::start(1000).await;
        let signerd = SignerdProcess::start(SignerdOptions {
            acl: vec![Grant::keys("gateway", &["*"])],
            policy_toml: Some(policy()),
            extra_toml: rpc.toml(rpc_networks),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let mut client = signerd
            .client("gateway")
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let key = key_bytes(&signer_testkit::create_key(&mut client, "wallet-1").await);
        Fixture {
            signerd,
            client,
            key,
            rpc,
            next_request: 0,
        }
    }

    fn request_id(&mut self) -> String {
        self.next_request += 1;
        format!("soroban-{}", self.next_request)
    }

    async fn sign_entry(
        &mut self,
        key_id: &str,
        entry_xdr: Vec<u8>,
        network: &str,
        expiration: u32,
    ) -> (String, Result<pb::SignAuthEntryResponse, tonic::Status>) {
        let request_id = self.request_id();
        let result = self
            .client
            .sign_auth_entry(with_request_id(
                pb::SignAuthEntryRequest {
                    key_id: key_id.into(),
                    entry_xdr,
                    network_passphrase: network.into(),
                    signature_expiration_ledger: expiration,
                },
                &request_id,
            ))
            .await
            .map(tonic::Response::into_inner);
        (request_id, result)
    }

    /// Signs `entry_xdr` with `wallet-1` on testnet; panics on refusal.
    async fn signs(
        &mut self,
        what: &str,
        entry_xdr: Vec<u8>,
        expiration: u32,
    ) -> pb::SignAuthEntryResponse {
        match self
            .sign_entry("wallet-1", entry_xdr, TESTNET, expiration)
            .await
        {
            (_, Ok(response)) => response,
            (_, Err(status)) => panic!("{what}: {status:?}\n{}", self.signerd.log()),
        }
    }

    /// Asserts that `wallet-1` is refused `entry_xdr` by `rule`, and that the denial is recorded
    /// with that rule.
    async fn refuses(&mut self, what: &str, entry_xdr: Vec<u8>, expiration: u32, rule: &str) {
        self.refuses_as(what, "wallet-1", entry_xdr, TESTNET, expiration, rule)
            .await;
    }

    async fn refuses_as(
        &mut self,
        what: &str,
        key_id: &str,
        entry_xdr: Vec<u8>,
        network: &str,
        expiration: u32,
        rule: &str,
    ) {
        let (request_id, result) = self
            .sign_entry(key_id, entry_xdr, network, expiration)
            .await;
        let status = match result {
            Ok(_) => panic!("{what}: signed, expected a refusal by {rule}"),
            Err(status) => status,
        };
        let code = if rule == "ledger" {
            Code::Unavailable
        } else {
            Code::PermissionDenied
        };
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(&format!("policy {rule}:")),
            "{what}: expected rule {rule}, got {:?}",
            status.message()
        );
        let records = self.records(&request_id);
        assert_eq!(records.len(), 1, "{what}: {records:?}");
        assert_eq!(records[0]["decision"], "denied", "{what}");
        assert_eq!(records[0]["rule"], rule, "{what}");
    }

    fn records(&self, request_id: &str) -> Vec<serde_json::Value> {
        let mut found = Vec::new();
        let files = signerd::audit::reader::log_files(&self.signerd.audit_dir())
            .unwrap_or_else(|e| panic!("{e}"));
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
            for line in text.lines() {
                let record: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                if record["request_id"] == request_id {
                    found.push(record);
                }
            }
        }
        found
    }

    async fn restart(&mut self) {
        let status = self
            .signerd
            .terminate()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(status.success(), "{status}");
        self.signerd
            .launch()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        self.client = self
            .signerd
            .client("gateway")
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// The signature inside a signed entry: the account contract's `[{public_key, signature}]`.
fn entry_signature(signed_entry_xdr: &[u8]) -> ([u8; 32], [u8; 64], u32) {
    let entry = SorobanAuthorizationEntry::from_xdr(signed_entry_xdr, Limits::none())
        .unwrap_or_else(|e| panic!("{e}"));
    let credentials = match entry.credentials {
        SorobanCredentials::Address(c) | SorobanCredentials::AddressV2(c) => c,
        SorobanCredentials::AddressWithDelegates(d) => d.address_credentials,
        SorobanCredentials::SourceAccount => panic!("source-account credentials"),
    };
    let ScVal::Vec(Some(list)) = credentials.signature else {
        panic!("the signature is not a vec");
    };
    assert_eq!(list.len(), 1);
    let ScVal::Map(Some(map)) = &list[0] else {
        panic!("the signature's element is not a map");
    };
    let field = |name: &str| -> Vec<u8> {
        let entry = map
            .iter()
            .find(|e| matches!(&e.key, ScVal::Symbol(s) if s.0.as_slice() == name.as_bytes()))
            .unwrap_or_else(|| panic!("no {name}"));
        match &entry.val {
            ScVal::Bytes(b) => b.0.to_vec(),
            other => panic!("{name} is {other:?}"),
        }
    };
    let public: [u8; 32] = field("public_key").try_into().unwrap_or([0; 32]);
    let signature: [u8; 64] = field("signature").try_into().unwrap_or([0; 64]);
    (public, signature, credentials.signature_expiration_ledger)
}

fn verifies(key: [u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let (Ok(key), Ok(signature)) = (
        VerifyingKey::from_bytes(&key),
        <[u8; 64]>::try_from(signature),
    ) else {
        return false;
    };
    key.verify(message, &Signature::from_bytes(&signature))
        .is_ok()
}

#[tokio::test]
async fn authorization_entries_are_signed_only_when_understood() {
    let mut f = Fixture::start(&[TESTNET]).await;
    let key = f.key;

    // The happy path, V1 and V2: the signature is over sha256(the preimage signerd returns),
    // by the key, inside the entry in the account contract's shape.
    for (nonce, creds) in [(1, Creds::V1), (2, Creds::V2)] {
        let response = f
            .signs(
                "a capped transfer",
                entry(creds, key, nonce, transfer(key, DEST, 500)),
                1050,
            )
            .await;
        assert_eq!(
            response.payload_hash,
            Sha256::digest(&response.preimage_xdr).to_vec()
        );
        assert!(verifies(key, &response.payload_hash, &response.signature));
        let (public, signature, expiration) = entry_signature(&response.signed_entry_xdr);
        assert_eq!((public, expiration), (key, 1050));
        assert_eq!(signature.to_vec(), response.signature);
        // V2's preimage binds the address (ENVELOPE_TYPE_SOROBAN_AUTHORIZATION_WITH_ADDRESS).
        let envelope_type =
            u32::from_be_bytes(response.preimage_xdr[..4].try_into().unwrap_or_default());
        assert_eq!(envelope_type, if nonce == 1 { 9 } else { 10 });
    }

    // The audit record names contract, function, arguments, nonce and expiration.
    let (request_id, result) = f
        .sign_entry(
            "wallet-1",
            entry(Creds::V1, key, 3, transfer(key, DEST, 700)),
            TESTNET,
            1040,
        )
        .await;
    assert!(result.is_ok(), "{result:?}");
    let records = f.records(&request_id);
    let soroban = &records[0]["soroban"][0];
    assert_eq!(records[0]["decision"], "signed");
    assert_eq!(soroban["credentials"], "address");
    assert_eq!(soroban["address"], account_id(key));
    assert_eq!(soroban["nonce"], "3");
    assert_eq!(soroban["expiration_ledger"], 1040);
    assert_eq!(soroban["current_ledger"], 1000);
    assert_eq!(soroban["calls"][0]["contract"], contract_id(TOKEN));
    assert_eq!(soroban["calls"][0]["function"], "transfer");
    assert_eq!(
        soroban["calls"][0]["args"],
        serde_json::json!([account_id(key), account_id(DEST), "700"])
    );

    // A router swap whose sub-invocation is an allowed transfer is allowed.
    let swap = |sub| call(ROUTER, "swap", vec![amount(1)], vec![sub]);
    f.signs(
        "a swap with a capped transfer",
        entry(Creds::V2, key, 4, swap(transfer(key, DEST, 10))),
        1050,
    )
    .await;

    // Credentials of another account.
    f.refuses(
        "another address",
        entry(Creds::V1, [9; 32], 10, transfer([9; 32], DEST, 1)),
        1050,
        "credentials",
    )
    .await;
    // Credentials of another account, over a call the policy would otherwise allow.
    f.refuses(
        "another address calling the router",
        entry(
            Creds::V2,
            [9; 32],
            10,
            call(ROUTER, "swap", vec![amount(1)], vec![]),
        ),
        1050,
        "credentials",
    )
    .await;
    // Contract, function and sub-invocation not allowed.
    f.refuses(
        "a contract not allowed",
        entry(
            Creds::V1,
            key,
            11,
            call(STRANGER, "transfer", vec![], vec![]),
        ),
        1050,
        "contract",
    )
    .await;
    f.refuses(
        "a function not allowed",
        entry(
            Creds::V1,
            key,
            12,
            call(
                TOKEN,
                "burn",
                vec![ScVal::Address(account(key)), amount(1)],
                vec![],
            ),
        ),
        1050,
        "contract",
    )
    .await;
    f.refuses(
        "a sub-invocation not allowed",
        entry(
            Creds::V1,
            key,
            13,
            swap(call(STRANGER, "drain", vec![], vec![])),
        ),
        1050,
        "contract",
    )
    .await;
    // Token rules, in the root and in a sub-invocation.
    f.refuses(
        "an amount over the cap",
        entry(Creds::V1, key, 14, transfer(key, DEST, 1001)),
        1050,
        "token",
    )
    .await;
    f.refuses(
        "a nested amount over the cap",
        entry(Creds::V1, key, 15, swap(transfer(key, DEST, 5000))),
        1050,
        "token",
    )
    .await;
    f.refuses(
        "a destination not allowed",
        entry(Creds::V1, key, 16, transfer(key, [6; 32], 1)),
        1050,
        "token",
    )
    .await;
    f.refuses(
        "a transfer from someone else",
        entry(Creds::V1, key, 17, transfer([6; 32], DEST, 1)),
        1050,
        "token",
    )
    .await;
    let approve = |spender: [u8; 32]| {
        call(
            TOKEN,
            "approve",
            vec![
                ScVal::Address(account(key)),
                ScVal::Address(ScAddress::Contract(ContractId(Hash(spender)))),
                amount(10),
                ScVal::U32(1100),
            ],
            vec![],
        )
    };
    f.refuses(
        "a spender not allowed",
        entry(Creds::V1, key, 18, approve(STRANGER)),
        1050,
        "token",
    )
    .await;
    f.signs(
        "an allowed spender",
        entry(Creds::V1, key, 18, approve(ROUTER)),
        1050,
    )
    .await;
    // Expiration: at most 100 ledgers after the current ledger (1000), and not past.
    f.refuses(
        "an expiration too far ahead",
        entry(Creds::V1, key, 19, transfer(key, DEST, 1)),
        1101,
        "expiration",
    )
    .await;
    f.refuses(
        "an expiration already past",
        entry(Creds::V1, key, 19, transfer(key, DEST, 1)),
        1000,
        "expiration",
    )
    .await;
    f.signs(
        "the furthest expiration",
        entry(Creds::V1, key, 19, transfer(key, DEST, 1)),
        1100,
    )
    .await;
    // Delegated signers: refused unless the key's policy allows them.
    f.refuses(
        "delegates not allowed",
        entry(Creds::Delegates, key, 20, transfer(key, DEST, 1)),
        1050,
        "credentials",
    )
    .await;
    let delegating = key_bytes(&signer_testkit::create_key(&mut f.client, "delegating-1").await);
    let (_, result) = f
        .sign_entry(
            "delegating-1",
            entry(
                Creds::Delegates,
                delegating,
                20,
                call(
                    TOKEN,
                    "transfer",
                    vec![
                        ScVal::Address(account(delegating)),
                        ScVal::Address(account(DEST)),
                        amount(1),
                    ],
                    vec![],
                ),
            ),
            TESTNET,
            1050,
        )
        .await;
    let response = result.unwrap_or_else(|e| panic!("delegates where allowed: {e:?}"));
    assert_eq!(
        u32::from_be_bytes(response.preimage_xdr[..4].try_into().unwrap_or_default()),
        10
    );

    // The nonce guard: the identical entry again is fine (another expiration too), another
    // invocation with a used nonce is not, also after a restart.
    f.signs(
        "the same entry again",
        entry(Creds::V1, key, 1, transfer(key, DEST, 500)),
        1060,
    )
    .await;
    f.refuses(
        "a used nonce, another amount",
        entry(Creds::V1, key, 1, transfer(key, DEST, 499)),
        1050,
        "nonce_guard",
    )
    .await;
    f.refuses(
        "a used nonce, V2 credentials",
        entry(Creds::V2, key, 1, transfer(key, DEST, 500)),
        1050,
        "nonce_guard",
    )
    .await;
    f.restart().await;
    f.refuses(
        "a used nonce after a restart",
        entry(Creds::V1, key, 1, transfer(key, DEST, 499)),
        1050,
        "nonce_guard",
    )
    .await;
    f.refuses(
        "a used V2 nonce after a restart",
        entry(Creds::V1, key, 4, transfer(key, DEST, 1)),
        1050,
        "nonce_guard",
    )
    .await;
    f.signs(
        "the same entry after a restart",
        entry(Creds::V1, key, 1, transfer(key, DEST, 500)),
        1050,
    )
    .await;
    // Once the ledger is past every expiration signed for a nonce, the nonce is free again.
    f.rpc.ledger.store(1061, Ordering::SeqCst);
    f.signs(
        "a nonce whose signatures expired",
        entry(Creds::V1, key, 1, transfer(key, DEST, 499)),
        1100,
    )
    .await;
}

#[tokio::test]
async fn an_unknown_or_stale_current_ledger_refuses_every_authorization() {
    let mut f = Fixture::start(&[TESTNET]).await;
    let key = f.key;
    let transfer_entry = |nonce| entry(Creds::V1, key, nonce, transfer(key, DEST, 1));
    f.rpc.mode.store(DOWN, Ordering::SeqCst);
    f.refuses(
        "the RPC endpoint down from the start",
        transfer_entry(1),
        1050,
        "ledger",
    )
    .await;
    f.rpc.mode.store(FRESH, Ordering::SeqCst);
    f.signs("a fresh ledger", transfer_entry(1), 1050).await;
    f.rpc.mode.store(STALE, Ordering::SeqCst);
    f.refuses(
        "a ledger closed an hour ago",
        transfer_entry(2),
        1050,
        "ledger",
    )
    .await;
    // A network without an endpoint: no current ledger at all.
    f.rpc.mode.store(FRESH, Ordering::SeqCst);
    f.refuses_as(
        "a network without an endpoint",
        "wallet-1",
        transfer_entry(3),
        PUBNET,
        1050,
        "ledger",
    )
    .await;
    // A lagging node never moves the ledger back: after a fresh 1000, an answer of 900 is
    // ignored, and 1000 stays the current ledger.
    f.signs("a fresh ledger again", transfer_entry(4), 1050)
        .await;
    f.rpc.ledger.store(900, Ordering::SeqCst);
    f.refuses(
        "an expiration past the last good ledger",
        transfer_entry(5),
        1000,
        "expiration",
    )
    .await;
}

/// The child side of [`import_vector_keys`]: creates each (key id, seed) of `TOKEN_IMPORT` as an
/// Ed25519 key pair with the attributes signerd's index reads (CKA_ID = CKA_LABEL = key id).
/// A test-only import: signerd itself never imports key material.
#[test]
#[ignore = "run by the vector test in a child process, with the token's SOFTHSM2_CONF"]
fn token_import() {
    use cryptoki::object::{Attribute, KeyType, ObjectClass};

    let Ok(task) = std::env::var("TOKEN_IMPORT") else {
        return;
    };
    let keys: Vec<(String, String)> = serde_json::from_str(&task).unwrap_or_else(|e| panic!("{e}"));
    let session = token::user_session();
    let params = signerd::backend::pkcs11::ED25519_EC_PARAMS.to_vec();
    for (key_id, seed) in keys {
        let seed = stellar_strkey::ed25519::PrivateKey::from_string(&seed)
            .unwrap_or_else(|e| panic!("{e}"));
        let public = ed25519_dalek::SigningKey::from_bytes(&seed.0)
            .verifying_key()
            .to_bytes();
        let id = key_id.as_bytes().to_vec();
        let mut point = vec![0x04, 0x20];
        point.extend_from_slice(&public);
        session
            .create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::EcParams(params.clone()),
                Attribute::EcPoint(point),
                Attribute::Id(id.clone()),
                Attribute::Label(id.clone()),
            ])
            .unwrap_or_else(|e| panic!("public {key_id}: {e}"));
        session
            .create_object(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Sign(true),
                Attribute::EcParams(params.clone()),
                Attribute::Value(seed.0.to_vec()),
                Attribute::Id(id.clone()),
                Attribute::Label(id),
            ])
            .unwrap_or_else(|e| panic!("private {key_id}: {e}"));
    }
    println!("TOKEN_IMPORT_DONE");
}

/// Imports `(key id, secret seed)` pairs into `signerd`'s token (a child process: SoftHSM reads
/// `SOFTHSM2_CONF` once, when it initialises).
fn import_vector_keys(signerd: &SignerdProcess, keys: &[(String, String)]) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let output = std::process::Command::new(exe)
        .args([
            "token_import",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SOFTHSM2_CONF", &signerd.token.conf)
        .env(
            "TOKEN_IMPORT",
            serde_json::to_string(keys).unwrap_or_default(),
        )
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("TOKEN_IMPORT_DONE"),
        "import failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every vector of the reference SDK: the preimage and payload signerd builds are the vector's,
/// and with the vector key in signerd's token, the signed entry is the SDK's byte for byte.
#[tokio::test]
async fn signed_entries_are_the_reference_sdks_byte_for_byte() {
    const VECTORS: &str = include_str!("vectors/soroban-auth-entries.jsonl");
    let b64 = |s: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(s.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut vectors: Vec<serde_json::Value> = VECTORS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(vectors.len(), 12);
    // The ledger only moves forward: sign in expiration order.
    vectors.sort_by_key(|v| v["valid_until_ledger"].as_u64());

    // Allow every contract and function the vectors call (no token rules: this is about bytes).
    let mut allowed: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for v in &vectors {
        let entry = SorobanAuthorizationEntry::from_xdr(b64(&v["entry_xdr"]), Limits::none())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut stack = vec![entry.root_invocation];
        while let Some(node) = stack.pop() {
            if let SorobanAuthorizedFunction::ContractFn(a) = &node.function {
                let ScAddress::Contract(id) = &a.contract_address else {
                    panic!("vector calls a non-contract");
                };
                allowed
                    .entry(contract_id((id.0).0))
                    .or_default()
                    .insert(String::from_utf8_lossy(a.function_name.0.as_slice()).into_owned());
            }
            stack.extend(node.sub_invocations.to_vec());
        }
    }
    let contracts: String = allowed
        .iter()
        .map(|(c, fns)| {
            format!(
                "\n[[policy.soroban.contracts]]\ncontract = {c:?}\nfunctions = {:?}\n",
                fns.iter().collect::<Vec<_>>()
            )
        })
        .collect();
    let policy = format!(
        "[policy]\nnetworks = {:?}\n\n[policy.soroban]\nmax_expiration_ledgers = 100\n{contracts}",
        signer_testkit::VECTOR_NETWORKS
    );
    let rpc = Rpc::start(0).await;
    let mut signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![Grant::keys("gateway", &["*"])],
        policy_toml: Some(policy),
        extra_toml: rpc.toml(&signer_testkit::VECTOR_NETWORKS),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let keys: Vec<(String, String)> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                format!("vector-{i}"),
                v["signer_secret_seed"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    import_vector_keys(&signerd, &keys);
    // The key index is built once at start.
    assert!(
        signerd
            .terminate()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
            .success()
    );
    signerd.launch().await.unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    for (i, v) in vectors.iter().enumerate() {
        let name = v["name"].as_str().unwrap_or_default();
        let expiration = u32::try_from(v["valid_until_ledger"].as_u64().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        let key = client
            .get_key(pb::GetKeyRequest {
                key_id: format!("vector-{i}"),
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .into_inner()
            .key
            .unwrap_or_default();
        assert_eq!(
            key.public_key,
            v["signer_public_key"].as_str().unwrap_or_default(),
            "{name}"
        );
        rpc.ledger.store(expiration - 50, Ordering::SeqCst);
        let response = client
            .sign_auth_entry(pb::SignAuthEntryRequest {
                key_id: format!("vector-{i}"),
                entry_xdr: b64(&v["entry_xdr"]),
                network_passphrase: v["network_passphrase"].as_str().unwrap_or_default().into(),
                signature_expiration_ledger: expiration,
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", signerd.log()))
            .into_inner();
        assert_eq!(
            response.preimage_xdr,
            b64(&v["preimage_xdr"]),
            "{name}: preimage"
        );
        assert_eq!(
            hex::encode(&response.payload_hash),
            v["payload_hash"].as_str().unwrap_or_default(),
            "{name}: payload"
        );
        assert_eq!(
            hex::encode(&response.signature),
            v["signature_hex"].as_str().unwrap_or_default(),
            "{name}: signature"
        );
        assert_eq!(
            response.signed_entry_xdr,
            b64(&v["signed_entry_xdr"]),
            "{name}: signed entry"
        );
    }
}

/// SEP-53: the signature is over sha256(prefix + message); a hash sent as a message is refused.
#[tokio::test]
async fn messages_are_signed_with_the_sep53_prefix_and_hashes_are_refused() {
    let mut f = Fixture::start(&[TESTNET]).await;
    let message = b"I own this account, says wallet-1".to_vec();
    let response = f
        .client
        .sign_message(pb::SignMessageRequest {
            key_id: "wallet-1".into(),
            message: message.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    let mut prefixed = b"Stellar Signed Message:\n".to_vec();
    prefixed.extend_from_slice(&message);
    let expected = Sha256::digest(&prefixed);
    assert_eq!(response.payload_hash, expected.to_vec());
    assert!(verifies(f.key, &expected, &response.signature));
    assert!(!verifies(
        f.key,
        &Sha256::digest(&message),
        &response.signature
    ));

    let hash = Sha256::digest(b"a transaction someone wants signed").to_vec();
    for (what, bytes) in [
        ("a raw hash", hash.clone()),
        ("a hex hash", hex::encode(&hash).into_bytes()),
    ] {
        let request_id = f.request_id();
        let status = f
            .client
            .sign_message(with_request_id(
                pb::SignMessageRequest {
                    key_id: "wallet-1".into(),
                    message: bytes,
                },
                &request_id,
            ))
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: signed"));
        assert_eq!(status.code(), Code::PermissionDenied, "{what}");
        assert!(
            status.message().contains("policy message:"),
            "{what}: {status:?}"
        );
        assert_eq!(f.records(&request_id)[0]["rule"], "message", "{what}");
    }
    signer_testkit::create_key(&mut f.client, "silent-1").await;
    let status = f
        .client
        .sign_message(pb::SignMessageRequest {
            key_id: "silent-1".into(),
            message,
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("a key that signs no message signed one"));
    assert!(status.message().contains("policy message:"), "{status:?}");
}

/// A SEP-10 challenge: sequence 0, `"<home domain> auth"` by the client key, the server's own
/// `web_auth_domain`.
fn challenge(client: [u8; 32], server: [u8; 32], home_domain: &str, nonce: u8) -> Vec<u8> {
    let data = |name: &str, value: &[u8]| {
        OperationBody::ManageData(ManageDataOp {
            data_name: String64(name.try_into().unwrap_or_default()),
            data_value: Some(DataValue(value.to_vec().try_into().unwrap_or_default())),
        })
    };
    let mut tx = Tx::new(server, 0);
    tx.time_bounds = Some((now() - 5, now() + 300));
    tx.operations = vec![
        with_source(
            Operation {
                source_account: None,
                body: data(&format!("{home_domain} auth"), &[b'a' + nonce; 64]),
            },
            client,
        ),
        with_source(
            Operation {
                source_account: None,
                body: data("web_auth_domain", b"auth.example.com"),
            },
            server,
        ),
    ];
    tx.xdr()
}

#[tokio::test]
async fn sep10_challenges_are_signed_only_for_allowed_home_domains() {
    let mut f = Fixture::start(&[TESTNET]).await;
    let (key, server) = (f.key, [4; 32]);
    let mut sign = async |xdr: Vec<u8>| {
        f.client
            .sign_transaction(pb::SignTransactionRequest {
                key_id: "wallet-1".into(),
                envelope_xdr: xdr,
                network_passphrase: TESTNET.into(),
            })
            .await
    };
    // Two different challenges at sequence 0 both sign: outside the sequence guard.
    for nonce in 0..2 {
        let signed = sign(challenge(key, server, "example.com", nonce)).await;
        assert!(signed.is_ok(), "challenge {nonce}: {signed:?}");
    }
    let refused = sign(challenge(key, server, "evil.example", 0)).await;
    let status = refused
        .err()
        .unwrap_or_else(|| panic!("a challenge for a domain not allowed was signed"));
    assert!(status.message().contains("policy web_auth:"), "{status:?}");
    // A challenge sourced by the key itself is not a challenge the key should answer.
    let refused = sign(challenge(key, key, "example.com", 0)).await;
    assert!(refused.is_err_and(|s| s.message().contains("policy web_auth:")));
}

/// An `invoke_host_function` operation: the host function and every source-account
/// authorization in it follow the contract policy, node by node.
#[tokio::test]
async fn invoke_host_function_transactions_follow_the_contract_policy() {
    let mut f = Fixture::start(&[TESTNET]).await;
    let key = f.key;
    let invoke = |host: InvokeContractArgs, auth: Vec<SorobanAuthorizedInvocation>| Operation {
        source_account: None,
        body: OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
            host_function: HostFunction::InvokeContract(host),
            auth: auth
                .into_iter()
                .map(|root| SorobanAuthorizationEntry {
                    credentials: SorobanCredentials::SourceAccount,
                    root_invocation: root,
                })
                .collect::<Vec<_>>()
                .try_into()
                .unwrap_or_default(),
        }),
    };
    let transfer_args = |value: i128| {
        args(
            TOKEN,
            "transfer",
            vec![
                ScVal::Address(account(key)),
                ScVal::Address(account(DEST)),
                amount(value),
            ],
        )
    };
    let mut sequence = 0;
    let mut sign = async |op: Operation| {
        sequence += 1;
        let mut tx = Tx::new(key, sequence);
        tx.operations = vec![op];
        let request_id = format!("invoke-{sequence}");
        let result = f
            .client
            .sign_transaction(with_request_id(
                pb::SignTransactionRequest {
                    key_id: "wallet-1".into(),
                    envelope_xdr: tx.xdr(),
                    network_passphrase: TESTNET.into(),
                },
                &request_id,
            ))
            .await;
        (request_id, result)
    };
    let (request_id, signed) = sign(invoke(transfer_args(10), vec![transfer(key, DEST, 10)])).await;
    assert!(signed.is_ok(), "{signed:?}");
    let (_, refused) = sign(invoke(
        args(TOKEN, "burn", vec![ScVal::Address(account(key)), amount(1)]),
        vec![],
    ))
    .await;
    assert!(refused.is_err_and(|s| s.message().contains("policy contract:")));
    let (_, refused) = sign(invoke(transfer_args(5000), vec![])).await;
    assert!(refused.is_err_and(|s| s.message().contains("policy token:")));
    let swap = args(ROUTER, "swap", vec![amount(1)]);
    let (_, refused) = sign(invoke(
        swap.clone(),
        vec![call(
            ROUTER,
            "swap",
            vec![amount(1)],
            vec![call(STRANGER, "drain", vec![], vec![])],
        )],
    ))
    .await;
    assert!(refused.is_err_and(
        |s| s.message().contains("policy contract:") && s.message().contains("sub-invocation")
    ));
    let (_, signed_swap) = sign(invoke(
        swap,
        vec![call(
            ROUTER,
            "swap",
            vec![amount(1)],
            vec![transfer(key, DEST, 3)],
        )],
    ))
    .await;
    assert!(signed_swap.is_ok(), "{signed_swap:?}");
    let records = f.records(&request_id);
    let soroban = &records[0]["soroban"][0];
    assert_eq!(soroban["credentials"], "source_account");
    assert_eq!(soroban["calls"][0]["function"], "transfer");
    assert_eq!(soroban["calls"][0]["args"][2], "10");
}

/// gRPC server reflection lists `signer.v1.Signer` (with the new RPCs) and the health service,
/// over mutual TLS only: what `grpcurl list` and `grpcurl describe` ask.
#[tokio::test]
async fn grpc_reflection_lists_every_service_over_mutual_tls() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let f = Fixture::start(&[TESTNET]).await;
    let cert = f
        .signerd
        .pki
        .client("operator")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let channel = f
        .signerd
        .channel(Some(&cert))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut ask = async |request: MessageRequest| -> Vec<ServerReflectionResponse> {
        grpc.ready().await.unwrap_or_else(|e| panic!("{e}"));
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        );
        let requests = tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        }]);
        let mut answers = grpc
            .streaming(
                tonic::Request::new(requests),
                path,
                tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner();
        let mut all = Vec::new();
        while let Some(answer) = answers.message().await.unwrap_or_else(|e| panic!("{e}")) {
            all.push(answer);
        }
        all
    };
    let listed = ask(MessageRequest::ListServices(String::new())).await;
    let names: Vec<String> = listed
        .iter()
        .filter_map(|a| match &a.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => Some(
                list.service
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    for service in ["signer.v1.Signer", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} not in {names:?}"
        );
    }
    let described = ask(MessageRequest::FileContainingSymbol(
        "signer.v1.Signer".into(),
    ))
    .await;
    let files: Vec<u8> = described
        .iter()
        .filter_map(|a| match &a.message_response {
            Some(MessageResponse::FileDescriptorResponse(files)) => {
                Some(files.file_descriptor_proto.concat())
            }
            _ => None,
        })
        .flatten()
        .collect();
    for method in ["SignAuthEntry", "SignMessage", "SignTransaction"] {
        assert!(
            files.windows(method.len()).any(|w| w == method.as_bytes()),
            "{method} not described"
        );
    }
    // Without a client certificate there is no reflection either.
    let anonymous = f.signerd.channel(None).await;
    if let Ok(channel) = anonymous {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        assert!(
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_err()
        );
    }
}
