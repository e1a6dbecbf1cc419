"""The daily history's Python side, shared by the processor and the shared readers:
the :class:`Cohort` type, day and period arguments, and cohorts built from counts.

Days are UTC calendar days; weeks start on Monday. A day is given as a
``datetime.date`` (a ``datetime`` counts as its UTC date) or an ISO
``"YYYY-MM-DD"`` string; the library works with day numbers (days since
1970-01-01).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, List, NamedTuple, Optional, Sequence

from . import errors

_EPOCH = _dt.date(1970, 1, 1)

#: ``active_users`` periods: the days counted, ending with the day asked about.
PERIODS = {"day": 1, "week": 7, "month": 30}
#: Retention cohort periods.
COHORT_PERIODS = ("day", "week")


class Cohort(NamedTuple):
    """One retention cohort: the users first seen in the period starting on
    ``start`` (a day, or a Monday for weekly cohorts), how many they are, and
    for each period from that one to the one holding "now" the fraction of them
    active in it (``retained[0] == 1.0``; all 0.0 for an empty cohort)."""

    start: _dt.date
    size: int
    retained: List[float]


def day_number(day: Any) -> int:
    """Days since 1970-01-01 of ``day`` (a ``date``, a ``datetime`` (its UTC date
    when it has a time zone), or ``"YYYY-MM-DD"``)."""
    if isinstance(day, _dt.datetime):
        if day.tzinfo is not None:
            day = day.astimezone(_dt.timezone.utc)
        day = day.date()
    elif isinstance(day, str):
        try:
            day = _dt.date.fromisoformat(day)
        except ValueError:
            raise errors.InvalidArgument(f"day must be a date or 'YYYY-MM-DD', got {day!r}", 1) from None
    elif not isinstance(day, _dt.date):
        raise errors.InvalidType(f"day must be a datetime.date or a 'YYYY-MM-DD' str, not {type(day).__name__}", 1)
    return (day - _EPOCH).days


def date_of(day: int) -> _dt.date:
    """The date of a day number."""
    return _EPOCH + _dt.timedelta(days=day)


def check_period(period: Any, allowed: Sequence[str]) -> str:
    if not isinstance(period, str) or period not in allowed:
        raise errors.InvalidArgument(f"period must be one of {', '.join(map(repr, allowed))}, got {period!r}", 1)
    return period


def check_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InvalidType(f"{what} must be an int, not {type(value).__name__}", 1)
    if value < 1:
        raise errors.InvalidArgument(f"{what} must be at least 1, got {value}", 1)
    return value


def check_now(now: Any) -> int:
    """``now`` as unix seconds, 0 for ``None`` (the clock of whoever answers)."""
    if now is None:
        return 0
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not 0 < now < 2**62:
        raise errors.InvalidArgument(f"now must be a positive unix time or None, got {now!r}", 1)
    return int(now)


def check_guild(guild_id: Any) -> Optional[str]:
    """``None`` (every event) or a guild id: a str, or an int (discord.py's
    ``guild.id``) as its decimal digits; an empty str means every event too."""
    if guild_id is None:
        return None
    if isinstance(guild_id, int) and not isinstance(guild_id, bool):
        return str(guild_id)
    if not isinstance(guild_id, str):
        raise errors.InvalidType(f"guild_id must be a str, an int or None, not {type(guild_id).__name__}", 1)
    return guild_id or None


def cohort(start_day: int, size: int, active: Sequence[int]) -> Cohort:
    """A :class:`Cohort` from its counts."""
    retained = [n / size if size else 0.0 for n in active]
    return Cohort(date_of(start_day), int(size), retained)


__all__ = ["Cohort"]
