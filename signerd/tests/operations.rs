//! Operating signerd: bad configs stop it at start with a message naming the problem, SIGHUP
//! swaps the TLS certificate without dropping established connections, SIGTERM drains.

use signer_proto::v1 as pb;
use signer_proto::v1::signer_client::SignerClient;
use signer_testkit::{Grant, SignerdOptions, SignerdProcess, TEST_PIN, TestPki};

fn start_with(
    config: &std::path::Path,
    token_conf: &std::path::Path,
    pin: &str,
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_signerd"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("SOFTHSM2_CONF", token_conf)
        .env("SIGNERD_TEST_PIN", pin)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn invalid_configs_refuse_to_start_and_name_the_problem() {
    let mut signerd = SignerdProcess::start(SignerdOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    signerd
        .terminate()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let good = std::fs::read_to_string(&signerd.config).unwrap_or_else(|e| panic!("{e}"));
    let bad = signerd.dir.path().join("bad.toml");
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "unknown field",
            good.replace("[tls]", "[tls]\nciphers = \"all\""),
            TEST_PIN,
            "ciphers",
        ),
        (
            "bad policy",
            good.replace("[policy]", "[policy]\nmax_validity_secs = 0"),
            TEST_PIN,
            "policy.max_validity_secs",
        ),
        (
            "unknown operation",
            good.replace("[policy]", "[policy]\noperations = [\"teleport\"]"),
            TEST_PIN,
            "teleport",
        ),
        (
            "empty operation allowlist",
            good.replace("[policy]", "[policy]\noperations = []"),
            TEST_PIN,
            "policy.operations",
        ),
        (
            "an allowed account that is not an account",
            format!("{good}\n[[policy.keys]]\npattern = \"x-*\"\naccounts = [\"GNOPE\"]\n"),
            TEST_PIN,
            "policy.keys[0].accounts[0]",
        ),
        (
            "blind_sign as a switch for every key",
            format!("{good}\n[[acl]]\nidentity = \"ops\"\nkeys = [\"ops-*\"]\nblind_sign = true\n"),
            TEST_PIN,
            "blind_sign",
        ),
        (
            "a bad blind_sign pattern",
            format!(
                "{good}\n[[acl]]\nidentity = \"ops\"\nkeys = [\"ops-*\"]\nblind_sign = [\"ops/*\"]\n"
            ),
            TEST_PIN,
            "acl[0].blind_sign",
        ),
        (
            "no such token",
            good.replace("token_label = \"signerd-test\"", "token_label = \"nope\""),
            TEST_PIN,
            "no token labelled \"nope\"",
        ),
        ("wrong pin", good.clone(), "0000", "refused the pin"),
        (
            "missing pin variable",
            good.replace("SIGNERD_TEST_PIN", "SIGNERD_MISSING_PIN"),
            TEST_PIN,
            "backend.pkcs11.pin_env",
        ),
        (
            "unreadable certificate",
            good.replace("server.pem", "missing.pem"),
            TEST_PIN,
            "missing.pem",
        ),
    ];
    for (name, text, pin, expected) in cases {
        std::fs::write(&bad, text).unwrap_or_else(|e| panic!("{e}"));
        let output = start_with(&bad, &signerd.token.conf, pin);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: started");
        assert!(
            stderr.contains(expected),
            "{name}: stderr does not name {expected:?}:\n{stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("listening"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn sighup_swaps_the_certificate_without_dropping_connections() {
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![Grant::keys("gateway", &["wallet-*"])],
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let client_cert = signerd
        .pki
        .client("gateway")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let old_ca = signerd.pki.ca_pem();
    let mut established = SignerClient::new(
        signerd
            .channel_trusting(Some(&client_cert), &old_ca)
            .await
            .unwrap_or_else(|e| panic!("{e:#}")),
    );
    established
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // A new server certificate from another CA replaces the files, then SIGHUP.
    let new_pki_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let new_pki = TestPki::generate(new_pki_dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    for file in ["server.pem", "server.key"] {
        std::fs::copy(new_pki.dir.join(file), signerd.pki.dir.join(file))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    signerd.signal("HUP").unwrap_or_else(|e| panic!("{e:#}"));

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let attempt = async {
            let channel = signerd
                .channel_trusting(Some(&client_cert), &new_pki.ca_pem())
                .await?;
            SignerClient::new(channel)
                .list_keys(pb::ListKeysRequest::default())
                .await?;
            Ok::<_, anyhow::Error>(())
        };
        if attempt.await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate never served:\n{}",
            signerd.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The connection made before the reload still works.
    established
        .create_key(pb::CreateKeyRequest {
            key_id: "wallet-1".into(),
            backend: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("established connection dropped by the reload: {e}"));
    // New connections trusting only the old CA are refused: the old certificate is gone.
    let stale = async {
        let channel = signerd
            .channel_trusting(Some(&client_cert), &old_ca)
            .await?;
        SignerClient::new(channel)
            .list_keys(pb::ListKeysRequest::default())
            .await?;
        Ok::<_, anyhow::Error>(())
    };
    assert!(stale.await.is_err());
    assert!(
        signerd
            .log()
            .contains("SIGHUP: server certificate reloaded")
    );
}
