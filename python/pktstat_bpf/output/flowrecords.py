"""Flow records: what the flow writers (IPFIX, Parquet) are handed.

A :class:`FlowBatch` is a run of flow records: the engine's records (NumPy,
``RECORD_DTYPE``) whose ``packets``/``bytes`` are the counts of the span the
record covers (delta counts), each with the reason it was handed out
(RFC 5102 ``flowEndReason``), the first and last packet of that span, and
the interval the counts cover (what a bitrate is taken over), plus what
names the records' numbers (interface names, cgroup paths) and the mode.

A live run hands out a batch at every interval that ended flows
(:func:`from_ended`: idle and evicted flows, active-timeout records, and
every live flow when the capture ends); a replay one batch of its final
records (:func:`from_snapshot`). The writers take them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..core import names as flow_names
from ..core.snapshot import Snapshot

#: RFC 5102 flowEndReason (IPFIX information element 136)
IDLE = 1  #: idle timeout: no packet for the idle timeout
ACTIVE = 2  #: active timeout: a long-lived flow's periodic record
END_OF_CAPTURE = 3  #: the end of the capture (or of the replayed file)
FORCED = 4  #: forced end (the exporter was told to end the flow)
LACK_OF_RESOURCES = 5  #: retired early: the flow table was full

#: the names of the reasons, as the Parquet column and the docs give them
REASONS = {
    IDLE: "idle",
    ACTIVE: "active",
    END_OF_CAPTURE: "end of capture",
    FORCED: "forced",
    LACK_OF_RESOURCES: "lack of resources",
}


@dataclass(frozen=True)
class FlowBatch:
    """Flow records with their end reasons and spans (all arrays aligned).

    ``records``: engine records, ``packets``/``bytes`` the delta counts;
    ``reason``: uint8 flowEndReason; ``start_ns``/``end_ns``: int64 ns since
    the epoch of the span's first and last packet; ``interval_start_ns``/
    ``interval_end_ns``: the interval the counts cover (bitrate = 8 x bytes
    over it)."""

    records: np.ndarray
    reason: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    interval_start_ns: np.ndarray
    interval_end_ns: np.ndarray
    mode: str = ""
    #: True in modes that attribute flows to processes (pid, comm, cgroup)
    owners: bool = False
    ifnames: Mapping[int, str] = field(default_factory=dict)
    cgroups: Mapping[int, str] = field(default_factory=dict)
    #: the records' names (core/names.py COLUMNS, object arrays aligned with
    #: records) in the modes that read names; empty otherwise
    names: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def bitrates(self) -> np.ndarray:
        """8 x bytes over each record's interval (0 where the interval is empty)."""
        span = (self.interval_end_ns - self.interval_start_ns).astype(np.float64) / 1e9
        out = np.zeros(len(self.records))
        ok = span > 0
        out[ok] = self.records["bytes"][ok].astype(np.float64) * (8.0 / span[ok])  # as Snapshot.bitrates
        return out

    def take(self, index: np.ndarray) -> FlowBatch:
        """The rows `index` (positions or a boolean mask)."""
        return FlowBatch(
            self.records[index],
            self.reason[index],
            self.start_ns[index],
            self.end_ns[index],
            self.interval_start_ns[index],
            self.interval_end_ns[index],
            self.mode,
            self.owners,
            self.ifnames,
            self.cgroups,
            {k: v[index] for k, v in self.names.items()},
        )


def _names_of(snap: Snapshot) -> dict[str, np.ndarray]:
    return {k: v for k, v in snap.columns.items() if k in flow_names.COLUMNS}


def from_snapshot(snap: Snapshot, reason: int = END_OF_CAPTURE) -> FlowBatch:
    """A snapshot's flows as records of `reason` (default: end of capture):
    lifetime counts, first/last seen as the span, the snapshot's duration as
    the interval (so the bitrate is :meth:`Snapshot.bitrates`)."""
    r = snap.records
    n = len(r)
    end = int(round(snap.taken_at * 1e9))
    start = end - int(round(snap.duration * 1e9))
    return FlowBatch(
        records=r,
        reason=np.full(n, reason, np.uint8),
        start_ns=np.ascontiguousarray(r["first_seen"]).view(np.int64),
        end_ns=np.ascontiguousarray(r["last_seen"]).view(np.int64),
        interval_start_ns=np.full(n, start, np.int64),
        interval_end_ns=np.full(n, end, np.int64),
        mode=snap.mode,
        owners=snap.owners,
        ifnames=dict(snap.ifnames),
        cgroups=dict(snap.cgroups),
        names=_names_of(snap),
    )


#: Interval.ended's reasons as flowEndReason
END_REASONS = {"idle": IDLE, "active": ACTIVE, "end": END_OF_CAPTURE, "evicted": LACK_OF_RESOURCES}


def from_ended(ended: Snapshot) -> FlowBatch:
    """The end records of an interval (:attr:`Interval.ended`) as flow
    records: the counts since each flow's previous record, the flow's first
    and last packet as the span, and from its first packet to the end of the
    interval as the interval."""
    r = ended.records.copy()
    n = len(r)
    r["packets"] = ended.columns["delta_packets"]
    r["bytes"] = ended.columns["delta_bytes"]
    first = np.ascontiguousarray(r["first_seen"]).view(np.int64)
    reasons = [END_REASONS[str(x)] for x in ended.columns["end_reason"]]
    return FlowBatch(
        records=r,
        reason=np.array(reasons, np.uint8).reshape(n),
        start_ns=first,
        end_ns=np.ascontiguousarray(r["last_seen"]).view(np.int64),
        interval_start_ns=first,
        interval_end_ns=np.full(n, int(round(ended.taken_at * 1e9)), np.int64),
        mode=ended.mode,
        owners=ended.owners,
        ifnames=dict(ended.ifnames),
        cgroups=dict(ended.cgroups),
        names=_names_of(ended),
    )


def concat(batches: Sequence[FlowBatch]) -> FlowBatch:
    """One batch of several (names merged; mode and owners of the first)."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    records = np.zeros(
        sum(len(b) for b in batches), first.records.dtype
    )  # zeroed: keys compare byte for byte
    at = 0
    for b in batches:
        for name in first.records.dtype.names or ():
            records[name][at : at + len(b)] = b.records[name]
        at += len(b)
    ifnames: dict[int, str] = {}
    cgroups: dict[int, str] = {}
    for b in batches:
        ifnames.update(b.ifnames)
        cgroups.update(b.cgroups)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in batches])

    def cat_names(col: str) -> np.ndarray:
        return np.concatenate([b.names.get(col, np.full(len(b), None, object)) for b in batches])

    cols = {c for b in batches for c in b.names}

    return FlowBatch(
        records,
        cat("reason"),
        cat("start_ns"),
        cat("end_ns"),
        cat("interval_start_ns"),
        cat("interval_end_ns"),
        mode=first.mode,
        owners=first.owners,
        ifnames=ifnames,
        cgroups=cgroups,
        names={c: cat_names(c) for c in flow_names.COLUMNS if c in cols},
    )
