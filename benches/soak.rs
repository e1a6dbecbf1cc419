//! Long soak: memory over time at steady state, for the leaderboard and the processor.
//!
//! `cargo bench --bench soak` (or `SOAK_SECS=600 cargo bench --bench soak` for longer;
//! default 60 s per component; under `cargo test` one second). Prints one row every tenth of the run: elapsed
//! seconds, the process's resident set (from `/proc/self/statm`), and for the
//! leaderboard its size, evictions and heap bytes; for the processor the events
//! delivered and its queue length. A bounded structure shows flat columns after
//! the first rows; growth means a leak.
//!
//! * leaderboard: a 100k-user board at capacity churned by 200k users, half the
//!   time with equal timestamps (ties at the eviction boundary), half with
//!   distinct wall-clock-like ones;
//! * processor: one producer pushing as fast as the ring takes events from 1M
//!   users over 100k channels (far more than the top-k summary's capacity) with
//!   wall-clock timestamps, so minute buckets rotate, into a counting C callback.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engagehub::ffi::processor::*;
use engagehub::ffi::{EH_OK, EH_QUEUE_FULL};
use engagehub::leaderboard::{Leaderboard, LeaderboardConfig};
use engagehub::pipeline::RawEvent;

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

/// `SOAK_SECS`, default 60 under `cargo bench`; `cargo test --all-targets` runs
/// this binary without `--bench`, and then it is a one-second smoke run.
fn run_for() -> Duration {
    let benching = std::env::args().any(|a| a == "--bench");
    let secs = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benching { 60 } else { 1 });
    Duration::from_secs(secs)
}

/// xorshift64: a cheap, reproducible stream of user and channel picks.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn soak_leaderboard(total: Duration) {
    let cap = 100_000;
    let mut board = Leaderboard::new(LeaderboardConfig {
        max_users: cap,
        ..LeaderboardConfig::default()
    })
    .expect("valid config");
    let users: Vec<String> = (0..2 * cap as u64)
        .map(|i| (100_000_000_000_000_000 + i).to_string())
        .collect();
    println!("leaderboard: {cap} max_users, {} users", users.len());
    println!("  secs   rss_MiB   size    evicted     heap_MiB  updates");
    let (start, mut x, mut updates) = (Instant::now(), 0x9e37_79b9_7f4a_7c15u64, 0u64);
    let t0 = 1_767_225_600;
    let mut report = Duration::ZERO;
    while start.elapsed() < total {
        let equal_ts = start.elapsed() < total / 2;
        for _ in 0..10_000 {
            let user = &users[(next(&mut x) % users.len() as u64) as usize];
            let ts = if equal_ts {
                t0
            } else {
                t0 + (updates / 1000) as i64
            };
            let _ = board.add(user, 1.0, ts);
            updates += 1;
        }
        if start.elapsed() >= report {
            let s = board.stats();
            println!(
                "  {:5.0}  {:8.1}  {:6}  {:9}  {:8.1}  {}",
                start.elapsed().as_secs_f64(),
                rss_mib(),
                s.len,
                s.evicted,
                s.heap_bytes as f64 / (1 << 20) as f64,
                updates
            );
            report += total / 10;
        }
    }
    assert!(board.len() <= cap);
}

unsafe extern "C" fn count_events(user_data: *mut c_void, _: *const RawEvent, n: usize) -> i32 {
    // SAFETY: user_data is the AtomicU64 that outlives the processor (freed below).
    let counter = unsafe { &*user_data.cast::<AtomicU64>() };
    counter.fetch_add(n as u64, Ordering::Relaxed);
    0
}

fn soak_processor(total: Duration) {
    let delivered = AtomicU64::new(0);
    let config = eh_processor_config {
        capacity: 65536,
        workers: 2,
        batch_size: 1000,
        flush_interval_ms: 100,
        ..Default::default()
    };
    let mut p = std::ptr::null_mut();
    // SAFETY: config and out-param are valid; the callback's user data outlives p
    // (p is freed, joining the workers, before `delivered` goes out of scope).
    unsafe {
        assert_eq!(eh_processor_new(&config, &mut p), EH_OK);
        let user = &delivered as *const AtomicU64 as *mut c_void;
        assert_eq!(
            eh_processor_set_flush_callback(p, Some(count_events), user, None),
            EH_OK
        );
    }
    println!("processor: 2 workers, 1M users, 100k channels");
    println!("  secs   rss_MiB   delivered     queue");
    let (start, mut x) = (Instant::now(), 0x2545_f491_4f6c_dd1du64);
    let mut report = Duration::ZERO;
    let kind = "message";
    while start.elapsed() < total {
        for _ in 0..10_000 {
            let user = (next(&mut x) % 1_000_000).to_string();
            let channel = format!("channel-{}", next(&mut x) % 100_000);
            // SAFETY: p is live; the strings are valid for the call.
            let rc = unsafe {
                eh_processor_push(
                    p,
                    kind.as_ptr(),
                    kind.len(),
                    user.as_ptr(),
                    user.len(),
                    channel.as_ptr(),
                    channel.len(),
                    0,
                    std::ptr::null(),
                    0,
                )
            };
            if rc == EH_QUEUE_FULL {
                std::thread::yield_now();
            } else {
                assert_eq!(rc, EH_OK);
            }
        }
        if start.elapsed() >= report {
            let mut stats = eh_processor_stats::default();
            // SAFETY: p is live and stats is writable.
            unsafe { eh_processor_get_stats(p, &mut stats) };
            println!(
                "  {:5.0}  {:8.1}  {:10}  {:8}",
                start.elapsed().as_secs_f64(),
                rss_mib(),
                delivered.load(Ordering::Relaxed),
                stats.queue_len
            );
            report += total / 10;
        }
    }
    // SAFETY: p is live and no other thread uses it.
    unsafe { eh_processor_free(p) };
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters by component name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let total = run_for();
    if wanted("leaderboard") {
        soak_leaderboard(total);
    }
    if wanted("processor") {
        soak_processor(total);
    }
}
