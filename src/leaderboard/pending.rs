//! Changes not yet published to a shared copy of the board (a Redis sorted set).
//!
//! When publishing is enabled, every update adds its forward-decayed delta (the
//! same `points · exp(λ·(ts − landmark))` it adds to the user's value) to a
//! per-user sum, inside the update itself: one indexed add into [`Pending::sums`]
//! on a slot the update has just located, so the hot path stays as fast as it
//! was. [`Pending::drain`] hands everything accumulated since the last drain to
//! the publisher exactly once.
//!
//! All sums are relative to the board's landmark: a rebase rescales them with
//! the board's values ([`Pending::rescale`]), and a drained batch carries the
//! landmark it is relative to.
//!
//! `set` and `remove` are recorded as ordered operations; they discard the
//! user's pending sum (a set replaces the history, so earlier increments of this
//! writer are superseded). A drained batch lists the operations first, in order,
//! then the sums, which were all accumulated after the last operation on their
//! user.
//!
//! Bound: at most `max_entries` distinct entries (users with a sum, plus
//! operations) are held; changes beyond it are not recorded and are counted in
//! [`Pending::dropped`].

use std::collections::HashMap;

/// What a drained row asks the shared board to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PendingKind {
    /// Add `value` (forward value relative to the batch landmark) to the user.
    Add = 0,
    /// Replace the user's value by `value`.
    Set = 1,
    /// Remove the user (`value` is 0).
    Remove = 2,
}

/// One drained change.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRow {
    pub kind: PendingKind,
    pub user_id: String,
    pub value: f64,
    /// Newest timestamp of the user's updates in this batch (0 for a remove).
    pub last_update: i64,
}

/// Everything accumulated since the last drain.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PendingBatch {
    /// The landmark the values are relative to.
    pub landmark: i64,
    /// Operations in the order they happened, then the sums.
    pub rows: Vec<PendingRow>,
}

/// Marks a slot with no pending sum (a real sum is always finite).
const CLEAN: f64 = f64::NAN;

#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// Pending sum per board slot; NaN = none. Grown lazily to the slots used.
    sums: Vec<f64>,
    /// Slots that got a sum since the last drain (may repeat, or be clean again:
    /// the drain skips those).
    dirty: Vec<u32>,
    /// Sums of users no longer on the local board (evicted, refused at
    /// `max_users`, or cleared), with their newest timestamp.
    orphans: HashMap<String, (f64, i64)>,
    /// `set` / `remove`, in order.
    ops: Vec<PendingRow>,
    /// Entries held (slots with a sum + orphans + ops).
    held: usize,
    max_entries: usize,
    /// Changes not recorded because `max_entries` were held.
    pub(crate) dropped: u64,
}

impl Pending {
    pub(crate) fn new(max_entries: usize) -> Self {
        Pending {
            sums: Vec::new(),
            dirty: Vec::new(),
            orphans: HashMap::new(),
            ops: Vec::new(),
            held: 0,
            max_entries,
            dropped: 0,
        }
    }

    pub(crate) fn set_bound(&mut self, max_entries: usize) {
        self.max_entries = max_entries;
    }

    /// After every slot's sum was orphaned: the slot bookkeeping is stale.
    pub(crate) fn forget_slots(&mut self) {
        self.sums.clear();
        self.dirty.clear();
    }

    /// Entries currently held.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    fn has_room(&mut self) -> bool {
        if self.held < self.max_entries {
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Adds `delta` to the sum of the user in `slot`.
    #[inline]
    pub(crate) fn add(&mut self, slot: u32, delta: f64) {
        let i = slot as usize;
        if let Some(sum) = self.sums.get_mut(i) {
            if !sum.is_nan() {
                *sum += delta;
                return;
            }
        }
        self.add_first(slot, delta);
    }

    #[inline(never)]
    fn add_first(&mut self, slot: u32, delta: f64) {
        if !self.has_room() {
            return;
        }
        let i = slot as usize;
        if self.sums.len() <= i {
            self.sums.resize(i + 1, CLEAN);
        }
        self.sums[i] = delta;
        self.dirty.push(slot);
        self.held += 1;
    }

    /// Takes the sum of `slot` away (None if it has none).
    fn take(&mut self, slot: u32) -> Option<f64> {
        let sum = self.sums.get_mut(slot as usize)?;
        if sum.is_nan() {
            return None;
        }
        let value = std::mem::replace(sum, CLEAN);
        self.held -= 1;
        Some(value)
    }

    /// The user in `slot` leaves the local board but its increments stand
    /// (eviction, clear): its sum moves to the orphans.
    pub(crate) fn orphan(&mut self, slot: u32, user_id: &str, last_update: i64) {
        if let Some(value) = self.take(slot) {
            self.add_orphan(user_id, value, last_update);
        }
    }

    /// An increment for a user the local board does not hold (refused at
    /// `max_users`): it still counts on the shared board.
    pub(crate) fn add_orphan(&mut self, user_id: &str, delta: f64, ts: i64) {
        if let Some((sum, last)) = self.orphans.get_mut(user_id) {
            *sum += delta;
            *last = (*last).max(ts);
            return;
        }
        if self.has_room() {
            self.orphans.insert(user_id.to_owned(), (delta, ts));
            self.held += 1;
        }
    }

    /// Records a `set` (kind Set) or `remove` (kind Remove) of `user_id`, whose
    /// slot is `slot` if it is on the board: the user's pending increments are
    /// superseded.
    pub(crate) fn op(
        &mut self,
        kind: PendingKind,
        slot: Option<u32>,
        user_id: &str,
        value: f64,
        ts: i64,
    ) {
        if let Some(slot) = slot {
            self.take(slot);
        }
        if self.orphans.remove(user_id).is_some() {
            self.held -= 1;
        }
        if self.has_room() {
            self.ops.push(PendingRow {
                kind,
                user_id: user_id.to_owned(),
                value,
                last_update: ts,
            });
            self.held += 1;
        }
    }

    /// Multiplies every pending value by `factor` (a rebase of the board).
    pub(crate) fn rescale(&mut self, factor: f64) {
        for sum in self.sums.iter_mut().filter(|s| !s.is_nan()) {
            *sum = *sum * factor + 0.0;
        }
        for (sum, _) in self.orphans.values_mut() {
            *sum = *sum * factor + 0.0;
        }
        for op in self.ops.iter_mut() {
            op.value = op.value * factor + 0.0;
        }
    }

    /// True when nothing is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Hands out every pending change; `entry(slot)` gives the id and newest
    /// update of a board slot.
    pub(crate) fn drain<'a>(
        &mut self,
        landmark: i64,
        entry: impl Fn(u32) -> (&'a str, i64),
    ) -> PendingBatch {
        let mut rows = std::mem::take(&mut self.ops);
        rows.reserve(self.held);
        for slot in std::mem::take(&mut self.dirty) {
            if let Some(value) = self.take(slot) {
                let (id, last_update) = entry(slot);
                rows.push(PendingRow {
                    kind: PendingKind::Add,
                    user_id: id.to_owned(),
                    value,
                    last_update,
                });
            }
        }
        for (user_id, (value, last_update)) in self.orphans.drain() {
            rows.push(PendingRow {
                kind: PendingKind::Add,
                user_id,
                value,
                last_update,
            });
        }
        self.held = 0;
        PendingBatch { landmark, rows }
    }
}
