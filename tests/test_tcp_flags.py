"""TCP flags per flow (flow_value.tcp_flags, syn/fin/rst_packets) in replay:
against tshark's own dissection of every capture of the shared ndpi and
corpus sets, and against a generated capture whose flags are known exactly.

tshark's view, computed at test time: per frame of which the outermost IP
header carries TCP directly (after IPv6 extension headers only), is not a
fragment and whose TCP header tshark dissected, ``tcp.flags``; aggregated here
per our flow key (source, destination, ports): the OR of the low 8 flag bits
and the number of frames with SYN, FIN and RST set. Ours must equal it for
every TCP flow of the file, and a flow of any other protocol has no flags.

Frames tshark reaches IP through a layer our parser does not walk (MPLS,
MACsec, NSH ...) are unparsed for us: their TCP is not compared (those files
are pinned by tests/test_replay_tshark.py). Where our rule and tshark's
legitimately differ, EXCEPTIONS says why, per file; an exception that no
longer explains a difference fails the test.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import ipaddress
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

PCAPS = Path(os.environ.get("PKTSTAT_BPF_PCAPS", Path(__file__).resolve().parents[2] / "shared" / "pcaps"))
SETS = ("ndpi", "corpus")
FILES = [
    f"{s}/{p.name}"
    for s in SETS
    if (PCAPS / s).is_dir()
    for p in sorted((PCAPS / s).iterdir())
    if p.is_file()
]

FIELDS = [
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ip.flags.mf",
    "ip.frag_offset",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.fraghdr.offset",
    "ipv6.fraghdr.more",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.hdr_len",
    "tcp.flags",
]
WALKED = {"eth", "ethertype", "vlan", "ieee8021ad", "sll", "raw", "null", "loop"}
IPV6_EXT = {"ipv6.hopopts", "ipv6.routing", "ipv6.fraghdr", "ipv6.dstopts", "ipv6.shim6", "ah"}
SYN, FIN, RST = 0x02, 0x01, 0x04

# file -> why ours differs from tshark's there (flows of the file not compared)
EXCEPTIONS: dict[str, str] = {}
# files whose link type replay does not read (it says so and stops): their
# flows are not compared, and the test checks that replay still refuses them
UNSUPPORTED = {
    "ndpi/dlt_ppp.pcap": "PPP (PPP)",
    "ndpi/someip_sd_sample.pcap": "PPI (Per-Packet Information)",
}


def _dissect(path: Path) -> str:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=f", "-E", "separator=/t"]
    for f in FIELDS:
        cmd += ["-e", f]
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if p.returncode != 0 and not p.stdout:
        raise RuntimeError(f"tshark failed on {path}: {p.stderr.strip()}")
    return p.stdout


@pytest.fixture(scope="session")
def tshark_flags(request) -> dict[str, str]:
    """{file: tshark's field dump}, cached by the file's SHA-256 and tshark's version."""
    if not FILES:
        pytest.skip(f"the shared captures are missing ({PCAPS}); set PKTSTAT_BPF_PCAPS")
    version = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    cache = getattr(request.config, "cache", None)
    out: dict[str, str] = {}
    todo = []
    for name in FILES:
        key = hashlib.sha256((PCAPS / name).read_bytes() + version.encode() + "\0".join(FIELDS).encode())
        ck = f"pktstat_bpf/tshark-flags/{key.hexdigest()}"
        hit = cache.get(ck, None) if cache is not None else None
        if hit is not None:
            out[name] = hit
        else:
            todo.append((name, ck))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        futures = {ex.submit(_dissect, PCAPS / name): (name, ck) for name, ck in todo}
        for fut in concurrent.futures.as_completed(futures):
            name, ck = futures[fut]
            out[name] = fut.result()
            if cache is not None:
                cache.set(ck, out[name])
    return out


@pytest.fixture(scope="session")
def replayer(bpf):
    import pktstat_bpf

    return pktstat_bpf.Replayer(max_entries=1 << 16)


def _addr(s: str) -> str:
    return str(ipaddress.ip_address(s))


def tshark_view(text: str) -> tuple[dict, set]:
    """(flows, uncompared): {(src, dst, sport, dport): [or, syn, fin, rst]}
    of the TCP frames tshark dissected as our parser keys them, and the
    (src, dst) pairs whose TCP is not compared (fragments, headers tshark
    did not dissect whole, IP reached through a layer we do not walk)."""
    flows: dict = defaultdict(lambda: [0, 0, 0, 0])
    skip: set = set()
    for line in text.splitlines():
        c = dict(zip(FIELDS, line.split("\t")))
        layers = c["frame.protocols"].split(":")
        ip_at = next((i for i, layer in enumerate(layers) if layer in ("ip", "ipv6")), None)
        if ip_at is None or any(layer not in WALKED for layer in layers[:ip_at]):
            continue
        v4 = layers[ip_at] == "ip"
        src, dst = (c["ip.src"], c["ip.dst"]) if v4 else (c["ipv6.src"], c["ipv6.dst"])
        if not src or not dst:
            continue
        src, dst = _addr(src), _addr(dst)
        after = [layer for layer in layers[ip_at + 1 :] if layer not in IPV6_EXT]
        if not after or after[0] != "tcp":
            continue
        if v4:
            frag = c["ip.flags.mf"] in ("1", "True") or c["ip.frag_offset"] not in ("", "0")
        else:
            frag = c["ipv6.fraghdr.offset"] not in ("", "0") or c["ipv6.fraghdr.more"] in ("1", "True")
        if frag or not c["tcp.flags"] or not c["tcp.hdr_len"] or int(c["tcp.hdr_len"]) < 20:
            skip.add((src, dst))
            continue
        fl = int(c["tcp.flags"], 16) & 0xFF
        f = flows[(src, dst, int(c["tcp.srcport"]), int(c["tcp.dstport"]))]
        f[0] |= fl
        f[1] += bool(fl & SYN)
        f[2] += bool(fl & FIN)
        f[3] += bool(fl & RST)
    return dict(flows), skip


def ours_view(snap) -> tuple[dict, list]:
    """({(src, dst, sport, dport): [or, syn, fin, rst]} of our TCP flows, the
    other protocols' flows that carry TCP fields (must be none))."""
    r = snap.records
    flows: dict = {}
    stray = []
    for d, rec in zip(snap.flow_dicts(), r):
        vals = [
            int(rec["tcp_flags"]),
            int(rec["syn_packets"]),
            int(rec["fin_packets"]),
            int(rec["rst_packets"]),
        ]
        if d["proto"] != "TCP":
            if any(vals):
                stray.append((d, vals))
            continue
        flows[(d["srcIp"], d["dstIp"], d["srcPort"], d["dstPort"])] = vals
    return flows, stray


@pytest.mark.parametrize("name", FILES)
def test_flags_per_flow_equal_tsharks(name, replayer, tshark_flags):
    from pktstat_bpf.core.replay import CaptureFileError

    theirs, skip = tshark_view(tshark_flags[name])
    if name in UNSUPPORTED:
        with pytest.raises(
            CaptureFileError, match=rf"link type {re.escape(UNSUPPORTED[name])} is not supported"
        ):
            replayer.replay(PCAPS / name)
        return
    snap = replayer.replay(PCAPS / name)
    ours, stray = ours_view(snap)
    assert stray == [], "flows other than TCP with TCP flags"
    keep = {k for k in set(ours) | set(theirs) if k[:2] not in skip}
    diff = {
        k: (ours.get(k, [0, 0, 0, 0]), theirs.get(k, [0, 0, 0, 0]))
        for k in sorted(keep, key=str)
        if ours.get(k, [0, 0, 0, 0]) != theirs.get(k, [0, 0, 0, 0])
    }
    if name in EXCEPTIONS:
        assert diff, f"the exception of {name} explains nothing any more: {EXCEPTIONS[name]}"
        return
    assert diff == {}, "(ours, tshark): [or, syn, fin, rst] per flow"
    # every flag byte tshark saw, and each count, summed over the file
    assert sum(v[1] for k, v in ours.items() if k in keep) == sum(
        v[1] for k, v in theirs.items() if k in keep
    )


def test_the_shared_captures_have_tcp_flows_with_every_count(tshark_flags):
    """The comparison is not vacuous: the captures hold SYN, FIN and RST."""
    total = [0, 0, 0, 0]
    for name in FILES:
        for v in tshark_view(tshark_flags[name])[0].values():
            total[0] |= v[0]
            for i in (1, 2, 3):
                total[i] += v[i]
    assert total[0] & 0x3F == 0x3F and min(total[1:]) > 100, total


# -- a generated capture whose flags are known exactly --------------------------

A4, B4, C6, D6 = "10.7.0.1", "10.7.0.2", "fd07::1", "fd07::2"


def generated_packets():
    """(packets, {(src, dst, proto, sport, dport): (flags, syn, fin, rst)})."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    def tcp(src, dst, sport, dport, flags, v6=False, payload=b""):
        ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
        return Ether() / ip / TCP(sport=sport, dport=dport, flags=flags) / payload

    pkts = [
        # a whole connection: handshake, data, close from both sides
        tcp(A4, B4, 40001, 80, "S"),
        tcp(B4, A4, 80, 40001, "SA"),
        tcp(A4, B4, 40001, 80, "A"),
        *[tcp(A4, B4, 40001, 80, "PA", payload=b"x" * 100) for _ in range(3)],
        tcp(B4, A4, 80, 40001, "A"),
        tcp(A4, B4, 40001, 80, "FA"),
        tcp(B4, A4, 80, 40001, "FA"),
        tcp(A4, B4, 40001, 80, "A"),
        # IPv6: a SYN retried twice and refused
        *[tcp(C6, D6, 40002, 443, "S", v6=True) for _ in range(3)],
        *[tcp(D6, C6, 443, 40002, "RA", v6=True) for _ in range(3)],
        # every flag in one packet, then URG and ECE/CWR on their own
        tcp(A4, B4, 40003, 25, "FSRPAUEC"),
        tcp(A4, B4, 40004, 25, "U"),
        tcp(A4, B4, 40005, 25, "EC"),
        # no flags at all (a TCP header of zero flags)
        tcp(A4, B4, 40006, 25, ""),
        # TCP whose IP datagram holds only 12 bytes of the header: no ports, no flags
        Ether() / IP(src=A4, dst=B4, proto=6, len=32) / bytes(TCP(sport=40007, dport=25, flags="S"))[:12],
        # a non-first fragment whose bytes look like a SYN: no flags
        Ether() / IP(src=A4, dst=B4, proto=6, frag=4) / bytes(TCP(sport=40008, dport=25, flags="S")),
        # UDP: no flags
        Ether() / IP(src=A4, dst=B4) / UDP(sport=40009, dport=53) / b"q",
    ]
    want = {
        (A4, B4, "TCP", 40001, 80): (0x1B, 1, 1, 0),  # FSPA
        (B4, A4, "TCP", 80, 40001): (0x13, 1, 1, 0),  # FSA
        (C6, D6, "TCP", 40002, 443): (0x02, 3, 0, 0),  # S
        (D6, C6, "TCP", 443, 40002): (0x14, 0, 0, 3),  # RA
        (A4, B4, "TCP", 40003, 25): (0xFF, 1, 1, 1),
        (A4, B4, "TCP", 40004, 25): (0x20, 0, 0, 0),
        (A4, B4, "TCP", 40005, 25): (0xC0, 0, 0, 0),
        (A4, B4, "TCP", 40006, 25): (0, 0, 0, 0),
        (A4, B4, "TCP", 0, 0): (0, 0, 0, 0),  # the short header and the fragment
        (A4, B4, "UDP", 40009, 53): (0, 0, 0, 0),
    }
    return pkts, want


def by_key(snap) -> dict:
    return {
        (d["srcIp"], d["dstIp"], d["proto"], d["srcPort"], d["dstPort"]): (
            int(r["tcp_flags"]),
            int(r["syn_packets"]),
            int(r["fin_packets"]),
            int(r["rst_packets"]),
        )
        for d, r in zip(snap.flow_dicts(), snap.records)
    }


def test_generated_capture_gives_the_exact_flags(replayer, tmp_path):
    from scapy.utils import wrpcap

    pkts, want = generated_packets()
    wrpcap(str(tmp_path / "flags.pcap"), pkts)
    snap = replayer.replay(tmp_path / "flags.pcap")
    assert by_key(snap) == want
    assert snap.totals.all.packets == len(pkts) and snap.totals.conserved
    flows = {(d["srcPort"], d["dstPort"], d["proto"]): d for d in snap.flows()}
    # JSON: the letters in bit order, the counts; nothing for flows without flags
    client = flows[(40001, 80, "TCP")]
    assert (client["tcpFlags"], client["synPackets"], client["finPackets"], client["rstPackets"]) == (
        "FSPA",
        1,
        1,
        0,
    )
    assert flows[(443, 40002, "TCP")]["tcpFlags"] == "RA" and flows[(40002, 443, "TCP")]["synPackets"] == 3
    assert flows[(40003, 25, "TCP")]["tcpFlags"] == "FSRPAUEC"
    assert flows[(40005, 25, "TCP")]["tcpFlags"] == "EC"
    for k in ((40006, 25, "TCP"), (0, 0, "TCP"), (40009, 53, "UDP")):
        assert not {"tcpFlags", "synPackets", "finPackets", "rstPackets"} & set(flows[k]), k
    # text
    text = snap.to_text()
    assert ", flags: FSPA, syn: 1, fin: 1, rst: 0" in text
    assert ", flags: RA, syn: 0, fin: 0, rst: 3" in text
    assert sum(", flags: " in line for line in text.splitlines()) == 7
    # DataFrame
    df = snap.to_pandas()
    assert [str(df.dtypes[c]) for c in ("tcp_flags", "syn_packets", "fin_packets", "rst_packets")] == [
        "uint8",
        "uint32",
        "uint32",
        "uint32",
    ]
    row = df[(df.src_port == 40001) & (df.dst_port == 80)].iloc[0]
    assert (row.tcp_flags, row.syn_packets, row.fin_packets, row.rst_packets) == (0x1B, 1, 1, 0)
    assert int(df[df.proto == "UDP"].tcp_flags.iloc[0]) == 0
    assert (
        int(df.syn_packets.sum()) == 6 and int(df.rst_packets.sum()) == 4 and int(df.fin_packets.sum()) == 3
    )


# -- the drain, the per-CPU merge and the lifetime table ------------------------


def test_drained_intervals_lifetime_and_end_records_carry_the_flags(bpf):
    """Packets of one flow on both CPUs (the per-CPU merge), in three drained
    intervals: each interval has its own OR and counts, the lifetime table
    ORs and sums them, and the idle end record carries the lifetime values."""
    from _bench import bench_core
    from pktstat_bpf import _core
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    S, T0 = 1_000_000_000, 1_700_000_000_000_000_000
    cpus = sorted(os.sched_getaffinity(0))
    r = _core.Replayer(max_entries=1024)
    r.set_flow_limits(idle_timeout_ns=10 * S, active_timeout_ns=0)

    def send(flags: str, t: int, cpu: int) -> None:
        frame = bytes(Ether() / IP(src=A4, dst=B4) / TCP(sport=40100, dport=80, flags=flags))
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        try:
            bench_core.replay_frames(r, 1, [frame], [t], [])
        finally:
            os.sched_setaffinity(0, old)

    steps = [
        [("S", cpus[0]), ("S", cpus[-1])],
        [("PA", cpus[0]), ("A", cpus[-1])],
        [("FA", cpus[-1]), ("R", cpus[0])],
    ]
    ivs = []
    for i, step in enumerate(steps):
        for j, (flags, cpu) in enumerate(step):
            send(flags, T0 + i * S + j, cpu)
        ivs.append(r.drain(T0 + (i + 1) * S))
    got = [
        tuple(int(x[0][n]) for n in ("tcp_flags", "syn_packets", "fin_packets", "rst_packets", "packets"))
        for x in (iv.records for iv in ivs)
    ]
    assert got == [(0x02, 2, 0, 0, 2), (0x18, 0, 0, 0, 2), (0x15, 0, 1, 1, 2)]
    assert [int(iv.records[0]["flow_tcp_flags"]) for iv in ivs] == [0x02, 0x1A, 0x1F]  # the OR so far
    life = r.flows()
    assert len(life) == 1
    assert (int(life[0]["tcp_flags"]), int(life[0]["syn_packets"]), int(life[0]["fin_packets"])) == (
        0x1F,
        2,
        1,
    )
    assert int(life[0]["rst_packets"]) == 1 and int(life[0]["packets"]) == 6
    ended = []
    for t in range(4, 20):
        ended += list(r.drain(T0 + t * S).ended)
    assert len(ended) == 1 and ended[0]["reason"] == _core.FLOW_END_IDLE
    e = ended[0]
    assert (int(e["tcp_flags"]), int(e["syn_packets"]), int(e["fin_packets"]), int(e["rst_packets"])) == (
        0x1F,
        2,
        1,
        1,
    )


def test_interval_rows_and_the_tui_column(replayer, tmp_path):
    """Interval rows carry the interval's SYN/FIN/RST counts and the OR so
    far; the TUI's FLAGS column shows the letters."""
    from cumulative import IntervalTracker
    from pktstat_bpf.output.table import TableModel
    from scapy.utils import wrpcap

    pkts, _ = generated_packets()
    wrpcap(str(tmp_path / "first.pcap"), pkts[:2])  # the SYN and the SYN-ACK
    wrpcap(str(tmp_path / "all.pcap"), pkts)
    tracker = IntervalTracker()
    tracker.advance(replayer.replay(tmp_path / "first.pcap"))
    iv = tracker.advance(replayer.replay(tmp_path / "all.pcap"))
    rows = {(d["srcPort"], d["dstPort"]): d for d in iv.delta.flow_dicts()}
    assert (
        rows[(40001, 80)]["tcpFlags"],
        rows[(40001, 80)]["synPackets"],
        rows[(40001, 80)]["finPackets"],
    ) == (
        "FSPA",
        0,
        1,
    )
    assert rows[(80, 40001)]["synPackets"] == 0 and rows[(40002, 443)]["synPackets"] == 3
    model = TableModel(mode="replay", where="all.pcap", attach="")
    model.update(iv)
    titles = [c.title for c in model.columns()]
    # (APP: some flows have payload looked at; RETRANS: the IPv6 SYN sent again, twice, with the
    # first's sequence number; the other segments here all carry sequence number 0, scapy's default.
    # Each replay starts without the last one's connections, so the counts are this capture's.)
    assert titles == ["BITRATE", "PACKETS", "BYTES", "PROTO", "APP", "FLAGS", "RETRANS", "SRC", "DST"]
    retrans = {row[titles.index("SRC")]: row[titles.index("RETRANS")] for row in model.visible()}
    assert retrans["[fd07::1]:40002"] == "2" and retrans["[fd07::2]:443"] == ""
    flags = {row[titles.index("SRC")]: row[titles.index("FLAGS")] for row in model.visible()}
    assert flags["10.7.0.1:40001"] == "FSPA" and flags["[fd07::2]:443"] == "RA"
    assert flags["10.7.0.1:40009"] == "" and flags["10.7.0.1:40003"] == "FSRPAUEC"


def test_cli_json_lines_and_report_carry_the_flags(bpf, tmp_path):
    import json
    import subprocess
    import sys

    from scapy.utils import wrpcap

    pkts, want = generated_packets()
    for i, p in enumerate(pkts):  # the handshake in the first second, the rest 1.5 s later
        p.time = 1_700_000_000 + (0 if i < 2 else 1.5)
    wrpcap(str(tmp_path / "flags.pcap"), pkts)
    run = [sys.executable, "-m", "pktstat_bpf", "--pcap", str(tmp_path / "flags.pcap")]
    p = subprocess.run([*run, "--jsonl", "-r", "1s"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = [r for r in map(json.loads, p.stdout.splitlines()) if "event" not in r]  # (not the end records)
    client = [r for r in rows if (r["srcPort"], r["dstPort"]) == (40001, 80) and r["packets"]]
    assert [(r["tcpFlags"], r["synPackets"], r["finPackets"]) for r in client] == [
        ("S", 1, 0),
        ("FSPA", 0, 1),
    ]
    assert not any("tcpFlags" in r for r in rows if r["proto"] == "UDP")
    p = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert sum(", flags: " in line for line in p.stdout.splitlines()) == sum(1 for v in want.values() if v[0])
