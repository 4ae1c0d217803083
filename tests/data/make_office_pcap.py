"""Write office.pcap: one minute of a workstation's traffic on a small office
LAN, as ``tcpdump -s 96 -w`` would record it on the workstation.

    python tests/data/make_office_pcap.py [OUT]      (default: beside this script)

The file is what the analysis notebook (notebooks/traffic_analysis.ipynb) and
the doctests replay, so it is small (headers only: a 96-byte snaplen; each
record keeps its frame's original length, which is what replay counts) but
has the shape of real traffic over time: an HTTPS download, an scp upload
over SSH, a video call, a software update over QUIC/IPv6, DNS, NTP, pings,
mDNS, ARP and LLDP. Packets are built with scapy (real headers and
checksums) from a seeded random generator; payloads are zeros except the
first bytes of each conversation, which are what its protocol starts with
(a TLS record, an SSH banner, a DNS header, a QUIC long header), so the
application labels are those of the real protocols, so running the script again
writes the same bytes (tests/test_notebook.py checks that).

Addresses are from the documentation ranges (RFC 5737, RFC 3849) and the
private LAN 192.168.1.0/24: nobody real is in the file.
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

T0_US = 1_710_406_800 * 10**6  # 2024-03-14 09:00:00 UTC
SNAPLEN = 96
MSS = 1460
SEED = 20240314

WS = ("192.168.1.23", "2001:db8:1::23", "02:00:00:00:00:23")  # the workstation
GW = ("192.168.1.1", "2001:db8:1::1", "02:00:00:00:00:01")  # router, DNS resolver
FILESERVER = ("192.168.1.50", None, "02:00:00:00:00:50")
WEB = "203.0.113.10"  # an HTTPS site
VIDEO = "198.51.100.20"  # a video-call relay
MIRROR = "2001:db8:f00d::10"  # a software-update mirror (QUIC over IPv6)
NTP = "192.0.2.123"


class Capture:
    """Frames with their time (seconds from the start of the capture)."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        self.frames: list[tuple[int, int, bytes]] = []
        self._ip_id = 0

    def ip_id(self) -> int:
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        return self._ip_id

    def add(self, t: float, pkt) -> None:
        self.frames.append((round(t * 1e6), len(self.frames), bytes(pkt)))

    def jitter(self, scale: float) -> float:
        return self.rng.uniform(0, scale)

    def write(self, path: Path) -> None:
        out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1))
        for t_us, _, frame in sorted(self.frames):
            sec, usec = divmod(T0_US + t_us, 10**6)
            cap = frame[:SNAPLEN]
            out += struct.pack("<IIII", sec, usec, len(cap), len(frame)) + cap
        path.write_bytes(bytes(out))


def l2(src_mac: str, dst_mac: str) -> Ether:
    return Ether(src=src_mac, dst=dst_mac)


def ip(cap: Capture, src: str, dst: str):
    return (
        IPv6(src=src, dst=dst, hlim=64)
        if ":" in src
        else IP(src=src, dst=dst, id=cap.ip_id(), ttl=64, flags="DF")
    )


class Tcp:
    """One TCP connection: handshake, data both ways with delayed ACKs, close."""

    def __init__(self, cap: Capture, client, server, server_mac: str, sport: int, dport: int) -> None:
        self.cap, self.client, self.server = cap, client, server
        self.ws_mac, self.peer_mac = WS[2], server_mac
        self.sport, self.dport = sport, dport
        self.seq = {True: cap.rng.getrandbits(32), False: cap.rng.getrandbits(32)}  # True: client side

    def _send(
        self, t: float, from_client: bool, flags: str, payload: int = 0, options=None, head: bytes = b""
    ) -> None:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        macs = (self.ws_mac, self.peer_mac) if from_client else (self.peer_mac, self.ws_mac)
        sp, dp = (self.sport, self.dport) if from_client else (self.dport, self.sport)
        tcp = TCP(
            sport=sp,
            dport=dp,
            flags=flags,
            seq=self.seq[from_client],
            window=502,
            ack=self.seq[not from_client] if "A" in flags else 0,
            options=options or [],
        )
        pkt = l2(*macs) / ip(self.cap, src, dst) / tcp
        if payload:
            pkt = pkt / Raw(head + bytes(payload - len(head)))
        self.cap.add(t, pkt)
        self.seq[from_client] = (
            self.seq[from_client] + payload + (1 if flags in ("S", "SA", "FA") else 0)
        ) % 2**32

    def open(self, t: float, rtt: float) -> float:
        opts = [("MSS", MSS), ("NOP", None), ("WScale", 7), ("SAckOK", b"")]
        self._send(t, True, "S", options=opts)
        self._send(t + rtt, False, "SA", options=opts)
        self._send(t + rtt + 0.0001, True, "A")
        return t + rtt + 0.0001

    def exchange(
        self, t: float, request: int, response: int, rtt: float, heads: tuple[bytes, bytes] = (b"", b"")
    ) -> float:
        """A request and its response (each one segment at most MSS), their
        payloads starting with `heads`."""
        self._send(t, True, "PA", request, head=heads[0])
        self._send(t + rtt, False, "PA", response, head=heads[1])
        self._send(t + rtt + 0.0002, True, "A")
        return t + rtt + 0.0002

    def bulk(self, t: float, nbytes: int, bps: float, from_client: bool) -> float:
        """`nbytes` in MSS segments at about `bps` bits/s, an ACK every second one."""
        gap = (MSS + 54) * 8 / bps
        n = 0
        while nbytes > 0:
            size = min(MSS, nbytes)
            self._send(t, from_client, "A" if size == MSS else "PA", size)
            nbytes -= size
            n += 1
            if n % 2 == 0 or nbytes == 0:
                self._send(t + 0.0003, not from_client, "A")
            t += gap * (0.8 + self.cap.jitter(0.4))
        return t

    def close(self, t: float, rtt: float) -> float:
        self._send(t, True, "FA")
        self._send(t + rtt, False, "FA")
        self._send(t + rtt + 0.0001, True, "A")
        return t + rtt


def udp(
    cap: Capture,
    t: float,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    payload: int,
    macs: tuple[str, str],
    head: bytes = b"",
) -> None:
    data = head + bytes(payload - len(head))
    cap.add(t, l2(*macs) / ip(cap, src, dst) / UDP(sport=sport, dport=dport) / Raw(data))


#: The first bytes of a TLS ClientHello and ServerHello record, an SSH
#: banner, a QUIC v1 Initial (long header)
TLS_HELLO = (b"\x16\x03\x01\x02\x00\x01", b"\x16\x03\x03\x05\x70\x02")
SSH_BANNER = b"SSH-2.0-OpenSSH_9.6\r\n"
QUIC_INITIAL = b"\xc3\x00\x00\x00\x01"


def dns_header(qid: int, answers: int) -> bytes:
    """A DNS header: a recursive query (answers 0) or its response, one question."""
    return struct.pack("!HHHHHH", qid, 0x8180 if answers else 0x0100, 1, answers, 0, 0)


def out_of_lan(to_gw: bool) -> tuple[str, str]:
    return (WS[2], GW[2]) if to_gw else (GW[2], WS[2])


def dns(cap: Capture, t: float, name_len: int, v6: bool = False) -> None:
    """A query and its answer, through the router's resolver."""
    sport = 30000 + cap.rng.randrange(30000)
    src, dst = (WS[1], GW[1]) if v6 else (WS[0], GW[0])
    udp(cap, t, src, dst, sport, 53, 17 + name_len, out_of_lan(True), dns_header(sport, 0))
    answer = dns_header(sport, 1)
    udp(cap, t + 0.004 + cap.jitter(0.01), dst, src, 53, sport, 17 + name_len + 32, out_of_lan(False), answer)


def build(cap: Capture) -> None:
    rng = cap.rng
    # pings to the router every 2 s (ICMP echo)
    for i in range(30):
        t = 2 * i + (cap.jitter(0.01) if i else 0.0)  # the first frame: 09:00:00 sharp
        for req in (True, False):
            src, dst = (WS[0], GW[0]) if req else (GW[0], WS[0])
            icmp = ICMP(type=8 if req else 0, id=0x1D1, seq=i + 1)
            cap.add(
                t + (0 if req else 0.0004), l2(*out_of_lan(req)) / ip(cap, src, dst) / icmp / Raw(bytes(56))
            )
    # ARP for the file server, and LLDP from the switch: not IP, counted as unparsed
    for t in (1.0, 21.0, 41.0):
        cap.add(
            t,
            Ether(src=WS[2], dst="ff:ff:ff:ff:ff:ff")
            / ARP(op=1, hwsrc=WS[2], psrc=WS[0], pdst=FILESERVER[0]),
        )
        reply = ARP(op=2, hwsrc=FILESERVER[2], psrc=FILESERVER[0], hwdst=WS[2], pdst=WS[0])
        cap.add(t + 0.0002, Ether(src=FILESERVER[2], dst=WS[2]) / reply)
    for t in (9.0, 39.0):
        cap.add(t, Ether(src="02:00:00:00:00:fe", dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(bytes(46)))
    # mDNS announcements every 15 s
    for i in range(4):
        udp(cap, 3.0 + 15 * i, WS[0], "224.0.0.251", 5353, 5353, 180, (WS[2], "01:00:5e:00:00:fb"))

    # an HTTPS session: TLS handshake, a 1.5 MB download, a pause, 800 kB more, close
    dns(cap, 3.9, 15)
    web = Tcp(cap, WS[0], WEB, GW[2], 51514, 443)
    t = web.open(4.0, 0.018)
    t = web.exchange(t + 0.001, 517, 1400, 0.019, TLS_HELLO)  # ClientHello / ServerHello ...
    t = web.exchange(t + 0.001, 80, 1200, 0.019)
    t = web.exchange(t + 0.001, 450, 300, 0.02)  # the request, the response headers
    t = web.bulk(t + 0.001, 1_500_000, 4.2e6, from_client=False)
    for k in range(5):  # keep-alive
        t = web.exchange(t + 3.5 + cap.jitter(1.0), 40, 40, 0.018)
    t = web.exchange(31.0, 480, 300, 0.02)
    t = web.bulk(t + 0.001, 800_000, 3.6e6, from_client=False)
    web.close(58.0, 0.018)

    # SSH to the file server: keystrokes all along, an scp upload of 1 MB
    ssh = Tcp(cap, WS[0], FILESERVER[0], FILESERVER[2], 40022, 22)
    t = ssh.open(2.0, 0.0004)
    t = ssh.exchange(t, 41, 41, 0.001, (SSH_BANNER, SSH_BANNER))
    t = ssh.exchange(t + 0.01, 1080, 1000, 0.002)
    uploaded = False
    while t < 57.0:
        if t >= 18.0 and not uploaded:
            t = ssh.bulk(t, 1_000_000, 2.1e6, from_client=True)
            uploaded = True
        t = ssh.exchange(t + 0.3 + cap.jitter(1.0), 36, 36, 0.0008)
    ssh.close(57.5, 0.0004)

    # a video call through a relay: 12 s to 48 s, steady in both directions
    dns(cap, 11.8, 22)
    t = 12.0
    down, up = 1.0 / 30, 1.0 / 20
    nd, nu = t, t
    while min(nd, nu) < 48.0:
        if nd <= nu:
            udp(cap, nd, VIDEO, WS[0], 3478, 52000, 1058 + rng.randrange(40), out_of_lan(False))
            nd += down * (0.9 + cap.jitter(0.2))
        else:
            udp(cap, nu, WS[0], VIDEO, 52000, 3478, 860 + rng.randrange(40), out_of_lan(True))
            nu += up * (0.9 + cap.jitter(0.2))

    # NTP
    for i in range(4):
        udp(cap, 30.0 + 0.002 * i, WS[0], NTP, 123, 123, 48, out_of_lan(True))
        udp(cap, 30.0 + 0.002 * i + 0.011, NTP, WS[0], 123, 123, 48, out_of_lan(False))

    # neighbour discovery and a ping over IPv6 before the update
    ns = IPv6(src=WS[1], dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=GW[1])
    cap.add(39.8, Ether(src=WS[2], dst="33:33:ff:00:00:01") / ns)
    cap.add(
        39.8003, l2(GW[2], WS[2]) / IPv6(src=GW[1], dst=WS[1], hlim=255) / ICMPv6ND_NA(tgt=GW[1], R=1, S=1)
    )
    cap.add(
        39.81,
        l2(*out_of_lan(True)) / IPv6(src=WS[1], dst=MIRROR) / ICMPv6EchoRequest(id=7, seq=1) / Raw(bytes(56)),
    )
    cap.add(
        39.84,
        l2(*out_of_lan(False)) / IPv6(src=MIRROR, dst=WS[1]) / ICMPv6EchoReply(id=7, seq=1) / Raw(bytes(56)),
    )

    # a software update over QUIC (UDP 443, IPv6): 1.2 MB in about 10 s
    dns(cap, 39.9, 18, v6=True)
    t = 40.0
    udp(cap, t, WS[1], MIRROR, 50123, 443, 1200, out_of_lan(True), QUIC_INITIAL)  # Initial
    udp(cap, t + 0.03, MIRROR, WS[1], 443, 50123, 1200, out_of_lan(False), QUIC_INITIAL)
    t += 0.05
    left, n = 1_200_000, 0
    while left > 0:
        size = min(1232, left)
        udp(cap, t, MIRROR, WS[1], 443, 50123, size, out_of_lan(False))
        left -= size
        n += 1
        if n % 5 == 0:
            udp(cap, t + 0.0005, WS[1], MIRROR, 50123, 443, 40, out_of_lan(True))
        t += 0.0088 * (0.5 + cap.jitter(1.0))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).with_name("office.pcap")
    cap = Capture()
    build(cap)
    cap.write(out)
    print(f"{out}: {len(cap.frames)} frames, {sum(len(f) for _, _, f in cap.frames)} bytes on the wire")
    return 0


if __name__ == "__main__":
    sys.exit(main())
