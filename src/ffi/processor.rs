//! `eh_processor`: the event pipeline through the C ABI.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::sketch::eh_hll;
use super::{bytes_arg, eh_status, guard, guard_free, handle, out_arg, str_arg, write_out};
use crate::error::{Error, Result};
use crate::pipeline::{
    Batch, Clock, DeadLetterCallback, EventIn, FlushCallback, Overflow, Processor, ProcessorConfig,
    ProcessorStats, RawEvent,
};
use crate::sketch::WindowConfig;

/// `eh_processor_config.overflow`: refuse a push on a full ring with `EH_QUEUE_FULL`.
pub const EH_OVERFLOW_DROP_NEWEST: i32 = 0;
/// `eh_processor_config.overflow`: wait up to `block_timeout_ms` for room.
pub const EH_OVERFLOW_BLOCK: i32 = 1;
/// `eh_processor_config.clock`: "now" is the system's wall clock.
pub const EH_CLOCK_WALL: i32 = 0;
/// `eh_processor_config.clock`: "now" is the newest event timestamp processed
/// (for replays of old events).
pub const EH_CLOCK_EVENT_TIME: i32 = 1;

/// An event pipeline (opaque): a bounded lock-free ring drained by worker threads
/// that update the sketches and hand batches to the flush callback.
///
/// Create with `eh_processor_new`, release with `eh_processor_free` (which drains).
///
/// Thread safety: every function may be called from any number of threads at once,
/// including pushes racing with `eh_processor_free` (they get `EH_SHUT_DOWN`); no
/// call may start after `eh_processor_free` has returned.
pub struct eh_processor {
    processor: Processor,
    /// Calls in progress; `eh_processor_free` waits for them to leave.
    active: AtomicUsize,
    closing: AtomicBool,
}

/// Processor settings. Zero fields take their defaults; pass NULL for all defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct eh_processor_config {
    /// Ring slots, rounded up to a power of two; 0 = 16384; at most 16777216.
    pub capacity: u64,
    /// Worker threads; 0 = 1; at most 64. With one worker, batches arrive in push order.
    pub workers: u32,
    /// Events per batch; 0 = 500.
    pub batch_size: u32,
    /// A partial batch is delivered this long after its first event; 0 = 1000 ms.
    pub flush_interval_ms: u32,
    /// `EH_OVERFLOW_DROP_NEWEST` (0, default) or `EH_OVERFLOW_BLOCK`.
    pub overflow: i32,
    /// Longest wait of a push under `EH_OVERFLOW_BLOCK`; 0 = 1000 ms.
    pub block_timeout_ms: u32,
    /// Retries of a failing flush before the batch is dead-lettered; 0 = 3,
    /// negative = no retry.
    pub max_retries: i32,
    /// Wait before the first retry, doubled for each later one; 0 = 50 ms.
    pub retry_backoff_ms: u32,
    /// `EH_CLOCK_WALL` (0, default) or `EH_CLOCK_EVENT_TIME`.
    pub clock: i32,
    /// Length of the unique-user and trending window in minutes; 0 = 60.
    pub window_minutes: u32,
    /// Count-Min rows; 0 = 4.
    pub cms_depth: u32,
    /// Count-Min columns; 0 = 2048.
    pub cms_width: u32,
    /// Channels tracked by the all-time trending summary; 0 = 1024.
    pub topk_capacity: u32,
}

/// Counters from `eh_processor_get_stats` (relaxed reads: cheap to poll).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct eh_processor_stats {
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

/// The flush callback: receives `n` events valid only during the call, on a worker
/// thread. Return 0 on success; anything else is a failure and the same batch is
/// offered again after the backoff, up to `max_retries` times, then dead-lettered.
///
/// It may call `eh_processor_push*` and the query functions on the same processor;
/// `eh_processor_flush`, `eh_processor_set_*_callback` and `eh_processor_free` on
/// the same processor return `EH_WOULD_DEADLOCK` (free: see there).
pub type eh_flush_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, events: *const RawEvent, n: usize) -> i32>;

/// The dead-letter callback: a batch whose flush failed `max_retries + 1` times,
/// with the failure reason as a NUL-terminated string; everything valid only during
/// the call; runs on a worker thread under the same rules as `eh_flush_fn`.
pub type eh_dead_letter_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        events: *const RawEvent,
        n: usize,
        error: *const c_char,
    ),
>;

/// Releases a callback's `user_data`; called exactly once, when the callback is
/// replaced or the processor is freed (possibly on a worker thread).
pub type eh_free_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// A C function pointer plus its user data; the finalizer runs once on drop.
struct UserData {
    data: *mut c_void,
    free: eh_free_fn,
}

// SAFETY: the header requires callbacks and their user data to be usable from the
// processor's worker threads (that is where they run), and the finalizer to be
// callable from any thread.
unsafe impl Send for UserData {}
// SAFETY: as above; the library never touches `data` itself, it only passes it on.
unsafe impl Sync for UserData {}

impl Drop for UserData {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: the caller registered `free` for `data`; this runs once.
            unsafe { free(self.data) };
        }
    }
}

struct CFlush {
    f: unsafe extern "C" fn(*mut c_void, *const RawEvent, usize) -> i32,
    user: UserData,
}

impl FlushCallback for CFlush {
    fn on_flush(&self, batch: &mut Batch) -> std::result::Result<(), String> {
        let raw = batch.raw();
        // SAFETY: `f` is the registered callback; `raw` points into the batch, which
        // outlives the call; `user.data` is the caller's own pointer.
        let rc = unsafe { (self.f)(self.user.data, raw.as_ptr(), raw.len()) };
        match rc {
            0 => Ok(()),
            rc => Err(format!("flush callback returned {rc}")),
        }
    }
}

struct CDeadLetter {
    f: unsafe extern "C" fn(*mut c_void, *const RawEvent, usize, *const c_char),
    user: UserData,
}

impl DeadLetterCallback for CDeadLetter {
    fn on_dead_letter(&self, batch: &mut Batch, error: &str) {
        let raw = batch.raw();
        let error = std::ffi::CString::new(error.replace('\0', " ")).unwrap_or_default();
        // SAFETY: as for `CFlush`; `error` is a NUL-terminated string alive for the call.
        unsafe { (self.f)(self.user.data, raw.as_ptr(), raw.len(), error.as_ptr()) }
    }
}

fn config_from(c: Option<&eh_processor_config>) -> Result<ProcessorConfig> {
    let d = ProcessorConfig::default();
    let Some(c) = c else { return Ok(d) };
    let or = |v: u32, default: usize| if v == 0 { default } else { v as usize };
    let ms = |v: u32, default: Duration| {
        if v == 0 {
            default
        } else {
            Duration::from_millis(v.into())
        }
    };
    let overflow = match c.overflow {
        EH_OVERFLOW_DROP_NEWEST => Overflow::DropNewest,
        EH_OVERFLOW_BLOCK => Overflow::Block {
            timeout: ms(c.block_timeout_ms, Duration::from_secs(1)),
        },
        other => {
            return Err(Error::invalid(format!(
                "overflow {other} is not an EH_OVERFLOW_*"
            )));
        }
    };
    let clock = match c.clock {
        EH_CLOCK_WALL => Clock::Wall,
        EH_CLOCK_EVENT_TIME => Clock::EventTime,
        other => {
            return Err(Error::invalid(format!(
                "clock {other} is not an EH_CLOCK_*"
            )));
        }
    };
    let dw = WindowConfig::default();
    Ok(ProcessorConfig {
        capacity: if c.capacity == 0 {
            d.capacity
        } else {
            usize::try_from(c.capacity).unwrap_or(usize::MAX)
        },
        workers: or(c.workers, d.workers),
        batch_size: or(c.batch_size, d.batch_size),
        flush_interval: ms(c.flush_interval_ms, d.flush_interval),
        overflow,
        max_retries: match c.max_retries {
            0 => d.max_retries,
            n if n < 0 => 0,
            n => n as u32,
        },
        retry_backoff: ms(c.retry_backoff_ms, d.retry_backoff),
        clock,
        window: WindowConfig {
            window_minutes: if c.window_minutes == 0 {
                dw.window_minutes
            } else {
                c.window_minutes
            },
            cms_depth: or(c.cms_depth, dw.cms_depth),
            cms_width: or(c.cms_width, dw.cms_width),
            topk_capacity: or(c.topk_capacity, dw.topk_capacity),
            ..dw
        },
    })
}

/// Enters a call on `p`: refuses once `eh_processor_free` has begun, and keeps
/// `free` from releasing the handle until the call leaves.
struct Entered<'a>(&'a eh_processor);

impl<'a> Entered<'a> {
    fn new(p: &'a eh_processor) -> Result<Self> {
        p.active.fetch_add(1, Ordering::SeqCst);
        let entered = Entered(p);
        if p.closing.load(Ordering::SeqCst) {
            return Err(Error::ShutDown);
        }
        Ok(entered)
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// # Safety
/// `p` is NULL or a live handle (the module's contract).
unsafe fn enter<'a>(p: *const eh_processor) -> Result<Entered<'a>> {
    // SAFETY: forwarded from this function's contract.
    let p = unsafe { handle(p, "processor")? };
    Entered::new(p)
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
        // SAFETY: NULL or a valid config, per the contract.
        let config = config_from(unsafe { config.as_ref() })?;
        let p = Box::new(eh_processor {
            processor: Processor::new(config)?,
            active: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
        });
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, Box::into_raw(p)) };
        Ok(())
    })
}

/// Stops intake, drains the ring, delivers every batch (with retries), joins the
/// workers, releases the callbacks' user data, then frees the handle. BLOCKS until
/// all of that is done. Pushes racing with it get `EH_SHUT_DOWN`. NULL: no-op.
///
/// Called from this processor's own callback it cannot join the worker it runs on:
/// it stops intake and returns without freeing (`eh_last_error` says so); free the
/// handle from another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_free(p: *mut eh_processor) {
    if p.is_null() {
        return;
    }
    guard_free("eh_processor_free", || {
        // SAFETY: non-NULL and live: only this call frees it.
        let proc_ref = unsafe { &*p };
        if proc_ref.processor.shutdown().is_err() {
            // On its own worker: refuse (reported), keep the handle alive.
            super::set_last_error(
                "eh_processor_free called from the processor's own callback: \
                 intake stopped, handle not freed"
                    .into(),
            );
            return;
        }
        proc_ref.closing.store(true, Ordering::SeqCst);
        // Wait for calls already inside (pushes, queries) to leave.
        let mut spins = 0u32;
        while proc_ref.active.load(Ordering::SeqCst) != 0 {
            spins += 1;
            if spins < 100 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        // SAFETY: created by `Box::into_raw` in `eh_processor_new`; no call is inside
        // and the contract forbids new ones, so this is the last reference.
        drop(unsafe { Box::from_raw(p) });
    })
}

/// Offers one event: `kind`, `user_id`, `channel_id` are UTF-8 (≤ 1024 bytes each),
/// `timestamp` is unix seconds (≤ 0: the processor's "now"), `payload` (may be NULL
/// with `payload_len` 0, ≤ 1 MiB) is carried unchanged to the flush callback.
/// Copies everything before returning. Never blocks under `EH_OVERFLOW_DROP_NEWEST`.
///
/// Errors: `EH_QUEUE_FULL` (dropped and counted), `EH_SHUT_DOWN`,
/// `EH_INVALID_ARGUMENT`, `EH_POISONED`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn eh_processor_push(
    p: *const eh_processor,
    kind: *const u8,
    kind_len: usize,
    user_id: *const u8,
    user_id_len: usize,
    channel_id: *const u8,
    channel_id_len: usize,
    timestamp: i64,
    payload: *const u8,
    payload_len: usize,
) -> eh_status {
    guard("eh_processor_push", || {
        // SAFETY: the handle and the four (pointer, length) pairs follow the module
        // contract; the strings are copied by `push` before this call returns.
        let (entered, ev) = unsafe {
            let entered = enter(p)?;
            let ev = EventIn {
                kind: str_arg(kind, kind_len, "kind")?,
                user_id: str_arg(user_id, user_id_len, "user_id")?,
                channel_id: str_arg(channel_id, channel_id_len, "channel_id")?,
                timestamp,
                payload: bytes_arg(payload, payload_len, "payload")?,
            };
            (entered, ev)
        };
        entered.0.processor.push(&ev)
    })
}

/// # Safety
/// `e` points into a caller array valid for the call.
unsafe fn event_from_raw(e: &RawEvent, i: usize) -> Result<EventIn<'_>> {
    // The field names are static; the index is added only on failure (no
    // formatting per event).
    let parse = || -> Result<EventIn<'_>> {
        // SAFETY: the four (pointer, length) pairs of a caller's eh_event, valid for
        // the call per this function's contract.
        unsafe {
            Ok(EventIn {
                kind: str_arg(e.kind, e.kind_len, "kind")?,
                user_id: str_arg(e.user_id, e.user_id_len, "user_id")?,
                channel_id: str_arg(e.channel_id, e.channel_id_len, "channel_id")?,
                timestamp: e.timestamp,
                payload: bytes_arg(e.payload, e.payload_len, "payload")?,
            })
        }
    };
    parse().map_err(|err| Error::invalid(format!("events[{i}]: {err}")))
}

/// Offers `n` events in order and writes how many were accepted to `*accepted`.
/// The accepted ones are always the first `*accepted`: after the first refusal
/// (full ring) the rest are dropped and counted. Every event is validated first:
/// one invalid event fails the call (`EH_INVALID_ARGUMENT`) with nothing pushed.
/// A short count is not an error: the call returns `EH_OK`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_push_batch(
    p: *const eh_processor,
    events: *const RawEvent,
    n: usize,
    accepted: *mut usize,
) -> eh_status {
    guard("eh_processor_push_batch", || {
        // SAFETY: per the module contract.
        let entered = unsafe { enter(p)? };
        let accepted = out_arg(accepted, "accepted")?;
        let raw: &[RawEvent] = if n == 0 {
            &[]
        } else if events.is_null() {
            return Err(Error::invalid("events is NULL but n > 0"));
        } else {
            // SAFETY: the caller passes `n` readable events.
            unsafe { std::slice::from_raw_parts(events, n) }
        };
        let parsed = raw
            .iter()
            .enumerate()
            // SAFETY: each element is a caller eh_event valid for the call.
            .map(|(i, e)| unsafe { event_from_raw(e, i) })
            .collect::<Result<Vec<_>>>()?;
        let count = entered.0.processor.push_batch(&parsed)?;
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(accepted, count) };
        Ok(())
    })
}

/// Splits `text` at NUL bytes into exactly `expected` fields.
fn split_fields(text: &str, expected: usize) -> Result<Vec<&str>> {
    let fields: Vec<&str> = if expected == 0 && text.is_empty() {
        Vec::new()
    } else {
        text.split('\0').collect()
    };
    if fields.len() != expected {
        return Err(Error::invalid(format!(
            "text holds {} NUL-separated fields, expected {expected}",
            fields.len()
        )));
    }
    Ok(fields)
}

/// Offers one event given as `kind NUL user_id NUL channel_id` (UTF-8, exactly two
/// NUL bytes, so no field may contain one): the cheap single push for bindings,
/// one string argument instead of three. Otherwise as `eh_processor_push` (no
/// payload).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_push_fields(
    p: *const eh_processor,
    fields: *const u8,
    fields_len: usize,
    timestamp: i64,
) -> eh_status {
    guard("eh_processor_push_fields", || {
        // SAFETY: the handle and the (pointer, length) pair follow the module contract.
        let (entered, text) = unsafe { (enter(p)?, str_arg(fields, fields_len, "fields")?) };
        let mut parts = text.splitn(4, '\0');
        let (Some(kind), Some(user_id), Some(channel_id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::invalid(
                "fields must be kind, user_id and channel_id separated by two NUL bytes",
            ));
        };
        entered.0.processor.push(&EventIn {
            kind,
            user_id,
            channel_id,
            timestamp,
            payload: &[],
        })
    })
}

/// Offers `n` events given as three columns, the cheapest batch form for bindings
/// that hold events as rows of objects (transposing them runs at C speed, and
/// each column is one join): `kinds`, `user_ids` and `channel_ids` each hold `n`
/// UTF-8 fields separated by single NUL bytes (so no field may contain a NUL);
/// `timestamps` is NULL (all "now") or `n` values. A column with another number
/// of fields fails with `EH_INVALID_ARGUMENT` and nothing pushed. Same acceptance
/// rules and `*accepted` as `eh_processor_push_batch`; events carry no payload.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_push_columns(
    p: *const eh_processor,
    kinds: *const u8,
    kinds_len: usize,
    user_ids: *const u8,
    user_ids_len: usize,
    channel_ids: *const u8,
    channel_ids_len: usize,
    timestamps: *const i64,
    n: usize,
    accepted: *mut usize,
) -> eh_status {
    guard("eh_processor_push_columns", || {
        // SAFETY: per the module contract.
        let entered = unsafe { enter(p)? };
        let accepted = out_arg(accepted, "accepted")?;
        // SAFETY: per the module contract: three (pointer, length) pairs of readable
        // bytes and NULL or `n` readable timestamps.
        let (kinds, users, channels, stamps) = unsafe {
            (
                str_arg(kinds, kinds_len, "kinds")?,
                str_arg(user_ids, user_ids_len, "user_ids")?,
                str_arg(channel_ids, channel_ids_len, "channel_ids")?,
                timestamps_arg(timestamps, n),
            )
        };
        let column = |text, name: &str| {
            split_fields(text, n).map_err(|e| Error::invalid(format!("{name}: {e}")))
        };
        let (kinds, users, channels) = (
            column(kinds, "kinds")?,
            column(users, "user_ids")?,
            column(channels, "channel_ids")?,
        );
        let events: Vec<EventIn<'_>> = (0..n)
            .map(|i| EventIn {
                kind: kinds[i],
                user_id: users[i],
                channel_id: channels[i],
                timestamp: stamps.get(i).copied().unwrap_or(0),
                payload: &[],
            })
            .collect();
        let count = entered.0.processor.push_batch(&events)?;
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(accepted, count) };
        Ok(())
    })
}

/// Borrows NULL (empty: every event "now") or `n` timestamps.
///
/// # Safety
/// `timestamps` must be NULL or point to `n` readable, aligned `i64`s valid for `'a`.
unsafe fn timestamps_arg<'a>(timestamps: *const i64, n: usize) -> &'a [i64] {
    if timestamps.is_null() || n == 0 {
        &[]
    } else {
        // SAFETY: non-NULL, and the caller passes `n` readable timestamps.
        unsafe { std::slice::from_raw_parts(timestamps, n) }
    }
}

/// Packs `n` events (from a flush callback) as columns for bindings: writes into
/// `buf` (capacity `cap`) the `3 * n` fields separated by single NUL bytes (kinds,
/// then user ids, then channel ids), sets `*needed` to the bytes required, and, if
/// `timestamps` is not NULL, the `n` timestamps. If `cap < *needed` nothing is
/// written to `buf` and the call still returns `EH_OK`: grow the buffer and call
/// again. A field containing a NUL byte cannot be packed: `EH_INVALID_ARGUMENT`
/// (read the events one by one instead).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_events_columns(
    events: *const RawEvent,
    n: usize,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
    timestamps: *mut i64,
) -> eh_status {
    guard("eh_events_columns", || {
        let needed = out_arg(needed, "needed")?;
        let raw: &[RawEvent] = if n == 0 {
            &[]
        } else if events.is_null() {
            return Err(Error::invalid("events is NULL but n > 0"));
        } else {
            // SAFETY: the caller passes `n` readable events (from a callback).
            unsafe { std::slice::from_raw_parts(events, n) }
        };
        let column = |e: &RawEvent, c: usize| -> Result<&[u8]> {
            let (ptr, len) = match c {
                0 => (e.kind, e.kind_len),
                1 => (e.user_id, e.user_id_len),
                _ => (e.channel_id, e.channel_id_len),
            };
            // SAFETY: fields of a live eh_event.
            unsafe { bytes_arg(ptr, len, "event field") }
        };
        let mut total = 0usize;
        for c in 0..3 {
            for e in raw {
                let field = column(e, c)?;
                if field.contains(&0) {
                    return Err(Error::invalid("an event field contains a NUL byte"));
                }
                total += field.len() + 1;
            }
        }
        let total = total.saturating_sub(1);
        if !buf.is_null() && cap >= total && total > 0 {
            // SAFETY: the caller's buffer has `cap >= total` writable bytes.
            let out = unsafe { std::slice::from_raw_parts_mut(buf, total) };
            let mut at = 0;
            for c in 0..3 {
                for e in raw {
                    let field = column(e, c)?;
                    out[at..at + field.len()].copy_from_slice(field);
                    at += field.len();
                    if at < total {
                        out[at] = 0;
                        at += 1;
                    }
                }
            }
        }
        if !timestamps.is_null() {
            for (i, e) in raw.iter().enumerate() {
                // SAFETY: the caller passes room for `n` timestamps.
                unsafe { timestamps.add(i).write(e.timestamp) };
            }
        }
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(needed, total) };
        Ok(())
    })
}

/// `EH_WOULD_DEADLOCK` when called from one of `processor`'s own callbacks.
fn refuse_in_own_callback(processor: &Processor, what: &str) -> Result<()> {
    if processor.in_own_callback() {
        return Err(Error::WouldDeadlock(format!(
            "{what} called from this processor's own callback"
        )));
    }
    Ok(())
}

/// Sets the flush callback (NULL `cb` removes it: batches are then discarded and
/// counted). `user_data_free`, if not NULL, is called exactly once with `user_data`
/// when this callback is replaced or the processor freed. Batches already being
/// delivered finish with the previous callback. From this processor's own callback:
/// `EH_WOULD_DEADLOCK` (and `user_data_free` is not called).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_set_flush_callback(
    p: *const eh_processor,
    cb: eh_flush_fn,
    user_data: *mut c_void,
    user_data_free: eh_free_fn,
) -> eh_status {
    guard("eh_processor_set_flush_callback", || {
        // SAFETY: per the module contract.
        let entered = unsafe { enter(p)? };
        let processor = &entered.0.processor;
        // Refused before taking ownership: user_data stays the caller's.
        refuse_in_own_callback(processor, "set_flush_callback")?;
        let user = UserData {
            data: user_data,
            free: user_data_free,
        };
        // With no callback nothing will use user_data: `user` drops (finalizes) here.
        let callback = cb.map(|f| Arc::new(CFlush { f, user }) as Arc<dyn FlushCallback>);
        processor.set_flush_callback(callback)
    })
}

/// Sets the dead-letter callback (NULL removes it; dead-lettered batches are then
/// only counted). Same `user_data` rules as `eh_processor_set_flush_callback`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_set_dead_letter_callback(
    p: *const eh_processor,
    cb: eh_dead_letter_fn,
    user_data: *mut c_void,
    user_data_free: eh_free_fn,
) -> eh_status {
    guard("eh_processor_set_dead_letter_callback", || {
        // SAFETY: per the module contract.
        let entered = unsafe { enter(p)? };
        let processor = &entered.0.processor;
        refuse_in_own_callback(processor, "set_dead_letter_callback")?;
        let user = UserData {
            data: user_data,
            free: user_data_free,
        };
        let callback = cb.map(|f| Arc::new(CDeadLetter { f, user }) as Arc<dyn DeadLetterCallback>);
        processor.set_dead_letter_callback(callback)
    })
}

/// Blocks until every event accepted before the call has been delivered,
/// dead-lettered or discarded, or `timeout_ms` passes (`EH_TIMEOUT`). From this
/// processor's own callback: `EH_WOULD_DEADLOCK`. After `eh_processor_free` began:
/// `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_flush(p: *const eh_processor, timeout_ms: u64) -> eh_status {
    guard("eh_processor_flush", || {
        // SAFETY: per the module contract.
        let entered = unsafe { enter(p)? };
        entered.0.processor.flush(Duration::from_millis(timeout_ms))
    })
}

/// Reads the counters into `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_get_stats(
    p: *const eh_processor,
    out: *mut eh_processor_stats,
) -> eh_status {
    guard("eh_processor_get_stats", || {
        // SAFETY: per the module contract.
        let entered = unsafe { enter(p)? };
        let out = out_arg(out, "out")?;
        let s: ProcessorStats = entered.0.processor.stats();
        let stats = eh_processor_stats {
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
        };
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, stats) };
        Ok(())
    })
}

/// Writes the processor's "now" (unix seconds) to `*out`: the wall clock, or under
/// `EH_CLOCK_EVENT_TIME` the newest event timestamp processed (the wall clock
/// before any).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_now(p: *const eh_processor, out: *mut i64) -> eh_status {
    guard("eh_processor_now", || {
        // SAFETY: per the module contract.
        let entered = unsafe { enter(p)? };
        let out = out_arg(out, "out")?;
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, entered.0.processor.now()) };
        Ok(())
    })
}

/// Estimated distinct users (HyperLogLog, ±0.81% standard error, near exact below a
/// few hundred) in the `window_secs` before `now`: `now` ≤ 0 means the processor's
/// clock, `window_secs` ≤ 0 means all time; the window is rounded up to whole
/// minutes and capped at `window_minutes`. Events are counted once a worker has
/// processed them (`eh_processor_flush` waits for that).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_unique_users(
    p: *const eh_processor,
    window_secs: i64,
    now: i64,
    out: *mut u64,
) -> eh_status {
    guard("eh_processor_unique_users", || {
        // SAFETY: per the module contract.
        let entered = unsafe { enter(p)? };
        let out = out_arg(out, "out")?;
        let n = entered.0.processor.unique_users(window_secs, now);
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, n) };
        Ok(())
    })
}

/// The sketch behind `eh_processor_unique_users` as a new `eh_hll` (free it with
/// `eh_hll_free`), to merge with other processes' sketches.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_users_sketch(
    p: *const eh_processor,
    window_secs: i64,
    now: i64,
    out: *mut *mut eh_hll,
) -> eh_status {
    guard("eh_processor_users_sketch", || {
        // SAFETY: per the module contract.
        let entered = unsafe { enter(p)? };
        let out = out_arg(out, "out")?;
        let hll = entered.0.processor.users_sketch(window_secs, now);
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, eh_hll::boxed(hll)) };
        Ok(())
    })
}

/// The `k` busiest channels over the window (`window_secs` ≤ 0: all time; `now` ≤ 0:
/// the processor's clock) from the bounded Space-Saving summaries, into `*out`;
/// release with `eh_channel_list_free`. Counts are upper bounds, exact for channels
/// well above the summary's floor.
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
        let entered = unsafe { enter(p)? };
        let out = out_arg(out, "out")?;
        let top = entered.0.processor.top_channels(k, window_secs, now);
        let rows: Vec<([u64; 3], &str)> = top
            .iter()
            .map(|c| ([c.count, 0, 0], c.channel.as_str()))
            .collect();
        let packed = super::rows::pack(&rows);
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
        let entered = unsafe { enter(p)? };
        let out = out_arg(out, "out")?;
        // SAFETY: per the module contract.
        let channel = unsafe { str_arg(channel, channel_len, "channel")? };
        let n = entered.0.processor.channel_count(channel);
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, n) };
        Ok(())
    })
}

/// Releases a list filled by `eh_processor_top_channels` and zeroes `*list`.
/// NULL, a zeroed struct and a second call are no-ops.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_channel_list_free(list: *mut eh_channel_list) {
    // SAFETY: the caller passes NULL or a list filled by this library.
    let Some(list) = (unsafe { list.as_mut() }) else {
        return;
    };
    let owner = std::mem::replace(&mut list.owner, std::ptr::null_mut());
    *list = eh_channel_list {
        len: 0,
        rows: std::ptr::null(),
        ids: std::ptr::null(),
        size: 0,
        owner: std::ptr::null_mut(),
    };
    guard_free("eh_channel_list_free", || super::rows::free(owner));
}
