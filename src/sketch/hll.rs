//! HyperLogLog distinct counting with Ertl's improved estimator.
//!
//! A sketch holds [`REGISTERS`] = 2^14 one-byte registers (16 KiB). An item's
//! 64-bit [`hash64`] picks a register with its top 14 bits;
//! the register keeps the maximum "rank" seen, the position of the first 1-bit
//! in the remaining 50 bits (1 to 51). Merging is an elementwise maximum, so the
//! sketch of a union is the merge of the sketches, whatever the overlap.
//!
//! The estimate is the improved raw estimator of O. Ertl, *New cardinality
//! estimation algorithms for HyperLogLog sketches* (2017): it works from the
//! histogram of register values, replaces the small- and large-range
//! corrections of the original algorithm by the `sigma`/`tau` series, and is
//! essentially unbiased from 0 to far beyond 10^9 distinct items without any
//! empirical bias table. Its relative standard error is about
//! [`relative_standard_error`] = 1.04/√m ≈ 0.81 %.
//!
//! # Wire format (version 1, 16 400 bytes)
//!
//! | offset | size   | content                                            |
//! |-------:|-------:|----------------------------------------------------|
//! | 0      | 4      | magic `b"EHLL"`                                    |
//! | 4      | 1      | version, `1`                                       |
//! | 5      | 1      | precision, `14`                                    |
//! | 6      | 2      | reserved, zero                                     |
//! | 8      | 16 384 | registers, one byte each, values `0..=51`          |
//! | 16 392 | 8      | [`checksum`](super::hash) of bytes `0..16 392`, LE |

use std::fmt;

use super::hash::{checksum, hash64};
use crate::error::{Error, Result};

/// Number of index bits `p`.
pub const PRECISION: u8 = 14;
/// Number of registers `m = 2^p`.
pub const REGISTERS: usize = 1 << PRECISION;
/// Bits of the hash left for the rank, `q = 64 - p`.
const Q: u32 = 64 - PRECISION as u32;
/// Largest register value, `q + 1`.
const MAX_RANK: u8 = Q as u8 + 1;

const MAGIC: &[u8; 4] = b"EHLL";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 8;
const BODY_END: usize = HEADER_LEN + REGISTERS;
/// Length of [`Hll::to_bytes`]'s output.
pub const SERIALIZED_LEN: usize = BODY_END + 8;

/// The relative standard error of the estimate, `1.04 / sqrt(m)` (≈ 0.0081).
pub fn relative_standard_error() -> f64 {
    1.04 / (REGISTERS as f64).sqrt()
}

/// A HyperLogLog sketch of precision 14 (16 KiB): see the [module docs](self).
#[derive(Clone, PartialEq, Eq)]
pub struct Hll {
    registers: Box<[u8; REGISTERS]>,
}

impl Default for Hll {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Hll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hll")
            .field("precision", &PRECISION)
            .field("estimate", &self.estimate())
            .finish()
    }
}

impl Hll {
    /// An empty sketch.
    pub fn new() -> Self {
        // `vec!` of zeroes becomes one zeroed allocation, no 16 KiB stack copy.
        let registers: Box<[u8]> = vec![0u8; REGISTERS].into_boxed_slice();
        let registers: Box<[u8; REGISTERS]> = registers
            .try_into()
            .expect("the slice has exactly REGISTERS bytes");
        Hll { registers }
    }

    /// Adds an item (its [`hash64`]).
    #[inline]
    pub fn add(&mut self, item: &[u8]) {
        self.add_hash(hash64(item));
    }

    /// Adds an item by its 64-bit hash: register index = top 14 bits, rank =
    /// leading zeros of the remaining 50 bits + 1 (51 if they are all zero).
    #[inline]
    pub fn add_hash(&mut self, h: u64) {
        let index = (h >> Q) as usize;
        // The sentinel bit just below the 50 rank bits caps the rank at q + 1.
        let rank = ((h << PRECISION) | (1 << (PRECISION - 1))).leading_zeros() as u8 + 1;
        let reg = &mut self.registers[index];
        *reg = (*reg).max(rank);
    }

    /// Merges `other` into `self`: afterwards `self` is the sketch of the union
    /// of both streams.
    pub fn merge(&mut self, other: &Hll) {
        // A branch-free elementwise max over fixed-size arrays: compiles to
        // packed byte maxima (16 or 32 registers per instruction).
        for (a, b) in self.registers.iter_mut().zip(other.registers.iter()) {
            *a = (*a).max(*b);
        }
    }

    /// The register values, index `i` holding register `i`.
    pub fn registers(&self) -> &[u8; REGISTERS] {
        &self.registers
    }

    /// Histogram of register values: `c[k]` = number of registers equal to `k`.
    fn histogram(&self) -> [u32; MAX_RANK as usize + 1] {
        // Four interleaved partial histograms so consecutive equal registers do
        // not serialise on one counter (store-to-load forwarding latency).
        let mut parts = [[0u32; 64]; 4];
        for chunk in self.registers.chunks_exact(4) {
            parts[0][usize::from(chunk[0] & 63)] += 1;
            parts[1][usize::from(chunk[1] & 63)] += 1;
            parts[2][usize::from(chunk[2] & 63)] += 1;
            parts[3][usize::from(chunk[3] & 63)] += 1;
        }
        let mut c = [0u32; MAX_RANK as usize + 1];
        for (k, slot) in c.iter_mut().enumerate() {
            *slot = parts[0][k] + parts[1][k] + parts[2][k] + parts[3][k];
        }
        c
    }

    /// The estimated number of distinct items (Ertl 2017, improved raw
    /// estimator); exactly `0.0` for an empty sketch.
    pub fn estimate(&self) -> f64 {
        let c = self.histogram();
        let m = REGISTERS as f64;
        let q = Q as usize;
        let mut z = m * tau(1.0 - f64::from(c[q + 1]) / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + f64::from(c[k]));
        }
        z += m * sigma(f64::from(c[0]) / m);
        // alpha_inf * m^2 / z with alpha_inf = 1 / (2 ln 2); z is +inf when
        // every register is zero, giving exactly 0.
        m * m / (2.0 * std::f64::consts::LN_2 * z)
    }

    /// The estimate rounded to the nearest integer.
    pub fn count(&self) -> u64 {
        // `as` saturates; the estimate is finite and non-negative.
        self.estimate().round() as u64
    }

    /// Whether no item was ever added (every register is zero).
    pub fn is_empty(&self) -> bool {
        self.registers.iter().all(|&r| r == 0)
    }

    /// Resets to the empty sketch, keeping the allocation.
    pub fn clear(&mut self) {
        self.registers.fill(0);
    }

    /// Serializes to the version-1 wire format of the [module docs](self).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SERIALIZED_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(PRECISION);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.registers[..]);
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes)'s output.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the problem: bad magic, unsupported version or
    /// precision, non-zero reserved bytes, wrong length, checksum mismatch or a
    /// register value above 51.
    pub fn from_bytes(bytes: &[u8]) -> Result<Hll> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::corrupt(format!(
                "HLL truncated: {} bytes, the header alone is {HEADER_LEN}",
                bytes.len()
            )));
        }
        if &bytes[..4] != MAGIC {
            return Err(Error::corrupt("HLL bad magic, expected \"EHLL\""));
        }
        if bytes[4] != VERSION {
            return Err(Error::corrupt(format!(
                "HLL unsupported version {} (this build reads {VERSION})",
                bytes[4]
            )));
        }
        if bytes[5] != PRECISION {
            return Err(Error::corrupt(format!(
                "HLL unsupported precision {} (this build reads {PRECISION})",
                bytes[5]
            )));
        }
        if bytes[6..8] != [0, 0] {
            return Err(Error::corrupt("HLL reserved header bytes are not zero"));
        }
        if bytes.len() != SERIALIZED_LEN {
            let what = if bytes.len() < SERIALIZED_LEN {
                "truncated"
            } else {
                "has trailing bytes"
            };
            return Err(Error::corrupt(format!(
                "HLL {what}: {} bytes, expected {SERIALIZED_LEN}",
                bytes.len()
            )));
        }
        let stored = u64::from_le_bytes(bytes[BODY_END..].try_into().expect("8 bytes"));
        if checksum(&bytes[..BODY_END]) != stored {
            return Err(Error::corrupt("HLL checksum mismatch"));
        }
        let body = &bytes[HEADER_LEN..BODY_END];
        if let Some(i) = body.iter().position(|&r| r > MAX_RANK) {
            return Err(Error::corrupt(format!(
                "HLL register {i} holds {}, above the maximum {MAX_RANK}",
                body[i]
            )));
        }
        let mut hll = Hll::new();
        hll.registers.copy_from_slice(body);
        Ok(hll)
    }
}

/// Ertl's `sigma(x) = x + sum_{k>=1} x^(2^k) 2^(k-1)` for `x` in `[0, 1]`
/// (infinite at 1): the contribution of the zero registers.
fn sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if z == prev {
            return z;
        }
    }
}

/// Ertl's `tau(x) = (1 - x - sum_{k>=1} (1 - x^(2^-k))^2 2^-k) / 3` for `x` in
/// `[0, 1]`: the contribution of the saturated registers (value q + 1).
fn tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        let d = 1.0 - x;
        z -= d * d * y;
        if z == prev {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::testutil::splitmix64;

    /// A sketch of `n` distinct pseudo-random hashes drawn from `seed`'s stream.
    fn sketch_of(n: u64, seed: u64) -> Hll {
        let mut h = Hll::new();
        let base = seed.wrapping_mul(0xA076_1D64_78BD_642F);
        for i in 0..n {
            h.add_hash(splitmix64(base.wrapping_add(i)));
        }
        h
    }

    fn rel_err(est: f64, n: u64) -> f64 {
        (est - n as f64).abs() / n as f64
    }

    #[test]
    fn empty_sketch_counts_zero() {
        let h = Hll::new();
        assert!(h.is_empty());
        assert_eq!(h.estimate(), 0.0);
        assert_eq!(h.count(), 0);
        assert_eq!(Hll::default(), h);
    }

    #[test]
    fn rank_and_index_follow_the_hash_layout() {
        let mut h = Hll::new();
        // Index 5, remaining 50 bits = 1 at the top -> rank 1.
        h.add_hash((5 << 50) | (1 << 49));
        assert_eq!(h.registers()[5], 1);
        // Index 7, remaining bits = 0...01 -> 49 leading zeros -> rank 50.
        h.add_hash((7 << 50) | 1);
        assert_eq!(h.registers()[7], 50);
        // Index 9, remaining bits all zero -> capped at 51.
        h.add_hash(9 << 50);
        assert_eq!(h.registers()[9], MAX_RANK);
        // Last register, a lower rank never lowers a register.
        h.add_hash(u64::MAX);
        assert_eq!(h.registers()[REGISTERS - 1], 1);
        h.add_hash(((REGISTERS as u64 - 1) << 50) | (1 << 40));
        assert_eq!(h.registers()[REGISTERS - 1], 10);
        h.add_hash(u64::MAX);
        assert_eq!(h.registers()[REGISTERS - 1], 10);
    }

    #[test]
    fn small_counts_are_exact_within_one() {
        for seed in 0..10 {
            let mut h = Hll::new();
            assert_eq!(h.count(), 0);
            let base = seed * 1_000_003;
            for n in 1..=100u64 {
                h.add(format!("user-{}", base + n).as_bytes());
                let c = h.count();
                assert!(c.abs_diff(n) <= 1, "seed {seed}: n = {n}, count = {c}");
            }
        }
    }

    #[test]
    fn duplicates_do_not_count() {
        let mut h = Hll::new();
        for _ in 0..3 {
            for i in 0..1000u32 {
                h.add(&i.to_le_bytes());
            }
        }
        assert!(rel_err(h.estimate(), 1000) < 0.025);
    }

    #[test]
    fn relative_error_within_2_5_percent_up_to_10m() {
        // One stream, checked at each size on the way.
        let checkpoints = [1_000u64, 10_000, 100_000, 1_000_000, 10_000_000];
        let mut h = Hll::new();
        let mut added = 0u64;
        for &n in &checkpoints {
            while added < n {
                h.add_hash(splitmix64(added ^ 0x5EED));
                added += 1;
            }
            let e = rel_err(h.estimate(), n);
            assert!(e <= 0.025, "n = {n}: estimate {} ({e:.4})", h.estimate());
        }
    }

    #[test]
    fn string_ids_within_2_5_percent() {
        let mut h = Hll::new();
        for i in 0..20_000u64 {
            h.add(format!("{}", 100_000_000_000_000_000 + i * 7919).as_bytes());
        }
        assert!(rel_err(h.estimate(), 20_000) <= 0.025);
    }

    #[test]
    fn mean_error_over_20_seeds_at_100k_below_1_percent() {
        let n = 100_000;
        let total: f64 = (1..=20)
            .map(|seed| rel_err(sketch_of(n, seed).estimate(), n))
            .sum();
        let mean = total / 20.0;
        assert!(mean <= 0.01, "mean relative error {mean:.4}");
        assert!((relative_standard_error() - 0.008125).abs() < 1e-9);
    }

    #[test]
    fn merge_equals_sketch_of_union() {
        let mut a = Hll::new();
        let mut b = Hll::new();
        let mut union = Hll::new();
        for i in 0..30_000u64 {
            let h = splitmix64(i);
            if i < 20_000 {
                a.add_hash(h);
            }
            if i >= 10_000 {
                b.add_hash(h);
            }
            union.add_hash(h);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged.registers()[..], union.registers()[..]);
        assert_eq!(merged, union);
        assert!(rel_err(merged.estimate(), 30_000) <= 0.025);
        // Merging is idempotent and commutative.
        let mut again = b.clone();
        again.merge(&a);
        again.merge(&a);
        assert_eq!(again, union);
    }

    #[test]
    fn clear_resets() {
        let mut h = sketch_of(5000, 3);
        assert!(!h.is_empty());
        h.clear();
        assert!(h.is_empty());
        assert_eq!(h.count(), 0);
    }

    #[test]
    fn bytes_round_trip() {
        for h in [Hll::new(), sketch_of(1, 1), sketch_of(123_456, 2)] {
            let bytes = h.to_bytes();
            assert_eq!(bytes.len(), SERIALIZED_LEN);
            assert_eq!(&bytes[..8], b"EHLL\x01\x0e\x00\x00");
            let back = Hll::from_bytes(&bytes).expect("round trip");
            assert_eq!(back, h);
            assert_eq!(back.estimate(), h.estimate());
        }
        let mut saturated = Hll::new();
        saturated.add_hash(0);
        assert_eq!(Hll::from_bytes(&saturated.to_bytes()).unwrap(), saturated);
    }

    fn assert_corrupt(bytes: &[u8], what: &str) {
        match Hll::from_bytes(bytes) {
            Err(Error::Corrupt(msg)) => assert!(msg.contains(what), "{msg:?} lacks {what:?}"),
            other => panic!("expected Corrupt({what}), got {other:?}"),
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = sketch_of(10_000, 4).to_bytes();
        for len in 0..bytes.len() {
            assert!(
                matches!(Hll::from_bytes(&bytes[..len]), Err(Error::Corrupt(_))),
                "length {len} accepted"
            );
        }
        assert_corrupt(&bytes[..100], "truncated");
        let mut long = bytes.clone();
        long.push(0);
        assert_corrupt(&long, "trailing");
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let bytes = sketch_of(10_000, 5).to_bytes();
        let mut copy = bytes.clone();
        for i in 0..bytes.len() {
            copy[i] ^= 0x20;
            assert!(
                matches!(Hll::from_bytes(&copy), Err(Error::Corrupt(_))),
                "flip at {i} accepted"
            );
            copy[i] = bytes[i];
        }
    }

    #[test]
    fn header_problems_are_named() {
        let good = sketch_of(100, 6).to_bytes();
        let mut b = good.clone();
        b[0] = b'X';
        assert_corrupt(&b, "magic");
        let mut b = good.clone();
        b[4] = 2;
        assert_corrupt(&b, "version");
        let mut b = good.clone();
        b[5] = 12;
        assert_corrupt(&b, "precision");
        let mut b = good.clone();
        b[7] = 1;
        assert_corrupt(&b, "reserved");
        let mut b = good.clone();
        b[100] ^= 1;
        assert_corrupt(&b, "checksum");
        // A register above 51 with a valid checksum.
        let mut b = good;
        b[HEADER_LEN + 3] = 52;
        let sum = checksum(&b[..BODY_END]);
        b[BODY_END..].copy_from_slice(&sum.to_le_bytes());
        assert_corrupt(&b, "register 3");
    }

    #[test]
    fn sigma_and_tau_edge_values() {
        assert_eq!(sigma(0.0), 0.0);
        assert!(sigma(1.0).is_infinite());
        assert_eq!(tau(0.0), 0.0);
        assert_eq!(tau(1.0), 0.0);
        // Linear-counting regime: one register set -> estimate close to 1.
        let mut h = Hll::new();
        h.add_hash(1 << 63);
        assert!((h.estimate() - 1.0).abs() < 0.01);
    }
}
