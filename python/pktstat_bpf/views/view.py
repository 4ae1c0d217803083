"""What every output (final report, TUI, streams, exporter) does to flows
before they are rendered: warn once when the flow table is nearly full, keep
only external destinations (``--external``) and name pod addresses
(``--kubeconfig``). One implementation, applied the same way to a Snapshot
or to an Interval."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.addresses import address_strings
from ..core.intervals import Interval
from ..core.snapshot import Snapshot
from .filters import NetworkSet

log = logging.getLogger("pktstat_bpf")

#: The flow table's fill level that draws the warning.
FULL_FRACTION = 0.9


def table_fill(snap: Snapshot) -> int:
    """The most flows the kernel table held in one interval of `snap`'s run."""
    return snap.peak_flows or len(snap)


def nearly_full(snap: Snapshot) -> bool:
    """True when the kernel flow table of `snap`'s run held at least 90% of
    its entries in one interval: new flows will soon be counted as overflow."""
    return bool(snap.max_entries) and table_fill(snap) >= FULL_FRACTION * snap.max_entries


class FillWarning:
    """Logs one warning, the first time a reading shows the flow table past
    90% of ``--max-entries`` in one interval (once is enough: the flags
    that would change it need a restart)."""

    def __init__(self) -> None:
        self.warned = False

    def check(self, snap: Snapshot) -> None:
        if self.warned or not nearly_full(snap):
            return
        self.warned = True
        log.warning(
            "flow table is %d%% full (%d of %d entries); new flows will be counted as overflow: "
            "raise --max-entries (the kernel table needs room for the flows of one interval)",
            100 * table_fill(snap) // snap.max_entries,
            table_fill(snap),
            snap.max_entries,
        )


@dataclass
class View:
    """`external`: keep only flows whose destination is outside these
    networks. `pods`: a started :class:`~pktstat_bpf.kube.PodCache` (or any
    object with ``label(ips) -> array``) that adds ``src_pod``/``dst_pod``
    columns. `fill`: a :class:`FillWarning` every reading is shown to (the
    whole table, before any filter)."""

    external: NetworkSet | None = None
    pods: Any = None
    fill: FillWarning | None = None

    def mask(self, snap: Snapshot) -> np.ndarray | None:
        if self.external is None:
            return None
        return self.external.external(snap.records)

    def _label(self, snap: Snapshot) -> Snapshot:
        if self.pods is None:
            return snap
        r = snap.records
        return snap.with_columns(
            src_pod=self.pods.label(address_strings(r["saddr"], r["ipver"])),
            dst_pod=self.pods.label(address_strings(r["daddr"], r["ipver"])),
        )

    def apply(self, snap: Snapshot) -> Snapshot:
        if self.fill is not None:
            self.fill.check(snap)
        m = self.mask(snap)
        return self._label(snap if m is None else snap.take(m))

    def apply_interval(self, iv: Interval) -> Interval:
        if self.fill is not None:
            self.fill.check(iv.cumulative)
        m = self.mask(iv.delta)
        if m is not None:
            ended = iv.ended
            em = self.mask(ended) if ended is not None else None
            if ended is not None and em is not None:
                ended = ended.take(em)
            iv = Interval(
                iv.index, iv.delta.take(m), iv.cumulative.take(m), iv.active[m], iv.recent[m], ended
            )
        if self.pods is not None:
            iv = dataclasses.replace(
                iv,
                delta=self._label(iv.delta),
                cumulative=self._label(iv.cumulative),
                ended=self._label(iv.ended) if iv.ended is not None else None,
            )
        return iv

    def close(self) -> None:
        if self.pods is not None:
            self.pods.stop()

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
