"""TCP flags per flow, live: real TCP connections on a veth in tc, xdp and
cgroup mode.

Two connections from namespace A to a listener in namespace B: one sends
data and closes in order (FIN both ways), one sends data and aborts with
SO_LINGER 0 (one RST, no FIN). By construction each direction of each
connection carries exactly one SYN (the SYN, the SYN-ACK), and the counts of
FIN and RST follow from how it closed; the OR of the flags is checked
against an AF_PACKET capture of the same frames (tests/traffic.py's
Sniffer). XDP sees ingress only; cgroup mode sees the sockets of its cgroup
(the client's), both directions.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from netns import NetnsPair, setns
from pktstat_bpf import Collector
from traffic import Sniffer, tcp_close_or_abort

FIN, SYN, RST = 0x01, 0x02, 0x04
PORT = 5019


class Listener:
    """A TCP listener made in namespace B (a socket stays in the namespace
    it was made in), served by a thread: each connection is read to EOF or
    reset, then closed."""

    def __init__(self, ns: NetnsPair, family: int) -> None:
        with open("/proc/thread-self/ns/net") as orig, open(f"/var/run/netns/{ns.ns_b}") as target:
            setns(target.fileno())
            try:
                self.sock = socket.socket(family, socket.SOCK_STREAM)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self.sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", PORT))
                self.sock.listen(4)
            finally:
                setns(orig.fileno())
        self.done = threading.Semaphore(0)
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

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


def sniffed_flags(frames, port: int) -> dict[str, int]:
    """{direction: OR of the TCP flag bytes} of the frames of local `port`."""
    out: dict[str, int] = {}
    for direction, _, f in frames:
        etype = struct.unpack("!H", f[12:14])[0]
        if etype == 0x0800 and f[23] == 6:
            l4 = 14 + (f[14] & 0xF) * 4
        elif etype == 0x86DD and f[20] == 6:
            l4 = 54
        else:
            continue
        if port not in struct.unpack("!HH", f[l4 : l4 + 4]):
            continue
        out[direction] = out.get(direction, 0) | f[l4 + 13]
    return out


def ours(snap, port: int) -> dict[str, tuple[int, int, int, int]]:
    """{direction: (tcp_flags, syn, fin, rst)} of the flows of local `port`."""
    out = {}
    for d, r in zip(snap.flow_dicts(), snap.records):
        if d["proto"] == "TCP" and port in (d["srcPort"], d["dstPort"]):
            assert d["direction"] not in out, "one flow per direction"
            v = (int(r["tcp_flags"]), int(r["syn_packets"]), int(r["fin_packets"]), int(r["rst_packets"]))
            out[d["direction"]] = v
            if v[0]:  # the JSON fields say the same
                assert (d["synPackets"], d["finPackets"], d["rstPackets"]) == v[1:]
    return out


# (abort, direction) -> (syn, fin, rst): the client is in namespace A
EXPECTED = {
    (False, "egress"): (1, 1, 0),
    (False, "ingress"): (1, 1, 0),
    (True, "egress"): (1, 0, 1),
    (True, "ingress"): (1, 0, 0),
}


def run_connections(ns: NetnsPair, family: str, start, client=None):
    """Both connections under the collector `start()` makes in namespace A;
    returns (snapshot, {abort: port}, frames)."""
    dst = ns.B4 if family == "v4" else ns.B6
    lis = Listener(ns, socket.AF_INET if family == "v4" else socket.AF_INET6)
    try:
        with ns.in_a():
            sniffer = Sniffer("va")
            with start() as c:
                time.sleep(0.05)
                ports = {}
                for abort in (False, True):
                    ports[abort] = (
                        client(dst, abort) if client else tcp_close_or_abort(dst, PORT, 3000, abort)
                    )
                    assert lis.done.acquire(timeout=5)
                time.sleep(0.3)
            frames = sniffer.stop()
            snap = c.snapshot()
    finally:
        lis.close()
    return snap, ports, frames


def check(snap, ports, frames, directions) -> None:
    for abort, port in ports.items():
        got = ours(snap, port)
        sniffed = sniffed_flags(frames, port)
        assert set(got) == set(directions), (abort, got)
        for direction in directions:
            flags, *counts = got[direction]
            assert tuple(counts) == EXPECTED[(abort, direction)], (abort, direction, got)
            assert flags == sniffed[direction], (abort, direction, hex(flags), hex(sniffed[direction]))
            assert (
                flags & SYN
                and bool(flags & FIN) != abort
                and bool(flags & RST) == (abort and direction == "egress")
            )


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_tc_counts_syn_fin_rst_per_direction(netns: NetnsPair, family):
    snap, ports, frames = run_connections(netns, family, lambda: Collector(iface="va"))
    check(snap, ports, frames, ("egress", "ingress"))


def test_xdp_counts_syn_fin_rst_of_ingress(netns: NetnsPair):
    snap, ports, frames = run_connections(netns, "v4", lambda: Collector(mode="xdp", iface="va"))
    check(snap, ports, frames, ("ingress",))


def test_cgroup_counts_syn_fin_rst_of_its_sockets(cg, netns: NetnsPair):
    client_cg = cg.child("client")

    def client(dst: str, abort: bool) -> int:
        args = ("tcp-flags-client", dst, str(PORT), str(int(abort)))
        return int(cg.run(client_cg, "pbt-flags", *args, netns=netns.ns_a)[0])

    snap, ports, frames = run_connections(
        netns, "v4", lambda: Collector(mode="cgroup", cgroup=cg.root), client=client
    )
    check(snap, ports, frames, ("egress", "ingress"))
    for d in snap.flows():
        if d["proto"] == "TCP" and ports[True] in (d["srcPort"], d["dstPort"]):
            assert d["comm"] == "pbt-flags" and d["cgroup"] == cg.rel(client_cg)


def test_process_mode_flows_have_no_tcp_flags(netns: NetnsPair):
    """Process mode counts socket calls, which carry no TCP header: its TCP
    flows of the same connections have no flags, and say nothing of them."""
    snap, ports, _ = run_connections(netns, "v4", lambda: Collector(mode="process"))
    rows = [
        (d, r)
        for d, r in zip(snap.flow_dicts(), snap.records)
        if d["proto"] == "TCP" and set(ports.values()) & {d["srcPort"], d["dstPort"]}
    ]
    assert rows, "process mode saw the connections"
    for d, r in rows:
        assert (int(r["tcp_flags"]), int(r["syn_packets"]), int(r["fin_packets"]), int(r["rst_packets"])) == (
            0,
            0,
            0,
            0,
        )
        assert "tcpFlags" not in d and "synPackets" not in d
    assert ", flags: " not in snap.to_text()
