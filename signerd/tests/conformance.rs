//! One conformance suite, run against every backend: the same requests to a real signerd over
//! mTLS, once with keys in a SoftHSM token (`pkcs11`) and once with keys in Cloud KMS (`gcp-kms`,
//! the official client talking to the fake KMS). Whatever holds the keys, a client sees the same
//! behaviour: idempotent creation (also concurrent), 32-byte Ed25519 public keys, signatures
//! that verify, concurrent signing, and the same gRPC status for the same failure.

use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use signer_proto::v1 as pb;
use signer_proto::v1::signer_client::SignerClient;
use signer_testkit::fake_kms::{FakeKms, Fault, FaultPlan};
use signer_testkit::{GcpKmsOptions, Grant, SignerdOptions, SignerdProcess, signature_verifies};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Pkcs11,
    GcpKms,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Pkcs11 => "pkcs11",
            Backend::GcpKms => "gcp-kms",
        }
    }
}

/// A signerd whose default backend is the one under test, and the fake KMS when it is KMS.
struct Harness {
    signerd: SignerdProcess,
    kms: Option<FakeKms>,
}

impl Harness {
    async fn start(backend: Backend) -> Harness {
        let mut blind = Grant::keys("gateway", &["wallet-*"]);
        blind.blind_sign = true;
        let kms = match backend {
            Backend::Pkcs11 => None,
            Backend::GcpKms => Some(FakeKms::start().await.unwrap_or_else(|e| panic!("{e:#}"))),
        };
        let signerd = SignerdProcess::start(SignerdOptions {
            acl: vec![blind],
            gcp_kms: kms.as_ref().map(GcpKmsOptions::fake),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        Harness { signerd, kms }
    }

    async fn client(&self) -> SignerClient<Channel> {
        self.signerd
            .client("gateway")
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Makes the backend unreachable: the token directory disappears, or KMS answers 503 to
    /// everything.
    fn take_down(&self) {
        match &self.kms {
            None => std::fs::rename(&self.signerd.token.token_dir, self.pulled_token_dir())
                .unwrap_or_else(|e| panic!("{e}")),
            Some(kms) => kms.inject(FaultPlan::always(Fault::Unavailable)),
        }
    }

    fn bring_back(&self) {
        match &self.kms {
            None => std::fs::rename(self.pulled_token_dir(), &self.signerd.token.token_dir)
                .unwrap_or_else(|e| panic!("{e}")),
            Some(kms) => kms.clear_fault(),
        }
    }

    fn pulled_token_dir(&self) -> std::path::PathBuf {
        self.signerd.dir.path().join("pulled-tokens")
    }

    /// The public key as the backend itself holds it, where the test can look (the fake KMS).
    fn backend_public_key(&self, key_id: &str) -> Option<[u8; 32]> {
        self.kms.as_ref().map(|kms| {
            kms.public_key(&format!("{}/cryptoKeys/{key_id}", GcpKmsOptions::KEY_RING))
                .unwrap_or_else(|| panic!("{key_id} is not in the fake kms"))
        })
    }
}

fn create(key_id: &str) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        key_id: key_id.into(),
        backend: String::new(),
    }
}

fn sign_hash(key_id: &str, hash: [u8; 32]) -> pb::SignHashRequest {
    pb::SignHashRequest {
        key_id: key_id.into(),
        hash: hash.to_vec(),
    }
}

async fn create_key(client: &mut SignerClient<Channel>, key_id: &str) -> pb::CreateKeyResponse {
    client
        .create_key(create(key_id))
        .await
        .unwrap_or_else(|e| panic!("CreateKey {key_id}: {e}"))
        .into_inner()
}

fn key_of(response: pb::CreateKeyResponse) -> pb::Key {
    response
        .key
        .unwrap_or_else(|| panic!("no key in the response"))
}

async fn create_key_is_idempotent(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut client = h.client().await;

    let first = create_key(&mut client, "wallet-1").await;
    assert!(first.created, "the first CreateKey creates");
    let key = key_of(first);
    assert_eq!(key.backend, backend.name());
    assert_eq!(key.key_id, "wallet-1");

    let again = create_key(&mut client, "wallet-1").await;
    assert!(!again.created, "the second CreateKey must not create");
    assert_eq!(key_of(again), key, "the same key comes back");

    let fetched = client
        .get_key(pb::GetKeyRequest {
            key_id: "wallet-1".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .key;
    assert_eq!(fetched.as_ref(), Some(&key));
    let listed = client
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .keys;
    assert_eq!(listed, vec![key.clone()]);
    if let Some(held) = h.backend_public_key("wallet-1") {
        assert_eq!(held.to_vec(), key.public_key_bytes, "the key KMS holds");
    }
}

async fn concurrent_create_key_makes_one_key(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = h.client().await;
        tasks.push(tokio::spawn(async move {
            client.create_key(create("wallet-race")).await
        }));
    }
    let mut created = 0;
    let mut public_keys = std::collections::HashSet::new();
    for task in futures::future::join_all(tasks).await {
        let response = task
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}\nsignerd log:\n{}", h.signerd.log()))
            .into_inner();
        created += usize::from(response.created);
        let key = key_of(response);
        assert_eq!(key.backend, backend.name());
        public_keys.insert(key.public_key_bytes);
    }
    assert_eq!(created, 1, "exactly one request creates the key");
    assert_eq!(public_keys.len(), 1, "everyone gets the same key");
    if let Some(held) = h.backend_public_key("wallet-race") {
        assert!(public_keys.contains(held.as_slice()));
    }
}

async fn public_key_is_a_32_byte_ed25519_key_and_its_account_id(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut client = h.client().await;
    let key = key_of(create_key(&mut client, "wallet-format").await);
    assert_eq!(key.public_key_bytes.len(), 32);
    let raw: [u8; 32] = key
        .public_key_bytes
        .as_slice()
        .try_into()
        .unwrap_or_else(|_| panic!("not 32 bytes"));
    assert!(
        VerifyingKey::from_bytes(&raw).is_ok(),
        "not a valid Ed25519 point"
    );
    let account = stellar_strkey::ed25519::PublicKey::from_string(&key.public_key)
        .unwrap_or_else(|e| panic!("{:?} is not a G... strkey: {e}", key.public_key));
    assert_eq!(account.0, raw, "the account id encodes the same key");
}

async fn signatures_verify(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut client = h.client().await;
    let key = key_of(create_key(&mut client, "wallet-sign").await);

    // SignTransaction: signerd hashes the envelope, checks policy, the backend signs the hash.
    let source: [u8; 32] = key
        .public_key_bytes
        .as_slice()
        .try_into()
        .unwrap_or([0; 32]);
    let signed = client
        .sign_transaction(pb::SignTransactionRequest {
            key_id: "wallet-sign".into(),
            envelope_xdr: signer_testkit::stellar::Tx::new(source, 1).xdr(),
            network_passphrase: signer_testkit::TESTNET.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(signature_verifies(
        &key.public_key_bytes,
        &signed.signed_hash,
        &signed.signature
    ));
    assert_eq!(signed.hint, key.public_key_bytes[28..].to_vec());

    // SignHash over a few hashes: each signature verifies for its own hash only.
    for i in 0..4u8 {
        let hash = [i; 32];
        let signature = client
            .sign_hash(sign_hash("wallet-sign", hash))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner()
            .signature;
        assert!(signature_verifies(&key.public_key_bytes, &hash, &signature));
        assert!(!signature_verifies(
            &key.public_key_bytes,
            &[i ^ 0xff; 32],
            &signature
        ));
    }
}

async fn concurrent_signing_gives_signatures_that_verify(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut client = h.client().await;
    let key = key_of(create_key(&mut client, "wallet-busy").await);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(h.client().await);
    }
    let mut tasks = Vec::new();
    for i in 0..64u8 {
        let mut client = clients[usize::from(i) % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let hash = [i; 32];
            let response = client.sign_hash(sign_hash("wallet-busy", hash)).await;
            (hash, response)
        }));
    }
    let mut verified = 0;
    for task in futures::future::join_all(tasks).await {
        let (hash, response) = task.unwrap_or_else(|e| panic!("{e}"));
        let signature = response
            .unwrap_or_else(|e| panic!("{e}\nsignerd log:\n{}", h.signerd.log()))
            .into_inner()
            .signature;
        assert!(signature_verifies(&key.public_key_bytes, &hash, &signature));
        verified += 1;
    }
    assert_eq!(verified, 64);
}

async fn unknown_keys_are_not_found(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut client = h.client().await;
    create_key(&mut client, "wallet-known").await;
    let status = client
        .get_key(pb::GetKeyRequest {
            key_id: "wallet-unknown".into(),
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("found a key that was never created"));
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = client
        .sign_hash(sign_hash("wallet-unknown", [1; 32]))
        .await
        .err()
        .unwrap_or_else(|| panic!("signed with a key that was never created"));
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

async fn invalid_key_ids_are_invalid_arguments(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut client = h.client().await;
    for bad in [
        "",
        "wallet-a b",
        "wallet-ключ",
        "wallet-1/2",
        &"w".repeat(65),
    ] {
        let status = client
            .create_key(create(bad))
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        let status = client
            .sign_hash(sign_hash(bad, [1; 32]))
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
    }
    let listed = client
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .keys;
    assert!(listed.is_empty(), "a refused request created {listed:?}");
}

async fn backend_down_is_unavailable_then_recovers(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut client = h.client().await;
    let key = key_of(create_key(&mut client, "wallet-outage").await);
    assert_eq!(
        h.signerd.health("gateway").await.ok(),
        Some(ServingStatus::Serving)
    );

    h.take_down();
    h.signerd
        .wait_for_health("gateway", ServingStatus::NotServing)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let status = client
        .sign_hash(sign_hash("wallet-outage", [3; 32]))
        .await
        .err()
        .unwrap_or_else(|| panic!("signed while the backend is down"));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = client
        .create_key(create("wallet-during-outage"))
        .await
        .err()
        .unwrap_or_else(|| panic!("created a key while the backend is down"));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    h.bring_back();
    h.signerd
        .wait_for_health("gateway", ServingStatus::Serving)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Health is back; the first request may still meet the tail of the outage (a breaker
    // that has not yet seen the probe's success), so poll briefly with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let signature = loop {
        match client.sign_hash(sign_hash("wallet-outage", [3; 32])).await {
            Ok(response) => break response.into_inner().signature,
            Err(status) if tokio::time::Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("still failing after recovery: {status:?}"),
        }
    };
    assert!(signature_verifies(
        &key.public_key_bytes,
        &[3; 32],
        &signature
    ));
}

/// Runs each scenario once per backend, as `pkcs11::NAME` and `gcp_kms::NAME`.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod pkcs11 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Pkcs11).await
                }
            )*
        }
        mod gcp_kms {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::GcpKms).await
                }
            )*
        }
    };
}

conformance!(
    create_key_is_idempotent,
    concurrent_create_key_makes_one_key,
    public_key_is_a_32_byte_ed25519_key_and_its_account_id,
    signatures_verify,
    concurrent_signing_gives_signatures_that_verify,
    unknown_keys_are_not_found,
    invalid_key_ids_are_invalid_arguments,
    backend_down_is_unavailable_then_recovers,
);
