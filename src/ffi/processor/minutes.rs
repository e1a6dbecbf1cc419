//! Per-minute read-out for publishers (sharing analytics through Redis).
//!
//! A minute's own sketches are already reachable through the ordinary queries: a
//! 60-second window at an explicit `now` is that minute alone
//! (`eh_processor_users_sketch(p, 60, minute_start, &hll)` then `eh_hll_to_redis`,
//! `eh_processor_top_channels(p, k, 60, minute_start, &list)`). What a publisher
//! also needs is to know cheaply which minutes changed since it last looked, so it
//! reads those and skips the rest: `eh_processor_minute_events`.

use super::super::{eh_status, guard};
use super::{eh_processor, processor};
use crate::error::Error;

/// Longest read-out of one call: one week of minutes (the longest window).
const MAX_MINUTES: usize = crate::sketch::window::MAX_WINDOW_MINUTES as usize;

/// Writes to `counts[i]` the number of events the processor's per-minute ring holds
/// for the minute starting at unix second `first_minute_start + 60 * i`
/// (`first_minute_start` is rounded down to a minute), for `i < n`; 0 for a minute
/// the ring does not hold (older than the window, or its slot reused by a later
/// minute). A minute's count only grows while the ring holds it, and grows with
/// every event processed into it, so a publisher compares it with the count it saw
/// last and reads only the minutes that changed.
///
/// `counts` must have room for `n` values (`n == 0` allows NULL); `n` is at most
/// 10080 (one week of minutes), else `EH_INVALID_ARGUMENT`. Nothing is written on
/// failure. Counts are of processed events (`eh_processor_flush` waits for those).
///
/// Thread safety: like every query (any thread, concurrently with pushes); it
/// briefly takes each worker's sketch lock, as the other analytics queries do.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_minute_events(
    p: *const eh_processor,
    first_minute_start: i64,
    n: usize,
    counts: *mut u64,
) -> eh_status {
    guard("eh_processor_minute_events", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        if n > MAX_MINUTES {
            return Err(Error::invalid(format!(
                "n {n} is more than {MAX_MINUTES} minutes"
            )));
        }
        if n == 0 {
            return processor.minute_events(first_minute_start, &mut []);
        }
        if counts.is_null() {
            return Err(Error::invalid("counts is NULL but n > 0"));
        }
        let mut out = vec![0u64; n];
        processor.minute_events(first_minute_start, &mut out)?;
        // SAFETY: `counts` is non-NULL and the caller passes room for `n` aligned
        // `u64`s; written only now that the read succeeded.
        unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), counts, n) };
        Ok(())
    })
}
