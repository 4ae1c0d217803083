"""--drops: what the drop watcher costs per drop. In a namespace of its own,
a loop of UDP datagrams to a closed port on loopback (each one dropped with
NO_SOCKET), timed as the sender's CPU time (user + system: loopback delivers
in the sender's context) with nothing attached and with the watcher attached,
in alternating rounds; the median of the paired differences is the cost per
drop as the process sees it. The kernel's own figure comes beside it: with
BPF run-time statistics on (BPF_ENABLE_STATS, held by this process only
while it measures), the program's run_time_ns / run_cnt. The watcher must
have counted every datagram of the loop exactly.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import statistics
import subprocess
import time

from bench_process import _cpu_ns, _Netns

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_BPF, _BPF_ENABLE_STATS, _BPF_STATS_RUN_TIME = 321, 32, 0  # x86_64


def _enable_stats() -> int:
    attr = ctypes.c_uint32(_BPF_STATS_RUN_TIME)
    fd = _libc.syscall(_SYS_BPF, _BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_ENABLE_STATS: {os.strerror(err)}")
    return fd


def _prog_stats(prog_id: int) -> tuple[int, int]:
    out = subprocess.run(
        ["bpftool", "prog", "show", "id", str(prog_id), "-j"], check=True, capture_output=True
    )
    info = json.loads(out.stdout)
    return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))


def _loop(s: socket.socket, dst, n: int, payload: bytes) -> int:
    t = _cpu_ns()
    for _ in range(n):
        s.sendto(payload, dst)
    return _cpu_ns() - t


def run(quick: bool = False) -> dict:
    from pktstat_bpf.core.drops import DropWatch, netns_inode

    n = 2_000 if quick else 50_000
    rounds = 2 if quick else 7
    payload = b"x" * 64
    ns = _Netns()
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dst = ("127.0.0.1", 9)
        _loop(s, dst, n // 10, payload)  # warm up
        w = DropWatch(ifindex=socket.if_nametoindex("lo"), netns=netns_inode())
        w.load()
        diffs, base = [], []
        stats_fd = _enable_stats()
        try:
            t0, c0 = _prog_stats(w.engine.prog_id)
            for _ in range(rounds):
                off = _loop(s, dst, n, payload)
                w.attach()
                on = _loop(s, dst, n, payload)
                w.detach()
                base.append(off / n)
                diffs.append((on - off) / n)
            t1, c1 = _prog_stats(w.engine.prog_id)
        finally:
            os.close(stats_fd)
        reading = w.read()
        sport = s.getsockname()[1]
        got = sum(int(r["packets"]) for r in reading.records if r["sport"] == sport and r["dport"] == 9)
        w.engine = None
        if got != rounds * n or reading.reasons.get("NO_SOCKET") != rounds * n:
            raise RuntimeError(f"the drop watcher counted {got} drops ({reading.reasons}) of {rounds * n}")
    finally:
        ns.close()
    runs = c1 - c0
    return {
        "drops": n,
        "rounds": rounds,
        "cpu_ns_per_drop_unwatched": round(statistics.median(base)),
        "overhead_ns_per_drop": round(statistics.median(diffs)),
        "overhead_share": round(statistics.median(diffs) / statistics.median(base), 3),
        "program_runs": runs,
        "program_ns_per_run": round((t1 - t0) / runs, 1) if runs else None,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
