"""Go-style durations (``10s``, ``1m30s``, ``250ms``, ``1.5h``), as the Go
pktstat-bpf accepts them for ``-t`` and ``-r``."""

from __future__ import annotations

import re
import time
from typing import Callable

from .errors import UsageError

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
#: The longest duration accepted: 100 years (the clocks and timeouts the
#: capture waits on overflow a few centuries on).
MAX_SECONDS = 100 * 365 * 24 * 3600.0
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a Go duration string into seconds.

    >>> parse_duration("1m30s")
    90.0
    >>> parse_duration("250ms")
    0.25
    >>> parse_duration("0")
    0.0
    """
    s = text.strip()
    if s in ("0", "+0"):
        return 0.0
    if s.startswith("-"):
        raise UsageError(f"invalid duration {text!r}: must not be negative")
    body = s[1:] if s.startswith("+") else s
    if not body:
        raise UsageError(f"invalid duration {text!r}: expected e.g. 10s, 1m30s, 500ms")
    total, pos = 0.0, 0
    for m in _PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(body):
        raise UsageError(f"invalid duration {text!r}: expected e.g. 10s, 1m30s, 500ms")
    if total > MAX_SECONDS:
        raise UsageError(f"invalid duration {text!r}: longer than {MAX_SECONDS / 3600:.0f}h (100 years)")
    return total


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration` for display (``90.0`` -> ``1m30s``)."""
    if seconds == 0:
        return "0s"
    whole = int(seconds)
    frac = seconds - whole
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    out = ""
    if h:
        out += f"{h}h"
    if m or h:
        out += f"{m}m"
    out += f"{s + frac:g}s"
    return out


class Pacer:
    """Due times every `interval` seconds on a monotonic clock, without
    drift: each is the last one plus the interval; a consumer that fell
    behind skips to one interval from now instead of bursting to catch up.

    `at_once`: a reading found overdue is due at once instead (one reading,
    however many were missed; the next ones on the grid again): for drains,
    whose intervals must stay as short as the pace, or as a drain's cost
    when that is longer, so that the kernel table holds one interval's flows."""

    def __init__(
        self,
        interval: float,
        start: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        at_once: bool = False,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.at_once = at_once
        self.next_at = start + interval

    def advance(self) -> None:
        """The reading due at :attr:`next_at` was taken: the next one is due."""
        self.next_at += self.interval
        now = self.clock()
        if self.next_at <= now:
            if self.at_once:  # the latest due time not after now: past already
                self.next_at += (now - self.next_at) // self.interval * self.interval
            else:
                self.next_at = now + self.interval
