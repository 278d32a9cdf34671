//! Which operations of an applied transaction credit an account: decoded from its envelope,
//! result and result meta XDR with stellar-xdr, so the amount is what the network applied (an
//! account merge's amount exists only in its result; a claimable balance claim's only in the
//! meta, as the state of the balance's ledger entry before the claim removed it).
//!
//! A payment to a muxed (`M...`) address credits its base account and records the muxed id.

use stellar_xdr::{
    AccountId, AccountMergeResult, Asset, ClaimClaimableBalanceResult, ClaimableBalanceId,
    InnerTransactionResultResult, LedgerEntryChange, LedgerEntryChanges, LedgerEntryData, Limits,
    Memo, MuxedAccount, Operation, OperationBody, OperationResult, OperationResultTr,
    PathPaymentStrictReceiveResult, PathPaymentStrictSendResult, PublicKey, ReadXdr,
    TransactionEnvelope, TransactionMeta, TransactionResult, TransactionResultResult,
};

use crate::network::{LedgerTransaction, NetworkError};

/// One operation crediting `destination`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    /// Horizon's operation id (TOID): ledger << 32 | application order << 12 | operation index
    /// (from 1).
    pub operation_id: i64,
    /// `payment`, `create_account`, `account_merge`, `path_payment_strict_receive`,
    /// `path_payment_strict_send`, `claim_claimable_balance`.
    pub kind: &'static str,
    /// The credited account (`G...`; a muxed destination's base account).
    pub destination: String,
    /// The id of the muxed (`M...`) destination the operation named, if it named one.
    pub muxed_id: Option<u64>,
    /// Why the amount could not be read, when it could not (a claim in a transaction the API
    /// served without its result meta): such a credit is never recorded for a wallet with a
    /// made-up amount; ingestion stops on it instead.
    pub unreadable: Option<String>,
    /// Who paid (`G...`): the operation's source; for a claim, the claimable balance's sponsor
    /// (the account that created it), else the claimant.
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

/// The muxed id of an `M...` account.
fn muxed_id(account: &MuxedAccount) -> Option<u64> {
    match account {
        MuxedAccount::Ed25519(_) => None,
        MuxedAccount::MuxedEd25519(m) => Some(m.id),
    }
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

/// Each operation's ledger entry changes, from any version of `TransactionMeta`.
fn operation_changes(meta: &TransactionMeta) -> Vec<&LedgerEntryChanges> {
    match meta {
        TransactionMeta::V0(ops) => ops.iter().map(|op| &op.changes).collect(),
        TransactionMeta::V1(m) => m.operations.iter().map(|op| &op.changes).collect(),
        TransactionMeta::V2(m) => m.operations.iter().map(|op| &op.changes).collect(),
        TransactionMeta::V3(m) => m.operations.iter().map(|op| &op.changes).collect(),
        TransactionMeta::V4(m) => m.operations.iter().map(|op| &op.changes).collect(),
    }
}

/// What a claim received: the balance's amount and asset as its entry stood before `changes`
/// (one operation's) removed it, and the entry's sponsor (the account that created it, which
/// reserved lumens for it), if named.
struct Claimed {
    amount: i64,
    asset: Option<(String, String)>,
    sponsor: Option<String>,
}

fn claimed_balance(changes: &LedgerEntryChanges, id: &ClaimableBalanceId) -> Option<Claimed> {
    changes.0.iter().find_map(|change| match change {
        LedgerEntryChange::State(entry) => match &entry.data {
            LedgerEntryData::ClaimableBalance(balance) if balance.balance_id == *id => {
                let sponsor = match &entry.ext {
                    stellar_xdr::LedgerEntryExt::V1(v1) => {
                        v1.sponsoring_id.0.as_ref().map(account_of)
                    }
                    stellar_xdr::LedgerEntryExt::V0 => None,
                };
                Some(Claimed {
                    amount: balance.amount,
                    asset: asset(&balance.asset),
                    sponsor,
                })
            }
            _ => None,
        },
        _ => None,
    })
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
    // Read only when a claim needs it: the API may serve no meta (Horizon with SKIP_TXMETA).
    let claims = operations
        .iter()
        .any(|op| matches!(op.body, OperationBody::ClaimClaimableBalance(_)));
    let meta = match (&tx.result_meta_xdr, claims) {
        (Some(meta), true) => Some(
            TransactionMeta::from_xdr_base64(meta, limits())
                .map_err(|e| bad("resultMetaXdr", e))?,
        ),
        _ => None,
    };
    let changes = meta.as_ref().map(operation_changes);
    let mut credits = Vec::new();
    for (index, op) in operations.iter().enumerate() {
        let op_source = op
            .source_account
            .as_ref()
            .map_or_else(|| source.clone(), muxed);
        let op_source_muxed_id = match (&op.source_account, &envelope) {
            (Some(account), _) => muxed_id(account),
            (None, TransactionEnvelope::Tx(e)) => muxed_id(&e.tx.source_account),
            (None, TransactionEnvelope::TxFeeBump(e)) => {
                let stellar_xdr::FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                muxed_id(&inner.tx.source_account)
            }
            (None, TransactionEnvelope::TxV0(_)) => None,
        };
        // Who paid: the operation's source, but for a claim the balance's sponsor (its creator;
        // the claimant when the meta names none).
        let mut credit_source = op_source.clone();
        let op_result = match results.get(index) {
            Some(OperationResult::OpInner(tr)) => Some(tr),
            _ => None,
        };
        let credit = match (&op.body, op_result) {
            (OperationBody::Payment(p), _) => Some((
                "payment",
                muxed(&p.destination),
                muxed_id(&p.destination),
                p.amount,
                asset(&p.asset),
            )),
            (OperationBody::CreateAccount(c), _) => Some((
                "create_account",
                account_of(&c.destination),
                None,
                c.starting_balance,
                None,
            )),
            (
                OperationBody::AccountMerge(into),
                Some(OperationResultTr::AccountMerge(AccountMergeResult::Success(amount))),
            ) => Some(("account_merge", muxed(into), muxed_id(into), *amount, None)),
            (
                OperationBody::PathPaymentStrictReceive(p),
                Some(OperationResultTr::PathPaymentStrictReceive(
                    PathPaymentStrictReceiveResult::Success(s),
                )),
            ) => Some((
                "path_payment_strict_receive",
                muxed(&p.destination),
                muxed_id(&p.destination),
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
                muxed_id(&p.destination),
                s.last.amount,
                asset(&s.last.asset),
            )),
            // The claimant is the operation's source: it receives the balance.
            (
                OperationBody::ClaimClaimableBalance(claim),
                Some(OperationResultTr::ClaimClaimableBalance(
                    ClaimClaimableBalanceResult::Success,
                )),
            ) => {
                let kind = "claim_claimable_balance";
                match &changes {
                    None => {
                        credits.push(Credit {
                            operation_id: toid(tx.ledger, tx.application_order, index),
                            kind,
                            destination: op_source.clone(),
                            muxed_id: op_source_muxed_id,
                            unreadable: Some(format!(
                                "transaction {}: a claimable balance claim, served without its \
                                 result meta (the amount is only there)",
                                tx.hash
                            )),
                            source: op_source.clone(),
                            amount: 0,
                            asset: None,
                            memo: memo_value.clone(),
                            ledger: tx.ledger,
                            tx_hash: tx.hash.clone(),
                        });
                        None
                    }
                    Some(changes) => {
                        let claimed = changes
                            .get(index)
                            .and_then(|changes| claimed_balance(changes, &claim.balance_id))
                            .ok_or_else(|| {
                                NetworkError::Protocol(format!(
                                    "transaction {}: operation {index} claims a balance its \
                                     result meta does not show",
                                    tx.hash
                                ))
                            })?;
                        if let Some(sponsor) = claimed.sponsor {
                            credit_source = sponsor;
                        }
                        Some((
                            kind,
                            op_source.clone(),
                            op_source_muxed_id,
                            claimed.amount,
                            claimed.asset,
                        ))
                    }
                }
            }
            _ => None,
        };
        if let Some((kind, destination, muxed_id, amount, asset)) = credit {
            credits.push(Credit {
                operation_id: toid(tx.ledger, tx.application_order, index),
                kind,
                destination,
                muxed_id,
                unreadable: None,
                source: credit_source,
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

    use stellar_xdr::{
        AlphaNum4, AssetCode4, CreateAccountOp, Hash, OperationResult, PathPaymentStrictReceiveOp,
        PathPaymentStrictReceiveResultSuccess, PathPaymentStrictSendOp,
        PathPaymentStrictSendResultSuccess, PaymentOp, Preconditions, SequenceNumber,
        SimplePaymentResult, Transaction, TransactionExt, TransactionResultExt,
        TransactionV1Envelope, Uint256, WriteXdr,
    };

    fn key(byte: u8) -> [u8; 32] {
        [byte; 32]
    }

    fn account_id(byte: u8) -> AccountId {
        AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key(byte))))
    }

    fn address(byte: u8) -> String {
        stellar_strkey::ed25519::PublicKey(key(byte))
            .to_string()
            .as_str()
            .to_owned()
    }

    fn usd() -> Asset {
        Asset::CreditAlphanum4(AlphaNum4 {
            asset_code: AssetCode4(*b"USD\0"),
            issuer: account_id(9),
        })
    }

    /// A transaction from account 1 with `ops`, its results `results`, at ledger 7, order 3.
    fn applied(
        ops: Vec<Operation>,
        results: Vec<OperationResultTr>,
        memo: Memo,
        successful: bool,
    ) -> LedgerTransaction {
        let tx = Transaction {
            source_account: MuxedAccount::Ed25519(Uint256(key(1))),
            fee: 100,
            seq_num: SequenceNumber(5),
            cond: Preconditions::None,
            memo,
            operations: ops.try_into().unwrap_or_default(),
            ext: TransactionExt::V0,
        };
        let envelope = TransactionEnvelope::Tx(TransactionV1Envelope {
            tx,
            signatures: Default::default(),
        });
        let results: Vec<OperationResult> =
            results.into_iter().map(OperationResult::OpInner).collect();
        let result = TransactionResult {
            fee_charged: 100,
            result: if successful {
                TransactionResultResult::TxSuccess(results.try_into().unwrap_or_default())
            } else {
                TransactionResultResult::TxFailed(results.try_into().unwrap_or_default())
            },
            ext: TransactionResultExt::V0,
        };
        LedgerTransaction {
            ledger: 7,
            application_order: 3,
            hash: "ab".repeat(32),
            successful,
            envelope_xdr: envelope.to_xdr_base64(Limits::none()).unwrap_or_default(),
            result_xdr: result.to_xdr_base64(Limits::none()).unwrap_or_default(),
            result_meta_xdr: None,
        }
    }

    fn op(body: OperationBody) -> Operation {
        Operation {
            source_account: None,
            body,
        }
    }

    #[test]
    fn every_crediting_operation_is_read_with_the_amount_received() {
        let tx = applied(
            vec![
                op(OperationBody::Payment(PaymentOp {
                    destination: MuxedAccount::Ed25519(Uint256(key(2))),
                    asset: usd(),
                    amount: 11,
                })),
                op(OperationBody::CreateAccount(CreateAccountOp {
                    destination: account_id(3),
                    starting_balance: 22,
                })),
                op(OperationBody::AccountMerge(MuxedAccount::Ed25519(Uint256(
                    key(4),
                )))),
                op(OperationBody::PathPaymentStrictReceive(
                    PathPaymentStrictReceiveOp {
                        send_asset: usd(),
                        send_max: 1000,
                        destination: MuxedAccount::Ed25519(Uint256(key(5))),
                        dest_asset: Asset::Native,
                        dest_amount: 44,
                        path: Default::default(),
                    },
                )),
                op(OperationBody::PathPaymentStrictSend(
                    PathPaymentStrictSendOp {
                        send_asset: Asset::Native,
                        send_amount: 10,
                        destination: MuxedAccount::Ed25519(Uint256(key(6))),
                        dest_asset: usd(),
                        dest_min: 1,
                        path: Default::default(),
                    },
                )),
                op(OperationBody::BumpSequence(stellar_xdr::BumpSequenceOp {
                    bump_to: SequenceNumber(9),
                })),
            ],
            vec![
                OperationResultTr::Payment(stellar_xdr::PaymentResult::Success),
                OperationResultTr::CreateAccount(stellar_xdr::CreateAccountResult::Success),
                OperationResultTr::AccountMerge(AccountMergeResult::Success(33)),
                OperationResultTr::PathPaymentStrictReceive(
                    PathPaymentStrictReceiveResult::Success(
                        PathPaymentStrictReceiveResultSuccess {
                            offers: Default::default(),
                            last: SimplePaymentResult {
                                destination: account_id(5),
                                asset: Asset::Native,
                                amount: 44,
                            },
                        },
                    ),
                ),
                OperationResultTr::PathPaymentStrictSend(PathPaymentStrictSendResult::Success(
                    PathPaymentStrictSendResultSuccess {
                        offers: Default::default(),
                        last: SimplePaymentResult {
                            destination: account_id(6),
                            asset: usd(),
                            amount: 55,
                        },
                    },
                )),
                OperationResultTr::BumpSequence(stellar_xdr::BumpSequenceResult::Success),
            ],
            Memo::Id(42),
            true,
        );
        let credits = credits(&tx).unwrap_or_else(|e| panic!("{e}"));
        let seen: Vec<_> = credits
            .iter()
            .map(|c| (c.kind, c.destination.clone(), c.amount, c.asset.clone()))
            .collect();
        let usd = Some(("USD".to_owned(), address(9)));
        assert_eq!(
            seen,
            vec![
                ("payment", address(2), 11, usd.clone()),
                ("create_account", address(3), 22, None),
                ("account_merge", address(4), 33, None),
                ("path_payment_strict_receive", address(5), 44, None),
                ("path_payment_strict_send", address(6), 55, usd),
            ]
        );
        for (index, credit) in credits.iter().enumerate() {
            assert_eq!(credit.operation_id, toid(7, 3, index));
            assert_eq!(credit.source, address(1));
            assert_eq!(credit.memo, Some(("42".to_owned(), "id")));
            assert_eq!(credit.tx_hash, "ab".repeat(32));
        }
    }

    #[test]
    fn a_failed_transaction_credits_nothing_and_bad_xdr_is_an_error() {
        let payment = || {
            op(OperationBody::Payment(PaymentOp {
                destination: MuxedAccount::Ed25519(Uint256(key(2))),
                asset: Asset::Native,
                amount: 11,
            }))
        };
        let failed = applied(
            vec![payment()],
            vec![OperationResultTr::Payment(
                stellar_xdr::PaymentResult::Underfunded,
            )],
            Memo::None,
            false,
        );
        assert_eq!(credits(&failed).ok(), Some(Vec::new()));
        let mut broken = applied(
            vec![payment()],
            vec![OperationResultTr::Payment(
                stellar_xdr::PaymentResult::Success,
            )],
            Memo::Hash(Hash([1; 32])),
            true,
        );
        broken.result_xdr = "not xdr".into();
        assert!(credits(&broken).is_err());
    }

    fn balance_id(byte: u8) -> ClaimableBalanceId {
        ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash([byte; 32]))
    }

    fn claim_op(byte: u8, source: Option<MuxedAccount>) -> Operation {
        Operation {
            source_account: source,
            body: OperationBody::ClaimClaimableBalance(stellar_xdr::ClaimClaimableBalanceOp {
                balance_id: balance_id(byte),
            }),
        }
    }

    fn claimed() -> OperationResultTr {
        OperationResultTr::ClaimClaimableBalance(ClaimClaimableBalanceResult::Success)
    }

    /// The meta core writes for a claim of balance `byte` (`amount` of `asset`, sponsored by
    /// account `sponsor`): its state before, then its removal.
    fn claim_changes(byte: u8, amount: i64, asset: Asset, sponsor: u8) -> LedgerEntryChanges {
        let entry = stellar_xdr::LedgerEntry {
            last_modified_ledger_seq: 5,
            data: LedgerEntryData::ClaimableBalance(stellar_xdr::ClaimableBalanceEntry {
                balance_id: balance_id(byte),
                claimants: Default::default(),
                asset,
                amount,
                ext: stellar_xdr::ClaimableBalanceEntryExt::V0,
            }),
            ext: stellar_xdr::LedgerEntryExt::V1(stellar_xdr::LedgerEntryExtensionV1 {
                sponsoring_id: stellar_xdr::SponsorshipDescriptor(Some(account_id(sponsor))),
                ext: stellar_xdr::LedgerEntryExtensionV1Ext::V0,
            }),
        };
        LedgerEntryChanges(
            vec![
                LedgerEntryChange::State(entry),
                LedgerEntryChange::Removed(stellar_xdr::LedgerKey::ClaimableBalance(
                    stellar_xdr::LedgerKeyClaimableBalance {
                        balance_id: balance_id(byte),
                    },
                )),
            ]
            .try_into()
            .unwrap_or_default(),
        )
    }

    fn meta_v4(ops: Vec<LedgerEntryChanges>) -> String {
        let operations: Vec<stellar_xdr::OperationMetaV2> = ops
            .into_iter()
            .map(|changes| stellar_xdr::OperationMetaV2 {
                changes,
                ..Default::default()
            })
            .collect();
        TransactionMeta::V4(stellar_xdr::TransactionMetaV4 {
            operations: operations.try_into().unwrap_or_default(),
            ..Default::default()
        })
        .to_xdr_base64(Limits::none())
        .unwrap_or_default()
    }

    fn muxed_account(byte: u8, id: u64) -> MuxedAccount {
        MuxedAccount::MuxedEd25519(stellar_xdr::MuxedAccountMed25519 {
            id,
            ed25519: Uint256(key(byte)),
        })
    }

    #[test]
    fn a_claim_credits_its_claimant_the_amount_and_asset_its_meta_shows() {
        // Account 1 sends the transaction; the claim is account 4's operation, through a muxed
        // address; a create_claimable_balance (account 1 for account 5) credits nobody.
        let mut tx = applied(
            vec![
                op(OperationBody::CreateClaimableBalance(
                    stellar_xdr::CreateClaimableBalanceOp {
                        asset: Asset::Native,
                        amount: 99,
                        claimants: vec![stellar_xdr::Claimant::ClaimantTypeV0(
                            stellar_xdr::ClaimantV0 {
                                destination: account_id(5),
                                predicate: stellar_xdr::ClaimPredicate::Unconditional,
                            },
                        )]
                        .try_into()
                        .unwrap_or_default(),
                    },
                )),
                claim_op(8, Some(muxed_account(4, u64::MAX))),
            ],
            vec![
                OperationResultTr::CreateClaimableBalance(
                    stellar_xdr::CreateClaimableBalanceResult::Success(balance_id(9)),
                ),
                claimed(),
            ],
            Memo::None,
            true,
        );
        tx.result_meta_xdr = Some(meta_v4(vec![
            LedgerEntryChanges(Default::default()),
            claim_changes(8, 1234, usd(), 6),
        ]));
        let credits = credits(&tx).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(credits.len(), 1, "{credits:?}");
        let claim = &credits[0];
        assert_eq!(claim.kind, "claim_claimable_balance");
        assert_eq!(claim.destination, address(4));
        assert_eq!(claim.muxed_id, Some(u64::MAX));
        assert_eq!(claim.amount, 1234);
        assert_eq!(claim.asset, Some(("USD".to_owned(), address(9))));
        // Who paid: the balance's sponsor (its creator).
        assert_eq!(claim.source, address(6));
        assert_eq!(claim.operation_id, toid(7, 3, 1));
        assert_eq!(claim.unreadable, None);
    }

    #[test]
    fn a_claim_without_meta_is_unreadable_and_a_meta_without_the_balance_is_an_error() {
        let mut tx = applied(vec![claim_op(8, None)], vec![claimed()], Memo::None, true);
        let credits_without = credits(&tx).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(credits_without.len(), 1);
        assert_eq!(credits_without[0].destination, address(1));
        assert!(credits_without[0].unreadable.is_some());
        // A meta that shows another balance: the claim's amount cannot be known.
        tx.result_meta_xdr = Some(meta_v4(vec![claim_changes(7, 5, Asset::Native, 2)]));
        assert!(credits(&tx).is_err());
        tx.result_meta_xdr = Some("not xdr".into());
        assert!(credits(&tx).is_err());
        // Read from the older meta versions too.
        tx.result_meta_xdr = Some(
            TransactionMeta::V2(stellar_xdr::TransactionMetaV2 {
                tx_changes_before: LedgerEntryChanges(Default::default()),
                operations: vec![stellar_xdr::OperationMeta {
                    changes: claim_changes(8, 77, Asset::Native, 2),
                }]
                .try_into()
                .unwrap_or_default(),
                tx_changes_after: LedgerEntryChanges(Default::default()),
            })
            .to_xdr_base64(Limits::none())
            .unwrap_or_default(),
        );
        let read = credits(&tx).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((read[0].amount, read[0].asset.clone()), (77, None));
        // A failed claim credits nothing (and needs no meta).
        let failed = applied(
            vec![claim_op(8, None)],
            vec![OperationResultTr::ClaimClaimableBalance(
                ClaimClaimableBalanceResult::CannotClaim,
            )],
            Memo::None,
            false,
        );
        assert_eq!(credits(&failed).ok(), Some(Vec::new()));
    }

    #[test]
    fn a_payment_to_a_muxed_address_credits_its_account_with_the_muxed_id() {
        let tx = applied(
            vec![
                op(OperationBody::Payment(PaymentOp {
                    destination: muxed_account(2, 18_446_744_073_709_551_000),
                    asset: Asset::Native,
                    amount: 11,
                })),
                op(OperationBody::Payment(PaymentOp {
                    destination: MuxedAccount::Ed25519(Uint256(key(2))),
                    asset: Asset::Native,
                    amount: 12,
                })),
            ],
            vec![
                OperationResultTr::Payment(stellar_xdr::PaymentResult::Success),
                OperationResultTr::Payment(stellar_xdr::PaymentResult::Success),
            ],
            Memo::None,
            true,
        );
        let credits = credits(&tx).unwrap_or_else(|e| panic!("{e}"));
        let seen: Vec<_> = credits
            .iter()
            .map(|c| (c.destination.clone(), c.muxed_id, c.amount))
            .collect();
        assert_eq!(
            seen,
            vec![
                (address(2), Some(18_446_744_073_709_551_000), 11),
                (address(2), None, 12),
            ]
        );
    }
}
