"""Process mode (``-k/--kprobes``): what every process of the host sends and
receives on its IPv4/IPv6 sockets, per flow, with pid, comm and cgroup, in
all network namespaces and containers.

Counted at the socket layer by one of three backends, chosen at run time by
probing, best first: BTF tracepoints (Linux 6.3+), fentry/fexit, kprobes.
``backend="auto"`` takes the first that the kernel has and accepts;
``backend="tracepoint"|"fentry"|"kprobe"`` forces one and fails with a
one-line :class:`~pktstat_bpf.errors.FeatureMissingError` (exit code 69)
where it cannot load (the engine's probe says why). The status and the JSON header name the live backend
and why the others were passed over.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UsageError
from .base import OwnerMode
from .cgroup import cgroup2_mounts

BACKENDS = ("auto", "tracepoint", "fentry", "kprobe")
PATH_CACHE = 16384


def cgroup_mount() -> tuple[str, str]:
    """The cgroup v2 mount to resolve cgroup ids against (the one that shows
    the whole hierarchy if there is one) and its root in the hierarchy;
    ``("", "/")`` where no cgroup v2 is mounted."""
    mounts = cgroup2_mounts()
    if not mounts:
        return "", "/"
    for mnt, root in mounts:
        if root == "/":
            return mnt, root
    return mounts[0]


class ProcessMode(OwnerMode):
    name = "process"
    ifnames: dict[int, str] = {}

    def __init__(
        self,
        *,
        max_entries: int,
        backend: str = "auto",
        iface: str | None = None,
    ) -> None:
        if iface is not None:
            raise UsageError(
                "process mode counts the sockets of every process, not an interface: drop the interface"
            )
        if backend not in BACKENDS:
            raise UsageError(f"--process-backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.backend = backend
        self.max_entries = max_entries
        self.mount, self.hier_root = cgroup_mount()
        self.engine: Any = None
        self._paths = {}

    @property
    def where(self) -> str:
        return "all processes"

    def load(self) -> None:
        from ..engine import _core

        self.engine = _core.ProcessCollector(
            self.max_entries, self.backend, self.mount, self.hier_root, PATH_CACHE
        )

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {"backend_requested": self.backend, "cgroup_mount": self.mount}
        if self.engine is not None:
            st["backend"] = self.engine.backend
            st["backends_refused"] = dict(self.engine.refused)
            st["hooks"] = list(self.engine.hooks)
            st["events"] = self.engine.proc_stats()
        return st

    unowned_running = True

    def unowned(self, records: np.ndarray) -> tuple[int, int]:
        """(events, bytes) the engine counted without a pid (its own counters,
        not derived from `records`): Snapshot.totals carries them."""
        ev = self.engine.proc_stats()
        return ev["unowned_packets"], ev["unowned_bytes"]

    def report_extra(self) -> dict[str, Any]:
        if self.engine is None:
            return {}
        ev = self.engine.proc_stats()
        extra: dict[str, Any] = {
            "backend": self.engine.backend,
            "hooks": list(self.engine.hooks),
            "noPeerPackets": ev["no_peer_packets"],
            "noPeerBytes": ev["no_peer_bytes"],
            "ownersEvicted": ev["owners_evicted"],
        }
        refused = dict(self.engine.refused)
        if refused:
            extra["backendsRefused"] = refused
        extra["note"] = (
            f"datagrams without peer {ev['no_peer_packets']}; owners evicted {ev['owners_evicted']}"
        )
        return extra
