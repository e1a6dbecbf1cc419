//! `eh_hll` and `eh_cms`: standalone, mergeable, serializable sketches.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::atfork::{self, ForkGuarded, ForkHold};

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

/// Fork: the write lock is held across `fork()` (see `atfork`).
impl<T: Send + Sync + 'static> Locked<T> {
    fn hold(&'static self) -> Box<dyn ForkHold> {
        Box::new(SketchHold {
            _lock: self.0.write().unwrap_or_else(PoisonError::into_inner),
        })
    }
}

/// Releases the sketch's lock when dropped.
struct SketchHold<T: 'static> {
    _lock: RwLockWriteGuard<'static, T>,
}

impl<T> ForkHold for SketchHold<T> {}

impl ForkGuarded for eh_hll {
    fn hold_for_fork(&'static self) -> Box<dyn ForkHold> {
        self.inner.hold()
    }
}

impl ForkGuarded for eh_cms {
    fn hold_for_fork(&'static self) -> Box<dyn ForkHold> {
        self.inner.hold()
    }
}

/// A HyperLogLog distinct counter (opaque): precision 14 (16384 one-byte registers,
/// 0.81% standard error), Ertl's improved estimator (near exact for small counts).
/// Sketches built by different processes merge.
///
/// Register-identical to Redis 7: an item sets the register Redis's `PFADD` sets for
/// the same bytes (MurmurHash64A, seed 0xadc83b19), and `eh_hll_count` equals
/// `PFCOUNT` on the same registers. `eh_hll_to_redis` / `eh_hll_from_redis` convert
/// to and from the value of a Redis HyperLogLog key.
///
/// Plain memory: there is no close; after `fork()` the child has its own copy,
/// whole and unlocked (see "Threads and fork" at the top of this header).
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
        atfork::boxed(eh_hll {
            inner: Locked(RwLock::new(hll)),
        })
    }
}

/// A Count-Min frequency sketch (opaque): `depth` rows of `width` 64-bit counters,
/// one 128-bit XXH3 hash per key with double hashing for the rows. Estimates never
/// undercount and exceed the truth by at most e/width of the total with probability
/// 1 − e^−depth. Sketches of equal dimensions merge.
///
/// Plain memory: there is no close; after `fork()` the child has its own copy,
/// whole and unlocked (see "Threads and fork" at the top of this header).
///
/// Thread safety: may be used from several threads at once (internal lock).
/// `eh_cms_free` must not run concurrently with, or be followed by, any other call
/// on the handle.
pub struct eh_cms {
    inner: Locked<CountMin>,
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
    // SAFETY: created by `atfork::boxed` in this module; freed once by contract.
    guard_free("eh_hll_free", || unsafe { atfork::free(hll) });
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

/// Serializes into `buf` (capacity `cap`): versioned (format version 2), with a
/// checksum; 16400 bytes. `*needed` is always set; `buf` is written only when `cap >=
/// *needed` (the call succeeds either way: retry with a larger buffer).
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
        super::copy_out(&bytes, buf, cap, needed)?;
        Ok(())
    })
}

/// Creates a HyperLogLog from `eh_hll_serialize` bytes into `*out`. Bad magic,
/// version, length, register values or checksum: `EH_CORRUPT`, nothing created.
/// Bytes of format version 1 (written before the hash became Redis's) are refused
/// with `EH_CORRUPT` naming the version: their registers hash differently and
/// merging them would be wrong; rebuild such sketches from their items.
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

/// Writes the sketch as the value of a Redis HyperLogLog key into `buf` (capacity
/// `cap`): Redis's dense encoding, 12304 bytes (the 16-byte header `HYLL`, encoding
/// 0, three zero bytes, the cached cardinality marked stale; then 16384 six-bit
/// registers, LSB first). `SET key <bytes>` in Redis 7 and `PFCOUNT`, `PFADD` and
/// `PFMERGE` treat it as their own. `*needed` is always set; `buf` is written only
/// when `cap >= *needed` (the call succeeds either way: retry with a larger buffer).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_hll_to_redis(
    hll: *const eh_hll,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> eh_status {
    guard("eh_hll_to_redis", || {
        // SAFETY: per the module contract.
        let h = unsafe { handle(hll, "hll")? };
        let needed = out_arg(needed, "needed")?;
        let bytes = h.inner.read()?.to_redis();
        // SAFETY: `buf` per the contract; `needed` checked.
        super::copy_out(&bytes, buf, cap, needed)?;
        Ok(())
    })
}

/// Creates a HyperLogLog into `*out` from the value of a Redis HyperLogLog key (as
/// `GET` returns it): the dense or the sparse encoding of Redis 7, e.g. a key built
/// by `PFADD` or `PFMERGE`. The cached cardinality in the header is ignored. Anything
/// else (wrong magic, an unknown encoding byte, non-zero reserved bytes, a dense
/// value that is not exactly 12304 bytes or holds a register above 51, sparse opcodes
/// that do not cover exactly 16384 registers): `EH_CORRUPT` with a message naming the
/// problem, nothing created and `*out` unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_hll_from_redis(
    bytes: *const u8,
    len: usize,
    out: *mut *mut eh_hll,
) -> eh_status {
    guard("eh_hll_from_redis", || {
        let out = out_arg(out, "out")?;
        // SAFETY: per the module contract.
        let bytes = unsafe { bytes_arg(bytes, len, "bytes")? };
        let hll = Hll::from_redis(bytes)?;
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
        let raw = atfork::boxed(eh_cms {
            inner: Locked(RwLock::new(cms)),
        });
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, raw) };
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
    // SAFETY: created by `atfork::boxed` in `eh_cms_new`/`eh_cms_deserialize`;
    // freed once by contract.
    guard_free("eh_cms_free", || unsafe { atfork::free(cms) });
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
        super::copy_out(&bytes, buf, cap, needed)?;
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
        let raw = atfork::boxed(eh_cms {
            inner: Locked(RwLock::new(cms)),
        });
        // SAFETY: checked by `out_arg`.
        unsafe { write_out(out, raw) };
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
mod tests {
    use std::ffi::CStr;

    use super::*;
    use crate::ffi::{EH_CORRUPT, EH_INVALID_ARGUMENT, EH_OK, eh_last_error};
    use crate::sketch::hll::REDIS_DENSE_LEN;

    fn last_error() -> String {
        // SAFETY: eh_last_error returns a valid NUL-terminated thread-local string.
        unsafe { CStr::from_ptr(eh_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    fn new_hll(ids: impl IntoIterator<Item = String>) -> *mut eh_hll {
        let mut h = std::ptr::null_mut();
        // SAFETY: `h` is writable.
        assert_eq!(unsafe { eh_hll_new(&mut h) }, EH_OK);
        for id in ids {
            // SAFETY: `h` is live; `id` is readable for the call.
            assert_eq!(unsafe { eh_hll_add(h, id.as_ptr(), id.len()) }, EH_OK);
        }
        h
    }

    fn count(h: *const eh_hll) -> u64 {
        let mut n = 0;
        // SAFETY: `h` is live; `n` writable.
        assert_eq!(unsafe { eh_hll_count(h, &mut n) }, EH_OK);
        n
    }

    fn to_redis(h: *const eh_hll) -> Vec<u8> {
        let mut needed = 0;
        // SAFETY: NULL buffer with capacity 0 only asks for the size.
        let rc = unsafe { eh_hll_to_redis(h, std::ptr::null_mut(), 0, &mut needed) };
        assert_eq!(rc, EH_OK);
        assert_eq!(needed, REDIS_DENSE_LEN);
        // A buffer one byte short is left untouched.
        let mut short = vec![0xAAu8; needed - 1];
        // SAFETY: `short` has `short.len()` writable bytes.
        let rc = unsafe { eh_hll_to_redis(h, short.as_mut_ptr(), short.len(), &mut needed) };
        assert_eq!((rc, needed), (EH_OK, REDIS_DENSE_LEN));
        assert!(short.iter().all(|&b| b == 0xAA));
        let mut buf = vec![0u8; needed];
        // SAFETY: `buf` has `buf.len()` writable bytes.
        let rc = unsafe { eh_hll_to_redis(h, buf.as_mut_ptr(), buf.len(), &mut needed) };
        assert_eq!(rc, EH_OK);
        buf
    }

    /// `eh_hll_from_redis` of `bytes`: the status, and the handle if one was made
    /// (`out` starts as a sentinel that a failure must leave in place).
    fn from_redis(bytes: &[u8]) -> (eh_status, *mut eh_hll) {
        let sentinel = std::ptr::dangling_mut::<eh_hll>();
        let mut out = sentinel;
        // SAFETY: `bytes` is readable; `out` writable.
        let rc = unsafe { eh_hll_from_redis(bytes.as_ptr(), bytes.len(), &mut out) };
        if rc != EH_OK {
            assert_eq!(out, sentinel, "a failed call leaves *out alone");
        }
        (rc, out)
    }

    #[test]
    fn redis_bytes_round_trip_through_the_c_abi() {
        let h = new_hll((0..5000).map(|i| format!("{}", 100_000_000_000_000_000u64 + i)));
        let bytes = to_redis(h);
        assert_eq!(&bytes[..5], b"HYLL\x00");
        let (rc, back) = from_redis(&bytes);
        assert_eq!(rc, EH_OK);
        assert_eq!(count(back), count(h));
        assert_eq!(to_redis(back), bytes);
        // Sparse: the empty key Redis creates (XZERO 16384).
        let mut empty = b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        empty.extend_from_slice(&[0x7f, 0xff]);
        let (rc, e) = from_redis(&empty);
        assert_eq!(rc, EH_OK);
        assert_eq!(count(e), 0);
        // SAFETY: each handle is live and freed once.
        unsafe {
            eh_hll_free(h);
            eh_hll_free(back);
            eh_hll_free(e);
        }
    }

    #[test]
    fn corrupt_redis_bytes_are_eh_corrupt_with_a_message() {
        let h = new_hll((0..100).map(|i| format!("u{i}")));
        let good = to_redis(h);
        let mut magic = good.clone();
        magic[1] = b'X';
        let mut encoding = good.clone();
        encoding[4] = 2;
        let truncated = good[..good.len() - 1].to_vec();
        let mut overflow = b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        overflow.extend_from_slice(&[0x7f, 0xff, 0x80]);
        let mut dense_high = good.clone();
        dense_high[16] |= 0x3f; // register 0 = 63
        for (bytes, what) in [
            (&magic, "magic"),
            (&encoding, "encoding 2"),
            (&truncated, "truncated"),
            (&overflow, "more than 16384"),
            (&dense_high, "register 0 holds 63"),
            (&good[..3].to_vec(), "truncated"),
        ] {
            let (rc, _) = from_redis(bytes);
            assert_eq!(rc, EH_CORRUPT, "{what}");
            let msg = last_error();
            assert!(msg.contains(what), "{msg:?} lacks {what:?}");
        }
        // NULL arguments: EH_INVALID_ARGUMENT, not a crash.
        let mut out = std::ptr::null_mut();
        // SAFETY: NULL pointers are checked, not dereferenced.
        unsafe {
            assert_eq!(
                eh_hll_from_redis(std::ptr::null(), 5, &mut out),
                EH_INVALID_ARGUMENT
            );
            assert_eq!(
                eh_hll_from_redis(good.as_ptr(), good.len(), std::ptr::null_mut()),
                EH_INVALID_ARGUMENT
            );
            let mut needed = 0;
            let rc = eh_hll_to_redis(std::ptr::null(), std::ptr::null_mut(), 0, &mut needed);
            assert_eq!(rc, EH_INVALID_ARGUMENT);
            let rc = eh_hll_to_redis(h, std::ptr::null_mut(), 0, std::ptr::null_mut());
            assert_eq!(rc, EH_INVALID_ARGUMENT);
            // Zero-length input with NULL is the empty value: too short.
            assert_eq!(eh_hll_from_redis(std::ptr::null(), 0, &mut out), EH_CORRUPT);
            eh_hll_free(h);
        }
    }

    #[test]
    fn version_1_bytes_are_refused_naming_the_version() {
        let h = new_hll((0..100).map(|i| format!("u{i}")));
        let mut needed = 0;
        // SAFETY: size query, then a buffer of that size.
        let mut bytes = unsafe {
            assert_eq!(
                eh_hll_serialize(h, std::ptr::null_mut(), 0, &mut needed),
                EH_OK
            );
            let mut buf = vec![0u8; needed];
            assert_eq!(
                eh_hll_serialize(h, buf.as_mut_ptr(), needed, &mut needed),
                EH_OK
            );
            buf
        };
        assert_eq!(bytes[4], 2, "format version 2");
        bytes[4] = 1;
        let end = bytes.len() - 8;
        let sum = crate::sketch::hash::checksum(&bytes[..end]);
        bytes[end..].copy_from_slice(&sum.to_le_bytes());
        let mut out = std::ptr::null_mut();
        // SAFETY: `bytes` readable; `out` writable.
        let rc = unsafe { eh_hll_deserialize(bytes.as_ptr(), bytes.len(), &mut out) };
        assert_eq!(rc, EH_CORRUPT);
        assert!(out.is_null());
        assert!(last_error().contains("version 1"), "{}", last_error());
        // SAFETY: live handle, freed once.
        unsafe { eh_hll_free(h) };
    }
}
