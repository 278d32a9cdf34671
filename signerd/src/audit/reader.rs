//! Walking an audit log (one file or a directory of rotated files) and verifying it as it goes:
//! every line's own hash, the seq order, the `prev_hash` links (also across files), and every
//! checkpoint (its covered hash, and with the audit public key, its signature).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::chain::{self, GENESIS, SealedLine};
use super::checkpoint;
use super::record::{self, RecordView};

/// The prefix and suffix of rotated log files: `audit-00000001.jsonl`, ...
pub const FILE_PREFIX: &str = "audit-";
/// See [`FILE_PREFIX`].
pub const FILE_SUFFIX: &str = ".jsonl";

/// How many recent record hashes are kept to check which record a checkpoint covers.
const RECENT_HASHES: usize = 200_000;

/// The log files under `path` in chain order: `path` itself if it is a file, else its
/// `audit-*.jsonl` files sorted by name.
///
/// A symlink or anything but a regular file among them is an error: a link could make signerd
/// append to, or a verifier read, a file outside the audit directory.
pub fn log_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return regular_file(path).map(|()| vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_log = name
            .to_str()
            .is_some_and(|n| n.starts_with(FILE_PREFIX) && n.ends_with(FILE_SUFFIX));
        if is_log {
            regular_file(&entry.path())?;
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Fails unless `path` is a regular file itself (not a symlink, directory, FIFO or device).
pub fn regular_file(path: &Path) -> std::io::Result<()> {
    let kind = std::fs::symlink_metadata(path)?.file_type();
    if kind.is_file() {
        return Ok(());
    }
    let what = if kind.is_symlink() {
        "a symlink"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{} is {what}: an audit directory holds only regular files",
            path.display()
        ),
    ))
}

/// How to walk.
#[derive(Clone, Debug, Default)]
pub struct WalkOptions {
    /// The audit public key: when set, every checkpoint's signature is verified with it.
    pub audit_key: Option<[u8; 32]>,
    /// Truncate a torn final line of the last file (a crash mid-write) instead of failing.
    /// Only signerd itself does this, at start, before appending.
    pub repair_torn_tail: bool,
    /// Stop after the record with this seq (verifying history while signerd appends more).
    pub stop_after: Option<u64>,
}

/// A checkpoint the walk checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSeen {
    /// The checkpoint record's own seq.
    pub seq: u64,
    /// The checkpoint record's own hash.
    pub hash: [u8; 32],
    /// 1 or 2.
    pub version: u8,
    /// Its `time` member (signed only in version 2).
    pub time: String,
    /// Its signed time (version 2 only).
    pub time_ms: Option<u64>,
    /// The record it covers.
    pub covers_seq: u64,
    /// Its `final` member (signed only in version 2).
    pub is_final: bool,
    /// The guard snapshot digest it signs (version 2 only; zeros: none).
    pub guard_digest: [u8; 32],
}

/// A `gap` record: an operator accepted a log behind its anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GapSeen {
    /// The gap record's seq.
    pub seq: u64,
    /// The checkpoint the backend had anchored.
    pub anchored_seq: u64,
    /// The head of the log that was found instead.
    pub found_seq: u64,
    /// In words.
    pub message: String,
}

/// What a walk found.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Records read.
    pub records: u64,
    /// Files read.
    pub files: usize,
    /// The seq the walk started after (0: the log's beginning; else a trusted checkpoint).
    pub started_after: u64,
    /// The last record's seq (0 for an empty log).
    pub head_seq: u64,
    /// The last record's hash ([`GENESIS`] for an empty log).
    pub head_hash: [u8; 32],
    /// Checkpoints read.
    pub checkpoints: u64,
    /// Of those, version-1 checkpoints (whose `final`, time and position are not signed).
    pub v1_checkpoints: u64,
    /// The highest seq covered by a checkpoint.
    pub covered_seq: u64,
    /// The last checkpoint.
    pub last_checkpoint: Option<CheckpointSeen>,
    /// The last record is a final checkpoint covering the record before it (a clean shutdown).
    pub sealed: bool,
    /// Operator-accepted gaps (`gap` records), in log order.
    pub gaps: Vec<GapSeen>,
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

/// Where a walk starts: the log's beginning, or just after a checkpoint already trusted (found
/// with [`locate`]), so that only what follows it is read.
#[derive(Clone, Debug)]
pub struct StartPoint {
    /// Index in the file list of the file to start in.
    pub file_index: usize,
    /// Byte offset in that file of the first record to read.
    pub offset: u64,
    /// Lines of that file before `offset`.
    pub lines_before: u64,
    /// The record before the first one read: its seq (0 at the beginning)...
    pub head_seq: u64,
    /// ...and hash ([`GENESIS`] at the beginning).
    pub head_hash: [u8; 32],
    /// The trusted checkpoint itself, when starting after one.
    pub after: Option<CheckpointSeen>,
}

impl StartPoint {
    /// The log's first record.
    pub fn beginning() -> Self {
        StartPoint {
            file_index: 0,
            offset: 0,
            lines_before: 0,
            head_seq: 0,
            head_hash: GENESIS,
            after: None,
        }
    }
}

/// Walks and verifies `files` from their beginning, calling `visit` for every record that
/// checks out.
pub fn walk(
    files: &[PathBuf],
    options: &WalkOptions,
    visit: impl FnMut(&SealedLine, &RecordView),
) -> Result<Summary, VerifyError> {
    walk_from(files, &StartPoint::beginning(), options, visit)
}

/// Walks and verifies `files` from `start`, calling `visit` for every record that checks out.
pub fn walk_from(
    files: &[PathBuf],
    start: &StartPoint,
    options: &WalkOptions,
    mut visit: impl FnMut(&SealedLine, &RecordView),
) -> Result<Summary, VerifyError> {
    let mut summary = Summary {
        started_after: start.head_seq,
        head_seq: start.head_seq,
        head_hash: start.head_hash,
        covered_seq: start.after.as_ref().map_or(0, |c| c.covers_seq),
        last_checkpoint: start.after.clone(),
        sealed: start.after.as_ref().is_some_and(|c| c.is_final),
        ..Summary::default()
    };
    let mut recent: VecDeque<(u64, [u8; 32])> = VecDeque::new();
    recent.push_back((start.head_seq, start.head_hash));
    for (file_index, path) in files.iter().enumerate().skip(start.file_index) {
        let is_last_file = file_index + 1 == files.len();
        let fail = |line: u64, seq: Option<u64>, reason: String| VerifyError {
            file: path.clone(),
            line,
            seq,
            reason,
        };
        let mut file = File::open(path).map_err(|e| fail(0, None, format!("cannot open: {e}")))?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (mut offset, mut line_no) = if file_index == start.file_index {
            (start.offset, start.lines_before)
        } else {
            (0, 0)
        };
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| fail(line_no, None, format!("cannot seek: {e}")))?;
        }
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut buf = Vec::new();
        summary.files += 1;
        loop {
            if options.stop_after == Some(summary.head_seq) {
                return Ok(summary);
            }
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
            match view.kind.as_str() {
                "checkpoint" => {
                    let after_v2 = summary
                        .last_checkpoint
                        .as_ref()
                        .is_some_and(|c| c.version >= 2);
                    let seen = check_checkpoint(&sealed, &view, &recent, after_v2, options)
                        .map_err(|reason| fail(line_no, seq, reason))?;
                    summary.checkpoints += 1;
                    if seen.version == 1 {
                        summary.v1_checkpoints += 1;
                    }
                    summary.covered_seq = seen.covers_seq;
                    summary.sealed = seen.is_final && seen.covers_seq + 1 == seen.seq;
                    summary.last_checkpoint = Some(seen);
                }
                "gap" => summary.gaps.push(GapSeen {
                    seq: sealed.seq,
                    anchored_seq: view.anchored_seq.unwrap_or(0),
                    found_seq: view.found_seq.unwrap_or(0),
                    message: view.message.clone().unwrap_or_default(),
                }),
                _ => {}
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

/// A record found by [`locate`].
#[derive(Clone, Debug)]
pub struct Located {
    /// Index of its file in the file list.
    pub file_index: usize,
    /// Byte offset of its line in that file.
    pub offset: u64,
    /// Lines of that file before it.
    pub lines_before: u64,
    /// The line, without its newline.
    pub line: String,
}

impl Located {
    /// Where a walk continues after this record, whose checked contents are `after`.
    pub fn start_after(&self, after: CheckpointSeen) -> StartPoint {
        StartPoint {
            file_index: self.file_index,
            offset: self.offset + self.line.len() as u64 + 1,
            lines_before: self.lines_before + 1,
            head_seq: after.seq,
            head_hash: after.hash,
            after: Some(after),
        }
    }
}

/// Finds record `seq` without reading the history before it: a binary search over the files by
/// their first record's seq, then a scan of one file. Reads only the `seq` prefix of lines.
pub fn locate(files: &[PathBuf], seq: u64) -> std::io::Result<Option<Located>> {
    // The files are in chain order, so their first seqs increase; an empty file (only ever
    // the last) sorts last.
    let (mut low, mut high) = (0usize, files.len());
    while low < high {
        let middle = (low + high) / 2;
        match first_seq(&files[middle])? {
            Some(first) if first <= seq => low = middle + 1,
            _ => high = middle,
        }
    }
    let Some(file_index) = low.checked_sub(1) else {
        return Ok(None);
    };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(&files[file_index])?);
    let (mut offset, mut lines_before) = (0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf)?;
        if read == 0 || !buf.ends_with(b"\n") {
            return Ok(None);
        }
        if line_seq(&buf) == Some(seq) {
            let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
            return Ok(Some(Located {
                file_index,
                offset,
                lines_before,
                line,
            }));
        }
        offset += read as u64;
        lines_before += 1;
    }
}

/// The seq of a file's first record (`None`: empty or unreadable first line).
fn first_seq(path: &Path) -> std::io::Result<Option<u64>> {
    let mut reader = BufReader::with_capacity(4096, File::open(path)?);
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf)?;
    Ok(line_seq(&buf))
}

/// The seq from a line's `{"seq":N,` prefix, without parsing the line.
fn line_seq(line: &[u8]) -> Option<u64> {
    let digits = line.strip_prefix(b"{\"seq\":")?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Checks a checkpoint found with [`locate`] on its own, as a trusted starting point: its own
/// hash, that it is a version-2 checkpoint (which signs its position) and its signature.
pub fn check_trusted_checkpoint(line: &str, audit_key: [u8; 32]) -> Result<CheckpointSeen, String> {
    let sealed = chain::check(line).map_err(|e| e.to_string())?;
    let view: RecordView = serde_json::from_value(sealed.value.clone())
        .map_err(|e| format!("unexpected record shape: {e}"))?;
    if view.kind != "checkpoint" || view.version != Some(2) {
        return Err(format!(
            "record {} is not a version-2 checkpoint",
            sealed.seq
        ));
    }
    let options = WalkOptions {
        audit_key: Some(audit_key),
        ..WalkOptions::default()
    };
    check_checkpoint(&sealed, &view, &VecDeque::new(), true, &options)
}

/// Checks a checkpoint record: what it covers and, with the audit key, its signature.
///
/// A version-2 checkpoint must cover the record right before it. A version-1 checkpoint (no
/// `version` member) is accepted only before the first version-2 one: a log does not switch
/// back, so a v1 record after a v2 one is a forgery's way around the signed `final` flag.
fn check_checkpoint(
    sealed: &SealedLine,
    view: &RecordView,
    recent: &VecDeque<(u64, [u8; 32])>,
    after_v2: bool,
    options: &WalkOptions,
) -> Result<CheckpointSeen, String> {
    let covers_seq = view.covers_seq.ok_or("checkpoint without covers_seq")?;
    let covers_hash = view
        .covers_hash
        .as_deref()
        .and_then(chain::decode_hash)
        .ok_or("checkpoint without covers_hash")?;
    let version = view.version.unwrap_or(1);
    let seen = match version {
        1 => {
            if after_v2 {
                return Err(
                    "version-1 checkpoint after a version-2 one: a log cannot switch back".into(),
                );
            }
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
            CheckpointSeen {
                seq: sealed.seq,
                hash: sealed.hash,
                version: 1,
                time: view.time.clone(),
                time_ms: None,
                covers_seq,
                is_final: view.is_final == Some(true),
                guard_digest: [0; 32],
            }
        }
        2 => {
            if covers_seq + 1 != sealed.seq || covers_hash != sealed.prev_hash {
                return Err(format!(
                    "checkpoint covers seq {covers_seq}, not the record right before it"
                ));
            }
            let time_ms = view.time_ms.ok_or("checkpoint without time_ms")?;
            if view.time != record::rfc3339_of_ms(time_ms) {
                return Err("checkpoint time does not match its signed time_ms".into());
            }
            let guard_digest = view
                .guard_digest
                .as_deref()
                .and_then(chain::decode_hash)
                .ok_or("checkpoint without guard_digest")?;
            CheckpointSeen {
                seq: sealed.seq,
                hash: sealed.hash,
                version: 2,
                time: view.time.clone(),
                time_ms: Some(time_ms),
                covers_seq,
                is_final: view.is_final.ok_or("checkpoint without final")?,
                guard_digest,
            }
        }
        other => return Err(format!("checkpoint version {other} is not known")),
    };
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
        let message = if seen.version == 1 {
            checkpoint::message_v1(covers_seq, &covers_hash)
        } else {
            checkpoint::Claim {
                seq: seen.seq,
                covers_seq,
                covers_hash,
                is_final: seen.is_final,
                time_ms: seen.time_ms.unwrap_or_default(),
                guard_digest: seen.guard_digest,
            }
            .message()
        };
        if !checkpoint::verify(&expected_key, &message, &signature) {
            return Err("checkpoint signature does not verify with the audit key".to_owned());
        }
    }
    Ok(seen)
}

fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    const KEY: [u8; 32] = [42; 32];

    /// A log of `kinds`: "event", "v1", "v1-final", "v2", "v2-final", each properly signed.
    fn log_of(kinds: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let signer = SigningKey::from_bytes(&KEY);
        let audit_key =
            stellar_strkey::ed25519::PublicKey(signer.verifying_key().to_bytes()).to_string();
        let (mut seq, mut prev, mut text) = (0u64, GENESIS, String::new());
        for kind in kinds {
            seq += 1;
            let is_final = kind.ends_with("final");
            let members = match *kind {
                "event" => r#""kind":"start","time":"t","message":"m""#.to_owned(),
                v1 if v1.starts_with("v1") => {
                    let signature = signer.sign(&checkpoint::message_v1(seq - 1, &prev));
                    format!(
                        r#""kind":"checkpoint","time":"t","covers_seq":{},"covers_hash":"{}","audit_key":"{audit_key}","signature":"{}","final":{is_final}"#,
                        seq - 1,
                        hex::encode(prev),
                        hex::encode(signature.to_bytes())
                    )
                }
                _ => {
                    let claim = checkpoint::Claim {
                        seq,
                        covers_seq: seq - 1,
                        covers_hash: prev,
                        is_final,
                        time_ms: 1_700_000_000_000,
                        guard_digest: [0; 32],
                    };
                    let signature = signer.sign(&claim.message());
                    format!(
                        r#""kind":"checkpoint","version":2,"time":"{}","time_ms":{},"covers_seq":{},"covers_hash":"{}","guard_digest":"{}","audit_key":"{audit_key}","signature":"{}","final":{is_final}"#,
                        record::rfc3339_of_ms(claim.time_ms),
                        claim.time_ms,
                        seq - 1,
                        hex::encode(prev),
                        hex::encode([0u8; 32]),
                        hex::encode(signature.to_bytes())
                    )
                }
            };
            let (line, hash) = chain::seal(seq, &prev, &members);
            text.push_str(&line);
            prev = hash;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit-00000001.jsonl");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        (dir, vec![path])
    }

    fn verified(kinds: &[&str]) -> Result<Summary, VerifyError> {
        let (_dir, files) = log_of(kinds);
        let public = SigningKey::from_bytes(&KEY).verifying_key().to_bytes();
        let options = WalkOptions {
            audit_key: Some(public),
            ..WalkOptions::default()
        };
        walk(&files, &options, |_, _| {})
    }

    #[test]
    fn an_upgraded_log_verifies_and_reports_its_v1_checkpoints() {
        let summary = verified(&[
            "event", "v1", "event", "v1-final", "event", "v2", "v2-final",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((summary.checkpoints, summary.v1_checkpoints), (4, 2));
        assert!(summary.sealed);
        assert_eq!(summary.last_checkpoint.map(|c| c.version), Some(2));
    }

    #[test]
    fn a_v1_checkpoint_after_a_v2_one_is_refused() {
        let error = verified(&["event", "v2", "event", "v1-final"])
            .err()
            .unwrap_or_else(|| panic!("a log switched back to v1"));
        assert!(error.reason.contains("cannot switch back"), "{error}");
    }

    #[test]
    fn a_log_sealed_by_a_v1_checkpoint_says_so() {
        let summary = verified(&["event", "v1-final"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(summary.sealed);
        assert_eq!(summary.last_checkpoint.map(|c| c.version), Some(1));
    }

    #[test]
    fn located_records_resume_a_walk_after_them() {
        let (_dir, files) = log_of(&["event", "v2", "event", "event", "v2-final"]);
        let located = locate(&files, 2)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("seq 2 not found"));
        let public = SigningKey::from_bytes(&KEY).verifying_key().to_bytes();
        let trusted =
            check_trusted_checkpoint(&located.line, public).unwrap_or_else(|e| panic!("{e}"));
        let options = WalkOptions {
            audit_key: Some(public),
            ..WalkOptions::default()
        };
        let summary = walk_from(&files, &located.start_after(trusted), &options, |_, _| {})
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (summary.records, summary.head_seq, summary.started_after),
            (3, 5, 2)
        );
        assert!(summary.sealed);
        assert!(
            locate(&files, 6)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
        assert!(check_trusted_checkpoint(&located.line, [1; 32]).is_err());
    }
}
