//! Deposit ingestion: one replica at a time (a lease by the database's clock) follows the
//! network's ledgers from a stored cursor, decodes each range's transactions ([`decode`]) and
//! records the operations crediting the gateway's wallets together with the cursor's advance, so
//! a crash or a takeover neither skips nor repeats a ledger. A range older than the API keeps is
//! logged as a gap and ingestion stops there (it is never skipped).

pub mod decode;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::network::{Network, NetworkError};
use crate::store::Store;

/// `[deposits]`: the ingester.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositsConfig {
    /// Run the ingester in `gateway serve` (needs `[network]`; RPC only for now).
    #[serde(default)]
    pub ingest: bool,
    /// The first ledger to ingest on the very first run; the network's latest when absent.
    #[serde(default)]
    pub start_ledger: Option<i64>,
    /// Ledgers read per step at most.
    #[serde(default = "default_batch")]
    pub batch_ledgers: i64,
    /// Wait between steps once caught up.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// How long the ingestion lease lasts without renewal.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

fn default_batch() -> i64 {
    20
}
fn default_poll_ms() -> u64 {
    500
}
fn default_lease_ms() -> u64 {
    5_000
}

impl Default for DepositsConfig {
    fn default() -> Self {
        DepositsConfig {
            ingest: false,
            start_ledger: None,
            batch_ledgers: default_batch(),
            poll_interval_ms: default_poll_ms(),
            lease_ms: default_lease_ms(),
        }
    }
}

/// The ingester of one process.
pub struct Ingester {
    store: Store,
    network: Arc<dyn Network>,
    config: DepositsConfig,
    metrics: Metrics,
    owner: String,
}

impl Ingester {
    /// A new ingester with its own lease owner id.
    pub fn new(
        store: Store,
        network: Arc<dyn Network>,
        config: DepositsConfig,
        metrics: Metrics,
    ) -> Self {
        let owner = format!("ingester-{}", uuid::Uuid::now_v7().simple());
        Ingester {
            store,
            network,
            config,
            metrics,
            owner,
        }
    }

    /// Ingests until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let lease_ms = i64::try_from(self.config.lease_ms).unwrap_or(i64::MAX / 4);
        let mut epoch: Option<i64> = None;
        loop {
            let busy = match self.step(&mut epoch, lease_ms).await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!(error = %e, "deposit ingestion step failed");
                    false
                }
            };
            if *stop.borrow() {
                return;
            }
            if !busy {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms)) => {}
                }
            }
        }
    }

    /// One step: hold the lease, read a range after the cursor, record it. True when there may
    /// be more to read at once.
    async fn step(&self, epoch: &mut Option<i64>, lease_ms: i64) -> crate::error::Result<bool> {
        let held = match *epoch {
            Some(e)
                if self
                    .store
                    .renew_deposit_lease(&self.owner, e, lease_ms)
                    .await? =>
            {
                e
            }
            _ => {
                *epoch = self
                    .store
                    .acquire_deposit_lease(&self.owner, lease_ms)
                    .await?;
                match *epoch {
                    Some(e) => {
                        tracing::info!(epoch = e, "deposit ingestion lease taken");
                        e
                    }
                    None => return Ok(false),
                }
            }
        };
        let cursor = match self.store.deposit_cursor().await? {
            Some(cursor) => cursor,
            None => {
                let start = match self.config.start_ledger {
                    Some(start) => start,
                    None => {
                        self.network_call(self.network.latest_ledger())
                            .await?
                            .sequence
                    }
                };
                self.store.init_deposit_cursor(start - 1).await?;
                return Ok(true);
            }
        };
        let from = cursor + 1;
        let to = cursor + self.config.batch_ledgers.max(1);
        let range = match self.network.ledger_transactions(from, to).await {
            Ok(range) => range,
            Err(NetworkError::Gap { from, oldest }) => {
                tracing::error!(
                    from,
                    oldest,
                    "deposit ingestion gap: ledgers past the network API's retention; not skipped"
                );
                self.metrics.set_deposit_lag(-1);
                return Ok(false);
            }
            Err(e) => return Err(network_error(e)),
        };
        self.metrics
            .set_deposit_lag((range.latest - range.through).max(0));
        if range.through < from {
            return Ok(false);
        }
        let mut credits = Vec::new();
        for tx in &range.transactions {
            credits.extend(decode::credits(tx).map_err(network_error)?);
        }
        match self
            .store
            .record_deposits(&self.owner, held, cursor, range.through, &credits)
            .await?
        {
            Some(recorded) => {
                if recorded > 0 {
                    tracing::info!(recorded, through = range.through, "deposits recorded");
                }
                Ok(range.through < range.latest)
            }
            None => {
                // Fenced: the lease or the cursor moved under us; start over from the lease.
                *epoch = None;
                Ok(false)
            }
        }
    }

    async fn network_call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, NetworkError>>,
    ) -> crate::error::Result<T> {
        call.await.map_err(network_error)
    }
}

fn network_error(e: NetworkError) -> crate::error::Error {
    crate::error::Error::NetworkUnavailable(e.to_string())
}
