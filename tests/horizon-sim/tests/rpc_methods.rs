//! Stellar RPC's methods on a clean ledger, field for field as stellar-rpc v27 answers them:
//! camelCase names, close times as strings where RPC encodes them so (numbers where it does
//! not), XDR in base64 that decodes with stellar-xdr, and RPC's JSON-RPC error objects.

mod common;

use common::*;
use horizon_sim::SimConfig;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountEntryExt, LedgerCloseMeta, LedgerEntryExt, LedgerHeader, LedgerKey, Limits,
    TransactionMeta, TransactionResult, TransactionResultResult, WriteXdr,
};

/// The keys of a JSON object, sorted.
fn fields(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn get_health_get_network_and_get_latest_ledger_have_rpcs_shapes() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    sim.close_ledger();
    let latest = sim.ledger_sequence();
    let close_time = i64::try_from(sim.ledger_close_time()).unwrap_or(i64::MAX);

    let health = rpc.result("getHealth", json!(null)).await;
    assert_eq!(
        fields(&health),
        sorted(&[
            "status",
            "latestLedger",
            "latestLedgerCloseTime",
            "oldestLedger",
            "oldestLedgerCloseTime",
            "ledgerRetentionWindow"
        ])
    );
    assert_eq!(health["status"], "healthy");
    assert_eq!(as_u32(&health["latestLedger"]), latest);
    assert_eq!(
        as_i64_string(&health["latestLedgerCloseTime"]),
        close_time,
        "a string"
    );
    assert_eq!(as_u32(&health["oldestLedger"]), 1);
    as_i64_string(&health["oldestLedgerCloseTime"]);
    assert!(as_u32(&health["ledgerRetentionWindow"]) > 0);

    let network = rpc.result("getNetwork", json!({})).await;
    assert_eq!(
        fields(&network),
        sorted(&["friendbotUrl", "passphrase", "protocolVersion"])
    );
    assert_eq!(network["passphrase"], sim.network_passphrase());
    assert_eq!(network["protocolVersion"], 23);
    assert_eq!(network["friendbotUrl"], format!("{}/friendbot", sim.url()));

    let ledger = rpc.result("getLatestLedger", json!(null)).await;
    assert_eq!(
        fields(&ledger),
        sorted(&[
            "id",
            "protocolVersion",
            "sequence",
            "closeTime",
            "headerXdr",
            "metadataXdr"
        ])
    );
    assert_eq!(as_u32(&ledger["sequence"]), latest);
    assert_eq!(as_i64_string(&ledger["closeTime"]), close_time, "a string");
    let header: LedgerHeader = decode_xdr(&ledger["headerXdr"]);
    assert_eq!(header.ledger_seq, latest);
    assert_eq!(header.scp_value.close_time.0, sim.ledger_close_time());
    assert_eq!(header.ledger_version, 23);
    assert_eq!(header.base_fee, 100);
    let header_bytes = header
        .to_xdr(Limits::none())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ledger["id"],
        hex::encode(Sha256::digest(&header_bytes)),
        "a ledger's id is the hash of its header"
    );
    let LedgerCloseMeta::V2(meta) = decode_xdr::<LedgerCloseMeta>(&ledger["metadataXdr"]) else {
        panic!("a v2 close meta");
    };
    assert_eq!(meta.ledger_header.header.ledger_seq, latest);
}

#[tokio::test]
async fn get_network_names_a_friendbot_that_funds_accounts_also_when_it_runs_apart() {
    for redirect in [false, true] {
        let sim = start_with(SimConfig {
            friendbot_redirect: redirect,
            ..SimConfig::default()
        })
        .await;
        let rpc = Rpc::new(&sim);
        let network = rpc.result("getNetwork", json!({})).await;
        let url = network["friendbotUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("{network}"))
            .to_owned();
        if redirect {
            let apart = sim.friendbot_url().unwrap_or_else(|| panic!("apart"));
            assert_eq!(url, format!("{apart}/"));
        }
        let newcomer = account(&key(&format!("rpc friendbot {redirect}")));
        let (origin, path) = url.split_at(
            url.find("/friendbot")
                .or_else(|| url.rfind('/'))
                .unwrap_or(0),
        );
        let friendbot = Horizon::at(origin.to_owned());
        let path = format!("{path}?addr={newcomer}");
        let funded = closing_ledgers(&sim, async move { friendbot.get(&path).await }).await;
        assert_eq!(funded.status, 200, "{}", funded.body);
        let (entry, _) = rpc.account(&newcomer).await;
        assert_eq!(entry.map(|e| e.balance), Some(10_000 * XLM));
    }
}

#[tokio::test]
async fn get_ledger_entries_answers_account_keys_in_request_order_and_skips_missing_ones() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc entries", 100 * XLM);
    let alice = account(&pair.alice);
    let bob = account(&pair.bob);
    let nobody = account(&key("rpc entries nobody"));
    let keys = [
        account_ledger_key(&bob),
        account_ledger_key(&nobody),
        account_ledger_key(&alice),
    ];
    let result = rpc
        .result("getLedgerEntries", json!({ "keys": keys }))
        .await;
    assert_eq!(fields(&result), sorted(&["entries", "latestLedger"]));
    assert_eq!(as_u32(&result["latestLedger"]), sim.ledger_sequence());
    let entries = result["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{result}"));
    assert_eq!(
        entries.len(),
        2,
        "no entry for an account that does not exist"
    );
    for entry in entries {
        assert_eq!(
            fields(entry),
            sorted(&["key", "xdr", "lastModifiedLedgerSeq", "extXdr"])
        );
        assert!(entry["lastModifiedLedgerSeq"].is_u64());
        assert_eq!(
            decode_xdr::<LedgerEntryExt>(&entry["extXdr"]),
            LedgerEntryExt::V0
        );
        let _: LedgerKey = decode_xdr(&entry["key"]);
    }
    assert_eq!(entries[0]["key"], keys[0]);
    assert_eq!(entries[1]["key"], keys[2]);
    let stellar_xdr::LedgerEntryData::Account(bob_entry) = decode_xdr(&entries[0]["xdr"]) else {
        panic!("an account");
    };
    assert_eq!(bob_entry.balance, 10 * XLM);
    let (alice_entry, _) = rpc.account(&alice).await;
    let alice_entry = alice_entry.unwrap_or_else(|| panic!("alice exists"));
    assert_eq!(alice_entry.balance, 100 * XLM);
    assert_eq!(alice_entry.seq_num.0, pair.alice_sequence);
    assert_eq!(alice_entry.ext, AccountEntryExt::V0, "no sequence bump yet");

    // A payment bumps the sequence number: the entry carries its ledger and time (ext v3).
    let envelope = pair.next_payment(&sim, XLM);
    assert_eq!(rpc.send(&envelope).await["status"], "PENDING");
    let closed = sim.close_ledger();
    let (alice_entry, latest) = rpc.account(&alice).await;
    let alice_entry = alice_entry.unwrap_or_else(|| panic!("alice exists"));
    assert_eq!(latest, closed.sequence);
    assert_eq!(alice_entry.seq_num.0, pair.alice_sequence + 1);
    assert_eq!(alice_entry.balance, 99 * XLM - 100);
    let AccountEntryExt::V1(v1) = &alice_entry.ext else {
        panic!("extension v1: {:?}", alice_entry.ext);
    };
    let stellar_xdr::AccountEntryExtensionV1Ext::V2(v2) = &v1.ext else {
        panic!("extension v2");
    };
    let stellar_xdr::AccountEntryExtensionV2Ext::V3(v3) = &v2.ext else {
        panic!("extension v3");
    };
    assert_eq!(v3.seq_ledger, closed.sequence);
    assert_eq!(v3.seq_time.0, closed.close_time);
}

#[tokio::test]
async fn get_ledger_entries_refuses_too_many_keys_garbage_and_ttl_keys_as_rpc_does() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let key = account_ledger_key(&sim.root_account());
    let too_many: Vec<String> = vec![key.clone(); 201];
    let error = rpc
        .error("getLedgerEntries", json!({ "keys": too_many }))
        .await;
    assert_eq!(error["code"], -32602);
    assert_eq!(
        error["message"],
        "key count (201) exceeds maximum supported (200)"
    );
    let at_the_limit: Vec<String> = vec![key.clone(); 200];
    let result = rpc
        .result("getLedgerEntries", json!({ "keys": at_the_limit }))
        .await;
    assert!(result["entries"].is_array());

    let error = rpc
        .error("getLedgerEntries", json!({ "keys": [key, "bm90IHhkcg=="] }))
        .await;
    assert_eq!(error["code"], -32602);
    assert_eq!(
        error["message"],
        "cannot unmarshal key value bm90IHhkcg== at index 1"
    );
    let ttl = LedgerKey::Ttl(stellar_xdr::LedgerKeyTtl {
        key_hash: stellar_xdr::Hash([7; 32]),
    })
    .to_xdr_base64(Limits::none())
    .unwrap_or_else(|e| panic!("{e}"));
    let error = rpc
        .error("getLedgerEntries", json!({ "keys": [ttl] }))
        .await;
    assert_eq!(
        error["message"],
        "ledger ttl entries cannot be queried directly"
    );
    let empty = rpc.result("getLedgerEntries", json!({ "keys": [] })).await;
    assert_eq!(empty["entries"], json!([]), "an empty array, not null");
}

#[tokio::test]
async fn send_transaction_then_get_transaction_success_with_every_field() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc success", 100 * XLM);
    let envelope = pair.next_payment(&sim, 5 * XLM);
    let hash = hash_of(&envelope, sim.network_id());
    let before = sim.ledger_sequence();

    let sent = rpc.send(&envelope).await;
    assert_eq!(
        fields(&sent),
        sorted(&["status", "hash", "latestLedger", "latestLedgerCloseTime"])
    );
    assert_eq!(sent["status"], "PENDING");
    assert_eq!(sent["hash"], hash.to_hex());
    assert_eq!(as_u32(&sent["latestLedger"]), before);
    assert_eq!(
        as_i64_string(&sent["latestLedgerCloseTime"]),
        i64::try_from(sim.ledger_close_time()).unwrap_or(0)
    );
    assert_eq!(rpc.send(&envelope).await["status"], "DUPLICATE");
    let pending = rpc.transaction(&hash).await;
    assert_eq!(pending["status"], "NOT_FOUND", "queued, not applied");

    let closed = sim.close_ledger();
    let found = rpc.transaction(&hash).await;
    assert_eq!(
        fields(&found),
        sorted(&[
            "latestLedger",
            "latestLedgerCloseTime",
            "oldestLedger",
            "oldestLedgerCloseTime",
            "status",
            "txHash",
            "applicationOrder",
            "feeBump",
            "envelopeXdr",
            "resultXdr",
            "resultMetaXdr",
            "events",
            "ledger",
            "createdAt"
        ])
    );
    assert_eq!(found["status"], "SUCCESS");
    assert_eq!(found["txHash"], hash.to_hex());
    assert_eq!(as_u32(&found["ledger"]), closed.sequence);
    assert_eq!(as_u32(&found["latestLedger"]), closed.sequence);
    assert_eq!(
        as_i64_string(&found["createdAt"]),
        i64::try_from(closed.close_time).unwrap_or(0),
        "a string in getTransaction"
    );
    assert_eq!(
        as_i64_string(&found["latestLedgerCloseTime"]),
        i64::try_from(closed.close_time).unwrap_or(0)
    );
    assert_eq!(as_u32(&found["oldestLedger"]), 1);
    as_i64_string(&found["oldestLedgerCloseTime"]);
    assert_eq!(found["applicationOrder"], 1);
    assert_eq!(found["feeBump"], false);
    assert_eq!(found["events"], json!({}));
    assert_eq!(found["envelopeXdr"], envelope);
    let result: TransactionResult = decode_xdr(&found["resultXdr"]);
    assert_eq!(result.fee_charged, 100);
    assert!(matches!(
        result.result,
        TransactionResultResult::TxSuccess(_)
    ));
    let TransactionMeta::V4(meta) = decode_xdr::<TransactionMeta>(&found["resultMetaXdr"]) else {
        panic!("transaction meta v4");
    };
    assert_eq!(meta.operations.len(), 1, "one operation's meta");
    assert_eq!(sim.balance(account(&pair.bob)), Some(15 * XLM));
}

#[tokio::test]
async fn get_transaction_not_found_still_reports_the_nodes_ledger_range() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    sim.close_ledger();
    let asked = "AB".repeat(32);
    let missing = rpc.result("getTransaction", json!({ "hash": asked })).await;
    assert_eq!(missing["status"], "NOT_FOUND");
    assert_eq!(missing["txHash"], asked, "the hash as asked");
    assert_eq!(as_u32(&missing["latestLedger"]), sim.ledger_sequence());
    as_i64_string(&missing["latestLedgerCloseTime"]);
    assert_eq!(as_u32(&missing["oldestLedger"]), 1);
    as_i64_string(&missing["oldestLedgerCloseTime"]);
    assert_eq!(missing["applicationOrder"], 0);
    assert_eq!(missing["ledger"], 0);
    assert_eq!(missing["createdAt"], "0");
    assert!(missing.get("envelopeXdr").is_none());
    assert!(missing.get("resultXdr").is_none());

    let error = rpc.error("getTransaction", json!({ "hash": "abc" })).await;
    assert_eq!(error["code"], -32602);
    assert_eq!(error["message"], "unexpected hash length (3)");
    let error = rpc
        .error("getTransaction", json!({ "hash": "zz".repeat(32) }))
        .await;
    assert_eq!(
        error["message"],
        "incorrect hash: encoding/hex: invalid byte: U+007A 'z'"
    );
}

/// What a result must be.
type ResultCheck = fn(&TransactionResultResult) -> bool;

#[tokio::test]
async fn send_transaction_errors_carry_the_transaction_result() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc errors", 100 * XLM);
    let network_id = sim.network_id();
    let cases: [(&str, String, ResultCheck); 3] = [
        (
            "bad sequence",
            signed(
                &pair.payment(pair.alice_sequence + 5, XLM),
                network_id,
                &[&pair.alice],
            ),
            |r| matches!(r, TransactionResultResult::TxBadSeq),
        ),
        (
            "signed by someone else",
            signed(
                &pair.payment(pair.alice_sequence + 1, XLM),
                network_id,
                &[&pair.bob],
            ),
            |r| matches!(r, TransactionResultResult::TxBadAuth),
        ),
        (
            "fee under the base fee",
            {
                let mut tx = pair.payment(pair.alice_sequence + 1, XLM);
                tx.fee = 50;
                signed(&tx, network_id, &[&pair.alice])
            },
            |r| matches!(r, TransactionResultResult::TxInsufficientFee),
        ),
    ];
    for (case, envelope, expected) in cases {
        let answer = rpc.send(&envelope).await;
        assert_eq!(answer["status"], "ERROR", "{case}: {answer}");
        assert_eq!(
            fields(&answer),
            sorted(&[
                "errorResultXdr",
                "status",
                "hash",
                "latestLedger",
                "latestLedgerCloseTime"
            ]),
            "{case}"
        );
        assert_eq!(answer["hash"], hash_of(&envelope, network_id).to_hex());
        let result: TransactionResult = decode_xdr(&answer["errorResultXdr"]);
        assert!(expected(&result.result), "{case}: {:?}", result.result);
    }
    assert_eq!(sim.queued(), 0, "nothing was queued");

    let error = rpc
        .error("sendTransaction", json!({ "transaction": "not xdr" }))
        .await;
    assert_eq!(error["code"], -32602);
    assert_eq!(error["message"], "invalid_xdr");
}

#[tokio::test]
async fn a_second_transaction_from_a_source_with_one_queued_is_try_again_later() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc try again", 100 * XLM);
    let first = pair.next_payment(&sim, XLM);
    let second = signed(
        &pair.payment(pair.alice_sequence + 2, XLM),
        sim.network_id(),
        &[&pair.alice],
    );
    assert_eq!(rpc.send(&first).await["status"], "PENDING");
    let answer = rpc.send(&second).await;
    assert_eq!(answer["status"], "TRY_AGAIN_LATER");
    assert!(answer.get("errorResultXdr").is_none());
    assert_eq!(sim.queued(), 1);
    sim.close_ledger();
    assert_eq!(rpc.send(&second).await["status"], "PENDING", "its turn now");
}

#[tokio::test]
async fn a_failed_transaction_is_failed_with_its_result_and_a_fee_bump_is_found_by_either_hash() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let pair = Pair::new(&sim, "rpc failed", 100 * XLM);
    let network_id = sim.network_id();
    // More than Alice has: applied, fee taken, operation failed.
    let overdraft = pair.next_payment(&sim, 1_000 * XLM);
    let overdraft_hash = hash_of(&overdraft, network_id);
    assert_eq!(rpc.send(&overdraft).await["status"], "PENDING");
    sim.close_ledger();
    let failed = rpc.transaction(&overdraft_hash).await;
    assert_eq!(failed["status"], "FAILED");
    let result: TransactionResult = decode_xdr(&failed["resultXdr"]);
    assert!(matches!(
        result.result,
        TransactionResultResult::TxFailed(_)
    ));

    let sponsor = key("rpc failed sponsor");
    funded(&sim, &sponsor, 100 * XLM);
    let bump = signed_fee_bump(
        &pair.payment(pair.alice_sequence + 2, XLM),
        &sponsor,
        400,
        network_id,
        &[&pair.alice],
        &[&sponsor],
    );
    let outer = hash_of(&bump, network_id);
    let inner = inner_hash_of(&bump, network_id);
    assert_eq!(rpc.send(&bump).await["status"], "PENDING");
    sim.close_ledger();
    let found = rpc.transaction(&outer).await;
    assert_eq!(found["status"], "SUCCESS");
    assert_eq!(found["feeBump"], true);
    assert_eq!(found["txHash"], outer.to_hex());
    let by_inner = rpc.transaction(&inner).await;
    assert_eq!(
        by_inner["status"], "SUCCESS",
        "RPC indexes the inner hash too"
    );
    assert_eq!(by_inner["txHash"], inner.to_hex(), "the hash as asked");
    assert_eq!(by_inner["envelopeXdr"], bump, "the fee bump's envelope");
    assert_eq!(by_inner["feeBump"], true);
    let result: TransactionResult = decode_xdr(&by_inner["resultXdr"]);
    assert!(matches!(
        result.result,
        TransactionResultResult::TxFeeBumpInnerSuccess(_)
    ));
}

/// Three payments from three payers in one ledger, one more in the next; returns their hashes
/// in application order and the two ledgers.
async fn four_payments(
    sim: &horizon_sim::HorizonSim,
    rpc: &Rpc,
) -> (Vec<horizon_sim::TxHash>, u32, u32) {
    let payee = key("rpc pages payee");
    funded(sim, &payee, 10 * XLM);
    let mut hashes = Vec::new();
    let mut ledgers = Vec::new();
    for batch in [vec!["a", "b", "c"], vec!["d"]] {
        for label in batch {
            let payer = key(&format!("rpc pages {label}"));
            let sequence = funded(sim, &payer, 100 * XLM);
            let mut tx = signer_testkit::stellar::Tx::new(public(&payer), sequence + 1);
            tx.operations = vec![signer_testkit::stellar::payment(public(&payee), XLM)];
            let envelope = signed(&tx, sim.network_id(), &[&payer]);
            hashes.push(hash_of(&envelope, sim.network_id()));
            assert_eq!(rpc.send(&envelope).await["status"], "PENDING");
        }
        ledgers.push(sim.close_ledger().sequence);
    }
    (hashes, ledgers[0], ledgers[1])
}

fn hashes_of(page: &Value) -> Vec<String> {
    page["transactions"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|tx| tx["txHash"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn get_transactions_pages_through_ledgers_with_rpcs_cursor() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let (hashes, first, second) = four_payments(&sim, &rpc).await;
    let hex: Vec<String> = hashes.iter().map(|h| h.to_hex()).collect();

    let page = rpc
        .result(
            "getTransactions",
            json!({ "startLedger": first, "pagination": { "limit": 2 } }),
        )
        .await;
    assert_eq!(
        fields(&page),
        sorted(&[
            "transactions",
            "latestLedger",
            "latestLedgerCloseTimestamp",
            "oldestLedger",
            "oldestLedgerCloseTimestamp",
            "cursor"
        ])
    );
    assert_eq!(hashes_of(&page), hex[..2]);
    assert!(page["latestLedgerCloseTimestamp"].is_i64(), "a number here");
    assert_eq!(as_u32(&page["latestLedger"]), second);
    // The TOID of the last one: ledger, order 2, operation 1.
    let expected_cursor = (i64::from(first) << 32) | (2 << 12) | 1;
    assert_eq!(page["cursor"], expected_cursor.to_string());
    let item = &page["transactions"][0];
    assert_eq!(
        fields(item),
        sorted(&[
            "status",
            "txHash",
            "applicationOrder",
            "feeBump",
            "envelopeXdr",
            "resultXdr",
            "resultMetaXdr",
            "events",
            "ledger",
            "createdAt"
        ])
    );
    assert!(item["createdAt"].is_i64(), "a number in getTransactions");
    assert_eq!(item["status"], "SUCCESS");
    assert_eq!(item["applicationOrder"], 1);
    assert_eq!(as_u32(&item["ledger"]), first);
    let _: TransactionResult = decode_xdr(&item["resultXdr"]);

    let next = rpc
        .result(
            "getTransactions",
            json!({ "pagination": { "cursor": page["cursor"], "limit": 5 } }),
        )
        .await;
    assert_eq!(hashes_of(&next), hex[2..]);
    assert_eq!(
        next["cursor"],
        ((i64::from(second) << 32) | (1 << 12) | 1).to_string()
    );
    let all = rpc
        .result("getTransactions", json!({ "startLedger": first }))
        .await;
    assert_eq!(hashes_of(&all), hex, "the default page holds them all");
}

/// RPC's cursor: a TOID (ledger, transaction order, operation 1), as a decimal string.
fn toid(ledger: u32, order: i64) -> String {
    ((i64::from(ledger) << 32) | (order << 12) | 1).to_string()
}

#[tokio::test]
async fn get_transactions_past_the_last_transaction_answers_rpcs_order_zero_cursor() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let (hashes, first, second) = four_payments(&sim, &rpc).await;
    let all = rpc
        .result("getTransactions", json!({ "startLedger": first }))
        .await;
    assert_eq!(all["cursor"], toid(second, 1));
    let after = rpc
        .result(
            "getTransactions",
            json!({ "pagination": { "cursor": all["cursor"] } }),
        )
        .await;
    assert_eq!(after["transactions"], json!([]));
    // stellar-rpc v27 answers the ledger with order 0 here, so the next page reads that ledger
    // again: a client pages by cursor and still dedupes by hash.
    assert_eq!(after["cursor"], toid(second, 0));
    let again = rpc
        .result(
            "getTransactions",
            json!({ "pagination": { "cursor": after["cursor"] } }),
        )
        .await;
    assert_eq!(hashes_of(&again), vec![hashes[3].to_hex()]);
}

#[tokio::test]
async fn get_transactions_refuses_what_rpc_refuses() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    sim.close_ledger();
    let latest = sim.ledger_sequence();
    let error = rpc
        .error("getTransactions", json!({ "startLedger": latest + 1 }))
        .await;
    assert_eq!(error["code"], -32600);
    assert_eq!(
        error["message"],
        format!(
            "start ledger ({}) must be between the oldest ledger: 1 and the latest ledger: {latest} for this rpc instance",
            latest + 1
        )
    );
    let error = rpc
        .error(
            "getTransactions",
            json!({ "startLedger": 1, "pagination": { "limit": 201 } }),
        )
        .await;
    assert_eq!(error["code"], -32600);
    assert_eq!(error["message"], "limit must not exceed 200");
    let error = rpc
        .error(
            "getTransactions",
            json!({ "startLedger": 1, "pagination": { "cursor": "4294971393" } }),
        )
        .await;
    assert_eq!(
        error["message"],
        "startLedger (1) and cursor (4294971393) cannot both be set"
    );
    let error = rpc
        .error(
            "getTransactions",
            json!({ "pagination": { "cursor": "abc" } }),
        )
        .await;
    assert_eq!(error["code"], -32602);
    assert_eq!(
        error["message"],
        "strconv.ParseInt: parsing \"abc\": invalid syntax"
    );
    let error = rpc
        .error("getTransactions", json!({ "startLedger": "1" }))
        .await;
    assert_eq!(error["code"], -32602, "startLedger is a number: {error}");
}

#[tokio::test]
async fn get_fee_stats_is_zero_on_a_quiet_network_and_counts_inclusion_fees_after() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let quiet = rpc.result("getFeeStats", json!(null)).await;
    assert_eq!(
        fields(&quiet),
        sorted(&["sorobanInclusionFee", "inclusionFee", "latestLedger"])
    );
    let distribution_fields = sorted(&[
        "max",
        "min",
        "mode",
        "p10",
        "p20",
        "p30",
        "p40",
        "p50",
        "p60",
        "p70",
        "p80",
        "p90",
        "p95",
        "p99",
        "transactionCount",
        "ledgerCount",
    ]);
    assert_eq!(fields(&quiet["inclusionFee"]), distribution_fields);
    assert_eq!(fields(&quiet["sorobanInclusionFee"]), distribution_fields);
    assert_eq!(
        quiet["inclusionFee"]["p50"], "0",
        "RPC's empty window is zero"
    );
    assert_eq!(quiet["inclusionFee"]["transactionCount"], "0");
    assert_eq!(quiet["inclusionFee"]["ledgerCount"], 0);

    let pair = Pair::new(&sim, "rpc fee stats", 100 * XLM);
    let mut tx = pair.payment(pair.alice_sequence + 1, XLM);
    tx.fee = 1_000;
    assert_eq!(
        rpc.send(&signed(&tx, sim.network_id(), &[&pair.alice]))
            .await["status"],
        "PENDING"
    );
    sim.close_ledger();
    let stats = rpc.result("getFeeStats", json!(null)).await;
    assert_eq!(as_u32(&stats["latestLedger"]), sim.ledger_sequence());
    assert_eq!(
        stats["inclusionFee"]["p50"], "100",
        "the fee charged per operation, not the bid"
    );
    assert_eq!(stats["inclusionFee"]["max"], "100");
    assert_eq!(stats["inclusionFee"]["transactionCount"], "1");
    assert_eq!(stats["inclusionFee"]["ledgerCount"], 1);
    assert_eq!(stats["sorobanInclusionFee"]["transactionCount"], "0");
}

#[tokio::test]
async fn the_json_rpc_envelope_answers_as_stellar_rpcs_bridge_does() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let http = Horizon::new(&sim);

    // Not JSON at all: jrpc2's bridge fails the HTTP request itself.
    let garbage = http
        .send_raw("POST", "/rpc", "application/json", "{not json")
        .await;
    assert_eq!(garbage.status, 500);
    assert!(garbage.content_type.starts_with("text/plain"));
    // JSON, but not a request object: a parse error object.
    let scalar = rpc.post(&json!(42)).await;
    assert_eq!(scalar.status, 200);
    assert_eq!(scalar.body["error"]["code"], -32700);
    assert_eq!(
        scalar.body["error"]["message"],
        "request is not a JSON object"
    );
    assert_eq!(scalar.body["id"], Value::Null);

    let unknown = rpc
        .post(&json!({"jsonrpc": "2.0", "id": "abc", "method": "getEvents2"}))
        .await;
    assert_eq!(unknown.body["id"], "abc");
    assert_eq!(unknown.body["error"]["code"], -32601);
    assert_eq!(unknown.body["error"]["message"], "method not found");

    let old = rpc
        .post(&json!({"jsonrpc": "1.0", "id": 7, "method": "getHealth"}))
        .await;
    assert_eq!(old.body["error"]["code"], -32600);
    assert_eq!(old.body["id"], 7);

    let batch = rpc
        .post(&json!([
            {"jsonrpc": "2.0", "id": 1, "method": "getHealth"},
            {"jsonrpc": "2.0", "id": 2, "method": "getLatestLedger"},
            {"jsonrpc": "2.0", "method": "getHealth"},
        ]))
        .await;
    let replies = batch
        .body
        .as_array()
        .unwrap_or_else(|| panic!("{}", batch.body));
    assert_eq!(replies.len(), 2, "no reply to a notification");
    assert_eq!(replies[0]["id"], 1);
    assert_eq!(replies[0]["result"]["status"], "healthy");
    assert_eq!(replies[1]["id"], 2);

    let notification = rpc
        .post(&json!({"jsonrpc": "2.0", "method": "getHealth"}))
        .await;
    assert_eq!(notification.status, 204);

    let positional = rpc
        .post(&json!({"jsonrpc": "2.0", "id": 3, "method": "getTransaction", "params": ["ab"]}))
        .await;
    assert_eq!(positional.body["error"]["code"], -32602);

    assert_eq!(http.get("/rpc").await.status, 405);
    let form = http
        .send_raw(
            "POST",
            "/rpc",
            "text/plain",
            r#"{"jsonrpc":"2.0","id":1,"method":"getHealth"}"#,
        )
        .await;
    assert_eq!(form.status, 415);
    assert_eq!(
        rpc.call("getHealth", json!(null)).await.content_type,
        "application/json"
    );
}

#[tokio::test]
async fn horizon_and_rpc_are_two_views_of_one_ledger() {
    let sim = start().await;
    let rpc = Rpc::new(&sim);
    let horizon = Horizon::new(&sim);
    let pair = Pair::new(&sim, "rpc one ledger", 100 * XLM);
    let network_id = sim.network_id();
    // Submitted through Horizon, seen through RPC.
    let first = pair.next_payment(&sim, XLM);
    let first_hash = hash_of(&first, network_id);
    assert_eq!(horizon.submit_async(&first).await.status, 201);
    assert_eq!(
        rpc.send(&first).await["status"],
        "DUPLICATE",
        "one queue behind both"
    );
    let closed = sim.close_ledger();
    let seen = rpc.transaction(&first_hash).await;
    assert_eq!(seen["status"], "SUCCESS");
    assert_eq!(as_u32(&seen["ledger"]), closed.sequence);
    // Submitted through RPC, seen through Horizon.
    let second = signed(
        &pair.payment(pair.alice_sequence + 2, XLM),
        network_id,
        &[&pair.alice],
    );
    let second_hash = hash_of(&second, network_id);
    assert_eq!(rpc.send(&second).await["status"], "PENDING");
    sim.close_ledger();
    let reply = horizon.transaction(&second_hash).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["successful"], true);
    let (entry, _) = rpc.account(&account(&pair.alice)).await;
    let on_horizon = horizon.account(&account(&pair.alice)).await;
    assert_eq!(
        entry.map(|e| e.seq_num.0.to_string()),
        on_horizon.body["sequence"].as_str().map(str::to_owned)
    );
    assert_eq!(sim.balance(account(&pair.bob)), Some(12 * XLM));
}
