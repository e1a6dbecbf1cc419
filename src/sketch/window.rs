//! Per-worker analytics over all time and a sliding window of minutes.
//!
//! Each pipeline worker owns one [`WindowedAnalytics`] shard and records every
//! event it processes with [`WindowedAnalytics::observe`]. A shard keeps:
//!
//! * all-time sketches: an [`Hll`] of user ids, a [`CountMin`] of channel ids
//!   and a [`SpaceSaving`] summary of channel ids;
//! * a ring of `window_minutes` minute slots, each holding an [`Hll`] of the
//!   users and a [`SpaceSaving`] of the channels seen in that minute. Minute
//!   `m = ts.div_euclid(60)` lives in slot `m.rem_euclid(window_minutes)`; a
//!   slot is reset and reused when a later minute claims it. Slots are
//!   allocated on first use, so idle workers stay small.
//!
//! A worker records events a run at a time ([`WindowedAnalytics::observe_run`]):
//! users go into the HLLs one by one, while channel events are first counted per
//! `(channel, minute)` within the run and then applied once per group with their
//! count, so a run of 256 events over a dozen channels costs a dozen Count-Min and
//! Space-Saving updates instead of 512. Count-Min counts are the same either way;
//! Space-Saving keeps its guarantees with weighted updates (never undercounting, an
//! overcount bounded by the smallest counter).
//!
//! Queries span several shards: the free functions [`unique_users`],
//! [`window_hll`], [`top_channels`] and [`channel_count`] merge the shards'
//! sketches (the union of the workers' streams is the merge of their sketches).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::cms::{self, CountMin};
use super::hash::{hash64, redis_hll_hash};
use super::hll::Hll;
use super::topk::{self, SpaceSaving};
use crate::error::{Error, Result};

/// Longest accepted window: one week of minutes.
pub const MAX_WINDOW_MINUTES: u32 = 7 * 24 * 60;

/// Configuration of a [`WindowedAnalytics`] shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WindowConfig {
    /// Length of the sliding window in minutes, `1..=10080` (default 60).
    pub window_minutes: u32,
    /// Rows of the channel Count-Min sketch, `1..=16` (default 4).
    pub cms_depth: usize,
    /// Counters per row of the channel Count-Min sketch, `1..=2^24` (default 2048).
    pub cms_width: usize,
    /// Capacity of the all-time channel summary (default 1024).
    pub topk_capacity: usize,
    /// Capacity of each per-minute channel summary (default 256).
    pub minute_topk_capacity: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            window_minutes: 60,
            cms_depth: cms::DEFAULT_DEPTH,
            cms_width: cms::DEFAULT_WIDTH,
            topk_capacity: 1024,
            minute_topk_capacity: 256,
        }
    }
}

impl WindowConfig {
    /// Checks every field's range.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_WINDOW_MINUTES).contains(&self.window_minutes) {
            return Err(Error::invalid(format!(
                "window_minutes {} is outside 1..={MAX_WINDOW_MINUTES}",
                self.window_minutes
            )));
        }
        if !(1..=cms::MAX_DEPTH).contains(&self.cms_depth) {
            return Err(Error::invalid(format!(
                "cms_depth {} is outside 1..={}",
                self.cms_depth,
                cms::MAX_DEPTH
            )));
        }
        if !(1..=cms::MAX_WIDTH).contains(&self.cms_width) {
            return Err(Error::invalid(format!(
                "cms_width {} is outside 1..={}",
                self.cms_width,
                cms::MAX_WIDTH
            )));
        }
        for (name, value) in [
            ("topk_capacity", self.topk_capacity),
            ("minute_topk_capacity", self.minute_topk_capacity),
        ] {
            if !(1..=topk::MAX_CAPACITY).contains(&value) {
                return Err(Error::invalid(format!(
                    "{name} {value} is outside 1..={}",
                    topk::MAX_CAPACITY
                )));
            }
        }
        Ok(())
    }
}

/// The sketches of one minute.
#[derive(Clone)]
struct MinuteSlot {
    minute: i64,
    users: Hll,
    channels: SpaceSaving,
}

/// One worker's analytics shard: see the [module docs](self).
#[derive(Clone)]
pub struct WindowedAnalytics {
    cfg: WindowConfig,
    users: Hll,
    cms: CountMin,
    channels: SpaceSaving,
    /// `window_minutes` slots, allocated on first use.
    ring: Vec<Option<Box<MinuteSlot>>>,
    /// Events recorded.
    events: u64,
    /// Scratch space of `observe_run` (empty between calls).
    run: RunCounts,
}

/// Most `(channel, minute)` groups counted before they are applied.
const RUN_GROUPS: usize = 256;
/// Buckets of the run's group table: a power of two, twice `RUN_GROUPS`.
const RUN_BUCKETS: usize = 2 * RUN_GROUPS;

/// Channel events of one run, counted per `(channel, minute)`.
#[derive(Clone)]
struct RunCounts {
    /// Open-addressing table of group indices + 1 (0 = empty).
    table: Box<[u16; RUN_BUCKETS]>,
    groups: Vec<RunGroup>,
    /// The groups' channel ids, back to back.
    names: String,
}

#[derive(Clone, Copy)]
struct RunGroup {
    hash: u64,
    minute: i64,
    count: u64,
    name_start: u32,
    name_len: u32,
    bucket: u16,
}

impl Default for RunCounts {
    fn default() -> Self {
        RunCounts {
            table: Box::new([0; RUN_BUCKETS]),
            groups: Vec::with_capacity(RUN_GROUPS),
            names: String::new(),
        }
    }
}

/// `a == b` for ids: 8 to 32 bytes compare as two overlapping words each (no
/// `memcmp` call, which costs more than the comparison for such lengths).
#[inline(always)]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        8..=16 => {
            let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap());
            word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8)
        }
        17..=32 => {
            let word =
                |s: &[u8], at: usize| u128::from_ne_bytes(s[at..at + 16].try_into().unwrap());
            word(a, 0) == word(b, 0) && word(a, n - 16) == word(b, n - 16)
        }
        _ => a == b,
    }
}

impl RunCounts {
    /// Counts one event of `channel` (hashed `hash`) in `minute`. Returns false when
    /// the table is full (the caller applies and clears it, then adds again).
    #[inline]
    fn add(&mut self, channel: &str, hash: u64, minute: i64) -> bool {
        let key = hash ^ (minute as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut i = (key >> 32) as usize & (RUN_BUCKETS - 1);
        loop {
            match self.table[i] {
                0 => break,
                g => {
                    let group = &mut self.groups[usize::from(g) - 1];
                    let start = group.name_start as usize;
                    if group.hash == hash
                        && group.minute == minute
                        && short_eq(
                            &self.names.as_bytes()[start..start + group.name_len as usize],
                            channel.as_bytes(),
                        )
                    {
                        group.count += 1;
                        return true;
                    }
                }
            }
            i = (i + 1) & (RUN_BUCKETS - 1);
        }
        if self.groups.len() == RUN_GROUPS {
            return false;
        }
        self.groups.push(RunGroup {
            hash,
            minute,
            count: 1,
            name_start: self.names.len() as u32,
            name_len: channel.len() as u32,
            bucket: i as u16,
        });
        self.names.push_str(channel);
        self.table[i] = self.groups.len() as u16;
        true
    }

    fn name(&self, group: &RunGroup) -> &str {
        let start = group.name_start as usize;
        &self.names[start..start + group.name_len as usize]
    }

    fn clear(&mut self) {
        for group in &self.groups {
            self.table[usize::from(group.bucket)] = 0;
        }
        self.groups.clear();
        self.names.clear();
    }
}

impl fmt::Debug for WindowedAnalytics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowedAnalytics")
            .field("cfg", &self.cfg)
            .field("all_time_users", &self.users.estimate())
            .field("events", &self.cms.total())
            .field("minute_slots_in_use", &self.ring.iter().flatten().count())
            .finish()
    }
}

/// `(lower exclusive, upper inclusive)` minute bounds of the last `minutes`
/// minutes before `now`, or `None` for an empty range.
fn minute_range(now: i64, minutes: u32) -> Option<(i64, i64)> {
    if minutes == 0 {
        return None;
    }
    let upper = now.div_euclid(60);
    Some((upper.saturating_sub(i64::from(minutes)), upper))
}

/// The ring slot of `minute` in a window of `window` minutes.
fn slot_index(minute: i64, window: i64) -> usize {
    minute.rem_euclid(window) as usize
}

/// Whole minutes covering `window_secs` (rounded up), `None` for all time.
fn window_to_minutes(window_secs: i64) -> Option<u32> {
    if window_secs <= 0 {
        return None;
    }
    let minutes = window_secs / 60 + i64::from(window_secs % 60 != 0);
    Some(u32::try_from(minutes).unwrap_or(u32::MAX))
}

impl WindowedAnalytics {
    /// An empty shard.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `cfg` does not [validate](WindowConfig::validate).
    pub fn new(cfg: &WindowConfig) -> Result<Self> {
        cfg.validate()?;
        let mut ring = Vec::new();
        ring.resize_with(cfg.window_minutes as usize, || None);
        Ok(WindowedAnalytics {
            cfg: *cfg,
            users: Hll::new(),
            cms: CountMin::new(cfg.cms_depth, cfg.cms_width)?,
            channels: SpaceSaving::new(cfg.topk_capacity)?,
            ring,
            events: 0,
            run: RunCounts::default(),
        })
    }

    /// The configuration this shard was built with.
    pub fn config(&self) -> &WindowConfig {
        &self.cfg
    }

    /// Records one event. `ts` is unix seconds, already clamped by the caller
    /// (never in the future of the processor clock).
    ///
    /// The all-time sketches always count the event; its minute's slot counts
    /// it unless the slot already holds a later minute (the event is older than
    /// the window as far as this shard knows).
    pub fn observe(&mut self, user_id: &[u8], channel_id: &str, ts: i64) {
        self.observe_run([(user_id, channel_id, ts)]);
    }

    /// Records a run of events `(user_id, channel_id, ts)`, each as
    /// [`observe`](Self::observe) would, with the channel updates grouped (see the
    /// [module docs](self)).
    pub fn observe_run<'a>(&mut self, events: impl IntoIterator<Item = (&'a [u8], &'a str, i64)>) {
        for (user_id, channel_id, ts) in events {
            self.events += 1;
            let minute = ts.div_euclid(60);
            let user = redis_hll_hash(user_id);
            self.users.add_hash(user);
            if let Some(slot) = self.minute_slot(minute) {
                slot.users.add_hash(user);
            }
            let channel = hash64(channel_id.as_bytes());
            if !self.run.add(channel_id, channel, minute) {
                self.apply_run();
                let added = self.run.add(channel_id, channel, minute);
                debug_assert!(added, "an empty run table takes a group");
            }
        }
        self.apply_run();
    }

    /// Applies the run's channel groups to the channel sketches and clears it.
    fn apply_run(&mut self) {
        let window = i64::from(self.cfg.window_minutes);
        for group in &self.run.groups {
            let name = self.run.name(group);
            self.cms.add(name.as_bytes(), group.count);
            self.channels.add_hashed(name, group.hash, group.count);
            // The user loop has claimed the slot for this minute unless a later
            // minute of the same run took it over (then this one has expired).
            if let Some(slot) = &mut self.ring[slot_index(group.minute, window)]
                && slot.minute == group.minute
            {
                slot.channels.add_hashed(name, group.hash, group.count);
            }
        }
        self.run.clear();
    }

    /// The slot of `minute`, claimed (reset, or allocated) if it holds an older
    /// minute; `None` if it holds a later one.
    fn minute_slot(&mut self, minute: i64) -> Option<&mut MinuteSlot> {
        let index = slot_index(minute, i64::from(self.cfg.window_minutes));
        match &mut self.ring[index] {
            Some(slot) if slot.minute > minute => return None,
            Some(slot) if slot.minute < minute => {
                // The ring wrapped: this minute replaces an expired one.
                slot.users.clear();
                slot.channels.clear();
                slot.minute = minute;
            }
            Some(_) => {}
            None => {
                self.ring[index] = Some(Box::new(MinuteSlot {
                    minute,
                    users: Hll::new(),
                    channels: SpaceSaving::new(self.cfg.minute_topk_capacity)
                        .expect("capacity validated by WindowConfig::validate"),
                }));
            }
        }
        self.ring[index].as_deref_mut()
    }

    /// HLL of every user seen.
    pub fn all_time_users(&self) -> &Hll {
        &self.users
    }

    /// Count-Min sketch of every channel event.
    pub fn cms(&self) -> &CountMin {
        &self.cms
    }

    /// Space-Saving summary of every channel event.
    pub fn all_time_channels(&self) -> &SpaceSaving {
        &self.channels
    }

    /// The minute slots whose minute lies in `(now_min - minutes, now_min]`
    /// with `now_min = now.div_euclid(60)`, `minutes` capped at the window.
    fn slots_in(&self, now: i64, minutes: u32) -> impl Iterator<Item = &MinuteSlot> {
        let range = minute_range(now, minutes.min(self.cfg.window_minutes));
        self.ring
            .iter()
            .flatten()
            .map(|slot| &**slot)
            .filter(move |slot| range.is_some_and(|(lo, hi)| slot.minute > lo && slot.minute <= hi))
    }

    /// Merges into `out` the minute HLLs whose minute lies in
    /// `(now_min - minutes, now_min]` (`now_min = now.div_euclid(60)`;
    /// `minutes` is capped at the configured window).
    pub fn merge_users_window(&self, out: &mut Hll, now: i64, minutes: u32) {
        for slot in self.slots_in(now, minutes) {
            out.merge(&slot.users);
        }
    }

    /// Merges into `out` the per-minute channel summaries in the same range as
    /// [`merge_users_window`](Self::merge_users_window).
    pub fn merge_channels_window(&self, out: &mut SpaceSaving, now: i64, minutes: u32) {
        for slot in self.slots_in(now, minutes) {
            out.merge(&slot.channels);
        }
    }

    /// Events recorded in minute `minute` (`ts.div_euclid(60)`): the total of its
    /// slot's channel summary, 0 when the slot holds another minute or none. A
    /// change detector for publishers: it grows with every event of the minute.
    pub fn minute_events(&self, minute: i64) -> u64 {
        match &self.ring[slot_index(minute, i64::from(self.cfg.window_minutes))] {
            Some(slot) if slot.minute == minute => slot.channels.total(),
            _ => 0,
        }
    }

    /// Events recorded (merged shards' included).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Configured window length in minutes.
    pub fn window_minutes(&self) -> u32 {
        self.cfg.window_minutes
    }

    /// Appends the shard's sketches (not its configuration: the journal's
    /// fingerprint holds that) for a journal's checkpoint.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use crate::journal::codec::Put;
        out.put_u64(self.events);
        out.put_bytes(&self.users.to_bytes());
        out.put_bytes(&self.cms.to_bytes());
        self.channels.encode(out);
        let slots: Vec<(usize, &MinuteSlot)> = self
            .ring
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_deref().map(|s| (i, s)))
            .filter(|(_, s)| s.minute != i64::MIN)
            .collect();
        out.put_u64(slots.len() as u64);
        for (_, slot) in slots {
            out.put_i64(slot.minute);
            out.put_bytes(&slot.users.to_bytes());
            slot.channels.encode(out);
        }
    }

    /// Reads what [`WindowedAnalytics::encode`] wrote into a shard of `cfg`.
    pub fn decode(cfg: &WindowConfig, g: &mut crate::journal::codec::Get<'_>) -> Result<Self> {
        let mut shard = WindowedAnalytics::new(cfg)?;
        let corrupt = |e: Error| Error::corrupt(format!("a processor's sketch: {e}"));
        shard.events = g.u64()?;
        shard.users = Hll::from_bytes(g.bytes()?).map_err(corrupt)?;
        shard.cms = CountMin::from_bytes(g.bytes()?).map_err(corrupt)?;
        if shard.cms.depth() != cfg.cms_depth || shard.cms.width() != cfg.cms_width {
            return Err(Error::corrupt(
                "a processor's Count-Min sketch has other dimensions",
            ));
        }
        shard.channels = SpaceSaving::decode(g)?;
        let window = i64::from(cfg.window_minutes);
        for _ in 0..g.count(16)? {
            let minute = g.i64()?;
            let users = Hll::from_bytes(g.bytes()?).map_err(corrupt)?;
            let channels = SpaceSaving::decode(g)?;
            let index = slot_index(minute, window);
            if shard.ring[index].is_some() {
                return Err(Error::corrupt(
                    "two minutes of a processor's sketch share a slot",
                ));
            }
            shard.ring[index] = Some(Box::new(MinuteSlot {
                minute,
                users,
                channels,
            }));
        }
        Ok(shard)
    }

    /// Merges `other` (a shard of the same configuration) into this one: the
    /// union of both streams. A minute slot holding a later minute on one side
    /// wins over an earlier one on the other, as in a shard fed both streams.
    pub fn merge_from(&mut self, other: &WindowedAnalytics) -> Result<()> {
        self.events += other.events;
        self.users.merge(&other.users);
        self.cms.merge(&other.cms)?;
        self.channels.merge(&other.channels);
        for (mine, theirs) in self.ring.iter_mut().zip(&other.ring) {
            let Some(theirs) = theirs.as_deref() else {
                continue;
            };
            match mine {
                Some(m) if m.minute == theirs.minute => {
                    m.users.merge(&theirs.users);
                    m.channels.merge(&theirs.channels);
                }
                Some(m) if m.minute > theirs.minute => {}
                _ => *mine = Some(Box::new(theirs.clone())),
            }
        }
        Ok(())
    }

    /// Forgets everything (keeps the allocations).
    pub fn clear(&mut self) {
        self.events = 0;
        self.users.clear();
        self.cms.clear();
        self.channels.clear();
        for slot in self.ring.iter_mut().flatten() {
            slot.users.clear();
            slot.channels.clear();
            slot.minute = i64::MIN;
        }
    }
}

/// A channel and its (estimated) number of events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelCount {
    /// Channel id.
    pub channel: String,
    /// Estimated number of events; never below the true count of the summaries
    /// it comes from.
    pub count: u64,
}

/// The HLL of the users seen by `shards` in the last `window_secs` seconds
/// before `now` (rounded up to whole minutes, capped at each shard's window),
/// or over all time if `window_secs <= 0`.
pub fn window_hll<'a>(
    shards: impl IntoIterator<Item = &'a WindowedAnalytics>,
    window_secs: i64,
    now: i64,
) -> Hll {
    let mut out = Hll::new();
    match window_to_minutes(window_secs) {
        None => shards.into_iter().for_each(|s| out.merge(&s.users)),
        Some(minutes) => shards
            .into_iter()
            .for_each(|s| s.merge_users_window(&mut out, now, minutes)),
    }
    out
}

/// Estimated number of distinct users seen by `shards` in the window of
/// [`window_hll`] (all time if `window_secs <= 0`).
pub fn unique_users<'a>(
    shards: impl IntoIterator<Item = &'a WindowedAnalytics>,
    window_secs: i64,
    now: i64,
) -> u64 {
    window_hll(shards, window_secs, now).count()
}

/// The `k` channels with the most events across `shards`, by count descending
/// then channel id ascending: over the last `window_secs` seconds before `now`
/// (rounded up to whole minutes, capped at each shard's window) from the
/// per-minute summaries, or from the all-time summaries if `window_secs <= 0`.
///
/// The summaries are merged into one of the largest configured capacity (and
/// at least `k`), so counts are upper bounds that are exact for channels that
/// never left the summaries.
pub fn top_channels<'a>(
    shards: impl IntoIterator<Item = &'a WindowedAnalytics>,
    k: usize,
    window_secs: i64,
    now: i64,
) -> Vec<ChannelCount> {
    let shards: Vec<&WindowedAnalytics> = shards.into_iter().collect();
    if k == 0 || shards.is_empty() {
        return Vec::new();
    }
    let capacity = shards
        .iter()
        .map(|s| s.cfg.topk_capacity.max(s.cfg.minute_topk_capacity))
        .max()
        .unwrap_or(1)
        .max(k)
        .min(topk::MAX_CAPACITY);
    let mut acc = SpaceSaving::new(capacity).expect("capacity within 1..=MAX_CAPACITY");
    match window_to_minutes(window_secs) {
        None => shards.iter().for_each(|s| acc.merge(&s.channels)),
        Some(minutes) => shards
            .iter()
            .for_each(|s| s.merge_channels_window(&mut acc, now, minutes)),
    }
    acc.top(k)
        .into_iter()
        .map(|(channel, count, _error)| ChannelCount { channel, count })
        .collect()
}

/// Events per minute across `shards`: `out[i]` for minute `first_minute + i`
/// (see [`WindowedAnalytics::minute_events`]).
pub fn minute_events<'a>(
    shards: impl IntoIterator<Item = &'a WindowedAnalytics>,
    first_minute: i64,
    out: &mut [u64],
) {
    out.fill(0);
    for shard in shards {
        for (i, n) in out.iter_mut().enumerate() {
            *n += shard.minute_events(first_minute.saturating_add(i as i64));
        }
    }
}

/// All-time estimated number of events of `channel` across `shards`: the sum
/// of each shard's Count-Min estimate (never below the true count, and at
/// least as tight as the estimate of the merged sketch).
pub fn channel_count<'a>(
    shards: impl IntoIterator<Item = &'a WindowedAnalytics>,
    channel: &str,
) -> u64 {
    let h = super::hash::hash128(channel.as_bytes());
    shards
        .into_iter()
        .map(|s| s.cms.estimate_hash(h))
        .fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_eq_is_slice_equality_at_every_length() {
        let a: Vec<u8> = (0..40).collect();
        for n in 0..=40 {
            let copy = a[..n].to_vec(); // equal bytes at another address
            assert!(short_eq(&a[..n], &copy), "equal, length {n}");
            for i in 0..n {
                let mut b = a[..n].to_vec();
                b[i] ^= 0x40;
                assert!(!short_eq(&a[..n], &b), "differs at {i} of {n}");
            }
            if n > 0 {
                assert!(!short_eq(&a[..n], &a[..n - 1]), "lengths {n} and {}", n - 1);
            }
        }
    }

    const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z, a whole minute.

    fn shard() -> WindowedAnalytics {
        WindowedAnalytics::new(&WindowConfig::default()).unwrap()
    }

    fn user(i: u64) -> Vec<u8> {
        format!("{}", 100_000_000_000_000_000 + i).into_bytes()
    }

    /// A run with more `(channel, minute)` groups than the run table holds (so it
    /// is applied mid-run), spanning minutes and a ring wrap-around, gives the
    /// same counts, windows and top channels as recording event by event.
    #[test]
    fn grouped_runs_match_event_by_event() {
        let cfg = WindowConfig {
            window_minutes: 3,
            ..WindowConfig::default()
        };
        let mut one = WindowedAnalytics::new(&cfg).unwrap();
        let mut grouped = WindowedAnalytics::new(&cfg).unwrap();
        // 300 channels over 5 minutes (the 3-minute ring wraps), events in order
        // of time except a few late ones; channel c has c % 7 + 1 events a minute.
        let mut events: Vec<(Vec<u8>, String, i64)> = Vec::new();
        for minute in 0..5i64 {
            for c in 0..300u64 {
                for k in 0..(c % 7 + 1) {
                    let ts = T0 + minute * 60 + (k as i64 % 60);
                    events.push((user(c * 10 + k), format!("c{c:03}"), ts));
                }
            }
            events.push((user(999), "late".into(), T0 + (minute - 1) * 60));
        }
        for (u, c, ts) in &events {
            one.observe(u, c, *ts);
        }
        for run in events.chunks(700) {
            grouped.observe_run(run.iter().map(|(u, c, ts)| (u.as_slice(), c.as_str(), *ts)));
        }
        let now = T0 + 5 * 60 - 1;
        for c in (0..300u64)
            .map(|c| format!("c{c:03}"))
            .chain(["late".into()])
        {
            assert_eq!(
                channel_count([&one], &c),
                channel_count([&grouped], &c),
                "{c}"
            );
        }
        for window in [0, 60, 120, 180] {
            assert_eq!(
                unique_users([&one], window, now),
                unique_users([&grouped], window, now),
                "users in {window}s"
            );
            let top_one = top_channels([&one], 10, window, now);
            let top_grouped = top_channels([&grouped], 10, window, now);
            assert_eq!(top_one.len(), 10);
            // The heavy channels are counted exactly either way.
            let counts = |v: &[ChannelCount]| v.iter().map(|c| c.count).collect::<Vec<_>>();
            assert_eq!(counts(&top_one), counts(&top_grouped), "top in {window}s");
        }
    }

    #[test]
    fn config_is_validated() {
        assert!(WindowConfig::default().validate().is_ok());
        let bad = [
            WindowConfig {
                window_minutes: 0,
                ..Default::default()
            },
            WindowConfig {
                window_minutes: 10_081,
                ..Default::default()
            },
            WindowConfig {
                cms_depth: 0,
                ..Default::default()
            },
            WindowConfig {
                cms_width: 0,
                ..Default::default()
            },
            WindowConfig {
                topk_capacity: 0,
                ..Default::default()
            },
            WindowConfig {
                minute_topk_capacity: 0,
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(
                matches!(cfg.validate(), Err(Error::InvalidArgument(_))),
                "{cfg:?}"
            );
            assert!(WindowedAnalytics::new(&cfg).is_err());
        }
        let week = WindowConfig {
            window_minutes: MAX_WINDOW_MINUTES,
            ..Default::default()
        };
        let w = WindowedAnalytics::new(&week).unwrap();
        assert_eq!(w.window_minutes(), MAX_WINDOW_MINUTES);
        assert_eq!(w.config(), &week);
        let parsed: WindowConfig = serde_json::from_str(r#"{"window_minutes": 15}"#).unwrap();
        assert_eq!(
            parsed,
            WindowConfig {
                window_minutes: 15,
                ..Default::default()
            }
        );
    }

    #[test]
    fn minute_events_count_each_minute_of_the_ring() {
        let mut a = shard();
        let mut b = shard();
        let m = 29_000_000_i64;
        for i in 0..10u64 {
            a.observe(&user(i), "c", m * 60 + 5);
        }
        for i in 0..3u64 {
            b.observe(&user(i), "d", (m + 2) * 60);
        }
        let mut out = [9u64; 4];
        minute_events([&a, &b], m - 1, &mut out);
        assert_eq!(out, [0, 10, 0, 3]);
        // A minute one window later reuses the slot: the old minute reads 0.
        a.observe(&user(1), "c", (m + i64::from(a.window_minutes())) * 60);
        assert_eq!(a.minute_events(m), 0);
        assert_eq!(a.minute_events(m + i64::from(a.window_minutes())), 1);
    }

    #[test]
    fn empty_shard_answers_zero() {
        let w = shard();
        assert_eq!(unique_users([&w], 3600, T0), 0);
        assert_eq!(unique_users([&w], 0, T0), 0);
        assert!(top_channels([&w], 10, 0, T0).is_empty());
        assert_eq!(channel_count([&w], "x"), 0);
        assert_eq!(unique_users(std::iter::empty(), 0, T0), 0);
        assert!(top_channels(std::iter::empty(), 10, 60, T0).is_empty());
        // Slots are allocated lazily.
        assert_eq!(w.ring.iter().flatten().count(), 0);
    }

    /// The sketch of exactly the users `ids`.
    fn hll_of(ids: impl IntoIterator<Item = u64>) -> Hll {
        let mut h = Hll::new();
        ids.into_iter().for_each(|i| h.add(&user(i)));
        h
    }

    /// `got` is within HLL accuracy of `want` (±2 or ±3 %).
    fn assert_near(got: u64, want: u64) {
        assert!(got.abs_diff(want) <= 2 + want * 3 / 100, "{got} vs {want}");
    }

    #[test]
    fn users_from_two_hours_ago_are_not_in_the_last_hour() {
        let mut w = shard();
        let now = T0 + 3 * 3600;
        for i in 0..500 {
            w.observe(&user(i), "old", now - 2 * 3600);
        }
        for i in 1000..1300 {
            w.observe(&user(i), "new", now - 600 + (i as i64 % 300));
        }
        let recent = hll_of(1000..1300);
        let all = hll_of((0..500).chain(1000..1300));
        assert_eq!(window_hll([&w], 3600, now), recent);
        assert_eq!(window_hll([&w], 0, now), all);
        assert_eq!(window_hll([&w], -5, now), all);
        assert_eq!(w.all_time_users(), &all);
        // A 3-hour query is capped at the 60-minute window.
        assert_eq!(window_hll([&w], 3 * 3600, now), recent);
        assert_near(unique_users([&w], 3600, now), 300);
        assert_near(unique_users([&w], 0, now), 800);
    }

    #[test]
    fn minute_boundaries() {
        let mut w = shard();
        w.observe(b"a", "c", T0 + 59); // minute T0/60
        w.observe(b"b", "c", T0 + 60); // the next minute
        // Last minute only.
        assert_eq!(unique_users([&w], 60, T0 + 60), 1);
        assert_eq!(unique_users([&w], 60, T0 + 119), 1);
        let mut only = Hll::new();
        w.merge_users_window(&mut only, T0 + 119, 1);
        let mut b = Hll::new();
        b.add(b"b");
        assert_eq!(only, b);
        // Seconds round up to whole minutes: 61 s = the last 2 minutes.
        assert_eq!(unique_users([&w], 61, T0 + 60), 2);
        assert_eq!(unique_users([&w], 120, T0 + 60), 2);
        // Seen from the earlier minute, the later one is in the future.
        assert_eq!(unique_users([&w], 3600, T0 + 59), 1);
        // Zero minutes is an empty range.
        let mut none = Hll::new();
        w.merge_users_window(&mut none, T0 + 60, 0);
        assert!(none.is_empty());
        // Negative timestamps use floor division.
        let mut n = shard();
        n.observe(b"x", "c", -1);
        assert_eq!(unique_users([&n], 60, -1), 1);
        assert_eq!(unique_users([&n], 60, 0), 0);
    }

    #[test]
    fn events_older_than_the_window_count_all_time_only() {
        let mut w = shard();
        let now = T0 + 7200;
        w.observe(b"recent", "fresh", now);
        // Same slot (60 minutes earlier), already holding a later minute.
        w.observe(b"stale", "stale", now - 3600);
        assert_eq!(unique_users([&w], 3600, now), 1);
        assert_eq!(unique_users([&w], 0, now), 2);
        assert_eq!(channel_count([&w], "stale"), 1);
        let window = top_channels([&w], 10, 3600, now);
        assert_eq!(
            window,
            vec![ChannelCount {
                channel: "fresh".into(),
                count: 1
            }]
        );
        assert_eq!(top_channels([&w], 10, 0, now).len(), 2);
        // An old event in a free slot claims it but lies outside the window.
        w.observe(b"older", "older", now - 5 * 3600 + 60);
        assert_eq!(unique_users([&w], 3600, now), 1);
        assert_eq!(unique_users([&w], 0, now), 3);
    }

    #[test]
    fn slots_are_reused_after_the_ring_wraps() {
        let cfg = WindowConfig {
            window_minutes: 5,
            ..Default::default()
        };
        let mut w = WindowedAnalytics::new(&cfg).unwrap();
        // 12 minutes, 10 new users and one channel per minute: minute m has
        // users 10m..10m+10.
        for m in 0..12i64 {
            for i in 0..10 {
                w.observe(
                    &user((m * 10 + i) as u64),
                    &format!("ch{m}"),
                    T0 + m * 60 + 30,
                );
            }
        }
        assert_eq!(w.ring.iter().flatten().count(), 5);
        let now = T0 + 11 * 60 + 59;
        assert_eq!(window_hll([&w], 300, now), hll_of(70..120));
        assert_eq!(window_hll([&w], 120, now), hll_of(100..120));
        assert_eq!(window_hll([&w], 0, now), hll_of(0..120));
        assert_near(unique_users([&w], 300, now), 50);
        let top = top_channels([&w], 100, 300, now);
        let mut names: Vec<&str> = top.iter().map(|c| c.channel.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["ch10", "ch11", "ch7", "ch8", "ch9"]);
        assert!(top.iter().all(|c| c.count == 10));
        // Much later, the window is empty until new events arrive.
        assert_eq!(unique_users([&w], 300, now + 3600), 0);
        w.observe(b"late", "late", now + 3600);
        assert_eq!(unique_users([&w], 300, now + 3600), 1);
        assert_eq!(w.ring.iter().flatten().count(), 5);
        w.clear();
        assert_eq!(unique_users([&w], 0, now + 3600), 0);
        assert_eq!(unique_users([&w], 300, now + 3600), 0);
        assert_eq!(w.cms().total(), 0);
        assert!(w.all_time_channels().is_empty());
        assert!(w.all_time_users().is_empty());
    }

    #[test]
    fn windowed_and_all_time_top_channels_differ() {
        let mut w = shard();
        let now = T0 + 10 * 3600;
        // Hours ago "music" dominated; in the last hour "games" does.
        for i in 0..1000 {
            w.observe(&user(i), "music", now - 5 * 3600 + (i as i64 % 600));
        }
        for i in 0..300 {
            w.observe(&user(i), "games", now - 1800 + (i as i64 % 600));
            w.observe(&user(i), if i % 3 == 0 { "music" } else { "art" }, now - 60);
        }
        let all = top_channels([&w], 2, 0, now);
        assert_eq!(
            all,
            vec![
                ChannelCount {
                    channel: "music".into(),
                    count: 1100
                },
                ChannelCount {
                    channel: "games".into(),
                    count: 300
                },
            ]
        );
        let hour = top_channels([&w], 3, 3600, now);
        assert_eq!(
            hour,
            vec![
                ChannelCount {
                    channel: "games".into(),
                    count: 300
                },
                ChannelCount {
                    channel: "art".into(),
                    count: 200
                },
                ChannelCount {
                    channel: "music".into(),
                    count: 100
                },
            ]
        );
        assert_eq!(top_channels([&w], 1, 3600, now).len(), 1);
        assert!(top_channels([&w], 0, 3600, now).is_empty());
        assert!(channel_count([&w], "music") >= 1100);
        assert_eq!(channel_count([&w], "music"), 1100); // alone in its counters
    }

    #[test]
    fn several_shards_merge() {
        let mut shards: Vec<WindowedAnalytics> = (0..4).map(|_| shard()).collect();
        let now = T0 + 3600;
        // 4000 users over the last 40 minutes, overlapping across shards;
        // channel "c{k}" gets k*10 events spread over the shards.
        for i in 0..4000u64 {
            let ts = now - 2400 + (i as i64 % 2400);
            shards[(i % 4) as usize].observe(&user(i % 3001), "all", ts);
        }
        for k in 1..=20u64 {
            for j in 0..k * 10 {
                shards[(j % 4) as usize].observe(&user(j), &format!("c{k:02}"), now - 60);
            }
        }
        assert_eq!(window_hll(&shards, 3600, now), hll_of(0..3001));
        let users = unique_users(&shards, 3600, now) as f64;
        assert!((users - 3001.0).abs() / 3001.0 < 0.025, "{users}");
        let per_shard: u64 = shards.iter().map(|s| unique_users([s], 3600, now)).sum();
        assert!(
            per_shard > 3500,
            "shards overlap, their sum overcounts: {per_shard}"
        );
        let top = top_channels(&shards, 3, 3600, now);
        let want: Vec<(String, u64)> = vec![
            ("all".into(), 4000),
            ("c20".into(), 200),
            ("c19".into(), 190),
        ];
        let got: Vec<(String, u64)> = top.into_iter().map(|c| (c.channel, c.count)).collect();
        assert_eq!(got, want);
        assert_eq!(channel_count(&shards, "c07"), 70);
        assert_eq!(channel_count(&shards, "all"), 4000);
        let all_time = top_channels(shards.iter(), 1, 0, now);
        assert_eq!(
            all_time[0],
            ChannelCount {
                channel: "all".into(),
                count: 4000
            }
        );
    }
}
