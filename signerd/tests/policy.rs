//! Every policy rule accepts the right transaction and refuses the wrong one, with the rule named
//! in the response and in the audit record (found by the request id the caller sent).
//!
//! The second half attacks the promises one by one as a caller with a valid certificate would:
//! blocking another account's sequence numbers, letting another account's payment ride along,
//! signing operations that outlive every time bound, invalidating a signed transaction with a
//! sequence precondition, and filling the sequence guard.

use signer_proto::v1 as pb;
use signer_proto::v1::signer_client::SignerClient;
use signer_testkit::stellar::{
    Tx, account_merge, add_signer, bump_sequence, create_account, invoke_contract, key_bytes, now,
    payment, sell_offer, set_home_domain, with_source,
};
use signer_testkit::{Grant, SignerdOptions, SignerdProcess, TESTNET, with_request_id};
use tonic::Code;
use tonic::transport::Channel;

const PUBNET: &str = "Public Global Stellar Network ; September 2015";
const FUTURENET: &str = "Test SDF Future Network ; October 2022";

struct Fixture {
    signerd: SignerdProcess,
    client: SignerClient<Channel>,
    key: [u8; 32],
    next_request: std::cell::Cell<u32>,
}

impl Fixture {
    async fn start(extra_toml: &str) -> Fixture {
        Fixture::start_with(SignerdOptions {
            extra_toml: extra_toml.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// A signerd with `options` (the ACL defaults to identity `gateway` on every key) and key
    /// `wallet-1`.
    async fn start_with(mut options: SignerdOptions) -> Fixture {
        if options.acl.is_empty() {
            let mut grant = Grant::keys("gateway", &["*"]);
            grant.blind_sign = true;
            options.acl.push(grant);
        }
        let signerd = SignerdProcess::start(options)
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

    /// Creates `key_id` and returns its account.
    async fn key(&mut self, key_id: &str) -> [u8; 32] {
        key_bytes(&signer_testkit::create_key(&mut self.client, key_id).await)
    }

    /// Stops signerd with SIGTERM and starts it again on the same log and token.
    async fn restart(&mut self) {
        let status = self
            .signerd
            .terminate()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(status.success(), "{status}");
        self.signerd
            .launch()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        self.client = self
            .signerd
            .client("gateway")
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Asserts `key_id` may sign `xdr` on `network`.
    async fn accepts_as(&mut self, what: &str, key_id: &str, xdr: Vec<u8>, network: &str) {
        let (_, result) = self.sign_as(key_id, xdr, network).await;
        if let Err(status) = result {
            panic!("{what}: refused: {status:?}");
        }
    }

    /// Asserts `key_id` may not sign `xdr` on testnet, refused by `rule` with `code`, named in
    /// the response and in a `denied` audit record.
    async fn refuses_as(&mut self, what: &str, key_id: &str, xdr: Vec<u8>, rule: &str, code: Code) {
        let (request_id, result) = self.sign_as(key_id, xdr, TESTNET).await;
        let status = match result {
            Ok(_) => panic!("{what}: signed, but {rule} should have refused"),
            Err(status) => status,
        };
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(&format!("policy {rule}:")),
            "{what}: response does not name {rule}: {}",
            status.message()
        );
        let records = self
            .signerd
            .audit_records_for(&request_id)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            records.iter().any(|r| {
                r.decision == Some(signerd::audit::record::Decision::Denied)
                    && r.rule.as_deref() == Some(rule)
            }),
            "{what}: no denied record naming {rule}: {records:?}"
        );
    }

    /// The audit records carrying `request_id`, as raw JSON (every member, also new ones).
    fn raw_audit_records_for(&self, request_id: &str) -> Vec<serde_json::Value> {
        let mut found = Vec::new();
        let files = signerd::audit::reader::log_files(&self.signerd.audit_dir())
            .unwrap_or_else(|e| panic!("{e}"));
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
            for line in text.lines() {
                let record: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                if record["request_id"] == request_id {
                    found.push(record);
                }
            }
        }
        found
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
operations = ["payment", "set_options", "account_merge"]
allow_signer_changes = true

[[policy.keys]]
pattern = "settings-*"
operations = ["set_options"]

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
    f.accepts("create_account", tx(1, create_account([4; 32], 20_000_000)))
        .await;
    for (seq, what, op) in [
        (
            2,
            "set_options (not listed by default)",
            set_home_domain("example.com"),
        ),
        (3, "set_options adding a signer", add_signer([5; 32])),
        (4, "account_merge", account_merge([5; 32])),
    ] {
        f.refuses(what, tx(seq, op), TESTNET, "operation_type")
            .await;
    }

    // The same operations are fine for a key whose policy lists them.
    let treasury = f.key("treasury-1").await;
    for (seq, op) in [(1, account_merge([5; 32])), (2, add_signer([5; 32]))] {
        let mut tx = Tx::new(treasury, seq);
        tx.operations = vec![op];
        f.accepts_as("treasury override", "treasury-1", tx.xdr(), TESTNET)
            .await;
    }
    // Listing set_options allows harmless ones; signer changes need allow_signer_changes.
    let settings = f.key("settings-1").await;
    let mut harmless = Tx::new(settings, 1);
    harmless.operations = vec![set_home_domain("example.com")];
    f.accepts_as(
        "harmless set_options",
        "settings-1",
        harmless.xdr(),
        TESTNET,
    )
    .await;
    let mut authority = Tx::new(settings, 2);
    authority.operations = vec![add_signer([5; 32])];
    f.refuses_as(
        "set_options adding a signer",
        "settings-1",
        authority.xdr(),
        "operation_type",
        Code::PermissionDenied,
    )
    .await;

    // A narrower list refuses even the default operations it leaves out.
    let payer = f.key("payments-only-1").await;
    f.accepts_as(
        "payment",
        "payments-only-1",
        Tx::new(payer, 1).xdr(),
        TESTNET,
    )
    .await;
    let mut pay = Tx::new(payer, 2);
    pay.operations = vec![create_account([4; 32], 20_000_000)];
    f.refuses_as(
        "create_account outside the list",
        "payments-only-1",
        pay.xdr(),
        "operation_type",
        Code::PermissionDenied,
    )
    .await;
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

// ---------------------------------------------------------------------------------------------
// Attacks by a caller holding a valid certificate.
// ---------------------------------------------------------------------------------------------

/// A caller allowed only a wallet key pays the fee of a junk transaction "from" the treasury at
/// the treasury's next sequence numbers. The fee source reserves nothing: the treasury's real
/// transactions at those sequences are still signed, also after a restart.
#[tokio::test]
async fn a_fee_payer_cannot_block_the_treasurys_next_sequence_numbers() {
    let mut f = Fixture::start("").await;
    let treasury = f.key("treasury-1").await;
    let wallet = f.key;
    for sequence in [100, 101] {
        let mut junk = Tx::new(treasury, sequence);
        junk.memo = Some("junk".into());
        f.accepts_as(
            "the wallet pays the fee of a junk treasury transaction",
            "wallet-1",
            junk.fee_bump_xdr(wallet, 400),
            TESTNET,
        )
        .await;
    }
    f.accepts_as(
        "the treasury's real transaction at 100",
        "treasury-1",
        Tx::new(treasury, 100).xdr(),
        TESTNET,
    )
    .await;
    f.restart().await;
    f.accepts_as(
        "the treasury's real transaction at 101, after a restart",
        "treasury-1",
        Tx::new(treasury, 101).xdr(),
        TESTNET,
    )
    .await;
    // The treasury's own signatures still reserve: a second transaction at 100 is refused.
    let mut second = Tx::new(treasury, 100);
    second.memo = Some("second".into());
    f.refuses_as(
        "a second treasury transaction at 100",
        "treasury-1",
        second.xdr(),
        "sequence_guard",
        Code::PermissionDenied,
    )
    .await;
}

/// A co-signer key (policy without the source rule) signs a junk transaction from the treasury
/// in which it is only an operation source: that reserves nothing either.
#[tokio::test]
async fn an_operation_source_cannot_block_the_treasurys_next_sequence_number() {
    let mut f =
        Fixture::start("\n[[policy.keys]]\npattern = \"cosigner-*\"\nrequire_source = false\n")
            .await;
    let treasury = f.key("treasury-1").await;
    let cosigner = f.key("cosigner-1").await;
    let mut junk = Tx::new(treasury, 200);
    junk.operations = vec![with_source(payment([3; 32], 1), cosigner)];
    f.accepts_as(
        "the co-signer signs junk",
        "cosigner-1",
        junk.xdr(),
        TESTNET,
    )
    .await;
    f.restart().await;
    f.accepts_as(
        "the treasury's real transaction at 200, after a restart",
        "treasury-1",
        Tx::new(treasury, 200).xdr(),
        TESTNET,
    )
    .await;
}

/// One account has one sequence per network: a transaction signed on testnet does not block
/// another transaction at the same sequence on futurenet, also after a restart.
#[tokio::test]
async fn the_sequence_guard_is_scoped_by_network() {
    let mut f = Fixture::start(&format!(
        "\n[[policy.keys]]\npattern = \"wallet-*\"\nnetworks = [{TESTNET:?}, {FUTURENET:?}]\n"
    ))
    .await;
    let key = f.key;
    let on_testnet = Tx::new(key, 300);
    let mut on_futurenet = Tx::new(key, 300);
    on_futurenet.memo = Some("futurenet".into());
    f.accepts_as("testnet", "wallet-1", on_testnet.xdr(), TESTNET)
        .await;
    f.accepts_as(
        "futurenet, same sequence",
        "wallet-1",
        on_futurenet.xdr(),
        FUTURENET,
    )
    .await;
    f.restart().await;
    let mut again = Tx::new(key, 301);
    f.accepts_as("testnet 301", "wallet-1", again.xdr(), TESTNET)
        .await;
    again.memo = Some("futurenet".into());
    f.accepts_as(
        "futurenet 301 after a restart",
        "wallet-1",
        again.xdr(),
        FUTURENET,
    )
    .await;
    // Within one network the guard still holds, across the restart.
    f.refuses_as(
        "another testnet transaction at 300",
        "wallet-1",
        on_futurenet.xdr(),
        "sequence_guard",
        Code::PermissionDenied,
    )
    .await;
}

/// A signature by K counts for the whole transaction: K being the source of one operation must
/// not let a payment from another account B (where K is also a signer) ride along, in either
/// direction. Only a per-key list of other accounts widens it.
#[tokio::test]
async fn a_payment_from_another_account_cannot_ride_along() {
    let mut f = Fixture::start("").await;
    let other = f.key("wallet-2").await;
    let key = f.key;
    let mut from_other = Tx::new(other, 1);
    from_other.operations = vec![with_source(payment([3; 32], 1), key), payment([3; 32], 1)];
    f.refuses(
        "K's operation in B's transaction, with B's own payment",
        from_other.xdr(),
        TESTNET,
        "source",
    )
    .await;
    let mut from_key = Tx::new(key, 1);
    from_key.operations = vec![payment([3; 32], 1), with_source(payment([3; 32], 1), other)];
    f.refuses(
        "K's transaction carrying a payment from B",
        from_key.xdr(),
        TESTNET,
        "source",
    )
    .await;
    // A multiplexed id of K's own account is K's account.
    let mut muxed = from_key.clone();
    muxed.operations = vec![payment([3; 32], 1)];
    let mut envelope = muxed.v1();
    envelope.tx.source_account =
        stellar_xdr::MuxedAccount::MuxedEd25519(stellar_xdr::MuxedAccountMed25519 {
            id: 7,
            ed25519: stellar_xdr::Uint256(key),
        });
    let muxed_xdr = stellar_xdr::WriteXdr::to_xdr(
        &stellar_xdr::TransactionEnvelope::Tx(envelope),
        stellar_xdr::Limits::none(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    f.accepts("K's own account, multiplexed", muxed_xdr).await;
}

/// The per-key list of other accounts a key may act for.
#[tokio::test]
async fn a_key_may_act_for_the_accounts_its_policy_lists() {
    let other = [0x42; 32];
    let other_id = stellar_strkey::ed25519::PublicKey(other).to_string();
    let mut f = Fixture::start(&format!(
        "\n[[policy.keys]]\npattern = \"cosigner-*\"\naccounts = [{other_id:?}]\n"
    ))
    .await;
    let cosigner = f.key("cosigner-1").await;
    let mut for_other = Tx::new(other, 1);
    for_other.operations = vec![
        payment([3; 32], 1),
        with_source(payment([3; 32], 1), cosigner),
    ];
    f.accepts_as("listed account", "cosigner-1", for_other.xdr(), TESTNET)
        .await;
    let mut for_stranger = Tx::new([0x43; 32], 1);
    for_stranger.operations = vec![payment([3; 32], 1)];
    f.refuses_as(
        "unlisted account",
        "cosigner-1",
        for_stranger.xdr(),
        "source",
        Code::PermissionDenied,
    )
    .await;
}

/// Operations that outlive every time bound or lock the account are refused by default:
/// `bump_sequence` to 2^63-1, offers at any price, a token `approve` through
/// `invoke_host_function`. A key whose policy lists them (and, for a contract call, the contract
/// and function) may sign them, and the audit record
/// names what it cannot summarise (with the operation's XDR) rather than dropping it.
#[tokio::test]
async fn dangerous_operations_need_an_explicit_listing() {
    let mut f = Fixture::start(
        "\n[[policy.keys]]\npattern = \"desk-*\"\noperations = [\"payment\", \"bump_sequence\", \"manage_sell_offer\", \"invoke_host_function\"]\n\
         [policy.keys.soroban]\n[[policy.keys.soroban.contracts]]\ncontract = \"CAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQMCJ\"\nfunctions = [\"approve\"]\n",
    )
    .await;
    let key = f.key;
    // The bump comes last: once signed, it holds every later sequence of the account.
    let dangerous = [
        ("an offer at any price", sell_offer([6; 32], 1_000_000_000)),
        (
            "a token approve",
            invoke_contract([8; 32], "approve", [9; 32]),
        ),
        ("bump_sequence to 2^63-1", bump_sequence(i64::MAX)),
    ];
    for (i, (what, op)) in dangerous.iter().enumerate() {
        let mut tx = Tx::new(key, 10 + i as i64);
        tx.operations = vec![op.clone()];
        f.refuses(what, tx.xdr(), TESTNET, "operation_type").await;
    }
    let desk = f.key("desk-1").await;
    for (i, (what, op)) in dangerous.iter().enumerate() {
        let mut tx = Tx::new(desk, 10 + i as i64);
        tx.operations = vec![op.clone()];
        let (request_id, result) = f.sign_as("desk-1", tx.xdr(), TESTNET).await;
        if let Err(status) = result {
            panic!("{what} for a key listing it: {status:?}");
        }
        let records = f.raw_audit_records_for(&request_id);
        let op = &records[0]["operations"][0];
        assert!(
            op["not_summarised"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: the record does not name what it leaves out: {op}"
        );
        assert!(op["xdr"].as_str().is_some(), "{what}: {op}");
    }
    // The bump to 2^63-1 consumes every later sequence: the guard holds them all.
    f.refuses_as(
        "a payment after the bump",
        "desk-1",
        Tx::new(desk, 1_000).xdr(),
        "sequence_guard",
        Code::PermissionDenied,
    )
    .await;
}

/// Each key has a maximum fee; the fee source of a fee bump is bound by it too.
#[tokio::test]
async fn fees_above_the_keys_maximum_are_refused() {
    let mut f =
        Fixture::start("\n[[policy.keys]]\npattern = \"generous-*\"\nmax_fee_stroops = 5000000\n")
            .await;
    let key = f.key;
    let mut expensive = Tx::new(key, 1);
    expensive.fee = 2_000_000;
    f.refuses("fee 0.2 XLM", expensive.xdr(), TESTNET, "fee")
        .await;
    f.refuses(
        "a fee bump paying 0.5 XLM",
        Tx::new([9; 32], 1).fee_bump_xdr(key, 5_000_000),
        TESTNET,
        "fee",
    )
    .await;
    expensive.fee = 1_000_000;
    f.accepts("fee at the default maximum", expensive.xdr())
        .await;
    let generous = f.key("generous-1").await;
    let mut tx = Tx::new(generous, 1);
    tx.fee = 2_000_000;
    f.accepts_as(
        "a key with a higher maximum",
        "generous-1",
        tx.xdr(),
        TESTNET,
    )
    .await;
}

/// A transaction at S + 1 with `min_seq_num` S - 1 is valid now and, once applied, kills a
/// pending transaction at S. Sequence preconditions are refused by default; where a key allows
/// them, the guard reserves every sequence the transaction can consume.
#[tokio::test]
async fn a_sequence_precondition_cannot_invalidate_a_signed_transaction() {
    let mut f = Fixture::start(
        "\n[[policy.keys]]\npattern = \"flexible-*\"\nallow_sequence_preconditions = true\n",
    )
    .await;
    let key = f.key;
    let mut jumper = Tx::new(key, 11);
    jumper.min_seq_num = Some(9);
    f.refuses(
        "min_seq_num by default",
        jumper.xdr(),
        TESTNET,
        "preconditions",
    )
    .await;
    let mut aged = Tx::new(key, 11);
    aged.min_seq_age = 60;
    f.refuses(
        "min_seq_age by default",
        aged.xdr(),
        TESTNET,
        "preconditions",
    )
    .await;

    let flexible = f.key("flexible-1").await;
    let mut jumper = Tx::new(flexible, 11);
    jumper.min_seq_num = Some(9);
    f.accepts_as(
        "S + 1 with min_seq_num S - 1",
        "flexible-1",
        jumper.xdr(),
        TESTNET,
    )
    .await;
    f.refuses_as(
        "a transaction at S, which the signed one can kill",
        "flexible-1",
        Tx::new(flexible, 10).xdr(),
        "sequence_guard",
        Code::PermissionDenied,
    )
    .await;
    f.accepts_as(
        "the same transaction again",
        "flexible-1",
        jumper.xdr(),
        TESTNET,
    )
    .await;
    f.accepts_as(
        "a transaction at S + 2, after the range",
        "flexible-1",
        Tx::new(flexible, 12).xdr(),
        TESTNET,
    )
    .await;
    // The range survives a restart.
    f.restart().await;
    f.refuses_as(
        "a transaction at S after a restart",
        "flexible-1",
        Tx::new(flexible, 10).xdr(),
        "sequence_guard",
        Code::PermissionDenied,
    )
    .await;
}

/// When the guard is full, new transactions are refused (`RESOURCE_EXHAUSTED`, rule
/// `guard_full`); nothing unexpired is ever evicted, also for keys without time bounds.
#[tokio::test]
async fn a_full_sequence_guard_refuses_and_never_evicts() {
    let mut f = Fixture::start_with(SignerdOptions {
        audit_toml: "guard_max_entries = 3".into(),
        extra_toml: "\n[[policy.keys]]\npattern = \"untimed-*\"\nrequire_time_bounds = false\n"
            .into(),
        ..Default::default()
    })
    .await;
    let untimed = f.key("untimed-1").await;
    let without_bounds = |sequence: i64, memo: &str| {
        let mut tx = Tx::new(untimed, sequence);
        tx.time_bounds = None;
        tx.memo = Some(memo.into());
        tx.xdr()
    };
    for sequence in 1..=2 {
        f.accepts_as(
            "untimed",
            "untimed-1",
            without_bounds(sequence, "first"),
            TESTNET,
        )
        .await;
    }
    f.accepts("with time bounds", Tx::new(f.key, 1).xdr()).await;
    f.refuses_as(
        "a fourth transaction without time bounds",
        "untimed-1",
        without_bounds(3, "first"),
        "guard_full",
        Code::ResourceExhausted,
    )
    .await;
    f.refuses_as(
        "a fourth transaction with time bounds",
        "wallet-1",
        Tx::new(f.key, 2).xdr(),
        "guard_full",
        Code::ResourceExhausted,
    )
    .await;
    // The oldest entry was not forgotten to make room.
    f.refuses_as(
        "another transaction at the oldest sequence",
        "untimed-1",
        without_bounds(1, "second"),
        "sequence_guard",
        Code::PermissionDenied,
    )
    .await;
    // Re-signing what is held still works.
    f.accepts_as(
        "the same transaction",
        "untimed-1",
        without_bounds(1, "first"),
        TESTNET,
    )
    .await;
    let metrics = f
        .signerd
        .metrics()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        metrics.contains("signerd_denials_total{rule=\"guard_full\"} 2"),
        "{metrics}"
    );
}

/// One identity filling its share of the guard does not stop another identity.
#[tokio::test]
async fn one_identity_cannot_fill_the_guard_for_everyone() {
    let mut f = Fixture::start_with(SignerdOptions {
        acl: vec![
            Grant::keys("gateway", &["wallet-*"]),
            Grant::keys("noisy", &["noisy-*"]),
        ],
        policy_toml: Some(format!(
            "[policy]\nnetworks = [{TESTNET:?}]\nguard_max_entries_per_identity = 2"
        )),
        ..Default::default()
    })
    .await;
    let mut noisy = f
        .signerd
        .client("noisy")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let noisy_key = key_bytes(&signer_testkit::create_key(&mut noisy, "noisy-1").await);
    let sign = |sequence: i64| pb::SignTransactionRequest {
        key_id: "noisy-1".into(),
        envelope_xdr: Tx::new(noisy_key, sequence).xdr(),
        network_passphrase: TESTNET.into(),
    };
    for sequence in 1..=2 {
        noisy
            .sign_transaction(sign(sequence))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let status = noisy
        .sign_transaction(sign(3))
        .await
        .err()
        .unwrap_or_else(|| panic!("a third entry for the noisy identity"));
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("policy guard_full:") && status.message().contains("noisy"),
        "{}",
        status.message()
    );
    for sequence in 1..=2 {
        f.accepts("another identity", Tx::new(f.key, sequence).xdr())
            .await;
    }
}
