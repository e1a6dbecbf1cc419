"""The compatibility layer (docs/compat.md, engagehub/_compat.py): each of the C++
extension's names answers as the primary call it is documented to be, with the
drop-in's shape, and the page lists exactly the names the layer defines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engagehub import EventStreamProcessor, Full, Leaderboard, NotFound, RankedUser, _compat
from engagehub.errors import BatchFailed

T0 = 1_767_225_600
COMPAT_MD = Path(__file__).resolve().parents[2] / "docs" / "compat.md"


def _failing(batch: object) -> None:
    if any(e["user_id"] == "u3" for e in batch):  # type: ignore[index, union-attr]
        raise BatchFailed("no")


def test_processor_drop_in_names_are_the_primary_calls():
    with EventStreamProcessor(4, 0, 1, 10, clock="event_time", max_retries=1, retry_backoff_ms=1) as p:
        p.set_flush_callback(_failing)
        for i in range(6):
            p.push_event("message", f"u{i % 4}", f"c{i % 3}", T0 + i)
        p.flush_now(5)
        p.flush(5)
        stats = p.stats()
        assert (stats.accepted, stats.dropped, stats.dead_lettered) == (4, 2, 1)
        assert p.get_top_channels(2) == p.top_channels(2) == [("c0", 2), ("c1", 1)]
        assert p.get_top_channels() == p.top_channels(window_secs=None)
        assert p.get_unique_users_last_hour() == p.unique_users(3600) == 4
        assert p.total_events_processed() == stats.processed == 4
        assert p.events_dropped() == stats.dropped
        assert p.events_dead_lettered() == stats.dead_lettered


def test_leaderboard_drop_in_names_are_the_primary_calls(tmp_path):
    with Leaderboard(max_users=2) as board:
        board.set_time_source(lambda: T0)
        assert board.update_user("alice", 25.0, T0) is True
        board.add("bob", 10.0, T0)
        # At max_users, a newcomer ranking below everyone: refused either way.
        assert board.update_user("carol", 1.0, T0) is False
        with pytest.raises(Full):
            board.add("carol", 1.0, T0)
        assert board.stats().refused == 2
        top = board.top(10)
        assert board.get_top_users(10) == [
            {"user_id": r.user_id, "score": r.score, "rank": r.rank, "last_update": r.last_update} for r in top
        ]
        assert board.get_user_rank("bob") == dict(board.rank("bob")._asdict())
        assert board.get_user_rank("carol") is None
        with pytest.raises(NotFound):
            board.rank("carol")
        assert board.size() == len(board) == 2
        board.save_to_json(tmp_path / "a.json")
        board.save(tmp_path / "b.json")
        assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
        board.clear()
        board.load_from_json(tmp_path / "a.json")
        assert board.top(10) == top
        board.clear()
        board.load(tmp_path / "b.json")
        assert board.top(10) == top == [RankedUser("alice", 1, 25.0, T0), RankedUser("bob", 2, 10.0, T0)]


def _documented(section: str) -> set:
    """The old names in the first column of compat.md's table under ``## section``,
    but those whose call is "the same" (one name for both)."""
    text = COMPAT_MD.read_text(encoding="utf-8")
    part = text.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        match = re.match(r"`(\w+)\(", cells[0]) if len(cells) == 3 else None
        if match and cells[1] != "the same":
            names.add(match.group(1))
    return names


def _defined(cls: type) -> set:
    return {name for name in vars(cls) if not name.startswith("_")}


def test_the_page_lists_exactly_the_names_of_the_layer():
    assert _documented("EventStreamProcessor") == _defined(_compat.ProcessorDropIns)
    assert _documented("Leaderboard") == _defined(_compat.LeaderboardDropIns)
    # ... and the public classes take them from the layer.
    for name in _defined(_compat.ProcessorDropIns):
        assert getattr(EventStreamProcessor, name) is getattr(_compat.ProcessorDropIns, name)
    for name in _defined(_compat.LeaderboardDropIns):
        assert getattr(Leaderboard, name) is getattr(_compat.LeaderboardDropIns, name)
