"""ARP flows live, in TC and XDP mode (issue 17, protocol parity): namespace
B sends ARP frames with scapy over the veth pair of the test's own
namespaces; namespace A's kernel answers the requests for its address. Each
ARP flow (sender, target, opcode, direction) has exactly the frames sent,
and exactly what an AF_PACKET capture on the same interface saw; with
``arp=False`` those frames are unparsed instead, as many as the capture saw.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from netns import NetnsPair
from pktstat_bpf import Collector
from traffic import Sniffer

pytestmark = pytest.mark.kernel
pytest.importorskip("scapy")

X, Y, Z = "10.99.0.66", "10.99.0.77", "10.99.0.88"  # no host has these: only our frames carry them
REQUESTS, UNANSWERED, REPLIES = 5, 3, 4


def send_from_b(netns: NetnsPair) -> None:
    """From vb: REQUESTS requests X -> A (A answers each), UNANSWERED
    requests X -> Y (nobody answers), REPLIES unsolicited replies Z -> A."""
    code = f"""
from scapy.all import ARP, Ether, get_if_hwaddr, sendp
mac = get_if_hwaddr("vb")
b = "ff:ff:ff:ff:ff:ff"
frames = (
    [Ether(src=mac, dst=b) / ARP(op=1, hwsrc=mac, psrc={X!r}, pdst={netns.A4!r})] * {REQUESTS}
    + [Ether(src=mac, dst=b) / ARP(op=1, hwsrc=mac, psrc={X!r}, pdst={Y!r})] * {UNANSWERED}
    + [Ether(src=mac, dst=b) / ARP(op=2, hwsrc=mac, psrc={Z!r}, pdst={netns.A4!r})] * {REPLIES}
)
sendp(frames, iface="vb", verbose=False)
"""
    subprocess.run(
        ["ip", "netns", "exec", netns.ns_b, sys.executable, "-c", code],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )


def sniffed_arp(frames, directions) -> tuple[Counter, list[int]]:
    """{(sender, target, opcode, direction): packets (+ "bytes" keys)} of the
    ARP frames a capture saw in `directions`, and [packets, bytes] of its
    non-IP frames there."""
    flows: Counter = Counter()
    non_ip = [0, 0]
    for direction, length, f in frames:
        etype = struct.unpack("!H", f[12:14])[0]
        if etype in (0x0800, 0x86DD) or direction not in directions:
            continue
        non_ip[0] += 1
        non_ip[1] += length
        if etype == 0x0806 and len(f) >= 42:
            op = struct.unpack("!H", f[20:22])[0]
            spa, tpa = ".".join(map(str, f[28:32])), ".".join(map(str, f[38:42]))
            flows[(spa, tpa, op, direction)] += 1
            flows[(spa, tpa, op, direction, "bytes")] += length
    return flows, non_ip


def ours_arp(snap) -> Counter:
    flows: Counter = Counter()
    for f in snap.flows():
        if f["proto"] == "ARP":
            k = (f["srcIp"], f["dstIp"], f["srcPort"], f["direction"])
            flows[k] += f["packets"]
            flows[(*k, "bytes")] += f["bytes"]
    return flows


@pytest.mark.parametrize("arp", [True, False], ids=["arp", "no-arp"])
@pytest.mark.parametrize("mode", ["tc", "xdp"])
def test_arp_flows_on_a_veth(netns: NetnsPair, mode, arp):
    A4 = netns.A4
    options = {"xdp_mode": "native"} if mode == "xdp" else {}
    with netns.in_a():
        with Collector(iface="va", mode=mode, arp=arp, **options) as c:
            sniffer = Sniffer("va")
            send_from_b(netns)
            time.sleep(0.3)  # A's replies
            frames = sniffer.stop()
        snap = c.snapshot()
    seen, non_ip = sniffed_arp(
        frames, ("ingress",) if mode == "xdp" else ("ingress", "egress")
    )  # XDP: ingress only
    # what was sent, as the capture saw it (42-byte frames on a veth)
    assert seen[(X, A4, 1, "ingress")] == REQUESTS
    assert seen[(X, Y, 1, "ingress")] == UNANSWERED
    assert seen[(Z, A4, 2, "ingress")] == REPLIES
    assert seen[(X, A4, 1, "ingress", "bytes")] == 42 * REQUESTS
    if mode == "tc":
        assert seen[(A4, X, 2, "egress")] == REQUESTS  # A answered each request
    totals = snap.totals
    assert totals.conserved
    if arp:
        assert ours_arp(snap) == seen
        flow = next(f for f in snap.flows() if f["proto"] == "ARP" and f["srcIp"] == Z)
        assert (flow["arpOp"], flow["dstIp"], flow["packets"]) == ("reply", A4, REPLIES)
    else:
        assert ours_arp(snap) == Counter()
        assert [totals.all.unparsed_packets, totals.all.unparsed_bytes] == non_ip
