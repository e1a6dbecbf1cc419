//! Count-Min frequency sketch.
//!
//! `depth` rows of `width` 64-bit counters. An item adds its count to one
//! counter per row and its estimate is the minimum of those counters, so it
//! never undercounts; with `N` the total of all counts, the overcount is at
//! most `ε·N` (`ε = e / width`) with probability at least `1 - e^-depth`.
//!
//! Row indices come from one 128-bit [`hash128`]
//! `(h1, h2)` by double hashing (Kirsch & Mitzenmacher): row `i` uses
//! `x_i = h1 + i·h2' (mod 2^64)` with `h2' = h2 | 1`, reduced to `0..width` by
//! the multiply-shift range reduction `⌊x_i · width / 2^64⌋`. This mapping is
//! part of the wire format: sketches merge only if built with it.
//!
//! Counters saturate at `u64::MAX` instead of wrapping.
//!
//! # Wire format (version 1)
//!
//! | offset | size          | content                                        |
//! |-------:|--------------:|------------------------------------------------|
//! | 0      | 4             | magic `b"ECMS"`                                |
//! | 4      | 1             | version, `1`                                   |
//! | 5      | 4             | depth, u32 LE, `1..=16`                        |
//! | 9      | 4             | width, u32 LE, `1..=2^24`                      |
//! | 13     | 8             | total, u64 LE                                  |
//! | 21     | 8·depth·width | counters, u64 LE, row-major                    |
//! | end-8  | 8             | [`checksum`](super::hash) of all bytes before  |

use super::hash::{checksum, hash128};
use crate::error::{Error, Result};

/// Default number of rows.
pub const DEFAULT_DEPTH: usize = 4;
/// Default number of counters per row.
pub const DEFAULT_WIDTH: usize = 2048;
/// Largest accepted depth.
pub const MAX_DEPTH: usize = 16;
/// Largest accepted width.
pub const MAX_WIDTH: usize = 1 << 24;

const MAGIC: &[u8; 4] = b"ECMS";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 4 + 4 + 8;

/// A Count-Min sketch: see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountMin {
    depth: usize,
    width: usize,
    total: u64,
    /// `depth * width` counters, row-major.
    counters: Box<[u64]>,
}

/// Maps `x` uniformly onto `0..width` (Lemire's multiply-shift reduction).
#[inline]
fn reduce(x: u64, width: usize) -> usize {
    ((u128::from(x) * width as u128) >> 64) as usize
}

fn check_dimensions(depth: usize, width: usize) -> Result<()> {
    if !(1..=MAX_DEPTH).contains(&depth) {
        return Err(Error::invalid(format!(
            "Count-Min depth {depth} is outside 1..={MAX_DEPTH}"
        )));
    }
    if !(1..=MAX_WIDTH).contains(&width) {
        return Err(Error::invalid(format!(
            "Count-Min width {width} is outside 1..={MAX_WIDTH}"
        )));
    }
    Ok(())
}

impl CountMin {
    /// An empty sketch of `depth` rows of `width` counters.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `1 <= depth <= 16` and
    /// `1 <= width <= 2^24`.
    pub fn new(depth: usize, width: usize) -> Result<CountMin> {
        check_dimensions(depth, width)?;
        Ok(CountMin {
            depth,
            width,
            total: 0,
            counters: vec![0u64; depth * width].into_boxed_slice(),
        })
    }

    /// Number of rows.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Number of counters per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// `ε = e / width`: estimates exceed the true count by at most `ε·total()`
    /// with probability at least `1 - e^-depth`.
    pub fn epsilon(&self) -> f64 {
        std::f64::consts::E / self.width as f64
    }

    /// Sum of all counts added (saturating).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Adds `count` occurrences of `item`.
    #[inline]
    pub fn add(&mut self, item: &[u8], count: u64) {
        self.add_hash(hash128(item), count);
    }

    /// Adds `count` occurrences of the item whose [`hash128`] is `h`.
    #[inline]
    pub fn add_hash(&mut self, h: (u64, u64), count: u64) {
        self.total = self.total.saturating_add(count);
        let width = self.width;
        let step = h.1 | 1;
        let mut x = h.0;
        for row in self.counters.chunks_exact_mut(width) {
            let c = &mut row[reduce(x, width)];
            *c = c.saturating_add(count);
            x = x.wrapping_add(step);
        }
    }

    /// Estimated count of `item`: never below the true count.
    #[inline]
    pub fn estimate(&self, item: &[u8]) -> u64 {
        self.estimate_hash(hash128(item))
    }

    /// Estimated count of the item whose [`hash128`] is `h`.
    #[inline]
    pub fn estimate_hash(&self, h: (u64, u64)) -> u64 {
        let width = self.width;
        let step = h.1 | 1;
        let mut x = h.0;
        let mut min = u64::MAX;
        for row in self.counters.chunks_exact(width) {
            min = min.min(row[reduce(x, width)]);
            x = x.wrapping_add(step);
        }
        min
    }

    /// Adds `other`'s counts to `self`: afterwards `self` is the sketch of the
    /// concatenation of both streams.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the dimensions differ (`self` unchanged).
    pub fn merge(&mut self, other: &CountMin) -> Result<()> {
        if self.depth != other.depth || self.width != other.width {
            return Err(Error::invalid(format!(
                "cannot merge a {}x{} Count-Min sketch into a {}x{} one",
                other.depth, other.width, self.depth, self.width
            )));
        }
        for (a, b) in self.counters.iter_mut().zip(other.counters.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total = self.total.saturating_add(other.total);
        Ok(())
    }

    /// Resets every counter and the total, keeping the allocation.
    pub fn clear(&mut self) {
        self.counters.fill(0);
        self.total = 0;
    }

    /// Serializes to the version-1 wire format of the [module docs](self).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 8 * self.counters.len() + 8);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        // Dimensions are at most 2^24, so they fit in u32.
        out.extend_from_slice(&(self.depth as u32).to_le_bytes());
        out.extend_from_slice(&(self.width as u32).to_le_bytes());
        out.extend_from_slice(&self.total.to_le_bytes());
        for c in self.counters.iter() {
            out.extend_from_slice(&c.to_le_bytes());
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes)'s output.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the problem: bad magic, unsupported version,
    /// dimensions out of range, wrong length, checksum mismatch, or counters
    /// inconsistent with the total (each row must sum to it).
    pub fn from_bytes(bytes: &[u8]) -> Result<CountMin> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::corrupt(format!(
                "Count-Min truncated: {} bytes, the header alone is {HEADER_LEN}",
                bytes.len()
            )));
        }
        if &bytes[..4] != MAGIC {
            return Err(Error::corrupt("Count-Min bad magic, expected \"ECMS\""));
        }
        if bytes[4] != VERSION {
            return Err(Error::corrupt(format!(
                "Count-Min unsupported version {} (this build reads {VERSION})",
                bytes[4]
            )));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let depth = u32_at(5) as usize;
        let width = u32_at(9) as usize;
        check_dimensions(depth, width)
            .map_err(|e| Error::corrupt(format!("Count-Min header: {e}")))?;
        let cells = depth * width;
        let expected = HEADER_LEN + 8 * cells + 8;
        if bytes.len() != expected {
            let what = if bytes.len() < expected {
                "truncated"
            } else {
                "has trailing bytes"
            };
            return Err(Error::corrupt(format!(
                "Count-Min {what}: {} bytes, a {depth}x{width} sketch takes {expected}",
                bytes.len()
            )));
        }
        let body_end = expected - 8;
        if checksum(&bytes[..body_end]) != u64_at(body_end) {
            return Err(Error::corrupt("Count-Min checksum mismatch"));
        }
        let total = u64_at(13);
        let counters: Box<[u64]> = bytes[HEADER_LEN..body_end]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
            .collect();
        // Every add puts its count in exactly one counter per row, so each row
        // sums to the total (both saturate: a saturated total means a row sum
        // of at least u64::MAX).
        for (i, row) in counters.chunks_exact(width).enumerate() {
            let sum: u128 = row.iter().map(|&c| u128::from(c)).sum();
            let consistent = if total == u64::MAX {
                sum >= u128::from(u64::MAX)
            } else {
                sum == u128::from(total)
            };
            if !consistent {
                return Err(Error::corrupt(format!(
                    "Count-Min row {i} sums to {sum}, inconsistent with the total {total}"
                )));
            }
        }
        Ok(CountMin {
            depth,
            width,
            total,
            counters,
        })
    }
}

impl Default for CountMin {
    /// A [`DEFAULT_DEPTH`] × [`DEFAULT_WIDTH`] sketch.
    fn default() -> Self {
        CountMin::new(DEFAULT_DEPTH, DEFAULT_WIDTH).expect("default dimensions are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::testutil::{Rng, Zipf};

    fn zipf_stream(events: usize, keys: usize, seed: u64) -> Vec<usize> {
        let z = Zipf::new(keys, 1.1);
        let mut rng = Rng::new(seed);
        (0..events).map(|_| z.sample(&mut rng)).collect()
    }

    fn key(k: usize) -> String {
        format!("channel-{k}")
    }

    #[test]
    fn dimensions_are_validated() {
        for (d, w) in [(0, 10), (17, 10), (4, 0), (4, (1 << 24) + 1)] {
            assert!(
                matches!(CountMin::new(d, w), Err(Error::InvalidArgument(_))),
                "{d}x{w} accepted"
            );
        }
        let c = CountMin::new(16, 1).unwrap();
        assert_eq!((c.depth(), c.width()), (16, 1));
        let c = CountMin::default();
        assert_eq!((c.depth(), c.width()), (DEFAULT_DEPTH, DEFAULT_WIDTH));
        assert!((c.epsilon() - std::f64::consts::E / 2048.0).abs() < 1e-15);
    }

    #[test]
    fn exact_when_alone_and_total_counts_everything() {
        let mut c = CountMin::new(4, 64).unwrap();
        c.add(b"a", 5);
        c.add(b"a", 2);
        assert_eq!(c.estimate(b"a"), 7);
        c.add(b"b", 0);
        assert_eq!(c.total(), 7);
        // A width-1 sketch answers the total for everything.
        let mut one = CountMin::new(3, 1).unwrap();
        one.add(b"x", 3);
        one.add(b"y", 4);
        assert_eq!(one.estimate(b"z"), 7);
        c.clear();
        assert_eq!((c.total(), c.estimate(b"a")), (0, 0));
    }

    #[test]
    fn counters_saturate() {
        let mut c = CountMin::new(2, 8).unwrap();
        c.add(b"a", u64::MAX - 1);
        c.add(b"a", 10);
        assert_eq!(c.estimate(b"a"), u64::MAX);
        assert_eq!(c.total(), u64::MAX);
        let back = CountMin::from_bytes(&c.to_bytes()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rows_use_distinct_counters() {
        // With double hashing the rows of one item are not all the same index.
        let c = CountMin::new(4, 2048).unwrap();
        let (h1, h2) = hash128(b"some channel");
        let idx: Vec<usize> = (0..4u64)
            .map(|i| reduce(h1.wrapping_add(i.wrapping_mul(h2 | 1)), c.width()))
            .collect();
        assert!(idx.iter().all(|&i| i < 2048));
        assert!(idx.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn zipf_never_undercounts_and_is_within_eps_n() {
        let keys = 10_000;
        let stream = zipf_stream(200_000, keys, 11);
        let mut truth = vec![0u64; keys];
        let mut c = CountMin::new(DEFAULT_DEPTH, DEFAULT_WIDTH).unwrap();
        for &k in &stream {
            truth[k] += 1;
            c.add(key(k).as_bytes(), 1);
        }
        assert_eq!(c.total(), stream.len() as u64);
        let bound = (c.epsilon() * c.total() as f64).floor() as u64;
        let mut within = 0;
        for (k, &t) in truth.iter().enumerate() {
            let e = c.estimate(key(k).as_bytes());
            assert!(e >= t, "key {k}: estimate {e} < true {t}");
            if e - t <= bound {
                within += 1;
            }
        }
        assert!(
            within * 100 >= keys * 99,
            "only {within}/{keys} within eps*N"
        );
    }

    #[test]
    fn merge_equals_sketch_of_concatenation() {
        let stream = zipf_stream(50_000, 5_000, 12);
        let (first, second) = stream.split_at(20_000);
        let mut a = CountMin::new(4, 1000).unwrap();
        let mut b = CountMin::new(4, 1000).unwrap();
        let mut whole = CountMin::new(4, 1000).unwrap();
        for &k in first {
            a.add(key(k).as_bytes(), 1);
            whole.add(key(k).as_bytes(), 1);
        }
        for &k in second {
            b.add(key(k).as_bytes(), 2);
            whole.add(key(k).as_bytes(), 2);
        }
        a.merge(&b).unwrap();
        assert_eq!(a, whole);
        let other = CountMin::new(4, 999).unwrap();
        let before = a.clone();
        assert!(matches!(a.merge(&other), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            a.merge(&CountMin::new(3, 1000).unwrap()),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(a, before);
    }

    fn sample_sketch() -> CountMin {
        let mut c = CountMin::new(3, 100).unwrap();
        let mut rng = Rng::new(13);
        for _ in 0..5_000 {
            let k = rng.below(300);
            c.add(key(k as usize).as_bytes(), 1 + rng.below(3));
        }
        c
    }

    #[test]
    fn bytes_round_trip() {
        for c in [CountMin::new(1, 1).unwrap(), sample_sketch()] {
            let bytes = c.to_bytes();
            assert_eq!(bytes.len(), 21 + 8 * c.depth() * c.width() + 8);
            assert_eq!(&bytes[..5], b"ECMS\x01");
            let back = CountMin::from_bytes(&bytes).unwrap();
            assert_eq!(back, c);
            assert_eq!(back.estimate(b"channel-7"), c.estimate(b"channel-7"));
        }
    }

    fn assert_corrupt(bytes: &[u8], what: &str) {
        match CountMin::from_bytes(bytes) {
            Err(Error::Corrupt(msg)) => assert!(msg.contains(what), "{msg:?} lacks {what:?}"),
            other => panic!("expected Corrupt({what}), got {other:?}"),
        }
    }

    #[test]
    fn corruption_is_rejected() {
        let bytes = sample_sketch().to_bytes();
        for len in 0..bytes.len() {
            assert!(
                matches!(CountMin::from_bytes(&bytes[..len]), Err(Error::Corrupt(_))),
                "length {len} accepted"
            );
        }
        let mut copy = bytes.clone();
        for i in 0..bytes.len() {
            copy[i] ^= 0x01;
            assert!(
                matches!(CountMin::from_bytes(&copy), Err(Error::Corrupt(_))),
                "flip at {i} accepted"
            );
            copy[i] = bytes[i];
        }
        let mut b = bytes.clone();
        b[1] = b'X';
        assert_corrupt(&b, "magic");
        let mut b = bytes.clone();
        b[4] = 9;
        assert_corrupt(&b, "version");
        let mut b = bytes.clone();
        b[5..9].copy_from_slice(&17u32.to_le_bytes());
        assert_corrupt(&b, "depth");
        let mut b = bytes.clone();
        b[9..13].copy_from_slice(&0u32.to_le_bytes());
        assert_corrupt(&b, "width");
        let mut b = bytes.clone();
        b[9..13].copy_from_slice(&101u32.to_le_bytes());
        assert_corrupt(&b, "truncated");
        let mut b = bytes.clone();
        b.push(0);
        assert_corrupt(&b, "trailing");
        let mut b = bytes.clone();
        b[30] ^= 0x80;
        assert_corrupt(&b, "checksum");
        // A total that disagrees with the counters, re-checksummed.
        let mut b = bytes;
        b[13] ^= 1;
        let end = b.len() - 8;
        let sum = checksum(&b[..end]);
        b[end..].copy_from_slice(&sum.to_le_bytes());
        assert_corrupt(&b, "inconsistent");
    }
}
