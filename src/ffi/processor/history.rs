//! The daily history through the C ABI: active users by day, week and month,
//! retention cohorts, activity heatmaps, per guild (see [`crate::community`]).

use super::super::{bytes_arg, eh_status, guard, out_arg, str_arg, write_out};
use super::processor;
use crate::community::{CohortPeriod, Period, day_of};
use crate::error::{Error, Result};
use crate::ffi::sized::{versioned, write_sized};

/// `eh_processor_active_users`: users active that day.
pub const EH_PERIOD_DAY: i32 = 0;
/// `eh_processor_active_users`: users active in the 7 days ending that day;
/// `eh_processor_retention`: cohorts of weeks, Monday to Sunday.
pub const EH_PERIOD_WEEK: i32 = 1;
/// `eh_processor_active_users`: users active in the 30 days ending that day.
pub const EH_PERIOD_MONTH: i32 = 2;

/// Most cohorts `eh_processor_retention` returns.
pub const EH_MAX_COHORTS: u32 = 400;

/// A guild argument: NULL or empty means every event (all guilds).
///
/// # Safety
/// As `str_arg`.
unsafe fn guild_arg<'a>(guild: *const u8, len: usize) -> Result<Option<&'a str>> {
    // SAFETY: forwarded.
    let g = unsafe { str_arg(guild, len, "guild_id")? };
    Ok((!g.is_empty()).then_some(g))
}

/// Writes to `*out` how many distinct users were active on the UTC day holding
/// unix second `day_ts` (≤ 0: the processor's day), with `period`
/// `EH_PERIOD_DAY`, or in the 7 (`EH_PERIOD_WEEK`) or 30 (`EH_PERIOD_MONTH`) days
/// ending with it, among the events of guild `guild_id` (`guild_id_len` bytes;
/// NULL or empty: every event). Exact (see "Community analytics" in the
/// preamble). Stickiness is the `EH_PERIOD_DAY` figure over the
/// `EH_PERIOD_MONTH` one.
///
/// Errors: `EH_INVALID_ARGUMENT` for a day outside the `history_days` ending with
/// the processor's day (the message names the range), an unknown period, a
/// processor without history (`history_days` negative); `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_active_users(
    p: *const super::eh_processor,
    day_ts: i64,
    period: i32,
    guild_id: *const u8,
    guild_id_len: usize,
    out: *mut u64,
) -> eh_status {
    guard("eh_processor_active_users", || {
        // SAFETY: per the module contract.
        let (processor, guild) = unsafe { (processor(p)?, guild_arg(guild_id, guild_id_len)?) };
        let out = out_arg(out, "out")?;
        let period = match period {
            EH_PERIOD_DAY => Period::Day,
            EH_PERIOD_WEEK => Period::Week,
            EH_PERIOD_MONTH => Period::Month,
            other => {
                return Err(Error::invalid(format!(
                    "period {other} is not an EH_PERIOD_*"
                )));
            }
        };
        let ts = if day_ts > 0 { day_ts } else { processor.now()? };
        if ts > crate::leaderboard::MAX_TIMESTAMP {
            return Err(Error::invalid(format!("day_ts {ts} is after year 9999")));
        }
        let n = processor.active_users(day_of(ts), period, guild)?;
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { write_out(out, n) };
        Ok(())
    })
}

/// Retention cohorts: the `cohorts` periods (`EH_PERIOD_DAY`, or
/// `EH_PERIOD_WEEK`: weeks starting on Monday, UTC) ending with the one holding
/// `now` (≤ 0: the processor's "now"), oldest first, in guild `guild_id` (NULL or
/// empty: every event). For cohort `i`: `starts[i]` is the unix second its period
/// starts at, `sizes[i]` the users first seen in it, and `active[i * cohorts +
/// k]` how many of them were active in the `k`-th period after it, for `k` from 0
/// (`== sizes[i]`) to `cohorts - 1 - i` (the period holding `now`); the rest of
/// the row is 0. The arrays hold `cohorts`, `cohorts` and `cohorts * cohorts`
/// values. Exact; a cohort reaching before the history is refused.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL array, `cohorts` 0 or above
/// `EH_MAX_COHORTS` or reaching before the history, an unknown period),
/// `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn eh_processor_retention(
    p: *const super::eh_processor,
    period: i32,
    cohorts: u32,
    now: i64,
    guild_id: *const u8,
    guild_id_len: usize,
    starts: *mut i64,
    sizes: *mut u64,
    active: *mut u64,
) -> eh_status {
    guard("eh_processor_retention", || {
        // SAFETY: per the module contract.
        let (processor, guild) = unsafe { (processor(p)?, guild_arg(guild_id, guild_id_len)?) };
        let (starts, sizes, active) = (
            out_arg(starts, "starts")?,
            out_arg(sizes, "sizes")?,
            out_arg(active, "active")?,
        );
        let period = match period {
            EH_PERIOD_DAY => CohortPeriod::Day,
            EH_PERIOD_WEEK => CohortPeriod::Week,
            other => {
                return Err(Error::invalid(format!(
                    "period {other} is not EH_PERIOD_DAY or EH_PERIOD_WEEK"
                )));
            }
        };
        if cohorts == 0 || cohorts > EH_MAX_COHORTS {
            return Err(Error::invalid(format!(
                "cohorts {cohorts} is outside 1..={EH_MAX_COHORTS}"
            )));
        }
        let result = processor.retention(period, cohorts, now, guild)?;
        let n = cohorts as usize;
        for (i, c) in result.iter().enumerate() {
            // SAFETY: the caller passes `cohorts` writable values in `starts` and
            // `sizes` and `cohorts * cohorts` in `active`; `i < cohorts` and
            // `k < cohorts` (a cohort has at most `cohorts - i` periods).
            unsafe {
                write_out(starts.add(i), i64::from(c.start_day) * 86_400);
                write_out(sizes.add(i), c.size);
                for k in 0..n {
                    write_out(active.add(i * n + k), c.active.get(k).copied().unwrap_or(0));
                }
            }
        }
        Ok(())
    })
}

/// Activity heatmap: writes to `out` (`7 * 24` values) the events of each UTC
/// hour (`out[weekday * 24 + hour]`, Monday = 0) over the `days` days ending with
/// the day of `now` (≤ 0: the processor's "now"), in channel `channel_id` (NULL:
/// all channels; a non-NULL pointer with length 0 is the channel "") and guild
/// `guild_id` (NULL or empty: every event). Exact.
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL `out`, `days` 0 or above `history_days`),
/// `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn eh_processor_heatmap(
    p: *const super::eh_processor,
    days: u32,
    now: i64,
    channel_id: *const u8,
    channel_id_len: usize,
    guild_id: *const u8,
    guild_id_len: usize,
    out: *mut u64,
) -> eh_status {
    guard("eh_processor_heatmap", || {
        // SAFETY: per the module contract.
        let (processor, guild) = unsafe { (processor(p)?, guild_arg(guild_id, guild_id_len)?) };
        let channel = if channel_id.is_null() {
            None
        } else {
            // SAFETY: non-NULL, `channel_id_len` readable bytes per the contract.
            let bytes = unsafe { bytes_arg(channel_id, channel_id_len, "channel_id")? };
            Some(
                std::str::from_utf8(bytes)
                    .map_err(|_| Error::invalid("channel_id is not UTF-8"))?,
            )
        };
        let out = out_arg(out, "out")?;
        let map = processor.activity_heatmap(days, now, channel, guild)?;
        for (d, row) in map.iter().enumerate() {
            for (h, &n) in row.iter().enumerate() {
                // SAFETY: the caller passes 7 * 24 writable values.
                unsafe { write_out(out.add(d * 24 + h), n) };
            }
        }
        Ok(())
    })
}

/// The daily history's size, from `eh_processor_history_stats`. Set
/// `struct_size` to `sizeof(eh_history_stats)` before the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct eh_history_stats {
    /// In: `sizeof(eh_history_stats)`. Out: the bytes written.
    pub struct_size: usize,
    /// User records: one per user seen, plus one per guild a user was seen in.
    pub user_records: u64,
    /// Guilds seen.
    pub guilds: u64,
    /// Approximate heap bytes of the history (records, day counters, cohort
    /// cells, heatmaps).
    pub heap_bytes: u64,
}

versioned!(eh_history_stats);

/// Reads the daily history's size into `*out` (walks the guilds: not for every
/// event).
///
/// Errors: `EH_INVALID_ARGUMENT` (NULL `out`, bad `struct_size`), `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_history_stats(
    p: *const super::eh_processor,
    out: *mut eh_history_stats,
) -> eh_status {
    guard("eh_processor_history_stats", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        let out = out_arg(out, "out")?;
        let (user_records, guilds, heap_bytes) = processor.community_size()?;
        let value = eh_history_stats {
            user_records,
            guilds,
            heap_bytes,
            ..eh_history_stats::default()
        };
        // SAFETY: non-NULL; sized by the caller per the contract.
        unsafe { write_sized(out, value) }
    })
}
