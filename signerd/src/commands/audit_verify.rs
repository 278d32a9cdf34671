//! `signerd audit verify PATH [--audit-key G...] [--live [--max-checkpoint-age SECS]]
//! [--accept-v1]`: checks an audit log (a file or a directory of rotated files) on its own,
//! without signerd running.
//!
//! Exit 0 with a summary, or non-zero naming the first bad record and why. With the audit public
//! key, every checkpoint signature is verified and the log must end with signerd's final
//! checkpoint (a cut tail is then detected); `--live` accepts an open tail for a log signerd is
//! still writing, and `--max-checkpoint-age` then bounds how old its last checkpoint may be.
//!
//! Only a version-2 checkpoint signs its `final` flag and its time, so only a version-2
//! checkpoint can seal a log or vouch for its age; `--accept-v1` also accepts a version-1 one
//! (logs written before checkpoints were versioned). Gaps an operator accepted at start (`gap`
//! records) are listed in the summary.
//!
//! `--from-checkpoint SEQ:HASH` resumes from a version-2 checkpoint verified before (the
//! `head seq`/`hash` of an earlier run on a sealed log, or any checkpoint's seq and hash): only
//! the records after it are read, so a daily check does not grow with all history.

use std::path::Path;

use anyhow::{Context, bail};

use crate::audit::chain::decode_hash;
use crate::audit::reader::{self, WalkOptions};

/// Options of `audit verify`.
#[derive(Debug, Default)]
pub struct VerifyArgs {
    /// The audit public key (G...).
    pub audit_key: Option<String>,
    /// The log is still being written: an open tail is fine.
    pub live: bool,
    /// With `live`: the last checkpoint may be at most this old.
    pub max_checkpoint_age_secs: Option<u64>,
    /// Let a version-1 checkpoint (whose `final` flag and time are unsigned) seal the log or
    /// date it.
    pub accept_v1: bool,
    /// `SEQ:HASH` of a version-2 checkpoint verified before: check only what follows it.
    pub from_checkpoint: Option<String>,
}

/// Verifies the log at `path`; returns the summary line on success.
pub fn run(path: &Path, args: &VerifyArgs) -> anyhow::Result<String> {
    let audit_key = match &args.audit_key {
        Some(text) => Some(
            stellar_strkey::ed25519::PublicKey::from_string(text)
                .map(|k| k.0)
                .map_err(|_| anyhow::anyhow!("--audit-key: not a G... public key"))?,
        ),
        None => None,
    };
    let files = reader::log_files(path).with_context(|| format!("reading {}", path.display()))?;
    if files.is_empty() {
        bail!("no audit log files under {}", path.display());
    }
    let options = WalkOptions {
        audit_key,
        repair_torn_tail: false,
        stop_after: None,
    };
    let start = match &args.from_checkpoint {
        None => reader::StartPoint::beginning(),
        Some(trusted) => {
            let audit_key = audit_key.context("--from-checkpoint needs --audit-key")?;
            trusted_start(&files, trusted, audit_key)?
        }
    };
    let summary = reader::walk_from(&files, &start, &options, |_, _| {})
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let v1_warning = "a version-1 checkpoint, which does not sign it (a log written before \
                      checkpoint version 2; pass --accept-v1 to accept it)";
    if audit_key.is_some() {
        let Some(last) = summary.last_checkpoint.as_ref() else {
            bail!(
                "no checkpoint in {} records: the log cannot be vouched for (rewritten or stripped?)",
                summary.records
            );
        };
        let open_tail = summary.head_seq - last.seq;
        if !args.live && !summary.sealed {
            bail!(
                "the log does not end with signerd's final checkpoint: {open_tail} records after the \
                 last checkpoint (seq {}); the tail was cut, or signerd is still running or crashed \
                 (use --live for a running signerd)",
                last.seq
            );
        }
        if summary.sealed && last.version == 1 && !args.accept_v1 {
            bail!(
                "the log's final flag (seq {}) comes from {v1_warning}",
                last.seq
            );
        }
        if let (true, Some(max_age)) = (args.live, args.max_checkpoint_age_secs) {
            let age = match last.time_ms {
                Some(time_ms) => checkpoint_age_ms(time_ms) / 1000,
                None if args.accept_v1 => checkpoint_age_secs(&last.time)?,
                None => bail!(
                    "the last checkpoint's time (seq {}) comes from {v1_warning}",
                    last.seq
                ),
            };
            if age > max_age as i64 {
                bail!(
                    "the last checkpoint ({}) is {age} s old, more than {max_age} s: the tail \
                     may have been cut",
                    last.time
                );
            }
        }
    }
    let coverage = if audit_key.is_some() {
        let sealed = match summary.last_checkpoint.as_ref() {
            Some(last) if summary.sealed && last.version == 1 => {
                ", sealed by a version-1 final checkpoint (accepted with --accept-v1)"
            }
            _ if summary.sealed => ", sealed by a final checkpoint",
            _ => "",
        };
        let v1 = if summary.v1_checkpoints > 0 {
            format!(" ({} of version 1)", summary.v1_checkpoints)
        } else {
            String::new()
        };
        let from = match summary.started_after {
            0 => String::new(),
            trusted => format!(" after the trusted checkpoint at seq {trusted}"),
        };
        format!(
            "{} checkpoints{v1} verified with the audit key{from}, covering up to seq {}{sealed}",
            summary.checkpoints, summary.covered_seq,
        )
    } else {
        format!(
            "{} checkpoints (signatures not checked: pass --audit-key)",
            summary.checkpoints
        )
    };
    let gaps = if summary.gaps.is_empty() {
        String::new()
    } else {
        let listed: Vec<String> = summary
            .gaps
            .iter()
            .map(|g| {
                format!(
                    "at seq {} (the anchor was checkpoint seq {}, the log found held up to seq {})",
                    g.seq, g.anchored_seq, g.found_seq
                )
            })
            .collect();
        format!(
            "; WARNING: {} gap(s) accepted by an operator at start, records lost before them: {}",
            summary.gaps.len(),
            listed.join("; ")
        )
    };
    Ok(format!(
        "ok: {} records in {} files, chain intact; {coverage}; head seq {} hash {}{gaps}",
        summary.records,
        summary.files,
        summary.head_seq,
        hex::encode(summary.head_hash)
    ))
}

/// Where `--from-checkpoint SEQ:HASH` resumes: that record must be in the log with that hash,
/// and be a version-2 checkpoint signed by the audit key.
fn trusted_start(
    files: &[std::path::PathBuf],
    trusted: &str,
    audit_key: [u8; 32],
) -> anyhow::Result<reader::StartPoint> {
    let (seq, hash) = trusted
        .split_once(':')
        .and_then(|(seq, hash)| Some((seq.parse::<u64>().ok()?, decode_hash(hash)?)))
        .context("--from-checkpoint: expected SEQ:HASH (hash as 64 hex digits)")?;
    let located = reader::locate(files, seq)?
        .with_context(|| format!("--from-checkpoint: the log holds no record {seq}"))?;
    let checkpoint = reader::check_trusted_checkpoint(&located.line, audit_key)
        .map_err(|why| anyhow::anyhow!("--from-checkpoint: {why}"))?;
    if checkpoint.hash != hash {
        bail!("--from-checkpoint: record {seq} has another hash: the log was rewritten");
    }
    Ok(located.start_after(checkpoint))
}

fn checkpoint_age_ms(time_ms: u64) -> i64 {
    let now = crate::audit::record::now_unix_ms();
    i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(time_ms).unwrap_or(i64::MAX)
}

fn checkpoint_age_secs(time_text: &str) -> anyhow::Result<i64> {
    let at = time::OffsetDateTime::parse(time_text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("checkpoint time {time_text:?}"))?;
    Ok((time::OffsetDateTime::now_utc() - at).whole_seconds())
}
