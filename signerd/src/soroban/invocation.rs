//! The invocation tree of an authorization entry (or of an `invoke_host_function` operation)
//! flattened into [`Call`]s, depth first, so that policy checks every node and the audit record
//! names every contract and function (bounded).

use serde::{Deserialize, Serialize};
use stellar_xdr::{
    InvokeContractArgs, ScAddress, ScVal, SorobanAuthorizedFunction, SorobanAuthorizedInvocation,
};

/// Calls one tree may hold; a bigger tree is refused (real trees have a handful).
pub const MAX_CALLS: usize = 64;
/// Calls listed in an audit record; the rest are counted.
pub const MAX_SUMMARISED_CALLS: usize = 16;
/// Arguments summarised per call.
pub const MAX_SUMMARISED_ARGS: usize = 6;
/// The longest argument summary, in bytes.
const MAX_ARG_CHARS: usize = 80;

/// One node of an invocation tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// A contract function call.
    Contract {
        /// Depth in the tree (0: the root).
        depth: usize,
        /// The contract (C...).
        contract: String,
        /// The function name.
        function: String,
        /// The arguments as sent.
        args: Vec<ScVal>,
    },
    /// Creating a contract (`create_contract` host functions): never allowed by contract policy.
    CreateContract {
        /// Depth in the tree.
        depth: usize,
    },
}

/// Flattens `root` depth first; `None` when it holds more than [`MAX_CALLS`] nodes.
pub fn flatten(root: &SorobanAuthorizedInvocation) -> Option<Vec<Call>> {
    let mut calls = Vec::new();
    let mut stack = vec![(root, 0usize)];
    while let Some((node, depth)) = stack.pop() {
        if calls.len() >= MAX_CALLS {
            return None;
        }
        calls.push(match &node.function {
            SorobanAuthorizedFunction::ContractFn(args) => contract_call(args, depth),
            SorobanAuthorizedFunction::CreateContractHostFn(_)
            | SorobanAuthorizedFunction::CreateContractV2HostFn(_) => {
                Call::CreateContract { depth }
            }
        });
        // Reversed, so that the first sub-invocation is visited first.
        for sub in node.sub_invocations.iter().rev() {
            stack.push((sub, depth + 1));
        }
    }
    Some(calls)
}

/// A contract call node from its `InvokeContractArgs`.
pub fn contract_call(args: &InvokeContractArgs, depth: usize) -> Call {
    Call::Contract {
        depth,
        contract: address_string(&args.contract_address),
        function: String::from_utf8_lossy(args.function_name.0.as_slice()).into_owned(),
        args: args.args.to_vec(),
    }
}

/// An address as its strkey (G..., C..., M...); other kinds by their type.
pub fn address_string(address: &ScAddress) -> String {
    match address {
        ScAddress::Account(stellar_xdr::AccountId(
            stellar_xdr::PublicKey::PublicKeyTypeEd25519(key),
        )) => format!("{}", stellar_strkey::ed25519::PublicKey(key.0)),
        ScAddress::Contract(id) => format!("{}", stellar_strkey::Contract((id.0).0)),
        ScAddress::MuxedAccount(m) => format!(
            "{}",
            stellar_strkey::ed25519::MuxedAccount {
                ed25519: m.ed25519.0,
                id: m.id,
            }
        ),
        ScAddress::MuxedContract(m) => {
            format!("{}:{}", stellar_strkey::Contract((m.contract_id.0).0), m.id)
        }
        ScAddress::ClaimableBalance(_) => "claimable_balance".to_owned(),
        ScAddress::LiquidityPool(_) => "liquidity_pool".to_owned(),
    }
}

/// An `i128` argument.
pub fn i128_of(value: &ScVal) -> Option<i128> {
    match value {
        ScVal::I128(parts) => Some((i128::from(parts.hi) << 64) | i128::from(parts.lo)),
        _ => None,
    }
}

/// An address argument, as its strkey.
pub fn address_of(value: &ScVal) -> Option<String> {
    match value {
        ScVal::Address(address) => Some(address_string(address)),
        _ => None,
    }
}

/// What one call was, as recorded in the audit log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSummary {
    /// Depth in the tree (0: the root).
    pub depth: usize,
    /// The contract (C...), or `create_contract`.
    pub contract: String,
    /// The function.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub function: String,
    /// The first arguments, summarised: addresses as strkeys, integers in decimal, symbols and
    /// strings cut to 80 bytes, other values by their type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Arguments left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_truncated: Option<usize>,
}

/// Summaries of the first [`MAX_SUMMARISED_CALLS`] calls, and how many were left out.
pub fn summaries(calls: &[Call]) -> (Vec<CallSummary>, Option<usize>) {
    let listed = calls
        .iter()
        .take(MAX_SUMMARISED_CALLS)
        .map(|call| match call {
            Call::Contract {
                depth,
                contract,
                function,
                args,
            } => CallSummary {
                depth: *depth,
                contract: contract.clone(),
                function: cut(function),
                args: args
                    .iter()
                    .take(MAX_SUMMARISED_ARGS)
                    .map(arg_summary)
                    .collect(),
                args_truncated: (args.len() > MAX_SUMMARISED_ARGS)
                    .then(|| args.len() - MAX_SUMMARISED_ARGS),
            },
            Call::CreateContract { depth } => CallSummary {
                depth: *depth,
                contract: "create_contract".to_owned(),
                ..CallSummary::default()
            },
        })
        .collect();
    let left_out = calls.len().saturating_sub(MAX_SUMMARISED_CALLS);
    (listed, (left_out > 0).then_some(left_out))
}

/// One argument in words.
pub fn arg_summary(value: &ScVal) -> String {
    match value {
        ScVal::Address(address) => address_string(address),
        ScVal::I128(_) => i128_of(value).map(|v| v.to_string()).unwrap_or_default(),
        ScVal::U128(parts) => ((u128::from(parts.hi) << 64) | u128::from(parts.lo)).to_string(),
        ScVal::U32(v) => v.to_string(),
        ScVal::I32(v) => v.to_string(),
        ScVal::U64(v) => v.to_string(),
        ScVal::I64(v) => v.to_string(),
        ScVal::Bool(v) => v.to_string(),
        ScVal::Void => "void".to_owned(),
        ScVal::Symbol(s) => cut(&String::from_utf8_lossy(s.0.as_slice())),
        ScVal::String(s) => cut(&format!("{:?}", String::from_utf8_lossy(s.0.as_slice()))),
        other => other.discriminant().name().to_ascii_lowercase(),
    }
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_ARG_CHARS {
        return text.to_owned();
    }
    let mut end = MAX_ARG_CHARS;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
