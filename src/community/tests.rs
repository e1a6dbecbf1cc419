//! The community analytics against exact answers computed from the events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use proptest::prelude::*;

use super::publish::{Entry, for_each_entry};
use super::*;

const DAY0: i32 = 20_000; // 2024-10-04, a Friday

#[derive(Debug, Clone)]
struct Ev {
    user: String,
    guild: String,
    channel: String,
    ts: i64,
}

fn feed(c: &Community, events: &[Ev]) {
    let mut scratch = RunScratch::default();
    for run in events.chunks(37) {
        c.observe_run(&mut scratch, run.len(), |i| CommunityEvent {
            user: run[i].user.as_bytes(),
            guild: &run[i].guild,
            channel: &run[i].channel,
            ts: run[i].ts,
        });
    }
}

/// The events of `guild` (`None`: all).
fn of<'a>(events: &'a [Ev], guild: Option<&'a str>) -> impl Iterator<Item = &'a Ev> + 'a {
    events
        .iter()
        .filter(move |e| guild.is_none_or(|g| e.guild == g))
}

fn exact_active(events: &[Ev], guild: Option<&str>, day: i32, period: Period) -> u64 {
    let len = match period {
        Period::Day => 1,
        Period::Week => 7,
        Period::Month => 30,
    };
    of(events, guild)
        .filter(|e| (day - len + 1..=day).contains(&day_of(e.ts)))
        .map(|e| &e.user)
        .collect::<HashSet<_>>()
        .len() as u64
}

fn exact_retention(
    events: &[Ev],
    guild: Option<&str>,
    period: CohortPeriod,
    cohorts: u32,
    today: i32,
) -> Vec<Cohort> {
    let mut first: HashMap<&str, i32> = HashMap::new();
    let mut active: HashMap<&str, BTreeSet<i32>> = HashMap::new();
    for e in of(events, guild) {
        let d = day_of(e.ts);
        let f = first.entry(&e.user).or_insert(d);
        *f = (*f).min(d);
        active.entry(&e.user).or_default().insert(period.of(d));
    }
    let last = period.of(today);
    (last - cohorts as i32 + 1..=last)
        .map(|p| {
            let members: Vec<&str> = first
                .iter()
                .filter(|(_, f)| period.of(**f) == p)
                .map(|(u, _)| *u)
                .collect();
            Cohort {
                start_day: period.start(p),
                size: members.len() as u64,
                active: (p..=last)
                    .map(|q| members.iter().filter(|u| active[*u].contains(&q)).count() as u64)
                    .collect(),
            }
        })
        .collect()
}

fn exact_heat(
    events: &[Ev],
    guild: Option<&str>,
    channel: Option<&str>,
    days: u32,
    today: i32,
) -> [[u64; 24]; 7] {
    let mut out = [[0; 24]; 7];
    for e in of(events, guild).filter(|e| channel.is_none_or(|c| e.channel == c)) {
        let d = day_of(e.ts);
        if d > today - days as i32 && d <= today {
            out[weekday(d)][(e.ts.rem_euclid(86_400) / 3600) as usize] += 1;
        }
    }
    out
}

/// Users joining over weeks, each active on some days, in three guilds and
/// without one.
fn workload(seed: u64, n: usize, span_days: i32) -> Vec<Ev> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let user = next() % 400;
            // A user joins on a day that grows with its number and comes back
            // less and less.
            let join = (user as i32 * span_days) / 500;
            let back = (next() % 1000) as f64 / 1000.0;
            let day = (join + (back * back * (span_days - join) as f64) as i32).min(span_days - 1);
            let guild = match next() % 4 {
                0 => "",
                1 => "g1",
                2 => "g2",
                _ => "guild-three",
            };
            Ev {
                user: format!("u{user}"),
                guild: guild.to_string(),
                channel: format!("c{}", next() % 5),
                ts: i64::from(DAY0 + day) * 86_400 + (next() % 86_400) as i64,
            }
        })
        .collect()
}

fn check_all(c: &Community, events: &[Ev], today: i32) {
    let history = c.config().history_days as i32;
    for guild in [
        None,
        Some("g1"),
        Some("g2"),
        Some("guild-three"),
        Some("nope"),
    ] {
        for day in today - history + 1..=today {
            for period in [Period::Day, Period::Week, Period::Month] {
                assert_eq!(
                    c.active_users(day, period, guild, today).unwrap(),
                    exact_active(events, guild, day, period),
                    "{guild:?} {} {period:?}",
                    date(day)
                );
            }
        }
        for (period, n) in [(CohortPeriod::Week, 8), (CohortPeriod::Day, 20)] {
            assert_eq!(
                c.retention(period, n, guild, today).unwrap(),
                exact_retention(events, guild, period, n, today),
                "{guild:?} {period:?}"
            );
        }
        for channel in [None, Some("c1"), Some("c4"), Some("zz")] {
            for days in [1, 7, 28] {
                assert_eq!(
                    c.heatmap(days, channel, guild, today).unwrap(),
                    exact_heat(events, guild, channel, days, today),
                    "{guild:?} {channel:?} {days}"
                );
            }
        }
    }
}

fn config(history_days: u32) -> CommunityConfig {
    CommunityConfig {
        history_days,
        publish: false,
    }
}

#[test]
fn every_answer_is_exact_in_order_and_shuffled() {
    let span = 70;
    let mut events = workload(1, 20_000, span);
    let today = DAY0 + span - 1;
    let sorted = {
        let mut e = events.clone();
        e.sort_by_key(|e| e.ts);
        e
    };
    let c = Community::new(config(90), 4).unwrap();
    feed(&c, &sorted);
    check_all(&c, &events, today);
    // Any order gives the same answers (events come back out of order).
    events.reverse();
    let c2 = Community::new(config(90), 1).unwrap();
    feed(&c2, &events);
    check_all(&c2, &events, today);
}

#[test]
fn a_short_history_keeps_its_days_exact_as_the_days_go_by() {
    // 40 days through a 10-day history (the ring is 64 days): old days leave,
    // those in the history stay exact.
    let span = 40;
    let mut events = workload(2, 8000, span);
    events.sort_by_key(|e| e.ts);
    let c = Community::new(config(10), 2).unwrap();
    feed(&c, &events);
    let today = DAY0 + span - 1;
    for guild in [None, Some("g1")] {
        for day in today - 9..=today {
            for period in [Period::Day, Period::Week, Period::Month] {
                assert_eq!(
                    c.active_users(day, period, guild, today).unwrap(),
                    exact_active(&events, guild, day, period)
                );
            }
        }
        assert_eq!(
            c.retention(CohortPeriod::Day, 10, guild, today).unwrap(),
            exact_retention(&events, guild, CohortPeriod::Day, 10, today)
        );
    }
}

#[test]
fn a_user_seen_earlier_moves_to_the_earlier_cohort() {
    let c = Community::new(config(90), 1).unwrap();
    let ev = |user: &str, day: i32| Ev {
        user: user.into(),
        guild: "g".into(),
        channel: "c".into(),
        ts: i64::from(day) * 86_400 + 3600,
    };
    let today = DAY0 + 20;
    let events = vec![
        ev("a", DAY0 + 14),
        ev("a", DAY0 + 20),
        ev("b", DAY0 + 15),
        ev("a", DAY0 + 1), // late: a was first seen two weeks earlier
    ];
    feed(&c, &events);
    let r = c
        .retention(CohortPeriod::Week, 4, Some("g"), today)
        .unwrap();
    assert_eq!(
        r,
        exact_retention(&events, Some("g"), CohortPeriod::Week, 4, today)
    );
    assert_eq!(r.iter().map(|c| c.size).sum::<u64>(), 2);
    assert_eq!(
        c.active_users(today, Period::Month, None, today).unwrap(),
        2
    );
}

#[test]
fn bad_questions_are_refused() {
    let c = Community::new(config(30), 1).unwrap();
    let today = DAY0;
    assert!(c.active_users(today + 1, Period::Day, None, today).is_err());
    assert!(
        c.active_users(today - 30, Period::Day, None, today)
            .is_err()
    );
    assert!(c.active_users(today - 29, Period::Day, None, today).is_ok());
    assert!(c.retention(CohortPeriod::Week, 0, None, today).is_err());
    assert!(c.retention(CohortPeriod::Week, 6, None, today).is_err());
    assert!(c.retention(CohortPeriod::Day, 30, None, today).is_ok());
    assert!(c.retention(CohortPeriod::Day, 31, None, today).is_err());
    assert!(c.heatmap(0, None, None, today).is_err());
    assert!(c.heatmap(31, None, None, today).is_err());
    let err = c
        .active_users(today + 1, Period::Day, None, today)
        .unwrap_err();
    assert!(err.to_string().contains("2024-10-05"), "{err}");
    let off = Community::new(config(0), 1).unwrap();
    assert!(off.active_users(today, Period::Day, None, today).is_err());
    assert!(Community::new(config(MAX_HISTORY_DAYS + 1), 1).is_err());
}

#[test]
fn dates_and_weeks() {
    assert_eq!(date(0), "1970-01-01");
    assert_eq!(weekday(0), 3); // a Thursday
    assert_eq!(date(week_start(week_of(DAY0))), "2024-09-30"); // a Monday
    assert_eq!(date(DAY0), "2024-10-04");
    assert_eq!(date(-1), "1969-12-31");
    assert_eq!(date(11_016), "2000-02-29");
    for d in DAY0 - 20..DAY0 + 20 {
        assert_eq!(weekday(week_start(week_of(d))), 0);
        assert!((week_start(week_of(d))..week_start(week_of(d)) + 7).contains(&d));
    }
}

#[test]
fn the_state_round_trips() {
    let span = 50;
    let events = workload(3, 6000, span);
    let cfg = CommunityConfig {
        history_days: 60,
        publish: true,
    };
    let c = Community::new(cfg, 4).unwrap();
    feed(&c, &events);
    let mut bytes = Vec::new();
    c.encode(&mut bytes);
    let back = Community::decode(cfg, &mut Get::new(&bytes, "t")).unwrap();
    check_all(&back, &events, DAY0 + span - 1);
    let mut again = Vec::new();
    back.encode(&mut again);
    assert_eq!(again.len(), bytes.len());
    assert!(Community::decode(config(61), &mut Get::new(&bytes, "t")).is_err());
    for cut in [0, 3, bytes.len() / 2, bytes.len() - 1] {
        assert!(Community::decode(cfg, &mut Get::new(&bytes[..cut], "t")).is_err());
    }
}

/// What Redis would hold from the batches: the activations (as per-population
/// sets of (user hash, day)) and the heat.
#[derive(Default, Debug, PartialEq)]
struct Model {
    active: BTreeMap<String, BTreeSet<(u64, i32)>>,
    heat: BTreeMap<(String, Option<String>, i32), [u64; 24]>,
}

impl Model {
    fn apply(&mut self, batch: &[u8]) {
        for_each_entry(batch, |e| match e {
            Entry::Activation { guild, key, day } => {
                self.active
                    .entry(String::new())
                    .or_default()
                    .insert((key, day));
                if !guild.is_empty() {
                    self.active
                        .entry(guild.into())
                        .or_default()
                        .insert((key, day));
                }
            }
            Entry::Heat {
                guild,
                channel,
                day,
                delta,
            } => {
                let h = self
                    .heat
                    .entry((guild.into(), channel.map(String::from), day))
                    .or_insert([0; 24]);
                for (a, b) in h.iter_mut().zip(delta) {
                    *a += b;
                }
            }
        })
        .unwrap();
    }

    fn expected(events: &[Ev]) -> Model {
        let mut m = Model::default();
        for e in events {
            let key = hash64(e.user.as_bytes());
            let day = day_of(e.ts);
            let hour = (e.ts.rem_euclid(86_400) / 3600) as usize;
            let mut scopes = vec![String::new()];
            if !e.guild.is_empty() {
                scopes.push(e.guild.clone());
            }
            for g in scopes {
                m.active.entry(g.clone()).or_default().insert((key, day));
                for ch in [None, Some(e.channel.clone())] {
                    m.heat.entry((g.clone(), ch, day)).or_insert([0; 24])[hour] += 1;
                }
            }
        }
        m
    }
}

#[test]
fn batches_carry_every_activation_and_each_event_once() {
    let events = workload(4, 5000, 30);
    let cfg = CommunityConfig {
        history_days: 60,
        publish: true,
    };
    let c = Community::new(cfg, 4).unwrap();
    let mut redis = Model::default();
    for part in events.chunks(700) {
        feed(&c, part);
        assert!(c.has_changes());
        let batch = c.drain();
        assert!(!batch.is_empty());
        redis.apply(&batch);
        c.ack(&batch).unwrap();
    }
    assert!(c.drain().is_empty(), "nothing new: an empty batch");
    // An empty batch (what a processor without publishing puts) is one.
    c.ack(&[]).unwrap();
    c.forget(&[]).unwrap();
    assert_eq!(redis, Model::expected(&events));
}

#[test]
fn a_replayed_drain_forgets_its_activations_whatever_the_order() {
    let events = workload(5, 3000, 20);
    let cfg = CommunityConfig {
        history_days: 30,
        publish: true,
    };
    let live = Community::new(cfg, 2).unwrap();
    feed(&live, &events[..1500]);
    let batch = live.drain();
    feed(&live, &events[1500..]);
    let rest = live.drain();
    // The replay sees the second half's runs before the drain record.
    let replay = Community::new(cfg, 2).unwrap();
    feed(&replay, &events);
    replay.forget(&batch).unwrap();
    let mut from_replay = Model::default();
    from_replay.apply(&replay.drain());
    let mut from_live = Model::default();
    from_live.apply(&rest);
    assert_eq!(from_replay.active, from_live.active);
    assert!(replay.forget(b"junk").is_err());
    assert!(replay.ack(&[1, 0, 0, 0]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Small populations, any order, days anywhere in a 50-day span (a 20-day
    /// history and its 64-day ring): every answer in the history is exact.
    #[test]
    fn any_stream_is_answered_exactly(
        raw in prop::collection::vec((0u8..12, 0u8..3, 0i32..50, 0u32..86_400), 1..300),
        stripes in 1usize..5,
    ) {
        let events: Vec<Ev> = raw
            .iter()
            .map(|&(u, g, d, s)| Ev {
                user: format!("u{u}"),
                guild: ["", "g1", "g2"][g as usize].into(),
                channel: format!("c{}", u % 3),
                ts: i64::from(DAY0 + d) * 86_400 + i64::from(s),
            })
            .collect();
        let c = Community::new(config(20), stripes).unwrap();
        feed(&c, &events);
        let today = events.iter().map(|e| day_of(e.ts)).max().unwrap();
        for guild in [None, Some("g1")] {
            for day in today - 19..=today {
                for period in [Period::Day, Period::Week, Period::Month] {
                    prop_assert_eq!(
                        c.active_users(day, period, guild, today).unwrap(),
                        exact_active(&events, guild, day, period)
                    );
                }
            }
            prop_assert_eq!(
                c.retention(CohortPeriod::Day, 20, guild, today).unwrap(),
                exact_retention(&events, guild, CohortPeriod::Day, 20, today)
            );
            prop_assert_eq!(
                c.retention(CohortPeriod::Week, 2, guild, today).unwrap(),
                exact_retention(&events, guild, CohortPeriod::Week, 2, today)
            );
            prop_assert_eq!(
                c.heatmap(20, Some("c1"), guild, today).unwrap(),
                exact_heat(&events, guild, Some("c1"), 20, today)
            );
        }
    }
}

#[test]
fn an_idle_guild_costs_a_small_bounded_amount() {
    // 2,000 guilds of one user each, then only other traffic for a year: each
    // guild's share of the heap is bounded (its tables and its user's record), and
    // it does not grow while the guild stays idle.
    let c = Community::new(config(90), 4).unwrap();
    let base = DAY0 as i64 * 86_400;
    let one = |guild: &str, user: &str, day: i64| Ev {
        user: user.into(),
        guild: guild.into(),
        channel: "c".into(),
        ts: base + day * 86_400,
    };
    feed(&c, &[one("", "other", 0)]);
    let empty = c.heap_bytes();
    let guilds: Vec<Ev> = (0..2000)
        .map(|g| one(&format!("guild-{g}"), "u", 0))
        .collect();
    feed(&c, &guilds);
    let active = (c.heap_bytes() - empty) / 2000;
    let mut idle = Vec::new();
    for day in [100, 200, 365] {
        feed(&c, &[one("", "other", day)]);
        idle.push((c.heap_bytes() - empty) / 2000);
    }
    assert!(active <= 4096, "{active} bytes per guild with one user");
    // Its counters leave with their days (the history and a month before it):
    // what stays is the user's record and the guild's empty tables.
    assert!(
        idle.iter().all(|&b| b <= active + 64),
        "{idle:?} vs {active}"
    );
    assert!(idle[2] < active, "{idle:?} vs {active}");
    assert_eq!(
        idle[1], idle[2],
        "an idle guild's cost stops changing: {idle:?}"
    );
}
