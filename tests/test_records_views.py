"""--parquet beside the views that have no end lines of their own: the
interactive table (-g, in tmux), the Prometheus exporter, and a streamed
replay. Each run's Parquet records of our flows sum to what AF_PACKET saw
(live) or equal the replay's --jsonl end lines exactly; flows that went idle
during the run carry reason idle, the flow still live at the end "end of
capture"."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns import NetnsPair, wait_for
from traffic import Sniffer

duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed (pip install '.[test]')")

OFFICE = Path(__file__).parent / "data" / "office.pcap"
PORT = 7300


def _rows(directory: Path) -> list[tuple]:
    q = f"""
        SELECT src_ip, dst_ip, src_port, dst_port, CAST(proto AS VARCHAR), packets, bytes,
               epoch_ns(first_seen), epoch_ns(last_seen), end_reason
        FROM read_parquet('{directory}/**/*.parquet', hive_partitioning = true)
    """
    return sorted(duckdb.sql(q).fetchall())


def _flows(ns: NetnsPair, n: int, first: int) -> list[int]:
    """`n` UDP flows to the peer, 2 datagrams each, 60 ms apart, from source
    ports `first`, `first` + 1 ...; their source ports."""
    ports = []
    with ns.in_a():
        for i in range(n):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((ns.A4, first + i))
                s.sendto(b"v" * 80, (ns.B4, PORT))
                s.sendto(b"v" * 90, (ns.B4, PORT))
                ports.append(s.getsockname()[1])
            time.sleep(0.06)
    return ports


def _check(ns: NetnsPair, out: Path, frames: list, idle: list[int], last: list[int]) -> None:
    sniffed = {
        k[3]: tuple(v)
        for k, v in Sniffer.flows(frames, 17).items()
        if k[4] == PORT and k[5] == "egress" and k[1] == ns.B4
    }
    assert sorted(sniffed) == sorted(idle + last)
    mine: dict[int, list[int]] = {}
    for r in _rows(out):
        if r[1] == ns.B4 and r[3] == PORT and r[4] == "UDP":
            c = mine.setdefault(r[2], [0, 0])
            c[0] += r[5]
            c[1] += r[6]
            assert r[9] == ("end of capture" if r[2] in last else "idle"), r
    assert {k: tuple(v) for k, v in mine.items()} == sniffed
    assert not ns.ours_attached()


def _live(ns: NetnsPair, out: Path) -> tuple[Sniffer, list[int], list[int]]:
    """Flows that go idle during the run, then one live at its end."""
    with ns.in_a():
        sniffer = Sniffer("va")
    idle = _flows(ns, 10, 22000)
    # idle past 500 ms: their records are written during the run (1 s roll)
    assert wait_for(
        lambda: any(out.rglob("*.parquet")) and set(idle) <= {r[2] for r in _rows(out)}, timeout=30
    )
    last = _flows(ns, 1, 23000)
    return sniffer, idle, last


def test_the_table_writes_parquet_as_flows_end(netns: NetnsPair, tmp_path):
    from test_tui import Tmux

    out = tmp_path / "flows"
    peer = netns.peer("udp", str(PORT))
    cmd = (
        f"ip netns exec {netns.ns_a} {sys.executable} -m pktstat_bpf -g -i va -r 100ms "
        f"--idle-timeout 500ms --parquet {out} --parquet-roll 1s; echo EXIT=$?; sleep 60"
    )
    t = Tmux(cmd, cols=120, rows=30)
    try:
        t.wait(lambda s: s and s[0].startswith("pktstat-bpf  tc on va"), timeout=20)
        sniffer, idle, last = _live(netns, out)
        t.keys("q")
        screen = t.wait(lambda s: any(line.startswith("EXIT=") for line in s))
        frames = sniffer.stop()
        assert "EXIT=0" in screen, screen
    finally:
        t.kill()
        peer.kill()
        peer.wait()
    _check(netns, out, frames, idle, last)


def test_the_exporter_writes_parquet_as_flows_end(netns: NetnsPair, tmp_path):
    out = tmp_path / "flows"
    peer = netns.peer("udp", str(PORT))
    try:
        p = netns.exec_a(
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-i",
            "va",
            "--prometheus",
            "127.0.0.1:0",
            "-r",
            "100ms",
            "--idle-timeout",
            "500ms",
            "--parquet",
            str(out),
            "--parquet-roll",
            "1s",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert "counting on va" in p.stderr.readline()
        sniffer, idle, last = _live(netns, out)
        p.terminate()  # SIGTERM: the last interval ends every flow
        _, err = p.communicate(timeout=30)
        frames = sniffer.stop()
        assert p.returncode == 0, err
    finally:
        peer.kill()
        peer.wait()
    _check(netns, out, frames, idle, last)


def test_a_streamed_replay_writes_its_end_lines_to_parquet(bpf, tmp_path):
    out = tmp_path / "flows"
    r = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", str(OFFICE), "--jsonl", "--parquet", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    reason = {"idle": "idle", "end": "end of capture"}
    want = []
    for d in map(json.loads, r.stdout.splitlines()):
        if d.get("event") == "end":
            want.append(
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
                    reason[d["reason"]],
                )
            )
    from pktstat_bpf.core.render import rfc3339

    got = [(*g[:7], rfc3339(g[7]), rfc3339(g[8]), g[9]) for g in _rows(out)]
    assert want and got == sorted(want)
