//! How a simulator is set up: address, network, ledger timing and fee parameters.

use std::net::SocketAddr;
use std::time::Duration;

use crate::amount::STROOPS_PER_XLM;
use crate::error::{Error, Result};

/// Stellar's testnet passphrase, the default network.
pub const TESTNET_PASSPHRASE: &str = "Test SDF Network ; September 2015";

/// How often the public Stellar network closes a ledger (5 to 7 s; 5 s is the target).
pub const REALISTIC_LEDGER_INTERVAL: Duration = Duration::from_secs(5);

/// The most operations one transaction may carry.
const MAX_OPERATIONS_PER_TRANSACTION: u32 = 100;

/// The settings of one simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The network passphrase transactions must be signed for.
    pub network_passphrase: String,
    /// How often a ledger closes by itself; `None`: only when a test closes one (deterministic).
    pub ledger_interval: Option<Duration>,
    /// Base fee per operation, in stroops (Stellar's is 100).
    pub base_fee: u32,
    /// Base reserve, in stroops (Stellar's is 0.5 XLM).
    pub base_reserve: i64,
    /// Operations that fit in one ledger; the rest of the queue waits for the next one.
    pub max_operations_per_ledger: u32,
    /// What friendbot gives a new account, in stroops (testnet: 10,000 XLM).
    pub friendbot_amount: i64,
    /// How many accounts friendbot submits from: at most this many accounts funded per ledger.
    pub friendbot_accounts: usize,
    /// How long `POST /transactions` waits for a result before answering 504, as Horizon does.
    pub submission_timeout: Duration,
    /// The close time of ledger 1 (Unix seconds); `None`: now.
    pub genesis_close_time: Option<u64>,
    /// How many ledgers a queued transaction may be left out of (outbid in a surge) before it
    /// is evicted (stellar-core's `TRANSACTION_QUEUE_TIMEOUT_LEDGERS`, 4).
    pub queue_ledgers: u32,
    /// Serve friendbot apart, as testnet does: Horizon's `GET /friendbot` answers a 307 redirect
    /// to a friendbot on its own port (see [`crate::HorizonSim::friendbot_url`]).
    pub friendbot_redirect: bool,
}

impl Default for SimConfig {
    /// Testnet, on a free local port, ledgers closed by hand.
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            network_passphrase: TESTNET_PASSPHRASE.to_owned(),
            ledger_interval: None,
            base_fee: 100,
            base_reserve: STROOPS_PER_XLM / 2,
            max_operations_per_ledger: 1_000,
            friendbot_amount: 10_000 * STROOPS_PER_XLM,
            friendbot_accounts: 16,
            submission_timeout: Duration::from_secs(30),
            genesis_close_time: None,
            queue_ledgers: 4,
            friendbot_redirect: false,
        }
    }
}

impl SimConfig {
    /// The default settings with the public network's cadence: a ledger every
    /// [`REALISTIC_LEDGER_INTERVAL`] (tests use a fast one, or close ledgers by hand).
    pub fn realistic() -> Self {
        SimConfig::with_ledger_interval(REALISTIC_LEDGER_INTERVAL)
    }

    /// The default settings with ledgers closing every `interval`.
    pub fn with_ledger_interval(interval: Duration) -> Self {
        SimConfig {
            ledger_interval: Some(interval),
            ..SimConfig::default()
        }
    }

    /// Checks the settings can work; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let passphrase = &self.network_passphrase;
        if passphrase.trim().is_empty() || !passphrase.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(Error::Config(
                "network_passphrase must be non-empty printable ascii".into(),
            ));
        }
        if self.ledger_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::Config("ledger_interval must be positive".into()));
        }
        if self.base_fee == 0 {
            return Err(Error::Config("base_fee must be at least 1 stroop".into()));
        }
        if self.base_reserve <= 0 {
            return Err(Error::Config("base_reserve must be positive".into()));
        }
        if self.max_operations_per_ledger < MAX_OPERATIONS_PER_TRANSACTION {
            return Err(Error::Config(format!(
                "max_operations_per_ledger must hold the largest transaction ({MAX_OPERATIONS_PER_TRANSACTION} operations)"
            )));
        }
        if self.friendbot_amount < 2 * self.base_reserve {
            return Err(Error::Config(
                "friendbot_amount must cover a new account's reserve (2 × base_reserve)".into(),
            ));
        }
        if self.friendbot_accounts == 0 {
            return Err(Error::Config(
                "friendbot_accounts must be at least 1".into(),
            ));
        }
        if self.queue_ledgers == 0 {
            return Err(Error::Config("queue_ledgers must be at least 1".into()));
        }
        if self.submission_timeout.is_zero() {
            return Err(Error::Config("submission_timeout must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        assert!(SimConfig::default().validate().is_ok());
        let cases = [
            SimConfig {
                network_passphrase: " ".into(),
                ..SimConfig::default()
            },
            SimConfig {
                ledger_interval: Some(Duration::ZERO),
                ..SimConfig::default()
            },
            SimConfig {
                base_fee: 0,
                ..SimConfig::default()
            },
            SimConfig {
                max_operations_per_ledger: 10,
                ..SimConfig::default()
            },
            SimConfig {
                friendbot_amount: 1,
                ..SimConfig::default()
            },
        ];
        let names = [
            "network_passphrase",
            "ledger_interval",
            "base_fee",
            "max_operations_per_ledger",
            "friendbot_amount",
        ];
        for (config, name) in cases.iter().zip(names) {
            let message = config
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(message.contains(name), "{message} should name {name}");
        }
    }
}
