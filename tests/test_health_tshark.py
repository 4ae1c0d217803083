"""TCP retransmissions (src/bpf/tcp_health.bpf.h) in replay, against
tshark's ``tcp.analysis.retransmission`` on every capture of the shared
ndpi and corpus sets.

For each TCP packet tshark calls a retransmission (its sequence analysis
on; the outermost IP header carrying TCP directly: in a tunnel tshark
analyses the inner connection, we count the outer flow), the flow of that
packet; ours, the same directional flow's ``retransPackets``. At least 95%
of tshark's retransmissions must be found on their flow; where we count
more (a segment out of order, which tshark calls a retransmission only
after 3 ms), the surplus is printed and bounded.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
import tshark_dump
from test_l7_tshark import FILES, PCAPS, TUNNELLED, UNSUPPORTED, WALKED

ADDR = ["frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport"]


@pytest.fixture(scope="session")
def tshark_retrans(request) -> dict[str, str]:
    """{file: tshark's dump of its retransmissions}."""
    options = ["-Y", "tcp.analysis.retransmission", "-E", "occurrence=f"]
    return tshark_dump.dumps(request, "retrans", ADDR, options)


def tshark_view(text: str) -> Counter:
    """{(src, dst, sport, dport): retransmissions tshark found on the flow}."""
    view: Counter = Counter()
    for line in text.splitlines():
        c = dict(zip(ADDR, line.split("\t")))
        layers = c["frame.protocols"].split(":")
        at = next((i for i, layer in enumerate(layers) if layer in ("ip", "ipv6")), None)
        if at is None or any(layer not in WALKED for layer in layers[:at]):
            continue
        after = [layer for layer in layers[at + 1 :] if not layer.startswith("ipv6.")]
        if not after or after[0] != "tcp" or any(layer in TUNNELLED for layer in after[1:]):
            continue
        src, dst = (c["ip.src"], c["ip.dst"]) if layers[at] == "ip" else (c["ipv6.src"], c["ipv6.dst"])
        try:
            key = (str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)))
            view[(*key, int(c["tcp.srcport"]), int(c["tcp.dstport"]))] += 1
        except ValueError:
            continue
    return view


@pytest.fixture(scope="module")
def comparison(bpf, tshark_retrans):
    """(tshark's retransmissions, of which ours found, ours beyond, per-file misses)."""
    import pktstat_bpf

    replayer = pktstat_bpf.Replayer(max_entries=1 << 16)
    theirs_n = found = extra = 0
    missed = []
    for name in FILES:
        if name in UNSUPPORTED:
            continue
        ours = {
            (d["srcIp"], d["dstIp"], d["srcPort"], d["dstPort"]): d.get("retransPackets", 0)
            for d in replayer.replay(PCAPS / name).flow_dicts()
            if d["proto"] == "TCP"
        }
        theirs = tshark_view(tshark_retrans[name])
        for key, n in theirs.items():
            got = ours.get(key, 0)
            theirs_n += n
            found += min(n, got)
            if got < n:
                missed.append((name, key, n, got))
        extra += sum(max(0, got - theirs.get(key, 0)) for key, got in ours.items())
    return theirs_n, found, extra, missed


def test_retransmissions_agree_with_tshark(comparison):
    theirs, found, extra, missed = comparison
    print(
        f"tshark's retransmissions {theirs}, ours found {found} ({found / theirs:.4f}), ours beyond {extra}"
    )
    for m in missed:
        print("missed:", m)
    assert theirs >= 1000  # not vacuous: thousands in the corpora
    assert found / theirs >= 0.95
    assert extra <= theirs  # out-of-order segments tshark names otherwise: bounded
