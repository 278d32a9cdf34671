//! `signerd audit verify PATH [--audit-key G...] [--live [--max-checkpoint-age SECS]]`: checks an
//! audit log (a file or a directory of rotated files) on its own, without signerd running.
//!
//! Exit 0 with a summary, or non-zero naming the first bad record and why. With the audit public
//! key, every checkpoint signature is verified and the log must end with signerd's final
//! checkpoint (a cut tail is then detected); `--live` accepts an open tail for a log signerd is
//! still writing, and `--max-checkpoint-age` then bounds how old its last checkpoint may be.

use std::path::Path;

use anyhow::{Context, bail};

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
    };
    let summary = reader::walk(&files, &options, |_, _| {}).map_err(|e| anyhow::anyhow!("{e}"))?;
    if audit_key.is_some() {
        if summary.checkpoints == 0 {
            bail!(
                "no checkpoint in {} records: the log cannot be vouched for (rewritten or stripped?)",
                summary.records
            );
        }
        let open_tail = summary.head_seq - summary.covered_seq;
        if !args.live && !summary.sealed {
            bail!(
                "the log does not end with signerd's final checkpoint: {open_tail} records after the \
                 last checkpoint (seq {}); the tail was cut, or signerd is still running or crashed \
                 (use --live for a running signerd)",
                summary.covered_seq
            );
        }
        if let (true, Some(max_age)) = (args.live, args.max_checkpoint_age_secs) {
            let last = summary.last_checkpoint_time.as_deref().unwrap_or_default();
            let age = checkpoint_age_secs(last)?;
            if age > max_age as i64 {
                bail!(
                    "the last checkpoint ({last}) is {age} s old, more than {max_age} s: the tail \
                     may have been cut"
                );
            }
        }
    }
    let coverage = if audit_key.is_some() {
        format!(
            "{} checkpoints verified with the audit key, covering seq 1..={}{}",
            summary.checkpoints,
            summary.covered_seq,
            if summary.sealed {
                ", sealed by a final checkpoint"
            } else {
                ""
            }
        )
    } else {
        format!(
            "{} checkpoints (signatures not checked: pass --audit-key)",
            summary.checkpoints
        )
    };
    Ok(format!(
        "ok: {} records in {} files, chain intact; {coverage}; head seq {} hash {}",
        summary.records,
        summary.files,
        summary.head_seq,
        hex::encode(summary.head_hash)
    ))
}

fn checkpoint_age_secs(time_text: &str) -> anyhow::Result<i64> {
    let at = time::OffsetDateTime::parse(time_text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("checkpoint time {time_text:?}"))?;
    Ok((time::OffsetDateTime::now_utc() - at).whole_seconds())
}
