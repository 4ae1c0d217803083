"""Interval rates: per-interval deltas computed from cumulative snapshots.

The kernel maps only ever grow: nothing is deleted from them while a capture
runs, so no increment can fall between a read and a delete. Each reading is a
cumulative :class:`~pktstat_bpf.Snapshot`; an :class:`Interval` is the
difference of two consecutive readings, joined on the flow key in NumPy (one
sort of the earlier key hashes, one ``searchsorted`` of the later ones and a
check of the full keys; no Python loop over flows, see :class:`KeyIndex`).
The deltas of consecutive intervals add up exactly to the cumulative counts
of the last reading.

>>> with Collector(iface="eth0") as c:                      # doctest: +SKIP
...     for iv in c.stream(1.0, duration=10):
...         print(iv.end, len(iv.delta), iv.delta.totals.all.bytes)

The same from a capture file, in steps of 20 s of capture time (index,
length, flows that sent, bytes in flows):

>>> ivs = list(pktstat_bpf.Replayer().intervals("tests/data/office.pcap", 20.0))
>>> [(iv.index, round(iv.duration, 2), int(iv.active.sum()), iv.delta.totals.flow_bytes) for iv in ivs]
[(0, 20.0, 15, 2502309), (1, 20.0, 19, 2463575), (2, 18.02, 13, 1706773)]
>>> sum(iv.delta.totals.flow_bytes for iv in ivs) == ivs[-1].cumulative.totals.flow_bytes
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .keys import KeyIndex, copy_records
from .snapshot import Snapshot, Totals

if TYPE_CHECKING:  # pragma: no cover
    import pandas


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


@dataclass(frozen=True)
class Interval:
    """What happened between two readings of a capture.

    ``delta`` is a :class:`Snapshot` of every flow in the table at the end of
    the interval whose ``packets``/``bytes`` are the counts *of this interval*
    (0 for a flow that was idle), whose ``duration`` is the interval's length
    and whose ``totals`` are the conservation counters of the interval; its
    :meth:`Snapshot.bitrates`, ``flows()``, ``to_json()`` and ``to_pandas()``
    therefore give interval rates. It carries two extra columns,
    ``total_packets`` and ``total_bytes``: the lifetime counts.

    ``cumulative`` is the reading at the end of the interval (lifetime counts
    and averages, as the final report shows them). Rows of ``delta.records``
    and ``cumulative.records`` are aligned.

    ``active`` marks the flows that sent in this interval; ``recent`` those
    that sent in this interval or the one before (so a flow that stops shows
    once with bitrate 0, then drops out of ``recent``).
    """

    index: int
    delta: Snapshot
    cumulative: Snapshot
    active: np.ndarray
    recent: np.ndarray

    @property
    def start(self) -> float:
        """Start of the interval, Unix seconds."""
        return self.delta.started_at

    @property
    def end(self) -> float:
        """End of the interval (when the reading was taken), Unix seconds."""
        return self.delta.taken_at

    @property
    def duration(self) -> float:
        """Length of the interval in seconds (monotonic clock)."""
        return self.delta.duration

    def bitrates(self) -> np.ndarray:
        """Bitrate of each flow over this interval: 8 x interval bytes / duration."""
        return self.delta.bitrates()

    def to_pandas(self) -> pandas.DataFrame:
        """The interval's flows as a DataFrame (see :meth:`Snapshot.to_pandas`:
        packets/bytes/bitrate are interval values; ``total_packets`` and
        ``total_bytes`` lifetime counts), with ``interval_start`` and
        ``interval_end`` (datetime64[ns, UTC]) and ``active``."""
        from .frame import pandas_module

        pd = pandas_module()
        df = self.delta.to_pandas()
        df["active"] = self.active
        df.insert(0, "interval_end", pd.Timestamp(int(self.end * 1e9), unit="ns", tz="UTC"))
        df.insert(0, "interval_start", pd.Timestamp(int(self.start * 1e9), unit="ns", tz="UTC"))
        return df


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
