//! Space-Saving heavy hitters (Metwally, Agrawal & El Abbadi 2005).
//!
//! A [`SpaceSaving`] summary monitors at most `capacity` keys, each with a
//! count and an error. A monitored key's count is never below its true count
//! and `count - error` never above it. When a new key arrives and the summary
//! is full, the key with the smallest count is evicted and the new key takes
//! over its counter: count = evicted count + new count, error = evicted count.
//! In a summary fed only by `add`, any key whose true count exceeds
//! `total / capacity` is guaranteed to be monitored.
//!
//! The summary also keeps a *floor*: an upper bound on the true count of any
//! key it does not monitor. It is 0 while no key was ever dropped (counts are
//! then exact), becomes the evicted count on each eviction, and after a merge
//! is the larger of the two floors' sum and the largest count dropped. Every
//! monitored count is at least the floor, so for a full summary it is at most
//! the minimum count (the bound Agarwal et al. use), and often tighter.
//!
//! Summaries are mergeable (Agarwal et al. 2012, *Mergeable summaries*): a key
//! gets the sum of its counts on both sides, a side that does not monitor it
//! contributing its floor (to count and error), and the `capacity` largest
//! combined counts are kept. Merging summaries that never dropped a key is
//! exact.
//!
//! Layout: the keys live in a slab of slots; a [`HashTable`] maps a key's hash
//! to its slot and an indexed binary min-heap over the slots, ordered by count,
//! finds the eviction victim. An update is O(1) expected for the lookup plus
//! O(log capacity) for the heap, and an update of a monitored key allocates
//! nothing.

use hashbrown::HashTable;

use super::hash::hash64;
use crate::error::{Error, Result};

/// Largest accepted capacity (slots are indexed by `u32`).
pub const MAX_CAPACITY: usize = 1 << 26;

#[derive(Debug, Clone)]
struct Slot {
    key: String,
    /// [`hash64`] of `key`.
    hash: u64,
    count: u64,
    error: u64,
    /// Position of this slot in the heap.
    heap_pos: u32,
}

/// A bounded Space-Saving summary of string keys: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    capacity: usize,
    total: u64,
    floor: u64,
    slots: Vec<Slot>,
    /// Min-heap of slot indices by count.
    heap: Vec<u32>,
    /// Slot indices, hashed by their key's [`hash64`].
    index: HashTable<u32>,
}

impl SpaceSaving {
    /// An empty summary monitoring at most `capacity` keys.
    ///
    /// Nothing is allocated until keys arrive; memory then stays proportional
    /// to `capacity` (plus the key bytes) whatever the number of distinct keys.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `1 <= capacity <= MAX_CAPACITY`.
    pub fn new(capacity: usize) -> Result<SpaceSaving> {
        if !(1..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::invalid(format!(
                "Space-Saving capacity {capacity} is outside 1..={MAX_CAPACITY}"
            )));
        }
        Ok(SpaceSaving {
            capacity,
            total: 0,
            floor: 0,
            slots: Vec::new(),
            heap: Vec::new(),
            index: HashTable::new(),
        })
    }

    /// Maximum number of monitored keys.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of monitored keys (at most [`capacity`](Self::capacity)).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key is monitored.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Sum of all counts added (saturating), including merged summaries'.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Upper bound on the true count of any key that is not monitored.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// `(count, error)` of `key` if it is monitored.
    pub fn get(&self, key: &str) -> Option<(u64, u64)> {
        self.find(key, hash64(key.as_bytes())).map(|i| {
            let s = &self.slots[i];
            (s.count, s.error)
        })
    }

    /// Adds `count` occurrences of `key` (a zero count is ignored).
    #[inline]
    pub fn add(&mut self, key: &str, count: u64) {
        self.add_hashed(key, hash64(key.as_bytes()), count);
    }

    /// [`add`](Self::add) with the key's [`hash64`] already computed.
    pub(crate) fn add_hashed(&mut self, key: &str, hash: u64, count: u64) {
        if count == 0 {
            return;
        }
        self.total = self.total.saturating_add(count);
        if let Some(i) = self.find(key, hash) {
            let slot = &mut self.slots[i];
            slot.count = slot.count.saturating_add(count);
            let pos = slot.heap_pos as usize;
            self.sift_down(pos);
        } else if self.slots.len() < self.capacity {
            let floor = self.floor;
            self.push_new(key, hash, floor.saturating_add(count), floor);
        } else {
            // Space-Saving: the new key takes over the minimum counter.
            let min = self.count_at(0);
            let evicted = self.replace_min(key, hash, min.saturating_add(count), min);
            self.floor = self.floor.max(evicted);
        }
    }

    fn find(&self, key: &str, hash: u64) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                let s = &slots[i as usize];
                s.hash == hash && s.key == key
            })
            .map(|&i| i as usize)
    }

    /// Appends a new slot (the summary is not full).
    fn push_new(&mut self, key: &str, hash: u64, count: u64, error: u64) {
        debug_assert!(self.slots.len() < self.capacity);
        let i = self.slots.len();
        // Grow geometrically but never beyond the capacity.
        if self.slots.len() == self.slots.capacity() {
            let extra = self
                .slots
                .len()
                .max(4)
                .min(self.capacity - self.slots.len());
            self.slots.reserve_exact(extra);
            self.heap.reserve_exact(extra);
        }
        self.slots.push(Slot {
            key: key.to_owned(),
            hash,
            count,
            error,
            heap_pos: i as u32,
        });
        self.heap.push(i as u32);
        let slots = &self.slots;
        self.index
            .insert_unique(hash, i as u32, |&j| slots[j as usize].hash);
        self.sift_up(i);
    }

    /// Evicts the minimum-count key, gives its slot to `key` with the given
    /// count and error, and returns the evicted count.
    fn replace_min(&mut self, key: &str, hash: u64, count: u64, error: u64) -> u64 {
        let victim = self.heap[0] as usize;
        let old_hash = self.slots[victim].hash;
        if let Ok(entry) = self.index.find_entry(old_hash, |&j| j as usize == victim) {
            entry.remove();
        }
        let slot = &mut self.slots[victim];
        let evicted = slot.count;
        // Reuses the evicted key's buffer when it is large enough.
        slot.key.clear();
        slot.key.push_str(key);
        slot.hash = hash;
        slot.count = count;
        slot.error = error;
        let slots = &self.slots;
        self.index
            .insert_unique(hash, victim as u32, |&j| slots[j as usize].hash);
        self.sift_down(0);
        evicted
    }

    #[inline]
    fn count_at(&self, pos: usize) -> u64 {
        self.slots[self.heap[pos] as usize].count
    }

    #[inline]
    fn place(&mut self, pos: usize, slot: u32) {
        self.heap[pos] = slot;
        self.slots[slot as usize].heap_pos = pos as u32;
    }

    fn sift_up(&mut self, mut pos: usize) {
        let moving = self.heap[pos];
        let count = self.slots[moving as usize].count;
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.count_at(parent) <= count {
                break;
            }
            let p = self.heap[parent];
            self.place(pos, p);
            pos = parent;
        }
        self.place(pos, moving);
    }

    fn sift_down(&mut self, mut pos: usize) {
        let len = self.heap.len();
        let moving = self.heap[pos];
        let count = self.slots[moving as usize].count;
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let mut child = left;
            if right < len && self.count_at(right) < self.count_at(left) {
                child = right;
            }
            if self.count_at(child) >= count {
                break;
            }
            let c = self.heap[child];
            self.place(pos, c);
            pos = child;
        }
        self.place(pos, moving);
    }

    /// The `k` monitored keys with the largest counts as `(key, count, error)`,
    /// ordered by count descending, then key bytes ascending. The true count
    /// of each lies in `count - error ..= count`.
    pub fn top(&self, k: usize) -> Vec<(String, u64, u64)> {
        let k = k.min(self.slots.len());
        if k == 0 {
            return Vec::new();
        }
        // Select on borrowed keys, clone only the k winners.
        let mut refs: Vec<&Slot> = self.slots.iter().collect();
        let order = |a: &&Slot, b: &&Slot| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.key.as_bytes().cmp(b.key.as_bytes()))
        };
        if k < refs.len() {
            refs.select_nth_unstable_by(k - 1, order);
            refs.truncate(k);
        }
        refs.sort_unstable_by(order);
        refs.into_iter()
            .map(|s| (s.key.clone(), s.count, s.error))
            .collect()
    }

    /// Merges `other` into `self` (which keeps its capacity): see the
    /// [module docs](self).
    pub fn merge(&mut self, other: &SpaceSaving) {
        self.total = self.total.saturating_add(other.total);
        if other.slots.is_empty() && other.floor == 0 {
            return;
        }
        let (own_floor, other_floor) = (self.floor, other.floor);
        // Keys not monitored by `other` had at most its floor there.
        for s in &mut self.slots {
            let (c, e) = match other.find(&s.key, s.hash) {
                Some(j) => (other.slots[j].count, other.slots[j].error),
                None => (other_floor, other_floor),
            };
            s.count = s.count.saturating_add(c);
            s.error = s.error.saturating_add(e);
        }
        // Keys only `other` monitors had at most our floor here.
        let mut incoming: Vec<(&Slot, u64, u64)> = other
            .slots
            .iter()
            .filter(|s| self.find(&s.key, s.hash).is_none())
            .map(|s| {
                (
                    s,
                    s.count.saturating_add(own_floor),
                    s.error.saturating_add(own_floor),
                )
            })
            .collect();
        self.heapify();
        // A key neither side monitors had at most both floors.
        let mut floor = own_floor.saturating_add(other_floor);
        if self.slots.len() + incoming.len() > self.capacity {
            // Keep the `capacity` largest: the incoming keys by decreasing
            // count fill the free slots, then displace smaller minima.
            incoming.sort_unstable_by(|a, b| {
                b.1.cmp(&a.1)
                    .then_with(|| a.0.key.as_bytes().cmp(b.0.key.as_bytes()))
            });
        }
        for (s, count, error) in incoming {
            if self.slots.len() < self.capacity {
                self.push_new(&s.key, s.hash, count, error);
            } else if count > self.count_at(0) {
                let dropped = self.replace_min(&s.key, s.hash, count, error);
                floor = floor.max(dropped);
            } else {
                // Sorted: every remaining incoming count is at most this one.
                floor = floor.max(count);
                break;
            }
        }
        self.floor = floor;
    }

    /// Restores the heap order after arbitrary count changes.
    fn heapify(&mut self) {
        for pos in (0..self.heap.len() / 2).rev() {
            self.sift_down(pos);
        }
    }

    /// Appends the summary (capacity, total, floor, then each key with its
    /// count and error) for a journal's checkpoint.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use crate::journal::codec::Put;
        out.put_u64(self.capacity as u64);
        out.put_u64(self.total);
        out.put_u64(self.floor);
        out.put_u64(self.slots.len() as u64);
        for s in &self.slots {
            out.put_str(&s.key);
            out.put_u64(s.count);
            out.put_u64(s.error);
        }
    }

    /// Reads what [`SpaceSaving::encode`] wrote ([`Error::Corrupt`] if invalid).
    pub fn decode(g: &mut crate::journal::codec::Get<'_>) -> Result<SpaceSaving> {
        let capacity = usize::try_from(g.u64()?).unwrap_or(usize::MAX);
        let mut out = SpaceSaving::new(capacity).map_err(|e| Error::corrupt(e.to_string()))?;
        out.total = g.u64()?;
        out.floor = g.u64()?;
        let n = g.count(20)?;
        if n > capacity {
            return Err(Error::corrupt(
                "a Space-Saving summary holds more keys than its capacity",
            ));
        }
        for _ in 0..n {
            let key = g.str()?;
            let hash = hash64(key.as_bytes());
            if out.find(key, hash).is_some() {
                return Err(Error::corrupt("a Space-Saving summary holds a key twice"));
            }
            let (count, error) = (g.u64()?, g.u64()?);
            if error > count {
                return Err(Error::corrupt("a Space-Saving error exceeds its count"));
            }
            out.push_new(key, hash, count, error);
        }
        out.heapify();
        Ok(out)
    }

    /// Forgets every key, the total and the floor (keeps the hash table's
    /// allocation).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.heap.clear();
        self.index.clear();
        self.total = 0;
        self.floor = 0;
    }

    /// Checks the internal invariants (tests only).
    #[cfg(test)]
    fn check_invariants(&self) {
        assert!(self.slots.len() <= self.capacity);
        assert_eq!(self.heap.len(), self.slots.len());
        assert_eq!(self.index.len(), self.slots.len());
        for (pos, &i) in self.heap.iter().enumerate() {
            let s = &self.slots[i as usize];
            assert_eq!(s.heap_pos as usize, pos);
            if pos > 0 {
                assert!(self.count_at((pos - 1) / 2) <= s.count, "heap order");
            }
            assert!(s.count >= self.floor, "count below floor");
            assert!(s.error <= s.count);
            assert_eq!(self.find(&s.key, s.hash), Some(i as usize));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sketch::testutil::{Rng, Zipf};

    fn channel_names(n: usize) -> Vec<String> {
        (0..n)
            .map(|k| format!("ch-{:05}", (k * 7919) % 100_000))
            .collect()
    }

    /// The exact top-`k` of `truth` (count desc, key asc).
    fn exact_top(truth: &HashMap<&str, u64>, k: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = truth.iter().map(|(k, &c)| (k.to_string(), c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }

    fn names_counts(top: &[(String, u64, u64)]) -> Vec<(String, u64)> {
        top.iter().map(|(k, c, _)| (k.clone(), *c)).collect()
    }

    #[test]
    fn zero_capacity_is_rejected() {
        assert!(matches!(
            SpaceSaving::new(0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(SpaceSaving::new(MAX_CAPACITY + 1).is_err());
        let s = SpaceSaving::new(1).unwrap();
        assert_eq!((s.capacity(), s.len(), s.total()), (1, 0, 0));
        assert!(s.is_empty() && s.top(5).is_empty());
    }

    #[test]
    fn exact_below_capacity_and_ordered_deterministically() {
        let mut s = SpaceSaving::new(10).unwrap();
        for (k, c) in [("b", 3), ("a", 3), ("c", 5), ("d", 1), ("a", 0)] {
            s.add(k, c);
        }
        s.add("d", 1);
        assert_eq!(s.total(), 13);
        let top = s.top(10);
        let want = [("c", 5), ("a", 3), ("b", 3), ("d", 2)];
        assert_eq!(top.len(), 4);
        for ((k, c, e), (wk, wc)) in top.iter().zip(want) {
            assert_eq!((k.as_str(), *c, *e), (wk, wc, 0));
        }
        assert_eq!(s.top(2).len(), 2);
        assert_eq!(s.top(2)[1].0, "a");
        assert_eq!(s.get("b"), Some((3, 0)));
        assert_eq!(s.get("zz"), None);
        s.check_invariants();
    }

    #[test]
    fn eviction_takes_over_the_minimum() {
        let mut s = SpaceSaving::new(2).unwrap();
        s.add("a", 5);
        s.add("b", 2);
        s.add("c", 1); // evicts b (2): c = 3 with error 2
        assert_eq!(s.get("b"), None);
        assert_eq!(s.get("c"), Some((3, 2)));
        assert_eq!(s.floor(), 2);
        assert_eq!(s.len(), 2);
        s.check_invariants();
    }

    #[test]
    fn memory_is_bounded_by_capacity() {
        let mut s = SpaceSaving::new(64).unwrap();
        for i in 0..100_000u32 {
            s.add(&format!("key-{i}"), 1 + u64::from(i % 3));
        }
        assert_eq!(s.len(), 64);
        assert!(s.slots.capacity() <= 64 && s.heap.capacity() <= 64);
        assert!(s.index.capacity() <= 4 * 64);
        s.check_invariants();
    }

    #[test]
    fn zipf_top10_is_exact() {
        let names = channel_names(10_000);
        let z = Zipf::new(names.len(), 1.1);
        let mut rng = Rng::new(2024);
        let mut s = SpaceSaving::new(1024).unwrap();
        let mut halves = [
            SpaceSaving::new(1024).unwrap(),
            SpaceSaving::new(1024).unwrap(),
        ];
        let mut truth: HashMap<&str, u64> = HashMap::new();
        let events = 1_000_000;
        for e in 0..events {
            let name = names[z.sample(&mut rng)].as_str();
            *truth.entry(name).or_default() += 1;
            s.add(name, 1);
            halves[usize::from(e >= events / 2)].add(name, 1);
        }
        assert_eq!(s.total(), events as u64);
        assert_eq!(s.len(), 1024);
        s.check_invariants();
        let want = exact_top(&truth, 10);
        assert_eq!(names_counts(&s.top(10)), want);

        // Merging the two halves gives the exact top-10 too.
        let [mut a, b] = halves;
        a.merge(&b);
        a.check_invariants();
        assert_eq!(a.total(), events as u64);
        assert_eq!(names_counts(&a.top(10)), want);

        // Never undercounts, and count - error never exceeds the truth.
        for sketch in [&s, &a] {
            for (key, count, error) in sketch.top(sketch.len()) {
                let t = truth[key.as_str()];
                assert!(
                    count >= t && count - error <= t,
                    "{key}: {count}-{error} vs {t}"
                );
            }
        }
    }

    #[test]
    fn bounds_hold_under_heavy_eviction() {
        let names = channel_names(5_000);
        let z = Zipf::new(names.len(), 0.8);
        let mut rng = Rng::new(99);
        let mut parts = [SpaceSaving::new(50).unwrap(), SpaceSaving::new(30).unwrap()];
        // True counts per part and overall.
        let mut truths: [HashMap<&str, u64>; 3] = Default::default();
        for e in 0..60_000usize {
            let name = names[z.sample(&mut rng)].as_str();
            let c = 1 + rng.below(4);
            *truths[e % 2].entry(name).or_default() += c;
            *truths[2].entry(name).or_default() += c;
            parts[e % 2].add(name, c);
        }
        let check = |s: &SpaceSaving, truth: &HashMap<&str, u64>| {
            s.check_invariants();
            for (key, count, error) in s.top(s.len()) {
                let t = truth.get(key.as_str()).copied().unwrap_or(0);
                assert!(
                    count >= t && count - error <= t,
                    "{key}: {count}-{error} vs {t}"
                );
            }
            // Unmonitored keys are within the floor.
            for (key, &t) in truth {
                if s.get(key).is_none() {
                    assert!(t <= s.floor(), "{key}: {t} > floor {}", s.floor());
                }
            }
        };
        let [a, b] = &parts;
        check(a, &truths[0]);
        check(b, &truths[1]);
        assert!(a.floor() > 0 && b.floor() > 0);
        let mut m = a.clone();
        m.merge(b);
        assert_eq!(m.capacity(), 50);
        assert_eq!(m.len(), 50);
        assert_eq!(m.total(), a.total() + b.total());
        check(&m, &truths[2]);
        let mut m2 = b.clone();
        m2.merge(a);
        assert_eq!(m2.len(), 30);
        check(&m2, &truths[2]);
        // Keeps its guarantees when the stream goes on after a merge.
        let mut truth = truths[2].clone();
        for _ in 0..5_000 {
            let name = names[z.sample(&mut rng)].as_str();
            *truth.entry(name).or_default() += 1;
            m.add(name, 1);
        }
        check(&m, &truth);
    }

    #[test]
    fn merge_below_capacity_is_exact() {
        let mut a = SpaceSaving::new(10).unwrap();
        let mut b = SpaceSaving::new(10).unwrap();
        a.add("x", 4);
        a.add("y", 1);
        b.add("x", 1);
        b.add("z", 7);
        a.merge(&b);
        assert_eq!(
            a.top(10),
            vec![
                ("z".to_string(), 7, 0),
                ("x".to_string(), 5, 0),
                ("y".to_string(), 1, 0)
            ]
        );
        a.merge(&SpaceSaving::new(3).unwrap());
        assert_eq!(a.len(), 3);
        a.clear();
        assert!(a.is_empty() && a.total() == 0 && a.floor() == 0);
        a.add("q", 2);
        assert_eq!(a.get("q"), Some((2, 0)));
        a.check_invariants();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Random weighted streams, split in two, summarised with random
        /// capacities and merged: every bound holds everywhere.
        #[test]
        fn bounds_hold_for_random_streams(
            events in proptest::collection::vec((0u8..40, 1u64..6, proptest::bool::ANY), 0..300),
            cap_a in 1usize..12,
            cap_b in 1usize..12,
        ) {
            let mut parts = [SpaceSaving::new(cap_a).unwrap(), SpaceSaving::new(cap_b).unwrap()];
            let mut truths: [HashMap<String, u64>; 2] = Default::default();
            for &(k, c, side) in &events {
                let key = format!("k{k}");
                *truths[usize::from(side)].entry(key.clone()).or_default() += c;
                parts[usize::from(side)].add(&key, c);
            }
            let mut all = truths[0].clone();
            for (k, &c) in &truths[1] {
                *all.entry(k.clone()).or_default() += c;
            }
            let mut merged = parts[0].clone();
            merged.merge(&parts[1]);
            for (s, truth) in [(&parts[0], &truths[0]), (&parts[1], &truths[1]), (&merged, &all)] {
                s.check_invariants();
                proptest::prop_assert_eq!(s.total(), truth.values().sum::<u64>());
                for (key, count, error) in s.top(usize::MAX) {
                    let t = truth.get(&key).copied().unwrap_or(0);
                    proptest::prop_assert!(count >= t && count - error <= t);
                }
                for (key, &t) in truth {
                    if s.get(key).is_none() {
                        proptest::prop_assert!(t <= s.floor());
                    }
                }
            }
        }
    }
}
