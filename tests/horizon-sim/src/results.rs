//! Transaction results: the real `TransactionResult` XDR stellar-core would produce, and the
//! result code strings Horizon derives from it (`tx_bad_seq`, `op_underfunded`, ...), using
//! Horizon's own mapping (`services/horizon/internal/codes`).

use serde::Serialize;
use stellar_xdr::{
    CreateAccountResult, Hash, InnerTransactionResult, InnerTransactionResultExt,
    InnerTransactionResultPair, InnerTransactionResultResult, OperationResult, OperationResultTr,
    PaymentResult, TransactionResult, TransactionResultExt, TransactionResultResult,
};

use crate::envelope::TxHash;

/// Why a transaction is not successful, at the transaction level. Everything but
/// [`TxFailure::Failed`] means "not applied": no fee, no sequence number consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxFailure {
    /// `tx_too_early`: before its `min_time` (or `min_ledger`).
    TooEarly,
    /// `tx_too_late`: after its `max_time` (or `max_ledger`).
    TooLate,
    /// `tx_missing_operation`: no operations.
    MissingOperation,
    /// `tx_bad_seq`: not the source account's sequence number + 1.
    BadSeq,
    /// `tx_bad_auth`: a required signature is missing or invalid (also: wrong network).
    BadAuth,
    /// `tx_insufficient_balance`: the fee would take the fee account under its reserve.
    InsufficientBalance,
    /// `tx_no_source_account`: the source (or fee) account does not exist.
    NoAccount,
    /// `tx_insufficient_fee`: less than the base fee per operation.
    InsufficientFee,
    /// `tx_bad_auth_extra`: a signature that no required signer made.
    BadAuthExtra,
    /// `tx_not_supported`: a transaction feature the simulator does not implement.
    NotSupported,
    /// `tx_failed`: an operation failed; the results say which.
    Failed(Vec<OperationResult>),
}

impl TxFailure {
    /// The result of a plain transaction (or of a fee bump's outer transaction).
    pub fn into_outer(self) -> TransactionResultResult {
        match self {
            TxFailure::TooEarly => TransactionResultResult::TxTooEarly,
            TxFailure::TooLate => TransactionResultResult::TxTooLate,
            TxFailure::MissingOperation => TransactionResultResult::TxMissingOperation,
            TxFailure::BadSeq => TransactionResultResult::TxBadSeq,
            TxFailure::BadAuth => TransactionResultResult::TxBadAuth,
            TxFailure::InsufficientBalance => TransactionResultResult::TxInsufficientBalance,
            TxFailure::NoAccount => TransactionResultResult::TxNoAccount,
            TxFailure::InsufficientFee => TransactionResultResult::TxInsufficientFee,
            TxFailure::BadAuthExtra => TransactionResultResult::TxBadAuthExtra,
            TxFailure::NotSupported => TransactionResultResult::TxNotSupported,
            TxFailure::Failed(ops) => {
                TransactionResultResult::TxFailed(ops.try_into().unwrap_or_default())
            }
        }
    }

    /// The result of a fee bump's inner transaction.
    pub fn into_inner(self) -> InnerTransactionResultResult {
        match self {
            TxFailure::TooEarly => InnerTransactionResultResult::TxTooEarly,
            TxFailure::TooLate => InnerTransactionResultResult::TxTooLate,
            TxFailure::MissingOperation => InnerTransactionResultResult::TxMissingOperation,
            TxFailure::BadSeq => InnerTransactionResultResult::TxBadSeq,
            TxFailure::BadAuth => InnerTransactionResultResult::TxBadAuth,
            TxFailure::InsufficientBalance => InnerTransactionResultResult::TxInsufficientBalance,
            TxFailure::NoAccount => InnerTransactionResultResult::TxNoAccount,
            TxFailure::InsufficientFee => InnerTransactionResultResult::TxInsufficientFee,
            TxFailure::BadAuthExtra => InnerTransactionResultResult::TxBadAuthExtra,
            TxFailure::NotSupported => InnerTransactionResultResult::TxNotSupported,
            TxFailure::Failed(ops) => {
                InnerTransactionResultResult::TxFailed(ops.try_into().unwrap_or_default())
            }
        }
    }
}

/// A `TransactionResult` charging `fee_charged`.
pub fn transaction_result(fee_charged: i64, result: TransactionResultResult) -> TransactionResult {
    TransactionResult {
        fee_charged,
        result,
        ext: TransactionResultExt::V0,
    }
}

/// The result of a fee bump whose inner transaction `inner_hash` ended with `inner`.
///
/// The inner result's `fee_charged` is 0: the fee source paid everything, in the outer result.
pub fn fee_bump_result(
    fee_charged: i64,
    inner_hash: TxHash,
    inner: InnerTransactionResultResult,
) -> TransactionResult {
    let successful = matches!(inner, InnerTransactionResultResult::TxSuccess(_));
    let pair = InnerTransactionResultPair {
        transaction_hash: Hash(inner_hash.0),
        result: InnerTransactionResult {
            fee_charged: 0,
            result: inner,
            ext: InnerTransactionResultExt::V0,
        },
    };
    transaction_result(
        fee_charged,
        if successful {
            TransactionResultResult::TxFeeBumpInnerSuccess(pair)
        } else {
            TransactionResultResult::TxFeeBumpInnerFailed(pair)
        },
    )
}

/// Whether a result is a success (plain, or a fee bump whose inner transaction succeeded).
pub fn is_success(result: &TransactionResult) -> bool {
    matches!(
        result.result,
        TransactionResultResult::TxSuccess(_) | TransactionResultResult::TxFeeBumpInnerSuccess(_)
    )
}

/// Horizon's `extras.result_codes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResultCodes {
    /// The transaction's code, e.g. `tx_failed`.
    pub transaction: String,
    /// For a fee bump (looked up by its outer hash): the inner transaction's code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner_transaction: Option<String>,
    /// One code per operation, when the result carries operation results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<String>>,
}

impl ResultCodes {
    /// The codes of `result` as seen by a client that submitted (or asks about) `requested`.
    ///
    /// As in Horizon: asked by a fee bump's inner hash, the transaction code is the inner one.
    pub fn of(result: &TransactionResult, requested: &TxHash) -> Self {
        match &result.result {
            TransactionResultResult::TxFeeBumpInnerSuccess(pair)
            | TransactionResultResult::TxFeeBumpInnerFailed(pair) => {
                let inner_code = inner_code_name(&pair.result.result).to_owned();
                let operations = inner_operations(&pair.result.result).map(operation_codes);
                if pair.transaction_hash.0 == requested.0 {
                    ResultCodes {
                        transaction: inner_code,
                        inner_transaction: None,
                        operations,
                    }
                } else {
                    ResultCodes {
                        transaction: outer_code_name(&result.result).to_owned(),
                        inner_transaction: Some(inner_code),
                        operations,
                    }
                }
            }
            TransactionResultResult::TxSuccess(ops) | TransactionResultResult::TxFailed(ops) => {
                ResultCodes {
                    transaction: outer_code_name(&result.result).to_owned(),
                    inner_transaction: None,
                    operations: Some(operation_codes(ops)),
                }
            }
            other => ResultCodes {
                transaction: outer_code_name(other).to_owned(),
                inner_transaction: None,
                operations: None,
            },
        }
    }
}

fn inner_operations(result: &InnerTransactionResultResult) -> Option<&[OperationResult]> {
    match result {
        InnerTransactionResultResult::TxSuccess(ops)
        | InnerTransactionResultResult::TxFailed(ops) => Some(ops),
        _ => None,
    }
}

fn operation_codes(ops: &[OperationResult]) -> Vec<String> {
    ops.iter()
        .map(|op| operation_code_name(op).to_owned())
        .collect()
}

/// Horizon's name for a transaction result code.
pub fn outer_code_name(result: &TransactionResultResult) -> &'static str {
    use TransactionResultResult as R;
    match result {
        R::TxFeeBumpInnerSuccess(_) => "tx_fee_bump_inner_success",
        R::TxFeeBumpInnerFailed(_) => "tx_fee_bump_inner_failed",
        R::TxSuccess(_) => "tx_success",
        R::TxFailed(_) => "tx_failed",
        R::TxTooEarly => "tx_too_early",
        R::TxTooLate => "tx_too_late",
        R::TxMissingOperation => "tx_missing_operation",
        R::TxBadSeq => "tx_bad_seq",
        R::TxBadAuth => "tx_bad_auth",
        R::TxInsufficientBalance => "tx_insufficient_balance",
        R::TxNoAccount => "tx_no_source_account",
        R::TxInsufficientFee => "tx_insufficient_fee",
        R::TxBadAuthExtra => "tx_bad_auth_extra",
        R::TxInternalError => "tx_internal_error",
        R::TxNotSupported => "tx_not_supported",
        R::TxBadSponsorship => "tx_bad_sponsorship",
        R::TxBadMinSeqAgeOrGap => "tx_bad_minseq_age_or_gap",
        R::TxMalformed => "tx_malformed",
        R::TxSorobanInvalid => "tx_soroban_invalid",
        R::TxFrozenKeyAccessed => "tx_frozen_key_accessed",
    }
}

fn inner_code_name(result: &InnerTransactionResultResult) -> &'static str {
    use InnerTransactionResultResult as I;
    use TransactionResultResult as R;
    // Same codes as the outer result without the fee bump ones: map through the outer names.
    outer_code_name(&match result {
        I::TxSuccess(_) => R::TxSuccess(Default::default()),
        I::TxFailed(_) => R::TxFailed(Default::default()),
        I::TxTooEarly => R::TxTooEarly,
        I::TxTooLate => R::TxTooLate,
        I::TxMissingOperation => R::TxMissingOperation,
        I::TxBadSeq => R::TxBadSeq,
        I::TxBadAuth => R::TxBadAuth,
        I::TxInsufficientBalance => R::TxInsufficientBalance,
        I::TxNoAccount => R::TxNoAccount,
        I::TxInsufficientFee => R::TxInsufficientFee,
        I::TxBadAuthExtra => R::TxBadAuthExtra,
        I::TxInternalError => R::TxInternalError,
        I::TxNotSupported => R::TxNotSupported,
        I::TxBadSponsorship => R::TxBadSponsorship,
        I::TxBadMinSeqAgeOrGap => R::TxBadMinSeqAgeOrGap,
        I::TxMalformed => R::TxMalformed,
        I::TxSorobanInvalid => R::TxSorobanInvalid,
        I::TxFrozenKeyAccessed => R::TxFrozenKeyAccessed,
    })
}

/// Horizon's name for an operation result: the operation-level code, or for `op_inner` the
/// code of the operation's own result (only create_account, payment and claimable balance
/// results are produced).
pub fn operation_code_name(result: &OperationResult) -> &'static str {
    match result {
        OperationResult::OpBadAuth => "op_bad_auth",
        OperationResult::OpNoAccount => "op_no_source_account",
        OperationResult::OpNotSupported => "op_not_supported",
        OperationResult::OpTooManySubentries => "op_too_many_subentries",
        OperationResult::OpExceededWorkLimit => "op_exceeded_work_limit",
        OperationResult::OpTooManySponsoring => "op_too_many_sponsoring",
        OperationResult::OpInner(OperationResultTr::CreateAccount(result)) => match result {
            CreateAccountResult::Success => "op_success",
            CreateAccountResult::Malformed => "op_malformed",
            CreateAccountResult::Underfunded => "op_underfunded",
            CreateAccountResult::LowReserve => "op_low_reserve",
            CreateAccountResult::AlreadyExist => "op_already_exists",
        },
        OperationResult::OpInner(OperationResultTr::Payment(result)) => match result {
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
        OperationResult::OpInner(OperationResultTr::CreateClaimableBalance(result)) => {
            use stellar_xdr::CreateClaimableBalanceResult as C;
            match result {
                C::Success(_) => "op_success",
                C::Malformed => "op_malformed",
                C::LowReserve => "op_low_reserve",
                C::NoTrust => "op_no_trust",
                C::NotAuthorized => "op_not_authorized",
                C::Underfunded => "op_underfunded",
            }
        }
        OperationResult::OpInner(OperationResultTr::ClaimClaimableBalance(result)) => {
            use stellar_xdr::ClaimClaimableBalanceResult as C;
            match result {
                C::Success => "op_success",
                C::DoesNotExist => "op_does_not_exist",
                C::CannotClaim => "op_cannot_claim",
                C::LineFull => "op_line_full",
                C::NoTrust => "op_no_trust",
                C::NotAuthorized => "op_not_authorized",
                C::TrustlineFrozen => "op_trustline_frozen",
            }
        }
        OperationResult::OpInner(_) => "op_inner",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{Limits, WriteXdr};

    #[test]
    fn horizon_canned_bad_seq_is_what_we_encode() {
        // Horizon's own canned ErrBadSequence (txsub/errors.go).
        let result = transaction_result(0, TxFailure::BadSeq.into_outer());
        let encoded = result
            .to_xdr_base64(Limits::none())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(encoded, "AAAAAAAAAAD////7AAAAAA==");
        // And its ErrNoAccount.
        let result = transaction_result(0, TxFailure::NoAccount.into_outer());
        let encoded = result
            .to_xdr_base64(Limits::none())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(encoded, "AAAAAAAAAAD////4AAAAAA==");
    }

    #[test]
    fn failed_operations_are_listed_by_name() {
        let result = transaction_result(
            100,
            TxFailure::Failed(vec![
                OperationResult::OpInner(OperationResultTr::Payment(PaymentResult::Success)),
                OperationResult::OpInner(OperationResultTr::Payment(PaymentResult::Underfunded)),
                OperationResult::OpNotSupported,
            ])
            .into_outer(),
        );
        let codes = ResultCodes::of(&result, &TxHash([0; 32]));
        assert_eq!(codes.transaction, "tx_failed");
        assert_eq!(
            codes.operations,
            Some(vec![
                "op_success".to_owned(),
                "op_underfunded".to_owned(),
                "op_not_supported".to_owned()
            ])
        );
        assert!(!is_success(&result));
    }

    #[test]
    fn fee_bump_codes_depend_on_the_hash_asked_about() {
        let inner = TxHash([1; 32]);
        let outer = TxHash([2; 32]);
        let result = fee_bump_result(200, inner, TxFailure::BadSeq.into_inner());
        let by_outer = ResultCodes::of(&result, &outer);
        assert_eq!(by_outer.transaction, "tx_fee_bump_inner_failed");
        assert_eq!(by_outer.inner_transaction.as_deref(), Some("tx_bad_seq"));
        let by_inner = ResultCodes::of(&result, &inner);
        assert_eq!(by_inner.transaction, "tx_bad_seq");
        assert_eq!(by_inner.inner_transaction, None);
    }
}
