//! Sketch bytes: `Hll::from_bytes` and `CountMin::from_bytes` over arbitrary
//! bytes. The first byte picks the sketch and whether the input is taken raw or
//! shaped first (right length, valid checksum) so that mutations reach the checks
//! behind the checksum. Whatever loads must re-serialize to the identical bytes,
//! load again, and answer queries the same way.
#![no_main]

use engagehub::sketch::{CountMin, Hll};
use libfuzzer_sys::fuzz_target;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the sketches' checksum (part of their wire format, src/sketch/hash.rs).
const CHECKSUM_SEED: u64 = 0x4548_5f53_4b45_5443;
const HLL_HEADER: usize = 8;
const HLL_REGISTERS: usize = 1 << 14;
const CMS_HEADER: usize = 4 + 1 + 4 + 4 + 8;
/// Largest Count-Min body the shaped mode builds (keeps each input fast).
const CMS_MAX_CELLS: usize = 1 << 12;

fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let sum = xxh3_64_with_seed(&body, CHECKSUM_SEED);
    body.extend_from_slice(&sum.to_le_bytes());
    body
}

/// An HLL image: the first 8 input bytes as the header, then the rest as
/// registers, each reduced modulo `modulus` (so most are valid ranks; 0 keeps raw
/// bytes), zero-padded to the full register count, then checksummed.
fn shape_hll(data: &[u8], modulus: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(HLL_HEADER + HLL_REGISTERS + 8);
    let header = data.get(..HLL_HEADER).unwrap_or(data);
    out.extend_from_slice(header);
    out.resize(HLL_HEADER, 0);
    let body = data.get(HLL_HEADER..).unwrap_or(&[]);
    out.extend(
        body.iter()
            .take(HLL_REGISTERS)
            .map(|&r| if modulus == 0 { r } else { r % modulus }),
    );
    out.resize(HLL_HEADER + HLL_REGISTERS, 0);
    seal(out)
}

/// A Count-Min image: the input's header (magic, version, depth, width, total),
/// counters from the rest sized to what the header claims (when small enough),
/// optionally the total set to row 0's sum, then checksummed.
fn shape_cms(data: &[u8], fix_total: bool) -> Vec<u8> {
    let mut out = data.get(..CMS_HEADER).unwrap_or(data).to_vec();
    out.resize(CMS_HEADER, 0);
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let (depth, width) = (u32_at(&out, 5) as usize, u32_at(&out, 9) as usize);
    let body = data.get(CMS_HEADER..).unwrap_or(&[]);
    let cells = depth.saturating_mul(width);
    let cells = if cells <= CMS_MAX_CELLS {
        cells
    } else {
        body.len() / 8
    };
    let mut counters: Vec<u64> = body
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .take(cells)
        .collect();
    counters.resize(cells, 0);
    if fix_total && width > 0 {
        let row0: u128 = counters.iter().take(width).map(|&c| u128::from(c)).sum();
        let total = u64::try_from(row0).unwrap_or(u64::MAX);
        out[13..21].copy_from_slice(&total.to_le_bytes());
    }
    for c in counters {
        out.extend_from_slice(&c.to_le_bytes());
    }
    seal(out)
}

fn check_hll(bytes: &[u8]) {
    let Ok(hll) = Hll::from_bytes(bytes) else {
        return;
    };
    assert_eq!(hll.to_bytes(), bytes, "HLL re-serializes differently");
    let again = Hll::from_bytes(&hll.to_bytes()).expect("own bytes load");
    assert_eq!(again.registers(), hll.registers());
    let count = hll.count();
    assert!(hll.estimate().is_finite() && hll.estimate() >= 0.0);
    assert_eq!(again.count(), count);
    assert_eq!(hll.is_empty(), hll.registers().iter().all(|&r| r == 0));
    let mut merged = hll.clone();
    merged.merge(&again);
    assert_eq!(
        merged.registers(),
        hll.registers(),
        "merge with itself changed it"
    );
}

fn check_cms(bytes: &[u8]) {
    let Ok(cms) = CountMin::from_bytes(bytes) else {
        return;
    };
    assert_eq!(cms.to_bytes(), bytes, "Count-Min re-serializes differently");
    let again = CountMin::from_bytes(&cms.to_bytes()).expect("own bytes load");
    assert_eq!(
        (again.depth(), again.width(), again.total()),
        (cms.depth(), cms.width(), cms.total())
    );
    for item in [&b""[..], b"general", b"42", &bytes[..bytes.len().min(16)]] {
        let estimate = cms.estimate(item);
        assert_eq!(again.estimate(item), estimate);
        assert!(estimate <= cms.total(), "an estimate above the total");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 6 {
        0 => check_hll(rest),
        1 => check_cms(rest),
        2 => check_hll(&shape_hll(rest, 52)),
        3 => check_hll(&shape_hll(rest, 0)),
        4 => check_cms(&shape_cms(rest, true)),
        _ => check_cms(&shape_cms(rest, false)),
    }
});
