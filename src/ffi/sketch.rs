//! `eh_hll` and `eh_cms`: standalone, mergeable, serializable sketches.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{bytes_arg, eh_status, guard, guard_free, handle, out_arg, write_out};
use crate::error::{Error, Result};
use crate::sketch::{CountMin, Hll};

/// A sketch behind a reader-writer lock: the shared shape of both handles.
struct Locked<T>(RwLock<T>);

impl<T: Clone> Locked<T> {
    fn read(&self) -> Result<RwLockReadGuard<'_, T>> {
        self.0
            .read()
            .map_err(|_| Error::Poisoned("the sketch panicked in an earlier call".into()))
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, T>> {
        self.0
            .write()
            .map_err(|_| Error::Poisoned("the sketch panicked in an earlier call".into()))
    }

    /// A copy of the sketch (so `merge(a, a)` never takes two locks on one handle).
    fn snapshot(&self) -> Result<T> {
        Ok(self.read()?.clone())
    }
}

/// A HyperLogLog distinct counter (opaque): precision 14 (16384 one-byte registers,
/// 0.81% standard error), 64-bit XXH3 hashing, Ertl's improved estimator (near exact
/// for small counts). Sketches built by different processes merge.
///
/// Plain memory: there is no close; after `fork()` the child has its own copy.
///
/// Thread safety: may be used from several threads at once (adds and merges are
/// serialised by an internal lock; counts share it). `eh_hll_free` must not run
/// concurrently with, or be followed by, any other call on the handle.
pub struct eh_hll {
    inner: Locked<Hll>,
}

impl eh_hll {
    /// Boxes `hll` into a handle for C.
    pub(crate) fn boxed(hll: Hll) -> *mut eh_hll {
        Box::into_raw(Box::new(eh_hll {
            inner: Locked(RwLock::new(hll)),
        }))
    }
}

/// A Count-Min frequency sketch (opaque): `depth` rows of `width` 64-bit counters,
/// one 128-bit XXH3 hash per key with double hashing for the rows. Estimates never
/// undercount and exceed the truth by at most e/width of the total with probability
/// 1 − e^−depth. Sketches of equal dimensions merge.
///
/// Plain memory: there is no close; after `fork()` the child has its own copy.
///
/// Thread safety: may be used from several threads at once (internal lock).
/// `eh_cms_free` must not run concurrently with, or be followed by, any other call
/// on the handle.
pub struct eh_cms {
    inner: Locked<CountMin>,
}

/// Copies bytes into a caller buffer: `*needed` is always set; the data is written
/// only when `cap >= *needed` (else the call still succeeds; retry with more room).
///
/// # Safety
/// `buf` is NULL or has `cap` writable bytes; `needed` was checked by `out_arg`.
unsafe fn copy_out(bytes: &[u8], buf: *mut u8, cap: usize, needed: *mut usize) {
    if !buf.is_null() && cap >= bytes.len() {
        // SAFETY: the caller's buffer has `cap >= len` writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len()) };
    }
    // SAFETY: checked by `out_arg`.
    unsafe { write_out(needed, bytes.len()) };
}

/// Creates an empty HyperLogLog into `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_hll_new(out: *mut *mut eh_hll) -> eh_status {
    guard("eh_hll_new", || {
        let out = out_arg(out, "out")?;
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, eh_hll::boxed(Hll::new())) };
        Ok(())
    })
}

/// Frees a HyperLogLog. NULL: no-op. No other call may use `hll` during or after
/// this one (the caller's duty).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_hll_free(hll: *mut eh_hll) {
    if hll.is_null() {
        return;
    }
    // SAFETY: created by `Box::into_raw` in this module; freed once by contract.
    guard_free("eh_hll_free", || drop(unsafe { Box::from_raw(hll) }));
}

/// Adds one item (any bytes; `len == 0` is the empty item).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_hll_add(hll: *mut eh_hll, item: *const u8, len: usize) -> eh_status {
    guard("eh_hll_add", || {
        // SAFETY: the handle and the (pointer, length) pair follow the module contract.
        let (h, item) = unsafe { (handle(hll, "hll")?, bytes_arg(item, len, "item")?) };
        h.inner.write()?.add(item);
        Ok(())
    })
}

/// Merges `src` into `dst` (the union of both streams). `src` is unchanged; `dst ==
/// src` is allowed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_hll_merge(dst: *mut eh_hll, src: *const eh_hll) -> eh_status {
    guard("eh_hll_merge", || {
        // SAFETY: both handles follow the module contract.
        let (d, s) = unsafe { (handle(dst, "dst")?, handle(src, "src")?) };
        let s = s.inner.snapshot()?;
        d.inner.write()?.merge(&s);
        Ok(())
    })
}

/// Writes the estimated number of distinct items to `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_hll_count(hll: *const eh_hll, out: *mut u64) -> eh_status {
    guard("eh_hll_count", || {
        // SAFETY: per the module contract.
        let h = unsafe { handle(hll, "hll")? };
        let out = out_arg(out, "out")?;
        let n = h.inner.read()?.count();
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, n) };
        Ok(())
    })
}

/// Resets to empty.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_hll_clear(hll: *mut eh_hll) -> eh_status {
    guard("eh_hll_clear", || {
        // SAFETY: per the module contract.
        let h = unsafe { handle(hll, "hll")? };
        h.inner.write()?.clear();
        Ok(())
    })
}

/// Serializes into `buf` (capacity `cap`): versioned, with a checksum; 16400 bytes.
/// `*needed` is always set; `buf` is written only when `cap >= *needed` (the call
/// succeeds either way: retry with a larger buffer).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_hll_serialize(
    hll: *const eh_hll,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> eh_status {
    guard("eh_hll_serialize", || {
        // SAFETY: per the module contract.
        let h = unsafe { handle(hll, "hll")? };
        let needed = out_arg(needed, "needed")?;
        let bytes = h.inner.read()?.to_bytes();
        // SAFETY: `buf` per the contract; `needed` checked.
        unsafe { copy_out(&bytes, buf, cap, needed) };
        Ok(())
    })
}

/// Creates a HyperLogLog from `eh_hll_serialize` bytes into `*out`. Bad magic,
/// version, length, register values or checksum: `EH_CORRUPT`, nothing created.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_hll_deserialize(
    bytes: *const u8,
    len: usize,
    out: *mut *mut eh_hll,
) -> eh_status {
    guard("eh_hll_deserialize", || {
        let out = out_arg(out, "out")?;
        // SAFETY: per the module contract.
        let bytes = unsafe { bytes_arg(bytes, len, "bytes")? };
        let hll = Hll::from_bytes(bytes)?;
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, eh_hll::boxed(hll)) };
        Ok(())
    })
}

/// Creates a Count-Min sketch of `depth` rows (1..=16; 0 = 4) and `width` columns
/// (1..=16777216; 0 = 2048) into `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_cms_new(depth: u32, width: u32, out: *mut *mut eh_cms) -> eh_status {
    guard("eh_cms_new", || {
        let out = out_arg(out, "out")?;
        let depth = if depth == 0 {
            crate::sketch::cms::DEFAULT_DEPTH
        } else {
            depth as usize
        };
        let width = if width == 0 {
            crate::sketch::cms::DEFAULT_WIDTH
        } else {
            width as usize
        };
        let cms = CountMin::new(depth, width)?;
        let boxed = Box::new(eh_cms {
            inner: Locked(RwLock::new(cms)),
        });
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, Box::into_raw(boxed)) };
        Ok(())
    })
}

/// Frees a Count-Min sketch. NULL: no-op. No other call may use `cms` during or
/// after this one (the caller's duty).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_cms_free(cms: *mut eh_cms) {
    if cms.is_null() {
        return;
    }
    // SAFETY: created by `Box::into_raw` in `eh_cms_new`/`eh_cms_deserialize`.
    guard_free("eh_cms_free", || drop(unsafe { Box::from_raw(cms) }));
}

/// Adds `count` occurrences of `item` (counters saturate at 2^64 − 1).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_cms_add(
    cms: *mut eh_cms,
    item: *const u8,
    len: usize,
    count: u64,
) -> eh_status {
    guard("eh_cms_add", || {
        // SAFETY: the handle and the (pointer, length) pair follow the module contract.
        let (c, item) = unsafe { (handle(cms, "cms")?, bytes_arg(item, len, "item")?) };
        c.inner.write()?.add(item, count);
        Ok(())
    })
}

/// Writes the estimated count of `item` to `*out` (never below the true count).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_cms_estimate(
    cms: *const eh_cms,
    item: *const u8,
    len: usize,
    out: *mut u64,
) -> eh_status {
    guard("eh_cms_estimate", || {
        // SAFETY: the handle and the (pointer, length) pair follow the module contract.
        let (c, item) = unsafe { (handle(cms, "cms")?, bytes_arg(item, len, "item")?) };
        let out = out_arg(out, "out")?;
        let n = c.inner.read()?.estimate(item);
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, n) };
        Ok(())
    })
}

/// Writes the total of all counts added (and merged) to `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_cms_total(cms: *const eh_cms, out: *mut u64) -> eh_status {
    guard("eh_cms_total", || {
        // SAFETY: per the module contract.
        let c = unsafe { handle(cms, "cms")? };
        let out = out_arg(out, "out")?;
        let n = c.inner.read()?.total();
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, n) };
        Ok(())
    })
}

/// Adds `src`'s counts into `dst`. Different dimensions: `EH_INVALID_ARGUMENT`,
/// `dst` unchanged. `dst == src` doubles every count.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_cms_merge(dst: *mut eh_cms, src: *const eh_cms) -> eh_status {
    guard("eh_cms_merge", || {
        // SAFETY: both handles follow the module contract.
        let (d, s) = unsafe { (handle(dst, "dst")?, handle(src, "src")?) };
        let s = s.inner.snapshot()?;
        d.inner.write()?.merge(&s)
    })
}

/// Resets every counter to zero.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_cms_clear(cms: *mut eh_cms) -> eh_status {
    guard("eh_cms_clear", || {
        // SAFETY: per the module contract.
        let c = unsafe { handle(cms, "cms")? };
        c.inner.write()?.clear();
        Ok(())
    })
}

/// Serializes into `buf` (capacity `cap`), versioned with a checksum. `*needed` is
/// always set; `buf` is written only when `cap >= *needed`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_cms_serialize(
    cms: *const eh_cms,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> eh_status {
    guard("eh_cms_serialize", || {
        // SAFETY: per the module contract.
        let c = unsafe { handle(cms, "cms")? };
        let needed = out_arg(needed, "needed")?;
        let bytes = c.inner.read()?.to_bytes();
        // SAFETY: `buf` per the contract; `needed` checked.
        unsafe { copy_out(&bytes, buf, cap, needed) };
        Ok(())
    })
}

/// Creates a Count-Min sketch from `eh_cms_serialize` bytes into `*out`. Anything
/// malformed: `EH_CORRUPT`, nothing created.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_cms_deserialize(
    bytes: *const u8,
    len: usize,
    out: *mut *mut eh_cms,
) -> eh_status {
    guard("eh_cms_deserialize", || {
        let out = out_arg(out, "out")?;
        // SAFETY: per the module contract.
        let bytes = unsafe { bytes_arg(bytes, len, "bytes")? };
        let cms = CountMin::from_bytes(bytes)?;
        let boxed = Box::new(eh_cms {
            inner: Locked(RwLock::new(cms)),
        });
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, Box::into_raw(boxed)) };
        Ok(())
    })
}
