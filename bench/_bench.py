"""What the benchmarks share: the benchmark module _bench_core (bench/cpp,
built into build/bench by `make bench` and `make test`), the bench-only BPF
objects (bench/bpf, compiled here with the flags CMakeLists.txt gives the
shipped programs), the shipped objects (as that build compiled them), CPU
pinning, runs on several CPUs at once, rotated rounds with paired
differences, and test frames."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
BENCH_BPF = REPO / "bench" / "bpf"
SRC_BPF = REPO / "src" / "bpf"
OUT = REPO / "build" / "bench"  # also the CMake build of bench/cpp (make bench-module)


def _load_bench_core() -> ModuleType:
    """build/bench/_bench_core*.so: BPF objects loaded by path, BPF_PROG_TEST_RUN,
    batch map fills and reads (never part of the installed package)."""
    sys.path.insert(0, str(OUT))
    try:
        import _bench_core
    except ImportError as e:
        raise ImportError(f"{e}: build it with `make bench-module` (make bench and make test do)") from e
    finally:
        sys.path.remove(str(OUT))
    return _bench_core


def __getattr__(name: str) -> ModuleType:
    # `from _bench import bench_core` imports the module on first use only,
    # so what needs no BPF (run.py --table) runs without it.
    if name == "bench_core":
        return _load_bench_core()
    raise AttributeError(name)


def root_reason() -> str | None:
    """Why the BPF benchmarks cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to load BPF programs"
    if not shutil.which("clang"):
        return "clang is not installed (make setup installs it)"
    return None


def _clang_flags(src_bpf: Path = SRC_BPF) -> list[str]:
    arch = os.uname().machine
    flags = [
        "-g",
        "-O2",
        "-target",
        "bpf",
        "-mcpu=v3",
        "-D__TARGET_ARCH_" + {"x86_64": "x86", "aarch64": "arm64"}.get(arch, arch),
        "-Wall",
        "-Werror",
        "-Wno-unused-function",
        f"-I{src_bpf}",
    ]
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    if multiarch:
        flags.append(f"-I/usr/include/{multiarch}")
    return flags


def compiled(src: Path, out: Path, *defines: str) -> Path:
    """`src` compiled into `out` with the build's flags and `defines`, again
    if it or a src/bpf header changed since."""
    deps = [src, *SRC_BPF.glob("*.h")]
    if not out.exists() or out.stat().st_mtime < max(p.stat().st_mtime for p in deps):
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["clang", *_clang_flags(), *defines, "-c", str(src), "-o", str(out)], check=True)
    return out


def bench_object(name: str) -> Path:
    """bench/bpf/<name>.bpf.c compiled (again if it or a src/bpf header changed)."""
    return compiled(BENCH_BPF / f"{name}.bpf.c", OUT / f"{name}.bpf.o")


def commit_object(commit: str, name: str) -> Path:
    """src/bpf/<name>.bpf.c as it was at `commit` (git archive of that src/bpf
    into a temporary directory), compiled with the flags of today's build:
    the program before a change, measured beside the shipped one."""
    out = OUT / f"{name}-{commit}.bpf.o"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["git", "-C", str(REPO), "archive", commit, "src/bpf"]
        arch = subprocess.run(cmd, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=arch, check=True)
        src = Path(tmp) / "src" / "bpf"
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["clang", *_clang_flags(src), "-c", str(src / f"{name}.bpf.c"), "-o", str(out)], check=True
        )
    return out


def package_object(name: str) -> Path:
    """The shipped program src/bpf/<name>.bpf.c as the build compiles it for the
    skeleton the engine embeds (build/bench/bpf, made with _bench_core; the
    package installs no object file)."""
    path = OUT / "bpf" / f"{name}.bpf.o"
    if not path.exists():
        raise FileNotFoundError(f"{path}: build it with `make bench-module` (make bench and make test do)")
    return path


@contextlib.contextmanager
def pinned(cpu: int | None = None) -> Iterator[int]:
    """Run the body on one CPU (the last one by default)."""
    before = os.sched_getaffinity(0)
    cpu = max(before) if cpu is None else cpu
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def on_cpus(cpus: Sequence[int], call: Callable[[int], T], fifo: int = 0) -> list[tuple[T, int, int]]:
    """call(i) on one thread per CPU, thread i pinned to cpus[i], all released
    together by a barrier: concurrent runs of a call that releases the GIL
    (BPF_PROG_TEST_RUN runs the program on the calling thread's CPU). `fifo`:
    the threads run under SCHED_FIFO at that priority (root), so that other
    tasks on those CPUs wait for the calls rather than take turns with them.
    Per thread: (result, start, end), the stamps in ns of the monotonic clock."""
    barrier = threading.Barrier(len(cpus))
    out: list[tuple[T, int, int] | None] = [None] * len(cpus)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            os.sched_setaffinity(0, {cpus[i]})  # this thread only
            if fifo:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(fifo))
            barrier.wait()
            t0 = time.monotonic_ns()
            res = call(i)
            out[i] = (res, t0, time.monotonic_ns())
        except BaseException as e:  # re-raised by the caller's thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cpus))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
    return [r for r in out if r is not None]


def rotated_rounds(
    names: Sequence[str], measure: Callable[[str], float], rounds: int
) -> dict[str, list[float]]:
    """`rounds` rounds measuring every name once; round r starts at name
    r mod len(names), so no name always runs first (or right after another)."""
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in list(names[k:]) + list(names[:k]):
            out[n].append(measure(n))
    return out


def median_diff(a: Sequence[float], floor: Sequence[float]) -> float:
    """Median of the per-round differences a - floor (paired by round)."""
    return float(statistics.median(x - f for x, f in zip(a, floor)))


def ratio(num: float, den: float) -> float | None:
    return round(num / den, 3) if den > 0 else None


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def fd_memlock(fd: int) -> int:
    """The kernel's memory accounting of a BPF map (fdinfo `memlock`)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    raise RuntimeError(f"fd {fd} has no memlock in fdinfo (not a BPF map?)")


# ---- frames -------------------------------------------------------------------

MAC_DST = bytes.fromhex("020000000002")
MAC_SRC = bytes.fromhex("020000000001")
V4_SRC, V4_DST = 0x0A000001, 0x0A000002  # 10.0.0.1 -> 10.0.0.2
V4_SADDR_OFF = 14 + 12  # where the IPv4 source address is in an Ethernet frame


def eth(etype: int, dst: bytes = MAC_DST) -> bytes:
    return dst + MAC_SRC + struct.pack("!H", etype)


def tcp_v4(size: int = 60, dst_mac: bytes = MAC_DST) -> bytes:
    """An Ethernet + IPv4 + TCP frame of `size` bytes (padding as payload)."""
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, size - 14, 1, 0x4000, 64, 6, 0, V4_SRC, V4_DST)
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 1, 1, 0x50, 0x10, 65535, 0, 0)
    return (eth(0x0800, dst_mac) + ip + tcp).ljust(size, b"\0")


def udp_v4(size: int = 60, dst_mac: bytes = MAC_DST) -> bytes:
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, size - 14, 1, 0x4000, 64, 17, 0, V4_SRC, V4_DST)
    udp = struct.pack("!HHHH", 40000, 9, size - 34, 0)
    return (eth(0x0800, dst_mac) + ip + udp).ljust(size, b"\0")


def tcp_v6(size: int = 74) -> bytes:
    src = bytes.fromhex("fd000000000000000000000000000001")
    dst = bytes.fromhex("fd000000000000000000000000000002")
    ip = struct.pack("!IHBB", 0x60000000, size - 54, 6, 64) + src + dst
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 1, 1, 0x50, 0x10, 65535, 0, 0)
    return (eth(0x86DD) + ip + tcp).ljust(size, b"\0")


def drained(records, totals=None, end_ns: int = 0, start_ns: int = 0):
    """A drain's outcome (what ``_core`` drain() returns) made in memory:
    `records` (record dtype) are the interval's flows, `totals` (two
    columns: lifetime packets, bytes) their lifetime counts (the interval's
    when None). For the Python side of an interval without a kernel."""
    from types import SimpleNamespace

    import numpy as np
    from pktstat_bpf import _core

    iv = np.zeros(len(records), _core.interval_dtype)
    for name in records.dtype.names:
        iv[name] = records[name]
    iv["total_packets"] = records["packets"] if totals is None else totals[:, 0]
    iv["total_bytes"] = records["bytes"] if totals is None else totals[:, 1]
    iv["flow_first_seen"] = records["first_seen"]
    stats = np.zeros(3, _core.stats_dtype)
    return SimpleNamespace(
        start_ns=start_ns,
        end_ns=end_ns,
        records=iv,
        stats=stats,
        ended=np.zeros(0, _core.ended_dtype),
        totals=stats,
        live_flows=len(records),
        evicted_flows=0,
    )
