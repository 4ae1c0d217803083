"""Readings taken on their pace in a thread of their own: a live capture's
drains keep the monotonic pace whatever its consumer does with each one.

:func:`paced` runs `take` in a producer thread, on a :class:`Pacer`, and
hands what it returns to the consumer through a queue, in order. A slow
consumer makes a backlog, never a late reading: the kernel table still
needs room for the flows of one interval only. Nothing is dropped or
merged; a backlog past :data:`BACKLOG` readings is said once on the logger.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from typing import Callable, Generator, TypeVar, cast

from .durations import Pacer

log = logging.getLogger("pktstat_bpf")

T = TypeVar("T")

#: Readings taken and not yet handed to the consumer past which it is said
#: (once) that the consumer does not keep up. A consumer slowed for a while (a
#: burst of flows to write, a reader of its pipe that paused, a collection)
#: catches up within a few readings; 64 is a minute behind at the default 1 s
#: and still several seconds at 100 ms: no longer a pause, but a consumer
#: slower than the capture, whose backlog (one reading's records each) grows
#: for as long as the capture runs.
BACKLOG = 64

#: How often a producer waiting on the caller's `stop` event looks whether
#: the consumer has gone (an event cannot be waited on together with another).
HALT_POLL = 0.05


class _Failed:
    """What the producer raised, for the consumer to raise."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()

#: The producers running (their halt event and thread).
_live: set[tuple[threading.Event, threading.Thread]] = set()


@atexit.register
def _halt_all() -> None:
    """At exit, the producer of a stream never closed (its generator still
    referenced) is stopped and joined first: a daemon thread that the
    interpreter's shutdown stops inside a drain (a C++ call that released
    the GIL) would abort the process instead of letting it exit."""
    running = list(_live)
    for halt, _ in running:
        halt.set()
    for _, thread in running:
        thread.join()


def paced(
    take: Callable[[bool], T],
    interval: float,
    *,
    end_at: float | None = None,
    stop: threading.Event | None = None,
    ended: Callable[[], bool] = lambda: False,
    backlog: int = BACKLOG,
    name: str = "pktstat-bpf drains",
) -> Generator[T, None, None]:
    """Yield ``take(last)`` every `interval` seconds of the monotonic clock,
    without drift, taken in a thread of its own from the first ``next()``.

    The last reading (``last=True``) is taken at `end_at` (monotonic), when
    `stop` is set or when `ended()` turns true after a wait; it is the last
    one yielded. After a reading that took longer than the interval, the
    next one is taken at once (one, however many were missed), then the
    pace goes on: an interval lasts the pace, or a reading when that is longer.

    Closing the generator (``break``, an exception in the consumer's loop,
    garbage collection) stops the producer and joins it before it returns;
    readings taken and not yet yielded go with it. What `take` raises is
    raised in the consumer, after the readings taken before it.
    """
    halt = threading.Event()
    items: queue.SimpleQueue[object] = queue.SimpleQueue()
    pacer = Pacer(interval, time.monotonic(), at_once=True)

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    def wait_until(target: float) -> None:
        while not halt.is_set() and not stopped():
            left = target - time.monotonic()
            if left <= 0:
                return
            if stop is None:
                halt.wait(left)
            else:
                stop.wait(min(left, HALT_POLL))

    def produce() -> None:
        warned = False
        try:
            while not halt.is_set():
                if not stopped():
                    wait_until(pacer.next_at if end_at is None else min(pacer.next_at, end_at))
                    if halt.is_set():
                        return
                last = stopped() or ended() or (end_at is not None and time.monotonic() >= end_at)
                items.put(take(last))
                behind = items.qsize()
                if behind > backlog and not warned:
                    warned = True
                    log.warning(
                        "warning: the output is %d intervals (%.1fs) behind the capture; they wait in "
                        "memory until it takes them (nothing is dropped): it needs less than the "
                        "interval to write one to keep up",
                        behind,
                        behind * interval,
                    )
                if last:
                    return
                pacer.advance()  # (late: the next reading at once, then on the grid again)
        except BaseException as e:  # the consumer raises it
            items.put(_Failed(e))
        finally:
            items.put(_DONE)

    producer = threading.Thread(target=produce, name=name, daemon=True)
    live = (halt, producer)
    _live.add(live)
    producer.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield cast(T, item)
    finally:
        halt.set()
        producer.join()
        _live.discard(live)
