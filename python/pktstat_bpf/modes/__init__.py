"""Capture modes. Each mode is a class registered here that owns its engine
object from ``_core`` and knows how to load, attach, detach and read it; the
Collector does the rest (lifecycle, timing, snapshots) the same for all.

A mode class provides:

- ``name`` (str) and ``owners`` (bool: flows carry pid/comm/cgroup);
- ``__init__(**options)``: validate options, raise UsageError on bad ones;
- ``load()``: open and load the BPF programs (may raise OSError);
- ``attach()`` / ``detach()``: all-or-nothing attach; idempotent detach;
- ``attach_path`` (str, e.g. ``"tcx"``), ``where`` (str, e.g. ``"eth0"``),
  ``status()`` (dict, extra fields for the status line and JSON header);
- ``read(use_batch)``: ``(records, stats)`` arrays from the engine;
- ``ifnames`` and ``cgroups`` mappings used to render records;
- ``unowned(records)``: ``(packets, bytes)`` without an owner for
  ``Snapshot.totals`` in the modes that attribute flows to processes, None
  in the others (EngineMode's default);
- optionally ``report_extra()`` (dict): fields for the snapshot's JSON
  header; a ``note`` in it is also appended to the text header line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Type

if TYPE_CHECKING:
    import numpy as np

REGISTRY: Dict[str, Type[Any]] = {}


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

    def unowned(self, records: np.ndarray) -> tuple[int, int] | None:
        """(packets, bytes) without an owner: None where nothing is owned."""
        return None


def register(cls: Type[Any]) -> Type[Any]:
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> Type[Any]:
    from ..errors import UsageError

    _load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown mode {name!r}; choose one of {', '.join(sorted(REGISTRY))}") from None


def _load_all() -> None:
    from . import cgroup, process, tc, xdp  # noqa: F401
