//! Random leaderboard operations checked against a simple model: a Vec of users
//! sorted by score descending, then id ascending. Small id alphabets, equal points
//! and equal timestamps make ties (and ties at the eviction boundary) common; small
//! `max_users` make eviction and refusal common; bulk inserts grow boards past a
//! few tree nodes. After every operation the whole ranking, the counters and each
//! result are compared with the model.
#![no_main]

use arbitrary::Arbitrary;
use engagehub::Error;
use engagehub::leaderboard::{AddOutcome, Leaderboard, LeaderboardConfig, RankedUser};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

const T0: i64 = 1_767_225_600;
/// Timestamp offsets: equal timestamps often; with a 60 s period, one day later is
/// far enough to make the board rebase.
const TS_OFFSETS: [i64; 6] = [0, 0, 0, 1, 3600, 86_400];
const DECAYS: [f64; 3] = [1.0, 0.5, 0.95];
const PERIODS: [f64; 3] = [86_400.0, 3600.0, 60.0];
const MAX_USERS: [usize; 8] = [0, 1, 2, 3, 5, 40, 200, 3000];
/// Adds per input at most (bulk adds included), so that no input runs for long.
const MAX_ADDS: usize = 20_000;
/// Rebase threshold of the board (`REBASE_EXPONENT` in src/leaderboard/mod.rs).
const REBASE_EXPONENT: f64 = 256.0;
const NAMED_IDS: [&str; 8] = [
    "a",
    "b",
    "c",
    "ab",
    "ba",
    "é",
    "a-user-id-too-long-to-be-stored-inline-0",
    "a-user-id-too-long-to-be-stored-inline-1",
];

#[derive(Arbitrary, Debug)]
struct Input {
    decay: u8,
    period: u8,
    max_users: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Add {
        id: u8,
        points: i8,
        ts: u8,
    },
    Set {
        id: u8,
        score: i8,
        ts: u8,
    },
    /// `count % 4096` adds with ids `u{start}`, `u{start+1}`..., all the same points.
    Bulk {
        start: u16,
        count: u16,
        points: i8,
        ts: u8,
    },
    /// `rounds` times `count % 4096` adds of ids `u{(start + round + i * stride) %
    /// 12000}` (churn through a larger id space than the board holds, the pattern
    /// of issue 15's reproducer), all the same points.
    Churn {
        start: u16,
        stride: u16,
        count: u16,
        rounds: u8,
        points: i8,
        ts: u8,
    },
    Remove {
        id: u8,
    },
    Top {
        offset: u8,
        k: u8,
        now: u8,
    },
    Rank {
        id: u8,
        now: u8,
    },
    Around {
        id: u8,
        radius: u8,
        now: u8,
    },
    /// Save to snapshot bytes and continue with the reloaded board.
    Reload,
    Clear,
    /// Arguments the board must refuse without changing anything.
    Invalid {
        which: u8,
        id: u8,
    },
}

fn id_of(sel: u8) -> String {
    match NAMED_IDS.get(usize::from(sel)) {
        Some(id) => (*id).to_owned(),
        None => format!("u{}", sel % 64),
    }
}

fn ts_of(sel: u8) -> i64 {
    T0 + TS_OFFSETS[usize::from(sel) % TS_OFFSETS.len()]
}

/// Half-integers, so sums stay exact and equal scores are common; -128 is -0.0.
fn points_of(p: i8) -> f64 {
    if p == i8::MIN {
        -0.0
    } else {
        f64::from(p) / 2.0
    }
}

#[derive(Debug, Clone, PartialEq)]
struct User {
    id: String,
    value: f64,
    last_update: i64,
}

/// What an operation returned, in a form both sides produce.
#[derive(Debug, PartialEq)]
enum Outcome {
    Stored,
    Evicted(String),
    Done,
    Rows(Vec<(String, u64, u64, i64)>),
    Row((String, u64, u64, i64)),
    InvalidArgument,
    NotFound,
    Full,
    Other(String),
}

fn row(r: &RankedUser<'_>) -> (String, u64, u64, i64) {
    (
        r.user_id.to_owned(),
        r.rank,
        r.score.to_bits(),
        r.last_update,
    )
}

fn outcome_of_err(e: Error) -> Outcome {
    match e {
        Error::InvalidArgument(_) => Outcome::InvalidArgument,
        Error::NotFound(_) => Outcome::NotFound,
        Error::Full(_) => Outcome::Full,
        other => Outcome::Other(other.to_string()),
    }
}

/// The model: the same forward-decay arithmetic (so scores compare bit for bit)
/// over a plain sorted Vec.
struct Model {
    config: LeaderboardConfig,
    lambda: f64,
    landmark: i64,
    users: Vec<User>,
    /// Each user's value, to find it in `users` by binary search.
    values: HashMap<String, f64>,
    evicted: u64,
    refused: u64,
}

impl Model {
    fn new(config: LeaderboardConfig) -> Self {
        Model {
            config,
            lambda: -config.decay_factor.ln() / config.decay_period_secs,
            landmark: 0,
            users: Vec::new(),
            values: HashMap::new(),
            evicted: 0,
            refused: 0,
        }
    }

    /// The ranking order: higher value first, then id bytes ascending.
    fn order(a: &User, b: &User) -> std::cmp::Ordering {
        b.value.total_cmp(&a.value).then_with(|| a.id.cmp(&b.id))
    }

    fn sort(&mut self) {
        self.users.sort_by(Self::order);
    }

    fn remove_at(&mut self, i: usize) -> User {
        let user = self.users.remove(i);
        self.values.remove(&user.id);
        user
    }

    fn clear(&mut self) {
        self.users.clear();
        self.values.clear();
    }

    fn insert_sorted(&mut self, user: User) {
        self.values.insert(user.id.clone(), user.value);
        let at = self
            .users
            .partition_point(|u| Self::order(u, &user) == std::cmp::Ordering::Less);
        self.users.insert(at, user);
    }

    /// Finds `id` by binary search on its value and id.
    fn position(&self, id: &str) -> Option<usize> {
        let value = *self.values.get(id)?;
        let at = self.users.partition_point(|u| {
            value
                .total_cmp(&u.value)
                .then_with(|| u.id.as_str().cmp(id))
                .is_lt()
        });
        assert_eq!(self.users[at].id, id, "model lost {id:?}");
        Some(at)
    }

    fn forward_factor(&mut self, ts: i64) -> f64 {
        if self.lambda == 0.0 {
            return 1.0;
        }
        let exponent = self.lambda * (ts - self.landmark) as f64;
        if exponent > REBASE_EXPONENT {
            let factor = (-self.lambda * (ts - self.landmark) as f64).exp();
            for u in &mut self.users {
                u.value = u.value * factor + 0.0;
                self.values.insert(u.id.clone(), u.value);
            }
            self.landmark = ts;
            self.sort();
            return 1.0;
        }
        exponent.exp()
    }

    fn score_at(&self, value: f64, now: i64) -> f64 {
        if self.lambda == 0.0 || value == 0.0 {
            return value;
        }
        // Scores asked for long before the landmark saturate at the largest
        // finite double, as the board documents.
        let score = value * (-self.lambda * (now - self.landmark) as f64).exp();
        if score.is_finite() {
            score
        } else {
            f64::MAX.copysign(value)
        }
    }

    fn update(&mut self, id: &str, amount: f64, ts: i64, replace: bool) -> Outcome {
        if self.users.is_empty() {
            self.landmark = ts;
        }
        let delta = amount * self.forward_factor(ts);
        if let Some(i) = self.position(id) {
            let mut u = self.remove_at(i);
            u.value = if replace { delta } else { u.value + delta } + 0.0;
            u.last_update = u.last_update.max(ts);
            self.insert_sorted(u);
            return Outcome::Stored;
        }
        let value = delta + 0.0;
        let mut outcome = Outcome::Stored;
        if self.config.max_users > 0 && self.users.len() >= self.config.max_users {
            let lowest = self.users.last().expect("a full board has a lowest user");
            let beats = match value.total_cmp(&lowest.value) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal => id < lowest.id.as_str(),
            };
            if !beats {
                self.refused += 1;
                return Outcome::Full;
            }
            let lowest = self.remove_at(self.users.len() - 1);
            self.evicted += 1;
            outcome = Outcome::Evicted(lowest.id);
        }
        self.insert_sorted(User {
            id: id.to_owned(),
            value,
            last_update: ts,
        });
        outcome
    }

    fn ranked(&self, i: usize, now: i64) -> (String, u64, u64, i64) {
        let u = &self.users[i];
        (
            u.id.clone(),
            i as u64 + 1,
            self.score_at(u.value, now).to_bits(),
            u.last_update,
        )
    }

    fn top(&self, offset: usize, k: usize, now: i64) -> Outcome {
        let end = offset.saturating_add(k).min(self.users.len());
        Outcome::Rows(
            (offset.min(end)..end)
                .map(|i| self.ranked(i, now))
                .collect(),
        )
    }
}

fn rows_of(result: engagehub::Result<Vec<RankedUser<'_>>>) -> Outcome {
    match result {
        Ok(rows) => Outcome::Rows(rows.iter().map(row).collect()),
        Err(e) => outcome_of_err(e),
    }
}

fn stored_of(result: engagehub::Result<AddOutcome>) -> Outcome {
    match result {
        Ok(AddOutcome::Stored) => Outcome::Stored,
        Ok(AddOutcome::Evicted(id)) => Outcome::Evicted(id),
        Err(e) => outcome_of_err(e),
    }
}

/// Adds `points` at `ts` to each of the users `u{n}`, comparing each result.
fn bulk(
    board: &mut Leaderboard,
    model: &mut Model,
    ids: impl Iterator<Item = u32>,
    points: i8,
    ts: u8,
) -> (Outcome, Outcome) {
    let (p, ts) = (points_of(points), ts_of(ts));
    for n in ids {
        let id = format!("u{n}");
        let got = stored_of(board.add(&id, p, ts));
        let want = model.update(&id, p, ts, false);
        assert_eq!(got, want, "bulk add of {id:?} ({p} at {ts})");
        assert_eq!(board.len(), model.users.len(), "bulk add of {id:?}");
    }
    (Outcome::Done, Outcome::Done)
}

/// Runs one operation on the board and the model and compares the results.
fn step(board: &mut Leaderboard, model: &mut Model, op: Op) {
    let (got, want) = match op {
        Op::Add { id, points, ts } => {
            let (id, p, ts) = (id_of(id), points_of(points), ts_of(ts));
            (
                stored_of(board.add(&id, p, ts)),
                model.update(&id, p, ts, false),
            )
        }
        Op::Set { id, score, ts } => {
            let (id, s, ts) = (id_of(id), points_of(score), ts_of(ts));
            (
                stored_of(board.set(&id, s, ts)),
                model.update(&id, s, ts, true),
            )
        }
        Op::Bulk {
            start,
            count,
            points,
            ts,
        } => {
            let ids = (0..u32::from(count % 4096)).map(|i| u32::from(start) + i);
            bulk(board, model, ids, points, ts)
        }
        Op::Churn {
            start,
            stride,
            count,
            rounds,
            points,
            ts,
        } => {
            let ids = (0..u32::from(rounds)).flat_map(|round| {
                (0..u32::from(count % 4096))
                    .map(move |i| (u32::from(start) + round + i * u32::from(stride)) % 12_000)
            });
            bulk(board, model, ids, points, ts)
        }
        Op::Remove { id } => {
            let id = id_of(id);
            let got = match board.remove(&id) {
                Ok(()) => Outcome::Done,
                Err(e) => outcome_of_err(e),
            };
            let want = match model.position(&id) {
                Some(i) => {
                    model.remove_at(i);
                    Outcome::Done
                }
                None => Outcome::NotFound,
            };
            (got, want)
        }
        Op::Top { offset, k, now } => {
            let (offset, k, now) = (usize::from(offset), usize::from(k), ts_of(now));
            (
                rows_of(board.top(offset, k, now)),
                model.top(offset, k, now),
            )
        }
        Op::Rank { id, now } => {
            let (id, now) = (id_of(id), ts_of(now));
            let got = match board.rank(&id, now) {
                Ok(r) => Outcome::Row(row(&r)),
                Err(e) => outcome_of_err(e),
            };
            let want = match model.position(&id) {
                Some(i) => Outcome::Row(model.ranked(i, now)),
                None => Outcome::NotFound,
            };
            (got, want)
        }
        Op::Around { id, radius, now } => {
            let (id, radius, now) = (id_of(id), usize::from(radius % 16), ts_of(now));
            let want = match model.position(&id) {
                Some(i) => {
                    let start = i.saturating_sub(radius);
                    model.top(start, i - start + 1 + radius, now)
                }
                None => Outcome::NotFound,
            };
            (rows_of(board.around(&id, radius, now)), want)
        }
        Op::Reload => {
            let bytes = board.to_snapshot_json();
            let reloaded = match Leaderboard::from_snapshot_json(&bytes) {
                Ok(b) => b,
                Err(e) => panic!(
                    "the board's own snapshot is refused: {e}\n{}",
                    String::from_utf8_lossy(&bytes)
                ),
            };
            assert_eq!(reloaded.to_snapshot_json(), bytes, "re-save is not stable");
            *board = reloaded;
            // A loaded board starts its counters afresh.
            model.evicted = 0;
            model.refused = 0;
            (Outcome::Done, Outcome::Done)
        }
        Op::Clear => {
            board.clear();
            model.clear();
            (Outcome::Done, Outcome::Done)
        }
        Op::Invalid { which, id } => {
            let id = id_of(id);
            let got = match which % 6 {
                0 => stored_of(board.add("", 1.0, T0)),
                1 => stored_of(board.add(&id, f64::NAN, T0)),
                2 => stored_of(board.set(&id, f64::INFINITY, T0)),
                3 => stored_of(board.add(&id, 1.0, engagehub::leaderboard::MAX_TIMESTAMP + 1)),
                4 => stored_of(board.add(
                    &"x".repeat(engagehub::leaderboard::MAX_USER_ID_LEN + 1),
                    1.0,
                    T0,
                )),
                _ => rows_of(board.top(0, 1, engagehub::leaderboard::MAX_TIMESTAMP + 1)),
            };
            (got, Outcome::InvalidArgument)
        }
    };
    assert_eq!(got, want, "{op:?}");
    check_board(board, model);
}

/// The whole ranking, each user's rank, the size and the counters agree.
fn check_board(board: &Leaderboard, model: &Model) {
    let now = T0;
    assert_eq!(board.len(), model.users.len());
    let rows = board.top(0, board.len() + 1, now).expect("now is valid");
    assert_eq!(rows.len(), model.users.len());
    for (i, (got, want)) in rows.iter().zip(&model.users).enumerate() {
        let ok = got.user_id == want.id
            && got.rank == i as u64 + 1
            && got.score.to_bits() == model.score_at(want.value, now).to_bits()
            && got.last_update == want.last_update;
        assert!(ok, "row {i}: board {got:?}, model {want:?}");
    }
    if model.config.max_users > 0 {
        assert!(
            board.len() <= model.config.max_users,
            "board above max_users"
        );
    }
    let stats = board.stats();
    assert_eq!(
        (stats.evicted, stats.refused),
        (model.evicted, model.refused)
    );
    // Every user's rank on small boards, a sample of ~64 on large ones.
    let stride = (model.users.len() / 64).max(1);
    for (i, u) in model.users.iter().enumerate().step_by(stride) {
        let r = board.rank(&u.id, now).expect("a listed user has a rank");
        assert_eq!(r.rank, i as u64 + 1, "rank of {:?}", u.id);
    }
}

fuzz_target!(|input: Input| {
    let config = LeaderboardConfig {
        decay_factor: DECAYS[usize::from(input.decay) % DECAYS.len()],
        decay_period_secs: PERIODS[usize::from(input.period) % PERIODS.len()],
        max_users: MAX_USERS[usize::from(input.max_users) % MAX_USERS.len()],
        // T0 is in the past, so no update is ever refused as from the future.
        ..LeaderboardConfig::default()
    };
    let mut board = Leaderboard::new(config).expect("valid config");
    let mut model = Model::new(config);
    let mut adds = 0;
    for op in input.ops {
        adds += match op {
            Op::Bulk { count, .. } => usize::from(count % 4096),
            Op::Churn { count, rounds, .. } => usize::from(count % 4096) * usize::from(rounds),
            _ => 1,
        };
        if adds > MAX_ADDS {
            break;
        }
        step(&mut board, &mut model, op);
    }
});
