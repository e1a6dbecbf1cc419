"""engagehub.metrics: events through a real processor and updates to a real
leaderboard, then a scrape of the Prometheus text format (generate_latest, parsed
back): counters equal stats(), every value that goes down is a gauge, the
histograms count the batches and their events; the publish age of writers; the
read side's latency and errors (blocking and asyncio readers); the shared state
exported by one process; and prometheus_client's multiprocess mode (worker
processes' stats() summed by a MultiProcessCollector)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

prometheus_client = pytest.importorskip(
    "prometheus_client", reason="prometheus_client is not installed (pip install prometheus_client)"
)

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import engagehub as eh  # noqa: E402
from engagehub.errors import BatchFailed  # noqa: E402
from engagehub.metrics import instrument_callback, register  # noqa: E402

WAIT = 30.0
T0 = 1_700_000_000

# The values of stats() that go up and down; every other field only grows.
PROCESSOR_GAUGES = {"queue_len": "queue_length", "publish_pending_events": "publish_pending_events",
                    "journal_bytes": "journal_bytes", "journal_failing": "journal_failing"}
LEADERBOARD_GAUGES = {"len": "users", "heap_bytes": "heap_bytes", "landmark": "landmark_timestamp_seconds",
                      "pending": "pending_changes", "publish_waiting": "publish_waiting_batches",
                      "journal_bytes": "journal_bytes", "journal_failing": "journal_failing"}
PROCESSOR_COUNTERS = [f for f in eh.ProcessorStats._fields if f not in PROCESSOR_GAUGES]
LEADERBOARD_COUNTERS = [f for f in eh.LeaderboardStats._fields if f not in LEADERBOARD_GAUGES]


def types(registry: CollectorRegistry) -> dict:
    """{family name: its type} from the text format (a counter's name without _total)."""
    return {family.name: family.type for family in text_string_to_metric_families(generate_latest(registry).decode())}


def scrape(registry: CollectorRegistry) -> dict:
    """{(sample name, frozenset of labels): value} from the text format."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_scrape_matches_stats_and_the_histograms_count_delivered_batches():
    registry = CollectorRegistry()
    delivered: list = []
    failed_once = threading.Event()

    def sink(batch):
        if not failed_once.is_set():
            failed_once.set()
            raise BatchFailed("first attempt fails")
        delivered.extend(batch)

    processor = eh.EventStreamProcessor(1024, 1, 10, 20, max_retries=3, retry_backoff_ms=1)
    board = eh.Leaderboard(decay_factor=0.95, max_users=3)
    collector = register(processor=processor, leaderboard=board, registry=registry, labels={"shard": "0"})
    processor.set_flush_callback(instrument_callback(sink, registry=registry, labels={"shard": "0"}))

    accepted = processor.push_many([("message", f"u{i}", f"c{i % 4}", T0 + i) for i in range(95)])
    for i in range(5):
        board.update_user(f"u{i}", 10.0 + i, T0)
    processor.flush_now(timeout=WAIT)

    stats, board_stats = processor.stats(), board.stats()
    samples = scrape(registry)
    shard = frozenset({("shard", "0")})
    for field in PROCESSOR_COUNTERS:
        assert samples[(f"engagehub_processor_{field}_total", shard)] == getattr(stats, field), field
    assert samples[("engagehub_processor_queue_length", shard)] == stats.queue_len == 0
    kinds = types(registry)
    for field, name in PROCESSOR_GAUGES.items():
        assert samples[(f"engagehub_processor_{name}", shard)] == getattr(stats, field), field
        assert kinds[f"engagehub_processor_{name}"] == "gauge", field
    for field, name in LEADERBOARD_GAUGES.items():
        assert samples[(f"engagehub_leaderboard_{name}", shard)] == getattr(board_stats, field), field
        assert kinds[f"engagehub_leaderboard_{name}"] == "gauge", field
    assert {kinds[f"engagehub_processor_{f}"] for f in PROCESSOR_COUNTERS} == {"counter"}
    assert {kinds[f"engagehub_leaderboard_{f}"] for f in LEADERBOARD_COUNTERS} == {"counter"}
    # The series issue 21 found typed as counters are gone.
    for wrong in ("processor_publish_pending_events_total", "leaderboard_pending_total",
                  "leaderboard_publish_waiting_total", "processor_journal_bytes_total"):
        assert not any(name == f"engagehub_{wrong}" for name, _ in samples), wrong
    # No redis=: no publish age.
    assert not any(name.endswith("publish_age_seconds") for name, _ in samples)
    assert stats.delivered == accepted == len(delivered) == 95
    assert stats.failures == stats.retries == 1

    assert {"evicted", "refused", "rebases"} <= set(LEADERBOARD_COUNTERS)
    assert len(PROCESSOR_COUNTERS) >= 11
    for field in LEADERBOARD_COUNTERS:
        assert samples[(f"engagehub_leaderboard_{field}_total", shard)] == getattr(board_stats, field), field
    assert samples[("engagehub_leaderboard_users", shard)] == board_stats.len == 3
    assert samples[("engagehub_leaderboard_heap_bytes", shard)] == board_stats.heap_bytes > 0
    assert samples[("engagehub_leaderboard_landmark_timestamp_seconds", shard)] == board_stats.landmark
    assert board_stats.evicted == 2

    assert samples[("engagehub_flush_batch_events_count", shard)] == stats.batches
    assert samples[("engagehub_flush_batch_events_sum", shard)] == stats.delivered
    assert samples[("engagehub_flush_batch_events_bucket", shard | {("le", "+Inf")})] == stats.batches
    ok, error = shard | {("outcome", "ok")}, shard | {("outcome", "error")}
    assert samples[("engagehub_flush_duration_seconds_count", ok)] == stats.batches
    assert samples[("engagehub_flush_duration_seconds_count", error)] == stats.failures
    assert samples[("engagehub_flush_duration_seconds_sum", ok)] > 0

    # A closed processor is skipped (not an error); remove() stops exporting it.
    processor.close()
    samples = scrape(registry)
    assert ("engagehub_processor_pushed_total", shard) not in samples
    assert ("engagehub_leaderboard_users", shard) in samples
    assert collector.remove(processor) and not collector.remove(processor)
    board.close()


def test_several_sources_need_distinct_labels_with_the_same_names():
    registry = CollectorRegistry()
    weekly, monthly = eh.Leaderboard(), eh.Leaderboard()
    weekly.update_user("ann", 5.0, T0)
    collector = register(leaderboard=weekly, registry=registry, labels={"board": "weekly"})
    assert register(leaderboard=monthly, registry=registry, labels={"board": "monthly"}) is collector
    with pytest.raises(ValueError, match="already registered"):
        register(leaderboard=monthly, registry=registry, labels={"board": "monthly"})
    with pytest.raises(ValueError, match="same label names"):
        register(leaderboard=monthly, registry=registry, labels={"period": "m"})
    with pytest.raises(TypeError, match="needs a processor, a leaderboard or both"):
        register(registry=registry)
    samples = scrape(registry)
    assert samples[("engagehub_leaderboard_users", frozenset({("board", "weekly")}))] == 1
    assert samples[("engagehub_leaderboard_users", frozenset({("board", "monthly")}))] == 0
    # Another namespace is another collector; the same names clash on one registry.
    register(leaderboard=weekly, registry=registry, namespace="bot")
    assert ("bot_leaderboard_users", frozenset()) in scrape(registry)
    weekly.close()
    monthly.close()


def test_instrumented_callback_keeps_failures_failures():
    registry = CollectorRegistry()

    def broken(batch):
        raise BatchFailed("always")

    wrapped = instrument_callback(broken, registry=registry)
    assert wrapped.__wrapped__ is broken
    with eh.EventStreamProcessor(64, 1, 10, 20, max_retries=1, retry_backoff_ms=1) as processor:
        processor.set_flush_callback(wrapped)
        processor.push_event("message", "u", "c", T0)
        processor.flush_now(timeout=WAIT)
        stats = processor.stats()
    assert (stats.batches, stats.failures, stats.dead_letter_batches) == (0, 2, 1)
    samples = scrape(registry)
    assert samples[("engagehub_flush_duration_seconds_count", frozenset({("outcome", "error")}))] == 2
    assert samples[("engagehub_flush_duration_seconds_count", frozenset({("outcome", "ok")}))] == 0
    assert samples[("engagehub_flush_batch_events_count", frozenset())] == 0
    with pytest.raises(ValueError, match="same label names"):
        instrument_callback(broken, registry=registry, labels={"shard": "1"})
    with pytest.raises(ValueError, match="used by engagehub"):
        instrument_callback(broken, registry=CollectorRegistry(), labels={"outcome": "x"})


def test_every_field_of_stats_is_classified_as_a_counter_or_a_gauge():
    from engagehub.metrics import unclassified

    assert unclassified() == {"processor": [], "leaderboard": []}


# -- publish freshness -------------------------------------------------------------------


def test_publish_age_is_seconds_since_redis_last_held_everything(tmp_path):
    """A writer whose Redis is absent: its age counts from its start and goes on
    growing (a failed publish does not reset it); the age is computed at scrape."""
    redis = pytest.importorskip("redis", reason="redis-py is not installed")
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(unix_socket_path=str(tmp_path / "nobody.sock"), retry=Retry(NoBackoff(), 0))
    registry = CollectorRegistry()
    board = eh.Leaderboard(redis=client, key="age", publish_interval_ms=3_600_000, close_timeout=0)
    processor = eh.EventStreamProcessor(num_threads=0, redis=client, namespace="age",
                                        publish_interval_ms=3_600_000, publish_timeout=0)
    try:
        register(processor=processor, leaderboard=board, registry=registry)
        publisher = board._publisher
        started = publisher.counters.current_at
        board.update_user("u", 1.0)
        assert not board.publish_now(0.2)  # Redis is absent: the batch waits
        assert publisher.counters.current_at == started and publisher.counters.failures >= 1
        publisher.counters.current_at -= 100  # as if 100 s went by
        processor._publisher.counters.current_at -= 40
        samples = scrape(registry)
        assert 100 <= samples[("engagehub_leaderboard_publish_age_seconds", frozenset())] < 130
        assert 40 <= samples[("engagehub_processor_publish_age_seconds", frozenset())] < 70
        assert samples[("engagehub_leaderboard_pending_changes", frozenset())] == 0  # drained into a batch
        assert samples[("engagehub_leaderboard_publish_waiting_batches", frozenset())] == 1
        assert types(registry)["engagehub_leaderboard_publish_age_seconds"] == "gauge"
    finally:
        board.close()
        processor.close()


def test_a_cycle_that_leaves_nothing_waiting_makes_the_writer_current():
    """An idle writer is current (nothing to send); one whose batch is
    acknowledged is current from the start of that cycle."""
    from engagehub.shared._publisher import Publisher

    class Source:
        label, unit, script = "test", "things", "return 1"

        def __init__(self):
            self.batches = []

        def identity(self, proposed):
            return proposed

        def pub_key(self, publisher_id):
            return "pub"

        def freeze(self, publisher):
            out, self.batches = self.batches, []
            return out

        def applied(self, batch, reply):
            return True

        def after_cycle(self, publisher):
            return False

        def is_open(self):
            return True

        def pending(self):
            return 0

        def reset_after_fork(self):
            pass

    class Client:
        down = False

        def config_get(self, name):
            return {"maxmemory-policy": "noeviction"}

        def script_load(self, script):
            return "sha"

        def evalsha(self, *args):
            if self.down:
                raise ConnectionError("down (test)")
            return 1

        def delete(self, key):
            return 1

    from engagehub.shared._publisher import Batch

    source, client = Source(), Client()
    publisher = Publisher(source, client, interval_ms=3_600_000)
    try:
        publisher.counters.current_at = 0.0
        before = time.time()
        assert publisher.publish(10)  # idle: nothing to send
        assert publisher.counters.current_at >= before
        client.down = True
        source.batches = [Batch(1, [], [])]
        publisher.counters.current_at = 1.0
        assert not publisher.publish(0.2)  # the batch waits
        assert publisher.counters.current_at == 1.0
        client.down = False
        before = time.time()
        assert publisher.publish(10)
        assert publisher.counters.current_at >= before and publisher.counters.batches == 1
    finally:
        publisher.close(1)


# -- the read side -------------------------------------------------------------------------


class StubRedis:
    """A blocking client answering from a dict (GET, PFCOUNT, ZCARD, CONFIG GET);
    a value that is an exception is raised."""

    def __init__(self, values):
        self.values = values

    def _answer(self, key):
        value = self.values.get(key)
        if isinstance(value, BaseException):
            raise value
        return value

    def get(self, key):
        return self._answer(key)

    def pfcount(self, *keys):
        return self._answer(keys[0])

    def zcard(self, key):
        return self._answer(key)

    def config_get(self, name):
        return {"maxmemory-policy": "noeviction"}


class AsyncStubRedis(StubRedis):
    async def config_get(self, name):
        return {"maxmemory-policy": "noeviction"}

    def get(self, key):
        async def answer():
            return self._answer(key)

        return answer()


def test_reader_queries_are_timed_and_their_errors_counted_by_class():
    redis = pytest.importorskip("redis", reason="redis-py is not installed")
    from engagehub.metrics import instrument_readers
    from engagehub.shared import AsyncSharedAnalytics, SharedAnalytics, SharedLeaderboard

    values = {"{ns}:events": b"42", "{ns}:dead_lettered": redis.ConnectionError("down (test)"),
              "{ns}:clock": b"noon", "{lb}:z": 7}
    registry = CollectorRegistry()
    metrics = instrument_readers(registry=registry)
    assert instrument_readers(registry=registry) is metrics
    try:
        analytics = SharedAnalytics(StubRedis(values), "ns")
        board = SharedLeaderboard(StubRedis(values), "lb")
        assert analytics.total_events_processed() == 42 and board.size() == 7 and len(board) == 7
        with pytest.raises(redis.ConnectionError):
            analytics.events_dead_lettered()
        with pytest.raises(eh.Corrupt, match="noon"):
            analytics.now()
        with pytest.raises(eh.InvalidArgument):
            analytics.top_channels(-1)

        async def awaited():
            shared = AsyncSharedAnalytics(AsyncStubRedis(values), "ns")
            assert await shared.total_events_processed() == 42
            with pytest.raises(redis.ConnectionError):
                await shared.events_dead_lettered()

        asyncio.run(awaited())
        samples = scrape(registry)

        def count(reader, query):
            key = frozenset({("reader", reader), ("query", query)})
            return samples[("engagehub_shared_query_duration_seconds_count", key)]

        def errors(reader, query, error):
            key = frozenset({("reader", reader), ("query", query), ("error", error)})
            return samples.get(("engagehub_shared_query_errors_total", key), 0)

        assert count("analytics", "total_events_processed") == 2 and count("analytics", "events_dead_lettered") == 2
        assert count("leaderboard", "size") == 2  # size() and len()
        assert errors("analytics", "events_dead_lettered", "ConnectionError") == 2
        assert errors("analytics", "now", "Corrupt") == 1 and errors("analytics", "top_channels", "InvalidArgument") == 1
        assert errors("analytics", "total_events_processed", "ConnectionError") == 0
        assert types(registry)["engagehub_shared_query_duration_seconds"] == "histogram"
    finally:
        metrics.remove()
    analytics.total_events_processed()  # not observed any more
    assert scrape(registry)[("engagehub_shared_query_duration_seconds_count", frozenset(
        {("reader", "analytics"), ("query", "total_events_processed")}))] == 2


def test_the_shared_state_is_exported_by_one_process_and_a_failing_reader_left_out():
    redis = pytest.importorskip("redis", reason="redis-py is not installed")
    from engagehub.metrics import register_shared
    from engagehub.shared import SharedAnalytics, SharedLeaderboard

    now = int(time.time())
    up = StubRedis({"{guild}:events": b"900", "{guild}:dead_lettered": b"300", "{guild}:clock": None,
                    f"{{guild}}:uu:{now // 60 * 60 - 3540}": 77, "{lb}:z": 12})
    down = StubRedis({"{other}:events": redis.ConnectionError("down (test)")})
    registry = CollectorRegistry()
    collector = register_shared(SharedAnalytics(up, "guild", check_eviction=False), SharedLeaderboard(up, "lb"),
                                SharedAnalytics(down, "other", check_eviction=False), registry=registry)
    assert register_shared(registry=registry) is collector
    with pytest.raises(TypeError, match="SharedAnalytics"):
        register_shared(object(), registry=registry)
    samples = scrape(registry)
    guild = frozenset({("namespace", "guild")})
    assert samples[("engagehub_shared_events_total", guild)] == 900
    assert samples[("engagehub_shared_events_dead_lettered_total", guild)] == 300
    assert samples[("engagehub_shared_unique_users_last_hour", guild)] == 77
    assert samples[("engagehub_shared_leaderboard_users", frozenset({("board", "lb")}))] == 12
    assert not any(("namespace", "other") in labels for _, labels in samples)


# -- multiprocess mode ---------------------------------------------------------------------

WORKER = """
import sys
from engagehub import EventStreamProcessor
from engagehub.metrics import export_multiprocess, instrument_readers
from engagehub.shared import SharedLeaderboard

n = int(sys.argv[1])
processor = EventStreamProcessor(num_threads=0, buffer_size=64)
exporter = export_multiprocess(processor=processor, interval=3600)
instrument_readers()


class Stub:
    def zcard(self, key):
        return 5


for _ in range(n):
    SharedLeaderboard(Stub(), "lb").size()
processor.push_many([("m", f"u{i}", "c", 1_700_000_000) for i in range(n)])
processor.push_many([("m", "late", "c", 1_700_000_000)] * 100)  # the ring is full: dropped
exporter.sample()
processor.flush_now()
exporter.stop()  # a last copy: the flushed events
print(processor.stats().processed, processor.stats().dropped)
"""


def test_multiprocess_mode_sums_the_workers_stats_and_queries(tmp_path):
    """Two worker processes under PROMETHEUS_MULTIPROC_DIR copy their stats() and
    time their queries; a MultiProcessCollector (the /metrics view) sums them, and
    a dead worker's live gauges go once it is marked dead."""
    import os
    import subprocess
    import sys

    from prometheus_client import multiprocess

    folder = tmp_path / "metrics"
    folder.mkdir()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(n)], env=env, stdout=subprocess.PIPE, text=True)
               for n in (10, 30)]
    outputs = [w.communicate(timeout=WAIT)[0].split() for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert outputs == [["64", "46"], ["64", "66"]]  # (processed, dropped) of each: the ring holds 64
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    samples = scrape(registry)
    assert samples[("engagehub_processor_processed_total", frozenset())] == 128
    assert samples[("engagehub_processor_dropped_total", frozenset())] == 112
    assert samples[("engagehub_processor_pushed_total", frozenset())] == 240
    assert samples[("engagehub_shared_query_duration_seconds_count",
                    frozenset({("reader", "leaderboard"), ("query", "size")}))] == 40
    kinds = types(registry)
    assert kinds["engagehub_processor_queue_length"] == "gauge"
    assert kinds["engagehub_processor_processed"] == "counter"
    # livesum gauges: one series, the sum over the workers not marked dead.
    assert samples[("engagehub_processor_queue_length", frozenset())] == 0
    multiprocess.mark_process_dead(workers[0].pid, path=str(folder))
    multiprocess.mark_process_dead(workers[1].pid, path=str(folder))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    samples = scrape(registry)
    assert ("engagehub_processor_queue_length", frozenset()) not in samples
    assert samples[("engagehub_processor_processed_total", frozenset())] == 128  # counters stay
