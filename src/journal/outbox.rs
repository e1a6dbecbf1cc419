//! What a handle's Redis publisher needs to survive a restart, kept with the
//! handle's state (and in its journal): the publisher's identity, the batches taken
//! for Redis and not yet acknowledged, numbered in order, and an opaque baseline
//! (what Redis holds from this publisher, in the binding's own format).
//!
//! Redis applies a batch at most once per (publisher identity, number): a handle
//! reopened on its journal resumes under the same identity and resends the batches
//! still waiting, which Redis recognises if it had applied them before.

use std::collections::VecDeque;

use super::codec::{Get, Put};
use crate::error::{Error, Result};

/// See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Outbox<T> {
    id: String,
    /// The last number handed out (numbers start at 1).
    last: u64,
    waiting: VecDeque<(u64, T)>,
    baseline: Vec<u8>,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Outbox {
            id: String::new(),
            last: 0,
            waiting: VecDeque::new(),
            baseline: Vec::new(),
        }
    }
}

/// Longest publisher identity, in bytes.
pub const MAX_ID_LEN: usize = 256;

impl<T> Outbox<T> {
    /// The identity: the stored one, or `proposed` if there is none yet (then
    /// `true`: the caller logs it).
    pub fn identity(&mut self, proposed: &str) -> Result<(&str, bool)> {
        if self.id.is_empty() {
            if proposed.is_empty() || proposed.len() > MAX_ID_LEN {
                return Err(Error::invalid(format!(
                    "a publisher id must be 1 to {MAX_ID_LEN} bytes, got {}",
                    proposed.len()
                )));
            }
            self.id = proposed.to_string();
            return Ok((&self.id, true));
        }
        Ok((&self.id, false))
    }

    /// Sets the identity (replay of a logged one).
    pub fn set_identity(&mut self, id: &str) {
        self.id = id.to_string();
    }

    /// Queues `item` under the next number, which it returns.
    pub fn push(&mut self, item: T) -> u64 {
        self.last += 1;
        self.waiting.push_back((self.last, item));
        self.last
    }

    /// The oldest batch waiting, with its number.
    pub fn oldest(&self) -> Option<(u64, &T)> {
        self.waiting.front().map(|(n, t)| (*n, t))
    }

    /// The waiting batch `number`, if it waits.
    pub fn get(&self, number: u64) -> Option<&T> {
        self.waiting
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, t)| t)
    }

    /// Batches waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Acknowledges batch `number` (and any older one still waiting). False when
    /// no batch waits under that number.
    pub fn ack(&mut self, number: u64) -> bool {
        if !self.waiting.iter().any(|(n, _)| *n == number) {
            return false;
        }
        while self.waiting.front().is_some_and(|(n, _)| *n <= number) {
            self.waiting.pop_front();
        }
        true
    }

    /// The baseline bytes.
    pub fn baseline(&self) -> &[u8] {
        &self.baseline
    }

    /// Replaces the baseline.
    pub fn set_baseline(&mut self, bytes: &[u8]) {
        self.baseline = bytes.to_vec();
    }

    /// Forgets everything (a forked child: the parent publishes what waits, and
    /// the child publishes under an identity of its own).
    pub fn reset(&mut self) {
        *self = Outbox::default();
    }

    /// Appends the outbox to `out`, each item with `item`.
    pub fn encode(&self, out: &mut Vec<u8>, item: impl Fn(&T, &mut Vec<u8>)) {
        out.put_str(&self.id);
        out.put_u64(self.last);
        out.put_bytes(&self.baseline);
        out.put_u64(self.waiting.len() as u64);
        for (n, t) in &self.waiting {
            out.put_u64(*n);
            item(t, out);
        }
    }

    /// Reads what [`Outbox::encode`] wrote.
    pub fn decode(g: &mut Get<'_>, item: impl Fn(&mut Get<'_>) -> Result<T>) -> Result<Self> {
        let id = g.str()?.to_string();
        let last = g.u64()?;
        let baseline = g.bytes()?.to_vec();
        let n = g.count(8)?;
        let mut waiting = VecDeque::with_capacity(n);
        for _ in 0..n {
            let number = g.u64()?;
            if number > last || waiting.back().is_some_and(|(m, _)| *m >= number) {
                return Err(Error::corrupt("outbox numbers out of order"));
            }
            waiting.push_back((number, item(g)?));
        }
        Ok(Outbox {
            id,
            last,
            waiting,
            baseline,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_ack_identity_and_round_trip() {
        let mut o: Outbox<Vec<u8>> = Outbox::default();
        assert_eq!(o.identity("me").unwrap(), ("me", true));
        assert_eq!(o.identity("other").unwrap(), ("me", false));
        assert!(o.identity("").is_ok(), "an identity is kept once set");
        assert_eq!(o.push(b"a".to_vec()), 1);
        assert_eq!(o.push(b"b".to_vec()), 2);
        assert!(!o.ack(5));
        assert!(o.ack(1));
        assert_eq!(o.oldest(), Some((2, &b"b".to_vec())));
        o.set_baseline(b"base");
        let mut bytes = Vec::new();
        o.encode(&mut bytes, |t, out| out.put_bytes(t));
        let back = Outbox::decode(&mut Get::new(&bytes, "t"), |g| Ok(g.bytes()?.to_vec())).unwrap();
        assert_eq!(back, o);
        let mut fresh: Outbox<Vec<u8>> = Outbox::default();
        assert!(fresh.identity("").is_err());
        o.reset();
        assert_eq!(o, Outbox::default());
    }
}
