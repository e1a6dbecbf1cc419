"""EventStreamProcessor: the drop-in API, exactly-once delivery from many threads,
failing callbacks, close/GC with queued events, and the sketch queries.

Waits are on conditions with timeouts (``flush_now``, ``threading.Event.wait``),
never bare sleeps."""

from __future__ import annotations

import gc
import threading
import time

import pytest

import engagehub as eh
from engagehub.processor import EventColumns

WAIT = 30.0


def test_drop_in_example_from_the_cpp_extension():
    collected: list = []
    p = eh.EventStreamProcessor(buffer_size=128, num_threads=1, batch_size=10, flush_interval_ms=100)
    p.set_flush_callback(lambda e: collected.extend(e))
    for i in range(50):
        assert p.push_event("message", f"user{i}", "channel1", 1000 + i)
    p.flush_now()
    assert len(collected) == 50
    assert collected[0] == {"type": "message", "user_id": "user0", "channel_id": "channel1", "timestamp": 1000}
    assert [e["timestamp"] for e in collected] == list(range(1000, 1050)), "one worker keeps push order"
    assert p.total_events_processed() == 50
    assert p.events_dropped() == 0
    p.close()


def test_pushes_from_four_threads_are_delivered_exactly_once():
    seen: list = []
    lock = threading.Lock()

    def sink(batch):
        with lock:
            seen.extend(batch.user_ids)

    per_thread = 20_000
    with eh.EventStreamProcessor(4096, 2, 256, 50, overflow="block", block_timeout_ms=30_000) as p:
        p.set_flush_callback(sink, batch_format="columns")

        def produce(t: int) -> None:
            for i in range(per_thread):
                assert p.push_event("message", f"{t}-{i}", f"c{i % 10}", 0)

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p.flush_now(timeout=WAIT)
        stats = p.stats()
    assert len(seen) == 4 * per_thread
    assert len(set(seen)) == 4 * per_thread
    assert stats.delivered == stats.accepted == 4 * per_thread


def test_push_many_and_the_batch_forms():
    batches: list = []
    with eh.EventStreamProcessor(1024, 1, 1000, 50) as p:
        p.set_flush_callback(batches.append, batch_format="tuples")
        events = [("reaction", f"u{i}", "général", 1_700_000_000 + i) for i in range(300)]
        assert p.push_many(events) == 300
        assert p.push_many([("join", "a", "b")]) == 1
        assert p.push_many([{"type": "voice", "user_id": "q", "channel_id": "v", "timestamp": 7}]) == 1
        assert p.push_many([]) == 0
        p.flush_now()
        flat = [e for b in batches for e in b]
        assert flat[:300] == events
        assert flat[300][:3] == ("join", "a", "b") and flat[300][3] > 1_700_000_000
        assert flat[301] == ("voice", "q", "v", 7)

        got: list = []
        p.set_flush_callback(got.append, batch_format="columns")
        # A NUL inside an id takes the per-event path and still round-trips.
        assert p.push_many([("k", "nul\0id", "c", 9), ("k", "plain", "c", 9)]) == 2
        p.push_event("k", "with-payload", "c", 9, payload=b"\x00\xffbin")
        p.flush_now()
        assert all(isinstance(g, EventColumns) for g in got)
        user_ids = [u for g in got for u in g.user_ids]
        payloads = [x for g in got for x in (g.payloads or [b""] * len(g))]
        assert user_ids == ["nul\0id", "plain", "with-payload"]
        assert payloads[2] == b"\x00\xffbin"
        # len() counts events; the namedtuple helpers still work (_replace).
        batch = got[-1]
        assert len(batch) == len(batch.types)
        renamed = batch._replace(types=["x"] * len(batch))
        assert renamed.types == ["x"] * len(batch) and renamed.user_ids == batch.user_ids
        assert renamed.guild_ids == batch.guild_ids


def test_push_many_mixed_rows_and_invalid_events():
    batches: list = []
    with eh.EventStreamProcessor(1024, 1, 1000, 50) as p:
        p.set_flush_callback(batches.append, batch_format="tuples")
        # 3- and 4-tuples mixed, a float and a None timestamp, bytes ids: all
        # accepted in order through the general path.
        rows = [("m", "a", "c", 5), ("m", "b", "c"), ("m", "c", "c", 6.9), ("m", b"d", "c", None)]
        assert p.push_many(rows) == 4
        # An over-long field is refused with nothing pushed.
        with pytest.raises(eh.InvalidArgument, match="1024"):
            p.push_many([("m", "ok", "c", 1), ("m", "x" * 2000, "c", 1)])
        # A 2-tuple is not an event.
        with pytest.raises(eh.InvalidArgument, match="3-, 4- or 5-tuple"):
            p.push_many([("m", "a")])
        p.flush_now()
        flat = [e for b in batches for e in b]
        assert [e[1] for e in flat] == ["a", "b", "c", "d"]
        assert flat[0][3] == 5 and flat[2][3] == 6 and flat[1][3] > 1_700_000_000
        assert p.stats().accepted == 4


def test_a_raising_callback_is_retried_then_dead_lettered_and_reported():
    calls = []
    dead: list = []
    done = threading.Event()

    def flaky(batch):
        calls.append(len(batch))
        raise RuntimeError("database is down")

    def on_dead(events, error):
        dead.extend(events)
        assert "database is down" in error
        done.set()

    with eh.EventStreamProcessor(64, 1, 10, 20, max_retries=2, retry_backoff_ms=1) as p:
        p.set_flush_callback(flaky)
        p.set_dead_letter_callback(on_dead)
        for i in range(10):
            p.push_event("message", str(i), "c", 5)
        p.flush_now(timeout=WAIT)
        assert done.wait(WAIT)
        stats = p.stats()
        assert isinstance(p.last_callback_error, RuntimeError)
        assert p.callback_errors == 3
    assert calls == [10, 10, 10]
    assert [e["user_id"] for e in dead] == [str(i) for i in range(10)]
    assert (stats.failures, stats.retries, stats.dead_lettered, stats.delivered) == (3, 2, 10, 0)


def test_dead_lettered_events_are_still_counted_by_the_analytics():
    """Sketching happens before the flush callback: during a database outage the
    analytics count events the database never got. events_dead_lettered() is the
    number a dashboard shows beside them."""

    def database_down(batch):
        raise RuntimeError("database is down")

    with eh.EventStreamProcessor(64, 0, 10, clock="event_time", max_retries=1, retry_backoff_ms=1) as p:
        p.set_flush_callback(database_down)
        for i in range(12):
            p.push_event("message", f"user{i % 3}", f"channel{i % 2}", 1_700_000_000 + i)
        p.flush_now(timeout=WAIT)
        assert p.total_events_processed() == 12
        assert p.get_unique_users_last_hour() == 3
        assert p.get_top_channels(2) == [("channel0", 6), ("channel1", 6)]
        assert p.events_dead_lettered() == 12 == p.stats().dead_lettered
        assert p.stats().delivered == 0


def test_a_callback_failing_once_is_delivered_once():
    attempts = []
    delivered: list = []

    def once(batch):
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("transient")
        delivered.extend(batch)

    with eh.EventStreamProcessor(64, 1, 100, 20, retry_backoff_ms=1) as p:
        p.set_flush_callback(once)
        for i in range(5):
            p.push_event("m", str(i), "c", 5)
        p.flush_now(timeout=WAIT)
        assert p.stats().retries == 1
    assert [e["user_id"] for e in delivered] == ["0", "1", "2", "3", "4"]


def test_no_callback_discards_and_flush_returns():
    p = eh.EventStreamProcessor(1024, 1, 100, 1000, overflow="block", block_timeout_ms=30_000)
    for i in range(50_000):
        p.push_event("message", str(i % 1000), "c", 0)
    p.flush_now(timeout=WAIT)
    s = p.stats()
    assert s.discarded == 50_000 and s.queue_len == 0
    p.close()


def test_close_with_a_slow_callback_delivers_everything_without_hanging():
    delivered: list = []

    def slow(batch):
        time.sleep(0.002)
        delivered.extend(batch)

    p = eh.EventStreamProcessor(4096, 2, 50, 1000)
    p.set_flush_callback(slow)
    for i in range(2000):
        assert p.push_event("message", str(i), "c", 0)
    p.close()  # the GIL is released while the workers drain through `slow`
    assert len(delivered) == 2000
    with pytest.raises(ValueError):
        p.push_event("message", "late", "c", 0)
    p.close()


def test_garbage_collection_with_queued_events_and_slow_callback_50_cycles():
    total = [0]

    def slow(batch):
        time.sleep(0.001)
        total[0] += len(batch)

    for cycle in range(50):
        p = eh.EventStreamProcessor(1024, 2, 10, 1000)
        p.set_flush_callback(slow)
        for i in range(40):
            p.push_event("message", str(i), "c", 0)
        if cycle % 2:
            p.flush_now(timeout=WAIT)
        del p  # freed by the garbage collector with events still queued
        gc.collect()
    assert total[0] == 50 * 40


def test_flush_from_inside_a_callback_is_refused():
    outcome: list = []
    holder: dict = {}

    def cb(batch):
        try:
            holder["p"].flush_now()
        except eh.WouldDeadlock as exc:
            outcome.append(exc)

    with eh.EventStreamProcessor(64, 1, 1, 10) as p:
        holder["p"] = p
        p.set_flush_callback(cb)
        p.push_event("m", "u", "c", 0)
        p.flush_now(timeout=WAIT)
    holder.clear()
    assert len(outcome) == 1


def test_full_ring_returns_false_and_counts_drops():
    gate = threading.Event()
    entered = threading.Event()

    def stuck(batch):
        entered.set()
        gate.wait(WAIT)

    with eh.EventStreamProcessor(4, 1, 1, 10) as p:
        p.set_flush_callback(stuck)
        assert p.push_event("m", "0", "c", 0)
        assert entered.wait(WAIT)
        results = [p.push_event("m", str(i), "c", 0) for i in range(1, 7)]
        assert results == [True] * 4 + [False] * 2
        assert p.events_dropped() == 2
        gate.set()


def test_bad_arguments_raise_and_push_nothing():
    with pytest.raises(eh.InvalidArgument):
        eh.EventStreamProcessor(buffer_size=0)
    with pytest.raises(eh.InvalidArgument):
        eh.EventStreamProcessor(buffer_size=2**40)
    with pytest.raises(eh.InvalidArgument):
        eh.EventStreamProcessor(clock="lunar")
    with eh.EventStreamProcessor(64, 1, 10, 10) as p:
        with pytest.raises(eh.InvalidArgument):
            p.push_event("m", "x" * 2000, "c", 0)
        with pytest.raises(eh.InvalidArgument):
            p.push_event("m", b"\xff\xfe", "c", 0)
        with pytest.raises(TypeError):
            p.push_event("m", 42, "c", 0)  # type: ignore[arg-type]
        assert p.stats().pushed == 0


def test_event_time_clock_replay_counts_unique_users_and_channels():
    base = 1_700_000_000
    with eh.EventStreamProcessor(4096, 2, 100, 50, clock="event_time") as p:
        # Two hours ago: 80 users; in the last hour: 60 users over 3 channels.
        p.push_many([("message", f"old{i}", "lobby", base - 7200) for i in range(80)])
        p.push_many([("message", f"new{i}", f"ch{i % 3}", base - 30 * i) for i in range(60)])
        p.push_many([("message", "new0", "ch0", base)] * 40)
        p.flush_now(timeout=WAIT)
        assert p.now() == base
        assert abs(p.get_unique_users_last_hour() - 60) <= 1
        assert abs(p.unique_users(None) - 140) <= 2
        assert p.get_top_channels(1) == [("lobby", 80)], "all time: lobby 80, ch0 60"
        top = p.top_channels(3, window_secs=3600)
        assert top[0] == ("ch0", 60) and {c for c, _ in top} == {"ch0", "ch1", "ch2"}
        assert p.channel_count("lobby") >= 80
        merged = p.users_sketch(3600)
        other = eh.HyperLogLog()
        for i in range(60, 100):
            other.add(f"new{i}")
        merged.merge(other)
        assert abs(merged.count() - 100) <= 2
