"""TCP health live (src/bpf/tcp_health.bpf.h), held against the sending
kernel's own view of its sockets, on a veth between two namespaces.

- Retransmissions: a receiver whose nftables rule drops every tenth data
  segment of one connection makes the sender send segments again; the
  sender's TC egress flow must count exactly the segments the sender's
  kernel says it sent again (``TcpRetransSegs`` of its namespace), with
  segmentation offload limited to one segment per packet so that a packet
  is a segment (docs/counting.md).
- Round trips: on this host, a bulk transfer's smallest round trip agrees
  with the kernel's own (``ss -ti`` ``minrtt``) within 20% or 100 us (not in
  the emulated guests, whose TCP stacks take a hundred microseconds of their
  own around the wire time we measure, docs/counting.md); where the kernel
  has ``sch_netem`` (the 6.1 and 6.12 guests: PKTSTAT_BPF_EXPECT=netem), a
  20 ms delay on the receiver's side gives each connection's flow a round
  trip of at least 20 ms and at most what its connect() took.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest
from conftest import kernel_lacks
from netns import NetnsPair, setns, sh
from pktstat_bpf import Collector

PORT = 5023


class Server:
    """A TCP listener in namespace B, served by a thread: each connection is
    read to its end (or reset), then closed."""

    def __init__(self, ns: NetnsPair) -> None:
        with open("/proc/thread-self/ns/net") as orig, open(f"/var/run/netns/{ns.ns_b}") as target:
            setns(target.fileno())
            try:
                self.sock = socket.create_server(("0.0.0.0", PORT), reuse_port=False)
            finally:
                setns(orig.fileno())
        self.done = threading.Semaphore(0)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                try:
                    while c.recv(65536):
                        pass
                except ConnectionResetError:
                    pass
            self.done.release()

    def close(self) -> None:
        self.sock.close()


def retrans_segs(ns: str) -> int:
    """The namespace's TCP RetransSegs (/proc/net/snmp)."""
    out = sh("cat", "/proc/net/snmp", netns=ns).stdout
    head, values = [line.split() for line in out.splitlines() if line.startswith("Tcp:")]
    return int(values[head.index("RetransSegs")])


def ss_info(ns: str, sport: int) -> str:
    return sh("ss", "-tinH", "state", "established", f"sport = :{sport}", netns=ns).stdout


def egress_flow(snap, sport: int):
    (r,) = [
        r
        for r in snap.records
        if int(r["proto"]) == 6 and int(r["sport"]) == sport and int(r["dport"]) == PORT
    ]
    return r


@pytest.fixture
def pair(bpf):
    ns = NetnsPair(ipv6=False)
    try:
        yield ns
    finally:
        ns.destroy()


def test_retransmissions_equal_the_senders_count(pair):
    if not shutil.which("nft"):
        pytest.fail("nft (nftables) is missing: make setup installs it")
    rules = "table inet pbt_health {\n chain input {\n  type filter hook input priority 0;\n"
    rules += f"  tcp dport {PORT} meta length > 100 numgen inc mod 10 0 drop\n }}\n}}\n"
    subprocess.run(["ip", "netns", "exec", pair.ns_b, "nft", "-f", "-"], input=rules, text=True, check=True)
    sh("ip", "link", "set", "va", "gso_max_segs", "1", netns=pair.ns_a)  # one segment per packet
    server = Server(pair)
    try:
        with pair.in_a(), Collector(iface="va") as c:
            before = retrans_segs(pair.ns_a)
            s = socket.create_connection((pair.B4, PORT))
            sport = s.getsockname()[1]
            s.sendall(b"x" * 1_000_000)
            s.shutdown(socket.SHUT_WR)
            assert server.done.acquire(timeout=30)
            s.close()
            time.sleep(0.2)
            sent_again = retrans_segs(pair.ns_a) - before
            snap = c.snapshot()
    finally:
        server.close()
    r = egress_flow(snap, sport)
    assert sent_again >= 50  # about a tenth of some 700 segments
    assert int(r["retrans_packets"]) == sent_again
    assert int(r["retrans_bytes"]) > 1400 * sent_again // 2  # full-sized segments, mostly


def test_round_trips_agree_with_the_kernel(pair):
    server = Server(pair)
    try:
        with pair.in_a(), Collector(iface="va") as c:
            s = socket.create_connection((pair.B4, PORT))
            sport = s.getsockname()[1]
            s.sendall(b"x" * 20_000_000)
            info = ss_info(pair.ns_a, sport)
            s.shutdown(socket.SHUT_WR)
            assert server.done.acquire(timeout=30)
            s.close()
            time.sleep(0.2)
            snap = c.snapshot()
    finally:
        server.close()
    kernel_min = float(re.search(r"\bminrtt:([\d.]+)", info).group(1)) * 1e6  # ms -> ns
    r = egress_flow(snap, sport)
    ours = int(r["rtt_min"].astype("int64"))
    print(
        f"ours: min {ours} ns over {int(r['rtt_samples'])} samples; the kernel's minrtt {kernel_min:.0f} ns"
    )
    assert int(r["rtt_samples"]) >= 10
    assert abs(ours - kernel_min) <= max(0.2 * kernel_min, 100_000)


@pytest.mark.kernel
def test_round_trips_of_a_delayed_path(pair):
    """20 ms of netem on B's side of the veth: each connection's SYN-ACK
    (sent by B's kernel at once) reaches A 20 ms after the SYN left, so
    each connection's flow times one round trip of at least 20 ms, and at
    most what the client's connect() took (timed around it: the SYN leaves
    after it starts, the SYN-ACK arrives before it returns). The connections
    end by RST (SO_LINGER 0), which carries no sequence space: no other
    round trip is timed. (The guests are emulated: their kernels take a ms
    or two of their own, inside both bounds.)"""
    add = sh(
        "tc", "qdisc", "add", "dev", "vb", "root", "netem", "delay", "20ms", netns=pair.ns_b, check=False
    )
    if add.returncode != 0:
        kernel_lacks("netem", f"tc cannot add a netem qdisc: {add.stderr.strip()}")
        # no netem (this host): the refusal is tc's own, and no qdisc was made
        assert "netem" not in sh("tc", "qdisc", "show", "dev", "vb", netns=pair.ns_b).stdout
        return
    server = Server(pair)
    took = {}
    try:
        with pair.in_a(), Collector(iface="va") as c:
            for _ in range(10):
                t0 = time.monotonic_ns()
                s = socket.create_connection((pair.B4, PORT))
                t1 = time.monotonic_ns()
                took[s.getsockname()[1]] = t1 - t0
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                assert server.done.acquire(timeout=30)
            time.sleep(0.3)
            snap = c.snapshot()
    finally:
        server.close()
    for sport, connect_ns in took.items():
        r = egress_flow(snap, sport)
        lo, hi = (int(r[k].astype("int64")) for k in ("rtt_min", "rtt_max"))
        print(f"{sport}: {int(r['rtt_samples'])} samples, {lo} ns; connect() took {connect_ns} ns")
        assert int(r["rtt_samples"]) == 1
        assert 20_000_000 <= lo == hi <= connect_ns
