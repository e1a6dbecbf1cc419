//! Events: what a producer pushes ([`EventIn`]), how a ring slot stores it
//! ([`Record`]) and how a worker hands a batch to the flush callback ([`Batch`]).
//!
//! A record copies the strings and payload once, into an inline buffer when they
//! fit in [`INLINE_BYTES`] (the common case: a kind, three ids and no payload), so
//! pushing does not allocate. A worker appends each record's bytes to its batch's
//! arena (one `memcpy`) and, before delivery, builds the C-layout array
//! [`RawEvent`] that points into that arena.

use std::fmt;
use std::mem::MaybeUninit;

/// Bytes of kind + user id + channel id + guild id + payload stored inside the ring
/// slot; longer events spill to one heap allocation.
pub const INLINE_BYTES: usize = 80;

/// Longest kind, user id, channel id or guild id accepted, in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Largest payload accepted, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// An event offered to [`crate::pipeline::Processor::push`]; borrowed, copied on push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventIn<'a> {
    /// Event kind ("message", "reaction"...).
    pub kind: &'a str,
    /// Who did it.
    pub user_id: &'a str,
    /// Where it happened.
    pub channel_id: &'a str,
    /// The guild (server, community) it happened in; empty: none (it then counts
    /// only in the all-guilds figures of the community analytics).
    pub guild_id: &'a str,
    /// Unix seconds; `<= 0` means the processor's "now" at push time.
    pub timestamp: i64,
    /// Opaque bytes carried unchanged to the flush callback (may be empty).
    pub payload: &'a [u8],
}

/// An event as delivered: borrowed from a [`Batch`], valid while the batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// Event kind.
    pub kind: &'a str,
    /// Who did it.
    pub user_id: &'a str,
    /// Where it happened.
    pub channel_id: &'a str,
    /// The guild it happened in (empty: none).
    pub guild_id: &'a str,
    /// Unix seconds (a `<= 0` timestamp was replaced by the clock at push time).
    pub timestamp: i64,
    /// The payload pushed with the event (empty if none).
    pub payload: &'a [u8],
}

impl EventIn<'_> {
    /// Checks field sizes (the strings are UTF-8 by type) and that the timestamp is
    /// not after year 9999.
    #[inline]
    pub fn validate(&self) -> crate::Result<()> {
        // One branch for the common case; the detailed checks only on failure.
        let longest = self
            .kind
            .len()
            .max(self.user_id.len())
            .max(self.channel_id.len())
            .max(self.guild_id.len());
        if longest <= MAX_FIELD_BYTES
            && self.payload.len() <= MAX_PAYLOAD_BYTES
            && self.timestamp <= crate::leaderboard::MAX_TIMESTAMP
        {
            return Ok(());
        }
        self.explain_invalid()
    }

    #[cold]
    fn explain_invalid(&self) -> crate::Result<()> {
        if self.timestamp > crate::leaderboard::MAX_TIMESTAMP {
            return Err(crate::Error::invalid(format!(
                "timestamp {} is after year 9999",
                self.timestamp
            )));
        }
        for (what, len) in [
            ("kind", self.kind.len()),
            ("user_id", self.user_id.len()),
            ("channel_id", self.channel_id.len()),
            ("guild_id", self.guild_id.len()),
        ] {
            if len > MAX_FIELD_BYTES {
                return Err(crate::Error::invalid(format!(
                    "{what} is {len} bytes, longer than the {MAX_FIELD_BYTES}-byte limit"
                )));
            }
        }
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(crate::Error::invalid(format!(
                "payload is {} bytes, larger than the {MAX_PAYLOAD_BYTES}-byte limit",
                self.payload.len()
            )));
        }
        Ok(())
    }
}

/// The events of one batch push, read by index: every one is checked before any
/// is pushed, then each is written into its ring slot. A source reads its events
/// where they are (a caller's `eh_event` array, a slice of [`EventIn`]) instead of
/// building them twice.
pub(crate) trait EventSource {
    /// How many events.
    fn len(&self) -> usize;

    /// Checks event `i` (its strings, sizes and year; not the future skew, which
    /// the processor checks): its timestamp (`<= 0`: now) if it may be pushed,
    /// else the error refusing the batch, naming the event. Must not panic.
    /// Called for `i = 0, 1, ...` in order, each only once every event before it
    /// passed; every method of a source is called only with `i < len()`.
    fn check(&self, i: usize) -> crate::Result<i64>;

    /// Event `i`, which passed [`EventSource::check`] (for the rare paths that
    /// push one event at a time). Must not panic.
    fn event(&self, i: usize) -> EventIn<'_>;

    /// Writes event `i`, which passed [`EventSource::check`], into `slot` with its
    /// timestamp resolved to `timestamp`. Runs inside a claimed ring slot: must not
    /// panic.
    #[inline(always)]
    fn write(&self, i: usize, slot: &mut MaybeUninit<Record>, timestamp: i64) {
        Record::write(slot, &self.event(i), timestamp);
    }

    /// Event `i`'s timestamp as given (`<= 0`: now).
    #[inline(always)]
    fn timestamp(&self, i: usize) -> i64 {
        self.event(i).timestamp
    }
}

impl EventSource for [EventIn<'_>] {
    fn len(&self) -> usize {
        <[EventIn<'_>]>::len(self)
    }

    fn check(&self, i: usize) -> crate::Result<i64> {
        let ev = &self[i];
        ev.validate()
            .map_err(|e| crate::Error::invalid(format!("event {i}: {e}")))?;
        Ok(ev.timestamp)
    }

    fn event(&self, i: usize) -> EventIn<'_> {
        self[i]
    }
}

enum Bytes {
    /// The first `total` bytes (the sum of `lens`) are initialized.
    Inline([MaybeUninit<u8>; INLINE_BYTES]),
    Heap(Box<[u8]>),
}

/// Copies `src` to `dst` ([`copy_short_raw`]).
///
/// # Safety
/// `dst` must be valid for `src.len()` bytes of writes and not overlap `src`.
#[inline(always)]
unsafe fn copy_short(src: &[u8], dst: *mut u8) {
    // SAFETY: `src` is readable for its length; `dst` per this function's contract.
    unsafe { copy_short_raw(src.as_ptr(), src.len(), dst) }
}

/// Copies `n` bytes from `src` to `dst`. Ids and kinds are short: up to 32 bytes
/// move as two overlapping loads and stores of one width (no `memcpy` call, whose
/// dispatch costs more than such a copy); longer ones go to `memcpy`. Nothing is
/// read when `n` is 0.
///
/// # Safety
/// `src` is readable for `n` bytes (any pointer when `n` is 0), `dst` writable for
/// `n` bytes, and they do not overlap.
#[inline(always)]
unsafe fn copy_short_raw(src: *const u8, n: usize, dst: *mut u8) {
    // SAFETY: per the contract; each branch reads and writes inside `[0, n)`.
    // Tested in the order of the usual sizes (ids of 8 to 32 bytes, then kinds).
    unsafe {
        if n >= 8 {
            if n < 16 {
                copy_pair_raw::<8>(src, n, dst);
            } else if n <= 32 {
                copy_pair_raw::<16>(src, n, dst);
            } else {
                std::ptr::copy_nonoverlapping(src, dst, n);
            }
        } else if n >= 4 {
            copy_pair_raw::<4>(src, n, dst);
        } else if n > 0 {
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
    }
}

/// Copies `n` bytes (`W <= n <= 2 * W`) as their first and last `W`.
///
/// # Safety
/// As [`copy_short_raw`], and `W <= n <= 2 * W`.
#[inline(always)]
unsafe fn copy_pair_raw<const W: usize>(src: *const u8, n: usize, dst: *mut u8) {
    // SAFETY: `W <= n`: `[0, W)` and `[n - W, n)` are inside both buffers; both
    // reads happen before either write.
    unsafe {
        let (a, b) = (
            src.cast::<[u8; W]>().read_unaligned(),
            src.add(n - W).cast::<[u8; W]>().read_unaligned(),
        );
        dst.cast::<[u8; W]>().write_unaligned(a);
        dst.add(n - W).cast::<[u8; W]>().write_unaligned(b);
    }
}

/// One event as stored in a ring slot: `kind ‖ user_id ‖ channel_id ‖ guild_id ‖
/// payload` (120 bytes: with its stamp, a slot is two cache lines).
pub struct Record {
    timestamp: i64,
    /// Lengths of kind, user id, channel id, guild id, payload (each ≤ u32 by
    /// validation).
    lens: [u32; 5],
    bytes: Bytes,
}

impl Record {
    /// Copies `ev` (validated by the caller) with `timestamp` resolved. Never
    /// panics (the ring builds records inside a claimed slot).
    #[inline]
    pub fn new(ev: &EventIn<'_>, timestamp: i64) -> Self {
        let mut record = MaybeUninit::uninit();
        Record::write(&mut record, ev, timestamp);
        // SAFETY: `write` initialized it.
        unsafe { record.assume_init() }
    }

    /// [`Record::new`] written straight into `slot` (a ring slot): the strings are
    /// copied once, into their final place, where building the record on the stack
    /// and moving it in costs two more copies of its 112 bytes (and loads that
    /// straddle the strings' small stores, which cannot be forwarded). Never panics.
    #[inline(always)]
    pub(crate) fn write(slot: &mut MaybeUninit<Record>, ev: &EventIn<'_>, timestamp: i64) {
        let part = |b: &[u8]| (b.as_ptr(), b.len());
        let parts = [
            part(ev.kind.as_bytes()),
            part(ev.user_id.as_bytes()),
            part(ev.channel_id.as_bytes()),
            part(ev.guild_id.as_bytes()),
            part(ev.payload),
        ];
        // SAFETY: each pair is a borrowed slice's pointer and length (readable for
        // the call, not overlapping the slot) and the strings are `&str` (UTF-8).
        // The ring's callers validate first (lengths fit `u32`); an unvalidated
        // event built by a test or `Batch::push_event` with a field over 4 GiB
        // would store a shorter length, which reads less, never out of bounds.
        unsafe { Record::write_parts(slot, parts, timestamp) }
    }

    /// [`Record::write`] from the five fields' (pointer, length) pairs in the order
    /// kind, user id, channel id, guild id, payload, read in place (a caller's
    /// `eh_event`). Never panics.
    ///
    /// # Safety
    /// Each pair is a pointer to that many readable bytes, or has length 0 (then
    /// the pointer is not read and may be NULL), the strings are UTF-8, and they
    /// passed [`EventIn::validate`] (so the lengths fit `u32`).
    #[inline(always)]
    pub(crate) unsafe fn write_parts(
        slot: &mut MaybeUninit<Record>,
        parts: [(*const u8, usize); 5],
        timestamp: i64,
    ) {
        let [(_, k), (_, u), (_, c), (_, g), (_, p)] = parts;
        let lens = [k as u32, u as u32, c as u32, g as u32, p as u32];
        // Validated fields are at most 1 KiB and the payload 1 MiB: no overflow.
        let total = k + u + c + g + p;
        if total > INLINE_BYTES {
            let bytes = parts.map(|(ptr, len)| {
                if len == 0 {
                    &[][..]
                } else {
                    // SAFETY: `len` readable bytes at `ptr`, per the contract.
                    unsafe { std::slice::from_raw_parts(ptr, len) }
                }
            });
            slot.write(Record {
                timestamp,
                lens,
                bytes: Bytes::Heap(bytes.concat().into_boxed_slice()),
            });
            return;
        }
        // Not zeroed: only the first `total` bytes are ever read.
        let record = slot.write(Record {
            timestamp,
            lens,
            bytes: Bytes::Inline([MaybeUninit::<u8>::uninit(); INLINE_BYTES]),
        });
        let Bytes::Inline(buf) = &mut record.bytes else {
            unreachable!("written inline just above")
        };
        let dst = buf.as_mut_ptr().cast::<u8>();
        let [(kind, _), (user, _), (channel, _), (guild, _), (payload, _)] = parts;
        // SAFETY: each copy ends at most at `total <= INLINE_BYTES`, inside `buf`;
        // the sources are the caller's (no overlap), each readable for its length.
        unsafe {
            copy_short_raw(kind, k, dst);
            copy_short_raw(user, u, dst.add(k));
            copy_short_raw(channel, c, dst.add(k + u));
            if g != 0 {
                copy_short_raw(guild, g, dst.add(k + u + c));
            }
            if p != 0 {
                copy_short_raw(payload, p, dst.add(k + u + c + g));
            }
        }
    }

    /// The concatenated bytes.
    fn data(&self) -> &[u8] {
        let total = self.lens.iter().map(|&l| l as usize).sum::<usize>();
        match &self.bytes {
            // SAFETY: `new` initialized the first `total` bytes (`total <= INLINE_BYTES`
            // is why it chose the inline buffer).
            Bytes::Inline(buf) => unsafe {
                std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), total)
            },
            Bytes::Heap(buf) => buf,
        }
    }

    /// The event's timestamp (resolved at push).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The stored event.
    pub fn event(&self) -> Event<'_> {
        split(self.data(), self.lens, self.timestamp)
    }
}

/// Splits `kind ‖ user ‖ channel ‖ guild ‖ payload` written from `&str`s.
fn split(data: &[u8], lens: [u32; 5], timestamp: i64) -> Event<'_> {
    let [k, u, c, g, _] = lens.map(|l| l as usize);
    let (kind, rest) = data.split_at(k);
    let (user, rest) = rest.split_at(u);
    let (channel, rest) = rest.split_at(c);
    let (guild, payload) = rest.split_at(g);
    Event {
        kind: utf8(kind),
        user_id: utf8(user),
        channel_id: utf8(channel),
        guild_id: utf8(guild),
        timestamp,
        payload,
    }
}

fn utf8(bytes: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: records and batches are built only from `&str` fields (Record::new), and
    // the splits fall on the recorded field boundaries, so every slice is valid UTF-8.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// An event in the C layout the flush callback receives (`eh_event` in the header).
/// Every pointer is valid only during the callback; strings are UTF-8, not
/// NUL-terminated; `payload` is NULL when `payload_len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawEvent {
    /// Event kind, `kind_len` bytes.
    pub kind: *const u8,
    /// Length of `kind` in bytes.
    pub kind_len: usize,
    /// User id, `user_id_len` bytes.
    pub user_id: *const u8,
    /// Length of `user_id` in bytes.
    pub user_id_len: usize,
    /// Channel id, `channel_id_len` bytes.
    pub channel_id: *const u8,
    /// Length of `channel_id` in bytes.
    pub channel_id_len: usize,
    /// Unix seconds.
    pub timestamp: i64,
    /// Opaque payload pushed with the event, `payload_len` bytes; NULL when empty.
    pub payload: *const u8,
    /// Length of `payload` in bytes.
    pub payload_len: usize,
    /// Guild id, `guild_id_len` bytes (may be NULL when `guild_id_len` is 0: no
    /// guild).
    pub guild_id: *const u8,
    /// Length of `guild_id` in bytes; 0: none.
    pub guild_id_len: usize,
}

struct Entry {
    offset: usize,
    lens: [u32; 5],
    timestamp: i64,
}

/// A batch of events on its way to the flush callback. Built by one worker, reused
/// (its buffers keep their capacity) from batch to batch.
#[derive(Default)]
pub struct Batch {
    arena: Vec<u8>,
    entries: Vec<Entry>,
    raw: Vec<RawEvent>,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.entries.len())
            .finish()
    }
}

impl Batch {
    /// An empty batch with room for `events` events.
    pub fn with_capacity(events: usize) -> Self {
        Batch {
            arena: Vec::with_capacity(events * 32),
            entries: Vec::with_capacity(events),
            raw: Vec::new(),
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a copy of `record`.
    pub fn push(&mut self, record: &Record) {
        self.entries.push(Entry {
            offset: self.arena.len(),
            lens: record.lens,
            timestamp: record.timestamp,
        });
        let data = record.data();
        self.arena.reserve(data.len());
        let len = self.arena.len();
        // SAFETY: `reserve` made room for `data.len()` bytes after `len`; the batch's
        // arena and the record's bytes are separate allocations (no overlap), and
        // `copy_short` initializes exactly the bytes `set_len` then covers.
        unsafe {
            copy_short(data, self.arena.as_mut_ptr().add(len));
            self.arena.set_len(len + data.len());
        }
    }

    /// Appends an event (used by tests and by callers that build batches directly).
    pub fn push_event(&mut self, ev: &EventIn<'_>) {
        self.push(&Record::new(ev, ev.timestamp));
    }

    /// The `i`-th event.
    pub fn get(&self, i: usize) -> Option<Event<'_>> {
        let e = self.entries.get(i)?;
        Some(split(&self.arena[e.offset..], e.lens, e.timestamp))
    }

    /// The events in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Event<'_>> + '_ {
        self.iter_from(0)
    }

    /// The events from the `start`-th on (none if `start >= len`).
    pub fn iter_from(&self, start: usize) -> impl ExactSizeIterator<Item = Event<'_>> + '_ {
        self.entries[start.min(self.entries.len())..]
            .iter()
            .map(|e| split(&self.arena[e.offset..], e.lens, e.timestamp))
    }

    /// The events in the C layout, pointing into this batch.
    pub fn raw(&mut self) -> &[RawEvent] {
        let base = self.arena.as_ptr();
        self.raw.clear();
        self.raw.extend(self.entries.iter().map(|e| {
            let [k, u, c, g, p] = e.lens.map(|l| l as usize);
            // SAFETY: each entry's `offset + k + u + c + g + p` bytes were appended to the
            // arena by `push`, so every pointer below stays inside (or one past the end
            // of) the arena allocation.
            let at = |delta: usize| unsafe { base.add(e.offset + delta) };
            RawEvent {
                kind: at(0),
                kind_len: k,
                user_id: at(k),
                user_id_len: u,
                channel_id: at(k + u),
                channel_id_len: c,
                timestamp: e.timestamp,
                payload: if p == 0 {
                    std::ptr::null()
                } else {
                    at(k + u + c + g)
                },
                payload_len: p,
                guild_id: at(k + u + c),
                guild_id_len: g,
            }
        }));
        &self.raw
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.entries.clear();
        self.raw.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(kind: &'a str, user: &'a str, channel: &'a str, payload: &'a [u8]) -> EventIn<'a> {
        EventIn {
            kind,
            user_id: user,
            channel_id: channel,
            guild_id: "",
            timestamp: 1_700_000_000,
            payload,
        }
    }

    #[test]
    fn copy_short_copies_every_length_exactly() {
        let src: Vec<u8> = (1..=80).collect();
        for n in 0..=80 {
            let mut dst = [0u8; 82];
            // SAFETY: `dst[1..]` has 81 bytes, at least `n`; separate arrays.
            unsafe { copy_short(&src[..n], dst.as_mut_ptr().add(1)) };
            assert_eq!(&dst[1..=n], &src[..n], "length {n}");
            assert!(
                dst[0] == 0 && dst[n + 1..].iter().all(|&b| b == 0),
                "length {n}"
            );
        }
    }

    #[test]
    fn short_events_stay_inline_and_round_trip() {
        let input = ev("message", "123456789012345678", "général", b"");
        let rec = Record::new(&input, 42);
        assert!(matches!(rec.bytes, Bytes::Inline(_)));
        let out = rec.event();
        assert_eq!(
            (
                out.kind,
                out.user_id,
                out.channel_id,
                out.timestamp,
                out.payload
            ),
            ("message", "123456789012345678", "général", 42, &b""[..])
        );
    }

    #[test]
    fn long_events_spill_and_round_trip() {
        let payload = vec![7u8; 500];
        let input = ev("reaction", "u", "c", &payload);
        let rec = Record::new(&input, 1);
        assert!(matches!(rec.bytes, Bytes::Heap(_)));
        assert_eq!(rec.event().payload, &payload[..]);
        assert_eq!(rec.event().channel_id, "c");
    }

    #[test]
    fn oversized_fields_are_rejected() {
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        assert!(ev("k", &long, "c", b"").validate().is_err());
        assert!(ev(&long, "u", "c", b"").validate().is_err());
        let big = vec![0u8; MAX_PAYLOAD_BYTES + 1];
        assert!(ev("k", "u", "c", &big).validate().is_err());
        assert!(ev("k", "u", "c", b"ok").validate().is_ok());
    }

    #[test]
    fn batch_raw_view_points_at_each_field() {
        let mut batch = Batch::with_capacity(2);
        batch.push_event(&ev("a", "bb", "ccc", b""));
        batch.push_event(&ev("dddd", "e", "", b"\x00\x01"));
        let raw = batch.raw().to_vec();
        // SAFETY: (test) the pointers come from `batch`, alive and unchanged here.
        let s = |p: *const u8, n: usize| unsafe { std::slice::from_raw_parts(p, n) };
        assert_eq!(s(raw[0].kind, raw[0].kind_len), b"a");
        assert_eq!(s(raw[0].user_id, raw[0].user_id_len), b"bb");
        assert_eq!(s(raw[0].channel_id, raw[0].channel_id_len), b"ccc");
        assert!(raw[0].payload.is_null());
        assert_eq!(s(raw[1].kind, raw[1].kind_len), b"dddd");
        assert_eq!(raw[1].channel_id_len, 0);
        assert_eq!(s(raw[1].payload, raw[1].payload_len), b"\x00\x01");
        let kinds: Vec<_> = batch.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["a", "dddd"]);
        batch.clear();
        assert!(batch.is_empty() && batch.raw().is_empty());
    }
}
