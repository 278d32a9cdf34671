//! The sequence guard: once signerd has signed transaction H for (source account, sequence S), it
//! refuses to sign a different transaction for the same (account, S). Re-signing H is fine. Time
//! bounds plus this guard are what make "resubmit the same bytes, never rebuild blindly" safe for
//! the gateway: two different transactions with the same sequence can never both be signed while
//! either could still be applied.
//!
//! Memory stays bounded: an entry whose transaction has a `max_time` is dropped once that time is
//! past (a transaction can never be applied after its `max_time`, so another one for the same
//! sequence is then harmless). Entries without a `max_time` (keys whose policy does not require
//! time bounds) are kept up to `max_entries`, oldest dropped first, with a warning.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use crate::keys::PublicKey;

/// How long after `max_time` an entry is kept, to absorb clock skew between signerd and the
/// network's ledger close times.
pub const EXPIRY_MARGIN_SECS: u64 = 60;

/// What the guard says about a (account, sequence, hash) triple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardDecision {
    /// Nothing was signed for this (account, sequence): it is now reserved for this hash.
    Reserved,
    /// This very transaction was signed before; signing it again is fine.
    SameTransaction,
    /// A different transaction was signed for this (account, sequence).
    Conflict {
        /// The hash signed before.
        signed: [u8; 32],
    },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    hash: [u8; 32],
    /// Unix seconds after which the entry may be dropped; `None`: never expires.
    expires_at: Option<u64>,
}

type Slot = (PublicKey, i64);

/// The guard's state. Not synchronised: the caller holds it behind a mutex.
pub struct SequenceGuard {
    entries: HashMap<Slot, Entry>,
    /// Expiring entries by expiry time (min-heap).
    expiring: BinaryHeap<Reverse<(u64, [u8; 32], i64)>>,
    /// Non-expiring entries in insertion order.
    permanent: VecDeque<Slot>,
    max_entries: usize,
}

impl SequenceGuard {
    /// An empty guard that keeps at most `max_entries` non-expiring entries.
    pub fn new(max_entries: usize) -> Self {
        SequenceGuard {
            entries: HashMap::new(),
            expiring: BinaryHeap::new(),
            permanent: VecDeque::new(),
            max_entries,
        }
    }

    /// Checks (account, sequence) against `hash` and reserves it when free. `max_time` is the
    /// transaction's upper time bound (0 or `None`: unbounded); `now` is Unix seconds.
    pub fn check_and_reserve(
        &mut self,
        account: PublicKey,
        sequence: i64,
        hash: [u8; 32],
        max_time: Option<u64>,
        now: u64,
    ) -> GuardDecision {
        self.expire(now);
        let slot = (account, sequence);
        if let Some(entry) = self.entries.get(&slot) {
            return if entry.hash == hash {
                GuardDecision::SameTransaction
            } else {
                GuardDecision::Conflict { signed: entry.hash }
            };
        }
        self.insert(slot, hash, max_time);
        GuardDecision::Reserved
    }

    /// Undoes a reservation that was never used (the audit record could not be written).
    pub fn release(&mut self, account: PublicKey, sequence: i64, hash: [u8; 32]) {
        let slot = (account, sequence);
        if self.entries.get(&slot).is_some_and(|e| e.hash == hash) {
            self.entries.remove(&slot);
            // Heap and queue entries for the slot are skipped lazily when they come up.
        }
    }

    /// Records a signature found in the audit log (rebuilding the guard at start). A later
    /// record for the same slot replaces an earlier one.
    pub fn restore(
        &mut self,
        account: PublicKey,
        sequence: i64,
        hash: [u8; 32],
        max_time: Option<u64>,
        now: u64,
    ) {
        let expires_at = expiry(max_time);
        if expires_at.is_some_and(|t| t < now) {
            return;
        }
        self.insert((account, sequence), hash, max_time);
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the guard holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, slot: Slot, hash: [u8; 32], max_time: Option<u64>) {
        let expires_at = expiry(max_time);
        self.entries.insert(slot, Entry { hash, expires_at });
        match expires_at {
            Some(t) => self.expiring.push(Reverse((t, slot.0.0, slot.1))),
            None => {
                self.permanent.push_back(slot);
                while self.permanent.len() > self.max_entries {
                    let Some(old) = self.permanent.pop_front() else {
                        break;
                    };
                    if self
                        .entries
                        .get(&old)
                        .is_some_and(|e| e.expires_at.is_none())
                    {
                        self.entries.remove(&old);
                        tracing::warn!(
                            max_entries = self.max_entries,
                            "sequence guard full: forgot the oldest transaction without time bounds"
                        );
                    }
                }
            }
        }
    }

    fn expire(&mut self, now: u64) {
        while let Some(Reverse((expires_at, account, sequence))) = self.expiring.peek().copied() {
            if expires_at >= now {
                break;
            }
            self.expiring.pop();
            let slot = (PublicKey(account), sequence);
            // Only remove if the live entry is the one this heap item was pushed for.
            if self
                .entries
                .get(&slot)
                .is_some_and(|e| e.expires_at == Some(expires_at))
            {
                self.entries.remove(&slot);
            }
        }
    }
}

fn expiry(max_time: Option<u64>) -> Option<u64> {
    max_time
        .filter(|t| *t > 0)
        .map(|t| t.saturating_add(EXPIRY_MARGIN_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PublicKey = PublicKey([1; 32]);
    const B: PublicKey = PublicKey([2; 32]);

    #[test]
    fn same_hash_again_is_fine_a_different_hash_conflicts() {
        let mut guard = SequenceGuard::new(10);
        assert_eq!(
            guard.check_and_reserve(A, 7, [9; 32], Some(1000), 900),
            GuardDecision::Reserved
        );
        assert_eq!(
            guard.check_and_reserve(A, 7, [9; 32], Some(1000), 901),
            GuardDecision::SameTransaction
        );
        assert_eq!(
            guard.check_and_reserve(A, 7, [8; 32], Some(1000), 902),
            GuardDecision::Conflict { signed: [9; 32] }
        );
        // Other sequences and other accounts are independent.
        assert_eq!(
            guard.check_and_reserve(A, 8, [8; 32], Some(1000), 902),
            GuardDecision::Reserved
        );
        assert_eq!(
            guard.check_and_reserve(B, 7, [8; 32], Some(1000), 902),
            GuardDecision::Reserved
        );
    }

    #[test]
    fn entries_expire_after_max_time_plus_margin() {
        let mut guard = SequenceGuard::new(10);
        guard.check_and_reserve(A, 7, [9; 32], Some(1000), 900);
        let still_guarded = 1000 + EXPIRY_MARGIN_SECS;
        assert!(matches!(
            guard.check_and_reserve(A, 7, [8; 32], Some(2000), still_guarded),
            GuardDecision::Conflict { .. }
        ));
        assert_eq!(
            guard.check_and_reserve(A, 7, [8; 32], Some(2000), still_guarded + 1),
            GuardDecision::Reserved
        );
    }

    #[test]
    fn memory_is_bounded_by_expiry() {
        let mut guard = SequenceGuard::new(10);
        for i in 0..10_000u64 {
            let now = 1_000_000 + i;
            guard.check_and_reserve(A, i as i64, [1; 32], Some(now + 300), now);
        }
        assert!(
            guard.len() <= 300 + EXPIRY_MARGIN_SECS as usize + 1,
            "{} entries",
            guard.len()
        );
        assert!(guard.expiring.len() <= 300 + EXPIRY_MARGIN_SECS as usize + 1);
    }

    #[test]
    fn unbounded_entries_are_capped_oldest_first() {
        let mut guard = SequenceGuard::new(3);
        for seq in 0..5 {
            guard.check_and_reserve(A, seq, [1; 32], None, 0);
        }
        assert_eq!(guard.len(), 3);
        assert_eq!(
            guard.check_and_reserve(A, 0, [2; 32], None, 0),
            GuardDecision::Reserved
        );
        assert!(matches!(
            guard.check_and_reserve(A, 4, [2; 32], None, 0),
            GuardDecision::Conflict { .. }
        ));
    }

    #[test]
    fn release_frees_an_unused_reservation() {
        let mut guard = SequenceGuard::new(10);
        guard.check_and_reserve(A, 7, [9; 32], Some(1000), 900);
        guard.release(A, 7, [9; 32]);
        assert_eq!(
            guard.check_and_reserve(A, 7, [8; 32], Some(1000), 900),
            GuardDecision::Reserved
        );
    }
}
