//! Bearer API keys. A key is `gwk_` followed by 64 hex digits (256 random bits). The gateway
//! stores only its SHA-256: a key has far too much entropy to brute-force from the hash, so a
//! plain fast hash is enough (no password-hashing KDF needed), and lookups are one indexed query.
//! The plaintext exists only in the output of `gateway api-key create` and in callers' requests.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::model::ApiKeyId;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Internal services: users and wallets.
    Service,
    /// Operators: everything a service may do, plus blocking, freezing and reading the audit log.
    Admin,
}

impl Role {
    /// Parses `service` or `admin`.
    pub fn parse(raw: &str) -> Result<Self> {
        match raw {
            "service" => Ok(Role::Service),
            "admin" => Ok(Role::Admin),
            other => Err(Error::Validation(format!(
                "role must be service or admin, got {:?}",
                crate::model::truncate_for_message(other)
            ))),
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Service => "service",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const PREFIX: &str = "gwk_";
const RANDOM_BYTES: usize = 32;

/// A plaintext API key. `Debug` never shows it.
pub struct ApiKeySecret(SecretString);

impl ApiKeySecret {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; RANDOM_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Config(format!("no randomness for an API key: {e}")))?;
        Ok(ApiKeySecret(SecretString::from(format!(
            "{PREFIX}{}",
            hex::encode(bytes)
        ))))
    }

    /// Parses a key a caller presented. Anything not shaped like a key is refused before the
    /// database is asked.
    pub fn parse(raw: &str) -> Option<Self> {
        let hex_part = raw.strip_prefix(PREFIX)?;
        let shaped = hex_part.len() == RANDOM_BYTES * 2
            && hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        shaped.then(|| ApiKeySecret(SecretString::from(raw.to_owned())))
    }

    /// The SHA-256 the database stores.
    pub fn hash(&self) -> ApiKeyHash {
        ApiKeyHash(hex::encode(Sha256::digest(
            self.0.expose_secret().as_bytes(),
        )))
    }

    /// The plaintext, for printing once at creation.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(***)")
    }
}

/// The hex SHA-256 of an API key: what the database stores and looks keys up by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyHash(String);

impl ApiKeyHash {
    /// The hash as stored (64 lowercase hex digits).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An authenticated caller: which key, with which role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The key's id (safe to log; recorded as the actor of audit events).
    pub key_id: ApiKeyId,
    /// The key's role.
    pub role: Role,
}

impl Caller {
    /// Refuses a caller whose role is not admin.
    pub fn require_admin(&self) -> Result<()> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Service => Err(Error::Forbidden(
                "this route needs an admin API key".to_owned(),
            )),
        }
    }
}

/// An API key as `gateway api-key list` shows it (never the secret, never the hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    /// The key's id.
    pub id: ApiKeyId,
    /// A label chosen at creation.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// When it was created.
    pub created_at: crate::model::Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<crate::model::Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash_stably() {
        let key = ApiKeySecret::generate().unwrap_or_else(|e| panic!("{e}"));
        let again = ApiKeySecret::parse(key.expose()).unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(key.hash(), again.hash());
        assert_eq!(key.hash().as_str().len(), 64);
        assert_ne!(key.hash().as_str(), key.expose());
        let other = ApiKeySecret::generate().unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(key.hash(), other.hash());
    }

    #[test]
    fn misshapen_keys_are_refused_before_lookup() {
        let good = ApiKeySecret::generate().unwrap_or_else(|e| panic!("{e}"));
        let upper = good.expose().to_uppercase();
        let short = &good.expose()[..20];
        for bad in ["", "gwk_", "Bearer x", upper.as_str(), short] {
            assert!(ApiKeySecret::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn debug_never_prints_the_key() {
        let key = ApiKeySecret::generate().unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{key:?}").contains(&key.expose()[4..]));
    }

    #[test]
    fn only_admins_pass_require_admin() {
        let caller = |role| Caller {
            key_id: ApiKeyId::generate(),
            role,
        };
        assert!(caller(Role::Admin).require_admin().is_ok());
        assert!(matches!(
            caller(Role::Service).require_admin(),
            Err(Error::Forbidden(_))
        ));
        assert_eq!(Role::parse("admin").ok(), Some(Role::Admin));
        assert!(Role::parse("root").is_err());
    }
}
