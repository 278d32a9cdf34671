//! The contract policy of a key (`[policy.soroban]`, `[policy.keys.soroban]`): which contracts
//! and functions every node of an invocation tree may call, the SEP-41 token rules, whether
//! delegated credentials may be signed, and how far ahead an authorization may expire. No table:
//! no contract call is signed.

use serde::Deserialize;

use super::invocation::{Call, address_of, i128_of};
use crate::keys::PublicKey;
use crate::policy::{Denial, Rule};

/// The SEP-41 functions the token rules understand, and the position of the argument that must
/// be the key (the account whose authorization they need).
const TOKEN_FUNCTIONS: [(&str, usize); 5] = [
    ("transfer", 0),
    ("transfer_from", 0),
    ("approve", 0),
    ("burn", 0),
    ("burn_from", 0),
];

/// `[policy.soroban]` / `[policy.keys.soroban]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SorobanPolicyConfig {
    /// The signature expiration ledger may be at most this many ledgers ahead of the current
    /// ledger (about 5 s each).
    #[serde(default = "default_max_expiration_ledgers")]
    pub max_expiration_ledgers: u32,
    /// Sign `ADDRESS_WITH_DELEGATES` credentials (CAP-71) for this key's account.
    #[serde(default)]
    pub allow_delegates: bool,
    /// The contracts calls may reach, each with its functions. Every node of the tree,
    /// sub-invocations included, must be listed.
    #[serde(default)]
    pub contracts: Vec<ContractRuleConfig>,
}

/// `[[policy.keys.soroban.contracts]]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ContractRuleConfig {
    /// The contract (C...).
    pub contract: String,
    /// Functions allowed on it.
    pub functions: Vec<String>,
    /// A SEP-41 token or Stellar Asset Contract: `transfer`, `transfer_from`, `approve`, `burn`
    /// and `burn_from` must then act for the key itself (`from`, or `spender` for the `_from`
    /// variants), with destinations, spenders and amounts checked below.
    #[serde(default)]
    pub token: bool,
    /// Largest amount per call (an i128 in the token's base units, as a decimal string).
    pub max_amount: Option<String>,
    /// `to` of `transfer`/`transfer_from` must be one of these (G..., C..., M...). Unset: any.
    pub destinations: Option<Vec<String>>,
    /// `spender` of `approve` must be one of these. Unset: any.
    pub spenders: Option<Vec<String>>,
}

fn default_max_expiration_ledgers() -> u32 {
    // About ten minutes.
    120
}

impl SorobanPolicyConfig {
    /// Checks the table; errors name the field under `prefix`.
    pub fn check(&self, prefix: &str) -> Result<(), String> {
        if self.max_expiration_ledgers == 0 {
            return Err(format!("{prefix}max_expiration_ledgers: must be positive"));
        }
        for (i, rule) in self.contracts.iter().enumerate() {
            let at = format!("{prefix}contracts[{i}].");
            stellar_strkey::Contract::from_string(&rule.contract)
                .map_err(|_| format!("{at}contract: {:?} is not a C... address", rule.contract))?;
            if rule.functions.is_empty() || rule.functions.iter().any(String::is_empty) {
                return Err(format!("{at}functions: list at least one function name"));
            }
            if let Some(max) = &rule.max_amount {
                match max.parse::<i128>() {
                    Ok(v) if v >= 0 => {}
                    _ => {
                        return Err(format!(
                            "{at}max_amount: {max:?} is not a non-negative integer"
                        ));
                    }
                }
            }
            if !rule.token
                && (rule.max_amount.is_some()
                    || rule.destinations.is_some()
                    || rule.spenders.is_some())
            {
                return Err(format!(
                    "{at}token: max_amount, destinations and spenders need token = true"
                ));
            }
            for list in [&rule.destinations, &rule.spenders].into_iter().flatten() {
                if let Some(bad) = list.iter().find(|a| !is_address(a)) {
                    return Err(format!("{at}: {bad:?} is not a G..., C... or M... address"));
                }
            }
        }
        Ok(())
    }
}

fn is_address(text: &str) -> bool {
    stellar_strkey::ed25519::PublicKey::from_string(text).is_ok()
        || stellar_strkey::Contract::from_string(text).is_ok()
        || stellar_strkey::ed25519::MuxedAccount::from_string(text).is_ok()
}

/// A key's contract policy, compiled from a checked table.
#[derive(Clone, Debug)]
pub struct SorobanPolicy {
    /// See [`SorobanPolicyConfig::max_expiration_ledgers`].
    pub max_expiration_ledgers: u32,
    /// See [`SorobanPolicyConfig::allow_delegates`].
    pub allow_delegates: bool,
    contracts: Vec<ContractRule>,
}

#[derive(Clone, Debug)]
struct ContractRule {
    contract: String,
    functions: Vec<String>,
    token: bool,
    max_amount: Option<i128>,
    destinations: Option<Vec<String>>,
    spenders: Option<Vec<String>>,
}

impl SorobanPolicy {
    /// Compiles a table already checked by [`SorobanPolicyConfig::check`].
    pub fn new(config: &SorobanPolicyConfig) -> Self {
        SorobanPolicy {
            max_expiration_ledgers: config.max_expiration_ledgers,
            allow_delegates: config.allow_delegates,
            contracts: config
                .contracts
                .iter()
                .map(|rule| ContractRule {
                    contract: rule.contract.clone(),
                    functions: rule.functions.clone(),
                    token: rule.token,
                    max_amount: rule.max_amount.as_deref().and_then(|m| m.parse().ok()),
                    destinations: rule.destinations.clone(),
                    spenders: rule.spenders.clone(),
                })
                .collect(),
        }
    }

    /// Checks every call of a tree authorized for `key`'s account.
    pub fn check_calls(&self, calls: &[Call], key: &PublicKey) -> Result<(), Denial> {
        for call in calls {
            self.check_call(call, key)?;
        }
        Ok(())
    }

    /// Checks one call made with `key`'s authorization.
    pub fn check_call(&self, call: &Call, key: &PublicKey) -> Result<(), Denial> {
        let (depth, contract, function, args) = match call {
            Call::Contract {
                depth,
                contract,
                function,
                args,
            } => (*depth, contract, function, args),
            Call::CreateContract { depth } => {
                return Err(Denial::new(
                    Rule::Contract,
                    format!(
                        "call at depth {depth} creates a contract; signerd does not sign contract creation"
                    ),
                ));
            }
        };
        let where_ = if depth == 0 {
            "the root call".to_owned()
        } else {
            format!("a sub-invocation (depth {depth})")
        };
        let Some(rule) = self.contracts.iter().find(|r| r.contract == *contract) else {
            return Err(Denial::new(
                Rule::Contract,
                format!("{where_} calls contract {contract}, which is not allowed for this key"),
            ));
        };
        if !rule.functions.iter().any(|f| f == function) {
            return Err(Denial::new(
                Rule::Contract,
                format!(
                    "{where_} calls {contract}.{function}, a function not allowed for this key"
                ),
            ));
        }
        if rule.token
            && let Some((_, actor)) = TOKEN_FUNCTIONS.iter().find(|(f, _)| f == function)
        {
            rule.check_token_call(function, *actor, args, key)?;
        }
        Ok(())
    }
}

impl ContractRule {
    /// The SEP-41 rules: the acting account is the key, amounts are non-negative i128s under
    /// the cap, destinations and spenders are allowlisted.
    fn check_token_call(
        &self,
        function: &str,
        actor: usize,
        args: &[stellar_xdr::ScVal],
        key: &PublicKey,
    ) -> Result<(), Denial> {
        let token = |reason: String| Denial::new(Rule::Token, reason);
        // (arity, amount position, destination position, spender position)
        let (arity, amount, destination, spender) = match function {
            "transfer" => (3, 2, Some(1), None),
            "transfer_from" => (4, 3, Some(2), None),
            "approve" => (4, 2, None, Some(1)),
            "burn" => (2, 1, None, None),
            _ => (3, 2, None, None), // burn_from(spender, from, amount)
        };
        if args.len() != arity {
            return Err(token(format!(
                "{function} on {} with {} arguments is not the SEP-41 {function}",
                self.contract,
                args.len()
            )));
        }
        let address = |i: usize| {
            address_of(&args[i]).ok_or_else(|| {
                token(format!(
                    "{function} argument {i} is not an address; signerd does not sign what it cannot read"
                ))
            })
        };
        let acting = address(actor)?;
        if acting != key.account_id() {
            return Err(token(format!(
                "{function} on {} acts for {acting}, not for this key's account",
                self.contract
            )));
        }
        let value = i128_of(&args[amount]).ok_or_else(|| {
            token(format!(
                "{function} amount (argument {amount}) is not an i128"
            ))
        })?;
        if value < 0 {
            return Err(token(format!("{function} amount {value} is negative")));
        }
        if let Some(max) = self.max_amount
            && value > max
        {
            return Err(token(format!(
                "{function} amount {value} on {} is above this key's cap {max}",
                self.contract
            )));
        }
        if let (Some(i), Some(allowed)) = (destination, &self.destinations) {
            let to = address(i)?;
            if !allowed.contains(&to) {
                return Err(token(format!(
                    "{function} to {to}, which is not an allowed destination"
                )));
            }
        }
        if let (Some(i), Some(allowed)) = (spender, &self.spenders) {
            let who = address(i)?;
            if !allowed.contains(&who) {
                return Err(token(format!(
                    "approve for spender {who}, which is not an allowed spender"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{Int128Parts, ScAddress, ScVal};

    const TOKEN: &str = "CAAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQC526";
    const KEY: PublicKey = PublicKey([7; 32]);

    fn account(key: [u8; 32]) -> ScVal {
        ScVal::Address(ScAddress::Account(stellar_xdr::AccountId(
            stellar_xdr::PublicKey::PublicKeyTypeEd25519(stellar_xdr::Uint256(key)),
        )))
    }

    fn amount(v: i128) -> ScVal {
        ScVal::I128(Int128Parts {
            hi: (v >> 64) as i64,
            lo: v as u64,
        })
    }

    fn call(function: &str, args: Vec<ScVal>) -> Call {
        Call::Contract {
            depth: 0,
            contract: TOKEN.to_owned(),
            function: function.to_owned(),
            args,
        }
    }

    fn policy(max: &str, destinations: Option<Vec<String>>) -> SorobanPolicy {
        let config = SorobanPolicyConfig {
            max_expiration_ledgers: 10,
            allow_delegates: false,
            contracts: vec![ContractRuleConfig {
                contract: TOKEN.to_owned(),
                functions: vec!["transfer".into(), "approve".into()],
                token: true,
                max_amount: Some(max.to_owned()),
                destinations,
                spenders: None,
            }],
        };
        assert_eq!(config.check("p."), Ok(()));
        SorobanPolicy::new(&config)
    }

    #[test]
    fn token_rules_read_i128_amounts_and_the_acting_account() {
        let p = policy("170141183460469231731687303715884105727", None);
        let ok = call(
            "transfer",
            vec![account(KEY.0), account([1; 32]), amount(i128::MAX)],
        );
        assert_eq!(p.check_call(&ok, &KEY), Ok(()));
        let other = call(
            "transfer",
            vec![account([1; 32]), account(KEY.0), amount(1)],
        );
        assert_eq!(
            p.check_call(&other, &KEY).map_err(|d| d.rule),
            Err(Rule::Token)
        );
        let negative = call(
            "transfer",
            vec![account(KEY.0), account([1; 32]), amount(-1)],
        );
        assert_eq!(
            p.check_call(&negative, &KEY).map_err(|d| d.rule),
            Err(Rule::Token)
        );
        let short = call("transfer", vec![account(KEY.0), account([1; 32])]);
        assert_eq!(
            p.check_call(&short, &KEY).map_err(|d| d.rule),
            Err(Rule::Token)
        );

        let capped = policy("100", Some(vec![PublicKey([1; 32]).account_id()]));
        let over = call(
            "transfer",
            vec![account(KEY.0), account([1; 32]), amount(101)],
        );
        assert_eq!(
            capped.check_call(&over, &KEY).map_err(|d| d.rule),
            Err(Rule::Token)
        );
        let elsewhere = call(
            "transfer",
            vec![account(KEY.0), account([2; 32]), amount(1)],
        );
        assert_eq!(
            capped.check_call(&elsewhere, &KEY).map_err(|d| d.rule),
            Err(Rule::Token)
        );
        let fine = call(
            "transfer",
            vec![account(KEY.0), account([1; 32]), amount(100)],
        );
        assert_eq!(capped.check_call(&fine, &KEY), Ok(()));
        let burn = call("burn", vec![account(KEY.0), amount(1)]);
        assert_eq!(
            capped.check_call(&burn, &KEY).map_err(|d| d.rule),
            Err(Rule::Contract)
        );
    }

    #[test]
    fn bad_tables_are_named_at_load() {
        let mut config = SorobanPolicyConfig {
            max_expiration_ledgers: 10,
            allow_delegates: false,
            contracts: vec![ContractRuleConfig {
                contract: "GABC".into(),
                functions: vec!["transfer".into()],
                token: false,
                max_amount: None,
                destinations: None,
                spenders: None,
            }],
        };
        assert!(
            config
                .check("p.")
                .is_err_and(|e| e.contains("p.contracts[0].contract"))
        );
        config.contracts[0].contract = TOKEN.into();
        config.contracts[0].max_amount = Some("5".into());
        assert!(config.check("p.").is_err_and(|e| e.contains("token")));
        config.contracts[0].token = true;
        config.contracts[0].max_amount = Some("-5".into());
        assert!(config.check("p.").is_err_and(|e| e.contains("max_amount")));
    }
}
