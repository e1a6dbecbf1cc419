"""The readers' one way to call Redis: the eviction-policy check on first use, our
scripts, and errors that name the key at fault.

A reply that shows a key is not what the schema says (a key of another type, a
string that is not a HyperLogLog or an integer, a script's ``ENGAGEHUB corrupt:``
refusal) raises :class:`~engagehub.Corrupt` with a message naming the key. Every
other error is redis-py's own, unchanged: ``redis.ConnectionError`` and
``redis.TimeoutError`` (Redis down or slow: bound them with the client's
``socket_timeout``), ``redis.ResponseError`` for anything else Redis refuses
(permissions, a read-only replica...).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from .. import errors
from ._publisher import check_eviction_policy, refusal, run_script

#: What each expectation means as a Redis type.
_TYPES = {"a HyperLogLog": "string", "an integer": "string", "a hash": "hash", "a sorted set": "zset"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Reads:
    """Calls for one reader (see the module docs)."""

    def __init__(self, client: Any, label: str, check_eviction: bool) -> None:
        self.client = client
        self.label = label
        self._check_eviction = check_eviction
        self._scripts: Dict[str, str] = {}

    def _first_use(self) -> None:
        if self._check_eviction:
            self._check_eviction = False
            check_eviction_policy(self.client, self.label)

    def call(self, keys: List[str], expected: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, which reads ``keys`` (each ``expected``: see ``_TYPES``)."""
        self._first_use()
        try:
            return fn()
        except Exception as exc:
            corrupt = self._diagnose(exc, keys, expected)
            if corrupt is None:
                raise
            raise corrupt from None

    def script(self, script: str, keys: List[str], args: List[Any]) -> Any:
        """One of ``_schema``'s read scripts (they check the keys' types first)."""
        self._first_use()
        try:
            return run_script(self.client, self._scripts, script, keys, args)
        except Exception as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            raise refused from None

    def integer(self, key: str, fn: Callable[[], Any], holder: str = "an integer") -> Optional[int]:
        """The integer ``fn()`` reads from ``key`` (a string; ``holder="a hash"``
        for a hash field); ``None`` when absent."""
        value = self.call([key], holder, fn)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            shown = _text(value)[:40]
            raise errors.Corrupt(f"{key} holds {shown!r}, not an integer", errors.Corrupt.status) from None

    def _diagnose(self, exc: BaseException, keys: List[str], expected: str) -> Optional[errors.Corrupt]:
        """The :class:`~engagehub.Corrupt` for a reply that refused the keys' content
        (found by asking Redis which key is at fault), or ``None``."""
        try:
            from redis.exceptions import ResponseError
        except ImportError:  # pragma: no cover - a client without redis-py
            return None
        if not isinstance(exc, ResponseError):
            return None
        want = _TYPES[expected]
        try:
            for key in keys:
                kind = _text(self.client.type(key))
                if kind == "none":
                    continue
                if kind != want:
                    return errors.Corrupt(f"{key} holds a {kind}, not {expected} ({exc})", errors.Corrupt.status)
                if expected == "a HyperLogLog" and bytes(self.client.getrange(key, 0, 3)) != b"HYLL":
                    return errors.Corrupt(f"{key} is not a valid HyperLogLog ({exc})", errors.Corrupt.status)
            if expected == "a HyperLogLog":
                # A valid header over a corrupt body: count each key alone to find it.
                for key in keys:
                    try:
                        self.client.pfcount(key)
                    except ResponseError as alone:
                        return errors.Corrupt(f"{key} is not a valid HyperLogLog ({alone})", errors.Corrupt.status)
        except Exception:  # noqa: BLE001 - the diagnosis is best effort: keep the original error
            return None
        return None
