//! A wallet's history: its outgoing payments and its deposits in one order, the order the
//! gateway recorded them (`wallet_history.id`, given by the database in the recording
//! statement's transaction, see migration 0008). Newest first; a page ends at an id, and the
//! next page starts below it, so entries recorded meanwhile (always above every existing id)
//! never shift, skip or repeat the entries of a walk in progress.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::Store;
use super::{optional_text, text};
use crate::error::{Error, Result};

/// Which way the money went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A deposit: the wallet was credited.
    In,
    /// A payment the wallet sent.
    Out,
}

/// One entry of a wallet's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its place in the wallet's history (the page cursor).
    pub id: i64,
    /// In or out.
    pub direction: Direction,
    /// The payment (out).
    pub payment_id: Option<String>,
    /// The deposit's operation id (in).
    pub deposit_id: Option<i64>,
    /// A payment's status (out).
    pub status: Option<String>,
    /// `payment` for a payment; a deposit's operation type.
    pub kind: String,
    /// The other side: a payment's destination as given, a deposit's source account.
    pub counterparty: String,
    /// Amount in stroops of the asset.
    pub amount_stroops: i64,
    /// Asset code, `None` for lumens.
    pub asset_code: Option<String>,
    /// Asset issuer, `None` for lumens.
    pub asset_issuer: Option<String>,
    /// The memo.
    pub memo: Option<String>,
    /// A deposit's muxed id (decimal u64).
    pub muxed_id: Option<String>,
    /// The transaction hash, once there is one.
    pub tx_hash: Option<String>,
    /// The ledger, once applied.
    pub ledger: Option<i64>,
    /// When the gateway recorded it.
    pub created_at: String,
}

impl Store {
    /// `wallet_id`'s history, newest first, `limit` at most, below `before` (an entry id) when
    /// given.
    pub async fn wallet_history(
        &self,
        wallet_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>> {
        let rows = sqlx::query(
            "SELECT h.id AS history_id, h.payment_id, h.deposit_id, \
               p.status AS p_status, p.destination AS p_destination, \
               p.amount_stroops AS p_amount, p.memo AS p_memo, p.tx_hash AS p_tx_hash, \
               p.ledger AS p_ledger, p.created_at AS p_created_at, \
               d.kind AS d_kind, d.source_account AS d_source, d.amount_stroops AS d_amount, \
               d.asset_code AS d_asset_code, d.asset_issuer AS d_asset_issuer, d.memo AS d_memo, \
               d.muxed_id AS d_muxed_id, d.tx_hash AS d_tx_hash, d.ledger AS d_ledger, \
               d.created_at AS d_created_at \
             FROM wallet_history h \
             LEFT JOIN payments p ON p.id = h.payment_id \
             LEFT JOIN deposits d ON d.operation_id = h.deposit_id \
             WHERE h.wallet_id = $1 AND h.id < $2 ORDER BY h.id DESC LIMIT $3",
        )
        .bind(wallet_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }
}

fn entry_from_row(row: &AnyRow) -> Result<HistoryEntry> {
    let id: i64 = row.try_get("history_id")?;
    let payment_id = optional_text(row, "payment_id")?;
    let deposit_id: Option<i64> = row.try_get("deposit_id")?;
    let missing = |what: &str| Error::CorruptData(format!("wallet_history {id}: {what} missing"));
    match (payment_id, deposit_id) {
        (Some(payment_id), None) => Ok(HistoryEntry {
            id,
            direction: Direction::Out,
            status: Some(optional_text(row, "p_status")?.ok_or_else(|| missing("the payment"))?),
            kind: "payment".to_owned(),
            counterparty: text(row, "p_destination")?,
            amount_stroops: row.try_get("p_amount")?,
            asset_code: None,
            asset_issuer: None,
            memo: optional_text(row, "p_memo")?,
            muxed_id: None,
            tx_hash: optional_text(row, "p_tx_hash")?,
            ledger: row.try_get("p_ledger")?,
            created_at: text(row, "p_created_at")?,
            payment_id: Some(payment_id),
            deposit_id: None,
        }),
        (None, Some(deposit_id)) => Ok(HistoryEntry {
            id,
            direction: Direction::In,
            status: None,
            kind: optional_text(row, "d_kind")?.ok_or_else(|| missing("the deposit"))?,
            counterparty: text(row, "d_source")?,
            amount_stroops: row.try_get("d_amount")?,
            asset_code: optional_text(row, "d_asset_code")?,
            asset_issuer: optional_text(row, "d_asset_issuer")?,
            memo: optional_text(row, "d_memo")?,
            muxed_id: optional_text(row, "d_muxed_id")?,
            tx_hash: optional_text(row, "d_tx_hash")?,
            ledger: row.try_get("d_ledger")?,
            created_at: text(row, "d_created_at")?,
            payment_id: None,
            deposit_id: Some(deposit_id),
        }),
        _ => Err(Error::CorruptData(format!(
            "wallet_history {id}: neither or both of a payment and a deposit"
        ))),
    }
}
