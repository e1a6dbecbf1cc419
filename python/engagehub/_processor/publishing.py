"""``redis=``: the processor's analytics shared through Redis (docs/shared.md).

A background thread (:class:`engagehub.shared._publisher.Publisher`) publishes
what the workers sketched every ``publish_interval_ms``, exactly once; pushes,
queries and the constructor never touch Redis. The waits here are bounded:
``flush``/``close`` give Redis at most ``publish_timeout`` seconds, then log and
count what is missing, and the flush callback gets every event whatever Redis
does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional, Tuple

from .. import errors
from .._handle import NativeHandle
from .lifecycle import LIVE

log = logging.getLogger("engagehub")


class Publishing(NativeHandle):
    """The Redis publisher's wiring: started by the constructor, finished by
    :meth:`close`, waited for by :meth:`flush` and :meth:`publish_now`."""

    _publisher: Any
    """The :class:`~engagehub.shared._publisher.Publisher`, or None without ``redis=``."""
    _publish_timeout: float

    if TYPE_CHECKING:

        def _flush_blocking(self, timeout: Optional[float], publish: bool = True) -> None: ...

    def _start_publisher(
        self,
        client: Any,
        namespace: Optional[str],
        interval_ms: int,
        window_minutes: int,
        clock: str,
        max_members: int,
        timeout: Any,
        history_days: int = 0,
    ) -> None:
        """Starts publishing (the constructor's last step). On a refused argument
        the processor is closed before the error propagates."""
        from ..shared._publisher import Publisher, seconds_arg
        from ..shared._sources import AnalyticsSource

        try:
            if namespace is None:
                raise errors.InvalidArgument("redis= needs namespace=", 1)
            self._publish_timeout = seconds_arg(timeout, "publish_timeout")
            source = AnalyticsSource(
                self, namespace, window_minutes=window_minutes, event_time=clock == "event_time",
                max_members=max_members, history_days=history_days,
            )
            self._publisher = Publisher(source, client, interval_ms=interval_ms)
        except errors.EngageHubError:
            self._native_close(self._cdata)
            self._closed = True
            LIVE.discard(self)  # type: ignore[arg-type]  # a processor: it has what _Live names
            raise

    def _finish_publishing(self) -> None:
        """close()'s publishing half: deliver everything, then publish the rest to
        Redis within ``publish_timeout`` (the publisher logs what it could not)."""
        # Sliced, so Ctrl-C gets through; from our own callback WouldDeadlock is
        # raised here and the processor stays open.
        self._flush_blocking(None, publish=False)
        self._publisher.close(self._publish_timeout)

    def publish_now(self, timeout: Optional[float] = None) -> bool:
        """Waits until Redis holds everything this processor has processed (not
        what is still in the ring: :meth:`flush` first for that), for at most
        ``timeout`` seconds (``None``: ``publish_timeout``). True when it does;
        False when Redis did not acknowledge in time, or at once when Redis refused
        the batch because one of the namespace's keys is not engagehub's (logged,
        naming the key); the publisher keeps retrying either way. Raises
        :class:`~engagehub.InvalidArgument` when the namespace's stored
        configuration refuses this writer (also logged). Without ``redis=``: True."""
        self._h()
        if self._publisher is None:
            return True
        from ..shared._publisher import seconds_arg

        wait = self._publish_timeout if timeout is None else seconds_arg(timeout, "timeout")
        return bool(self._publisher.publish(wait))

    def _publish_within(self, wait: float, what: str) -> None:
        """flush's Redis half: waits up to ``wait`` s; logs, never raises."""
        try:
            if self._publisher.publish(wait):
                return
            error = self._publisher.counters.last_error
            reason = f"within {wait:g} s" + (f" (last error: {error})" if error else "")
        except errors.EngageHubError as exc:  # refused; the publisher logged it
            reason = f"(refused: {exc})"
        log.warning(
            "engagehub: %s delivered every event, but Redis did not acknowledge them %s; "
            "%d events wait for Redis (namespace %r), the publisher keeps retrying",
            what, reason, self._publisher.source.pending(), self._publisher.source.namespace,
        )

    @property
    def unpublished(self) -> int:
        """Events a :meth:`close` could not publish to Redis within
        ``publish_timeout`` (0 without ``redis=`` or when everything got there)."""
        return 0 if self._publisher is None else self._publisher.counters.unpublished_at_close

    def _publish_counters(self) -> Tuple[int, ...]:
        """The publisher's counters for :meth:`stats` (none without ``redis=``)."""
        publisher = self._publisher
        if publisher is None:
            return ()
        c, source = publisher.counters, publisher.source
        return (c.batches, c.failures, c.duplicates, source.lost_minutes, source.pending())


__all__ = ["Publishing"]
