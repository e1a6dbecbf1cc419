//! A leaderboard on a journal, through the C ABI: a clean close reopens exactly; a
//! kill -9 at any point loses no update that returned and applies none twice; one
//! handle per journal; a torn tail is truncated and counted; another format version
//! or other settings are refused; a full disk fails the update with EH_IO and
//! changes nothing; the log is folded into checkpoints while updates go on.
//!
//! Its own test binary: it forks.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engagehub::ffi::leaderboard::*;
use engagehub::ffi::{EH_BUSY, EH_CORRUPT, EH_INVALID_ARGUMENT, EH_IO, EH_OK, eh_status};

const T0: i64 = 1_700_000_000;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eh-jb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

struct Board(*mut eh_leaderboard);

impl Drop for Board {
    fn drop(&mut self) {
        // SAFETY: a live handle from eh_leaderboard_new, freed once.
        unsafe { eh_leaderboard_free(self.0) };
    }
}

fn open_with(dir: &Path, decay: f64, sync_ms: i64) -> Result<Board, eh_status> {
    let path = CString::new(dir.to_str().expect("utf-8 path")).expect("no NUL");
    let config = eh_leaderboard_config {
        decay_factor: decay,
        decay_period_secs: 60.0,
        journal_path: path.as_ptr(),
        journal_sync_ms: sync_ms,
        ..Default::default()
    };
    let mut raw = std::ptr::null_mut();
    // SAFETY: a valid config and out-param; the path outlives the call.
    match unsafe { eh_leaderboard_new(&config, &mut raw) } {
        EH_OK => Ok(Board(raw)),
        rc => Err(rc),
    }
}

fn open(dir: &Path) -> Board {
    match open_with(dir, 0.5, 0) {
        Ok(b) => b,
        Err(rc) => {
            // SAFETY: a NUL-terminated thread-local message.
            let msg = unsafe { std::ffi::CStr::from_ptr(engagehub::ffi::eh_last_error()) };
            panic!("opening the journal: {rc} {msg:?}")
        }
    }
}

fn add(b: &Board, user: &str, points: f64, ts: i64) -> eh_status {
    // SAFETY: a live handle and a (pointer, len) of valid UTF-8.
    unsafe { eh_leaderboard_add(b.0, user.as_ptr(), user.len(), points, ts) }
}

/// The whole board as (id, score bits, last update), best first, scores read at
/// the newest timestamp.
fn contents(b: &Board) -> Vec<(String, u64, i64)> {
    let mut ranking: eh_ranking = unsafe { std::mem::zeroed() };
    let now = stats(b).landmark.max(T0) + 600;
    // SAFETY: a live handle and a writable out-param.
    assert_eq!(
        unsafe { eh_leaderboard_top(b.0, 0, 1 << 20, now, &mut ranking) },
        EH_OK
    );
    let mut out = Vec::new();
    for i in 0..ranking.len {
        // SAFETY: `rows` holds `len` rows whose ids lie inside the block.
        let row = unsafe { &*ranking.rows.add(i) };
        let id = unsafe {
            std::slice::from_raw_parts(ranking.ids.add(row.id_offset as usize), row.id_len as usize)
        };
        out.push((
            String::from_utf8_lossy(id).into_owned(),
            row.score.to_bits(),
            row.last_update,
        ));
    }
    // SAFETY: filled above.
    unsafe { eh_ranking_free(&mut ranking) };
    out
}

fn stats(b: &Board) -> eh_leaderboard_stats {
    let mut s = eh_leaderboard_stats::default();
    // SAFETY: a live handle and a sized out-param.
    assert_eq!(unsafe { eh_leaderboard_get_stats(b.0, &mut s) }, EH_OK);
    s
}

/// Update `i` of every workload: users repeat, timestamps climb (rebases happen),
/// some sets.
fn update(b: &Board, i: u64) -> eh_status {
    let user = format!("u{}", (i * 7919) % 500);
    let ts = T0 + (i as i64) * 3;
    if i % 13 == 0 {
        let user = user.as_str();
        // SAFETY: as in `add`.
        unsafe { eh_leaderboard_set(b.0, user.as_ptr(), user.len(), (i % 50) as f64, ts) }
    } else {
        add(b, &user, 1.0 + (i % 7) as f64, ts)
    }
}

fn reference(n: u64) -> Vec<(String, u64, i64)> {
    let mut raw = std::ptr::null_mut();
    let config = eh_leaderboard_config {
        decay_factor: 0.5,
        decay_period_secs: 60.0,
        ..Default::default()
    };
    // SAFETY: a valid config and out-param.
    assert_eq!(unsafe { eh_leaderboard_new(&config, &mut raw) }, EH_OK);
    let b = Board(raw);
    for i in 0..n {
        assert_eq!(update(&b, i), EH_OK);
    }
    contents(&b)
}

#[test]
fn a_clean_close_reopens_exactly() {
    let dir = tmp("clean");
    {
        let b = open(&dir);
        for i in 0..20_000 {
            assert_eq!(update(&b, i), EH_OK);
        }
        assert!(stats(&b).rebases > 0);
    }
    let b = open(&dir);
    assert_eq!(contents(&b), reference(20_000));
    assert_eq!(stats(&b).journal_torn, 0);
    // And it goes on from there.
    for i in 20_000..21_000 {
        assert_eq!(update(&b, i), EH_OK);
    }
    drop(b);
    assert_eq!(contents(&open(&dir)), reference(21_000));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn kill_9_at_random_points_loses_nothing_that_returned_and_doubles_nothing() {
    let dir = tmp("kill");
    let mut done = 0u64; // updates that returned, over every run
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for run in 0..12 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = 200 + rng % 3000;
        let mut fds = [0; 2];
        // SAFETY: a valid array for pipe's two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only uses the library and raw syscalls, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: closing our copy of the read end.
            unsafe { libc::close(fds[0]) };
            let Ok(b) = open_with(&dir, 0.5, 0) else {
                // SAFETY: ends the child.
                unsafe { libc::_exit(3) };
            };
            let mut i = done;
            loop {
                if update(&b, i) != EH_OK {
                    // SAFETY: ends the child.
                    unsafe { libc::_exit(4) };
                }
                i += 1;
                // One byte per update that returned.
                // SAFETY: a valid descriptor and one byte.
                unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) };
            }
        }
        // SAFETY: closing the parent's copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut returned = 0u64;
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a valid buffer.
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            assert!(n > 0, "run {run}: the child died early");
            returned += n as u64;
            if returned >= kill_after {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break;
            }
        }
        loop {
            // What it wrote before it died is still in the pipe.
            // SAFETY: as above.
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            returned += n as u64;
        }
        let mut status = 0;
        // SAFETY: our own child.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
            libc::close(fds[0]);
        }
        assert!(
            libc::WIFSIGNALED(status),
            "run {run}: the child exited on its own: {status}"
        );
        let b = open(&dir);
        let got = contents(&b);
        // The update in flight at the kill may or may not have been logged.
        let total = done + returned;
        let exact = got == reference(total);
        let one_more = !exact && got == reference(total + 1);
        assert!(
            exact || one_more,
            "run {run}: the board is not the {total} updates that returned"
        );
        done = total + u64::from(one_more);
        drop(b);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn one_handle_per_journal_and_foreign_journals_are_refused() {
    let dir = tmp("refuse");
    let b = open(&dir);
    assert_eq!(update(&b, 0), EH_OK);
    assert_eq!(open_with(&dir, 0.5, 0).err(), Some(EH_BUSY));
    drop(b);
    // Other decay settings: refused, the message naming them. (A child another
    // test forks copies the lock's descriptor until its fork handler closes it:
    // the journal reads as busy for that moment, so wait it out.)
    assert_eq!(open_unless_busy(&dir, 0.9).err(), Some(EH_INVALID_ARGUMENT));
    // SAFETY: a NUL-terminated thread-local message.
    let msg = unsafe { std::ffi::CStr::from_ptr(engagehub::ffi::eh_last_error()) };
    assert!(
        msg.to_string_lossy()
            .contains("decay_factor: journal 0.5, this handle 0.9"),
        "{msg:?}"
    );
    // Another format version.
    let path = dir.join("checkpoint");
    let mut bytes = std::fs::read(&path).expect("checkpoint");
    bytes[8] = 42;
    std::fs::write(&path, &bytes).expect("write");
    assert_eq!(open_unless_busy(&dir, 0.5).err(), Some(EH_CORRUPT));
    std::fs::remove_dir_all(&dir).ok();
}

/// `open_with(dir, decay, 0)`, tried again while it finds the journal busy (up to
/// 10 s): a fork by a concurrent test holds a copy of the lock for a moment.
fn open_unless_busy(dir: &Path, decay: f64) -> Result<Board, eh_status> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open_with(dir, decay, 0) {
            Err(EH_BUSY) if std::time::Instant::now() < deadline => std::thread::yield_now(),
            other => return other,
        }
    }
}

#[test]
fn a_torn_tail_is_truncated_and_counted() {
    let dir = tmp("torn");
    {
        let b = open(&dir);
        for i in 0..100 {
            assert_eq!(update(&b, i), EH_OK);
        }
    }
    // A clean close folded everything into the checkpoint; now a child logs 10
    // more and dies without closing, as a kill would leave the journal.
    // SAFETY: the child only uses the library, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let b = open(&dir);
        for i in 100..110 {
            update(&b, i);
        }
        // SAFETY: ends the child without closing the board.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let newest = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("log-"))
        })
        .max()
        .expect("a segment");
    let mut bytes = std::fs::read(&newest).expect("segment");
    let end = bytes.iter().rposition(|&b| b != 0).expect("records");
    bytes[end - 3] ^= 0x55;
    std::fs::write(&newest, &bytes).expect("write");
    let b = open(&dir);
    assert_eq!(stats(&b).journal_torn, 1);
    assert_eq!(contents(&b), reference(109));
    drop(b);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_log_is_folded_into_checkpoints_while_updates_go_on() {
    let dir = tmp("fold");
    let b = open_with(&dir, 0.5, 20).expect("open");
    let size = |dir: &Path| -> u64 {
        std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    let mut largest = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 0u64;
    // ~60 bytes logged per update: 2M updates log ~120 MB.
    while i < 2_000_000 {
        assert_eq!(update(&b, i), EH_OK);
        i += 1;
        if i % 100_000 == 0 {
            largest = largest.max(size(&dir));
            assert!(Instant::now() < deadline);
        }
    }
    let s = stats(&b);
    assert!(s.journal_checkpoints >= 2, "{}", s.journal_checkpoints);
    // Segments are allocated up to 64 MiB: the journal stays within a checkpoint,
    // the 16 MiB of log before the next one, and the segments holding them.
    assert!(largest < 200 << 20, "the journal grew to {largest} bytes");
    drop(b);
    assert_eq!(contents(&open(&dir)), reference(2_000_000));
    std::fs::remove_dir_all(&dir).ok();
}

/// A full disk: a tmpfs of 4 MiB when this process may mount one (root, or a user
/// namespace), else a file size limit (RLIMIT_FSIZE), which fails the segment's
/// allocation the same way. Runs in a child (the mount and the limit stay there).
#[test]
fn a_full_disk_fails_the_update_with_eh_io_and_changes_nothing() {
    let dir = tmp("full");
    // SAFETY: the child only uses the library and syscalls, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = full_disk_child(&dir);
        // SAFETY: ends the child.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "{status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "check {} failed in the child",
        libc::WEXITSTATUS(status)
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn full_disk_child(dir: &Path) -> i32 {
    let mounted = mount_tmpfs(dir);
    if !mounted {
        // No tmpfs: a 4 MiB file size limit instead (and SIGXFSZ ignored).
        // SAFETY: plain syscalls on this child.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 4 << 20,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
        }
    }
    let Ok(b) = open_with(dir, 0.5, 0) else {
        return 10;
    };
    let mut ok = 0u64;
    let mut failed = None;
    for i in 0..2_000_000u64 {
        let before = contents_of_one(&b, i);
        match update(&b, i) {
            EH_OK => ok += 1,
            EH_IO => {
                if contents_of_one(&b, i) != before {
                    return 11; // the failed update changed the board
                }
                failed = Some(i);
                break;
            }
            _ => return 12,
        }
    }
    if failed.is_none() {
        return 13;
    }
    // SAFETY: the message is a NUL-terminated thread-local string.
    let msg = unsafe { std::ffi::CStr::from_ptr(engagehub::ffi::eh_last_error()) };
    if !msg.to_string_lossy().contains("allocating") {
        return 14;
    }
    // The board goes on answering, with every update that returned.
    if ok == 0 || contents(&b).is_empty() {
        return 15;
    }
    0
}

/// The user `update(i)` touches, as (score bits, last update), or None.
fn contents_of_one(b: &Board, i: u64) -> Option<(u64, i64)> {
    let user = format!("u{}", (i * 7919) % 500);
    let mut info = eh_rank_info::default();
    // SAFETY: a live handle, a valid id and a writable out-param.
    let rc = unsafe { eh_leaderboard_rank(b.0, user.as_ptr(), user.len(), T0, &mut info) };
    (rc == EH_OK).then_some((info.score.to_bits(), info.last_update))
}

/// Mounts a 4 MiB tmpfs on `dir` in a mount namespace of this process's own
/// (as root, or in a new user namespace); false when neither is allowed.
fn mount_tmpfs(dir: &Path) -> bool {
    let target = CString::new(dir.to_str().unwrap_or("")).unwrap_or_default();
    // SAFETY: plain syscalls with valid NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0
            && libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0
        {
            return false;
        }
        // Keep the mount private to this namespace.
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=4m".as_ptr().cast(),
        ) == 0
    }
}
