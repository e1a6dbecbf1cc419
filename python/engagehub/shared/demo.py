"""``python -m engagehub demo --redis URL --writers N``: the demo's day of events
split over ``N`` writer processes that publish to Redis, and the dashboard read
by a separate reader process that pushed nothing, through :class:`SharedAnalytics`
(and :class:`SharedLeaderboard` when it is installed), checked against the exact
SQL answers as in the single-process demo, the daily history's too (active users,
retention, the heatmap: equal to the exact SQL answers). The shared leaderboard is checked
against an in-process :class:`~engagehub.Leaderboard` fed every persisted event's
points from the SQL rows (the same updates the writers made): the same top users,
ranks, last updates and scores (relative 1e-9), and the same number of users.

Writer ``i`` (a spawned process) regenerates the same workload (the history, then
the day) from the seed,
takes events ``i, i + N, i + 2N, ...`` (so each writer's events stay in time
order, and every writer sees most users and channels), pushes them into an
``EventStreamProcessor(redis=..., namespace=...)`` whose flush callback writes the
rows to the shared SQLite file, and closes it (which publishes the rest).
"""

from __future__ import annotations

import math
import multiprocessing
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO

from .. import demo as base
from .._history import cohort, date_of
from ..demo.cli import _default_dir, _utc, hold_paths
from ..processor import EventColumns, EventStreamProcessor

TOPK_CAPACITY = 1024


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def _leaderboard_available() -> bool:
    try:
        from . import SharedLeaderboard  # noqa: F401
    except ImportError:
        return False
    return True


def _writer(config: Dict[str, Any], url: str, namespace: str, db: str, index: int, writers: int, out: Any) -> None:
    cfg = base.DemoConfig(**config)
    history_days, history_events = base.history_plan(cfg)
    work = base.generate_events(
        cfg.events, seed=cfg.seed, start_ts=cfg.start_ts or base.START, days=cfg.days,
        users=cfg.users, channels=cfg.channels, history_days=history_days, history_events=history_events,
    )
    rows = work.rows()[index::writers]
    client = _client(url)
    store = base.SQLiteStore(Path(db), append=True)
    store.conn.execute("PRAGMA busy_timeout=60000")  # the writers share the file
    board = None
    if _leaderboard_available():
        from ..leaderboard import Leaderboard

        board = Leaderboard(decay_factor=0.95, redis=client, key=f"{namespace}:leaderboard")
    processor = EventStreamProcessor(
        cfg.buffer_size, cfg.workers, cfg.batch_size, 200, overflow="block", block_timeout_ms=60_000,
        clock="event_time", topk_capacity=TOPK_CAPACITY, redis=client, namespace=namespace,
        history_days=base.history_kept(cfg, history_days),
    )
    if board is not None:
        board.set_time_source(processor.now)
    points = base.POINTS

    def persist(batch: EventColumns) -> None:
        store.write(batch)
        if board is not None:
            for user, kind, ts in zip(batch.user_ids, batch.types, batch.timestamps):
                board.update_user(user, points[kind], ts)

    processor.set_flush_callback(persist, batch_format="columns")
    started = time.perf_counter()
    for lo in range(0, len(rows), cfg.chunk):
        processor.push_many(rows[lo : lo + cfg.chunk])
    push_seconds = time.perf_counter() - started
    processor.flush_now()
    s = processor.stats()
    processor.close()  # drains, then publishes everything still pending
    if board is not None:
        board.close()
    store.close()
    out.put({
        "index": index, "accepted": s.accepted, "processed": s.processed, "push_seconds": push_seconds,
        "seconds": time.perf_counter() - started, "published_batches": processor._publisher.counters.batches,
        "publish_failures": processor._publisher.counters.failures,
        "pending": processor.unpublished,
    })


def _reader(url: str, namespace: str, k_channels: int, k_users: int, days: int, guild: str, out: Any) -> None:
    from . import SharedAnalytics

    client = _client(url)
    shared = SharedAnalytics(client, namespace)
    started = time.perf_counter()
    answer: Dict[str, Any] = {
        "now": shared.now(),
        "unique_active_users_last_hour": shared.get_unique_users_last_hour(),
        "unique_users_all_time": shared.unique_users(None),
        "top_channels": shared.get_top_channels(k_channels),
        "total_events_processed": shared.total_events_processed(),
    }
    answer["analytics_ms"] = (time.perf_counter() - started) * 1e3
    # The daily history: the last day's active users (overall and in the busiest
    # guild), the weekly cohorts, the heatmap of the simulated days.
    now = answer["now"]
    started = time.perf_counter()
    answer["active_users"] = [
        (g, *(shared.active_users(date_of(now // 86_400), period, g) for period in ("day", "week", "month")))
        for g in (None, guild)
    ]
    answer["retention"] = shared.retention("week", base.RETENTION_COHORTS, now=now)
    answer["heatmap"] = shared.activity_heatmap(days=days, now=now)
    answer["history_ms"] = (time.perf_counter() - started) * 1e3
    if _leaderboard_available():
        from . import SharedLeaderboard

        board = SharedLeaderboard(client, f"{namespace}:leaderboard")
        # Scores at the dashboard's "now" (the newest event time), not the wall clock.
        answer["top_contributors"] = [tuple(r) for r in board.top(k_users, now=answer["now"])]
        answer["total_ranked_users"] = board.size()
    out.put(answer)


def _in_process_leaderboard(store: Any, now: int, k: int) -> "tuple[List[tuple], int]":
    """One in-process board fed every persisted event's points (the updates the
    writers made, in another order: increments commute): its top ``k`` and size."""
    from ..leaderboard import Leaderboard

    board = Leaderboard(decay_factor=0.95, max_users=0)
    try:
        board.set_time_source(lambda: now)
        points = base.POINTS
        for user, kind, ts in store._all("SELECT user_id, type, ts FROM {t} WHERE id > ?", store.first_id):
            board.update_user(str(user), points[kind], int(ts))
        return [tuple(r) for r in board.top(k, now=now)], len(board)
    finally:
        board.close()


def _leaderboard_problems(shared: List[tuple], shared_size: int, local: List[tuple], local_size: int) -> List[str]:
    """Rows are (user_id, rank, score, last_update). Ids must match position by
    position, except at a near-tie (scores within 1e-9: sums of the same terms in
    another order may swap two users)."""
    problems: List[str] = []
    # The writers' boards keep their default max_users (100,000) on Redis.
    if shared_size != min(local_size, 100_000):
        problems.append(f"leaderboard size: shared {shared_size:,} vs in-process {local_size:,}")
    if len(shared) != len(local):
        problems.append(f"leaderboard top: shared {len(shared)} rows vs in-process {len(local)}")
    scores = {r[0]: r[2] for r in local}
    for s, r in zip(shared, local):
        if not math.isclose(s[2], r[2], rel_tol=1e-9):
            problems.append(f"leaderboard rank {r[1]}: shared {s[0]} {s[2]!r} vs in-process {r[0]} {r[2]!r}")
        elif s[0] != r[0] and not math.isclose(scores.get(s[0], math.nan), s[2], rel_tol=1e-9):
            problems.append(f"leaderboard rank {r[1]}: shared {s[0]} vs in-process {r[0]}")
        elif s[0] == r[0] and (s[1], s[3]) != (r[1], r[3]):
            problems.append(f"leaderboard {s[0]}: shared rank/last update {s[1]}/{s[3]} vs {r[1]}/{r[3]}")
    return problems


def run(config: base.DemoConfig, url: str, writers: int, namespace: str, *, out: Optional[TextIO] = None) -> int:
    """Runs the shared demo and prints its dashboard; 0 when every check passed."""
    with ExitStack() as stack:
        return _run(config, url, writers, namespace, sys.stdout if out is None else out, stack)


def _run(config: base.DemoConfig, url: str, writers: int, namespace: str, out: TextIO, stack: ExitStack) -> int:
    if writers < 1:
        raise ValueError("--writers must be >= 1")
    say = (lambda _m: None) if config.quiet else (lambda m: print(m, file=sys.stderr))
    client = _client(url)
    client.ping()
    stale = list(client.scan_iter(match="{" + namespace + "}:*"))
    stale += list(client.scan_iter(match="{" + namespace + ":leaderboard}*"))
    if stale:
        client.delete(*stale)
    db = Path(config.db) if config.db else _default_dir() / "engagehub-demo-shared.sqlite3"
    hold_paths(stack, db)
    base.SQLiteStore(db).close()  # a fresh table, which the writers append to
    cfg = asdict(config)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    say(f"{writers} writer processes, {config.events:,} events, publishing to {url} namespace {namespace!r}...")
    started = time.perf_counter()
    procs = [
        ctx.Process(target=_writer, args=(cfg, url, namespace, str(db), i, writers, results)) for i in range(writers)
    ]
    for p in procs:
        p.start()
    try:
        stats = sorted((results.get(timeout=1800) for _ in procs), key=lambda s: s["index"])
        for p in procs:
            p.join(60)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    write_seconds = time.perf_counter() - started
    say("reading the dashboard from a reader process that pushed nothing...")
    answers = ctx.Queue()
    guild = base.generate_events(0, seed=config.seed, users=config.users, channels=config.channels).guilds[0]
    reader = ctx.Process(
        target=_reader, args=(url, namespace, config.top_channels, config.top_users, config.days, guild, answers)
    )
    reader.start()
    try:
        answer = answers.get(timeout=120)
    finally:
        reader.join(60)

    store = base.SQLiteStore(db, append=True)
    store.first_id = 0
    now = int(answer["now"])
    now_min = now // 60
    exact_rows = store.rows()
    exact_last_hour = store.distinct_users((now_min - 59) * 60, (now_min + 1) * 60)
    exact_all = store.distinct_users()
    shared_top = answer["top_channels"]
    exact_counts = store.channel_counts([c for c, _ in shared_top])
    exact_top = store.top_channels(config.top_channels)
    local_top: List[tuple] = []
    local_size = 0
    if "top_contributors" in answer:
        local_top, local_size = _in_process_leaderboard(store, now, config.top_users)
    last_day = now // 86_400
    sql_started = time.perf_counter()
    active_counts, cohorts_exact = store.active_users_and_retention(last_day, (None, guild), base.RETENTION_COHORTS)
    heatmap_exact = store.heatmap((last_day + 1 - config.days) * 86_400, (last_day + 1) * 86_400)
    history_sql_seconds = time.perf_counter() - sql_started
    store.close()
    active = [base.ActiveUsers(*row) for row in answer["active_users"]]
    active_exact = [base.ActiveUsers(g, *counts) for g, counts in zip((None, guild), active_counts)]
    retention_exact = [cohort(start, size, counts) for start, size, counts in cohorts_exact]

    problems: List[str] = []
    accepted = sum(s["accepted"] for s in stats)
    if answer["total_events_processed"] != accepted or exact_rows != accepted:
        problems.append(
            f"events: Redis {answer['total_events_processed']:,}, SQL {exact_rows:,}, accepted {accepted:,}"
        )
    for label, est, exact in (
        ("last hour", answer["unique_active_users_last_hour"], exact_last_hour),
        ("all time", answer["unique_users_all_time"], exact_all),
    ):
        if abs(est - exact) > base.hll_bound(exact):
            problems.append(f"unique users {label}: shared {est:,} vs exact {exact:,}")
    # Each writer's summary overcounts a channel by at most its events / capacity.
    bound = sum(math.ceil(s["processed"] / TOPK_CAPACITY) for s in stats)
    for channel, count in shared_top:
        if not exact_counts[channel] <= count <= exact_counts[channel] + bound:
            problems.append(f"channel {channel}: shared {count:,} vs exact {exact_counts[channel]:,} (+{bound})")
    if any(s["pending"] for s in stats):
        problems.append("a writer closed with events Redis had not acknowledged")
    if "top_contributors" in answer:
        problems += _leaderboard_problems(answer["top_contributors"], answer["total_ranked_users"], local_top, local_size)
    problems += base.history_problems(
        last_day, active, active_exact, answer["retention"], retention_exact, answer["heatmap"], heatmap_exact
    )

    w = lambda line="": print(line, file=out)  # noqa: E731
    w()
    history_days, history_events = base.history_plan(config)
    before = f" after {history_events:,} over the {history_days // 7} weeks before," if history_events else ""
    w(f"engagehub shared demo: {config.events:,} events{before} over {writers} writer processes, Redis {url}")
    w(f"  writers done in {write_seconds:.2f} s; pushes "
      + ", ".join(f"{s['accepted'] / s['push_seconds']:,.0f} ev/s" for s in stats if s["push_seconds"] > 0))
    w(f"  publishes acknowledged {sum(s['published_batches'] for s in stats):,}, "
      f"failed attempts {sum(s['publish_failures'] for s in stats):,}")
    w(f"Dashboard (reader process, {answer['analytics_ms']:.1f} ms; now = {_utc(now, '%Y-%m-%d %H:%M:%S')} UTC)")
    w(f"  {'':<28}{'shared':>10}{'exact SQL':>11}")
    w(f"  {'unique users, last hour':<28}{answer['unique_active_users_last_hour']:>10,}{exact_last_hour:>11,}")
    w(f"  {'unique users, all time':<28}{answer['unique_users_all_time']:>10,}{exact_all:>11,}")
    w(f"  {'events processed':<28}{answer['total_events_processed']:>10,}{exact_rows:>11,}")
    w(f"  top {len(shared_top)} channels (a count may exceed the exact one by <= {bound:,})")
    for i, (channel, count) in enumerate(shared_top, 1):
        w(f"    {i:>2}  {channel:<20}{count:>10,}{exact_counts[channel]:>11,}")
    same = [c for c, _ in shared_top] == [c for c, _ in exact_top]
    w(f"    same channels as the exact SQL top {len(exact_top)}: {'yes' if same else 'no (near-ties within the bound)'}")
    if "top_contributors" in answer:
        w(f"  leaderboard: {answer['total_ranked_users']:,} users ranked in Redis (SharedLeaderboard), "
          f"{local_size:,} in one in-process board fed the same updates; top {config.top_users}:")
        w(f"    {'rank':>4}  {'user':<22}{'shared score':>16}{'in-process':>16}")
        for i, row in enumerate(answer["top_contributors"]):
            ref = local_top[i] if i < len(local_top) else None
            same = ref is not None and ref[0] == row[0]
            w(f"    {row[1]:>4}  {row[0]:<22}{row[2]:>16.6f}"
              + (f"{ref[2]:>16.6f}" if same else f"  in-process: {ref[0] if ref else '-'}"))
    else:
        w("  leaderboard: skipped (engagehub.shared.SharedLeaderboard is not installed in this build)")
    w()
    base.print_history(
        out,
        last_day=last_day,
        days=config.days,
        active=active,
        active_exact=active_exact,
        retention=answer["retention"],
        retention_exact=retention_exact,
        heatmap=answer["heatmap"],
        heatmap_exact=heatmap_exact,
        query_seconds=answer["history_ms"] / 1e3,
        sql_seconds=history_sql_seconds,
        source="SharedAnalytics in the reader process",
    )
    if problems:
        w("CHECKS FAILED:")
        for p in problems:
            w(f"  - {p}")
        return 1
    w("all checks passed")
    return 0


__all__ = ["run"]
