//! Catching panics without printing them: a library must not write to its host's
//! stderr. Every place that catches a panic (the C ABI's entry points, the worker
//! threads, the callbacks they run) goes through [`catch`], which reports the panic
//! to its caller (and, through it, to `eh_last_error` or the processor's poison
//! message) instead.
//!
//! A panic hook, installed once per process, stays silent while a [`catch`] runs on
//! the panicking thread and remembers where the panic happened; every other panic
//! (outside the library, or in a host's own Rust code) goes to the hook that was
//! installed before, unchanged.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    /// Number of [`catch`]es running on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// "file:line" of the last panic caught silently on this thread.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) > 0 {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                LOCATION.with(|slot| *slot.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

/// Counts a running [`catch`] on this thread for as long as it lives.
struct Depth;

impl Depth {
    fn enter() -> Self {
        DEPTH.with(|depth| depth.set(depth.get().saturating_add(1)));
        Depth
    }
}

impl Drop for Depth {
    fn drop(&mut self) {
        DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// A caught panic: its message and where it happened.
#[derive(Debug)]
pub(crate) struct Caught {
    /// The panic's message (or a note that its payload was not a string).
    pub message: String,
    /// " (at file:line)" when known, else "".
    pub location: String,
}

impl std::fmt::Display for Caught {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.message, self.location)
    }
}

fn message_of(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs `f`, catching a panic without printing it.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    install_hook();
    let depth = Depth::enter();
    let outcome = catch_unwind(AssertUnwindSafe(f));
    drop(depth);
    outcome.map_err(|payload| Caught {
        message: message_of(payload.as_ref()),
        location: LOCATION
            .with(|slot| slot.borrow_mut().take())
            .map(|l| format!(" (at {l})"))
            .unwrap_or_default(),
    })
}
