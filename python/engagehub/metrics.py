"""Prometheus metrics: processor and leaderboard ``stats()``, flush latency and sizes.

prometheus_client is an optional dependency (``pip install "engagehub[metrics]"``).

* :func:`register` exports a processor's and/or a leaderboard's ``stats()`` through a
  custom collector, read at scrape time (the counters are the native ones, so nothing
  is counted twice and nothing runs on the hot path).
* :func:`instrument_callback` wraps a flush callback to observe each call's latency
  and each delivered batch's size in two histograms.

Metric names (``namespace`` defaults to ``engagehub``); every counter of
``stats()`` is exported under its field's name, so a counter added to ``stats()``
appears without a change here:

* ``engagehub_processor_<field>_total`` (``pushed``, ``accepted``, ``dropped``,
  ``processed``, ``delivered``, ``discarded``, ``batches``, ``failures``,
  ``retries``, ``dead_lettered``, ``dead_letter_batches``) and the gauge
  ``engagehub_processor_queue_length``;
* ``engagehub_leaderboard_<field>_total`` (``evicted``, ``refused``, ``rebases``…)
  and the gauges ``engagehub_leaderboard_users``, ``engagehub_leaderboard_heap_bytes``
  and ``engagehub_leaderboard_landmark_timestamp_seconds``;
* ``engagehub_flush_duration_seconds{outcome="ok"|"error"}`` and
  ``engagehub_flush_batch_events`` (histograms; sizes of the batches the callback
  accepted, so its ``_count`` and ``_sum`` follow ``batches`` and ``delivered``).
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised without prometheus_client only
    raise ImportError('engagehub.metrics needs prometheus_client: pip install "engagehub[metrics]"') from exc

from .leaderboard import LeaderboardStats
from .processor import ProcessorStats

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "EngageHubCollector",
    "instrument_callback",
    "register",
]

# The gauges of stats(); every other field is a counter, exported as
# <namespace>_<kind>_<field>_total, so a counter added to stats() is exported too.
_PROCESSOR_GAUGES: Tuple[Tuple[str, str, str], ...] = (
    ("queue_len", "queue_length", "Events waiting in the ring."),
)
_LEADERBOARD_GAUGES: Tuple[Tuple[str, str, str], ...] = (
    ("len", "users", "Users on the board."),
    ("heap_bytes", "heap_bytes", "Heap bytes held by the native board."),
    ("landmark", "landmark_timestamp_seconds", "The decay landmark, unix seconds."),
)
_PROCESSOR_HELP = {
    "pushed": "Events offered to the processor (accepted + dropped).",
    "accepted": "Events placed in the ring.",
    "dropped": "Events refused because the ring was full.",
    "processed": "Events taken by the workers and sketched.",
    "delivered": "Events in batches the flush callback accepted.",
    "discarded": "Events in batches dropped because no flush callback was set.",
    "batches": "Batches the flush callback accepted.",
    "failures": "Failed flush attempts (each retried or dead-lettered).",
    "retries": "Retries of failed flushes.",
    "dead_lettered": "Events given up on after the last retry.",
    "dead_letter_batches": "Batches given up on after the last retry.",
}
_LEADERBOARD_HELP = {
    "evicted": "Users evicted to make room for a higher-scoring newcomer (max_users).",
    "refused": "Newcomers refused because the board was full and they ranked too low.",
    "rebases": "Times the decay landmark moved forward.",
    "future_refused": "Updates refused for a timestamp too far in the future.",
}


def _counters(stats: type, gauges: Sequence[Tuple[str, str, str]], docs: Mapping[str, str]) -> Tuple[Tuple[str, str], ...]:
    skip = {field for field, _, _ in gauges}
    return tuple(
        (field, docs.get(field, f"{stats.__name__}.{field}."))
        for field in stats._fields  # type: ignore[attr-defined]
        if field not in skip
    )


_PROCESSOR_COUNTERS = _counters(ProcessorStats, _PROCESSOR_GAUGES, _PROCESSOR_HELP)
_LEADERBOARD_COUNTERS = _counters(LeaderboardStats, _LEADERBOARD_GAUGES, _LEADERBOARD_HELP)

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
        self,
        kind: str,
        counters: Iterable[Tuple[str, str]],
        gauges: Iterable[Tuple[str, str, str]],
        label_names: Sequence[str],
    ) -> Tuple[List[Tuple[str, Metric]], List[Tuple[str, Metric]]]:
        prefix = f"{self.namespace}_{kind}_"
        return (
            [(field, CounterMetricFamily(prefix + field, doc, labels=label_names)) for field, doc in counters],
            [(field, GaugeMetricFamily(prefix + name, doc, labels=label_names)) for field, name, doc in gauges],
        )

    def _collect_kind(
        self,
        kind: str,
        counters: Iterable[Tuple[str, str]],
        gauges: Iterable[Tuple[str, str, str]],
        items: List[Tuple[Any, Tuple[str, ...]]],
        label_names: Sequence[str],
    ) -> Iterator[Metric]:
        counter_families, gauge_families = self._families(kind, counters, gauges, label_names)
        for obj, values in items:
            try:
                stats = obj.stats()
            except ValueError:  # closed (engagehub's Closed is a ValueError too)
                continue
            for field, family in counter_families + gauge_families:
                value = getattr(stats, field, None)
                if value is not None:  # a duck-typed source may lack a field
                    family.add_metric(values, value)
        for _, family in counter_families + gauge_families:
            yield family

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            processors = (list(self._processors.items), self._processors.label_names or ())
            leaderboards = (list(self._leaderboards.items), self._leaderboards.label_names or ())
        yield from self._collect_kind(
            "processor", _PROCESSOR_COUNTERS, _PROCESSOR_GAUGES, *processors
        )
        yield from self._collect_kind(
            "leaderboard", _LEADERBOARD_COUNTERS, _LEADERBOARD_GAUGES, *leaderboards
        )

    def describe(self) -> Iterator[Metric]:
        # Every name, sources or not, so the registry reserves them all at once.
        for kind, counters, gauges in (
            ("processor", _PROCESSOR_COUNTERS, _PROCESSOR_GAUGES),
            ("leaderboard", _LEADERBOARD_COUNTERS, _LEADERBOARD_GAUGES),
        ):
            c, g = self._families(kind, counters, gauges, ())
            for _, family in c + g:
                yield family


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
