"""A progress bar on stderr for long jobs (replay of a big capture file).

Nothing is drawn when the stream is not a terminal, nor for jobs that end
within ``delay`` seconds (2 s; tests shorten it through the test seam,
``PKTSTAT_BPF_TEST_FAULTS=progress_delay=SECONDS``, see src/cpp/test_knobs.hpp);
the bar is erased when the job ends.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

DEFAULT_DELAY = 2.0


def _default_delay() -> float:
    """DEFAULT_DELAY, or the test seam's progress_delay."""
    from ..core.engine import test_faults

    delay = test_faults()["progress_delay"]
    return DEFAULT_DELAY if delay is None else delay


class ProgressBar:
    """Callable as a replay progress hook: ``bar(frames, done_bytes, total_bytes)``.
    `delay` defaults to DEFAULT_DELAY (or the test seam's)."""

    def __init__(
        self, stream: TextIO | None = None, delay: float | None = None, label: str = "replay"
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.delay = _default_delay() if delay is None else delay
        self.label = label
        self.start = time.monotonic()
        self.drawn = False
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False

    def __call__(self, frames: int, done: int, total: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        if elapsed < self.delay:
            return
        self.stream.write("\r" + self.line(frames, done, total, elapsed))
        self.stream.flush()
        self.drawn = True

    def line(self, frames: int, done: int, total: int, elapsed: float) -> str:
        width = shutil.get_terminal_size((80, 24)).columns
        rate = frames / elapsed if elapsed > 0 else 0.0
        frac = min(1.0, done / total) if total else 0.0
        tail = f" {100 * frac:3.0f}% {frames:,} frames {rate / 1e3:,.0f}k/s"
        head = f"{self.label} "
        bar_w = max(10, width - len(head) - len(tail) - 3)
        fill = int(frac * bar_w)
        return (head + "[" + "#" * fill + "-" * (bar_w - fill) + "]" + tail)[: width - 1]

    def close(self) -> None:
        """Erase the bar (if one was drawn); the next call draws it again."""
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False
