//! The randomized campaign at a small size (see `campaign/engine.rs` for what it does and
//! checks; `benches/campaign.rs` runs it large): payments between wallets through two gateway
//! replicas on Postgres, and through one gateway on SQLite, while the simulated network lags,
//! surges, rate-limits, times out before and after applying and lets another signer use the
//! wallets' sequence numbers, and while the gateway is SIGKILLed every few seconds and signerd
//! now and then. The seed is printed; `CAMPAIGN_SEED=N` replays one.

mod support;

#[path = "campaign/engine.rs"]
mod engine;

use std::time::Duration;

use engine::Campaign;
use support::DatabaseKind;

/// The seed: `CAMPAIGN_SEED` to replay one, else a new one (printed by the campaign).
fn seed() -> u64 {
    std::env::var("CAMPAIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// 60 payments over 6 wallets, 4 a second, on 250 ms ledgers, every network fault, the gateway
/// SIGKILLed every 2–4 s; `everything` adds another signer using the wallets' sequence numbers
/// and signerd SIGKILLed every 5–10 s.
fn small(database: DatabaseKind, replicas: usize, everything: bool) -> Campaign {
    Campaign {
        seed: seed(),
        payments: 60,
        wallets: 6,
        database,
        replicas,
        ledger_interval: Duration::from_millis(250),
        posts_per_second: 4.0,
        gateway_kill_every: Some(Duration::from_secs(4)),
        signerd_kill_every: everything.then_some(Duration::from_secs(10)),
        network_faults: true,
        surges: true,
        other_parties: everything,
        // A payment whose transaction never landed is rebuilt after its max_time, and signerd
        // signs the rebuilt one 60 s after that: the bound the design promises, plus margin.
        finish_within: Duration::from_secs(engine::MAX_VALIDITY_SECS + 60 + 15),
    }
}

async fn holds(campaign: Campaign) {
    let report = engine::run(&campaign).await;
    eprintln!("{}", report.summary());
    assert!(
        report.gateway_kills > 0,
        "the campaign killed nothing: it proves less than it says"
    );
    assert!(report.accepted == campaign.payments, "{}", report.summary());
    assert!(report.violations.is_empty(), "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_never_pay_twice_nor_lose_a_payment() {
    holds(small(DatabaseKind::Postgres, 2, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_on_sqlite_never_pays_twice_nor_loses_a_payment() {
    holds(small(DatabaseKind::Sqlite, 1, false)).await;
}

// Findings (issue 12), no double payment and every balance exact in each, but:
// - another signer using a wallet's next sequence number (seeds 1796182890807464331, Postgres:
//   15 of 60 unfinished; 1796182982759404136, SQLite: 1 of 60): the gateway's transaction gets
//   tx_bad_seq, is never found and never rebuilt (the rebuild waits for the account's sequence
//   to be below the transaction's, which it never is again); the payment stays SUBMITTED and
//   every later payment of the wallet stays CREATED.
// - signerd SIGKILLed (seed 1796183084606427972, Postgres: 3 of 60 FAILED): a call cut by the
//   kill (here through a TCP relay, as behind a load balancer) comes back as gRPC `Unknown`,
//   which the gateway takes for signerd's considered refusal: the payment FAILS
//   (`SIGNER_REFUSED: ... Unknown`) though nothing was wrong with it.
// Un-ignore once the gateway handles both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "findings: another signer's sequence use leaves payments unfinished; a signerd kill fails payments"]
async fn with_other_signers_and_signerd_kills_two_replicas_on_postgres() {
    holds(small(DatabaseKind::Postgres, 2, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "findings: another signer's sequence use leaves payments unfinished; a signerd kill fails payments"]
async fn with_other_signers_and_signerd_kills_one_gateway_on_sqlite() {
    holds(small(DatabaseKind::Sqlite, 1, true)).await;
}
