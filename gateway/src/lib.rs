//! gateway: the HTTP/JSON service internal callers use. It owns users, wallets, API keys and
//! payments in SQLite or Postgres, gets keys and signatures from signerd over mutual TLS, and
//! submits payments to the Stellar network (Horizon or Stellar RPC).
//! It never holds private key material: a wallet row stores the signerd key id and the public key.
//!
//! # Layout
//!
//! - [`config`]: the TOML config, checked at load (errors name the field).
//! - [`model`]: ids and values parsed once at the edge (`UserId`, `ExternalRef`, `AccountId`, ...)
//!   and the records the API returns (`User`, `Wallet`, `AuditEvent`).
//! - [`api_key`]: bearer API keys: generation, hashing (only SHA-256 is stored), roles.
//! - [`store`]: the database (sqlx; SQLite or Postgres behind one pool), one module per table
//!   family, migrations embedded from `migrations/`.
//! - [`signer`]: the signerd client: mTLS, deadlines, retries on `UNAVAILABLE`, circuit breaker,
//!   request id in gRPC metadata.
//! - [`network`]: the [`network::Network`] trait, the one joint where the Stellar network
//!   plugs in, and its two backends: `network/horizon` (REST) and `network/rpc` (Stellar RPC,
//!   JSON-RPC 2.0); deadlines, retries, 429 `Retry-After`, circuit breaker.
//! - [`payments`]: payment values, the Stellar transaction, and the `PaymentWorker`.
//! - [`provision`]: wallet provisioning, the reserve → `CreateKey` → complete sequence that makes
//!   wallet creation atomic, idempotent and resumable.
//! - [`http`]: the axum router, middleware (request id, auth, rate limit, idempotency), handlers
//!   per resource, health, metrics and the OpenAPI document.
//! - [`metrics`]: the Prometheus registry.
//! - [`server`]: [`server::Gateway`]: start (connect, migrate) and `serve(listener, shutdown)`.
//! - [`commands`]: one module per CLI subcommand.
//! - [`webhooks`]: the event outbox's delivery: endpoint targets (URL rules), Standard Webhooks
//!   signatures, and the dispatcher that POSTs each event with retries, in order per wallet.
//! - [`deposits`]: deposit ingestion: one replica (a lease) follows the ledgers from a stored
//!   cursor and records the operations crediting the gateway's wallets (payments, also to muxed
//!   addresses, path payments, account creations and merges, claimable balance claims read from
//!   the transaction meta), with their `deposit.received` events, in the cursor's transaction;
//!   each payment and deposit also gets its place in the wallet's history (`store::history`).
//! - [`error`]: the crate's error type and the one place it becomes an HTTP response.

pub mod api_key;
pub mod commands;
pub mod config;
pub mod deposits;
pub mod error;
pub mod http;
pub mod metrics;
pub mod model;
pub mod network;
pub mod payments;
pub mod provision;
pub mod server;
pub mod signer;
pub mod store;
pub mod webhooks;
