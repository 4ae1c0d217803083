"""Continuous capture end to end (docs/counting.md, "Continuous capture"):
the CLI's intervals drain the kernel tables, flows idle past --idle-timeout
are retired with one end record, long flows get --active-timeout records
whose deltas sum to their totals, and the report lists every flow of the
run, retired ones included, with exact counts, also when far more flows
pass than the kernel table holds. The engine's own exactness under load
(drains every 10 ms in every mode, 10,000 connections against an AF_PACKET
capture) is in test_drain.py."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import pytest
from netns import NetnsPair
from traffic import ETH, IP4, UDP, Sniffer, tcp_exchange

pytestmark = pytest.mark.kernel


def cli(ns: NetnsPair, *args: str, stdout: Any = subprocess.PIPE) -> subprocess.Popen:
    """The CLI on va in namespace A, once it counts; `stdout`: where its
    output goes (a pipe, or a file for a long stream)."""
    p = ns.exec_a(
        sys.executable,
        "-m",
        "pktstat_bpf",
        "-i",
        "va",
        *args,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = p.stderr.readline()
    assert "counting on va via" in line, line + p.stderr.read()
    return p


def test_idle_and_active_timeouts_in_json_lines(netns_v4only: NetnsPair):
    """A flow idle past --idle-timeout: exactly one end record (idle) with
    its exact totals, and nothing of it after that; a flow sending all
    along, past --active-timeout: active records, then its end record when
    the capture ends; its records' packets sum to what it sent."""
    ns = netns_v4only
    size = ETH + IP4 + UDP + 30
    peer = ns.peer("udp", "5401", "5402")
    try:
        p = cli(ns, "--jsonl", "-r", "100ms", "--idle-timeout", "500ms", "--active-timeout", "1s", "-t", "0")
        with ns.in_a():
            quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(5):
                quiet.sendto(b"q" * 30, (ns.B4, 5401))
            sent = 0
            t_end = time.monotonic() + 2.4
            while time.monotonic() < t_end:
                busy.sendto(b"b" * 30, (ns.B4, 5402))
                sent += 1
                time.sleep(0.05)
            qport, bport = quiet.getsockname()[1], busy.getsockname()[1]
        p.send_signal(2)  # the capture ends while the busy flow is live
        out, err = p.communicate(timeout=30)
        quiet.close(), busy.close()
    finally:
        peer.kill()
    assert p.returncode == 0, err
    docs = [json.loads(x) for x in out.splitlines()]
    mine = [d for d in docs if d["proto"] == "UDP" and d["srcIp"] == ns.A4]
    q = [d for d in mine if d["srcPort"] == qport]
    b = [d for d in mine if d["srcPort"] == bport]
    q_ends = [d for d in q if d.get("event") == "end"]
    assert [(d["reason"], d["packets"], d["bytes"], d["totalPackets"], d["totalBytes"]) for d in q_ends] == [
        ("idle", 5, 5 * size, 5, 5 * size)
    ]
    assert q[-1] is q_ends[0]  # retired: no line of it after its end record
    b_ends = [d for d in b if d.get("event") == "end"]
    reasons = [d["reason"] for d in b_ends]
    assert reasons[-1] == "end" and set(reasons[:-1]) == {"active"} and len(reasons) >= 2, reasons
    assert sum(d["packets"] for d in b_ends) == sent == b_ends[-1]["totalPackets"]
    assert sum(d["bytes"] for d in b_ends) == sent * size
    # the flow lines of the busy flow: the interval counts add up to the same total
    assert sum(d["packets"] for d in b if "event" not in d) == sent


def test_report_lists_retired_flows_with_exact_counts(netns_v4only: NetnsPair):
    """Flows retired mid-run (--idle-timeout) are in the report with their
    counts; a flow retired and then seen again is one row with all of its
    packets; the totals conserve."""
    ns = netns_v4only
    size = ETH + IP4 + UDP + 40
    peer = ns.peer("udp", "5411", "5412", "5413")
    try:
        p = cli(ns, "-j", "-r", "100ms", "--idle-timeout", "300ms", "-t", "2s")
        with ns.in_a():
            again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(3):
                again.sendto(b"a" * 40, (ns.B4, 5411))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as once:
                for _ in range(4):
                    once.sendto(b"o" * 40, (ns.B4, 5412))
                oport = once.getsockname()[1]
            time.sleep(0.9)  # both retired
            for _ in range(6):
                again.sendto(b"a" * 40, (ns.B4, 5411))
            aport = again.getsockname()[1]
        out, err = p.communicate(timeout=30)
        again.close()
    finally:
        peer.kill()
    assert p.returncode == 0, err
    doc = json.loads(out)
    rows = {
        (f["srcPort"], f["dstPort"]): (f["packets"], f["bytes"])
        for f in doc["flows"]
        if f["proto"] == "UDP" and f["srcIp"] == ns.A4
    }
    assert rows == {(aport, 5411): (9, 9 * size), (oport, 5412): (4, 4 * size)}
    t = doc["totals"]
    assert t["packets"] == t["flowPackets"] + t["unparsedPackets"] + t["overflowPackets"]
    assert t["flows"] == len(doc["flows"])


def test_churn_of_connections_through_a_small_kernel_table(netns_v4only: NetnsPair):
    """Far more TCP flows than --max-entries, drained every 100 ms: the
    report has every flow, each with the packets and bytes an AF_PACKET
    capture saw, and no overflow."""
    ns = netns_v4only
    conns = 5000
    peer = ns.peer("tcp", "5421")
    ports = []
    try:
        with ns.in_a():
            sniffer = Sniffer("va")
            sniffer.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: drop nothing
        p = cli(ns, "-j", "--max-entries", "4096", "-r", "100ms", "--idle-timeout", "1s", "-t", "0")
        with ns.in_a():
            for _ in range(conns):
                ports.append(tcp_exchange(ns.B4, 5421, 50)[0])
        time.sleep(0.3)
        p.send_signal(2)
        out, err = p.communicate(timeout=60)
        # struct tpacket_stats (SOL_PACKET, PACKET_STATISTICS): frames the oracle dropped
        dropped = struct.unpack("II", sniffer.sock.getsockopt(263, 6, 8))[1]
        frames = sniffer.stop()
    finally:
        peer.kill()
    assert p.returncode == 0, err
    assert dropped == 0
    doc = json.loads(out)
    want = {k: tuple(v) for k, v in Sniffer.flows(frames, 6).items() if 5421 in (k[3], k[4])}
    assert len(want) == 2 * len(set(ports)) > 4096 * 2
    got = {
        (f["srcIp"], f["dstIp"], 6, f["srcPort"], f["dstPort"], f["direction"]): (f["packets"], f["bytes"])
        for f in doc["flows"]
        if f["proto"] == "TCP" and 5421 in (f["srcPort"], f["dstPort"])
    }
    assert doc["totals"]["overflowPackets"] == 0
    assert got == want


def test_timeseries_of_more_flows_than_the_kernel_table_holds(bpf, tmp_path):
    """A capture of 20,000 distinct flows over 100 s of capture time (200 a
    second): replayed in 1 s steps through a kernel table of 512 entries,
    each step is drained, so nothing overflows and the totals equal a
    one-pass replay through a table large enough; the --jsonl stream of the
    same file hands out each flow's end record once (idle after a minute of
    capture time, or at the end of the file), with its packets."""
    import pktstat_bpf
    from test_replay import T0, udp4, write_pcap

    n, per_s = 20_000, 200
    recs = [
        (
            T0 + i * (1_000_000_000 // per_s),
            udp4("10.0.0.1", "10.0.0.2", 1024 + i % 50_000, 53 + i // 50_000, i % 5),
        )
        for i in range(n)
    ]
    path = write_pcap(tmp_path / "many.pcap", recs)
    df = pktstat_bpf.timeseries(path, interval=1.0, max_entries=512)
    whole = pktstat_bpf.replay(path, max_entries=32768)
    assert whole.totals.all.overflow_packets == 0 and len(whole) == n
    assert int(df["packets"].sum()) == n == whole.totals.flow_packets
    assert int(df["bytes"].sum()) == whole.totals.flow_bytes
    assert df["flow"].nunique() == n
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pktstat_bpf",
            "--pcap",
            str(path),
            "--jsonl",
            "-r",
            "1s",
            "--max-entries",
            "512",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (p.returncode, p.stderr) == (0, "")
    ends = [d for d in map(json.loads, p.stdout.splitlines()) if d.get("event") == "end"]
    assert len(ends) == n and sum(d["packets"] for d in ends) == n
    reasons = {d["reason"] for d in ends}
    assert reasons == {"idle", "end"}
