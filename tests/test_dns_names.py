"""Flows named by the DNS answers seen before them (l7_names.bpf.h
dns_addrs, src/cpp/dns_cache.hpp, core/names.py ``dns_name`` and
``name_source``), in replay of captures made here, every answer known:

- a response for example.test whose answers are a CNAME to
  edge.cdn.test (owner name a compression pointer), then edge.cdn.test's A
  and AAAA records (the A's owner written out as labels): both addresses
  name the QUESTION, example.test; the TCP flow to the A address and the
  UDP flow to the AAAA address (both directions) show it, from DNS;
- a flow after its answer's TTL ran out: no name;
- a flow that sends an SNI: its SNI wins;
- a flow that started before the answer for its address: no name;
- hostile answers (a compression pointer to itself, truncated records,
  an rdlength past the message, a reserved label type, 20 answers of which
  the first 16 are read, an NXDOMAIN carrying an answer, two questions):
  what is read is exactly what the well-formed records say.
"""

from __future__ import annotations

import socket
import struct

import pytest
from test_names import client_hello, dns_wire

scapy = pytest.importorskip("scapy.all")

pytestmark = pytest.mark.kernel  # the answer walk must verify on 6.1 too

C, R = "10.8.0.1", "10.8.0.53"  # the client and its resolver
C6 = "2001:db8::1"
T0 = 1_700_000_000.0
PTR = b"\xc0\x0c"  # a compression pointer to the question's name


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes, rdlen: int | None = None, cls: int = 1) -> bytes:
    return owner + struct.pack(">HHIH", rtype, cls, ttl, len(rdata) if rdlen is None else rdlen) + rdata


def a(ip: str) -> bytes:
    return socket.inet_aton(ip)


def response(
    qname: str, answers: list[bytes], *, rcode: int = 0, an: int | None = None, qd: int = 1
) -> bytes:
    head = struct.pack(">HHHHHH", 0x1234, 0x8180 | rcode, qd, len(answers) if an is None else an, 0, 0)
    q = dns_wire([x.encode() for x in qname.split(".")]) + b"\x00\x01\x00\x01"
    return head + q * qd + b"".join(answers)


class Capture:
    def __init__(self) -> None:
        self.frames: list = []

    def add(self, t: float, pkt) -> None:
        from scapy.all import Ether

        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt
        p.time = T0 + t
        self.frames.append(p)

    def dns(self, t: float, sport: int, payload: bytes) -> None:
        from scapy.all import IP, UDP, Raw

        query = payload[:2] + b"\x01\x00" + payload[4:6] + b"\0" * 6  # (the question follows)
        self.add(t, IP(src=C, dst=R) / UDP(sport=sport, dport=53) / Raw(query))
        self.add(t + 0.01, IP(src=R, dst=C) / UDP(sport=53, dport=sport) / Raw(payload))

    def udp(self, t: float, dst: str, sport: int, dport: int = 9000) -> None:
        from scapy.all import IP, UDP, Raw

        self.add(t, IP(src=C, dst=dst) / UDP(sport=sport, dport=dport) / Raw(b"x" * 8))

    def write(self, path) -> str:
        from scapy.all import wrpcap

        wrpcap(str(path), self.frames)
        return str(path)


def replay(path: str) -> dict[tuple[str, int], dict]:
    """(the client's peer, the client's port) -> the client's flow; the
    reply flows under (peer, -port)."""
    import pktstat_bpf

    out = {}
    snap = pktstat_bpf.replay(path)
    assert snap.extra["dnsAddrsFull"] == 0
    for d in snap.flow_dicts():
        if d["srcIp"] in (C, C6):
            out[(d["dstIp"], d["srcPort"])] = d
        else:
            out[(d["srcIp"], -d["dstPort"])] = d
    return out


def named(d: dict) -> tuple:
    return d.get("dnsName"), d.get("nameSource")


@pytest.fixture(scope="module")
def joined(bpf, tmp_path_factory):
    from scapy.all import IP, TCP, UDP, IPv6, Raw

    cap = Capture()
    edge = dns_wire([b"edge", b"cdn", b"test"])
    cap.dns(
        0,
        50001,
        response(
            "example.test",
            [
                rr(PTR, 5, 300, edge),
                rr(edge, 1, 60, a("93.184.215.14")),
                rr(PTR, 28, 60, socket.inet_pton(socket.AF_INET6, "2001:db8::14")),
            ],
        ),
    )
    # a TCP flow to the A address (handshake, then data) and its replies
    add = cap.add
    add(1, IP(src=C, dst="93.184.215.14") / TCP(sport=40001, dport=443, flags="S", seq=99))
    add(1.01, IP(src="93.184.215.14", dst=C) / TCP(sport=443, dport=40001, flags="SA", seq=5000, ack=100))
    add(1.02, IP(src=C, dst="93.184.215.14") / TCP(sport=40001, dport=443, flags="PA", seq=100) / Raw(b"hi"))
    # a UDP flow to the AAAA address, and a reply
    add(2, IPv6(src=C6, dst="2001:db8::14") / UDP(sport=40002, dport=4433) / Raw(b"q" * 20))
    add(2.01, IPv6(src="2001:db8::14", dst=C6) / UDP(sport=4433, dport=40002) / Raw(b"r" * 20))
    # an answer with a TTL of 5 s, its address's flow 10 s later: expired
    cap.dns(3, 50002, response("late.test", [rr(PTR, 1, 5, a("198.51.100.7"))]))
    cap.udp(13, "198.51.100.7", 40003)
    # an answer, then a TLS flow to its address naming another server: the SNI wins
    cap.dns(4, 50003, response("sni.test", [rr(PTR, 1, 300, a("203.0.113.9"))]))
    add(
        5,
        IP(src=C, dst="203.0.113.9")
        / TCP(sport=40004, dport=443, flags="PA", seq=1)
        / Raw(client_hello(b"real.example", [b"h2"])),
    )
    # a flow that began before the answer for its address
    cap.udp(6, "192.0.2.77", 40005)
    cap.dns(7, 50004, response("before.test", [rr(PTR, 1, 300, a("192.0.2.77"))]))
    # the same question answered again (TTL 5 at 20 s and at 24 s): a flow
    # between the two answers and one after the first's expiry are its
    cap.dns(20, 50005, response("again.test", [rr(PTR, 1, 5, a("192.0.2.88"))]))
    cap.udp(22, "192.0.2.88", 40006)
    cap.dns(24, 50006, response("again.test", [rr(PTR, 1, 5, a("192.0.2.88"))]))
    cap.udp(27, "192.0.2.88", 40007)
    cap.udp(30, "192.0.2.88", 40008)  # (expired at 29 s)
    # another question for an address: it replaces the first (one drain
    # here: the flow between the two answers is left without a name)
    cap.dns(40, 50007, response("first.test", [rr(PTR, 1, 300, a("192.0.2.89"))]))
    cap.udp(41, "192.0.2.89", 40009)
    cap.dns(42, 50008, response("second.test", [rr(PTR, 1, 300, a("192.0.2.89"))]))
    cap.udp(43, "192.0.2.89", 40010)
    return replay(cap.write(tmp_path_factory.mktemp("dnsjoin") / "join.pcap"))


def test_answers_name_the_flows_after_them(joined):
    for key in (
        ("93.184.215.14", 40001),
        ("93.184.215.14", -40001),
        ("2001:db8::14", 40002),
        ("2001:db8::14", -40002),
    ):
        assert named(joined[key]) == ("example.test", "dns-answer"), key
        assert "serverName" not in joined[key] and "dnsQuery" not in joined[key]


def test_expired_sni_and_earlier_flows(joined):
    assert named(joined[("198.51.100.7", 40003)]) == (None, None)
    tls = joined[("203.0.113.9", 40004)]
    assert (tls["serverName"], *named(tls)) == ("real.example", None, "sni")
    assert named(joined[("192.0.2.77", 40005)]) == (None, None)


def test_an_answer_again_extends_it(joined):
    got = [named(joined[("192.0.2.88", port)])[0] for port in (40006, 40007, 40008)]
    assert got == ["again.test", "again.test", None]
    got = [named(joined[("192.0.2.89", port)])[0] for port in (40009, 40010)]
    assert got == [None, "second.test"]


def test_dns_flows_name_their_question(joined):
    for port, q in (
        (50001, "example.test"),
        (50002, "late.test"),
        (50003, "sni.test"),
        (50004, "before.test"),
    ):
        for key in ((R, port), (R, -port)):
            assert (joined[key]["dnsQuery"], *named(joined[key])) == (q, None, "dns-query"), key


def test_hostile_answers(bpf, tmp_path):
    cap = Capture()
    ip = [f"192.0.2.{i}" for i in range(1, 40)]
    # 1. an owner that points at itself (never followed), then a plain A
    loop = b"\xc0\x1e"  # offset 30: the owner name itself (12 + 14 + 4)
    cap.dns(0, 51001, response("loop.test", [rr(loop, 1, 300, a(ip[0]))]))
    # 2. an A with rdlength 5 (skipped whole), then a good A; then one cut short
    cap.dns(
        1,
        51002,
        response(
            "len.test",
            [rr(PTR, 1, 300, a(ip[1]) + b"\0", 5), rr(PTR, 1, 300, a(ip[2])), PTR + b"\x00\x01\x00"],
            an=3,
        ),
    )
    # 3. an rdlength past the message's end: the walk ends there
    cap.dns(2, 51003, response("lie.test", [rr(PTR, 1, 300, a(ip[3]), 200), rr(PTR, 1, 300, a(ip[4]))]))
    # 4. a reserved label type (0x40) in an owner name: the walk ends
    cap.dns(3, 51004, response("bad.test", [rr(b"\x41x\x00", 1, 300, a(ip[5])), rr(PTR, 1, 300, a(ip[6]))]))
    # 5. 20 answers: the first 16 are read; an owner of 60 one-byte labels first
    many = [rr(b"\x01a" * 60 + b"\x00", 1, 300, a(ip[7]))] + [
        rr(PTR, 1, 300, a(ip[8 + i])) for i in range(19)
    ]
    cap.dns(4, 51005, response("many.test", many))
    # 6. an NXDOMAIN carrying an answer, and a response to two questions
    cap.dns(5, 51006, response("nx.test", [rr(PTR, 1, 300, a(ip[30]))], rcode=3))
    cap.dns(6, 51007, response("two.test", [rr(PTR, 1, 300, a(ip[31]))], qd=2))
    # 7. an A of class CH, an answer count larger than the records sent
    cap.dns(
        7, 51008, response("ch.test", [rr(PTR, 1, 300, a(ip[32]), cls=3), rr(PTR, 1, 300, a(ip[33]))], an=9)
    )
    for i, addr in enumerate(ip[:34]):
        cap.udp(10 + i * 0.01, addr, 41000 + i)
    got = replay(cap.write(tmp_path / "hostile.pcap"))
    want = {0: "loop.test", 2: "len.test", 3: None, 4: None, 5: None, 6: None}
    want |= {i: "many.test" for i in range(7, 23)}  # records 1-16 of 20
    want |= {33: "ch.test"}
    names = {i: got[(addr, 41000 + i)].get("dnsName") for i, addr in enumerate(ip[:34])}
    assert names == {i: want.get(i) for i in range(34)}


def test_precedence_of_the_columns():
    """core/names.py alone: a flow's own SNI, or its reverse direction's
    HTTP Host, wins over the DNS answer joined to it; the answer names only
    the flow it was joined to (the engine joins each direction itself)."""
    import numpy as np
    from pktstat_bpf import _core
    from pktstat_bpf.core import names

    assert _core.dns_name_dtype.itemsize == 344
    rec = np.zeros(4, _core.record_dtype)
    for i, r in enumerate(rec):
        r["saddr"] = np.frombuffer(bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1]), np.uint8)
        r["daddr"] = np.frombuffer(bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 2 + i]), np.uint8)
        r["sport"], r["dport"], r["proto"], r["ipver"], r["dir"] = 40000 + i, 443, 6, 4, 2  # (replay)
    own = np.zeros(2, _core.name_dtype)
    for n, i, kind, name in (
        (own[0], 0, names.NAME_SNI, b"sni.example"),
        (own[1], 1, names.NAME_HTTP_HOST, b"h.example"),
    ):
        r = rec[i]
        for f in ("saddr", "daddr", "sport", "dport", "proto", "ipver", "dir"):
            n[f] = r[f]
        if i == 1:  # the reverse direction's name
            n["saddr"], n["daddr"], n["sport"], n["dport"] = r["daddr"], r["saddr"], r["dport"], r["sport"]
        n["name_kind"], n["name_len"], n["dns_rcode"] = kind, len(name), names.NO_RCODE
        n["name"][: len(name)] = np.frombuffer(name, np.uint8)
    dns = np.zeros(3, _core.dns_name_dtype)
    for d, i in zip(dns, (0, 1, 2)):
        for f in ("saddr", "daddr", "sport", "dport", "proto", "ipver", "dir"):
            d[f] = rec[i][f]
        wire = dns_wire([b"joined", b"test"])
        d["name_len"], d["answer_ttl"] = len(wire), 60
        d["name"][: len(wire)] = np.frombuffer(wire, np.uint8)
    cols = names.columns(rec, own, dns)
    assert list(cols["dns_name"]) == [None, None, "joined.test", None]
    assert list(cols["name_source"]) == ["sni", "http", "dns-answer", None]
    assert list(cols["server_name"]) == ["sni.example", None, None, None]
    assert list(cols["http_host"]) == [None, "h.example", None, None]
