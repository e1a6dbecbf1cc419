"""Leaderboards shared through Redis: writers in several processes equal one board.

Uses ENGAGEHUB_TEST_REDIS_URL if set (then the tests that stop the server are
skipped); otherwise starts a redis-server of its own on a unix socket in a temp dir
(redis_server.py), AOF on.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import random
import time
import uuid
import warnings

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed")

from engagehub import Leaderboard  # noqa: E402
from engagehub.shared import SharedLeaderboard  # noqa: E402
from engagehub.shared.leaderboard import keys_of  # noqa: E402
from redis_server import WAIT, RedisServer, require_server, wait_until  # noqa: E402


@pytest.fixture(scope="module")
def server():
    url = os.environ.get("ENGAGEHUB_TEST_REDIS_URL")
    if url:
        yield url, None
        return
    srv = RedisServer(require_server(pytest)).start()
    try:
        yield srv.url, srv
    finally:
        srv.close()


def fresh_key() -> str:
    return "t-" + uuid.uuid4().hex[:10]


# -- workloads ----------------------------------------------------------------------

NOW = int(time.time()) - 60
SPAN = 9000
# Halving every 10 s: boards rebase after ~3,700 s of timestamps, Redis after ~920 s.
FAST = dict(decay_factor=0.5, decay_period_secs=10.0)


def workload(seed: int, writers: int = 3, per_writer: int = 3000, users: int = 200):
    """Per writer, updates (user, points, ts) over overlapping users, out of time
    order; each writer starts with early timestamps so its landmark starts early."""
    rng = random.Random(seed)
    base = NOW - SPAN - 500
    out = []
    for _ in range(writers):
        ups = [(f"u{rng.randrange(users)}", float(rng.randint(1, 50)) + rng.random(), base + rng.randrange(SPAN))
               for _ in range(per_writer)]
        ups.sort(key=lambda u: u[2])
        head, tail = ups[:30], ups[30:]
        rng.shuffle(tail)
        out.append(head + tail)
    return out


def reference(all_updates, **config) -> Leaderboard:
    ref = Leaderboard(max_users=0, **config)
    for ups in all_updates:
        for user, points, ts in ups:
            assert ref.update_user(user, points, ts)
    return ref


def assert_same(shared: SharedLeaderboard, ref: Leaderboard, now: int, k: int = 20) -> None:
    got, want = shared.top(k, now=now), ref.top(k, now=now)
    assert [r.user_id for r in got] == [r.user_id for r in want]
    assert [r.rank for r in got] == [r.rank for r in want]
    for g, w in zip(got, want):
        assert math.isclose(g.score, w.score, rel_tol=1e-9), (g, w)
        assert g.last_update == w.last_update, (g, w)
    for w in want[::3]:
        g = shared.rank(w.user_id, now=now)
        assert (g.rank, g.last_update) == (w.rank, w.last_update)
        assert math.isclose(g.score, w.score, rel_tol=1e-9)
    assert shared.size() == ref.size()
    middle = want[len(want) // 2].user_id
    assert [r.user_id for r in shared.around(middle, 2, now=now)] == [
        r.user_id for r in ref.around(middle, 2, now=now)
    ]


# Spawned writer processes (module-level functions: picklable by reference).

def writer(url, key, updates, config, flush_every, events=None):
    """Feeds `updates`; with `events` (half_done, resume, tried), stops halfway
    until told to go on, and after the rest tries one short publish (Redis is
    down then) before closing, which waits for Redis to come back."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    lb = Leaderboard(max_users=0, redis=client, key=key, publish_interval_ms=50, close_timeout=120, **config)
    half = len(updates) // 2
    for i, (user, points, ts) in enumerate(updates):
        if events is not None and i == half:
            lb.publish_now(timeout=WAIT)
            events[0].set()
            assert events[1].wait(WAIT)
        lb.update_user(user, points, ts)
        # Publishing right after the early head puts an early landmark in Redis,
        # so a later batch (after the writer's rebase) rebases the shared set.
        flush = i == 29 or i % flush_every == flush_every - 1
        if flush_every and flush and (events is None or i < half):
            assert lb.publish_now(timeout=WAIT)
    if events is not None:
        assert not lb.publish_now(timeout=0.3), "Redis should be down"
        events[2].set()
    stats_before_close = lb.stats()
    lb.close()
    return stats_before_close


def _writer_entry(queue, *args):
    try:
        stats = writer(*args)
        queue.put(("ok", stats.publish_failures, stats.rebases))
    except BaseException as e:  # reported to the parent
        queue.put(("error", repr(e), 0))


def run_writers(ctx, url, key, all_updates, config, flush_every, events=None):
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_writer_entry, args=(queue, url, key, ups, config, flush_every,
                                                None if events is None else events[i]))
        for i, ups in enumerate(all_updates)
    ]
    for p in procs:
        p.start()
    return procs, queue


def join_writers(procs, queue):
    results = [queue.get(timeout=WAIT * 4) for _ in procs]
    for p in procs:
        p.join(WAIT)
        assert p.exitcode == 0
    assert all(r[0] == "ok" for r in results), results
    return results


# -- tests ----------------------------------------------------------------------------

def test_three_writer_processes_equal_one_board_with_rebases(server):
    url, _ = server
    key = fresh_key()
    all_updates = workload(1)
    ctx = multiprocessing.get_context("spawn")
    procs, queue = run_writers(ctx, url, key, all_updates, FAST, flush_every=500)
    results = join_writers(procs, queue)
    ref = reference(all_updates, **FAST)
    client = redis.Redis.from_url(url)
    assert ref.stats().rebases >= 1
    assert sum(r[2] for r in results) >= 1, "the writers rebased"
    assert int(client.hget(keys_of(key)[1], "rebases") or 0) >= 1, "the shared set rebased"
    assert_same(SharedLeaderboard(client, key), ref, now=NOW)


def test_redis_stopped_while_writers_run_then_restarted(server):
    url, srv = server
    if srv is None:
        pytest.skip("ENGAGEHUB_TEST_REDIS_URL is set: the server is not ours to stop")
    key = fresh_key()
    all_updates = workload(2, per_writer=2000)
    ctx = multiprocessing.get_context("spawn")
    events = [(ctx.Event(), ctx.Event(), ctx.Event()) for _ in all_updates]
    procs, queue = run_writers(ctx, url, key, all_updates, FAST, flush_every=300, events=events)
    for half_done, _, _ in events:
        assert half_done.wait(WAIT)
    client = redis.Redis.from_url(url)
    assert len(client.keys("{" + key + "}:pub:*")) == 3, "every writer published before the stop"
    srv.stop()
    for _, resume, _ in events:
        resume.set()
    for _, _, tried in events:
        assert tried.wait(WAIT), "writers updated and failed to publish while Redis was down"
    srv.start()  # AOF: the data published before the stop is back
    results = join_writers(procs, queue)
    assert all(r[1] >= 1 for r in results), "each writer saw publishing fail"
    ref = reference(all_updates, **FAST)
    assert_same(SharedLeaderboard(redis.Redis.from_url(url), key), ref, now=NOW)


def test_a_reply_lost_after_the_script_ran_is_not_applied_twice(server):
    url, _ = server
    key = fresh_key()
    retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    client = redis.Redis.from_url(url, socket_timeout=0.5, retry=retry, retry_on_timeout=False)
    try:
        client.execute_command("DEBUG", "SLEEP", "0")
    except redis.ResponseError:
        pytest.skip("DEBUG is disabled on this server")
    lb = Leaderboard(redis=client, key=key, decay_factor=1.0, publish_interval_ms=3_600_000)
    lb.update_user("a", 5, NOW)
    assert lb.publish_now(timeout=WAIT)
    lb.update_user("a", 7, NOW)
    blocker = redis.Redis.from_url(url)
    conn = blocker.connection_pool.get_connection()
    conn.send_command("DEBUG", "SLEEP", "2")  # the reply is not read
    probe = redis.Redis.from_url(url, socket_timeout=0.05, retry=retry)

    def server_asleep():
        try:
            probe.ping()
            return False
        except redis.TimeoutError:
            return True
    wait_until(server_asleep, what="DEBUG SLEEP to start")
    # The script is sent, the client times out; Redis runs it when it wakes.
    assert not lb.publish_now(timeout=0.2)
    wait_until(lambda: lb.stats().publish_failures >= 1, what="the publisher's call to time out")
    assert lb.publish_now(timeout=WAIT), "the retry succeeds once Redis answers"
    stats = lb.stats()
    assert stats.publish_duplicates == 1, stats
    shared = SharedLeaderboard(redis.Redis.from_url(url), key)
    assert shared.rank("a", now=NOW).score == 12.0
    lb.close()
    blocker.connection_pool.release(conn)


def guide_leaderboard_view(url, key):
    """The guide's leaderboard views (top 10, a user's rank, size), in a process
    that updated nothing."""
    board = SharedLeaderboard(redis.Redis.from_url(url), key)
    top = board.get_top_users(10)
    return top, board.get_user_rank(top[3]["user_id"]), board.get_user_rank("nobody"), board.size()


def test_the_guides_leaderboard_view_from_a_process_that_updated_nothing(server):
    url, _ = server
    key = fresh_key()
    rng = random.Random(3)
    now = int(time.time())
    updates = [(f"discord{rng.randrange(300)}", float(rng.randint(1, 20)), now - rng.randrange(86400 * 3))
               for _ in range(3000)]
    ref = Leaderboard()
    with Leaderboard(redis=redis.Redis.from_url(url), key=key) as lb:
        for u in updates:
            lb.update_user(*u)
            ref.update_user(*u)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        top, rank, missing, size = pool.apply_async(guide_leaderboard_view, (url, key)).get(WAIT)
    want = ref.get_top_users(10)
    assert [(r["user_id"], r["rank"], r["last_update"]) for r in top] == [
        (r["user_id"], r["rank"], r["last_update"]) for r in want
    ]
    # Wall-clock scores: the two reads may be a second apart (0.95/day: 6e-7).
    assert all(math.isclose(a["score"], b["score"], rel_tol=1e-5) for a, b in zip(top, want))
    assert rank["rank"] == 4 and rank["user_id"] == want[3]["user_id"]
    assert missing is None
    assert size == ref.size()


def test_set_and_remove_propagate(server):
    url, _ = server
    key = fresh_key()
    client = redis.Redis.from_url(url)
    ref = Leaderboard(decay_factor=0.9)
    with Leaderboard(decay_factor=0.9, redis=client, key=key) as lb:
        for board in (lb, ref):
            for i in range(10):
                board.update_user(f"p{i}", i + 1, NOW - i * 100)
            board.set("p0", 100.0, NOW - 5)
            board.update_user("p0", 1.0, NOW)  # after the set: adds to it
            board.remove("p5")
        assert lb.publish_now(WAIT)
        shared = SharedLeaderboard(client, key)
        assert_same(shared, ref, now=NOW, k=10)
        assert shared.rank("p0", now=NOW).rank == 1
        assert shared.get_user_rank("p5") is None
        # Another writer's set of an existing user replaces its shared value.
        with Leaderboard(decay_factor=0.9, redis=client, key=key) as other:
            other.set("p9", 1000.0, NOW)
        ref.set("p9", 1000.0, NOW)
        assert_same(shared, ref, now=NOW, k=10)


def test_max_users_trims_the_shared_board_and_counts_it(server):
    url, _ = server
    key = fresh_key()
    client = redis.Redis.from_url(url)
    ref = Leaderboard(decay_factor=1.0, max_users=5)
    with Leaderboard(decay_factor=1.0, max_users=5, redis=client, key=key) as lb:
        for i in range(20):
            for board in (lb, ref):
                board.update_user(f"m{i:02d}", float(i % 7), NOW)
        assert lb.publish_now(WAIT)
        assert lb.stats().trimmed == 15
    shared = SharedLeaderboard(client, key)
    assert shared.size() == 5 and shared.trimmed() == 15
    assert client.zcard(keys_of(key)[2]) == 5, "trimmed users' last updates are gone too"
    assert [(r.user_id, r.score) for r in shared.top(10, now=NOW)] == [
        (r.user_id, r.score) for r in ref.top(10, now=NOW)
    ]


def test_pending_bound_is_counted_and_logged(server, caplog):
    url, _ = server
    lb = Leaderboard(redis=redis.Redis.from_url(url), key=fresh_key(), max_pending=2, publish_interval_ms=3_600_000)
    for user in ("a", "b", "c"):
        lb.update_user(user, 1.0, NOW)
    assert lb.stats().pending_dropped == 1
    with caplog.at_level(logging.WARNING, logger="engagehub"):
        assert lb.publish_now(WAIT)
    assert any("not recorded" in r.getMessage() for r in caplog.records)
    lb.close()


def test_evicting_policy_warns_on_the_first_publish_not_in_the_constructor(server):
    url, srv = server
    if srv is None:
        pytest.skip("ENGAGEHUB_TEST_REDIS_URL is set: not changing its config")
    client = redis.Redis.from_url(url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lb = Leaderboard(redis=client, key=fresh_key(), publish_interval_ms=3_600_000)
            assert not caught, "the constructor makes no Redis call"
            lb.update_user("a", 1.0, NOW)
            assert lb.publish_now(WAIT)  # the publisher thread's first cycle reads the policy
            lb.close()
        assert sum("allkeys-lru" in str(w.message) for w in caught) == 1
    finally:
        client.config_set("maxmemory-policy", "noeviction")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_publishes_under_its_own_id(server):
    url, _ = server
    key = fresh_key()
    client = redis.Redis.from_url(url)
    read_id, write_id = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        lb = Leaderboard(decay_factor=1.0, redis=client, key=key, publish_interval_ms=3_600_000)
        lb.update_user("f", 1.0, NOW)  # pending at the fork: the parent's
        pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            lb.update_user("f", 10.0, NOW)
            code = 0 if lb.publish_now(10) else 2
            os.write(write_id, lb._publisher.publisher_id.encode())
            lb.close()
        finally:
            os._exit(code)
    os.close(write_id)
    child_id = os.read(read_id, 64).decode()
    os.close(read_id)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert lb.publish_now(WAIT)
    assert child_id and child_id != lb._publisher.publisher_id
    lb.close()
    assert SharedLeaderboard(client, key).rank("f", now=NOW).score == 11.0
    assert client.keys("{" + key + "}:pub:*") == [], "closed cleanly: no sequence key left"


def test_publish_now_is_a_barrier_not_a_chase(server):
    """With another thread updating all the time, publish_now still returns once
    the changes made before it are applied."""
    import threading

    url, _ = server
    key = fresh_key()
    lb = Leaderboard(decay_factor=1.0, redis=redis.Redis.from_url(url), key=key, publish_interval_ms=3_600_000)
    lb.update_user("before", 3.0, NOW)
    stop = threading.Event()

    def keep_updating():
        i = 0
        while not stop.is_set():
            lb.update_user(f"busy{i % 1000}", 1.0, NOW)
            i += 1

    t = threading.Thread(target=keep_updating)
    t.start()
    try:
        assert lb.publish_now(timeout=WAIT)
        assert SharedLeaderboard(redis.Redis.from_url(url), key).rank("before", now=NOW).score == 3.0
    finally:
        stop.set()
        t.join(WAIT)
    lb.close()


def test_publish_script_equals_one_command_per_row(server):
    """The script reads scores in bulk and writes one multi-member ZADD per run of
    increments; the result must be what ZINCRBY / ZADD / ZREM row by row give, to
    the bit: a user repeated within a run (a sum for an evicted user next to the
    user's new entry), across the 3,000-user ZMSCORE boundary, after a set and a
    remove of the same user, and a batch computed against another landmark."""
    import json
    import struct

    from engagehub.shared._schema import LEADERBOARD_PUBLISH

    url, _ = server
    client = redis.Redis.from_url(url)
    z, meta, last = keys_of(fresh_key())
    script = client.register_script(LEADERBOARD_PUBLISH)
    rng = random.Random(12)
    decay, period = 0.5, 3600.0
    lam = -math.log(decay) / period
    landmark = NOW - 7200
    want, want_last = {}, {}
    for i in range(500):  # users already on the shared board
        want[f"u{i}"] = -rng.uniform(1, 100)
        want_last[f"u{i}"] = landmark
    client.zadd(z, {u: v for u, v in want.items()})
    client.zadd(last, {u: t for u, t in want_last.items()})
    client.hset(meta, mapping={"version": "1", "landmark": landmark, "decay_factor": repr(decay),
                               "decay_period_secs": repr(period)})

    def batch(seq, blm, rows):
        ids = json.dumps([r[1] for r in rows]).encode()
        blob = struct.pack("<" + "Bdq" * len(rows), *[x for k, _, v, t in rows for x in (k, v, t)])
        return script(keys=[z, meta, last, f"{z[:-2]}:pub:p", f"{z}:rebase"],
                      args=[seq, blm, repr(decay), repr(period), 0, 60, ids, blob])

    def apply(blm, rows):
        scale = math.exp(lam * (blm - landmark)) if blm != landmark else 1.0
        for kind, user, v, t in rows:
            if scale != 1.0:
                v = v * scale
            if kind == 2:
                want.pop(user, None)
                want_last.pop(user, None)
                continue
            want[user] = v if kind == 1 or user not in want else want[user] + v
            want_last[user] = max(want_last.get(user, t), t)

    ops = [(1, "u3", -42.5, NOW - 10), (2, "u4", 0.0, 0), (1, "new-set", -7.25, NOW - 9), (2, "u4", 0.0, 0)]
    adds = [(0, f"u{10 + rng.randrange(690)}", -rng.uniform(0, 10), NOW - rng.randrange(5000)) for _ in range(6500)]
    adds[2999:3001] = [(0, "twice", -1.0 / 3, NOW - 5), (0, "twice", -1.0 / 7, NOW - 6)]  # across the boundary
    adds += [(0, "u3", -0.1, NOW - 4), (0, "u4", -0.2, NOW - 3), (0, "u4", -0.3, NOW - 2)]
    # A set and a remove between two runs of increments of the same users.
    rows = ops + adds[:4000] + [(1, "u5", -3.0, NOW - 1), (2, "u6", 0.0, 0)] + adds[4000:]
    assert list(batch(1, landmark, rows)) == [1, 0, 0]
    apply(landmark, rows)
    later = [(0, "u7", -2.0, NOW), (0, "u7", -3.0, NOW), (0, "u8", -1.0, NOW)]
    assert list(batch(2, landmark + 600, later)) == [1, 0, 0]  # scaled by exp(λ·600)
    apply(landmark + 600, later)
    assert list(batch(2, landmark + 600, later)) == [0, 0, 0]  # a duplicate

    got = {m.decode(): s for m, s in client.zrange(z, 0, -1, withscores=True)}
    assert got == want  # exact: the same double additions in the same order
    assert {m.decode(): int(s) for m, s in client.zrange(last, 0, -1, withscores=True)} == want_last
    assert "u6" not in got and got["u4"] == -0.2 + -0.3  # removed, then increments anew


def test_publish_last_update_off_leaves_the_last_update_set_alone(server):
    from engagehub.errors import InvalidType

    url, _ = server
    key = fresh_key()
    z, _, last = keys_of(key)
    client = redis.Redis.from_url(url)
    with pytest.raises(InvalidType):
        Leaderboard(redis=client, key=key, publish_last_update=1)
    quiet = Leaderboard(max_users=0, redis=client, key=key, decay_factor=1.0, publish_interval_ms=3_600_000,
                        publish_last_update=False)
    for i in range(50):
        quiet.update_user(f"u{i}", float(i + 1), NOW - i)
    quiet.set("u0", 100.0, NOW)
    assert quiet.publish_now(timeout=WAIT)
    assert client.zcard(z) == 50 and not client.exists(last)
    shared = SharedLeaderboard(client, key)
    top = shared.top(3, now=NOW)
    assert [(r.user_id, r.score, r.last_update) for r in top] == [("u0", 100.0, 0), ("u49", 50.0, 0),
                                                                  ("u48", 49.0, 0)]
    # A writer that publishes last updates fills them in; the quiet one's scores add up.
    loud = Leaderboard(max_users=0, redis=client, key=key, decay_factor=1.0, publish_interval_ms=3_600_000)
    loud.update_user("u48", 2.0, NOW - 5)
    assert loud.publish_now(timeout=WAIT)
    assert [(r.user_id, r.score, r.last_update) for r in shared.top(3, now=NOW)] == [
        ("u0", 100.0, 0), ("u48", 51.0, NOW - 5), ("u49", 50.0, 0)]
    quiet.remove("u48")
    assert quiet.publish_now(timeout=WAIT)
    assert client.zscore(last, "u48") is None  # a remove still clears it
    quiet.close()
    loud.close()
