//! signerd: a small, paranoid signing daemon for Stellar. It holds key *handles* (never key
//! bytes), speaks only mutual-TLS gRPC, computes every transaction hash itself and signs only what
//! the caller's ACL allows.
//!
//! # Layout
//!
//! - [`config`]: the TOML config, checked at load.
//! - [`environment`]: erasing a secret (the PIN variable) from the process environment.
//! - [`tls`]: TLS 1.3 with mandatory client certificates; the caller identity comes from here.
//! - [`authz`]: the ACL mapping typed identities to grants (deny by default).
//! - [`trust`]: the TLS config and the ACL, reloaded together on `SIGHUP`.
//! - [`keys`]: key ids and public keys, parsed once.
//! - [`stellar`]: envelope decoding and hashing (the signer computes what it signs).
//! - [`policy`]: what a key may sign (network, sources, time bounds, fee, preconditions, the
//!   operation allowlist), decided before any signature exists.
//! - [`guard`]: the sequence guard (one transaction per network, source account and sequence).
//! - [`soroban`]: contract calls: authorization entries, their preimage, the contract policy,
//!   the current ledger and the nonce guard.
//! - [`sep10`]: SEP-10 challenge transactions, recognised and signed only for allowed domains.
//! - [`sep53`]: SEP-53 signed messages.
//! - [`limits`]: velocity caps and the denial budget.
//! - [`audit`]: the hash-chained audit log, its signed checkpoints, the anchor and guard snapshots.
//! - [`metrics`]: the Prometheus registry.
//! - [`backend`]: the [`backend::KeyBackend`] trait and the backends behind it
//!   ([`backend::pkcs11`], [`backend::gcp_kms`]).
//! - [`pool`]: keys generated ahead in the backend and bound to a key id on `CreateKey`; the
//!   refill task, its config, metrics and crash recovery.
//! - [`service`]: the `signer.v1.Signer` gRPC handlers.
//! - [`server`]: accept loop, health, graceful shutdown.
//! - [`pki`]: the development PKI behind `signerd dev-pki`.
//! - [`commands`]: one module per CLI subcommand.
//! - [`error`]: the crate's error type and its mapping to gRPC status.

pub mod audit;
pub mod authz;
pub mod backend;
pub mod commands;
pub mod config;
pub mod environment;
pub mod error;
pub mod guard;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod pool;
pub mod sep10;
pub mod sep53;
pub mod server;
pub mod service;
pub mod soroban;
pub mod stellar;
pub mod tls;
pub mod trust;
