"""The readers' one way to call Redis, for redis-py's blocking and asyncio clients
alike: the eviction-policy check on first use, our scripts, and errors that name
the key at fault.

Every query is written once, as a *plan*: a generator that yields the client calls
it needs (:class:`Op`, e.g. ``Op("pfcount", *keys)``), gets each reply sent back
(or its exception thrown in), and returns the answer. :meth:`Reads.run` drives a
plan with a ``redis.Redis`` (or ``RedisCluster``), :meth:`Reads.arun` with a
``redis.asyncio`` client, so ``SharedAnalytics`` and ``AsyncSharedAnalytics`` (and
the leaderboards) share their keys, scripts, parsing and error diagnosis, and give
the same answers and the same errors.

A reply that shows a key is not what the schema says (a key of another type, a
string that is not a HyperLogLog or an integer, a script's ``ENGAGEHUB corrupt:``
refusal) raises :class:`~engagehub.Corrupt` with a message naming the key. Every
other error is redis-py's own, unchanged: ``redis.ConnectionError`` and
``redis.TimeoutError`` (Redis down or slow: bound them with the client's
``socket_timeout``), ``redis.ResponseError`` for anything else Redis refuses
(permissions, a read-only replica...).

Each query a reader's user calls is timed: :func:`add_observer` registers a
function called as ``observer(reader, query, seconds, error)`` after it
(``engagehub.metrics.instrument_readers`` uses it; nothing is timed without one).
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Dict, Generator, List, Optional, TypeVar

from .. import errors

T = TypeVar("T")


class Op:
    """One client call of a plan: ``getattr(client, name)(*args, **kwargs)``."""

    __slots__ = ("name", "args", "kwargs")

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.name, self.args, self.kwargs = name, args, kwargs

    def __repr__(self) -> str:
        return f"Op({self.name!r}, {len(self.args)} args)"


#: A plan returning a ``T``: yields :class:`Op`\\ s, is sent their replies.
Plan = Generator[Op, Any, T]


def drive(client: Any, plan: "Plan[T]") -> T:
    """Runs ``plan`` with a blocking client."""
    reply: Any = None
    error: Optional[BaseException] = None
    while True:
        try:
            op = plan.send(reply) if error is None else plan.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            reply, error = getattr(client, op.name)(*op.args, **op.kwargs), None
        except Exception as exc:  # noqa: BLE001 - the plan decides (thrown in)
            reply, error = None, exc
        if inspect.isawaitable(reply):
            if inspect.iscoroutine(reply):
                reply.close()
            plan.close()
            raise TypeError(
                "this reader needs a blocking redis-py client (redis.Redis, redis.cluster.RedisCluster); "
                "for a redis.asyncio client use engagehub.shared.AsyncSharedAnalytics / AsyncSharedLeaderboard"
            )


async def adrive(client: Any, plan: "Plan[T]") -> T:
    """Runs ``plan`` with a ``redis.asyncio`` client."""
    reply: Any = None
    error: Optional[BaseException] = None
    while True:
        try:
            op = plan.send(reply) if error is None else plan.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            pending = getattr(client, op.name)(*op.args, **op.kwargs)
        except Exception as exc:  # noqa: BLE001 - the plan decides (thrown in)
            reply, error = None, exc
            continue
        if not inspect.isawaitable(pending):
            plan.close()
            raise TypeError(
                "this reader needs a redis.asyncio client (redis.asyncio.Redis, "
                "redis.asyncio.cluster.RedisCluster); for a blocking client use "
                "engagehub.shared.SharedAnalytics / SharedLeaderboard"
            )
        try:
            reply, error = await pending, None
        except Exception as exc:  # noqa: BLE001 - the plan decides (thrown in)
            reply, error = None, exc


# -- scripts ---------------------------------------------------------------------------


def refusal(exc: BaseException) -> Optional[errors.EngageHubError]:
    """The :class:`~engagehub.EngageHubError` for an ``ENGAGEHUB <kind>: ...`` error
    reply of one of our scripts (``config`` and ``invalid``, a question a reader
    cannot ask: InvalidArgument; ``corrupt`` and the
    tests' ``fault``: Corrupt), or ``None`` for anything else (connection errors,
    ``busy``, other replies). The message is the script's, without Redis's
    "script: <sha>, on @user_script" suffix."""
    text = str(exc)
    if not text.startswith("ENGAGEHUB "):
        return None
    kind, _, message = text[len("ENGAGEHUB ") :].partition(": ")
    message = message.split(" script: ", 1)[0]
    if kind in ("config", "invalid"):
        return errors.InvalidArgument(message, errors.InvalidArgument.status)
    if kind in ("corrupt", "fault"):  # (a fault is injected by the tests only)
        return errors.Corrupt(message, errors.Corrupt.status)
    return None


def script_plan(cache: Dict[str, str], script: str, keys: List[str], args: List[Any]) -> "Plan[Any]":
    """``EVALSHA`` of ``script`` (loaded once per client into ``cache``), with
    ``EVAL`` when the server lost its script cache (a restart, a failover)."""
    sha = cache.get(script)
    if sha is None:
        sha = yield Op("script_load", script)
        cache[script] = sha
    try:
        return (yield Op("evalsha", sha, len(keys), *keys, *args))
    except Exception as exc:
        if type(exc).__name__ != "NoScriptError":
            raise
    return (yield Op("eval", script, len(keys), *keys, *args))


# -- eviction policy ---------------------------------------------------------------------

#: Why each non-``noeviction`` policy is unsafe for engagehub's keys. Keys without a
#: TTL: the leaderboard's, the analytics' all-time keys, ``{ns}:events``,
#: ``{ns}:dead_lettered``, ``{ns}:clock``, ``{ns}:config``. Keys with a TTL: the
#: analytics' minute keys and every publisher's sequence key ``{..}:pub:<id>``, on
#: which exactly-once rests.
_EVICTION_RISK = {
    "allkeys": "any key may be evicted: the shared leaderboard, the all-time analytics, "
    "the minute keys, and the publishers' sequence keys (so a retried batch could be applied twice)",
    "volatile": "keys with a TTL may be evicted: the analytics' minute keys (windowed unique users and "
    "channels lose data) and every publisher's sequence key {..}:pub:<id> (a batch retried after a "
    "lost reply could then be applied twice); keys without a TTL stay",
}


def _cluster_nodes(client: Any) -> Optional[List[Any]]:
    """Every node (primaries and replicas) of a ``RedisCluster`` client (blocking
    or asyncio); ``None`` for any other client."""
    classes: List[type] = []
    try:
        from redis.cluster import RedisCluster

        classes.append(RedisCluster)
        from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

        classes.append(AsyncRedisCluster)
    except ImportError:  # pragma: no cover - a client without redis-py
        pass
    return list(client.get_nodes()) if classes and isinstance(client, tuple(classes)) else None


def _policy_of(reply: Any) -> Optional[str]:
    policy = reply.get("maxmemory-policy") if isinstance(reply, dict) else None
    if policy is None and isinstance(reply, dict):
        policy = reply.get(b"maxmemory-policy")
    return policy.decode() if isinstance(policy, bytes) else policy


def _risk_of(policy: Optional[str]) -> Optional[str]:
    return _EVICTION_RISK.get(policy.split("-", 1)[0]) if policy else None


def eviction_policy_plan(client: Any, what: str) -> "Plan[Optional[str]]":
    """Reads ``maxmemory-policy`` and warns (the ``engagehub`` logger and a
    ``RuntimeWarning``) unless it is ``noeviction``, the one policy under which
    Redis never drops an engagehub key. On a ``RedisCluster`` client every node is
    read (replicas too, as a failover makes them primaries), and one warning names
    the nodes at fault. Returns the policy (on a cluster the riskiest one found), or
    ``None`` when ``CONFIG GET`` is refused (managed Redis) or Redis is down, which is
    logged at info level, not fatal. Network I/O: run by the publisher thread and by
    a reader's first query, never by a constructor."""
    import logging
    import warnings

    log = logging.getLogger("engagehub")
    nodes = _cluster_nodes(client)
    found: Dict[str, Optional[str]] = {}
    for node in [None] if nodes is None else nodes:
        try:
            if node is None:
                reply = yield Op("config_get", "maxmemory-policy")
            else:
                reply = yield Op("config_get", "maxmemory-policy", target_nodes=node)
        except Exception as exc:  # noqa: BLE001 - CONFIG is often disabled; not fatal
            log.info("engagehub %s: cannot read maxmemory-policy of %s (%s); make sure it is noeviction",
                     what, "Redis" if node is None else node.name, exc)
            continue
        found["" if node is None else node.name] = _policy_of(reply)
    if not found:
        return None
    risky = {name: p for name, p in found.items() if p is not None and _risk_of(p) is not None}
    if not risky:
        return next(iter(found.values()))
    # The riskiest policy found: allkeys-* drops more than volatile-*.
    policy = min(risky.values(), key=lambda p: (not p.startswith("allkeys"), p))
    where = ""
    if nodes is not None:
        where = " (cluster nodes: " + ", ".join(f"{name} {p}" for name, p in sorted(risky.items())) + ")"
    message = (
        f"engagehub {what}: Redis runs maxmemory-policy {policy}{where}, under which {_risk_of(policy)}. "
        "Use maxmemory-policy noeviction (with maxmemory sized for the keys), or a Redis of its own "
        "for shared state"
    )
    log.warning("%s", message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)
    return policy


# -- observers (metrics) --------------------------------------------------------------------

Observer = Callable[[str, str, float, Optional[BaseException]], None]
_OBSERVERS: List[Observer] = []


def add_observer(observer: Observer) -> None:
    """Calls ``observer(reader, query, seconds, error)`` after every query of every
    reader in this process: ``reader`` is ``"analytics"`` or ``"leaderboard"``,
    ``query`` the method called (``"get_top_users"``...), ``error`` the exception it
    raised or ``None``. An observer must not raise."""
    if observer not in _OBSERVERS:
        _OBSERVERS.append(observer)


def remove_observer(observer: Observer) -> None:
    if observer in _OBSERVERS:
        _OBSERVERS.remove(observer)


def _observe(reader: str, query: str, seconds: float, error: Optional[BaseException]) -> None:
    for observer in list(_OBSERVERS):
        observer(reader, query, seconds, error)


# -- the reads of one reader --------------------------------------------------------------

#: What each expectation means as a Redis type.
_TYPES = {"a HyperLogLog": "string", "an integer": "string", "a hash": "hash", "a sorted set": "zset"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Reads:
    """The plan steps and the drivers of one reader (see the module docs).
    ``reader`` names its kind for the observers."""

    def __init__(self, client: Any, label: str, check_eviction: bool, reader: str) -> None:
        self.client = client
        self.label = label
        self.reader = reader
        self._check_eviction = check_eviction
        self._scripts: Dict[str, str] = {}

    # -- drivers ------------------------------------------------------------------

    def run(self, query: str, plan: "Plan[T]") -> T:
        """``plan`` with the blocking client; ``query`` is what the observers see."""
        if not _OBSERVERS:
            return drive(self.client, plan)
        start = time.perf_counter()
        try:
            answer = drive(self.client, plan)
        except Exception as exc:
            _observe(self.reader, query, time.perf_counter() - start, exc)
            raise
        _observe(self.reader, query, time.perf_counter() - start, None)
        return answer

    async def arun(self, query: str, plan: "Plan[T]") -> T:
        """``plan`` with the asyncio client (see :meth:`run`)."""
        if not _OBSERVERS:
            return await adrive(self.client, plan)
        start = time.perf_counter()
        try:
            answer = await adrive(self.client, plan)
        except Exception as exc:
            _observe(self.reader, query, time.perf_counter() - start, exc)
            raise
        _observe(self.reader, query, time.perf_counter() - start, None)
        return answer

    # -- plan steps -----------------------------------------------------------------

    def _first_use(self) -> "Plan[None]":
        if self._check_eviction:
            self._check_eviction = False
            yield from eviction_policy_plan(self.client, self.label)

    def call(self, keys: List[str], expected: str, op: Op) -> "Plan[Any]":
        """The reply of ``op``, which reads ``keys`` (each ``expected``: see ``_TYPES``)."""
        yield from self._first_use()
        try:
            return (yield op)
        except Exception as exc:
            corrupt = yield from self._diagnose(exc, keys, expected)
            if corrupt is None:
                raise
            raise corrupt from None

    def script(self, script: str, keys: List[str], args: List[Any]) -> "Plan[Any]":
        """One of ``_schema``'s read scripts (they check the keys' types first)."""
        yield from self._first_use()
        try:
            return (yield from script_plan(self._scripts, script, keys, args))
        except Exception as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            raise refused from None

    def integer(self, key: str, op: Op, holder: str = "an integer") -> "Plan[Optional[int]]":
        """The integer ``op`` reads from ``key`` (a string; ``holder="a hash"`` for
        a hash field); ``None`` when absent."""
        value = yield from self.call([key], holder, op)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            shown = _text(value)[:40]
            raise errors.Corrupt(f"{key} holds {shown!r}, not an integer", errors.Corrupt.status) from None

    def _diagnose(self, exc: BaseException, keys: List[str], expected: str) -> "Plan[Optional[errors.Corrupt]]":
        """The :class:`~engagehub.Corrupt` for a reply that refused the keys' content
        (found by asking Redis which key is at fault), or ``None``."""
        try:
            from redis.exceptions import ResponseError
        except ImportError:  # pragma: no cover - a client without redis-py
            return None
        if not isinstance(exc, ResponseError):
            return None
        want = _TYPES[expected]
        try:
            for key in keys:
                kind = _text((yield Op("type", key)))
                if kind == "none":
                    continue
                if kind != want:
                    return errors.Corrupt(f"{key} holds a {kind}, not {expected} ({exc})", errors.Corrupt.status)
                if expected == "a HyperLogLog" and bytes((yield Op("getrange", key, 0, 3))) != b"HYLL":
                    return errors.Corrupt(f"{key} is not a valid HyperLogLog ({exc})", errors.Corrupt.status)
            if expected == "a HyperLogLog":
                # A valid header over a corrupt body: count each key alone to find it.
                for key in keys:
                    try:
                        yield Op("pfcount", key)
                    except ResponseError as alone:
                        return errors.Corrupt(f"{key} is not a valid HyperLogLog ({alone})", errors.Corrupt.status)
        except Exception:  # noqa: BLE001 - the diagnosis is best effort: keep the original error
            return None
        return None


__all__ = [
    "Op",
    "Plan",
    "Reads",
    "add_observer",
    "adrive",
    "drive",
    "eviction_policy_plan",
    "refusal",
    "remove_observer",
    "script_plan",
]
