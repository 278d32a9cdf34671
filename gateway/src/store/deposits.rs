//! Deposits: the ingestion cursor, its single-replica lease (by the database's clock), and the
//! recorded credits. A range's deposits and the cursor's advance over it commit together, and
//! the advance is a compare-and-set fenced by the lease epoch: a replica whose lease was taken
//! over, or that read a stale cursor, changes nothing.

use sqlx::Row;

use super::Store;
use super::payments::db_now_ms;
use crate::deposits::decode::Credit;
use crate::error::Result;
use crate::model::Timestamp;

/// A deposit as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositRecord {
    /// The operation id (TOID).
    pub operation_id: i64,
    /// The credited wallet.
    pub wallet_id: String,
    /// The credited account.
    pub account: String,
    /// The muxed id of the `M...` address paid, decimal (a u64), if one was.
    pub muxed_id: Option<String>,
    /// The operation type.
    pub kind: String,
    /// The operation's source account.
    pub source_account: String,
    /// Amount in stroops of the asset.
    pub amount_stroops: i64,
    /// Asset code, `None` for lumens.
    pub asset_code: Option<String>,
    /// Asset issuer, `None` for lumens.
    pub asset_issuer: Option<String>,
    /// The transaction memo.
    pub memo: Option<String>,
    /// `text`, `id`, `hash` or `return`.
    pub memo_type: Option<String>,
    /// The ledger.
    pub ledger: i64,
    /// The transaction hash.
    pub tx_hash: String,
    /// When the gateway recorded it.
    pub created_at: String,
}

impl Store {
    /// Takes the ingestion lease for `owner` if it is free or expired (by the database's
    /// clock); the granted epoch, or `None` while another holds it.
    pub async fn acquire_deposit_lease(&self, owner: &str, lease_ms: i64) -> Result<Option<i64>> {
        let now = db_now_ms(self.backend());
        let row = sqlx::query(&format!(
            "INSERT INTO deposit_lease (id, owner, epoch, expires_at_ms) VALUES (1, $1, 1, {now} + $2) \
             ON CONFLICT (id) DO UPDATE SET owner = $1, epoch = deposit_lease.epoch + 1, \
               expires_at_ms = {now} + $2 \
             WHERE deposit_lease.expires_at_ms < {now} RETURNING epoch"
        ))
        .bind(owner)
        .bind(lease_ms)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("epoch")).transpose()?)
    }

    /// Extends the lease; false when it changed hands (stop ingesting).
    pub async fn renew_deposit_lease(
        &self,
        owner: &str,
        epoch: i64,
        lease_ms: i64,
    ) -> Result<bool> {
        let now = db_now_ms(self.backend());
        let done = sqlx::query(&format!(
            "UPDATE deposit_lease SET expires_at_ms = {now} + $3 WHERE id = 1 AND owner = $1 AND epoch = $2"
        ))
        .bind(owner)
        .bind(epoch)
        .bind(lease_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The last ledger ingested, `None` before the first run.
    pub async fn deposit_cursor(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT ledger FROM deposit_cursor WHERE id = 1")
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("ledger")).transpose()?)
    }

    /// Sets the cursor on the first run (a no-op when one exists).
    pub async fn init_deposit_cursor(&self, ledger: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO deposit_cursor (id, ledger) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(ledger)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records `credits` to the gateway's wallets (others ignored) and moves the cursor from
    /// `from_cursor` to `through`, in one transaction, only while `owner` holds the lease at
    /// `epoch` and the cursor is still `from_cursor`. Returns how many deposits were recorded,
    /// or `None` when fenced out (nothing written).
    pub async fn record_deposits(
        &self,
        owner: &str,
        epoch: i64,
        from_cursor: i64,
        through: i64,
        credits: &[Credit],
    ) -> Result<Option<usize>> {
        let mut tx = self.pool().begin().await?;
        let moved = sqlx::query(
            "UPDATE deposit_cursor SET ledger = $1 WHERE id = 1 AND ledger = $2 \
             AND EXISTS (SELECT 1 FROM deposit_lease WHERE id = 1 AND owner = $3 AND epoch = $4)",
        )
        .bind(through)
        .bind(from_cursor)
        .bind(owner)
        .bind(epoch)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let now = Timestamp::now();
        let mut recorded = 0;
        for credit in credits {
            let wallet = sqlx::query("SELECT id FROM wallets WHERE public_key = $1")
                .bind(&credit.destination)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(wallet) = wallet else { continue };
            let wallet_id: String = wallet.try_get("id")?;
            if let Some(why) = &credit.unreadable {
                // Never a made-up amount, never skipped: the range is retried (and logged).
                tx.rollback().await?;
                return Err(crate::error::Error::NetworkUnavailable(format!(
                    "a credit of wallet {wallet_id} cannot be read: {why}"
                )));
            }
            let (code, issuer) = credit.asset.clone().unzip();
            let (memo, memo_type) = credit.memo.clone().unzip();
            let inserted = sqlx::query(
                "INSERT INTO deposits (operation_id, wallet_id, account, kind, source_account, \
                 amount_stroops, asset_code, asset_issuer, memo, memo_type, ledger, tx_hash, created_at, \
                 muxed_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (operation_id) DO NOTHING",
            )
            .bind(credit.operation_id)
            .bind(&wallet_id)
            .bind(&credit.destination)
            .bind(credit.kind)
            .bind(&credit.source)
            .bind(credit.amount)
            .bind(code)
            .bind(issuer)
            .bind(memo)
            .bind(memo_type.map(str::to_owned))
            .bind(credit.ledger)
            .bind(&credit.tx_hash)
            .bind(now.as_str())
            .bind(credit.muxed_id.map(|id| id.to_string()))
            .execute(&mut *tx)
            .await?;
            recorded += usize::try_from(inserted.rows_affected()).unwrap_or(0);
        }
        tx.commit().await?;
        Ok(Some(recorded))
    }

    /// A wallet's deposits, newest first, `limit` at most, older than `before` (an operation
    /// id) when given.
    pub async fn deposits(
        &self,
        wallet_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DepositRecord>> {
        let rows = sqlx::query(
            "SELECT operation_id, wallet_id, account, muxed_id, kind, source_account, amount_stroops, \
             asset_code, asset_issuer, memo, memo_type, ledger, tx_hash, created_at FROM deposits \
             WHERE wallet_id = $1 AND operation_id < $2 ORDER BY operation_id DESC LIMIT $3",
        )
        .bind(wallet_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(deposit_from_row).collect()
    }
}

/// A `deposits` row (every column) as a record.
pub(crate) fn deposit_from_row(r: &sqlx::any::AnyRow) -> Result<DepositRecord> {
    Ok(DepositRecord {
        operation_id: r.try_get("operation_id")?,
        wallet_id: r.try_get("wallet_id")?,
        account: r.try_get("account")?,
        muxed_id: r.try_get("muxed_id")?,
        kind: r.try_get("kind")?,
        source_account: r.try_get("source_account")?,
        amount_stroops: r.try_get("amount_stroops")?,
        asset_code: r.try_get("asset_code")?,
        asset_issuer: r.try_get("asset_issuer")?,
        memo: r.try_get("memo")?,
        memo_type: r.try_get("memo_type")?,
        ledger: r.try_get("ledger")?,
        tx_hash: r.try_get("tx_hash")?,
        created_at: r.try_get("created_at")?,
    })
}
