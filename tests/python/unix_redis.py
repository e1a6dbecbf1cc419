"""A redis-server of a test's own: no TCP port (``--port 0``), a Unix socket in a
directory only that test uses, so tests running at once (in this run or another)
can never reach, share or stop each other's server."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest


def server_binary() -> str:
    """``$REDIS_SERVER`` or redis-server on the PATH; skips the test without one."""
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed (set REDIS_SERVER or install redis)")
    return binary


@contextlib.contextmanager
def unix_socket_redis(directory: Path) -> Iterator[str]:
    """Starts redis-server (no persistence) on ``directory``/redis.sock and yields
    its URL (``unix://...?db=0``) once it answers PING; stops it on exit."""
    redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install 'engagehub[redis]')")
    binary = server_binary()
    sock = directory / "redis.sock"
    url = f"unix://{sock}?db=0"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--dir", str(directory), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis.from_url(url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, f"redis-server exited at start with status {proc.returncode}"
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer within 10 s"
            time.sleep(0.02)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
