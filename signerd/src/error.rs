//! The one error type of signerd, and the one place it becomes a gRPC status.
//!
//! Messages are short and lowercase. Only the category and a caller-safe message leave the
//! process: backend internals (PKCS#11 return values, file paths) are logged, never returned.

use tonic::{Code, Status};

/// Everything that can go wrong inside signerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is malformed (bad key id, bad XDR, bad passphrase, bad hash length).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The caller is authenticated but the ACL or a policy rule does not allow the request.
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// The key id is not known to any backend.
    #[error("key not found: {0}")]
    KeyNotFound(String),

    /// The backend (token, KMS) or the audit log cannot serve requests right now.
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// A bounded resource is full (the audit queue, a caller's denial budget): the caller should
    /// back off and retry.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),

    /// The configuration is invalid; the message names the field.
    #[error("config: {0}")]
    Config(String),

    /// A backend failed in a way that is not the caller's fault and not a known outage.
    #[error("backend: {0}")]
    Backend(String),

    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What signerd was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// TLS material could not be loaded or used.
    #[error("tls: {0}")]
    Tls(String),
}

impl Error {
    /// Wraps an I/O error with what signerd was doing when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias used throughout signerd.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(m) => Status::new(Code::InvalidArgument, m),
            Error::PermissionDenied(m) => Status::new(Code::PermissionDenied, m),
            Error::KeyNotFound(id) => Status::new(Code::NotFound, format!("key not found: {id}")),
            Error::Unavailable(m) => Status::new(Code::Unavailable, m),
            Error::ResourceExhausted(m) => Status::new(Code::ResourceExhausted, m),
            // Internal detail stays in the log; the caller only learns the category.
            Error::Config(_) | Error::Backend(_) | Error::Io { .. } | Error::Tls(_) => {
                Status::new(Code::Internal, "internal error")
            }
        }
    }
}
