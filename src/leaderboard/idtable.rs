//! The leaderboard's id → (slot, value) map: open addressing with linear probing
//! over one array of 16-byte buckets.
//!
//! A bucket holds 32 bits of the id's hash, the user's slot and its value, so a
//! lookup reads one cache line of the table and learns the user's score at once:
//! the caller can start loading the user's entry (to confirm the id) and the tree
//! leaf holding its key in parallel, instead of one after the other. A
//! general-purpose swiss table keeps control bytes and buckets in separate arrays,
//! which at a million users costs one more cache miss per lookup, and the value
//! would sit in a third place. The home bucket comes from the stored 32 bits by
//! multiply-shift ("fastrange"), so the table can rehash itself and remove without
//! asking for the ids, may have any size (not only a power of two) and grows in
//! steps of 1.5× instead of doubling. Among buckets sharing a home the stored bits
//! still differ in their low `32 − log2(buckets)` bits, which is what makes a false
//! match (one extra id comparison) rare.
//!
//! Deletion shifts the following buckets of the probe run back (no tombstones), so
//! lookups never slow down as users come and go.

use crate::mem;

/// Slot value marking an empty bucket (never a user's slot).
const EMPTY_SLOT: u32 = u32::MAX;
/// Grow once more than this fraction of buckets is used (numerator / 8).
const MAX_LOAD_EIGHTHS: usize = 7;
const MIN_BUCKETS: usize = 16;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    bits: u32,
    slot: u32,
    value: f64,
}

const EMPTY: Bucket = Bucket {
    bits: 0,
    slot: EMPTY_SLOT,
    value: 0.0,
};

/// A stored user as found by a lookup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Found {
    /// Bucket index, for [`IdTable::set_value`]; valid until the table changes.
    pub pos: usize,
    /// The user's slot in the leaderboard's entries.
    pub slot: u32,
    /// The user's value at the landmark.
    pub value: f64,
}

/// Maps id hashes to slots and values; the caller supplies the equality check
/// against the id stored at a slot, so ids are stored once (in the entries).
#[derive(Clone, Debug, Default)]
pub(crate) struct IdTable {
    buckets: Vec<Bucket>,
    len: usize,
}

#[inline]
fn bits_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

impl IdTable {
    /// Number of users stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }

    /// Removes every user and releases the array.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Every stored `(slot, value)`, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.buckets
            .iter()
            .filter(|b| b.slot != EMPTY_SLOT)
            .map(|b| (b.slot, b.value))
    }

    /// Applies `f` to every stored value.
    pub fn map_values(&mut self, f: impl Fn(f64) -> f64) {
        for b in self.buckets.iter_mut().filter(|b| b.slot != EMPTY_SLOT) {
            b.value = f(b.value);
        }
    }

    #[inline]
    fn home(&self, bits: u32) -> usize {
        ((u64::from(bits) * self.buckets.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.buckets.len() {
            0
        } else {
            i + 1
        }
    }

    #[inline]
    fn found(&self, pos: usize) -> Found {
        let b = self.buckets[pos];
        Found {
            pos,
            slot: b.slot,
            value: b.value,
        }
    }

    /// Starts loading the bucket where a lookup of `hash` begins, so that work
    /// done before the lookup overlaps the cache miss.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if let Some(bucket) = self.buckets.get(self.home(bits_of(hash))) {
            mem::prefetch(bucket);
        }
    }

    /// The first user stored under `hash`'s bits, before any id comparison: right
    /// unless two ids share those bits, which the caller rules out by comparing
    /// ids (and then falls back to [`IdTable::find`]).
    #[inline]
    pub fn first_match(&self, hash: u64) -> Option<Found> {
        self.find(hash, |_| true)
    }

    /// The user stored under `hash` for which `eq(slot)` holds.
    #[inline]
    pub fn find(&self, hash: u64, eq: impl Fn(u32) -> bool) -> Option<Found> {
        if self.buckets.is_empty() {
            return None;
        }
        let bits = bits_of(hash);
        let mut i = self.home(bits);
        loop {
            let b = &self.buckets[i];
            if b.slot == EMPTY_SLOT {
                return None;
            }
            if b.bits == bits && eq(b.slot) {
                return Some(self.found(i));
            }
            i = self.next(i);
        }
    }

    /// Replaces the value of the user found at `pos`.
    #[inline]
    pub fn set_value(&mut self, pos: usize, value: f64) {
        debug_assert_ne!(self.buckets[pos].slot, EMPTY_SLOT);
        self.buckets[pos].value = value;
    }

    /// Makes room for `additional` more users without growing on the way.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.len + additional;
        if needed * 8 > self.buckets.len() * MAX_LOAD_EIGHTHS {
            self.resize((needed * 8 / MAX_LOAD_EIGHTHS + 1).max(MIN_BUCKETS));
        }
    }

    /// Stores `slot` and `value` under `hash`; the caller guarantees that no equal
    /// id is stored and that `slot` is not `u32::MAX` (the empty marker).
    pub fn insert_unique(&mut self, hash: u64, slot: u32, value: f64) {
        assert_ne!(slot, EMPTY_SLOT, "slot u32::MAX is reserved");
        if (self.len + 1) * 8 > self.buckets.len() * MAX_LOAD_EIGHTHS {
            let grown = (self.buckets.len() + self.buckets.len() / 2).max(MIN_BUCKETS);
            self.resize(grown);
        }
        self.place(Bucket {
            bits: bits_of(hash),
            slot,
            value,
        });
        self.len += 1;
    }

    fn place(&mut self, bucket: Bucket) {
        let mut i = self.home(bucket.bits);
        while self.buckets[i].slot != EMPTY_SLOT {
            i = self.next(i);
        }
        self.buckets[i] = bucket;
    }

    fn resize(&mut self, buckets: usize) {
        let mut fresh = Vec::with_capacity(buckets);
        mem::advise_huge_pages(&fresh);
        fresh.resize(buckets, EMPTY);
        let old = std::mem::replace(&mut self.buckets, fresh);
        for b in old.into_iter().filter(|b| b.slot != EMPTY_SLOT) {
            self.place(b);
        }
    }

    /// Removes `slot`, stored under `hash`; false if it is not there.
    pub fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let Some(found) = self.find(hash, |s| s == slot) else {
            return false;
        };
        // Backward-shift deletion: walk the rest of the run and move back every
        // bucket that may sit at the hole (its home is not cyclically after the
        // hole), so each stays reachable from its home without crossing an empty one.
        let n = self.buckets.len();
        let mut hole = found.pos;
        let mut j = self.next(hole);
        loop {
            let b = self.buckets[j];
            if b.slot == EMPTY_SLOT {
                break;
            }
            let home = self.home(b.bits);
            if (j + n - home) % n >= (j + n - hole) % n {
                self.buckets[hole] = b;
                hole = j;
            }
            j = self.next(j);
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A hash with four distinct values of the bits the table uses, one of them
    /// homing at the last bucket, so runs are long and wrap past the end.
    fn crowded(key: u32) -> u64 {
        let bits: u64 = match key % 4 {
            0 => 0xFFFF_FFFF,
            1 => 0,
            2 => 0x8000_0000,
            _ => 0x7FFF_FFFF,
        };
        bits << 32 | u64::from(key)
    }

    fn value_of(slot: u32) -> f64 {
        f64::from(slot) * 1.5
    }

    fn check(table: &IdTable, model: &HashMap<u32, u64>) {
        assert_eq!(table.len(), model.len());
        for (&slot, &hash) in model {
            let found = table.find(hash, |s| s == slot).expect("stored slot found");
            assert_eq!((found.slot, found.value), (slot, value_of(slot)));
        }
        let mut stored: Vec<(u32, f64)> = table.iter().collect();
        stored.sort_unstable_by_key(|&(slot, _)| slot);
        let mut expected: Vec<(u32, f64)> = model.keys().map(|&s| (s, value_of(s))).collect();
        expected.sort_unstable_by_key(|&(slot, _)| slot);
        assert_eq!(stored, expected);
        assert!(table.len() * 8 <= table.buckets.len() * MAX_LOAD_EIGHTHS);
    }

    #[test]
    fn empty_table_finds_nothing_and_removes_nothing() {
        let mut table = IdTable::default();
        assert_eq!(table.find(42, |_| true), None);
        assert_eq!(table.first_match(42), None);
        assert!(!table.remove(42, 1));
        assert_eq!(table.heap_bytes(), 0);
    }

    #[test]
    fn grows_by_half_and_keeps_every_user() {
        let mut table = IdTable::default();
        let mut model = HashMap::new();
        let mut sizes = Vec::new();
        for slot in 0..10_000u32 {
            let hash = crowded(slot).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            table.insert_unique(hash, slot, value_of(slot));
            model.insert(slot, hash);
            if sizes.last() != Some(&table.buckets.len()) {
                sizes.push(table.buckets.len());
            }
        }
        check(&table, &model);
        for pair in sizes.windows(2) {
            assert_eq!(pair[1], pair[0] + pair[0] / 2, "growth steps {sizes:?}");
        }
    }

    #[test]
    fn values_are_updated_in_place_and_mapped() {
        let mut table = IdTable::default();
        for slot in 0..100 {
            table.insert_unique(crowded(slot), slot, 1.0);
        }
        let found = table.find(crowded(7), |s| s == 7).expect("found");
        table.set_value(found.pos, 9.5);
        table.map_values(|v| v * 2.0);
        for slot in 0..100 {
            let want = if slot == 7 { 19.0 } else { 2.0 };
            assert_eq!(
                table.find(crowded(slot), |s| s == slot).map(|f| f.value),
                Some(want)
            );
        }
    }

    #[test]
    fn equal_hash_bits_fall_back_to_the_equality_check() {
        let mut table = IdTable::default();
        let hash = 0xABCD_0000_0000_0000;
        for slot in 0..5 {
            table.insert_unique(hash, slot, value_of(slot));
        }
        assert_eq!(table.first_match(hash).map(|f| f.slot), Some(0));
        for slot in 0..5 {
            assert_eq!(table.find(hash, |s| s == slot).map(|f| f.slot), Some(slot));
        }
        assert_eq!(table.find(hash, |_| false), None);
        assert!(table.remove(hash, 2));
        assert!(!table.remove(hash, 2));
        assert_eq!(table.find(hash, |s| s == 2), None);
        assert_eq!(table.find(hash, |s| s == 4).map(|f| f.slot), Some(4));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Random inserts and removes with heavily colliding hashes (long runs that
        /// wrap past the end of the array) agree with a `HashMap`.
        #[test]
        fn matches_a_hashmap(ops in prop::collection::vec((any::<bool>(), 0u32..300), 1..600)) {
            let mut table = IdTable::default();
            let mut model: HashMap<u32, u64> = HashMap::new();
            for (insert, slot) in ops {
                let hash = crowded(slot);
                if insert {
                    if let std::collections::hash_map::Entry::Vacant(e) = model.entry(slot) {
                        table.insert_unique(hash, slot, value_of(slot));
                        e.insert(hash);
                    }
                } else {
                    prop_assert_eq!(table.remove(hash, slot), model.remove(&slot).is_some());
                }
            }
            check(&table, &model);
        }
    }
}
