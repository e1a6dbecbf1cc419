"""The compiled fast paths of EventStreamProcessor (engagehub._engagehub_fast):
push_event, push_many and batch delivery return and raise exactly what the general
(cffi) paths do, for good and bad calls alike, and keep the handle model (close
from another thread, fork, collection on a worker thread).

Each replay runs the same calls through both paths on fresh processors and compares
every outcome (the value, or the exception's type and message), the counters and
the batches delivered."""

from __future__ import annotations

import gc
import inspect
import os
import re
import threading
import time

import pytest

import engagehub as eh
from engagehub import _compiled, errors
from engagehub import processor as processor_module
from engagehub._processor import decode, intake
from engagehub.processor import EventStreamProcessor

from test_processor_lifetime import assert_clean, run_python

WAIT = 30.0
NOW = int(time.time())

needs_fast = pytest.mark.skipif(not processor_module.FAST_PUSH, reason="engagehub._engagehub_fast is not built")


def test_fast_paths_are_built_where_the_test_command_promises_them():
    # `make py-test` builds the module and sets this, so CI cannot silently test
    # only the cffi paths.
    if os.environ.get("ENGAGEHUB_EXPECT_FAST") == "1":
        assert processor_module.FAST_PUSH
        fast = _compiled.fast
        assert type(inspect.getattr_static(EventStreamProcessor, "push_event")) is fast.PushEvent
        assert decode.build_batch is fast.build_batch
        assert intake.push_rows is fast.push_rows
        assert type(inspect.getattr_static(EventStreamProcessor, "top_channels")) is fast.TopChannels
        assert type(inspect.getattr_static(EventStreamProcessor, "get_top_channels")) is fast.TopChannels


def outcome(fn, *args, **kwargs):
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome
        # A future timestamp's message quotes the wall clock's second, which may
        # tick between two replays: compare the rest.
        return (type(exc), re.sub(r"the wall clock \(\d+\)", "the wall clock (now)", str(exc)))


class Collector:
    def __init__(self) -> None:
        self.batches: list = []
        self.lock = threading.Lock()

    def __call__(self, batch) -> None:
        with self.lock:
            self.batches.append(batch)

    def events(self) -> list:
        return [e for b in self.batches for e in b]


def counters(p: EventStreamProcessor) -> tuple:
    s = p.stats()
    return (s.pushed, s.accepted, s.dropped, s.delivered, s.future_refused)


S = "\ud800"  # a lone surrogate

PUSH_CALLS = [
    (("message", "u1", "c1", NOW), {}),
    (("message", "u1", "c1"), {}),  # default timestamp
    (("message", "u2", "c1", None), {}),  # None: now
    (("message", "u2", "c1", 0), {}),
    (("message", "u2", "c1", -5), {}),  # <= 0: now
    (("message", "u3", "c2", float(NOW)), {}),  # float: general path
    (("message", "u3", "c2", NOW + 0.9), {}),
    (("message", "u3", "c2", float("nan")), {}),
    (("message", "u3", "c2", True), {}),  # bool is not a timestamp
    (("message", "u3", "c2", "1"), {}),
    (("message", "u3", "c2", 2**63), {}),  # huge ints
    (("message", "u3", "c2", -(2**63) - 1), {}),
    (("message", "u3", "c2", 2**200), {}),
    (("message", "u3", "c2", 2**63 - 1), {}),  # fits, but far in the future
    (("message", "u3", "c2", NOW + 30 * 86400), {}),  # future: refused and counted
    ((b"message", b"u4", b"c3", NOW), {}),  # bytes
    ((bytearray(b"reaction"), "u4", "c3", NOW), {}),
    (("message", 42, "c3", NOW), {}),  # wrong types
    (("message", None, "c3", NOW), {}),
    ((["message"], "u4", "c3", NOW), {}),
    (("message", S, "c3", NOW), {}),  # lone surrogates
    ((S, "u4", "c3", NOW), {}),
    (("message", "u4", "c" + S, NOW), {}),
    (("mes\0sage", "u\0", "\0c", NOW), {}),  # NULs
    (("", "", "", NOW), {}),  # empty fields
    (("émoji 🎉", "ユーザー", "канал", NOW), {}),  # non-ASCII
    (("message", "x" * 1024, "c4", NOW), {}),  # longest field
    (("message", "x" * 1025, "c4", NOW), {}),  # too long
    (("message", "é" * 513, "c4", NOW), {}),  # 1026 bytes, 513 characters
    (("message", "u5", "c5", NOW, b"payload"), {}),  # payloads
    (("message", "u5", "c5", NOW, b""), {}),
    (("message", "u5", "c5", NOW, "not bytes"), {}),
    (("message", "u5", "c5"), {"timestamp": NOW}),  # keywords
    ((), {"event_type": "message", "user_id": "u6", "channel_id": "c6"}),
    (("message", "u6"), {}),  # wrong arity
    (("message", "u6", "c6", NOW, None, 7), {}),  # guild_id by position
    (("message", "u6", "c6", NOW, None, 7, 8), {}),  # wrong arity
    (("message", "u6", "c6", NOW), {"colour": 1}),
    # Guilds: str, int (its digits), None, "", bytes, bad types, keywords.
    (("message", "u7", "c7", NOW), {"guild_id": "g1"}),
    (("message", "u7", "c7"), {"guild_id": 123456789012345678}),
    (("message", "u7", "c7", None), {"guild_id": -5}),
    (("message", "u7", "c7", NOW), {"guild_id": None}),
    (("message", "u7", "c7", NOW), {"guild_id": ""}),
    (("message", "u7", "c7", NOW), {"guild_id": b"g2"}),
    (("message", "u7", "c7", NOW), {"guild_id": 2**64}),  # an int beyond 64 bits: its digits
    (("message", "u7", "c7", NOW), {"guild_id": 2**63 - 1}),  # int64's ends: formatted natively
    (("message", "u7", "c7", NOW), {"guild_id": -(2**63)}),
    (("message", "u7", "c7", NOW), {"guild_id": 0}),
    (("message", "u7", "c7", NOW), {"guild_id": True}),
    (("message", "u7", "c7", NOW), {"guild_id": 1.5}),
    (("message", "u7", "c7", NOW), {"guild_id": "g" + S}),
    (("message", "u7", "c7", NOW), {"guild_id": "x" * 1025}),
    (("message", "u7", "c7", NOW), {"guild_id": "ギルド"}),
    (("message", "u7", "c7", NOW, b"pay"), {"guild_id": "g3"}),
    (("message", "u7", "c7", NOW), {"guild_id": "g1", "payload": None}),
    (("message", "u7", "c7", NOW), {"guild": "g1"}),
]


def _replay_pushes(push, calls, **config):
    collector = Collector()
    p = EventStreamProcessor(1024, 1, 7, 50, **config)
    p.set_flush_callback(collector)
    outcomes = [outcome(push, p, *args, **kwargs) for args, kwargs in calls]
    p.flush_now(WAIT)
    stats = counters(p)
    p.close()
    closed = outcome(push, p, "message", "u", "c", NOW)
    # Timestamps of "now" differ between the runs: compare everything else.
    delivered = [
        (e["type"], e["user_id"], e["channel_id"], e.get("payload"), e.get("guild_id")) for e in collector.events()
    ]
    stamps = [e["timestamp"] for e in collector.events()]
    return outcomes, stats, closed, delivered, stamps


@needs_fast
def test_push_event_fast_and_general_paths_agree_on_every_outcome():
    general = _replay_pushes(EventStreamProcessor._push_event_general, PUSH_CALLS)
    fast = _replay_pushes(lambda p, *a, **k: p.push_event(*a, **k), PUSH_CALLS)
    assert fast[0] == general[0]
    assert fast[1] == general[1]
    assert fast[2] == general[2] == (errors.Closed, "processor is closed")
    assert fast[3] == general[3]
    assert len(fast[4]) == len(general[4])
    # The replay is not vacuous: accepted, refused, and every error class appear.
    kinds = {o[0] for o in fast[0]}
    assert {"ok", errors.InvalidArgument, errors.InvalidType, TypeError} <= kinds
    assert ("ok", True) in fast[0]
    assert fast[1][4] >= 1  # the future timestamps were refused and counted once each


@needs_fast
def test_block_mode_push_event_fast_and_sliced_paths_agree_on_every_outcome():
    # Under "block" push_event is the same compiled descriptor, and its general
    # path the same method, which waits for room in slices in this mode.
    general = _replay_pushes(EventStreamProcessor._push_event_general, PUSH_CALLS, overflow="block")
    fast = _replay_pushes(lambda p, *a, **k: p.push_event(*a, **k), PUSH_CALLS, overflow="block")
    assert fast[:4] == general[:4]
    assert len(fast[4]) == len(general[4])
    kinds = {o[0] for o in fast[0]}
    assert {"ok", errors.InvalidArgument, errors.InvalidType, TypeError} <= kinds
    assert fast[1][4] >= 1


def test_the_overflow_mode_is_the_processors_not_its_type():
    # One class whatever overflow= says (it used to swap __class__ to a blocking
    # subclass): the mode is read inside the calls, compiled and general alike.
    gate = threading.Event()
    processors = []
    for overflow in ("drop", "block"):
        started = threading.Event()
        p = EventStreamProcessor(2, 1, 1, 10, overflow=overflow, block_timeout_ms=30_000)
        p.set_flush_callback(lambda batch, started=started: (started.set(), gate.wait(WAIT)))
        assert p.push_event("m", "first", "c", NOW)
        assert started.wait(WAIT)  # the worker holds it: nothing drains the 2 slots
        processors.append(p)
    dropping, blocking = processors
    assert type(dropping) is type(blocking) is EventStreamProcessor
    assert dropping.__class__ is blocking.__class__ is EventStreamProcessor
    rows = [("m", f"u{i}", "c", NOW) for i in range(3)]
    assert dropping.push_many(rows) == 2  # the third refused at once, dropped and counted
    assert dropping.push_event("m", "late", "c", NOW) is False
    assert dropping.stats().dropped == 2
    timer = threading.Timer(0.3, gate.set)
    waited = time.monotonic()
    timer.start()
    assert blocking.push_many(rows) == 3  # the third waited for room
    assert time.monotonic() - waited >= 0.25
    timer.join()
    assert blocking.stats().dropped == 0
    for p in processors:
        p.close()


# Timestamps around the digit boundaries of CPython's ints (30-bit digits: the
# compiled pushes read ints of up to two digits in place, larger ones through the
# C API), each delivered exactly as given, through push_event and push_many alike.
EDGE_TIMESTAMPS = [1, 2, 2**30 - 1, 2**30, 2**30 + 1, NOW - 1, NOW]


@needs_fast
@pytest.mark.parametrize("push", ["push_event", "push_many", "general"])
def test_timestamps_at_int_digit_boundaries_are_delivered_exactly(push):
    collector = Collector()
    p = EventStreamProcessor(1024, 1, 7, 50)
    p.set_flush_callback(collector)
    for i, ts in enumerate(EDGE_TIMESTAMPS):
        if push == "push_event":
            assert p.push_event("m", f"u{i}", "c", ts) is True
        elif push == "general":
            assert p._push_event_general("m", f"u{i}", "c", ts) is True
    if push == "push_many":
        assert p.push_many([("m", f"u{i}", "c", ts) for i, ts in enumerate(EDGE_TIMESTAMPS)]) == len(EDGE_TIMESTAMPS)
    # Past two digits (2**60 and up) the C API path: after year 9999, refused.
    for ts in (2**60 - 1, 2**60, 2**62 + 3):
        with pytest.raises(errors.InvalidArgument, match="timestamp"):
            p.push_event("m", "far", "c", ts)
    p.flush_now(WAIT)
    p.close()
    got = sorted((e["user_id"], e["timestamp"]) for e in collector.events())
    assert got == sorted((f"u{i}", ts) for i, ts in enumerate(EDGE_TIMESTAMPS))


@needs_fast
def test_push_event_unbound_and_bound_calls_take_the_same_path_and_keep_the_signature():
    import inspect

    with EventStreamProcessor(64, 1, 10, 50) as p:
        assert EventStreamProcessor.push_event(p, "m", "u", "c", NOW) is True
        bound = p.push_event
        assert bound("m", "u", "c") is True
        assert str(inspect.signature(bound)) == str(
            inspect.signature(EventStreamProcessor._push_event_general.__get__(p))
        )
        assert "Offers one event" in EventStreamProcessor.push_event.__doc__
        assert outcome(EventStreamProcessor.push_event, object(), "m", "u", "c", NOW)[0] is AttributeError


def _fill_ring(push):
    """Outcomes of pushes into an 8-slot ring whose only worker is blocked in the
    callback: exactly 8 accepted, then refused."""
    gate = threading.Event()
    p = EventStreamProcessor(8, 1, 1, 10)
    p.set_flush_callback(lambda batch: gate.wait(WAIT))
    assert push(p, "m", "first", "c", NOW) is True
    deadline = time.monotonic() + WAIT
    while p.stats().processed < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    outcomes = [outcome(push, p, "m", f"u{i}", "c", NOW) for i in range(12)]
    dropped = p.stats().dropped
    gate.set()
    p.close()
    return outcomes, dropped


@needs_fast
def test_full_ring_fast_and_general_paths_agree():
    general = _fill_ring(EventStreamProcessor._push_event_general)
    fast = _fill_ring(lambda p, *a: p.push_event(*a))
    assert fast == general
    assert fast[0] == [("ok", True)] * 8 + [("ok", False)] * 4
    assert fast[1] == 4


ROWS = [
    [("message", f"u{i}", f"c{i % 3}", NOW) for i in range(50)],
    [("message", f"u{i}", f"c{i % 3}") for i in range(20)],  # 3-tuples
    [{"type": "message", "user_id": "d1", "channel_id": "c1", "timestamp": NOW}],  # dicts
    [("m", "u", "c"), ("m", "u", "c", NOW)],  # mixed widths
    [("m", "u", "c", NOW), ("m", "u")],  # a short row
    [("m", "u", "c", NOW, b"p")],  # a bytes guild: the per-event path
    [("m", "u", "c", NOW, b"p", 1)],  # too wide
    [("m", f"u{i}", "c", NOW, ["g1", 77, None, "", 2**70, -(2**63), 0][i % 7]) for i in range(28)],  # guilds
    # More guild objects than the compiled path's cache of recent ones, all of types it takes.
    [("m", f"u{i}", "c", NOW, ["g1", 77, None, "", -(2**63), 0, "g2", "ギルド"][i % 8]) for i in range(40)],
    [("m", "u", "c", NOW, "g1"), ("m", "u", "c", NOW, 1.5)],  # a bad guild after a good one
    [("m", "u", "c", NOW, "g1"), ("m", "u", "c", NOW, "x" * 1025)],  # too long: nothing pushed
    [("m", "u", "c", NOW, "g" + S)],
    [("m", "u", "c", NOW), ("m", "u", "c", NOW, "g1")],  # mixed widths
    [{"type": "m", "user_id": "d2", "channel_id": "c1", "guild_id": 42}],  # dicts with guilds

    [("m", b"u", "c", NOW)],  # bytes
    [("m", "u", "c", None)],  # None timestamp
    [("m", "u", "c", float(NOW))],  # float
    [("m", "u", "c", 2**64)],  # huge
    [("m", "u", "c", NOW), ("m", S, "c", NOW)],  # lone surrogate after a good row
    [("m", "u\0v", "c", NOW)],  # NUL
    [("m", "x" * 1025, "c", NOW), ("m", "u", "c", NOW)],  # too long: nothing pushed
    [("m", "u", "c", NOW), ("m", "u", "c", NOW + 30 * 86400)],  # future
    [("m", 5, "c", NOW)],  # wrong type
    [["m", "u", "c", NOW]],  # a list row
    [],
    lambda: (("m", f"g{i}", "c", NOW) for i in range(5)),  # a generator, made per replay
    [("émoji 🎉", "ユーザー", "канал", NOW)],
]


def _replay_many(monkeypatch, fast: bool, **config):
    rows = [r() if callable(r) else r for r in ROWS]
    if not fast:
        monkeypatch.setattr(intake, "push_rows", None)
    collector = Collector()
    p = EventStreamProcessor(1024, 1, 9, 50, **config)
    p.set_flush_callback(collector)
    outcomes = [outcome(p.push_many, r) for r in rows]
    p.flush_now(WAIT)
    stats = counters(p)
    p.close()
    closed = outcome(p.push_many, rows[0])
    monkeypatch.undo()
    delivered = [(e["type"], e["user_id"], e["channel_id"], e.get("guild_id")) for e in collector.events()]
    return outcomes, stats, closed, delivered


@needs_fast
def test_push_many_fast_and_general_paths_agree_on_every_outcome(monkeypatch):
    general = _replay_many(monkeypatch, fast=False)
    fast = _replay_many(monkeypatch, fast=True)
    assert fast == general
    assert fast[0][0] == ("ok", 50)
    assert fast[2] == (errors.Closed, "processor is closed")
    assert {o[0] for o in fast[0]} >= {"ok", errors.InvalidArgument}


@needs_fast
def test_block_mode_push_many_fast_and_general_paths_agree_on_every_outcome(monkeypatch):
    general = _replay_many(monkeypatch, fast=False, overflow="block")
    fast = _replay_many(monkeypatch, fast=True, overflow="block")
    assert fast == general
    assert fast[0][0] == ("ok", 50)
    assert fast[2] == (errors.Closed, "processor is closed")


@needs_fast
@pytest.mark.parametrize("overflow", ["drop", "block"])
def test_push_many_rows_sharing_field_objects_are_delivered_exactly(overflow):
    # The compiled push_many reads a field that is the previous row's very object
    # only once: runs of shared objects, equal values in distinct objects, and a
    # bad object after a run (nothing pushed) all come out as the general path's.
    kind, stamp = "message", NOW - 5
    rows = [(kind, f"u{i}", "c" if i % 3 else "d", stamp if i < 6 else NOW - (i // 4)) for i in range(12)]
    rows += [(kind, "u", "c", stamp), ("reaction", "u", "c", stamp), (kind, "é" + "x" * (1 + len(rows) % 2), "c", stamp)]
    collector = Collector()
    with EventStreamProcessor(1024, 1, 100, 20, overflow=overflow) as p:
        p.set_flush_callback(collector)
        assert p.push_many(rows) == len(rows)
        bad = [(kind, "ok", "c", stamp), (kind, "x" * 1025, "c", stamp)]
        assert outcome(p.push_many, bad)[0] is errors.InvalidArgument
        p.flush_now(WAIT)
        assert p.stats().accepted == len(rows)
    assert [(e["type"], e["user_id"], e["channel_id"], e["timestamp"]) for e in collector.events()] == rows


@pytest.mark.parametrize("overflow", ["drop", "block"])
@pytest.mark.parametrize("fast", [True, False])
def test_push_many_checks_every_usual_row_before_pushing_any(monkeypatch, overflow, fast):
    # One answer in both modes and on both paths: a list of (str, str, str[, int])
    # rows with one invalid event pushes none of them, and the message names it.
    if fast and not processor_module.FAST_PUSH:
        pytest.skip("engagehub._engagehub_fast is not built")
    if not fast:
        monkeypatch.setattr(intake, "push_rows", None)
    with EventStreamProcessor(1024, 1, 10, 50, overflow=overflow) as p:
        for bad in (("m", "u", "c", NOW + 30 * 86400), ("m", "x" * 1025, "c", NOW)):
            with pytest.raises(errors.InvalidArgument, match=r"\bevent 1: "):
                p.push_many([("m", "ok", "c", NOW), bad, ("m", "ok2", "c", NOW)])
        p.flush_now(WAIT)
        assert p.stats().accepted == 0


def _deliveries(monkeypatch, fast: bool, form: str, payloads: bool):
    if not fast:
        monkeypatch.setattr(decode, "build_batch", None)
    collector = Collector()
    p = EventStreamProcessor(4096, 1, 64, 50)
    p.set_flush_callback(collector, batch_format=form)
    for i in range(300):
        ts = NOW - (i // 7)  # runs of equal timestamps
        payload = (b"p%d" % i if i % 3 else b"") if payloads else None
        guild = [None, "g1", "ギルド", 123456789012345678][i % 4]
        p._push_event_general(
            ["message", "reaction", "é"][i % 3], f"user-{i % 17}", f"ch-{i % 5}", ts, payload, guild_id=guild
        )
    p._push_event_general("", "", "", NOW)  # empty fields
    p._push_event_general("a\0b", "ユーザー", "🎉", NOW)  # NUL and non-ASCII
    p.flush_now(WAIT)
    p.close()
    monkeypatch.undo()
    return collector.batches


@needs_fast
@pytest.mark.parametrize("form", ["dicts", "tuples", "columns"])
@pytest.mark.parametrize("payloads", [False, True])
def test_batches_built_natively_equal_the_general_decoder(monkeypatch, form, payloads):
    general = _deliveries(monkeypatch, False, form, payloads)
    fast = _deliveries(monkeypatch, True, form, payloads)
    assert sum(len(b) for b in fast) == 302
    assert [type(b) for b in fast] == [type(b) for b in general]
    assert fast == general
    if form == "columns":
        for b in fast:
            assert isinstance(b, eh.EventColumns) and len(b) == len(b.types)
            assert (b.payloads is None) == (not payloads)
            assert b.guild_ids is not None and len(b.guild_ids) == len(b.types)
        guilds = [g for b in fast for g in b.guild_ids]
        assert guilds[:4] == [None, "g1", "ギルド", "123456789012345678"]
    if form == "dicts":
        first = fast[0]
        # Shared strings: equal channel ids within a batch are one object.
        by_channel = {}
        for e in first:
            assert type(e) is dict and type(e["type"]) is str and type(e["timestamp"]) is int
            assert by_channel.setdefault(e["channel_id"], e["channel_id"]) is e["channel_id"]
        if payloads:
            assert any("payload" in e for e in first) and not all("payload" in e for e in first)
        # The guild only for events pushed with one, an int as its digits.
        assert [e.get("guild_id") for e in first[:4]] == [None, "g1", "ギルド", "123456789012345678"]


def _near_ids(n: int) -> list:
    """n distinct ids, many differing from others in one byte anywhere: every length
    from 1 to 70 (across the cache's 64-byte limit), ASCII and not."""
    ids: dict = {}
    i = 0
    while len(ids) < n:
        length = 1 + i % 70
        base = ["a"] * length
        base[(i // 70) % length] = chr(ord("b") + (i // 70 // length) % 20)
        if i % 11 == 0:
            base[0] = "é"  # two UTF-8 bytes
        text = "".join(base)
        ids.setdefault(text if text not in ids else f"{text}-{i}", None)
        i += 1
    return list(ids)


@needs_fast
def test_strings_cached_across_batches_are_exact_and_shared(monkeypatch):
    # More distinct ids than the native str cache holds (2**15), so it evicts; the
    # ids differ by one byte at every position and length. Every delivered event
    # equals what the general decoder delivers for the same pushes.
    ids = _near_ids(40_000)

    def deliver(fast: bool) -> list:
        if not fast:
            monkeypatch.setattr(decode, "build_batch", None)
        collector = Collector()
        with EventStreamProcessor(1 << 16, 1, 500, 50) as p:
            p.set_flush_callback(collector)
            for rows in ([("m", u, ids[-1 - j], NOW) for j, u in enumerate(ids)], [("m", u, "c", NOW) for u in ids[:600]]):
                assert p.push_many(rows) == len(rows)
            p.flush_now(WAIT)
        monkeypatch.undo()
        return collector.batches

    fast, general = deliver(True), deliver(False)
    assert [len(b) for b in fast] == [len(b) for b in general]
    assert fast == general
    events = [e for b in fast for e in b]
    assert [e["user_id"] for e in events[:40_000]] == ids
    assert [e["channel_id"] for e in events[:40_000]] == ids[::-1]
    # The last 600 ids were pushed (as channel ids) at the end of the first pass and
    # again as user ids in later batches: still cached, so the same str objects.
    later = {e["user_id"]: e["user_id"] for e in events[40_000:]}
    first = {e["channel_id"]: e["channel_id"] for e in events[40_000 - 600 : 40_000]}
    short = [u for u in ids[:600] if len(u.encode()) <= 64]
    assert short and all(later[u] is first[u] for u in short)


@needs_fast
def test_dead_letters_are_built_natively_too():
    got = []
    p = EventStreamProcessor(64, 1, 4, 20, max_retries=0)
    p.set_flush_callback(lambda batch: 1 / 0)
    p.set_dead_letter_callback(lambda events, reason: got.append((events, reason)))
    for i in range(4):
        p.push_event("m", f"u{i}", "c", NOW)
    p.flush_now(WAIT)
    p.close()
    assert [e["user_id"] for events, _ in got for e in events] == ["u0", "u1", "u2", "u3"]
    assert "ZeroDivisionError" in got[0][1]


# -- the handle model, through the fast paths ------------------------------------------


@needs_fast
def test_fast_pushes_racing_close_from_another_thread_end_with_closed_and_lose_nothing():
    for _ in range(5):
        delivered = []
        p = EventStreamProcessor(1 << 14, 2, 50, 5)
        p.set_flush_callback(lambda batch: delivered.append(len(batch)))
        accepted, other = [0] * 4, []
        started = threading.Barrier(5)

        def pusher(slot: int) -> None:
            started.wait(WAIT)
            rows = [("m", f"r{slot}", "c", NOW)] * 10
            try:
                while True:
                    if slot % 2:
                        accepted[slot] += p.push_many(rows)
                    elif p.push_event("m", f"u{slot}", "c", NOW):
                        accepted[slot] += 1
            except errors.Closed:
                return
            except BaseException as exc:  # noqa: BLE001
                other.append(exc)

        threads = [threading.Thread(target=pusher, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        started.wait(WAIT)
        time.sleep(0.02)
        p.close()
        for t in threads:
            t.join(WAIT)
            assert not t.is_alive()
        assert other == []
        assert sum(delivered) == sum(accepted) > 0


@needs_fast
def test_fork_child_fast_pushes_are_delivered_in_the_child():
    proc = run_python(
        """
        import os, engagehub as eh
        from engagehub import processor
        assert processor.FAST_PUSH
        got = []
        p = eh.EventStreamProcessor(1024, 2, 10, 10)
        p.set_flush_callback(lambda batch: got.extend(e["user_id"] for e in batch))
        p.push_event("m", "parent", "c")
        p.flush_now(30)
        pid = os.fork()
        if pid == 0:
            for i in range(100):
                assert p.push_event("m", f"child{i}", "c")
            assert p.push_many([("m", f"many{i}", "c") for i in range(50)]) == 50
            p.flush_now(30)
            ok = sorted(got) == sorted(["parent"] + [f"child{i}" for i in range(100)] + [f"many{i}" for i in range(50)])
            p.close()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        p.push_event("m", "parent2", "c")
        p.flush_now(30)
        p.close()
        print("child", os.waitstatus_to_exitcode(status), "parent", got)
        """
    )
    assert_clean(proc, "child 0 parent ['parent', 'parent2']")


@needs_fast
def test_processor_collected_on_its_own_worker_after_fast_pushes_delivers_everything():
    proc = run_python(
        """
        import gc, threading, engagehub as eh
        delivered = []
        done = threading.Event()

        class Holder:
            pass

        def make():
            h = Holder()
            p = eh.EventStreamProcessor(4096, 2, 100, 10)
            h.p, p.holder = p, h  # a cycle: only the cyclic GC frees it

            def cb(batch):
                delivered.append(len(batch))
                gc.collect()  # on the worker: collects the cycle here
            p.set_flush_callback(cb)
            for i in range(1000):
                p.push_event("m", f"u{i}", "c")
            p.push_many([("m", "x", "c")] * 1000)

        gc.disable()
        make()
        gc.collect()
        import time
        deadline = time.monotonic() + 30
        while sum(delivered) < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
        print(sum(delivered))
        """
    )
    assert_clean(proc, "2000")


@needs_fast
def test_blocking_overflow_releases_the_gil_while_the_push_waits():
    # Under "block", a push on a full ring waits for the workers, which need the
    # GIL for the Python callback: holding it would deadlock until the timeout.
    delivered = []
    p = EventStreamProcessor(4, 1, 1, 1, overflow="block", block_timeout_ms=20_000)

    def cb(batch):
        time.sleep(0.001)
        delivered.append(len(batch))

    p.set_flush_callback(cb)
    for i in range(200):  # a push that timed out would return False

        assert p.push_event("m", f"u{i}", "c") is True
    assert p.push_many([("m", "x", "c")] * 50) == 50
    p.flush_now(WAIT)
    p.close()
    assert sum(delivered) == 250


@needs_fast
def test_no_reference_leaks_in_a_million_fast_calls():
    # Release builds have no sys.gettotalrefcount: a leak of one object per call
    # shows as a million more allocated blocks.
    with EventStreamProcessor(1 << 12, 1, 1000, 10) as p:
        seen = [0]
        p.set_flush_callback(lambda batch: seen.__setitem__(0, seen[0] + len(batch)))
        rows = [("message", f"u{i}", f"c{i % 7}", NOW) for i in range(1000)]

        def attempt(n: int) -> None:
            for _ in range(n):
                try:
                    p.push_event("message", "u", "c", 2**70)
                except errors.InvalidArgument:
                    pass

        def both(n):
            for _ in range(n):
                p.push_event("m", "u", "c", NOW)
            attempt(n // 10)
            for _ in range(n // 1000):
                p.push_many(rows)

        both(20_000)
        p.flush_now(WAIT)
        gc.collect()
        before = __import__("sys").getallocatedblocks()
        both(1_000_000)
        p.flush_now(WAIT)
        gc.collect()
        after = __import__("sys").getallocatedblocks()
        assert seen[0] > 100_000  # batches were built too (some pushes may be dropped)
    assert after - before < 10_000, (before, after)


# -- top_channels and get_top_channels -------------------------------------------------

needs_fast_top = pytest.mark.skipif(
    not processor_module.FAST_PUSH, reason="engagehub._engagehub_fast has no TopChannels"
)

# Pushed under the event-time clock, so "now" and the windows are the same for every
# replay: 40 channels over the last two hours (channel i in minutes i and 60 + i),
# with ties in the counts (broken by id), non-ASCII and empty ids.
T_END = 1_767_225_600 + 7200


def _fill_channels(p: EventStreamProcessor) -> None:
    rows = []
    for i in range(40):
        channel = ["", "é-канал", "🎉"][i] if i < 3 else f"c{i:02d}"
        for minute in (i, 60 + i):
            ts = T_END - 7200 + minute * 60
            rows += [("m", f"u{j}", channel, ts) for j in range(1 + (i % 7))]
    rows.append(("m", "last", "c39", T_END))
    assert p.push_many(rows) == len(rows)


TOP_CALLS = [
    ((), {}),
    ((0,), {}),
    ((1,), {}),
    ((3,), {}),
    ((10,), {}),
    ((1000,), {}),
    ((1025,), {}),  # above the summaries' capacity: merged for the call
    ((2**32 - 1,), {}),
    ((2**32,), {}),  # clamped, as "all of them"
    ((2**64,), {}),
    ((2**200,), {}),
    ((-1,), {}),  # bad k
    ((-(2**70),), {}),
    ((True,), {}),
    ((3.0,), {}),
    (("3",), {}),
    ((None,), {}),
    ((10, None), {}),
    ((10, 0), {}),  # 0: all time
    ((10, 60), {}),
    ((10, 61), {}),  # rounded up to whole minutes
    ((10, 1800), {}),
    ((10, 3600), {}),
    ((10, 3601), {}),  # longer than window_minutes=60: refused natively
    ((10, 10**12), {}),
    ((10, 2**63 - 1), {}),
    ((10, 2**63), {}),
    ((10, -1), {}),
    ((10, 600.0), {}),
    ((10, 600.5), {}),
    ((10, float("nan")), {}),
    ((10, True), {}),
    ((10, "60"), {}),
    ((10, 3600, None), {}),
    ((10, 3600, T_END), {}),
    ((10, 3600, T_END - 1800), {}),
    ((10, 3600, T_END + 86400), {}),  # a window past every event
    ((10, 3600, 0), {}),  # <= 0: the processor's clock
    ((10, 3600, -5), {}),
    ((10, 3600, 2**63), {}),
    ((10, 3600, float(T_END)), {}),
    ((10, 3600, "now"), {}),
    ((), {"k": 5}),
    ((10,), {"window_secs": 3600}),
    ((), {"k": 5, "window_secs": 3600, "now": T_END - 600}),
    ((), {"now": T_END, "window_secs": 60}),
    ((5,), {"k": 5}),  # repeated
    ((), {"colour": 1}),  # unknown
    ((1, 2, 3, 4), {}),  # too many
]

GET_TOP_CALLS = [
    ((), {}),
    ((0,), {}),
    ((3,), {}),
    ((10,), {}),
    ((2**70,), {}),
    ((-1,), {}),
    ((2.5,), {}),
    ((), {"k": 4}),
    ((3, 3600), {}),  # no window in the drop-in
    ((), {"window_secs": 3600}),
]


def _top_outcomes(p: EventStreamProcessor, fast: bool) -> list:
    top = p.top_channels if fast else p._top_channels_general
    get_top = p.get_top_channels if fast else p._get_top_channels_general
    got = [outcome(top, *a, **kw) for a, kw in TOP_CALLS]
    got += [outcome(get_top, *a, **kw) for a, kw in GET_TOP_CALLS]
    return got


@needs_fast_top
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_top_channels_fast_and_general_paths_agree_on_every_outcome(workers):
    p = EventStreamProcessor(4096, workers, 64, 50, clock="event_time", window_minutes=60)
    assert _top_outcomes(p, True) == _top_outcomes(p, False)  # empty
    _fill_channels(p)
    p.flush_now(WAIT)
    general = _top_outcomes(p, False)
    fast = _top_outcomes(p, True)
    again = _top_outcomes(p, True)  # the kept answers
    assert fast == general
    assert again == general
    # Not vacuous: answers, ties by id, and every error class appear.
    by_call = dict(zip(range(len(TOP_CALLS)), fast))
    all_time = by_call[TOP_CALLS.index(((10,), {}))]
    assert all_time[0] == "ok" and len(all_time[1]) == 10
    counts = [c for _, c in all_time[1]]
    assert counts == sorted(counts, reverse=True)
    ties = [ch for ch, c in all_time[1] if c == counts[0]]
    assert len(ties) > 1 and ties == sorted(ties, key=lambda ch: ch.encode())
    assert by_call[TOP_CALLS.index(((10, 3600, T_END + 86400), {}))] == ("ok", [])
    assert {o[0] for o in fast} >= {"ok", errors.InvalidArgument, errors.InvalidType, TypeError}
    for kind, value in fast:
        if kind == "ok":
            assert type(value) is list
            assert all(type(row) is tuple and type(row[0]) is str and type(row[1]) is int for row in value)
    p.close()
    closed_general = _top_outcomes(p, False)
    assert _top_outcomes(p, True) == closed_general
    assert (errors.Closed, "processor is closed") in closed_general


@needs_fast_top
def test_kept_top_channel_answers_follow_new_events_and_return_fresh_lists():
    p = EventStreamProcessor(4096, 2, 64, 50, clock="event_time")
    queries = [((10,), {}), ((3,), {}), ((10,), {"window_secs": 60}), ((10,), {"window_secs": 600}),
               ((10,), {"window_secs": 3600}), ((20,), {}), ((10, 1800, T_END - 900), {})]
    seen = set()
    for round_ in range(6):
        rows = [("m", f"u{j}", f"r{round_}-{j % (3 + round_)}", T_END + 60 * round_) for j in range(50 * (round_ + 1))]
        p.push_many(rows)
        p.flush_now(WAIT)
        # More distinct answers than the descriptor keeps, twice over.
        for _ in range(2):
            for args, kwargs in queries:
                fast = p.top_channels(*args, **kwargs)
                assert fast == p._top_channels_general(*args, **kwargs)
                seen.add(repr(fast))
        answer = p.get_top_channels(5)
        assert answer == p._get_top_channels_general(5)
        answer.append(("mine", 0))  # the caller's own list
        assert p.get_top_channels(5) == p._get_top_channels_general(5)
    assert len(seen) > 8
    p.close()


@needs_fast_top
@pytest.mark.parametrize("workers", [0, 2])
def test_top_channels_from_inside_a_flush_callback(workers):
    # On a worker thread (or, synchronous, inside flush_now) holding the GIL: the
    # query must neither deadlock nor differ from the general path.
    answers = []

    def cb(batch):
        answers.append((p.get_top_channels(3), p._get_top_channels_general(3),
                        p.top_channels(3, window_secs=600), p._top_channels_general(3, 600)))

    p = EventStreamProcessor(4096, workers, 16, 10)
    p.set_flush_callback(cb)
    for i in range(200):
        p.push_event("m", f"u{i}", f"c{i % 5}")
    p.flush_now(WAIT)
    p.close()
    assert answers
    for fast_all, general_all, fast_window, general_window in answers:
        assert fast_all == general_all and fast_window == general_window


@needs_fast_top
def test_top_channels_racing_close_from_another_thread_end_with_closed():
    for _ in range(5):
        p = EventStreamProcessor(1 << 12, 2, 50, 5)
        for i in range(500):
            p.push_event("m", f"u{i}", f"c{i % 30}")
        p.flush_now(WAIT)
        calls, other = [0] * 4, []
        started = threading.Barrier(5)

        def poller(slot: int) -> None:
            started.wait(WAIT)
            try:
                while True:
                    answer = p.top_channels(5, window_secs=600) if slot % 2 else p.get_top_channels(5)
                    assert len(answer) == 5
                    calls[slot] += 1
            except errors.Closed:
                return
            except BaseException as exc:  # noqa: BLE001
                other.append(exc)

        threads = [threading.Thread(target=poller, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        started.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while min(calls) == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        p.close()
        for t in threads:
            t.join(WAIT)
            assert not t.is_alive()
        assert other == []
        assert min(calls) > 0


@needs_fast_top
def test_fork_child_top_channels_start_empty_and_follow_the_child():
    proc = run_python(
        """
        import os, engagehub as eh
        p = eh.EventStreamProcessor(1024, 2, 10, 10)
        for i in range(30):
            p.push_event("m", f"u{i}", "parent")
        p.flush_now(30)
        before = p.get_top_channels(3)
        pid = os.fork()
        if pid == 0:
            # Sketches start empty in the child: no answer kept from the parent.
            ok = p.get_top_channels(3) == [] and p.top_channels(3, window_secs=600) == []
            for i in range(5):
                p.push_event("m", f"u{i}", "child")
            p.flush_now(30)
            ok = ok and p.get_top_channels(3) == [("child", 5)] == p._get_top_channels_general(3)
            p.close()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        after = p.get_top_channels(3)
        p.close()
        print("child", os.waitstatus_to_exitcode(status), before == after == [("parent", 30)])
        """
    )
    assert_clean(proc, "child 0 True")


@needs_fast_top
def test_processor_collected_on_its_own_worker_after_top_channel_queries():
    proc = run_python(
        """
        import gc, threading, time, engagehub as eh
        delivered, answers = [], []

        class Holder:
            pass

        def make():
            h = Holder()
            p = eh.EventStreamProcessor(4096, 2, 100, 10)
            h.p, p.holder = p, h  # a cycle: only the cyclic GC frees it

            def cb(batch):
                delivered.append(len(batch))
                answers.append(p.get_top_channels(1))
                gc.collect()  # on the worker: collects the cycle here
            p.set_flush_callback(cb)
            for i in range(1000):
                p.push_event("m", f"u{i}", "c")
            answers.append(p.top_channels(1, window_secs=600))

        gc.disable()
        make()
        gc.collect()
        deadline = time.monotonic() + 30
        while sum(delivered) < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        print(sum(delivered), all(a == [] or (len(a) == 1 and a[0][0] == "c") for a in answers))
        """
    )
    assert_clean(proc, "1000 True")


@needs_fast_top
def test_no_reference_leaks_in_top_channel_queries():
    import sys

    p = EventStreamProcessor(4096, 1, 64, 50, clock="event_time")
    _fill_channels(p)
    p.flush_now(WAIT)
    # Kept answers (hits), more distinct answers than slots (misses), and failures.
    queries = [(k, w) for k in (3, 10) for w in (None, 60, 600, 3600)]

    def run(n: int) -> None:
        for i in range(n):
            k, w = queries[i % len(queries)]
            p.top_channels(k, window_secs=w)
            p.get_top_channels(k)
            if i % 10 == 0:
                for bad in ((-1,), (10, 7200)):
                    try:
                        p.top_channels(*bad)
                    except errors.InvalidArgument:
                        pass

    run(2_000)
    gc.collect()
    before = sys.getallocatedblocks()
    run(100_000)
    gc.collect()
    after = sys.getallocatedblocks()
    p.close()
    assert after - before < 1_000, (before, after)


@needs_fast_top
def test_top_channel_descriptors_keep_the_names_docs_and_signatures():
    import inspect

    for name, general in (("top_channels", "_top_channels_general"), ("get_top_channels", "_get_top_channels_general")):
        method = getattr(EventStreamProcessor, name)
        assert method.__name__ == name and method.__qualname__ == f"EventStreamProcessor.{name}"
        assert method.__doc__ == getattr(EventStreamProcessor, general).__doc__
        assert str(inspect.signature(method)) == str(inspect.signature(getattr(EventStreamProcessor, general)))
        assert "busiest channels" in method.__doc__
    with EventStreamProcessor(64, 1, 10, 50) as p:
        assert EventStreamProcessor.top_channels(p, 3) == [] == p.get_top_channels()
        assert outcome(EventStreamProcessor.get_top_channels, object(), 3)[0] is AttributeError


# -- the module itself: stable ABI, heap types, module state --------------------------

Py_TPFLAGS_HEAPTYPE = 1 << 9


@needs_fast
def test_the_module_is_the_stable_abi_one_from_cpython_3_12_on():
    # One file serves 3.12 and every later CPython; 3.9-3.11 load their own build of
    # the same source. `make test` runs this file on each CPython it finds.
    import sys

    fast = _compiled.fast
    name = os.path.basename(fast.__file__)
    if sys.version_info >= (3, 12):
        assert name == "_engagehub_fast.abi3.so"
        assert fast.LIMITED_API == 0x030C0000
    else:
        assert name.startswith(f"_engagehub_fast.cpython-{sys.version_info[0]}{sys.version_info[1]}")
        assert fast.LIMITED_API is None
    # Compiled from the header cffi reads, for the library cffi loaded.
    assert fast.HEADER_VERSION == processor_module.lib.eh_version_number()
    for cls in (fast.PushEvent, fast.ProcessorBase, fast.TopChannels):
        assert cls.__flags__ & Py_TPFLAGS_HEAPTYPE, cls
        assert cls.__module__ == "engagehub._engagehub_fast"


def test_each_kind_of_cpython_gets_its_fast_module_file():
    # The build's choice: 3.9-3.11 their own file, every CPython from 3.12 on the one
    # stable-ABI file, a free-threaded build (which loads no abi3 module) its own.
    import importlib.util

    path = os.path.join(os.path.dirname(processor_module.__file__), "_build_cffi.py")
    spec = importlib.util.spec_from_file_location("_eh_build_cffi_test", path)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)

    def name(minor: int, free_threaded: bool = False) -> str:
        tag = f"3{minor}{'t' if free_threaded else ''}"
        info = {"version": [3, minor], "suffix": f".cpython-{tag}-x86_64-linux-gnu.so", "gil_disabled": free_threaded}
        return build.fast_file_name(info)

    for minor in (9, 10, 11):
        assert name(minor) == f"_engagehub_fast.cpython-3{minor}-x86_64-linux-gnu.so"
    for minor in (12, 13, 14, 15):
        assert name(minor) == "_engagehub_fast.abi3.so"
    assert name(13, free_threaded=True) == "_engagehub_fast.cpython-313t-x86_64-linux-gnu.so"
    assert build.LIMITED_API == 0x030C0000


@needs_fast
def test_a_second_module_instance_has_its_own_unbound_state():
    # Multi-phase init and module state: a fresh instance of the same file knows no
    # library until it is bound, whatever the package's instance holds.
    import importlib.util

    fast = _compiled.fast
    spec = importlib.util.spec_from_file_location(fast.__name__, fast.__file__)
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    assert other is not fast and other.PushEvent is not fast.PushEvent
    with EventStreamProcessor(64, 0, 10, 50) as p:
        # Unbound: the general path's answer (None), though `p` is a processor.
        assert other.push_rows(p, [("m", "u", "c", NOW)]) is None
        assert other.leaderboard_add(1, "u", 1.0, NOW) is None
        descriptor = other.PushEvent(EventStreamProcessor._push_event_general)
        assert descriptor(p, "m", "u", "c", NOW) is True  # the general path ran
        assert p.push_event("m", "u", "c", NOW) is True
        p.flush_now(WAIT)
        assert p.stats().accepted == 2


@needs_fast
def test_a_module_compiled_from_another_header_version_is_not_used(monkeypatch):
    import sys
    import types

    stale = types.ModuleType("engagehub._engagehub_fast")
    stale.HEADER_VERSION = processor_module.lib.eh_version_number() + 1
    monkeypatch.setitem(sys.modules, "engagehub._engagehub_fast", stale)
    monkeypatch.setattr(eh, "_engagehub_fast", stale, raising=False)
    assert _compiled.load() is None


@needs_fast
def test_the_gil_hand_off_counts_each_processors_own_deliveries():
    # Each processor's deliveries are counted in its own hand-off (a push yields
    # the GIL only to a delivery of its own processor).
    busy, idle = EventStreamProcessor(1024, 1, 10, 10), EventStreamProcessor(1024, 1, 10, 10)
    delivered = []
    busy.set_flush_callback(lambda batch: delivered.append(len(batch)))
    idle.set_flush_callback(lambda batch: delivered.append(-1))
    for i in range(100):
        assert busy.push_event("m", f"u{i}", "c", NOW)
    busy.flush_now(WAIT)
    idle.flush_now(WAIT)
    waiting, started = busy._handoff_counts()
    assert waiting == 0 and started == len(delivered) >= 10
    assert idle._handoff_counts() == (0, 0)
    # Replacing the callback keeps the count with the processor.
    busy.set_flush_callback(lambda batch: delivered.append(len(batch)))
    busy.push_event("m", "again", "c", NOW)
    busy.flush_now(WAIT)
    assert busy._handoff_counts() == (0, len(delivered))
    busy.close()
    idle.close()
