//! The processor's gate: counts calls in progress and orders them with `close`.
//!
//! A call registers (one SeqCst RMW: it takes one of the gate's slots, or failing
//! that adds to the shared `calls` count), then reads the close state (SeqCst);
//! `close` moves the state to closing (SeqCst CAS), then reads the slots and
//! `calls` (SeqCst). In the single order of SeqCst operations either the call sees
//! "closing" and leaves without touching the core, or `close` sees the call and
//! waits for it to leave. The gate lives in the handle, not in the core `close`
//! releases, so a call racing with `close` never touches released memory.
//!
//! Slots: a call that took a slot owns it, so it leaves with a plain Release
//! store instead of a locked decrement. That matters for pushes: a locked
//! instruction waits until every store before it has reached the cache, and the
//! store right before leaving a push is the record written into a ring slot (lines
//! the worker last held), so a decrement there stalled on those misses (43% of a
//! push's time from Python). Each thread starts at its own slot (a cache line of
//! its own), so threads do not share lines; nested calls, or more threads in calls
//! than slots, try the next slots and then fall back to the shared count.
//!
//! Fork: every word carries the fork generation it was written in. A child
//! inherits the parent's calls in progress, but not the threads making them; a
//! slot or count from an older generation is therefore void: a slot is free, and
//! the first counted call in the child replaces the count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::fork;

/// `calls`: generation in the high 32 bits, calls in progress in the low 32.
const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Slots per gate: more than the threads that are inside one processor's calls at
/// once in any service we know of (the rest fall back to the shared count).
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_BITS: u32 = 3;

/// A slot word's low bit: taken (by a call of the generation in the high bits).
const TAKEN: u64 = 1;

/// Where this thread starts looking for a free slot: a hash of which megabyte of
/// address space its stack is in. Thread stacks are megabytes apart, so threads
/// mostly start at different slots, and one thread always starts at the same one
/// (its line stays in its cache); a collision only means trying the next slot.
/// (A thread-local would do the same, but in a library that can be `dlopen`ed
/// each access is a `__tls_get_addr` call.)
#[inline(always)]
fn first_slot() -> usize {
    let marker = 0u8;
    let stack = std::ptr::addr_of!(marker) as usize;
    // Fibonacci hashing: the top bits of the product mix every bit of the input.
    ((stack >> 20) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize >> (usize::BITS - SLOT_BITS)
}

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
    /// `tag(generation) | TAKEN` while a call of that generation owns the slot.
    slots: [CachePadded<AtomicU64>; SLOTS],
    calls: AtomicU64,
    state: AtomicU64,
}

/// A registered call; leaving is dropping it.
pub(crate) struct Ticket<'a> {
    gate: &'a Gate,
    generation: u64,
    /// The slot this call owns, or `SLOTS`: it was added to the shared count.
    slot: usize,
}

impl Gate {
    pub(crate) fn new() -> Self {
        let g = fork::generation();
        Gate {
            slots: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(tag(g)))),
            calls: AtomicU64::new(tag(g)),
            state: AtomicU64::new((g << 2) | OPEN),
        }
    }

    /// Registers a call; `None` once close has begun (the call must fail with
    /// `ShutDown` without touching anything else).
    #[inline]
    pub(crate) fn enter(&self) -> Option<Ticket<'_>> {
        let generation = fork::generation();
        let slot = self.take_slot(generation);
        if slot == SLOTS {
            self.count_call(generation);
        }
        let ticket = Ticket {
            gate: self,
            generation,
            slot,
        };
        if self.state.load(Ordering::SeqCst) & 3 != OPEN {
            return None; // `ticket` drops: the call leaves
        }
        Some(ticket)
    }

    /// Takes a free slot, starting at this thread's own; `SLOTS` if none is free.
    #[inline]
    fn take_slot(&self, generation: u64) -> usize {
        let current = tag(generation);
        let first = first_slot();
        for i in 0..SLOTS {
            let index = (first + i) % SLOTS;
            let slot = &self.slots[index];
            let word = slot.load(Ordering::Relaxed);
            // Free, or taken by a call of an older generation (a parent's thread,
            // which does not exist here).
            if word & TAKEN == 0 || word & !COUNT_MASK != current {
                // SeqCst: taking the slot must precede our read of `state` in the
                // single total order (see the module doc), pairing with
                // `begin_close` and `calls_in_progress`.
                if slot
                    .compare_exchange(word, current | TAKEN, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    return index;
                }
            }
        }
        SLOTS
    }

    /// Registers a call in the shared count (every slot was taken).
    #[cold]
    fn count_call(&self, generation: u64) {
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
    }

    /// Calls in progress in this process.
    fn calls_in_progress(&self, generation: u64) -> u64 {
        let current = tag(generation);
        let in_slots = self
            .slots
            .iter()
            .filter(|slot| slot.load(Ordering::SeqCst) == current | TAKEN)
            .count() as u64;
        let word = self.calls.load(Ordering::SeqCst);
        let counted = if word & !COUNT_MASK == current {
            word & COUNT_MASK
        } else {
            0 // the parent's calls: their threads do not exist here
        };
        in_slots + counted
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
    #[inline]
    fn drop(&mut self) {
        if fork::generation() != self.generation {
            // This thread entered in the parent and forked inside the call: the
            // slot or count it joined is the parent's, void here (and a slot may
            // already belong to a call of this process).
            return;
        }
        if let Some(slot) = self.gate.slots.get(self.slot) {
            // Release: `wait_idle` seeing the slot free (its loads are SeqCst, so
            // at least Acquire) sees everything this call did to the core. A plain
            // store: this call owns the slot, no locked instruction is needed.
            slot.store(tag(self.generation), Ordering::Release);
        } else {
            // SeqCst: `wait_idle` reads the count after this.
            self.gate.calls.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_take_slots_then_the_shared_count() {
        let gate = Gate::new();
        let generation = fork::generation();
        let tickets: Vec<_> = (0..SLOTS + 3)
            .map(|_| gate.enter().expect("open"))
            .collect();
        assert!(tickets[..SLOTS].iter().all(|t| t.slot < SLOTS));
        assert!(tickets[SLOTS..].iter().all(|t| t.slot == SLOTS));
        assert_eq!(gate.calls_in_progress(generation), (SLOTS + 3) as u64);
        drop(tickets);
        assert_eq!(gate.calls_in_progress(generation), 0);
    }

    #[test]
    fn a_call_after_close_began_is_refused_and_leaves() {
        let gate = Gate::new();
        let held = gate.enter().expect("open");
        assert_eq!(gate.begin_close(), CloseStart::Started);
        assert!(gate.enter().is_none());
        assert_eq!(gate.calls_in_progress(fork::generation()), 1);
        assert!(!gate.wait_idle(|| {}, Some(Instant::now())));
        drop(held);
        assert!(gate.wait_idle(|| {}, Some(Instant::now() + Duration::from_secs(5))));
    }

    #[test]
    fn a_slot_of_an_older_generation_is_free_and_not_counted() {
        let gate = Gate::new();
        let generation = fork::generation();
        // What a child sees: every slot and the count held by the parent's calls.
        let parent = tag(generation.wrapping_sub(1));
        for slot in &gate.slots {
            slot.store(parent | TAKEN, Ordering::SeqCst);
        }
        gate.calls.store(parent | 5, Ordering::SeqCst);
        assert_eq!(gate.calls_in_progress(generation), 0);
        let ticket = gate.enter().expect("open");
        assert!(ticket.slot < SLOTS, "took a parent's slot");
        assert_eq!(gate.calls_in_progress(generation), 1);
        drop(ticket);
        assert_eq!(gate.calls_in_progress(generation), 0);
    }
}
