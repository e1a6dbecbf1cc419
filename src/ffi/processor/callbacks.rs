//! Flush and dead-letter callbacks from C: function pointers with user data.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::super::{eh_status, guard};
use super::{eh_processor, processor};
use crate::pipeline::{Batch, DeadLetterCallback, FlushCallback, RawEvent};

/// The flush callback: receives `n` events valid only during the call, on a worker
/// thread. Return 0 on success; anything else is a failure and the same batch is
/// offered again after the backoff, up to `max_retries` times, then dead-lettered.
///
/// It may call `eh_processor_push*` and the query functions on the same processor;
/// `eh_processor_flush`, `eh_processor_set_*_callback` and `eh_processor_close` on
/// the same processor return `EH_WOULD_DEADLOCK` and change nothing;
/// `eh_processor_free` hands the close to a reaper thread (see there).
///
/// Synchronous mode (`workers = EH_WORKERS_NONE`): the callback runs on the
/// thread that called `eh_processor_flush`, `eh_processor_flush_wait` or
/// `eh_processor_close`, inside that call; the same calls are refused with
/// `EH_WOULD_DEADLOCK`, and `eh_processor_free` must not be called from it (a
/// call on the handle is in progress).
pub type eh_flush_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, events: *const RawEvent, n: usize) -> i32>;

/// The dead-letter callback: a batch whose flush failed `max_retries + 1` times,
/// with the failure reason as a NUL-terminated string; everything valid only during
/// the call; runs on a worker thread under the same rules as `eh_flush_fn`.
pub type eh_dead_letter_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        events: *const RawEvent,
        n: usize,
        error: *const c_char,
    ),
>;

/// Releases a callback's `user_data`; called exactly once, after the last call of
/// the callback returned: when the callback is replaced (on the thread that
/// replaced it, or on the worker that was still using it), or when the processor
/// is closed (on the closing thread, or on the reaper thread of an
/// `eh_processor_free` made inside a callback). Not called for a call that
/// failed (the caller keeps `user_data`), nor, in a forked child, for callbacks
/// inherited from the parent (the parent owns them).
pub type eh_free_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// A C function pointer plus its user data; the finalizer runs once on drop,
/// unless disarmed (the registration failed: the caller keeps `data`).
struct UserData {
    data: *mut c_void,
    free: eh_free_fn,
    armed: AtomicBool,
}

impl UserData {
    fn new(data: *mut c_void, free: eh_free_fn) -> Self {
        UserData {
            data,
            free,
            armed: AtomicBool::new(true),
        }
    }

    fn disarm(&self) {
        // Relaxed: read by `drop`, which runs after every other owner let go (the
        // `Arc` drop synchronizes).
        self.armed.store(false, Ordering::Relaxed);
    }
}

// SAFETY: the header requires callbacks and their user data to be usable from the
// processor's worker threads (that is where they run), and the finalizer to be
// callable from any thread.
unsafe impl Send for UserData {}
// SAFETY: as above; the library never touches `data` itself, it only passes it on.
unsafe impl Sync for UserData {}

impl Drop for UserData {
    fn drop(&mut self) {
        if let Some(free) = self.free
            && self.armed.load(Ordering::Relaxed)
        {
            // SAFETY: the caller registered `free` for `data`; this runs once.
            unsafe { free(self.data) };
        }
    }
}

struct CFlush {
    f: unsafe extern "C" fn(*mut c_void, *const RawEvent, usize) -> i32,
    user: UserData,
}

impl FlushCallback for CFlush {
    fn on_flush(&self, batch: &mut Batch) -> std::result::Result<(), String> {
        let raw = batch.raw();
        // SAFETY: `f` is the registered callback; `raw` points into the batch, which
        // outlives the call; `user.data` is the caller's own pointer.
        let rc = unsafe { (self.f)(self.user.data, raw.as_ptr(), raw.len()) };
        match rc {
            0 => Ok(()),
            rc => Err(format!("flush callback returned {rc}")),
        }
    }
}

struct CDeadLetter {
    f: unsafe extern "C" fn(*mut c_void, *const RawEvent, usize, *const c_char),
    user: UserData,
}

impl DeadLetterCallback for CDeadLetter {
    fn on_dead_letter(&self, batch: &mut Batch, error: &str) {
        let raw = batch.raw();
        let error = std::ffi::CString::new(error.replace('\0', " ")).unwrap_or_default();
        // SAFETY: as for `CFlush`; `error` is a NUL-terminated string alive for the call.
        unsafe { (self.f)(self.user.data, raw.as_ptr(), raw.len(), error.as_ptr()) }
    }
}

/// Sets the flush callback (NULL `cb` removes it: batches are then discarded and
/// counted). `user_data_free`, if not NULL, is called exactly once with `user_data`
/// after the callback's last call (see `eh_free_fn`); with a NULL `cb` at once.
/// Batches already being delivered finish with the previous callback.
/// Errors (nothing changes and `user_data_free` is not called): from this
/// processor's own callback `EH_WOULD_DEADLOCK`; after close began `EH_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_set_flush_callback(
    p: *mut eh_processor,
    cb: eh_flush_fn,
    user_data: *mut c_void,
    user_data_free: eh_free_fn,
) -> eh_status {
    guard("eh_processor_set_flush_callback", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        let user = UserData::new(user_data, user_data_free);
        match cb {
            Some(f) => {
                let callback = Arc::new(CFlush { f, user });
                let result = processor.set_flush_callback(Some(callback.clone()));
                if result.is_err() {
                    // Not installed: user_data stays the caller's.
                    callback.user.disarm();
                }
                result
            }
            None => {
                let result = processor.set_flush_callback(None);
                if result.is_err() {
                    user.disarm();
                }
                // Otherwise nothing will use user_data: `user` finalizes it here.
                result
            }
        }
    })
}

/// Sets the dead-letter callback (NULL removes it; dead-lettered batches are then
/// only counted). Same `user_data` rules as `eh_processor_set_flush_callback`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eh_processor_set_dead_letter_callback(
    p: *mut eh_processor,
    cb: eh_dead_letter_fn,
    user_data: *mut c_void,
    user_data_free: eh_free_fn,
) -> eh_status {
    guard("eh_processor_set_dead_letter_callback", || {
        // SAFETY: per the module contract.
        let processor = unsafe { processor(p)? };
        let user = UserData::new(user_data, user_data_free);
        match cb {
            Some(f) => {
                let callback = Arc::new(CDeadLetter { f, user });
                let result = processor.set_dead_letter_callback(Some(callback.clone()));
                if result.is_err() {
                    callback.user.disarm();
                }
                result
            }
            None => {
                let result = processor.set_dead_letter_callback(None);
                if result.is_err() {
                    user.disarm();
                }
                result
            }
        }
    })
}
