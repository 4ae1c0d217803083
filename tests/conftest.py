"""Shared fixtures and the skip policy.

Tests that need root or a kernel feature skip with the reason. With
PKTSTAT_BPF_REQUIRE_ALL=1 (set by .ci/run) every skip becomes a failure, so CI
proves that the BPF paths really ran.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# bench/_bench.py: `from _bench import bench_core`, the benchmark module with what only
# tests and benchmarks read from the engine (built by make test: make bench-module)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

REQUIRE_ALL = os.environ.get("PKTSTAT_BPF_REQUIRE_ALL") == "1"
# Kernel features this kernel must have (comma-separated): tcx, sock-tracepoints,
# process-tracepoint, process-fentry, process-kprobe, wireguard. Set by .ci/run for the host and by
# tests/vm/test-kernels.sh for each guest kernel.
EXPECT = {f.strip() for f in os.environ.get("PKTSTAT_BPF_EXPECT", "").split(",") if f.strip()}


def kernel_lacks(feature: str, reason: str | None) -> str | None:
    """A probe found `feature` missing for `reason` (None: present). Tests
    of a missing feature check its clean refusal instead of skipping; where
    PKTSTAT_BPF_EXPECT says this kernel has the feature, its absence fails."""
    if reason and feature in EXPECT:
        pytest.fail(f"this kernel was expected to have {feature} (PKTSTAT_BPF_EXPECT), but: {reason}")
    return reason


def _vmlinux_btf() -> bytes:
    return Path("/sys/kernel/btf/vmlinux").read_bytes()


def sock_tracepoints_missing() -> str | None:
    """Why this kernel has no sock_send_length/sock_recv_length tracepoints (None if it has)."""
    try:
        btf = _vmlinux_btf()
    except OSError as e:
        return f"no kernel BTF to tell ({e})"
    names = (b"btf_trace_sock_send_length\0", b"btf_trace_sock_recv_length\0")
    return (
        None
        if all(n in btf for n in names)
        else "no sock_send_length/sock_recv_length tracepoints (Linux 6.3+)"
    )


def tcx_missing() -> str | None:
    """Why this kernel has no TCX (None if it has): its BTF names the attach types."""
    try:
        btf = Path("/sys/kernel/btf/vmlinux").read_bytes()
    except OSError as e:
        return f"no kernel BTF to tell ({e})"
    return None if b"BPF_TCX_INGRESS\0" in btf else "the kernel has no TCX (Linux 6.6+)"


def _forbid_skip(rep) -> None:
    """With PKTSTAT_BPF_REQUIRE_ALL, a skip is reported as a failure."""
    if REQUIRE_ALL and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skip not allowed with PKTSTAT_BPF_REQUIRE_ALL=1: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    _forbid_skip((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at collection time too (a module-level
    pytest.importorskip of a test dependency that is missing)."""
    _forbid_skip((yield).get_result())


def _bpf_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON) to load BPF programs"
    try:
        from pktstat_bpf import _core

        _core.TcCollector(1, 16)  # load only: proves the kernel takes our programs
    except PermissionError as e:
        return f"BPF programs cannot be loaded here: {e}"
    except OSError as e:
        return f"BPF programs cannot be loaded here: {e}"
    for tool in ("ip", "tc", "bpftool"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            return f"{tool} is not installed (make setup installs it)"
    return None


_BPF_REASON: list[str | None] = []


@pytest.fixture(scope="session")
def bpf() -> None:
    """Skip (with the reason) unless BPF programs can be loaded and attached."""
    if not _BPF_REASON:
        _BPF_REASON.append(_bpf_unavailable())
    if _BPF_REASON[0]:
        pytest.skip(_BPF_REASON[0])


@pytest.fixture
def netns(bpf):
    """Two fresh namespaces A and B joined by a veth pair (see tests/netns.py)."""
    from netns import NetnsPair

    pair = NetnsPair()
    yield pair
    pair.destroy()


@pytest.fixture
def netns_v4only(bpf):
    from netns import NetnsPair

    pair = NetnsPair(ipv6=False)
    yield pair
    pair.destroy()


@pytest.fixture
def cg(bpf):
    """A cgroup v2 tree of the test's own (see tests/cgroups.py), removed after."""
    from cgroups import TestCgroup, cgroup2_mount

    if cgroup2_mount() is None:
        pytest.skip("no writable cgroup v2 mount")
    c = TestCgroup()
    yield c
    c.destroy()


pytest_plugins = ["pytester"]
