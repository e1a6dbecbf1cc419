"""The Python Leaderboard: the C++ extension's drop-in API and the extras."""

import json
import math
import os
import re
import threading

import pytest

import engagehub
import engagehub._compat
import engagehub.leaderboard
from engagehub import Leaderboard
from engagehub._native import lib

T0 = 1_700_000_000
DAY = 86_400


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def board(clock):
    with Leaderboard() as lb:
        lb.set_time_source(clock)
        yield lb


def test_drop_in_defaults_and_shapes(board):
    stats = board.stats()
    assert stats.len == 0
    board.update_user("123", 25.0, T0)
    board.update_user("456", points=40.0, timestamp=T0)
    top = board.get_top_users(5)
    assert [row["user_id"] for row in top] == ["456", "123"]
    assert set(top[0]) == {"user_id", "score", "rank", "last_update"}
    assert top[0]["rank"] == 1 and top[0]["score"] == pytest.approx(40.0)
    assert top[1]["last_update"] == T0
    rank = board.get_user_rank("123")
    assert rank == {"user_id": "123", "rank": 2, "score": pytest.approx(25.0), "last_update": T0}
    assert board.get_user_rank("nobody") is None
    assert board.size() == len(board) == 2
    assert "123" in board and "nobody" not in board


def test_default_max_users_is_the_cpp_default():
    with Leaderboard(max_users=2) as small:
        assert small.update_user("a", 1.0, T0)
        assert small.update_user("b", 2.0, T0)
        assert small.update_user("c", 0.5, T0) is False  # refused, and counted
        assert small.stats().refused == 1
        assert small.update_user("d", 5.0, T0)  # evicts "a"
        assert small.stats().evicted == 1
        assert [u.user_id for u in small.top()] == ["d", "b"]
        with pytest.raises(engagehub.Full):
            small.add("e", 0.1, T0)


def test_decay_over_days(board, clock):
    board.update_user("u", 100.0, T0)
    for days in (0, 1, 7, 30):
        clock.t = T0 + days * DAY
        assert board.get_user_rank("u")["score"] == pytest.approx(100.0 * 0.95**days, rel=1e-12)
    # Queries never rewrite last_update, even when the clock goes backwards.
    clock.t = T0 - 10 * DAY
    board.get_top_users(1)
    clock.t = T0 + DAY
    assert board.get_user_rank("u")["last_update"] == T0
    assert board.get_user_rank("u")["score"] == pytest.approx(95.0)


def test_out_of_order_updates(board, clock):
    board.update_user("u", 10.0, T0 + 2 * DAY)
    board.update_user("u", 10.0, T0)  # late arrival of an older event
    clock.t = T0 + 2 * DAY
    expected = 10.0 + 10.0 * 0.95**2
    assert board.get_user_rank("u")["score"] == pytest.approx(expected, rel=1e-12)
    assert board.get_user_rank("u")["last_update"] == T0 + 2 * DAY


def test_time_source_none_restores_wall_clock(board, clock):
    board.update_user("u", 1.0)  # stamped by the fake clock
    assert board.get_user_rank("u")["last_update"] == T0
    board.set_time_source(None)
    board.update_user("w", 1.0)
    import time

    assert abs(board.get_user_rank("w")["last_update"] - time.time()) < 60
    # Scores are now decayed to the wall clock, years after T0.
    assert board.get_user_rank("u")["score"] < 1e-10


def test_tricky_ids_survive_save_and_load(board, tmp_path):
    ids = ['quo"te', "back\\slash", "br{ace}s", "ünï©ødé", "emoji 🎉", "new\nline", "x" * 300]
    for i, uid in enumerate(ids):
        board.update_user(uid, 1.0 / (i + 3), T0 + i)
    path = tmp_path / "board.json"
    board.save_to_json(str(path))
    json.loads(path.read_text())  # a real JSON document
    with Leaderboard() as other:
        other.set_time_source(lambda: T0 + 10)
        other.load_from_json(path)
        board.set_time_source(lambda: T0 + 10)
        assert other.get_top_users(20) == board.get_top_users(20)  # scores bit for bit
        assert {u["user_id"] for u in other.get_top_users(20)} == set(ids)


def test_corrupt_snapshot_raises_and_leaves_board_unchanged(board, tmp_path):
    board.update_user("keep", 5.0, T0)
    before = board.get_top_users(10)
    good = tmp_path / "good.json"
    board.save_to_json(good)
    text = good.read_text()
    cases = {
        "truncated.json": text[: len(text) // 2],
        "garbage.json": "not json at all",
        "empty.json": "",
        "nan.json": re.sub(r'\["keep",[^,]+,', '["keep",NaN,', text),
        "no_entries.json": re.sub(r'"entries":.*', '"entrys":[]}', text),
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(engagehub.Corrupt) as info:
            board.load_from_json(path)
        assert name in str(info.value)
        assert board.get_top_users(10) == before
    with pytest.raises(engagehub.IOFailure) as info:
        board.load_from_json(tmp_path / "missing.json")
    assert isinstance(info.value, OSError)
    assert board.get_top_users(10) == before


def test_reads_cpp_extension_snapshot(board, tmp_path):
    path = tmp_path / "cpp.json"
    path.write_text(
        json.dumps(
            {
                "decay_factor": 0.95,
                "max_users": 100000,
                "entries": [
                    {"user_id": "123", "score": 25.0, "last_update": T0},
                    {"user_id": "456", "score": 30.0, "last_update": T0 - DAY},
                ],
            }
        )
    )
    board.load_from_json(path)
    assert board.get_user_rank("456")["score"] == pytest.approx(30.0 * 0.95)
    assert [u["user_id"] for u in board.get_top_users(2)] == ["456", "123"]


def test_pythonic_extras(board):
    for i in range(10):
        board.add(f"u{i}", float(i), T0)
    assert [u.user_id for u in board.top(3)] == ["u9", "u8", "u7"]
    assert [u.rank for u in board.top(2, offset=4)] == [5, 6]
    rows = board.around("u5", radius=1)
    assert [u.user_id for u in rows] == ["u6", "u5", "u4"]
    assert board.rank("u0").rank == 10
    board.set("u0", 100.0, T0)
    assert board.rank("u0").rank == 1
    board.remove("u0")
    with pytest.raises(engagehub.NotFound):
        board.remove("u0")
    with pytest.raises(KeyError):
        board.rank("u0")
    board.clear()
    assert len(board) == 0


def test_bad_input_raises_and_changes_nothing(board):
    board.add("a", 1.0, T0)
    for points in (math.nan, math.inf, -math.inf):
        with pytest.raises(engagehub.InvalidArgument):
            board.update_user("a", points, T0)
    with pytest.raises(ValueError):
        board.add("", 1.0, T0)
    with pytest.raises(ValueError):
        board.add(b"\xff\xfe", 1.0, T0)
    with pytest.raises(TypeError):
        board.add(123, 1.0, T0)
    assert board.get_top_users(5) == [
        {"user_id": "a", "score": pytest.approx(1.0), "rank": 1, "last_update": T0}
    ]
    for decay in (0, -0.1, 1.5, math.nan):
        with pytest.raises(engagehub.InvalidArgument):
            Leaderboard(decay_factor=decay)
    with pytest.raises(engagehub.InvalidArgument):
        Leaderboard(decay_period_secs=-5)


def test_update_user_argument_types_take_any_path_to_the_same_result(board, clock):
    # The fast path takes a str id and an int (or omitted) timestamp; the others
    # (bytes ids, float timestamps, int points) must give the same scores.
    board.update_user("fast", 2.0, T0)
    board.update_user(b"slow", 2, float(T0) + 0.75)  # float seconds are truncated
    clock.t = T0
    board.update_user("now", 2.0)  # the time source's "now"
    scores = {row["user_id"]: row["score"] for row in board.get_top_users(3)}
    assert scores == {"fast": 2.0, "slow": 2.0, "now": 2.0}
    assert board.rank("slow").last_update == T0
    with pytest.raises(TypeError):
        board.update_user("fast", "2.0", T0)
    with pytest.raises(TypeError):
        board.update_user("fast", "2.0", float(T0))
    with pytest.raises(TypeError):
        board.update_user(12345, 1.0, T0)
    assert board.get_user_rank("fast")["score"] == 2.0  # the failures changed nothing
    board.close()
    with pytest.raises(ValueError, match="closed"):
        board.update_user("fast", 1.0, T0)
    with pytest.raises(ValueError, match="closed"):
        board.add("fast", 1.0)


def test_close_and_context_manager():
    lb = Leaderboard()
    lb.add("a", 1.0, T0)
    lb.close()
    lb.close()  # idempotent
    assert lb.closed
    with pytest.raises(ValueError):
        lb.size()
    with Leaderboard() as inner:
        inner.add("a", 1.0, T0)
    assert inner.closed


def test_concurrent_updates_from_threads(board):
    def worker(n):
        for i in range(2000):
            board.add(f"user{i % 50}", 1.0, T0)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    top = board.top(100)
    assert len(top) == 50
    assert sum(u.score for u in top) == pytest.approx(8000.0)


# -- the compiled fast path of update_user --------------------------------------

_needs_fast = pytest.mark.skipif(
    not engagehub.leaderboard.FAST_UPDATES, reason="engagehub._engagehub_fast is not built"
)


def test_fast_path_is_built_where_the_test_command_promises_it():
    # `make test` builds the module and sets this, so CI cannot silently test only
    # the cffi path.
    if os.environ.get("ENGAGEHUB_EXPECT_FAST") == "1":
        assert engagehub.leaderboard.FAST_UPDATES


def _replay(update, board_args, calls):
    """Runs `calls` through `update` on a fresh board; returns the outcomes and the
    final ranking, every score as its exact bits."""
    outcomes = []
    with Leaderboard(*board_args) as lb:
        lb.set_time_source(lambda: T0 + 5)
        for args in calls:
            try:
                outcomes.append(update(lb, *args))
            except Exception as exc:  # noqa: BLE001 - the exception type is the outcome
                outcomes.append(type(exc))
        ranking = [(u.user_id, u.rank, u.score.hex(), u.last_update) for u in lb.top(1000, now=T0 + DAY)]
        return outcomes, ranking, lb.stats()


@_needs_fast
def test_fast_path_and_cffi_path_agree_on_every_outcome():
    calls = [
        ("alice", 10.0, T0),
        ("bob", 3, T0 + 60),  # int points
        ("alice", 2.5),  # the time source's now
        ("carol", 1.0, float(T0)),  # float timestamp: general path
        (b"dave", 4.0, T0),  # bytes id: general path
        ("émile", 7.0, T0 + 1),  # non-ASCII id
        ("x" * 1024, 0.5, T0),  # longest id
        ("x" * 1025, 0.5, T0),  # too long
        ("", 1.0, T0),  # empty id
        ("bob", math.nan, T0),
        ("bob", math.inf, T0),
        ("bob", 1.0, 253_402_300_800),  # after year 9999
        ("bob", 10**400, T0),  # int too large for a double
        ("bob", 1.0, 2**70),  # timestamp beyond int64
        ("bob", True, T0),  # bool points
        ("\ud800", 1.0, T0),  # lone surrogate
        ("bob", "1.0", T0),  # points not a number
        ("low", 0.001, T0),  # refused: the board below is full
        ("high", 99.0, T0),  # evicts the lowest
    ]
    fast = _replay(Leaderboard.update_user, (0.9, 6), calls)
    slow = _replay(Leaderboard._update_user_cffi, (0.9, 6), calls)
    assert fast == slow
    outcomes, ranking, stats = fast
    assert outcomes[:7] == [True] * 7
    assert outcomes[7:12] == [engagehub.InvalidArgument] * 5
    # Every failure is an EngageHubError (was OverflowError, UnicodeEncodeError
    # and cffi's TypeError): out of range or not UTF-8 is InvalidArgument (still
    # a ValueError), a wrong type InvalidType (still a TypeError).
    assert outcomes[12] is engagehub.InvalidArgument and outcomes[13] is engagehub.InvalidArgument
    assert outcomes[14] is True
    assert outcomes[15] is engagehub.InvalidArgument and outcomes[16] is engagehub.InvalidType
    assert outcomes[17:] == [False, True]
    assert stats.refused == 1 and stats.evicted == 1
    assert [row[0] for row in ranking][:2] == ["high", "alice"]


@_needs_fast
def test_fast_path_and_cffi_path_agree_on_a_closed_board():
    # Every call on a closed board raises Closed on both paths, whatever else is
    # wrong with its arguments, and the closed board's shell is never touched
    # after being freed (the fast path keeps using the address).
    calls = [
        ("alice", 1.0, T0),
        ("alice", 1.0),
        ("bob", 3, T0 + 60),
        ("carol", 1.0, float(T0)),
        (b"dave", 4.0, T0),
        ("", 1.0, T0),
        ("x" * 1025, 0.5, T0),
        ("bob", math.nan, T0),
        ("bob", 10**400, T0),
        ("bob", 1.0, 2**70),
        ("\ud800", 1.0, T0),
        ("bob", "1.0", T0),
    ]

    def replay(update):
        with Leaderboard(0.9, 6) as lb:
            lb.set_time_source(lambda: T0 + 5)
            lb.update_user("alice", 1.0, T0)
            lb.close()
            outcomes = []
            for args in calls:
                try:
                    outcomes.append(update(lb, *args))
                except Exception as exc:  # noqa: BLE001 - the exception type is the outcome
                    outcomes.append(type(exc))
            return outcomes

    fast = replay(Leaderboard.update_user)
    assert fast == replay(Leaderboard._update_user_cffi)
    assert fast == [engagehub.Closed] * len(calls)


@_needs_fast
def test_busy_board_falls_back_to_the_waiting_path_once(board, monkeypatch):
    board.update_user("a", 1.0, T0)
    calls = []

    def busy(*args):
        calls.append(args)
        return lib.EH_BUSY

    monkeypatch.setattr(engagehub._compat, "_fast_add", busy)
    assert board.update_user("a", 2.0, T0) is True
    assert len(calls) == 1
    assert board.get_user_rank("a")["score"] == 3.0  # applied exactly once


@_needs_fast
def test_fast_path_on_a_closed_board_raises_value_error():
    lb = Leaderboard()
    lb.close()
    with pytest.raises(ValueError, match="closed"):
        lb.update_user("a", 1.0, T0)


def test_updates_racing_a_save_are_all_applied(tmp_path):
    # Saves hold the board for reading; the fast path must then wait (through
    # cffi) rather than fail or drop the update.
    with Leaderboard(max_users=0) as lb:
        for i in range(20_000):
            lb.update_user(f"u{i}", 1.0, T0)
        done = threading.Event()

        def saver():
            while not done.is_set():
                lb.save_to_json(tmp_path / "board.json")

        thread = threading.Thread(target=saver)
        thread.start()
        try:
            for _ in range(5):
                for i in range(0, 20_000, 7):
                    assert lb.update_user(f"u{i}", 1.0, T0) is True
        finally:
            done.set()
            thread.join(timeout=60)
        assert not thread.is_alive()
        total = sum(u.score for u in lb.top(20_000, now=T0))
        assert total == pytest.approx(20_000 + 5 * len(range(0, 20_000, 7)))


def test_churn_at_max_users_never_duplicates_or_grows(tmp_path):
    """Issue 15's reproducer: equal points at one timestamp churning a full board
    used to hold a newcomer twice (size 5001, then without bound) and save a
    snapshot its own load refused."""
    lb = Leaderboard(max_users=5000)
    t = 1_767_225_600
    users = [str(100000000000000000 + i) for i in range(20000)]
    for i in range(12):
        for k in range(0, 10000, 10):
            lb.update_user(users[(k * 31 + i) % 20000], 1.0, t)
        assert lb.size() <= 5000
    assert lb.size() == 5000
    ids = [row.user_id for row in lb.top(5000, now=t)]
    assert len(ids) == len(set(ids)) == 5000
    path = tmp_path / "board.json"
    lb.save_to_json(str(path))
    again = Leaderboard(max_users=5000)
    again.load_from_json(str(path))
    assert [row.user_id for row in again.top(5000, now=t)] == ids


def test_cpp_snapshot_with_what_its_writer_left_loads_the_rest(tmp_path):
    """Issue 11 item 12: raw tabs/newlines in ids and bare inf, as the C++ writer
    produced them, used to make the whole file Corrupt."""
    import time
    import warnings

    now = int(time.time())
    path = tmp_path / "cpp.json"
    path.write_text(
        '{"decay_factor": 0.95, "max_users": 100, "entries": ['
        f'{{"user_id": "tab\there", "score": 5.0, "last_update": {now}}},'
        f'{{"user_id": "new\nline", "score": 4.0, "last_update": {now}}},'
        f'{{"user_id": "broken", "score": inf, "last_update": {now}}}]}}'
    )
    lb = Leaderboard()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lb.load_from_json(str(path))
    assert [r.user_id for r in lb.top(10, now=now)] == ["tab\there", "new\nline"]
    assert [(s.index, s.user_id) for s in lb.last_load_skipped] == [(2, "broken")]
    assert "finite" in lb.last_load_skipped[0].reason
    assert [w.category for w in caught] == [engagehub.SnapshotEntriesSkipped]
    # A later load of a clean file clears the list.
    lb.save_to_json(str(tmp_path / "ours.json"))
    lb.load_from_json(str(tmp_path / "ours.json"))
    assert lb.last_load_skipped == []


def test_future_timestamps_are_refused_and_counted():
    import time

    now = int(time.time())
    lb = Leaderboard(max_future_secs=3600)
    lb.update_user("a", 1.0, now + 60)
    with pytest.raises(engagehub.InvalidArgument, match="max_future_secs"):
        lb.update_user("a", 1.0, now + 40 * 365 * 86400)
    with pytest.raises(engagehub.InvalidArgument):
        lb.update_user("b", 1.0, now + 7200)
    assert lb.stats().future_refused == 2
    assert lb.size() == 1
    with pytest.raises(engagehub.InvalidArgument):
        Leaderboard(max_future_secs=0)
