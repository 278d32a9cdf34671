//! The `gcp-kms` backend against the fake Cloud KMS, through the real official client and a
//! real signerd over mTLS: integrity checks on every sign response (a response that fails one
//! never yields a signature), retries on transient failures, bounded retries and deadlines, the
//! circuit breaker, the public key cache, key creation, and both backends in one signerd.

use std::time::{Duration, Instant};

use signer_proto::v1 as pb;
use signer_proto::v1::signer_client::SignerClient;
use signer_testkit::fake_kms::{FakeKms, Fault, FaultPlan, KmsCall};
use signer_testkit::{GcpKmsOptions, Grant, SignerdOptions, SignerdProcess, signature_verifies};
use tonic::Code;
use tonic::transport::Channel;

const RING: &str = GcpKmsOptions::KEY_RING;

async fn fake_kms() -> FakeKms {
    FakeKms::start().await.unwrap_or_else(|e| panic!("{e:#}"))
}

/// A KMS-only signerd on `kms`, with extra `[backend.gcp_kms]` settings.
async fn signerd(kms: &FakeKms, settings: &str) -> SignerdProcess {
    signerd_serving(kms, settings, "").await
}

/// [`signerd`] with extra `[server]` lines.
async fn signerd_serving(kms: &FakeKms, settings: &str, server: &str) -> SignerdProcess {
    // signerd's audit key lives in the default backend; having it exist already keeps the call
    // counts below about the keys each test makes.
    if !kms.has_key(RING, "signerd-audit") {
        kms.preload_key(RING, "signerd-audit")
            .unwrap_or_else(|e| panic!("{e:#}"));
        // As signerd creates it: anchored at "nothing written yet".
        let empty =
            signerd::backend::gcp_kms::anchor_labels(&signerd::audit::anchor::AuditAnchor::EMPTY);
        kms.set_labels(RING, "signerd-audit", empty.into_iter().collect());
    }
    let mut grant = Grant::keys("gateway", &["wallet-*"]);
    grant.blind_sign = true;
    let mut options = GcpKmsOptions::fake(kms);
    options.settings = settings.to_owned();
    SignerdProcess::start(SignerdOptions {
        acl: vec![grant],
        gcp_kms: Some(options),
        server_toml: server.to_owned(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn connect(signerd: &SignerdProcess) -> SignerClient<Channel> {
    signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn create(client: &mut SignerClient<Channel>, key_id: &str, backend: &str) -> pb::Key {
    client
        .create_key(pb::CreateKeyRequest {
            key_id: key_id.into(),
            backend: backend.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateKey {key_id}: {e}"))
        .into_inner()
        .key
        .unwrap_or_else(|| panic!("no key"))
}

async fn sign(
    client: &mut SignerClient<Channel>,
    key_id: &str,
    hash: [u8; 32],
) -> Result<Vec<u8>, tonic::Status> {
    client
        .sign_hash(pb::SignHashRequest {
            key_id: key_id.into(),
            hash: hash.to_vec(),
        })
        .await
        .map(|r| r.into_inner().signature)
}

async fn get_key(client: &mut SignerClient<Channel>, key_id: &str) -> Option<pb::Key> {
    client
        .get_key(pb::GetKeyRequest {
            key_id: key_id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("GetKey {key_id}: {e}"))
        .into_inner()
        .key
}

async fn wait_not_serving(signerd: &SignerdProcess) {
    signerd
        .wait_for_health(
            "gateway",
            tonic_health::pb::health_check_response::ServingStatus::NotServing,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Polls (with a deadline) until `check` holds: the log is written by another process.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corrupt_sign_response_is_refused_and_no_signature_leaves() {
    let kms = fake_kms().await;
    // One attempt per call: a corrupt response must not be hidden by a lucky retry, and the
    // count of sign calls below is exact.
    let signerd = signerd(&kms, "max_attempts = 1").await;
    let mut client = connect(&signerd).await;
    let key = create(&mut client, "wallet-1", "").await;

    for fault in [
        Fault::WrongSignatureCrc32c,
        Fault::WrongKeyName,
        Fault::DataCrc32cNotVerified,
        Fault::CorruptSignature,
    ] {
        kms.inject(FaultPlan::always(fault).on_sign());
        let before = kms.calls(KmsCall::AsymmetricSign);
        let status = sign(&mut client, "wallet-1", [7; 32])
            .await
            .err()
            .unwrap_or_else(|| panic!("{fault:?}: a signature left signerd"));
        assert_eq!(status.code(), Code::Internal, "{fault:?}: {status:?}");
        assert_eq!(
            status.message(),
            "internal error",
            "{fault:?}: details stay in the log"
        );
        assert_eq!(
            kms.calls(KmsCall::AsymmetricSign),
            before + 1,
            "{fault:?}: the request reached KMS and its answer was refused"
        );
        kms.clear_fault();
        let signature = sign(&mut client, "wallet-1", [7; 32])
            .await
            .unwrap_or_else(|e| panic!("after {fault:?}: {e}"));
        assert!(signature_verifies(
            &key.public_key_bytes,
            &[7; 32],
            &signature
        ));
    }
    for why in [
        "signature_crc32c does not match",
        "kms did not verify data_crc32c",
        "cryptoKeyVersions/2",
        "signature does not verify",
    ] {
        eventually(why, || signerd.log().contains(why)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_503_and_429_are_retried_until_kms_answers() {
    let kms = fake_kms().await;
    let signerd = signerd(&kms, "").await;
    let mut client = connect(&signerd).await;
    let key = create(&mut client, "wallet-1", "").await;

    for fault in [Fault::Unavailable, Fault::TooManyRequests] {
        kms.inject(FaultPlan::times(fault, 3).on_sign());
        let before = kms.calls(KmsCall::AsymmetricSign);
        let signature = sign(&mut client, "wallet-1", [9; 32])
            .await
            .unwrap_or_else(|e| panic!("{fault:?} was not retried: {e}"));
        assert!(signature_verifies(
            &key.public_key_bytes,
            &[9; 32],
            &signature
        ));
        assert_eq!(
            kms.calls(KmsCall::AsymmetricSign),
            before + 4,
            "{fault:?}: three failed attempts, then the one that signed"
        );
    }

    // The lookup and creation path is retried too.
    kms.inject(FaultPlan::times(Fault::Unavailable, 2));
    let created = create(&mut client, "wallet-2", "").await;
    assert_eq!(created.backend, "gcp-kms");
    assert_eq!(kms.calls(KmsCall::CreateCryptoKey), 2, "one per key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_by_the_attempt_limit() {
    let kms = fake_kms().await;
    let signerd = signerd(&kms, "max_attempts = 3").await;
    let mut client = connect(&signerd).await;
    create(&mut client, "wallet-1", "").await;

    kms.inject(FaultPlan::always(Fault::Unavailable).on_sign());
    let before = kms.calls(KmsCall::AsymmetricSign);
    let status = sign(&mut client, "wallet-1", [1; 32])
        .await
        .err()
        .unwrap_or_else(|| panic!("signed through a permanent 503"));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(kms.calls(KmsCall::AsymmetricSign), before + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_slower_than_the_deadline_is_unavailable_within_the_deadline() {
    let kms = fake_kms().await;
    let signerd = signerd(&kms, "deadline_ms = 1500\nattempt_timeout_ms = 500").await;
    let mut client = connect(&signerd).await;
    let key = create(&mut client, "wallet-1", "").await;

    kms.set_latency(Duration::from_secs(20));
    let started = Instant::now();
    let status = sign(&mut client, "wallet-1", [2; 32])
        .await
        .err()
        .unwrap_or_else(|| panic!("signed through a 20 s latency"));
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        elapsed < Duration::from_millis(3_000),
        "the 1.5 s deadline was not kept: {elapsed:?}"
    );

    kms.set_latency(Duration::ZERO);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let signature = loop {
        match sign(&mut client, "wallet-1", [2; 32]).await {
            Ok(signature) => break signature,
            Err(status) if tokio::time::Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("no recovery: {status:?}"),
        }
    };
    assert!(signature_verifies(
        &key.public_key_bytes,
        &[2; 32],
        &signature
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_answers_unavailable_without_calling_kms() {
    let kms = fake_kms().await;
    // A breaker that stays open for the whole test once it opens.
    let signerd = signerd(&kms, "breaker_open_ms = 600000\nmax_attempts = 1").await;
    let mut client = connect(&signerd).await;
    create(&mut client, "wallet-1", "").await;

    kms.inject(FaultPlan::always(Fault::Unavailable));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = sign(&mut client, "wallet-1", [4; 32])
            .await
            .err()
            .unwrap_or_else(|| panic!("signed through an outage"));
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        if status.message().contains("circuit open") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the breaker never opened"
        );
    }
    wait_not_serving(&signerd).await;
    let calls_before: u64 = [KmsCall::AsymmetricSign, KmsCall::GetKeyRing]
        .iter()
        .map(|c| kms.calls(*c))
        .sum();
    for _ in 0..10 {
        let status = sign(&mut client, "wallet-1", [4; 32])
            .await
            .err()
            .unwrap_or_else(|| panic!("signed with the breaker open"));
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("circuit open"), "{status:?}");
    }
    wait_not_serving(&signerd).await;
    let calls_after: u64 = [KmsCall::AsymmetricSign, KmsCall::GetKeyRing]
        .iter()
        .map(|c| kms.calls(*c))
        .sum();
    assert_eq!(
        calls_after, calls_before,
        "neither requests nor probes reach KMS while the breaker is open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_is_listed_once_at_start_and_public_keys_are_cached() {
    let kms = fake_kms().await;
    kms.set_max_page_size(2);
    let mut preloaded = Vec::new();
    for i in 1..=5 {
        let id = format!("wallet-{i}");
        let public = kms
            .preload_key(RING, &id)
            .unwrap_or_else(|e| panic!("{e:#}"));
        preloaded.push((id, public));
    }
    // A key that is not an Ed25519 signing key under a signerd id is ignored; none here, but a
    // key id signerd cannot use must not break the start either.
    kms.preload_key(RING, "x.invalid")
        .unwrap_or_else(|e| panic!("{e:#}"));

    let signerd = signerd(&kms, "").await;
    assert_eq!(
        kms.calls(KmsCall::ListCryptoKeys),
        4,
        "7 keys (with the audit key), 2 per page: every page was read"
    );
    assert_eq!(
        kms.calls(KmsCall::GetPublicKey),
        6,
        "one public key read per usable key (5 wallets and the audit key)"
    );
    let mut client = connect(&signerd).await;
    let listed = client
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .keys;
    assert_eq!(listed.len(), 5);
    for (key, (id, public)) in listed.iter().zip(&preloaded) {
        assert_eq!(&key.key_id, id);
        assert_eq!(key.backend, "gcp-kms");
        assert_eq!(key.public_key_bytes, public.to_vec());
    }
    for (id, public) in &preloaded {
        let key = get_key(&mut client, id)
            .await
            .unwrap_or_else(|| panic!("{id}"));
        assert_eq!(key.public_key_bytes, public.to_vec());
        let signature = sign(&mut client, id, [5; 32])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(signature_verifies(public, &[5; 32], &signature));
    }
    assert_eq!(
        kms.calls(KmsCall::GetPublicKey),
        6,
        "GetKey and signing are served from the cache"
    );

    // A key made elsewhere after the start (another replica) is found on first use, then cached.
    let late = kms
        .preload_key(RING, "wallet-late")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let key = get_key(&mut client, "wallet-late")
        .await
        .unwrap_or_else(|| panic!("late key not found"));
    assert_eq!(key.public_key_bytes, late.to_vec());
    get_key(&mut client, "wallet-late").await;
    let signature = sign(&mut client, "wallet-late", [6; 32])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(signature_verifies(&late, &[6; 32], &signature));
    assert_eq!(kms.calls(KmsCall::GetPublicKey), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_key_waits_for_the_first_version_and_uses_the_configured_protection() {
    let kms = fake_kms().await;
    kms.set_pending_polls(3);
    let signerd = signerd(&kms, "").await;
    let mut client = connect(&signerd).await;
    let key = create(&mut client, "wallet-hsm", "").await;
    assert!(
        kms.calls(KmsCall::GetCryptoKeyVersion) >= 4,
        "three PENDING_GENERATION answers, then ENABLED"
    );
    assert_eq!(
        kms.public_key(&format!("{RING}/cryptoKeys/wallet-hsm")),
        Some(
            key.public_key_bytes
                .as_slice()
                .try_into()
                .unwrap_or([0; 32])
        )
    );
    assert_eq!(
        kms.protection_level(&format!("{RING}/cryptoKeys/wallet-hsm")),
        Some("HSM"),
        "HSM is the default"
    );

    let kms = fake_kms().await;
    let signerd = signerd_software(&kms).await;
    let mut client = connect(&signerd).await;
    create(&mut client, "wallet-soft", "").await;
    assert_eq!(
        kms.protection_level(&format!("{RING}/cryptoKeys/wallet-soft")),
        Some("SOFTWARE")
    );
}

async fn signerd_software(kms: &FakeKms) -> SignerdProcess {
    signerd(kms, "protection_level = \"SOFTWARE\"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_id_longer_than_kms_allows_is_an_invalid_argument() {
    let kms = fake_kms().await;
    let signerd = signerd(&kms, "").await;
    let mut client = connect(&signerd).await;
    let too_long = format!("wallet-{}", "x".repeat(57));
    assert_eq!(
        too_long.len(),
        64,
        "valid for signerd, one too long for KMS"
    );
    let status = client
        .create_key(pb::CreateKeyRequest {
            key_id: too_long,
            backend: String::new(),
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(kms.calls(KmsCall::CreateCryptoKey), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_in_one_signerd_each_key_in_one_backend() {
    let kms = fake_kms().await;
    let mut grant = Grant::keys("gateway", &["wallet-*"]);
    grant.blind_sign = true;
    let mut options = GcpKmsOptions::fake(&kms);
    options.default = false;
    options.without_pkcs11 = false;
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![grant],
        gcp_kms: Some(options),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = connect(&signerd).await;

    let hsm = create(&mut client, "wallet-hsm", "").await;
    assert_eq!(hsm.backend, "pkcs11", "pkcs11 stays the default");
    let cloud = create(&mut client, "wallet-cloud", "gcp-kms").await;
    assert_eq!(cloud.backend, "gcp-kms");
    // The id already lives in pkcs11: asking for it in KMS returns that key, creates nothing.
    let again = client
        .create_key(pb::CreateKeyRequest {
            key_id: "wallet-hsm".into(),
            backend: "gcp-kms".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.key.as_ref(), Some(&hsm));
    assert!(
        kms.public_key(&format!("{RING}/cryptoKeys/wallet-hsm"))
            .is_none()
    );
    let status = client
        .create_key(pb::CreateKeyRequest {
            key_id: "wallet-x".into(),
            backend: "aws-kms".into(),
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("unknown backend accepted"));
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let listed = client
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .keys;
    let backends: Vec<(&str, &str)> = listed
        .iter()
        .map(|k| (k.key_id.as_str(), k.backend.as_str()))
        .collect();
    assert_eq!(
        backends,
        [("wallet-cloud", "gcp-kms"), ("wallet-hsm", "pkcs11")]
    );
    for key in [&hsm, &cloud] {
        let signature = sign(&mut client, &key.key_id, [8; 32])
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", key.key_id));
        assert!(signature_verifies(
            &key.public_key_bytes,
            &[8; 32],
            &signature
        ));
    }

    // The token goes away: its keys are UNAVAILABLE, the KMS keys keep signing.
    let pulled = signerd.dir.path().join("pulled-tokens");
    std::fs::rename(&signerd.token.token_dir, &pulled).unwrap_or_else(|e| panic!("{e}"));
    wait_not_serving(&signerd).await;
    let status = sign(&mut client, "wallet-hsm", [8; 32])
        .await
        .err()
        .unwrap_or_else(|| panic!("signed without the token"));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let signature = sign(&mut client, "wallet-cloud", [8; 32])
        .await
        .unwrap_or_else(|e| panic!("a KMS key must not depend on the token: {e}"));
    assert!(signature_verifies(
        &cloud.public_key_bytes,
        &[8; 32],
        &signature
    ));
    std::fs::rename(&pulled, &signerd.token.token_dir).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_ring_stops_signerd_at_start_unless_it_may_create_it() {
    let kms = fake_kms().await;
    let mut options = GcpKmsOptions::fake(&kms);
    options.settings = "create_key_ring = false".into();
    let refused = SignerdProcess::start(SignerdOptions {
        gcp_kms: Some(options),
        ..Default::default()
    })
    .await;
    let err = match refused {
        Ok(_) => panic!("signerd started without its key ring"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("backend.gcp_kms.key_ring") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(kms.calls(KmsCall::CreateKeyRing), 0);

    // Allowed to create it (the default), signerd creates the ring, then its audit key in it.
    let _signerd = SignerdProcess::start(SignerdOptions {
        gcp_kms: Some(GcpKmsOptions::fake(&kms)),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(kms.calls(KmsCall::CreateKeyRing), 1);
    assert!(kms.has_key(RING, "signerd-audit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_errors_answer_resource_exhausted_and_do_not_open_the_breaker() {
    let kms = fake_kms().await;
    // Three unavailable answers would open this breaker for the rest of the test.
    let signerd = signerd(
        &kms,
        "max_attempts = 1\nbreaker_failures = 3\nbreaker_open_ms = 600000",
    )
    .await;
    let mut client = connect(&signerd).await;
    let key = create(&mut client, "wallet-1", "").await;

    kms.inject(FaultPlan::times(Fault::TooManyRequests, 6).on_sign());
    let before = kms.calls(KmsCall::AsymmetricSign);
    for attempt in 1..=6 {
        let status = sign(&mut client, "wallet-1", [3; 32])
            .await
            .err()
            .unwrap_or_else(|| panic!("attempt {attempt}: signed through a 429"));
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "attempt {attempt}: {status:?}"
        );
        assert!(!status.message().contains("circuit open"), "{status:?}");
    }
    assert_eq!(
        kms.calls(KmsCall::AsymmetricSign),
        before + 6,
        "every call reached KMS: the breaker stayed closed"
    );
    // The quota is back: the very next call reaches KMS and signs.
    let signature = sign(&mut client, "wallet-1", [3; 32])
        .await
        .unwrap_or_else(|e| panic!("after the quota errors: {e}"));
    assert!(signature_verifies(
        &key.public_key_bytes,
        &[3; 32],
        &signature
    ));
    assert_eq!(kms.calls(KmsCall::AsymmetricSign), before + 7);
    assert_eq!(
        signerd.health("gateway").await.ok(),
        Some(tonic_health::pb::health_check_response::ServingStatus::Serving)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_are_remembered_and_their_lookups_rate_limited() {
    let kms = fake_kms().await;
    let signerd = signerd(
        &kms,
        "unknown_key_cache_ms = 600000\nunknown_key_lookups_per_second = 1",
    )
    .await;
    let mut client = connect(&signerd).await;
    let started = Instant::now();
    let before = kms.calls(KmsCall::GetPublicKey);
    for _ in 0..5 {
        let status = client
            .get_key(pb::GetKeyRequest {
                key_id: "wallet-ghost".into(),
            })
            .await
            .err()
            .unwrap_or_else(|| panic!("a key that does not exist was found"));
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    assert_eq!(
        kms.calls(KmsCall::GetPublicKey),
        before + 1,
        "the miss is remembered: one KMS lookup for five requests"
    );

    // Made-up ids, each new: at most one KMS lookup per second gets through.
    let (mut not_found, mut refused) = (0u64, 0u64);
    for i in 0..10 {
        let status = client
            .get_key(pb::GetKeyRequest {
                key_id: format!("wallet-made-up-{i}"),
            })
            .await
            .err()
            .unwrap_or_else(|| panic!("a made-up key was found"));
        match status.code() {
            Code::NotFound => not_found += 1,
            Code::ResourceExhausted => refused += 1,
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs() + 1;
    let lookups = kms.calls(KmsCall::GetPublicKey) - before;
    assert_eq!(lookups, 1 + not_found, "a refused lookup never reaches KMS");
    assert!(
        lookups <= 1 + elapsed,
        "{lookups} KMS lookups in under {elapsed} s at one per second"
    );
    assert!(refused >= 1, "no lookup was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_running_past_the_request_timeout_is_cancelled() {
    let kms = fake_kms().await;
    let signerd = signerd_serving(&kms, "", "request_timeout_ms = 1000").await;
    let mut client = connect(&signerd).await;
    create(&mut client, "wallet-1", "").await;

    // KMS hangs far longer than the request may run (the KMS deadline is 15 s).
    kms.set_latency(Duration::from_secs(20));
    let started = Instant::now();
    let status = sign(&mut client, "wallet-1", [2; 32])
        .await
        .err()
        .unwrap_or_else(|| panic!("signed through a 20 s latency"));
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert!(
        elapsed < Duration::from_secs(10),
        "the 1 s request timeout was not kept: {elapsed:?}"
    );
    kms.set_latency(Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_runs_at_most_max_concurrent_streams_requests_at_once() {
    let kms = fake_kms().await;
    let signerd = signerd_serving(&kms, "", "max_concurrent_streams = 2").await;
    // One client: every request below shares one HTTP/2 connection.
    let mut client = connect(&signerd).await;
    let key = create(&mut client, "wallet-1", "").await;

    // Each signature takes a while at KMS, so requests that run together overlap there.
    kms.set_latency(Duration::from_millis(300));
    let requests: Vec<_> = (0..6u8)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move { sign(&mut client, "wallet-1", [i; 32]).await })
        })
        .collect();
    for (i, request) in requests.into_iter().enumerate() {
        let signature = request
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert!(signature_verifies(
            &key.public_key_bytes,
            &[i as u8; 32],
            &signature
        ));
    }
    kms.set_latency(Duration::ZERO);
    let most = kms.max_concurrent_signs();
    assert!(
        (1..=2).contains(&most),
        "{most} signatures ran at once on one connection limited to 2 streams"
    );
}
