//! The simulated ledger: accounts and their native balances, the ledger clock, and the two things
//! stellar-core does with a transaction: check it is valid ([`LedgerState::check_valid`], at
//! admission) and apply it ([`LedgerState::apply`], while closing a ledger).
//!
//! Validation follows stellar-core's order (`TransactionFrame::commonValid`, then operation
//! checks, then unused signatures), so a transaction with several problems gets the code core
//! would give it.
//!
//! Operations applied: `create_account`, native `payment` (to `G...` or muxed `M...`
//! destinations), and native claimable balances (`create_claimable_balance` with unconditional
//! claimants, sponsored by their creator, and `claim_claimable_balance`). Each applied
//! transaction gets its `TransactionMeta` (v4): every operation's ledger entry changes, as core
//! records them (an account's state before and after, a balance created, or its state before
//! its removal).

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountId, Asset, ClaimClaimableBalanceResult, ClaimPredicate, ClaimableBalanceEntry,
    ClaimableBalanceEntryExt, ClaimableBalanceId, Claimant, ClaimantV0, CreateAccountResult,
    CreateClaimableBalanceResult, Hash, HashIdPreimage, HashIdPreimageOperationId, LedgerEntry,
    LedgerEntryChange, LedgerEntryChanges, LedgerEntryData, LedgerEntryExt, LedgerEntryExtensionV1,
    LedgerEntryExtensionV1Ext, LedgerKey, LedgerKeyClaimableBalance, Limits, Operation,
    OperationBody, OperationMetaV2, OperationResult, OperationResultTr, PaymentResult, PublicKey,
    SequenceNumber, SponsorshipDescriptor, TransactionMeta, TransactionMetaV4, TransactionResult,
    Uint256, WriteXdr,
};

use crate::account::{AccountEntry, AccountKey};
use crate::amount::TOTAL_SUPPLY;
use crate::envelope::{SubmittedTransaction, TxHash};
use crate::results::{self, TxFailure};

/// The ledger and close time a check is made against.
///
/// At admission that is the next ledger with the last close time (as core does); while closing a
/// ledger it is that ledger and its own close time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moment {
    /// The ledger the transaction would be (or is being) applied in.
    pub ledger: u32,
    /// The close time to check time bounds against (Unix seconds).
    pub close_time: u64,
}

/// A transaction refused at the transaction level: the result core returns, nothing changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// The `TransactionResult` (its `fee_charged` is the fee bid, as core reports it).
    pub result: TransactionResult,
    /// Why the simulator refused something real Stellar might accept (unsupported features).
    pub detail: Option<String>,
}

impl Rejection {
    fn new(tx: &SubmittedTransaction, failure: Failure) -> Self {
        let result = match failure.inner_hash {
            Some(inner_hash) => {
                results::fee_bump_result(tx.max_fee(), inner_hash, failure.failure.into_inner())
            }
            None => results::transaction_result(tx.max_fee(), failure.failure.into_outer()),
        };
        Rejection {
            result,
            detail: failure.detail,
        }
    }

    /// Whether this is `tx_bad_seq` (of the transaction, or of a fee bump's inner transaction).
    pub fn is_bad_seq(&self) -> bool {
        use stellar_xdr::{InnerTransactionResultResult as I, TransactionResultResult as R};
        match &self.result.result {
            R::TxBadSeq => true,
            R::TxFeeBumpInnerFailed(pair) => matches!(pair.result.result, I::TxBadSeq),
            _ => false,
        }
    }
}

/// A validation failure before it becomes a result: the code, the fee bump's inner transaction
/// if the code is the inner transaction's, and the simulator's explanation if any.
struct Failure {
    failure: TxFailure,
    inner_hash: Option<TxHash>,
    detail: Option<String>,
}

impl From<TxFailure> for Failure {
    fn from(failure: TxFailure) -> Self {
        Failure {
            failure,
            inner_hash: None,
            detail: None,
        }
    }
}

/// What applying a transaction did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The result, as core records it.
    pub result: TransactionResult,
    /// The fee taken from the fee account.
    pub fee_charged: i64,
    /// Horizon's `fee_meta_xdr`: the fee account before and after the fee.
    pub fee_meta_xdr: String,
    /// The `TransactionMeta` (v4), base64: each operation's ledger entry changes (none for a
    /// failed transaction). Horizon's `result_meta_xdr`, RPC's `resultMetaXdr`.
    pub result_meta_xdr: String,
}

/// A claimable balance: native lumens held for its claimants, sponsored by the account that
/// created it (one base reserve per claimant, until claimed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimableBalance {
    /// The creator, whose reserve it raises.
    pub sponsor: AccountKey,
    /// Who may claim it (unconditionally).
    pub claimants: Vec<AccountKey>,
    /// Stroops.
    pub amount: i64,
    /// The ledger that created it.
    pub last_modified_ledger: u32,
}

/// A claimable balance's id as core derives it: sha256 of the `HashIdPreimage::OpId` of the
/// creating operation (the transaction's source and sequence number, the operation's index).
pub fn claimable_balance_id(source: AccountKey, sequence: i64, op_index: u32) -> [u8; 32] {
    let preimage = HashIdPreimage::OpId(HashIdPreimageOperationId {
        source_account: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(source.0))),
        seq_num: SequenceNumber(sequence),
        op_num: op_index,
    });
    Sha256::digest(preimage.to_xdr(Limits::none()).unwrap_or_default()).into()
}

/// A balance id as Horizon shows it: the `ClaimableBalanceId` XDR in hex (the type, 0, then the
/// hash).
pub fn balance_id_hex(id: &[u8; 32]) -> String {
    format!("00000000{}", hex::encode(id))
}

/// The hash of a balance id in Horizon's hex form (with or without the type prefix).
pub fn parse_balance_id(text: &str) -> Option<[u8; 32]> {
    let hash = match text.len() {
        72 => text.strip_prefix("00000000")?,
        64 => text,
        _ => return None,
    };
    hex::decode(hash).ok()?.try_into().ok()
}

/// The ledger state: accounts, the last closed ledger and the network's fee settings.
///
/// Lumens are conserved: the balances plus the fee pool always add up to [`TOTAL_SUPPLY`].
#[derive(Clone, Debug)]
pub struct LedgerState {
    network_id: [u8; 32],
    root: AccountKey,
    /// Fees collected so far, in stroops.
    pub fee_pool: i64,
    /// The last closed ledger's sequence number.
    pub sequence: u32,
    /// The last closed ledger's close time (Unix seconds).
    pub close_time: u64,
    /// The base fee per operation, in stroops.
    pub base_fee: u32,
    /// The base reserve, in stroops.
    pub base_reserve: i64,
    accounts: BTreeMap<AccountKey, AccountEntry>,
    claimable_balances: BTreeMap<[u8; 32], ClaimableBalance>,
}

impl LedgerState {
    /// Ledger 1 of a new network: the root account holds every lumen.
    pub fn genesis(
        network_id: [u8; 32],
        root: AccountKey,
        base_fee: u32,
        base_reserve: i64,
        close_time: u64,
    ) -> Self {
        let mut accounts = BTreeMap::new();
        let mut root_entry = AccountEntry::created(TOTAL_SUPPLY, 1, close_time);
        root_entry.sequence = 0;
        accounts.insert(root, root_entry);
        LedgerState {
            network_id,
            root,
            fee_pool: 0,
            sequence: 1,
            close_time,
            base_fee,
            base_reserve,
            accounts,
            claimable_balances: BTreeMap::new(),
        }
    }

    /// The network id (sha256 of the passphrase) transaction hashes are computed with.
    pub fn network_id(&self) -> [u8; 32] {
        self.network_id
    }

    /// The moment transactions submitted now are checked against.
    pub fn admission_moment(&self) -> Moment {
        Moment {
            ledger: self.sequence.saturating_add(1),
            close_time: self.close_time,
        }
    }

    /// Starts closing the next ledger at `close_time`, never before the previous close.
    ///
    /// Stellar's close times strictly increase, but its ledgers are seconds apart; a simulator
    /// closing several ledgers a second keeps the clock from running ahead of real time (which
    /// would expire transactions' time bounds early) by letting close times repeat.
    pub fn begin_ledger(&mut self, close_time: u64) -> Moment {
        self.sequence = self.sequence.saturating_add(1);
        self.close_time = close_time.max(self.close_time);
        Moment {
            ledger: self.sequence,
            close_time: self.close_time,
        }
    }

    /// One account.
    pub fn account(&self, key: &AccountKey) -> Option<&AccountEntry> {
        self.accounts.get(key)
    }

    /// One claimable balance, by the hash of its id.
    pub fn claimable_balance(&self, id: &[u8; 32]) -> Option<&ClaimableBalance> {
        self.claimable_balances.get(id)
    }

    /// Every account, in key order.
    pub fn accounts(&self) -> impl Iterator<Item = (&AccountKey, &AccountEntry)> {
        self.accounts.iter()
    }

    /// A copy of every account as it is now: what a lagging Horizon node keeps answering from.
    pub fn accounts_snapshot(&self) -> BTreeMap<AccountKey, AccountEntry> {
        self.accounts.clone()
    }

    /// The root account, which holds every lumen not given out.
    pub fn root(&self) -> AccountKey {
        self.root
    }

    /// Creates an account outside any transaction (test setup, like a genesis entry), with
    /// lumens taken from the root account. Refused (`false`) if the account exists, the balance
    /// is negative, or the root account cannot spare it.
    pub fn insert_account(&mut self, key: AccountKey, balance: i64) -> bool {
        if self.accounts.contains_key(&key) || balance < 0 {
            return false;
        }
        let reserve = self.base_reserve;
        let Some(root) = self.accounts.get_mut(&self.root) else {
            return false;
        };
        if root.available_balance(reserve) < balance {
            return false;
        }
        root.balance -= balance;
        let entry = AccountEntry::created(balance, self.sequence, self.close_time);
        self.accounts.insert(key, entry);
        true
    }

    /// Removes `account` and gives its lumens to `into` (an `account_merge`), in ledger `at`.
    /// False if either is missing or they are the same account.
    pub fn merge_account(&mut self, account: &AccountKey, into: &AccountKey, at: Moment) -> bool {
        if account == into || !self.accounts.contains_key(into) {
            return false;
        }
        let Some(gone) = self.accounts.remove(account) else {
            return false;
        };
        if let Some(entry) = self.accounts.get_mut(into) {
            entry.balance = entry.balance.saturating_add(gone.balance);
            entry.last_modified_ledger = at.ledger;
            entry.last_modified_time = at.close_time;
        }
        true
    }

    /// Checks `tx` as stellar-core does before accepting it (nothing changes).
    pub fn check_valid(&self, tx: &SubmittedTransaction, at: Moment) -> Result<(), Rejection> {
        self.validate(tx, at).map_err(|f| Rejection::new(tx, f))
    }

    fn validate(&self, tx: &SubmittedTransaction, at: Moment) -> Result<(), Failure> {
        let Some(bump) = &tx.fee_bump else {
            return self.validate_transaction(tx, at, true);
        };
        let minimum = i64::from(self.base_fee).saturating_mul(tx.fee_operation_count());
        // The fee bump must pay at least the base fee for every operation plus one, and at
        // least the inner transaction's fee rate.
        let operations = i64::try_from(tx.operations.len()).unwrap_or(i64::MAX);
        let lower_rate = i128::from(bump.fee) * i128::from(operations)
            < i128::from(tx.fee) * i128::from(tx.fee_operation_count());
        if tx.operations.is_empty() {
            return Err(TxFailure::MissingOperation.into());
        }
        if bump.fee < minimum || lower_rate {
            return Err(TxFailure::InsufficientFee.into());
        }
        let fee_account = tx.fee_account();
        let Some(fee_entry) = self.accounts.get(&fee_account) else {
            return Err(TxFailure::NoAccount.into());
        };
        let mut used = vec![false; bump.signers.len()];
        if !signed_by(&bump.signers, &mut used, &fee_account) {
            return Err(TxFailure::BadAuth.into());
        }
        if fee_entry.available_balance(self.base_reserve) < bump.fee {
            return Err(TxFailure::InsufficientBalance.into());
        }
        if used.contains(&false) {
            return Err(TxFailure::BadAuthExtra.into());
        }
        self.validate_transaction(tx, at, false)
            .map_err(|inner| Failure {
                inner_hash: Some(bump.inner_hash),
                ..inner
            })
    }

    /// Validates a plain transaction, or a fee bump's inner one (`charges_fee` false: the fee
    /// source pays, so neither the inner fee nor the source's balance is checked).
    fn validate_transaction(
        &self,
        tx: &SubmittedTransaction,
        at: Moment,
        charges_fee: bool,
    ) -> Result<(), Failure> {
        if let Some(unsupported) = tx.unsupported {
            return Err(Failure {
                failure: TxFailure::NotSupported,
                inner_hash: None,
                detail: Some(format!(
                    "the Horizon simulator does not implement {unsupported}"
                )),
            });
        }
        if tx.operations.is_empty() {
            return Err(TxFailure::MissingOperation.into());
        }
        if let Some(bounds) = &tx.time_bounds {
            if bounds.min_time.0 > at.close_time {
                return Err(TxFailure::TooEarly.into());
            }
            if bounds.max_time.0 != 0 && bounds.max_time.0 < at.close_time {
                return Err(TxFailure::TooLate.into());
            }
        }
        if let Some(bounds) = &tx.ledger_bounds {
            if bounds.min_ledger > at.ledger {
                return Err(TxFailure::TooEarly.into());
            }
            if bounds.max_ledger != 0 && bounds.max_ledger <= at.ledger {
                return Err(TxFailure::TooLate.into());
            }
        }
        let minimum = i64::from(self.base_fee).saturating_mul(tx.fee_operation_count());
        if charges_fee && i64::from(tx.fee) < minimum {
            return Err(TxFailure::InsufficientFee.into());
        }
        let source = tx.source_account();
        let Some(source_entry) = self.accounts.get(&source) else {
            return Err(TxFailure::NoAccount.into());
        };
        if Some(tx.sequence) != source_entry.sequence.checked_add(1) {
            return Err(TxFailure::BadSeq.into());
        }
        let mut used = vec![false; tx.signers.len()];
        if !signed_by(&tx.signers, &mut used, &source) {
            return Err(TxFailure::BadAuth.into());
        }
        if charges_fee && source_entry.available_balance(self.base_reserve) < i64::from(tx.fee) {
            return Err(TxFailure::InsufficientBalance.into());
        }
        let mut op_results = Vec::with_capacity(tx.operations.len());
        let mut detail = None;
        for (index, op) in tx.operations.iter().enumerate() {
            let op_source = op
                .source_account
                .as_ref()
                .map(AccountKey::of_muxed)
                .unwrap_or(source);
            let result = if op_source != source && !self.accounts.contains_key(&op_source) {
                OperationResult::OpNoAccount
            } else if op_source != source && !signed_by(&tx.signers, &mut used, &op_source) {
                OperationResult::OpBadAuth
            } else {
                match check_operation(op, op_source) {
                    Ok(result) => result,
                    Err(unsupported) => {
                        detail.get_or_insert(format!(
                            "operation {index} ({unsupported}) is not supported by the Horizon simulator"
                        ));
                        OperationResult::OpNotSupported
                    }
                }
            };
            op_results.push(result);
        }
        if !op_results.iter().all(operation_succeeded) {
            return Err(Failure {
                failure: TxFailure::Failed(op_results),
                inner_hash: None,
                detail,
            });
        }
        if used.contains(&false) {
            return Err(TxFailure::BadAuthExtra.into());
        }
        Ok(())
    }

    /// Applies `tx` in the ledger being closed (`at`), after checking it again.
    ///
    /// A transaction-level failure (it became too late, ...) changes nothing: core would not
    /// have put it in the ledger. Otherwise the fee is charged and the sequence number consumed,
    /// and then either every operation applies or, if one fails, none does (`tx_failed`).
    pub fn apply(&mut self, tx: &SubmittedTransaction, at: Moment) -> Result<Applied, Rejection> {
        self.apply_at_rate(tx, at, i64::from(self.base_fee))
    }

    /// [`LedgerState::apply`], charging `rate` per operation (a surge's clearing price; never
    /// less than the base fee, never more than the transaction bid).
    pub fn apply_at_rate(
        &mut self,
        tx: &SubmittedTransaction,
        at: Moment,
        rate: i64,
    ) -> Result<Applied, Rejection> {
        self.check_valid(tx, at)?;
        let fee_account = tx.fee_account();
        let fee_due = rate
            .max(i64::from(self.base_fee))
            .saturating_mul(tx.fee_operation_count())
            .min(tx.max_fee());
        let (fee_charged, fee_meta_xdr) = match self.accounts.get_mut(&fee_account) {
            Some(entry) => {
                let before = entry.clone();
                let fee_charged = fee_due.min(entry.balance);
                entry.balance -= fee_charged;
                self.fee_pool += fee_charged;
                entry.last_modified_ledger = at.ledger;
                entry.last_modified_time = at.close_time;
                let meta = fee_meta_xdr(&fee_account, &before, entry);
                (fee_charged, meta)
            }
            // Unreachable: check_valid found the fee account.
            None => (0, String::new()),
        };
        let source = tx.source_account();
        if let Some(entry) = self.accounts.get_mut(&source) {
            entry.sequence = tx.sequence;
            entry.sequence_bumped = Some((at.ledger, at.close_time));
            entry.last_modified_ledger = at.ledger;
            entry.last_modified_time = at.close_time;
        }

        let mut changes = Overlay::new(self, at, source, tx.sequence);
        let mut op_changes = Vec::with_capacity(tx.operations.len());
        let op_results: Vec<OperationResult> = tx
            .operations
            .iter()
            .enumerate()
            .map(|(index, op)| {
                let op_source = op
                    .source_account
                    .as_ref()
                    .map(AccountKey::of_muxed)
                    .unwrap_or(source);
                let result = changes.apply_operation(op, op_source, index);
                op_changes.push(changes.take_op_changes());
                result
            })
            .collect();
        let successful = op_results.iter().all(operation_succeeded);
        if successful {
            let (accounts, balances) = changes.into_updates();
            self.accounts.extend(accounts);
            for (id, balance) in balances {
                match balance {
                    Some(balance) => self.claimable_balances.insert(id, balance),
                    None => self.claimable_balances.remove(&id),
                };
            }
        } else {
            // A failed transaction changed nothing but its fee and sequence number.
            op_changes.clear();
        }
        let result_meta_xdr = transaction_meta_xdr(op_changes);
        let ops = op_results.try_into().unwrap_or_default();
        let result = match tx.inner_hash() {
            Some(inner_hash) => {
                let inner = if successful {
                    stellar_xdr::InnerTransactionResultResult::TxSuccess(ops)
                } else {
                    stellar_xdr::InnerTransactionResultResult::TxFailed(ops)
                };
                results::fee_bump_result(fee_charged, inner_hash, inner)
            }
            None => results::transaction_result(
                fee_charged,
                if successful {
                    stellar_xdr::TransactionResultResult::TxSuccess(ops)
                } else {
                    stellar_xdr::TransactionResultResult::TxFailed(ops)
                },
            ),
        };
        Ok(Applied {
            result,
            fee_charged,
            fee_meta_xdr,
            result_meta_xdr,
        })
    }
}

/// Ledger changes of one transaction's operations, kept apart until all of them succeed, and
/// each operation's changes as its meta records them.
struct Overlay<'a> {
    ledger: &'a LedgerState,
    at: Moment,
    tx_source: AccountKey,
    tx_sequence: i64,
    changed: HashMap<AccountKey, AccountEntry>,
    /// Claimable balances created (`Some`) or claimed (`None`).
    balances: HashMap<[u8; 32], Option<ClaimableBalance>>,
    op_changes: Vec<LedgerEntryChange>,
}

impl<'a> Overlay<'a> {
    fn new(ledger: &'a LedgerState, at: Moment, tx_source: AccountKey, tx_sequence: i64) -> Self {
        Overlay {
            ledger,
            at,
            tx_source,
            tx_sequence,
            changed: HashMap::new(),
            balances: HashMap::new(),
            op_changes: Vec::new(),
        }
    }

    fn get(&self, key: &AccountKey) -> Option<AccountEntry> {
        self.changed
            .get(key)
            .or_else(|| self.ledger.accounts.get(key))
            .cloned()
    }

    fn put(&mut self, key: AccountKey, mut entry: AccountEntry) {
        let before = self.get(&key);
        entry.last_modified_ledger = self.at.ledger;
        entry.last_modified_time = self.at.close_time;
        match before {
            Some(before) => {
                self.op_changes
                    .push(LedgerEntryChange::State(account_ledger_entry(
                        &key, &before,
                    )));
                self.op_changes
                    .push(LedgerEntryChange::Updated(account_ledger_entry(
                        &key, &entry,
                    )));
            }
            None => self
                .op_changes
                .push(LedgerEntryChange::Created(account_ledger_entry(
                    &key, &entry,
                ))),
        }
        self.changed.insert(key, entry);
    }

    fn balance(&self, id: &[u8; 32]) -> Option<ClaimableBalance> {
        match self.balances.get(id) {
            Some(staged) => staged.clone(),
            None => self.ledger.claimable_balances.get(id).cloned(),
        }
    }

    /// The changes of the operation just applied.
    fn take_op_changes(&mut self) -> Vec<LedgerEntryChange> {
        std::mem::take(&mut self.op_changes)
    }

    #[allow(clippy::type_complexity)] // reason: two maps handed back to their owner at once
    fn into_updates(
        self,
    ) -> (
        HashMap<AccountKey, AccountEntry>,
        HashMap<[u8; 32], Option<ClaimableBalance>>,
    ) {
        (self.changed, self.balances)
    }

    fn apply_operation(
        &mut self,
        op: &Operation,
        source: AccountKey,
        index: usize,
    ) -> OperationResult {
        let reserve = self.ledger.base_reserve;
        match &op.body {
            OperationBody::CreateAccount(create) => {
                let destination = account_id_key(&create.destination);
                let code = if self.get(&destination).is_some() {
                    CreateAccountResult::AlreadyExist
                } else if create.starting_balance < 2 * reserve {
                    CreateAccountResult::LowReserve
                } else {
                    match self.get(&source) {
                        Some(mut from)
                            if from.available_balance(reserve) >= create.starting_balance =>
                        {
                            from.balance -= create.starting_balance;
                            self.put(source, from);
                            let created = AccountEntry::created(
                                create.starting_balance,
                                self.at.ledger,
                                self.at.close_time,
                            );
                            self.put(destination, created);
                            CreateAccountResult::Success
                        }
                        _ => CreateAccountResult::Underfunded,
                    }
                };
                OperationResult::OpInner(OperationResultTr::CreateAccount(code))
            }
            OperationBody::Payment(payment) => {
                let destination = AccountKey::of_muxed(&payment.destination);
                let code = match (self.get(&source), self.get(&destination)) {
                    (_, None) => PaymentResult::NoDestination,
                    (Some(_), Some(_)) if source == destination => PaymentResult::Success,
                    (Some(from), Some(_)) if from.available_balance(reserve) < payment.amount => {
                        PaymentResult::Underfunded
                    }
                    (Some(mut from), Some(mut to)) => {
                        match to.balance.checked_add(payment.amount) {
                            Some(balance) => {
                                from.balance -= payment.amount;
                                to.balance = balance;
                                self.put(source, from);
                                self.put(destination, to);
                                PaymentResult::Success
                            }
                            None => PaymentResult::LineFull,
                        }
                    }
                    (None, Some(_)) => PaymentResult::Underfunded,
                };
                OperationResult::OpInner(OperationResultTr::Payment(code))
            }
            OperationBody::CreateClaimableBalance(create) => {
                let claimants = unconditional_claimants(&create.claimants).unwrap_or_default();
                let sponsored = u32::try_from(claimants.len()).unwrap_or(u32::MAX);
                let code = match self.get(&source) {
                    None => CreateClaimableBalanceResult::Underfunded,
                    Some(mut from) => {
                        from.num_sponsoring = from.num_sponsoring.saturating_add(sponsored);
                        if from.available_balance(reserve) < 0 {
                            CreateClaimableBalanceResult::LowReserve
                        } else if from.available_balance(reserve) < create.amount {
                            CreateClaimableBalanceResult::Underfunded
                        } else {
                            from.balance -= create.amount;
                            self.put(source, from);
                            let op_num = u32::try_from(index).unwrap_or(u32::MAX);
                            let id = claimable_balance_id(self.tx_source, self.tx_sequence, op_num);
                            let balance = ClaimableBalance {
                                sponsor: source,
                                claimants,
                                amount: create.amount,
                                last_modified_ledger: self.at.ledger,
                            };
                            self.op_changes
                                .push(LedgerEntryChange::Created(balance_ledger_entry(
                                    &id, &balance,
                                )));
                            self.balances.insert(id, Some(balance));
                            CreateClaimableBalanceResult::Success(
                                ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(id)),
                            )
                        }
                    }
                };
                OperationResult::OpInner(OperationResultTr::CreateClaimableBalance(code))
            }
            OperationBody::ClaimClaimableBalance(claim) => {
                let ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(id)) = &claim.balance_id;
                let code = match (self.balance(id), self.get(&source)) {
                    (None, _) | (_, None) => ClaimClaimableBalanceResult::DoesNotExist,
                    (Some(balance), Some(_)) if !balance.claimants.contains(&source) => {
                        ClaimClaimableBalanceResult::CannotClaim
                    }
                    (Some(balance), Some(mut to)) => match to.balance.checked_add(balance.amount) {
                        None => ClaimClaimableBalanceResult::LineFull,
                        Some(credited) => {
                            self.op_changes
                                .push(LedgerEntryChange::State(balance_ledger_entry(id, &balance)));
                            self.op_changes.push(LedgerEntryChange::Removed(
                                LedgerKey::ClaimableBalance(LedgerKeyClaimableBalance {
                                    balance_id: claim.balance_id.clone(),
                                }),
                            ));
                            self.balances.insert(*id, None);
                            let released =
                                u32::try_from(balance.claimants.len()).unwrap_or(u32::MAX);
                            if balance.sponsor == source {
                                to.num_sponsoring = to.num_sponsoring.saturating_sub(released);
                            } else if let Some(mut sponsor) = self.get(&balance.sponsor) {
                                sponsor.num_sponsoring =
                                    sponsor.num_sponsoring.saturating_sub(released);
                                self.put(balance.sponsor, sponsor);
                            }
                            to.balance = credited;
                            self.put(source, to);
                            ClaimClaimableBalanceResult::Success
                        }
                    },
                };
                OperationResult::OpInner(OperationResultTr::ClaimClaimableBalance(code))
            }
            // Refused by check_valid before anything is applied.
            _ => OperationResult::OpNotSupported,
        }
    }
}

/// Checks one operation on its own (core's `doCheckValid`): `Err` names an operation type or
/// feature the simulator does not implement.
fn check_operation(op: &Operation, source: AccountKey) -> Result<OperationResult, String> {
    match &op.body {
        OperationBody::CreateAccount(create) => {
            let code =
                if create.starting_balance < 0 || account_id_key(&create.destination) == source {
                    CreateAccountResult::Malformed
                } else {
                    CreateAccountResult::Success
                };
            Ok(OperationResult::OpInner(OperationResultTr::CreateAccount(
                code,
            )))
        }
        OperationBody::Payment(payment) => {
            if !matches!(payment.asset, Asset::Native) {
                return Err("payment of a non-native asset".to_owned());
            }
            let code = if payment.amount <= 0 {
                PaymentResult::Malformed
            } else {
                PaymentResult::Success
            };
            Ok(OperationResult::OpInner(OperationResultTr::Payment(code)))
        }
        OperationBody::CreateClaimableBalance(create) => {
            if !matches!(create.asset, Asset::Native) {
                return Err("a claimable balance of a non-native asset".to_owned());
            }
            let Some(claimants) = unconditional_claimants(&create.claimants) else {
                return Err("claim predicates other than unconditional".to_owned());
            };
            let mut unique = claimants.clone();
            unique.sort();
            unique.dedup();
            let code =
                if create.amount <= 0 || claimants.is_empty() || unique.len() != claimants.len() {
                    CreateClaimableBalanceResult::Malformed
                } else {
                    // Any success value: the id is only known when applied.
                    CreateClaimableBalanceResult::Success(
                        ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash([0; 32])),
                    )
                };
            Ok(OperationResult::OpInner(
                OperationResultTr::CreateClaimableBalance(code),
            ))
        }
        OperationBody::ClaimClaimableBalance(_) => Ok(OperationResult::OpInner(
            OperationResultTr::ClaimClaimableBalance(ClaimClaimableBalanceResult::Success),
        )),
        other => Err(other.discriminant().name().to_owned()),
    }
}

/// The claimants' accounts when every predicate is unconditional (the only kind simulated).
fn unconditional_claimants(claimants: &[Claimant]) -> Option<Vec<AccountKey>> {
    claimants
        .iter()
        .map(|Claimant::ClaimantTypeV0(claimant)| {
            matches!(claimant.predicate, ClaimPredicate::Unconditional)
                .then(|| account_id_key(&claimant.destination))
        })
        .collect()
}

fn operation_succeeded(result: &OperationResult) -> bool {
    matches!(
        result,
        OperationResult::OpInner(OperationResultTr::CreateAccount(
            CreateAccountResult::Success
        )) | OperationResult::OpInner(OperationResultTr::Payment(PaymentResult::Success))
            | OperationResult::OpInner(OperationResultTr::CreateClaimableBalance(
                CreateClaimableBalanceResult::Success(_)
            ))
            | OperationResult::OpInner(OperationResultTr::ClaimClaimableBalance(
                ClaimClaimableBalanceResult::Success
            ))
    )
}

fn account_id_key(account: &AccountId) -> AccountKey {
    let PublicKey::PublicKeyTypeEd25519(Uint256(key)) = &account.0;
    AccountKey(*key)
}

/// Whether `key` made one of the signatures (see [`SubmittedTransaction::signers`]); marks the
/// first such signature used.
fn signed_by(signers: &[Option<AccountKey>], used: &mut [bool], key: &AccountKey) -> bool {
    let Some(index) = signers
        .iter()
        .position(|signer| signer.as_ref() == Some(key))
    else {
        return false;
    };
    if let Some(slot) = used.get_mut(index) {
        *slot = true;
    }
    true
}

/// An account's ledger entry as core holds it.
fn account_ledger_entry(key: &AccountKey, account: &AccountEntry) -> LedgerEntry {
    LedgerEntry {
        last_modified_ledger_seq: account.last_modified_ledger,
        data: LedgerEntryData::Account(crate::rpc::methods::account_entry_xdr(key, account)),
        ext: LedgerEntryExt::V0,
    }
}

/// A claimable balance's ledger entry: its claimants (unconditional), its amount of lumens and
/// its sponsor.
fn balance_ledger_entry(id: &[u8; 32], balance: &ClaimableBalance) -> LedgerEntry {
    let account = |key: &AccountKey| AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key.0)));
    let claimants: Vec<Claimant> = balance
        .claimants
        .iter()
        .map(|claimant| {
            Claimant::ClaimantTypeV0(ClaimantV0 {
                destination: account(claimant),
                predicate: ClaimPredicate::Unconditional,
            })
        })
        .collect();
    LedgerEntry {
        last_modified_ledger_seq: balance.last_modified_ledger,
        data: LedgerEntryData::ClaimableBalance(ClaimableBalanceEntry {
            balance_id: ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(*id)),
            claimants: claimants.try_into().unwrap_or_default(),
            asset: Asset::Native,
            amount: balance.amount,
            ext: ClaimableBalanceEntryExt::V0,
        }),
        ext: LedgerEntryExt::V1(LedgerEntryExtensionV1 {
            sponsoring_id: SponsorshipDescriptor(Some(account(&balance.sponsor))),
            ext: LedgerEntryExtensionV1Ext::V0,
        }),
    }
}

/// `TransactionMeta` v4 (protocol 23's) with each operation's changes, base64.
fn transaction_meta_xdr(op_changes: Vec<Vec<LedgerEntryChange>>) -> String {
    let operations: Vec<OperationMetaV2> = op_changes
        .into_iter()
        .map(|changes| OperationMetaV2 {
            changes: LedgerEntryChanges(changes.try_into().unwrap_or_default()),
            ..OperationMetaV2::default()
        })
        .collect();
    TransactionMeta::V4(TransactionMetaV4 {
        operations: operations.try_into().unwrap_or_default(),
        ..TransactionMetaV4::default()
    })
    .to_xdr_base64(Limits::none())
    .unwrap_or_default()
}

/// `LedgerEntryChanges` [state before, updated after] of the fee account, base64.
fn fee_meta_xdr(key: &AccountKey, before: &AccountEntry, after: &AccountEntry) -> String {
    let changes = vec![
        LedgerEntryChange::State(account_ledger_entry(key, before)),
        LedgerEntryChange::Updated(account_ledger_entry(key, after)),
    ];
    changes
        .try_into()
        .ok()
        .map(LedgerEntryChanges)
        .and_then(|changes| changes.to_xdr_base64(Limits::none()).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::STROOPS_PER_XLM;
    use ed25519_dalek::SigningKey;
    use stellar_xdr::{
        CreateAccountOp, MuxedAccount, PaymentOp, Preconditions, TimeBounds, TimePoint,
        Transaction, TransactionExt,
    };

    const NETWORK: [u8; 32] = [3; 32];
    const RESERVE: i64 = 5_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn account(signing: &SigningKey) -> AccountKey {
        AccountKey(signing.verifying_key().to_bytes())
    }

    fn ledger_with(accounts: &[(&SigningKey, i64)]) -> LedgerState {
        let mut ledger = LedgerState::genesis(NETWORK, account(&key(99)), 100, RESERVE, 1_000);
        for (signing, balance) in accounts {
            assert!(ledger.insert_account(account(signing), *balance));
        }
        ledger
    }

    fn signed(
        source: &SigningKey,
        sequence: i64,
        fee: u32,
        ops: Vec<OperationBody>,
    ) -> SubmittedTransaction {
        let tx = Transaction {
            source_account: account(source).to_muxed(),
            fee,
            seq_num: SequenceNumber(sequence),
            cond: Preconditions::Time(TimeBounds {
                min_time: TimePoint(0),
                max_time: TimePoint(5_000),
            }),
            memo: stellar_xdr::Memo::None,
            operations: ops
                .into_iter()
                .map(|body| Operation {
                    source_account: None,
                    body,
                })
                .collect::<Vec<_>>()
                .try_into()
                .unwrap_or_default(),
            ext: TransactionExt::V0,
        };
        SubmittedTransaction::sign(tx, NETWORK, &[source]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn sequence_of(ledger: &LedgerState, key: &SigningKey) -> i64 {
        ledger
            .account(&account(key))
            .map(|a| a.sequence)
            .unwrap_or_else(|| panic!("no account"))
    }

    fn pay(to: &SigningKey, stroops: i64) -> OperationBody {
        OperationBody::Payment(PaymentOp {
            destination: MuxedAccount::Ed25519(Uint256(account(to).0)),
            asset: Asset::Native,
            amount: stroops,
        })
    }

    fn code(rejection: &Rejection) -> String {
        results::ResultCodes::of(&rejection.result, &TxHash([0; 32])).transaction
    }

    #[test]
    fn a_payment_moves_the_amount_and_charges_the_fee() {
        let (alice, bob) = (key(1), key(2));
        let mut ledger = ledger_with(&[(&alice, 100 * STROOPS_PER_XLM), (&bob, STROOPS_PER_XLM)]);
        let start = sequence_of(&ledger, &alice);
        let tx = signed(
            &alice,
            start + 1,
            100,
            vec![pay(&bob, 10 * STROOPS_PER_XLM)],
        );
        let at = ledger.begin_ledger(1_010);
        let applied = ledger.apply(&tx, at).unwrap_or_else(|r| panic!("{r:?}"));
        assert!(results::is_success(&applied.result));
        assert_eq!(applied.fee_charged, 100);
        let alice_entry = ledger
            .account(&account(&alice))
            .cloned()
            .unwrap_or_else(|| panic!("alice"));
        assert_eq!(alice_entry.balance, 90 * STROOPS_PER_XLM - 100);
        assert_eq!(alice_entry.sequence, start + 1);
        assert_eq!(
            alice_entry.sequence_bumped,
            Some((at.ledger, at.close_time))
        );
        assert_eq!(
            ledger.account(&account(&bob)).map(|a| a.balance),
            Some(11 * STROOPS_PER_XLM)
        );
        assert!(!applied.fee_meta_xdr.is_empty());
    }

    fn create_balance_for(claimant: &SigningKey, amount: i64) -> OperationBody {
        OperationBody::CreateClaimableBalance(stellar_xdr::CreateClaimableBalanceOp {
            asset: Asset::Native,
            amount,
            claimants: vec![Claimant::ClaimantTypeV0(ClaimantV0 {
                destination: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(
                    account(claimant).0,
                ))),
                predicate: ClaimPredicate::Unconditional,
            })]
            .try_into()
            .unwrap_or_default(),
        })
    }

    fn claim(id: [u8; 32]) -> OperationBody {
        OperationBody::ClaimClaimableBalance(stellar_xdr::ClaimClaimableBalanceOp {
            balance_id: ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(id)),
        })
    }

    fn balance_of(ledger: &LedgerState, key: &SigningKey) -> i64 {
        ledger.account(&account(key)).map_or(-1, |a| a.balance)
    }

    #[test]
    fn a_claimable_balance_is_held_under_its_creators_reserve_until_its_claimant_claims_it() {
        use stellar_xdr::ReadXdr;
        let (alice, bob, carol) = (key(1), key(2), key(3));
        let mut ledger = ledger_with(&[
            (&alice, 100 * STROOPS_PER_XLM),
            (&bob, 2 * STROOPS_PER_XLM),
            (&carol, 2 * STROOPS_PER_XLM),
        ]);
        let alice_start = sequence_of(&ledger, &alice);
        let create = signed(
            &alice,
            alice_start + 1,
            100,
            vec![create_balance_for(&bob, 10 * STROOPS_PER_XLM)],
        );
        let at = ledger.begin_ledger(1_010);
        let applied = ledger
            .apply(&create, at)
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert!(results::is_success(&applied.result), "{:?}", applied.result);
        let id = claimable_balance_id(account(&alice), alice_start + 1, 0);
        let ops = match &applied.result.result {
            stellar_xdr::TransactionResultResult::TxSuccess(ops) => ops.to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ops,
            vec![OperationResult::OpInner(
                OperationResultTr::CreateClaimableBalance(CreateClaimableBalanceResult::Success(
                    ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(id))
                ))
            )]
        );
        // Nothing is credited yet; the creator's reserve holds one more entry.
        assert_eq!(balance_of(&ledger, &bob), 2 * STROOPS_PER_XLM);
        assert_eq!(balance_of(&ledger, &alice), 90 * STROOPS_PER_XLM - 100);
        assert_eq!(
            ledger.account(&account(&alice)).map(|a| a.num_sponsoring),
            Some(1)
        );
        assert_eq!(
            ledger
                .account(&account(&alice))
                .map(|a| a.minimum_balance(RESERVE)),
            Some(3 * RESERVE)
        );
        assert_eq!(
            ledger.claimable_balance(&id).map(|b| b.amount),
            Some(10 * STROOPS_PER_XLM)
        );

        // Carol is no claimant: the claim fails and changes nothing but her fee and sequence.
        let carol_claim = signed(
            &carol,
            sequence_of(&ledger, &carol) + 1,
            100,
            vec![claim(id)],
        );
        let at = ledger.begin_ledger(1_020);
        let failed = ledger
            .apply(&carol_claim, at)
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert!(!results::is_success(&failed.result));
        assert!(ledger.claimable_balance(&id).is_some());

        let bob_claim = signed(&bob, sequence_of(&ledger, &bob) + 1, 100, vec![claim(id)]);
        let at = ledger.begin_ledger(1_030);
        let claimed = ledger
            .apply(&bob_claim, at)
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert!(results::is_success(&claimed.result), "{:?}", claimed.result);
        assert_eq!(balance_of(&ledger, &bob), 12 * STROOPS_PER_XLM - 100);
        assert_eq!(
            ledger.account(&account(&alice)).map(|a| a.num_sponsoring),
            Some(0)
        );
        assert!(ledger.claimable_balance(&id).is_none());
        // The meta shows the balance as it was before the claim removed it, with its sponsor.
        let meta = TransactionMeta::from_xdr_base64(&claimed.result_meta_xdr, Limits::none())
            .unwrap_or_else(|e| panic!("{e}"));
        let TransactionMeta::V4(meta) = meta else {
            panic!("not v4")
        };
        let changes = &meta.operations[0].changes.0;
        let state = changes.iter().find_map(|c| match c {
            LedgerEntryChange::State(LedgerEntry {
                data: LedgerEntryData::ClaimableBalance(balance),
                ext,
                ..
            }) => Some((balance.amount, ext.clone())),
            _ => None,
        });
        let (amount, ext) = state.unwrap_or_else(|| panic!("no balance state: {changes:?}"));
        assert_eq!(amount, 10 * STROOPS_PER_XLM);
        assert!(matches!(ext, LedgerEntryExt::V1(v1)
            if v1.sponsoring_id.0 == Some(AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(account(&alice).0))))));
        assert!(changes.iter().any(|c| matches!(
            c,
            LedgerEntryChange::Removed(LedgerKey::ClaimableBalance(_))
        )));
        // Claimed once: a second claim finds nothing.
        let again = signed(&bob, sequence_of(&ledger, &bob) + 1, 100, vec![claim(id)]);
        let at = ledger.begin_ledger(1_040);
        let again = ledger.apply(&again, at).unwrap_or_else(|r| panic!("{r:?}"));
        assert!(!results::is_success(&again.result));
    }

    #[test]
    fn a_claimable_balance_its_creator_cannot_reserve_for_is_low_reserve() {
        let (alice, bob) = (key(1), key(2));
        // Exactly the minimum balance plus the amount: no room for the balance's reserve.
        let mut ledger = ledger_with(&[
            (&alice, 2 * RESERVE + STROOPS_PER_XLM + 100),
            (&bob, 2 * STROOPS_PER_XLM),
        ]);
        let tx = signed(
            &alice,
            sequence_of(&ledger, &alice) + 1,
            100,
            vec![create_balance_for(&bob, STROOPS_PER_XLM)],
        );
        let at = ledger.begin_ledger(1_010);
        let applied = ledger.apply(&tx, at).unwrap_or_else(|r| panic!("{r:?}"));
        assert!(!results::is_success(&applied.result));
        assert_eq!(
            ledger.account(&account(&alice)).map(|a| a.num_sponsoring),
            Some(0)
        );
    }

    #[test]
    fn the_reserve_cannot_be_paid_away_and_a_failed_transaction_still_costs_fee_and_sequence() {
        let (alice, bob) = (key(1), key(2));
        let mut ledger = ledger_with(&[(&alice, 2 * STROOPS_PER_XLM), (&bob, STROOPS_PER_XLM)]);
        let start = sequence_of(&ledger, &alice);
        // 2 XLM balance, 1 XLM reserve: 1 XLM is more than what remains after the fee.
        let tx = signed(&alice, start + 1, 100, vec![pay(&bob, STROOPS_PER_XLM)]);
        let at = ledger.begin_ledger(1_010);
        let applied = ledger.apply(&tx, at).unwrap_or_else(|r| panic!("{r:?}"));
        let codes = results::ResultCodes::of(&applied.result, &tx.hash);
        assert_eq!(codes.transaction, "tx_failed");
        assert_eq!(codes.operations, Some(vec!["op_underfunded".to_owned()]));
        let alice_entry = ledger
            .account(&account(&alice))
            .cloned()
            .unwrap_or_else(|| panic!("alice"));
        assert_eq!(alice_entry.balance, 2 * STROOPS_PER_XLM - 100);
        assert_eq!(alice_entry.sequence, start + 1);
        assert_eq!(
            ledger.account(&account(&bob)).map(|a| a.balance),
            Some(STROOPS_PER_XLM)
        );
    }

    #[test]
    fn one_failing_operation_undoes_the_others() {
        let (alice, bob, carol) = (key(1), key(2), key(3));
        let mut ledger = ledger_with(&[(&alice, 100 * STROOPS_PER_XLM), (&bob, STROOPS_PER_XLM)]);
        let start = sequence_of(&ledger, &alice);
        // Pay bob, then pay carol who does not exist.
        let tx = signed(
            &alice,
            start + 1,
            200,
            vec![pay(&bob, STROOPS_PER_XLM), pay(&carol, 1)],
        );
        let at = ledger.begin_ledger(1_010);
        let applied = ledger.apply(&tx, at).unwrap_or_else(|r| panic!("{r:?}"));
        let codes = results::ResultCodes::of(&applied.result, &tx.hash);
        assert_eq!(
            codes.operations,
            Some(vec![
                "op_success".to_owned(),
                "op_no_destination".to_owned()
            ])
        );
        assert_eq!(
            ledger.account(&account(&bob)).map(|a| a.balance),
            Some(STROOPS_PER_XLM)
        );
        assert_eq!(applied.fee_charged, 200);
    }

    #[test]
    fn create_account_codes() {
        let (alice, bob) = (key(1), key(2));
        let mut ledger = ledger_with(&[(&alice, 100 * STROOPS_PER_XLM), (&bob, STROOPS_PER_XLM)]);
        let create = |to: &SigningKey, stroops: i64| {
            OperationBody::CreateAccount(CreateAccountOp {
                destination: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(account(to).0))),
                starting_balance: stroops,
            })
        };
        let mut sequence = sequence_of(&ledger, &alice);
        let mut run = |ledger: &mut LedgerState, op: OperationBody| {
            sequence += 1;
            let tx = signed(&alice, sequence, 100, vec![op]);
            let at = ledger.begin_ledger(0);
            let applied = ledger.apply(&tx, at).unwrap_or_else(|r| panic!("{r:?}"));
            results::ResultCodes::of(&applied.result, &tx.hash)
                .operations
                .unwrap_or_default()
                .join(",")
        };
        assert_eq!(
            run(&mut ledger, create(&bob, STROOPS_PER_XLM)),
            "op_already_exists"
        );
        assert_eq!(run(&mut ledger, create(&key(4), RESERVE)), "op_low_reserve");
        assert_eq!(
            run(&mut ledger, create(&key(4), 1_000 * STROOPS_PER_XLM)),
            "op_underfunded"
        );
        assert_eq!(run(&mut ledger, create(&key(4), 2 * RESERVE)), "op_success");
        let created = ledger
            .account(&account(&key(4)))
            .cloned()
            .unwrap_or_else(|| panic!("created"));
        assert_eq!(created.balance, 2 * RESERVE);
        assert_eq!(created.sequence, i64::from(ledger.sequence) << 32);
    }

    #[test]
    fn transaction_level_rejections_follow_cores_order_and_change_nothing() {
        let (alice, bob) = (key(1), key(2));
        let ledger = ledger_with(&[(&alice, 100 * STROOPS_PER_XLM), (&bob, STROOPS_PER_XLM)]);
        let start = sequence_of(&ledger, &alice);
        let at = ledger.admission_moment();
        let reject = |tx: &SubmittedTransaction| {
            ledger
                .check_valid(tx, at)
                .err()
                .map(|r| code(&r))
                .unwrap_or_default()
        };
        // Low fee and bad sequence: the fee is checked first.
        assert_eq!(
            reject(&signed(&alice, start + 5, 99, vec![pay(&bob, 1)])),
            "tx_insufficient_fee"
        );
        assert_eq!(
            reject(&signed(&alice, start + 5, 100, vec![pay(&bob, 1)])),
            "tx_bad_seq"
        );
        assert_eq!(
            reject(&signed(&key(7), 1, 100, vec![pay(&bob, 1)])),
            "tx_no_source_account"
        );
        assert_eq!(
            reject(&signed(&alice, start + 1, 100, vec![])),
            "tx_missing_operation"
        );
        assert_eq!(
            reject(&signed(&bob, start + 2, 100, vec![pay(&alice, 1)])),
            "tx_bad_seq"
        );
        let bob_start = sequence_of(&ledger, &bob);
        // Bob has 1 XLM, all of it reserve: he cannot pay a fee.
        assert_eq!(
            reject(&signed(&bob, bob_start + 1, 100, vec![pay(&alice, 1)])),
            "tx_insufficient_balance"
        );
        assert!(
            ledger
                .check_valid(&signed(&alice, start + 1, 100, vec![pay(&bob, 1)]), at)
                .is_ok()
        );
        assert_eq!(
            ledger.account(&account(&alice)).map(|a| a.sequence),
            Some(start)
        );
    }
}
