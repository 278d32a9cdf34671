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
            Grant::for_identity("uri:spiffe://stellar-signer.test/payments", &["pay-*"]),
            Grant::for_identity("dns:payments.internal.test", &["dns-*"]),
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

/// A 100-operation envelope from `source` whose every operation names a muxed source and a muxed
/// destination: about the largest operation summary an envelope can make signerd write.
fn hundred_operation_envelope(source: [u8; 32]) -> Vec<u8> {
    use signer_testkit::stellar::{Tx, payment_to_muxed};
    use stellar_xdr::{MuxedAccount, MuxedAccountMed25519, Uint256};
    let mut tx = Tx::new(source, 1);
    tx.operations = (0..100u64)
        .map(|i| {
            let mut op = payment_to_muxed([9; 32], u64::MAX - i, 1);
            op.source_account = Some(MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
                id: u64::MAX - i,
                ed25519: Uint256([8; 32]),
            }));
            op
        })
        .collect();
    tx.xdr()
}

#[tokio::test]
async fn a_flood_of_large_denied_envelopes_writes_few_small_records_and_counts_the_rest() {
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![Grant::keys("gateway", &["wallet-*"])],
        limits_toml: Some(
            "[limits]\nper_identity_per_second = 1000000\nper_identity_burst = 1000000\nper_key_per_second = 1000000\nper_key_burst = 1000000\ndenials_per_second = 1\ndenial_burst = 5"
                .into(),
        ),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut gateway = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let key = signer_testkit::create_key(&mut gateway, "wallet-1").await;
    let envelope = hundred_operation_envelope(signer_testkit::stellar::key_bytes(&key));
    let mut stranger = signerd
        .client("stranger")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    // A caller outside the ACL, and one inside it sending envelopes its policy refuses (the
    // default policy allows testnet only).
    const FLOOD: u64 = 40;
    const PUBNET: &str = "Public Global Stellar Network ; September 2015";
    let started = std::time::Instant::now();
    let mut answers = std::collections::HashMap::<(&str, Code), u64>::new();
    for _ in 0..FLOOD {
        for (identity, client) in [("stranger", &mut stranger), ("gateway", &mut gateway)] {
            let status = client
                .sign_transaction(sign("wallet-1", envelope.clone(), PUBNET))
                .await
                .err()
                .unwrap_or_else(|| panic!("{identity}: a refused envelope was signed"));
            *answers.entry((identity, status.code())).or_default() += 1;
        }
    }
    let elapsed_secs = started.elapsed().as_secs() + 1;

    for identity in ["stranger", "gateway"] {
        let recorded_answers = answers
            .get(&(identity, Code::PermissionDenied))
            .copied()
            .unwrap_or(0);
        let suppressed_answers = answers
            .get(&(identity, Code::ResourceExhausted))
            .copied()
            .unwrap_or(0);
        assert_eq!(
            recorded_answers + suppressed_answers,
            FLOOD,
            "{identity}: {answers:?}"
        );
        // Every denial is accounted for: recorded one by one, or counted in a later record
        // (written once the identity's window has passed).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (individual, counted) = loop {
            let records: Vec<_> = signerd
                .audit_records()
                .unwrap_or_else(|e| panic!("{e:#}"))
                .into_iter()
                .filter(|r| r.identity.as_deref() == Some(format!("cn:{identity}").as_str()))
                .filter(|r| r.decision == Some(signerd::audit::record::Decision::Denied))
                .collect();
            let individual: Vec<_> = records
                .iter()
                .filter(|r| r.rule.as_deref() != Some(signerd::service::DENIAL_BUDGET_RULE))
                .cloned()
                .collect();
            let counted: u64 = records.iter().filter_map(|r| r.suppressed_denials).sum();
            if individual.len() as u64 + counted >= FLOOD || tokio::time::Instant::now() > deadline
            {
                break (individual, counted);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(individual.len() as u64, recorded_answers, "{identity}");
        assert_eq!(counted, suppressed_answers, "{identity}: nothing lost");
        // Burst 5, then one per second: the disk sees a bounded number of denial records.
        assert!(
            individual.len() as u64 <= 5 + elapsed_secs,
            "{identity}: {} denial records in {elapsed_secs} s",
            individual.len()
        );
        assert!(suppressed_answers > 0, "{identity}: nothing was suppressed");
        // Each record is capped; the truncation is counted, not hidden.
        for record in &individual {
            let kept = record.operations.as_ref().map_or(0, Vec::len);
            let truncated = record.operations_truncated.unwrap_or(0);
            assert!(
                truncated > 0,
                "{identity}: a 100-operation summary was not capped"
            );
            assert_eq!(kept + truncated, 100, "{identity}");
        }
    }
    // No line of the log, whatever wrote it, is over the cap (plus the chain members).
    let cap = signerd::service::MAX_DENIAL_RECORD_BYTES + 512;
    for file in signerd::audit::reader::log_files(&signerd.audit_dir()).unwrap_or_default() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        for line in text.lines() {
            assert!(line.len() <= cap, "a {}-byte audit record", line.len());
        }
    }
}

#[tokio::test]
async fn denials_counted_over_the_budget_are_in_the_log_after_a_clean_shutdown() {
    let mut signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![Grant::keys("gateway", &["wallet-*"])],
        limits_toml: Some("[limits]\ndenials_per_second = 1\ndenial_burst = 1".into()),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut stranger = signerd
        .client("stranger")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    const REFUSED: u64 = 10;
    for _ in 0..REFUSED {
        let status = stranger
            .create_key(create("wallet-1"))
            .await
            .err()
            .unwrap_or_else(|| panic!("a stranger created a key"));
        assert!(
            matches!(
                status.code(),
                Code::PermissionDenied | Code::ResourceExhausted
            ),
            "{status:?}"
        );
    }
    // Stop at once: the count may still be waiting for its summary.
    let status = signerd
        .terminate()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "{status:?}\n{}", signerd.log());
    let records: Vec<_> = signerd
        .audit_records()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .into_iter()
        .filter(|r| r.identity.as_deref() == Some("cn:stranger"))
        .collect();
    let individual = records
        .iter()
        .filter(|r| r.rule.as_deref() != Some(signerd::service::DENIAL_BUDGET_RULE))
        .count() as u64;
    let counted: u64 = records.iter().filter_map(|r| r.suppressed_denials).sum();
    assert_eq!(
        individual + counted,
        REFUSED,
        "every refusal is in the log: {records:?}"
    );
    assert!(counted > 0, "nothing went over the budget");
}

/// Blind signing is granted per key pattern, not per identity: an identity allowed to blind-sign
/// with its `ops-*` keys may not blind-sign with another key it may use for transactions.
#[tokio::test]
async fn blind_signing_is_granted_per_key_pattern() {
    let signerd = SignerdProcess::start(SignerdOptions {
        extra_toml: "\n[[acl]]\nidentity = \"cn:ops\"\ncreate_keys = true\nkeys = [\"ops-*\", \"hot-*\"]\nblind_sign = [\"ops-*\"]\n".into(),
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
