//! Community analytics over days: active users by day, week and month (and so
//! stickiness), retention cohorts and activity heatmaps, overall and per guild.
//!
//! Each user's activity is kept exactly: per population (every guild seen, and
//! everyone), a table from the 64-bit hash of the user id to the day the user was
//! first seen and a ring of active-day bits covering the history plus a month
//! (see [`activity`]). A user's first event of a day updates the day counters
//! (DAU, WAU, MAU, new users) and the cohort cells incrementally, so every query
//! reads a handful of counters instead of the users. Answers are exact (up to a
//! collision of two ids' 64-bit hashes: for a million users, a chance of about
//! 3 in 100 million of one pair).
//!
//! The state is split into *stripes* by user hash, each under its own lock, so
//! workers record their runs side by side; a user lives in one stripe, so the
//! counters of the stripes add up and a query sums them.
//!
//! Days are UTC (`ts.div_euclid(86400)`); weeks start on Monday. The history a
//! query may ask about is the `history_days` days ending with the processor's
//! "now". What a query can see is exact for every event within that history
//! whatever the order events arrive in; state older than the history plus a ring
//! and a month before the newest day seen is dropped.

mod activity;
pub mod publish;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use activity::Hours;
use activity::{Activity, DayCount, IntMap, Observed};

use crate::error::{Error, Result};
use crate::journal::codec::{Get, Put};
use crate::sketch::hash::hash64;

/// Days of history kept by default.
pub const DEFAULT_HISTORY_DAYS: u32 = 90;
/// Longest history accepted, in days.
pub const MAX_HISTORY_DAYS: u32 = 400;
/// Longest guild id, in bytes.
pub const MAX_GUILD_BYTES: usize = 1024;

pub(crate) const WEEK: i32 = 7;
pub(crate) const MONTH: i32 = 30;
const SECS_PER_DAY: i64 = 86_400;

/// The UTC day (days since 1970-01-01) of unix time `ts`.
pub fn day_of(ts: i64) -> i32 {
    // Timestamps are at most year 9999: the day fits an i32 many times over.
    ts.div_euclid(SECS_PER_DAY) as i32
}

/// The Monday-based week of `day` (1970-01-01 was a Thursday: week 0 starts on
/// Monday 1969-12-29).
pub fn week_of(day: i32) -> i32 {
    (day + 3).div_euclid(WEEK)
}

/// The first day (a Monday) of `week`.
pub fn week_start(week: i32) -> i32 {
    week * WEEK - 3
}

/// `day`'s weekday, Monday 0 to Sunday 6.
pub fn weekday(day: i32) -> usize {
    (day + 3).rem_euclid(WEEK) as usize
}

/// What `active_users` counts for a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Users active that day.
    Day,
    /// Users active in the 7 days ending that day.
    Week,
    /// Users active in the 30 days ending that day.
    Month,
}

/// The length of a retention cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CohortPeriod {
    /// One day.
    Day,
    /// One week, Monday to Sunday.
    Week,
}

impl CohortPeriod {
    fn of(self, day: i32) -> i32 {
        match self {
            CohortPeriod::Day => day,
            CohortPeriod::Week => week_of(day),
        }
    }

    fn start(self, period: i32) -> i32 {
        match self {
            CohortPeriod::Day => period,
            CohortPeriod::Week => week_start(period),
        }
    }

    fn days(self) -> i32 {
        match self {
            CohortPeriod::Day => 1,
            CohortPeriod::Week => WEEK,
        }
    }
}

/// One retention cohort: the users first seen in a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    /// The period's first day.
    pub start_day: i32,
    /// Users first seen in the period.
    pub size: u64,
    /// `active[k]`: how many of them were active in the `k`-th period after it
    /// (`active[0] == size`), up to the period holding "now".
    pub active: Vec<u64>,
}

/// Settings of the community analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommunityConfig {
    /// Days of history the queries may ask about, `1..=400`; 0 turns the
    /// community analytics off (default 90).
    pub history_days: u32,
    /// Keep what changed for a publisher to send to Redis ([`Community::drain`]).
    pub publish: bool,
}

impl Default for CommunityConfig {
    fn default() -> Self {
        CommunityConfig {
            history_days: DEFAULT_HISTORY_DAYS,
            publish: false,
        }
    }
}

impl CommunityConfig {
    /// Checks the range of `history_days`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is out of range.
    pub fn validate(&self) -> Result<()> {
        if self.history_days > MAX_HISTORY_DAYS {
            return Err(Error::invalid(format!(
                "history_days {} is outside 0..={MAX_HISTORY_DAYS}",
                self.history_days
            )));
        }
        Ok(())
    }

    /// Days in each user's ring: the history, and a month before it for the
    /// monthly counts of its first days.
    pub(crate) fn ring_days(&self) -> i32 {
        self.history_days as i32 + MONTH
    }
}

/// A run's heat, grouped: (hash of the guild id, hash of the channel id, day,
/// hour) -> (events, the index of the run's first event of the group).
type HeatRun = NameMap<(u64, u64, i32, u8), (u32, u32)>;

/// What a caller of [`Community::observe_run`] keeps from run to run (so a run
/// allocates nothing once the buffers have grown).
#[derive(Default)]
pub struct RunScratch {
    keys: Vec<(u32, u64)>,
    heat: HeatRun,
}

/// An event as the community analytics see it.
#[derive(Debug, Clone, Copy)]
pub struct CommunityEvent<'a> {
    /// Who.
    pub user: &'a [u8],
    /// The guild (empty: none; the event counts only in the all-guilds figures).
    pub guild: &'a str,
    /// Where.
    pub channel: &'a str,
    /// Unix seconds.
    pub ts: i64,
}

/// A key of the published heat: (guild, `None` = all guilds), (channel hash,
/// `None` = all channels), day.
pub(crate) type HeatKey = (Option<Arc<str>>, Option<u64>, i32);

/// A map keyed by names or small tuples, with the integer hasher.
type NameMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<activity::IntHasher>>;

/// One stripe: the users whose hash falls in it, per guild and overall.
pub(crate) struct Stripe {
    /// The newest day observed (`i32::MIN`: none).
    max_day: i32,
    all: Activity,
    guilds: NameMap<Arc<str>, Activity>,
    /// Publishing: activations not yet in a batch, (guild of the event, user, day).
    pending: NameMap<(Option<Arc<str>>, u64, i32), ()>,
    /// Publishing: the (guild, day) heats counted into since the last batch.
    dirty: Vec<(Option<Arc<str>>, i32)>,
    /// Publishing: channel ids by hash.
    channel_names: IntMap<u64, Arc<str>>,
}

impl Stripe {
    fn new(ring: i32) -> Stripe {
        Stripe {
            max_day: i32::MIN,
            all: Activity::new(ring),
            guilds: HashMap::default(),
            pending: HashMap::default(),
            dirty: Vec::new(),
            channel_names: IntMap::default(),
        }
    }

    fn activity(&self, guild: Option<&str>) -> Option<&Activity> {
        match guild {
            None => Some(&self.all),
            Some(g) => self.guilds.get(g),
        }
    }
}

/// The community analytics of one processor: see the [module docs](self).
pub struct Community {
    cfg: CommunityConfig,
    /// Days each user's ring holds.
    ring: i32,
    /// Days before the newest one whose counters are kept.
    keep: i32,
    stripes: Box<[Mutex<Stripe>]>,
    /// Publishing: the heat Redis acknowledged.
    published_heat: Mutex<NameMap<HeatKey, Hours>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a stripe poisons the processor anyway; the state of a
    // counter is no worse than a lost event.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The stripe of a user hash (bits 40..48: not those a table's buckets use).
fn stripe_of(key: u64, stripes: usize) -> usize {
    ((key >> 40) as usize) & (stripes - 1)
}

impl Community {
    /// Empty analytics with `stripes` stripes (rounded up to a power of two).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `cfg` does not validate.
    pub fn new(cfg: CommunityConfig, stripes: usize) -> Result<Community> {
        cfg.validate()?;
        let ring = activity::Users::new(cfg.ring_days()).ring();
        let n = stripes.clamp(1, 256).next_power_of_two();
        Ok(Community {
            cfg,
            ring,
            keep: ring + MONTH + 1,
            stripes: (0..n).map(|_| Mutex::new(Stripe::new(ring))).collect(),
            published_heat: Mutex::new(HashMap::default()),
        })
    }

    /// The settings.
    pub fn config(&self) -> &CommunityConfig {
        &self.cfg
    }

    /// Whether anything is kept (`history_days > 0`).
    pub fn enabled(&self) -> bool {
        self.cfg.history_days > 0
    }

    /// Records a run of `n` events, `event(i)` giving the `i`-th (called several
    /// times per event). `scratch` is the caller's, reused from run to run.
    ///
    /// Per stripe of the run's users, under its lock: each event's user is looked
    /// up (overall and in its guild) for a first event of the day; its heat is
    /// counted per (guild, channel, day, hour) first and applied once per group, so
    /// a run over a dozen channels makes a dozen heat updates, not one per event.
    pub fn observe_run<'a>(
        &self,
        scratch: &mut RunScratch,
        n: usize,
        event: impl Fn(usize) -> CommunityEvent<'a>,
    ) {
        if !self.enabled() || n == 0 {
            return;
        }
        let stripes = self.stripes.len();
        scratch.keys.clear();
        let mut used = 0u64;
        let mut many = false;
        for i in 0..n {
            let key = hash64(event(i).user);
            let s = stripe_of(key, stripes);
            scratch.keys.push((s as u32, key));
            if s < 64 {
                used |= 1 << s;
            } else {
                many = true;
            }
        }
        for s in 0..stripes {
            if !many && (s >= 64 || used & (1 << s) == 0) {
                continue;
            }
            let mut st = lock(&self.stripes[s]);
            scratch.heat.clear();
            for (i, &(si, key)) in scratch.keys.iter().enumerate() {
                if si as usize == s {
                    self.observe(&mut st, key, &event(i), i as u32, &mut scratch.heat);
                }
            }
            self.apply_heat(&mut st, &scratch.heat, &event);
        }
    }

    /// One event's user, overall and in its guild; its heat goes into `heat`
    /// (grouped: applied by [`Community::apply_heat`]).
    fn observe(
        &self,
        st: &mut Stripe,
        key: u64,
        ev: &CommunityEvent<'_>,
        index: u32,
        heat: &mut HeatRun,
    ) {
        let day = day_of(ev.ts);
        if day > st.max_day {
            let old = st.max_day;
            st.max_day = day;
            if old != i32::MIN {
                let horizon = day - self.keep;
                st.all.trim(horizon);
                for a in st.guilds.values_mut() {
                    a.trim(horizon);
                }
                if self.cfg.publish {
                    st.pending.retain(|k, _| k.2 >= horizon);
                    st.dirty.retain(|k| k.1 >= horizon);
                }
            }
        }
        let horizon = st.max_day - self.keep;
        let publishing = self.cfg.publish && day >= horizon;
        // Everyone.
        let activated = st.all.observe_user(key, day, horizon) == Observed::Activated;
        if publishing && activated && ev.guild.is_empty() {
            st.pending.insert((None, key, day), ());
        }
        // The guild.
        if !ev.guild.is_empty() {
            let a = match st.guilds.get_mut(ev.guild) {
                Some(a) => a,
                None => st
                    .guilds
                    .entry(Arc::from(ev.guild))
                    .or_insert_with(|| Activity::new(self.ring)),
            };
            if a.observe_user(key, day, horizon) == Observed::Activated && publishing {
                let name = st
                    .guilds
                    .get_key_value(ev.guild)
                    .map(|(k, _)| Arc::clone(k));
                st.pending.insert((name, key, day), ());
            }
        }
        if day >= horizon {
            let hour = (ev.ts.rem_euclid(SECS_PER_DAY) / 3600) as u8;
            let group = (
                // (Most events name no guild: no hash for those.)
                if ev.guild.is_empty() {
                    0
                } else {
                    hash64(ev.guild.as_bytes())
                },
                hash64(ev.channel.as_bytes()),
                day,
                hour,
            );
            heat.entry(group).or_insert((0, index)).0 += 1;
        }
    }

    /// Adds a run's heat groups to the stripe (overall, and to each group's guild).
    fn apply_heat<'a>(
        &self,
        st: &mut Stripe,
        heat: &HeatRun,
        event: &impl Fn(usize) -> CommunityEvent<'a>,
    ) {
        let publishing = self.cfg.publish;
        let horizon = st.max_day - self.keep;
        for (&(_, channel, day, hour), &(count, first)) in heat {
            if day < horizon {
                continue;
            }
            let ev = event(first as usize);
            let (hour, count) = (usize::from(hour), u64::from(count));
            let (dirty, mut new_channel) = st.all.add_heat(channel, day, hour, count, publishing);
            if dirty {
                st.dirty.push((None, day));
            }
            if !ev.guild.is_empty() {
                if let Some(a) = st.guilds.get_mut(ev.guild) {
                    let (dirty, new) = a.add_heat(channel, day, hour, count, publishing);
                    new_channel |= new;
                    if dirty {
                        let name = st
                            .guilds
                            .get_key_value(ev.guild)
                            .map(|(k, _)| Arc::clone(k));
                        st.dirty.push((name, day));
                    }
                }
            }
            if publishing && new_channel {
                st.channel_names
                    .entry(channel)
                    .or_insert_with(|| Arc::from(ev.channel));
            }
        }
    }

    /// The newest day observed (`None` before any event).
    pub fn newest_day(&self) -> Option<i32> {
        self.stripes
            .iter()
            .map(|s| lock(s).max_day)
            .max()
            .filter(|&d| d != i32::MIN)
    }

    /// Checks that `day` is within the history ending with `today`.
    pub fn check_day(&self, day: i32, today: i32) -> Result<()> {
        self.check_enabled()?;
        let first = today - self.cfg.history_days as i32 + 1;
        if day < first || day > today {
            return Err(Error::invalid(format!(
                "day {} is outside the kept history, {} to {} ({} days ending today)",
                date(day),
                date(first),
                date(today),
                self.cfg.history_days
            )));
        }
        Ok(())
    }

    fn check_enabled(&self) -> Result<()> {
        if !self.enabled() {
            return Err(Error::invalid(
                "the community analytics are off (history_days is 0)",
            ));
        }
        Ok(())
    }

    fn sum<T: Default + std::ops::AddAssign>(
        &self,
        guild: Option<&str>,
        f: impl Fn(&Activity) -> T,
    ) -> T {
        let mut total = T::default();
        for s in &*self.stripes {
            let st = lock(s);
            if let Some(a) = st.activity(guild) {
                total += f(a);
            }
        }
        total
    }

    /// Users active on `day` (`Period::Day`), or in the 7 or 30 days ending with
    /// it, in `guild` (`None`: every event). `today` is the processor's day.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a day outside the history.
    pub fn active_users(
        &self,
        day: i32,
        period: Period,
        guild: Option<&str>,
        today: i32,
    ) -> Result<u64> {
        self.check_day(day, today)?;
        Ok(self.sum(guild, |a| {
            a.days.get(&day).map_or(0, |c: &DayCount| {
                u64::from(match period {
                    Period::Day => c.dau,
                    Period::Week => c.wau,
                    Period::Month => c.mau,
                })
            })
        }))
    }

    /// The `cohorts` cohorts of `period` ending with the one holding `today`,
    /// oldest first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no cohort or cohorts reaching before the
    /// history.
    pub fn retention(
        &self,
        period: CohortPeriod,
        cohorts: u32,
        guild: Option<&str>,
        today: i32,
    ) -> Result<Vec<Cohort>> {
        self.check_enabled()?;
        let last = period.of(today);
        let n = cohorts as i32;
        let first = last.checked_sub(n - 1).filter(|_| n >= 1);
        let first_day = first.map(|p| period.start(p));
        let history_start = today - self.cfg.history_days as i32 + 1;
        let Some(first) = first.filter(|_| first_day.is_some_and(|d| d >= history_start)) else {
            return Err(Error::invalid(format!(
                "{cohorts} cohorts of a {} reach before the kept history ({} days); ask for \
                 1 to {}",
                match period {
                    CohortPeriod::Day => "day",
                    CohortPeriod::Week => "week",
                },
                self.cfg.history_days,
                (today - history_start) / period.days()
                    + i32::from(period.start(period.of(history_start)) == history_start)
            )));
        };
        let mut out: Vec<Cohort> = (first..=last)
            .map(|p| Cohort {
                start_day: period.start(p),
                size: 0,
                active: vec![0; (last - p + 1) as usize],
            })
            .collect();
        for s in &*self.stripes {
            let st = lock(s);
            let Some(a) = st.activity(guild) else {
                continue;
            };
            for (i, c) in out.iter_mut().enumerate() {
                let p = first + i as i32;
                for d in c.start_day..c.start_day + period.days() {
                    c.size += a.days.get(&d).map_or(0, |x| u64::from(x.new));
                }
                for (k, slot) in c.active.iter_mut().enumerate() {
                    let q = p + k as i32;
                    *slot += match period {
                        CohortPeriod::Day => a.cells.get(&(p, q)).copied(),
                        CohortPeriod::Week => a.weeks.get(&(p, q)).copied(),
                    }
                    .map_or(0, u64::from);
                }
            }
        }
        Ok(out)
    }

    /// Events by weekday (Monday first) and UTC hour over the `days` days ending
    /// with `today`, in `guild` and `channel` (`None`: all).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `days` outside `1..=history_days`.
    pub fn heatmap(
        &self,
        days: u32,
        channel: Option<&str>,
        guild: Option<&str>,
        today: i32,
    ) -> Result<[[u64; 24]; 7]> {
        self.check_enabled()?;
        if days == 0 || days > self.cfg.history_days {
            return Err(Error::invalid(format!(
                "days {days} is outside 1..={} (the kept history)",
                self.cfg.history_days
            )));
        }
        let channel = channel.map(|c| hash64(c.as_bytes()));
        let mut out = [[0u64; 24]; 7];
        for s in &*self.stripes {
            let st = lock(s);
            let Some(a) = st.activity(guild) else {
                continue;
            };
            for d in today - days as i32 + 1..=today {
                let Some(heat) = a.heat.get(&d) else {
                    continue;
                };
                let hours = match channel {
                    None => Some(&heat.all),
                    Some(ch) => heat.channels.get(&ch),
                };
                if let Some(hours) = hours {
                    for (slot, n) in out[weekday(d)].iter_mut().zip(hours) {
                        *slot += n;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Guilds seen (in any stripe).
    pub fn guilds(&self) -> usize {
        let mut names: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
        for s in &*self.stripes {
            names.extend(lock(s).guilds.keys().cloned());
        }
        names.len()
    }

    /// User records kept: one per user overall plus one per (guild, user).
    pub fn user_records(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| {
                let st = lock(s);
                (st.all.users.len() + st.guilds.values().map(|a| a.users.len()).sum::<usize>())
                    as u64
            })
            .sum()
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| {
                let st = lock(s);
                st.all.heap_bytes()
                    + st.guilds
                        .iter()
                        .map(|(g, a)| g.len() + 64 + a.heap_bytes())
                        .sum::<usize>()
            })
            .sum()
    }

    /// Appends the whole state (see [`Community::decode`]).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.cfg.history_days);
        out.put_u64(self.stripes.len() as u64);
        for s in &*self.stripes {
            let st = lock(s);
            out.put_u32(st.max_day as u32);
            st.all.encode(out);
            out.put_u64(st.guilds.len() as u64);
            for (g, a) in &st.guilds {
                out.put_str(g);
                a.encode(out);
            }
            out.put_u64(st.pending.len() as u64);
            for (g, key, day) in st.pending.keys() {
                out.put_str(g.as_deref().unwrap_or(""));
                out.put_u64(*key);
                out.put_u32(*day as u32);
            }
            out.put_u64(st.channel_names.len() as u64);
            for (h, name) in &st.channel_names {
                out.put_u64(*h);
                out.put_str(name);
            }
        }
        let published = lock(&self.published_heat);
        out.put_u64(published.len() as u64);
        for ((g, ch, day), hours) in published.iter() {
            out.put_str(g.as_deref().unwrap_or(""));
            match ch {
                Some(h) => {
                    out.put_u8(1);
                    out.put_u64(*h);
                }
                None => out.put_u8(0),
            }
            out.put_u32(*day as u32);
            activity::put_hours(out, hours);
        }
    }

    /// Reads what [`Community::encode`] wrote into analytics of `cfg` (with the
    /// stripes it was written with: a user's counters cannot move to another).
    ///
    /// # Errors
    /// [`Error::Corrupt`] for bytes that are not such a state, or of another
    /// history length.
    pub fn decode(cfg: CommunityConfig, g: &mut Get<'_>) -> Result<Community> {
        let history = g.u32()?;
        if history != cfg.history_days {
            return Err(Error::corrupt(format!(
                "community state of {history} days of history, {} configured",
                cfg.history_days
            )));
        }
        let n = g.count(1)?;
        if !n.is_power_of_two() || n > 256 {
            return Err(Error::corrupt(format!("community state of {n} stripes")));
        }
        let c = Community::new(cfg, n)?;
        for s in &*c.stripes {
            let mut st = lock(s);
            st.max_day = g.u32()? as i32;
            st.all = Activity::decode(g, c.ring)?;
            for _ in 0..g.count(4)? {
                let name: Arc<str> = Arc::from(g.str()?);
                let a = Activity::decode(g, c.ring)?;
                st.guilds.insert(name, a);
            }
            for _ in 0..g.count(16)? {
                let name = g.str()?;
                let guild = st.guilds.get_key_value(name).map(|(k, _)| Arc::clone(k));
                let key = g.u64()?;
                let day = g.u32()? as i32;
                if !name.is_empty() && guild.is_none() {
                    return Err(Error::corrupt(
                        "community state: an activation of an unknown guild",
                    ));
                }
                st.pending.insert((guild, key, day), ());
            }
            for _ in 0..g.count(12)? {
                let h = g.u64()?;
                let name = g.str()?;
                st.channel_names.insert(h, Arc::from(name));
            }
            // Every restored day is compared with what Redis holds once more.
            let Stripe {
                all, guilds, dirty, ..
            } = &mut *st;
            if cfg.publish {
                dirty.extend(all.heat.keys().map(|&d| (None, d)));
                for (name, a) in guilds.iter() {
                    dirty.extend(a.heat.keys().map(|&d| (Some(Arc::clone(name)), d)));
                }
            }
        }
        {
            let mut published = lock(&c.published_heat);
            for _ in 0..g.count(5 + 4 + 24 * 8)? {
                let name = g.str()?;
                let guild = (!name.is_empty()).then(|| Arc::<str>::from(name));
                let ch = match g.u8()? {
                    0 => None,
                    1 => Some(g.u64()?),
                    other => {
                        return Err(Error::corrupt(format!(
                            "community state: channel flag {other}"
                        )));
                    }
                };
                let day = g.u32()? as i32;
                published.insert((guild, ch, day), activity::get_hours(g)?);
            }
        }
        Ok(c)
    }
}

/// `YYYY-MM-DD` of a day number (proleptic Gregorian, UTC).
pub fn date(day: i32) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The (year, month, day) of a day number (Howard Hinnant's algorithm).
pub fn civil_from_days(day: i32) -> (i64, u32, u32) {
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests;
