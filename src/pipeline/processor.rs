//! [`Processor`]: the public handle. It owns a [`Core`] behind a [`Gate`], closes
//! it (thread-safe, waiting for calls in progress), hands a drop on one of its own
//! workers to a reaper thread, and rebuilds the core in a forked child.

use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::config::ProcessorConfig;
use super::core::{Callbacks, Core, RoomWait};
use super::durable::{OutboxChange, OutboxEntry};
use super::event::{EventIn, EventSource};
use super::gate::{CloseStart, Gate, Ticket};
use super::{DeadLetterCallback, FlushCallback, ProcessorStats, fork, worker};
use crate::community::{Cohort, CohortPeriod, Period};
use crate::error::{Error, Result};
use crate::sketch::{ChannelCount, Hll};

/// Points in a call where tests can pause a thread to widen a race.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookPoint {
    /// The call has started but is not yet counted as in progress.
    BeforeRegister,
    /// The call is counted as in progress and has not touched the core yet.
    AfterRegister,
    /// `push_batch` has accepted this many events.
    BatchAccepted(usize),
}

#[cfg(test)]
type Hook = Arc<dyn Fn(HookPoint) + Send + Sync>;

/// The event processor. Share it between threads by reference or in an [`Arc`];
/// all methods take `&self`.
///
/// Lifetime: [`Processor::close`] stops intake, waits for the calls in progress,
/// drains the ring, delivers every batch and joins the workers; calls that start
/// afterwards get [`Error::ShutDown`]. Dropping closes. Dropping on one of the
/// processor's own workers (inside a callback) hands the close to a detached
/// reaper thread instead of joining itself.
///
/// Fork: in a forked child the first call rebuilds the processor: a fresh ring and
/// fresh workers, the same configuration and callbacks, counters and sketches
/// empty. The parent's core (its ring, queued events, locks and threads) is left
/// untouched and leaked in the child, never joined, unlocked or dropped: its
/// threads do not exist there and its locks may be held forever.
///
/// Synchronous mode (`workers: 0`): no worker threads; `flush`, `flush_wait` and
/// `close` sketch and deliver on the calling thread, inside the call.
///
/// Thread safety: every method may be called from any thread at once, including
/// `close` (several times); callbacks run on the worker threads (in synchronous
/// mode on the thread calling `flush`/`flush_wait`/`close`); from inside a
/// callback, `push` and queries are allowed, while `flush`, `set_*_callback` and
/// `close` return [`Error::WouldDeadlock`].
pub struct Processor {
    gate: Gate,
    /// The current core; null once closed. Replaced (never freed) in a forked child.
    core: AtomicPtr<Core>,
    /// `2 * generation` when `core` belongs to fork generation `generation`;
    /// `2 * generation + 1` while a thread of that generation rebuilds it.
    core_generation: AtomicU64,
    /// The current core's id, for "is this thread one of my workers?" without
    /// touching the core.
    core_id: AtomicU64,
    config: ProcessorConfig,
    /// Held by the thread driving the close (see [`Processor::close_timeout`]).
    close_driver: AtomicBool,
    #[cfg(test)]
    hook: std::sync::Mutex<Option<Hook>>,
    /// Tests: the slots `push_batch` claims at once (0: [`BATCH_RUN`]).
    #[cfg(test)]
    batch_run: AtomicUsize,
}

/// The ring slots `push_batch` claims with one CAS: long enough that the CAS (and
/// the wait for earlier stores it implies) is a small share of a run, short
/// enough that a worker draining behind the producer finds the first records of
/// a run published while the rest are written.
const BATCH_RUN: usize = 128;

// The `AtomicPtr<Core>` is an owned `Box<Core>` (Core: Send + Sync).
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Core>();
};

/// A call in progress: the gate ticket and the core it may use.
struct Entered<'a> {
    core: &'a Core,
    _ticket: Ticket<'a>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("config", &self.config)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Processor {
    /// Validates `config` and starts the workers.
    pub fn new(config: ProcessorConfig) -> Result<Self> {
        config.validate()?;
        crate::atfork::keep_installed();
        let generation = fork::generation();
        let core = Core::new(config.clone(), Callbacks::default())?;
        let id = core.shared.id;
        Ok(Processor {
            gate: Gate::new(),
            core: AtomicPtr::new(Box::into_raw(Box::new(core))),
            core_generation: AtomicU64::new(2 * generation),
            core_id: AtomicU64::new(id),
            config,
            close_driver: AtomicBool::new(false),
            #[cfg(test)]
            hook: std::sync::Mutex::new(None),
            #[cfg(test)]
            batch_run: AtomicUsize::new(0),
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    #[cfg(test)]
    pub(crate) fn set_test_hook(&self, hook: impl Fn(HookPoint) + Send + Sync + 'static) {
        *self.hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// Tests: runs `hook` once, on the pushing thread, when a blocked push starts
    /// waiting for room.
    #[cfg(test)]
    pub(crate) fn on_waiting_for_room(&self, hook: impl FnOnce() + Send + 'static) {
        let entered = self.enter().unwrap();
        *super::core::lock(&entered.core.shared.waiting_for_room) = Some(Box::new(hook));
    }

    /// Whether the current core's workers have all exited (after close stopped
    /// intake), for tests.
    #[cfg(test)]
    pub(crate) fn workers_exited(&self) -> bool {
        let core = self.core.load(Ordering::Acquire);
        // SAFETY: tests call this while a call of theirs is registered (paused in a
        // hook), so close cannot free the core meanwhile.
        unsafe { core.as_ref() }.is_none_or(|c| c.shared.barrier.all_exited())
    }

    /// The slots `push_batch` claims at once.
    #[inline]
    fn batch_run(&self) -> usize {
        #[cfg(test)]
        {
            let run = self.batch_run.load(Ordering::Relaxed);
            if run != 0 {
                return run;
            }
        }
        BATCH_RUN
    }

    /// Tests: make `push_batch` claim `run` slots at a time.
    #[cfg(test)]
    pub(crate) fn set_batch_run(&self, run: usize) {
        self.batch_run.store(run, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn hook(&self, point: HookPoint) {
        let hook = self.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(hook) = hook {
            hook(point);
        }
    }

    /// Starts a call: `ShutDown` once close has begun; rebuilds the core first in
    /// a forked child.
    #[inline]
    fn enter(&self) -> Result<Entered<'_>> {
        #[cfg(test)]
        self.hook(HookPoint::BeforeRegister);
        // Not `ok_or(Error::ShutDown)`: that builds (and drops) the error on every call.
        let Some(ticket) = self.gate.enter() else {
            return Err(Error::ShutDown);
        };
        #[cfg(test)]
        self.hook(HookPoint::AfterRegister);
        let generation = fork::generation();
        // Acquire pairs with the Release stores of a rebuild: seeing its
        // generation means seeing its core pointer.
        if self.core_generation.load(Ordering::Acquire) != 2 * generation {
            self.rebuild_after_fork(generation)?;
        }
        let core = self.core.load(Ordering::Acquire);
        // SAFETY: `core` is a `Box<Core>` owned by `self`. It is freed only by
        // `close`, after the gate refused new calls and every registered call (ours
        // is registered: `ticket`) has left; a rebuild replaces it without freeing
        // the old one. So it is live for as long as `ticket`.
        let Some(core) = (unsafe { core.as_ref() }) else {
            return Err(Error::ShutDown);
        };
        Ok(Entered {
            core,
            _ticket: ticket,
        })
    }

    /// The first call in a forked child: replaces the parent's core, race-free
    /// between the child's threads (one rebuilds, the others wait for it).
    #[cold]
    fn rebuild_after_fork(&self, generation: u64) -> Result<()> {
        let mut spins = 0u32;
        loop {
            let state = self.core_generation.load(Ordering::Acquire);
            if state == 2 * generation {
                return Ok(());
            }
            if state == 2 * generation + 1 {
                // Another thread of this process is rebuilding.
                spins = spins.saturating_add(1);
                if spins < 64 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(100));
                }
                continue;
            }
            // An older generation's core (or a rebuild interrupted by a fork): claim it.
            if self
                .core_generation
                .compare_exchange(
                    state,
                    2 * generation + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                continue;
            }
            let old = self.core.load(Ordering::Acquire);
            // SAFETY: the old core is never freed in this process (it is leaked, see
            // below), and close cannot run its release while we are registered.
            let callbacks = unsafe { old.as_ref() }.map(Core::callbacks_after_fork);
            let lost_callbacks = matches!(callbacks, Some(None));
            // The child goes on in memory: the journal is the parent's.
            let mut config = self.config.clone();
            config.journal = None;
            let rebuilt = Core::new(config, callbacks.flatten().unwrap_or_default());
            match rebuilt {
                Ok(core) => {
                    if lost_callbacks {
                        core.poison(
                            "forked while another thread was replacing a callback: the \
                             callbacks could not be carried over; close this processor"
                                .into(),
                        );
                    }
                    self.core_id.store(core.shared.id, Ordering::Release);
                    // The parent's core is abandoned: its threads do not exist here and
                    // its locks may be held, so it is never joined, unlocked or
                    // dropped. Overwriting the pointer leaks it (as `mem::forget`).
                    self.core
                        .store(Box::into_raw(Box::new(core)), Ordering::Release);
                    // Release: publishes the new pointer with the generation.
                    self.core_generation
                        .store(2 * generation, Ordering::Release);
                    return Ok(());
                }
                Err(e) => {
                    // Give the claim back: the next call retries.
                    self.core_generation.store(state, Ordering::Release);
                    return Err(e);
                }
            }
        }
    }

    /// Whether the calling thread is one of this processor's workers (that is, the
    /// call comes from one of its callbacks).
    pub fn in_own_callback(&self) -> bool {
        // Acquire pairs with the Release store of a rebuild.
        worker::current_core_id() == self.core_id.load(Ordering::Acquire)
    }

    fn refuse_from_callback(&self, what: &str) -> Result<()> {
        if self.in_own_callback() {
            return Err(Error::WouldDeadlock(format!(
                "{what} called from this processor's own callback"
            )));
        }
        Ok(())
    }

    /// "Now" by the processor's clock, in unix seconds.
    pub fn now(&self) -> Result<i64> {
        Ok(self.enter()?.core.now())
    }

    /// Offers one event. `Ok` means accepted: it will be sketched and delivered (or
    /// dead-lettered or discarded) exactly once. Errors: [`Error::QueueFull`] (dropped
    /// and counted), [`Error::ShutDown`], [`Error::InvalidArgument`] (a field above
    /// [`super::MAX_FIELD_BYTES`], a payload above the limit, a timestamp later than
    /// the wall clock plus `max_future_skew`, counted in `future_refused`).
    #[inline]
    pub fn push(&self, ev: &EventIn<'_>) -> Result<()> {
        self.enter()?.core.push(ev)
    }

    /// [`Processor::push`] waiting for room at most `wait` under
    /// [`super::Overflow::Block`], for a caller that waits in slices (a binding
    /// handling signals between them): if no room came, `give_up` counts a drop
    /// and returns [`Error::QueueFull`], otherwise [`Error::Timeout`] with nothing
    /// pushed or counted (call again). Under `DropNewest`, `push`.
    pub fn push_wait(&self, ev: &EventIn<'_>, wait: Duration, give_up: bool) -> Result<()> {
        self.enter()?.core.push_wait(ev, wait, give_up)
    }

    /// Offers events in order and returns how many were accepted, together with
    /// the reason it stopped early, if any: the count is meaningful on every
    /// return (e.g. `(3, Err(ShutDown))`: the first three were accepted and will be
    /// delivered; do not push them again). Those accepted are always a prefix: after
    /// the first refusal of a full ring the rest are dropped and counted and the
    /// result is `Ok`. Every event is validated before any is pushed, so an invalid
    /// one fails the call with nothing pushed.
    pub fn push_batch(&self, events: &[EventIn<'_>]) -> (usize, Result<()>) {
        self.push_batch_from(events, RoomWait::Configured)
    }

    /// [`Processor::push_batch`] of the events of `src`, read where they are (the C
    /// ABI's `eh_event` array, without building a slice of [`EventIn`] first).
    /// `wait`: how long a full ring is waited for under `Overflow::Block`.
    pub(crate) fn push_batch_from<S: EventSource + ?Sized>(
        &self,
        src: &S,
        wait: RoomWait,
    ) -> (usize, Result<()>) {
        match self.enter() {
            Err(e) => (0, Err(e)),
            Ok(entered) => entered.core.push_batch(src, self.batch_run(), wait, |_n| {
                #[cfg(test)]
                self.hook(HookPoint::BatchAccepted(_n));
            }),
        }
    }

    /// Blocks until every event accepted before the call has been delivered,
    /// dead-lettered or discarded, or `timeout` passes ([`Error::Timeout`]). A close
    /// racing with it does not make it time out: it returns `Ok` once delivered.
    /// From a callback of this processor: [`Error::WouldDeadlock`].
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.refuse_from_callback("flush")?;
        self.enter()?.core.flush(timeout)
    }

    /// [`Processor::flush`] in two steps, for a caller that waits in slices (and
    /// handles signals between them): starts a flush covering every event
    /// accepted so far and returns its ticket for [`Processor::flush_wait`].
    pub fn flush_start(&self) -> Result<u64> {
        self.refuse_from_callback("flush")?;
        self.enter()?.core.flush_start()
    }

    /// Waits up to `timeout` for the flush of `ticket` (from
    /// [`Processor::flush_start`]); after [`Error::Timeout`] it may be called
    /// again with the same ticket, which keeps its target (a steady stream of
    /// later pushes cannot postpone it). In synchronous mode this is where the
    /// events are sketched and delivered, on the calling thread.
    pub fn flush_wait(&self, ticket: u64, timeout: Duration) -> Result<()> {
        self.refuse_from_callback("flush")?;
        self.enter()?.core.flush_wait(ticket, timeout)
    }

    /// Sets (or with `None` removes) the flush callback. Batches already being
    /// delivered finish with the previous one, which is dropped once no worker
    /// uses it. On an error `callback` was not installed (and is dropped).
    pub fn set_flush_callback(&self, callback: Option<Arc<dyn FlushCallback>>) -> Result<()> {
        self.refuse_from_callback("set_flush_callback")?;
        let entered = self.enter()?;
        drop(
            entered
                .core
                .swap_callbacks(|cbs| std::mem::replace(&mut cbs.flush, callback)),
        );
        Ok(())
    }

    /// Sets (or removes) the dead-letter callback.
    pub fn set_dead_letter_callback(
        &self,
        callback: Option<Arc<dyn DeadLetterCallback>>,
    ) -> Result<()> {
        self.refuse_from_callback("set_dead_letter_callback")?;
        let entered = self.enter()?;
        drop(
            entered
                .core
                .swap_callbacks(|cbs| std::mem::replace(&mut cbs.dead_letter, callback)),
        );
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> Result<ProcessorStats> {
        Ok(self.enter()?.core.stats())
    }

    /// Why the journal stopped being written or its last sync failed, if it did.
    pub fn journal_error(&self) -> Result<Option<String>> {
        Ok(self.enter()?.core.journal_error())
    }

    /// The Redis publisher's identity: the kept one (in the journal, if any), or
    /// `proposed`, which is kept (and logged) from now on. A forked child starts
    /// without one.
    pub fn publisher_id(&self, proposed: &str) -> Result<String> {
        self.enter()?.core.with_control(|c, community| {
            let (id, new) = c.outbox.identity(proposed)?;
            let id = id.to_string();
            if new {
                c.outbox.set_identity("");
                c.apply(OutboxChange::Identity(&id), community)?;
            }
            Ok(id)
        })
    }

    /// Puts a batch (the binding's bytes) in the outbox under the next number,
    /// which it returns, together with what the community analytics gathered for
    /// Redis since the last batch (read it with [`Processor::outbox_community`]);
    /// logged first (on a journal error nothing is put, nothing taken).
    pub fn outbox_put(&self, batch: &[u8]) -> Result<u64> {
        self.enter()?.core.with_control(|c, community| {
            let entry = OutboxEntry {
                blob: batch.to_vec(),
                community: community.drain(),
            };
            match c.apply(OutboxChange::Put(&entry), community) {
                Ok(n) => Ok(n),
                Err(e) => {
                    // Not logged, not put: what was taken goes back.
                    community.restore(&entry.community);
                    Err(e)
                }
            }
        })
    }

    /// The oldest batch waiting, with its number.
    pub fn outbox_pending(&self) -> Result<Option<(u64, Vec<u8>)>> {
        self.enter()?
            .core
            .with_control(|c, _| Ok(c.outbox.oldest().map(|(n, b)| (n, b.blob.clone()))))
    }

    /// The community part of the waiting batch `number` (see
    /// [`crate::community::publish`]); empty when it has none, `None` when no
    /// batch waits under that number.
    pub fn outbox_community(&self, number: u64) -> Result<Option<Vec<u8>>> {
        self.enter()?
            .core
            .with_control(|c, _| Ok(c.outbox.get(number).map(|e| e.community.clone())))
    }

    /// Acknowledges batch `number` (and any older one) and makes `baseline` (the
    /// binding's record of what Redis holds) the kept baseline; logged first.
    pub fn outbox_ack(&self, number: u64, baseline: &[u8]) -> Result<()> {
        self.enter()?.core.with_control(|c, community| {
            c.apply(OutboxChange::Ack(number, baseline), community)
                .map(drop)
        })
    }

    /// The kept baseline (empty at first).
    pub fn outbox_baseline(&self) -> Result<Vec<u8>> {
        self.enter()?
            .core
            .with_control(|c, _| Ok(c.outbox.baseline().to_vec()))
    }

    /// The processor's day ("now" by its clock) and its community analytics.
    fn community_today(&self, now: i64) -> Result<(Entered<'_>, i32)> {
        let entered = self.enter()?;
        let now = if now > 0 { now } else { entered.core.now() };
        Ok((entered, crate::community::day_of(now)))
    }

    /// Users active on `day` (days since 1970-01-01, UTC), or in the 7 or 30
    /// days ending with it ([`Period`]), in `guild` (`None`: every event); exact.
    /// `day` must be within the `history_days` ending with the processor's day
    /// ([`Error::InvalidArgument`] otherwise, and when the history is off).
    pub fn active_users(&self, day: i32, period: Period, guild: Option<&str>) -> Result<u64> {
        let (entered, today) = self.community_today(0)?;
        entered
            .core
            .community()
            .active_users(day, period, guild, today)
    }

    /// The `cohorts` retention cohorts of `period` ending with the one holding
    /// `now` (≤ 0: the processor's "now"), oldest first: users first seen in each
    /// and how many of them were active in each later period up to `now`.
    pub fn retention(
        &self,
        period: CohortPeriod,
        cohorts: u32,
        now: i64,
        guild: Option<&str>,
    ) -> Result<Vec<Cohort>> {
        let (entered, today) = self.community_today(now)?;
        entered
            .core
            .community()
            .retention(period, cohorts, guild, today)
    }

    /// Events by weekday (Monday first) and UTC hour over the `days` days ending
    /// with the day of `now` (≤ 0: the processor's), in `channel` and `guild`
    /// (`None`: all); exact.
    pub fn activity_heatmap(
        &self,
        days: u32,
        now: i64,
        channel: Option<&str>,
        guild: Option<&str>,
    ) -> Result<[[u64; 24]; 7]> {
        let (entered, today) = self.community_today(now)?;
        entered
            .core
            .community()
            .heatmap(days, channel, guild, today)
    }

    /// The community analytics' size: user records (one per user, plus one per
    /// guild a user is seen in), guilds, approximate heap bytes.
    pub fn community_size(&self) -> Result<(u64, u64, u64)> {
        let entered = self.enter()?;
        let c = entered.core.community();
        Ok((c.user_records(), c.guilds() as u64, c.heap_bytes() as u64))
    }

    /// Distinct users in the `window_secs` before `now` (`now <= 0`: the processor's
    /// clock; `window_secs <= 0`: all time). The window is rounded up to whole
    /// minutes; one longer than the configured window is refused
    /// ([`Error::InvalidArgument`]).
    pub fn unique_users(&self, window_secs: i64, now: i64) -> Result<u64> {
        self.enter()?.core.unique_users(window_secs, now)
    }

    /// Events held per minute of the window ring: `out[i]` for the minute starting at
    /// unix second `first_minute_start + 60 * i` (rounded down to a minute), 0 for a
    /// minute the ring no longer (or not yet) holds.
    pub fn minute_events(&self, first_minute_start: i64, out: &mut [u64]) -> Result<()> {
        self.enter()?
            .core
            .minute_events(first_minute_start.div_euclid(60), out);
        Ok(())
    }

    /// The sketch behind [`Processor::unique_users`], to merge with other processes'.
    pub fn users_sketch(&self, window_secs: i64, now: i64) -> Result<Hll> {
        self.enter()?.core.users_sketch(window_secs, now)
    }

    /// The `k` busiest channels over the window (`window_secs <= 0`: all time; longer
    /// than configured: refused), by the Space-Saving summaries: counts are upper
    /// bounds, exact for heavy hitters. Ties: higher count first, then channel id
    /// ascending.
    ///
    /// Staleness: the merged answer for a window (and minute of `now`) is cached.
    /// It is reused as long as no event has been sketched since it was computed
    /// (then it is exact, however old), and otherwise for up to `flush_interval`,
    /// so it reflects the events sketched as of at most `flush_interval` ago; after
    /// a [`Processor::flush`] that returns `Ok` a query sees every flushed event.
    /// A `k` above the summaries' capacity is merged for the call alone.
    pub fn top_channels(&self, k: usize, window_secs: i64, now: i64) -> Result<Vec<ChannelCount>> {
        let (top, n) = self.enter()?.core.top_channels(k, window_secs, now)?;
        Ok(top[..n].to_vec())
    }

    /// [`Processor::top_channels`] without copying the rows: a shared sorted list
    /// and how many of its first rows answer the query.
    pub(crate) fn top_channels_shared(
        &self,
        k: usize,
        window_secs: i64,
        now: i64,
    ) -> Result<(Arc<[ChannelCount]>, usize)> {
        self.enter()?.core.top_channels(k, window_secs, now)
    }

    /// All-time events seen in `channel` by the Count-Min sketch (never undercounts).
    pub fn channel_count(&self, channel: &str) -> Result<u64> {
        Ok(self.enter()?.core.channel_count(channel))
    }

    /// Stops intake, waits for the calls in progress (pushes waiting for room are
    /// released with [`Error::ShutDown`]; flushes complete), drains the ring,
    /// delivers every batch (retries included), joins the workers and drops the
    /// callbacks. Blocks until done (see [`Processor::close_timeout`] for a wait
    /// in slices). Safe to call from several threads at once and idempotent: a
    /// second close waits for the first and returns `Ok`. From a callback of this
    /// processor: [`Error::WouldDeadlock`], and nothing changes.
    pub fn close(&self) -> Result<()> {
        self.close_timeout(None)
    }

    /// [`Processor::close`] waiting at most `timeout` (`None`: no limit). On
    /// [`Error::Timeout`] the close is under way (intake stopped, later calls get
    /// [`Error::ShutDown`], the workers keep draining and delivering) and a later
    /// `close` or `close_timeout` continues it from where it is. One thread drives
    /// the close at a time; the others wait for it (within their own timeout). In
    /// synchronous mode the final drain delivers on the calling thread and is not
    /// bounded by `timeout` (the callbacks' time is the caller's).
    pub fn close_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.refuse_from_callback("close")?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut round = 0u32;
        loop {
            match self.gate.begin_close() {
                CloseStart::Closed => return Ok(()),
                CloseStart::InheritedMidClose => {
                    // The parent was closing when it forked: leave its core alone.
                    self.core.store(std::ptr::null_mut(), Ordering::Release);
                    return Ok(());
                }
                CloseStart::Started | CloseStart::InProgress => {}
            }
            // Acquire pairs with the Release store of the driver that gave it up:
            // its progress (the core pointer) is visible to the next one.
            if self
                .close_driver
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                let result = self.drive_close(deadline);
                self.close_driver.store(false, Ordering::Release);
                return result;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout(
                    "close still in progress on another thread".into(),
                ));
            }
            round = round.saturating_add(1);
            if round < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// The close itself, resumable: every step is idempotent, and the core is
    /// released only once nothing waits (so a timeout leaves it in place).
    fn drive_close(&self, deadline: Option<Instant>) -> Result<()> {
        let generation = fork::generation();
        let current_core = || {
            if self.core_generation.load(Ordering::Acquire) != 2 * generation {
                return None;
            }
            let core = self.core.load(Ordering::Acquire);
            // SAFETY: only the close driver (this thread, holding `close_driver`)
            // frees the core, and it has not yet; a rebuild never frees one.
            unsafe { core.as_ref() }
        };
        let stop_current_intake = || {
            if let Some(core) = current_core() {
                core.stop_intake();
            }
        };
        // Stop intake before waiting, so pushes blocked on a full ring return and
        // flushes in progress see the workers drain and exit.
        stop_current_intake();
        let timed_out = |what: &str| Err(Error::Timeout(format!("close still {what}")));
        if !self.gate.wait_idle(stop_current_intake, deadline) {
            return timed_out("waiting for calls in progress on other threads");
        }
        if let Some(core) = current_core()
            && !core.wait_workers_exited(deadline)
        {
            return timed_out("draining: the workers are delivering the last batches");
        }
        // No call is in progress and none can start: the core is ours alone.
        let core = self.core.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !core.is_null() && self.core_generation.load(Ordering::Acquire) == 2 * generation {
            // SAFETY: created by `Box::into_raw` in `new` or a rebuild of this
            // process, and no longer reachable through `self.core`.
            let core = unsafe { Box::from_raw(core) };
            core.shutdown();
            // Drops the callbacks (their user data finalizers run here, after the
            // last callback returned: the workers are joined).
            drop(core);
        }
        // Otherwise the core is the parent's, inherited over fork and never used
        // here: its threads do not exist in this process; it is leaked.
        self.gate.finish_close();
        Ok(())
    }

    /// Whether `close` has begun.
    pub fn is_closed(&self) -> bool {
        self.gate.is_closed()
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        if !self.in_own_callback() {
            // Not on a worker: a plain close (it cannot fail here).
            let _ = self.close();
            return;
        }
        // Dropped inside one of its own callbacks (e.g. the last reference released
        // there): joining would wait for this very thread. Hand the core to a
        // reaper thread that stops, drains, delivers, joins and drops it.
        // `&mut self`: no other call is in progress.
        let core = std::mem::replace(self.core.get_mut(), std::ptr::null_mut());
        if core.is_null() {
            return;
        }
        // SAFETY: our own `Box<Core>`, current (a worker of it is running this).
        let core = unsafe { Box::from_raw(core) };
        core.stop_intake();
        let reaper = std::thread::Builder::new()
            .name("engagehub-reaper".into())
            .spawn(move || {
                core.shutdown();
                drop(core);
            });
        // If no thread can be started, the closure and the core it holds are dropped
        // here: `Core::drop` on its own worker stops intake without joining, and the
        // detached workers finish the drain by themselves.
        drop(reaper);
    }
}
