//! The [`AuditLog`]: opens the log at start (verifying it, cutting a torn tail, comparing it with
//! the anchor kept in the backend, rebuilding the sequence guard from it), owns the writer, and
//! writes signed checkpoints on a timer, every N records, at start and, marked final, at
//! shutdown; each checkpoint, once durable, becomes the new anchor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use serde::Deserialize;
use tokio::sync::watch;

use super::anchor::{self, AnchorCheck, AuditAnchor, LogFound};
use super::checkpoint::{self, Claim};
use super::reader::{self, WalkOptions};
use super::record::{self, CheckpointRecord, Decision, EventRecord, GapRecord};
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
    /// Where the last checkpoint is anchored outside the directory.
    #[serde(default)]
    pub anchor: AnchorMode,
    /// Set by `signerd serve --accept-audit-gap`, never by the file: start even though the log
    /// is behind its anchor, recording a `gap`.
    #[serde(skip)]
    pub accept_gap: bool,
}

/// `audit.anchor`.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AnchorMode {
    /// In the backend holding the audit key (a PKCS#11 data object beside it, or labels of
    /// the Cloud KMS CryptoKey). A log behind its anchor stops signerd at start.
    #[default]
    Backend,
    /// No anchor (an explicit opt-out): deleting or cutting the log back to an earlier final
    /// checkpoint goes unnoticed at start.
    None,
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
    /// Each durable checkpoint is stored as the backend's anchor.
    anchored: bool,
    /// Counts anchor updates that failed (`signerd_audit_anchor_failures_total`).
    metrics: Arc<Metrics>,
    dir: PathBuf,
    /// Saved with a checkpoint at start, at shutdown and at most every `every` in between.
    guard: Arc<Mutex<SequenceGuard>>,
    snapshots: Mutex<Snapshots>,
}

/// The guard snapshots this process keeps.
struct Snapshots {
    /// When the last one was saved.
    last: Option<Instant>,
    /// The checkpoint seqs of the snapshots kept (the newest two); every other file is removed.
    kept: Vec<u64>,
}

/// A trusted place to start reading: a checkpoint with its guard snapshot.
struct Resume {
    located: reader::Located,
    checkpoint: reader::CheckpointSeen,
    snapshot: Vec<u8>,
}

impl AuditLog {
    /// Opens the log: gets (or creates) the audit key, verifies every file, cuts a torn final
    /// line, compares the log with the anchor, feeds every signature on record to `guard`,
    /// starts the writer, and writes a start checkpoint. A log that fails verification, or is
    /// behind its anchor (unless `accept_gap`), stops signerd from starting.
    pub async fn open(
        config: &AuditConfig,
        keyring: &Keyring,
        guard: Arc<Mutex<SequenceGuard>>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>> {
        let key_id = KeyId::parse(&config.key_id)?;
        let anchored = config.anchor == AnchorMode::Backend;
        let (key_info, backend, anchor) = audit_key(keyring, &key_id, anchored).await?;

        let dir_error = |e| Error::io(format!("audit.dir {}", config.dir.display()), e);
        std::fs::create_dir_all(&config.dir).map_err(dir_error)?;
        only_regular_files(&config.dir).map_err(dir_error)?;
        remove_unfinished_snapshots(&config.dir).map_err(dir_error)?;
        let files = reader::log_files(&config.dir).map_err(dir_error)?;
        let options = WalkOptions {
            audit_key: Some(key_info.public_key.0),
            repair_torn_tail: true,
            stop_after: None,
        };
        let now = record::now_unix();
        // Start from the newest guard snapshot at or before the anchor whose checkpoint checks
        // out, and read only what follows it; older history is verified in the background.
        let bound = match anchor {
            Some(anchor) if anchor.seq == 0 => None,
            Some(anchor) => Some(anchor.seq),
            None => Some(u64::MAX),
        };
        let resume = match bound {
            Some(bound) => trusted_snapshot(&config.dir, &files, bound, key_info.public_key.0)
                .map_err(dir_error)?,
            None => None,
        };
        let (summary, hash_at_anchor) = {
            let mut start = reader::StartPoint::beginning();
            let mut restoring = guard.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(resume) = &resume {
                let held = restoring
                    .restore_snapshot(&resume.snapshot, now)
                    .map_err(|e| Error::Config(format!("audit.dir: {e}")))?;
                tracing::info!(
                    checkpoint = resume.checkpoint.seq,
                    entries = held,
                    "sequence guard restored from the snapshot of a signed checkpoint"
                );
                start = resume.located.start_after(resume.checkpoint.clone());
            } else if !files.is_empty() {
                tracing::warn!("no usable guard snapshot: reading the whole audit log");
            }
            let anchor_seq = anchor.map_or(0, |a| a.seq);
            let mut hash_at_anchor = (anchor_seq == start.head_seq).then_some(start.head_hash);
            let summary = reader::walk_from(&files, &start, &options, |line, view| {
                if line.seq == anchor_seq {
                    hash_at_anchor = Some(line.hash);
                }
                restore_guard(&mut restoring, view, now)
            })
            .map_err(|e| {
                Error::Config(format!(
                    "audit log fails verification, refusing to start: {e} (run `signerd audit verify`)"
                ))
            })?;
            tracing::info!(
                read_from = summary.started_after + 1,
                records = summary.records,
                files = summary.files,
                guard_entries = restoring.len(),
                "audit log verified"
            );
            (summary, hash_at_anchor)
        };
        let found = LogFound {
            head_seq: summary.head_seq,
            hash_at_anchor,
            files: summary.files,
        };
        let gap = match anchored.then(|| anchor::compare(anchor, &found)) {
            None | Some(AnchorCheck::Holds) => None,
            Some(AnchorCheck::NotAnchoredYet) => {
                tracing::warn!(
                    head_seq = summary.head_seq,
                    "the backend holds no audit anchor yet (a log from before anchors): anchoring it now"
                );
                None
            }
            Some(AnchorCheck::Missing(why)) if config.accept_gap => {
                tracing::warn!(%why, "audit log behind its anchor: gap accepted by --accept-audit-gap");
                Some((anchor.unwrap_or(AuditAnchor::EMPTY), why))
            }
            Some(AnchorCheck::Missing(why)) => {
                return Err(Error::Config(format!(
                    "audit log is behind its anchor, refusing to start: {why}. Restore the \
                     missing files; or, if the loss is known and accepted, start once with \
                     `signerd serve --accept-audit-gap`, which records a `gap` (and the sequence \
                     guard forgets what the missing records held)"
                )));
            }
        };

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
            metrics.clone(),
        )?;
        let log = Arc::new(AuditLog {
            writer,
            key_id,
            key: key_info.public_key,
            backend,
            every: Duration::from_secs(config.checkpoint_every_secs),
            checkpointing: tokio::sync::Mutex::new(()),
            anchored,
            metrics,
            dir: config.dir.clone(),
            guard,
            snapshots: Mutex::new(Snapshots {
                last: None,
                kept: resume.iter().map(|r| r.checkpoint.seq).collect(),
            }),
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
        if let Some((anchor, why)) = gap {
            let record = GapRecord {
                kind: "gap",
                time: record::now_rfc3339(),
                anchored_seq: anchor.seq,
                anchored_hash: hex::encode(anchor.hash),
                found_seq: summary.head_seq,
                found_hash: hex::encode(summary.head_hash),
                message: format!("accepted by --accept-audit-gap: {why}"),
            };
            log.writer.append(record::members(&record)).await?;
        }
        log.event(
            "start",
            format!("signerd {} started", env!("CARGO_PKG_VERSION")),
        )
        .await?;
        log.checkpoint(false).await?;
        if let Some(resume) = resume {
            log.verify_history(files, resume.located.file_index, resume.checkpoint);
        }
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

    /// Holds the writer, signs a version-2 checkpoint over its head with the audit key, appends
    /// it as the very next record and, once it is durable, stores it as the anchor.
    pub async fn checkpoint(&self, is_final: bool) -> Result<Appended> {
        let _one_at_a_time = self.checkpointing.lock().await;
        let held = self.writer.hold().await?;
        let head = held.head();
        // Taken while the writer is held: every signature at or before `head` is in it (the
        // guard reserves before the record is written), and perhaps a few reserved for records
        // still queued, which only makes the restored guard stricter.
        let snapshot = self.snapshot_due(is_final).then(|| {
            self.guard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .snapshot()
        });
        let claim = Claim {
            seq: head.seq + 1,
            covers_seq: head.seq,
            covers_hash: head.hash,
            is_final,
            time_ms: record::now_unix_ms(),
            guard_digest: snapshot
                .as_ref()
                .map_or([0; 32], |bytes| Sha256::digest(bytes).into()),
        };
        // On failure the hold is dropped and the writer goes on without a checkpoint.
        let signature = self.backend.sign(&self.key_id, &claim.message()).await?;
        let record = CheckpointRecord {
            kind: "checkpoint".into(),
            version: checkpoint::CURRENT_VERSION,
            time: record::rfc3339_of_ms(claim.time_ms),
            time_ms: claim.time_ms,
            covers_seq: claim.covers_seq,
            covers_hash: hex::encode(claim.covers_hash),
            guard_digest: hex::encode(claim.guard_digest),
            audit_key: self.key.account_id(),
            signature: hex::encode(signature),
            is_final,
        };
        let appended = held.append(record::members(&record)).await?;
        if let Some(bytes) = snapshot {
            // Durable before the anchor names this checkpoint: start-up trusts the pair.
            self.save_snapshot(appended.seq, bytes).await?;
        }
        if self.anchored {
            // Only now: the anchor never points past what is durable, so a crash leaves the
            // log ahead of its anchor (normal), never behind it (tampering).
            let anchor = AuditAnchor {
                seq: appended.seq,
                hash: appended.hash,
            };
            // A failed update (a KMS quota hit, an outage) only leaves the anchor at an older
            // checkpoint, which the log still holds: logged, counted, and retried with the next
            // checkpoint. Failing the checkpoint for it would not make the log any safer.
            if let Err(e) = self.backend.store_audit_anchor(&self.key_id, &anchor).await {
                self.metrics.audit_anchor_failures.inc();
                tracing::error!(error = %e, seq = anchor.seq, "audit anchor not updated; retried at the next checkpoint");
            }
        }
        Ok(appended)
    }

    fn snapshot_due(&self, is_final: bool) -> bool {
        let snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        is_final
            || snapshots
                .last
                .is_none_or(|last| last.elapsed() >= self.every)
    }

    /// Writes `guard-<seq>.bin` atomically (temp file, fsync, rename, directory fsync) and
    /// removes every other snapshot but the previous one.
    async fn save_snapshot(&self, seq: u64, bytes: Vec<u8>) -> Result<()> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_atomically(&dir, &snapshot_name(seq), &bytes))
            .await
            .map_err(|e| Error::Backend(format!("guard snapshot task: {e}")))?
            .map_err(|e| Error::io(format!("writing guard snapshot {}", snapshot_name(seq)), e))?;
        let kept = {
            let mut snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
            snapshots.last = Some(Instant::now());
            snapshots.kept.push(seq);
            let excess = snapshots.kept.len().saturating_sub(2);
            snapshots.kept.drain(..excess);
            snapshots.kept.clone()
        };
        for (old, _) in snapshot_files(&self.dir).unwrap_or_default() {
            if !kept.contains(&old) {
                let _ = std::fs::remove_file(self.dir.join(snapshot_name(old)));
            }
        }
        Ok(())
    }

    /// Verifies the history before the checkpoint start-up trusted (records `1..=trusted.seq`,
    /// every hash, link and signature) on a thread of its own. If it fails, the log is marked
    /// failed: signing stops (`UNAVAILABLE`) and health turns `NOT_SERVING`, as a log failing
    /// verification at start would have stopped signerd.
    fn verify_history(
        self: &Arc<Self>,
        mut files: Vec<PathBuf>,
        last_file: usize,
        trusted: reader::CheckpointSeen,
    ) {
        files.truncate(last_file + 1);
        let log = Arc::downgrade(self);
        let options = WalkOptions {
            audit_key: Some(self.key.0),
            repair_torn_tail: false,
            stop_after: Some(trusted.seq),
        };
        let spawned = std::thread::Builder::new()
            .name("audit-history".into())
            .spawn(move || {
                let started = Instant::now();
                let outcome = reader::walk(&files, &options, |_, _| {})
                    .map_err(|e| e.to_string())
                    .and_then(|summary| {
                        if (summary.head_seq, summary.head_hash) == (trusted.seq, trusted.hash) {
                            Ok(summary)
                        } else {
                            Err(format!(
                                "the history ends at seq {} instead of reaching checkpoint {}",
                                summary.head_seq, trusted.seq
                            ))
                        }
                    });
                match outcome {
                    Ok(summary) => tracing::info!(
                        records = summary.records,
                        checkpoints = summary.checkpoints,
                        seconds = started.elapsed().as_secs_f64(),
                        "audit history before the start checkpoint verified"
                    ),
                    Err(why) => {
                        tracing::error!(
                            %why,
                            "audit history fails verification: refusing to sign until restarted"
                        );
                        if let Some(log) = log.upgrade() {
                            log.writer.fail();
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the audit history check");
            self.writer.fail();
        }
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

/// The audit key, the backend holding it and (when `anchored`) its anchor. A new audit key gets
/// the empty anchor first, so that "the key exists but has no anchor" only ever means a log from
/// before anchors, never a crash between creating the key and anchoring.
async fn audit_key(
    keyring: &Keyring,
    key_id: &KeyId,
    anchored: bool,
) -> Result<(
    crate::keys::KeyInfo,
    Arc<dyn KeyBackend>,
    Option<AuditAnchor>,
)> {
    let existing = match keyring.find(key_id).await {
        Ok((info, backend)) => Some((info, backend.clone())),
        Err(Error::KeyNotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let unsupported = |backend: &Arc<dyn KeyBackend>| {
        Error::Config(format!(
            "audit.anchor: the audit key {key_id} is in the {} backend, which cannot keep the \
             anchor; set audit.anchor = \"none\" (see the README's audit section)",
            backend.name()
        ))
    };
    if let Some((info, backend)) = existing {
        if !anchored {
            return Ok((info, backend, None));
        }
        if !backend.holds_audit_anchor() {
            return Err(unsupported(&backend));
        }
        let anchor = backend.audit_anchor(key_id).await?;
        return Ok((info, backend, anchor));
    }
    let target = keyring.default_backend();
    if anchored {
        if !target.holds_audit_anchor() {
            return Err(unsupported(target));
        }
        target
            .store_audit_anchor(key_id, &AuditAnchor::EMPTY)
            .await?;
    }
    let (info, _) = keyring.create_key(key_id, None).await?;
    tracing::info!(key_id = %key_id, public_key = %info.public_key.account_id(), "audit key created");
    Ok((info, target.clone(), anchored.then_some(AuditAnchor::EMPTY)))
}

/// `guard-00000000000000000042.bin` for the checkpoint at seq 42.
fn snapshot_name(seq: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{seq:020}{SNAPSHOT_SUFFIX}")
}

const SNAPSHOT_PREFIX: &str = "guard-";
const SNAPSHOT_SUFFIX: &str = ".bin";

/// The guard snapshots in `dir`, newest (highest checkpoint seq) first.
fn snapshot_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let seq: Option<u64> = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.strip_prefix(SNAPSHOT_PREFIX)?
                    .strip_suffix(SNAPSHOT_SUFFIX)
            })
            .and_then(|n| n.parse().ok());
        if let Some(seq) = seq {
            found.push((seq, path));
        }
    }
    found.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    Ok(found)
}

/// The newest guard snapshot at or before checkpoint `bound` whose checkpoint is in the log,
/// is a version-2 checkpoint signed by the audit key, and signs the snapshot's SHA-256. A
/// snapshot that does not check out is passed over (an older one, or the whole log, is read
/// instead), with a warning.
fn trusted_snapshot(
    dir: &Path,
    files: &[PathBuf],
    bound: u64,
    audit_key: [u8; 32],
) -> std::io::Result<Option<Resume>> {
    for (seq, path) in snapshot_files(dir)? {
        if seq > bound {
            continue;
        }
        let Some(located) = reader::locate(files, seq)? else {
            tracing::warn!(
                seq,
                "guard snapshot for a checkpoint the log does not hold; ignored"
            );
            continue;
        };
        let checkpoint = match reader::check_trusted_checkpoint(&located.line, audit_key) {
            Ok(checkpoint) => checkpoint,
            Err(why) => {
                tracing::warn!(seq, %why, "guard snapshot beside a bad checkpoint; ignored");
                continue;
            }
        };
        let snapshot = std::fs::read(&path)?;
        let digest: [u8; 32] = Sha256::digest(&snapshot).into();
        if digest != checkpoint.guard_digest {
            tracing::warn!(
                seq,
                "guard snapshot does not match its signed digest; ignored"
            );
            continue;
        }
        return Ok(Some(Resume {
            located,
            checkpoint,
            snapshot,
        }));
    }
    Ok(None)
}

/// Writes `name` in `dir` so that a crash leaves the old file or the whole new one: a temp
/// file, fsync, rename, directory fsync.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(format!("{name}.tmp"));
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes snapshot temp files a crash left behind (never renamed, so never trusted).
fn remove_unfinished_snapshots(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(SNAPSHOT_PREFIX) && name.ends_with(".tmp") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Refuses a symlink or any non-regular file in the audit directory: signerd must append to,
/// and verify, only files that are really there.
fn only_regular_files(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        reader::regular_file(&entry?.path())?;
    }
    Ok(())
}

/// Feeds one record read at start to the guard: every `signed` SignTransaction decision that
/// reserved sequence numbers (the key was the transaction source), on its network.
fn restore_guard(guard: &mut SequenceGuard, view: &record::RecordView, now: u64) {
    if view.kind != "decision" || view.decision != Some(Decision::Signed) {
        return;
    }
    if view.rpc.as_deref() == Some("SignAuthEntry") {
        restore_nonce(guard, view);
        return;
    }
    if view.rpc.as_deref() != Some("SignTransaction") {
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

/// Feeds a `signed` SignAuthEntry record to the nonce guard. Entries already expired are
/// dropped at the first check on their network, when its current ledger is known.
fn restore_nonce(guard: &mut SequenceGuard, view: &record::RecordView) {
    let parsed = (|| {
        let network = NetworkPassphrase::parse(view.network.as_deref()?).ok()?;
        let soroban = view.soroban.as_ref()?.first()?;
        let slot = crate::soroban::nonce_guard::NonceSlot {
            network: network.network_id(),
            address: soroban.address.clone(),
            nonce: soroban.nonce.as_deref()?.parse().ok()?,
        };
        let invocation = super::chain::decode_hash(soroban.invocation_hash.as_deref()?)?;
        Some((slot, invocation, soroban.expiration_ledger?))
    })();
    if let Some((slot, invocation, expiration)) = parsed {
        let identity = view.identity.as_deref().unwrap_or_default();
        guard.nonces.restore(slot, invocation, expiration, identity);
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

    #[test]
    fn signed_auth_entries_restore_the_nonce_guard() {
        use crate::soroban::SorobanRecord;
        use crate::soroban::nonce_guard::{NonceDecision, NonceSlot};
        let mut guard = SequenceGuard::new(GuardLimits {
            max_entries: 10,
            max_entries_per_identity: 10,
        });
        let address = PublicKey([4; 32]).account_id();
        let record = |decision, invocation: [u8; 32]| record::RecordView {
            kind: "decision".into(),
            rpc: Some("SignAuthEntry".into()),
            decision: Some(decision),
            identity: Some("gateway".into()),
            network: Some(TESTNET.into()),
            soroban: Some(vec![SorobanRecord {
                credentials: "address".into(),
                address: address.clone(),
                nonce: Some("77".into()),
                expiration_ledger: Some(500),
                invocation_hash: Some(hex::encode(invocation)),
                ..SorobanRecord::default()
            }]),
            ..Default::default()
        };
        // A denial holds nothing; a signature holds the nonce.
        restore_guard(&mut guard, &record(Decision::Denied, [1; 32]), 1_000);
        assert!(guard.nonces.is_empty());
        restore_guard(&mut guard, &record(Decision::Signed, [2; 32]), 1_000);
        let slot = NonceSlot {
            network: NetworkPassphrase::parse(TESTNET)
                .unwrap_or_else(|e| panic!("{e}"))
                .network_id(),
            address,
            nonce: 77,
        };
        assert_eq!(
            guard
                .nonces
                .check_and_reserve(slot, [3; 32], 500, 400, "gateway"),
            NonceDecision::Conflict { signed: [2; 32] }
        );
        assert!(
            guard.is_empty(),
            "a SignAuthEntry record reserved sequences"
        );
        assert_eq!(guard.nonces.held_by("gateway"), 1);
    }
}
