//! Backstop velocity caps (governor): signatures per second per caller identity and per key;
//! and the [`DenialBudget`]: how many refusals per identity get an audit record of their own.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;

/// The two keyed limiters, and the denial budget.
pub struct VelocityCaps {
    per_identity: DefaultKeyedRateLimiter<String>,
    per_key: DefaultKeyedRateLimiter<String>,
    /// Recorded denials per identity.
    pub denials: DenialBudget,
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
            denials: DenialBudget::new(quota(config.denials_per_second, config.denial_burst)),
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
        self.denials.limiter.retain_recent();
    }
}

/// Every denial is an fsynced audit record, so refusals are a way to write to signerd's disk.
/// The budget bounds that per caller identity: within it a denial is recorded in full; beyond
/// it the request is refused with `RESOURCE_EXHAUSTED` and only counted, and the count goes into
/// the log as one record (on the identity's next recorded denial, or in a summary written once
/// its window has passed, whichever comes first). Nothing is lost from the count; only the
/// per-request detail of a flood is.
pub struct DenialBudget {
    limiter: DefaultKeyedRateLimiter<String>,
    /// Denials refused without a record, per identity, since its last record.
    suppressed: Mutex<HashMap<String, Suppressed>>,
}

/// Denials of one identity refused without a record of their own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suppressed {
    /// How many.
    pub count: u64,
    /// When the first of them was refused (RFC 3339).
    pub since: String,
    /// The RPC of the last one.
    pub last_rpc: &'static str,
    /// The rule of the last one.
    pub last_rule: &'static str,
}

/// What to do with one denial.
#[derive(Debug, PartialEq, Eq)]
pub enum DenialAdmission {
    /// Record it; it carries the count of the identity's earlier unrecorded denials, if any.
    Record(Option<Suppressed>),
    /// Over budget: do not record it. `first` when it starts a new count, whose summary the
    /// caller must arrange to write.
    Suppress {
        /// The identity had no pending count before this denial.
        first: bool,
    },
}

impl DenialBudget {
    fn new(quota: Quota) -> Self {
        DenialBudget {
            limiter: RateLimiter::keyed(quota),
            suppressed: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one recorded denial from `identity`'s budget, or counts the denial as suppressed.
    pub fn admit(
        &self,
        identity: &str,
        rpc: &'static str,
        rule: &'static str,
        now: &str,
    ) -> DenialAdmission {
        let identity = identity.to_owned();
        let within = self.limiter.check_key(&identity).is_ok();
        let mut suppressed = self.suppressed.lock().unwrap_or_else(|p| p.into_inner());
        if within {
            return DenialAdmission::Record(suppressed.remove(&identity));
        }
        let first = !suppressed.contains_key(&identity);
        let entry = suppressed.entry(identity).or_insert_with(|| Suppressed {
            count: 0,
            since: now.to_owned(),
            last_rpc: rpc,
            last_rule: rule,
        });
        entry.count += 1;
        entry.last_rpc = rpc;
        entry.last_rule = rule;
        DenialAdmission::Suppress { first }
    }

    /// Takes every pending count (at shutdown).
    pub fn take_all(&self) -> Vec<(String, Suppressed)> {
        self.suppressed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect()
    }

    /// Takes `identity`'s pending count (for its summary record), if it still has one.
    pub fn take(&self, identity: &str) -> Option<Suppressed> {
        self.suppressed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_beyond_the_burst_are_counted_not_recorded_and_nothing_is_lost() {
        // One per hour: nothing refills while the test runs, however slow the machine.
        let quota = Quota::per_hour(NonZeroU32::MIN).allow_burst(NonZeroU32::MIN.saturating_add(1));
        let budget = DenialBudget::new(quota);
        let admit = |who| budget.admit(who, "SignTransaction", "acl", "t0");
        assert_eq!(admit("mallory"), DenialAdmission::Record(None));
        assert_eq!(admit("mallory"), DenialAdmission::Record(None));
        assert_eq!(admit("mallory"), DenialAdmission::Suppress { first: true });
        for _ in 0..9 {
            assert_eq!(admit("mallory"), DenialAdmission::Suppress { first: false });
        }
        // Another identity has its own budget.
        assert_eq!(admit("alice"), DenialAdmission::Record(None));
        let pending = budget.take("mallory").unwrap_or_else(|| panic!("no count"));
        assert_eq!(pending.count, 10);
        assert_eq!((pending.since.as_str(), pending.last_rule), ("t0", "acl"));
        assert_eq!(budget.take("mallory"), None, "a count is taken once");
        assert_eq!(admit("mallory"), DenialAdmission::Suppress { first: true });
        let all = budget.take_all();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].0.as_str(), all[0].1.count), ("mallory", 1));
    }
}
