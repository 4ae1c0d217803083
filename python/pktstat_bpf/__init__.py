"""pktstat-bpf: per-flow traffic counters from eBPF programs in the kernel.

>>> import pktstat_bpf
>>> with pktstat_bpf.Collector(iface="lo") as c:   # doctest: +SKIP
...     ...
>>> c.snapshot().to_pandas()                       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from .core.about import __version__, record_dtype
from .core.capture import Capture, capture
from .core.collector import Collector
from .core.errors import FeatureMissingError, PktstatError, PrivilegeError, UsageError
from .core.intervals import Interval, IntervalTracker
from .core.replay import CaptureFileError, DamagedCaptureError, Replayer, replay
from .core.snapshot import Counters, Snapshot, Totals
from .output.parquet import read_flows
from .output.series import timeseries
from .views import budget

__all__ = [
    "CaptureFileError",
    "Capture",
    "Collector",
    "capture",
    "Counters",
    "DamagedCaptureError",
    "FeatureMissingError",
    "Interval",
    "IntervalTracker",
    "PktstatError",
    "PrivilegeError",
    "Replayer",
    "Snapshot",
    "Totals",
    "UsageError",
    "__version__",
    "budget",
    "read_flows",
    "replay",
    "timeseries",
]


def __getattr__(name: str) -> Any:
    if name == "RECORD_DTYPE":
        return record_dtype()
    raise AttributeError(name)
