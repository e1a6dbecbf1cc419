"""The asyncio readers (``AsyncSharedAnalytics``, ``AsyncSharedLeaderboard``) side by
side with the blocking ones, against the same private redis-server (a unix socket,
redis_server.py): every query gives the same answer, every fault the same error
(``Corrupt`` naming the key, ``NotFound``, ``InvalidArgument``, redis-py's
``ConnectionError``), and a client of the wrong kind is refused with a
``TypeError`` that names the right class. One writer processor and one writer
board publish first (event-time clock, fixed timestamps, dead letters included)."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from typing import Any, Callable, Iterator, List, Tuple

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed")
import redis.asyncio  # noqa: E402
from redis.asyncio.retry import Retry as AsyncRetry  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

from engagehub import Corrupt, EventStreamProcessor, InvalidArgument, Leaderboard, NotFound  # noqa: E402
from engagehub.errors import BatchFailed  # noqa: E402
from engagehub.shared import (  # noqa: E402
    AsyncSharedAnalytics,
    AsyncSharedLeaderboard,
    SharedAnalytics,
    SharedLeaderboard,
    _schema,
)
from redis_server import WAIT, RedisServer, require_server  # noqa: E402

HOUR0 = 1_764_633_600  # a minute boundary
ANALYTICS = (SharedAnalytics, AsyncSharedAnalytics)
BOARDS = (SharedLeaderboard, AsyncSharedLeaderboard)
NS, BOARD = f"async-{uuid.uuid4().hex[:6]}", f"async-lb-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = RedisServer(require_server(pytest), persistent=False).start()
    client = srv.client()
    # What the readers read: 900 events over 15 minutes (the last 300 dead-lettered)
    # and a board of 40 users.
    failing = {"on": False}

    def save(batch: Any) -> None:
        if failing["on"]:
            raise BatchFailed("database down (test)")

    with EventStreamProcessor(num_threads=0, clock="event_time", max_retries=0, redis=client, namespace=NS,
                              publish_timeout=WAIT) as p, \
            Leaderboard(decay_factor=0.9, redis=client, key=BOARD, close_timeout=WAIT) as board:
        p.set_flush_callback(save)
        for part in range(3):
            failing["on"] = part == 2
            p.push_many([("message", f"u{i % 70}", f"c{i % 6}", HOUR0 + part * 300 + i) for i in range(300)])
            p.flush_now(WAIT)
        for i in range(40):
            board.update_user(f"p{i}", 1.0 + i % 9, HOUR0 - i * 600)
        assert p.publish_now(WAIT) and board.publish_now(WAIT)
    client.close()
    try:
        yield srv
    finally:
        srv.close()


def both(server: RedisServer, kinds: Tuple[type, type], made_with: tuple, calls: List[Tuple[str, tuple]],
         **kwargs: Any) -> Tuple[List[Any], List[Any]]:
    """Each ``(method, args)`` of ``calls`` on a blocking reader and on an asyncio
    one (``kinds``, made with ``(client, *made_with, **kwargs)``): their answers, or the
    exceptions they raised as (class, message)."""
    blocking_kind, async_kind = kinds
    def outcome(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - compared below
            return (type(exc), str(exc))

    client = server.client()
    sync_reader = blocking_kind(client, *made_with, **kwargs)
    blocking = [outcome(lambda: getattr(sync_reader, name)(*args)) for name, args in calls]
    client.close()

    async def run() -> List[Any]:
        aclient = redis.asyncio.Redis(unix_socket_path=server.socket)
        reader = async_kind(aclient, *made_with, **kwargs)
        out = []
        for name, args in calls:
            try:
                out.append(await getattr(reader, name)(*args))
            except Exception as exc:  # noqa: BLE001
                out.append((type(exc), str(exc)))
        await aclient.aclose()
        return out

    return blocking, asyncio.run(run())


ANALYTICS_CALLS = [
    ("now", ()),
    ("unique_users", (3600, None)),
    ("unique_users", (None,)),
    ("unique_users", (300, HOUR0 + 400)),
    ("get_unique_users_last_hour", ()),
    ("top_channels", (3,)),
    ("top_channels", (10, 600, HOUR0 + 700)),
    ("get_top_channels", (2,)),
    ("total_events_processed", ()),
    ("events_dead_lettered", ()),
    ("config", ()),
    ("unique_users", (7200,)),  # longer than the window: InvalidArgument
    ("top_channels", (-1,)),
]

BOARD_CALLS = [
    ("top", (5,)),
    ("top", (3, 10, HOUR0)),
    ("rank", ("p7", HOUR0)),
    ("around", ("p7", 2, HOUR0)),
    ("get_top_users", (4,)),
    ("get_user_rank", ("p3",)),
    ("get_user_rank", ("nobody",)),
    ("size", ()),
    ("trimmed", ()),
    ("rank", ("nobody",)),  # NotFound
    ("top", ("ten",)),  # InvalidType
]


def test_the_asyncio_readers_answer_what_the_blocking_ones_answer(server: RedisServer) -> None:
    blocking, awaited = both(server, ANALYTICS, (NS,), ANALYTICS_CALLS, check_eviction=False)
    assert awaited == blocking
    answers = dict(zip([name for name, _ in ANALYTICS_CALLS], blocking))
    assert answers["total_events_processed"] == 900 and answers["events_dead_lettered"] == 300
    assert answers["now"] == HOUR0 + 899 and answers["get_top_channels"] == [("c0", 150), ("c1", 150)]
    assert blocking[-2][0] is InvalidArgument and blocking[-1][0] is InvalidArgument

    blocking, awaited = both(server, BOARDS, (BOARD,), BOARD_CALLS)
    assert awaited == blocking
    assert [r.user_id for r in blocking[0]] == ["p8", "p17", "p26", "p35", "p7"]
    assert blocking[5]["rank"] > 0 and blocking[6] is None and blocking[7] == 40
    assert blocking[-2][0] is NotFound and blocking[-1][0].__name__ == "InvalidType"


def test_corrupt_keys_raise_the_same_corrupt_naming_the_key(server: RedisServer) -> None:
    client = server.client()
    ns, board = f"bad-{uuid.uuid4().hex[:6]}", f"bad-lb-{uuid.uuid4().hex[:6]}"
    z, meta, _ = _schema.board_keys(board)
    client.set(_schema.key(ns, "uu", "all"), b"HYLL" + b"\xff" * 40)  # a header, then garbage
    client.set(_schema.key(ns, "uu", HOUR0), "x")
    client.set(_schema.key(ns, "ch", "all"), "x")
    client.set(_schema.key(ns, "dead_lettered"), "lots")
    client.set(_schema.key(ns, "clock"), "noon")
    client.zadd(z, {"u": -1.0})
    client.hset(meta, mapping={"version": 1, "landmark": "soon", "decay_factor": 0.9, "decay_period_secs": 60.0})
    client.close()
    cases = [
        ("unique_users", (None,), _schema.key(ns, "uu", "all")),
        ("unique_users", (60, HOUR0 + 10), _schema.key(ns, "uu", HOUR0)),
        ("users_sketch", (60, HOUR0 + 10), _schema.key(ns, "uu", HOUR0)),
        ("top_channels", (3,), _schema.key(ns, "ch", "all")),
        ("events_dead_lettered", (), _schema.key(ns, "dead_lettered")),
        ("now", (), _schema.key(ns, "clock")),
    ]
    blocking, awaited = both(server, ANALYTICS, (ns,), [(name, args) for name, args, _ in cases],
                             check_eviction=False)
    assert awaited == blocking
    for (name, _, key), (kind, message) in zip(cases, blocking):
        assert kind is Corrupt and key in message, (name, message)

    blocking, awaited = both(server, BOARDS, (board,), [("top", (3,)), ("size", ())])
    assert awaited == blocking
    assert blocking[0][0] is Corrupt and meta in blocking[0][1]
    assert blocking[1] == 1


def test_connection_errors_pass_through_and_wrong_clients_are_refused(server: RedisServer) -> None:
    absent = server.socket + ".absent"  # (clients without retries: redis-py's take seconds)

    async def down() -> None:
        aclient = redis.asyncio.Redis(unix_socket_path=absent, retry=AsyncRetry(NoBackoff(), 0))
        with pytest.raises(redis.ConnectionError):
            await AsyncSharedAnalytics(aclient, NS).total_events_processed()
        with pytest.raises(redis.ConnectionError):
            await AsyncSharedLeaderboard(aclient, BOARD).top(3)
        # A blocking reader given an asyncio client: refused, no coroutine left behind.
        with pytest.raises(TypeError, match="AsyncSharedAnalytics"):
            SharedAnalytics(aclient, NS, check_eviction=False).total_events_processed()
        await aclient.aclose()

    asyncio.run(down())
    with pytest.raises(redis.ConnectionError):
        SharedAnalytics(redis.Redis(unix_socket_path=absent, retry=Retry(NoBackoff(), 0)), NS,
                        check_eviction=False).total_events_processed()
    client = server.client()
    with pytest.raises(TypeError, match="redis.asyncio client"):
        asyncio.run(AsyncSharedLeaderboard(client, BOARD).size())
    client.close()


def test_the_first_async_query_checks_the_eviction_policy_once(server: RedisServer) -> None:
    client = server.client()
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.close()

    async def queries() -> List[int]:
        aclient = redis.asyncio.Redis(unix_socket_path=server.socket)
        shared = AsyncSharedAnalytics(aclient, NS)
        with pytest.warns(RuntimeWarning, match="allkeys-lru"):
            first = await shared.total_events_processed()
        second = await shared.total_events_processed()  # no second warning (an error under -W error)
        await aclient.aclose()
        return [first, second]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            assert asyncio.run(queries()) == [900, 900]
    finally:
        client = server.client()
        client.config_set("maxmemory-policy", "noeviction")
        client.close()
