//! `signerd audit show PATH [filters] [--json]`: the records of an audit log, filtered by key,
//! identity, transaction hash, decision and time, as a table or as JSON lines for tools. The log
//! is verified while it is read; a bad record stops the listing with an error.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::audit::reader::{self, WalkOptions};
use crate::audit::record::RecordView;

/// Filters of `audit show`; every given filter must match.
#[derive(Debug, Default)]
pub struct ShowArgs {
    /// Only records for this key id.
    pub key_id: Option<String>,
    /// Only records for this caller identity.
    pub identity: Option<String>,
    /// Only records whose tx_hash, inner_tx_hash or signed_hash is this (hex).
    pub tx_hash: Option<String>,
    /// Only records with this decision (`signed`, `denied`, `failed`, `created`).
    pub decision: Option<String>,
    /// Only records at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only records before this time (RFC 3339).
    pub until: Option<String>,
    /// JSON lines instead of a table.
    pub json: bool,
}

/// Prints the matching records of the log at `path` to `out`; returns how many matched.
pub fn run(path: &Path, args: &ShowArgs, out: &mut impl Write) -> anyhow::Result<u64> {
    let parse_time = |t: &Option<String>, flag: &str| -> anyhow::Result<Option<OffsetDateTime>> {
        t.as_deref()
            .map(|t| {
                OffsetDateTime::parse(t, &Rfc3339)
                    .with_context(|| format!("{flag}: not an RFC 3339 time"))
            })
            .transpose()
    };
    let since = parse_time(&args.since, "--since")?;
    let until = parse_time(&args.until, "--until")?;
    let tx_hash = args.tx_hash.as_deref().map(str::to_ascii_lowercase);
    let files = reader::log_files(path).with_context(|| format!("reading {}", path.display()))?;
    let mut matched = 0u64;
    let mut write_error = None;
    let walked = reader::walk(&files, &WalkOptions::default(), |_, record| {
        if write_error.is_some() || !matches(record, args, tx_hash.as_deref(), since, until) {
            return;
        }
        matched += 1;
        let written = if args.json {
            serde_json::to_string(record)
                .map_err(std::io::Error::other)
                .and_then(|line| writeln!(out, "{line}"))
        } else {
            writeln!(out, "{}", table_row(record))
        };
        if let Err(e) = written {
            write_error = Some(e);
        }
    });
    if let Some(e) = write_error {
        return Err(e.into());
    }
    walked.map_err(|e| anyhow::anyhow!("stopped at a bad record: {e}"))?;
    Ok(matched)
}

fn matches(
    record: &RecordView,
    args: &ShowArgs,
    tx_hash: Option<&str>,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
) -> bool {
    let eq = |want: &Option<String>, have: &Option<String>| {
        want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
    };
    if !eq(&args.key_id, &record.key_id) || !eq(&args.identity, &record.identity) {
        return false;
    }
    if let Some(want) = &args.decision {
        let have = record
            .decision
            .and_then(|d| serde_json::to_value(d).ok())
            .and_then(|v| v.as_str().map(str::to_owned));
        if have.as_deref() != Some(want.as_str()) {
            return false;
        }
    }
    if let Some(hash) = tx_hash {
        let hit = [&record.tx_hash, &record.inner_tx_hash, &record.signed_hash]
            .iter()
            .any(|h| h.as_deref() == Some(hash));
        if !hit {
            return false;
        }
    }
    if since.is_some() || until.is_some() {
        let Ok(at) = OffsetDateTime::parse(&record.time, &Rfc3339) else {
            return false;
        };
        if since.is_some_and(|s| at < s) || until.is_some_and(|u| at >= u) {
            return false;
        }
    }
    true
}

fn table_row(r: &RecordView) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let decision = r
        .decision
        .and_then(|d| serde_json::to_value(d).ok())
        .and_then(|v| v.as_str().map(str::to_owned));
    match r.kind.as_str() {
        "decision" => format!(
            "{:>8}  {}  {}  {}  key={}  {}{}  tx={}",
            r.seq,
            r.time,
            dash(&r.identity),
            dash(&r.rpc),
            dash(&r.key_id),
            decision.unwrap_or_else(|| "-".to_owned()),
            r.rule
                .as_ref()
                .map(|rule| format!("({rule})"))
                .unwrap_or_default(),
            dash(&r.tx_hash),
        ),
        "checkpoint" => format!(
            "{:>8}  {}  checkpoint covering seq {}{}",
            r.seq,
            r.time,
            r.covers_seq.unwrap_or(0),
            if r.is_final == Some(true) {
                " (final)"
            } else {
                ""
            }
        ),
        other => format!("{:>8}  {}  {other}: {}", r.seq, r.time, dash(&r.message)),
    }
}
