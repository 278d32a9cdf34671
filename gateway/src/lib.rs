//! gateway: the HTTP/JSON service internal callers use. It owns users, wallets and API keys in
//! SQLite or Postgres, and gets keys (and, with issue 6, signatures) from signerd over mutual TLS.
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
//! - [`horizon`]: the Horizon client (HTTP/JSON, deadlines, retries, circuit breaker).
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
//! - [`error`]: the crate's error type and the one place it becomes an HTTP response.

pub mod api_key;
pub mod commands;
pub mod config;
pub mod error;
pub mod horizon;
pub mod http;
pub mod metrics;
pub mod model;
pub mod payments;
pub mod provision;
pub mod server;
pub mod signer;
pub mod store;
pub mod webhooks;
