"""engagehub.metrics: events through a real processor and updates to a real
leaderboard, then a scrape of the Prometheus text format (generate_latest, parsed
back): counters equal stats(), the histograms count the batches and their events."""

from __future__ import annotations

import threading

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

# Every field of stats() but the gauges is a counter.
PROCESSOR_COUNTERS = [f for f in eh.ProcessorStats._fields if f != "queue_len"]
LEADERBOARD_COUNTERS = [f for f in eh.LeaderboardStats._fields if f not in ("len", "heap_bytes", "landmark")]


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
