//! Contract tests of both network clients against recorded real responses: each test serves a
//! body under `tests/fixtures/{rpc,horizon}/` (sources in `tests/fixtures/README.md`) from a
//! small local HTTP server and checks that the client reads the right values from it. What the
//! clients send is recorded too, so the requests' shapes are checked against the API's.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use gateway::network::horizon::Horizon;
use gateway::network::rpc::StellarRpc;
use gateway::network::{Network, NetworkError, SequenceUse, Submission};
use serde_json::Value;

/// A canned answer.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Canned {
    fn ok(body: String) -> Self {
        Canned {
            status: 200,
            headers: Vec::new(),
            body,
        }
    }

    fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// The recorded API: answers by route (`GET /accounts/...`, or `rpc getTransaction` for a
/// JSON-RPC method); a route with several answers gives them in order, the last one repeating.
#[derive(Default)]
struct Recorded {
    routes: Mutex<HashMap<String, VecDeque<Canned>>>,
    requests: Mutex<Vec<(String, Value)>>,
}

impl Recorded {
    fn on(&self, route: &str, canned: Canned) {
        if let Ok(mut routes) = self.routes.lock() {
            routes
                .entry(route.to_owned())
                .or_default()
                .push_back(canned);
        }
    }

    /// The requests made to `route`, with their JSON bodies (`null` for none).
    fn requests(&self, route: &str) -> Vec<Value> {
        self.requests
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(k, _)| k == route)
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn answer(
    axum::extract::State(api): axum::extract::State<Arc<Recorded>>,
    method: Method,
    uri: Uri,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let route = if method == Method::POST && uri.path() == "/rpc" {
        format!("rpc {}", json["method"].as_str().unwrap_or_default())
    } else {
        format!("{method} {}", uri.path())
    };
    if let Ok(mut requests) = api.requests.lock() {
        requests.push((route.clone(), json));
    }
    let canned = api.routes.lock().ok().and_then(|mut routes| {
        let queue = routes.get_mut(&route)?;
        if queue.len() > 1 {
            queue.pop_front()
        } else {
            queue.front().cloned()
        }
    });
    let Some(canned) = canned else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            format!("no fixture for {route}"),
        )
            .into_response();
    };
    let mut response = (
        StatusCode::from_u16(canned.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        canned.body,
    )
        .into_response();
    for (name, value) in canned.headers {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Serves `api` on a free local port; returns its base URL.
async fn serve(api: Arc<Recorded>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local addr: {e}"));
    let app = axum::Router::new().fallback(answer).with_state(api);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn fixture(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn network_config(kind: &str, url: &str, extra: &str) -> gateway::config::Config {
    gateway::config::Config::parse(&format!(
        "[signer]\nendpoint = \"https://127.0.0.1:1\"\nca = \"x\"\ncert = \"x\"\nkey = \"x\"\n\n\
         [network]\nkind = \"{kind}\"\nurl = \"{url}\"\ntimeout_ms = 2000\nsubmit_timeout_ms = 2000\n{extra}\n\
         [network.retry]\nattempts = 1\ninitial_backoff_ms = 10\nmax_backoff_ms = 20\n"
    ))
    .unwrap_or_else(|e| panic!("config: {e}"))
}

async fn rpc_client(api: &Arc<Recorded>, extra: &str) -> StellarRpc {
    let base = serve(api.clone()).await;
    let config = network_config("rpc", &format!("{base}/rpc"), extra);
    let network = config
        .network
        .as_ref()
        .unwrap_or_else(|| panic!("no network"));
    StellarRpc::new(network, gateway::metrics::Metrics::new())
        .unwrap_or_else(|e| panic!("client: {e}"))
}

async fn horizon_client(api: &Arc<Recorded>) -> Horizon {
    let base = serve(api.clone()).await;
    let config = network_config("horizon", &base, "");
    let network = config
        .network
        .as_ref()
        .unwrap_or_else(|| panic!("no network"));
    Horizon::new(network, gateway::metrics::Metrics::new())
        .unwrap_or_else(|e| panic!("client: {e}"))
}

fn must<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

// ---- Stellar RPC ----------------------------------------------------------------------------

const ACCOUNT_0: &str = "GCZJ46F2ENQAEEZVVY4RKTGVXWZNETKZBZ4LIW5CMUF7AHP6M7BEV464";
const ACCOUNT_1: &str = "GDAT5HWTGIU4TSSZ4752OUC4SABDLTLZFRPZUJ3D6LKBNEPA7V2CIG54";

#[tokio::test]
async fn rpc_reads_sequence_and_balance_from_account_ledger_entries() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc getLedgerEntries",
        Canned::ok(fixture("rpc/getLedgerEntries_accounts.json")),
    );
    let rpc = rpc_client(&api, "").await;
    let read = must(rpc.account_at(ACCOUNT_1).await);
    let account = read.value.unwrap_or_else(|| panic!("account not read"));
    assert_eq!(account.sequence, 691_489_734_664);
    assert_eq!(account.native_balance_stroops, 99_999_703_546);
    assert_eq!(read.ledger, Some(7943));
    // The request carries the account's LedgerKey, as the recorded request did.
    let sent = api.requests("rpc getLedgerEntries");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["jsonrpc"], "2.0");
    assert_eq!(
        sent[0]["params"]["keys"],
        serde_json::json!(["AAAAAAAAAADBPp7TMinJylnn+6dQXJACNc15LF+aJ2Py1BaR4P10JA=="])
    );
}

#[tokio::test]
async fn rpc_batches_account_reads_up_to_the_configured_limit() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc getLedgerEntries",
        Canned::ok(fixture("rpc/getLedgerEntries_accounts.json")),
    );
    let one_per_call = rpc_client(&api, "[network.rpc]\nledger_entries_batch = 1\n").await;
    let reads = must(one_per_call.accounts_at(&[ACCOUNT_0, ACCOUNT_1]).await);
    assert_eq!(api.requests("rpc getLedgerEntries").len(), 2);
    let balances: Vec<_> = reads
        .iter()
        .map(|r| r.value.as_ref().map(|a| a.native_balance_stroops))
        .collect();
    assert_eq!(balances, vec![Some(100_000_000_000), Some(99_999_703_546)]);

    let api = Arc::new(Recorded::default());
    api.on(
        "rpc getLedgerEntries",
        Canned::ok(fixture("rpc/getLedgerEntries_accounts.json")),
    );
    let batched = rpc_client(&api, "").await;
    let reads = must(batched.accounts_at(&[ACCOUNT_1, ACCOUNT_0]).await);
    assert_eq!(api.requests("rpc getLedgerEntries").len(), 1);
    // Answers come back in the order asked, whatever order the node listed them in.
    assert_eq!(
        reads[0].value.as_ref().map(|a| a.sequence),
        Some(691_489_734_664)
    );
    assert_eq!(
        reads[1].value.as_ref().map(|a| a.sequence),
        Some(682_899_800_064)
    );
}

#[tokio::test]
async fn rpc_an_account_without_entries_is_absent_as_of_the_latest_ledger() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc getLedgerEntries",
        Canned::ok(fixture("rpc/getLedgerEntries_not_found.json")),
    );
    let rpc = rpc_client(&api, "").await;
    let read = must(rpc.account_at(ACCOUNT_1).await);
    assert_eq!(read.value, None);
    assert_eq!(read.ledger, Some(108_023));
}

#[tokio::test]
async fn rpc_a_contract_entry_is_not_taken_for_an_account() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc getLedgerEntries",
        Canned::ok(fixture("rpc/getLedgerEntries_contract_data.json")),
    );
    let rpc = rpc_client(&api, "").await;
    assert!(matches!(
        rpc.account_at(ACCOUNT_1).await,
        Err(NetworkError::Protocol(_))
    ));
}

#[tokio::test]
async fn rpc_get_transaction_success_gives_ledger_fee_and_codes() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc getTransaction",
        Canned::ok(fixture("rpc/getTransaction_success.json")),
    );
    let rpc = rpc_client(&api, "").await;
    let hash = "32f7e5c3afd281fcaa99c0e990adf62f33e3bb341b1641a5c8b0b4a4dc55c487";
    let read = must(rpc.transaction(hash).await);
    let record = read.read.value.unwrap_or_else(|| panic!("not found"));
    assert_eq!(record.ledger, 490_252);
    assert!(record.successful);
    assert_eq!(record.fee_charged, 472_687);
    assert_eq!(record.result_codes.transaction, "tx_success");
    assert_eq!(read.read.ledger, Some(490_314));
    assert_eq!(read.history_from, Some(1_752_115_873));
    assert_eq!(
        api.requests("rpc getTransaction")[0]["params"]["hash"],
        hash
    );
}

#[tokio::test]
async fn rpc_get_transaction_failed_gives_horizons_codes() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc getTransaction",
        Canned::ok(fixture("rpc/getTransaction_failed.json")),
    );
    let rpc = rpc_client(&api, "").await;
    let read = must(
        rpc.transaction("109cf6170666e15470fb622df4965051ecfea2fee97d8165d072a769ba098b54")
            .await,
    );
    let record = read.read.value.unwrap_or_else(|| panic!("not found"));
    assert_eq!(record.ledger, 337_192);
    assert!(!record.successful);
    assert_eq!(record.fee_charged, 100);
    assert_eq!(record.result_codes.transaction, "tx_failed");
    assert_eq!(record.result_codes.operations, vec!["op_no_destination"]);
}

#[tokio::test]
async fn rpc_not_found_proves_absence_only_within_fresh_and_retained_ledgers() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc getTransaction",
        Canned::ok(fixture("rpc/getTransaction_not_found.json")),
    );
    let rpc = rpc_client(&api, "").await;
    let read = must(
        rpc.transaction("85f7aa8bfda425b98c0e53ffe56796ffd8865ec2fcc3ad71abf120801e2a14e5")
            .await,
    );
    assert_eq!(read.read.value, None);
    assert_eq!(read.read.ledger, Some(2_540_099));
    assert_eq!(read.history_from, Some(1_700_078_913));
    assert!(read.proves_absent(2_540_099, 1_700_078_913));
    // Past the node's latest ledger: proves nothing.
    assert!(!read.proves_absent(2_540_100, 1_700_078_913));
    // Submitted before the node's oldest retained ledger closed: proves nothing.
    assert!(!read.proves_absent(2_540_099, 1_700_078_912));
}

#[tokio::test]
async fn rpc_send_error_decodes_error_result_xdr_into_horizons_codes() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc sendTransaction",
        Canned::ok(fixture("rpc/sendTransaction_error.json")),
    );
    let rpc = rpc_client(&api, "").await;
    let outcome = rpc.submit("AAAA").await;
    match outcome {
        Submission::Rejected(codes) => assert_eq!(codes.transaction, "tx_bad_seq"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        api.requests("rpc sendTransaction")[0]["params"]["transaction"],
        "AAAA"
    );
}

#[tokio::test]
async fn rpc_pending_and_duplicate_are_polled_to_their_ledger() {
    for sent in [
        "rpc/sendTransaction_pending.json",
        "rpc/sendTransaction_duplicate.json",
    ] {
        let api = Arc::new(Recorded::default());
        api.on("rpc sendTransaction", Canned::ok(fixture(sent)));
        api.on(
            "rpc getTransaction",
            Canned::ok(fixture("rpc/getTransaction_not_found.json")),
        );
        api.on(
            "rpc getTransaction",
            Canned::ok(fixture("rpc/getTransaction_success.json")),
        );
        let rpc = rpc_client(&api, "").await;
        match rpc.submit("AAAA").await {
            Submission::Applied(record) => assert_eq!(record.ledger, 490_252, "{sent}"),
            other => panic!("{sent}: {other:?}"),
        }
        let polls = api.requests("rpc getTransaction");
        assert_eq!(polls.len(), 2, "{sent}");
        // The hash polled is the one sendTransaction named.
        assert_eq!(
            polls[0]["params"]["hash"],
            "d8ec9b68780314ffdfdfc2194b1b35dd27d7303c3bceaef6447e31631a1419dc"
        );
    }
}

#[tokio::test]
async fn rpc_pending_past_the_submission_deadline_is_not_decided() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc sendTransaction",
        Canned::ok(fixture("rpc/sendTransaction_pending.json")),
    );
    api.on(
        "rpc getTransaction",
        Canned::ok(fixture("rpc/getTransaction_not_found.json")),
    );
    let rpc = rpc_client(&api, "").await;
    assert_eq!(rpc.submit("AAAA").await, Submission::NotYetDecided);
}

#[tokio::test]
async fn rpc_try_again_later_resends_the_same_bytes_and_is_never_final() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc sendTransaction",
        Canned::ok(fixture("rpc/sendTransaction_try_again_later.json")),
    );
    let rpc = rpc_client(&api, "[network.rpc]\ntry_again_attempts = 3\n").await;
    let outcome = rpc.submit("AAAA").await;
    assert!(matches!(outcome, Submission::RateLimited(_)), "{outcome:?}");
    let sent = api.requests("rpc sendTransaction");
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|s| s["params"]["transaction"] == "AAAA"));

    // Taken on a later attempt: the same bytes, then polled as usual.
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc sendTransaction",
        Canned::ok(fixture("rpc/sendTransaction_try_again_later.json")),
    );
    api.on(
        "rpc sendTransaction",
        Canned::ok(fixture("rpc/sendTransaction_pending.json")),
    );
    api.on(
        "rpc getTransaction",
        Canned::ok(fixture("rpc/getTransaction_success.json")),
    );
    let rpc = rpc_client(&api, "").await;
    assert!(matches!(rpc.submit("AAAA").await, Submission::Applied(_)));
    assert_eq!(api.requests("rpc sendTransaction").len(), 2);
}

#[tokio::test]
async fn rpc_fee_latest_ledger_and_readiness_read_their_methods() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc getFeeStats",
        Canned::ok(fixture("rpc/getFeeStats.json")),
    );
    api.on(
        "rpc getLatestLedger",
        Canned::ok(fixture("rpc/getLatestLedger.json")),
    );
    api.on("rpc getHealth", Canned::ok(fixture("rpc/getHealth.json")));
    api.on(
        "rpc getNetwork",
        Canned::ok(fixture("rpc/getNetwork_testnet.json")),
    );
    let rpc = rpc_client(&api, "").await;
    assert_eq!(must(rpc.recommended_fee().await), 100);
    let latest = must(rpc.latest_ledger().await);
    assert_eq!(latest.sequence, 3_730_795);
    assert_eq!(latest.closed_at, 1_784_671_645);
    assert_eq!(latest.elder, 3_609_804);
    must(rpc.check_ready().await);

    // A node serving another network is not ready for this gateway.
    let api = Arc::new(Recorded::default());
    api.on("rpc getHealth", Canned::ok(fixture("rpc/getHealth.json")));
    api.on(
        "rpc getNetwork",
        Canned::ok(fixture("rpc/getNetwork_testnet.json")),
    );
    let pubnet = rpc_client(
        &api,
        "network_passphrase = \"Public Global Stellar Network ; September 2015\"\n",
    )
    .await;
    assert!(pubnet.check_ready().await.is_err());
}

#[tokio::test]
async fn rpc_finds_who_used_a_sequence_in_get_transactions() {
    use stellar_xdr::{Limits, MuxedAccount, ReadXdr, TransactionEnvelope};
    let page: Value = must(serde_json::from_str(&fixture("rpc/getTransactions.json")));
    let result = &page["result"];
    // The second recorded transaction is a plain (not fee-bumped) one: its source and sequence.
    let tx = &result["transactions"][1];
    let envelope = must(TransactionEnvelope::from_xdr_base64(
        tx["envelopeXdr"].as_str().unwrap_or_default(),
        Limits::none(),
    ));
    let TransactionEnvelope::Tx(v1) = envelope else {
        panic!("not a v1 envelope");
    };
    let MuxedAccount::Ed25519(key) = &v1.tx.source_account else {
        panic!("muxed source");
    };
    let source = format!("{}", stellar_strkey::ed25519::PublicKey(key.0));
    let sequence = v1.tx.seq_num.0;

    let api = Arc::new(Recorded::default());
    api.on(
        "rpc getTransactions",
        Canned::ok(fixture("rpc/getTransactions.json")),
    );
    // getHealth as that node would have answered, from the recorded page's own
    // latestLedger / oldestLedger.
    api.on(
        "rpc getHealth",
        Canned::ok(
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {
                "status": "healthy",
                "latestLedger": result["latestLedger"],
                "oldestLedger": result["oldestLedger"],
                "ledgerRetentionWindow": 120960
            }})
            .to_string(),
        ),
    );
    let rpc = rpc_client(&api, "").await;
    let usage = must(rpc.sequence_use(&source, sequence, 337_272).await);
    match usage {
        SequenceUse::By {
            hash,
            inner_hash,
            record,
        } => {
            assert_eq!(hash, tx["txHash"].as_str().unwrap_or_default());
            assert_eq!(inner_hash, None);
            assert_eq!(record.ledger, 337_272);
            assert!(record.successful);
        }
        other => panic!("{other:?}"),
    }
    let asked = api.requests("rpc getTransactions");
    assert!(asked[0]["params"]["startLedger"].as_u64().is_some());
    assert!(asked[0]["params"]["pagination"]["limit"].as_u64().is_some());

    // A node behind the ledger the sequence was seen used at says so.
    let behind = must(rpc.sequence_use(&source, sequence, 353_483).await);
    assert_eq!(behind, SequenceUse::Behind);
}

#[tokio::test]
async fn rpc_rate_limits_carry_retry_after_and_json_rpc_errors_are_answers() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc getLatestLedger",
        Canned::ok(String::new())
            .with_status(429)
            .with_header("retry-after", "7"),
    );
    api.on("rpc getHealth", Canned::ok(fixture("rpc/getHealth.json")));
    // A JSON-RPC error object (synthetic: the JSON-RPC 2.0 error shape stellar-rpc answers
    // an invalid request with).
    api.on(
        "rpc getTransaction",
        Canned::ok(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"invalid parameters"}}"#
                .into(),
        ),
    );
    let rpc = rpc_client(&api, "").await;
    match rpc.latest_ledger().await {
        Err(NetworkError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Duration::from_secs(7))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rpc.transaction("00").await,
        Err(NetworkError::Protocol(reason)) if reason.contains("-32602")
    ));
}

// ---- Horizon --------------------------------------------------------------------------------

const HORIZON_ACCOUNT: &str = "GCLWGQPMKXQSPF776IU33AH4PZNOOWNAWGGKVTBQMIC5IMKUNP3E6NVU";

#[tokio::test]
async fn horizon_reads_an_account_with_its_latest_ledger() {
    let api = Arc::new(Recorded::default());
    api.on(
        &format!("GET /accounts/{HORIZON_ACCOUNT}"),
        Canned::ok(fixture("horizon/account.json")).with_header("latest-ledger", "103310"),
    );
    let horizon = horizon_client(&api).await;
    let read = must(horizon.account_at(HORIZON_ACCOUNT).await);
    let account = read.value.unwrap_or_else(|| panic!("no account"));
    assert_eq!(account.sequence, 9_865_509_814_140_929);
    assert_eq!(account.native_balance_stroops, 99_999_999_900);
    assert_eq!(read.ledger, Some(103_310));
}

#[tokio::test]
async fn horizon_a_404_is_an_absent_account() {
    let api = Arc::new(Recorded::default());
    api.on(
        &format!("GET /accounts/{HORIZON_ACCOUNT}"),
        Canned::ok(fixture("horizon/not_found.json"))
            .with_status(404)
            .with_header("latest-ledger", "5"),
    );
    let horizon = horizon_client(&api).await;
    let read = must(horizon.account_at(HORIZON_ACCOUNT).await);
    assert_eq!(read.value, None);
    assert_eq!(read.ledger, Some(5));
}

#[tokio::test]
async fn horizon_fee_stats_root_and_transaction_parse_to_their_values() {
    let api = Arc::new(Recorded::default());
    api.on(
        "GET /fee_stats",
        Canned::ok(fixture("horizon/fee_stats.json")),
    );
    api.on("GET /", Canned::ok(fixture("horizon/root.json")));
    let hash = "5131aed266a639a6eb4802a92fba310454e711ded830ed899745b9e777d7110c";
    api.on(
        &format!("GET /transactions/{hash}"),
        Canned::ok(fixture("horizon/transaction.json")).with_header("latest-ledger", "438140"),
    );
    let horizon = horizon_client(&api).await;
    assert_eq!(must(horizon.recommended_fee().await), 100);
    let latest = must(horizon.latest_ledger().await);
    assert_eq!(latest.sequence, 34_073_932);
    // 2021-02-19T15:50:02Z
    assert_eq!(latest.closed_at, 1_613_749_802);
    assert_eq!(latest.elder, 2);
    must(horizon.check_ready().await);
    let read = must(horizon.transaction(hash).await);
    let record = read.read.value.unwrap_or_else(|| panic!("not found"));
    assert_eq!(record.ledger, 438_134);
    assert!(record.successful);
    assert_eq!(record.fee_charged, 100);
    assert_eq!(record.result_codes.transaction, "tx_success");
    assert_eq!(record.result_codes.operations, vec!["op_success"]);
    assert_eq!(read.read.ledger, Some(438_140));
    assert_eq!(read.history_from, None);
}

#[tokio::test]
async fn horizon_submission_outcomes_follow_its_answers() {
    let api = Arc::new(Recorded::default());
    api.on(
        "POST /transactions",
        Canned::ok(fixture("horizon/submit_transaction_failed.json")).with_status(400),
    );
    api.on(
        "POST /transactions",
        Canned::ok(fixture("horizon/submit_timeout.json")).with_status(504),
    );
    api.on(
        "POST /transactions",
        Canned::ok(fixture("horizon/transaction.json")),
    );
    let horizon = horizon_client(&api).await;
    match horizon.submit("AAAA").await {
        Submission::Rejected(codes) => assert_eq!(codes.transaction, "tx_no_source_account"),
        other => panic!("{other:?}"),
    }
    assert_eq!(horizon.submit("AAAA").await, Submission::NotYetDecided);
    match horizon.submit("AAAA").await {
        Submission::Applied(record) => assert_eq!(record.ledger, 438_134),
        other => panic!("{other:?}"),
    }
}

/// RPC's "not now" answers (`TRY_AGAIN_LATER`, a JSON-RPC error object, a 429) are the node
/// answering, not the node down: they do not count toward the circuit breaker, which here opens
/// on one counted failure for a minute. A 503 shows it is armed.
#[tokio::test]
async fn rpc_answers_that_say_not_now_do_not_open_the_breaker() {
    let api = Arc::new(Recorded::default());
    api.on(
        "rpc sendTransaction",
        Canned::ok(fixture("rpc/sendTransaction_try_again_later.json")),
    );
    api.on(
        "rpc getTransaction",
        Canned::ok(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"invalid parameters"}}"#
                .into(),
        ),
    );
    api.on(
        "rpc getFeeStats",
        Canned::ok(String::new())
            .with_status(429)
            .with_header("retry-after", "1"),
    );
    api.on("rpc getHealth", Canned::ok(fixture("rpc/getHealth.json")));
    api.on("rpc getHealth", Canned::ok(String::new()).with_status(503));
    api.on("rpc getHealth", Canned::ok(fixture("rpc/getHealth.json")));
    api.on(
        "rpc getNetwork",
        Canned::ok(fixture("rpc/getNetwork_testnet.json")),
    );
    let rpc = rpc_client(
        &api,
        "[network.circuit_breaker]\nconsecutive_failures = 1\nopen_ms = 60000\nmax_open_ms = 60000\n",
    )
    .await;
    for _ in 0..3 {
        assert!(matches!(
            rpc.submit("AAAA").await,
            Submission::RateLimited(_)
        ));
        assert!(rpc.transaction("00").await.is_err());
        assert!(matches!(
            rpc.recommended_fee().await,
            Err(NetworkError::RateLimited { .. })
        ));
    }
    // Still closed: the node is asked and answers.
    must(rpc.check_ready().await);
    // One outage opens it, and it stays open after the node is back.
    assert!(matches!(
        rpc.check_ready().await,
        Err(NetworkError::Unavailable(_))
    ));
    match rpc.check_ready().await {
        Err(NetworkError::Unavailable(reason)) => {
            assert!(reason.contains("circuit breaker"), "{reason}")
        }
        other => panic!("the breaker did not open on an outage: {other:?}"),
    }
}
