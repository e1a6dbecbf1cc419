use super::*;
use proptest::prelude::*;

const DAY: i64 = 86_400;
const T0: i64 = 1_700_000_000;

fn board(decay: f64, period: f64, max_users: usize) -> Leaderboard {
    let mut b = Leaderboard::new(LeaderboardConfig {
        decay_factor: decay,
        decay_period_secs: period,
        max_users,
        ..LeaderboardConfig::default()
    })
    .expect("valid config");
    b.landmark = T0;
    b
}

fn ids(rows: &[RankedUser<'_>]) -> Vec<String> {
    rows.iter().map(|r| r.user_id.to_owned()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-300
}

#[test]
fn config_validation_names_the_field() {
    for (decay, period) in [
        (0.0, 1.0),
        (-0.5, 1.0),
        (1.5, 1.0),
        (f64::NAN, 1.0),
        (0.9, 0.0),
        (0.9, -1.0),
        (0.9, f64::INFINITY),
        (0.9, f64::NAN),
    ] {
        let err = Leaderboard::new(LeaderboardConfig {
            decay_factor: decay,
            decay_period_secs: period,
            max_users: 0,
            ..LeaderboardConfig::default()
        })
        .unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(_)),
            "{decay} {period}: {err}"
        );
        let field = if decay > 0.0 && decay <= 1.0 {
            "decay_period_secs"
        } else {
            "decay_factor"
        };
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn decays_by_factor_per_period() {
    let mut b = board(0.5, DAY as f64, 0);
    b.add("a", 100.0, T0).unwrap();
    assert!(close(b.rank("a", T0).unwrap().score, 100.0));
    assert!(close(b.rank("a", T0 + DAY).unwrap().score, 50.0));
    assert!(close(b.rank("a", T0 + 3 * DAY).unwrap().score, 12.5));
}

#[test]
fn history_far_before_creation_keeps_its_scores() {
    // The board is created now, but fed updates from years ago.
    let mut b = Leaderboard::new(LeaderboardConfig {
        decay_factor: 0.5,
        decay_period_secs: DAY as f64,
        max_users: 0,
        ..LeaderboardConfig::default()
    })
    .unwrap();
    let long_ago = 1_000_000_000;
    b.add("a", 100.0, long_ago).unwrap();
    b.add("b", 10.0, long_ago - DAY).unwrap();
    assert!(close(b.rank("a", long_ago + DAY).unwrap().score, 50.0));
    assert!(close(b.rank("b", long_ago + DAY).unwrap().score, 2.5));
}

#[test]
fn out_of_order_updates_are_exact() {
    let mut in_order = board(0.95, DAY as f64, 0);
    let mut reversed = board(0.95, DAY as f64, 0);
    let updates = [(10.0, T0), (5.0, T0 + DAY), (7.0, T0 + 3 * DAY)];
    for &(p, ts) in &updates {
        in_order.add("u", p, ts).unwrap();
    }
    for &(p, ts) in updates.iter().rev() {
        reversed.add("u", p, ts).unwrap();
    }
    let now = T0 + 5 * DAY;
    let expected: f64 = updates
        .iter()
        .map(|&(p, ts)| p * 0.95f64.powf((now - ts) as f64 / DAY as f64))
        .sum();
    assert!(close(in_order.rank("u", now).unwrap().score, expected));
    assert!(close(reversed.rank("u", now).unwrap().score, expected));
    assert_eq!(reversed.rank("u", now).unwrap().last_update, T0 + 3 * DAY);
}

#[test]
fn ties_order_by_id_bytes() {
    let mut b = board(1.0, 1.0, 0);
    for id in ["b", "a", "c", "aa"] {
        b.add(id, 5.0, T0).unwrap();
    }
    b.add("z", 6.0, T0).unwrap();
    let top = b.top(0, 10, T0).unwrap();
    assert_eq!(ids(&top), ["z", "a", "aa", "b", "c"]);
    assert_eq!(
        top.iter().map(|r| r.rank).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
}

#[test]
fn queries_do_not_change_state() {
    let mut b = board(0.95, DAY as f64, 0);
    b.add("a", 10.0, T0 + DAY).unwrap();
    let before = b.to_snapshot_json();
    // A query far in the future and one in the past must not rewrite anything.
    b.top(0, 10, T0 + 100 * DAY).unwrap();
    b.rank("a", T0 - DAY).unwrap();
    assert_eq!(b.to_snapshot_json(), before);
    assert_eq!(b.rank("a", T0 + DAY).unwrap().last_update, T0 + DAY);
}

#[test]
fn set_replaces_history_and_remove_forgets() {
    let mut b = board(0.5, DAY as f64, 0);
    b.add("a", 100.0, T0).unwrap();
    b.set("a", 3.0, T0 + DAY).unwrap();
    assert!(close(b.rank("a", T0 + DAY).unwrap().score, 3.0));
    b.remove("a").unwrap();
    assert!(matches!(b.rank("a", T0), Err(Error::NotFound(_))));
    assert!(matches!(b.remove("a"), Err(Error::NotFound(_))));
    assert_eq!(b.len(), 0);
    // The freed slot is reused and the new user starts from zero.
    b.add("b", 1.0, T0).unwrap();
    b.add("a", 2.0, T0).unwrap();
    assert_eq!(ids(&b.top(0, 5, T0).unwrap()), ["a", "b"]);
    assert!(close(b.rank("a", T0).unwrap().score, 2.0));
}

#[test]
fn bad_input_is_refused_without_change() {
    let mut b = board(0.95, DAY as f64, 0);
    b.add("a", 1.0, T0).unwrap();
    let before = b.to_snapshot_json();
    for points in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(
            b.add("a", points, T0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            b.set("n", points, T0),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(b.add("", 1.0, T0), Err(Error::InvalidArgument(_))));
    let long = "x".repeat(MAX_USER_ID_LEN + 1);
    assert!(matches!(
        b.add(&long, 1.0, T0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        b.add("a", 1.0, MAX_TIMESTAMP + 1),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(b.to_snapshot_json(), before);
}

#[test]
fn score_overflow_is_refused() {
    let mut b = board(1.0, 1.0, 0);
    b.add("a", f64::MAX, T0).unwrap();
    let before = b.to_snapshot_json();
    assert!(matches!(
        b.add("a", f64::MAX, T0),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(b.to_snapshot_json(), before);
}

#[test]
fn max_users_evicts_lowest_or_refuses() {
    let mut b = board(1.0, 1.0, 3);
    b.add("a", 10.0, T0).unwrap();
    b.add("b", 20.0, T0).unwrap();
    b.add("c", 30.0, T0).unwrap();
    // Too low: refused, counted, nothing changes.
    assert!(matches!(b.add("d", 5.0, T0), Err(Error::Full(_))));
    assert_eq!(b.stats().refused, 1);
    assert_eq!(ids(&b.top(0, 5, T0).unwrap()), ["c", "b", "a"]);
    // Equal score but a smaller id ranks higher than "a"? No: "a" < "d", so refused.
    assert!(matches!(b.add("d", 10.0, T0), Err(Error::Full(_))));
    // Higher: evicts the lowest.
    assert_eq!(
        b.add("e", 15.0, T0).unwrap(),
        AddOutcome::Evicted("a".into())
    );
    assert_eq!(ids(&b.top(0, 5, T0).unwrap()), ["c", "b", "e"]);
    assert_eq!(b.stats().evicted, 1);
    // Existing users are always updated.
    b.add("e", -100.0, T0).unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!(ids(&b.top(0, 5, T0).unwrap()), ["c", "b", "e"]);
}

#[test]
fn around_clamps_at_the_ends() {
    let mut b = board(1.0, 1.0, 0);
    for i in 0..10 {
        b.add(&format!("u{i}"), i as f64, T0).unwrap();
    }
    let rows = b.around("u9", 2, T0).unwrap();
    assert_eq!(ids(&rows), ["u9", "u8", "u7"]);
    assert_eq!(rows[0].rank, 1);
    let rows = b.around("u5", 2, T0).unwrap();
    assert_eq!(ids(&rows), ["u7", "u6", "u5", "u4", "u3"]);
    assert_eq!(rows[2].rank, 5);
    let rows = b.around("u0", 1, T0).unwrap();
    assert_eq!(ids(&rows), ["u1", "u0"]);
    assert!(matches!(b.around("nobody", 1, T0), Err(Error::NotFound(_))));
    assert!(b.top(10, 5, T0).unwrap().is_empty());
}

#[test]
fn rebase_keeps_order_and_scores() {
    // Halving every minute: the exponent passes the rebase limit after ~6 hours.
    let mut b = board(0.5, 60.0, 0);
    b.add("old", 1e6, T0).unwrap();
    b.add("mid", 1.0, T0 + 3 * 3600).unwrap();
    let t = T0 + 8 * 3600;
    b.add("new", 1.0, t).unwrap();
    assert!(b.stats().rebases >= 1, "expected a rebase");
    assert!(b.landmark() > T0);
    assert_eq!(ids(&b.top(0, 3, t).unwrap()), ["new", "mid", "old"]);
    let expected_mid = 0.5f64.powf((5 * 3600) as f64 / 60.0);
    assert!(close(b.rank("mid", t).unwrap().score, expected_mid));
    assert!(close(b.rank("new", t).unwrap().score, 1.0));
    // Many more periods: nothing becomes infinite or NaN.
    for day in 1..40 {
        b.add("new", 1.0, t + day * DAY).unwrap();
    }
    assert!(b.rank("new", t + 39 * DAY).unwrap().score.is_finite());
}

#[test]
fn snapshot_round_trips_bit_for_bit() {
    let mut b = board(0.95, DAY as f64, 50);
    for i in 0..40u32 {
        let id = format!("user \"{i}\" \\ {{}} ü {}", i * 7919);
        b.add(
            &id,
            f64::from(i) * 1.000_000_1 + 0.1,
            T0 + i64::from(i) * 977,
        )
        .unwrap();
    }
    let json = b.to_snapshot_json();
    let loaded = Leaderboard::from_snapshot_json(&json).unwrap();
    assert_eq!(loaded.config(), b.config());
    assert_eq!(loaded.landmark(), b.landmark());
    let now = T0 + 10 * DAY;
    let (x, y) = (
        b.top(0, 100, now).unwrap(),
        loaded.top(0, 100, now).unwrap(),
    );
    assert_eq!(x.len(), 40);
    for (p, q) in x.iter().zip(&y) {
        assert_eq!(p.user_id, q.user_id);
        assert_eq!(p.score.to_bits(), q.score.to_bits());
        assert_eq!(p.last_update, q.last_update);
    }
    assert_eq!(loaded.to_snapshot_json(), json);
}

#[test]
fn corrupt_snapshots_are_refused_with_a_reason() {
    let mut b = board(0.95, DAY as f64, 2);
    b.add("a", 1.0, T0).unwrap();
    let good = String::from_utf8(b.to_snapshot_json()).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (good[..good.len() / 2].to_owned(), "valid snapshot"),
        ("garbage".into(), "valid snapshot"),
        ("{}".into(), "entries"),
        (good.replace("\"version\":1", "\"version\":9"), "version 9"),
        (good.replace("engagehub.leaderboard", "other"), "format"),
        (
            good.replace("\"decay_factor\":0.95", "\"decay_factor\":1.5"),
            "decay_factor",
        ),
        (good.replace("[\"a\",", "[\"\","), "empty"),
        (
            good.replace("\"entries\":[", "\"entries\":[[\"a\",1.0,1],"),
            "twice",
        ),
        (
            good.replace("\"entries\":[", "\"entries\":[[\"b\",1.0,1],[\"c\",1.0,1],"),
            "max_users",
        ),
        (good.replace("\"score_at_landmark\",", "\"s\","), "columns"),
        (good.replace(&format!(",{T0}]"), ",-5]"), "last_update"),
        (good.replace(&format!(",{T0}]"), "]"), "invalid length"),
        (
            good.replace("\"entries\":[", "\"entries\":[[\"x\",1.0,1,2],"),
            "invalid length",
        ),
        (
            good.replace(
                "\"entries\":[",
                "\"entries\":[{\"user_id\":\"x\",\"score\":1.0,\"last_update\":1},",
            ),
            "score_at_landmark",
        ),
    ];
    for (text, needle) in cases {
        match Leaderboard::from_snapshot_json(text.as_bytes()) {
            Err(Error::Corrupt(m)) => assert!(m.contains(needle), "{needle:?} not in {m:?}"),
            other => panic!("{needle}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn reads_the_cpp_extension_format() {
    let text = r#"{"decay_factor": 0.5, "max_users": 100000, "entries": [
        {"user_id": "123", "score": 25.0, "last_update": 1700000000},
        {"user_id": "q\"uote", "score": 40.0, "last_update": 1699913600.0}]}"#;
    let b = Leaderboard::from_snapshot_json(text.as_bytes()).unwrap();
    assert_eq!(b.config().decay_factor, 0.5);
    assert_eq!(b.config().decay_period_secs, 86_400.0);
    assert_eq!(b.config().max_users, 100_000);
    let now = 1_700_000_000;
    // 40 a day before `now` decays to 20; 25 is as of `now`.
    assert_eq!(ids(&b.top(0, 5, now).unwrap()), ["123", "q\"uote"]);
    assert!(close(b.rank("q\"uote", now).unwrap().score, 20.0));
    assert_eq!(b.rank("q\"uote", now).unwrap().last_update, 1_699_913_600);
}

#[test]
fn save_is_atomic_and_load_reports_missing_files() {
    let dir = std::env::temp_dir().join(format!("eh-lb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("board.json");
    let mut b = board(0.95, DAY as f64, 0);
    b.add("a", 1.0, T0).unwrap();
    b.save(&path).unwrap();
    b.add("b", 2.0, T0).unwrap();
    b.save(&path).unwrap();
    let loaded = Leaderboard::load(&path, DEFAULT_MAX_FUTURE_SECS).unwrap();
    assert_eq!(loaded.len(), 2);
    // No temp files left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(matches!(
        Leaderboard::load(&dir.join("missing.json"), DEFAULT_MAX_FUTURE_SECS),
        Err(Error::Io(_))
    ));
    assert!(matches!(
        b.save(&dir.join("no/such/dir/x.json")),
        Err(Error::Io(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn memory_per_user_is_compact() {
    let mut b = board(0.95, DAY as f64, 0);
    let n = 100_000u64;
    for i in 0..n {
        let id = format!("{}", 100_000_000_000_000_000 + i * 7_919);
        b.add(&id, (i % 1000) as f64, T0 + (i % 3600) as i64)
            .unwrap();
    }
    let per_user = b.heap_bytes() as f64 / n as f64;
    assert!(per_user < 120.0, "{per_user} heap bytes per user");
}

// ---- model-based property test ---------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Add(u8, i8, u16),
    Set(u8, i8, u16),
    Remove(u8),
    Advance(u32),
    SaveLoad,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..24, -3i8..20, 0u16..7200).prop_map(|(u, p, lag)| Op::Add(u, p, lag)),
        1 => (0u8..24, -3i8..20, 0u16..7200).prop_map(|(u, p, lag)| Op::Set(u, p, lag)),
        1 => (0u8..24).prop_map(Op::Remove),
        2 => (0u32..30_000).prop_map(Op::Advance),
        1 => Just(Op::SaveLoad),
    ]
}

/// The naive model: every contribution kept and decayed from scratch on each query.
#[derive(Default)]
struct Model {
    users: std::collections::BTreeMap<String, (Vec<(f64, i64)>, i64)>,
}

impl Model {
    fn score(&self, history: &[(f64, i64)], decay: f64, period: f64, now: i64) -> f64 {
        history
            .iter()
            .map(|&(p, ts)| p * decay.powf((now - ts) as f64 / period))
            .sum()
    }
}

fn check_against_model(b: &Leaderboard, m: &Model, decay: f64, period: f64, now: i64) {
    assert_eq!(b.len(), m.users.len());
    let rows = b.top(0, usize::MAX, now).unwrap();
    assert_eq!(rows.len(), m.users.len());
    let mut previous: Option<f64> = None;
    for (i, row) in rows.iter().enumerate() {
        let (history, last) = &m.users[row.user_id];
        let expected = m.score(history, decay, period, now);
        assert!(
            close(row.score, expected),
            "{}: {} vs model {expected}",
            row.user_id,
            row.score
        );
        assert_eq!(row.rank, i as u64 + 1);
        assert_eq!(row.last_update, *last);
        if let Some(p) = previous {
            assert!(
                expected <= p || close(expected, p),
                "order: {expected} after {p}"
            );
        }
        previous = Some(expected);
        let ranked = b.rank(row.user_id, now).unwrap();
        assert_eq!(ranked.rank, row.rank);
        assert_eq!(ranked.score.to_bits(), row.score.to_bits());
    }
}

fn run_model(decay: f64, period: f64, max_users: usize, ops: Vec<Op>) {
    let mut b = board(decay, period, max_users);
    let mut m = Model::default();
    let mut now = T0;
    for op in ops {
        match op {
            Op::Add(u, p, lag) | Op::Set(u, p, lag) => {
                let replace = matches!(op, Op::Set(..));
                let id = format!("user{u}");
                let ts = now - i64::from(lag);
                let points = f64::from(p);
                let existed = m.users.contains_key(&id);
                let full = max_users > 0 && m.users.len() >= max_users && !existed;
                let lowest = full.then(|| {
                    let last = b.top(b.len() - 1, 1, now).unwrap()[0].user_id.to_owned();
                    let (h, _) = &m.users[&last];
                    (last.clone(), m.score(h, decay, period, now))
                });
                let result = if replace {
                    b.set(&id, points, ts)
                } else {
                    b.add(&id, points, ts)
                };
                let new_score = points * decay.powf((now - ts) as f64 / period);
                match (result, lowest) {
                    (Ok(AddOutcome::Stored), None) => {}
                    (Ok(AddOutcome::Evicted(evicted)), Some((lowest_id, lowest_score))) => {
                        assert_eq!(evicted, lowest_id);
                        assert!(new_score >= lowest_score || close(new_score, lowest_score));
                        m.users.remove(&evicted);
                    }
                    (Err(Error::Full(_)), Some((_, lowest_score))) => {
                        assert!(new_score <= lowest_score || close(new_score, lowest_score));
                        continue;
                    }
                    (other, lowest) => panic!("unexpected {other:?} (lowest {lowest:?})"),
                }
                let entry = m.users.entry(id).or_insert_with(|| (Vec::new(), ts));
                if replace {
                    entry.0.clear();
                }
                entry.0.push((points, ts));
                entry.1 = entry.1.max(ts);
            }
            Op::Remove(u) => {
                let id = format!("user{u}");
                assert_eq!(b.remove(&id).is_ok(), m.users.remove(&id).is_some());
            }
            Op::Advance(secs) => now += i64::from(secs),
            Op::SaveLoad => {
                let json = b.to_snapshot_json();
                let loaded = Leaderboard::from_snapshot_json(&json).unwrap();
                let (x, y) = (
                    b.top(0, usize::MAX, now).unwrap(),
                    loaded.top(0, usize::MAX, now).unwrap(),
                );
                assert_eq!(x, y);
                drop((x, y));
                b = loaded;
            }
        }
        b.check_invariants();
        check_against_model(&b, &m, decay, period, now);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn matches_naive_model_without_decay(ops in prop::collection::vec(op(), 1..120)) {
        run_model(1.0, 86_400.0, 0, ops);
    }

    #[test]
    fn matches_naive_model_daily_decay_with_eviction(ops in prop::collection::vec(op(), 1..120)) {
        run_model(0.95, 86_400.0, 8, ops);
    }

    #[test]
    fn matches_naive_model_fast_decay_with_rebases(ops in prop::collection::vec(op(), 1..120)) {
        run_model(0.5, 600.0, 0, ops);
    }
}

// ---- capacity: equal scores at the eviction boundary ---------------------------

/// The reproducer from the report: a 5000-user board churned by 20,000 ids with
/// equal points at one timestamp. It used to hold a newcomer twice after 6655 steps
/// (an empty subtree kept a stale first key whose slot was then reused) and grow
/// without bound; its snapshot was then refused by its own loader.
#[test]
fn churn_at_capacity_with_equal_scores_never_duplicates() {
    let mut b = board(0.95, DAY as f64, 5000);
    let users: Vec<String> = (0..20_000u64)
        .map(|i| (100_000_000_000_000_000 + i).to_string())
        .collect();
    for round in 0..12 {
        for k in (0..10_000).step_by(10) {
            let _ = b.add(&users[(k * 31 + round) % 20_000], 1.0, T0);
            assert!(b.len() <= 5000);
        }
        b.check_invariants();
    }
    assert_eq!(b.len(), 5000);
    let loaded = Leaderboard::from_snapshot_json(&b.to_snapshot_json()).unwrap();
    loaded.check_invariants();
    assert_eq!(
        loaded.top(0, 6000, T0).unwrap(),
        b.top(0, 6000, T0).unwrap()
    );
}

/// An exact model for integer points without decay: a map of scores and the set of
/// (score descending, id ascending) that is the board's order.
#[derive(Default)]
struct OrderModel {
    scores: std::collections::HashMap<String, i64>,
    order: std::collections::BTreeSet<(std::cmp::Reverse<i64>, String)>,
}

impl OrderModel {
    /// Applies `add` and returns what the board must answer.
    fn add(
        &mut self,
        id: &str,
        points: i64,
        max_users: usize,
    ) -> std::result::Result<Option<String>, ()> {
        if let Some(score) = self.scores.get_mut(id) {
            self.order
                .remove(&(std::cmp::Reverse(*score), id.to_owned()));
            *score += points;
            self.order
                .insert((std::cmp::Reverse(*score), id.to_owned()));
            return Ok(None);
        }
        let mut evicted = None;
        if max_users > 0 && self.scores.len() >= max_users {
            let (std::cmp::Reverse(low), low_id) = self.order.last().cloned().unwrap();
            if !(points > low || (points == low && id < low_id.as_str())) {
                return Err(());
            }
            self.order.remove(&(std::cmp::Reverse(low), low_id.clone()));
            self.scores.remove(&low_id);
            evicted = Some(low_id);
        }
        self.scores.insert(id.to_owned(), points);
        self.order
            .insert((std::cmp::Reverse(points), id.to_owned()));
        Ok(evicted)
    }

    fn check(&self, b: &Leaderboard) {
        b.check_invariants();
        let rows = b.top(0, usize::MAX, T0).unwrap();
        assert_eq!(rows.len(), self.order.len());
        for (row, (std::cmp::Reverse(score), id)) in rows.iter().zip(&self.order) {
            assert_eq!((row.user_id, row.score), (id.as_str(), *score as f64));
        }
    }
}

/// Drives `b` and the model with the same adds; checks each outcome, and the whole
/// board every `check_every` operations and at the end.
fn churn_against_model(b: &mut Leaderboard, ops: &[(u32, i64)], check_every: usize) {
    let max_users = b.config().max_users;
    let mut m = OrderModel::default();
    for (n, &(user, points)) in ops.iter().enumerate() {
        let id = format!("u{user:06}");
        let expected = m.add(&id, points, max_users);
        match (b.add(&id, points as f64, T0), expected) {
            (Ok(AddOutcome::Stored), Ok(None)) | (Err(Error::Full(_)), Err(())) => {}
            (Ok(AddOutcome::Evicted(got)), Ok(Some(want))) => assert_eq!(got, want),
            (got, want) => panic!("op {n} ({id}, {points}): board {got:?}, model {want:?}"),
        }
        if (n + 1) % check_every == 0 {
            m.check(b);
        }
    }
    m.check(b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Boards a few leaves deep at capacity, churned for long runs by twice as many
    /// users, with points drawn from a tiny set so that most scores tie, updates of
    /// present users interleaved with evictions, and snapshots at capacity.
    #[test]
    fn capacity_churn_with_ties_matches_the_order_model(
        max_users in 65usize..400,
        ops in prop::collection::vec((0u32..800, prop::sample::select(vec![0i64, 1, 1, 1, 2])), 500..4000),
    ) {
        let mut b = board(1.0, DAY as f64, max_users);
        let ops: Vec<(u32, i64)> = ops.into_iter().map(|(u, p)| (u % (2 * max_users as u32), p)).collect();
        let (first, second) = ops.split_at(ops.len() / 2);
        churn_against_model(&mut b, first, 1);
        let mut loaded = Leaderboard::from_snapshot_json(&b.to_snapshot_json()).unwrap();
        prop_assert_eq!(loaded.top(0, usize::MAX, T0).unwrap(), b.top(0, usize::MAX, T0).unwrap());
        // The loaded board continues the same history (the model restarts from
        // its state: replay the first half into a fresh model inside the helper).
        let all: Vec<(u32, i64)> = first.iter().chain(second).copied().collect();
        let mut fresh = board(1.0, DAY as f64, max_users);
        churn_against_model(&mut fresh, &all, 97);
        for &(user, points) in second {
            let _ = loaded.add(&format!("u{user:06}"), points as f64, T0);
        }
        loaded.check_invariants();
        prop_assert_eq!(loaded.top(0, usize::MAX, T0).unwrap(), fresh.top(0, usize::MAX, T0).unwrap());
    }
}

/// A board past the size where updates start prefetching and planning moves
/// (`PREFETCH_MIN_USERS`), at capacity, churned by twice as many users with equal
/// points, against the exact model.
#[test]
fn large_board_at_capacity_matches_the_order_model() {
    let cap = PREFETCH_MIN_USERS + 4_000;
    let mut b = board(1.0, DAY as f64, cap);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let ops: Vec<(u32, i64)> = (0..3 * cap)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (
                (x % (2 * cap as u64)) as u32,
                [1, 1, 1, 2][(x >> 40) as usize % 4],
            )
        })
        .collect();
    churn_against_model(&mut b, &ops, cap);
    assert_eq!(b.len(), cap);
}

/// Bounded soak: a board at capacity churned by twice as many users, with equal
/// and with distinct timestamps, keeps its size at the bound and its heap where
/// it was once full.
#[test]
fn soak_at_capacity_keeps_size_and_heap_bounded() {
    for distinct_ts in [false, true] {
        let cap = 20_000;
        let mut b = board(0.95, DAY as f64, cap);
        let users: Vec<String> = (0..2 * cap).map(|i| format!("user-{i}")).collect();
        let (mut step, mut round) = (0i64, 0usize);
        let mut churn = |b: &mut Leaderboard, rounds: usize| {
            for _ in 0..rounds {
                // 7919 is prime to the number of users: each round visits all.
                for k in 0..users.len() {
                    let ts = if distinct_ts { T0 + step } else { T0 };
                    let _ = b.add(&users[(k * 7919 + round) % users.len()], 1.0, ts);
                    step += 1;
                }
                round += 1;
            }
        };
        churn(&mut b, 2);
        assert_eq!(b.len(), cap);
        let heap = b.heap_bytes();
        churn(&mut b, 4);
        assert_eq!(b.len(), cap, "distinct_ts {distinct_ts}");
        assert!(b.stats().evicted > 0);
        assert!(
            b.heap_bytes() <= heap + heap / 10,
            "heap grew from {heap} to {} (distinct_ts {distinct_ts})",
            b.heap_bytes()
        );
        b.check_invariants();
    }
}

// ---- time from the future, snapshots, temp files, hash seed ---------------------

#[test]
fn updates_past_the_skew_are_refused_counted_and_change_nothing() {
    let now = wall_clock_secs();
    let mut b = board(0.95, DAY as f64, 0);
    b.add("a", 10.0, now - 60).unwrap();
    let before = b.top(0, 10, now).unwrap()[0].score;
    // Within the default day of skew: accepted.
    b.add("b", 1.0, now + 3_600).unwrap();
    // Forty years ahead (and two days ahead): refused, counted, nothing changes.
    for ahead in [40 * 365 * DAY, 2 * DAY] {
        let err = b.add("a", 1.0, now + ahead).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("max_future_secs")));
        assert!(b.set("c", 1.0, now + ahead).is_err());
    }
    assert_eq!(b.stats().future_refused, 4);
    assert_eq!(b.len(), 2);
    assert_eq!(b.top(0, 10, now).unwrap()[0].score, before);
    b.check_invariants();
}

#[test]
fn a_far_future_update_cannot_zero_other_scores() {
    let now = wall_clock_secs();
    // A board that accepts anything up to year 9999 (skew as large as it gets).
    let mut b = Leaderboard::new(LeaderboardConfig {
        max_future_secs: i64::MAX,
        ..LeaderboardConfig::default()
    })
    .unwrap();
    for i in 0..100 {
        b.add(&format!("u{i}"), 100.0, now).unwrap();
    }
    // Twenty years ahead: past the rebase threshold, but the landmark stops at the
    // present. Forty: its factor would overflow a double, so it is refused.
    b.add("future", 1.0, now + 20 * 365 * DAY).unwrap();
    assert!(b.add("future", 1.0, now + 40 * 365 * DAY).is_err());
    // The landmark never passes the present, so the others keep their scores
    // and later updates still add.
    assert!(b.landmark() <= wall_clock_secs());
    let score = b.rank("u7", now).unwrap().score;
    assert!(close(score, 100.0), "{score}");
    b.add("u7", 5.0, now).unwrap();
    assert!(close(b.rank("u7", now).unwrap().score, 105.0));
    b.check_invariants();
}

#[test]
fn rebase_stops_at_the_present_and_scores_stay_finite() {
    let now = wall_clock_secs();
    // Half a score lost every 10 minutes: rebases come after ~2.6 days.
    let mut b = board(0.5, 600.0, 0);
    b.landmark = now - 30 * DAY;
    b.add("old", 1.0, now - 30 * DAY).unwrap();
    b.add("new", 1.0, now + 3_000).unwrap();
    assert!(b.stats().rebases >= 1);
    assert!(b.landmark() <= wall_clock_secs());
    // Read long before the landmark, scores saturate instead of reading as inf.
    for row in b.top(0, 10, 1).unwrap() {
        assert!(row.score.is_finite(), "{row:?}");
    }
    let at_present = b.rank("new", now + 3_000).unwrap().score;
    assert!(close(at_present, 1.0), "{at_present}");
}

#[test]
fn snapshots_from_the_future_are_refused() {
    let now = wall_clock_secs();
    let ours = |landmark: i64, last: i64| {
        format!(
            r#"{{"format":"engagehub.leaderboard","version":1,"decay_factor":0.95,"decay_period_secs":86400.0,"max_users":0,"landmark":{landmark},"columns":["user_id","score_at_landmark","last_update"],"entries":[["a",1.0,{last}]]}}"#
        )
    };
    assert!(Leaderboard::from_snapshot_json(ours(now, now).as_bytes()).is_ok());
    for (landmark, last) in [(now + 40 * 365 * DAY, now), (now, now + 3 * DAY)] {
        let err = Leaderboard::from_snapshot_json(ours(landmark, last).as_bytes()).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt(ref m) if m.contains("max_future_secs")),
            "{err}"
        );
    }
}

#[test]
fn cpp_snapshots_load_what_can_be_loaded_and_report_the_rest() {
    let now = wall_clock_secs();
    let future = now + 40 * 365 * DAY;
    // What the C++ writer produced: raw tab and newline inside ids, bare inf/nan.
    let text = format!(
        "{{\"decay_factor\": 0.95, \"max_users\": 3, \"entries\": [\n\
         {{\"user_id\": \"tab\there\", \"score\": 5.0, \"last_update\": {now}}},\n\
         {{\"user_id\": \"new\nline\", \"score\": 4.0, \"last_update\": {now}}},\n\
         {{\"user_id\": \"infinite\", \"score\": inf, \"last_update\": {now}}},\n\
         {{\"user_id\": \"nan\", \"score\": -nan, \"last_update\": {now}}},\n\
         {{\"user_id\": \"future\", \"score\": 9.0, \"last_update\": {future}}},\n\
         {{\"user_id\": \"tab\there\", \"score\": 1.0, \"last_update\": {now}}},\n\
         {{\"score\": 1.0, \"last_update\": {now}}},\n\
         42,\n\
         {{\"user_id\": \"low\", \"score\": 1.0, \"last_update\": {now}}},\n\
         {{\"user_id\": \"lowest\", \"score\": 0.5, \"last_update\": {now}}}\n\
         ]}}"
    );
    let b = Leaderboard::from_snapshot_json(text.as_bytes()).unwrap();
    assert_eq!(
        ids(&b.top(0, 10, now).unwrap()),
        ["tab\there", "new\nline", "low"]
    );
    let skipped: Vec<(usize, &str)> = b
        .skipped_at_load()
        .iter()
        .map(|s| (s.index, s.user_id.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            (2, "infinite"),
            (3, "nan"),
            (4, "future"),
            (5, "tab\there"),
            (6, ""),
            (7, ""),
            (9, "lowest")
        ]
    );
    let reasons: Vec<&str> = b
        .skipped_at_load()
        .iter()
        .map(|s| s.reason.as_str())
        .collect();
    assert!(
        reasons[0].contains("finite") && reasons[2].contains("max_future_secs"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].contains("earlier") && reasons[6].contains("max_users"),
        "{reasons:?}"
    );
    // Our own format stays all or nothing, and mending never rescues it.
    let ours = String::from_utf8(b.to_snapshot_json())
        .unwrap()
        .replacen("5.0", "inf", 1);
    assert!(Leaderboard::from_snapshot_json(ours.as_bytes()).is_err());
}

#[test]
fn a_save_removes_temp_files_left_by_killed_saves() {
    let dir = std::env::temp_dir().join(format!("eh-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("board.json");
    // A pid that is not running (beyond the kernel's pid_max), this process's own
    // leftover, and one of a live process (pid 1) that may still be saving.
    let dead = dir.join(".board.json.tmp-4294967-0");
    let own = dir.join(format!(".board.json.tmp-{}-999999", std::process::id()));
    let live = dir.join(".board.json.tmp-1-0");
    let other = dir.join(".other.json.tmp-4294967-0");
    for f in [&dead, &own, &live, &other] {
        std::fs::write(f, b"partial").unwrap();
    }
    let mut b = board(0.95, DAY as f64, 0);
    b.add("a", 1.0, T0).unwrap();
    b.save(&path).unwrap();
    assert!(!dead.exists() && !own.exists());
    assert!(live.exists() && other.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn boards_hash_ids_with_their_own_seed_and_snapshots_do_not_depend_on_it() {
    let mut a = board(0.95, DAY as f64, 0);
    let mut b = board(0.95, DAY as f64, 0);
    assert_ne!(a.seed, b.seed);
    for i in 0..500 {
        let id = format!("user{i}");
        a.add(&id, f64::from(i % 7), T0).unwrap();
        b.add(&id, f64::from(i % 7), T0).unwrap();
    }
    assert_eq!(a.to_snapshot_json(), b.to_snapshot_json());
    let loaded = Leaderboard::from_snapshot_json(&a.to_snapshot_json()).unwrap();
    assert_ne!(loaded.seed, a.seed);
    loaded.check_invariants();
    assert_eq!(
        loaded.rank("user3", T0).unwrap(),
        a.rank("user3", T0).unwrap()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Updates around the wall clock, some up to three days ahead of it: those
    /// within the skew behave as any other (the model knows nothing of the
    /// landmark), the others are refused and change nothing; queries are made both
    /// at and before the newest update.
    #[test]
    fn future_timestamps_match_the_model(
        ops in prop::collection::vec((0u8..16, 1i8..20, prop_oneof![-50_000i64..80_000, 90_000i64..260_000]), 1..80),
    ) {
        let now = wall_clock_secs();
        let (decay, period) = (0.95, DAY as f64);
        let mut b = board(decay, period, 0);
        let mut m = Model::default();
        for (u, p, ahead) in ops {
            let id = format!("user{u}");
            let ts = now + ahead;
            match b.add(&id, f64::from(p), ts) {
                Ok(_) => {
                    prop_assert!(ahead < DAY);
                    let e = m.users.entry(id).or_insert_with(|| (Vec::new(), ts));
                    e.0.push((f64::from(p), ts));
                    e.1 = e.1.max(ts);
                }
                Err(Error::InvalidArgument(_)) => prop_assert!(ahead > DAY),
                Err(other) => panic!("{other:?}"),
            }
            b.check_invariants();
            check_against_model(&b, &m, decay, period, now);
            check_against_model(&b, &m, decay, period, now - 10 * DAY);
        }
    }
}

// ---- pending changes for publishing -------------------------------------------

/// Applies drained batches to a model of the shared board (values relative to
/// `landmark`), as the publisher's script does.
/// Like the script, it rebases itself to a batch's landmark when the batch is far
/// ahead of its own.
fn apply(
    shared: &mut std::collections::HashMap<String, f64>,
    landmark: &mut i64,
    lambda: f64,
    batch: &PendingBatch,
) {
    if lambda * (batch.landmark - *landmark) as f64 > 64.0 {
        let factor = (-lambda * (batch.landmark - *landmark) as f64).exp();
        shared.values_mut().for_each(|v| *v *= factor);
        *landmark = batch.landmark;
    }
    let scale = (lambda * (batch.landmark - *landmark) as f64).exp();
    for row in &batch.rows {
        match row.kind {
            PendingKind::Add => {
                *shared.entry(row.user_id.clone()).or_insert(0.0) += row.value * scale
            }
            PendingKind::Set => {
                shared.insert(row.user_id.clone(), row.value * scale);
            }
            PendingKind::Remove => {
                shared.remove(&row.user_id);
            }
        }
    }
}

#[test]
fn drain_hands_each_change_out_exactly_once() {
    let mut b = board(0.5, 3600.0, 0);
    b.enable_publishing(1000).unwrap();
    b.add("a", 1.0, T0).unwrap();
    b.add("a", 2.0, T0 + 3600).unwrap();
    b.add("b", 4.0, T0).unwrap();
    assert_eq!(b.stats().pending, 2);
    let batch = b.drain_pending();
    assert_eq!(batch.landmark, T0);
    let mut rows = batch.rows.clone();
    rows.sort_by(|x, y| x.user_id.cmp(&y.user_id));
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].user_id.as_str(), rows[0].value, rows[0].last_update),
        ("a", 1.0 + 4.0, T0 + 3600)
    );
    assert_eq!((rows[1].user_id.as_str(), rows[1].value), ("b", 4.0));
    assert!(b.drain_pending().rows.is_empty(), "a second drain is empty");
    assert_eq!(b.stats().pending, 0);
    b.add("b", 1.0, T0).unwrap();
    let again = b.drain_pending();
    assert_eq!(again.rows.len(), 1);
    assert_eq!(again.rows[0].value, 1.0, "only what came after the drain");
}

#[test]
fn sets_and_removes_are_ordered_before_later_increments() {
    let mut b = board(1.0, 1.0, 0);
    b.enable_publishing(1000).unwrap();
    b.add("a", 5.0, T0).unwrap();
    b.set("a", 2.0, T0).unwrap(); // supersedes the 5
    b.add("a", 1.0, T0).unwrap();
    b.add("c", 3.0, T0).unwrap();
    b.remove("c").unwrap();
    assert!(b.remove("ghost").is_err(), "NotFound locally");
    let batch = b.drain_pending();
    let mut shared =
        std::collections::HashMap::from([("ghost".to_string(), 9.0), ("a".to_string(), 100.0)]);
    apply(&mut shared, &mut T0.clone(), 0.0, &batch);
    assert_eq!(
        shared,
        std::collections::HashMap::from([("a".to_string(), 3.0)])
    );
    assert_eq!(batch.rows[0].kind, PendingKind::Set);
}

#[test]
fn pending_sums_are_rescaled_by_a_rebase_and_match_the_board() {
    // Halving every minute: rebases within hours.
    let mut b = board(0.5, 60.0, 0);
    b.enable_publishing(1 << 20).unwrap();
    let lambda = b.lambda;
    let mut shared = std::collections::HashMap::new();
    let mut shared_landmark = T0;
    let mut ts = T0;
    for i in 0..2000i64 {
        ts += 37;
        b.add(&format!("u{}", i % 50), 1.0 + (i % 7) as f64, ts)
            .unwrap();
        if i % 300 == 0 {
            apply(
                &mut shared,
                &mut shared_landmark,
                lambda,
                &b.drain_pending(),
            );
        }
    }
    apply(
        &mut shared,
        &mut shared_landmark,
        lambda,
        &b.drain_pending(),
    );
    assert!(b.stats().rebases >= 1, "expected a rebase");
    let now = ts;
    for row in b.top(0, 50, now).unwrap() {
        let v = shared[row.user_id];
        let score = v * (-lambda * (now - shared_landmark) as f64).exp();
        assert!(
            close(score, row.score),
            "{}: {score} vs {}",
            row.user_id,
            row.score
        );
    }
}

#[test]
fn the_bound_counts_what_it_drops_and_evictions_keep_their_increments() {
    let mut b = board(1.0, 1.0, 2);
    b.enable_publishing(3).unwrap();
    b.add("a", 10.0, T0).unwrap();
    b.add("b", 5.0, T0).unwrap();
    b.add("c", 7.0, T0).unwrap(); // evicts b locally; b's 5 still pending
    assert!(b.add("d", 1.0, T0).is_err(), "refused locally");
    // a, c, orphan b = 3 held: d's increment is beyond the bound.
    let s = b.stats();
    assert_eq!((s.pending, s.pending_dropped), (3, 1));
    b.add("a", 1.0, T0).unwrap(); // an existing sum: no new entry
    let mut shared = std::collections::HashMap::new();
    apply(&mut shared, &mut T0.clone(), 0.0, &b.drain_pending());
    assert_eq!(shared.len(), 3);
    assert_eq!((shared["a"], shared["b"], shared["c"]), (11.0, 5.0, 7.0));
    assert!(b.enable_publishing(0).is_err());
}

#[test]
fn discarding_pending_drops_sums_orphans_and_ops_and_later_changes_start_fresh() {
    let mut b = board(1.0, 1.0, 2);
    b.enable_publishing(100).unwrap();
    b.add("a", 10.0, T0).unwrap();
    b.add("b", 5.0, T0).unwrap();
    b.add("c", 7.0, T0).unwrap(); // evicts b: an orphan sum
    b.set("a", 3.0, T0).unwrap(); // an op
    assert!(b.stats().pending > 0);
    b.discard_pending();
    assert_eq!(b.stats().pending, 0);
    assert!(b.drain_pending().rows.is_empty());
    b.add("a", 1.0, T0).unwrap();
    b.add("c", 2.0, T0).unwrap();
    let mut shared = std::collections::HashMap::new();
    apply(&mut shared, &mut T0.clone(), 0.0, &b.drain_pending());
    assert_eq!(
        shared,
        std::collections::HashMap::from([("a".to_string(), 1.0), ("c".to_string(), 2.0)])
    );
    // The board itself is untouched by the discard.
    assert_eq!(b.rank("a", T0).unwrap().score, 4.0);
}
