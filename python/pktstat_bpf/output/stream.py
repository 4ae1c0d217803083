"""Streams: JSON Lines (``--jsonl``) and text log lines (``--plain``), every
``-r`` interval, optionally only first appearances (``-u``). The same writer
serves every combination; each format has one line renderer
(:data:`pktstat_bpf.render.STREAM_FORMATS`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..core import render
from ..core.intervals import Interval
from ..views.filters import UniqueFilter
from .checked import TextSink

if TYPE_CHECKING:
    import numpy as np


log = logging.getLogger("pktstat_bpf")


class StreamWriter:
    """Writes each :class:`Interval` as lines, flushing after every line.

    Without `unique`, every flow that sent in the interval (or in the one
    before, so a stopped flow shows once with bitrate 0) is written, with
    the interval's packets, bytes and bitrate and the lifetime
    ``totalPackets``/``totalBytes``, then the interval's end records
    (:func:`~pktstat_bpf.core.render.end_record`). With `unique`, a
    connection is written only the first interval it sends in.
    """

    def __init__(self, out: TextSink, fmt: str = "jsonl", unique: UniqueFilter | None = None) -> None:
        self.out = out
        self.line = render.STREAM_FORMATS[fmt]
        self.end_line = render.END_FORMATS[fmt]
        self.unique = unique
        self.lines = 0

    def rows(self, iv: Interval) -> np.ndarray:
        if self.unique is None:
            return iv.recent
        mask = iv.active.copy()
        mask[mask] = self.unique.first_seen(iv.delta.records[mask])
        return mask

    def write(self, iv: Interval) -> int:
        """The interval's flow lines, then (without `unique`) one line per
        end record: ``"event": "end"`` with its reason."""
        flows = iv.delta.take(self.rows(iv)).flows()
        ended = iv.ended.flows() if iv.ended is not None and self.unique is None else []
        if not flows and not ended:
            return 0
        ts = render.rfc3339(round(iv.end * 1e6) * 1000)  # the wall clock is good to ~1 us
        interval = round(iv.duration, 9)  # ns: bitrate = 8 * bytes / interval holds to 1e-9
        lines = [self.line(d, ts, interval=interval) for d in flows]
        lines += [self.end_line(d, ts) for d in ended]
        for line in lines:
            self.out.write(line + "\n")
            self.out.flush()
        self.lines += len(lines)
        return len(lines)
