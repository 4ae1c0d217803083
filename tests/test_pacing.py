"""The producer thread of Collector.stream (core/pacing.py), with a fake
reading in place of a drain: readings keep their pace whatever the consumer
does, reach it in order, none dropped; the last reading ends the stream;
closing the stream early stops and joins the thread at once; what a reading
raises is raised in the consumer; a backlog is said once. No privilege."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest
from pktstat_bpf.core import pacing
from pktstat_bpf.core.durations import Pacer
from pktstat_bpf.core.pacing import paced


class Readings:
    """take(last): the reading's number and `last`, with when it was taken;
    raises `fail` at reading number `fail_at`."""

    def __init__(self, fail_at: int | None = None, fail: BaseException | None = None) -> None:
        self.at: list[float] = []
        self.fail_at, self.fail = fail_at, fail

    def __call__(self, last: bool) -> tuple[int, bool]:
        n = len(self.at)
        self.at.append(time.monotonic())
        if n == self.fail_at:
            assert self.fail is not None
            raise self.fail
        return n, last


def producers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("test-pacing")]


def test_a_slow_consumer_does_not_slow_the_readings():
    """The consumer sleeps 0.5 s on the first reading of a 20 ms pace: the
    readings go on meanwhile (about 25 of them, each on its due time), then
    all reach it in order; stop ends the stream with one last reading."""
    take, stop = Readings(), threading.Event()
    got = []
    for item in paced(take, 0.02, stop=stop, name="test-pacing"):
        got.append(item)
        if len(got) == 1:
            time.sleep(0.5)
            assert len(take.at) >= 10, take.at  # taken while the consumer slept
            stop.set()
    assert got == [(i, i == len(got) - 1) for i in range(len(got))]
    assert len(got) == len(take.at) >= 11
    gaps = [b - a for a, b in zip(take.at, take.at[1:-1])]  # (the last one is taken at once on stop)
    assert 0.015 < sum(gaps) / len(gaps) < 0.05, gaps  # the pace, without drift
    assert not producers()


def test_the_end_is_the_last_reading():
    """`end_at` and `ended()` end the stream as `stop` does: with a last
    reading taken with last=True, after which the generator is done."""
    take = Readings()
    got = list(paced(take, 0.03, end_at=time.monotonic() + 0.2, name="test-pacing"))
    assert 3 <= len(got) <= 8 and got[-1][1] and not any(last for _, last in got[:-1]), got
    flag = threading.Event()
    take = Readings()
    got = []
    for item in paced(take, 0.01, ended=flag.is_set, name="test-pacing"):
        got.append(item)
        if len(got) == 3:
            flag.set()
    assert [last for _, last in got] == [False] * (len(got) - 1) + [True]
    assert not producers()


@pytest.mark.parametrize("with_stop", [False, True], ids=["no-stop", "stop"])
def test_closing_early_stops_and_joins_the_thread_at_once(with_stop):
    """A break out of the loop (the generator closed) ends the producer
    before close() returns, though its next reading is 0.5 s away (with a
    caller's `stop`, within HALT_POLL); no reading is taken after."""
    take = Readings()
    stream = paced(take, 0.5, stop=threading.Event() if with_stop else None, name="test-pacing")
    assert next(stream) == (0, False)
    assert producers()
    t0 = time.monotonic()
    stream.close()
    assert time.monotonic() - t0 < 0.25
    assert not producers()
    time.sleep(0.6)
    assert len(take.at) == 1


def test_an_exception_in_the_consumer_closes_the_stream():
    take = Readings()
    with pytest.raises(RuntimeError, match="^consumer$"):
        for _ in paced(take, 0.01, name="test-pacing"):
            raise RuntimeError("consumer")
    assert not producers()


def test_what_a_reading_raises_is_raised_in_the_consumer_after_the_readings_before_it():
    boom = OSError(5, "engine failed")
    take = Readings(fail_at=2, fail=boom)
    got = []
    with pytest.raises(OSError) as e:
        for item in paced(take, 0.01, name="test-pacing"):
            got.append(item)
    assert e.value is boom
    assert got == [(0, False), (1, False)]
    assert not producers()


def test_a_backlog_is_said_once_and_nothing_is_dropped(monkeypatch):
    """Past the bound, one warning on the logger pktstat_bpf; every
    reading still reaches the consumer, in order."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("pktstat_bpf")
    logger.addHandler(handler)
    try:
        take, stop = Readings(), threading.Event()
        got = []
        for item in paced(take, 0.01, stop=stop, backlog=5, name="test-pacing"):
            got.append(item)
            if len(got) == 1:
                time.sleep(0.3)  # about 30 readings behind
            elif len(got) == 10:
                time.sleep(0.3)  # behind again: no second warning
                stop.set()
    finally:
        logger.removeHandler(handler)
    assert got == [(i, i == len(got) - 1) for i in range(len(got))] and len(got) > 30
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "behind the capture" in warnings[0], warnings
    assert pacing.BACKLOG == 64


def test_after_a_slow_reading_the_next_is_at_once_then_on_the_grid():
    """The drains' pacer: the reading due at 0.1 took until 0.35; the next
    is due at once (the latest due time, 0.3: the missed 0.2 is skipped, no
    burst), the one after at 0.4. The TUI's pacer waits a whole interval."""
    now = [0.35]
    drains = Pacer(0.1, 0.0, lambda: now[0], at_once=True)
    drains.advance()
    assert drains.next_at == pytest.approx(0.3)
    now[0] = 0.36
    drains.advance()
    assert drains.next_at == pytest.approx(0.4)
    display = Pacer(0.1, 0.0, lambda: 0.35)
    display.advance()
    assert display.next_at == pytest.approx(0.45)


def test_a_stream_never_closed_is_stopped_at_exit():
    """A generator still referenced when the interpreter exits: its producer
    is halted and joined by pacing's atexit hook, before the interpreter
    stops daemon threads (one stopped inside a C++ drain would abort)."""
    code = (
        "import atexit, threading\n"
        "atexit.register(lambda: print('producers', [t.name for t in threading.enumerate() if t.name == 'p']))\n"
        "from pktstat_bpf.core.pacing import paced\n"
        "g = paced(lambda last: last, 0.05, name='p')\n"
        "print(next(g))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert (p.returncode, p.stdout, p.stderr) == (0, "False\nproducers []\n", "")


def test_ctrl_c_while_the_consumer_waits_closes_the_stream_at_once():
    """KeyboardInterrupt raised in the consumer while it waits for the next
    reading (5 s away): the stream is closed and its thread joined at once."""
    code = (
        "import os, signal, threading, time\n"
        "from pktstat_bpf.core.pacing import paced\n"
        "threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        "    for _ in paced(lambda last: last, 5.0, name='p'):\n"
        "        pass\n"
        "except KeyboardInterrupt:\n"
        "    print(time.monotonic() - t0 < 1.5, [t.name for t in threading.enumerate() if t.name == 'p'])\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert (p.returncode, p.stdout, p.stderr) == (0, "True []\n", "")
