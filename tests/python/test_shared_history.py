"""The daily history's Redis scripts against the native processor (issue 22): the
chunks two writers' processors drain, applied by ``HISTORY_PUBLISH``, read back by
``SharedAnalytics`` (``HISTORY_READ``), answer exactly what one processor fed both
writers' events answers: active users by day, week and month, retention cohorts by
day and week, heatmaps per channel, per guild and overall. Resends are no-ops, a
fault after any write leaves Redis as it was, bad chunks and records are refused
naming the key, and days leave the shared counters as they leave the history.

The processors are driven through the C ABI (``eh_processor_push_event``,
``eh_processor_outbox_put`` / ``_history``), so this tests the scripts alone; the
writers' end to end (``EventStreamProcessor(redis=)``, several processes) is
tested in test_history.py."""

from __future__ import annotations

import datetime
import random
from typing import Any, Dict, Iterator, List, Tuple

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed")

from engagehub import errors  # noqa: E402
from engagehub._native import _call, copied, ffi, lib  # noqa: E402
from engagehub.shared import SharedAnalytics, _schema, _sources  # noqa: E402
from redis_server import RedisServer, require_server  # noqa: E402

DAY0 = 20_000  # 2024-10-04
HISTORY = 30
Event = Tuple[str, str, str, int]


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    srv = RedisServer(require_server(pytest), persistent=False).start()
    yield srv
    srv.close()


class Native:
    """A native processor (event-time clock) through the C ABI."""

    def __init__(self, publish: bool, history: int = HISTORY) -> None:
        config = ffi.new("eh_processor_config *", {
            "struct_size": ffi.sizeof("eh_processor_config"), "capacity": 1 << 16,
            "clock": lib.EH_CLOCK_EVENT_TIME, "history_days": history, "publish_history": int(publish),
        })
        out = ffi.new("eh_processor **")
        _call(lib.eh_processor_new, config, out)
        self.p = out[0]

    def push(self, events: List[Event]) -> None:
        for user, guild, channel, ts in events:
            parts = [s.encode() for s in ("message", user, channel, guild)]
            bufs = [ffi.from_buffer(b) for b in parts]
            ev = ffi.new("eh_event *", {
                "kind": bufs[0], "kind_len": len(parts[0]), "user_id": bufs[1], "user_id_len": len(parts[1]),
                "channel_id": bufs[2], "channel_id_len": len(parts[2]), "guild_id": bufs[3],
                "guild_id_len": len(parts[3]), "timestamp": ts,
            })
            _call(lib.eh_processor_push_event, self.p, ev)
        _call(lib.eh_processor_flush, self.p, 60_000)

    def take(self) -> Tuple[int, List[Tuple[bytes, List[str], int]]]:
        """Puts an outbox batch: its number and its history chunks."""
        number = ffi.new("uint64_t *")
        _call(lib.eh_processor_outbox_put, self.p, b"{}", 2, number)
        return number[0], _sources._history_chunks(copied(lib.eh_processor_outbox_history, self.p, number[0]))

    def ack(self, number: int) -> None:
        _call(lib.eh_processor_outbox_ack, self.p, number, b"", 0)

    def now(self) -> int:
        out = ffi.new("int64_t *")
        _call(lib.eh_processor_now, self.p, out)
        return int(out[0])

    def active(self, day: int, period: int, guild: str) -> int:
        out = ffi.new("uint64_t *")
        _call(lib.eh_processor_active_users, self.p, day * 86_400, period, guild.encode(), len(guild.encode()), out)
        return int(out[0])

    def retention(self, weekly: bool, n: int, guild: str) -> List[Tuple[int, int, List[int]]]:
        starts, sizes, active = ffi.new("int64_t[]", n), ffi.new("uint64_t[]", n), ffi.new("uint64_t[]", n * n)
        period = lib.EH_PERIOD_WEEK if weekly else lib.EH_PERIOD_DAY
        _call(lib.eh_processor_retention, self.p, period, n, 0, guild.encode(), len(guild.encode()),
              starts, sizes, active)
        return [(starts[i] // 86_400, sizes[i], [active[i * n + k] for k in range(n - i)]) for i in range(n)]

    def heatmap(self, days: int, channel: str, guild: str) -> List[List[int]]:
        out = ffi.new("uint64_t[]", 168)
        _call(lib.eh_processor_heatmap, self.p, days, 0, channel.encode(), len(channel.encode()),
              guild.encode(), len(guild.encode()), out)
        return [[out[d * 24 + h] for h in range(24)] for d in range(7)]

    def close(self) -> None:
        lib.eh_processor_free(self.p)


def keys_of(ns: str, publisher: str, guilds: List[str]) -> List[str]:
    keys = [_schema.key(ns, "pub", publisher), _schema.key(ns, "config")]
    for g in guilds:
        keys += [_schema.key(ns, "hu", g), _schema.key(ns, "hd", g)]
    return keys


def publish(client: Any, ns: str, publisher: str, writer: Native, history: int = HISTORY) -> int:
    """Takes and applies a writer's batch chunk by chunk (each twice: the second is
    a resend, a no-op). Returns the chunks applied."""
    number, chunks = writer.take()
    for i, (chunk, guilds, _entries) in enumerate(chunks):
        keys = keys_of(ns, publisher, guilds)
        seq = number * _sources.CHUNKS_PER_BATCH + 1 + i
        assert client.eval(_schema.HISTORY_PUBLISH, len(keys), *keys, seq, 3600, history, chunk) == 1
        assert client.eval(_schema.HISTORY_PUBLISH, len(keys), *keys, seq, 3600, history, chunk) == 0
    writer.ack(number)
    return len(chunks)


def workload(seed: int, n: int, span: int) -> List[Event]:
    """Users joining over ``span`` days, coming back less and less, in two guilds
    and none, four channels; shuffled (events arrive out of order)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        u = rng.randrange(300)
        join = u * span // 380
        day = join + int(rng.random() ** 2 * (span - join))
        out.append((f"u{u}", rng.choice(["", "g1", "g2", "g3"]), f"c{rng.randrange(4)}",
                    (DAY0 + day) * 86_400 + rng.randrange(86_400)))
    rng.shuffle(out)
    return out


def date(day: int) -> datetime.date:
    return datetime.date(1970, 1, 1) + datetime.timedelta(days=day)


def same_answers(shared: SharedAnalytics, ref: Native, today: int) -> int:
    """Asserts every answer equal; returns how many were non-zero."""
    nonzero = 0
    for guild in ["", "g1", "g3"]:
        g = guild or None
        for day in range(today - HISTORY + 1, today + 1):
            for code, period in enumerate(["day", "week", "month"]):
                want = ref.active(day, code, guild)
                assert shared.active_users(date(day), period, g) == want, (guild, date(day), period)
                nonzero += want > 0
        for weekly, n in ((True, 4), (False, 21)):
            got = shared.retention("week" if weekly else "day", n, None, g)
            want = ref.retention(weekly, n, guild)
            assert [(c.start, c.size) for c in got] == [(date(s), size) for s, size, _ in want]
            for c, (_, size, active) in zip(got, want):
                assert c.retained == [a / size if size else 0.0 for a in active]
                nonzero += size > 0
        for channel in [None, "c1"]:
            got_map = shared.activity_heatmap(14, None, channel, g)
            assert got_map == ref.heatmap(14, channel or "", guild) if channel else True
            if channel is None:
                total = [[0] * 24 for _ in range(7)]
                assert got_map != total or guild == "g3"
    return nonzero


def test_two_writers_answer_as_one_processor_fed_both(server: Any) -> None:
    client = server.client()
    ns = "hist2"
    events = workload(1, 6000, 26)
    writers = [Native(True), Native(True)]
    ref = Native(False)
    for i, w in enumerate(writers):
        w.push(events[i::2])
    ref.push(events)
    client.set(_schema.key(ns, "clock"), ref.now())
    assert all(publish(client, ns, f"w{i}", w) >= 2 for i, w in enumerate(writers))
    shared = SharedAnalytics(client, ns, check_eviction=False)
    today = ref.now() // 86_400
    assert same_answers(shared, ref, today) > 100
    # Both writers see some events again, and more: activations already in Redis
    # change nothing, the heat adds up.
    more = workload(2, 1500, 26)
    for i, w in enumerate(writers):
        w.push(events[:400] + more[i::2])
    ref.push(events[:400] * 2 + more)
    for i, w in enumerate(writers):
        publish(client, ns, f"w{i}", w)
    assert same_answers(shared, ref, today) > 100
    assert shared.config()["history_days"] == HISTORY
    for p in writers + [ref]:
        p.close()


def snapshot(client: Any, ns: str) -> Dict[bytes, Any]:
    out = {}
    for k in client.scan_iter(match="{" + ns + "}:*"):
        t = client.type(k)
        out[k] = client.hgetall(k) if t == b"hash" else client.get(k)
    return out


def test_a_fault_after_any_write_leaves_redis_as_it_was(server: Any) -> None:
    client = server.client()
    ns = "histfault"
    base, late = workload(3, 800, 12), workload(4, 600, 14)
    w = Native(True)
    w.push(base)
    publish(client, ns, "w", w)
    w.push(late)
    number, chunks = w.take()
    chunk, guilds, _ = chunks[0]
    keys = keys_of(ns, "w", guilds)
    seq = number * _sources.CHUNKS_PER_BATCH + 1
    before = snapshot(client, ns)
    faulted = 0
    for after in [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181]:
        script = _schema.with_fault(_schema.HISTORY_PUBLISH, after)
        try:
            applied = client.eval(script, len(keys), *keys, seq, 3600, HISTORY, chunk)
        except redis.ResponseError as exc:
            assert "ENGAGEHUB fault" in str(exc)
            assert snapshot(client, ns) == before, f"fault after write {after}"
            faulted += 1
            continue
        assert applied == 1  # fewer writes than `after`: applied whole
        break
    assert faulted >= 10
    assert client.eval(_schema.HISTORY_PUBLISH, len(keys), *keys, seq, 3600, HISTORY, chunk) == 0
    assert snapshot(client, ns) != before
    w.close()


def test_bad_chunks_records_and_settings_are_refused(server: Any) -> None:
    client = server.client()
    ns = "histbad"
    w = Native(True)
    w.push(workload(5, 300, 5))
    number, chunks = w.take()
    chunk, guilds, _ = chunks[0]
    keys = keys_of(ns, "w", guilds)
    seq = number * _sources.CHUNKS_PER_BATCH + 1
    with pytest.raises(redis.ResponseError, match="ENGAGEHUB corrupt: a history chunk that does not parse"):
        client.eval(_schema.HISTORY_PUBLISH, len(keys), *keys, seq, 3600, HISTORY, chunk[:-3])
    with pytest.raises(redis.ResponseError, match="ENGAGEHUB corrupt: the chunk names"):
        client.eval(_schema.HISTORY_PUBLISH, len(keys) - 2, *keys[:-2], seq, 3600, HISTORY, chunk)
    client.hset(_schema.key(ns, "config"), "history_days", 60)
    with pytest.raises(redis.ResponseError, match="ENGAGEHUB config: .* history_days 60"):
        client.eval(_schema.HISTORY_PUBLISH, len(keys), *keys, seq, 3600, HISTORY, chunk)
    client.hset(_schema.key(ns, "config"), "history_days", HISTORY)
    users = _schema.key(ns, "hu", "")
    client.set(users, "not a hash")
    with pytest.raises(redis.ResponseError, match=r"ENGAGEHUB corrupt: \{histbad\}:hu: holds a string"):
        client.eval(_schema.HISTORY_PUBLISH, len(keys), *keys, seq, 3600, HISTORY, chunk)
    client.delete(users)
    assert client.eval(_schema.HISTORY_PUBLISH, len(keys), *keys, seq, 3600, HISTORY, chunk) == 1
    w.ack(number)
    # Records of the wrong length (written by hand) are refused, naming the key.
    client.hset(users, mapping={k: b"short" for k in client.hkeys(users)})
    events = workload(5, 300, 5)
    w.push([(events[0][0], "", "c0", (DAY0 + 6) * 86_400)])  # a user with a record: a new day
    number, chunks = w.take()
    chunk, guilds, _ = chunks[0]
    keys = keys_of(ns, "w", guilds)
    with pytest.raises(redis.ResponseError, match=r"\{histbad\}:hu: holds a user record of 5 bytes"):
        client.eval(_schema.HISTORY_PUBLISH, len(keys), *keys, number * _sources.CHUNKS_PER_BATCH + 1, 3600,
                    HISTORY, chunk)
    w.close()


def test_readers_refuse_questions_outside_the_history(server: Any) -> None:
    client = server.client()
    shared = SharedAnalytics(client, "histnone", check_eviction=False)
    with pytest.raises(errors.InvalidArgument, match="no writer published a daily history"):
        shared.active_users("2024-10-04")
    ns = "histq"
    w = Native(True)
    w.push(workload(6, 200, 3))
    publish(client, ns, "w", w)
    client.set(_schema.key(ns, "clock"), w.now())
    shared = SharedAnalytics(client, ns, check_eviction=False)
    today = date(w.now() // 86_400)
    assert shared.active_users(today) > 0
    with pytest.raises(errors.InvalidArgument, match="outside the kept history"):
        shared.active_users(today + datetime.timedelta(days=1))
    with pytest.raises(errors.InvalidArgument, match="outside the kept history"):
        shared.active_users(today - datetime.timedelta(days=HISTORY))
    with pytest.raises(errors.InvalidArgument, match="period must be one of"):
        shared.active_users(today, "year")
    with pytest.raises(errors.InvalidArgument, match="YYYY-MM-DD"):
        shared.active_users("04/10/2024")
    with pytest.raises(errors.InvalidType):
        shared.active_users(20_000)
    with pytest.raises(errors.InvalidArgument, match="reach before the kept history"):
        shared.retention("week", 6)
    with pytest.raises(errors.InvalidArgument, match="outside 1.."):
        shared.activity_heatmap(HISTORY + 1)
    with pytest.raises(errors.InvalidArgument, match="at least 1"):
        shared.activity_heatmap(0)
    client.set(_schema.key(ns, "hd", "g9"), "x")
    with pytest.raises(errors.Corrupt, match=r"\{histq\}:hd:g9"):
        shared.active_users(today, guild_id="g9")
    w.close()


def test_days_leave_the_shared_counters_as_they_leave_the_history(server: Any) -> None:
    """200 days of events through a 30-day history (a 128-day ring): the counters
    keep about 190 days (ring, a month, a margin), and the history's days stay
    exact."""
    client = server.client()
    ns = "histtrim"
    rng = random.Random(7)
    w, ref = Native(True), Native(False)
    for day in range(0, 200, 10):
        batch = [(f"u{rng.randrange(60)}", "g1", "c0", (DAY0 + day + d) * 86_400 + rng.randrange(86_400))
                 for d in range(10) for _ in range(20)]
        w.push(batch)
        ref.push(batch)
        publish(client, ns, "w", w)
    counters = client.hgetall(_schema.key(ns, "hd", "g1"))
    days = {int(k.split(b":")[1]) for k in counters if k[:2] in (b"a:", b"n:")}
    assert min(days) >= DAY0 + 199 - (_schema.history_ring(HISTORY) + 31), min(days) - DAY0
    client.set(_schema.key(ns, "clock"), ref.now())
    shared = SharedAnalytics(client, ns, check_eviction=False)
    today = ref.now() // 86_400
    for day in range(today - HISTORY + 1, today + 1):
        for code, period in enumerate(["day", "week", "month"]):
            assert shared.active_users(date(day), period, "g1") == ref.active(day, code, "g1")
    w.close()
    ref.close()
