//! The one error type of the simulator. Answers to Horizon clients are not errors: a rejected
//! transaction is a normal outcome, rendered by [`crate::problem`]. These are the failures of the
//! simulator itself and of input it cannot even parse.

/// Everything that can go wrong in the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (names the field).
    #[error("invalid config: {0}")]
    Config(String),
    /// The listening socket could not be bound or served.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Not a G... account id.
    #[error("invalid account id: {0}")]
    InvalidAccountId(String),
    /// Not 64 hex digits.
    #[error("invalid transaction hash: {0}")]
    InvalidTransactionHash(String),
    /// The `tx` field is not a base64 XDR `TransactionEnvelope`.
    #[error("malformed transaction envelope: {0}")]
    MalformedEnvelope(String),
    /// A test asked to create an account that already exists.
    #[error("account already exists: {0}")]
    AccountExists(String),
    /// A test asked about an account that does not exist.
    #[error("no such account: {0}")]
    NoAccount(String),
    /// A balance that cannot exist (negative, or above the total supply).
    #[error("invalid balance: {0}")]
    InvalidBalance(String),
    /// A wait for a simulator condition ran past its deadline.
    #[error("timed out waiting for {0}")]
    WaitTimedOut(String),
}

/// The simulator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
