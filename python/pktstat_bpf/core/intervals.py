"""Interval rates from drained flow tables.

The programs count into one side of a two-sided kernel table while the
engine drains the other (``drain()``: docs/counting.md, "Continuous
capture"), so each drain hands over exactly the packets and bytes of one
interval, per flow, with each flow's lifetime totals from the engine's
lifetime table. An :class:`Interval` is one drain as the outputs see it; no
join of cumulative readings is needed. The deltas of consecutive intervals
add up exactly to the run's totals.

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
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from . import conversations
from .about import record_dtype
from .keys import KeyIndex, copy_records, leading_records
from .snapshot import Snapshot, Totals

if TYPE_CHECKING:  # pragma: no cover
    import pandas

#: Why a flow's record was handed out (``_core.FLOW_END_*``), as the outputs name it.
END_REASONS = {1: "idle", 2: "active", 3: "end", 4: "evicted"}


class Drained(Protocol):
    """What a drain gives (``_core.Interval``)."""

    @property
    def start_ns(self) -> int: ...
    @property
    def end_ns(self) -> int: ...
    @property
    def records(self) -> np.ndarray: ...
    @property
    def stats(self) -> np.ndarray: ...
    @property
    def ended(self) -> np.ndarray: ...
    @property
    def totals(self) -> np.ndarray: ...
    @property
    def live_flows(self) -> int: ...
    @property
    def evicted_flows(self) -> int: ...


#: Builds a Snapshot of a collector's or replay's metadata around `records`
#: and `totals`: (records, totals, started_at, taken_at, duration, columns).
MakeSnapshot = Callable[[np.ndarray, Totals, float, float, float, "dict[str, np.ndarray]"], Snapshot]


@dataclass(frozen=True)
class Interval:
    """What happened between two drains of a capture.

    ``delta`` is a :class:`Snapshot` of the flows that sent in this interval
    or in the one before (so a flow that stops shows once with bitrate 0),
    or, for the interactive table, of every live flow, whose
    ``packets``/``bytes`` are the counts *of this interval*, whose
    ``duration`` is the interval's length and whose ``totals`` are the
    conservation counters of the interval; its :meth:`Snapshot.bitrates`,
    ``flows()``, ``to_json()`` and ``to_pandas()`` therefore give interval
    rates. It carries two extra columns, ``total_packets`` and
    ``total_bytes``: the flows' lifetime counts.

    ``cumulative`` has the same rows with their lifetime counts, and the
    run's totals (``totals.flows``: the flows the lifetime table holds) and
    duration (from the start of the run).
    Rows of ``delta.records`` and ``cumulative.records`` are aligned. TCP
    flags are the OR up to the end of the interval in both; the SYN, FIN and
    RST counts are the interval's in ``delta`` (and in ``cumulative`` of the
    recent rows; the live rows carry the flows' lifetime counts).

    ``active`` marks the flows that sent in this interval; ``recent`` those
    that sent in this interval or the one before.

    ``ended`` holds the flow records handed out at the end of the interval
    (docs/counting.md, "Flows that end"): lifetime packets and bytes, with
    columns ``end_reason`` (``idle``, ``active``, ``end``, ``evicted``) and
    ``delta_packets``/``delta_bytes`` (since the flow's previous record, so
    a flow's records sum to its totals).
    """

    index: int
    delta: Snapshot
    cumulative: Snapshot
    active: np.ndarray
    recent: np.ndarray
    ended: Snapshot | None = None

    @property
    def start(self) -> float:
        """Start of the interval, Unix seconds."""
        return self.delta.started_at

    @property
    def end(self) -> float:
        """End of the interval (when the drain was taken), Unix seconds."""
        return self.delta.taken_at

    @property
    def duration(self) -> float:
        """Length of the interval in seconds."""
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

    def conversations(self) -> Interval:
        """The interval with its flows paired into conversations
        (:meth:`Snapshot.conversations`; the interactive table's ``c``): the
        client of each is decided on the lifetime rows and applied to the
        interval's rows alike; ``total_packets``/``total_bytes`` summed over
        both directions, ``active``/``recent`` where either direction is.
        The names are carried (:func:`conversations.names`); other per-flow
        columns, and the ended records, are not."""
        if self.delta.paired:
            return self
        p = conversations.plan(self.cumulative.records)
        totals = {k: v for k, v in self.delta.columns.items() if k in ("total_packets", "total_bytes")}
        rows, cols = conversations.pair(self.delta.records, p, totals, self.delta.columns)
        life, life_cols = conversations.pair(self.cumulative.records, p, columns=self.cumulative.columns)
        return dataclasses.replace(
            self,
            delta=dataclasses.replace(self.delta, records=rows, columns=cols, paired=True),
            cumulative=dataclasses.replace(self.cumulative, records=life, columns=life_cols, paired=True),
            active=conversations.any_of(p, self.active),
            recent=conversations.any_of(p, self.recent),
            ended=None,
        )


def _sum(records: np.ndarray, field: str) -> int:
    return int(records[field].sum(dtype=np.uint64)) if len(records) else 0


class RunTotals:
    """What every drain of one capture adds up to: the flow packets and
    bytes, the events without an owner, the most flows one interval put in
    the kernel table, and (when kept) the records of retired flows, so a
    report covers every flow of the run."""

    def __init__(self, keep_retired: bool = True, started_at: float | None = None) -> None:
        self.keep_retired = keep_retired
        #: when the run started (Unix s): the start of ``Interval.cumulative``
        self.started_at = started_at
        self.flow_packets = 0
        self.flow_bytes = 0
        self.unowned: tuple[int, int] | None = None
        self.peak_flows = 0
        self.retired: list[np.ndarray] = []
        self.stats: np.ndarray | None = None
        self.live_flows = 0
        self.evicted_flows = 0

    def fold(self, raw: Drained, unowned: tuple[int, int] | None, cumulative: bool) -> tuple[int, int] | None:
        """Account one drain; `unowned` is the mode's count without an owner
        (of the interval's records, or the engine's running count when
        `cumulative`). Returns the interval's unowned count."""
        self.flow_packets += _sum(raw.records, "packets")
        self.flow_bytes += _sum(raw.records, "bytes")
        self.peak_flows = max(self.peak_flows, len(raw.records))
        self.stats = raw.totals
        self.live_flows = raw.live_flows
        self.evicted_flows = raw.evicted_flows
        if self.keep_retired and len(raw.ended):
            gone = raw.ended[raw.ended["reason"] != 2]  # (an active-timeout record stays live)
            if len(gone):
                self.retired.append(leading_records(gone, record_dtype()))
        if unowned is None:
            return None
        before = self.unowned or (0, 0)
        if cumulative:
            self.unowned = unowned
            return unowned[0] - before[0], unowned[1] - before[1]
        self.unowned = before[0] + unowned[0], before[1] + unowned[1]
        return unowned

    def totals(self, flows: int) -> Totals:
        """The run's totals, with `flows` flows."""
        assert self.stats is not None
        return dataclasses.replace(
            Totals.from_arrays(self.stats, self.stats[:0], self.unowned),
            flow_packets=self.flow_packets,
            flow_bytes=self.flow_bytes,
            flows=flows,
        )


def ended_snapshot(raw: Drained, make: MakeSnapshot, totals: Totals, at: float) -> Snapshot | None:
    """The records `raw` handed out as a Snapshot (lifetime counts), with
    their ``end_reason`` and ``delta_packets``/``delta_bytes``."""
    e = raw.ended
    if not len(e):
        return None
    reasons = np.array([END_REASONS.get(int(r), str(int(r))) for r in e["reason"]], dtype=object)
    columns = {"end_reason": reasons, "delta_packets": e["delta_packets"], "delta_bytes": e["delta_bytes"]}
    return make(leading_records(e, record_dtype()), totals, at, at, 0.0, columns)


class DrainTracker:
    """Turns the drains of one capture, taken in order, into
    :class:`Interval` objects. ``rows="recent"``: the flows that sent in
    this interval or the one before (streams, exporter, series: time in
    proportion to the active flows); ``rows="live"``: every live flow of
    the lifetime table (the interactive table), from `live` at each step."""

    def __init__(self, rows: str = "recent") -> None:
        if rows not in ("recent", "live"):
            raise ValueError(f"rows must be 'recent' or 'live', not {rows!r}")
        self.rows = rows
        self._prev: np.ndarray | None = None  # last interval's active rows, lifetime counts
        self._prev_index: KeyIndex | None = None  # their key index
        self._index = 0

    def advance(
        self,
        raw: Drained,
        make: MakeSnapshot,
        run: RunTotals,
        unowned: tuple[int, int] | None,
        start: float,
        live: Callable[[], np.ndarray] | None = None,
        columns: Callable[[np.ndarray], dict[str, Any]] | None = None,
    ) -> Interval:
        """`unowned`: the interval's count without an owner (RunTotals.fold);
        `start`: the interval's start (Unix s; the first one's is the
        attach); `columns`: extra lifetime columns of given rows (drops)."""
        got = raw.records
        cur = leading_records(got, record_dtype())  # the interval's counts
        life = copy_records(cur)  # the same flows, lifetime counts (every drained flow sent)
        life["packets"], life["bytes"] = got["total_packets"], got["total_bytes"]
        life["first_seen"] = cur["first_seen"] = got["flow_first_seen"]
        life["tcp_flags"] = cur["tcp_flags"] = got["flow_tcp_flags"]  # the OR so far, in both
        n = len(cur)
        if self.rows == "live" and live is not None:
            rows = live()
            at = KeyIndex(rows).find(KeyIndex(cur), cur) if n else np.empty(0, np.intp)
            gone = at < 0  # retired by this very drain (the end of a capture): shown once more
            if gone.any():
                at[gone] = len(rows) + np.arange(int(gone.sum()))
                rows = np.concatenate([rows, life[gone]])
            delta = copy_records(rows)
            active = np.zeros(len(rows), dtype=bool)
            delta["packets"] = delta["bytes"] = 0
            delta["packets"][at] = cur["packets"]
            delta["bytes"][at] = cur["bytes"]
            active[at] = cur["packets"] > 0
            lifetime = rows
            was = self._was_active(rows)
        else:
            stopped = self._stopped(cur)
            delta = np.concatenate([cur, stopped]) if len(stopped) else cur
            lifetime = np.concatenate([life, stopped]) if len(stopped) else life
            if len(stopped):
                delta["packets"][n:] = delta["bytes"][n:] = 0
            active = np.zeros(len(delta), dtype=bool)
            active[:n] = cur["packets"] > 0
            was = np.ones(len(delta), dtype=bool)
        self._prev = life
        extra_cols = columns(lifetime) if columns is not None else {}
        end = raw.end_ns / 1e9
        duration = max(end - start, 0.0)
        since = run.started_at if run.started_at is not None else start
        run_totals = run.totals(run.live_flows)
        # flows: those the drain found (each sent in the interval), what the kernel table held
        iv_totals = dataclasses.replace(Totals.from_arrays(raw.stats, delta, unowned), flows=n)
        cols = {**extra_cols, "total_packets": lifetime["packets"], "total_bytes": lifetime["bytes"]}
        iv = Interval(
            self._index,
            make(delta, iv_totals, start, end, duration, cols),
            make(lifetime, run_totals, since, end, max(end - since, 0.0), extra_cols),
            active,
            active | was,
            ended_snapshot(raw, make, run_totals, end),
        )
        self._index += 1
        return iv

    def _stopped(self, cur: np.ndarray) -> np.ndarray:
        """Last interval's active flows that did not send in this one: the
        previous interval's key index is kept, so each interval builds one."""
        prev, prev_index = self._prev, self._prev_index
        index = KeyIndex(cur)
        self._prev_index = index
        if prev is None or prev_index is None or not len(prev):
            return cur[:0]
        if not len(cur):
            return copy_records(prev)
        found = index.find(prev_index, prev)
        return copy_records(prev[found < 0])

    def _was_active(self, rows: np.ndarray) -> np.ndarray:
        prev = self._prev
        was = np.zeros(len(rows), dtype=bool)
        if prev is not None and len(prev) and len(rows):
            at = KeyIndex(rows).find(KeyIndex(prev), prev)
            was[at[at >= 0]] = True
        return was
