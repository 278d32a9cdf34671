//! The randomized campaign, large: "never pays twice, never loses an accepted payment" against a
//! network that lags, surges and rate-limits, with the gateway SIGKILLed every few seconds and
//! signerd now and then (see `tests/campaign/engine.rs`).
//!
//! ```text
//! cargo build -p signerd --release
//! cargo bench -p gateway --bench campaign -- --seed N --payments 2000 --wallets 50 \
//!     --database postgres|sqlite [--backend horizon|rpc] [--replicas 2] [--ledger-ms 250] [--posts-per-second 20] \
//!     [--kill-every-ms 4000] [--signerd-kill-every-ms 20000] [--faults all|no-other-signers|surge|none]
//! ```
//!
//! Prints the seed first and the figures last (payments, kills, faults of each kind, invariant
//! results, POST→SUCCESS p50/p99); exits non-zero when an invariant broke. `--faults surge
//! --ledger-ms 5000 --kill-every-ms 0 --signerd-kill-every-ms 0` gives the latency with the
//! public network's cadence during surges.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/campaign/engine.rs"]
mod engine;

use std::time::Duration;

use engine::Campaign;
use support::{Backend, DatabaseKind};

fn parse_args() -> anyhow::Result<Campaign> {
    let mut campaign = Campaign {
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        payments: 2_000,
        wallets: 50,
        database: DatabaseKind::Postgres,
        backend: Backend::Horizon,
        replicas: 0,
        ledger_interval: Duration::from_millis(250),
        posts_per_second: 20.0,
        gateway_kill_every: Some(Duration::from_secs(4)),
        signerd_kill_every: Some(Duration::from_secs(20)),
        network_faults: true,
        surges: true,
        other_parties: true,
        finish_within: Duration::from_secs(300),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        let millis = |text: String| -> anyhow::Result<Option<Duration>> {
            let ms: u64 = text.parse()?;
            Ok((ms > 0).then(|| Duration::from_millis(ms)))
        };
        match flag.as_str() {
            "--seed" => campaign.seed = value().parse()?,
            "--payments" => campaign.payments = value().parse()?,
            "--wallets" => campaign.wallets = value().parse()?,
            "--replicas" => campaign.replicas = value().parse()?,
            "--posts-per-second" => campaign.posts_per_second = value().parse()?,
            "--ledger-ms" => {
                campaign.ledger_interval = millis(value())?
                    .ok_or_else(|| anyhow::anyhow!("--ledger-ms must be positive"))?
            }
            "--kill-every-ms" => campaign.gateway_kill_every = millis(value())?,
            "--signerd-kill-every-ms" => campaign.signerd_kill_every = millis(value())?,
            "--finish-within-secs" => {
                campaign.finish_within = Duration::from_secs(value().parse()?)
            }
            "--backend" => {
                campaign.backend = Backend::parse(&value())
                    .ok_or_else(|| anyhow::anyhow!("--backend horizon|rpc"))?
            }
            "--database" => {
                campaign.database = match value().as_str() {
                    "postgres" => DatabaseKind::Postgres,
                    "sqlite" => DatabaseKind::Sqlite,
                    other => anyhow::bail!("--database postgres|sqlite, got {other:?}"),
                }
            }
            "--faults" => match value().as_str() {
                "all" => (campaign.network_faults, campaign.surges) = (true, true),
                "no-other-signers" => {
                    (campaign.network_faults, campaign.surges) = (true, true);
                    campaign.other_parties = false;
                }
                "surge" => (campaign.network_faults, campaign.surges) = (false, true),
                "none" => (campaign.network_faults, campaign.surges) = (false, false),
                other => anyhow::bail!("--faults all|no-other-signers|surge|none, got {other:?}"),
            },
            _ => {} // cargo bench passes --bench; ignore what we do not know.
        }
    }
    if campaign.replicas == 0 {
        // Two replicas share Postgres; SQLite is one gateway's.
        campaign.replicas = match campaign.database {
            DatabaseKind::Postgres => 2,
            DatabaseKind::Sqlite => 1,
        };
    }
    Ok(campaign)
}

fn main() -> anyhow::Result<()> {
    let campaign = parse_args()?;
    println!("campaign seed {}", campaign.seed);
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(engine::run(&campaign));
    println!("{}", report.summary());
    anyhow::ensure!(
        report.violations.is_empty(),
        "seed {}: {} invariant violation(s)",
        campaign.seed,
        report.violations.len()
    );
    Ok(())
}
