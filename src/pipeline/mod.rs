//! Event pipeline: producers push events into a bounded lock-free ring; worker
//! threads pop them, update the sketches, collect them into batches and hand each
//! batch to the flush callback.
//!
//! Guarantees (DESIGN.md, "Event pipeline"):
//! * [`Processor::push`] never blocks with [`Overflow::DropNewest`]: a full ring
//!   returns [`Error::QueueFull`] and counts a drop.
//! * A batch goes to the callback when it reaches `batch_size` events or
//!   `flush_interval` after its first event; callbacks run on worker threads only;
//!   with one worker, batches arrive in push order.
//! * A failing callback (error or panic) is retried with doubling backoff up to
//!   `max_retries` times, then the batch goes to the dead-letter callback and is
//!   counted. With no flush callback, batches are counted as discarded.
//! * [`Processor::flush`] returns once every event accepted before the call has been
//!   delivered, dead-lettered or discarded. [`Processor::shutdown`] (and drop) stop
//!   intake, drain the ring, deliver everything and join the workers.

pub mod event;
pub mod ring;

#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use event::Record;
pub use event::{Batch, Event, EventIn, RawEvent};
pub use event::{MAX_FIELD_BYTES, MAX_PAYLOAD_BYTES};
use ring::{PushError, Ring};

use crate::error::{Error, Result};
use crate::leaderboard::wall_clock_secs;
use crate::sketch::{self, ChannelCount, Hll, WindowConfig, WindowedAnalytics};

/// Largest ring accepted (slots).
pub const MAX_RING_CAPACITY: usize = 1 << 24;
/// Most worker threads accepted.
pub const MAX_WORKERS: usize = 64;
/// Largest batch accepted.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// Longest flush interval or retry backoff accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Most retries accepted.
pub const MAX_RETRIES: u32 = 100;

/// What `push` does when the ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse the event at once with [`Error::QueueFull`] and count a drop.
    DropNewest,
    /// Wait up to `timeout` for a free slot, then refuse and count a drop.
    Block {
        /// Longest wait.
        timeout: Duration,
    },
}

/// Which clock defines "now" for `timestamp <= 0` and for window queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system's wall clock.
    Wall,
    /// The newest event timestamp seen by the workers (for replays).
    EventTime,
}

/// Processor settings; [`Default`] gives DESIGN.md's defaults.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Ring slots, rounded up to a power of two.
    pub capacity: usize,
    /// Worker threads.
    pub workers: usize,
    /// Events per batch.
    pub batch_size: usize,
    /// Longest time a batch waits for more events after its first one.
    pub flush_interval: Duration,
    /// Behaviour of `push` on a full ring.
    pub overflow: Overflow,
    /// Retries of a failing flush before the batch is dead-lettered.
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each later one.
    pub retry_backoff: Duration,
    /// The clock.
    pub clock: Clock,
    /// Sliding-window sketch settings.
    pub window: WindowConfig,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            capacity: 16384,
            workers: 1,
            batch_size: 500,
            flush_interval: Duration::from_millis(1000),
            overflow: Overflow::DropNewest,
            max_retries: 3,
            retry_backoff: Duration::from_millis(50),
            clock: Clock::Wall,
            window: WindowConfig::default(),
        }
    }
}

impl ProcessorConfig {
    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<()> {
        let range = |what: &str, v: usize, max: usize| {
            if v == 0 || v > max {
                Err(Error::invalid(format!("{what} {v} is outside 1..={max}")))
            } else {
                Ok(())
            }
        };
        range("capacity", self.capacity, MAX_RING_CAPACITY)?;
        range("workers", self.workers, MAX_WORKERS)?;
        range("batch_size", self.batch_size, MAX_BATCH_SIZE)?;
        if self.flush_interval.is_zero() || self.flush_interval > MAX_INTERVAL {
            return Err(Error::invalid(format!(
                "flush_interval {:?} is outside (0, 1 h]",
                self.flush_interval
            )));
        }
        if let Overflow::Block { timeout } = self.overflow
            && timeout > MAX_INTERVAL
        {
            return Err(Error::invalid(format!(
                "block timeout {timeout:?} is longer than 1 h"
            )));
        }
        if self.max_retries > MAX_RETRIES {
            return Err(Error::invalid(format!(
                "max_retries {} is above {MAX_RETRIES}",
                self.max_retries
            )));
        }
        if self.retry_backoff > MAX_INTERVAL {
            return Err(Error::invalid(format!(
                "retry_backoff {:?} is longer than 1 h",
                self.retry_backoff
            )));
        }
        self.window.validate()
    }
}

/// Receives each batch on a worker thread. `Err` (or a panic) counts as a failure:
/// the same batch is offered again after the backoff.
pub trait FlushCallback: Send + Sync {
    /// Persists `batch`; the events borrow from it and are valid during the call.
    fn on_flush(&self, batch: &mut Batch) -> std::result::Result<(), String>;
}

impl<F> FlushCallback for F
where
    F: Fn(&mut Batch) -> std::result::Result<(), String> + Send + Sync,
{
    fn on_flush(&self, batch: &mut Batch) -> std::result::Result<(), String> {
        self(batch)
    }
}

/// Receives a batch whose flush failed `max_retries + 1` times, with the last error.
pub trait DeadLetterCallback: Send + Sync {
    /// Takes the failed batch (valid during the call).
    fn on_dead_letter(&self, batch: &mut Batch, error: &str);
}

impl<F> DeadLetterCallback for F
where
    F: Fn(&mut Batch, &str) + Send + Sync,
{
    fn on_dead_letter(&self, batch: &mut Batch, error: &str) {
        self(batch, error)
    }
}

/// Counters, read with relaxed atomics: cheap enough to poll.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessorStats {
    /// Events offered to `push`/`push_batch` (accepted + dropped).
    pub pushed: u64,
    /// Events placed in the ring.
    pub accepted: u64,
    /// Events refused because the ring was full.
    pub dropped: u64,
    /// Events taken from the ring by workers and sketched.
    pub processed: u64,
    /// Events in batches the flush callback accepted.
    pub delivered: u64,
    /// Events in batches discarded because no flush callback was set.
    pub discarded: u64,
    /// Batches the flush callback accepted.
    pub batches: u64,
    /// Flush attempts that failed (each followed by a retry or the dead letter).
    pub failures: u64,
    /// Retries of failed flushes.
    pub retries: u64,
    /// Events given up on after `max_retries` and handed to the dead-letter callback.
    pub dead_lettered: u64,
    /// Batches given up on.
    pub dead_letter_batches: u64,
    /// Events waiting in the ring.
    pub queue_len: u64,
}

#[derive(Default)]
struct Callbacks {
    flush: Option<Arc<dyn FlushCallback>>,
    dead_letter: Option<Arc<dyn DeadLetterCallback>>,
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    delivered: AtomicU64,
    discarded: AtomicU64,
    batches: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    dead_letter_batches: AtomicU64,
}

/// Per-worker state other threads read.
#[derive(Default)]
struct WorkerSlot {
    processed: AtomicU64,
    /// The newest flush generation this worker has completed.
    acked: AtomicU64,
}

struct Shared {
    config: ProcessorConfig,
    ring: Ring<Record>,
    counters: Counters,
    workers: Box<[CachePadded<WorkerSlot>]>,
    shards: Box<[Mutex<WindowedAnalytics>]>,
    callbacks: RwLock<Callbacks>,
    /// Workers asleep (or about to sleep) on `wake`.
    sleepers: AtomicUsize,
    wake_lock: Mutex<()>,
    wake: Condvar,
    /// Flush barrier: generation requested, ring position it covers.
    flush_gen: AtomicU64,
    flush_target: AtomicUsize,
    flush_lock: Mutex<()>,
    flush_done: Condvar,
    stopping: AtomicBool,
    /// Newest event timestamp processed (the EVENT_TIME clock); 0 before any.
    event_clock: AtomicI64,
    poisoned: Mutex<Option<String>>,
    is_poisoned: AtomicBool,
}

thread_local! {
    /// The processor whose worker this thread is (address of its `Shared`), if any.
    static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only records that a thread panicked while holding the lock; the data
    // (sketch registers, unit) stays consistent for our use.
    m.lock().unwrap_or_else(|e| e.into_inner())
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

/// The event processor. Cloning the [`Arc`] is how several threads share it;
/// all methods take `&self`.
///
/// Thread safety: every method may be called from any thread at once. Callbacks run
/// on the worker threads; from inside a callback, `push` and queries are allowed,
/// while `flush`, `set_*_callback` and `shutdown` return [`Error::WouldDeadlock`].
pub struct Processor {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Processor {
    /// Validates `config` and starts the workers.
    pub fn new(config: ProcessorConfig) -> Result<Self> {
        config.validate()?;
        let shards = (0..config.workers)
            .map(|_| WindowedAnalytics::new(&config.window).map(Mutex::new))
            .collect::<Result<Box<[_]>>>()?;
        let shared = Arc::new(Shared {
            ring: Ring::new(config.capacity),
            counters: Counters::default(),
            workers: (0..config.workers)
                .map(|_| CachePadded::default())
                .collect(),
            shards,
            callbacks: RwLock::default(),
            sleepers: AtomicUsize::new(0),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
            flush_gen: AtomicU64::new(0),
            flush_target: AtomicUsize::new(0),
            flush_lock: Mutex::new(()),
            flush_done: Condvar::new(),
            stopping: AtomicBool::new(false),
            event_clock: AtomicI64::new(0),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
            config,
        });
        let mut threads = Vec::with_capacity(shared.config.workers);
        for index in 0..shared.config.workers {
            let worker_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("engagehub-worker-{index}"))
                .spawn(move || run_worker(worker_shared, index));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    let processor = Processor {
                        shared,
                        threads: Mutex::new(threads),
                    };
                    processor.shutdown_inner();
                    return Err(Error::io("spawning a worker thread", e));
                }
            }
        }
        Ok(Processor {
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &ProcessorConfig {
        &self.shared.config
    }

    fn check_usable(&self) -> Result<()> {
        if self.shared.is_poisoned.load(Ordering::Relaxed) {
            let msg = lock(&self.shared.poisoned).clone().unwrap_or_default();
            return Err(Error::Poisoned(msg));
        }
        Ok(())
    }

    fn on_own_worker(&self) -> bool {
        WORKER_OF.with(|w| w.get()) == Arc::as_ptr(&self.shared) as usize
    }

    /// Whether the calling thread is one of this processor's workers (that is, the
    /// call comes from one of its callbacks).
    pub fn in_own_callback(&self) -> bool {
        self.on_own_worker()
    }

    /// "Now" by the processor's clock, in unix seconds.
    pub fn now(&self) -> i64 {
        self.shared.now()
    }

    /// Copies an event validated by [`EventIn::validate`], resolving `timestamp <= 0`
    /// to the processor's "now".
    fn record(&self, ev: &EventIn<'_>) -> Record {
        let ts = if ev.timestamp <= 0 {
            self.shared.now()
        } else {
            ev.timestamp
        };
        Record::new(ev, ts)
    }

    /// Offers one event. `Ok` means accepted: it will be sketched and delivered (or
    /// dead-lettered or discarded) exactly once. Errors: [`Error::QueueFull`] (dropped
    /// and counted), [`Error::ShutDown`], [`Error::InvalidArgument`] (a field above
    /// [`MAX_FIELD_BYTES`], a payload above the limit, a timestamp after 9999).
    pub fn push(&self, ev: &EventIn<'_>) -> Result<()> {
        self.check_usable()?;
        ev.validate()?;
        let result = self.push_record(self.record(ev));
        self.shared.wake_one();
        result
    }

    /// Offers events in order; returns how many were accepted. Those accepted are
    /// always a prefix: after the first refusal (full ring) the rest are dropped and
    /// counted too. Every event is validated before any is pushed, so an invalid one
    /// fails the call with nothing pushed.
    pub fn push_batch(&self, events: &[EventIn<'_>]) -> Result<usize> {
        self.check_usable()?;
        for (i, ev) in events.iter().enumerate() {
            ev.validate()
                .map_err(|e| Error::invalid(format!("event {i}: {e}")))?;
        }
        let mut accepted = 0;
        let mut result = Ok(());
        for ev in events {
            if let Err(e) = self.push_record(self.record(ev)) {
                result = Err(e);
                break;
            }
            accepted += 1;
            if accepted == 1 {
                // Wake a sleeping worker now, so it drains while we push the rest.
                self.shared.wake_one();
            }
        }
        self.shared.wake_one();
        match result {
            Ok(()) | Err(Error::QueueFull) => {
                let rest = (events.len() - accepted) as u64;
                if rest > 1 {
                    // The first refusal was counted by push_record.
                    self.shared
                        .counters
                        .dropped
                        .fetch_add(rest - 1, Ordering::Relaxed);
                }
                Ok(accepted)
            }
            Err(e) => Err(e),
        }
    }

    fn push_record(&self, record: Record) -> Result<()> {
        let shared = &self.shared;
        match shared.ring.push(record) {
            Ok(_) => Ok(()),
            Err(PushError::Closed(_)) => Err(Error::ShutDown),
            Err(PushError::Full(record)) => match shared.config.overflow {
                Overflow::DropNewest => {
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    Err(Error::QueueFull)
                }
                Overflow::Block { timeout } => self.push_blocking(record, timeout),
            },
        }
    }

    fn push_blocking(&self, mut record: Record, timeout: Duration) -> Result<()> {
        let shared = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut spins = 0u32;
        loop {
            shared.wake_one();
            match shared.ring.push(record) {
                Ok(_) => return Ok(()),
                Err(PushError::Closed(_)) => return Err(Error::ShutDown),
                Err(PushError::Full(back)) => record = back,
            }
            let now = Instant::now();
            if now >= deadline {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(Error::QueueFull);
            }
            if spins < 64 {
                spins += 1;
                std::thread::yield_now();
            } else {
                std::thread::sleep((deadline - now).min(Duration::from_micros(200)));
            }
        }
    }

    /// Blocks until every event accepted before the call has been delivered,
    /// dead-lettered or discarded, or `timeout` passes ([`Error::Timeout`]).
    /// From a callback of this processor: [`Error::WouldDeadlock`].
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        if self.on_own_worker() {
            return Err(Error::WouldDeadlock(
                "flush called from this processor's own callback".into(),
            ));
        }
        self.check_usable()?;
        if self.is_shut_down() {
            // `shutdown` already delivered everything accepted.
            return Err(Error::ShutDown);
        }
        let shared = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut guard = lock(&shared.flush_lock);
        let target = shared
            .ring
            .tail_position()
            .max(shared.flush_target.load(Ordering::SeqCst));
        shared.flush_target.store(target, Ordering::SeqCst);
        let generation = shared.flush_gen.load(Ordering::SeqCst) + 1;
        shared.flush_gen.store(generation, Ordering::SeqCst);
        shared.wake_all();
        loop {
            let done = shared
                .workers
                .iter()
                .all(|w| w.acked.load(Ordering::SeqCst) >= generation);
            if done {
                return Ok(());
            }
            self.check_usable()?;
            let now = Instant::now();
            if now >= deadline {
                let waiting = shared
                    .ring
                    .tail_position()
                    .saturating_sub(shared.ring.head_position());
                return Err(Error::Timeout(format!(
                    "flush did not complete within {timeout:?} ({waiting} events still queued)"
                )));
            }
            guard = shared
                .flush_done
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sets (or with `None` removes) the flush callback. Batches already being
    /// delivered finish with the previous one, which is dropped once no worker uses it.
    pub fn set_flush_callback(&self, callback: Option<Arc<dyn FlushCallback>>) -> Result<()> {
        self.refuse_from_callback("set_flush_callback")?;
        drop(self.swap_callbacks(|cbs| std::mem::replace(&mut cbs.flush, callback)));
        Ok(())
    }

    /// Sets (or removes) the dead-letter callback.
    pub fn set_dead_letter_callback(
        &self,
        callback: Option<Arc<dyn DeadLetterCallback>>,
    ) -> Result<()> {
        self.refuse_from_callback("set_dead_letter_callback")?;
        drop(self.swap_callbacks(|cbs| std::mem::replace(&mut cbs.dead_letter, callback)));
        Ok(())
    }

    /// Runs `swap` under the callbacks' write lock and returns what it took out,
    /// so the caller drops the old callback (and its user data) after unlocking.
    fn swap_callbacks<R>(&self, swap: impl FnOnce(&mut Callbacks) -> R) -> R {
        let mut cbs = self
            .shared
            .callbacks
            .write()
            .unwrap_or_else(|e| e.into_inner());
        swap(&mut cbs)
    }

    fn refuse_from_callback(&self, what: &str) -> Result<()> {
        if self.on_own_worker() {
            return Err(Error::WouldDeadlock(format!(
                "{what} called from this processor's own callback"
            )));
        }
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> ProcessorStats {
        let shared = &self.shared;
        let c = &shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let accepted = shared.ring.tail_position() as u64;
        let dropped = load(&c.dropped);
        ProcessorStats {
            pushed: accepted + dropped,
            accepted,
            dropped,
            processed: shared.workers.iter().map(|w| load(&w.processed)).sum(),
            delivered: load(&c.delivered),
            discarded: load(&c.discarded),
            batches: load(&c.batches),
            failures: load(&c.failures),
            retries: load(&c.retries),
            dead_lettered: load(&c.dead_lettered),
            dead_letter_batches: load(&c.dead_letter_batches),
            queue_len: shared.ring.len() as u64,
        }
    }

    fn resolve_now(&self, now: i64) -> i64 {
        if now > 0 { now } else { self.shared.now() }
    }

    /// Distinct users in the `window_secs` before `now` (`now <= 0`: the processor's
    /// clock; `window_secs <= 0`: all time). The window is rounded up to whole
    /// minutes and capped at the configured window length.
    pub fn unique_users(&self, window_secs: i64, now: i64) -> u64 {
        let now = self.resolve_now(now);
        let guards = self.lock_shards();
        sketch::window::unique_users(guards.iter().map(|g| &**g), window_secs, now)
    }

    /// The sketch behind [`Processor::unique_users`], to merge with other processes'.
    pub fn users_sketch(&self, window_secs: i64, now: i64) -> Hll {
        let now = self.resolve_now(now);
        let guards = self.lock_shards();
        sketch::window::window_hll(guards.iter().map(|g| &**g), window_secs, now)
    }

    /// The `k` busiest channels over the window (`window_secs <= 0`: all time), by
    /// the Space-Saving summaries: counts are upper bounds, exact for heavy hitters.
    pub fn top_channels(&self, k: usize, window_secs: i64, now: i64) -> Vec<ChannelCount> {
        let now = self.resolve_now(now);
        let guards = self.lock_shards();
        sketch::window::top_channels(guards.iter().map(|g| &**g), k, window_secs, now)
    }

    /// All-time events seen in `channel` by the Count-Min sketch (never undercounts).
    pub fn channel_count(&self, channel: &str) -> u64 {
        let guards = self.lock_shards();
        sketch::window::channel_count(guards.iter().map(|g| &**g), channel)
    }

    fn lock_shards(&self) -> Vec<MutexGuard<'_, WindowedAnalytics>> {
        self.shared.shards.iter().map(lock).collect()
    }

    /// Stops intake, drains the ring, delivers every batch and joins the workers.
    /// Blocks until done (retries included). Idempotent. From a callback of this
    /// processor: [`Error::WouldDeadlock`].
    pub fn shutdown(&self) -> Result<()> {
        self.refuse_from_callback("shutdown")?;
        self.shutdown_inner();
        Ok(())
    }

    fn shutdown_inner(&self) {
        let shared = &self.shared;
        shared.ring.close();
        shared.stopping.store(true, Ordering::SeqCst);
        shared.wake_all();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            if t.join().is_err() {
                shared.poison("a worker thread panicked outside its guard".into());
            }
        }
    }

    /// Whether `shutdown` has begun.
    pub fn is_shut_down(&self) -> bool {
        self.shared.ring.is_closed()
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        if self.on_own_worker() {
            // Dropped from its own callback (only possible through a leaked Arc
            // cycle); joining would deadlock, so just stop intake.
            self.shared.ring.close();
            self.shared.stopping.store(true, Ordering::SeqCst);
            self.shared.wake_all();
            return;
        }
        self.shutdown_inner();
    }
}

impl Shared {
    fn now(&self) -> i64 {
        match self.config.clock {
            Clock::Wall => wall_clock_secs(),
            Clock::EventTime => match self.event_clock.load(Ordering::Relaxed) {
                0 => wall_clock_secs(),
                t => t,
            },
        }
    }

    /// Wakes one sleeping worker, if any. Called after a push whose SeqCst CAS on
    /// the ring's tail precedes this SeqCst load of `sleepers`; a worker going to
    /// sleep increments `sleepers` (SeqCst) and then reads the tail (SeqCst). In the
    /// single order of SeqCst operations either our load comes after its increment
    /// (we see the sleeper and wake it) or its read comes after our CAS (it sees
    /// the event and stays awake), so no fence is needed here: on x86 the CAS is
    /// already a full barrier and this load a plain move, where a fence per push
    /// cost about a sixth of the producer's time.
    fn wake_one(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = lock(&self.wake_lock);
            self.wake.notify_one();
        }
    }

    fn wake_all(&self) {
        let _guard = lock(&self.wake_lock);
        self.wake.notify_all();
    }

    fn poison(&self, msg: String) {
        let mut slot = lock(&self.poisoned);
        if slot.is_none() {
            *slot = Some(msg);
        }
        self.is_poisoned.store(true, Ordering::SeqCst);
        drop(slot);
        let _guard = lock(&self.flush_lock);
        self.flush_done.notify_all();
    }
}

/// One worker's private state.
struct Worker {
    shared: Arc<Shared>,
    index: usize,
    batch: Batch,
    batch_started: Option<Instant>,
    acked: u64,
    processed: u64,
    clock_seen: i64,
}

fn run_worker(shared: Arc<Shared>, index: usize) {
    WORKER_OF.with(|w| w.set(Arc::as_ptr(&shared) as usize));
    let mut worker = Worker {
        batch: Batch::with_capacity(shared.config.batch_size.min(65536)),
        shared,
        index,
        batch_started: None,
        acked: 0,
        processed: 0,
        clock_seen: 0,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| worker.run()));
    if let Err(payload) = outcome {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        let lost = worker.batch.len();
        worker.shared.poison(format!(
            "worker {index} panicked: {msg} ({lost} events of its batch may be lost)"
        ));
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
            if shared.stopping.load(Ordering::SeqCst) && shared.ring.is_closed() {
                // Closed and empty: nothing more can arrive.
                if shared.ring.is_empty() {
                    self.deliver();
                    self.ack(shared.flush_gen.load(Ordering::SeqCst));
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
    /// [`WindowedAnalytics::observe_run`]).
    fn fill(&mut self) -> usize {
        let shared = &*self.shared;
        let room = shared.config.batch_size - self.batch.len();
        let limit = RUN.min(room.max(1));
        let start = self.batch.len();
        while self.batch.len() - start < limit {
            let Some(record) = shared.ring.pop() else {
                break;
            };
            let ts = record.timestamp();
            if ts > self.clock_seen {
                self.clock_seen = ts;
                if shared.config.clock == Clock::EventTime {
                    shared.event_clock.fetch_max(ts, Ordering::Relaxed);
                }
            }
            self.batch.push(&record);
        }
        let n = self.batch.len() - start;
        if n == 0 {
            return 0;
        }
        if start == 0 {
            self.batch_started = Some(Instant::now());
        }
        // Future timestamps (wall clock) count in the current minute.
        let cap = match shared.config.clock {
            Clock::Wall => wall_clock_secs(),
            Clock::EventTime => i64::MAX,
        };
        lock(&shared.shards[self.index]).observe_run(
            self.batch
                .iter_from(start)
                .map(|ev| (ev.user_id.as_bytes(), ev.channel_id, ev.timestamp.min(cap))),
        );
        self.processed += n as u64;
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
        let shared = &self.shared;
        let generation = shared.flush_gen.load(Ordering::SeqCst);
        if generation <= self.acked {
            return;
        }
        let target = shared.flush_target.load(Ordering::SeqCst);
        if shared.ring.head_position() < target {
            return;
        }
        // Every event below `target` has been popped; those this worker popped are in
        // its batch, so delivering it completes this worker's share.
        self.deliver();
        self.ack(generation);
    }

    fn ack(&mut self, generation: u64) {
        if generation <= self.acked {
            return;
        }
        self.acked = generation;
        let shared = &self.shared;
        let _guard = lock(&shared.flush_lock);
        shared.workers[self.index]
            .acked
            .store(generation, Ordering::SeqCst);
        shared.flush_done.notify_all();
    }

    fn sleep(&mut self) {
        let shared = Arc::clone(&self.shared);
        let guard = lock(&shared.wake_lock);
        shared.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let must_stay_awake = !shared.ring.is_empty()
            || shared.stopping.load(Ordering::SeqCst)
            || shared.flush_gen.load(Ordering::SeqCst) > self.acked;
        if !must_stay_awake {
            let timeout = match self.batch_started {
                Some(t) => shared.config.flush_interval.saturating_sub(t.elapsed()),
                // Nothing pending: sleep until woken (the timeout is a safety net).
                None => Duration::from_secs(1),
            };
            let _unused = shared
                .wake
                .wait_timeout(guard, timeout)
                .unwrap_or_else(|e| e.into_inner());
        }
        shared.sleepers.fetch_sub(1, Ordering::SeqCst);
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
        let c = &shared.counters;
        match flush {
            None => {
                c.discarded.fetch_add(n, Ordering::Relaxed);
            }
            Some(cb) => {
                let mut backoff = shared.config.retry_backoff;
                let mut attempt = 0;
                loop {
                    let outcome = catch_unwind(AssertUnwindSafe(|| cb.on_flush(&mut self.batch)))
                        .unwrap_or_else(|p| {
                            Err(format!(
                                "flush callback panicked: {}",
                                p.downcast_ref::<&str>()
                                    .copied()
                                    .or_else(|| p.downcast_ref::<String>().map(|s| s.as_str()))
                                    .unwrap_or("non-string panic")
                            ))
                        });
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
                                    let _ = catch_unwind(AssertUnwindSafe(|| {
                                        dl.on_dead_letter(&mut self.batch, &error)
                                    }));
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
