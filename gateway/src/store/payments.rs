//! Payments, their status history, every transaction hash signed for them, per-wallet leases
//! (one worker per source account across replicas) and daily limits.

use std::sync::LazyLock;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{AuditContext, Backend, Store, audit, optional_text, stored, text};
use crate::error::{Error, Result};
use crate::model::{ApiKeyId, AuditAction, IdempotencyKey, PaymentId, Timestamp, WalletId};
use crate::network::ResultCodes;
use crate::payments::{PaymentStatus, Stroops};

/// A payment to insert.
pub struct NewPayment<'a> {
    /// Its id.
    pub id: PaymentId,
    /// The API key that asked.
    pub api_key_id: ApiKeyId,
    /// The caller's Idempotency-Key (unique per API key).
    pub idempotency_key: &'a IdempotencyKey,
    /// The hash of the request, to tell a replay of the key from a conflicting reuse.
    pub request_hash: &'a str,
    /// The paying wallet.
    pub source_wallet_id: WalletId,
    /// The destination as the caller gave it (a wallet id or an address).
    pub destination: &'a str,
    /// The destination account (`G...` or `M...`).
    pub destination_account: &'a str,
    /// The amount.
    pub amount: Stroops,
    /// The memo.
    pub memo: Option<&'a str>,
}

/// The daily limits that apply to a wallet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DailyLimits {
    /// Payments per UTC day.
    pub daily_count: i64,
    /// Stroops per UTC day.
    pub daily_amount_stroops: i64,
}

/// A stored payment.
#[derive(Clone, Debug)]
pub struct PaymentRecord {
    /// Id.
    pub id: PaymentId,
    /// Paying wallet.
    pub source_wallet_id: WalletId,
    /// Destination as given.
    pub destination: String,
    /// Destination account.
    pub destination_account: String,
    /// Amount.
    pub amount: Stroops,
    /// Memo.
    pub memo: Option<String>,
    /// Status.
    pub status: PaymentStatus,
    /// Sequence number of the current transaction.
    pub sequence: Option<i64>,
    /// Its max_time (unix seconds).
    pub max_time: Option<i64>,
    /// Its hash (hex).
    pub tx_hash: Option<String>,
    /// The signed envelope (base64 XDR).
    pub envelope_xdr: Option<String>,
    /// Fee: offered while in flight, charged once applied.
    pub fee_stroops: Option<i64>,
    /// The ledger it was applied in.
    pub ledger: Option<i64>,
    /// Horizon's result codes (failures).
    pub result_codes: Option<ResultCodes>,
    /// Why it failed, in words.
    pub failure_reason: Option<String>,
    /// Submissions so far.
    pub attempts: i64,
    /// Transactions built so far.
    pub builds: i64,
    /// Accepted at, by the database's clock (ms since the Unix epoch): what the worker's
    /// freshness rules compare with ledger close times (`created_at` is the accepting replica's
    /// clock, for display).
    pub accepted_at_ms: i64,
    /// Accepted at.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// One status-history entry.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PaymentEvent {
    /// The status entered.
    pub status: String,
    /// The transaction hash involved, if any.
    pub tx_hash: Option<String>,
    /// What happened.
    pub detail: Option<String>,
    /// When.
    pub occurred_at: String,
}

/// The outcome of accepting a payment.
pub enum Accepted {
    /// Inserted now.
    Created(PaymentRecord),
    /// This API key already made this request with this Idempotency-Key: the earlier payment.
    Existing(PaymentRecord),
}

/// The payment a worker looks at next, as read.
pub struct NextPayment {
    /// The payment.
    pub payment: PaymentRecord,
    /// Why its wallet may not pay now (its user blocked or it frozen), if so.
    pub refusal: Option<String>,
    /// Whether it was due when read, by the database's clock (see [`Store::postpone_payment`]).
    pub due: bool,
    /// Whether it was the wallet's only unfinished payment when read.
    pub last: bool,
}

/// A payment found by its Idempotency-Key.
pub enum KeyedPayment {
    /// Made by the same request: a replay.
    Replay(Box<PaymentRecord>),
    /// Made by a different request: the key is reused.
    Conflict,
}

const COLUMNS: &str = "id, source_wallet_id, destination, destination_account, amount_stroops, memo, \
    status, sequence, max_time, tx_hash, envelope_xdr, fee_stroops, ledger, result_codes, \
    failure_reason, attempts, builds, accepted_at_ms, created_at, updated_at";

fn opt_i64(row: &AnyRow, column: &str) -> Result<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(column)?)
}

fn payment_from_row(row: &AnyRow) -> Result<PaymentRecord> {
    Ok(PaymentRecord {
        id: stored("payments.id", PaymentId::parse(&text(row, "id")?))?,
        source_wallet_id: stored(
            "payments.source_wallet_id",
            WalletId::parse(&text(row, "source_wallet_id")?),
        )?,
        destination: text(row, "destination")?,
        destination_account: text(row, "destination_account")?,
        amount: Stroops::from_stored(row.try_get::<i64, _>("amount_stroops")?),
        memo: optional_text(row, "memo")?,
        status: PaymentStatus::parse(&text(row, "status")?)?,
        sequence: opt_i64(row, "sequence")?,
        max_time: opt_i64(row, "max_time")?,
        tx_hash: optional_text(row, "tx_hash")?,
        envelope_xdr: optional_text(row, "envelope_xdr")?,
        fee_stroops: opt_i64(row, "fee_stroops")?,
        ledger: opt_i64(row, "ledger")?,
        result_codes: optional_text(row, "result_codes")?
            .map(|t| {
                serde_json::from_str(&t)
                    .map_err(|e| Error::CorruptData(format!("payments.result_codes: {e}")))
            })
            .transpose()?,
        failure_reason: optional_text(row, "failure_reason")?,
        attempts: row.try_get::<i64, _>("attempts")?,
        builds: row.try_get::<i64, _>("builds")?,
        accepted_at_ms: row.try_get::<i64, _>("accepted_at_ms")?,
        created_at: Timestamp::from_stored(text(row, "created_at")?)?,
        updated_at: Timestamp::from_stored(text(row, "updated_at")?)?,
    })
}

/// The statement counting one payment of `amount` against a wallet's usage of `day`, under its
/// limits (the wallet's override, else the defaults): an upsert that changes nothing, and
/// returns no row, when the count or the amount would go over. The arguments are placeholders.
fn count_usage(wallet: &str, day: &str, amount: &str, count_cap: &str, amount_cap: &str) -> String {
    let cap = |column: &str, default: &str| {
        format!(
            "COALESCE((SELECT {column} FROM wallet_limits WHERE wallet_id = {wallet}), {default})"
        )
    };
    let (max_count, max_amount) = (
        cap("daily_count", count_cap),
        cap("daily_amount_stroops", amount_cap),
    );
    format!(
        "INSERT INTO wallet_daily_usage (wallet_id, day, payment_count, amount_stroops) \
         SELECT {wallet}, {day}, 1, {amount} WHERE 1 <= {max_count} AND {amount} <= {max_amount} \
         ON CONFLICT (wallet_id, day) DO UPDATE SET \
           payment_count = wallet_daily_usage.payment_count + 1, \
           amount_stroops = wallet_daily_usage.amount_stroops + excluded.amount_stroops \
         WHERE wallet_daily_usage.payment_count + 1 <= {max_count} \
           AND wallet_daily_usage.amount_stroops + excluded.amount_stroops <= {max_amount} \
         RETURNING 1"
    )
}

/// The worker's read of a wallet's next payment (see [`Store::next_unfinished_payment`]), with
/// the wallet's frozen and its user's blocked flags and whether it is due by the database's
/// clock; two rows to tell whether it is the last.
static NEXT_UNFINISHED: LazyLock<[String; 2]> = LazyLock::new(|| {
    per_backend(|backend| {
        let columns = COLUMNS
            .split(", ")
            .map(|c| format!("payments.{c} AS {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT {columns}, wallets.frozen_at AS frozen_at, users.blocked_at AS blocked_at, \
           CASE WHEN payments.due_at_ms <= {} THEN 1 ELSE 0 END AS due \
         FROM payments JOIN wallets ON wallets.id = payments.source_wallet_id \
         JOIN users ON users.id = wallets.user_id \
         WHERE payments.source_wallet_id = $1 \
           AND payments.status IN ('CREATED', 'SIGNED', 'SUBMITTED') \
         ORDER BY CASE WHEN payments.status = 'CREATED' THEN 1 ELSE 0 END, payments.id LIMIT 2",
            db_now_ms(backend)
        )
    })
});

const INSERT_PAYMENT: &str = "INSERT INTO payments (id, api_key_id, idempotency_key, \
    source_wallet_id, destination, destination_account, amount_stroops, memo, status, attempts, \
    builds, due_at_ms, accepted_at_ms, created_at, updated_at, request_hash)";

/// The inserted values; a new payment is accepted, and due at once, by the database's clock.
fn payment_values(backend: Backend) -> String {
    format!(
        "$1, $2, $3, $4, $5, $6, $7, $8, 'CREATED', 0, 0, {now}, {now}, $9, $9, $10",
        now = db_now_ms(backend)
    )
}

/// Postgres: the payment inserted only if the count (a data-modifying CTE) went through.
static ACCEPT_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH counted AS ({}) {INSERT_PAYMENT} SELECT {} FROM counted RETURNING accepted_at_ms",
        count_usage("$4", db_day(Backend::Postgres), "$7", "$11", "$12"),
        payment_values(Backend::Postgres)
    )
});
/// SQLite: the insert, then the count, in one savepoint of a group commit.
static INSERT_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{INSERT_PAYMENT} VALUES ({}) RETURNING accepted_at_ms",
        payment_values(Backend::Sqlite)
    )
});
static COUNT_SQLITE: LazyLock<String> =
    LazyLock::new(|| count_usage("$1", db_day(Backend::Sqlite), "$2", "$3", "$4"));

/// Today's UTC day (`YYYY-MM-DD`) in the database's clock: the day a payment counts against is
/// the same whichever replica accepted it, whatever that replica's clock says.
fn db_day(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "strftime('%Y-%m-%d', 'now')",
        Backend::Postgres => "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    }
}

/// Now in the database's clock, milliseconds since the Unix epoch (leases expire by it).
pub(crate) fn db_now_ms(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

/// The lease a worker holds on a source wallet, as the database granted it. Every transition of
/// the wallet's payments names it (the fencing token): once the lease expired and another
/// worker took the wallet (a higher epoch), the old holder's writes change nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The wallet.
    pub wallet: WalletId,
    /// Who holds it (one id per worker process).
    pub owner: String,
    /// Grows by one each time the lease changes hands.
    pub epoch: i64,
}

/// The conditions every payment transition adds, from placeholder `$first` on: the payment is
/// still exactly the version the worker decided on (status, current transaction hash, build
/// number) and the worker's lease still has the epoch it was granted (a lease taken over gets
/// the next epoch, so the old holder's token no longer matches). Bind them with [`bind_fence`].
fn fence(first: usize) -> String {
    let p = |k: usize| format!("${}", first + k);
    format!(
        " AND payments.status = {} AND payments.builds = {} \
          AND payments.tx_hash IS NOT DISTINCT FROM {} \
          AND EXISTS (SELECT 1 FROM payment_leases WHERE payment_leases.wallet_id = payments.source_wallet_id \
            AND payment_leases.owner = {} AND payment_leases.epoch = {})",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4),
    )
}

/// A statement's text per backend, for statements that read the database's clock.
pub(crate) fn per_backend(build: fn(Backend) -> String) -> [String; 2] {
    [build(Backend::Sqlite), build(Backend::Postgres)]
}

pub(crate) fn for_backend(texts: &'static [String; 2], backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => &texts[0],
        Backend::Postgres => &texts[1],
    }
}

static LEASE: LazyLock<[String; 2]> = LazyLock::new(|| {
    per_backend(|backend| {
        let now = db_now_ms(backend);
        format!(
            "INSERT INTO payment_leases (wallet_id, owner, epoch, expires_at_ms) \
             VALUES ($1, $2, 1, {now} + $3) \
             ON CONFLICT (wallet_id) DO UPDATE SET owner = $2, \
               epoch = payment_leases.epoch + 1, expires_at_ms = {now} + $3 \
             WHERE payment_leases.expires_at_ms < {now} \
             RETURNING epoch"
        )
    })
});

static RENEW: LazyLock<[String; 2]> = LazyLock::new(|| {
    per_backend(|backend| {
        let now = db_now_ms(backend);
        format!(
            "UPDATE payment_leases SET expires_at_ms = {now} + $1 \
             WHERE wallet_id = $2 AND owner = $3 AND epoch = $4 AND expires_at_ms >= {now}"
        )
    })
});

static MARK_SIGNED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE payments SET status = 'SIGNED', sequence = $1, max_time = $2, fee_stroops = $3, \
         tx_hash = $4, envelope_xdr = $5, builds = builds + 1, status_detail = $6, \
         updated_at = $7 \
         WHERE id = $8 AND EXISTS (SELECT 1 FROM wallets \
           JOIN users ON users.id = wallets.user_id WHERE wallets.id = payments.source_wallet_id \
           AND wallets.frozen_at IS NULL AND users.blocked_at IS NULL){}",
        fence(9)
    )
});

static MARK_SUBMITTED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE payments SET status = 'SUBMITTED', attempts = attempts + 1, \
         status_detail = NULL, updated_at = $1 WHERE id = $2{}",
        fence(3)
    )
});

static FINISH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE payments SET status = $1, tx_hash = COALESCE($2, tx_hash), ledger = $3, \
         fee_stroops = COALESCE($4, fee_stroops), result_codes = $5, failure_reason = $6, \
         status_detail = $7, updated_at = $8 WHERE id = $9{}",
        fence(10)
    )
});

static FAIL_UNSIGNED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE payments SET status = 'FAILED', failure_reason = $1, status_detail = $1, \
         updated_at = $2 WHERE id = $3 AND payments.status = 'CREATED'{}",
        fence(4)
    )
});

static RESET_FOR_REBUILD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE payments SET status = 'CREATED', \
         sequence = CASE WHEN $4 = 1 THEN sequence ELSE NULL END, status_detail = $1, \
         updated_at = $2 WHERE id = $3{}",
        fence(5)
    )
});

static BACK_TO_CONFIRMING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE payments SET status = 'SUBMITTED', status_detail = $1, updated_at = $2 \
         WHERE id = $3 AND payments.tx_hash IS NOT NULL{}",
        fence(4)
    )
});

/// [`Store::resolve_payment`]'s statement for SUCCESS, FAILED and a rebuild.
static RESOLVE: LazyLock<[String; 3]> = LazyLock::new(|| {
    [
        ("SUCCESS", "sequence"),
        ("FAILED", "sequence"),
        ("CREATED", "NULL"),
    ]
    .map(|(status, sequence)| {
        format!(
            "UPDATE payments SET status = '{status}', sequence = {sequence}, status_detail = $1, \
             failure_reason = $2, due_at_ms = 0, updated_at = $3 \
             WHERE id = $4 AND status = 'NEEDS_ATTENTION'"
        )
    })
});

static POSTPONE: LazyLock<[String; 2]> = LazyLock::new(|| {
    per_backend(|backend| {
        format!(
            "UPDATE payments SET due_at_ms = {} + $1 WHERE id = $2 \
             AND EXISTS (SELECT 1 FROM payment_leases \
               WHERE payment_leases.wallet_id = payments.source_wallet_id \
               AND payment_leases.owner = $3 AND payment_leases.epoch = $4)",
            db_now_ms(backend)
        )
    })
});

static MARK_FEE_BUMPED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE payments SET status = 'SIGNED', fee_stroops = $1, tx_hash = $2, envelope_xdr = $3, \
         status_detail = $4, updated_at = $5 WHERE id = $6{}",
        fence(7)
    )
});

static PARK_FOR_ATTENTION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE payments SET status = 'NEEDS_ATTENTION', status_detail = $1, \
         failure_reason = $1, updated_at = $2 WHERE id = $3{}",
        fence(4)
    )
});

type Statement = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>>;

/// Binds [`fence`]'s placeholders.
fn bind_fence(statement: Statement, lease: &Lease, read: &PaymentRecord) -> Statement {
    statement
        .bind(read.status.as_str())
        .bind(read.builds)
        .bind(read.tx_hash.clone())
        .bind(lease.owner.clone())
        .bind(lease.epoch)
}

fn limit_exceeded() -> Error {
    Error::LimitExceeded(
        "the payment would exceed the wallet's daily payment count or amount limit".into(),
    )
}

/// `sql` (an insert into payments) with `new`'s values bound as $1..$10.
fn insert_payment(
    sql: &'static str,
    new: &NewPayment<'_>,
    now: &Timestamp,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>> {
    sqlx::query(sql)
        .bind(new.id.to_string())
        .bind(new.api_key_id.to_string())
        .bind(new.idempotency_key.as_str().to_owned())
        .bind(new.source_wallet_id.to_string())
        .bind(new.destination.to_owned())
        .bind(new.destination_account.to_owned())
        .bind(new.amount.get())
        .bind(new.memo.map(str::to_owned))
        .bind(now.as_str().to_owned())
        .bind(new.request_hash.to_owned())
}

impl Store {
    /// Accepts a payment: inserts it and counts it against the wallet's daily limits (its
    /// override, else `defaults`), atomically: on Postgres in one statement (the count is a
    /// data-modifying CTE the insert depends on), on SQLite in one savepoint of a group commit
    /// (see `group_commit`). The usage row is bumped with a conditional upsert, so two replicas
    /// accepting at once cannot both squeeze under the limit. A payment this API key already
    /// made with the same Idempotency-Key is returned instead (the unique index decides; a
    /// refused insert counts nothing).
    pub async fn accept_payment(
        &self,
        new: &NewPayment<'_>,
        defaults: DailyLimits,
    ) -> Result<Accepted> {
        let now = Timestamp::now();
        let amount = new.amount.get();
        let accepted = match self.backend {
            Backend::Postgres => insert_payment(&ACCEPT_POSTGRES, new, &now)
                .bind(defaults.daily_count)
                .bind(defaults.daily_amount_stroops)
                .fetch_optional(&self.pool)
                .await
                .map_err(Error::from)
                .and_then(|row| match row {
                    Some(row) => Ok(row.try_get::<i64, _>("accepted_at_ms")?),
                    None => Err(limit_exceeded()),
                }),
            Backend::Sqlite => {
                let insert = insert_payment(&INSERT_SQLITE, new, &now);
                let count = sqlx::query(&COUNT_SQLITE)
                    .bind(new.source_wallet_id.to_string())
                    .bind(amount)
                    .bind(defaults.daily_count)
                    .bind(defaults.daily_amount_stroops);
                // In a group commit's savepoint: an error (the unique index, a refused count)
                // rolls both statements back.
                self.write(Box::new(move |conn| {
                    Box::pin(async move {
                        let row = insert.fetch_one(&mut *conn).await?;
                        match count.execute(conn).await?.rows_affected() {
                            1 => Ok(row.try_get::<i64, _>("accepted_at_ms")?),
                            _ => Err(limit_exceeded()),
                        }
                    })
                }))
                .await
            }
        };
        let accepted_at_ms = match accepted {
            Ok(at) => at,
            Err(e @ Error::LimitExceeded(_)) => return Err(e),
            Err(e) => return self.accept_refused(new, e).await,
        };
        // The CREATED event is written by the database (migration 0003).
        Ok(Accepted::Created(PaymentRecord {
            id: new.id,
            source_wallet_id: new.source_wallet_id,
            destination: new.destination.to_owned(),
            destination_account: new.destination_account.to_owned(),
            amount: new.amount,
            memo: new.memo.map(str::to_owned),
            status: PaymentStatus::Created,
            sequence: None,
            max_time: None,
            tx_hash: None,
            envelope_xdr: None,
            fee_stroops: None,
            ledger: None,
            result_codes: None,
            failure_reason: None,
            attempts: 0,
            builds: 0,
            accepted_at_ms,
            created_at: now.clone(),
            updated_at: now,
        }))
    }

    /// An insert refused by the unique index on (API key, Idempotency-Key) is a replay or a
    /// conflicting reuse of the key; any other error stays what it is.
    async fn accept_refused(&self, new: &NewPayment<'_>, e: Error) -> Result<Accepted> {
        if e.is_unique_violation() {
            match self
                .payment_by_idempotency_key(new.api_key_id, new.idempotency_key, new.request_hash)
                .await?
            {
                Some(KeyedPayment::Replay(existing)) => return Ok(Accepted::Existing(*existing)),
                Some(KeyedPayment::Conflict) => {
                    return Err(Error::IdempotencyConflict(
                        "this Idempotency-Key was already used with a different request".into(),
                    ));
                }
                None => {}
            }
        }
        Err(e)
    }

    /// The payment this API key made with this Idempotency-Key, if any, and whether the
    /// request that made it is the one with `request_hash`.
    pub async fn payment_by_idempotency_key(
        &self,
        api_key: ApiKeyId,
        key: &IdempotencyKey,
        request_hash: &str,
    ) -> Result<Option<KeyedPayment>> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {COLUMNS}, request_hash FROM payments \
             WHERE api_key_id = $1 AND idempotency_key = $2"
        ))
        .bind(api_key.to_string())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        // Payments accepted before migration 0003 have no hash: their key replays.
        let same = optional_text(&row, "request_hash")?.is_none_or(|h| h == request_hash);
        Ok(Some(if same {
            KeyedPayment::Replay(Box::new(payment_from_row(&row)?))
        } else {
            KeyedPayment::Conflict
        }))
    }

    /// One payment.
    pub async fn payment(&self, id: PaymentId) -> Result<Option<PaymentRecord>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM payments WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(payment_from_row)
            .transpose()
    }

    /// A payment's status history, oldest first.
    pub async fn payment_events(&self, id: PaymentId) -> Result<Vec<PaymentEvent>> {
        sqlx::query(
            "SELECT status, tx_hash, detail, occurred_at FROM payment_events \
             WHERE payment_id = $1 ORDER BY id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(PaymentEvent {
                status: text(row, "status")?,
                tx_hash: optional_text(row, "tx_hash")?,
                detail: optional_text(row, "detail")?,
                occurred_at: text(row, "occurred_at")?,
            })
        })
        .collect()
    }

    /// A wallet's payments, newest first, at most `limit`, older than `before` when given.
    pub async fn wallet_payments(
        &self,
        wallet: WalletId,
        before: Option<PaymentId>,
        limit: i64,
    ) -> Result<Vec<PaymentRecord>> {
        let rows = match before {
            Some(before) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM payments WHERE source_wallet_id = $1 AND id < $2 \
                     ORDER BY id DESC LIMIT $3"
                ))
                .bind(wallet.to_string())
                .bind(before.to_string())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM payments WHERE source_wallet_id = $1 \
                     ORDER BY id DESC LIMIT $2"
                ))
                .bind(wallet.to_string())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(payment_from_row).collect()
    }

    /// The limits that apply to a wallet: its override, else the defaults.
    pub async fn wallet_limits(
        &self,
        wallet: WalletId,
        defaults: DailyLimits,
    ) -> Result<DailyLimits> {
        let row = sqlx::query(
            "SELECT daily_count, daily_amount_stroops FROM wallet_limits WHERE wallet_id = $1",
        )
        .bind(wallet.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => DailyLimits {
                daily_count: opt_i64(&row, "daily_count")?.unwrap_or(defaults.daily_count),
                daily_amount_stroops: opt_i64(&row, "daily_amount_stroops")?
                    .unwrap_or(defaults.daily_amount_stroops),
            },
            None => defaults,
        })
    }

    /// Sets (or with `None`, resets to the default) a wallet's limit overrides, and records
    /// `wallet.limits_set` with the overrides before and after (`null`: the configured default)
    /// in the same transaction.
    pub async fn set_wallet_limits(
        &self,
        wallet: WalletId,
        daily_count: Option<i64>,
        daily_amount_stroops: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<()> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        // A write first: it takes the row's lock (Postgres) or the database's write lock
        // (SQLite) before the old values are read, so two admins racing each record the values
        // they really replaced. A row of NULLs means "the defaults", like no row.
        sqlx::query(
            "INSERT INTO wallet_limits (wallet_id, daily_count, daily_amount_stroops, updated_at) \
             VALUES ($1, NULL, NULL, $2) \
             ON CONFLICT (wallet_id) DO UPDATE SET updated_at = $2",
        )
        .bind(wallet.to_string())
        .bind(now.as_str())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT daily_count, daily_amount_stroops FROM wallet_limits WHERE wallet_id = $1",
        )
        .bind(wallet.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let old_count = opt_i64(&row, "daily_count")?;
        let old_amount = opt_i64(&row, "daily_amount_stroops")?;
        sqlx::query(
            "UPDATE wallet_limits SET daily_count = $2, daily_amount_stroops = $3, updated_at = $4 \
             WHERE wallet_id = $1",
        )
        .bind(wallet.to_string())
        .bind(daily_count)
        .bind(daily_amount_stroops)
        .bind(now.as_str())
        .execute(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            ctx,
            &now,
            AuditAction::WalletLimitsSet,
            "wallet",
            &wallet.to_string(),
            serde_json::json!({
                "old": { "daily_count": old_count, "daily_amount_stroops": old_amount },
                "new": { "daily_count": daily_count, "daily_amount_stroops": daily_amount_stroops },
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- the worker's side ----

    /// Source wallets with due, unfinished payments, not leased by anyone else right now (by
    /// the database's clock). On Postgres the scan skips rows other replicas are claiming
    /// (`FOR UPDATE SKIP LOCKED`).
    pub async fn due_source_wallets(&self, limit: i64) -> Result<Vec<WalletId>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE OF payments SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT payments.source_wallet_id AS wallet_id FROM payments \
             LEFT JOIN payment_leases ON payment_leases.wallet_id = payments.source_wallet_id \
             WHERE payments.status IN ('CREATED', 'SIGNED', 'SUBMITTED') \
               AND payments.due_at_ms <= {now} \
               AND (payment_leases.expires_at_ms IS NULL OR payment_leases.expires_at_ms < {now}) \
             ORDER BY payments.due_at_ms LIMIT $1{lock}",
            now = db_now_ms(self.backend)
        );
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&sql).bind(limit).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut wallets = Vec::new();
        for row in &rows {
            let id = stored(
                "payments.source_wallet_id",
                WalletId::parse(&text(row, "wallet_id")?),
            )?;
            if !wallets.contains(&id) {
                wallets.push(id);
            }
        }
        Ok(wallets)
    }

    /// Takes the lease on a source wallet for `owner`, for `length` by the database's clock.
    /// `None` when another owner holds an unexpired lease. A lease taken over (or taken again
    /// after it expired) gets the next epoch.
    pub async fn lease_wallet(
        &self,
        wallet: WalletId,
        owner: &str,
        length: std::time::Duration,
    ) -> Result<Option<Lease>> {
        let length_ms = i64::try_from(length.as_millis()).unwrap_or(i64::MAX / 2);
        let statement = sqlx::query(for_backend(&LEASE, self.backend))
            .bind(wallet.to_string())
            .bind(owner.to_owned())
            .bind(length_ms);
        let epoch = self
            .write(Box::new(move |conn| {
                Box::pin(async move {
                    let row = statement.fetch_optional(conn).await?;
                    row.map(|row| row.try_get::<i64, _>("epoch"))
                        .transpose()
                        .map_err(Error::from)
                })
            }))
            .await?;
        Ok(epoch.map(|epoch| Lease {
            wallet,
            owner: owner.to_owned(),
            epoch,
        }))
    }

    /// Extends a lease its holder still holds (same owner and epoch, unexpired by the database's
    /// clock). False when it was lost: the holder must stop writing for that wallet.
    pub async fn renew_lease(&self, lease: &Lease, length: std::time::Duration) -> Result<bool> {
        let length_ms = i64::try_from(length.as_millis()).unwrap_or(i64::MAX / 2);
        let changed = self
            .write_statement(
                sqlx::query(for_backend(&RENEW, self.backend))
                    .bind(length_ms)
                    .bind(lease.wallet.to_string())
                    .bind(lease.owner.clone())
                    .bind(lease.epoch),
            )
            .await?;
        Ok(changed == 1)
    }

    /// Gives a lease back: it expires now (the row stays, so the next holder's epoch is higher
    /// than every earlier one).
    pub async fn release_wallet(&self, lease: &Lease) -> Result<()> {
        self.write_statement(
            sqlx::query(
                "UPDATE payment_leases SET expires_at_ms = 0 \
                 WHERE wallet_id = $1 AND owner = $2 AND epoch = $3",
            )
            .bind(lease.wallet.to_string())
            .bind(lease.owner.clone())
            .bind(lease.epoch),
        )
        .await?;
        Ok(())
    }

    /// The payment of a source wallet the worker must look at next (due or not): the one in
    /// flight (`SIGNED` or `SUBMITTED`) if there is one, else the oldest `CREATED`. One
    /// transaction in flight at a time: a payment accepted concurrently with a smaller id but
    /// committed after a later one was signed must not be built on the same sequence number.
    /// `NEEDS_ATTENTION` payments do not block the wallet (their sequence is spent).
    pub async fn next_unfinished_payment(&self, wallet: WalletId) -> Result<Option<NextPayment>> {
        let rows = sqlx::query(for_backend(&NEXT_UNFINISHED, self.backend))
            .bind(wallet.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.first()
            .map(|row| {
                Ok(NextPayment {
                    payment: payment_from_row(row)?,
                    refusal: refusal_from_row(row)?,
                    due: row.try_get::<i64, _>("due")? == 1,
                    last: rows.len() == 1,
                })
            })
            .transpose()
    }

    /// Every transaction signed for a payment (current and rebuilt-away ones), oldest first.
    pub async fn payment_transactions(&self, id: PaymentId) -> Result<Vec<SignedTransaction>> {
        sqlx::query(
            "SELECT tx_hash, sequence, max_time FROM payment_transactions \
             WHERE payment_id = $1 ORDER BY created_at",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(SignedTransaction {
                hash: text(row, "tx_hash")?,
                sequence: row.try_get::<i64, _>("sequence")?,
                max_time: row.try_get::<i64, _>("max_time")?,
            })
        })
        .collect()
    }

    /// CREATED → SIGNED: stores the signed envelope and its hash (before any submission). The
    /// database adds the hash to `payment_transactions` and the event to the history. False
    /// (nothing stored) when the payment is no longer the version read, the lease was lost, or
    /// its wallet was frozen or its user blocked since it was read: such a transaction is never
    /// sent.
    pub async fn mark_signed(
        &self,
        lease: &Lease,
        read: &PaymentRecord,
        signed: &SignedEnvelope<'_>,
    ) -> Result<bool> {
        let now = Timestamp::now();
        let detail = format!(
            "sequence {}, max_time {}, fee {}",
            signed.sequence, signed.max_time, signed.fee
        );
        let statement = sqlx::query(&MARK_SIGNED)
            .bind(signed.sequence)
            .bind(signed.max_time)
            .bind(signed.fee)
            .bind(signed.hash.to_owned())
            .bind(signed.envelope_xdr.to_owned())
            .bind(detail)
            .bind(now.as_str().to_owned())
            .bind(read.id.to_string());
        self.write_fenced(statement, lease, read).await
    }

    /// Counts a submission; SIGNED → SUBMITTED on the first one. False when the payment is no
    /// longer the version read or the lease was lost (nothing may be sent then).
    pub async fn mark_submitted(&self, lease: &Lease, read: &PaymentRecord) -> Result<bool> {
        let statement = sqlx::query(&MARK_SUBMITTED)
            .bind(Timestamp::now().as_str().to_owned())
            .bind(read.id.to_string());
        self.write_fenced(statement, lease, read).await
    }

    /// Terminal: SUCCESS or FAILED, with what Horizon said about transaction `tx_hash` (the
    /// current one or an earlier build's). False when the payment is no longer the version
    /// read or the lease was lost.
    pub async fn finish_payment(
        &self,
        lease: &Lease,
        read: &PaymentRecord,
        outcome: &Outcome<'_>,
    ) -> Result<bool> {
        let codes_json = outcome
            .codes
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::CorruptData(format!("result codes: {e}")))?;
        let detail = match (codes_json.as_deref(), outcome.reason) {
            (Some(c), Some(r)) => Some(format!("{r}: {c}")),
            (Some(c), None) => Some(c.to_owned()),
            (None, Some(r)) => Some(r.to_owned()),
            (None, None) => outcome.ledger.map(|l| format!("ledger {l}")),
        };
        let statement = sqlx::query(&FINISH)
            .bind(outcome.status.as_str())
            .bind(outcome.tx_hash.map(str::to_owned))
            .bind(outcome.ledger)
            .bind(outcome.fee_charged)
            .bind(codes_json)
            .bind(outcome.reason.map(str::to_owned))
            .bind(detail)
            .bind(Timestamp::now().as_str().to_owned())
            .bind(read.id.to_string());
        self.write_fenced(statement, lease, read).await
    }

    /// CREATED → FAILED: only for a payment none of whose transactions can still apply (never
    /// signed, or every one provably dead before the rebuild). False when the payment is no
    /// longer the version read or the lease was lost.
    pub async fn fail_unsigned_payment(
        &self,
        lease: &Lease,
        read: &PaymentRecord,
        reason: &str,
    ) -> Result<bool> {
        let statement = sqlx::query(&FAIL_UNSIGNED)
            .bind(reason.to_owned())
            .bind(Timestamp::now().as_str().to_owned())
            .bind(read.id.to_string());
        self.write_fenced(statement, lease, read).await
    }

    /// SIGNED/SUBMITTED → CREATED: every transaction signed for the payment provably can never
    /// apply; build anew. [`Rebuild::SameSequence`] keeps the sequence number (the rule: a
    /// rebuild reuses it); [`Rebuild::NewSequence`] only once that sequence was spent by a
    /// transaction that is not the payment's. The last envelope and hash stay on the row (and
    /// every hash in `payment_transactions`), where confirmations still look.
    pub async fn reset_for_rebuild(
        &self,
        lease: &Lease,
        read: &PaymentRecord,
        rebuild: Rebuild,
        why: &str,
    ) -> Result<bool> {
        let keep_sequence: i64 = match rebuild {
            Rebuild::SameSequence => 1,
            Rebuild::NewSequence => 0,
        };
        let statement = sqlx::query(&RESET_FOR_REBUILD)
            .bind(why.to_owned())
            .bind(Timestamp::now().as_str().to_owned())
            .bind(read.id.to_string())
            .bind(keep_sequence);
        self.write_fenced(statement, lease, read).await
    }

    /// SUBMITTED → SIGNED with a fee bump around the stored transaction (same sequence, same
    /// inner hash): the bump's envelope becomes what is submitted, and its hash joins the
    /// payment's transactions (the database adds it), next to the inner one. False when the
    /// payment is no longer the version read or the lease was lost.
    pub async fn mark_fee_bumped(
        &self,
        lease: &Lease,
        read: &PaymentRecord,
        bumped: &SignedEnvelope<'_>,
    ) -> Result<bool> {
        let detail = format!(
            "fee bump to {} per operation, same sequence {}",
            bumped.fee, bumped.sequence
        );
        let statement = sqlx::query(&MARK_FEE_BUMPED)
            .bind(bumped.fee)
            .bind(bumped.hash.to_owned())
            .bind(bumped.envelope_xdr.to_owned())
            .bind(detail)
            .bind(Timestamp::now().as_str().to_owned())
            .bind(read.id.to_string());
        self.write_fenced(statement, lease, read).await
    }

    /// CREATED → SUBMITTED without a new transaction: a rebuild found the account's sequence
    /// already at or past the payment's, so one of its transactions (or another party's) used
    /// it. The payment goes back to confirming, never to building.
    pub async fn back_to_confirming(
        &self,
        lease: &Lease,
        read: &PaymentRecord,
        why: &str,
    ) -> Result<bool> {
        let statement = sqlx::query(&BACK_TO_CONFIRMING)
            .bind(why.to_owned())
            .bind(Timestamp::now().as_str().to_owned())
            .bind(read.id.to_string());
        self.write_fenced(statement, lease, read).await
    }

    /// SIGNED/SUBMITTED → NEEDS_ATTENTION: the payment's sequence was spent and Horizon cannot
    /// show whether by one of its transactions. Parked for an operator; the wallet's later
    /// payments go on.
    pub async fn park_for_attention(
        &self,
        lease: &Lease,
        read: &PaymentRecord,
        why: &str,
    ) -> Result<bool> {
        let statement = sqlx::query(&PARK_FOR_ATTENTION)
            .bind(why.to_owned())
            .bind(Timestamp::now().as_str().to_owned())
            .bind(read.id.to_string());
        self.write_fenced(statement, lease, read).await
    }

    /// Settles a `NEEDS_ATTENTION` payment as an operator decided; the reason goes into its
    /// history, and the decision into the audit events, in the same transaction. False when the
    /// payment does not need attention (any more): then nothing is written.
    pub async fn resolve_payment(
        &self,
        id: PaymentId,
        resolution: Resolution,
        reason: &str,
        ctx: &AuditContext,
    ) -> Result<bool> {
        let detail = format!("resolved by an operator: {reason}");
        let failure = (resolution == Resolution::Failed).then(|| detail.clone());
        let (sql, name) = match resolution {
            Resolution::Success => (&*RESOLVE[0], "SUCCESS"),
            Resolution::Failed => (&*RESOLVE[1], "FAILED"),
            Resolution::Rebuild => (&*RESOLVE[2], "REBUILD"),
        };
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        let resolved = sqlx::query(sql)
            .bind(detail)
            .bind(failure)
            .bind(now.as_str().to_owned())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if resolved {
            audit::record(
                &mut tx,
                ctx,
                &now,
                AuditAction::PaymentResolved,
                "payment",
                &id.to_string(),
                serde_json::json!({ "resolution": name, "reason": reason }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(resolved)
    }

    /// Runs a transition fenced by [`bind_fence`] (the status, build and hash read, the lease
    /// owner and epoch); true when it changed the payment, false when any of those moved on.
    async fn write_fenced(
        &self,
        statement: Statement,
        lease: &Lease,
        read: &PaymentRecord,
    ) -> Result<bool> {
        Ok(self
            .write_statement(bind_fence(statement, lease, read))
            .await?
            == 1)
    }

    /// Puts a payment off for `wait`, counted from the database's clock: every replica judges
    /// when it is due by that one clock, so a replica whose own clock runs ahead cannot put it
    /// off for days. Only the lease's holder may (the step that decided to wait may have moved
    /// the payment on, so its version is not part of the fence); false when the lease was lost,
    /// and the new holder decides.
    pub async fn postpone_payment(
        &self,
        lease: &Lease,
        id: PaymentId,
        wait: std::time::Duration,
    ) -> Result<bool> {
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
        let changed = self
            .write_statement(
                sqlx::query(for_backend(&POSTPONE, self.backend))
                    .bind(wait_ms)
                    .bind(id.to_string())
                    .bind(lease.owner.clone())
                    .bind(lease.epoch),
            )
            .await?;
        Ok(changed == 1)
    }

    /// Whether the wallet's user is blocked or the wallet frozen (the worker re-checks).
    pub async fn wallet_refusal(&self, wallet: WalletId) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT wallets.frozen_at AS frozen_at, users.blocked_at AS blocked_at FROM wallets \
             JOIN users ON users.id = wallets.user_id WHERE wallets.id = $1",
        )
        .bind(wallet.to_string())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => refusal_from_row(&row),
            None => Ok(Some("source wallet not found".into())),
        }
    }
}

/// One transaction signed for a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTransaction {
    /// Its hash (hex).
    pub hash: String,
    /// The sequence number it uses.
    pub sequence: i64,
    /// Its `max_time` (unix seconds).
    pub max_time: i64,
}

/// A signed transaction to store with [`Store::mark_signed`].
pub struct SignedEnvelope<'a> {
    /// Its sequence number.
    pub sequence: i64,
    /// Its `max_time`.
    pub max_time: i64,
    /// The fee offered.
    pub fee: i64,
    /// Its hash (hex).
    pub hash: &'a str,
    /// The signed envelope (base64 XDR).
    pub envelope_xdr: &'a str,
}

/// A terminal outcome to store with [`Store::finish_payment`].
pub struct Outcome<'a> {
    /// SUCCESS or FAILED.
    pub status: PaymentStatus,
    /// The transaction it is about.
    pub tx_hash: Option<&'a str>,
    /// The ledger it was applied in.
    pub ledger: Option<i64>,
    /// The fee charged.
    pub fee_charged: Option<i64>,
    /// Horizon's result codes.
    pub codes: Option<&'a ResultCodes>,
    /// Why, in words.
    pub reason: Option<&'a str>,
}

/// An operator's decision on a `NEEDS_ATTENTION` payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// One of its transactions applied (found by other means): `SUCCESS`.
    Success,
    /// None applied: `FAILED` (its sequence is spent, none can apply any more).
    Failed,
    /// None applied and it should still be paid: built anew on a new sequence (`CREATED`).
    Rebuild,
}

/// Which sequence number a rebuild uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rebuild {
    /// The payment's own (the rule).
    SameSequence,
    /// A fresh one: the payment's sequence was spent by a transaction that is not the payment's.
    NewSequence,
}

/// Why a wallet may not pay, from a row with its `frozen_at` and its user's `blocked_at`.
fn refusal_from_row(row: &AnyRow) -> Result<Option<String>> {
    if optional_text(row, "blocked_at")?.is_some() {
        return Ok(Some(
            "USER_BLOCKED: the source wallet's user is blocked".into(),
        ));
    }
    if optional_text(row, "frozen_at")?.is_some() {
        return Ok(Some("WALLET_FROZEN: the source wallet is frozen".into()));
    }
    Ok(None)
}
