"""The one publisher: moves a writer's state to Redis, exactly once, off its hot path.

A :class:`Publisher` belongs to one writer handle (an ``EventStreamProcessor``, a
``Leaderboard`` or a ``GuildLeaderboards`` opened with ``redis=``) and to a *source*
that knows what to send (``_sources.AnalyticsSource``, ``_sources.LeaderboardSource``,
``_sources.GroupSource``). It owns one daemon
thread, and **every Redis call happens on that thread**: pushes, updates, queries,
constructors, ``flush``/``close`` and the at-exit hook never wait on the network for
longer than the caller's bound, whatever the client's timeouts (a redis-py client
without ``socket_timeout`` can wait forever on a stalled server; then only the
publisher thread waits).

One cycle of the thread (every ``interval``, or at once when asked):

1. the first cycle reads the server's eviction policy and warns unless it is
   ``noeviction``;
2. if no batch is waiting, the source *freezes* what changed into batches: the
   handle's outbox numbers them (and keeps them, in its journal if it has one,
   until they are acknowledged, so a restarted handle resends them under the same
   identity and numbers);
3. the waiting batches are sent in order, each as one Lua script that applies it
   whole or not at all and only if ``{..}:pub:<id>`` is below its sequence number
   (see ``_schema``). A batch stays waiting until acknowledged, and is resent
   unchanged: a retry after a lost reply is a no-op, and a batch the script refused
   (Redis down, a key of another type, a mismatched configuration) is retried with
   backoff (50 ms doubling to 2 s) while the cause lasts. Nothing is dropped.
   An outage is logged once when it starts and once when it ends, not per retry.

``publish(timeout)`` asks for a cycle that starts after the call and waits for it,
in slices (Ctrl-C gets through), up to ``timeout``; ``close(timeout)`` does the
same, then deletes this publisher's sequence key (a cleanly closed writer leaves no
key of its own behind) and stops the thread. Giving up on Redis is logged and
counted, never raised: the writer's own work (the flush callback, the local board)
never waits on Redis. ``publish`` raises only a refusal that waiting cannot cure
(:class:`~engagehub.InvalidArgument` for a configuration that disagrees with the
namespace's, :class:`~engagehub.Corrupt` for a key that is not engagehub's).

Fork: in the child, the publisher gets a new id, new locks, nothing waiting, and a
thread of its own (the parent keeps publishing what it had). No native call and no
lock is taken in the at-fork hook.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
import weakref
from collections import deque
from typing import Any, Deque, Dict, List, Optional

from .. import errors
from ._read import drive, eviction_policy_plan, refusal, script_plan

log = logging.getLogger("engagehub")

#: Retries after a failed publish wait 50 ms, doubling up to 2 s.
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
#: Waits in slices of this many seconds, so signal handlers (Ctrl-C) run between.
WAIT_SLICE = 0.1


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


# -- errors ------------------------------------------------------------------------


def seconds_arg(value: Any, what: str) -> float:
    """A bound on a wait for Redis, in seconds: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors.InvalidType(f"{what} must be a number of seconds, not {type(value).__name__}", 1)
    if not 0 <= value < float("inf"):
        raise errors.InvalidArgument(f"{what} must be a finite number of seconds >= 0, got {value!r}", 1)
    return float(value)


def run_script(client: Any, cache: Dict[str, str], script: str, keys: List[str], args: List[Any]) -> Any:
    """``EVALSHA`` of ``script`` (loaded once per client into ``cache``), with
    ``EVAL`` when the server lost its script cache (a restart, a failover)."""
    return drive(client, script_plan(cache, script, keys, args))


def check_eviction_policy(client: Any, what: str) -> Optional[str]:
    """Reads ``maxmemory-policy`` and warns unless it is ``noeviction`` (see
    :func:`._read.eviction_policy_plan`). Network I/O: the publisher thread only."""
    return drive(client, eviction_policy_plan(client, what))


# -- exit ----------------------------------------------------------------------------

#: A close was interrupted (Ctrl-C) in this process: the user wants out, so the
#: closes the interpreter's exit runs do not wait for Redis any more.
_INTERRUPTED = False
_EXITING = False


@atexit.register
def _exiting() -> None:
    # Registered when the first publisher is made, after the handles' own exit
    # hooks, so it runs before them (atexit runs last-in first-out).
    global _EXITING
    _EXITING = True


# -- fork ----------------------------------------------------------------------------

_FORK_RESETS: "weakref.WeakSet[Publisher]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for publisher in list(_FORK_RESETS):
        publisher._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the publisher -----------------------------------------------------------------


class Batch:
    """One script call: its keys and arguments, its sequence number, and what the
    source needs back when it is acknowledged (``state``); ``size`` counts what it
    carries (events, rows, history entries) for the logs and stats."""

    __slots__ = ("seq", "keys", "args", "state", "size", "script")

    def __init__(
        self,
        seq: int,
        keys: List[str],
        args: List[Any],
        state: Any = None,
        size: int = 0,
        script: Optional[str] = None,
    ) -> None:
        self.seq, self.keys, self.args, self.state, self.size = seq, keys, args, state, size
        self.script = script
        """The script that applies it (``None``: the source's ``script``)."""


class Counters:
    """What ``stats()`` and the metrics show of a publisher (plain ints and floats,
    written by its thread)."""

    __slots__ = (
        "batches", "failures", "duplicates", "outages", "unpublished_at_close", "last_ack", "last_error", "current_at",
    )

    def __init__(self) -> None:
        self.batches = 0
        """Batches Redis applied."""
        self.failures = 0
        """Attempts that failed (retried)."""
        self.duplicates = 0
        """Resent batches Redis had applied before (a lost reply): not applied again."""
        self.outages = 0
        """Runs of consecutive failures."""
        self.unpublished_at_close = 0
        """What a close left unpublished (the source's unit: events or changes)."""
        self.last_ack = 0.0
        """``time.time()`` of the last acknowledged batch (0: none yet)."""
        self.last_error = ""
        """The last failure's message ("" once a cycle succeeded)."""
        self.current_at = time.time()
        """``time.time()`` when Redis last held everything this writer had: the
        start of the last cycle that left nothing waiting (an idle writer's cycles
        count: they find nothing to send). At first, when the publisher started.
        ``time.time() - current_at`` is how stale the shared state may be of this
        writer (the metrics' ``publish_age_seconds``)."""


class Publisher:
    """See the module docs. ``source`` provides ``label``, ``unit``, ``script``,
    ``identity(proposed) -> str`` (the identity the handle keeps, a journaled one
    across restarts), ``pub_key(id)``, ``freeze(publisher) -> list[Batch]`` (the
    handle's oldest unacknowledged batch, or a new one its outbox numbers),
    ``applied(batch, reply) -> bool`` (False: a duplicate; acknowledges the batch
    to the handle), ``after_cycle(publisher) -> bool`` (True: more work, cycle again
    soon), ``is_open()``, ``pending()`` and ``reset_after_fork()``; optionally
    ``own_keys(id) -> list[str]``, the sequence keys a clean close deletes (when a
    source writes more than ``pub_key(id)``: a group of boards, one key each)."""

    def __init__(self, source: Any, client: Any, *, interval_ms: int) -> None:
        if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or interval_ms <= 0:
            raise errors.InvalidArgument(f"publish_interval_ms must be a positive integer, got {interval_ms!r}", 1)
        self.source = source
        self.client = client
        self.interval = interval_ms / 1000.0
        self.counters = Counters()
        self._scripts: Dict[str, str] = {}
        self._closed = False
        self._new_identity()
        _FORK_RESETS.add(self)
        self._start_thread()

    # -- identity, fork, thread -------------------------------------------------------

    def _new_identity(self) -> None:
        self.pid = os.getpid()
        # Known on the thread's first cycle: the handle keeps it (a journaled one
        # across restarts); a new one is proposed.
        self.publisher_id = ""
        self._waiting: Deque[Batch] = deque()
        self._state = threading.Condition()  # guards what follows; notified after each cycle
        self._wake = threading.Event()
        self._requested = 0  # publish() tickets handed out
        self._served = 0  # every ticket up to this one is served
        self._refused: Optional[errors.EngageHubError] = None  # the last cycle's refusal
        self._refused_at = 0  # ... and the ticket it failed to serve
        self._final = False  # the next cycle is the close's: delete the sequence key after it
        self._stop = False
        self._checked = False
        self._backoff = Backoff()
        self._failing_since: Optional[float] = None
        self._failures_in_outage = 0
        self.behind = False  # a send failed since the last freeze
        self._thread: Optional[threading.Thread] = None

    def _reset_after_fork(self) -> None:
        self.counters = Counters()
        self._scripts = {}
        self._new_identity()
        self.source.reset_after_fork()
        if not self._closed and self.source.is_open():
            self._start_thread()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(
            target=_run, args=(weakref.ref(self),), name=f"engagehub-publish-{self.source.label}", daemon=True
        )
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Batches frozen and not yet acknowledged."""
        return len(self._waiting)

    def pub_key(self) -> str:
        return self.source.pub_key(self.publisher_id)

    # -- the caller's side ----------------------------------------------------------------

    def publish(self, timeout: Optional[float]) -> bool:
        """Asks for a cycle that starts after this call and waits for it, up to
        ``timeout`` seconds (``None``: no limit). True when everything the source
        held at the call is in Redis; False when the time ran out (Redis down or
        slow) or, at once, when Redis refused the batch for a key that is not
        engagehub's (``counters.last_error`` and the log name it). Raises
        :class:`~engagehub.InvalidArgument` when the stored configuration refuses
        this writer."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._state:
            if self._closed and self._stop:
                return not self._waiting
            self._requested += 1
            ticket = self._requested
        self._wake.set()
        with self._state:
            while self._served < ticket:
                refused = self._refused
                if refused is not None and self._refused_at >= ticket:
                    # Redis refused the batch: a key that is not engagehub's (the
                    # publisher retries until someone fixes it) or, raised, this
                    # writer's configuration.
                    if isinstance(refused, errors.InvalidArgument):
                        raise type(refused)(str(refused), refused.status)
                    return False
                if self._thread is None or not self._thread.is_alive():
                    return False  # stopped (a close elsewhere, or the handle is gone)
                wait = WAIT_SLICE
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return False
                self._state.wait(wait)
        return True

    def close(self, timeout: Optional[float]) -> bool:
        """Publishes what is left (up to ``timeout`` seconds), deletes this
        publisher's sequence key if everything was acknowledged, and stops the
        thread. Logs and counts what stayed unpublished. Never raises for Redis;
        idempotent. A ``KeyboardInterrupt`` during the wait ends it: the publisher
        is closed and the interrupt propagates; the closes that the interpreter's
        exit runs afterwards no longer wait for Redis."""
        if self._closed:
            return True
        global _INTERRUPTED
        if _EXITING and _INTERRUPTED:
            timeout = 0.0
        with self._state:
            self._final = True
        why = f"gave up after {timeout} s"
        interrupted: Optional[BaseException] = None
        try:
            log.debug("engagehub %s: closing: waiting up to %s s for Redis", self.source.label, timeout)
            done = self.publish(timeout)
        except errors.EngageHubError as exc:
            why, done = f"Redis refuses the publish: {exc}", False
        except BaseException as exc:  # Ctrl-C: stop waiting now, and at exit too
            why, done, interrupted = f"interrupted ({type(exc).__name__})", False, exc
            _INTERRUPTED = True
        with self._state:
            self._closed = True
            self._stop = True
        self._wake.set()
        _FORK_RESETS.discard(self)
        if not done:
            left = self.source.pending()
            self.counters.unpublished_at_close += left
            log.error(
                "engagehub %s: closed before Redis acknowledged everything (%d batches waiting, %d %s not "
                "published; %s); the shared state lacks them",
                self.source.label, len(self._waiting), left, self.source.unit, why,
            )
        if interrupted is not None:
            raise interrupted
        return done

    def abandon(self) -> None:
        """Stops the thread without publishing (the handle was collected unclosed)."""
        with self._state:
            self._stop = True
            self._closed = True
        self._wake.set()
        _FORK_RESETS.discard(self)

    # -- the thread's side -----------------------------------------------------------------

    def _next_delay(self) -> float:
        return self._backoff.delay or self.interval

    def _cycle(self) -> None:
        """One cycle (module docs). Runs on the publisher thread only."""
        with self._state:
            ticket, final = self._requested, self._final
        started = time.time()
        try:
            failure = self._publish_everything()
        except errors.Closed:  # the handle closed under the cycle
            failure = None if not self._waiting else errors.Closed("closed", errors.Closed.status)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the thread
            log.exception("engagehub %s: publishing failed unexpectedly", self.source.label)
            failure = exc
        if failure is None and final and self.publisher_id:
            # A source that writes several sequence keys (one per board of a
            # group) lists them; they are in different slots: DEL by chunks
            # (redis-py's cluster client splits a DEL by slot).
            own_keys = getattr(self.source, "own_keys", None)
            keys = own_keys(self.publisher_id) if own_keys is not None else [self.pub_key()]
            try:
                for start in range(0, len(keys), 1000):
                    self.client.delete(*keys[start : start + 1000])
            except Exception as exc:  # noqa: BLE001 - the key expires anyway
                log.info("engagehub %s: could not delete %s (%s); it expires", self.source.label, self.pub_key(), exc)
        with self._state:
            if failure is None:
                if not self._waiting:
                    self.counters.current_at = started
                self._served = max(self._served, ticket)
                self._refused = None
            else:
                self._refused = refusal(failure)
                self._refused_at = ticket
            self._state.notify_all()

    def _publish_everything(self) -> Optional[BaseException]:
        """Sends the waiting batches, then freezes and sends until a freeze made
        after the cycle began is acknowledged. Returns the failure (counted, logged,
        backoff set), or ``None``."""
        if not self.source.is_open():
            return None if not self._waiting else errors.Closed("closed", errors.Closed.status)
        if not self.publisher_id:
            self.publisher_id = self.source.identity(uuid.uuid4().hex)
        if not self._checked:
            check_eviction_policy(self.client, self.source.label)
            self._checked = True
        while True:
            froze = False
            if not self._waiting:
                self._waiting.extend(self.source.freeze(self))
                self.behind = False
                froze = True
            while self._waiting:
                batch = self._waiting[0]
                try:
                    reply = self.run_script(batch.script or self.source.script, batch.keys, batch.args)
                except Exception as exc:  # noqa: BLE001 - any Redis failure: keep the batch, retry later
                    self._failed(exc)
                    return exc
                self._waiting.popleft()
                if self.source.applied(batch, reply):
                    self.counters.batches += 1
                else:
                    self.counters.duplicates += 1
                self.counters.last_ack = time.time()
            if froze:
                break
        try:
            more = self.source.after_cycle(self)
        except Exception as exc:  # noqa: BLE001 - e.g. a rebase step: retried next cycle
            self._failed(exc)
            return exc
        self._recovered()
        if more:
            self._wake.set()
        return None

    def run_script(self, script: str, keys: List[str], args: List[Any]) -> Any:
        """Runs one of ``_schema``'s scripts (publisher thread only)."""
        return run_script(self.client, self._scripts, script, keys, args)

    def _failed(self, exc: BaseException) -> None:
        self.behind = True
        self.counters.failures += 1
        refused = refusal(exc)
        self.counters.last_error = str(refused) if refused is not None else f"{type(exc).__name__}: {exc}"
        self._failures_in_outage += 1
        self._backoff.failed()
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            self.counters.outages += 1
            log.warning(
                "engagehub %s: publishing to Redis failed (%s); retrying with backoff until it works "
                "(%d batches waiting; logged again when it recovers)",
                self.source.label, self.counters.last_error, len(self._waiting),
            )

    def _recovered(self) -> None:
        self._backoff.succeeded()
        self.counters.last_error = ""
        if self._failing_since is not None:
            log.warning(
                "engagehub %s: publishing to Redis works again after %.1f s and %d failed attempts",
                self.source.label, time.monotonic() - self._failing_since, self._failures_in_outage,
            )
            self._failing_since = None
            self._failures_in_outage = 0


def _run(ref: "weakref.ref[Publisher]") -> None:
    """The publisher thread. Holds the publisher only during a cycle, so a writer
    that was forgotten can be collected."""
    while True:
        publisher = ref()
        if publisher is None or publisher._stop or publisher.pid != os.getpid():
            return
        wake, delay = publisher._wake, publisher._next_delay()
        del publisher
        wake.wait(delay)
        publisher = ref()
        if publisher is None or publisher._stop:
            return
        wake.clear()
        publisher._cycle()
        del publisher


__all__ = ["Publisher", "Batch", "Backoff", "check_eviction_policy", "refusal", "run_script"]
