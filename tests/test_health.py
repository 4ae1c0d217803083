"""TCP health (src/bpf/tcp_health.bpf.h) in replay of captures made here
with scapy, every time and sequence number known: round trips from TCP
timestamps (a TSval timed from the segment that carries it to the segment
of the other direction whose TSecr echoes it), retransmissions (a segment
starting before the highest sequence number its direction carried), and
what is neither: a keep-alive, a pure ACK, a new connection reusing the
ports with a new initial sequence number, segments without timestamps.

tshark reads the same capture: its ``tcp.analysis.retransmission`` count
per flow must be ours.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

scapy = pytest.importorskip("scapy.all")
pytestmark = pytest.mark.kernel

C, S = "10.8.0.1", "10.8.0.2"
T0 = 1_700_000_000.0
NOPS = [("NOP", None), ("NOP", None)]


def _frames() -> tuple[list, dict]:
    """The frames, and what each flow must show: {(sport, dport): (rtt
    samples in ms, retransmitted frames' lengths)}."""
    from scapy.all import IP, TCP, Ether, Raw

    frames = []
    want: dict[tuple[int, int], tuple[list[float], list[int]]] = {}

    def add(at_ms: float, src: str, dst: str, sport: int, dport: int, retrans: bool = False, **tcp) -> None:
        payload = tcp.pop("load", b"")
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst=dst)
        p = p / TCP(sport=sport, dport=dport, **tcp)
        if payload:
            p = p / Raw(payload)
        p.time = T0 + at_ms / 1000
        frames.append(p)
        if retrans:
            want.setdefault((sport, dport), ([], []))[1].append(len(p))

    def ts(val: int, ecr: int) -> list:
        return [*NOPS, ("Timestamp", (val, ecr))]

    def rtt(sport: int, dport: int, *ms: float) -> None:
        want.setdefault((sport, dport), ([], []))[0].extend(ms)

    # 1. a connection with timestamps, C:42001 -> S:80
    a, b = (C, S, 42001, 80), (S, C, 80, 42001)
    syn_opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (100, 0)), ("NOP", None), ("WScale", 7)]
    add(0, *a, flags="S", seq=999, options=syn_opts)  # timed: 100 (the option walked, not at 20)
    add(10, *b, flags="SA", seq=4999, ack=1000, options=ts(500, 100))  # echoes 100: 10 ms; timed: 500
    add(
        11, *a, flags="A", seq=1000, ack=5000, options=ts(101, 500)
    )  # echoes 500: 1 ms (a pure ACK: not timed)
    add(12, *a, flags="PA", seq=1000, ack=5000, options=ts(102, 500), load=b"x" * 100)  # timed: 102
    add(32, *b, flags="A", seq=5000, ack=1100, options=ts(501, 102))  # 20 ms
    add(33, *a, flags="PA", seq=1100, ack=5000, options=ts(103, 501), load=b"y" * 100)  # timed: 103
    add(34, *a, True, flags="PA", seq=1100, ack=5000, options=ts(104, 501), load=b"y" * 100)  # again,
    # with a newer TSval: the echo of 103 is the first copy's, still timed
    add(64, *b, flags="A", seq=5000, ack=1200, options=ts(502, 103))  # 31 ms
    add(70, *a, flags="A", seq=1199, ack=5000, options=ts(105, 502), load=b"k")  # keep-alive; timed: 105
    add(80, *b, flags="A", seq=5000, ack=1200, options=ts(503, 105))  # 10 ms
    add(90, *a, flags="FA", seq=1200, ack=5000, options=ts(106, 503))  # timed: 106
    add(100, *b, flags="FA", seq=5000, ack=1201, options=ts(504, 106))  # 10 ms; timed: 504
    add(101, *a, flags="A", seq=1201, ack=5001, options=ts(107, 504))  # 1 ms
    rtt(*a[2:], 10, 20, 31, 10, 10)
    rtt(*b[2:], 1, 1)
    # the same ports again, a new initial sequence number and no timestamps: no
    # retransmission although its numbers lie far before the last connection's
    add(2000, *a, flags="S", seq=3_000_000_000)
    add(2001, *b, flags="SA", seq=7000, ack=3_000_000_001)
    add(2002, *a, flags="PA", seq=3_000_000_001, ack=7001, load=b"z" * 50)
    add(2003, *b, flags="A", seq=7001, ack=3_000_000_051)

    # a retransmission carrying the timed TSval again: its echo is not timed
    a, b = (C, S, 42003, 80), (S, C, 80, 42003)
    add(2500, *a, flags="S", seq=99, options=ts(300, 0))
    add(2501, *b, flags="SA", seq=199, ack=100, options=ts(900, 300))  # 1 ms
    add(2510, *a, flags="PA", seq=100, ack=200, options=ts(301, 900), load=b"q" * 10)  # timed: 301
    add(2511, *a, True, flags="PA", seq=100, ack=200, options=ts(301, 900), load=b"q" * 10)  # 301 again
    add(2540, *b, flags="A", seq=200, ack=110, options=ts(901, 301))  # not timed
    add(2550, *a, flags="PA", seq=110, ack=200, options=ts(302, 901), load=b"r" * 10)  # timed: 302
    add(2555, *b, flags="A", seq=200, ack=120, options=ts(902, 302))  # 5 ms
    rtt(*a[2:], 1, 5)

    # 2. no timestamps: no round trip; a SYN sent again and a data segment sent
    # again are retransmissions, so is a segment overlapping what was sent
    a, b = (C, S, 42002, 443), (S, C, 443, 42002)
    add(3000, *a, flags="S", seq=10)
    add(4000, *a, True, flags="S", seq=10)
    add(4010, *b, flags="SA", seq=20, ack=11)
    add(4011, *a, flags="PA", seq=11, ack=21, load=b"a" * 200)
    add(4012, *a, flags="PA", seq=211, ack=21, load=b"b" * 200)
    add(4300, *a, True, flags="PA", seq=11, ack=21, load=b"a" * 200)
    add(4301, *a, True, flags="PA", seq=311, ack=21, load=b"c" * 200)  # 311..511: half old, half new
    add(4302, *b, flags="A", seq=21, ack=511)
    rtt(*a[2:])
    return frames, want


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    from scapy.all import wrpcap

    frames, want = _frames()
    path = tmp_path_factory.mktemp("health") / "health.pcap"
    wrpcap(str(path), frames)
    return path, want


@pytest.fixture(scope="module")
def flows(capture, bpf):
    import pktstat_bpf

    df = pktstat_bpf.replay(str(capture[0])).to_pandas()
    return {(int(r.src_port), int(r.dst_port)): r for r in df.itertuples()}


def test_round_trips_exact(capture, flows):
    import pandas as pd

    _, want = capture
    for ports, (ms, _) in want.items():
        r = flows[ports]
        assert r.rtt_samples == len(ms), ports
        if not ms:
            assert pd.isna(r.rtt_min) and pd.isna(r.rtt_mean) and pd.isna(r.rtt_max)
            continue
        ns = [round(x * 1e6) for x in ms]
        # the capture's stamps are microseconds: each sample exact to the microsecond
        assert abs(r.rtt_min.value - min(ns)) < 1000, ports
        assert abs(r.rtt_max.value - max(ns)) < 1000, ports
        assert abs(r.rtt_mean.value - sum(ns) // len(ns)) < 1000, ports
    assert flows[(80, 42001)].rtt_samples == 2  # the reverse direction: its own round trips
    assert flows[(443, 42002)].rtt_samples == 0


def test_retransmissions_exact(capture, flows):
    _, want = capture
    for ports, r in flows.items():
        lens = want.get(ports, ([], []))[1]
        assert (r.retrans_packets, r.retrans_bytes) == (len(lens), sum(lens)), ports
    assert flows[(42001, 80)].retrans_packets == 1  # the keep-alive and the reused ports are not
    assert flows[(42002, 443)].retrans_packets == 3


def test_tshark_counts_the_same_retransmissions(capture, flows):
    out = subprocess.run(
        ["tshark", "-n", "-r", str(capture[0]), "-Y", "tcp.analysis.retransmission", "-T", "fields"]
        + ["-e", "tcp.srcport", "-e", "tcp.dstport"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    theirs = Counter(tuple(int(x) for x in line.split("\t")) for line in out.splitlines())
    ours = {ports: int(r.retrans_packets) for ports, r in flows.items() if r.retrans_packets}
    assert ours == dict(theirs)


def test_conversations_carry_both_directions_health(capture, bpf):
    import pktstat_bpf

    conv = pktstat_bpf.replay(str(capture[0])).conversations().to_pandas()
    rows = {(int(r.client_port), int(r.server_port)): r for r in conv.itertuples()}
    r = rows[(42001, 80)]  # the client's 5 round trips (10 to 31 ms), the server's 2 (1 ms); 1 retransmission
    assert (r.retrans_packets, r.rtt_samples) == (1, 7)
    assert (r.rtt_min.value, r.rtt_max.value) == (1_000_000, 31_000_000)
    assert rows[(42002, 443)].retrans_packets == 3 and rows[(42002, 443)].rtt_samples == 0


def test_a_replayer_forgets_the_last_captures_connections(capture, bpf):
    import pktstat_bpf

    r = pktstat_bpf.Replayer()
    first, again = (r.replay(str(capture[0])).to_pandas() for _ in range(2))
    cols = ["src_port", "dst_port", "retrans_packets", "rtt_samples", "rtt_min", "rtt_max"]
    assert (
        first[cols].sort_values(cols[:2]).values.tolist() == again[cols].sort_values(cols[:2]).values.tolist()
    )
    assert int(again.retrans_packets.sum()) == 5


def test_off_tracks_nothing(capture, bpf):
    import pktstat_bpf

    on = pktstat_bpf.Replayer().replay(str(capture[0])).records
    off = pktstat_bpf.Replayer(tcp_health=False).replay(str(capture[0])).records
    assert int(on["retrans_packets"].sum()) == 5 and int(on["rtt_samples"].sum()) > 0
    assert int(off["retrans_packets"].sum()) == int(off["rtt_samples"].sum()) == 0

    def packets(recs) -> dict:
        return {(int(r["sport"]), int(r["dport"])): int(r["packets"]) for r in recs}

    assert packets(off) == packets(on)  # counted alike
    run = [sys.executable, "-m", "pktstat_bpf", "--pcap", str(capture[0]), "--no-tcp-health", "-j"]
    doc = json.loads(subprocess.run(run, capture_output=True, text=True, check=True).stdout)
    assert not [f for f in doc["flows"] if "rttSamples" in f or "retransPackets" in f]


def test_shown_in_text_and_json(capture, bpf):
    run = [sys.executable, "-m", "pktstat_bpf", "--pcap", str(capture[0])]
    text = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    line = next(x for x in text.splitlines() if "src: 10.8.0.1:42001" in x)
    assert line.endswith(", retrans: 1, rtt: 10/16.2/31 ms")
    line = next(x for x in text.splitlines() if "src: 10.8.0.1:42002" in x)
    assert ", retrans: 3" in line and "rtt:" not in line
    doc = json.loads(subprocess.run([*run, "-j"], capture_output=True, text=True, check=True).stdout)
    (f,) = [f for f in doc["flows"] if f["srcPort"] == 42001]
    assert (f["rttSamples"], f["rttMinNs"], f["rttMeanNs"], f["rttMaxNs"]) == (
        5,
        10**7,
        16_200_000,
        31 * 10**6,
    )
    assert f["retransPackets"] == 1
    (f,) = [f for f in doc["flows"] if f["srcPort"] == 443]
    assert "rttSamples" not in f and "retransPackets" not in f
