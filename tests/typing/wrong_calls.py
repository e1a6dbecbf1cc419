"""Calls a type checker must refuse, each marked with the mypy error code it must
produce (``# E: code``); unmarked lines must pass. Never run: ``make typecheck``
(tests/typing/check_types.py) checks it with ``mypy --strict``."""

from typing import Any

from engagehub import EventColumns, EventDict, EventStreamProcessor, GuildLeaderboards, HyperLogLog, Leaderboard
from engagehub.shared import AsyncSharedAnalytics, AsyncSharedLeaderboard, SharedAnalytics, SharedLeaderboard

p = EventStreamProcessor(num_threads=0)
board = Leaderboard()

# push_event: three ids (str or bytes), a timestamp (int, float or None), bytes payload.
p.push_event("message", "u1", "c1", 1_700_000_000)
p.push_event(1, 2, 3, "x")  # E: arg-type
p.push_event("message", "u1")  # E: call-arg
p.push_event("message", "u1", "c1", payload="text")  # E: arg-type
p.push_event("message", "u1", "c1", 1_700_000_000, b"", 3)  # a guild (int: its digits)
p.push_event("message", "u1", "c1", guild_id=1.5)  # E: arg-type
p.push_event("message", "u1", "c1", 1_700_000_000, b"", 3, 4)  # E: call-arg
accepted: str = p.push_event("message", "u1", "c1")  # E: assignment

# push_many: 3-, 4- or 5-tuples (the fifth: a guild), or event dicts.
p.push_many([("message", "u1", "c1", 1_700_000_000, "guild-1"), ("message", "u2", "c1", None, 42)])
p.push_many([("message", "u1", "c1", 1_700_000_000, 4.5)])  # E: list-item
p.push_many([("message", "u1", "c1"), ("message", "u2", "c1", 1_700_000_000)])
p.push_many([("message", "u1")])  # E: list-item
p.push_many([("message", "u1", "c1", "yesterday")])  # E: list-item
p.push_many(["message,u1,c1"])  # E: list-item
pushed: bool = p.push_many([])  # E: assignment

# Queries.
channels: list[tuple[str, int]] = p.get_top_channels(5) + p.top_channels(5, window_secs=3600)
p.get_top_channels("5")  # E: arg-type
p.top_channels(5, window_secs="hour")  # E: arg-type
p.top_channels(5, 3600, now="now")  # E: arg-type
names: list[str] = p.get_top_channels(5)  # E: assignment
p.unique_users("3600")  # E: arg-type
lost: str = p.events_dead_lettered()  # E: assignment


# Callbacks: the argument follows batch_format.
def save_rows(events: list[EventDict]) -> None: ...


def save_columns(batch: EventColumns) -> None: ...


def on_dead(events: list[EventDict], error: str) -> None: ...


p.set_flush_callback(save_rows)
p.set_flush_callback(save_columns, batch_format="columns")
p.set_dead_letter_callback(on_dead)
p.set_flush_callback(save_columns)  # E: arg-type
p.set_flush_callback(save_rows, batch_format="columns")  # E: call-overload
p.set_flush_callback(save_rows, batch_format="csv")  # E: call-overload
p.set_dead_letter_callback(save_rows)  # E: arg-type


# Rows are typed.
def read(events: list[EventDict]) -> str:
    when: int = events[0]["timestamp"]
    events[0]["user"]  # E: typeddict-item
    return events[0]["channel_id"] + str(when)


rows = board.get_top_users(10)
first: str = rows[0]["user_id"]
rows[0]["name"]  # E: typeddict-item
score: str = rows[0]["score"]  # E: assignment
board.get_user_rank("u1")["rank"]  # E: index

# The leaderboard.
board.update_user("u1", 5.0, 1_700_000_000)
board.update_user(123, 5.0)  # E: arg-type
board.update_user("u1", "5")  # E: arg-type
board.top(k="10")  # E: arg-type
refused: str = board.update_user("u1", 1.0)  # E: assignment

# `with` keeps the wrapper's type.
with EventStreamProcessor() as q:
    q.push_event("message", "u1")  # E: call-arg
with Leaderboard() as lb:
    lb.update_usr("u1", 1.0)  # E: attr-defined

# Per-guild boards: a guild id is a str or an int; rows as Leaderboard's.
with GuildLeaderboards() as guilds:
    ok: bool = guilds.update_user(123456789012345678, "u1", 1.0)
    guilds.update_user("g", "u1", 1.0, 1_700_000_000)
    guilds.update_user(1.5, "u1", 1.0)  # E: arg-type
    guilds.update_user("g", "u1")  # E: call-arg
    guilds.top("g", k="10")  # E: arg-type
    guild_names: list[int] = guilds.guilds()  # E: assignment
    top_user: str = guilds.top("g")[0].user_id

# Sketches.
HyperLogLog().update(["u1", b"u2"])
HyperLogLog().update([1, 2])  # E: list-item

# The shared readers, blocking and asyncio: the same rows; an async answer is awaited.
def shared_reads(client: Any, aclient: Any) -> None:
    shared = SharedLeaderboard(client, "lb")
    shared.get_top_users(5)[0]["name"]  # E: typeddict-item
    shared.top("5")  # E: arg-type
    total: int = SharedAnalytics(client, "ns").events_dead_lettered()
    wrong: int = AsyncSharedAnalytics(aclient, "ns").events_dead_lettered()  # E: assignment


async def async_reads(aclient: Any) -> None:
    board = AsyncSharedLeaderboard(aclient, "lb")
    rows = await board.get_top_users(5)
    user: str = rows[0]["user_id"]
    rows[0]["name"]  # E: typeddict-item
    await board.rank(42)  # E: arg-type
    size: str = await board.size()  # E: assignment

# The daily history.
import datetime  # noqa: E402

n: int = p.active_users(datetime.date(2026, 1, 1), "week", guild_id=123)
p.active_users(20_000)  # E: arg-type
cohorts_ok = p.retention("week", 8, guild_id="g")[0].retained[0] + 0.5
p.retention("week", "8")  # E: arg-type
heat: "list[list[int]]" = p.activity_heatmap(28, channel_id="general")
bad_heat: str = p.activity_heatmap()  # E: assignment
