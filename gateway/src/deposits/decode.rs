//! Which operations of an applied transaction credit an account: decoded from its envelope and
//! result XDR with stellar-xdr, so the amount is what the network applied (an account merge's
//! amount exists only in its result).

use stellar_xdr::{
    AccountId, AccountMergeResult, Asset, InnerTransactionResultResult, Limits, Memo, MuxedAccount,
    Operation, OperationBody, OperationResult, OperationResultTr, PathPaymentStrictReceiveResult,
    PathPaymentStrictSendResult, PublicKey, ReadXdr, TransactionEnvelope, TransactionResult,
    TransactionResultResult,
};

use crate::network::{LedgerTransaction, NetworkError};

/// One operation crediting `destination`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    /// Horizon's operation id (TOID): ledger << 32 | application order << 12 | operation index
    /// (from 1).
    pub operation_id: i64,
    /// `payment`, `create_account`, `account_merge`, `path_payment_strict_receive`,
    /// `path_payment_strict_send`.
    pub kind: &'static str,
    /// The credited account (`G...`; a muxed destination's base account).
    pub destination: String,
    /// The operation's source account (`G...`).
    pub source: String,
    /// The amount received, in stroops of the asset.
    pub amount: i64,
    /// `None` for lumens, else (code, issuer).
    pub asset: Option<(String, String)>,
    /// The transaction's memo as text (`MEMO_ID` in decimal, hashes in hex), and its type.
    pub memo: Option<(String, &'static str)>,
    /// The ledger.
    pub ledger: i64,
    /// The transaction's hash.
    pub tx_hash: String,
}

/// Horizon's TOID of an operation (`index` from 0 here; TOIDs count operations from 1).
pub fn toid(ledger: i64, application_order: i64, index: usize) -> i64 {
    let index = i64::try_from(index).unwrap_or(0xFFF - 1) + 1;
    (ledger << 32) | ((application_order & 0xF_FFFF) << 12) | (index & 0xFFF)
}

fn account_of(id: &AccountId) -> String {
    let PublicKey::PublicKeyTypeEd25519(key) = &id.0;
    stellar_strkey::ed25519::PublicKey(key.0)
        .to_string()
        .as_str()
        .to_owned()
}

fn muxed(account: &MuxedAccount) -> String {
    match account {
        MuxedAccount::Ed25519(key) => stellar_strkey::ed25519::PublicKey(key.0)
            .to_string()
            .as_str()
            .to_owned(),
        MuxedAccount::MuxedEd25519(m) => stellar_strkey::ed25519::PublicKey(m.ed25519.0)
            .to_string()
            .as_str()
            .to_owned(),
    }
}

fn asset(asset: &Asset) -> Option<(String, String)> {
    let code = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .trim_end_matches('\0')
            .to_owned()
    };
    match asset {
        Asset::Native => None,
        Asset::CreditAlphanum4(a) => Some((code(&a.asset_code.0), account_of(&a.issuer))),
        Asset::CreditAlphanum12(a) => Some((code(&a.asset_code.0), account_of(&a.issuer))),
    }
}

fn memo(memo: &Memo) -> Option<(String, &'static str)> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match memo {
        Memo::None => None,
        Memo::Text(text) => Some((
            String::from_utf8_lossy(text.as_slice()).into_owned(),
            "text",
        )),
        Memo::Id(id) => Some((id.to_string(), "id")),
        Memo::Hash(hash) => Some((hex(&hash.0), "hash")),
        Memo::Return(hash) => Some((hex(&hash.0), "return")),
    }
}

/// Every credit in `tx`; none for a failed transaction. Undecodable XDR is a protocol error
/// (never silently nothing: the cursor would move past a deposit).
pub fn credits(tx: &LedgerTransaction) -> Result<Vec<Credit>, NetworkError> {
    if !tx.successful {
        return Ok(Vec::new());
    }
    let bad = |what: &str, e: stellar_xdr::Error| {
        NetworkError::Protocol(format!("transaction {}: {what}: {e}", tx.hash))
    };
    let limits = || Limits::len(4 * 1024 * 1024);
    let envelope = TransactionEnvelope::from_xdr_base64(&tx.envelope_xdr, limits())
        .map_err(|e| bad("envelopeXdr", e))?;
    let result = TransactionResult::from_xdr_base64(&tx.result_xdr, limits())
        .map_err(|e| bad("resultXdr", e))?;
    let (source, memo_value, operations): (String, &Memo, &[Operation]) = match &envelope {
        TransactionEnvelope::TxV0(e) => (
            stellar_strkey::ed25519::PublicKey(e.tx.source_account_ed25519.0)
                .to_string()
                .as_str()
                .to_owned(),
            &e.tx.memo,
            e.tx.operations.as_slice(),
        ),
        TransactionEnvelope::Tx(e) => (
            muxed(&e.tx.source_account),
            &e.tx.memo,
            e.tx.operations.as_slice(),
        ),
        TransactionEnvelope::TxFeeBump(e) => {
            let stellar_xdr::FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
            (
                muxed(&inner.tx.source_account),
                &inner.tx.memo,
                inner.tx.operations.as_slice(),
            )
        }
    };
    let results: &[OperationResult] = match &result.result {
        TransactionResultResult::TxSuccess(results) => results.as_slice(),
        TransactionResultResult::TxFeeBumpInnerSuccess(pair) => match &pair.result.result {
            InnerTransactionResultResult::TxSuccess(results) => results.as_slice(),
            _ => return Ok(Vec::new()),
        },
        _ => return Ok(Vec::new()),
    };
    let memo_value = memo(memo_value);
    let mut credits = Vec::new();
    for (index, op) in operations.iter().enumerate() {
        let op_source = op
            .source_account
            .as_ref()
            .map_or_else(|| source.clone(), muxed);
        let op_result = match results.get(index) {
            Some(OperationResult::OpInner(tr)) => Some(tr),
            _ => None,
        };
        let credit = match (&op.body, op_result) {
            (OperationBody::Payment(p), _) => {
                Some(("payment", muxed(&p.destination), p.amount, asset(&p.asset)))
            }
            (OperationBody::CreateAccount(c), _) => Some((
                "create_account",
                account_of(&c.destination),
                c.starting_balance,
                None,
            )),
            (
                OperationBody::AccountMerge(into),
                Some(OperationResultTr::AccountMerge(AccountMergeResult::Success(amount))),
            ) => Some(("account_merge", muxed(into), *amount, None)),
            (
                OperationBody::PathPaymentStrictReceive(p),
                Some(OperationResultTr::PathPaymentStrictReceive(
                    PathPaymentStrictReceiveResult::Success(s),
                )),
            ) => Some((
                "path_payment_strict_receive",
                muxed(&p.destination),
                s.last.amount,
                asset(&s.last.asset),
            )),
            (
                OperationBody::PathPaymentStrictSend(p),
                Some(OperationResultTr::PathPaymentStrictSend(
                    PathPaymentStrictSendResult::Success(s),
                )),
            ) => Some((
                "path_payment_strict_send",
                muxed(&p.destination),
                s.last.amount,
                asset(&s.last.asset),
            )),
            _ => None,
        };
        if let Some((kind, destination, amount, asset)) = credit {
            credits.push(Credit {
                operation_id: toid(tx.ledger, tx.application_order, index),
                kind,
                destination,
                source: op_source,
                amount,
                asset,
                memo: memo_value.clone(),
                ledger: tx.ledger,
                tx_hash: tx.hash.clone(),
            });
        }
    }
    Ok(credits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toid_is_horizons_operation_id() {
        // Horizon: ledger 2, first transaction, first operation.
        assert_eq!(toid(2, 1, 0), (2_i64 << 32) | (1 << 12) | 1);
        assert_ne!(toid(2, 1, 0), toid(2, 1, 1));
        assert_ne!(toid(2, 1, 0), toid(2, 2, 0));
    }
}
