"""Known traffic for end-to-end tests, and an independent AF_PACKET oracle."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import Counter

ETH, IP4, IP6, UDP, ICMP = 14, 20, 40, 8, 8


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def send_udp(dst: str, port: int, count: int, payload: int) -> int:
    """Send `count` datagrams of `payload` bytes; returns the source port."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(b"u" * payload, (dst, port))
        return s.getsockname()[1]


def send_flows(dst: str, first_port: int, flows: list[int], payload: int) -> int:
    """From one socket, `flows[i]` datagrams of `payload` bytes to port
    `first_port + i`, flow after flow (so a full flow table holds the first
    ones); returns the source port."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        for i, count in enumerate(flows):
            for _ in range(count):
                s.sendto(b"f" * payload, (dst, first_port + i))
        return s.getsockname()[1]


def send_spread(dst: str, port: int, per_cpu: int, payload: int) -> tuple[int, list[int]]:
    """From one socket (one flow), `per_cpu` datagrams from each CPU this
    thread may run on, pinning the thread to each in turn (the programs at
    egress run on the sender's CPU, so each CPU's slot of the per-CPU flow
    value gets `per_cpu`). Returns (source port, the CPUs used)."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    cpus = sorted(os.sched_getaffinity(0))
    try:
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            for cpu in cpus:
                os.sched_setaffinity(0, {cpu})
                for _ in range(per_cpu):
                    s.sendto(b"c" * payload, (dst, port))
            return s.getsockname()[1], cpus
    finally:
        os.sched_setaffinity(0, set(cpus))


def ping(dst: str, count: int, payload: int = 56, ident: int = 0x4242, timeout: float = 3.0) -> int:
    """Send `count` ICMP(v6) echo requests, waiting for each reply; returns
    the number of replies received."""
    v6 = ":" in dst
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    req, rep = (128, 129) if v6 else (8, 0)
    got = 0
    with socket.socket(fam, socket.SOCK_RAW, proto) as s:
        s.settimeout(timeout)
        for seq in range(count):
            body = struct.pack("!HH", ident, seq) + bytes(payload)
            hdr = struct.pack("!BBH", req, 0, 0)
            csum = 0 if v6 else _csum(hdr + body)  # the kernel sums ICMPv6
            s.sendto(struct.pack("!BBH", req, 0, csum) + body, (dst, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = s.recv(65536)
                icmp = data if v6 else data[(data[0] & 0xF) * 4 :]
                if icmp[0] == rep and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
                    got += 1
                    break
    return got


def tcp_exchange(dst: str, port: int, payload: int) -> tuple[int, int]:
    """Connect, send `payload` bytes, close, wait for the peer's FIN.
    Returns the local (port, remote port)."""
    with socket.create_connection((dst, port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"t" * payload)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        while s.recv(4096):
            pass
        return s.getsockname()[1], port


def tcp_close_or_abort(dst: str, port: int, payload: int, abort: bool) -> int:
    """One connection: send `payload` bytes, then close in order (FIN, and
    wait for the peer's FIN) or abort with SO_LINGER 0 (RST, no FIN).
    Returns the local port."""
    s = socket.create_connection((dst, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"f" * payload)
    local = s.getsockname()[1]
    if abort:
        time.sleep(0.05)  # the data acknowledged: the RST is the last segment
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass
    s.close()
    return local


class Sniffer:
    """AF_PACKET capture of every frame on an interface (in the calling
    thread's namespace), parsed by a small independent Python parser: the
    oracle for traffic whose packet count the kernel decides (TCP)."""

    def __init__(self, ifname: str, keep: int = 0) -> None:
        """`keep`: store only each frame's first `keep` bytes (0: all of it)."""
        self.keep = keep
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.1)
        self.frames: list[tuple[str, int, bytes]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(1 << 18)
            except socket.timeout:
                continue
            except OSError:
                return
            direction = "egress" if addr[2] == socket.PACKET_OUTGOING else "ingress"
            # The buffer exceeds any frame these tests send (GSO included),
            # so len(data) is the frame's full length, as skb->len is at TC.
            self.frames.append((direction, len(data), data[: self.keep] if self.keep else data))

    def dropped(self) -> int:
        """Frames the kernel dropped for this socket so far (PACKET_STATISTICS)."""
        return struct.unpack("II", self.sock.getsockopt(263, 6, 8))[1]

    def stop(self) -> list[tuple[str, int, bytes]]:
        self._stop.set()
        self._t.join()
        self.sock.close()
        return self.frames

    @staticmethod
    def flows(frames, proto_filter: int) -> Counter:
        """{(src, dst, proto, sport, dport, direction): [packets, bytes]}."""
        out: dict = {}
        for direction, length, f in frames:
            etype = struct.unpack("!H", f[12:14])[0]
            if etype == 0x0800:
                ihl = (f[14] & 0xF) * 4
                proto = f[23]
                src, dst = (
                    socket.inet_ntop(socket.AF_INET, f[26:30]),
                    socket.inet_ntop(socket.AF_INET, f[30:34]),
                )
                l4 = 14 + ihl
            elif etype == 0x86DD:
                proto = f[20]
                src, dst = (
                    socket.inet_ntop(socket.AF_INET6, f[22:38]),
                    socket.inet_ntop(socket.AF_INET6, f[38:54]),
                )
                l4 = 54
            else:
                continue
            if proto != proto_filter:
                continue
            sport, dport = struct.unpack("!HH", f[l4 : l4 + 4])
            k = (src, dst, proto, sport, dport, direction)
            c = out.setdefault(k, [0, 0])
            c[0] += 1
            c[1] += length
        return out
