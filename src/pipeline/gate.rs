//! The processor's gate: counts calls in progress and orders them with `close`.
//!
//! A call registers (one SeqCst RMW on `calls`), then reads the close state
//! (SeqCst); `close` moves the state to closing (SeqCst CAS), then reads `calls`
//! (SeqCst). In the single order of SeqCst operations either the call sees
//! "closing" and leaves without touching the core, or `close` sees the call and
//! waits for it to leave. The gate lives in the handle, not in the core `close`
//! releases, so a call racing with `close` never touches released memory.
//!
//! Fork: both words carry the fork generation they were written in. A child
//! inherits the parent's count of calls in progress, but not the threads making
//! them; a count from an older generation is therefore void, and the first call in
//! the child replaces it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::fork;

/// `calls`: generation in the high 32 bits, calls in progress in the low 32.
const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// `state`: generation << 2 | one of these.
const OPEN: u64 = 0;
const CLOSING: u64 = 1;
const CLOSED: u64 = 2;

fn tag(generation: u64) -> u64 {
    (generation & COUNT_MASK) << COUNT_BITS
}

/// What [`Gate::begin_close`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CloseStart {
    /// This call moved the gate to closing: it must release and then `finish_close`.
    Started,
    /// Another close of this process is in progress.
    InProgress,
    /// Already closed.
    Closed,
    /// A close was in progress in the parent when it forked: the core is in an
    /// unknown state and belongs to threads that do not exist here.
    InheritedMidClose,
}

/// Calls in progress and the close state.
pub(crate) struct Gate {
    calls: AtomicU64,
    state: AtomicU64,
}

/// A registered call; leaving is dropping it.
pub(crate) struct Ticket<'a> {
    gate: &'a Gate,
    generation: u64,
}

impl Gate {
    pub(crate) fn new() -> Self {
        let g = fork::generation();
        Gate {
            calls: AtomicU64::new(tag(g)),
            state: AtomicU64::new((g << 2) | OPEN),
        }
    }

    /// Registers a call; `None` once close has begun (the call must fail with
    /// `ShutDown` without touching anything else).
    pub(crate) fn enter(&self) -> Option<Ticket<'_>> {
        let generation = fork::generation();
        let current = tag(generation);
        // SeqCst: the registration must precede our read of `state` in the single
        // total order (see the module doc), pairing with `begin_close`.
        let before = self.calls.fetch_add(1, Ordering::SeqCst);
        if before & !COUNT_MASK != current {
            // First call in a forked child: the word still counts the parent's
            // calls (ours was added to them). Replace it with a count of one, ours,
            // unless another thread of this child did so first, then add to it.
            let mut seen = self.calls.load(Ordering::SeqCst);
            loop {
                if seen & !COUNT_MASK == current {
                    self.calls.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                match self.calls.compare_exchange(
                    seen,
                    current | 1,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => break,
                    Err(now) => seen = now,
                }
            }
        }
        let ticket = Ticket {
            gate: self,
            generation,
        };
        if self.state.load(Ordering::SeqCst) & 3 != OPEN {
            return None; // `ticket` drops: the call leaves
        }
        Some(ticket)
    }

    /// Calls in progress in this process.
    fn calls_in_progress(&self, generation: u64) -> u64 {
        let word = self.calls.load(Ordering::SeqCst);
        if word & !COUNT_MASK == tag(generation) {
            word & COUNT_MASK
        } else {
            0 // the parent's calls: their threads do not exist here
        }
    }

    /// Whether close has begun (or finished).
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::SeqCst) & 3 != OPEN
    }

    /// Moves the gate to closing (see [`CloseStart`]).
    pub(crate) fn begin_close(&self) -> CloseStart {
        let generation = fork::generation();
        let mut state = self.state.load(Ordering::SeqCst);
        loop {
            let next = match state & 3 {
                OPEN => (generation << 2) | CLOSING,
                CLOSING if state >> 2 == generation => return CloseStart::InProgress,
                CLOSING => (generation << 2) | CLOSED,
                _ => return CloseStart::Closed,
            };
            // SeqCst: pairs with the call's registration and state read in `enter`.
            match self
                .state
                .compare_exchange(state, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) if next & 3 == CLOSING => return CloseStart::Started,
                Ok(_) => return CloseStart::InheritedMidClose,
                Err(now) => state = now,
            }
        }
    }

    /// Waits until no call of this process is in progress, running `poll` (e.g.
    /// "stop intake again") between checks. Calls in progress are bounded: new ones
    /// are refused, and `poll` releases those blocked on a full ring.
    /// `false` if calls are still in progress at `deadline`.
    pub(crate) fn wait_idle(&self, mut poll: impl FnMut(), deadline: Option<Instant>) -> bool {
        let generation = fork::generation();
        let mut round = 0u32;
        while self.calls_in_progress(generation) != 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            poll();
            round = round.saturating_add(1);
            if round < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        true
    }

    /// Marks the close finished (after the core was released).
    pub(crate) fn finish_close(&self) {
        let generation = fork::generation();
        self.state
            .store((generation << 2) | CLOSED, Ordering::SeqCst);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if fork::generation() == self.generation {
            // SeqCst: `wait_idle` reads the count after this.
            self.gate.calls.fetch_sub(1, Ordering::SeqCst);
        }
        // Otherwise this thread entered in the parent and forked inside the call:
        // the count it joined is the parent's, void here.
    }
}
