"""The handle model for EventStreamProcessor: close inside its own
callback, collection by the cyclic GC on one of its own workers, fork, flush_now
racing a close.

Scenarios that crashed or hung before run in a child interpreter (a crash or a hang
there fails the test instead of killing the run). Every wait is on a condition
with a timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

import engagehub as eh
from engagehub._processor import callbacks as callbacks_module

WAIT = 30.0


def run_python(script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_clean(proc: subprocess.CompletedProcess, expected_stdout: str) -> None:
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == expected_stdout.split(), proc.stdout + proc.stderr
    for text in ("panicked", "FATAL", "Traceback", "garbage", "Exception ignored"):
        assert text not in proc.stderr, proc.stderr


# -- audit item 2: close inside its own flush callback -----------------------------


def test_close_inside_own_callback_raises_would_deadlock_and_the_processor_stays_usable():
    # Before: close() returned normally inside the callback, leaked the workers and
    # batches kept arriving "after close".
    got: list = []
    outcome: list = []
    first = threading.Event()

    with eh.EventStreamProcessor(1024, 2, 5, 50) as p:

        def callback(batch):
            if not first.is_set():
                try:
                    p.close()
                    outcome.append("closed")
                except eh.WouldDeadlock as exc:
                    outcome.append(exc)
                first.set()
            got.extend(batch)

        p.set_flush_callback(callback)
        assert p.push_event("m", "u0", "c", 0)
        assert first.wait(WAIT)
        assert len(outcome) == 1 and isinstance(outcome[0], eh.WouldDeadlock), outcome
        assert isinstance(outcome[0], eh.EngageHubError)
        assert not p.closed
        for i in range(1, 20):
            assert p.push_event("m", f"u{i}", "c", 0)
        p.flush_now(timeout=WAIT)
        assert len(got) == 20
    assert p.closed
    with pytest.raises(eh.Closed):
        p.push_event("m", "late", "c", 0)


def test_twenty_processors_closed_in_their_callbacks_leak_no_threads():
    # Before: each such close stopped intake only; the workers leaked (80 threads
    # for 20 processors) and interpreter exit aborted. Now the close is refused, the
    # processors stay usable, and closing them from outside joins every worker.
    proc = run_python(
        """
        import threading, os
        import engagehub as eh
        def native_threads():
            return len(os.listdir("/proc/self/task"))
        before = native_threads()
        refused = 0
        for _ in range(20):
            p = eh.EventStreamProcessor(256, 4, 5, 20)
            done = threading.Event()
            def cb(batch, p=p, done=done):
                global refused
                try:
                    p.close()
                except eh.WouldDeadlock:
                    refused += 1
                done.set()
            p.set_flush_callback(cb)
            p.push_event("m", "u", "c", 0)
            assert done.wait(30)
            p.close()
        print(refused, native_threads() - before)
        """
    )
    assert_clean(proc, "20 0")


# -- audit item 3: collected by the cyclic GC on one of its own workers ------------


def test_processor_in_a_cycle_collected_on_its_own_worker_keeps_delivering():
    # Before: the native free was refused there, but the Python side dropped the
    # callback context, and the next batch aborted the process (ffi.from_handle
    # on garbage). Now the free hands the close to a reaper and the context lives
    # until the native finalizer runs.
    proc = run_python(
        """
        import gc, threading, weakref
        import engagehub as eh
        from engagehub._processor import callbacks as pm
        gc.disable()  # collections happen only where the test says
        N = 200
        delivered = []
        collect_now = threading.Event()
        collected_on = []
        all_delivered = threading.Event()
        def callback(batch):
            if not collected_on:
                # The first delivery waits until the processor is garbage, so the
                # collection always happens on the worker, however fast the
                # pushes and deliveries before it were (the wait releases the GIL).
                assert collect_now.wait(30)
                collected_on.append(threading.current_thread().name)
                gc.collect()  # collects the processor, on its own worker thread
            delivered.extend(e["user_id"] for e in batch)
            if len(delivered) == N:
                all_delivered.set()
        p = eh.EventStreamProcessor(1024, 1, 10, 20)
        before = set(pm.CONTEXTS)
        p.set_flush_callback(callback)
        (key,) = set(pm.CONTEXTS) - before
        # Set once the native finalizer released the registration (and with it
        # the last reference to the callback's context).
        finalized = threading.Event()
        weakref.finalize(eh.ffi.from_handle(pm.CONTEXTS[key]), finalized.set)
        cycle = {"p": p}
        p.cycle = cycle  # a reference cycle: only the cyclic GC can free it
        alive = weakref.ref(p)
        for i in range(N):
            assert p.push_event("m", f"u{i}", "c", 0)
        del p, cycle
        collect_now.set()
        assert all_delivered.wait(30), len(delivered)
        assert alive() is None, "the processor was not collected"
        assert collected_on and collected_on[0] != "MainThread"
        assert sorted(delivered) == sorted(f"u{i}" for i in range(N))
        # The reaper finishes the close and runs the finalizer: the context goes.
        assert finalized.wait(30), "user_data_free never ran"
        assert key not in pm.CONTEXTS
        print("ok", len(delivered))
        """
    )
    assert_clean(proc, "ok 200")


def test_callback_context_is_released_by_the_native_finalizer():
    before = len(callbacks_module.CONTEXTS)
    p = eh.EventStreamProcessor(64, 1, 10, 20)
    p.set_flush_callback(lambda batch: None)
    p.set_dead_letter_callback(lambda batch, error: None)
    assert len(callbacks_module.CONTEXTS) == before + 2
    p.set_flush_callback(lambda batch: None)  # the replaced one is finalized
    assert len(callbacks_module.CONTEXTS) == before + 2
    p.close()
    assert len(callbacks_module.CONTEXTS) == before


# -- audit item 8: fork -------------------------------------------------------------

_FORK_CHILD = """
import logging
logging.getLogger("engagehub").addHandler(logging.NullHandler())
logging.getLogger("engagehub").propagate = False  # the raising callback is expected


def child_work(p, got):
    got.clear()
    for i in range(50):
        assert p.push_event("m", f"child{i}", "c", 0)
    p.flush_now(timeout=30)
    assert sorted(got) == sorted(f"child{i}" for i in range(50)), got
    assert p.stats().accepted == 50, p.stats()  # counters started empty
    # A raising callback records the failure under the dispatch lock, which a
    # parent thread may have held at fork time: reset in the child.
    p.set_flush_callback(lambda batch: 1 / 0)
    assert p.push_event("m", "bad", "c", 0)
    p.flush_now(timeout=30)
    assert p.callback_errors >= 1 and p.stats().dead_lettered == 1, p.stats()
    p.close()
    p.close()
    return "child-ok"
"""


def test_os_fork_child_gets_its_own_deliveries_and_closes_cleanly():
    # Before: in the child push_event returned True and nothing was delivered,
    # flush_now() hung, close() panicked with a Rust backtrace.
    proc = run_python(
        _FORK_CHILD
        + """
import os, threading
import engagehub as eh
got = []
p = eh.EventStreamProcessor(1024, 2, 10, 20)
p.set_flush_callback(lambda batch: got.extend(e["user_id"] for e in batch))
for i in range(30):
    p.push_event("m", f"parent{i}", "c", 0)
p.flush_now(timeout=30)
# A parent thread holds the dispatch lock across the fork.
held, release = threading.Event(), threading.Event()
def hold():
    with p._dispatch.lock:
        held.set()
        release.wait(30)
holder = threading.Thread(target=hold)
holder.start()
assert held.wait(30)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    try:
        result = child_work(p, got)
    except BaseException as exc:
        result = f"child-failed:{exc!r}"
    os.write(w, result.encode())
    os._exit(0)
os.close(w)
release.set()
holder.join(30)
chunks = []
while True:
    chunk = os.read(r, 4096)
    if not chunk:
        break
    chunks.append(chunk)
_, status = os.waitpid(pid, 0)
print(b"".join(chunks).decode(), os.waitstatus_to_exitcode(status))
# The parent is unaffected.
got.clear()
for i in range(30):
    p.push_event("m", f"again{i}", "c", 0)
p.flush_now(timeout=30)
assert sorted(got) == sorted(f"again{i}" for i in range(30)), got
assert p.stats().accepted == 60
p.close()
print("parent-ok")
""",
        timeout=180,
    )
    assert_clean(proc, "child-ok 0 parent-ok")


def test_multiprocessing_fork_context_child_gets_its_own_deliveries():
    proc = run_python(
        _FORK_CHILD
        + """
import multiprocessing as mp
import engagehub as eh
got = []
p = eh.EventStreamProcessor(1024, 2, 10, 20)
p.set_flush_callback(lambda batch: got.extend(e["user_id"] for e in batch))
p.push_event("m", "parent", "c", 0)
p.flush_now(timeout=30)

def target(queue):
    try:
        queue.put(child_work(p, got))
    except BaseException as exc:
        queue.put(f"child-failed:{exc!r}")

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(queue,))
    child.start()
    print(queue.get(timeout=60))
    child.join(60)
    assert not child.is_alive()
    print(child.exitcode)
    p.push_event("m", "parent2", "c", 0)
    p.flush_now(timeout=30)
    assert got == ["parent", "parent2"], got
    p.close()
    print("parent-ok")
""",
        timeout=180,
    )
    assert_clean(proc, "child-ok 0 parent-ok")


# -- audit item 5: flush_now(timeout=None) racing a close ---------------------------


def test_flush_now_without_timeout_ends_when_another_thread_closes():
    # Before: flush_now(None) retried forever when the flush raced the shutdown.
    # Now it returns (everything delivered) or raises Closed, promptly.
    for attempt in range(5):
        release = threading.Event()
        entered = threading.Event()

        def slow(batch):
            entered.set()
            release.wait(WAIT)

        p = eh.EventStreamProcessor(1024, 1, 10, 10)
        p.set_flush_callback(slow)
        for i in range(100):
            p.push_event("m", f"u{i}", "c", 0)
        outcome: list = []

        def flusher():
            try:
                p.flush_now()
                outcome.append("flushed")
            except eh.Closed:
                outcome.append("closed")

        assert entered.wait(WAIT)
        f = threading.Thread(target=flusher)
        f.start()
        closer = threading.Thread(target=p.close)
        closer.start()
        release.set()
        closer.join(WAIT)
        assert not closer.is_alive(), "close hung"
        f.join(WAIT)
        assert not f.is_alive(), "flush_now(None) did not end after the close"
        assert outcome in (["flushed"], ["closed"]), outcome
        assert p.closed


def test_calls_on_a_closed_processor_raise_closed_before_touching_cffi():
    p = eh.EventStreamProcessor(64, 1, 10, 20)
    p.close()
    p.close()
    assert repr(p) == "<engagehub.EventStreamProcessor closed>"
    for call in (
        lambda: p.push_event("m", "u", "c"),
        lambda: p.push_event("m", b"u", "c", 0, b"x"),
        lambda: p.push_many([("m", "u", "c")]),
        lambda: p.flush_now(),
        lambda: p.flush_now(1.0),
        lambda: p.stats(),
        lambda: p.set_flush_callback(print),
        lambda: p.set_dead_letter_callback(None),
        lambda: p.unique_users(),
        lambda: p.top_channels(),
        lambda: p.channel_count("c"),
        lambda: p.users_sketch(),
        lambda: p.now(),
    ):
        with pytest.raises(eh.Closed, match="processor is closed"):
            call()


# -- audit items 7 and 10 as Python sees them ---------------------------------------


def test_future_timestamps_and_overlong_windows_raise_invalid_argument():
    # Before: a year-3000 event was accepted (and under event time moved "now" for
    # good); unique_users(86400) on a 60-minute window answered for one hour.
    with eh.EventStreamProcessor(64, 1, 10, 20, clock="event_time", max_future_skew_secs=3600) as p:
        with pytest.raises(eh.InvalidArgument, match="max_future_skew"):
            p.push_event("m", "u", "c", 32_503_680_000)
        assert p.stats().future_refused == 1
        for call in (
            lambda: p.unique_users(86400),
            lambda: p.top_channels(5, window_secs=86400),
            lambda: p.users_sketch(86400),
        ):
            with pytest.raises(eh.InvalidArgument, match="longer than the configured window"):
                call()
        assert p.unique_users(3600) == 0
    with pytest.raises(eh.InvalidArgument):
        eh.EventStreamProcessor(max_future_skew_secs=0)
    with pytest.raises(eh.InvalidArgument):
        eh.EventStreamProcessor(max_future_skew_secs="1")


def test_threads_pushing_and_querying_while_another_closes_all_end_with_closed():
    # Every thread ends: its calls succeed until they raise Closed; every event a
    # push accepted is delivered by the close (none lost, none twice).
    p = eh.EventStreamProcessor(4096, 2, 50, 20)
    delivered: list = []
    p.set_flush_callback(lambda batch: delivered.extend(batch.user_ids), batch_format="columns")
    running = threading.Barrier(6)
    results: list = []
    accepted = [0] * 5

    def loop(slot: int, op) -> None:
        running.wait(WAIT)
        try:
            while True:
                accepted[slot] += op(slot)
        except eh.Closed:
            results.append("closed")
        except BaseException as exc:  # noqa: BLE001 - reported below
            results.append(repr(exc))

    ops = [
        lambda s: int(p.push_event("m", "a", "c", 0)),
        lambda s: int(p.push_event("m", b"b", "c", 0, b"payload")),
        lambda s: p.push_many([("m", "c", "c")] * 10),
        lambda s: p.stats() and 0,
        lambda s: p.unique_users(600) and 0,
    ]
    threads = [threading.Thread(target=loop, args=(i, op)) for i, op in enumerate(ops)]
    for t in threads:
        t.start()
    running.wait(WAIT)
    p.close()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive(), "a thread hung"
    assert results == ["closed"] * 5, results
    assert len(delivered) == sum(accepted)
    assert delivered.count("a") == accepted[0] and delivered.count("c") == accepted[2]
