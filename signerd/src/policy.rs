//! Signing policy: what a key may sign, decided from the decoded transaction before any
//! signature exists. Rules are configured per key (first matching `[[policy.keys]]` entry over
//! the `[policy]` defaults); every refusal names the rule that refused.

use std::fmt;

use serde::Deserialize;
use stellar_xdr::OperationBody;
use wildmatch::WildMatch;

use crate::keys::{KeyId, PublicKey};
use crate::stellar::{
    NetworkPassphrase, ParsedTransaction, all_operation_type_names, operation_type_name,
};

/// The rule behind a refusal; its name appears in responses, audit records and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The caller's ACL does not allow the call.
    Acl,
    /// The network passphrase is not allowed for the key.
    Network,
    /// The key is not a source of the transaction, an operation, or the fee bump.
    Source,
    /// Time bounds missing, too far ahead, or already past.
    TimeBounds,
    /// An operation type the key may not sign.
    OperationType,
    /// A different transaction was already signed for this (account, sequence).
    SequenceGuard,
    /// A velocity cap (per identity or per key) was exceeded.
    Velocity,
    /// The key is reserved (the audit key).
    ReservedKey,
}

impl Rule {
    /// The rule's stable name.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Acl => "acl",
            Rule::Network => "network",
            Rule::Source => "source",
            Rule::TimeBounds => "time_bounds",
            Rule::OperationType => "operation_type",
            Rule::SequenceGuard => "sequence_guard",
            Rule::Velocity => "velocity",
            Rule::ReservedKey => "reserved_key",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A refusal: which rule, and why in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The rule that refused.
    pub rule: Rule,
    /// A sentence for the caller and the audit record.
    pub reason: String,
}

impl Denial {
    /// A refusal by `rule`.
    pub fn new(rule: Rule, reason: impl Into<String>) -> Self {
        Denial {
            rule,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {}: {}", self.rule, self.reason)
    }
}

/// `[policy]`: the defaults for every key, and per-key overrides.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Network passphrases keys may sign for. Empty: no transaction can be signed.
    #[serde(default)]
    pub networks: Vec<String>,
    /// The key must be the transaction source, an operation source, or the fee-bump source.
    #[serde(default = "yes")]
    pub require_source: bool,
    /// Time bounds with a `max_time` are required.
    #[serde(default = "yes")]
    pub require_time_bounds: bool,
    /// `max_time` may be at most this many seconds ahead of now.
    #[serde(default = "default_max_validity")]
    pub max_validity_secs: u64,
    /// Operation types allowed (snake_case, e.g. `payment`); empty: every type, except the
    /// guarded ones below unless enabled.
    #[serde(default)]
    pub operations: Vec<String>,
    /// Allow `set_options` that change signers, the master weight or thresholds.
    #[serde(default)]
    pub allow_signer_changes: bool,
    /// Allow `account_merge`.
    #[serde(default)]
    pub allow_account_merge: bool,
    /// Overrides for keys matching a pattern; the first match wins.
    #[serde(default)]
    pub keys: Vec<KeyPolicyConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            networks: Vec::new(),
            require_source: true,
            require_time_bounds: true,
            max_validity_secs: default_max_validity(),
            operations: Vec::new(),
            allow_signer_changes: false,
            allow_account_merge: false,
            keys: Vec::new(),
        }
    }
}

/// `[[policy.keys]]`: overrides for the keys matching `pattern`. Unset fields keep the default.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicyConfig {
    /// Glob pattern (`*`, `?`) over key ids.
    pub pattern: String,
    /// See [`PolicyConfig::networks`].
    pub networks: Option<Vec<String>>,
    /// See [`PolicyConfig::require_source`].
    pub require_source: Option<bool>,
    /// See [`PolicyConfig::require_time_bounds`].
    pub require_time_bounds: Option<bool>,
    /// See [`PolicyConfig::max_validity_secs`].
    pub max_validity_secs: Option<u64>,
    /// See [`PolicyConfig::operations`].
    pub operations: Option<Vec<String>>,
    /// See [`PolicyConfig::allow_signer_changes`].
    pub allow_signer_changes: Option<bool>,
    /// See [`PolicyConfig::allow_account_merge`].
    pub allow_account_merge: Option<bool>,
}

fn yes() -> bool {
    true
}
fn default_max_validity() -> u64 {
    300
}

impl PolicyConfig {
    /// Checks the section; errors name the field.
    pub fn check(&self) -> Result<(), String> {
        let known = all_operation_type_names();
        let check_rules = |prefix: &str,
                           networks: &[String],
                           operations: &[String],
                           max_validity: u64|
         -> Result<(), String> {
            for (i, network) in networks.iter().enumerate() {
                NetworkPassphrase::parse(network)
                    .map_err(|e| format!("{prefix}networks[{i}]: {e}"))?;
            }
            if let Some(op) = operations.iter().find(|op| !known.contains(op)) {
                return Err(format!("{prefix}operations: unknown operation type {op:?}"));
            }
            if max_validity == 0 {
                return Err(format!("{prefix}max_validity_secs: must be positive"));
            }
            Ok(())
        };
        check_rules(
            "policy.",
            &self.networks,
            &self.operations,
            self.max_validity_secs,
        )?;
        for (i, key) in self.keys.iter().enumerate() {
            let prefix = format!("policy.keys[{i}].");
            if key.pattern.is_empty() {
                return Err(format!("{prefix}pattern: must not be empty"));
            }
            check_rules(
                &prefix,
                key.networks.as_deref().unwrap_or_default(),
                key.operations.as_deref().unwrap_or_default(),
                key.max_validity_secs.unwrap_or(1),
            )?;
        }
        Ok(())
    }
}

/// The rules for one key, resolved from the config.
#[derive(Clone, Debug)]
pub struct Policy {
    networks: Vec<String>,
    require_source: bool,
    require_time_bounds: bool,
    max_validity_secs: u64,
    operations: Vec<String>,
    allow_signer_changes: bool,
    allow_account_merge: bool,
}

/// Every key's policy, compiled once from the config.
pub struct PolicySet {
    default: Policy,
    overrides: Vec<(WildMatch, Policy)>,
}

impl PolicySet {
    /// Compiles `[policy]` (already checked).
    pub fn new(config: &PolicyConfig) -> Self {
        let default = Policy {
            networks: config.networks.clone(),
            require_source: config.require_source,
            require_time_bounds: config.require_time_bounds,
            max_validity_secs: config.max_validity_secs,
            operations: config.operations.clone(),
            allow_signer_changes: config.allow_signer_changes,
            allow_account_merge: config.allow_account_merge,
        };
        let overrides = config
            .keys
            .iter()
            .map(|k| {
                let policy = Policy {
                    networks: k
                        .networks
                        .clone()
                        .unwrap_or_else(|| default.networks.clone()),
                    require_source: k.require_source.unwrap_or(default.require_source),
                    require_time_bounds: k
                        .require_time_bounds
                        .unwrap_or(default.require_time_bounds),
                    max_validity_secs: k.max_validity_secs.unwrap_or(default.max_validity_secs),
                    operations: k
                        .operations
                        .clone()
                        .unwrap_or_else(|| default.operations.clone()),
                    allow_signer_changes: k
                        .allow_signer_changes
                        .unwrap_or(default.allow_signer_changes),
                    allow_account_merge: k
                        .allow_account_merge
                        .unwrap_or(default.allow_account_merge),
                };
                (WildMatch::new(&k.pattern), policy)
            })
            .collect();
        PolicySet { default, overrides }
    }

    /// The policy that applies to `key`.
    pub fn for_key(&self, key: &KeyId) -> &Policy {
        self.overrides
            .iter()
            .find(|(pattern, _)| pattern.matches(key.as_str()))
            .map(|(_, policy)| policy)
            .unwrap_or(&self.default)
    }
}

impl Policy {
    /// Decides whether `key` may sign `tx` on `network` at `now` (Unix seconds).
    pub fn check(
        &self,
        tx: &ParsedTransaction,
        key: &PublicKey,
        network: &NetworkPassphrase,
        now: u64,
    ) -> Result<(), Denial> {
        if !self.networks.iter().any(|n| n == network.as_str()) {
            return Err(Denial::new(
                Rule::Network,
                format!("network {:?} is not allowed for this key", network.as_str()),
            ));
        }
        if self.require_source {
            let involved = tx.source == *key
                || tx.fee_source == Some(*key)
                || tx.operation_sources().any(|s| s == *key);
            if !involved {
                return Err(Denial::new(
                    Rule::Source,
                    "the key is not the source of the transaction, of an operation, or of the fee bump",
                ));
            }
        }
        if self.require_time_bounds {
            let max_time = match tx.time_bounds() {
                None | Some((_, 0)) => {
                    return Err(Denial::new(
                        Rule::TimeBounds,
                        "time bounds with a max_time are required",
                    ));
                }
                Some((_, max_time)) => max_time,
            };
            if max_time <= now {
                return Err(Denial::new(
                    Rule::TimeBounds,
                    format!("max_time {max_time} is already past (now {now})"),
                ));
            }
            if max_time > now.saturating_add(self.max_validity_secs) {
                return Err(Denial::new(
                    Rule::TimeBounds,
                    format!(
                        "max_time {max_time} is more than {} s ahead (now {now})",
                        self.max_validity_secs
                    ),
                ));
            }
        }
        for (i, op) in tx.operations().iter().enumerate() {
            // The name is only needed against an allowlist: no allocation per operation otherwise.
            if !self.operations.is_empty() {
                let name = operation_type_name(&op.body);
                if !self.operations.contains(&name) {
                    return Err(Denial::new(
                        Rule::OperationType,
                        format!("operation {i} ({name}) is not allowed for this key"),
                    ));
                }
            }
            match &op.body {
                OperationBody::SetOptions(set) if !self.allow_signer_changes => {
                    let changes_authority = set.signer.is_some()
                        || set.master_weight.is_some()
                        || set.low_threshold.is_some()
                        || set.med_threshold.is_some()
                        || set.high_threshold.is_some();
                    if changes_authority {
                        return Err(Denial::new(
                            Rule::OperationType,
                            format!("operation {i} (set_options) changes signers or thresholds"),
                        ));
                    }
                }
                OperationBody::AccountMerge(_) if !self.allow_account_merge => {
                    return Err(Denial::new(
                        Rule::OperationType,
                        format!("operation {i} (account_merge) is not allowed for this key"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_operation_names_are_refused_at_load() {
        let config = PolicyConfig {
            operations: vec!["payment".into(), "teleport".into()],
            ..Default::default()
        };
        let err = config.check().err().unwrap_or_default();
        assert!(
            err.contains("policy.operations") && err.contains("teleport"),
            "{err}"
        );
    }

    #[test]
    fn bad_override_is_named_by_index() {
        let config = PolicyConfig {
            keys: vec![KeyPolicyConfig {
                pattern: "x-*".into(),
                networks: Some(vec![String::new()]),
                require_source: None,
                require_time_bounds: None,
                max_validity_secs: None,
                operations: None,
                allow_signer_changes: None,
                allow_account_merge: None,
            }],
            ..Default::default()
        };
        let err = config.check().err().unwrap_or_default();
        assert!(err.contains("policy.keys[0].networks[0]"), "{err}");
    }

    #[test]
    fn first_matching_override_wins_and_inherits_defaults() {
        let mut config = PolicyConfig {
            networks: vec!["A".into()],
            ..Default::default()
        };
        config.keys.push(KeyPolicyConfig {
            pattern: "treasury-*".into(),
            networks: None,
            require_source: None,
            require_time_bounds: None,
            max_validity_secs: Some(60),
            operations: None,
            allow_signer_changes: None,
            allow_account_merge: Some(true),
        });
        let set = PolicySet::new(&config);
        let treasury = set.for_key(&KeyId::parse("treasury-1").unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(treasury.max_validity_secs, 60);
        assert!(treasury.allow_account_merge);
        assert_eq!(treasury.networks, ["A"]);
        let wallet = set.for_key(&KeyId::parse("wallet-1").unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(wallet.max_validity_secs, 300);
        assert!(!wallet.allow_account_merge);
    }
}
