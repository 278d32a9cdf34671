//! The audit log end to end: tampering of every kind is caught by `signerd audit verify`, files
//! rotate with the chain intact, a log that cannot be written stops signing, and the sequence
//! guard survives restarts and crashes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use signer_proto::v1 as pb;
use signer_testkit::stellar::{Tx, key_bytes, payment};
use signer_testkit::{Grant, SignerdOptions, SignerdProcess, TESTNET, with_request_id};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

async fn signerd_with(audit_toml: &str) -> (SignerdProcess, [u8; 32]) {
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![Grant::keys("gateway", &["wallet-*"])],
        audit_toml: audit_toml.to_owned(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let key = key_bytes(&signer_testkit::create_key(&mut client, "wallet-1").await);
    (signerd, key)
}

fn sign_request(key: [u8; 32], sequence: i64, stroops: i64) -> pb::SignTransactionRequest {
    let mut tx = Tx::new(key, sequence);
    tx.operations = vec![payment([3; 32], stroops)];
    pb::SignTransactionRequest {
        key_id: "wallet-1".into(),
        envelope_xdr: tx.xdr(),
        network_passphrase: TESTNET.into(),
    }
}

/// A sealed log with a few signatures and a denial, copied somewhere it can be tampered with.
async fn sealed_log() -> (SignerdProcess, tempfile::TempDir) {
    let (mut signerd, key) = signerd_with("").await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    for seq in 1..=6 {
        client
            .sign_transaction(sign_request(key, seq, 10_000_000 * seq))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut denied = sign_request(key, 7, 1);
    denied.network_passphrase = "Public Global Stellar Network ; September 2015".into();
    assert!(client.sign_transaction(denied).await.is_err());
    let status = signerd
        .terminate()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success());
    let copy = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    copy_dir(&signerd.audit_dir(), copy.path());
    (signerd, copy)
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        std::fs::copy(&path, to.join(path.file_name().unwrap_or_default()))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn only_file(dir: &Path) -> PathBuf {
    let files = signerd::audit::reader::log_files(dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Runs verify on `dir` with the audit key; returns (success, stdout+stderr).
fn verify(signerd: &SignerdProcess, dir: &Path, with_key: bool) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_signerd"));
    command.args(["audit", "verify"]).arg(dir);
    if with_key {
        command.args(["--audit-key", &signerd.audit_key]);
    }
    let output = command.output().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn line_index_of_seq(lines: &[String], seq: u64) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(&format!("{{\"seq\":{seq},")))
        .unwrap_or_else(|| panic!("no seq {seq}"))
}

#[tokio::test]
async fn an_untouched_log_verifies_sealed_with_its_audit_key() {
    let (signerd, copy) = sealed_log().await;
    let (ok, text) = verify(&signerd, copy.path(), true);
    assert!(ok, "{text}");
    assert!(text.contains("sealed by a final checkpoint"), "{text}");
    assert!(text.contains("chain intact"), "{text}");
}

#[tokio::test]
async fn a_changed_byte_is_detected() {
    let (signerd, copy) = sealed_log().await;
    let file = only_file(copy.path());
    let mut all = lines(&file);
    let target = all
        .iter()
        .position(|l| l.contains("\"amount\":\"3.0000000\""))
        .unwrap_or_else(|| panic!("no 3 XLM payment"));
    all[target] = all[target].replace("\"amount\":\"3.0000000\"", "\"amount\":\"9.0000000\"");
    write_lines(&file, &all);
    let (ok, text) = verify(&signerd, copy.path(), false);
    assert!(!ok, "tampered log verified: {text}");
    assert!(
        text.contains(&format!("line {}", target + 1)) && text.contains("hash mismatch"),
        "{text}"
    );
}

#[tokio::test]
async fn a_deleted_record_is_detected() {
    let (signerd, copy) = sealed_log().await;
    let file = only_file(copy.path());
    let mut all = lines(&file);
    let target = line_index_of_seq(&all, 5);
    all.remove(target);
    write_lines(&file, &all);
    let (ok, text) = verify(&signerd, copy.path(), false);
    assert!(!ok, "{text}");
    assert!(text.contains("seq 6 where 5 was expected"), "{text}");
}

#[tokio::test]
async fn swapped_records_are_detected() {
    let (signerd, copy) = sealed_log().await;
    let file = only_file(copy.path());
    let mut all = lines(&file);
    let a = line_index_of_seq(&all, 4);
    all.swap(a, a + 1);
    write_lines(&file, &all);
    let (ok, text) = verify(&signerd, copy.path(), false);
    assert!(!ok, "{text}");
    assert!(text.contains("seq 5 where 4 was expected"), "{text}");
}

#[tokio::test]
async fn a_cut_tail_is_detected_with_the_audit_key() {
    let (signerd, copy) = sealed_log().await;
    let file = only_file(copy.path());
    let all = lines(&file);
    write_lines(&file, &all[..all.len() - 2]);
    // The chain of what is left is intact, so only the audit key's final checkpoint shows the cut.
    let (chain_ok, text) = verify(&signerd, copy.path(), false);
    assert!(chain_ok, "{text}");
    let (ok, text) = verify(&signerd, copy.path(), true);
    assert!(!ok, "{text}");
    assert!(
        text.contains("does not end with signerd's final checkpoint"),
        "{text}"
    );
}

/// Re-seals every record after an edit, as an attacker without the audit key would: new hashes,
/// and checkpoints pointing at the new hashes (only their signatures cannot be redone).
fn rewrite_with_recomputed_hashes(
    file: &Path,
    edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>) -> bool,
) {
    let mut prev = signerd::audit::chain::GENESIS;
    let mut out = Vec::new();
    let mut seq = 0;
    let mut hashes = std::collections::HashMap::new();
    for line in lines(file) {
        let serde_json::Value::Object(mut members) =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("not an object");
        };
        if !edit(&mut members) {
            continue;
        }
        for chain_member in ["seq", "prev_hash", "hash"] {
            members.remove(chain_member);
        }
        if let Some(covered) = members.get("covers_seq").and_then(|c| c.as_u64()) {
            let new_hash: &[u8; 32] = hashes
                .get(&covered)
                .unwrap_or_else(|| panic!("no record {covered}"));
            members.insert("covers_hash".into(), hex::encode(new_hash).into());
        }
        let json = serde_json::to_string(&members).unwrap_or_else(|e| panic!("{e}"));
        seq += 1;
        let (sealed, hash) = signerd::audit::chain::seal(seq, &prev, &json[1..json.len() - 1]);
        out.push(sealed.trim_end().to_owned());
        hashes.insert(seq, hash);
        prev = hash;
    }
    write_lines(file, &out);
}

#[tokio::test]
async fn a_whole_log_rewritten_with_recomputed_hashes_is_detected() {
    let (signerd, copy) = sealed_log().await;
    let file = only_file(copy.path());
    rewrite_with_recomputed_hashes(&file, |record| {
        if let Some(serde_json::Value::Array(ops)) = record.get_mut("operations") {
            for op in ops {
                op["destination"] =
                    "GATTACKERATTACKERATTACKERATTACKERATTACKERATTACKERATTACK".into();
            }
        }
        true
    });
    // The chain alone is consistent again: that is exactly what checkpoints are for.
    let (chain_ok, text) = verify(&signerd, copy.path(), false);
    assert!(chain_ok, "{text}");
    let (ok, text) = verify(&signerd, copy.path(), true);
    assert!(!ok, "{text}");
    assert!(
        text.contains("checkpoint signature does not verify"),
        "{text}"
    );

    // Dropping the checkpoints instead does not help either.
    rewrite_with_recomputed_hashes(&file, |record| {
        record.get("kind").and_then(|k| k.as_str()) != Some("checkpoint")
    });
    let (ok, text) = verify(&signerd, copy.path(), true);
    assert!(!ok, "{text}");
    assert!(text.contains("no checkpoint"), "{text}");
}

#[tokio::test]
async fn audit_show_filters_by_key_tx_hash_and_decision() {
    let (signerd, key) = signerd_with("").await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let signed = client
        .sign_transaction(sign_request(key, 1, 5))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    client
        .sign_transaction(sign_request(key, 2, 6))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tx_hash = hex::encode(&signed.tx_hash);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_signerd"))
        .args(["audit", "show", "--json", "--tx-hash", &tx_hash])
        .arg(signerd.audit_dir())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["tx_hash"], tx_hash.as_str());
    assert_eq!(shown[0]["decision"], "signed");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_signerd"))
        .args([
            "audit",
            "show",
            "--key-id",
            "wallet-1",
            "--decision",
            "signed",
        ])
        .arg(signerd.audit_dir())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(
        table
            .lines()
            .all(|l| l.contains("SignTransaction") && l.contains("key=wallet-1")),
        "{table}"
    );
}

#[tokio::test]
async fn rotated_files_keep_one_chain() {
    let (mut signerd, key) = signerd_with("rotate_bytes = 4096").await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    for seq in 1..=30 {
        client
            .sign_transaction(sign_request(key, seq, seq))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    signerd
        .terminate()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let files =
        signerd::audit::reader::log_files(&signerd.audit_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(files.len() >= 3, "expected rotation, got {files:?}");
    let output = signerd
        .verify_audit(&[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("in {} files", files.len())),
        "{text}"
    );
    // Deleting a middle file breaks the chain across files.
    std::fs::remove_file(&files[1]).unwrap_or_else(|e| panic!("{e}"));
    let output = signerd
        .verify_audit(&[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("was expected"));
}

#[tokio::test]
async fn a_log_that_cannot_be_written_stops_signing() {
    let (signerd, key) = signerd_with("rotate_bytes = 4096").await;
    // The next files are "on a full disk": writes to /dev/full fail with ENOSPC.
    for index in 2..=20 {
        let next = signerd.audit_dir().join(format!("audit-{index:08}.jsonl"));
        std::os::unix::fs::symlink("/dev/full", next).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut failure = None;
    for seq in 1..=60 {
        match client.sign_transaction(sign_request(key, seq, seq)).await {
            Ok(_) => {}
            Err(status) => {
                failure = Some((seq, status));
                break;
            }
        }
    }
    let (failed_seq, status) = failure.unwrap_or_else(|| panic!("signing never stopped"));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("audit log"),
        "{}",
        status.message()
    );
    signerd
        .wait_for_health("gateway", ServingStatus::NotServing)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Nothing is signed any more, not even a transaction the guard already knows.
    let again = client
        .sign_transaction(sign_request(key, failed_seq + 1, 1))
        .await;
    assert_eq!(again.err().map(|s| s.code()), Some(Code::Unavailable));
    // Every signature that was handed out is on record in the readable part of the log.
    let records = signerd::audit::reader::walk(
        &[signerd.audit_dir().join("audit-00000001.jsonl")],
        &Default::default(),
        |_, _| {},
    );
    assert!(records.is_ok(), "{records:?}");
}

#[tokio::test]
async fn the_sequence_guard_is_rebuilt_from_the_log_at_start() {
    let (mut signerd, key) = signerd_with("").await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client
        .sign_transaction(sign_request(key, 9, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    signerd
        .terminate()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    signerd.launch().await.unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client
        .sign_transaction(sign_request(key, 9, 1))
        .await
        .unwrap_or_else(|e| panic!("the same transaction again: {e}"));
    let conflict = client.sign_transaction(sign_request(key, 9, 2)).await;
    let status = conflict
        .err()
        .unwrap_or_else(|| panic!("the restarted guard forgot sequence 9"));
    assert!(
        status.message().contains("policy sequence_guard:"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn sigkill_under_concurrent_signing_loses_no_record_and_no_guard_entry() {
    let (mut signerd, key) = signerd_with("").await;
    // (request id, sequence, signed hash) of every signature a client received.
    type Received = Vec<(String, i64, Vec<u8>)>;
    let received: Arc<Mutex<Received>> = Arc::default();
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for worker in 0..8i64 {
        let mut client = signerd
            .client("gateway")
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let received = received.clone();
        let enough = enough.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10_000i64 {
                let sequence = 1_000 + worker * 10_000 + n;
                let request_id = format!("crash-{sequence}");
                let request = with_request_id(sign_request(key, sequence, 1), &request_id);
                match client.sign_transaction(request).await {
                    Ok(response) => {
                        let mut received = received.lock().unwrap_or_else(|p| p.into_inner());
                        received.push((request_id, sequence, response.into_inner().signed_hash));
                        if received.len() == 150 {
                            enough.notify_one();
                        }
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    enough.notified().await;
    signerd.kill().await.unwrap_or_else(|e| panic!("{e:#}"));
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let received = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(received.len() >= 150);

    signerd
        .launch()
        .await
        .unwrap_or_else(|e| panic!("restart after SIGKILL: {e:#}"));
    let records = signerd.audit_records().unwrap_or_else(|e| panic!("{e:#}"));
    let signed: std::collections::HashMap<String, String> = records
        .iter()
        .filter(|r| r.decision == Some(signerd::audit::record::Decision::Signed))
        .filter_map(|r| Some((r.request_id.clone()?, r.signed_hash.clone()?)))
        .collect();
    for (request_id, _, signed_hash) in &received {
        assert_eq!(
            signed.get(request_id),
            Some(&hex::encode(signed_hash)),
            "signature for {request_id} reached the client without its audit record"
        );
    }
    // The guard still knows a sequence signed before the crash.
    let (_, sequence, _) = &received[received.len() / 2];
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let conflict = client
        .sign_transaction(sign_request(key, *sequence, 999))
        .await;
    let status = conflict
        .err()
        .unwrap_or_else(|| panic!("conflicting hash signed after the crash"));
    assert!(
        status.message().contains("policy sequence_guard:"),
        "{}",
        status.message()
    );

    let status = signerd
        .terminate()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success());
    let output = signerd
        .verify_audit(&[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn metrics_report_requests_denials_audit_and_health() {
    let (signerd, key) = signerd_with("").await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    for seq in 1..=3 {
        client
            .sign_transaction(sign_request(key, seq, 1))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut wrong_network = sign_request(key, 4, 1);
    wrong_network.network_passphrase = "Public Global Stellar Network ; September 2015".into();
    assert!(client.sign_transaction(wrong_network).await.is_err());
    signerd
        .wait_for_health("gateway", ServingStatus::Serving)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = signerd.metrics().await.unwrap_or_else(|e| panic!("{e:#}"));
        // keys_loaded is refreshed by the health loop; wait for its first pass.
        if text.contains("signerd_keys_loaded{backend=\"pkcs11\"} 2")
            || tokio::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for expected in [
        "signerd_requests_total{rpc=\"SignTransaction\",result=\"signed\"} 3",
        "signerd_requests_total{rpc=\"SignTransaction\",result=\"denied\"} 1",
        "signerd_denials_total{rule=\"network\"} 1",
        "signerd_keys_loaded{backend=\"pkcs11\"} 2",
        "signerd_health 1",
        "signerd_audit_fsync_seconds_count",
        "signerd_audit_batch_records_bucket",
        "signerd_backend_sign_seconds_count{backend=\"pkcs11\"}",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
