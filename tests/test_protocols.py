"""ARP, ESP, AH, GRE and OSPF flows (issue 17, protocol parity), through the
replay path (the real tc_ingress program by BPF_PROG_TEST_RUN):

- real captures of the shared corpora holding these protocols, the expected
  flows computed at test time by tshark's dissectors (``arp.opcode`` with
  ``arp.src.proto_ipv4``/``arp.dst.proto_ipv4``, ``esp.spi``, ``ah.spi``,
  ``gre.flags_and_version``, ``gre.proto``, ``ospf.msg``, ``ospf.version``):
  per flow, the fields and the packet and byte counts equal tshark's;
- a scapy-made capture with known values, shown in JSON (pktstat-bpf's field
  names and values), text, the DataFrame, and with ``arp=False``/``--no-arp``.

The live ARP tests (TC and XDP on a veth pair) are in test_protocols_live.py.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

PCAPS = Path(os.environ.get("PKTSTAT_BPF_PCAPS", Path(__file__).resolve().parents[2] / "shared" / "pcaps"))

# Found with tshark (-Y "arp or esp or ah or gre or ospf") over both corpora:
# every file whose outermost IP header carries ESP, AH, GRE or OSPF, or that
# holds Ethernet/IPv4 ARP. test_fields_and_counts_equal_tsharks keeps
# the list honest. arp-too-long-tha.pcap holds ARP that is not Ethernet/IPv4
# (a longer hardware address): it must stay unparsed, so no flow is expected.
NOT_KEYED = {"corpus/arp-too-long-tha.pcap"}
FILES = [
    "ndpi/ah.pcapng",
    "ndpi/esp.pcapng",
    "ndpi/gre.pcapng",
    "ndpi/ospfv2_add_new_prefix.pcap",
    "ndpi/android.pcap",
    "ndpi/anyconnect-vpn.pcap",
    "ndpi/capwap.pcap",
    "ndpi/icmp-tunnel.pcap",
    "ndpi/log4j-webapp-exploit.pcap",
    "ndpi/nest_log_sink.pcap",
    "ndpi/tcp_scan.pcapng",
    "ndpi/tor.pcap",
    "corpus/08-sunrise-sunset-esp2.pcap",
    "corpus/802.1ad_QinQ.pcap",
    "corpus/NHRP-responder-address.pcap",
    "corpus/OSPFv2_Capture_FINAL.pcapng",
    "corpus/OSPFv3_with_AH.pcap",
    "corpus/arp-too-long-tha.pcap",
    "corpus/bgp-4byte-asn.pcap",
    "corpus/erspan-type-i-4.pcap",
    "corpus/erspan-type-iii-ft-7.pcap",
    "corpus/gre-heapoverflow-2.pcap",
    "corpus/ios_nhrp.pcap",
    "corpus/isakmp4500.pcap",
    "corpus/nhrp.pcapng",
    "corpus/ospf-ack.pcap",
    "corpus/ospf-sr2.pcapng",
    "corpus/ospf2-seg-fault-1.pcapng",
    "corpus/ospf3_auth.pcapng",
    "corpus/ospf6_decode_v3_asan.pcap",
    "corpus/ospf6_print_lshdr-oobr.pcap",
    "corpus/ospf_graceful_restart_rfc3623.pcap",
]
FIELDS = [
    "frame.len",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ip.frag_offset",
    "ipv6.src",
    "ipv6.dst",
    "arp.hw.type",
    "arp.proto.type",
    "arp.hw.size",
    "arp.proto.size",
    "arp.opcode",
    "arp.src.proto_ipv4",
    "arp.dst.proto_ipv4",
    "esp.spi",
    "ah.spi",
    "gre.flags_and_version",
    "gre.proto",
    "ospf.msg",
    "ospf.version",
]
WALKED = {"eth", "ethertype", "vlan", "ieee8021ad", "sll", "raw", "null", "loop"}
IPV6_EXT = {"ipv6.hopopts", "ipv6.routing", "ipv6.fraghdr", "ipv6.dstopts", "ipv6.shim6", "ah"}
NAMES = {"arp": "ARP", "esp": "IPSEC-ESP", "ah": "IPSEC-AH", "gre": "GRE", "ospf": "OSPFIGP"}


def _int(v: str) -> int:
    return int(v, 0)


def tshark_flows(path: Path) -> Counter:
    """{(proto, src, dst, field1, field2): packets} (+ "bytes" keys) of the
    frames our parser keys as ARP, ESP, AH, GRE or OSPF flows, per tshark."""
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=f", "-E", "separator=/t"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, errors="replace").stdout
    flows: Counter = Counter()
    for line in out.splitlines():
        c = dict(zip(FIELDS, line.split("\t")))
        layers = c["frame.protocols"].split(":")
        key = _key(c, layers)
        if key is not None:
            flows[key] += 1
            flows[(*key, "bytes")] += int(c["frame.len"])
    return flows


def _key(c: dict, layers: list) -> tuple | None:
    ip_at = next((i for i, layer in enumerate(layers) if layer in ("ip", "ipv6", "arp")), None)
    if ip_at is None or any(layer not in WALKED for layer in layers[:ip_at]):
        return None
    if layers[ip_at] == "arp":
        sizes = tuple(_int(c[f"arp.{k}"]) if c[f"arp.{k}"] else -1 for k in ("hw.type", "proto.type"))
        sizes += tuple(_int(c[f"arp.{k}"]) if c[f"arp.{k}"] else -1 for k in ("hw.size", "proto.size"))
        if sizes != (1, 0x0800, 6, 4) or not c["arp.dst.proto_ipv4"]:
            return None  # not Ethernet/IPv4 ARP, or cut short: unparsed
        return ("ARP", c["arp.src.proto_ipv4"], c["arp.dst.proto_ipv4"], _int(c["arp.opcode"]), 0)
    v4 = layers[ip_at] == "ip"
    after = layers[ip_at + 1 :] if v4 else [layer for layer in layers[ip_at + 1 :] if layer not in IPV6_EXT]
    upper = after[0] if after else ""
    if upper not in NAMES or (v4 and c["ip.frag_offset"] not in ("", "0")):
        return None
    src, dst = (c["ip.src"], c["ip.dst"]) if v4 else (c["ipv6.src"], c["ipv6.dst"])
    if upper in ("esp", "ah"):
        spi = _int(c[f"{upper}.spi"])
        fields = (spi >> 16, spi & 0xFFFF)
    elif upper == "gre":
        fields = (_int(c["gre.proto"]), _int(c["gre.flags_and_version"]))
    else:
        fields = (_int(c["ospf.msg"]), _int(c["ospf.version"]))
    return (NAMES[upper], src, dst, *fields)


def our_flows(snap) -> Counter:
    flows: Counter = Counter()
    for f in snap.flows():
        if f["proto"] not in NAMES.values():
            continue
        key = (f["proto"], f["srcIp"], f["dstIp"], f["srcPort"], f["dstPort"])
        flows[key] += f["packets"]
        flows[(*key, "bytes")] += f["bytes"]
    return flows


@pytest.fixture(scope="module")
def replayer(bpf):
    import pktstat_bpf

    return pktstat_bpf.Replayer(max_entries=1 << 16)


def _need_corpora() -> None:
    if not shutil.which("tshark"):
        pytest.skip("tshark is not installed (make setup installs it)")
    if not (PCAPS / "ndpi").is_dir() or not (PCAPS / "corpus").is_dir():
        pytest.skip(f"the shared captures are missing ({PCAPS}); set PKTSTAT_BPF_PCAPS")


@pytest.mark.parametrize("name", FILES)
def test_fields_and_counts_equal_tsharks(name, replayer):
    _need_corpora()
    theirs = tshark_flows(PCAPS / name)
    assert bool(theirs) == (name not in NOT_KEYED), f"{name}: what tshark finds that we key"
    snap = replayer.replay(PCAPS / name)
    assert snap.totals.conserved
    if name in NOT_KEYED:
        assert snap.totals.all.unparsed_packets == snap.totals.all.packets
    ours = our_flows(snap)
    diff = {k: (ours.get(k, 0), theirs.get(k, 0)) for k in set(ours) | set(theirs) if ours[k] != theirs[k]}
    assert diff == {}, "(ours, tshark)"


def test_each_protocol_is_covered_by_the_captures():
    _need_corpora()
    seen = set()
    for name in FILES:
        seen |= {k[0] for k in tshark_flows(PCAPS / name)}
    assert seen == set(NAMES.values())


# ---- a capture with known values ---------------------------------------------------
A4, B4, C4 = "10.0.0.1", "10.0.0.2", "192.0.2.7"
A6, B6 = "fd00::1", "2001:db8::2"
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


def _ip(proto: int, payload: bytes, v6: bool = False) -> bytes:
    l3 = IPv6(src=A6, dst=B6, nh=proto) if v6 else IP(src=A4, dst=C4, proto=proto)
    return bytes(Ether(**MAC) / l3 / Raw(payload))


# (frame, count, expected key (proto, src, dst, sport, dport) or None = unparsed, JSON fields)
KNOWN = [
    (Ether(**MAC) / ARP(op=1, psrc=A4, pdst=B4), 3, ("ARP", A4, B4, 1, 0), {"arpOp": "request"}),
    (Ether(**MAC) / ARP(op=2, psrc=B4, pdst=A4), 2, ("ARP", B4, A4, 2, 0), {"arpOp": "reply"}),
    (
        Ether(**MAC) / Dot1Q(vlan=7) / ARP(op=3, psrc=B4, pdst=A4),
        1,
        ("ARP", B4, A4, 3, 0),
        {"arpOp": "rev-req"},
    ),
    (Ether(**MAC) / ARP(op=9, psrc=B4, pdst=A4), 1, ("ARP", B4, A4, 9, 0), {"arpOp": "9"}),
    (Ether(**MAC) / ARP(hwtype=6, op=1, psrc=A4, pdst=B4), 2, None, {}),  # IEEE 802, not Ethernet
    (bytes(Ether(**MAC) / ARP(op=1, psrc=A4, pdst=B4))[:41], 1, None, {}),  # 27 of 28 bytes
    (
        _ip(50, struct.pack("!II", 0xDEADBEEF, 1) + bytes(16)),
        4,
        ("IPSEC-ESP", A4, C4, 0xDEAD, 0xBEEF),
        {"spi": 0xDEADBEEF},
    ),
    (_ip(50, struct.pack("!II", 7, 1), v6=True), 1, ("IPSEC-ESP", A6, B6, 0, 7), {"spi": 7}),
    (_ip(50, struct.pack("!I", 9) + bytes(3)), 1, ("IPSEC-ESP", A4, C4, 0, 0), {"spi": 0}),  # 7 bytes: no SPI
    (
        _ip(51, struct.pack("!BBHII", 6, 4, 0, 0x00012345, 1) + bytes(12) + bytes(TCP(sport=1, dport=2))),
        2,
        ("IPSEC-AH", A4, C4, 0x0001, 0x2345),
        {"spi": 0x12345},
    ),
    (
        _ip(47, struct.pack("!HH", 0x2000, 0x0800) + bytes(24)),
        5,
        ("GRE", A4, C4, 0x0800, 0x2000),
        {"greFlags": 0x2000, "greInner": "IPv4"},
    ),
    (
        _ip(47, struct.pack("!HH", 0x0001, 0x880B) + bytes(8), v6=True),
        1,
        ("GRE", A6, B6, 0x880B, 1),
        {"greFlags": 1, "greInner": "0x880b"},
    ),
    (
        _ip(89, struct.pack("!BBH", 2, 1, 44) + bytes(40)),
        6,
        ("OSPFIGP", A4, C4, 1, 2),
        {"ospfType": "Hello", "ospfVersion": 2},
    ),
    (
        _ip(89, struct.pack("!BBH", 3, 4, 16) + bytes(12), v6=True),
        1,
        ("OSPFIGP", A6, B6, 4, 3),
        {"ospfType": "LSUpd", "ospfVersion": 3},
    ),
    (_ip(254, bytes(8)), 2, ("Experimental-254", A4, C4, 0, 0), {}),  # IP protocol 254 is not ARP
]
# IPv6: AH is walked as an extension header; the TCP behind it is the flow
V6_AH_TCP = bytes(
    Ether(**MAC)
    / IPv6(src=A6, dst=B6)
    / IPv6ExtHdrHopByHop(nh=51)
    / Raw(struct.pack("!BBHII", 6, 4, 0, 0x77, 1) + bytes(12) + bytes(TCP(sport=5, dport=6)))
)


@pytest.fixture(scope="module")
def known_pcap(tmp_path_factory) -> Path:
    frames = [bytes(f) for f, n, _, _ in KNOWN for _ in range(n)] + [V6_AH_TCP]
    path = tmp_path_factory.mktemp("proto") / "known.pcap"
    wrpcap(str(path), [Ether(f) for f in frames])
    return path


def _expected(arp: bool) -> tuple[Counter, list[int]]:
    flows: Counter = Counter()
    unparsed = [0, 0]
    for f, n, key, _ in KNOWN:
        size = len(bytes(f))
        if key is None or (key[0] == "ARP" and not arp):
            unparsed[0] += n
            unparsed[1] += n * size
        else:
            flows[key] += n
            flows[(*key, "bytes")] += n * size
    k = ("TCP", A6, B6, 5, 6)
    flows[k] += 1
    flows[(*k, "bytes")] += len(V6_AH_TCP)
    return flows, unparsed


def _flows(snap) -> Counter:
    out: Counter = Counter()
    for f in snap.flows():
        k = (f["proto"], f["srcIp"], f["dstIp"], f["srcPort"], f["dstPort"])
        out[k] += f["packets"]
        out[(*k, "bytes")] += f["bytes"]
    return out


@pytest.mark.parametrize("arp", [True, False])
def test_known_values_and_no_arp(known_pcap, arp, bpf):
    import pktstat_bpf

    snap = pktstat_bpf.Replayer(arp=arp).replay(known_pcap)
    flows, unparsed = _expected(arp)
    assert _flows(snap) == flows
    a = snap.totals.all
    assert [a.unparsed_packets, a.unparsed_bytes] == unparsed
    assert a.packets == sum(n for _, n, _, _ in KNOWN) + 1
    assert snap.totals.conserved
    fields = {k: want for _, _, k, want in KNOWN if k is not None}
    for f in snap.flows():
        k = (f["proto"], f["srcIp"], f["dstIp"], f["srcPort"], f["dstPort"])
        extra = {
            n: f[n] for n in ("arpOp", "spi", "greFlags", "greInner", "ospfType", "ospfVersion") if n in f
        }
        assert extra == fields.get(k, {}), k


def test_text_and_dataframe(known_pcap, bpf):
    pd = pytest.importorskip("pandas")
    import pktstat_bpf

    snap = pktstat_bpf.Replayer().replay(known_pcap)
    text = snap.to_text()
    for line in (
        f"proto: ARP, src: {A4}, dst: {B4}, op: request",
        f"proto: IPSEC-ESP, src: {A4}, dst: {C4}, spi: 0xdeadbeef",
        f"proto: IPSEC-AH, src: {A4}, dst: {C4}, spi: 0x00012345",
        f"proto: GRE, src: {A4}, dst: {C4}, inner: IPv4, flags: 0x2000",
        f"proto: OSPFIGP, src: {A6}, dst: {B6}, type: LSUpd, version: 3",
    ):
        assert sum(line in t for t in text.splitlines()) == 1, line
    df = snap.to_pandas()
    assert isinstance(df["proto"].dtype, pd.CategoricalDtype)
    by_proto = df.groupby("proto", observed=True)["packets"].sum().to_dict()
    assert by_proto["ARP"] == 3 + 2 + 1 + 1 and by_proto["Experimental-254"] == 2
    esp = df[(df["proto"] == "IPSEC-ESP") & (df["src_ip"] == A4) & (df["src_port"] > 0)]
    assert (int(esp["src_port"].iloc[0]) << 16 | int(esp["dst_port"].iloc[0])) == 0xDEADBEEF


def test_cli_no_arp_and_json(known_pcap, bpf, capsys):
    from pktstat_bpf.cli import main

    assert main(["--pcap", str(known_pcap), "-j"]) == 0
    doc = json.loads(capsys.readouterr().out)
    arp = [f for f in doc["flows"] if f["proto"] == "ARP"]
    assert sorted((f["srcIp"], f["dstIp"], f["arpOp"], f["packets"]) for f in arp) == [
        (A4, B4, "request", 3),
        (B4, A4, "9", 1),
        (B4, A4, "reply", 2),
        (B4, A4, "rev-req", 1),
    ]
    assert main(["--pcap", str(known_pcap), "-j", "--no-arp"]) == 0
    doc2 = json.loads(capsys.readouterr().out)
    assert not [f for f in doc2["flows"] if f["proto"] == "ARP"]
    # the 7 ARP flows' frames join the 3 frames that were unparsed already
    assert doc2["totals"]["unparsedPackets"] == doc["totals"]["unparsedPackets"] + 7 == 3 + 7
    assert main(["-k", "--no-arp"]) == 2
    assert (
        capsys.readouterr().err.strip().endswith("--no-arp applies to TC, XDP and --pcap: sockets see no ARP")
    )


def test_jsonl_and_tui_show_the_fields(known_pcap, bpf, capsys):
    import pktstat_bpf
    from pktstat_bpf.cli import main
    from pktstat_bpf.output import table

    assert main(["--pcap", str(known_pcap), "--jsonl"]) == 0
    lines = [d for d in map(json.loads, capsys.readouterr().out.splitlines()) if "event" not in d]
    gre = [d for d in lines if d["proto"] == "GRE" and d["srcIp"] == A4]
    assert [(d["greInner"], d["greFlags"], d["totalPackets"]) for d in gre] == [("IPv4", 0x2000, 5)]
    rows = {}  # each flow's row in the interval it sent in (its lifetime packets in column 1)
    for iv in pktstat_bpf.Replayer().intervals(known_pcap, 3600.0):
        # (proto, source, destination: the last two cells, after the FLAGS a TCP flow brings)
        rows.update({(r[3], r[-2], r[-1]): r for r in table.cells(iv, table.order_rows(iv, "bitrate"))})
    assert rows[("ARP", A4, f"{B4} request")][1] == "3"
    assert rows[("IPSEC-ESP", A4, f"{C4} spi 0xdeadbeef")][1] == "4"
    assert rows[("GRE", A4, f"{C4} inner IPv4 flags 0x2000")][1] == "5"
    assert rows[("OSPFIGP", A4, f"{C4} Hello v2")][1] == "6"
