"""The one door to the C++ engine (the private extension module
``pktstat_bpf._core``): every module of the package that loads programs or
reads maps imports it from here, so the layering contract (pyproject.toml,
``[tool.importlinter]``) has one place where Python meets the engine."""

from __future__ import annotations

from .. import _core

__all__ = ["_core"]
