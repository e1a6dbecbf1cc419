//! Fork (the gunicorn `--preload` pattern): a processor created before `fork()`
//! works in the child (rebuilt on first use: fresh workers and ring, callbacks
//! kept, counters and sketches empty), the parent is unaffected, and the child
//! exits cleanly without writing anything to stderr (no panic message).
//!
//! Its own test binary: the child of a fork has only the forking thread, so this
//! keeps other tests' threads out of the picture.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engagehub::pipeline::{Batch, EventIn, Processor, ProcessorConfig};

const WAIT: Duration = Duration::from_secs(60);

fn config() -> ProcessorConfig {
    ProcessorConfig {
        capacity: 1024,
        workers: 2,
        batch_size: 16,
        flush_interval: Duration::from_millis(10),
        ..ProcessorConfig::default()
    }
}

fn event(user: &str) -> EventIn<'_> {
    EventIn {
        kind: "message",
        user_id: user,
        channel_id: "general",
        guild_id: "",
        timestamp: 0,
        payload: b"",
    }
}

/// What the child checks; returns the exit status (0: all good, else the check
/// that failed). Never panics: a panic message on stderr is itself a failure.
fn in_child(p: &Arc<Processor>, idle: &Processor, delivered: &AtomicU64) -> i32 {
    // Closing an inherited processor never used in the child: no rebuild, no
    // join of threads that do not exist here, no panic.
    if idle.close().is_err() || idle.push(&event("late")).is_ok() {
        return 20;
    }
    let before = delivered.load(Ordering::SeqCst); // the parent's count, copied
    // Several threads make the first call at once: exactly one rebuilds.
    let pushers: Vec<_> = (0..4)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                (0..25).all(|i| p.push(&event(&format!("child-{t}-{i}"))).is_ok())
            })
        })
        .collect();
    for pusher in pushers {
        match pusher.join() {
            Ok(true) => {}
            _ => return 10,
        }
    }
    if p.flush(WAIT).is_err() {
        return 11;
    }
    if delivered.load(Ordering::SeqCst) != before + 100 {
        return 12;
    }
    match p.stats() {
        // Fresh counters: only the child's events.
        Ok(s) if s.accepted == 100 && s.delivered == 100 && s.queue_len == 0 => {}
        _ => return 13,
    }
    match p.unique_users(0, 0) {
        // Fresh sketches: the parent's users are not counted.
        Ok(n) if (95..=105).contains(&n) => {}
        _ => return 14,
    }
    if p.close().is_err() || !p.is_closed() {
        return 15;
    }
    0
}

#[test]
fn a_processor_created_before_fork_works_in_the_child() {
    let delivered = Arc::new(AtomicU64::new(0));
    let p = Arc::new(Processor::new(config()).unwrap());
    let idle = Processor::new(config()).unwrap();
    idle.push(&event("queued-in-the-parent")).unwrap();
    {
        let delivered = delivered.clone();
        p.set_flush_callback(Some(Arc::new(move |b: &mut Batch| {
            delivered.fetch_add(b.len() as u64, Ordering::SeqCst);
            Ok(())
        })))
        .unwrap();
    }
    for i in 0..50 {
        p.push(&event(&format!("parent-{i}"))).unwrap();
    }
    p.flush(WAIT).unwrap();
    assert_eq!(delivered.load(Ordering::SeqCst), 50);

    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only runs `in_child` (our library, std threads, atomics)
    // and leaves with `_exit`, skipping the test harness's teardown.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: plain descriptor calls in the child; stderr becomes the pipe.
        unsafe {
            libc::dup2(fds[1], 2);
            libc::close(fds[0]);
        }
        let status = in_child(&p, &idle, &delivered);
        // SAFETY: ends the child at once, as after any fork in a test.
        unsafe { libc::_exit(status) };
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };

    // The parent is unaffected, while the child runs.
    for i in 0..50 {
        p.push(&event(&format!("parent-late-{i}"))).unwrap();
    }
    p.flush(WAIT).unwrap();
    assert_eq!(delivered.load(Ordering::SeqCst), 100);

    let mut status = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        // SAFETY: waiting for our own child, without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "waitpid failed");
        if Instant::now() >= deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the child did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stderr = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into `buf` from the pipe's read end.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        stderr.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: closing the read end.
    unsafe { libc::close(fds[0]) };
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child check failed");
    assert_eq!(
        String::from_utf8_lossy(&stderr),
        "",
        "the child wrote to stderr"
    );

    p.close().unwrap();
    assert_eq!(delivered.load(Ordering::SeqCst), 100);
    // The parent's copy of `idle` is untouched by the child's close.
    idle.push(&event("still-open")).unwrap();
    assert_eq!(idle.stats().unwrap().accepted, 2);
    idle.close().unwrap();
}
