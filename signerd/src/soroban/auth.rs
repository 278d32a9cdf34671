//! Soroban authorization entries as signerd understands them: the caller's XDR is decoded once,
//! here, into an [`UnsignedAuthEntry`]; the preimage signerd signs is built from it, the network
//! and the expiration ledger, never taken from the caller.
//!
//! Which preimage (CAP-46-11, CAP-71):
//!
//! | credentials                 | preimage                                        |
//! |-----------------------------|-------------------------------------------------|
//! | `ADDRESS`                   | `ENVELOPE_TYPE_SOROBAN_AUTHORIZATION`           |
//! | `ADDRESS_V2`                | `ENVELOPE_TYPE_SOROBAN_AUTHORIZATION_WITH_ADDRESS` (binds the address) |
//! | `ADDRESS_WITH_DELEGATES`    | the same address-bound preimage, over the top-level address |
//! | `SOURCE_ACCOUNT`            | none: the transaction signature covers it (refused here) |

use sha2::{Digest, Sha256};
use stellar_xdr::{
    BytesM, EnvelopeType, Hash, HashIdPreimage, HashIdPreimageSorobanAuthorization,
    HashIdPreimageSorobanAuthorizationWithAddress, Limits, ReadXdr, ScAddress, ScBytes, ScMap,
    ScMapEntry, ScSymbol, ScVal, ScVec, SorobanAddressCredentials, SorobanAuthorizationEntry,
    SorobanCredentials, WriteXdr,
};

use crate::error::{Error, Result};
use crate::keys::PublicKey;
use crate::stellar::NetworkPassphrase;

/// The credentials of an entry signerd may sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialsKind {
    /// `SOROBAN_CREDENTIALS_ADDRESS` (CAP-46-11).
    Address,
    /// `SOROBAN_CREDENTIALS_ADDRESS_V2` (CAP-71): the preimage binds the address.
    AddressV2,
    /// `SOROBAN_CREDENTIALS_ADDRESS_WITH_DELEGATES` (CAP-71): address-bound, with delegated
    /// signers; signed only where the key's policy allows delegates.
    AddressWithDelegates,
}

impl CredentialsKind {
    /// The name in audit records and refusals.
    pub fn name(self) -> &'static str {
        match self {
            CredentialsKind::Address => "address",
            CredentialsKind::AddressV2 => "address_v2",
            CredentialsKind::AddressWithDelegates => "address_with_delegates",
        }
    }
}

/// An unsigned authorization entry, decoded once from untrusted bytes.
#[derive(Clone, Debug)]
pub struct UnsignedAuthEntry {
    /// The decoded entry.
    pub entry: SorobanAuthorizationEntry,
    /// Which credentials it carries.
    pub kind: CredentialsKind,
    /// The address whose authorization is asked for (the top-level address with delegates).
    pub address: ScAddress,
    /// The credentials' nonce.
    pub nonce: i64,
    /// SHA-256 of the credentials kind, the address, the nonce and the root invocation (XDR):
    /// what "the same entry" means to the nonce guard, whatever expiration or signature the
    /// caller left in it.
    pub invocation_hash: [u8; 32],
}

/// The largest entry accepted, in bytes; far above real entries (a few hundred bytes).
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

impl UnsignedAuthEntry {
    /// Decodes raw XDR. The whole input must be one entry; `SOURCE_ACCOUNT` credentials are
    /// refused (they have no signature of their own).
    pub fn decode(xdr: &[u8]) -> Result<Self> {
        if xdr.len() > MAX_ENTRY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "authorization entry longer than {MAX_ENTRY_BYTES} bytes"
            )));
        }
        let limits = Limits {
            depth: 64,
            len: xdr.len(),
        };
        let entry = SorobanAuthorizationEntry::from_xdr(xdr, limits).map_err(|e| {
            Error::InvalidArgument(format!("malformed soroban authorization entry: {e}"))
        })?;
        let (kind, credentials) = match &entry.credentials {
            SorobanCredentials::SourceAccount => {
                return Err(Error::InvalidArgument(
                    "source-account credentials are authorized by the transaction signature, not by SignAuthEntry".into(),
                ));
            }
            SorobanCredentials::Address(c) => (CredentialsKind::Address, c),
            SorobanCredentials::AddressV2(c) => (CredentialsKind::AddressV2, c),
            SorobanCredentials::AddressWithDelegates(d) => (
                CredentialsKind::AddressWithDelegates,
                &d.address_credentials,
            ),
        };
        let mut digest = Sha256::new();
        digest.update(kind.name().as_bytes());
        digest.update(to_xdr(&credentials.address)?);
        digest.update(credentials.nonce.to_be_bytes());
        digest.update(to_xdr(&entry.root_invocation)?);
        Ok(UnsignedAuthEntry {
            address: credentials.address.clone(),
            nonce: credentials.nonce,
            kind,
            invocation_hash: digest.finalize().into(),
            entry,
        })
    }

    /// The account the credentials name, when it is a plain account (G...).
    pub fn account(&self) -> Option<PublicKey> {
        match &self.address {
            ScAddress::Account(stellar_xdr::AccountId(
                stellar_xdr::PublicKey::PublicKeyTypeEd25519(key),
            )) => Some(PublicKey(key.0)),
            _ => None,
        }
    }

    /// The preimage signerd signs for this entry on `network`, valid until `expiration`.
    pub fn preimage(&self, network: &NetworkPassphrase, expiration: u32) -> HashIdPreimage {
        let network_id = Hash(network.network_id());
        let invocation = self.entry.root_invocation.clone();
        match self.kind {
            CredentialsKind::Address => {
                HashIdPreimage::SorobanAuthorization(HashIdPreimageSorobanAuthorization {
                    network_id,
                    nonce: self.nonce,
                    signature_expiration_ledger: expiration,
                    invocation,
                })
            }
            CredentialsKind::AddressV2 | CredentialsKind::AddressWithDelegates => {
                HashIdPreimage::SorobanAuthorizationWithAddress(
                    HashIdPreimageSorobanAuthorizationWithAddress {
                        network_id,
                        nonce: self.nonce,
                        signature_expiration_ledger: expiration,
                        address: self.address.clone(),
                        invocation,
                    },
                )
            }
        }
    }

    /// The preimage's XDR and its SHA-256, the payload signed.
    pub fn payload(&self, network: &NetworkPassphrase, expiration: u32) -> Result<Payload> {
        let preimage = self.preimage(network, expiration);
        debug_assert!(matches!(
            preimage.discriminant(),
            EnvelopeType::SorobanAuthorization | EnvelopeType::SorobanAuthorizationWithAddress
        ));
        let xdr = to_xdr(&preimage)?;
        let hash = Sha256::digest(&xdr).into();
        Ok(Payload { xdr, hash })
    }

    /// The entry with `expiration` and the signature set, the signature in the shape the
    /// Stellar account contract expects (what the SDKs' `authorize_entry` produces): a vec of
    /// one map `{public_key: bytes, signature: bytes}`.
    pub fn signed(
        &self,
        expiration: u32,
        key: &PublicKey,
        signature: &[u8; 64],
    ) -> Result<SorobanAuthorizationEntry> {
        let value = account_signature(key, signature)?;
        let mut entry = self.entry.clone();
        let set = |credentials: &mut SorobanAddressCredentials| {
            credentials.signature_expiration_ledger = expiration;
            credentials.signature = value.clone();
        };
        match &mut entry.credentials {
            SorobanCredentials::Address(c) | SorobanCredentials::AddressV2(c) => set(c),
            SorobanCredentials::AddressWithDelegates(d) => set(&mut d.address_credentials),
            SorobanCredentials::SourceAccount => {
                return Err(Error::InvalidArgument(
                    "source-account credentials have no signature".into(),
                ));
            }
        }
        Ok(entry)
    }
}

/// A preimage and what is signed.
#[derive(Clone, Debug)]
pub struct Payload {
    /// The `HashIdPreimage` XDR.
    pub xdr: Vec<u8>,
    /// Its SHA-256.
    pub hash: [u8; 32],
}

/// `[{public_key: key, signature: signature}]` as an `ScVal`.
pub fn account_signature(key: &PublicKey, signature: &[u8; 64]) -> Result<ScVal> {
    let bytes = |b: &[u8]| -> Result<ScVal> {
        BytesM::try_from(b.to_vec())
            .map(|b| ScVal::Bytes(ScBytes(b)))
            .map_err(|e| Error::Backend(format!("signature value: {e}")))
    };
    let symbol = |s: &str| -> Result<ScVal> {
        s.try_into()
            .map(|s| ScVal::Symbol(ScSymbol(s)))
            .map_err(|e| Error::Backend(format!("signature value: {e:?}")))
    };
    let map = ScMap(
        vec![
            ScMapEntry {
                key: symbol("public_key")?,
                val: bytes(&key.0)?,
            },
            ScMapEntry {
                key: symbol("signature")?,
                val: bytes(signature)?,
            },
        ]
        .try_into()
        .map_err(|e| Error::Backend(format!("signature value: {e:?}")))?,
    );
    let vec = ScVec(
        vec![ScVal::Map(Some(map))]
            .try_into()
            .map_err(|e| Error::Backend(format!("signature value: {e:?}")))?,
    );
    Ok(ScVal::Vec(Some(vec)))
}

/// XDR of a value signerd built or decoded; fails only past the default limits.
pub fn to_xdr<T: WriteXdr>(value: &T) -> Result<Vec<u8>> {
    value
        .to_xdr(Limits::none())
        .map_err(|e| Error::InvalidArgument(format!("cannot encode xdr: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use ed25519_dalek::{Signer, SigningKey};

    /// Entries, preimages and signed entries made by the reference Python SDK.
    const VECTORS: &str = include_str!("../../tests/vectors/soroban-auth-entries.jsonl");

    fn field<'a>(v: &'a serde_json::Value, name: &str) -> &'a str {
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("vector lacks {name}"))
    }

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_vector_preimage_payload_and_signed_entry_match_the_sdk() {
        let mut checked = 0;
        for line in VECTORS.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
            let name = field(&v, "name");
            let network = NetworkPassphrase::parse(field(&v, "network_passphrase"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let entry = UnsignedAuthEntry::decode(&b64(field(&v, "entry_xdr")))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let expiration = u32::try_from(v["valid_until_ledger"].as_u64().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let payload = entry
                .payload(&network, expiration)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                payload.xdr,
                b64(field(&v, "preimage_xdr")),
                "{name}: preimage"
            );
            assert_eq!(
                hex::encode(payload.hash),
                field(&v, "payload_hash"),
                "{name}: payload"
            );
            let expected_kind = if name.contains("-v2-") {
                CredentialsKind::AddressV2
            } else {
                CredentialsKind::Address
            };
            assert_eq!(entry.kind, expected_kind, "{name}");
            let public =
                stellar_strkey::ed25519::PublicKey::from_string(field(&v, "signer_public_key"))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(entry.account(), Some(PublicKey(public.0)), "{name}");

            // Ed25519 is deterministic: the vector key's signature over signerd's payload is
            // the SDK's, and the entry signerd assembles around it is the SDK's, byte for byte.
            let seed =
                stellar_strkey::ed25519::PrivateKey::from_string(field(&v, "signer_secret_seed"))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            let signature = SigningKey::from_bytes(&seed.0)
                .sign(&payload.hash)
                .to_bytes();
            assert_eq!(hex::encode(signature), field(&v, "signature_hex"), "{name}");
            let signed = entry
                .signed(expiration, &PublicKey(public.0), &signature)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                to_xdr(&signed).unwrap_or_default(),
                b64(field(&v, "signed_entry_xdr")),
                "{name}: signed entry"
            );
            checked += 1;
        }
        assert_eq!(checked, 12, "vectors read");
    }

    #[test]
    fn the_same_invocation_hashes_alike_whatever_expiration_or_signature_it_carries() {
        let line = VECTORS.lines().next().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
        let unsigned = UnsignedAuthEntry::decode(&b64(field(&v, "entry_xdr")))
            .unwrap_or_else(|e| panic!("{e}"));
        let signed = UnsignedAuthEntry::decode(&b64(field(&v, "signed_entry_xdr")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(unsigned.invocation_hash, signed.invocation_hash);
        let mut other = unsigned.entry.clone();
        other.root_invocation.sub_invocations = vec![other.root_invocation.clone()]
            .try_into()
            .unwrap_or_default();
        let other = UnsignedAuthEntry::decode(&to_xdr(&other).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(unsigned.invocation_hash, other.invocation_hash);
    }

    #[test]
    fn source_account_credentials_and_trailing_bytes_are_refused() {
        let line = VECTORS.lines().next().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
        let mut xdr = b64(field(&v, "entry_xdr"));
        let mut entry = UnsignedAuthEntry::decode(&xdr)
            .unwrap_or_else(|e| panic!("{e}"))
            .entry;
        xdr.extend_from_slice(&[0; 4]);
        assert!(UnsignedAuthEntry::decode(&xdr).is_err());
        entry.credentials = SorobanCredentials::SourceAccount;
        assert!(UnsignedAuthEntry::decode(&to_xdr(&entry).unwrap_or_default()).is_err());
    }
}
