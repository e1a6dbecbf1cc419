//! Time-decayed leaderboard.
//!
//! A user's score at time `t` is `Σ points_i · decay^((t − ts_i) / period)`.
//! Rather than decaying every stored score as time passes (which forces a rescan of
//! all users before every query), the board uses *forward decay*: it stores
//! `value = Σ points_i · decay^(−(ts_i − landmark) / period)`, the score as seen at a
//! fixed landmark time. Every user's score at `t` is its value times the same factor
//! `decay^((t − landmark) / period)`, so the order of users never changes as time
//! passes, an update is one O(log n) re-insertion in the [`btree::RankIndex`], and a
//! top-k query reads k keys. Out-of-order timestamps are exact, because each
//! contribution is weighted by its own timestamp, not by the last update's.
//!
//! The landmark starts at the first update's timestamp. Values grow as
//! `exp(λ·(ts − landmark))`; before they could overflow the board
//! *rebases*: it moves the landmark forward and multiplies every value by the same
//! factor (one O(n) pass, order kept), which happens at most once every several
//! hundred decay periods.
//!
//! Time from the future: an update stamped later than the wall clock plus
//! [`LeaderboardConfig::max_future_secs`] (default one day) is refused and counted,
//! and neither the first update nor a rebase ever puts the landmark past the
//! present. So a rebase only zeroes scores whose true value at the present is below
//! the smallest double, and one bad clock cannot wipe the board. Scores read at a
//! time long before the landmark saturate at the largest finite double rather than
//! reading as infinity.
//!
//! Ties are broken deterministically: higher score first, then user id bytes
//! ascending.

pub mod btree;
pub mod durable;
pub mod group;
pub mod id;
mod idtable;
pub mod pending;
pub(crate) mod snapshot;

use std::cmp::Ordering;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::{Error, Result};
use crate::mem;
use btree::{Key, RankIndex};
pub use id::UserId;
use idtable::{Found, IdTable};
use pending::Pending;
pub use pending::{PendingBatch, PendingKind, PendingRow};
pub use snapshot::{SNAPSHOT_FORMAT_VERSION, Skipped};

/// Longest accepted user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 1024;

/// Latest accepted timestamp: 9999-12-31T23:59:59Z. Later ones are rejected so the
/// decay exponent stays finite.
pub const MAX_TIMESTAMP: i64 = 253_402_300_799;

/// Rebase once `λ·(ts − landmark)` would exceed this: `exp(256) ≈ 1.5e111` leaves
/// room for point totals up to ~1e197 before a value could overflow.
const REBASE_EXPONENT: f64 = 256.0;

/// Below this many users the whole board stays in the CPU caches, and fetching
/// tree leaves ahead of time (an extra descent each) costs more than it saves.
const PREFETCH_MIN_USERS: usize = 1 << 16;

/// Leaderboard settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaderboardConfig {
    /// Fraction of a score kept after one `decay_period_secs`, in (0, 1]; 1 = no decay.
    pub decay_factor: f64,
    /// Length of one decay period in seconds (> 0).
    pub decay_period_secs: f64,
    /// Most users kept; 0 = unbounded.
    pub max_users: usize,
    /// Latest accepted timestamp, in seconds after the wall clock at the call:
    /// updates stamped later are refused ([`Error::InvalidArgument`], counted in
    /// [`LeaderboardStats::future_refused`]), and snapshots whose landmark or
    /// entries are later are refused too ([`Error::Corrupt`]). Default one day.
    pub max_future_secs: i64,
}

impl Default for LeaderboardConfig {
    fn default() -> Self {
        LeaderboardConfig {
            decay_factor: 0.95,
            decay_period_secs: 86_400.0,
            max_users: 0,
            max_future_secs: DEFAULT_MAX_FUTURE_SECS,
        }
    }
}

/// Default [`LeaderboardConfig::max_future_secs`]: one day.
pub const DEFAULT_MAX_FUTURE_SECS: i64 = 86_400;

impl LeaderboardConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let d = self.decay_factor;
        if !(d > 0.0 && d <= 1.0) {
            return Err(Error::invalid(format!(
                "decay_factor must be in (0, 1], got {d}"
            )));
        }
        let p = self.decay_period_secs;
        if !(p.is_finite() && p > 0.0) {
            return Err(Error::invalid(format!(
                "decay_period_secs must be a positive finite number, got {p}"
            )));
        }
        if self.max_future_secs < 0 {
            return Err(Error::invalid(format!(
                "max_future_secs must be >= 0, got {}",
                self.max_future_secs
            )));
        }
        if self.max_users > u32::MAX as usize - 1 {
            return Err(Error::invalid(format!(
                "max_users must be at most {}, got {}",
                u32::MAX - 1,
                self.max_users
            )));
        }
        Ok(())
    }

    /// Decay rate λ per second: `score(t) = score(t0) · exp(−λ·(t − t0))`.
    fn lambda(&self) -> f64 {
        -self.decay_factor.ln() / self.decay_period_secs
    }
}

/// What an `add` did.
#[derive(Debug, Clone, PartialEq)]
pub enum AddOutcome {
    /// The user existed or there was room.
    Stored,
    /// The board was full: this (lowest-ranked) user was evicted to make room.
    Evicted(String),
}

/// One row of a ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedUser<'a> {
    /// The user's id.
    pub user_id: &'a str,
    /// 1-based rank.
    pub rank: u64,
    /// Decayed score at the query time.
    pub score: f64,
    /// Newest timestamp of any update to this user (seconds).
    pub last_update: i64,
}

/// Counters describing the board.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LeaderboardStats {
    /// Users on the board.
    pub len: u64,
    /// Users evicted to make room for a higher-scoring new user.
    pub evicted: u64,
    /// New users refused because the board was full and they scored too low.
    pub refused: u64,
    /// Times the landmark was moved forward.
    pub rebases: u64,
    /// Updates refused because their timestamp was later than the wall clock plus
    /// [`LeaderboardConfig::max_future_secs`].
    pub future_refused: u64,
    /// Current landmark (seconds).
    pub landmark: i64,
    /// Heap bytes held by the board's structures.
    pub heap_bytes: u64,
    /// Changes waiting to be published (users with a pending sum, plus pending
    /// sets and removes); 0 when publishing is off.
    pub pending: u64,
    /// Changes not recorded for publishing because the pending bound was reached.
    pub pending_dropped: u64,
}

/// An update checked and pinned to its timestamp and landmark by
/// [`Leaderboard::plan`], ready for [`Leaderboard::apply`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    /// The update's timestamp (resolved: never ≤ 0).
    pub ts: i64,
    /// The landmark in force when it applies.
    pub landmark: i64,
    /// The id's hash under this board's seed (not part of a journal record).
    hash: u64,
}

impl Planned {
    /// A plan read back from a journal, for `board` (whose seed hashes the id).
    pub fn logged(board: &Leaderboard, user_id: &str, ts: i64, landmark: i64) -> Planned {
        Planned {
            ts,
            landmark,
            hash: hash_id(user_id.as_bytes(), board.seed),
        }
    }
}

/// A user's id and newest update time. Its value (the score as seen at the
/// landmark; never NaN, never -0.0) lives in the id table, where a lookup finds it
/// without touching the entry.
#[derive(Debug, Clone)]
struct Entry {
    id: UserId,
    last_update: i64,
    /// Sum of this user's updates not yet published (`pending::CLEAN` = none;
    /// always CLEAN when publishing is off). Here rather than in a side array:
    /// the update touches the entry anyway.
    pending: f64,
}

/// A time-decayed leaderboard. Not synchronised: the C ABI wraps it in a `RwLock`.
#[derive(Debug, Clone)]
pub struct Leaderboard {
    config: LeaderboardConfig,
    lambda: f64,
    landmark: i64,
    /// Users by slot; `free_slots` lists vacated ones (their `id` is empty).
    entries: Vec<Entry>,
    free_slots: Vec<u32>,
    /// Heap bytes of ids too long to store inline, kept so `stats()` stays O(1).
    long_id_bytes: usize,
    /// Slot and value of each user, keyed by the hash of its id.
    by_id: IdTable,
    index: RankIndex,
    evicted: u64,
    refused: u64,
    rebases: u64,
    future_refused: u64,
    /// The latest accepted timestamp as of the last time the clock was read for
    /// it: a timestamp up to it is accepted without reading the clock (the true
    /// bound only grows).
    future_bound: i64,
    /// Entries skipped when this board was loaded from a C++ extension snapshot.
    skipped: Vec<Skipped>,
    /// Seed of the id hash, random per board: ids are chosen by users, and with a
    /// known hash anyone could pick ids that share a bucket and build long probe
    /// chains. Nothing persisted depends on it.
    seed: u64,
    /// Changes not yet published; `None` unless publishing is enabled.
    pending: Option<Box<Pending>>,
}

/// A fresh random seed: std's `RandomState` is keyed from the OS's randomness once
/// per thread and stepped for every instance.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
}

/// Current wall-clock time in whole seconds since the Unix epoch.
pub fn wall_clock_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Writes snapshot bytes (from [`Leaderboard::to_snapshot_json`]) to `path`
/// atomically, so a caller can serialise under a lock and write outside it.
pub fn write_snapshot(path: &Path, bytes: &[u8]) -> Result<()> {
    snapshot::write_atomically(path, bytes)
}

/// Builds an [`Error::InvalidArgument`] out of line, so that the formatting code of
/// rare failures stays off the instruction-cache lines of the update path (which
/// a Python host's interpreter evicts between calls).
#[cold]
#[inline(never)]
fn invalid(message: std::fmt::Arguments<'_>) -> Error {
    Error::invalid(message.to_string())
}

#[cold]
#[inline(never)]
fn index_lost(id: &UserId) -> Error {
    Error::Poisoned(format!("index lost user {:?}", id.as_str()))
}

fn hash_id(id: &[u8], seed: u64) -> u64 {
    xxh3_64_with_seed(id, seed)
}

/// Validates a user id argument.
pub fn check_user_id(user_id: &str) -> Result<()> {
    if user_id.is_empty() {
        return Err(Error::invalid("user_id must not be empty"));
    }
    if user_id.len() > MAX_USER_ID_LEN {
        return Err(invalid(format_args!(
            "user_id is {} bytes, the limit is {MAX_USER_ID_LEN}",
            user_id.len()
        )));
    }
    Ok(())
}

/// Resolves a timestamp argument: ≤ 0 means now; beyond [`MAX_TIMESTAMP`] is refused.
fn resolve_ts(ts: i64, what: &str) -> Result<i64> {
    if ts <= 0 {
        Ok(wall_clock_secs())
    } else if ts > MAX_TIMESTAMP {
        Err(invalid(format_args!(
            "{what} {ts} is after year 9999 (limit {MAX_TIMESTAMP})"
        )))
    } else {
        Ok(ts)
    }
}

/// Latest timestamp accepted now with `max_future_secs` of skew.
pub(crate) fn latest_accepted(max_future_secs: i64) -> i64 {
    wall_clock_secs()
        .saturating_add(max_future_secs)
        .min(MAX_TIMESTAMP)
}

impl Leaderboard {
    /// Creates an empty board.
    pub fn new(config: LeaderboardConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::with_landmark(config, wall_clock_secs()))
    }

    fn with_landmark(config: LeaderboardConfig, landmark: i64) -> Self {
        Leaderboard {
            config,
            lambda: config.lambda(),
            landmark,
            entries: Vec::new(),
            free_slots: Vec::new(),
            long_id_bytes: 0,
            by_id: IdTable::default(),
            index: RankIndex::new(),
            evicted: 0,
            refused: 0,
            rebases: 0,
            future_refused: 0,
            future_bound: i64::MIN,
            skipped: Vec::new(),
            seed: random_seed(),
            pending: None,
        }
    }

    /// The board's settings.
    pub fn config(&self) -> LeaderboardConfig {
        self.config
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no user is on the board.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Counters and sizes.
    pub fn stats(&self) -> LeaderboardStats {
        LeaderboardStats {
            len: self.len() as u64,
            evicted: self.evicted,
            refused: self.refused,
            rebases: self.rebases,
            future_refused: self.future_refused,
            landmark: self.landmark,
            heap_bytes: self.heap_bytes() as u64,
            pending: self.pending.as_ref().map_or(0, |p| p.held() as u64),
            pending_dropped: self.pending.as_ref().map_or(0, |p| p.dropped),
        }
    }

    /// Heap bytes owned by the board (entries, id table, index, long ids).
    pub fn heap_bytes(&self) -> usize {
        let entries = self.entries.capacity() * std::mem::size_of::<Entry>();
        let free = self.free_slots.capacity() * std::mem::size_of::<u32>();
        entries + self.long_id_bytes + free + self.by_id.heap_bytes() + self.index.heap_bytes()
    }

    /// Removes every user; settings and counters other than `len` are kept.
    ///
    /// With publishing enabled the clear is local: the pending increments of the
    /// users it drops are still published.
    pub fn clear(&mut self) {
        self.orphan_all_pending();
        self.entries.clear();
        self.free_slots.clear();
        self.long_id_bytes = 0;
        self.by_id.clear();
        self.index.clear();
    }

    /// Finds `user_id`. The table's first candidate (nearly always the user) is
    /// read first; on a board too big for the caches, its entry starts loading and
    /// `prefetch` is called with it, so the caller can start fetching the tree
    /// leaves it will need, and only then is the id compared. One cache miss at a
    /// time would otherwise be three: table, entry, leaf.
    #[inline]
    fn lookup(
        &self,
        user_id: &[u8],
        hash: u64,
        prefetch: impl FnOnce(&Self, Found),
    ) -> Option<Found> {
        let candidate = self.by_id.first_match(hash)?;
        let entry = &self.entries[candidate.slot as usize];
        if self.len() >= PREFETCH_MIN_USERS {
            mem::prefetch(entry);
            prefetch(self, candidate);
        }
        if entry.id.as_bytes() == user_id {
            return Some(candidate);
        }
        let entries = &self.entries;
        self.by_id
            .find(hash, |slot| entries[slot as usize].id.as_bytes() == user_id)
    }

    fn find(&self, user_id: &[u8]) -> Option<Found> {
        self.lookup(user_id, hash_id(user_id, self.seed), |_, _| {})
    }

    /// Ties: user id bytes ascending.
    fn tie(entries: &[Entry]) -> impl Fn(u32, u32) -> Ordering + '_ {
        move |a, b| {
            entries[a as usize]
                .id
                .as_bytes()
                .cmp(entries[b as usize].id.as_bytes())
        }
    }

    /// Moves the landmark to `new_landmark` (later than the current one), scaling
    /// every value by the same factor. Multiplying by one positive factor keeps the
    /// order except where two values round to the same result (or underflow to 0);
    /// such pairs are then ordered by id, so the index is rebuilt from a sort.
    #[cold]
    #[inline(never)]
    fn rebase(&mut self, new_landmark: i64) {
        let factor = (-self.lambda * (new_landmark - self.landmark) as f64).exp();
        // `+ 0.0` turns a -0.0 produced by underflow into 0.0.
        self.by_id.map_values(|value| value * factor + 0.0);
        if let Some(pending) = self.pending.as_deref_mut() {
            pending.rescale(factor, self.entries.iter_mut().map(|e| &mut e.pending));
        }
        self.landmark = new_landmark;
        self.rebases += 1;
        self.rebuild_index();
    }

    fn rebuild_index(&mut self) {
        let mut keys: Vec<Key> = self
            .by_id
            .iter()
            .map(|(slot, score)| Key { score, slot })
            .collect();
        let tie = Self::tie(&self.entries);
        keys.sort_unstable_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| tie(a.slot, b.slot))
        });
        self.index = RankIndex::from_sorted(keys);
    }

    /// Plans moving the user found as `found` to `value` in the index.
    #[inline]
    fn plan_move(&self, found: Found, value: f64, prefetch: bool) -> btree::Move {
        let old = Key {
            score: found.value,
            slot: found.slot,
        };
        let new = Key {
            score: value,
            slot: found.slot,
        };
        self.index
            .plan_move(old, new, Self::tie(&self.entries), prefetch)
    }

    /// The score at `now` of a stored value. Long before the landmark the true
    /// score exceeds any double; it saturates at the largest finite one.
    fn score_at(&self, value: f64, now: i64) -> f64 {
        if self.lambda == 0.0 || value == 0.0 {
            return value;
        }
        let score = value * (-self.lambda * (now - self.landmark) as f64).exp();
        if score.is_finite() {
            score
        } else {
            f64::MAX.copysign(value)
        }
    }

    /// Adds `points` earned at `ts` (seconds; ≤ 0 = now) to `user_id`'s score,
    /// creating the user if needed.
    ///
    /// At `max_users`, a new user whose score would rank above the lowest-ranked
    /// user evicts it ([`AddOutcome::Evicted`]); otherwise the new user is refused
    /// with [`Error::Full`] and nothing changes.
    pub fn add(&mut self, user_id: &str, points: f64, ts: i64) -> Result<AddOutcome> {
        self.update(user_id, points, ts, false)
    }

    /// Sets `user_id`'s score to `score` as of `ts` (seconds; ≤ 0 = now), replacing
    /// its history. Same capacity rules as [`Leaderboard::add`].
    pub fn set(&mut self, user_id: &str, score: f64, ts: i64) -> Result<AddOutcome> {
        self.update(user_id, score, ts, true)
    }

    fn update(&mut self, user_id: &str, amount: f64, ts: i64, replace: bool) -> Result<AddOutcome> {
        let plan = self.plan(user_id, amount, ts, replace)?;
        self.apply(user_id, amount, plan, replace)
    }

    /// Checks an update and decides what it depends on besides the board: its
    /// timestamp (≤ 0 resolved to now) and the landmark in force when it applies
    /// (a first update anchors it, a far timestamp rebases it; both read the wall
    /// clock). [`Leaderboard::apply`] with the same plan on the same board gives the
    /// same result whenever it runs: a journal logs the plan and replays it.
    #[inline]
    pub fn plan(&mut self, user_id: &str, amount: f64, ts: i64, replace: bool) -> Result<Planned> {
        check_user_id(user_id)?;
        // Start loading the user's bucket first: the checks and the decay factor
        // below then run while it arrives.
        let hash = hash_id(user_id.as_bytes(), self.seed);
        self.by_id.prefetch(hash);
        let what = if replace { "score" } else { "points" };
        if !amount.is_finite() {
            return Err(invalid(format_args!("{what} must be finite, got {amount}")));
        }
        let ts = resolve_ts(ts, "timestamp")?;
        if ts > self.future_bound {
            self.refuse_future(ts)?;
        }
        let mut landmark = self.landmark;
        if self.is_empty() && self.pending.as_ref().is_none_or(|p| p.is_empty()) {
            // Anchor at the data, not at the wall clock: a board fed history from
            // years ago would otherwise see every contribution underflow to 0.
            // Never past the present, though (see `rebase_target`).
            landmark = ts.min(wall_clock_secs());
        }
        if self.lambda != 0.0 && self.lambda * (ts - landmark) as f64 > REBASE_EXPONENT {
            landmark = Self::rebase_target(ts, landmark);
        }
        Ok(Planned { ts, landmark, hash })
    }

    /// The landmark a rebase for `ts` moves to: `ts` or the present, whichever is
    /// earlier (and never back). A `ts` whose factor is still too large for a
    /// double (only with a decay of most of a score within seconds) then gives an
    /// infinite value, which the update refuses.
    #[cold]
    fn rebase_target(ts: i64, landmark: i64) -> i64 {
        ts.min(wall_clock_secs()).max(landmark)
    }

    /// Applies an update planned by [`Leaderboard::plan`].
    pub fn apply(
        &mut self,
        user_id: &str,
        amount: f64,
        plan: Planned,
        replace: bool,
    ) -> Result<AddOutcome> {
        let Planned { ts, landmark, hash } = plan;
        if landmark != self.landmark {
            if self.is_empty() && self.pending.as_ref().is_none_or(|p| p.is_empty()) {
                self.landmark = landmark;
            } else if landmark > self.landmark {
                self.rebase(landmark);
            }
        }
        let what = if replace { "score" } else { "points" };
        let factor = if self.lambda == 0.0 {
            1.0
        } else {
            (self.lambda * (ts - self.landmark) as f64).exp()
        };
        let delta = amount * factor;
        let new_value = |old: f64| if replace { delta } else { old + delta } + 0.0;
        // Plan the key's move while the lookup confirms the id: both descents run
        // side by side and start loading both leaves, so on a large board the
        // cache misses of the table, the entry and the leaves overlap, and the
        // move itself need not search the tree again.
        let mut planned = None;
        let found = self.lookup(user_id.as_bytes(), hash, |board, c| {
            planned = Some((c.pos, board.plan_move(c, new_value(c.value), true)));
        });
        match found {
            Some(found) => {
                let slot = found.slot;
                let value = new_value(found.value);
                if !value.is_finite() {
                    return Err(invalid(format_args!(
                        "{what} {amount} would overflow {user_id:?}'s score"
                    )));
                }
                if value.to_bits() != found.value.to_bits() {
                    let plan = match planned {
                        Some((pos, plan)) if pos == found.pos => plan,
                        _ => self.plan_move(found, value, false),
                    };
                    let moved = self.index.apply_move(&plan, Self::tie(&self.entries));
                    debug_assert!(moved, "index lost a key");
                    self.by_id.set_value(found.pos, value);
                }
                let entry = &mut self.entries[slot as usize];
                entry.last_update = entry.last_update.max(ts);
                let last_update = entry.last_update;
                if let Some(pending) = self.pending.as_deref_mut() {
                    if replace {
                        let sum = Some(&mut entry.pending);
                        pending.op(PendingKind::Set, sum, user_id, value, last_update);
                    } else {
                        pending.add(&mut entry.pending, slot, delta);
                    }
                }
                Ok(AddOutcome::Stored)
            }
            None => {
                let value = delta + 0.0;
                if !value.is_finite() {
                    return Err(invalid(format_args!(
                        "{what} {amount} overflows the score range"
                    )));
                }
                let outcome = self.insert_new(user_id, value, ts);
                if self.pending.is_some() {
                    self.record_new(user_id, value, ts, replace, &outcome);
                }
                outcome
            }
        }
    }

    /// Refreshes the bound on timestamps from the clock and refuses `ts` if it is
    /// still later, counting it.
    #[cold]
    #[inline(never)]
    fn refuse_future(&mut self, ts: i64) -> Result<()> {
        self.future_bound = latest_accepted(self.config.max_future_secs);
        if ts <= self.future_bound {
            return Ok(());
        }
        self.future_refused += 1;
        Err(Error::invalid(format!(
            "timestamp {ts} is {} s past the wall clock; at most {} s are accepted (max_future_secs)",
            ts - wall_clock_secs(),
            self.config.max_future_secs
        )))
    }

    /// The new-user half of `update`, kept out of line: the hot path of a board in
    /// steady state updates users it already has.
    #[inline(never)]
    fn insert_new(&mut self, user_id: &str, value: f64, ts: i64) -> Result<AddOutcome> {
        let mut outcome = AddOutcome::Stored;
        if self.config.max_users > 0 && self.len() >= self.config.max_users {
            let Some(lowest) = self.index.last() else {
                return Err(Error::Full("max_users is 0".into()));
            };
            let lowest_id = self.entries[lowest.slot as usize].id.as_bytes();
            let beats_lowest = match value.total_cmp(&lowest.score) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => user_id.as_bytes() < lowest_id,
            };
            if !beats_lowest {
                self.refused += 1;
                return Err(Error::Full(format!(
                    "leaderboard holds max_users = {} and {user_id:?} would rank below the lowest user",
                    self.config.max_users
                )));
            }
            let evicted = &mut self.entries[lowest.slot as usize];
            let evicted_id = evicted.id.as_str().to_owned();
            if let Some(pending) = self.pending.as_deref_mut() {
                pending.orphan(&mut evicted.pending, &evicted_id, evicted.last_update);
            }
            self.remove_key(lowest)?;
            self.evicted += 1;
            outcome = AddOutcome::Evicted(evicted_id);
        }
        let entry = Entry {
            id: UserId::new(user_id),
            last_update: ts,
            pending: pending::CLEAN,
        };
        self.long_id_bytes += entry.id.heap_bytes();
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.entries[slot as usize] = entry;
                slot
            }
            None => {
                let slot = u32::try_from(self.entries.len())
                    .ok()
                    .filter(|&s| s != u32::MAX)
                    .ok_or_else(|| Error::Full("more than 2^32 - 1 users".into()))?;
                mem::push(&mut self.entries, entry);
                slot
            }
        };
        self.by_id
            .insert_unique(hash_id(user_id.as_bytes(), self.seed), slot, value);
        let tie = Self::tie(&self.entries);
        self.index.insert(Key { score: value, slot }, &tie);
        self.debug_check_sizes();
        Ok(outcome)
    }

    /// Removes the user with index key `key` from the index, the table and the
    /// entries. Should the index not find the key (a bug), nothing is removed and
    /// the slot is not freed, so it cannot be handed to another user while the
    /// index still refers to it.
    fn remove_key(&mut self, key: Key) -> Result<()> {
        let slot = key.slot;
        if !self.index.remove(key, Self::tie(&self.entries)) {
            debug_assert!(false, "index lost a key");
            return Err(index_lost(&self.entries[slot as usize].id));
        }
        let hash = hash_id(self.entries[slot as usize].id.as_bytes(), self.seed);
        let removed = self.by_id.remove(hash, slot);
        debug_assert!(removed, "id table lost a slot");
        let id = std::mem::take(&mut self.entries[slot as usize].id);
        self.long_id_bytes -= id.heap_bytes();
        self.free_slots.push(slot);
        self.debug_check_sizes();
        Ok(())
    }

    /// The O(1) invariants, checked after every change in debug builds: the id
    /// table and the index hold as many users, and no more than `max_users`. The
    /// tests check the whole structure ([`Leaderboard::check_invariants`]).
    #[inline]
    fn debug_check_sizes(&self) {
        debug_assert_eq!(self.by_id.len(), self.index.len(), "table and index sizes");
        debug_assert!(
            self.config.max_users == 0 || self.len() <= self.config.max_users,
            "more than max_users"
        );
    }

    /// Verifies every invariant (tests): the index is ordered by (value desc, id
    /// asc) with consistent counts; it and the id table hold the same set of users,
    /// once each; every live entry is in both and every vacated slot in neither;
    /// `len() <= max_users`.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.index.check_invariants(Self::tie(&self.entries));
        assert_eq!(self.by_id.len(), self.index.len(), "table and index sizes");
        if self.config.max_users > 0 {
            assert!(self.len() <= self.config.max_users, "more than max_users");
        }
        let mut in_index = vec![false; self.entries.len()];
        for key in self.index.iter_from(0) {
            let seen = &mut in_index[key.slot as usize];
            assert!(!*seen, "slot {} twice in the index", key.slot);
            *seen = true;
            let found = self.find(self.entries[key.slot as usize].id.as_bytes());
            let found = found.expect("an indexed user is in the id table");
            assert_eq!(found.slot, key.slot, "table and index disagree on a slot");
            assert_eq!(found.value.to_bits(), key.score.to_bits(), "value");
        }
        let free: std::collections::HashSet<u32> = self.free_slots.iter().copied().collect();
        assert_eq!(free.len(), self.free_slots.len(), "a slot freed twice");
        for (slot, entry) in self.entries.iter().enumerate() {
            let live = !free.contains(&(slot as u32));
            assert_eq!(live, in_index[slot], "slot {slot}: live vs indexed");
            assert_eq!(live, !entry.id.as_bytes().is_empty(), "slot {slot}: id");
        }
    }

    /// Removes `user_id`; [`Error::NotFound`] if absent. With publishing enabled
    /// the removal is published even when the local board does not hold the user.
    pub fn remove(&mut self, user_id: &str) -> Result<()> {
        let found = self.find(user_id.as_bytes());
        if let Some(pending) = self.pending.as_deref_mut() {
            check_user_id(user_id)?;
            let sum = found.map(|f| &mut self.entries[f.slot as usize].pending);
            pending.op(PendingKind::Remove, sum, user_id, 0.0, 0);
        }
        match found {
            Some(found) => self.remove_key(Key {
                score: found.value,
                slot: found.slot,
            }),
            None => Err(Error::NotFound(format!("user {user_id:?}"))),
        }
    }

    fn ranked(&self, key: Key, position: usize, now: i64) -> RankedUser<'_> {
        let entry = &self.entries[key.slot as usize];
        RankedUser {
            user_id: entry.id.as_str(),
            rank: position as u64 + 1,
            score: self.score_at(key.score, now),
            last_update: entry.last_update,
        }
    }

    /// Up to `k` users starting at 0-based position `offset`, best first, with
    /// scores at `now` (seconds; ≤ 0 = wall clock).
    pub fn top(&self, offset: usize, k: usize, now: i64) -> Result<Vec<RankedUser<'_>>> {
        let now = resolve_ts(now, "now")?;
        Ok(self
            .index
            .iter_from(offset)
            .take(k)
            .enumerate()
            .map(|(i, key)| self.ranked(key, offset + i, now))
            .collect())
    }

    /// `user_id`'s rank and score at `now`, or [`Error::NotFound`].
    pub fn rank(&self, user_id: &str, now: i64) -> Result<RankedUser<'_>> {
        let now = resolve_ts(now, "now")?;
        let (key, position) = self.locate(user_id)?;
        Ok(self.ranked(key, position, now))
    }

    fn locate(&self, user_id: &str) -> Result<(Key, usize)> {
        let found = self
            .lookup(
                user_id.as_bytes(),
                hash_id(user_id.as_bytes(), self.seed),
                |board, c| {
                    let key = Key {
                        score: c.value,
                        slot: c.slot,
                    };
                    board.index.prefetch_leaf(key, Self::tie(&board.entries));
                },
            )
            .ok_or_else(|| Error::NotFound(format!("user {user_id:?}")))?;
        let key = Key {
            score: found.value,
            slot: found.slot,
        };
        let position = self
            .index
            .position(key, Self::tie(&self.entries))
            .ok_or_else(|| Error::Poisoned(format!("index lost user {user_id:?}")))?;
        Ok((key, position))
    }

    /// The users ranked within `radius` places of `user_id` (up to `2·radius + 1`
    /// rows, fewer at the ends), or [`Error::NotFound`].
    pub fn around(&self, user_id: &str, radius: usize, now: i64) -> Result<Vec<RankedUser<'_>>> {
        let (_, position) = self.locate(user_id)?;
        let start = position.saturating_sub(radius);
        // Saturating: a radius near usize::MAX must mean "everyone below", not wrap.
        let count = (position - start).saturating_add(1).saturating_add(radius);
        self.top(start, count, now)
    }

    /// Landmark time (seconds) that stored values are relative to.
    pub fn landmark(&self) -> i64 {
        self.landmark
    }

    /// Writes a JSON snapshot atomically (temp file, fsync, rename, fsync dir).
    /// Scores round-trip bit for bit.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_snapshot(path, &self.to_snapshot_json())
    }

    /// Serializes the board to snapshot JSON (see [`Leaderboard::save`]).
    pub fn to_snapshot_json(&self) -> Vec<u8> {
        snapshot::encode(self)
    }

    /// Reads a snapshot (ours or the C++ extension's) into a new board with the
    /// default `max_future_secs`. Everything is validated; any problem with our
    /// format is [`Error::Corrupt`] naming it; entries of a C++ extension
    /// snapshot that cannot be loaded are skipped ([`Leaderboard::decode_snapshot`]
    /// reports them).
    pub fn from_snapshot_json(bytes: &[u8]) -> Result<Self> {
        Self::decode_snapshot(bytes, DEFAULT_MAX_FUTURE_SECS)
    }

    /// Reads a snapshot into a new board whose `max_future_secs` is the one given
    /// (it is not part of the snapshot). The C++ extension's entries that were
    /// skipped are listed by [`Leaderboard::skipped_at_load`].
    pub fn decode_snapshot(bytes: &[u8], max_future_secs: i64) -> Result<Self> {
        snapshot::decode(bytes, max_future_secs)
    }

    /// The entries of the C++ extension snapshot this board was loaded from that
    /// were left out, with the reasons; empty for any other board.
    pub fn skipped_at_load(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Reads and validates a snapshot file into a new board ([`Error::Io`] if it
    /// cannot be read, [`Error::Corrupt`] if it is invalid); see
    /// [`Leaderboard::decode_snapshot`].
    pub fn load(path: &Path, max_future_secs: i64) -> Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::decode_snapshot(&bytes, max_future_secs).map_err(|e| match e {
            Error::Corrupt(m) => Error::Corrupt(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Iterates every user as `(id, value at the landmark, last_update)` in rank order.
    fn iter_ranked(&self) -> impl Iterator<Item = (&str, f64, i64)> + '_ {
        self.index.iter_from(0).map(|key| {
            let e = &self.entries[key.slot as usize];
            (e.id.as_str(), key.score, e.last_update)
        })
    }

    /// Builds a board from validated parts; entries need not be sorted.
    fn from_parts(
        config: LeaderboardConfig,
        landmark: i64,
        parts: Vec<(String, f64, i64)>,
    ) -> Result<Self> {
        let mut board = Self::with_landmark(config, landmark);
        mem::reserve_exact(&mut board.entries, parts.len());
        board.by_id.reserve(parts.len());
        for (id, value, last_update) in parts {
            let hash = hash_id(id.as_bytes(), board.seed);
            let entries = &board.entries;
            if entries.len() >= u32::MAX as usize {
                return Err(Error::corrupt("more than 2^32 - 1 entries"));
            }
            if board
                .by_id
                .find(hash, |s| entries[s as usize].id.as_bytes() == id.as_bytes())
                .is_some()
            {
                return Err(Error::corrupt(format!("user_id {id:?} appears twice")));
            }
            let slot = board.entries.len() as u32;
            let user_id = UserId::new(&id);
            board.long_id_bytes += user_id.heap_bytes();
            board.entries.push(Entry {
                id: user_id,
                last_update,
                pending: pending::CLEAN,
            });
            board.by_id.insert_unique(hash, slot, value + 0.0);
        }
        board.rebuild_index();
        Ok(board)
    }
}

/// Publishing: see [`pending`].
impl Leaderboard {
    /// Starts recording every change for a shared copy of the board, holding at
    /// most `max_pending` (> 0) distinct changes between drains. Idempotent
    /// (a second call only changes the bound).
    pub fn enable_publishing(&mut self, max_pending: usize) -> Result<()> {
        if max_pending == 0 {
            return Err(Error::invalid("max_pending must be > 0"));
        }
        match self.pending.as_deref_mut() {
            Some(pending) => pending.set_bound(max_pending),
            None => self.pending = Some(Box::new(Pending::new(max_pending))),
        }
        Ok(())
    }

    /// True once [`Leaderboard::enable_publishing`] ran.
    pub fn publishing(&self) -> bool {
        self.pending.is_some()
    }

    /// True when changes wait for [`Leaderboard::drain_pending`] (never when
    /// publishing is off). O(1).
    pub fn has_pending(&self) -> bool {
        self.pending.as_deref().is_some_and(|p| !p.is_empty())
    }

    /// Takes every change recorded since the last drain, exactly once: values
    /// are relative to the returned landmark. Empty when publishing is off.
    pub fn drain_pending(&mut self) -> PendingBatch {
        let landmark = self.landmark;
        let Some(pending) = self.pending.as_deref_mut() else {
            return PendingBatch {
                landmark,
                rows: Vec::new(),
            };
        };
        pending.drain(landmark, &mut self.entries, |e| {
            (&mut e.pending, e.id.as_str(), e.last_update)
        })
    }

    /// What [`Leaderboard::drain_pending`] would take now, without taking it.
    pub fn peek_pending(&self) -> PendingBatch {
        let landmark = self.landmark;
        match self.pending.as_deref() {
            Some(pending) => pending.peek(landmark, &self.entries, |e| {
                (e.pending, e.id.as_str(), e.last_update)
            }),
            None => PendingBatch {
                landmark,
                rows: Vec::new(),
            },
        }
    }

    /// Drops every pending change (a forked child: its parent publishes them).
    pub fn discard_pending(&mut self) {
        if let Some(pending) = self.pending.as_deref_mut() {
            pending.discard(&mut self.entries, |e| &mut e.pending);
        }
    }

    /// `update`'s bookkeeping for a user that was not on the board.
    #[cold]
    fn record_new(
        &mut self,
        user_id: &str,
        value: f64,
        ts: i64,
        replace: bool,
        outcome: &Result<AddOutcome>,
    ) {
        let slot = match outcome {
            Ok(_) => self.find(user_id.as_bytes()).map(|f| f.slot),
            Err(_) => None,
        };
        let refused = matches!(outcome, Err(Error::Full(_)));
        let Some(pending) = self.pending.as_deref_mut() else {
            return;
        };
        match slot {
            Some(slot) => {
                let sum = &mut self.entries[slot as usize].pending;
                if replace {
                    pending.op(PendingKind::Set, Some(sum), user_id, value, ts);
                } else {
                    pending.add(sum, slot, value);
                }
            }
            None if refused && replace => pending.op(PendingKind::Set, None, user_id, value, ts),
            None if refused => pending.add_orphan(user_id, value, ts),
            None => {}
        }
    }

    /// Moves every user's pending sum to the orphans (the users leave the board).
    fn orphan_all_pending(&mut self) {
        let Some(pending) = self.pending.as_deref_mut() else {
            return;
        };
        for entry in self.entries.iter_mut() {
            if !entry.id.as_bytes().is_empty() {
                pending.orphan(&mut entry.pending, entry.id.as_str(), entry.last_update);
            }
        }
    }

    /// Moves this board's pending changes to `other` (a board loaded to replace
    /// it), rescaled to `other`'s landmark. Refused if the decay rates differ:
    /// the shared board's values would no longer add up.
    pub fn hand_pending_to(&mut self, other: &mut Leaderboard) -> Result<()> {
        if self.pending.is_none() {
            return Ok(());
        }
        if self.lambda.to_bits() != other.lambda.to_bits() {
            return Err(Error::invalid(
                "a publishing board cannot load a snapshot with other decay settings",
            ));
        }
        self.orphan_all_pending();
        let mut pending = self.pending.take();
        if let Some(p) = pending.as_deref_mut() {
            p.forget_slots();
            let shift = (other.landmark - self.landmark) as f64;
            if shift != 0.0 && self.lambda != 0.0 {
                p.rescale((-self.lambda * shift).exp(), std::iter::empty());
            }
        }
        other.pending = pending;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
