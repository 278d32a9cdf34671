//! The anchor: the last durable checkpoint's seq and hash, kept outside the audit directory
//! beside the audit key (a data object in the PKCS#11 token; labels of the CryptoKey in Cloud
//! KMS), so that a log cut back, emptied or replaced is noticed at start instead of starting a
//! fresh chain with the same audit key.
//!
//! Order makes a crash harmless: the anchor moves only after its checkpoint is fsynced, so the
//! log is never behind its anchor after a crash, only ahead of it (which is normal). A fresh
//! audit key gets the anchor "seq 0" *before* (PKCS#11) or together with (Cloud KMS) the key's
//! creation, so "key exists, no anchor" only happens for a log written by a signerd that had no
//! anchors yet.

use super::chain::GENESIS;

/// The anchored checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditAnchor {
    /// The checkpoint record's seq (0: nothing anchored yet, the log may be empty).
    pub seq: u64,
    /// The checkpoint record's hash.
    pub hash: [u8; 32],
}

/// Leads the stored bytes, so a foreign object under the same label is not misread.
const MAGIC: &[u8; 4] = b"SSA1";

impl AuditAnchor {
    /// "Nothing written yet": stored before the audit key is created.
    pub const EMPTY: AuditAnchor = AuditAnchor {
        seq: 0,
        hash: GENESIS,
    };

    /// `SSA1` || seq (u64 BE) || hash: 44 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(44);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.seq.to_be_bytes());
        bytes.extend_from_slice(&self.hash);
        bytes
    }

    /// Parses [`Self::to_bytes`]; `None` for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        if rest.len() != 40 {
            return None;
        }
        let seq = u64::from_be_bytes(rest[..8].try_into().ok()?);
        let hash = rest[8..].try_into().ok()?;
        Some(AuditAnchor { seq, hash })
    }
}

impl std::fmt::Display for AuditAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq {} hash {}", self.seq, hex::encode(self.hash))
    }
}

/// What the log on disk is, compared with the anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnchorCheck {
    /// The log holds the anchored checkpoint (possibly followed by more records).
    Holds,
    /// No anchor yet, but a log written before anchors existed: it is anchored from now on.
    NotAnchoredYet,
    /// The log does not hold the anchored checkpoint: the reason, in words.
    Missing(String),
}

/// What the start-up walk found that the comparison needs.
#[derive(Clone, Copy, Debug)]
pub struct LogFound {
    /// The last record's seq (0: empty).
    pub head_seq: u64,
    /// The hash of the record at the anchored seq, when the log has it.
    pub hash_at_anchor: Option<[u8; 32]>,
    /// Log files found.
    pub files: usize,
}

/// Compares the log with the anchor (`None`: the backend has none for an audit key that already
/// existed).
pub fn compare(anchor: Option<AuditAnchor>, log: &LogFound) -> AnchorCheck {
    let Some(anchor) = anchor else {
        return if log.head_seq == 0 {
            AnchorCheck::Missing(
                "the audit key exists but the log is empty and the backend holds no anchor: the \
                 audit directory was emptied"
                    .to_owned(),
            )
        } else {
            AnchorCheck::NotAnchoredYet
        };
    };
    if anchor.seq == 0 {
        return AnchorCheck::Holds;
    }
    if log.head_seq < anchor.seq {
        let found = if log.head_seq == 0 {
            format!("the audit directory holds no record ({} files)", log.files)
        } else {
            format!(
                "the log ends at seq {} ({} files): records {}..={} are missing (cut or deleted)",
                log.head_seq,
                log.files,
                log.head_seq + 1,
                anchor.seq
            )
        };
        return AnchorCheck::Missing(format!(
            "the backend anchors checkpoint {anchor}, but {found}"
        ));
    }
    match log.hash_at_anchor {
        Some(hash) if hash == anchor.hash => AnchorCheck::Holds,
        _ => AnchorCheck::Missing(format!(
            "the backend anchors checkpoint {anchor}, but the log's record {} is a different one: \
             the log was rewritten or replaced after that checkpoint",
            anchor.seq
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR: AuditAnchor = AuditAnchor {
        seq: 40,
        hash: [4; 32],
    };

    fn found(head_seq: u64, hash_at_anchor: Option<[u8; 32]>) -> LogFound {
        LogFound {
            head_seq,
            hash_at_anchor,
            files: 1,
        }
    }

    #[test]
    fn bytes_round_trip_and_foreign_bytes_are_refused() {
        assert_eq!(AuditAnchor::from_bytes(&ANCHOR.to_bytes()), Some(ANCHOR));
        assert_eq!(AuditAnchor::from_bytes(b"SSA1"), None);
        let mut other = ANCHOR.to_bytes();
        other[0] = b'X';
        assert_eq!(AuditAnchor::from_bytes(&other), None);
        other = ANCHOR.to_bytes();
        other.push(0);
        assert_eq!(AuditAnchor::from_bytes(&other), None);
    }

    #[test]
    fn a_log_at_or_ahead_of_its_anchor_holds() {
        assert_eq!(
            compare(Some(ANCHOR), &found(40, Some([4; 32]))),
            AnchorCheck::Holds
        );
        assert_eq!(
            compare(Some(ANCHOR), &found(95, Some([4; 32]))),
            AnchorCheck::Holds
        );
        assert_eq!(
            compare(Some(AuditAnchor::EMPTY), &found(0, None)),
            AnchorCheck::Holds
        );
    }

    #[test]
    fn a_log_behind_or_beside_its_anchor_is_missing_records() {
        let AnchorCheck::Missing(why) = compare(Some(ANCHOR), &found(12, None)) else {
            panic!("a cut log held");
        };
        assert!(
            why.contains("seq 40") && why.contains("ends at seq 12"),
            "{why}"
        );
        let AnchorCheck::Missing(why) = compare(Some(ANCHOR), &found(0, None)) else {
            panic!("an empty log held");
        };
        assert!(why.contains("holds no record"), "{why}");
        let AnchorCheck::Missing(why) = compare(Some(ANCHOR), &found(60, Some([5; 32]))) else {
            panic!("a rewritten log held");
        };
        assert!(why.contains("rewritten"), "{why}");
    }

    #[test]
    fn no_anchor_is_an_upgrade_only_for_a_log_with_records() {
        assert_eq!(compare(None, &found(7, None)), AnchorCheck::NotAnchoredYet);
        assert!(matches!(
            compare(None, &found(0, None)),
            AnchorCheck::Missing(_)
        ));
    }
}
