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
use std::sync::atomic::{AtomicU8, Ordering};

thread_local! {
    /// Number of [`catch`]es running on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// "file:line" of the last panic caught silently on this thread.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The hook's state: 0 not installed, 1 being installed, 2 installed.
static HOOK: AtomicU8 = AtomicU8::new(0);

/// Installs the hook (once per process). The library's load-time constructor
/// calls it (`atfork::install`), before any thread of the program can use the
/// library; every [`catch`] calls it again, which then costs one load. It never
/// waits: a `Once` here would leave a child forked while another thread was
/// installing the hook stuck on it forever (seen in CI). A thread that finds the
/// hook being installed goes on without waiting for it.
pub(crate) fn install_hook() {
    if HOOK.load(Ordering::Acquire) == 2
        || HOOK
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
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
    HOOK.store(2, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_is_installed_at_load_and_a_catch_never_waits_for_it() {
        // The load-time constructor installed it before any test ran.
        assert_eq!(HOOK.load(Ordering::Acquire), 2);
        // A process forked while another thread was installing it sees "being
        // installed" forever: a catch must still run (and catch) at once.
        let saved = HOOK.swap(1, Ordering::AcqRel);
        let caught = catch(|| panic!("inside"));
        HOOK.store(saved, Ordering::Release);
        assert_eq!(caught.unwrap_err().message, "inside");
    }
}
