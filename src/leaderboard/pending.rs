//! Changes not yet published to a shared copy of the board (a Redis sorted set).
//!
//! When publishing is enabled, every update adds its forward-decayed delta (the
//! same `points · exp(λ·(ts − landmark))` it adds to the user's value) to a
//! per-user sum, inside the update itself: the sum lives in the user's entry,
//! which the update has just read and writes anyway (a separate per-slot array
//! cost an extra cache miss per update: ~15% on a 100k-user board), so the hot
//! path stays as fast as it was. [`Pending::drain`] hands everything accumulated since the last drain to
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

use crate::error::{Error, Result};
use crate::journal::codec::{Get, Put};

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

/// An entry's pending sum when it has none (a real sum is always finite).
pub(crate) const CLEAN: f64 = f64::NAN;

#[derive(Debug, Clone)]
pub(crate) struct Pending {
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

    /// Adds `delta` to `sum`, the pending sum of the user in `slot`.
    #[inline]
    pub(crate) fn add(&mut self, sum: &mut f64, slot: u32, delta: f64) {
        if !sum.is_nan() {
            *sum += delta;
        } else {
            self.add_first(sum, slot, delta);
        }
    }

    #[inline(never)]
    fn add_first(&mut self, sum: &mut f64, slot: u32, delta: f64) {
        if !self.has_room() {
            return;
        }
        *sum = delta;
        self.dirty.push(slot);
        self.held += 1;
    }

    /// Takes `sum` away (None if there is none).
    fn take(&mut self, sum: &mut f64) -> Option<f64> {
        if sum.is_nan() {
            return None;
        }
        let value = std::mem::replace(sum, CLEAN);
        self.held -= 1;
        Some(value)
    }

    /// The user whose pending sum is `sum` leaves the local board but its
    /// increments stand (eviction, clear): the sum moves to the orphans.
    pub(crate) fn orphan(&mut self, sum: &mut f64, user_id: &str, last_update: i64) {
        if let Some(value) = self.take(sum) {
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
    /// pending sum is `sum` if it is on the board: the user's pending increments
    /// are superseded.
    pub(crate) fn op(
        &mut self,
        kind: PendingKind,
        sum: Option<&mut f64>,
        user_id: &str,
        value: f64,
        ts: i64,
    ) {
        if let Some(sum) = sum {
            self.take(sum);
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

    /// Multiplies every pending value by `factor` (a rebase of the board);
    /// `sums` are the entries' pending sums.
    pub(crate) fn rescale<'a>(&mut self, factor: f64, sums: impl Iterator<Item = &'a mut f64>) {
        for sum in sums.filter(|s| !s.is_nan()) {
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

    /// Appends what is not in the entries (the bound, the drop count, the orphans
    /// and the ops) for a checkpoint; the entries' sums go with the entries.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.max_entries as u64);
        out.put_u64(self.dropped);
        let mut orphans: Vec<_> = self.orphans.iter().collect();
        orphans.sort_by(|a, b| a.0.cmp(b.0));
        out.put_u64(orphans.len() as u64);
        for (id, (sum, last)) in orphans {
            out.put_str(id);
            out.put_f64(*sum);
            out.put_i64(*last);
        }
        out.put_u64(self.ops.len() as u64);
        for op in &self.ops {
            encode_row(op, out);
        }
    }

    /// Reads what [`Pending::encode`] wrote; the entries' sums are added back
    /// with [`Pending::restore_sum`].
    pub(crate) fn decode(g: &mut Get<'_>) -> Result<Pending> {
        let max_entries = usize::try_from(g.u64()?).unwrap_or(usize::MAX).max(1);
        let dropped = g.u64()?;
        let mut pending = Pending::new(max_entries);
        pending.dropped = dropped;
        for _ in 0..g.count(20)? {
            let id = g.str()?.to_string();
            let sum = g.f64()?;
            let last = g.i64()?;
            if !sum.is_finite() || pending.orphans.insert(id, (sum, last)).is_some() {
                return Err(Error::corrupt(
                    "a pending orphan sum is not finite or appears twice",
                ));
            }
        }
        for _ in 0..g.count(21)? {
            pending.ops.push(decode_row(g)?);
        }
        pending.held = pending.orphans.len() + pending.ops.len();
        Ok(pending)
    }

    /// Counts the pending sum the entry in `slot` holds (after a decode).
    pub(crate) fn restore_sum(&mut self, slot: u32) {
        self.dirty.push(slot);
        self.held += 1;
    }

    /// Drops every pending change without handing it out (a forked child: its
    /// parent publishes them). Allocates nothing.
    pub(crate) fn discard<E>(&mut self, entries: &mut [E], sum_of: impl Fn(&mut E) -> &mut f64) {
        for slot in self.dirty.drain(..) {
            if let Some(entry) = entries.get_mut(slot as usize) {
                *sum_of(entry) = CLEAN;
            }
        }
        self.orphans.clear();
        self.ops.clear();
        self.held = 0;
    }

    /// The batch [`Pending::drain`] would hand out now, row for row, without
    /// taking anything (a journal logs the batch before the drain).
    pub(crate) fn peek<E>(
        &self,
        landmark: i64,
        entries: &[E],
        parts: impl for<'e> Fn(&'e E) -> (f64, &'e str, i64),
    ) -> PendingBatch {
        let mut rows = self.ops.clone();
        let mut seen = std::collections::HashSet::new();
        for &slot in &self.dirty {
            let Some(entry) = entries.get(slot as usize) else {
                continue;
            };
            let (sum, id, last_update) = parts(entry);
            // A slot listed twice gives its sum once, as in `drain`.
            if !sum.is_nan() && seen.insert(slot) {
                rows.push(PendingRow {
                    kind: PendingKind::Add,
                    user_id: id.to_owned(),
                    value: sum,
                    last_update,
                });
            }
        }
        for (user_id, (value, last_update)) in &self.orphans {
            rows.push(PendingRow {
                kind: PendingKind::Add,
                user_id: user_id.clone(),
                value: *value,
                last_update: *last_update,
            });
        }
        PendingBatch { landmark, rows }
    }

    /// Hands out every pending change. `parts` gives an entry's pending sum, id
    /// and newest update; `entries` are the board's, by slot.
    pub(crate) fn drain<E>(
        &mut self,
        landmark: i64,
        entries: &mut [E],
        parts: impl for<'e> Fn(&'e mut E) -> (&'e mut f64, &'e str, i64),
    ) -> PendingBatch {
        let mut rows = std::mem::take(&mut self.ops);
        rows.reserve(self.held);
        for slot in std::mem::take(&mut self.dirty) {
            let Some(entry) = entries.get_mut(slot as usize) else {
                continue;
            };
            let (sum, id, last_update) = parts(entry);
            if let Some(value) = self.take(sum) {
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

/// Appends one row: kind, value, last update, id.
pub(crate) fn encode_row(row: &PendingRow, out: &mut Vec<u8>) {
    out.put_u8(row.kind as u8);
    out.put_f64(row.value);
    out.put_i64(row.last_update);
    out.put_str(&row.user_id);
}

/// Reads what [`encode_row`] wrote.
pub(crate) fn decode_row(g: &mut Get<'_>) -> Result<PendingRow> {
    let kind = match g.u8()? {
        0 => PendingKind::Add,
        1 => PendingKind::Set,
        2 => PendingKind::Remove,
        k => return Err(Error::corrupt(format!("pending row of unknown kind {k}"))),
    };
    let value = g.f64()?;
    if !value.is_finite() {
        return Err(Error::corrupt("a pending value is not finite"));
    }
    Ok(PendingRow {
        kind,
        value,
        last_update: g.i64()?,
        user_id: g.str()?.to_string(),
    })
}

/// Appends a drained batch: landmark, rows.
pub fn encode_batch(batch: &PendingBatch, out: &mut Vec<u8>) {
    out.put_i64(batch.landmark);
    out.put_u64(batch.rows.len() as u64);
    for row in &batch.rows {
        encode_row(row, out);
    }
}

/// Reads what [`encode_batch`] wrote.
pub fn decode_batch(g: &mut Get<'_>) -> Result<PendingBatch> {
    let landmark = g.i64()?;
    let n = g.count(21)?;
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        rows.push(decode_row(g)?);
    }
    Ok(PendingBatch { landmark, rows })
}
