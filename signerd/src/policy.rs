//! Signing policy: what a key may sign, decided from the decoded transaction before any
//! signature exists. Rules are configured per key (first matching `[[policy.keys]]` entry over
//! the `[policy]` defaults); every refusal names the rule that refused.

use std::fmt;

use serde::Deserialize;
use stellar_xdr::OperationBody;
use wildmatch::WildMatch;

use crate::keys::{KeyId, PublicKey};
use crate::soroban::invocation::{self, Call};
use crate::soroban::policy::{SorobanPolicy, SorobanPolicyConfig};
use crate::stellar::{
    NetworkPassphrase, ParsedTransaction, SignedPayload, all_operation_type_names,
    operation_type_name,
};

/// The rule behind a refusal; its name appears in responses, audit records and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The caller's ACL does not allow the call.
    Acl,
    /// The network passphrase is not allowed for the key.
    Network,
    /// The transaction source or an operation's effective source is not the key's own account
    /// (nor one the key's policy lists), and the key is not the fee source of a fee bump.
    Source,
    /// Time bounds missing, too far ahead, or already past.
    TimeBounds,
    /// An operation type the key may not sign.
    OperationType,
    /// The fee the signature commits to is above the key's `max_fee_stroops`.
    Fee,
    /// `min_seq_num`, `min_seq_age` or `min_seq_ledger_gap`, which the key may not use.
    Preconditions,
    /// A different transaction was already signed for these (network, account, sequences).
    SequenceGuard,
    /// The sequence guard, or the caller's share of it, is full: nothing new can be reserved
    /// until entries expire.
    GuardFull,
    /// A velocity cap (per identity or per key) was exceeded.
    Velocity,
    /// The key is reserved (the audit key).
    ReservedKey,
    /// The authorization entry's credentials are not the key's own account, or are delegated
    /// where the key's policy does not allow it.
    Credentials,
    /// A contract, function or host function the key may not authorize (any node of the tree).
    Contract,
    /// A SEP-41 token call breaking the token rules (acting account, amount, destination,
    /// spender).
    Token,
    /// The signature expiration ledger is past or too far ahead of the current ledger.
    Expiration,
    /// The current ledger is unknown or stale, so the expiration cannot be bounded.
    Ledger,
    /// A different entry was already signed for this (network, address, nonce).
    NonceGuard,
    /// A message the key may not sign (SEP-53 off, or a hash sent as a message).
    Message,
    /// A SEP-10 challenge for a home domain not allowed for the key.
    WebAuth,
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
            Rule::Fee => "fee",
            Rule::Preconditions => "preconditions",
            Rule::SequenceGuard => "sequence_guard",
            Rule::GuardFull => "guard_full",
            Rule::Velocity => "velocity",
            Rule::ReservedKey => "reserved_key",
            Rule::Credentials => "credentials",
            Rule::Contract => "contract",
            Rule::Token => "token",
            Rule::Expiration => "expiration",
            Rule::Ledger => "ledger",
            Rule::NonceGuard => "nonce_guard",
            Rule::Message => "message",
            Rule::WebAuth => "web_auth",
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

/// The operation types every key may sign unless its policy says otherwise: they move value out
/// of the key's own account and nothing else. Anything else (offers, `bump_sequence`, claimable
/// balances, sponsorship, liquidity pools, `invoke_host_function`, ...) must be listed.
pub const DEFAULT_OPERATIONS: [&str; 4] = [
    "payment",
    "path_payment_strict_receive",
    "path_payment_strict_send",
    "create_account",
];

/// `[policy]`: the defaults for every key, and per-key overrides.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Network passphrases keys may sign for. Empty: no transaction can be signed.
    #[serde(default)]
    pub networks: Vec<String>,
    /// The transaction source and every operation's effective source must be the key's own
    /// account or one of `accounts`; the fee source of a fee bump may wrap any transaction.
    #[serde(default = "yes")]
    pub require_source: bool,
    /// Other accounts (G...) the key may act for: as transaction source or operation source
    /// (accounts where the key is a signer). Empty: only its own account.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Time bounds with a `max_time` are required.
    #[serde(default = "yes")]
    pub require_time_bounds: bool,
    /// `max_time` may be at most this many seconds ahead of now.
    #[serde(default = "default_max_validity")]
    pub max_validity_secs: u64,
    /// Operation types allowed (snake_case, e.g. `payment`). Default: [`DEFAULT_OPERATIONS`].
    #[serde(default = "default_operations")]
    pub operations: Vec<String>,
    /// Allow `set_options` that change signers, the master weight or thresholds (when
    /// `set_options` is listed at all).
    #[serde(default)]
    pub allow_signer_changes: bool,
    /// Allow the sequence preconditions `min_seq_num`, `min_seq_age` and `min_seq_ledger_gap`.
    /// The sequence guard then reserves every sequence a `min_seq_num` lets the transaction
    /// consume.
    #[serde(default)]
    pub allow_sequence_preconditions: bool,
    /// The highest fee (stroops) a signature may commit to: the transaction's fee, or the outer
    /// fee for the fee source of a fee bump.
    #[serde(default = "default_max_fee")]
    pub max_fee_stroops: u64,
    /// Sequence-guard entries one caller identity may hold at once; beyond it that identity's
    /// new transactions are refused (`guard_full`) until its entries expire.
    #[serde(default = "default_guard_per_identity")]
    pub guard_max_entries_per_identity: usize,
    /// Contract calls (Soroban authorization entries and `invoke_host_function`). Unset: none.
    pub soroban: Option<SorobanPolicyConfig>,
    /// Home domains whose SEP-10 challenges the key may sign. Empty: none.
    #[serde(default)]
    pub web_auth_domains: Vec<String>,
    /// Whether the key signs SEP-53 messages.
    #[serde(default)]
    pub sign_messages: bool,
    /// Overrides for keys matching a pattern; the first match wins.
    #[serde(default)]
    pub keys: Vec<KeyPolicyConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            networks: Vec::new(),
            require_source: true,
            accounts: Vec::new(),
            require_time_bounds: true,
            max_validity_secs: default_max_validity(),
            operations: default_operations(),
            allow_signer_changes: false,
            allow_sequence_preconditions: false,
            max_fee_stroops: default_max_fee(),
            guard_max_entries_per_identity: default_guard_per_identity(),
            soroban: None,
            web_auth_domains: Vec::new(),
            sign_messages: false,
            keys: Vec::new(),
        }
    }
}

/// `[[policy.keys]]`: overrides for the keys matching `pattern`. Unset fields keep the default.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicyConfig {
    /// Glob pattern (`*`, `?`) over key ids.
    pub pattern: String,
    /// See [`PolicyConfig::networks`].
    pub networks: Option<Vec<String>>,
    /// See [`PolicyConfig::require_source`].
    pub require_source: Option<bool>,
    /// See [`PolicyConfig::accounts`].
    pub accounts: Option<Vec<String>>,
    /// See [`PolicyConfig::require_time_bounds`].
    pub require_time_bounds: Option<bool>,
    /// See [`PolicyConfig::max_validity_secs`].
    pub max_validity_secs: Option<u64>,
    /// See [`PolicyConfig::operations`].
    pub operations: Option<Vec<String>>,
    /// See [`PolicyConfig::allow_signer_changes`].
    pub allow_signer_changes: Option<bool>,
    /// See [`PolicyConfig::allow_sequence_preconditions`].
    pub allow_sequence_preconditions: Option<bool>,
    /// See [`PolicyConfig::max_fee_stroops`].
    pub max_fee_stroops: Option<u64>,
    /// See [`PolicyConfig::soroban`] (replaces the default table as a whole).
    pub soroban: Option<SorobanPolicyConfig>,
    /// See [`PolicyConfig::web_auth_domains`].
    pub web_auth_domains: Option<Vec<String>>,
    /// See [`PolicyConfig::sign_messages`].
    pub sign_messages: Option<bool>,
}

fn yes() -> bool {
    true
}
fn default_max_validity() -> u64 {
    300
}
fn default_operations() -> Vec<String> {
    DEFAULT_OPERATIONS
        .iter()
        .map(|op| (*op).to_owned())
        .collect()
}
fn default_max_fee() -> u64 {
    // 0.1 XLM: a hundred operations at 10 000 stroops each, far above normal surge pricing.
    1_000_000
}
fn default_guard_per_identity() -> usize {
    250_000
}

/// The rules of one table, the default or an override, as checked at load.
struct RuleFields<'a> {
    networks: &'a [String],
    accounts: &'a [String],
    operations: Option<&'a [String]>,
    max_validity_secs: Option<u64>,
    max_fee_stroops: Option<u64>,
}

impl RuleFields<'_> {
    fn check(&self, prefix: &str, known: &[String]) -> Result<(), String> {
        for (i, network) in self.networks.iter().enumerate() {
            NetworkPassphrase::parse(network).map_err(|e| format!("{prefix}networks[{i}]: {e}"))?;
        }
        for (i, account) in self.accounts.iter().enumerate() {
            parse_account(account).map_err(|e| format!("{prefix}accounts[{i}]: {e}"))?;
        }
        if let Some(operations) = self.operations {
            if operations.is_empty() {
                return Err(format!(
                    "{prefix}operations: must list at least one operation type"
                ));
            }
            if let Some(op) = operations.iter().find(|op| !known.contains(op)) {
                return Err(format!("{prefix}operations: unknown operation type {op:?}"));
            }
        }
        if self.max_validity_secs == Some(0) {
            return Err(format!("{prefix}max_validity_secs: must be positive"));
        }
        if self.max_fee_stroops == Some(0) {
            return Err(format!("{prefix}max_fee_stroops: must be positive"));
        }
        Ok(())
    }
}

fn check_domains(domains: &[String], field: &str) -> Result<(), String> {
    for (i, domain) in domains.iter().enumerate() {
        let sane = !domain.is_empty()
            && domain.len() <= 58
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
        if !sane {
            return Err(format!("{field}[{i}]: {domain:?} is not a home domain"));
        }
    }
    Ok(())
}

fn parse_account(account: &str) -> Result<PublicKey, String> {
    stellar_strkey::ed25519::PublicKey::from_string(account)
        .map(|key| PublicKey(key.0))
        .map_err(|_| format!("{account:?} is not a G... account id"))
}

impl PolicyConfig {
    /// Checks the section; errors name the field.
    pub fn check(&self) -> Result<(), String> {
        let known = all_operation_type_names();
        RuleFields {
            networks: &self.networks,
            accounts: &self.accounts,
            operations: Some(&self.operations),
            max_validity_secs: Some(self.max_validity_secs),
            max_fee_stroops: Some(self.max_fee_stroops),
        }
        .check("policy.", &known)?;
        if self.guard_max_entries_per_identity == 0 {
            return Err("policy.guard_max_entries_per_identity: must be positive".into());
        }
        if let Some(soroban) = &self.soroban {
            soroban.check("policy.soroban.")?;
        }
        check_domains(&self.web_auth_domains, "policy.web_auth_domains")?;
        for (i, key) in self.keys.iter().enumerate() {
            let prefix = format!("policy.keys[{i}].");
            if key.pattern.is_empty() {
                return Err(format!("{prefix}pattern: must not be empty"));
            }
            RuleFields {
                networks: key.networks.as_deref().unwrap_or_default(),
                accounts: key.accounts.as_deref().unwrap_or_default(),
                operations: key.operations.as_deref(),
                max_validity_secs: key.max_validity_secs,
                max_fee_stroops: key.max_fee_stroops,
            }
            .check(&prefix, &known)?;
            if let Some(soroban) = &key.soroban {
                soroban.check(&format!("{prefix}soroban."))?;
            }
            if let Some(domains) = &key.web_auth_domains {
                check_domains(domains, &format!("{prefix}web_auth_domains"))?;
            }
        }
        Ok(())
    }
}

/// The rules for one key, resolved from the config.
#[derive(Clone, Debug)]
pub struct Policy {
    networks: Vec<String>,
    require_source: bool,
    accounts: Vec<PublicKey>,
    require_time_bounds: bool,
    max_validity_secs: u64,
    operations: Vec<String>,
    allow_signer_changes: bool,
    allow_sequence_preconditions: bool,
    max_fee_stroops: u64,
    soroban: Option<SorobanPolicy>,
    web_auth_domains: Vec<String>,
    sign_messages: bool,
}

/// Every key's policy, compiled once from the config.
pub struct PolicySet {
    default: Policy,
    overrides: Vec<(WildMatch, Policy)>,
}

/// Parses account ids already checked by [`PolicyConfig::check`].
fn accounts(list: &[String]) -> Vec<PublicKey> {
    list.iter().filter_map(|a| parse_account(a).ok()).collect()
}

impl PolicySet {
    /// Compiles `[policy]` (already checked).
    pub fn new(config: &PolicyConfig) -> Self {
        let default = Policy {
            networks: config.networks.clone(),
            require_source: config.require_source,
            accounts: accounts(&config.accounts),
            require_time_bounds: config.require_time_bounds,
            max_validity_secs: config.max_validity_secs,
            operations: config.operations.clone(),
            allow_signer_changes: config.allow_signer_changes,
            allow_sequence_preconditions: config.allow_sequence_preconditions,
            max_fee_stroops: config.max_fee_stroops,
            soroban: config.soroban.as_ref().map(SorobanPolicy::new),
            web_auth_domains: config.web_auth_domains.clone(),
            sign_messages: config.sign_messages,
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
                    accounts: k
                        .accounts
                        .as_deref()
                        .map(accounts)
                        .unwrap_or_else(|| default.accounts.clone()),
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
                    allow_sequence_preconditions: k
                        .allow_sequence_preconditions
                        .unwrap_or(default.allow_sequence_preconditions),
                    max_fee_stroops: k.max_fee_stroops.unwrap_or(default.max_fee_stroops),
                    soroban: k
                        .soroban
                        .as_ref()
                        .map(SorobanPolicy::new)
                        .or_else(|| default.soroban.clone()),
                    web_auth_domains: k
                        .web_auth_domains
                        .clone()
                        .unwrap_or_else(|| default.web_auth_domains.clone()),
                    sign_messages: k.sign_messages.unwrap_or(default.sign_messages),
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
        self.check_network(network)?;
        // The fee source of a fee bump signs only the outer transaction: it pays the fee and
        // authorizes nothing inside, so it may wrap any inner transaction (its fee is capped
        // below). Everyone else signs the (inner) transaction and answers for all of it.
        let pays_fee_only = tx.payload_for(key).0 == SignedPayload::FeeBump;
        if self.require_source && !pays_fee_only {
            self.check_sources(tx, key)?;
        }
        if self.require_time_bounds {
            self.check_time_bounds(tx, now)?;
        }
        let fee = tx.fee_for(key);
        if u64::try_from(fee).is_ok_and(|fee| fee > self.max_fee_stroops) {
            return Err(Denial::new(
                Rule::Fee,
                format!(
                    "fee {fee} stroops is above this key's max_fee_stroops {}",
                    self.max_fee_stroops
                ),
            ));
        }
        if pays_fee_only {
            return Ok(());
        }
        let preconditions = tx.sequence_preconditions();
        if preconditions.any() && !self.allow_sequence_preconditions {
            return Err(Denial::new(
                Rule::Preconditions,
                format!(
                    "min_seq_num {:?}, min_seq_age {} or min_seq_ledger_gap {} is set; this key may not use sequence preconditions",
                    preconditions.min_seq_num,
                    preconditions.min_seq_age,
                    preconditions.min_seq_ledger_gap
                ),
            ));
        }
        self.check_operations(tx)
    }

    /// Whether the key may sign anything for `network`.
    pub fn check_network(&self, network: &NetworkPassphrase) -> Result<(), Denial> {
        if !self.networks.iter().any(|n| n == network.as_str()) {
            return Err(Denial::new(
                Rule::Network,
                format!("network {:?} is not allowed for this key", network.as_str()),
            ));
        }
        Ok(())
    }

    /// The key's contract policy; `None`: it authorizes no contract call.
    pub fn soroban(&self) -> Result<&SorobanPolicy, Denial> {
        self.soroban.as_ref().ok_or_else(|| {
            Denial::new(
                Rule::Contract,
                "this key has no contract policy: it authorizes no contract call",
            )
        })
    }

    /// Whether the key signs SEP-10 challenges for `domain`.
    pub fn allows_web_auth_domain(&self, domain: &str) -> bool {
        self.web_auth_domains.iter().any(|d| d == domain)
    }

    /// Whether the key signs SEP-53 messages.
    pub fn signs_messages(&self) -> bool {
        self.sign_messages
    }

    /// The transaction source and every operation's effective source (muxed ids normalised to
    /// their account) are the key's own account or one the policy lists.
    fn check_sources(&self, tx: &ParsedTransaction, key: &PublicKey) -> Result<(), Denial> {
        let allowed = |account: &PublicKey| account == key || self.accounts.contains(account);
        if !allowed(&tx.source) {
            return Err(Denial::new(
                Rule::Source,
                format!(
                    "the transaction source {} is not this key's account, nor one its policy lists",
                    tx.source.account_id()
                ),
            ));
        }
        if let Some((i, source)) = tx
            .effective_operation_sources()
            .enumerate()
            .find(|(_, source)| !allowed(source))
        {
            return Err(Denial::new(
                Rule::Source,
                format!(
                    "operation {i} acts for {}, which is not this key's account, nor one its policy lists",
                    source.account_id()
                ),
            ));
        }
        Ok(())
    }

    fn check_time_bounds(&self, tx: &ParsedTransaction, now: u64) -> Result<(), Denial> {
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
        Ok(())
    }

    fn check_operations(&self, tx: &ParsedTransaction) -> Result<(), Denial> {
        let sources: Vec<PublicKey> = tx.effective_operation_sources().collect();
        for (i, op) in tx.operations().iter().enumerate() {
            let name = operation_type_name(&op.body);
            if !self.operations.contains(&name) {
                return Err(Denial::new(
                    Rule::OperationType,
                    format!("operation {i} ({name}) is not allowed for this key"),
                ));
            }
            if let OperationBody::InvokeHostFunction(invoke) = &op.body {
                self.check_host_function(i, invoke, &sources[i])?;
            }
            if let OperationBody::SetOptions(set) = &op.body {
                let changes_authority = set.signer.is_some()
                    || set.master_weight.is_some()
                    || set.low_threshold.is_some()
                    || set.med_threshold.is_some()
                    || set.high_threshold.is_some();
                if changes_authority && !self.allow_signer_changes {
                    return Err(Denial::new(
                        Rule::OperationType,
                        format!("operation {i} (set_options) changes signers or thresholds"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Policy {
    /// An `invoke_host_function` acting for `source`: only a contract call, allowed by the
    /// contract policy, and every authorization entry with source-account credentials (which
    /// this transaction's signature authorizes) checked by the same rules, node by node.
    fn check_host_function(
        &self,
        index: usize,
        invoke: &stellar_xdr::InvokeHostFunctionOp,
        source: &PublicKey,
    ) -> Result<(), Denial> {
        let soroban = self.soroban()?;
        let stellar_xdr::HostFunction::InvokeContract(args) = &invoke.host_function else {
            return Err(Denial::new(
                Rule::Contract,
                format!(
                    "operation {index} ({}) is not a contract call; signerd signs only contract calls it can check",
                    invoke.host_function.discriminant().name()
                ),
            ));
        };
        soroban.check_call(&invocation::contract_call(args, 0), source)?;
        for entry in invoke.auth.iter() {
            if entry.credentials != stellar_xdr::SorobanCredentials::SourceAccount {
                // Address credentials carry their own signatures (SignAuthEntry for this
                // key's): this transaction's signature does not authorize them.
                continue;
            }
            let calls: Vec<Call> =
                invocation::flatten(&entry.root_invocation).ok_or_else(|| {
                    Denial::new(
                        Rule::Contract,
                        format!(
                            "operation {index}: an authorization tree of more than {} calls",
                            invocation::MAX_CALLS
                        ),
                    )
                })?;
            soroban.check_calls(&calls, source)?;
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
    fn an_empty_operation_list_is_refused_at_load() {
        let config = PolicyConfig {
            keys: vec![KeyPolicyConfig {
                pattern: "x-*".into(),
                operations: Some(Vec::new()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = config.check().err().unwrap_or_default();
        assert!(err.contains("policy.keys[0].operations"), "{err}");
    }

    #[test]
    fn bad_override_is_named_by_index() {
        let config = PolicyConfig {
            keys: vec![KeyPolicyConfig {
                pattern: "x-*".into(),
                networks: Some(vec![String::new()]),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = config.check().err().unwrap_or_default();
        assert!(err.contains("policy.keys[0].networks[0]"), "{err}");
        let config = PolicyConfig {
            keys: vec![KeyPolicyConfig {
                pattern: "x-*".into(),
                accounts: Some(vec!["not-an-account".into()]),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = config.check().err().unwrap_or_default();
        assert!(err.contains("policy.keys[0].accounts[0]"), "{err}");
        let config = PolicyConfig {
            max_fee_stroops: 0,
            ..Default::default()
        };
        let err = config.check().err().unwrap_or_default();
        assert!(err.contains("policy.max_fee_stroops"), "{err}");
    }

    #[test]
    fn the_default_operation_set_is_an_allowlist_of_payments() {
        let config = PolicyConfig::default();
        assert!(config.check().is_ok());
        let policy = PolicySet::new(&config);
        let wallet = policy.for_key(&KeyId::parse("wallet-1").unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(wallet.operations, DEFAULT_OPERATIONS);
        assert!(!wallet.allow_sequence_preconditions);
    }

    #[test]
    fn first_matching_override_wins_and_inherits_defaults() {
        let mut config = PolicyConfig {
            networks: vec!["A".into()],
            ..Default::default()
        };
        config.keys.push(KeyPolicyConfig {
            pattern: "treasury-*".into(),
            max_validity_secs: Some(60),
            operations: Some(vec!["account_merge".into()]),
            ..Default::default()
        });
        let set = PolicySet::new(&config);
        let treasury = set.for_key(&KeyId::parse("treasury-1").unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(treasury.max_validity_secs, 60);
        assert_eq!(treasury.operations, ["account_merge"]);
        assert_eq!(treasury.networks, ["A"]);
        assert_eq!(treasury.max_fee_stroops, default_max_fee());
        let wallet = set.for_key(&KeyId::parse("wallet-1").unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(wallet.max_validity_secs, 300);
        assert_eq!(wallet.operations, DEFAULT_OPERATIONS);
    }
}
