//! Processor tests: exactly-once delivery under concurrency, ordering, the flush
//! barrier, retries and dead letters, shutdown races, bounded memory, sketches.
//! Every wait is on a condition with a timeout, never a bare sleep.

use super::*;
use crate::leaderboard::MAX_TIMESTAMP;
use std::sync::atomic::AtomicU32;
use std::sync::mpsc;

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

fn event(user: &str) -> EventIn<'_> {
    EventIn {
        kind: "message",
        user_id: user,
        channel_id: "general",
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
    let s = p.stats();
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
    let s = p.stats();
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
    assert_eq!(p.stats().delivered, 1);
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
    let s = p.stats();
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
    let s = p.stats();
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
    let s = p.stats();
    assert_eq!((s.failures, s.dead_lettered), (2, 1));
    // The processor is still usable: the panic was the callback's, not ours.
    p.push(&event("2")).unwrap();
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
                loop {
                    let seq = next.fetch_add(1, Ordering::SeqCst);
                    match push_retrying(&p, &seq.to_string()) {
                        Ok(()) => {}
                        Err(Error::ShutDown) => return seq,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(|| p.stats().accepted >= 5_000));
    p.shutdown().unwrap();
    let refused: Vec<u64> = producers.into_iter().map(|t| t.join().unwrap()).collect();
    let s = p.stats();
    assert_eq!(
        s.delivered, s.accepted,
        "every accepted event was delivered"
    );
    let mut seen = lock(&sink.seen).clone();
    seen.sort_unstable();
    let before = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), before, "no duplicates");
    assert!(refused.iter().all(|r| seen.binary_search(r).is_err()));
    assert!(matches!(p.push(&event("x")), Err(Error::ShutDown)));
    assert!(matches!(p.flush(WAIT), Err(Error::ShutDown)));
    p.shutdown().unwrap();
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
        assert_eq!(p.push_batch(&batch).unwrap(), batch.len());
    }
    p.flush(WAIT).unwrap();
    let s = p.stats();
    assert_eq!(s.accepted, 200_000);
    assert_eq!(s.discarded, 200_000, "batches were discarded, not kept");
    assert_eq!(s.queue_len, 0);
    let users = p.unique_users(0, 0) as f64;
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
    assert_eq!(p.stats().dropped, 1);
    for _ in 0..5 {
        release_tx.send(()).unwrap();
    }
    p.flush(WAIT).unwrap();
    assert_eq!(p.stats().delivered, 5);
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
    assert_eq!(p.push_batch(&batch).unwrap(), 4);
    let s = p.stats();
    assert_eq!((s.accepted, s.dropped, s.pushed), (5, 6, 11));
    // An invalid event refuses the whole batch before anything is pushed.
    let long = "x".repeat(MAX_FIELD_BYTES + 1);
    let bad = [event("ok"), event(&long)];
    assert!(matches!(p.push_batch(&bad), Err(Error::InvalidArgument(_))));
    assert_eq!(p.stats().pushed, 11);
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
                r.push(p.shutdown().map_err(|e| e.to_string()));
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
    assert_eq!(p.now(), base, "EVENT_TIME: now is the newest event");
    // HyperLogLog: within one of the truth for counts this small (a register
    // collision among 50 ids has a ~7% chance).
    let near = |got: u64, want: u64| got.abs_diff(want) <= 1;
    assert!(
        near(p.unique_users(3600, 0), 50),
        "{}",
        p.unique_users(3600, 0)
    );
    assert!(near(p.unique_users(0, 0), 150));
    assert_eq!(p.users_sketch(3600, 0).count(), p.unique_users(3600, 0));
    assert!(p.unique_users(60, 0) <= 2, "only the newest minute");
    let top = p.top_channels(2, 3600, 0);
    assert_eq!(top[0].channel, "cold");
    assert_eq!(top[0].count, 40);
    assert_eq!((top[1].channel.as_str(), top[1].count), ("hot", 10));
    assert_eq!(p.channel_count("general"), 100);
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
    assert_eq!(p.stats().pushed, 0);
}
