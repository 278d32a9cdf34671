//! What a checkpoint signs: SHA-256 over a domain tag, the covered record's seq (big-endian) and
//! its hash. Signing a fixed-size digest keeps the audit key's signatures distinct from
//! transaction signatures (which are over Stellar's own signature payload hashes).

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// Separates checkpoint signatures from every other use of an Ed25519 key.
pub const DOMAIN: &[u8] = b"stellar-signer/audit-checkpoint/v1";

/// The 32 bytes the audit key signs for a checkpoint over record `seq` with hash `hash`.
pub fn message(seq: u64, hash: &[u8; 32]) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(DOMAIN);
    digest.update(seq.to_be_bytes());
    digest.update(hash);
    digest.finalize().into()
}

/// Checks a checkpoint signature against the audit public key.
pub fn verify(public_key: &[u8; 32], seq: u64, hash: &[u8; 32], signature: &[u8]) -> bool {
    let Ok(signature) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    VerifyingKey::from_bytes(public_key).is_ok_and(|key| {
        key.verify(&message(seq, hash), &Signature::from_bytes(&signature))
            .is_ok()
    })
}
