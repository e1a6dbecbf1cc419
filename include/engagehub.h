/*
 * engagehub: real-time community analytics (event pipeline, sketches, decayed leaderboard).
 *
 * Conventions, for every function below:
 *  - Fallible functions return eh_status: EH_OK (0) on success, so `if (rc)` tests
 *    failure. On failure eh_last_error() gives a message for the calling thread; read
 *    it straight after the failing call. Out-params are written only on success.
 *  - Strings are (const uint8_t *ptr, size_t len) UTF-8, copied before the call
 *    returns; len == 0 allows ptr == NULL. Invalid UTF-8 is EH_INVALID_ARGUMENT.
 *    Paths are NUL-terminated.
 *  - NULL handles and out-params give EH_INVALID_ARGUMENT; eh_*_free(NULL) is a no-op.
 *  - Memory the library hands out is released only by the matching eh_*_free.
 *  - A panic inside the library never unwinds into C: the call returns EH_PANIC.
 *  - Each handle type documents its thread safety.
 *
 * Threads and fork:
 *  - Every handle (eh_processor, eh_leaderboard, eh_board_group, eh_hll, eh_cms) may
 *    be used from several threads at once. Each handle's doc ends with a "Thread safety:" line
 *    saying what may run concurrently with its close and free; eh_*_free itself is
 *    always the last call on a handle.
 *  - Callbacks run on the processor's worker threads (or, with EH_WORKERS_NONE, on
 *    the thread that flushes), never on a pushing thread; the callback setters say
 *    what a callback may call.
 *  - fork(): only the forking thread goes on in the child. A processor rebuilds
 *    itself on its first call in the child (fresh workers and ring, callbacks kept,
 *    counters and sketches empty); the parent's is unaffected. Leaderboards and
 *    sketches need nothing: the library's pthread_atfork handlers hold each one's
 *    lock across fork() (the fork waits for calls in progress on other threads,
 *    each of which is bounded), so the child gets every board and sketch whole and
 *    unlocked, whatever other threads were doing (a board group: every stripe). A
 *    board's changes recorded for publishing but not yet drained stay with the
 *    parent. Do not call the library
 *    from your own pthread_atfork handlers; a language binding's at-fork hooks
 *    (Python's os.register_at_fork) need no library call either. A journaled
 *    handle's child goes on in memory: the journal stays the parent's.
 *
 * Durability (journal_path in eh_leaderboard_config and eh_processor_config):
 *  - The model is Redis's AOF with appendfsync everysec and SQLite's WAL with
 *    synchronous=NORMAL. A journal is a directory: a checkpoint of the handle's
 *    state and an append-only log of the changes after it. Every change is in the
 *    log before the call that makes it returns (a copy into a shared mapping of
 *    the log file, which the kernel owns from then on), so a process crash (kill
 *    -9, an OOM kill, a segfault elsewhere) loses nothing that returned; a
 *    background thread syncs the log every journal_sync_ms (default 1000), so a
 *    machine crash or power loss loses at most that much (negative: a sync per
 *    change, before its call returns). The same thread folds the log into a new
 *    checkpoint once it outgrows the last one: the journal's size follows the
 *    state, not the history. A clean close (eh_*_close / eh_*_free) writes a last
 *    checkpoint; the next open restores the state exactly.
 *  - Opening restores the checkpoint and replays the log after it; a torn tail
 *    (a kill in the middle of an append) is truncated and counted (journal_torn
 *    in the stats), never a reason to refuse. One handle per journal (EH_BUSY,
 *    naming the process that has it); a journal written with other settings is
 *    EH_INVALID_ARGUMENT (the message names them), one of another format version
 *    EH_CORRUPT.
 *  - A leaderboard logs every update before it applies it: an update that cannot
 *    be logged (a full disk) fails with EH_IO and changes nothing. A processor
 *    logs each run of events its workers take from the ring, before it sketches
 *    them and before they reach the flush callback; events still in the ring at a
 *    kill are not journaled (the ring stays in memory). A worker cannot refuse an
 *    event it already accepted: if the log cannot be written the processor goes
 *    on in memory and says so (journal_failing in the stats).
 *  - Publishing to Redis: the outbox functions (eh_*_outbox_*,
 *    eh_*_publisher_id) keep the publisher's identity and every batch not yet
 *    acknowledged in the journal, so a reopened handle resends them and Redis,
 *    which applies a batch once per (identity, number), ends with everything once.
 *
 * Community analytics (history_days in eh_processor_config, default 90 days):
 *  - Every event may name a guild (guild_id in eh_event; eh_processor_push_event
 *    takes one, eh_processor_push cannot; empty = none). A processor serves any
 *    number of guilds: no thread and no handle per guild; a guild costs about
 *    2 KB beside its users' records, and no more while it stays idle.
 *  - Per guild and overall, the processor keeps each user's first day and active
 *    days (a 64-bit hash of the id and a ring of day bits: about 50 bytes per
 *    user and per guild a user is seen in) and counters updated at a user's
 *    first event of each day. eh_processor_active_users (a day, its week, its
 *    30 days), eh_processor_retention (cohorts of days or Monday weeks) and
 *    eh_processor_heatmap (weekday x UTC hour) read those counters: exact (up to
 *    a collision of two ids' 64-bit hashes), microseconds, whatever the order
 *    events arrive in. Days are UTC; the history is the history_days days ending
 *    with the processor's "now"; older state is dropped.
 *  - A journal keeps it with the rest; eh_processor_history_stats tells its size.
 *
 * Versions: the shared library's SONAME is libengagehub.so.<major> from 1.0 on and
 * libengagehub.so.0.<minor> while the version is 0.x (Cargo's rule: a 0.x minor
 * release may break the ABI, a patch release never does). `make install` puts
 * libengagehub.so.<version> in lib/ with the links libengagehub.so.<soversion> (what
 * programs load) and libengagehub.so (what -lengagehub finds). EH_VERSION_NUMBER and
 * eh_version_number() compare the header with the library loaded.
 */

#ifndef ENGAGEHUB_H
#define ENGAGEHUB_H

/* Generated by cbindgen from the Rust sources (src/ffi/). Do not edit: run `make header`. */

#include <stddef.h>
#include <stdint.h>

/**
 * Library version, kept equal to Cargo.toml by a test.
 */
#define EH_VERSION_MAJOR 0

/**
 * Library version, kept equal to Cargo.toml by a test.
 */
#define EH_VERSION_MINOR 2

/**
 * Library version, kept equal to Cargo.toml by a test.
 */
#define EH_VERSION_PATCH 0

/**
 * The header's version as one integer, `MAJOR * 1000000 + MINOR * 1000 + PATCH`;
 * compare it with [`eh_version_number`] to check the library a program loaded.
 */
#define EH_VERSION_NUMBER (((EH_VERSION_MAJOR * 1000000) + (EH_VERSION_MINOR * 1000)) + EH_VERSION_PATCH)

/**
 * Row kind: add `value` to the user's value.
 */
#define EH_PENDING_ADD 0

/**
 * Row kind: replace the user's value by `value` (a `set`).
 */
#define EH_PENDING_SET 1

/**
 * Row kind: remove the user.
 */
#define EH_PENDING_REMOVE 2

/**
 * `eh_processor_config.overflow`: refuse a push on a full ring with `EH_QUEUE_FULL`.
 */
#define EH_OVERFLOW_DROP_NEWEST 0

/**
 * `eh_processor_config.overflow`: wait up to `block_timeout_ms` for room.
 */
#define EH_OVERFLOW_BLOCK 1

/**
 * `eh_processor_config.clock`: "now" is the system's wall clock.
 */
#define EH_CLOCK_WALL 0

/**
 * `eh_processor_config.clock`: "now" is the newest event timestamp processed
 * (for replays of old events).
 */
#define EH_CLOCK_EVENT_TIME 1

/**
 * `eh_processor_config.workers`: the synchronous mode. No worker threads: events
 * wait in the ring (which still bounds memory: `EH_OVERFLOW_DROP_NEWEST` refuses
 * pushes into a full ring, counted as drops) and are sketched and delivered on
 * the thread that calls `eh_processor_flush` (or `eh_processor_flush_wait`) or
 * `eh_processor_close`, inside that call, in push order, in batches of at most
 * `batch_size`; `flush_interval_ms` is not used, and queries count an event once
 * a flush has processed it. For tests, and for callers that want delivery inside
 * their own transaction. `EH_OVERFLOW_BLOCK` is refused with
 * `EH_INVALID_ARGUMENT` (nothing would drain the ring while a push waits).
 * A sentinel rather than 0 because 0 means "the default" (one worker).
 */
#define EH_WORKERS_NONE 4294967295

/**
 * `eh_processor_active_users`: users active that day.
 */
#define EH_PERIOD_DAY 0

/**
 * `eh_processor_active_users`: users active in the 7 days ending that day;
 * `eh_processor_retention`: cohorts of weeks, Monday to Sunday.
 */
#define EH_PERIOD_WEEK 1

/**
 * `eh_processor_active_users`: users active in the 30 days ending that day.
 */
#define EH_PERIOD_MONTH 2

/**
 * Most cohorts `eh_processor_retention` returns.
 */
#define EH_MAX_COHORTS 400

/**
 * Leaderboards keyed by guild id, in one handle (opaque): one board per guild,
 * all with the group's settings, made on the guild's first update. Create with
 * `eh_board_group_new`, close with `eh_board_group_close`, free with
 * `eh_board_group_free`.
 *
 * Each guild's board is an `eh_leaderboard`'s board (same decay, ties, capacity
 * and input rules; `max_users` is per board) without the handle: no thread and
 * no handle per guild. An empty board costs about 1.2 KB (its table slot and
 * one index leaf), one of 10 users about 2.3 KB. Guilds are spread over 64
 * stripes by a seeded hash of their id, each under its own lock: updates of
 * guilds in different stripes never wait for each other.
 *
 * Publishing to Redis (`eh_board_group_publish_enable`): each board records its
 * changes as a publishing `eh_leaderboard` does, and a guild's first change
 * since its last batch puts it on the group's dirty list, so
 * `eh_board_group_outbox_next` takes batches only from the guilds that changed.
 *
 * Lifetime: `eh_board_group_close` drops every board and leaves a small shell;
 * every later call fails with `EH_SHUT_DOWN` ("guild leaderboards closed") and
 * changes nothing. `eh_board_group_free` closes (if needed) and releases the
 * shell.
 *
 * Fork: the child gets every board whole and unlocked (the fork handlers hold
 * every stripe across `fork()`), without the changes recorded for Redis and the
 * batches taken and not acknowledged: the parent publishes those.
 *
 * Thread safety: may be used from several threads at once. Queries share their
 * guild's stripe's read lock; updates, `drop` and outbox calls take a stripe's
 * write lock; whole-group calls (`guilds`, `get_stats`, `publish_enable`) take
 * the stripes one after the other. `eh_board_group_close` may run concurrently
 * with any call, including another close: it waits for calls in progress, and
 * calls that start after it get `EH_SHUT_DOWN`. `eh_board_group_free` must not
 * run concurrently with, or be followed by, any other call on the handle.
 */
typedef struct eh_board_group eh_board_group;

/**
 * A Count-Min frequency sketch (opaque): `depth` rows of `width` 64-bit counters,
 * one 128-bit XXH3 hash per key with double hashing for the rows. Estimates never
 * undercount and exceed the truth by at most e/width of the total with probability
 * 1 − e^−depth. Sketches of equal dimensions merge.
 *
 * Plain memory: there is no close; after `fork()` the child has its own copy,
 * whole and unlocked (see "Threads and fork" at the top of this header).
 *
 * Thread safety: may be used from several threads at once (internal lock).
 * `eh_cms_free` must not run concurrently with, or be followed by, any other call
 * on the handle.
 */
typedef struct eh_cms eh_cms;

/**
 * A HyperLogLog distinct counter (opaque): precision 14 (16384 one-byte registers,
 * 0.81% standard error), Ertl's improved estimator (near exact for small counts).
 * Sketches built by different processes merge.
 *
 * Register-identical to Redis 7: an item sets the register Redis's `PFADD` sets for
 * the same bytes (MurmurHash64A, seed 0xadc83b19), and `eh_hll_count` equals
 * `PFCOUNT` on the same registers. `eh_hll_to_redis` / `eh_hll_from_redis` convert
 * to and from the value of a Redis HyperLogLog key.
 *
 * Plain memory: there is no close; after `fork()` the child has its own copy,
 * whole and unlocked (see "Threads and fork" at the top of this header).
 *
 * Thread safety: may be used from several threads at once (adds and merges are
 * serialised by an internal lock; counts share it). `eh_hll_free` must not run
 * concurrently with, or be followed by, any other call on the handle.
 */
typedef struct eh_hll eh_hll;

/**
 * A time-decayed leaderboard (opaque). Create with `eh_leaderboard_new`, close with
 * `eh_leaderboard_close`, free with `eh_leaderboard_free`.
 *
 * Scores decay by `decay_factor` per `decay_period_secs`; updates are O(log n),
 * `top` is O(log n + k) and `rank` O(log n) at any size; no query rescans users.
 *
 * Lifetime: `eh_leaderboard_close` drops the board's memory and leaves a small
 * shell behind; every call on a closed board fails with `EH_SHUT_DOWN` ("leaderboard
 * closed") and changes nothing. `eh_leaderboard_free` closes (if needed) and then
 * releases the shell.
 *
 * Fork: the child gets its own copy of the board, whole and unlocked whatever other
 * threads were doing (see "Threads and fork" at the top of this header), without
 * the changes recorded for publishing (`eh_leaderboard_publish_enable`): the
 * parent publishes those.
 *
 * Thread safety: may be used from several threads at once. Queries share a read
 * lock; updates, `clear` and `load` take the write lock and are serialised (and
 * wait for it; `eh_leaderboard_try_add` returns `EH_BUSY` instead of waiting).
 * `eh_leaderboard_close` may run concurrently with any call, including another
 * close: it waits for calls in progress, and calls that start after it get
 * `EH_SHUT_DOWN`. `eh_leaderboard_free` must not run concurrently with, or be
 * followed by, any other call on the handle.
 */
typedef struct eh_leaderboard eh_leaderboard;

/**
 * An event pipeline (opaque): a bounded lock-free ring drained by worker threads
 * that update the sketches and hand batches to the flush callback.
 *
 * Create with `eh_processor_new`; stop with `eh_processor_close` (drains and
 * delivers; the handle stays valid and every later call returns `EH_SHUT_DOWN`);
 * release with `eh_processor_free` (closes first if needed).
 *
 * Fork: a processor survives `fork()`. In the child, the first call on it
 * rebuilds it: a fresh ring and fresh workers, the same configuration and
 * callbacks, counters and sketches empty. Events still queued in the parent are
 * the parent's to deliver; the parent's ring, locks and threads are abandoned in
 * the child (leaked, never joined or unlocked). The parent is unaffected.
 *
 * Thread safety: every function may be called from any number of threads at
 * once, and `eh_processor_close` may run concurrently with any of them (and with
 * another close): calls in progress finish (a push is then delivered by the
 * close) or return `EH_SHUT_DOWN`, and calls that start after it began return
 * `EH_SHUT_DOWN`. `eh_processor_free` must not run concurrently with, or be
 * followed by, any other call on the handle.
 */
typedef struct eh_processor eh_processor;

/**
 * Status code returned by every fallible function. `EH_OK` (0) is success, so
 * `if (rc)` tests for failure. Codes are never renumbered.
 */
typedef int32_t eh_status;

/**
 * Leaderboard settings. Zero fields take their defaults. Set `struct_size` to
 * `sizeof(eh_leaderboard_config)`: fields are only ever appended, and a library
 * newer than the caller's header gives the fields the caller does not have their
 * defaults.
 */
typedef struct eh_leaderboard_config {
  /**
   * `sizeof(eh_leaderboard_config)` as the caller's header declares it (0 or a
   * size smaller than the first version: `EH_INVALID_ARGUMENT`).
   */
  size_t struct_size;
  /**
   * Fraction of a score kept after one period, in (0, 1]; 1 = no decay.
   * 0 = default 0.95. Negative, NaN or > 1: `EH_INVALID_ARGUMENT`.
   */
  double decay_factor;
  /**
   * Length of a decay period in seconds; 0 = default 86400 (one day).
   * Negative, NaN or infinite: `EH_INVALID_ARGUMENT`.
   */
  double decay_period_secs;
  /**
   * Most users kept; 0 = unbounded. When full, a new user that would rank above
   * the lowest-ranked user evicts it; otherwise it is refused with `EH_FULL`.
   */
  uint64_t max_users;
  /**
   * Latest accepted timestamp, in seconds after the wall clock: later updates
   * are refused with `EH_INVALID_ARGUMENT` (counted in `future_refused`), and
   * snapshots with a later landmark or entry with `EH_CORRUPT`. 0 = default
   * 86400 (one day); negative: `EH_INVALID_ARGUMENT`.
   */
  int64_t max_future_secs;
  /**
   * A directory (NUL-terminated; created if needed) for the board's journal, or
   * NULL for none. With a journal every change is logged before the call that
   * makes it returns, and the board reopens with its whole state: a process
   * crash loses nothing that returned; a machine crash at most
   * `journal_sync_ms`. One handle per journal (a second: `EH_BUSY`); a journal
   * of other decay settings or `max_users`: `EH_INVALID_ARGUMENT` naming them;
   * of another format version: `EH_CORRUPT`. A change that cannot be logged (a
   * full disk) fails with `EH_IO` and changes nothing. See "Durability" in the
   * header's preamble.
   */
  const char *journal_path;
  /**
   * Milliseconds between syncs of the journal to disk; 0 = default 1000;
   * negative = sync every change before its call returns (slow: a disk flush
   * per update).
   */
  int64_t journal_sync_ms;
} eh_leaderboard_config;

/**
 * One row of an [`eh_ranking`].
 */
typedef struct eh_rank_row {
  /**
   * 1-based rank.
   */
  uint64_t rank;
  /**
   * Decayed score at the query time.
   */
  double score;
  /**
   * Newest update timestamp of the user (seconds).
   */
  int64_t last_update;
  /**
   * Offset of the user id in `eh_ranking.ids` (the id is followed by a NUL).
   */
  uint64_t id_offset;
  /**
   * Length in bytes of the user id (UTF-8), not counting the NUL after it.
   */
  uint64_t id_len;
} eh_rank_row;

/**
 * The rows of a ranking, owned by the library until `eh_ranking_free`.
 *
 * Row `i` is `rows[i]`; its user id is the `rows[i].id_len` bytes at
 * `ids + rows[i].id_offset`, followed by a NUL (so it is also a C string unless
 * the id itself contains a NUL byte). The rows and the ids are one block of `size`
 * bytes starting at `rows` (ids right after the rows), so a binding can copy a
 * whole result at once. A zeroed struct is an empty ranking.
 */
typedef struct eh_ranking {
  /**
   * Number of rows.
   */
  size_t len;
  /**
   * `len` rows, best first.
   */
  const struct eh_rank_row *rows;
  /**
   * The user ids, back to back.
   */
  const uint8_t *ids;
  /**
   * Bytes from `rows` to the end of the ids.
   */
  size_t size;
  /**
   * Library-private; do not touch.
   */
  void *owner;
} eh_ranking;

/**
 * A user's position, from `eh_leaderboard_rank`.
 */
typedef struct eh_rank_info {
  /**
   * 1-based rank (1 = highest score).
   */
  uint64_t rank;
  /**
   * Decayed score at the query time.
   */
  double score;
  /**
   * Newest timestamp (seconds) of any update to this user.
   */
  int64_t last_update;
} eh_rank_info;

/**
 * Counters from `eh_leaderboard_get_stats`. Set `struct_size` to
 * `sizeof(eh_leaderboard_stats)` before the call: the library writes no more than
 * that (an older caller gets the fields it knows) and sets it to what it wrote.
 */
typedef struct eh_leaderboard_stats {
  /**
   * In: `sizeof(eh_leaderboard_stats)` as the caller's header declares it. Out:
   * the bytes written.
   */
  size_t struct_size;
  /**
   * Users on the board.
   */
  uint64_t len;
  /**
   * Users evicted to make room for a higher-scoring new user (`max_users`).
   */
  uint64_t evicted;
  /**
   * New users refused with `EH_FULL` because they ranked too low.
   */
  uint64_t refused;
  /**
   * Times the decay landmark moved forward (each an O(n) pass, very rare).
   */
  uint64_t rebases;
  /**
   * Current landmark, seconds since the Unix epoch.
   */
  int64_t landmark;
  /**
   * Heap bytes held by the board.
   */
  uint64_t heap_bytes;
  /**
   * Updates refused because their timestamp was later than the wall clock plus
   * `max_future_secs`.
   */
  uint64_t future_refused;
  /**
   * Changes waiting for `eh_leaderboard_drain` (users with a pending sum, plus
   * pending sets and removes); 0 unless publishing is enabled.
   */
  uint64_t pending;
  /**
   * Changes not recorded for publishing because `max_pending` were held.
   */
  uint64_t pending_dropped;
  /**
   * Journal: bytes logged since the last checkpoint (0 without a journal).
   */
  uint64_t journal_bytes;
  /**
   * Journal: checkpoints written since the board was opened.
   */
  uint64_t journal_checkpoints;
  /**
   * Journal: records replayed when the board was opened.
   */
  uint64_t journal_replayed;
  /**
   * Journal: torn tails truncated when the board was opened (a kill during a
   * write leaves one).
   */
  uint64_t journal_torn;
  /**
   * Journal: 1 if the last sync or checkpoint of the maintenance thread failed
   * (the message: `eh_leaderboard_journal_error`); 0 otherwise.
   */
  uint64_t journal_failing;
  /**
   * Publishing: batches taken by `eh_leaderboard_outbox_next` and not yet
   * acknowledged.
   */
  uint64_t outbox_waiting;
} eh_leaderboard_stats;

/**
 * One change drained by `eh_leaderboard_drain`.
 */
typedef struct eh_pending_row {
  /**
   * `EH_PENDING_ADD` (add `value`), `EH_PENDING_SET` (replace the value by
   * `value`) or `EH_PENDING_REMOVE` (remove the user; `value` is 0).
   */
  uint64_t kind;
  /**
   * Forward-decayed value relative to the batch's `landmark`:
   * `points * exp(ln(1/decay_factor) * (ts - landmark) / decay_period_secs)`.
   */
  double value;
  /**
   * Newest timestamp of the user's updates in the batch (0 for a remove).
   */
  int64_t last_update;
  /**
   * Offset of the user id in `eh_pending_batch.ids` (followed by a NUL).
   */
  uint64_t id_offset;
  /**
   * Length in bytes of the user id (UTF-8).
   */
  uint64_t id_len;
} eh_pending_row;

/**
 * Changes drained from a publishing board, owned by the library until
 * `eh_pending_batch_free`. Same block layout as `eh_ranking`: row `i` is
 * `rows[i]`, its id the `id_len` bytes at `ids + id_offset`. Rows are the sets
 * and removes in the order they happened, then one `EH_PENDING_ADD` per user
 * (its increments summed), all accumulated after that user's last set or
 * remove: apply them in order. A zeroed struct is an empty batch.
 */
typedef struct eh_pending_batch {
  /**
   * The landmark (seconds since the Unix epoch) the values are relative to.
   */
  int64_t landmark;
  /**
   * Number of rows.
   */
  size_t len;
  /**
   * `len` rows.
   */
  const struct eh_pending_row *rows;
  /**
   * The user ids, back to back.
   */
  const uint8_t *ids;
  /**
   * Bytes from `rows` to the end of the ids.
   */
  size_t size;
  /**
   * Library-private; do not touch.
   */
  void *owner;
} eh_pending_batch;

/**
 * Settings of an `eh_board_group`: those of every board, and a bound on the
 * boards. Zero fields take their defaults. Set `struct_size` to
 * `sizeof(eh_board_group_config)`; fields are only ever appended.
 */
typedef struct eh_board_group_config {
  /**
   * `sizeof(eh_board_group_config)` as the caller's header declares it (0 or a
   * size smaller than the first version: `EH_INVALID_ARGUMENT`).
   */
  size_t struct_size;
  /**
   * Fraction of a score kept after one period, in (0, 1]; 1 = no decay.
   * 0 = default 0.95. Negative, NaN or > 1: `EH_INVALID_ARGUMENT`.
   */
  double decay_factor;
  /**
   * Length of a decay period in seconds; 0 = default 86400 (one day).
   * Negative, NaN or infinite: `EH_INVALID_ARGUMENT`.
   */
  double decay_period_secs;
  /**
   * Most users kept per board; 0 = unbounded. As `eh_leaderboard_config`'s.
   */
  uint64_t max_users;
  /**
   * Latest accepted timestamp, in seconds after the wall clock; 0 = default
   * 86400 (one day); negative: `EH_INVALID_ARGUMENT`. As
   * `eh_leaderboard_config`'s.
   */
  int64_t max_future_secs;
  /**
   * Most boards (guilds) held; 0 = unbounded. An update of a new guild beyond
   * it fails with `EH_FULL` until a guild is dropped.
   */
  uint64_t max_guilds;
} eh_board_group_config;

/**
 * One guild of an [`eh_guild_list`].
 */
typedef struct eh_guild_row {
  /**
   * Users on the guild's board.
   */
  uint64_t users;
  /**
   * Offset of the guild id in `eh_guild_list.ids` (followed by a NUL).
   */
  uint64_t id_offset;
  /**
   * Length in bytes of the guild id (UTF-8).
   */
  uint64_t id_len;
} eh_guild_row;

/**
 * Guild ids from `eh_board_group_guilds`, owned by the library until
 * `eh_guild_list_free`. Same block layout as `eh_ranking`: row `i` is
 * `rows[i]`, its id the `id_len` bytes at `ids + id_offset`; rows and ids are
 * one block of `size` bytes from `rows`. A zeroed struct is an empty list.
 */
typedef struct eh_guild_list {
  /**
   * Number of guilds.
   */
  size_t len;
  /**
   * `len` rows, in guild id byte order.
   */
  const struct eh_guild_row *rows;
  /**
   * The guild ids, back to back.
   */
  const uint8_t *ids;
  /**
   * Bytes from `rows` to the end of the ids.
   */
  size_t size;
  /**
   * Library-private; do not touch.
   */
  void *owner;
} eh_guild_list;

/**
 * Counters from `eh_board_group_get_stats`, summed over every board. Set
 * `struct_size` to `sizeof(eh_board_group_stats)` before the call: the library
 * writes no more than that and sets it to what it wrote.
 */
typedef struct eh_board_group_stats {
  /**
   * In: `sizeof(eh_board_group_stats)` as the caller's header declares it.
   * Out: the bytes written.
   */
  size_t struct_size;
  /**
   * Boards (guilds) held.
   */
  uint64_t boards;
  /**
   * Users over every board.
   */
  uint64_t users;
  /**
   * Heap bytes: the guild tables (a slot per guild), every board's structures
   * and ids, and the batches taken for Redis and not yet acknowledged.
   */
  uint64_t heap_bytes;
  /**
   * Users evicted at `max_users`.
   */
  uint64_t evicted;
  /**
   * New users refused with `EH_FULL` at `max_users`.
   */
  uint64_t refused;
  /**
   * Updates refused because their timestamp was later than the wall clock
   * plus `max_future_secs` (also those on guilds the group did not hold).
   */
  uint64_t future_refused;
  /**
   * Times a board's decay landmark moved forward.
   */
  uint64_t rebases;
  /**
   * Publishing: changes recorded and not yet taken by
   * `eh_board_group_outbox_next`.
   */
  uint64_t pending;
  /**
   * Publishing: changes not recorded because a board held `max_pending`.
   */
  uint64_t pending_dropped;
  /**
   * Publishing: guilds on the dirty list (changed since their last batch was
   * taken).
   */
  uint64_t dirty;
  /**
   * Publishing: guilds whose batch was taken and not yet acknowledged.
   */
  uint64_t in_flight;
  /**
   * Publishing: changes not yet taken that `eh_board_group_drop` discarded.
   */
  uint64_t unpublished_dropped;
} eh_board_group_stats;

/**
 * One guild's batch in an [`eh_group_outbox`].
 */
typedef struct eh_group_batch {
  /**
   * The batch's number (> 0). Numbers come from one counter of the whole
   * group, so a guild's numbers always grow (also after a drop and
   * re-creation of the guild); acknowledge with `eh_board_group_outbox_ack`.
   */
  uint64_t number;
  /**
   * The landmark (seconds since the Unix epoch) the rows' values are relative
   * to.
   */
  int64_t landmark;
  /**
   * Index of the batch's first row in `eh_group_outbox.rows`.
   */
  uint64_t first_row;
  /**
   * Number of rows: `rows[first_row .. first_row + row_count]`, in the order
   * of an `eh_pending_batch` (sets and removes in order, then the sums).
   */
  uint64_t row_count;
  /**
   * Offset of the guild id in `eh_group_outbox.guilds` (followed by a NUL).
   */
  uint64_t guild_offset;
  /**
   * Length in bytes of the guild id (UTF-8).
   */
  uint64_t guild_len;
} eh_group_batch;

/**
 * Batches from `eh_board_group_outbox_next`, one per guild, owned by the
 * library until `eh_group_outbox_free`. Two blocks: the batches with their guild
 * ids (`batches_size` bytes from `batches`), and the rows of every batch with
 * their user ids (`rows_size` bytes from `rows`), each laid out as
 * `eh_ranking`'s. A zeroed struct holds no batch.
 */
typedef struct eh_group_outbox {
  /**
   * Number of batches.
   */
  size_t len;
  /**
   * `len` batches.
   */
  const struct eh_group_batch *batches;
  /**
   * The guild ids, back to back.
   */
  const uint8_t *guilds;
  /**
   * Bytes from `batches` to the end of the guild ids.
   */
  size_t batches_size;
  /**
   * Number of rows over every batch.
   */
  size_t rows_len;
  /**
   * `rows_len` rows (`eh_pending_row`: kind, value, last update, user id).
   */
  const struct eh_pending_row *rows;
  /**
   * The user ids, back to back.
   */
  const uint8_t *ids;
  /**
   * Bytes from `rows` to the end of the user ids.
   */
  size_t rows_size;
  /**
   * Library-private; do not touch.
   */
  void *owner;
  /**
   * Library-private; do not touch.
   */
  void *rows_owner;
} eh_group_outbox;

/**
 * Processor settings. Zero fields take their defaults; pass NULL for all defaults.
 * Set `struct_size` to `sizeof(eh_processor_config)`: fields are only ever
 * appended, and a library newer than the caller's header gives the fields the
 * caller does not have their defaults.
 */
typedef struct eh_processor_config {
  /**
   * `sizeof(eh_processor_config)` as the caller's header declares it (0 or a
   * size smaller than the first version: `EH_INVALID_ARGUMENT`).
   */
  size_t struct_size;
  /**
   * Ring slots, rounded up to a power of two; 0 = 16384; at most 16777216.
   */
  uint64_t capacity;
  /**
   * Worker threads; 0 = 1; at most 64. With one worker, batches arrive in push
   * order. `EH_WORKERS_NONE`: the synchronous mode, without worker threads.
   */
  uint32_t workers;
  /**
   * Events per batch; 0 = 500.
   */
  uint32_t batch_size;
  /**
   * A partial batch is delivered this long after its first event; 0 = 1000 ms.
   */
  uint32_t flush_interval_ms;
  /**
   * `EH_OVERFLOW_DROP_NEWEST` (0, default) or `EH_OVERFLOW_BLOCK`.
   */
  int32_t overflow;
  /**
   * Longest wait of a push under `EH_OVERFLOW_BLOCK`; 0 = 1000 ms. A waiting
   * push retries once an eighth of the ring (at most 4,096 slots) is free, and
   * once more at the deadline, when any free slot takes it.
   */
  uint32_t block_timeout_ms;
  /**
   * Retries of a failing flush before the batch is dead-lettered; 0 = 3,
   * negative = no retry.
   */
  int32_t max_retries;
  /**
   * Wait before the first retry, doubled for each later one; 0 = 50 ms.
   */
  uint32_t retry_backoff_ms;
  /**
   * `EH_CLOCK_WALL` (0, default) or `EH_CLOCK_EVENT_TIME`.
   */
  int32_t clock;
  /**
   * Length of the unique-user and trending window in minutes; 0 = 60.
   */
  uint32_t window_minutes;
  /**
   * Count-Min rows; 0 = 4.
   */
  uint32_t cms_depth;
  /**
   * Count-Min columns; 0 = 2048.
   */
  uint32_t cms_width;
  /**
   * Channels tracked by the all-time trending summary; 0 = 1024.
   */
  uint32_t topk_capacity;
  /**
   * A pushed timestamp later than the wall clock plus this many seconds is
   * refused with `EH_INVALID_ARGUMENT` and counted in `future_refused`, under
   * both clocks (so under `EH_CLOCK_EVENT_TIME` one event from the far future
   * cannot move "now"); 0 = 86400 (one day); at most 315360000 (ten years).
   */
  uint32_t max_future_skew_secs;
  /**
   * A directory (NUL-terminated; created if needed) for the processor's
   * journal, or NULL for none: every run of events a worker takes is logged
   * before it is sketched and delivered, and the processor reopens with its
   * sketches, totals and publisher outbox (see "Durability" in the header's
   * preamble; events still in the ring at a crash are not journaled). One
   * handle per journal (`EH_BUSY`); a journal of other window or sketch
   * settings or clock: `EH_INVALID_ARGUMENT` naming them; another format
   * version: `EH_CORRUPT`.
   */
  const char *journal_path;
  /**
   * Milliseconds between syncs of the journal to disk; 0 = 1000; negative =
   * sync every run before it is sketched.
   */
  int64_t journal_sync_ms;
  /**
   * Days of daily history for `eh_processor_active_users`,
   * `eh_processor_retention` and `eh_processor_heatmap`; 0 = 90; at most 400;
   * negative = none (those queries then fail with `EH_INVALID_ARGUMENT`, and
   * events cost no more than without them). About 50 bytes per user and per
   * guild a user is seen in (see "Community analytics" in the preamble).
   */
  int32_t history_days;
  /**
   * Non-zero: keep what the daily history changes for a Redis publisher, which
   * takes it with each `eh_processor_outbox_put` (the Python package sets this
   * when it publishes; C callers leave it 0).
   */
  int32_t publish_history;
} eh_processor_config;

/**
 * An event in the C layout the flush callback receives (`eh_event` in the header).
 * Every pointer is valid only during the callback; strings are UTF-8, not
 * NUL-terminated; `payload` is NULL when `payload_len` is 0.
 */
typedef struct eh_event {
  /**
   * Event kind, `kind_len` bytes.
   */
  const uint8_t *kind;
  /**
   * Length of `kind` in bytes.
   */
  size_t kind_len;
  /**
   * User id, `user_id_len` bytes.
   */
  const uint8_t *user_id;
  /**
   * Length of `user_id` in bytes.
   */
  size_t user_id_len;
  /**
   * Channel id, `channel_id_len` bytes.
   */
  const uint8_t *channel_id;
  /**
   * Length of `channel_id` in bytes.
   */
  size_t channel_id_len;
  /**
   * Unix seconds.
   */
  int64_t timestamp;
  /**
   * Opaque payload pushed with the event, `payload_len` bytes; NULL when empty.
   */
  const uint8_t *payload;
  /**
   * Length of `payload` in bytes.
   */
  size_t payload_len;
  /**
   * Guild id, `guild_id_len` bytes (may be NULL when `guild_id_len` is 0: no
   * guild).
   */
  const uint8_t *guild_id;
  /**
   * Length of `guild_id` in bytes; 0: none.
   */
  size_t guild_id_len;
} eh_event;

/**
 * The flush callback: receives `n` events valid only during the call, on a worker
 * thread. Return 0 on success; anything else is a failure and the same batch is
 * offered again after the backoff, up to `max_retries` times, then dead-lettered.
 *
 * It may call `eh_processor_push*` and the query functions on the same processor;
 * `eh_processor_flush`, `eh_processor_set_*_callback` and `eh_processor_close` on
 * the same processor return `EH_WOULD_DEADLOCK` and change nothing;
 * `eh_processor_free` hands the close to a reaper thread (see there).
 *
 * Synchronous mode (`workers = EH_WORKERS_NONE`): the callback runs on the
 * thread that called `eh_processor_flush`, `eh_processor_flush_wait` or
 * `eh_processor_close`, inside that call; the same calls are refused with
 * `EH_WOULD_DEADLOCK`, and `eh_processor_free` must not be called from it (a
 * call on the handle is in progress).
 */
typedef int32_t (*eh_flush_fn)(void *user_data, const struct eh_event *events, size_t n);

/**
 * Releases a callback's `user_data`; called exactly once, after the last call of
 * the callback returned: when the callback is replaced (on the thread that
 * replaced it, or on the worker that was still using it), or when the processor
 * is closed (on the closing thread, or on the reaper thread of an
 * `eh_processor_free` made inside a callback). Not called for a call that
 * failed (the caller keeps `user_data`), nor, in a forked child, for callbacks
 * inherited from the parent (the parent owns them).
 */
typedef void (*eh_free_fn)(void *user_data);

/**
 * The dead-letter callback: a batch whose flush failed `max_retries + 1` times,
 * with the failure reason as a NUL-terminated string; everything valid only during
 * the call; runs on a worker thread under the same rules as `eh_flush_fn`.
 */
typedef void (*eh_dead_letter_fn)(void *user_data,
                                  const struct eh_event *events,
                                  size_t n,
                                  const char *error);

/**
 * The daily history's size, from `eh_processor_history_stats`. Set
 * `struct_size` to `sizeof(eh_history_stats)` before the call.
 */
typedef struct eh_history_stats {
  /**
   * In: `sizeof(eh_history_stats)`. Out: the bytes written.
   */
  size_t struct_size;
  /**
   * User records: one per user seen, plus one per guild a user was seen in.
   */
  uint64_t user_records;
  /**
   * Guilds seen.
   */
  uint64_t guilds;
  /**
   * Approximate heap bytes of the history (records, day counters, cohort
   * cells, heatmaps).
   */
  uint64_t heap_bytes;
} eh_history_stats;

/**
 * Counters from `eh_processor_get_stats` (relaxed reads: cheap to poll). Set
 * `struct_size` to `sizeof(eh_processor_stats)` before the call: the library
 * writes no more than that (an older caller gets the fields it knows) and sets it
 * to what it wrote.
 */
typedef struct eh_processor_stats {
  /**
   * In: `sizeof(eh_processor_stats)` as the caller's header declares it. Out:
   * the bytes written.
   */
  size_t struct_size;
  /**
   * Events offered (accepted + dropped).
   */
  uint64_t pushed;
  /**
   * Events placed in the ring.
   */
  uint64_t accepted;
  /**
   * Events refused because the ring was full.
   */
  uint64_t dropped;
  /**
   * Events taken by the workers and sketched.
   */
  uint64_t processed;
  /**
   * Events in batches the flush callback accepted (returned 0).
   */
  uint64_t delivered;
  /**
   * Events in batches dropped because no flush callback was set.
   */
  uint64_t discarded;
  /**
   * Batches the flush callback accepted.
   */
  uint64_t batches;
  /**
   * Failed flush attempts.
   */
  uint64_t failures;
  /**
   * Retries of failed flushes.
   */
  uint64_t retries;
  /**
   * Events handed to the dead-letter callback after the last retry failed.
   */
  uint64_t dead_lettered;
  /**
   * Batches handed to the dead-letter callback.
   */
  uint64_t dead_letter_batches;
  /**
   * Events waiting in the ring.
   */
  uint64_t queue_len;
  /**
   * Events refused because their timestamp was later than the wall clock plus
   * `max_future_skew_secs`.
   */
  uint64_t future_refused;
  /**
   * Journal: bytes logged since the last checkpoint (0 without a journal).
   */
  uint64_t journal_bytes;
  /**
   * Journal: checkpoints written since the processor was opened.
   */
  uint64_t journal_checkpoints;
  /**
   * Journal: records replayed when the processor was opened.
   */
  uint64_t journal_replayed;
  /**
   * Journal: torn tails truncated when the processor was opened.
   */
  uint64_t journal_torn;
  /**
   * Journal: 1 when the journal stopped being written (a full disk: the
   * processor goes on in memory) or its last sync failed;
   * `eh_processor_journal_error` says why.
   */
  uint64_t journal_failing;
  /**
   * Publishing: batches put in the outbox and not yet acknowledged.
   */
  uint64_t outbox_waiting;
} eh_processor_stats;

/**
 * One row of an [`eh_channel_list`].
 */
typedef struct eh_channel_row {
  /**
   * Estimated events in the channel (an upper bound; exact for heavy hitters).
   */
  uint64_t count;
  /**
   * Offset of the channel id in `eh_channel_list.ids` (followed by a NUL).
   */
  uint64_t id_offset;
  /**
   * Length in bytes of the channel id (UTF-8), not counting the NUL.
   */
  uint64_t id_len;
} eh_channel_row;

/**
 * Trending channels, owned by the library until `eh_channel_list_free`. Same
 * layout rules as `eh_ranking`: row `i` names the `rows[i].id_len` bytes at
 * `ids + rows[i].id_offset`; rows and ids are one block of `size` bytes.
 */
typedef struct eh_channel_list {
  /**
   * Number of rows.
   */
  size_t len;
  /**
   * `len` rows, busiest first (ties by channel id).
   */
  const struct eh_channel_row *rows;
  /**
   * The channel ids, back to back.
   */
  const uint8_t *ids;
  /**
   * Bytes from `rows` to the end of the ids.
   */
  size_t size;
  /**
   * Library-private; do not touch.
   */
  void *owner;
} eh_channel_list;

/**
 * Success.
 */
#define EH_OK 0

/**
 * An argument was NULL, out of range, malformed or not valid UTF-8.
 */
#define EH_INVALID_ARGUMENT 1

/**
 * The named user (or other item) does not exist.
 */
#define EH_NOT_FOUND 2

/**
 * A bounded structure is full and the operation was refused (e.g. `max_users`).
 */
#define EH_FULL 3

/**
 * The event ring is full: the event was dropped and counted.
 */
#define EH_QUEUE_FULL 4

/**
 * An I/O operation failed (the message names the file and the OS error).
 */
#define EH_IO 5

/**
 * Serialized data (snapshot, sketch bytes) failed validation; nothing was changed.
 */
#define EH_CORRUPT 6

/**
 * The handle is shutting down or has shut down.
 */
#define EH_SHUT_DOWN 7

/**
 * A blocking call did not complete within its timeout.
 */
#define EH_TIMEOUT 8

/**
 * Refused because it would deadlock (e.g. flushing a processor from its own callback).
 */
#define EH_WOULD_DEADLOCK 9

/**
 * An earlier panic left the handle unusable; free it.
 */
#define EH_POISONED 10

/**
 * The library panicked inside this call (a bug); the message (`eh_last_error`)
 * says where. The panic is reported only there: nothing is printed to stderr.
 */
#define EH_PANIC 11

/**
 * A non-blocking call (e.g. `eh_leaderboard_try_add`) found the handle in use by
 * another thread and returned at once; nothing was done. Retry, or use the
 * blocking variant.
 */
#define EH_BUSY 12

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Names a status code: `"EH_OK"`, `"EH_QUEUE_FULL"`… Accepts any integer; unknown
 * codes give `"EH_UNKNOWN"`. The string is static: never free it.
 */
const char *eh_status_str(eh_status status);

/**
 * The message of the last failed call on the calling thread ("" if none).
 *
 * Read it on the same thread straight after the failing call: the next failing
 * call replaces it. The pointer stays valid until then; never free it.
 */
const char *eh_last_error(void);

/**
 * The loaded library's version as one integer, `MAJOR * 1000000 + MINOR * 1000 +
 * PATCH` (e.g. 1002003 for 1.2.3): `eh_version_number() >= EH_VERSION_NUMBER`
 * checks at run time that the library is at least as new as the header a program
 * was compiled against.
 */
uint32_t eh_version_number(void);

/**
 * The OS error number (`errno`, e.g. `ENOENT`) behind the last failed call on the
 * calling thread, when that call failed with `EH_IO` because of an operating-system
 * error; 0 otherwise (success does not reset it, like `eh_last_error`). Read it on
 * the same thread straight after the failing call, as `eh_last_error`. The file
 * concerned is the path the caller passed (its temp file for a save), and the
 * message names it too.
 */
int32_t eh_last_error_errno(void);

/**
 * The library version as "MAJOR.MINOR.PATCH" (static; never free it).
 */
const char *eh_version(void);

/**
 * Creates a leaderboard. `config` may be NULL for all defaults (decay 0.95 per
 * day, unbounded). With `journal_path` set, it opens the board's journal and
 * restores the board from it (checkpoint, then the log after it). On success
 * writes the new handle to `*out`.
 *
 * Errors: `EH_INVALID_ARGUMENT` for a bad setting (the message names it), a NULL
 * `out`, or a journal written with other settings; `EH_BUSY` when another handle
 * has the journal open; `EH_CORRUPT` for a journal of another format version or a
 * damaged checkpoint; `EH_IO` for the file system.
 */
eh_status eh_leaderboard_new(const struct eh_leaderboard_config *config,
                             struct eh_leaderboard **out);

/**
 * Closes a leaderboard: drops the board's memory, keeping the handle's shell so
 * that later calls fail cleanly. Thread-safe: may run concurrently with any other
 * call on `lb` (including another close). It waits for calls already in progress
 * to finish (a save in progress waits only for its serialisation, not the disk);
 * calls that start afterwards fail with `EH_SHUT_DOWN` ("leaderboard closed") and
 * change nothing. BLOCKS for as long as the longest call in progress. Idempotent: a
 * second close returns `EH_OK`. Release the shell with `eh_leaderboard_free`.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL `lb`).
 */
eh_status eh_leaderboard_close(struct eh_leaderboard *lb);

/**
 * Closes the leaderboard if it is not closed (see `eh_leaderboard_close`), then
 * releases the handle. NULL is a no-op.
 *
 * Unlike close, free must not run concurrently with, or be followed by, any other
 * call on `lb`: the caller guarantees exclusivity (close first, from any thread,
 * to stop other threads' calls; free once they have returned).
 */
void eh_leaderboard_free(struct eh_leaderboard *lb);

/**
 * Adds `points` earned at `timestamp` (seconds since the Unix epoch; <= 0 = now)
 * to the user's score, creating the user if needed. Timestamps may arrive in any
 * order; each contribution decays from its own time.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle, empty / over 1024 bytes / invalid
 * UTF-8 id, NaN or infinite points, timestamp after year 9999, a sum that would
 * overflow), `EH_FULL` (at `max_users` and ranking below the lowest user; counted
 * in `refused`). On error nothing changes.
 */
eh_status eh_leaderboard_add(struct eh_leaderboard *lb,
                             const uint8_t *user_id,
                             size_t user_id_len,
                             double points,
                             int64_t timestamp);

/**
 * `eh_leaderboard_add` that never waits: if another thread is using the board (a
 * query, an update, a save or a load in progress), returns `EH_BUSY` at once and
 * changes nothing. For callers that must not block while holding a lock of their
 * own, such as a Python binding that keeps the interpreter lock for the call: on
 * `EH_BUSY` it releases that lock and calls `eh_leaderboard_add`.
 *
 * Errors: those of `eh_leaderboard_add`, and `EH_BUSY`.
 */
eh_status eh_leaderboard_try_add(struct eh_leaderboard *lb,
                                 const uint8_t *user_id,
                                 size_t user_id_len,
                                 double points,
                                 int64_t timestamp);

/**
 * Sets the user's score to `score` as of `timestamp` (<= 0 = now), replacing its
 * history. Same errors and capacity rules as `eh_leaderboard_add`.
 */
eh_status eh_leaderboard_set(struct eh_leaderboard *lb,
                             const uint8_t *user_id,
                             size_t user_id_len,
                             double score,
                             int64_t timestamp);

/**
 * Removes a user. Errors: `EH_NOT_FOUND` if absent, `EH_INVALID_ARGUMENT`.
 */
eh_status eh_leaderboard_remove(struct eh_leaderboard *lb,
                                const uint8_t *user_id,
                                size_t user_id_len);

/**
 * Removes every user (settings and counters stay).
 */
eh_status eh_leaderboard_clear(struct eh_leaderboard *lb);

/**
 * Up to `k` users from 0-based position `offset`, best first, with scores at `now`
 * (seconds; <= 0 = now). O(log n + k). On success fills `*out`, which the caller
 * releases with `eh_ranking_free`; an `offset` past the end gives 0 rows.
 */
eh_status eh_leaderboard_top(const struct eh_leaderboard *lb,
                             size_t offset,
                             size_t k,
                             int64_t now,
                             struct eh_ranking *out);

/**
 * The users within `radius` places of `user_id` (up to `2 * radius + 1` rows,
 * fewer at the ends), best first, scores at `now` (<= 0 = now). Release `*out`
 * with `eh_ranking_free`. Errors: `EH_NOT_FOUND`, `EH_INVALID_ARGUMENT`.
 */
eh_status eh_leaderboard_around(const struct eh_leaderboard *lb,
                                const uint8_t *user_id,
                                size_t user_id_len,
                                size_t radius,
                                int64_t now,
                                struct eh_ranking *out);

/**
 * The user's 1-based rank, score at `now` (<= 0 = now) and last update, in
 * O(log n). Errors: `EH_NOT_FOUND` if absent, `EH_INVALID_ARGUMENT`.
 */
eh_status eh_leaderboard_rank(const struct eh_leaderboard *lb,
                              const uint8_t *user_id,
                              size_t user_id_len,
                              int64_t now,
                              struct eh_rank_info *out);

/**
 * Writes the number of users to `*out`.
 */
eh_status eh_leaderboard_len(const struct eh_leaderboard *lb, size_t *out);

/**
 * Fills `*out` with the board's counters.
 */
eh_status eh_leaderboard_get_stats(const struct eh_leaderboard *lb,
                                   struct eh_leaderboard_stats *out);

/**
 * Saves a JSON snapshot to `path` (NUL-terminated) atomically: a temp file beside
 * it is written, fsynced and renamed over `path`, so readers see the old or the new
 * file, never a torn one. Scores round-trip bit for bit. Blocks on disk I/O, but
 * holds the board's read lock only while serialising: a close or an update racing
 * with a save waits for the serialisation, never for the disk.
 *
 * Errors: `EH_IO` (`eh_last_error_errno` gives the OS error number),
 * `EH_SHUT_DOWN` (closed).
 */
eh_status eh_leaderboard_save(const struct eh_leaderboard *lb, const char *path);

/**
 * Replaces the board with the snapshot at `path`, including its decay settings
 * and `max_users`. Reads this library's format and the C++ extension's
 * (`{"decay_factor", "max_users", "entries": [{"user_id", "score",
 * "last_update"}]}`, one-day period). The file is fully validated first: on
 * `EH_IO` (unreadable) or `EH_CORRUPT` (the message names the problem) the board
 * is left exactly as it was.
 */
eh_status eh_leaderboard_load(struct eh_leaderboard *lb, const char *path);

/**
 * The entries that the last `eh_leaderboard_load` of a C++ extension snapshot
 * into this board skipped (entries that can be loaded always are; the others:
 * no or bad id, non-finite score, bad or future timestamp, a repeated id, beyond
 * `max_users`). `*count` gets their number (0 after any other load, and for a
 * board never loaded). The list is written into `buf` (capacity `cap`) as UTF-8
 * JSON, `[{"index": <position in the file's entries>, "user_id": "...",
 * "reason": "..."}, ...]`; `*needed` is always set and `buf` is written only when
 * `cap >= *needed` (retry with a larger buffer). `buf` may be NULL when `cap` is 0.
 *
 * Errors: `EH_INVALID_ARGUMENT` for a NULL handle or out-param.
 */
eh_status eh_leaderboard_load_skipped(const struct eh_leaderboard *lb,
                                      uint64_t *count,
                                      uint8_t *buf,
                                      size_t cap,
                                      size_t *needed);

/**
 * Starts recording every change of the board for a shared copy (a Redis sorted
 * set): each add's forward-decayed delta is summed per user inside the update's
 * locked section, and each set and remove is recorded in order, until
 * `eh_leaderboard_drain` takes them. At most `max_pending` (> 0) changes are held
 * between drains; further ones are not recorded and are counted in the stats'
 * `pending_dropped`. Calling it again changes only the bound. There is no way to
 * stop recording short of closing the board.
 *
 * While recording, increments for a user the board refuses at `max_users` (or
 * evicts, or drops in `eh_leaderboard_clear`) are still recorded, and a remove of
 * a user the board does not hold is recorded (the call still returns
 * `EH_NOT_FOUND`). `eh_leaderboard_load` keeps the recorded changes, rescaled to
 * the loaded landmark (the loaded entries are not recorded) and refuses a
 * snapshot with other decay settings (`EH_INVALID_ARGUMENT`).
 *
 * Thread safety: as any update (takes the write lock).
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle, `max_pending` 0), `EH_SHUT_DOWN`.
 */
eh_status eh_leaderboard_publish_enable(struct eh_leaderboard *lb, uint64_t max_pending);

/**
 * Takes every change recorded since the last drain (see
 * `eh_leaderboard_publish_enable`) and fills `*out`; each change is handed out
 * exactly once. The caller releases `*out` with `eh_pending_batch_free`. On a
 * board that is not publishing the batch is empty. Also the way to discard the
 * changes (a forked child, whose parent publishes them): drain and free.
 *
 * Thread safety: takes the write lock for the O(changes) copy.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL argument), `EH_SHUT_DOWN`; on error `*out`
 * is untouched and nothing is taken.
 */
eh_status eh_leaderboard_drain(struct eh_leaderboard *lb, struct eh_pending_batch *out);

/**
 * The board's publisher identity (for Redis): the one its journal keeps, or,
 * the first time, `proposed` (1 to 256 bytes), which is then kept (and logged).
 * `*needed` gets the identity's length; it is copied into `buf` when `cap >=
 * *needed`. In a forked child the inherited identity is gone: propose a new one.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle or out-param, a proposal of a bad
 * length when none is kept), `EH_IO` (the journal could not log it),
 * `EH_SHUT_DOWN`.
 */
eh_status eh_leaderboard_publisher_id(struct eh_leaderboard *lb,
                                      const uint8_t *proposed,
                                      size_t proposed_len,
                                      uint8_t *buf,
                                      size_t cap,
                                      size_t *needed);

/**
 * The oldest batch of changes taken for Redis and not yet acknowledged, with its
 * number in `*number` (numbers grow by one per batch and survive a reopen on the
 * journal); if none waits, the changes recorded since the last batch become a new
 * one (logged with its rows, so a reopened board resends the very same batch).
 * Nothing to publish: an empty batch and `*number` 0. The caller releases `*out`
 * with `eh_pending_batch_free` and acknowledges the batch with
 * `eh_leaderboard_outbox_ack` once Redis applied it.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL argument), `EH_IO` (the journal could not
 * log the new batch: nothing was taken), `EH_SHUT_DOWN`.
 */
eh_status eh_leaderboard_outbox_next(struct eh_leaderboard *lb,
                                     struct eh_pending_batch *out,
                                     uint64_t *number);

/**
 * Acknowledges batch `number` of `eh_leaderboard_outbox_next` (Redis applied it):
 * it is dropped (and the acknowledgement logged). An unknown number is ignored.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle), `EH_IO` (not logged: the batch
 * stays), `EH_SHUT_DOWN`.
 */
eh_status eh_leaderboard_outbox_ack(struct eh_leaderboard *lb, uint64_t number);

/**
 * The last error of the journal's maintenance thread (a sync or a checkpoint
 * that failed; `journal_failing` in the stats), copied like
 * `eh_leaderboard_publisher_id` copies its id; `*needed` is 0 when there is none.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle or out-param).
 */
eh_status eh_leaderboard_journal_error(const struct eh_leaderboard *lb,
                                       uint8_t *buf,
                                       size_t cap,
                                       size_t *needed);

/**
 * Releases a batch filled by `eh_leaderboard_drain` and zeroes `*batch`. NULL, a
 * zeroed struct and a second call are no-ops.
 */
void eh_pending_batch_free(struct eh_pending_batch *batch);

/**
 * Releases the rows of a ranking filled by `eh_leaderboard_top` or
 * `eh_leaderboard_around`, and zeroes `*ranking`. NULL, a zeroed struct and a
 * second call are no-ops.
 */
void eh_ranking_free(struct eh_ranking *ranking);

/**
 * Creates a group of leaderboards. `config` may be NULL for all defaults (decay
 * 0.95 per day, boards and guilds unbounded). On success writes the new handle to
 * `*out`.
 *
 * Errors: `EH_INVALID_ARGUMENT` for a bad setting (the message names it) or a
 * NULL `out`.
 */
eh_status eh_board_group_new(const struct eh_board_group_config *config,
                             struct eh_board_group **out);

/**
 * Closes a group: drops every board, keeping the handle's shell so that later
 * calls fail cleanly. Thread-safe: may run concurrently with any other call on
 * `g` (including another close). It waits for the calls in progress; calls that
 * start afterwards fail with `EH_SHUT_DOWN` and change nothing. BLOCKS for as
 * long as the longest call in progress. Idempotent. Release the shell with
 * `eh_board_group_free`.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL `g`).
 */
eh_status eh_board_group_close(struct eh_board_group *g);

/**
 * Closes the group if it is not closed (see `eh_board_group_close`), then
 * releases the handle. NULL is a no-op. Must not run concurrently with, or be
 * followed by, any other call on `g`.
 */
void eh_board_group_free(struct eh_board_group *g);

/**
 * Adds `points` earned at `timestamp` (seconds since the Unix epoch; <= 0 = now)
 * to the user's score on the guild's board, making the board (with the group's
 * settings) if the group holds none. As `eh_leaderboard_add` otherwise.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle, empty / over 1024 bytes / invalid
 * UTF-8 guild or user id, NaN or infinite points, a timestamp after year 9999
 * or past the wall clock plus `max_future_secs`, a sum that would overflow),
 * `EH_FULL` (at the board's `max_users` and ranking below its lowest user; or a
 * new guild beyond `max_guilds`), `EH_SHUT_DOWN`. On error nothing changes (a
 * new guild's board is not kept).
 */
eh_status eh_board_group_add(struct eh_board_group *g,
                             const uint8_t *guild_id,
                             size_t guild_id_len,
                             const uint8_t *user_id,
                             size_t user_id_len,
                             double points,
                             int64_t timestamp);

/**
 * Sets the user's score on the guild's board to `score` as of `timestamp` (<= 0
 * = now), replacing its history. Same errors and rules as `eh_board_group_add`.
 */
eh_status eh_board_group_set(struct eh_board_group *g,
                             const uint8_t *guild_id,
                             size_t guild_id_len,
                             const uint8_t *user_id,
                             size_t user_id_len,
                             double score,
                             int64_t timestamp);

/**
 * Removes a user from the guild's board. Errors: `EH_NOT_FOUND` if the board
 * does not hold the user (or the group holds no board for the guild),
 * `EH_INVALID_ARGUMENT`, `EH_SHUT_DOWN`. While publishing, the removal is
 * recorded for Redis even when the user is not found (a board is made for a
 * guild the group does not hold, to record it; `EH_FULL` if that would exceed
 * `max_guilds`).
 */
eh_status eh_board_group_remove(struct eh_board_group *g,
                                const uint8_t *guild_id,
                                size_t guild_id_len,
                                const uint8_t *user_id,
                                size_t user_id_len);

/**
 * Up to `k` users of the guild's board from 0-based position `offset`, best
 * first, with scores at `now` (seconds; <= 0 = now), as `eh_leaderboard_top`.
 * A guild the group does not hold gives 0 rows. On success fills `*out`, which
 * the caller releases with `eh_ranking_free`.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL argument, bad guild id, `now` after year
 * 9999), `EH_SHUT_DOWN`.
 */
eh_status eh_board_group_top(const struct eh_board_group *g,
                             const uint8_t *guild_id,
                             size_t guild_id_len,
                             size_t offset,
                             size_t k,
                             int64_t now,
                             struct eh_ranking *out);

/**
 * The users of the guild's board within `radius` places of `user_id`, as
 * `eh_leaderboard_around`. Release `*out` with `eh_ranking_free`.
 *
 * Errors: `EH_NOT_FOUND` (the user, or the guild, is not held),
 * `EH_INVALID_ARGUMENT`, `EH_SHUT_DOWN`.
 */
eh_status eh_board_group_around(const struct eh_board_group *g,
                                const uint8_t *guild_id,
                                size_t guild_id_len,
                                const uint8_t *user_id,
                                size_t user_id_len,
                                size_t radius,
                                int64_t now,
                                struct eh_ranking *out);

/**
 * The user's 1-based rank on the guild's board, score at `now` (<= 0 = now) and
 * last update, as `eh_leaderboard_rank`.
 *
 * Errors: `EH_NOT_FOUND` (the user, or the guild, is not held),
 * `EH_INVALID_ARGUMENT`, `EH_SHUT_DOWN`.
 */
eh_status eh_board_group_rank(const struct eh_board_group *g,
                              const uint8_t *guild_id,
                              size_t guild_id_len,
                              const uint8_t *user_id,
                              size_t user_id_len,
                              int64_t now,
                              struct eh_rank_info *out);

/**
 * Writes the number of users on the guild's board to `*out` (0 for a guild the
 * group does not hold).
 *
 * Errors: `EH_INVALID_ARGUMENT`, `EH_SHUT_DOWN`.
 */
eh_status eh_board_group_len(const struct eh_board_group *g,
                             const uint8_t *guild_id,
                             size_t guild_id_len,
                             size_t *out);

/**
 * The guilds the group holds, in guild id byte order, each with its number of
 * users: those after `after` (`after_len` 0: from the first), at most `limit`.
 * To page through every guild, pass the last id of a page as the next `after`.
 * Reads the stripes one after the other: a guild made or dropped during the
 * call may or may not be listed. O(guilds · log guilds). On success fills
 * `*out`, which the caller releases with `eh_guild_list_free`.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL argument, `after` not UTF-8),
 * `EH_SHUT_DOWN`.
 */
eh_status eh_board_group_guilds(const struct eh_board_group *g,
                                const uint8_t *after,
                                size_t after_len,
                                size_t limit,
                                struct eh_guild_list *out);

/**
 * Releases a list filled by `eh_board_group_guilds` and zeroes `*list`. NULL, a
 * zeroed struct and a second call are no-ops.
 */
void eh_guild_list_free(struct eh_guild_list *list);

/**
 * Drops the guild's board and frees its memory. `*discarded` gets the number
 * of its changes recorded for Redis and not yet taken by
 * `eh_board_group_outbox_next`, which are discarded (and counted in the stats'
 * `unpublished_dropped`; publish first to keep them). A batch of the guild
 * already taken may still be sent; its acknowledgement is then ignored. A later
 * update of the guild makes a new, empty board.
 *
 * Errors: `EH_NOT_FOUND` (the group holds no board for the guild; `*discarded`
 * untouched), `EH_INVALID_ARGUMENT`, `EH_SHUT_DOWN`.
 */
eh_status eh_board_group_drop(struct eh_board_group *g,
                              const uint8_t *guild_id,
                              size_t guild_id_len,
                              uint64_t *discarded);

/**
 * Fills `*out` with the group's counters, summed over every board (reads the
 * stripes one after the other; O(guilds)).
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL argument, bad `struct_size`),
 * `EH_SHUT_DOWN`.
 */
eh_status eh_board_group_get_stats(const struct eh_board_group *g,
                                   struct eh_board_group_stats *out);

/**
 * Starts recording every board's changes for a shared copy in Redis (as
 * `eh_leaderboard_publish_enable` for each board held and each made later), each
 * board holding at most `max_pending` (> 0) changes between batches; more are
 * counted in `pending_dropped`. Calling it again changes only the bound.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle, `max_pending` 0), `EH_SHUT_DOWN`.
 */
eh_status eh_board_group_publish_enable(struct eh_board_group *g, uint64_t max_pending);

/**
 * Batches for Redis, one per guild: first every batch taken before and not yet
 * acknowledged (resend them: same rows, same number), then new batches from the
 * guilds that changed since their last batch (the dirty list, oldest first;
 * never a scan of every guild), until they hold at least `max_rows` rows (0 =
 * every guild that changed). Each new batch holds the guild's changes since its
 * last one (as `eh_leaderboard_drain`'s) and stays with its board until
 * `eh_board_group_outbox_ack`. Nothing to publish: 0 batches. The caller
 * releases `*out` with `eh_group_outbox_free`.
 *
 * Calls of this function are serialised; updates of guilds other than the one
 * being taken go on meanwhile.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL argument), `EH_SHUT_DOWN`; on error
 * `*out` is untouched.
 */
eh_status eh_board_group_outbox_next(struct eh_board_group *g,
                                     size_t max_rows,
                                     struct eh_group_outbox *out);

/**
 * Releases batches filled by `eh_board_group_outbox_next` and zeroes `*outbox`.
 * NULL, a zeroed struct and a second call are no-ops.
 */
void eh_group_outbox_free(struct eh_group_outbox *outbox);

/**
 * Acknowledges the guild's batch `number` (Redis applied it): the batch is
 * dropped, and the guild goes back on the dirty list if it changed since the
 * batch was taken. A number that is not the guild's batch in flight, or a guild
 * the group no longer holds, is ignored.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle, bad guild id), `EH_SHUT_DOWN`.
 */
eh_status eh_board_group_outbox_ack(struct eh_board_group *g,
                                    const uint8_t *guild_id,
                                    size_t guild_id_len,
                                    uint64_t number);

/**
 * Creates a processor and starts its workers. `config` may be NULL (all defaults).
 * Errors: `EH_INVALID_ARGUMENT` (a field out of range, the message names it),
 * `EH_IO` (a thread could not be started).
 */
eh_status eh_processor_new(const struct eh_processor_config *config, struct eh_processor **out);

/**
 * Closes the processor: calls that start afterwards return `EH_SHUT_DOWN` and
 * change nothing; intake stops (pushes waiting for room return `EH_SHUT_DOWN`);
 * it waits for the calls in progress on other threads to finish; then it drains
 * the ring, delivers every batch (with retries), joins the workers and runs the
 * callbacks' `user_data_free` finalizers. BLOCKS until all of that is done. The
 * handle's memory stays valid until `eh_processor_free`.
 *
 * Thread-safe: may run concurrently with any other call on the handle, including
 * another close (which waits for the first to finish). Idempotent: a later close
 * returns `EH_OK`. From inside one of this processor's own callbacks (on a worker
 * thread): `EH_WOULD_DEADLOCK`, and nothing changes (the handle stays fully
 * usable). NULL: `EH_INVALID_ARGUMENT`.
 */
eh_status eh_processor_close(struct eh_processor *p);

/**
 * Closes the processor if it is not closed (as `eh_processor_close`, BLOCKING until
 * every accepted event is delivered and the workers are joined), then releases the
 * handle. NULL: no-op.
 *
 * It must not run concurrently with, or be followed by, any other call on `p`
 * (the caller's duty: close first if other threads may still be using it).
 *
 * Called from one of this processor's own callbacks (on a worker thread, e.g. the
 * last reference of a binding dropped there), it cannot join the thread it runs
 * on: intake stops, the handle is released, and a detached reaper thread drains,
 * delivers, joins the workers and then runs the `user_data_free` finalizers, after
 * the last callback returned. Nothing accepted is lost; the callback may finish
 * normally but must not use `p` again.
 */
void eh_processor_free(struct eh_processor *p);

/**
 * `eh_processor_close` waiting at most `timeout_ms`: `EH_OK` once closed
 * (everything delivered, workers joined, finalizers run), or `EH_TIMEOUT` while
 * the close is still under way: intake is stopped (every other call returns
 * `EH_SHUT_DOWN`), the workers keep draining and delivering, and a later
 * `eh_processor_close_timeout` or `eh_processor_close` continues it. Lets a
 * binding wait in slices and handle signals (Ctrl-C) between them.
 *
 * Thread-safe and idempotent as `eh_processor_close`: one thread drives the close
 * at a time, the others wait for it within their own timeout. In synchronous
 * mode the final drain delivers on the calling thread and is not bounded by
 * `timeout_ms`. From this processor's own callback: `EH_WOULD_DEADLOCK`, nothing
 * changes. NULL: `EH_INVALID_ARGUMENT`.
 */
eh_status eh_processor_close_timeout(struct eh_processor *p, uint64_t timeout_ms);

/**
 * Blocks until every event accepted before the call has been delivered,
 * dead-lettered or discarded, or `timeout_ms` passes (`EH_TIMEOUT`). A close
 * racing with it does not make it time out: it returns `EH_OK` once the close has
 * delivered those events. From this processor's own callback: `EH_WOULD_DEADLOCK`.
 * After close began: `EH_SHUT_DOWN` (the close delivers everything accepted).
 */
eh_status eh_processor_flush(struct eh_processor *p, uint64_t timeout_ms);

/**
 * Starts a flush: writes to `*ticket` a ticket covering every event accepted
 * before the call, for `eh_processor_flush_wait`. With the pair a caller can wait
 * in short slices (handling signals between them) without each slice starting a
 * new barrier that a steady stream of pushes would keep postponing.
 * `eh_processor_flush(p, ms)` is `flush_start` then one `flush_wait`.
 * Errors as `eh_processor_flush` (`EH_WOULD_DEADLOCK` from this processor's own
 * callback, `EH_SHUT_DOWN` after close began, `EH_POISONED`); `*ticket` is written
 * only on `EH_OK`. Thread-safe.
 */
eh_status eh_processor_flush_start(struct eh_processor *p, uint64_t *ticket);

/**
 * Waits up to `timeout_ms` (0: just check) until every event covered by `ticket`
 * (from `eh_processor_flush_start` on this processor) has been delivered,
 * dead-lettered or discarded: `EH_OK`, or `EH_TIMEOUT` (call again with the same
 * ticket). Any thread may wait for any ticket, several times. In synchronous mode
 * this call sketches and delivers the events, running the callbacks on the
 * calling thread (`timeout_ms` then bounds only the wait for another thread's
 * delivery in progress). A ticket this processor did not issue:
 * `EH_INVALID_ARGUMENT`. Otherwise errors as `eh_processor_flush`. BLOCKS.
 */
eh_status eh_processor_flush_wait(struct eh_processor *p, uint64_t ticket, uint64_t timeout_ms);

/**
 * Sets the flush callback (NULL `cb` removes it: batches are then discarded and
 * counted). `user_data_free`, if not NULL, is called exactly once with `user_data`
 * after the callback's last call (see `eh_free_fn`); with a NULL `cb` at once.
 * Batches already being delivered finish with the previous callback.
 * Errors (nothing changes and `user_data_free` is not called): from this
 * processor's own callback `EH_WOULD_DEADLOCK`; after close began `EH_SHUT_DOWN`.
 */
eh_status eh_processor_set_flush_callback(struct eh_processor *p,
                                          eh_flush_fn cb,
                                          void *user_data,
                                          eh_free_fn user_data_free);

/**
 * Sets the dead-letter callback (NULL removes it; dead-lettered batches are then
 * only counted). Same `user_data` rules as `eh_processor_set_flush_callback`.
 */
eh_status eh_processor_set_dead_letter_callback(struct eh_processor *p,
                                                eh_dead_letter_fn cb,
                                                void *user_data,
                                                eh_free_fn user_data_free);

/**
 * Writes to `*out` how many distinct users were active on the UTC day holding
 * unix second `day_ts` (≤ 0: the processor's day), with `period`
 * `EH_PERIOD_DAY`, or in the 7 (`EH_PERIOD_WEEK`) or 30 (`EH_PERIOD_MONTH`) days
 * ending with it, among the events of guild `guild_id` (`guild_id_len` bytes;
 * NULL or empty: every event). Exact (see "Community analytics" in the
 * preamble). Stickiness is the `EH_PERIOD_DAY` figure over the
 * `EH_PERIOD_MONTH` one.
 *
 * Errors: `EH_INVALID_ARGUMENT` for a day outside the `history_days` ending with
 * the processor's day (the message names the range), an unknown period, a
 * processor without history (`history_days` negative); `EH_SHUT_DOWN`.
 */
eh_status eh_processor_active_users(const struct eh_processor *p,
                                    int64_t day_ts,
                                    int32_t period,
                                    const uint8_t *guild_id,
                                    size_t guild_id_len,
                                    uint64_t *out);

/**
 * Retention cohorts: the `cohorts` periods (`EH_PERIOD_DAY`, or
 * `EH_PERIOD_WEEK`: weeks starting on Monday, UTC) ending with the one holding
 * `now` (≤ 0: the processor's "now"), oldest first, in guild `guild_id` (NULL or
 * empty: every event). For cohort `i`: `starts[i]` is the unix second its period
 * starts at, `sizes[i]` the users first seen in it, and `active[i * cohorts +
 * k]` how many of them were active in the `k`-th period after it, for `k` from 0
 * (`== sizes[i]`) to `cohorts - 1 - i` (the period holding `now`); the rest of
 * the row is 0. The arrays hold `cohorts`, `cohorts` and `cohorts * cohorts`
 * values. Exact; a cohort reaching before the history is refused.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL array, `cohorts` 0 or above
 * `EH_MAX_COHORTS` or reaching before the history, an unknown period),
 * `EH_SHUT_DOWN`.
 */
eh_status eh_processor_retention(const struct eh_processor *p,
                                 int32_t period,
                                 uint32_t cohorts,
                                 int64_t now,
                                 const uint8_t *guild_id,
                                 size_t guild_id_len,
                                 int64_t *starts,
                                 uint64_t *sizes,
                                 uint64_t *active);

/**
 * Activity heatmap: writes to `out` (`7 * 24` values) the events of each UTC
 * hour (`out[weekday * 24 + hour]`, Monday = 0) over the `days` days ending with
 * the day of `now` (≤ 0: the processor's "now"), in channel `channel_id` (NULL:
 * all channels; a non-NULL pointer with length 0 is the channel "") and guild
 * `guild_id` (NULL or empty: every event). Exact.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL `out`, `days` 0 or above `history_days`),
 * `EH_SHUT_DOWN`.
 */
eh_status eh_processor_heatmap(const struct eh_processor *p,
                               uint32_t days,
                               int64_t now,
                               const uint8_t *channel_id,
                               size_t channel_id_len,
                               const uint8_t *guild_id,
                               size_t guild_id_len,
                               uint64_t *out);

/**
 * Reads the daily history's size into `*out` (walks the guilds: not for every
 * event).
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL `out`, bad `struct_size`), `EH_SHUT_DOWN`.
 */
eh_status eh_processor_history_stats(const struct eh_processor *p, struct eh_history_stats *out);

/**
 * Writes to `counts[i]` the number of events the processor's per-minute ring holds
 * for the minute starting at unix second `first_minute_start + 60 * i`
 * (`first_minute_start` is rounded down to a minute), for `i < n`; 0 for a minute
 * the ring does not hold (older than the window, or its slot reused by a later
 * minute). A minute's count only grows while the ring holds it, and grows with
 * every event processed into it, so a publisher compares it with the count it saw
 * last and reads only the minutes that changed.
 *
 * `counts` must have room for `n` values (`n == 0` allows NULL); `n` is at most
 * 10080 (one week of minutes), else `EH_INVALID_ARGUMENT`. Nothing is written on
 * failure. Counts are of processed events (`eh_processor_flush` waits for those).
 *
 * Thread safety: like every query (any thread, concurrently with pushes); it
 * briefly takes each worker's sketch lock, as the other analytics queries do.
 */
eh_status eh_processor_minute_events(const struct eh_processor *p,
                                     int64_t first_minute_start,
                                     size_t n,
                                     uint64_t *counts);

/**
 * The publisher's identity: the one kept (in the journal, if any), or, the first
 * time, `proposed` (1 to 256 bytes), which is kept (and logged) from then on.
 * Copied out as `eh_leaderboard_publisher_id` copies it (`*needed` always set;
 * `buf` written when `cap >= *needed`). In a forked child the inherited identity
 * is gone: propose a new one.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle or `needed`, a proposal of a bad
 * length when none is kept), `EH_IO` (the journal could not log it),
 * `EH_SHUT_DOWN`.
 */
eh_status eh_processor_publisher_id(const struct eh_processor *p,
                                    const uint8_t *proposed,
                                    size_t proposed_len,
                                    uint8_t *buf,
                                    size_t cap,
                                    size_t *needed);

/**
 * Puts a batch (`len` bytes) in the outbox under the next number, written to
 * `*number`. Logged before it is put: on `EH_IO` nothing was.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle or `number`), `EH_IO`,
 * `EH_SHUT_DOWN`.
 */
eh_status eh_processor_outbox_put(const struct eh_processor *p,
                                  const uint8_t *batch,
                                  size_t len,
                                  uint64_t *number);

/**
 * The oldest batch waiting: its number in `*number` (0 when none waits) and its
 * bytes copied out as `eh_processor_publisher_id` copies (`*needed` always set).
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle or out-param), `EH_SHUT_DOWN`.
 */
eh_status eh_processor_outbox_pending(const struct eh_processor *p,
                                      uint64_t *number,
                                      uint8_t *buf,
                                      size_t cap,
                                      size_t *needed);

/**
 * Acknowledges batch `number` (Redis applied it; older ones too) and keeps
 * `baseline` (`len` bytes) as the baseline. Logged first: on `EH_IO` nothing
 * changed.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle), `EH_IO`, `EH_SHUT_DOWN`.
 */
eh_status eh_processor_outbox_ack(const struct eh_processor *p,
                                  uint64_t number,
                                  const uint8_t *baseline,
                                  size_t len);

/**
 * The daily history's part of waiting batch `number` (what the history had
 * gathered for Redis when the batch was put: activations and heat deltas, in the
 * format of the Python publisher's scripts; empty when nothing), copied out as
 * `eh_processor_publisher_id` copies. Only with `publish_history` set.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle or `needed`; no batch waits under
 * `number`), `EH_SHUT_DOWN`.
 */
eh_status eh_processor_outbox_history(const struct eh_processor *p,
                                      uint64_t number,
                                      uint8_t *buf,
                                      size_t cap,
                                      size_t *needed);

/**
 * The kept baseline (empty at first), copied out as `eh_processor_publisher_id`
 * copies.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle or `needed`), `EH_SHUT_DOWN`.
 */
eh_status eh_processor_outbox_baseline(const struct eh_processor *p,
                                       uint8_t *buf,
                                       size_t cap,
                                       size_t *needed);

/**
 * Why the journal stopped being written or its last sync failed
 * (`journal_failing` in the stats), copied out as `eh_processor_publisher_id`
 * copies; `*needed` is 0 when nothing failed.
 *
 * Errors: `EH_INVALID_ARGUMENT` (NULL handle or `needed`), `EH_SHUT_DOWN`.
 */
eh_status eh_processor_journal_error(const struct eh_processor *p,
                                     uint8_t *buf,
                                     size_t cap,
                                     size_t *needed);

/**
 * Offers one event: `kind`, `user_id`, `channel_id` are UTF-8 (≤ 1024 bytes each),
 * `timestamp` is unix seconds (≤ 0: the processor's "now"), `payload` (may be NULL
 * with `payload_len` 0, ≤ 1 MiB) is carried unchanged to the flush callback.
 * Copies everything before returning. Never blocks under `EH_OVERFLOW_DROP_NEWEST`.
 *
 * A `timestamp` later than the wall clock plus `max_future_skew_secs` is refused
 * with `EH_INVALID_ARGUMENT` and counted in `future_refused`.
 *
 * Errors: `EH_QUEUE_FULL` (dropped and counted), `EH_SHUT_DOWN` (close has begun:
 * a push racing with `eh_processor_close` is either accepted, and then delivered
 * by the close, or refused with this), `EH_INVALID_ARGUMENT`, `EH_POISONED`.
 */
eh_status eh_processor_push(struct eh_processor *p,
                            const uint8_t *kind,
                            size_t kind_len,
                            const uint8_t *user_id,
                            size_t user_id_len,
                            const uint8_t *channel_id,
                            size_t channel_id_len,
                            int64_t timestamp,
                            const uint8_t *payload,
                            size_t payload_len);

/**
 * Offers one event given as an `eh_event` (with its `guild_id`, which
 * `eh_processor_push` cannot carry): as `eh_processor_push` otherwise (same
 * errors, everything copied before returning).
 */
eh_status eh_processor_push_event(struct eh_processor *p, const struct eh_event *event);

/**
 * `eh_processor_push_event` waiting for room in slices, as
 * `eh_processor_push_wait` does.
 */
eh_status eh_processor_push_event_wait(struct eh_processor *p,
                                       const struct eh_event *event,
                                       uint64_t wait_ms,
                                       int32_t give_up);

/**
 * `eh_processor_push` for a caller that waits for room in slices, e.g. a binding
 * that handles signals (Ctrl-C) between them. Under `EH_OVERFLOW_BLOCK`, waits
 * at most `wait_ms` for room (instead of `block_timeout_ms`); if none came:
 * with `give_up` non-zero the event is dropped and counted (`EH_QUEUE_FULL`),
 * with `give_up` 0 it returns `EH_TIMEOUT` and nothing was pushed or counted
 * (call again, with `give_up` set on the last try). Under
 * `EH_OVERFLOW_DROP_NEWEST` it is `eh_processor_push`. Other errors and the
 * copying rules as `eh_processor_push`. Thread-safe.
 */
eh_status eh_processor_push_wait(struct eh_processor *p,
                                 const uint8_t *kind,
                                 size_t kind_len,
                                 const uint8_t *user_id,
                                 size_t user_id_len,
                                 const uint8_t *channel_id,
                                 size_t channel_id_len,
                                 int64_t timestamp,
                                 const uint8_t *payload,
                                 size_t payload_len,
                                 uint64_t wait_ms,
                                 int32_t give_up);

/**
 * Offers `n` events in order and writes how many were accepted to `*accepted`,
 * on every return (unlike other out-params): the accepted ones are always the
 * first `*accepted`, and they will be delivered whatever the status, so a retry
 * must resend only the rest. After the first refusal of a full ring the rest are
 * dropped and counted; a short count is not an error: the call returns `EH_OK`.
 * Every event is validated first: one invalid event (or one too far in the
 * future) fails the call (`EH_INVALID_ARGUMENT`, `*accepted` = 0) with nothing
 * pushed. `EH_SHUT_DOWN` with `*accepted` > 0: close began partway through.
 */
eh_status eh_processor_push_batch(struct eh_processor *p,
                                  const struct eh_event *events,
                                  size_t n,
                                  size_t *accepted);

/**
 * `eh_processor_push_batch` for a caller that waits for room in slices, as
 * `eh_processor_push_wait` does for one event (e.g. a binding that handles
 * Ctrl-C between slices). Under `EH_OVERFLOW_BLOCK`, a full ring is waited for
 * at most `wait_ms` in all (instead of `block_timeout_ms`); if no room came, with
 * `give_up` non-zero the rest is dropped and counted (`EH_OK`), with `give_up` 0
 * the call returns `EH_TIMEOUT` and the rest was neither pushed nor counted
 * (call again with the events after the first `*accepted`, with `give_up` set
 * on the last try). `*accepted` is written on every return, as by
 * `eh_processor_push_batch`; under `EH_OVERFLOW_DROP_NEWEST` it is
 * `eh_processor_push_batch`. Thread-safe.
 */
eh_status eh_processor_push_batch_wait(struct eh_processor *p,
                                       const struct eh_event *events,
                                       size_t n,
                                       size_t *accepted,
                                       uint64_t wait_ms,
                                       int32_t give_up);

/**
 * Reads the counters into `*out`.
 */
eh_status eh_processor_get_stats(const struct eh_processor *p, struct eh_processor_stats *out);

/**
 * Writes the processor's "now" (unix seconds) to `*out`: the wall clock, or under
 * `EH_CLOCK_EVENT_TIME` the newest event timestamp processed (the wall clock
 * before any).
 */
eh_status eh_processor_now(const struct eh_processor *p, int64_t *out);

/**
 * Estimated distinct users (HyperLogLog, ±0.81% standard error, near exact below a
 * few hundred) in the `window_secs` before `now`: `now` ≤ 0 means the processor's
 * clock, `window_secs` ≤ 0 means all time; the window is rounded up to whole
 * minutes. A window longer than the configured `window_minutes` is refused with
 * `EH_INVALID_ARGUMENT` (the message names the limit). Events are counted once a
 * worker has processed them (`eh_processor_flush` waits for that).
 */
eh_status eh_processor_unique_users(const struct eh_processor *p,
                                    int64_t window_secs,
                                    int64_t now,
                                    uint64_t *out);

/**
 * The sketch behind `eh_processor_unique_users` as a new `eh_hll` (free it with
 * `eh_hll_free`), to merge with other processes' sketches. Same window rules.
 */
eh_status eh_processor_users_sketch(const struct eh_processor *p,
                                    int64_t window_secs,
                                    int64_t now,
                                    struct eh_hll **out);

/**
 * The `k` busiest channels over the window (`window_secs` ≤ 0: all time; `now` ≤ 0:
 * the processor's clock) from the bounded Space-Saving summaries, into `*out`;
 * release with `eh_channel_list_free`. Counts are upper bounds, exact for channels
 * well above the summary's floor; ties: higher count first, then channel id
 * bytes ascending. A window longer than the configured `window_minutes` is
 * refused with `EH_INVALID_ARGUMENT`.
 *
 * Staleness: answers come from a merge of the workers' summaries that is cached
 * per window (and minute of `now`), reused as long as no event has been
 * sketched since it was computed (it is then exact) and otherwise for up to
 * `flush_interval_ms`: a result reflects the events sketched as of at most
 * `flush_interval_ms` ago, and is exact after `eh_processor_flush` returns
 * `EH_OK`. A cached query costs about a microsecond whatever the number of
 * workers; the first query after new events were sketched and the interval
 * passed (or a flush delivered them) pays the merge. Memory stays bounded (a few
 * cached answers of at most the summaries' capacity each).
 */
eh_status eh_processor_top_channels(const struct eh_processor *p,
                                    size_t k,
                                    int64_t window_secs,
                                    int64_t now,
                                    struct eh_channel_list *out);

/**
 * All-time events in `channel` by the Count-Min sketch: never below the true
 * count, above it by at most e/width of all events with high probability.
 */
eh_status eh_processor_channel_count(const struct eh_processor *p,
                                     const uint8_t *channel,
                                     size_t channel_len,
                                     uint64_t *out);

/**
 * Releases a list filled by `eh_processor_top_channels` and zeroes `*list`.
 * NULL, a zeroed struct and a second call are no-ops.
 */
void eh_channel_list_free(struct eh_channel_list *list);

/**
 * Creates an empty HyperLogLog into `*out`.
 */
eh_status eh_hll_new(struct eh_hll **out);

/**
 * Frees a HyperLogLog. NULL: no-op. No other call may use `hll` during or after
 * this one (the caller's duty).
 */
void eh_hll_free(struct eh_hll *hll);

/**
 * Adds one item (any bytes; `len == 0` is the empty item).
 */
eh_status eh_hll_add(struct eh_hll *hll, const uint8_t *item, size_t len);

/**
 * Merges `src` into `dst` (the union of both streams). `src` is unchanged; `dst ==
 * src` is allowed.
 */
eh_status eh_hll_merge(struct eh_hll *dst, const struct eh_hll *src);

/**
 * Writes the estimated number of distinct items to `*out`.
 */
eh_status eh_hll_count(const struct eh_hll *hll, uint64_t *out);

/**
 * Resets to empty.
 */
eh_status eh_hll_clear(struct eh_hll *hll);

/**
 * Serializes into `buf` (capacity `cap`): versioned (format version 2), with a
 * checksum; 16400 bytes. `*needed` is always set; `buf` is written only when `cap >=
 * *needed` (the call succeeds either way: retry with a larger buffer).
 */
eh_status eh_hll_serialize(const struct eh_hll *hll, uint8_t *buf, size_t cap, size_t *needed);

/**
 * Creates a HyperLogLog from `eh_hll_serialize` bytes into `*out`. Bad magic,
 * version, length, register values or checksum: `EH_CORRUPT`, nothing created.
 * Bytes of format version 1 (written before the hash became Redis's) are refused
 * with `EH_CORRUPT` naming the version: their registers hash differently and
 * merging them would be wrong; rebuild such sketches from their items.
 */
eh_status eh_hll_deserialize(const uint8_t *bytes, size_t len, struct eh_hll **out);

/**
 * Writes the sketch as the value of a Redis HyperLogLog key into `buf` (capacity
 * `cap`): Redis's dense encoding, 12304 bytes (the 16-byte header `HYLL`, encoding
 * 0, three zero bytes, the cached cardinality marked stale; then 16384 six-bit
 * registers, LSB first). `SET key <bytes>` in Redis 7 and `PFCOUNT`, `PFADD` and
 * `PFMERGE` treat it as their own. `*needed` is always set; `buf` is written only
 * when `cap >= *needed` (the call succeeds either way: retry with a larger buffer).
 */
eh_status eh_hll_to_redis(const struct eh_hll *hll, uint8_t *buf, size_t cap, size_t *needed);

/**
 * Creates a HyperLogLog into `*out` from the value of a Redis HyperLogLog key (as
 * `GET` returns it): the dense or the sparse encoding of Redis 7, e.g. a key built
 * by `PFADD` or `PFMERGE`. The cached cardinality in the header is ignored. Anything
 * else (wrong magic, an unknown encoding byte, non-zero reserved bytes, a dense
 * value that is not exactly 12304 bytes or holds a register above 51, sparse opcodes
 * that do not cover exactly 16384 registers): `EH_CORRUPT` with a message naming the
 * problem, nothing created and `*out` unchanged.
 */
eh_status eh_hll_from_redis(const uint8_t *bytes, size_t len, struct eh_hll **out);

/**
 * Creates a Count-Min sketch of `depth` rows (1..=16; 0 = 4) and `width` columns
 * (1..=16777216; 0 = 2048) into `*out`.
 */
eh_status eh_cms_new(uint32_t depth, uint32_t width, struct eh_cms **out);

/**
 * Frees a Count-Min sketch. NULL: no-op. No other call may use `cms` during or
 * after this one (the caller's duty).
 */
void eh_cms_free(struct eh_cms *cms);

/**
 * Adds `count` occurrences of `item` (counters saturate at 2^64 − 1).
 */
eh_status eh_cms_add(struct eh_cms *cms, const uint8_t *item, size_t len, uint64_t count);

/**
 * Writes the estimated count of `item` to `*out` (never below the true count).
 */
eh_status eh_cms_estimate(const struct eh_cms *cms, const uint8_t *item, size_t len, uint64_t *out);

/**
 * Writes the total of all counts added (and merged) to `*out`.
 */
eh_status eh_cms_total(const struct eh_cms *cms, uint64_t *out);

/**
 * Adds `src`'s counts into `dst`. Different dimensions: `EH_INVALID_ARGUMENT`,
 * `dst` unchanged. `dst == src` doubles every count.
 */
eh_status eh_cms_merge(struct eh_cms *dst, const struct eh_cms *src);

/**
 * Resets every counter to zero.
 */
eh_status eh_cms_clear(struct eh_cms *cms);

/**
 * Serializes into `buf` (capacity `cap`), versioned with a checksum. `*needed` is
 * always set; `buf` is written only when `cap >= *needed`.
 */
eh_status eh_cms_serialize(const struct eh_cms *cms, uint8_t *buf, size_t cap, size_t *needed);

/**
 * Creates a Count-Min sketch from `eh_cms_serialize` bytes into `*out`. Anything
 * malformed: `EH_CORRUPT`, nothing created.
 */
eh_status eh_cms_deserialize(const uint8_t *bytes, size_t len, struct eh_cms **out);

/**
 * **For language bindings.** The functions from here to the end of the header
 * exist so that bindings (the Python package) can cross the boundary with fewer,
 * cheaper arguments; C and C++ callers have no reason to use them and should use
 * `eh_processor_push`, `eh_processor_push_batch` and the `eh_event` array their
 * flush callback receives. They follow the same rules as those functions.
 *
 * Offers one event given as `kind NUL user_id NUL channel_id`, optionally followed
 * by `NUL guild_id` (UTF-8, two or three NUL bytes, so no field may contain one):
 * the cheap single push for bindings, one string argument instead of three or
 * four. Otherwise as `eh_processor_push` (no payload).
 */
eh_status eh_processor_push_fields(struct eh_processor *p,
                                   const uint8_t *fields,
                                   size_t fields_len,
                                   int64_t timestamp);

/**
 * Offers `n` events given as three columns, the cheapest batch form for bindings
 * that hold events as rows of objects (transposing them runs at C speed, and
 * each column is one join): `kinds`, `user_ids` and `channel_ids` each hold `n`
 * UTF-8 fields separated by single NUL bytes (so no field may contain a NUL);
 * `timestamps` is NULL (all "now") or `n` values. A column with another number
 * of fields fails with `EH_INVALID_ARGUMENT` and nothing pushed. Same acceptance
 * rules and `*accepted` (written on every return) as `eh_processor_push_batch`;
 * events carry no payload.
 */
eh_status eh_processor_push_columns(struct eh_processor *p,
                                    const uint8_t *kinds,
                                    size_t kinds_len,
                                    const uint8_t *user_ids,
                                    size_t user_ids_len,
                                    const uint8_t *channel_ids,
                                    size_t channel_ids_len,
                                    const int64_t *timestamps,
                                    size_t n,
                                    size_t *accepted);

/**
 * Packs `n` events (from a flush callback) as columns for bindings: writes into
 * `buf` (capacity `cap`) the `3 * n` fields separated by single NUL bytes (kinds,
 * then user ids, then channel ids), sets `*needed` to the bytes required, and, if
 * `timestamps` is not NULL, the `n` timestamps. If `cap < *needed` nothing is
 * written to `buf` and the call still returns `EH_OK`: grow the buffer and call
 * again. A field containing a NUL byte cannot be packed: `EH_INVALID_ARGUMENT`
 * (read the events one by one instead).
 */
eh_status eh_events_columns(const struct eh_event *events,
                            size_t n,
                            uint8_t *buf,
                            size_t cap,
                            size_t *needed,
                            int64_t *timestamps);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* ENGAGEHUB_H */
