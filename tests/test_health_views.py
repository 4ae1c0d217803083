"""TCP health where it is shown (issue 19, item 5): the TUI's RTT and
RETRANS columns and sort keys, the exporter's round-trip histogram and
retransmission counters, and the JSON Lines stream, on the scapy capture of
tests/test_health.py, whose round trips and retransmissions are known.

The capture (times from its first frame): connection 42001 -> 80 times
round trips of 10, 20, 31, 10 and 10 ms (mean 16.2) and its reverse 1 and
1 ms, all in its first second, and retransmits one segment (at 34 ms); at
2.0 s the same ports carry a new connection without timestamps; 42003 ->
80 times 1 and 5 ms (2.5 s) and retransmits one segment; 42002 -> 443 has
no timestamps and retransmits three segments (4.0 to 4.3 s).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pktstat_bpf
import pytest
from test_health import C, S, _frames

pytest.importorskip("scapy.all")
pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    from scapy.all import wrpcap

    frames, want = _frames()
    path = tmp_path_factory.mktemp("health-views") / "health.pcap"
    wrpcap(str(path), frames)
    return path, want


def _one_interval(path):
    (iv,) = pktstat_bpf.Replayer().intervals(str(path), 10.0)  # the capture lasts 4.3 s
    return iv


# -- the TUI ---------------------------------------------------------------------------


def test_rtt_cell_format():
    from pktstat_bpf.output.table import format_rtt

    assert [
        format_rtt(ns) for ns in (5_120, 10_000, 350_000, 1_900_000, 16_200_000, 999_600_000, 2_500_000_000)
    ] == [
        "5.12us",
        "0.01ms",
        "0.35ms",
        "1.9ms",
        "16.2ms",
        "1s",
        "2.5s",
    ]


def test_tui_rtt_and_retrans_columns(bpf, pcap):
    from pktstat_bpf.output.table import TableModel

    m = TableModel(mode="replay", where="health.pcap", page=50)
    m.update(_one_interval(pcap[0]))
    titles = [c.title for c in m.columns()]
    assert titles == [
        "BITRATE",
        "PACKETS",
        "BYTES",
        "PROTO",
        "APP",
        "FLAGS",
        "RTT",
        "RETRANS",
        "SRC",
        "DST",
    ]
    col = {t: i for i, t in enumerate(titles)}
    got = {(r[col["SRC"]], r[col["DST"]]): (r[col["RTT"]], r[col["RETRANS"]]) for r in m.visible()}
    assert got == {
        (f"{C}:42001", f"{S}:80"): ("16.2ms", "1"),
        (f"{S}:80", f"{C}:42001"): ("1ms", ""),
        (f"{C}:42003", f"{S}:80"): ("3ms", "1"),
        (f"{S}:80", f"{C}:42003"): ("9ms", ""),
        (f"{C}:42002", f"{S}:443"): ("", "3"),
        (f"{S}:443", f"{C}:42002"): ("", ""),
    }
    # 6: slowest round trip first, flows without one last (in the table's stable order)
    m.key(ord("6"))
    assert m.sort == "rtt"
    order = [(r[col["SRC"]], r[col["RTT"]]) for r in m.visible()]
    assert [rtt for _, rtt in order] == ["16.2ms", "9ms", "3ms", "1ms", "", ""]
    assert "sort: rtt" in m.status_line()
    # 7: most retransmissions first
    m.key(ord("7"))
    assert [r[col["RETRANS"]] for r in m.visible()][:3] == ["3", "1", "1"]
    assert m.visible()[0][col["SRC"]] == f"{C}:42002"
    # the lines lay the cells out under their titles
    title, first, *_ = m.table_lines(200)
    assert first[: title.index("RETRANS") + len("RETRANS")].endswith("3")
    # conversations: a row would carry one direction's health, so no health columns
    m.key(ord("c"))
    assert "RTT" not in [c.title for c in m.columns()] and "RETRANS" not in [c.title for c in m.columns()]


def test_tui_health_columns_absent_without_health(bpf, pcap, tmp_path):
    from pktstat_bpf.output.table import TableModel
    from scapy.all import IP, UDP, Ether, wrpcap

    wrpcap(str(tmp_path / "udp.pcap"), [Ether() / IP(src=C, dst=S) / UDP(sport=1, dport=2) / b"x"])
    m = TableModel(mode="replay", where="udp.pcap", page=10)
    m.update(_one_interval(tmp_path / "udp.pcap"))
    assert [c.title for c in m.columns()] == ["BITRATE", "PACKETS", "BYTES", "PROTO", "APP", "SRC", "DST"]


def test_tui_sort_by_drops():
    from cumulative import IntervalTracker
    from pktstat_bpf.core.engine import _core
    from pktstat_bpf.core.snapshot import Snapshot, Totals
    from pktstat_bpf.output.table import TableModel

    r = np.zeros(3, dtype=_core.record_dtype)
    r["ipver"], r["proto"], r["dport"], r["packets"], r["bytes"] = (
        4,
        17,
        (53, 7001, 9),
        (3, 17, 9),
        (300, 2176, 900),
    )
    drops = np.array([2, 17, 0], dtype=np.uint64)
    snap = Snapshot(
        records=r,
        totals=Totals.from_arrays(np.zeros(3, dtype=_core.stats_dtype), r),
        duration=1.0,
        started_at=0.0,
        taken_at=1.0,
        mode="tc",
        extra={"drops": {"NETFILTER_DROP": 19}},
        columns={"drops": drops, "drop_reasons": np.array([None] * 3, dtype=object)},
    )
    m = TableModel(mode="tc", where="va", attach="tcx")
    m.update(IntervalTracker().advance(snap))
    titles = [c.title for c in m.columns()]
    assert [row[-1] for row in m.visible()] == ["0.0.0.0:7001", "0.0.0.0:9", "0.0.0.0:53"]  # bitrate
    m.key(ord("8"))
    assert m.sort == "drops"
    assert [(row[-1], row[titles.index("DROPS")]) for row in m.visible()] == [
        ("0.0.0.0:7001", "17"),
        ("0.0.0.0:53", "2"),
        ("0.0.0.0:9", ""),
    ]


# -- the exporter ----------------------------------------------------------------------


def _scrape(metrics) -> dict[str, list]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    reg = CollectorRegistry(auto_describe=False)
    reg.register(metrics)
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_exporter_rtt_histogram_and_retrans_counters(bpf, pcap):
    pytest.importorskip("prometheus_client")
    from pktstat_bpf.exporter.health import RTT_BUCKETS
    from pktstat_bpf.exporter.metrics import FlowMetrics

    path, want = pcap
    m = FlowMetrics(top=10)
    seen: dict[tuple[str, str], list[float]] = {}
    for iv in pktstat_bpf.Replayer().intervals(str(path), 1.0):  # five intervals of 1 s
        m.update(iv)
        for s in _scrape(m).get("pktstat_bpf_flow_retrans_packets_total", []):
            seen.setdefault((s.labels["src_port"], s.labels["dst_port"]), []).append(s.value)
    got = _scrape(m)
    labels = {"iface": "", "direction": "none"}
    # the histogram: one series set (replay: no interface, no direction); per flow-interval its
    # mean, once per round trip: 16.2 ms x 5, 1 ms x 2 (the first second), 3 ms x 2 and the
    # reverse direction's SYN-ACK echoed after 9 ms x 1 (2.5 s)
    buckets = {s.labels["le"]: s.value for s in got["pktstat_bpf_rtt_seconds_bucket"]}
    assert [s.labels for s in got["pktstat_bpf_rtt_seconds_count"]] == [labels]
    assert len(buckets) == len(RTT_BUCKETS) + 1 == 20
    assert {le: n for le, n in buckets.items() if n and float(le) <= 0.025} == {
        "0.001": 2,
        "0.0025": 2,
        "0.005": 4,
        "0.01": 5,
        "0.025": 10,
    }
    assert buckets["+Inf"] == got["pktstat_bpf_rtt_seconds_count"][0].value == 10
    total_ms = 10 + 20 + 31 + 10 + 10 + 1 + 1 + 1 + 5 + 9
    assert got["pktstat_bpf_rtt_seconds_sum"][0].value == pytest.approx(total_ms / 1e3, abs=1e-5)
    # retransmissions: every segment sent again, and its bytes (the frames' lengths)
    lens = [n for _, frames in want.values() for n in frames]
    assert [s.value for s in got["pktstat_bpf_retrans_packets_total"]] == [5]
    assert [s.value for s in got["pktstat_bpf_retrans_bytes_total"]] == [sum(lens)]
    assert got["pktstat_bpf_retrans_packets_total"][0].labels == labels
    # per top flow: the TCP flows' own, lifetime, never going down from scrape to scrape
    assert {k: v[-1] for k, v in seen.items()} == {
        ("42001", "80"): 1,
        ("80", "42001"): 0,
        ("42003", "80"): 1,
        ("80", "42003"): 0,
        ("42002", "443"): 3,
        ("443", "42002"): 0,
    }
    assert all(v == sorted(v) for v in seen.values())
    assert seen[("42002", "443")][0] == 0  # ranked before its retransmissions (3 s: its SYN)


def test_exporter_without_health_modes_has_no_health_series(bpf, pcap):
    pytest.importorskip("prometheus_client")
    import dataclasses

    from pktstat_bpf.exporter.metrics import FlowMetrics

    iv = _one_interval(pcap[0])
    iv = dataclasses.replace(iv, delta=dataclasses.replace(iv.delta, mode="cgroup"))
    m = FlowMetrics(top=10)
    m.update(iv)
    names = set(_scrape(m))
    assert "pktstat_bpf_flow_bytes_total" in names
    assert not {n for n in names if "rtt" in n or "retrans" in n}


# -- JSON Lines ------------------------------------------------------------------------


def test_jsonl_rows_carry_the_interval_and_end_records_the_lifetime(bpf, pcap):
    path = pcap[0]
    out = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", str(path), "--jsonl", "-r", "1s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    flow = [r for r in rows if r["srcPort"] == 42001 and r.get("event") != "end"]
    health = [(r["packets"], r.get("retransPackets"), r.get("rttSamples"), r.get("rttMeanNs")) for r in flow]
    # its first second: 8 packets, one of them sent again, five round trips; at 2 s the new
    # connection without timestamps: 2 packets, neither; no row for the seconds it was silent
    assert [h for h in health if h[0]] == [(8, 1, 5, 16_200_000), (2, None, None, None)]
    (end,) = [r for r in rows if r["srcPort"] == 42001 and r.get("event") == "end"]
    assert (end["totalPackets"], end["retransPackets"], end["rttSamples"], end["rttMeanNs"]) == (
        10,
        1,
        5,
        16_200_000,
    )
    assert (end["rttMinNs"], end["rttMaxNs"]) == (10**7, 31 * 10**6)
    (end,) = [r for r in rows if r["srcPort"] == 42002 and r.get("event") == "end"]
    assert (end["retransPackets"], "rttSamples" in end) == (3, False)
