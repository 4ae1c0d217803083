"""A traffic process for the cgroup-mode tests: `cg_worker.py NAME CMD ARGS`.

NAME becomes the process name (comm). Commands:

  udp-send DST PORT COUNT PAYLOAD        COUNT datagrams; prints the source port
  udp-flows DST PORT PAYLOAD COUNT...    from one socket, COUNT datagrams to PORT,
                                         the next COUNT to PORT+1 ...; prints the
                                         source port
  udp-spread DST PORT PER_CPU PAYLOAD    one socket, PER_CPU datagrams from each
                                         CPU in turn (pinned); prints the port
  udp-send-thread TNAME DST PORT COUNT PAYLOAD
                                         the same from a thread named TNAME that
                                         also makes the socket; prints the port
  udp-sink FAMILY PORT                   binds (4 or 6; PORT 0 = any), prints
                                         "ready PORT", swallows datagrams forever
  tcp-sink PORT                          listens on 0.0.0.0, prints "ready PORT",
                                         reads every connection to EOF
  tcp-client DST PORT BYTES              connects, sends BYTES, shuts down, waits
                                         for the peer's FIN; prints the port
  tcp-hold DST PORT                      connects and prints "ready PORT"; each
                                         stdin line N sends N bytes (and prints
                                         "sent"); EOF on stdin ends it like
                                         tcp-client
  fork-send DST PORT COUNT PAYLOAD       one UDP socket: the parent sends COUNT,
                                         forks, the child sends COUNT and exits,
                                         the parent sends COUNT more; prints
                                         "PORT PARENT_PID CHILD_PID"
  daemon-send DST PORT COUNT PAYLOAD     one UDP socket; forks; the parent exits;
                                         the child, once alone, sends COUNT;
                                         prints "PORT CHILD_PID"
  ping DST COUNT PAYLOAD                 ICMP echo on a raw socket; prints replies
  tcp-flags-client DST PORT ABORT        connects, sends 3000 bytes, closes in
                                         order (ABORT 0) or with SO_LINGER 0
                                         (ABORT 1: RST); prints the port
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15


def set_name(name: str) -> None:
    # (fsencode: a name given as bytes that are not UTF-8 stays those bytes)
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(os.fsencode(name)[:15]), 0, 0, 0)


def fam(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def udp_send(dst: str, port: int, count: int, payload: int, sock: socket.socket | None = None) -> int:
    s = sock or socket.socket(fam(dst), socket.SOCK_DGRAM)
    for _ in range(count):
        s.sendto(b"u" * payload, (dst, port))
    return s.getsockname()[1]


def tcp_finish(s: socket.socket) -> None:
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    while s.recv(65536):
        pass
    s.close()


def main() -> None:
    name, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    set_name(name)
    if cmd == "udp-send":
        dst, port, count, payload = args[0], int(args[1]), int(args[2]), int(args[3])
        print(udp_send(dst, port, count, payload), flush=True)
    elif cmd == "udp-flows":
        from traffic import send_flows

        print(send_flows(args[0], int(args[1]), [int(a) for a in args[3:]], int(args[2])), flush=True)
    elif cmd == "udp-spread":
        from traffic import send_spread

        print(send_spread(args[0], int(args[1]), int(args[2]), int(args[3]))[0], flush=True)
    elif cmd == "udp-send-thread":
        tname, dst, port, count, payload = args[0], args[1], int(args[2]), int(args[3]), int(args[4])
        out = []

        def run() -> None:
            set_name(tname)
            out.append(udp_send(dst, port, count, payload))

        t = threading.Thread(target=run)
        t.start()
        t.join()
        print(out[0], flush=True)
    elif cmd == "udp-sink":
        family = socket.AF_INET6 if args[0] == "6" else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", int(args[1])))
        print("ready", s.getsockname()[1], flush=True)
        while True:
            s.recv(65536)
    elif cmd == "tcp-sink":
        import select

        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", int(args[0])))
        ls.listen(16)
        print("ready", ls.getsockname()[1], flush=True)
        conns: list[socket.socket] = []
        while True:
            r, _, _ = select.select([ls, *conns], [], [])
            for s in r:
                if s is ls:
                    conns.append(ls.accept()[0])
                elif not s.recv(65536):
                    conns.remove(s)
                    s.close()
    elif cmd == "tcp-client":
        s = socket.create_connection((args[0], int(args[1])), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"t" * int(args[2]))
        port = s.getsockname()[1]
        tcp_finish(s)
        print(port, flush=True)
    elif cmd == "tcp-flags-client":
        from traffic import tcp_close_or_abort

        print(tcp_close_or_abort(args[0], int(args[1]), 3000, args[2] == "1"), flush=True)
    elif cmd == "tcp-hold":
        s = socket.create_connection((args[0], int(args[1])), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        print("ready", s.getsockname()[1], flush=True)
        for line in sys.stdin:
            s.sendall(b"h" * int(line))
            print("sent", flush=True)
        tcp_finish(s)
    elif cmd == "fork-send":
        dst, port, count, payload = args[0], int(args[1]), int(args[2]), int(args[3])
        s = socket.socket(fam(dst), socket.SOCK_DGRAM)
        sport = udp_send(dst, port, count, payload, s)
        child = os.fork()
        if child == 0:
            udp_send(dst, port, count, payload, s)
            os._exit(0)
        os.waitpid(child, 0)
        udp_send(dst, port, count, payload, s)
        print(sport, os.getpid(), child, flush=True)
    elif cmd == "daemon-send":
        dst, port, count, payload = args[0], int(args[1]), int(args[2]), int(args[3])
        s = socket.socket(fam(dst), socket.SOCK_DGRAM)
        s.bind(("::" if fam(dst) == socket.AF_INET6 else "0.0.0.0", 0))
        parent = os.getpid()
        if os.fork() != 0:
            os._exit(0)  # the parent goes; its copy of the socket with it
        while os.getppid() == parent:
            time.sleep(0.01)
        time.sleep(0.05)
        sport = udp_send(dst, port, count, payload, s)
        print(sport, os.getpid(), flush=True)
    elif cmd == "ping":
        from traffic import ping

        print(ping(args[0], int(args[1]), int(args[2])), flush=True)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
