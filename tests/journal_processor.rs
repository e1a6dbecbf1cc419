//! A processor on a journal: a clean close reopens with the same answers; a
//! kill -9 at any point loses no event that reached the flush callback (each run of
//! events is logged before it is sketched and delivered) and invents none; the
//! publisher's outbox and identity survive; settings are checked; a journal that
//! cannot be written leaves the processor running in memory, saying so.
//!
//! Its own test binary: it forks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engagehub::Error;
use engagehub::community::{CohortPeriod, Period};
use engagehub::journal::SyncMode;
use engagehub::pipeline::durable::JournalConfig;
use engagehub::pipeline::{Batch, Clock, EventIn, Processor, ProcessorConfig};

const T0: i64 = 1_764_633_600;
const WAIT: Duration = Duration::from_secs(60);

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eh-jp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn config(dir: Option<&Path>, workers: usize, window: u32) -> ProcessorConfig {
    let mut c = ProcessorConfig {
        capacity: 1 << 16,
        workers,
        batch_size: 64,
        flush_interval: Duration::from_millis(5),
        clock: Clock::EventTime,
        journal: dir.map(|d| JournalConfig {
            dir: d.to_path_buf(),
            sync: SyncMode::Interval(Duration::from_millis(200)),
        }),
        ..ProcessorConfig::default()
    };
    c.window.window_minutes = window;
    c
}

/// Event `i` of every workload: 3,000 users, 40 channels, three guilds and none,
/// 12 days (the last two hours of them as busy as the rest together).
fn event(i: u64, user: &mut String, channel: &mut String) -> (i64, &'static str) {
    *user = format!("u{}", (i * 7919) % 3000);
    *channel = format!("c{}", (i * 31) % 40 + (i % 3));
    let guild = ["", "g1", "g2", "g3"][(i % 4) as usize];
    let ts = if i % 2 == 0 {
        T0 - 12 * 86_400 + (i as i64 * 12 * 86_400) / 100_000
    } else {
        T0 + (i as i64 * 7200) / 100_000
    };
    (ts, guild)
}

fn push_range(p: &Processor, from: u64, to: u64) {
    let (mut u, mut c) = (String::new(), String::new());
    for i in from..to {
        let (ts, guild) = event(i, &mut u, &mut c);
        let ev = EventIn {
            kind: "message",
            user_id: &u,
            channel_id: &c,
            guild_id: guild,
            timestamp: ts,
            payload: b"",
        };
        while let Err(e) = p.push(&ev) {
            assert_eq!(e, Error::QueueFull);
            std::thread::yield_now();
        }
    }
}

/// What a dashboard reads: events, users (all time, last hour), top channels
/// (all time, last half hour), and the daily history (active users by day, week
/// and month over the last days, retention, heatmaps; per guild and overall).
type Answers = (
    u64,
    u64,
    u64,
    Vec<(String, u64)>,
    Vec<(String, u64)>,
    Vec<u64>,
);

fn history(p: &Processor) -> Vec<u64> {
    let today = engagehub::community::day_of(p.now().expect("now"));
    let mut out = Vec::new();
    for guild in [None, Some("g1"), Some("g3")] {
        for day in today - 12..=today {
            for period in [Period::Day, Period::Week, Period::Month] {
                out.push(p.active_users(day, period, guild).expect("active"));
            }
        }
        for (period, n) in [(CohortPeriod::Day, 14), (CohortPeriod::Week, 3)] {
            for c in p.retention(period, n, 0, guild).expect("retention") {
                out.push(c.size);
                out.extend(c.active);
            }
        }
        for channel in [None, Some("c7")] {
            let map = p.activity_heatmap(14, 0, channel, guild).expect("heatmap");
            out.extend(map.iter().flatten());
        }
    }
    out
}

fn answers(p: &Processor) -> Answers {
    let s = p.stats().expect("stats");
    (
        s.processed,
        p.unique_users(0, 0).expect("users"),
        p.unique_users(3600, 0).expect("users"),
        p.top_channels(10, 0, 0)
            .expect("top")
            .into_iter()
            .map(|c| (c.channel, c.count))
            .collect(),
        p.top_channels(10, 1800, 0)
            .expect("top")
            .into_iter()
            .map(|c| (c.channel, c.count))
            .collect(),
        history(p),
    )
}

fn reference(n: u64, workers: usize) -> Processor {
    let p = Processor::new(config(None, workers, 60)).expect("processor");
    push_range(&p, 0, n);
    p.flush(WAIT).expect("flush");
    p
}

#[test]
fn a_clean_close_reopens_with_the_same_answers_and_outbox() {
    let dir = tmp("clean");
    let before;
    {
        let p = Processor::new(config(Some(&dir), 2, 60)).expect("open");
        push_range(&p, 0, 50_000);
        p.flush(WAIT).expect("flush");
        before = answers(&p);
        assert_eq!(p.publisher_id("writer-1").expect("id"), "writer-1");
        assert_eq!(p.outbox_put(b"batch one").expect("put"), 1);
        assert_eq!(p.outbox_put(b"batch two").expect("put"), 2);
        p.outbox_ack(1, b"base after one").expect("ack");
        p.close().expect("close");
    }
    let p = Processor::new(config(Some(&dir), 2, 60)).expect("reopen");
    assert_eq!(answers(&p), before, "exactly as before the close");
    assert_eq!(p.publisher_id("another").expect("id"), "writer-1");
    assert_eq!(
        p.outbox_pending().expect("pending"),
        Some((2, b"batch two".to_vec()))
    );
    assert_eq!(p.outbox_baseline().expect("baseline"), b"base after one");
    assert_eq!(p.outbox_put(b"three").expect("put"), 3, "numbers go on");
    // And it goes on from there.
    push_range(&p, 50_000, 60_000);
    p.flush(WAIT).expect("flush");
    let reference = reference(60_000, 2);
    let (n, all, hour, top, half, history) = answers(&p);
    let want = answers(&reference);
    assert_eq!((n, all, hour), (want.0, want.1, want.2));
    assert_eq!((top, half), (want.3, want.4));
    assert_eq!(history, want.5);
    assert!(history.iter().any(|&v| v > 0));
    p.close().expect("close");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn kill_9_at_random_points_keeps_every_delivered_event_and_invents_none() {
    let dir = tmp("kill");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut recovered = 0u64;
    for run in 0..8 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = 1_000 + rng % 20_000;
        let mut fds = [0; 2];
        // SAFETY: a valid array for pipe's two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child uses the library and raw syscalls, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: closing our copy of the read end.
            unsafe { libc::close(fds[0]) };
            let writer = fds[1];
            // One worker: the events a kill leaves recovered are a prefix of the
            // stream, so a reference fed that prefix answers the same.
            let Ok(p) = Processor::new(config(Some(&dir), 1, 60)) else {
                // SAFETY: ends the child.
                unsafe { libc::_exit(3) };
            };
            let delivered = Arc::new(AtomicU64::new(0));
            let d = Arc::clone(&delivered);
            p.set_flush_callback(Some(Arc::new(move |batch: &mut Batch| {
                // The database commit: report it (8 bytes) once it is done.
                let n = d.fetch_add(batch.len() as u64, Ordering::SeqCst) + batch.len() as u64;
                // SAFETY: a valid descriptor and 8 bytes.
                unsafe { libc::write(writer, n.to_le_bytes().as_ptr().cast(), 8) };
                Ok(())
            })))
            .expect("callback");
            push_range(&p, recovered, recovered + 200_000);
            p.flush(WAIT).expect("flush");
            // SAFETY: ends the child (not reached if killed).
            unsafe { libc::_exit(0) };
        }
        // SAFETY: closing the parent's copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut committed = 0u64;
        let mut buf = [0u8; 8];
        let mut killed = false;
        loop {
            // SAFETY: reading into a valid buffer.
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 8) };
            if n != 8 {
                break;
            }
            committed = u64::from_le_bytes(buf);
            if committed >= kill_after && !killed {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed = true;
            }
        }
        let mut status = 0;
        // SAFETY: our own child.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
            libc::close(fds[0]);
        }
        assert!(killed, "run {run}: the child ended before the kill");
        let p = Processor::new(config(Some(&dir), 1, 60)).expect("reopen");
        let got = p.stats().expect("stats").processed;
        // Every event the callback committed was journaled before; the ones
        // journaled and not yet committed are at most the batch in flight (one
        // worker: at most one batch of 64, plus the run it was taking, 64 more).
        assert!(
            got >= recovered + committed,
            "run {run}: lost events: {got} < {recovered} + {committed}"
        );
        assert!(
            got <= recovered + committed + 128,
            "run {run}: {got} > {recovered} + {committed} + 128"
        );
        assert_eq!(
            answers(&p),
            answers(&reference(got, 1)),
            "run {run}: the sketches of {got} events"
        );
        recovered = got;
        p.close().expect("close");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn settings_are_checked_and_one_handle_at_a_time() {
    let dir = tmp("settings");
    let p = Processor::new(config(Some(&dir), 1, 60)).expect("open");
    assert!(matches!(
        Processor::new(config(Some(&dir), 1, 60)),
        Err(Error::Busy(_))
    ));
    p.close().expect("close");
    drop(p);
    match Processor::new(config(Some(&dir), 1, 5)) {
        Err(Error::InvalidArgument(m)) => assert!(
            m.contains("window_minutes: journal 60, this handle 5"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    // Another worker count is fine: the sketches merge.
    let p = Processor::new(config(Some(&dir), 3, 60)).expect("three workers");
    p.close().expect("close");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_journal_that_cannot_be_written_leaves_the_processor_running_and_says_so() {
    let dir = tmp("full");
    // SAFETY: the child uses the library and syscalls, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // A 1.5 MiB file size limit: the second segment (2 MiB) cannot be allocated.
        // SAFETY: plain syscalls on this child.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 3 << 19,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
        }
        let code = (|| {
            let p = Processor::new(config(Some(&dir), 1, 60)).map_err(|_| 10)?;
            push_range(&p, 0, 100_000);
            p.flush(WAIT).map_err(|_| 11)?;
            let s = p.stats().map_err(|_| 12)?;
            if s.processed != 100_000 || s.journal_failing != 1 {
                return Err(13);
            }
            let why = p.journal_error().map_err(|_| 14)?.unwrap_or_default();
            if !why.contains("without durability") {
                return Err(15);
            }
            Ok(0)
        })()
        .unwrap_or_else(|c| c);
        // SAFETY: ends the child.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "{status}");
    assert_eq!(libc::WEXITSTATUS(status), 0);
    // What the journal kept is a consistent prefix: it reopens.
    let p = Processor::new(config(Some(&dir), 1, 60)).expect("reopen");
    let n = p.stats().expect("stats").processed;
    assert!(n > 0 && n < 100_000, "{n}");
    assert_eq!(answers(&p), answers(&reference(n, 1)));
    p.close().expect("close");
    std::fs::remove_dir_all(&dir).ok();
}
