//! Processor settings: [`ProcessorConfig`], its defaults and its limits.

use std::time::Duration;

use crate::community::CommunityConfig;
use crate::error::{Error, Result};
use crate::sketch::WindowConfig;

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
/// Default of [`ProcessorConfig::max_future_skew`]: one day.
pub const DEFAULT_FUTURE_SKEW: Duration = Duration::from_secs(86_400);
/// Largest [`ProcessorConfig::max_future_skew`] accepted: ten years.
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(10 * 366 * 86_400);

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

/// Processor settings; [`Default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Ring slots, rounded up to a power of two.
    pub capacity: usize,
    /// Worker threads; 0 is the synchronous mode: no threads, events are sketched
    /// and delivered on the thread that calls `flush` or `close` (see
    /// [`super::Processor`]).
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
    /// A pushed timestamp later than the wall clock plus this is refused
    /// ([`Error::InvalidArgument`], counted in `future_refused`), under both clocks,
    /// so one bad event cannot move the `EventTime` clock into the future.
    pub max_future_skew: Duration,
    /// The journal (`None`: none): see [`super::durable`].
    pub journal: Option<super::durable::JournalConfig>,
    /// Daily history: active users, retention cohorts, heatmaps (see
    /// [`crate::community`]).
    pub community: CommunityConfig,
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
            max_future_skew: DEFAULT_FUTURE_SKEW,
            journal: None,
            community: CommunityConfig::default(),
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
        if self.workers > MAX_WORKERS {
            return Err(Error::invalid(format!(
                "workers {} is outside 0..={MAX_WORKERS} (0: synchronous mode)",
                self.workers
            )));
        }
        if self.workers == 0 && matches!(self.overflow, Overflow::Block { .. }) {
            // Only a flush or close drains a synchronous ring: a push waiting for
            // room would wait for its own thread.
            return Err(Error::invalid(
                "overflow BLOCK needs worker threads: in synchronous mode (workers 0) \
                 nothing drains the ring while a push waits; use DROP_NEWEST and flush"
                    .to_string(),
            ));
        }
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
        if self.max_future_skew > MAX_FUTURE_SKEW {
            return Err(Error::invalid(format!(
                "max_future_skew {} s is above {} s (ten years)",
                self.max_future_skew.as_secs(),
                MAX_FUTURE_SKEW.as_secs()
            )));
        }
        self.community.validate()?;
        self.window.validate()
    }

    /// Whether this is the synchronous mode (no worker threads).
    pub fn is_synchronous(&self) -> bool {
        self.workers == 0
    }

    /// Sketch shards and processed-counter slots: one per worker, one in
    /// synchronous mode (the caller's drain).
    pub(crate) fn lanes(&self) -> usize {
        self.workers.max(1)
    }

    /// Stripes of a new processor's community analytics: two per worker, so that
    /// workers rarely wait for each other (a reopened journal keeps its own).
    pub(crate) fn community_stripes(&self) -> usize {
        (2 * self.lanes()).min(64)
    }

    /// [`ProcessorConfig::max_future_skew`] in whole seconds.
    pub(crate) fn future_skew_secs(&self) -> i64 {
        // At most MAX_FUTURE_SKEW (validated), far below i64::MAX.
        self.max_future_skew.as_secs() as i64
    }
}
