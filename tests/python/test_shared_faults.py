"""Shared state under faults (issue 20): every fault a deployment meets, injected
against real redis-servers (private, on unix sockets), each checked against a model
of the right answer: a shared value is never more than the true one while the fault
lasts, and equals it once the cause is gone.

- every key of both schemas: of another type, holding garbage, deleted mid-run;
- a failure after every write of every write script (a test-only fault hook that
  fails the script after its n-th write, n = 1, 2, ... until the batch goes
  through): the script undoes its writes, the resend applies the batch once;
- Redis killed, stopped and stalled (SIGSTOP) at random points (fixed seed) while
  writer processes run: the answers equal one processor / one board fed the union;
- close / flush / exit / aclose / Leaderboard.close with Redis down or stalled
  finish within their bound, each in a child interpreter under a watchdog, and
  Ctrl-C interrupts a close;
- 200 forks while reader, updater and publisher threads run: no child hangs;
- a rebase in steps, with updates during it, readers never seeing two scales;
- writers whose configuration disagrees are refused; readers raise Corrupt naming
  the key; a cleanly closed writer leaves no key of its own, a killed one one key.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed")

from engagehub import Corrupt, EventStreamProcessor, InvalidArgument, Leaderboard  # noqa: E402
from engagehub.errors import BatchFailed  # noqa: E402
from engagehub.shared import SharedAnalytics, SharedLeaderboard, _schema, _sources  # noqa: E402
from redis_server import WAIT, RedisServer, require_server, wait_until  # noqa: E402

HOUR0 = 1_764_633_600  # a minute boundary
Event = Tuple[str, str, str, int]


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = RedisServer(require_server(pytest)).start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def client(server: RedisServer) -> Any:
    c = server.client()
    yield c
    c.close()


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def contents(client: Any, pattern: str) -> Dict[bytes, Any]:
    """Every key matching ``pattern``: type, value (by content, not encoding) and
    whether it has a TTL."""
    out: Dict[bytes, Any] = {}
    for k in sorted(client.scan_iter(match=pattern)):
        kind = client.type(k).decode()
        if kind == "string":
            value: Any = client.get(k)
        elif kind == "zset":
            value = client.zrange(k, 0, -1, withscores=True)
        elif kind == "hash":
            value = sorted(client.hgetall(k).items())
        else:
            value = kind
        out[k] = (kind, value, client.ttl(k) > 0)
    return out


def events(n: int, seed: int, first: int = 0, minutes: int = 3, users: int = 400, channels: int = 4) -> List[Event]:
    """``n`` events over ``minutes`` minutes starting ``first`` minutes after HOUR0."""
    rng = random.Random(seed)
    t0 = HOUR0 + 60 * first
    return [("message", f"u{rng.randrange(users)}", f"c{rng.randrange(channels)}", t0 + rng.randrange(60 * minutes))
            for _ in range(n)]


# -- models ----------------------------------------------------------------------------


def analytics_of(source: Any, now: int) -> Dict[str, Any]:
    """What a dashboard reads, from a processor or SharedAnalytics alike; a metric
    whose key is corrupt reads as None."""
    out: Dict[str, Any] = {}
    for name, read in (
        ("events", lambda: source.total_events_processed()),
        ("dead_lettered", lambda: source.events_dead_lettered()),
        ("users_all", lambda: source.unique_users(None)),
        ("users_window", lambda: source.unique_users(3600, now)),
        ("channels_all", lambda: dict(source.top_channels(100))),
        ("channels_window", lambda: dict(source.top_channels(100, 3600, now))),
    ):
        try:
            out[name] = read()
        except Corrupt:
            out[name] = None
    return out


def assert_at_most(shared: Dict[str, Any], truth: Dict[str, Any], why: str) -> None:
    for name, value in shared.items():
        if value is None:
            continue
        if isinstance(value, dict):
            assert all(value[c] <= truth[name].get(c, 0) for c in value), (why, name, value, truth[name])
        else:
            assert value <= truth[name], (why, name, value, truth[name])


class AnalyticsCase:
    """A writer publishing to namespace ``ns`` and a reference processor fed the
    same events (event-time clock: the answers do not depend on when the test runs).
    While ``failing`` is set, both dead-letter every batch (no retries)."""

    def __init__(self, client: Any, ns: str, **writer: Any) -> None:
        self.client, self.ns = client, ns
        self.failing = False
        self.writer = EventStreamProcessor(
            clock="event_time", buffer_size=8192, redis=client, namespace=ns, publish_interval_ms=3_600_000,
            publish_timeout=WAIT, max_retries=0, **writer,
        )
        self.ref = EventStreamProcessor(clock="event_time", buffer_size=8192, max_retries=0)
        for p in (self.writer, self.ref):
            p.set_flush_callback(self._save)
        self.shared = SharedAnalytics(client, ns, check_eviction=False)

    def _save(self, batch: Any) -> None:
        if self.failing:
            raise BatchFailed("the database is down (test)")

    def push(self, evs: List[Event]) -> None:
        for p in (self.writer, self.ref):
            assert p.push_many(evs) == len(evs)
            p.flush_now(timeout=WAIT)

    def truth(self) -> Dict[str, Any]:
        return analytics_of(self.ref, self.ref.now())

    def seen(self) -> Dict[str, Any]:
        return analytics_of(self.shared, self.ref.now())

    def close(self) -> None:
        self.writer.close()
        self.ref.close()


class BoardCase:
    """A board publishing to key ``key`` and a reference board fed the same updates
    (no decay: scores are plain sums, so a partial publish can only be lower)."""

    def __init__(self, client: Any, key: str, **config: Any) -> None:
        self.client, self.key = client, key
        config.setdefault("decay_factor", 1.0)
        self.writer = Leaderboard(max_users=0, redis=client, key=key, publish_interval_ms=3_600_000,
                                  close_timeout=WAIT, **config)
        self.ref = Leaderboard(max_users=0, **config)
        self.shared = SharedLeaderboard(client, key)

    def update(self, rows: List[Tuple[str, float, int]]) -> None:
        for board in (self.writer, self.ref):
            for user, points, ts in rows:
                board.update_user(user, points, ts)

    def truth(self) -> Dict[str, float]:
        return {r.user_id: r.score for r in self.ref.top(10_000, now=HOUR0)}

    def seen(self) -> Optional[Dict[str, float]]:
        try:
            return {r.user_id: r.score for r in self.shared.top(10_000, now=HOUR0)}
        except Corrupt:
            return None

    def close(self) -> None:
        self.writer.close()
        self.ref.close()


def board_rows(n: int, seed: int, users: int = 50) -> List[Tuple[str, float, int]]:
    rng = random.Random(seed)
    return [(f"p{rng.randrange(users)}", float(rng.randint(1, 9)), HOUR0 - rng.randrange(3600)) for _ in range(n)]


# -- every key: another type, garbage, deleted -------------------------------------------

# key suffix (None: the publisher's own sequence key), then how to corrupt it:
# "type" (another type), "garbage" (the right type, an invalid value).
ANALYTICS_FAULTS = {
    "events": {"type": lambda c, k: c.rpush(k, "x"), "garbage": lambda c, k: c.set(k, "twelve")},
    "dead_lettered": {"type": lambda c, k: c.hset(k, "a", "b"), "garbage": lambda c, k: c.set(k, "a few")},
    "clock": {"type": lambda c, k: c.sadd(k, "x"), "garbage": lambda c, k: c.set(k, "noon")},
    "config": {"type": lambda c, k: c.set(k, "x"), "garbage": lambda c, k: c.hset(k, "window_minutes", "sixty")},
    "uu:all": {"type": lambda c, k: c.zadd(k, {"x": 1}), "garbage": lambda c, k: c.set(k, b"HYLL" + b"\xff" * 40)},
    "ch:all": {"type": lambda c, k: c.set(k, "x"), "garbage": lambda c, k: c.hset(k, "c0", "x")},
    "uu:minute": {"type": lambda c, k: c.rpush(k, "x"), "garbage": lambda c, k: c.set(k, b"HYLL\x00" + b"\x01" * 11)},
    "ch:minute": {"type": lambda c, k: c.set(k, "x"), "garbage": lambda c, k: c.sadd(k, "c0")},
    None: {"type": lambda c, k: c.rpush(k, "x"), "garbage": lambda c, k: c.set(k, "seventeen")},
}


def analytics_key(case: AnalyticsCase, suffix: Optional[str]) -> str:
    if suffix is None:
        return case.writer._publisher.pub_key()
    if suffix.endswith("minute"):
        return _schema.key(case.ns, suffix.split(":")[0], HOUR0 + 60)  # in both phases' minutes
    return _schema.key(case.ns, suffix)


@pytest.mark.parametrize("fault", ["type", "garbage", "deleted"])
@pytest.mark.parametrize("suffix", list(ANALYTICS_FAULTS), ids=lambda s: s or "pub")
def test_every_analytics_key_of_another_type_garbage_or_deleted(client: Any, suffix: Optional[str], fault: str) -> None:
    case = AnalyticsCase(client, fresh("keys"))
    try:
        case.failing = True  # the first 600 events are dead-lettered, the next 600 saved
        case.push(events(600, seed=1, minutes=2))
        case.failing = False
        assert case.writer.publish_now(WAIT)
        assert case.seen() == case.truth() and case.truth()["dead_lettered"] == 600
        key = analytics_key(case, suffix)
        saved = client.dump(key)
        if fault == "deleted":
            client.delete(key)
        else:
            client.delete(key)
            ANALYTICS_FAULTS[suffix][fault](client, key)
        case.push(events(600, seed=2, first=1, minutes=2))
        truth = case.truth()
        if fault == "deleted":
            # Not an error: the writer goes on; what the key held is gone.
            assert case.writer.publish_now(WAIT)
            assert_at_most(case.seen(), truth, f"{key} deleted")
            return
        if suffix == "config" and fault == "garbage":
            with pytest.raises(InvalidArgument, match="config has window_minutes"):
                case.writer.publish_now(WAIT)
        else:
            assert not case.writer.publish_now(WAIT)  # at once: refused, not a timeout
        assert key in case.writer._publisher.counters.last_error, case.writer._publisher.counters.last_error
        seen = case.seen()
        assert_at_most(seen, truth, f"{key} {fault}")
        if suffix != "events":
            assert seen["events"] == 600, "nothing of the refused batch was applied"
        if suffix != "dead_lettered":
            assert seen["dead_lettered"] == 600
        client.delete(key)
        if saved is not None:
            client.restore(key, 0, saved)
        assert case.writer.publish_now(WAIT), "the cause is gone: the batch goes through"
        assert case.seen() == truth
    finally:
        case.close()


BOARD_FAULTS = {
    "z": {"type": lambda c, k: c.set(k, "x"), "garbage": lambda c, k: c.zadd(k, {"p1": float("-inf")})},
    "meta": {"type": lambda c, k: c.set(k, "x"), "garbage": lambda c, k: c.hset(k, "version", "9")},
    "last": {"type": lambda c, k: c.set(k, "garbage"), "garbage": lambda c, k: c.sadd(k, "p1")},
    None: {"type": lambda c, k: c.hset(k, "a", "b"), "garbage": lambda c, k: c.set(k, "1.5e")},
}


@pytest.mark.parametrize("fault", ["type", "garbage", "deleted"])
@pytest.mark.parametrize("suffix", list(BOARD_FAULTS), ids=lambda s: s or "pub")
def test_every_leaderboard_key_of_another_type_garbage_or_deleted(client: Any, suffix: Optional[str], fault: str) -> None:
    case = BoardCase(client, fresh("lbkeys"))
    try:
        case.update(board_rows(300, seed=1))
        assert case.writer.publish_now(WAIT)
        assert case.seen() == case.truth()
        z, meta, last = _schema.board_keys(case.key)
        key = {"z": z, "meta": meta, "last": last}.get(suffix) or case.writer._publisher.pub_key()
        saved = client.dump(key)
        if suffix == "z" and fault == "garbage":
            client.delete(key)  # -inf merged with the real scores below: not a finite sum
            client.restore(key, 0, saved)
            BOARD_FAULTS[suffix][fault](client, key)
        else:
            client.delete(key)
            if fault != "deleted":
                BOARD_FAULTS[suffix][fault](client, key)
        case.update(board_rows(300, seed=2))
        truth = case.truth()
        if fault == "deleted":
            assert case.writer.publish_now(WAIT)
            seen = case.seen()
            assert seen is not None and all(seen[u] <= truth[u] for u in seen), (key, seen)
            if suffix in ("meta", "last", None):
                # The values are in {K}:z; meta is recreated by the next batch.
                assert seen == truth
            return
        assert not case.writer.publish_now(WAIT)  # at once: refused, not a timeout
        error = case.writer._publisher.counters.last_error
        assert key in error or (suffix == "z" and "finite" in error), error
        client.delete(key)
        if saved is not None:
            client.restore(key, 0, saved)
        seen = case.seen()
        assert seen is not None and all(seen[u] <= truth[u] for u in seen)
        assert sum(seen.values()) == pytest.approx(sum(s for _, s, _ in board_rows(300, seed=1)))
        assert case.writer.publish_now(WAIT), "the cause is gone: the batch goes through"
        assert case.seen() == truth
    finally:
        case.close()


# -- a failure after every write -----------------------------------------------------------


def run_with_fault(publish: Callable[[], bool], set_script: Callable[[Optional[int]], None],
                   state: Callable[[], Any]) -> int:
    """For n = 1, 2, ...: the script fails after its n-th write (``publish()`` is
    False at once: a refusal), and the state must be exactly what it was (every
    write undone). Returns n once the script has fewer writes than n (the batch
    went through, once)."""
    for n in range(1, 500):
        set_script(n)
        before = state()
        done = publish()
        if done:
            set_script(None)
            return n
        assert state() == before, f"a write of the script failing after write {n} was left behind"
    raise AssertionError("the script never ran out of writes")


def test_a_failure_after_any_write_of_the_analytics_script_is_undone(client: Any) -> None:
    case = AnalyticsCase(client, fresh("wfault"), publish_max_members=3)
    source = case.writer._publisher.source
    try:
        case.push(events(300, seed=3, minutes=2))
        assert case.writer.publish_now(WAIT)

        def set_script(n: Optional[int]) -> None:
            source.script = _schema.ANALYTICS_PUBLISH if n is None else _schema.with_fault(
                _schema.ANALYTICS_PUBLISH, n)

        set_script(1)  # (flush_now publishes too)
        # Six channels over two minutes: increments, new members, trims at 3,
        # new and existing minute keys, the all-time keys, the clock, dead letters.
        case.failing = True
        case.push(events(400, seed=4, first=1, minutes=2, channels=6))

        writes = run_with_fault(lambda: case.writer.publish_now(WAIT), set_script,
                                lambda: contents(client, f"{{{case.ns}}}:*"))
        assert writes > 20, writes  # every write was tried
        seen, truth = case.seen(), case.truth()
        assert {k: seen[k] for k in ("events", "dead_lettered", "users_all", "users_window")} == {
            k: truth[k] for k in ("events", "dead_lettered", "users_all", "users_window")}
        assert truth["dead_lettered"] == 400
        # (With publish_max_members=3 the shared sets keep 3 channels each.)
        assert_at_most(seen, truth, "trimmed channels")
        assert client.zcard(_schema.key(case.ns, "ch", "all")) == 3
        assert case.writer.stats().publish_failures >= writes - 1
    finally:
        case.close()


def test_a_failure_after_any_write_of_the_leaderboard_script_is_undone(client: Any) -> None:
    case = BoardCase(client, fresh("lbwfault"))
    source = case.writer._publisher.source
    try:
        case.update(board_rows(200, seed=5))
        for board in (case.writer, case.ref):
            board.set("p3", 1000.0, HOUR0 - 1)
        assert case.writer.publish_now(WAIT)

        def set_script(n: Optional[int]) -> None:
            source.script = _schema.LEADERBOARD_PUBLISH if n is None else _schema.with_fault(
                _schema.LEADERBOARD_PUBLISH, n)

        set_script(1)
        # Increments, new users, a set, a remove and a remove-then-add: every write.
        case.update(board_rows(200, seed=6, users=80))
        for board in (case.writer, case.ref):
            board.set("p4", 500.0, HOUR0 - 2)
            board.remove("p5")
            board.remove("p6")
            board.update_user("p6", 3.0, HOUR0 - 3)


        writes = run_with_fault(lambda: case.writer.publish_now(WAIT), set_script,
                                lambda: contents(client, "{" + case.key + "}:*"))
        assert writes >= 5, writes
        assert case.seen() == case.truth()
        last = _schema.board_keys(case.key)[2]
        assert int(client.zscore(last, "p6")) == HOUR0 - 3  # replaced after the remove
    finally:
        case.close()


# Halving every 10 s. The writer's own board rebases when a timestamp is ~3,700 s
# past its landmark; the shared set when a batch's landmark is ~920 s ahead of it.
FAST = {"decay_factor": 0.5, "decay_period_secs": 10.0}
T_OLD, T_NEW = HOUR0 - 5000, HOUR0


def base_score(i: int) -> float:
    """User r<i>'s score at T_NEW: 1 + i % 13 points at T_OLD, halved 500 times."""
    return (1.0 + i % 13) * 2.0**-500


def start_rebase(case: BoardCase, users: int, step_count: int) -> None:
    """Publishes ``users`` users r<i> at T_OLD, then updates "late" at T_NEW: the
    writer's board rebases to T_NEW, and its next batch starts a rebase of the
    shared set. The writer copies ``step_count`` users per step."""
    source = case.writer._publisher.source
    source.rebase_step_count = step_count
    case.update([(f"r{i}", 1.0 + i % 13, T_OLD) for i in range(users)])
    assert case.writer.publish_now(WAIT)
    case.update([("late", 5.0, T_NEW)])
    assert case.writer.stats().rebases >= 1, "the writer's board rebased"


@pytest.mark.parametrize("last_step", [False, True], ids=["a-step", "the-swap"])
def test_a_failure_after_any_write_of_a_rebase_step_is_undone(client: Any, last_step: bool) -> None:
    key = fresh("rbfault")
    z, meta, _ = _schema.board_keys(key)
    znew, zold = _schema.board_rebase_keys(key)
    client.zadd(z, {f"u{i}": -float(i + 1) for i in range(300)})
    client.zadd(znew, {"u0": -0.5})  # a user a batch wrote during the rebase
    client.hset(meta, mapping={"version": 1, "landmark": HOUR0, "decay_factor": 0.5, "decay_period_secs": 10.0,
                               "rebase_landmark": HOUR0 + 100, "rebase_cursor": 0, "rebases": 2})
    count = 1000 if last_step else 20
    if last_step:
        # The set an earlier rebase replaced is not deleted yet: the swap waits.
        client.zadd(zold, {"x": 1})
        before = contents(client, "{" + key + "}:*")
        with pytest.raises(redis.ResponseError, match="busy"):
            client.eval(_schema.LEADERBOARD_REBASE_STEP, 4, z, meta, znew, zold, count)
        assert contents(client, "{" + key + "}:*") == before
        client.unlink(zold)

    def step(n: Optional[int]) -> Any:
        script = _schema.LEADERBOARD_REBASE_STEP if n is None else _schema.with_fault(
            _schema.LEADERBOARD_REBASE_STEP, n)
        return client.eval(script, 4, z, meta, znew, zold, count)

    for n in range(1, 100):
        before = contents(client, "{" + key + "}:*")
        try:
            finished, copied, swapped = step(n)
        except redis.ResponseError as exc:
            assert "injected after write" in str(exc), exc
            assert contents(client, "{" + key + "}:*") == before, f"write {n} of a step was left behind"
            continue
        assert n > 1 and copied > 0
        assert (finished, swapped) == ((1, 1) if last_step else (0, 0))
        break
    if last_step:
        assert client.hget(meta, "landmark") == str(HOUR0 + 100).encode() and client.hget(meta, "rebases") == b"3"
        assert client.zcard(z) == 300 and not client.exists(znew)
        assert math.isclose(client.zscore(z, "u9"), -10.0 * 2.0**-10, rel_tol=1e-12)


# -- a rebase in steps ---------------------------------------------------------------------


def test_a_rebase_runs_in_small_steps_with_updates_and_readers_never_see_two_scales(client: Any) -> None:
    case = BoardCase(client, fresh("rebase"), **FAST)
    reader = SharedLeaderboard(client, case.key)
    try:
        start_rebase(case, users=3000, step_count=20)
        case.writer._publisher.source.REBASE_SLICE = 0.0  # one step per cycle: batches go between
        _, meta, _ = _schema.board_keys(case.key)
        znew, _ = _schema.board_rebase_keys(case.key)
        # Users r0..r1999 are never updated again: every read of them must give
        # their exact score. A read mixing the old scale and the new one would be
        # off by a factor of 2**500.
        wrong: List[Any] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                rows = reader.around("r7", 30, now=T_NEW) + [reader.rank("r1234", now=T_NEW)]
                for row in rows:
                    i = int(row.user_id[1:]) if row.user_id[0] == "r" and row.user_id[1:].isdigit() else 3000
                    if i < 2000 and not math.isclose(row.score, base_score(i), rel_tol=1e-9):
                        wrong.append(row)

        readers = [threading.Thread(target=read) for _ in range(2)]
        for t in readers:
            t.start()
        try:
            # The batch that starts the rebase; then, while the writer's thread
            # copies 20 users per step, updates of users copied already, not yet,
            # and new ones.
            assert case.writer.publish_now(WAIT)
            during = 0
            for round_ in range(20):
                case.update([(f"r{2000 + (round_ * 211 + j * 17) % 1000}", 2.0, T_NEW) for j in range(20)]
                            + [(f"new{round_}", 3.0, T_NEW)])
                rebasing = client.hget(meta, "rebase_landmark") is not None
                assert case.writer.publish_now(WAIT)
                during += rebasing
            wait_until(lambda: client.hget(meta, "rebase_landmark") is None, what="the rebase to finish")
        finally:
            stop.set()
            for t in readers:
                t.join(WAIT)
        assert not wrong, wrong[:3]
        assert during >= 1, "updates were published while the rebase ran"
        assert int(client.hget(meta, "rebases")) == 1 and not client.exists(znew)
        assert int(client.hget(meta, "landmark")) == case.writer.stats().landmark == T_NEW
        want = case.ref.top(10_000, now=T_NEW)
        got = reader.top(10_000, now=T_NEW)
        assert [r.user_id for r in got] == [r.user_id for r in want]
        assert all(math.isclose(g.score, w.score, rel_tol=1e-9) for g, w in zip(got, want))
    finally:
        case.close()


def test_a_rebase_step_copies_a_bounded_number_of_users(client: Any) -> None:
    """The bound behind "a rebase never holds Redis long": a step script copies
    one ZSCAN page (COUNT users, a little more at most) and the swap is O(1); the
    figure (PING latency during a 1M-user rebase) is in docs/performance.md."""
    key = fresh("steps")
    z, meta, _ = _schema.board_keys(key)
    znew, zold = _schema.board_rebase_keys(key)
    client.zadd(z, {f"u{i}": -float(i + 1) for i in range(20_000)})
    client.hset(meta, mapping={"version": 1, "landmark": HOUR0, "decay_factor": 0.5, "decay_period_secs": 10.0,
                               "rebase_landmark": HOUR0 + 1000, "rebase_cursor": 0})
    step = client.register_script(_schema.LEADERBOARD_REBASE_STEP)
    copied, steps = [], 0
    while True:
        finished, n, swapped = step(keys=[z, meta, znew, zold], args=[500])
        steps += 1
        copied.append(n)
        if finished:
            break
    assert swapped == 1 and max(copied) <= 600 and sum(copied) >= 20_000, (max(copied), sum(copied))
    assert steps >= 20_000 // 600
    f = math.exp(-math.log(2) / 10 * 1000)
    assert client.zcard(z) == 20_000 and math.isclose(client.zscore(z, "u9"), -10.0 * f, rel_tol=1e-12)
    assert client.hget(meta, "landmark") == str(HOUR0 + 1000).encode() and client.exists(zold)


# -- configuration, readers, keys -------------------------------------------------------------


def test_writers_with_another_window_or_limit_are_refused_and_never_shorten_a_key(client: Any) -> None:
    ns = fresh("mixed")
    a = EventStreamProcessor(clock="event_time", redis=client, namespace=ns, window_minutes=60, publish_timeout=WAIT)
    b = EventStreamProcessor(clock="event_time", redis=client, namespace=ns, window_minutes=5, publish_timeout=WAIT)
    c = EventStreamProcessor(clock="event_time", redis=client, namespace=ns, publish_max_members=10,
                             publish_timeout=WAIT)
    try:
        a.push_many([("m", "ua", "c", HOUR0)])
        a.flush_now(WAIT)
        assert a.publish_now(WAIT)
        minute = _schema.key(ns, "uu", HOUR0)
        ttl = client.ttl(minute)
        assert 60 * 60 < ttl <= 60 * 60 + 600
        for other, what in ((b, "window_minutes 5"), (c, "publish_max_members 10")):
            other.push_many([("m", "ub", "c", HOUR0)])
            other.flush_now(WAIT)  # delivered; the refusal is logged, not raised here
            with pytest.raises(InvalidArgument, match=r"\{.*\}:config has window_minutes 60") as refused:
                other.publish_now(WAIT)
            assert what in str(refused.value)
        assert client.ttl(minute) >= ttl - 5, "no writer shortened the key"
        assert SharedAnalytics(client, ns, check_eviction=False).total_events_processed() == 1
        assert SharedAnalytics(client, ns, check_eviction=False).config() == {
            "version": 1, "window_minutes": 60, "max_members": 1024, "history_days": 90}
    finally:
        for p in (a, b, c):
            p.close()
    key = fresh("decay")
    with Leaderboard(decay_factor=0.9, redis=client, key=key) as first:
        first.update_user("x", 1.0)
        assert first.publish_now(WAIT)
    with Leaderboard(decay_factor=0.8, redis=client, key=key, close_timeout=1) as second:
        second.update_user("x", 1.0)
        with pytest.raises(InvalidArgument, match="has decay 0.9"):
            second.publish_now(WAIT)


def test_a_batch_an_older_writer_journaled_is_resent_in_the_new_layout(client: Any) -> None:
    """A processor reopened on a journal written before ``{ns}:dead_lettered``
    resends its outbox batch (7 head keys, 8 head arguments): it is read into the
    current layout with a dead-lettered delta of 0 and applied once."""
    ns = fresh("oldbox")
    head = [_schema.key(ns, part) for part in ("pub:old", "events", "uu:all", "ch:all", "tmp:old", "clock", "config")]
    minute = [_schema.key(ns, "uu", HOUR0), _schema.key(ns, "ch", HOUR0)]
    old_args = [3, _schema.PUBLISHER_KEY_TTL_SECS, 60, 1024, 42, "", {"b": ""}, 1, "c0", 42, {"b": ""}, 1, "c0", 42]
    doc = {"keys": head + minute, "args": old_args, "size": 42, "state": {"events": 42, "all": {"c0": 42}, "minutes": {}}}
    batch = _sources._batch_from_outbox(7, json.dumps(doc).encode())
    assert batch.keys[:7] == head and batch.keys[7] == _schema.key(ns, "dead_lettered") and batch.keys[8:] == minute
    seq = 7 * _sources.CHUNKS_PER_BATCH  # outbox batch 7's first part
    assert batch.args[:8] == [seq, _schema.PUBLISHER_KEY_TTL_SECS, 60, 1024, 42, "", 0, b""] and batch.state[4] is None
    for _ in range(2):  # the second time: a duplicate
        client.eval(_schema.ANALYTICS_PUBLISH, len(batch.keys), *batch.keys, *batch.args)
    shared = SharedAnalytics(client, ns, check_eviction=False)
    assert (shared.total_events_processed(), shared.events_dead_lettered()) == (42, 0)
    assert shared.top_channels(1) == shared.top_channels(1, 60, HOUR0) == [("c0", 42)]


def test_readers_raise_corrupt_naming_the_key_and_pass_connection_errors(server: RedisServer, client: Any) -> None:
    ns = fresh("readers")
    shared = SharedAnalytics(client, ns, check_eviction=False)
    cases = [
        (_schema.key(ns, "uu", "all"), lambda k: client.set(k, b"HYLL" + b"\xff" * 40), lambda: shared.unique_users(None)),
        (_schema.key(ns, "uu", "all"), lambda k: client.rpush(k, "x"), lambda: shared.unique_users(None)),
        (_schema.key(ns, "uu", HOUR0), lambda k: client.set(k, "x"), lambda: shared.unique_users(3600, HOUR0 + 30)),
        (_schema.key(ns, "uu", HOUR0), lambda k: client.set(k, "x"), lambda: shared.users_sketch(3600, HOUR0 + 30)),
        (_schema.key(ns, "ch", "all"), lambda k: client.set(k, "x"), lambda: shared.top_channels(3)),
        (_schema.key(ns, "events"), lambda k: client.set(k, "lots"), lambda: shared.total_events_processed()),
        (_schema.key(ns, "events"), lambda k: client.sadd(k, "x"), lambda: shared.total_events_processed()),
        (_schema.key(ns, "dead_lettered"), lambda k: client.set(k, "many"), lambda: shared.events_dead_lettered()),
        (_schema.key(ns, "clock"), lambda k: client.set(k, "noon"), lambda: shared.now()),
    ]
    board = SharedLeaderboard(client, "rd-" + ns)
    z, meta, last = _schema.board_keys("rd-" + ns)
    client.zadd(z, {"u": -1.0})
    client.hset(meta, mapping={"version": 1, "landmark": 1, "decay_factor": 0.95, "decay_period_secs": 86400.0})
    cases += [
        (last, lambda k: client.set(k, "garbage"), lambda: board.top(3)),
        (meta, lambda k: client.hset(k, "landmark", "soon"), lambda: board.top(3)),
        (z, lambda k: client.set(k, "x"), lambda: board.size()),
        (meta, lambda k: client.set(k, "x"), lambda: board.trimmed()),
    ]
    for key, corrupt, read in cases:
        saved = client.dump(key)
        client.delete(key)
        corrupt(key)
        with pytest.raises(Corrupt) as err:
            read()
        assert key in str(err.value), (key, str(err.value))
        client.delete(key)
        if saved is not None:
            client.restore(key, 0, saved)
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # (No retries: redis-py's default retries take seconds.)
    absent = redis.Redis(unix_socket_path=server.socket + ".absent", retry=Retry(NoBackoff(), 0))
    down = SharedAnalytics(absent, ns, check_eviction=False)
    with pytest.raises(redis.ConnectionError):
        down.total_events_processed()


def test_a_writer_closed_cleanly_leaves_no_key_and_a_killed_one_leaves_one(server: RedisServer, client: Any) -> None:
    ns, key = fresh("gone"), fresh("gonelb")
    with EventStreamProcessor(redis=client, namespace=ns) as p, Leaderboard(redis=client, key=key) as lb:
        p.push_event("m", "u", "c")
        lb.update_user("u", 1.0)
    assert client.keys(f"{{{ns}}}:pub:*") == [] and client.keys(f"{{{key}}}:pub:*") == []
    code = textwrap.dedent(f"""
        import os, redis, engagehub
        r = redis.Redis(unix_socket_path={server.socket!r})
        p = engagehub.EventStreamProcessor(redis=r, namespace={ns!r})
        lb = engagehub.Leaderboard(redis=r, key={key!r})
        p.push_event("m", "u", "c"); lb.update_user("u", 1.0)
        p.flush_now(30); assert p.publish_now(30) and lb.publish_now(30)
        os._exit(0)  # killed: no close, no exit hooks
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=WAIT * 2, env=child_env())
    for pattern in (f"{{{ns}}}:pub:*", f"{{{key}}}:pub:*"):
        left = client.keys(pattern)
        assert len(left) == 1
        assert 0 < client.ttl(left[0]) <= _schema.PUBLISHER_KEY_TTL_SECS


# -- bounded waits, in child interpreters ------------------------------------------------------


def child_env() -> Dict[str, str]:
    env = dict(os.environ)
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join([env.get("PYTHONPATH", ""), here])
    return env


CHILD = """
import asyncio, os, sys, redis, engagehub
r = redis.Redis(unix_socket_path={socket!r})  # no socket_timeout: a stalled server never answers
delivered = 0
def count(batch):
    global delivered
    delivered += len(batch)
    os.write(1, f"delivered {{delivered}}\\n".encode())  # one write: lines never interleave
p = engagehub.EventStreamProcessor(num_threads=1, redis=r, namespace="bound", publish_timeout={bound},
                                   publish_interval_ms=20)
p.set_flush_callback(count)
lb = engagehub.Leaderboard(redis=r, key="bound-lb", close_timeout={bound}, publish_interval_ms=20)
for i in range(500):
    p.push_event("message", f"u{{i}}", "c")
    lb.update_user(f"u{{i}}", 1.0)
os.write(1, b"ready\\n")
what = {what!r}
if what == "close":
    p.close(); lb.close()
elif what == "flush":
    p.flush_now()
elif what == "flush-timeout":
    p.flush_now(timeout=0.5)
elif what == "aclose":
    asyncio.run(p.aclose()); lb.close()
elif what == "publish_now":
    assert not p.publish_now() and not lb.publish_now()
os.write(1, b"returned\\n")
# and exits: the at-exit hooks close what is still open (everything, for "exit")
"""


def run_child(code: str) -> Tuple[float, List[str], str]:
    """Runs ``code`` under a 60 s watchdog: seconds from its "ready" line to its
    exit, its output lines, its stderr."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        lines, started = [], time.monotonic()
        for line in proc.stdout:  # until the child exits (or the watchdog kills it)
            lines.append(line.strip())
            if lines[-1] == "ready":
                started = time.monotonic()
        err = proc.stderr.read()
        proc.wait()
        elapsed = time.monotonic() - started
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "\n".join(lines) + err
    return elapsed, lines, err


@pytest.fixture(scope="module")
def stalled() -> Iterator[RedisServer]:
    """A redis-server stopped with SIGSTOP: connections are accepted by the kernel,
    nothing ever answers."""
    srv = RedisServer(require_server(pytest)).start()
    srv.stall()
    try:
        yield srv
    finally:
        srv.close()


@pytest.mark.parametrize("redis_state", ["down", "stalled"])
@pytest.mark.parametrize("what", ["close", "flush", "flush-timeout", "aclose", "publish_now", "exit"])
def test_every_wait_on_redis_is_bounded(server: RedisServer, stalled: RedisServer, what: str, redis_state: str) -> None:
    bound = 1.0
    socket = stalled.socket if redis_state == "stalled" else server.dir + "/nobody-here.sock"
    elapsed, lines, err = run_child(CHILD.format(socket=socket, bound=bound, what=what))
    # The flush callback got every event whatever Redis did.
    assert "delivered 500" in lines, lines
    # Each wait on Redis takes its bound; from "ready" to the exit: the call's and
    # then the exit's (the processor's and the board's, one after the other).
    waits = {"close": 2, "aclose": 2, "exit": 2, "flush": 3, "flush-timeout": 2.5, "publish_now": 4}[what]
    assert elapsed < waits * bound + 5, (elapsed, lines)  # generous: a loaded machine
    assert "closed before Redis acknowledged everything" in err


def test_ctrl_c_interrupts_a_close_waiting_for_redis(stalled: RedisServer) -> None:
    # The child says when its close starts waiting for Redis (the publisher's debug
    # line), and its own SIGINT handler is Python's (a background job ignores it).
    code = CHILD.format(socket=stalled.socket, bound=600, what="close")
    code = textwrap.dedent("""
        import logging, os, signal
        signal.signal(signal.SIGINT, signal.default_int_handler)
        class Say(logging.Handler):
            def emit(self, record):
                if "closing: waiting" in record.getMessage():
                    os.write(1, b"waiting\\n")
        logging.getLogger("engagehub").addHandler(Say())
        logging.getLogger("engagehub").setLevel(logging.DEBUG)
    """) + code
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    try:
        while proc.stdout.readline().strip() not in ("waiting", ""):
            pass
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)  # the exit does not wait for Redis again either
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err


# -- forks ------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_200_forks_while_reader_updater_and_publisher_threads_run(client: Any, server: RedisServer) -> None:
    key = fresh("forks")
    lb = Leaderboard(redis=server.client(), key=key, publish_interval_ms=1, decay_factor=1.0)
    p = EventStreamProcessor(redis=server.client(), namespace=fresh("forkns"), publish_interval_ms=1)
    for i in range(5000):
        lb.update_user(f"u{i}", float(i % 97), HOUR0)
    assert lb.publish_now(WAIT)
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            lb.top(5000, now=HOUR0)

    def updater() -> None:
        i = 0
        while not stop.is_set():
            lb.update_user(f"u{i % 5000}", 1.0, HOUR0)
            p.push_event("m", f"u{i % 300}", "c")
            i += 1

    threads = [threading.Thread(target=reader), threading.Thread(target=updater)]
    for t in threads:
        t.start()
    hung = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
            for _ in range(200):
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        lb.update_user("child", 1.0, HOUR0)
                        p.push_event("m", "child", "c")
                        code = 0 if lb.size() > 0 and lb.rank("child").score == 1.0 else 2
                        lb.close()
                        p.close()
                    finally:
                        os._exit(code)
                deadline = time.monotonic() + WAIT
                while True:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        assert os.waitstatus_to_exitcode(status) == 0
                        break
                    if time.monotonic() > deadline:
                        hung += 1
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                        break
                    time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT)
    assert hung == 0, f"{hung} of 200 children hung"
    assert lb.publish_now(WAIT)
    # Each child published its own update once, under its own id; the parent's
    # updates pending at each fork were published by the parent alone.
    shared = SharedLeaderboard(client, key)
    assert shared.size() == 5001 and shared.rank("child", now=HOUR0).score == 200.0
    assert {r.user_id: r.score for r in shared.top(6000, now=HOUR0)} == {
        r.user_id: r.score for r in lb.top(6000, now=HOUR0) if r.user_id != "child"} | {"child": 200.0}
    lb.close()
    p.close()


# -- Redis killed, stopped and stalled while writers run ------------------------------------------


ROUNDS = 8


def _chaos_writer(url: str, ns: str, key: str, evs: List[Event], rows: List[Tuple[str, float, int]],
                  pushed: Any, go: List[Any], out: Any) -> None:
    """Pushes and updates in ROUNDS rounds; after each, reports and waits for the
    parent, who then breaks Redis while the next round runs."""
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    p = EventStreamProcessor(clock="event_time", buffer_size=8192, redis=client, namespace=ns,
                             publish_interval_ms=10, publish_timeout=120)
    lb = Leaderboard(max_users=0, decay_factor=1.0, redis=client, key=key, publish_interval_ms=10,
                     close_timeout=120)
    size = -(-len(evs) // ROUNDS)
    for r in range(ROUNDS):
        for i in range(r * size, min(len(evs), (r + 1) * size), 25):
            p.push_many(evs[i:i + 25])
            for user, points, ts in rows[i:i + 25]:
                lb.update_user(user, points, ts)
            time.sleep(0.005)  # a stream, not a burst: publishes happen in between
        pushed.put(r)
        if not go[r].wait(WAIT * 4):
            raise SystemExit(f"round {r} never started")
    p.close()
    lb.close()
    out.put((p.unpublished, lb.unpublished, p._publisher.counters.failures, lb._publisher.counters.failures,
             p._publisher.counters.duplicates + lb._publisher.counters.duplicates))


def test_redis_killed_stopped_and_stalled_at_random_points_loses_and_doubles_nothing() -> None:
    binary = require_server(pytest)
    rng = random.Random(20)  # a fixed schedule: CI replays the same faults
    with RedisServer(binary) as srv:
        ns, key = fresh("chaos"), fresh("chaoslb")
        parts = [events(2400, seed=30 + w, minutes=20, users=2000, channels=30) for w in range(3)]
        rows = [board_rows(2400, seed=40 + w, users=500) for w in range(3)]
        ctx = multiprocessing.get_context("spawn")
        pushed, out = ctx.Queue(), ctx.Queue()
        go = [ctx.Event() for _ in range(ROUNDS)]
        procs = [ctx.Process(target=_chaos_writer, args=(srv.url, ns, key, parts[w], rows[w], pushed, go, out))
                 for w in range(3)]
        for proc in procs:
            proc.start()
        try:
            for r in range(ROUNDS):
                for _ in procs:
                    pushed.get(timeout=WAIT * 4)
                fault = ("kill", "stop", "stall")[r % 3] if r < ROUNDS - 1 else None
                if fault == "kill":
                    srv.kill()
                elif fault == "stop":
                    srv.stop()
                elif fault == "stall":
                    srv.stall()
                go[r].set()  # the next round runs against a broken Redis
                if fault is not None:
                    time.sleep(rng.uniform(0.2, 0.6))
                    if fault == "stall":
                        srv.resume()
                    else:
                        srv.start()
            results = [out.get(timeout=240) for _ in procs]
        finally:
            srv.resume()
            for proc in procs:
                proc.join(WAIT)
                if proc.is_alive():
                    proc.kill()
        assert all(proc.exitcode == 0 for proc in procs)
        assert all(r[0] == 0 and r[1] == 0 for r in results), results
        assert all(r[2] > 0 and r[3] > 0 for r in results), results  # every publisher met the faults
        client = srv.client()
        ref = EventStreamProcessor(clock="event_time", buffer_size=16384)
        every = [e for part in parts for e in part]
        assert ref.push_many(every) == len(every)
        ref.flush_now(WAIT)
        assert analytics_of(SharedAnalytics(client, ns, check_eviction=False), ref.now()) == analytics_of(ref, ref.now())
        board = Leaderboard(max_users=0, decay_factor=1.0)
        for part in rows:
            for user, points, ts in part:
                board.update_user(user, points, ts)
        want = {r.user_id: r.score for r in board.top(10_000, now=HOUR0)}
        got = {r.user_id: r.score for r in SharedLeaderboard(client, key).top(10_000, now=HOUR0)}
        assert got == want
        ref.close()
        board.close()
