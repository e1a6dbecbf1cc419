"""A flush callback that raises ``errors.BatchFailed``: retried like any failure, but
logged as one WARNING line instead of an ERROR with a traceback."""

from __future__ import annotations

import logging
import threading

import engagehub as eh
from engagehub.errors import BatchFailed

WAIT = 30.0


def test_batch_failed_is_retried_and_logged_as_one_warning_line(caplog):
    attempts = []
    delivered = threading.Event()

    def flaky(batch):
        attempts.append(len(batch))
        if len(attempts) < 3:
            raise BatchFailed("database is locked")
        delivered.set()

    caplog.set_level(logging.WARNING, logger="engagehub")
    with eh.EventStreamProcessor(64, 1, 10, 20, max_retries=5, retry_backoff_ms=1) as p:
        p.set_flush_callback(flaky)
        for i in range(10):
            assert p.push_event("message", f"u{i}", "c", 1000 + i)
        p.flush_now(timeout=WAIT)
        assert delivered.is_set()
        s = p.stats()
        assert (s.delivered, s.failures, s.retries, s.dead_lettered) == (10, 2, 2, 0)
        assert isinstance(p.last_callback_error, BatchFailed)
    records = [r for r in caplog.records if r.name == "engagehub"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    for r in records:
        assert r.exc_info is None
        assert "\n" not in r.getMessage() and "database is locked" in r.getMessage()


def test_other_exceptions_still_log_an_error_with_the_traceback(caplog):
    def broken(batch):
        raise KeyError("bug")

    with eh.EventStreamProcessor(64, 1, 10, 20, max_retries=0) as p:
        p.set_flush_callback(broken)
        p.push_event("message", "u", "c", 1000)
        p.flush_now(timeout=WAIT)
        assert p.stats().dead_letter_batches == 1
    errors = [r for r in caplog.records if r.name == "engagehub" and r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None
