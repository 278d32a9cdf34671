//! The `horizon-sim` binary as the local stack runs it: port 0, the readiness line (then the RPC
//! URL), ledgers on a timer, a clean stop on SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn the_binary_serves_horizon_with_ledgers_on_a_timer_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_horizon-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--ledger-interval-ms",
            "100",
            "--network-passphrase",
            "Standalone Network ; February 2017",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning horizon-sim: {e}"));
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("piped stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no readiness line within {DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("stdout closed before the readiness line"));
    let addr = line
        .strip_prefix("horizon-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    assert!(!addr.ends_with(":0"), "the real port is printed: {addr}");
    let horizon = Horizon::at(format!("http://{addr}"));
    let rpc_line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no rpc line within {DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("stdout closed before the rpc line"));
    assert_eq!(rpc_line, format!("horizon-sim rpc on http://{addr}/rpc"));
    let network = horizon
        .post_json(
            "/rpc",
            &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "getNetwork"}),
        )
        .await;
    assert_eq!(
        network.body["result"]["passphrase"],
        "Standalone Network ; February 2017"
    );

    let root = horizon.get("/").await;
    assert_eq!(
        root.body["network_passphrase"],
        "Standalone Network ; February 2017"
    );
    // Friendbot answers once the timer closes a ledger; nobody closes one by hand here.
    let newcomer = account(&key("binary newcomer"));
    let funded = horizon.get(&format!("/friendbot?addr={newcomer}")).await;
    assert_eq!(funded.status, 200, "{}", funded.body);
    let account_json = horizon.account(&newcomer).await;
    assert_eq!(account_json.body["balances"][0]["balance"], "10000.0000000");

    let pid = child.id().unwrap_or_else(|| panic!("running"));
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap_or_else(|_| panic!("horizon-sim did not stop on SIGTERM"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "clean exit: {status}");
}

#[tokio::test]
async fn the_binary_refuses_an_invalid_configuration() {
    let output = Command::new(env!("CARGO_BIN_EXE_horizon-sim"))
        .args(["--listen", "127.0.0.1:0", "--base-fee", "0"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("base_fee"), "{stderr}");
}
