//! Sketch benchmarks: HyperLogLog add / count / merge, the last-hour unique-user
//! query over 60 minute sketches, Count-Min add / estimate and Space-Saving
//! add / merge on a Zipf(1.1) channel stream.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use engagehub::sketch::window::unique_users;
use engagehub::sketch::{CountMin, Hll, SpaceSaving, WindowConfig, WindowedAnalytics};

const T0: i64 = 1_767_225_600;
const BATCH: usize = 10_000;

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
}

/// `n` user ids of 18 decimal digits.
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

/// `n` channel ids (18-digit snowflakes) drawn Zipf(1.1) from 10 000 channels.
fn zipf_channels(n: usize, rng: &mut Rng) -> Vec<String> {
    let names = user_ids(10_000, rng);
    let mut cdf = Vec::with_capacity(names.len());
    let mut acc = 0.0;
    for k in 1..=names.len() {
        acc += (k as f64).powf(-1.1);
        cdf.push(acc);
    }
    (0..n)
        .map(|_| {
            let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * acc;
            let k = cdf.partition_point(|&c| c <= u).min(names.len() - 1);
            names[k].clone()
        })
        .collect()
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(30);
}

fn hll(c: &mut Criterion) {
    let mut rng = Rng(1);
    let ids = user_ids(BATCH, &mut rng);

    let mut group = c.benchmark_group("hll");
    configure(&mut group);
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut sketch = Hll::new();
    group.bench_function("add", |b| {
        b.iter(|| {
            for id in &ids {
                sketch.add(black_box(id.as_bytes()));
            }
        })
    });

    group.throughput(Throughput::Elements(1));
    let mut full = Hll::new();
    for i in 0..1_000_000u64 {
        full.add(&i.to_le_bytes());
    }
    group.bench_function("count", |b| b.iter(|| black_box(&full).count()));

    let mut other = Hll::new();
    for i in 500_000..1_500_000u64 {
        other.add(&i.to_le_bytes());
    }
    let mut target = full.clone();
    group.bench_function("merge", |b| b.iter(|| target.merge(black_box(&other))));
    group.finish();
}

fn window(c: &mut Criterion) {
    let mut rng = Rng(2);
    let now = T0 + 3600;
    let mut shard = WindowedAnalytics::new(&WindowConfig::default()).expect("config");
    let channels = zipf_channels(2_000, &mut rng);
    for minute in 0..60i64 {
        // ~2k users per minute, half of them active the minute before too.
        for i in 0..2_000u64 {
            let id = format!("{}", 100_000_000_000_000_000 + minute as u64 * 1_000 + i);
            let ts = now - 3600 + 60 * (minute + 1) - 1 - (i as i64 % 60);
            shard.observe(id.as_bytes(), &channels[i as usize], ts);
        }
    }
    let mut group = c.benchmark_group("window");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    group.bench_function("last_hour", |b| {
        b.iter(|| unique_users([black_box(&shard)], 3600, now))
    });
    group.finish();
}

fn cms(c: &mut Criterion) {
    let mut rng = Rng(3);
    let channels = zipf_channels(BATCH, &mut rng);
    let mut group = c.benchmark_group("cms");
    configure(&mut group);
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut sketch = CountMin::new(4, 2048).expect("dimensions");
    group.bench_function("add", |b| {
        b.iter(|| {
            for ch in &channels {
                sketch.add(black_box(ch.as_bytes()), 1);
            }
        })
    });
    group.bench_function("estimate", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for ch in &channels {
                sum = sum.wrapping_add(sketch.estimate(black_box(ch.as_bytes())));
            }
            sum
        })
    });
    group.finish();
}

fn topk(c: &mut Criterion) {
    let mut rng = Rng(4);
    let channels = zipf_channels(200_000, &mut rng);
    let mut group = c.benchmark_group("topk");
    configure(&mut group);
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut summary = SpaceSaving::new(1024).expect("capacity");
    for ch in &channels {
        summary.add(ch, 1);
    }
    let mut batches = channels.chunks_exact(BATCH).cycle();
    group.bench_function("add", |b| {
        b.iter(|| {
            for ch in batches.next().expect("cycle") {
                summary.add(black_box(ch), 1);
            }
        })
    });

    // Two full 1024-key summaries of the two halves of the stream.
    group.throughput(Throughput::Elements(1));
    let (first, second) = channels.split_at(channels.len() / 2);
    let mut a = SpaceSaving::new(1024).expect("capacity");
    let mut b2 = SpaceSaving::new(1024).expect("capacity");
    first.iter().for_each(|ch| a.add(ch, 1));
    second.iter().for_each(|ch| b2.add(ch, 1));
    group.bench_function("merge", |b| {
        b.iter_batched_ref(
            || a.clone(),
            |target| target.merge(black_box(&b2)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, hll, window, cms, topk);
criterion_main!(benches);
