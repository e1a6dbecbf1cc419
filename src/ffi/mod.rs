//! The C ABI: the only module with `extern "C"`, raw pointers and the panic boundary.
//!
//! Conventions (see `include/engagehub.h`):
//! * every fallible function returns an [`eh_status`] and writes results through
//!   out-params, only on success;
//! * a failure also sets a thread-local message, read with [`eh_last_error`];
//! * strings cross as `(const uint8_t *ptr, size_t len)` UTF-8 and are copied before
//!   the call returns; `len == 0` allows `ptr == NULL`;
//! * no panic unwinds into C: each entry point runs its body through [`guard`].
//!
//! Safety contract of every `unsafe extern "C"` function here (stated once in the
//! header's preamble rather than on each function): handle arguments are NULL or
//! live handles from the matching `_new`; `(ptr, len)` arguments are NULL with
//! `len == 0` or point to `len` readable bytes; out-params are NULL or writable;
//! paths are NULL or NUL-terminated. Everything else is checked.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(non_camel_case_types, clippy::missing_safety_doc)]

pub mod leaderboard;
// After `leaderboard`, whose result types it shares.
pub mod board_group;
pub mod processor;
mod rows;
mod sized;
pub mod sketch;
// Last: its functions form the header's closing "For language bindings" section.
pub mod binding;

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString, c_char};
use std::path::Path;

use crate::error::{Error, Result};

/// Status code returned by every fallible function. `EH_OK` (0) is success, so
/// `if (rc)` tests for failure. Codes are never renumbered.
pub type eh_status = i32;

/// Success.
pub const EH_OK: eh_status = 0;
/// An argument was NULL, out of range, malformed or not valid UTF-8.
pub const EH_INVALID_ARGUMENT: eh_status = 1;
/// The named user (or other item) does not exist.
pub const EH_NOT_FOUND: eh_status = 2;
/// A bounded structure is full and the operation was refused (e.g. `max_users`).
pub const EH_FULL: eh_status = 3;
/// The event ring is full: the event was dropped and counted.
pub const EH_QUEUE_FULL: eh_status = 4;
/// An I/O operation failed (the message names the file and the OS error).
pub const EH_IO: eh_status = 5;
/// Serialized data (snapshot, sketch bytes) failed validation; nothing was changed.
pub const EH_CORRUPT: eh_status = 6;
/// The handle is shutting down or has shut down.
pub const EH_SHUT_DOWN: eh_status = 7;
/// A blocking call did not complete within its timeout.
pub const EH_TIMEOUT: eh_status = 8;
/// Refused because it would deadlock (e.g. flushing a processor from its own callback).
pub const EH_WOULD_DEADLOCK: eh_status = 9;
/// An earlier panic left the handle unusable; free it.
pub const EH_POISONED: eh_status = 10;
/// The library panicked inside this call (a bug); the message (`eh_last_error`)
/// says where. The panic is reported only there: nothing is printed to stderr.
pub const EH_PANIC: eh_status = 11;
/// A non-blocking call (e.g. `eh_leaderboard_try_add`) found the handle in use by
/// another thread and returned at once; nothing was done. Retry, or use the
/// blocking variant.
pub const EH_BUSY: eh_status = 12;

/// Library version, kept equal to Cargo.toml by a test.
pub const EH_VERSION_MAJOR: u32 = 0;
/// Library version, kept equal to Cargo.toml by a test.
pub const EH_VERSION_MINOR: u32 = 2;
/// Library version, kept equal to Cargo.toml by a test.
pub const EH_VERSION_PATCH: u32 = 0;
/// The header's version as one integer, `MAJOR * 1000000 + MINOR * 1000 + PATCH`;
/// compare it with [`eh_version_number`] to check the library a program loaded.
pub const EH_VERSION_NUMBER: u32 =
    EH_VERSION_MAJOR * 1_000_000 + EH_VERSION_MINOR * 1_000 + EH_VERSION_PATCH;

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };

fn status_of(err: &Error) -> eh_status {
    match err {
        Error::InvalidArgument(_) => EH_INVALID_ARGUMENT,
        Error::NotFound(_) => EH_NOT_FOUND,
        Error::Full(_) => EH_FULL,
        Error::QueueFull => EH_QUEUE_FULL,
        Error::Io(_) => EH_IO,
        Error::Corrupt(_) => EH_CORRUPT,
        Error::ShutDown | Error::Closed(_) => EH_SHUT_DOWN,
        Error::Timeout(_) => EH_TIMEOUT,
        Error::WouldDeadlock(_) => EH_WOULD_DEADLOCK,
        Error::Poisoned(_) => EH_POISONED,
        Error::Busy(_) => EH_BUSY,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
    /// The OS error number of the last failure, 0 if it had none.
    static LAST_ERRNO: Cell<i32> = const { Cell::new(0) };
}

/// Records `message` as this thread's last error (with no OS error number).
pub(crate) fn set_last_error(message: String) {
    // Interior NULs cannot be represented in a C string; replace them.
    let c = CString::new(message.replace('\0', "\u{FFFD}")).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = Some(c));
    LAST_ERRNO.with(|slot| slot.set(0));
}

/// Records `err` as the last error and returns its status.
pub(crate) fn fail(err: &Error) -> eh_status {
    set_last_error(err.to_string());
    if let Error::Io(io) = err {
        LAST_ERRNO.with(|slot| slot.set(io.errno.unwrap_or(0)));
    }
    status_of(err)
}

/// The panic boundary: runs `body`, turning an `Err` into its status and a panic
/// into `EH_PANIC` ("panic in <name>: <message>"), each with the last error set.
///
/// A caught panic is not printed (see [`crate::quiet_panic`]); its message and
/// location go to `eh_last_error` only.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Result<()>) -> eh_status {
    match crate::quiet_panic::catch(body) {
        Ok(Ok(())) => EH_OK,
        Ok(Err(err)) => fail(&err),
        Err(caught) => {
            set_last_error(format!("panic in {name}: {caught}"));
            EH_PANIC
        }
    }
}

/// Runs a destructor body, swallowing (but recording) a panic: `_free` returns void.
pub(crate) fn guard_free(name: &str, body: impl FnOnce()) {
    let _ = guard(name, || {
        body();
        Ok(())
    });
}

/// Borrows a UTF-8 string argument.
///
/// # Safety
/// `ptr` must be NULL or point to `len` readable bytes that stay valid and unchanged
/// for `'a`.
#[inline(always)]
pub(crate) unsafe fn str_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a str> {
    // SAFETY: forwarded from this function's contract.
    let bytes = unsafe { bytes_arg(ptr, len, what)? };
    // Ids and kinds are short and nearly always ASCII: a few word-wide loads beat
    // the general validator's setup (and `is_ascii`'s byte loop on short slices)
    // on every one of a push's strings.
    if is_ascii_short(bytes) {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    utf8_arg(bytes, what)
}

/// [`str_arg`] for text that is not all ASCII (out of line: rare for ids).
#[inline(never)]
fn utf8_arg<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes)
        .map_err(|e| Error::invalid(format!("{what} is not valid UTF-8 ({e})")))
}

/// Whether every byte is below 0x80, reading whole words (the last one overlapping
/// the previous when the length is not a multiple of 8), never outside `bytes`.
#[inline(always)]
fn is_ascii_short(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = bytes.len();
    let p = bytes.as_ptr();
    if n >= 8 {
        let mut acc = 0u64;
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`: the 8 bytes at `i` are inside `bytes`.
            acc |= unsafe { p.add(i).cast::<u64>().read_unaligned() };
            i += 8;
        }
        // SAFETY: `n >= 8`: the last 8 bytes are inside `bytes`.
        acc |= unsafe { p.add(n - 8).cast::<u64>().read_unaligned() };
        acc & HIGH == 0
    } else if n >= 4 {
        // SAFETY: `4 <= n < 8`: the first and the last 4 bytes are inside `bytes`.
        let acc = unsafe {
            p.cast::<u32>().read_unaligned() | p.add(n - 4).cast::<u32>().read_unaligned()
        };
        acc & 0x8080_8080 == 0
    } else {
        bytes.iter().fold(0u8, |acc, &b| acc | b) & 0x80 == 0
    }
}

/// Borrows a byte-string argument; `len == 0` allows NULL.
///
/// # Safety
/// `ptr` must be NULL or point to `len` readable bytes that stay valid and unchanged
/// for `'a`.
#[inline(always)]
pub(crate) unsafe fn bytes_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || len > isize::MAX as usize {
        return Err(bad_bytes_arg(ptr, len, what));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` readable bytes for `'a`;
    // `len <= isize::MAX` as `from_raw_parts` requires.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Why [`bytes_arg`] refused (out of line: every push inlines the checks).
#[cold]
#[inline(never)]
fn bad_bytes_arg(ptr: *const u8, len: usize, what: &str) -> Error {
    if ptr.is_null() {
        Error::invalid(format!("{what} is NULL but its length is {len}"))
    } else {
        Error::invalid(format!("{what} length {len} is too large"))
    }
}

/// Borrows a NUL-terminated path argument.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn path_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a Path> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(Path::new(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes)
            .map(Path::new)
            .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
    }
}

/// A journal's directory and sync mode from a config's `journal_path` (NULL: no
/// journal) and `journal_sync_ms` (0: every second; negative: every change).
///
/// # Safety
/// `path` is NULL or NUL-terminated.
pub(crate) unsafe fn journal_arg(
    path: *const c_char,
    sync_ms: i64,
) -> Result<Option<(std::path::PathBuf, crate::journal::SyncMode)>> {
    if path.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated per this function's contract.
    let dir = unsafe { path_arg(path, "journal_path")? }.to_path_buf();
    let sync = match sync_ms {
        0 => crate::journal::SyncMode::Interval(std::time::Duration::from_secs(1)),
        ms if ms < 0 => crate::journal::SyncMode::Always,
        ms => crate::journal::SyncMode::Interval(std::time::Duration::from_millis(ms as u64)),
    };
    Ok(Some((dir, sync)))
}

/// Copies `bytes` out: `*needed` gets their length; they go to `buf` when
/// `cap >= *needed` (and `buf` is not NULL then).
pub(crate) fn copy_out(
    bytes: impl AsRef<[u8]>,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> Result<()> {
    let bytes = bytes.as_ref();
    let needed = out_arg(needed, "needed")?;
    // SAFETY: checked non-NULL; writable per the caller's contract.
    unsafe { write_out(needed, bytes.len()) };
    if cap >= bytes.len() && !bytes.is_empty() {
        let buf = out_arg(buf, "buf")?;
        // SAFETY: `buf` has room for `cap >= bytes.len()` bytes (caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len()) };
    }
    Ok(())
}

/// Borrows a handle.
///
/// # Safety
/// `ptr` must be NULL or a live handle returned by the matching `_new`.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, what: &str) -> Result<&'a T> {
    // SAFETY: per the caller's contract a non-NULL pointer is a live, aligned `T`.
    unsafe { ptr.as_ref() }.ok_or_else(|| Error::invalid(format!("{what} is NULL")))
}

/// Checks an out-param is not NULL; the caller writes it only on success.
pub(crate) fn out_arg<T>(ptr: *mut T, what: &str) -> Result<*mut T> {
    if ptr.is_null() {
        Err(Error::invalid(format!("{what} (out-param) is NULL")))
    } else {
        Ok(ptr)
    }
}

/// Writes an out-param checked by [`out_arg`].
///
/// # Safety
/// `ptr` came from [`out_arg`] and points to writable memory for a `T`.
pub(crate) unsafe fn write_out<T>(ptr: *mut T, value: T) {
    // SAFETY: non-NULL (checked by `out_arg`) and writable per the caller's
    // contract; `write` does not drop the uninitialised old contents.
    unsafe { ptr.write(value) }
}

/// Names a status code: `"EH_OK"`, `"EH_QUEUE_FULL"`… Accepts any integer; unknown
/// codes give `"EH_UNKNOWN"`. The string is static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn eh_status_str(status: eh_status) -> *const c_char {
    let name: &'static CStr = match status {
        EH_OK => c"EH_OK",
        EH_INVALID_ARGUMENT => c"EH_INVALID_ARGUMENT",
        EH_NOT_FOUND => c"EH_NOT_FOUND",
        EH_FULL => c"EH_FULL",
        EH_QUEUE_FULL => c"EH_QUEUE_FULL",
        EH_IO => c"EH_IO",
        EH_CORRUPT => c"EH_CORRUPT",
        EH_SHUT_DOWN => c"EH_SHUT_DOWN",
        EH_TIMEOUT => c"EH_TIMEOUT",
        EH_WOULD_DEADLOCK => c"EH_WOULD_DEADLOCK",
        EH_POISONED => c"EH_POISONED",
        EH_PANIC => c"EH_PANIC",
        EH_BUSY => c"EH_BUSY",
        _ => c"EH_UNKNOWN",
    };
    name.as_ptr()
}

/// The message of the last failed call on the calling thread ("" if none).
///
/// Read it on the same thread straight after the failing call: the next failing
/// call replaces it. The pointer stays valid until then; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn eh_last_error() -> *const c_char {
    LAST_ERROR.with(|slot| match &*slot.borrow() {
        Some(message) => message.as_ptr(),
        None => c"".as_ptr(),
    })
}

/// The loaded library's version as one integer, `MAJOR * 1000000 + MINOR * 1000 +
/// PATCH` (e.g. 1002003 for 1.2.3): `eh_version_number() >= EH_VERSION_NUMBER`
/// checks at run time that the library is at least as new as the header a program
/// was compiled against.
#[unsafe(no_mangle)]
pub extern "C" fn eh_version_number() -> u32 {
    EH_VERSION_NUMBER
}

/// The OS error number (`errno`, e.g. `ENOENT`) behind the last failed call on the
/// calling thread, when that call failed with `EH_IO` because of an operating-system
/// error; 0 otherwise (success does not reset it, like `eh_last_error`). Read it on
/// the same thread straight after the failing call, as `eh_last_error`. The file
/// concerned is the path the caller passed (its temp file for a save), and the
/// message names it too.
#[unsafe(no_mangle)]
pub extern "C" fn eh_last_error_errno() -> i32 {
    LAST_ERRNO.with(Cell::get)
}

/// The library version as "MAJOR.MINOR.PATCH" (static; never free it).
#[unsafe(no_mangle)]
pub extern "C" fn eh_version() -> *const c_char {
    VERSION.as_ptr()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_short_ascii_check_agrees_with_std_at_every_length_and_position() {
        for len in 0..40 {
            let clean = vec![b'a'; len];
            assert!(super::is_ascii_short(&clean), "{len}");
            for at in 0..len {
                let mut dirty = clean.clone();
                dirty[at] = 0x80 | (at as u8);
                assert!(!super::is_ascii_short(&dirty), "{len} {at}");
                assert_eq!(super::is_ascii_short(&dirty), dirty.is_ascii());
            }
        }
    }

    use super::*;

    #[test]
    fn version_matches_cargo() {
        let cargo = env!("CARGO_PKG_VERSION");
        assert_eq!(VERSION.to_str().ok(), Some(cargo));
        let parts: Vec<u32> = cargo.split('.').filter_map(|p| p.parse().ok()).collect();
        assert_eq!(
            parts,
            [EH_VERSION_MAJOR, EH_VERSION_MINOR, EH_VERSION_PATCH]
        );
    }

    #[test]
    fn guard_maps_errors_and_panics() {
        assert_eq!(guard("f", || Ok(())), EH_OK);
        assert_eq!(
            guard("f", || Err(Error::invalid("bad x"))),
            EH_INVALID_ARGUMENT
        );
        // SAFETY: eh_last_error returns a valid NUL-terminated thread-local string.
        let msg = unsafe { CStr::from_ptr(eh_last_error()) }
            .to_string_lossy()
            .into_owned();
        assert_eq!(msg, "invalid argument: bad x");
        #[allow(clippy::panic)]
        let rc = guard("eh_boom", || panic!("kaboom"));
        assert_eq!(rc, EH_PANIC);
        // SAFETY: as above.
        let msg = unsafe { CStr::from_ptr(eh_last_error()) }
            .to_string_lossy()
            .into_owned();
        assert!(
            msg.starts_with("panic in eh_boom: kaboom (at src/ffi/mod.rs:"),
            "{msg}"
        );
        assert_eq!(eh_last_error_errno(), 0);
    }

    /// Run as a child of `caught_panics_are_not_printed` (which checks its stderr).
    #[test]
    fn panic_child() {
        if std::env::var_os("EH_PANIC_CHILD").is_none() {
            return;
        }
        #[allow(clippy::panic)]
        let rc = guard("eh_boom", || panic!("kaboom-in-guard"));
        assert_eq!(rc, EH_PANIC);
        eprintln!("child: guard returned");
        // Outside a guard, panics still reach the previous (default) hook.
        #[allow(clippy::panic)]
        let outside = std::thread::spawn(|| panic!("kaboom-outside")).join();
        assert!(outside.is_err());
    }

    #[test]
    fn caught_panics_are_not_printed() {
        let exe = std::env::current_exe();
        assert!(exe.is_ok());
        let Ok(exe) = exe else { return };
        let out = std::process::Command::new(exe)
            .args(["--exact", "ffi::tests::panic_child", "--nocapture"])
            .env("EH_PANIC_CHILD", "1")
            .output();
        assert!(out.is_ok());
        let Ok(out) = out else { return };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("child: guard returned"), "{stderr}");
        assert!(!stderr.contains("kaboom-in-guard"), "{stderr}");
        assert!(stderr.contains("kaboom-outside"), "{stderr}");
    }

    #[test]
    fn io_failures_carry_the_os_error_number() {
        let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
        let rc = guard("f", || Err(Error::io("reading /nowhere/x.json", missing)));
        assert_eq!(rc, EH_IO);
        assert_eq!(eh_last_error_errno(), libc::ENOENT);
        // SAFETY: eh_last_error returns a valid NUL-terminated thread-local string.
        let msg = unsafe { CStr::from_ptr(eh_last_error()) }.to_string_lossy();
        assert!(
            msg.starts_with("I/O error: reading /nowhere/x.json: "),
            "{msg}"
        );
        // A failure without an OS error resets it.
        assert_eq!(guard("f", || Err(Error::invalid("x"))), EH_INVALID_ARGUMENT);
        assert_eq!(eh_last_error_errno(), 0);
    }

    #[test]
    fn every_status_has_a_name() {
        for code in EH_OK..=EH_BUSY {
            // SAFETY: eh_status_str returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(eh_status_str(code)) }
                .to_str()
                .unwrap_or("");
            assert!(
                name.starts_with("EH_") && name != "EH_UNKNOWN",
                "{code}: {name}"
            );
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(eh_status_str(-7)) };
        assert_eq!(unknown.to_str().ok(), Some("EH_UNKNOWN"));
    }

    #[test]
    fn string_args_are_checked() {
        // SAFETY: pointers and lengths describe the given slices or are NULL/0.
        unsafe {
            assert_eq!(str_arg(std::ptr::null(), 0, "s").ok(), Some(""));
            assert!(matches!(
                str_arg(std::ptr::null(), 3, "s"),
                Err(Error::InvalidArgument(_))
            ));
            let bad = [0xffu8, 0xfe];
            let err = str_arg(bad.as_ptr(), 2, "user_id").err();
            assert!(
                matches!(&err, Some(Error::InvalidArgument(m)) if m.contains("user_id is not valid UTF-8"))
            );
            let ok = "héllo";
            assert_eq!(str_arg(ok.as_ptr(), ok.len(), "s").ok(), Some(ok));
        }
    }
}
