//! What the token itself says about a key signerd created: sensitive, never extractable, and its
//! value unreadable. Read through PKCS#11 by `signerd inspect-key`, a separate process with its
//! own session, not through signerd's gRPC API.

#[path = "support/token.rs"]
mod token;

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

/// Runs `task` against `signerd`'s token through PKCS#11 (cryptoki, the test's own session) and
/// returns what it printed. SoftHSM finds its token through `SOFTHSM2_CONF`, read when the
/// library initialises, and a test cannot change its own environment safely; so the task runs
/// in a child process: this test binary again, running only [`token_task`].
fn in_token(signerd: &SignerdProcess, task: &str, key_id: &str) -> serde_json::Value {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let output = std::process::Command::new(exe)
        .args(["token_task", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env("SOFTHSM2_CONF", &signerd.token.conf)
        .env("TOKEN_TASK", task)
        .env("TOKEN_TASK_KEY_ID", key_id)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = stdout
        .lines()
        // libtest may print "test token_task ... " on the same line first.
        .find_map(|line| {
            line.split_once("TOKEN_TASK_RESULT ")
                .map(|(_, result)| result)
        })
        .unwrap_or_else(|| {
            panic!(
                "token task {task} printed no result:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    serde_json::from_str(result).unwrap_or_else(|e| panic!("{e}: {result}"))
}

/// The child side of [`in_token`]; does nothing when run on its own.
#[test]
#[ignore = "run by the other tests in a child process, with the token's SOFTHSM2_CONF"]
fn token_task() {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};

    let (Ok(task), Ok(key_id)) = (
        std::env::var("TOKEN_TASK"),
        std::env::var("TOKEN_TASK_KEY_ID"),
    ) else {
        return;
    };
    let session = token::user_session();
    let generate = |public_id: &str, private_id: &str| {
        session
            .generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Verify(true),
                    Attribute::EcParams(signerd::backend::pkcs11::ED25519_EC_PARAMS.to_vec()),
                    Attribute::Id(public_id.as_bytes().to_vec()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Sign(true),
                    Attribute::Id(private_id.as_bytes().to_vec()),
                ],
            )
            .unwrap_or_else(|e| panic!("{e}"));
    };
    let result = match task.as_str() {
        // What the token says about the key signerd created, and what it lets a PIN holder do.
        "protection" => {
            let find = |class| {
                session
                    .find_objects(&[
                        Attribute::Class(class),
                        Attribute::Id(key_id.as_bytes().to_vec()),
                    ])
                    .unwrap_or_else(|e| panic!("{e}"))
            };
            let (private, public) = (
                find(ObjectClass::PRIVATE_KEY),
                find(ObjectClass::PUBLIC_KEY),
            );
            let flags = |handle| {
                let mut flags = serde_json::Map::new();
                for attr in session
                    .get_attributes(
                        handle,
                        &[
                            AttributeType::Copyable,
                            AttributeType::Modifiable,
                            AttributeType::Destroyable,
                        ],
                    )
                    .unwrap_or_else(|e| panic!("{e}"))
                {
                    let (name, value) = match attr {
                        Attribute::Copyable(v) => ("copyable", v),
                        Attribute::Modifiable(v) => ("modifiable", v),
                        Attribute::Destroyable(v) => ("destroyable", v),
                        _ => continue,
                    };
                    flags.insert(name.into(), value.into());
                }
                serde_json::Value::Object(flags)
            };
            let (private_flags, public_flags) = (flags(private[0]), flags(public[0]));
            // What a PIN holder could do with the key: copy it under another id, delete it.
            let copy = session.copy_object(private[0], &[Attribute::Id(b"wallet-copy".to_vec())]);
            let destroy = session.destroy_object(private[0]);
            serde_json::json!({
                "private_keys": private.len(),
                "public_keys": public.len(),
                "private": private_flags,
                "public": public_flags,
                "copy": copy.map(|_| "copied".to_owned()).unwrap_or_else(|e| e.to_string()),
                "destroy": destroy.map(|_| "destroyed".to_owned()).unwrap_or_else(|e| e.to_string()),
            })
        }
        // A second private key under an id that already has a key pair.
        "plant-second-private" => {
            generate(&key_id, &key_id);
            generate("orphan-public", &key_id);
            serde_json::json!("planted")
        }
        // A private and a public key under one id that are not halves of one key pair.
        "plant-mismatched-pair" => {
            generate("orphan-public", &key_id);
            generate(&key_id, "orphan-private");
            serde_json::json!("planted")
        }
        other => panic!("unknown task {other}"),
    };
    println!("TOKEN_TASK_RESULT {result}");
}

#[tokio::test]
async fn created_keys_cannot_be_copied_or_destroyed_through_pkcs11() {
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

    let token = in_token(&signerd, "protection", "wallet-guarded");
    assert_eq!(token["private_keys"], 1, "{token}");
    assert_eq!(token["private"]["copyable"], false, "{token}");
    assert_eq!(token["private"]["destroyable"], false, "{token}");
    // Modifiable on purpose: a key pool binds keys to ids by setting CKA_ID and CKA_LABEL.
    assert_eq!(token["private"]["modifiable"], true, "{token}");
    assert_eq!(token["public"]["copyable"], false, "{token}");
    assert!(
        token["copy"].as_str().is_some_and(|r| r != "copied"),
        "{token}"
    );
    assert!(
        token["destroy"].as_str().is_some_and(|r| r != "destroyed"),
        "{token}"
    );

    // signerd inspect-key reports the same, and the key still signs.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_signerd"))
        .args(["inspect-key", "--config"])
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
    assert_eq!(report["copyable"], false, "{report}");
    assert_eq!(report["destroyable"], false, "{report}");
    assert_eq!(report["modifiable"], true, "{report}");
}

#[tokio::test]
async fn the_pin_variable_is_gone_from_the_running_process_environment() {
    let signerd = SignerdProcess::start(SignerdOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pid = signerd.pid().unwrap_or_else(|| panic!("not running"));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_else(|e| panic!("{e}"));
    let entries: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    // The read works: the other variables the harness set are still there.
    assert!(
        entries.iter().any(|e| e.starts_with("SOFTHSM2_CONF=")),
        "{entries:?}"
    );
    assert!(
        !entries.iter().any(|e| e.contains("SIGNERD_TEST_PIN")),
        "the PIN variable is still in /proc/{pid}/environ"
    );
}

#[tokio::test]
async fn two_private_keys_under_one_id_stop_signerd_from_starting() {
    let mut signerd = SignerdProcess::start(SignerdOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    signerd.kill().await.unwrap_or_else(|e| panic!("{e:#}"));
    in_token(&signerd, "plant-second-private", "wallet-twin");
    let err = match signerd.launch().await {
        Ok(()) => panic!("signerd started with two private keys under wallet-twin"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("wallet-twin") && err.contains("two private keys share this CKA_ID"),
        "{err}"
    );
}

#[tokio::test]
async fn a_private_key_not_matching_its_public_key_stops_signerd_from_starting() {
    let mut signerd = SignerdProcess::start(SignerdOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    signerd.kill().await.unwrap_or_else(|e| panic!("{e:#}"));
    in_token(&signerd, "plant-mismatched-pair", "wallet-swapped");
    let err = match signerd.launch().await {
        Ok(()) => panic!("signerd started with a mismatched pair under wallet-swapped"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("wallet-swapped") && err.contains("does not sign for the public key"),
        "{err}"
    );
}
