//! The token goes away and comes back: signerd answers UNAVAILABLE with a clear message, health
//! says NOT_SERVING, and once the token is back signerd reconnects by itself and signs again.

use signer_proto::v1 as pb;
use signer_testkit::{Grant, SignerdOptions, SignerdProcess};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn token_removed_then_restored_recovers_without_restart() {
    let signerd = SignerdProcess::start(SignerdOptions {
        acl: vec![Grant::keys("gateway", &["wallet-*"])],
        extra_toml: signer_testkit::vector_policy("*"),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    signer_testkit::create_key(&mut client, "wallet-1").await;
    let vector = signer_testkit::vectors::first();
    let (xdr, passphrase) = (vector.envelope_xdr(), vector.network_passphrase);
    let request = pb::SignTransactionRequest {
        key_id: "wallet-1".into(),
        envelope_xdr: xdr,
        network_passphrase: passphrase,
    };
    client
        .sign_transaction(request.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        signerd.health("gateway").await.ok(),
        Some(ServingStatus::Serving)
    );

    // Pull the token: SoftHSM keeps each token in a directory of its own.
    let token_dir = signerd.token.token_dir.clone();
    let pulled = signerd.dir.path().join("pulled-tokens");
    std::fs::rename(&token_dir, &pulled).unwrap_or_else(|e| panic!("{e}"));

    signerd
        .wait_for_health("gateway", ServingStatus::NotServing)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let status = client
        .sign_transaction(request.clone())
        .await
        .err()
        .unwrap_or_else(|| panic!("signed without a token"));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("token unavailable"),
        "{}",
        status.message()
    );
    let status = client
        .list_keys(pb::ListKeysRequest::default())
        .await
        .err()
        .unwrap_or_else(|| panic!("listed without a token"));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Put it back: signerd reconnects on its own.
    std::fs::rename(&pulled, &token_dir).unwrap_or_else(|e| panic!("{e}"));
    signerd
        .wait_for_health("gateway", ServingStatus::Serving)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client
        .sign_transaction(request)
        .await
        .unwrap_or_else(|e| panic!("after recovery: {e}"));
    assert!(signerd.log().contains("pkcs11 token lost"));
}
