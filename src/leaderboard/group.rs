//! Many leaderboards in one handle, keyed by guild id ([`BoardGroup`]).
//!
//! A Discord bot lives in thousands of guilds, and each wants its own board. One
//! [`Leaderboard`] per guild, each behind a handle of its own (and with `redis=`
//! a publisher thread of its own), costs a thread and a handle's overhead per
//! guild. A group holds every guild's board in one structure, with one set of
//! settings (decay, `max_users` per board, `max_future_secs`), and publishes
//! them all through one publisher.
//!
//! * **Boards** are plain [`Leaderboard`]s, made on a guild's first update with
//!   the group's settings: every rule of a board (decay, ties, capacity, future
//!   timestamps, publishing) is the board's own code. An update that fails on a
//!   guild the group did not hold leaves no board behind.
//! * **Locks**: guilds are spread over [`STRIPES`] stripes by a seeded hash of
//!   their id, each stripe a table of boards under its own `RwLock` (on its own
//!   cache line): updates of guilds in different stripes never wait for each
//!   other, queries of one stripe share its read lock. No thread per guild; the
//!   group has no thread at all.
//! * **Publishing** ([`BoardGroup::enable_publishing`]): each board records its
//!   changes as a publishing [`Leaderboard`] does (the pending sums). The first
//!   change of a board since it was last published puts the guild on the group's
//!   *dirty list*, so [`BoardGroup::outbox_next`] visits only the boards that
//!   changed, never a scan of every board. It drains each into a batch numbered
//!   from one counter of the whole group (so numbers of one guild keep growing
//!   even if the guild is dropped and made again), which stays with the board
//!   until [`BoardGroup::outbox_ack`]; until then every `outbox_next` hands it
//!   out again (a resend is the same batch under the same number).
//! * **Memory** (measured by `tests::memory_per_board_is_small_and_bounded`): a
//!   guild costs its table slot (`size_of::<GuildBoard>()`: 376 bytes, of which
//!   the `Leaderboard` itself is 336) plus the board's heap: 776 bytes for an
//!   empty board (one index leaf), 1,672 with 10 users (16 entries, 16 id-table
//!   buckets, the leaf). 10,000 guilds of 10 users hold 2.3 KB per guild in all
//!   (`GroupStats::heap_bytes`). `max_guilds` bounds the number of boards.
//!
//! Lock order: the outbox lock, then a stripe, then the lists; never two stripes
//! at once (whole-group operations take them one after the other).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::pending::PendingBatch;
use super::{AddOutcome, Leaderboard, LeaderboardConfig, random_seed};
use crate::community::MAX_GUILD_BYTES;
use crate::error::{Error, Result};

/// Number of lock stripes.
const STRIPES: usize = 64;

/// A group's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupConfig {
    /// The settings of every board (`max_users` is per board).
    pub board: LeaderboardConfig,
    /// Most boards (guilds) held; 0 = unbounded. A new guild beyond it is refused
    /// with [`Error::Full`].
    pub max_guilds: usize,
}

impl GroupConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        self.board.validate()
    }
}

/// Counters and sizes of a whole group, summed over its boards.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupStats {
    /// Boards (guilds) held.
    pub boards: u64,
    /// Users over every board.
    pub users: u64,
    /// Heap bytes: the guild tables (a slot per guild) and every board's
    /// structures, ids and batches waiting for Redis.
    pub heap_bytes: u64,
    /// Users evicted at `max_users`, over every board.
    pub evicted: u64,
    /// New users refused at `max_users`, over every board.
    pub refused: u64,
    /// Updates refused for a timestamp past the wall clock plus `max_future_secs`.
    pub future_refused: u64,
    /// Landmark moves, over every board.
    pub rebases: u64,
    /// Changes waiting to be taken for Redis, over every board.
    pub pending: u64,
    /// Changes not recorded because a board held `max_pending`.
    pub pending_dropped: u64,
    /// Guilds on the dirty list (changed since they were last taken).
    pub dirty: u64,
    /// Guilds whose batch was taken and not yet acknowledged.
    pub in_flight: u64,
    /// Changes not yet taken for Redis that [`BoardGroup::drop_guild`] discarded.
    pub unpublished_dropped: u64,
}

/// Where a guild is on the group's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed {
    /// Nothing to publish.
    No,
    /// On the dirty list: changes wait to be taken.
    Dirty,
    /// Its batch was taken and waits for its acknowledgement (it may have new
    /// changes too: they go on the dirty list at the acknowledgement).
    InFlight,
}

/// One guild: its board and the batch taken for Redis.
#[derive(Debug)]
struct GuildBoard {
    /// The id's hash under the group's seed (also picks the stripe).
    hash: u64,
    id: Box<str>,
    board: Leaderboard,
    /// The batch taken and not yet acknowledged, with its number.
    taken: Option<Box<(u64, PendingBatch)>>,
    listed: Listed,
}

impl GuildBoard {
    fn heap_bytes(&self) -> usize {
        let taken = self.taken.as_deref().map_or(0, |(_, batch)| {
            std::mem::size_of::<(u64, PendingBatch)>()
                + batch
                    .rows
                    .iter()
                    .map(|r| std::mem::size_of_val(r) + r.user_id.len())
                    .sum::<usize>()
        });
        self.id.len() + self.board.heap_bytes() + taken
    }
}

#[derive(Debug, Default)]
struct Stripe {
    guilds: HashTable<GuildBoard>,
}

/// The guilds to visit for Redis, by hash and id (a guild may be listed twice
/// after a drop and a re-creation; its `listed` state decides).
#[derive(Debug, Default)]
struct Lists {
    dirty: VecDeque<(u64, Box<str>)>,
    in_flight: Vec<(u64, Box<str>)>,
}

/// Many leaderboards keyed by guild id: see the [module docs](self).
/// Synchronised: every method takes `&self`.
#[derive(Debug)]
pub struct BoardGroup {
    config: GroupConfig,
    seed: u64,
    /// `None` once closed.
    stripes: Box<[CachePadded<RwLock<Option<Stripe>>>]>,
    closed: AtomicBool,
    /// Boards held (reserved before a board is inserted, so `max_guilds` holds).
    boards: AtomicUsize,
    /// `max_pending` of every board once publishing is on; 0 = off.
    max_pending: AtomicUsize,
    /// The last batch number handed out.
    last_number: AtomicU64,
    /// Future timestamps refused on guilds the group did not hold.
    future_refused_unheld: AtomicU64,
    unpublished_dropped: AtomicU64,
    lists: Mutex<Lists>,
    /// Serialises `outbox_next`.
    outbox: Mutex<()>,
}

/// Checks a guild id argument.
pub fn check_guild_id(guild: &str) -> Result<()> {
    if guild.is_empty() {
        return Err(Error::invalid("guild_id must not be empty"));
    }
    if guild.len() > MAX_GUILD_BYTES {
        return Err(Error::invalid(format!(
            "guild_id is {} bytes, the limit is {MAX_GUILD_BYTES}",
            guild.len()
        )));
    }
    Ok(())
}

/// Checks a time argument as a board does (after year 9999 is refused; <= 0
/// means now).
pub fn check_time(ts: i64, what: &str) -> Result<()> {
    super::resolve_ts(ts, what).map(drop)
}

fn closed() -> Error {
    Error::Closed("guild leaderboards closed".into())
}

fn poisoned() -> Error {
    Error::Poisoned("a guild leaderboard panicked during an earlier update; free the group".into())
}

/// A guild as visited by [`BoardGroup::outbox_next`].
#[derive(Debug, Clone, Copy)]
pub struct TakenBatch<'a> {
    /// The guild.
    pub guild: &'a str,
    /// The batch's number (grows over the whole group; never 0).
    pub number: u64,
    /// The changes, relative to `batch.landmark`.
    pub batch: &'a PendingBatch,
}

impl BoardGroup {
    /// An empty group.
    pub fn new(config: GroupConfig) -> Result<Self> {
        config.validate()?;
        let stripes = (0..STRIPES)
            .map(|_| CachePadded::new(RwLock::new(Some(Stripe::default()))))
            .collect();
        Ok(BoardGroup {
            config,
            seed: random_seed(),
            stripes,
            closed: AtomicBool::new(false),
            boards: AtomicUsize::new(0),
            max_pending: AtomicUsize::new(0),
            last_number: AtomicU64::new(0),
            future_refused_unheld: AtomicU64::new(0),
            unpublished_dropped: AtomicU64::new(0),
            lists: Mutex::new(Lists::default()),
            outbox: Mutex::new(()),
        })
    }

    /// The group's settings.
    pub fn config(&self) -> GroupConfig {
        self.config
    }

    fn hash(&self, guild: &str) -> u64 {
        xxh3_64_with_seed(guild.as_bytes(), self.seed)
    }

    fn stripe_of(&self, hash: u64) -> &RwLock<Option<Stripe>> {
        // The top bits: the tables inside use the low ones.
        &self.stripes[(hash >> 58) as usize % STRIPES]
    }

    fn read_stripe<'a>(&self, lock: &'a RwLock<Option<Stripe>>) -> Result<StripeRead<'a>> {
        let guard = lock.read().map_err(|_| poisoned())?;
        if guard.is_none() {
            return Err(closed());
        }
        Ok(StripeRead(guard))
    }

    fn write_stripe<'a>(&self, lock: &'a RwLock<Option<Stripe>>) -> Result<StripeWrite<'a>> {
        let guard = lock.write().map_err(|_| poisoned())?;
        if guard.is_none() {
            return Err(closed());
        }
        Ok(StripeWrite(guard))
    }

    fn lock_lists(&self) -> MutexGuard<'_, Lists> {
        // Nothing panics while holding it (pushes and pops only).
        self.lists.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        Ok(())
    }

    /// Runs `f` on `guild`'s board (`None` if the group holds no board for it)
    /// under its stripe's read lock.
    pub fn read<R>(
        &self,
        guild: &str,
        f: impl FnOnce(Option<&Leaderboard>) -> Result<R>,
    ) -> Result<R> {
        check_guild_id(guild)?;
        let hash = self.hash(guild);
        let stripe = self.read_stripe(self.stripe_of(hash))?;
        let found = stripe.get().guilds.find(hash, |g| &*g.id == guild);
        f(found.map(|g| &g.board))
    }

    /// Adds `points` earned at `ts` to `user` on `guild`'s board (made with the
    /// group's settings if the group holds none): [`Leaderboard::add`].
    pub fn add(&self, guild: &str, user: &str, points: f64, ts: i64) -> Result<AddOutcome> {
        self.update(guild, true, |board| board.add(user, points, ts))
    }

    /// Sets `user`'s score on `guild`'s board: [`Leaderboard::set`].
    pub fn set(&self, guild: &str, user: &str, score: f64, ts: i64) -> Result<AddOutcome> {
        self.update(guild, true, |board| board.set(user, score, ts))
    }

    /// Removes `user` from `guild`'s board: [`Leaderboard::remove`]
    /// ([`Error::NotFound`] if absent). With publishing on, the removal is
    /// recorded for Redis even when the group holds no board for the guild (a
    /// board is then made to record it, as a publishing board records the removal
    /// of a user it does not hold).
    pub fn remove(&self, guild: &str, user: &str) -> Result<()> {
        let publishing = self.max_pending.load(Ordering::Acquire) > 0;
        self.update(guild, publishing, |board| board.remove(user))
            .map_err(|e| match e {
                Error::NotFound(_) => Error::NotFound(format!("user {user:?} in guild {guild:?}")),
                other => other,
            })
    }

    /// Runs `op` on `guild`'s board under its stripe's write lock. A guild the
    /// group does not hold gets a new board if `create` (kept only if `op`
    /// succeeded or recorded a change for Redis), else [`Error::NotFound`].
    fn update<R>(
        &self,
        guild: &str,
        create: bool,
        op: impl FnOnce(&mut Leaderboard) -> Result<R>,
    ) -> Result<R> {
        check_guild_id(guild)?;
        let hash = self.hash(guild);
        let mut stripe = self.write_stripe(self.stripe_of(hash))?;
        let stripe = stripe.get_mut();
        if let Some(g) = stripe.guilds.find_mut(hash, |g| &*g.id == guild) {
            let result = op(&mut g.board);
            self.list_if_changed(g);
            return result;
        }
        if !create {
            return Err(Error::NotFound(format!("guild {guild:?}")));
        }
        self.reserve_board()?;
        let mut board = match self.new_board() {
            Ok(board) => board,
            Err(e) => {
                self.boards.fetch_sub(1, Ordering::AcqRel);
                return Err(e);
            }
        };
        let result = op(&mut board);
        if result.is_err() && !board.has_pending() {
            // Nothing to keep: the group stays as it was (but for the count).
            self.future_refused_unheld
                .fetch_add(board.stats().future_refused, Ordering::Relaxed);
            self.boards.fetch_sub(1, Ordering::AcqRel);
            return result;
        }
        let g = stripe.guilds.insert_unique(
            hash,
            GuildBoard {
                hash,
                id: guild.into(),
                board,
                taken: None,
                listed: Listed::No,
            },
            |g| g.hash,
        );
        self.list_if_changed(g.into_mut());
        result
    }

    /// Counts a new board, refusing one beyond `max_guilds`.
    fn reserve_board(&self) -> Result<()> {
        let max = self.config.max_guilds;
        self.boards
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .map(drop)
            .map_err(|_| {
                Error::Full(format!(
                    "the group holds max_guilds = {max} boards; drop a guild first"
                ))
            })
    }

    fn new_board(&self) -> Result<Leaderboard> {
        let mut board = Leaderboard::new(self.config.board)?;
        let max_pending = self.max_pending.load(Ordering::Acquire);
        if max_pending > 0 {
            board.enable_publishing(max_pending)?;
        }
        Ok(board)
    }

    /// Puts a guild whose board now has changes for Redis on the dirty list (once:
    /// a guild in flight is listed again at its acknowledgement).
    fn list_if_changed(&self, g: &mut GuildBoard) {
        if g.listed == Listed::No && g.board.has_pending() {
            g.listed = Listed::Dirty;
            self.lock_lists().dirty.push_back((g.hash, g.id.clone()));
        }
    }

    /// Number of users on `guild`'s board (0 for a guild the group does not hold).
    pub fn len(&self, guild: &str) -> Result<usize> {
        self.read(guild, |board| Ok(board.map_or(0, Leaderboard::len)))
    }

    /// Drops `guild`'s board. `Some(n)` if the group held it, where `n` counts
    /// its changes not yet taken for Redis, which are discarded (also counted in
    /// [`GroupStats::unpublished_dropped`]); a batch already taken may still be
    /// sent and acknowledged (the acknowledgement of a dropped guild is ignored).
    pub fn drop_guild(&self, guild: &str) -> Result<Option<u64>> {
        check_guild_id(guild)?;
        let hash = self.hash(guild);
        let mut stripe = self.write_stripe(self.stripe_of(hash))?;
        let Ok(entry) = stripe
            .get_mut()
            .guilds
            .find_entry(hash, |g| &*g.id == guild)
        else {
            return Ok(None);
        };
        let (g, _) = entry.remove();
        let guilds = &mut stripe.get_mut().guilds;
        if guilds.len() * 4 < guilds.capacity() {
            // Many guilds left: give their slots back.
            guilds.shrink_to(guilds.len() * 2, |g| g.hash);
        }
        drop(stripe);
        self.boards.fetch_sub(1, Ordering::AcqRel);
        let discarded = g.board.stats().pending;
        self.unpublished_dropped
            .fetch_add(discarded, Ordering::Relaxed);
        // The lists may still name it: their visits skip a guild they do not find.
        drop(g);
        Ok(Some(discarded))
    }

    /// Guild ids in byte order after `after` (all from the first if `None`), at
    /// most `limit`, each with its number of users. Takes the stripes' read locks
    /// one after the other: a guild made or dropped meanwhile may or may not be
    /// listed. O(guilds · log guilds).
    pub fn guilds(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, usize)>> {
        self.check_open()?;
        let mut out = Vec::new();
        for lock in self.stripes.iter() {
            let stripe = self.read_stripe(lock)?;
            out.extend(
                stripe
                    .get()
                    .guilds
                    .iter()
                    .filter(|g| after.is_none_or(|a| g.id.as_bytes() > a.as_bytes()))
                    .map(|g| (g.id.to_string(), g.board.len())),
            );
        }
        out.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        out.truncate(limit);
        Ok(out)
    }

    /// Counters and sizes summed over every board (one stripe at a time).
    pub fn stats(&self) -> Result<GroupStats> {
        self.check_open()?;
        let mut s = GroupStats::default();
        for lock in self.stripes.iter() {
            let stripe = self.read_stripe(lock)?;
            let guilds = &stripe.get().guilds;
            s.heap_bytes += guilds.allocation_size() as u64;
            for g in guilds.iter() {
                let b = g.board.stats();
                s.boards += 1;
                s.users += b.len;
                s.heap_bytes += g.heap_bytes() as u64;
                s.evicted += b.evicted;
                s.refused += b.refused;
                s.future_refused += b.future_refused;
                s.rebases += b.rebases;
                s.pending += b.pending;
                s.pending_dropped += b.pending_dropped;
                match g.listed {
                    Listed::No => {}
                    Listed::Dirty => s.dirty += 1,
                    Listed::InFlight => s.in_flight += 1,
                }
            }
        }
        s.future_refused += self.future_refused_unheld.load(Ordering::Relaxed);
        s.unpublished_dropped = self.unpublished_dropped.load(Ordering::Relaxed);
        Ok(s)
    }

    /// Starts recording every board's changes for Redis (each board holding at
    /// most `max_pending` > 0 between drains: [`Leaderboard::enable_publishing`]),
    /// for the boards held and those made later. A second call changes the bound.
    pub fn enable_publishing(&self, max_pending: usize) -> Result<()> {
        if max_pending == 0 {
            return Err(Error::invalid("max_pending must be > 0"));
        }
        self.check_open()?;
        // First the setting, then the boards held: a board made meanwhile reads it
        // or is enabled below (enabling is idempotent).
        self.max_pending.store(max_pending, Ordering::Release);
        for lock in self.stripes.iter() {
            let mut stripe = self.write_stripe(lock)?;
            for g in stripe.get_mut().guilds.iter_mut() {
                g.board.enable_publishing(max_pending)?;
            }
        }
        Ok(())
    }

    /// True once [`BoardGroup::enable_publishing`] ran.
    pub fn publishing(&self) -> bool {
        self.max_pending.load(Ordering::Acquire) > 0
    }

    /// Hands every batch taken and not yet acknowledged to `visit` again (a
    /// resend: same rows, same number), then takes new batches from the guilds on
    /// the dirty list, oldest first, until they hold `max_rows` rows or more (0 =
    /// no limit) or the list is empty: each guild's changes are drained into a
    /// batch under the next number, handed to `visit`, and kept until
    /// [`BoardGroup::outbox_ack`]. Visits only guilds that changed. Returns the
    /// number of batches visited. `visit` runs under the guild's stripe lock.
    pub fn outbox_next(
        &self,
        max_rows: usize,
        mut visit: impl FnMut(TakenBatch<'_>),
    ) -> Result<usize> {
        self.check_open()?;
        let _serial = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        let mut visited = 0;
        // Resends: normally none (a publisher acknowledges before it asks again).
        // In the order they were taken; a guild listed twice (dropped and made
        // again) is handed out once.
        let in_flight = std::mem::take(&mut self.lock_lists().in_flight);
        let mut kept = Vec::with_capacity(in_flight.len());
        let mut numbers = std::collections::HashSet::new();
        for (hash, id) in in_flight {
            let stripe = self.read_stripe(self.stripe_of(hash))?;
            let found = stripe.get().guilds.find(hash, |g| g.id == id);
            if let Some(g) = found.filter(|g| g.listed == Listed::InFlight) {
                if let Some((number, batch)) = g.taken.as_deref().filter(|t| numbers.insert(t.0)) {
                    visit(TakenBatch {
                        guild: &g.id,
                        number: *number,
                        batch,
                    });
                    visited += 1;
                    kept.push((hash, id));
                }
            }
        }
        self.lock_lists().in_flight.extend(kept);
        let mut rows = 0usize;
        while max_rows == 0 || rows < max_rows {
            let Some((hash, id)) = self.lock_lists().dirty.pop_front() else {
                break;
            };
            let mut stripe = self.write_stripe(self.stripe_of(hash))?;
            let Some(g) = stripe.get_mut().guilds.find_mut(hash, |g| g.id == id) else {
                continue; // dropped since it was listed
            };
            if g.listed != Listed::Dirty {
                continue; // listed twice (dropped and made again): taken already
            }
            let batch = g.board.drain_pending();
            if batch.rows.is_empty() {
                g.listed = Listed::No;
                continue;
            }
            let number = self.last_number.fetch_add(1, Ordering::Relaxed) + 1;
            rows += batch.rows.len();
            let taken = g.taken.insert(Box::new((number, batch)));
            g.listed = Listed::InFlight;
            visit(TakenBatch {
                guild: &g.id,
                number,
                batch: &taken.1,
            });
            visited += 1;
            self.lock_lists().in_flight.push((hash, id));
        }
        Ok(visited)
    }

    /// Acknowledges `guild`'s batch `number` (Redis applied it): the batch is
    /// dropped, and the guild goes back on the dirty list if it changed since the
    /// batch was taken. False (nothing done) for another number or a guild the
    /// group does not hold (dropped meanwhile).
    pub fn outbox_ack(&self, guild: &str, number: u64) -> Result<bool> {
        check_guild_id(guild)?;
        let hash = self.hash(guild);
        let mut stripe = self.write_stripe(self.stripe_of(hash))?;
        let Some(g) = stripe.get_mut().guilds.find_mut(hash, |g| &*g.id == guild) else {
            return Ok(false);
        };
        if g.taken.as_ref().is_none_or(|t| t.0 != number) {
            return Ok(false);
        }
        g.taken = None;
        g.listed = Listed::No;
        self.list_if_changed(g);
        Ok(true)
    }

    /// Drops every board, after the calls in progress (each holds its stripe's
    /// lock) finished; later calls fail with [`Error::Closed`]. Idempotent.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for lock in self.stripes.iter() {
            // A poisoned stripe still holds boards to release: take them. (The
            // guard is a temporary: the boards are dropped after it is released.)
            let stripe = lock.write().unwrap_or_else(PoisonError::into_inner).take();
            drop(stripe);
        }
        *self.lock_lists() = Lists::default();
        self.boards.store(0, Ordering::Release);
    }

    /// Takes every lock of the group (the outbox's, each stripe's, the lists'), in
    /// the group's lock order, waiting for the calls in progress: a `fork()` while
    /// they are held gives the child a whole group. Release by dropping the hold;
    /// [`GroupHold::in_child`] first in a forked child.
    pub fn hold_all(&self) -> GroupHold<'_> {
        let outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        let stripes = self
            .stripes
            .iter()
            .map(|lock| lock.write().unwrap_or_else(PoisonError::into_inner))
            .collect();
        GroupHold {
            lists: self.lock_lists(),
            stripes,
            _outbox: outbox,
        }
    }
}

/// Every lock of a group, held ([`BoardGroup::hold_all`]).
pub struct GroupHold<'a> {
    // Dropped in declaration order: the reverse of the order they were taken.
    lists: MutexGuard<'a, Lists>,
    stripes: Vec<RwLockWriteGuard<'a, Option<Stripe>>>,
    _outbox: MutexGuard<'a, ()>,
}

impl GroupHold<'_> {
    /// In a forked child: drops what waits for Redis (changes not taken, batches
    /// taken and not acknowledged; the parent publishes them) and empties the
    /// lists. The boards themselves go on.
    pub fn in_child(&mut self) {
        *self.lists = Lists::default();
        for stripe in self.stripes.iter_mut() {
            if let Some(stripe) = stripe.as_mut() {
                for g in stripe.guilds.iter_mut() {
                    g.board.discard_pending();
                    g.taken = None;
                    g.listed = Listed::No;
                }
            }
        }
    }
}

/// A stripe's read guard, known to be open.
struct StripeRead<'a>(RwLockReadGuard<'a, Option<Stripe>>);

impl StripeRead<'_> {
    fn get(&self) -> &Stripe {
        // Checked `Some` when the guard was taken, and a close needs the write lock.
        match self.0.as_ref() {
            Some(stripe) => stripe,
            None => unreachable_closed(),
        }
    }
}

/// A stripe's write guard, known to be open.
struct StripeWrite<'a>(RwLockWriteGuard<'a, Option<Stripe>>);

impl StripeWrite<'_> {
    fn get_mut(&mut self) -> &mut Stripe {
        match self.0.as_mut() {
            Some(stripe) => stripe,
            None => unreachable_closed(),
        }
    }
}

#[cold]
fn unreachable_closed() -> ! {
    unreachable!("a stripe checked open was closed under its lock")
}

#[cfg(test)]
mod tests;
