//! `eh_processor`: the event pipeline through the C ABI.
//!
//! Handle model: `eh_processor_close` is thread-safe (calls in progress finish or
//! get `EH_SHUT_DOWN`, later ones get `EH_SHUT_DOWN`; the core's gate lives in the
//! handle's shell, which stays valid until `eh_processor_free`); `eh_processor_free`
//! closes and releases the shell and must be the last call on the handle.
//!
//! Files: `config` (settings), `push` (intake), `callbacks` (flush and dead
//! letter), `queries` (stats and analytics), `history` (active users, cohorts,
//! heatmaps), `minutes` (per-minute read-out for publishers), `outbox` (the
//! Redis publisher's); this file: create, flush, close, free.

mod callbacks;
mod config;
mod history;
mod minutes;
mod outbox;
mod push;
mod queries;
#[cfg(test)]
mod tests;

use std::time::Duration;

use super::{eh_status, guard, guard_free, handle, out_arg, write_out};
use crate::error::Result;
use crate::pipeline::Processor;

pub use super::binding::{eh_events_columns, eh_processor_push_columns, eh_processor_push_fields};
pub use callbacks::{
    eh_dead_letter_fn, eh_flush_fn, eh_free_fn, eh_processor_set_dead_letter_callback,
    eh_processor_set_flush_callback,
};
pub use config::{
    EH_CLOCK_EVENT_TIME, EH_CLOCK_WALL, EH_OVERFLOW_BLOCK, EH_OVERFLOW_DROP_NEWEST,
    EH_WORKERS_NONE, eh_processor_config,
};
pub use history::{
    EH_MAX_COHORTS, EH_PERIOD_DAY, EH_PERIOD_MONTH, EH_PERIOD_WEEK, eh_history_stats,
    eh_processor_active_users, eh_processor_heatmap, eh_processor_history_stats,
    eh_processor_retention,
};
pub use minutes::eh_processor_minute_events;
pub use outbox::{
    eh_processor_journal_error, eh_processor_outbox_ack, eh_processor_outbox_baseline,
    eh_processor_outbox_history, eh_processor_outbox_pending, eh_processor_outbox_put,
    eh_processor_publisher_id,
};
pub use push::{
    eh_processor_push, eh_processor_push_batch, eh_processor_push_batch_wait,
    eh_processor_push_event, eh_processor_push_event_wait, eh_processor_push_wait,
};
pub use queries::{
    eh_channel_list, eh_channel_list_free, eh_channel_row, eh_processor_channel_count,
    eh_processor_get_stats, eh_processor_now, eh_processor_stats, eh_processor_top_channels,
    eh_processor_unique_users, eh_processor_users_sketch,
};

/// An event pipeline (opaque): a bounded lock-free ring drained by worker threads
/// that update the sketches and hand batches to the flush callback.
///
/// Create with `eh_processor_new`; stop with `eh_processor_close` (drains and
/// delivers; the handle stays valid and every later call returns `EH_SHUT_DOWN`);
/// release with `eh_processor_free` (closes first if needed).
///
/// Fork: a processor survives `fork()`. In the child, the first call on it
/// rebuilds it: a fresh ring and fresh workers, the same configuration and
/// callbacks, counters and sketches empty. Events still queued in the parent are
/// the parent's to deliver; the parent's ring, locks and threads are abandoned in
/// the child (leaked, never joined or unlocked). The parent is unaffected.
///
/// Thread safety: every function may be called from any number of threads at
/// once, and `eh_processor_close` may run concurrently with any of them (and with
/// another close): calls in progress finish (a push is then delivered by the
/// close) or return `EH_SHUT_DOWN`, and calls that start after it began return
/// `EH_SHUT_DOWN`. `eh_processor_free` must not run concurrently with, or be
/// followed by, any other call on the handle.
pub struct eh_processor {
    processor: Processor,
}

/// Borrows the processor of a handle.
///
/// # Safety
/// `p` is NULL or a live handle (the module's contract).
pub(crate) unsafe fn processor<'a>(p: *const eh_processor) -> Result<&'a Processor> {
    // SAFETY: forwarded from this function's contract.
    Ok(&unsafe { handle(p, "processor")? }.processor)
}

/// Creates a processor and starts its workers. `config` may be NULL (all defaults).
/// Errors: `EH_INVALID_ARGUMENT` (a field out of range, the message names it),
/// `EH_IO` (a thread could not be started).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_new(
    config: *const eh_processor_config,
    out: *mut *mut eh_processor,
) -> eh_status {
    guard("eh_processor_new", || {
        let out = out_arg(out, "out")?;
        // SAFETY: NULL or a config of its `struct_size` bytes, per the contract.
        let config = unsafe { config::config_from(config)? };
        let p = Box::new(eh_processor {
            processor: Processor::new(config)?,
        });
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, Box::into_raw(p)) };
        Ok(())
    })
}

/// Closes the processor: calls that start afterwards return `EH_SHUT_DOWN` and
/// change nothing; intake stops (pushes waiting for room return `EH_SHUT_DOWN`);
/// it waits for the calls in progress on other threads to finish; then it drains
/// the ring, delivers every batch (with retries), joins the workers and runs the
/// callbacks' `user_data_free` finalizers. BLOCKS until all of that is done. The
/// handle's memory stays valid until `eh_processor_free`.
///
/// Thread-safe: may run concurrently with any other call on the handle, including
/// another close (which waits for the first to finish). Idempotent: a later close
/// returns `EH_OK`. From inside one of this processor's own callbacks (on a worker
/// thread): `EH_WOULD_DEADLOCK`, and nothing changes (the handle stays fully
/// usable). NULL: `EH_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_close(p: *mut eh_processor) -> eh_status {
    guard("eh_processor_close", || {
        // SAFETY: per the module contract; the shell outlives every call but free.
        unsafe { processor(p)? }.close()
    })
}

/// Closes the processor if it is not closed (as `eh_processor_close`, BLOCKING until
/// every accepted event is delivered and the workers are joined), then releases the
/// handle. NULL: no-op.
///
/// It must not run concurrently with, or be followed by, any other call on `p`
/// (the caller's duty: close first if other threads may still be using it).
///
/// Called from one of this processor's own callbacks (on a worker thread, e.g. the
/// last reference of a binding dropped there), it cannot join the thread it runs
/// on: intake stops, the handle is released, and a detached reaper thread drains,
/// delivers, joins the workers and then runs the `user_data_free` finalizers, after
/// the last callback returned. Nothing accepted is lost; the callback may finish
/// normally but must not use `p` again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_free(p: *mut eh_processor) {
    if p.is_null() {
        return;
    }
    guard_free("eh_processor_free", || {
        // SAFETY: created by `Box::into_raw` in `eh_processor_new`; the contract
        // makes this the last call on it. Dropping the processor closes it (or, on
        // its own worker, hands the close to a reaper thread).
        drop(unsafe { Box::from_raw(p) });
    })
}

/// `eh_processor_close` waiting at most `timeout_ms`: `EH_OK` once closed
/// (everything delivered, workers joined, finalizers run), or `EH_TIMEOUT` while
/// the close is still under way: intake is stopped (every other call returns
/// `EH_SHUT_DOWN`), the workers keep draining and delivering, and a later
/// `eh_processor_close_timeout` or `eh_processor_close` continues it. Lets a
/// binding wait in slices and handle signals (Ctrl-C) between them.
///
/// Thread-safe and idempotent as `eh_processor_close`: one thread drives the close
/// at a time, the others wait for it within their own timeout. In synchronous
/// mode the final drain delivers on the calling thread and is not bounded by
/// `timeout_ms`. From this processor's own callback: `EH_WOULD_DEADLOCK`, nothing
/// changes. NULL: `EH_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_close_timeout(
    p: *mut eh_processor,
    timeout_ms: u64,
) -> eh_status {
    guard("eh_processor_close_timeout", || {
        // SAFETY: per the module contract; the shell outlives every call but free.
        unsafe { processor(p)? }.close_timeout(Some(Duration::from_millis(timeout_ms)))
    })
}

/// Blocks until every event accepted before the call has been delivered,
/// dead-lettered or discarded, or `timeout_ms` passes (`EH_TIMEOUT`). A close
/// racing with it does not make it time out: it returns `EH_OK` once the close has
/// delivered those events. From this processor's own callback: `EH_WOULD_DEADLOCK`.
/// After close began: `EH_SHUT_DOWN` (the close delivers everything accepted).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_flush(p: *mut eh_processor, timeout_ms: u64) -> eh_status {
    guard("eh_processor_flush", || {
        // SAFETY: per the module contract.
        unsafe { processor(p)? }.flush(Duration::from_millis(timeout_ms))
    })
}

/// Starts a flush: writes to `*ticket` a ticket covering every event accepted
/// before the call, for `eh_processor_flush_wait`. With the pair a caller can wait
/// in short slices (handling signals between them) without each slice starting a
/// new barrier that a steady stream of pushes would keep postponing.
/// `eh_processor_flush(p, ms)` is `flush_start` then one `flush_wait`.
/// Errors as `eh_processor_flush` (`EH_WOULD_DEADLOCK` from this processor's own
/// callback, `EH_SHUT_DOWN` after close began, `EH_POISONED`); `*ticket` is written
/// only on `EH_OK`. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_flush_start(
    p: *mut eh_processor,
    ticket: *mut u64,
) -> eh_status {
    guard("eh_processor_flush_start", || {
        let ticket = out_arg(ticket, "ticket")?;
        // SAFETY: per the module contract.
        let issued = unsafe { processor(p)? }.flush_start()?;
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(ticket, issued) };
        Ok(())
    })
}

/// Waits up to `timeout_ms` (0: just check) until every event covered by `ticket`
/// (from `eh_processor_flush_start` on this processor) has been delivered,
/// dead-lettered or discarded: `EH_OK`, or `EH_TIMEOUT` (call again with the same
/// ticket). Any thread may wait for any ticket, several times. In synchronous mode
/// this call sketches and delivers the events, running the callbacks on the
/// calling thread (`timeout_ms` then bounds only the wait for another thread's
/// delivery in progress). A ticket this processor did not issue:
/// `EH_INVALID_ARGUMENT`. Otherwise errors as `eh_processor_flush`. BLOCKS.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_flush_wait(
    p: *mut eh_processor,
    ticket: u64,
    timeout_ms: u64,
) -> eh_status {
    guard("eh_processor_flush_wait", || {
        // SAFETY: per the module contract.
        unsafe { processor(p)? }.flush_wait(ticket, Duration::from_millis(timeout_ms))
    })
}
