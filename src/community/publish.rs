//! What a publisher sends to Redis of the community analytics: a batch of the
//! *activations* (a user's first event of a day, per guild) and the *heat deltas*
//! (events per hour counted since Redis last acknowledged) gathered since the
//! last batch, in chunks a Redis script applies one at a time.
//!
//! Activations are idempotent in Redis (a day already set in the user's shared
//! record changes nothing), so a batch resent after a restart, or an activation
//! sent twice, cannot count twice. Heat deltas are not: they are the counts minus
//! what Redis acknowledged, which changes only when a batch is acknowledged (one
//! batch waits at a time), and the publisher's sequence numbers make Redis apply
//! each chunk once.
//!
//! Format (little-endian; the Python publisher reads the chunk headers to name
//! the keys, the Lua script reads the entries):
//!
//! ```text
//! batch  := u32 chunks, chunks x (u32 length, chunk)
//! chunk  := u16 guilds, guilds x (u16 length, bytes)      guild 0 is "" (none / all)
//!           u16 heats, heats x (u16 guild index, i32 day)
//!           u32 entries, entries x entry
//! entry  := u8 1, u16 guild index, u64 user hash, i32 day                 activation
//!         | u8 2, u16 heat index, u8 has channel, [u16 length, bytes],
//!           24 x u64 delta                                                heat delta
//! ```
//!
//! An activation of guild 0 is an event without a guild (Redis records it for
//! everyone only); one of guild `g` is recorded for `g` and for everyone. A heat
//! of guild 0 is the all-guilds heat.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::activity::{Hours, IntMap};
use super::{Community, HeatKey, lock};
use crate::error::{Error, Result};
use crate::journal::codec::Put;
use crate::sketch::hash::hash64;

/// Entries per chunk (each chunk one script call: about 10 ms of Redis's time).
pub const CHUNK_ENTRIES: usize = 500;

const ACTIVATION: u8 = 1;
const HEAT: u8 = 2;

/// An entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A user's first event of a day.
    Activation {
        /// Guild (empty: none).
        guild: &'a str,
        /// User hash.
        key: u64,
        /// Day.
        day: i32,
    },
    /// Events to add to a day's hours.
    Heat {
        /// Guild (empty: all guilds).
        guild: &'a str,
        /// Channel (`None`: all channels).
        channel: Option<&'a str>,
        /// Day.
        day: i32,
        /// Per hour.
        delta: Hours,
    },
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(Error::corrupt("community batch: truncated"));
        }
        let (a, b) = self.bytes.split_at(n);
        self.bytes = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn str16(&mut self) -> Result<&'a str> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| Error::corrupt("community batch: a name is not UTF-8"))
    }
}

/// Calls `f` with every entry of `batch`.
///
/// # Errors
/// [`Error::Corrupt`] for bytes that are not a batch.
pub fn for_each_entry<'a>(batch: &'a [u8], mut f: impl FnMut(Entry<'a>)) -> Result<()> {
    if batch.is_empty() {
        // What `drain` returns when there is nothing.
        return Ok(());
    }
    let mut r = Reader { bytes: batch };
    let chunks = r.u32()?;
    for _ in 0..chunks {
        let len = r.u32()? as usize;
        let mut c = Reader {
            bytes: r.take(len)?,
        };
        let guilds = (0..c.u16()?)
            .map(|_| c.str16())
            .collect::<Result<Vec<_>>>()?;
        let mut heats = Vec::new();
        for _ in 0..c.u16()? {
            let g = c.u16()? as usize;
            let day = c.u32()? as i32;
            heats.push((*guilds.get(g).ok_or_else(bad_index)?, day));
        }
        for _ in 0..c.u32()? {
            match c.u8()? {
                ACTIVATION => {
                    let g = c.u16()? as usize;
                    let guild = *guilds.get(g).ok_or_else(bad_index)?;
                    let key = c.u64()?;
                    let day = c.u32()? as i32;
                    f(Entry::Activation { guild, key, day });
                }
                HEAT => {
                    let h = c.u16()? as usize;
                    let (guild, day) = *heats.get(h).ok_or_else(bad_index)?;
                    let channel = match c.u8()? {
                        0 => None,
                        _ => Some(c.str16()?),
                    };
                    let mut delta = [0u64; 24];
                    for d in &mut delta {
                        *d = c.u64()?;
                    }
                    f(Entry::Heat {
                        guild,
                        channel,
                        day,
                        delta,
                    });
                }
                other => {
                    return Err(Error::corrupt(format!(
                        "community batch: entry type {other}"
                    )));
                }
            }
        }
        if !c.bytes.is_empty() {
            return Err(Error::corrupt("community batch: bytes after a chunk"));
        }
    }
    if !r.bytes.is_empty() {
        return Err(Error::corrupt("community batch: bytes after the chunks"));
    }
    Ok(())
}

fn bad_index() -> Error {
    Error::corrupt("community batch: an index out of range")
}

/// Builds the chunks.
#[derive(Default)]
struct Writer {
    chunks: Vec<Vec<u8>>,
    guilds: Vec<Arc<str>>,
    guild_index: HashMap<Arc<str>, u16>,
    heats: Vec<(u16, i32)>,
    heat_index: HashMap<(u16, i32), u16>,
    entries: Vec<u8>,
    n: usize,
}

impl Writer {
    fn guild(&mut self, g: Option<&Arc<str>>) -> u16 {
        let Some(g) = g else {
            return 0;
        };
        if let Some(&i) = self.guild_index.get(g) {
            return i;
        }
        self.guilds.push(Arc::clone(g));
        let i = self.guilds.len() as u16; // index 0 is ""
        self.guild_index.insert(Arc::clone(g), i);
        i
    }

    fn activation(&mut self, g: Option<&Arc<str>>, key: u64, day: i32) {
        let gi = self.guild(g);
        self.entries.put_u8(ACTIVATION);
        self.entries.extend_from_slice(&gi.to_le_bytes());
        self.entries.put_u64(key);
        self.entries.put_u32(day as u32);
        self.entry_done();
    }

    fn heat(&mut self, g: Option<&Arc<str>>, channel: Option<&str>, day: i32, delta: &Hours) {
        let gi = self.guild(g);
        let next = self.heats.len() as u16;
        let hi = *self.heat_index.entry((gi, day)).or_insert(next);
        if hi == next {
            self.heats.push((gi, day));
        }
        self.entries.put_u8(HEAT);
        self.entries.extend_from_slice(&hi.to_le_bytes());
        match channel {
            None => self.entries.put_u8(0),
            Some(c) => {
                self.entries.put_u8(1);
                self.entries
                    .extend_from_slice(&(c.len() as u16).to_le_bytes());
                self.entries.extend_from_slice(c.as_bytes());
            }
        }
        for &d in delta {
            self.entries.put_u64(d);
        }
        self.entry_done();
    }

    fn entry_done(&mut self) {
        self.n += 1;
        if self.n == CHUNK_ENTRIES {
            self.close_chunk();
        }
    }

    fn close_chunk(&mut self) {
        if self.n == 0 {
            return;
        }
        let mut c = Vec::with_capacity(self.entries.len() + 64);
        c.extend_from_slice(&(self.guilds.len() as u16 + 1).to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes());
        for g in &self.guilds {
            c.extend_from_slice(&(g.len() as u16).to_le_bytes());
            c.extend_from_slice(g.as_bytes());
        }
        c.extend_from_slice(&(self.heats.len() as u16).to_le_bytes());
        for &(g, day) in &self.heats {
            c.extend_from_slice(&g.to_le_bytes());
            c.put_u32(day as u32);
        }
        c.put_u32(self.n as u32);
        c.extend_from_slice(&self.entries);
        self.chunks.push(c);
        self.guilds.clear();
        self.guild_index.clear();
        self.heats.clear();
        self.heat_index.clear();
        self.entries.clear();
        self.n = 0;
    }

    fn finish(mut self) -> Vec<u8> {
        self.close_chunk();
        if self.chunks.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        out.put_u32(self.chunks.len() as u32);
        for c in &self.chunks {
            out.put_bytes(c);
        }
        out
    }
}

/// A day's heat summed over the stripes.
#[derive(Default)]
struct Totals {
    all: Hours,
    channels: IntMap<u64, Hours>,
}

impl Community {
    /// Whether anything waits for a batch: activations or heat counted since
    /// the last one.
    pub fn has_changes(&self) -> bool {
        self.cfg.publish
            && self.stripes.iter().any(|s| {
                let st = lock(s);
                !st.pending.is_empty() || !st.dirty.is_empty()
            })
    }

    /// Takes everything gathered since the last batch into a new one (empty when
    /// there is nothing, or publishing is off). The activations leave the
    /// analytics; the heat deltas are what Redis lacks until [`Community::ack`].
    pub fn drain(&self) -> Vec<u8> {
        if !self.cfg.publish || !self.enabled() {
            return Vec::new();
        }
        let mut activations = Vec::new();
        let mut dirty: HashSet<(Option<Arc<str>>, i32)> = HashSet::new();
        let mut newest = i32::MIN;
        for s in &*self.stripes {
            let mut st = lock(s);
            newest = newest.max(st.max_day);
            activations.extend(st.pending.drain().map(|(k, ())| k));
            let taken = std::mem::take(&mut st.dirty);
            for (g, day) in taken {
                let a = match &g {
                    None => Some(&mut st.all),
                    Some(name) => st.guilds.get_mut(&**name),
                };
                if let Some(heat) = a.and_then(|a| a.heat.get_mut(&day)) {
                    heat.dirty = false;
                }
                dirty.insert((g, day));
            }
        }
        let horizon = newest.saturating_sub(self.keep);
        // The dirty days' totals over every stripe, and the channels' names.
        let mut totals: HashMap<(Option<Arc<str>>, i32), Totals> = HashMap::new();
        let mut names: IntMap<u64, Arc<str>> = IntMap::default();
        if !dirty.is_empty() {
            for s in &*self.stripes {
                let st = lock(s);
                for (g, day) in &dirty {
                    let Some(heat) = st.activity(g.as_deref()).and_then(|a| a.heat.get(day)) else {
                        continue;
                    };
                    let t = totals.entry((g.clone(), *day)).or_default();
                    add(&mut t.all, &heat.all);
                    for (ch, hours) in &heat.channels {
                        add(t.channels.entry(*ch).or_insert([0; 24]), hours);
                        if !names.contains_key(ch) {
                            if let Some(n) = st.channel_names.get(ch) {
                                names.insert(*ch, Arc::clone(n));
                            }
                        }
                    }
                }
            }
        }
        let mut w = Writer::default();
        activations.sort_unstable_by(|a, b| (a.2, &a.0, a.1).cmp(&(b.2, &b.0, b.1)));
        for (g, key, day) in &activations {
            if *day >= horizon {
                w.activation(g.as_ref(), *key, *day);
            }
        }
        let mut published = lock(&self.published_heat);
        published.retain(|k, _| k.2 >= horizon);
        let mut days: Vec<_> = totals.into_iter().collect();
        days.sort_unstable_by(|a, b| (a.0.1, &a.0.0).cmp(&(b.0.1, &b.0.0)));
        for ((g, day), t) in &days {
            if *day < horizon {
                continue;
            }
            let key: HeatKey = (g.clone(), None, *day);
            if let Some(delta) = delta(&t.all, published.get(&key)) {
                w.heat(g.as_ref(), None, *day, &delta);
            }
            let mut channels: Vec<_> = t.channels.iter().collect();
            channels.sort_unstable_by_key(|(ch, _)| **ch);
            for (ch, hours) in channels {
                let key: HeatKey = (g.clone(), Some(*ch), *day);
                let Some(name) = names.get(ch) else {
                    continue;
                };
                if let Some(delta) = delta(hours, published.get(&key)) {
                    w.heat(g.as_ref(), Some(name), *day, &delta);
                }
            }
        }
        w.finish()
    }

    /// Redis applied `batch` (from [`Community::drain`]): its heat deltas are now
    /// what Redis holds.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for bytes that are not a batch (nothing changes).
    pub fn ack(&self, batch: &[u8]) -> Result<()> {
        let mut heats = Vec::new();
        for_each_entry(batch, |e| {
            if let Entry::Heat {
                guild,
                channel,
                day,
                delta,
            } = e
            {
                heats.push((guild, channel, day, delta));
            }
        })?;
        let mut published = lock(&self.published_heat);
        for (guild, channel, day, delta) in heats {
            let g = (!guild.is_empty()).then(|| Arc::<str>::from(guild));
            let ch = channel.map(|c| hash64(c.as_bytes()));
            add(published.entry((g, ch, day)).or_insert([0; 24]), &delta);
        }
        Ok(())
    }

    /// Puts back what [`Community::drain`] took for `batch`, which was not kept
    /// after all (its logging failed): its activations wait again, its days'
    /// heat is compared with Redis's again.
    pub fn restore(&self, batch: &[u8]) {
        let mut acts = Vec::new();
        let mut days = HashSet::new();
        // Our own bytes: they parse.
        let _ = for_each_entry(batch, |e| match e {
            Entry::Activation { guild, key, day } => acts.push((guild, key, day)),
            Entry::Heat { guild, day, .. } => {
                days.insert((guild, day));
            }
        });
        let stripes = self.stripes.len();
        for (guild, key, day) in acts {
            let mut st = lock(&self.stripes[super::stripe_of(key, stripes)]);
            let g = (!guild.is_empty()).then(|| Arc::<str>::from(guild));
            st.pending.insert((g, key, day), ());
        }
        let mut first = lock(&self.stripes[0]);
        for (guild, day) in days {
            first
                .dirty
                .push(((!guild.is_empty()).then(|| Arc::<str>::from(guild)), day));
        }
    }

    /// Replays the drain of `batch`: its activations leave the pending ones (the
    /// replay of a journal, where the runs and the drain may come back in another
    /// order than they ran: an activation that was drained then is not pending
    /// now, and one that was not is).
    ///
    /// # Errors
    /// [`Error::Corrupt`] for bytes that are not a batch (nothing changes).
    pub fn forget(&self, batch: &[u8]) -> Result<()> {
        let mut acts = Vec::new();
        for_each_entry(batch, |e| {
            if let Entry::Activation { guild, key, day } = e {
                acts.push((guild, key, day));
            }
        })?;
        let stripes = self.stripes.len();
        for (guild, key, day) in acts {
            let mut st = lock(&self.stripes[super::stripe_of(key, stripes)]);
            let g = (!guild.is_empty()).then(|| Arc::<str>::from(guild));
            st.pending.remove(&(g, key, day));
        }
        Ok(())
    }
}

fn add(into: &mut Hours, from: &Hours) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// `now - published`, hour by hour (`None` when nothing is new; an hour below
/// what Redis holds, which a restart from an older checkpoint can leave, adds
/// nothing).
fn delta(now: &Hours, published: Option<&Hours>) -> Option<Hours> {
    let mut out = [0u64; 24];
    let mut any = false;
    for (i, o) in out.iter_mut().enumerate() {
        *o = now[i].saturating_sub(published.map_or(0, |p| p[i]));
        any |= *o > 0;
    }
    any.then_some(out)
}
