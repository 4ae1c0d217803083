"""Test-only knobs (documented in docs/testing.md, "Failure injection").

``PKTSTAT_BPF_TEST_FORCE_MISSING=feature,...`` makes the probe of each named
kernel feature report it missing, so the fallback or the one-line error a
user of an older kernel gets can be tested on a kernel that has everything.
The engine honours most names (``src/cpp/test_knobs.hpp``); the Python side
honours ``cgroup2`` (no cgroup v2 hierarchy mounted).

``PKTSTAT_BPF_TEST_PROGRESS_DELAY=SECONDS`` replaces the replay progress
bar's delay (2 s), so a test on a terminal need not replay for long.
"""

from __future__ import annotations

import os

FORCE_MISSING_ENV = "PKTSTAT_BPF_TEST_FORCE_MISSING"


PROGRESS_DELAY_ENV = "PKTSTAT_BPF_TEST_PROGRESS_DELAY"


def forced_missing(feature: str) -> bool:
    """True if `feature` is listed in PKTSTAT_BPF_TEST_FORCE_MISSING."""
    return feature in os.environ.get(FORCE_MISSING_ENV, "").split(",")


def progress_delay(default: float) -> float:
    """PKTSTAT_BPF_TEST_PROGRESS_DELAY if set (and a number), else `default`."""
    try:
        return float(os.environ[PROGRESS_DELAY_ENV])
    except (KeyError, ValueError):
        return default
