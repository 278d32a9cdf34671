//! Everything signerd must refuse, each refused with a clear error and nothing changed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use signer_proto::v1 as pb;
use signer_proto::v1::signer_client::SignerClient;
use signer_testkit::{Grant, SignerdOptions, SignerdProcess, TestPki, refusal};
use signerd::pki::{ClientName, IssuedCertificate};
use tonic::Code;

const TESTNET: &str = "Test SDF Network ; September 2015";

async fn signerd() -> SignerdProcess {
    let mut ops = Grant::keys("ops", &["ops-*"]);
    ops.blind_sign = true;
    let mut reader = Grant::keys("reader", &["wallet-*"]);
    reader.create_keys = false;
    SignerdProcess::start(SignerdOptions {
        acl: vec![
            Grant::keys("gateway", &["wallet-*"]),
            Grant::keys("spiffe://stellar-signer.test/payments", &["pay-*"]),
            Grant::keys("payments.internal.test", &["dns-*"]),
            ops,
            reader,
        ],
        extra_toml: signer_testkit::vector_policy("*"),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn first_vector() -> (Vec<u8>, String) {
    let vector = signer_testkit::vectors::first();
    (vector.envelope_xdr(), vector.network_passphrase)
}

fn create(key_id: &str) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        key_id: key_id.into(),
        backend: String::new(),
    }
}

fn sign(key_id: &str, xdr: Vec<u8>, passphrase: &str) -> pb::SignTransactionRequest {
    pb::SignTransactionRequest {
        key_id: key_id.into(),
        envelope_xdr: xdr,
        network_passphrase: passphrase.into(),
    }
}

/// Waits until signerd's log contains `needle` (the log is written by another process).
async fn log_contains(signerd: &SignerdProcess, needle: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if signerd.log().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Connects with `cert` and makes one call. The connection must fail before any handler runs:
/// either the channel cannot be set up, or the call fails at the transport level (never with a
/// status a handler would produce).
async fn assert_connection_refused(signerd: &SignerdProcess, cert: Option<&IssuedCertificate>) {
    match signerd.channel(cert).await {
        Err(_) => {}
        Ok(channel) => {
            let result = SignerClient::new(channel)
                .list_keys(pb::ListKeysRequest::default())
                .await;
            match result {
                Ok(_) => panic!("a call without a valid client certificate was served"),
                Err(status) => assert!(
                    matches!(
                        status.code(),
                        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
                    ),
                    "unexpected status {status:?}: a handler must not have run"
                ),
            }
        }
    }
    assert!(
        log_contains(signerd, "tls handshake refused").await,
        "signerd did not log the refused handshake:\n{}",
        signerd.log()
    );
}

#[tokio::test]
async fn no_client_certificate_is_refused_at_the_handshake() {
    let signerd = signerd().await;
    assert_connection_refused(&signerd, None).await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let signerd = signerd().await;
    let foreign_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let foreign = TestPki::generate(foreign_dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let cert = foreign
        .client("gateway")
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_connection_refused(&signerd, Some(&cert)).await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let signerd = signerd().await;
    let name = ClientName::CommonName("gateway".into());
    let cert = signerd
        .pki
        .client_valid(&name, now() - 2 * 86_400, now() - 86_400)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_connection_refused(&signerd, Some(&cert)).await;
}

#[tokio::test]
async fn identity_from_san_uri_and_san_dns_is_used() {
    let signerd = signerd().await;
    for (name, key) in [
        (
            ClientName::Uri("spiffe://stellar-signer.test/payments".into()),
            "pay-1",
        ),
        (ClientName::Dns("payments.internal.test".into()), "dns-1"),
    ] {
        let cert = signerd
            .pki
            .client_valid(&name, now() - 60, now() + 3600)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let channel = signerd
            .channel(Some(&cert))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let mut client = SignerClient::new(channel);
        client
            .create_key(create(key))
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        let denied = client
            .create_key(create("wallet-x"))
            .await
            .err()
            .map(|s| s.code());
        assert_eq!(denied, Some(Code::PermissionDenied), "{name:?}");
    }
}

#[tokio::test]
async fn acl_denials_name_the_reason_and_create_nothing() {
    let signerd = signerd().await;
    let mut stranger = signerd
        .client("stranger")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    refusal(
        stranger.create_key(create("wallet-1")).await,
        Code::PermissionDenied,
        "not in the acl",
    );
    assert!(log_contains(&signerd, "denied").await);

    let mut gateway = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    refusal(
        gateway.create_key(create("ops-1")).await,
        Code::PermissionDenied,
        "outside the patterns",
    );

    let mut reader = signerd
        .client("reader")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    refusal(
        reader.create_key(create("wallet-2")).await,
        Code::PermissionDenied,
        "may not create keys",
    );

    // Nothing was created by the refused calls.
    let listed = gateway
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(
        listed.keys.is_empty(),
        "refused calls created {:?}",
        listed.keys
    );
}

#[tokio::test]
async fn signing_with_a_key_outside_the_patterns_is_denied() {
    let signerd = signerd().await;
    let mut ops = signerd
        .client("ops")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    ops.create_key(create("ops-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut gateway = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (xdr, passphrase) = first_vector();
    refusal(
        gateway
            .sign_transaction(sign("ops-1", xdr, &passphrase))
            .await,
        Code::PermissionDenied,
        "",
    );
    refusal(
        gateway
            .get_key(pb::GetKeyRequest {
                key_id: "ops-1".into(),
            })
            .await,
        Code::PermissionDenied,
        "",
    );
    // Listing does not reveal keys outside the caller's patterns.
    let listed = gateway
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(listed.keys.is_empty());
}

#[tokio::test]
async fn unknown_key_is_not_found() {
    let signerd = signerd().await;
    let mut gateway = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (xdr, passphrase) = first_vector();
    refusal(
        gateway
            .sign_transaction(sign("wallet-nope", xdr, &passphrase))
            .await,
        Code::NotFound,
        "wallet-nope",
    );
    refusal(
        gateway
            .get_key(pb::GetKeyRequest {
                key_id: "wallet-nope".into(),
            })
            .await,
        Code::NotFound,
        "",
    );
}

#[tokio::test]
async fn malformed_xdr_and_bad_passphrases_are_invalid_arguments() {
    let signerd = signerd().await;
    let mut gateway = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    gateway
        .create_key(create("wallet-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (xdr, passphrase) = first_vector();

    let cases: Vec<(&str, Vec<u8>, String, &str)> = vec![
        (
            "garbage",
            b"definitely not xdr".to_vec(),
            passphrase.clone(),
            "malformed transaction envelope",
        ),
        (
            "empty envelope",
            Vec::new(),
            passphrase.clone(),
            "malformed transaction envelope",
        ),
        (
            "truncated",
            xdr[..xdr.len() - 10].to_vec(),
            passphrase.clone(),
            "malformed transaction envelope",
        ),
        (
            "base64 instead of raw",
            base64::engine::general_purpose::STANDARD
                .encode(&xdr)
                .into_bytes(),
            passphrase.clone(),
            "malformed transaction envelope",
        ),
        (
            "empty passphrase",
            xdr.clone(),
            String::new(),
            "must not be empty",
        ),
        (
            "absurd passphrase",
            xdr.clone(),
            "x".repeat(10_000),
            "longer than",
        ),
        (
            "control characters",
            xdr.clone(),
            format!("{TESTNET}\u{0}"),
            "printable",
        ),
    ];
    for (name, envelope, passphrase, expected) in cases {
        // Captured output is shown with a failure: it names the case.
        println!("case: {name}");
        refusal(
            gateway
                .sign_transaction(sign("wallet-1", envelope, &passphrase))
                .await,
            Code::InvalidArgument,
            expected,
        );
    }
}

#[tokio::test]
async fn invalid_key_ids_are_invalid_arguments() {
    let signerd = signerd().await;
    let mut gateway = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    for bad in [
        "",
        "wallet 1",
        "wallet/1",
        "wallet-é",
        &format!("wallet-{}", "x".repeat(64)),
    ] {
        println!("case: {bad:?}");
        refusal(
            gateway.create_key(create(bad)).await,
            Code::InvalidArgument,
            "key id",
        );
    }
}

#[tokio::test]
async fn oversized_messages_are_refused_and_the_server_keeps_serving() {
    let signerd = signerd().await;
    let mut gateway = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    gateway
        .create_key(create("wallet-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let huge = vec![0u8; 300 * 1024];
    refusal(
        gateway
            .sign_transaction(sign("wallet-1", huge, TESTNET))
            .await,
        Code::OutOfRange,
        "too large",
    );
    let (xdr, passphrase) = first_vector();
    gateway
        .sign_transaction(sign("wallet-1", xdr, &passphrase))
        .await
        .unwrap_or_else(|e| panic!("after the refusal: {e}"));
}

#[tokio::test]
async fn blind_signing_needs_the_grant_and_exactly_32_bytes() {
    let signerd = signerd().await;
    let mut gateway = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    gateway
        .create_key(create("wallet-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = gateway
        .sign_hash(pb::SignHashRequest {
            key_id: "wallet-1".into(),
            hash: vec![1; 32],
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("blind-signed without the grant"));
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("may not blind-sign"),
        "{}",
        status.message()
    );

    let mut ops = signerd
        .client("ops")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    ops.create_key(create("ops-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for len in [0, 31, 33, 64] {
        let status = ops
            .sign_hash(pb::SignHashRequest {
                key_id: "ops-1".into(),
                hash: vec![1; len],
            })
            .await
            .err()
            .unwrap_or_else(|| panic!("{len}-byte hash signed"));
        assert_eq!(status.code(), Code::InvalidArgument, "{len}");
    }
}

/// Blind signing is granted per key pattern, not per identity: an identity allowed to blind-sign
/// with its `ops-*` keys may not blind-sign with another key it may use for transactions.
#[tokio::test]
async fn blind_signing_is_granted_per_key_pattern() {
    let signerd = SignerdProcess::start(SignerdOptions {
        extra_toml: "\n[[acl]]\nidentity = \"ops\"\ncreate_keys = true\nkeys = [\"ops-*\", \"hot-*\"]\nblind_sign = [\"ops-*\"]\n".into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut ops = signerd
        .client("ops")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    for key in ["ops-1", "hot-1"] {
        ops.create_key(create(key))
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    let blind = |key: &str| pb::SignHashRequest {
        key_id: key.into(),
        hash: vec![7; 32],
    };
    ops.sign_hash(blind("ops-1"))
        .await
        .unwrap_or_else(|e| panic!("a key the pattern covers: {e}"));
    refusal(
        ops.sign_hash(blind("hot-1")).await,
        Code::PermissionDenied,
        "may not blind-sign",
    );
    let records = signerd.audit_records().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        records.iter().any(|r| r.rpc.as_deref() == Some("SignHash")
            && r.key_id.as_deref() == Some("hot-1")
            && r.rule.as_deref() == Some("acl")),
        "the refusal is not on record"
    );
}
