//! Submitted transactions: the base64 `tx` field becomes a [`SubmittedTransaction`] once, here,
//! with the hashes computed for the simulator's network. Nothing past this module decodes XDR.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use stellar_xdr::{
    DecoratedSignature, FeeBumpTransactionInnerTx, LedgerBounds, Limits, Memo, MuxedAccount,
    Operation, Preconditions, ReadXdr, SignatureHint, TimeBounds, Transaction, TransactionEnvelope,
    TransactionExt, TransactionV0Ext, TransactionV1Envelope, Uint256, WriteXdr,
};

use crate::account::AccountKey;
use crate::error::{Error, Result};

/// How deep an envelope may nest while decoding: far more than any real transaction needs.
const XDR_DEPTH_LIMIT: u32 = 64;

/// A transaction hash (the SHA-256 of the network id and the tagged transaction).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxHash(pub [u8; 32]);

impl TxHash {
    /// Parses 64 hex digits (either case), as found in Horizon URLs.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = || Error::InvalidTransactionHash(text.chars().take(80).collect());
        if text.len() != 64 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| invalid())?;
        Ok(TxHash(bytes))
    }

    /// Lowercase hex, as Horizon writes it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<[u8; 32]> for TxHash {
    fn from(bytes: [u8; 32]) -> Self {
        TxHash(bytes)
    }
}

impl FromStr for TxHash {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        TxHash::parse(text)
    }
}

impl fmt::Display for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for TxHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl fmt::Debug for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxHash({})", self.to_hex())
    }
}

/// The outer transaction of a fee bump: who pays, how much, and their signatures.
#[derive(Clone, Debug)]
pub struct FeeBump {
    /// The account paying the fee (may be muxed).
    pub fee_source: MuxedAccount,
    /// The maximum fee, covering the inner operations plus one.
    pub fee: i64,
    /// Signatures over the outer (fee bump) hash.
    pub signatures: Vec<DecoratedSignature>,
    /// For each signature, the account it is a valid signature of (only the fee source can be).
    pub signers: Vec<Option<AccountKey>>,
    /// The hash of the inner transaction.
    pub inner_hash: TxHash,
}

/// Preconditions beyond time and ledger bounds (CAP-21), which the simulator does not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsupportedPrecondition {
    /// `min_seq_num`, `min_seq_age` or `min_seq_ledger_gap`.
    SequenceConditions,
    /// `extra_signers`.
    ExtraSigners,
    /// A Soroban transaction (`ext` v1).
    SorobanData,
}

impl fmt::Display for UnsupportedPrecondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnsupportedPrecondition::SequenceConditions => {
                "min_seq_num / min_seq_age / min_seq_ledger_gap preconditions"
            }
            UnsupportedPrecondition::ExtraSigners => "extra_signers preconditions",
            UnsupportedPrecondition::SorobanData => "Soroban transaction data",
        })
    }
}

/// A decoded envelope with everything validation needs, computed once.
///
/// For a fee bump, the fields other than [`SubmittedTransaction::fee_bump`] describe the inner
/// transaction, which is what carries the source, sequence number and operations.
#[derive(Clone, Debug)]
pub struct SubmittedTransaction {
    /// The decoded envelope.
    pub envelope: TransactionEnvelope,
    /// The envelope as base64, as Horizon shows it in `envelope_xdr`.
    pub envelope_xdr: String,
    /// The hash of the envelope (the outer hash for a fee bump).
    pub hash: TxHash,
    /// The fee bump wrapper, if any.
    pub fee_bump: Option<FeeBump>,
    /// The (inner) transaction's source account (may be muxed).
    pub source: MuxedAccount,
    /// The (inner) transaction's sequence number.
    pub sequence: i64,
    /// The (inner) transaction's maximum fee.
    pub fee: u32,
    /// The (inner) transaction's operations.
    pub operations: Vec<Operation>,
    /// The (inner) transaction's time bounds.
    pub time_bounds: Option<TimeBounds>,
    /// The (inner) transaction's ledger bounds.
    pub ledger_bounds: Option<LedgerBounds>,
    /// A precondition the simulator does not apply, if the transaction has one.
    pub unsupported: Option<UnsupportedPrecondition>,
    /// The (inner) transaction's memo.
    pub memo: Memo,
    /// Signatures over the (inner) transaction hash.
    pub signatures: Vec<DecoratedSignature>,
    /// For each signature, the account it is a valid signature of, among the accounts the
    /// transaction names as sources: verified once, here, so that no lock is held for the
    /// cryptography.
    pub signers: Vec<Option<AccountKey>>,
}

impl SubmittedTransaction {
    /// Decodes the base64 `tx` field of a submission for the network `network_id`.
    ///
    /// The whole input must be one envelope: trailing bytes are refused.
    pub fn decode(envelope_base64: &str, network_id: [u8; 32]) -> Result<Self> {
        let trimmed = envelope_base64.trim();
        let bytes = BASE64
            .decode(trimmed)
            .map_err(|e| Error::MalformedEnvelope(format!("not base64: {e}")))?;
        let limits = Limits {
            depth: XDR_DEPTH_LIMIT,
            len: bytes.len(),
        };
        let envelope = TransactionEnvelope::from_xdr(&bytes, limits)
            .map_err(|e| Error::MalformedEnvelope(e.to_string()))?;
        let hash = TxHash(
            envelope
                .hash(network_id)
                .map_err(|e| Error::MalformedEnvelope(format!("cannot hash: {e}")))?,
        );
        let mut parsed = match &envelope {
            TransactionEnvelope::TxV0(e) => SubmittedTransaction {
                envelope: envelope.clone(),
                envelope_xdr: trimmed.to_owned(),
                hash,
                fee_bump: None,
                source: MuxedAccount::Ed25519(Uint256(e.tx.source_account_ed25519.0)),
                sequence: e.tx.seq_num.0,
                fee: e.tx.fee,
                operations: e.tx.operations.to_vec(),
                time_bounds: e.tx.time_bounds.clone(),
                ledger_bounds: None,
                unsupported: match e.tx.ext {
                    TransactionV0Ext::V0 => None,
                },
                memo: e.tx.memo.clone(),
                signatures: e.signatures.to_vec(),
                signers: Vec::new(),
            },
            TransactionEnvelope::Tx(e) => {
                Self::from_v1(envelope.clone(), trimmed, hash, &e.tx, &e.signatures)
            }
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                let mut parsed = Self::from_v1(
                    envelope.clone(),
                    trimmed,
                    hash,
                    &inner.tx,
                    &inner.signatures,
                );
                let inner_hash = TxHash(
                    inner
                        .hash(network_id)
                        .map_err(|e| Error::MalformedEnvelope(format!("cannot hash: {e}")))?,
                );
                parsed.fee_bump = Some(FeeBump {
                    fee_source: e.tx.fee_source.clone(),
                    fee: e.tx.fee,
                    signatures: e.signatures.to_vec(),
                    signers: Vec::new(),
                    inner_hash,
                });
                parsed
            }
        };
        parsed.verify_signatures();
        Ok(parsed)
    }

    /// Fills in which account made each signature.
    fn verify_signatures(&mut self) {
        let source = self.source_account();
        let mut candidates = vec![source];
        for op in &self.operations {
            if let Some(op_source) = &op.source_account {
                let key = AccountKey::of_muxed(op_source);
                if !candidates.contains(&key) {
                    candidates.push(key);
                }
            }
        }
        let inner_hash = self.inner_hash().unwrap_or(self.hash);
        self.signers = self
            .signatures
            .iter()
            .map(|signature| signer_of(signature, &inner_hash, &candidates))
            .collect();
        let outer_hash = self.hash;
        if let Some(bump) = &mut self.fee_bump {
            let fee_source = [AccountKey::of_muxed(&bump.fee_source)];
            bump.signers = bump
                .signatures
                .iter()
                .map(|signature| signer_of(signature, &outer_hash, &fee_source))
                .collect();
        }
    }

    /// Signs `tx` with `signers` and decodes the envelope as if it had been submitted: how the
    /// simulator builds its own transactions (friendbot's) and how unit tests build theirs.
    pub fn sign(tx: Transaction, network_id: [u8; 32], signers: &[&SigningKey]) -> Result<Self> {
        let mut envelope = TransactionV1Envelope {
            tx,
            signatures: Default::default(),
        };
        let hash = envelope
            .hash(network_id)
            .map_err(|e| Error::MalformedEnvelope(format!("cannot hash: {e}")))?;
        envelope.signatures = signers
            .iter()
            .map(|key| decorated_signature(key, &hash))
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|_| Error::MalformedEnvelope("too many signatures".into()))?;
        let encoded = TransactionEnvelope::Tx(envelope)
            .to_xdr_base64(Limits::none())
            .map_err(|e| Error::MalformedEnvelope(e.to_string()))?;
        SubmittedTransaction::decode(&encoded, network_id)
    }

    fn from_v1(
        envelope: TransactionEnvelope,
        envelope_xdr: &str,
        hash: TxHash,
        tx: &stellar_xdr::Transaction,
        signatures: &[DecoratedSignature],
    ) -> Self {
        let (time_bounds, ledger_bounds, mut unsupported) = match &tx.cond {
            Preconditions::None => (None, None, None),
            Preconditions::Time(bounds) => (Some(bounds.clone()), None, None),
            Preconditions::V2(v2) => {
                let unsupported = if v2.min_seq_num.is_some()
                    || v2.min_seq_age.0 != 0
                    || v2.min_seq_ledger_gap != 0
                {
                    Some(UnsupportedPrecondition::SequenceConditions)
                } else if !v2.extra_signers.is_empty() {
                    Some(UnsupportedPrecondition::ExtraSigners)
                } else {
                    None
                };
                (
                    v2.time_bounds.clone(),
                    v2.ledger_bounds.clone(),
                    unsupported,
                )
            }
        };
        if matches!(tx.ext, TransactionExt::V1(_)) {
            unsupported = Some(UnsupportedPrecondition::SorobanData);
        }
        SubmittedTransaction {
            envelope,
            envelope_xdr: envelope_xdr.to_owned(),
            hash,
            fee_bump: None,
            source: tx.source_account.clone(),
            sequence: tx.seq_num.0,
            fee: tx.fee,
            operations: tx.operations.to_vec(),
            time_bounds,
            ledger_bounds,
            unsupported,
            memo: tx.memo.clone(),
            signatures: signatures.to_vec(),
            signers: Vec::new(),
        }
    }

    /// The account whose sequence number the transaction uses.
    pub fn source_account(&self) -> AccountKey {
        AccountKey::of_muxed(&self.source)
    }

    /// The account paying the fee: the fee bump's fee source, else the source.
    pub fn fee_account(&self) -> AccountKey {
        match &self.fee_bump {
            Some(bump) => AccountKey::of_muxed(&bump.fee_source),
            None => self.source_account(),
        }
    }

    /// The maximum fee the fee account agreed to pay.
    pub fn max_fee(&self) -> i64 {
        match &self.fee_bump {
            Some(bump) => bump.fee,
            None => i64::from(self.fee),
        }
    }

    /// The hash of the inner transaction for a fee bump.
    pub fn inner_hash(&self) -> Option<TxHash> {
        self.fee_bump.as_ref().map(|bump| bump.inner_hash)
    }

    /// How many operations the fee is charged for: the operations, plus one for a fee bump.
    pub fn fee_operation_count(&self) -> i64 {
        let operations = i64::try_from(self.operations.len()).unwrap_or(i64::MAX);
        if self.fee_bump.is_some() {
            operations.saturating_add(1)
        } else {
            operations
        }
    }
}

/// The account among `candidates` whose valid Ed25519 signature of `hash` `signature` is (its
/// hint must match the key's last four bytes, as stellar-core requires).
fn signer_of(
    signature: &DecoratedSignature,
    hash: &TxHash,
    candidates: &[AccountKey],
) -> Option<AccountKey> {
    let bytes = <[u8; 64]>::try_from(signature.signature.0.as_slice()).ok()?;
    let signature_value = Signature::from_bytes(&bytes);
    candidates.iter().copied().find(|key| {
        signature.hint.0 == key.signature_hint()
            && VerifyingKey::from_bytes(&key.0)
                .is_ok_and(|verifying| verifying.verify_strict(&hash.0, &signature_value).is_ok())
    })
}

/// `key`'s signature of `hash` with its hint (the last four bytes of the public key).
pub fn decorated_signature(key: &SigningKey, hash: &[u8; 32]) -> DecoratedSignature {
    let public = AccountKey(key.verifying_key().to_bytes());
    let signature = key.sign(hash).to_bytes();
    DecoratedSignature {
        hint: SignatureHint(public.signature_hint()),
        // 64 bytes always fit the 64-byte signature type.
        signature: stellar_xdr::Signature(signature.to_vec().try_into().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use stellar_xdr::WriteXdr;

    fn testnet_id() -> [u8; 32] {
        Sha256::digest(b"Test SDF Network ; September 2015").into()
    }

    #[test]
    fn hashes_parse_from_hex_and_print_lowercase() {
        let hash = TxHash([0xab; 32]);
        let text = hash.to_hex();
        assert_eq!(text.len(), 64);
        assert_eq!(TxHash::parse(&text.to_uppercase()).ok(), Some(hash));
        assert!(TxHash::parse("abc").is_err());
        assert!(TxHash::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        assert!(matches!(
            SubmittedTransaction::decode("not base64!!", testnet_id()),
            Err(Error::MalformedEnvelope(_))
        ));
        assert!(matches!(
            SubmittedTransaction::decode("AAAA", testnet_id()),
            Err(Error::MalformedEnvelope(_))
        ));
        let envelope = TransactionEnvelope::Tx(stellar_xdr::TransactionV1Envelope {
            tx: stellar_xdr::Transaction {
                source_account: MuxedAccount::Ed25519(Uint256([1; 32])),
                fee: 100,
                seq_num: stellar_xdr::SequenceNumber(5),
                cond: Preconditions::None,
                memo: Memo::None,
                operations: Default::default(),
                ext: TransactionExt::V0,
            },
            signatures: Default::default(),
        });
        let mut bytes = envelope
            .to_xdr(Limits::none())
            .unwrap_or_else(|e| panic!("{e}"));
        let good = BASE64.encode(&bytes);
        let parsed =
            SubmittedTransaction::decode(&good, testnet_id()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.sequence, 5);
        assert_eq!(
            parsed.hash.0,
            envelope
                .hash(testnet_id())
                .unwrap_or_else(|e| panic!("{e}"))
        );
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        assert!(SubmittedTransaction::decode(&BASE64.encode(&bytes), testnet_id()).is_err());
    }
}
