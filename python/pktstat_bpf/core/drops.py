"""Drops with their reasons (``--drops``, ``Collector(..., drops=True)``):
the kernel's ``kfree_skb`` tracepoint watched beside any mode's collector
(the engine's DropWatcher, src/bpf/drops.bpf.c), counted per (flow tuple,
reason) and per reason, and joined to a snapshot's flows by their tuple.

The reason names are the running kernel's own (``enum skb_drop_reason`` in
its BTF, the ``SKB_DROP_REASON_`` prefix stripped), so a newer kernel's
reasons show without a rebuild. docs/counting.md, "Drops", says what counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .engine import _core
from .errors import UsageError

DEFAULT_MAX_DROP_FLOWS = 16384
#: the parts of a tuple a drop and a flow must share (direction, interface and
#: kind are left out: a freed packet does not say which way it went)
_JOIN = [("saddr", "(16,)u1"), ("daddr", "(16,)u1"), ("sport", "u2"), ("dport", "u2"), ("proto", "u1")]
_JOIN.append(("ipver", "u1"))


def netns_inode() -> int:
    """The inode of the calling thread's network namespace (what the watcher
    compares with the namespace of a dropped packet's device)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


@dataclass(frozen=True)
class DropReading:
    """One reading of the drop maps: ``records`` (one row per flow tuple and
    reason, dtype ``_core.drop_dtype``: the flow tuple, ``reason``, ``netns``,
    ``packets``, ``bytes``), ``reasons`` (name -> packets, every counted drop,
    whether or not its packet could be keyed) and ``counters`` (``packets``,
    ``bytes``, ``unparsed``: not IP, ``overflow``: the per-flow map was full,
    ``reason_overflow``)."""

    records: np.ndarray
    reasons: Mapping[str, int] = field(default_factory=dict)
    counters: Mapping[str, int] = field(default_factory=dict)
    names: Mapping[int, str] = field(default_factory=dict)

    def reason_names(self) -> np.ndarray:
        """The reason of each record by name (an object array of str)."""
        return np.array(
            [self.names.get(int(r), f"REASON_{int(r)}") for r in self.records["reason"]], dtype=object
        )

    def header(self) -> dict[str, Any]:
        """``drops`` (reason -> packets) and ``dropCounters`` for a JSON header."""
        return {
            "drops": dict(self.reasons),
            "dropCounters": {k: int(v) for k, v in self.counters.items() if k != "reason_overflow" or v},
        }

    def columns(self, records: np.ndarray) -> dict[str, np.ndarray]:
        """Per-flow columns for `records` (a snapshot's flows): ``drops``
        (uint64 packets) and ``drop_reasons`` (reason -> packets, None where
        the flow has no drops). A flow gets the drops whose tuple it carries
        (addresses, ports, protocol); on a device where a flow's packets are
        counted both ways (lo: egress and ingress) each of its rows shows them."""
        n = len(records)
        drops = np.zeros(n, dtype=np.uint64)
        reasons = np.full(n, None, dtype=object)
        if not n or not len(self.records):
            return {"drops": drops, "drop_reasons": reasons}
        rkeys, dkeys = _join_keys(records), _join_keys(self.records)
        uniq, inverse = np.unique(dkeys, return_inverse=True)
        per_key: list[dict[str, int]] = [{} for _ in range(len(uniq))]
        names = self.reason_names()
        for i, k in enumerate(np.asarray(inverse).reshape(-1)):
            d = per_key[k]
            d[names[i]] = d.get(names[i], 0) + int(self.records["packets"][i])
        pos = np.searchsorted(uniq, rkeys)
        pos = np.minimum(pos, len(uniq) - 1)
        hit = uniq[pos] == rkeys
        for row in np.flatnonzero(hit):
            d = per_key[pos[row]]
            drops[row] = sum(d.values())
            reasons[row] = dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))
        return {"drops": drops, "drop_reasons": reasons}


def _join_keys(a: np.ndarray) -> np.ndarray:
    """The join fields of each row as one comparable byte string."""
    out = np.zeros(len(a), dtype=np.dtype(list(_JOIN)))
    for name, _ in _JOIN:
        out[name] = a[name]
    return out.view(f"V{out.dtype.itemsize}")


class DropWatch:
    """The drop watcher of one collector: loaded on ``load()``, attached and
    detached with the collector, read with each snapshot. `ifindex`/`netns`
    (0: any) restrict it to the drops on one device of one namespace."""

    def __init__(
        self, *, ifindex: int = 0, netns: int = 0, max_entries: int = DEFAULT_MAX_DROP_FLOWS
    ) -> None:
        if max_entries <= 0:
            raise UsageError(f"the drop map needs a positive size, not {max_entries}")
        self.ifindex, self.netns, self.max_entries = ifindex, netns, max_entries
        self.engine: Any = None

    def load(self) -> None:
        self.engine = _core.DropWatcher(ifindex=self.ifindex, netns=self.netns, max_entries=self.max_entries)

    def attach(self) -> None:
        self.engine.attach()

    def detach(self) -> None:
        if self.engine is not None:
            self.engine.detach()

    @property
    def attached(self) -> bool:
        return self.engine is not None and self.engine.attached

    def read(self) -> DropReading:
        names = dict(self.engine.reasons)
        per_reason = self.engine.read_reasons()
        reasons = {
            names.get(int(r), f"REASON_{int(r)}"): int(v["packets"])
            for r, v in sorted(per_reason.items(), key=lambda kv: (-kv[1]["packets"], kv[0]))
        }
        return DropReading(self.engine.read_flows(), reasons, dict(self.engine.read_stats()), names)
