"""Ctrl-C during blocking waits: flush_now(), close() and a push into a full ring
(push_event or push_many) under overflow="block" wait in native slices of 0.1 s, so SIGINT raises KeyboardInterrupt within half a second even while a flush
callback blocks. Each case runs in a child process (its worker stays blocked, so it
exits with os._exit); the parent sends SIGINT once a watcher thread in the child has
seen the main thread inside the wait, and measures how long the child takes to
report the KeyboardInterrupt."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

WAIT = 30.0
# The bound is half a second; the slack covers a loaded two-core machine.
BOUND = 0.5 + 1.0

CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import engagehub as eh

    # A child of a shell's background job starts with SIGINT ignored, and Python
    # then installs no handler: raise KeyboardInterrupt whatever we inherited.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    mode = sys.argv[1]
    never = threading.Event()
    started = threading.Event()

    def blocking_sink(batch):
        started.set()
        while not never.wait(0.05):  # blocks forever, in slices
            pass

    block = dict(overflow="block", block_timeout_ms=3_600_000) if mode.startswith("push") else {}
    p = eh.EventStreamProcessor(buffer_size=2, num_threads=1, batch_size=1, flush_interval_ms=10, **block)
    p.set_flush_callback(blocking_sink)
    p.push_event("message", "u1", "c", 1_700_000_000)
    if not started.wait(30):
        print("callback never started", flush=True)
        os._exit(2)

    main = threading.main_thread().ident
    # The pushes are C code (no frame of their own): the watcher looks for the
    # Python function that makes the call.
    wait_fn = {"flush": "_flush_blocking", "close": "_native_close"}.get(mode, "blocked_push")
    if mode.startswith("push"):
        # The worker holds the first event in its callback: fill the two slots.
        assert p.push_event("message", "u2", "c", 1_700_000_000)
        assert p.push_event("message", "u3", "c", 1_700_000_000)

    def watch():
        # Waits until the main thread is inside the blocking wait, then tells the
        # parent, which sends SIGINT.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main)
            while frame is not None:
                if frame.f_code.co_name == wait_fn:
                    print("waiting", flush=True)
                    return
                frame = frame.f_back
            never.wait(0.005)
        print("main thread never waited", flush=True)

    def blocked_push():  # BLOCK: the ring is full
        if mode == "push":
            p.push_event("message", "u4", "c", 1_700_000_000)
        else:
            p.push_many([("message", "u4", "c", 1_700_000_000), ("message", "u5", "c", 1_700_000_000)])

    threading.Thread(target=watch, daemon=True).start()
    try:
        if mode == "flush":
            p.flush_now()
        elif mode == "close":
            p.close()
        else:
            blocked_push()
        print("returned", flush=True)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    os._exit(0)  # the worker stays blocked in the callback: skip the exit-time close
    """
)


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return ""
    return proc.stdout.readline().strip()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("mode", ["flush", "close", "push", "push_many"])
def test_ctrl_c_interrupts_a_blocking_wait_promptly(mode):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert _readline(proc, WAIT) == "waiting"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        line = _readline(proc, WAIT)
        elapsed = time.monotonic() - sent
        assert line == "KeyboardInterrupt", line
        assert elapsed < BOUND, f"KeyboardInterrupt took {elapsed:.2f} s"
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _held_ring():
    """A processor under "block" (block_timeout_ms=250) whose one worker holds the
    first event in its callback: its two ring slots are free and nothing drains
    them until the block ends, which then delivers the rest."""
    import engagehub as eh

    release = threading.Event()
    started = threading.Event()

    def sink(batch):
        started.set()
        release.wait(WAIT)

    p = eh.EventStreamProcessor(
        buffer_size=2, num_threads=1, batch_size=1, flush_interval_ms=10, overflow="block", block_timeout_ms=250
    )
    assert type(p) is eh.EventStreamProcessor
    p.set_flush_callback(sink)
    try:
        assert p.push_event("message", "u1", "c", 1_700_000_000)
        assert started.wait(WAIT)
        yield p
    finally:
        release.set()
    p.flush_now(WAIT)


def test_sliced_block_push_gives_up_after_block_timeout_with_one_drop():
    with _held_ring() as p:
        assert p.push_many([("message", "u2", "c", 1_700_000_000), ("message", "u3", "c", 1_700_000_000)]) == 2
        t0 = time.monotonic()
        assert not p.push_event("message", "u4", "c", 1_700_000_000, payload=b"x")  # the Python path
        assert time.monotonic() - t0 >= 0.2, "it waited for room about block_timeout_ms"
        t0 = time.monotonic()
        assert not p.push_event("message", "u5", "c", 1_700_000_000)  # the compiled one
        assert time.monotonic() - t0 >= 0.2, "it waited for room about block_timeout_ms"
        s = p.stats()
        assert (s.pushed, s.accepted, s.dropped) == (5, 3, 2), "one drop each, no count per slice"
    assert p.stats().delivered == 3
    p.close()


def test_sliced_block_push_many_gives_up_after_block_timeout_counting_the_rest():
    with _held_ring() as p:
        t0 = time.monotonic()
        assert p.push_many([("message", f"u{i}", "c", 1_700_000_000) for i in range(5)]) == 2, "two free slots"
        assert time.monotonic() - t0 >= 0.2, "it waited for room about block_timeout_ms"
        s = p.stats()
        assert (s.pushed, s.accepted, s.dropped) == (6, 3, 3), "the rest dropped once, not per slice"
    assert p.stats().delivered == 3
    p.close()
