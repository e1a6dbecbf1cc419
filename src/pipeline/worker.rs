//! The worker loop: pop runs of events, sketch them, batch them, deliver batches
//! (with retries and the dead letter), serve flush requests, exit on shutdown.

use crate::quiet_panic;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use super::config::{Clock, MAX_INTERVAL};
use super::core::{Shared, lock};
use super::event::Batch;
use crate::leaderboard::wall_clock_secs;

thread_local! {
    /// The core whose worker this thread is ([`Shared::id`]), 0 if none.
    static WORKER_OF: Cell<u64> = const { Cell::new(0) };
}

/// The id of the core this thread works for (0: not a worker thread).
pub(crate) fn current_core_id() -> u64 {
    WORKER_OF.with(|w| w.get())
}

/// Events a worker moves from the ring per shard-lock acquisition.
const RUN: usize = 256;

/// Empty polls (spins, then yields) before an idle worker sleeps.
const IDLE_ROUNDS: u32 = 200;
/// A run shorter than this means the worker is on the producer's heels...
const SHORT_RUN: usize = 32;
/// ...and it pauses for this many spin-loop hints (about 2 µs on our EPYC VMs, where
/// one `pause` takes ~27 ns; less on CPUs with a shorter `pause`).
const SHORT_RUN_PAUSE: u32 = 64;

/// One worker's private state.
struct Worker {
    shared: Arc<Shared>,
    index: usize,
    batch: Batch,
    batch_started: Option<Instant>,
    acked: u64,
    processed: u64,
    clock_seen: i64,
    /// A run's journal record, reused (journaled processors only).
    record: Vec<u8>,
    /// The community analytics' per-run scratch, reused.
    community: crate::community::RunScratch,
}

pub(crate) fn run_worker(shared: Arc<Shared>, index: usize) {
    WORKER_OF.with(|w| w.set(shared.id));
    let mut worker = Worker {
        batch: Batch::with_capacity(shared.config.batch_size.min(65536)),
        shared,
        index,
        batch_started: None,
        acked: 0,
        processed: 0,
        clock_seen: 0,
        record: Vec::new(),
        community: Default::default(),
    };
    let outcome = quiet_panic::catch(|| worker.run());
    if let Err(msg) = outcome {
        let lost = worker.batch.len();
        worker.shared.poison(format!(
            "worker {index} panicked: {msg} ({lost} events of its batch may be lost)"
        ));
        // It will pop nothing more: a flush must not wait for it.
        worker.shared.barrier.exit(index);
    }
}

impl Worker {
    fn run(&mut self) {
        let mut idle_rounds = 0u32;
        loop {
            let got = self.fill();
            let shared = Arc::clone(&self.shared);
            if self.batch.len() >= shared.config.batch_size {
                self.deliver();
            }
            self.serve_flush();
            if got > 0 {
                idle_rounds = 0;
                if self.interval_elapsed() {
                    self.deliver();
                }
                if got < SHORT_RUN {
                    // Right behind the producer: let a longer run build up rather
                    // than take every slot the moment it is written, which makes
                    // each slot's cache line bounce between the two cores.
                    for _ in 0..SHORT_RUN_PAUSE {
                        std::hint::spin_loop();
                    }
                }
                continue;
            }
            // The ring was empty.
            if shared.barrier.is_stopping() && shared.ring.is_closed() {
                // Closed and empty: nothing more can arrive.
                if shared.ring.is_empty() {
                    self.deliver();
                    shared.barrier.exit(self.index);
                    return;
                }
                continue;
            }
            if self.interval_elapsed() {
                self.deliver();
            }
            // Stay awake briefly (about 50-100 µs of yields) before sleeping: under a
            // steady stream the next event comes sooner than a futex wake-up would.
            if idle_rounds < IDLE_ROUNDS {
                idle_rounds += 1;
                if idle_rounds < 16 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            self.sleep();
            idle_rounds = 0;
        }
    }

    /// Moves up to [`RUN`] events from the ring into the batch, then records the
    /// run in the sketches (reading the batch's copies; see
    /// [`crate::sketch::WindowedAnalytics::observe_run`]).
    fn fill(&mut self) -> usize {
        let shared = &*self.shared;
        let room = shared.config.batch_size - self.batch.len();
        let limit = RUN.min(room.max(1));
        let start = self.batch.len();
        let batch = &mut self.batch;
        let mut newest = self.clock_seen;
        // One claim for the whole run (see `Ring::pop_run`).
        let n = shared.ring.pop_run(limit, |record| {
            newest = newest.max(record.timestamp());
            batch.push(&record);
        });
        if newest > self.clock_seen {
            self.clock_seen = newest;
            if shared.config.clock == Clock::EventTime {
                // Relaxed: the clock is a monotonic hint read by queries; no other
                // data is published through it.
                shared.event_clock.fetch_max(newest, Ordering::Relaxed);
            }
        }
        if n == 0 {
            return 0;
        }
        if start == 0 {
            self.batch_started = Some(Instant::now());
        }
        // Future timestamps (wall clock; within the accepted skew) count in the
        // current minute.
        let cap = match shared.config.clock {
            Clock::Wall => {
                let wall = wall_clock_secs();
                // Relaxed: a lower bound for the pushers' future check (see
                // `Shared::wall_seen`); written about once a second.
                if wall > shared.wall_seen.load(Ordering::Relaxed) {
                    shared.wall_seen.fetch_max(wall, Ordering::Relaxed);
                }
                wall
            }
            Clock::EventTime => i64::MAX,
        };
        let batch = &self.batch;
        let run = || {
            batch
                .iter_from(start)
                .map(|ev| (ev.user_id.as_bytes(), ev.channel_id, ev.timestamp.min(cap)))
        };
        let mut shard = lock(&shared.shards[self.index]);
        if shared.durable.is_some() {
            // Logged before it is sketched, under the shard's lock (a checkpoint
            // takes every shard's lock: the log and the sketches agree).
            super::durable::encode_run(
                &mut self.record,
                batch.iter_from(start).map(|ev| {
                    (
                        ev.user_id.as_bytes(),
                        ev.channel_id,
                        ev.guild_id,
                        ev.timestamp.min(cap),
                    )
                }),
            );
            shared.journal_run(self.index, &self.record);
        }
        shard.observe_run(run());
        shared.community.observe_run(&mut self.community, n, |i| {
            let ev = batch.get(start + i).expect("the run is in the batch");
            crate::community::CommunityEvent {
                user: ev.user_id.as_bytes(),
                guild: ev.guild_id,
                channel: ev.channel_id,
                ts: ev.timestamp.min(cap),
            }
        });
        drop(shard);
        self.processed += n as u64;
        // Relaxed: a statistics counter.
        shared.workers[self.index]
            .processed
            .store(self.processed, Ordering::Relaxed);
        n
    }

    fn interval_elapsed(&self) -> bool {
        match self.batch_started {
            Some(t) => t.elapsed() >= self.shared.config.flush_interval,
            None => false,
        }
    }

    /// Completes a pending flush request once the ring has moved past its target.
    fn serve_flush(&mut self) {
        let shared = Arc::clone(&self.shared);
        let Some((generation, target)) = shared.barrier.pending(self.acked) else {
            return;
        };
        if shared.ring.head_position() < target {
            return;
        }
        // Every event below `target` has been popped; those this worker popped are in
        // its batch, so delivering it completes this worker's share.
        self.deliver();
        self.acked = generation;
        shared.barrier.ack(self.index, generation);
    }

    fn sleep(&mut self) {
        let shared = Arc::clone(&self.shared);
        let mut wakes = lock(&shared.wake_lock);
        shared.sleepers.fetch_add(1, Ordering::SeqCst);
        // Pairs with the pushers' SeqCst tail CAS and `sleepers` load (`wake_one`).
        fence(Ordering::SeqCst);
        let must_stay_awake = !shared.ring.is_empty()
            || shared.barrier.is_stopping()
            || shared.barrier.has_pending(self.acked);
        if !must_stay_awake {
            let timeout = match self.batch_started {
                Some(t) => shared.config.flush_interval.saturating_sub(t.elapsed()),
                // Nothing pending: sleep until woken (the timeout is a safety net).
                None => Duration::from_secs(1),
            };
            wakes = shared
                .wake
                .wait_timeout(wakes, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        shared.end_sleep(&mut wakes);
    }

    /// Hands the batch to the flush callback (with retries and the dead letter).
    fn deliver(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let n = self.batch.len() as u64;
        let (flush, dead_letter) = {
            let cbs = shared.callbacks.read().unwrap_or_else(|e| e.into_inner());
            (cbs.flush.clone(), cbs.dead_letter.clone())
        };
        // Relaxed counters throughout: statistics, read with relaxed loads.
        let c = &shared.counters;
        match flush {
            None => {
                c.discarded.fetch_add(n, Ordering::Relaxed);
            }
            Some(cb) => {
                let mut backoff = shared.config.retry_backoff;
                let mut attempt = 0;
                loop {
                    let outcome = quiet_panic::catch(|| cb.on_flush(&mut self.batch))
                        .unwrap_or_else(|p| Err(format!("flush callback panicked: {p}")));
                    match outcome {
                        Ok(()) => {
                            c.delivered.fetch_add(n, Ordering::Relaxed);
                            c.batches.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(error) => {
                            c.failures.fetch_add(1, Ordering::Relaxed);
                            if attempt >= shared.config.max_retries {
                                if let Some(dl) = &dead_letter {
                                    let _ = quiet_panic::catch(|| {
                                        dl.on_dead_letter(&mut self.batch, &error)
                                    });
                                }
                                c.dead_lettered.fetch_add(n, Ordering::Relaxed);
                                c.dead_letter_batches.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            attempt += 1;
                            c.retries.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(MAX_INTERVAL);
                        }
                    }
                }
            }
        }
        self.batch.clear();
        self.batch_started = None;
    }
}

/// The synchronous mode's worker (`workers: 0`): the state of a worker thread,
/// driven by the thread that calls `flush` or `close`. One drain at a time (the
/// mutex): a drain that finds the ring already past its target still waits for
/// the drain in progress, which delivers what it popped before unlocking.
pub(crate) struct InlineWorker {
    worker: std::sync::Mutex<Worker>,
}

/// Marks the calling thread as running a callback of core `id` (so `flush`,
/// `close` and `set_*_callback` from inside the callback are refused) until
/// dropped, then restores the previous mark.
struct InCallback(u64);

impl InCallback {
    fn enter(id: u64) -> Self {
        InCallback(WORKER_OF.with(|w| w.replace(id)))
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        WORKER_OF.with(|w| w.set(self.0));
    }
}

// SAFETY: the only fields that are not `Send` are the `RawEvent` pointers of the
// batch's raw view, which point into the batch's own heap buffers (they move with
// it) and are rebuilt by `Batch::raw` before every use; the worker is used by one
// thread at a time (the `InlineWorker` mutex), never shared.
unsafe impl Send for Worker {}

impl InlineWorker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        InlineWorker {
            worker: std::sync::Mutex::new(Worker {
                batch: Batch::with_capacity(shared.config.batch_size.min(65536)),
                shared,
                index: 0,
                batch_started: None,
                acked: 0,
                processed: 0,
                clock_seen: 0,
                record: Vec::new(),
                community: Default::default(),
            }),
        }
    }

    /// On the calling thread: pops every event below ring position `target`,
    /// sketches it and delivers it in batches of at most `batch_size` (retries and
    /// dead letter as on a worker thread), the last batch partial. `false` if
    /// another thread's drain held the worker past `deadline` (nothing done).
    pub(crate) fn drain(&self, target: usize, deadline: Option<Instant>) -> bool {
        let mut guard = loop {
            match self.worker.try_lock() {
                Ok(guard) => break guard,
                // A panic outside the callbacks' guards poisons the core too; the
                // worker's state is a batch and counters, still consistent.
                Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        };
        let worker = &mut *guard;
        let shared = Arc::clone(&worker.shared);
        let _mark = InCallback::enter(shared.id);
        let outcome = quiet_panic::catch(|| {
            while shared.ring.head_position() < target {
                if worker.fill() == 0 {
                    break; // empty: every claimed position was popped
                }
                if worker.batch.len() >= shared.config.batch_size {
                    worker.deliver();
                }
            }
            worker.deliver();
        });
        if let Err(msg) = outcome {
            let lost = worker.batch.len();
            worker.batch.clear();
            worker.batch_started = None;
            shared.poison(format!(
                "synchronous drain panicked: {msg} ({lost} events of its batch may be lost)"
            ));
        }
        true
    }
}
