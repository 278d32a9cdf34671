//! Deposit ingestion: one replica at a time (a lease by the database's clock) follows the
//! network's ledgers from a stored cursor, decodes each range's transactions ([`decode`]) and
//! records the operations crediting the gateway's wallets together with the cursor's advance, so
//! a crash or a takeover neither skips nor repeats a ledger. A range older than the API keeps is
//! logged as a gap and ingestion stops there (it is never skipped; the
//! `gateway_deposit_ingestion_stalled` gauge is 1 meanwhile). A gap or a failing step is retried
//! with exponential backoff from the poll interval up to `max_backoff_ms`, reset by the first
//! step that succeeds.

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
    /// Run the ingester in `gateway serve` and `gateway worker` (needs `[network]`, Horizon or
    /// RPC).
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
    /// The longest wait between retries while stuck on a gap or failing (the wait doubles from
    /// the poll interval up to this).
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
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
fn default_max_backoff_ms() -> u64 {
    60_000
}

/// How one ingestion step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Recorded a range and there may be more to read at once.
    Busy,
    /// Caught up, or another replica holds the lease: wait a poll interval.
    Idle,
    /// Stuck on a gap past the API's retention: back off (it is never skipped).
    Stalled,
}

/// The wait before the next try after `failures` consecutive failed or stalled steps: the poll
/// interval doubled per failure, capped at `max` (and never below the poll interval).
pub fn backoff(poll: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1_u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    poll.saturating_mul(factor).min(max.max(poll))
}

impl Default for DepositsConfig {
    fn default() -> Self {
        DepositsConfig {
            ingest: false,
            start_ledger: None,
            batch_ledgers: default_batch(),
            poll_interval_ms: default_poll_ms(),
            lease_ms: default_lease_ms(),
            max_backoff_ms: default_max_backoff_ms(),
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
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let max_backoff = Duration::from_millis(self.config.max_backoff_ms);
        let mut epoch: Option<i64> = None;
        // Consecutive steps that failed or met a gap.
        let mut failures: u32 = 0;
        loop {
            let wait = match self.step(&mut epoch, lease_ms).await {
                Ok(Step::Busy) => {
                    failures = 0;
                    self.metrics.set_deposit_stalled(false);
                    None
                }
                Ok(Step::Idle) => {
                    failures = 0;
                    self.metrics.set_deposit_stalled(false);
                    Some(poll)
                }
                Ok(Step::Stalled) => {
                    let wait = backoff(poll, max_backoff, failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "deposit ingestion stalled on a gap; retrying with backoff"
                    );
                    Some(wait)
                }
                Err(e) => {
                    let wait = backoff(poll, max_backoff, failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "deposit ingestion step failed; retrying with backoff"
                    );
                    Some(wait)
                }
            };
            if *stop.borrow() {
                return;
            }
            if let Some(wait) = wait {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// One step: hold the lease, read a range after the cursor, record it.
    async fn step(&self, epoch: &mut Option<i64>, lease_ms: i64) -> crate::error::Result<Step> {
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
                    None => return Ok(Step::Idle),
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
                return Ok(Step::Busy);
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
                self.metrics.set_deposit_stalled(true);
                return Ok(Step::Stalled);
            }
            Err(e) => return Err(network_error(e)),
        };
        self.metrics
            .set_deposit_lag((range.latest - range.through).max(0));
        if range.through < from {
            return Ok(Step::Idle);
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
                Ok(if range.through < range.latest {
                    Step::Busy
                } else {
                    Step::Idle
                })
            }
            None => {
                // Fenced: the lease or the cursor moved under us; start over from the lease.
                *epoch = None;
                Ok(Step::Idle)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_poll_interval_up_to_the_cap() {
        let poll = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        let waits: Vec<u128> = (0..10)
            .map(|failures| backoff(poll, max, failures).as_millis())
            .collect();
        assert_eq!(
            waits,
            vec![
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000
            ]
        );
        // Never overflows, never below the poll interval.
        assert_eq!(backoff(poll, max, u32::MAX), max);
        assert_eq!(backoff(poll, Duration::from_millis(1), 3), poll);
    }
}
