"""Flow records of a running capture (issue 20, the continuous parts):
--parquet and --ipfix alongside a live view, handed each interval's end
records as the run goes (idle records during it, end records at its end).

Parquet: rolled files read back by DuckDB and ``pktstat_bpf.read_flows``
equal the end records the same run streams as ``--jsonl``, and those sum to
what an AF_PACKET capture saw; a SIGKILLed writer leaves complete files only
and loses at most the roll interval it was in. IPFIX: nfcapd, fed by a
``--prometheus`` exporter, stores the idle records during the run and the
rest at its end, with nfdump's TCP flags equal to ours."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pktstat_bpf
import pytest
from netns import NetnsPair, wait_for
from pktstat_bpf.core.render import rfc3339
from traffic import Sniffer

duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed (pip install '.[test]')")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (pip install '.[test]')")

#: the streams' end reasons as the Parquet column names them
REASON = {"idle": "idle", "active": "active", "end": "end of capture", "evicted": "lack of resources"}
PORT = 7100


def _start(ns: NetnsPair, out: Path, *extra: str) -> subprocess.Popen:
    p = ns.exec_a(
        sys.executable,
        "-m",
        "pktstat_bpf",
        "-i",
        "va",
        "-t",
        "0",
        "--jsonl",
        "-r",
        "100ms",
        "--idle-timeout",
        "500ms",
        "--parquet",
        str(out),
        "--parquet-roll",
        "1s",
        *extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "counting on va" in p.stderr.readline()
    return p


def _churn(
    ns: NetnsPair, flows: int, stop: threading.Event | None = None, gap: float = 0.04, first: int = 20000
) -> list[int]:
    """Short UDP flows to the peer, one every `gap` s, each 1-3 datagrams
    from a new socket bound to its own source port (`first`, `first` + 1
    ...: no ephemeral port comes round twice); their source ports."""
    ports = []
    with ns.in_a():
        for i in range(flows):
            if stop is not None and stop.is_set():
                break
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((ns.A4, first + i))
                for _ in range(1 + i % 3):
                    s.sendto(b"c" * (60 + i % 50), (ns.B4, PORT))
                ports.append(s.getsockname()[1])
            time.sleep(gap)
    return ports


def _duck_rows(directory: Path) -> list[tuple]:
    q = f"""
        SELECT src_ip, dst_ip, src_port, dst_port, CAST(proto AS VARCHAR), packets, bytes,
               epoch_ns(first_seen), epoch_ns(last_seen), end_reason, epoch_ns(interval_end)
        FROM read_parquet('{directory}/**/*.parquet', hive_partitioning = true)
    """
    return sorted(duckdb.sql(q).fetchall())


def _end_rows(lines: list[str]) -> list[tuple]:
    """The --jsonl end records, as the rows the Parquet files hold."""
    out = []
    for line in lines:
        d = json.loads(line)
        if d.get("event") != "end":
            continue
        out.append(
            (
                d["srcIp"],
                d["dstIp"],
                d["srcPort"],
                d["dstPort"],
                d["proto"],
                d["packets"],
                d["bytes"],
                d["firstSeen"],
                d["lastSeen"],
                REASON[d["reason"]],
                _epoch(d["timestamp"]),
            )
        )
    return sorted(out)


def _ended_ports(lines: list[str]) -> set[int]:
    """The source ports of our UDP flows with an end line so far."""
    return {
        d["srcPort"] for d in map(json.loads, list(lines)) if d.get("event") == "end" and d["dstPort"] == PORT
    }


def _as_text(row: tuple) -> tuple:
    """A DuckDB row with its times as the streams write them (RFC 3339, ns;
    the interval's end, the stream's timestamp, is written to the
    microsecond: that one as a float of seconds)."""
    return (*row[:7], rfc3339(row[7]), rfc3339(row[8]), row[9], row[10] / 1e9)


def _same(got: list[tuple], want: list[tuple]) -> bool:
    """Equal records: every field exact, the interval's end to 1 us (both
    are the drain's time, a float of seconds, rounded once to ns, once to us)."""
    return len(got) == len(want) and all(
        g[:10] == w[:10] and abs(g[10] - w[10]) <= 1.01e-6 for g, w in zip(sorted(got), sorted(want))
    )


def _visible_files_are_complete(directory: Path, seen: dict[Path, int], stop: threading.Event) -> None:
    """Poll the directory while the run writes: every *.parquet file, the
    moment it is seen, is a complete Parquet file (its footer reads)."""
    while not stop.is_set():
        for f in directory.rglob("*.parquet"):
            if f not in seen:
                seen[f] = pq.ParquetFile(f).metadata.num_rows
        time.sleep(0.005)


def test_rolled_parquet_files_of_a_live_stream_equal_its_end_records(netns: NetnsPair, tmp_path):
    """Five seconds of churn, 1 s rolls: several files, each seen only
    complete; DuckDB and read_flows read back exactly the end records the
    same run streamed (idle ones during the run, the last flow's at its
    end), and the records of each of our flows sum to what AF_PACKET saw."""
    out = tmp_path / "flows"
    peer = netns.peer("udp", str(PORT))
    seen: dict[Path, int] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_visible_files_are_complete, args=(out, seen, stop), daemon=True)
    try:
        p = _start(netns, out)
        lines: list[str] = []  # read as it comes: a full pipe would hold the capture loop up
        reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
        reader.start()
        watcher.start()
        with netns.in_a():
            sniffer = Sniffer("va")
        ports = _churn(netns, 100, gap=0.05)
        mid_run = sorted(out.rglob("*.parquet"))  # rolled while the capture goes on
        # the last flows go idle: the run hands out their records (seen on its stream) now
        assert wait_for(lambda: set(ports) <= _ended_ports(lines), timeout=30)
        last = _churn(netns, 1, first=21000)  # still live when the capture ends: its record comes at the end
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)  # (the reader has stdout: communicate() would take lines from it)
        reader.join(timeout=10)
        err = p.stderr.read()
        frames = sniffer.stop()
    finally:
        stop.set()
        peer.kill()
        peer.wait()
    watcher.join()
    assert p.returncode == 0, err
    files = sorted(out.rglob("*.parquet"))
    assert len(mid_run) >= 2 and len(files) >= 3, files  # rolled during the run, and at its end
    assert not [f for f in out.rglob(".*") if f.is_file()]  # no temporary file left
    for f in files:  # as complete when first seen as at the end
        assert seen.get(f, pq.ParquetFile(f).metadata.num_rows) == pq.ParquetFile(f).metadata.num_rows
    got = [_as_text(r) for r in _duck_rows(out)]
    want = _end_rows(lines)
    assert [g[:10] for g in sorted(got)] == [w[:10] for w in sorted(want)]
    assert _same(got, want)
    reasons = {r[9] for r in got}
    assert {"idle", "end of capture"} <= reasons, reasons
    # our flows: all idle (retired during the run), summing to the frames AF_PACKET saw
    sniffed = {
        k[3]: tuple(v)
        for k, v in Sniffer.flows(frames, 17).items()
        if k[4] == PORT and k[5] == "egress" and k[1] == netns.B4
    }
    assert sorted(sniffed) == sorted(ports + last) and len(ports) == 100
    mine: dict[int, list[int]] = {}
    for r in got:
        if r[1] == netns.B4 and r[3] == PORT and r[4] == "UDP":
            c = mine.setdefault(r[2], [0, 0])
            c[0] += r[5]
            c[1] += r[6]
            assert r[9] == ("end of capture" if r[2] in last else "idle")
    assert {k: tuple(v) for k, v in mine.items()} == sniffed
    df = pktstat_bpf.read_flows(out)
    assert len(df) == len(got)
    assert sorted(zip(df["src_port"], df["packets"], df["bytes"])) == sorted((r[2], r[5], r[6]) for r in got)


def test_a_sigkilled_live_writer_loses_at_most_the_roll_interval_it_was_in(netns: NetnsPair, tmp_path):
    """Killed mid-run: the files on disk are complete, hold only records the
    run handed out (its --jsonl end lines), and every handed-out record
    missing from them came in the last roll interval (1 s, plus an
    interval's -r 100ms for the roll to be noticed)."""
    out = tmp_path / "flows"
    peer = netns.peer("udp", str(PORT))
    lines: list[str] = []
    stop = threading.Event()
    traffic = threading.Thread(target=_churn, args=(netns, 200, stop), daemon=True)
    try:
        p = _start(netns, out)
        reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
        reader.start()
        traffic.start()
        assert wait_for(lambda: len(list(out.rglob("*.parquet"))) >= 2, timeout=20)
        written = len(list(out.rglob("*.parquet")))
        assert wait_for(lambda: len(list(out.rglob("*.parquet"))) > written, timeout=20)  # a roll just ended
        time.sleep(0.5)  # half-way through the next one
        p.kill()
        killed = time.time()
        p.wait()
        reader.join(timeout=10)
    finally:
        stop.set()
        traffic.join()
        peer.kill()
        peer.wait()
    files = sorted(out.rglob("*.parquet"))
    assert len(files) >= 2
    for f in files:
        pq.read_table(f)  # complete: reads to its end
    got = [_as_text(r) for r in _duck_rows(out)]
    handed = _end_rows(lines)
    written = {g[:10] for g in got}
    kept = [h for h in handed if h[:10] in written]
    assert got and _same(got, kept)  # nothing partial, nothing invented
    lost = [h for h in handed if h[:10] not in written]
    assert lost  # the roll interval the writer was in
    newest_written = max(r[10] for r in got)
    first_lost = min(r[10] for r in lost)
    assert first_lost > newest_written  # a file holds a whole roll interval, in order
    since = killed - first_lost
    assert 0 < since <= 1.0 + 0.1 + 0.4, since  # the roll, the -r interval that notices it, slack


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()


def _flag_bits(text: str) -> int:
    """TCP flags as nfdump's JSON writes them (one position per bit, CWR
    first, '.' where clear: "...A..SF"), or as ours (the letters of the bits
    set, FIN first: "FSA"), as the flag byte."""
    from pktstat_bpf.core.render import TCP_FLAG_LETTERS

    if len(text) == 8 and "." in text:
        return sum(1 << (7 - i) for i, ch in enumerate(text) if ch != ".")
    return sum(1 << TCP_FLAG_LETTERS.index(ch) for ch in text)


def _ipfix_tuple(rec: dict) -> tuple:
    from test_ipfix import theirs

    return (*theirs(rec), _flag_bits(rec.get("tcp_flags", "")) if rec["proto"] == 6 else 0)


def _our_tuple(flow: dict) -> tuple:
    from test_ipfix import ours

    return (*ours(flow), _flag_bits(flow.get("tcpFlags", "")))


def _handed(lines: list[str], ns: NetnsPair, ports: set[int]) -> bool:
    """Every flow of ours whose either port is in `ports` has its end line
    (both directions of a TCP connection: 3 flows for a connection and a UDP flow)."""
    ends = [d for d in map(json.loads, list(lines)) if d.get("event") == "end" and _between_us(ns, d)]
    return len({(d["srcPort"], d["dstPort"]) for d in ends if {d["srcPort"], d["dstPort"]} & ports}) >= 3


def _between_us(ns: NetnsPair, flow: dict) -> bool:
    return {flow["srcIp"], flow["dstIp"]} == {ns.A4, ns.B4} and flow["proto"] in ("TCP", "UDP")


def test_nfcapd_gets_the_idle_records_during_a_live_stream_and_the_rest_at_its_end(netns: NetnsPair):
    """--jsonl with --ipfix: a TCP connection and a UDP flow that go idle
    reach a first nfcapd during the run (it is stopped and read while the
    capture goes on); a second nfcapd on the same port learns the templates
    from their refresh and gets the end records of a connection still open
    when the capture ends. Every record equals our end line of it: addresses,
    ports, packets, bytes, first and last packet to the millisecond and
    nfdump's TCP flags."""
    from test_ipfix import Nfcapd, free_udp_port

    ns = netns
    port = free_udp_port(ns)
    nf = Nfcapd(port, ns.ns_a)
    nf2 = None
    peer = ns.peer("tcp", "7200")
    udp_peer = ns.peer("udp", str(PORT))
    try:
        p = ns.exec_a(
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-i",
            "va",
            "-t",
            "0",
            "--jsonl",
            "-r",
            "100ms",
            "--idle-timeout",
            "500ms",
            "--ipfix",
            f"127.0.0.1:{port}",
            "--ipfix-template-refresh",
            "500ms",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert "counting on va" in p.stderr.readline()
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
        reader.start()
        with ns.in_a():
            from traffic import tcp_exchange

            first_tcp, _ = tcp_exchange(ns.B4, 7200, 3000)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(4):
                    s.sendto(b"u" * 200, (ns.B4, PORT))
                udp_port = s.getsockname()[1]
        # idle past 500 ms: the run hands out their records (seen on its stream), then nfcapd stops
        assert wait_for(lambda: _handed(lines, ns, {udp_port, first_tcp}), timeout=30)
        time.sleep(0.3)  # (nfcapd reads what reached its socket)
        stopped = time.time()
        during = nf.flows()  # nfcapd stops; the capture goes on
        nf2 = Nfcapd(port, ns.ns_a)
        time.sleep(1.2)  # a template refresh reaches the new collector
        phase2 = time.time()
        with ns.in_a():
            held = socket.create_connection((ns.B4, 7200), timeout=5)
            held.sendall(b"h" * 500)
            held_port = held.getsockname()[1]
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)  # the last interval ends the open connection
        p.wait(timeout=30)  # (the reader has stdout: communicate() would take lines from it)
        reader.join(timeout=10)
        err = p.stderr.read()
        held.close()
        assert p.returncode == 0, err
        after = nf2.flows()
    finally:
        nf.cleanup()
        if nf2 is not None:
            nf2.cleanup()
        for q in (peer, udp_peer):
            q.kill()
            q.wait()
    ends = [d for d in map(json.loads, lines) if d.get("event") == "end" and _between_us(ns, d)]
    # split by when the run handed them out (the line's timestamp): before the first nfcapd
    # stopped, and once the second one had the templates (our flows are quiet in between)
    handed = [(_epoch(d["timestamp"]), d) for d in ends]
    assert not [d for t, d in handed if stopped <= t < phase2]
    idle = sorted(_our_tuple(d) for t, d in handed if t < stopped)
    final = sorted(_our_tuple(d) for t, d in handed if t >= phase2)
    assert {d["reason"] for t, d in handed if t < stopped} == {"idle"}
    assert sorted(_ipfix_tuple(r) for r in during if r.get("src4_addr") in (ns.A4, ns.B4)) == idle
    assert sorted(_ipfix_tuple(r) for r in after if r.get("src4_addr") in (ns.A4, ns.B4)) == final
    # the flows themselves: both directions of the closed connection and the UDP flow, idle,
    # during the run; the held connection after, without FIN
    assert {(t[2], t[3]) for t in idle} == {(first_tcp, 7200), (7200, first_tcp), (udp_port, PORT)}
    assert {(t[2], t[3]) for t in final} == {(held_port, 7200), (7200, held_port)}
    syn, fin, ack = 0x02, 0x01, 0x10
    flags = {(t[2], t[3]): t[-1] for t in idle + final}
    assert flags[(first_tcp, 7200)] & (syn | fin | ack) == syn | fin | ack
    assert flags[(held_port, 7200)] & (syn | ack) == syn | ack and not flags[(held_port, 7200)] & fin
    assert flags[(udp_port, PORT)] == 0
    assert not ns.ours_attached()
