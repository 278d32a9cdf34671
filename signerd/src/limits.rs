//! Backstop velocity caps (governor): signatures per second per caller identity and per key.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;

/// The two keyed limiters.
pub struct VelocityCaps {
    per_identity: DefaultKeyedRateLimiter<String>,
    per_key: DefaultKeyedRateLimiter<String>,
}

/// Which cap was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapHit {
    /// The caller identity's cap.
    Identity,
    /// The key's cap.
    Key,
}

impl VelocityCaps {
    /// Builds the limiters from `[limits]` (values already checked to be positive).
    pub fn new(config: &LimitsConfig) -> Self {
        let quota = |rate: u32, burst: u32| {
            let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            Quota::per_second(rate).allow_burst(burst)
        };
        VelocityCaps {
            per_identity: RateLimiter::keyed(quota(
                config.per_identity_per_second,
                config.per_identity_burst,
            )),
            per_key: RateLimiter::keyed(quota(config.per_key_per_second, config.per_key_burst)),
        }
    }

    /// Takes one signature from both budgets, or says which is exhausted.
    pub fn check(&self, identity: &str, key: &str) -> Result<(), CapHit> {
        if self.per_identity.check_key(&identity.to_owned()).is_err() {
            return Err(CapHit::Identity);
        }
        if self.per_key.check_key(&key.to_owned()).is_err() {
            return Err(CapHit::Key);
        }
        Ok(())
    }

    /// Forgets idle identities and keys, so memory follows current traffic.
    pub fn prune(&self) {
        self.per_identity.retain_recent();
        self.per_key.retain_recent();
    }
}
