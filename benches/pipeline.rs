//! Event pipeline benchmarks.
//!
//! * `ring/*`: push+pop throughput of our Vyukov ring beside crossbeam-queue's
//!   `ArrayQueue` (the baseline), 1 producer / 1 consumer and 2 / 1, in one group so
//!   the ratio comes from the same run.
//! * `end_to_end/*`: events from `eh_processor_push` (through the C ABI) to a no-op C
//!   flush callback, 1 producer thread and 1 worker, three short strings per event
//!   (4096 users, 16 channels in turn);
//!   the time covers pushing N events and the flush that waits for their delivery.
//! * `queries/*`: `eh_processor_top_channels`, cached answer vs a merge per call.

use std::ffi::c_void;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use engagehub::ffi::processor::*;
use engagehub::ffi::{EH_OK, EH_QUEUE_FULL};
use engagehub::pipeline::RawEvent;
use engagehub::pipeline::ring::Ring;

const CAPACITY: usize = 16384;

trait Queue: Send + Sync + 'static {
    fn put(&self, v: u64) -> bool;
    fn take(&self) -> Option<u64>;
}

impl Queue for Ring<u64> {
    fn put(&self, v: u64) -> bool {
        self.push(v).is_ok()
    }
    fn take(&self) -> Option<u64> {
        self.pop()
    }
}

impl Queue for ArrayQueue<u64> {
    fn put(&self, v: u64) -> bool {
        self.push(v).is_ok()
    }
    fn take(&self) -> Option<u64> {
        self.pop()
    }
}

/// Values moved per timed run at least: thread start-up (tens of µs) must not count.
const MIN_TRANSFER: u64 = 1 << 18;

/// Time per `iters` values, measured by moving at least [`MIN_TRANSFER`] through `q`.
fn timed_transfer<Q: Queue>(q: &Arc<Q>, producers: u64, iters: u64) -> Duration {
    let total = iters.max(MIN_TRANSFER).div_ceil(producers) * producers;
    transfer(q, producers, total).mul_f64(iters as f64 / total as f64)
}

/// Moves `total` values through `q` with `producers` threads and one consumer. A
/// thread that finds the queue full or empty yields: with more threads than the 2
/// cores of our machines, spinning would measure the scheduler.
fn transfer<Q: Queue>(q: &Arc<Q>, producers: u64, total: u64) -> Duration {
    let per = total / producers;
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let q = Arc::clone(q);
            std::thread::spawn(move || {
                for i in 0..per {
                    while !q.put(i) {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let mut got = 0;
    let mut sum = 0u64;
    while got < per * producers {
        match q.take() {
            Some(v) => {
                sum = sum.wrapping_add(v);
                got += 1;
            }
            None => std::thread::yield_now(),
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    black_box(sum);
    start.elapsed()
}

fn ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    for producers in [1u64, 2] {
        let ours = Arc::new(Ring::<u64>::new(CAPACITY));
        group.bench_function(format!("engagehub/{producers}p1c"), |b| {
            b.iter_custom(|iters| timed_transfer(&ours, producers, iters))
        });
        let baseline = Arc::new(ArrayQueue::<u64>::new(CAPACITY));
        group.bench_function(format!("crossbeam_array_queue/{producers}p1c"), |b| {
            b.iter_custom(|iters| timed_transfer(&baseline, producers, iters))
        });
    }
    group.finish();
}

unsafe extern "C" fn count_events(user_data: *mut c_void, _: *const RawEvent, n: usize) -> i32 {
    // SAFETY: `user_data` is the `AtomicU64` registered below, alive until free.
    let counter = unsafe { &*user_data.cast::<AtomicU64>() };
    counter.fetch_add(n as u64, Ordering::Relaxed);
    0
}

struct Handle(*mut eh_processor);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by eh_processor_new; freed once.
        unsafe { eh_processor_free(self.0) };
    }
}

/// `history_days`: 0 = the default (90 days of daily history), -1 = none.
fn new_processor(delivered: &AtomicU64, history_days: i32) -> Handle {
    let config = eh_processor_config {
        capacity: 65536,
        workers: 1,
        batch_size: 1000,
        // A full ring makes the producer wait (yielding) instead of hammering the
        // slots the worker is reading.
        overflow: EH_OVERFLOW_BLOCK,
        block_timeout_ms: 60_000,
        history_days,
        ..Default::default()
    };
    let mut p = std::ptr::null_mut();
    // SAFETY: valid config and out-param; the callback's user data outlives `p`.
    unsafe {
        assert_eq!(eh_processor_new(&config, &mut p), EH_OK);
        let user = delivered as *const AtomicU64 as *mut c_void;
        assert_eq!(
            eh_processor_set_flush_callback(p, Some(count_events), user, None),
            EH_OK
        );
    }
    Handle(p)
}

fn end_to_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("end_to_end");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    let users: Vec<String> = (0..4096u64)
        .map(|i| format!("{}", 100_000_000_000_000_000 + i * 7919))
        .collect();
    // 16 channels in turn: a run of events spans several channels, as in a busy
    // server, so per-channel work is not flattered by a single hot key.
    let channels: Vec<String> = (0..16).map(|i| format!("channel-{i:02}")).collect();
    let kind = "message";

    let delivered = AtomicU64::new(0);
    let p = new_processor(&delivered, 0);
    group.bench_function("push_to_c_callback", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let user = users[(i & 4095) as usize].as_bytes();
                let channel = &channels[(i & 15) as usize];
                loop {
                    // SAFETY: live handle, valid (ptr, len) pairs.
                    let rc = unsafe {
                        eh_processor_push(
                            p.0,
                            kind.as_ptr(),
                            kind.len(),
                            user.as_ptr(),
                            user.len(),
                            channel.as_ptr(),
                            channel.len(),
                            1_700_000_000,
                            std::ptr::null(),
                            0,
                        )
                    };
                    match rc {
                        EH_OK => break,
                        EH_QUEUE_FULL => std::thread::yield_now(),
                        other => panic!("push failed: {other}"),
                    }
                }
            }
            // SAFETY: live handle.
            assert_eq!(unsafe { eh_processor_flush(p.0, 60_000) }, EH_OK);
            start.elapsed()
        })
    });

    drop(p);
    // The batch push with the daily history as configured by default (90 days, no
    // guild), with three guilds, and without the history: what the history costs a
    // worker (the events are sketched by the one worker the producer waits for).
    let guilds = ["", "guild-1", "guild-2", "guild-3"];
    for (name, history_days, with_guilds) in [
        ("push_batch_to_c_callback", 0, false),
        ("push_batch_to_c_callback/guilds", 0, true),
        ("push_batch_to_c_callback/no_history", -1, false),
    ] {
        let p = new_processor(&delivered, history_days);
        let raw: Vec<RawEvent> = users
            .iter()
            .take(256)
            .zip(channels.iter().cycle())
            .enumerate()
            .map(|(i, (u, channel))| {
                let guild = if with_guilds {
                    guilds[1 + i % 3]
                } else {
                    guilds[0]
                };
                RawEvent {
                    kind: kind.as_ptr(),
                    kind_len: kind.len(),
                    user_id: u.as_ptr(),
                    user_id_len: u.len(),
                    channel_id: channel.as_ptr(),
                    channel_id_len: channel.len(),
                    timestamp: 1_700_000_000,
                    payload: std::ptr::null(),
                    payload_len: 0,
                    guild_id: guild.as_ptr(),
                    guild_id_len: guild.len(),
                }
            })
            .collect();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters as usize;
                while left > 0 {
                    let chunk = &raw[..left.min(raw.len())];
                    let mut offset = 0;
                    while offset < chunk.len() {
                        let mut accepted = 0usize;
                        let rest = &chunk[offset..];
                        // SAFETY: live handle; `rest` points at valid events.
                        let rc = unsafe {
                            eh_processor_push_batch(p.0, rest.as_ptr(), rest.len(), &mut accepted)
                        };
                        assert_eq!(rc, EH_OK);
                        offset += accepted;
                        if accepted < rest.len() {
                            std::thread::yield_now();
                        }
                    }
                    left -= chunk.len();
                }
                // SAFETY: live handle.
                assert_eq!(unsafe { eh_processor_flush(p.0, 60_000) }, EH_OK);
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// `eh_processor_top_channels(10, window)` on a processor with 2 workers that has
/// sketched 200,000 events over 2,000 channels (Zipf-like: channel `i` gets weight
/// 1/(i+1)), all in one minute: `cached` is the steady state (the merged answer is
/// reused until `flush_interval_ms` passes or a flush completes); `merged` asks for
/// k = 1,025, above the summaries' capacity, which merges the workers' summaries on
/// every call, as every query did before the cache.
fn queries(c: &mut Criterion) {
    let mut group = c.benchmark_group("queries");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    let config = eh_processor_config {
        capacity: 65536,
        workers: 2,
        batch_size: 1000,
        flush_interval_ms: 3_600_000,
        overflow: EH_OVERFLOW_BLOCK,
        block_timeout_ms: 60_000,
        ..Default::default()
    };
    let mut p = std::ptr::null_mut();
    // SAFETY: valid config and out-param.
    assert_eq!(unsafe { eh_processor_new(&config, &mut p) }, EH_OK);
    let p = Handle(p);
    let channels: Vec<String> = (0..2000).map(|i| format!("channel-{i:04}")).collect();
    let weights: Vec<f64> = (0..2000).map(|i| 1.0 / (i as f64 + 1.0)).collect();
    let total: f64 = weights.iter().sum();
    let ts = 1_700_000_000i64;
    let mut pushed = 0u64;
    for (channel, w) in channels.iter().zip(&weights) {
        let n = ((w / total) * 200_000.0).ceil() as u64;
        for i in 0..n {
            let user = format!("{}", 100_000_000_000_000_000u64 + (pushed + i) % 50_000);
            // SAFETY: live handle, valid (ptr, len) pairs.
            let rc = unsafe {
                eh_processor_push(
                    p.0,
                    b"message".as_ptr(),
                    7,
                    user.as_ptr(),
                    user.len(),
                    channel.as_ptr(),
                    channel.len(),
                    ts,
                    std::ptr::null(),
                    0,
                )
            };
            assert_eq!(rc, EH_OK);
        }
        pushed += n;
    }
    // SAFETY: live handle.
    assert_eq!(unsafe { eh_processor_flush(p.0, 60_000) }, EH_OK);
    let query = |k: usize, window: i64| {
        let mut list = eh_channel_list {
            len: 0,
            rows: std::ptr::null(),
            ids: std::ptr::null(),
            size: 0,
            owner: std::ptr::null_mut(),
        };
        // SAFETY: live handle and out-param; the list is freed right after.
        unsafe {
            assert_eq!(
                eh_processor_top_channels(p.0, k, window, ts + 30, &mut list),
                EH_OK
            );
            black_box(list.len);
            eh_channel_list_free(&mut list);
        }
    };
    for (name, window) in [("all_time", 0i64), ("last_hour", 3600)] {
        group.bench_function(format!("top_channels_10_{name}/cached"), |b| {
            b.iter(|| query(10, window))
        });
        group.bench_function(format!("top_channels_1025_{name}/merged"), |b| {
            b.iter(|| query(1025, window))
        });
    }
    drop(p);
    group.finish();
}

criterion_group!(benches, ring, end_to_end, queries);
criterion_main!(benches);
