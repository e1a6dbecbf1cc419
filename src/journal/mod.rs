//! Durability for a handle: an append-only log plus checkpoints, in a directory of
//! its own (`journal=PATH`).
//!
//! The model is Redis's AOF with `appendfsync everysec` and SQLite's WAL with
//! `synchronous=NORMAL`:
//!
//! * every change is appended to the log **before** the call that makes it returns,
//!   by a `memcpy` into a shared memory mapping of the log file: the bytes are then
//!   the kernel's, so a process crash (kill -9, an OOM kill, a segfault elsewhere in
//!   the process) loses nothing that returned;
//! * a maintenance thread `msync`s what was written every sync interval (default
//!   1 s): a machine crash or a power loss loses at most that interval. With
//!   [`SyncMode::Always`] every append is synced before the call returns;
//! * the same thread folds the log into a **checkpoint** (the handle's whole state,
//!   written to a temporary file, fsynced, renamed over the old one) once the log
//!   has grown past the checkpoint's size (at least 16 MiB), and deletes the
//!   segments the checkpoint covers: the journal's size stays proportional to the
//!   state, not to the history.
//!
//! Layout of the directory: `LOCK` (an exclusive `flock`, so a second handle on
//! the same journal is refused, with the holder's pid in the message),
//! `checkpoint`, and log segments `log-<stream>-<seq>`. A handle may write several
//! independent streams (a processor: one per worker, appended under that worker's
//! lock, so streams need no lock of their own). A segment is a file of 1 MiB
//! doubling to 64 MiB, allocated in full (`posix_fallocate`) before it is mapped, so
//! a full disk shows as an error when a segment is created, never as a fault while
//! writing into the mapping.
//!
//! A record is `len: u32, check: u32, type: u8, payload`, padded to 8 bytes; `check`
//! is the low half of the XXH3 of `type + payload` and `len` the length of both.
//! Reading stops at a zero `len` (the end) or at the first record whose length or
//! checksum is wrong: a torn tail (a kill in the middle of an append, or a machine
//! crash with unsynced pages) is truncated there and counted, never a reason to
//! refuse the journal. Opening replays each stream from the checkpoint's position
//! for it, then starts new segments; the owner writes a checkpoint right away, which
//! removes the old segments.
//!
//! A journal written by another format version, or by a handle of another kind or
//! configuration (the checkpoint keeps a fingerprint `key=value;...` of the
//! settings that change the meaning of the state), is refused with a message saying
//! what differs.

pub mod codec;
pub mod outbox;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use codec::{Get, Put};

/// Version of the journal's files; a journal of another version is refused.
pub const FORMAT_VERSION: u32 = 1;
const SEGMENT_MAGIC: &[u8; 8] = b"EHJSEG01";
const CHECKPOINT_MAGIC: &[u8; 8] = b"EHJCKP01";
/// Bytes of a segment's header; records start after it.
const HEADER: usize = 64;
const RECORD_HEADER: usize = 8;
const FIRST_SEGMENT: usize = 1 << 20;
const MAX_SEGMENT: usize = 64 << 20;
/// The largest record (a checkpoint is not a record; records are small).
const MAX_RECORD: usize = 1 << 30;
/// The log is folded into a checkpoint once it holds this much more than the
/// last checkpoint's size.
const CHECKPOINT_MIN_LOG: u64 = 16 << 20;

/// When appended records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Synced by the maintenance thread at this interval (a machine crash loses at
    /// most this much; a process crash nothing).
    Interval(Duration),
    /// Synced by every append before it returns.
    Always,
}

/// Where each stream's replay starts: `(segment seq, offset)` packed.
fn position(seq: u64, offset: usize) -> u64 {
    (seq << 32) | offset as u64
}

fn split_position(p: u64) -> (u64, usize) {
    (p >> 32, (p & 0xffff_ffff) as usize)
}

fn io(context: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::io(context, e)
}

fn last_os_error(context: impl std::fmt::Display) -> Error {
    io(context, std::io::Error::last_os_error())
}

/// A segment file mapped read-write and shared: appends are `memcpy`s into it.
/// (The mapping outlives the file descriptor, which is closed once mapped.)
struct Segment {
    ptr: *mut u8,
    len: usize,
    /// Written since the last sync (then it is in [`Inner::dirty`]).
    dirty: AtomicBool,
}

// SAFETY: the mapping is written only by the stream's one writer (serialised by
// its owner) and otherwise only read or msync'ed, which the kernel allows from any
// thread at any time; the pointer stays valid until `Drop` unmaps it, which runs
// when the last `Arc` goes.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    fn map(file: File, len: usize, path: &Path) -> Result<Segment> {
        // SAFETY: a fresh shared mapping of `len` bytes of an open file that has at
        // least `len` bytes; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_os_error(format!("mapping {}", path.display())));
        }
        drop(file);
        Ok(Segment {
            ptr: ptr.cast::<u8>(),
            len,
            dirty: AtomicBool::new(false),
        })
    }

    /// Makes what was written into `[start, end)` durable.
    fn sync_range(&self, start: usize, end: usize) -> Result<()> {
        // msync wants a page-aligned start.
        let page = 4096;
        let start = start / page * page;
        let end = end.min(self.len);
        if end <= start {
            return Ok(());
        }
        // SAFETY: `[start, end)` lies inside the live mapping.
        let rc = unsafe { libc::msync(self.ptr.add(start).cast(), end - start, libc::MS_SYNC) };
        if rc != 0 {
            return Err(last_os_error("syncing the journal"));
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `map`, unmapped once here.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// The journal's hold on its directory: the locked descriptor, and whether this
/// process still writes. Registered with the fork handlers under their registry's
/// lock from the moment the directory is locked, so no fork can copy the lock into
/// a child that would keep it: the child closes its copy and stops writing.
struct Hold {
    /// -1 once closed.
    fd: std::sync::atomic::AtomicI32,
    /// Nothing more is written (a forked child, a closed handle, a failed write).
    detached: AtomicBool,
}

impl Hold {
    /// Stops writing and releases this process's copy of the lock.
    fn release(&self) {
        self.detached.store(true, Ordering::Relaxed);
        let fd = self.fd.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: our own descriptor, closed once (swapped out above).
            unsafe { libc::close(fd) };
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        crate::atfork::unregister(self as *const Hold as *const ());
        self.release();
    }
}

/// Fork: nothing to hold in the parent; the child releases its copy.
impl crate::atfork::ForkGuarded for Hold {
    fn hold_for_fork(&'static self) -> Box<dyn crate::atfork::ForkHold> {
        Box::new(ChildReleases(self))
    }
}

struct ChildReleases(&'static Hold);

impl crate::atfork::ForkHold for ChildReleases {
    fn in_child(&mut self) {
        self.0.release();
    }
}

/// What the journal's writers and its maintenance share.
struct Inner {
    dir: PathBuf,
    kind: String,
    fingerprint: String,
    /// The directory's lock, and whether this process writes.
    hold: Arc<Hold>,
    sync: SyncMode,
    /// Segments written since the last sync.
    dirty: Mutex<Vec<Arc<Segment>>>,
    /// A segment file was created since the last sync (the directory needs one).
    dir_dirty: AtomicBool,
    /// Bytes appended since the last checkpoint.
    since_checkpoint: AtomicU64,
    /// Bytes of the last checkpoint.
    checkpoint_bytes: AtomicU64,
    /// The highest segment sequence number used (new segments take the next).
    next_seq: AtomicU64,
    checkpoints: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn detached(&self) -> bool {
        // Relaxed: set once (fork child, close, failure); a write racing it is
        // either whole before it or skipped.
        self.hold.detached.load(Ordering::Relaxed)
    }

    fn mark_dirty(&self, seg: &Arc<Segment>) {
        // Relaxed: the flag only avoids listing a segment twice; `sync` resets it
        // before syncing, so a write racing the reset lists it again.
        if !seg.dirty.swap(true, Ordering::Relaxed) {
            lock(&self.dirty).push(Arc::clone(seg));
        }
    }

    fn segment_path(&self, stream: u32, seq: u64) -> PathBuf {
        self.dir.join(format!("log-{stream}-{seq:016x}"))
    }

    /// Creates, allocates and maps a new segment of `len` bytes for `stream`.
    fn new_segment(&self, stream: u32, len: usize) -> Result<(u64, Arc<Segment>)> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let path = self.segment_path(stream, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io(format!("creating {}", path.display()), e))?;
        // Allocate every block now: a full disk is an error here, not a SIGBUS on a
        // write into the mapping later.
        // SAFETY: a valid descriptor and a byte range.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
        if rc != 0 {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(io(
                format!("allocating {len} bytes for {}", path.display()),
                std::io::Error::from_raw_os_error(rc),
            ));
        }
        let seg = Arc::new(Segment::map(file, len, &path)?);
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(SEGMENT_MAGIC);
        header.put_u32(FORMAT_VERSION);
        header.put_u32(stream);
        header.put_u64(seq);
        // SAFETY: the header is shorter than the mapping, which is ours alone.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), seg.ptr, header.len()) };
        self.dir_dirty.store(true, Ordering::Relaxed);
        self.mark_dirty(&seg);
        Ok((seq, seg))
    }

    fn fsync_dir(&self) -> Result<()> {
        let dir =
            File::open(&self.dir).map_err(|e| io(format!("opening {}", self.dir.display()), e))?;
        dir.sync_all()
            .map_err(|e| io(format!("syncing {}", self.dir.display()), e))
    }
}

/// One stream's appender. The owner serialises its calls (it keeps the writer
/// where its own lock already covers the change being logged).
pub struct Writer {
    inner: Arc<Inner>,
    stream: u32,
    seq: u64,
    seg: Arc<Segment>,
    offset: usize,
    next_len: usize,
}

impl Writer {
    /// Appends one record of `rtype` whose payload is `parts` concatenated. On
    /// `Err` (a new segment could not be created: disk full, permissions) nothing
    /// was written. In a forked child (see [`Journal::detach`]) it writes nothing.
    pub fn append(&mut self, rtype: u8, parts: &[&[u8]]) -> Result<()> {
        if self.inner.detached() {
            return Ok(());
        }
        let payload: usize = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
        if payload > MAX_RECORD {
            return Err(Error::invalid(format!(
                "a journal record of {payload} bytes is over the {MAX_RECORD}-byte limit"
            )));
        }
        let total = (RECORD_HEADER + payload).next_multiple_of(8);
        if self.offset + total > self.seg.len {
            self.roll(total)?;
        }
        let start = self.offset;
        // SAFETY: `[start, start + total)` lies inside the mapping (checked above),
        // which only this writer writes; the parts are valid slices.
        unsafe {
            let base = self.seg.ptr.add(start);
            let mut at = base.add(RECORD_HEADER);
            *at = rtype;
            at = at.add(1);
            for part in parts {
                std::ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
                at = at.add(part.len());
            }
            let body = std::slice::from_raw_parts(base.add(RECORD_HEADER), payload);
            let check = xxh3_64(body) as u32;
            std::ptr::copy_nonoverlapping(check.to_le_bytes().as_ptr(), base.add(4), 4);
            // The length last: a record is whole once its length is there.
            std::ptr::copy_nonoverlapping((payload as u32).to_le_bytes().as_ptr(), base, 4);
        }
        self.offset += total;
        self.inner
            .since_checkpoint
            .fetch_add(total as u64, Ordering::Relaxed);
        match self.inner.sync {
            SyncMode::Always => self.seg.sync_range(start, self.offset)?,
            SyncMode::Interval(_) => self.inner.mark_dirty(&self.seg),
        }
        Ok(())
    }

    /// Moves to a new segment with room for a record of `need` bytes.
    #[cold]
    fn roll(&mut self, need: usize) -> Result<()> {
        let len = self.next_len.max((HEADER + need).next_multiple_of(4096));
        let (seq, seg) = self.inner.new_segment(self.stream, len)?;
        // The finished segment stays in the dirty list until synced.
        self.inner.mark_dirty(&self.seg);
        self.seq = seq;
        self.seg = seg;
        self.offset = HEADER;
        self.next_len = (self.next_len * 2).min(MAX_SEGMENT);
        Ok(())
    }

    /// Where a replay would start to see only what is appended from now on.
    pub fn position(&self) -> u64 {
        position(self.seq, self.offset)
    }
}

/// What opening found, besides the state handed to the callbacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records replayed from the log.
    pub records: u64,
    /// Torn tails truncated (at most one per stream).
    pub torn: u64,
    /// Bytes dropped with them.
    pub torn_bytes: u64,
    /// A checkpoint was found.
    pub had_checkpoint: bool,
}

/// An open journal: see the [module docs](self).
pub struct Journal {
    inner: Arc<Inner>,
    writers: Vec<Option<Writer>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// A replay callback: `(stream, record type, payload)`.
pub type Replay<'a> = dyn FnMut(usize, u8, &[u8]) -> Result<()> + 'a;

/// The settings a journal is opened with.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// The directory (created if needed).
    pub dir: &'a Path,
    /// What kind of handle writes it ("leaderboard", "processor").
    pub kind: &'a str,
    /// `key=value;...` of the settings that give the state its meaning.
    pub fingerprint: &'a str,
    /// Streams written from now on.
    pub streams: usize,
    /// When appends are synced.
    pub sync: SyncMode,
}

impl Journal {
    /// Opens (creating) the journal in `opts.dir`, takes its lock, hands the
    /// checkpoint's payload (`None` for a new journal) to `restore`, then every
    /// record logged after it to `replay(stream, type, payload)` (each stream in
    /// order; streams one after the other). Afterwards writers append to new
    /// segments; the caller should write a checkpoint at once
    /// ([`Journal::checkpoint`] with the writers' positions), which removes the
    /// replayed segments.
    ///
    /// Errors: [`Error::Busy`] when another handle holds the journal,
    /// [`Error::InvalidArgument`] when it was written by another kind of handle or
    /// another configuration (the message says what differs), [`Error::Corrupt`]
    /// for another format version or a damaged checkpoint, [`Error::Io`] for the
    /// file system; `restore` and `replay` errors are passed on.
    pub fn open(
        opts: &Options<'_>,
        restore: &mut dyn FnMut(Option<&[u8]>) -> Result<()>,
        replay: &mut Replay<'_>,
    ) -> Result<(Journal, Recovery)> {
        let dir = opts.dir;
        fs::create_dir_all(dir).map_err(|e| io(format!("creating {}", dir.display()), e))?;
        let hold = take_lock(dir)?;
        let mut recovery = Recovery::default();
        let checkpoint = read_checkpoint(dir, opts)?;
        let positions = match &checkpoint {
            Some((positions, payload)) => {
                recovery.had_checkpoint = true;
                restore(Some(payload))?;
                positions.clone()
            }
            None => {
                restore(None)?;
                Vec::new()
            }
        };
        let segments = list_segments(dir)?;
        let max_seq = segments.iter().map(|s| s.1).max().unwrap_or(0);
        let mut streams: Vec<u32> = segments.iter().map(|s| s.0).collect();
        streams.sort_unstable();
        streams.dedup();
        for stream in streams {
            let from = positions.get(stream as usize).copied().unwrap_or(0);
            replay_stream(stream, from, &segments, &mut recovery, &mut |t, p| {
                replay(stream as usize, t, p)
            })?;
        }
        let inner = Arc::new(Inner {
            hold,
            dir: dir.to_path_buf(),
            kind: opts.kind.to_string(),
            fingerprint: opts.fingerprint.to_string(),
            sync: opts.sync,
            dirty: Mutex::new(Vec::new()),
            dir_dirty: AtomicBool::new(false),
            since_checkpoint: AtomicU64::new(0),
            checkpoint_bytes: AtomicU64::new(0),
            next_seq: AtomicU64::new(max_seq),
            checkpoints: AtomicU64::new(0),
        });
        let mut writers = Vec::with_capacity(opts.streams);
        for stream in 0..opts.streams {
            let (seq, seg) = inner.new_segment(stream as u32, FIRST_SEGMENT)?;
            writers.push(Some(Writer {
                inner: Arc::clone(&inner),
                stream: stream as u32,
                seq,
                seg,
                offset: HEADER,
                next_len: FIRST_SEGMENT * 2,
            }));
        }
        Ok((Journal { inner, writers }, recovery))
    }

    /// Takes stream `i`'s writer (once).
    pub fn take_writer(&mut self, i: usize) -> Option<Writer> {
        self.writers.get_mut(i).and_then(Option::take)
    }

    /// Writes `payload` as the checkpoint for `positions` (one per stream, each its
    /// writer's [`Writer::position`] taken at the same moment as the state), atomically
    /// (temporary file, fsync, rename, fsync of the directory), then deletes the
    /// segments it covers.
    pub fn checkpoint(&self, positions: &[u64], payload: &[u8]) -> Result<()> {
        if self.inner.detached() {
            return Ok(());
        }
        let written_before = self.inner.since_checkpoint.load(Ordering::Relaxed);
        let mut bytes = Vec::with_capacity(payload.len() + 256);
        bytes.extend_from_slice(CHECKPOINT_MAGIC);
        bytes.put_u32(FORMAT_VERSION);
        bytes.put_str(&self.inner.kind);
        bytes.put_str(&self.inner.fingerprint);
        bytes.put_u64(positions.len() as u64);
        for p in positions {
            bytes.put_u64(*p);
        }
        bytes.put_bytes(payload);
        let check = xxh3_64(&bytes);
        bytes.put_u64(check);
        let dir = &self.inner.dir;
        let tmp = dir.join("checkpoint.tmp");
        let path = dir.join("checkpoint");
        let mut file =
            File::create(&tmp).map_err(|e| io(format!("creating {}", tmp.display()), e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                io(format!("writing {}", tmp.display()), e)
            })?;
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| io(format!("renaming {}", tmp.display()), e))?;
        self.inner.fsync_dir()?;
        self.inner
            .checkpoint_bytes
            .store(bytes.len() as u64, Ordering::Relaxed);
        // What was appended while this checkpoint was written stays counted.
        self.inner
            .since_checkpoint
            .fetch_sub(written_before, Ordering::Relaxed);
        self.inner.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.prune(positions)
    }

    /// Deletes the segments a checkpoint at `positions` covers, and those of
    /// streams it does not have.
    fn prune(&self, positions: &[u64]) -> Result<()> {
        for (stream, seq, path) in list_segments(&self.inner.dir)? {
            let keep_from = positions.get(stream as usize).map(|p| split_position(*p).0);
            if keep_from.is_none_or(|first| seq < first) {
                fs::remove_file(&path)
                    .map_err(|e| io(format!("removing {}", path.display()), e))?;
            }
        }
        Ok(())
    }

    /// Makes every append so far durable (msync of the segments written since the
    /// last sync, and of the directory if a segment was created).
    pub fn sync(&self) -> Result<()> {
        if self.inner.detached() {
            return Ok(());
        }
        let segments = std::mem::take(&mut *lock(&self.inner.dirty));
        for seg in &segments {
            // Reset first: a write after this lists the segment again.
            seg.dirty.store(false, Ordering::Relaxed);
            seg.sync_range(0, seg.len)?;
        }
        if self.inner.dir_dirty.swap(false, Ordering::Relaxed) {
            self.inner.fsync_dir()?;
        }
        Ok(())
    }

    /// True when the log has grown enough to be folded into a checkpoint.
    pub fn wants_checkpoint(&self) -> bool {
        let log = self.inner.since_checkpoint.load(Ordering::Relaxed);
        log > CHECKPOINT_MIN_LOG.max(self.inner.checkpoint_bytes.load(Ordering::Relaxed))
    }

    /// Bytes appended since the last checkpoint.
    pub fn log_bytes(&self) -> u64 {
        self.inner.since_checkpoint.load(Ordering::Relaxed)
    }

    /// Checkpoints written since the journal was opened.
    pub fn checkpoints(&self) -> u64 {
        self.inner.checkpoints.load(Ordering::Relaxed)
    }

    /// The interval of [`SyncMode::Interval`], if that is the mode.
    pub fn sync_interval(&self) -> Option<Duration> {
        match self.inner.sync {
            SyncMode::Interval(d) => Some(d),
            SyncMode::Always => None,
        }
    }

    /// From now on nothing is written, and the directory's lock is released (this
    /// process's copy of it): a forked child's (the parent owns the files; the
    /// child's handle goes on in memory), or a handle's close (after its last
    /// checkpoint: another handle may open the journal now).
    pub fn detach(&self) {
        self.inner.hold.release();
    }

    /// Stops writing (a write failed: the journal keeps what it had, a consistent
    /// prefix, and the handle goes on in memory). Keeps the lock.
    pub fn disable(&self) {
        self.inner.hold.detached.store(true, Ordering::Relaxed);
    }

    /// True once [`Journal::detach`]ed or [`Journal::disable`]d.
    pub fn is_detached(&self) -> bool {
        self.inner.detached()
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

/// Takes the directory's lock, or says who holds it. The hold is registered with
/// the fork handlers while their registry is locked, before the lock is taken: no
/// fork can copy the locked descriptor into a child that does not release it.
fn take_lock(dir: &Path) -> Result<Arc<Hold>> {
    let path = dir.join("LOCK");
    crate::atfork::register_with(|| {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(format!("opening {}", path.display()), e))?;
        // SAFETY: a valid descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Busy(format!(
                    "journal {} is in use by another handle{}: one handle per journal",
                    dir.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (process {holder})")
                    }
                )));
            }
            return Err(io(format!("locking {}", path.display()), err));
        }
        file.set_len(0)
            .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
            .map_err(|e| io(format!("writing {}", path.display()), e))?;
        Ok(Arc::new(Hold {
            fd: std::sync::atomic::AtomicI32::new(file.into_raw_fd()),
            detached: AtomicBool::new(false),
        }))
    })
}

/// The checkpoint's positions and payload, checked against `opts`.
fn read_checkpoint(dir: &Path, opts: &Options<'_>) -> Result<Option<(Vec<u64>, Vec<u8>)>> {
    let path = dir.join("checkpoint");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("reading {}", path.display()), e)),
    };
    let corrupt = |what: &str| Error::corrupt(format!("journal {}: {what}", dir.display()));
    if bytes.len() < 8 + 4 + 8 || &bytes[..8] != CHECKPOINT_MAGIC {
        return Err(corrupt(
            "the checkpoint is not an engagehub journal checkpoint",
        ));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 8);
    let mut g = Get::new(&bytes[8..], "journal checkpoint");
    let version = g.u32()?;
    if version != FORMAT_VERSION {
        return Err(corrupt(&format!(
            "written by journal format version {version}; this library reads version {FORMAT_VERSION}"
        )));
    }
    let mut want = [0u8; 8];
    want.copy_from_slice(tail);
    if xxh3_64(body) != u64::from_le_bytes(want) {
        return Err(corrupt(
            "the checkpoint's checksum does not match (damaged file)",
        ));
    }
    let kind = g.str()?;
    if kind != opts.kind {
        return Err(Error::invalid(format!(
            "journal {} belongs to a {kind}, not to a {}",
            dir.display(),
            opts.kind
        )));
    }
    let fingerprint = g.str()?;
    if fingerprint != opts.fingerprint {
        return Err(Error::invalid(format!(
            "journal {} was written with other settings: {}",
            dir.display(),
            fingerprint_difference(fingerprint, opts.fingerprint)
        )));
    }
    let n = g.count(8)?;
    let positions = (0..n).map(|_| g.u64()).collect::<Result<Vec<_>>>()?;
    let payload = g.bytes()?.to_vec();
    Ok(Some((positions, payload)))
}

/// "decay_factor: journal 0.9, this handle 0.95; ..." for two fingerprints.
fn fingerprint_difference(journal: &str, mine: &str) -> String {
    let parse = |s: &str| -> Vec<(String, String)> {
        s.split(';')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.to_string(), String::new()),
            })
            .collect()
    };
    let (a, b) = (parse(journal), parse(mine));
    let mut out = Vec::new();
    for (k, v) in &a {
        match b.iter().find(|(k2, _)| k2 == k) {
            Some((_, v2)) if v2 == v => {}
            Some((_, v2)) => out.push(format!("{k}: journal {v}, this handle {v2}")),
            None => out.push(format!("{k}: journal {v}, this handle none")),
        }
    }
    for (k, v) in &b {
        if !a.iter().any(|(k2, _)| k2 == k) {
            out.push(format!("{k}: journal none, this handle {v}"));
        }
    }
    out.join("; ")
}

/// Every segment file as `(stream, seq, path)`, sorted by stream then seq.
fn list_segments(dir: &Path) -> Result<Vec<(u32, u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("log-") else {
            continue;
        };
        let Some((stream, seq)) = rest.split_once('-') else {
            continue;
        };
        if let (Ok(stream), Ok(seq)) = (stream.parse::<u32>(), u64::from_str_radix(seq, 16)) {
            out.push((stream, seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Replays `stream`'s records from `from`, stopping at its end or its first torn
/// record (counted in `recovery`; later segments of the stream are dropped too).
fn replay_stream(
    stream: u32,
    from: u64,
    segments: &[(u32, u64, PathBuf)],
    recovery: &mut Recovery,
    apply: &mut dyn FnMut(u8, &[u8]) -> Result<()>,
) -> Result<()> {
    let (first_seq, first_offset) = split_position(from);
    for (s, seq, path) in segments {
        if *s != stream || *seq < first_seq {
            continue;
        }
        let bytes = fs::read(path).map_err(|e| io(format!("reading {}", path.display()), e))?;
        let start = if *seq == first_seq {
            first_offset
        } else {
            HEADER
        };
        match scan_segment(&bytes, stream, *seq, start, apply)? {
            Scan::End(n) => recovery.records += n,
            Scan::Torn(n, lost) => {
                recovery.records += n;
                recovery.torn += 1;
                recovery.torn_bytes += lost;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A whole segment file's bytes holding `records` (type, payload), as a writer
/// would have left them: for tests and the fuzz target of the reader.
pub fn encode_segment(stream: u32, seq: u64, records: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + records.len() * 32);
    out.extend_from_slice(SEGMENT_MAGIC);
    out.put_u32(FORMAT_VERSION);
    out.put_u32(stream);
    out.put_u64(seq);
    out.resize(HEADER, 0);
    for (kind, payload) in records {
        let mut body = Vec::with_capacity(1 + payload.len());
        body.push(*kind);
        body.extend_from_slice(payload);
        out.put_u32(body.len() as u32);
        out.put_u32(xxh3_64(&body) as u32);
        out.extend_from_slice(&body);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    out
}

/// How a segment's scan ended: records applied, and for a torn tail the bytes lost.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A zero length: the end of what was written.
    End(u64),
    /// A record whose length or checksum is wrong.
    Torn(u64, u64),
}

/// Reads the records of one segment file's `bytes` from `start`, passing each to
/// `apply`. A segment whose header is wrong is treated as torn at its start.
/// (Public for the fuzz target.)
pub fn scan_segment(
    bytes: &[u8],
    stream: u32,
    seq: u64,
    start: usize,
    apply: &mut dyn FnMut(u8, &[u8]) -> Result<()>,
) -> Result<Scan> {
    let header_ok = bytes.len() >= HEADER && &bytes[..8] == SEGMENT_MAGIC && {
        let mut g = Get::new(&bytes[8..HEADER], "segment header");
        g.u32().ok() == Some(FORMAT_VERSION)
            && g.u32().ok() == Some(stream)
            && g.u64().ok() == Some(seq)
    };
    if !header_ok {
        return Ok(Scan::Torn(0, bytes.len() as u64));
    }
    let mut at = start.max(HEADER);
    let mut records = 0u64;
    loop {
        if at + RECORD_HEADER > bytes.len() {
            return Ok(Scan::End(records));
        }
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        if len == 0 {
            return Ok(Scan::End(records));
        }
        let check =
            u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let body_at = at + RECORD_HEADER;
        let lost = (bytes.len() - at) as u64;
        if len > MAX_RECORD || body_at + len > bytes.len() {
            return Ok(Scan::Torn(records, lost));
        }
        let body = &bytes[body_at..body_at + len];
        if xxh3_64(body) as u32 != check {
            return Ok(Scan::Torn(records, lost));
        }
        apply(body[0], &body[1..])?;
        records += 1;
        at = (body_at + len).next_multiple_of(8);
    }
}

/// A handle's maintenance thread: calls `work` every `interval` until stopped
/// (and once more when stopped), never holding the caller's locks in between.
pub struct Maintenance {
    state: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Maintenance {
    /// Starts the thread. `work(stopping)` syncs and checkpoints; its errors are
    /// the owner's to keep (it runs in the background).
    pub fn start(
        name: &str,
        interval: Duration,
        mut work: impl FnMut(bool) + Send + 'static,
    ) -> Result<Self> {
        let state = Arc::new((Mutex::new(false), Condvar::new()));
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let (stop, wake) = &*shared;
                loop {
                    let stopping = {
                        let guard = lock(stop);
                        let (guard, _) = wake
                            .wait_timeout_while(guard, interval, |s| !*s)
                            .unwrap_or_else(PoisonError::into_inner);
                        *guard
                    };
                    let _ = crate::quiet_panic::catch(|| work(stopping));
                    if stopping {
                        return;
                    }
                }
            })
            .map_err(|e| io("starting the journal's thread", e))?;
        Ok(Maintenance {
            state,
            thread: Some(thread),
        })
    }

    /// Runs `work(true)` once more on the thread and waits for it to end.
    pub fn stop(&mut self) {
        let (stop, wake) = &*self.state;
        *lock(stop) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// In a forked child: the thread does not exist there (and its lock may have
    /// been held at the fork): leaks the handle without touching either.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
