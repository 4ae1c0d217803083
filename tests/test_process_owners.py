"""Process mode's one per-socket map (struct sock * -> the process last seen
sending on a TCP socket, for its retransmissions): a socket's entry goes at
its close, only TCP sockets have one, and an entry the LRU map pushes out
while its socket lives is counted when the socket closes.

The counters are the host's (process mode sees every process), so sockets
of other processes closing meanwhile can only add to them: the assertions
about the test's own sockets are lower bounds on the counters, and exact on
the map's entries of the test's process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from _bench import bench_core
from pktstat_bpf.core.modes.process import ProcessMode

pytestmark = pytest.mark.kernel

# The child: a loopback server and `n` connections; each client sends one
# byte, the server answers each with one byte when `echo`, a connected UDP
# socket sends datagrams; "ready" once every byte has arrived (and been
# acknowledged), then everything closes when stdin says so.
CHILD = """
import socket, sys, time
n, echo = int(sys.argv[1]), sys.argv[2] == "1"
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(n)
cli = [socket.create_connection(srv.getsockname()) for _ in range(n)]
acc = [srv.accept()[0] for _ in range(n)]
for c in cli:
    c.sendall(b"x")
for a in acc:
    assert a.recv(1) == b"x"
    if echo:
        a.sendall(b"y")
if echo:
    for c in cli:
        assert c.recv(1) == b"y"
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
u.connect(u.getsockname())
for _ in range(n):
    u.send(b"d")
time.sleep(0.3)  # past the delayed ACKs: every byte sent is acknowledged
print("ready", flush=True)
sys.stdin.readline()
for c in cli:
    c.close()
time.sleep(0.2)
for s in acc + [srv, u]:
    s.close()
"""


def core():
    from pktstat_bpf import _core

    return _core


def held_by(engine, pid: int) -> int:
    return sum(1 for o in bench_core.process_owners(engine).values() if o["pid"] == pid)


def run_child(engine, n: int, echo: bool) -> tuple[int, int]:
    """Run the child; (its entries in the map before it closes its sockets,
    its pid), once its sockets are closed and it has exited."""
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(n), "1" if echo else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        held = held_by(engine, p.pid)
        p.communicate("\n", timeout=30)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0
    return held, p.pid


def settle(engine, want: int) -> dict:
    """The counters once released + evicted reach `want` (the server ends of
    the connections close after the client ends' FIN is answered)."""
    deadline = time.monotonic() + 5
    while True:
        ev = engine.proc_stats()
        if ev["owners_released"] + ev["owners_evicted"] >= want or time.monotonic() > deadline:
            return ev
        time.sleep(0.05)


def test_closed_sockets_leave_the_owner_map(bpf):
    """Every TCP socket that sent has its entry while it lives (the map has
    room), and none else: not the server ends that only received, not the
    UDP socket. None is left once they are closed, and no socket counts as
    evicted: those that sent found their entries, the others never sent."""
    n = 20
    engine = core().ProcessCollector()
    engine.attach()
    try:
        held, pid = run_child(engine, n, echo=False)
        ev = settle(engine, n)
        left = held_by(engine, pid)
    finally:
        engine.detach()
    assert held == n
    assert left == 0
    assert ev["owners_released"] >= n
    assert ev["owners_evicted"] == 0


def test_both_ends_that_sent_have_entries_until_they_close(bpf):
    n = 20
    engine = core().ProcessCollector()
    engine.attach()
    try:
        held, pid = run_child(engine, n, echo=True)
        ev = settle(engine, 2 * n)
        left = held_by(engine, pid)
    finally:
        engine.detach()
    assert held == 2 * n
    assert left == 0
    assert ev["owners_released"] >= 2 * n


def test_owner_evicted_while_its_socket_lives_is_counted(bpf):
    """An owner map too small for the TCP senders that live at once: each
    sender's close either removes its entry (released) or counts the
    eviction of a live socket's entry, and at least as many evictions as the
    senders that had no entry just before they closed."""
    n, entries = 64, 16
    engine = core().ProcessCollector(owner_entries=entries)
    engine.attach()
    try:
        held, pid = run_child(engine, n, echo=False)  # the client ends send; the server ends do not
        ev = settle(engine, n)
        left = held_by(engine, pid)
        mode = ProcessMode(max_entries=1024)
        mode.engine = engine
        extra = mode.report_extra()
    finally:
        engine.detach()
    assert held <= entries + 2  # an LRU map keeps about its size (per-CPU free lists)
    assert left == 0
    assert ev["owners_released"] + ev["owners_evicted"] >= n
    assert ev["owners_evicted"] >= n - held
    # the report and JSON headers: the same counter (never lower than it was above)
    assert extra["ownersEvicted"] >= ev["owners_evicted"]
    assert (
        extra["note"]
        == f"datagrams without peer {extra['noPeerPackets']}; owners evicted {extra['ownersEvicted']}"
    )


def test_owner_entries_must_be_positive(bpf):
    with pytest.raises(OSError, match="map sizes must be positive"):
        core().ProcessCollector(owner_entries=0)
