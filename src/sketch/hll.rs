//! HyperLogLog distinct counting, register-identical to Redis, with Ertl's
//! improved estimator.
//!
//! A sketch holds [`REGISTERS`] = 2^14 one-byte registers (16 KiB). An item is
//! hashed exactly as Redis's `PFADD` hashes it ([`redis_hll_hash`]:
//! MurmurHash64A, seed `0xadc83b19`); the low 14 bits of the hash pick a
//! register, and the register keeps the maximum "rank" seen: 1 + the number of
//! trailing zeros of the remaining 50 bits, with bit 50 of the shifted value
//! forced to 1 so the rank is at most 51. Merging is an elementwise maximum, so
//! the sketch of a union is the merge of the sketches, whatever the overlap.
//! Because the registers are Redis's, a sketch converts to and from a Redis
//! HyperLogLog string ([`Hll::to_redis`], [`Hll::from_redis`]) and merges with
//! keys built by `PFADD` on any Redis 7.
//!
//! The estimate is the improved raw estimator of O. Ertl, *New cardinality
//! estimation algorithms for HyperLogLog sketches* (2017): it works from the
//! histogram of register values, replaces the small- and large-range
//! corrections of the original algorithm by the `sigma`/`tau` series, and is
//! essentially unbiased from 0 to far beyond 10^9 distinct items without any
//! empirical bias table. Its relative standard error is about
//! [`relative_standard_error`] = 1.04/√m ≈ 0.81 %. Redis 7's `PFCOUNT` uses the
//! same estimator, and [`Hll::count`] performs its floating-point operations in
//! the same order, so both give the same integer for the same registers.
//!
//! # Wire format (version 2, 16 400 bytes)
//!
//! | offset | size   | content                                            |
//! |-------:|-------:|----------------------------------------------------|
//! | 0      | 4      | magic `b"EHLL"`                                    |
//! | 4      | 1      | version, `2`                                       |
//! | 5      | 1      | precision, `14`                                    |
//! | 6      | 2      | reserved, zero                                     |
//! | 8      | 16 384 | registers, one byte each, values `0..=51`          |
//! | 16 392 | 8      | [`checksum`](super::hash) of bytes `0..16 392`, LE |
//!
//! Version 1 had the same layout but hashed items with XXH3 and indexed
//! registers by the top 14 bits: its registers mean something else, so merging
//! them with version-2 registers would be wrong, and [`Hll::from_bytes`] refuses
//! them ([`Error::Corrupt`] naming the version).
//!
//! # Redis format ([`Hll::to_redis`], [`Hll::from_redis`])
//!
//! A 16-byte header: `b"HYLL"`, an encoding byte (0 dense, 1 sparse), three zero
//! bytes, then the cached cardinality as a little-endian u64 whose top bit (the
//! top bit of byte 15) means "stale, recompute". Dense: 16 384 six-bit registers
//! packed LSB first (register `i` at bits `6i..6i+6` of the little-endian bit
//! stream), 12 304 bytes in all. Sparse: run-length opcodes covering exactly the
//! 16 384 registers: `00xxxxxx` ZERO (x + 1 zero registers, 1 to 64), `01xxxxxx
//! yyyyyyyy` XZERO (the 14-bit x:y + 1 zero registers, 1 to 16 384), `1vvvvvxx`
//! VAL (x + 1 registers, 1 to 4, holding v + 1, 1 to 32).

use std::fmt;

use super::hash::{checksum, redis_hll_hash};
use crate::error::{Error, Result};

/// Number of index bits `p`.
pub const PRECISION: u8 = 14;
/// Number of registers `m = 2^p`.
pub const REGISTERS: usize = 1 << PRECISION;
/// Mask of the register index in the hash (its low `p` bits).
const INDEX_MASK: u64 = REGISTERS as u64 - 1;
/// Bits of the hash left for the rank, `q = 64 - p`.
const Q: u32 = 64 - PRECISION as u32;
/// Largest register value, `q + 1`.
const MAX_RANK: u8 = Q as u8 + 1;

const MAGIC: &[u8; 4] = b"EHLL";
/// Version 2: Redis's hash and register layout (version 1 was XXH3).
const VERSION: u8 = 2;
const HEADER_LEN: usize = 8;
const BODY_END: usize = HEADER_LEN + REGISTERS;
/// Length of [`Hll::to_bytes`]'s output.
pub const SERIALIZED_LEN: usize = BODY_END + 8;

/// `HLL_ALPHA_INF` of Redis, `1 / (2 ln 2)`, as the same `f64`.
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

const REDIS_MAGIC: &[u8; 4] = b"HYLL";
const REDIS_DENSE: u8 = 0;
const REDIS_SPARSE: u8 = 1;
/// Length of a Redis HLL header.
const REDIS_HEADER_LEN: usize = 16;
/// Bits per register in Redis's dense encoding.
const REDIS_BITS: usize = 6;
/// Length of a dense Redis HLL ([`Hll::to_redis`]'s output): 12 304 bytes.
pub const REDIS_DENSE_LEN: usize = REDIS_HEADER_LEN + REGISTERS * REDIS_BITS / 8;
/// The cached-cardinality field [`Hll::to_redis`] writes: zero with the stale
/// bit set, so Redis computes the count itself on the first `PFCOUNT`.
const REDIS_STALE_CARDINALITY: u64 = 1 << 63;

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

    /// Adds an item: sets the register Redis's `PFADD` sets for the same bytes.
    #[inline]
    pub fn add(&mut self, item: &[u8]) {
        self.add_hash(redis_hll_hash(item));
    }

    /// Adds an item by its [`redis_hll_hash`]: register index = the low 14 bits,
    /// rank = 1 + trailing zeros of the remaining 50 bits (51 if they are all
    /// zero), as Redis's `hllPatLen` computes them.
    #[inline]
    pub fn add_hash(&mut self, h: u64) {
        // The mask keeps the index below REGISTERS, so the bounds check folds away.
        let index = (h & INDEX_MASK) as usize;
        // Bit q of the shifted value is the sentinel that caps the rank at q + 1
        // (and makes the value non-zero, so trailing_zeros is one instruction).
        let rank = ((h >> PRECISION) | (1 << Q)).trailing_zeros() as u8 + 1;
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
    ///
    /// The operations and their order are those of Redis 7's `hllCount`, so
    /// that [`count`](Self::count) equals `PFCOUNT` on the same registers to
    /// the last bit, not just within rounding.
    pub fn estimate(&self) -> f64 {
        let c = self.histogram();
        let m = REGISTERS as f64;
        let q = Q as usize;
        let mut z = m * tau((m - f64::from(c[q + 1])) / m);
        for k in (1..=q).rev() {
            z += f64::from(c[k]);
            z *= 0.5;
        }
        z += m * sigma(f64::from(c[0]) / m);
        // z is +inf when every register is zero, giving exactly 0.
        ALPHA_INF * m * m / z
    }

    /// The estimate rounded to the nearest integer (halves away from zero, as
    /// Redis's `llroundl`): equal to `PFCOUNT` on the same registers.
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

    /// Serializes to the version-2 wire format of the [module docs](self).
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
    /// [`Error::Corrupt`] naming the problem: bad magic, unsupported version
    /// (including version 1, whose registers hash differently) or precision, non-zero reserved bytes, wrong length, checksum mismatch or a
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
        if bytes[4] == 1 {
            return Err(Error::corrupt(format!(
                "HLL format version 1 is no longer read (this build reads {VERSION}): \
                 version 1 hashed items with XXH3, version {VERSION} with Redis's \
                 MurmurHash64A, so its registers cannot be merged with ours; rebuild \
                 the sketch from its items"
            )));
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

    /// The sketch as a dense Redis HyperLogLog string (12 304 bytes, see the
    /// [module docs](self)): `SET` it as a key and Redis's `PFCOUNT`, `PFADD` and
    /// `PFMERGE` use it as their own. The cached cardinality is marked stale, so
    /// Redis computes the count itself.
    pub fn to_redis(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REDIS_DENSE_LEN);
        out.extend_from_slice(REDIS_MAGIC);
        out.push(REDIS_DENSE);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&REDIS_STALE_CARDINALITY.to_le_bytes());
        // Four 6-bit registers fill three bytes exactly, LSB first.
        for quad in self.registers.chunks_exact(4) {
            let bits = u32::from(quad[0])
                | (u32::from(quad[1]) << 6)
                | (u32::from(quad[2]) << 12)
                | (u32::from(quad[3]) << 18);
            out.extend_from_slice(&bits.to_le_bytes()[..3]);
        }
        debug_assert_eq!(out.len(), REDIS_DENSE_LEN);
        out
    }

    /// Reads a Redis HyperLogLog string (the value of a key built by `PFADD` or
    /// `PFMERGE`, as `GET` returns it), dense or sparse. The cached cardinality
    /// is ignored: [`count`](Self::count) recomputes it.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the problem: shorter than the header, magic not
    /// `HYLL`, an encoding other than 0 (dense) or 1 (sparse), non-zero reserved
    /// bytes, a dense body that is not exactly 12 288 bytes or holds a register
    /// above 51, sparse opcodes that cover more or fewer than 16 384 registers or
    /// end in the middle of an XZERO.
    pub fn from_redis(bytes: &[u8]) -> Result<Hll> {
        if bytes.len() < REDIS_HEADER_LEN {
            return Err(Error::corrupt(format!(
                "Redis HLL truncated: {} bytes, the header alone is {REDIS_HEADER_LEN}",
                bytes.len()
            )));
        }
        if &bytes[..4] != REDIS_MAGIC {
            return Err(Error::corrupt("Redis HLL bad magic, expected \"HYLL\""));
        }
        if bytes[5..8] != [0, 0, 0] {
            return Err(Error::corrupt(
                "Redis HLL reserved header bytes 5..8 are not zero",
            ));
        }
        let body = &bytes[REDIS_HEADER_LEN..];
        let mut hll = Hll::new();
        match bytes[4] {
            REDIS_DENSE => hll.read_redis_dense(body)?,
            REDIS_SPARSE => hll.read_redis_sparse(body)?,
            other => {
                return Err(Error::corrupt(format!(
                    "Redis HLL unknown encoding {other} (0 is dense, 1 sparse)"
                )));
            }
        }
        Ok(hll)
    }

    /// Unpacks a dense body into the (zeroed) registers.
    fn read_redis_dense(&mut self, body: &[u8]) -> Result<()> {
        let want = REDIS_DENSE_LEN - REDIS_HEADER_LEN;
        if body.len() != want {
            let what = if body.len() < want {
                "truncated"
            } else {
                "has trailing bytes"
            };
            return Err(Error::corrupt(format!(
                "Redis HLL dense {what}: {} bytes, expected {REDIS_DENSE_LEN}",
                body.len() + REDIS_HEADER_LEN
            )));
        }
        for (quad, triple) in self.registers.chunks_exact_mut(4).zip(body.chunks_exact(3)) {
            let bits =
                u32::from(triple[0]) | (u32::from(triple[1]) << 8) | (u32::from(triple[2]) << 16);
            quad[0] = (bits & 63) as u8;
            quad[1] = ((bits >> 6) & 63) as u8;
            quad[2] = ((bits >> 12) & 63) as u8;
            quad[3] = (bits >> 18) as u8;
        }
        if let Some(i) = self.registers.iter().position(|&r| r > MAX_RANK) {
            return Err(Error::corrupt(format!(
                "Redis HLL dense register {i} holds {}, above the maximum {MAX_RANK}",
                self.registers[i]
            )));
        }
        Ok(())
    }

    /// Expands sparse opcodes into the (zeroed) registers.
    fn read_redis_sparse(&mut self, body: &[u8]) -> Result<()> {
        let mut next = 0usize; // the first register not yet covered
        let mut at = 0usize;
        while at < body.len() {
            let op = body[at];
            let (run, value, op_len) = match op >> 6 {
                0b00 => (usize::from(op & 0x3f) + 1, 0, 1),
                0b01 => {
                    let Some(&low) = body.get(at + 1) else {
                        return Err(Error::corrupt(format!(
                            "Redis HLL sparse XZERO at byte {} is cut short",
                            REDIS_HEADER_LEN + at
                        )));
                    };
                    ((usize::from(op & 0x3f) << 8 | usize::from(low)) + 1, 0, 2)
                }
                // VAL: values 1..=32 (never above MAX_RANK), runs 1..=4.
                _ => (usize::from(op & 3) + 1, ((op >> 2) & 0x1f) + 1, 1),
            };
            if run > REGISTERS - next {
                return Err(Error::corrupt(format!(
                    "Redis HLL sparse opcodes cover more than {REGISTERS} registers \
                     (the one at byte {} runs to register {})",
                    REDIS_HEADER_LEN + at,
                    next + run - 1
                )));
            }
            if value != 0 {
                self.registers[next..next + run].fill(value);
            }
            next += run;
            at += op_len;
        }
        if next != REGISTERS {
            return Err(Error::corrupt(format!(
                "Redis HLL sparse opcodes cover {next} of the {REGISTERS} registers"
            )));
        }
        Ok(())
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

    /// `(id, register index, value)` read back from redis-server 7.0.15 (see
    /// `single_ids_set_the_registers_redis_sets`).
    const REDIS_VECTORS: &[(&str, usize, u8)] = &[
        ("", 5938, 2),
        ("a", 12711, 2),
        ("ab", 719, 1),
        ("abc", 9474, 1),
        ("abcd", 11070, 8),
        ("hello", 9216, 1),
        ("engage", 9918, 1),
        ("1234567", 10327, 3),
        ("12345678", 10579, 3),
        ("user-1", 90, 5),
        ("123456789", 9293, 2),
        ("123456789012345678", 1797, 1),
        ("100000000000000042", 13079, 1),
        ("918273645546372819", 10319, 1),
        ("user:12345 with spaces", 2881, 3),
        ("\u{e9}t\u{e9} \u{1F389}", 4872, 1),
        ("the quick brown fox jumps over the lazy dog", 5508, 3),
        ("user-5103", 11406, 16),
        ("user-534623", 7122, 19),
        ("user-1755646", 14811, 21),
    ];

    #[test]
    fn empty_sketch_counts_zero() {
        let h = Hll::new();
        assert!(h.is_empty());
        assert_eq!(h.estimate(), 0.0);
        assert_eq!(h.count(), 0);
        assert_eq!(Hll::default(), h);
    }

    #[test]
    fn rank_and_index_follow_redis_hash_layout() {
        let mut h = Hll::new();
        // Index 5 (low 14 bits), remaining bits end in 1 -> rank 1.
        h.add_hash(5 | (1 << 14));
        assert_eq!(h.registers()[5], 1);
        // Index 7, remaining 50 bits = 1 followed by 49 zeros -> rank 50.
        h.add_hash(7 | (1 << 63));
        assert_eq!(h.registers()[7], 50);
        // Index 9, remaining bits all zero -> the sentinel bit 50 caps it at 51.
        h.add_hash(9);
        assert_eq!(h.registers()[9], MAX_RANK);
        // Last register, a lower rank never lowers a register.
        h.add_hash(u64::MAX);
        assert_eq!(h.registers()[REGISTERS - 1], 1);
        h.add_hash((REGISTERS as u64 - 1) | (1 << (14 + 9)));
        assert_eq!(h.registers()[REGISTERS - 1], 10);
        h.add_hash(u64::MAX);
        assert_eq!(h.registers()[REGISTERS - 1], 10);
        // The top bits do not take part in the index.
        let mut g = Hll::new();
        g.add_hash((0x3FFF << 50) | 3 | (1 << 20));
        assert_eq!(g.registers()[3], 7);
    }

    /// Register index and value of single ids as redis-server 7.0.15 stores
    /// them: each id `PFADD`ed alone into an empty key, whose sparse value
    /// (`GET`) is XZERO, VAL(value, 1), XZERO. Covers the empty id, every tail
    /// length of MurmurHash64A and 18-digit Discord ids.
    #[test]
    fn single_ids_set_the_registers_redis_sets() {
        for &(id, index, value) in REDIS_VECTORS {
            let mut h = Hll::new();
            h.add(id.as_bytes());
            let set: Vec<(usize, u8)> = h
                .registers()
                .iter()
                .enumerate()
                .filter(|&(_, &r)| r != 0)
                .map(|(i, &r)| (i, r))
                .collect();
            assert_eq!(set, [(index, value)], "id {id:?}");
            assert_eq!(h.count(), 1);
        }
    }

    /// Small counts are exact up to register collisions: the count is within
    /// one of the number of registers set, and 100 ids lose about
    /// 100^2 / (2 * 16384) = 0.3 registers to collisions on average (two or more
    /// in ~4 % of streams), so within two of the truth.
    #[test]
    fn small_counts_are_exact_within_two() {
        for seed in 0..10 {
            let mut h = Hll::new();
            assert_eq!(h.count(), 0);
            let base = seed * 1_000_003;
            for n in 1..=100u64 {
                h.add(format!("user-{}", base + n).as_bytes());
                let c = h.count();
                let occupied = h.registers().iter().filter(|&&r| r != 0).count() as u64;
                assert!(
                    c.abs_diff(occupied) <= 1,
                    "seed {seed}: n = {n}, count = {c}"
                );
                assert!(c.abs_diff(n) <= 2, "seed {seed}: n = {n}, count = {c}");
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
            assert_eq!(&bytes[..8], b"EHLL\x02\x0e\x00\x00");
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
        b[4] = 3;
        assert_corrupt(&b, "version 3");
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

    /// Dense Redis bytes of `registers`, packed one bit at a time as Redis's
    /// `HLL_DENSE_SET_REGISTER` describes (an independent check of the packing).
    fn redis_dense_bitwise(registers: &[u8; REGISTERS], card: [u8; 8]) -> Vec<u8> {
        let mut out = b"HYLL\x00\x00\x00\x00".to_vec();
        out.extend_from_slice(&card);
        let mut body = vec![0u8; REGISTERS * 6 / 8];
        for (i, &r) in registers.iter().enumerate() {
            for bit in 0..6 {
                if r >> bit & 1 == 1 {
                    let pos = i * 6 + bit;
                    body[pos / 8] |= 1 << (pos % 8);
                }
            }
        }
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn to_redis_is_dense_with_a_stale_cache() {
        let mut h = sketch_of(40_000, 7);
        h.add_hash(11); // register 11 saturated at 51
        let bytes = h.to_redis();
        assert_eq!(bytes.len(), REDIS_DENSE_LEN);
        assert_eq!(REDIS_DENSE_LEN, 12_304);
        assert_eq!(&bytes[..8], b"HYLL\x00\x00\x00\x00");
        assert_eq!(bytes[15], 0x80, "the stale bit");
        assert_eq!(
            bytes,
            redis_dense_bitwise(h.registers(), [0, 0, 0, 0, 0, 0, 0, 0x80])
        );
        let back = Hll::from_redis(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.registers()[11], 51);
        assert_eq!(Hll::from_redis(&Hll::new().to_redis()).unwrap(), Hll::new());
        // A valid cached cardinality is ignored, not trusted.
        let mut cached = bytes.clone();
        cached[8..16].copy_from_slice(&7u64.to_le_bytes());
        assert_eq!(Hll::from_redis(&cached).unwrap(), h);
    }

    /// Sparse bytes with the opcodes `ops`.
    fn sparse(ops: &[u8]) -> Vec<u8> {
        let mut v = b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80".to_vec();
        v.extend_from_slice(ops);
        v
    }

    #[test]
    fn sparse_opcodes_expand() {
        // The example of hyperloglog.c's comment: registers 1000, 1020, 1021 set to
        // 2, 3, 3 are XZERO:1000 VAL:2,1 ZERO:19 VAL:3,2 XZERO:15362.
        let xzero = |n: usize| [0x40 | ((n - 1) >> 8) as u8, ((n - 1) & 0xff) as u8];
        let mut ops = xzero(1000).to_vec();
        ops.push(0x80 | (1 << 2)); // VAL value 2, run 1
        ops.push(18); // ZERO run 19
        ops.push(0x80 | (2 << 2) | 1); // VAL value 3, run 2
        ops.extend_from_slice(&xzero(15362));
        let h = Hll::from_redis(&sparse(&ops)).unwrap();
        let set: Vec<(usize, u8)> = h
            .registers()
            .iter()
            .enumerate()
            .filter(|&(_, &r)| r != 0)
            .map(|(i, &r)| (i, r))
            .collect();
        assert_eq!(set, [(1000, 2), (1020, 3), (1021, 3)]);
        // The empty key Redis creates: one XZERO of 16384.
        assert!(Hll::from_redis(&sparse(&xzero(16384))).unwrap().is_empty());
        // 256 ZEROs of 64; and VAL of value 32 run 4, the largest VAL.
        assert!(Hll::from_redis(&sparse(&[0x3f; 256])).unwrap().is_empty());
        let mut ops = vec![0xff; 4096];
        ops.truncate(4096);
        let h = Hll::from_redis(&sparse(&ops)).unwrap();
        assert!(h.registers().iter().all(|&r| r == 32));
    }

    #[test]
    fn every_val_opcode_decodes_in_range() {
        // A VAL byte holds values 1..=32 and runs 1..=4: no sparse value can be out
        // of range, only the runs can overflow (tested below).
        for op in 0x80..=0xffu8 {
            let run = usize::from(op & 3) + 1;
            let mut ops = vec![op];
            let rest = REGISTERS - run;
            ops.extend_from_slice(&[0x40 | ((rest - 1) >> 8) as u8, ((rest - 1) & 0xff) as u8]);
            let h = Hll::from_redis(&sparse(&ops)).unwrap();
            let value = ((op >> 2) & 0x1f) + 1;
            assert!(h.registers()[..run].iter().all(|&r| r == value));
            assert!(h.registers()[run..].iter().all(|&r| r == 0));
        }
    }

    fn assert_redis_corrupt(bytes: &[u8], what: &str) {
        match Hll::from_redis(bytes) {
            Err(Error::Corrupt(msg)) => assert!(msg.contains(what), "{msg:?} lacks {what:?}"),
            other => panic!("expected Corrupt({what}), got {other:?}"),
        }
    }

    #[test]
    fn corrupt_redis_values_are_refused_and_named() {
        let dense = sketch_of(5000, 8).to_redis();
        assert_redis_corrupt(b"", "truncated");
        assert_redis_corrupt(&dense[..15], "truncated");
        let mut b = dense.clone();
        b[0] = b'h';
        assert_redis_corrupt(&b, "magic");
        assert_redis_corrupt(&sketch_of(10, 8).to_bytes(), "magic");
        for encoding in [2u8, 3, 0x7f, 0xff] {
            let mut b = dense.clone();
            b[4] = encoding;
            assert_redis_corrupt(&b, &format!("unknown encoding {encoding}"));
        }
        let mut b = dense.clone();
        b[6] = 1;
        assert_redis_corrupt(&b, "reserved");
        // Dense: every length but 12 304 is refused.
        assert_redis_corrupt(&dense[..16], "dense truncated");
        assert_redis_corrupt(
            &dense[..REDIS_DENSE_LEN - 1],
            "dense truncated: 12303 bytes",
        );
        let mut long = dense.clone();
        long.push(0);
        assert_redis_corrupt(&long, "trailing");
        // Dense: a 6-bit register above 51 (52..=63 cannot come from a hash).
        for value in [52u8, 63] {
            let mut regs = *sketch_of(5000, 8).registers();
            regs[REGISTERS - 2] = value;
            let b = redis_dense_bitwise(&regs, [0; 8]);
            assert_redis_corrupt(&b, &format!("register 16382 holds {value}"));
        }
        // Sparse: runs past register 16383, by a ZERO, an XZERO or a VAL.
        let full = [0x7f, 0xff]; // XZERO 16384
        assert_redis_corrupt(&sparse(&[full[0], full[1], 0x00]), "more than 16384");
        assert_redis_corrupt(&sparse(&[0x00, full[0], full[1]]), "more than 16384");
        assert_redis_corrupt(&sparse(&[0x7f, 0xfe, 0x81]), "runs to register 16384");
        assert_redis_corrupt(&sparse(&[full[0], full[1], full[0], full[1]]), "more than");
        // Sparse: runs short of 16384, none at all, an XZERO cut in half.
        assert_redis_corrupt(&sparse(&[0x7f, 0xfe]), "cover 16383 of the 16384");
        assert_redis_corrupt(&sparse(&[]), "cover 0 of");
        assert_redis_corrupt(&sparse(&[0x3f, 0x7f]), "XZERO at byte 17 is cut short");
    }

    /// Redis's sparse reading, written as plainly as possible (an independent
    /// check of `read_redis_sparse`): `None` when the opcodes do not cover
    /// exactly 16384 registers.
    fn sparse_reference(body: &[u8]) -> Option<Vec<u8>> {
        let mut regs = Vec::new();
        let mut i = 0;
        while i < body.len() {
            let op = body[i];
            if op & 0xc0 == 0 {
                regs.extend(std::iter::repeat_n(0, usize::from(op & 0x3f) + 1));
                i += 1;
            } else if op & 0xc0 == 0x40 {
                let low = *body.get(i + 1)?;
                let n = (usize::from(op & 0x3f) << 8) + usize::from(low) + 1;
                regs.extend(std::iter::repeat_n(0, n));
                i += 2;
            } else {
                let value = ((op >> 2) & 0x1f) + 1;
                regs.extend(std::iter::repeat_n(value, usize::from(op & 3) + 1));
                i += 1;
            }
            if regs.len() > REGISTERS {
                return None;
            }
        }
        (regs.len() == REGISTERS).then_some(regs)
    }

    /// Dense register values read one bit at a time (the inverse of
    /// `redis_dense_bitwise`).
    fn redis_dense_registers(body: &[u8]) -> Vec<u8> {
        (0..REGISTERS)
            .map(|i| {
                (0..6).fold(0u8, |r, bit| {
                    let pos = i * 6 + bit;
                    r | (((body[pos / 8] >> (pos % 8)) & 1) << bit)
                })
            })
            .collect()
    }

    /// Sparse opcode bytes from `(kind, n, value)` triples, completed with XZEROs
    /// up to 16384 registers when `complete` (so valid inputs are common too).
    fn sparse_body(ops: &[(u8, u16, u8)], complete: bool) -> Vec<u8> {
        let mut body = Vec::new();
        let mut covered = 0usize;
        for &(kind, n, value) in ops {
            match kind % 3 {
                0 => {
                    let n = n % 64;
                    body.push(n as u8);
                    covered += usize::from(n) + 1;
                }
                1 => {
                    // Long runs only in short lists, so the opcodes often fit.
                    let n = if ops.len() <= 4 { n % 16384 } else { n % 128 };
                    body.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
                    covered += usize::from(n) + 1;
                }
                _ => {
                    let n = n % 4;
                    body.push(0x80 | ((value % 32) << 2) | n as u8);
                    covered += usize::from(n) + 1;
                }
            }
        }
        let mut left = REGISTERS.saturating_sub(covered);
        while complete && left > 0 {
            let n = left.min(16384);
            body.extend_from_slice(&[0x40 | ((n - 1) >> 8) as u8, (n - 1) as u8]);
            left -= n;
        }
        body
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Arbitrary bytes: no panic, and anything accepted round-trips.
        #[test]
        fn from_redis_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..13_000),
        ) {
            if let Ok(h) = Hll::from_redis(&bytes) {
                proptest::prop_assert_eq!(Hll::from_redis(&h.to_redis()).unwrap(), h);
            }
        }

        /// A valid header over random sparse opcodes (often completed to exactly
        /// 16384 registers), or over a random dense body of about the right
        /// length, or a mutated valid value: the result matches the reference
        /// reading, registers never exceed 51, nothing panics.
        #[test]
        fn from_redis_agrees_with_a_plain_reading(
            encoding in 0u8..4,
            ops in proptest::collection::vec((0u8..3, proptest::num::u16::ANY, 0u8..32), 0..400),
            complete in proptest::bool::ANY,
            dense_len in proptest::option::of(12_270usize..12_310),
            seed in proptest::num::u64::ANY,
            flips in proptest::collection::vec((proptest::num::usize::ANY, 1u8..=255), 0..3),
        ) {
            let mut bytes = match encoding {
                0 => {
                    // Random registers 0..=51, one of them above 51 in 1/8 of cases.
                    let mut x = seed;
                    let mut regs = [0u8; REGISTERS];
                    for r in regs.iter_mut() {
                        x = splitmix64(x);
                        *r = (x % 52) as u8 * u8::from(x >> 62 == 0);
                    }
                    if seed % 8 == 0 {
                        regs[(seed >> 8) as usize % REGISTERS] = 52 + (seed >> 32) as u8 % 12;
                    }
                    let mut b = redis_dense_bitwise(&regs, [0; 8]);
                    if let Some(len) = dense_len {
                        b.resize(len, 0);
                    }
                    b
                }
                1 => {
                    let mut b = b"HYLL\x01".to_vec();
                    b.extend_from_slice(&[0; 11]);
                    b.extend_from_slice(&sparse_body(&ops, complete));
                    b
                }
                _ => {
                    let mut b = b"HYLL".to_vec();
                    b.push(encoding);
                    b.extend_from_slice(&[0; 11]);
                    b.extend_from_slice(&sparse_body(&ops, true));
                    b
                }
            };
            for &(at, mask) in &flips {
                // Only the body: header damage is covered by the named cases.
                let body = bytes.len() - 16;
                if body > 0 {
                    bytes[16 + at % body] ^= mask;
                }
            }
            let got = Hll::from_redis(&bytes);
            match encoding {
                1 => {
                    let want = sparse_reference(&bytes[16..]);
                    proptest::prop_assert_eq!(got.is_ok(), want.is_some());
                    if let (Ok(h), Some(regs)) = (&got, want) {
                        proptest::prop_assert_eq!(&h.registers()[..], &regs[..]);
                    }
                }
                0 => {
                    let fits = bytes.len() == REDIS_DENSE_LEN;
                    let want = fits.then(|| redis_dense_registers(&bytes[16..]));
                    let want = want.filter(|regs| regs.iter().all(|&r| r <= MAX_RANK));
                    proptest::prop_assert_eq!(got.is_ok(), want.is_some());
                    if let (Ok(h), Some(regs)) = (&got, want) {
                        proptest::prop_assert_eq!(&h.registers()[..], &regs[..]);
                    }
                }
                _ => proptest::prop_assert!(got.is_err()),
            }
            if let Ok(h) = got {
                proptest::prop_assert!(h.registers().iter().all(|&r| r <= MAX_RANK));
                proptest::prop_assert_eq!(Hll::from_redis(&h.to_redis()).unwrap(), h);
            }
        }
    }

    #[test]
    fn version_1_bytes_are_refused_naming_the_version() {
        // Version-1 bytes as the previous build wrote them (same layout, XXH3
        // registers): refused even with a valid checksum.
        let mut v1 = sketch_of(1000, 9).to_bytes();
        v1[4] = 1;
        let sum = checksum(&v1[..BODY_END]);
        v1[BODY_END..].copy_from_slice(&sum.to_le_bytes());
        assert_corrupt(&v1, "version 1");
        assert_corrupt(&v1, "MurmurHash64A");
    }

    #[test]
    fn alpha_inf_is_redis_constant() {
        assert_eq!(ALPHA_INF, 0.5 / std::f64::consts::LN_2);
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
