"""Process mode: what it costs a process to be watched. One UDP socket pair
on loopback in a namespace of its own, a loop of sendto + recvfrom calls
(two counted events per round trip), timed as the process's own CPU time
(user + system, getrusage) with nothing attached and with process mode's
backend attached, in alternating rounds; the median of the paired
differences is the overhead per call. The collector must have counted every
call of the loop exactly (a figure never comes from a miscounting program).
"""

from __future__ import annotations

import ctypes
import os
import resource
import socket
import statistics
import subprocess
import time
import uuid

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _cpu_ns() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return int((r.ru_utime + r.ru_stime) * 1e9)


def _loop(a: socket.socket, b: socket.socket, dst, n: int, payload: bytes) -> int:
    """n round trips a -> b; the CPU ns they took."""
    t = _cpu_ns()
    for _ in range(n):
        a.sendto(payload, dst)
        b.recvfrom(2048)
    return _cpu_ns() - t


class _Netns:
    def __init__(self) -> None:
        self.name = f"pbtbench{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        self._orig = open("/proc/thread-self/ns/net")
        with open(f"/var/run/netns/{self.name}") as f:
            _setns(f.fileno())

    def close(self) -> None:
        _setns(self._orig.fileno())
        self._orig.close()
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def run(quick: bool = False) -> dict:
    from pktstat_bpf import Collector

    n = 2_000 if quick else 50_000
    rounds = 2 if quick else 7
    payload = b"x" * 64
    ns = _Netns()
    try:
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b.bind(("127.0.0.1", 0))
        dst = b.getsockname()
        _loop(a, b, dst, n // 10, payload)  # warm up
        c = Collector(mode="process")
        diffs, base, watched = [], [], []
        for _ in range(rounds):
            off = _loop(a, b, dst, n, payload)
            c.start()
            on = _loop(a, b, dst, n, payload)
            c.stop()
            base.append(off / n)
            watched.append(on / n)
            diffs.append((on - off) / n)
        snap = c.snapshot()
        backend = c.status["backend"]
        c.close()
        pid, sport = os.getpid(), a.getsockname()[1]
        sent = sum(
            int(r["packets"])
            for r in snap.records
            if r["pid"] == pid and r["sport"] == sport and r["dir"] == 1
        )
        got = sum(
            int(r["packets"])
            for r in snap.records
            if r["pid"] == pid and r["dport"] == dst[1] and r["dir"] == 0
        )
        if sent != rounds * n or got != rounds * n:
            raise RuntimeError(f"process mode counted {sent} sends and {got} receives of {rounds * n} each")
    finally:
        ns.close()
    per_trip = statistics.median(diffs)
    return {
        "backend": backend,
        "round_trips": n,
        "rounds": rounds,
        "cpu_ns_per_round_trip_unwatched": round(statistics.median(base)),
        "cpu_ns_per_round_trip_watched": round(statistics.median(watched)),
        "overhead_ns_per_call": round(per_trip / 2),
        "overhead_share": round(per_trip / statistics.median(base), 3),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
