//! What the token itself says about a key signerd created: sensitive, never extractable, and its
//! value unreadable. Read through PKCS#11 by `signerd inspect-key`, a separate process with its
//! own session, not through signerd's gRPC API.

use signer_testkit::{Grant, SignerdOptions, SignerdProcess, TEST_PIN};

#[tokio::test]
async fn created_private_key_is_sensitive_and_never_extractable() {
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![Grant::keys("gateway", &["wallet-*"])],
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    signer_testkit::create_key(&mut client, "wallet-guarded").await;

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_signerd"))
        .arg("inspect-key")
        .arg("--config")
        .arg(&signerd.config)
        .arg("wallet-guarded")
        .env("SOFTHSM2_CONF", &signerd.token.conf)
        .env("SIGNERD_TEST_PIN", TEST_PIN)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(report["token"], true, "{report}");
    assert_eq!(report["private"], true, "{report}");
    assert_eq!(report["sensitive"], true, "{report}");
    assert_eq!(report["always_sensitive"], true, "{report}");
    assert_eq!(report["extractable"], false, "{report}");
    assert_eq!(report["never_extractable"], true, "{report}");
    assert_eq!(report["value"], "sensitive", "{report}");
    assert_eq!(report["value_returned"], false, "{report}");
}

#[tokio::test]
async fn inspect_key_reports_an_unknown_key_as_an_error() {
    let signerd = SignerdProcess::start(SignerdOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_signerd"))
        .args(["inspect-key", "--config"])
        .arg(&signerd.config)
        .arg("wallet-missing")
        .env("SOFTHSM2_CONF", &signerd.token.conf)
        .env("SIGNERD_TEST_PIN", TEST_PIN)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("found 0"));
}
