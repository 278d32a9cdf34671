//! The [`AuditLog`]: opens the log at start (verifying it, cutting a torn tail, rebuilding the
//! sequence guard from it), owns the writer, and writes signed checkpoints on a timer, every N
//! records, at start and, marked final, at shutdown.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::checkpoint;
use super::reader::{self, WalkOptions};
use super::record::{self, CheckpointRecord, Decision, EventRecord};
use super::writer::{Appended, AuditWriter, WriterSettings};
use crate::backend::{KeyBackend, Keyring};
use crate::error::{Error, Result};
use crate::guard::{SequenceClaim, SequenceGuard};
use crate::keys::{KeyId, PublicKey};
use crate::metrics::Metrics;
use crate::stellar::NetworkPassphrase;

/// `[audit]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of the log files (relative paths follow the config file).
    pub dir: PathBuf,
    /// Rotate to a new file once the current one reaches this size.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Id of the dedicated audit key (created in the default backend at first start). No caller
    /// may use this key.
    #[serde(default = "default_key_id")]
    pub key_id: String,
    /// Write a checkpoint after this many records...
    #[serde(default = "default_every_records")]
    pub checkpoint_every_records: u64,
    /// ...or after this many seconds, whichever comes first (also when idle, as a heartbeat).
    #[serde(default = "default_every_secs")]
    pub checkpoint_every_secs: u64,
    /// Sequence-guard entries held at most (unexpired, over every identity); beyond it new
    /// reservations are refused, never evicted. See also `policy.guard_max_entries_per_identity`.
    #[serde(default = "default_guard_max_entries")]
    pub guard_max_entries: usize,
}

fn default_rotate_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_key_id() -> String {
    "signerd-audit".to_owned()
}
fn default_every_records() -> u64 {
    1000
}
fn default_every_secs() -> u64 {
    60
}
fn default_guard_max_entries() -> usize {
    1_000_000
}

impl AuditConfig {
    /// Checks the section; errors name the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.rotate_bytes < 4096 {
            return Err("audit.rotate_bytes: must be at least 4096".into());
        }
        KeyId::parse(&self.key_id).map_err(|e| format!("audit.key_id: {e}"))?;
        if self.checkpoint_every_records == 0 {
            return Err("audit.checkpoint_every_records: must be positive".into());
        }
        if self.checkpoint_every_secs == 0 {
            return Err("audit.checkpoint_every_secs: must be positive".into());
        }
        if self.guard_max_entries == 0 {
            return Err("audit.guard_max_entries: must be positive".into());
        }
        Ok(())
    }
}

/// The open audit log.
pub struct AuditLog {
    /// The writer every request goes through.
    pub writer: AuditWriter,
    key_id: KeyId,
    key: PublicKey,
    backend: Arc<dyn KeyBackend>,
    every: Duration,
    /// Serialises checkpoints (timer, record count, shutdown).
    checkpointing: tokio::sync::Mutex<()>,
    last_covered: Mutex<u64>,
}

impl AuditLog {
    /// Opens the log: gets (or creates) the audit key, verifies every file, cuts a torn final
    /// line, feeds every signature on record to `guard`, starts the writer, and writes a start
    /// checkpoint. A log that fails verification stops signerd from starting.
    pub async fn open(
        config: &AuditConfig,
        keyring: &Keyring,
        guard: &mut SequenceGuard,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>> {
        let key_id = KeyId::parse(&config.key_id)?;
        let (key_info, _) = keyring.create_key(&key_id, None).await?;
        let (_, backend) = keyring.find(&key_id).await?;
        let backend = backend.clone();

        std::fs::create_dir_all(&config.dir)
            .map_err(|e| Error::io(format!("audit.dir {}", config.dir.display()), e))?;
        let files = reader::log_files(&config.dir)
            .map_err(|e| Error::io(format!("audit.dir {}", config.dir.display()), e))?;
        let options = WalkOptions {
            audit_key: Some(key_info.public_key.0),
            repair_torn_tail: true,
        };
        let now = record::now_unix();
        let summary = reader::walk(&files, &options, |_, view| restore_guard(guard, view, now))
            .map_err(|e| {
                Error::Config(format!(
                    "audit log fails verification, refusing to start: {e} (run `signerd audit verify`)"
                ))
            })?;
        tracing::info!(
            records = summary.records,
            files = summary.files,
            guard_entries = guard.len(),
            "audit log verified"
        );

        let writer = AuditWriter::start(
            WriterSettings {
                dir: config.dir.clone(),
                rotate_bytes: config.rotate_bytes,
                checkpoint_every: config.checkpoint_every_records,
            },
            Appended {
                seq: summary.head_seq,
                hash: summary.head_hash,
            },
            metrics,
        )?;
        let log = Arc::new(AuditLog {
            writer,
            key_id,
            key: key_info.public_key,
            backend,
            every: Duration::from_secs(config.checkpoint_every_secs),
            checkpointing: tokio::sync::Mutex::new(()),
            last_covered: Mutex::new(summary.covered_seq),
        });
        if summary.repaired_bytes > 0 {
            tracing::warn!(
                bytes = summary.repaired_bytes,
                "cut a torn final audit record (crash mid-write)"
            );
            log.event(
                "recovery",
                format!(
                    "cut {} bytes of a torn final record after seq {} (crash before fsync; never acknowledged)",
                    summary.repaired_bytes, summary.head_seq
                ),
            )
            .await?;
        }
        log.event(
            "start",
            format!("signerd {} started", env!("CARGO_PKG_VERSION")),
        )
        .await?;
        log.checkpoint(false).await?;
        Ok(log)
    }

    /// The reserved audit key id.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The audit public key.
    pub fn public_key(&self) -> PublicKey {
        self.key
    }

    async fn event(&self, kind: &'static str, message: String) -> Result<Appended> {
        let record = EventRecord {
            kind,
            time: record::now_rfc3339(),
            message,
        };
        self.writer.append(record::members(&record)).await
    }

    /// Signs the current head with the audit key and appends the checkpoint record.
    pub async fn checkpoint(&self, is_final: bool) -> Result<Appended> {
        let _one_at_a_time = self.checkpointing.lock().await;
        let head = self.writer.head();
        let signature = self
            .backend
            .sign(&self.key_id, &checkpoint::message(head.seq, &head.hash))
            .await?;
        let record = CheckpointRecord {
            kind: "checkpoint".into(),
            time: record::now_rfc3339(),
            covers_seq: head.seq,
            covers_hash: hex::encode(head.hash),
            audit_key: self.key.account_id(),
            signature: hex::encode(signature),
            is_final,
        };
        let appended = self.writer.append(record::members(&record)).await?;
        *self.last_covered.lock().unwrap_or_else(|p| p.into_inner()) = head.seq;
        Ok(appended)
    }

    /// Writes checkpoints every `checkpoint_every_secs`, and whenever the writer reports
    /// `checkpoint_every_records` new records, until `stop` changes.
    pub fn spawn_checkpoints(
        self: &Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(log.every) => {}
                    _ = log.writer.checkpoint_due() => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = log.checkpoint(false).await {
                    tracing::error!(error = %e, "audit checkpoint failed");
                }
            }
        })
    }

    /// Writes the final checkpoint and closes the writer: the last thing signerd does.
    pub async fn close(&self) {
        if self.writer.healthy()
            && let Err(e) = self.checkpoint(true).await
        {
            tracing::error!(error = %e, "final audit checkpoint failed");
        }
        self.writer.close();
    }
}

/// Feeds one record read at start to the guard: every `signed` SignTransaction decision that
/// reserved sequence numbers (the key was the transaction source), on its network.
fn restore_guard(guard: &mut SequenceGuard, view: &record::RecordView, now: u64) {
    if view.kind != "decision"
        || view.decision != Some(Decision::Signed)
        || view.rpc.as_deref() != Some("SignTransaction")
    {
        return;
    }
    let parsed = (|| {
        let network = NetworkPassphrase::parse(view.network.as_deref()?).ok()?;
        let account =
            stellar_strkey::ed25519::PublicKey::from_string(view.source_account.as_deref()?)
                .ok()?;
        let (first, last) = match &view.reserved_sequences {
            Some(range) => (range.first.parse().ok()?, range.last.parse().ok()?),
            // Records from before reservations were recorded: only the source's own key
            // reserves, and then just its sequence.
            None if view.public_key.is_some() && view.public_key == view.source_account => {
                let sequence: i64 = view.sequence.as_deref()?.parse().ok()?;
                (sequence, sequence)
            }
            None => return None,
        };
        let hash_hex = view.inner_tx_hash.as_deref().or(view.tx_hash.as_deref())?;
        let hash = super::chain::decode_hash(hash_hex)?;
        let claim = SequenceClaim {
            network: network.network_id(),
            account: PublicKey(account.0),
            first,
            last,
        };
        Some((claim, hash))
    })();
    if let Some((claim, hash)) = parsed {
        let identity = view.identity.as_deref().unwrap_or_default();
        guard.restore(claim, hash, view.max_time, identity, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::GuardLimits;

    const TESTNET: &str = "Test SDF Network ; September 2015";

    fn signed(key: [u8; 32], source: [u8; 32], network: &str) -> record::RecordView {
        record::RecordView {
            kind: "decision".into(),
            rpc: Some("SignTransaction".into()),
            decision: Some(Decision::Signed),
            identity: Some("gateway".into()),
            public_key: Some(PublicKey(key).account_id()),
            source_account: Some(PublicKey(source).account_id()),
            network: Some(network.into()),
            sequence: Some("100".into()),
            tx_hash: Some(hex::encode([5; 32])),
            max_time: Some(2_000),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_sources_own_signatures_are_restored_on_their_network() {
        let mut guard = SequenceGuard::new(GuardLimits {
            max_entries: 10,
            max_entries_per_identity: 10,
        });
        // Written before records named their reservation: a fee payer's signature over the
        // treasury's transaction, and the treasury's own.
        restore_guard(&mut guard, &signed([1; 32], [2; 32], TESTNET), 1_000);
        assert!(
            guard.is_empty(),
            "a fee payer's signature reserved the treasury's sequence"
        );
        restore_guard(&mut guard, &signed([2; 32], [2; 32], TESTNET), 1_000);
        // A record naming its reservation: a range.
        let mut ranged = signed(
            [3; 32],
            [3; 32],
            "Public Global Stellar Network ; September 2015",
        );
        ranged.reserved_sequences = Some(record::SequenceRange {
            first: "90".into(),
            last: "100".into(),
        });
        restore_guard(&mut guard, &ranged, 1_000);
        let entries: Vec<_> = guard.entries().collect();
        assert_eq!(entries.len(), 2, "{entries:?}");
        let testnet = NetworkPassphrase::parse(TESTNET)
            .unwrap_or_else(|e| panic!("{e}"))
            .network_id();
        assert!(entries.iter().any(|e| e.claim.account == PublicKey([2; 32])
            && e.claim.network == testnet
            && (e.claim.first, e.claim.last) == (100, 100)));
        assert!(entries.iter().any(|e| e.claim.account == PublicKey([3; 32])
            && e.claim.network != testnet
            && (e.claim.first, e.claim.last) == (90, 100)
            && e.identity == "gateway"));
    }
}
