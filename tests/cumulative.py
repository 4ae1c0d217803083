"""Intervals from cumulative snapshots, for tests of what consumes them.

The product makes its intervals from drains of the kernel tables
(pktstat_bpf.core.intervals.DrainTracker); the tests of the outputs, the
exporter and the series feed them made-up captures instead: cumulative
Snapshots, turned into the same Interval objects by the difference of two
consecutive readings, joined on the flow key (every flow of the table is a
row, as with ``rows="live"``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pktstat_bpf.core.intervals import Interval
from pktstat_bpf.core.keys import KeyIndex, copy_records
from pktstat_bpf.core.snapshot import Snapshot, Totals


def _totals_delta(cur: Totals, prev: Totals | None, delta: np.ndarray) -> Totals:
    counters = {
        name: getattr(cur, name) - getattr(prev, name) if prev is not None else getattr(cur, name)
        for name in ("ingress", "egress", "none")
    }

    def unowned(name: str) -> int | None:  # process modes' events without a pid, in the interval
        now, before = getattr(cur, name), getattr(prev, name) if prev is not None else None
        return None if now is None else now - (before or 0)

    return Totals(
        **counters,
        flow_packets=int(delta["packets"].sum(dtype=np.uint64)) if len(delta) else 0,
        flow_bytes=int(delta["bytes"].sum(dtype=np.uint64)) if len(delta) else 0,
        flows=len(delta),
        unowned_packets=unowned("unowned_packets"),
        unowned_bytes=unowned("unowned_bytes"),
    )


class IntervalTracker:
    """Turns cumulative snapshots of one capture, taken in order, into
    :class:`Interval` deltas. The first interval runs from the start of the
    capture to the first reading.

    A flow whose cumulative count went *down* was evicted and re-created
    between readings (possible only in modes whose table evicts); its delta
    is its whole new count, never negative.
    """

    def __init__(self) -> None:
        self._prev: Snapshot | None = None
        self._prev_keys: KeyIndex | None = None
        self._prev_active: np.ndarray | None = None
        self._index = 0

    @property
    def previous(self) -> Snapshot | None:
        """The last reading given to :meth:`advance`."""
        return self._prev

    def advance(self, snap: Snapshot) -> Interval:
        cur = snap.records
        keys = KeyIndex(cur)
        prev = self._prev
        if prev is None:
            prev_pos = np.full(len(cur), -1, dtype=np.intp)
            start_wall, start_dur = snap.started_at, 0.0
        else:
            prev_pos = self._prev_keys.find(keys, cur)  # type: ignore[union-attr]
            start_wall, start_dur = prev.taken_at, prev.duration
        found = prev_pos >= 0
        delta = copy_records(cur)
        if found.any():
            at = prev_pos[found]
            pp, pb = prev.records["packets"][at], prev.records["bytes"][at]  # type: ignore[union-attr]
            cp, cb = cur["packets"][found], cur["bytes"][found]
            reset = (cp < pp) | (cb < pb)
            delta["packets"][found] = np.where(reset, cp, cp - pp)
            delta["bytes"][found] = np.where(reset, cb, cb - pb)
            for name in ("syn_packets", "fin_packets", "rst_packets"):  # tcp_flags: the OR so far
                c = cur[name][found]
                delta[name][found] = np.where(reset, c, c - prev.records[name][at])  # type: ignore[union-attr]
        active = delta["packets"] > 0
        was_active = np.zeros(len(cur), dtype=bool)
        if found.any() and self._prev_active is not None:
            was_active[found] = self._prev_active[prev_pos[found]]
        d = dataclasses.replace(
            snap,
            records=delta,
            totals=_totals_delta(snap.totals, prev.totals if prev is not None else None, delta),
            duration=max(snap.duration - start_dur, 0.0),
            started_at=start_wall,
            columns={**snap.columns, "total_packets": cur["packets"], "total_bytes": cur["bytes"]},
        )
        iv = Interval(self._index, d, snap, active, active | was_active)
        self._prev, self._prev_keys, self._prev_active = snap, keys, active
        self._index += 1
        return iv
