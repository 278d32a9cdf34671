//! The sequence guard: once signerd has signed transaction H with the key of its source account
//! A at sequence S on network N, it refuses to sign a different transaction that could consume
//! (N, A, S). Re-signing H is fine. Time bounds plus this guard are what make "resubmit the same
//! bytes, never rebuild blindly" safe for the gateway: two different transactions for one
//! sequence can never both be signed while either could still be applied.
//!
//! What a transaction can consume is a range of sequence numbers, a [`SequenceClaim`]: usually
//! just its own sequence S, but a `min_seq_num` M lets it apply anywhere from M + 1 to S (and so
//! kill a pending transaction at any of them), and a `bump_sequence` of its own source moves the
//! account to the bump target. Claims of different transactions never overlap.
//!
//! Only the transaction source's own key reserves anything (the caller decides that): a key that
//! is merely an operation source or a fee-bump fee source must not be able to block another
//! account's sequence numbers.
//!
//! Memory stays bounded: an entry whose transaction has a `max_time` is dropped once that time is
//! past (a transaction can never be applied after its `max_time`, so another one for the same
//! sequence is then harmless). Entries are never evicted before that: when the guard holds
//! `max_entries`, or an identity holds `max_entries_per_identity`, new reservations are refused
//! instead. Entries without a `max_time` never expire and so count against both caps for good.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::keys::PublicKey;
use crate::soroban::nonce_guard::NonceGuard;

/// How long after `max_time` an entry is kept, to absorb clock skew between signerd and the
/// network's ledger close times.
pub const EXPIRY_MARGIN_SECS: u64 = 60;

/// The sequence numbers of one account on one network a transaction can consume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceClaim {
    /// The network id (sha256 of the passphrase): the same account has one sequence per network.
    pub network: [u8; 32],
    /// The transaction source (the inner source for a fee bump).
    pub account: PublicKey,
    /// The lowest sequence the transaction can consume (`min_seq_num` + 1, else its sequence).
    pub first: i64,
    /// The highest (its sequence, or a higher `bump_sequence` target of its own source).
    pub last: i64,
}

/// The caps that keep the guard's memory bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardLimits {
    /// Entries held at most, over every identity.
    pub max_entries: usize,
    /// Entries one caller identity may hold at most.
    pub max_entries_per_identity: usize,
}

/// What the guard says about a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardDecision {
    /// Nothing overlapping was signed: the claim is now reserved for this hash.
    Reserved,
    /// This very transaction was signed before; signing it again is fine.
    SameTransaction,
    /// A different transaction was signed for an overlapping claim.
    Conflict {
        /// The hash signed before.
        signed: [u8; 32],
        /// The sequences that transaction claims.
        first: i64,
        /// See `first`.
        last: i64,
    },
    /// The guard holds `max_entries` unexpired entries: nothing new can be reserved.
    Full {
        /// The cap.
        limit: usize,
    },
    /// The caller identity holds `max_entries_per_identity` unexpired entries.
    IdentityFull {
        /// The cap.
        limit: usize,
    },
}

/// One reservation, as the guard holds it (for snapshots and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardEntry {
    /// What is reserved.
    pub claim: SequenceClaim,
    /// The transaction hash it is reserved for (the inner hash for a fee bump).
    pub hash: [u8; 32],
    /// The transaction's `max_time` (Unix seconds); `None`: it never expires.
    pub max_time: Option<u64>,
    /// The caller identity the entry counts against.
    pub identity: String,
}

/// (network, account, first sequence): ordered so that one account's claims on one network are
/// adjacent and sorted.
type SlotKey = ([u8; 32], [u8; 32], i64);

#[derive(Clone, Debug)]
struct Entry {
    last: i64,
    hash: [u8; 32],
    max_time: Option<u64>,
    identity: Arc<str>,
}

/// The guard's state. Not synchronised: the caller holds it behind a mutex.
pub struct SequenceGuard {
    /// Disjoint claims, keyed by their first sequence.
    entries: BTreeMap<SlotKey, Entry>,
    /// Expiring entries by expiry time (min-heap); stale items are skipped when they come up.
    expiring: BinaryHeap<Reverse<(u64, SlotKey)>>,
    /// Entries held per identity; the `Arc` is shared with the entries.
    per_identity: HashMap<Arc<str>, usize>,
    limits: GuardLimits,
    /// The nonce guard of Soroban authorizations: carried here so that it shares this lock
    /// and this snapshot (see [`crate::soroban::nonce_guard`]).
    pub nonces: NonceGuard,
}

impl SequenceGuard {
    /// An empty guard with these caps.
    pub fn new(limits: GuardLimits) -> Self {
        SequenceGuard {
            entries: BTreeMap::new(),
            expiring: BinaryHeap::new(),
            per_identity: HashMap::new(),
            limits,
            nonces: NonceGuard::new(limits.max_entries, limits.max_entries_per_identity),
        }
    }

    /// Checks `claim` against `hash` and reserves it for `identity` when nothing overlapping is
    /// held and the caps allow. `max_time` is the transaction's upper time bound (0 or `None`:
    /// unbounded); `now` is Unix seconds.
    pub fn check_and_reserve(
        &mut self,
        claim: SequenceClaim,
        hash: [u8; 32],
        max_time: Option<u64>,
        identity: &str,
        now: u64,
    ) -> GuardDecision {
        self.expire(now);
        if let Some((key, entry)) = self.overlapping(&claim) {
            return if entry.hash == hash {
                GuardDecision::SameTransaction
            } else {
                GuardDecision::Conflict {
                    signed: entry.hash,
                    first: key.2,
                    last: entry.last,
                }
            };
        }
        if self.entries.len() >= self.limits.max_entries {
            return GuardDecision::Full {
                limit: self.limits.max_entries,
            };
        }
        if self.per_identity.get(identity).copied().unwrap_or(0)
            >= self.limits.max_entries_per_identity
        {
            return GuardDecision::IdentityFull {
                limit: self.limits.max_entries_per_identity,
            };
        }
        self.insert(claim, hash, max_time, identity);
        GuardDecision::Reserved
    }

    /// Undoes a reservation that was never used (the audit record could not be written).
    pub fn release(&mut self, claim: SequenceClaim, hash: [u8; 32]) {
        let key = slot_key(&claim);
        if self.entries.get(&key).is_some_and(|e| e.hash == hash) {
            self.remove(&key);
            // A heap item for the slot is skipped when it comes up.
        }
    }

    /// Records a signature found in the audit log (rebuilding the guard at start). A later
    /// record replaces earlier overlapping ones; the caps do not apply (what was signed stays
    /// guarded, whatever the config says now).
    pub fn restore(
        &mut self,
        claim: SequenceClaim,
        hash: [u8; 32],
        max_time: Option<u64>,
        identity: &str,
        now: u64,
    ) {
        if expiry(max_time).is_some_and(|t| t < now) {
            return;
        }
        while let Some((key, _)) = self.overlapping(&claim) {
            self.remove(&key);
        }
        self.insert(claim, hash, max_time, identity);
    }

    /// Every entry held, in (network, account, sequence) order.
    pub fn entries(&self) -> impl Iterator<Item = GuardEntry> + '_ {
        self.entries.iter().map(|(key, entry)| GuardEntry {
            claim: SequenceClaim {
                network: key.0,
                account: PublicKey(key.1),
                first: key.2,
                last: entry.last,
            },
            hash: entry.hash,
            max_time: entry.max_time,
            identity: entry.identity.to_string(),
        })
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the guard holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries `identity` currently holds.
    pub fn held_by(&self, identity: &str) -> usize {
        self.per_identity.get(identity).copied().unwrap_or(0)
    }

    /// The held claim overlapping `claim`, if any. Held claims are disjoint and sorted, so the
    /// only candidate is the last one starting at or before `claim.last`.
    fn overlapping(&self, claim: &SequenceClaim) -> Option<(SlotKey, &Entry)> {
        let lowest = (claim.network, claim.account.0, i64::MIN);
        let (key, entry) = self
            .entries
            .range((
                Bound::Included(lowest),
                Bound::Included(slot_key_at(claim, claim.last)),
            ))
            .next_back()?;
        (entry.last >= claim.first).then_some((*key, entry))
    }

    fn insert(
        &mut self,
        claim: SequenceClaim,
        hash: [u8; 32],
        max_time: Option<u64>,
        identity: &str,
    ) {
        let identity: Arc<str> = match self.per_identity.get_key_value(identity) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(identity),
        };
        *self.per_identity.entry(identity.clone()).or_insert(0) += 1;
        let key = slot_key(&claim);
        if let Some(expires_at) = expiry(max_time) {
            self.expiring.push(Reverse((expires_at, key)));
        }
        let replaced = self.entries.insert(
            key,
            Entry {
                last: claim.last,
                hash,
                max_time,
                identity,
            },
        );
        // Callers remove overlapping entries first; a replaced entry would leave its count.
        if let Some(old) = replaced {
            self.uncount(&old.identity);
        }
    }

    fn remove(&mut self, key: &SlotKey) {
        if let Some(old) = self.entries.remove(key) {
            self.uncount(&old.identity);
        }
    }

    fn uncount(&mut self, identity: &Arc<str>) {
        if let Some(count) = self.per_identity.get_mut(identity) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_identity.remove(identity);
            }
        }
    }

    fn expire(&mut self, now: u64) {
        while let Some(Reverse((expires_at, key))) = self.expiring.peek().copied() {
            if expires_at >= now {
                break;
            }
            self.expiring.pop();
            // Only remove if the live entry is the one this heap item was pushed for.
            if self
                .entries
                .get(&key)
                .is_some_and(|e| expiry(e.max_time) == Some(expires_at))
            {
                self.remove(&key);
            }
        }
    }
}

fn slot_key(claim: &SequenceClaim) -> SlotKey {
    slot_key_at(claim, claim.first)
}

fn slot_key_at(claim: &SequenceClaim, sequence: i64) -> SlotKey {
    (claim.network, claim.account.0, sequence)
}

fn expiry(max_time: Option<u64>) -> Option<u64> {
    max_time
        .filter(|t| *t > 0)
        .map(|t| t.saturating_add(EXPIRY_MARGIN_SECS))
}

// ---------------------------------------------------------------------------------------------
// Snapshots: the audit log saves the guard beside a checkpoint (whose signature covers the
// snapshot's SHA-256), and start-up restores it instead of replaying the whole history.

/// Leads a guard snapshot of sequence entries only (written before the nonce guard existed).
const SNAPSHOT_MAGIC: &[u8; 4] = b"SSG1";
/// Leads a guard snapshot with both sections: `SSG2`, the byte length of the sequence section
/// (u64 BE), the sequence entries as in `SSG1`, then the nonce guard's entries.
const SNAPSHOT_MAGIC_V2: &[u8; 4] = b"SSG2";

impl SequenceGuard {
    /// Every entry as bytes: `SSG1`, then per entry network (32), account (32), first and last
    /// sequence (i64 BE), hash (32), `max_time` (u64 BE, 0: none), identity length (u16 BE) and
    /// identity (UTF-8).
    ///
    /// Written as `SSG2` (see [`SNAPSHOT_MAGIC_V2`]): the sequence section, then the nonce
    /// guard's entries.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(12 + self.entries.len() * 160);
        bytes.extend_from_slice(SNAPSHOT_MAGIC_V2);
        bytes.extend_from_slice(&[0; 8]);
        for entry in self.entries() {
            bytes.extend_from_slice(&entry.claim.network);
            bytes.extend_from_slice(&entry.claim.account.0);
            bytes.extend_from_slice(&entry.claim.first.to_be_bytes());
            bytes.extend_from_slice(&entry.claim.last.to_be_bytes());
            bytes.extend_from_slice(&entry.hash);
            bytes.extend_from_slice(&entry.max_time.unwrap_or(0).to_be_bytes());
            // Identities are certificate names, far below 64 KiB; a longer one is cut.
            let identity = &entry.identity.as_bytes()[..entry.identity.len().min(u16::MAX.into())];
            bytes.extend_from_slice(&(identity.len() as u16).to_be_bytes());
            bytes.extend_from_slice(identity);
        }
        let section = (bytes.len() - 12) as u64;
        bytes[4..12].copy_from_slice(&section.to_be_bytes());
        self.nonces.snapshot_into(&mut bytes);
        bytes
    }

    /// Restores every entry of `snapshot` still live at `now`, as [`Self::restore`] does;
    /// returns how many entries the snapshot held. Malformed bytes change nothing.
    pub fn restore_snapshot(&mut self, snapshot: &[u8], now: u64) -> Result<usize, String> {
        let (sequences, nonces) = match snapshot.strip_prefix(SNAPSHOT_MAGIC_V2) {
            Some(rest) => {
                let length: [u8; 8] = rest
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("guard snapshot: truncated header")?;
                let length = usize::try_from(u64::from_be_bytes(length))
                    .map_err(|_| "guard snapshot: bad section length")?;
                let rest = &rest[8..];
                if rest.len() < length {
                    return Err("guard snapshot: truncated sequence section".into());
                }
                let (sequences, nonces) = rest.split_at(length);
                (
                    parse_entries(sequences)?,
                    NonceGuard::parse_snapshot(nonces)?,
                )
            }
            None => (parse_snapshot(snapshot)?, Vec::new()),
        };
        for entry in nonces {
            self.nonces.restore(
                entry.slot,
                entry.invocation,
                entry.expiration,
                &entry.identity,
            );
        }
        let entries = sequences;
        let count = entries.len();
        for entry in entries {
            self.restore(
                entry.claim,
                entry.hash,
                entry.max_time,
                &entry.identity,
                now,
            );
        }
        Ok(count)
    }
}

fn parse_snapshot(snapshot: &[u8]) -> Result<Vec<GuardEntry>, String> {
    let rest = snapshot
        .strip_prefix(SNAPSHOT_MAGIC)
        .ok_or("guard snapshot: not a snapshot")?;
    parse_entries(rest)
}

/// The sequence entries of a snapshot, after its header.
fn parse_entries(mut rest: &[u8]) -> Result<Vec<GuardEntry>, String> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if rest.len() < n {
            return Err("guard snapshot: truncated entry".into());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], String> {
        take(rest, N)?
            .try_into()
            .map_err(|_| "guard snapshot: truncated entry".to_owned())
    }
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let network = array::<32>(&mut rest)?;
        let account = PublicKey(array::<32>(&mut rest)?);
        let first = i64::from_be_bytes(array(&mut rest)?);
        let last = i64::from_be_bytes(array(&mut rest)?);
        let hash = array::<32>(&mut rest)?;
        let max_time = Some(u64::from_be_bytes(array(&mut rest)?)).filter(|t| *t > 0);
        let length = u16::from_be_bytes(array(&mut rest)?);
        let identity = std::str::from_utf8(take(&mut rest, length.into())?)
            .map_err(|_| "guard snapshot: identity is not UTF-8")?
            .to_owned();
        if first > last {
            return Err("guard snapshot: a claim ends before it starts".into());
        }
        entries.push(GuardEntry {
            claim: SequenceClaim {
                network,
                account,
                first,
                last,
            },
            hash,
            max_time,
            identity,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PublicKey = PublicKey([1; 32]);
    const B: PublicKey = PublicKey([2; 32]);
    const TESTNET: [u8; 32] = [0xa0; 32];
    const PUBNET: [u8; 32] = [0xb0; 32];

    fn limits(max_entries: usize, max_entries_per_identity: usize) -> GuardLimits {
        GuardLimits {
            max_entries,
            max_entries_per_identity,
        }
    }

    fn at(account: PublicKey, sequence: i64) -> SequenceClaim {
        range(account, sequence, sequence)
    }

    fn range(account: PublicKey, first: i64, last: i64) -> SequenceClaim {
        SequenceClaim {
            network: TESTNET,
            account,
            first,
            last,
        }
    }

    #[test]
    fn same_hash_again_is_fine_a_different_hash_conflicts() {
        let mut guard = SequenceGuard::new(limits(10, 10));
        assert_eq!(
            guard.check_and_reserve(at(A, 7), [9; 32], Some(1000), "gw", 900),
            GuardDecision::Reserved
        );
        assert_eq!(
            guard.check_and_reserve(at(A, 7), [9; 32], Some(1000), "gw", 901),
            GuardDecision::SameTransaction
        );
        assert_eq!(
            guard.check_and_reserve(at(A, 7), [8; 32], Some(1000), "gw", 902),
            GuardDecision::Conflict {
                signed: [9; 32],
                first: 7,
                last: 7
            }
        );
        // Other sequences and other accounts are independent.
        assert_eq!(
            guard.check_and_reserve(at(A, 8), [8; 32], Some(1000), "gw", 902),
            GuardDecision::Reserved
        );
        assert_eq!(
            guard.check_and_reserve(at(B, 7), [8; 32], Some(1000), "gw", 902),
            GuardDecision::Reserved
        );
    }

    #[test]
    fn networks_are_separate_sequence_spaces() {
        let mut guard = SequenceGuard::new(limits(10, 10));
        guard.check_and_reserve(at(A, 7), [9; 32], Some(1000), "gw", 900);
        let mut on_pubnet = at(A, 7);
        on_pubnet.network = PUBNET;
        assert_eq!(
            guard.check_and_reserve(on_pubnet, [8; 32], Some(1000), "gw", 900),
            GuardDecision::Reserved
        );
    }

    #[test]
    fn a_range_conflicts_with_every_sequence_it_covers() {
        let mut guard = SequenceGuard::new(limits(10, 10));
        // S + 1 with min_seq_num S - 1: can consume S and S + 1.
        assert_eq!(
            guard.check_and_reserve(range(A, 10, 11), [1; 32], Some(1000), "gw", 900),
            GuardDecision::Reserved
        );
        for sequence in [10, 11] {
            assert!(matches!(
                guard.check_and_reserve(at(A, sequence), [2; 32], Some(1000), "gw", 900),
                GuardDecision::Conflict { signed, .. } if signed == [1; 32]
            ));
        }
        assert!(matches!(
            guard.check_and_reserve(range(A, 0, 100), [2; 32], Some(1000), "gw", 900),
            GuardDecision::Conflict { .. }
        ));
        // Outside the range: free.
        assert_eq!(
            guard.check_and_reserve(at(A, 9), [3; 32], Some(1000), "gw", 900),
            GuardDecision::Reserved
        );
        assert_eq!(
            guard.check_and_reserve(range(A, 12, i64::MAX), [4; 32], Some(1000), "gw", 900),
            GuardDecision::Reserved
        );
        assert!(matches!(
            guard.check_and_reserve(at(A, 5_000), [5; 32], Some(1000), "gw", 900),
            GuardDecision::Conflict { signed, .. } if signed == [4; 32]
        ));
    }

    #[test]
    fn entries_expire_after_max_time_plus_margin() {
        let mut guard = SequenceGuard::new(limits(10, 10));
        guard.check_and_reserve(at(A, 7), [9; 32], Some(1000), "gw", 900);
        let still_guarded = 1000 + EXPIRY_MARGIN_SECS;
        assert!(matches!(
            guard.check_and_reserve(at(A, 7), [8; 32], Some(2000), "gw", still_guarded),
            GuardDecision::Conflict { .. }
        ));
        assert_eq!(
            guard.check_and_reserve(at(A, 7), [8; 32], Some(2000), "gw", still_guarded + 1),
            GuardDecision::Reserved
        );
        assert_eq!(guard.held_by("gw"), 1);
    }

    #[test]
    fn memory_is_bounded_by_expiry() {
        let mut guard = SequenceGuard::new(limits(1_000, 1_000));
        for i in 0..10_000u64 {
            let now = 1_000_000 + i;
            let decision =
                guard.check_and_reserve(at(A, i as i64), [1; 32], Some(now + 300), "gw", now);
            assert_eq!(decision, GuardDecision::Reserved, "{i}");
        }
        assert!(
            guard.len() <= 300 + EXPIRY_MARGIN_SECS as usize + 1,
            "{} entries",
            guard.len()
        );
        assert!(guard.expiring.len() <= 300 + EXPIRY_MARGIN_SECS as usize + 1);
    }

    #[test]
    fn a_full_guard_refuses_and_never_evicts() {
        let mut guard = SequenceGuard::new(limits(3, 10));
        for sequence in 0..3 {
            assert_eq!(
                guard.check_and_reserve(at(A, sequence), [1; 32], None, "gw", 0),
                GuardDecision::Reserved
            );
        }
        assert_eq!(
            guard.check_and_reserve(at(A, 3), [1; 32], None, "gw", 0),
            GuardDecision::Full { limit: 3 }
        );
        // Nothing was forgotten: the oldest entry still conflicts.
        assert!(matches!(
            guard.check_and_reserve(at(A, 0), [2; 32], None, "gw", 0),
            GuardDecision::Conflict { .. }
        ));
        assert_eq!(
            guard.check_and_reserve(at(A, 0), [1; 32], None, "gw", 0),
            GuardDecision::SameTransaction
        );
        assert_eq!(guard.len(), 3);
    }

    #[test]
    fn each_identity_has_its_own_cap() {
        let mut guard = SequenceGuard::new(limits(10, 2));
        for sequence in 0..2 {
            guard.check_and_reserve(at(A, sequence), [1; 32], Some(1000), "noisy", 900);
        }
        assert_eq!(
            guard.check_and_reserve(at(A, 2), [1; 32], Some(1000), "noisy", 900),
            GuardDecision::IdentityFull { limit: 2 }
        );
        assert_eq!(
            guard.check_and_reserve(at(B, 0), [1; 32], Some(1000), "quiet", 900),
            GuardDecision::Reserved
        );
        // Expiry gives the noisy identity its room back.
        assert_eq!(
            guard.check_and_reserve(
                at(A, 2),
                [1; 32],
                Some(2000),
                "noisy",
                1000 + EXPIRY_MARGIN_SECS + 1
            ),
            GuardDecision::Reserved
        );
        assert_eq!(guard.held_by("noisy"), 1);
    }

    #[test]
    fn release_frees_an_unused_reservation() {
        let mut guard = SequenceGuard::new(limits(10, 10));
        guard.check_and_reserve(at(A, 7), [9; 32], Some(1000), "gw", 900);
        guard.release(at(A, 7), [9; 32]);
        assert_eq!(guard.held_by("gw"), 0);
        assert_eq!(
            guard.check_and_reserve(at(A, 7), [8; 32], Some(1000), "gw", 900),
            GuardDecision::Reserved
        );
    }

    #[test]
    fn restore_lets_the_later_record_win_and_ignores_the_caps() {
        let mut guard = SequenceGuard::new(limits(1, 1));
        guard.restore(at(A, 7), [1; 32], Some(1000), "gw", 900);
        guard.restore(range(A, 6, 7), [2; 32], Some(1000), "gw", 900);
        guard.restore(at(A, 8), [3; 32], None, "gw", 900);
        guard.restore(at(A, 9), [4; 32], Some(10), "gw", 900); // long expired
        let held: Vec<GuardEntry> = guard.entries().collect();
        assert_eq!(held.len(), 2, "{held:?}");
        assert_eq!(held[0].hash, [2; 32]);
        assert_eq!((held[0].claim.first, held[0].claim.last), (6, 7));
        assert_eq!(guard.held_by("gw"), 2);
    }

    #[test]
    fn a_snapshot_restores_every_live_entry_and_refuses_bad_bytes() {
        let mut guard = SequenceGuard::new(limits(100, 100));
        let claim = |account, first, last| SequenceClaim {
            network: TESTNET,
            account,
            first,
            last,
        };
        guard.check_and_reserve(claim(A, 7, 7), [1; 32], Some(1000), "gateway", 900);
        guard.check_and_reserve(claim(B, 3, 9), [2; 32], None, "other", 900);
        guard.check_and_reserve(claim(A, 8, 8), [3; 32], Some(100), "gateway", 90);
        let snapshot = guard.snapshot();

        let mut restored = SequenceGuard::new(limits(100, 100));
        // At 900 the entry that expired at 100 + margin is not brought back.
        assert_eq!(restored.restore_snapshot(&snapshot, 900), Ok(3));
        assert_eq!(restored.len(), 2);
        assert_eq!(restored.held_by("other"), 1);
        assert!(matches!(
            restored.check_and_reserve(claim(A, 7, 7), [9; 32], Some(1000), "gateway", 900),
            GuardDecision::Conflict { .. }
        ));
        assert!(matches!(
            restored.check_and_reserve(claim(B, 5, 5), [9; 32], None, "other", 900),
            GuardDecision::Conflict { .. }
        ));

        let mut untouched = SequenceGuard::new(limits(100, 100));
        assert!(untouched.restore_snapshot(b"XSG1", 0).is_err());
        assert!(untouched.restore_snapshot(b"SSG2\0\0\0", 0).is_err());
        assert!(
            untouched
                .restore_snapshot(&snapshot[..snapshot.len() - 1], 900)
                .is_err()
        );
        assert!(untouched.is_empty());
    }

    #[test]
    fn an_ssg1_snapshot_still_restores_and_nonces_ride_along_in_ssg2() {
        use crate::soroban::nonce_guard::{NonceDecision, NonceSlot};
        let mut guard = SequenceGuard::new(limits(100, 100));
        guard.check_and_reserve(at(A, 7), [1; 32], Some(1000), "gateway", 900);
        let slot = NonceSlot {
            network: TESTNET,
            address: "GA".into(),
            nonce: 42,
        };
        guard
            .nonces
            .check_and_reserve(slot.clone(), [5; 32], 500, 400, "gateway");
        let snapshot = guard.snapshot();
        assert_eq!(&snapshot[..4], b"SSG2");

        // Written before the nonce guard existed: the magic, then sequence entries only.
        let mut old = b"SSG1".to_vec();
        old.extend_from_slice(&snapshot[12..12 + (snapshot.len() - 12) - nonce_bytes(&guard)]);
        let mut from_old = SequenceGuard::new(limits(100, 100));
        assert_eq!(from_old.restore_snapshot(&old, 900), Ok(1));
        assert!(from_old.nonces.is_empty());

        let mut restored = SequenceGuard::new(limits(100, 100));
        assert_eq!(restored.restore_snapshot(&snapshot, 900), Ok(1));
        assert_eq!(
            restored
                .nonces
                .check_and_reserve(slot, [6; 32], 500, 401, "gateway"),
            NonceDecision::Conflict { signed: [5; 32] }
        );
    }

    fn nonce_bytes(guard: &SequenceGuard) -> usize {
        let mut bytes = Vec::new();
        guard.nonces.snapshot_into(&mut bytes);
        bytes.len()
    }
}
