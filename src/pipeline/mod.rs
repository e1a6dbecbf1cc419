//! Event pipeline: producers push events into a bounded lock-free ring; worker
//! threads pop them, update the sketches, collect them into batches and hand each
//! batch to the flush callback.
//!
//! Guarantees:
//! * [`Processor::push`] never blocks with [`Overflow::DropNewest`]: a full ring
//!   returns [`crate::Error::QueueFull`] and counts a drop.
//! * A batch goes to the callback when it reaches `batch_size` events or
//!   `flush_interval` after its first event; callbacks run on worker threads only;
//!   with one worker, batches arrive in push order.
//! * A failing callback (error or panic) is retried with doubling backoff up to
//!   `max_retries` times, then the batch goes to the dead-letter callback and is
//!   counted. With no flush callback, batches are counted as discarded.
//! * [`Processor::flush`] returns once every event accepted before the call has been
//!   delivered, dead-lettered or discarded. [`Processor::close`] (and drop) stop
//!   intake, wait for calls in progress, drain the ring, deliver everything and
//!   join the workers. [`Processor::flush_start`] / [`Processor::flush_wait`] and
//!   [`Processor::close_timeout`] are the same waits in slices (a binding handles
//!   signals between them).
//! * Synchronous mode (`workers: 0`): no threads; events wait in the ring and are
//!   sketched and delivered on the thread calling `flush` or `close`, inside the
//!   call (so a test's transaction covers them); `Overflow::Block` is refused.
//!
//! Layout: [`config`] (settings), `processor` (the public handle: gate, close,
//! fork), `core` (ring, workers, sketches of one generation), `worker` (the worker
//! loop), `barrier` (flush barrier and shutdown mark, loom-checked), `gate` (calls
//! in progress), `fork` (fork detection), [`ring`], [`event`].

mod barrier;
pub mod config;
mod core;
pub mod durable;
pub mod event;
mod fork;
mod gate;
mod processor;
pub mod ring;
mod worker;

#[cfg(test)]
mod tests;

pub use config::{
    Clock, DEFAULT_FUTURE_SKEW, MAX_BATCH_SIZE, MAX_FUTURE_SKEW, MAX_INTERVAL, MAX_RETRIES,
    MAX_RING_CAPACITY, MAX_WORKERS, Overflow, ProcessorConfig,
};
pub(crate) use core::RoomWait;
pub use event::{Batch, Event, EventIn, RawEvent};
pub(crate) use event::{EventSource, Record};
pub use event::{MAX_FIELD_BYTES, MAX_PAYLOAD_BYTES};
#[cfg(test)]
pub(crate) use processor::HookPoint;
pub use processor::Processor;

/// Installs the processor's fork handler (called once, at load: `crate::atfork`).
pub(crate) fn install_fork_watch() {
    fork::install();
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
    /// Events refused because their timestamp was later than the wall clock plus
    /// `max_future_skew`.
    pub future_refused: u64,
    /// Journal: bytes logged since the last checkpoint (0 without a journal).
    pub journal_bytes: u64,
    /// Journal: checkpoints written since the processor was opened.
    pub journal_checkpoints: u64,
    /// Journal: records replayed when the processor was opened.
    pub journal_replayed: u64,
    /// Journal: torn tails truncated when the processor was opened.
    pub journal_torn: u64,
    /// Journal: 1 when the journal stopped being written or its last sync failed
    /// (the processor goes on in memory; [`Processor::journal_error`] says why).
    pub journal_failing: u64,
    /// Publishing: batches put in the outbox and not yet acknowledged.
    pub outbox_waiting: u64,
}
