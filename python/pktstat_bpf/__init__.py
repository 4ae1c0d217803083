"""pktstat-bpf: per-flow traffic counters from eBPF programs in the kernel.

>>> import pktstat_bpf
>>> with pktstat_bpf.Collector(iface="lo") as c:   # doctest: +SKIP
...     ...
>>> c.snapshot().to_pandas()                       # doctest: +SKIP
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # (typing is not imported either: every import here delays the signal handlers)

# Imported on first use (PEP 562), so that `python -m pktstat_bpf` reaches
# cli.main(), which installs the SIGINT/SIGTERM handlers, before NumPy or the
# engine is imported: a signal in the first instants of a run is then one
# line and its exit code, not a traceback out of an import.
_WHERE = {
    "__version__": ".core.about",
    "Capture": ".core.capture",
    "capture": ".core.capture",
    "Collector": ".core.collector",
    "FeatureMissingError": ".core.errors",
    "PktstatError": ".core.errors",
    "PrivilegeError": ".core.errors",
    "UsageError": ".core.errors",
    "Interval": ".core.intervals",
    "CaptureFileError": ".core.replay",
    "DamagedCaptureError": ".core.replay",
    "Replayer": ".core.replay",
    "replay": ".core.replay",
    "Counters": ".core.snapshot",
    "Snapshot": ".core.snapshot",
    "Totals": ".core.snapshot",
    "timeseries": ".output.series",
    "read_flows": ".output.parquet",
    "budget": ".views.budget",
}

if TYPE_CHECKING:
    from typing import Any

    from .core.about import __version__
    from .core.capture import Capture, capture
    from .core.collector import Collector
    from .core.errors import FeatureMissingError, PktstatError, PrivilegeError, UsageError
    from .core.intervals import Interval
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
    if name == "RECORD_DTYPE":  # (imported by name, as every export here: see _WHERE)
        return importlib.import_module(".core.about", __name__).record_dtype()
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(name)
    module = importlib.import_module(where, __name__)
    value = module if name == "budget" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
