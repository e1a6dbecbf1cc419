//! Bounded lock-free MPMC ring (Dmitry Vyukov's bounded queue) with a close mark.
//!
//! Every slot carries a sequence stamp. For the slot at position `pos`:
//! * `stamp == pos`: free, a producer that claims `pos` may write it;
//! * `stamp == pos + 1`: written, a consumer that claims `pos` may read it;
//! * after the read the stamp becomes `pos + capacity`, freeing it for the next lap.
//!
//! Producers claim positions by a CAS on `tail`, consumers on `head`; both indices
//! sit on their own cache line (`CachePadded`). Values move in and out by value, so a
//! slot never allocates.
//!
//! Closing sets [`CLOSED`] in `tail` with one `fetch_or`: a producer that read `tail`
//! before the mark fails its CAS (the word changed) and sees the mark on retry, so
//! once `close` returns no push can succeed, and consumers can drain exactly the
//! positions below the final tail.

use crossbeam_utils::CachePadded;

#[cfg(loom)]
use loom::cell::UnsafeCell;
#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicUsize, Ordering, fence};

use std::mem::MaybeUninit;

/// The close mark in `tail`; positions use the other 63 bits (they would wrap after
/// 2^63 pushes, centuries at any rate this hardware reaches).
const CLOSED: usize = 1 << (usize::BITS - 1);

/// How many positions ahead of its claim a push prefetches (see
/// [`Ring::prefetch_for_push`]): far enough that memory answers before a producer
/// pushing back to back gets there.
const PREFETCH_AHEAD: usize = 4;

/// `std::cell::UnsafeCell` with loom's closure API, so the same code runs under loom.
#[cfg(not(loom))]
struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Aligned to a cache line, so a slot's lines hold no part of its neighbours: the
/// worker freeing slot `i` (a store to its stamp) does not take away the line the
/// producer is writing slot `i + 1` in.
#[repr(align(64))]
struct Slot<T> {
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// Why a push was refused; the value comes back to the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// Every slot holds an unread value.
    Full(T),
    /// [`Ring::close`] was called.
    Closed(T),
}

impl<T> PushError<T> {
    /// The value that was not pushed.
    pub fn into_inner(self) -> T {
        match self {
            PushError::Full(v) | PushError::Closed(v) => v,
        }
    }
}

/// Why [`Ring::push_with`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot holds an unread value.
    Full,
    /// [`Ring::close`] was called.
    Closed,
}

/// A bounded multi-producer multi-consumer queue.
///
/// Thread safety: all methods take `&self` and may race freely.
pub struct Ring<T> {
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    slots: Box<[Slot<T>]>,
    mask: usize,
}

// SAFETY: values are handed from the producing thread to exactly one consuming
// thread (the stamp protocol gives each position one writer, then one reader), so
// `T: Send` suffices; no `&T` is ever shared.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; all shared state is atomics or cells guarded by the stamps.
unsafe impl<T: Send> Sync for Ring<T> {}

/// Spins briefly, then yields the CPU (loom: always yields so the model advances).
fn relax(step: &mut u32) {
    #[cfg(loom)]
    {
        let _ = step;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if *step < 6 {
            for _ in 0..(1u32 << *step) {
                std::hint::spin_loop();
            }
            *step += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

impl<T> Ring<T> {
    /// A ring with `capacity` slots, rounded up to a power of two (at least 2).
    ///
    /// # Panics
    /// If the rounded capacity overflows `usize`; callers validate sizes first.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity
            .max(2)
            .checked_next_power_of_two()
            .filter(|c| *c < CLOSED)
            .unwrap_or_else(|| panic!("ring capacity {capacity} is too large"));
        let slots = (0..capacity)
            .map(|i| Slot {
                stamp: AtomicUsize::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Ring {
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            slots,
            mask: capacity - 1,
        }
    }

    /// The slot of position `pos` (positions wrap around the ring).
    #[inline(always)]
    fn slot(&self, pos: usize) -> &Slot<T> {
        // SAFETY: `slots.len()` is a power of two and `mask` is `slots.len() - 1`
        // (both set in `new` and never changed), so `pos & mask < slots.len()`.
        unsafe { self.slots.get_unchecked(pos & self.mask) }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Appends `value`, or gives it back if the ring is full or closed. Never blocks.
    /// On success returns the position the value took (its push sequence number).
    pub fn push(&self, value: T) -> Result<usize, PushError<T>> {
        self.push_with(move || value)
            .map_err(|(refusal, make)| match refusal {
                Refusal::Full => PushError::Full(make()),
                Refusal::Closed => PushError::Closed(make()),
            })
    }

    /// Like [`Ring::push`], but builds the value with `make` only once a slot is
    /// claimed (nothing built for a refused push); on refusal `make` comes back
    /// unused.
    ///
    /// `make` must not panic: the claimed slot would never be published and
    /// consumers would wait for it forever.
    #[inline]
    pub fn push_with<F: FnOnce() -> T>(&self, make: F) -> Result<usize, (Refusal, F)> {
        let mut make = Some(make);
        // SAFETY: `push_in_place` runs the closure at most once, and `make` is `Some`
        // until then, so the closure always writes the value.
        let pushed = unsafe {
            self.push_in_place(|slot| {
                if let Some(make) = make.take() {
                    slot.write(make());
                }
            })
        };
        match pushed {
            Ok(pos) => Ok(pos),
            // The returned closure (which borrows `make`) is discarded here.
            Err((refusal, _)) => {
                match make {
                    Some(make) => Err((refusal, make)),
                    // The closure runs only for an accepted push.
                    None => unreachable!("a refused push ran its closure"),
                }
            }
        }
    }

    /// Like [`Ring::push_with`], but `init` writes the value straight into the
    /// claimed slot's memory (a large value is not built on the stack and copied
    /// in); on refusal `init` comes back unused.
    ///
    /// # Safety
    /// `init` must initialize the value it is given before returning, and must not
    /// panic (the claimed slot would never be published: consumers would wait for
    /// it forever).
    #[inline]
    pub(crate) unsafe fn push_in_place<F: FnOnce(&mut MaybeUninit<T>)>(
        &self,
        init: F,
    ) -> Result<usize, (Refusal, F)> {
        let mut step = 0;
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            if tail & CLOSED != 0 {
                return Err((Refusal::Closed, init));
            }
            let slot = self.slot(tail);
            // Acquire pairs with the consumer's Release stamp store after moving the
            // previous lap's value out.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                match self.tail.compare_exchange_weak(
                    tail,
                    tail + 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.prefetch_for_push(tail.wrapping_add(PREFETCH_AHEAD));
                        // SAFETY: the CAS made this thread the only owner of position
                        // `tail`; its stamp says the slot is free (any earlier value was
                        // moved out by a consumer), and no consumer reads it until the
                        // stamp below is published, by when `init` has initialized it
                        // (this function's contract).
                        slot.value.with_mut(|p| init(unsafe { &mut *p }));
                        // Release pairs with the consumers' Acquire stamp loads.
                        slot.stamp.store(tail + 1, Ordering::Release);
                        return Ok(tail);
                    }
                    Err(current) => tail = current,
                }
            } else if stamp.wrapping_add(self.capacity()) == tail + 1 {
                // The slot still holds the value from one lap ago.
                if self.full_at(tail) {
                    return Err((Refusal::Full, init));
                }
                relax(&mut step);
                tail = self.tail.load(Ordering::Relaxed);
            } else {
                // Another producer claimed this position; catch up.
                relax(&mut step);
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Claims up to `max` consecutive positions with one CAS on `tail` and lets
    /// `init(i, slot)` write the `i`-th value of the run into each (`i` from 0),
    /// publishing each as soon as it is written. Returns how many were claimed and
    /// written: fewer than `max` when the ring had fewer free slots, at least 1 on
    /// success. On refusal (full: not one slot free; or closed) nothing was claimed.
    ///
    /// One locked instruction per run instead of per value: a locked instruction
    /// also waits for every earlier store to reach the cache, i.e. for the previous
    /// values' writes, so a batch pushed value by value paid that wait each time.
    ///
    /// # Safety
    /// `init` must initialize the value it is given before returning, and must not
    /// panic (a claimed slot would never be published: consumers would wait for it
    /// forever).
    #[inline]
    pub(crate) unsafe fn push_run(
        &self,
        max: usize,
        mut init: impl FnMut(usize, &mut MaybeUninit<T>),
    ) -> Result<usize, Refusal> {
        let max = max.min(self.capacity());
        if max == 0 {
            return Ok(0);
        }
        let mut step = 0;
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            if tail & CLOSED != 0 {
                return Err(Refusal::Closed);
            }
            // Free positions from `tail` on: a free slot stays free until the
            // producer that claims its position writes it, so if the CAS below
            // succeeds (no producer claimed any of them) all `free` are ours.
            let mut free = 0;
            while free < max {
                let pos = tail.wrapping_add(free);
                // Acquire, as in `push_in_place`.
                if self.slot(pos).stamp.load(Ordering::Acquire) != pos {
                    break;
                }
                free += 1;
            }
            if free == 0 {
                let stamp = self.slot(tail).stamp.load(Ordering::Acquire);
                // As in `push_in_place`: the slot holds last lap's value.
                if stamp.wrapping_add(self.capacity()) == tail + 1 && self.full_at(tail) {
                    return Err(Refusal::Full);
                }
                relax(&mut step);
                tail = self.tail.load(Ordering::Relaxed);
                continue;
            }
            match self.tail.compare_exchange_weak(
                tail,
                tail + free,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    for i in 0..free {
                        let pos = tail + i;
                        let slot = self.slot(pos);
                        // SAFETY: the CAS made this thread the only owner of
                        // positions `tail..tail + free`, each free (its stamp was
                        // `pos`, which only the producer of `pos` changes); no
                        // consumer reads one before its stamp below, by when `init`
                        // has initialized it (this function's contract).
                        slot.value.with_mut(|p| init(i, unsafe { &mut *p }));
                        // Release pairs with the consumers' Acquire stamp loads.
                        slot.stamp.store(pos + 1, Ordering::Release);
                    }
                    return Ok(free);
                }
                Err(current) => tail = current,
            }
        }
    }

    /// Whether the ring is full for a producer at `tail` whose slot still holds the
    /// value from one lap ago: unless a consumer moved head meanwhile.
    #[inline]
    fn full_at(&self, tail: usize) -> bool {
        fence(Ordering::SeqCst);
        self.head
            .load(Ordering::Relaxed)
            .wrapping_add(self.capacity())
            == tail
    }

    /// Asks the CPU to bring the slot at `pos` into this core's cache for writing,
    /// so that the push that claims it neither waits for its stamp nor leaves
    /// stores that miss in the store buffer, where the next locked instruction (a
    /// claim, or the gate) would wait for them. A hint: it never faults and has no
    /// effect on what any thread reads.
    #[inline(always)]
    fn prefetch_for_push(&self, pos: usize) {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        {
            let slot: *const Slot<T> = self.slot(pos);
            for line in (0..std::mem::size_of::<Slot<T>>()).step_by(64) {
                // SAFETY: a prefetch is a hint that never faults, whatever the address;
                // this one is inside `slots` anyway.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(
                        slot.cast::<i8>().wrapping_add(line),
                    );
                }
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        let _ = pos;
    }

    /// Removes the oldest value, or `None` if the ring is empty. If a producer has
    /// claimed the next position but not finished writing it, waits for it (a few
    /// nanoseconds), so `None` means no value was pending at the time of the call.
    pub fn pop(&self) -> Option<T> {
        let mut step = 0;
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(head);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == head + 1 {
                match self.head.compare_exchange_weak(
                    head,
                    head + 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the CAS made this thread the only reader of position
                        // `head`, and its stamp (Acquire) says the producer finished
                        // writing it; the value is moved out exactly once.
                        let value = slot.value.with_mut(|p| unsafe { (*p).assume_init_read() });
                        slot.stamp
                            .store(head.wrapping_add(self.capacity()), Ordering::Release);
                        return Some(value);
                    }
                    Err(current) => head = current,
                }
            } else if stamp == head {
                // Not written yet: empty, or a producer is mid-write.
                fence(Ordering::SeqCst);
                let tail = self.tail.load(Ordering::Relaxed) & !CLOSED;
                if tail == head {
                    return None;
                }
                relax(&mut step);
                head = self.head.load(Ordering::Relaxed);
            } else {
                // Another consumer took this position; catch up.
                relax(&mut step);
                head = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// Removes up to `max` of the oldest values in order, handing each to `f`, and
    /// returns how many (0: the ring was empty, as for [`Ring::pop`]). The run is
    /// claimed with one CAS on `head` after reading the stamps of its slots, so a
    /// consumer pays one locked instruction per run instead of per value, and the
    /// stamp loads (each a cache miss: the producer wrote the slot) overlap instead
    /// of each stalling its own CAS.
    ///
    /// If `f` panics, the values of the run it has not seen yet are dropped and
    /// their slots freed, so the ring stays usable.
    pub fn pop_run(&self, max: usize, mut f: impl FnMut(T)) -> usize {
        let max = max.min(self.capacity());
        if max == 0 {
            return 0;
        }
        let mut step = 0;
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let mut ready = 0;
            while ready < max {
                let pos = head.wrapping_add(ready);
                // Acquire pairs with the producer's Release store of `pos + 1`: seeing
                // it means seeing the value written before it.
                let stamp = self.slot(pos).stamp.load(Ordering::Acquire);
                if stamp != pos.wrapping_add(1) {
                    break;
                }
                ready += 1;
            }
            if ready == 0 {
                let stamp = self.slot(head).stamp.load(Ordering::Acquire);
                if stamp == head {
                    // As in `pop`: empty, or a producer is mid-write.
                    fence(Ordering::SeqCst);
                    let tail = self.tail.load(Ordering::Relaxed) & !CLOSED;
                    if tail == head {
                        return 0;
                    }
                }
                // A producer is mid-write, or another consumer took `head`.
                relax(&mut step);
                head = self.head.load(Ordering::Relaxed);
                continue;
            }
            // SeqCst like `pop`'s CAS: flush and stats read `head` with SeqCst loads.
            match self.head.compare_exchange_weak(
                head,
                head.wrapping_add(ready),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // The CAS made this thread the only reader of positions
                    // `head..head + ready`, each written (its stamp was `pos + 1`, and
                    // only a consumer that claimed `pos` changes it again).
                    let mut run = ClaimedRun {
                        ring: self,
                        next: head,
                        end: head.wrapping_add(ready),
                    };
                    while let Some(value) = run.take() {
                        f(value);
                    }
                    return ready;
                }
                Err(current) => head = current,
            }
        }
    }

    /// Refuses every later push. Returns `true` for the call that closed the ring.
    pub fn close(&self) -> bool {
        self.tail.fetch_or(CLOSED, Ordering::SeqCst) & CLOSED == 0
    }

    /// Whether [`Ring::close`] has been called.
    pub fn is_closed(&self) -> bool {
        self.tail.load(Ordering::SeqCst) & CLOSED != 0
    }

    /// Positions claimed by producers so far (the number of successful pushes).
    pub fn tail_position(&self) -> usize {
        self.tail.load(Ordering::SeqCst) & !CLOSED
    }

    /// Positions claimed by consumers so far (the number of pops).
    pub fn head_position(&self) -> usize {
        self.head.load(Ordering::SeqCst)
    }

    /// Values waiting (a snapshot; exact when no other thread is active).
    pub fn len(&self) -> usize {
        loop {
            let tail = self.tail.load(Ordering::SeqCst) & !CLOSED;
            let head = self.head.load(Ordering::SeqCst);
            if self.tail.load(Ordering::SeqCst) & !CLOSED == tail {
                return tail.saturating_sub(head).min(self.capacity());
            }
        }
    }

    /// Whether no value is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Positions `next..end` claimed by one [`Ring::pop_run`], not yet moved out.
struct ClaimedRun<'a, T> {
    ring: &'a Ring<T>,
    next: usize,
    end: usize,
}

impl<T> ClaimedRun<'_, T> {
    /// Moves the next value out and frees its slot.
    fn take(&mut self) -> Option<T> {
        if self.next == self.end {
            return None;
        }
        let pos = self.next;
        self.next = pos.wrapping_add(1);
        let slot = &self.ring.slots[pos & self.ring.mask];
        // SAFETY: `pos` was claimed by this run's CAS and its stamp showed the value
        // written (see `pop_run`); it is moved out exactly once (`next` moved past).
        let value = slot.value.with_mut(|p| unsafe { (*p).assume_init_read() });
        // Release pairs with the next lap's producer's Acquire stamp load: the slot is
        // free only once the value has been moved out.
        slot.stamp
            .store(pos.wrapping_add(self.ring.capacity()), Ordering::Release);
        Some(value)
    }
}

impl<T> Drop for ClaimedRun<'_, T> {
    fn drop(&mut self) {
        // Only non-empty if the consumer's callback panicked: drop the rest of the
        // run and free its slots.
        while self.take().is_some() {}
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // `&mut self`: no other thread can be inside push or pop.
        while self.pop().is_some() {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        assert_eq!(Ring::<u8>::new(0).capacity(), 2);
        assert_eq!(Ring::<u8>::new(5).capacity(), 8);
        assert_eq!(Ring::<u8>::new(16384).capacity(), 16384);
    }

    #[test]
    #[should_panic(expected = "too large")]
    fn absurd_capacity_panics() {
        let _ = Ring::<u8>::new(usize::MAX);
    }

    #[test]
    fn fifo_full_and_empty_edges() {
        let ring = Ring::new(4);
        assert_eq!(ring.pop(), None);
        for i in 0..4 {
            assert_eq!(ring.push(i), Ok(i));
        }
        assert_eq!(ring.push(99), Err(PushError::Full(99)));
        assert_eq!(ring.len(), 4);
        assert_eq!(ring.pop(), Some(0));
        assert_eq!(ring.push(4), Ok(4));
        assert_eq!(
            (1..5).map(|_| ring.pop().unwrap()).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(ring.pop(), None);
        assert!(ring.is_empty());
    }

    #[test]
    fn pop_run_takes_a_prefix_in_order_and_frees_the_slots() {
        let ring = Ring::new(8);
        assert_eq!(ring.pop_run(4, |_: u32| unreachable!()), 0);
        for i in 0..6 {
            ring.push(i).unwrap();
        }
        let mut got = Vec::new();
        assert_eq!(ring.pop_run(4, |v| got.push(v)), 4);
        assert_eq!(got, [0, 1, 2, 3]);
        for i in 6..12 {
            ring.push(i).unwrap(); // wraps: the run's slots were freed
        }
        assert_eq!(ring.pop_run(100, |v| got.push(v)), 8);
        assert_eq!(got, (0..12).collect::<Vec<_>>());
        assert!(ring.is_empty());
    }

    #[test]
    fn pop_run_frees_the_rest_of_the_run_when_the_callback_panics() {
        let marker = Arc::new(());
        let ring = Ring::new(4);
        for _ in 0..4 {
            ring.push(Arc::clone(&marker)).unwrap();
        }
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ring.pop_run(4, |_v| panic!("callback fails"));
        }));
        assert!(caught.is_err());
        assert_eq!(Arc::strong_count(&marker), 1, "every value was dropped");
        assert!(ring.is_empty());
        for _ in 0..4 {
            ring.push(Arc::clone(&marker)).unwrap();
        }
    }

    #[test]
    fn push_run_claims_what_is_free_in_order() {
        let ring = Ring::new(8);
        ring.push(100).unwrap();
        assert_eq!(ring.pop(), Some(100));
        // SAFETY: the closures write every slot and cannot panic.
        let claimed = unsafe { ring.push_run(5, |i, slot| _ = slot.write(i as u32)) };
        assert_eq!(claimed, Ok(5));
        let claimed = unsafe { ring.push_run(5, |i, slot| _ = slot.write(10 + i as u32)) };
        assert_eq!(claimed, Ok(3), "only three slots were free");
        let refused = unsafe { ring.push_run(5, |_, slot| _ = slot.write(99)) };
        assert_eq!(refused, Err(Refusal::Full));
        let mut seen = Vec::new();
        while let Some(v) = ring.pop() {
            seen.push(v);
        }
        assert_eq!(seen, [0, 1, 2, 3, 4, 10, 11, 12]);
        ring.close();
        let refused = unsafe { ring.push_run(5, |_, slot| _ = slot.write(99)) };
        assert_eq!(refused, Err(Refusal::Closed));
        assert!(ring.is_empty());
    }

    #[test]
    fn close_refuses_pushes_but_keeps_values() {
        let ring = Ring::new(4);
        ring.push(1).unwrap();
        assert!(ring.close());
        assert!(!ring.close(), "second close reports it was already closed");
        assert_eq!(ring.push(2), Err(PushError::Closed(2)));
        assert_eq!(ring.pop(), Some(1));
        assert_eq!(ring.pop(), None);
        assert_eq!(ring.tail_position(), 1);
    }

    #[test]
    fn drop_releases_unread_values() {
        let marker = Arc::new(());
        let ring = Ring::new(8);
        for _ in 0..5 {
            ring.push(Arc::clone(&marker)).unwrap();
        }
        drop(ring.pop());
        drop(ring);
        assert_eq!(Arc::strong_count(&marker), 1);
    }

    #[test]
    fn many_producers_many_consumers_deliver_each_value_once() {
        const PRODUCERS: u64 = 3;
        const PER: u64 = 50_000;
        let ring = Arc::new(Ring::new(64));
        let seen: Arc<Vec<AtomicU64>> =
            Arc::new((0..PRODUCERS * PER).map(|_| AtomicU64::new(0)).collect());
        let popped = Arc::new(AtomicU64::new(0));
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (ring, seen, popped) = (ring.clone(), seen.clone(), popped.clone());
                std::thread::spawn(move || {
                    while popped.load(Ordering::Relaxed) < PRODUCERS * PER {
                        match ring.pop() {
                            Some(v) => {
                                seen[v as usize].fetch_add(1, Ordering::Relaxed);
                                popped.fetch_add(1, Ordering::Relaxed);
                            }
                            None => std::thread::yield_now(),
                        }
                    }
                })
            })
            .collect();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        let mut v = p * PER + i;
                        while let Err(e) = ring.push(v) {
                            v = e.into_inner();
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        for t in producers.into_iter().chain(consumers) {
            t.join().unwrap();
        }
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        assert!(ring.is_empty());
    }
}

/// Model checks of the push/pop/close races (`make loom-test`).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn two_producers_one_consumer_each_value_once() {
        loom::model(|| {
            let ring = Arc::new(Ring::new(2));
            let producers: Vec<_> = (0..2)
                .map(|p| {
                    let ring = ring.clone();
                    thread::spawn(move || ring.push(p).is_ok())
                })
                .collect();
            let mut got = Vec::new();
            for _ in 0..2 {
                if let Some(v) = ring.pop() {
                    got.push(v);
                }
            }
            let accepted = producers
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|ok| *ok)
                .count();
            while let Some(v) = ring.pop() {
                got.push(v);
            }
            got.sort_unstable();
            got.dedup();
            assert_eq!(got.len(), accepted);
        });
    }

    #[test]
    fn pop_run_with_two_producers_takes_each_value_once_in_order() {
        loom::model(|| {
            let ring = Arc::new(Ring::new(2));
            let producers: Vec<_> = (0..2)
                .map(|p| {
                    let ring = ring.clone();
                    thread::spawn(move || ring.push(p).is_ok())
                })
                .collect();
            let mut got = Vec::new();
            ring.pop_run(2, |v| got.push(v));
            let accepted = producers
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|ok| *ok)
                .count();
            while ring.pop_run(2, |v| got.push(v)) > 0 {}
            let mut unique = got.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), got.len(), "no value twice");
            assert_eq!(got.len(), accepted);
            assert_eq!(ring.head_position(), ring.tail_position());
        });
    }

    #[test]
    fn push_run_races_a_push_and_a_pop_each_value_once_in_run_order() {
        loom::model(|| {
            let ring = Arc::new(Ring::new(4));
            let runner = {
                let ring = ring.clone();
                // SAFETY: the closure writes every slot and cannot panic.
                thread::spawn(move || unsafe {
                    ring.push_run(2, |i, slot| _ = slot.write(10 + i as u32))
                })
            };
            let single = {
                let ring = ring.clone();
                thread::spawn(move || ring.push(1u32).is_ok())
            };
            let mut got = Vec::new();
            if let Some(v) = ring.pop() {
                got.push(v);
            }
            let run = runner.join().unwrap().expect("four slots: never full");
            assert!(single.join().unwrap());
            while let Some(v) = ring.pop() {
                got.push(v);
            }
            assert_eq!(run, 2);
            assert_eq!(got.len(), 3);
            let run_order: Vec<_> = got.iter().filter(|v| **v >= 10).collect();
            assert_eq!(run_order, [&10, &11]);
        });
    }

    #[test]
    fn full_edge_with_concurrent_pop() {
        loom::model(|| {
            let ring = Arc::new(Ring::new(2));
            ring.push(0).unwrap();
            ring.push(1).unwrap();
            let consumer = {
                let ring = ring.clone();
                thread::spawn(move || ring.pop())
            };
            let pushed = ring.push(2);
            let popped = consumer.join().unwrap();
            assert_eq!(popped, Some(0), "FIFO: the oldest value comes out first");
            let mut rest = Vec::new();
            while let Some(v) = ring.pop() {
                rest.push(v);
            }
            match pushed {
                Ok(_) => assert_eq!(rest, [1, 2]),
                Err(PushError::Full(2)) => assert_eq!(rest, [1]),
                Err(other) => panic!("unexpected {other:?}"),
            }
        });
    }

    #[test]
    fn empty_edge_with_concurrent_push() {
        loom::model(|| {
            let ring = Arc::new(Ring::new(2));
            let producer = {
                let ring = ring.clone();
                thread::spawn(move || ring.push(7).unwrap())
            };
            let first = ring.pop();
            producer.join().unwrap();
            let second = ring.pop();
            // The value comes out exactly once, whichever pop sees it.
            assert_eq!([first, second].iter().flatten().collect::<Vec<_>>(), [&7]);
        });
    }

    #[test]
    fn close_races_with_push_and_drain_is_exact() {
        loom::model(|| {
            let ring = Arc::new(Ring::new(2));
            let producer = {
                let ring = ring.clone();
                thread::spawn(move || ring.push(5).is_ok())
            };
            ring.close();
            let mut drained = Vec::new();
            while let Some(v) = ring.pop() {
                drained.push(v);
            }
            let accepted = producer.join().unwrap();
            // A push that was accepted before the close is drained after it: pop waits
            // for a claimed-but-unwritten slot instead of reporting empty.
            assert_eq!(drained.len(), usize::from(accepted));
            assert_eq!(ring.tail_position(), usize::from(accepted));
        });
    }
}
