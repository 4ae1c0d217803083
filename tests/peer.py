"""Traffic peer run inside a test namespace: `udp PORT...` binds UDP sockets
(v4 and v6) that swallow datagrams; `udp-echo PORT...` binds the same but
sends each datagram back to its sender, same payload; `tcp PORT` accepts
connections and reads them to EOF. Prints "ready" once listening, then
serves until killed."""

import select
import socket
import sys


def main() -> None:
    kind, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
    socks = []
    for port in ports:
        for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            if kind in ("udp", "udp-echo"):
                s = socket.socket(fam, socket.SOCK_DGRAM)
            else:
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((addr, port))
            except OSError:
                if fam == socket.AF_INET6:  # namespace without IPv6
                    s.close()
                    continue
                raise
            if kind == "tcp":
                s.listen(16)
            socks.append(s)
    print("ready", flush=True)
    conns = []
    while True:
        r, _, _ = select.select(socks + conns, [], [])
        for s in r:
            if s in conns:
                if not s.recv(65536):
                    conns.remove(s)
                    s.close()
            elif s.type == socket.SOCK_STREAM:
                c, _ = s.accept()
                conns.append(c)
            elif kind == "udp-echo":
                data, addr = s.recvfrom(65536)
                s.sendto(data, addr)
            else:
                s.recv(65536)


if __name__ == "__main__":
    main()
