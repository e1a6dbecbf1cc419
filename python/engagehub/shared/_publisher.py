"""Publishes one processor's analytics to Redis, off the push path.

A :class:`Publisher` belongs to one :class:`~engagehub.EventStreamProcessor`. A
background thread wakes every ``publish_interval_ms``; ``flush_now()`` and
``close()`` run a publish on the caller's thread. Either way one publish:

1. reads the processor's per-minute sketches through the ordinary queries
   (``users_sketch(60, now=m)`` and ``top_channels(cap, 60, now=m)`` give minute
   ``m`` alone) for every minute of the window, and its all-time ones;
2. compares them with what this publisher sent last: users go as the whole
   minute's HLL in Redis's format when it changed (``PFMERGE`` is a register max,
   so resending is harmless), channels as count *deltas* (``ZINCRBY``), events as
   the delta of ``stats().processed``;
3. freezes the result as batch number ``seq`` and sends it as one Lua script
   that applies it only if ``{ns}:pub:<id>`` is below ``seq``, then stores ``seq``.

Until a batch is acknowledged it is resent unchanged (same ``seq``), with
exponential backoff, so a reply lost after the script ran is a no-op on retry.
Nothing accumulates in Python meanwhile: the events stay counted in the native
sketches and the next batch's deltas cover them. The bound is the processor's
window: a minute that leaves the native ring (its slot reused by a minute
``window_minutes`` later) before it was published cannot be published any more;
such minutes are counted (``stats().publish_lost_minutes``) and logged.

A forked child gets a new publisher id, an empty baseline (the native side
starts its sketches and counters empty in the child) and its own thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import warnings
import weakref
from typing import Any, Dict, List, Optional, Tuple

from . import _schema

log = logging.getLogger("engagehub")

#: Retries after a failed publish wait 50 ms, doubling up to 2 s (both publishers).
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0


class Backoff:
    """The wait before the next attempt: 0 after a success, then ``BACKOFF_MIN``
    doubling to ``BACKOFF_MAX`` with each consecutive failure."""

    __slots__ = ("delay",)

    def __init__(self) -> None:
        self.delay = 0.0

    def failed(self) -> float:
        self.delay = min(BACKOFF_MAX, max(BACKOFF_MIN, self.delay * 2))
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0


_FORK_RESETS: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for publisher in list(_FORK_RESETS):
        publisher._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def reset_after_fork(publisher: Any) -> None:
    """Calls ``publisher._reset_after_fork()`` in every forked child while the
    publisher lives (held weakly): the child publishes under a new id."""
    _FORK_RESETS.add(publisher)


def forget_after_fork(publisher: Any) -> None:
    _FORK_RESETS.discard(publisher)


#: Why each non-``noeviction`` policy is unsafe for engagehub's keys. Keys without
#: a TTL: the leaderboard's ``{K}:z``, ``{K}:meta``, ``{K}:last``, the analytics'
#: ``{ns}:uu:all``, ``{ns}:ch:all``, ``{ns}:events``, ``{ns}:clock``. Keys with a
#: TTL: the analytics' minute keys ``{ns}:uu:<m>`` and ``{ns}:ch:<m>``, and every
#: publisher's sequence key ``{..}:pub:<id>`` (7 days), on which exactly-once
#: rests. ``volatile-*`` evicts only the second kind, ``allkeys-*`` both.
_EVICTION_RISK = {
    "allkeys": "any key may be evicted: the shared leaderboard, the all-time analytics, "
    "the minute keys, and the publishers' sequence keys (so a retried batch could be applied twice)",
    "volatile": "keys with a TTL may be evicted: the analytics' minute keys (windowed unique users and "
    "channels lose data) and every publisher's sequence key {..}:pub:<id> (a batch retried after a "
    "lost reply could then be applied twice); keys without a TTL stay",
}


def _cluster_nodes(client: Any) -> Optional[List[Any]]:
    """Every node (primaries and replicas) of a ``redis.cluster.RedisCluster``
    client; ``None`` for any other client."""
    try:
        from redis.cluster import RedisCluster
    except ImportError:  # pragma: no cover - a client without redis-py
        return None
    return list(client.get_nodes()) if isinstance(client, RedisCluster) else None


def _policy_of(reply: Any) -> Optional[str]:
    policy = reply.get("maxmemory-policy") if isinstance(reply, dict) else None
    if policy is None and isinstance(reply, dict):
        policy = reply.get(b"maxmemory-policy")
    return policy.decode() if isinstance(policy, bytes) else policy


def _risk_of(policy: Optional[str]) -> Optional[str]:
    return _EVICTION_RISK.get(policy.split("-", 1)[0]) if policy else None


def check_eviction_policy(client: Any, what: str) -> Optional[str]:
    """Reads ``maxmemory-policy`` and warns (the ``engagehub`` logger and a
    ``RuntimeWarning``) unless it is ``noeviction``, the one policy under which
    Redis never drops an engagehub key (see ``_EVICTION_RISK`` for what each other
    policy may drop). On a ``RedisCluster`` client every node is read (a keyless
    ``CONFIG GET`` would reach one node only; replicas too, as a failover makes them
    primaries), and one warning names the nodes at fault. Returns the policy (on a
    cluster the riskiest one found), or ``None`` when ``CONFIG GET`` is refused
    (managed Redis) or Redis is down, which is logged at info level, not fatal."""
    nodes = _cluster_nodes(client)
    found: Dict[str, Optional[str]] = {}
    unread: List[str] = []
    for node in [None] if nodes is None else nodes:
        try:
            if node is None:
                reply = client.config_get("maxmemory-policy")
            else:
                reply = client.config_get("maxmemory-policy", target_nodes=node)
        except Exception as exc:  # noqa: BLE001 - CONFIG is often disabled; not fatal
            unread.append("Redis" if node is None else node.name)
            log.info("engagehub %s: cannot read maxmemory-policy of %s (%s); make sure it is noeviction",
                     what, unread[-1], exc)
            continue
        found["" if node is None else node.name] = _policy_of(reply)
    if not found:
        return None
    risky = {name: p for name, p in found.items() if _risk_of(p) is not None}
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
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    return policy


class _Batch:
    """A frozen publish: the script's keys and arguments, and what becomes the
    baseline once it is acknowledged."""

    __slots__ = ("seq", "keys", "args", "baseline", "events", "minutes")

    def __init__(self, seq: int, keys: List[str], args: List[Any], baseline: Any, events: int, minutes: int) -> None:
        self.seq = seq
        self.keys = keys
        self.args = args
        self.baseline = baseline
        self.events = events
        self.minutes = minutes


class PublishCounters:
    """Counters shown in ``stats()`` (plain ints, updated under the publisher lock)."""

    __slots__ = ("batches", "failures", "duplicates", "lost_minutes", "pending_events")

    def __init__(self) -> None:
        self.batches = 0
        self.failures = 0
        self.duplicates = 0
        self.lost_minutes = 0
        self.pending_events = 0


class Publisher:
    """See the module docs. ``processor`` is held weakly by the thread."""

    def __init__(
        self,
        processor: Any,
        client: Any,
        namespace: str,
        *,
        interval_ms: int,
        window_minutes: int,
        event_time: bool,
        max_members: int,
    ) -> None:
        if not isinstance(namespace, str) or not namespace or any(c in namespace for c in "{}"):
            raise ValueError(f"namespace must be a non-empty str without braces, got {namespace!r}")
        if not isinstance(interval_ms, int) or isinstance(interval_ms, bool) or interval_ms <= 0:
            raise ValueError(f"publish_interval_ms must be a positive integer, got {interval_ms!r}")
        self.client = client
        self.namespace = namespace
        self.interval = interval_ms / 1000.0
        self.window_minutes = window_minutes
        self.event_time = event_time
        self.max_members = max_members
        self.minute_ttl = window_minutes * 60 + _schema.MINUTE_KEY_MARGIN_SECS
        self.counters = PublishCounters()
        self._processor = weakref.ref(processor)
        self._publish_sha: Optional[str] = None
        self._new_identity()
        check_eviction_policy(client, f"namespace {namespace!r}")
        reset_after_fork(self)
        self._start_thread()

    # -- identity and thread -------------------------------------------------

    def _new_identity(self) -> None:
        self.pid = os.getpid()
        self.publisher_id = uuid.uuid4().hex
        self.seq = 0
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        # Baseline: what Redis holds from us. minute start -> (HLL bytes, {channel: count}).
        self.minutes: Dict[int, Tuple[bytes, Dict[str, int]]] = {}
        self.all_users = b""
        self.all_channels: Dict[str, int] = {}
        self.minute_counts: Dict[int, int] = {}  # events per minute at the last batch
        self.events = 0
        self.processed_seen = -1
        self.pending: Optional[_Batch] = None
        self.failing = False
        self.recovering = False  # acknowledged a batch left over from an outage
        self.backoff = Backoff()
        self.retry_at = 0.0

    def _reset_after_fork(self) -> None:
        # The native processor starts over empty in the child; so do we, under a
        # new id (the parent keeps publishing its own deltas under the old one).
        self.counters = PublishCounters()
        self._new_identity()
        if self._processor() is not None:
            self._start_thread()

    def _start_thread(self) -> None:
        self.thread = threading.Thread(
            target=_run, args=(weakref.ref(self),), name=f"engagehub-publish-{self.namespace}", daemon=True
        )
        self.thread.start()

    def stop(self, timeout: Optional[float]) -> None:
        """Stops the background thread (the caller then publishes the last batch),
        waiting up to ``timeout`` seconds for a publish it has under way (a client
        without ``socket_timeout`` can hang on a stalled Redis)."""
        self.stopping = True
        self.wake.set()
        if self.thread is not threading.current_thread() and self.pid == os.getpid():
            self.thread.join(timeout)

    # -- one publish ---------------------------------------------------------

    def publish(self, deadline: Optional[float], *, force: bool = False) -> bool:
        """Publishes everything processed so far: a batch left over from a failed
        attempt first, then a fresh one. Retries with backoff until acknowledged or
        ``deadline`` (``time.monotonic()``; ``None``: one attempt). True when Redis
        holds everything. Redis errors are counted and logged, never raised."""
        while True:
            # The background thread may be inside a slow Redis call: wait for it no
            # longer than the caller's deadline.
            wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.lock.acquire(timeout=wait):
                return False
            try:
                status = self._attempt(force)
            finally:
                self.lock.release()
            if status == "done":
                return True
            if status == "sent":
                continue  # the batch was older than the call: freeze what came since
            if deadline is None:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # Backoff between attempts, bounded by the caller's deadline.
            threading.Event().wait(min(self.backoff.delay, remaining))

    def _attempt(self, force: bool) -> str:
        """"done" (nothing left), "sent" (a batch acknowledged; more may have come)
        or "failed"."""
        processor = self._processor()
        if processor is None or self.pid != os.getpid() or processor.closed:
            return "done"
        fresh = self.pending is None
        if fresh:
            self.pending = self._freeze(processor, force)
            if self.pending is None:
                return "done"
        batch = self.pending
        assert batch is not None
        try:
            applied = self._send(batch)
        except Exception as exc:  # noqa: BLE001 - any Redis failure: keep, retry later
            self.counters.failures += 1
            self.failing = True
            self.retry_at = time.monotonic() + self.backoff.failed()
            if self.counters.failures == 1 or self.counters.failures % 100 == 0:
                log.warning(
                    "engagehub publisher %s: publish #%d failed (%d failures so far), retrying: %s",
                    self.namespace, batch.seq, self.counters.failures, exc,
                )
            return "failed"
        # The next fresh batch still counts as "after an outage" for lost minutes.
        self.recovering = self.failing or self.recovering
        self.failing = False
        if not applied:
            self.counters.duplicates += 1  # applied before; that reply was lost
        self.counters.batches += 1
        self.minutes, self.all_users, self.all_channels, self.events, self.minute_counts = batch.baseline
        self.pending = None
        self.backoff.succeeded()
        self.retry_at = 0.0
        self.counters.pending_events = 0
        return "done" if fresh else "sent"

    def _send(self, batch: _Batch) -> bool:
        client = self.client
        if self._publish_sha is None:
            self._publish_sha = client.script_load(_schema.PUBLISH_SCRIPT)
        try:
            reply = client.evalsha(self._publish_sha, len(batch.keys), *batch.keys, *batch.args)
        except Exception as exc:
            if type(exc).__name__ != "NoScriptError":
                raise
            # A restarted or failed-over Redis lost its script cache.
            reply = client.eval(_schema.PUBLISH_SCRIPT, len(batch.keys), *batch.keys, *batch.args)
        return int(reply) == 1

    def _freeze(self, processor: Any, force: bool) -> Optional[_Batch]:
        """The next batch (new sequence number), or ``None`` if nothing changed."""
        processed = processor.stats().processed
        if processed == 0 or (processed == self.processed_seen and not force):
            # (With nothing processed an event-time clock still reads the wall clock,
            # which must not become {ns}:clock.)
            return None
        cap = max(self.max_members, 1)
        now = processor.now()
        hi = now // 60 * 60
        lo = hi - (self.window_minutes - 1) * 60
        minutes = dict(self.minutes)
        known = [m for m in minutes if m < lo]
        for m in known:
            # Left the window since we last published: read it once more (its native
            # slot is reused only by a minute `window` later), then forget it.
            del minutes[m]
        keys: List[str] = []
        args: List[Any] = []
        ns = self.namespace
        lost = 0
        # Only minutes whose event count moved since the last batch (one native call
        # for the whole window), and those leaving the window.
        counts = _minute_events(processor, lo, self.window_minutes)
        seen = self.minute_counts
        changed = [lo + 60 * i for i, n in enumerate(counts) if n != seen.get(lo + 60 * i, 0)]
        minute_counts = {lo + 60 * i: n for i, n in enumerate(counts) if n}
        scan = sorted(set(changed) | set(known))
        for m in scan:
            channels = processor.top_channels(cap, 60, m)
            old_bytes, old_channels = self.minutes.get(m, (b"", {}))
            if not channels:
                if m < lo and old_channels and (self.failing or self.recovering):
                    # Its native slot now holds a later minute: what arrived in it
                    # after our last publish cannot reach Redis any more.
                    lost += 1
                continue
            deltas = [(c, n - old_channels.get(c, 0)) for c, n in channels if n > old_channels.get(c, 0)]
            hll = processor.users_sketch(60, m).to_redis()
            if not deltas and hll == old_bytes:
                continue  # (a full summary can hide a count change; the users cannot)
            if m >= lo:
                minutes[m] = (hll, {**old_channels, **{c: n for c, n in deltas_to_counts(deltas, old_channels)}})
            keys += [_schema.key(ns, "uu", m), _schema.key(ns, "ch", m)]
            args.append(b"" if hll == old_bytes else hll)
            args.append(len(deltas))
            for c, d in deltas:
                args += [c, d]
        self.recovering = False
        if lost:
            self.counters.lost_minutes += lost
            log.error(
                "engagehub publisher %s: %d minute(s) left the processor's window before "
                "they could be published; Redis lacks part of them", ns, lost,
            )
        all_channels = processor.top_channels(cap)
        all_deltas = [(c, n - self.all_channels.get(c, 0)) for c, n in all_channels if n > self.all_channels.get(c, 0)]
        new_all = {**self.all_channels, **{c: n for c, n in all_channels if n > self.all_channels.get(c, 0)}}
        all_users = processor.users_sketch(None).to_redis()
        self.processed_seen = processed
        self.seq += 1
        head_keys = [
            _schema.key(ns, "pub", self.publisher_id),
            _schema.key(ns, "events"),
            _schema.key(ns, "uu", "all"),
            _schema.key(ns, "ch", "all"),
            _schema.key(ns, "tmp", self.publisher_id),
            _schema.key(ns, "clock"),
        ]
        head_args: List[Any] = [
            self.seq,
            _schema.PUBLISHER_KEY_TTL_SECS,
            self.minute_ttl,
            self.max_members,
            processed - self.events,
            now if self.event_time else "",
            b"" if all_users == self.all_users else all_users,
            len(all_deltas),
        ]
        for c, d in all_deltas:
            head_args += [c, d]
        self.counters.pending_events = processed - self.events
        baseline = (minutes, all_users, new_all, processed, minute_counts)
        return _Batch(self.seq, head_keys + keys, head_args + args, baseline, processed, len(keys) // 2)


def _minute_events(processor: Any, first_minute_start: int, n: int) -> List[int]:
    """``eh_processor_minute_events``: events per minute of the window ring."""
    from .._native import _call, ffi, lib

    out = ffi.new("uint64_t[]", n)
    _call(lib.eh_processor_minute_events, processor._h(), first_minute_start, n, out)
    return list(out)


def deltas_to_counts(deltas: List[Tuple[str, int]], old: Dict[str, int]) -> List[Tuple[str, int]]:
    """The counts the deltas lead to: the new highest count of each channel."""
    return [(c, old.get(c, 0) + d) for c, d in deltas]


def _run(ref: "weakref.ref[Publisher]") -> None:
    """The background loop; holds the publisher only while publishing."""
    while True:
        publisher = ref()
        if publisher is None or publisher.stopping or publisher.pid != os.getpid():
            return
        wake, interval = publisher.wake, publisher.interval
        delay = max(interval, publisher.retry_at - time.monotonic())
        del publisher
        wake.wait(delay)
        publisher = ref()
        if publisher is None or publisher.stopping:
            return
        try:
            publisher.publish(None)
        except Exception:  # noqa: BLE001 - logged in publish; keep the thread alive
            pass
        del publisher
