//! Fork safety for the handles that guard their data with a lock (leaderboards,
//! HyperLogLogs, Count-Min sketches), and for journals (whose files belong to the
//! parent).
//!
//! `fork()` copies the process with only the calling thread. A lock another thread
//! held at that moment would stay held forever in the child, over data that thread
//! may have left half written. glibc's `malloc` has the same problem and the same
//! cure, used here: a `pthread_atfork` *prepare* handler takes the lock of every live
//! handle before the fork (waiting for the calls in progress, each of which is
//! bounded: no call waits for anything else while it holds its handle's lock), and
//! the *parent* and *child* handlers release them. The child therefore inherits every
//! handle whole and unlocked, whatever the other threads were doing, and no lock is
//! ever taken in a language binding's own at-fork hook.
//!
//! The processor does not need this: its workers cannot survive a fork anyway, and it
//! rebuilds itself in the child on first use (`pipeline::fork`).
//!
//! Handles register in their constructor and unregister in their `_free`, under the
//! registry's mutex, which the prepare handler holds until the fork is over: a handle
//! cannot be freed while the fork handlers hold its lock.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A handle whose lock the fork handlers take.
pub(crate) trait ForkGuarded: Sync {
    /// Takes the handle's lock (waiting for calls in progress) and returns the hold,
    /// which releases it when dropped.
    fn hold_for_fork(&'static self) -> Box<dyn ForkHold>;
}

/// A lock held across `fork()`.
pub(crate) trait ForkHold {
    /// Runs in the child, on its only thread, while the lock is still held.
    fn in_child(&mut self) {}
}

/// A registered handle: its address and a fat pointer to it.
struct Registered(*const dyn ForkGuarded);

// SAFETY: the pointer is only dereferenced by the fork handlers while the registry's
// mutex is held, and `ForkGuarded: Sync` makes the referent usable from any thread.
unsafe impl Send for Registered {}

/// Live handles by address.
static REGISTRY: Mutex<BTreeMap<usize, Registered>> = Mutex::new(BTreeMap::new());

/// Installs every fork handler of the library (these and the processor's, see
/// `pipeline::fork`) and the quiet panic hook when the library is loaded, before any thread of the program
/// can use it: registering lazily, from a `Once`, would leave a child forked while
/// another thread was registering stuck on that `Once` forever.
#[used]
#[unsafe(link_section = ".init_array")]
static INSTALL_AT_LOAD: extern "C" fn() = install;

/// Keeps [`INSTALL_AT_LOAD`] (and so its `.init_array` entry) in every program
/// that uses a handle: a static library's object that nothing references would be
/// left out by the linker. Does nothing at run time.
pub(crate) fn keep_installed() {
    std::hint::black_box(&INSTALL_AT_LOAD);
}

extern "C" fn install() {
    // SAFETY: three valid `extern "C" fn()` that live for the whole program. If
    // registration fails (ENOMEM) forks go unprotected, as without these handlers;
    // nothing unsafe follows from that here.
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
    }
    crate::pipeline::install_fork_watch();
    // The panic hook too: installed lazily by a first call, it could be half
    // installed by another thread when a host forks.
    crate::quiet_panic::install_hook();
}

/// What the prepare handler took; released by the parent or child handler.
struct Held {
    // Fields drop in declaration order: the handles' locks, then the saves' list,
    // then the registry's.
    holds: Vec<Box<dyn ForkHold>>,
    _saves: MutexGuard<'static, Vec<std::path::PathBuf>>,
    _registry: MutexGuard<'static, BTreeMap<usize, Registered>>,
}

thread_local! {
    /// Set by `prepare` and taken by `parent`/`child`, all three on the forking thread.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

fn registry() -> MutexGuard<'static, BTreeMap<usize, Registered>> {
    // Nothing panics while holding it; a poisoned registry is still consistent.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

extern "C" fn prepare() {
    let registry = registry();
    let holds = registry
        .values()
        // SAFETY: a registered pointer stays valid until `unregister`, which needs the
        // registry's mutex that this thread holds until `parent`/`child` release it.
        .map(|h| unsafe { &*h.0 }.hold_for_fork())
        .collect();
    // Last: a save holds it only for its bookkeeping, never while it waits for a
    // handle (see `leaderboard::snapshot`).
    let saves = crate::leaderboard::snapshot::hold_saves_for_fork();
    let held = Held {
        holds,
        _saves: saves,
        _registry: registry,
    };
    // `try_with` fails only while this thread's locals are being destroyed (a fork
    // from a thread-local destructor): the hold is then dropped here, and the fork
    // goes ahead unprotected, as it did before these handlers existed.
    let _ = HELD.try_with(|h| *h.borrow_mut() = Some(held));
}

extern "C" fn parent() {
    let _ = HELD.try_with(|h| drop(h.borrow_mut().take()));
}

extern "C" fn child() {
    let _ = HELD.try_with(|h| {
        if let Some(mut held) = h.borrow_mut().take() {
            for hold in &mut held.holds {
                hold.in_child();
            }
        }
    });
}

/// Registers `handle`. Call right after the handle is boxed, before it is handed
/// to the caller.
pub(crate) fn register(handle: *const dyn ForkGuarded) {
    keep_installed();
    registry().insert(handle as *const () as usize, Registered(handle));
}

/// Makes a shared handle with `make` and registers it, all under the registry's
/// lock: no fork happens between the two (the prepare handler takes that lock).
pub(crate) fn register_with<T: ForkGuarded + 'static>(
    make: impl FnOnce() -> crate::error::Result<std::sync::Arc<T>>,
) -> crate::error::Result<std::sync::Arc<T>> {
    keep_installed();
    let mut registry = registry();
    let handle = make()?;
    let ptr = std::sync::Arc::as_ptr(&handle);
    registry.insert(
        ptr as *const () as usize,
        Registered(ptr as *const dyn ForkGuarded),
    );
    Ok(handle)
}

/// Unregisters the handle at `address`; call in `_free` before the handle is
/// dropped (and while no lock of the handle is held by this thread).
pub(crate) fn unregister(address: *const ()) {
    registry().remove(&(address as usize));
}

/// Boxes `handle` for C and registers it: the constructors' one way out.
pub(crate) fn boxed<T: ForkGuarded + 'static>(handle: T) -> *mut T {
    let raw = Box::into_raw(Box::new(handle));
    register(raw as *const T as *const dyn ForkGuarded);
    raw
}

/// Unregisters and drops a handle made by [`boxed`].
///
/// # Safety
/// `raw` came from [`boxed`] and no other reference to it is used during or after
/// this call.
pub(crate) unsafe fn free<T: ForkGuarded + 'static>(raw: *mut T) {
    unregister(raw as *const ());
    // SAFETY: per this function's contract, `raw` is the unique owner from
    // `Box::into_raw` in `boxed`, and it is now out of the registry.
    drop(unsafe { Box::from_raw(raw) });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static TAKEN: AtomicUsize = AtomicUsize::new(0);
    static IN_CHILD: AtomicUsize = AtomicUsize::new(0);
    static RELEASED: AtomicUsize = AtomicUsize::new(0);

    struct Probe;
    struct ProbeHold;
    impl ForkGuarded for Probe {
        fn hold_for_fork(&'static self) -> Box<dyn ForkHold> {
            TAKEN.fetch_add(1, Ordering::SeqCst);
            Box::new(ProbeHold)
        }
    }
    impl ForkHold for ProbeHold {
        fn in_child(&mut self) {
            IN_CHILD.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Drop for ProbeHold {
        fn drop(&mut self) {
            RELEASED.fetch_add(1, Ordering::SeqCst);
        }
    }

    static PROBE: Probe = Probe;

    /// The tests here call the handlers themselves: one at a time (the probe's
    /// counts are shared).
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn handlers_hold_every_registered_handle_and_release_it() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let p: &'static dyn ForkGuarded = &PROBE;
        register(p);
        prepare();
        assert_eq!(TAKEN.load(Ordering::SeqCst), 1);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 0);
        child();
        assert_eq!(IN_CHILD.load(Ordering::SeqCst), 1);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 1);
        prepare();
        parent();
        assert_eq!(
            IN_CHILD.load(Ordering::SeqCst),
            1,
            "the parent handler is not the child's"
        );
        assert_eq!(RELEASED.load(Ordering::SeqCst), 2);
        unregister(p as *const dyn ForkGuarded as *const ());
        prepare();
        parent();
        assert_eq!(
            TAKEN.load(Ordering::SeqCst),
            2,
            "an unregistered handle is left alone"
        );
    }

    /// Whether another thread can take the snapshot saves' list: `once` tries
    /// once; otherwise it keeps trying for up to 5 s (other tests' saves hold it
    /// for moments).
    fn saves_free(once: bool) -> bool {
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                if crate::leaderboard::snapshot::saves_list_try_lock_for_tests().is_some() {
                    return true;
                }
                if once || std::time::Instant::now() > deadline {
                    return false;
                }
                std::thread::yield_now();
            }
        })
        .join()
        .unwrap()
    }

    #[test]
    fn the_snapshot_saves_list_is_held_across_a_fork() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(saves_free(false));
        prepare();
        // Held by this thread: no other thread gets it, not even once.
        assert!(!saves_free(true), "held from prepare on");
        child();
        assert!(saves_free(false), "released in the child");
        prepare();
        parent();
        assert!(saves_free(false), "released in the parent");
    }
}
