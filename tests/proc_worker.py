"""A traffic process for the process-mode tests: `proc_worker.py NAME CMD ARGS`.

NAME becomes the process name (comm). Every command counts its own send and
receive calls that moved data and ends by printing one JSON line:
{"port": LOCAL_PORT, "sent": [CALLS, BYTES], "recv": [CALLS, BYTES]}.
A server prints "ready PORT" first.

  tcp-server PORT REPLY           accept one connection, read it to EOF,
                                  send REPLY bytes, close
  tcp-client DST PORT SEND         connect, send SEND bytes (send() calls of at
                                  most 1000 bytes), shut down, read to EOF
  udp-server FAMILY PORT COUNT    answer COUNT datagrams: MSG_PEEK, recvfrom,
                                  sendto back
  udp-client MODE DST PORT COUNT SIZE
                                  COUNT datagrams of SIZE bytes, each answered:
                                  MODE connected (connect, send, recv),
                                  unconnected (sendto, recvfrom),
                                  msg (sendmsg, recvmsg), mmsg (sendmmsg and
                                  recvmmsg of all COUNT at once)
  ping DST COUNT SIZE             ICMP echo over a ping socket (SOCK_DGRAM)
  rawping DST COUNT SIZE          ICMP echo over a raw IPv4 socket; receives
                                  the replies (IP header included)
  icmp-error DST PORT SIZE        send SIZE bytes over UDP to a closed port
                                  and receive the ICMP error (port
                                  unreachable) on a raw IPv4 ICMP socket
  tcp-hold DST PORT BYTES         connect, print "ready PORT", wait for a line
                                  on stdin, send BYTES, wait for another line,
                                  close
"""

from __future__ import annotations

import ctypes
import json
import socket
import struct
import sys
import threading

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15


def set_name(name: str) -> None:
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def fam(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


class Counts:
    def __init__(self) -> None:
        self.sent = [0, 0]
        self.recv = [0, 0]
        self.port = 0

    def send(self, n: int) -> None:
        if n > 0:
            self.sent[0] += 1
            self.sent[1] += n

    def got(self, n: int) -> None:
        if n > 0:
            self.recv[0] += 1
            self.recv[1] += n

    def report(self) -> None:
        print(json.dumps({"port": self.port, "sent": self.sent, "recv": self.recv}), flush=True)


def tcp_server(c: Counts, port: int, reply: int, family: str = "4") -> None:
    v6 = family == "6"
    ls = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::" if v6 else "0.0.0.0", port))
    ls.listen(1)
    c.port = ls.getsockname()[1]
    print("ready", c.port, flush=True)
    s, _ = ls.accept()
    while True:
        d = s.recv(65536)
        if not d:
            break
        c.got(len(d))
    left = reply
    while left:
        n = s.send(b"r" * min(left, 1000))
        c.send(n)
        left -= n
    s.close()


def tcp_client(c: Counts, dst: str, port: int, size: int) -> None:
    s = socket.create_connection((dst, port), timeout=10)
    c.port = s.getsockname()[1]
    left = size
    while left:
        n = s.send(b"t" * min(left, 1000))
        c.send(n)
        left -= n
    s.shutdown(socket.SHUT_WR)
    while True:
        d = s.recv(65536)
        if not d:
            break
        c.got(len(d))
    s.close()


def udp_server(c: Counts, family: str, port: int, count: int) -> None:
    f = socket.AF_INET6 if family == "6" else socket.AF_INET
    s = socket.socket(f, socket.SOCK_DGRAM)
    s.bind(("::" if f == socket.AF_INET6 else "0.0.0.0", port))
    c.port = s.getsockname()[1]
    print("ready", c.port, flush=True)
    for _ in range(count):
        s.recv(65536, socket.MSG_PEEK)  # not traffic: never counted
        d, addr = s.recvfrom(65536)
        c.got(len(d))
        c.send(s.sendto(d, addr))


class iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", msghdr), ("msg_len", ctypes.c_uint)]


def sockaddr_bytes(dst: str, port: int) -> bytes:
    if fam(dst) == socket.AF_INET:
        return (
            struct.pack("=H", socket.AF_INET)
            + struct.pack("!H", port)
            + socket.inet_pton(socket.AF_INET, dst)
            + bytes(8)
        )
    return (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!HI", port, 0)
        + socket.inet_pton(socket.AF_INET6, dst)
        + struct.pack("=I", 0)
    )


def mmsg(s: socket.socket, c: Counts, dst: str, port: int, count: int, size: int) -> None:
    """sendmmsg of `count` datagrams, then recvmmsg of the answers."""
    name = sockaddr_bytes(dst, port)
    keep = []
    msgs = (mmsghdr * count)()
    for i in range(count):
        buf = ctypes.create_string_buffer(b"m" * size, size)
        nb = ctypes.create_string_buffer(name, len(name))
        io = (iovec * 1)(iovec(ctypes.cast(buf, ctypes.c_void_p), size))
        keep += [buf, nb, io]
        msgs[i].msg_hdr.msg_name = ctypes.cast(nb, ctypes.c_void_p)
        msgs[i].msg_hdr.msg_namelen = len(name)
        msgs[i].msg_hdr.msg_iov = io
        msgs[i].msg_hdr.msg_iovlen = 1
    sent = 0
    while sent < count:
        n = _libc.sendmmsg(s.fileno(), ctypes.byref(msgs, sent * ctypes.sizeof(mmsghdr)), count - sent, 0)
        if n < 0:
            raise OSError(ctypes.get_errno(), "sendmmsg")
        for i in range(sent, sent + n):
            c.send(msgs[i].msg_len)
        sent += n
    rmsgs = (mmsghdr * count)()
    for i in range(count):
        buf = ctypes.create_string_buffer(65536)
        nb = ctypes.create_string_buffer(28)
        io = (iovec * 1)(iovec(ctypes.cast(buf, ctypes.c_void_p), 65536))
        keep += [buf, nb, io]
        rmsgs[i].msg_hdr.msg_name = ctypes.cast(nb, ctypes.c_void_p)
        rmsgs[i].msg_hdr.msg_namelen = 28
        rmsgs[i].msg_hdr.msg_iov = io
        rmsgs[i].msg_hdr.msg_iovlen = 1
    got = 0
    while got < count:
        n = _libc.recvmmsg(
            s.fileno(), ctypes.byref(rmsgs, got * ctypes.sizeof(mmsghdr)), count - got, 0, None
        )
        if n < 0:
            raise OSError(ctypes.get_errno(), "recvmmsg")
        for i in range(got, got + n):
            c.got(rmsgs[i].msg_len)
        got += n


def udp_client(c: Counts, mode: str, dst: str, port: int, count: int, size: int) -> None:
    if mode == "thread":  # a thread other than the main one sends and receives on a connected socket
        t = threading.Thread(target=udp_client, args=(c, "connected", dst, port, count, size))
        t.start()
        t.join()
        return
    s = socket.socket(fam(dst), socket.SOCK_DGRAM)
    s.settimeout(10)
    data = b"u" * size
    if mode == "connected":
        s.connect((dst, port))
    if mode == "mmsg":
        _libc.sendmmsg.argtypes = _libc.recvmmsg.argtypes = None
        s.setblocking(True)
        mmsg(s, c, dst, port, count, size)
    else:
        for _ in range(count):
            if mode == "connected":
                c.send(s.send(data))
                c.got(len(s.recv(65536)))
            elif mode == "unconnected":
                c.send(s.sendto(data, (dst, port)))
                c.got(len(s.recvfrom(65536)[0]))
            elif mode == "msg":
                c.send(s.sendmsg([data[: size // 2], data[size // 2 :]], [], 0, (dst, port)))
                c.got(len(s.recvmsg(65536)[0]))
            else:
                sys.exit(f"unknown mode {mode}")
    c.port = s.getsockname()[1]


def ping(c: Counts, dst: str, count: int, size: int, raw: bool) -> None:
    v6 = fam(dst) == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    s = socket.socket(fam(dst), socket.SOCK_RAW if raw else socket.SOCK_DGRAM, proto)
    s.settimeout(10)
    for seq in range(count):
        msg = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0x4242, seq) + b"p" * size
        if raw and not v6:  # a raw IPv4 socket sends what it is given: checksum it
            csum = _checksum(msg)
            msg = msg[:2] + struct.pack("!H", csum) + msg[4:]
        c.send(s.sendto(msg, (dst, 0)))
        while True:
            d = s.recv(65536)
            c.got(len(d))
            icmp = d[20:] if raw and not v6 else d
            if icmp[0] in (0, 129):
                break


def _checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


ICMP6_FILTER = 1


def icmp_error(c: Counts, dst: str, port: int, size: int) -> None:
    v6 = fam(dst) == socket.AF_INET6
    raw = socket.socket(fam(dst), socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    if v6:  # pass only destination unreachable (type 1): neighbour discovery is not this process's traffic
        blocked = [0xFFFFFFFF] * 8
        blocked[0] &= ~(1 << 1)
        raw.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *blocked))
    raw.settimeout(10)
    u = socket.socket(fam(dst), socket.SOCK_DGRAM)
    c.send(u.sendto(b"e" * size, (dst, port)))
    while True:
        d = raw.recv(65536)
        c.got(len(d))
        if (d[0] if v6 else d[20]) == (1 if v6 else 3):  # destination unreachable
            break
    c.port = u.getsockname()[1]


def tcp_hold(c: Counts, dst: str, port: int, size: int) -> None:
    s = socket.create_connection((dst, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.port = s.getsockname()[1]
    print("ready", c.port, flush=True)
    sys.stdin.readline()
    c.send(s.send(b"h" * size))
    print("sent", flush=True)
    sys.stdin.readline()
    s.close()


def main() -> None:
    name, cmd, a = sys.argv[1], sys.argv[2], sys.argv[3:]
    set_name(name)
    c = Counts()
    if cmd == "tcp-server":
        tcp_server(c, int(a[0]), int(a[1]), *a[2:3])
    elif cmd == "tcp-client":
        tcp_client(c, a[0], int(a[1]), int(a[2]))
    elif cmd == "udp-server":
        udp_server(c, a[0], int(a[1]), int(a[2]))
    elif cmd == "udp-client":
        udp_client(c, a[0], a[1], int(a[2]), int(a[3]), int(a[4]))
    elif cmd in ("ping", "rawping"):
        ping(c, a[0], int(a[1]), int(a[2]), raw=cmd == "rawping")
    elif cmd == "icmp-error":
        icmp_error(c, a[0], int(a[1]), int(a[2]))
    elif cmd == "tcp-hold":
        tcp_hold(c, a[0], int(a[1]), int(a[2]))
    else:
        sys.exit(f"unknown command {cmd}")
    c.report()


if __name__ == "__main__":
    main()
