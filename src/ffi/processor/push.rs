//! Pushing events: one at a time or as an array. The binding-only encodings
//! (NUL-joined fields, columns) are in [`crate::ffi::binding`].

use super::super::{bytes_arg, eh_status, guard, out_arg, str_arg, write_out};
use super::{eh_processor, processor};
use std::mem::MaybeUninit;

use crate::error::{Error, Result};
use crate::pipeline::{
    EventIn, EventSource, MAX_FIELD_BYTES, MAX_PAYLOAD_BYTES, RawEvent, Record, RoomWait,
};

/// Offers one event: `kind`, `user_id`, `channel_id` are UTF-8 (≤ 1024 bytes each),
/// `timestamp` is unix seconds (≤ 0: the processor's "now"), `payload` (may be NULL
/// with `payload_len` 0, ≤ 1 MiB) is carried unchanged to the flush callback.
/// Copies everything before returning. Never blocks under `EH_OVERFLOW_DROP_NEWEST`.
///
/// A `timestamp` later than the wall clock plus `max_future_skew_secs` is refused
/// with `EH_INVALID_ARGUMENT` and counted in `future_refused`.
///
/// Errors: `EH_QUEUE_FULL` (dropped and counted), `EH_SHUT_DOWN` (close has begun:
/// a push racing with `eh_processor_close` is either accepted, and then delivered
/// by the close, or refused with this), `EH_INVALID_ARGUMENT`, `EH_POISONED`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn eh_processor_push(
    p: *mut eh_processor,
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
        let (processor, ev) = unsafe {
            let processor = processor(p)?;
            let ev = event_in(
                (kind, kind_len),
                (user_id, user_id_len),
                (channel_id, channel_id_len),
                timestamp,
                (payload, payload_len),
            )?;
            (processor, ev)
        };
        processor.push(&ev)
    })
}

/// Offers one event given as an `eh_event` (with its `guild_id`, which
/// `eh_processor_push` cannot carry): as `eh_processor_push` otherwise (same
/// errors, everything copied before returning).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_push_event(
    p: *mut eh_processor,
    event: *const RawEvent,
) -> eh_status {
    guard("eh_processor_push_event", || {
        // SAFETY: per the module contract; the event's pointers are valid for the
        // call and copied by `push`.
        let (processor, ev) = unsafe { (processor(p)?, raw_event(event)?) };
        processor.push(&ev)
    })
}

/// `eh_processor_push_event` waiting for room in slices, as
/// `eh_processor_push_wait` does.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_push_event_wait(
    p: *mut eh_processor,
    event: *const RawEvent,
    wait_ms: u64,
    give_up: i32,
) -> eh_status {
    guard("eh_processor_push_event_wait", || {
        // SAFETY: as in `eh_processor_push_event`.
        let (processor, ev) = unsafe { (processor(p)?, raw_event(event)?) };
        processor.push_wait(&ev, std::time::Duration::from_millis(wait_ms), give_up != 0)
    })
}

/// Borrows and checks the event `event` points to.
///
/// # Safety
/// `event` is NULL or points to a readable `eh_event` whose pairs are valid for `'a`.
unsafe fn raw_event<'a>(event: *const RawEvent) -> Result<EventIn<'a>> {
    if event.is_null() {
        return Err(Error::invalid("event is NULL"));
    }
    // SAFETY: non-NULL and readable per the contract.
    let e = unsafe { &*event };
    // SAFETY: its pairs are valid for 'a per the contract.
    let parse = || unsafe {
        Ok(EventIn {
            kind: str_arg(e.kind, e.kind_len, "kind")?,
            user_id: str_arg(e.user_id, e.user_id_len, "user_id")?,
            channel_id: str_arg(e.channel_id, e.channel_id_len, "channel_id")?,
            guild_id: str_arg(e.guild_id, e.guild_id_len, "guild_id")?,
            timestamp: e.timestamp,
            payload: bytes_arg(e.payload, e.payload_len, "payload")?,
        })
    };
    parse()
}

/// Borrows one event's (pointer, length) arguments, checking each (the push
/// functions copy them before returning).
///
/// # Safety
/// Each pair is NULL with length 0 or points to that many readable bytes, valid
/// for `'a`.
#[inline(always)]
unsafe fn event_in<'a>(
    kind: (*const u8, usize),
    user_id: (*const u8, usize),
    channel_id: (*const u8, usize),
    timestamp: i64,
    payload: (*const u8, usize),
) -> crate::error::Result<EventIn<'a>> {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        Ok(EventIn {
            kind: str_arg(kind.0, kind.1, "kind")?,
            user_id: str_arg(user_id.0, user_id.1, "user_id")?,
            channel_id: str_arg(channel_id.0, channel_id.1, "channel_id")?,
            guild_id: "",
            timestamp,
            payload: bytes_arg(payload.0, payload.1, "payload")?,
        })
    }
}

/// `eh_processor_push` for a caller that waits for room in slices, e.g. a binding
/// that handles signals (Ctrl-C) between them. Under `EH_OVERFLOW_BLOCK`, waits
/// at most `wait_ms` for room (instead of `block_timeout_ms`); if none came:
/// with `give_up` non-zero the event is dropped and counted (`EH_QUEUE_FULL`),
/// with `give_up` 0 it returns `EH_TIMEOUT` and nothing was pushed or counted
/// (call again, with `give_up` set on the last try). Under
/// `EH_OVERFLOW_DROP_NEWEST` it is `eh_processor_push`. Other errors and the
/// copying rules as `eh_processor_push`. Thread-safe.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn eh_processor_push_wait(
    p: *mut eh_processor,
    kind: *const u8,
    kind_len: usize,
    user_id: *const u8,
    user_id_len: usize,
    channel_id: *const u8,
    channel_id_len: usize,
    timestamp: i64,
    payload: *const u8,
    payload_len: usize,
    wait_ms: u64,
    give_up: i32,
) -> eh_status {
    guard("eh_processor_push_wait", || {
        // SAFETY: as in `eh_processor_push`.
        let (processor, ev) = unsafe {
            let processor = processor(p)?;
            let ev = event_in(
                (kind, kind_len),
                (user_id, user_id_len),
                (channel_id, channel_id_len),
                timestamp,
                (payload, payload_len),
            )?;
            (processor, ev)
        };
        processor.push_wait(&ev, std::time::Duration::from_millis(wait_ms), give_up != 0)
    })
}

/// # Safety
/// `e` points into a caller array valid for the call.
unsafe fn event_from_raw(e: &RawEvent, i: usize) -> Result<EventIn<'_>> {
    // The field names are static; the index is added only on failure (no
    // formatting per event).
    // SAFETY: the (pointer, length) pairs of a caller's eh_event, valid for the
    // call per this function's contract.
    unsafe { raw_event(e) }.map_err(|err| Error::invalid(format!("events[{i}]: {err}")))
}

/// The event `e` holds, without checking it again.
///
/// # Safety
/// `e` passed [`event_from_raw`], and what it points to is still valid and
/// unchanged for `'a`.
#[inline(always)]
unsafe fn checked_event<'a>(e: &RawEvent) -> EventIn<'a> {
    // SAFETY: per this function's contract each (pointer, length) pair is NULL with
    // length 0 or `len <= isize::MAX` readable bytes, and the strings are UTF-8.
    unsafe {
        let bytes = |p: *const u8, len: usize| -> &'a [u8] {
            if len == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(p, len)
            }
        };
        EventIn {
            kind: std::str::from_utf8_unchecked(bytes(e.kind, e.kind_len)),
            user_id: std::str::from_utf8_unchecked(bytes(e.user_id, e.user_id_len)),
            channel_id: std::str::from_utf8_unchecked(bytes(e.channel_id, e.channel_id_len)),
            guild_id: std::str::from_utf8_unchecked(bytes(e.guild_id, e.guild_id_len)),
            timestamp: e.timestamp,
            payload: bytes(e.payload, e.payload_len),
        }
    }
}

/// The OR of every byte of the `len` bytes at `p` (in some lane of a word): its
/// `0x80` bits are clear only if every byte is ASCII. Whole words (overlapping
/// when the length is not a multiple of theirs); never reads outside
/// `[p, p + len)`. A NULL `p` with bytes answers `0x80` (not plainly valid).
///
/// # Safety
/// `p` is NULL or readable for `len` bytes (any pointer when `len` is 0).
#[inline(always)]
unsafe fn or_bytes(p: *const u8, len: usize) -> u64 {
    if len == 0 {
        return 0;
    }
    if p.is_null() {
        return 0x80;
    }
    // SAFETY: `p` is readable for `len > 0` bytes, and every read below is inside
    // `[p, p + len)`, per the branch's bounds.
    unsafe {
        let word = |at: usize| p.add(at).cast::<u64>().read_unaligned();
        if len >= 8 {
            let mut acc = word(0) | word(len - 8);
            if len > 16 {
                let mut at = 8;
                while at + 8 < len {
                    acc |= word(at);
                    at += 8;
                }
            }
            acc
        } else if len >= 4 {
            u64::from(
                p.cast::<u32>().read_unaligned() | p.add(len - 4).cast::<u32>().read_unaligned(),
            )
        } else {
            u64::from(*p | *p.add(len / 2) | *p.add(len - 1))
        }
    }
}

/// Whether `e` plainly passes [`event_from_raw`] and [`EventIn::validate`]: its
/// strings ASCII and its payload within bounds, each pointer non-NULL unless its
/// length is 0, every size and the year within the limits. A cheap, conservative
/// test: `false` only means "check it closely" (non-ASCII ids, errors). A string
/// that is the very one (pointer and length) of the previous event's same field
/// is not read again: it passed, and the caller keeps it unchanged for the call.
///
/// # Safety
/// Each (pointer, length) pair of `e` and `prev` is NULL or points to that many
/// readable bytes (the module contract of a caller's `eh_event`); `prev`, if any,
/// passed this test or [`event_from_raw`].
#[inline(always)]
unsafe fn plainly_valid(e: &RawEvent, prev: Option<&RawEvent>) -> bool {
    let longest = e
        .kind_len
        .max(e.user_id_len)
        .max(e.channel_id_len)
        .max(e.guild_id_len);
    if longest > MAX_FIELD_BYTES || e.timestamp > crate::leaderboard::MAX_TIMESTAMP {
        return false;
    }
    if e.payload_len != 0 && (e.payload.is_null() || e.payload_len > MAX_PAYLOAD_BYTES) {
        return false;
    }
    let same = |a: (*const u8, usize), b: Option<(*const u8, usize)>| b == Some(a);
    // SAFETY: per the contract, each pair is NULL or readable for its length.
    let high = unsafe {
        let field = |ptr: *const u8, len: usize, before: Option<(*const u8, usize)>| {
            if same((ptr, len), before) {
                0
            } else {
                or_bytes(ptr, len)
            }
        };
        field(e.kind, e.kind_len, prev.map(|p| (p.kind, p.kind_len)))
            | field(
                e.user_id,
                e.user_id_len,
                prev.map(|p| (p.user_id, p.user_id_len)),
            )
            | field(
                e.channel_id,
                e.channel_id_len,
                prev.map(|p| (p.channel_id, p.channel_id_len)),
            )
            | field(
                e.guild_id,
                e.guild_id_len,
                prev.map(|p| (p.guild_id, p.guild_id_len)),
            )
    };
    high & 0x8080_8080_8080_8080 == 0
}

/// A caller's `eh_event` array as the events of a batch push: checked with
/// [`plainly_valid`] (the exact checks of [`event_from_raw`] and
/// [`EventIn::validate`] for the events it does not pass), written into the ring
/// slots from the caller's pointers.
struct RawEvents<'a>(&'a [RawEvent]);

impl RawEvents<'_> {
    /// Event `i`.
    ///
    /// # Safety
    /// `i < self.0.len()` (what [`EventSource`] asks of its callers).
    #[inline(always)]
    unsafe fn at(&self, i: usize) -> &RawEvent {
        debug_assert!(i < self.0.len());
        // SAFETY: per this function's contract.
        unsafe { self.0.get_unchecked(i) }
    }

    /// The exact checks, for an event [`plainly_valid`] did not pass: Ok for a
    /// valid one (non-ASCII text), else the error naming it.
    #[cold]
    #[inline(never)]
    fn check_closely(&self, i: usize) -> Result<i64> {
        // SAFETY: a caller's eh_event, valid for the call (the module contract).
        let ev = unsafe { event_from_raw(&self.0[i], i)? };
        ev.validate()
            .map_err(|e| Error::invalid(format!("event {i}: {e}")))?;
        Ok(ev.timestamp)
    }
}

impl EventSource for RawEvents<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    #[inline(always)]
    fn check(&self, i: usize) -> Result<i64> {
        // SAFETY: `i < len()`, and events are checked in order, each only if those
        // before it passed (EventSource's contract): `i - 1` passed. The array is
        // a caller's, valid for the call (the module contract).
        unsafe {
            let e = self.at(i);
            let prev = if i > 0 { Some(self.at(i - 1)) } else { None };
            if plainly_valid(e, prev) {
                return Ok(e.timestamp);
            }
        }
        self.check_closely(i)
    }

    #[inline(always)]
    fn event(&self, i: usize) -> EventIn<'_> {
        // SAFETY: `EventSource::event` is called only for checked events (`i <
        // len()`), which passed `event_from_raw`'s checks (or `plainly_valid`'s,
        // stricter); the caller's array and what it points to are valid for the
        // call.
        unsafe { checked_event(self.at(i)) }
    }

    #[inline(always)]
    fn write(&self, i: usize, slot: &mut MaybeUninit<Record>, timestamp: i64) {
        // SAFETY: as in `event`: `i < len()`, each pair is readable (or has length
        // 0), the strings UTF-8 and every size validated.
        unsafe {
            let e = self.at(i);
            Record::write_parts(
                slot,
                [
                    (e.kind, e.kind_len),
                    (e.user_id, e.user_id_len),
                    (e.channel_id, e.channel_id_len),
                    (e.guild_id, e.guild_id_len),
                    (e.payload, e.payload_len),
                ],
                timestamp,
            );
        }
    }

    #[inline(always)]
    fn timestamp(&self, i: usize) -> i64 {
        // SAFETY: `i < len()` (EventSource's contract).
        unsafe { self.at(i) }.timestamp
    }
}

/// Offers `n` events in order and writes how many were accepted to `*accepted`,
/// on every return (unlike other out-params): the accepted ones are always the
/// first `*accepted`, and they will be delivered whatever the status, so a retry
/// must resend only the rest. After the first refusal of a full ring the rest are
/// dropped and counted; a short count is not an error: the call returns `EH_OK`.
/// Every event is validated first: one invalid event (or one too far in the
/// future) fails the call (`EH_INVALID_ARGUMENT`, `*accepted` = 0) with nothing
/// pushed. `EH_SHUT_DOWN` with `*accepted` > 0: close began partway through.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_push_batch(
    p: *mut eh_processor,
    events: *const RawEvent,
    n: usize,
    accepted: *mut usize,
) -> eh_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        push_batch(
            "eh_processor_push_batch",
            p,
            events,
            n,
            accepted,
            RoomWait::Configured,
        )
    }
}

/// `eh_processor_push_batch` for a caller that waits for room in slices, as
/// `eh_processor_push_wait` does for one event (e.g. a binding that handles
/// Ctrl-C between slices). Under `EH_OVERFLOW_BLOCK`, a full ring is waited for
/// at most `wait_ms` in all (instead of `block_timeout_ms`); if no room came, with
/// `give_up` non-zero the rest is dropped and counted (`EH_OK`), with `give_up` 0
/// the call returns `EH_TIMEOUT` and the rest was neither pushed nor counted
/// (call again with the events after the first `*accepted`, with `give_up` set
/// on the last try). `*accepted` is written on every return, as by
/// `eh_processor_push_batch`; under `EH_OVERFLOW_DROP_NEWEST` it is
/// `eh_processor_push_batch`. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_push_batch_wait(
    p: *mut eh_processor,
    events: *const RawEvent,
    n: usize,
    accepted: *mut usize,
    wait_ms: u64,
    give_up: i32,
) -> eh_status {
    let wait = RoomWait::Slice {
        wait: std::time::Duration::from_millis(wait_ms),
        give_up: give_up != 0,
    };
    // SAFETY: forwarded from this function's contract.
    unsafe { push_batch("eh_processor_push_batch_wait", p, events, n, accepted, wait) }
}

/// The two batch pushes.
///
/// # Safety
/// As `eh_processor_push_batch`.
unsafe fn push_batch(
    name: &str,
    p: *mut eh_processor,
    events: *const RawEvent,
    n: usize,
    accepted: *mut usize,
    wait: RoomWait,
) -> eh_status {
    guard(name, || {
        let accepted = out_arg(accepted, "accepted")?;
        // SAFETY: checked by `out_arg`. Written first, so every return has a count.
        unsafe { write_out(accepted, 0) };
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        let raw: &[RawEvent] = if n == 0 {
            &[]
        } else if events.is_null() {
            return Err(Error::invalid("events is NULL but n > 0"));
        } else {
            // SAFETY: the caller passes `n` readable events.
            unsafe { std::slice::from_raw_parts(events, n) }
        };
        let (count, result) = processor.push_batch_from(&RawEvents(raw), wait);
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(accepted, count) };
        result
    })
}
