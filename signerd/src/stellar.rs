//! Stellar transactions as signerd understands them: untrusted envelope bytes are decoded once,
//! here, into a [`ParsedTransaction`] that carries the hashes signerd computed itself and the
//! accounts the transaction involves. Nothing past this module touches raw XDR.

use sha2::{Digest, Sha256};
use stellar_xdr::{
    FeeBumpTransactionInnerTx, Limits, MuxedAccount, Operation, ReadXdr, TransactionEnvelope,
};

use crate::error::{Error, Result};
use crate::keys::PublicKey;

/// A network passphrase as sent by a caller, e.g. `Test SDF Network ; September 2015`.
///
/// Real passphrases are short printable ASCII; anything else is refused before any hashing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetworkPassphrase(String);

impl NetworkPassphrase {
    /// The longest passphrase accepted. The longest in use today is 56 bytes.
    pub const MAX_LEN: usize = 128;

    /// Parses untrusted input.
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.trim().is_empty() {
            return Err(Error::InvalidArgument(
                "network passphrase must not be empty".into(),
            ));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(Error::InvalidArgument(format!(
                "network passphrase longer than {} bytes",
                Self::MAX_LEN
            )));
        }
        if !raw.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(Error::InvalidArgument(
                "network passphrase must be printable ascii".into(),
            ));
        }
        Ok(NetworkPassphrase(raw.to_owned()))
    }

    /// The passphrase as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The network id: sha256 of the passphrase.
    pub fn network_id(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// Which payload of an envelope a signature covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignedPayload {
    /// A v0 or v1 transaction.
    Transaction,
    /// The outer transaction of a fee bump.
    FeeBump,
    /// The inner transaction of a fee bump.
    InnerTransaction,
}

/// A decoded transaction envelope together with the hashes signerd computed for it.
#[derive(Clone, Debug)]
pub struct ParsedTransaction {
    /// The decoded envelope.
    pub envelope: TransactionEnvelope,
    /// The hash of the envelope itself (the outer transaction for a fee bump).
    pub tx_hash: [u8; 32],
    /// For a fee bump: the hash of the inner transaction.
    pub inner_tx_hash: Option<[u8; 32]>,
    /// For a fee bump: the account paying the fee.
    pub fee_source: Option<PublicKey>,
    /// The source account of the (inner) transaction.
    pub source: PublicKey,
    /// The sequence number of the (inner) transaction.
    pub sequence: i64,
}

impl ParsedTransaction {
    /// Decodes raw envelope XDR and computes its hashes for `network`.
    ///
    /// The whole input must be one envelope: trailing bytes are refused.
    pub fn decode(xdr: &[u8], network: &NetworkPassphrase) -> Result<Self> {
        let limits = Limits {
            depth: 64,
            len: xdr.len(),
        };
        let envelope = TransactionEnvelope::from_xdr(xdr, limits)
            .map_err(|e| Error::InvalidArgument(format!("malformed transaction envelope: {e}")))?;
        let network_id = network.network_id();
        let tx_hash = envelope
            .hash(network_id)
            .map_err(|e| Error::InvalidArgument(format!("cannot hash envelope: {e}")))?;
        let (inner_tx_hash, fee_source) = match &envelope {
            TransactionEnvelope::TxFeeBump(fee_bump) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &fee_bump.tx.inner_tx;
                let inner_hash = inner
                    .hash(network_id)
                    .map_err(|e| Error::InvalidArgument(format!("cannot hash envelope: {e}")))?;
                (
                    Some(inner_hash),
                    Some(muxed_ed25519(&fee_bump.tx.fee_source)),
                )
            }
            _ => (None, None),
        };
        let (source, sequence) = match &envelope {
            TransactionEnvelope::TxV0(e) => (PublicKey(e.tx.source_account_ed25519.0), e.tx.seq_num.0),
            TransactionEnvelope::Tx(e) => (muxed_ed25519(&e.tx.source_account), e.tx.seq_num.0),
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                (muxed_ed25519(&inner.tx.source_account), inner.tx.seq_num.0)
            }
        };
        Ok(ParsedTransaction {
            envelope,
            tx_hash,
            inner_tx_hash,
            fee_source,
            source,
            sequence,
        })
    }

    /// The operations of the (inner) transaction.
    pub fn operations(&self) -> &[Operation] {
        match &self.envelope {
            TransactionEnvelope::TxV0(e) => &e.tx.operations,
            TransactionEnvelope::Tx(e) => &e.tx.operations,
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                &inner.tx.operations
            }
        }
    }

    /// The accounts named as source of an operation (operations without their own source act for
    /// the transaction source and are not listed).
    pub fn operation_sources(&self) -> impl Iterator<Item = PublicKey> + '_ {
        self.operations()
            .iter()
            .filter_map(|op| op.source_account.as_ref().map(muxed_ed25519))
    }

    /// Which payload `key` is responsible for, and its hash: the fee source of a fee bump signs the
    /// outer transaction; anyone else signs the (inner) transaction.
    pub fn payload_for(&self, key: &PublicKey) -> (SignedPayload, [u8; 32]) {
        match (self.fee_source, self.inner_tx_hash) {
            (Some(fee_source), Some(_)) if fee_source == *key => {
                (SignedPayload::FeeBump, self.tx_hash)
            }
            (_, Some(inner)) => (SignedPayload::InnerTransaction, inner),
            _ => (SignedPayload::Transaction, self.tx_hash),
        }
    }
}

/// The Ed25519 key behind a possibly multiplexed account.
pub fn muxed_ed25519(account: &MuxedAccount) -> PublicKey {
    match account {
        MuxedAccount::Ed25519(key) => PublicKey(key.0),
        MuxedAccount::MuxedEd25519(muxed) => PublicKey(muxed.ed25519.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_rules() {
        assert!(NetworkPassphrase::parse("Test SDF Network ; September 2015").is_ok());
        assert!(NetworkPassphrase::parse("").is_err());
        assert!(NetworkPassphrase::parse("   ").is_err());
        assert!(NetworkPassphrase::parse(&"x".repeat(129)).is_err());
        assert!(NetworkPassphrase::parse("line\nbreak").is_err());
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        let net = NetworkPassphrase::parse("Test SDF Network ; September 2015").unwrap_or_else(|e| panic!("{e}"));
        assert!(ParsedTransaction::decode(b"not xdr at all", &net).is_err());
        assert!(ParsedTransaction::decode(&[], &net).is_err());
    }
}
