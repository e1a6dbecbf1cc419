//! `eh_board_group`: many leaderboards keyed by guild id, in one handle.

use std::ffi::c_void;

use super::leaderboard::{eh_pending_row, eh_rank_info, eh_ranking, ranking_from};
use super::sized::{read_sized, versioned, write_sized};
use super::{eh_status, guard, guard_free, handle, out_arg, str_arg, write_out};
use crate::atfork::{self, ForkGuarded, ForkHold};
use crate::error::{Error, Result};
use crate::leaderboard::LeaderboardConfig;
use crate::leaderboard::group::{BoardGroup, GroupConfig, GroupHold, check_time};

/// Leaderboards keyed by guild id, in one handle (opaque): one board per guild,
/// all with the group's settings, made on the guild's first update. Create with
/// `eh_board_group_new`, close with `eh_board_group_close`, free with
/// `eh_board_group_free`.
///
/// Each guild's board is an `eh_leaderboard`'s board (same decay, ties, capacity
/// and input rules; `max_users` is per board) without the handle: no thread and
/// no handle per guild. An empty board costs about 1.2 KB (its table slot and
/// one index leaf), one of 10 users about 2.3 KB. Guilds are spread over 64
/// stripes by a seeded hash of their id, each under its own lock: updates of
/// guilds in different stripes never wait for each other.
///
/// Publishing to Redis (`eh_board_group_publish_enable`): each board records its
/// changes as a publishing `eh_leaderboard` does, and a guild's first change
/// since its last batch puts it on the group's dirty list, so
/// `eh_board_group_outbox_next` takes batches only from the guilds that changed.
///
/// Lifetime: `eh_board_group_close` drops every board and leaves a small shell;
/// every later call fails with `EH_SHUT_DOWN` ("guild leaderboards closed") and
/// changes nothing. `eh_board_group_free` closes (if needed) and releases the
/// shell.
///
/// Fork: the child gets every board whole and unlocked (the fork handlers hold
/// every stripe across `fork()`), without the changes recorded for Redis and the
/// batches taken and not acknowledged: the parent publishes those.
///
/// Thread safety: may be used from several threads at once. Queries share their
/// guild's stripe's read lock; updates, `drop` and outbox calls take a stripe's
/// write lock; whole-group calls (`guilds`, `get_stats`, `publish_enable`) take
/// the stripes one after the other. `eh_board_group_close` may run concurrently
/// with any call, including another close: it waits for calls in progress, and
/// calls that start after it get `EH_SHUT_DOWN`. `eh_board_group_free` must not
/// run concurrently with, or be followed by, any other call on the handle.
pub struct eh_board_group {
    group: BoardGroup,
}

impl ForkGuarded for eh_board_group {
    fn hold_for_fork(&'static self) -> Box<dyn ForkHold> {
        Box::new(GroupForkHold(self.group.hold_all()))
    }
}

struct GroupForkHold(GroupHold<'static>);

impl ForkHold for GroupForkHold {
    fn in_child(&mut self) {
        self.0.in_child();
    }
}

/// Settings of an `eh_board_group`: those of every board, and a bound on the
/// boards. Zero fields take their defaults. Set `struct_size` to
/// `sizeof(eh_board_group_config)`; fields are only ever appended.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct eh_board_group_config {
    /// `sizeof(eh_board_group_config)` as the caller's header declares it (0 or a
    /// size smaller than the first version: `EH_INVALID_ARGUMENT`).
    pub struct_size: usize,
    /// Fraction of a score kept after one period, in (0, 1]; 1 = no decay.
    /// 0 = default 0.95. Negative, NaN or > 1: `EH_INVALID_ARGUMENT`.
    pub decay_factor: f64,
    /// Length of a decay period in seconds; 0 = default 86400 (one day).
    /// Negative, NaN or infinite: `EH_INVALID_ARGUMENT`.
    pub decay_period_secs: f64,
    /// Most users kept per board; 0 = unbounded. As `eh_leaderboard_config`'s.
    pub max_users: u64,
    /// Latest accepted timestamp, in seconds after the wall clock; 0 = default
    /// 86400 (one day); negative: `EH_INVALID_ARGUMENT`. As
    /// `eh_leaderboard_config`'s.
    pub max_future_secs: i64,
    /// Most boards (guilds) held; 0 = unbounded. An update of a new guild beyond
    /// it fails with `EH_FULL` until a guild is dropped.
    pub max_guilds: u64,
}

versioned!(eh_board_group_config);

/// Counters from `eh_board_group_get_stats`, summed over every board. Set
/// `struct_size` to `sizeof(eh_board_group_stats)` before the call: the library
/// writes no more than that and sets it to what it wrote.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct eh_board_group_stats {
    /// In: `sizeof(eh_board_group_stats)` as the caller's header declares it.
    /// Out: the bytes written.
    pub struct_size: usize,
    /// Boards (guilds) held.
    pub boards: u64,
    /// Users over every board.
    pub users: u64,
    /// Heap bytes: the guild tables (a slot per guild), every board's structures
    /// and ids, and the batches taken for Redis and not yet acknowledged.
    pub heap_bytes: u64,
    /// Users evicted at `max_users`.
    pub evicted: u64,
    /// New users refused with `EH_FULL` at `max_users`.
    pub refused: u64,
    /// Updates refused because their timestamp was later than the wall clock
    /// plus `max_future_secs` (also those on guilds the group did not hold).
    pub future_refused: u64,
    /// Times a board's decay landmark moved forward.
    pub rebases: u64,
    /// Publishing: changes recorded and not yet taken by
    /// `eh_board_group_outbox_next`.
    pub pending: u64,
    /// Publishing: changes not recorded because a board held `max_pending`.
    pub pending_dropped: u64,
    /// Publishing: guilds on the dirty list (changed since their last batch was
    /// taken).
    pub dirty: u64,
    /// Publishing: guilds whose batch was taken and not yet acknowledged.
    pub in_flight: u64,
    /// Publishing: changes not yet taken that `eh_board_group_drop` discarded.
    pub unpublished_dropped: u64,
}

versioned!(eh_board_group_stats);

/// One guild of an [`eh_guild_list`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct eh_guild_row {
    /// Users on the guild's board.
    pub users: u64,
    /// Offset of the guild id in `eh_guild_list.ids` (followed by a NUL).
    pub id_offset: u64,
    /// Length in bytes of the guild id (UTF-8).
    pub id_len: u64,
}

/// Guild ids from `eh_board_group_guilds`, owned by the library until
/// `eh_guild_list_free`. Same block layout as `eh_ranking`: row `i` is
/// `rows[i]`, its id the `id_len` bytes at `ids + id_offset`; rows and ids are
/// one block of `size` bytes from `rows`. A zeroed struct is an empty list.
#[repr(C)]
#[derive(Debug)]
pub struct eh_guild_list {
    /// Number of guilds.
    pub len: usize,
    /// `len` rows, in guild id byte order.
    pub rows: *const eh_guild_row,
    /// The guild ids, back to back.
    pub ids: *const u8,
    /// Bytes from `rows` to the end of the ids.
    pub size: usize,
    /// Library-private; do not touch.
    pub owner: *mut c_void,
}

/// One guild's batch in an [`eh_group_outbox`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct eh_group_batch {
    /// The batch's number (> 0). Numbers come from one counter of the whole
    /// group, so a guild's numbers always grow (also after a drop and
    /// re-creation of the guild); acknowledge with `eh_board_group_outbox_ack`.
    pub number: u64,
    /// The landmark (seconds since the Unix epoch) the rows' values are relative
    /// to.
    pub landmark: i64,
    /// Index of the batch's first row in `eh_group_outbox.rows`.
    pub first_row: u64,
    /// Number of rows: `rows[first_row .. first_row + row_count]`, in the order
    /// of an `eh_pending_batch` (sets and removes in order, then the sums).
    pub row_count: u64,
    /// Offset of the guild id in `eh_group_outbox.guilds` (followed by a NUL).
    pub guild_offset: u64,
    /// Length in bytes of the guild id (UTF-8).
    pub guild_len: u64,
}

/// Batches from `eh_board_group_outbox_next`, one per guild, owned by the
/// library until `eh_group_outbox_free`. Two blocks: the batches with their guild
/// ids (`batches_size` bytes from `batches`), and the rows of every batch with
/// their user ids (`rows_size` bytes from `rows`), each laid out as
/// `eh_ranking`'s. A zeroed struct holds no batch.
#[repr(C)]
#[derive(Debug)]
pub struct eh_group_outbox {
    /// Number of batches.
    pub len: usize,
    /// `len` batches.
    pub batches: *const eh_group_batch,
    /// The guild ids, back to back.
    pub guilds: *const u8,
    /// Bytes from `batches` to the end of the guild ids.
    pub batches_size: usize,
    /// Number of rows over every batch.
    pub rows_len: usize,
    /// `rows_len` rows (`eh_pending_row`: kind, value, last update, user id).
    pub rows: *const eh_pending_row,
    /// The user ids, back to back.
    pub ids: *const u8,
    /// Bytes from `rows` to the end of the user ids.
    pub rows_size: usize,
    /// Library-private; do not touch.
    pub owner: *mut c_void,
    /// Library-private; do not touch.
    pub rows_owner: *mut c_void,
}

const GUILD_WORDS: usize = std::mem::size_of::<eh_guild_row>() / 8;
const _: () = assert!(std::mem::size_of::<eh_guild_row>() == GUILD_WORDS * 8);
const BATCH_WORDS: usize = std::mem::size_of::<eh_group_batch>() / 8;
const _: () = assert!(std::mem::size_of::<eh_group_batch>() == BATCH_WORDS * 8);
const PENDING_WORDS: usize = std::mem::size_of::<eh_pending_row>() / 8;
const _: () = assert!(std::mem::size_of::<eh_pending_row>() == PENDING_WORDS * 8);

fn config_from(config: *const eh_board_group_config) -> Result<GroupConfig> {
    let defaults = LeaderboardConfig::default();
    // SAFETY: the caller passes NULL or a config of `struct_size` bytes (documented).
    let Some(c) = (unsafe { read_sized(config)? }) else {
        return Ok(GroupConfig {
            board: defaults,
            max_guilds: 0,
        });
    };
    let or = |value: f64, default: f64| if value == 0.0 { default } else { value };
    Ok(GroupConfig {
        board: LeaderboardConfig {
            decay_factor: or(c.decay_factor, defaults.decay_factor),
            decay_period_secs: or(c.decay_period_secs, defaults.decay_period_secs),
            max_users: usize::try_from(c.max_users).unwrap_or(usize::MAX),
            max_future_secs: if c.max_future_secs == 0 {
                defaults.max_future_secs
            } else {
                c.max_future_secs
            },
        },
        max_guilds: usize::try_from(c.max_guilds).unwrap_or(usize::MAX),
    })
}

/// Borrows the handle and a guild id argument.
///
/// # Safety
/// `g` is NULL or live; `(guild, guild_len)` is NULL with 0 or readable bytes.
unsafe fn group_and_guild<'a>(
    g: *const eh_board_group,
    guild: *const u8,
    guild_len: usize,
) -> Result<(&'a BoardGroup, &'a str)> {
    // SAFETY: per this function's contract.
    unsafe {
        Ok((
            &handle(g, "board group")?.group,
            str_arg(guild, guild_len, "guild_id")?,
        ))
    }
}

/// Creates a group of leaderboards. `config` may be NULL for all defaults (decay
/// 0.95 per day, boards and guilds unbounded). On success writes the new handle to
/// `*out`.
///
/// Errors: `EH_INVALID_ARGUMENT` for a bad setting (the message names it) or a
/// NULL `out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_new(
    config: *const eh_board_group_config,
    out: *mut *mut eh_board_group,
) -> eh_status {
    guard("eh_board_group_new", || {
        let out = out_arg(out, "out")?;
        let group = BoardGroup::new(config_from(config)?)?;
        let raw = atfork::boxed(eh_board_group { group });
        // SAFETY: `out` was checked non-NULL; the caller provides writable storage.
        unsafe { write_out(out, raw) };
        Ok(())
    })
}

/// Closes a group: drops every board, keeping the handle's shell so that later
/// calls fail cleanly. Thread-safe: may run concurrently with any other call on
/// `g` (including another close). It waits for the calls in progress; calls that
/// start afterwards fail with `EH_SHUT_DOWN` and change nothing. BLOCKS for as
/// long as the longest call in progress. Idempotent. Release the shell with
/// `eh_board_group_free`.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL `g`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_close(g: *mut eh_board_group) -> eh_status {
    guard("eh_board_group_close", || {
        // SAFETY: `g` is NULL or live per the contract (the shell outlives close).
        unsafe { handle(g, "board group")? }.group.close();
        Ok(())
    })
}

/// Closes the group if it is not closed (see `eh_board_group_close`), then
/// releases the handle. NULL is a no-op. Must not run concurrently with, or be
/// followed by, any other call on `g`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_free(g: *mut eh_board_group) {
    if g.is_null() {
        return;
    }
    guard_free("eh_board_group_free", || {
        // SAFETY: `g` is live per the contract; close takes no lock of the registry.
        unsafe { &*g }.group.close();
        // SAFETY: `g` came from `eh_board_group_new` (`atfork::boxed`) and, per the
        // contract, no other call uses it now or later: this is the last reference.
        unsafe { atfork::free(g) };
    });
}

/// Adds `points` earned at `timestamp` (seconds since the Unix epoch; <= 0 = now)
/// to the user's score on the guild's board, making the board (with the group's
/// settings) if the group holds none. As `eh_leaderboard_add` otherwise.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle, empty / over 1024 bytes / invalid
/// UTF-8 guild or user id, NaN or infinite points, a timestamp after year 9999
/// or past the wall clock plus `max_future_secs`, a sum that would overflow),
/// `EH_FULL` (at the board's `max_users` and ranking below its lowest user; or a
/// new guild beyond `max_guilds`), `EH_SHUT_DOWN`. On error nothing changes (a
/// new guild's board is not kept).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_add(
    g: *mut eh_board_group,
    guild_id: *const u8,
    guild_id_len: usize,
    user_id: *const u8,
    user_id_len: usize,
    points: f64,
    timestamp: i64,
) -> eh_status {
    guard("eh_board_group_add", || {
        // SAFETY: forwarded from this function's contract.
        let (group, guild) = unsafe { group_and_guild(g, guild_id, guild_id_len)? };
        // SAFETY: the id pointer and length describe readable memory (contract).
        let user = unsafe { str_arg(user_id, user_id_len, "user_id")? };
        group.add(guild, user, points, timestamp).map(drop)
    })
}

/// Sets the user's score on the guild's board to `score` as of `timestamp` (<= 0
/// = now), replacing its history. Same errors and rules as `eh_board_group_add`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_set(
    g: *mut eh_board_group,
    guild_id: *const u8,
    guild_id_len: usize,
    user_id: *const u8,
    user_id_len: usize,
    score: f64,
    timestamp: i64,
) -> eh_status {
    guard("eh_board_group_set", || {
        // SAFETY: as in `eh_board_group_add`.
        let (group, guild) = unsafe { group_and_guild(g, guild_id, guild_id_len)? };
        // SAFETY: as in `eh_board_group_add`.
        let user = unsafe { str_arg(user_id, user_id_len, "user_id")? };
        group.set(guild, user, score, timestamp).map(drop)
    })
}

/// Removes a user from the guild's board. Errors: `EH_NOT_FOUND` if the board
/// does not hold the user (or the group holds no board for the guild),
/// `EH_INVALID_ARGUMENT`, `EH_SHUT_DOWN`. While publishing, the removal is
/// recorded for Redis even when the user is not found (a board is made for a
/// guild the group does not hold, to record it; `EH_FULL` if that would exceed
/// `max_guilds`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_remove(
    g: *mut eh_board_group,
    guild_id: *const u8,
    guild_id_len: usize,
    user_id: *const u8,
    user_id_len: usize,
) -> eh_status {
    guard("eh_board_group_remove", || {
        // SAFETY: as in `eh_board_group_add`.
        let (group, guild) = unsafe { group_and_guild(g, guild_id, guild_id_len)? };
        // SAFETY: as in `eh_board_group_add`.
        let user = unsafe { str_arg(user_id, user_id_len, "user_id")? };
        group.remove(guild, user)
    })
}

/// Up to `k` users of the guild's board from 0-based position `offset`, best
/// first, with scores at `now` (seconds; <= 0 = now), as `eh_leaderboard_top`.
/// A guild the group does not hold gives 0 rows. On success fills `*out`, which
/// the caller releases with `eh_ranking_free`.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL argument, bad guild id, `now` after year
/// 9999), `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_top(
    g: *const eh_board_group,
    guild_id: *const u8,
    guild_id_len: usize,
    offset: usize,
    k: usize,
    now: i64,
    out: *mut eh_ranking,
) -> eh_status {
    guard("eh_board_group_top", || {
        // SAFETY: as in `eh_board_group_add`.
        let (group, guild) = unsafe { group_and_guild(g, guild_id, guild_id_len)? };
        let out = out_arg(out, "out")?;
        let ranking = group.read(guild, |board| match board {
            Some(board) => Ok(ranking_from(&board.top(offset, k, now)?)),
            None => {
                // The same check of `now` as a board's.
                check_time(now, "now")?;
                Ok(ranking_from(&[]))
            }
        })?;
        // SAFETY: `out` checked non-NULL and writable per the contract.
        unsafe { write_out(out, ranking) };
        Ok(())
    })
}

/// The users of the guild's board within `radius` places of `user_id`, as
/// `eh_leaderboard_around`. Release `*out` with `eh_ranking_free`.
///
/// Errors: `EH_NOT_FOUND` (the user, or the guild, is not held),
/// `EH_INVALID_ARGUMENT`, `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_around(
    g: *const eh_board_group,
    guild_id: *const u8,
    guild_id_len: usize,
    user_id: *const u8,
    user_id_len: usize,
    radius: usize,
    now: i64,
    out: *mut eh_ranking,
) -> eh_status {
    guard("eh_board_group_around", || {
        // SAFETY: as in `eh_board_group_add`.
        let (group, guild) = unsafe { group_and_guild(g, guild_id, guild_id_len)? };
        // SAFETY: as in `eh_board_group_add`.
        let user = unsafe { str_arg(user_id, user_id_len, "user_id")? };
        let out = out_arg(out, "out")?;
        let ranking = group.read(guild, |board| {
            let board = board.ok_or_else(|| not_found(guild, user))?;
            Ok(ranking_from(&board.around(user, radius, now)?))
        })?;
        // SAFETY: `out` checked non-NULL and writable per the contract.
        unsafe { write_out(out, ranking) };
        Ok(())
    })
}

fn not_found(guild: &str, user: &str) -> Error {
    Error::NotFound(format!("user {user:?} in guild {guild:?}"))
}

/// The user's 1-based rank on the guild's board, score at `now` (<= 0 = now) and
/// last update, as `eh_leaderboard_rank`.
///
/// Errors: `EH_NOT_FOUND` (the user, or the guild, is not held),
/// `EH_INVALID_ARGUMENT`, `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_rank(
    g: *const eh_board_group,
    guild_id: *const u8,
    guild_id_len: usize,
    user_id: *const u8,
    user_id_len: usize,
    now: i64,
    out: *mut eh_rank_info,
) -> eh_status {
    guard("eh_board_group_rank", || {
        // SAFETY: as in `eh_board_group_add`.
        let (group, guild) = unsafe { group_and_guild(g, guild_id, guild_id_len)? };
        // SAFETY: as in `eh_board_group_add`.
        let user = unsafe { str_arg(user_id, user_id_len, "user_id")? };
        let out = out_arg(out, "out")?;
        let info = group.read(guild, |board| {
            let board = board.ok_or_else(|| not_found(guild, user))?;
            let row = board.rank(user, now).map_err(|e| match e {
                Error::NotFound(_) => not_found(guild, user),
                other => other,
            })?;
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

/// Writes the number of users on the guild's board to `*out` (0 for a guild the
/// group does not hold).
///
/// Errors: `EH_INVALID_ARGUMENT`, `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_len(
    g: *const eh_board_group,
    guild_id: *const u8,
    guild_id_len: usize,
    out: *mut usize,
) -> eh_status {
    guard("eh_board_group_len", || {
        // SAFETY: as in `eh_board_group_add`.
        let (group, guild) = unsafe { group_and_guild(g, guild_id, guild_id_len)? };
        let out = out_arg(out, "out")?;
        let len = group.len(guild)?;
        // SAFETY: `out` checked non-NULL and writable per the contract.
        unsafe { write_out(out, len) };
        Ok(())
    })
}

/// The guilds the group holds, in guild id byte order, each with its number of
/// users: those after `after` (`after_len` 0: from the first), at most `limit`.
/// To page through every guild, pass the last id of a page as the next `after`.
/// Reads the stripes one after the other: a guild made or dropped during the
/// call may or may not be listed. O(guilds · log guilds). On success fills
/// `*out`, which the caller releases with `eh_guild_list_free`.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL argument, `after` not UTF-8),
/// `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_guilds(
    g: *const eh_board_group,
    after: *const u8,
    after_len: usize,
    limit: usize,
    out: *mut eh_guild_list,
) -> eh_status {
    guard("eh_board_group_guilds", || {
        // SAFETY: as in `eh_board_group_add`.
        let (group, after) = unsafe { group_and_guild(g, after, after_len)? };
        let out = out_arg(out, "out")?;
        let guilds = group.guilds((!after.is_empty()).then_some(after), limit)?;
        let fields: Vec<([u64; GUILD_WORDS], &str)> = guilds
            .iter()
            .map(|(id, users)| ([*users as u64, 0, 0], id.as_str()))
            .collect();
        let packed = super::rows::pack(&fields);
        let list = eh_guild_list {
            len: packed.len,
            // `eh_guild_row` is repr(C) with three 8-byte fields, the layout packed.
            rows: packed.rows.cast::<eh_guild_row>(),
            ids: packed.ids,
            size: packed.size,
            owner: packed.owner,
        };
        // SAFETY: `out` checked non-NULL and writable per the contract.
        unsafe { write_out(out, list) };
        Ok(())
    })
}

/// Releases a list filled by `eh_board_group_guilds` and zeroes `*list`. NULL, a
/// zeroed struct and a second call are no-ops.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_guild_list_free(list: *mut eh_guild_list) {
    super::rows::release_list!("eh_guild_list_free", list);
}

/// Drops the guild's board and frees its memory. `*discarded` gets the number
/// of its changes recorded for Redis and not yet taken by
/// `eh_board_group_outbox_next`, which are discarded (and counted in the stats'
/// `unpublished_dropped`; publish first to keep them). A batch of the guild
/// already taken may still be sent; its acknowledgement is then ignored. A later
/// update of the guild makes a new, empty board.
///
/// Errors: `EH_NOT_FOUND` (the group holds no board for the guild; `*discarded`
/// untouched), `EH_INVALID_ARGUMENT`, `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_drop(
    g: *mut eh_board_group,
    guild_id: *const u8,
    guild_id_len: usize,
    discarded: *mut u64,
) -> eh_status {
    guard("eh_board_group_drop", || {
        // SAFETY: as in `eh_board_group_add`.
        let (group, guild) = unsafe { group_and_guild(g, guild_id, guild_id_len)? };
        let discarded = out_arg(discarded, "discarded")?;
        let n = group
            .drop_guild(guild)?
            .ok_or_else(|| Error::NotFound(format!("guild {guild:?}")))?;
        // SAFETY: `discarded` checked non-NULL and writable per the contract.
        unsafe { write_out(discarded, n) };
        Ok(())
    })
}

/// Fills `*out` with the group's counters, summed over every board (reads the
/// stripes one after the other; O(guilds)).
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL argument, bad `struct_size`),
/// `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_get_stats(
    g: *const eh_board_group,
    out: *mut eh_board_group_stats,
) -> eh_status {
    guard("eh_board_group_get_stats", || {
        // SAFETY: `g` is NULL or live per the contract.
        let group = &unsafe { handle(g, "board group")? }.group;
        let out = out_arg(out, "out")?;
        let s = group.stats()?;
        let stats = eh_board_group_stats {
            struct_size: 0,
            boards: s.boards,
            users: s.users,
            heap_bytes: s.heap_bytes,
            evicted: s.evicted,
            refused: s.refused,
            future_refused: s.future_refused,
            rebases: s.rebases,
            pending: s.pending,
            pending_dropped: s.pending_dropped,
            dirty: s.dirty,
            in_flight: s.in_flight,
            unpublished_dropped: s.unpublished_dropped,
        };
        // SAFETY: `out` checked non-NULL; writable for its `struct_size` bytes per
        // the contract.
        unsafe { write_sized(out, stats) }
    })
}

/// Starts recording every board's changes for a shared copy in Redis (as
/// `eh_leaderboard_publish_enable` for each board held and each made later), each
/// board holding at most `max_pending` (> 0) changes between batches; more are
/// counted in `pending_dropped`. Calling it again changes only the bound.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle, `max_pending` 0), `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_publish_enable(
    g: *mut eh_board_group,
    max_pending: u64,
) -> eh_status {
    guard("eh_board_group_publish_enable", || {
        // SAFETY: `g` is NULL or live per the contract.
        let group = &unsafe { handle(g, "board group")? }.group;
        group.enable_publishing(usize::try_from(max_pending).unwrap_or(usize::MAX))
    })
}

/// Batches for Redis, one per guild: first every batch taken before and not yet
/// acknowledged (resend them: same rows, same number), then new batches from the
/// guilds that changed since their last batch (the dirty list, oldest first;
/// never a scan of every guild), until they hold at least `max_rows` rows (0 =
/// every guild that changed). Each new batch holds the guild's changes since its
/// last one (as `eh_leaderboard_drain`'s) and stays with its board until
/// `eh_board_group_outbox_ack`. Nothing to publish: 0 batches. The caller
/// releases `*out` with `eh_group_outbox_free`.
///
/// Calls of this function are serialised; updates of guilds other than the one
/// being taken go on meanwhile.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL argument), `EH_SHUT_DOWN`; on error
/// `*out` is untouched.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_outbox_next(
    g: *mut eh_board_group,
    max_rows: usize,
    out: *mut eh_group_outbox,
) -> eh_status {
    guard("eh_board_group_outbox_next", || {
        // SAFETY: `g` is NULL or live per the contract.
        let group = &unsafe { handle(g, "board group")? }.group;
        let out = out_arg(out, "out")?;
        // Copied under each guild's lock into two texts (guild ids, user ids),
        // packed after.
        let mut guild_text = String::new();
        let mut user_text = String::new();
        let mut batches: Vec<([u64; BATCH_WORDS], usize, usize)> = Vec::new();
        let mut rows: Vec<([u64; PENDING_WORDS], usize, usize)> = Vec::new();
        group.outbox_next(max_rows, |t| {
            let start = guild_text.len();
            guild_text.push_str(t.guild);
            let words = [
                t.number,
                t.batch.landmark as u64,
                rows.len() as u64,
                t.batch.rows.len() as u64,
                0,
                0,
            ];
            batches.push((words, start, guild_text.len()));
            for r in &t.batch.rows {
                let start = user_text.len();
                user_text.push_str(&r.user_id);
                let words = [r.kind as u64, r.value.to_bits(), r.last_update as u64, 0, 0];
                rows.push((words, start, user_text.len()));
            }
        })?;
        let batches: Vec<([u64; BATCH_WORDS], &str)> = batches
            .into_iter()
            .map(|(w, a, b)| (w, &guild_text[a..b]))
            .collect();
        let rows: Vec<([u64; PENDING_WORDS], &str)> = rows
            .into_iter()
            .map(|(w, a, b)| (w, &user_text[a..b]))
            .collect();
        let packed_batches = super::rows::pack(&batches);
        let packed_rows = super::rows::pack(&rows);
        let outbox = eh_group_outbox {
            len: packed_batches.len,
            // `eh_group_batch` is repr(C) with six 8-byte fields, the layout packed
            // (an i64 landmark as its two's complement bits).
            batches: packed_batches.rows.cast::<eh_group_batch>(),
            guilds: packed_batches.ids,
            batches_size: packed_batches.size,
            rows_len: packed_rows.len,
            // `eh_pending_row` is repr(C) with five 8-byte fields, the layout packed.
            rows: packed_rows.rows.cast::<eh_pending_row>(),
            ids: packed_rows.ids,
            rows_size: packed_rows.size,
            owner: packed_batches.owner,
            rows_owner: packed_rows.owner,
        };
        // SAFETY: `out` checked non-NULL and writable per the contract.
        unsafe { write_out(out, outbox) };
        Ok(())
    })
}

/// Releases batches filled by `eh_board_group_outbox_next` and zeroes `*outbox`.
/// NULL, a zeroed struct and a second call are no-ops.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_group_outbox_free(outbox: *mut eh_group_outbox) {
    // SAFETY: the caller passes NULL or an outbox filled by this library.
    let Some(outbox) = (unsafe { outbox.as_mut() }) else {
        return;
    };
    let owners = [
        std::mem::replace(&mut outbox.owner, std::ptr::null_mut()),
        std::mem::replace(&mut outbox.rows_owner, std::ptr::null_mut()),
    ];
    outbox.len = 0;
    outbox.batches = std::ptr::null();
    outbox.guilds = std::ptr::null();
    outbox.batches_size = 0;
    outbox.rows_len = 0;
    outbox.rows = std::ptr::null();
    outbox.ids = std::ptr::null();
    outbox.rows_size = 0;
    for owner in owners {
        if !owner.is_null() {
            guard_free("eh_group_outbox_free", || super::rows::free(owner));
        }
    }
}

/// Acknowledges the guild's batch `number` (Redis applied it): the batch is
/// dropped, and the guild goes back on the dirty list if it changed since the
/// batch was taken. A number that is not the guild's batch in flight, or a guild
/// the group no longer holds, is ignored.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL handle, bad guild id), `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_board_group_outbox_ack(
    g: *mut eh_board_group,
    guild_id: *const u8,
    guild_id_len: usize,
    number: u64,
) -> eh_status {
    guard("eh_board_group_outbox_ack", || {
        // SAFETY: as in `eh_board_group_add`.
        let (group, guild) = unsafe { group_and_guild(g, guild_id, guild_id_len)? };
        group.outbox_ack(guild, number).map(drop)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::{EH_INVALID_ARGUMENT, EH_OK, EH_SHUT_DOWN};

    fn add(g: *mut eh_board_group, guild: &str, user: &str) -> eh_status {
        // SAFETY: `g` is live (open or closed); the ids are readable for the call.
        unsafe {
            eh_board_group_add(
                g,
                guild.as_ptr(),
                guild.len(),
                user.as_ptr(),
                user.len(),
                1.0,
                1_700_000_000,
            )
        }
    }

    #[test]
    fn close_racing_calls_on_other_threads_ends_every_call() {
        let mut g = std::ptr::null_mut();
        // SAFETY: NULL config means defaults; `g` is writable.
        assert_eq!(
            unsafe { eh_board_group_new(std::ptr::null(), &mut g) },
            EH_OK
        );
        for i in 0..500 {
            assert_eq!(add(g, &format!("g{i}"), "u"), EH_OK);
        }
        let addr = g as usize;
        let started = std::sync::Barrier::new(5);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let started = &started;
                    scope.spawn(move || {
                        let g = addr as *mut eh_board_group;
                        started.wait();
                        for i in 0.. {
                            let rc = if t % 2 == 0 {
                                add(g, &format!("g{}", i % 700), "x")
                            } else {
                                let mut s = eh_board_group_stats::default();
                                // SAFETY: the shell lives until the free after the scope.
                                unsafe { eh_board_group_get_stats(g, &mut s) }
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
            assert_eq!(unsafe { eh_board_group_close(addr as *mut _) }, EH_OK);
            for w in workers {
                assert!(w.join().is_ok());
            }
        });
        // SAFETY: every other thread has returned; freed once.
        unsafe { eh_board_group_free(g) };
    }

    #[test]
    fn null_handles_and_out_params_are_refused() {
        let guild = b"g";
        let mut n = 0usize;
        let mut out = eh_group_outbox {
            len: 0,
            batches: std::ptr::null(),
            guilds: std::ptr::null(),
            batches_size: 0,
            rows_len: 0,
            rows: std::ptr::null(),
            ids: std::ptr::null(),
            rows_size: 0,
            owner: std::ptr::null_mut(),
            rows_owner: std::ptr::null_mut(),
        };
        // SAFETY: NULL handles are checked before any use.
        let statuses = unsafe {
            [
                eh_board_group_len(std::ptr::null(), guild.as_ptr(), 1, &mut n),
                eh_board_group_outbox_next(std::ptr::null_mut(), 0, &mut out),
                eh_board_group_outbox_ack(std::ptr::null_mut(), guild.as_ptr(), 1, 1),
                eh_board_group_publish_enable(std::ptr::null_mut(), 1),
                eh_board_group_close(std::ptr::null_mut()),
                eh_board_group_outbox_next(std::ptr::null_mut(), 0, std::ptr::null_mut()),
            ]
        };
        assert_eq!(statuses, [EH_INVALID_ARGUMENT; 6]);
        assert!(out.owner.is_null());
    }
}
