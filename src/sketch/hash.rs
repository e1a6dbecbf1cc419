//! The stable wire hashes of the sketches.
//!
//! Sketches are only mergeable if every process maps an item to the same
//! registers and counters, so the hash is part of the serialized format:
//!
//! * [`Hll`](super::Hll) uses [`redis_hll_hash`], MurmurHash64A with Redis's seed,
//!   so its registers are the ones Redis's `PFADD` sets for the same bytes;
//! * [`CountMin`](super::CountMin) and [`SpaceSaving`](super::SpaceSaving) use
//!   [XXH3](https://github.com/Cyan4973/xxHash) (64- and 128-bit, seed 0).
//!
//! Both are specified byte for byte and give the same value on every platform
//! and endianness. Changing one is a wire-format break that needs a new version
//! byte in the formats of the sketches that use it.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed, xxh3_128};

/// Seed of [`checksum`], distinct from the item hash's seed 0 so that a
/// checksum never looks like the hash of an item.
const CHECKSUM_SEED: u64 = 0x4548_5f53_4b45_5443; // "EH_SKETC"

/// XXH3-64 of `bytes`: the stable 64-bit item hash of
/// [`SpaceSaving`](super::SpaceSaving) (and of channel ids in the windows).
#[inline]
pub fn hash64(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// XXH3-128 of `bytes` split into `(low 64 bits, high 64 bits)`: the stable
/// 128-bit item hash (used by [`CountMin`](super::CountMin)'s double hashing).
#[inline]
pub fn hash128(bytes: &[u8]) -> (u64, u64) {
    let h = xxh3_128(bytes);
    (h as u64, (h >> 64) as u64)
}

/// The seed Redis passes to [`murmur64a`] for `PFADD` (`hllPatLen` in
/// `hyperloglog.c`).
pub const REDIS_HLL_SEED: u64 = 0xadc8_3b19;

/// Multiplier of MurmurHash64A.
const MURMUR_M: u64 = 0xc6a4_a793_5bd1_e995;
/// Shift of MurmurHash64A's mixing steps.
const MURMUR_R: u32 = 47;

/// MurmurHash64A (Austin Appleby's MurmurHash2, 64-bit version) of `bytes`
/// with `seed`, reading the input as little-endian 64-bit words as Redis does
/// on every platform (its copy is "endian neutral").
///
/// `seed` is taken whole; Redis's is a 32-bit `unsigned int`, so
/// [`REDIS_HLL_SEED`] fits.
#[inline]
pub fn murmur64a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(MURMUR_M);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut k = u64::from_le_bytes(word.try_into().expect("chunks of 8 bytes"));
        k = k.wrapping_mul(MURMUR_M);
        k ^= k >> MURMUR_R;
        k = k.wrapping_mul(MURMUR_M);
        h ^= k;
        h = h.wrapping_mul(MURMUR_M);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        h ^= load_tail(tail);
        h = h.wrapping_mul(MURMUR_M);
    }
    h ^= h >> MURMUR_R;
    h = h.wrapping_mul(MURMUR_M);
    h ^= h >> MURMUR_R;
    h
}

/// The 1 to 7 bytes of `tail` as a little-endian integer, with two loads
/// instead of a byte loop: overlapping reads put the same byte at the same
/// position, so OR-ing them is exact.
#[inline]
fn load_tail(tail: &[u8]) -> u64 {
    let n = tail.len();
    debug_assert!((1..8).contains(&n));
    if n >= 4 {
        let lo = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes"));
        let hi = u32::from_le_bytes(tail[n - 4..].try_into().expect("4 bytes"));
        u64::from(lo) | (u64::from(hi) << (8 * (n - 4)))
    } else {
        // n = 1: three times byte 0; n = 2: bytes 0, 1, 1; n = 3: bytes 0, 1, 2.
        u64::from(tail[0])
            | (u64::from(tail[n / 2]) << (8 * (n / 2)))
            | (u64::from(tail[n - 1]) << (8 * (n - 1)))
    }
}

/// The item hash of [`Hll`](super::Hll): MurmurHash64A with [`REDIS_HLL_SEED`],
/// exactly the hash Redis's `PFADD` computes for the same bytes.
#[inline]
pub fn redis_hll_hash(bytes: &[u8]) -> u64 {
    murmur64a(bytes, REDIS_HLL_SEED)
}

/// Checksum of serialized sketch bytes: XXH3-64 with a fixed seed.
#[inline]
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, CHECKSUM_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_the_specified_xxh3_values() {
        // Reference values of XXH3 (seed 0) for the empty input: pinning them
        // catches an accidental change of the wire hash.
        assert_eq!(hash64(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(hash128(b""), (0x6001_C324_468D_497F, 0x99AA_06D3_0147_98D8));
    }

    #[test]
    fn hash128_splits_low_then_high() {
        let full = xxh3_128(b"channel-42");
        let (lo, hi) = hash128(b"channel-42");
        assert_eq!(u128::from(lo) | (u128::from(hi) << 64), full);
        assert_ne!(hash64(b"a"), hash64(b"b"));
    }

    /// MurmurHash64A byte by byte, as its specification reads (the tail folded
    /// in one byte at a time): checks the two-load tail of [`murmur64a`].
    fn murmur64a_bytewise(bytes: &[u8], seed: u64) -> u64 {
        let mut h = seed ^ (bytes.len() as u64).wrapping_mul(MURMUR_M);
        let whole = bytes.len() - bytes.len() % 8;
        for word in bytes[..whole].chunks(8) {
            let mut k = 0u64;
            for (i, &b) in word.iter().enumerate() {
                k |= u64::from(b) << (8 * i);
            }
            k = k.wrapping_mul(MURMUR_M);
            k ^= k >> MURMUR_R;
            k = k.wrapping_mul(MURMUR_M);
            h ^= k;
            h = h.wrapping_mul(MURMUR_M);
        }
        let tail = &bytes[whole..];
        for (i, &b) in tail.iter().enumerate().rev() {
            h ^= u64::from(b) << (8 * i);
        }
        if !tail.is_empty() {
            h = h.wrapping_mul(MURMUR_M);
        }
        h ^= h >> MURMUR_R;
        h = h.wrapping_mul(MURMUR_M);
        h ^ (h >> MURMUR_R)
    }

    /// SMHasher's verification value of MurmurHash64A ("Murmur2B", 0x1F0D3804):
    /// hash the keys {}, {0}, {0, 1}, ... {0..254} with seeds 256 - len, then
    /// hash the 256 little-endian results with seed 0; the value is the low 32
    /// bits. A published vector that exercises every tail length and seeds.
    #[test]
    fn murmur64a_passes_the_smhasher_verification() {
        let key: Vec<u8> = (0..=255u8).collect();
        let mut hashes = Vec::with_capacity(256 * 8);
        for len in 0..256usize {
            let h = murmur64a(&key[..len], 256 - len as u64);
            assert_eq!(h, murmur64a_bytewise(&key[..len], 256 - len as u64));
            hashes.extend_from_slice(&h.to_le_bytes());
        }
        assert_eq!(murmur64a(&hashes, 0) as u32, 0x1F0D_3804);
    }

    #[test]
    fn the_two_load_tail_equals_the_byte_loop() {
        let data: Vec<u8> = (0..64u32).map(|i| (i * 37 + 11) as u8 | 0x80).collect();
        for len in 0..data.len() {
            for seed in [0, REDIS_HLL_SEED, u64::MAX] {
                assert_eq!(
                    murmur64a(&data[..len], seed),
                    murmur64a_bytewise(&data[..len], seed),
                    "len {len}"
                );
            }
        }
        assert_eq!(redis_hll_hash(b"abc"), murmur64a(b"abc", 0xadc8_3b19));
    }

    #[test]
    fn checksum_differs_from_item_hash() {
        assert_ne!(checksum(b"abc"), hash64(b"abc"));
        assert_eq!(checksum(b"abc"), checksum(b"abc"));
    }
}
