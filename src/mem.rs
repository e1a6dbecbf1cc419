//! Memory helpers for the large arrays of the leaderboard: gentle growth and
//! transparent huge pages.
//!
//! At a million users the board's arrays span tens of megabytes and every update
//! touches a few random places in them. With 4 KiB pages each of those touches
//! also misses the TLB; asking the kernel for 2 MiB pages (`MADV_HUGEPAGE`, honoured
//! when transparent huge pages are set to `always` or `madvise`) removes most of
//! those walks. Growing by a quarter instead of doubling keeps the unused tail of
//! the arrays, counted in heap bytes per user, small.

/// Arrays smaller than this are not worth huge pages.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// Asks the kernel to back the 2 MiB-aligned part of `v`'s allocation with huge
/// pages. Advice only: contents and validity of the memory are unchanged, and a
/// kernel without transparent huge pages ignores it.
pub(crate) fn advise_huge_pages<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < HUGE_PAGE_MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let first = start.next_multiple_of(HUGE);
        let last = (start + bytes) / HUGE * HUGE;
        if last > first {
            // SAFETY: [first, last) lies inside the live allocation of `v` (rounded
            // inwards to 2 MiB boundaries). MADV_HUGEPAGE changes only how the kernel
            // backs those pages; it never changes or invalidates their contents, so
            // no Rust reference can observe it. A failure (EINVAL without THP) is
            // harmless and ignored.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
}

/// Pushes `item`, growing a full vector by a quarter (at least 16 items) rather
/// than doubling it. A grown vector moves to a fresh allocation that is advised to
/// use huge pages before anything is written to it: pages already written keep
/// their 4 KiB backing, so advising a reallocated block would help only its tail.
pub(crate) fn push<T>(v: &mut Vec<T>, item: T) {
    if v.len() == v.capacity() {
        regrow(v, v.capacity() + (v.capacity() / 4).max(16));
    }
    v.push(item);
}

/// Reserves room for exactly `additional` more items, in a fresh allocation
/// advised to use huge pages (see [`push`]).
pub(crate) fn reserve_exact<T>(v: &mut Vec<T>, additional: usize) {
    if v.capacity() - v.len() < additional {
        regrow(v, v.len() + additional);
    }
}

/// Moves `v`'s items into a fresh allocation of `capacity` items, advised to use
/// huge pages before anything is written to it.
fn regrow<T>(v: &mut Vec<T>, capacity: usize) {
    let mut grown = Vec::with_capacity(capacity);
    advise_huge_pages(&grown);
    grown.append(v);
    *v = grown;
}

/// Hints the CPU to start loading `value`'s cache lines, without waiting for them.
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = (value as *const T).cast::<i8>();
        for offset in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults and has no effect on
            // memory contents; the addresses lie within `value` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_grows_by_a_quarter() {
        let mut v: Vec<u64> = Vec::new();
        let mut caps = vec![0];
        for i in 0..100_000u64 {
            push(&mut v, i);
            if *caps.last().unwrap() != v.capacity() {
                caps.push(v.capacity());
            }
        }
        assert!(v.iter().copied().eq(0..100_000));
        for pair in caps.windows(2).skip(1) {
            let step = pair[1] - pair[0];
            assert!(step >= 16 && step <= pair[0] / 4 + 16, "steps {caps:?}");
        }
        // The unused tail is at most a quarter of the items.
        assert!(v.capacity() - v.len() <= v.len() / 4);
    }

    #[test]
    fn advising_large_and_small_vectors_keeps_contents() {
        let mut big = vec![7u8; 9 << 20];
        advise_huge_pages(&big);
        big[5 << 20] = 9;
        assert_eq!(
            big.iter().map(|&b| b as usize).sum::<usize>(),
            7 * (9 << 20) + 2
        );
        let small = vec![1u32; 10];
        advise_huge_pages(&small);
        assert_eq!(small.iter().sum::<u32>(), 10);
    }
}
