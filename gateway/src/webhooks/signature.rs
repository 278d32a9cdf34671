//! Standard Webhooks signatures (<https://www.standardwebhooks.com>, spec 1.0.0): a secret is
//! `whsec_` + base64 of random bytes; a message is signed as
//! `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")) where the key is
//! the secret's decoded bytes. Several signatures (one per live secret, during a rotation's
//! overlap) go space-separated in one `webhook-signature` header.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// The prefix the spec gives secrets.
const PREFIX: &str = "whsec_";
/// Random bytes in a generated secret (the spec asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// An endpoint's signing secret (`whsec_...`). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    text: String,
    key: Vec<u8>,
}

impl WebhookSecret {
    /// A fresh random secret.
    pub fn generate() -> Result<Self> {
        let mut key = vec![0u8; SECRET_BYTES];
        getrandom::fill(&mut key)
            .map_err(|e| Error::Config(format!("no randomness for a webhook secret: {e}")))?;
        Ok(WebhookSecret {
            text: format!("{PREFIX}{}", STANDARD.encode(&key)),
            key,
        })
    }

    /// Parses a stored secret.
    pub fn parse(text: &str) -> Result<Self> {
        let key = text
            .strip_prefix(PREFIX)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| Error::CorruptData("webhook secret is not whsec_<base64>".into()))?;
        Ok(WebhookSecret {
            text: text.to_owned(),
            key,
        })
    }

    /// The `whsec_...` text (shown once to the caller, and stored).
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length; new_from_slice cannot fail for it.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        mac.update(webhook_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// The `webhook-signature` header value: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[WebhookSecret],
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(webhook_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests (secret, id, timestamp
    /// and body), whose signature the Python reference library (`standardwebhooks` 1.1.0 from
    /// PyPI, `Webhook(secret).sign(...)`) gives as below.
    #[test]
    fn signs_the_reference_vector() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn generated_secrets_parse_back_and_differ() {
        let a = WebhookSecret::generate().unwrap_or_else(|e| panic!("{e}"));
        let b = WebhookSecret::generate().unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a, b);
        assert!(a.expose().starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(a.expose()).ok(), Some(a.clone()));
        assert!(!format!("{a:?}").contains("whsec_"));
        let header = signature_header(&[a.clone(), b.clone()], "evt_1", 1, b"{}");
        assert_eq!(
            header,
            format!(
                "{} {}",
                a.sign("evt_1", 1, b"{}"),
                b.sign("evt_1", 1, b"{}")
            )
        );
        assert!(WebhookSecret::parse("whsec_").is_err());
        assert!(WebhookSecret::parse("abc").is_err());
    }
}
