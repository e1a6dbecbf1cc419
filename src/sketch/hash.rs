//! The stable wire hash of every sketch.
//!
//! Sketches are only mergeable if every process maps an item to the same
//! registers and counters, so the hash is part of the serialized format:
//! [XXH3](https://github.com/Cyan4973/xxHash) (64- and 128-bit, seed 0), which is
//! specified byte for byte and gives the same value on every platform and
//! endianness. Changing it is a wire-format break that needs a new version
//! byte in the formats of [`Hll`](super::Hll) and [`CountMin`](super::CountMin).

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed, xxh3_128};

/// Seed of [`checksum`], distinct from the item hash's seed 0 so that a
/// checksum never looks like the hash of an item.
const CHECKSUM_SEED: u64 = 0x4548_5f53_4b45_5443; // "EH_SKETC"

/// XXH3-64 of `bytes`: the stable 64-bit item hash (used by [`Hll`](super::Hll)
/// and [`SpaceSaving`](super::SpaceSaving)).
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

    #[test]
    fn checksum_differs_from_item_hash() {
        assert_ne!(checksum(b"abc"), hash64(b"abc"));
        assert_eq!(checksum(b"abc"), checksum(b"abc"));
    }
}
