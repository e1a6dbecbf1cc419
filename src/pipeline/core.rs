//! The processor's core: the ring, the workers, the sketches and the counters of
//! one generation of a processor. [`super::Processor`] owns it behind its gate and
//! replaces it in a forked child.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::barrier::{FlushBarrier, WaitError};
use super::config::{Clock, Overflow, ProcessorConfig};
use super::durable::{self, Control, Durable};
use super::event::{EventIn, EventSource, Record};
use super::ring::{PushError, Refusal, Ring};
use super::worker::{InlineWorker, run_worker};
use super::{DeadLetterCallback, FlushCallback, ProcessorStats};
use crate::community::Community;
use crate::error::{Error, Result};
use crate::leaderboard::wall_clock_secs;
use crate::sketch::{self, ChannelCount, Hll, WindowedAnalytics};

/// The callbacks, read by workers once per batch.
#[derive(Default, Clone)]
pub(crate) struct Callbacks {
    pub(crate) flush: Option<Arc<dyn FlushCallback>>,
    pub(crate) dead_letter: Option<Arc<dyn DeadLetterCallback>>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) dropped: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) dead_letter_batches: AtomicU64,
    pub(crate) future_refused: AtomicU64,
}

/// Per-worker state other threads read.
#[derive(Default)]
pub(crate) struct WorkerSlot {
    pub(crate) processed: AtomicU64,
}

/// State shared by the core and its workers.
pub(crate) struct Shared {
    /// Process-unique id of this core (what `WORKER_OF` holds on its workers).
    pub(crate) id: u64,
    pub(crate) config: ProcessorConfig,
    pub(crate) ring: Ring<Record>,
    pub(crate) counters: Counters,
    pub(crate) workers: Box<[CachePadded<WorkerSlot>]>,
    pub(crate) shards: Box<[Mutex<WindowedAnalytics>]>,
    pub(crate) callbacks: RwLock<Callbacks>,
    /// Workers asleep (or about to sleep) on `wake` that no one has woken yet.
    /// Changed only under `wake_lock`; read without it by pushes ([`Shared::wake_one`]).
    pub(crate) sleepers: AtomicUsize,
    /// Wakes sent and not yet taken by a waking worker (see [`Shared::notify_one`]).
    pub(crate) wake_lock: Mutex<usize>,
    pub(crate) wake: Condvar,
    pub(crate) barrier: FlushBarrier,
    /// Newest event timestamp processed (the EVENT_TIME clock); 0 before any.
    pub(crate) event_clock: AtomicI64,
    /// A wall-clock reading (unix seconds) taken by this core, never later than
    /// now: lets the future-timestamp check skip the clock for most events.
    pub(crate) wall_seen: CachePadded<AtomicI64>,
    poisoned: Mutex<Option<String>>,
    is_poisoned: AtomicBool,
    /// Completed flushes: a cached top-channels answer computed before the latest
    /// one is stale (so a query after `flush` sees every flushed event).
    flush_epoch: AtomicU64,
    /// Recent top-channels answers (see [`Core::top_channels`]).
    top_cache: Mutex<TopCache>,
    /// The journal, if any.
    pub(crate) durable: Option<Durable>,
    /// The Redis publisher's outbox (and its journal stream).
    pub(crate) control: Mutex<Control>,
    /// Daily history: active users, cohorts, heatmaps. Workers record a run
    /// under their shard's lock (a checkpoint, under every shard's, sees each run
    /// in both or neither).
    pub(crate) community: Community,
    /// Tests: runs (once) when a blocked push starts waiting for room.
    #[cfg(test)]
    pub(crate) waiting_for_room: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// Most top-channels answers kept (distinct windows and minutes queried).
const TOP_CACHE_ENTRIES: usize = 8;

/// Recent merged top-channels answers, each the whole sorted summary (up to its
/// capacity), so any `k` up to it is a prefix. Bounded: [`TOP_CACHE_ENTRIES`]
/// answers of at most the summaries' capacity each.
#[derive(Default)]
pub(crate) struct TopCache {
    entries: Vec<TopEntry>,
}

struct TopEntry {
    /// `None`: all time; otherwise the window in whole minutes and the minute of
    /// "now" it ends at.
    window: Option<(u32, i64)>,
    /// [`Shared::flush_epoch`] when computed.
    epoch: u64,
    computed: Instant,
    /// [`Shared::sketched`] when computed, read under every shard lock: it counts
    /// no event the answer lacks (a worker stores its `processed` after sketching
    /// the run, outside the lock). While it is unchanged no event has been
    /// sketched since, so the answer is still exact, whatever the time or flushes.
    sketched: u64,
    top: Arc<[ChannelCount]>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only records that a thread panicked while holding the lock; the data
    // (sketch registers, unit) stays consistent for our use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a batch push waits for room in a full ring under `Overflow::Block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoomWait {
    /// The configured `block_timeout`; then the rest is dropped and counted.
    Configured,
    /// At most `wait` in all (from the first wait); then, with `give_up`, the
    /// rest is dropped and counted, else the push returns [`Error::Timeout`] with
    /// the rest neither pushed nor counted.
    Slice {
        /// The longest wait.
        wait: Duration,
        /// Whether to drop the rest when no room came.
        give_up: bool,
    },
}

/// `now + wait`, or a century away for a wait too long to add.
fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// The error for a push the ring refused (a full ring's drop already counted).
#[cold]
fn refusal_error(refusal: Refusal) -> Error {
    match refusal {
        Refusal::Full => Error::QueueFull,
        Refusal::Closed => Error::ShutDown,
    }
}

/// Source of [`Shared::id`]; 0 is "not a worker".
static NEXT_CORE_ID: AtomicU64 = AtomicU64::new(1);

/// One generation of a processor: shared state plus the worker threads.
pub(crate) struct Core {
    pub(crate) shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The journal's thread (sync, checkpoints), stopped last by `shutdown`.
    maintenance: Mutex<Option<crate::journal::Maintenance>>,
    /// The synchronous mode's worker (`workers == 0`), driven by flush and close.
    inline: Option<InlineWorker>,
}

impl Core {
    /// Starts the workers of a validated `config`, with `callbacks` installed.
    pub(crate) fn new(config: ProcessorConfig, callbacks: Callbacks) -> Result<Self> {
        let (shards, event_clock, durable, control, community) = match &config.journal {
            Some(jc) => {
                let r = durable::open(&config, jc, config.lanes())?;
                (
                    r.shards,
                    r.event_clock,
                    Some(r.durable),
                    r.control,
                    r.community,
                )
            }
            None => {
                let shards = (0..config.lanes())
                    .map(|_| WindowedAnalytics::new(&config.window))
                    .collect::<Result<Vec<_>>>()?;
                let community = Community::new(config.community, config.community_stripes())?;
                (shards, 0, None, Control::default(), community)
            }
        };
        let shards = shards.into_iter().map(Mutex::new).collect::<Box<[_]>>();
        let shared = Arc::new(Shared {
            // Relaxed: a unique number is all that is needed.
            id: NEXT_CORE_ID.fetch_add(1, Ordering::Relaxed),
            ring: Ring::new(config.capacity),
            counters: Counters::default(),
            workers: (0..config.lanes())
                .map(|_| CachePadded::default())
                .collect(),
            shards,
            callbacks: RwLock::new(callbacks),
            sleepers: AtomicUsize::new(0),
            wake_lock: Mutex::new(0),
            wake: Condvar::new(),
            barrier: FlushBarrier::new(config.workers),
            event_clock: AtomicI64::new(event_clock),
            wall_seen: CachePadded::new(AtomicI64::new(wall_clock_secs())),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
            flush_epoch: AtomicU64::new(0),
            top_cache: Mutex::new(TopCache::default()),
            durable,
            control: Mutex::new(control),
            community,
            #[cfg(test)]
            waiting_for_room: Mutex::new(None),
            config,
        });
        let maintenance = match shared.durable.as_ref() {
            Some(d) => {
                let interval = d.journal.sync_interval().unwrap_or(Duration::from_secs(1));
                let for_thread = Arc::clone(&shared);
                Some(crate::journal::Maintenance::start(
                    "engagehub-journal",
                    interval,
                    move |stopping| for_thread.maintain_journal(stopping),
                )?)
            }
            None => None,
        };
        let mut threads = Vec::with_capacity(shared.config.workers);
        for index in 0..shared.config.workers {
            let worker_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("engagehub-worker-{index}"))
                .spawn(move || run_worker(worker_shared, index));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    let core = Core {
                        shared,
                        threads: Mutex::new(threads),
                        maintenance: Mutex::new(maintenance),
                        inline: None,
                    };
                    core.shutdown();
                    return Err(Error::io("spawning a worker thread", e));
                }
            }
        }
        let inline = shared
            .config
            .is_synchronous()
            .then(|| InlineWorker::new(Arc::clone(&shared)));
        Ok(Core {
            shared,
            threads: Mutex::new(threads),
            maintenance: Mutex::new(maintenance),
            inline,
        })
    }

    /// The callbacks as they are, for a core rebuilt after fork. `None` if a parent
    /// thread held the lock for writing when it forked (the lock stays held forever
    /// in the child, and the value may be half-written).
    pub(crate) fn callbacks_after_fork(&self) -> Option<Callbacks> {
        match self.shared.callbacks.try_read() {
            Ok(cbs) => Some(cbs.clone()),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner().clone()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    #[inline(always)]
    pub(crate) fn check_usable(&self) -> Result<()> {
        if self.shared.is_poisoned.load(Ordering::Relaxed) {
            return Err(self.poisoned_error());
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn poisoned_error(&self) -> Error {
        Error::Poisoned(lock(&self.shared.poisoned).clone().unwrap_or_default())
    }

    pub(crate) fn poison(&self, msg: String) {
        self.shared.poison(msg);
    }

    /// Refuses `ts` if it is later than the wall clock plus the configured skew,
    /// counting the refusal. Usually without reading the clock: a timestamp below
    /// a reading already taken (never later than now) plus the skew is accepted.
    #[inline(always)]
    fn check_future(&self, ts: i64) -> Result<()> {
        let skew = self.shared.config.future_skew_secs();
        // Relaxed: `wall_seen` is only a lower bound of the wall clock; a stale
        // value sends us to the exact check below, never to a wrong answer.
        if ts
            <= self
                .shared
                .wall_seen
                .load(Ordering::Relaxed)
                .saturating_add(skew)
        {
            return Ok(());
        }
        self.check_future_with_clock(ts, skew)
    }

    /// [`Core::check_future`] past the reading already taken: reads the clock.
    #[inline(never)]
    fn check_future_with_clock(&self, ts: i64, skew: i64) -> Result<()> {
        let wall = wall_clock_secs();
        self.shared.wall_seen.fetch_max(wall, Ordering::Relaxed);
        if ts <= wall.saturating_add(skew) {
            return Ok(());
        }
        // Relaxed: a statistics counter.
        self.shared
            .counters
            .future_refused
            .fetch_add(1, Ordering::Relaxed);
        Err(Error::invalid(format!(
            "timestamp {ts} is more than max_future_skew ({skew} s) after the wall clock ({wall})"
        )))
    }

    /// `ev`'s timestamp, `timestamp <= 0` resolved to "now".
    #[inline(always)]
    fn timestamp(&self, ev: &EventIn<'_>) -> i64 {
        if ev.timestamp <= 0 {
            self.shared.now()
        } else {
            ev.timestamp
        }
    }

    /// Copies a validated event, resolving `timestamp <= 0` to "now".
    fn record(&self, ev: &EventIn<'_>) -> Record {
        Record::new(ev, self.timestamp(ev))
    }

    pub(crate) fn push(&self, ev: &EventIn<'_>) -> Result<()> {
        self.check_usable()?;
        ev.validate()?;
        if ev.timestamp > 0 {
            self.check_future(ev.timestamp)?;
        }
        // The error is built after the wake-up: a `Result<()>` held across that
        // call is spilled to the stack in parts and reloaded whole, a load the
        // CPU cannot forward from those stores (it stalled a tenth of a push).
        let pushed = self.push_record(ev);
        self.shared.wake_one();
        pushed.map_err(refusal_error)
    }

    /// Pushes the events of `src` in order, claiming ring slots `run` at a time
    /// (see [`Ring::push_run`]); returns how many were accepted and why it stopped
    /// early. First every event is checked ([`EventSource::check`], then the
    /// future skew here): an invalid one fails the call with nothing pushed. Then
    /// each is written straight into its claimed slot ([`EventSource::write`]).
    /// `wait`: how long a full ring is waited for under `Overflow::Block`. `hook`
    /// runs after each run with the number accepted so far (tests widen races
    /// with it).
    pub(crate) fn push_batch<S: EventSource + ?Sized>(
        &self,
        src: &S,
        run: usize,
        wait: RoomWait,
        mut hook: impl FnMut(usize),
    ) -> (usize, Result<()>) {
        if let Err(e) = self.check_usable() {
            return (0, Err(e));
        }
        let n = src.len();
        // One reading of the lower bound of the wall clock for the batch (see
        // `check_future`): a timestamp at or below it plus the skew is accepted, a
        // later one goes to the exact check.
        let skew = self.shared.config.future_skew_secs();
        // Relaxed: a stale (lower) value only sends more events to the exact check.
        let accepted_below = self
            .shared
            .wall_seen
            .load(Ordering::Relaxed)
            .saturating_add(skew);
        for i in 0..n {
            match src.check(i) {
                Ok(timestamp) if timestamp <= accepted_below => {}
                Ok(timestamp) => {
                    if let Err(e) = self.check_future_with_clock(timestamp, skew) {
                        return (0, Err(Error::invalid(format!("event {i}: {e}"))));
                    }
                }
                Err(e) => return (0, Err(e)),
            }
        }
        let mut accepted = 0;
        let mut result = Ok(());
        // RoomWait::Slice: the deadline, from the first wait.
        let mut slice_deadline = None;
        let event = |i: usize| src.event(i);
        while accepted < n {
            let pushed = match self.push_run(src, accepted, (n - accepted).min(run.max(1))) {
                Ok(n) => Ok(n),
                // Not one slot free: the single push decides (it counts the drop, or
                // waits for room under `Overflow::Block`).
                Err(Refusal::Full) => match (wait, self.shared.config.overflow) {
                    (RoomWait::Slice { wait, give_up }, Overflow::Block { .. }) => {
                        let deadline = *slice_deadline.get_or_insert_with(|| deadline_after(wait));
                        match self.push_blocking(&event(accepted), deadline) {
                            Err(Refusal::Full) if !give_up => {
                                result = Err(Error::Timeout(format!(
                                    "no room in the ring within {wait:?}"
                                )));
                                break;
                            }
                            pushed => self.count_full(pushed).map(|()| 1),
                        }
                    }
                    _ => self.push_record(&event(accepted)).map(|()| 1),
                },
                Err(refusal) => Err(refusal),
            };
            match pushed {
                Ok(n) => {
                    if accepted == 0 {
                        // Wake a sleeping worker now, so it drains while we push the rest.
                        self.shared.wake_one();
                    }
                    accepted += n;
                    hook(accepted);
                }
                Err(refusal) => {
                    result = Err(refusal_error(refusal));
                    break;
                }
            }
        }
        self.shared.wake_one();
        match result {
            Ok(()) | Err(Error::QueueFull) => {
                let rest = (n - accepted) as u64;
                if rest > 1 {
                    // The first refusal was counted by push_record.
                    self.shared
                        .counters
                        .dropped
                        .fetch_add(rest - 1, Ordering::Relaxed);
                }
                (accepted, Ok(()))
            }
            Err(e) => (accepted, Err(e)),
        }
    }

    /// Pushes a validated event, its record written straight into the claimed slot.
    /// A refusal for a full ring (after waiting, under `Overflow::Block`) has been
    /// counted as a drop; [`refusal_error`] gives the error to report.
    #[inline]
    fn push_record(&self, ev: &EventIn<'_>) -> std::result::Result<(), Refusal> {
        let shared = &self.shared;
        match self.push_in_slot(ev) {
            Ok(_) => Ok(()),
            Err(Refusal::Closed) => Err(Refusal::Closed),
            Err(Refusal::Full) => match shared.config.overflow {
                Overflow::DropNewest => {
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    Err(Refusal::Full)
                }
                Overflow::Block { timeout } => {
                    self.count_full(self.push_blocking(ev, deadline_after(timeout)))
                }
            },
        }
    }

    /// `pushed`, a full ring counted as one drop.
    fn count_full(
        &self,
        pushed: std::result::Result<(), Refusal>,
    ) -> std::result::Result<(), Refusal> {
        if pushed == Err(Refusal::Full) {
            // Relaxed: a statistics counter.
            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        pushed
    }

    /// Checked events `from..from + n` of `src` into consecutive ring slots claimed
    /// at once, each record written in its slot: how many (a prefix, at least
    /// one), or why none.
    #[inline]
    fn push_run<S: EventSource + ?Sized>(
        &self,
        src: &S,
        from: usize,
        n: usize,
    ) -> std::result::Result<usize, Refusal> {
        // SAFETY: `push_run` calls `init` with `i < n`, so `from + i` is an event
        // of `src`, checked; `EventSource::write` initializes the slot and never
        // panics (nor does resolving the timestamp: a clock read).
        unsafe {
            self.shared.ring.push_run(n, |i, slot| {
                let timestamp = src.timestamp(from + i);
                let resolved = if timestamp <= 0 {
                    self.shared.now()
                } else {
                    timestamp
                };
                src.write(from + i, slot, resolved);
            })
        }
    }

    /// One ring push of a validated event, its record written in the claimed slot.
    #[inline(always)]
    fn push_in_slot(&self, ev: &EventIn<'_>) -> std::result::Result<usize, Refusal> {
        // SAFETY: `Record::write` initializes the slot and never panics (nor does
        // `timestamp`: a clock read).
        unsafe {
            self.shared
                .ring
                .push_in_place(|slot| Record::write(slot, ev, self.timestamp(ev)))
        }
        .map_err(|(refusal, _)| refusal)
    }

    /// Pushes `ev` into a full ring under `Overflow::Block`, waiting for room until
    /// `deadline`: `Err(Full)` (not counted) if none came.
    #[cold]
    fn push_blocking(
        &self,
        ev: &EventIn<'_>,
        deadline: Instant,
    ) -> std::result::Result<(), Refusal> {
        let shared = &self.shared;
        // Wait for a stretch of free slots, not for one: a retry reads the stamp of
        // the slot the worker frees next and the ring's head, lines the worker is
        // writing, so retrying slot by slot slowed the worker that was to make the
        // room (the producer then pushes the stretch while the worker drains the
        // far end of the ring). At the deadline one last try takes any free slot.
        let room = (shared.ring.capacity() / 8).clamp(1, 4096);
        let mut spins = 0u32;
        let mut last_try = false;
        loop {
            shared.wake_one();
            match self.push_in_slot(ev) {
                Ok(_) => return Ok(()),
                Err(Refusal::Closed) => return Err(Refusal::Closed),
                Err(Refusal::Full) if last_try => return Err(Refusal::Full),
                Err(Refusal::Full) => {}
            }
            #[cfg(test)]
            if let Some(hook) = lock(&shared.waiting_for_room).take() {
                hook();
            }
            loop {
                let now = Instant::now();
                if now >= deadline {
                    last_try = true;
                    break;
                }
                if spins < 8 {
                    // ~0.1-7 µs of pause hints, doubling.
                    for _ in 0..(4u32 << spins) {
                        std::hint::spin_loop();
                    }
                } else if spins < 64 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep((deadline - now).min(Duration::from_micros(200)));
                }
                spins = spins.saturating_add(1);
                if shared.ring.capacity() - shared.ring.len() >= room || shared.ring.is_closed() {
                    break;
                }
            }
            spins = 0;
        }
    }

    /// [`Core::push`] for a caller that waits for room in slices: under
    /// `Overflow::Block` it waits at most `wait` (not the configured timeout); if
    /// no room came, `give_up` counts a drop and returns `QueueFull`, otherwise it
    /// returns `Timeout` with nothing pushed or counted (call again). Under
    /// `DropNewest` it is `push`.
    pub(crate) fn push_wait(&self, ev: &EventIn<'_>, wait: Duration, give_up: bool) -> Result<()> {
        if self.shared.config.overflow == Overflow::DropNewest {
            return self.push(ev);
        }
        self.check_usable()?;
        ev.validate()?;
        if ev.timestamp > 0 {
            self.check_future(ev.timestamp)?;
        }
        let shared = &self.shared;
        // A free slot: the record written in place, as `push` does.
        match self.push_in_slot(ev) {
            Ok(_) => {
                shared.wake_one();
                return Ok(());
            }
            Err(Refusal::Closed) => return Err(Error::ShutDown),
            Err(Refusal::Full) => {}
        }
        let mut record = self.record(ev);
        let deadline = Instant::now().checked_add(wait);
        let mut spins = 0u32;
        let result = loop {
            shared.wake_one();
            match shared.ring.push(record) {
                Ok(_) => break Ok(()),
                Err(PushError::Closed(_)) => break Err(Error::ShutDown),
                Err(PushError::Full(back)) => record = back,
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                if give_up {
                    // Relaxed: a statistics counter.
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    break Err(Error::QueueFull);
                }
                break Err(Error::Timeout(format!(
                    "no room in the ring within {wait:?}"
                )));
            }
            if spins < 64 {
                spins += 1;
                std::thread::yield_now();
            } else {
                let left = deadline.map_or(Duration::from_micros(200), |d| d - now);
                std::thread::sleep(left.min(Duration::from_micros(200)));
            }
        };
        shared.wake_one();
        result
    }

    /// The flush barrier: see [`FlushBarrier`]. Returns `Ok` once every event
    /// accepted before the call was delivered, also when shutdown races with it.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<()> {
        let ticket = self.flush_start()?;
        self.flush_wait(ticket, timeout)
    }

    /// Starts a flush covering every event accepted so far and returns its ticket
    /// for [`Core::flush_wait`]: a barrier generation, or in synchronous mode the
    /// ring position to drain to.
    pub(crate) fn flush_start(&self) -> Result<u64> {
        self.check_usable()?;
        let shared = &self.shared;
        if self.inline.is_some() {
            return Ok(shared.ring.tail_position() as u64);
        }
        let generation = shared.barrier.request(shared.ring.tail_position());
        shared.wake_all();
        Ok(generation)
    }

    /// Waits up to `timeout` for the flush of `ticket`; may be called again after
    /// [`Error::Timeout`]. In synchronous mode the events are sketched and
    /// delivered here, on the calling thread (`timeout` bounds only the wait for
    /// another thread's drain in progress, not the callbacks).
    pub(crate) fn flush_wait(&self, ticket: u64, timeout: Duration) -> Result<()> {
        self.check_usable()?;
        let shared = &self.shared;
        let deadline = Instant::now().checked_add(timeout);
        if let Some(inline) = &self.inline {
            let tail = shared.ring.tail_position();
            let target = usize::try_from(ticket).unwrap_or(usize::MAX);
            if target > tail {
                return Err(Error::invalid(format!(
                    "flush ticket {ticket} is not one this processor issued"
                )));
            }
            if !inline.drain(target, deadline) {
                return Err(Error::Timeout(format!(
                    "flush did not complete within {timeout:?}: another thread is \
                     delivering in synchronous mode"
                )));
            }
            self.check_usable()?;
            // As below: queries recompute from the shards, which now hold
            // every event this flush covered.
            shared.flush_epoch.fetch_add(1, Ordering::Release);
            return Ok(());
        }
        if !shared.barrier.issued(ticket) {
            return Err(Error::invalid(format!(
                "flush ticket {ticket} is not one this processor issued"
            )));
        }
        let waited = shared
            .barrier
            .wait(ticket, deadline, || self.check_usable());
        if waited.is_ok() {
            // Release pairs with the Acquire load in `top_channels`: a query that
            // sees the new epoch recomputes from the shards, which hold every
            // flushed event (a worker sketches an event before delivering it).
            shared.flush_epoch.fetch_add(1, Ordering::Release);
        }
        waited.map_err(|e| match e {
            WaitError::Aborted(e) => e,
            WaitError::Timeout => {
                let waiting = shared
                    .ring
                    .tail_position()
                    .saturating_sub(shared.ring.head_position());
                Error::Timeout(format!(
                    "flush did not complete within {timeout:?} ({waiting} events still queued)"
                ))
            }
        })
    }

    /// Runs `swap` under the callbacks' write lock and returns what it took out,
    /// so the caller drops the old callback (and its user data) after unlocking.
    pub(crate) fn swap_callbacks<R>(&self, swap: impl FnOnce(&mut Callbacks) -> R) -> R {
        let mut cbs = self
            .shared
            .callbacks
            .write()
            .unwrap_or_else(|e| e.into_inner());
        swap(&mut cbs)
    }

    pub(crate) fn stats(&self) -> ProcessorStats {
        let shared = &self.shared;
        let c = &shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let accepted = shared.ring.tail_position() as u64;
        let dropped = load(&c.dropped);
        ProcessorStats {
            pushed: accepted + dropped,
            accepted,
            dropped,
            processed: shared
                .workers
                .iter()
                .map(|w| load(&w.processed))
                .sum::<u64>()
                + shared.durable.as_ref().map_or(0, |d| d.restored_events),
            delivered: load(&c.delivered),
            discarded: load(&c.discarded),
            batches: load(&c.batches),
            failures: load(&c.failures),
            retries: load(&c.retries),
            dead_lettered: load(&c.dead_lettered),
            dead_letter_batches: load(&c.dead_letter_batches),
            queue_len: shared.ring.len() as u64,
            future_refused: load(&c.future_refused),
            journal_bytes: shared.durable.as_ref().map_or(0, |d| d.journal.log_bytes()),
            journal_checkpoints: shared
                .durable
                .as_ref()
                .map_or(0, |d| d.journal.checkpoints()),
            journal_replayed: shared.durable.as_ref().map_or(0, |d| d.recovery.records),
            journal_torn: shared.durable.as_ref().map_or(0, |d| d.recovery.torn),
            journal_failing: shared
                .durable
                .as_ref()
                .map_or(0, |d| u64::from(lock(&d.error).is_some())),
            outbox_waiting: lock(&shared.control).outbox.waiting() as u64,
        }
    }

    /// The journal's last error (see [`super::Processor::journal_error`]).
    pub(crate) fn journal_error(&self) -> Option<String> {
        self.shared
            .durable
            .as_ref()
            .and_then(|d| lock(&d.error).clone())
    }

    /// Runs `f` on the publisher's outbox (under its lock), with the community
    /// analytics whose changes its batches carry.
    pub(crate) fn with_control<R>(
        &self,
        f: impl FnOnce(&mut Control, &Community) -> Result<R>,
    ) -> Result<R> {
        f(&mut lock(&self.shared.control), &self.shared.community)
    }

    /// The community analytics.
    pub(crate) fn community(&self) -> &Community {
        &self.shared.community
    }

    pub(crate) fn now(&self) -> i64 {
        self.shared.now()
    }

    fn resolve_now(&self, now: i64) -> i64 {
        if now > 0 { now } else { self.shared.now() }
    }

    /// Refuses a window longer than the configured one (rounded up to minutes).
    fn check_window(&self, window_secs: i64) -> Result<()> {
        let minutes = self.shared.config.window.window_minutes;
        if window_secs > 0 && window_secs.saturating_add(59) / 60 > i64::from(minutes) {
            return Err(Error::invalid(format!(
                "window_secs {window_secs} is longer than the configured window of \
                 {minutes} minutes ({} s); raise window_minutes to query it",
                i64::from(minutes) * 60
            )));
        }
        Ok(())
    }

    pub(crate) fn unique_users(&self, window_secs: i64, now: i64) -> Result<u64> {
        self.check_window(window_secs)?;
        let now = self.resolve_now(now);
        let guards = self.lock_shards();
        Ok(sketch::window::unique_users(
            guards.iter().map(|g| &**g),
            window_secs,
            now,
        ))
    }

    pub(crate) fn users_sketch(&self, window_secs: i64, now: i64) -> Result<Hll> {
        self.check_window(window_secs)?;
        let now = self.resolve_now(now);
        let guards = self.lock_shards();
        Ok(sketch::window::window_hll(
            guards.iter().map(|g| &**g),
            window_secs,
            now,
        ))
    }

    /// The top `k` as a shared sorted list and how many of its rows to read (no
    /// per-row copy: a cached answer is handed out as it is).
    pub(crate) fn top_channels(
        &self,
        k: usize,
        window_secs: i64,
        now: i64,
    ) -> Result<(Arc<[ChannelCount]>, usize)> {
        self.check_window(window_secs)?;
        let now = self.resolve_now(now);
        let cfg = &self.shared.config.window;
        // The merged summary's capacity for any k up to this (see
        // `sketch::window::top_channels`): its sorted list answers every such k by
        // a prefix. A larger k is merged for the call alone.
        let full = cfg.topk_capacity.max(cfg.minute_topk_capacity);
        if k == 0 {
            return Ok((Arc::from([]), 0));
        }
        if k > full {
            let guards = self.lock_shards();
            let top: Arc<[ChannelCount]> =
                sketch::window::top_channels(guards.iter().map(|g| &**g), k, window_secs, now)
                    .into();
            let n = top.len();
            return Ok((top, n));
        }
        let window = (window_secs > 0).then(|| {
            let minutes = u32::try_from(window_secs.saturating_add(59) / 60).unwrap_or(u32::MAX);
            (minutes, now.div_euclid(60))
        });
        let shared = &self.shared;
        // Acquire pairs with the Release increment in `flush`.
        let epoch = shared.flush_epoch.load(Ordering::Acquire);
        let fresh_for = shared.config.flush_interval;
        // After a flush this sees the `processed` of every flushed run: the
        // barrier's wait synchronizes with each worker's acknowledgement, which
        // follows its store.
        let sketched = shared.sketched();
        {
            let cache = lock(&shared.top_cache);
            if let Some(hit) = cache.entries.iter().find(|e| {
                e.window == window
                    && (e.sketched == sketched
                        || (e.epoch == epoch && e.computed.elapsed() < fresh_for))
            }) {
                return Ok((Arc::clone(&hit.top), k.min(hit.top.len())));
            }
        }
        let computed = Instant::now();
        let (top, sketched): (Arc<[ChannelCount]>, u64) = {
            let guards = self.lock_shards();
            let sketched = shared.sketched();
            let top =
                sketch::window::top_channels(guards.iter().map(|g| &**g), full, window_secs, now);
            (top.into(), sketched)
        };
        let answer = (Arc::clone(&top), k.min(top.len()));
        let mut cache = lock(&shared.top_cache);
        cache.entries.retain(|e| e.window != window);
        if cache.entries.len() >= TOP_CACHE_ENTRIES {
            // Drop the oldest answer.
            if let Some(oldest) =
                (0..cache.entries.len()).min_by_key(|&i| cache.entries[i].computed)
            {
                cache.entries.swap_remove(oldest);
            }
        }
        cache.entries.push(TopEntry {
            window,
            epoch,
            computed,
            sketched,
            top,
        });
        Ok(answer)
    }

    pub(crate) fn minute_events(&self, first_minute: i64, out: &mut [u64]) {
        let guards = self.lock_shards();
        sketch::window::minute_events(guards.iter().map(|g| &**g), first_minute, out);
    }

    pub(crate) fn channel_count(&self, channel: &str) -> u64 {
        let guards = self.lock_shards();
        sketch::window::channel_count(guards.iter().map(|g| &**g), channel)
    }

    fn lock_shards(&self) -> Vec<MutexGuard<'_, WindowedAnalytics>> {
        self.shared.shards.iter().map(lock).collect()
    }

    /// Stops intake: later pushes get `ShutDown`, pushes waiting for room return.
    pub(crate) fn stop_intake(&self) {
        let shared = &self.shared;
        shared.ring.close();
        shared.barrier.begin_stop();
        shared.wake_all();
    }

    /// Stops intake, lets the workers drain and deliver, and joins them (in
    /// synchronous mode: drains and delivers on the calling thread). Must not run
    /// on one of this core's workers.
    pub(crate) fn shutdown(&self) {
        self.stop_intake();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            if t.join().is_err() {
                self.shared
                    .poison("a worker thread panicked outside its guard".into());
            }
        }
        if let Some(inline) = &self.inline {
            // The ring is closed and no push is in progress: this is everything.
            inline.drain(usize::MAX, None);
        }
        // Last: a final sync and checkpoint of everything the workers sketched;
        // then the journal is free for another handle.
        if let Some(mut m) = lock(&self.maintenance).take() {
            m.stop();
        }
        if let Some(d) = &self.shared.durable {
            d.journal.detach();
        }
    }

    /// Waits until every worker has drained the closed ring and exited (at once
    /// in synchronous mode), or `deadline` passes (`false`).
    pub(crate) fn wait_workers_exited(&self, deadline: Option<Instant>) -> bool {
        self.shared.barrier.wait_exited(deadline)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if super::worker::current_core_id() == self.shared.id {
            // Only reachable if a reaper thread could not be started: stop intake
            // and let the workers finish on their own (dropping the handles
            // detaches them; the last one releases the callbacks).
            self.stop_intake();
            return;
        }
        self.shutdown();
    }
}

impl Shared {
    /// The journal's thread: syncs, and checkpoints when the log outgrew the last
    /// checkpoint (and when stopping: a clean close restores exactly).
    fn maintain_journal(&self, stopping: bool) {
        let Some(d) = &self.durable else { return };
        if d.journal.is_detached() {
            return;
        }
        let mut outcome = d.journal.sync();
        if outcome.is_ok() && (stopping || d.journal.wants_checkpoint()) {
            outcome = self.checkpoint(d);
        }
        if let Err(e) = outcome {
            *lock(&d.error) = Some(e.to_string());
        }
    }

    /// Writes a checkpoint: every shard and the outbox, with each stream's
    /// position, taken under all the shards' locks (workers append a run and
    /// sketch it under their shard's lock, so the two agree), written after.
    fn checkpoint(&self, d: &Durable) -> Result<()> {
        let payload;
        let mut positions;
        {
            let guards: Vec<_> = self.shards.iter().map(lock).collect();
            positions = d
                .logs
                .iter()
                .map(|l| lock(l).as_ref().map_or(0, crate::journal::Writer::position))
                .collect::<Vec<_>>();
            let control = lock(&self.control);
            positions.push(
                control
                    .log
                    .as_ref()
                    .map_or(0, crate::journal::Writer::position),
            );
            let shards: Vec<&WindowedAnalytics> = guards.iter().map(|g| &**g).collect();
            // Relaxed: a worker raises it under its shard's lock, held here.
            let clock = self.event_clock.load(Ordering::Relaxed);
            payload = durable::encode_checkpoint(&shards, clock, &control.outbox, &self.community);
        }
        d.journal.checkpoint(&positions, &payload)
    }

    /// Logs a run of events a worker is about to sketch (under its shard's lock).
    /// A journal that cannot be written stops being written: the processor goes
    /// on in memory and says why (`journal_failing`).
    pub(crate) fn journal_run(&self, lane: usize, payload: &[u8]) {
        let Some(d) = &self.durable else { return };
        let mut log = lock(&d.logs[lane]);
        let Some(w) = log.as_mut() else { return };
        if let Err(e) = durable::append_run(w, payload) {
            d.journal.disable();
            *lock(&d.error) = Some(format!(
                "the journal stopped: {e}; the processor goes on without durability"
            ));
        }
    }

    /// Events sketched so far, all workers together (relaxed loads of statistics
    /// counters; see `TopEntry::sketched` for why that suffices).
    fn sketched(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.processed.load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn now(&self) -> i64 {
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
    #[inline(always)]
    pub(crate) fn wake_one(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.notify_one();
        }
    }

    /// Wakes one sleeper and takes it out of `sleepers`, so the pushes that follow,
    /// until it is awake, do not wake it again: each `notify_one` is a futex
    /// system call even when nobody waits any more, and a producer pushing while
    /// the woken worker waits to be scheduled (tens of microseconds on a busy
    /// machine) made one per push (a tenth of push_event's time in the dicts
    /// benchmark). The worker takes the wake back in [`Shared::end_sleep`].
    #[inline(never)]
    fn notify_one(&self) {
        let mut wakes = lock(&self.wake_lock);
        // SeqCst, as every change of `sleepers` (see `wake_one`); under the lock.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            *wakes += 1;
            self.wake.notify_one();
        }
    }

    /// Wakes every sleeper.
    pub(crate) fn wake_all(&self) {
        let mut wakes = lock(&self.wake_lock);
        *wakes += self.sleepers.swap(0, Ordering::SeqCst);
        self.wake.notify_all();
    }

    /// A worker leaving [`Shared::wake`] (woken, timed out or spuriously): it takes
    /// a wake sent to the sleepers if there is one (which sleeper a wake reached
    /// does not matter), or else leaves `sleepers` itself. Either way
    /// `sleepers + wakes` stays the number of workers between the increment and
    /// here. `wakes` is the guard of `wake_lock`.
    pub(crate) fn end_sleep(&self, wakes: &mut usize) {
        if *wakes > 0 {
            *wakes -= 1;
        } else {
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn poison(&self, msg: String) {
        let mut slot = lock(&self.poisoned);
        if slot.is_none() {
            *slot = Some(msg);
        }
        // Pairs with the Relaxed load in `check_usable`: a call that misses the flag
        // by a moment behaves as if it had started just before the poisoning.
        self.is_poisoned.store(true, Ordering::SeqCst);
        drop(slot);
        self.barrier.wake_waiters();
    }
}
