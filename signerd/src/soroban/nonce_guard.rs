//! The nonce guard: once signerd has signed an authorization entry for (network, address,
//! nonce), it refuses to sign a different entry with the same triple. Signing the same entry
//! again (same credentials kind, address, nonce and invocation tree; the expiration may differ)
//! is fine. Only one entry per nonce can ever be used on chain, so two different ones signed for
//! one nonce would let whoever submits first choose what the key authorized.
//!
//! Bounded: an entry is dropped once the network's current ledger is past the latest expiration
//! signed for it (the signature can no longer be used, so another entry for the nonce is then
//! harmless), and policy bounds every expiration to `max_expiration_ledgers` ahead. When the
//! guard holds `max_entries` live entries, or the caller identity `max_entries_per_identity`,
//! new ones are refused, never evicted.
//!
//! The guard lives beside the sequence guard ([`crate::guard::SequenceGuard`] carries it), under
//! the same lock and in the same checkpoint snapshot, and is rebuilt at start from that snapshot
//! plus the `SignAuthEntry` records after it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// (network id, address as strkey bytes' hash input, nonce).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NonceSlot {
    /// sha256 of the network passphrase.
    pub network: [u8; 32],
    /// The credentials' address (strkey).
    pub address: String,
    /// The nonce.
    pub nonce: i64,
}

/// What the guard says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceDecision {
    /// Nothing was signed for the slot: now it holds this entry.
    Reserved,
    /// This very entry was signed before.
    SameEntry,
    /// A different entry was signed for the slot.
    Conflict {
        /// Its invocation hash.
        signed: [u8; 32],
    },
    /// The guard is full.
    Full {
        /// The cap.
        limit: usize,
    },
    /// The caller identity holds its maximum.
    IdentityFull {
        /// The cap.
        limit: usize,
    },
}

#[derive(Clone, Debug)]
struct Held {
    invocation: [u8; 32],
    /// The latest expiration ledger signed for it.
    expiration: u32,
    /// The caller identity it counts against.
    identity: Arc<str>,
}

/// Takes one entry off `identity`'s count.
fn uncount(per_identity: &mut HashMap<Arc<str>, usize>, identity: &Arc<str>) {
    if let Some(count) = per_identity.get_mut(identity) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            per_identity.remove(identity);
        }
    }
}

/// One entry of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The slot.
    pub slot: NonceSlot,
    /// The invocation it is held for.
    pub invocation: [u8; 32],
    /// The latest expiration signed.
    pub expiration: u32,
    /// The identity it counts against.
    pub identity: String,
}

/// One network's slots by expiration ledger: (expiration, address, nonce), earliest first.
type ExpiryHeap = BinaryHeap<Reverse<(u32, String, i64)>>;

/// The guard's state; the caller holds it behind a mutex.
#[derive(Debug)]
pub struct NonceGuard {
    entries: HashMap<NonceSlot, Held>,
    /// Per network, slots by expiration (min-heap); stale items are skipped.
    expiring: HashMap<[u8; 32], ExpiryHeap>,
    /// Entries held per identity.
    per_identity: HashMap<Arc<str>, usize>,
    max_entries: usize,
    max_entries_per_identity: usize,
}

impl NonceGuard {
    /// An empty guard holding at most `max_entries`, `max_entries_per_identity` per caller.
    pub fn new(max_entries: usize, max_entries_per_identity: usize) -> Self {
        NonceGuard {
            entries: HashMap::new(),
            expiring: HashMap::new(),
            per_identity: HashMap::new(),
            max_entries,
            max_entries_per_identity,
        }
    }

    /// Checks `slot` for the entry `invocation` expiring at `expiration`, given the network's
    /// `current` ledger, and reserves it for `identity` when free.
    pub fn check_and_reserve(
        &mut self,
        slot: NonceSlot,
        invocation: [u8; 32],
        expiration: u32,
        current: u32,
        identity: &str,
    ) -> NonceDecision {
        self.expire(&slot.network, current);
        if let Some(held) = self.entries.get_mut(&slot) {
            if held.invocation != invocation {
                return NonceDecision::Conflict {
                    signed: held.invocation,
                };
            }
            if expiration > held.expiration {
                held.expiration = expiration;
                self.expiring
                    .entry(slot.network)
                    .or_default()
                    .push(Reverse((expiration, slot.address, slot.nonce)));
            }
            return NonceDecision::SameEntry;
        }
        if self.entries.len() >= self.max_entries {
            return NonceDecision::Full {
                limit: self.max_entries,
            };
        }
        if self.per_identity.get(identity).copied().unwrap_or(0) >= self.max_entries_per_identity {
            return NonceDecision::IdentityFull {
                limit: self.max_entries_per_identity,
            };
        }
        self.insert(slot, invocation, expiration, identity);
        NonceDecision::Reserved
    }

    /// Undoes a reservation whose record could not be written.
    pub fn release(&mut self, slot: &NonceSlot, invocation: [u8; 32]) {
        if self
            .entries
            .get(slot)
            .is_some_and(|h| h.invocation == invocation)
        {
            self.remove(slot);
        }
    }

    /// Records a signature found in the audit log or a snapshot; a later record for the same
    /// slot wins, the cap does not apply.
    pub fn restore(
        &mut self,
        slot: NonceSlot,
        invocation: [u8; 32],
        expiration: u32,
        identity: &str,
    ) {
        self.remove(&slot);
        self.insert(slot, invocation, expiration, identity);
    }

    /// Entries `identity` holds.
    pub fn held_by(&self, identity: &str) -> usize {
        self.per_identity.get(identity).copied().unwrap_or(0)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the guard holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, slot: NonceSlot, invocation: [u8; 32], expiration: u32, identity: &str) {
        let identity: Arc<str> = match self.per_identity.get_key_value(identity) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(identity),
        };
        *self.per_identity.entry(identity.clone()).or_insert(0) += 1;
        self.expiring
            .entry(slot.network)
            .or_default()
            .push(Reverse((expiration, slot.address.clone(), slot.nonce)));
        // Callers remove the slot first; a replaced entry would keep its count.
        if let Some(old) = self.entries.insert(
            slot,
            Held {
                invocation,
                expiration,
                identity,
            },
        ) {
            uncount(&mut self.per_identity, &old.identity);
        }
    }

    fn remove(&mut self, slot: &NonceSlot) {
        if let Some(old) = self.entries.remove(slot) {
            uncount(&mut self.per_identity, &old.identity);
        }
    }

    /// Drops the entries of `network` whose expiration is before `current`.
    fn expire(&mut self, network: &[u8; 32], current: u32) {
        let Some(heap) = self.expiring.get_mut(network) else {
            return;
        };
        while let Some(Reverse((expiration, _, _))) = heap.peek() {
            if *expiration >= current {
                break;
            }
            let Some(Reverse((expiration, address, nonce))) = heap.pop() else {
                break;
            };
            let slot = NonceSlot {
                network: *network,
                address,
                nonce,
            };
            // Only if the live entry is not held longer by a later signature.
            if self
                .entries
                .get(&slot)
                .is_some_and(|h| h.expiration == expiration)
                && let Some(old) = self.entries.remove(&slot)
            {
                uncount(&mut self.per_identity, &old.identity);
            }
        }
    }

    /// Every entry as bytes, for the guard snapshot: per entry network (32), nonce (i64 BE),
    /// expiration (u32 BE), invocation hash (32), then the address and the identity, each as a
    /// length (u16 BE) and UTF-8.
    pub fn snapshot_into(&self, bytes: &mut Vec<u8>) {
        let mut entries: Vec<_> = self.entries.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (slot, held) in entries {
            bytes.extend_from_slice(&slot.network);
            bytes.extend_from_slice(&slot.nonce.to_be_bytes());
            bytes.extend_from_slice(&held.expiration.to_be_bytes());
            bytes.extend_from_slice(&held.invocation);
            for text in [slot.address.as_str(), &held.identity] {
                // Addresses are 56 bytes and identities certificate names; a longer one is cut.
                let text = &text.as_bytes()[..text.len().min(u16::MAX.into())];
                bytes.extend_from_slice(&(text.len() as u16).to_be_bytes());
                bytes.extend_from_slice(text);
            }
        }
    }

    /// Parses what [`Self::snapshot_into`] wrote.
    pub fn parse_snapshot(mut rest: &[u8]) -> Result<Vec<SnapshotEntry>, String> {
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
            if rest.len() < n {
                return Err("nonce snapshot: truncated entry".into());
            }
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            Ok(head)
        }
        fn array<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], String> {
            take(rest, N)?
                .try_into()
                .map_err(|_| "nonce snapshot: truncated entry".to_owned())
        }
        let mut entries = Vec::new();
        while !rest.is_empty() {
            let network = array::<32>(&mut rest)?;
            let nonce = i64::from_be_bytes(array(&mut rest)?);
            let expiration = u32::from_be_bytes(array(&mut rest)?);
            let invocation = array::<32>(&mut rest)?;
            let mut text = || -> Result<String, String> {
                let length = u16::from_be_bytes(array(&mut rest)?);
                std::str::from_utf8(take(&mut rest, length.into())?)
                    .map(str::to_owned)
                    .map_err(|_| "nonce snapshot: text is not UTF-8".to_owned())
            };
            let address = text()?;
            let identity = text()?;
            entries.push(SnapshotEntry {
                slot: NonceSlot {
                    network,
                    address,
                    nonce,
                },
                invocation,
                expiration,
                identity,
            });
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(nonce: i64) -> NonceSlot {
        NonceSlot {
            network: [1; 32],
            address: "GA".into(),
            nonce,
        }
    }

    #[test]
    fn one_entry_per_nonce_until_it_expires() {
        let mut guard = NonceGuard::new(10, 10);
        assert_eq!(
            guard.check_and_reserve(slot(5), [1; 32], 100, 90, "gw"),
            NonceDecision::Reserved
        );
        assert_eq!(
            guard.check_and_reserve(slot(5), [1; 32], 101, 90, "gw"),
            NonceDecision::SameEntry
        );
        assert_eq!(
            guard.check_and_reserve(slot(5), [2; 32], 100, 95, "gw"),
            NonceDecision::Conflict { signed: [1; 32] }
        );
        // Another network is another slot.
        let mut elsewhere = slot(5);
        elsewhere.network = [2; 32];
        assert_eq!(
            guard.check_and_reserve(elsewhere, [2; 32], 100, 95, "gw"),
            NonceDecision::Reserved
        );
        // Held until the latest expiration signed (101) is past.
        assert!(matches!(
            guard.check_and_reserve(slot(5), [2; 32], 200, 101, "gw"),
            NonceDecision::Conflict { .. }
        ));
        assert_eq!(
            guard.check_and_reserve(slot(5), [2; 32], 200, 102, "gw"),
            NonceDecision::Reserved
        );
    }

    #[test]
    fn a_full_guard_refuses_and_a_snapshot_round_trips() {
        let mut guard = NonceGuard::new(2, 10);
        guard.check_and_reserve(slot(1), [1; 32], 100, 90, "gw");
        guard.check_and_reserve(slot(2), [2; 32], 100, 90, "gw");
        assert_eq!(
            guard.check_and_reserve(slot(3), [3; 32], 100, 90, "gw"),
            NonceDecision::Full { limit: 2 }
        );
        let mut bytes = Vec::new();
        guard.snapshot_into(&mut bytes);
        let entries = NonceGuard::parse_snapshot(&bytes).unwrap_or_default();
        assert_eq!(entries.len(), 2);
        let mut restored = NonceGuard::new(2, 10);
        for e in entries {
            restored.restore(e.slot, e.invocation, e.expiration, &e.identity);
        }
        assert_eq!(restored.held_by("gw"), 2);
        assert!(matches!(
            restored.check_and_reserve(slot(1), [9; 32], 100, 90, "gw"),
            NonceDecision::Conflict { .. }
        ));
        assert!(NonceGuard::parse_snapshot(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn one_identity_cannot_fill_the_nonce_guard() {
        let mut guard = NonceGuard::new(10, 2);
        for nonce in 0..2 {
            assert_eq!(
                guard.check_and_reserve(slot(nonce), [1; 32], 100, 90, "noisy"),
                NonceDecision::Reserved
            );
        }
        assert_eq!(
            guard.check_and_reserve(slot(2), [1; 32], 100, 90, "noisy"),
            NonceDecision::IdentityFull { limit: 2 }
        );
        assert_eq!(
            guard.check_and_reserve(slot(2), [1; 32], 100, 90, "quiet"),
            NonceDecision::Reserved
        );
        // Expiry gives the room back.
        assert_eq!(
            guard.check_and_reserve(slot(3), [1; 32], 200, 101, "noisy"),
            NonceDecision::Reserved
        );
        assert_eq!(guard.held_by("noisy"), 1);
    }
}
