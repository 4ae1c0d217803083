"""Names of flows (src/bpf/l7_names.bpf.h) in replay of captures made here
with scapy, every name known: a ClientHello split over two TCP segments
(its server name and ALPN in the second, as a post-quantum key share puts
them), the same split where the second segment is not the next in sequence
(no name), a DNS response with 20 answers and an NXDOMAIN, an HTTP request,
a QUIC Initial, and hostile names (control characters, invalid UTF-8, a DNS
label holding dots, a name past 255 bytes): each shown escaped in the text,
as data in JSON and the DataFrame, never as what it pretends to be.

tshark reads the same capture: its server name of the split ClientHello
(reassembled) must be ours.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import pytest

scapy = pytest.importorskip("scapy.all")

C, S = "10.7.0.1", "10.7.0.2"
SNI = "split.example.org"
ALPN = [b"h2", b"http/1.1"]
HOSTILE_SNI = b"\x1b[31mevil\n\xff.example"
HOSTILE_HOST = b"a\x07b.example"
DOTTED = [b"www.example.org"]  # one label holding dots: not the three-label name


def client_hello(sni: bytes, alpn: list[bytes], pad: int = 0) -> bytes:
    """A TLS 1.3-style ClientHello record; `pad` bytes of a padding
    extension (21) come first, pushing the server name and ALPN back."""
    exts = b""
    if pad:
        exts += struct.pack(">HH", 21, pad) + b"\0" * pad
    body = struct.pack(">HBH", len(sni) + 3, 0, len(sni)) + sni
    exts += struct.pack(">HH", 0, len(body)) + body
    names = b"".join(bytes([len(a)]) + a for a in alpn)
    exts += struct.pack(">HHH", 16, len(names) + 2, len(names)) + names
    hello = b"\x03\x03" + b"\x11" * 32 + b"\x20" + b"\x22" * 32 + struct.pack(">H", 4) + b"\x13\x01\x13\x02"
    hello += b"\x01\x00" + struct.pack(">H", len(exts)) + exts
    hs = b"\x01" + len(hello).to_bytes(3, "big") + hello
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


def dns_wire(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\0"


def _frames() -> list:
    from scapy.all import DNS, DNSQR, DNSRR, IP, TCP, UDP, Ether, Raw

    def eth(pkt):
        return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt

    frames, t = [], 1_700_000_000.0

    def add(pkt) -> None:
        nonlocal t
        p = eth(pkt)
        p.time = t
        t += 0.001
        frames.append(p)

    def tcp_open(sport: int, dport: int, isn: int = 1000) -> None:
        add(IP(src=C, dst=S) / TCP(sport=sport, dport=dport, flags="S", seq=isn - 1))
        add(IP(src=S, dst=C) / TCP(sport=dport, dport=sport, flags="SA", seq=5000, ack=isn))

    # 1. a ClientHello over two segments, in order: the names are in the second
    hello = client_hello(SNI.encode(), ALPN, pad=1400)
    cut = 1000
    tcp_open(41001, 443)
    add(IP(src=C, dst=S) / TCP(sport=41001, dport=443, flags="A", seq=1000, ack=5001) / Raw(hello[:cut]))
    add(
        IP(src=C, dst=S)
        / TCP(sport=41001, dport=443, flags="PA", seq=1000 + cut, ack=5001)
        / Raw(hello[cut:])
    )
    add(IP(src=S, dst=C) / TCP(sport=443, dport=41001, flags="A", seq=5001, ack=1000 + len(hello)))
    # 2. the same, but the first segment comes again (a retransmission): no name
    tcp_open(41002, 443)
    add(IP(src=C, dst=S) / TCP(sport=41002, dport=443, flags="A", seq=1000, ack=5001) / Raw(hello[:cut]))
    add(IP(src=C, dst=S) / TCP(sport=41002, dport=443, flags="A", seq=1000, ack=5001) / Raw(hello[:cut]))
    # 3. a ClientHello in one segment, hostile name
    tcp_open(41003, 443)
    add(
        IP(src=C, dst=S)
        / TCP(sport=41003, dport=443, flags="PA", seq=1000, ack=5001)
        / Raw(client_hello(HOSTILE_SNI, [b"h2"]))
    )
    # 4. HTTP: a Host with a control character
    tcp_open(41004, 80)
    req = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHost:  " + HOSTILE_HOST + b"  \r\nAccept: */*\r\n\r\n"
    add(IP(src=C, dst=S) / TCP(sport=41004, dport=80, flags="PA", seq=1000, ack=5001) / Raw(req))
    # 5. DNS: a query and a response with 20 answers
    q = DNS(id=7, rd=1, qd=DNSQR(qname="many.example.", qtype="AAAA"))
    add(IP(src=C, dst=S) / UDP(sport=42001, dport=53) / q)
    answers = [DNSRR(rrname="many.example.", type="A", ttl=60, rdata=f"10.9.0.{i}") for i in range(20)]
    r = DNS(id=7, qr=1, ra=1, qd=DNSQR(qname="many.example.", qtype="AAAA"), an=answers)
    add(IP(src=S, dst=C) / UDP(sport=53, dport=42001) / r)
    # 6. DNS: NXDOMAIN
    add(IP(src=C, dst=S) / UDP(sport=42002, dport=53) / DNS(id=8, qd=DNSQR(qname="nope.example.", qtype="A")))
    nx = DNS(id=8, qr=1, rcode=3, qd=DNSQR(qname="nope.example.", qtype="A"))
    add(IP(src=S, dst=C) / UDP(sport=53, dport=42002) / nx)
    # 7. DNS: a label holding dots, then a name past 255 bytes (raw: scapy would refuse it)
    dotted = b"\x00\x09\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + dns_wire(DOTTED) + b"\x00\x01\x00\x01"
    add(IP(src=C, dst=S) / UDP(sport=42003, dport=53) / Raw(dotted))
    long_name = dns_wire([b"a" * 63] * 4 + [b"b" * 10])  # 4 x 64 + 11 + 1 = 268 bytes
    overlong = b"\x00\x0a\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + long_name + b"\x00\x01\x00\x01"
    add(IP(src=C, dst=S) / UDP(sport=42004, dport=53) / Raw(overlong))
    return frames


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    from scapy.all import wrpcap

    path = tmp_path_factory.mktemp("names") / "names.pcap"
    wrpcap(str(path), _frames())
    return path


@pytest.fixture(scope="module")
def flows(bpf, pcap) -> dict[int, dict]:
    import pktstat_bpf

    snap = pktstat_bpf.replay(str(pcap))
    return {d["srcPort"] if d["srcIp"] == C else -d["dstPort"]: d for d in snap.flow_dicts()}


def test_split_client_hello(flows):
    assert (flows[41001].get("serverName"), flows[41001].get("alpn")) == (SNI, "h2,http/1.1")
    # the server's direction shows the client's names
    assert flows[-41001]["serverName"] == SNI
    # a first segment again instead of the second: nothing read
    assert "serverName" not in flows[41002] and flows[41002]["appProto"] == "TLS"


def test_dns(flows):
    q, r = flows[42001], flows[-42001]
    assert {k: q.get(k) for k in ("dnsQuery", "dnsQtype", "dnsQueries")} == {
        "dnsQuery": "many.example",
        "dnsQtype": "AAAA",
        "dnsQueries": 1,
    }
    assert "dnsRcode" not in q
    assert {k: r.get(k) for k in ("dnsQuery", "dnsRcode", "dnsAnswers", "dnsResponses")} == {
        "dnsQuery": "many.example",
        "dnsRcode": "NOERROR",
        "dnsAnswers": 20,
        "dnsResponses": 1,
    }
    assert (flows[-42002]["dnsQuery"], flows[-42002]["dnsRcode"], flows[-42002]["dnsAnswers"]) == (
        "nope.example",
        "NXDOMAIN",
        0,
    )


def test_hostile_names_are_data_not_text(flows, pcap):
    import pktstat_bpf
    from pktstat_bpf.core.render import escape_text

    # JSON and the DataFrame: the bytes as text (invalid UTF-8 as \\xNN), trailing blanks stripped
    assert flows[41003]["serverName"] == "\x1b[31mevil\n\\xff.example"
    assert flows[41004]["httpHost"] == "a\x07b.example"
    # a label holding dots is not the three-label name; a name past 255 bytes is not read
    assert flows[42003]["dnsQuery"] == "www\\.example\\.org"
    assert "dnsQuery" not in flows[42004] and flows[42004]["dnsQueries"] == 1
    text = pktstat_bpf.replay(str(pcap)).to_text()
    assert f"sni: {escape_text(flows[41003]['serverName'])}," in text
    host = escape_text("a\x07b.example")
    assert f"host: {host}," in text
    assert not any(ch in text for ch in "\x1b\x07") and "\nevil" not in text
    df = pktstat_bpf.replay(str(pcap)).to_pandas()
    row = df[df.src_port == 41003].iloc[0]
    assert row["server_name"] == flows[41003]["serverName"] and str(df["server_name"].dtype) == "str"
    assert str(df["dns_answers"].dtype) == "UInt32"
    out = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", str(pcap), "-j"], capture_output=True, check=True
    ).stdout
    assert b"\x1b" not in out and b"\x07" not in out  # JSON escapes them
    got = {d["srcPort"]: d for d in json.loads(out)["flows"]}
    assert got[41003]["serverName"] == flows[41003]["serverName"]


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed (make setup installs it)")
def test_tshark_reads_the_split_hello_as_we_do(flows, pcap):
    out = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-Y", "tcp.srcport==41001 and tls.handshake.type==1"]
        + [
            "-T",
            "fields",
            "-e",
            "tls.handshake.extensions_server_name",
            "-e",
            "tls.handshake.extensions_alpn_str",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [SNI, "h2,http/1.1"] == [flows[41001]["serverName"], flows[41001]["alpn"]]


def test_names_in_ipfix_and_parquet(flows, pcap, tmp_path):
    """The CLI's flow records carry the names: IPFIX (httpRequestHost, and
    the enterprise elements of output/ipfix.py) to a UDP socket of the test,
    Parquet read back with read_flows."""
    import socket

    from pktstat_bpf.output.ipfix import PEN
    from pktstat_bpf.output.parquet import read_flows
    from test_l7_outputs import _ipfix_records

    assert PEN
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    port = sock.getsockname()[1]
    subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", str(pcap), "-j", "--ipfix", f"127.0.0.1:{port}"]
        + ["--parquet", str(tmp_path / "pq")],
        capture_output=True,
        check=True,
    )
    sock.settimeout(0.5)
    msgs = []
    try:
        while True:
            msgs.append(sock.recv(65535))
    except TimeoutError:
        pass
    finally:
        sock.close()

    def text(b: bytes) -> str:
        return bytes(b).rstrip(b"\0").decode()

    ent = 0x8000  # (the enterprise bit of a field specifier: PEN elements)
    by = {(struct.unpack("!H", r[7])[0], struct.unpack("!H", r[11])[0]): r for r in _ipfix_records(msgs)}
    assert (text(by[41001, 443][ent | 5]), text(by[41001, 443][ent | 6])) == (SNI, "h2,http/1.1")
    assert text(by[443, 41001][ent | 5]) == SNI  # the server's direction too
    assert text(by[41004, 80][460]) == "a\x07b.example"  # httpRequestHost: the bytes, as data
    r = by[53, 42001]
    assert (text(r[ent | 7]), struct.unpack("!H", r[ent | 8])[0], r[ent | 9][0]) == ("many.example", 28, 0)
    assert by[42001, 53][ent | 9][0] == 255  # a query: no response code
    assert by[53, 42002][ent | 9][0] == 3  # NXDOMAIN
    assert ent | 5 not in by[41002, 443]  # a flow without names: the small template (256)

    df = read_flows(tmp_path / "pq")
    row = df[df.src_port == 41001].iloc[0]
    assert (row["server_name"], row["alpn"]) == (SNI, "h2,http/1.1")
    resp = df[(df.src_port == 53) & (df.dst_port == 42001)].iloc[0]
    assert (resp["dns_query"], resp["dns_rcode"], int(resp["dns_answers"])) == ("many.example", "NOERROR", 20)
