//! Webhook endpoints and their deliveries (migration 0006). Endpoint changes are written with
//! their audit event in one transaction. The dispatcher's writes (claim, outcome) go through
//! [`Store::write`] (SQLite's group commit; a pooled connection on Postgres) and are fenced by the
//! claim's owner, so a replica whose lease expired cannot overwrite the next claimer's outcome.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

use std::sync::LazyLock;

use super::payments::{db_now_ms, for_backend, per_backend};
use super::{Backend, Store, audit, optional_text, text};
use crate::error::Result;
use crate::model::{AuditAction, Timestamp, WebhookId};
use crate::store::AuditContext;
use crate::webhooks::signature::WebhookSecret;

/// A live endpoint as stored.
#[derive(Clone, Debug)]
pub struct EndpointRecord {
    /// Id.
    pub id: WebhookId,
    /// Target URL (checked when registered).
    pub url: String,
    /// Subscribed event types.
    pub event_types: Vec<String>,
    /// When registered.
    pub created_at: Timestamp,
}

/// One delivery as the API shows it.
#[derive(Clone, Debug)]
pub struct DeliveryRecord {
    /// Id (increasing).
    pub id: i64,
    /// The event's id (`evt_<n>`), sent as `webhook-id`.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The event's wallet and its number there.
    pub wallet_id: String,
    /// The event's number in its wallet.
    pub wallet_sequence: i64,
    /// `PENDING`, `DELIVERED`, `DEAD` or `CANCELLED`.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the last attempt was made.
    pub last_attempt_at: Option<String>,
    /// The HTTP status of the last attempt, when one came back.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered or given up.
    pub finished_at: Option<String>,
}

/// A claimed delivery with what the dispatcher needs to send it.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    /// The delivery id.
    pub id: i64,
    /// Attempts before this one.
    pub attempts: i64,
    /// Milliseconds (database clock) since the delivery was queued.
    pub age_ms: i64,
    /// The endpoint.
    pub endpoint_id: String,
    /// Its URL.
    pub url: String,
    /// The secrets that sign: the current one, and the previous one during a rotation overlap.
    pub secrets: Vec<WebhookSecret>,
    /// The outbox row id (the event id is `evt_<n>`).
    pub event_row: i64,
    /// Event type.
    pub event_type: String,
    /// The payment's public fields as JSON text.
    pub payload: String,
    /// When the change happened.
    pub occurred_at: String,
    /// The wallet.
    pub wallet_id: String,
    /// Its number in the wallet.
    pub wallet_sequence: i64,
}

/// The outcome of one attempt.
#[derive(Clone, Debug)]
pub enum AttemptOutcome {
    /// A 2xx answer.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Anything else; `retry_in_ms: None` means the budget is spent (dead letter).
    Failed {
        /// The status, when an answer came.
        status: Option<u16>,
        /// Why.
        error: String,
        /// When to try again, or `None` to give up.
        retry_in_ms: Option<u64>,
    },
}

/// What a replay request did.
#[derive(Clone, Debug)]
pub enum Replay {
    /// Queued again (the record shows it `PENDING`).
    Queued(DeliveryRecord),
    /// Left alone: it is `PENDING` (not finished yet) or `CANCELLED` (endpoint deleted).
    NotFinished(DeliveryRecord),
}

/// The outbox backlog: pending deliveries and the oldest one's age.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backlog {
    /// Deliveries not yet delivered nor given up.
    pub pending: i64,
    /// Milliseconds since the oldest of them was queued (0 when none).
    pub oldest_age_ms: i64,
}

/// What one retention batch deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// `webhook_deliveries` rows.
    pub deliveries: u64,
    /// `outbox_events` rows.
    pub events: u64,
}

/// Finished deliveries past retention: `DELIVERED`, or `CANCELLED` (their endpoint is deleted,
/// so nothing can show or replay them). Their age counts from `due_at_ms`, when their last
/// attempt became due (a replay makes it new again). `$1` is the cutoff, a plain value (the
/// database's clock read before), so it bounds the `(state, due_at_ms)` index scan: a pass with
/// nothing old reads nothing, where `clock_timestamp()` in the predicate (volatile) would make
/// Postgres walk every delivered row. The outer conditions are checked again on the row a
/// concurrent replay may have changed (Postgres re-evaluates them after the row lock); `SKIP
/// LOCKED` keeps replicas that prune together off each other's rows.
static PRUNE_DELIVERIES: LazyLock<[String; 2]> = LazyLock::new(|| {
    per_backend(|backend| {
        let lock = skip_locked(backend);
        format!(
            "DELETE FROM webhook_deliveries WHERE id IN (\
               SELECT id FROM webhook_deliveries WHERE state IN ('DELIVERED', 'CANCELLED') \
                 AND due_at_ms < $1 LIMIT $2{lock}) \
             AND state IN ('DELIVERED', 'CANCELLED') AND due_at_ms < $1"
        )
    })
});

/// Events past retention that no delivery refers to any more: every delivery they had was
/// delivered (or cancelled) and pruned, or no endpoint was subscribed. An event with a pending
/// or dead delivery keeps it (and the foreign key would refuse the delete anyway). Deliveries
/// are only ever inserted for a new event, in its own transaction, so none can appear for an
/// event this statement has chosen. The wallet numbering lives in `wallet_event_sequences`,
/// which is never pruned, so numbers keep increasing after their events are gone.
static PRUNE_EVENTS: LazyLock<[String; 2]> = LazyLock::new(|| {
    per_backend(|backend| {
        let lock = skip_locked(backend);
        format!(
            "DELETE FROM outbox_events WHERE id IN (\
               SELECT o.id FROM outbox_events o WHERE o.created_at_ms < $1 \
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = o.id) \
               ORDER BY o.created_at_ms LIMIT $2{lock})"
        )
    })
});

/// Row locks that skip rows another transaction holds (Postgres; SQLite has one writer).
fn skip_locked(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    }
}

/// A failed attempt, retried after `$4` ms by the database's clock.
static RETRY_LATER: LazyLock<[String; 2]> = LazyLock::new(|| {
    per_backend(|backend| {
        format!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = $1, \
             last_status = $2, last_error = $3, due_at_ms = {} + $4, \
             lease_owner = NULL, lease_until_ms = NULL \
             WHERE id = $5 AND lease_owner = $6 AND state = 'PENDING'",
            db_now_ms(backend)
        )
    })
});

/// The public event id of an outbox row.
pub fn event_id(row: i64) -> String {
    format!("evt_{row}")
}

fn endpoint_from_row(row: &AnyRow) -> Result<EndpointRecord> {
    let id = text(row, "id")?;
    Ok(EndpointRecord {
        id: super::stored("webhook_endpoints.id", WebhookId::parse(&id))?,
        url: text(row, "url")?,
        event_types: text(row, "event_types")?
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        created_at: Timestamp::from_stored(text(row, "created_at")?)?,
    })
}

fn delivery_from_row(row: &AnyRow) -> Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: row.try_get::<i64, _>("id")?,
        event_id: event_id(row.try_get::<i64, _>("event_id")?),
        event_type: text(row, "event_type")?,
        wallet_id: text(row, "wallet_id")?,
        wallet_sequence: row.try_get::<i64, _>("wallet_sequence")?,
        state: text(row, "state")?,
        attempts: i64::from(row.try_get::<i32, _>("attempts")?),
        last_attempt_at: optional_text(row, "last_attempt_at")?,
        last_status: row.try_get::<Option<i32>, _>("last_status")?.map(i64::from),
        last_error: optional_text(row, "last_error")?,
        finished_at: optional_text(row, "finished_at")?,
    })
}

const DELIVERY_COLUMNS: &str = "d.id AS id, d.event_id AS event_id, o.event_type AS event_type, \
    d.wallet_id AS wallet_id, d.wallet_sequence AS wallet_sequence, d.state AS state, \
    d.attempts AS attempts, d.last_attempt_at AS last_attempt_at, d.last_status AS last_status, \
    d.last_error AS last_error, d.finished_at AS finished_at";

impl Store {
    /// Registers an endpoint (and its audit event).
    pub async fn create_webhook(
        &self,
        url: &str,
        event_types: &[&str],
        secret: &WebhookSecret,
        ctx: &AuditContext,
    ) -> Result<EndpointRecord> {
        let id = WebhookId::generate();
        let now = Timestamp::now();
        let types = format!(",{},", event_types.join(","));
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, event_types, secret, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(url)
        .bind(&types)
        .bind(secret.expose())
        .bind(now.as_str())
        .execute(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            ctx,
            &now,
            AuditAction::WebhookCreated,
            "webhook",
            &id.to_string(),
            serde_json::json!({ "url": url, "event_types": event_types }),
        )
        .await?;
        tx.commit().await?;
        Ok(EndpointRecord {
            id,
            url: url.to_owned(),
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
            created_at: now,
        })
    }

    /// Live endpoints, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<EndpointRecord>> {
        let rows = sqlx::query(
            "SELECT id, url, event_types, created_at FROM webhook_endpoints \
             WHERE deleted_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    /// One live endpoint.
    pub async fn webhook(&self, id: WebhookId) -> Result<Option<EndpointRecord>> {
        let row = sqlx::query(
            "SELECT id, url, event_types, created_at FROM webhook_endpoints \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    /// Deletes a live endpoint: no new deliveries, pending ones cancelled. False when none.
    pub async fn delete_webhook(&self, id: WebhookId, ctx: &AuditContext) -> Result<bool> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE webhook_endpoints SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(now.as_str())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            let cancelled = sqlx::query(
                "UPDATE webhook_deliveries SET state = 'CANCELLED', finished_at = $1 \
                 WHERE endpoint_id = $2 AND state = 'PENDING'",
            )
            .bind(now.as_str())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            audit::record(
                &mut tx,
                ctx,
                &now,
                AuditAction::WebhookDeleted,
                "webhook",
                &id.to_string(),
                serde_json::json!({ "cancelled_deliveries": cancelled }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Replaces the signing secret; the old one keeps signing for `overlap_ms` (database clock).
    /// False when no live endpoint has that id.
    pub async fn rotate_webhook_secret(
        &self,
        id: WebhookId,
        secret: &WebhookSecret,
        overlap_ms: u64,
        ctx: &AuditContext,
    ) -> Result<bool> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(&format!(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = $1, \
             previous_secret_until_ms = {} + $2 WHERE id = $3 AND deleted_at IS NULL",
            db_now_ms(self.backend)
        ))
        .bind(secret.expose())
        .bind(i64::try_from(overlap_ms).unwrap_or(i64::MAX / 2))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            audit::record(
                &mut tx,
                ctx,
                &now,
                AuditAction::WebhookSecretRotated,
                "webhook",
                &id.to_string(),
                serde_json::json!({ "overlap_ms": overlap_ms }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// An endpoint's deliveries, newest first, below `before` when given.
    pub async fn webhook_deliveries(
        &self,
        id: WebhookId,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             JOIN outbox_events o ON o.id = d.event_id \
             WHERE d.endpoint_id = $1 AND d.id < $2 ORDER BY d.id DESC LIMIT $3"
        ))
        .bind(id.to_string())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Queues a `DELIVERED` or `DEAD` delivery of a live endpoint again, due now, with a fresh
    /// retry budget; the same event id (`webhook-id`) is sent. A pending one is left alone (it
    /// may be in flight under another replica's lease). `None` when no such delivery.
    pub async fn replay_webhook_delivery(
        &self,
        id: WebhookId,
        delivery: i64,
        ctx: &AuditContext,
    ) -> Result<Option<Replay>> {
        let now = Timestamp::now();
        let db_now = db_now_ms(self.backend);
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET state = 'PENDING', attempts = 0, due_at_ms = {db_now}, \
             created_at_ms = {db_now}, lease_owner = NULL, lease_until_ms = NULL, finished_at = NULL \
             WHERE id = $1 AND endpoint_id = $2 AND state IN ('DELIVERED', 'DEAD') \
             AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = $2 AND w.deleted_at IS NULL)"
        ))
        .bind(delivery)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            audit::record(
                &mut tx,
                ctx,
                &now,
                AuditAction::WebhookDeliveryReplayed,
                "webhook",
                &id.to_string(),
                serde_json::json!({ "delivery_id": delivery }),
            )
            .await?;
        }
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             JOIN outbox_events o ON o.id = d.event_id WHERE d.id = $1 AND d.endpoint_id = $2"
        ))
        .bind(delivery)
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(record) = row.as_ref().map(delivery_from_row).transpose()? else {
            return Ok(None);
        };
        Ok(Some(if changed == 1 {
            Replay::Queued(record)
        } else {
            Replay::NotFinished(record)
        }))
    }

    /// Claims up to `limit` due deliveries for `owner` for `lease_ms`: pending, due, not leased,
    /// no earlier pending delivery of the same wallet to the same endpoint, and the endpoint
    /// under `per_endpoint` leased deliveries.
    pub async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        limit: usize,
        lease_ms: u64,
        per_endpoint: i64,
    ) -> Result<Vec<ClaimedDelivery>> {
        let backend = self.backend;
        let owner = owner.to_owned();
        let lease = i64::try_from(lease_ms).unwrap_or(i64::MAX / 2);
        let limit = i64::try_from(limit).unwrap_or(1);
        match backend {
            Backend::Sqlite => {
                self.write(Box::new(move |conn| {
                    Box::pin(async move {
                        claim_on(conn, backend, &owner, limit, lease, per_endpoint).await
                    })
                }))
                .await
            }
            Backend::Postgres => {
                let mut conn = self.pool.acquire().await?;
                let mut tx = conn.begin().await?;
                let claimed =
                    claim_on(&mut tx, backend, &owner, limit, lease, per_endpoint).await?;
                tx.commit().await?;
                Ok(claimed)
            }
        }
    }

    /// Records an attempt's outcome, if `owner` still holds the delivery. Returns whether it did.
    ///
    /// A retried delivery also postpones the later pending deliveries of its wallet to that
    /// endpoint to its own next attempt: they cannot go before it anyway, and not being due they
    /// stay out of every claim's scan (an endpoint that is down with a long backlog would
    /// otherwise cost every claim of every endpoint a walk over that backlog).
    pub async fn finish_webhook_attempt(
        &self,
        claimed: &ClaimedDelivery,
        owner: &str,
        outcome: &AttemptOutcome,
    ) -> Result<bool> {
        let delivery = claimed.id;
        let now = Timestamp::now();
        let statement = match outcome {
            AttemptOutcome::Delivered { status } => sqlx::query(
                "UPDATE webhook_deliveries SET state = 'DELIVERED', attempts = attempts + 1, \
                 last_attempt_at = $1, last_status = $2, last_error = NULL, finished_at = $1, \
                 lease_owner = NULL, lease_until_ms = NULL \
                 WHERE id = $3 AND lease_owner = $4 AND state = 'PENDING'",
            )
            .bind(now.as_str().to_owned())
            .bind(i32::from(*status))
            .bind(delivery)
            .bind(owner.to_owned()),
            AttemptOutcome::Failed {
                status,
                error,
                retry_in_ms: Some(wait),
            } => sqlx::query(for_backend(&RETRY_LATER, self.backend))
                .bind(now.as_str().to_owned())
                .bind(status.map(i32::from))
                .bind(error.clone())
                .bind(i64::try_from(*wait).unwrap_or(i64::MAX / 2))
                .bind(delivery)
                .bind(owner.to_owned()),
            AttemptOutcome::Failed {
                status,
                error,
                retry_in_ms: None,
            } => sqlx::query(
                "UPDATE webhook_deliveries SET state = 'DEAD', attempts = attempts + 1, \
                 last_attempt_at = $1, last_status = $2, last_error = $3, finished_at = $1, \
                 lease_owner = NULL, lease_until_ms = NULL \
                 WHERE id = $4 AND lease_owner = $5 AND state = 'PENDING'",
            )
            .bind(now.as_str().to_owned())
            .bind(status.map(i32::from))
            .bind(error.clone())
            .bind(delivery)
            .bind(owner.to_owned()),
        };
        let postpone = matches!(
            outcome,
            AttemptOutcome::Failed {
                retry_in_ms: Some(_),
                ..
            }
        )
        .then(|| {
            sqlx::query(
                "UPDATE webhook_deliveries SET due_at_ms = \
                   (SELECT h.due_at_ms FROM webhook_deliveries h WHERE h.id = $1) \
                 WHERE endpoint_id = $2 AND wallet_id = $3 AND state = 'PENDING' \
                   AND wallet_sequence > $4 \
                   AND due_at_ms < (SELECT h.due_at_ms FROM webhook_deliveries h WHERE h.id = $1)",
            )
            .bind(delivery)
            .bind(claimed.endpoint_id.clone())
            .bind(claimed.wallet_id.clone())
            .bind(claimed.wallet_sequence)
        });
        self.write(Box::new(move |conn| {
            Box::pin(async move {
                let recorded = statement.execute(&mut *conn).await?.rows_affected() == 1;
                if recorded && let Some(postpone) = postpone {
                    postpone.execute(&mut *conn).await?;
                }
                Ok(recorded)
            })
        }))
        .await
    }

    /// One retention batch: deletes at most `limit` finished deliveries whose last attempt
    /// became due more than `retention_ms` ago (database clock), then at most `limit` events
    /// older than that which no delivery needs any more. Pending and dead deliveries, and the
    /// events they belong to, stay. Claiming only ever looks at pending deliveries, so the
    /// per-wallet order of what remains is unchanged.
    pub async fn prune_webhook_history(&self, retention_ms: i64, limit: i64) -> Result<Pruned> {
        let cutoff = sqlx::query(&format!(
            "SELECT {} - $1 AS cutoff",
            db_now_ms(self.backend)
        ))
        .bind(retention_ms)
        .fetch_one(&self.pool)
        .await?
        .try_get::<i64, _>("cutoff")?;
        // Deliveries first: their events become prunable in the same pass.
        let mut deleted = [0u64; 2];
        for (rows, statement) in deleted.iter_mut().zip([&PRUNE_DELIVERIES, &PRUNE_EVENTS]) {
            *rows = self
                .write_statement(
                    sqlx::query(for_backend(statement, self.backend))
                        .bind(cutoff)
                        .bind(limit),
                )
                .await?;
        }
        let [deliveries, events] = deleted;
        Ok(Pruned { deliveries, events })
    }

    /// Pending deliveries and the oldest one's age (database clock).
    pub async fn webhook_backlog(&self) -> Result<Backlog> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS pending, COALESCE({} - MIN(created_at_ms), 0) AS oldest \
             FROM webhook_deliveries WHERE state = 'PENDING'",
            db_now_ms(self.backend)
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            pending: row.try_get::<i64, _>("pending")?,
            oldest_age_ms: row.try_get::<i64, _>("oldest")?,
        })
    }
}

async fn claim_on(
    conn: &mut AnyConnection,
    backend: Backend,
    owner: &str,
    limit: i64,
    lease: i64,
    per_endpoint: i64,
) -> Result<Vec<ClaimedDelivery>> {
    let now = db_now_ms(backend);
    // Only the head of each (endpoint, wallet) queue can go: the heads are found first (one
    // pass over the pending rows, materialized so the planner cannot fold it back), then each
    // head is looked up by the ordering index and filtered by due time and lease. The earlier
    // shape (every due pending row, minus those with an earlier pending row of their queue)
    // walked every row queued behind a head in flight, and Postgres, misjudging a burst's
    // backlog as a handful of rows, planned it so that each claim took seconds while payments
    // ran (docs/BENCHMARKS.md). On Postgres the per-head lookup is a LATERAL subquery with
    // `LIMIT 1`, which the planner must run once per head through the index whatever it
    // estimates (2.7 s → 26 ms for 24,000 pending rows over 600 wallets, measured with
    // EXPLAIN ANALYZE). No row is locked here: each candidate is taken below by a conditional
    // update that skips a row another replica holds.
    let heads = "WITH heads AS MATERIALIZED (\
           SELECT endpoint_id, wallet_id, MIN(wallet_sequence) AS wallet_sequence \
           FROM webhook_deliveries WHERE state = 'PENDING' GROUP BY endpoint_id, wallet_id)";
    let due = format!(
        "d.state = 'PENDING' AND d.due_at_ms <= {now} \
         AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= {now})"
    );
    let candidates_sql = match backend {
        Backend::Postgres => format!(
            "{heads} SELECT d.id AS id, d.endpoint_id AS endpoint_id FROM heads h \
             CROSS JOIN LATERAL (SELECT d.id, d.endpoint_id, d.due_at_ms \
               FROM webhook_deliveries d WHERE d.endpoint_id = h.endpoint_id \
               AND d.wallet_id = h.wallet_id AND d.wallet_sequence = h.wallet_sequence \
               AND {due} LIMIT 1) d \
             ORDER BY d.due_at_ms, d.id LIMIT $1"
        ),
        Backend::Sqlite => format!(
            "{heads} SELECT d.id AS id, d.endpoint_id AS endpoint_id FROM heads h \
             JOIN webhook_deliveries d ON d.endpoint_id = h.endpoint_id \
               AND d.wallet_id = h.wallet_id AND d.wallet_sequence = h.wallet_sequence \
             WHERE {due} ORDER BY d.due_at_ms, d.id LIMIT $1"
        ),
    };
    let lock = skip_locked(backend);
    let candidates = sqlx::query(&candidates_sql)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let in_flight_rows = sqlx::query(&format!(
        "SELECT endpoint_id, COUNT(*) AS n FROM webhook_deliveries \
         WHERE state = 'PENDING' AND lease_until_ms > {now} GROUP BY endpoint_id"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let mut in_flight = std::collections::HashMap::new();
    for row in &in_flight_rows {
        in_flight.insert(text(row, "endpoint_id")?, row.try_get::<i64, _>("n")?);
    }
    let mut claimed = Vec::new();
    for row in &candidates {
        let id = row.try_get::<i64, _>("id")?;
        let endpoint = text(row, "endpoint_id")?;
        let busy = in_flight.entry(endpoint).or_insert(0);
        if *busy >= per_endpoint {
            continue;
        }
        let taken = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_until_ms = {now} + $2 \
             WHERE id = (SELECT d.id FROM webhook_deliveries d WHERE d.id = $3 AND {due}{lock}) \
               AND state = 'PENDING' AND (lease_until_ms IS NULL OR lease_until_ms <= {now})"
        ))
        .bind(owner)
        .bind(lease)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if taken == 1 {
            *busy += 1;
            claimed.push(id);
        }
    }
    let mut out = Vec::with_capacity(claimed.len());
    for id in claimed {
        let row = sqlx::query(&format!(
            "SELECT d.id AS id, d.attempts AS attempts, {now} - d.created_at_ms AS age_ms, \
               d.endpoint_id AS endpoint_id, w.url AS url, w.secret AS secret, \
               CASE WHEN w.previous_secret_until_ms > {now} THEN w.previous_secret ELSE NULL END \
                 AS previous_secret, \
               o.id AS event_row, o.event_type AS event_type, o.payload AS payload, \
               o.occurred_at AS occurred_at, o.wallet_id AS wallet_id, \
               o.wallet_sequence AS wallet_sequence \
             FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             JOIN outbox_events o ON o.id = d.event_id WHERE d.id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        let mut secrets = vec![WebhookSecret::parse(&text(&row, "secret")?)?];
        if let Some(previous) = optional_text(&row, "previous_secret")? {
            secrets.push(WebhookSecret::parse(&previous)?);
        }
        out.push(ClaimedDelivery {
            id,
            attempts: i64::from(row.try_get::<i32, _>("attempts")?),
            age_ms: row.try_get::<i64, _>("age_ms")?,
            endpoint_id: text(&row, "endpoint_id")?,
            url: text(&row, "url")?,
            secrets,
            event_row: row.try_get::<i64, _>("event_row")?,
            event_type: text(&row, "event_type")?,
            payload: text(&row, "payload")?,
            occurred_at: text(&row, "occurred_at")?,
            wallet_id: text(&row, "wallet_id")?,
            wallet_sequence: row.try_get::<i64, _>("wallet_sequence")?,
        });
    }
    Ok(out)
}
