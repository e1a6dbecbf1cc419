"""Shared analytics and leaderboards on a real Redis Cluster (issue 12: every key
of a namespace carries the hash tag ``{ns}``, so the scripts and multi-key
commands work on a cluster).

A module fixture starts three ``redis-server`` processes in cluster mode on random
loopback ports, each accepted only once it is our own process
(redis_server.py's ``TcpRedisServer``), joins them with
``redis-cli --cluster create`` (no replicas) and waits for ``cluster_state:ok`` on
every node. Everything then goes through ``redis.cluster.RedisCluster``:

- processors publishing analytics and leaderboards publishing, each with two
  namespaces/keys whose slots belong to different nodes (checked with CLUSTER
  KEYSLOT, the client's slot map, and by listing each node's own keys), read back
  by SharedAnalytics / SharedLeaderboard, equal in-process objects fed the same
  events / updates (the single-node tests' checks);
- the exactly-once scheme: a reply lost after the script ran (DEBUG SLEEP on the
  node owning the slot) is retried and not applied twice;
- the eviction-policy rule reads every node, not just one.

Skipped, saying why, without redis-server / redis-cli / redis-py, unless
``EH_REQUIRE_REDIS=1`` (CI), which makes that a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from typing import Any, Dict, Iterator, List

import pytest

REQUIRE = os.environ.get("EH_REQUIRE_REDIS") == "1"


def _missing(why: str) -> None:
    if REQUIRE:
        pytest.fail(f"{why}, and EH_REQUIRE_REDIS=1", pytrace=False)
    pytest.skip(why, allow_module_level=True)


try:
    import redis
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry
except ImportError:  # pragma: no cover - depends on the environment
    _missing("redis-py is not installed (pip install 'engagehub[redis]')")

from engagehub import EventStreamProcessor, Leaderboard  # noqa: E402
from engagehub.shared import SharedAnalytics, SharedLeaderboard  # noqa: E402
from engagehub.shared.leaderboard import keys_of  # noqa: E402

# The single-node tests' server helper, workloads and checks.
from redis_server import TcpRedisServer, wait_until  # noqa: E402
from test_shared_analytics import HOUR0, events  # noqa: E402
from test_shared_analytics import eviction_checkers, eviction_warnings  # noqa: E402
from test_shared_analytics import assert_same as assert_same_analytics  # noqa: E402
from test_shared_analytics import reference as reference_processor  # noqa: E402
from test_shared_leaderboard import FAST, NOW, WAIT, workload  # noqa: E402
from test_shared_leaderboard import assert_same as assert_same_board  # noqa: E402
from test_shared_leaderboard import reference as reference_board  # noqa: E402

NODES = 3


# -- the cluster -------------------------------------------------------------------


def _cluster_ok(port: int) -> bool:
    try:
        info = redis.Redis(port=port, socket_timeout=1, decode_responses=True).execute_command("CLUSTER", "INFO")
    except redis.RedisError:
        return False
    if isinstance(info, dict):
        return info.get("cluster_state") == "ok"
    return "cluster_state:ok" in info


class Cluster:
    def __init__(self, servers: List[TcpRedisServer]) -> None:
        self.servers = servers
        self.ports = [s.port for s in servers]
        self._clients: List[Any] = []

    def client(self, **kwargs: Any) -> "RedisCluster":
        c = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.ports], **kwargs)
        self._clients.append(c)
        return c

    def node(self, port: int, **kwargs: Any) -> "redis.Redis":
        """A plain client of one node (sees only that node's keys)."""
        c = redis.Redis(port=port, **kwargs)
        self._clients.append(c)
        return c

    def keys_on(self, port: int) -> List[str]:
        return sorted(k.decode() for k in self.node(port).keys("*"))

    def names_on_distinct_nodes(self, client: Any, prefix: str, n: int) -> Dict[str, int]:
        """``n`` names ``prefix-<i>`` whose hash tag ``{name}`` hashes to slots of
        ``n`` different nodes: name -> port of the node owning its slot."""
        chosen: Dict[int, str] = {}
        for i in range(1000):
            name = f"{prefix}-{i}"
            slot = client.keyslot("{" + name + "}")
            assert client.cluster_keyslot("{" + name + "}:anything") == slot  # the server agrees
            port = client.nodes_manager.get_node_from_slot(slot).port
            chosen.setdefault(port, name)
            if len(chosen) == n:
                break
        assert len(chosen) == n, chosen
        return {name: port for port, name in chosen.items()}

    def assert_placed(self, client: Any, names: Dict[str, int]) -> None:
        """Every key of each name carries its hash tag, sits in the tag's slot and
        is on the node owning that slot, and on no other."""
        for name, port in names.items():
            tag = "{" + name + "}"
            slot = client.keyslot(tag)
            for p in self.ports:
                mine = [k for k in self.keys_on(p) if name in k]
                if p != port:
                    assert mine == [], (name, p, mine)
                    continue
                assert mine, (name, p)
                for k in mine:
                    assert k.startswith(tag + ":"), k
                    assert client.cluster_keyslot(k) == slot, k

    def close(self) -> None:
        for c in self._clients:
            c.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    cli = os.environ.get("REDIS_CLI") or shutil.which("redis-cli")
    if not (binary and os.path.exists(binary) and cli and os.path.exists(cli)):
        _missing("needs redis-server and redis-cli (Debian's redis-server package) to start a Redis Cluster")
    servers: List[TcpRedisServer] = []
    made = None
    try:
        for _ in range(NODES):
            # The bus port is given (default: port + 10000, which can exceed 65535).
            extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-port", "{bus}", "--appendfsync", "everysec"]
            servers.append(TcpRedisServer(binary, extra).start())
        create = subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{s.port}" for s in servers],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        assert create.returncode == 0, create.stdout + create.stderr
        wait_until(lambda: all(_cluster_ok(s.port) for s in servers), 30, "cluster_state:ok on every node")
        made = Cluster(servers)
        yield made
    finally:
        if made is not None:
            made.close()
        for s in servers:
            s.close()


@pytest.fixture
def closing() -> Iterator[Any]:
    """``closing(obj)`` returns ``obj`` and closes it after the test, also when the
    test fails (its publisher thread would otherwise outlive the cluster)."""
    with contextlib.ExitStack() as stack:

        def close_later(obj: Any) -> Any:
            stack.callback(obj.close)
            return obj

        yield close_later


# -- tests -------------------------------------------------------------------------


def test_analytics_of_namespaces_on_different_nodes_equal_one_processor(cluster: Cluster, closing: Any) -> None:
    client = cluster.client()
    namespaces = cluster.names_on_distinct_nodes(client, "an", 2)
    assert len(set(namespaces.values())) == 2
    refs = {}
    for seed, ns in enumerate(namespaces, start=20):
        evs = events(6000, seed=seed)
        writers = [
            closing(EventStreamProcessor(
                clock="event_time", buffer_size=8192, redis=client, namespace=ns, publish_interval_ms=20
            ))
            for _ in range(2)
        ]
        parts = [evs[0::2], evs[1::2]]
        for i in range(0, len(parts[0]), 250):  # the writers take turns, publishing as they go
            for w, part in zip(writers, parts):
                assert w.push_many(part[i : i + 250]) == len(part[i : i + 250])
        for w in writers:
            w.flush_now(timeout=WAIT)
            s = w.stats()
            assert s.publish_failures == 0 and s.publish_pending_events == 0 and s.published_batches > 0, s
            w.close()
        refs[ns] = closing(reference_processor(evs))

    text = cluster.client(decode_responses=True)
    for ns, ref in refs.items():
        assert_same_analytics(SharedAnalytics(client, ns), ref)
        assert_same_analytics(SharedAnalytics(text, ns), ref)
        shared = SharedAnalytics(client, ns).users_sketch(3600, ref.now())
        assert shared.to_redis()[16:] == ref.users_sketch(3600).to_redis()[16:]  # the registers
        assert 0 < client.ttl(f"{{{ns}}}:uu:{HOUR0}") <= 60 * 60 + 600
        assert client.ttl(f"{{{ns}}}:uu:all") == -1
        ref.close()
    a, b = refs
    assert SharedAnalytics(client, a).total_events_processed() == 6000  # not mixed up with b's
    cluster.assert_placed(client, namespaces)


def test_leaderboards_on_different_nodes_equal_one_board(cluster: Cluster, closing: Any) -> None:
    client = cluster.client()
    keys = cluster.names_on_distinct_nodes(client, "lb", 2)
    text = cluster.client(decode_responses=True)
    for seed, key in enumerate(keys, start=30):
        all_updates = workload(seed, per_writer=1500)
        boards = [closing(Leaderboard(max_users=0, redis=client, key=key, publish_interval_ms=20, close_timeout=5,
                                      **FAST)) for _ in all_updates]
        for i, rows in enumerate(zip(*all_updates)):  # the writers take turns
            for board, (user, points, ts) in zip(boards, rows):
                board.update_user(user, points, ts)
            # An early landmark in Redis first, so later batches rebase the shared set.
            if i == 29 or i % 500 == 499:
                assert all(board.publish_now(timeout=WAIT) for board in boards)
        ref = reference_board(all_updates, **FAST)
        for board in boards:
            assert board.publish_now(timeout=WAIT)
            assert board.stats().publish_failures == 0
        assert int(client.hget(keys_of(key)[1], "rebases") or 0) >= 1, "the shared set rebased"
        assert_same_board(SharedLeaderboard(client, key), ref, now=NOW)
        assert_same_board(SharedLeaderboard(text, key), ref, now=NOW)
        # set and remove propagate, from different writers.
        top = ref.top(3, now=NOW)
        for board in (boards[1], ref):
            board.set(top[2].user_id, 1e6, NOW)
        for board in (boards[2], ref):
            board.remove(top[0].user_id)
        for board in boards:
            board.close()
        assert_same_board(SharedLeaderboard(client, key), ref, now=NOW)
        assert SharedLeaderboard(client, key).get_user_rank(top[0].user_id) is None
        assert [k for k in client.scan_iter(match="{" + key + "}:pub:*")] == [], "closed writers leave no key"
    cluster.assert_placed(client, keys)


def _asleep(cluster: Cluster, port: int) -> bool:
    try:
        cluster.node(port, socket_timeout=0.05, retry=Retry(NoBackoff(), 0)).ping()
        return False
    except redis.TimeoutError:
        return True


def test_analytics_reply_lost_on_a_cluster_node_is_not_counted_twice(cluster: Cluster, closing: Any) -> None:
    probe = cluster.client()
    (ns, port), = cluster.names_on_distinct_nodes(probe, "once", 1).items()
    client = cluster.client(socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
    evs = events(2000, seed=9)
    processor = closing(EventStreamProcessor(
        clock="event_time", buffer_size=4096, redis=client, namespace=ns, publish_interval_ms=3_600_000
    ))
    processor.push_many(evs[:1000])
    processor.flush_now(timeout=WAIT)  # the script is loaded; the next publish is one EVALSHA
    processor.push_many(evs[1000:])
    sleeper = threading.Thread(
        target=lambda: cluster.node(port).execute_command("DEBUG", "SLEEP", "1.5"), daemon=True
    )
    sleeper.start()
    wait_until(lambda: _asleep(cluster, port), 5, "DEBUG SLEEP to block the namespace's node")
    processor.flush_now(timeout=WAIT)  # times out at least once, then retries the same batch
    sleeper.join(10)
    s = processor.stats()
    assert s.publish_failures >= 1, s
    assert s.publish_duplicates >= 1, s  # a retry found its batch already applied
    processor.close()
    ref = reference_processor(evs)
    assert_same_analytics(SharedAnalytics(probe, ns), ref)
    ref.close()


def test_leaderboard_reply_lost_on_a_cluster_node_is_not_applied_twice(cluster: Cluster, closing: Any) -> None:
    probe = cluster.client()
    (key, port), = cluster.names_on_distinct_nodes(probe, "once-lb", 1).items()
    client = cluster.client(socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    lb = closing(Leaderboard(redis=client, key=key, decay_factor=1.0, publish_interval_ms=3_600_000, close_timeout=5))
    lb.update_user("a", 5, NOW)
    assert lb.publish_now(timeout=WAIT)
    lb.update_user("a", 7, NOW)
    blocker = cluster.node(port)
    conn = blocker.connection_pool.get_connection()
    conn.send_command("DEBUG", "SLEEP", "2")  # the reply is not read
    try:
        wait_until(lambda: _asleep(cluster, port), 5, "DEBUG SLEEP to start")
        # The script is sent, the client times out; the node runs it when it wakes.
        assert not lb.publish_now(timeout=0.2)
        wait_until(lambda: lb.stats().publish_failures >= 1, 5, "the publisher's call to time out")
        assert lb.publish_now(timeout=WAIT), "the retry succeeds once the node answers"
    finally:
        conn.read_response()
        blocker.connection_pool.release(conn)
    stats = lb.stats()
    assert stats.publish_duplicates == 1, stats
    assert SharedLeaderboard(probe, key).rank("a", now=NOW).score == 12.0
    lb.close()


def test_eviction_policy_is_read_on_every_node(cluster: Cluster, caplog: Any) -> None:
    client = cluster.client()
    default = client.get_default_node()
    others = [n for n in client.get_nodes() if n.name != default.name]
    assert len(others) == NODES - 1
    makers = eviction_checkers(client, "evict")

    def warnings_of(make: Any) -> List[str]:
        said, logged = eviction_warnings(caplog, make)
        assert len(said) == len(logged), (said, logged)
        return said

    for what, make in makers.items():
        assert warnings_of(make) == [], what  # noeviction everywhere: silent
    # The nodes the client does not send keyless commands to evict; the default one does not.
    policies = dict(zip((n.name for n in others), ("volatile-lru", "allkeys-lru")))
    for n in others:
        client.config_set("maxmemory-policy", policies[n.name], target_nodes=n)
    try:
        for what, make in makers.items():
            said = warnings_of(make)
            assert len(said) == 1, (what, said)
            # One warning: the riskier policy's consequences, every node at fault.
            assert "runs maxmemory-policy allkeys-lru" in said[0] and "any key may be evicted" in said[0], said
            assert all(f"{name} {p}" in said[0] for name, p in policies.items()), (what, said)
            assert default.name not in said[0] and "noeviction" in said[0], (what, said)
    finally:
        for n in others:
            client.config_set("maxmemory-policy", "noeviction", target_nodes=n)
