"""Django integration: batches written with the ORM, one processor per worker process,
and an optional app that builds the shared clients from settings.

Django is an optional dependency (``pip install "engagehub[django]"``).

* The app (``INSTALLED_APPS = [..., "engagehub.django"]``) reads an ``ENGAGEHUB``
  settings dict (Redis URL and options, namespace, leaderboard key, window; see
  :mod:`engagehub.django.conf`) when Django is ready and builds the Redis client and
  the ``engagehub.shared`` readers, without network I/O. Views use the accessors:
  :func:`shared_analytics`, :func:`shared_leaderboard`, :func:`shared_redis` (the
  client, for writers too: ``redis=shared_redis(), namespace=engagehub_settings().namespace``)
  and, in async views, :func:`async_shared_analytics` / :func:`async_shared_leaderboard`.

* :func:`bulk_create_callback` turns a model into a flush callback: each batch is
  built into model instances and bulk-created inside ``transaction.atomic``. A locked
  database or a lost connection fails the batch (it is retried with backoff, then
  dead-lettered) with one WARNING line on the ``engagehub`` logger.
* :class:`WorkerProcessor` creates the :class:`~engagehub.EventStreamProcessor`
  lazily in each process (a gunicorn worker forked from a master that already used
  it gets its own), and :func:`on_worker_start` / :func:`on_worker_stop` are the hooks
  for gunicorn's ``post_fork`` and ``worker_exit``: stop delivers every accepted event
  and closes the database connections the callback threads opened.

Connections: the flush callback runs on the processor's worker threads, which never
see Django's ``request_started`` / ``request_finished`` signals, so nothing would
ever close their connections. The callback treats each batch as a request: before
and after it, the calling thread's connections that are unusable or older than
``CONN_MAX_AGE`` are closed (``close_old_connections()``), except a connection
inside an ``atomic`` block, which belongs to a caller's transaction (a synchronous
delivery inside a ``TestCase``) and is left alone. With the default
``CONN_MAX_AGE = 0`` a worker thread therefore holds no connection between batches;
persistent ones (``CONN_MAX_AGE > 0`` or ``None``) are kept for the next batch and
closed by :meth:`BulkCreateCallback.close_connections` (which
:meth:`WorkerProcessor.stop` calls) once the processor has stopped.
"""

from __future__ import annotations

import inspect
import os
import threading
import weakref
from datetime import datetime, timezone as dt_timezone
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

try:
    from django.conf import settings
    from django.db import InterfaceError, OperationalError, connections, router, transaction
    from django.utils import timezone
except ImportError as exc:  # pragma: no cover - exercised without Django only
    raise ImportError('engagehub.django needs Django: pip install "engagehub[django]"') from exc

from .._types import DeadLetterCallback
from ..errors import BatchFailed
from ..processor import EventStreamProcessor
from .conf import EngageHubSettings

if TYPE_CHECKING:
    from ..shared import AsyncSharedAnalytics, AsyncSharedLeaderboard, SharedAnalytics, SharedLeaderboard

Event = Dict[str, Any]
Builder = Callable[[Event], Any]

__all__ = [
    "BulkCreateCallback",
    "EngageHubSettings",
    "WorkerProcessor",
    "async_shared_analytics",
    "async_shared_leaderboard",
    "async_shared_redis",
    "bulk_create_callback",
    "close_stale_connections",
    "engagehub_settings",
    "event_time",
    "on_worker_start",
    "on_worker_stop",
    "shared_analytics",
    "shared_leaderboard",
    "shared_redis",
]


def close_stale_connections() -> None:
    """``django.db.close_old_connections()`` for a thread that serves no requests:
    closes this thread's connections that are unusable (after an error) or older
    than ``CONN_MAX_AGE``, but never one inside an ``atomic`` block (closing it would
    break the caller's transaction)."""
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


def _close_idle_connections() -> None:
    """Closes every connection of this thread that is not inside an ``atomic`` block."""
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close()


def event_time(timestamp: int) -> datetime:
    """An event's unix seconds as a datetime for the ORM: aware (UTC) when
    ``USE_TZ`` is on, naive in the default time zone otherwise (what Django expects
    in each case)."""
    moment = datetime.fromtimestamp(timestamp, tz=dt_timezone.utc)
    return moment if settings.USE_TZ else timezone.make_naive(moment, timezone.get_default_timezone())


def _default_builder(model: Any) -> Builder:
    """The reference guide's mapping: ``type`` into ``event_type`` (or ``type``),
    ``user_id``, ``channel_id``, and ``timestamp`` (a datetime for a DateTimeField,
    the unix seconds otherwise)."""
    fields = {}
    for f in model._meta.concrete_fields:
        fields[f.name] = f
        fields[f.attname] = f
    kind = "event_type" if "event_type" in fields else "type" if "type" in fields else None
    missing = [name for name, ok in (
        ("event_type (or type)", kind is not None),
        ("user_id", "user_id" in fields),
        ("channel_id", "channel_id" in fields),
        ("timestamp", "timestamp" in fields),
    ) if not ok]
    if missing:
        raise TypeError(
            f"{model._meta.label} has no field {', '.join(missing)} for the default mapping: pass build=",
        )
    stamp: Callable[[int], Any] = (
        event_time if fields["timestamp"].get_internal_type() == "DateTimeField" else int
    )

    def build(event: Event) -> Any:
        return model(
            **{
                kind: event["type"],
                "user_id": event["user_id"],
                "channel_id": event["channel_id"],
                "timestamp": stamp(event["timestamp"]),
            }
        )

    return build


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


class BulkCreateCallback:
    """A flush callback that bulk-creates a batch into ``model`` (see
    :func:`bulk_create_callback`). Thread-safe: several workers may call it at once,
    each on its own connection."""

    def __init__(
        self,
        model: Any,
        build: Optional[Builder] = None,
        batch_size: int = 500,
        using: Optional[str] = None,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if build is not None and not callable(build):
            raise TypeError("build must be callable or None")
        self.model = model
        self.build: Builder = build if build is not None else _default_builder(model)
        self.batch_size = batch_size
        self.using = using
        # Connections left open after a batch (CONN_MAX_AGE > 0), by identity, so
        # close_connections() can close them once their threads are done.
        self._kept: Dict[int, Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<BulkCreateCallback {self.model._meta.label} using={self.using!r} batch_size={self.batch_size}>"

    def __call__(self, events: List[Event]) -> None:
        alias = self.using or router.db_for_write(self.model)
        close_stale_connections()
        try:
            rows = [self.build(e) for e in events]
            try:
                with transaction.atomic(using=alias):
                    self.model._default_manager.db_manager(alias).bulk_create(rows, batch_size=self.batch_size)
            except (OperationalError, InterfaceError) as exc:
                # Transient (locked, connection lost): retry. The processor logs the
                # message as one WARNING line; the original stays in __cause__.
                raise BatchFailed(
                    f"bulk_create of {len(rows)} {self.model._meta.label} rows into database "
                    f"{alias!r} failed: {_one_line(exc)}"
                ) from exc
        finally:
            close_stale_connections()
            self._keep_open_connections()

    def _keep_open_connections(self) -> None:
        open_now = [
            c for c in connections.all(initialized_only=True) if c.connection is not None and not c.in_atomic_block
        ]
        if open_now:
            with self._lock:
                for conn in open_now:
                    self._kept[id(conn)] = conn

    def close_connections(self) -> None:
        """Closes the connections this callback left open on any thread (persistent
        ones, ``CONN_MAX_AGE > 0``). Call it once no processor delivers to this
        callback any more (:meth:`WorkerProcessor.stop` does)."""
        with self._lock:
            kept, self._kept = self._kept, {}
        for conn in kept.values():
            if conn.in_atomic_block:
                continue  # back in a caller's transaction: not ours to close
            # Connections belong to the thread that opened it; Django's sanctioned
            # way to close one from another thread is to allow sharing first.
            conn.inc_thread_sharing()
            try:
                conn.close()
            finally:
                conn.dec_thread_sharing()


def bulk_create_callback(
    model: Any,
    build: Optional[Builder] = None,
    batch_size: int = 500,
    using: Optional[str] = None,
) -> BulkCreateCallback:
    """A flush callback that saves every batch as ``model`` rows.

    Each event (a dict with ``type``, ``user_id``, ``channel_id``, ``timestamp`` and
    ``payload`` if one was pushed) becomes ``build(event)``, by default
    ``model(event_type=type, user_id=..., channel_id=..., timestamp=<datetime>)``
    (``type=`` when the model has no ``event_type`` field; the timestamp becomes an
    aware UTC datetime under ``USE_TZ``). The instances are bulk-created
    ``batch_size`` rows per INSERT inside ``transaction.atomic(using=...)`` on
    ``using`` (default: the router's write database for ``model``), so a batch is
    saved entirely or not at all.

    A ``django.db.OperationalError`` or ``InterfaceError`` ("database is locked", a
    dropped connection) raises :class:`~engagehub.errors.BatchFailed`: the processor
    retries the batch with backoff, then hands it to the dead-letter callback, and
    logs each failure as one WARNING line on the ``engagehub`` logger. Any other
    exception (a bug in ``build``, an IntegrityError) propagates as it is and is
    logged with its traceback.

    Before and after each batch the calling thread's stale connections are closed
    (see :func:`close_stale_connections`).
    """
    return BulkCreateCallback(model, build=build, batch_size=batch_size, using=using)


_WORKERS: "weakref.WeakSet[WorkerProcessor]" = weakref.WeakSet()
_INHERITED: List[EventStreamProcessor] = []


class WorkerProcessor:
    """One :class:`~engagehub.EventStreamProcessor` per process, created on first use.

    ``WorkerProcessor(*args, flush_callback=..., dead_letter_callback=...,
    batch_format="dicts", **kwargs)`` keeps the processor's arguments;
    :attr:`processor` creates it (with the callbacks set) the first time it is used
    in a process, and again in a forked child, so a module-level instance is safe
    under gunicorn's ``preload_app``. Every other attribute is the processor's
    (``push_event``, ``flush_now``, ``get_top_channels``…), so it
    stands in for the reference guide's module-level ``processor``.

    :meth:`stop` closes the processor (delivering every accepted event), then closes
    the connections its flush callback left open and this thread's connections.
    The next use after :meth:`stop` starts a new processor. ``with`` stops on exit.
    """

    def __init__(
        self,
        *args: Any,
        flush_callback: Optional[Callable[[Any], Any]] = None,
        dead_letter_callback: Optional[DeadLetterCallback] = None,
        batch_format: str = "dicts",
        **kwargs: Any,
    ) -> None:
        self._args = args
        self._kwargs = kwargs
        self._flush_callback = flush_callback
        self._dead_letter_callback = dead_letter_callback
        self._batch_format = batch_format
        self._processor: Optional[EventStreamProcessor] = None
        self._pid = 0
        self._lock = threading.Lock()
        _WORKERS.add(self)

    def __repr__(self) -> str:
        state = "running" if self.started else "not started"
        return f"<WorkerProcessor {state} pid={os.getpid()}>"

    @property
    def started(self) -> bool:
        """True when this process has a running processor."""
        return self._processor is not None and self._pid == os.getpid()

    @property
    def processor(self) -> EventStreamProcessor:
        """This process's processor, created on first use."""
        p = self._processor
        if p is not None and self._pid == os.getpid():
            return p
        with self._lock:
            if self._processor is None or self._pid != os.getpid():
                if self._processor is not None:
                    # Inherited through fork: the parent's, and its worker threads did
                    # not survive. Never free it here (the garbage collector would, at
                    # any moment): the parent still owns it.
                    _INHERITED.append(self._processor)
                p = EventStreamProcessor(*self._args, **self._kwargs)
                if self._flush_callback is not None:
                    p.set_flush_callback(self._flush_callback, batch_format=self._batch_format)
                if self._dead_letter_callback is not None:
                    p.set_dead_letter_callback(self._dead_letter_callback)
                self._processor, self._pid = p, os.getpid()
            return self._processor

    def start(self) -> EventStreamProcessor:
        """Creates this process's processor now rather than on first use."""
        return self.processor

    def stop(self) -> None:
        """Closes this process's processor (blocks until every accepted event is
        delivered or dead-lettered), then closes the database connections the flush
        callback left open and this thread's idle connections. Idempotent."""
        with self._lock:
            p, pid = self._processor, self._pid
            self._processor, self._pid = None, 0
        if p is not None and pid == os.getpid():
            p.close()
        if self._flush_callback is not None:
            # Through wrappers such as metrics.instrument_callback (functools.wraps).
            close = getattr(inspect.unwrap(self._flush_callback), "close_connections", None)
            if close is not None:
                close()
        _close_idle_connections()

    @property
    def _publisher(self) -> Any:
        """The running processor's publisher (``redis=``), or ``None`` (for the
        metrics' publish age; never starts a processor)."""
        p = self._processor
        return p._publisher if p is not None and self._pid == os.getpid() else None

    def stats(self) -> Any:
        """The running processor's ``stats()``. Raises ``ValueError`` when this process
        has none (not used yet, or stopped) rather than starting one, so a metrics
        scrape (:func:`engagehub.metrics.register`) never starts a processor."""
        p = self._processor
        if p is None or self._pid != os.getpid():
            raise ValueError("no processor running in this process")
        return p.stats()

    def __enter__(self) -> EventStreamProcessor:
        return self.processor

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.processor, name)


def on_worker_start() -> None:
    """For gunicorn's ``post_fork(server, worker)``: starts this process's processor
    of every :class:`WorkerProcessor` already defined (with ``preload_app`` they
    were imported in the master); those defined later start on first use."""
    for worker in list(_WORKERS):
        worker.start()


def on_worker_stop() -> None:
    """For gunicorn's ``worker_exit(server, worker)`` (or any shutdown path): stops
    every :class:`WorkerProcessor` of this process (each delivers everything it
    accepted), then closes this thread's database connections."""
    for worker in list(_WORKERS):
        worker.stop()
    _close_idle_connections()


# -- the app's shared clients (ENGAGEHUB settings) ------------------------------------------


def engagehub_settings() -> "EngageHubSettings":
    """``settings.ENGAGEHUB``, checked, with its defaults (an
    :class:`~engagehub.django.conf.EngageHubSettings`: ``redis_url``,
    ``redis_options``, ``namespace``, ``leaderboard_key``, ``window_minutes``,
    ``check_eviction``). Raises ``ImproperlyConfigured`` naming what is wrong."""
    from . import conf

    return conf.state().config


def shared_redis() -> Any:
    """This process's ``redis.Redis`` client for ``ENGAGEHUB["REDIS_URL"]`` (with
    ``REDIS_OPTIONS``): the readers' client, and the one to give writers
    (``redis=shared_redis()``). No network I/O until its first command."""
    from . import conf

    return conf.state().client


def shared_analytics() -> "SharedAnalytics":
    """The :class:`~engagehub.shared.SharedAnalytics` of ``ENGAGEHUB["NAMESPACE"]``
    (``WINDOW_MINUTES``, ``CHECK_EVICTION``), one per process."""
    from . import conf

    return conf.state().analytics


def shared_leaderboard(key: Optional[str] = None) -> "SharedLeaderboard":
    """The :class:`~engagehub.shared.SharedLeaderboard` of ``key`` (default
    ``ENGAGEHUB["LEADERBOARD_KEY"]``), one per key and process."""
    from ..shared import SharedLeaderboard
    from . import conf

    current = conf.state()
    key = current.config.leaderboard_key if key is None else key
    board = current.leaderboards.get(key)
    if board is None:
        board = current.leaderboards.setdefault(key, SharedLeaderboard(current.client, key))
    return board


def async_shared_redis() -> Any:
    """The ``redis.asyncio`` client of the running event loop (one per loop: a
    ``redis.asyncio`` client belongs to the loop it first ran on). Call it from a
    coroutine."""
    from . import conf

    return conf.for_loop()[0]


def async_shared_analytics() -> "AsyncSharedAnalytics":
    """:func:`shared_analytics` for async views: an
    :class:`~engagehub.shared.AsyncSharedAnalytics` on the running loop's client.
    Call it from a coroutine; await its queries."""
    from . import conf

    return conf.for_loop()[1]


def async_shared_leaderboard(key: Optional[str] = None) -> "AsyncSharedLeaderboard":
    """:func:`shared_leaderboard` for async views: an
    :class:`~engagehub.shared.AsyncSharedLeaderboard` on the running loop's
    client. Call it from a coroutine; await its queries."""
    from ..shared import AsyncSharedLeaderboard
    from . import conf

    client, _, boards = conf.for_loop()
    key = conf.state().config.leaderboard_key if key is None else key
    board = boards.get(key)
    if board is None:
        board = boards.setdefault(key, AsyncSharedLeaderboard(client, key))
    return board
