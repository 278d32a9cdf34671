//! The Stellar transaction of a payment: one native `payment` operation from the source wallet (or
//! `create_account` when the destination account does not exist yet), time bounds
//! `[0, max_time]`, an optional text memo. Built with stellar-xdr; the hash is
//! computed here and compared with the one signerd reports before anything is stored.

use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountId as XdrAccountId, Asset, CreateAccountOp, CreateAccountResult, DecoratedSignature,
    FeeBumpTransaction, FeeBumpTransactionEnvelope, FeeBumpTransactionExt,
    FeeBumpTransactionInnerTx, InnerTransactionResultResult, Limits, Memo, MuxedAccount,
    MuxedAccountMed25519, Operation, OperationBody, OperationResult, OperationResultTr, PaymentOp,
    PaymentResult, Preconditions, ReadXdr, SequenceNumber, Signature, SignatureHint, TimeBounds,
    TimePoint, Transaction, TransactionEnvelope, TransactionExt, TransactionResult,
    TransactionResultResult, TransactionV1Envelope, Uint256, WriteXdr,
};

use super::{DestinationAccount, MemoText, Stroops};
use crate::error::{Error, Result};
use crate::model::AccountId;
use crate::network::ResultCodes;

/// What goes into one payment transaction.
#[derive(Clone, Debug)]
pub struct PaymentTransaction<'a> {
    /// The source wallet's account.
    pub source: &'a AccountId,
    /// The sequence number (the account's current sequence + 1).
    pub sequence: i64,
    /// The total fee in stroops (one operation).
    pub fee: u32,
    /// Unix seconds after which the transaction can never be applied.
    pub max_time: u64,
    /// Where the lumens go.
    pub destination: &'a DestinationAccount,
    /// How much.
    pub amount: Stroops,
    /// The optional memo.
    pub memo: Option<&'a MemoText>,
    /// The destination account does not exist: create it with `amount` as its starting balance
    /// (only for plain `G...` destinations; a muxed destination must already exist).
    pub create_destination: bool,
}

/// An unsigned envelope and its hash.
pub struct UnsignedTransaction {
    /// The envelope (no signatures yet).
    pub envelope: TransactionV1Envelope,
    /// Its raw XDR, what signerd is asked to sign.
    pub xdr: Vec<u8>,
    /// The transaction hash for the configured network.
    pub hash: [u8; 32],
}

impl PaymentTransaction<'_> {
    /// Builds the unsigned envelope.
    pub fn build(&self, network_passphrase: &str) -> Result<UnsignedTransaction> {
        let destination = match self.destination {
            DestinationAccount::Account(a) => MuxedAccount::Ed25519(Uint256(a.public_key_bytes())),
            DestinationAccount::Muxed { ed25519, id, .. } => {
                MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
                    id: *id,
                    ed25519: Uint256(*ed25519),
                })
            }
        };
        let memo = match self.memo {
            Some(text) => Memo::Text(
                text.as_str()
                    .try_into()
                    .map_err(|_| Error::Validation("memo longer than 28 bytes".into()))?,
            ),
            None => Memo::None,
        };
        let tx = Transaction {
            source_account: MuxedAccount::Ed25519(Uint256(self.source.public_key_bytes())),
            fee: self.fee,
            seq_num: SequenceNumber(self.sequence),
            cond: Preconditions::Time(TimeBounds {
                min_time: TimePoint(0),
                max_time: TimePoint(self.max_time),
            }),
            memo,
            operations: vec![Operation {
                source_account: None,
                body: match (self.create_destination, destination) {
                    (true, MuxedAccount::Ed25519(key)) => {
                        OperationBody::CreateAccount(CreateAccountOp {
                            destination: XdrAccountId(
                                stellar_xdr::PublicKey::PublicKeyTypeEd25519(key),
                            ),
                            starting_balance: self.amount.get(),
                        })
                    }
                    (_, destination) => OperationBody::Payment(PaymentOp {
                        destination,
                        asset: Asset::Native,
                        amount: self.amount.get(),
                    }),
                },
            }]
            .try_into()
            .map_err(|_| Error::CorruptData("one operation did not fit".into()))?,
            ext: TransactionExt::V0,
        };
        let envelope = TransactionV1Envelope {
            tx,
            signatures: Default::default(),
        };
        let xdr = TransactionEnvelope::Tx(envelope.clone())
            .to_xdr(Limits::none())
            .map_err(|e| Error::CorruptData(format!("encoding the transaction: {e}")))?;
        let hash = envelope
            .hash(network_id(network_passphrase))
            .map_err(|e| Error::CorruptData(format!("hashing the transaction: {e}")))?;
        Ok(UnsignedTransaction {
            envelope,
            xdr,
            hash,
        })
    }
}

impl UnsignedTransaction {
    /// The signed envelope as base64 XDR, what Horizon takes.
    pub fn attach(self, hint: &[u8], signature: &[u8]) -> Result<String> {
        let mut envelope = self.envelope;
        envelope.signatures = one_signature(hint, signature)?;
        TransactionEnvelope::Tx(envelope)
            .to_xdr_base64(Limits::none())
            .map_err(|e| Error::CorruptData(format!("encoding the envelope: {e}")))
    }
}

/// A fee bump around a stored, signed payment transaction: the same inner transaction (same
/// sequence, same hash inside, its signature kept), a higher total fee paid by `fee_source`
/// (the wallet itself). Signed by the wallet's key as fee source.
pub struct UnsignedFeeBump {
    /// The fee-bump envelope (no outer signature yet).
    pub envelope: FeeBumpTransactionEnvelope,
    /// Its raw XDR, what signerd is asked to sign.
    pub xdr: Vec<u8>,
    /// The fee-bump (outer) hash.
    pub hash: [u8; 32],
    /// The wrapped transaction's hash.
    pub inner_hash: [u8; 32],
}

impl UnsignedFeeBump {
    /// Wraps `inner` (a signed base64 `TransactionEnvelope::Tx`, as stored) with `total_fee`
    /// stroops paid by `fee_source`. An envelope that is already a fee bump is refused.
    pub fn wrap(
        inner: &str,
        fee_source: &AccountId,
        total_fee: i64,
        network_passphrase: &str,
    ) -> Result<Self> {
        let TransactionEnvelope::Tx(inner) =
            TransactionEnvelope::from_xdr_base64(inner, Limits::len(64 * 1024))
                .map_err(|e| Error::CorruptData(format!("stored envelope: {e}")))?
        else {
            return Err(Error::CorruptData(
                "stored envelope is not a plain transaction".into(),
            ));
        };
        let network = network_id(network_passphrase);
        let inner_hash = inner
            .hash(network)
            .map_err(|e| Error::CorruptData(format!("hashing the inner transaction: {e}")))?;
        let envelope = FeeBumpTransactionEnvelope {
            tx: FeeBumpTransaction {
                fee_source: MuxedAccount::Ed25519(Uint256(fee_source.public_key_bytes())),
                fee: total_fee,
                inner_tx: FeeBumpTransactionInnerTx::Tx(inner),
                ext: FeeBumpTransactionExt::V0,
            },
            signatures: Default::default(),
        };
        let xdr = TransactionEnvelope::TxFeeBump(envelope.clone())
            .to_xdr(Limits::none())
            .map_err(|e| Error::CorruptData(format!("encoding the fee bump: {e}")))?;
        let hash = envelope
            .hash(network)
            .map_err(|e| Error::CorruptData(format!("hashing the fee bump: {e}")))?;
        Ok(UnsignedFeeBump {
            envelope,
            xdr,
            hash,
            inner_hash,
        })
    }

    /// The signed fee bump as base64 XDR.
    pub fn attach(self, hint: &[u8], signature: &[u8]) -> Result<String> {
        let mut envelope = self.envelope;
        envelope.signatures = one_signature(hint, signature)?;
        TransactionEnvelope::TxFeeBump(envelope)
            .to_xdr_base64(Limits::none())
            .map_err(|e| Error::CorruptData(format!("encoding the fee bump: {e}")))
    }
}

/// signerd's signature as an envelope's only decorated signature.
fn one_signature(
    hint: &[u8],
    signature: &[u8],
) -> Result<stellar_xdr::VecM<DecoratedSignature, 20>> {
    let hint: [u8; 4] = hint
        .try_into()
        .map_err(|_| Error::Signer("signature hint is not 4 bytes".into()))?;
    let signature = Signature(
        signature
            .to_vec()
            .try_into()
            .map_err(|_| Error::Signer("signature longer than 64 bytes".into()))?,
    );
    vec![DecoratedSignature {
        hint: SignatureHint(hint),
        signature,
    }]
    .try_into()
    .map_err(|_| Error::CorruptData("one signature did not fit".into()))
}

/// sha256 of the passphrase.
pub fn network_id(passphrase: &str) -> [u8; 32] {
    Sha256::digest(passphrase.as_bytes()).into()
}

/// Result codes (Horizon's names) from a base64 `TransactionResult`.
pub fn result_codes(result_xdr: &str) -> Option<ResultCodes> {
    let result = TransactionResult::from_xdr_base64(result_xdr, Limits::len(64 * 1024)).ok()?;
    let (transaction, operations) = match &result.result {
        TransactionResultResult::TxSuccess(ops) => ("tx_success", Some(ops.as_slice())),
        TransactionResultResult::TxFailed(ops) => ("tx_failed", Some(ops.as_slice())),
        TransactionResultResult::TxTooEarly => ("tx_too_early", None),
        TransactionResultResult::TxTooLate => ("tx_too_late", None),
        TransactionResultResult::TxMissingOperation => ("tx_missing_operation", None),
        TransactionResultResult::TxBadSeq => ("tx_bad_seq", None),
        TransactionResultResult::TxBadAuth => ("tx_bad_auth", None),
        TransactionResultResult::TxInsufficientBalance => ("tx_insufficient_balance", None),
        TransactionResultResult::TxNoAccount => ("tx_no_source_account", None),
        TransactionResultResult::TxInsufficientFee => ("tx_insufficient_fee", None),
        TransactionResultResult::TxBadAuthExtra => ("tx_bad_auth_extra", None),
        TransactionResultResult::TxInternalError => ("tx_internal_error", None),
        TransactionResultResult::TxMalformed => ("tx_malformed", None),
        TransactionResultResult::TxFeeBumpInnerSuccess(pair) => (
            "tx_fee_bump_inner_success",
            inner_operations(&pair.result.result),
        ),
        TransactionResultResult::TxFeeBumpInnerFailed(pair) => match &pair.result.result {
            InnerTransactionResultResult::TxFailed(ops) => {
                ("tx_fee_bump_inner_failed", Some(ops.as_slice()))
            }
            // Refused before a ledger for the inner transaction's reason (a fee bump around an
            // already-used sequence is `tx_bad_seq`): the inner code is the one that decides.
            inner => (inner_code(inner), None),
        },
        _ => ("tx_other", None),
    };
    Some(ResultCodes {
        transaction: transaction.to_owned(),
        operations: operations
            .unwrap_or_default()
            .iter()
            .map(|op| operation_code(op).to_owned())
            .collect(),
    })
}

fn inner_operations(result: &InnerTransactionResultResult) -> Option<&[OperationResult]> {
    match result {
        InnerTransactionResultResult::TxSuccess(ops)
        | InnerTransactionResultResult::TxFailed(ops) => Some(ops.as_slice()),
        _ => None,
    }
}

/// A fee bump's inner code when the inner transaction never reached a ledger.
fn inner_code(result: &InnerTransactionResultResult) -> &'static str {
    match result {
        InnerTransactionResultResult::TxSuccess(_) => "tx_success",
        InnerTransactionResultResult::TxFailed(_) => "tx_failed",
        InnerTransactionResultResult::TxTooEarly => "tx_too_early",
        InnerTransactionResultResult::TxTooLate => "tx_too_late",
        InnerTransactionResultResult::TxMissingOperation => "tx_missing_operation",
        InnerTransactionResultResult::TxBadSeq => "tx_bad_seq",
        InnerTransactionResultResult::TxBadAuth => "tx_bad_auth",
        InnerTransactionResultResult::TxInsufficientBalance => "tx_insufficient_balance",
        InnerTransactionResultResult::TxNoAccount => "tx_no_source_account",
        InnerTransactionResultResult::TxInsufficientFee => "tx_insufficient_fee",
        InnerTransactionResultResult::TxBadAuthExtra => "tx_bad_auth_extra",
        InnerTransactionResultResult::TxInternalError => "tx_internal_error",
        InnerTransactionResultResult::TxMalformed => "tx_malformed",
        _ => "tx_other",
    }
}

fn operation_code(result: &OperationResult) -> &'static str {
    match result {
        OperationResult::OpBadAuth => "op_bad_auth",
        OperationResult::OpNoAccount => "op_no_source_account",
        OperationResult::OpNotSupported => "op_not_supported",
        OperationResult::OpInner(OperationResultTr::Payment(p)) => match p {
            PaymentResult::Success => "op_success",
            PaymentResult::Malformed => "op_malformed",
            PaymentResult::Underfunded => "op_underfunded",
            PaymentResult::SrcNoTrust => "op_src_no_trust",
            PaymentResult::SrcNotAuthorized => "op_src_not_authorized",
            PaymentResult::NoDestination => "op_no_destination",
            PaymentResult::NoTrust => "op_no_trust",
            PaymentResult::NotAuthorized => "op_not_authorized",
            PaymentResult::LineFull => "op_line_full",
            PaymentResult::NoIssuer => "op_no_issuer",
        },
        OperationResult::OpInner(OperationResultTr::CreateAccount(c)) => match c {
            CreateAccountResult::Success => "op_success",
            CreateAccountResult::Malformed => "op_malformed",
            CreateAccountResult::Underfunded => "op_underfunded",
            CreateAccountResult::LowReserve => "op_low_reserve",
            CreateAccountResult::AlreadyExist => "op_already_exists",
        },
        _ => "op_other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_bump_results_give_the_inner_codes() {
        use stellar_xdr::{
            Hash, InnerTransactionResult, InnerTransactionResultExt, InnerTransactionResultPair,
            TransactionResultExt,
        };
        let bumped = |inner: InnerTransactionResultResult, applied: bool| {
            let pair = InnerTransactionResultPair {
                transaction_hash: Hash([0; 32]),
                result: InnerTransactionResult {
                    fee_charged: 100,
                    result: inner,
                    ext: InnerTransactionResultExt::V0,
                },
            };
            let result = TransactionResult {
                fee_charged: 200,
                result: if applied {
                    TransactionResultResult::TxFeeBumpInnerSuccess(pair)
                } else {
                    TransactionResultResult::TxFeeBumpInnerFailed(pair)
                },
                ext: TransactionResultExt::V0,
            };
            result_codes(&result.to_xdr_base64(Limits::none()).unwrap_or_default())
                .unwrap_or_else(|| panic!("no codes"))
        };
        let ops = || {
            vec![OperationResult::OpInner(OperationResultTr::Payment(
                PaymentResult::Underfunded,
            ))]
            .try_into()
            .unwrap_or_default()
        };
        // Refused before a ledger: the inner code decides (tx_bad_seq is confirmed, not final).
        let refused = bumped(InnerTransactionResultResult::TxBadSeq, false);
        assert_eq!(refused.transaction, "tx_bad_seq");
        // Failed in its ledger: Horizon's name, with the inner operation codes.
        let failed = bumped(InnerTransactionResultResult::TxFailed(ops()), false);
        assert_eq!(failed.transaction, "tx_fee_bump_inner_failed");
        assert_eq!(failed.operations, vec!["op_underfunded"]);
        let applied = bumped(
            InnerTransactionResultResult::TxSuccess(stellar_xdr::VecM::default()),
            true,
        );
        assert_eq!(applied.transaction, "tx_fee_bump_inner_success");
    }

    #[test]
    fn the_hash_is_the_envelope_hash_for_the_network() {
        let source = AccountId::parse(&stellar_strkey::ed25519::PublicKey([1; 32]).to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let destination =
            DestinationAccount::parse(&stellar_strkey::ed25519::PublicKey([2; 32]).to_string())
                .unwrap_or_else(|e| panic!("{e}"));
        let tx = PaymentTransaction {
            source: &source,
            sequence: 5,
            fee: 100,
            max_time: 1_000,
            destination: &destination,
            amount: Stroops::from_stored(10),
            memo: None,
            create_destination: false,
        };
        let a = tx.build("A").unwrap_or_else(|e| panic!("{e}"));
        let b = tx.build("B").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.hash, b.hash);
        let decoded =
            TransactionEnvelope::from_xdr(&a.xdr, Limits::none()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            decoded
                .hash(network_id("A"))
                .unwrap_or_else(|e| panic!("{e}")),
            a.hash
        );
    }

    #[test]
    fn a_fee_bump_keeps_the_inner_transaction_and_its_hash() {
        let source = AccountId::parse(&stellar_strkey::ed25519::PublicKey([1; 32]).to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let destination =
            DestinationAccount::parse(&stellar_strkey::ed25519::PublicKey([2; 32]).to_string())
                .unwrap_or_else(|e| panic!("{e}"));
        let unsigned = PaymentTransaction {
            source: &source,
            sequence: 5,
            fee: 100,
            max_time: 1_000,
            destination: &destination,
            amount: Stroops::from_stored(10),
            memo: None,
            create_destination: false,
        }
        .build("A")
        .unwrap_or_else(|e| panic!("{e}"));
        let inner_hash = unsigned.hash;
        let signed = unsigned
            .attach(&[1; 4], &[2; 64])
            .unwrap_or_else(|e| panic!("{e}"));
        let bump =
            UnsignedFeeBump::wrap(&signed, &source, 20_000, "A").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bump.inner_hash, inner_hash);
        assert_ne!(bump.hash, inner_hash);
        let outer = bump
            .attach(&[3; 4], &[4; 64])
            .unwrap_or_else(|e| panic!("{e}"));
        // A fee bump is never wrapped again.
        assert!(UnsignedFeeBump::wrap(&outer, &source, 40_000, "A").is_err());
    }
}
