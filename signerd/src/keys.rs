//! Key identities and the public half of a key, parsed once at the edge.

use std::fmt;

use crate::error::{Error, Result};

/// A caller-chosen key id: `[A-Za-z0-9_-]{1,64}`. It is stored as the key's `CKA_ID` / CryptoKey id,
/// so its alphabet is kept to what every backend accepts verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// The longest key id accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses untrusted input into a key id.
    pub fn parse(raw: &str) -> Result<Self> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !raw.chars().all(valid_char) {
            return Err(Error::InvalidArgument(format!(
                "key id must match [A-Za-z0-9_-]{{1,{}}}",
                Self::MAX_LEN
            )));
        }
        Ok(KeyId(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A 32-byte Ed25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The Stellar account id (`G...`).
    pub fn account_id(&self) -> String {
        format!("{}", stellar_strkey::ed25519::PublicKey(self.0))
    }

    /// The signature hint: the last four bytes of the key.
    pub fn hint(&self) -> [u8; 4] {
        [self.0[28], self.0[29], self.0[30], self.0[31]]
    }
}

/// What signerd knows about a key: its id, its public half and where its private half lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The caller's id for the key.
    pub id: KeyId,
    /// The public half.
    pub public_key: PublicKey,
    /// The backend holding the private half.
    pub backend: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_accepts_the_documented_alphabet() {
        assert!(KeyId::parse("wallet_01-ABC").is_ok());
        assert!(KeyId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn key_id_rejects_empty_long_and_foreign_characters() {
        for bad in ["", "a b", "ключ", "a/b", "a*", "a.b", &"a".repeat(65)] {
            assert!(KeyId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hint_is_the_last_four_bytes() {
        let mut bytes = [0u8; 32];
        bytes[28..].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(PublicKey(bytes).hint(), [1, 2, 3, 4]);
    }
}
