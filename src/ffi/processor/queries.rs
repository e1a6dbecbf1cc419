//! Counters and analytics queries: stats, clock, unique users, trending channels.

use std::ffi::c_void;

use super::super::sketch::eh_hll;
use super::super::{eh_status, guard, out_arg, str_arg, write_out};
use super::{eh_processor, processor};
use crate::ffi::sized::{versioned, write_sized};

// The first version ended with `queue_len`.
versioned!(eh_processor_stats, future_refused);
use crate::pipeline::ProcessorStats;

/// Counters from `eh_processor_get_stats` (relaxed reads: cheap to poll). Set
/// `struct_size` to `sizeof(eh_processor_stats)` before the call: the library
/// writes no more than that (an older caller gets the fields it knows) and sets it
/// to what it wrote.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct eh_processor_stats {
    /// In: `sizeof(eh_processor_stats)` as the caller's header declares it. Out:
    /// the bytes written.
    pub struct_size: usize,
    /// Events offered (accepted + dropped).
    pub pushed: u64,
    /// Events placed in the ring.
    pub accepted: u64,
    /// Events refused because the ring was full.
    pub dropped: u64,
    /// Events taken by the workers and sketched.
    pub processed: u64,
    /// Events in batches the flush callback accepted (returned 0).
    pub delivered: u64,
    /// Events in batches dropped because no flush callback was set.
    pub discarded: u64,
    /// Batches the flush callback accepted.
    pub batches: u64,
    /// Failed flush attempts.
    pub failures: u64,
    /// Retries of failed flushes.
    pub retries: u64,
    /// Events handed to the dead-letter callback after the last retry failed.
    pub dead_lettered: u64,
    /// Batches handed to the dead-letter callback.
    pub dead_letter_batches: u64,
    /// Events waiting in the ring.
    pub queue_len: u64,
    /// Events refused because their timestamp was later than the wall clock plus
    /// `max_future_skew_secs`.
    pub future_refused: u64,
    /// Journal: bytes logged since the last checkpoint (0 without a journal).
    pub journal_bytes: u64,
    /// Journal: checkpoints written since the processor was opened.
    pub journal_checkpoints: u64,
    /// Journal: records replayed when the processor was opened.
    pub journal_replayed: u64,
    /// Journal: torn tails truncated when the processor was opened.
    pub journal_torn: u64,
    /// Journal: 1 when the journal stopped being written (a full disk: the
    /// processor goes on in memory) or its last sync failed;
    /// `eh_processor_journal_error` says why.
    pub journal_failing: u64,
    /// Publishing: batches put in the outbox and not yet acknowledged.
    pub outbox_waiting: u64,
}

/// One row of an [`eh_channel_list`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct eh_channel_row {
    /// Estimated events in the channel (an upper bound; exact for heavy hitters).
    pub count: u64,
    /// Offset of the channel id in `eh_channel_list.ids` (followed by a NUL).
    pub id_offset: u64,
    /// Length in bytes of the channel id (UTF-8), not counting the NUL.
    pub id_len: u64,
}

/// Trending channels, owned by the library until `eh_channel_list_free`. Same
/// layout rules as `eh_ranking`: row `i` names the `rows[i].id_len` bytes at
/// `ids + rows[i].id_offset`; rows and ids are one block of `size` bytes.
#[repr(C)]
#[derive(Debug)]
pub struct eh_channel_list {
    /// Number of rows.
    pub len: usize,
    /// `len` rows, busiest first (ties by channel id).
    pub rows: *const eh_channel_row,
    /// The channel ids, back to back.
    pub ids: *const u8,
    /// Bytes from `rows` to the end of the ids.
    pub size: usize,
    /// Library-private; do not touch.
    pub owner: *mut c_void,
}

/// Reads the counters into `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_get_stats(
    p: *const eh_processor,
    out: *mut eh_processor_stats,
) -> eh_status {
    guard("eh_processor_get_stats", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        let out = out_arg(out, "out")?;
        let s: ProcessorStats = processor.stats()?;
        let stats = eh_processor_stats {
            struct_size: 0,
            pushed: s.pushed,
            accepted: s.accepted,
            dropped: s.dropped,
            processed: s.processed,
            delivered: s.delivered,
            discarded: s.discarded,
            batches: s.batches,
            failures: s.failures,
            retries: s.retries,
            dead_lettered: s.dead_lettered,
            dead_letter_batches: s.dead_letter_batches,
            queue_len: s.queue_len,
            future_refused: s.future_refused,
            journal_bytes: s.journal_bytes,
            journal_checkpoints: s.journal_checkpoints,
            journal_replayed: s.journal_replayed,
            journal_torn: s.journal_torn,
            journal_failing: s.journal_failing,
            outbox_waiting: s.outbox_waiting,
        };
        // SAFETY: checked by `out_arg`; writable for its `struct_size` bytes per
        // the contract.
        unsafe { write_sized(out, stats) }
    })
}

/// Writes the processor's "now" (unix seconds) to `*out`: the wall clock, or under
/// `EH_CLOCK_EVENT_TIME` the newest event timestamp processed (the wall clock
/// before any).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_now(p: *const eh_processor, out: *mut i64) -> eh_status {
    guard("eh_processor_now", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        let out = out_arg(out, "out")?;
        let now = processor.now()?;
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, now) };
        Ok(())
    })
}

/// Estimated distinct users (HyperLogLog, ±0.81% standard error, near exact below a
/// few hundred) in the `window_secs` before `now`: `now` ≤ 0 means the processor's
/// clock, `window_secs` ≤ 0 means all time; the window is rounded up to whole
/// minutes. A window longer than the configured `window_minutes` is refused with
/// `EH_INVALID_ARGUMENT` (the message names the limit). Events are counted once a
/// worker has processed them (`eh_processor_flush` waits for that).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_unique_users(
    p: *const eh_processor,
    window_secs: i64,
    now: i64,
    out: *mut u64,
) -> eh_status {
    guard("eh_processor_unique_users", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        let out = out_arg(out, "out")?;
        let n = processor.unique_users(window_secs, now)?;
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, n) };
        Ok(())
    })
}

/// The sketch behind `eh_processor_unique_users` as a new `eh_hll` (free it with
/// `eh_hll_free`), to merge with other processes' sketches. Same window rules.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_users_sketch(
    p: *const eh_processor,
    window_secs: i64,
    now: i64,
    out: *mut *mut eh_hll,
) -> eh_status {
    guard("eh_processor_users_sketch", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        let out = out_arg(out, "out")?;
        let hll = processor.users_sketch(window_secs, now)?;
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, eh_hll::boxed(hll)) };
        Ok(())
    })
}

/// The `k` busiest channels over the window (`window_secs` ≤ 0: all time; `now` ≤ 0:
/// the processor's clock) from the bounded Space-Saving summaries, into `*out`;
/// release with `eh_channel_list_free`. Counts are upper bounds, exact for channels
/// well above the summary's floor; ties: higher count first, then channel id
/// bytes ascending. A window longer than the configured `window_minutes` is
/// refused with `EH_INVALID_ARGUMENT`.
///
/// Staleness: answers come from a merge of the workers' summaries that is cached
/// per window (and minute of `now`), reused as long as no event has been
/// sketched since it was computed (it is then exact) and otherwise for up to
/// `flush_interval_ms`: a result reflects the events sketched as of at most
/// `flush_interval_ms` ago, and is exact after `eh_processor_flush` returns
/// `EH_OK`. A cached query costs about a microsecond whatever the number of
/// workers; the first query after new events were sketched and the interval
/// passed (or a flush delivered them) pays the merge. Memory stays bounded (a few
/// cached answers of at most the summaries' capacity each).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_top_channels(
    p: *const eh_processor,
    k: usize,
    window_secs: i64,
    now: i64,
    out: *mut eh_channel_list,
) -> eh_status {
    guard("eh_processor_top_channels", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        let out = out_arg(out, "out")?;
        let (top, n) = processor.top_channels_shared(k, window_secs, now)?;
        let rows: Vec<([u64; 3], &str)> = top[..n]
            .iter()
            .map(|c| ([c.count, 0, 0], c.channel.as_str()))
            .collect();
        let packed = super::super::rows::pack(&rows);
        let list = eh_channel_list {
            len: packed.len,
            // `eh_channel_row` is three 8-byte fields, the packed row layout.
            rows: packed.rows.cast::<eh_channel_row>(),
            ids: packed.ids,
            size: packed.size,
            owner: packed.owner,
        };
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, list) };
        Ok(())
    })
}

/// All-time events in `channel` by the Count-Min sketch: never below the true
/// count, above it by at most e/width of all events with high probability.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_channel_count(
    p: *const eh_processor,
    channel: *const u8,
    channel_len: usize,
    out: *mut u64,
) -> eh_status {
    guard("eh_processor_channel_count", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        let out = out_arg(out, "out")?;
        // SAFETY: per the module contract.
        let channel = unsafe { str_arg(channel, channel_len, "channel")? };
        let n = processor.channel_count(channel)?;
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, n) };
        Ok(())
    })
}

/// Releases a list filled by `eh_processor_top_channels` and zeroes `*list`.
/// NULL, a zeroed struct and a second call are no-ops.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_channel_list_free(list: *mut eh_channel_list) {
    super::super::rows::release_list!("eh_channel_list_free", list);
}
