//! The tamper-evident audit log.
//!
//! Append-only JSON Lines. Every record carries `seq` (1, 2, 3, ... across rotated files),
//! `prev_hash` (the previous record's hash; 64 zeros for the first) and `hash`, the SHA-256 of
//! the record's own JSON text without the trailing `hash` member. Editing, deleting, inserting or
//! reordering any record breaks the chain at that point. Signed checkpoints (an Ed25519 signature
//! by a dedicated audit key in the backend over a record's seq and hash) make a wholesale rewrite
//! with recomputed hashes, or a cut tail, detectable by anyone holding the audit public key.
//!
//! - [`anchor`]: the last checkpoint anchored in the backend, and what a log behind it means.
//! - [`chain`]: the line format: sealing a record and checking one.
//! - [`record`]: what a record says (written by the service, read by the tools).
//! - [`writer`]: the [`writer::AuditWriter`]: group commit (many records, one fsync), rotation,
//!   durability before a signature leaves.
//! - [`reader`]: walking a file or a directory of rotated files, verifying as it goes.
//! - [`checkpoint`]: what a checkpoint signs and how it is checked.
//! - [`log`]: the [`log::AuditLog`]: opening (verify, repair, rebuild the guard), checkpoints, close.

pub mod anchor;
pub mod chain;
pub mod checkpoint;
pub mod log;
pub mod reader;
pub mod record;
pub mod writer;
