"""What the package says about itself and its engine: the version, libbpf's
version, and the record dtype of the flow tables."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import numpy as np

try:
    __version__ = version("pktstat-bpf")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"


def libbpf_version() -> str:
    """The version of the libbpf the engine was linked with."""
    from .engine import _core

    return str(_core.libbpf_version())


def record_dtype() -> np.dtype:
    """The NumPy dtype of one flow record (``struct flow_record`` of flow.h)."""
    from .engine import _core

    return _core.record_dtype
