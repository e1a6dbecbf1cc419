"""HyperLogLog against a real Redis: the registers are Redis's, so counts, merges
and the bytes themselves agree with ``PFADD`` / ``PFCOUNT`` / ``PFMERGE``.

The server tests start their own ``redis-server`` (no persistence, no TCP port)
on a Unix socket in a temporary directory of their own, so test runs going on at
once never share a server, and are skipped, with the reason, when ``redis-server`` (on the
PATH, or ``$REDIS_SERVER``) or redis-py is missing. The corrupt-input tests need
neither.
"""

from __future__ import annotations

from typing import Iterator, List

import pytest
from redis_server import redis_url

from engagehub import Corrupt, HyperLogLog

try:
    import redis
except ImportError:  # pragma: no cover - depends on the environment
    redis = None

HEADER = 16
DENSE_LEN = 12304


@pytest.fixture(scope="module")
def r() -> Iterator["redis.Redis"]:
    with redis_url(pytest) as url:
        client = redis.Redis.from_url(url)
        try:
            yield client
        finally:
            client.close()


def ids(start: int, n: int) -> List[str]:
    """18-digit Discord-like ids."""
    return [str(100_000_000_000_000_000 + i * 7919) for i in range(start, start + n)]


def pfadd(r: "redis.Redis", key: str, items: List[str]) -> None:
    r.delete(key)
    pipe = r.pipeline(transaction=False)
    for i in range(0, len(items), 1000):
        pipe.pfadd(key, *items[i : i + 1000])
    pipe.execute()


def ours(items: List[str]) -> HyperLogLog:
    h = HyperLogLog()
    h.update(items)
    return h


@pytest.mark.parametrize(("n", "encoding"), [(100, 1), (50_000, 0)], ids=["sparse", "dense"])
def test_pfadd_key_reads_with_pfcounts_count(r, n, encoding):
    items = ids(n, n)
    pfadd(r, "built", items)
    value = r.get("built")
    assert value[:4] == b"HYLL" and value[4] == encoding
    h = HyperLogLog.from_redis(value)
    assert h.count() == r.pfcount("built")
    # The same registers as our own sketch of the same ids.
    mine = ours(items)
    assert h.to_redis()[HEADER:] == mine.to_redis()[HEADER:]
    assert mine.count() == r.pfcount("built")


def test_dense_get_bytes_equal_ours_but_the_cached_count(r):
    items = ids(7, 50_000)
    pfadd(r, "dense", items)
    r.pfcount("dense")  # Redis caches its count in bytes 8..16
    value = r.get("dense")
    mine = ours(items).to_redis()
    assert len(value) == len(mine) == DENSE_LEN
    assert value[:8] == mine[:8] == b"HYLL\x00\x00\x00\x00"
    assert value[HEADER:] == mine[HEADER:]
    assert mine[15] & 0x80, "ours is marked stale, so Redis recomputes"


@pytest.mark.parametrize("n", [0, 1, 100, 3000, 50_000])
def test_to_redis_bytes_count_the_same_under_pfcount(r, n):
    h = ours(ids(3 * n, n))
    r.set("mine", h.to_redis())
    assert r.pfcount("mine") == h.count()
    # Redis keeps using the key: PFADD more, and both sides still agree.
    extra = ids(10_000_000, 50)
    r.pfadd("mine", *extra)
    h.update(extra)
    assert r.pfcount("mine") == h.count()
    assert r.get("mine")[HEADER:] == h.to_redis()[HEADER:]


@pytest.mark.parametrize(("a_n", "b_n", "overlap"), [(100, 80, 30), (30_000, 40_000, 10_000)])
def test_pfmerge_with_a_redis_key_is_our_merge(r, a_n, b_n, overlap):
    a_ids = ids(0, a_n)
    b_ids = ids(a_n - overlap, b_n)
    pfadd(r, "a", a_ids)
    b = ours(b_ids)
    r.set("b", b.to_redis())
    r.delete("union")
    r.pfmerge("union", "a", "b")
    merged = HyperLogLog.from_redis(r.get("a"))
    merged.merge(b)
    assert r.pfcount("union") == merged.count()
    assert r.pfcount("a", "b") == merged.count()
    # Merging sketches is the sketch of the union of the ids.
    assert merged.count() == ours(a_ids + b_ids).count()
    assert HyperLogLog.from_redis(r.get("union")).to_redis()[HEADER:] == merged.to_redis()[HEADER:]


def _sparse(ops: bytes) -> bytes:
    return b"HYLL\x01\x00\x00\x00" + b"\x00" * 7 + b"\x80" + ops


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"", "truncated"),
        (b"HYLX" + bytes(DENSE_LEN - 4), "magic"),
        (b"HYLL\x02" + bytes(DENSE_LEN - 5), "unknown encoding 2"),
        (b"HYLL\x00" + bytes(DENSE_LEN - 6), "dense truncated"),
        (b"HYLL\x00" + bytes(DENSE_LEN - 4), "trailing"),
        (_sparse(b"\x7f\xff\x00"), "more than 16384"),  # XZERO 16384 then ZERO 1
        (_sparse(b"\x7f\xfe\x81"), "more than 16384"),  # XZERO 16383 then VAL run 2
        (_sparse(b"\x7f\xfe"), "cover 16383 of the 16384"),
        (_sparse(b"\x40"), "cut short"),
        (b"HYLL\x00" + bytes(11) + b"\x3f" + bytes(DENSE_LEN - HEADER - 1), "register 0 holds 63"),
    ],
    ids=[
        "empty",
        "magic",
        "encoding",
        "dense-short",
        "dense-long",
        "sparse-zero-overflow",
        "sparse-val-overflow",
        "sparse-short",
        "sparse-cut",
        "dense-value-out-of-range",
    ],
)
def test_corrupt_redis_values_raise_corrupt_and_change_nothing(data, what):
    before = ours(ids(0, 500))
    snapshot = before.to_bytes()
    with pytest.raises(Corrupt, match=what):
        HyperLogLog.from_redis(data)
    with pytest.raises(Corrupt):
        before.merge(HyperLogLog.from_redis(data))
    assert before.to_bytes() == snapshot


def test_old_format_version_is_refused_naming_it():
    data = bytearray(ours(ids(0, 10)).to_bytes())
    assert data[4] == 2
    data[4] = 1
    with pytest.raises(Corrupt, match="version 1"):
        HyperLogLog.from_bytes(bytes(data))
    back = HyperLogLog.from_bytes(ours(ids(0, 10)).to_bytes())
    assert back.count() == 10
