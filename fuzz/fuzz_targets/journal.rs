//! The journal's reader over arbitrary bytes: segments (records framed, then torn
//! or flipped anywhere), board checkpoints and processor shard checkpoints.
//! Anything may be refused, nothing may panic; a segment's scan returns exactly the
//! records before the first damaged one; a checkpoint that decodes re-encodes to
//! bytes that decode to the same state.
#![no_main]

use engagehub::journal::codec::Get;
use engagehub::journal::{Scan, encode_segment, scan_segment};
use engagehub::leaderboard::LeaderboardConfig;
use engagehub::leaderboard::durable::BoardState;
use engagehub::sketch::{WindowConfig, WindowedAnalytics};
use libfuzzer_sys::fuzz_target;

fn board_config() -> LeaderboardConfig {
    LeaderboardConfig {
        decay_factor: 0.5,
        decay_period_secs: 60.0,
        max_users: 50,
        ..LeaderboardConfig::default()
    }
}

fn window_config() -> WindowConfig {
    WindowConfig {
        window_minutes: 5,
        cms_depth: 2,
        cms_width: 16,
        topk_capacity: 8,
        minute_topk_capacity: 4,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            segment(rest);
        }
        1 => {
            let Ok(state) = BoardState::decode(rest, board_config()) else {
                return;
            };
            let bytes = state.encode();
            let again = BoardState::decode(&bytes, board_config())
                .expect("a board's own checkpoint decodes");
            assert_eq!(
                again.encode(),
                bytes,
                "a checkpoint re-encodes to the same bytes"
            );
        }
        _ => {
            let mut g = Get::new(rest, "fuzz");
            let Ok(shard) = WindowedAnalytics::decode(&window_config(), &mut g) else {
                return;
            };
            let mut bytes = Vec::new();
            shard.encode(&mut bytes);
            let again = WindowedAnalytics::decode(&window_config(), &mut Get::new(&bytes, "again"))
                .expect("a shard's own checkpoint decodes");
            let mut twice = Vec::new();
            again.encode(&mut twice);
            assert_eq!(twice, bytes, "a shard re-encodes to the same bytes");
        }
    }
});

/// Frames records from the input (type, length, payload...), damages the segment
/// at a position the input picks, scans it and replays what was read.
fn segment(data: &[u8]) -> usize {
    let Some((&damage, mut rest)) = data.split_first() else {
        return 0;
    };
    let mut records: Vec<(u8, &[u8])> = Vec::new();
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], rest[1] as usize);
        let body = &rest[2..];
        let take = len.min(body.len());
        records.push((kind, &body[..take]));
        rest = &body[take..];
    }
    let mut bytes = encode_segment(0, 1, &records);
    // Damage: flip a byte or cut the file, somewhere past the header (or none).
    let at = 64 + (damage as usize * 7) % (bytes.len().saturating_sub(63).max(1));
    if at < bytes.len() {
        if damage & 1 == 0 {
            bytes[at] ^= 0x5a;
        } else {
            bytes.truncate(at);
        }
    }
    let mut read: Vec<(u8, Vec<u8>)> = Vec::new();
    let scan = scan_segment(&bytes, 0, 1, 0, &mut |k, p| {
        read.push((k, p.to_vec()));
        Ok(())
    })
    .expect("the callback never fails");
    // Exactly a prefix of what was framed comes back, and whole.
    assert!(read.len() <= records.len());
    for (got, want) in read.iter().zip(&records) {
        assert_eq!((got.0, got.1.as_slice()), (want.0, want.1));
    }
    if let Scan::End(n) = scan {
        assert_eq!(n as usize, read.len());
    }
    // What was read replays into a board (records may be refused, never panic).
    let mut state =
        BoardState::new(engagehub::leaderboard::Leaderboard::new(board_config()).expect("config"));
    for (kind, payload) in &read {
        let _ = state.replay(*kind, payload);
    }
    let _ = state.encode();
    read.len()
}
