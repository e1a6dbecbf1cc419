"""The user guide's Django site (docs/guide.md, the files marked
``project=django-guide``), assembled as the page lays it out and run, so the page's
deployment cannot rot:

* the bot (myapp/bot.py) pushes messages and awards points; its flush callback
  (myapp/events.py) writes every event into the database; its shutdown publishes
  the leaderboard and the analytics to Redis;
* the settings (settings_excerpt.py: the engagehub.django app and ENGAGEHUB) give
  every file its client, namespace and leaderboard key;
* the views (myapp/views.py) answer from Redis what one in-process board and
  processor fed the same messages answer, in a process that wrote nothing;
* a database outage: the events are processed but not saved, and the dashboard's
  ``events_not_saved`` (every writer's published dead-lettered count) says how many;
* the gunicorn hooks (gunicorn.conf.py) start and stop a worker's processor, which
  delivers the events the views pushed;
* the metrics of docs/operations.md: the bot's port exports its writers and the
  shared state (myapp/bot_metrics.py); the site's /metrics/ sums the workers'
  files under PROMETHEUS_MULTIPROC_DIR (myapp/metrics.py), and a worker marked dead
  leaves its gauges;
* the app's own tests (myapp/tests.py, "Testing your app") pass under Django's test
  runner.

Each part runs in a fresh interpreter (Django's settings are per process; the
in-process Django tests use another project). Skipped without Django, redis-py or
redis-server, or prometheus_client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from doc_examples import all_examples, project_files
from redis_server import redis_url

pytest.importorskip("django", reason="Django is not installed (pip install 'engagehub[django]')")
pytest.importorskip("prometheus_client", reason="prometheus_client is not installed (pip install 'engagehub[metrics]')")

PROJECT = "django-guide"
TIMEOUT = 180

SETTINGS = '''\
import os

from settings_excerpt import ENGAGEHUB, INSTALLED_APPS  # the guide's

SECRET_KEY = "guide-project-test"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["GUIDE_DB"]}}
ROOT_URLCONF = "myapp.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ENGAGEHUB = {**ENGAGEHUB, "REDIS_URL": os.environ["GUIDE_REDIS_URL"]}
'''

# The messages the bot gets: 200 from 7 users in 3 channels over ten minutes
# before NOW (the first argument).
MESSAGES = """\
import sys
NOW = int(sys.argv[1])
MESSAGES = [(1000 + i % 7, 50 + i % 3, NOW - 600 + i) for i in range(200)]

from prometheus_client.parser import text_string_to_metric_families


def metric(text, name, **labels):
    # A sample's value in a Prometheus text page, or None.
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None
"""

# What the bot's process does, driven from outside (the page's files unchanged).
BOT = MESSAGES + """\
import django

django.setup()
from django.core.management import call_command

from prometheus_client import REGISTRY, generate_latest

from myapp import bot
from myapp.bot_metrics import serve_metrics
from myapp.management.commands import runbot
from myapp.models import DiscordEventLog

call_command("migrate", run_syncdb=True, verbosity=0)
assert runbot.Command().help
serve_metrics(port=0)  # (any free port: the page is read here, not over HTTP)
for user, channel, ts in MESSAGES:
    bot.record("message", user, channel, ts)
bot.processor.flush_now()
page = generate_latest(REGISTRY).decode()
assert metric(page, "engagehub_processor_processed_total") == 200, page
assert metric(page, "engagehub_leaderboard_users") == 7, page
assert 0 <= metric(page, "engagehub_processor_publish_age_seconds") < 60, page
bot.shutdown()
assert DiscordEventLog.objects.count() == 200, DiscordEventLog.objects.count()
assert DiscordEventLog.objects.filter(event_type="message", user_id="1000", channel_id="50").exists()
print("bot: 200 events written")
# The shared state, every writer's, from the bot's registry (its own writers are closed).
page = generate_latest(REGISTRY).decode()
assert metric(page, "engagehub_shared_events_total", namespace="guild-analytics") == 200, page
assert metric(page, "engagehub_shared_events_dead_lettered_total", namespace="guild-analytics") == 0, page
assert metric(page, "engagehub_shared_leaderboard_users", board="lb") == 7, page
assert metric(page, "engagehub_processor_processed_total") is None  # stopped: not exported
print("bot metrics: its writers and the shared state")
"""

# A web process that wrote nothing: its views against an in-process board and
# processor fed the same messages; then an outage and a gunicorn worker's life.
SITE = MESSAGES + """\
import os
import runpy
from types import SimpleNamespace

import django

django.setup()
from django.db import connection
from django.test import Client

from engagehub import EventStreamProcessor, Leaderboard
from myapp import events
from myapp.models import DiscordEventLog

board = Leaderboard(decay_factor=0.95)
local = EventStreamProcessor(num_threads=0)
for user, channel, ts in MESSAGES:
    board.update_user(str(user), 5.0, ts)
    local.push_event("message", str(user), str(channel), ts)
local.flush_now()
client = Client()

top = client.get("/leaderboard/?limit=3").json()
assert top["ranked_users"] == len(board) == 7, top
assert [(r["user_id"], r["rank"]) for r in top["top"]] == [(r["user_id"], r["rank"]) for r in board.get_top_users(3)], top
dash = client.get("/dashboard/").json()
assert dash["unique_users_last_hour"] == local.get_unique_users_last_hour() == 7, dash
assert [tuple(row) for row in dash["top_channels"]] == local.get_top_channels(5), dash
assert dash["events_processed"] == 200 and dash["events_not_saved"] == 0, dash
print("views: leaderboard and dashboard from Redis")

# A database outage: processed (and published), not saved, and the dashboard says so.
with connection.cursor() as cursor:
    cursor.execute("ALTER TABLE myapp_discordeventlog RENAME TO myapp_hidden")
for i in range(10):
    events.processor.push_event("message", "2000", "60", NOW - 5)
events.processor.stop()
with connection.cursor() as cursor:
    cursor.execute("ALTER TABLE myapp_hidden RENAME TO myapp_discordeventlog")
dash = client.get("/dashboard/").json()
assert dash["events_processed"] == 210 and dash["events_not_saved"] == 10, dash
assert DiscordEventLog.objects.count() == 200
print("outage: 10 events processed, not saved, shown on the dashboard")

# A gunicorn worker: the hooks start and stop its processor; the views push events.
conf = runpy.run_path("gunicorn.conf.py")
conf["post_fork"](None, None)
assert events.processor.started
best = top["top"][0]["user_id"]
assert client.get(f"/leaderboard/{best}/").json()["rank"] == 1
assert client.get("/leaderboard/nobody/").status_code == 404
conf["worker_exit"](None, None)
assert not events.processor.started
assert DiscordEventLog.objects.filter(event_type="rank_view").count() == 2
print("gunicorn hooks: the worker's events delivered at exit")

# /metrics/: the worker's files (PROMETHEUS_MULTIPROC_DIR), its stats() and its views' queries.
page = client.get("/metrics/").content.decode()
assert metric(page, "engagehub_processor_processed_total") == 2, page
assert metric(page, "engagehub_processor_queue_length") == 0, page
assert metric(page, "engagehub_shared_query_duration_seconds_count", reader="leaderboard",
              query="get_user_rank") == 2, page
conf["child_exit"](None, SimpleNamespace(pid=os.getpid()))  # the master, once the worker is gone
page = client.get("/metrics/").content.decode()
assert metric(page, "engagehub_processor_queue_length") is None, page
assert metric(page, "engagehub_processor_processed_total") == 2, page
print("metrics: one view of the workers")
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """The page's files in a project folder, settings and a Redis of its own."""
    files = project_files(all_examples(), PROJECT)
    assert {"myapp/models.py", "myapp/views.py", "myapp/tests.py", "gunicorn.conf.py"} <= set(files)
    root = tmp_path_factory.mktemp("guide-site")
    for path, example in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(example.code, encoding="utf-8")
    for package in {Path(p).parent for p in files if "/" in p}:
        for folder in (package, *package.parents):
            if str(folder) != ".":
                (root / folder / "__init__.py").touch()
    (root / "guide_settings.py").write_text(SETTINGS, encoding="utf-8")
    with redis_url(pytest) as url:
        yield root, url


def _run(site: tuple, code: str, *args: str) -> subprocess.CompletedProcess:
    root, url = site
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="guide_settings",
        GUIDE_DB=str(root / "site.sqlite3"),
        GUIDE_REDIS_URL=url,
        PYTHONPATH=os.pathsep.join([str(root), *(p for p in sys.path if p)]),
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if code == SITE:  # the site runs under gunicorn: prometheus_client's multiprocess mode
        metrics_dir = root / "prometheus-multiproc"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, *args]
    run = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, f"--- stdout\n{run.stdout}--- stderr\n{run.stderr}"
    return run


def test_the_bot_writes_and_the_site_reads_what_it_published(site: tuple) -> None:
    now = str(int(time.time()))
    bot_out = _run(site, BOT, now).stdout
    assert "bot: 200 events written" in bot_out and "bot metrics: its writers and the shared state" in bot_out
    out = _run(site, SITE, now).stdout
    assert "views: leaderboard and dashboard from Redis" in out
    assert "outage: 10 events processed, not saved, shown on the dashboard" in out
    assert "gunicorn hooks: the worker's events delivered at exit" in out
    assert "metrics: one view of the workers" in out


def test_the_apps_own_tests_pass(site: tuple) -> None:
    run = _run(site, "", "-m", "django", "test", "myapp.tests", "-v", "2")
    assert "test_events_are_saved_and_counted" in run.stderr
    assert "test_the_best_user_comes_first" in run.stderr
    assert "Ran 2 tests" in run.stderr and "OK" in run.stderr.splitlines(), run.stderr
