"""GuildLeaderboards (issue 22): a leaderboard per guild in one native handle.

- each guild answers as an independent ``Leaderboard`` fed the same updates;
- bad input raises the typed error and changes nothing; max_guilds; closed handles;
- with ``redis=``: 10,000 guilds publish through ONE thread and every shared board
  equals its in-process board; exactly once after lost replies and after a fault
  injected after any write of a batch's script; close publishes everything within
  its timeout, and gives up within it when Redis is stalled; the constructor makes
  no network call; a writer whose decay disagrees with a shared board is refused;
  rebases of the shared sets run per guild; forks while threads use the group.

Redis servers are private, on unix sockets (tests/python/redis_server.py).
"""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
import uuid
import warnings
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import engagehub
from engagehub import Closed, Full, GuildLeaderboards, InvalidArgument, InvalidType, Leaderboard, NotFound
from redis_server import WAIT, LosingReplies, RedisServer, require_server, wait_until

HOUR0 = 1_764_633_600


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def as_rows(rows: List[Any]) -> List[Tuple[str, int, float, int]]:
    return [(r.user_id, r.rank, r.score, r.last_update) for r in rows]


# -- in-process: each guild is a Leaderboard -----------------------------------------------------


def test_each_guild_answers_as_an_independent_leaderboard() -> None:
    rng = random.Random(7)
    settings = {"decay_factor": 0.9, "decay_period_secs": 3600.0, "max_users": 6}
    group = GuildLeaderboards(**settings)
    boards: Dict[str, Leaderboard] = {}
    now = HOUR0
    for step in range(6000):
        guild = f"g{rng.randrange(40)}"
        user = f"u{rng.randrange(15)}"
        ts = now - rng.randrange(7200)
        what = rng.random()
        board = boards.get(guild)
        if what < 0.75:
            points = float(rng.randrange(-2, 20))
            if board is None:
                board = boards[guild] = Leaderboard(**settings)
            assert group.update_user(guild, user, points, ts) == board.update_user(user, points, ts)
        elif what < 0.88:
            score = float(rng.randrange(0, 30))
            if board is None:
                board = boards[guild] = Leaderboard(**settings)
            try:
                board.set(user, score, ts)
            except Full:
                with pytest.raises(Full):
                    group.set_score(guild, user, score, ts)
            else:
                group.set_score(guild, user, score, ts)
        elif what < 0.97:
            held = board is not None and board.get_user_rank(user) is not None
            if held:
                board.remove(user)
                group.remove_user(guild, user)
            else:
                with pytest.raises(NotFound):
                    group.remove_user(guild, user)
        elif what < 0.99:
            assert group.drop_guild(guild) == (boards.pop(guild, None) is not None)
        else:
            now += rng.randrange(20_000)
        if step % 50 == 0 or step > 5900:
            for name, b in boards.items():
                assert as_rows(group.top(name, 100, now=now)) == as_rows(b.top(100, now=now)), name
                assert group.size(name) == b.size()
                assert group.top(name, 2, offset=1, now=now) == b.top(2, offset=1, now=now)
    assert sorted(group.guilds()) == sorted(boards) and group.guilds() == sorted(boards)
    for name, b in boards.items():
        for r in b.top(100, now=now):
            assert group.rank(name, r.user_id, now=now) == b.rank(r.user_id, now=now)
            assert group.around(name, r.user_id, 2, now=now) == b.around(r.user_id, 2, now=now)
        assert group.get_top_users(name, 3) == b.get_top_users(3)
        assert group.get_user_rank(name, "nobody") is None
    s = group.stats()
    assert s.boards == len(boards)
    assert s.users == sum(b.size() for b in boards.values())
    assert s.evicted + s.refused > 0
    assert s.refused == sum(b.stats().refused for b in boards.values())
    assert s.heap_bytes > 0 and s.pending == 0
    for b in boards.values():
        b.close()
    group.close()


def test_a_guild_id_may_be_an_int_or_its_digits() -> None:
    with GuildLeaderboards(decay_factor=1.0) as group:
        group.update_user(123456789012345678, "u", 1.0, HOUR0)
        group.update_user("123456789012345678", "u", 2.0, HOUR0)
        group.update_user(b"123456789012345678", "v", 1.0, HOUR0)
        assert group.guilds() == ["123456789012345678"]
        assert group.rank(123456789012345678, "u", now=HOUR0).score == 3.0
        assert group.size("123456789012345678") == 2
        assert group.top("nowhere") == [] and group.size("nowhere") == 0
        with pytest.raises(NotFound):
            group.rank("nowhere", "u")
        with pytest.raises(NotFound):
            group.around("nowhere", "u")


def test_the_time_source_is_now() -> None:
    with GuildLeaderboards(decay_factor=0.5, decay_period_secs=100.0) as group:
        group.set_time_source(lambda: HOUR0)
        group.update_user("g", "u", 8.0)
        assert group.rank("g", "u").score == 8.0 and group.rank("g", "u").last_update == HOUR0
        group.set_time_source(lambda: HOUR0 + 200)
        assert group.rank("g", "u").score == 2.0
        assert group.get_top_users("g")[0]["score"] == 2.0
        group.set_time_source(None)
        with pytest.raises(InvalidType):
            group.set_time_source(5)  # type: ignore[arg-type]


def test_bad_input_raises_and_changes_nothing() -> None:
    group = GuildLeaderboards(decay_factor=1.0, max_users=3)
    group.update_user("g", "alice", 5.0, HOUR0)
    group.update_user("g", "bob", 3.0, HOUR0)

    def state() -> Any:
        return group.guilds(), as_rows(group.top("g", now=HOUR0)), group.stats()

    before = state()
    far_future = int(time.time()) + 30 * 86400
    for call, error in [
        (lambda: group.update_user(None, "u", 1.0), InvalidType),
        (lambda: group.update_user(1.5, "u", 1.0), InvalidType),
        (lambda: group.update_user(True, "u", 1.0), InvalidType),
        (lambda: group.update_user("", "u", 1.0), InvalidArgument),
        (lambda: group.update_user("x" * 1025, "u", 1.0), InvalidArgument),
        (lambda: group.update_user("g\udc80", "u", 1.0), InvalidArgument),
        (lambda: group.update_user("g", 5, 1.0), InvalidType),
        (lambda: group.update_user("g", "", 1.0), InvalidArgument),
        (lambda: group.update_user("g", "alice", "many"), InvalidType),
        (lambda: group.update_user("g", "alice", float("nan")), InvalidArgument),
        (lambda: group.update_user("new", "alice", float("inf")), InvalidArgument),
        (lambda: group.update_user("g", "alice", 1.0, "now"), InvalidType),
        (lambda: group.update_user("g", "alice", 1.0, far_future), InvalidArgument),
        (lambda: group.update_user("new", "alice", 1.0, 2**70), InvalidArgument),
        (lambda: group.set_score("g", "alice", float("nan")), InvalidArgument),
        (lambda: group.set_score("new", "", 1.0), InvalidArgument),
        (lambda: group.remove_user("", "alice"), InvalidArgument),
        (lambda: group.remove_user("g", "carol"), NotFound),
        (lambda: group.remove_user("new", "carol"), NotFound),
        (lambda: group.top("g", -1), InvalidArgument),
        (lambda: group.top("g", "10"), InvalidType),
        (lambda: group.top("g", now=2**70), InvalidArgument),
        (lambda: group.around("g", "alice", radius=-2), InvalidArgument),
        (lambda: group.rank(["g"], "alice"), InvalidType),
        (lambda: group.size({}), InvalidType),
        (lambda: group.drop_guild(None), InvalidType),
        (lambda: group.size(""), InvalidArgument),
    ]:
        with pytest.raises(error):
            call()
    # The newcomer ranking below everyone at max_users: False, counted, no change.
    group.update_user("g", "carol", 1.0, HOUR0)
    assert group.update_user("g", "dave", 0.5, HOUR0) is False
    with pytest.raises(Full):
        group.add("g", "dave", 0.5, HOUR0)
    after = state()
    assert after[0] == before[0]
    assert after[2].refused == 2 and after[2].future_refused == 1
    assert [r[0] for r in after[1]] == ["alice", "bob", "carol"]
    group.close()


def test_bad_settings_are_refused() -> None:
    for kwargs, error in [
        ({"decay_factor": 0}, InvalidArgument),
        ({"decay_factor": 1.5}, InvalidArgument),
        ({"decay_factor": "0.9"}, InvalidType),
        ({"decay_period_secs": 0}, InvalidArgument),
        ({"decay_period_secs": -5.0}, InvalidArgument),
        ({"max_users": -1}, InvalidArgument),
        ({"max_users": 1.5}, InvalidType),
        ({"max_guilds": True}, InvalidType),
        ({"max_guilds": -1}, InvalidArgument),
        ({"max_future_secs": 0}, InvalidArgument),
        ({"publish_last_update": "yes"}, InvalidType),
        ({"redis": object()}, InvalidArgument),  # no key_prefix
        ({"redis": object(), "key_prefix": ""}, InvalidArgument),
        ({"redis": object(), "key_prefix": "p", "max_pending": 0}, InvalidArgument),
        ({"redis": object(), "key_prefix": "p", "publish_interval_ms": 0}, InvalidArgument),
        ({"redis": object(), "key_prefix": "p", "close_timeout": -1}, InvalidArgument),
    ]:
        before = {t.name for t in threading.enumerate()}
        with pytest.raises(error):
            GuildLeaderboards(**kwargs)
        assert {t.name for t in threading.enumerate()} == before, kwargs


def test_max_guilds_refuses_a_new_guild_until_one_is_dropped() -> None:
    with GuildLeaderboards(max_guilds=2) as group:
        group.update_user("a", "u", 1.0)
        group.update_user("b", "u", 1.0)
        with pytest.raises(Full, match="max_guilds"):
            group.update_user("c", "u", 1.0)
        assert group.update_user("a", "v", 1.0)
        assert group.drop_guild("b") and not group.drop_guild("b")
        assert group.update_user("c", "u", 1.0)
        assert group.guilds() == ["a", "c"]


def test_every_call_on_a_closed_group_raises_closed() -> None:
    group = GuildLeaderboards()
    group.update_user("g", "u", 1.0)
    with group:
        pass
    assert group.closed
    group.close()  # idempotent
    for call in (
        lambda: group.update_user("g", "u", 1.0), lambda: group.add("g", "u", 1.0),
        lambda: group.set_score("g", "u", 1.0), lambda: group.remove_user("g", "u"),
        lambda: group.top("g"), lambda: group.rank("g", "u"), lambda: group.around("g", "u"),
        lambda: group.size("g"), lambda: group.guilds(), lambda: group.drop_guild("g"),
        lambda: group.stats(), lambda: group.publish_now(), lambda: group.get_top_users("g"),
        lambda: group.get_user_rank("g", "u"),
    ):
        with pytest.raises(Closed):
            call()
    assert "closed" in repr(group)


def test_close_while_other_threads_use_the_group_ends_their_calls() -> None:
    group = GuildLeaderboards()
    for g in range(200):
        group.update_user(g, "u", 1.0)
    outcomes: List[str] = []

    def worker(n: int) -> None:
        i = 0
        while True:
            try:
                if n % 2:
                    group.update_user(i % 300, f"u{i % 7}", 1.0)
                else:
                    group.top(i % 300)
            except Closed:
                outcomes.append("closed")
                return
            i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: group.stats().users > 400, what="the workers to update")
    group.close()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert outcomes == ["closed"] * 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forks_while_threads_update_and_query_give_whole_groups() -> None:
    group = GuildLeaderboards(decay_factor=1.0)
    for g in range(500):
        group.update_user(g, "u", 1.0, HOUR0)
    stop = threading.Event()

    def busy(n: int) -> None:
        i = 0
        while not stop.is_set():
            if n:
                group.update_user(i % 600, f"u{i % 9}", 1.0, HOUR0)
            else:
                group.top(i % 600, now=HOUR0)
                group.stats()
            i += 1

    threads = [threading.Thread(target=busy, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
            for _ in range(40):
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        group.update_user("child", "c", 2.0, HOUR0)
                        ok = group.rank("child", "c", now=HOUR0).score == 2.0 and group.stats().boards >= 501
                        code = 0 if ok else 2
                        group.close()
                    finally:
                        os._exit(code)
                try:
                    _, status = wait_until(lambda: (lambda r: r if r[0] else None)(os.waitpid(pid, os.WNOHANG)),
                                           what="the child to exit")
                except AssertionError:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    raise
                assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT)
    assert group.size("child") == 0, "the children's updates stay theirs"
    group.close()


# -- Redis -----------------------------------------------------------------------------------------

redis = pytest.importorskip("redis", reason="redis-py is not installed")
from engagehub.shared import SharedLeaderboard, _schema  # noqa: E402


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = RedisServer(require_server(pytest), persistent=False).start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def client(server: RedisServer) -> Any:
    c = server.client(socket_timeout=5)
    yield c
    c.close()


def publisher_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("engagehub-publish-")]


def shared_rows(client: Any, prefix: str, guild: Any, now: int) -> List[Tuple[str, int, float, int]]:
    return as_rows(SharedLeaderboard(client, f"{prefix}:{guild}").top(1000, now=now))


def local_rows(group: GuildLeaderboards, guild: Any, now: int) -> List[Tuple[str, int, float, int]]:
    return as_rows(group.top(guild, 1000, now=now))


def test_ten_thousand_guilds_publish_through_one_thread_and_equal_their_boards(client: Any) -> None:
    prefix = fresh("guilds")
    before = set(threading.enumerate())
    group = GuildLeaderboards(decay_factor=1.0, max_users=50, redis=client, key_prefix=prefix,
                              publish_interval_ms=3_600_000, close_timeout=WAIT)
    rng = random.Random(11)
    guilds = [100_000_000_000_000_000 + 7919 * g for g in range(10_000)]
    for g in guilds:
        for _ in range(3):
            group.update_user(g, f"u{rng.randrange(5)}", float(rng.randrange(1, 9)), HOUR0 - rng.randrange(600))
    group.set_score(guilds[5], "u9", 100.0, HOUR0)
    held = group.get_user_rank(guilds[6], "u0") is not None
    if held:
        group.remove_user(guilds[6], "u0")
    new = set(threading.enumerate()) - before
    assert [t.name for t in new] == [f"engagehub-publish-GuildLeaderboards(key_prefix={prefix!r})"]
    assert group.publish_now(WAIT)
    assert set(threading.enumerate()) - before == new, "one publisher thread for 10,000 boards"
    s = group.stats()
    assert (s.boards, s.pending, s.dirty, s.in_flight, s.publish_waiting) == (10_000, 0, 0, 0, 0)
    assert s.published_batches == 10_000 and s.publish_duplicates == 0
    for g in guilds:
        assert shared_rows(client, prefix, g, HOUR0) == local_rows(group, g, HOUR0), g
    # A second round touches 30 guilds: only their boards are published.
    changed = rng.sample(guilds, 30)
    for g in changed:
        group.update_user(g, "late", 1.0, HOUR0)
    assert group.stats().dirty == 30
    assert group.publish_now(WAIT)
    assert group.stats().published_batches == 10_030
    for g in changed:
        assert shared_rows(client, prefix, g, HOUR0) == local_rows(group, g, HOUR0)
    # One sequence key per board, all deleted by a clean close.
    assert len(list(client.scan_iter(match="{" + prefix + ":*}:pub:*", count=1000))) == 10_000
    group.close()
    assert list(client.scan_iter(match="{" + prefix + ":*}:pub:*", count=1000)) == []
    wait_until(lambda: not (set(threading.enumerate()) - before), what="the publisher thread to end")


class LosingNth(LosingReplies):
    """Loses the replies of the script calls numbered in ``which`` (1-based, over
    the client's whole life): each such script ran in Redis, but the caller sees
    a dropped connection."""

    def __init__(self, client: Any, which: "set[int]") -> None:
        super().__init__(client, lose=0)
        self.which, self.calls = which, 0

    def _maybe_lose(self, reply: Any) -> Any:
        self.calls += 1
        if self.calls in self.which:
            self.lose = 1
        return super()._maybe_lose(reply)


def test_exactly_once_after_lost_replies(server: RedisServer, client: Any) -> None:
    """Replies lost after their script ran, for the first batch of a publish, one
    in its middle and its last: each batch is applied once (the resend is
    recognised), and every shared board equals its local board."""
    prefix = fresh("lost")
    losing = LosingNth(server.client(socket_timeout=5), {1, 2, 14, 25, 40, 55, 76, 90, 100})
    group = GuildLeaderboards(decay_factor=1.0, redis=losing, key_prefix=prefix, publish_interval_ms=3_600_000,
                              close_timeout=WAIT)
    reference: Dict[str, Dict[str, float]] = {}
    rng = random.Random(3)
    for _ in range(4):
        for _ in range(300):
            g, u, p = f"g{rng.randrange(25)}", f"u{rng.randrange(8)}", float(rng.randrange(1, 5))
            group.update_user(g, u, p, HOUR0)
            reference.setdefault(g, {})[u] = reference.get(g, {}).get(u, 0.0) + p
        assert group.publish_now(WAIT)
        for g, users in reference.items():
            assert {r[0]: r[2] for r in shared_rows(client, prefix, g, HOUR0)} == users, g
            assert shared_rows(client, prefix, g, HOUR0) == local_rows(group, g, HOUR0)
    s = group.stats()
    assert losing.lost == 9
    # Calls 1 and 2 are the first batch and its resend (lost twice): one duplicate.
    assert s.publish_duplicates == 8
    assert s.publish_failures == 9
    group.close()


def board_contents(client: Any, board: str) -> Dict[bytes, Any]:
    """A shared board's keys (not the sequence keys), by content."""
    z, meta, last = _schema.board_keys(board)
    return {
        b"z": client.zrange(z, 0, -1, withscores=True),
        b"meta": sorted(client.hgetall(meta).items()),
        b"last": client.zrange(last, 0, -1, withscores=True),
    }


def test_a_fault_after_any_write_of_a_guild_script_is_undone_and_resent_once(client: Any) -> None:
    """The publish script fails after its n-th write, n = 1, 2, ... (a test-only
    hook), for every guild's batch: at every point each board holds what it held
    before this publish or the whole batch, never a part; in the end every board
    holds its local board, once."""
    prefix, twin_prefix = fresh("fault"), fresh("twin")
    group = GuildLeaderboards(decay_factor=1.0, redis=client, key_prefix=prefix, publish_interval_ms=3_600_000,
                              close_timeout=WAIT)
    twin = GuildLeaderboards(decay_factor=1.0, redis=client, key_prefix=twin_prefix,
                             publish_interval_ms=3_600_000, close_timeout=WAIT)
    guilds = [f"g{i}" for i in range(6)]

    def both(fn: Any) -> None:
        fn(group)
        fn(twin)

    rng = random.Random(5)
    for g in guilds:
        for _ in range(40):
            user = f"p{rng.randrange(12)}"
            both(lambda b: b.update_user(g, user, 2.0, HOUR0 - 5))
    assert group.publish_now(WAIT) and twin.publish_now(WAIT)
    # Increments, new users, a set, a remove and a remove-then-add, in every guild.
    for g in guilds:
        rows = [(f"p{rng.randrange(20)}", float(rng.randrange(1, 9))) for _ in range(60)]
        for u, p in rows:
            both(lambda b: b.update_user(g, u, p, HOUR0 - 4))
        both(lambda b: b.set_score(g, "p3", 500.0, HOUR0 - 2))
        both(lambda b: b.remove_user(g, "p5") if b.get_user_rank(g, "p5") else None)
        both(lambda b: b.remove_user(g, "p6") if b.get_user_rank(g, "p6") else None)
        both(lambda b: b.update_user(g, "p6", 3.0, HOUR0 - 3))
    assert twin.publish_now(WAIT)
    final = {g: board_contents(client, f"{twin_prefix}:{g}") for g in guilds}
    source = group._publisher.source
    writes = 0
    for n in range(1, 500):
        source.script = _schema.with_fault(_schema.LEADERBOARD_PUBLISH, n)
        before = {g: board_contents(client, f"{prefix}:{g}") for g in guilds}
        done = group.publish_now(WAIT)
        for g in guilds:
            now = board_contents(client, f"{prefix}:{g}")
            assert now in (before[g], final[g]), f"{g}: a part of a batch was left behind (fault after write {n})"
        if done:
            writes = n
            break
        assert group.stats().publish_failures >= n
    source.script = _schema.LEADERBOARD_PUBLISH
    assert writes >= 5, writes
    for g in guilds:
        assert board_contents(client, f"{prefix}:{g}") == final[g]
        assert shared_rows(client, prefix, g, HOUR0) == local_rows(group, g, HOUR0)
    group.close()
    twin.close()


def test_close_publishes_everything_within_its_timeout(client: Any) -> None:
    prefix = fresh("close")
    group = GuildLeaderboards(decay_factor=1.0, redis=client, key_prefix=prefix, publish_interval_ms=3_600_000,
                              close_timeout=WAIT)
    for g in range(2000):
        group.update_user(g, "a", float(g % 7 + 1), HOUR0)
        group.update_user(g, "b", 1.0, HOUR0)
    expected = {g: local_rows(group, g, HOUR0) for g in range(2000)}
    started = time.monotonic()
    group.close()
    assert time.monotonic() - started < WAIT
    assert group.unpublished == 0
    for g in range(2000):
        assert shared_rows(client, prefix, g, HOUR0) == expected[g]


def test_close_gives_up_within_its_timeout_when_redis_is_stalled() -> None:
    with RedisServer(require_server(pytest), persistent=False) as srv:
        c = srv.client(socket_timeout=WAIT)
        group = GuildLeaderboards(redis=c, key_prefix=fresh("stall"), publish_interval_ms=3_600_000,
                                  close_timeout=0.5)
        group.update_user("g", "u", 1.0)
        assert group.publish_now(WAIT)
        group.update_user("g", "u", 1.0)
        group.update_user("h", "u", 1.0)
        srv.stall()
        try:
            started = time.monotonic()
            assert group.publish_now(0.3) is False
            group.close()
            assert time.monotonic() - started < 0.3 + 0.5 + 2.0
            assert group.unpublished == 2, "the two changes taken, never acknowledged"
        finally:
            srv.resume()
        c.close()


def test_the_constructor_makes_no_network_call(tmp_path: Any) -> None:
    nowhere = redis.Redis(unix_socket_path=str(tmp_path / "absent.sock"), socket_timeout=1)
    started = time.monotonic()
    group = GuildLeaderboards(redis=nowhere, key_prefix="p", close_timeout=0.2)
    group.update_user("g", "u", 1.0)
    assert group.top("g")[0].user_id == "u"
    assert time.monotonic() - started < 1.0
    assert group.publish_now(0.2) is False
    group.close()
    assert group.unpublished == 1


def test_a_writer_whose_decay_disagrees_with_a_shared_board_is_refused(client: Any) -> None:
    prefix = fresh("mismatch")
    with Leaderboard(decay_factor=0.5, redis=client, key=f"{prefix}:g1", close_timeout=WAIT) as other:
        other.update_user("u", 1.0, HOUR0)
        assert other.publish_now(WAIT)
    group = GuildLeaderboards(decay_factor=0.9, redis=client, key_prefix=prefix, publish_interval_ms=3_600_000,
                              close_timeout=1.0)
    group.update_user("g1", "u", 1.0, HOUR0)
    with pytest.raises(InvalidArgument, match="decay"):
        group.publish_now(WAIT)
    assert SharedLeaderboard(client, f"{prefix}:g1").rank("u", now=HOUR0).score == 1.0  # untouched
    group.close()
    assert group.unpublished >= 1


# Halving every 10 s: a timestamp 5,000 s past a board's landmark rebases the local
# board and, once published, starts a rebase of the shared set in steps.
FAST = {"decay_factor": 0.5, "decay_period_secs": 10.0}
T_OLD, T_NEW = HOUR0 - 5000, HOUR0


def test_each_guild_that_needs_it_gets_its_shared_set_rebased(client: Any) -> None:
    prefix = fresh("rebase")
    group = GuildLeaderboards(**FAST, redis=client, key_prefix=prefix, publish_interval_ms=3_600_000,
                              close_timeout=WAIT)
    source = group._publisher.source
    source.rebase_step_count = 20  # several steps per guild
    for g in ("a", "b", "c"):
        for i in range(150):
            group.update_user(g, f"r{i}", 1.0 + i % 13, T_OLD)
    assert group.publish_now(WAIT)
    for g in ("a", "b"):  # c stays at the old landmark
        group.update_user(g, "late", 5.0, T_NEW)
    assert group.stats().rebases >= 2
    assert group.publish_now(WAIT)
    meta = {g: _schema.board_keys(f"{prefix}:{g}")[1] for g in ("a", "b", "c")}
    wait_until(lambda: group.publish_now(WAIT) and not any(client.hexists(m, "rebase_landmark")
                                                           for m in meta.values()),
               what="the rebases to finish")
    assert source.remote_rebases == 2
    assert {g: int(client.hget(m, "rebases") or 0) for g, m in meta.items()} == {"a": 1, "b": 1, "c": 0}
    for g in ("a", "b", "c"):
        shared = shared_rows(client, prefix, g, T_NEW)
        local = local_rows(group, g, T_NEW)
        assert [r[:2] for r in shared] == [r[:2] for r in local]
        for s, m in zip(shared, local):
            assert math.isclose(s[2], m[2], rel_tol=1e-9, abs_tol=1e-300), (g, s, m)
    group.close()


def test_a_dropped_guild_made_again_publishes_again(client: Any) -> None:
    prefix = fresh("drop")
    group = GuildLeaderboards(decay_factor=1.0, redis=client, key_prefix=prefix, publish_interval_ms=3_600_000,
                              close_timeout=WAIT)
    group.update_user("g", "u", 1.0, HOUR0)
    assert group.publish_now(WAIT)
    group.update_user("g", "u", 5.0, HOUR0)
    assert group.drop_guild("g")
    assert group.stats().unpublished_dropped == 1
    group.update_user("g", "v", 2.0, HOUR0)
    assert group.publish_now(WAIT)
    # The new board's batch is applied (its number is above the first board's);
    # the dropped change never reached Redis.
    assert {r[0]: r[2] for r in shared_rows(client, prefix, "g", HOUR0)} == {"u": 1.0, "v": 2.0}
    assert group.stats().publish_duplicates == 0
    group.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_publishes_its_own_changes_under_a_new_id(client: Any, server: RedisServer) -> None:
    prefix = fresh("forkpub")
    group = GuildLeaderboards(decay_factor=1.0, redis=server.client(socket_timeout=5), key_prefix=prefix,
                              publish_interval_ms=3_600_000, close_timeout=WAIT)
    group.update_user("g", "parent", 1.0, HOUR0)
    assert group.publish_now(WAIT)
    group.update_user("g", "parent", 2.0, HOUR0)  # pending at the fork: the parent's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with a publisher thread
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            group.update_user("g", "child", 5.0, HOUR0)
            group.update_user("h", "child", 1.0, HOUR0)
            code = 0 if group.publish_now(WAIT) and group.stats().published_rows == 2 else 2
            group.close()
        finally:
            os._exit(code)
    _, status = wait_until(lambda: (lambda r: r if r[0] else None)(os.waitpid(pid, os.WNOHANG)),
                           what="the child to exit")
    assert os.waitstatus_to_exitcode(status) == 0
    assert group.publish_now(WAIT)
    assert {r[0]: r[2] for r in shared_rows(client, prefix, "g", HOUR0)} == {"parent": 3.0, "child": 5.0}
    assert {r[0]: r[2] for r in shared_rows(client, prefix, "h", HOUR0)} == {"child": 1.0}
    group.close()
    assert list(client.scan_iter(match="{" + prefix + ":*}:pub:*")) == []


def test_engagehub_exports_it() -> None:
    assert engagehub.GuildLeaderboards is GuildLeaderboards
    assert "GuildLeaderboards" in engagehub.__all__ and "GuildLeaderboardsStats" in engagehub.__all__
