//! One module per `signerd` subcommand. `main.rs` only parses arguments and dispatches here.

pub mod audit_show;
pub mod audit_verify;
pub mod dev_pki;
pub mod inspect_key;
pub mod serve;
