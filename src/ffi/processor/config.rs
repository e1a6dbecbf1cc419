//! `eh_processor_config` and its translation to [`ProcessorConfig`].

use std::ffi::c_char;
use std::time::Duration;

use crate::community::{CommunityConfig, DEFAULT_HISTORY_DAYS};
use crate::error::{Error, Result};
use crate::ffi::sized::{read_sized, versioned};
use crate::pipeline::{Clock, Overflow, ProcessorConfig};
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

/// `eh_processor_config.workers`: the synchronous mode. No worker threads: events
/// wait in the ring (which still bounds memory: `EH_OVERFLOW_DROP_NEWEST` refuses
/// pushes into a full ring, counted as drops) and are sketched and delivered on
/// the thread that calls `eh_processor_flush` (or `eh_processor_flush_wait`) or
/// `eh_processor_close`, inside that call, in push order, in batches of at most
/// `batch_size`; `flush_interval_ms` is not used, and queries count an event once
/// a flush has processed it. For tests, and for callers that want delivery inside
/// their own transaction. `EH_OVERFLOW_BLOCK` is refused with
/// `EH_INVALID_ARGUMENT` (nothing would drain the ring while a push waits).
/// A sentinel rather than 0 because 0 means "the default" (one worker).
pub const EH_WORKERS_NONE: u32 = 0xFFFF_FFFF;

/// Processor settings. Zero fields take their defaults; pass NULL for all defaults.
/// Set `struct_size` to `sizeof(eh_processor_config)`: fields are only ever
/// appended, and a library newer than the caller's header gives the fields the
/// caller does not have their defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct eh_processor_config {
    /// `sizeof(eh_processor_config)` as the caller's header declares it (0 or a
    /// size smaller than the first version: `EH_INVALID_ARGUMENT`).
    pub struct_size: usize,
    /// Ring slots, rounded up to a power of two; 0 = 16384; at most 16777216.
    pub capacity: u64,
    /// Worker threads; 0 = 1; at most 64. With one worker, batches arrive in push
    /// order. `EH_WORKERS_NONE`: the synchronous mode, without worker threads.
    pub workers: u32,
    /// Events per batch; 0 = 500.
    pub batch_size: u32,
    /// A partial batch is delivered this long after its first event; 0 = 1000 ms.
    pub flush_interval_ms: u32,
    /// `EH_OVERFLOW_DROP_NEWEST` (0, default) or `EH_OVERFLOW_BLOCK`.
    pub overflow: i32,
    /// Longest wait of a push under `EH_OVERFLOW_BLOCK`; 0 = 1000 ms. A waiting
    /// push retries once an eighth of the ring (at most 4,096 slots) is free, and
    /// once more at the deadline, when any free slot takes it.
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
    /// A pushed timestamp later than the wall clock plus this many seconds is
    /// refused with `EH_INVALID_ARGUMENT` and counted in `future_refused`, under
    /// both clocks (so under `EH_CLOCK_EVENT_TIME` one event from the far future
    /// cannot move "now"); 0 = 86400 (one day); at most 315360000 (ten years).
    pub max_future_skew_secs: u32,
    /// A directory (NUL-terminated; created if needed) for the processor's
    /// journal, or NULL for none: every run of events a worker takes is logged
    /// before it is sketched and delivered, and the processor reopens with its
    /// sketches, totals and publisher outbox (see "Durability" in the header's
    /// preamble; events still in the ring at a crash are not journaled). One
    /// handle per journal (`EH_BUSY`); a journal of other window or sketch
    /// settings or clock: `EH_INVALID_ARGUMENT` naming them; another format
    /// version: `EH_CORRUPT`.
    pub journal_path: *const c_char,
    /// Milliseconds between syncs of the journal to disk; 0 = 1000; negative =
    /// sync every run before it is sketched.
    pub journal_sync_ms: i64,
    /// Days of daily history for `eh_processor_active_users`,
    /// `eh_processor_retention` and `eh_processor_heatmap`; 0 = 90; at most 400;
    /// negative = none (those queries then fail with `EH_INVALID_ARGUMENT`, and
    /// events cost no more than without them). About 50 bytes per user and per
    /// guild a user is seen in (see "Community analytics" in the preamble).
    pub history_days: i32,
    /// Non-zero: keep what the daily history changes for a Redis publisher, which
    /// takes it with each `eh_processor_outbox_put` (the Python package sets this
    /// when it publishes; C callers leave it 0).
    pub publish_history: i32,
}

// The first version ended with `topk_capacity`.
versioned!(eh_processor_config, max_future_skew_secs);

/// Reads the caller's config (of its `struct_size`) into a [`ProcessorConfig`].
///
/// # Safety
/// `c` is NULL or points to a readable config of `(*c).struct_size` bytes.
pub(super) unsafe fn config_from(c: *const eh_processor_config) -> Result<ProcessorConfig> {
    let d = ProcessorConfig::default();
    // SAFETY: forwarded from this function's contract.
    let Some(c) = (unsafe { read_sized(c)? }) else {
        return Ok(d);
    };
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
    let workers = match c.workers {
        EH_WORKERS_NONE => 0,
        n => or(n, d.workers),
    };
    let dw = WindowConfig::default();
    Ok(ProcessorConfig {
        capacity: if c.capacity == 0 {
            d.capacity
        } else {
            usize::try_from(c.capacity).unwrap_or(usize::MAX)
        },
        workers,
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
        max_future_skew: if c.max_future_skew_secs == 0 {
            d.max_future_skew
        } else {
            Duration::from_secs(c.max_future_skew_secs.into())
        },
        // SAFETY: NULL or NUL-terminated (documented).
        journal: unsafe { crate::ffi::journal_arg(c.journal_path, c.journal_sync_ms)? }
            .map(|(dir, sync)| crate::pipeline::durable::JournalConfig { dir, sync }),
        community: CommunityConfig {
            history_days: match c.history_days {
                0 => DEFAULT_HISTORY_DAYS,
                n if n < 0 => 0,
                n => n as u32,
            },
            publish: c.publish_history != 0,
        },
    })
}
