//! The reference vectors in `tests/vectors/stellar-tx-hashes.jsonl`: envelopes with the hash and
//! signature the reference Python SDK computes, on testnet, public and futurenet.

use base64::Engine;
use serde::Deserialize;

const VECTORS: &str = include_str!("../vectors/stellar-tx-hashes.jsonl");

/// One reference vector.
#[derive(Clone, Debug, Deserialize)]
pub struct Vector {
    /// `tx-0`, `feebump-0`, `muxed-source`, ...
    pub name: String,
    /// The network the hash is for.
    pub network_passphrase: String,
    /// The envelope, base64 as in the file.
    #[serde(rename = "envelope_xdr")]
    pub envelope_base64: String,
    /// The transaction hash (hex) the SDK computed.
    pub tx_hash: String,
    /// The signer's public key (G...).
    pub signer_public_key: String,
    /// The SDK's signature (hex) over the hash.
    pub signature_hex: String,
    /// Source account (the fee source for fee bumps).
    pub source_account: String,
    /// Sequence number, absent for fee bumps.
    pub sequence: Option<String>,
}

impl Vector {
    /// The raw envelope XDR.
    pub fn envelope_xdr(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.envelope_base64)
            .unwrap_or_default()
    }

    /// Whether this is a fee-bump envelope.
    pub fn is_fee_bump(&self) -> bool {
        self.name.starts_with("feebump")
    }
}

/// Every reference vector, in file order.
pub fn all() -> Vec<Vector> {
    VECTORS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The first vector (a testnet payment): a well-formed envelope for tests about anything but
/// hashing.
pub fn first() -> Vector {
    all().into_iter().next().unwrap_or_else(|| Vector {
        name: "missing".into(),
        network_passphrase: String::new(),
        envelope_base64: String::new(),
        tx_hash: String::new(),
        signer_public_key: String::new(),
        signature_hex: String::new(),
        source_account: String::new(),
        sequence: None,
    })
}
