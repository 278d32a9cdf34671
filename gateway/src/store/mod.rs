//! The database. One [`Store`] over an sqlx `Any` pool serves SQLite (a file, the default) and
//! Postgres (production, several replicas). Queries are written once in the SQL both accept
//! (`$1` placeholders, `ON CONFLICT ... DO NOTHING`, text timestamps); where the dialects must
//! differ (row locking in the payment worker: `FOR UPDATE SKIP LOCKED` on Postgres, a single
//! writer with group commits on SQLite; the database's clock in SQL) the code branches on [`Store::backend`].
//!
//! Every change to a user, wallet or API key is written in the same transaction as its audit
//! event, so the log cannot miss a change that happened.
//!
//! Modules: [`users`], [`wallets`], [`api_keys`], [`audit`], [`idempotency`], [`payments`], [`webhooks`], [`deposits`], [`migrations`].

pub mod api_keys;
pub mod audit;
pub mod deposits;
mod group_commit;
pub mod history;
pub mod idempotency;
pub mod migrations;
pub mod payments;
pub mod users;
pub mod wallets;
pub mod webhooks;

use std::time::Duration;

use secrecy::ExposeSecret;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Row};

use crate::config::{DatabaseConfig, DatabaseUrl};
use crate::error::{Error, Result};
use crate::model::{Reason, Timestamp};

pub use audit::AuditContext;
pub use idempotency::IdempotencyClaim;
pub use payments::{
    Accepted, DailyLimits, KeyedPayment, Lease, NewPayment, NextPayment, Outcome, PaymentEvent,
    PaymentRecord, Rebuild, Resolution, SignedEnvelope, SignedTransaction,
};
pub use wallets::{EarlierRequest, UserWallet, WalletRecord, WalletRequest, WalletRequestState};

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A Postgres server.
    Postgres,
}

impl Backend {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The database behind the gateway.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite's payment and wallet writes go through here (see [`group_commit`]); `None` on
    /// Postgres.
    group: Option<group_commit::GroupCommit>,
}

impl Store {
    /// Connects (creating a SQLite file when missing). Does not migrate: see [`Store::migrate`].
    pub async fn connect(url: &DatabaseUrl, config: &DatabaseConfig) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url_text) = match url {
            DatabaseUrl::Sqlite(path) => (Backend::Sqlite, sqlite_url(path)?),
            DatabaseUrl::Postgres(url) => (Backend::Postgres, url.expose_secret().to_owned()),
        };
        // Every statement at debug level (sqlx's default is info: a log line per query); slow
        // ones still warn.
        let options = AnyConnectOptions::from_str(&url_text)?
            .log_statements(log::LevelFilter::Debug)
            .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(1));
        if backend == Backend::Sqlite {
            // WAL lets readers run while one writer commits. Switching the journal mode needs an
            // exclusive lock that busy_timeout cannot wait for, so do it once, on one connection,
            // before the pool opens several. The mode is stored in the file.
            let mut conn = AnyConnection::connect_with(&options).await?;
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&mut conn)
                .await?;
            conn.close().await?;
        }
        let pool = AnyPoolOptions::new()
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Durable commits (fsync of the WAL at each commit), whatever the
                        // library was compiled with: an accepted request is never lost.
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .max_connections(config.max_connections)
            // No ping before every checkout (sqlx's default): it doubles the round trips of
            // every statement. A connection found broken when used is dropped by the pool, and
            // the caller's retry (the worker's, or the client's behind its Idempotency-Key) gets
            // a fresh one.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
            .connect_with(options)
            .await?;
        let group =
            (backend == Backend::Sqlite).then(|| group_commit::GroupCommit::start(pool.clone()));
        Ok(Store {
            pool,
            backend,
            group,
        })
    }

    /// Runs a write of the payment path: on SQLite in the next group commit (see
    /// [`group_commit`]), on Postgres on a pooled connection (each statement commits itself,
    /// unless the write opens a transaction).
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        write: group_commit::Write<T>,
    ) -> Result<T> {
        match &self.group {
            Some(group) => group.write(write).await,
            None => {
                let mut conn = self.pool.acquire().await?;
                write(&mut conn).await
            }
        }
    }

    /// A write that must be one transaction on both databases: on SQLite in the next group
    /// commit (its own savepoint there), on Postgres in a transaction of its own.
    pub(crate) async fn write_transaction<T: Send + 'static>(
        &self,
        write: group_commit::Write<T>,
    ) -> Result<T> {
        match &self.group {
            Some(group) => group.write(write).await,
            None => {
                let mut tx = self.pool.begin().await?;
                let out = write(&mut tx).await?;
                tx.commit().await?;
                Ok(out)
            }
        }
    }

    /// One statement through [`Store::write`]; the rows it changed.
    pub(crate) async fn write_statement(
        &self,
        statement: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>>,
    ) -> Result<u64> {
        self.write(Box::new(move |conn| {
            Box::pin(async move { Ok(statement.execute(conn).await?.rows_affected()) })
        }))
        .await
    }

    /// Applies pending migrations (under an advisory lock on Postgres, so replicas starting
    /// together apply each migration once). Returns how many migrations are known.
    pub async fn migrate(&self) -> Result<usize> {
        let migrator = migrations::migrator(self.backend);
        migrator.run(&self.pool).await?;
        Ok(migrator.migrations.len())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// One round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection (waits for checked-out ones to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool, for tests and tools that inspect the database directly.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Sets or clears a nullable "since" column (`users.blocked_at`, `wallets.frozen_at`) and
    /// records the audit event, in one transaction. Nothing is written (and no event recorded)
    /// when the flag already has the wanted value. Returns false when no row has that id.
    async fn set_flag(
        &self,
        flag: Flag,
        id: &str,
        on: bool,
        reason: &Reason,
        ctx: &AuditContext,
    ) -> Result<bool> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        let sql = if on {
            format!(
                "UPDATE {table} SET {column} = $1, updated_at = $1 WHERE id = $2 AND {column} IS NULL",
                table = flag.table,
                column = flag.column
            )
        } else {
            format!(
                "UPDATE {table} SET {column} = NULL, updated_at = $1 WHERE id = $2 AND {column} IS NOT NULL",
                table = flag.table,
                column = flag.column
            )
        };
        let changed = sqlx::query(&sql)
            .bind(now.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 1 {
            let action = if on { flag.on_action } else { flag.off_action };
            audit::record(
                &mut tx,
                ctx,
                &now,
                action,
                flag.subject_type,
                id,
                serde_json::json!({ "reason": reason.as_str() }),
            )
            .await?;
        }
        let exists = changed == 1
            || sqlx::query(&format!("SELECT 1 FROM {} WHERE id = $1", flag.table))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        tx.commit().await?;
        Ok(exists)
    }
}

/// A nullable timestamp column that marks a state an admin switches on and off.
struct Flag {
    table: &'static str,
    column: &'static str,
    subject_type: &'static str,
    on_action: crate::model::AuditAction,
    off_action: crate::model::AuditAction,
}

fn sqlite_url(path: &std::path::Path) -> Result<String> {
    let absolute = std::path::absolute(path)
        .map_err(|e| Error::io(format!("database path {}", path.display()), e))?;
    if let Some(dir) = absolute.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let text = absolute.to_str().ok_or_else(|| {
        Error::Config(format!(
            "database.url: the sqlite path {} is not UTF-8",
            absolute.display()
        ))
    })?;
    // `mode=rwc` creates the file when missing. `%` is the one character the URL form needs
    // escaped; `?` and `#` were refused when the config was parsed.
    Ok(format!("sqlite://{}?mode=rwc", text.replace('%', "%25")))
}

/// Reads a text column.
pub(crate) fn text(row: &AnyRow, column: &str) -> Result<String> {
    Ok(row.try_get::<String, _>(column)?)
}

/// Reads a nullable text column.
pub(crate) fn optional_text(row: &AnyRow, column: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(column)?)
}

/// Reads a nullable timestamp column.
pub(crate) fn optional_timestamp(row: &AnyRow, column: &str) -> Result<Option<Timestamp>> {
    optional_text(row, column)?
        .map(Timestamp::from_stored)
        .transpose()
}

/// Turns a parse failure of a stored value into [`Error::CorruptData`] naming the column.
pub(crate) fn stored<T>(column: &str, parsed: Result<T>) -> Result<T> {
    parsed.map_err(|e| Error::CorruptData(format!("{column}: {e}")))
}
