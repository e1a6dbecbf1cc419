//! Streaming sketches: HyperLogLog, Count-Min, Space-Saving, sliding windows.
//!
//! Every summary here uses memory bounded independently of the length of the
//! stream and of the number of distinct items in it:
//!
//! * [`Hll`]: a HyperLogLog distinct counter (precision 14, 16 KiB, about 0.8 %
//!   relative standard error) with Ertl's improved estimator, register-identical
//!   to Redis's (it converts to and from Redis HyperLogLog values).
//! * [`CountMin`]: a Count-Min frequency sketch that never undercounts.
//! * [`SpaceSaving`]: a bounded heavy-hitter summary giving the top channels
//!   with per-key error bounds.
//! * [`WindowedAnalytics`]: the per-worker shard the pipeline updates, which
//!   combines the above all-time and over a ring of per-minute sketches, plus
//!   the free functions ([`window::unique_users`], [`window::top_channels`],
//!   ...) that answer queries over several shards.
//!
//! All hashing goes through [`hash`] (Redis's MurmurHash64A for the HyperLogLogs,
//! XXH3 for the rest): specified, platform-independent hashes, so sketches
//! serialized by one process merge with those of another.
//! Sketches are mergeable: the union of the streams seen by several workers is
//! summarised by merging their sketches.

pub mod cms;
pub mod hash;
pub mod hll;
pub mod topk;
pub mod window;

pub use cms::CountMin;
pub use hll::Hll;
pub use topk::SpaceSaving;
pub use window::{ChannelCount, WindowConfig, WindowedAnalytics};

/// Deterministic generators shared by the sketch and pipeline tests.
#[cfg(test)]
pub(crate) mod testutil {
    /// The SplitMix64 finaliser: a bijective mix of `x`, used to turn a counter
    /// into well-spread pseudo-random 64-bit values (e.g. hashes for HLL tests).
    pub(crate) fn splitmix64(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A SplitMix64 pseudo-random generator.
    #[derive(Debug, Clone)]
    pub(crate) struct Rng(u64);

    impl Rng {
        /// A generator seeded with `seed`.
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed)
        }

        /// The next 64 pseudo-random bits.
        pub(crate) fn next_u64(&mut self) -> u64 {
            let x = self.0;
            self.0 = x.wrapping_add(1);
            splitmix64(x)
        }

        /// A uniform `f64` in `[0, 1)`.
        pub(crate) fn next_f64(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
        }

        /// A value in `0..n` (`n > 0`; the modulo bias is negligible for tests).
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }
    }

    /// A Zipf(s) sampler over ranks `0..n` (rank 0 the most frequent) by inverse
    /// CDF: precomputed cumulative weights `1/(k+1)^s` and a binary search.
    #[derive(Debug, Clone)]
    pub(crate) struct Zipf {
        cdf: Vec<f64>,
    }

    impl Zipf {
        /// A sampler over `n >= 1` ranks with exponent `s`.
        pub(crate) fn new(n: usize, s: f64) -> Self {
            assert!(n >= 1, "Zipf needs at least one rank");
            let mut cdf = Vec::with_capacity(n);
            let mut acc = 0.0;
            for k in 0..n {
                acc += ((k + 1) as f64).powf(-s);
                cdf.push(acc);
            }
            let total = acc;
            for c in &mut cdf {
                *c /= total;
            }
            Zipf { cdf }
        }

        /// Number of ranks.
        pub(crate) fn len(&self) -> usize {
            self.cdf.len()
        }

        /// Draws one rank in `0..n`.
        pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
            let u = rng.next_f64();
            self.cdf
                .partition_point(|&c| c <= u)
                .min(self.cdf.len() - 1)
        }
    }

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = Zipf::new(100, 1.1);
        assert_eq!(z.len(), 100);
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 100];
        for _ in 0..20_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[5] && counts[5] > counts[50]);
    }
}
