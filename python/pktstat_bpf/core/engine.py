"""The one door to the C++ engine (the private extension module
``pktstat_bpf._core``): every module of the package that loads programs or
reads maps imports it from here, so the layering contract (pyproject.toml,
``[tool.importlinter]``) has one place where Python meets the engine."""

from __future__ import annotations

from typing import Any

from .. import _core

__all__ = ["_core", "test_faults"]


def test_faults() -> dict[str, Any]:
    """The test seam: the faults ``PKTSTAT_BPF_TEST_FAULTS`` asks for (parsed
    once, by the engine; docs/testing.md, "Failure injection"). Empty in use."""
    return dict(_core.test_faults())
