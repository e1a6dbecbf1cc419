//! Processor tests: exactly-once delivery under concurrency, ordering, the flush
//! barrier, retries and dead letters, shutdown races, bounded memory, sketches.
//! Every wait is on a condition with a timeout, never a bare sleep.

use super::core::lock;
use super::*;
use crate::error::{Error, Result};
use crate::leaderboard::MAX_TIMESTAMP;
use crate::sketch::ChannelCount;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn config(workers: usize, batch_size: usize) -> ProcessorConfig {
    ProcessorConfig {
        capacity: 1024,
        workers,
        batch_size,
        flush_interval: Duration::from_millis(20),
        retry_backoff: Duration::from_millis(1),
        ..ProcessorConfig::default()
    }
}

/// Pushes one event from each of the users `u0`..`u{n-1}` into `channel`, then
/// flushes.
fn push_users_and_flush(p: &Processor, channel: &str, n: usize) {
    for i in 0..n {
        let user = format!("u{i}");
        let ev = EventIn {
            channel_id: channel,
            ..event(&user)
        };
        p.push(&ev).unwrap();
    }
    p.flush(WAIT).unwrap();
}

fn event(user: &str) -> EventIn<'_> {
    EventIn {
        kind: "message",
        user_id: user,
        channel_id: "general",
        guild_id: "",
        timestamp: 1_700_000_000,
        payload: b"",
    }
}

/// Waits until `cond` holds or `WAIT` passes; returns whether it held.
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

/// A flush callback that records every user id it receives (ids are sequence numbers).
#[derive(Default)]
struct Collector {
    seen: Mutex<Vec<u64>>,
    batches: AtomicU64,
}

impl FlushCallback for Collector {
    fn on_flush(&self, batch: &mut Batch) -> std::result::Result<(), String> {
        let mut seen = lock(&self.seen);
        seen.extend(batch.iter().map(|e| e.user_id.parse::<u64>().unwrap()));
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn push_retrying(p: &Processor, user: &str) -> Result<()> {
    loop {
        match p.push(&event(user)) {
            Err(Error::QueueFull) => std::thread::yield_now(),
            other => return other,
        }
    }
}

#[test]
fn invalid_configs_are_refused() {
    let bad = [
        ProcessorConfig {
            capacity: 0,
            ..config(1, 1)
        },
        ProcessorConfig {
            capacity: MAX_RING_CAPACITY + 1,
            ..config(1, 1)
        },
        ProcessorConfig {
            workers: MAX_WORKERS + 1,
            ..config(1, 1)
        },
        config(1, 0),
        ProcessorConfig {
            flush_interval: Duration::ZERO,
            ..config(1, 1)
        },
        ProcessorConfig {
            max_retries: MAX_RETRIES + 1,
            ..config(1, 1)
        },
    ];
    for cfg in bad {
        assert!(
            matches!(Processor::new(cfg.clone()), Err(Error::InvalidArgument(_))),
            "{cfg:?}"
        );
    }
}

#[test]
fn several_producers_every_event_delivered_exactly_once() {
    const PRODUCERS: u64 = 4;
    const PER: u64 = 25_000;
    let p = Arc::new(Processor::new(config(2, 256)).unwrap());
    let sink = Arc::new(Collector::default());
    p.set_flush_callback(Some(sink.clone())).unwrap();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..PER {
                    push_retrying(&p, &(t * PER + i).to_string()).unwrap();
                }
            })
        })
        .collect();
    for t in producers {
        t.join().unwrap();
    }
    p.flush(WAIT).unwrap();
    let mut seen = lock(&sink.seen).clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..PRODUCERS * PER).collect::<Vec<_>>());
    let s = p.stats().unwrap();
    assert_eq!(s.accepted, PRODUCERS * PER);
    assert_eq!(s.processed, s.accepted);
    assert_eq!(s.delivered, s.accepted);
    assert_eq!(s.pushed, s.accepted + s.dropped);
    assert_eq!(s.batches, sink.batches.load(Ordering::Relaxed));
    assert_eq!(s.queue_len, 0);
}

#[test]
fn one_worker_delivers_in_push_order_in_bounded_batches() {
    let p = Processor::new(config(1, 100)).unwrap();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::new(Collector::default());
    {
        let (sizes, sink) = (sizes.clone(), sink.clone());
        p.set_flush_callback(Some(Arc::new(move |b: &mut Batch| {
            lock(&sizes).push(b.len());
            sink.on_flush(b)
        })))
        .unwrap();
    }
    for i in 0..10_000u64 {
        push_retrying(&p, &i.to_string()).unwrap();
    }
    p.flush(WAIT).unwrap();
    assert_eq!(*lock(&sink.seen), (0..10_000).collect::<Vec<_>>());
    assert!(lock(&sizes).iter().all(|&n| (1..=100).contains(&n)));
}

#[test]
fn flush_is_a_barrier_over_everything_accepted_before_it() {
    let p = Processor::new(config(2, 64)).unwrap();
    let delivered = Arc::new(AtomicU64::new(0));
    {
        let delivered = delivered.clone();
        p.set_flush_callback(Some(Arc::new(move |b: &mut Batch| {
            // A slow database.
            std::thread::sleep(Duration::from_millis(2));
            delivered.fetch_add(b.len() as u64, Ordering::SeqCst);
            Ok(())
        })))
        .unwrap();
    }
    for round in 0..5u64 {
        for i in 0..500u64 {
            push_retrying(&p, &(round * 1000 + i).to_string()).unwrap();
        }
        p.flush(WAIT).unwrap();
        assert_eq!(delivered.load(Ordering::SeqCst), (round + 1) * 500);
    }
}

#[test]
fn flush_with_nothing_pushed_and_no_callback_returns() {
    let p = Processor::new(config(3, 10)).unwrap();
    p.flush(WAIT).unwrap();
    for i in 0..25 {
        p.push(&event(&i.to_string())).unwrap();
    }
    p.flush(WAIT).unwrap();
    let s = p.stats().unwrap();
    assert_eq!((s.discarded, s.delivered, s.batches), (25, 0, 0));
}

#[test]
fn flush_times_out_while_the_callback_is_stuck() {
    let p = Processor::new(config(1, 1)).unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    p.set_flush_callback(Some(Arc::new(move |_: &mut Batch| {
        let _ = lock(&release_rx).recv_timeout(WAIT);
        Ok(())
    })))
    .unwrap();
    p.push(&event("1")).unwrap();
    let err = p.flush(Duration::from_millis(30)).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    release_tx.send(()).unwrap();
    p.flush(WAIT).unwrap();
    assert_eq!(p.stats().unwrap().delivered, 1);
}

#[test]
fn a_partial_batch_goes_out_after_the_flush_interval() {
    let p = Processor::new(config(1, 1000)).unwrap();
    let sink = Arc::new(Collector::default());
    p.set_flush_callback(Some(sink.clone())).unwrap();
    p.push(&event("7")).unwrap();
    assert!(wait_until(|| !lock(&sink.seen).is_empty()));
    assert_eq!(*lock(&sink.seen), [7]);
}

#[test]
fn a_callback_failing_twice_is_retried_and_delivered_once() {
    let p = Processor::new(config(1, 10)).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let sink = Arc::new(Collector::default());
    {
        let (calls, sink) = (calls.clone(), sink.clone());
        p.set_flush_callback(Some(Arc::new(move |b: &mut Batch| {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err("database unavailable".to_string())
            } else {
                sink.on_flush(b)
            }
        })))
        .unwrap();
    }
    for i in 0..10 {
        p.push(&event(&i.to_string())).unwrap();
    }
    p.flush(WAIT).unwrap();
    assert_eq!(*lock(&sink.seen), (0..10).collect::<Vec<_>>());
    let s = p.stats().unwrap();
    assert_eq!(
        (s.delivered, s.batches, s.failures, s.retries),
        (10, 1, 2, 2)
    );
    assert_eq!(s.dead_lettered, 0);
}

#[test]
fn a_callback_that_always_fails_dead_letters_and_loses_nothing() {
    let cfg = ProcessorConfig {
        max_retries: 2,
        ..config(2, 8)
    };
    let p = Processor::new(cfg).unwrap();
    p.set_flush_callback(Some(Arc::new(|_: &mut Batch| Err("disk full".to_string()))))
        .unwrap();
    let dead = Arc::new(Collector::default());
    let reasons = Arc::new(Mutex::new(Vec::new()));
    {
        let (dead, reasons) = (dead.clone(), reasons.clone());
        p.set_dead_letter_callback(Some(Arc::new(move |b: &mut Batch, why: &str| {
            lock(&reasons).push(why.to_string());
            let _ = dead.on_flush(b);
        })))
        .unwrap();
    }
    for i in 0..50 {
        push_retrying(&p, &i.to_string()).unwrap();
    }
    p.flush(WAIT).unwrap();
    let mut seen = lock(&dead.seen).clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    let s = p.stats().unwrap();
    assert_eq!(s.dead_lettered, 50);
    assert_eq!(s.delivered, 0);
    assert_eq!(s.failures, 3 * s.dead_letter_batches);
    assert_eq!(s.retries, 2 * s.dead_letter_batches);
    assert!(lock(&reasons).iter().all(|r| r == "disk full"));
}

#[test]
fn a_panicking_callback_counts_as_a_failure() {
    let cfg = ProcessorConfig {
        max_retries: 1,
        ..config(1, 4)
    };
    let p = Processor::new(cfg).unwrap();
    p.set_flush_callback(Some(Arc::new(
        |_: &mut Batch| -> std::result::Result<(), String> { panic!("bug in the callback") },
    )))
    .unwrap();
    p.push(&event("1")).unwrap();
    p.flush(WAIT).unwrap();
    let s = p.stats().unwrap();
    assert_eq!((s.failures, s.dead_lettered), (2, 1));
    // The processor is still usable: the panic was the callback's, not ours.
    p.push(&event("2")).unwrap();
}

/// Run in a child process by the test below: a panicking callback on a worker.
#[test]
fn worker_panic_child() {
    if std::env::var_os("EH_WORKER_PANIC_CHILD").is_none() {
        return;
    }
    let p = Processor::new(ProcessorConfig {
        max_retries: 0,
        ..config(1, 4)
    })
    .unwrap();
    p.set_flush_callback(Some(Arc::new(
        |_: &mut Batch| -> std::result::Result<(), String> { panic!("kaboom-in-callback") },
    )))
    .unwrap();
    p.push(&event("1")).unwrap();
    p.flush(WAIT).unwrap();
    assert_eq!(p.stats().unwrap().failures, 1);
    eprintln!("child: callback failure counted");
}

#[test]
fn panics_caught_on_workers_are_not_printed() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "pipeline::tests::worker_panic_child",
            "--nocapture",
        ])
        .env("EH_WORKER_PANIC_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("child: callback failure counted"),
        "{stderr}"
    );
    assert!(!stderr.contains("kaboom-in-callback"), "{stderr}");
}

#[test]
fn shutdown_while_producers_push_delivers_everything_accepted() {
    let p = Arc::new(Processor::new(config(2, 32)).unwrap());
    let sink = Arc::new(Collector::default());
    p.set_flush_callback(Some(sink.clone())).unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..3)
        .map(|_| {
            let (p, next) = (p.clone(), next.clone());
            std::thread::spawn(move || {
                let mut accepted = 0usize;
                loop {
                    let seq = next.fetch_add(1, Ordering::SeqCst);
                    match push_retrying(&p, &seq.to_string()) {
                        Ok(()) => accepted += 1,
                        Err(Error::ShutDown) => return (accepted, seq),
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(|| p.stats().unwrap().accepted >= 5_000));
    p.close().unwrap();
    let results: Vec<(usize, u64)> = producers.into_iter().map(|t| t.join().unwrap()).collect();
    let accepted: usize = results.iter().map(|r| r.0).sum();
    let mut seen = lock(&sink.seen).clone();
    assert_eq!(seen.len(), accepted, "every accepted event was delivered");
    seen.sort_unstable();
    let before = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), before, "no duplicates");
    assert!(results.iter().all(|r| seen.binary_search(&r.1).is_err()));
    // Closed: every later call is refused and changes nothing.
    assert!(matches!(p.push(&event("x")), Err(Error::ShutDown)));
    assert!(matches!(p.flush(WAIT), Err(Error::ShutDown)));
    assert!(matches!(p.stats(), Err(Error::ShutDown)));
    p.close().unwrap();
}

#[test]
fn drop_drains_queued_events() {
    let sink = Arc::new(Collector::default());
    {
        let p = Processor::new(config(1, 1000)).unwrap();
        p.set_flush_callback(Some(sink.clone())).unwrap();
        for i in 0..300 {
            p.push(&event(&i.to_string())).unwrap();
        }
    }
    assert_eq!(lock(&sink.seen).len(), 300);
}

#[test]
fn without_a_callback_batches_are_discarded_and_counted() {
    let cfg = ProcessorConfig {
        overflow: Overflow::Block { timeout: WAIT },
        capacity: 256,
        ..config(1, 500)
    };
    let p = Processor::new(cfg).unwrap();
    let events: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let batch: Vec<EventIn<'_>> = events.iter().map(|u| event(u)).collect();
    for _ in 0..200 {
        assert_eq!(p.push_batch(&batch), (batch.len(), Ok(())));
    }
    p.flush(WAIT).unwrap();
    let s = p.stats().unwrap();
    assert_eq!(s.accepted, 200_000);
    assert_eq!(s.discarded, 200_000, "batches were discarded, not kept");
    assert_eq!(s.queue_len, 0);
    let users = p.unique_users(0, 0).unwrap() as f64;
    assert!((users / 1000.0 - 1.0).abs() < 0.025, "{users}");
}

#[test]
fn block_overflow_waits_for_room_then_times_out() {
    let cfg = ProcessorConfig {
        capacity: 4,
        overflow: Overflow::Block {
            timeout: Duration::from_millis(20),
        },
        ..config(1, 1)
    };
    let p = Processor::new(cfg).unwrap();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
    p.set_flush_callback(Some(Arc::new(move |_: &mut Batch| {
        let _ = lock(&entered_tx).send(());
        let _ = lock(&release_rx).recv_timeout(WAIT);
        Ok(())
    })))
    .unwrap();
    p.push(&event("0")).unwrap();
    entered_rx.recv_timeout(WAIT).unwrap();
    // The worker is stuck in the callback: four pushes fill the ring, the fifth
    // waits 20 ms and is dropped.
    for i in 1..=4 {
        p.push(&event(&i.to_string())).unwrap();
    }
    assert!(matches!(p.push(&event("5")), Err(Error::QueueFull)));
    assert_eq!(p.stats().unwrap().dropped, 1);
    for _ in 0..5 {
        release_tx.send(()).unwrap();
    }
    p.flush(WAIT).unwrap();
    assert_eq!(p.stats().unwrap().delivered, 5);
}

// A blocked push waits for a stretch of room (an eighth of the ring), not one
// slot; room shorter than that which comes while it waits is taken at the
// deadline, by the last attempt, instead of dropping the event.
#[test]
fn a_blocked_push_takes_a_short_stretch_of_room_at_its_deadline() {
    let timeout = Duration::from_millis(300);
    let cfg = ProcessorConfig {
        capacity: 64,
        overflow: Overflow::Block { timeout },
        ..config(1, 1)
    };
    let p = Processor::new(cfg).unwrap();
    // Callback n (from 1) runs once `allowed` >= n.
    let entered = Arc::new(AtomicUsize::new(0));
    let allowed = Arc::new(AtomicUsize::new(0));
    let (e, a) = (Arc::clone(&entered), Arc::clone(&allowed));
    p.set_flush_callback(Some(Arc::new(move |_: &mut Batch| {
        let n = e.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(wait_until(|| a.load(Ordering::SeqCst) >= n));
        Ok(())
    })))
    .unwrap();
    p.push(&event("held")).unwrap();
    assert!(wait_until(|| entered.load(Ordering::SeqCst) == 1));
    for i in 0..64 {
        p.push(&event(&i.to_string())).unwrap(); // the ring is full
    }
    // Once the push waits: one event delivered, the next one held, so exactly
    // one slot is free and no more will be.
    let (e, a) = (Arc::clone(&entered), Arc::clone(&allowed));
    p.on_waiting_for_room(move || {
        a.store(1, Ordering::SeqCst);
        assert!(wait_until(|| e.load(Ordering::SeqCst) == 2));
    });
    // Whatever happens below (a failed assertion too), the callbacks are let go,
    // so that dropping the processor does not wait for them.
    struct OpenOnDrop(Arc<AtomicUsize>);
    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.store(usize::MAX, Ordering::SeqCst);
        }
    }
    let open = OpenOnDrop(Arc::clone(&allowed));
    let started = Instant::now();
    p.push(&event("late")).unwrap();
    assert!(
        started.elapsed() >= timeout,
        "taken at the deadline, not before"
    );
    assert_eq!(p.stats().unwrap().dropped, 0);
    drop(open);
    p.flush(WAIT).unwrap();
    assert_eq!(p.stats().unwrap().delivered, 66);
}

#[test]
fn push_batch_accepts_a_prefix_and_counts_the_rest_as_dropped() {
    let cfg = ProcessorConfig {
        capacity: 4,
        ..config(1, 1)
    };
    let p = Processor::new(cfg).unwrap();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
    p.set_flush_callback(Some(Arc::new(move |_: &mut Batch| {
        let _ = lock(&entered_tx).send(());
        let _ = lock(&release_rx).recv_timeout(WAIT);
        Ok(())
    })))
    .unwrap();
    p.push(&event("0")).unwrap();
    entered_rx.recv_timeout(WAIT).unwrap();
    let ids: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
    let batch: Vec<EventIn<'_>> = ids.iter().map(|u| event(u)).collect();
    assert_eq!(p.push_batch(&batch), (4, Ok(())));
    let s = p.stats().unwrap();
    assert_eq!((s.accepted, s.dropped, s.pushed), (5, 6, 11));
    // An invalid event refuses the whole batch before anything is pushed.
    let long = "x".repeat(MAX_FIELD_BYTES + 1);
    let bad = [event("ok"), event(&long)];
    assert!(matches!(
        p.push_batch(&bad),
        (0, Err(Error::InvalidArgument(_)))
    ));
    assert_eq!(p.stats().unwrap().pushed, 11);
    for _ in 0..5 {
        release_tx.send(()).unwrap();
    }
    p.flush(WAIT).unwrap();
}

#[test]
fn flush_and_shutdown_from_a_callback_are_refused() {
    let p = Arc::new(Processor::new(config(1, 1)).unwrap());
    let results = Arc::new(Mutex::new(Vec::new()));
    {
        let weak = Arc::downgrade(&p);
        let results = results.clone();
        p.set_flush_callback(Some(Arc::new(move |_: &mut Batch| {
            if let Some(p) = weak.upgrade() {
                let mut r = lock(&results);
                r.push(p.flush(WAIT).map_err(|e| e.to_string()));
                r.push(p.close().map_err(|e| e.to_string()));
                r.push(p.set_flush_callback(None).map_err(|e| e.to_string()));
                r.push(p.push(&event("from-callback")).map_err(|e| e.to_string()));
            }
            Ok(())
        })))
        .unwrap();
    }
    p.push(&event("1")).unwrap();
    assert!(wait_until(|| lock(&results).len() >= 4));
    let r = lock(&results).clone();
    for refused in &r[..3] {
        assert!(
            refused.as_ref().unwrap_err().contains("would deadlock"),
            "{r:?}"
        );
    }
    assert_eq!(r[3], Ok(()), "pushing from a callback is allowed");
}

#[test]
fn timestamps_resolve_by_the_clock_and_feed_the_window_sketches() {
    let cfg = ProcessorConfig {
        clock: Clock::EventTime,
        ..config(2, 64)
    };
    let p = Processor::new(cfg).unwrap();
    let base = 1_700_000_000i64;
    // Replay: 100 users two hours ago, 50 users in the last hour.
    for u in 0..100 {
        let id = format!("old-{u}");
        let ev = EventIn {
            timestamp: base - 7200,
            ..event(&id)
        };
        p.push(&ev).unwrap();
    }
    for u in 0..50 {
        let id = format!("new-{u}");
        let ev = EventIn {
            timestamp: base - 60 * (u % 50),
            channel_id: if u % 5 == 0 { "hot" } else { "cold" },
            ..event(&id)
        };
        p.push(&ev).unwrap();
    }
    p.flush(WAIT).unwrap();
    assert_eq!(
        p.now().unwrap(),
        base,
        "EVENT_TIME: now is the newest event"
    );
    // HyperLogLog: within one of the truth for counts this small (a register
    // collision among 50 ids has a ~7% chance).
    let near = |got: u64, want: u64| got.abs_diff(want) <= 1;
    assert!(
        near(p.unique_users(3600, 0).unwrap(), 50),
        "{}",
        p.unique_users(3600, 0).unwrap()
    );
    assert!(near(p.unique_users(0, 0).unwrap(), 150));
    assert_eq!(
        p.users_sketch(3600, 0).unwrap().count(),
        p.unique_users(3600, 0).unwrap()
    );
    assert!(
        p.unique_users(60, 0).unwrap() <= 2,
        "only the newest minute"
    );
    let top = p.top_channels(2, 3600, 0).unwrap();
    assert_eq!(top[0].channel, "cold");
    assert_eq!(top[0].count, 40);
    assert_eq!((top[1].channel.as_str(), top[1].count), ("hot", 10));
    assert_eq!(p.channel_count("general").unwrap(), 100);
    // An event with timestamp 0 is stamped with the event clock.
    let sink = Arc::new(Mutex::new(Vec::new()));
    {
        let sink = sink.clone();
        p.set_flush_callback(Some(Arc::new(move |b: &mut Batch| {
            lock(&sink).extend(b.iter().map(|e| e.timestamp));
            Ok(())
        })))
        .unwrap();
    }
    p.push(&EventIn {
        timestamp: 0,
        ..event("z")
    })
    .unwrap();
    p.flush(WAIT).unwrap();
    assert_eq!(*lock(&sink), [base]);
}

#[test]
fn oversized_and_out_of_range_events_are_refused_without_counting() {
    let p = Processor::new(config(1, 8)).unwrap();
    let long = "u".repeat(MAX_FIELD_BYTES + 1);
    assert!(matches!(
        p.push(&event(&long)),
        Err(Error::InvalidArgument(_))
    ));
    let far = EventIn {
        timestamp: MAX_TIMESTAMP + 1,
        ..event("u")
    };
    assert!(matches!(p.push(&far), Err(Error::InvalidArgument(_))));
    assert_eq!(p.stats().unwrap().pushed, 0);
}

/// A place in a call where one named thread stops until the test releases it.
struct Pause {
    reached: Mutex<mpsc::Sender<HookPoint>>,
    release: Mutex<mpsc::Receiver<()>>,
}

/// Installs a hook on `p` that pauses the thread named `thread` at `point`, once.
/// Returns (reached, release): `reached` receives the point when the thread is
/// paused; sending on `release` lets it go.
fn pause_at(
    p: &Processor,
    thread: &'static str,
    point: HookPoint,
) -> (mpsc::Receiver<HookPoint>, mpsc::Sender<()>) {
    let (reached_tx, reached_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let pause = Pause {
        reached: Mutex::new(reached_tx),
        release: Mutex::new(release_rx),
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    p.set_test_hook(move |at| {
        if at == point
            && std::thread::current().name() == Some(thread)
            && !done.swap(true, Ordering::SeqCst)
        {
            let _ = lock(&pause.reached).send(at);
            let _ = lock(&pause.release).recv_timeout(WAIT);
        }
    });
    (reached_rx, release_tx)
}

fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .unwrap()
}

/// Waits for a thread to finish, up to `WAIT`; `None` if it did not.
fn join_within<T>(t: std::thread::JoinHandle<T>) -> Option<T> {
    if wait_until(|| t.is_finished()) {
        Some(t.join().unwrap())
    } else {
        None
    }
}

// Regression: a push that has started but is not yet counted when close runs.
// Close must not wait for it (it is not in progress yet) and the push, once it
// registers, must see the close and refuse without touching the released core.
#[test]
fn a_push_racing_close_before_it_registers_gets_shut_down() {
    let p = Arc::new(Processor::new(config(1, 8)).unwrap());
    let sink = Arc::new(Collector::default());
    p.set_flush_callback(Some(sink.clone())).unwrap();
    let (reached, release) = pause_at(&p, "pusher", HookPoint::BeforeRegister);
    let pusher = {
        let p = p.clone();
        spawn_named("pusher", move || p.push(&event("1")))
    };
    assert_eq!(reached.recv_timeout(WAIT), Ok(HookPoint::BeforeRegister));
    // The push is paused before registering: close completes without it.
    let closer = {
        let p = p.clone();
        spawn_named("closer", move || p.close())
    };
    assert_eq!(
        join_within(closer),
        Some(Ok(())),
        "close waited for an unregistered call"
    );
    release.send(()).unwrap();
    assert_eq!(join_within(pusher), Some(Err(Error::ShutDown)));
    assert!(lock(&sink.seen).is_empty());
}

// Regression: a call counted as in progress keeps close waiting; it
// then either completes (and is delivered) or gets ShutDown: never a use after free.
#[test]
fn close_waits_for_a_registered_push_which_completes_or_is_refused() {
    let p = Arc::new(Processor::new(config(1, 8)).unwrap());
    let sink = Arc::new(Collector::default());
    p.set_flush_callback(Some(sink.clone())).unwrap();
    let (reached, release) = pause_at(&p, "pusher", HookPoint::AfterRegister);
    let pusher = {
        let p = p.clone();
        spawn_named("pusher", move || p.push(&event("7")))
    };
    assert_eq!(reached.recv_timeout(WAIT), Ok(HookPoint::AfterRegister));
    let closer = {
        let p = p.clone();
        spawn_named("closer", move || p.close())
    };
    assert!(wait_until(|| p.is_closed()), "close did not begin");
    assert!(wait_until(|| p.workers_exited()), "intake was not stopped");
    // The push is still registered, so close cannot have released the core.
    assert!(
        !closer.is_finished(),
        "close returned under a call in progress"
    );
    release.send(()).unwrap();
    let pushed = join_within(pusher).expect("push hung");
    assert_eq!(join_within(closer), Some(Ok(())));
    match pushed {
        Ok(()) => assert_eq!(*lock(&sink.seen), [7]),
        Err(e) => {
            assert_eq!(e, Error::ShutDown);
            assert!(lock(&sink.seen).is_empty());
        }
    }
}

// Regression: a flush that requests its generation after the workers exited
// (close racing with it) returns Ok at once instead of waiting out its timeout.
#[test]
fn a_flush_racing_close_returns_ok_once_delivered() {
    let p = Arc::new(Processor::new(config(2, 1000)).unwrap());
    let sink = Arc::new(Collector::default());
    p.set_flush_callback(Some(sink.clone())).unwrap();
    for i in 0..10 {
        p.push(&event(&i.to_string())).unwrap();
    }
    let (reached, release) = pause_at(&p, "flusher", HookPoint::AfterRegister);
    let flusher = {
        let p = p.clone();
        spawn_named("flusher", move || {
            let started = Instant::now();
            (p.flush(WAIT), started.elapsed())
        })
    };
    assert_eq!(reached.recv_timeout(WAIT), Ok(HookPoint::AfterRegister));
    let closer = {
        let p = p.clone();
        spawn_named("closer", move || p.close())
    };
    // Close stops intake; the workers drain, deliver and exit while the flush is
    // paused before its request.
    assert!(wait_until(|| p.workers_exited()));
    release.send(()).unwrap();
    let (flushed, took) = join_within(flusher).expect("flush hung");
    assert_eq!(flushed, Ok(()));
    assert!(took < WAIT / 2, "flush waited {took:?}");
    assert_eq!(join_within(closer), Some(Ok(())));
    assert_eq!(lock(&sink.seen).len(), 10);
}

// Regression: a batch interrupted by close reports how many it placed; exactly
// those are delivered. The batch claims slots three at a time: close comes
// between two runs.
#[test]
fn push_batch_interrupted_by_close_reports_its_accepted_prefix() {
    let p = Arc::new(Processor::new(config(1, 1000)).unwrap());
    p.set_batch_run(3);
    let sink = Arc::new(Collector::default());
    p.set_flush_callback(Some(sink.clone())).unwrap();
    let (reached, release) = pause_at(&p, "pusher", HookPoint::BatchAccepted(3));
    let pusher = {
        let p = p.clone();
        spawn_named("pusher", move || {
            let ids: Vec<String> = (0..10).map(|i| i.to_string()).collect();
            let events: Vec<EventIn<'_>> = ids.iter().map(|id| event(id)).collect();
            p.push_batch(&events)
        })
    };
    assert_eq!(reached.recv_timeout(WAIT), Ok(HookPoint::BatchAccepted(3)));
    let closer = {
        let p = p.clone();
        spawn_named("closer", move || p.close())
    };
    assert!(wait_until(|| p.workers_exited()), "intake was not stopped");
    release.send(()).unwrap();
    assert_eq!(join_within(pusher), Some((3, Err(Error::ShutDown))));
    assert_eq!(join_within(closer), Some(Ok(())));
    assert_eq!(*lock(&sink.seen), [0, 1, 2]);
}

// Regression: close inside the processor's own callback is refused and changes
// nothing: intake continues, the workers keep running, a later close works.
#[test]
fn close_from_its_own_callback_would_deadlock_and_changes_nothing() {
    let p = Arc::new(Processor::new(config(1, 1)).unwrap());
    let outcome = Arc::new(Mutex::new(None));
    let sink = Arc::new(Collector::default());
    {
        let weak = Arc::downgrade(&p);
        let (outcome, sink) = (outcome.clone(), sink.clone());
        p.set_flush_callback(Some(Arc::new(move |b: &mut Batch| {
            if let Some(p) = weak.upgrade() {
                let mut o = lock(&outcome);
                if o.is_none() {
                    *o = Some((p.close(), p.is_closed()));
                }
            }
            sink.on_flush(b)
        })))
        .unwrap();
    }
    p.push(&event("1")).unwrap();
    assert!(wait_until(|| lock(&outcome).is_some()));
    let (closed, is_closed) = lock(&outcome).take().unwrap();
    assert!(matches!(closed, Err(Error::WouldDeadlock(_))), "{closed:?}");
    assert!(!is_closed);
    // Still fully usable.
    p.push(&event("2")).unwrap();
    p.flush(WAIT).unwrap();
    assert_eq!(*lock(&sink.seen), [1, 2]);
    p.close().unwrap();
    assert!(matches!(p.push(&event("3")), Err(Error::ShutDown)));
}

#[test]
fn concurrent_closes_all_return_after_the_drain() {
    let p = Arc::new(Processor::new(config(2, 1000)).unwrap());
    let sink = Arc::new(Collector::default());
    p.set_flush_callback(Some(sink.clone())).unwrap();
    for i in 0..100 {
        p.push(&event(&i.to_string())).unwrap();
    }
    let closers: Vec<_> = (0..3)
        .map(|_| {
            let (p, sink) = (p.clone(), sink.clone());
            std::thread::spawn(move || {
                p.close().unwrap();
                lock(&sink.seen).len()
            })
        })
        .collect();
    for c in closers {
        assert_eq!(
            join_within(c),
            Some(100),
            "a close returned before the drain"
        );
    }
}

// Dropped on its own worker (the last reference released in a callback): a reaper
// thread finishes the close; the callback's state is released after its last call.
#[test]
fn drop_on_its_own_worker_hands_the_close_to_a_reaper() {
    struct Tracked {
        calls: Arc<AtomicU64>,
        finalized: Arc<std::sync::atomic::AtomicBool>,
        late: Arc<std::sync::atomic::AtomicBool>,
    }
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.finalized.store(true, Ordering::SeqCst);
        }
    }
    let calls = Arc::new(AtomicU64::new(0));
    let finalized = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let late = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tracked = Tracked {
        calls: calls.clone(),
        finalized: finalized.clone(),
        late: late.clone(),
    };
    let slot: Arc<Mutex<Option<Processor>>> = Arc::new(Mutex::new(None));
    let p = Processor::new(config(1, 1)).unwrap();
    {
        let slot = slot.clone();
        p.set_flush_callback(Some(Arc::new(move |b: &mut Batch| {
            if tracked.finalized.load(Ordering::SeqCst) {
                tracked.late.store(true, Ordering::SeqCst);
            }
            let n = tracked.calls.fetch_add(b.len() as u64, Ordering::SeqCst) + b.len() as u64;
            if n == 1 {
                // Drop the processor here, on its own worker, with events queued.
                drop(lock(&slot).take());
            }
            Ok(())
        })))
        .unwrap();
    }
    *lock(&slot) = Some(p);
    {
        // Pushed under the slot's lock: the first callback, which takes it to drop
        // the processor, runs once all 50 are queued.
        let guard = lock(&slot);
        for i in 0..50 {
            guard
                .as_ref()
                .unwrap()
                .push(&event(&i.to_string()))
                .unwrap();
        }
    }
    assert!(
        wait_until(|| finalized.load(Ordering::SeqCst)),
        "never finalized"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 50, "events lost");
    assert!(
        !late.load(Ordering::SeqCst),
        "a callback ran after finalization"
    );
}

// Regression: timestamps beyond the wall clock plus the skew are
// refused and counted under both clocks; so one far-future event cannot move the
// event-time clock.
#[test]
fn far_future_timestamps_are_refused_and_counted_under_both_clocks() {
    for clock in [Clock::Wall, Clock::EventTime] {
        let cfg = ProcessorConfig {
            clock,
            max_future_skew: Duration::from_secs(3600),
            ..config(1, 10)
        };
        let p = Processor::new(cfg).unwrap();
        let wall = crate::leaderboard::wall_clock_secs();
        let year_3000 = 32_503_680_000;
        let err = p
            .push(&EventIn {
                timestamp: year_3000,
                ..event("u")
            })
            .unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("max_future_skew")));
        // Within the skew: accepted.
        p.push(&EventIn {
            timestamp: wall + 1800,
            ..event("v")
        })
        .unwrap();
        let batch = [
            event("w"),
            EventIn {
                timestamp: wall + 7200,
                ..event("x")
            },
        ];
        assert!(matches!(
            p.push_batch(&batch),
            (0, Err(Error::InvalidArgument(_)))
        ));
        p.flush(WAIT).unwrap();
        let s = p.stats().unwrap();
        assert_eq!((s.future_refused, s.accepted), (2, 1), "{clock:?}");
        let now = p.now().unwrap();
        assert!(now <= wall + 1800 + 5, "{clock:?}: now moved to {now}");
        // ts <= 0 is still "now".
        p.push(&EventIn {
            timestamp: 0,
            ..event("z")
        })
        .unwrap();
    }
}

// Regression: a window longer than configured is refused, naming the limit.
#[test]
fn windows_longer_than_configured_are_refused() {
    let mut cfg = config(1, 10);
    cfg.window.window_minutes = 60;
    let p = Processor::new(cfg).unwrap();
    for err in [
        p.unique_users(86_400, 0).unwrap_err(),
        p.users_sketch(3601, 0).unwrap_err(),
        p.top_channels(5, 7200, 0).unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("60 minutes (3600 s)")),
            "{err}"
        );
    }
    assert_eq!(p.unique_users(3600, 0), Ok(0));
    assert_eq!(p.unique_users(0, 0), Ok(0));
    assert!(p.top_channels(5, 3540, 0).unwrap().is_empty());
}

// -- synchronous mode (workers: 0) and sliced waits ------------------------------

fn sync_config(batch_size: usize) -> ProcessorConfig {
    config(0, batch_size)
}

#[test]
fn synchronous_mode_delivers_on_the_flushing_thread_only() {
    let p = Processor::new(sync_config(4)).unwrap();
    let threads: Arc<Mutex<Vec<std::thread::ThreadId>>> = Arc::default();
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (t, s) = (Arc::clone(&threads), Arc::clone(&seen));
    p.set_flush_callback(Some(Arc::new(move |b: &mut Batch| {
        lock(&t).push(std::thread::current().id());
        lock(&s).extend(b.iter().map(|e| e.user_id.parse::<u64>().unwrap()));
        Ok(())
    })))
    .unwrap();
    // Pushes from several threads; nothing is delivered or sketched until a flush.
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let p = &p;
            scope.spawn(move || {
                for i in 0..25 {
                    push_retrying(p, &(t * 100 + i).to_string()).unwrap();
                }
            });
        }
    });
    let stats = p.stats().unwrap();
    assert_eq!(
        (stats.accepted, stats.processed, stats.delivered),
        (100, 0, 0)
    );
    assert_eq!(p.unique_users(0, 0).unwrap(), 0);
    assert!(lock(&threads).is_empty());
    p.flush(WAIT).unwrap();
    let me = std::thread::current().id();
    assert!(lock(&threads).iter().all(|&id| id == me));
    assert_eq!(lock(&threads).len(), 25, "batches of batch_size");
    let mut got = lock(&seen).clone();
    got.sort_unstable();
    let mut want: Vec<u64> = (0..4)
        .flat_map(|t| (0..25).map(move |i| t * 100 + i))
        .collect();
    want.sort_unstable();
    assert_eq!(got, want);
    let stats = p.stats().unwrap();
    assert_eq!(
        (stats.processed, stats.delivered, stats.queue_len),
        (100, 100, 0)
    );
    assert_eq!(p.unique_users(0, 0).unwrap(), 100);
    assert_eq!(p.top_channels(1, 0, 0).unwrap()[0].count, 100);
    // Close delivers what is left, on the closing thread, in push order.
    lock(&seen).clear();
    for i in 0..3 {
        p.push(&event(&(1000 + i).to_string())).unwrap();
    }
    p.close().unwrap();
    assert_eq!(*lock(&seen), vec![1000, 1001, 1002]);
    assert!(lock(&threads).iter().all(|&id| id == me));
}

#[test]
fn synchronous_mode_refuses_block_and_reentrant_calls() {
    let mut cfg = sync_config(8);
    cfg.overflow = Overflow::Block { timeout: WAIT };
    assert!(matches!(
        Processor::new(cfg),
        Err(Error::InvalidArgument(m)) if m.contains("BLOCK")
    ));
    // A full synchronous ring drops (it never waits for itself).
    let mut cfg = sync_config(8);
    cfg.capacity = 4;
    let p = Arc::new(Processor::new(cfg).unwrap());
    for i in 0..4 {
        p.push(&event(&i.to_string())).unwrap();
    }
    assert_eq!(p.push(&event("x")), Err(Error::QueueFull));
    // Inside its callback (on the flushing thread) flush, close and callback
    // changes are refused; pushes are accepted.
    let inner = Arc::downgrade(&p);
    let refused: Arc<Mutex<Vec<bool>>> = Arc::default();
    let r = Arc::clone(&refused);
    p.set_flush_callback(Some(Arc::new(move |_b: &mut Batch| {
        if let Some(p) = inner.upgrade() {
            lock(&r).push(matches!(p.flush(WAIT), Err(Error::WouldDeadlock(_))));
            lock(&r).push(matches!(p.close(), Err(Error::WouldDeadlock(_))));
            lock(&r).push(p.push(&event("9")).is_ok());
        }
        Ok(())
    })))
    .unwrap();
    p.flush(WAIT).unwrap();
    assert_eq!(*lock(&refused), vec![true, true, true]);
    assert!(!p.in_own_callback(), "the mark is cleared after the drain");
    assert_eq!(p.stats().unwrap().delivered, 4);
    p.close().unwrap();
    assert_eq!(p.stats(), Err(Error::ShutDown));
}

#[test]
fn synchronous_failures_are_retried_then_dead_lettered_in_the_caller() {
    let p = Processor::new(sync_config(10)).unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let a = Arc::clone(&attempts);
    p.set_flush_callback(Some(Arc::new(move |_b: &mut Batch| {
        a.fetch_add(1, Ordering::Relaxed);
        Err("sink down".to_string())
    })))
    .unwrap();
    let dead = Arc::new(AtomicU64::new(0));
    let d = Arc::clone(&dead);
    p.set_dead_letter_callback(Some(Arc::new(move |b: &mut Batch, _e: &str| {
        d.fetch_add(b.len() as u64, Ordering::Relaxed);
    })))
    .unwrap();
    for i in 0..5 {
        p.push(&event(&i.to_string())).unwrap();
    }
    p.flush(WAIT).unwrap();
    let cfg = p.config().clone();
    assert_eq!(attempts.load(Ordering::Relaxed), cfg.max_retries + 1);
    assert_eq!(dead.load(Ordering::Relaxed), 5);
    assert_eq!(p.stats().unwrap().dead_lettered, 5);
}

/// A callback that blocks until released, for the sliced waits.
fn blocking_processor(workers: usize) -> (Processor, mpsc::Sender<()>, Arc<AtomicU64>) {
    let p = Processor::new(config(workers, 1)).unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let delivered = Arc::new(AtomicU64::new(0));
    let d = Arc::clone(&delivered);
    p.set_flush_callback(Some(Arc::new(move |b: &mut Batch| {
        lock(&gate).recv_timeout(WAIT).map_err(|e| e.to_string())?;
        d.fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(())
    })))
    .unwrap();
    (p, release, delivered)
}

#[test]
fn flush_waits_in_slices_on_one_ticket() {
    let (p, release, delivered) = blocking_processor(1);
    p.push(&event("1")).unwrap();
    p.push(&event("2")).unwrap();
    let ticket = p.flush_start().unwrap();
    let short = Duration::from_millis(20);
    assert!(matches!(
        p.flush_wait(ticket, short),
        Err(Error::Timeout(_))
    ));
    // Later pushes do not postpone the ticket's target.
    release.send(()).unwrap();
    release.send(()).unwrap();
    p.push(&event("3")).unwrap();
    p.flush_wait(ticket, WAIT).unwrap();
    assert!(delivered.load(Ordering::Relaxed) >= 2);
    assert!(matches!(
        p.flush_wait(ticket + 100, short),
        Err(Error::InvalidArgument(_))
    ));
    release.send(()).unwrap();
    p.close().unwrap();
    assert_eq!(delivered.load(Ordering::Relaxed), 3);
}

#[test]
fn close_timeout_reports_a_close_under_way_and_a_later_close_finishes_it() {
    let (p, release, delivered) = blocking_processor(2);
    for i in 0..3 {
        p.push(&event(&i.to_string())).unwrap();
    }
    let short = Some(Duration::from_millis(20));
    assert!(matches!(p.close_timeout(short), Err(Error::Timeout(_))));
    assert!(p.is_closed());
    assert_eq!(p.push(&event("late")), Err(Error::ShutDown));
    assert!(matches!(p.close_timeout(short), Err(Error::Timeout(_))));
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    p.close_timeout(Some(WAIT)).unwrap();
    assert_eq!(delivered.load(Ordering::Relaxed), 3);
    p.close().unwrap();
}

#[test]
fn push_wait_times_out_without_counting_and_gives_up_with_a_drop() {
    let mut cfg = config(1, 1);
    cfg.capacity = 2;
    cfg.overflow = Overflow::Block { timeout: WAIT };
    let p = Processor::new(cfg).unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let started = Arc::new(AtomicU32::new(0));
    let s = Arc::clone(&started);
    p.set_flush_callback(Some(Arc::new(move |_b: &mut Batch| {
        s.fetch_add(1, Ordering::SeqCst);
        lock(&gate).recv_timeout(WAIT).map_err(|e| e.to_string())
    })))
    .unwrap();
    p.push(&event("0")).unwrap();
    assert!(wait_until(|| started.load(Ordering::SeqCst) == 1));
    // The worker is stuck in the callback: fill the two slots.
    p.push(&event("1")).unwrap();
    p.push(&event("2")).unwrap();
    let short = Duration::from_millis(10);
    assert!(matches!(
        p.push_wait(&event("3"), short, false),
        Err(Error::Timeout(_))
    ));
    let stats = p.stats().unwrap();
    assert_eq!(
        (stats.pushed, stats.dropped),
        (3, 0),
        "a slice counts nothing"
    );
    assert_eq!(p.push_wait(&event("3"), short, true), Err(Error::QueueFull));
    assert_eq!(p.stats().unwrap().dropped, 1);
    for _ in 0..4 {
        release.send(()).unwrap();
    }
    p.push_wait(&event("4"), WAIT, false).unwrap();
    p.flush(WAIT).unwrap();
    assert_eq!(p.stats().unwrap().delivered, 4);
}

/// Top channels are answered from a cached merge between flushes, and a query
/// right after `flush` sees every flushed event (the cache is invalidated), for
/// every k and both window kinds, with several workers.
#[test]
fn top_channels_after_flush_sees_every_flushed_event_despite_the_cache() {
    let p = Processor::new(ProcessorConfig {
        // A long interval: only the flush can make a cached answer stale.
        flush_interval: Duration::from_secs(3600),
        ..config(3, 64)
    })
    .unwrap();
    let push = |channel: &str, n: usize| push_users_and_flush(&p, channel, n);
    push("a", 30);
    push("b", 20);
    let names = |top: Vec<ChannelCount>| -> Vec<(String, u64)> {
        top.into_iter().map(|c| (c.channel, c.count)).collect()
    };
    for window in [0, 3600] {
        assert_eq!(
            names(p.top_channels(5, window, 1_700_000_030).unwrap()),
            [("a".into(), 30), ("b".into(), 20)]
        );
    }
    // Cached now; more events and a flush must show.
    push("c", 40);
    push("b", 15);
    for window in [0, 3600] {
        let want: Vec<(String, u64)> = vec![("c".into(), 40), ("b".into(), 35), ("a".into(), 30)];
        assert_eq!(
            names(p.top_channels(5, window, 1_700_000_030).unwrap()),
            want
        );
        // Every k is the prefix of the same order (ties: count, then id).
        assert_eq!(
            names(p.top_channels(2, window, 1_700_000_030).unwrap()),
            want[..2]
        );
        assert_eq!(
            names(p.top_channels(1, window, 1_700_000_030).unwrap()),
            want[..1]
        );
    }
    push("a", 5);
    let top = names(p.top_channels(3, 3600, 1_700_000_030).unwrap());
    assert_eq!(top[0..2], [("c".into(), 40), ("a".into(), 35)][..]);
    assert_eq!(
        top[2],
        ("b".into(), 35),
        "equal counts: channel id ascending"
    );
    // A window ending at another minute is its own answer.
    assert!(
        p.top_channels(3, 60, 1_700_000_000 + 7200)
            .unwrap()
            .is_empty()
    );
    assert_eq!(p.top_channels(0, 3600, 0).unwrap(), []);
}

/// A cached top-channels answer is reused as long as no event has been sketched
/// since it was computed, past the flush interval and across flushes that added
/// nothing (an idle processor never merges again), for 0, 1 and 2 workers; a
/// sketched event makes the next query after a flush merge again.
#[test]
fn top_channels_answer_is_kept_while_nothing_new_is_sketched() {
    for workers in [0, 1, 2] {
        let p = Processor::new(config(workers, 64)).unwrap();
        let push = |channel: &str, n: usize| push_users_and_flush(&p, channel, n);
        push("a", 3);
        push("b", 2);
        let now = 1_700_000_030;
        for window in [0, 3600] {
            let (first, n) = p.top_channels_shared(5, window, now).unwrap();
            assert_eq!(n, 2);
            // Past the interval (20 ms), and after a flush that delivered nothing.
            let interval_over = Instant::now() + 3 * p.config().flush_interval;
            assert!(wait_until(|| Instant::now() >= interval_over));
            p.flush(WAIT).unwrap();
            let (again, _) = p.top_channels_shared(5, window, now).unwrap();
            assert!(
                Arc::ptr_eq(&first, &again),
                "{workers} workers, window {window}"
            );
        }
        let (before, _) = p.top_channels_shared(5, 0, now).unwrap();
        push("c", 4);
        let (after, n) = p.top_channels_shared(5, 0, now).unwrap();
        assert!(!Arc::ptr_eq(&before, &after));
        let names: Vec<(&str, u64)> = after[..n]
            .iter()
            .map(|c| (c.channel.as_str(), c.count))
            .collect();
        assert_eq!(names, [("c", 4), ("a", 3), ("b", 2)]);
        p.close().unwrap();
    }
}
