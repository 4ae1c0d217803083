"""The parser rules of src/bpf/parse.bpf.h, pinned frame by frame through the
replay path (the real tc_ingress program by BPF_PROG_TEST_RUN): packets
crafted with scapy, exact keys and counters, truncation at every byte
boundary, and a fuzz of random and mutated frames checked against an
independent model (tests/parser_model.py). The conservation invariant is
checked after every case.
"""

from __future__ import annotations

import itertools
import random
import struct

import pytest

pytest.importorskip("scapy")
import parser_model
from _bench import bench_core
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

A4, B4 = "10.1.2.3", "192.0.2.9"
A6, B6 = "fd00::1", "2001:db8::2"
TS = 1_700_000_000_123_456_789


def eth(etype=None):
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    if etype is not None:
        e.type = etype
    return e


def ipv4_options(words: int, l4, **ip) -> bytes:
    """IPv4 with `words` 4-byte words of NOP options, then `l4`."""
    raw = bytearray(bytes(IP(src=A4, dst=B4, **ip) / l4))
    raw = raw[:20] + b"\x01" * (4 * words) + raw[20:]
    raw[0] = 0x40 | (5 + words)
    struct.pack_into("!H", raw, 2, len(raw))
    struct.pack_into("!H", raw, 10, 0)
    return bytes(raw)


class Runner:
    """One Replayer; each case starts from an empty table."""

    def __init__(self) -> None:
        from pktstat_bpf import _core

        self.r = _core.Replayer(max_entries=4096)

    def run(self, frames, dlt=1, wire=None, ts=None):
        self.r.clear()
        frames = [bytes(f) for f in frames]
        ts = ts if ts is not None else [TS + i for i in range(len(frames))]
        bench_core.replay_frames(self.r, dlt, frames, ts, wire or [])
        recs, stats = self.r.read_flows(), self.r.read_stats()
        return recs, stats

    def one(self, frame, dlt=1, wire=None):
        """Run one frame: (key or None, its byte count), checking the counters."""
        frame = bytes(frame)
        n = wire if wire is not None else len(frame)
        recs, stats = self.run([frame], dlt, [n])
        none = stats[2]
        assert int(stats[0]["packets"]) == int(stats[1]["packets"]) == 0
        assert (int(none["packets"]), int(none["bytes"])) == (1, n)
        assert int(none["overflow_packets"]) == 0
        if len(recs) == 0:
            assert (int(none["unparsed_packets"]), int(none["unparsed_bytes"])) == (1, n)
            return None
        assert int(none["unparsed_packets"]) == 0 and int(none["unparsed_bytes"]) == 0
        assert len(recs) == 1
        r = recs[0]
        assert (int(r["packets"]), int(r["bytes"])) == (1, n)
        assert int(r["first_seen"].astype("int64")) == int(r["last_seen"].astype("int64")) == TS
        assert (int(r["dir"]), int(r["ifindex"]), int(r["pid"]), int(r["cgroup_id"])) == (2, 0, 0, 0)
        return key_of(r)


def key_of(r):
    from pktstat_bpf.core.addresses import format_addr

    v = int(r["ipver"])
    return (
        format_addr(bytes(r["saddr"]), v),
        format_addr(bytes(r["daddr"]), v),
        int(r["proto"]),
        int(r["sport"]),
        int(r["dport"]),
        v,
    )


def model_key(k):
    from pktstat_bpf.core.addresses import format_addr

    s, d, sp, dp, proto, v = k
    return (format_addr(s, v), format_addr(d, v), proto, sp, dp, v)


@pytest.fixture(scope="module")
def rp(bpf):
    return Runner()


# ---- Ethernet and VLANs -----------------------------------------------------
UDP4 = IP(src=A4, dst=B4) / UDP(sport=1234, dport=53) / Raw(b"x" * 10)
K_UDP4 = (A4, B4, 17, 1234, 53, 4)


def test_plain_ipv4_udp(rp):
    assert rp.one(eth() / UDP4) == K_UDP4


@pytest.mark.parametrize(
    "tags",
    [[Dot1Q(vlan=5)], [Dot1AD(vlan=7), Dot1Q(vlan=5)], [Dot1Q(vlan=1), Dot1Q(vlan=2)]],
    ids=["802.1Q", "QinQ-88a8", "QinQ-8100x2"],
)
def test_vlan_tags_are_walked(rp, tags):
    pkt = eth()
    for t in tags:
        pkt = pkt / t
    assert rp.one(pkt / UDP4) == K_UDP4


def test_0x9100_outer_tag(rp):
    pkt = eth(0x9100) / Dot1Q(vlan=3) / UDP4
    raw = bytearray(bytes(pkt))
    assert raw[12:14] == b"\x91\x00"
    assert rp.one(raw) == K_UDP4


def test_three_vlan_tags_are_unparsed(rp):
    assert rp.one(eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / UDP4) is None


@pytest.mark.parametrize("etype", [0x0806, 0x88CC, 0x8847, 0x0000, 0x05DC])
def test_non_ip_ethertypes_are_unparsed(rp, etype):
    assert rp.one(eth(etype) / Raw(bytes(60))) is None


# ---- IPv4 header rules -------------------------------------------------------
@pytest.mark.parametrize("opt_words", range(0, 11))
def test_ipv4_options_are_skipped(rp, opt_words):
    raw = ipv4_options(opt_words, TCP(sport=40000, dport=443))
    assert rp.one(bytes(eth(0x0800)) + raw) == (A4, B4, 6, 40000, 443, 4)


@pytest.mark.parametrize("ihl", range(0, 5))
def test_ipv4_ihl_below_5_is_unparsed(rp, ihl):
    assert rp.one(eth() / IP(src=A4, dst=B4, ihl=ihl) / UDP(sport=1, dport=2) / Raw(bytes(40))) is None


def test_ipv4_ihl_beyond_the_frame_is_unparsed(rp):
    raw = bytearray(bytes(eth() / IP(src=A4, dst=B4) / UDP(sport=1, dport=2)))
    raw[14] = 0x4F  # 60-byte header, 28 bytes captured after the Ethernet header
    assert rp.one(raw) is None


@pytest.mark.parametrize("version", [0, 5, 6, 15])
def test_ipv4_ethertype_with_other_version_is_unparsed(rp, version):
    raw = bytearray(bytes(eth() / UDP4))
    raw[14] = (version << 4) | 5
    assert rp.one(raw) is None


@pytest.mark.parametrize(
    "tot_len, want",
    [
        (0, K_UDP4),  # TSO / BIG TCP: the datagram runs to the frame's end
        (1, None),
        (19, None),  # shorter than the header: malformed
        (20, (A4, B4, 17, 0, 0, 4)),  # no room for a UDP header
        (27, (A4, B4, 17, 0, 0, 4)),  # 7 bytes of UDP: still short
        (28, K_UDP4),  # exactly the UDP header
        (38, K_UDP4),  # the truth
        (1500, K_UDP4),
        (65535, K_UDP4),  # claims more than captured: ports are in the frame
    ],
)
def test_ipv4_total_length_lies(rp, tot_len, want):
    assert (
        rp.one(eth() / IP(src=A4, dst=B4, len=tot_len) / UDP(sport=1234, dport=53) / Raw(b"x" * 10)) == want
    )


@pytest.mark.parametrize(
    "flags, frag, ports",
    [("MF", 0, True), ("MF", 1, False), (0, 185, False), ("MF", 8191, False), ("DF", 0, True)],
    ids=["first", "middle-at-8", "last", "max-offset", "DF-unfragmented"],
)
def test_ipv4_fragments(rp, flags, frag, ports):
    pkt = (
        eth()
        / IP(src=A4, dst=B4, flags=flags, frag=frag, proto=17)
        / UDP(sport=1234, dport=53)
        / Raw(b"y" * 30)
    )
    assert rp.one(pkt) == (A4, B4, 17, 1234 if ports else 0, 53 if ports else 0, 4)


# ---- ICMP ----------------------------------------------------------------------
@pytest.mark.parametrize("typ, code", [(8, 0), (0, 0), (3, 13), (11, 1), (255, 255)])
def test_icmp_type_and_code(rp, typ, code):
    assert rp.one(eth() / IP(src=A4, dst=B4) / ICMP(type=typ, code=code)) == (A4, B4, 1, typ, code, 4)


def test_icmpv6_type_and_code(rp):
    assert rp.one(eth() / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest()) == (A6, B6, 58, 128, 0, 6)
    pkt = eth() / IPv6(src=A6, dst=B6) / ICMPv6DestUnreach(code=4) / Raw(bytes(8))
    assert rp.one(pkt) == (A6, B6, 58, 1, 4, 6)


# ---- IPv6 extension headers --------------------------------------------------
EXT_TYPES = {"hop": 0, "rt": 43, "frag": 44, "dst": 60, "ah": 51}


def ext_chain(names, upper=17, frag_offset=0, frag_m=0):
    """Raw IPv6 extension headers in order, the last pointing at `upper`."""
    out = b""
    for i, name in enumerate(names):
        nh = EXT_TYPES[names[i + 1]] if i + 1 < len(names) else upper
        if name == "hop":
            out += bytes(IPv6ExtHdrHopByHop(nh=nh))
        elif name == "dst":
            out += bytes([nh, 1]) + bytes(14)  # 16 bytes (len=1) of Pad1 options
        elif name == "rt":
            out += bytes(IPv6ExtHdrRouting(nh=nh, addresses=[B6]))  # 24 bytes: len=2
        elif name == "frag":
            out += bytes(IPv6ExtHdrFragment(nh=nh, offset=frag_offset, m=frag_m, id=7))
        elif name == "ah":
            out += bytes([nh, 4]) + bytes(2) + struct.pack("!II", 0x100, 1) + bytes(12)  # 24 bytes: (4+2)*4
    return out


def v6_frame(names, l4=None, upper=17, **kw):
    l4 = bytes(UDP(sport=5353, dport=53) / Raw(b"q" * 12)) if l4 is None else l4
    ext = ext_chain(names, upper, **kw)
    ip = IPv6(src=A6, dst=B6, nh=EXT_TYPES[names[0]] if names else upper, plen=len(ext) + len(l4))
    return bytes(eth() / ip) + ext + l4


def _chains():
    names = list(EXT_TYPES)
    out = [()]
    out += [(n,) for n in names]
    out += list(itertools.product(names, repeat=2))
    rnd = random.Random(3)
    for length in range(3, 9):
        for _ in range(12):
            out.append(tuple(rnd.choice(names) for _ in range(length)))
    out.append(("hop", "dst", "rt", "frag", "ah", "dst", "ah", "dst"))  # 8: the most that is walked
    return out


@pytest.mark.parametrize("names", _chains(), ids=lambda c: "-".join(c) or "none")
def test_ipv6_extension_header_chains(rp, names):
    assert rp.one(v6_frame(list(names))) == (A6, B6, 17, 5353, 53, 6)


def test_ipv6_tcp_after_headers(rp):
    l4 = bytes(TCP(sport=50000, dport=22))
    assert rp.one(v6_frame(["hop", "ah"], l4=l4, upper=6)) == (A6, B6, 6, 50000, 22, 6)


def test_ipv6_nine_extension_headers_stop_the_walk(rp):
    names = ["dst"] * 9
    # the walk gives up at the 9th header: proto is its type, no ports
    assert rp.one(v6_frame(names)) == (A6, B6, 60, 0, 0, 6)


@pytest.mark.parametrize("m", [0, 1])
def test_ipv6_first_fragment_has_ports(rp, m):
    assert rp.one(v6_frame(["frag"], frag_m=m)) == (A6, B6, 17, 5353, 53, 6)


@pytest.mark.parametrize("names", [["frag"], ["hop", "frag"], ["hop", "rt", "frag", "dst"]])
def test_ipv6_non_first_fragment_has_no_ports(rp, names):
    # proto: the fragment header's next header; nothing after it is read
    assert rp.one(v6_frame(names, frag_offset=100)) == (
        A6,
        B6,
        EXT_TYPES[names[names.index("frag") + 1]] if names[-1] != "frag" else 17,
        0,
        0,
        6,
    )


def test_ipv6_payload_length_limits_l4(rp):
    f = bytearray(v6_frame([]))
    struct.pack_into("!H", f, 18, 7)  # payload length 7: a UDP header does not fit
    assert rp.one(f) == (A6, B6, 17, 0, 0, 6)
    struct.pack_into("!H", f, 18, 0)  # 0: jumbogram, no limit from the header
    assert rp.one(f) == (A6, B6, 17, 5353, 53, 6)


def test_ipv6_esp_stops_the_walk(rp):
    ext = ext_chain(["hop"], upper=50) + struct.pack("!II", 1, 1) + bytes(16)
    f = bytes(eth() / IPv6(src=A6, dst=B6, nh=0, plen=len(ext))) + ext
    assert rp.one(f) == (A6, B6, 50, 0, 1, 6)  # ESP is the upper layer: SPI 1 in the port slots


# ---- truncation at every byte boundary --------------------------------------
def _cuts(frame: bytes, thresholds):
    """Expected result for each captured length n (0..len): `thresholds` is
    [(from_n, expected)], the last entry with from_n <= n applies."""
    out = []
    for n in range(len(frame) + 1):
        want = None
        for start, exp in thresholds:
            if n >= start:
                want = exp
        out.append((n, want))
    return out


TRUNCATION_CASES = {
    # Ethernet(14) IPv4 with 8 bytes of options (28) TCP(20)
    "ipv4-options-tcp": (
        bytes(eth(0x0800)) + ipv4_options(2, TCP(sport=1000, dport=80)),
        [(0, None), (14 + 28, (A4, B4, 6, 0, 0, 4)), (14 + 28 + 20, (A4, B4, 6, 1000, 80, 4))],
    ),
    # Ethernet 802.1Q(4) IPv4(20) ICMP(8)
    "vlan-ipv4-icmp": (
        bytes(eth() / Dot1Q(vlan=9) / IP(src=A4, dst=B4) / ICMP(type=8)),
        [(0, None), (18 + 20, (A4, B4, 1, 0, 0, 4)), (18 + 24, (A4, B4, 1, 8, 0, 4))],
    ),
    # Ethernet IPv4 UDP
    "ipv4-udp": (bytes(eth() / UDP4), [(0, None), (34, (A4, B4, 17, 0, 0, 4)), (42, K_UDP4)]),
    # Ethernet IPv6(40) hop(8) frag(8) UDP(8)
    "ipv6-hop-frag-udp": (
        v6_frame(["hop", "frag"]),
        [
            (0, None),
            (54, (A6, B6, 0, 0, 0, 6)),  # the hop-by-hop header's first 2 bytes are missing
            (56, (A6, B6, 44, 0, 0, 6)),  # the fragment header (8 bytes) is incomplete
            (70, (A6, B6, 17, 0, 0, 6)),  # UDP header incomplete
            (78, (A6, B6, 17, 5353, 53, 6)),
        ],
    ),
    # Ethernet IPv6 AH(24) TCP(20)
    "ipv6-ah-tcp": (
        v6_frame(["ah"], l4=bytes(TCP(sport=7, dport=9)), upper=6),
        [(0, None), (54, (A6, B6, 51, 0, 0, 6)), (56, (A6, B6, 6, 0, 0, 6)), (98, (A6, B6, 6, 7, 9, 6))],
    ),
    # QinQ IPv6 ICMPv6
    "qinq-ipv6-icmpv6": (
        bytes(eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest()),
        [(0, None), (62, (A6, B6, 58, 0, 0, 6)), (66, (A6, B6, 58, 128, 0, 6))],
    ),
}


@pytest.mark.parametrize("case", sorted(TRUNCATION_CASES))
def test_truncated_at_every_byte(rp, case):
    frame, thresholds = TRUNCATION_CASES[case]
    for n, want in _cuts(frame, thresholds):
        got = rp.one(frame[:n], wire=len(frame))  # bytes are the wire length, whatever was captured
        assert got == want, f"{case} captured {n} of {len(frame)} bytes"


# ---- link types ----------------------------------------------------------------
def test_link_types_reach_the_same_key(rp):
    ip4 = bytes(UDP4)
    ip6 = bytes(IPv6(src=A6, dst=B6) / UDP(sport=1, dport=2))
    sll = lambda proto, body: struct.pack("!HHH8sH", 0, 1, 6, bytes(8), proto) + body  # noqa: E731
    sll2 = lambda proto, body: struct.pack("!HHIHBB8s", proto, 0, 1, 1, 0, 6, bytes(8)) + body  # noqa: E731
    k6 = (A6, B6, 17, 1, 2, 6)
    cases = [
        (113, sll(0x0800, ip4), K_UDP4),
        (113, sll(0x86DD, ip6), k6),
        (276, sll2(0x0800, ip4), K_UDP4),
        (276, sll2(0x86DD, ip6), k6),
        (12, ip4, K_UDP4),
        (12, ip6, k6),
        (14, ip4, K_UDP4),
        (101, ip6, k6),
        (228, ip4, K_UDP4),
        (229, ip6, k6),
    ]
    for dlt in (0, 108):
        for order in ("<I", ">I"):
            cases.append((dlt, struct.pack(order, 2) + ip4, K_UDP4))
            for af6 in (24, 28, 30):
                cases.append((dlt, struct.pack(order, af6) + ip6, k6))
            cases.append((dlt, struct.pack(order, 10) + ip6, None))  # Linux's AF_INET6: not a BSD value
    for dlt, frame, want in cases:
        assert rp.one(frame, dlt=dlt) == want, (dlt, frame[:8].hex())


@pytest.mark.parametrize("dlt, header", [(1, 14), (113, 16), (276, 20), (0, 4), (108, 4)])
def test_incomplete_link_header_is_unparsed_by_the_engine(rp, dlt, header):
    for n in range(header):
        assert rp.one(bytes([0x45]) * n, dlt=dlt, wire=1000) is None
    assert rp.r.counters["engine_unparsed_frames"] == 1


def test_frames_longer_than_the_test_run_limit_are_clipped(rp):
    big = bytes(eth() / IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / Raw(bytes(9000)))
    assert rp.one(big) == (A4, B4, 17, 1, 2, 4)
    assert rp.r.counters["clipped_frames"] == 1
    assert bench_core.replay_max_data(rp.r) >= 1514


# ---- fuzz against the model --------------------------------------------------
def _templates():
    return [
        bytes(eth() / UDP4),
        bytes(eth() / Dot1Q(vlan=3, type=0x0800)) + ipv4_options(1, TCP(sport=9, dport=10)),
        bytes(eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / IP(src=A4, dst=B4) / ICMP()),
        bytes(eth() / IP(src=A4, dst=B4, flags="MF") / UDP(sport=1, dport=2) / Raw(bytes(20))),
        v6_frame(["hop", "rt", "frag", "dst", "ah"]),
        v6_frame(["frag"], frag_offset=3),
        v6_frame([], l4=bytes(TCP(sport=3, dport=4)), upper=6),
        bytes(eth() / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest()),
        bytes(eth() / ARP(op=2, psrc=A4, pdst=B4)),
        bytes(eth() / Dot1Q(vlan=4) / ARP(op=1, psrc=A4, pdst=B4)),
        bytes(eth() / IP(src=A4, dst=B4, proto=50) / Raw(struct.pack("!II", 0xDEADBEEF, 1) + bytes(8))),
        bytes(
            eth() / IP(src=A4, dst=B4, proto=51) / Raw(struct.pack("!BBHII", 6, 4, 0, 0x1234, 1) + bytes(12))
        ),
        bytes(eth() / IP(src=A4, dst=B4, proto=47) / Raw(struct.pack("!HH", 0x2000, 0x0800) + bytes(24))),
        bytes(eth() / IPv6(src=A6, dst=B6, nh=89) / Raw(struct.pack("!BBH", 3, 1, 16) + bytes(12))),
    ]


def _fuzz_frames(rnd: random.Random, count: int):
    templates = _templates()
    frames = []
    for _ in range(count):
        kind = rnd.random()
        if kind < 0.3:  # random bytes behind a random (often IP or VLAN) ethertype
            body = rnd.randbytes(rnd.randrange(0, 120))
            etype = rnd.choice([0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100, 0x0806, rnd.randrange(1 << 16)])
            f = bytes(12) + struct.pack("!H", etype) + body
            if rnd.random() < 0.5 and len(f) > 14:  # make the IP version plausible
                f = f[:14] + bytes([(4 if etype == 0x0800 else 6) << 4 | (f[14] & 15)]) + f[15:]
            frames.append(f[: rnd.randrange(0, len(f) + 1)] if rnd.random() < 0.2 else f)
        elif kind < 0.4:  # pure random bytes
            frames.append(rnd.randbytes(rnd.randrange(0, 80)))
        else:  # a valid frame with a few random bytes and maybe truncated
            f = bytearray(rnd.choice(templates))
            for _ in range(rnd.randrange(1, 4)):
                f[rnd.randrange(12, min(len(f), 110))] = rnd.randrange(256)
            if rnd.random() < 0.3:
                f = f[: rnd.randrange(0, len(f) + 1)]
            frames.append(bytes(f))
    return frames


def _expected(frames, dlt, max_data, wires):
    from collections import Counter

    flows: Counter = Counter()
    unparsed = [0, 0]
    for f, w in zip(frames, wires):
        eth_frame = parser_model.to_ethernet(f, dlt, max_data)
        k = parser_model.parse(eth_frame) if eth_frame is not None else None
        if k is None:
            unparsed[0] += 1
            unparsed[1] += w
        else:
            k = model_key(k)
            flows[k] += 1
            flows[(*k, "bytes")] += w
    return flows, unparsed


def _check_batch(rp, frames, dlt, wires):
    from collections import Counter

    recs, stats = rp.run(frames, dlt, wires)
    want_flows, want_unparsed = _expected(frames, dlt, bench_core.replay_max_data(rp.r), wires)
    got: Counter = Counter()
    for r in recs:
        k = key_of(r)
        got[k] += int(r["packets"])
        got[(*k, "bytes")] += int(r["bytes"])
    none = stats[2]
    ok = got == want_flows and [int(none["unparsed_packets"]), int(none["unparsed_bytes"])] == want_unparsed
    # conservation after every batch
    assert int(none["packets"]) == len(frames) and int(none["bytes"]) == sum(wires)
    assert int(none["packets"]) == sum(int(r["packets"]) for r in recs) + int(none["unparsed_packets"])
    assert int(none["bytes"]) == sum(int(r["bytes"]) for r in recs) + int(none["unparsed_bytes"])
    assert int(none["overflow_packets"]) == 0
    return ok


FUZZ_FRAMES = 120_000
FUZZ_BATCH = 2_000


@pytest.mark.parametrize("dlt", [1, 113, 12, 0])
def test_fuzz_matches_the_model(rp, dlt):
    """Random and mutated frames in batches; each batch's flow table and
    unparsed counters must equal the model's exactly. On a mismatch the
    batch is rerun frame by frame to name the first frame that differs."""
    rnd = random.Random(1000 + dlt)
    count = FUZZ_FRAMES if dlt == 1 else FUZZ_FRAMES // 6
    done = 0
    while done < count:
        frames = _fuzz_frames(rnd, FUZZ_BATCH)
        if dlt == 113:
            frames = [
                struct.pack("!HHH8s", 0, 1, 6, bytes(8)) + f[12:] if len(f) >= 12 else f for f in frames
            ]
        elif dlt == 12:
            frames = [f[14:] for f in frames]
        elif dlt == 0:
            frames = [struct.pack("<I", rnd.choice([2, 24, 28, 30, 7])) + f[14:] for f in frames]
        wires = [len(f) + rnd.choice([0, 0, 0, 100]) for f in frames]
        if not _check_batch(rp, frames, dlt, wires):
            for f, w in zip(frames, wires):
                got = rp.one(f, dlt=dlt, wire=w)
                e = parser_model.to_ethernet(f, dlt, bench_core.replay_max_data(rp.r))
                want = parser_model.parse(e) if e is not None else None
                want = model_key(want) if want is not None else None
                assert got == want, f"frame {f.hex()} (dlt {dlt})"
            pytest.fail("a batch differed from the model but no single frame did")
        done += len(frames)
    assert done >= count
