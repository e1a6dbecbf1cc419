"""The demo (``python -m engagehub demo``): generator (with guilds and a history of
users joining over weeks), end-to-end run into SQLite (and PostgreSQL when
``ENGAGEHUB_TEST_POSTGRES_DSN`` names a server), the exact-vs-sketch checks, the
daily history's answers (active users, retention, heatmap) equal to the exact SQL
ones and to exact answers computed here, resuming the leaderboard from its
snapshot, and the command line; the
package's pieces used alone (the workload generator, the SQLite sink) and its
module layering."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import engagehub
from engagehub import Cohort, Leaderboard, demo
from engagehub import __main__ as command
from engagehub.demo import DAY, START, DemoConfig, cli, generate_events, sinks
from engagehub.processor import EventColumns

N = 50_000
HLL_STANDARD_ERROR = 0.0081


def bound(exact: int) -> float:
    return max(2.0, 4 * HLL_STANDARD_ERROR * exact)


def config(directory: Path, **overrides) -> DemoConfig:
    values = dict(
        events=N,
        db=str(directory / "demo.sqlite3"),
        snapshot=str(directory / "board.json"),
        quiet=True,
    )
    values.update(overrides)
    return DemoConfig(**values)


def workload_of(r) -> demo.Workload:
    """The events a run pushed: its simulated days after its history."""
    c = r.config
    return generate_events(
        c.events, seed=c.seed, start_ts=r.start_ts, days=c.days, users=c.users, channels=c.channels,
        history_days=r.history_days, history_events=r.history_events,
    )


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One fresh run of 50,000 events; a copy of its snapshot is kept."""
    directory = tmp_path_factory.mktemp("demo")
    result = demo.run(config(directory))
    shutil.copy(result.snapshot, directory / "board-run1.json")
    return directory, result


# -- generator -------------------------------------------------------------------


def test_generator_is_reproducible():
    a = generate_events(3_000, seed=7)
    b = generate_events(3_000, seed=7)
    c = generate_events(3_000, seed=8)
    assert a == b
    assert a.rows() == b.rows()
    assert a != c
    assert generate_events(3_000, seed=7, start_ts=START + DAY).user_ids == a.user_ids
    assert all(len(row) == 5 for row in a.rows()), "(type, user, channel, ts, guild), as push_many takes"


def test_generator_shape():
    w = generate_events(40_000, seed=1, users=5_000, channels=300)
    assert len(w) == 40_000
    assert w.timestamps == sorted(w.timestamps)
    assert START <= w.timestamps[0] and w.timestamps[-1] < START + DAY
    assert all(len(u) == 18 and u.isdigit() for u in set(w.user_ids))
    assert len(set(w.user_ids)) <= 5_000 and len(set(w.channel_ids)) <= 300

    kinds = Counter(w.kinds)
    assert set(kinds) == set(demo.KINDS)
    for kind, percent in zip(demo.KINDS, demo.KIND_WEIGHTS):
        assert abs(kinds[kind] / len(w) - percent / 100) < 0.015, kind

    # Zipf: the busiest user and channel stand far above the median one.
    users = Counter(w.user_ids).most_common()
    channels = Counter(w.channel_ids).most_common()
    assert users[0][1] > 50 * users[len(users) // 2][1]
    assert channels[0][1] > 50 * channels[len(channels) // 2][1]

    # The daily curve: the evening is much busier than the night.
    hours = Counter((t - START) // 3600 for t in w.timestamps)
    evening = hours[19] + hours[20] + hours[21]
    night = hours[3] + hours[4] + hours[5]
    assert evening > 5 * night
    assert demo.activity(demo.PEAK_AT_MIN) == pytest.approx(1.0)
    assert demo.activity(demo.QUIET_AT_MIN) == pytest.approx(demo.NIGHT_FLOOR)


def test_generator_guilds_and_history():
    day = generate_events(20_000, seed=9, users=4_000, channels=100)
    w = generate_events(20_000, seed=9, users=4_000, channels=100, history_days=56, history_events=6_000)
    assert w == generate_events(20_000, seed=9, users=4_000, channels=100, history_days=56, history_events=6_000)
    assert len(w) == 26_000 and w.history == 6_000 and day.history == 0
    assert w.timestamps == sorted(w.timestamps)
    # The history: the 56 days before START; the simulated day as without it.
    assert START - 56 * DAY <= w.timestamps[0] and w.timestamps[5_999] < START <= w.timestamps[6_000]
    assert w.rows(6_000) == day.rows(), "the simulated day does not depend on the history"

    # Three guilds; every user always in the same one, or in none (about 5%).
    assert len(w.guilds) == 3 and len(set(w.guilds)) == 3
    assert all(len(g) == 18 and g.isdigit() for g in w.guilds)
    home = {}
    for user, guild in zip(w.user_ids, w.guild_ids):
        assert home.setdefault(user, guild) == guild
    assert set(home.values()) == {*w.guilds, None}
    users_per_guild = Counter(home.values())
    assert users_per_guild[w.guilds[0]] > users_per_guild[w.guilds[1]] > users_per_guild[w.guilds[2]]
    assert 0.02 < users_per_guild[None] / len(home) < 0.09

    # Users join over the weeks: new users every week, activity growing.
    first_seen = {}
    for user, ts in zip(w.user_ids, w.timestamps):
        first_seen.setdefault(user, ts // DAY)
    joined = Counter((d - START // DAY) // 7 for d in first_seen.values())
    assert all(joined[week] > 0 for week in range(-8, 1)), joined
    per_week = Counter((t // DAY - START // DAY) // 7 for t in w.timestamps[:6_000])
    assert per_week[-1] > 2 * per_week[-8], "a growing community"
    # Some came and went: users of the history never seen on the simulated day.
    gone = set(w.user_ids[:6_000]) - set(w.user_ids[6_000:])
    assert len(gone) > 0.2 * len(set(w.user_ids[:6_000]))
    # (the churned users' events, and a few of users quiet on the day)
    assert 6_000 * demo.CHURNED_SHARE <= sum(1 for u in w.user_ids[:6_000] if u in gone) < 6_000 * 0.5
    with pytest.raises(ValueError):
        generate_events(10, history_events=5)


# -- the pieces alone: the workload generator, a sink, the module layering -----------

DEMO_DIR = Path(demo.__file__).resolve().parent

WORKLOAD_DIGEST = """
import hashlib, importlib.util, sys
spec = importlib.util.spec_from_file_location("standalone_workload", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module  # dataclasses look their module up
spec.loader.exec_module(module)
work = module.generate_events(5_000, seed=int(sys.argv[2]), users=800, channels=60)
print(hashlib.sha256(repr(work.rows()).encode()).hexdigest())
print(sorted(name for name in sys.modules if name.startswith("engagehub")))
"""


def workload_digest(seed: int, hash_seed: str) -> tuple:
    """The digest of ``generate_events(5000, seed)`` computed by demo/workload.py loaded
    on its own (from its file, without the engagehub package) in a fresh interpreter."""
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    proc = subprocess.run(
        [sys.executable, "-c", WORKLOAD_DIGEST, str(DEMO_DIR / "workload.py"), str(seed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    digest, modules = proc.stdout.splitlines()
    return digest, modules


def test_workload_generator_alone_is_deterministic_for_a_seed():
    import hashlib

    from engagehub.demo.workload import generate_events as generate

    here = hashlib.sha256(repr(generate(5_000, seed=11, users=800, channels=60).rows()).encode()).hexdigest()
    # Another interpreter, another string-hash seed, the module without its package:
    # the same events, and nothing of engagehub was imported to make them.
    assert workload_digest(11, "1") == (here, "[]")
    assert workload_digest(11, "2") == (here, "[]")
    assert workload_digest(12, "1")[0] != here


def batch_of(rows) -> EventColumns:
    types, users, channels, timestamps, guilds = (list(column) for column in zip(*rows))
    return EventColumns(types, users, channels, timestamps, None, guilds)


def table(path: Path) -> list:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT type, user_id, channel_id, ts, guild_id FROM events ORDER BY id").fetchall()


def test_sqlite_sink_alone_writes_exactly_the_batches_it_is_given(tmp_path):
    from engagehub.demo.sinks import SQLiteStore

    rows = generate_events(2_500, seed=3, users=300, channels=40).rows()
    rows[7] = ("message", "ünïcødé\tuser", "new\nline", rows[7][3], "gü\tild")
    batches = [batch_of(rows[lo : lo + size]) for lo, size in ((0, 1), (1, 999), (1_000, 1_500))]
    path = tmp_path / "sub" / "events.sqlite3"  # the folder is created
    store = SQLiteStore(path)
    for batch in batches:
        assert store.write(batch) >= 0.0
    assert store.rows() == store.total_rows() == len(rows)
    store.close()
    assert table(path) == rows, "every row of every batch, in order, nothing else"

    # append=True keeps the rows; the exact answers cover the new ones only.
    more = generate_events(300, seed=4, users=50, channels=5).rows()
    store = SQLiteStore(path, append=True)
    assert store.first_id == len(rows)
    store.write(batch_of(more))
    assert (store.rows(), store.total_rows()) == (len(more), len(rows) + len(more))
    assert store.distinct_users() == len({row[1] for row in more})
    assert store.top_channels(1)[0][1] == max(Counter(row[2] for row in more).values())
    store.close()
    assert table(path) == rows + more

    SQLiteStore(path).close()  # without append: a fresh table
    assert table(path) == []


def test_sqlite_sink_rolls_back_a_batch_that_fails(tmp_path):
    from engagehub.demo.sinks import SQLiteStore

    path = tmp_path / "events.sqlite3"
    store = SQLiteStore(path)
    good = [("message", "1", "c", 10, "g"), ("reaction", "2", "c", 11, None)]
    store.write(batch_of(good))
    bad = batch_of([("message", "3", "c", 12, "g"), ("message", object(), "c", 13, "g")])
    with pytest.raises(sqlite3.Error):
        store.write(bad)
    later = [("voice_join", "4", "d", 14, None)]
    store.write(batch_of(later))
    store.close()
    assert table(path) == good + later, "the failed batch left no row behind"


def test_sqlite_sink_as_a_flush_callback(tmp_path):
    from engagehub.demo.sinks import SQLiteStore

    rows = generate_events(10_000, seed=5, users=1_000, channels=50, history_days=14, history_events=2_000).rows()
    assert {row[4] for row in rows} > {None}, "events with a guild and without"
    store = SQLiteStore(tmp_path / "events.sqlite3")
    with engagehub.EventStreamProcessor(16_384, 2, 700, 50, overflow="block", clock="event_time") as processor:
        processor.set_flush_callback(store.write, batch_format="columns")
        processor.push_many(rows)
        processor.flush_now()
        assert processor.stats().failures == 0
    store.close()
    assert Counter(table(tmp_path / "events.sqlite3")) == Counter(rows)


def demo_imports(module: str) -> set:
    """The demo modules ``module`` imports (relative imports within the package)."""
    import ast

    tree = ast.parse((DEMO_DIR / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        names = [node.module] if node.module else [a.name for a in node.names]
        if node.level == 1:  # from .sinks import ...
            found |= {name.split(".")[0] for name in names}
        elif any(name.split(".")[0] == "demo" for name in names):  # from .. import demo
            found.add("engagehub.demo")
    return found


def test_demo_modules_import_without_cycles():
    assert demo_imports("workload") == set()
    assert demo_imports("sinks") == set()
    assert demo_imports("cli") == {"sinks", "workload"}
    for module in ("workload", "sinks", "cli"):
        submodule = getattr(demo, module)
        assert submodule.__doc__, module
        for name in submodule.__all__:
            assert getattr(demo, name) is getattr(submodule, name), f"engagehub.demo.{name}"


# -- one run ---------------------------------------------------------------------


def test_run_persists_every_accepted_event(first):
    directory, r = first
    assert r.ok, r.problems
    total = N + r.history_events
    assert r.history_events == round(N * demo.HISTORY_SHARE) and r.history_days == 7 * demo.HISTORY_WEEKS
    assert r.events == total and r.accepted == total and r.dropped == 0
    assert r.processed == total and r.delivered == total
    assert r.batches >= total // r.config.batch_size
    assert r.failures == 0 and r.dead_lettered == 0
    assert r.db_rows == r.accepted == r.db_rows_total
    w = workload_of(r)
    with sqlite3.connect(directory / "demo.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == total
        rows = conn.execute("SELECT type, user_id, channel_id, ts, guild_id FROM events").fetchall()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert Counter(rows) == Counter(w.rows()), "every event, its guild included, history and day"
    assert min(ts for _, _, _, ts, _ in rows) == w.timestamps[0] < START
    assert r.push_rate > 0 and r.end_to_end_rate > 0 and r.total_seconds >= r.push_seconds


def test_sketch_answers_are_within_their_bounds(first):
    directory, r = first
    w = workload_of(r)
    assert r.now == w.timestamps[-1], "event-time clock: the newest timestamp"
    now_min = r.now // 60
    lo, hi = (now_min - 59) * 60, (now_min + 1) * 60
    exact_hour = len({u for u, t in zip(w.user_ids, w.timestamps) if lo <= t < hi})
    assert r.unique_last_hour_exact == exact_hour
    assert abs(r.unique_last_hour - exact_hour) <= bound(exact_hour)
    exact_all = len(set(w.user_ids))
    assert r.unique_all_exact == exact_all
    assert abs(r.unique_all - exact_all) <= bound(exact_all)

    channels = Counter(w.channel_ids)
    assert len(r.top_channels) == 5
    sketch_counts = [row.sketch for row in r.top_channels]
    assert sketch_counts == sorted(sketch_counts, reverse=True)
    slack = -(-len(w) // 1024)
    for row in r.top_channels:
        assert row.exact == channels[row.channel_id]
        assert channels[row.channel_id] <= row.sketch <= channels[row.channel_id] + slack
        assert row.in_bounds
    assert r.top_channels_exact == sorted(channels.items(), key=lambda kv: (-kv[1], kv[0]))[:5]


def test_leaderboard_top_ten_is_sorted(first):
    directory, r = first
    top = r.leaderboard_top
    assert len(top) == 10
    assert [u["rank"] for u in top] == list(range(1, 11))
    scores = [u["score"] for u in top]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    assert not r.resumed and r.resumed_users == 0
    assert r.leaderboard_size == r.unique_all_exact, "every active user earned points"
    assert Path(r.snapshot).exists()

    # The top user's score is the decayed sum of the points of its events.
    w = workload_of(r)
    user = top[0]["user_id"]
    expected = sum(
        demo.POINTS[k] * 0.95 ** ((r.now - t) / DAY) for k, u, t in zip(w.kinds, w.user_ids, w.timestamps) if u == user
    )
    assert top[0]["score"] == pytest.approx(expected, rel=1e-9)


class Exact:
    """Exact answers over a workload, computed here (not by SQL)."""

    def __init__(self, w: demo.Workload) -> None:
        self.days = defaultdict(lambda: defaultdict(set))  # scope -> user -> days
        self.hours = Counter()  # hour since 1970 -> events
        for user, ts, guild in zip(w.user_ids, w.timestamps, w.guild_ids):
            for scope in {None, guild}:
                self.days[scope][user].add(ts // DAY)
            self.hours[ts // 3600] += 1

    def active(self, day: int, guild) -> demo.ActiveUsers:
        def count(length: int) -> int:
            return sum(1 for days in self.days[guild].values() if any(day - length < d <= day for d in days))

        return demo.ActiveUsers(guild, count(1), count(7), count(30))

    def retention(self, now_day: int, n: int) -> list:
        def week(d: int) -> int:
            return (d + 3) // 7  # weeks from Monday; day 0 was a Thursday

        last = week(now_day)
        out = []
        for p in range(last - n + 1, last + 1):
            members = [days for days in self.days[None].values() if week(min(days)) == p]
            active = [sum(1 for days in members if any(week(d) == q for d in days)) for q in range(p, last + 1)]
            start = dt.date(1970, 1, 1) + dt.timedelta(days=7 * p - 3)
            out.append(Cohort(start, len(members), [a / len(members) if members else 0.0 for a in active]))
        return out

    def heatmap(self, first_day: int, last_day: int) -> list:
        grid = [[0] * 24 for _ in range(7)]
        for hour, n in self.hours.items():
            if first_day <= hour // 24 <= last_day:
                grid[(hour // 24 + 3) % 7][hour % 24] += n
        return grid


def check_history(r) -> None:
    """The run's daily-history answers equal the exact SQL answers, and both equal
    the exact answers computed here from the workload."""
    exact = Exact(workload_of(r))
    last_day = r.now // DAY
    assert r.last_day == last_day
    assert [a.guild_id for a in r.active_users] == [None, r.guilds[0]]
    assert r.active_users == r.active_users_exact == [exact.active(last_day, g) for g in (None, r.guilds[0])]
    assert r.retention == r.retention_exact == exact.retention(last_day, 8)
    first_day = last_day - r.config.days + 1
    assert r.heatmap == r.heatmap_exact == exact.heatmap(first_day, last_day)
    assert sum(map(sum, r.heatmap)) == r.events - r.history_events, "the heatmap covers the simulated days"
    assert r.active_users_ok and r.retention_ok and r.heatmap_ok


def test_history_answers_equal_the_exact_sql_answers(first):
    directory, r = first
    check_history(r)
    overall, guild = r.active_users
    assert 0 < guild.day < overall.day <= overall.week <= overall.month
    assert overall.stickiness == overall.day / overall.month
    # Users joined over the weeks: every cohort has members, some came back.
    assert [c.start.weekday() for c in r.retention] == [0] * 8
    assert r.retention[-1].start <= dt.date(2026, 1, 1) < r.retention[-1].start + dt.timedelta(days=7)
    assert all(c.size > 0 and c.retained[0] == 1.0 for c in r.retention)
    assert all(0 < f < 1 for c in r.retention[:-1] for f in c.retained[1:])
    thursday = r.heatmap[3]
    assert sum(thursday) == N and not any(map(any, r.heatmap[:3] + r.heatmap[4:]))
    assert thursday[20] > 5 * thursday[4], "the daily curve"


def test_the_dashboard_shows_the_history_checked(first):
    directory, r = first
    out = io.StringIO()
    demo.print_dashboard(r, out)
    text = out.getvalue()
    overall, guild = r.active_users
    assert "after 5,000 events over the 8 weeks before" in text
    assert "Active users on 2026-01-01" in text
    line = next(l for l in text.splitlines() if l.strip().startswith("all guilds"))
    assert line.split()[2:6] == [f"{overall.day:,}", f"{overall.week:,}", f"{overall.month:,}",
                                 f"{overall.stickiness:.1%}"]
    assert line.endswith("ok, = SQL")
    assert f"guild {r.guilds[0]}" in text
    assert "Weekly retention, 8 cohorts" in text
    for c in r.retention:
        row = next(l for l in text.splitlines() if l.strip().startswith(c.start.isoformat()))
        assert row.split()[1:] == [f"{c.size:,}"] + [f"{f:.0%}" for f in c.retained]
    assert "every cohort's size and fractions equal the exact SQL ones: ok" in text
    assert "Activity heatmap of 2026-01-01 (Thu)" in text
    assert "168 of 168 cells (7 weekdays x 24 hours) equal the exact SQL counts: ok" in text
    hours = [l for l in text.splitlines() if "-07h" in l or "-15h" in l or "-23h" in l]
    assert [int(n.replace(",", "")) for l in hours for n in l.split()[-8:]] == r.heatmap[3]


def test_a_history_answer_unlike_the_sql_one_fails_with_status_1(tmp_path, monkeypatch, capsys):
    real = demo.SQLiteStore.active_users_and_retention

    def off_by_one(self, *args, **kwargs):
        active, cohorts = real(self, *args, **kwargs)
        (d, wk, m), *rest = active
        start, size, counts = cohorts[-1]
        return [(d, wk, m + 1), *rest], cohorts[:-1] + [(start, size + 1, [counts[0] + 1])]

    monkeypatch.setattr(demo.SQLiteStore, "active_users_and_retention", off_by_one)
    real_heatmap = demo.SQLiteStore.heatmap
    monkeypatch.setattr(
        demo.SQLiteStore, "heatmap", lambda self, *a: [[n + (h == 5) for h, n in enumerate(row)] for row in real_heatmap(self, *a)]
    )
    assert demo.main(["--events", "5000", "--quiet", "--db", str(tmp_path / "x.sqlite3")]) == 1
    out, err = capsys.readouterr()
    assert "CHECKS FAILED" in out
    assert "MISMATCH: SQL" in out and ": MISMATCH" in out
    assert "161 of 168 cells" in out
    assert "active users on 2026-01-01 (all guilds)" in err
    assert "retention cohort of 2025-12-29" in err
    assert "activity heatmap: 7 of 168 cells differ from the exact SQL counts" in err


def test_second_run_resumes_from_the_snapshot(first, tmp_path):
    directory, r1 = first
    snapshot = tmp_path / "board.json"
    shutil.copy(directory / "board-run1.json", snapshot)
    db = tmp_path / "demo.sqlite3"
    shutil.copy(directory / "demo.sqlite3", db)

    r2 = demo.run(config(tmp_path, resume=True, append=True))
    assert r2.ok, r2.problems
    assert r2.resumed and r2.resumed_users == r1.leaderboard_size
    assert r2.start_ts == START + DAY, "the resumed run simulates the next day"
    assert r2.history_events == 0, "resumed: the earlier runs were the history"
    assert r2.db_rows == N and r2.db_rows_total == r1.db_rows + N, "--append keeps the first run's rows"
    check_history(r2)  # over this run's rows only
    assert r2.leaderboard_size >= r1.leaderboard_size

    # The same day without the snapshot: the resumed board adds the first day's
    # scores, decayed to the end of the second day.
    fresh = demo.run(config(tmp_path / "fresh", start_ts=START + DAY, history_weeks=0))
    assert fresh.ok and fresh.now == r2.now
    with Leaderboard() as day1, Leaderboard() as both, Leaderboard() as day2:
        day1.load_from_json(directory / "board-run1.json")
        both.load_from_json(r2.snapshot)
        day2.load_from_json(fresh.snapshot)
        assert len(both) >= len(day1)
        for row in day1.top(200, now=r2.now):
            assert row.user_id in both
            earned = day2.rank(row.user_id, now=r2.now).score if row.user_id in day2 else 0.0
            assert both.rank(row.user_id, now=r2.now).score == pytest.approx(row.score + earned, rel=1e-9)
            if earned:
                assert both.rank(row.user_id, now=r2.now).score > row.score
    assert r2.leaderboard_top[0]["score"] > fresh.leaderboard_top[0]["score"]


def test_resume_without_a_snapshot_starts_fresh(tmp_path):
    r = demo.run(config(tmp_path, events=5_000, resume=True))
    assert r.ok and not r.resumed and r.start_ts == START


# -- failures and the command line -------------------------------------------------


def test_a_row_count_mismatch_fails_with_status_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo.SQLiteStore, "rows", lambda self: 1)
    argv = ["--events", "5000", "--quiet", "--db", str(tmp_path / "x.sqlite3")]
    assert demo.main(argv) == 1
    out, err = capsys.readouterr()
    assert "CHECKS FAILED" in out
    assert "the database holds 1 rows of this run but 5,500 events were accepted" in err  # with the history


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl locks")
def test_a_second_demo_on_the_same_files_fails_clearly_and_changes_nothing(tmp_path, capsys):
    db = tmp_path / "busy.sqlite3"
    argv = ["--events", "2000", "--quiet", "--db", str(db)]
    # Another process runs a demo on these files: it holds their locks until told.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import contextlib, sys; from pathlib import Path; from engagehub.demo import cli\n"
            "with contextlib.ExitStack() as s:\n"
            "    cli.hold_paths(s, Path(sys.argv[1]))\n"
            "    print('held', flush=True); sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert demo.main(argv) == 2
        assert "another demo is using" in capsys.readouterr().err
        assert not db.exists(), "the refused run wrote nothing"
    finally:
        holder.communicate("", timeout=60)
    assert demo.main(argv) == 0, "free again once the other run ended"
    assert db.exists()


def test_main_prints_the_dashboard(tmp_path, capsys):
    argv = ["demo", "--events", "10000", "--quiet", "--db", str(tmp_path / "m.sqlite3")]
    from engagehub.__main__ import main

    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for heading in ("Pipeline", "Unique users", "Top 5 channels", "Active users on", "Weekly retention",
                    "Activity heatmap", "Leaderboard top 10", "Storage"):
        assert heading in out
    assert "all checks passed" in out
    assert str(tmp_path / "engagehub-demo-leaderboard.json") in out, "the snapshot defaults to the db's folder"


def test_python_dash_m_engagehub_demo(tmp_path):
    env = dict(os.environ)
    package_root = str(Path(engagehub.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    db = tmp_path / "cli.sqlite3"
    proc = subprocess.run(
        [sys.executable, "-m", "engagehub", "demo", "--events", "20000", "--quiet", "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
    assert proc.stderr == ""
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events WHERE ts >= ?", (START,)).fetchone()[0] == 20_000


def test_progress_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            if self.closed:  # as a real file does
                raise ValueError("I/O operation on closed file")
            return True

    assert demo.progress_wanted(False, Terminal())
    assert not demo.progress_wanted(True, Terminal()), "--quiet"
    assert not demo.progress_wanted(False, io.StringIO()), "a pipe or a log file"
    closed = Terminal()
    closed.close()
    assert not demo.progress_wanted(False, closed)


def test_builtin_progress_bar_is_throttled(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # force the built-in bar
    stream = io.StringIO()
    bar = cli._Progress(1_000_000, True, "events", stream)
    for n in range(0, 1_000_001, 100):
        bar.update_to(n)
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n")
    assert text.count("\r") <= 3, "at most ~10 redraws a second"
    assert "100.0%" in text and "1,000,000/1,000,000" in text

    quiet = io.StringIO()
    off = cli._Progress(10, False, "events", quiet)
    off.update_to(10)
    off.close()
    assert quiet.getvalue() == ""


# -- PostgreSQL ----------------------------------------------------------------------

TRICKY = EventColumns(
    ["message", "reaction", "message", "message"],
    ["tab\there", "back\\slash", "new\nline\r", "u"],
    ["c1", "", "ünïcødé", "c"],
    [1, 2, 3, 4],
    None,
    [None, "g", "g2", "back\\slash guild"],
)


def test_copy_text_block_falls_back_when_escaping_is_needed():
    plain = EventColumns(["message", "reaction"], ["1", "2"], ["c", "d"], [10, 20], None, ["g", None])
    assert sinks._copy_text(plain) == "message\t1\tc\t10\tg\nreaction\t2\td\t20\t\\N\n", "no guild: NULL"
    no_column = EventColumns(*plain[:5])  # a batch built without the guild column
    assert sinks._copy_text(no_column) == "message\t1\tc\t10\t\\N\nreaction\t2\td\t20\t\\N\n"
    assert sinks._copy_text(TRICKY) is None
    for i in range(4):
        one = EventColumns(*(column[i : i + 1] for column in TRICKY[:4]), None, TRICKY.guild_ids[i : i + 1])
        assert sinks._copy_text(one) is None, i
    unicode = EventColumns(["message"], ["ünï"], ["ç ø"], [5], None, ["gü"])
    assert sinks._copy_text(unicode) == "message\tünï\tç ø\t5\tgü\n"


POSTGRES_DSN = os.environ.get("ENGAGEHUB_TEST_POSTGRES_DSN")


@pytest.mark.skipif(not POSTGRES_DSN, reason="ENGAGEHUB_TEST_POSTGRES_DSN is not set")
def test_postgres_copy_per_batch(tmp_path):
    import psycopg

    r = demo.run(config(tmp_path, events=20_000, postgres=POSTGRES_DSN))
    assert r.ok, r.problems
    assert r.backend == "PostgreSQL"
    assert r.db_rows == r.accepted == 20_000 + r.history_events and r.history_events == 2_000
    check_history(r)
    r2 = demo.run(config(tmp_path, events=20_000, postgres=POSTGRES_DSN, append=True, resume=True))
    assert r2.ok, r2.problems
    assert r2.resumed and r2.db_rows == 20_000 and r2.db_rows_total == r.db_rows + 20_000
    check_history(r2)
    with psycopg.connect(POSTGRES_DSN) as conn:
        count, days, guilds = conn.execute(
            f"SELECT COUNT(*), COUNT(DISTINCT ts / 86400), COUNT(DISTINCT guild_id) FROM {demo.POSTGRES_TABLE} "
            "WHERE ts >= %s",
            (START,),
        ).fetchone()
    assert (count, days, guilds) == (40_000, 2, 3)

    # Ids the COPY text format must escape go through psycopg's row writer.
    store = demo.PostgresStore(POSTGRES_DSN, append=True)
    try:
        store.write(TRICKY)
        rows = store._all(
            "SELECT type, user_id, channel_id, ts, guild_id FROM {t} WHERE id > ? ORDER BY id", store.first_id
        )
    finally:
        store.close()
    assert rows == list(zip(*TRICKY[:4], TRICKY.guild_ids))


# -- where a run's files go ----------------------------------------------------------


def test_runs_without_db_get_folders_of_their_own_and_resume_the_newest(tmp_path):
    base = tmp_path / "runs"
    first = demo.run(DemoConfig(events=5_000, quiet=True, dir=str(base)))
    second = demo.run(DemoConfig(events=5_000, quiet=True, dir=str(base), resume=True))
    assert first.ok and second.ok, (first.problems, second.problems)
    folders = {Path(first.db).parent, Path(first.snapshot).parent, Path(second.db).parent}
    assert len(folders) == 2, "each run has its own folder, database and snapshot together"
    assert all(folder.parent == base and folder.name.startswith("run-") for folder in folders)
    assert second.resumed and second.resumed_from == first.snapshot
    assert second.start_ts == START + DAY, "resumed: the next day"
    assert not first.resumed and first.resumed_from is None


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl locks")
def test_a_demo_runs_while_another_holds_its_folder_which_is_never_pruned(tmp_path, capsys):
    base = tmp_path / "runs"
    # Another demo, running: it made its folder the way a run does and holds its files.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import contextlib, sys; from engagehub.demo import cli\n"
            "with contextlib.ExitStack() as s:\n"
            "    d = cli.new_run_dir(sys.argv[1])\n"
            "    cli.hold_paths(s, d / cli.DB_NAME, d / cli.SNAPSHOT_NAME)\n"
            "    print(d, flush=True); sys.stdin.read()",
            str(base),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    try:
        busy = Path(holder.stdout.readline().strip())
        assert busy.parent == base.absolute()
        # keep 1: the held folder is older than this run's, yet in use, so it stays.
        assert demo.main(["--events", "2000", "--quiet", "--dir", str(base), "--keep-runs", "1"]) == 0
        assert "all checks passed" in capsys.readouterr().out
        assert busy.is_dir(), "a folder in use is never removed"
        runs = sorted(base.glob("run-*"))
        assert len(runs) == 2 and busy in runs
        other = next(r for r in runs if r != busy)
        assert (other / demo.DB_NAME).is_file() and not (busy / demo.DB_NAME).exists()
    finally:
        holder.communicate("", timeout=60)
    # Once it has ended, the next run keeps only itself.
    assert demo.main(["--events", "2000", "--quiet", "--dir", str(base), "--keep-runs", "1"]) == 0
    assert not busy.exists() and len(list(base.glob("run-*"))) == 1


def test_prune_runs_keeps_the_newest_and_the_spared(tmp_path):
    names = [f"run-20260101-00000{i}-x" for i in range(5)]
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / "not-a-run").mkdir()
    removed = cli.prune_runs(tmp_path, 2, spare=(tmp_path / names[0],))
    assert sorted(p.name for p in removed) == names[1:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[0], *names[3:], "not-a-run"])
    assert cli.prune_runs(tmp_path, 0) == [], "0 keeps every run"


def test_append_without_a_named_database_is_refused(tmp_path, capsys):
    assert demo.main(["--events", "1000", "--quiet", "--dir", str(tmp_path), "--append"]) == 2
    assert "--append keeps the rows already in a database: name it with --db" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing was written"


def test_make_demo_passes_args_to_the_demo():
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[2]
    dry = subprocess.run([make, "-n", "-C", str(root), "demo", "ARGS=--events 1234 --resume"],
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "-m engagehub demo --events 1234 --resume" in dry.stdout


def test_postgres_runs_keep_their_snapshot_where_told_or_in_a_folder_of_their_own(tmp_path):
    """No server needed: which files a --postgres run uses (no SQLite file at all)."""
    base = tmp_path / "runs"
    told = tmp_path / "board.json"
    assert cli._files(DemoConfig(postgres="dbname=x", snapshot=str(told), dir=str(base))) == (None, told, None)
    assert not base.exists(), "nothing to put in a folder of its own"
    db, snapshot, resume_from = cli._files(DemoConfig(postgres="dbname=x", db="ignored.sqlite3", dir=str(base)))
    assert db is None and resume_from is None
    assert snapshot.name == demo.SNAPSHOT_NAME and snapshot.parent.parent == base.absolute()
    (snapshot.parent / demo.SNAPSHOT_NAME).write_text("{}")
    _, later, resume_from = cli._files(DemoConfig(postgres="dbname=x", dir=str(base), resume=True))
    assert resume_from == snapshot and later.parent != snapshot.parent


def test_the_demo_package_runs_the_one_process_demo_and_the_command_line_adds_redis(capsys):
    # engagehub.demo knows nothing of Redis (engagehub.shared.demo builds on it,
    # not the other way round); `python -m engagehub demo` offers both.
    with pytest.raises(SystemExit):
        demo.main(["--redis", "redis://localhost:1", "--events", "10"])
    assert "--redis" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        command.main(["demo", "--help"])
    assert "--redis URL" in capsys.readouterr().out


def test_redis_demos_use_keys_of_their_own_and_remove_them(tmp_path, capsys):
    """--redis without --namespace: the run's own namespace, deleted at its end, so
    another demo's keys (here under the old fixed default) are never touched; a
    named namespace is kept for inspection."""
    redis = pytest.importorskip("redis", reason="redis-py is not installed")
    from redis_server import redis_url

    with redis_url(pytest) as url:
        client = redis.Redis.from_url(url)
        client.set("{engagehub-demo}:events", 7)  # another demo, running
        argv = ["demo", "--redis", url, "--events", "3000", "--writers", "1", "--quiet", "--dir", str(tmp_path / "runs")]
        assert command.main(argv) == 0, capsys.readouterr()
        assert client.keys() == [b"{engagehub-demo}:events"] and client.get("{engagehub-demo}:events") == b"7"
        assert command.main([*argv, "--namespace", "mine"]) == 0, capsys.readouterr()
        assert int(client.get("{mine}:events")) == 3300, "the day's 3,000 after the history's 300"
        assert command.delete_demo_keys(url, "mine") > 1
        assert client.keys() == [b"{engagehub-demo}:events"]
        client.close()
