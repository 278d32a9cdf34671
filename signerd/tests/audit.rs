//! The audit log end to end: tampering of every kind is caught by `signerd audit verify`, files
//! rotate with the chain intact, a log that cannot be written stops signing, and the sequence
//! guard survives restarts and crashes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use signer_proto::v1 as pb;
use signer_testkit::fake_kms::{FakeKms, Fault, FaultPlan};
use signer_testkit::stellar::{Tx, key_bytes, payment};
use signer_testkit::{
    GcpKmsOptions, Grant, SignerdOptions, SignerdProcess, TESTNET, with_request_id,
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

async fn signerd_with(audit_toml: &str) -> (SignerdProcess, [u8; 32]) {
    started(SignerdOptions {
        audit_toml: audit_toml.to_owned(),
        ..Default::default()
    })
    .await
}

/// A KMS-only signerd on `kms` (the audit key is a CryptoKey there) with these audit options.
async fn kms_signerd_with(kms: &FakeKms, audit_toml: &str) -> (SignerdProcess, [u8; 32]) {
    started(SignerdOptions {
        audit_toml: audit_toml.to_owned(),
        gcp_kms: Some(GcpKmsOptions::fake(kms)),
        ..Default::default()
    })
    .await
}

/// Starts signerd with `gateway` allowed `wallet-*`, and creates `wallet-1`.
async fn started(options: SignerdOptions) -> (SignerdProcess, [u8; 32]) {
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![Grant::keys("gateway", &["wallet-*"])],
        ..options
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

/// A signerd that signed one transaction (at `sequence`) and was stopped cleanly (a final
/// checkpoint, the anchor on it): the log an attacker then edits.
async fn signed_once_then_stopped(sequence: i64) -> (SignerdProcess, [u8; 32]) {
    let (mut signerd, key) = signerd_with("").await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client
        .sign_transaction(sign_request(key, sequence, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        signerd
            .terminate()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
            .success()
    );
    (signerd, key)
}

/// Removes every file of the audit directory (an editor of the directory emptying it).
fn empty_audit_dir(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{e}")) {
        std::fs::remove_file(entry.unwrap_or_else(|e| panic!("{e}")).path())
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Starts signerd, which must refuse; returns why. `started` says what a start would mean.
async fn refused_start(signerd: &mut SignerdProcess, started: &str) -> String {
    match signerd.launch().await {
        Ok(()) => panic!("{started}"),
        Err(e) => format!("{e:#}"),
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
    // Built once: the time bounds come from the clock, and a rebuilt request would be another
    // transaction whenever the restart crosses a second.
    let signed = sign_request(key, 9, 1);
    client
        .sign_transaction(signed.clone())
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
        .sign_transaction(signed)
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

// ---------------------------------------------------------------------------------------------
// An editor of the audit directory (no audit key, no token PIN) against the checkpoints and the
// anchor.

/// Re-seals one line after `edit`, as an attacker without the audit key would: the same seq and
/// prev_hash, the record's members edited, a recomputed hash.
fn reseal(line: &str, edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let sealed = signerd::audit::chain::check(line).unwrap_or_else(|e| panic!("{e}"));
    let serde_json::Value::Object(mut members) = sealed.value else {
        panic!("not an object");
    };
    for chain_member in ["seq", "prev_hash", "hash"] {
        members.remove(chain_member);
    }
    edit(&mut members);
    let json = serde_json::to_string(&members).unwrap_or_else(|e| panic!("{e}"));
    let (resealed, _) =
        signerd::audit::chain::seal(sealed.seq, &sealed.prev_hash, &json[1..json.len() - 1]);
    resealed.trim_end().to_owned()
}

/// Appends `line`'s members as a new record after the last of `lines` (re-chained).
fn rechain_onto(lines: &mut Vec<String>, line: &str) {
    let last = lines
        .last()
        .map(|l| signerd::audit::chain::check(l).unwrap_or_else(|e| panic!("{e}")));
    let (seq, prev) = last.map_or((1, signerd::audit::chain::GENESIS), |l| (l.seq + 1, l.hash));
    let serde_json::Value::Object(mut members) =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!("not an object");
    };
    for chain_member in ["seq", "prev_hash", "hash"] {
        members.remove(chain_member);
    }
    let json = serde_json::to_string(&members).unwrap_or_else(|e| panic!("{e}"));
    let (sealed, _) = signerd::audit::chain::seal(seq, &prev, &json[1..json.len() - 1]);
    lines.push(sealed.trim_end().to_owned());
}

fn checkpoint_lines(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("\"kind\":\"checkpoint\""))
        .map(|(i, _)| i)
        .collect()
}

fn is_final(line: &str) -> bool {
    line.contains("\"final\":true")
}

#[tokio::test]
async fn a_cut_log_whose_start_checkpoint_is_flipped_to_final_does_not_verify() {
    let (signerd, copy) = sealed_log().await;
    let file = only_file(copy.path());
    let all = lines(&file);
    let start_checkpoint = checkpoint_lines(&all)[0];
    assert!(!is_final(&all[start_checkpoint]));
    // Everything signed after the start is cut; the start checkpoint claims to end the log.
    let mut cut = all[..=start_checkpoint].to_vec();
    cut[start_checkpoint] = reseal(&cut[start_checkpoint], |record| {
        record.insert("final".into(), true.into());
    });
    write_lines(&file, &cut);
    let (ok, text) = verify(&signerd, copy.path(), true);
    assert!(!ok, "a cut log verified as sealed: {text}");
    assert!(
        text.contains("checkpoint signature does not verify"),
        "{text}"
    );
}

#[tokio::test]
async fn a_rewritten_checkpoint_time_does_not_pass_the_live_age_check() {
    let (signerd, copy) = sealed_log().await;
    let file = only_file(copy.path());
    let all = lines(&file);
    let start_checkpoint = checkpoint_lines(&all)[0];
    let mut cut = all[..=start_checkpoint].to_vec();
    // A log cut long ago, made to look fresh forever: its last checkpoint dated a day ahead.
    let ahead_ms = signerd::audit::record::now_unix_ms() + 86_400_000;
    cut[start_checkpoint] = reseal(&cut[start_checkpoint], |record| {
        record.insert(
            "time".into(),
            signerd::audit::record::rfc3339_of_ms(ahead_ms).into(),
        );
        if record.contains_key("time_ms") {
            record.insert("time_ms".into(), ahead_ms.into());
        }
    });
    write_lines(&file, &cut);
    let output = signerd
        .verify_audit_at(copy.path(), &["--live", "--max-checkpoint-age", "0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "a redated checkpoint passed: {text}"
    );
    assert!(
        text.contains("checkpoint signature does not verify"),
        "{text}"
    );
}

#[tokio::test]
async fn a_log_cut_back_to_an_earlier_final_checkpoint_does_not_restart() {
    let (mut signerd, key) = signed_once_then_stopped(1).await;
    signerd.launch().await.unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client
        .sign_transaction(sign_request(key, 2, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        signerd
            .terminate()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
            .success()
    );
    let file = only_file(&signerd.audit_dir());
    let all = lines(&file);
    let first_final = *checkpoint_lines(&all)
        .iter()
        .find(|i| is_final(&all[**i]))
        .unwrap_or_else(|| panic!("no final checkpoint"));
    let second_start = checkpoint_lines(&all)
        .into_iter()
        .find(|i| *i > first_final)
        .unwrap_or_else(|| panic!("no second run"));

    // Replayed after the second run's start checkpoint, the first run's final checkpoint does
    // not seal the log: its signature names its own position.
    let mut replayed = all[..=second_start].to_vec();
    rechain_onto(&mut replayed, &all[first_final]);
    write_lines(&file, &replayed);
    let (ok, text) = verify(&signerd, &signerd.audit_dir(), true);
    assert!(!ok, "a replayed final checkpoint sealed the log: {text}");

    // Cut back to that final checkpoint, the log is a genuine, sealed earlier log: only the
    // anchor in the token shows that the second run is missing.
    write_lines(&file, &all[..=first_final]);
    let (ok, text) = verify(&signerd, &signerd.audit_dir(), true);
    assert!(ok, "{text}");
    let refused = signerd.launch().await;
    let error = format!(
        "{:#}",
        refused.err().unwrap_or_else(|| panic!(
            "signerd restarted on a log cut back to an older final checkpoint"
        ))
    );
    assert!(error.contains("behind its anchor"), "{error}");
    let anchored_seq = all.len();
    assert!(
        error.contains(&format!("anchors checkpoint seq {anchored_seq}"))
            && error.contains(&format!("the log ends at seq {}", first_final + 1)),
        "{error}"
    );
}

#[tokio::test]
async fn an_emptied_audit_directory_stops_signerd_until_the_gap_is_accepted() {
    let (mut signerd, _) = signed_once_then_stopped(5).await;
    let anchored_seq = lines(&only_file(&signerd.audit_dir())).len();
    empty_audit_dir(&signerd.audit_dir());
    let error = refused_start(
        &mut signerd,
        "signerd started a new chain in an emptied directory",
    )
    .await;
    assert!(
        error.contains("behind its anchor")
            && error.contains(&format!("anchors checkpoint seq {anchored_seq}"))
            && error.contains("holds no record"),
        "{error}"
    );
    assert!(
        signerd::audit::reader::log_files(&signerd.audit_dir())
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .all(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0) == 0),
        "a refused start wrote records"
    );

    // The operator accepts the loss explicitly: signerd starts and the log says so.
    signerd
        .launch_with_args(&["--accept-audit-gap"])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let status = signerd
        .terminate()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "{status}: {}", signerd.log());
    let output = signerd
        .verify_audit(&[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("1 gap(s) accepted by an operator")
            && text.contains(&format!("the anchor was checkpoint seq {anchored_seq}")),
        "{text}"
    );
    let gap = signerd
        .audit_records()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .into_iter()
        .find(|r| r.kind == "gap")
        .unwrap_or_else(|| panic!("no gap record"));
    assert_eq!(gap.anchored_seq, Some(anchored_seq as u64));
    assert_eq!(gap.found_seq, Some(0));
    // And from then on the log is anchored again: a plain restart works.
    signerd.launch().await.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn a_tail_cut_and_rechained_stops_signerd() {
    let (mut signerd, key) = signerd_with("").await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    for seq in 1..=4 {
        client
            .sign_transaction(sign_request(key, seq, 1))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        signerd
            .terminate()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
            .success()
    );
    let file = only_file(&signerd.audit_dir());
    let all = lines(&file);
    // The signatures after the start checkpoint are cut, and the log is padded back to its old
    // length with records that chain correctly (copies of the start event): a crashed signerd's
    // log, as far as the chain can tell.
    let start_checkpoint = checkpoint_lines(&all)[0];
    let mut forged = all[..=start_checkpoint].to_vec();
    while forged.len() < all.len() + 1 {
        rechain_onto(&mut forged, &all[0]);
    }
    write_lines(&file, &forged);
    let (chain_ok, text) = verify(&signerd, &signerd.audit_dir(), false);
    assert!(chain_ok, "{text}");
    let error = refused_start(
        &mut signerd,
        "signerd restarted on a cut and re-chained log",
    )
    .await;
    assert!(
        error.contains("behind its anchor")
            && error.contains(&format!("record {} is a different one", all.len())),
        "{error}"
    );
}

#[tokio::test]
async fn a_symlinked_log_file_stops_signerd() {
    let (mut signerd, _) = signerd_with("").await;
    assert!(
        signerd
            .terminate()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
            .success()
    );
    let file = only_file(&signerd.audit_dir());
    let elsewhere = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let moved = elsewhere.path().join("audit-00000001.jsonl");
    std::fs::copy(&file, &moved).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&file).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&moved, &file).unwrap_or_else(|e| panic!("{e}"));
    let error = refused_start(&mut signerd, "signerd appended through a symlink").await;
    assert!(error.contains("is a symlink"), "{error}");
    let (ok, text) = verify(&signerd, &signerd.audit_dir(), true);
    assert!(!ok && text.contains("is a symlink"), "{text}");
}

#[tokio::test]
async fn the_token_anchors_the_last_durable_checkpoint() {
    let (signerd, _) = signed_once_then_stopped(3).await;
    let last = lines(&only_file(&signerd.audit_dir()))
        .pop()
        .unwrap_or_default();
    let last = signerd::audit::chain::check(&last).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(last.value["kind"], "checkpoint");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_signerd"))
        .args(["inspect-key", "--config"])
        .arg(&signerd.config)
        .arg("signerd-audit")
        .env("SOFTHSM2_CONF", &signerd.token.conf)
        .env("SIGNERD_TEST_PIN", signer_testkit::TEST_PIN)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}"));
    let anchor = &report["audit_anchor"];
    assert_eq!(anchor["seq"], last.seq, "{report}");
    assert_eq!(anchor["hash"], hex::encode(last.hash), "{report}");
    assert_eq!(anchor["token"], true, "{report}");
    assert_eq!(anchor["private"], true, "{report}");
}

/// The anchor labels of the audit key in the fake KMS, as `(seq, hash)`.
fn kms_anchor(kms: &FakeKms) -> Option<(String, String)> {
    let labels = kms.labels(GcpKmsOptions::KEY_RING, "signerd-audit")?;
    let seq = labels
        .get(signerd::backend::gcp_kms::ANCHOR_SEQ_LABEL)?
        .clone();
    let [a, b] = signerd::backend::gcp_kms::ANCHOR_HASH_LABELS.map(|l| labels.get(l).cloned());
    Some((seq, a? + &b?))
}

/// The last record of the log (a checkpoint after a clean stop), as `(seq, hash)`.
fn last_record(signerd: &SignerdProcess) -> (String, String) {
    let last = lines(&only_file(&signerd.audit_dir()))
        .pop()
        .unwrap_or_default();
    let last = signerd::audit::chain::check(&last).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(last.value["kind"], "checkpoint");
    (last.seq.to_string(), hex::encode(last.hash))
}

async fn sign_once(signerd: &SignerdProcess, key: [u8; 32], sequence: i64) {
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client
        .sign_transaction(sign_request(key, sequence, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn stop(signerd: &mut SignerdProcess) {
    let status = signerd
        .terminate()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "{status}");
}

// Before the Cloud KMS anchor, `anchor = "backend"` (the default) with a KMS audit key was a
// config error at start, so none of this could run; with `anchor = "none"` the emptied log
// below started a fresh chain unnoticed.
#[tokio::test]
async fn an_audit_key_in_cloud_kms_anchors_the_log_in_its_labels() {
    let kms = FakeKms::start().await.unwrap_or_else(|e| panic!("{e:#}"));
    let (mut signerd, key) = kms_signerd_with(&kms, "").await;
    sign_once(&signerd, key, 1).await;
    stop(&mut signerd).await;
    let first_run = lines(&only_file(&signerd.audit_dir()));
    assert_eq!(kms_anchor(&kms), Some(last_record(&signerd)));

    // A normal restart, then a crash and a restart after it, start and anchor as usual.
    signerd.launch().await.unwrap_or_else(|e| panic!("{e:#}"));
    sign_once(&signerd, key, 2).await;
    signerd.kill().await.unwrap_or_else(|e| panic!("{e:#}"));
    signerd.launch().await.unwrap_or_else(|e| panic!("{e:#}"));
    sign_once(&signerd, key, 3).await;
    stop(&mut signerd).await;
    let (anchored_seq, anchored_hash) = last_record(&signerd);
    assert_eq!(
        kms_anchor(&kms),
        Some((anchored_seq.clone(), anchored_hash))
    );

    // Cut back to the first run's sealed log: only the anchor shows what is missing.
    let file = only_file(&signerd.audit_dir());
    let all = lines(&file);
    write_lines(&file, &first_run);
    let error = refused_start(
        &mut signerd,
        "signerd restarted on a log cut back behind its KMS anchor",
    )
    .await;
    assert!(
        error.contains("behind its anchor")
            && error.contains(&format!("anchors checkpoint seq {anchored_seq}"))
            && error.contains(&format!("the log ends at seq {}", first_run.len())),
        "{error}"
    );

    // Emptied: the same.
    write_lines(&file, &all);
    empty_audit_dir(&signerd.audit_dir());
    let error = refused_start(
        &mut signerd,
        "signerd started a new chain beside its KMS anchor",
    )
    .await;
    assert!(
        error.contains("behind its anchor")
            && error.contains(&format!("anchors checkpoint seq {anchored_seq}"))
            && error.contains("holds no record"),
        "{error}"
    );

    // An operator accepts the loss: the gap is recorded and the labels anchor the new chain.
    signerd
        .launch_with_args(&["--accept-audit-gap"])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    stop(&mut signerd).await;
    assert_eq!(kms_anchor(&kms), Some(last_record(&signerd)));
    let gap = signerd
        .audit_records()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .into_iter()
        .find(|r| r.kind == "gap")
        .unwrap_or_else(|| panic!("no gap record"));
    assert_eq!(gap.anchored_seq.map(|s| s.to_string()), Some(anchored_seq));
    signerd.launch().await.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn a_quota_hit_on_the_kms_anchor_update_does_not_fail_signing() {
    let kms = FakeKms::start().await.unwrap_or_else(|e| panic!("{e:#}"));
    let (mut signerd, key) = kms_signerd_with(&kms, "checkpoint_every_records = 2").await;
    kms.inject(FaultPlan::always(Fault::TooManyRequests).on_update());
    let before = kms_anchor(&kms);
    let mut sequence = 1;
    let failures = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("signerd_audit_anchor_failures_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        // Every signature succeeds while the label update keeps hitting the quota.
        sign_once(&signerd, key, sequence).await;
        sequence += 1;
        let metrics = signerd.metrics().await.unwrap_or_else(|e| panic!("{e:#}"));
        if failures(&metrics) >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "no failed anchor update counted: {metrics}"
        );
    }
    assert_eq!(
        kms_anchor(&kms),
        before,
        "the anchor moved through a quota error"
    );
    // The quota refills: the next checkpoint (the final one here) moves the anchor.
    kms.clear_fault();
    sign_once(&signerd, key, sequence).await;
    stop(&mut signerd).await;
    assert_eq!(kms_anchor(&kms), Some(last_record(&signerd)));
    signerd.launch().await.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn an_audit_key_in_cloud_kms_can_opt_out_of_the_anchor() {
    let kms = FakeKms::start().await.unwrap_or_else(|e| panic!("{e:#}"));
    let (mut signerd, _) = kms_signerd_with(&kms, "anchor = \"none\"").await;
    stop(&mut signerd).await;
    assert!(kms.has_key(GcpKmsOptions::KEY_RING, "signerd-audit"));
    assert_eq!(kms_anchor(&kms), None);
    assert_eq!(
        kms.calls(signer_testkit::fake_kms::KmsCall::UpdateCryptoKey),
        0
    );
    // Documented: without the anchor an emptied log is not noticed.
    empty_audit_dir(&signerd.audit_dir());
    signerd.launch().await.unwrap_or_else(|e| panic!("{e:#}"));
}

/// splitmix64: a seeded generator, so a failing run of the crash test can be replayed.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    }
}

#[tokio::test]
async fn fifty_sigkills_under_concurrent_signing_always_restart_by_themselves() {
    let seed = std::env::var("AUDIT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("crash test seed {seed} (replay with AUDIT_CRASH_SEED={seed})");
    let mut random = Seeded(seed);
    // Frequent checkpoints, so that kills land around checkpoint writes and anchor updates too.
    let (mut signerd, key) = signerd_with("checkpoint_every_records = 5").await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Signed before any kill: the guard must hold it through all of them.
    client
        .sign_transaction(sign_request(key, 1, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    type Received = Vec<(String, Vec<u8>)>;
    let received: Arc<Mutex<Received>> = Arc::default();
    for round in 0..50i64 {
        if round > 0 {
            signerd.launch().await.unwrap_or_else(|e| {
                panic!("seed {seed}: restart {round} after SIGKILL needed help: {e:#}")
            });
        }
        let kill_after = random.below(12) as usize;
        let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
        let count_tx = Arc::new(count_tx);
        let mut workers = Vec::new();
        for worker in 0..4i64 {
            let mut client = signerd
                .client("gateway")
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            let (received, count_tx) = (received.clone(), count_tx.clone());
            workers.push(tokio::spawn(async move {
                for n in 0..100_000i64 {
                    let sequence = 10 + round * 1_000_000 + worker * 100_000 + n;
                    let request_id = format!("kill-{sequence}");
                    let request = with_request_id(sign_request(key, sequence, 1), &request_id);
                    let Ok(response) = client.sign_transaction(request).await else {
                        return;
                    };
                    let signed_hash = response.into_inner().signed_hash;
                    received
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((request_id, signed_hash));
                    count_tx.send_modify(|count| *count += 1);
                }
            }));
        }
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            count_rx.wait_for(|count| *count >= kill_after),
        )
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: round {round} signed nothing for 60 s"))
        .unwrap_or_else(|e| panic!("{e}"));
        signerd.kill().await.unwrap_or_else(|e| panic!("{e:#}"));
        for worker in workers {
            worker.await.unwrap_or_else(|e| panic!("{e}"));
        }
    }

    signerd
        .launch()
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: final restart: {e:#}"));
    let signed: std::collections::HashMap<String, String> = signerd
        .audit_records()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .into_iter()
        .filter(|r| r.decision == Some(signerd::audit::record::Decision::Signed))
        .filter_map(|r| Some((r.request_id?, r.signed_hash?)))
        .collect();
    let received = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        received.len() >= 50,
        "seed {seed}: only {} signatures",
        received.len()
    );
    for (request_id, signed_hash) in &received {
        assert_eq!(
            signed.get(request_id),
            Some(&hex::encode(signed_hash)),
            "seed {seed}: {request_id} reached the client without its audit record"
        );
    }
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let conflict = client.sign_transaction(sign_request(key, 1, 2)).await;
    let status = conflict
        .err()
        .unwrap_or_else(|| panic!("seed {seed}: a conflicting hash for sequence 1 was signed"));
    assert!(
        status.message().contains("policy sequence_guard:"),
        "{}",
        status.message()
    );
    assert!(
        signerd
            .terminate()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
            .success()
    );
    let output = signerd
        .verify_audit(&[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        output.status.success(),
        "seed {seed}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("gap"),
        "seed {seed}: a crash was recorded as a gap"
    );
}

// ---------------------------------------------------------------------------------------------
// Start-up does not grow with history: it starts from the anchored checkpoint's guard snapshot.

#[tokio::test]
async fn history_before_the_trusted_checkpoint_is_verified_after_listening_and_stops_signing_when_bad()
 {
    let (mut signerd, key) = signerd_with("").await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    for seq in 1..=3 {
        client
            .sign_transaction(sign_request(key, seq, seq))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        signerd
            .terminate()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
            .success()
    );
    // An old record is altered: start-up no longer reads it before listening...
    let file = only_file(&signerd.audit_dir());
    let mut all = lines(&file);
    let target = all
        .iter()
        .position(|l| l.contains("\"amount\":\"0.0000002\""))
        .unwrap_or_else(|| panic!("no 2-stroop payment"));
    all[target] = all[target].replace("\"amount\":\"0.0000002\"", "\"amount\":\"0.0000009\"");
    write_lines(&file, &all);
    signerd
        .launch()
        .await
        .unwrap_or_else(|e| panic!("start-up read the whole history: {e:#}"));
    // ...but verifies it right after, and then refuses to sign.
    signerd
        .wait_for_health("gateway", ServingStatus::NotServing)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let refused = client.sign_transaction(sign_request(key, 4, 1)).await;
    assert_eq!(refused.err().map(|s| s.code()), Some(Code::Unavailable));
    let log = signerd.log();
    assert!(
        log.contains("audit history fails verification") && log.contains("hash mismatch"),
        "{log}"
    );
}

#[tokio::test]
async fn a_doctored_guard_snapshot_is_not_trusted() {
    let (mut signerd, key) = signed_once_then_stopped(9).await;
    // Every snapshot emptied: a guard that forgot sequence 9, if it were believed.
    let mut doctored = 0;
    for entry in std::fs::read_dir(signerd.audit_dir()).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.to_string_lossy().ends_with(".bin") {
            std::fs::write(&path, b"SSG1").unwrap_or_else(|e| panic!("{e}"));
            doctored += 1;
        }
    }
    assert!(doctored > 0, "no guard snapshot was written");
    signerd.launch().await.unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let conflict = client.sign_transaction(sign_request(key, 9, 2)).await;
    let status = conflict
        .err()
        .unwrap_or_else(|| panic!("a doctored snapshot made the guard forget sequence 9"));
    assert!(
        status.message().contains("policy sequence_guard:"),
        "{}",
        status.message()
    );
    assert!(
        signerd
            .log()
            .contains("guard snapshot does not match its signed digest"),
        "{}",
        signerd.log()
    );
}

#[tokio::test]
async fn audit_verify_resumes_from_a_checkpoint_already_verified() {
    let (signerd, copy) = sealed_log().await;
    let file = only_file(copy.path());
    let mut all = lines(&file);
    let start_checkpoint = checkpoint_lines(&all)[0];
    let trusted =
        signerd::audit::chain::check(&all[start_checkpoint]).unwrap_or_else(|e| panic!("{e}"));
    let from = format!("{}:{}", trusted.seq, hex::encode(trusted.hash));
    let resume = |extra: &[&str]| {
        let output = signerd
            .verify_audit_at(copy.path(), extra)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    };
    let (ok, text) = resume(&["--from-checkpoint", &from]);
    assert!(ok, "{text}");
    let after = all.len() - start_checkpoint - 1;
    assert!(
        text.contains(&format!("ok: {after} records")) && text.contains("sealed by a final"),
        "{text}"
    );

    // What came before the trusted checkpoint is not read again...
    all[0] = all[0].replace("started", "STARTED");
    write_lines(&file, &all);
    let (ok, text) = resume(&["--from-checkpoint", &from]);
    assert!(ok, "{text}");
    let (ok, _) = resume(&[]);
    assert!(
        !ok,
        "the altered first record went unnoticed by a full verify"
    );
    // ...what comes after it is, and a trusted point that is not in the log is refused.
    let last = all.len() - 1;
    all[last] = all[last].replace("\"final\":true", "\"final\":false");
    write_lines(&file, &all);
    let (ok, text) = resume(&["--from-checkpoint", &from]);
    assert!(!ok && text.contains("hash mismatch"), "{text}");
    let wrong = format!("{}:{}", trusted.seq, hex::encode([7u8; 32]));
    let (ok, text) = resume(&["--from-checkpoint", &wrong]);
    assert!(!ok && text.contains("another hash"), "{text}");
}
