//! JSON snapshots of a leaderboard.
//!
//! Our format (`"format": "engagehub.leaderboard"`, `"version": 1`) stores each
//! user's value at the landmark, which is what the board keeps, so a reload is
//! exact: serde_json writes the shortest representation that parses back to the
//! same `f64` (the `float_roundtrip` feature makes parsing exact too).
//!
//! ```json
//! {"format":"engagehub.leaderboard","version":1,"decay_factor":0.95,
//!  "decay_period_secs":86400.0,"max_users":100000,"landmark":1700000000,
//!  "columns":["user_id","score_at_landmark","last_update"],
//!  "entries":[["42",12.5,1700000100]]}
//! ```
//!
//! Entries are arrays in the order `columns` names (rank order, best first): at a
//! million users, repeating three field names per entry would double the file and
//! the time to write it.
//!
//! The C++ extension's format (`{"decay_factor", "max_users", "entries":
//! [{"user_id", "score", "last_update"}]}`) is read too: each `score` is taken as the
//! user's score at its `last_update`, with the C++ extension's one-day decay period.
//! Its writer did not escape control characters in ids and wrote `inf`/`nan` as
//! bare words, so such files are first mended into JSON (control characters
//! escaped, bare non-finite numbers read as null). Then every entry that can be
//! loaded is, and the others (no or bad id, non-finite score, bad or future
//! timestamp, a repeated id, beyond `max_users`) are skipped and listed in the
//! [`Loaded`] report with the reason: a board written by the C++ extension can
//! always be migrated. Our own format is all or nothing.
//!
//! Both formats refuse a landmark or entry later than the wall clock plus the
//! loading board's `max_future_secs` (ours as corrupt; the C++ one's entries are
//! skipped).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Leaderboard, LeaderboardConfig, MAX_TIMESTAMP, check_user_id, latest_accepted};
use crate::error::{Error, Result};

/// Version written in the `version` field of snapshots this build writes.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
const FORMAT_NAME: &str = "engagehub.leaderboard";
/// The C++ extension decayed by `decay_factor` once per day.
const CPP_DECAY_PERIOD_SECS: f64 = 86_400.0;

const COLUMNS: [&str; 3] = ["user_id", "score_at_landmark", "last_update"];

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: &'static str,
    version: u32,
    decay_factor: f64,
    decay_period_secs: f64,
    max_users: u64,
    landmark: i64,
    columns: [&'static str; 3],
    entries: Vec<(&'a str, f64, i64)>,
}

/// Accepts both formats; which fields are present decides which one it is.
#[derive(Deserialize)]
struct SnapshotIn {
    format: Option<String>,
    version: Option<u32>,
    decay_factor: Option<f64>,
    decay_period_secs: Option<f64>,
    max_users: Option<u64>,
    landmark: Option<i64>,
    columns: Option<Vec<String>>,
    entries: Option<Vec<EntryIn>>,
}

/// One entry: our `[user_id, score_at_landmark, last_update]` array, or the C++
/// extension's `{"user_id", "score", "last_update"}` object. The object form is read
/// leniently: a field of the wrong type, or an entry that is not an object, is
/// recorded in `invalid` so that the entry alone can be skipped.
#[derive(Default)]
struct EntryIn {
    user_id: String,
    score_at_landmark: Option<f64>,
    score: Option<f64>,
    last_update: Option<serde_json::Number>,
    invalid: Option<String>,
}

/// An entry of a C++ extension snapshot left out of the load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// 0-based position in the file's `entries`.
    pub index: usize,
    /// The entry's id, if it had a string one.
    pub user_id: String,
    /// Why it was skipped.
    pub reason: String,
}

impl EntryIn {
    fn invalid(what: &str) -> Self {
        EntryIn {
            invalid: Some(format!("the entry is {what}, not an object")),
            ..EntryIn::default()
        }
    }
}

impl<'de> Deserialize<'de> for EntryIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EntryIn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an entry: [user_id, score_at_landmark, last_update] or {user_id, score, last_update}")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<EntryIn, A::Error> {
                use serde::de::Error as _;
                let user_id = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let value = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let last_update = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(2, &self))?;
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(4, &self));
                }
                Ok(EntryIn {
                    user_id,
                    score_at_landmark: Some(value),
                    score: None,
                    last_update: Some(last_update),
                    invalid: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<EntryIn, A::Error> {
                use serde_json::Value;
                let mut entry = EntryIn::default();
                let mut has_id = false;
                let bad = |entry: &mut EntryIn, why: String| {
                    entry.invalid.get_or_insert(why);
                };
                while let Some(field) = map.next_key::<String>()? {
                    match (field.as_str(), map.next_value::<Value>()?) {
                        ("user_id", Value::String(id)) => {
                            entry.user_id = id;
                            has_id = true;
                        }
                        ("user_id", other) => {
                            bad(&mut entry, format!("user_id {other} is not a string"))
                        }
                        ("score", Value::Number(n)) => entry.score = n.as_f64(),
                        ("score", Value::Null) => {
                            bad(&mut entry, "score is not a finite number".into())
                        }
                        ("score", other) => {
                            bad(&mut entry, format!("score {other} is not a number"))
                        }
                        ("last_update", Value::Number(n)) => entry.last_update = Some(n),
                        ("last_update", other) => bad(
                            &mut entry,
                            format!("last_update {other} is not a timestamp"),
                        ),
                        _ => {}
                    }
                }
                if !has_id {
                    bad(&mut entry, "no user_id".into());
                }
                Ok(entry)
            }
            fn visit_unit<E>(self) -> std::result::Result<EntryIn, E> {
                Ok(EntryIn::invalid("null"))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<EntryIn, E> {
                Ok(EntryIn::invalid("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<EntryIn, E> {
                Ok(EntryIn::invalid("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<EntryIn, E> {
                Ok(EntryIn::invalid("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<EntryIn, E> {
                Ok(EntryIn::invalid("a number"))
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<EntryIn, E> {
                Ok(EntryIn::invalid("a string"))
            }
        }
        d.deserialize_any(Visitor)
    }
}

pub(super) fn encode(board: &super::Leaderboard) -> Vec<u8> {
    let config = board.config();
    let snapshot = SnapshotOut {
        format: FORMAT_NAME,
        version: SNAPSHOT_FORMAT_VERSION,
        decay_factor: config.decay_factor,
        decay_period_secs: config.decay_period_secs,
        max_users: config.max_users as u64,
        landmark: board.landmark(),
        columns: COLUMNS,
        entries: board.iter_ranked().collect(),
    };
    // Serializing plain structs of strings, finite floats and integers into a Vec
    // cannot fail.
    serde_json::to_vec(&snapshot).unwrap_or_default()
}

fn check_timestamp(ts: i64, what: &str, latest: i64) -> Result<i64> {
    if !(0..=MAX_TIMESTAMP).contains(&ts) {
        return Err(Error::corrupt(format!(
            "{what} {ts} is outside 0..={MAX_TIMESTAMP}"
        )));
    }
    if ts > latest {
        return Err(Error::corrupt(format!(
            "{what} {ts} is later than the wall clock plus max_future_secs ({latest})"
        )));
    }
    Ok(ts)
}

fn last_update_of(n: &Option<serde_json::Number>, i: usize, latest: i64) -> Result<i64> {
    let Some(n) = n else {
        return Err(Error::corrupt(format!("entries[{i}] has no last_update")));
    };
    let ts = match n.as_i64() {
        Some(ts) => ts,
        None => match n.as_f64() {
            // The C++ extension may have written timestamps as doubles.
            Some(f) if f.is_finite() && f.abs() < 9.0e15 => f.floor() as i64,
            _ => {
                return Err(Error::corrupt(format!(
                    "entries[{i}].last_update {n} is not a timestamp"
                )));
            }
        },
    };
    check_timestamp(ts, &format!("entries[{i}].last_update"), latest)
}

/// Mends what the C++ extension's writer produced into JSON: control characters
/// inside strings are escaped, and bare `inf`, `-inf`, `nan` (any case, also
/// `infinity`) outside strings become `null`. Valid JSON passes unchanged.
fn mend_cpp_json(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let (mut in_string, mut escaped, mut i) = (false, false, 0);
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                0..=0x1f => {
                    out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                    continue;
                }
                _ => {}
            }
            out.push(b);
            continue;
        }
        if b == b'"' {
            in_string = true;
        } else if b.is_ascii_alphabetic()
            || ((b == b'-' || b == b'+') && bytes.get(i).is_some_and(u8::is_ascii_alphabetic))
        {
            let start = i - 1;
            let mut end = i;
            while end < bytes.len() && bytes[end].is_ascii_alphabetic() {
                end += 1;
            }
            let word = bytes[start..end].to_ascii_lowercase();
            let word = word
                .strip_prefix(b"-")
                .or_else(|| word.strip_prefix(b"+"))
                .unwrap_or(&word);
            if matches!(word, b"inf" | b"infinity" | b"nan") {
                out.extend_from_slice(b"null");
                i = end;
                continue;
            }
        }
        out.push(b);
    }
    out
}

pub(super) fn decode(bytes: &[u8], max_future_secs: i64) -> Result<Leaderboard> {
    let latest = latest_accepted(max_future_secs);
    let raw: SnapshotIn = match serde_json::from_slice(bytes) {
        Ok(raw) => raw,
        // Not JSON: perhaps a C++ extension snapshot with what its writer left
        // unescaped. Ours never needs mending, and mending cannot turn a file
        // that names our format into a valid one without a parse error first.
        Err(e) => match serde_json::from_slice::<SnapshotIn>(&mend_cpp_json(bytes)) {
            Ok(raw) if raw.format.is_none() => raw,
            _ => return Err(Error::corrupt(format!("not a valid snapshot: {e}"))),
        },
    };
    let entries = raw
        .entries
        .ok_or_else(|| Error::corrupt("no \"entries\" array"))?;
    let cpp_format = raw.format.is_none();
    if !cpp_format {
        let format = raw.format.as_deref().unwrap_or_default();
        if format != FORMAT_NAME {
            return Err(Error::corrupt(format!(
                "format is {format:?}, expected {FORMAT_NAME:?}"
            )));
        }
        match raw.version {
            Some(SNAPSHOT_FORMAT_VERSION) => {}
            Some(v) => {
                return Err(Error::corrupt(format!(
                    "snapshot version {v} is not supported (this build reads {SNAPSHOT_FORMAT_VERSION})"
                )));
            }
            None => return Err(Error::corrupt("no \"version\"")),
        }
        if let Some(columns) = &raw.columns {
            if columns.iter().map(String::as_str).ne(COLUMNS) {
                return Err(Error::corrupt(format!(
                    "columns are {columns:?}, expected {COLUMNS:?}"
                )));
            }
        }
    }
    let decay_factor = raw
        .decay_factor
        .ok_or_else(|| Error::corrupt("no \"decay_factor\""))?;
    let decay_period_secs = if cpp_format {
        CPP_DECAY_PERIOD_SECS
    } else {
        raw.decay_period_secs
            .ok_or_else(|| Error::corrupt("no \"decay_period_secs\""))?
    };
    let max_users = raw.max_users.unwrap_or(0);
    let config = LeaderboardConfig {
        decay_factor,
        decay_period_secs,
        max_users: usize::try_from(max_users)
            .map_err(|_| Error::corrupt(format!("max_users {max_users} is too large")))?,
        max_future_secs,
    };
    config
        .validate()
        .map_err(|e| Error::corrupt(e.to_string()))?;
    if cpp_format {
        return decode_cpp(config, entries, latest);
    }
    if config.max_users > 0 && entries.len() > config.max_users {
        return Err(Error::corrupt(format!(
            "{} entries exceed max_users = {}",
            entries.len(),
            config.max_users
        )));
    }
    let landmark = check_timestamp(
        raw.landmark
            .ok_or_else(|| Error::corrupt("no \"landmark\""))?,
        "landmark",
        latest,
    )?;
    let mut parts = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        if let Some(why) = e.invalid {
            return Err(Error::corrupt(format!("entries[{i}]: {why}")));
        }
        let value = e
            .score_at_landmark
            .ok_or_else(|| Error::corrupt(format!("entries[{i}] has no score_at_landmark")))?;
        check_entry(&e.user_id, value, i)?;
        let ts = last_update_of(&e.last_update, i, latest)?;
        parts.push((e.user_id, value, ts));
    }
    Leaderboard::from_parts(config, landmark, parts)
}

/// The C++ extension's entries: each score is as of its last_update. Loads every
/// valid entry (the best `max_users` of them when there are more), skipping and
/// reporting the rest, and moves the scores to one landmark, the newest
/// last_update, so no value needs a factor above 1.
fn decode_cpp(
    config: LeaderboardConfig,
    entries: Vec<EntryIn>,
    latest: i64,
) -> Result<Leaderboard> {
    let mut skipped = Vec::new();
    let mut stamped = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let checked = (|| {
            if let Some(why) = &e.invalid {
                return Err(Error::corrupt(why.clone()));
            }
            let score = e.score.ok_or_else(|| Error::corrupt("no score"))?;
            check_entry(&e.user_id, score, i)?;
            let ts = last_update_of(&e.last_update, i, latest)?;
            if !seen.insert(e.user_id.clone()) {
                return Err(Error::corrupt("the id appeared earlier in the file"));
            }
            Ok((score, ts))
        })();
        match checked {
            Ok((score, ts)) => stamped.push((i, e.user_id, score, ts)),
            Err(err) => skipped.push(Skipped {
                index: i,
                user_id: e.user_id,
                reason: match err {
                    Error::Corrupt(m) => m,
                    other => other.to_string(),
                },
            }),
        }
    }
    let newest = stamped.iter().map(|s| s.3).max().unwrap_or(0);
    let landmark = newest.min(super::wall_clock_secs());
    let lambda = config.lambda();
    let mut parts: Vec<(usize, String, f64, i64)> = stamped
        .into_iter()
        .map(|(i, id, score, ts)| {
            (
                i,
                id,
                score * (-lambda * (landmark - ts) as f64).exp() + 0.0,
                ts,
            )
        })
        .collect();
    if config.max_users > 0 && parts.len() > config.max_users {
        // Keep the board's own best: higher value, then id ascending.
        parts.sort_unstable_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
        for (i, id, _, _) in parts.drain(config.max_users..) {
            skipped.push(Skipped {
                index: i,
                user_id: id,
                reason: format!("beyond max_users = {}", config.max_users),
            });
        }
        skipped.sort_unstable_by_key(|s| s.index);
    }
    let parts = parts
        .into_iter()
        .map(|(_, id, value, ts)| (id, value, ts))
        .collect();
    let mut board = Leaderboard::from_parts(config, landmark, parts)?;
    board.skipped = skipped;
    Ok(board)
}

fn check_entry(user_id: &str, score: f64, i: usize) -> Result<()> {
    check_user_id(user_id).map_err(|e| Error::corrupt(format!("entries[{i}]: {e}")))?;
    if !score.is_finite() {
        return Err(Error::corrupt(format!("entries[{i}] score is not finite")));
    }
    Ok(())
}

/// Temp files of saves in progress in this process, so that a save cleaning up
/// after killed ones leaves a concurrent save of the same path alone.
static IN_PROGRESS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Holds [`IN_PROGRESS`] across a `fork()` (the fork handlers, `atfork`): a
/// thread of the parent in the middle of a save's bookkeeping would otherwise leave
/// it locked in the child, whose next save would wait for it forever.
#[cfg(test)]
pub(crate) fn saves_list_try_lock_for_tests() -> Option<std::sync::MutexGuard<'static, Vec<PathBuf>>>
{
    IN_PROGRESS.try_lock().ok()
}

/// Holds [`IN_PROGRESS`] (see above).
pub(crate) fn hold_saves_for_fork() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // Nothing panics while holding it; a poisoned list is still a list.
    IN_PROGRESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `.{name}.tmp-` : the prefix of every temp file of a save of `path`.
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".into());
    format!(".{name}.tmp-")
}

fn temp_path_for(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!("{}{}-{n}", temp_prefix(path), std::process::id()))
}

/// Removes the temp files that killed saves of `path` left beside it: those whose
/// writer process (the pid in the name) no longer runs, and this process's own
/// that no save in progress owns. Best effort: a file that cannot be listed or
/// removed is left for the next save.
fn remove_stale_temps(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(listing) = fs::read_dir(dir) else {
        return;
    };
    let prefix = temp_prefix(path);
    let me = std::process::id();
    let in_progress = IN_PROGRESS.lock().map(|v| v.clone()).unwrap_or_default();
    for entry in listing.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let file = entry.path();
        let stale = if pid == me {
            !in_progress.contains(&file)
        } else {
            !process_alive(pid)
        };
        if stale {
            let _ = fs::remove_file(&file);
        }
    }
}

/// Whether a process with this pid exists (signal 0 checks without sending).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Writes `bytes` to `path` so that a reader sees either the old file or the whole
/// new one: write a temp file beside it, fsync it, rename over, fsync the folder.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid("snapshot path is empty"));
    }
    let tmp = temp_path_for(path);
    if let Ok(mut v) = IN_PROGRESS.lock() {
        v.push(tmp.clone());
    }
    remove_stale_temps(path);
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // Persist the rename itself; a folder that cannot be opened for this
        // (rare platforms) still has the complete file.
        if let Ok(d) = File::open(dir) {
            d.sync_all()?;
        }
        Ok(())
    })();
    if let Ok(mut v) = IN_PROGRESS.lock() {
        v.retain(|p| p != &tmp);
    }
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("writing snapshot {}", path.display()), e)
    })
}
