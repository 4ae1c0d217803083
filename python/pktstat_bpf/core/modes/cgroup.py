"""cgroup mode: cgroup_skb programs on a cgroup v2 directory count what the
sockets of that cgroup and its descendants send and receive, per flow and
per owning process (pid, comm) and cgroup. The root cgroup sees every local
socket of the host, containers included.

Owners come from the kernel (socket creation, accepted connections, the
process seen using a socket) and, for sockets that existed before the start,
from a scan that joins sock_diag with /proc/<pid>/fd as ``ss -p`` does. A
socket whose owner is unknown or held by several processes has no pid: the
mode never guesses.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import FeatureMissingError, UsageError
from .base import OwnerMode

DEFAULT_OWNER_ENTRIES = 65536


def _unescape_mountinfo(s: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and len(s[i + 1 : i + 4]) == 3 and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def display_path(path: str) -> str:
    """A path as text for output: bytes that are not UTF-8 (Python holds
    them as surrogates) become ``\\xNN`` escapes, as the engine writes the
    cgroup paths it reads, so JSON stays valid and the text output escapes
    them once."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def cgroup2_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str]]:
    """``(mount point, root in the hierarchy)`` of every cgroup v2 mount."""
    out: list[tuple[str, str]] = []
    from ..engine import _core

    if "cgroup2" in _core.test_faults()["missing"]:  # the test seam: a host without cgroup v2
        return out
    try:
        lines = open(mountinfo, encoding="utf-8", errors="surrogateescape").read().splitlines()
    except OSError:
        return out
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, fstype = left.split(), right.split(" ", 1)[0]
        if fstype == "cgroup2" and len(fields) >= 5:
            out.append((_unescape_mountinfo(fields[4]), _unescape_mountinfo(fields[3])))
    return out


def resolve_cgroup(path: str, mounts: list[tuple[str, str]] | None = None) -> tuple[str, str, str]:
    """``(mount point, path relative to it, mount root in the hierarchy)``
    for a cgroup v2 directory, or a one-line UsageError (exit 2) saying what
    is wrong; FeatureMissingError (exit 69) if no cgroup v2 is mounted."""
    if not path:
        raise UsageError("-c/--cgroup needs the path of a cgroup v2 directory")
    mounts = cgroup2_mounts() if mounts is None else mounts
    where = ", ".join(m for m, _ in mounts)
    hint = f" (cgroup v2 is mounted at {where})" if where else ""
    if not os.path.lexists(path):
        raise UsageError(f"no such cgroup: {path!r} does not exist{hint}")
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise UsageError(f"{path!r} is not a directory: give a cgroup v2 directory{hint}")
    if not mounts:
        raise FeatureMissingError("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)")
    best = None
    for mnt, root in mounts:
        mreal = os.path.realpath(mnt)
        if real == mreal or real.startswith(mreal.rstrip("/") + "/"):
            if best is None or len(mreal) > len(best[0]):
                best = (mreal, root)
    if best is None or os.stat(real).st_dev != os.stat(best[0]).st_dev:
        raise UsageError(f"{path!r} is not a cgroup v2 directory{hint}")
    mreal, root = best
    rel = "/" + os.path.relpath(real, mreal) if real != mreal else "/"
    return mreal, rel, root or "/"


class CgroupMode(OwnerMode):
    name = "cgroup"

    def __init__(
        self,
        *,
        cgroup: str | None = None,
        max_entries: int,
        owner_entries: int = DEFAULT_OWNER_ENTRIES,
        scan_sockets: bool = True,
        iface: str | None = None,
    ) -> None:
        if iface is not None:
            raise UsageError(
                "cgroup mode counts the sockets of a cgroup, not an interface: drop the interface"
            )
        if cgroup is None:
            raise UsageError("cgroup mode needs the path of a cgroup v2 directory (-c/--cgroup PATH)")
        if isinstance(owner_entries, bool) or not isinstance(owner_entries, int) or owner_entries <= 0:
            raise UsageError(f"owner_entries must be a positive integer, not {owner_entries!r}")
        self.path = cgroup
        self.mount_root, self.rel, self.hier_root = resolve_cgroup(cgroup)
        self.max_entries = max_entries
        self.owner_entries = owner_entries
        self.scan_sockets = scan_sockets
        self.engine: Any = None
        self._paths = {}

    @property
    def where(self) -> str:
        return display_path(self.path)

    ifnames: dict[int, str] = {}

    def load(self) -> None:
        from ..engine import _core

        self.engine = _core.CgroupCollector(
            # (paths as bytes: a directory name need not be UTF-8)
            os.fsencode(self.mount_root),
            os.fsencode(self.rel),
            self.max_entries,
            self.owner_entries,
            16384,
            self.scan_sockets,
            os.fsencode(self.hier_root),
        )

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {"cgroup": display_path(self.rel), "cgroup_dir": display_path(self.path)}
        if self.engine is not None:
            st["cgroup_id"] = self.engine.cgroup_id
            st["owner_sources"] = list(self.engine.owner_sources)
            st["start_scan"] = dict(self.engine.scan_stats)
            st["owner_events"] = self.engine.owner_stats()
        return st

    def report_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"cgroup": display_path(self.rel), "cgroupDir": display_path(self.path)}
        if self.engine is not None:
            scan = self.engine.scan_stats
            extra["ownerSources"] = list(self.engine.owner_sources)
            extra["startScan"] = {
                "sockets": scan["in_cgroup"],
                "owned": scan["owned"],
                "shared": scan["shared"],
                "unclaimed": scan["unclaimed"],
                "listeners": scan["listeners"],
            }
        return extra

    def unowned(self, records: np.ndarray) -> tuple[int, int]:
        """(packets, bytes) of the flows whose socket's owner is unknown or
        shared (pid 0): Snapshot.totals carries them."""
        none = records[records["pid"] == 0] if len(records) else records
        return int(none["packets"].sum(dtype=np.uint64)), int(none["bytes"].sum(dtype=np.uint64))
