"""engagehub.django against a real Django project (tests/python/django_project, SQLite):
the reference guide's flow (processor -> bulk_create_callback -> rows), a build hook,
a locked database (the batch fails with one WARNING line, is retried, and lands once
the lock is released), the worker start/stop hooks, no connection left open after a
stop, and delivery inside the caller's transaction (what a TestCase sees once the
synchronous mode exists); the app configured from ``settings.ENGAGEHUB`` (no I/O
when Django starts, readers for views, blocking and per event loop, settings
mistakes named). Waits are on conditions with timeouts, never bare sleeps."""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

django = pytest.importorskip("django", reason="Django is not installed (pip install django)")

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402
from django.test import TestCase, override_settings  # noqa: E402

import engagehub as eh  # noqa: E402

WAIT = 30.0
T0 = 1_700_000_000

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _setup_django(db_path: Path) -> None:
    os.environ["ENGAGEHUB_TEST_DB"] = str(db_path)
    os.environ["DJANGO_SETTINGS_MODULE"] = "django_project.settings"
    django.setup()
    call_command("migrate", verbosity=0)


# Autouse and module-scoped: set up before the TestCase class's setUpClass runs.
@pytest.fixture(scope="module", autouse=True)
def db_path(tmp_path_factory) -> Path:
    from django.conf import settings

    if settings.configured:
        return Path(settings.DATABASES["default"]["NAME"])
    path = tmp_path_factory.mktemp("django") / "events.sqlite3"
    _setup_django(path)
    return path


@pytest.fixture()
def models(db_path):
    from django_project.eventsapp import models

    models.DiscordEventLog.objects.all().delete()
    models.Reaction.objects.all().delete()
    yield models
    connection.close()


@pytest.fixture()
def worker_connections():
    """Every database connection opened by a thread other than the test's."""
    created: list = []
    main = threading.get_ident()

    def record(sender, connection, **kwargs):
        if threading.get_ident() != main:
            created.append(connection)

    connection_created.connect(record, weak=False)
    yield created
    connection_created.disconnect(record)


def wait_for(predicate, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        tick.wait(0.01)


def test_reference_guide_flow_saves_every_event_with_its_fields(models, worker_connections):
    from engagehub.django import bulk_create_callback

    processor = eh.EventStreamProcessor(
        buffer_size=16384, num_threads=2, batch_size=100, flush_interval_ms=1000, max_retries=10
    )
    processor.set_flush_callback(bulk_create_callback(models.DiscordEventLog))
    for i in range(1000):
        assert processor.push_event("message", f"user{i % 37}", f"channel{i % 3}", T0 + i)
    processor.flush_now(timeout=WAIT)

    log = models.DiscordEventLog.objects
    assert log.count() == 1000
    s = processor.stats()
    assert (s.delivered, s.dead_lettered) == (1000, 0)
    row = log.get(user_id="user5", timestamp=datetime.fromtimestamp(T0 + 5, tz=timezone.utc))
    assert (row.event_type, row.channel_id, row.message_id, row.metadata) == ("message", "channel2", "", {})
    assert row.timestamp.tzinfo is not None
    assert log.filter(channel_id="channel0").count() == 334
    # CONN_MAX_AGE = 0: each worker closed its connection after its batch.
    assert worker_connections and all(c.connection is None for c in worker_connections)
    processor.close()


def test_build_hook_maps_any_model_and_the_payload(models):
    from engagehub.django import bulk_create_callback

    def build(event):
        return models.Reaction(emoji=event["payload"].decode(), by=event["user_id"], at=event["timestamp"])

    with eh.EventStreamProcessor(64, 1, 10, 50) as processor:
        processor.set_flush_callback(bulk_create_callback(models.Reaction, build=build, batch_size=3))
        for i, emoji in enumerate(["👍", "🎉", "❤️", "👀"]):
            processor.push_event("reaction", f"u{i}", "c1", T0 + i, payload=emoji.encode())
        processor.flush_now(timeout=WAIT)
    assert list(models.Reaction.objects.order_by("at").values_list("emoji", "by", "at")) == [
        ("👍", "u0", T0), ("🎉", "u1", T0 + 1), ("❤️", "u2", T0 + 2), ("👀", "u3", T0 + 3),
    ]


def test_default_mapping_needs_the_guide_fields(models):
    from engagehub.django import bulk_create_callback

    with pytest.raises(TypeError, match="has no field event_type .or type., user_id, channel_id, timestamp.*build="):
        bulk_create_callback(models.Reaction)
    with pytest.raises(ValueError, match="batch_size"):
        bulk_create_callback(models.DiscordEventLog, batch_size=0)


def test_event_time_is_naive_local_without_use_tz(db_path):
    from engagehub.django import event_time

    assert event_time(T0) == datetime.fromtimestamp(T0, tz=timezone.utc)
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Paris"):
        assert event_time(T0) == datetime(2023, 11, 14, 23, 13, 20)


def test_locked_database_fails_the_batch_with_one_warning_then_it_lands(models, db_path, caplog, worker_connections):
    from engagehub.django import bulk_create_callback

    caplog.set_level(logging.WARNING, logger="engagehub")
    processor = eh.EventStreamProcessor(64, 1, 10, 20, max_retries=30, retry_backoff_ms=10)
    processor.set_flush_callback(bulk_create_callback(models.DiscordEventLog))
    # Another connection holds the write lock; the test settings' busy timeout is 0.2 s.
    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        for i in range(10):
            assert processor.push_event("message", f"user{i}", "general", T0 + i)
        wait_for(lambda: processor.stats().failures >= 2, "two failed attempts")
        assert models.DiscordEventLog.objects.count() == 0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    processor.flush_now(timeout=WAIT)

    assert models.DiscordEventLog.objects.count() == 10
    s = processor.stats()
    assert (s.delivered, s.batches, s.dead_lettered) == (10, 1, 0)
    assert s.failures >= 2 and s.retries == s.failures
    assert isinstance(processor.last_callback_error, eh.errors.BatchFailed)
    assert isinstance(processor.last_callback_error.__cause__, django.db.OperationalError)
    records = [r for r in caplog.records if r.name == "engagehub"]
    assert len(records) == s.failures
    for r in records:
        message = r.getMessage()
        assert r.levelno == logging.WARNING and r.exc_info is None and "\n" not in message
        assert "eventsapp.DiscordEventLog" in message and "database is locked" in message
    # The failed attempts' connections were closed too (errors, then CONN_MAX_AGE = 0).
    assert all(c.connection is None for c in worker_connections)
    processor.close()


def test_worker_hooks_start_per_process_and_stop_closes_persistent_connections(models, worker_connections):
    from engagehub.django import WorkerProcessor, bulk_create_callback, on_worker_start, on_worker_stop

    callback = bulk_create_callback(models.DiscordEventLog, using="persistent")
    events = WorkerProcessor(64, 2, 10, 50, flush_callback=callback)
    assert not events.started
    on_worker_start()  # gunicorn post_fork
    assert events.started
    processor = events.processor
    for i in range(25):
        assert events.push_event("message", f"user{i}", "general", T0 + i)
    events.flush_now(timeout=WAIT)
    assert models.DiscordEventLog.objects.count() == 25
    # CONN_MAX_AGE = None: the worker threads keep their connections between batches.
    persistent = [c for c in worker_connections if c.alias == "persistent"]
    assert persistent and any(c.connection is not None for c in persistent)

    for i in range(25, 30):
        events.push_event("message", f"user{i}", "general", T0 + i)
    on_worker_stop()  # gunicorn worker_exit: flushes, then closes every connection
    assert processor.closed and not events.started
    assert all(c.connection is None for c in worker_connections)
    assert all(c.connection is None for c in django.db.connections.all(initialized_only=True))
    assert models.DiscordEventLog.objects.count() == 30

    # Used again after a stop: a fresh processor; `with` stops it.
    with events as again:
        assert again is not processor and events.push_event("message", "late", "general", T0)
    assert again.closed and models.DiscordEventLog.objects.count() == 31


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_gets_its_own_processor(db_path):
    from engagehub.django import WorkerProcessor

    delivered: list = []
    events = WorkerProcessor(64, 1, 10, 20, flush_callback=delivered.extend)
    parent = events.start()  # as in a gunicorn master with preload_app
    pid = os.fork()
    if pid == 0:  # the worker: a new processor, delivering in this process
        code = 1
        try:
            if not events.started and events.processor is not parent:
                events.push_event("message", "child", "c", T0)
                events.flush_now(timeout=WAIT)
                code = 0 if [e["user_id"] for e in delivered] == ["child"] else 2
            events.stop()
        finally:
            os._exit(code)  # the inherited processor is never freed in the child
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert events.processor is parent and events.push_event("message", "parent", "c", T0)
    events.flush_now(timeout=WAIT)
    assert [e["user_id"] for e in delivered] == ["parent"]
    events.stop()


def test_readme_build_hook_with_event_time_and_a_json_payload(models):
    import json

    from engagehub.django import bulk_create_callback, event_time

    DiscordEventLog = models.DiscordEventLog
    callback = bulk_create_callback(DiscordEventLog, build=lambda e: DiscordEventLog(
        event_type=e["type"], user_id=e["user_id"], channel_id=e["channel_id"],
        timestamp=event_time(e["timestamp"]), metadata=json.loads(e.get("payload", b"{}"))))
    with eh.EventStreamProcessor(64, 1, 10, 50) as processor:
        processor.set_flush_callback(callback)
        processor.push_event("message", "u1", "general", T0, payload=b'{"content": "hi"}')
        processor.push_event("join", "u2", "general", T0 + 1)
        processor.flush_now(timeout=WAIT)
    rows = list(DiscordEventLog.objects.order_by("timestamp").values_list("event_type", "metadata", "timestamp"))
    assert rows == [
        ("message", {"content": "hi"}, datetime.fromtimestamp(T0, tz=timezone.utc)),
        ("join", {}, datetime.fromtimestamp(T0 + 1, tz=timezone.utc)),
    ]


def test_readme_setup_with_metrics_instrumented_callback(models, worker_connections):
    """The README's WorkerProcessor (keyword arguments) with an instrumented callback:
    registered for metrics, and stop still finds the callback's connections."""
    pytest.importorskip("prometheus_client", reason="prometheus_client is not installed")
    from prometheus_client import CollectorRegistry, generate_latest

    from engagehub.django import WorkerProcessor, bulk_create_callback, on_worker_stop
    from engagehub.metrics import instrument_callback, register

    registry = CollectorRegistry()
    processor = WorkerProcessor(
        buffer_size=16384, num_threads=4, batch_size=500, flush_interval_ms=1000,
        flush_callback=instrument_callback(
            bulk_create_callback(models.DiscordEventLog, using="persistent"), registry=registry
        ),
    )
    register(processor=processor, registry=registry)
    for i in range(40):
        assert processor.push_event("message", f"user{i}", "general", T0 + i)
    processor.flush_now(timeout=WAIT)
    text = generate_latest(registry).decode()
    assert "engagehub_processor_delivered_total 40.0" in text
    assert "engagehub_flush_batch_events_sum 40.0" in text
    assert any(c.connection is not None for c in worker_connections)
    on_worker_stop()
    assert worker_connections and all(c.connection is None for c in worker_connections)
    assert models.DiscordEventLog.objects.count() == 40
    # Stopped: a scrape skips it and does not start a new one.
    assert "\nengagehub_processor_delivered_total " not in generate_latest(registry).decode()
    assert not processor.started


def test_delivery_in_the_callers_transaction_rolls_back_with_it(models):
    """What the synchronous mode (num_threads=0, delivery inside flush_now) will do
    under a TestCase: the callback runs on the caller's thread inside its atomic
    block, nests a savepoint, and leaves the caller's connection open."""
    from engagehub.django import bulk_create_callback

    callback = bulk_create_callback(models.DiscordEventLog)
    batch = [{"type": "message", "user_id": f"u{i}", "channel_id": "c", "timestamp": T0 + i} for i in range(3)]
    with transaction.atomic():
        callback(batch)
        assert models.DiscordEventLog.objects.count() == 3
        assert connection.connection is not None and connection.in_atomic_block
        transaction.set_rollback(True)
    assert models.DiscordEventLog.objects.count() == 0


class SynchronousDeliveryInATestCase(TestCase):
    def test_callback_in_the_test_thread_keeps_the_test_transaction(self):
        from django_project.eventsapp.models import DiscordEventLog

        from engagehub.django import bulk_create_callback

        callback = bulk_create_callback(DiscordEventLog)
        callback([{"type": "join", "user_id": "u1", "channel_id": "c", "timestamp": T0}])
        callback([{"type": "join", "user_id": "u2", "channel_id": "c", "timestamp": T0}])
        self.assertEqual(DiscordEventLog.objects.filter(event_type="join").count(), 2)
        self.assertFalse(connection.needs_rollback)


class SynchronousProcessorInATestCase(TestCase):
    """num_threads=0: flush_now() delivers on the test's thread, inside the
    TestCase's transaction, so its rollback removes the rows (the tests run in
    name order: the second sees none of the first's rows)."""

    def test_a_flush_writes_the_rows_inside_the_test_transaction(self):
        from django_project.eventsapp.models import DiscordEventLog

        from engagehub.django import bulk_create_callback

        with eh.EventStreamProcessor(num_threads=0, batch_size=10) as processor:
            processor.set_flush_callback(bulk_create_callback(DiscordEventLog))
            for i in range(25):
                processor.push_event("sync-mode", f"user{i % 7}", "general", T0 + i)
            self.assertEqual(DiscordEventLog.objects.filter(event_type="sync-mode").count(), 0)
            processor.flush_now()
            self.assertEqual(DiscordEventLog.objects.filter(event_type="sync-mode").count(), 25)
            self.assertEqual(processor.stats().batches, 3)
            self.assertTrue(connection.in_atomic_block)
        self.assertFalse(connection.needs_rollback)

    def test_b_the_rollback_removed_them(self):
        from django_project.eventsapp.models import DiscordEventLog

        self.assertEqual(DiscordEventLog.objects.filter(event_type="sync-mode").count(), 0)


# -- the app: ENGAGEHUB settings --------------------------------------------------------


def test_the_app_builds_the_shared_readers_from_settings_without_connecting(db_path):
    """django.setup() ran the app's ready() with ENGAGEHUB pointing at a socket
    no server listens on: nothing connected, nothing failed."""
    from django.apps import apps

    from engagehub import django as ehd
    from engagehub.shared import SharedAnalytics, SharedLeaderboard

    assert apps.get_app_config("engagehub").name == "engagehub.django"
    config = ehd.engagehub_settings()
    assert (config.namespace, config.leaderboard_key, config.window_minutes) == ("test-ns", "test-lb", 60)
    analytics, board = ehd.shared_analytics(), ehd.shared_leaderboard()
    assert isinstance(analytics, SharedAnalytics) and analytics is ehd.shared_analytics()
    assert analytics.namespace == "test-ns" and analytics.client is ehd.shared_redis()
    assert isinstance(board, SharedLeaderboard) and board.key == "test-lb" and board is ehd.shared_leaderboard()
    assert ehd.shared_leaderboard("weekly").key == "weekly"
    assert ehd.shared_redis().connection_pool.connection_kwargs["path"] == "/nonexistent/engagehub-tests.sock"


def test_views_read_what_writers_published_with_the_configured_clients(db_path):
    import asyncio

    pytest.importorskip("redis", reason="redis-py is not installed")
    from redis_server import RedisServer, require_server

    from engagehub import django as ehd

    with RedisServer(require_server(pytest), persistent=False) as server, override_settings(ENGAGEHUB={
        "REDIS_URL": server.url, "REDIS_OPTIONS": {"socket_timeout": 5}, "NAMESPACE": "site",
        "LEADERBOARD_KEY": "board", "CHECK_EVICTION": False,
    }):
        config = ehd.engagehub_settings()
        assert ehd.shared_redis().connection_pool.connection_kwargs["socket_timeout"] == 5
        with eh.EventStreamProcessor(num_threads=0, clock="event_time", redis=ehd.shared_redis(),
                                     namespace=config.namespace) as processor, \
                eh.Leaderboard(redis=ehd.shared_redis(), key=config.leaderboard_key) as board:
            processor.push_many([("message", "alice", "general", T0), ("message", "bob", "general", T0 + 1),
                                 ("message", "alice", "random", T0 + 2)])
            processor.flush_now(WAIT)
            board.update_user("alice", 25.0, T0)
            board.update_user("bob", 10.0, T0)
            assert board.publish_now(WAIT)
        assert ehd.shared_analytics().total_events_processed() == 3
        assert ehd.shared_analytics().get_top_channels(1) == [("general", 2)]
        assert [r["user_id"] for r in ehd.shared_leaderboard().get_top_users(5)] == ["alice", "bob"]

        async def async_view() -> tuple:
            analytics, leaderboard = ehd.async_shared_analytics(), ehd.async_shared_leaderboard()
            assert analytics is ehd.async_shared_analytics() and leaderboard is ehd.async_shared_leaderboard()
            answer = (await analytics.total_events_processed(), [r["user_id"] for r in await leaderboard.get_top_users(5)])
            client = ehd.async_shared_redis()
            await client.aclose()
            return answer, client

        # Two event loops (as Django gives each async view under WSGI): a client each.
        (first, client1), (second, client2) = asyncio.run(async_view()), asyncio.run(async_view())
        assert first == second == (3, ["alice", "bob"]) and client1 is not client2
    # The override is gone: the project's settings again.
    assert ehd.engagehub_settings().namespace == "test-ns" and ehd.shared_analytics().namespace == "test-ns"


@pytest.mark.parametrize(("value", "message"), [
    (None, "must be a dict"),
    ({}, "needs REDIS_URL"),
    ({"REDIS_URL": "redis://localhost", "NAMESPACES": "a"}, r"unknown keys \['NAMESPACES'\]"),
    ({"REDIS_URL": ""}, r"\['REDIS_URL'\] must be a non-empty str"),
    ({"REDIS_URL": "redis://localhost", "WINDOW_MINUTES": 0}, r"\['WINDOW_MINUTES'\] must be a positive int"),
    ({"REDIS_URL": "redis://localhost", "NAMESPACE": "{a}"}, r"\['NAMESPACE'\] must be a non-empty str without"),
    ({"REDIS_URL": "redis://localhost", "REDIS_OPTIONS": ["x"]}, r"\['REDIS_OPTIONS'\] must be a dict"),
])
def test_a_mistake_in_the_settings_is_named(db_path, value, message):
    from django.core.exceptions import ImproperlyConfigured

    from engagehub import django as ehd

    with override_settings(ENGAGEHUB=value):
        with pytest.raises(ImproperlyConfigured, match=message):
            ehd.shared_analytics()
    assert ehd.engagehub_settings().namespace == "test-ns"
