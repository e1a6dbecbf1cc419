//! Structs that can grow: every config and stats struct of the C ABI starts with
//! `size_t struct_size`, which the caller sets to `sizeof` the struct as its header
//! declared it. Fields are only ever appended, so:
//!
//! * an input struct (a config) from an older caller is shorter: the fields it does
//!   not have take their defaults (as if 0); one from a newer caller is longer: it is
//!   accepted when every byte this library does not know is zero (the newer fields
//!   left at their defaults), and refused with `EH_INVALID_ARGUMENT` otherwise,
//!   rather than silently ignoring a setting (the Linux `openat2`/`clone3` rule);
//! * an output struct (stats) is written only up to the caller's size, and its
//!   `struct_size` is set to the number of bytes written.
//!
//! A `struct_size` smaller than the first version of the struct (in particular 0,
//! a struct the caller forgot to size) is `EH_INVALID_ARGUMENT`.

use crate::error::{Error, Result};

/// Implemented by the `#[repr(C)]` structs whose first field is
/// `struct_size: usize`.
///
/// # Safety
/// The implementing type is `#[repr(C)]`, `Copy`, valid for any bit pattern that
/// its fields accept when zeroed, and its first field is a `usize` named
/// `struct_size`.
pub(crate) unsafe trait Versioned: Copy + Default {
    /// Bytes of the first published version of the struct.
    const V1_SIZE: usize;
    /// The C name, for messages.
    const NAME: &'static str;
}

/// Implements [`Versioned`] for a `#[repr(C)]` struct of plain numbers whose first
/// field is `struct_size: usize`, and `Default` as all zeros with `struct_size` set
/// to this version's size (what a Rust caller of the C ABI wants).
/// `$first_new` names the first field appended after the struct's first version.
/// Without `$first_new`, the struct is in its first version.
macro_rules! versioned {
    ($ty:ident) => {
        $crate::ffi::sized::versioned!(@impl $ty, std::mem::size_of::<$ty>());
    };
    ($ty:ident, $first_new:ident) => {
        $crate::ffi::sized::versioned!(@impl $ty, std::mem::offset_of!($ty, $first_new));
    };
    (@impl $ty:ident, $v1:expr) => {
        // SAFETY: the struct is repr(C), Copy, made of plain numbers (valid when
        // zeroed), and starts with `struct_size: usize` (checked where it is
        // declared: this macro is invoked next to each declaration).
        unsafe impl $crate::ffi::sized::Versioned for $ty {
            const V1_SIZE: usize = $v1;
            const NAME: &'static str = stringify!($ty);
        }

        impl Default for $ty {
            fn default() -> Self {
                // SAFETY: plain numbers only, so all-zero bytes are a valid value.
                let mut value: Self = unsafe { std::mem::zeroed() };
                value.struct_size = std::mem::size_of::<Self>();
                value
            }
        }
    };
}
pub(crate) use versioned;

fn check_size<T: Versioned>(size: usize) -> Result<()> {
    if size < T::V1_SIZE {
        return Err(Error::invalid(format!(
            "{}.struct_size is {size}; set it to sizeof({}) (at least {})",
            T::NAME,
            T::NAME,
            T::V1_SIZE
        )));
    }
    if size > isize::MAX as usize {
        return Err(Error::invalid(format!(
            "{}.struct_size {size} is too large",
            T::NAME
        )));
    }
    Ok(())
}

/// Reads an input struct of the caller's size; NULL gives `None`.
///
/// # Safety
/// `ptr` is NULL or points to a readable struct of `(*ptr).struct_size` bytes.
pub(crate) unsafe fn read_sized<T: Versioned>(ptr: *const T) -> Result<Option<T>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL; every version of the struct starts with the size field, so
    // a `usize` is readable at `ptr` (the caller's contract).
    let size = unsafe { ptr.cast::<usize>().read_unaligned() };
    check_size::<T>(size)?;
    let ours = std::mem::size_of::<T>();
    // SAFETY: the caller guarantees `size` readable bytes at `ptr`.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), size) };
    if let Some(extra) = bytes.get(ours..) {
        if extra.iter().any(|&b| b != 0) {
            return Err(Error::invalid(format!(
                "{} sets fields this library version ({}) does not know: {} of its {size} bytes are beyond the {ours} known",
                T::NAME,
                env!("CARGO_PKG_VERSION"),
                size - ours
            )));
        }
    }
    let mut value = T::default();
    let known = size.min(ours);
    // SAFETY: `value` is a plain `#[repr(C)]` struct of `ours >= known` bytes, and
    // any bytes copied into its prefix are ones a caller's (older or equal) layout
    // of the same fields holds (trait contract); the ranges do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut value).cast::<u8>(), known);
    }
    Ok(Some(value))
}

/// Writes an output struct up to the caller's size (read from `(*out).struct_size`,
/// which must be set), then sets `struct_size` to the bytes written.
///
/// # Safety
/// `out` is non-NULL and points to a writable struct of `(*out).struct_size` bytes.
pub(crate) unsafe fn write_sized<T: Versioned>(out: *mut T, value: T) -> Result<()> {
    // SAFETY: non-NULL and at least the size field is there (caller's contract).
    let size = unsafe { out.cast::<usize>().read_unaligned() };
    check_size::<T>(size)?;
    let written = size.min(std::mem::size_of::<T>());
    // SAFETY: `value` is `size_of::<T>() >= written` bytes; the caller's struct has
    // room for `size >= written`; distinct objects.
    unsafe {
        std::ptr::copy_nonoverlapping((&raw const value).cast::<u8>(), out.cast::<u8>(), written);
        out.cast::<usize>().write_unaligned(written);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug, PartialEq)]
    struct V2 {
        struct_size: usize,
        a: u64,
        b: u64,
    }

    // SAFETY: repr(C), Copy, plain integers, `struct_size` first.
    unsafe impl Versioned for V2 {
        const V1_SIZE: usize = 16;
        const NAME: &'static str = "v2";
    }

    #[test]
    fn older_callers_get_defaults_and_newer_ones_are_checked() {
        // An older caller's struct: size field and `a` only.
        let old: [u64; 2] = [16, 7];
        // SAFETY (each call below): the arrays hold at least the size they declare.
        let v = unsafe { read_sized(old.as_ptr().cast::<V2>()) }
            .unwrap()
            .unwrap();
        assert_eq!((v.a, v.b), (7, 0));
        // A newer caller's: one more field, zero (accepted) or set (refused).
        let newer: [u64; 4] = [32, 1, 2, 0];
        // SAFETY: `newer` holds the 32 bytes it declares.
        let v = unsafe { read_sized(newer.as_ptr().cast::<V2>()) }
            .unwrap()
            .unwrap();
        assert_eq!((v.a, v.b), (1, 2));
        let newer: [u64; 4] = [32, 1, 2, 9];
        // SAFETY: as above.
        assert!(unsafe { read_sized(newer.as_ptr().cast::<V2>()) }.is_err());
        // Unsized (0) and too small: refused.
        for size in [0u64, 8] {
            let bad: [u64; 3] = [size, 1, 2];
            // SAFETY: `bad` has 24 readable bytes; the size is refused before more.
            assert!(unsafe { read_sized(bad.as_ptr().cast::<V2>()) }.is_err());
        }
        // SAFETY: NULL is allowed.
        assert_eq!(unsafe { read_sized::<V2>(std::ptr::null()) }, Ok(None));
    }

    #[test]
    fn outputs_stop_at_the_callers_size() {
        let mut old: [u64; 3] = [16, 0, 0xdead];
        let value = V2 {
            struct_size: 0,
            a: 5,
            b: 6,
        };
        // SAFETY: `old` has room for the 16 bytes it declares.
        unsafe { write_sized(old.as_mut_ptr().cast::<V2>(), value) }.unwrap();
        assert_eq!(old, [16, 5, 0xdead]);
        let mut same = V2 {
            struct_size: std::mem::size_of::<V2>(),
            ..V2::default()
        };
        // SAFETY: a whole V2.
        unsafe { write_sized(&raw mut same, value) }.unwrap();
        assert_eq!(
            same,
            V2 {
                struct_size: 24,
                a: 5,
                b: 6
            }
        );
    }
}
