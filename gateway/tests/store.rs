//! The store against real databases, SQLite and Postgres: the constraints and claims the
//! gateway's guarantees rest on, checked below the HTTP layer.

mod support;

use std::time::Duration;

use futures::future::join_all;
use gateway::model::PaymentId;
use gateway::model::{Actor, ExternalRef, IdempotencyKey, Reason, RequestId, UserStatus};
use gateway::payments::{PaymentStatus, Stroops};
use gateway::store::{
    Accepted, AuditContext, DailyLimits, IdempotencyClaim, NewPayment, Outcome, PaymentRecord,
    Rebuild, SignedEnvelope, SignedTransaction, Store,
};
use support::*;

fn ctx() -> AuditContext {
    AuditContext {
        actor: Actor::Cli,
        request_id: Some(RequestId::generate()),
    }
}

async fn service_api_key(store: &gateway::store::Store) -> gateway::model::ApiKeyId {
    must(
        store
            .create_api_key(
                "t",
                gateway::api_key::Role::Service,
                &must(gateway::api_key::ApiKeySecret::generate()).hash(),
                &AuditContext::cli(),
            )
            .await,
    )
}

/// A signed envelope for store tests.
fn envelope(sequence: i64, hash: &str) -> SignedEnvelope<'_> {
    SignedEnvelope {
        sequence,
        max_time: 1_900_000_000,
        fee: 100,
        hash,
        envelope_xdr: "AAAA",
    }
}

/// The payment as stored now (what a worker reads before a step).
async fn read(store: &Store, id: PaymentId) -> PaymentRecord {
    must(store.payment(id).await).unwrap_or_else(|| panic!("payment {id} missing"))
}

on_both_databases! {
    async fn one_wallet_per_user_is_enforced_by_the_database(kind: DatabaseKind) {
        let db = TestDatabase::create(kind).await;
        let store = db.migrated_store().await;
        let user = must(store.create_user(&must(ExternalRef::parse("u-1")), &ctx()).await);
        let first = must(store.reserve_wallet(user.id).await);
        let second = must(store.reserve_wallet(user.id).await);
        assert_eq!(first, second);

        // Even SQL that bypasses the store cannot give the user a second wallet.
        let direct = sqlx::query(
            "INSERT INTO wallets (id, user_id, key_id, public_key, frozen_at, created_at, updated_at) \
             VALUES ($1, $2, $3, NULL, NULL, $4, $4)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(user.id.to_string())
        .bind("wallet-direct")
        .bind("2025-01-01T00:00:00.000Z")
        .execute(store.pool())
        .await;
        let err = direct.err().unwrap_or_else(|| panic!("second wallet accepted"));
        assert!(gateway::error::Error::from(err).is_unique_violation());

        let others = join_all((0..20).map(|i| {
            let store = store.clone();
            async move {
                let user = must(store.create_user(&must(ExternalRef::parse(&format!("c-{i}"))), &ctx()).await);
                let rows = join_all((0..5).map(|_| store.reserve_wallet(user.id))).await;
                rows.into_iter().map(must).collect::<Vec<_>>()
            }
        }))
        .await;
        for rows in others {
            assert!(rows.windows(2).all(|w| w[0] == w[1]), "concurrent reservations differ");
        }
        assert_eq!(db.row_counts().await["wallets"], 21);
    }

    async fn a_duplicate_external_ref_names_the_existing_user(kind: DatabaseKind) {
        let db = TestDatabase::create(kind).await;
        let store = db.migrated_store().await;
        let external_ref = must(ExternalRef::parse("same"));
        let user = must(store.create_user(&external_ref, &ctx()).await);
        match store.create_user(&external_ref, &ctx()).await {
            Err(gateway::error::Error::UserExists(id)) => assert_eq!(id, user.id),
            other => panic!("expected UserExists, got {other:?}"),
        }
        assert_eq!(db.row_counts().await["users"], 1);
        assert_eq!(db.row_counts().await["audit_events"], 1);
    }

    async fn blocking_twice_records_one_event_with_who_and_why(kind: DatabaseKind) {
        let db = TestDatabase::create(kind).await;
        let store = db.migrated_store().await;
        let user = must(store.create_user(&must(ExternalRef::parse("u-block")), &ctx()).await);
        let reason = must(Reason::parse("chargeback"));
        let by = ctx();
        for _ in 0..2 {
            let blocked = must(store.set_user_blocked(user.id, true, &reason, &by).await);
            assert_eq!(blocked.status, UserStatus::Blocked);
        }
        let unblocked = must(store.set_user_blocked(user.id, false, &reason, &by).await);
        assert_eq!(unblocked.status, UserStatus::Active);
        let events = must(store.audit_events(None, Some(("user", &user.id.to_string())), 100).await);
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["user.created", "user.blocked", "user.unblocked"]);
        assert_eq!(events[1].actor, "cli");
        assert_eq!(events[1].details["reason"], "chargeback");
        assert_eq!(events[1].request_id.as_deref(), by.request_id.as_ref().map(|r| r.as_str()));
        assert!(events[0].occurred_at <= events[1].occurred_at);
        let missing = store.set_user_blocked(gateway::model::UserId::generate(), true, &reason, &by).await;
        assert!(matches!(missing, Err(gateway::error::Error::UserNotFound(_))));
    }

    async fn idempotency_claims_acquire_replay_conflict_and_expire(kind: DatabaseKind) {
        let db = TestDatabase::create(kind).await;
        let store = db.migrated_store().await;
        let api_key = service_api_key(&store).await;
        let key = must(IdempotencyKey::parse("k"));
        let lock = Duration::from_secs(60);
        let claim = |hash: &'static str| store.claim_idempotency_key(api_key, &key, hash, lock);
        assert_eq!(must(claim("h1").await), IdempotencyClaim::Acquired);
        assert_eq!(must(claim("h1").await), IdempotencyClaim::InProgress);
        assert_eq!(must(claim("h2").await), IdempotencyClaim::Conflict);
        must(store.store_idempotent_response(api_key, &key, 201, "{\"ok\":true}").await);
        assert_eq!(
            must(claim("h1").await),
            IdempotencyClaim::Replay { status: 201, body: "{\"ok\":true}".into() }
        );

        // A released claim can be taken again, with any request.
        let other = must(IdempotencyKey::parse("k2"));
        assert_eq!(must(store.claim_idempotency_key(api_key, &other, "h1", lock).await), IdempotencyClaim::Acquired);
        must(store.release_idempotency_key(api_key, &other).await);
        assert_eq!(must(store.claim_idempotency_key(api_key, &other, "h3", lock).await), IdempotencyClaim::Acquired);

        // A claim whose owner died (lock expired) is taken over by the next request, once.
        let crashed = must(IdempotencyKey::parse("k3"));
        assert_eq!(must(store.claim_idempotency_key(api_key, &crashed, "h", Duration::ZERO).await), IdempotencyClaim::Acquired);
        let taken_over = eventually(Duration::from_secs(5), || async {
            // The lock has millisecond resolution: polls before it passes see InProgress.
            must(store.claim_idempotency_key(api_key, &crashed, "h", lock).await)
                == IdempotencyClaim::Acquired
        })
        .await;
        assert!(taken_over, "an expired claim was never taken over");
        assert_eq!(
            must(store.claim_idempotency_key(api_key, &crashed, "h", lock).await),
            IdempotencyClaim::InProgress
        );

        // Concurrent first claims: exactly one wins.
        let fresh = must(IdempotencyKey::parse("k4"));
        let claims = join_all((0..10).map(|_| store.claim_idempotency_key(api_key, &fresh, "h", lock))).await;
        let winners = claims.into_iter().map(must).filter(|c| *c == IdempotencyClaim::Acquired).count();
        assert_eq!(winners, 1);
    }
    async fn a_worker_that_lost_its_lease_cannot_finish_fail_or_reset_anything(kind: DatabaseKind) {
        // Worker A holds the wallet, stalls (GC pause, partition) past its lease, and B takes
        // the wallet over. Whatever A decided on its stale view must change nothing.
        let db = TestDatabase::create(kind).await;
        let store = db.migrated_store().await;
        let user = must(store.create_user(&must(ExternalRef::parse("payer")), &ctx()).await);
        let wallet = must(store.reserve_wallet(user.id).await).id;
        let api_key = service_api_key(&store).await;
        let id = PaymentId::generate();
        let key = must(IdempotencyKey::parse("fenced"));
        let new = NewPayment {
            id,
            api_key_id: api_key,
            idempotency_key: &key,
            request_hash: "h",
            source_wallet_id: wallet,
            destination: "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7",
            destination_account: "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7",
            amount: must(Stroops::parse("1")),
            memo: None,
        };
        let limits = DailyLimits { daily_count: 100, daily_amount_stroops: i64::MAX };
        assert!(matches!(must(store.accept_payment(&new, limits).await), Accepted::Created(_)));
        // A's lease lasts no time at all: it is expired by the database's clock at once.
        let a = must(store.lease_wallet(wallet, "worker-a", Duration::ZERO).await)
            .unwrap_or_else(|| panic!("a free wallet could not be leased"));
        assert!(must(store.mark_signed(&a, &read(&store, id).await, &envelope(5, &"ab".repeat(32))).await));
        let a_view = read(&store, id).await;
        // B polls until the database says A's lease is over (no sleep, no clock of ours).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let b = loop {
            if let Some(b) = must(store.lease_wallet(wallet, "worker-b", Duration::from_secs(60)).await) {
                break b;
            }
            assert!(tokio::time::Instant::now() < deadline, "an expired lease was never taken over");
            tokio::task::yield_now().await;
        };
        assert!(b.epoch > a.epoch, "a lease taken over must get a higher epoch: {a:?} {b:?}");
        // A renews, submits, finishes, fails, resets, parks: all refused.
        assert!(!must(store.renew_lease(&a, Duration::from_secs(60)).await));
        assert!(!must(store.mark_submitted(&a, &a_view).await));
        let success = Outcome { status: PaymentStatus::Success, tx_hash: None, ledger: Some(7), fee_charged: Some(100), codes: None, reason: None };
        assert!(!must(store.finish_payment(&a, &a_view, &success).await));
        assert!(!must(store.reset_for_rebuild(&a, &a_view, Rebuild::SameSequence, "stale").await));
        assert!(!must(store.park_for_attention(&a, &a_view, "stale").await));
        assert_eq!(read(&store, id).await.status, PaymentStatus::Signed);
        // Nor can A put the payment off. B can, counted from the database's clock: an hour from
        // its now is not due, no wait is due at once.
        let due = || async { must(store.next_unfinished_payment(wallet).await).is_some_and(|next| next.due) };
        assert!(!must(store.postpone_payment(&a, id, Duration::from_secs(3600)).await));
        assert!(due().await, "a worker without the lease put the payment off");
        assert!(must(store.postpone_payment(&b, id, Duration::from_secs(3600)).await));
        assert!(!due().await, "postponed by an hour, yet due");
        assert!(must(store.postpone_payment(&b, id, Duration::ZERO).await));
        assert!(due().await, "postponed by nothing, yet not due");
        // B, deciding on the same version, may; and then A's view is stale on two counts.
        assert!(must(store.mark_submitted(&b, &a_view).await));
        let b_view = read(&store, id).await;
        assert!(!must(store.finish_payment(&b, &a_view, &success).await), "a write on a stale version went through");
        assert!(must(store.finish_payment(&b, &b_view, &success).await));
        assert_eq!(read(&store, id).await.status, PaymentStatus::Success);
        let statuses: Vec<String> = must(store.payment_events(id).await).into_iter().map(|e| e.status).collect();
        assert_eq!(statuses, ["CREATED", "SIGNED", "SUBMITTED", "SUCCESS"]);
    }

    async fn a_wallets_payment_in_flight_goes_before_an_older_unbuilt_one(kind: DatabaseKind) {
        // Two payments accepted concurrently: the later id commits first and is signed before
        // the earlier id's row appears. The worker must finish the signed one before building
        // the other, or both would be built on the same sequence number.
        let db = TestDatabase::create(kind).await;
        let store = db.migrated_store().await;
        let user = must(store.create_user(&must(ExternalRef::parse("payer")), &ctx()).await);
        let wallet = must(store.reserve_wallet(user.id).await).id;
        let api_key = service_api_key(&store).await;
        let earlier = PaymentId::generate();
        let later = PaymentId::generate();
        assert!(earlier < later);
        let limits = DailyLimits { daily_count: 100, daily_amount_stroops: i64::MAX };
        let accept = |id: PaymentId, key: &'static str| {
            let store = store.clone();
            async move {
                let key = must(IdempotencyKey::parse(key));
                let new = NewPayment {
                    id,
                    api_key_id: api_key,
                    idempotency_key: &key,
                    request_hash: key.as_str(),
                    source_wallet_id: wallet,
                    destination: "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7",
                    destination_account: "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7",
                    amount: must(Stroops::parse("1")),
                    memo: None,
                };
                assert!(matches!(must(store.accept_payment(&new, limits).await), Accepted::Created(_)));
            }
        };
        let next = || async { must(store.next_unfinished_payment(wallet).await).map(|next| next.payment.id) };

        let lease = must(store.lease_wallet(wallet, "test-worker", Duration::from_secs(60)).await)
            .unwrap_or_else(|| panic!("a free wallet could not be leased"));
        accept(later, "later").await;
        assert_eq!(next().await, Some(later));
        assert!(must(store.mark_signed(&lease, &read(&store, later).await, &envelope(5, &"ab".repeat(32))).await));
        accept(earlier, "earlier").await;
        assert_eq!(next().await, Some(later), "a CREATED payment went before the one in flight");
        let last = || async { must(store.next_unfinished_payment(wallet).await).map(|next| next.last) };
        assert_eq!(last().await, Some(false), "the read missed the other unfinished payment");
        assert!(must(store.mark_submitted(&lease, &read(&store, later).await).await));
        assert_eq!(next().await, Some(later));
        let success = Outcome { status: PaymentStatus::Success, tx_hash: None, ledger: Some(7), fee_charged: Some(100), codes: None, reason: None };
        assert!(must(store.finish_payment(&lease, &read(&store, later).await, &success).await));
        assert_eq!(next().await, Some(earlier));
        assert_eq!(last().await, Some(true));
        // The read says why the wallet may not pay (the worker fails the payment then).
        let refusal = || async { must(store.next_unfinished_payment(wallet).await).and_then(|next| next.refusal) };
        assert_eq!(refusal().await, None);
        let reason = must(Reason::parse("investigation"));
        must(store.set_user_blocked(user.id, true, &reason, &ctx()).await);
        assert!(refusal().await.is_some_and(|why| why.starts_with("USER_BLOCKED")));
        // A transaction signed while the block came is not stored (and so never sent).
        assert!(!must(store.mark_signed(&lease, &read(&store, earlier).await, &envelope(6, &"cd".repeat(32))).await));
        assert_eq!(next().await, Some(earlier));
        assert!(must(store.payment_transactions(earlier).await).is_empty());
        must(store.set_user_blocked(user.id, false, &reason, &ctx()).await);
        assert_eq!(refusal().await, None);
        assert!(must(store.fail_unsigned_payment(&lease, &read(&store, earlier).await, "test").await));
        assert_eq!(next().await, None);

        // The database wrote the history and the signed hash (migration 0003's triggers).
        let events = must(store.payment_events(later).await);
        let seen: Vec<(&str, Option<&str>)> =
            events.iter().map(|e| (e.status.as_str(), e.detail.as_deref())).collect();
        assert_eq!(
            seen,
            [
                ("CREATED", None),
                ("SIGNED", Some("sequence 5, max_time 1900000000, fee 100")),
                ("SUBMITTED", None),
                ("SUCCESS", Some("ledger 7")),
            ]
        );
        assert_eq!(events[1].tx_hash.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(
            must(store.payment_transactions(later).await),
            [SignedTransaction { hash: "ab".repeat(32), sequence: 5, max_time: 1_900_000_000 }]
        );
        let failed = must(store.payment_events(earlier).await);
        assert_eq!(failed.last().map(|e| (e.status.as_str(), e.detail.as_deref())), Some(("FAILED", Some("test"))));
        // Even a status change made outside the store leaves its trace.
        must(sqlx::query("UPDATE payments SET status = 'CREATED', status_detail = 'by hand' WHERE id = $1")
            .bind(earlier.to_string())
            .execute(store.pool())
            .await);
        let by_hand = must(store.payment_events(earlier).await);
        assert_eq!(by_hand.last().map(|e| (e.status.as_str(), e.detail.as_deref())), Some(("CREATED", Some("by hand"))));
    }
}
