//! SEP-53 signed messages: signerd signs `sha256("Stellar Signed Message:\n" + message)` over
//! the message the caller sends, never a hash the caller computed. The prefix keeps a message
//! signature from ever being a transaction or authorization signature.

use sha2::{Digest, Sha256};

use crate::policy::{Denial, Rule};

/// SEP-53's prefix.
pub const PREFIX: &[u8] = b"Stellar Signed Message:\n";

/// The longest message signed, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// A message signerd will sign, parsed from the caller's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message(Vec<u8>);

impl Message {
    /// Refuses an empty or oversized message, and one that looks like a hash: 32 bytes that
    /// are not text, or 64 hexadecimal characters. A caller holding a hash is asking for a
    /// blind signature, which `SignHash` (behind its own ACL grant) is for.
    pub fn parse(bytes: &[u8]) -> Result<Self, Denial> {
        let refuse = |why: String| Denial::new(Rule::Message, why);
        if bytes.is_empty() {
            return Err(refuse("the message is empty".into()));
        }
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(refuse(format!(
                "the message is longer than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        let text = std::str::from_utf8(bytes).ok();
        let is_text =
            text.is_some_and(|t| t.chars().all(|c| !c.is_control() || "\n\r\t".contains(c)));
        if bytes.len() == 32 && !is_text {
            return Err(refuse(
                "the message is 32 bytes of binary, a hash: signerd signs messages, not hashes"
                    .into(),
            ));
        }
        if bytes.len() == 64 && bytes.iter().all(u8::is_ascii_hexdigit) {
            return Err(refuse(
                "the message is 64 hexadecimal characters, a hash: signerd signs messages, not hashes".into(),
            ));
        }
        Ok(Message(bytes.to_vec()))
    }

    /// What is signed: `sha256(PREFIX + message)`.
    pub fn payload(&self) -> [u8; 32] {
        let mut digest = Sha256::new();
        digest.update(PREFIX);
        digest.update(&self.0);
        digest.finalize().into()
    }

    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (empty messages are refused); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_the_prefixed_hash() {
        let message = Message::parse(b"Hello, World!").unwrap_or_else(|d| panic!("{d}"));
        let expected: [u8; 32] = Sha256::digest(b"Stellar Signed Message:\nHello, World!").into();
        assert_eq!(message.payload(), expected);
    }

    #[test]
    fn hashes_are_not_messages() {
        let hash: [u8; 32] = Sha256::digest(b"a transaction").into();
        assert!(Message::parse(&hash).is_err());
        assert!(Message::parse(hex::encode(hash).as_bytes()).is_err());
        assert!(Message::parse(b"").is_err());
        assert!(Message::parse(&[b'a'; MAX_MESSAGE_BYTES + 1]).is_err());
        // 32 bytes of text is a message.
        assert!(Message::parse(b"login to example.com at 12:00:00").is_ok());
    }
}
