//! Every policy rule accepts the right transaction and refuses the wrong one, with the rule named
//! in the response and in the audit record (found by the request id the caller sent).

use signer_proto::v1 as pb;
use signer_proto::v1::signer_client::SignerClient;
use signer_testkit::stellar::{
    Tx, account_merge, add_signer, create_account, key_bytes, now, payment, set_home_domain,
    with_source,
};
use signer_testkit::{Grant, SignerdOptions, SignerdProcess, TESTNET, with_request_id};
use tonic::Code;
use tonic::transport::Channel;

const PUBNET: &str = "Public Global Stellar Network ; September 2015";

struct Fixture {
    signerd: SignerdProcess,
    client: SignerClient<Channel>,
    key: [u8; 32],
    next_request: std::cell::Cell<u32>,
}

impl Fixture {
    async fn start(extra_toml: &str) -> Fixture {
        let mut grant = Grant::keys("gateway", &["*"]);
        grant.blind_sign = true;
        let signerd = SignerdProcess::start(SignerdOptions {
            acl: vec![grant],
            extra_toml: extra_toml.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let mut client = signerd
            .client("gateway")
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let key = signer_testkit::create_key(&mut client, "wallet-1").await;
        Fixture {
            signerd,
            client,
            key: key_bytes(&key),
            next_request: std::cell::Cell::new(0),
        }
    }

    async fn sign_as(
        &mut self,
        key_id: &str,
        xdr: Vec<u8>,
        network: &str,
    ) -> (String, Result<pb::SignTransactionResponse, tonic::Status>) {
        let n = self.next_request.get() + 1;
        self.next_request.set(n);
        let request_id = format!("policy-test-{n}");
        let request = pb::SignTransactionRequest {
            key_id: key_id.into(),
            envelope_xdr: xdr,
            network_passphrase: network.into(),
        };
        let result = self
            .client
            .sign_transaction(with_request_id(request, &request_id))
            .await
            .map(|r| r.into_inner());
        (request_id, result)
    }

    async fn sign(
        &mut self,
        xdr: Vec<u8>,
        network: &str,
    ) -> (String, Result<pb::SignTransactionResponse, tonic::Status>) {
        self.sign_as("wallet-1", xdr, network).await
    }

    /// Asserts an accepted request, with a `signed` audit record.
    async fn accepts(&mut self, what: &str, xdr: Vec<u8>) {
        let (request_id, result) = self.sign(xdr, TESTNET).await;
        if let Err(status) = result {
            panic!("{what}: refused: {status:?}");
        }
        let records = self
            .signerd
            .audit_records_for(&request_id)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            records
                .iter()
                .any(|r| r.decision == Some(signerd::audit::record::Decision::Signed)),
            "{what}: no signed record: {records:?}"
        );
    }

    /// Asserts a refusal by `rule`, named in the response and in the audit record.
    async fn refuses(&mut self, what: &str, xdr: Vec<u8>, network: &str, rule: &str) {
        let (request_id, result) = self.sign(xdr, network).await;
        let status = match result {
            Ok(_) => panic!("{what}: signed, but {rule} should have refused"),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
        assert!(
            status.message().contains(&format!("policy {rule}:")),
            "{what}: response does not name {rule}: {}",
            status.message()
        );
        let records = self
            .signerd
            .audit_records_for(&request_id)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let [record] = records.as_slice() else {
            panic!("{what}: expected one audit record, got {records:?}");
        };
        assert_eq!(
            record.decision,
            Some(signerd::audit::record::Decision::Denied),
            "{what}"
        );
        assert_eq!(record.rule.as_deref(), Some(rule), "{what}");
        assert!(
            record.reason.as_deref().is_some_and(|r| !r.is_empty()),
            "{what}"
        );
        assert_eq!(record.identity.as_deref(), Some("cn:gateway"), "{what}");
    }
}

#[tokio::test]
async fn network_rule() {
    let mut f = Fixture::start("").await;
    f.accepts("testnet", Tx::new(f.key, 1).xdr()).await;
    f.refuses("public network", Tx::new(f.key, 2).xdr(), PUBNET, "network")
        .await;
}

#[tokio::test]
async fn source_rule() {
    let mut f = Fixture::start("").await;
    let stranger = [9u8; 32];
    f.accepts("key is the transaction source", Tx::new(f.key, 1).xdr())
        .await;
    let mut op_source = Tx::new(stranger, 1);
    op_source.operations = vec![with_source(payment([3; 32], 1), f.key)];
    f.accepts("key is an operation source", op_source.xdr())
        .await;
    f.accepts(
        "key pays the fee bump",
        Tx::new(stranger, 2).fee_bump_xdr(f.key, 400),
    )
    .await;
    f.refuses(
        "key is not involved",
        Tx::new(stranger, 3).xdr(),
        TESTNET,
        "source",
    )
    .await;
    let mut other_op_source = Tx::new(stranger, 4);
    other_op_source.operations = vec![with_source(payment([3; 32], 1), [8; 32])];
    f.refuses(
        "another account is the operation source",
        other_op_source.xdr(),
        TESTNET,
        "source",
    )
    .await;
}

#[tokio::test]
async fn time_bounds_rule() {
    let mut f = Fixture::start("").await;
    let now = now();
    let key = f.key;
    let with_bounds = |seq: i64, bounds: Option<(u64, u64)>| {
        let mut tx = Tx::new(key, seq);
        tx.time_bounds = bounds;
        tx.xdr()
    };
    f.accepts("max_time 250 s ahead", with_bounds(1, Some((0, now + 250))))
        .await;
    f.refuses(
        "no time bounds",
        with_bounds(2, None),
        TESTNET,
        "time_bounds",
    )
    .await;
    f.refuses(
        "max_time 0 (unbounded)",
        with_bounds(3, Some((0, 0))),
        TESTNET,
        "time_bounds",
    )
    .await;
    f.refuses(
        "max_time already past",
        with_bounds(4, Some((0, now - 10))),
        TESTNET,
        "time_bounds",
    )
    .await;
    f.refuses(
        "max_time beyond max_validity",
        with_bounds(5, Some((0, now + 1000))),
        TESTNET,
        "time_bounds",
    )
    .await;
}

#[tokio::test]
async fn operation_type_rule_with_safe_defaults_and_overrides() {
    let overrides = r#"
[[policy.keys]]
pattern = "treasury-*"
allow_account_merge = true
allow_signer_changes = true

[[policy.keys]]
pattern = "payments-only-*"
operations = ["payment"]
"#;
    let mut f = Fixture::start(overrides).await;
    let key = f.key;
    let tx = |seq: i64, op| {
        let mut tx = Tx::new(key, seq);
        tx.operations = vec![op];
        tx.xdr()
    };
    f.accepts(
        "harmless set_options",
        tx(1, set_home_domain("example.com")),
    )
    .await;
    f.accepts("create_account", tx(2, create_account([4; 32], 20_000_000)))
        .await;
    f.refuses(
        "set_options adding a signer",
        tx(3, add_signer([5; 32])),
        TESTNET,
        "operation_type",
    )
    .await;
    f.refuses(
        "account_merge",
        tx(4, account_merge([5; 32])),
        TESTNET,
        "operation_type",
    )
    .await;

    // The same operations are fine for a key whose policy enables them.
    let treasury = key_bytes(&signer_testkit::create_key(&mut f.client, "treasury-1").await);
    for (seq, op) in [(1, account_merge([5; 32])), (2, add_signer([5; 32]))] {
        let mut tx = Tx::new(treasury, seq);
        tx.operations = vec![op];
        let (_, result) = f.sign_as("treasury-1", tx.xdr(), TESTNET).await;
        assert!(result.is_ok(), "treasury override: {result:?}");
    }

    // An allowlist refuses everything else.
    let payer = key_bytes(&signer_testkit::create_key(&mut f.client, "payments-only-1").await);
    let mut pay = Tx::new(payer, 1);
    assert!(
        f.sign_as("payments-only-1", pay.xdr(), TESTNET)
            .await
            .1
            .is_ok()
    );
    pay.sequence = 2;
    pay.operations = vec![create_account([4; 32], 20_000_000)];
    let (_, result) = f.sign_as("payments-only-1", pay.xdr(), TESTNET).await;
    let status = result.err().unwrap_or_else(|| panic!("allowlist ignored"));
    assert!(
        status.message().contains("policy operation_type:"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn sequence_guard_refuses_a_second_transaction_for_a_sequence() {
    let mut f = Fixture::start("").await;
    let first = Tx::new(f.key, 42);
    f.accepts("first transaction for sequence 42", first.xdr())
        .await;
    f.accepts("the identical transaction again", first.xdr())
        .await;
    let mut other = first.clone();
    other.memo = Some("different".into());
    f.refuses(
        "another transaction for sequence 42",
        other.xdr(),
        TESTNET,
        "sequence_guard",
    )
    .await;
    other.sequence = 43;
    f.accepts("the other transaction with sequence 43", other.xdr())
        .await;
    // A fee bump around the signed inner transaction is the same transaction for the guard.
    f.accepts(
        "fee bump of the signed transaction",
        first.fee_bump_xdr(f.key, 500),
    )
    .await;
}

#[tokio::test]
async fn velocity_cap_answers_resource_exhausted() {
    let mut grant = Grant::keys("gateway", &["wallet-*"]);
    grant.blind_sign = true;
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![grant],
        limits_toml: Some(
            "[limits]\nper_identity_per_second = 1000\nper_identity_burst = 1000\nper_key_per_second = 1\nper_key_burst = 3".into(),
        ),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    signer_testkit::create_key(&mut client, "wallet-1").await;
    let mut outcomes = Vec::new();
    for i in 0..10 {
        let request = pb::SignHashRequest {
            key_id: "wallet-1".into(),
            hash: vec![i; 32],
        };
        outcomes.push(
            client
                .sign_hash(with_request_id(request, &format!("burst-{i}")))
                .await,
        );
    }
    let signed = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(
        (3..=4).contains(&signed),
        "burst 3 at 1/s: {signed} of 10 signed"
    );
    let refused = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .collect::<Vec<_>>();
    assert!(
        refused.iter().all(
            |s| s.code() == Code::ResourceExhausted && s.message().contains("policy velocity:")
        )
    );
    let denied = signerd
        .audit_records()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .into_iter()
        .filter(|r| r.rule.as_deref() == Some("velocity"))
        .count();
    assert_eq!(denied, refused.len());
}

#[tokio::test]
async fn the_audit_key_is_reserved_even_for_a_wildcard_acl() {
    let mut f = Fixture::start("").await;
    let (request_id, result) = f
        .sign_as("signerd-audit", Tx::new(f.key, 1).xdr(), TESTNET)
        .await;
    let status = result
        .err()
        .unwrap_or_else(|| panic!("signed with the audit key"));
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("policy reserved_key:"),
        "{}",
        status.message()
    );
    assert_eq!(
        f.signerd
            .audit_records_for(&request_id)
            .unwrap_or_default()
            .len(),
        1
    );
    let blind = f
        .client
        .sign_hash(pb::SignHashRequest {
            key_id: "signerd-audit".into(),
            hash: vec![0; 32],
        })
        .await;
    assert_eq!(blind.err().map(|s| s.code()), Some(Code::PermissionDenied));
    let listed = f
        .client
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(listed.keys.iter().all(|k| k.key_id != "signerd-audit"));
}

#[tokio::test]
async fn signed_records_carry_what_security_teams_need() {
    let mut f = Fixture::start("").await;
    let mut tx = Tx::new(f.key, 77);
    tx.operations = vec![payment([3; 32], 123_456_789)];
    let (request_id, result) = f.sign(tx.xdr(), TESTNET).await;
    let response = result.unwrap_or_else(|e| panic!("{e}"));
    let records = f
        .signerd
        .audit_records_for(&request_id)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let [record] = records.as_slice() else {
        panic!("{records:?}")
    };
    assert_eq!(record.rpc.as_deref(), Some("SignTransaction"));
    assert_eq!(record.key_id.as_deref(), Some("wallet-1"));
    assert_eq!(record.network.as_deref(), Some(TESTNET));
    assert_eq!(
        record.tx_hash.as_deref(),
        Some(hex::encode(&response.tx_hash).as_str())
    );
    assert_eq!(record.sequence.as_deref(), Some("77"));
    assert_eq!(
        record.source_account.as_deref(),
        record.public_key.as_deref()
    );
    let ops = record.operations.clone().unwrap_or_default();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].op_type, "payment");
    assert_eq!(ops[0].asset.as_deref(), Some("native"));
    assert_eq!(ops[0].amount.as_deref(), Some("12.3456789"));
    assert!(
        ops[0]
            .destination
            .as_deref()
            .is_some_and(|d| d.starts_with('G'))
    );
    assert!(!record.time.is_empty());
}
