"""Private redis-servers for the tests: each on a unix socket in its own temporary
directory, so two tests (or two test runs) can never share, or kill, each other's
server. A server can be stopped and restarted with its data (AOF), killed, or
stalled with SIGSTOP, as the fault tests need.

``server_binary()`` is ``$REDIS_SERVER``, else ``redis-server`` on the PATH, else
``None`` (the caller skips; with ``EH_REQUIRE_REDIS=1`` it fails instead).
``redis_url(pytest)`` is the short form for a test that only needs a URL: a server
without persistence for the ``with`` block.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Callable, Iterator, List, Optional, Sequence

WAIT = 30.0  # the longest any single wait of the tests may take


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Polls ``predicate`` until it returns something true; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def server_binary() -> Optional[str]:
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if binary is None and os.path.exists("/usr/bin/redis-server"):
        binary = "/usr/bin/redis-server"
    return binary


def require_server(pytest: Any) -> str:
    """The binary, or skips the caller (fails with ``EH_REQUIRE_REDIS=1``)."""
    binary = server_binary()
    if binary is None:
        if os.environ.get("EH_REQUIRE_REDIS") == "1":
            pytest.fail("EH_REQUIRE_REDIS=1 but no redis-server (set REDIS_SERVER)")
        pytest.skip("no redis-server on the PATH (set REDIS_SERVER)")
    return binary


class RedisServer:
    """A redis-server of our own on a unix socket (AOF on, fsync always, DEBUG
    allowed; ``persistent=False``: no AOF). ``extra_args`` come after ours (a later
    option wins)."""

    def __init__(
        self, binary: Optional[str] = None, extra_args: Sequence[str] = (), *, persistent: bool = True
    ) -> None:
        self.binary = binary or server_binary() or "redis-server"
        self.dir = tempfile.mkdtemp(prefix="eh-redis-")
        self.socket = os.path.join(self.dir, "redis.sock")
        self.url = f"unix://{self.socket}"
        self.extra_args: List[str] = ([] if persistent else ["--appendonly", "no"]) + list(extra_args)
        self.proc: Optional[subprocess.Popen] = None

    def client(self, **kwargs: Any) -> Any:
        import redis

        return redis.Redis(unix_socket_path=self.socket, **kwargs)

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
                "--dir", self.dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--enable-debug-command", "local", *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        probe = self.client(socket_timeout=1)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError("redis-server exited at start")
            try:
                return bool(probe.ping())
            except (redis.ConnectionError, redis.TimeoutError):
                return False

        wait_until(up, what="redis-server to answer")
        probe.close()
        return self

    def stop(self) -> None:
        """SIGTERM: Redis fsyncs its AOF and exits; ``start()`` brings the data back."""
        assert self.proc is not None
        self.resume()
        self.proc.terminate()
        self.proc.wait(WAIT)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: what the AOF (fsync always) holds survives a ``start()``."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(WAIT)
        self.proc = None

    def stall(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait(WAIT)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def redis_url(pytest: Any) -> Iterator[str]:
    """The URL (``unix://...``) of a redis-server of the caller's own, without
    persistence, for the ``with`` block; skips the caller without redis-py or
    redis-server (see :func:`require_server`)."""
    pytest.importorskip("redis", reason="redis-py is not installed (pip install 'engagehub[redis]')")
    with RedisServer(require_server(pytest), persistent=False) as server:
        yield server.url


class TcpRedisServer(RedisServer):
    """A redis-server on a loopback TCP port, for what cannot use a unix socket
    (Redis Cluster nodes: the cluster announces host:port to its clients). The port
    is picked at random and the server accepted only once ``INFO server`` names our
    own process: a port another server took in the meantime makes this one exit
    (it cannot bind) and another port is tried, so two tests never share a server.
    ``extra_args`` may contain ``{bus}``, replaced by a second random port."""

    PORTS = range(20000, 60000)

    def __init__(self, binary: Optional[str] = None, extra_args: Sequence[str] = ()) -> None:
        super().__init__(binary, extra_args)
        self.port = 0

    def client(self, **kwargs: Any) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def start(self) -> "TcpRedisServer":
        import random

        import redis

        rng = random.Random()
        for _ in range(50):
            port, bus = rng.sample(self.PORTS, 2)
            args = [a.replace("{bus}", str(bus)) for a in self.extra_args]
            proc = subprocess.Popen(
                [
                    self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
                    "--appendonly", "yes", "--appendfsync", "always", "--enable-debug-command", "local", *args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            probe = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)

            def ours() -> Optional[bool]:
                if proc.poll() is not None:
                    return None  # it could not bind: the port is taken
                try:
                    return int(probe.info("server")["process_id"]) == proc.pid or None
                except (redis.ConnectionError, redis.TimeoutError):
                    return False

            deadline = time.monotonic() + WAIT
            state: Optional[bool] = False
            while state is False and time.monotonic() < deadline:
                state = ours()
                if state is False:
                    time.sleep(0.01)
            probe.close()
            if state:
                self.proc, self.port = proc, port
                self.url = f"redis://127.0.0.1:{port}/0"
                return self
            if proc.poll() is None:
                proc.kill()
            proc.wait(WAIT)
        raise AssertionError("could not start redis-server on a free port in 50 tries")


class LosingReplies:
    """A redis-py client whose next ``lose`` script calls reach Redis and run, but
    whose replies are "lost": the call raises ``redis.ConnectionError`` after the
    script ran, exactly what a connection dropped after the request was sent looks
    like to the caller. Everything else goes to the real client."""

    def __init__(self, client: Any, lose: int = 1) -> None:
        self._client = client
        self.lose = lose
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _maybe_lose(self, reply: Any) -> Any:
        if self.lose > 0:
            import redis

            self.lose -= 1
            self.lost += 1
            raise redis.ConnectionError("reply lost (test)")
        return reply

    def evalsha(self, *args: Any) -> Any:
        return self._maybe_lose(self._client.evalsha(*args))

    def eval(self, *args: Any) -> Any:
        return self._maybe_lose(self._client.eval(*args))
