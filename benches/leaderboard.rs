//! Leaderboard benchmarks: add / top(0,10) / rank / around(r=5) at 10k, 100k and
//! 1M users with 18-digit numeric ids and uniformly random targets, heap bytes per
//! user, and snapshot save/load of 1M users.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use engagehub::leaderboard::{Leaderboard, LeaderboardConfig};

const T0: i64 = 1_767_225_600;
const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];

/// SplitMix64: a small deterministic generator so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn user_ids(n: usize, rng: &mut Rng) -> Vec<String> {
    (0..n)
        .map(|_| {
            format!(
                "{}",
                100_000_000_000_000_000 + rng.next() % 900_000_000_000_000_000
            )
        })
        .collect()
}

fn filled_board(ids: &[String], rng: &mut Rng) -> Leaderboard {
    let mut board = Leaderboard::new(LeaderboardConfig::default()).expect("config");
    for (i, id) in ids.iter().enumerate() {
        let points = (rng.next() % 10_000) as f64 / 10.0;
        board
            .add(id, points, T0 + (i % 86_400) as i64)
            .expect("add");
    }
    board
}

fn leaderboard(c: &mut Criterion) {
    let mut group = c.benchmark_group("leaderboard");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for &n in &SIZES {
        let mut rng = Rng(n as u64);
        let ids = user_ids(n, &mut rng);
        let mut board = filled_board(&ids, &mut rng);
        let per_user = board.heap_bytes() as f64 / board.len() as f64;
        println!("leaderboard/heap_bytes_per_user/{n}: {per_user:.1} (ids of 18 digits)");
        // The ids to operate on, copied in the order they are used: a caller holds
        // the id it just received (hot in its cache), so the bench must not charge
        // the board for two cache misses into its own million-string table.
        let targets: Vec<String> = (0..1 << 16).map(|_| ids[rng.below(n)].clone()).collect();
        let now = T0 + 2 * 86_400;

        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("add", n), |b| {
            b.iter(|| {
                i = (i + 1) & 0xFFFF;
                let ts = T0 + 86_400 + (i as i64);
                board.add(&targets[i], 1.5, ts).expect("add");
            })
        });
        group.bench_function(BenchmarkId::new("top10", n), |b| {
            b.iter(|| black_box(board.top(0, 10, now).expect("top")))
        });
        group.bench_function(BenchmarkId::new("rank", n), |b| {
            b.iter(|| {
                i = (i + 1) & 0xFFFF;
                black_box(board.rank(&targets[i], now).expect("rank"))
            })
        });
        group.bench_function(BenchmarkId::new("around5", n), |b| {
            b.iter(|| {
                i = (i + 1) & 0xFFFF;
                black_box(board.around(&targets[i], 5, now).expect("around"))
            })
        });
    }
    group.finish();
}

fn snapshots(c: &mut Criterion) {
    let n = 1_000_000;
    let mut rng = Rng(42);
    let ids = user_ids(n, &mut rng);
    let board = filled_board(&ids, &mut rng);
    let dir = std::env::temp_dir().join(format!("eh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("board.json");

    let mut group = c.benchmark_group("snapshot_1M");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("save", |b| b.iter(|| board.save(&path).expect("save")));
    board.save(&path).expect("save");
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("snapshot_1M/file_bytes: {bytes}");
    group.bench_function("load", |b| {
        b.iter(|| {
            black_box(
                Leaderboard::load(&path, engagehub::leaderboard::DEFAULT_MAX_FUTURE_SECS)
                    .expect("load"),
            )
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, leaderboard, snapshots);
criterion_main!(benches);
