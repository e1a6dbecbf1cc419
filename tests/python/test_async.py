"""asyncio: coroutine flush callbacks awaited on their loop, aflush/aclose/async with,
the WouldDeadlock guard for blocking waits on that loop, and a discord.py-style bot
(no discord dependency: an async event source simulating on_message) writing through
an aiosqlite sink, shutdown included, nothing lost. Waits are on conditions with
timeouts (aflush, asyncio.wait_for), never bare sleeps."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

import engagehub as eh

WAIT = 30.0
T0 = 1_700_000_000


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT))


def test_coroutine_callback_needs_a_loop_and_a_plain_one_refuses_it():
    async def sink(batch):
        pass

    async def main():
        loop = asyncio.get_running_loop()
        with eh.EventStreamProcessor(num_threads=1) as p:
            with pytest.raises(TypeError, match="coroutine function"):
                p.set_flush_callback(sink)
            with pytest.raises(TypeError, match="plain function"):
                p.set_flush_callback(lambda b: None, loop=loop)
            with pytest.raises(TypeError, match="coroutine function"):
                p.set_dead_letter_callback(sink)
            with pytest.raises(TypeError):
                p.set_flush_callback(sink, loop="not a loop")
            p.set_flush_callback(sink, loop=loop)
            await p.aclose()

    run(main())


def test_coroutine_callback_is_awaited_on_its_loop_with_bounded_batches_in_flight():
    seen: list = []
    threads: set = set()
    in_flight = 0
    peak = 0

    async def main():
        nonlocal in_flight, peak
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        async def sink(batch):
            nonlocal in_flight, peak
            threads.add(threading.get_ident())
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0)  # really awaited on the loop
            seen.extend(e["user_id"] for e in batch)
            in_flight -= 1

        p = eh.EventStreamProcessor(num_threads=2, batch_size=10, flush_interval_ms=10)
        p.set_flush_callback(sink, loop=loop)
        async with p:
            assert p.push_many([("message", f"u{i}", "c", T0 + i) for i in range(500)]) == 500
            await p.aflush()
            assert len(seen) == 500
            assert p.stats().delivered == 500
        assert p.closed
        assert threads == {loop_thread}
        assert 1 <= peak <= 2, "at most num_threads batches await at once"

    run(main())


def test_blocking_waits_on_the_callbacks_loop_raise_would_deadlock():
    async def sink(batch):
        pass

    async def main():
        p = eh.EventStreamProcessor(num_threads=1, batch_size=10, flush_interval_ms=10)
        p.set_flush_callback(sink, loop=asyncio.get_running_loop())
        p.push_event("message", "u1", "c", T0)
        with pytest.raises(eh.WouldDeadlock, match="aflush"):
            p.flush_now()
        with pytest.raises(eh.WouldDeadlock, match="aclose"):
            p.close()
        assert not p.closed, "the refused close changed nothing"
        await p.aflush()
        await p.aclose()
        assert p.closed

    run(main())


def test_failing_async_sink_is_retried_then_dead_lettered():
    attempts = 0
    dead: list = []

    async def main():
        nonlocal attempts
        loop = asyncio.get_running_loop()

        async def sink(batch):
            nonlocal attempts
            attempts += 1
            await asyncio.sleep(0)
            raise ConnectionError("database down")

        async def dead_letter(events, reason):
            await asyncio.sleep(0)
            dead.append((len(events), reason))

        p = eh.EventStreamProcessor(num_threads=1, batch_size=100, max_retries=2, retry_backoff_ms=1)
        p.set_flush_callback(sink, loop=loop)
        p.set_dead_letter_callback(dead_letter, loop=loop)
        async with p:
            p.push_many([("message", f"u{i}", "c", T0) for i in range(5)])
            await p.aflush()
            s = p.stats()
            assert (s.delivered, s.failures, s.retries, s.dead_lettered) == (0, 3, 2, 5)
        assert attempts == 3
        assert len(dead) == 1 and dead[0][0] == 5 and "database down" in dead[0][1]
        assert isinstance(p.last_callback_error, ConnectionError)

    run(main())


def test_a_plain_callback_returning_a_coroutine_fails_instead_of_counting_as_delivered():
    dead: list = []

    async def sink(batch):  # pragma: no cover - never awaited, by design
        raise AssertionError

    p = eh.EventStreamProcessor(num_threads=1, max_retries=0)
    p.set_flush_callback(lambda batch: sink(batch))
    p.set_dead_letter_callback(lambda events, reason: dead.append(reason))
    p.push_event("message", "u1", "c", T0)
    p.flush_now(WAIT)
    assert p.stats().delivered == 0 and p.stats().dead_lettered == 1
    assert "awaitable" in dead[0]
    p.close()


def test_a_closed_loop_fails_the_batches_instead_of_hanging_the_close():
    dead: list = []

    async def sink(batch):  # pragma: no cover - the loop is gone
        pass

    async def setup():
        p = eh.EventStreamProcessor(num_threads=1, flush_interval_ms=60_000, max_retries=1, retry_backoff_ms=1)
        p.set_flush_callback(sink, loop=asyncio.get_running_loop())
        p.set_dead_letter_callback(lambda events, reason: dead.append(reason))
        p.push_event("message", "u1", "c", T0)
        return p

    p = asyncio.run(setup())  # the loop is closed when this returns
    p.close()  # not on a running loop: allowed; the batch fails and is dead-lettered
    assert dead and "closed" in dead[0]


# -- the discord.py-style bot ---------------------------------------------------

aiosqlite = pytest.importorskip("aiosqlite", reason="aiosqlite is not installed (pip install aiosqlite)")


class Message:
    """What discord.py hands on_message, reduced to what the bot reads."""

    def __init__(self, i: int, bot: bool = False) -> None:
        self.id = i
        self.author_id = f"user{i % 37}"
        self.author_bot = bot
        self.channel_id = f"channel{i % 5}"
        self.created_at = T0 + i


class EngagementBot:
    """The reference guide's bot: on_message pushes, shutdown flushes and closes."""

    def __init__(self, processor: eh.EventStreamProcessor) -> None:
        self.processor = processor
        self.pushed = 0

    async def on_message(self, message: Message) -> None:
        if message.author_bot:
            return
        if self.processor.push_event("message", message.author_id, message.channel_id, message.created_at):
            self.pushed += 1

    async def shutdown(self) -> None:
        # The guide's shutdown() called processor.flush_now() here, on the loop
        # the async sink needs: a deadlock. aflush/aclose keep the loop free.
        await self.processor.aflush()
        await self.processor.aclose()


async def event_source(queue: asyncio.Queue, n: int) -> None:
    """Messages arriving over time, as a gateway would deliver them."""
    for i in range(n):
        await queue.put(Message(i, bot=(i % 10 == 9)))
        if i % 50 == 0:
            await asyncio.sleep(0.001)
    await queue.put(None)


async def bot_main(db_path: str, n: int, fail_first: int = 0) -> tuple:
    loop = asyncio.get_running_loop()
    db = await aiosqlite.connect(db_path)
    await db.execute("CREATE TABLE events (type TEXT, user_id TEXT, channel_id TEXT, ts INTEGER)")
    await db.commit()
    failures = 0

    async def save_events(events):
        nonlocal failures
        if failures < fail_first:
            failures += 1
            raise sqlite3.OperationalError("database is locked")
        await db.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?)",
            [(e["type"], e["user_id"], e["channel_id"], e["timestamp"]) for e in events],
        )
        await db.commit()

    processor = eh.EventStreamProcessor(
        buffer_size=16384, num_threads=2, batch_size=100, flush_interval_ms=50, retry_backoff_ms=1
    )
    processor.set_flush_callback(save_events, loop=loop)
    bot = EngagementBot(processor)
    queue: asyncio.Queue = asyncio.Queue(maxsize=256)
    source = asyncio.create_task(event_source(queue, n))
    while (message := await queue.get()) is not None:
        await bot.on_message(message)
    await source
    unique = processor.get_unique_users_last_hour()  # noqa: F841 - the guide's query
    await bot.shutdown()
    async with db.execute("SELECT COUNT(*), COUNT(DISTINCT user_id) FROM events") as cur:
        rows, users = await cur.fetchone()
    await db.close()
    return bot.pushed, rows, users, processor


def test_discord_style_bot_saves_every_message_through_an_async_sink(tmp_path):
    pushed, rows, users, processor = run(bot_main(str(tmp_path / "bot.sqlite3"), 3000))
    assert pushed == 2700  # every tenth message is from a bot and skipped
    assert rows == pushed, "nothing lost between on_message and the database"
    assert users == 37
    assert processor.closed


def test_discord_style_bot_with_a_flaky_sink_retries_and_still_loses_nothing(tmp_path):
    pushed, rows, _, _ = run(bot_main(str(tmp_path / "bot.sqlite3"), 1000, fail_first=2))
    assert rows == pushed == 900


def _readme_asyncio_example() -> str:
    """The docs' `<!-- example: asyncio-bot -->` block (docs/asyncio.md;
    test_doc_examples.py only runs it standalone, which defines run_bot; this
    drives it)."""
    from doc_examples import all_examples, python_source

    return python_source(all_examples(), "asyncio-bot")


def test_readme_asyncio_bot_example_saves_every_message(tmp_path, capsys):
    from datetime import datetime, timezone
    from types import SimpleNamespace

    namespace: dict = {}
    exec(compile(_readme_asyncio_example(), "docs/asyncio.md", "exec"), namespace)

    async def gateway(n: int):
        """discord.py's message stream, simulated: every seventh author is a bot."""
        for i in range(n):
            yield SimpleNamespace(
                author=SimpleNamespace(id=1000 + i % 23, bot=(i % 7 == 6)),
                channel=SimpleNamespace(id=50 + i % 4),
                created_at=datetime.fromtimestamp(T0 + i, tz=timezone.utc),
            )
            if i % 100 == 0:
                await asyncio.sleep(0)

    db_path = tmp_path / "readme.sqlite3"
    run(namespace["run_bot"](gateway(1400), str(db_path)))
    rows = sqlite3.connect(db_path).execute("SELECT COUNT(*), COUNT(DISTINCT user_id) FROM events").fetchone()
    assert rows == (1200, 23), "every human message saved, the bots' skipped"
    assert capsys.readouterr().out.strip()  # the example's query line


def test_processor_collected_on_its_callbacks_loop_frees_off_the_loop():
    """The gc backstop on the loop thread: the blocking native free runs on a
    helper thread, so the loop keeps running the batches the free delivers."""
    import gc

    async def main():
        delivered = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def sink(batch):
            await asyncio.sleep(0)
            loop.call_soon(delivered.set)

        p = eh.EventStreamProcessor(num_threads=1, flush_interval_ms=60_000)
        p.set_flush_callback(sink, loop=loop)
        p.push_event("message", "u1", "c", T0)
        del p
        gc.collect()
        await asyncio.wait_for(delivered.wait(), WAIT)

    run(main())
