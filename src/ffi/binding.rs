//! For language bindings: encodings that make a binding's per-call conversion
//! cheap (fields joined with NUL bytes, events as columns). Declared last in
//! `ffi`, so cbindgen emits these functions at the end of the header, in their own
//! section; C and C++ programs use `eh_processor_push` / `eh_processor_push_batch`
//! and the `eh_event` array of the flush callback instead.

use super::processor::{eh_processor, processor};
use super::{bytes_arg, eh_status, guard, out_arg, str_arg, write_out};
use crate::error::{Error, Result};
use crate::pipeline::{EventIn, RawEvent};

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

/// **For language bindings.** The functions from here to the end of the header
/// exist so that bindings (the Python package) can cross the boundary with fewer,
/// cheaper arguments; C and C++ callers have no reason to use them and should use
/// `eh_processor_push`, `eh_processor_push_batch` and the `eh_event` array their
/// flush callback receives. They follow the same rules as those functions.
///
/// Offers one event given as `kind NUL user_id NUL channel_id`, optionally followed
/// by `NUL guild_id` (UTF-8, two or three NUL bytes, so no field may contain one):
/// the cheap single push for bindings, one string argument instead of three or
/// four. Otherwise as `eh_processor_push` (no payload).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_push_fields(
    p: *mut eh_processor,
    fields: *const u8,
    fields_len: usize,
    timestamp: i64,
) -> eh_status {
    guard("eh_processor_push_fields", || {
        // SAFETY: the handle and the (pointer, length) pair follow the module contract.
        let (processor, text) = unsafe { (processor(p)?, str_arg(fields, fields_len, "fields")?) };
        let mut parts = text.splitn(5, '\0');
        let (Some(kind), Some(user_id), Some(channel_id), guild_id, None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Error::invalid(
                "fields must be kind, user_id, channel_id and optionally guild_id separated \
                 by NUL bytes",
            ));
        };
        processor.push(&EventIn {
            kind,
            user_id,
            channel_id,
            guild_id: guild_id.unwrap_or(""),
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
/// rules and `*accepted` (written on every return) as `eh_processor_push_batch`;
/// events carry no payload.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_push_columns(
    p: *mut eh_processor,
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
        let accepted = out_arg(accepted, "accepted")?;
        // SAFETY: checked by `out_arg`. Written first, so every return has a count.
        unsafe { write_out(accepted, 0) };
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
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
                guild_id: "",
                timestamp: stamps.get(i).copied().unwrap_or(0),
                payload: &[],
            })
            .collect();
        let (count, result) = processor.push_batch(&events);
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(accepted, count) };
        result
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
