//! What a journal keeps of a processor ([`crate::journal`]): each run of events a
//! worker takes from the ring, logged (in that worker's stream, under its shard's
//! lock) before it is sketched and before it reaches the flush callback; the
//! publisher's outbox (its own stream); and checkpoints of every worker's sketches
//! and of the community analytics.
//!
//! Replaying a run sketches it again: HyperLogLogs and Count-Min sketches are
//! exactly what they were, and so are Space-Saving summaries under their capacity
//! (beyond it they keep their bounds). Events still in the ring are not journaled:
//! the ring stays in memory, and a kill loses them (the flush callback never got
//! them either).

use std::path::PathBuf;
use std::sync::Mutex;

use super::config::{Clock, ProcessorConfig};
use crate::community::Community;
use crate::error::{Error, Result};
use crate::journal::codec::{Get, Put};
use crate::journal::outbox::Outbox;
use crate::journal::{self, Journal, Recovery, SyncMode, Writer};
use crate::sketch::WindowedAnalytics;

/// The kind of handle in a processor's journal.
pub const KIND: &str = "processor";

/// Where and how a processor journals (its config's `journal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// The journal's directory.
    pub dir: PathBuf,
    /// When appends reach the disk.
    pub sync: SyncMode,
}

/// Record types.
mod record {
    pub(super) const EVENTS: u8 = 1;
    pub(super) const PUT: u8 = 2;
    pub(super) const ACK: u8 = 3;
    pub(super) const IDENTITY: u8 = 4;
}

/// `key=value;...` of the settings that give a processor's sketches their meaning.
pub fn fingerprint(config: &ProcessorConfig) -> String {
    let w = &config.window;
    format!(
        "window_minutes={};cms_depth={};cms_width={};topk_capacity={};minute_topk_capacity={};clock={};\
         history_days={}",
        w.window_minutes,
        w.cms_depth,
        w.cms_width,
        w.topk_capacity,
        w.minute_topk_capacity,
        match config.clock {
            Clock::Wall => "wall",
            Clock::EventTime => "event_time",
        },
        config.community.history_days
    )
}

/// Appends an encoded run ([`encode_run`]) to a worker's stream.
pub(crate) fn append_run(w: &mut Writer, payload: &[u8]) -> Result<()> {
    w.append(record::EVENTS, &[payload])
}

/// Encodes a run of events `(user, channel, guild, ts)` as one record's payload
/// into `out` (cleared first): the count, then each event.
pub(crate) fn encode_run<'a>(
    out: &mut Vec<u8>,
    events: impl Iterator<Item = (&'a [u8], &'a str, &'a str, i64)>,
) {
    out.clear();
    out.put_u32(0);
    let mut n = 0u32;
    for (user, channel, guild, ts) in events {
        out.put_i64(ts);
        out.put_bytes(user);
        out.put_str(channel);
        out.put_str(guild);
        n += 1;
    }
    out[..4].copy_from_slice(&n.to_le_bytes());
}

/// A batch in the publisher's outbox: the binding's bytes, and what the community
/// analytics had gathered for Redis when it was put ([`Community::drain`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OutboxEntry {
    pub(crate) blob: Vec<u8>,
    pub(crate) community: Vec<u8>,
}

impl OutboxEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_bytes(&self.blob);
        out.put_bytes(&self.community);
    }

    fn decode(g: &mut Get<'_>) -> Result<Self> {
        Ok(OutboxEntry {
            blob: g.bytes()?.to_vec(),
            community: g.bytes()?.to_vec(),
        })
    }
}

/// The publisher's outbox and the writer of its stream.
#[derive(Default)]
pub(crate) struct Control {
    pub(crate) outbox: Outbox<OutboxEntry>,
    pub(crate) log: Option<Writer>,
}

/// One change to the outbox, as logged.
pub(crate) enum OutboxChange<'a> {
    /// A batch queued under the next number.
    Put(&'a OutboxEntry),
    /// Batch `n` acknowledged; the baseline is now these bytes.
    Ack(u64, &'a [u8]),
    /// The publisher's identity.
    Identity(&'a str),
}

impl Control {
    /// Logs then applies `change`; on a logging error nothing changes. Returns
    /// the number of a `Put`. An `Ack` tells `community` what Redis now holds.
    pub(crate) fn apply(&mut self, change: OutboxChange<'_>, community: &Community) -> Result<u64> {
        if let Some(w) = &mut self.log {
            match change {
                OutboxChange::Put(entry) => {
                    let mut bytes =
                        Vec::with_capacity(entry.blob.len() + entry.community.len() + 8);
                    entry.encode(&mut bytes);
                    w.append(record::PUT, &[&bytes])?;
                }
                OutboxChange::Ack(n, base) => w.append(record::ACK, &[&n.to_le_bytes(), base])?,
                OutboxChange::Identity(id) => w.append(record::IDENTITY, &[id.as_bytes()])?,
            }
        }
        Ok(match change {
            OutboxChange::Put(entry) => self.outbox.push(entry.clone()),
            OutboxChange::Ack(n, base) => {
                ack(&mut self.outbox, n, community);
                self.outbox.set_baseline(base);
                n
            }
            OutboxChange::Identity(id) => {
                self.outbox.set_identity(id);
                0
            }
        })
    }
}

/// Acknowledges batch `n` (and older ones): their community parts are what
/// Redis holds now.
fn ack(outbox: &mut Outbox<OutboxEntry>, n: u64, community: &Community) {
    while let Some((m, entry)) = outbox.oldest() {
        if m > n {
            break;
        }
        // Our own bytes: they parse (a failure would only leave a delta to resend).
        let _ = community.ack(&entry.community);
        if !outbox.ack(m) {
            break;
        }
    }
}

/// A processor's open journal.
pub(crate) struct Durable {
    pub(crate) journal: Journal,
    /// Each worker's stream, locked (uncontended) under its shard's lock.
    pub(crate) logs: Box<[Mutex<Option<Writer>>]>,
    /// What opening found.
    pub(crate) recovery: Recovery,
    /// Events the restored sketches hold.
    pub(crate) restored_events: u64,
    /// Why the journal stopped being written, if it did (a full disk...).
    pub(crate) error: Mutex<Option<String>>,
}

/// What opening a processor's journal restores.
pub(crate) struct Restored {
    pub(crate) durable: Durable,
    pub(crate) shards: Vec<WindowedAnalytics>,
    pub(crate) event_clock: i64,
    pub(crate) control: Control,
    pub(crate) community: Community,
}

/// The checkpoint's payload: the event clock, every shard, the outbox, the
/// community analytics.
pub(crate) fn encode_checkpoint(
    shards: &[&WindowedAnalytics],
    event_clock: i64,
    outbox: &Outbox<OutboxEntry>,
    community: &Community,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_i64(event_clock);
    out.put_u64(shards.len() as u64);
    for shard in shards {
        shard.encode(&mut out);
    }
    outbox.encode(&mut out, OutboxEntry::encode);
    community.encode(&mut out);
    out
}

/// Opens (or creates) the journal of a processor of `config` with `lanes` workers'
/// streams, restores the sketches into `lanes` shards and replays the log.
pub(crate) fn open(config: &ProcessorConfig, jc: &JournalConfig, lanes: usize) -> Result<Restored> {
    let fingerprint = fingerprint(config);
    let window = &config.window;
    let fresh = || {
        (0..lanes)
            .map(|_| WindowedAnalytics::new(window))
            .collect::<Result<Vec<_>>>()
    };
    struct State {
        shards: Vec<WindowedAnalytics>,
        event_clock: i64,
        outbox: Outbox<OutboxEntry>,
        community: Community,
    }
    let stripes = config.community_stripes();
    let state = std::cell::RefCell::new(State {
        shards: fresh()?,
        event_clock: 0,
        outbox: Outbox::default(),
        community: Community::new(config.community, stripes)?,
    });
    let dir = jc.dir.as_path();
    let corrupt = |e: Error| Error::Corrupt(format!("journal {}: {e}", dir.display()));
    let (mut journal, recovery) = Journal::open(
        &journal::Options {
            dir,
            kind: KIND,
            fingerprint: &fingerprint,
            streams: lanes + 1,
            sync: jc.sync,
        },
        &mut |checkpoint| {
            let Some(bytes) = checkpoint else {
                return Ok(());
            };
            let mut st = state.borrow_mut();
            let mut g = Get::new(bytes, "processor checkpoint");
            st.event_clock = g.i64().map_err(corrupt)?;
            let n = g.count(1).map_err(corrupt)?;
            for i in 0..n {
                let shard = WindowedAnalytics::decode(window, &mut g).map_err(corrupt)?;
                // More shards than workers now: the extra ones merge into the first.
                if i < lanes {
                    st.shards[i] = shard;
                } else {
                    st.shards[0].merge_from(&shard)?;
                }
            }
            st.outbox = Outbox::decode(&mut g, OutboxEntry::decode).map_err(corrupt)?;
            st.community = Community::decode(config.community, &mut g).map_err(corrupt)?;
            g.finish().map_err(corrupt)
        },
        &mut |stream, kind, payload| {
            let mut st = state.borrow_mut();
            let mut g = Get::new(payload, "processor journal record");
            match kind {
                record::EVENTS => {
                    let n = g.u32()?;
                    let mut events = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        let ts = g.i64()?;
                        let user = g.bytes()?;
                        let channel = g.str()?;
                        let guild = g.str()?;
                        check_logged_event(ts, user, channel, guild)?;
                        events.push((user, channel, guild, ts));
                    }
                    g.finish()?;
                    let newest = events.iter().map(|e| e.3).max().unwrap_or(0);
                    st.event_clock = st.event_clock.max(newest);
                    // A worker's stream goes to its shard (or the first, when
                    // there are fewer workers now).
                    let lane = if stream < lanes { stream } else { 0 };
                    st.shards[lane].observe_run(events.iter().map(|e| (e.0, e.1, e.3)));
                    let mut scratch = crate::community::RunScratch::default();
                    st.community.observe_run(&mut scratch, events.len(), |i| {
                        crate::community::CommunityEvent {
                            user: events[i].0,
                            channel: events[i].1,
                            guild: events[i].2,
                            ts: events[i].3,
                        }
                    });
                }
                record::PUT => {
                    let entry = OutboxEntry::decode(&mut g)?;
                    g.finish()?;
                    // Its activations were taken from the pending ones when it
                    // was put (those of runs replayed later come back: resent,
                    // which Redis ignores).
                    st.community.forget(&entry.community)?;
                    st.outbox.push(entry);
                }
                record::ACK => {
                    let n = g.u64()?;
                    let State {
                        outbox, community, ..
                    } = &mut *st;
                    ack(outbox, n, community);
                    st.outbox.set_baseline(&payload[8..]);
                }
                record::IDENTITY => {
                    let id = std::str::from_utf8(payload)
                        .map_err(|_| Error::corrupt("a logged publisher id is not UTF-8"))?;
                    st.outbox.set_identity(id);
                }
                other => {
                    return Err(Error::corrupt(format!(
                        "processor journal: unknown record type {other}"
                    )));
                }
            }
            Ok(())
        },
    )?;
    let State {
        shards,
        event_clock,
        outbox,
        community,
    } = state.into_inner();
    let logs: Box<[Mutex<Option<Writer>>]> = (0..lanes)
        .map(|i| Mutex::new(journal.take_writer(i)))
        .collect();
    let control = Control {
        outbox,
        log: journal.take_writer(lanes),
    };
    let restored_events = shards.iter().map(WindowedAnalytics::events).sum();
    // Fold what was replayed into a checkpoint now: the old segments go.
    let positions: Vec<u64> = logs
        .iter()
        .map(|l| super::core::lock(l).as_ref().map_or(0, Writer::position))
        .chain(control.log.as_ref().map(Writer::position))
        .collect();
    let refs: Vec<&WindowedAnalytics> = shards.iter().collect();
    journal.checkpoint(
        &positions,
        &encode_checkpoint(&refs, event_clock, &control.outbox, &community),
    )?;
    Ok(Restored {
        durable: Durable {
            journal,
            logs,
            recovery,
            restored_events,
            error: Mutex::new(None),
        },
        shards,
        event_clock,
        control,
        community,
    })
}

/// A logged event is one the processor accepted: fields within their limits and
/// a timestamp within year 9999 (so the replay's day arithmetic stays in range).
fn check_logged_event(ts: i64, user: &[u8], channel: &str, guild: &str) -> Result<()> {
    use super::event::MAX_FIELD_BYTES;
    if !(0..=crate::leaderboard::MAX_TIMESTAMP).contains(&ts)
        || user.len() > MAX_FIELD_BYTES
        || channel.len() > MAX_FIELD_BYTES
        || guild.len() > MAX_FIELD_BYTES
    {
        return Err(Error::corrupt(
            "processor journal: an event no processor accepts",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_run_encodes_and_replays() {
        let mut out = Vec::new();
        let events = [(&b"u1"[..], "c1", "g", 60i64), (&b"u2"[..], "c2", "", 125)];
        encode_run(&mut out, events.iter().copied());
        let mut g = Get::new(&out, "t");
        assert_eq!(g.u32().unwrap(), 2);
        assert_eq!(
            (
                g.i64().unwrap(),
                g.bytes().unwrap(),
                g.str().unwrap(),
                g.str().unwrap()
            ),
            (60, &b"u1"[..], "c1", "g")
        );
    }
}
