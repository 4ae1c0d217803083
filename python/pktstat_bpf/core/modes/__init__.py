"""Capture modes. Each mode is a class listed in :data:`REGISTRY` that owns its engine
object from ``_core`` and knows how to load, attach, detach and read it; the
Collector does the rest (lifecycle, timing, snapshots) the same for all.

A mode class provides:

- ``name`` (str) and ``owners`` (bool: flows carry pid/comm/cgroup);
- ``__init__(**options)``: validate options, raise UsageError on bad ones;
- ``load()``: open and load the BPF programs (may raise OSError);
- ``attach()`` / ``detach()``: all-or-nothing attach; idempotent detach;
- ``attach_path`` (str, e.g. ``"tcx"``), ``where`` (str, e.g. ``"eth0"``),
  ``status()`` (dict, extra fields for the status line and JSON header);
- ``engine``: the engine object, whose ``drain()``, ``flows()`` and
  ``set_flow_limits()`` the Collector calls (every engine class has them);
- ``name_cgroups(*records)``: learn the cgroup paths of those records;
- ``ifnames`` and ``cgroups`` mappings used to render records;
- ``unowned(records)``: ``(packets, bytes)`` without an owner for
  ``Snapshot.totals`` in the modes that attribute flows to processes, None
  in the others (EngineMode's default);
- optionally ``report_extra()`` (dict): fields for the snapshot's JSON
  header; a ``note`` in it is also appended to the text header line.
"""

from __future__ import annotations

from typing import Any, Dict, Type

from ..errors import UsageError
from .base import EngineMode
from .cgroup import CgroupMode
from .process import ProcessMode
from .tc import TcMode
from .xdp import XdpMode

#: The modes by name: a table, so adding a mode is one line here.
REGISTRY: Dict[str, Type[Any]] = {m.name: m for m in (TcMode, XdpMode, CgroupMode, ProcessMode)}


def get(name: str) -> Type[Any]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown mode {name!r}; choose one of {', '.join(sorted(REGISTRY))}") from None


__all__ = ["REGISTRY", "EngineMode", "get"]
