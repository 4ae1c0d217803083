"""The part of the mode protocol every engine object answers the same way."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .. import iface as _iface
from ..errors import UsageError


class EngineMode:
    """The part of the mode protocol every engine object answers the same
    way (attach, detach, attached, attach_path): modes inherit it and
    override what they do differently."""

    engine: Any = None

    def attach(self) -> None:
        self.engine.attach()

    @property
    def attached(self) -> bool:
        return self.engine is not None and self.engine.attached

    def detach(self) -> None:
        if self.engine is not None:
            self.engine.detach()

    @property
    def attach_path(self) -> str:
        return self.engine.attach_path if self.engine is not None else ""

    #: True when :meth:`unowned` gives the engine's running count (the
    #: run's so far) rather than a count of the records it is given.
    unowned_running = False

    def unowned(self, records: np.ndarray) -> tuple[int, int] | None:
        """(packets, bytes) without an owner: None where nothing is owned."""
        return None

    def name_cgroups(self, *records: np.ndarray) -> None:
        """Learn the names of the cgroup ids in `records` (owner modes)."""


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """`value` if it is one of `choices`, else a UsageError naming `what`."""
    if value not in choices:
        raise UsageError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return value


class InterfaceMode(EngineMode):
    """A mode that counts the packets of one interface (TC, XDP): the
    interface (the default route's when none is named) and its index."""

    owners = False
    cgroups: Mapping[int, str] = {}

    def __init__(self, iface: str | None, max_entries: int) -> None:
        self.iface = iface if iface is not None else _iface.default_interface()
        self.ifindex = _iface.ifindex(self.iface)
        self.max_entries = max_entries
        self.engine: Any = None

    @property
    def where(self) -> str:
        return self.iface

    @property
    def ifnames(self) -> dict[int, str]:
        return {self.ifindex: self.iface}


class OwnerMode(EngineMode):
    """A mode whose flows carry their process (cgroup, process): the cgroup
    paths of the ids in the last read come from the engine with the flows."""

    owners = True
    _paths: Mapping[int, str] = {}

    @property
    def cgroups(self) -> dict[int, str]:
        """cgroup id -> path (relative to the cgroup v2 mount) of the ids last named."""
        return dict(self._paths)

    #: cgroup paths kept for rows shown again later (a flow that stopped, an
    #: end record): at most this many, the oldest forgotten first
    PATHS_KEPT = 65536

    def name_cgroups(self, *records: np.ndarray) -> None:
        """Learn the cgroup paths of the ids in `records` (the rows about to
        be shown): :attr:`cgroups` holds them, with those learnt before."""
        ids = np.unique(np.concatenate([r["cgroup_id"] for r in records])) if records else np.zeros(0)
        new = [int(i) for i in ids if i and int(i) not in self._paths]
        if not new:
            return
        paths = {**self._paths, **self.engine.resolve_cgroups(new)}
        if len(paths) > self.PATHS_KEPT:
            paths = dict(list(paths.items())[-self.PATHS_KEPT // 2 :])
        self._paths = paths
