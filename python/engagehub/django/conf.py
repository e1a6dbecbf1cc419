"""The ``ENGAGEHUB`` setting and the shared clients it configures.

``settings.ENGAGEHUB`` is a dict, read (and checked) when the app is ready, and
again whenever a test overrides it (``override_settings``)::

    ENGAGEHUB = {
        "REDIS_URL": "redis://redis:6379/0",        # required
        "REDIS_OPTIONS": {"socket_timeout": 2},     # keyword arguments of from_url()
        "NAMESPACE": "guild-analytics",             # the analytics' namespace= of the writers
        "LEADERBOARD_KEY": "lb",                    # the leaderboard's key= of the writers
        "WINDOW_MINUTES": 60,                       # the longest window a query may ask for
        "CHECK_EVICTION": True,                     # warn unless Redis runs noeviction
    }

Nothing here touches the network: the redis-py clients connect on their first
command (a query of a view, a writer's first publish). The blocking client is one
per process (redis-py rebuilds its pool after a fork); the asyncio client is one per
event loop (a ``redis.asyncio`` client belongs to the loop it first ran on; Django
runs each async view of a WSGI server on a loop of its own).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any, Dict, NamedTuple, Optional, Tuple

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from ..shared import AsyncSharedAnalytics, AsyncSharedLeaderboard, SharedAnalytics, SharedLeaderboard

SETTING = "ENGAGEHUB"


class EngageHubSettings(NamedTuple):
    """``settings.ENGAGEHUB``, checked, with its defaults."""

    redis_url: str
    redis_options: Dict[str, Any]
    namespace: str = "engagehub"
    leaderboard_key: str = "leaderboard"
    window_minutes: int = 60
    check_eviction: bool = True


_KEYS = {
    "REDIS_URL": "redis_url",
    "REDIS_OPTIONS": "redis_options",
    "NAMESPACE": "namespace",
    "LEADERBOARD_KEY": "leaderboard_key",
    "WINDOW_MINUTES": "window_minutes",
    "CHECK_EVICTION": "check_eviction",
}


def read_settings() -> EngageHubSettings:
    """``settings.ENGAGEHUB`` checked: :class:`ImproperlyConfigured` names the
    entry at fault (an unknown key, a missing ``REDIS_URL``, a value of the wrong
    type)."""
    raw = getattr(django_settings, SETTING, None)
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(
            f"settings.{SETTING} must be a dict with at least REDIS_URL (the engagehub.django app), "
            f"not {type(raw).__name__}"
        )
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ImproperlyConfigured(f"settings.{SETTING} has unknown keys {unknown}; known: {sorted(_KEYS)}")
    values = {_KEYS[k]: v for k, v in raw.items()}
    values.setdefault("redis_options", {})
    checks = (
        ("REDIS_URL", "redis_url", str, lambda v: bool(v), "a non-empty str"),
        ("REDIS_OPTIONS", "redis_options", dict, lambda v: all(isinstance(k, str) for k in v), "a dict"),
        ("NAMESPACE", "namespace", str, lambda v: bool(v) and "{" not in v and "}" not in v,
         "a non-empty str without braces"),
        ("LEADERBOARD_KEY", "leaderboard_key", str, lambda v: bool(v), "a non-empty str"),
        ("WINDOW_MINUTES", "window_minutes", int, lambda v: v > 0 and not isinstance(v, bool), "a positive int"),
        ("CHECK_EVICTION", "check_eviction", bool, lambda v: True, "a bool"),
    )
    if "redis_url" not in values:
        raise ImproperlyConfigured(f"settings.{SETTING} needs REDIS_URL (e.g. 'redis://localhost:6379/0')")
    for key, field, kind, ok, what in checks:
        if field in values and not (isinstance(values[field], kind) and ok(values[field])):
            raise ImproperlyConfigured(f"settings.{SETTING}[{key!r}] must be {what}, got {values[field]!r}")
    return EngageHubSettings(**values)


class _State:
    """What the settings built (rebuilt when they change)."""

    def __init__(self, config: EngageHubSettings) -> None:
        import redis

        self.config = config
        # redis-py's from_url connects on the first command, not here.
        self.client = redis.Redis.from_url(config.redis_url, **config.redis_options)
        self.analytics = SharedAnalytics(self.client, config.namespace, config.window_minutes,
                                         check_eviction=config.check_eviction)
        self.leaderboards: Dict[str, SharedLeaderboard] = {}
        self.by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Tuple[Any, AsyncSharedAnalytics, Dict[str, AsyncSharedLeaderboard]]]" = (  # noqa: E501
            weakref.WeakKeyDictionary()
        )


_LOCK = threading.RLock()
_STATE: Optional[_State] = None


def configure() -> EngageHubSettings:
    """(Re)builds the clients and readers from the settings (the app's
    ``ready()``; no network I/O). Returns the settings."""
    global _STATE
    config = read_settings()
    with _LOCK:
        _STATE = _State(config)
    return config


def reset() -> None:
    """Forgets the clients: the next use builds them from the settings again."""
    global _STATE
    with _LOCK:
        _STATE = None


def state() -> _State:
    current = _STATE
    if current is None:
        with _LOCK:
            if _STATE is None:
                configure()
            current = _STATE
    assert current is not None
    return current


def for_loop() -> Tuple[Any, AsyncSharedAnalytics, Dict[str, AsyncSharedLeaderboard]]:
    """The asyncio client and readers of the running event loop (made on first use
    in that loop)."""
    loop = asyncio.get_running_loop()
    current = state()
    with _LOCK:
        found = current.by_loop.get(loop)
        if found is None:
            import redis.asyncio

            config = current.config
            client = redis.asyncio.Redis.from_url(config.redis_url, **config.redis_options)
            analytics = AsyncSharedAnalytics(client, config.namespace, config.window_minutes,
                                             check_eviction=config.check_eviction)
            found = current.by_loop[loop] = (client, analytics, {})
        return found
