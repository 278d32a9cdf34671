//! Migrations, embedded in the binary from `migrations/sqlite/` and `migrations/postgres/` (one
//! file per version in each dialect, same version numbers). sqlx records applied versions and
//! their checksums in `_sqlx_migrations`, so an edited migration is refused rather than skipped.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::Backend;

/// One schema version in both dialects.
struct EmbeddedMigration {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// Every migration, oldest first. A unit test checks this list against the files on disk.
const MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "initial",
        sqlite: include_str!("../../../migrations/sqlite/0001_initial.sql"),
        postgres: include_str!("../../../migrations/postgres/0001_initial.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "payments",
        sqlite: include_str!("../../../migrations/sqlite/0002_payments.sql"),
        postgres: include_str!("../../../migrations/postgres/0002_payments.sql"),
    },
    EmbeddedMigration {
        version: 3,
        description: "payment_history_triggers",
        sqlite: include_str!("../../../migrations/sqlite/0003_payment_history_triggers.sql"),
        postgres: include_str!("../../../migrations/postgres/0003_payment_history_triggers.sql"),
    },
    EmbeddedMigration {
        version: 4,
        description: "fencing_and_attention",
        sqlite: include_str!("../../../migrations/sqlite/0004_fencing_and_attention.sql"),
        postgres: include_str!("../../../migrations/postgres/0004_fencing_and_attention.sql"),
    },
    EmbeddedMigration {
        version: 5,
        description: "due_by_database_clock",
        sqlite: include_str!("../../../migrations/sqlite/0005_due_by_database_clock.sql"),
        postgres: include_str!("../../../migrations/postgres/0005_due_by_database_clock.sql"),
    },
    EmbeddedMigration {
        version: 6,
        description: "event_outbox_and_webhooks",
        sqlite: include_str!("../../../migrations/sqlite/0006_event_outbox_and_webhooks.sql"),
        postgres: include_str!("../../../migrations/postgres/0006_event_outbox_and_webhooks.sql"),
    },
    EmbeddedMigration {
        version: 7,
        description: "deposits",
        sqlite: include_str!("../../../migrations/sqlite/0007_deposits.sql"),
        postgres: include_str!("../../../migrations/postgres/0007_deposits.sql"),
    },
    EmbeddedMigration {
        version: 8,
        description: "muxed_deposits_and_wallet_history",
        sqlite: include_str!(
            "../../../migrations/sqlite/0008_muxed_deposits_and_wallet_history.sql"
        ),
        postgres: include_str!(
            "../../../migrations/postgres/0008_muxed_deposits_and_wallet_history.sql"
        ),
    },
    EmbeddedMigration {
        version: 9,
        description: "wallet_idempotency_keys",
        sqlite: include_str!("../../../migrations/sqlite/0009_wallet_idempotency_keys.sql"),
        postgres: include_str!("../../../migrations/postgres/0009_wallet_idempotency_keys.sql"),
    },
    EmbeddedMigration {
        version: 10,
        description: "webhook_retention",
        sqlite: include_str!("../../../migrations/sqlite/0010_webhook_retention.sql"),
        postgres: include_str!("../../../migrations/postgres/0010_webhook_retention.sql"),
    },
];

/// The migrator for one database.
pub fn migrator(backend: Backend) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|m| {
            let sql = match backend {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            Migration::new(
                m.version,
                Cow::Borrowed(m.description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dialect: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../migrations")
            .join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_migration_file_is_embedded_in_both_dialects() {
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.description))
            .collect();
        assert_eq!(files("sqlite"), listed, "migrations/sqlite");
        assert_eq!(files("postgres"), listed, "migrations/postgres");
    }

    #[test]
    fn versions_increase() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(migrator(Backend::Sqlite).migrations.len(), MIGRATIONS.len());
    }
}
