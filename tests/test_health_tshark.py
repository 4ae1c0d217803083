"""TCP health (src/bpf/tcp_health.bpf.h) in replay, against tshark's
``tcp.analysis.retransmission`` and ``tcp.analysis.ack_rtt`` on every
capture of the shared ndpi and corpus sets.

For each TCP packet tshark calls a retransmission (its sequence analysis
on; the outermost IP header carrying TCP directly: in a tunnel tshark
analyses the inner connection, we count the outer flow), the flow of that
packet; ours, the same directional flow's ``retransPackets``. At least 95%
of tshark's retransmissions must be found on their flow; where we count
more (a segment out of order, which tshark calls a retransmission only
after 3 ms), the surplus is printed and bounded.

Round trips: tshark's ``ack_rtt`` (on an ACK: the time since the data
segment it acknowledges) against ours (a TSval echoed as TSecr), on the
flows where both have one: the smallest of each, within 20% or 1 ms, for
at least 95% of those flows. They differ by definition where an ACK
acknowledges several segments (tshark times from the last, an echo from
the first one timed) and where segments were retransmitted.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
import tshark_dump
from test_l7_tshark import FILES, PCAPS, TUNNELLED, UNSUPPORTED, WALKED


@pytest.fixture(scope="session")
def tshark_health(request) -> dict[str, str]:
    """{file: tshark's dump of the shared captures (tests/tshark_dump.py)}."""
    return tshark_dump.shared(request)


def tshark_view(text: str) -> tuple[Counter, dict[tuple, float]]:
    """({(src, dst, sport, dport): retransmissions tshark found on the
    flow}, {flow: the smallest ack_rtt of the ACKs acknowledging its data})."""
    view: Counter = Counter()
    rtt: dict[tuple, float] = {}
    for c in tshark_dump.rows(text):
        layers = c["frame.protocols"].split(":")
        at = next((i for i, layer in enumerate(layers) if layer in ("ip", "ipv6")), None)
        if at is None or any(layer not in WALKED for layer in layers[:at]):
            continue
        after = [layer for layer in layers[at + 1 :] if not layer.startswith("ipv6.")]
        if not after or after[0] != "tcp" or any(layer in TUNNELLED for layer in after[1:]):
            continue
        src, dst = (c["ip.src"], c["ip.dst"]) if layers[at] == "ip" else (c["ipv6.src"], c["ipv6.dst"])
        first = tshark_dump.first
        try:
            key = (str(ipaddress.ip_address(first(src))), str(ipaddress.ip_address(first(dst))))
            key += (int(first(c["tcp.srcport"])), int(first(c["tcp.dstport"])))
        except ValueError:
            continue
        if c["tcp.analysis.retransmission"]:
            view[key] += 1
        if c["tcp.analysis.ack_rtt"]:  # the ACK's round trip is its reverse flow's
            back = (key[1], key[0], key[3], key[2])
            rtt[back] = min(rtt.get(back, float("inf")), float(first(c["tcp.analysis.ack_rtt"])))
    return view, rtt


@pytest.fixture(scope="module")
def comparison(bpf, tshark_health):
    """(tshark's retransmissions, of which ours found, ours beyond, per-file
    misses, [(ours, tshark's) smallest round trip of each flow both timed])."""
    import pktstat_bpf

    replayer = pktstat_bpf.Replayer(max_entries=1 << 16)
    theirs_n = found = extra = 0
    missed, rtts = [], []
    for name in FILES:
        if name in UNSUPPORTED:
            continue
        flows = [d for d in replayer.replay(PCAPS / name).flow_dicts() if d["proto"] == "TCP"]
        ours = {
            (d["srcIp"], d["dstIp"], d["srcPort"], d["dstPort"]): d.get("retransPackets", 0) for d in flows
        }
        theirs, their_rtt = tshark_view(tshark_health[name])
        for d in flows:
            key = (d["srcIp"], d["dstIp"], d["srcPort"], d["dstPort"])
            if "rttMinNs" in d and key in their_rtt:
                rtts.append((d["rttMinNs"] / 1e9, their_rtt[key]))
        for key, n in theirs.items():
            got = ours.get(key, 0)
            theirs_n += n
            found += min(n, got)
            if got < n:
                missed.append((name, key, n, got))
        extra += sum(max(0, got - theirs.get(key, 0)) for key, got in ours.items())
    return theirs_n, found, extra, missed, rtts


def test_retransmissions_agree_with_tshark(comparison):
    theirs, found, extra, missed, _ = comparison
    print(
        f"tshark's retransmissions {theirs}, ours found {found} ({found / theirs:.4f}), ours beyond {extra}"
    )
    for m in missed:
        print("missed:", m)
    assert theirs >= 1000  # not vacuous: thousands in the corpora
    assert found / theirs >= 0.95
    assert extra <= theirs  # out-of-order segments tshark names otherwise: bounded


def test_round_trips_agree_with_tshark(comparison):
    rtts = comparison[4]
    agree = [(o, t) for o, t in rtts if abs(o - t) <= max(0.2 * t, 0.001)]
    print(f"flows both timed {len(rtts)}, smallest round trips agreeing {len(agree)}")
    for o, t in sorted(set(rtts) - set(agree))[:20]:
        print(f"ours {o * 1e3:.3f} ms, tshark's {t * 1e3:.3f} ms")
    assert len(rtts) >= 1000  # not vacuous
    assert len(agree) / len(rtts) >= 0.95
