//! The line format of the hash chain.
//!
//! A sealed line is `{"seq":N,"prev_hash":"<hex>",<fields>,"hash":"<hex>"}` where `hash` is
//! SHA-256 over the same text with `,"hash":"<hex>"` removed, i.e. over
//! `{"seq":N,"prev_hash":"<hex>",<fields>}`. Checking a line needs no re-serialisation: the hash is
//! over the exact bytes on disk.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the very first record.
pub const GENESIS: [u8; 32] = [0; 32];

const HASH_MEMBER: &str = ",\"hash\":\"";

/// Seals `fields` (the members of a JSON object, without braces) as record `seq` after
/// `prev_hash`. Returns the line (with its newline) and the record's hash.
pub fn seal(seq: u64, prev_hash: &[u8; 32], fields: &str) -> (String, [u8; 32]) {
    let mut line = String::with_capacity(fields.len() + 180);
    line.push_str("{\"seq\":");
    line.push_str(&seq.to_string());
    line.push_str(",\"prev_hash\":\"");
    line.push_str(&hex::encode(prev_hash));
    line.push('"');
    if !fields.is_empty() {
        line.push(',');
        line.push_str(fields);
    }
    line.push('}');
    let hash: [u8; 32] = Sha256::digest(line.as_bytes()).into();
    line.pop();
    line.push_str(HASH_MEMBER);
    line.push_str(&hex::encode(hash));
    line.push_str("\"}\n");
    (line, hash)
}

/// The chain members of a line whose hash checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedLine {
    /// The record's position in the chain.
    pub seq: u64,
    /// The previous record's hash.
    pub prev_hash: [u8; 32],
    /// This record's hash.
    pub hash: [u8; 32],
    /// The whole record, parsed.
    pub value: serde_json::Value,
}

/// Why a line does not check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not a JSON object with the chain members.
    #[error("not a sealed record: {0}")]
    Malformed(String),
    /// The recorded hash is not the hash of the record's text: it was altered.
    #[error("hash mismatch: the record was altered")]
    HashMismatch,
}

/// Parses a line (without its newline) and checks its own hash. Chain linkage (seq order,
/// prev_hash) is the reader's job.
pub fn check(line: &str) -> Result<SealedLine, LineError> {
    let malformed = |why: &str| LineError::Malformed(why.to_owned());
    let at = line
        .rfind(HASH_MEMBER)
        .ok_or_else(|| malformed("no hash member at the end"))?;
    let claimed = &line[at + HASH_MEMBER.len()..];
    let claimed = claimed
        .strip_suffix("\"}")
        .ok_or_else(|| malformed("hash member is not the last"))?;
    let claimed = decode_hash(claimed).ok_or_else(|| malformed("hash is not 64 hex digits"))?;
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| LineError::Malformed(format!("invalid json: {e}")))?;
    let seq = value["seq"].as_u64().ok_or_else(|| malformed("no seq"))?;
    let prev_hash = value["prev_hash"]
        .as_str()
        .and_then(decode_hash)
        .ok_or_else(|| malformed("no prev_hash"))?;
    let mut body = String::with_capacity(at + 1);
    body.push_str(&line[..at]);
    body.push('}');
    let actual: [u8; 32] = Sha256::digest(body.as_bytes()).into();
    if actual != claimed {
        return Err(LineError::HashMismatch);
    }
    Ok(SealedLine {
        seq,
        prev_hash,
        hash: claimed,
        value,
    })
}

/// Decodes a 64-digit hex hash.
pub fn decode_hash(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_lines_check_and_chain() {
        let (first, h1) = seal(1, &GENESIS, r#""kind":"start""#);
        let (second, h2) = seal(2, &h1, r#""kind":"decision","decision":"signed""#);
        let a = check(first.trim_end()).unwrap_or_else(|e| panic!("{e}"));
        let b = check(second.trim_end()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.seq, a.prev_hash, a.hash), (1, GENESIS, h1));
        assert_eq!((b.seq, b.prev_hash, b.hash), (2, h1, h2));
        assert_eq!(b.value["decision"], "signed");
    }

    #[test]
    fn any_changed_byte_is_caught() {
        let (line, _) = seal(1, &GENESIS, r#""kind":"decision","amount":"10.0000000""#);
        let line = line.trim_end();
        for i in 0..line.len() {
            let mut bytes = line.as_bytes().to_vec();
            bytes[i] ^= 0x01;
            let Ok(changed) = String::from_utf8(bytes) else {
                continue;
            };
            assert!(
                check(&changed).is_err(),
                "flipping byte {i} went unnoticed: {changed}"
            );
        }
    }
}
