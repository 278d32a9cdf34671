//! Stellar transactions as signerd understands them: untrusted envelope bytes are decoded once,
//! here, into a [`ParsedTransaction`] that carries the hashes signerd computed itself and the
//! accounts the transaction involves. Nothing past this module touches raw XDR.

use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountId, Asset, ChangeTrustAsset, FeeBumpTransactionInnerTx, Limits, MuxedAccount, Operation,
    OperationBody, Preconditions, PublicKey as XdrPublicKey, ReadXdr, TimeBounds,
    TransactionEnvelope, WriteXdr,
};

use crate::error::{Error, Result};
use crate::guard::SequenceClaim;
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
    /// The network id the hashes were computed for.
    pub network_id: [u8; 32],
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
            TransactionEnvelope::TxV0(e) => {
                (PublicKey(e.tx.source_account_ed25519.0), e.tx.seq_num.0)
            }
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
            network_id,
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

    /// The time bounds of the (inner) transaction as `(min_time, max_time)` in Unix seconds;
    /// `max_time` 0 means "no upper bound".
    pub fn time_bounds(&self) -> Option<(u64, u64)> {
        let bounds: Option<&TimeBounds> = match &self.envelope {
            TransactionEnvelope::TxV0(e) => e.tx.time_bounds.as_ref(),
            TransactionEnvelope::Tx(e) => preconditions_time_bounds(&e.tx.cond),
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                preconditions_time_bounds(&inner.tx.cond)
            }
        };
        bounds.map(|b| (b.min_time.0, b.max_time.0))
    }

    /// The sequence preconditions of the (inner) transaction (CAP-21): each lets a transaction
    /// apply when its sequence is not simply the next one, or makes it wait.
    pub fn sequence_preconditions(&self) -> SequencePreconditions {
        let v2 = match &self.envelope {
            TransactionEnvelope::TxV0(_) => None,
            TransactionEnvelope::Tx(e) => preconditions_v2(&e.tx.cond),
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                preconditions_v2(&inner.tx.cond)
            }
        };
        v2.map(|v2| SequencePreconditions {
            min_seq_num: v2.min_seq_num.as_ref().map(|s| s.0),
            min_seq_age: v2.min_seq_age.0,
            min_seq_ledger_gap: v2.min_seq_ledger_gap,
        })
        .unwrap_or_default()
    }

    /// The fee `key`'s signature commits to, in stroops: the outer fee for the fee source of a
    /// fee bump, else the (inner) transaction's fee.
    pub fn fee_for(&self, key: &PublicKey) -> i64 {
        match (&self.envelope, self.payload_for(key).0) {
            (TransactionEnvelope::TxFeeBump(e), SignedPayload::FeeBump) => e.tx.fee,
            (TransactionEnvelope::TxV0(e), _) => i64::from(e.tx.fee),
            (TransactionEnvelope::Tx(e), _) => i64::from(e.tx.fee),
            (TransactionEnvelope::TxFeeBump(e), _) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                i64::from(inner.tx.fee)
            }
        }
    }

    /// The account that acts for each operation: its own source, else the transaction source.
    pub fn effective_operation_sources(&self) -> impl Iterator<Item = PublicKey> + '_ {
        self.operations().iter().map(|op| {
            op.source_account
                .as_ref()
                .map(muxed_ed25519)
                .unwrap_or(self.source)
        })
    }

    /// The sequence numbers of the transaction source this transaction can consume: from
    /// `min_seq_num` + 1 (else its own sequence) up to its own sequence, or up to a higher
    /// `bump_sequence` target of an operation acting for the transaction source.
    pub fn sequence_claim(&self) -> SequenceClaim {
        let own = self.sequence;
        let first = self
            .sequence_preconditions()
            .min_seq_num
            .map_or(own, |min| min.saturating_add(1).min(own));
        let bumped_to = self
            .operations()
            .iter()
            .zip(self.effective_operation_sources())
            .filter(|(_, source)| *source == self.source)
            .filter_map(|(op, _)| match &op.body {
                OperationBody::BumpSequence(bump) => Some(bump.bump_to.0),
                _ => None,
            })
            .max();
        SequenceClaim {
            network: self.network_id,
            account: self.source,
            first,
            last: bumped_to.map_or(own, |to| to.max(own)),
        }
    }

    /// The hash that identifies "the transaction with this (source, sequence)": the inner
    /// transaction's hash for a fee bump (a new fee bump around the same inner transaction is
    /// the same payment), else the transaction hash.
    pub fn sequence_hash(&self) -> [u8; 32] {
        self.inner_tx_hash.unwrap_or(self.tx_hash)
    }

    /// A summary of every operation, for the audit log.
    pub fn operation_summaries(&self) -> Vec<OperationSummary> {
        self.operations().iter().map(OperationSummary::of).collect()
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

fn preconditions_v2(cond: &Preconditions) -> Option<&stellar_xdr::PreconditionsV2> {
    match cond {
        Preconditions::V2(v2) => Some(v2),
        _ => None,
    }
}

/// The sequence preconditions of a transaction; all absent (zero) by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequencePreconditions {
    /// `min_seq_num`: the transaction applies while the account's sequence is anywhere from this
    /// up to its own sequence - 1 (and so can jump over, and kill, a pending transaction).
    pub min_seq_num: Option<i64>,
    /// `min_seq_age` (seconds), 0 when absent.
    pub min_seq_age: u64,
    /// `min_seq_ledger_gap` (ledgers), 0 when absent.
    pub min_seq_ledger_gap: u32,
}

impl SequencePreconditions {
    /// Whether any of the three is set.
    pub fn any(&self) -> bool {
        self.min_seq_num.is_some() || self.min_seq_age > 0 || self.min_seq_ledger_gap > 0
    }
}

fn preconditions_time_bounds(cond: &Preconditions) -> Option<&TimeBounds> {
    match cond {
        Preconditions::None => None,
        Preconditions::Time(bounds) => Some(bounds),
        Preconditions::V2(v2) => v2.time_bounds.as_ref(),
    }
}

/// The snake_case name of an operation type, as used in policy config (`payment`,
/// `create_account`, `set_options`, `account_merge`, ...).
pub fn operation_type_name(body: &OperationBody) -> String {
    let camel = body.discriminant().name();
    let mut snake = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

/// Every operation type name signerd knows, for checking policy config.
pub fn all_operation_type_names() -> Vec<String> {
    stellar_xdr::OperationType::VARIANTS
        .iter()
        .map(|t| operation_type_name(&default_body(*t)))
        .collect()
}

fn default_body(t: stellar_xdr::OperationType) -> OperationBody {
    use stellar_xdr::OperationType as T;
    // Only the discriminant matters; bodies with payloads get their defaults.
    match t {
        T::CreateAccount => OperationBody::CreateAccount(Default::default()),
        T::Payment => OperationBody::Payment(Default::default()),
        T::PathPaymentStrictReceive => OperationBody::PathPaymentStrictReceive(Default::default()),
        T::ManageSellOffer => OperationBody::ManageSellOffer(Default::default()),
        T::CreatePassiveSellOffer => OperationBody::CreatePassiveSellOffer(Default::default()),
        T::SetOptions => OperationBody::SetOptions(Default::default()),
        T::ChangeTrust => OperationBody::ChangeTrust(Default::default()),
        T::AllowTrust => OperationBody::AllowTrust(Default::default()),
        T::AccountMerge => OperationBody::AccountMerge(Default::default()),
        T::Inflation => OperationBody::Inflation,
        T::ManageData => OperationBody::ManageData(Default::default()),
        T::BumpSequence => OperationBody::BumpSequence(Default::default()),
        T::ManageBuyOffer => OperationBody::ManageBuyOffer(Default::default()),
        T::PathPaymentStrictSend => OperationBody::PathPaymentStrictSend(Default::default()),
        T::CreateClaimableBalance => OperationBody::CreateClaimableBalance(Default::default()),
        T::ClaimClaimableBalance => OperationBody::ClaimClaimableBalance(Default::default()),
        T::BeginSponsoringFutureReserves => {
            OperationBody::BeginSponsoringFutureReserves(Default::default())
        }
        T::EndSponsoringFutureReserves => OperationBody::EndSponsoringFutureReserves,
        T::RevokeSponsorship => OperationBody::RevokeSponsorship(Default::default()),
        T::Clawback => OperationBody::Clawback(Default::default()),
        T::ClawbackClaimableBalance => OperationBody::ClawbackClaimableBalance(Default::default()),
        T::SetTrustLineFlags => OperationBody::SetTrustLineFlags(Default::default()),
        T::LiquidityPoolDeposit => OperationBody::LiquidityPoolDeposit(Default::default()),
        T::LiquidityPoolWithdraw => OperationBody::LiquidityPoolWithdraw(Default::default()),
        T::InvokeHostFunction => OperationBody::InvokeHostFunction(Default::default()),
        T::ExtendFootprintTtl => OperationBody::ExtendFootprintTtl(Default::default()),
        T::RestoreFootprint => OperationBody::RestoreFootprint(Default::default()),
    }
}

/// What one operation does, as recorded in the audit log: type, its own source if any, and for
/// value-moving operations the destination, asset and amount (a decimal string, 7 places).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OperationSummary {
    /// Operation type (snake_case).
    #[serde(rename = "type")]
    pub op_type: String,
    /// The operation's own source account, when it has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<String>,
    /// Receiving account.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destination: Option<String>,
    /// `native` or `CODE:ISSUER`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub asset: Option<String>,
    /// Amount in units of the asset (stroops / 10^7).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub amount: Option<String>,
    /// What the members above leave out of this operation, named rather than dropped (e.g.
    /// `price, offer_id` for an offer, `body` for a type with no summary at all).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub not_summarised: Option<String>,
    /// The whole operation as base64 XDR, when something is not summarised and it is at most
    /// [`OperationSummary::MAX_XDR_BYTES`] long (longer ones are only named, with their size).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xdr: Option<String>,
}

impl OperationSummary {
    /// The largest operation whose XDR is copied into the record: enough for every classic
    /// operation, while a caller cannot make each (even refused) request write a large record.
    pub const MAX_XDR_BYTES: usize = 1024;

    fn of(op: &Operation) -> Self {
        let mut summary = OperationSummary {
            op_type: operation_type_name(&op.body),
            source: op.source_account.as_ref().map(muxed_address),
            destination: None,
            asset: None,
            amount: None,
            not_summarised: None,
            xdr: None,
        };
        let left_out = match &op.body {
            OperationBody::CreateAccount(_)
            | OperationBody::Payment(_)
            | OperationBody::AccountMerge(_)
            | OperationBody::ChangeTrust(_)
            | OperationBody::Clawback(_) => None,
            OperationBody::PathPaymentStrictReceive(_) => Some("send_asset, send_max, path"),
            OperationBody::PathPaymentStrictSend(_) => Some("dest_asset, dest_min, path"),
            OperationBody::ManageSellOffer(_) => Some("buying, price, offer_id"),
            OperationBody::ManageBuyOffer(_) => Some("selling, price, offer_id"),
            OperationBody::CreatePassiveSellOffer(_) => Some("buying, price"),
            _ => Some("body"),
        };
        if let Some(left_out) = left_out {
            let xdr = op.to_xdr(Limits::none()).unwrap_or_default();
            if xdr.len() <= Self::MAX_XDR_BYTES {
                summary.not_summarised = Some(left_out.to_owned());
                summary.xdr = Some(base64::engine::general_purpose::STANDARD.encode(&xdr));
            } else {
                summary.not_summarised = Some(format!(
                    "{left_out} ({} bytes of XDR, not copied)",
                    xdr.len()
                ));
            }
        }
        let (destination, asset, amount) = match &op.body {
            OperationBody::CreateAccount(o) => (
                Some(account_address(&o.destination)),
                Some("native".to_owned()),
                Some(o.starting_balance),
            ),
            OperationBody::Payment(o) => (
                Some(muxed_address(&o.destination)),
                Some(asset_name(&o.asset)),
                Some(o.amount),
            ),
            OperationBody::PathPaymentStrictReceive(o) => (
                Some(muxed_address(&o.destination)),
                Some(asset_name(&o.dest_asset)),
                Some(o.dest_amount),
            ),
            OperationBody::PathPaymentStrictSend(o) => (
                Some(muxed_address(&o.destination)),
                Some(asset_name(&o.send_asset)),
                Some(o.send_amount),
            ),
            OperationBody::AccountMerge(destination) => {
                (Some(muxed_address(destination)), None, None)
            }
            OperationBody::ChangeTrust(o) => {
                let asset = match &o.line {
                    ChangeTrustAsset::Native => "native".to_owned(),
                    ChangeTrustAsset::CreditAlphanum4(a) => {
                        format!("{}:{}", code(&a.asset_code.0), account_address(&a.issuer))
                    }
                    ChangeTrustAsset::CreditAlphanum12(a) => {
                        format!("{}:{}", code(&a.asset_code.0), account_address(&a.issuer))
                    }
                    ChangeTrustAsset::PoolShare(_) => "liquidity_pool_shares".to_owned(),
                };
                (None, Some(asset), Some(o.limit))
            }
            OperationBody::ManageSellOffer(o) => {
                (None, Some(asset_name(&o.selling)), Some(o.amount))
            }
            OperationBody::ManageBuyOffer(o) => {
                (None, Some(asset_name(&o.buying)), Some(o.buy_amount))
            }
            OperationBody::CreatePassiveSellOffer(o) => {
                (None, Some(asset_name(&o.selling)), Some(o.amount))
            }
            OperationBody::Clawback(o) => (
                Some(muxed_address(&o.from)),
                Some(asset_name(&o.asset)),
                Some(o.amount),
            ),
            _ => (None, None, None),
        };
        summary.destination = destination;
        summary.asset = asset;
        summary.amount = amount.map(format_amount);
        summary
    }
}

/// Formats stroops as a decimal amount with 7 places (`12.3456789`).
pub fn format_amount(stroops: i64) -> String {
    let sign = if stroops < 0 { "-" } else { "" };
    let abs = stroops.unsigned_abs();
    format!("{sign}{}.{:07}", abs / 10_000_000, abs % 10_000_000)
}

fn asset_name(asset: &Asset) -> String {
    match asset {
        Asset::Native => "native".to_owned(),
        Asset::CreditAlphanum4(a) => {
            format!("{}:{}", code(&a.asset_code.0), account_address(&a.issuer))
        }
        Asset::CreditAlphanum12(a) => {
            format!("{}:{}", code(&a.asset_code.0), account_address(&a.issuer))
        }
    }
}

fn code(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn account_address(account: &AccountId) -> String {
    let XdrPublicKey::PublicKeyTypeEd25519(key) = &account.0;
    PublicKey(key.0).account_id()
}

/// The strkey of a possibly multiplexed account (`G...` or `M...`).
pub fn muxed_address(account: &MuxedAccount) -> String {
    match account {
        MuxedAccount::Ed25519(key) => PublicKey(key.0).account_id(),
        MuxedAccount::MuxedEd25519(m) => format!(
            "{}",
            stellar_strkey::ed25519::MuxedAccount {
                ed25519: m.ed25519.0,
                id: m.id,
            }
        ),
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
    use base64::Engine;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    /// Envelopes with the hash and signature computed by the reference Python SDK.
    const VECTORS: &str = include_str!("../../tests/vectors/stellar-tx-hashes.jsonl");

    fn field<'a>(v: &'a serde_json::Value, name: &str) -> &'a str {
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("vector lacks {name}"))
    }

    #[test]
    fn reference_vectors_hash_and_pick_the_payload_the_signer_signed() {
        let mut checked = 0;
        for line in VECTORS.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
            let name = field(&v, "name");
            let network = NetworkPassphrase::parse(field(&v, "network_passphrase"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let xdr = base64::engine::general_purpose::STANDARD
                .decode(field(&v, "envelope_xdr"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let tx =
                ParsedTransaction::decode(&xdr, &network).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                hex::encode(tx.tx_hash),
                field(&v, "tx_hash"),
                "{name}: tx hash"
            );

            let signer =
                stellar_strkey::ed25519::PublicKey::from_string(field(&v, "signer_public_key"))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            let (payload, hash) = tx.payload_for(&PublicKey(signer.0));
            let expected = if tx.inner_tx_hash.is_some() {
                SignedPayload::FeeBump
            } else {
                SignedPayload::Transaction
            };
            assert_eq!(payload, expected, "{name}");
            assert_eq!(hash, tx.tx_hash, "{name}");

            // The reference signature verifies over the hash signerd would sign.
            let key = VerifyingKey::from_bytes(&signer.0).unwrap_or_else(|e| panic!("{name}: {e}"));
            let sig_bytes: [u8; 64] = hex::decode(field(&v, "signature_hex"))
                .ok()
                .and_then(|b| b.try_into().ok())
                .unwrap_or_else(|| panic!("{name}: bad signature_hex"));
            assert!(
                key.verify(&hash, &Signature::from_bytes(&sig_bytes))
                    .is_ok(),
                "{name}: signature"
            );

            match v["sequence"].as_str() {
                Some(seq) => {
                    assert_eq!(tx.sequence.to_string(), seq, "{name}: sequence");
                    assert_eq!(
                        tx.source.account_id(),
                        field(&v, "source_account"),
                        "{name}: source"
                    );
                }
                None => assert_eq!(
                    tx.fee_source.map(|k| k.account_id()).as_deref(),
                    Some(field(&v, "source_account")),
                    "{name}: fee source"
                ),
            }
            checked += 1;
        }
        assert!(checked >= 13, "only {checked} vectors read");
    }

    #[test]
    fn fee_bump_inner_signers_get_the_inner_hash() {
        let line = VECTORS
            .lines()
            .find(|l| l.contains("\"feebump-0\""))
            .unwrap_or_else(|| panic!("no feebump-0"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
        let network = NetworkPassphrase::parse(field(&v, "network_passphrase"))
            .unwrap_or_else(|e| panic!("{e}"));
        let xdr = base64::engine::general_purpose::STANDARD
            .decode(field(&v, "envelope_xdr"))
            .unwrap_or_else(|e| panic!("{e}"));
        let tx = ParsedTransaction::decode(&xdr, &network).unwrap_or_else(|e| panic!("{e}"));
        let (payload, hash) = tx.payload_for(&tx.source);
        assert_eq!(payload, SignedPayload::InnerTransaction);
        assert_eq!(Some(hash), tx.inner_tx_hash);
        assert_ne!(hash, tx.tx_hash);
    }

    #[test]
    fn the_same_envelope_hashes_differently_on_another_network() {
        let line = VECTORS
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no vectors"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
        let xdr = base64::engine::general_purpose::STANDARD
            .decode(field(&v, "envelope_xdr"))
            .unwrap_or_else(|e| panic!("{e}"));
        let other = NetworkPassphrase::parse("Public Global Stellar Network ; September 2015")
            .unwrap_or_else(|e| panic!("{e}"));
        let tx = ParsedTransaction::decode(&xdr, &other).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(hex::encode(tx.tx_hash), field(&v, "tx_hash"));
    }

    #[test]
    fn trailing_bytes_after_a_valid_envelope_are_refused() {
        let line = VECTORS
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no vectors"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
        let mut xdr = base64::engine::general_purpose::STANDARD
            .decode(field(&v, "envelope_xdr"))
            .unwrap_or_else(|e| panic!("{e}"));
        let network = NetworkPassphrase::parse(field(&v, "network_passphrase"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ParsedTransaction::decode(&xdr, &network).is_ok());
        xdr.extend_from_slice(&[0, 0, 0, 0]);
        assert!(ParsedTransaction::decode(&xdr, &network).is_err());
        xdr.truncate(xdr.len() - 8);
        assert!(ParsedTransaction::decode(&xdr, &network).is_err());
    }

    #[test]
    fn v0_envelopes_hash_like_their_v1_equivalent() {
        use stellar_xdr::{
            Memo, Preconditions, SequenceNumber, Transaction, TransactionExt, TransactionV0,
            TransactionV0Envelope, TransactionV0Ext, TransactionV1Envelope, Uint256, WriteXdr,
        };
        let operations: Vec<Operation> = Vec::new();
        let v0 = TransactionEnvelope::TxV0(TransactionV0Envelope {
            tx: TransactionV0 {
                source_account_ed25519: Uint256([1; 32]),
                fee: 100,
                seq_num: SequenceNumber(77),
                time_bounds: None,
                memo: Memo::None,
                operations: operations.clone().try_into().unwrap_or_default(),
                ext: TransactionV0Ext::V0,
            },
            signatures: Default::default(),
        });
        let v1 = TransactionEnvelope::Tx(TransactionV1Envelope {
            tx: Transaction {
                source_account: MuxedAccount::Ed25519(Uint256([1; 32])),
                fee: 100,
                seq_num: SequenceNumber(77),
                cond: Preconditions::None,
                memo: Memo::None,
                operations: operations.try_into().unwrap_or_default(),
                ext: TransactionExt::V0,
            },
            signatures: Default::default(),
        });
        let network = NetworkPassphrase::parse("Test SDF Network ; September 2015")
            .unwrap_or_else(|e| panic!("{e}"));
        let decode = |env: &TransactionEnvelope| {
            let xdr = env.to_xdr(Limits::none()).unwrap_or_else(|e| panic!("{e}"));
            ParsedTransaction::decode(&xdr, &network).unwrap_or_else(|e| panic!("{e}"))
        };
        let (a, b) = (decode(&v0), decode(&v1));
        assert_eq!(a.tx_hash, b.tx_hash);
        assert_eq!((a.source, a.sequence), (PublicKey([1; 32]), 77));
        assert_eq!(
            a.payload_for(&PublicKey([1; 32])),
            (SignedPayload::Transaction, b.tx_hash)
        );
    }

    /// A v1 transaction from `source` at `sequence` with `cond` and `operations`, decoded.
    fn decoded(
        source: [u8; 32],
        sequence: i64,
        cond: Preconditions,
        operations: Vec<Operation>,
    ) -> ParsedTransaction {
        use stellar_xdr::{
            Memo, SequenceNumber, Transaction, TransactionExt, TransactionV1Envelope, Uint256,
        };
        let envelope = TransactionEnvelope::Tx(TransactionV1Envelope {
            tx: Transaction {
                source_account: MuxedAccount::Ed25519(Uint256(source)),
                fee: 100,
                seq_num: SequenceNumber(sequence),
                cond,
                memo: Memo::None,
                operations: operations.try_into().unwrap_or_default(),
                ext: TransactionExt::V0,
            },
            signatures: Default::default(),
        });
        let network = NetworkPassphrase::parse("Test SDF Network ; September 2015")
            .unwrap_or_else(|e| panic!("{e}"));
        let xdr = envelope
            .to_xdr(Limits::none())
            .unwrap_or_else(|e| panic!("{e}"));
        ParsedTransaction::decode(&xdr, &network).unwrap_or_else(|e| panic!("{e}"))
    }

    fn bump(to: i64, source: Option<[u8; 32]>) -> Operation {
        Operation {
            source_account: source.map(|s| MuxedAccount::Ed25519(stellar_xdr::Uint256(s))),
            body: OperationBody::BumpSequence(stellar_xdr::BumpSequenceOp {
                bump_to: stellar_xdr::SequenceNumber(to),
            }),
        }
    }

    #[test]
    fn a_claim_covers_every_sequence_the_transaction_can_consume() {
        let plain = decoded([1; 32], 11, Preconditions::None, vec![bump(5, None)]);
        assert_eq!(
            (plain.sequence_claim().first, plain.sequence_claim().last),
            (11, 11)
        );
        assert!(!plain.sequence_preconditions().any());

        let v2 = |min_seq_num: Option<i64>| {
            Preconditions::V2(stellar_xdr::PreconditionsV2 {
                min_seq_num: min_seq_num.map(stellar_xdr::SequenceNumber),
                ..Default::default()
            })
        };
        let jumper = decoded([1; 32], 11, v2(Some(9)), Vec::new());
        assert!(jumper.sequence_preconditions().any());
        assert_eq!(
            (jumper.sequence_claim().first, jumper.sequence_claim().last),
            (10, 11)
        );
        // A min_seq_num at or past the sequence can never apply; the claim stays the sequence.
        let never = decoded([1; 32], 11, v2(Some(20)), Vec::new());
        assert_eq!(never.sequence_claim().first, 11);

        // A bump by the source itself moves the account; a bump by another account does not.
        let bumped = decoded(
            [1; 32],
            11,
            Preconditions::None,
            vec![bump(i64::MAX, None), bump(500, Some([2; 32]))],
        );
        assert_eq!(bumped.sequence_claim().last, i64::MAX);
        let other = decoded(
            [1; 32],
            11,
            Preconditions::None,
            vec![bump(500, Some([2; 32]))],
        );
        assert_eq!(other.sequence_claim().last, 11);
        assert_eq!(
            other.effective_operation_sources().collect::<Vec<_>>(),
            [PublicKey([2; 32])]
        );
        assert_eq!(other.sequence_claim().network, other.network_id);
    }

    #[test]
    fn summaries_name_what_they_leave_out() {
        let tx = decoded(
            [1; 32],
            1,
            Preconditions::None,
            vec![
                bump(7, None),
                Operation {
                    source_account: None,
                    body: OperationBody::Payment(stellar_xdr::PaymentOp {
                        destination: MuxedAccount::Ed25519(stellar_xdr::Uint256([3; 32])),
                        asset: Asset::Native,
                        amount: 1,
                    }),
                },
            ],
        );
        let [bumped, paid] = tx
            .operation_summaries()
            .try_into()
            .unwrap_or_else(|_| panic!());
        assert_eq!(bumped.not_summarised.as_deref(), Some("body"));
        let xdr = base64::engine::general_purpose::STANDARD
            .decode(bumped.xdr.unwrap_or_default())
            .unwrap_or_default();
        let op = Operation::from_xdr(&xdr, Limits::none()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(op, bump(7, None));
        assert_eq!((paid.not_summarised, paid.xdr), (None, None));
    }

    #[test]
    fn amounts_have_seven_places() {
        assert_eq!(format_amount(123_456_789), "12.3456789");
        assert_eq!(format_amount(1), "0.0000001");
        assert_eq!(format_amount(-10_000_000), "-1.0000000");
    }

    #[test]
    fn operation_names_are_snake_case_and_complete() {
        let names = all_operation_type_names();
        for expected in [
            "create_account",
            "payment",
            "set_options",
            "account_merge",
            "path_payment_strict_send",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
        assert_eq!(names.len(), stellar_xdr::OperationType::VARIANTS.len());
    }

    #[test]
    fn vectors_summarise_their_operations_and_time_bounds() {
        for line in VECTORS.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
            let network = NetworkPassphrase::parse(field(&v, "network_passphrase"))
                .unwrap_or_else(|e| panic!("{e}"));
            let xdr = base64::engine::general_purpose::STANDARD
                .decode(field(&v, "envelope_xdr"))
                .unwrap_or_else(|e| panic!("{e}"));
            let tx = ParsedTransaction::decode(&xdr, &network).unwrap_or_else(|e| panic!("{e}"));
            let ops = tx.operation_summaries();
            assert_eq!(ops.len(), tx.operations().len());
            assert!(ops.iter().all(|o| !o.op_type.is_empty()));
            if let Some((min, max)) = tx.time_bounds() {
                assert!(max == 0 || max >= min, "{}", field(&v, "name"));
            }
        }
    }

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
        let net = NetworkPassphrase::parse("Test SDF Network ; September 2015")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ParsedTransaction::decode(b"not xdr at all", &net).is_err());
        assert!(ParsedTransaction::decode(&[], &net).is_err());
    }
}
