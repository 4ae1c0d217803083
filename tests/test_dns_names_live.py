"""Live: a flow named by the DNS answer its client resolved first (TC on
the client's veth; XDP on both veths, each seeing its ingress only,
tests/netns.py). A small DNS server in namespace B
answers join.test with B's addresses (A and AAAA, TTL 60); dig in A
resolves it, then a plain TCP client (no name of its own: no SNI, no Host)
connects to each address dig printed. Both directions of each connection
show join.test from the DNS answer (XDP: the directions coming in to the
client, where its collector saw the response); the DNS flows show their
question."""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from netns import NetnsPair, in_ns
from pktstat_bpf import Collector

pytestmark = pytest.mark.kernel

DNS_PORT, SINK_PORT = 15354, 18090


def answer(query: bytes, ns: NetnsPair) -> bytes:
    """join.test's A (B4) or AAAA (B6) record, TTL 60."""
    end = 12
    while query[end]:
        end += 1 + query[end]
    qtype = struct.unpack("!H", query[end + 1 : end + 3])[0]
    rdata = socket.inet_aton(ns.B4) if qtype == 1 else socket.inet_pton(socket.AF_INET6, ns.B6)
    head = query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    return head + query[12 : end + 5] + struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata


def serve_dns(s: socket.socket, ns: NetnsPair) -> None:
    with contextlib.suppress(OSError):
        while True:
            data, peer = s.recvfrom(4096)
            s.sendto(answer(data, ns), peer)


def serve_sink(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            c, _ = s.accept()
            with c:
                c.settimeout(5)
                while c.recv(4096):
                    pass


@pytest.mark.parametrize("mode", ["tc", "xdp"])
def test_flow_named_by_the_answer_resolved_before(bpf, mode):
    if not shutil.which("dig"):
        pytest.skip("dig is not installed (make setup installs bind9-dnsutils)")
    ns = NetnsPair()
    socks = []
    try:
        with in_ns(ns.ns_b):
            dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            dns.bind((ns.B4, DNS_PORT))
            sink = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sink.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sink.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sink.bind(("::", SINK_PORT))
            sink.listen(8)
        socks = [dns, sink]
        threading.Thread(target=serve_dns, args=(dns, ns), daemon=True).start()
        threading.Thread(target=serve_sink, args=(sink,), daemon=True).start()
        with contextlib.ExitStack() as stack:
            if mode == "xdp":
                with in_ns(ns.ns_b):
                    cols = [stack.enter_context(Collector(mode="xdp", iface="vb"))]
                with ns.in_a():
                    cols.append(stack.enter_context(Collector(mode="xdp", iface="va")))
            else:
                with ns.in_a():
                    cols = [stack.enter_context(Collector(iface="va"))]
            time.sleep(0.05)
            resolved = {}
            for qtype in ("A", "AAAA"):
                dig = [
                    "dig",
                    f"@{ns.B4}",
                    "-p",
                    str(DNS_PORT),
                    "+tries=1",
                    "+time=5",
                    "+short",
                    "join.test",
                    qtype,
                ]
                out = subprocess.run(
                    ["ip", "netns", "exec", ns.ns_a, *dig], capture_output=True, text=True, timeout=30
                )
                resolved[qtype] = out.stdout.strip()
                client = (
                    f"import socket; s = socket.create_connection(({resolved[qtype]!r}, {SINK_PORT}), 5); "
                )
                client += "s.sendall(b'hello'); s.close()"
                subprocess.run(
                    ["ip", "netns", "exec", ns.ns_a, sys.executable, "-c", client], check=True, timeout=30
                )
            assert resolved == {"A": ns.B4, "AAAA": ns.B6}
            time.sleep(0.3)
            snaps = [c.snapshot() for c in cols]
    finally:
        for s in socks:
            s.close()
        ns.destroy()
    got = {}
    for d in (d for snap in snaps for d in snap.flow_dicts()):
        if SINK_PORT in (d.get("srcPort"), d.get("dstPort")):
            got[(d["srcIp"], d["dstIp"])] = (d.get("dnsName"), d.get("nameSource"))
        elif DNS_PORT in (d.get("srcPort"), d.get("dstPort")):
            got[("dns", d["srcIp"])] = (d.get("dnsQuery"), d.get("nameSource"))
    joined = ("join.test", "dns-answer")
    out = joined if mode == "tc" else (None, None)  # (XDP: B's collector saw no response)
    assert got == {
        (ns.A4, ns.B4): out,
        (ns.B4, ns.A4): joined,
        (ns.A6, ns.B6): out,
        (ns.B6, ns.A6): joined,
        ("dns", ns.A4): ("join.test", "dns-query"),
        ("dns", ns.B4): ("join.test", "dns-query"),
    }
