//! `eh_leaderboard`: the time-decayed leaderboard through the C ABI.

use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockWriteGuard, TryLockError};
use std::time::Duration;

use crate::atfork::{self, ForkGuarded, ForkHold};
use crate::journal::{self, Journal, Maintenance, Recovery, SyncMode, Writer};
use crate::leaderboard::durable::{self, BoardState, Change, update_record_head};

use super::sized::{read_sized, versioned, write_sized};
use super::{eh_status, guard, guard_free, handle, out_arg, path_arg, str_arg, write_out};
use crate::error::{Error, Result};
use crate::leaderboard::{Leaderboard, LeaderboardConfig, PendingBatch, RankedUser};

/// A time-decayed leaderboard (opaque). Create with `eh_leaderboard_new`, close with
/// `eh_leaderboard_close`, free with `eh_leaderboard_free`.
///
/// Scores decay by `decay_factor` per `decay_period_secs`; updates are O(log n),
/// `top` is O(log n + k) and `rank` O(log n) at any size; no query rescans users.
///
/// Lifetime: `eh_leaderboard_close` drops the board's memory and leaves a small
/// shell behind; every call on a closed board fails with `EH_SHUT_DOWN` ("leaderboard
/// closed") and changes nothing. `eh_leaderboard_free` closes (if needed) and then
/// releases the shell.
///
/// Fork: the child gets its own copy of the board, whole and unlocked whatever other
/// threads were doing (see "Threads and fork" at the top of this header), without
/// the changes recorded for publishing (`eh_leaderboard_publish_enable`): the
/// parent publishes those.
///
/// Thread safety: may be used from several threads at once. Queries share a read
/// lock; updates, `clear` and `load` take the write lock and are serialised (and
/// wait for it; `eh_leaderboard_try_add` returns `EH_BUSY` instead of waiting).
/// `eh_leaderboard_close` may run concurrently with any call, including another
/// close: it waits for calls in progress, and calls that start after it get
/// `EH_SHUT_DOWN`. `eh_leaderboard_free` must not run concurrently with, or be
/// followed by, any other call on the handle.
pub struct eh_leaderboard {
    shared: Arc<Shared>,
}

/// What the handle and its journal's maintenance thread share.
struct Shared {
    /// `None` once closed. Every call takes this lock before touching the board,
    /// so a close (write lock) never drops the board under a call in progress.
    board: RwLock<Option<State>>,
    /// The journal (`journal_path`), if any.
    journal: Option<Journal>,
    /// Its maintenance thread (sync, checkpoints); stopped by the close.
    maintenance: Mutex<Option<Maintenance>>,
    /// What opening the journal found.
    recovery: Recovery,
    /// The last error of the maintenance thread (a sync or a checkpoint).
    journal_error: Mutex<Option<String>>,
}

/// The board, its publisher's outbox, and the writer of its journal.
struct State {
    s: BoardState,
    log: Option<Writer>,
}

impl State {
    /// Logs `change` (nothing without a journal). On `Err` nothing was logged.
    fn log(&mut self, change: Change<'_>) -> Result<()> {
        match &mut self.log {
            Some(w) => {
                let (kind, payload) = change.record();
                w.append(kind, &[&payload])
            }
            None => Ok(()),
        }
    }

    /// `add` (`replace` false) or `set`, logged before it applies (a journal's
    /// failure changes nothing).
    fn update(&mut self, user_id: &str, amount: f64, ts: i64, replace: bool) -> Result<()> {
        let board = &mut self.s.board;
        let Some(w) = &mut self.log else {
            return if replace {
                board.set(user_id, amount, ts).map(drop)
            } else {
                board.add(user_id, amount, ts).map(drop)
            };
        };
        let plan = board.plan(user_id, amount, ts, replace)?;
        // Change::Update's record, appended from its parts (no payload built).
        let (kind, head) = update_record_head(plan, amount, replace);
        w.append(kind, &[&head, user_id.as_bytes()])?;
        board.apply(user_id, amount, plan, replace).map(drop)
    }
}

impl eh_leaderboard {
    fn board(&self) -> &RwLock<Option<State>> {
        &self.shared.board
    }

    /// Runs `f` on the open board under the read lock.
    fn read<R>(&self, f: impl FnOnce(&Leaderboard) -> Result<R>) -> Result<R> {
        self.read_state(|s| f(&s.s.board))
    }

    /// Runs `f` on the open state under the read lock.
    fn read_state<R>(&self, f: impl FnOnce(&State) -> Result<R>) -> Result<R> {
        let guard = self.board().read().map_err(|_| poisoned())?;
        f(guard.as_ref().ok_or_else(closed)?)
    }

    /// Runs `f` on the open state under the write lock, waiting for it.
    fn write<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        let mut guard = self.board().write().map_err(|_| poisoned())?;
        f(guard.as_mut().ok_or_else(closed)?)
    }

    /// `write` that returns `Error::Busy` at once if another thread holds the lock.
    fn try_write<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        let mut guard = self.board().try_write().map_err(|e| match e {
            TryLockError::WouldBlock => {
                Error::Busy("another thread is using the leaderboard".into())
            }
            TryLockError::Poisoned(_) => poisoned(),
        })?;
        f(guard.as_mut().ok_or_else(closed)?)
    }

    /// Writes a checkpoint of the state as it is now (a load replaced the board).
    fn checkpoint_now(&self, state: &State) -> Result<()> {
        match (&self.shared.journal, &state.log) {
            (Some(journal), Some(w)) => journal.checkpoint(&[w.position()], &state.s.encode()),
            _ => Ok(()),
        }
    }

    /// Drops the board, after the calls in progress (they hold the lock) finished;
    /// with a journal, after a last sync and checkpoint (a clean close restores
    /// exactly).
    fn close(&self) {
        let maintenance = self
            .shared
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut m) = maintenance {
            m.stop();
        }
        // A poisoned lock still guards a board that must be released: take it.
        let board = self
            .board()
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // The lock is released before the (possibly long) drop: calls that were
        // waiting for it fail with EH_SHUT_DOWN meanwhile instead of waiting.
        drop(board);
        // The journal is free for another handle from now on.
        if let Some(journal) = &self.shared.journal {
            journal.detach();
        }
    }
}

/// The maintenance thread's work: sync the journal; checkpoint when the log has
/// grown (and at the close). Errors are kept for the stats' reader.
fn maintain(shared: &Shared, stopping: bool) {
    let Some(journal) = &shared.journal else {
        return;
    };
    if journal.is_detached() {
        return;
    }
    let mut outcome = journal.sync();
    if outcome.is_ok() && (stopping || journal.wants_checkpoint()) {
        // Encoded under the read lock (updates wait; queries go on), written after.
        let snapshot = match shared.board.read() {
            Ok(guard) => guard
                .as_ref()
                .and_then(|st| st.log.as_ref().map(|w| (w.position(), st.s.encode()))),
            Err(_) => None,
        };
        if let Some((position, payload)) = snapshot {
            outcome = journal.checkpoint(&[position], &payload);
        }
    }
    if let Err(e) = outcome {
        *shared
            .journal_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
    }
}

/// Fork: the prepare handler waits for the calls in progress and holds the write
/// lock across `fork()`. In the child, the board goes on in memory: the inherited
/// unpublished changes and outbox are dropped (the parent publishes them), the
/// journal is detached (the parent owns its files) and its thread forgotten.
impl ForkGuarded for eh_leaderboard {
    fn hold_for_fork(&'static self) -> Box<dyn ForkHold> {
        Box::new(BoardHold {
            shared: &self.shared,
            board: self.board().write().unwrap_or_else(PoisonError::into_inner),
        })
    }
}

struct BoardHold {
    shared: &'static Shared,
    board: RwLockWriteGuard<'static, Option<State>>,
}

impl ForkHold for BoardHold {
    fn in_child(&mut self) {
        if let Some(state) = self.board.as_mut() {
            state.s.board.discard_pending();
            state.s.outbox.reset();
            state.log = None;
        }
        if let Some(journal) = &self.shared.journal {
            journal.detach();
        }
        // The thread does not exist in the child; its mutex may have been held.
        if let Ok(mut m) = self.shared.maintenance.try_lock() {
            if let Some(m) = m.take() {
                m.forget();
            }
        }
    }
}

/// The error of every call on a closed board.
fn closed() -> Error {
    Error::Closed("leaderboard closed".into())
}

fn poisoned() -> Error {
    Error::Poisoned("the leaderboard panicked during an earlier update; free it".into())
}

/// Leaderboard settings. Zero fields take their defaults. Set `struct_size` to
/// `sizeof(eh_leaderboard_config)`: fields are only ever appended, and a library
/// newer than the caller's header gives the fields the caller does not have their
/// defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct eh_leaderboard_config {
    /// `sizeof(eh_leaderboard_config)` as the caller's header declares it (0 or a
    /// size smaller than the first version: `EH_INVALID_ARGUMENT`).
    pub struct_size: usize,
    /// Fraction of a score kept after one period, in (0, 1]; 1 = no decay.
    /// 0 = default 0.95. Negative, NaN or > 1: `EH_INVALID_ARGUMENT`.
    pub decay_factor: f64,
    /// Length of a decay period in seconds; 0 = default 86400 (one day).
    /// Negative, NaN or infinite: `EH_INVALID_ARGUMENT`.
    pub decay_period_secs: f64,
    /// Most users kept; 0 = unbounded. When full, a new user that would rank above
    /// the lowest-ranked user evicts it; otherwise it is refused with `EH_FULL`.
    pub max_users: u64,
    /// Latest accepted timestamp, in seconds after the wall clock: later updates
    /// are refused with `EH_INVALID_ARGUMENT` (counted in `future_refused`), and
    /// snapshots with a later landmark or entry with `EH_CORRUPT`. 0 = default
    /// 86400 (one day); negative: `EH_INVALID_ARGUMENT`.
    pub max_future_secs: i64,
    /// A directory (NUL-terminated; created if needed) for the board's journal, or
    /// NULL for none. With a journal every change is logged before the call that
    /// makes it returns, and the board reopens with its whole state: a process
    /// crash loses nothing that returned; a machine crash at most
    /// `journal_sync_ms`. One handle per journal (a second: `EH_BUSY`); a journal
    /// of other decay settings or `max_users`: `EH_INVALID_ARGUMENT` naming them;
    /// of another format version: `EH_CORRUPT`. A change that cannot be logged (a
    /// full disk) fails with `EH_IO` and changes nothing. See "Durability" in the
    /// header's preamble.
    pub journal_path: *const c_char,
    /// Milliseconds between syncs of the journal to disk; 0 = default 1000;
    /// negative = sync every change before its call returns (slow: a disk flush
    /// per update).
    pub journal_sync_ms: i64,
}

/// A user's position, from `eh_leaderboard_rank`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct eh_rank_info {
    /// 1-based rank (1 = highest score).
    pub rank: u64,
    /// Decayed score at the query time.
    pub score: f64,
    /// Newest timestamp (seconds) of any update to this user.
    pub last_update: i64,
}

/// Counters from `eh_leaderboard_get_stats`. Set `struct_size` to
/// `sizeof(eh_leaderboard_stats)` before the call: the library writes no more than
/// that (an older caller gets the fields it knows) and sets it to what it wrote.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct eh_leaderboard_stats {
    /// In: `sizeof(eh_leaderboard_stats)` as the caller's header declares it. Out:
    /// the bytes written.
    pub struct_size: usize,
    /// Users on the board.
    pub len: u64,
    /// Users evicted to make room for a higher-scoring new user (`max_users`).
    pub evicted: u64,
    /// New users refused with `EH_FULL` because they ranked too low.
    pub refused: u64,
    /// Times the decay landmark moved forward (each an O(n) pass, very rare).
    pub rebases: u64,
    /// Current landmark, seconds since the Unix epoch.
    pub landmark: i64,
    /// Heap bytes held by the board.
    pub heap_bytes: u64,
    /// Updates refused because their timestamp was later than the wall clock plus
    /// `max_future_secs`.
    pub future_refused: u64,
    /// Changes waiting for `eh_leaderboard_drain` (users with a pending sum, plus
    /// pending sets and removes); 0 unless publishing is enabled.
    pub pending: u64,
    /// Changes not recorded for publishing because `max_pending` were held.
    pub pending_dropped: u64,
    /// Journal: bytes logged since the last checkpoint (0 without a journal).
    pub journal_bytes: u64,
    /// Journal: checkpoints written since the board was opened.
    pub journal_checkpoints: u64,
    /// Journal: records replayed when the board was opened.
    pub journal_replayed: u64,
    /// Journal: torn tails truncated when the board was opened (a kill during a
    /// write leaves one).
    pub journal_torn: u64,
    /// Journal: 1 if the last sync or checkpoint of the maintenance thread failed
    /// (the message: `eh_leaderboard_journal_error`); 0 otherwise.
    pub journal_failing: u64,
    /// Publishing: batches taken by `eh_leaderboard_outbox_next` and not yet
    /// acknowledged.
    pub outbox_waiting: u64,
}

/// One row of an [`eh_ranking`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct eh_rank_row {
    /// 1-based rank.
    pub rank: u64,
    /// Decayed score at the query time.
    pub score: f64,
    /// Newest update timestamp of the user (seconds).
    pub last_update: i64,
    /// Offset of the user id in `eh_ranking.ids` (the id is followed by a NUL).
    pub id_offset: u64,
    /// Length in bytes of the user id (UTF-8), not counting the NUL after it.
    pub id_len: u64,
}

/// The rows of a ranking, owned by the library until `eh_ranking_free`.
///
/// Row `i` is `rows[i]`; its user id is the `rows[i].id_len` bytes at
/// `ids + rows[i].id_offset`, followed by a NUL (so it is also a C string unless
/// the id itself contains a NUL byte). The rows and the ids are one block of `size`
/// bytes starting at `rows` (ids right after the rows), so a binding can copy a
/// whole result at once. A zeroed struct is an empty ranking.
#[repr(C)]
#[derive(Debug)]
pub struct eh_ranking {
    /// Number of rows.
    pub len: usize,
    /// `len` rows, best first.
    pub rows: *const eh_rank_row,
    /// The user ids, back to back.
    pub ids: *const u8,
    /// Bytes from `rows` to the end of the ids.
    pub size: usize,
    /// Library-private; do not touch.
    pub owner: *mut c_void,
}

const ROW_WORDS: usize = std::mem::size_of::<eh_rank_row>() / 8;
const _: () = assert!(std::mem::size_of::<eh_rank_row>() == ROW_WORDS * 8);

pub(super) fn ranking_from(rows: &[RankedUser<'_>]) -> eh_ranking {
    let fields: Vec<([u64; ROW_WORDS], &str)> = rows
        .iter()
        .map(|r| {
            let words = [r.rank, r.score.to_bits(), r.last_update as u64, 0, 0];
            (words, r.user_id)
        })
        .collect();
    let packed = super::rows::pack(&fields);
    eh_ranking {
        len: packed.len,
        // `eh_rank_row` is repr(C) with five 8-byte fields: the same layout as the
        // five words packed above (an f64 is stored as its bits).
        rows: packed.rows.cast::<eh_rank_row>(),
        ids: packed.ids,
        size: packed.size,
        owner: packed.owner,
    }
}

// The first versions ended with `max_users` and `heap_bytes`.
versioned!(eh_leaderboard_config, max_future_secs);
versioned!(eh_leaderboard_stats, future_refused);

/// The board's settings and its journal's (directory, sync mode), if any.
fn config_from(
    config: *const eh_leaderboard_config,
) -> Result<(LeaderboardConfig, Option<(std::path::PathBuf, SyncMode)>)> {
    let defaults = LeaderboardConfig::default();
    // SAFETY: the caller passes NULL or a config of `struct_size` bytes (documented).
    let Some(c) = (unsafe { read_sized(config)? }) else {
        return Ok((defaults, None));
    };
    let board = LeaderboardConfig {
        decay_factor: if c.decay_factor == 0.0 {
            defaults.decay_factor
        } else {
            c.decay_factor
        },
        decay_period_secs: if c.decay_period_secs == 0.0 {
            defaults.decay_period_secs
        } else {
            c.decay_period_secs
        },
        max_users: usize::try_from(c.max_users).unwrap_or(usize::MAX),
        max_future_secs: if c.max_future_secs == 0 {
            defaults.max_future_secs
        } else {
            c.max_future_secs
        },
    };
    // SAFETY: NULL or NUL-terminated (documented).
    let journal = unsafe { super::journal_arg(c.journal_path, c.journal_sync_ms)? };
    Ok((board, journal))
}

/// Opens (or creates) the board's journal and restores the board from it.
fn open_journaled(
    config: LeaderboardConfig,
    dir: &std::path::Path,
    sync: SyncMode,
) -> Result<(State, Journal, Recovery)> {
    let fingerprint = durable::fingerprint(&config);
    // Both callbacks reach the state: a cell between them.
    let state: std::cell::RefCell<Option<BoardState>> = std::cell::RefCell::new(None);
    let (mut journal, recovery) = Journal::open(
        &journal::Options {
            dir,
            kind: durable::KIND,
            fingerprint: &fingerprint,
            streams: 1,
            sync,
        },
        &mut |checkpoint| {
            *state.borrow_mut() = Some(match checkpoint {
                Some(bytes) => BoardState::decode(bytes, config)
                    .map_err(|e| Error::Corrupt(format!("journal {}: {e}", dir.display())))?,
                None => BoardState::new(Leaderboard::new(config)?),
            });
            Ok(())
        },
        &mut |_, kind, payload| match state.borrow_mut().as_mut() {
            Some(s) => s.replay(kind, payload),
            None => Err(Error::corrupt("journal replayed before its checkpoint")),
        },
    )?;
    let s = state
        .into_inner()
        .ok_or_else(|| Error::corrupt("journal without a state"))?;
    let log = journal
        .take_writer(0)
        .ok_or_else(|| Error::corrupt("journal without a writer"))?;
    // Fold what was replayed into a checkpoint now: the old segments go.
    journal.checkpoint(&[log.position()], &s.encode())?;
    Ok((State { s, log: Some(log) }, journal, recovery))
}

/// Creates a leaderboard. `config` may be NULL for all defaults (decay 0.95 per
/// day, unbounded). With `journal_path` set, it opens the board's journal and
/// restores the board from it (checkpoint, then the log after it). On success
/// writes the new handle to `*out`.
///
/// Errors: `EH_INVALID_ARGUMENT` for a bad setting (the message names it), a NULL
/// `out`, or a journal written with other settings; `EH_BUSY` when another handle
/// has the journal open; `EH_CORRUPT` for a journal of another format version or a
/// damaged checkpoint; `EH_IO` for the file system.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_new(
    config: *const eh_leaderboard_config,
    out: *mut *mut eh_leaderboard,
) -> eh_status {
    guard("eh_leaderboard_new", || {
        let out = out_arg(out, "out")?;
        let (config, journal_opts) = config_from(config)?;
        config.validate()?;
        let (state, journal, recovery) = match &journal_opts {
            Some((dir, sync)) => {
                let (state, journal, recovery) = open_journaled(config, dir, *sync)?;
                (state, Some(journal), recovery)
            }
            None => (
                State {
                    s: BoardState::new(Leaderboard::new(config)?),
                    log: None,
                },
                None,
                Recovery::default(),
            ),
        };
        let interval = journal
            .as_ref()
            .and_then(Journal::sync_interval)
            .unwrap_or(Duration::from_secs(1));
        let shared = Arc::new(Shared {
            board: RwLock::new(Some(state)),
            journal,
            maintenance: Mutex::new(None),
            recovery,
            journal_error: Mutex::new(None),
        });
        if shared.journal.is_some() {
            let for_thread = Arc::clone(&shared);
            let m = Maintenance::start("engagehub-journal", interval, move |stopping| {
                maintain(&for_thread, stopping)
            })?;
            *shared
                .maintenance
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(m);
        }
        let raw = atfork::boxed(eh_leaderboard { shared });
        // SAFETY: `out` was checked non-NULL; the caller provides writable storage.
        unsafe { write_out(out, raw) };
        Ok(())
    })
}

/// Closes a leaderboard: drops the board's memory, keeping the handle's shell so
/// that later calls fail cleanly. Thread-safe: may run concurrently with any other
/// call on `lb` (including another close). It waits for calls already in progress
/// to finish (a save in progress waits only for its serialisation, not the disk);
/// calls that start afterwards fail with `EH_SHUT_DOWN` ("leaderboard closed") and
/// change nothing. BLOCKS for as long as the longest call in progress. Idempotent: a
/// second close returns `EH_OK`. Release the shell with `eh_leaderboard_free`.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL `lb`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_close(lb: *mut eh_leaderboard) -> eh_status {
    guard("eh_leaderboard_close", || {
        // SAFETY: `lb` is NULL or live per the contract (the shell outlives close).
        let lb = unsafe { handle(lb, "leaderboard")? };
        lb.close();
        Ok(())
    })
}

/// Closes the leaderboard if it is not closed (see `eh_leaderboard_close`), then
/// releases the handle. NULL is a no-op.
///
/// Unlike close, free must not run concurrently with, or be followed by, any other
/// call on `lb`: the caller guarantees exclusivity (close first, from any thread,
/// to stop other threads' calls; free once they have returned).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_free(lb: *mut eh_leaderboard) {
    if lb.is_null() {
        return;
    }
    guard_free("eh_leaderboard_free", || {
        // SAFETY: `lb` is live per the contract; close takes no lock of the registry.
        unsafe { &*lb }.close();
        // SAFETY: `lb` came from `eh_leaderboard_new` (`atfork::boxed`) and, per the
        // contract, no other call uses it now or later: this is the last reference.
        unsafe { atfork::free(lb) };
    });
}

/// Adds `points` earned at `timestamp` (seconds since the Unix epoch; <= 0 = now)
/// to the user's score, creating the user if needed. Timestamps may arrive in any
/// order; each contribution decays from its own time.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle, empty / over 1024 bytes / invalid
/// UTF-8 id, NaN or infinite points, timestamp after year 9999, a sum that would
/// overflow), `EH_FULL` (at `max_users` and ranking below the lowest user; counted
/// in `refused`). On error nothing changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_add(
    lb: *mut eh_leaderboard,
    user_id: *const u8,
    user_id_len: usize,
    points: f64,
    timestamp: i64,
) -> eh_status {
    guard("eh_leaderboard_add", || {
        // SAFETY: forwarded from this function's contract.
        unsafe { add_with(lb, user_id, user_id_len, points, timestamp, true) }
    })
}

/// `eh_leaderboard_add` that never waits: if another thread is using the board (a
/// query, an update, a save or a load in progress), returns `EH_BUSY` at once and
/// changes nothing. For callers that must not block while holding a lock of their
/// own, such as a Python binding that keeps the interpreter lock for the call: on
/// `EH_BUSY` it releases that lock and calls `eh_leaderboard_add`.
///
/// Errors: those of `eh_leaderboard_add`, and `EH_BUSY`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_try_add(
    lb: *mut eh_leaderboard,
    user_id: *const u8,
    user_id_len: usize,
    points: f64,
    timestamp: i64,
) -> eh_status {
    guard("eh_leaderboard_try_add", || {
        // SAFETY: forwarded from this function's contract.
        unsafe { add_with(lb, user_id, user_id_len, points, timestamp, false) }
    })
}

/// The body of the add functions: waits for the write lock if `wait`, else
/// fails with `Error::Busy` when it is held.
///
/// # Safety
/// As `eh_leaderboard_add`: `lb` is NULL or live, and the id pointer and length
/// describe readable memory for the call.
unsafe fn add_with(
    lb: *mut eh_leaderboard,
    user_id: *const u8,
    user_id_len: usize,
    points: f64,
    timestamp: i64,
    wait: bool,
) -> Result<()> {
    // SAFETY: per this function's contract.
    let (lb, user) = unsafe {
        (
            handle(lb, "leaderboard")?,
            str_arg(user_id, user_id_len, "user_id")?,
        )
    };
    let add = |state: &mut State| state.update(user, points, timestamp, false);
    if wait {
        lb.write(add)
    } else {
        lb.try_write(add)
    }
}

/// Sets the user's score to `score` as of `timestamp` (<= 0 = now), replacing its
/// history. Same errors and capacity rules as `eh_leaderboard_add`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_set(
    lb: *mut eh_leaderboard,
    user_id: *const u8,
    user_id_len: usize,
    score: f64,
    timestamp: i64,
) -> eh_status {
    guard("eh_leaderboard_set", || {
        // SAFETY: as in `eh_leaderboard_add`.
        let (lb, user) = unsafe {
            (
                handle(lb, "leaderboard")?,
                str_arg(user_id, user_id_len, "user_id")?,
            )
        };
        lb.write(|state| state.update(user, score, timestamp, true))
    })
}

/// Removes a user. Errors: `EH_NOT_FOUND` if absent, `EH_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_remove(
    lb: *mut eh_leaderboard,
    user_id: *const u8,
    user_id_len: usize,
) -> eh_status {
    guard("eh_leaderboard_remove", || {
        // SAFETY: as in `eh_leaderboard_add`.
        let (lb, user) = unsafe {
            (
                handle(lb, "leaderboard")?,
                str_arg(user_id, user_id_len, "user_id")?,
            )
        };
        lb.write(|state| {
            if state.log.is_some() {
                crate::leaderboard::check_user_id(user)?;
                state.log(Change::Remove(user))?;
            }
            state.s.board.remove(user)
        })
    })
}

/// Removes every user (settings and counters stay).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_clear(lb: *mut eh_leaderboard) -> eh_status {
    guard("eh_leaderboard_clear", || {
        // SAFETY: `lb` is NULL or live per the contract.
        let lb = unsafe { handle(lb, "leaderboard")? };
        lb.write(|state| {
            state.log(Change::Clear)?;
            state.s.board.clear();
            Ok(())
        })
    })
}

/// Up to `k` users from 0-based position `offset`, best first, with scores at `now`
/// (seconds; <= 0 = now). O(log n + k). On success fills `*out`, which the caller
/// releases with `eh_ranking_free`; an `offset` past the end gives 0 rows.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_top(
    lb: *const eh_leaderboard,
    offset: usize,
    k: usize,
    now: i64,
    out: *mut eh_ranking,
) -> eh_status {
    guard("eh_leaderboard_top", || {
        // SAFETY: `lb` is NULL or live per the contract.
        let lb = unsafe { handle(lb, "leaderboard")? };
        let out = out_arg(out, "out")?;
        let ranking = lb.read(|board| Ok(ranking_from(&board.top(offset, k, now)?)))?;
        // SAFETY: `out` checked non-NULL and writable per the contract.
        unsafe { write_out(out, ranking) };
        Ok(())
    })
}

/// The users within `radius` places of `user_id` (up to `2 * radius + 1` rows,
/// fewer at the ends), best first, scores at `now` (<= 0 = now). Release `*out`
/// with `eh_ranking_free`. Errors: `EH_NOT_FOUND`, `EH_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_around(
    lb: *const eh_leaderboard,
    user_id: *const u8,
    user_id_len: usize,
    radius: usize,
    now: i64,
    out: *mut eh_ranking,
) -> eh_status {
    guard("eh_leaderboard_around", || {
        // SAFETY: as in `eh_leaderboard_add`.
        let (lb, user) = unsafe {
            (
                handle(lb, "leaderboard")?,
                str_arg(user_id, user_id_len, "user_id")?,
            )
        };
        let out = out_arg(out, "out")?;
        let ranking = lb.read(|board| Ok(ranking_from(&board.around(user, radius, now)?)))?;
        // SAFETY: `out` checked non-NULL and writable per the contract.
        unsafe { write_out(out, ranking) };
        Ok(())
    })
}

/// The user's 1-based rank, score at `now` (<= 0 = now) and last update, in
/// O(log n). Errors: `EH_NOT_FOUND` if absent, `EH_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_rank(
    lb: *const eh_leaderboard,
    user_id: *const u8,
    user_id_len: usize,
    now: i64,
    out: *mut eh_rank_info,
) -> eh_status {
    guard("eh_leaderboard_rank", || {
        // SAFETY: as in `eh_leaderboard_add`.
        let (lb, user) = unsafe {
            (
                handle(lb, "leaderboard")?,
                str_arg(user_id, user_id_len, "user_id")?,
            )
        };
        let out = out_arg(out, "out")?;
        let info = lb.read(|board| {
            let row = board.rank(user, now)?;
            Ok(eh_rank_info {
                rank: row.rank,
                score: row.score,
                last_update: row.last_update,
            })
        })?;
        // SAFETY: `out` checked non-NULL and writable per the contract.
        unsafe { write_out(out, info) };
        Ok(())
    })
}

/// Writes the number of users to `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_len(
    lb: *const eh_leaderboard,
    out: *mut usize,
) -> eh_status {
    guard("eh_leaderboard_len", || {
        // SAFETY: `lb` is NULL or live per the contract.
        let lb = unsafe { handle(lb, "leaderboard")? };
        let out = out_arg(out, "out")?;
        let len = lb.read(|board| Ok(board.len()))?;
        // SAFETY: `out` checked non-NULL and writable per the contract.
        unsafe { write_out(out, len) };
        Ok(())
    })
}

/// Fills `*out` with the board's counters.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_get_stats(
    lb: *const eh_leaderboard,
    out: *mut eh_leaderboard_stats,
) -> eh_status {
    guard("eh_leaderboard_get_stats", || {
        // SAFETY: `lb` is NULL or live per the contract.
        let lb = unsafe { handle(lb, "leaderboard")? };
        let out = out_arg(out, "out")?;
        let (s, waiting) = lb.read_state(|st| Ok((st.s.board.stats(), st.s.outbox.waiting())))?;
        let shared = &lb.shared;
        let journal = shared.journal.as_ref();
        let failing = shared
            .journal_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        let stats = eh_leaderboard_stats {
            struct_size: 0,
            len: s.len,
            evicted: s.evicted,
            refused: s.refused,
            rebases: s.rebases,
            landmark: s.landmark,
            heap_bytes: s.heap_bytes,
            future_refused: s.future_refused,
            pending: s.pending,
            pending_dropped: s.pending_dropped,
            journal_bytes: journal.map_or(0, Journal::log_bytes),
            journal_checkpoints: journal.map_or(0, Journal::checkpoints),
            journal_replayed: shared.recovery.records,
            journal_torn: shared.recovery.torn,
            journal_failing: u64::from(failing),
            outbox_waiting: waiting as u64,
        };
        // SAFETY: `out` checked non-NULL; writable for its `struct_size` bytes per
        // the contract.
        unsafe { write_sized(out, stats) }
    })
}

/// Saves a JSON snapshot to `path` (NUL-terminated) atomically: a temp file beside
/// it is written, fsynced and renamed over `path`, so readers see the old or the new
/// file, never a torn one. Scores round-trip bit for bit. Blocks on disk I/O, but
/// holds the board's read lock only while serialising: a close or an update racing
/// with a save waits for the serialisation, never for the disk.
///
/// Errors: `EH_IO` (`eh_last_error_errno` gives the OS error number),
/// `EH_SHUT_DOWN` (closed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_save(
    lb: *const eh_leaderboard,
    path: *const c_char,
) -> eh_status {
    guard("eh_leaderboard_save", || {
        // SAFETY: `lb` is NULL or live; `path` NULL or NUL-terminated (contract).
        let (lb, path) = unsafe { (handle(lb, "leaderboard")?, path_arg(path, "path")?) };
        // Serialised under the read lock; written to disk after it is released,
        // so a close (or an update) never waits for the disk.
        let bytes = lb.read(|board| Ok(board.to_snapshot_json()))?;
        crate::leaderboard::write_snapshot(path, &bytes)
    })
}

/// Replaces the board with the snapshot at `path`, including its decay settings
/// and `max_users`. Reads this library's format and the C++ extension's
/// (`{"decay_factor", "max_users", "entries": [{"user_id", "score",
/// "last_update"}]}`, one-day period). The file is fully validated first: on
/// `EH_IO` (unreadable) or `EH_CORRUPT` (the message names the problem) the board
/// is left exactly as it was.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_load(
    lb: *mut eh_leaderboard,
    path: *const c_char,
) -> eh_status {
    guard("eh_leaderboard_load", || {
        // SAFETY: `lb` is NULL or live; `path` NULL or NUL-terminated (contract).
        let (lb, path) = unsafe { (handle(lb, "leaderboard")?, path_arg(path, "path")?) };
        // A closed board refuses before the file is read.
        let max_future_secs = lb.read(|board| Ok(board.config().max_future_secs))?;
        let mut loaded = Leaderboard::load(path, max_future_secs)?;
        lb.write(|state| {
            // Changes not yet published survive the load (the loaded entries
            // themselves are not published).
            let board = &mut state.s.board;
            board.hand_pending_to(&mut loaded)?;
            let before = std::mem::replace(board, loaded);
            // With a journal the new board is checkpointed before the call returns;
            // if that fails, the old board stays.
            if let Err(e) = lb.checkpoint_now(state) {
                state.s.board = before;
                return Err(e);
            }
            Ok(())
        })
    })
}

/// The entries that the last `eh_leaderboard_load` of a C++ extension snapshot
/// into this board skipped (entries that can be loaded always are; the others:
/// no or bad id, non-finite score, bad or future timestamp, a repeated id, beyond
/// `max_users`). `*count` gets their number (0 after any other load, and for a
/// board never loaded). The list is written into `buf` (capacity `cap`) as UTF-8
/// JSON, `[{"index": <position in the file's entries>, "user_id": "...",
/// "reason": "..."}, ...]`; `*needed` is always set and `buf` is written only when
/// `cap >= *needed` (retry with a larger buffer). `buf` may be NULL when `cap` is 0.
///
/// Errors: `EH_INVALID_ARGUMENT` for a NULL handle or out-param.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_load_skipped(
    lb: *const eh_leaderboard,
    count: *mut u64,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> eh_status {
    guard("eh_leaderboard_load_skipped", || {
        // SAFETY: `lb` is NULL or live (contract).
        let lb = unsafe { handle(lb, "leaderboard")? };
        let (count, needed) = (out_arg(count, "count")?, out_arg(needed, "needed")?);
        let (n, json) = lb.read(|board| {
            let skipped = board.skipped_at_load();
            Ok((
                skipped.len(),
                serde_json::to_vec(skipped).unwrap_or_default(),
            ))
        })?;
        // SAFETY: both out-params checked non-NULL and writable per the contract.
        unsafe {
            write_out(count, n as u64);
            write_out(needed, json.len());
        }
        if cap >= json.len() && !json.is_empty() {
            let buf = out_arg(buf, "buf")?;
            // SAFETY: `buf` has room for `cap >= json.len()` bytes (contract).
            unsafe { std::ptr::copy_nonoverlapping(json.as_ptr(), buf, json.len()) };
        }
        Ok(())
    })
}

/// One change drained by `eh_leaderboard_drain`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct eh_pending_row {
    /// `EH_PENDING_ADD` (add `value`), `EH_PENDING_SET` (replace the value by
    /// `value`) or `EH_PENDING_REMOVE` (remove the user; `value` is 0).
    pub kind: u64,
    /// Forward-decayed value relative to the batch's `landmark`:
    /// `points * exp(ln(1/decay_factor) * (ts - landmark) / decay_period_secs)`.
    pub value: f64,
    /// Newest timestamp of the user's updates in the batch (0 for a remove).
    pub last_update: i64,
    /// Offset of the user id in `eh_pending_batch.ids` (followed by a NUL).
    pub id_offset: u64,
    /// Length in bytes of the user id (UTF-8).
    pub id_len: u64,
}

/// Row kind: add `value` to the user's value.
pub const EH_PENDING_ADD: u64 = 0;
/// Row kind: replace the user's value by `value` (a `set`).
pub const EH_PENDING_SET: u64 = 1;
/// Row kind: remove the user.
pub const EH_PENDING_REMOVE: u64 = 2;

/// Changes drained from a publishing board, owned by the library until
/// `eh_pending_batch_free`. Same block layout as `eh_ranking`: row `i` is
/// `rows[i]`, its id the `id_len` bytes at `ids + id_offset`. Rows are the sets
/// and removes in the order they happened, then one `EH_PENDING_ADD` per user
/// (its increments summed), all accumulated after that user's last set or
/// remove: apply them in order. A zeroed struct is an empty batch.
#[repr(C)]
#[derive(Debug)]
pub struct eh_pending_batch {
    /// The landmark (seconds since the Unix epoch) the values are relative to.
    pub landmark: i64,
    /// Number of rows.
    pub len: usize,
    /// `len` rows.
    pub rows: *const eh_pending_row,
    /// The user ids, back to back.
    pub ids: *const u8,
    /// Bytes from `rows` to the end of the ids.
    pub size: usize,
    /// Library-private; do not touch.
    pub owner: *mut c_void,
}

const PENDING_WORDS: usize = std::mem::size_of::<eh_pending_row>() / 8;
const _: () = assert!(std::mem::size_of::<eh_pending_row>() == PENDING_WORDS * 8);

fn pending_batch_from(batch: &PendingBatch) -> eh_pending_batch {
    let fields: Vec<([u64; PENDING_WORDS], &str)> = batch
        .rows
        .iter()
        .map(|r| {
            let words = [r.kind as u64, r.value.to_bits(), r.last_update as u64, 0, 0];
            (words, r.user_id.as_str())
        })
        .collect();
    let packed = super::rows::pack(&fields);
    eh_pending_batch {
        landmark: batch.landmark,
        len: packed.len,
        // `eh_pending_row` is repr(C) with five 8-byte fields, the layout packed.
        rows: packed.rows.cast::<eh_pending_row>(),
        ids: packed.ids,
        size: packed.size,
        owner: packed.owner,
    }
}

/// Starts recording every change of the board for a shared copy (a Redis sorted
/// set): each add's forward-decayed delta is summed per user inside the update's
/// locked section, and each set and remove is recorded in order, until
/// `eh_leaderboard_drain` takes them. At most `max_pending` (> 0) changes are held
/// between drains; further ones are not recorded and are counted in the stats'
/// `pending_dropped`. Calling it again changes only the bound. There is no way to
/// stop recording short of closing the board.
///
/// While recording, increments for a user the board refuses at `max_users` (or
/// evicts, or drops in `eh_leaderboard_clear`) are still recorded, and a remove of
/// a user the board does not hold is recorded (the call still returns
/// `EH_NOT_FOUND`). `eh_leaderboard_load` keeps the recorded changes, rescaled to
/// the loaded landmark (the loaded entries are not recorded) and refuses a
/// snapshot with other decay settings (`EH_INVALID_ARGUMENT`).
///
/// Thread safety: as any update (takes the write lock).
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle, `max_pending` 0), `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_publish_enable(
    lb: *mut eh_leaderboard,
    max_pending: u64,
) -> eh_status {
    guard("eh_leaderboard_publish_enable", || {
        // SAFETY: `lb` is NULL or live per the contract.
        let lb = unsafe { handle(lb, "leaderboard")? };
        let bound = usize::try_from(max_pending).unwrap_or(usize::MAX);
        lb.write(|state| {
            if bound == 0 {
                return Err(Error::invalid("max_pending must be > 0"));
            }
            state.log(Change::Enable(max_pending))?;
            state.s.board.enable_publishing(bound)
        })
    })
}

/// Takes every change recorded since the last drain (see
/// `eh_leaderboard_publish_enable`) and fills `*out`; each change is handed out
/// exactly once. The caller releases `*out` with `eh_pending_batch_free`. On a
/// board that is not publishing the batch is empty. Also the way to discard the
/// changes (a forked child, whose parent publishes them): drain and free.
///
/// Thread safety: takes the write lock for the O(changes) copy.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL argument), `EH_SHUT_DOWN`; on error `*out`
/// is untouched and nothing is taken.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_drain(
    lb: *mut eh_leaderboard,
    out: *mut eh_pending_batch,
) -> eh_status {
    guard("eh_leaderboard_drain", || {
        // SAFETY: `lb` is NULL or live per the contract.
        let lb = unsafe { handle(lb, "leaderboard")? };
        let out = out_arg(out, "out")?;
        let batch = lb.write(|state| {
            state.log(Change::Discard)?;
            Ok(state.s.board.drain_pending())
        })?;
        let packed = pending_batch_from(&batch);
        // SAFETY: `out` checked non-NULL and writable per the contract.
        unsafe { write_out(out, packed) };
        Ok(())
    })
}

/// The board's publisher identity (for Redis): the one its journal keeps, or,
/// the first time, `proposed` (1 to 256 bytes), which is then kept (and logged).
/// `*needed` gets the identity's length; it is copied into `buf` when `cap >=
/// *needed`. In a forked child the inherited identity is gone: propose a new one.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle or out-param, a proposal of a bad
/// length when none is kept), `EH_IO` (the journal could not log it),
/// `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_publisher_id(
    lb: *mut eh_leaderboard,
    proposed: *const u8,
    proposed_len: usize,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> eh_status {
    guard("eh_leaderboard_publisher_id", || {
        // SAFETY: `lb` NULL or live; the proposal a readable (pointer, len).
        let (lb, proposed) = unsafe {
            (
                handle(lb, "leaderboard")?,
                str_arg(proposed, proposed_len, "proposed")?,
            )
        };
        let id = lb.write(|state| {
            let (id, new) = state.s.outbox.identity(proposed)?;
            let id = id.to_string();
            if new {
                if let Err(e) = state.log(Change::Identity(&id)) {
                    state.s.outbox.set_identity("");
                    return Err(e);
                }
            }
            Ok(id)
        })?;
        super::copy_out(&id, buf, cap, needed)
    })
}

/// The oldest batch of changes taken for Redis and not yet acknowledged, with its
/// number in `*number` (numbers grow by one per batch and survive a reopen on the
/// journal); if none waits, the changes recorded since the last batch become a new
/// one (logged with its rows, so a reopened board resends the very same batch).
/// Nothing to publish: an empty batch and `*number` 0. The caller releases `*out`
/// with `eh_pending_batch_free` and acknowledges the batch with
/// `eh_leaderboard_outbox_ack` once Redis applied it.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL argument), `EH_IO` (the journal could not
/// log the new batch: nothing was taken), `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_outbox_next(
    lb: *mut eh_leaderboard,
    out: *mut eh_pending_batch,
    number: *mut u64,
) -> eh_status {
    guard("eh_leaderboard_outbox_next", || {
        // SAFETY: `lb` is NULL or live per the contract.
        let lb = unsafe { handle(lb, "leaderboard")? };
        let (out, number) = (out_arg(out, "out")?, out_arg(number, "number")?);
        let (n, packed) = lb.write(|state| {
            if state.log.is_some() && state.s.outbox.waiting() == 0 {
                // Log the batch before taking it: a journal failure takes nothing.
                let batch = state.s.board.peek_pending();
                if !batch.rows.is_empty() {
                    state.log(Change::Drain(&batch))?;
                    let drained = state.s.board.drain_pending();
                    debug_assert_eq!(drained, batch, "a drain differs from its peek");
                    state.s.outbox.push(drained);
                }
            }
            let (oldest, _) = state.s.outbox_next();
            Ok(match oldest {
                Some((n, batch)) => (n, pending_batch_from(batch)),
                None => (0, pending_batch_from(&PendingBatch::default())),
            })
        })?;
        // SAFETY: both checked non-NULL and writable per the contract.
        unsafe {
            write_out(number, n);
            write_out(out, packed);
        }
        Ok(())
    })
}

/// Acknowledges batch `number` of `eh_leaderboard_outbox_next` (Redis applied it):
/// it is dropped (and the acknowledgement logged). An unknown number is ignored.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle), `EH_IO` (not logged: the batch
/// stays), `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_outbox_ack(
    lb: *mut eh_leaderboard,
    number: u64,
) -> eh_status {
    guard("eh_leaderboard_outbox_ack", || {
        // SAFETY: `lb` is NULL or live per the contract.
        let lb = unsafe { handle(lb, "leaderboard")? };
        lb.write(|state| {
            if state.s.outbox.oldest().is_some_and(|(n, _)| n <= number) {
                state.log(Change::Ack(number))?;
                state.s.outbox.ack(number);
            }
            Ok(())
        })
    })
}

/// The last error of the journal's maintenance thread (a sync or a checkpoint
/// that failed; `journal_failing` in the stats), copied like
/// `eh_leaderboard_publisher_id` copies its id; `*needed` is 0 when there is none.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle or out-param).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_leaderboard_journal_error(
    lb: *const eh_leaderboard,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> eh_status {
    guard("eh_leaderboard_journal_error", || {
        // SAFETY: `lb` is NULL or live per the contract.
        let lb = unsafe { handle(lb, "leaderboard")? };
        let needed = out_arg(needed, "needed")?;
        let message = lb
            .shared
            .journal_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        super::copy_out(&message, buf, cap, needed)
    })
}

/// Releases a batch filled by `eh_leaderboard_drain` and zeroes `*batch`. NULL, a
/// zeroed struct and a second call are no-ops.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_pending_batch_free(batch: *mut eh_pending_batch) {
    super::rows::release_list!("eh_pending_batch_free", batch);
}

/// Releases the rows of a ranking filled by `eh_leaderboard_top` or
/// `eh_leaderboard_around`, and zeroes `*ranking`. NULL, a zeroed struct and a
/// second call are no-ops.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_ranking_free(ranking: *mut eh_ranking) {
    super::rows::release_list!("eh_ranking_free", ranking);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::{EH_BUSY, EH_INVALID_ARGUMENT, EH_OK, EH_SHUT_DOWN};
    use std::ffi::CStr;

    fn new_board() -> *mut eh_leaderboard {
        let mut lb = std::ptr::null_mut();
        // SAFETY: NULL config means defaults; `lb` is writable.
        assert_eq!(
            unsafe { eh_leaderboard_new(std::ptr::null(), &mut lb) },
            EH_OK
        );
        lb
    }

    fn len(lb: *const eh_leaderboard) -> usize {
        let mut n = 0;
        // SAFETY: `lb` is live and `n` writable.
        assert_eq!(unsafe { eh_leaderboard_len(lb, &mut n) }, EH_OK);
        n
    }

    #[test]
    fn try_add_returns_busy_instead_of_waiting_and_changes_nothing() {
        let lb = new_board();
        let id = b"42";
        let try_add = |points: f64| {
            // SAFETY: `lb` is live; `id` is readable for the call.
            unsafe { eh_leaderboard_try_add(lb, id.as_ptr(), id.len(), points, 1_700_000_000) }
        };
        assert_eq!(try_add(1.0), EH_OK);
        {
            // SAFETY: `lb` is live until the free below.
            let board = unsafe { &*lb };
            // A reader (as a concurrent query or save would be) holds the board.
            let reading = board.shared.board.read();
            assert!(reading.is_ok());
            assert_eq!(try_add(5.0), EH_BUSY);
            drop(reading);
            let writing = board.shared.board.write();
            assert!(writing.is_ok());
            assert_eq!(try_add(5.0), EH_BUSY);
            drop(writing);
        }
        assert_eq!(try_add(2.0), EH_OK);
        assert_eq!(len(lb), 1);
        let mut info = eh_rank_info::default();
        // SAFETY: `lb` is live; `id` readable; `info` writable.
        let rc =
            unsafe { eh_leaderboard_rank(lb, id.as_ptr(), id.len(), 1_700_000_000, &mut info) };
        assert_eq!(rc, EH_OK);
        assert_eq!(info.score, 3.0, "the refused calls added nothing");
        // The checks of eh_leaderboard_add apply too.
        assert_eq!(try_add(f64::NAN), EH_INVALID_ARGUMENT);
        // SAFETY: NULL handle is checked, not dereferenced.
        let rc = unsafe { eh_leaderboard_try_add(std::ptr::null_mut(), id.as_ptr(), 2, 1.0, 0) };
        assert_eq!(rc, EH_INVALID_ARGUMENT);
        // SAFETY: `lb` came from eh_leaderboard_new and is freed once.
        unsafe { eh_leaderboard_free(lb) };
    }

    fn add(lb: *mut eh_leaderboard, id: &str, points: f64) -> eh_status {
        // SAFETY: `lb` is live (open or closed); `id` readable for the call.
        unsafe { eh_leaderboard_add(lb, id.as_ptr(), id.len(), points, 1_700_000_000) }
    }

    #[test]
    fn every_call_on_a_closed_board_is_refused_and_close_is_idempotent() {
        let lb = new_board();
        assert_eq!(add(lb, "a", 1.0), EH_OK);
        // SAFETY: `lb` is live.
        assert_eq!(unsafe { eh_leaderboard_close(lb) }, EH_OK);
        // SAFETY: as above; a second close is a no-op.
        assert_eq!(unsafe { eh_leaderboard_close(lb) }, EH_OK);
        assert_eq!(add(lb, "a", 1.0), EH_SHUT_DOWN);
        // SAFETY: eh_last_error returns a valid NUL-terminated thread-local string.
        let msg = unsafe { CStr::from_ptr(crate::ffi::eh_last_error()) };
        assert_eq!(msg.to_str().ok(), Some("shut down: leaderboard closed"));
        let id = b"a";
        let mut ranking = eh_ranking {
            len: 0,
            rows: std::ptr::null(),
            ids: std::ptr::null(),
            size: 0,
            owner: std::ptr::null_mut(),
        };
        let mut info = eh_rank_info::default();
        let mut n = 0usize;
        let mut stats = eh_leaderboard_stats::default();
        let path = c"/nonexistent-dir/board.json";
        // SAFETY: `lb` is live (closed); every pointer is valid for its call.
        let statuses = unsafe {
            [
                eh_leaderboard_try_add(lb, id.as_ptr(), 1, 1.0, 0),
                eh_leaderboard_set(lb, id.as_ptr(), 1, 1.0, 0),
                eh_leaderboard_remove(lb, id.as_ptr(), 1),
                eh_leaderboard_clear(lb),
                eh_leaderboard_top(lb, 0, 10, 0, &mut ranking),
                eh_leaderboard_around(lb, id.as_ptr(), 1, 3, 0, &mut ranking),
                eh_leaderboard_rank(lb, id.as_ptr(), 1, 0, &mut info),
                eh_leaderboard_len(lb, &mut n),
                eh_leaderboard_get_stats(lb, &mut stats),
                eh_leaderboard_save(lb, path.as_ptr()),
                eh_leaderboard_load(lb, path.as_ptr()),
            ]
        };
        assert_eq!(statuses, [EH_SHUT_DOWN; 11]);
        assert!(ranking.owner.is_null(), "out-params untouched on failure");
        // SAFETY: `lb` came from eh_leaderboard_new and is freed once.
        unsafe { eh_leaderboard_free(lb) };
    }

    #[test]
    fn close_racing_calls_on_other_threads_ends_every_call() {
        let lb = new_board();
        for i in 0..2000 {
            assert_eq!(add(lb, &format!("u{i}"), f64::from(i)), EH_OK);
        }
        let addr = lb as usize;
        let started = std::sync::Barrier::new(5);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let started = &started;
                    scope.spawn(move || {
                        let lb = addr as *mut eh_leaderboard;
                        started.wait();
                        loop {
                            let rc = if t % 2 == 0 {
                                add(lb, "x", 1.0)
                            } else {
                                let mut out = eh_ranking {
                                    len: 0,
                                    rows: std::ptr::null(),
                                    ids: std::ptr::null(),
                                    size: 0,
                                    owner: std::ptr::null_mut(),
                                };
                                // SAFETY: the shell lives until the free after the scope.
                                let rc = unsafe { eh_leaderboard_top(lb, 0, 50, 0, &mut out) };
                                // SAFETY: filled by eh_leaderboard_top or still zeroed.
                                unsafe { eh_ranking_free(&mut out) };
                                rc
                            };
                            match rc {
                                EH_OK => continue,
                                EH_SHUT_DOWN => return,
                                other => return assert_eq!(other, EH_SHUT_DOWN),
                            }
                        }
                    })
                })
                .collect();
            started.wait();
            // SAFETY: the shell outlives this scope.
            assert_eq!(unsafe { eh_leaderboard_close(addr as *mut _) }, EH_OK);
            for w in workers {
                assert!(w.join().is_ok());
            }
        });
        // SAFETY: every other thread has returned; freed once.
        unsafe { eh_leaderboard_free(lb) };
    }

    fn ids_of(ranking: &eh_ranking) -> Vec<String> {
        (0..ranking.len)
            .map(|i| {
                // SAFETY: `i < len`; rows and ids come from the library and are live.
                let row = unsafe { &*ranking.rows.add(i) };
                // SAFETY: the id bytes lie within the ranking's block.
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        ranking.ids.add(row.id_offset as usize),
                        row.id_len as usize,
                    )
                };
                String::from_utf8_lossy(bytes).into_owned()
            })
            .collect()
    }

    #[test]
    fn huge_offsets_and_radii_saturate() {
        let lb = new_board();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            assert_eq!(add(lb, id, 10.0 - i as f64), EH_OK);
        }
        for radius in [usize::MAX, usize::MAX - 1, usize::MAX / 2 + 1] {
            let mut out = eh_ranking {
                len: 0,
                rows: std::ptr::null(),
                ids: std::ptr::null(),
                size: 0,
                owner: std::ptr::null_mut(),
            };
            // SAFETY: `lb` live, id readable, `out` writable.
            let rc = unsafe { eh_leaderboard_around(lb, b"c".as_ptr(), 1, radius, 0, &mut out) };
            assert_eq!(rc, EH_OK);
            assert_eq!(ids_of(&out), ["a", "b", "c", "d"], "radius {radius}");
            // SAFETY: filled by the library.
            unsafe { eh_ranking_free(&mut out) };
        }
        for (offset, k, expected) in [
            (usize::MAX, usize::MAX, vec![]),
            (2, usize::MAX, vec!["c", "d"]),
            (usize::MAX - 1, 3, vec![]),
        ] {
            let mut out = eh_ranking {
                len: 0,
                rows: std::ptr::null(),
                ids: std::ptr::null(),
                size: 0,
                owner: std::ptr::null_mut(),
            };
            // SAFETY: `lb` live, `out` writable.
            let rc = unsafe { eh_leaderboard_top(lb, offset, k, 0, &mut out) };
            assert_eq!(rc, EH_OK);
            assert_eq!(ids_of(&out), expected, "offset {offset}, k {k}");
            // SAFETY: filled by the library.
            unsafe { eh_ranking_free(&mut out) };
        }
        // SAFETY: freed once.
        unsafe { eh_leaderboard_free(lb) };
    }
}
