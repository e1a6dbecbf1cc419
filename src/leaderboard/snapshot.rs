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

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{LeaderboardConfig, MAX_TIMESTAMP, check_user_id};
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
/// extension's `{"user_id", "score", "last_update"}` object.
#[derive(Default)]
struct EntryIn {
    user_id: String,
    score_at_landmark: Option<f64>,
    score: Option<f64>,
    last_update: Option<serde_json::Number>,
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
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<EntryIn, A::Error> {
                let mut entry = EntryIn::default();
                let mut has_id = false;
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "user_id" => {
                            entry.user_id = map.next_value()?;
                            has_id = true;
                        }
                        "score" => entry.score = Some(map.next_value()?),
                        "last_update" => entry.last_update = Some(map.next_value()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                if !has_id {
                    return Err(serde::de::Error::missing_field("user_id"));
                }
                Ok(entry)
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

fn check_timestamp(ts: i64, what: &str) -> Result<i64> {
    if (0..=MAX_TIMESTAMP).contains(&ts) {
        Ok(ts)
    } else {
        Err(Error::corrupt(format!(
            "{what} {ts} is outside 0..={MAX_TIMESTAMP}"
        )))
    }
}

fn last_update_of(n: &Option<serde_json::Number>, i: usize) -> Result<i64> {
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
    check_timestamp(ts, &format!("entries[{i}].last_update"))
}

pub(super) fn decode(bytes: &[u8]) -> Result<super::Leaderboard> {
    let raw: SnapshotIn = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(format!("not a valid snapshot: {e}")))?;
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
    };
    config
        .validate()
        .map_err(|e| Error::corrupt(e.to_string()))?;
    if config.max_users > 0 && entries.len() > config.max_users {
        return Err(Error::corrupt(format!(
            "{} entries exceed max_users = {}",
            entries.len(),
            config.max_users
        )));
    }

    let mut parts = Vec::with_capacity(entries.len());
    let landmark;
    if cpp_format {
        // Each score is as of its last_update: move them all to one landmark, the
        // newest last_update, so no value needs a factor above 1.
        let mut stamped = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let score = e
                .score
                .ok_or_else(|| Error::corrupt(format!("entries[{i}] has no score")))?;
            let ts = last_update_of(&e.last_update, i)?;
            stamped.push((e.user_id, score, ts));
        }
        landmark = stamped.iter().map(|s| s.2).max().unwrap_or(0);
        let lambda = config.lambda();
        for (i, (id, score, ts)) in stamped.into_iter().enumerate() {
            check_entry(&id, score, i)?;
            let value = score * (-lambda * (landmark - ts) as f64).exp();
            parts.push((id, value, ts));
        }
    } else {
        landmark = check_timestamp(
            raw.landmark
                .ok_or_else(|| Error::corrupt("no \"landmark\""))?,
            "landmark",
        )?;
        for (i, e) in entries.into_iter().enumerate() {
            let value = e
                .score_at_landmark
                .ok_or_else(|| Error::corrupt(format!("entries[{i}] has no score_at_landmark")))?;
            check_entry(&e.user_id, value, i)?;
            let ts = last_update_of(&e.last_update, i)?;
            parts.push((e.user_id, value, ts));
        }
    }
    super::Leaderboard::from_parts(config, landmark, parts)
}

fn check_entry(user_id: &str, score: f64, i: usize) -> Result<()> {
    check_user_id(user_id).map_err(|e| Error::corrupt(format!("entries[{i}]: {e}")))?;
    if !score.is_finite() {
        return Err(Error::corrupt(format!("entries[{i}] score is not finite")));
    }
    Ok(())
}

fn temp_path_for(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".into());
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes `bytes` to `path` so that a reader sees either the old file or the whole
/// new one: write a temp file beside it, fsync it, rename over, fsync the folder.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid("snapshot path is empty"));
    }
    let tmp = temp_path_for(path);
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
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("writing snapshot {}", path.display()), e)
    })
}
