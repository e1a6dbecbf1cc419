"""Ctrl-C during blocking waits: flush_now() and close() wait in native slices of
0.1 s, so SIGINT raises KeyboardInterrupt within half a second even while a flush
callback blocks. Each case runs in a child process (its worker stays blocked, so it
exits with os._exit); the parent sends SIGINT once a watcher thread in the child has
seen the main thread inside the wait, and measures how long the child takes to
report the KeyboardInterrupt."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

WAIT = 30.0
# The bound is half a second; the slack covers a loaded two-core machine.
BOUND = 0.5 + 1.0

CHILD = textwrap.dedent(
    """
    import os, sys, threading, time
    import engagehub as eh

    mode = sys.argv[1]
    never = threading.Event()
    started = threading.Event()

    def blocking_sink(batch):
        started.set()
        while not never.wait(0.05):  # blocks forever, in slices
            pass

    p = eh.EventStreamProcessor(buffer_size=16, num_threads=1, batch_size=1, flush_interval_ms=10)
    p.set_flush_callback(blocking_sink)
    p.push_event("message", "u1", "c", 1_700_000_000)
    if not started.wait(30):
        print("callback never started", flush=True)
        os._exit(2)

    main = threading.main_thread().ident
    wait_fn = {"flush": "_flush_blocking", "close": "_native_close"}[mode]

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

    threading.Thread(target=watch, daemon=True).start()
    try:
        if mode == "flush":
            p.flush_now()
        else:
            p.close()
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
@pytest.mark.parametrize("mode", ["flush", "close"])
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
