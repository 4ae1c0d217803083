"""Conversations (issue 18, item 3): the two directions of a flow put
together, client to server, with packets and bytes each way
(pktstat_bpf/core/conversations.py), in Snapshot.conversations(), its
DataFrame, the CLI's --conversations (text, -j, --json-array) and the
interactive table's `c` toggle; replayed from a capture made here whose
every count is known, and live on a veth pair against an AF_PACKET
capture of the same traffic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pktstat_bpf
import pytest

scapy = pytest.importorskip("scapy.all")

C, S, S2, M = "10.3.0.1", "10.3.0.2", "10.3.0.3", "224.0.0.251"
T0 = 1_700_000_000


def _frames() -> list:
    """(frame, time) in time order; see the expectations in CONVERSATIONS."""
    from scapy.all import ICMP, IP, TCP, UDP, Ether

    def tcp(src, dst, sport, dport, flags, payload=b""):
        return Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags) / payload

    seq = [
        # HTTP: C:40000 -> S:80, the handshake, a request and a two-segment answer
        tcp(C, S, 40000, 80, "S"),
        tcp(S, C, 80, 40000, "SA"),
        tcp(C, S, 40000, 80, "A"),
        tcp(C, S, 40000, 80, "PA", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        tcp(S, C, 80, 40000, "PA", b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 300),
        tcp(S, C, 80, 40000, "PA", b"y" * 500),
        # UDP: the first sender has the lower port (1000): it is the client all the same
        Ether() / IP(src=C, dst=S2) / UDP(sport=1000, dport=50000) / (b"q" * 20),
        Ether() / IP(src=S2, dst=C) / UDP(sport=50000, dport=1000) / (b"r" * 70),
        Ether() / IP(src=S2, dst=C) / UDP(sport=50000, dport=1000) / (b"r" * 70),
        # one side only (answers of a server whose requests were not seen): the lower port serves
        tcp(S2, C, 443, 41000, "A", b"z" * 100),
        # ICMP echo: request then reply (no ports: paired on the addresses)
        Ether() / IP(src=C, dst=S) / ICMP(type=8, id=5, seq=1) / (b"p" * 32),
        Ether() / IP(src=S, dst=C) / ICMP(type=0, id=5, seq=1) / (b"p" * 32),
        # mDNS, one side, equal ports: its sender is the client
        Ether() / IP(src=C, dst=M) / UDP(sport=5353, dport=5353) / (b"m" * 40),
    ]
    for i, f in enumerate(seq):
        f.time = T0 + i * 0.01
    return seq


def _expected() -> dict[tuple, tuple]:
    """(proto, client, cport, server, sport) -> (c2s packets, c2s bytes, s2c packets, s2c bytes)."""
    out: dict[tuple, list[int]] = {}
    sides = {
        ("TCP", C, 40000, S, 80),
        ("UDP", C, 1000, S2, 50000),
        ("TCP", C, 41000, S2, 443),
        ("ICMPv4", C, 0, S, 0),
        ("UDP", C, 5353, M, 5353),
    }
    for f in _frames():
        ip = f["IP"]
        proto = {6: "TCP", 17: "UDP", 1: "ICMPv4"}[ip.proto]
        sp, dp = (ip.sport, ip.dport) if proto != "ICMPv4" else (0, 0)
        for conv in sides:
            if conv[0] != proto:
                continue
            c2s = (ip.src, sp, ip.dst, dp) == conv[1:]
            s2c = (ip.dst, dp, ip.src, sp) == conv[1:]
            if c2s or s2c:
                acc = out.setdefault(conv, [0, 0, 0, 0])
                k = 0 if c2s else 2
                acc[k] += 1
                acc[k + 1] += len(f)
    return {k: tuple(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def pcap(tmp_path_factory) -> Path:
    from scapy.all import wrpcap

    path = tmp_path_factory.mktemp("conv") / "conv.pcap"
    wrpcap(str(path), _frames())
    return path


def _rows(dicts: list[dict]) -> dict[tuple, tuple]:
    out = {}
    for d in dicts:
        ported = d["proto"] in ("TCP", "UDP")
        key = (d["proto"], d["clientIp"], d["clientPort"] if ported else 0, d["serverIp"])
        key += (d["serverPort"] if ported else 0,)
        out[key] = (d["c2sPackets"], d["c2sBytes"], d["s2cPackets"], d["s2cBytes"])
        assert (d["packets"], d["bytes"]) == (out[key][0] + out[key][2], out[key][1] + out[key][3])
    return out


def test_snapshot_conversations_and_dataframe(bpf, pcap):
    snap = pktstat_bpf.replay(str(pcap))
    conv = snap.conversations()
    assert conv.paired and conv.conversations() is conv
    assert _rows(conv.flow_dicts()) == _expected()
    assert int(conv.records["packets"].sum()) == int(snap.records["packets"].sum()) == len(_frames())
    df = conv.to_pandas()
    assert list(df.columns[:4]) == ["client_ip", "server_ip", "client_port", "server_port"]
    http = df[(df["server_port"] == 80)].iloc[0]
    assert (http["client_ip"], http["client_port"], http["app"]) == (C, 40000, "HTTP")
    assert int(http["c2s_packets"]) == 3 and int(http["s2c_packets"]) == 3
    assert http["first_seen"].value == T0 * 10**9 and http["last_seen"].value == T0 * 10**9 + 50_000_000


def _cli(pcap: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pktstat_bpf", "--pcap", str(pcap), "--conversations", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_cli_json_text_and_array(bpf, pcap):
    p = _cli(pcap, "-j")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert "flows" not in doc and doc["totals"]["packets"] == len(_frames())
    assert _rows(doc["conversations"]) == _expected()
    arr = _cli(pcap, "--json-array")
    assert _rows(json.loads(arr.stdout)) == _expected()
    text = _cli(pcap).stdout.splitlines()
    assert text[0].startswith("# replay of ") and text[0].endswith("; 5 conversations")
    (http,) = [ln for ln in text if ":80," in ln]
    c2s, s2c = _expected()[("TCP", C, 40000, S, 80)][:2], _expected()[("TCP", C, 40000, S, 80)][2:]
    # the request's Host, from the client's direction (test_names_views.py has the names' cases)
    assert f"proto: TCP, app: HTTP, host: a, client: {C}:40000, server: {S}:80, " in http
    assert f"c2s: {c2s[0]}/{c2s[1]}, s2c: {s2c[0]}/{s2c[1]}" in http


@pytest.mark.parametrize("flag", ["--jsonl", "--plain", "-g"])
def test_cli_refuses_conversations_with_streams(flag, tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "--conversations", flag, "-i", "lo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and p.stdout == ""
    assert (
        p.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "--conversations pairs the flows of the final report (text, -j, --json-array): "
            "drop -g/--tui, --jsonl, --plain, -u/--unique and --prometheus"
        )
    )


def test_tui_toggles_conversations(bpf, pcap):
    from pktstat_bpf.output.table import TableModel

    (iv,) = pktstat_bpf.Replayer().intervals(str(pcap), 10.0)
    m = TableModel(mode="replay", where=pcap.name, page=20)
    m.update(iv)
    assert m.count == len(iv.delta) == 8
    m.key(ord("c"))
    titles = [c.title for c in m.columns()]
    assert "CLIENT" in titles and "SERVER" in titles and "SRC" not in titles
    assert m.count == 5 and "conversations" in m.status_line()
    rows = {(r[titles.index("CLIENT")], r[titles.index("SERVER")]): r for r in m.visible()}
    http = rows[(f"{C}:40000", f"{S}:80")]
    assert http[titles.index("PACKETS")] == "6" and http[titles.index("APP")] == "HTTP"
    for ch in "/443\n":
        m.key(ord(ch))
    assert [r[titles.index("SERVER")] for r in m.visible()] == [f"{S2}:443"]
    m.key(ord("c"))
    assert m.count == 1 and "SRC" in [c.title for c in m.columns()]  # the filter stays: one flow


@pytest.mark.kernel
def test_live_tcp_conversation_against_a_capture(netns_v4only):
    """A TCP exchange on a veth pair in TC mode: one conversation, client
    A's ephemeral port, server B's port, each way exactly what an AF_PACKET
    capture of va saw."""
    from traffic import Sniffer, tcp_exchange

    ns = netns_v4only
    peer = ns.peer("tcp", "5431")
    try:
        with ns.in_a():
            sniffer = Sniffer("va")
            col = pktstat_bpf.Collector(iface="va").start()
        try:
            with ns.in_a():
                port = tcp_exchange(ns.B4, 5431, 300)[0]
            time.sleep(0.3)
            snap = col.snapshot()
        finally:
            col.close()
        frames = sniffer.stop()
    finally:
        peer.kill()
    flows = Sniffer.flows(frames, 6)
    c2s = [v for k, v in flows.items() if (k[0], k[3], k[4]) == (ns.A4, port, 5431)]
    s2c = [v for k, v in flows.items() if (k[0], k[3], k[4]) == (ns.B4, 5431, port)]
    (conv,) = [
        d for d in snap.conversations().flow_dicts() if d["proto"] == "TCP" and d["serverPort"] == 5431
    ]
    assert (conv["clientIp"], conv["clientPort"], conv["serverIp"]) == (ns.A4, port, ns.B4)
    assert (conv["c2sPackets"], conv["c2sBytes"]) == tuple(c2s[0])
    assert (conv["s2cPackets"], conv["s2cBytes"]) == tuple(s2c[0])
