"""Shared analytics through Redis: writers publish, any process reads.

Several writer processes (spawned) each feed an ``EventStreamProcessor(redis=...)``
a share of one hour of events; ``SharedAnalytics`` must then answer exactly what
one in-process processor fed all the events answers (register-identical HLLs,
exact channel counts below the summaries' capacity, the same event total), also
when Redis is stopped and restarted while the writers run, and when a reply is
lost after the script ran.

Redis: ``$ENGAGEHUB_TEST_REDIS_URL`` if set (the fault tests, which stop and
restart the server, are then skipped), else a ``redis-server`` (``$REDIS_SERVER``
or on the PATH) started here on a unix socket in a temporary directory, AOF on
(redis_server.py). Without either, or without redis-py, the module is skipped.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from engagehub import EventStreamProcessor, InvalidArgument
from engagehub.shared import SharedAnalytics
from redis_server import LosingReplies, RedisServer, require_server, wait_until

try:
    import redis
except ImportError:  # pragma: no cover - depends on the environment
    redis = None

WRITERS = 3
HOUR0 = 1_764_633_600  # 2025-12-02 00:00 UTC, a minute boundary
Event = Tuple[str, str, str, int]


def events(n: int = 9000, seed: int = 12) -> List[Event]:
    """One hour of events over 1500 users and 40 channels, skewed so the top
    channels are well apart, in time order as a bot would push them."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = HOUR0 + i * 3600 // n
        channel = f"c{min(int(rng.expovariate(0.12)), 39)}"
        out.append(("message", f"u{rng.randrange(1500)}", channel, ts))
    return out


def dashboard(source: Any) -> Dict[str, Any]:
    """The guide's dashboard view (cpp-extension-django-integration.md, section 3),
    analytics half, against a processor or a SharedAnalytics alike."""
    return {
        "unique_active_users_last_hour": source.get_unique_users_last_hour(),
        "top_channels": [{"channel_id": ch[0], "message_count": ch[1]} for ch in source.get_top_channels(5)],
        "total_events_processed": source.total_events_processed(),
    }


def reference(evs: List[Event]) -> EventStreamProcessor:
    ref = EventStreamProcessor(buffer_size=2 * len(evs), clock="event_time")
    assert ref.push_many(evs) == len(evs)
    ref.flush_now(timeout=30)
    return ref


def assert_same(shared: SharedAnalytics, ref: EventStreamProcessor) -> None:
    now = ref.now()
    assert shared.now() == now  # {ns}:clock: the newest event time of the writers
    for window in (3600, 1800, 60, None):
        assert shared.unique_users(window, now) == ref.unique_users(window, now), window
        assert shared.top_channels(5, window, now) == ref.top_channels(5, window, now), window
    assert shared.get_unique_users_last_hour() == ref.get_unique_users_last_hour()
    assert shared.get_top_channels(5) == ref.get_top_channels(5)
    assert shared.top_channels(100) == ref.top_channels(100)  # every channel, tie order included
    assert shared.total_events_processed() == ref.total_events_processed()
    assert dashboard(shared) == dashboard(ref)


# -- the server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[Optional[RedisServer]]:
    if redis is None:
        pytest.skip("redis-py is not installed (pip install 'engagehub[redis]')")
    if os.environ.get("ENGAGEHUB_TEST_REDIS_URL"):
        yield None
        return
    s = RedisServer(require_server(pytest)).start()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def url(server: Optional[RedisServer]) -> str:
    return server.url if server is not None else os.environ["ENGAGEHUB_TEST_REDIS_URL"]


@pytest.fixture
def ns(url: str, request: Any) -> Iterator[str]:
    namespace = f"test-{request.node.name}-{os.getpid()}"
    yield namespace
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match="{" + namespace + "}:*"))
    if keys:
        client.delete(*keys)


# -- writers (spawned processes) ---------------------------------------------------


def _writer(url: str, ns: str, part: List[Event], gates: Any, done: Any, results: Any, outage: bool) -> None:
    """Pushes ``part`` in two halves; between them waits for ``gates[0]`` (the
    parent may stop Redis) and reports through ``done``; closes after ``gates[1]``."""
    import redis as redis_py

    client = redis_py.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    processor = EventStreamProcessor(
        clock="event_time", buffer_size=8192, num_threads=2, redis=client, namespace=ns, publish_interval_ms=50
    )
    half = len(part) // 2
    slowest = 0.0
    for second, chunk in enumerate((part[:half], part[half:])):
        for i in range(0, len(chunk), 100):
            started = time.perf_counter()
            pushed = processor.push_many(chunk[i : i + 100])
            slowest = max(slowest, time.perf_counter() - started)
            assert pushed == len(chunk[i : i + 100])
        if second and outage:
            # Redis is down now: report only once our publisher has run into it.
            wait_until(lambda: processor._publisher.counters.failures > 0, 60, "a failed publish")
        done.put(os.getpid())
        if not gates[0].wait(60):
            raise SystemExit("gate 0 never opened")
        gates = gates[1:]
    processor.close()  # publishes the rest (stats() is closed with it: read the publisher's)
    c = processor._publisher.counters
    stats = {
        "processed": processor._publisher.source.events,  # events Redis acknowledged
        "published_batches": c.batches,
        "publish_failures": c.failures,
        "publish_pending_events": processor.unpublished,
    }
    results.put((stats, slowest))


def _run_writers(url: str, ns: str, evs: List[Event], between: Any = None, after_second: Any = None) -> List[Any]:
    """Runs the writers; ``between`` (stopping Redis) runs between their halves,
    ``after_second`` (restarting it) once they have pushed everything."""
    ctx = multiprocessing.get_context("spawn")
    gates = [ctx.Event(), ctx.Event()]
    done, results = ctx.Queue(), ctx.Queue()
    parts = [evs[i::WRITERS] for i in range(WRITERS)]
    outage = between is not None
    procs = [ctx.Process(target=_writer, args=(url, ns, p, gates, done, results, outage)) for p in parts]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            done.get(timeout=120)  # first halves pushed
        if between:
            between()
        gates[0].set()
        for _ in procs:
            done.get(timeout=120)  # second halves pushed
        if after_second:
            after_second()
        gates[1].set()
        out = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        return out
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)


def _reader(url: str, ns: str, out: Any) -> None:
    import redis as redis_py

    out.put(dashboard(SharedAnalytics(redis_py.Redis.from_url(url), ns)))


# -- tests -------------------------------------------------------------------------


def test_three_writers_equal_one_processor(url: str, ns: str) -> None:
    evs = events()
    stats = _run_writers(url, ns, evs)
    assert sum(s["processed"] for s, _ in stats) == len(evs)
    assert all(s["publish_pending_events"] == 0 and s["published_batches"] > 0 for s, _ in stats)
    ref = reference(evs)
    client = redis.Redis.from_url(url)
    assert_same(SharedAnalytics(client, ns), ref)
    assert_same(SharedAnalytics(redis.Redis.from_url(url, decode_responses=True), ns), ref)
    # The registers themselves, not just the counts.
    shared = SharedAnalytics(client, ns).users_sketch(3600, ref.now())
    assert shared.to_redis()[16:] == ref.users_sketch(3600).to_redis()[16:]
    # Every key carries the namespace's hash tag; minute keys expire.
    keys = [k.decode() for k in client.scan_iter(match="*" + ns + "*")]
    assert keys and all(k.startswith("{" + ns + "}:") for k in keys)
    minute = f"{{{ns}}}:uu:{HOUR0}"
    assert 0 < client.ttl(minute) <= 60 * 60 + 600
    assert client.ttl(f"{{{ns}}}:uu:all") == -1
    ref.close()


def test_dashboard_from_a_process_that_pushed_nothing(url: str, ns: str) -> None:
    evs = events(3000, seed=5)
    _run_writers(url, ns, evs)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    reader = ctx.Process(target=_reader, args=(url, ns, out))
    reader.start()
    try:
        got = out.get(timeout=60)
    finally:
        reader.join(30)
    ref = reference(evs)
    assert got == dashboard(ref)
    assert got["total_events_processed"] == len(evs)
    ref.close()


def test_redis_stopped_and_restarted_while_writers_run(server: Optional[RedisServer], url: str, ns: str) -> None:
    if server is None:
        pytest.skip("stops and restarts its own redis-server; ENGAGEHUB_TEST_REDIS_URL is set")
    evs = events(6000, seed=7)
    stats = _run_writers(url, ns, evs, between=server.stop, after_second=server.start)
    assert all(s["publish_failures"] > 0 for s, _ in stats)  # each writer met the outage
    assert all(s["publish_pending_events"] == 0 for s, _ in stats)
    # Pushing while Redis was down never waited for it (the client timeout is 2 s).
    assert max(slowest for _, slowest in stats) < 1.0
    ref = reference(evs)
    assert_same(SharedAnalytics(redis.Redis.from_url(url), ns), ref)
    ref.close()


def test_lost_reply_is_not_counted_twice(url: str, ns: str) -> None:
    evs = events(2000, seed=9)
    client = LosingReplies(redis.Redis.from_url(url), lose=0)
    processor = EventStreamProcessor(
        clock="event_time", buffer_size=4096, redis=client, namespace=ns, publish_interval_ms=3_600_000
    )
    processor.push_many(evs[:1000])
    processor.flush_now(timeout=30)
    processor.push_many(evs[1000:])
    client.lose = 1  # the next publish runs in Redis, but its reply never arrives
    processor.flush_now(timeout=30)  # fails once, then resends the same batch
    assert client.lost == 1
    s = processor.stats()
    assert s.publish_failures >= 1
    assert s.publish_duplicates >= 1  # the resend found its batch already applied
    ref = reference(evs)
    shared = SharedAnalytics(redis.Redis.from_url(url), ns)
    assert shared.total_events_processed() == len(evs)
    assert shared.top_channels(40) == ref.top_channels(40)
    assert shared.unique_users(3600, ref.now()) == ref.unique_users(3600)
    processor.close()
    ref.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_publishes_under_its_own_id(url: str, ns: str) -> None:
    evs = events(2000, seed=3)
    client = redis.Redis.from_url(url)
    processor = EventStreamProcessor(clock="event_time", buffer_size=4096, redis=client, namespace=ns)
    processor.push_many(evs[:1000])
    processor.flush_now(timeout=30)
    pid = os.fork()
    if pid == 0:  # the child: its processor starts empty, publishing under a new id
        code = 1
        try:
            processor.push_many(evs[1000:1500])
            processor.flush_now(timeout=30)
            processor.close()
            code = 0
        finally:
            os._exit(code)
    processor.push_many(evs[1500:])
    processor.flush_now(timeout=30)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(list(client.scan_iter(match="{" + ns + "}:pub:*"))) == 1, "the child closed: its key is gone"
    processor.close()
    assert list(client.scan_iter(match="{" + ns + "}:pub:*")) == [], "writers closed cleanly leave no key"
    ref = reference(evs)
    assert_same(SharedAnalytics(client, ns), ref)
    ref.close()


def eviction_checkers(client: Any, ns: str) -> Dict[str, Any]:
    """Each kind of object that checks the eviction policy when made, by name."""
    from engagehub import Leaderboard
    from engagehub.shared import SharedLeaderboard  # noqa: F401 - the leaderboard half is installed

    # (Constructors make no Redis call: the check runs on a reader's first query
    # and on a writer's first publish, here the one close() makes.)
    return {
        "analytics reader": lambda: SharedAnalytics(client, ns).total_events_processed(),
        "analytics writer": lambda: EventStreamProcessor(redis=client, namespace=ns).close(),
        "leaderboard writer": lambda: Leaderboard(redis=client, key=ns + "-lb").close(),
    }


def eviction_warnings(caplog: Any, make: Any) -> Tuple[List[str], List[str]]:
    """The RuntimeWarnings `make()` gave and the maxmemory-policy lines it logged."""
    import warnings

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engagehub"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make()
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    logged = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    return said, logged


@pytest.mark.parametrize(
    "policy, warned_about",
    [
        ("allkeys-lru", "any key may be evicted"),
        # Our keys without a TTL survive volatile-*, but the minute keys and every
        # publisher's sequence key (exactly-once) have one: unsafe as well.
        ("volatile-lru", "sequence key"),
        ("volatile-ttl", "minute keys"),
        ("noeviction", None),
    ],
)
def test_eviction_policy_rule_is_the_same_for_every_writer_and_reader(
    url: str, ns: str, caplog: Any, policy: str, warned_about: Optional[str]
) -> None:
    client = redis.Redis.from_url(url)
    try:
        old = client.config_get("maxmemory-policy")["maxmemory-policy"]
        client.config_set("maxmemory-policy", policy)
    except redis.ResponseError:
        pytest.skip("CONFIG is disabled on this Redis")
    try:
        for what, make in eviction_checkers(client, ns).items():
            said, logged = eviction_warnings(caplog, make)
            if warned_about is None:
                assert not said and not logged, (what, said, logged)
            else:
                assert len(said) == 1 and len(logged) == 1, (what, said, logged)
                assert policy in said[0] and warned_about in said[0] and "noeviction" in said[0], (what, said)
    finally:
        client.config_set("maxmemory-policy", old)


def test_reader_arguments(url: str, ns: str) -> None:
    client = redis.Redis.from_url(url)
    shared = SharedAnalytics(client, ns, window_minutes=60)
    assert shared.unique_users(3600) == 0
    assert shared.top_channels(5) == [] and shared.top_channels(0) == []
    assert shared.total_events_processed() == 0
    with pytest.raises(InvalidArgument, match="longer than the configured window"):
        shared.unique_users(3601)
    with pytest.raises(InvalidArgument):
        shared.top_channels(-1)
    with pytest.raises(InvalidArgument):
        SharedAnalytics(client, "a{b}")
    with pytest.raises(InvalidArgument, match="namespace"):
        EventStreamProcessor(redis=client)


def test_demo_with_redis(url: str, ns: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable, "-m", "engagehub", "demo", "--redis", url, "--writers", "3", "--namespace", ns,
            "--events", "20000", "--users", "3000", "--channels", "200", "--db", str(tmp_path / "d.sqlite3"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
    # The day's 20,000 events after the history's 2,000 (10%), all published.
    assert "20,000 events after 2,000 over the 8 weeks before, over 3 writer processes" in proc.stdout
    assert "events processed                22,000     22,000" in proc.stdout
    # The daily history read by the reader process equals the exact SQL answers.
    assert "Active users on 2026-01-01 (SharedAnalytics in the reader process vs exact SQL" in proc.stdout
    assert proc.stdout.count("ok, = SQL") == 2, proc.stdout
    assert "every cohort's size and fractions equal the exact SQL ones: ok" in proc.stdout
    assert "168 of 168 cells (7 weekdays x 24 hours) equal the exact SQL counts: ok; 20,000 events" in proc.stdout
    # The shared leaderboard was checked against one in-process board of the same updates.
    assert "in one in-process board fed the same updates; top 10" in proc.stdout, proc.stdout


def test_demo_leaderboard_check_catches_a_difference() -> None:
    from engagehub.shared.demo import _leaderboard_problems

    local = [("a", 1, 9.0, 100), ("b", 2, 5.0, 90), ("c", 3, 5.0 * (1 + 1e-12), 95), ("d", 4, 1.0, 80)]
    assert _leaderboard_problems(list(local), 4, local, 4) == []
    near_tie = [local[0], ("c", 2, 5.0, 95), ("b", 3, 5.0, 90), local[3]]
    assert _leaderboard_problems(near_tie, 4, local, 4) == []  # swapped within 1e-9
    assert _leaderboard_problems([local[0], local[1], local[3], local[2]], 4, local, 4)  # not a tie
    assert _leaderboard_problems([local[0], ("b", 2, 5.0 * (1 + 1e-6), 90)] + local[2:], 4, local, 4)
    assert _leaderboard_problems([local[0], ("b", 2, 5.0, 91)] + local[2:], 4, local, 4)  # last update
    assert _leaderboard_problems(list(local), 3, local, 4)  # a user missing from Redis
    assert _leaderboard_problems(local[:3], 4, local, 4)


def test_minute_reused_during_an_outage_is_counted_and_logged(
    server: Optional[RedisServer], url: str, ns: str, caplog: Any
) -> None:
    if server is None:
        pytest.skip("stops and restarts its own redis-server; ENGAGEHUB_TEST_REDIS_URL is set")
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    p = EventStreamProcessor(
        clock="event_time", window_minutes=5, redis=client, namespace=ns, publish_interval_ms=3_600_000
    )
    t = HOUR0
    p.push_many([("message", f"u{i}", "c", t) for i in range(10)])
    p.flush_now(timeout=30)
    server.stop()
    try:
        p.push_many([("message", "late1", "c", t + 1)])
        p.flush_now(timeout=30)  # delivered; Redis is down: it logs and returns
        assert not p.publish_now(timeout=0.3)
        # The publisher froze that batch and failed to send it: it is kept.
        wait_until(lambda: p.stats().publish_failures >= 1, what="a failed publish")
        p.push_many([("message", "late2", "c", t + 2)])  # after the frozen batch
        p.push_many([("message", "next", "d", t + 5 * 60)])  # reuses minute t's slot
    finally:
        server.start()
    with caplog.at_level(logging.ERROR, logger="engagehub"):
        p.flush_now(timeout=30)
    s = p.stats()
    assert s.publish_lost_minutes == 1 and s.publish_failures >= 1
    assert "left the processor's window" in caplog.text
    shared = SharedAnalytics(client, ns, window_minutes=5)
    # All-time keys and the total are complete; only minute t lacks "late2".
    assert shared.total_events_processed() == 13
    assert shared.unique_users(None) == p.unique_users(None) == 13
    assert shared.top_channels(5) == p.top_channels(5) == [("c", 12), ("d", 1)]
    assert client.pfcount(f"{{{ns}}}:uu:{t}") == 11
    p.close()


def test_members_per_key_are_bounded(url: str, ns: str) -> None:
    client = redis.Redis.from_url(url)
    p = EventStreamProcessor(clock="event_time", redis=client, namespace=ns, publish_max_members=3)
    # Channel c<i> gets 10 - i events, so the heavy hitters are c0, c1, c2.
    p.push_many([("message", f"u{i}{j}", f"c{i}", HOUR0 + 5) for i in range(10) for j in range(10 - i)])
    p.flush_now(timeout=30)
    assert client.zcard(f"{{{ns}}}:ch:{HOUR0}") == 3
    assert client.zcard(f"{{{ns}}}:ch:all") == 3
    shared = SharedAnalytics(client, ns)
    assert shared.top_channels(3) == p.top_channels(3) == [("c0", 10), ("c1", 9), ("c2", 8)]
    assert shared.top_channels(3, 3600) == p.top_channels(3, 3600)
    p.close()
