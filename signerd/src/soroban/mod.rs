//! Soroban: contract calls signed only when signerd understands them.
//!
//! Contract calls are authorized by signatures over authorization entries, not over
//! transactions. signerd decodes the entry once, builds the `HashIdPreimage` itself, checks every
//! node of the invocation tree against the key's contract policy, bounds the expiration ledger by
//! a trusted current ledger, and keeps a nonce guard like the sequence guard.
//!
//! - [`auth`]: an unsigned `SorobanAuthorizationEntry` parsed at the edge, its preimage (V1, and
//!   the address-bound preimage of CAP-71) and the signed entry.
//! - [`invocation`]: the invocation tree flattened into calls, and their bounded audit summary.
//! - [`policy`]: the per-key contract policy (contracts, functions, SEP-41 token rules,
//!   expiration bound).
//! - [`ledger`]: the current ledger, read from a configured Stellar RPC endpoint with a bounded
//!   staleness.
//! - [`nonce_guard`]: one invocation per (network, address, nonce).

pub mod auth;
pub mod invocation;
pub mod ledger;
pub mod nonce_guard;
pub mod policy;

use serde::{Deserialize, Serialize};

/// What an audit record says about a contract authorization: whose, which nonce, until when,
/// and the calls (bounded, see [`invocation::summaries`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SorobanRecord {
    /// `address`, `address_v2`, `address_with_delegates`, or `source_account` (the
    /// transaction's signature authorizes it).
    pub credentials: String,
    /// The authorizing address (G... or C...).
    pub address: String,
    /// The credentials' nonce (a string: it is a 64-bit value); absent for source-account
    /// authorizations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The signature expiration ledger asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_ledger: Option<u32>,
    /// The current ledger signerd bounded it by, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_ledger: Option<u32>,
    /// What the nonce guard holds the nonce for (hex, see
    /// [`auth::UnsignedAuthEntry::invocation_hash`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_hash: Option<String>,
    /// The calls, depth first.
    pub calls: Vec<invocation::CallSummary>,
    /// Calls left out of `calls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_truncated: Option<usize>,
}
