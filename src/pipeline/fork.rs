//! Fork detection: a process-wide fork generation, bumped in every forked child.
//!
//! Threads do not survive `fork()`: a processor inherited by a child (the gunicorn
//! `--preload` pattern: created in the parent, used in the workers) has a ring,
//! locks and counters copied from the parent but no worker threads. Each processor
//! records the generation its core was built in; a call that finds the generation
//! changed rebuilds the core (see `Processor`).

use std::sync::atomic::{AtomicU64, Ordering};

/// How many forks separate this process from the one that loaded the library.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// `pthread_atfork` child handler: runs in the child, on its only thread, before
/// `fork()` returns there. One atomic add: async-signal-safe, as it must be.
extern "C" fn in_child() {
    // Relaxed: the child has one thread now; every thread it starts later is
    // spawned after this store, and spawning synchronizes.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Registers the child handler; called once, when the library is loaded (see
/// `crate::atfork`: a lazy registration could leave a child forked during it stuck).
pub(crate) fn install() {
    // SAFETY: `in_child` is a valid `extern "C" fn()` that lives for the whole
    // program and only performs an atomic add. If registration fails (ENOMEM),
    // forks simply go unnoticed; nothing unsafe follows.
    unsafe {
        libc::pthread_atfork(None, None, Some(in_child));
    }
}

/// The current fork generation.
pub(crate) fn generation() -> u64 {
    // Relaxed: see `in_child`; within one process the value never changes after
    // its threads exist.
    GENERATION.load(Ordering::Relaxed)
}
