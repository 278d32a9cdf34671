//! End to end over real mTLS against a real signerd on a real SoftHSM token: keys are created and
//! listed, every reference vector hashes as the reference SDK says, and signatures verify.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use signer_proto::v1 as pb;
use signer_testkit::{Grant, SignerdOptions, SignerdProcess, create_key, vectors};

async fn signerd(acl: Vec<Grant>) -> SignerdProcess {
    SignerdProcess::start(SignerdOptions {
        acl,
        extra_toml: signer_testkit::vector_policy("*"),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key_bytes) = <[u8; 32]>::try_from(public_key) else {
        return false;
    };
    let Ok(sig_bytes) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    VerifyingKey::from_bytes(&key_bytes).is_ok_and(|key| {
        key.verify(message, &Signature::from_bytes(&sig_bytes))
            .is_ok()
    })
}

fn create(key_id: &str) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        key_id: key_id.into(),
        backend: String::new(),
    }
}

#[tokio::test]
async fn create_key_is_idempotent_and_keys_list_in_pages() {
    let signerd = signerd(vec![Grant::keys("gateway", &["wallet-*"])]).await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    let first = client
        .create_key(create("wallet-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(first.created);
    let key = first.key.unwrap_or_else(|| panic!("no key"));
    assert_eq!(key.backend, "pkcs11");
    assert_eq!(key.public_key_bytes.len(), 32);
    assert!(key.public_key.starts_with('G') && key.public_key.len() == 56);

    let again = client
        .create_key(create("wallet-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(!again.created, "second CreateKey must not create");
    assert_eq!(
        again.key.map(|k| k.public_key),
        Some(key.public_key.clone())
    );

    let fetched = client
        .get_key(pb::GetKeyRequest {
            key_id: "wallet-1".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(fetched.key.map(|k| k.public_key), Some(key.public_key));

    for i in 2..=5 {
        client
            .create_key(create(&format!("wallet-{i}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut listed = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_keys(pb::ListKeysRequest {
                page_size: 2,
                page_token: page_token.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner();
        assert!(page.keys.len() <= 2);
        listed.extend(page.keys.into_iter().map(|k| k.key_id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        listed,
        ["wallet-1", "wallet-2", "wallet-3", "wallet-4", "wallet-5"]
    );
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn concurrent_create_key_for_one_id_makes_one_key() {
    let signerd = signerd(vec![Grant::keys("gateway", &["wallet-*"])]).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut client = signerd
            .client("gateway")
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        tasks.push(tokio::spawn(async move {
            client.create_key(create("wallet-race")).await
        }));
    }
    let mut created = 0;
    let mut public_keys = std::collections::HashSet::new();
    for task in futures::future::join_all(tasks).await {
        let response = task
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner();
        created += usize::from(response.created);
        public_keys.insert(response.key.map(|k| k.public_key).unwrap_or_default());
    }
    assert_eq!(created, 1, "exactly one request creates the key");
    assert_eq!(public_keys.len(), 1, "everyone gets the same key");
}

#[tokio::test]
async fn keys_survive_a_restart_through_the_index() {
    let mut signerd = signerd(vec![Grant::keys("gateway", &["wallet-*"])]).await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let created = create_key(&mut client, "wallet-keep").await;
    let status = signerd
        .terminate()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        status.success(),
        "SIGTERM must end signerd cleanly: {status}"
    );
    signerd.launch().await.unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let again = client
        .create_key(create("wallet-keep"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(
        !again.created,
        "the restarted signerd must find the key in its index"
    );
    assert_eq!(again.key.map(|k| k.public_key), Some(created.public_key));
}

#[tokio::test]
async fn every_reference_vector_hashes_like_the_sdk_and_the_signature_verifies() {
    let signerd = signerd(vec![Grant::keys("wallet-service", &["vectors"])]).await;
    let mut client = signerd
        .client("wallet-service")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let key = create_key(&mut client, "vectors").await;

    let mut checked = 0;
    for vector in vectors::all() {
        let name = &vector.name;
        let response = client
            .sign_transaction(pb::SignTransactionRequest {
                key_id: "vectors".into(),
                envelope_xdr: vector.envelope_xdr(),
                network_passphrase: vector.network_passphrase.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .into_inner();
        assert_eq!(
            hex::encode(&response.tx_hash),
            vector.tx_hash,
            "{name}: signerd's hash differs from the reference SDK's"
        );
        if vector.is_fee_bump() {
            // The HSM key is not the fee source, so it signs the inner transaction.
            assert_eq!(
                response.signed_payload(),
                pb::SignedPayload::InnerTransaction,
                "{name}"
            );
            assert_ne!(response.signed_hash, response.tx_hash, "{name}");
        } else {
            assert_eq!(
                response.signed_payload(),
                pb::SignedPayload::Transaction,
                "{name}"
            );
            assert_eq!(response.signed_hash, response.tx_hash, "{name}");
        }
        assert_eq!(response.hint, key.public_key_bytes[28..], "{name}: hint");
        assert!(
            verify(
                &key.public_key_bytes,
                &response.signed_hash,
                &response.signature
            ),
            "{name}: the HSM signature does not verify"
        );
        checked += 1;
    }
    assert!(checked >= 13, "only {checked} vectors");
}

#[tokio::test]
async fn blind_signing_works_with_the_grant() {
    let mut grant = Grant::keys("ops", &["ops-*"]);
    grant.blind_sign = true;
    let signerd = signerd(vec![grant]).await;
    let mut client = signerd
        .client("ops")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let key = create_key(&mut client, "ops-1").await;
    let hash = [0x5a; 32];
    let signed = client
        .sign_hash(pb::SignHashRequest {
            key_id: "ops-1".into(),
            hash: hash.to_vec(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(verify(&key.public_key_bytes, &hash, &signed.signature));
    assert!(signerd.log().contains("blind signature issued"));
}

#[tokio::test]
async fn concurrent_signing_on_many_connections_all_verify() {
    let signerd = signerd(vec![Grant::keys("gateway", &["wallet-*"])]).await;
    let mut client = signerd
        .client("gateway")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let key = create_key(&mut client, "wallet-c").await;
    let vector = vectors::first();
    let xdr = vector.envelope_xdr();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = signerd
            .client("gateway")
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let xdr = xdr.clone();
        let passphrase = vector.network_passphrase.clone();
        tasks.push(tokio::spawn(async move {
            let mut responses = Vec::new();
            for _ in 0..25 {
                let request = pb::SignTransactionRequest {
                    key_id: "wallet-c".into(),
                    envelope_xdr: xdr.clone(),
                    network_passphrase: passphrase.clone(),
                };
                responses.push(
                    client
                        .sign_transaction(request)
                        .await
                        .map(|r| r.into_inner()),
                );
            }
            responses
        }));
    }
    let mut count = 0;
    for task in futures::future::join_all(tasks).await {
        for response in task.unwrap_or_else(|e| panic!("{e}")) {
            let response = response.unwrap_or_else(|e| panic!("{e}"));
            assert!(verify(
                &key.public_key_bytes,
                &response.signed_hash,
                &response.signature
            ));
            count += 1;
        }
    }
    assert_eq!(count, 200);
}
