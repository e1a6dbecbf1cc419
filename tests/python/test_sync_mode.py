"""Synchronous mode (num_threads=0): no worker threads; events are sketched and
delivered on the thread that calls flush_now() or close(), inside the call."""

from __future__ import annotations

import asyncio
import threading

import pytest

import engagehub as eh

T0 = 1_700_000_000
WAIT = 30.0


def test_callback_runs_on_the_calling_thread_and_one_flush_delivers_every_thread_s_pushes():
    seen: list = []
    threads: set = set()

    def sink(batch):
        threads.add(threading.get_ident())
        seen.extend(e["user_id"] for e in batch)

    p = eh.EventStreamProcessor(buffer_size=4096, num_threads=0, batch_size=64)
    p.set_flush_callback(sink)

    def producer(t: int) -> None:
        for i in range(250):
            assert p.push_event("message", f"t{t}-u{i}", f"channel{t}", T0 + i)

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT)
    # Nothing runs until a flush: not delivered, not sketched.
    s = p.stats()
    assert (s.accepted, s.processed, s.delivered) == (1000, 0, 0)
    assert seen == [] and p.unique_users(None) == 0 and p.get_top_channels(4) == []
    p.flush_now()
    assert threads == {threading.get_ident()}
    assert sorted(seen) == sorted(f"t{t}-u{i}" for t in range(4) for i in range(250))
    s = p.stats()
    assert (s.processed, s.delivered, s.queue_len, s.batches) == (1000, 1000, 0, 16)
    assert abs(p.unique_users(None) - 1000) <= 25  # HyperLogLog: ±0.81% standard error
    assert sorted(p.get_top_channels(4)) == [(f"channel{t}", 250) for t in range(4)]
    # close() delivers the rest, here too, in push order.
    seen.clear()
    for i in range(3):
        p.push_event("message", f"last{i}", "c", T0)
    p.close()
    assert seen == ["last0", "last1", "last2"]
    assert threads == {threading.get_ident()}


def test_block_overflow_is_refused_and_a_full_ring_drops():
    with pytest.raises(eh.InvalidArgument, match="BLOCK"):
        eh.EventStreamProcessor(num_threads=0, overflow="block")
    with pytest.raises(eh.InvalidArgument):
        eh.EventStreamProcessor(num_threads=-1)
    with eh.EventStreamProcessor(buffer_size=4, num_threads=0) as p:
        assert all(p.push_event("message", f"u{i}", "c", T0) for i in range(4))
        assert not p.push_event("message", "u4", "c", T0)
        assert p.events_dropped() == 1


def test_blocking_calls_from_the_callback_are_refused():
    refused: list = []
    with eh.EventStreamProcessor(num_threads=0) as p:

        def sink(batch):
            for call in (p.flush_now, p.close):
                try:
                    call()
                except eh.WouldDeadlock:
                    refused.append(call.__name__)
            assert p.push_event("message", "from-callback", "c", T0)

        p.set_flush_callback(sink)
        p.push_event("message", "u1", "c", T0)
        p.flush_now()
        assert refused == ["flush_now", "close"]
        assert p.stats().queue_len == 1, "the callback's push waits for the next flush"


def test_failures_are_retried_then_dead_lettered_in_the_caller():
    dead: list = []
    p = eh.EventStreamProcessor(num_threads=0, max_retries=2, retry_backoff_ms=1)
    p.set_flush_callback(lambda batch: 1 / 0)
    p.set_dead_letter_callback(lambda events, reason: dead.append((threading.get_ident(), len(events))))
    p.push_many([("message", f"u{i}", "c", T0) for i in range(5)])
    p.flush_now()
    assert dead == [(threading.get_ident(), 5)]
    assert p.stats().failures == 3
    p.close()


def test_async_callback_in_synchronous_mode_through_aflush():
    seen: list = []

    async def main():
        async def sink(batch):
            await asyncio.sleep(0)
            seen.extend(batch)

        async with eh.EventStreamProcessor(num_threads=0) as p:
            p.set_flush_callback(sink, loop=asyncio.get_running_loop())
            p.push_many([("message", f"u{i}", "c", T0) for i in range(10)])
            with pytest.raises(eh.WouldDeadlock):
                p.flush_now()
            await p.aflush()
            assert len(seen) == 10
            p.push_event("message", "last", "c", T0)
        assert len(seen) == 11

    asyncio.run(asyncio.wait_for(main(), WAIT))


def test_keyboard_interrupt_in_a_synchronous_callback_is_re_raised_by_flush_now():
    dead: list = []

    def sink(batch):
        raise KeyboardInterrupt  # what Ctrl-C does to a callback running on this thread

    p = eh.EventStreamProcessor(num_threads=0, max_retries=0)
    p.set_flush_callback(sink)
    p.set_dead_letter_callback(lambda events, reason: dead.append(len(events)))
    p.push_event("message", "u1", "c", T0)
    with pytest.raises(KeyboardInterrupt):
        p.flush_now()
    assert dead == [1], "the interrupted batch failed like any other: dead-lettered, not lost"
    p.flush_now()  # the interrupt was raised once
    p.close()
