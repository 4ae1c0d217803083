"""Replay and live capture agree: the frames of one capture file, sent over a
veth pair by tcpreplay and counted live by TC ingress, give exactly the flow
table (keys, packets, bytes) and the counters that replaying the file gives.

The file holds every kind of frame the parser treats differently (TCP, UDP,
ICMP, IPv4 options and fragments, IPv6 extension headers and fragments, bad
IPv4 headers, a header cut short, non-IP frames), all sent to a MAC address
nobody owns so the receiving stack drops them after TC without replying.
Two kinds of frames cannot take part, and are left out on purpose: frames
with VLAN tags (veth, like most NICs, moves the outer tag out of the packet
before TC sees it, so live bytes are 4 less) and frames captured shorter
than their wire length (tcpreplay can only send what was captured).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from collections import Counter

import pytest

pytest.importorskip("scapy")
import pktstat_bpf
from pktstat_bpf import Collector
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

NOBODY = "02:00:00:00:99:99"


def frames() -> list[bytes]:
    e = Ether(src="02:00:00:00:00:42", dst=NOBODY)
    a, b, c = "198.51.100.1", "198.51.100.2", "203.0.113.7"
    a6, b6 = "2001:db8::a", "2001:db8::b"
    out = []
    for i in range(5):
        out.append(e / IP(src=a, dst=b) / UDP(sport=4000, dport=53) / Raw(bytes(20 + i)))
    for flags in ("S", "SA", "A", "PA", "FA"):
        out.append(
            e
            / IP(src=c, dst=a)
            / TCP(sport=443, dport=50000, flags=flags)
            / Raw(bytes(100 if flags == "PA" else 0))
        )
    out.append(e / IP(src=a, dst=c, options=[]) / ICMP(type=8) / Raw(bytes(56)))
    out.append(e / IP(src=c, dst=a) / ICMP(type=3, code=3) / Raw(bytes(28)))
    out.append(e / IP(src=a, dst=b, flags="MF", frag=0, proto=17) / UDP(sport=7, dport=8) / Raw(bytes(1000)))
    out.append(e / IP(src=a, dst=b, frag=126, proto=17) / Raw(bytes(500)))
    out.append(e / IPv6(src=a6, dst=b6) / IPv6ExtHdrHopByHop() / UDP(sport=9, dport=10) / Raw(bytes(30)))
    out.append(e / IPv6(src=a6, dst=b6) / IPv6ExtHdrFragment(offset=0, m=1, id=5) / TCP(sport=1, dport=2))
    out.append(e / IPv6(src=a6, dst=b6) / IPv6ExtHdrFragment(offset=100, m=0, id=5, nh=6) / Raw(bytes(40)))
    out.append(e / IPv6(src=b6, dst=a6) / ICMPv6EchoRequest())
    out.append(e / IP(src=a, dst=b, ihl=4) / Raw(bytes(40)))  # IHL < 5: unparsed
    out.append(e / IP(src=a, dst=b, len=10) / UDP(sport=1, dport=1))  # total length < header: unparsed
    out.append(e / IP(src=a, dst=b, len=24) / UDP(sport=5, dport=6))  # no room for UDP: ports 0
    out.append(bytes(e / IP(src=a, dst=b))[: 14 + 12])  # IP header cut short: unparsed
    out.append(Ether(src="02:00:00:00:00:42", dst=NOBODY) / ARP(pdst="203.0.113.200"))
    out.append(bytes(e)[:12] + struct.pack("!H", 46) + bytes(46))  # 802.3 length field
    out.append(bytes(e)[:12] + b"\x88\xcc" + bytes(50))  # LLDP ethertype
    return [bytes(f) for f in out]


def table(snap) -> Counter:
    t: Counter = Counter()
    for f in snap.flows():
        k = (f["srcIp"], f["dstIp"], f["proto"], f["srcPort"], f["dstPort"])
        t[k] += f["packets"]
        t[(*k, "bytes")] += f["bytes"]
    return t


@pytest.fixture
def capture(tmp_path):
    if not shutil.which("tcpreplay"):
        pytest.skip("tcpreplay is not installed (make setup installs it)")
    path = tmp_path / "mix.pcap"
    wrpcap(str(path), [Ether(f) for f in frames()])
    return path


def test_replay_and_live_capture_give_the_same_table(netns_v4only, capture):
    ns = netns_v4only
    with ns.in_a():
        with Collector(iface="va") as c:
            time.sleep(0.1)
            p = subprocess.run(
                ["ip", "netns", "exec", ns.ns_b, "tcpreplay", "-q", "-i", "vb", "--topspeed", str(capture)],
                capture_output=True,
                text=True,
            )
            assert p.returncode == 0, p.stderr + p.stdout
            time.sleep(0.3)
        live = c.snapshot()
    offline = pktstat_bpf.replay(capture)

    want = frames()
    n, size = len(want), sum(len(f) for f in want)
    o, li = offline.totals, live.totals
    assert (o.none.packets, o.none.bytes) == (n, size)
    # everything arrived at va's ingress, and nothing else did
    assert (li.ingress.packets, li.ingress.bytes) == (n, size)
    assert (li.ingress.unparsed_packets, li.ingress.unparsed_bytes) == (
        o.none.unparsed_packets,
        o.none.unparsed_bytes,
    )
    # IHL < 5, length < header, cut IP header, 802.3, LLDP (the ARP frame is an ARP flow, in both)
    assert o.none.unparsed_packets == 5
    assert table(live) == table(offline)
    # a->b UDP twice (ports, and 0/0 for the non-first fragment plus the datagram
    # too short for a UDP header), c->a TCP, ICMP both ways, the first fragment,
    # IPv6: UDP, TCP first fragment, non-first fragment, ICMPv6; the ARP request
    assert len(offline) == len(live) == 11
    assert [f["arpOp"] for f in live.flows() if f["proto"] == "ARP"] == ["request"]
    assert all(f["direction"] == "ingress" for f in live.flows())
    assert li.conserved and o.conserved
