"""The parts of :class:`engagehub.EventStreamProcessor`, one concern per module.

The public class (:mod:`engagehub.processor`) is assembled from them; nothing here
is public API.

* :mod:`.config`: the constructor's arguments checked and turned into the native
  ``eh_processor_config``; the names of the overflow modes and clocks; the slice
  every blocking wait is cut into (so Ctrl-C gets through).
* :mod:`.intake`: ``push_event`` and ``push_many``: the compiled calls and the
  general (cffi) paths they fall back to, under both overflow modes.
* :mod:`.callbacks`: the flush and dead-letter callbacks: the cffi trampolines,
  the registry of callback contexts, the GIL hand-off's delivery context.
* :mod:`.decode`: native batches as dicts, tuples or :class:`EventColumns`.
* :mod:`.asyncio_bridge`: coroutine callbacks on an event loop, ``aflush``,
  ``aclose`` and ``async with``.
* :mod:`.lifecycle`: the live processors: the garbage collector's native free,
  ``os.fork`` and interpreter exit.
* :mod:`.queries`: ``stats`` and the analytics (unique users, top channels,
  channel counts).
* :mod:`.publishing`: ``redis=``: the publisher that shares the analytics
  through Redis.

The drop-in names of the C++ extension (``flush_now``, ``get_top_channels``...)
are :class:`engagehub._compat.ProcessorDropIns`.
"""
