//! One module per `signerd` subcommand. `main.rs` only parses arguments and dispatches here.

pub mod dev_pki;
pub mod inspect_key;
pub mod serve;
