//! Walking an audit log (one file or a directory of rotated files) and verifying it as it goes:
//! every line's own hash, the seq order, the `prev_hash` links (also across files), and every
//! checkpoint (its covered hash, and with the audit public key, its signature).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::chain::{self, GENESIS, SealedLine};
use super::checkpoint;
use super::record::RecordView;

/// The prefix and suffix of rotated log files: `audit-00000001.jsonl`, ...
pub const FILE_PREFIX: &str = "audit-";
/// See [`FILE_PREFIX`].
pub const FILE_SUFFIX: &str = ".jsonl";

/// How many recent record hashes are kept to check which record a checkpoint covers.
const RECENT_HASHES: usize = 200_000;

/// The log files under `path` in chain order: `path` itself if it is a file, else its
/// `audit-*.jsonl` files sorted by name.
pub fn log_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(FILE_PREFIX) && n.ends_with(FILE_SUFFIX))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// How to walk.
#[derive(Clone, Debug, Default)]
pub struct WalkOptions {
    /// The audit public key: when set, every checkpoint's signature is verified with it.
    pub audit_key: Option<[u8; 32]>,
    /// Truncate a torn final line of the last file (a crash mid-write) instead of failing.
    /// Only signerd itself does this, at start, before appending.
    pub repair_torn_tail: bool,
}

/// What a walk found.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Records read.
    pub records: u64,
    /// Files read.
    pub files: usize,
    /// The last record's seq (0 for an empty log).
    pub head_seq: u64,
    /// The last record's hash ([`GENESIS`] for an empty log).
    pub head_hash: [u8; 32],
    /// Checkpoints read.
    pub checkpoints: u64,
    /// The highest seq covered by a checkpoint.
    pub covered_seq: u64,
    /// Time of the last checkpoint.
    pub last_checkpoint_time: Option<String>,
    /// The last record is a final checkpoint (written at a clean shutdown).
    pub sealed: bool,
    /// Bytes of a torn final line that were cut off (only with `repair_torn_tail`).
    pub repaired_bytes: u64,
}

/// The first bad record, and why.
#[derive(Debug, thiserror::Error)]
#[error("{} line {line}{}: {reason}", file.display(), seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
pub struct VerifyError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number in that file.
    pub line: u64,
    /// The record's seq, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// Walks and verifies `files` in order, calling `visit` for every record that checks out.
pub fn walk(
    files: &[PathBuf],
    options: &WalkOptions,
    mut visit: impl FnMut(&SealedLine, &RecordView),
) -> Result<Summary, VerifyError> {
    let mut summary = Summary {
        head_hash: GENESIS,
        ..Summary::default()
    };
    let mut recent: VecDeque<(u64, [u8; 32])> = VecDeque::new();
    for (file_index, path) in files.iter().enumerate() {
        let is_last_file = file_index + 1 == files.len();
        let fail = |line: u64, seq: Option<u64>, reason: String| VerifyError {
            file: path.clone(),
            line,
            seq,
            reason,
        };
        let file = File::open(path).map_err(|e| fail(0, None, format!("cannot open: {e}")))?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = BufReader::new(file);
        let mut offset = 0u64;
        let mut line_no = 0u64;
        let mut buf = Vec::new();
        summary.files += 1;
        loop {
            buf.clear();
            let read = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| fail(line_no + 1, None, format!("read error: {e}")))?;
            if read == 0 {
                break;
            }
            line_no += 1;
            let complete = buf.ends_with(b"\n");
            let is_final_line = offset + read as u64 == file_len;
            let text = std::str::from_utf8(&buf).map(|t| t.trim_end_matches('\n'));
            let checked = match text {
                Ok(text) => chain::check(text).map_err(|e| e.to_string()),
                Err(_) => Err("not utf-8".to_owned()),
            };
            let sealed = match checked {
                Ok(sealed) if complete => sealed,
                outcome if is_last_file && is_final_line && (!complete || outcome.is_err()) => {
                    // A torn write at the very end: the crash happened before the fsync that
                    // would have acknowledged it, so no signature depends on this record.
                    if options.repair_torn_tail && !complete {
                        truncate(path, offset).map_err(|e| {
                            fail(line_no, None, format!("cannot cut torn tail: {e}"))
                        })?;
                        summary.repaired_bytes = read as u64;
                        break;
                    }
                    let why = outcome.err().unwrap_or_else(|| "no newline".to_owned());
                    return Err(fail(line_no, None, format!("torn final record ({why})")));
                }
                Ok(_) => return Err(fail(line_no, None, "record without newline".to_owned())),
                Err(reason) => return Err(fail(line_no, None, reason)),
            };
            offset += read as u64;

            let seq = Some(sealed.seq);
            let expected = summary.head_seq + 1;
            if sealed.seq != expected {
                return Err(fail(
                    line_no,
                    seq,
                    format!(
                        "seq {} where {expected} was expected: a record was deleted, inserted or reordered",
                        sealed.seq
                    ),
                ));
            }
            if sealed.prev_hash != summary.head_hash {
                return Err(fail(
                    line_no,
                    seq,
                    "prev_hash does not match the previous record's hash".to_owned(),
                ));
            }
            let view: RecordView = serde_json::from_value(sealed.value.clone())
                .map_err(|e| fail(line_no, seq, format!("unexpected record shape: {e}")))?;
            summary.sealed = false;
            if view.kind == "checkpoint" {
                check_checkpoint(&view, &recent, options)
                    .map_err(|reason| fail(line_no, seq, reason))?;
                summary.checkpoints += 1;
                summary.covered_seq = view.covers_seq.unwrap_or(0);
                summary.last_checkpoint_time = Some(view.time.clone());
                summary.sealed = view.is_final == Some(true)
                    && view.covers_seq == Some(sealed.seq.saturating_sub(1));
            }
            visit(&sealed, &view);
            recent.push_back((sealed.seq, sealed.hash));
            if recent.len() > RECENT_HASHES {
                recent.pop_front();
            }
            summary.records += 1;
            summary.head_seq = sealed.seq;
            summary.head_hash = sealed.hash;
        }
    }
    Ok(summary)
}

fn check_checkpoint(
    view: &RecordView,
    recent: &VecDeque<(u64, [u8; 32])>,
    options: &WalkOptions,
) -> Result<(), String> {
    let covers_seq = view.covers_seq.ok_or("checkpoint without covers_seq")?;
    let covers_hash = view
        .covers_hash
        .as_deref()
        .and_then(chain::decode_hash)
        .ok_or("checkpoint without covers_hash")?;
    let actual = recent
        .iter()
        .rev()
        .find(|(seq, _)| *seq == covers_seq)
        .map(|(_, hash)| *hash)
        .ok_or_else(|| {
            format!("checkpoint covers seq {covers_seq}, which is not a recent record")
        })?;
    if actual != covers_hash {
        return Err(format!(
            "checkpoint covers seq {covers_seq} with a hash that record does not have"
        ));
    }
    if let Some(expected_key) = options.audit_key {
        let key = view
            .audit_key
            .as_deref()
            .and_then(|k| stellar_strkey::ed25519::PublicKey::from_string(k).ok())
            .ok_or("checkpoint without a valid audit_key")?;
        if key.0 != expected_key {
            return Err("checkpoint signed by a different audit key".to_owned());
        }
        let signature = view
            .signature
            .as_deref()
            .and_then(|s| hex::decode(s).ok())
            .ok_or("checkpoint without a signature")?;
        if !checkpoint::verify(&expected_key, covers_seq, &covers_hash, &signature) {
            return Err("checkpoint signature does not verify with the audit key".to_owned());
        }
    }
    Ok(())
}

fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}
