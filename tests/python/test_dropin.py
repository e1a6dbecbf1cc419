"""The drop-in API, called the way the C++ extension's users call it.

Every call below uses the names and keyword arguments of the C++ extension's
documentation (its README and Django integration guide): ``EventStreamProcessor(
buffer_size, num_threads, batch_size, flush_interval_ms)``, ``push_event(event_type,
user_id, channel_id, timestamp)``, ``set_flush_callback``, ``flush_now``,
``get_top_channels``, ``get_unique_users_last_hour``, ``total_events_processed``,
``events_dropped``; ``Leaderboard(decay_factor, max_users)``, ``update_user(user_id,
points, timestamp)``, ``get_top_users``, ``get_user_rank``, ``save_to_json``,
``load_from_json``, ``size``, ``set_time_source``. Each test checks the return types
and shapes the guide's code relies on, and the values.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

import engagehub as cpp_event_processor  # the guide's `import cpp_event_processor`
import engagehub as cpp_leaderboard  # ... and `import cpp_leaderboard`
from engagehub import EventStreamProcessor, Leaderboard

WAIT = 30.0
T0 = 1_696_284_800  # the README's timestamp
DAY = 86_400
EVENT_KEYS = {"type", "user_id", "channel_id", "timestamp"}
USER_KEYS = {"user_id", "score", "rank", "last_update"}


@pytest.fixture
def processor():
    p = EventStreamProcessor(buffer_size=16384, num_threads=4, batch_size=500, flush_interval_ms=1000)
    yield p
    p.close()


def test_the_modules_can_stand_in_for_both_extensions():
    assert cpp_event_processor.EventStreamProcessor is EventStreamProcessor
    assert cpp_leaderboard.Leaderboard is Leaderboard


# -- EventStreamProcessor ------------------------------------------------------------


def test_readme_usage_example():
    processor = cpp_event_processor.EventStreamProcessor(
        buffer_size=10000,
        num_threads=4,
        batch_size=1000,
        flush_interval_ms=1000,
    )
    leaderboard = cpp_leaderboard.Leaderboard(decay_factor=0.95)
    sizes: list = []
    processor.set_flush_callback(lambda events: sizes.append(len(events)))

    assert processor.push_event("message", "123", "general", 1696284800) is True
    assert leaderboard.update_user("123", points=25.0, timestamp=1696284800) is True

    processor.flush_now()
    assert sum(sizes) == 1
    assert processor.get_top_channels(5) == [("general", 1)]
    top = leaderboard.get_top_users(3)
    assert [u["user_id"] for u in top] == ["123"]
    processor.close()
    leaderboard.close()


def test_integration_guide_example_and_fixture():
    # tests/test_cpp_integration.py in the guide, verbatim apart from the import.
    test_processor = EventStreamProcessor(buffer_size=128, num_threads=1, batch_size=10, flush_interval_ms=100)
    events_collected: list = []
    test_processor.set_flush_callback(lambda e: events_collected.extend(e))
    for i in range(50):
        assert test_processor.push_event("message", f"user{i}", "channel1", 1000 + i)
    test_processor.flush_now()
    assert len(events_collected) == 50
    test_processor.close()


def test_push_event_with_keywords_and_dict_batches(processor):
    batches: list = []
    lock = threading.Lock()

    def flush_events_to_db(events):  # the guide's callback shape
        with lock:
            batches.append(events)

    assert processor.set_flush_callback(flush_events_to_db) is None
    now = int(time.time())
    pushed = []
    for i in range(300):
        event = ("message" if i % 3 else "reaction", str(10**17 + i % 40), f"chan-{i % 7}", now - i % 120)
        ok = processor.push_event(event_type=event[0], user_id=event[1], channel_id=event[2], timestamp=event[3])
        assert ok is True
        pushed.append(event)
    assert processor.flush_now() is None

    assert all(isinstance(b, list) for b in batches)
    events = [e for b in batches for e in b]
    assert len(events) == len(pushed)
    for e in events:
        assert isinstance(e, dict) and set(e) == EVENT_KEYS
        assert isinstance(e["type"], str) and isinstance(e["user_id"], str)
        assert isinstance(e["channel_id"], str) and type(e["timestamp"]) is int
    # Four workers may deliver batches in any order; every event exactly once.
    got = sorted((e["type"], e["user_id"], e["channel_id"], e["timestamp"]) for e in events)
    assert got == sorted(pushed)

    processed = processor.total_events_processed()
    dropped = processor.events_dropped()
    assert type(processed) is int and processed == 300
    assert type(dropped) is int and dropped == 0
    # The guide's drop-rate expression.
    assert dropped / max(processed, 1) == 0.0


def test_top_channels_and_unique_users(processor):
    now = int(time.time())
    counts = {"general": 50, "memes": 30, "help": 20, "offtopic": 10, "rules": 5, "voice": 1}
    users = set()
    i = 0
    for channel, n in counts.items():
        for _ in range(n):
            user = f"user{i % 37}"
            users.add(user)
            assert processor.push_event(event_type="message", user_id=user, channel_id=channel, timestamp=now)
            i += 1
    processor.flush_now()

    top = processor.get_top_channels(5)
    assert isinstance(top, list) and len(top) == 5
    for item in top:
        assert isinstance(item, tuple) and len(item) == 2
        assert isinstance(item[0], str) and type(item[1]) is int
    assert top == [("general", 50), ("memes", 30), ("help", 20), ("offtopic", 10), ("rules", 5)]
    # The guide's dashboard code indexes the tuples.
    assert [{"channel_id": ch[0], "message_count": ch[1]} for ch in top][0] == {
        "channel_id": "general",
        "message_count": 50,
    }
    assert processor.get_top_channels(100)[-1] == ("voice", 1)

    unique = processor.get_unique_users_last_hour()
    assert type(unique) is int
    assert abs(unique - len(users)) <= 1, "HyperLogLog is near exact for small counts"


def test_events_older_than_an_hour_are_not_in_the_last_hour(processor):
    # With the wall clock (the default), "last hour" is the last hour of real time.
    now = int(time.time())
    for i in range(20):
        processor.push_event(event_type="message", user_id=f"old{i}", channel_id="c", timestamp=now - 3 * 3600)
    for i in range(5):
        processor.push_event(event_type="message", user_id=f"new{i}", channel_id="c", timestamp=now)
    processor.flush_now()
    assert processor.get_unique_users_last_hour() == 5
    assert processor.total_events_processed() == 25


def test_full_ring_drops_and_counts():
    release = threading.Event()
    entered = threading.Event()

    def slow(events):
        entered.set()
        release.wait(WAIT)

    p = EventStreamProcessor(buffer_size=4, num_threads=1, batch_size=1, flush_interval_ms=10)
    try:
        p.set_flush_callback(slow)
        assert p.push_event(event_type="message", user_id="u", channel_id="c", timestamp=T0)
        assert entered.wait(WAIT), "the worker is now stuck in the callback"
        results = [p.push_event(event_type="message", user_id="u", channel_id="c", timestamp=T0) for _ in range(100)]
        assert all(type(r) is bool for r in results)
        refused = results.count(False)
        assert refused > 0
        assert p.events_dropped() == refused
        release.set()
        p.flush_now()
        assert p.total_events_processed() == 101 - refused
    finally:
        release.set()
        p.close()


def test_flush_now_without_a_callback_returns(processor):
    for i in range(10):
        processor.push_event(event_type="message", user_id=str(i), channel_id="c", timestamp=T0)
    processor.flush_now()
    assert processor.total_events_processed() == 10


# -- Leaderboard -----------------------------------------------------------------------


def test_constructor_arguments_and_defaults():
    with Leaderboard(decay_factor=0.95, max_users=100000) as a, Leaderboard() as b, Leaderboard(0.95, 100000) as c:
        for board in (a, b, c):
            assert board.size() == 0
            assert board.get_top_users(10) == []


def test_update_user_top_users_and_rank():
    leaderboard = Leaderboard(decay_factor=0.95, max_users=100000)
    leaderboard.set_time_source(lambda: T0)
    for i, points in enumerate([5.0, 25.0, 12.5, 40.0, 1.0]):
        ok = leaderboard.update_user(user_id=str(10**17 + i), points=float(points), timestamp=T0)
        assert ok is True
    assert leaderboard.update_user(user_id=str(10**17), points=10.0, timestamp=T0) is True  # 5 + 10 = 15

    size = leaderboard.size()
    assert type(size) is int and size == 5

    top_users = leaderboard.get_top_users(3)
    assert isinstance(top_users, list) and len(top_users) == 3
    for entry in top_users:
        assert isinstance(entry, dict) and set(entry) == USER_KEYS
        assert isinstance(entry["user_id"], str) and type(entry["rank"]) is int
        assert isinstance(entry["score"], float) and type(entry["last_update"]) is int
    assert [(e["user_id"], e["rank"]) for e in top_users] == [
        (str(10**17 + 3), 1),
        (str(10**17 + 1), 2),
        (str(10**17), 3),
    ]
    assert [e["score"] for e in top_users] == pytest.approx([40.0, 25.0, 15.0])
    assert all(e["last_update"] == T0 for e in top_users)
    assert len(leaderboard.get_top_users(10)) == 5

    rank_info = leaderboard.get_user_rank(str(10**17 + 2))
    assert isinstance(rank_info, dict) and set(rank_info) == USER_KEYS
    assert rank_info["user_id"] == str(10**17 + 2)
    assert rank_info["rank"] == 4 and type(rank_info["rank"]) is int
    assert rank_info["score"] == pytest.approx(12.5)
    assert rank_info["last_update"] == T0
    assert leaderboard.get_user_rank("nobody") is None  # the guide answers 404 on None
    leaderboard.close()


def test_decay_follows_the_time_source_and_none_restores_the_wall_clock():
    leaderboard = Leaderboard(decay_factor=0.95)
    clock = [T0]
    leaderboard.set_time_source(lambda: clock[0])
    leaderboard.update_user(user_id="a", points=100.0, timestamp=T0)
    leaderboard.update_user(user_id="b", points=95.0, timestamp=T0 + 2 * DAY)
    assert leaderboard.get_user_rank("a")["score"] == pytest.approx(100.0)

    clock[0] = T0 + DAY
    assert leaderboard.get_user_rank("a")["score"] == pytest.approx(95.0)
    clock[0] = T0 + 2 * DAY
    top = leaderboard.get_top_users(2)
    assert [u["user_id"] for u in top] == ["b", "a"]
    assert [u["score"] for u in top] == pytest.approx([95.0, 100.0 * 0.95**2])

    # A timestamp left out means "now" by the time source.
    assert leaderboard.update_user(user_id="c", points=1.0) is True
    assert leaderboard.get_user_rank("c")["last_update"] == T0 + 2 * DAY

    leaderboard.set_time_source(None)
    before = time.time()
    score = leaderboard.get_user_rank("a")["score"]
    after = time.time()
    # The board's wall clock counts whole seconds: allow one either way.
    low = 100.0 * 0.95 ** ((after + 1 - T0) / DAY)
    high = 100.0 * 0.95 ** ((before - 1 - T0) / DAY)
    assert low * (1 - 1e-9) <= score <= high * (1 + 1e-9)
    assert leaderboard.get_top_users(3)[0]["user_id"] == "b"  # still usable: the C++ extension broke here
    leaderboard.close()


def test_max_users_evicts_the_lowest_or_refuses():
    leaderboard = Leaderboard(decay_factor=0.95, max_users=3)
    leaderboard.set_time_source(lambda: T0)
    for user, points in (("a", 10.0), ("b", 20.0), ("c", 30.0)):
        assert leaderboard.update_user(user_id=user, points=points, timestamp=T0)
    assert leaderboard.update_user(user_id="low", points=1.0, timestamp=T0) is False
    assert leaderboard.size() == 3 and leaderboard.get_user_rank("low") is None
    assert leaderboard.update_user(user_id="high", points=50.0, timestamp=T0) is True
    assert leaderboard.size() == 3
    assert leaderboard.get_user_rank("a") is None
    assert [u["user_id"] for u in leaderboard.get_top_users(3)] == ["high", "c", "b"]
    leaderboard.close()


def test_save_to_json_and_load_from_json(tmp_path):
    path = tmp_path / "leaderboard_backup.json"
    leaderboard = Leaderboard(decay_factor=0.95, max_users=100000)
    leaderboard.set_time_source(lambda: T0 + DAY)
    tricky = ['quote"d', "brace}{", "back\\slash", "ünï cødé", "new\nline"]
    for i, user in enumerate(tricky + [str(10**17 + i) for i in range(100)]):
        leaderboard.update_user(user_id=user, points=1.0 + (i * 7919) % 101 / 3.0, timestamp=T0 + i * 600)
    assert leaderboard.save_to_json(str(path)) is None
    assert path.exists()

    restored = Leaderboard()
    restored.set_time_source(lambda: T0 + DAY)
    assert restored.load_from_json(str(path)) is None
    assert restored.size() == leaderboard.size() == 105
    assert restored.get_top_users(105) == leaderboard.get_top_users(105)
    for user in tricky:
        assert restored.get_user_rank(user) == leaderboard.get_user_rank(user)
    leaderboard.close()
    restored.close()


def test_load_from_json_reads_the_cpp_extension_snapshot(tmp_path):
    path = tmp_path / "cpp.json"
    path.write_text(
        json.dumps(
            {
                "decay_factor": 0.95,
                "max_users": 100000,
                "entries": [
                    {"user_id": "123", "score": 25.0, "last_update": T0},
                    {"user_id": "456", "score": 40.0, "last_update": T0 + DAY},
                ],
            }
        )
    )
    leaderboard = Leaderboard()
    leaderboard.set_time_source(lambda: T0 + DAY)
    leaderboard.load_from_json(str(path))
    assert leaderboard.size() == 2
    top = leaderboard.get_top_users(2)
    assert [(u["user_id"], u["rank"]) for u in top] == [("456", 1), ("123", 2)]
    assert [u["score"] for u in top] == pytest.approx([40.0, 25.0 * 0.95])
    leaderboard.close()


def test_load_from_json_keeps_the_board_on_a_bad_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"decay_factor": 0.95, "entries": [{"user_id": "1", "sco')
    leaderboard = Leaderboard()
    leaderboard.update_user(user_id="kept", points=3.0, timestamp=T0)
    with pytest.raises(cpp_leaderboard.EngageHubError):
        leaderboard.load_from_json(str(path))
    assert leaderboard.size() == 1 and leaderboard.get_user_rank("kept") is not None
    leaderboard.close()
