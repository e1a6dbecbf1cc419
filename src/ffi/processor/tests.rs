//! The processor's C ABI driven from Rust as a C caller would: close and free
//! from callbacks, calls after close, counts written on every return, refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::{CStr, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::super::{
    EH_INVALID_ARGUMENT, EH_OK, EH_SHUT_DOWN, EH_WOULD_DEADLOCK, eh_last_error, eh_status,
};
use super::*;
use crate::pipeline::{HookPoint, RawEvent};

const WAIT: Duration = Duration::from_secs(30);

fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

fn last_error() -> String {
    // SAFETY: eh_last_error returns a valid NUL-terminated thread-local string.
    unsafe { CStr::from_ptr(eh_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn new_processor(batch_size: u32) -> *mut eh_processor {
    let cfg = eh_processor_config {
        capacity: 1024,
        workers: 1,
        batch_size,
        flush_interval_ms: 10,
        ..Default::default()
    };
    let mut p = std::ptr::null_mut();
    // SAFETY: valid config and out-param.
    assert_eq!(unsafe { eh_processor_new(&cfg, &mut p) }, EH_OK);
    p
}

fn push(p: *mut eh_processor, user: &str, ts: i64) -> eh_status {
    // SAFETY: the handle is live; the strings are valid for the call.
    unsafe {
        eh_processor_push(
            p,
            b"m".as_ptr(),
            1,
            user.as_ptr(),
            user.len(),
            b"c".as_ptr(),
            1,
            ts,
            std::ptr::null(),
            0,
        )
    }
}

/// One `m`/`c` event per user id, pointing into `ids` (keep them alive).
fn raw_events(ids: &[String]) -> Vec<RawEvent> {
    ids.iter()
        .map(|u| RawEvent {
            kind: b"m".as_ptr(),
            kind_len: 1,
            user_id: u.as_ptr(),
            user_id_len: u.len(),
            channel_id: b"c".as_ptr(),
            channel_id_len: 1,
            timestamp: 0,
            payload: std::ptr::null(),
            payload_len: 0,
            guild_id: std::ptr::null(),
            guild_id_len: 0,
        })
        .collect()
}

/// What a test callback sees; passed as `user_data`.
#[derive(Default)]
struct Probe {
    handle: AtomicPtr<eh_processor>,
    events: AtomicU64,
    close_status: AtomicI32,
    /// What to do inside the first callback: 0 nothing, 1 close, 2 free.
    action: AtomicI32,
    acted: AtomicBool,
    finalized: AtomicBool,
    late_call: AtomicBool,
}

unsafe extern "C" fn probe_flush(user: *mut c_void, _events: *const RawEvent, n: usize) -> i32 {
    // SAFETY: `user` is the test's `Probe`, alive until its finalizer ran.
    let probe = unsafe { &*(user as *const Probe) };
    if probe.finalized.load(Ordering::SeqCst) {
        probe.late_call.store(true, Ordering::SeqCst);
    }
    if !probe.acted.swap(true, Ordering::SeqCst) {
        let p = probe.handle.load(Ordering::SeqCst);
        match probe.action.load(Ordering::SeqCst) {
            // SAFETY: the handle is live (the test frees it only through here).
            1 => probe
                .close_status
                .store(unsafe { eh_processor_close(p) }, Ordering::SeqCst),
            // SAFETY: as above; nothing uses the handle after this free.
            2 => unsafe { eh_processor_free(p) },
            _ => {}
        }
    }
    probe.events.fetch_add(n as u64, Ordering::SeqCst);
    0
}

unsafe extern "C" fn probe_finalize(user: *mut c_void) {
    // SAFETY: as in `probe_flush`.
    let probe = unsafe { &*(user as *const Probe) };
    probe.finalized.store(true, Ordering::SeqCst);
}

fn install(p: *mut eh_processor, probe: &Arc<Probe>) {
    probe.handle.store(p, Ordering::SeqCst);
    let user = Arc::as_ptr(probe) as *mut c_void;
    // SAFETY: live handle; `user` outlives the processor (the test holds the Arc).
    let rc = unsafe {
        eh_processor_set_flush_callback(p, Some(probe_flush), user, Some(probe_finalize))
    };
    assert_eq!(rc, EH_OK);
}

// Regression: eh_processor_close inside the processor's own flush callback is
// refused with EH_WOULD_DEADLOCK and changes nothing.
#[test]
fn close_inside_its_own_callback_would_deadlock_and_the_handle_stays_usable() {
    let p = new_processor(1);
    let probe = Arc::new(Probe::default());
    probe.action.store(1, Ordering::SeqCst);
    install(p, &probe);
    assert_eq!(push(p, "1", 0), EH_OK);
    assert!(wait_until(|| probe.events.load(Ordering::SeqCst) == 1));
    assert_eq!(probe.close_status.load(Ordering::SeqCst), EH_WOULD_DEADLOCK);
    // Still fully usable: intake, delivery, flush.
    assert_eq!(push(p, "2", 0), EH_OK);
    // SAFETY: live handle.
    assert_eq!(unsafe { eh_processor_flush(p, 30_000) }, EH_OK);
    assert_eq!(probe.events.load(Ordering::SeqCst), 2);
    assert!(!probe.finalized.load(Ordering::SeqCst));
    // SAFETY: live handle, then closed twice, then freed once.
    unsafe {
        assert_eq!(eh_processor_close(p), EH_OK);
        assert!(
            probe.finalized.load(Ordering::SeqCst),
            "finalizer runs at close"
        );
        assert_eq!(eh_processor_close(p), EH_OK, "idempotent");
        eh_processor_free(p);
    }
}

// eh_processor_free inside its own callback: the reaper drains, delivers, joins and
// then finalizes; no callback runs after the finalizer.
#[test]
fn free_inside_its_own_callback_is_handed_to_a_reaper() {
    let p = new_processor(1);
    let probe = Arc::new(Probe::default());
    install(p, &probe);
    for i in 0..20 {
        assert_eq!(push(p, &i.to_string(), 0), EH_OK);
    }
    // Armed only now, so the free happens with events still queued.
    probe.action.store(2, Ordering::SeqCst);
    probe.acted.store(false, Ordering::SeqCst);
    assert_eq!(push(p, "last", 0), EH_OK);
    assert!(
        wait_until(|| probe.finalized.load(Ordering::SeqCst)),
        "the reaper never finalized"
    );
    assert_eq!(probe.events.load(Ordering::SeqCst), 21, "events lost");
    assert!(!probe.late_call.load(Ordering::SeqCst));
}

#[test]
fn calls_after_close_are_refused_and_keep_the_callers_user_data() {
    let p = new_processor(10);
    let probe = Arc::new(Probe::default());
    install(p, &probe);
    assert_eq!(push(p, "1", 0), EH_OK);
    let other = Arc::new(Probe::default());
    // SAFETY: live handle (closed, not freed) throughout; freed once at the end.
    unsafe {
        assert_eq!(eh_processor_close(p), EH_OK);
        assert_eq!(probe.events.load(Ordering::SeqCst), 1, "close delivers");
        assert_eq!(push(p, "2", 0), EH_SHUT_DOWN);
        assert_eq!(eh_processor_flush(p, 1000), EH_SHUT_DOWN);
        let mut s = eh_processor_stats::default();
        assert_eq!(eh_processor_get_stats(p, &mut s), EH_SHUT_DOWN);
        let user = Arc::as_ptr(&other) as *mut c_void;
        assert_eq!(
            eh_processor_set_flush_callback(p, Some(probe_flush), user, Some(probe_finalize)),
            EH_SHUT_DOWN
        );
        assert!(
            !other.finalized.load(Ordering::SeqCst),
            "refused: not finalized"
        );
        assert_eq!(
            eh_processor_close(std::ptr::null_mut()),
            EH_INVALID_ARGUMENT
        );
        eh_processor_free(p);
    }
}

// Regression: a batch interrupted by close writes its count with EH_SHUT_DOWN.
#[test]
fn push_batch_interrupted_by_close_writes_its_count() {
    let p = new_processor(1000);
    let probe = Arc::new(Probe::default());
    install(p, &probe);
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (reached_tx, release_rx) = (Mutex::new(reached_tx), Mutex::new(release_rx));
    // SAFETY: live handle. The batch claims two slots at a time: close comes
    // between two runs.
    unsafe { &(*p).processor }.set_batch_run(2);
    // SAFETY: live handle.
    unsafe { &(*p).processor }.set_test_hook(move |at| {
        if at == HookPoint::BatchAccepted(2) && std::thread::current().name() == Some("pusher") {
            let _ = reached_tx.lock().unwrap().send(());
            let _ = release_rx.lock().unwrap().recv_timeout(WAIT);
        }
    });
    let handle = p as usize;
    let pusher = std::thread::Builder::new()
        .name("pusher".into())
        .spawn(move || {
            let ids: Vec<String> = (0..5).map(|i| i.to_string()).collect();
            let events = raw_events(&ids);
            let mut accepted = 99usize;
            // SAFETY: live handle (closed meanwhile, freed only after this joins).
            let rc = unsafe {
                eh_processor_push_batch(
                    handle as *mut eh_processor,
                    events.as_ptr(),
                    5,
                    &mut accepted,
                )
            };
            (rc, accepted)
        })
        .unwrap();
    reached_rx.recv_timeout(WAIT).unwrap();
    let closer = std::thread::spawn(move || {
        // SAFETY: live handle; close may race with the push.
        unsafe { eh_processor_close(handle as *mut eh_processor) }
    });
    // SAFETY: live handle.
    assert!(wait_until(|| unsafe { &(*p).processor }.workers_exited()));
    release_tx.send(()).unwrap();
    assert_eq!(pusher.join().unwrap(), (EH_SHUT_DOWN, 2));
    assert_eq!(closer.join().unwrap(), EH_OK);
    assert_eq!(
        probe.events.load(Ordering::SeqCst),
        2,
        "exactly the counted ones"
    );
    // SAFETY: no other call is in progress.
    unsafe { eh_processor_free(p) };
}

#[test]
fn far_future_timestamps_and_long_windows_are_refused() {
    let cfg = eh_processor_config {
        clock: EH_CLOCK_EVENT_TIME,
        max_future_skew_secs: 60,
        window_minutes: 30,
        ..Default::default()
    };
    let mut p = std::ptr::null_mut();
    // SAFETY: valid config and out-param; the handle is live until freed below.
    unsafe {
        assert_eq!(eh_processor_new(&cfg, &mut p), EH_OK);
        let year_3000 = 32_503_680_000;
        assert_eq!(push(p, "u", year_3000), EH_INVALID_ARGUMENT);
        assert!(last_error().contains("max_future_skew"), "{}", last_error());
        assert_eq!(push(p, "v", 1_700_000_000), EH_OK);
        assert_eq!(eh_processor_flush(p, 30_000), EH_OK);
        let mut s = eh_processor_stats::default();
        assert_eq!(eh_processor_get_stats(p, &mut s), EH_OK);
        assert_eq!((s.future_refused, s.accepted), (1, 1));
        let mut now = 0i64;
        assert_eq!(eh_processor_now(p, &mut now), EH_OK);
        assert_eq!(
            now, 1_700_000_000,
            "the refused event did not move the clock"
        );
        let mut users = 7u64;
        assert_eq!(
            eh_processor_unique_users(p, 3600, 0, &mut users),
            EH_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("30 minutes (1800 s)"),
            "{}",
            last_error()
        );
        assert_eq!(users, 7, "not written on failure");
        assert_eq!(eh_processor_unique_users(p, 1800, 0, &mut users), EH_OK);
        assert_eq!(users, 1);
        let mut list = std::mem::zeroed::<eh_channel_list>();
        assert_eq!(
            eh_processor_top_channels(p, 3, 86_400, 0, &mut list),
            EH_INVALID_ARGUMENT
        );
        eh_processor_free(p);
    }
}

#[test]
fn workers_none_is_the_synchronous_mode_through_the_c_config() {
    let mut cfg = eh_processor_config {
        capacity: 64,
        workers: EH_WORKERS_NONE,
        batch_size: 4,
        ..Default::default()
    };
    cfg.overflow = EH_OVERFLOW_BLOCK;
    let mut p = std::ptr::null_mut();
    // SAFETY: valid config and out-param.
    assert_eq!(
        unsafe { eh_processor_new(&cfg, &mut p) },
        EH_INVALID_ARGUMENT
    );
    assert!(last_error().contains("BLOCK"), "{}", last_error());
    cfg.overflow = EH_OVERFLOW_DROP_NEWEST;
    // SAFETY: as above.
    assert_eq!(unsafe { eh_processor_new(&cfg, &mut p) }, EH_OK);
    let probe = Arc::new(Probe::default());
    install(p, &probe);
    for i in 0..10 {
        assert_eq!(push(p, &format!("u{i}"), 0), EH_OK);
    }
    assert_eq!(probe.events.load(Ordering::SeqCst), 0, "no thread delivers");
    let mut ticket = 0u64;
    // SAFETY: live handle, valid out-param.
    assert_eq!(unsafe { eh_processor_flush_start(p, &mut ticket) }, EH_OK);
    assert_eq!(probe.events.load(Ordering::SeqCst), 0, "start only records");
    // SAFETY: live handle.
    assert_eq!(unsafe { eh_processor_flush_wait(p, ticket, 0) }, EH_OK);
    assert_eq!(probe.events.load(Ordering::SeqCst), 10);
    // SAFETY: live handle.
    assert_eq!(
        unsafe { eh_processor_flush_wait(p, ticket + 1, 0) },
        EH_INVALID_ARGUMENT
    );
    assert_eq!(push(p, "last", 0), EH_OK);
    // SAFETY: live handle; freed once below.
    unsafe {
        assert_eq!(eh_processor_close_timeout(p, 0), EH_OK);
        assert_eq!(eh_processor_close_timeout(p, 0), EH_OK, "idempotent");
        eh_processor_free(p);
    }
    assert_eq!(probe.events.load(Ordering::SeqCst), 11);
    assert!(probe.finalized.load(Ordering::SeqCst));
}

/// A flush callback that waits until `Gate.open` is set.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    entered: AtomicU64,
    events: AtomicU64,
}

unsafe extern "C" fn gated_flush(user: *mut c_void, _events: *const RawEvent, n: usize) -> i32 {
    // SAFETY: `user` is the test's `Gate`, alive until the processor is freed.
    let gate = unsafe { &*(user as *const Gate) };
    gate.entered.fetch_add(1, Ordering::SeqCst);
    assert!(wait_until(|| gate.open.load(Ordering::SeqCst)));
    gate.events.fetch_add(n as u64, Ordering::SeqCst);
    0
}

#[test]
fn close_timeout_returns_timeout_while_draining_and_is_callable_again() {
    let p = new_processor(1);
    let gate = Arc::new(Gate::default());
    // SAFETY: live handle; `gate` outlives the processor (freed below).
    let rc = unsafe {
        eh_processor_set_flush_callback(
            p,
            Some(gated_flush),
            Arc::as_ptr(&gate) as *mut c_void,
            None,
        )
    };
    assert_eq!(rc, EH_OK);
    assert_eq!(push(p, "u1", 0), EH_OK);
    assert_eq!(push(p, "u2", 0), EH_OK);
    // SAFETY: live handle.
    unsafe {
        assert_eq!(eh_processor_close_timeout(p, 10), super::super::EH_TIMEOUT);
        assert_eq!(push(p, "u3", 0), EH_SHUT_DOWN);
        assert_eq!(eh_processor_close_timeout(p, 0), super::super::EH_TIMEOUT);
    }
    gate.open.store(true, Ordering::SeqCst);
    // SAFETY: live handle; freed once.
    unsafe {
        assert_eq!(eh_processor_close_timeout(p, 30_000), EH_OK);
        eh_processor_free(p);
    }
    assert_eq!(gate.events.load(Ordering::SeqCst), 2);
}

#[test]
fn minute_events_reads_the_ring_and_refuses_bad_arguments() {
    let cfg = eh_processor_config {
        clock: EH_CLOCK_EVENT_TIME,
        window_minutes: 60,
        ..Default::default()
    };
    let mut p = std::ptr::null_mut();
    let minute = 1_700_000_040; // a minute start
    // SAFETY: valid config and out-params; the handle is live until freed below.
    unsafe {
        assert_eq!(eh_processor_new(&cfg, &mut p), EH_OK);
        for (user, ts) in [("a", minute), ("b", minute + 59), ("c", minute + 120)] {
            assert_eq!(push(p, user, ts), EH_OK);
        }
        assert_eq!(eh_processor_flush(p, 30_000), EH_OK);
        let mut counts = [7u64; 4];
        // Any second of the first minute names it.
        assert_eq!(
            eh_processor_minute_events(p, minute - 60 + 17, 4, counts.as_mut_ptr()),
            EH_OK
        );
        assert_eq!(counts, [0, 2, 0, 1]);
        assert_eq!(
            eh_processor_minute_events(p, minute, 0, std::ptr::null_mut()),
            EH_OK
        );
        assert_eq!(
            eh_processor_minute_events(p, minute, 1, std::ptr::null_mut()),
            EH_INVALID_ARGUMENT
        );
        let mut big = vec![5u64; 10_081];
        assert_eq!(
            eh_processor_minute_events(p, minute, big.len(), big.as_mut_ptr()),
            EH_INVALID_ARGUMENT
        );
        assert!(big.iter().all(|&n| n == 5), "not written on failure");
        assert_eq!(eh_processor_close(p), EH_OK);
        assert_eq!(
            eh_processor_minute_events(p, minute, 4, counts.as_mut_ptr()),
            EH_SHUT_DOWN
        );
        eh_processor_free(p);
    }
}

fn dropped(p: *mut eh_processor) -> u64 {
    // SAFETY: a live handle.
    unsafe { processor(p) }.unwrap().stats().unwrap().dropped
}

#[test]
fn push_batch_wait_times_out_with_its_prefix_or_gives_up_counting_the_rest() {
    let cfg = eh_processor_config {
        capacity: 8,
        workers: 1,
        batch_size: 1,
        flush_interval_ms: 10,
        overflow: EH_OVERFLOW_BLOCK,
        block_timeout_ms: 60_000,
        ..Default::default()
    };
    let mut p = std::ptr::null_mut();
    let gate = Arc::new(Gate::default());
    // SAFETY: valid config and out-param; `gate` outlives the processor.
    unsafe {
        assert_eq!(eh_processor_new(&cfg, &mut p), EH_OK);
        let user = Arc::as_ptr(&gate) as *mut c_void;
        assert_eq!(
            eh_processor_set_flush_callback(p, Some(gated_flush), user, None),
            EH_OK
        );
    }
    // The worker holds the first event in its callback: the ring is then empty
    // and nothing drains it until the gate opens.
    assert_eq!(push(p, "first", 0), EH_OK);
    assert!(wait_until(|| gate.entered.load(Ordering::SeqCst) == 1));
    let ids: Vec<String> = (0..12).map(|i| format!("u{i}")).collect();
    let raw = raw_events(&ids);
    let mut accepted = usize::MAX;
    // SAFETY: live handle; `raw` points into `ids`, alive for the calls.
    unsafe {
        // No room within 20 ms: the prefix that fit, the rest not counted.
        let rc = eh_processor_push_batch_wait(p, raw.as_ptr(), raw.len(), &mut accepted, 20, 0);
        assert_eq!(rc, super::super::EH_TIMEOUT, "{}", last_error());
        assert_eq!(accepted, 8);
        assert_eq!(dropped(p), 0);
        // Giving up on the last slice: the rest is dropped and counted.
        let rest = &raw[8..];
        let rc = eh_processor_push_batch_wait(p, rest.as_ptr(), rest.len(), &mut accepted, 0, 1);
        assert_eq!((rc, accepted), (EH_OK, 0));
        assert_eq!(dropped(p), 4);
        // An invalid event refuses the whole batch before any wait.
        let mut bad = raw[..2].to_vec();
        bad[1].user_id = std::ptr::null();
        let rc = eh_processor_push_batch_wait(p, bad.as_ptr(), 2, &mut accepted, 20, 0);
        assert_eq!((rc, accepted), (EH_INVALID_ARGUMENT, 0));
    }
    // Room comes while a call waits: it returns once all fit.
    let opener = {
        let gate = Arc::clone(&gate);
        std::thread::spawn(move || gate.open.store(true, Ordering::SeqCst))
    };
    // SAFETY: as above.
    unsafe {
        let rest = &raw[8..];
        let rc =
            eh_processor_push_batch_wait(p, rest.as_ptr(), rest.len(), &mut accepted, 60_000, 0);
        assert_eq!((rc, accepted), (EH_OK, 4), "{}", last_error());
    }
    opener.join().unwrap();
    // SAFETY: live handle; freed once.
    unsafe {
        assert_eq!(eh_processor_close(p), EH_OK);
        eh_processor_free(p);
    }
    assert_eq!(gate.events.load(Ordering::SeqCst), 1 + 8 + 4);
}

type Delivered = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, i64, Vec<u8>);

/// Copies each delivered event (`user` is a `Mutex<Vec<Delivered>>`).
unsafe extern "C" fn collect_flush(user: *mut c_void, events: *const RawEvent, n: usize) -> i32 {
    // SAFETY: `user` is the collector the test registered, alive while the
    // processor is; `events` holds `n` events valid for the call.
    unsafe {
        let out = &*(user as *const Mutex<Vec<Delivered>>);
        let bytes = |p: *const u8, len: usize| {
            if len == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(p, len).to_vec()
            }
        };
        let mut out = out.lock().unwrap();
        for e in std::slice::from_raw_parts(events, n) {
            out.push((
                bytes(e.kind, e.kind_len),
                bytes(e.user_id, e.user_id_len),
                bytes(e.channel_id, e.channel_id_len),
                bytes(e.guild_id, e.guild_id_len),
                e.timestamp,
                bytes(e.payload, e.payload_len),
            ));
        }
    }
    0
}

fn raw_of(
    kind: &[u8],
    user: &[u8],
    channel: &[u8],
    guild: &[u8],
    timestamp: i64,
    payload: &[u8],
) -> RawEvent {
    let ptr = |b: &[u8]| {
        if b.is_empty() {
            std::ptr::null()
        } else {
            b.as_ptr()
        }
    };
    RawEvent {
        kind: ptr(kind),
        kind_len: kind.len(),
        user_id: ptr(user),
        user_id_len: user.len(),
        channel_id: ptr(channel),
        channel_id_len: channel.len(),
        guild_id: ptr(guild),
        guild_id_len: guild.len(),
        timestamp,
        payload: ptr(payload),
        payload_len: payload.len(),
    }
}

#[test]
fn push_batch_refuses_each_invalid_event_as_the_exact_checks_name_it() {
    // The batch push checks events with a cheap test and the exact checks only
    // for those it does not pass: every refusal is still the exact one (its
    // message, nothing pushed), and a string shared with the event before it
    // (same pointer) is no exception.
    let p = new_processor(100);
    let now = crate::leaderboard::wall_clock_secs();
    let long = vec![b'x'; 1025];
    let big = vec![0u8; (1 << 20) + 1];
    let bad_utf8 = [b'u', 0xff, b'v'];
    let good = raw_of(
        b"message",
        b"123456789012345678",
        b"general",
        b"876543210987654321",
        now,
        b"",
    );
    type Spoil<'a> = Box<dyn Fn(&mut RawEvent) + 'a>;
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "NULL kind",
            Box::new(|e| e.kind = std::ptr::null()),
            "events[1]: kind is NULL but its length is 7",
        ),
        (
            "NULL payload",
            Box::new(|e| e.payload_len = 3),
            "events[1]: payload is NULL but its length is 3",
        ),
        (
            "bad UTF-8",
            Box::new(|e| (e.user_id, e.user_id_len) = (bad_utf8.as_ptr(), 3)),
            "events[1]: user_id is not valid UTF-8",
        ),
        (
            "bad UTF-8 guild",
            Box::new(|e| (e.guild_id, e.guild_id_len) = (bad_utf8.as_ptr(), 3)),
            "events[1]: guild_id is not valid UTF-8",
        ),
        (
            "long guild",
            Box::new(|e| (e.guild_id, e.guild_id_len) = (long.as_ptr(), long.len())),
            "event 1: guild_id is 1025 bytes, longer than the 1024-byte limit",
        ),
        (
            "long id",
            Box::new(|e| (e.channel_id, e.channel_id_len) = (long.as_ptr(), long.len())),
            "event 1: channel_id is 1025 bytes, longer than the 1024-byte limit",
        ),
        (
            "big payload",
            Box::new(|e| (e.payload, e.payload_len) = (big.as_ptr(), big.len())),
            "event 1: payload is 1048577 bytes, larger than the 1048576-byte limit",
        ),
        (
            "year 10000",
            Box::new(|e| e.timestamp = 253_402_300_800),
            "event 1: timestamp 253402300800 is after year 9999",
        ),
        (
            "future",
            Box::new(|e| e.timestamp = now + 30 * 86_400),
            "event 1: timestamp",
        ),
    ];
    for (what, spoil, message) in cases {
        let mut events = [good, good, good];
        spoil(&mut events[1]);
        let mut accepted = usize::MAX;
        // SAFETY: live handle; the events point to data alive for the call.
        let rc = unsafe { eh_processor_push_batch(p, events.as_ptr(), 3, &mut accepted) };
        assert_eq!((rc, accepted), (EH_INVALID_ARGUMENT, 0), "{what}");
        // The messages are the exact checks' (which nest "invalid argument: ").
        let (at, detail) = message.split_once(": ").unwrap();
        let error = last_error();
        assert!(
            error.contains(&format!("{at}: ")) && error.contains(detail),
            "{what}: {error}"
        );
    }
    // The first event's invalid kind, shared by the second: refused at the first.
    let mut events = [good, good];
    events[0].kind = bad_utf8.as_ptr();
    events[0].kind_len = 3;
    events[1].kind = events[0].kind;
    events[1].kind_len = 3;
    let mut accepted = usize::MAX;
    // SAFETY: as above.
    let rc = unsafe { eh_processor_push_batch(p, events.as_ptr(), 2, &mut accepted) };
    assert_eq!((rc, accepted), (EH_INVALID_ARGUMENT, 0));
    let error = last_error();
    assert!(
        error.contains("events[0]: ") && error.contains("kind is not valid UTF-8"),
        "{error}"
    );
    // SAFETY: a live handle.
    let stats = unsafe { processor(p) }.unwrap().stats().unwrap();
    assert_eq!((stats.accepted, stats.future_refused), (0, 1));
    // SAFETY: live handle; freed once.
    unsafe { eh_processor_free(p) };
}

#[test]
fn push_batch_delivers_every_length_and_text_as_given() {
    // Every field length from 0 to 40 bytes (each copy path, both sides of the
    // 80-byte inline limit), non-ASCII text, payloads, and strings shared with the
    // event before (same pointer): delivered byte for byte.
    let collected: Arc<Mutex<Vec<Delivered>>> = Arc::default();
    let p = new_processor(1000);
    // SAFETY: live handle; the collector outlives the processor (freed below).
    unsafe {
        let user = Arc::as_ptr(&collected) as *mut c_void;
        assert_eq!(
            eh_processor_set_flush_callback(p, Some(collect_flush), user, None),
            EH_OK
        );
    }
    let texts: Vec<Vec<u8>> = (0..=40)
        .map(|n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
        .chain(["é", "ユーザー", "🎉 party", "a\0b"].map(|s| s.as_bytes().to_vec()))
        .collect();
    let now = crate::leaderboard::wall_clock_secs();
    let mut events = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let other = &texts[(i * 7 + 3) % texts.len()];
        let payload: &[u8] = if i % 3 == 0 { other } else { b"" };
        let guild: &[u8] = if i % 4 == 0 { b"" } else { other };
        events.push(raw_of(text, other, text, guild, now - i as i64, payload));
        events.push(raw_of(b"message", text, other, text, now, b""));
        let shared = *events.last().unwrap(); // the same pointers again
        events.push(shared);
    }
    let mut accepted = 0;
    // SAFETY: live handle; the events point into `texts`, alive for the call.
    let rc = unsafe { eh_processor_push_batch(p, events.as_ptr(), events.len(), &mut accepted) };
    assert_eq!((rc, accepted), (EH_OK, events.len()), "{}", last_error());
    // SAFETY: live handle; closing delivers everything; freed once.
    unsafe {
        assert_eq!(eh_processor_close(p), EH_OK);
        eh_processor_free(p);
    }
    let bytes = |ptr: *const u8, len: usize| {
        // SAFETY: the events point into `texts` (or are empty).
        if len == 0 {
            Vec::new()
        } else {
            unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
        }
    };
    let expected: Vec<Delivered> = events
        .iter()
        .map(|e| {
            (
                bytes(e.kind, e.kind_len),
                bytes(e.user_id, e.user_id_len),
                bytes(e.channel_id, e.channel_id_len),
                bytes(e.guild_id, e.guild_id_len),
                e.timestamp,
                bytes(e.payload, e.payload_len),
            )
        })
        .collect();
    assert_eq!(*collected.lock().unwrap(), expected);
}
