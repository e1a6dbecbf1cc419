//! What a journal keeps of a board ([`crate::journal`]): the records of the changes
//! and the checkpoint of the whole state, a [`BoardState`]: the board, and the
//! outbox of its Redis publisher.
//!
//! An update is logged as its [`Planned`] form (the resolved timestamp and the
//! landmark in force), so a replay reads no clock and applies exactly what ran,
//! rebases included, to the bit. Updates are logged before they are applied, and
//! so are those that then fail (at `max_users`, say): replayed on the same state
//! they fail the same way. A drain for the publisher is logged with the rows it
//! took, so the batch a restarted publisher resends is the very batch it may have
//! sent before.

use super::pending::{self, Pending, PendingBatch};
use super::{Leaderboard, LeaderboardConfig, Planned};
use crate::error::{Error, Result};
use crate::journal::codec::{Get, Put};
use crate::journal::outbox::Outbox;

/// The kind of handle in a board's journal.
pub const KIND: &str = "leaderboard";

/// Record types.
mod record {
    pub(super) const ADD: u8 = 1;
    pub(super) const SET: u8 = 2;
    pub(super) const REMOVE: u8 = 3;
    pub(super) const CLEAR: u8 = 4;
    pub(super) const ENABLE: u8 = 5;
    pub(super) const DRAIN: u8 = 6;
    pub(super) const ACK: u8 = 7;
    pub(super) const IDENTITY: u8 = 8;
    pub(super) const DISCARD: u8 = 9;
}

/// A board and its publisher's outbox: everything a journal restores.
#[derive(Debug, Clone)]
pub struct BoardState {
    /// The board.
    pub board: Leaderboard,
    /// Batches taken for Redis and not yet acknowledged, and the identity.
    pub outbox: Outbox<PendingBatch>,
}

/// One change, as logged.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// `add` (`replace` false) or `set` (true) as planned.
    Update {
        /// The user.
        user_id: &'a str,
        /// Points (add) or score (set).
        amount: f64,
        /// Its plan.
        plan: Planned,
        /// `set` rather than `add`.
        replace: bool,
    },
    /// `remove`.
    Remove(&'a str),
    /// `clear`.
    Clear,
    /// `enable_publishing(max_pending)`.
    Enable(u64),
    /// A drain of the pending changes into the outbox (the batch is the payload).
    Drain(&'a PendingBatch),
    /// A drain whose batch was handed out directly (`eh_leaderboard_drain`).
    Discard,
    /// The publisher's acknowledgement of batch `n`.
    Ack(u64),
    /// The publisher's identity.
    Identity(&'a str),
}

/// An update's record type and the fixed head of its payload (the planned time
/// and landmark and the amount, little-endian; the user id follows it): what
/// [`Change::record`] writes for [`Change::Update`], for a caller that appends
/// the parts without building the payload.
pub fn update_record_head(plan: Planned, amount: f64, replace: bool) -> (u8, [u8; 24]) {
    let mut head = [0u8; 24];
    head[..8].copy_from_slice(&plan.ts.to_le_bytes());
    head[8..16].copy_from_slice(&plan.landmark.to_le_bytes());
    head[16..].copy_from_slice(&amount.to_bits().to_le_bytes());
    (if replace { record::SET } else { record::ADD }, head)
}

impl Change<'_> {
    /// The record: its type and payload.
    pub fn record(&self) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        let kind = match *self {
            Change::Update {
                user_id,
                amount,
                plan,
                replace,
            } => {
                let (kind, head) = update_record_head(plan, amount, replace);
                out.extend_from_slice(&head);
                out.extend_from_slice(user_id.as_bytes());
                kind
            }
            Change::Remove(user_id) => {
                out.extend_from_slice(user_id.as_bytes());
                record::REMOVE
            }
            Change::Clear => record::CLEAR,
            Change::Enable(max) => {
                out.put_u64(max);
                record::ENABLE
            }
            Change::Drain(batch) => {
                pending::encode_batch(batch, &mut out);
                record::DRAIN
            }
            Change::Discard => record::DISCARD,
            Change::Ack(n) => {
                out.put_u64(n);
                record::ACK
            }
            Change::Identity(id) => {
                out.extend_from_slice(id.as_bytes());
                record::IDENTITY
            }
        };
        (kind, out)
    }
}

/// `key=value;...` of the settings that give a board's state its meaning.
pub fn fingerprint(config: &LeaderboardConfig) -> String {
    format!(
        "decay_factor={:?};decay_period_secs={:?};max_users={}",
        config.decay_factor, config.decay_period_secs, config.max_users
    )
}

/// A logged time (a timestamp, a landmark): in `0..=MAX_TIMESTAMP` as every
/// time the board accepts, so the replay's arithmetic on it cannot overflow.
fn logged_time(ts: i64, what: &str) -> Result<i64> {
    if (0..=super::MAX_TIMESTAMP).contains(&ts) {
        Ok(ts)
    } else {
        Err(Error::corrupt(format!(
            "leaderboard journal: {what} {ts} is outside 0..={}",
            super::MAX_TIMESTAMP
        )))
    }
}

fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| Error::corrupt("a logged user id is not UTF-8"))
}

impl BoardState {
    /// A new, empty state.
    pub fn new(board: Leaderboard) -> Self {
        BoardState {
            board,
            outbox: Outbox::default(),
        }
    }

    /// The oldest batch waiting for Redis, draining the pending changes into a
    /// new one if none waits (then `Some(batch)`: the caller logs
    /// [`Change::Drain`] with it). `None` when there is nothing to publish.
    pub fn outbox_next(&mut self) -> (Option<(u64, &PendingBatch)>, Option<PendingBatch>) {
        let mut drained = None;
        if self.outbox.waiting() == 0 {
            let batch = self.board.drain_pending();
            if !batch.rows.is_empty() {
                drained = Some(batch.clone());
                self.outbox.push(batch);
            }
        }
        (self.outbox.oldest(), drained)
    }

    /// Applies one logged record (a journal's replay).
    pub fn replay(&mut self, kind: u8, payload: &[u8]) -> Result<()> {
        let mut g = Get::new(payload, "leaderboard journal record");
        match kind {
            record::ADD | record::SET => {
                let ts = logged_time(g.i64()?, "timestamp")?;
                let landmark = logged_time(g.i64()?, "landmark")?;
                let amount = g.f64()?;
                let user_id = utf8(&payload[24..])?;
                // What the plan checked when the record was written.
                super::check_user_id(user_id)
                    .map_err(|e| Error::corrupt(format!("leaderboard journal: {e}")))?;
                if !amount.is_finite() {
                    return Err(Error::corrupt(
                        "leaderboard journal: an update's amount is not finite",
                    ));
                }
                let plan = Planned::logged(&self.board, user_id, ts, landmark);
                // Failures (Full, an overflow) fail now as they did then.
                let _ = self.board.apply(user_id, amount, plan, kind == record::SET);
            }
            record::REMOVE => {
                let _ = self.board.remove(utf8(payload)?);
            }
            record::CLEAR => self.board.clear(),
            record::ENABLE => {
                let max = usize::try_from(g.u64()?).unwrap_or(usize::MAX);
                self.board.enable_publishing(max)?;
            }
            record::DRAIN => {
                let batch = pending::decode_batch(&mut g)?;
                self.board.discard_pending();
                self.outbox.push(batch);
            }
            record::DISCARD => self.board.discard_pending(),
            record::ACK => {
                self.outbox.ack(g.u64()?);
            }
            record::IDENTITY => self.outbox.set_identity(utf8(payload)?),
            other => {
                return Err(Error::corrupt(format!(
                    "leaderboard journal: unknown record type {other}"
                )));
            }
        }
        Ok(())
    }

    /// The whole state, for a checkpoint.
    pub fn encode(&self) -> Vec<u8> {
        let b = &self.board;
        let mut out = Vec::with_capacity(64 + b.len() * 48);
        out.put_i64(b.landmark);
        for counter in [b.evicted, b.refused, b.rebases, b.future_refused] {
            out.put_u64(counter);
        }
        out.put_u64(b.len() as u64);
        for key in b.index.iter_from(0) {
            let e = &b.entries[key.slot as usize];
            out.put_str(e.id.as_str());
            out.put_f64(key.score);
            out.put_i64(e.last_update);
            out.put_f64(e.pending);
        }
        match &b.pending {
            Some(p) => {
                out.put_u8(1);
                p.encode(&mut out);
            }
            None => out.put_u8(0),
        }
        self.outbox.encode(&mut out, pending::encode_batch);
        out
    }

    /// Reads what [`BoardState::encode`] wrote, for a board of `config`.
    pub fn decode(bytes: &[u8], config: LeaderboardConfig) -> Result<Self> {
        let mut g = Get::new(bytes, "leaderboard checkpoint");
        let landmark = logged_time(g.i64()?, "landmark")?;
        let counters = [g.u64()?, g.u64()?, g.u64()?, g.u64()?];
        let n = g.count(28)?;
        let mut parts = Vec::with_capacity(n);
        let mut sums = Vec::with_capacity(n);
        for _ in 0..n {
            let id = g.str()?;
            super::check_user_id(id)
                .map_err(|e| Error::corrupt(format!("leaderboard checkpoint: {e}")))?;
            let value = g.f64()?;
            if !value.is_finite() {
                return Err(Error::corrupt(format!(
                    "leaderboard checkpoint: {id:?} has a value that is not finite"
                )));
            }
            parts.push((id.to_string(), value, logged_time(g.i64()?, "last update")?));
            sums.push(g.f64()?);
        }
        if config.max_users > 0 && n > config.max_users {
            return Err(Error::corrupt(
                "leaderboard checkpoint: more users than max_users",
            ));
        }
        let mut board = Leaderboard::from_parts(config, landmark, parts)?;
        [
            board.evicted,
            board.refused,
            board.rebases,
            board.future_refused,
        ] = counters;
        if g.u8()? == 1 {
            let mut p = Pending::decode(&mut g)?;
            // `from_parts` put user i in slot i.
            for (slot, sum) in sums.into_iter().enumerate() {
                if !sum.is_nan() {
                    board.entries[slot].pending = sum;
                    p.restore_sum(slot as u32);
                }
            }
            board.pending = Some(Box::new(p));
        }
        let outbox = Outbox::decode(&mut g, pending::decode_batch)?;
        g.finish()?;
        Ok(BoardState { board, outbox })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    fn config() -> LeaderboardConfig {
        LeaderboardConfig {
            decay_factor: 0.5,
            decay_period_secs: 60.0,
            max_users: 40,
            ..LeaderboardConfig::default()
        }
    }

    /// Runs `ops` on a state, logging each change; returns the state and the log.
    fn run(ops: impl Fn(usize) -> (String, f64, i64, u8)) -> (BoardState, Vec<(u8, Vec<u8>)>) {
        let mut s = BoardState::new(Leaderboard::new(config()).unwrap());
        let mut log = Vec::new();
        let mut change = |_: &mut BoardState, c: Change<'_>| log.push(c.record());
        s.board.enable_publishing(1000).unwrap();
        change(&mut s, Change::Enable(1000));
        change(&mut s, Change::Identity("me"));
        s.outbox.identity("me").unwrap();
        for i in 0..3000 {
            let (user, amount, ts, op) = ops(i);
            match op {
                0 | 1 => {
                    if let Ok(plan) = s.board.plan(&user, amount, ts, op == 1) {
                        change(
                            &mut s,
                            Change::Update {
                                user_id: &user,
                                amount,
                                plan,
                                replace: op == 1,
                            },
                        );
                        let _ = s.board.apply(&user, amount, plan, op == 1);
                    }
                }
                2 => {
                    change(&mut s, Change::Remove(&user));
                    let _ = s.board.remove(&user);
                }
                _ => {
                    let (_, drained) = s.outbox_next();
                    if let Some(batch) = drained {
                        change(&mut s, Change::Drain(&batch));
                    }
                    if let Some((n, _)) = s.outbox.oldest() {
                        if i % 2 == 0 {
                            change(&mut s, Change::Ack(n));
                            s.outbox.ack(n);
                        }
                    }
                }
            }
        }
        (s, log)
    }

    fn same(a: &BoardState, b: &BoardState) {
        let ra: Vec<_> = a
            .board
            .top(0, 100, T0 + 5000)
            .unwrap()
            .iter()
            .map(|r| (r.user_id.to_string(), r.score.to_bits(), r.last_update))
            .collect();
        let rb: Vec<_> = b
            .board
            .top(0, 100, T0 + 5000)
            .unwrap()
            .iter()
            .map(|r| (r.user_id.to_string(), r.score.to_bits(), r.last_update))
            .collect();
        assert_eq!(ra, rb);
        assert_eq!(a.board.landmark, b.board.landmark);
        assert_eq!(a.outbox, b.outbox);
        assert_eq!(a.board.stats().pending, b.board.stats().pending);
    }

    fn workload(i: usize) -> (String, f64, i64, u8) {
        let op = match i % 17 {
            0 => 1,
            5 => 2,
            9 => 3,
            _ => 0,
        };
        // Timestamps climb past several rebases (a halving a minute).
        (
            format!("u{}", (i * 7919) % 120),
            1.0 + (i % 9) as f64,
            T0 + (i as i64) * 11,
            op,
        )
    }

    #[test]
    fn replaying_the_log_rebuilds_the_board_to_the_bit() {
        let (live, log) = run(workload);
        assert!(live.board.stats().rebases > 0 && live.board.stats().evicted > 0);
        let mut back = BoardState::new(Leaderboard::new(config()).unwrap());
        for (kind, payload) in &log {
            back.replay(*kind, payload).unwrap();
        }
        same(&live, &back);
    }

    #[test]
    fn a_checkpoint_then_the_rest_of_the_log_rebuilds_it_too() {
        let (live, log) = run(workload);
        let mut half = BoardState::new(Leaderboard::new(config()).unwrap());
        let cut = log.len() / 2;
        for (kind, payload) in &log[..cut] {
            half.replay(*kind, payload).unwrap();
        }
        let mut back = BoardState::decode(&half.encode(), config()).unwrap();
        for (kind, payload) in &log[cut..] {
            back.replay(*kind, payload).unwrap();
        }
        same(&live, &back);
        back.board.check_invariants();
        // The checkpoint itself round-trips, pending sums and outbox included.
        let again = BoardState::decode(&live.encode(), config()).unwrap();
        same(&live, &again);
    }

    #[test]
    fn damaged_checkpoints_and_records_are_corrupt() {
        let (live, _) = run(workload);
        let bytes = live.encode();
        for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(
                    BoardState::decode(&bytes[..cut], config()),
                    Err(Error::Corrupt(_))
                ),
                "{cut}"
            );
        }
        let mut s = BoardState::new(Leaderboard::new(config()).unwrap());
        assert!(s.replay(200, b"").is_err());
        assert!(s.replay(record::ADD, b"short").is_err());
        assert!(s.replay(record::REMOVE, &[0xff, 0xfe]).is_err());
        // Well framed records the board never writes: times out of range (the
        // fuzz target's first finding: the replay's `ts - landmark` overflowed),
        // an amount that is not finite, an id the board refuses.
        let update = |ts: i64, landmark: i64, amount: f64, id: &str| {
            let mut out = Vec::new();
            out.put_i64(ts);
            out.put_i64(landmark);
            out.put_f64(amount);
            out.extend_from_slice(id.as_bytes());
            out
        };
        for bad in [
            update(T0, i64::MIN, 1.0, "u"),
            update(-5, T0, 1.0, "u"),
            update(super::super::MAX_TIMESTAMP + 1, T0, 1.0, "u"),
            update(T0, T0, f64::NAN, "u"),
            update(T0, T0, f64::INFINITY, "u"),
            update(T0, T0, 1.0, ""),
        ] {
            assert!(
                matches!(s.replay(record::ADD, &bad), Err(Error::Corrupt(_))),
                "{bad:?}"
            );
        }
        assert!(s.board.is_empty());
        s.replay(record::ADD, &update(T0, T0, 1.0, "u")).unwrap();
        assert_eq!(s.board.len(), 1);
    }
}
