"""Datapath (target 2): packet rate and CPU time per packet of TC and XDP
mode on a live interface, against nothing attached and against an empty
program at the same hook.

Two namespaces of our own, joined by a veth pair `va` | `vb`. The traffic
generator is ours: bench/bpf/gen.bpf.c run by BPF_PROG_TEST_RUN with
BPF_F_TEST_XDP_LIVE_FRAMES in namespace A, so every run is a real frame that
XDP_REDIRECT transmits on `va` (Debian's xdp-trafficgen fails on this kernel).
`vb` receives it through veth's NAPI path (GRO is switched on there, as veth
needs a NAPI context to take redirected frames) and the stack drops it right
after TC ingress: its destination MAC is not vb's (PACKET_OTHERHOST).
All of that runs on one CPU, the generator's: the system call sends a batch,
and the softirq that receives it runs when the call re-enables bottom halves
(or in that CPU's ksoftirqd).

Receiver set-ups on vb, in rotated rounds: nothing; an empty TCX program;
pktstat-bpf's TC collector (the engine's own attach: TCX ingress and egress);
an empty XDP program (native); pktstat-bpf's XDP collector (native).
Frames of 60 bytes (64 on the wire with the FCS) and 1514 (1518), one flow or
64k flows (the generator rewrites the source address from a counter).

Per run: frames received by vb (its rx counter), wall time of the generator's
call (packet rate), CPU time of the generator's thread plus that CPU's
ksoftirqd (CPU ns per packet; with tick-based accounting the softirq time
run in the thread's context is the thread's). The collectors' own counters
must equal what vb received while they were attached.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import time
from typing import Any, Iterator

import numpy as np
from _bench import bench_object, median_diff, pinned, ratio, root_reason, rotated_rounds, udp_v4

CONFIGS = ("none", "tc_empty", "tc_ours", "xdp_empty", "xdp_ours")
SIZES = (60, 1514)
FLOWS = (1, 65536)
QUICK_FLOWS = (1, 1024)
FRAMES = 1_000_000
QUICK_FRAMES = 20_000
ROUNDS = 5
FOREIGN_MAC = bytes.fromhex("020000000099")  # not vb's: dropped as PACKET_OTHERHOST after TC

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
SIOCETHTOOL, ETHTOOL_GGRO, ETHTOOL_SGRO = 0x8946, 0x2B, 0x2C


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _setns(path: str) -> None:
    with open(path) as f:
        if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)


def _ethtool_gro(ifname: str, on: bool | None = None) -> bool:
    """Set (on given) and return the GRO state of ifname in this thread's
    namespace, by the ethtool ioctl (no ethtool binary needed)."""

    def ethtool(s: socket.socket, cmd: int, data: int) -> int:
        ev = ctypes.create_string_buffer(struct.pack("=II", cmd, data), 8)
        ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(ev)) + bytes(16)  # struct ifreq
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
        return struct.unpack("=II", ev.raw)[1]

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if on is not None:
            ethtool(s, ETHTOOL_SGRO, int(on))
        return bool(ethtool(s, ETHTOOL_GGRO, 0))


class VethPair:
    """Namespaces A (va) and B (vb), made here, removed by close(); the calling
    thread moves between them with in_a()/in_b()."""

    def __init__(self) -> None:
        tag = f"{os.getpid()}"
        self.a, self.b = f"pbbenchA{tag}", f"pbbenchB{tag}"
        self._home = open("/proc/thread-self/ns/net")
        try:
            for ns in (self.a, self.b):
                _sh("ip", "netns", "add", ns)
                _sh(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                )
            _sh(
                "ip",
                "link",
                "add",
                "va",
                "netns",
                self.a,
                "type",
                "veth",
                "peer",
                "name",
                "vb",
                "netns",
                self.b,
            )
            _sh("ip", "-n", self.a, "link", "set", "va", "up")
            _sh("ip", "-n", self.b, "link", "set", "vb", "up")
            with self.in_b():
                if not _ethtool_gro("vb", True):
                    raise RuntimeError("could not switch GRO on for vb")
                self.vb_index = socket.if_nametoindex("vb")
            with self.in_a():
                self.va_index = socket.if_nametoindex("va")
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _in(self, ns: str) -> Iterator[None]:
        _setns(f"/var/run/netns/{ns}")
        try:
            yield
        finally:
            if _libc.setns(self._home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to the original network namespace")

    def in_a(self):
        return self._in(self.a)

    def in_b(self):
        return self._in(self.b)

    def vb_rx(self) -> int:
        with self.in_b(), open("/proc/thread-self/net/dev") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name.strip() == "vb":
                    return int(rest.split()[1])
        raise RuntimeError("vb is not in /proc/net/dev")

    def settled_rx(self, timeout: float = 2.0) -> int:
        """vb's rx counter once it stops moving: frames still queued for its
        NAPI poll (or ksoftirqd) when the generator returns are received
        before the counters are read and the receiver changes."""
        last, deadline = self.vb_rx(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.005)
            now = self.vb_rx()
            if now == last:
                return now
            last = now
        raise RuntimeError(f"vb was still receiving {timeout} s after the generator stopped")

    def close(self) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._home.close()


def _ksoftirqd_ns(cpu: int) -> int:
    """CPU time of ksoftirqd/<cpu> so far (schedstat: ns on CPU)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() != f"ksoftirqd/{cpu}":
                        continue
                with open(f"/proc/{pid}/schedstat") as f:
                    return int(f.read().split()[0])
            except OSError:
                continue
    return 0


class Receiver:
    """What can be attached to vb, each attached and detached on demand."""

    def __init__(self, pair: VethPair, max_entries: int) -> None:
        from _bench import bench_core
        from pktstat_bpf import _core

        self.pair = pair
        frags = bench_core.xdp_kernel_has_buff_len()
        self.floor = bench_core._BenchObject(str(bench_object("floor")), xdp_frags=frags)
        with pair.in_b():
            self.tc = _core.TcCollector(pair.vb_index, max_entries=max_entries, attach="tcx")
            self.xdp = _core.XdpCollector(pair.vb_index, max_entries=max_entries, mode="native")
        self.counted = {"tc_ours": 0, "xdp_ours": 0}  # frames vb received while they were attached
        self._link = None

    @contextlib.contextmanager
    def attached(self, config: str) -> Iterator[None]:
        from _bench import bench_core

        with self.pair.in_b():
            if config == "tc_empty":
                self._link = bench_core._bench_attach_tcx(self.floor.prog_fd("tc_empty"), self.pair.vb_index)
            elif config == "xdp_empty":
                self._link = bench_core._bench_attach_xdp(self.floor.prog_fd("xdp_empty"), self.pair.vb_index)
            elif config == "tc_ours":
                self.tc.attach()
            elif config == "xdp_ours":
                self.xdp.attach()
        try:
            yield
        finally:
            with self.pair.in_b():
                if self._link is not None:
                    self._link.close()
                    self._link = None
                self.tc.detach()
                self.xdp.detach()

    def check(self, flows: int) -> None:
        from _bench import bench_core

        for name, col in (("tc_ours", self.tc), ("xdp_ours", self.xdp)):
            st = col.read_stats()[0]
            got = (
                int(st["packets"]),
                int(st["unparsed_packets"]),
                int(st["overflow_packets"]),
                bench_core._bench_count_flows(bench_core._bench_flows_fd(col)),
            )
            want = (self.counted[name], 0, 0, flows)
            if got != want:
                raise AssertionError(
                    f"{name} counted (packets, unparsed, overflow, flows) {got}, vb received {want}"
                )

    def close(self) -> None:
        with self.pair.in_b():
            self.tc.detach()
            self.xdp.detach()
        self.floor.close()


def _generator(pair: VethPair, flows: int):
    from _bench import bench_core

    ro = {"cfg_ifindex": struct.pack("=I", pair.va_index), "cfg_flows": struct.pack("=I", flows)}
    with pair.in_a():
        return bench_core._BenchObject(str(bench_object("gen")), rodata=ro)


def _send(pair: VethPair, gen_fd: int, frame: bytes, frames: int, cpu: int) -> dict[str, float]:
    from _bench import bench_core

    rx0, soft0 = pair.vb_rx(), _ksoftirqd_ns(cpu)
    with pair.in_a():
        c0 = time.clock_gettime_ns(time.CLOCK_THREAD_CPUTIME_ID)
        res = bench_core._bench_test_run(gen_fd, frame, frames, live_frames=True, batch_size=64)
        c1 = time.clock_gettime_ns(time.CLOCK_THREAD_CPUTIME_ID)
    rx, soft = pair.settled_rx() - rx0, _ksoftirqd_ns(cpu) - soft0
    return {"rx": rx, "wall_s": res["wall_s"], "cpu_ns": (c1 - c0) + soft}


def _combo(pair: VethPair, size: int, flows: int, frames: int, rounds: int, cpu: int) -> dict[str, Any]:
    assert frames >= flows, "every run must send every flow (the collectors' flow count is checked)"
    frame = FOREIGN_MAC + udp_v4(size)[6:]
    gen = _generator(pair, flows)
    rec = Receiver(pair, max(65536, flows + flows // 4))
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    try:
        gen_fd = gen.prog_fd("xdp_gen")

        def one(config: str, keep: bool = True) -> float:
            with rec.attached(config):
                r = _send(pair, gen_fd, frame, frames, cpu)
            if config in rec.counted:
                rec.counted[config] += r["rx"]
            if keep:
                runs[config].append(r)
            return r["cpu_ns"] / max(r["rx"], 1)

        for c in CONFIGS:  # warm-up: every flow exists in the collectors' maps before the rounds
            one(c, keep=False)
        cpu_ns = rotated_rounds(CONFIGS, one, rounds)
        rec.check(flows)
    finally:
        rec.close()
        gen.close()

    out: dict[str, Any] = {"frame_bytes": size, "flows": flows, "frames_per_run": frames}
    mpps = {c: [r["rx"] / r["wall_s"] / 1e6 for r in runs[c]] for c in CONFIGS}
    for c in CONFIGS:
        out[c] = {
            "mpps": round(float(np.median(mpps[c])), 3),
            "cpu_ns_per_packet": round(float(np.median(cpu_ns[c])), 1),
            "lost": int(sum(frames - r["rx"] for r in runs[c])),
        }
    for mode in ("tc", "xdp"):
        ours = cpu_ns[f"{mode}_ours"]
        out[f"{mode}_cpu_ns_over_none"] = round(median_diff(ours, cpu_ns["none"]), 1)
        out[f"{mode}_cpu_ns_over_empty"] = round(median_diff(ours, cpu_ns[f"{mode}_empty"]), 1)
        out[f"{mode}_rate_vs_none"] = ratio(out[f"{mode}_ours"]["mpps"], out["none"]["mpps"])
        out[f"{mode}_rate_vs_empty"] = ratio(out[f"{mode}_ours"]["mpps"], out[f"{mode}_empty"]["mpps"])
    return out


LIVE_REFUSED = "this kernel refuses BPF_PROG_TEST_RUN with live frames (EPERM): the generator cannot send"


def live_frames_refused() -> str | None:
    """Why the live-frame generator cannot run here (None: it can): an
    empty XDP program run once with BPF_F_TEST_XDP_LIVE_FRAMES. (A machine
    whose root lacks a capability the kernel asks for refuses it: seen on a
    VM whose root had no CAP_SYS_RESOURCE.)"""
    from _bench import bench_core, bench_object, udp_v4

    o = bench_core._BenchObject(str(bench_object("floor")))
    try:
        bench_core._bench_test_run(o.prog_fd("xdp_empty"), udp_v4(60), 1, live_frames=True, batch_size=1)
    except PermissionError:
        return LIVE_REFUSED
    finally:
        o.close()
    return None


def run(quick: bool = False) -> dict[str, Any]:
    reason = root_reason() or live_frames_refused()
    if reason:
        return {"skipped": reason}
    frames, rounds = (QUICK_FRAMES, 2) if quick else (FRAMES, ROUNDS)
    result: dict[str, Any] = {"rounds": rounds, "generator": "BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES"}
    pair = VethPair()
    try:
        with pinned() as cpu:
            result["cpu"] = cpu
            for size in SIZES:
                for flows in QUICK_FLOWS if quick else FLOWS:
                    result[f"{size}B_{flows}_flows"] = _combo(pair, size, flows, frames, rounds, cpu)
    finally:
        pair.close()
    return result


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
