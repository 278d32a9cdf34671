//! Attacks on the transport and on caller identity, each through the real binary: a caller
//! the ACL does not list, a certificate name of one kind passing for another, a certificate
//! whose SAN cannot be read, idle connections that try to lock real clients out, TLS session
//! resumption outliving a certificate, and revocation and trust changes applied with SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use signer_proto::v1 as pb;
use signer_proto::v1::signer_client::SignerClient;
use signer_testkit::{Grant, SignerdOptions, SignerdProcess, TestPki, refusal, with_request_id};
use signerd::audit::record::Decision;
use signerd::pki::IssuedCertificate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// A signerd whose ACL names a CN, a SAN URI and a SAN DNS name.
async fn signerd_with(extra: impl FnOnce(&mut SignerdOptions)) -> SignerdProcess {
    let mut options = SignerdOptions {
        acl: vec![
            Grant::keys("gateway", &["wallet-*"]),
            Grant::for_identity("uri:spiffe://stellar-signer.test/payments", &["pay-*"]),
            Grant::for_identity("dns:payments.internal.test", &["dns-*"]),
        ],
        extra_toml: signer_testkit::vector_policy("*"),
        ..Default::default()
    };
    extra(&mut options);
    SignerdProcess::start(options)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn create(key_id: &str) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        key_id: key_id.into(),
        backend: String::new(),
    }
}

/// Signs the first reference vector with `key_id`.
async fn sign_vector(
    client: &mut SignerClient<tonic::transport::Channel>,
    key_id: &str,
) -> Result<pb::SignTransactionResponse, tonic::Status> {
    let vector = signer_testkit::vectors::first();
    client
        .sign_transaction(pb::SignTransactionRequest {
            key_id: key_id.into(),
            envelope_xdr: vector.envelope_xdr(),
            network_passphrase: vector.network_passphrase,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A client presenting `cert` on a fresh connection.
async fn client_with(
    signerd: &SignerdProcess,
    cert: &IssuedCertificate,
) -> anyhow::Result<SignerClient<tonic::transport::Channel>> {
    Ok(SignerClient::new(signerd.channel(Some(cert)).await?))
}

/// Waits until signerd's log contains `needle` at least `count` times.
async fn log_count_reaches(signerd: &SignerdProcess, needle: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while signerd.log().matches(needle).count() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "signerd never logged {needle:?} {count} times:\n{}",
            signerd.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The call must not reach a handler: the connection fails, or the call fails at the transport
/// level with no handler status.
async fn assert_no_handler_runs(signerd: &SignerdProcess, cert: &IssuedCertificate) {
    let Ok(mut client) = client_with(signerd, cert).await else {
        return;
    };
    match client.create_key(create("wallet-1")).await {
        Ok(_) => panic!("a call with this certificate was served"),
        Err(status) => assert!(
            matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            ),
            "unexpected status {status:?}: a handler must not have run"
        ),
    }
}

#[tokio::test]
async fn unlisted_identity_cannot_list_keys_and_the_refusal_is_audited() {
    let signerd = signerd_with(|_| {}).await;
    let mut gateway = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    gateway
        .create_key(create("wallet-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let mut stranger = signerd
        .client("stranger")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    refusal(
        stranger
            .list_keys(with_request_id(
                pb::ListKeysRequest::default(),
                "list-by-stranger",
            ))
            .await,
        Code::PermissionDenied,
        "not in the acl",
    );
    let records = signerd
        .audit_records_for("list-by-stranger")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let [record] = records.as_slice() else {
        panic!("expected one audit record of the refusal, got {records:?}");
    };
    assert_eq!(record.decision, Some(Decision::Denied), "{record:?}");
    assert_eq!(record.rule.as_deref(), Some("acl"), "{record:?}");
    assert_eq!(record.rpc.as_deref(), Some("ListKeys"), "{record:?}");
    assert_eq!(
        record.identity.as_deref(),
        Some("cn:stranger"),
        "{record:?}"
    );

    // A listed identity still lists its keys.
    let listed = gateway
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(listed.keys.len(), 1, "{listed:?}");
}

#[tokio::test]
async fn common_name_never_passes_for_a_san() {
    let signerd = signerd_with(|_| {}).await;
    // A CN spelling the SAN URI the ACL grants: it is `cn:spiffe://…`, not `uri:spiffe://…`.
    let spoof = signerd
        .pki
        .client("spiffe://stellar-signer.test/payments")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = client_with(&signerd, &spoof)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    refusal(
        client.create_key(create("pay-1")).await,
        Code::PermissionDenied,
        "cn:spiffe://stellar-signer.test/payments is not in the acl",
    );
    // A CN spelling the SAN DNS name the ACL grants.
    let spoof = signerd
        .pki
        .client("payments.internal.test")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = client_with(&signerd, &spoof)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    refusal(
        client.create_key(create("dns-1")).await,
        Code::PermissionDenied,
        "not in the acl",
    );

    // CN "gateway" with a SAN URI: the certificate is named by its SAN, never by its CN.
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gateway");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://x/other"
            .try_into()
            .unwrap_or_else(|e| panic!("{e}")),
    )];
    let both = signerd
        .pki
        .client_from_params(params)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = client_with(&signerd, &both)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    refusal(
        client.create_key(create("wallet-1")).await,
        Code::PermissionDenied,
        "uri:spiffe://x/other is not in the acl",
    );

    // The genuine SAN URI holder is served.
    let genuine = signerd
        .pki
        .client_named(&signerd::pki::ClientName::Uri(
            "spiffe://stellar-signer.test/payments".into(),
        ))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = client_with(&signerd, &genuine)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client
        .create_key(create("pay-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn certificate_whose_san_cannot_be_read_is_refused_not_read_by_its_cn() {
    let signerd = signerd_with(|_| {}).await;
    // CN "gateway" (which the ACL grants) and a subjectAltName extension whose only name is a
    // URI that is not valid text: a reader that ignores the broken SAN falls back to the CN.
    const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gateway");
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        SUBJECT_ALT_NAME,
        vec![0x30, 0x03, 0x86, 0x01, 0xff],
    )];
    let cert = signerd
        .pki
        .client_from_params(params)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_no_handler_runs(&signerd, &cert).await;
    log_count_reaches(&signerd, "subject alternative name cannot be read", 1).await;

    // Two SAN extensions are just as unreadable (refused at the handshake or when read).
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gateway");
    params.subject_alt_names = vec![rcgen::SanType::DnsName(
        "gateway".try_into().unwrap_or_else(|e| panic!("{e}")),
    )];
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        SUBJECT_ALT_NAME,
        vec![0x30, 0x03, 0x82, 0x01, b'x'],
    )];
    let cert = signerd
        .pki
        .client_from_params(params)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_no_handler_runs(&signerd, &cert).await;
}

#[tokio::test]
async fn idle_connections_do_not_lock_out_a_real_client() {
    // `max_connections` is lowered from 1024 so that a few hundred idle sockets are the same
    // attack as the thousand it takes against the default.
    let signerd = signerd_with(|options| {
        options.server_toml = "max_connections = 200".into();
    })
    .await;
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut idle = Vec::new();
    for _ in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(signerd.addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let closed = closed_tx.clone();
        // Never sends a byte; reports when signerd closes its end.
        idle.push(tokio::spawn(async move {
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte).await;
            let _ = closed.send(());
            // Keep the socket open until the test ends.
            std::future::pending::<()>().await;
        }));
    }
    // signerd is shedding idle connections: its budget for them is full.
    tokio::time::timeout(Duration::from_secs(30), closed_rx.recv())
        .await
        .unwrap_or_else(|_| panic!("signerd closed none of 300 idle connections"));

    // A real client, one attempt, while the idle sockets are still open.
    let served = tokio::time::timeout(Duration::from_secs(30), async {
        let mut client = signerd.client("gateway").await?;
        client.create_key(create("wallet-1")).await?;
        Ok::<_, anyhow::Error>(sign_vector(&mut client, "wallet-1").await?)
    })
    .await;
    match served {
        Ok(Ok(signed)) => assert_eq!(signed.signature.len(), 64),
        Ok(Err(e)) => panic!(
            "a real client was locked out by idle connections: {e:#}\n{}",
            signerd.log()
        ),
        Err(_) => panic!("a real client was not served within 30 s"),
    }
    for task in idle {
        task.abort();
    }
}

/// A raw rustls client for `cert`, resumption on (the rustls default: an in-memory cache).
fn rustls_client(signerd: &SignerdProcess, cert: &IssuedCertificate) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(signerd.pki.ca_pem().as_bytes()) {
        roots
            .add(ca.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    let key =
        PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut config = rustls::ClientConfig::builder_with_provider(signerd::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap_or_else(|e| panic!("{e}"));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Connects, speaks the HTTP/2 preface and reads the server's first bytes (so that any session
/// ticket sent after the handshake has reached the client's cache); returns how the handshake
/// went.
async fn handshake(
    signerd: &SignerdProcess,
    config: Arc<rustls::ClientConfig>,
) -> rustls::HandshakeKind {
    let tcp = tokio::net::TcpStream::connect(signerd.addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let name =
        rustls::pki_types::ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake: {e}"));
    let kind = tls
        .get_ref()
        .1
        .handshake_kind()
        .unwrap_or_else(|| panic!("handshake finished without a kind"));
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap_or_else(|e| panic!("h2 preface: {e}"));
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), tls.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no HTTP/2 settings from signerd"))
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert!(read > 0, "signerd closed the connection");
    kind
}

#[tokio::test]
async fn session_resumption_is_not_honoured() {
    let signerd = signerd_with(|_| {}).await;
    let cert = signerd
        .pki
        .client("gateway")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let config = rustls_client(&signerd, &cert);
    assert_eq!(
        handshake(&signerd, config.clone()).await,
        rustls::HandshakeKind::Full
    );
    // A resumed session would skip verifying the client certificate (its expiry, revocation).
    assert_eq!(
        handshake(&signerd, config).await,
        rustls::HandshakeKind::Full,
        "the second connection resumed the first session"
    );
}

#[tokio::test]
async fn a_connection_does_not_outlive_its_certificate() {
    let signerd = signerd_with(|_| {}).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // Valid for a few seconds more: long enough to connect and be served once.
    let not_after = now + 8;
    let short_lived = signerd
        .pki
        .client_valid(
            &signerd::pki::ClientName::CommonName("gateway".into()),
            now - 60,
            not_after,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = client_with(&signerd, &short_lived)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client
        .create_key(create("wallet-1"))
        .await
        .unwrap_or_else(|e| panic!("while valid: {e}"));
    // Wait (on the clock, not a fixed sleep) until the certificate has expired.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
        <= not_after
    {
        assert!(tokio::time::Instant::now() < deadline, "the clock stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same HTTP/2 connection, after expiry.
    refusal(
        sign_vector(&mut client, "wallet-1").await,
        Code::Unauthenticated,
        "expired",
    );
}

/// Waits for the `count`th reload outcome containing `needle`, after sending SIGHUP.
async fn reload(signerd: &SignerdProcess, needle: &str, count: usize) {
    signerd.signal("HUP").unwrap_or_else(|e| panic!("{e:#}"));
    log_count_reaches(signerd, needle, count).await;
}

const RELOADED: &str = "SIGHUP: reloaded";
const REFUSED: &str = "SIGHUP: reload refused";

#[tokio::test]
async fn sighup_applies_revocations_and_acl_changes_atomically_and_keeps_the_old_trust_when_the_new_is_bad()
 {
    let signerd = signerd_with(|options| {
        options.tls_toml = "crls = [\"pki/crl.pem\"]".into();
    })
    .await;
    let keeper = signerd
        .pki
        .client("gateway")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let victim = signerd
        .pki
        .client("gateway")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = client_with(&signerd, &keeper)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client
        .create_key(create("wallet-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let works = |cert: IssuedCertificate| {
        let signerd = &signerd;
        async move {
            let mut client = client_with(signerd, &cert).await?;
            sign_vector(&mut client, "wallet-1").await?;
            Ok::<_, anyhow::Error>(())
        }
    };
    let config_text = std::fs::read_to_string(&signerd.config).unwrap_or_else(|e| panic!("{e}"));
    let ca_path = signerd.pki.dir.join("ca.pem");
    let ca_text = std::fs::read_to_string(&ca_path).unwrap_or_else(|e| panic!("{e}"));
    let crl_path = signerd.pki.dir.join("crl.pem");

    // A CA file that is not a certificate: refused, the old trust stays.
    std::fs::write(&ca_path, "not a certificate\n").unwrap_or_else(|e| panic!("{e}"));
    reload(&signerd, REFUSED, 1).await;
    assert!(
        signerd.log().contains("tls.client_ca"),
        "the refusal does not name the CA:\n{}",
        signerd.log()
    );
    std::fs::write(&ca_path, &ca_text).unwrap_or_else(|e| panic!("{e}"));
    works(keeper.clone())
        .await
        .unwrap_or_else(|e| panic!("after a refused CA: {e:#}"));

    // A CRL file that is not a CRL.
    std::fs::write(
        &crl_path,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    reload(&signerd, REFUSED, 2).await;
    assert!(
        signerd.log().contains("tls.crls"),
        "the refusal does not name the CRL:\n{}",
        signerd.log()
    );
    works(keeper.clone())
        .await
        .unwrap_or_else(|e| panic!("after a refused CRL: {e:#}"));

    // A well-formed CRL of another CA: it would cover no client, so every client would be
    // refused for want of a revocation status.
    let foreign_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let foreign = TestPki::generate(foreign_dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    std::fs::copy(foreign.crl_path(), &crl_path).unwrap_or_else(|e| panic!("{e}"));
    reload(&signerd, REFUSED, 3).await;
    assert!(
        signerd
            .log()
            .contains("not signed by a CA in tls.client_ca"),
        "the refusal does not say whose CRL it is:\n{}",
        signerd.log()
    );
    works(keeper.clone())
        .await
        .unwrap_or_else(|e| panic!("after a foreign CRL: {e:#}"));

    // A good CRL revoking the victim, with a bad ACL beside it: nothing of it applies.
    signerd
        .pki
        .revoke(&victim)
        .unwrap_or_else(|e| panic!("{e:#}"));
    std::fs::write(
        &signerd.config,
        config_text.replace("identity = \"cn:gateway\"", "identity = \"gateway\""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    reload(&signerd, REFUSED, 4).await;
    assert!(
        signerd.log().contains("acl.identity"),
        "the refusal does not name the ACL:\n{}",
        signerd.log()
    );
    works(victim.clone())
        .await
        .unwrap_or_else(|e| panic!("a refused reload applied its CRL: {e:#}"));

    // The ACL fixed: the CRL applies. The victim's next connection is refused, and so is its
    // next request on a connection made before the reload.
    let mut victim_established = client_with(&signerd, &victim)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    sign_vector(&mut victim_established, "wallet-1")
        .await
        .unwrap_or_else(|e| panic!("before the revocation: {e}"));
    std::fs::write(&signerd.config, &config_text).unwrap_or_else(|e| panic!("{e}"));
    reload(&signerd, RELOADED, 1).await;
    refusal(
        sign_vector(&mut victim_established, "wallet-1").await,
        Code::Unauthenticated,
        "Revoked",
    );
    assert_no_handler_runs(&signerd, &victim).await;
    log_count_reaches(&signerd, "invalid peer certificate: Revoked", 1).await;
    works(keeper.clone())
        .await
        .unwrap_or_else(|e| panic!("the keeper after the revocation: {e:#}"));

    // An ACL change applies too: the grant moves from cn:gateway to cn:ops.
    std::fs::write(
        &signerd.config,
        config_text.replace("identity = \"cn:gateway\"", "identity = \"cn:ops\""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    reload(&signerd, RELOADED, 2).await;
    let mut client = client_with(&signerd, &keeper)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    refusal(
        client.list_keys(pb::ListKeysRequest::default()).await,
        Code::PermissionDenied,
        "not in the acl",
    );
    let mut ops = signerd
        .client("ops")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    sign_vector(&mut ops, "wallet-1")
        .await
        .unwrap_or_else(|e| panic!("the new grant: {e}"));
}
