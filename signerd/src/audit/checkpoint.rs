//! What a checkpoint signs, and how a signature is checked.
//!
//! **Version 2** (written since checkpoints carry `"version":2`): the audit key signs
//! `SHA-256("stellar-signer/audit-checkpoint/v2" || seq || covers_seq || covers_hash || final ||
//! time_ms || guard_digest)`, where `seq` is the checkpoint record's own position, `covers_seq`
//! and `covers_hash` the record right before it (`covers_seq = seq - 1`), `final` one byte (1 at
//! a clean shutdown, else 0), `time_ms` the record's time in Unix milliseconds, every integer a
//! big-endian u64, and `guard_digest` the SHA-256 of the sequence-guard snapshot saved with the
//! checkpoint (32 zero bytes when none). Everything a verifier relies on (which record is
//! covered, where the checkpoint stands, whether it seals the log, how old it is, which guard
//! state belongs to it) is therefore signed.
//!
//! **Version 1** (no `version` member; logs written before): the signature covers only
//! `SHA-256("stellar-signer/audit-checkpoint/v1" || covers_seq || covers_hash)`. Its `final`
//! flag, time and position are not signed, so the reader trusts a v1 checkpoint only for what it
//! signs (the chain up to `covers_seq`).
//!
//! A fixed-size digest with a domain tag keeps the audit key's signatures distinct from
//! transaction signatures (which are over Stellar's own signature payload hashes) and the two
//! versions distinct from each other.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// Separates version-1 checkpoint signatures from every other use of an Ed25519 key.
pub const DOMAIN_V1: &[u8] = b"stellar-signer/audit-checkpoint/v1";

/// Separates version-2 checkpoint signatures from every other use of an Ed25519 key.
pub const DOMAIN_V2: &[u8] = b"stellar-signer/audit-checkpoint/v2";

/// The `version` member of checkpoints written now.
pub const CURRENT_VERSION: u8 = 2;

/// The 32 bytes the audit key signed for a version-1 checkpoint over record `covers_seq`.
pub fn message_v1(covers_seq: u64, covers_hash: &[u8; 32]) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(DOMAIN_V1);
    digest.update(covers_seq.to_be_bytes());
    digest.update(covers_hash);
    digest.finalize().into()
}

/// Everything a version-2 checkpoint vouches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The checkpoint record's own seq.
    pub seq: u64,
    /// The record it covers: always `seq - 1`.
    pub covers_seq: u64,
    /// That record's hash.
    pub covers_hash: [u8; 32],
    /// Written at a clean shutdown: the log ends here until signerd starts again.
    pub is_final: bool,
    /// When it was written, Unix milliseconds (the record's `time_ms`).
    pub time_ms: u64,
    /// SHA-256 of the guard snapshot saved with it, or zeros.
    pub guard_digest: [u8; 32],
}

impl Claim {
    /// The 32 bytes the audit key signs.
    pub fn message(&self) -> [u8; 32] {
        let mut digest = Sha256::new();
        digest.update(DOMAIN_V2);
        digest.update(self.seq.to_be_bytes());
        digest.update(self.covers_seq.to_be_bytes());
        digest.update(self.covers_hash);
        digest.update([u8::from(self.is_final)]);
        digest.update(self.time_ms.to_be_bytes());
        digest.update(self.guard_digest);
        digest.finalize().into()
    }
}

/// Checks an Ed25519 signature over `message` against the audit public key.
pub fn verify(public_key: &[u8; 32], message: &[u8; 32], signature: &[u8]) -> bool {
    let Ok(signature) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    VerifyingKey::from_bytes(public_key).is_ok_and(|key| {
        key.verify(message, &Signature::from_bytes(&signature))
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_claimed_member_changes_the_message() {
        let claim = Claim {
            seq: 10,
            covers_seq: 9,
            covers_hash: [7; 32],
            is_final: false,
            time_ms: 1_700_000_000_000,
            guard_digest: [0; 32],
        };
        let variants = [
            Claim { seq: 11, ..claim },
            Claim {
                covers_seq: 8,
                ..claim
            },
            Claim {
                covers_hash: [6; 32],
                ..claim
            },
            Claim {
                is_final: true,
                ..claim
            },
            Claim {
                time_ms: claim.time_ms + 1,
                ..claim
            },
            Claim {
                guard_digest: [1; 32],
                ..claim
            },
        ];
        for variant in variants {
            assert_ne!(variant.message(), claim.message(), "{variant:?}");
        }
        assert_ne!(
            claim.message(),
            message_v1(claim.covers_seq, &claim.covers_hash)
        );
    }
}
