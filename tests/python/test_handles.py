"""The handle model for leaderboards and sketches, and the error
hierarchy: closing while other threads use a handle, Closed everywhere, typed
argument errors, IOFailure's errno and filename."""

import errno
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import engagehub
from engagehub import CountMinSketch, HyperLogLog, Leaderboard

T0 = 1_700_000_000


def run_python(script, timeout=120):
    """Runs `script` in a fresh interpreter (a crash or a hang there fails the test
    instead of killing the test run); returns the completed process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# -- audit item 1: close racing calls in progress ----------------------------------


def test_close_during_save_on_another_thread(tmp_path):
    # Before: close() freed the board under the save's serialisation (SIGSEGV).
    # Now close waits for the serialisation; the save then writes a whole file or
    # raised Closed (it started after the close). Run in a child: a crash fails.
    proc = run_python(
        f"""
        import json, threading
        import engagehub
        from engagehub import Leaderboard
        N = 100_000
        for attempt in range(3):
            lb = Leaderboard(max_users=0)
            for i in range(N):
                lb.update_user(f"user{{i}}", float(i), {T0})
            path = {str(tmp_path)!r} + f"/board{{attempt}}.json"
            started, outcome = threading.Event(), []
            def save():
                started.set()
                try:
                    lb.save_to_json(path)
                    outcome.append("saved")
                except engagehub.Closed:
                    outcome.append("closed")
            t = threading.Thread(target=save)
            t.start()
            assert started.wait(30)
            lb.close()
            t.join(60)
            assert not t.is_alive(), "save hung"
            if outcome == ["saved"]:
                with Leaderboard() as check:
                    check.load_from_json(path)
                    assert check.size() == N
            else:
                assert outcome == ["closed"], outcome
            print(outcome[0])
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) <= {"saved", "closed"}
    assert len(proc.stdout.split()) == 3


def test_threads_looping_queries_and_updates_while_another_closes():
    # Before: threads inside eh_leaderboard_top when close() freed the board hung
    # forever (or crashed, or raised cffi's TypeError). Now each one finishes: its
    # calls succeed until they raise Closed.
    proc = run_python(
        f"""
        import threading
        import engagehub
        from engagehub import Leaderboard
        lb = Leaderboard(max_users=0)
        for i in range(5000):
            lb.update_user(f"u{{i}}", float(i), {T0})
        running = threading.Barrier(7)
        results = []
        def loop(op):
            running.wait(30)
            n = 0
            try:
                while True:
                    op(n)
                    n += 1
            except engagehub.Closed as exc:
                assert isinstance(exc, ValueError)
                results.append(("closed", n))
            except BaseException as exc:
                results.append((repr(exc), n))
        ops = [
            lambda n: lb.top(100),
            lambda n: lb.get_top_users(10),
            lambda n: lb.update_user(f"u{{n % 5000}}", 1.0, {T0}),
            lambda n: lb.update_user(f"x{{n}}", 1.0, float({T0})),
            lambda n: lb.around("u10", 5),
            lambda n: lb.get_user_rank("u7"),
        ]
        threads = [threading.Thread(target=loop, args=(op,)) for op in ops]
        for t in threads:
            t.start()
        running.wait(30)
        lb.close()
        for t in threads:
            t.join(30)
            assert not t.is_alive(), "a thread hung"
        assert sorted(r[0] for r in results) == ["closed"] * 6, results
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_close_is_idempotent_and_safe_from_many_threads_at_once():
    lb = Leaderboard()
    lb.update_user("a", 1.0, T0)
    go = threading.Barrier(4)
    errors = []

    def close():
        try:
            go.wait(10)
            lb.close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert errors == [] and lb.closed
    lb.close()


# -- audit item 10: every error an EngageHubError ---------------------------------


def test_every_call_on_a_closed_board_raises_closed():
    lb = Leaderboard()
    lb.update_user("a", 1.0, T0)
    lb.close()
    assert lb.closed
    calls = [
        lambda: lb.top(),
        lambda: lb.top(5, 1),
        lambda: lb.around("a", 2),
        lambda: lb.set("a", 1.0),
        lambda: lb.get_top_users(3),
        lambda: lb.get_user_rank("a"),
        lambda: lb.rank("a"),
        lambda: lb.update_user("a", 1.0),
        lambda: lb.add("a", 1.0),
        lambda: lb.remove("a"),
        lambda: lb.clear(),
        lambda: lb.size(),
        lambda: len(lb),
        lambda: lb.stats(),
        lambda: "a" in lb,
        lambda: lb.save_to_json("/nonexistent/x.json"),
        lambda: lb.load_from_json("/nonexistent/x.json"),
    ]
    for call in calls:
        with pytest.raises(engagehub.Closed, match="closed") as info:
            call()
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, engagehub.EngageHubError)
    with pytest.raises(engagehub.Closed):
        with lb:
            pass


def test_closed_is_a_value_error_and_shut_down_its_old_name():
    assert engagehub.ShutDown is engagehub.Closed
    assert issubclass(engagehub.Closed, ValueError)
    assert issubclass(engagehub.Closed, engagehub.EngageHubError)
    assert engagehub.Closed.status == engagehub.lib.EH_SHUT_DOWN


def test_sketches_close_like_every_handle():
    hll, cms = HyperLogLog(), CountMinSketch()
    hll.add("a")
    cms.add("a", 3)
    assert "HyperLogLog" in repr(hll) and "closed" not in repr(hll)
    with hll, cms:
        pass
    assert hll.closed and cms.closed
    assert repr(hll) == "<engagehub.HyperLogLog closed>"
    for call in (hll.count, lambda: hll.add("b"), hll.to_bytes, lambda: HyperLogLog().merge(hll),
                 lambda: cms.estimate("a"), lambda: cms.add("a"), cms.total, cms.to_bytes):
        with pytest.raises(engagehub.Closed):
            call()
    hll.close()  # idempotent


def test_repr_names_the_state():
    with Leaderboard() as lb:
        lb.update_user("a", 1.0, T0)
        assert repr(lb).startswith("<engagehub.Leaderboard 1 users at 0x")
    assert repr(lb) == "<engagehub.Leaderboard closed>"


def test_argument_types_are_checked():
    # Before: decay_factor='0.9' was accepted (float('0.9')); now InvalidType, an
    # InvalidArgument that is also a TypeError.
    assert issubclass(engagehub.InvalidType, engagehub.InvalidArgument)
    assert issubclass(engagehub.InvalidType, TypeError)
    for bad in (
        lambda: Leaderboard(decay_factor="0.9"),
        lambda: Leaderboard(max_users="10"),
        lambda: Leaderboard(max_users=1.5),
        lambda: Leaderboard(decay_period_secs=None),
        lambda: CountMinSketch(width="8"),
        lambda: CountMinSketch(depth=2.0),
        lambda: HyperLogLog.from_bytes("not bytes"),
    ):
        with pytest.raises(engagehub.InvalidType):
            bad()
    with Leaderboard() as lb:
        lb.update_user("a", 1.0, T0)
        for bad in (
            lambda: lb.top("3"),
            lambda: lb.top(3, offset=1.0),
            lambda: lb.around("a", "2"),
            lambda: lb.set("a", "1.0"),
            lambda: lb.update_user("a", "1.0", T0),
            lambda: lb.update_user(12345, 1.0, T0),
            lambda: lb.rank("a", now="soon"),
            lambda: lb.set_time_source(42),
            lambda: lb.save_to_json(3.5),
        ):
            with pytest.raises(engagehub.InvalidType):
                bad()
        assert lb.rank("a", now=T0).score == 1.0  # the refused calls changed nothing


def test_out_of_range_arguments_are_invalid_argument():
    # Before: CountMinSketch(width=0) raised a plain ValueError.
    for bad in (
        lambda: CountMinSketch(width=0),
        lambda: CountMinSketch(depth=-1),
        lambda: CountMinSketch().add("a", -1),
        lambda: Leaderboard(max_users=-1),
        lambda: Leaderboard(decay_factor=0),
        lambda: Leaderboard(decay_factor=1.5),
    ):
        with pytest.raises(engagehub.InvalidArgument) as info:
            bad()
        assert not isinstance(info.value, TypeError)
    with Leaderboard() as lb:
        with pytest.raises(engagehub.InvalidArgument):
            lb.top(-1)
        with pytest.raises(engagehub.InvalidArgument):
            lb.save_to_json("bad\0path")


def test_io_failure_carries_errno_and_filename(tmp_path):
    missing = tmp_path / "missing.json"
    with Leaderboard() as lb:
        with pytest.raises(engagehub.IOFailure) as info:
            lb.load_from_json(missing)
        assert info.value.errno == errno.ENOENT
        assert info.value.filename == str(missing)
        assert isinstance(info.value, FileNotFoundError) is False  # not OSError's magic
        assert isinstance(info.value, OSError)
        assert str(missing) in str(info.value)
        nowhere = tmp_path / "no-such-dir" / "board.json"
        with pytest.raises(engagehub.IOFailure) as info:
            lb.save_to_json(nowhere)
        assert info.value.errno == errno.ENOENT
        assert info.value.filename == str(nowhere)
        # A directory where the file should be.
        with pytest.raises(engagehub.IOFailure) as info:
            lb.load_from_json(tmp_path)
        assert info.value.errno == errno.EISDIR
    assert engagehub.lib.eh_last_error_errno() == errno.EISDIR  # this thread's last


# -- audit item 9: around with a radius near 2**64 ---------------------------------


def test_around_with_a_huge_radius_returns_every_row():
    # Before: release builds returned the rows above the user without the user;
    # debug builds panicked (Panic); radii >= 2**64 raised cffi's OverflowError.
    with Leaderboard() as lb:
        for i, user in enumerate("abcde"):
            lb.update_user(user, 10.0 - i, T0)
        for radius in (2**64 - 1, 2**64 - 2, 2**63, 2**64 + 5, 10**30):
            rows = lb.around("c", radius, now=T0)
            assert [r.user_id for r in rows] == list("abcde"), radius
        assert [r.user_id for r in lb.top(2**64 + 1, offset=3, now=T0)] == ["d", "e"]
        assert lb.top(5, offset=2**64 - 1, now=T0) == []


def test_out_of_range_numbers_and_bad_text_are_engagehub_errors():
    # Before: cffi's OverflowError for ints beyond 64 bits, UnicodeEncodeError for
    # a lone surrogate, a plain TypeError for a str count.
    with Leaderboard() as lb:
        lb.update_user("a", 1.0, T0)
        for bad in (
            lambda: lb.update_user("a", 1.0, 2**70),
            lambda: lb.update_user("a", 10**400, T0),
            lambda: lb.update_user("\ud800", 1.0, T0),
            lambda: lb.set("a", 1.0, 2**64),
            lambda: lb.rank("a", now=float("inf")),
            lambda: lb.top(3, now=float("nan")),
            lambda: lb.around("\udfff", 1),
        ):
            with pytest.raises(engagehub.InvalidArgument):
                bad()
    with engagehub.EventStreamProcessor(64, 1, 10, 20) as p:
        for bad, cls in (
            (lambda: p.push_event("m", "u", "c", 2**70), engagehub.InvalidArgument),
            (lambda: p.push_event("m", "u", "c", float("inf")), engagehub.InvalidArgument),
            (lambda: p.push_event("m", "\ud800", "c", 0), engagehub.InvalidArgument),
            (lambda: p.push_event("m", "u", "c", "now"), engagehub.InvalidType),
            (lambda: p.top_channels("5"), engagehub.InvalidType),
            (lambda: p.unique_users("3600"), engagehub.InvalidType),
            (lambda: p.unique_users(3600, now=2**70), engagehub.InvalidArgument),
        ):
            with pytest.raises(cls):
                bad()
        assert p.stats().pushed == 0
        for rows in ([("m", "u", "c", 2**70)], [("m", "\ud800", "c")]):
            with pytest.raises(engagehub.InvalidArgument):
                p.push_many(rows)
        assert p.top_channels(2**70) == []
        assert p.unique_users(3600.0) == 0
