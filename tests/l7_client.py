"""The Python clients of tests/test_l7_live.py, run as their own processes
(in cgroup mode, inside the test's cgroup): `l7_client.py CMD HOST PORT`.

  pg          pg8000 (a real PostgreSQL client library) connects: its
              StartupMessage, the server's answer, its Terminate
  smtp        smtplib: reads the greeting, EHLO, NOOP, QUIT
  random-tcp  ROUNDS segments of fixed pseudo-random bytes, each echoed
              back before the next is sent (so each is its own packet),
              each sent from the next CPU in turn (a flow's packets on
              several CPUs, as a migrating thread's are)
  random-udp  the same as datagrams
  handshake   connects and closes: no payload either way
"""

from __future__ import annotations

import os
import random
import socket
import sys

ROUNDS = 3  # l7.h's L7_BUDGET: the payload packets a flow is looked at on


def random_chunks() -> list[bytes]:
    """Fixed bytes that no signature of l7.h matches (the seed is checked by
    the test's "unknown" flows: a match would label them)."""
    rng = random.Random(1717)
    return [bytes(rng.randrange(256) for _ in range(64)) for _ in range(ROUNDS)]


def next_cpu(i: int) -> None:
    """The calling thread onto the i-th of its CPUs (modulo their number)."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[i % len(cpus)]})


def main() -> None:
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "pg":
        import pg8000.native

        pg8000.native.Connection("pbt", host=host, port=port, database="pbt", timeout=5).close()
    elif cmd == "smtp":
        import smtplib

        with smtplib.SMTP(host, port, local_hostname="client.test", timeout=5) as s:
            s.ehlo()
            s.noop()
    elif cmd == "random-tcp":
        with socket.create_connection((host, port), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i, chunk in enumerate(random_chunks()):
                next_cpu(i)
                s.sendall(chunk)
                got = b""
                while len(got) < len(chunk):
                    got += s.recv(len(chunk) - len(got)) or sys.exit("echo ended early")
    elif cmd == "random-udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            for i, chunk in enumerate(random_chunks()):
                next_cpu(i)
                s.sendto(chunk, (host, port))
                s.recvfrom(65536)
    elif cmd == "handshake":
        socket.create_connection((host, port), timeout=5).close()
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
