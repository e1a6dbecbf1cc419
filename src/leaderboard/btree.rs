//! Counted B+tree: the leaderboard's order-statistic index.
//!
//! Keys are `(score, slot)`: higher score first, then a caller-supplied tie-break on
//! slots (the leaderboard compares user ids, which live in its slab, not here).
//! Leaves hold up to [`LEAF_CAP`] keys in two parallel arrays and link to the next
//! leaf; inner nodes hold, per child, its subtree size and its first key. Subtree
//! sizes give a key's position and the key at a position in O(log n); first keys
//! guide searches. Nodes live in two arenas addressed by `u32`, so there is no
//! allocation per node and no pointer chasing through `Box`es.
//!
//! Why a B-tree and not a skip list: at a million users a skip list's search visits
//! ~40 nodes scattered through memory (a cache miss each); this tree visits 3–4
//! inner nodes that stay in cache and one leaf.

use std::cmp::Ordering;

use crate::mem;

/// Keys per leaf.
const LEAF_CAP: usize = 64;
/// Children per inner node.
const INNER_CAP: usize = 32;
/// A node whose size drops below this is merged with a neighbour when they fit.
const LEAF_MIN: usize = LEAF_CAP / 4;
const INNER_MIN: usize = INNER_CAP / 4;
const NIL: u32 = u32::MAX;

/// An index key: a score (never NaN, never -0.0) and the user's slab slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Key {
    /// Forward-decayed score; higher ranks first.
    pub score: f64,
    /// The user's slot in the leaderboard's slab (unique per key).
    pub slot: u32,
}

#[derive(Clone, Debug)]
struct Leaf {
    scores: [f64; LEAF_CAP],
    slots: [u32; LEAF_CAP],
    len: u32,
    next: u32,
}

#[derive(Clone, Debug)]
struct Inner {
    first_scores: [f64; INNER_CAP],
    first_slots: [u32; INNER_CAP],
    counts: [u32; INNER_CAP],
    children: [u32; INNER_CAP],
    len: u32,
}

impl Leaf {
    fn empty() -> Self {
        Leaf {
            scores: [0.0; LEAF_CAP],
            slots: [0; LEAF_CAP],
            len: 0,
            next: NIL,
        }
    }
    fn key(&self, i: usize) -> Key {
        Key {
            score: self.scores[i],
            slot: self.slots[i],
        }
    }
    fn insert_at(&mut self, i: usize, key: Key) {
        let len = self.len as usize;
        self.scores.copy_within(i..len, i + 1);
        self.slots.copy_within(i..len, i + 1);
        self.scores[i] = key.score;
        self.slots[i] = key.slot;
        self.len += 1;
    }
    fn remove_at(&mut self, i: usize) {
        let len = self.len as usize;
        self.scores.copy_within(i + 1..len, i);
        self.slots.copy_within(i + 1..len, i);
        self.len -= 1;
    }
    /// Appends every key of `right` (its successor) and takes over its link;
    /// false, changing nothing, if they do not fit.
    fn append(&mut self, right: &Leaf) -> bool {
        let (la, lb) = (self.len as usize, right.len as usize);
        if la + lb > LEAF_CAP {
            return false;
        }
        self.scores[la..la + lb].copy_from_slice(&right.scores[..lb]);
        self.slots[la..la + lb].copy_from_slice(&right.slots[..lb]);
        self.len += right.len;
        self.next = right.next;
        true
    }
}

impl Inner {
    fn empty() -> Self {
        Inner {
            first_scores: [0.0; INNER_CAP],
            first_slots: [0; INNER_CAP],
            counts: [0; INNER_CAP],
            children: [0; INNER_CAP],
            len: 0,
        }
    }
    fn first(&self, i: usize) -> Key {
        Key {
            score: self.first_scores[i],
            slot: self.first_slots[i],
        }
    }
    fn set_first(&mut self, i: usize, key: Key) {
        self.first_scores[i] = key.score;
        self.first_slots[i] = key.slot;
    }
    fn insert_at(&mut self, i: usize, child: u32, count: u32, first: Key) {
        let len = self.len as usize;
        self.first_scores.copy_within(i..len, i + 1);
        self.first_slots.copy_within(i..len, i + 1);
        self.counts.copy_within(i..len, i + 1);
        self.children.copy_within(i..len, i + 1);
        self.children[i] = child;
        self.counts[i] = count;
        self.set_first(i, first);
        self.len += 1;
    }
    fn remove_at(&mut self, i: usize) {
        let len = self.len as usize;
        self.first_scores.copy_within(i + 1..len, i);
        self.first_slots.copy_within(i + 1..len, i);
        self.counts.copy_within(i + 1..len, i);
        self.children.copy_within(i + 1..len, i);
        self.len -= 1;
    }
    /// Appends every child of `right`; false, changing nothing, if they do not fit.
    fn append(&mut self, right: &Inner) -> bool {
        let (la, lb) = (self.len as usize, right.len as usize);
        if la + lb > INNER_CAP {
            return false;
        }
        self.first_scores[la..la + lb].copy_from_slice(&right.first_scores[..lb]);
        self.first_slots[la..la + lb].copy_from_slice(&right.first_slots[..lb]);
        self.counts[la..la + lb].copy_from_slice(&right.counts[..lb]);
        self.children[la..la + lb].copy_from_slice(&right.children[..lb]);
        self.len += right.len;
        true
    }
    fn total(&self) -> u32 {
        self.counts[..self.len as usize].iter().sum()
    }
}

/// Deepest tree a [`Move`] records a path through; a taller tree (which would
/// need billions of keys) makes [`RankIndex::apply_move`] fall back to a
/// remove and an insert.
const MAX_PATH: usize = 12;

/// The way from the root to the leaf where a key is (or would be inserted): the
/// inner node and child index at each level, top first.
#[derive(Clone, Copy, Debug)]
struct Path {
    steps: [(u32, u32); MAX_PATH],
    leaf: u32,
}

/// A planned change of one key into another, from [`RankIndex::plan_move`]: the
/// paths of both keys, found in one descent each, so that applying the move does
/// not search the tree again. Valid until the index is next changed.
#[derive(Clone, Copy, Debug)]
pub struct Move {
    old: Key,
    new: Key,
    old_path: Path,
    new_path: Path,
    /// False when the tree was too tall to record the paths.
    recorded: bool,
}

/// Result of inserting below a node that had to split.
struct Split {
    node: u32,
    first: Key,
    count: u32,
}

/// Order of two keys: higher score first, then `tie` on slots.
#[inline]
fn order<F: Fn(u32, u32) -> Ordering>(a: Key, b: Key, tie: &F) -> Ordering {
    match b.score.total_cmp(&a.score) {
        Ordering::Equal if a.slot == b.slot => Ordering::Equal,
        Ordering::Equal => tie(a.slot, b.slot),
        other => other,
    }
}

/// An order-statistic index of [`Key`]s. See the module docs.
#[derive(Clone, Debug)]
pub struct RankIndex {
    leaves: Vec<Leaf>,
    inners: Vec<Inner>,
    free_leaves: Vec<u32>,
    free_inners: Vec<u32>,
    root: u32,
    /// Levels of inner nodes above the leaves (0: the root is a leaf).
    height: usize,
    len: usize,
}

impl Default for RankIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl RankIndex {
    /// An empty index.
    pub fn new() -> Self {
        RankIndex {
            leaves: vec![Leaf::empty()],
            inners: Vec::new(),
            free_leaves: Vec::new(),
            free_inners: Vec::new(),
            root: 0,
            height: 0,
            len: 0,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every key and releases the nodes.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// Heap bytes held by the node arenas and free lists.
    pub fn heap_bytes(&self) -> usize {
        self.leaves.capacity() * std::mem::size_of::<Leaf>()
            + self.inners.capacity() * std::mem::size_of::<Inner>()
            + (self.free_leaves.capacity() + self.free_inners.capacity()) * 4
    }

    fn alloc_leaf(&mut self, leaf: Leaf) -> u32 {
        match self.free_leaves.pop() {
            Some(i) => {
                self.leaves[i as usize] = leaf;
                i
            }
            None => {
                mem::push(&mut self.leaves, leaf);
                (self.leaves.len() - 1) as u32
            }
        }
    }

    fn alloc_inner(&mut self, inner: Inner) -> u32 {
        match self.free_inners.pop() {
            Some(i) => {
                self.inners[i as usize] = inner;
                i
            }
            None => {
                mem::push(&mut self.inners, inner);
                (self.inners.len() - 1) as u32
            }
        }
    }

    /// Number of entries of `scores` (sorted descending) ordered before `key`, with
    /// `slot_at(i)` giving the slot of entry `i` for ties.
    ///
    /// A branch-free count of the scores strictly above `key.score` (the compiler
    /// vectorises it, and it walks the array front to back, which the prefetcher
    /// likes) beats a binary search's unpredictable branches and scattered cache
    /// lines on these short arrays; the tie-break runs only over the usually empty
    /// run of equal scores.
    #[inline]
    fn count_before<F: Fn(u32, u32) -> Ordering>(
        scores: &[f64],
        slot_at: impl Fn(usize) -> u32,
        key: Key,
        tie: &F,
    ) -> usize {
        let greater = scores
            .iter()
            .map(|&s| usize::from(s > key.score))
            .sum::<usize>();
        let mut i = greater;
        while i < scores.len() && scores[i] == key.score {
            let slot = slot_at(i);
            if slot == key.slot || tie(slot, key.slot) != Ordering::Less {
                break;
            }
            i += 1;
        }
        i
    }

    /// Index of the child of `inner` whose range holds `key`: the last child whose
    /// first key is not after `key` (the first child if `key` precedes them all).
    #[inline]
    fn child_for<F: Fn(u32, u32) -> Ordering>(inner: &Inner, key: Key, tie: &F) -> usize {
        let len = inner.len as usize;
        // Children whose first key is before `key`, plus one if a child starts
        // exactly at `key`.
        let before = Self::count_before(
            &inner.first_scores[..len],
            |i| inner.first_slots[i],
            key,
            tie,
        );
        let starts_at_key = before < len
            && inner.first_slots[before] == key.slot
            && inner.first_scores[before] == key.score;
        (before + usize::from(starts_at_key)).saturating_sub(1)
    }

    /// Number of keys in `leaf` ordered before `key`.
    #[inline]
    fn lower_bound<F: Fn(u32, u32) -> Ordering>(leaf: &Leaf, key: Key, tie: &F) -> usize {
        Self::count_before(
            &leaf.scores[..leaf.len as usize],
            |i| leaf.slots[i],
            key,
            tie,
        )
    }

    /// Inserts a key that is not present. `tie(a, b)` orders two slots whose scores
    /// are equal.
    pub fn insert<F: Fn(u32, u32) -> Ordering>(&mut self, key: Key, tie: F) {
        if let Some(split) = self.insert_below(self.root, self.height, key, &tie) {
            let old_root = self.root;
            let (old_count, old_first) = self.summary(old_root, self.height);
            let mut root = Inner::empty();
            root.insert_at(0, old_root, old_count, old_first);
            root.insert_at(1, split.node, split.count, split.first);
            self.root = self.alloc_inner(root);
            self.height += 1;
        }
        self.len += 1;
    }

    /// Size and first key of a subtree.
    fn summary(&self, node: u32, height: usize) -> (u32, Key) {
        if height == 0 {
            let leaf = &self.leaves[node as usize];
            (leaf.len, leaf.key(0))
        } else {
            let inner = &self.inners[node as usize];
            (inner.total(), inner.first(0))
        }
    }

    fn insert_below<F: Fn(u32, u32) -> Ordering>(
        &mut self,
        node: u32,
        height: usize,
        key: Key,
        tie: &F,
    ) -> Option<Split> {
        if height == 0 {
            let leaf = &mut self.leaves[node as usize];
            let pos = Self::lower_bound(leaf, key, tie);
            if (leaf.len as usize) < LEAF_CAP {
                leaf.insert_at(pos, key);
                return None;
            }
            // Split in half, then insert into the half that owns the position.
            let half = LEAF_CAP / 2;
            let mut right = Leaf::empty();
            right.scores[..LEAF_CAP - half].copy_from_slice(&leaf.scores[half..]);
            right.slots[..LEAF_CAP - half].copy_from_slice(&leaf.slots[half..]);
            right.len = (LEAF_CAP - half) as u32;
            right.next = leaf.next;
            leaf.len = half as u32;
            if pos <= half {
                leaf.insert_at(pos, key);
            } else {
                right.insert_at(pos - half, key);
            }
            let first = right.key(0);
            let count = right.len;
            let right_id = self.alloc_leaf(right);
            self.leaves[node as usize].next = right_id;
            return Some(Split {
                node: right_id,
                first,
                count,
            });
        }
        let inner = &self.inners[node as usize];
        let i = Self::child_for(inner, key, tie);
        let child = inner.children[i];
        let split = self.insert_below(child, height - 1, key, tie);
        let inner = &mut self.inners[node as usize];
        inner.counts[i] += 1;
        if order(key, inner.first(i), tie) == Ordering::Less {
            inner.set_first(i, key);
        }
        let split = split?;
        inner.counts[i] -= split.count;
        if (inner.len as usize) < INNER_CAP {
            inner.insert_at(i + 1, split.node, split.count, split.first);
            return None;
        }
        let half = INNER_CAP / 2;
        let mut right = Inner::empty();
        let moved = INNER_CAP - half;
        right.first_scores[..moved].copy_from_slice(&inner.first_scores[half..]);
        right.first_slots[..moved].copy_from_slice(&inner.first_slots[half..]);
        right.counts[..moved].copy_from_slice(&inner.counts[half..]);
        right.children[..moved].copy_from_slice(&inner.children[half..]);
        right.len = moved as u32;
        inner.len = half as u32;
        if i < half {
            inner.insert_at(i + 1, split.node, split.count, split.first);
        } else {
            right.insert_at(i + 1 - half, split.node, split.count, split.first);
        }
        let first = right.first(0);
        let count = right.total();
        let right_id = self.alloc_inner(right);
        Some(Split {
            node: right_id,
            first,
            count,
        })
    }

    /// Removes the exact key (score and slot); false if absent.
    pub fn remove<F: Fn(u32, u32) -> Ordering>(&mut self, key: Key, tie: F) -> bool {
        if self.len == 0 || !self.remove_below(self.root, self.height, key, &tie) {
            return false;
        }
        self.len -= 1;
        // A root with one child hands the root role down.
        while self.height > 0 && self.inners[self.root as usize].len == 1 {
            let old = self.root;
            self.root = self.inners[old as usize].children[0];
            self.free_inners.push(old);
            self.height -= 1;
        }
        true
    }

    fn remove_below<F: Fn(u32, u32) -> Ordering>(
        &mut self,
        node: u32,
        height: usize,
        key: Key,
        tie: &F,
    ) -> bool {
        if height == 0 {
            let leaf = &mut self.leaves[node as usize];
            let pos = Self::lower_bound(leaf, key, tie);
            if pos < leaf.len as usize
                && leaf.slots[pos] == key.slot
                && leaf.scores[pos].to_bits() == key.score.to_bits()
            {
                leaf.remove_at(pos);
                return true;
            }
            return false;
        }
        let i = Self::child_for(&self.inners[node as usize], key, tie);
        let child = self.inners[node as usize].children[i];
        if !self.remove_below(child, height - 1, key, tie) {
            return false;
        }
        let child_len = if height == 1 {
            self.leaves[child as usize].len as usize
        } else {
            self.inners[child as usize].len as usize
        };
        {
            let inner = &mut self.inners[node as usize];
            inner.counts[i] -= 1;
        }
        if child_len > 0 && self.inners[node as usize].first(i) == key {
            let first = self.summary(child, height - 1).1;
            self.inners[node as usize].set_first(i, first);
        }
        let min = if height == 1 { LEAF_MIN } else { INNER_MIN };
        if child_len < min {
            self.rebalance(node, height, i);
        }
        true
    }

    /// Restores the fill of child `i` of `node`, which fell below its minimum: merges
    /// it with a neighbour when both fit in one node, and otherwise evens out the
    /// pair's keys (or children), so that no node but the root is ever left below
    /// its minimum, let alone empty. (An empty node kept in the tree would keep a
    /// stale first key in its parent; once that key's slot was reused by another
    /// user, searches ordered by it went to the wrong child.)
    fn rebalance(&mut self, node: u32, height: usize, i: usize) {
        let inner = &self.inners[node as usize];
        let len = inner.len as usize;
        if len < 2 {
            return;
        }
        // The pair (left, left + 1) containing `i`.
        let left = if i + 1 < len { i } else { i - 1 };
        let (a, b) = (inner.children[left], inner.children[left + 1]);
        let merged = if height == 1 {
            let right = self.leaves[b as usize].clone();
            let merged = self.leaves[a as usize].append(&right);
            if merged {
                self.free_leaves.push(b);
            } else {
                let (la, lb) = Self::split_leaves(&self.leaves[a as usize], &right);
                self.leaves[a as usize] = la;
                self.leaves[b as usize] = lb;
            }
            merged
        } else {
            let right = self.inners[b as usize].clone();
            let merged = self.inners[a as usize].append(&right);
            if merged {
                self.free_inners.push(b);
            } else {
                let (ia, ib) = Self::split_inners(&self.inners[a as usize], &right);
                self.inners[a as usize] = ia;
                self.inners[b as usize] = ib;
            }
            merged
        };
        if merged {
            let parent = &mut self.inners[node as usize];
            parent.counts[left] += parent.counts[left + 1];
            parent.remove_at(left + 1);
        } else {
            let (count_b, first_b) = self.summary(b, height - 1);
            let parent = &mut self.inners[node as usize];
            let total = parent.counts[left] + parent.counts[left + 1];
            parent.counts[left] = total - count_b;
            parent.counts[left + 1] = count_b;
            parent.set_first(left + 1, first_b);
        }
        // Both halves can be empty only below a root being emptied; then there is
        // no first key to record (the root collapses right after).
        if self.inners[node as usize].counts[left] > 0 {
            let first = self.summary(a, height - 1).1;
            self.inners[node as usize].set_first(left, first);
        }
    }

    /// The keys of two neighbouring leaves (`left` precedes `right`), which do not
    /// fit in one, shared out evenly between two leaves in order; links kept.
    fn split_leaves(left: &Leaf, right: &Leaf) -> (Leaf, Leaf) {
        let (la, lb) = (left.len as usize, right.len as usize);
        let total = la + lb;
        let mut scores = [0.0; 2 * LEAF_CAP];
        let mut slots = [0u32; 2 * LEAF_CAP];
        scores[..la].copy_from_slice(&left.scores[..la]);
        scores[la..total].copy_from_slice(&right.scores[..lb]);
        slots[..la].copy_from_slice(&left.slots[..la]);
        slots[la..total].copy_from_slice(&right.slots[..lb]);
        let half = total / 2;
        let mut a = Leaf::empty();
        let mut b = Leaf::empty();
        a.scores[..half].copy_from_slice(&scores[..half]);
        a.slots[..half].copy_from_slice(&slots[..half]);
        a.len = half as u32;
        a.next = left.next;
        b.scores[..total - half].copy_from_slice(&scores[half..total]);
        b.slots[..total - half].copy_from_slice(&slots[half..total]);
        b.len = (total - half) as u32;
        b.next = right.next;
        (a, b)
    }

    /// The children of two neighbouring inner nodes, which do not fit in one,
    /// shared out evenly between two nodes in order.
    fn split_inners(left: &Inner, right: &Inner) -> (Inner, Inner) {
        let mut a = Inner::empty();
        let mut b = Inner::empty();
        let total = left.len as usize + right.len as usize;
        let half = total / 2;
        let all = (0..left.len as usize)
            .map(|j| (left, j))
            .chain((0..right.len as usize).map(|j| (right, j)));
        for (n, (from, j)) in all.enumerate() {
            let (to, at) = if n < half {
                (&mut a, n)
            } else {
                (&mut b, n - half)
            };
            to.insert_at(at, from.children[j], from.counts[j], from.first(j));
        }
        (a, b)
    }

    /// Starts loading into the cache the leaf where `key` would be inserted.
    #[inline]
    pub fn prefetch_leaf<F: Fn(u32, u32) -> Ordering>(&self, key: Key, tie: F) {
        let mut node = self.root;
        for _ in 0..self.height {
            let inner = &self.inners[node as usize];
            node = inner.children[Self::child_for(inner, key, &tie)];
        }
        mem::prefetch(&self.leaves[node as usize]);
    }

    /// Plans replacing the key `old` (present) by `new` (absent): finds both keys'
    /// paths, descending for the two side by side so that their cache misses
    /// overlap, and with `prefetch` starts loading both leaves. Read-only; apply
    /// the plan with [`RankIndex::apply_move`] before changing the index.
    #[inline]
    pub fn plan_move<F: Fn(u32, u32) -> Ordering>(
        &self,
        old: Key,
        new: Key,
        tie: F,
        prefetch: bool,
    ) -> Move {
        let empty = Path {
            steps: [(NIL, 0); MAX_PATH],
            leaf: self.root,
        };
        let mut plan = Move {
            old,
            new,
            old_path: empty,
            new_path: empty,
            recorded: self.height <= MAX_PATH,
        };
        if !plan.recorded {
            return plan;
        }
        let (mut a, mut b) = (self.root, self.root);
        for level in 0..self.height {
            let (ia, ib) = (&self.inners[a as usize], &self.inners[b as usize]);
            let (ca, cb) = (
                Self::child_for(ia, old, &tie),
                Self::child_for(ib, new, &tie),
            );
            plan.old_path.steps[level] = (a, ca as u32);
            plan.new_path.steps[level] = (b, cb as u32);
            (a, b) = (ia.children[ca], ib.children[cb]);
        }
        plan.old_path.leaf = a;
        plan.new_path.leaf = b;
        if prefetch {
            mem::prefetch(&self.leaves[a as usize]);
            mem::prefetch(&self.leaves[b as usize]);
        }
        plan
    }

    /// Replaces `plan.old` by `plan.new`, as planned by [`RankIndex::plan_move`] on
    /// the index as it still is; false (changing nothing) if `old` is absent.
    ///
    /// When neither leaf needs restructuring (the old one stays above its minimum,
    /// the new one has room) the keys move along the recorded paths: one shift in
    /// each leaf plus count and first-key fixes on the way up. Otherwise it is a
    /// [`RankIndex::remove`] and an [`RankIndex::insert`].
    pub fn apply_move<F: Fn(u32, u32) -> Ordering>(&mut self, plan: &Move, tie: F) -> bool {
        let (old, new) = (plan.old, plan.new);
        let (from, to) = (plan.old_path.leaf, plan.new_path.leaf);
        let fits = plan.recorded
            && (self.height == 0
                || (self.leaves[from as usize].len as usize > LEAF_MIN
                    && (from == to || (self.leaves[to as usize].len as usize) < LEAF_CAP)));
        if !fits {
            if !self.remove(old, &tie) {
                return false;
            }
            self.insert(new, &tie);
            return true;
        }
        let leaf = &mut self.leaves[from as usize];
        let pos = Self::lower_bound(leaf, old, &tie);
        if pos >= leaf.len as usize
            || leaf.slots[pos] != old.slot
            || leaf.scores[pos].to_bits() != old.score.to_bits()
        {
            return false;
        }
        leaf.remove_at(pos);
        // Up the old path: one key fewer, and where `old` was a subtree's first
        // key, its successor (the leaf is not empty: it stays above LEAF_MIN).
        let mut first = leaf.key(0);
        let mut was_first = pos == 0;
        for &(node, i) in plan.old_path.steps[..self.height].iter().rev() {
            let inner = &mut self.inners[node as usize];
            let i = i as usize;
            inner.counts[i] -= 1;
            if was_first {
                inner.set_first(i, first);
                was_first = i == 0;
                first = inner.first(0);
            }
        }
        let leaf = &mut self.leaves[to as usize];
        let pos = Self::lower_bound(leaf, new, &tie);
        leaf.insert_at(pos, new);
        // Up the new path: one key more, and `new` is the first key of every
        // subtree whose first key it precedes (as in `insert_below`).
        for &(node, i) in &plan.new_path.steps[..self.height] {
            let inner = &mut self.inners[node as usize];
            let i = i as usize;
            inner.counts[i] += 1;
            if order(new, inner.first(i), &tie) == Ordering::Less {
                inner.set_first(i, new);
            }
        }
        true
    }

    /// 0-based position of the exact key, or None.
    pub fn position<F: Fn(u32, u32) -> Ordering>(&self, key: Key, tie: F) -> Option<usize> {
        let mut node = self.root;
        let mut before = 0usize;
        for _ in 0..self.height {
            let inner = &self.inners[node as usize];
            let i = Self::child_for(inner, key, &tie);
            before += inner.counts[..i].iter().map(|&c| c as usize).sum::<usize>();
            node = inner.children[i];
        }
        let leaf = &self.leaves[node as usize];
        let pos = Self::lower_bound(leaf, key, &tie);
        (pos < leaf.len as usize
            && leaf.slots[pos] == key.slot
            && leaf.scores[pos].to_bits() == key.score.to_bits())
        .then_some(before + pos)
    }

    /// Leaf and offset in it of the key at 0-based `index` (index < len).
    fn locate(&self, mut index: usize) -> (u32, usize) {
        let mut node = self.root;
        for _ in 0..self.height {
            let inner = &self.inners[node as usize];
            let mut i = 0;
            while i + 1 < inner.len as usize && index >= inner.counts[i] as usize {
                index -= inner.counts[i] as usize;
                i += 1;
            }
            node = inner.children[i];
        }
        (node, index)
    }

    /// The key at 0-based position `index`.
    pub fn get(&self, index: usize) -> Option<Key> {
        if index >= self.len {
            return None;
        }
        let (leaf, at) = self.locate(index);
        Some(self.leaves[leaf as usize].key(at))
    }

    /// The last key in order (the lowest-ranked).
    pub fn last(&self) -> Option<Key> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    /// Keys in order from 0-based position `index`: O(log n) to start, then O(1)
    /// per key.
    pub fn iter_from(&self, index: usize) -> Iter<'_> {
        if index >= self.len {
            return Iter {
                index: self,
                leaf: NIL,
                at: 0,
                remaining: 0,
            };
        }
        let (leaf, at) = self.locate(index);
        Iter {
            index: self,
            leaf,
            at,
            remaining: self.len - index,
        }
    }

    /// Builds an index from keys already in order. Leaves are filled evenly to about
    /// 7/8 (room for some inserts before the first splits) and so are inner nodes:
    /// every node but the root then holds at least its minimum.
    pub fn from_sorted(keys: Vec<Key>) -> Self {
        let mut tree = RankIndex {
            leaves: Vec::new(),
            inners: Vec::new(),
            free_leaves: Vec::new(),
            free_inners: Vec::new(),
            root: 0,
            height: 0,
            len: keys.len(),
        };
        for chunk in even_chunks(&keys, LEAF_CAP * 7 / 8) {
            let mut leaf = Leaf::empty();
            for (at, key) in chunk.iter().enumerate() {
                leaf.scores[at] = key.score;
                leaf.slots[at] = key.slot;
            }
            leaf.len = chunk.len() as u32;
            mem::push(&mut tree.leaves, leaf);
        }
        if tree.leaves.is_empty() {
            tree.leaves.push(Leaf::empty());
        }
        let count = tree.leaves.len();
        for i in 0..count - 1 {
            tree.leaves[i].next = (i + 1) as u32;
        }
        // Build inner levels bottom-up: (node, count, first key) per level entry.
        let mut level: Vec<(u32, u32, Key)> = tree
            .leaves
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u32, l.len, l.key(0)))
            .collect();
        while level.len() > 1 {
            let mut next = Vec::new();
            for chunk in even_chunks(&level, INNER_CAP * 7 / 8) {
                let mut inner = Inner::empty();
                for (j, &(child, count, first)) in chunk.iter().enumerate() {
                    inner.insert_at(j, child, count, first);
                }
                let first = inner.first(0);
                let total = inner.total();
                tree.inners.push(inner);
                next.push(((tree.inners.len() - 1) as u32, total, first));
            }
            level = next;
            tree.height += 1;
        }
        tree.root = level[0].0;
        tree
    }

    /// Verifies ordering, counts, first keys, leaf links and fill limits (tests).
    #[cfg(test)]
    pub(crate) fn check_invariants<F: Fn(u32, u32) -> Ordering>(&self, tie: F) {
        let keys: Vec<Key> = self.iter_from(0).collect();
        assert_eq!(keys.len(), self.len, "iteration length");
        for w in keys.windows(2) {
            assert_eq!(
                order(w[0], w[1], &tie),
                Ordering::Less,
                "order {:?} {:?}",
                w[0],
                w[1]
            );
        }
        let (count, _) = self.check_node(self.root, self.height, true);
        assert_eq!(count, self.len, "root count");
    }

    #[cfg(test)]
    fn check_node(&self, node: u32, height: usize, root: bool) -> (usize, Option<Key>) {
        if height == 0 {
            let leaf = &self.leaves[node as usize];
            assert!(leaf.len as usize <= LEAF_CAP);
            assert!(
                root || leaf.len as usize >= LEAF_MIN,
                "leaf below its minimum"
            );
            return (leaf.len as usize, (leaf.len > 0).then(|| leaf.key(0)));
        }
        let inner = &self.inners[node as usize];
        assert!(inner.len >= 1 && inner.len as usize <= INNER_CAP);
        assert!(
            inner.len as usize >= if root { 2 } else { INNER_MIN },
            "inner node below its minimum"
        );
        let mut total = 0;
        let mut first = None;
        for i in 0..inner.len as usize {
            let (count, child_first) = self.check_node(inner.children[i], height - 1, false);
            assert_eq!(count, inner.counts[i] as usize, "count of child {i}");
            let f = child_first.expect("only the root may be empty");
            assert_eq!(f, inner.first(i), "first key of child {i}");
            first.get_or_insert(f);
            total += count;
        }
        (total, first)
    }
}

/// `items` cut into the fewest chunks of at most `fill` items, with sizes that
/// differ by at most one.
fn even_chunks<T>(items: &[T], fill: usize) -> impl Iterator<Item = &[T]> {
    let chunks = items.len().div_ceil(fill);
    let (base, extra) = match chunks {
        0 => (0, 0),
        c => (items.len() / c, items.len() % c),
    };
    let mut rest = items;
    (0..chunks).map(move |c| {
        let (chunk, tail) = rest.split_at(base + usize::from(c < extra));
        rest = tail;
        chunk
    })
}

/// Iterator over keys in order, from [`RankIndex::iter_from`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    index: &'a RankIndex,
    leaf: u32,
    at: usize,
    remaining: usize,
}

impl Iterator for Iter<'_> {
    type Item = Key;

    fn next(&mut self) -> Option<Key> {
        if self.remaining == 0 {
            return None;
        }
        loop {
            let leaf = &self.index.leaves[self.leaf as usize];
            if self.at < leaf.len as usize {
                let key = leaf.key(self.at);
                self.at += 1;
                self.remaining -= 1;
                return Some(key);
            }
            self.leaf = leaf.next;
            self.at = 0;
            if self.leaf == NIL {
                self.remaining = 0;
                return None;
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_slot(a: u32, b: u32) -> Ordering {
        a.cmp(&b)
    }

    fn model_sorted(model: &[Key]) -> Vec<Key> {
        let mut v = model.to_vec();
        v.sort_by(|a, b| order(*a, *b, &by_slot));
        v
    }

    #[test]
    fn empty_index() {
        let t = RankIndex::new();
        assert_eq!(t.len(), 0);
        assert_eq!(t.get(0), None);
        assert_eq!(t.last(), None);
        assert_eq!(t.iter_from(0).count(), 0);
        assert_eq!(
            t.position(
                Key {
                    score: 1.0,
                    slot: 1
                },
                by_slot
            ),
            None
        );
        t.check_invariants(by_slot);
    }

    #[test]
    fn equal_scores_order_by_tie_and_positions_follow() {
        let mut t = RankIndex::new();
        for slot in [5, 3, 9, 1] {
            t.insert(Key { score: 2.0, slot }, by_slot);
        }
        t.insert(
            Key {
                score: 3.0,
                slot: 7,
            },
            by_slot,
        );
        let slots: Vec<u32> = t.iter_from(0).map(|k| k.slot).collect();
        assert_eq!(slots, [7, 1, 3, 5, 9]);
        assert_eq!(
            t.position(
                Key {
                    score: 2.0,
                    slot: 5
                },
                by_slot
            ),
            Some(3)
        );
        assert_eq!(
            t.position(
                Key {
                    score: 2.5,
                    slot: 5
                },
                by_slot
            ),
            None
        );
        assert_eq!(
            t.last(),
            Some(Key {
                score: 2.0,
                slot: 9
            })
        );
        assert!(t.remove(
            Key {
                score: 3.0,
                slot: 7
            },
            by_slot
        ));
        assert!(!t.remove(
            Key {
                score: 3.0,
                slot: 7
            },
            by_slot
        ));
        assert_eq!(
            t.get(0),
            Some(Key {
                score: 2.0,
                slot: 1
            })
        );
        t.check_invariants(by_slot);
    }

    /// Moves on a three-level tree, through both the in-place path and the
    /// remove-and-insert fallback (full and minimal leaves), against a model.
    #[test]
    fn moves_match_remove_and_insert() {
        let n = 60_000u32;
        let score = |x: u32| f64::from(x.wrapping_mul(2_654_435_761) % 5_000);
        let mut t = RankIndex::from_sorted(model_sorted(
            &(0..n)
                .map(|slot| Key {
                    score: score(slot),
                    slot,
                })
                .collect::<Vec<_>>(),
        ));
        assert!(t.height >= 2, "height {}", t.height);
        let mut keys: Vec<Key> = (0..n)
            .map(|slot| Key {
                score: score(slot),
                slot,
            })
            .collect();
        let mut x = 1u64;
        for step in 0..40_000u32 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let slot = ((x >> 33) % u64::from(n)) as u32;
            let old = keys[slot as usize];
            // Small raises (often the same leaf, sometimes its first key), big
            // jumps, drops, and moves to the very top and bottom.
            let new_score = match step % 5 {
                0 => old.score + 0.25,
                1 => old.score + f64::from((x >> 20) as u32 % 2_000),
                2 => old.score - f64::from((x >> 20) as u32 % 50) - 0.5,
                3 => 1e9 + f64::from(step),
                _ => -1e9 - f64::from(step),
            };
            let new = Key {
                score: new_score,
                slot,
            };
            let plan = t.plan_move(old, new, by_slot, step % 2 == 0);
            assert!(t.apply_move(&plan, by_slot));
            keys[slot as usize] = new;
            if step % 4_000 == 0 {
                t.check_invariants(by_slot);
            }
        }
        t.check_invariants(by_slot);
        assert_eq!(t.len(), n as usize);
        let sorted = model_sorted(&keys);
        assert_eq!(t.iter_from(0).collect::<Vec<_>>(), sorted);
        for (i, k) in sorted.iter().enumerate().step_by(97) {
            assert_eq!(t.position(*k, by_slot), Some(i));
        }
        // A key that is not there is not moved, and nothing changes.
        let ghost = Key {
            score: 0.125,
            slot: n,
        };
        let plan = t.plan_move(
            ghost,
            Key {
                score: 7.0,
                slot: n,
            },
            by_slot,
            false,
        );
        assert!(!t.apply_move(&plan, by_slot));
        assert_eq!(t.len(), n as usize);
        t.check_invariants(by_slot);
    }

    #[test]
    fn many_inserts_and_removes_keep_invariants_and_release_nodes() {
        let mut t = RankIndex::new();
        let n = 20_000u32;
        // A scrambled order of distinct scores.
        let keys: Vec<Key> = (0..n)
            .map(|i| Key {
                score: f64::from(i.wrapping_mul(2_654_435_761) % 100_003),
                slot: i,
            })
            .collect();
        for &k in &keys {
            t.insert(k, by_slot);
        }
        assert!(t.height >= 2, "expected a multi-level tree");
        t.check_invariants(by_slot);
        let sorted = model_sorted(&keys);
        for (i, k) in sorted.iter().enumerate().step_by(997) {
            assert_eq!(t.get(i), Some(*k));
            assert_eq!(t.position(*k, by_slot), Some(i));
            assert_eq!(t.iter_from(i).next(), Some(*k));
        }
        for &k in keys.iter().step_by(2) {
            assert!(t.remove(k, by_slot));
        }
        t.check_invariants(by_slot);
        for &k in keys.iter().skip(1).step_by(2) {
            assert!(t.remove(k, by_slot));
        }
        assert!(t.is_empty());
        assert_eq!(t.height, 0, "tree collapses back to one leaf");
        t.check_invariants(by_slot);
    }

    #[test]
    fn from_sorted_then_mutate() {
        let keys: Vec<Key> = (0..5_000u32)
            .map(|i| Key {
                score: f64::from(10_000 - i),
                slot: i,
            })
            .collect();
        let mut t = RankIndex::from_sorted(keys.clone());
        t.check_invariants(by_slot);
        assert_eq!(t.len(), 5_000);
        assert_eq!(t.get(4_999), Some(keys[4_999]));
        t.insert(
            Key {
                score: 20_000.0,
                slot: 99_999,
            },
            by_slot,
        );
        assert!(t.remove(keys[2_500], by_slot));
        assert_eq!(t.get(0).map(|k| k.slot), Some(99_999));
        t.check_invariants(by_slot);
        let empty = RankIndex::from_sorted(Vec::new());
        assert!(empty.is_empty());
        empty.check_invariants(by_slot);
    }

    #[test]
    fn memory_per_key_is_small_at_scale() {
        let mut t = RankIndex::new();
        let n = 200_000u32;
        for i in 0..n {
            t.insert(
                Key {
                    score: f64::from(i.wrapping_mul(2_654_435_761)),
                    slot: i,
                },
                by_slot,
            );
        }
        let per_key = t.heap_bytes() as f64 / f64::from(n);
        assert!(per_key < 24.0, "{per_key} bytes per key");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16),
        Remove(u16),
        Move(u16, u8),
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random inserts/removes (few distinct scores, so many ties) against a
        /// sorted Vec, checking every position, get, iteration and invariants.
        #[test]
        fn matches_sorted_vec_model(ops in prop::collection::vec(
            prop_oneof![
                3 => (0u8..6, 0u16..600).prop_map(|(s, slot)| Op::Insert(s, slot)),
                2 => (0u16..600).prop_map(Op::Remove),
                3 => (0u16..600, 0u8..6).prop_map(|(slot, s)| Op::Move(slot, s)),
            ], 1..1500)) {
            let mut t = RankIndex::new();
            let mut model: Vec<Key> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(s, slot) => {
                        if model.iter().all(|k| k.slot != u32::from(slot)) {
                            let key = Key { score: f64::from(s), slot: u32::from(slot) };
                            t.insert(key, by_slot);
                            model.push(key);
                        }
                    }
                    Op::Remove(slot) => {
                        let found = model.iter().position(|k| k.slot == u32::from(slot));
                        let key = found.map(|i| model[i]).unwrap_or(Key { score: 1.0, slot: u32::from(slot) });
                        prop_assert_eq!(t.remove(key, by_slot), found.is_some());
                        if let Some(i) = found {
                            model.swap_remove(i);
                        }
                    }
                    Op::Move(slot, s) => {
                        let Some(i) = model.iter().position(|k| k.slot == u32::from(slot)) else {
                            continue;
                        };
                        let new = Key { score: f64::from(s) + 0.5, slot: u32::from(slot) };
                        let new = if model[i].score == new.score { Key { score: f64::from(s), ..new } } else { new };
                        let plan = t.plan_move(model[i], new, by_slot, i % 2 == 0);
                        prop_assert!(t.apply_move(&plan, by_slot));
                        model[i] = new;
                    }
                }
            }
            let sorted = model_sorted(&model);
            prop_assert_eq!(t.len(), sorted.len());
            prop_assert_eq!(t.iter_from(0).collect::<Vec<_>>(), sorted.clone());
            for (i, k) in sorted.iter().enumerate() {
                prop_assert_eq!(t.position(*k, by_slot), Some(i));
                prop_assert_eq!(t.get(i), Some(*k));
            }
            if !sorted.is_empty() {
                let mid = sorted.len() / 2;
                prop_assert_eq!(t.iter_from(mid).collect::<Vec<_>>(), sorted[mid..].to_vec());
            }
            prop_assert_eq!(t.last(), sorted.last().copied());
            t.check_invariants(by_slot);
        }
    }
}
