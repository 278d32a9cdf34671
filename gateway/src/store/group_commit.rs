//! Group commit for SQLite's payment and wallet writes (and the generic idempotency table's).
//!
//! SQLite has one writer, and with `synchronous = FULL` every commit waits for an fsync of the
//! WAL and writes every page it touched. Written one commit per statement, the payment path
//! (four commits per payment) spends its time waiting on the disk, with the CPU idle. Here the
//! writes queue up while one batch commits, and the next batch runs them all in one
//! transaction: one fsync, and a page touched by many of them written once.
//!
//! Each write runs inside its own savepoint, so one that fails (a unique violation, a refused
//! limit) is rolled back alone and the others still commit. A caller hears back only after the
//! batch's COMMIT returned: nothing is reported written that is not durable. If the COMMIT
//! fails, every write of the batch gets the error and none of them happened.
//!
//! Postgres needs none of this (its WAL writer already lets concurrent commits share a flush),
//! so there the writes run directly on the pool.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use sqlx::{AnyConnection, AnyPool};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// The most writes committed together.
const MAX_BATCH: usize = 512;

type Output = Box<dyn Any + Send>;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A write: statements run on the batch's connection, inside the batch's transaction.
pub(crate) type Write<T> =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T>> + Send>;

struct Job {
    write: Write<Output>,
    reply: oneshot::Sender<Result<Output>>,
}

/// The queue in front of the one task that writes and commits; see the module documentation.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    jobs: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

impl GroupCommit {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub(crate) fn start(pool: AnyPool) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, queue));
        GroupCommit { jobs }
    }

    /// Runs `write` in the next batch and returns its result once the batch committed.
    pub(crate) async fn write<T: Send + 'static>(&self, write: Write<T>) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let write: Write<Output> = Box::new(move |conn| {
            Box::pin(async move { write(conn).await.map(|t| Box::new(t) as Output) })
        });
        self.jobs
            .send(Job { write, reply })
            .map_err(|_| unavailable("the database writer has stopped".into()))?;
        let output = answer
            .await
            .map_err(|_| unavailable("the database writer has stopped".into()))??;
        output
            .downcast::<T>()
            .map(|t| *t)
            .map_err(|_| Error::CorruptData("group commit returned another type".into()))
    }
}

async fn run(pool: AnyPool, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                let reason = format!("no connection for a write: {e}");
                for job in jobs {
                    let _ = job.reply.send(Err(unavailable(reason.clone())));
                }
                continue;
            }
        };
        if let Err(reason) = commit_batch(&mut conn, jobs).await {
            tracing::warn!(%reason, "a group commit failed; its writes were rolled back");
            if statement(&mut conn, "ROLLBACK").await.is_err() {
                // A connection in an unknown transaction state must not go back to the pool.
                conn.close_on_drop();
            }
        }
    }
}

/// Runs the batch in one transaction and answers every job; on error, everything was answered
/// with that error and the caller rolls back.
async fn commit_batch(conn: &mut AnyConnection, jobs: Vec<Job>) -> Result<(), String> {
    let mut done = Vec::with_capacity(jobs.len());
    let mut pending = jobs.into_iter();
    let failed = async {
        statement(conn, "BEGIN IMMEDIATE").await?;
        for job in pending.by_ref() {
            statement(conn, "SAVEPOINT write").await?;
            let outcome = (job.write)(conn).await;
            if outcome.is_err() {
                statement(conn, "ROLLBACK TO write").await?;
            }
            statement(conn, "RELEASE write").await?;
            done.push((job.reply, outcome));
        }
        statement(conn, "COMMIT").await
    }
    .await
    .err();
    match failed {
        None => {
            for (reply, outcome) in done {
                let _ = reply.send(outcome);
            }
            Ok(())
        }
        Some(e) => {
            let reason = format!("group commit: {e}");
            let replies = done.into_iter().map(|(reply, _)| reply);
            for reply in replies.chain(pending.map(|job| job.reply)) {
                let _ = reply.send(Err(unavailable(reason.clone())));
            }
            Err(reason)
        }
    }
}

async fn statement(conn: &mut AnyConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(conn).await.map(|_| ())
}

/// An error callers treat as the database being unavailable (retry later).
fn unavailable(reason: String) -> Error {
    Error::Database(sqlx::Error::Io(std::io::Error::other(reason)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::any::AnyPoolOptions;

    fn must<T, E: std::fmt::Display>(result: std::result::Result<T, E>) -> T {
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A write inserting `keys` one by one; the rows it inserted.
    fn insert(keys: &'static [&'static str]) -> Write<u64> {
        Box::new(move |conn| {
            Box::pin(async move {
                let mut inserted = 0;
                for key in keys {
                    inserted += sqlx::query("INSERT INTO t (k) VALUES ($1)")
                        .bind(*key)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                }
                Ok(inserted)
            })
        })
    }

    #[tokio::test]
    async fn a_failing_write_is_rolled_back_alone_and_the_rest_of_its_batch_commits() {
        sqlx::any::install_default_drivers();
        let dir = must(tempfile::tempdir());
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let pool = must(AnyPoolOptions::new().max_connections(2).connect(&url).await);
        must(
            sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
                .execute(&pool)
                .await,
        );
        must(
            sqlx::query("INSERT INTO t (k) VALUES ('taken')")
                .execute(&pool)
                .await,
        );
        let group = GroupCommit::start(pool.clone());

        // On this single-threaded runtime the three jobs are queued before the writer task
        // runs, so they share one batch. The second fails on its second statement.
        let (a, b, c) = tokio::join!(
            group.write(insert(&["a1", "a2"])),
            group.write(insert(&["b1", "taken"])),
            group.write(insert(&["c1"])),
        );
        assert_eq!(must(a), 2);
        assert!(b.is_err_and(|e| e.is_unique_violation()));
        assert_eq!(must(c), 1);
        let keys: Vec<String> = must(
            sqlx::query_scalar("SELECT k FROM t ORDER BY k")
                .fetch_all(&pool)
                .await,
        );
        // b1 went with the write that failed; everything else is committed.
        assert_eq!(keys, ["a1", "a2", "c1", "taken"]);

        // The writer carries on after a failed write.
        assert_eq!(must(group.write(insert(&["d1"])).await), 1);
    }
}
