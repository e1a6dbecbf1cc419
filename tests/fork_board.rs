//! Fork while other threads use a leaderboard and a HyperLogLog: every child gets
//! them whole and unlocked (the library's `pthread_atfork` handlers hold their
//! locks across the fork), can update, drain and close the board, and never hangs;
//! the unpublished changes inherited from the parent are dropped in the child (the
//! parent publishes them).
//!
//! Its own test binary: the child of a fork has only the forking thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use engagehub::ffi::leaderboard::*;
use engagehub::ffi::sketch::*;
use engagehub::ffi::{EH_OK, eh_status};

const FORKS: usize = 60;
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

struct Board(*mut eh_leaderboard);
// SAFETY: the handle is documented as usable from several threads at once.
unsafe impl Send for Board {}
// SAFETY: as above.
unsafe impl Sync for Board {}

struct Sketch(*mut eh_hll);
// SAFETY: `eh_hll` is documented as usable from several threads at once.
unsafe impl Send for Sketch {}
// SAFETY: as above.
unsafe impl Sync for Sketch {}

fn add(board: &Board, user: &str, points: f64) -> eh_status {
    // SAFETY: a live handle and a (pointer, len) of valid UTF-8.
    unsafe { eh_leaderboard_add(board.0, user.as_ptr(), user.len(), points, 1_700_000_000) }
}

/// The ids of a drained batch, and frees it.
fn drain_ids(board: &Board) -> Option<Vec<String>> {
    let mut batch: eh_pending_batch = unsafe { std::mem::zeroed() };
    // SAFETY: a live handle and a writable out-param.
    if unsafe { eh_leaderboard_drain(board.0, &mut batch) } != EH_OK {
        return None;
    }
    let mut ids = Vec::new();
    for i in 0..batch.len {
        // SAFETY: `rows` holds `len` rows and each id lies inside the block.
        let row = unsafe { &*batch.rows.add(i) };
        let id = unsafe {
            std::slice::from_raw_parts(batch.ids.add(row.id_offset as usize), row.id_len as usize)
        };
        ids.push(String::from_utf8_lossy(id).into_owned());
    }
    // SAFETY: filled by `eh_leaderboard_drain` above.
    unsafe { eh_pending_batch_free(&mut batch) };
    Some(ids)
}

/// The child's checks; the exit status (0: all good). Never panics.
fn in_child(board: &Board, hll: &Sketch) -> i32 {
    // The parent's unpublished changes were dropped at the fork.
    if add(board, "child", 1.0) != EH_OK {
        return 10;
    }
    match drain_ids(board) {
        Some(ids) if ids == ["child"] => {}
        _ => return 11,
    }
    // SAFETY: a live handle; the item is a valid (pointer, len).
    if unsafe { eh_hll_add(hll.0, b"x".as_ptr(), 1) } != EH_OK {
        return 12;
    }
    // SAFETY: a live handle.
    if unsafe { eh_leaderboard_close(board.0) } != EH_OK {
        return 13;
    }
    0
}

#[test]
fn children_forked_while_threads_use_the_board_never_hang() {
    let config = eh_leaderboard_config {
        decay_factor: 0.95,
        decay_period_secs: 86400.0,
        ..Default::default()
    };
    let mut raw = std::ptr::null_mut();
    // SAFETY: a valid config and out-param.
    assert_eq!(unsafe { eh_leaderboard_new(&config, &mut raw) }, EH_OK);
    let board = Arc::new(Board(raw));
    // SAFETY: a live handle.
    assert_eq!(
        unsafe { eh_leaderboard_publish_enable(board.0, 1 << 20) },
        EH_OK
    );
    for i in 0..20_000 {
        assert_eq!(add(&board, &format!("user{i}"), (i % 97) as f64), EH_OK);
    }
    let mut hll = std::ptr::null_mut();
    // SAFETY: a valid out-param.
    assert_eq!(unsafe { eh_hll_new(&mut hll) }, EH_OK);
    let hll = Arc::new(Sketch(hll));

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    {
        // A reader holding the read lock most of the time.
        let (board, stop) = (board.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut ranking: eh_ranking = unsafe { std::mem::zeroed() };
                // SAFETY: a live handle and a writable out-param.
                if unsafe { eh_leaderboard_top(board.0, 0, 20_000, 0, &mut ranking) } == EH_OK {
                    // SAFETY: filled just above.
                    unsafe { eh_ranking_free(&mut ranking) };
                }
            }
        }));
    }
    {
        // An updater and a drainer (the publisher's part) taking the write lock.
        let (board, hll, stop) = (board.clone(), hll.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                add(&board, &format!("user{}", i % 5000), 1.0);
                // SAFETY: a live handle and a valid item.
                unsafe { eh_hll_add(hll.0, b"y".as_ptr(), 1) };
                if i % 1000 == 0 {
                    drain_ids(&board);
                }
                i += 1;
            }
        }));
    }

    for round in 0..FORKS {
        // SAFETY: the child only calls this library and then `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = in_child(&board, &hll);
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let deadline = Instant::now() + CHILD_DEADLINE;
        let mut status = 0;
        loop {
            // SAFETY: `pid` is our child; `status` is writable.
            let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if done == pid {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                // SAFETY: as above.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                stop.store(true, Ordering::Relaxed);
                panic!("fork {round}: the child hung for {CHILD_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            libc::WIFEXITED(status),
            "fork {round}: the child died: {status}"
        );
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "fork {round}: a check failed in the child"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a thread panicked");
    }
    // The parent's board is unaffected and still publishes its own changes.
    assert_eq!(add(&board, "parent", 1.0), EH_OK);
    assert!(
        drain_ids(&board)
            .expect("drain")
            .contains(&"parent".to_string())
    );
    // SAFETY: no other thread uses the handles any more.
    unsafe {
        eh_leaderboard_free(board.0);
        eh_hll_free(hll.0);
    }
}
