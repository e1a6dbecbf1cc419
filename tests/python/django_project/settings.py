"""Settings of the test project. The database file comes from ``ENGAGEHUB_TEST_DB``
(the tests point it at a temporary folder); the SQLite busy timeout is short so a
locked database fails a batch quickly instead of hanging the test."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "engagehub-tests-only"
DEBUG = False
INSTALLED_APPS = ["engagehub.django", "django_project.eventsapp"]
# The engagehub.django app: no server listens here, and nothing connects until a
# query (the tests that query override this).
ENGAGEHUB = {
    "REDIS_URL": "unix:///nonexistent/engagehub-tests.sock",
    "NAMESPACE": "test-ns",
    "LEADERBOARD_KEY": "test-lb",
}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_NAME = os.environ.get("ENGAGEHUB_TEST_DB", str(BASE_DIR / "db.sqlite3"))
_OPTIONS = {"timeout": float(os.environ.get("ENGAGEHUB_TEST_DB_TIMEOUT", "0.2"))}
DATABASES = {
    # CONN_MAX_AGE = 0 (Django's default): a connection lasts one request, or here one batch.
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _NAME, "OPTIONS": _OPTIONS},
    # The same file through persistent connections (kept until closed).
    "persistent": {"ENGINE": "django.db.backends.sqlite3", "NAME": _NAME, "OPTIONS": _OPTIONS, "CONN_MAX_AGE": None},
}
