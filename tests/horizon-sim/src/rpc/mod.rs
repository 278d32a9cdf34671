//! Stellar RPC's side of the simulator: the same ledger, queue and history as Horizon's
//! endpoints, seen through RPC's JSON-RPC 2.0 methods.
//!
//! The shapes follow stellar-rpc v27.1 (its handlers in `cmd/stellar-rpc/internal/methods` and
//! the `protocols/rpc` types of go-stellar-sdk v0.7.0 they serialize, with their json tags:
//! camelCase names, 64-bit close times as strings where the tag says `,string`, XDR in base64),
//! served by creachadair/jrpc2's HTTP bridge as stellar-rpc does. Where that code and
//! developers.stellar.org's method pages disagree on a field's JSON type, the pages (the newer
//! of the two) win: `getHealth`'s close times are strings.
//!
//! - [`protocol`]: the JSON-RPC 2.0 envelope: requests, responses and error objects.
//! - [`methods`]: each method's parameters and result, answered from the [`crate::network`]
//!   state as one RPC node sees it ([`RpcNode`]).
//!
//! The HTTP side (`POST /rpc`, the faults) lives in `http::rpc`.

pub mod methods;
pub mod protocol;

pub use methods::RpcNode;
