//! Pipeline stress through the public API: several producer threads push through
//! a processor with several workers (a small ring, so it fills and pushes are
//! retried), a flush in the middle and one at the end, then shutdown; every
//! accepted event is delivered exactly once. `make asan-test` and `make
//! tsan-test` run this under AddressSanitizer and ThreadSanitizer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use engagehub::Error;
use engagehub::pipeline::{Batch, EventIn, FlushCallback, Processor, ProcessorConfig};

const PRODUCERS: u64 = 4;
/// Enough to wrap the ring many times; small enough for a sanitizer run.
const PER_PRODUCER: u64 = 20_000;
const WAIT: Duration = Duration::from_secs(60);

/// Records each event's sequence number (its user id) and its batch sizes.
#[derive(Default)]
struct Sink {
    seen: Mutex<Vec<u64>>,
    batches: AtomicU64,
}

impl FlushCallback for Sink {
    fn on_flush(&self, batch: &mut Batch) -> Result<(), String> {
        let ids: Vec<u64> = batch
            .iter()
            .map(|e| e.user_id.parse::<u64>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        self.seen
            .lock()
            .map_err(|_| "poisoned".to_owned())?
            .extend(ids);
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn push(p: &Processor, seq: u64, channel: &str) {
    let user = seq.to_string();
    let ev = EventIn {
        kind: "message",
        user_id: &user,
        channel_id: channel,
        guild_id: "",
        timestamp: 1_767_225_600 + (seq % 3600) as i64,
        payload: b"stress",
    };
    loop {
        match p.push(&ev) {
            Ok(()) => return,
            Err(Error::QueueFull) => std::thread::yield_now(),
            Err(e) => panic!("push {seq}: {e}"),
        }
    }
}

#[test]
fn producers_flush_and_shutdown_deliver_every_event_exactly_once() {
    let processor = Arc::new(
        Processor::new(ProcessorConfig {
            capacity: 256,
            workers: 3,
            batch_size: 64,
            flush_interval: Duration::from_millis(5),
            retry_backoff: Duration::from_millis(1),
            ..ProcessorConfig::default()
        })
        .expect("valid config"),
    );
    let sink = Arc::new(Sink::default());
    processor
        .set_flush_callback(Some(sink.clone()))
        .expect("callback set");

    // Half the events before a flush that races with nothing, half while another
    // thread flushes repeatedly.
    let halfway = Arc::new(Barrier::new(PRODUCERS as usize + 1));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let (p, halfway) = (processor.clone(), halfway.clone());
            std::thread::spawn(move || {
                let channel = format!("channel-{t}");
                let first = t * PER_PRODUCER;
                for seq in first..first + PER_PRODUCER / 2 {
                    push(&p, seq, &channel);
                }
                halfway.wait();
                for seq in first + PER_PRODUCER / 2..first + PER_PRODUCER {
                    push(&p, seq, &channel);
                }
            })
        })
        .collect();
    halfway.wait();
    processor.flush(WAIT).expect("flush at halfway");
    let at_halfway = processor.stats().expect("stats");
    assert!(at_halfway.delivered >= PRODUCERS * PER_PRODUCER / 2);
    let flusher = {
        let p = processor.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                p.flush(WAIT).expect("flush while producers push");
            }
        })
    };
    for t in producers {
        t.join().expect("producer");
    }
    flusher.join().expect("flusher");
    processor.flush(WAIT).expect("final flush");
    // Counters and queries answer until close; after it every call is refused.
    let stats = processor.stats().expect("stats");
    assert_eq!(
        processor.channel_count("channel-0").expect("channel count"),
        PER_PRODUCER
    );
    processor.close().expect("close");
    assert!(processor.is_closed());

    let mut seen = sink.seen.lock().expect("sink").clone();
    let total = PRODUCERS * PER_PRODUCER;
    assert_eq!(seen.len() as u64, total, "events delivered");
    let unique: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len() as u64, total, "an event was delivered twice");
    seen.sort_unstable();
    assert_eq!(seen, (0..total).collect::<Vec<_>>());

    assert_eq!(stats.accepted, total);
    assert_eq!(stats.processed, total);
    assert_eq!(stats.delivered, total);
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(stats.batches, sink.batches.load(Ordering::Relaxed));
    assert_eq!(stats.queue_len, 0);
}
