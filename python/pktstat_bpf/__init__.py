"""pktstat-bpf: per-flow traffic counters from eBPF programs in the kernel.

>>> import pktstat_bpf
>>> with pktstat_bpf.Collector(iface="lo") as c:   # doctest: +SKIP
...     ...
>>> c.snapshot().to_pandas()                       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("pktstat-bpf")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

from .capture import Capture, capture
from .collector import Collector
from .errors import FeatureMissingError, PktstatError, PrivilegeError, UsageError
from .offline import CaptureFileError, DamagedCaptureError, Replayer, replay
from .series import timeseries
from .snapshot import Counters, Snapshot, Totals

__all__ = [
    "CaptureFileError",
    "Capture",
    "Collector",
    "capture",
    "Counters",
    "DamagedCaptureError",
    "FeatureMissingError",
    "PktstatError",
    "PrivilegeError",
    "Replayer",
    "Snapshot",
    "Totals",
    "UsageError",
    "__version__",
    "replay",
    "timeseries",
]


def __getattr__(name: str) -> Any:
    if name == "RECORD_DTYPE":
        from . import _core

        return _core.record_dtype
    raise AttributeError(name)
