//! The snapshot loader over arbitrary bytes, both formats (ours and the C++
//! extension's). Anything may be refused, nothing may panic, and a board that
//! loads must re-save to bytes that load back to the same board and re-save to
//! the same bytes.
#![no_main]

use engagehub::leaderboard::{Leaderboard, MAX_TIMESTAMP};
use libfuzzer_sys::fuzz_target;

/// Every user's (id, rank, score bits, last_update) as of `now`, best first.
fn rows(board: &Leaderboard, now: i64) -> Vec<(String, u64, u64, i64)> {
    board
        .top(0, board.len(), now)
        .expect("now is in range")
        .into_iter()
        .map(|r| {
            (
                r.user_id.to_owned(),
                r.rank,
                r.score.to_bits(),
                r.last_update,
            )
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(board) = Leaderboard::from_snapshot_json(data) else {
        return;
    };
    let saved = board.to_snapshot_json();
    let reloaded = match Leaderboard::from_snapshot_json(&saved) {
        Ok(b) => b,
        Err(e) => panic!(
            "a loaded board's own snapshot is refused: {e}\n{}",
            String::from_utf8_lossy(&saved)
        ),
    };
    assert_eq!(reloaded.config(), board.config());
    assert_eq!(reloaded.landmark(), board.landmark());
    assert_eq!(reloaded.len(), board.len());
    // A fixed query time (not the wall clock, which may tick between the calls).
    let now = board.landmark().clamp(1, MAX_TIMESTAMP);
    let before = rows(&board, now);
    assert_eq!(rows(&reloaded, now), before);
    let ids: std::collections::HashSet<&str> = before.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), before.len(), "a loaded board holds an id twice");
    for (id, rank, score, last_update) in &before {
        let r = board.rank(id, now).expect("every listed user has a rank");
        assert_eq!(
            (r.rank, r.score.to_bits(), r.last_update),
            (*rank, *score, *last_update)
        );
    }
    assert_eq!(reloaded.to_snapshot_json(), saved, "re-save is not stable");
});
