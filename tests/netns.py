"""Network namespaces for end-to-end tests.

A NetnsPair is two fresh namespaces joined by a veth pair; nothing is made in
the caller's namespace, so concurrent test runs cannot collide. The test
thread enters namespace A (setns on the calling thread only) to attach a
collector and send traffic; peers in namespace B run as subprocesses.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()

PEER = Path(__file__).with_name("peer.py")


def sh(*cmd: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess:
    if netns:
        cmd = ("ip", "netns", "exec", netns, *cmd)
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def in_ns(name: str):
    """The calling thread in network namespace `name` (sockets made there stay there)."""
    with open("/proc/thread-self/ns/net") as orig, open(f"/var/run/netns/{name}") as target:
        setns(target.fileno())
        try:
            yield
        finally:
            setns(orig.fileno())


class NetnsPair:
    """Namespace A holds `va` (10.99.0.1/24, fd99::1/64), namespace B holds
    `vb` (10.99.0.2/24, fd99::2/64)."""

    A4, B4 = "10.99.0.1", "10.99.0.2"
    A6, B6 = "fd99::1", "fd99::2"

    def __init__(self, ipv6: bool = True) -> None:
        tag = f"{os.getpid()}x{next(_counter)}"
        self.ns_a, self.ns_b = f"pbtA{tag}", f"pbtB{tag}"
        self.va, self.vb = "va", "vb"
        self.ipv6 = ipv6
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise

    def _create(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", netns=ns)
        sh(
            "ip",
            "link",
            "add",
            "va",
            "netns",
            self.ns_a,
            "type",
            "veth",
            "peer",
            "name",
            "vb",
            "netns",
            self.ns_b,
        )
        for ns, dev, a4, a6 in ((self.ns_a, "va", self.A4, self.A6), (self.ns_b, "vb", self.B4, self.B6)):
            if self.ipv6:
                sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_ra=0", netns=ns)
                sh("ip", "-6", "addr", "add", f"{a6}/64", "dev", dev, "nodad", netns=ns)
            else:
                sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", netns=ns)
            sh("ip", "addr", "add", f"{a4}/24", "dev", dev, netns=ns)
            sh("ip", "link", "set", dev, "up", netns=ns)
        self.resolve_neighbours()

    def resolve_neighbours(self) -> None:
        """Ping B once per family, so ARP/NDP are done before a test counts:
        a first packet would otherwise wait in the neighbour queue and reach
        TC egress only after the reply, possibly after a short capture ended."""
        from traffic import ping

        with self.in_a():
            for dst in (self.B4, self.B6) if self.ipv6 else (self.B4,):
                if ping(dst, 1, ident=0x7777) != 1:
                    raise RuntimeError(f"no echo reply from {dst} while setting up {self.ns_b}")

    def destroy(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            sh("ip", "netns", "del", ns, check=False)

    @contextlib.contextmanager
    def in_a(self):
        """Run the body with the calling thread inside namespace A."""
        with in_ns(self.ns_a):
            yield self

    @contextlib.contextmanager
    def in_b(self):
        """Run the body with the calling thread inside namespace B."""
        with in_ns(self.ns_b):
            yield self

    def peer(self, *args: str) -> subprocess.Popen:
        """Start tests/peer.py in namespace B and wait until it is ready."""
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_b, sys.executable, str(PEER), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.kill()
            raise RuntimeError(f"peer {args} failed to start: {line!r}")
        return p

    def exec_a(self, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns_a, *cmd], **kw)

    def tc_state(self, dev: str = "va") -> dict[str, str]:
        """What tc, bpftool and the kernel's TCX query report on `dev` in
        namespace A. (Debian's bpftool 7.1 predates TCX, so TCX programs are
        listed by a BPF_PROG_QUERY of our own, see tcx_programs.)"""
        with self.in_a():
            tcx = tcx_programs(socket.if_nametoindex(dev))
        return {
            "qdisc": sh("tc", "qdisc", "show", "dev", dev, netns=self.ns_a).stdout,
            "ingress": sh("tc", "filter", "show", "dev", dev, "ingress", netns=self.ns_a).stdout,
            "egress": sh("tc", "filter", "show", "dev", dev, "egress", netns=self.ns_a).stdout,
            "bpftool": sh("bpftool", "net", "show", "dev", dev, netns=self.ns_a).stdout,
            "tcx": " ".join(f"{d}:{n}" for d, names in tcx.items() for n in names),
        }

    def ours_attached(self, dev: str = "va") -> bool:
        s = self.tc_state(dev)
        return any(
            n in s[k] for k in ("bpftool", "tcx", "ingress", "egress") for n in ("tc_ingress", "tc_egress")
        )


_SYS_BPF = 321  # x86_64
_BPF_PROG_QUERY = 16


def tcx_programs(ifindex: int) -> dict[str, list[str]]:
    """Names of the programs attached through TCX to `ifindex` (in the calling
    thread's namespace), by a raw BPF_PROG_QUERY: independent of the engine."""
    out: dict[str, list[str]] = {}
    for direction, attach_type in (("ingress", 46), ("egress", 47)):
        ids = (ctypes.c_uint32 * 64)()
        attr = bytearray(64)
        struct.pack_into("=II", attr, 0, ifindex, attach_type)
        struct.pack_into("=QI", attr, 16, ctypes.addressof(ids), 64)
        buf = (ctypes.c_char * 64).from_buffer(attr)
        _libc.syscall.restype = ctypes.c_long
        if _libc.syscall(_SYS_BPF, _BPF_PROG_QUERY, buf, 64) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):  # no TCX in this kernel / nothing attached
                out[direction] = []
                continue
            raise OSError(err, os.strerror(err))
        count = struct.unpack_from("=I", attr, 24)[0]
        names = []
        for pid in ids[:count]:
            info = json.loads(sh("bpftool", "prog", "show", "id", str(pid), "-j").stdout)
            names.append(info.get("name", str(pid)))
        out[direction] = names
    return out


def wait_for(pred, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)
