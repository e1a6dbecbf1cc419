"""Smoke test of an installed engagehub wheel, run by scripts/wheel.sh test in a fresh
venv (from outside the source tree, so the installed package is the one imported).

Checks: the package comes from site-packages; the compiled cffi module is in use and
loads the engine from the libengagehub.so beside it (the engine is in the wheel once);
the fast module is in use exactly when the wheel ships one for this interpreter;
a processor delivers pushed events to a flush callback; a leaderboard ranks updates.
With ``--abi`` (run with ENGAGEHUB_ABI=1): the same through cffi's ABI mode.
Exits non-zero with a message on the first failed check.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import threading
import time
from pathlib import Path


def check(condition: bool, message: str) -> None:
    if not condition:
        print(f"wheel smoke test FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--abi", action="store_true", help="expect cffi's ABI mode (ENGAGEHUB_ABI=1)")
    args = parser.parse_args()

    import engagehub
    from engagehub import _compiled, _native, leaderboard, processor

    package = Path(engagehub.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    check(package.parent == site, f"engagehub imported from {package}, not from {site}")
    # libengagehub.so, or named by its SONAME: exactly one copy of the engine.
    libs = sorted(package.glob("libengagehub.so*"))
    check(len(libs) == 1, f"expected one libengagehub.so* in {package}, found {[p.name for p in libs]}")
    shipped_lib = libs[0]

    maps = Path("/proc/self/maps").read_text()
    if args.abi:
        check(_native.MODE == "abi", f"MODE is {_native.MODE!r}, expected 'abi'")
        check(Path(_native.LIBRARY_PATH).resolve() == shipped_lib, f"ABI mode loaded {_native.LIBRARY_PATH}")
    else:
        check(_native.MODE == "api", f"MODE is {_native.MODE!r}: the compiled cffi module did not load")
        check(Path(_native.LIBRARY_PATH).name.startswith("_engagehub_cffi"), f"loaded {_native.LIBRARY_PATH}")
    # Both modes: the engine comes from the shipped library (the cffi module links it).
    check(str(shipped_lib) in maps, f"{shipped_lib} is not mapped: where does the engine come from?")

    # The interpreter's own build, else (CPython 3.12+, not free-threaded) the
    # stable-ABI one, which the import system falls back to.
    fast_file = package / ("_engagehub_fast" + sysconfig.get_config_var("EXT_SUFFIX"))
    abi3_file = package / "_engagehub_fast.abi3.so"
    stable_abi = sys.version_info >= (3, 12) and not sysconfig.get_config_var("Py_GIL_DISABLED")
    if not fast_file.is_file() and stable_abi:
        fast_file = abi3_file
    expect_fast = fast_file.is_file()
    check(processor.FAST_PUSH == expect_fast, f"FAST_PUSH={processor.FAST_PUSH} but {fast_file.name} shipped: {expect_fast}")
    check(leaderboard.FAST_UPDATES == expect_fast, f"FAST_UPDATES={leaderboard.FAST_UPDATES}, shipped: {expect_fast}")
    if expect_fast:
        loaded = Path(_compiled.fast.__file__).resolve()
        check(loaded == fast_file.resolve(), f"the fast module loaded is {loaded}, expected {fast_file}")
        if stable_abi:
            check(fast_file == abi3_file, f"CPython {sys.version_info[0]}.{sys.version_info[1]} uses {fast_file.name}, not the abi3 module")

    now = int(time.time())
    received: list = []
    lock = threading.Lock()

    def sink(batch) -> None:
        with lock:
            received.extend(batch)

    proc = engagehub.EventStreamProcessor(buffer_size=1024, num_threads=1, batch_size=10, flush_interval_ms=50)
    try:
        proc.set_flush_callback(sink)
        for i in range(25):
            check(proc.push_event("message", f"user{i % 5}", "general", now) is True, f"push {i} refused")
        proc.flush_now(timeout=30)
        with lock:
            users = sorted({e["user_id"] for e in received})
            count = len(received)
        check(count == 25, f"{count} events delivered, expected 25")
        check(users == [f"user{i}" for i in range(5)], f"delivered users {users}")
    finally:
        proc.close()

    board = engagehub.Leaderboard(decay_factor=0.5, max_users=100)
    try:
        for user, points in (("alice", 5.0), ("bob", 10.0), ("carol", 1.0), ("alice", 7.0)):
            board.update_user(user, points, now)
        top = board.top(2, now=now)
        check([(r.user_id, r.rank) for r in top] == [("alice", 1), ("bob", 2)], f"top(2) = {top}")
        check(abs(top[0].score - 12.0) < 1e-9, f"alice's score {top[0].score}, expected 12")
    finally:
        board.close()

    print(
        f"wheel smoke test passed: Python {sys.version.split()[0]}, cffi {_native.MODE} mode, "
        f"fast module {fast_file.name + ' in use' if expect_fast else 'not shipped for this Python (cffi paths)'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
