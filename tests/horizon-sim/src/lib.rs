//! A Stellar network simulator: Horizon's real HTTP/JSON shapes and Stellar RPC's real JSON-RPC
//! methods over one simulated Stellar ledger, for tests and the local stack where the real
//! network cannot be reached. Not for production: it holds everything in memory and signs
//! friendbot transactions with keys anyone can derive.
//!
//! Horizon: `GET /accounts/{id}`, `GET /fee_stats`, `POST /transactions`,
//! `POST /transactions_async`, `GET /transactions/{hash}` and `GET /friendbot?addr=` as Horizon
//! does. Stellar RPC ([`HorizonSim::rpc_url`], `POST /rpc` on the same listener): `getHealth`,
//! `getNetwork`, `getLatestLedger`, `getLedgerEntries`, `sendTransaction`, `getTransaction`,
//! `getTransactions` and `getFeeStats` as stellar-rpc v27 answers them. Both are views of the
//! same state: the simulator decodes envelopes with stellar-xdr and checks them as stellar-core
//! would (network via the hash, signatures, sequence numbers, time bounds against its own ledger
//! clock, fees, balances and reserves); applies `create_account`, native `payment` (also to muxed
//! addresses) and native claimable balances (created sponsored by their creator, claimed by a
//! claimant), each transaction with its real result and meta XDR; closes ledgers on a timer or by
//! hand; and injects faults on demand, on both APIs alike (504 after or
//! without applying, 503, late ingestion, latency, outage) through `/_sim` or [`HorizonSim`] —
//! and the real network's unkindness: lagging nodes behind one URL, surge pricing, rate
//! limiting (429), other parties using a wallet's sequence numbers, merging accounts away, paying
//! it (also at a muxed address), creating claimable balances for it and claiming them for it,
//! pruned history (RPC's retention window), and friendbot behind a redirect.
//!
//! ```no_run
//! # async fn demo() -> Result<(), horizon_sim::Error> {
//! let sim = horizon_sim::HorizonSim::start(horizon_sim::SimConfig::default()).await?;
//! let horizon_url = sim.url(); // point a Horizon client here
//! let rpc_url = sim.rpc_url(); // or an RPC client here: the same ledger
//! sim.timeout_after_apply(1); // the next submission lands but its client sees a 504
//! sim.close_ledger(); // apply whatever is queued
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`config`]: [`SimConfig`], the settings of one simulator.
//! - [`sim`]: [`HorizonSim`], the running simulator and the handle tests drive; the shared state.
//! - [`network`]: stellar-core's side: the queue (one transaction per account), ledger closes,
//!   Horizon's ingested history, fee statistics, friendbot.
//! - [`ledger`]: accounts, the ledger clock, validating and applying one transaction.
//! - [`envelope`]: untrusted `tx` bytes become a [`SubmittedTransaction`], once.
//! - [`account`], [`amount`]: account keys and entries; stroops and Horizon's amount strings.
//! - [`results`]: `TransactionResult` XDR and Horizon's result code strings.
//! - [`faults`]: [`Faults`], what is injected.
//! - `submission`: Horizon's synchronous and asynchronous submission logic (RPC's
//!   `sendTransaction` is the asynchronous one), with faults.
//! - [`resources`], [`problem`]: Horizon's JSON resources and problem (error) documents.
//! - [`rpc`]: Stellar RPC's JSON-RPC 2.0 envelope and methods, read from the same network.
//! - `http`: the axum routes: Horizon's, RPC's `POST /rpc`, and the `/_sim` control API.
//! - [`error`]: the crate's one error type.
//! - `main.rs`: the `horizon-sim` binary for the local stack.

pub mod account;
pub mod amount;
pub mod config;
pub mod envelope;
pub mod error;
pub mod faults;
mod http;
pub mod ledger;
pub mod network;
pub mod problem;
pub mod resources;
pub mod results;
pub mod rpc;
pub mod sim;
mod submission;

pub use account::AccountKey;
pub use config::{SimConfig, TESTNET_PASSPHRASE};
pub use envelope::{SubmittedTransaction, TxHash};
pub use error::{Error, Result};
pub use faults::Faults;
pub use network::ClosedLedger;
pub use sim::{AppliedOperation, AppliedTransaction, HorizonSim, SimState, TransactionState};
