#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;
use crate::leaderboard::PendingKind;

const T0: i64 = 1_700_000_000;

fn group(decay: f64, period: f64, max_users: usize, max_guilds: usize) -> BoardGroup {
    BoardGroup::new(GroupConfig {
        board: LeaderboardConfig {
            decay_factor: decay,
            decay_period_secs: period,
            max_users,
            ..LeaderboardConfig::default()
        },
        max_guilds,
    })
    .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-300
}

/// `(user, rank, score bits, last_update)` of a guild's whole board.
fn rows_of(g: &BoardGroup, guild: &str, now: i64) -> Vec<(String, u64, u64, i64)> {
    g.read(guild, |board| {
        Ok(match board {
            Some(b) => b
                .top(0, usize::MAX, now)?
                .iter()
                .map(|r| {
                    (
                        r.user_id.to_owned(),
                        r.rank,
                        r.score.to_bits(),
                        r.last_update,
                    )
                })
                .collect(),
            None => Vec::new(),
        })
    })
    .unwrap()
}

fn rows_of_board(b: &Leaderboard, now: i64) -> Vec<(String, u64, u64, i64)> {
    b.top(0, usize::MAX, now)
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.user_id.to_owned(),
                r.rank,
                r.score.to_bits(),
                r.last_update,
            )
        })
        .collect()
}

// ---- against a naive model ------------------------------------------------------

/// A user's contributions `(points, ts)` and newest timestamp.
type History = (Vec<(f64, i64)>, i64);

/// Every contribution kept per guild and user, decayed from scratch on each query.
#[derive(Default)]
struct Model {
    guilds: BTreeMap<String, BTreeMap<String, History>>,
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, u8, i8, u16),
    Set(u8, u8, i8, u16),
    Remove(u8, u8),
    Drop(u8),
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..6, 0u8..12, -3i8..20, 0u16..7200).prop_map(|(g, u, p, lag)| Op::Add(g, u, p, lag)),
        1 => (0u8..6, 0u8..12, -3i8..20, 0u16..7200).prop_map(|(g, u, p, lag)| Op::Set(g, u, p, lag)),
        1 => (0u8..6, 0u8..12).prop_map(|(g, u)| Op::Remove(g, u)),
        1 => (0u8..6).prop_map(Op::Drop),
        2 => (0u32..30_000).prop_map(Op::Advance),
    ]
}

fn run_model(decay: f64, period: f64, ops: Vec<Op>) {
    let g = group(decay, period, 0, 0);
    let mut m = Model::default();
    let mut now = T0;
    let score = |h: &[(f64, i64)], now: i64| -> f64 {
        h.iter()
            .map(|&(p, ts)| p * decay.powf((now - ts) as f64 / period))
            .sum()
    };
    for op in ops {
        match op {
            Op::Add(gi, u, p, lag) | Op::Set(gi, u, p, lag) => {
                let (guild, user) = (format!("guild{gi}"), format!("user{u}"));
                let ts = now - i64::from(lag);
                let replace = matches!(op, Op::Set(..));
                let r = if replace {
                    g.set(&guild, &user, f64::from(p), ts)
                } else {
                    g.add(&guild, &user, f64::from(p), ts)
                };
                assert_eq!(r, Ok(AddOutcome::Stored));
                let users = m.guilds.entry(guild).or_default();
                let entry = users.entry(user).or_insert_with(|| (Vec::new(), ts));
                if replace {
                    entry.0.clear();
                }
                entry.0.push((f64::from(p), ts));
                entry.1 = entry.1.max(ts);
            }
            Op::Remove(gi, u) => {
                let (guild, user) = (format!("guild{gi}"), format!("user{u}"));
                let held = m
                    .guilds
                    .get_mut(&guild)
                    .and_then(|users| users.remove(&user));
                let r = g.remove(&guild, &user);
                assert_eq!(r.is_ok(), held.is_some(), "{r:?}");
                if held.is_none() {
                    assert!(matches!(r, Err(Error::NotFound(_))));
                }
            }
            Op::Drop(gi) => {
                let guild = format!("guild{gi}");
                let held = m.guilds.remove(&guild).is_some();
                assert_eq!(g.drop_guild(&guild).unwrap().is_some(), held);
            }
            Op::Advance(secs) => now += i64::from(secs),
        }
        // Every guild against the model: same users, order, ranks, scores.
        let listed: Vec<String> = g
            .guilds(None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(listed, m.guilds.keys().cloned().collect::<Vec<_>>());
        let mut users = 0;
        for (guild, model) in &m.guilds {
            let rows = rows_of(&g, guild, now);
            assert_eq!(rows.len(), model.len(), "{guild}");
            assert_eq!(g.len(guild).unwrap(), model.len());
            users += model.len();
            let mut previous = f64::INFINITY;
            for (i, (user, rank, bits, last)) in rows.iter().enumerate() {
                let (history, model_last) = &model[user];
                let expected = score(history, now);
                let got = f64::from_bits(*bits);
                assert!(
                    close(got, expected),
                    "{guild}/{user}: {got} vs model {expected}"
                );
                assert!(expected <= previous || close(expected, previous));
                previous = expected;
                assert_eq!(*rank, i as u64 + 1);
                assert_eq!(last, model_last);
            }
        }
        assert_eq!(g.stats().unwrap().users, users as u64);
        assert_eq!(g.stats().unwrap().boards, m.guilds.len() as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_guild_matches_the_naive_model_without_decay(ops in prop::collection::vec(op(), 1..150)) {
        run_model(1.0, 86_400.0, ops);
    }

    #[test]
    fn every_guild_matches_the_naive_model_with_fast_decay(ops in prop::collection::vec(op(), 1..150)) {
        run_model(0.5, 600.0, ops);
    }

    /// At capacity (evictions, refusals) each guild equals a Leaderboard of its own
    /// fed the same updates, to the bit.
    #[test]
    fn every_guild_equals_an_independent_board_at_capacity(ops in prop::collection::vec(op(), 1..150)) {
        let config = LeaderboardConfig { decay_factor: 0.9, decay_period_secs: 3600.0, max_users: 4,
            ..LeaderboardConfig::default() };
        let g = BoardGroup::new(GroupConfig { board: config, max_guilds: 0 }).unwrap();
        let mut boards: BTreeMap<String, Leaderboard> = BTreeMap::new();
        let mut now = T0;
        for op in ops {
            match op {
                Op::Add(gi, u, p, lag) | Op::Set(gi, u, p, lag) => {
                    let (guild, user) = (format!("guild{gi}"), format!("user{u}"));
                    let ts = now - i64::from(lag);
                    let b = boards.entry(guild.clone()).or_insert_with(|| Leaderboard::new(config).unwrap());
                    let (ours, theirs) = if matches!(op, Op::Set(..)) {
                        (g.set(&guild, &user, f64::from(p), ts), b.set(&user, f64::from(p), ts))
                    } else {
                        (g.add(&guild, &user, f64::from(p), ts), b.add(&user, f64::from(p), ts))
                    };
                    prop_assert_eq!(ours.is_ok(), theirs.is_ok());
                    if let (Ok(a), Ok(b)) = (ours, theirs) {
                        prop_assert_eq!(a, b);
                    }
                }
                Op::Remove(gi, u) => {
                    let (guild, user) = (format!("guild{gi}"), format!("user{u}"));
                    let theirs = boards.get_mut(&guild).map(|b| b.remove(&user).is_ok()).unwrap_or(false);
                    prop_assert_eq!(g.remove(&guild, &user).is_ok(), theirs);
                }
                Op::Drop(gi) => {
                    let guild = format!("guild{gi}");
                    prop_assert_eq!(g.drop_guild(&guild).unwrap().is_some(), boards.remove(&guild).is_some());
                }
                Op::Advance(secs) => now += i64::from(secs),
            }
            for (guild, b) in &boards {
                prop_assert_eq!(rows_of(&g, guild, now), rows_of_board(b, now));
            }
            let s = g.stats().unwrap();
            prop_assert_eq!(s.evicted, boards.values().map(|b| b.stats().evicted).sum::<u64>());
            prop_assert_eq!(s.refused, boards.values().map(|b| b.stats().refused).sum::<u64>());
        }
    }
}

// ---- input, limits, lifetime ------------------------------------------------------

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let g = group(0.95, 86_400.0, 0, 0);
    g.add("g1", "alice", 5.0, T0).unwrap();
    let before = (g.stats().unwrap(), rows_of(&g, "g1", T0));
    let long = "x".repeat(MAX_GUILD_BYTES + 1);
    let far = crate::leaderboard::wall_clock_secs() + 10 * 86_400;
    for (guild, user, points, ts) in [
        ("", "alice", 1.0, T0),
        (long.as_str(), "alice", 1.0, T0),
        ("g1", "", 1.0, T0),
        ("g1", "alice", f64::NAN, T0),
        ("g1", "alice", f64::INFINITY, T0),
        ("g1", "alice", 1.0, crate::leaderboard::MAX_TIMESTAMP + 1),
        ("g2", "", 1.0, T0),
        ("g2", "bob", f64::NAN, T0),
        ("g2", "bob", 1.0, crate::leaderboard::MAX_TIMESTAMP + 1),
    ] {
        let err = g.add(guild, user, points, ts).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let err = g.set(guild, user, points, ts).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    assert_eq!((g.stats().unwrap(), rows_of(&g, "g1", T0)), before);
    assert_eq!(g.guilds(None, 10).unwrap(), vec![("g1".to_string(), 1)]);
    // A future timestamp on a guild the group does not hold: refused, counted,
    // and no board is left behind.
    assert!(matches!(
        g.add("g3", "carol", 1.0, far),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        g.add("g1", "carol", 1.0, far),
        Err(Error::InvalidArgument(_))
    ));
    let s = g.stats().unwrap();
    assert_eq!((s.boards, s.future_refused), (1, 2));
    // Removing from a guild the group does not hold: NotFound, nothing made.
    assert!(matches!(g.remove("g4", "alice"), Err(Error::NotFound(_))));
    assert!(matches!(
        g.remove("", "alice"),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(g.stats().unwrap().boards, 1);
    assert_eq!(g.len("g4").unwrap(), 0);
    assert_eq!(g.drop_guild("g4").unwrap(), None);
}

#[test]
fn max_guilds_refuses_a_new_guild_until_one_is_dropped() {
    let g = group(0.95, 86_400.0, 0, 3);
    for guild in ["a", "b", "c"] {
        g.add(guild, "u", 1.0, T0).unwrap();
    }
    assert!(matches!(g.add("d", "u", 1.0, T0), Err(Error::Full(_))));
    g.add("a", "v", 1.0, T0).unwrap(); // held guilds take updates
    assert_eq!(g.stats().unwrap().boards, 3);
    assert_eq!(g.drop_guild("b").unwrap(), Some(0));
    g.add("d", "u", 1.0, T0).unwrap();
    assert!(matches!(g.add("e", "u", 1.0, T0), Err(Error::Full(_))));
    let names: Vec<String> = g
        .guilds(None, 10)
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(names, ["a", "c", "d"]);
    // Pages: after a cursor, bounded.
    assert_eq!(g.guilds(Some("a"), 1).unwrap(), vec![("c".to_string(), 1)]);
    assert_eq!(g.guilds(Some("d"), 10).unwrap(), vec![]);
    assert_eq!(g.guilds(None, 10).unwrap()[0], ("a".to_string(), 2));
}

#[test]
fn every_call_after_close_is_refused() {
    let g = group(0.95, 86_400.0, 0, 0);
    g.add("a", "u", 1.0, T0).unwrap();
    g.close();
    g.close();
    let closed = |r: Result<()>| assert!(matches!(r, Err(Error::Closed(_))), "{r:?}");
    closed(g.add("a", "u", 1.0, T0).map(drop));
    closed(g.set("a", "u", 1.0, T0).map(drop));
    closed(g.remove("a", "u"));
    closed(g.len("a").map(drop));
    closed(g.drop_guild("a").map(drop));
    closed(g.guilds(None, 1).map(drop));
    closed(g.stats().map(drop));
    closed(g.enable_publishing(10));
    closed(g.outbox_next(0, |_| {}).map(drop));
    closed(g.outbox_ack("a", 1).map(drop));
}

#[test]
fn memory_per_board_is_small_and_bounded() {
    let g = group(0.95, 86_400.0, 0, 0);
    let slot = std::mem::size_of::<GuildBoard>();
    let board = std::mem::size_of::<Leaderboard>();
    let empty = Leaderboard::new(LeaderboardConfig::default()).unwrap();
    let mut small = empty.clone();
    for u in 0..10 {
        small
            .add(&format!("{}", 200_000_000_000_000_000u64 + u), 1.0, T0)
            .unwrap();
    }
    eprintln!(
        "size_of: GuildBoard {slot} B, Leaderboard {board} B; heap: empty board {} B, 10 users {} B",
        empty.heap_bytes(),
        small.heap_bytes()
    );
    assert!(slot <= 448, "{slot}");
    assert!(empty.heap_bytes() <= 1024, "{}", empty.heap_bytes());
    assert!(small.heap_bytes() <= 2048, "{}", small.heap_bytes());
    // 10,000 guilds of 10 users: the group's own count, per board.
    for guild in 0..10_000u64 {
        for u in 0..10 {
            g.add(
                &format!("{}", 900_000_000_000_000_000u64 + guild),
                &format!("{u}"),
                1.0,
                T0,
            )
            .unwrap();
        }
    }
    let s = g.stats().unwrap();
    let per_board = s.heap_bytes / s.boards;
    eprintln!("10,000 boards of 10 users: {per_board} heap bytes per board");
    assert_eq!((s.boards, s.users), (10_000, 100_000));
    assert!(per_board <= 3072, "{per_board}");
}

// ---- publishing ---------------------------------------------------------------------

/// What Redis would hold: per guild, a shared board's values (decay 1: plain sums),
/// applied from the batches, each (guild, number) at most once.
#[derive(Default)]
struct Shared {
    boards: HashMap<String, HashMap<String, f64>>,
    applied: HashMap<String, u64>,
}

impl Shared {
    fn apply(&mut self, t: &TakenBatch<'_>) -> bool {
        let done = self.applied.entry(t.guild.to_string()).or_insert(0);
        if *done >= t.number {
            return false;
        }
        *done = t.number;
        let board = self.boards.entry(t.guild.to_string()).or_default();
        for row in &t.batch.rows {
            match row.kind {
                PendingKind::Add => *board.entry(row.user_id.clone()).or_insert(0.0) += row.value,
                PendingKind::Set => {
                    board.insert(row.user_id.clone(), row.value);
                }
                PendingKind::Remove => {
                    board.remove(&row.user_id);
                }
            }
        }
        true
    }

    fn of(&self, guild: &str) -> BTreeMap<String, f64> {
        self.boards
            .get(guild)
            .map(|b| b.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}

fn local(g: &BoardGroup, guild: &str) -> BTreeMap<String, f64> {
    rows_of(g, guild, T0)
        .into_iter()
        .map(|(u, _, bits, _)| (u, f64::from_bits(bits)))
        .collect()
}

/// Takes every batch, applies it to `shared` and acknowledges it; returns the
/// guilds visited.
fn publish(g: &BoardGroup, shared: &mut Shared) -> Vec<String> {
    let mut taken = Vec::new();
    g.outbox_next(0, |t| {
        shared.apply(&t);
        taken.push((t.guild.to_string(), t.number));
    })
    .unwrap();
    for (guild, number) in &taken {
        assert!(g.outbox_ack(guild, *number).unwrap());
    }
    taken.into_iter().map(|(guild, _)| guild).collect()
}

#[test]
fn batches_come_only_from_guilds_that_changed_and_add_up_to_the_boards() {
    let g = group(1.0, 86_400.0, 0, 0);
    for guild in 0..1000 {
        g.add(&format!("g{guild}"), "u", 1.0, T0).unwrap();
    }
    g.enable_publishing(1000).unwrap();
    let mut shared = Shared::default();
    assert!(
        publish(&g, &mut shared).is_empty(),
        "nothing changed since publishing began"
    );
    g.add("g5", "u", 2.0, T0).unwrap();
    g.add("g7", "v", 3.0, T0).unwrap();
    g.add("g5", "w", 1.0, T0).unwrap();
    g.add("new", "u", 4.0, T0).unwrap();
    let s = g.stats().unwrap();
    assert_eq!((s.dirty, s.pending), (3, 4));
    let mut visited = publish(&g, &mut shared);
    visited.sort();
    assert_eq!(visited, ["g5", "g7", "new"]);
    assert_eq!(
        shared.of("g5"),
        BTreeMap::from([("u".into(), 2.0), ("w".into(), 1.0)])
    );
    assert_eq!(shared.of("new"), local(&g, "new"));
    let s = g.stats().unwrap();
    assert_eq!((s.dirty, s.in_flight, s.pending), (0, 0, 0));
    assert!(publish(&g, &mut shared).is_empty());
    // Sets and removes, also of a user and a guild the group does not hold.
    g.set("g5", "u", 10.0, T0).unwrap();
    g.remove("g5", "w").unwrap();
    assert!(matches!(g.remove("g5", "nobody"), Err(Error::NotFound(_))));
    assert!(matches!(
        g.remove("elsewhere", "u"),
        Err(Error::NotFound(_))
    ));
    assert_eq!(g.len("elsewhere").unwrap(), 0);
    shared
        .boards
        .entry("elsewhere".into())
        .or_default()
        .insert("u".into(), 7.0);
    let mut visited = publish(&g, &mut shared);
    visited.sort();
    assert_eq!(visited, ["elsewhere", "g5"]);
    assert_eq!(shared.of("g5"), BTreeMap::from([("u".into(), 10.0)]));
    assert_eq!(
        shared.of("elsewhere"),
        BTreeMap::new(),
        "the removal was published"
    );
}

#[test]
fn a_batch_not_acknowledged_is_handed_out_again_and_later_changes_wait_for_the_ack() {
    let g = group(1.0, 86_400.0, 0, 0);
    g.enable_publishing(1000).unwrap();
    g.add("a", "u", 1.0, T0).unwrap();
    g.add("b", "u", 2.0, T0).unwrap();
    let mut first = Vec::new();
    g.outbox_next(0, |t| {
        first.push((t.guild.to_string(), t.number, t.batch.clone()))
    })
    .unwrap();
    assert_eq!(first.len(), 2);
    // Not acknowledged (a lost reply): the same batches, same numbers, again; a
    // change made meanwhile waits for its guild's acknowledgement.
    g.add("a", "u", 5.0, T0).unwrap();
    g.add("c", "u", 1.0, T0).unwrap();
    let mut again = Vec::new();
    g.outbox_next(0, |t| {
        again.push((t.guild.to_string(), t.number, t.batch.clone()))
    })
    .unwrap();
    assert_eq!(&again[..2], &first[..], "resent unchanged");
    assert_eq!(again.len(), 3);
    assert_eq!(again[2].0, "c");
    assert!(
        !g.outbox_ack("a", first[0].1 + 100).unwrap(),
        "another number"
    );
    for (guild, number, _) in &again {
        assert!(g.outbox_ack(guild, *number).unwrap());
        assert!(!g.outbox_ack(guild, *number).unwrap(), "acknowledged once");
    }
    // a's second change went back on the dirty list at the acknowledgement.
    let mut next = Vec::new();
    g.outbox_next(0, |t| {
        next.push((t.guild.to_string(), t.number, t.batch.rows[0].value))
    })
    .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].0.as_str(), next[0].2), ("a", 5.0));
    assert!(next[0].1 > again[2].1, "numbers grow");
}

#[test]
fn max_rows_bounds_what_one_call_takes() {
    let g = group(1.0, 86_400.0, 0, 0);
    g.enable_publishing(1000).unwrap();
    for guild in 0..10 {
        for u in 0..3 {
            g.add(&format!("g{guild}"), &format!("u{u}"), 1.0, T0)
                .unwrap();
        }
    }
    let mut n = 0;
    assert_eq!(
        g.outbox_next(7, |_| n += 1).unwrap(),
        3,
        "3 guilds reach 9 >= 7 rows"
    );
    // The next call resends those 3 and takes 3 more.
    assert_eq!(g.outbox_next(7, |_| {}).unwrap(), 6);
    assert_eq!(g.stats().unwrap().dirty, 4);
}

#[test]
fn a_guild_dropped_and_made_again_publishes_under_higher_numbers() {
    let g = group(1.0, 86_400.0, 0, 0);
    g.enable_publishing(1000).unwrap();
    let mut shared = Shared::default();
    g.add("a", "u", 1.0, T0).unwrap();
    publish(&g, &mut shared);
    g.add("a", "u", 2.0, T0).unwrap();
    assert_eq!(
        g.drop_guild("a").unwrap(),
        Some(1),
        "its unpublished change"
    );
    assert_eq!(g.stats().unwrap().unpublished_dropped, 1);
    g.add("a", "v", 3.0, T0).unwrap();
    assert_eq!(publish(&g, &mut shared), ["a"]);
    // Applied (not taken for a duplicate): the number is above the first board's.
    assert_eq!(
        shared.of("a"),
        BTreeMap::from([("u".into(), 1.0), ("v".into(), 3.0)])
    );
    // Dropped while in flight: the batch is still handed out until the guild is
    // gone, then its acknowledgement is ignored.
    g.add("a", "v", 1.0, T0).unwrap();
    let mut taken = Vec::new();
    g.outbox_next(0, |t| taken.push(t.number)).unwrap();
    g.drop_guild("a").unwrap();
    assert!(!g.outbox_ack("a", taken[0]).unwrap());
    assert_eq!(g.outbox_next(0, |_| {}).unwrap(), 0);
}

#[test]
fn updates_on_many_threads_and_a_publisher_add_up_exactly() {
    let g = group(1.0, 86_400.0, 0, 0);
    g.enable_publishing(1_000_000).unwrap();
    let shared = Mutex::new(Shared::default());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..3)
            .map(|t| {
                let g = &g;
                s.spawn(move || {
                    for i in 0..20_000u64 {
                        let guild = format!("g{}", (i * 7 + t) % 500);
                        g.add(&guild, &format!("u{}", i % 13), 1.0, T0).unwrap();
                    }
                })
            })
            .collect();
        let publisher = s.spawn(|| {
            loop {
                let last = done.load(Ordering::Acquire);
                publish(&g, &mut shared.lock().unwrap());
                if last {
                    return;
                }
            }
        });
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        publisher.join().unwrap();
    });
    let shared = shared.into_inner().unwrap();
    let mut total = 0.0;
    for (guild, _) in g.guilds(None, usize::MAX).unwrap() {
        let ours = local(&g, &guild);
        assert_eq!(shared.of(&guild), ours, "{guild}");
        total += ours.values().sum::<f64>();
    }
    assert_eq!(total, 60_000.0);
    let s = g.stats().unwrap();
    assert_eq!((s.pending, s.dirty, s.in_flight), (0, 0, 0));
}

#[test]
fn a_forked_child_drops_what_waits_for_redis_and_keeps_the_boards() {
    let g = group(1.0, 86_400.0, 0, 0);
    g.enable_publishing(1000).unwrap();
    g.add("a", "u", 1.0, T0).unwrap();
    g.add("b", "u", 1.0, T0).unwrap();
    let mut first = 0;
    g.outbox_next(1, |t| first = t.number).unwrap();
    assert_eq!(g.stats().unwrap().in_flight, 1);
    {
        // (As the fork handlers do; here in one process.)
        let mut hold = g.hold_all();
        hold.in_child();
    }
    let s = g.stats().unwrap();
    assert_eq!((s.users, s.pending, s.dirty, s.in_flight), (2, 0, 0, 0));
    assert_eq!(g.outbox_next(0, |_| {}).unwrap(), 0);
    g.add("a", "u", 1.0, T0).unwrap();
    let mut numbers = Vec::new();
    g.outbox_next(0, |t| numbers.push(t.number)).unwrap();
    assert_eq!(numbers.len(), 1);
    assert!(numbers[0] > first);
}
