"""Prometheus metrics: writers' ``stats()``, publish freshness, flush latency and
sizes, and the shared readers' latency and errors.

prometheus_client is an optional dependency (``pip install "engagehub[metrics]"``).

* :func:`register` exports a processor's and/or a leaderboard's ``stats()`` through a
  custom collector, read at scrape time (the counters are the native ones, so nothing
  is counted twice and nothing runs on the hot path), and, for a writer with
  ``redis=``, how stale the shared state may be of it.
* :func:`instrument_callback` wraps a flush callback to observe each call's latency
  and each delivered batch's size in two histograms.
* :func:`instrument_readers` times every query of every ``engagehub.shared`` reader
  of the process (blocking and asyncio) and counts their errors.
* :func:`register_shared` exports the shared state itself (every writer's events,
  dead letters, unique users, board sizes), read from Redis at scrape time: one
  process (the bot) gives the whole deployment's view.
* :func:`export_multiprocess` copies ``stats()`` into ordinary metrics every few
  seconds, for prometheus_client's multiprocess mode (gunicorn workers), where
  custom collectors do not run.

Metric names (``namespace`` defaults to ``engagehub``). Every field of
``ProcessorStats`` and ``LeaderboardStats`` is classified below: a count that only
grows is a counter (``engagehub_processor_<field>_total``), a value that goes up
and down is a gauge (its own name, no ``_total``), so ``rate()`` and
``increase()`` are right on every counter:

* processor gauges: ``queue_length``, ``publish_pending_events``, ``journal_bytes``,
  ``journal_failing``; leaderboard gauges: ``users``, ``heap_bytes``,
  ``landmark_timestamp_seconds``, ``pending_changes``, ``publish_waiting_batches``,
  ``journal_bytes``, ``journal_failing``;
* ``engagehub_processor_publish_age_seconds`` and
  ``engagehub_leaderboard_publish_age_seconds`` (gauges, writers with ``redis=``):
  seconds since Redis last held everything the writer had;
* ``engagehub_flush_duration_seconds{outcome="ok"|"error"}`` and
  ``engagehub_flush_batch_events`` (histograms; sizes of the batches the callback
  accepted, so its ``_count`` and ``_sum`` follow ``batches`` and ``delivered``);
* ``engagehub_shared_query_duration_seconds{reader, query}`` (histogram) and
  ``engagehub_shared_query_errors_total{reader, query, error}``;
* ``engagehub_shared_events_total{namespace}``,
  ``engagehub_shared_events_dead_lettered_total{namespace}``,
  ``engagehub_shared_unique_users_last_hour{namespace}``,
  ``engagehub_shared_leaderboard_users{board}``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised without prometheus_client only
    raise ImportError('engagehub.metrics needs prometheus_client: pip install "engagehub[metrics]"') from exc

from . import LeaderboardStats, ProcessorStats

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "EngageHubCollector",
    "ReaderMetrics",
    "SharedStateCollector",
    "StatsExporter",
    "export_multiprocess",
    "instrument_callback",
    "instrument_readers",
    "register",
    "register_shared",
]

log = logging.getLogger("engagehub")

# Every field of stats(), classified. Counters: (field, help), exported as
# <namespace>_<kind>_<field>_total. Gauges: (field, name, help, multiprocess mode),
# exported as <namespace>_<kind>_<name>; the mode is how export_multiprocess's
# gauges of several processes combine (prometheus_client's multiprocess_mode: "live"
# drops a process that exited). A field in neither table is not exported (the
# tests fail on one).
_PROCESSOR_COUNTERS: Tuple[Tuple[str, str], ...] = (
    ("pushed", "Events offered to the processor (accepted + dropped)."),
    ("accepted", "Events placed in the ring."),
    ("dropped", "Events refused because the ring was full."),
    ("processed", "Events taken by the workers and sketched."),
    ("delivered", "Events in batches the flush callback accepted."),
    ("discarded", "Events in batches dropped because no flush callback was set."),
    ("batches", "Batches the flush callback accepted."),
    ("failures", "Failed flush attempts (each retried or dead-lettered)."),
    ("retries", "Retries of failed flushes."),
    ("dead_lettered", "Events given up on after the last retry."),
    ("dead_letter_batches", "Batches given up on after the last retry."),
    ("future_refused", "Events refused for a timestamp too far in the future."),
    ("published_batches", "Publishes Redis acknowledged."),
    ("publish_failures", "Publish attempts that failed (each retried)."),
    ("publish_duplicates", "Retried publishes Redis had already applied (a lost reply)."),
    ("publish_lost_minutes", "Minutes that left the window before they could be published."),
    ("journal_checkpoints", "Journal checkpoints written since the processor opened."),
    ("journal_replayed", "Journal records replayed when the processor opened."),
    ("journal_torn", "Torn journal tails truncated when the processor opened."),
)
_PROCESSOR_GAUGES: Tuple[Tuple[str, str, str, str], ...] = (
    ("queue_len", "queue_length", "Events waiting in the ring.", "livesum"),
    ("publish_pending_events", "publish_pending_events", "Events processed that Redis has not acknowledged yet.",
     "livesum"),
    ("journal_bytes", "journal_bytes", "Journal bytes logged since the last checkpoint.", "livesum"),
    ("journal_failing", "journal_failing", "1 while the journal is not written or its last sync failed.", "livemax"),
)
_LEADERBOARD_COUNTERS: Tuple[Tuple[str, str], ...] = (
    ("evicted", "Users evicted to make room for a higher-scoring newcomer (max_users)."),
    ("refused", "Newcomers refused because the board was full and they ranked too low."),
    ("rebases", "Times the decay landmark moved forward."),
    ("future_refused", "Updates refused for a timestamp too far in the future."),
    ("pending_dropped", "Changes not recorded for Redis because max_pending were held."),
    ("published_batches", "Publish scripts Redis applied."),
    ("published_rows", "Changes (one per user per batch) Redis applied."),
    ("publish_duplicates", "Retried batches Redis had already applied (a lost reply)."),
    ("publish_failures", "Publish attempts that failed (each retried)."),
    ("trimmed", "Users removed from the shared board by max_users after this writer's batches."),
    ("journal_checkpoints", "Journal checkpoints written since the board opened."),
    ("journal_replayed", "Journal records replayed when the board opened."),
    ("journal_torn", "Torn journal tails truncated when the board opened."),
)
_LEADERBOARD_GAUGES: Tuple[Tuple[str, str, str, str], ...] = (
    ("len", "users", "Users on the board.", "livemax"),
    ("heap_bytes", "heap_bytes", "Heap bytes held by the native board.", "livesum"),
    ("landmark", "landmark_timestamp_seconds", "The decay landmark, unix seconds.", "livemax"),
    ("pending", "pending_changes", "Changes recorded and not yet drained by the publisher.", "livesum"),
    ("publish_waiting", "publish_waiting_batches", "Batches drained but not yet acknowledged by Redis.", "livesum"),
    ("journal_bytes", "journal_bytes", "Journal bytes logged since the last checkpoint.", "livesum"),
    ("journal_failing", "journal_failing", "1 while the journal's last sync or checkpoint failed.", "livemax"),
)
#: The freshness gauge of writers with redis= (computed from the publisher).
_AGE = ("publish_age_seconds", "Seconds since Redis last held everything this writer had "
        "(grows while Redis is unreachable or refuses its batches).", "livemax")


def unclassified() -> Dict[str, List[str]]:
    """Fields of ``ProcessorStats`` / ``LeaderboardStats`` in neither table (not
    exported): empty unless a field was added without classifying it here."""
    out = {}
    for kind, stats, counters, gauges in (
        ("processor", ProcessorStats, _PROCESSOR_COUNTERS, _PROCESSOR_GAUGES),
        ("leaderboard", LeaderboardStats, _LEADERBOARD_COUNTERS, _LEADERBOARD_GAUGES),
    ):
        known = {c[0] for c in counters} | {g[0] for g in gauges}
        out[kind] = [f for f in stats._fields if f not in known]
    return out


def _publish_age(source: Any) -> Optional[float]:
    """Seconds since Redis last held everything ``source`` (a writer) had, or
    ``None`` without ``redis=``."""
    publisher = getattr(source, "_publisher", None)
    if publisher is None:
        return None
    return max(0.0, time.time() - publisher.counters.current_at)


BATCH_SIZE_BUCKETS: Tuple[float, ...] = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Default buckets of ``<namespace>_flush_batch_events`` (events per batch)."""

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check_labels(labels: Optional[Mapping[str, str]], reserved: Sequence[str] = ()) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for name, value in (labels or {}).items():
        if not isinstance(name, str) or not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"invalid label name {name!r}")
        if name in reserved:
            raise ValueError(f"label name {name!r} is used by engagehub's own metrics")
        out[name] = str(value)
    return out


class _Sources:
    """Objects of one kind exported under one set of label names."""

    def __init__(self) -> None:
        self.label_names: Optional[Tuple[str, ...]] = None
        self.items: List[Tuple[Any, Tuple[str, ...]]] = []

    def add(self, obj: Any, labels: Dict[str, str], kind: str) -> None:
        names = tuple(sorted(labels))
        if self.label_names is None or not self.items:
            self.label_names = names
        elif names != self.label_names:
            raise ValueError(
                f"every {kind} of one registry and namespace needs the same label names: "
                f"{list(self.label_names)} already, got {list(names)}"
            )
        values = tuple(labels[n] for n in names)
        if any(v == values for _, v in self.items):
            raise ValueError(f"a {kind} with labels {labels} is already registered")
        self.items.append((obj, values))

    def remove(self, obj: Any) -> bool:
        before = len(self.items)
        self.items = [(o, v) for o, v in self.items if o is not obj]
        return len(self.items) != before


class EngageHubCollector(Collector):
    """Reads ``stats()`` of the registered processors and leaderboards at each scrape.

    Made by :func:`register` (one per registry and namespace; later calls add to it).
    A source is anything with a ``stats()`` of the right shape, e.g. an
    :class:`~engagehub.EventStreamProcessor` or an ``engagehub.django.WorkerProcessor``;
    a closed one is skipped until it is removed."""

    def __init__(self, namespace: str = "engagehub") -> None:
        if not _LABEL_NAME.match(namespace):
            raise ValueError(f"invalid namespace {namespace!r}")
        self.namespace = namespace
        self._lock = threading.Lock()
        self._processors = _Sources()
        self._leaderboards = _Sources()

    def __repr__(self) -> str:
        return (
            f"<EngageHubCollector namespace={self.namespace!r} processors={len(self._processors.items)} "
            f"leaderboards={len(self._leaderboards.items)}>"
        )

    def add(
        self,
        processor: Any = None,
        leaderboard: Any = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Exports ``processor`` and/or ``leaderboard`` with these constant labels."""
        checked = _check_labels(labels)
        with self._lock:
            if processor is not None:
                self._processors.add(processor, checked, "processor")
            if leaderboard is not None:
                try:
                    self._leaderboards.add(leaderboard, checked, "leaderboard")
                except ValueError:
                    if processor is not None:
                        self._processors.remove(processor)
                    raise

    def remove(self, obj: Any) -> bool:
        """Stops exporting ``obj`` (a processor or leaderboard); True if it was there."""
        with self._lock:
            a = self._processors.remove(obj)
            b = self._leaderboards.remove(obj)
            return a or b

    def _families(
        self, kind: str, label_names: Sequence[str]
    ) -> List[Tuple[Callable[[Any, Any], Optional[float]], Metric]]:
        """(how to read the value from (source, stats), the family) of every metric
        of ``kind``."""
        prefix = f"{self.namespace}_{kind}_"
        counters, gauges = _TABLES[kind]
        out: List[Tuple[Callable[[Any, Any], Optional[float]], Metric]] = []
        for field, doc in counters:
            out.append((_field(field), CounterMetricFamily(prefix + field, doc, labels=label_names)))
        for field, name, doc, _ in gauges:
            out.append((_field(field), GaugeMetricFamily(prefix + name, doc, labels=label_names)))
        name, doc, _ = _AGE
        out.append((lambda source, stats: _publish_age(source), GaugeMetricFamily(prefix + name, doc,
                                                                                   labels=label_names)))
        return out

    def _collect_kind(
        self, kind: str, items: List[Tuple[Any, Tuple[str, ...]]], label_names: Sequence[str]
    ) -> Iterator[Metric]:
        families = self._families(kind, label_names)
        for obj, values in items:
            try:
                stats = obj.stats()
            except ValueError:  # closed (engagehub's Closed is a ValueError too)
                continue
            for read, family in families:
                value = read(obj, stats)
                if value is not None:  # a duck-typed source may lack a field
                    family.add_metric(values, value)
        for _, family in families:
            yield family

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            processors = (list(self._processors.items), self._processors.label_names or ())
            leaderboards = (list(self._leaderboards.items), self._leaderboards.label_names or ())
        yield from self._collect_kind("processor", *processors)
        yield from self._collect_kind("leaderboard", *leaderboards)

    def describe(self) -> Iterator[Metric]:
        # Every name, sources or not, so the registry reserves them all at once.
        for kind in _TABLES:
            for _, family in self._families(kind, ()):
                yield family


def _field(name: str) -> Callable[[Any, Any], Optional[float]]:
    return lambda source, stats: getattr(stats, name, None)


_TABLES = {
    "processor": (_PROCESSOR_COUNTERS, _PROCESSOR_GAUGES),
    "leaderboard": (_LEADERBOARD_COUNTERS, _LEADERBOARD_GAUGES),
}


_LOCK = threading.Lock()
_COLLECTORS: "weakref.WeakKeyDictionary[CollectorRegistry, Dict[str, EngageHubCollector]]" = (
    weakref.WeakKeyDictionary()
)
_HISTOGRAMS: "weakref.WeakKeyDictionary[CollectorRegistry, Dict[str, Tuple[Tuple[str, ...], Histogram, Histogram]]]" = (
    weakref.WeakKeyDictionary()
)


def register(
    processor: Any = None,
    leaderboard: Any = None,
    registry: CollectorRegistry = REGISTRY,
    namespace: str = "engagehub",
    labels: Optional[Mapping[str, str]] = None,
) -> EngageHubCollector:
    """Exports ``processor.stats()`` and/or ``leaderboard.stats()`` on ``registry``.

    ``labels``: constant labels on every sample of these objects, needed to tell
    apart several processors (or leaderboards) on one registry, e.g.
    ``register(leaderboard=weekly, labels={"board": "weekly"})``; all objects of a
    kind need the same label names. Returns the collector of this registry and
    namespace (created and registered on first use); ``collector.remove(obj)`` stops
    exporting an object.
    """
    if processor is None and leaderboard is None:
        raise TypeError("register() needs a processor, a leaderboard or both")
    for name, obj in (("processor", processor), ("leaderboard", leaderboard)):
        if obj is not None and not callable(getattr(obj, "stats", None)):
            raise TypeError(f"{name} has no stats() method: {obj!r}")
    with _LOCK:
        per_registry = _COLLECTORS.setdefault(registry, {})
        collector = per_registry.get(namespace)
        if collector is None:
            collector = EngageHubCollector(namespace)
            registry.register(collector)
            per_registry[namespace] = collector
        collector.add(processor, leaderboard, labels)
    return collector


def _histograms(
    registry: CollectorRegistry,
    namespace: str,
    label_names: Tuple[str, ...],
    latency_buckets: Sequence[float],
    size_buckets: Sequence[float],
) -> Tuple[Histogram, Histogram]:
    with _LOCK:
        per_registry = _HISTOGRAMS.setdefault(registry, {})
        found = per_registry.get(namespace)
        if found is not None:
            names, latency, sizes = found
            if names != label_names:
                raise ValueError(
                    f"every instrumented callback of one registry and namespace needs the same label "
                    f"names: {list(names)} already, got {list(label_names)}"
                )
            return latency, sizes
        latency = Histogram(
            "flush_duration_seconds",
            "Time spent in the flush callback per call, by outcome (ok, or error: it raised).",
            labelnames=label_names + ("outcome",),
            namespace=namespace,
            buckets=latency_buckets,
            registry=registry,
        )
        sizes = Histogram(
            "flush_batch_events",
            "Events per batch the flush callback accepted.",
            labelnames=label_names,
            namespace=namespace,
            buckets=size_buckets,
            registry=registry,
        )
        per_registry[namespace] = (label_names, latency, sizes)
        return latency, sizes


def instrument_callback(
    callback: Callable[[Any], Any],
    registry: CollectorRegistry = REGISTRY,
    namespace: str = "engagehub",
    labels: Optional[Mapping[str, str]] = None,
    latency_buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    size_buckets: Sequence[float] = BATCH_SIZE_BUCKETS,
) -> Callable[[Any], Any]:
    """Wraps a flush callback: each call's duration goes into
    ``<namespace>_flush_duration_seconds`` (``outcome="ok"``, or ``"error"`` when it
    raised; the exception propagates unchanged, so the batch is still retried), and
    each accepted batch's ``len()`` into ``<namespace>_flush_batch_events``.

    Pass the wrapper to ``set_flush_callback`` (any ``batch_format``). ``labels``
    tell apart several instrumented callbacks on one registry. A coroutine function
    gets a coroutine-function wrapper. The histograms are created on the registry by
    the first call for a namespace; later calls must use the same label names and
    get the same buckets.
    """
    if not callable(callback):
        raise TypeError("callback must be callable")
    checked = _check_labels(labels, reserved=("outcome",))
    names = tuple(sorted(checked))
    latency, sizes = _histograms(registry, namespace, names, tuple(latency_buckets), tuple(size_buckets))
    values = [checked[n] for n in names]
    ok = latency.labels(*values, "ok")
    error = latency.labels(*values, "error")
    size = sizes.labels(*values) if names else sizes
    clock = time.perf_counter

    if inspect.iscoroutinefunction(callback):

        @functools.wraps(callback, updated=())
        async def instrumented_async(batch: Any) -> Any:
            start = clock()
            try:
                result = await callback(batch)
            except BaseException:
                error.observe(clock() - start)
                raise
            ok.observe(clock() - start)
            size.observe(len(batch))
            return result

        return instrumented_async

    @functools.wraps(callback, updated=())
    def instrumented(batch: Any) -> Any:
        start = clock()
        try:
            result = callback(batch)
        except BaseException:
            error.observe(clock() - start)
            raise
        ok.observe(clock() - start)
        size.observe(len(batch))
        return result

    return instrumented


# -- the read side -------------------------------------------------------------------

#: Default buckets of ``<namespace>_shared_query_duration_seconds``: a query is one
#: or two Redis round trips.
QUERY_BUCKETS: Tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_READERS: "weakref.WeakKeyDictionary[CollectorRegistry, Dict[str, ReaderMetrics]]" = weakref.WeakKeyDictionary()


class ReaderMetrics:
    """The read side's metrics on one registry (made by :func:`instrument_readers`):
    ``<namespace>_shared_query_duration_seconds{reader, query}`` (every query,
    answered or not) and ``<namespace>_shared_query_errors_total{reader, query,
    error}`` (``error`` is the exception's class name: ``ConnectionError``,
    ``TimeoutError``, ``Corrupt``, ``NotFound``...)."""

    def __init__(self, registry: CollectorRegistry, namespace: str, buckets: Sequence[float]) -> None:
        self.latency = Histogram(
            "shared_query_duration_seconds",
            "Time of a query of an engagehub.shared reader, by reader (analytics, leaderboard) and query.",
            labelnames=("reader", "query"), namespace=namespace, buckets=buckets, registry=registry,
        )
        self.errors = Counter(
            "shared_query_errors",
            "Queries of engagehub.shared readers that raised, by reader, query and exception class.",
            labelnames=("reader", "query", "error"), namespace=namespace, registry=registry,
        )

    def __call__(self, reader: str, query: str, seconds: float, error: Optional[BaseException]) -> None:
        self.latency.labels(reader, query).observe(seconds)
        if error is not None:
            self.errors.labels(reader, query, type(error).__name__).inc()

    def remove(self) -> None:
        """Stops observing the readers (the metrics stay on the registry)."""
        from .shared._read import remove_observer

        remove_observer(self)


def instrument_readers(
    registry: CollectorRegistry = REGISTRY,
    namespace: str = "engagehub",
    buckets: Sequence[float] = QUERY_BUCKETS,
) -> ReaderMetrics:
    """Times every query of every ``engagehub.shared`` reader of this process
    (``SharedAnalytics``, ``SharedLeaderboard`` and their asyncio twins, made before
    or after this call) and counts the ones that raise. Call it once at start-up;
    later calls for the same registry and namespace return the same
    :class:`ReaderMetrics`. Under prometheus_client's multiprocess mode these are
    ordinary metrics, summed over the processes."""
    from .shared._read import add_observer

    with _LOCK:
        per_registry = _READERS.setdefault(registry, {})
        metrics = per_registry.get(namespace)
        if metrics is None:
            metrics = per_registry[namespace] = ReaderMetrics(registry, namespace, tuple(buckets))
    add_observer(metrics)
    return metrics


# -- the shared state ---------------------------------------------------------------------


class SharedStateCollector(Collector):
    """Exports, at each scrape, what the shared state holds (made by
    :func:`register_shared`): for each ``SharedAnalytics``
    ``<ns>_shared_events_total``, ``<ns>_shared_events_dead_lettered_total`` and
    ``<ns>_shared_unique_users_last_hour`` (label ``namespace``), for each
    ``SharedLeaderboard`` ``<ns>_shared_leaderboard_users`` (label ``board``). A
    reader whose query fails (Redis down) is left out of that scrape and logged at
    debug level (:func:`instrument_readers` counts the error); the scrape goes on."""

    def __init__(self, namespace: str = "engagehub") -> None:
        if not _LABEL_NAME.match(namespace):
            raise ValueError(f"invalid namespace {namespace!r}")
        self.namespace = namespace
        self._lock = threading.Lock()
        self._readers: List[Any] = []

    def add(self, reader: Any) -> None:
        from .shared import SharedAnalytics, SharedLeaderboard

        if not isinstance(reader, (SharedAnalytics, SharedLeaderboard)):
            raise TypeError(f"register_shared() takes SharedAnalytics and SharedLeaderboard readers, not {reader!r}")
        with self._lock:
            if all(r is not reader for r in self._readers):
                self._readers.append(reader)

    def remove(self, reader: Any) -> bool:
        with self._lock:
            before = len(self._readers)
            self._readers = [r for r in self._readers if r is not reader]
            return len(self._readers) != before

    def _families(self) -> Dict[str, Metric]:
        p = f"{self.namespace}_shared_"
        return {
            "events": CounterMetricFamily(p + "events", "Events processed by every writer of the namespace.",
                                          labels=("namespace",)),
            "dead": CounterMetricFamily(p + "events_dead_lettered", "Events every writer of the namespace "
                                        "dead-lettered (processed, not saved).", labels=("namespace",)),
            "users": GaugeMetricFamily(p + "unique_users_last_hour", "Distinct users of the last hour, every writer.",
                                       labels=("namespace",)),
            "board": GaugeMetricFamily(p + "leaderboard_users", "Users on the shared leaderboard.",
                                       labels=("board",)),
        }

    def collect(self) -> Iterator[Metric]:
        from .shared import SharedAnalytics

        with self._lock:
            readers = list(self._readers)
        families = self._families()
        for reader in readers:
            try:
                if isinstance(reader, SharedAnalytics):
                    values = [(families["events"], reader.total_events_processed()),
                              (families["dead"], reader.events_dead_lettered()),
                              (families["users"], reader.get_unique_users_last_hour())]
                    label = reader.namespace
                else:
                    values, label = [(families["board"], reader.size())], reader.key
            except Exception as exc:  # noqa: BLE001 - a scrape never fails for Redis
                log.debug("engagehub metrics: %r left out of this scrape: %s", reader, exc)
                continue
            for family, value in values:
                family.add_metric((label,), value)
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        yield from self._families().values()


_SHARED: "weakref.WeakKeyDictionary[CollectorRegistry, Dict[str, SharedStateCollector]]" = weakref.WeakKeyDictionary()


def register_shared(
    *readers: Any, registry: CollectorRegistry = REGISTRY, namespace: str = "engagehub"
) -> SharedStateCollector:
    """Exports the shared state that ``readers`` (``SharedAnalytics``,
    ``SharedLeaderboard``) read, at each scrape (one or two Redis round trips per
    reader). Register it in one process, e.g. the bot: its scrape is the whole
    deployment's analytics, every writer's. Returns the collector of this registry
    and namespace (later calls add to it)."""
    with _LOCK:
        per_registry = _SHARED.setdefault(registry, {})
        collector = per_registry.get(namespace)
        if collector is None:
            collector = SharedStateCollector(namespace)
            registry.register(collector)
            per_registry[namespace] = collector
    for reader in readers:
        collector.add(reader)
    return collector


# -- multiprocess mode ----------------------------------------------------------------------

_MULTIPROCESS: "weakref.WeakKeyDictionary[CollectorRegistry, Dict[Tuple[str, str, Tuple[str, ...]], Any]]" = (
    weakref.WeakKeyDictionary()
)


def _multiprocess_metrics(registry: CollectorRegistry, namespace: str, kind: str, names: Tuple[str, ...]) -> Any:
    """The ordinary metrics of ``kind`` on ``registry`` (made once; every exporter
    of the registry with the same label names shares them)."""
    with _LOCK:
        per_registry = _MULTIPROCESS.setdefault(registry, {})
        found = per_registry.get((namespace, kind, names))
        if found is not None:
            return found
        for (ns, other, other_names) in per_registry:
            if (ns, other) == (namespace, kind):
                raise ValueError(f"every exported {kind} of one registry and namespace needs the same label "
                                 f"names: {list(other_names)} already, got {list(names)}")
        counters, gauges = _TABLES[kind]
        prefix = f"{kind}_"
        made = per_registry[(namespace, kind, names)] = (
            [(field, Counter(prefix + field, doc, labelnames=names, namespace=namespace, registry=registry))
             for field, doc in counters],
            [(field, Gauge(prefix + name, doc, labelnames=names, namespace=namespace, registry=registry,
                           multiprocess_mode=mode))  # type: ignore[arg-type]
             for field, name, doc, mode in gauges],
            Gauge(prefix + _AGE[0], _AGE[1], labelnames=names, namespace=namespace, registry=registry,
                  multiprocess_mode=_AGE[2]),  # type: ignore[arg-type]
        )
        return made


class StatsExporter:
    """Copies ``stats()`` of a processor and/or a leaderboard into ordinary
    prometheus_client metrics every ``interval`` seconds, on a daemon thread (made
    by :func:`export_multiprocess`), under the names :func:`register` uses: a
    counter grows by what its field grew (a field that went back, a new processor,
    restarts it from there), a gauge is set, with the multiprocess mode of the
    tables above (``livesum``: summed over the live processes, ``livemax``: the
    worst one). :meth:`sample` copies now; :meth:`stop` copies one last time and
    stops the thread."""

    def __init__(
        self,
        processor: Any,
        leaderboard: Any,
        interval: float,
        registry: CollectorRegistry,
        namespace: str,
        labels: Mapping[str, str],
    ) -> None:
        self._sources = [(kind, obj) for kind, obj in (("processor", processor), ("leaderboard", leaderboard))
                         if obj is not None]
        names = tuple(sorted(labels))
        self._values = tuple(labels[n] for n in names)
        self._interval = interval
        self._last: Dict[Tuple[str, str], float] = {}
        self._metrics = {kind: _multiprocess_metrics(registry, namespace, kind, names) for kind, _ in self._sources}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engagehub-metrics", daemon=True)
        self._thread.start()

    def _labelled(self, metric: Any) -> Any:
        return metric.labels(*self._values) if self._values else metric

    def sample(self) -> None:
        """Copies every source's ``stats()`` now (a closed source is skipped)."""
        for kind, obj in self._sources:
            try:
                stats = obj.stats()
            except ValueError:  # closed, or a WorkerProcessor not started in this process
                continue
            counters, gauges, age = self._metrics[kind]
            for field, counter in counters:
                value = getattr(stats, field, 0)
                last = self._last.get((kind, field), 0)
                grew = value - last if value >= last else value
                if grew:
                    self._labelled(counter).inc(grew)
                self._last[(kind, field)] = value
            for field, gauge in gauges:
                self._labelled(gauge).set(getattr(stats, field, 0))
            seconds = _publish_age(obj)
            if seconds is not None:
                self._labelled(age).set(seconds)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - the next sample tries again
                log.exception("engagehub metrics: sampling stats() failed")

    def stop(self) -> None:
        """Copies one last time and stops the thread (idempotent)."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self.sample()


def export_multiprocess(
    processor: Any = None,
    leaderboard: Any = None,
    interval: float = 5.0,
    registry: CollectorRegistry = REGISTRY,
    namespace: str = "engagehub",
    labels: Optional[Mapping[str, str]] = None,
) -> StatsExporter:
    """For prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set
    before prometheus_client is imported; gunicorn): the custom collector of
    :func:`register` only runs in the process that serves the scrape, so each
    worker copies its own ``stats()`` into ordinary metrics every ``interval``
    seconds instead (a :class:`StatsExporter`; its thread does not survive a fork:
    call this in each worker, e.g. gunicorn's ``post_fork``, and ``stop()`` it in
    ``worker_exit``). ``processor`` may be an ``engagehub.django.WorkerProcessor``
    (sampled while this process's processor runs). Same names and labels as
    :func:`register`, so dashboards and alerts work in both modes."""
    if processor is None and leaderboard is None:
        raise TypeError("export_multiprocess() needs a processor, a leaderboard or both")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
        raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
    return StatsExporter(processor, leaderboard, float(interval), registry, namespace, _check_labels(labels))
