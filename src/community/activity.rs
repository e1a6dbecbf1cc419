//! One population's daily activity (a guild's users, or everyone's) within one
//! stripe: each user's record (first day seen, a ring of active-day bits) and the
//! counters the queries read, kept exact incrementally.
//!
//! A user's first event of a day *activates* that day. Only activations change
//! the day counters, so the work per event past the first of a day is one table
//! lookup. With `prev` and `next` the user's nearest active days before and after
//! the new one `x` (within a month), the user newly counts in:
//!
//! * `dau[x]`;
//! * `wau[d]` for `d` in `max(x, prev + 7) ..= min(x + 6, next - 1)`: the days whose
//!   week (`d - 6 ..= d`) holds `x` and no other active day;
//! * `mau[d]` likewise for `max(x, prev + 30) ..= min(x + 29, next - 1)`;
//! * the cohort cells: `(first day, x)` and, if `x` is the user's first active day
//!   of its week, `(first week, week of x)`.
//!
//! An event older than the user's first day moves the user to the earlier cohort
//! (every cell of theirs moves). Counters exist only for days at or after the
//! *horizon* (the stripe's newest day minus the ring and a month), which is older
//! than any day a query may ask for: nothing is kept, or trimmed, that a query
//! could see change.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use super::{MONTH, WEEK, week_of, week_start};
use crate::error::{Error, Result};
use crate::journal::codec::{Get, Put};

/// A multiply-rotate hasher for the small integer keys of the counter maps.
#[derive(Default, Clone, Copy)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(26) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_i32(&mut self, v: i32) {
        self.write_u64(v as u32 as u64);
    }
}

/// A map with integer keys.
pub(crate) type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// The counters of one day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DayCount {
    /// Users active that day.
    pub dau: u32,
    /// Users active in the 7 days ending that day.
    pub wau: u32,
    /// Users active in the 30 days ending that day.
    pub mau: u32,
    /// Users first seen that day.
    pub new: u32,
}

/// Event counts of one day by UTC hour.
pub type Hours = [u64; 24];

/// One day's events by hour, for all channels and per channel (by the hash of
/// its id).
#[derive(Debug, Clone, Default)]
pub(crate) struct DayHeat {
    pub(crate) all: Hours,
    pub(crate) channels: IntMap<u64, Hours>,
    /// Counted into since the publisher last read it (publishing only).
    pub(crate) dirty: bool,
}

/// One user: the hash of the id, the first day seen, and a ring of `64 * N`
/// active-day bits covering the days `last - 64N + 1 ..= last` (day `d` at bit
/// `d mod 64N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rec<const N: usize> {
    key: u64,
    first: i32,
    last: i32,
    bits: [u64; N],
}

impl<const N: usize> Rec<N> {
    const RING: i32 = 64 * N as i32;

    fn at(day: i32) -> (usize, u64) {
        let p = day.rem_euclid(Self::RING) as usize;
        (p / 64, 1u64 << (p % 64))
    }

    fn in_ring(&self, day: i32) -> bool {
        day <= self.last && day > self.last - Self::RING
    }

    fn has(&self, day: i32) -> bool {
        let (w, m) = Self::at(day);
        self.in_ring(day) && self.bits[w] & m != 0
    }

    fn set(&mut self, day: i32) {
        let (w, m) = Self::at(day);
        self.bits[w] |= m;
    }

    /// Moves the ring's newest day forward to `day`, clearing the days it reuses.
    fn advance(&mut self, day: i32) {
        if i64::from(day) - i64::from(self.last) >= i64::from(Self::RING) {
            self.bits = [0; N];
        } else {
            for d in self.last + 1..=day {
                let (w, m) = Self::at(d);
                self.bits[w] &= !m;
            }
        }
        self.last = day;
    }

    /// The newest active day in `x - reach ..= x - 1`.
    fn prev(&self, x: i32, reach: i32) -> Option<i32> {
        (x - reach..x).rev().find(|&d| self.has(d))
    }

    /// The oldest active day in `x + 1 ..= x + reach`.
    fn next(&self, x: i32, reach: i32) -> Option<i32> {
        (x + 1..=x + reach).find(|&d| self.has(d))
    }

    /// The active days in the ring, oldest first.
    fn days(&self) -> impl Iterator<Item = i32> + '_ {
        (self.last - Self::RING + 1..=self.last).filter(|&d| self.has(d))
    }
}

/// The user table, its ring as wide as the history needs.
#[derive(Clone)]
pub(crate) enum Users {
    /// 128 days.
    W2(HashTable<Rec<2>>),
    /// 256 days.
    W4(HashTable<Rec<4>>),
    /// 448 days.
    W7(HashTable<Rec<7>>),
}

impl Users {
    /// A table whose ring holds at least `days` days.
    pub(crate) fn new(days: i32) -> Users {
        match days {
            ..=128 => Users::W2(HashTable::new()),
            129..=256 => Users::W4(HashTable::new()),
            _ => Users::W7(HashTable::new()),
        }
    }

    /// Days in the ring.
    pub(crate) fn ring(&self) -> i32 {
        match self {
            Users::W2(_) => Rec::<2>::RING,
            Users::W4(_) => Rec::<4>::RING,
            Users::W7(_) => Rec::<7>::RING,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Users::W2(t) => t.len(),
            Users::W4(t) => t.len(),
            Users::W7(t) => t.len(),
        }
    }

    fn bytes_per_user(&self) -> usize {
        match self {
            Users::W2(_) => std::mem::size_of::<Rec<2>>(),
            Users::W4(_) => std::mem::size_of::<Rec<4>>(),
            Users::W7(_) => std::mem::size_of::<Rec<7>>(),
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Users::W2(t) => t.capacity(),
            Users::W4(t) => t.capacity(),
            Users::W7(t) => t.capacity(),
        }
    }
}

/// A guild's (or everyone's) activity in one stripe.
#[derive(Clone)]
pub(crate) struct Activity {
    pub(crate) users: Users,
    pub(crate) days: IntMap<i32, DayCount>,
    /// `(first day, active day)` -> users.
    pub(crate) cells: IntMap<(i32, i32), u32>,
    /// `(first week, active week)` -> users.
    pub(crate) weeks: IntMap<(i32, i32), u32>,
    /// Events per day, hour and channel.
    pub(crate) heat: IntMap<i32, DayHeat>,
}

/// What an observation changed, for the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    /// The user was already active that day.
    Seen,
    /// The user's first event of that day.
    Activated,
}

fn bump(v: &mut u32) {
    *v = v.saturating_add(1);
}

fn drop_one(v: &mut u32) {
    debug_assert!(*v > 0, "a counter went below zero");
    *v = v.saturating_sub(1);
}

impl Activity {
    pub(crate) fn new(ring: i32) -> Activity {
        Activity {
            users: Users::new(ring),
            days: IntMap::default(),
            cells: IntMap::default(),
            weeks: IntMap::default(),
            heat: IntMap::default(),
        }
    }

    /// Records user `key` active on `day`; counters only from `horizon` on.
    pub(crate) fn observe_user(&mut self, key: u64, day: i32, horizon: i32) -> Observed {
        let Activity {
            users,
            days,
            cells,
            weeks,
            ..
        } = self;
        let mut c = Counters {
            days,
            cells,
            weeks,
            horizon,
        };
        match users {
            Users::W2(t) => observe(t, &mut c, key, day),
            Users::W4(t) => observe(t, &mut c, key, day),
            Users::W7(t) => observe(t, &mut c, key, day),
        }
    }

    /// Counts `count` events in `day`'s `hour`, for all channels and for
    /// `channel`. Returns whether the day's heat just became dirty (`publishing`)
    /// and whether the channel is new that day.
    pub(crate) fn add_heat(
        &mut self,
        channel: u64,
        day: i32,
        hour: usize,
        count: u64,
        publishing: bool,
    ) -> (bool, bool) {
        let heat = self.heat.entry(day).or_default();
        heat.all[hour] += count;
        let mut new_channel = false;
        heat.channels.entry(channel).or_insert_with(|| {
            new_channel = true;
            [0; 24]
        })[hour] += count;
        let became_dirty = publishing && !heat.dirty;
        heat.dirty |= publishing;
        (became_dirty, new_channel)
    }

    /// Drops every counter of a day before `horizon`.
    pub(crate) fn trim(&mut self, horizon: i32) {
        self.days.retain(|&d, _| d >= horizon);
        self.cells.retain(|&(f, _), _| f >= horizon);
        self.weeks
            .retain(|&(fw, _), _| week_start(fw) + WEEK > horizon);
        self.heat.retain(|&d, _| d >= horizon);
    }

    /// Approximate heap bytes held (tables at their capacity).
    pub(crate) fn heap_bytes(&self) -> usize {
        fn map<K, V, S>(m: &HashMap<K, V, S>) -> usize {
            m.capacity() * (std::mem::size_of::<(K, V)>() + 1)
        }
        self.users.capacity() * (self.users.bytes_per_user() + 1)
            + map(&self.days)
            + map(&self.cells)
            + map(&self.weeks)
            + map(&self.heat)
            + self.heat.values().map(|h| map(&h.channels)).sum::<usize>()
    }

    /// Appends the activity (see [`Activity::decode`]).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        fn recs<const N: usize>(t: &HashTable<Rec<N>>, out: &mut Vec<u8>) {
            out.put_u64(t.len() as u64);
            for r in t {
                out.put_u64(r.key);
                out.put_u32(r.first as u32);
                out.put_u32(r.last as u32);
                for w in r.bits {
                    out.put_u64(w);
                }
            }
        }
        match &self.users {
            Users::W2(t) => recs(t, out),
            Users::W4(t) => recs(t, out),
            Users::W7(t) => recs(t, out),
        }
        out.put_u64(self.days.len() as u64);
        for (&d, c) in &self.days {
            out.put_u32(d as u32);
            for v in [c.dau, c.wau, c.mau, c.new] {
                out.put_u32(v);
            }
        }
        for cells in [&self.cells, &self.weeks] {
            out.put_u64(cells.len() as u64);
            for (&(a, b), &n) in cells {
                out.put_u32(a as u32);
                out.put_u32(b as u32);
                out.put_u32(n);
            }
        }
        out.put_u64(self.heat.len() as u64);
        for (&d, heat) in &self.heat {
            out.put_u32(d as u32);
            put_hours(out, &heat.all);
            out.put_u64(heat.channels.len() as u64);
            for (&ch, hours) in &heat.channels {
                out.put_u64(ch);
                put_hours(out, hours);
            }
        }
    }

    /// Reads what [`Activity::encode`] wrote, for a ring of `ring` days.
    pub(crate) fn decode(g: &mut Get<'_>, ring: i32) -> Result<Activity> {
        fn recs<const N: usize>(g: &mut Get<'_>) -> Result<HashTable<Rec<N>>> {
            let n = g.count(16 + 8 * N)?;
            let mut t = HashTable::with_capacity(n);
            for _ in 0..n {
                let key = g.u64()?;
                let (first, last) = (g.u32()? as i32, g.u32()? as i32);
                let mut bits = [0u64; N];
                for w in &mut bits {
                    *w = g.u64()?;
                }
                if first > last {
                    // A first day after the newest is impossible: every day
                    // observed moved `last` to at least itself.
                    return Err(Error::corrupt(
                        "community checkpoint: a user first seen after their last day",
                    ));
                }
                match t.entry(key, |r: &Rec<N>| r.key == key, |r: &Rec<N>| r.key) {
                    Entry::Vacant(v) => {
                        v.insert(Rec {
                            key,
                            first,
                            last,
                            bits,
                        });
                    }
                    Entry::Occupied(_) => {
                        return Err(Error::corrupt("community checkpoint: a user twice"));
                    }
                }
            }
            Ok(t)
        }
        let mut a = Activity::new(ring);
        a.users = match a.users {
            Users::W2(_) => Users::W2(recs(g)?),
            Users::W4(_) => Users::W4(recs(g)?),
            Users::W7(_) => Users::W7(recs(g)?),
        };
        for _ in 0..g.count(20)? {
            let d = g.u32()? as i32;
            let c = DayCount {
                dau: g.u32()?,
                wau: g.u32()?,
                mau: g.u32()?,
                new: g.u32()?,
            };
            a.days.insert(d, c);
        }
        for cells in [&mut a.cells, &mut a.weeks] {
            for _ in 0..g.count(12)? {
                let (x, y, n) = (g.u32()? as i32, g.u32()? as i32, g.u32()?);
                cells.insert((x, y), n);
            }
        }
        for _ in 0..g.count(12 + 24 * 8)? {
            let d = g.u32()? as i32;
            let mut heat = DayHeat {
                all: get_hours(g)?,
                // Restored: the publisher compares it with what Redis holds once.
                dirty: true,
                ..DayHeat::default()
            };
            for _ in 0..g.count(8 + 24 * 8)? {
                let ch = g.u64()?;
                heat.channels.insert(ch, get_hours(g)?);
            }
            a.heat.insert(d, heat);
        }
        Ok(a)
    }
}

pub(crate) fn put_hours(out: &mut Vec<u8>, hours: &Hours) {
    for &h in hours {
        out.put_u64(h);
    }
}

pub(crate) fn get_hours(g: &mut Get<'_>) -> Result<Hours> {
    let mut hours = [0u64; 24];
    for h in &mut hours {
        *h = g.u64()?;
    }
    Ok(hours)
}

/// The counters an observation updates.
struct Counters<'a> {
    days: &'a mut IntMap<i32, DayCount>,
    cells: &'a mut IntMap<(i32, i32), u32>,
    weeks: &'a mut IntMap<(i32, i32), u32>,
    horizon: i32,
}

impl Counters<'_> {
    fn day(&mut self, d: i32) -> &mut DayCount {
        self.days.entry(d).or_default()
    }

    /// The user's first active day of the week of `x` (`week_first`) is `x`: see
    /// the module docs for the ranges.
    fn activate(
        &mut self,
        x: i32,
        prev: Option<i32>,
        next: Option<i32>,
        first: i32,
        week_first: bool,
    ) {
        if x < self.horizon {
            return;
        }
        bump(&mut self.day(x).dau);
        for (reach, field) in [(WEEK, 0), (MONTH, 1)] {
            let lo = prev.map_or(x, |p| x.max(p + reach));
            let hi = next.map_or(x + reach - 1, |n| (x + reach - 1).min(n - 1));
            for d in lo..=hi {
                let c = self.day(d);
                bump(if field == 0 { &mut c.wau } else { &mut c.mau });
            }
        }
        if first >= self.horizon {
            bump(self.cells.entry((first, x)).or_default());
            if week_first {
                bump(self.weeks.entry((week_of(first), week_of(x))).or_default());
            }
        }
    }

    fn new_user(&mut self, first: i32) {
        if first >= self.horizon {
            bump(&mut self.day(first).new);
        }
    }

    /// Moves a user's cells from cohort `from` to cohort `to` (earlier), `days`
    /// being the user's active days.
    fn move_cohort(&mut self, from: i32, to: i32, days: &[i32]) {
        let (old, new) = (from >= self.horizon, to >= self.horizon);
        if old {
            if let Some(c) = self.days.get_mut(&from) {
                drop_one(&mut c.new);
            }
        }
        self.new_user(to);
        let mut last_week = None;
        for &d in days {
            if old {
                if let Some(n) = self.cells.get_mut(&(from, d)) {
                    drop_one(n);
                }
            }
            if new {
                bump(self.cells.entry((to, d)).or_default());
            }
            let w = week_of(d);
            if last_week != Some(w) {
                // (Days come oldest first: each week once.)
                last_week = Some(w);
                if old {
                    if let Some(n) = self.weeks.get_mut(&(week_of(from), w)) {
                        drop_one(n);
                    }
                }
                if new {
                    bump(self.weeks.entry((week_of(to), w)).or_default());
                }
            }
        }
    }
}

fn observe<const N: usize>(
    t: &mut HashTable<Rec<N>>,
    c: &mut Counters<'_>,
    key: u64,
    x: i32,
) -> Observed {
    match t.entry(key, |r| r.key == key, |r| r.key) {
        Entry::Vacant(v) => {
            let mut r = Rec {
                key,
                first: x,
                last: x,
                bits: [0; N],
            };
            r.set(x);
            v.insert(r);
            c.new_user(x);
            c.activate(x, None, None, x, true);
            Observed::Activated
        }
        Entry::Occupied(o) => {
            let r = o.into_mut();
            if x > r.last {
                r.advance(x);
            }
            let in_ring = r.in_ring(x);
            if in_ring && r.has(x) {
                return Observed::Seen;
            }
            if x < r.first {
                let days: Vec<i32> = r.days().collect();
                c.move_cohort(r.first, x, &days);
                r.first = x;
            }
            if !in_ring {
                // Older than the ring: only the first day could change.
                return Observed::Seen;
            }
            let prev = r.prev(x, MONTH - 1);
            let next = r.next(x, MONTH - 1);
            let ws = week_start(week_of(x));
            let week_first = !(ws..ws + WEEK).any(|d| d != x && r.has(d));
            r.set(x);
            c.activate(x, prev, next, r.first, week_first);
            Observed::Activated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_its_days_and_forgets_older_ones() {
        let mut r = Rec::<2> {
            key: 1,
            first: 1000,
            last: 1000,
            bits: [0; 2],
        };
        r.set(1000);
        r.advance(1010);
        r.set(1010);
        assert!(r.has(1000) && r.has(1010) && !r.has(1005));
        assert_eq!(r.prev(1010, 29), Some(1000));
        assert_eq!(r.next(1000, 9), None);
        assert_eq!(r.next(1000, 10), Some(1010));
        // 1000 + 128 reuses 1000's bit: it must read as a new day, not the old one.
        r.advance(1128);
        assert!(!r.has(1128) && !r.has(1000) && r.has(1010));
        assert_eq!(r.days().collect::<Vec<_>>(), vec![1010]);
        r.advance(5000);
        assert_eq!(r.days().count(), 0);
    }
}
