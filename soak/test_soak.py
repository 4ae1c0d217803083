"""Bounded soak test (`make soak`, a few minutes; never part of `make test`).

Sustained UDP traffic over many rotating flows on a veth pair, while the CLI
streams JSON Lines and a second collector in this process snapshots in a
loop. Checks: every line the CLI writes is valid JSON; the memory (RSS) of
both Python processes stays flat after warm-up; no errors; the snapshotting
collector's totals are conserved exactly once traffic stops.

SOAK_SECONDS (default 150) sets the duration; SOAK_RSS_SLACK_MB (default 24)
the allowed growth between the first and the last third of the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from pktstat_bpf import Collector

SECONDS = float(os.environ.get("SOAK_SECONDS", "150"))
SLACK_MB = float(os.environ.get("SOAK_RSS_SLACK_MB", "24"))
FLOWS = 2000

SENDER = """
import socket, sys, time
dst, seconds, flows = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end:
    for _ in range(500):
        socks[i % 8].sendto(b"s" * 64, (dst, 20000 + i % flows))
        i += 1
    time.sleep(0.01)   # bounded: at most ~50k packets/s
print(i, flush=True)
"""


def rss_kb(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_soak(netns_v4only):
    ns = netns_v4only
    peer = ns.peer("udp", *[str(20000 + i) for i in range(0, FLOWS, 50)])  # some ports answer, most do not
    cli = ns.exec_a(
        sys.executable, "-m", "pktstat_bpf", "-i", "va", "--jsonl", "-r", "1s", "-t", f"{SECONDS + 5:.0f}s",
        "--max-entries", str(8 * FLOWS), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines, bad = [0], []

    def read_cli():
        for line in cli.stdout:
            try:
                json.loads(line)
                lines[0] += 1
            except ValueError:
                bad.append(line)

    reader = threading.Thread(target=read_cli, daemon=True)
    reader.start()
    assert "counting on va" in cli.stderr.readline()
    samples: list[tuple[float, int, int]] = []
    snaps = 0
    errors: list[BaseException] = []
    t0 = time.monotonic()
    with ns.in_a():
        c = Collector(iface="va", max_entries=8 * FLOWS).start()
        sender = ns.exec_a(
            sys.executable, "-c", SENDER, ns.B4, str(SECONDS), str(FLOWS), stdout=subprocess.PIPE, text=True
        )  # fmt: skip
        try:
            while time.monotonic() - t0 < SECONDS:
                try:
                    snap = c.snapshot()
                    snap.flows()  # render too: the path a stream takes
                    snaps += 1
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)
                    break
                samples.append((time.monotonic() - t0, rss_kb(), rss_kb(cli.pid)))
                time.sleep(0.2)
            sent = int(sender.communicate(timeout=60)[0])
            time.sleep(0.5)
            c.stop()
            final = c.snapshot()
        finally:
            c.close()
    cli.send_signal(2)
    out_err = cli.stderr.read()
    cli.wait(timeout=30)
    reader.join(timeout=10)
    peer.kill()

    third = [s for s in samples if s[0] < SECONDS / 3], [s for s in samples if s[0] > 2 * SECONDS / 3]
    me = (max(s[1] for s in third[0]), max(s[1] for s in third[1]))
    them = (max(s[2] for s in third[0]), max(s[2] for s in third[1]))
    print(
        f"\nsoak {SECONDS:.0f}s: {sent} packets sent, {snaps} snapshots, {lines[0]} JSON lines; "
        f"RSS test process {me[0] / 1024:.1f} -> {me[1] / 1024:.1f} MiB, "
        f"CLI {them[0] / 1024:.1f} -> {them[1] / 1024:.1f} MiB"
    )
    assert not errors, errors
    assert not bad, bad[:3]
    assert cli.returncode == 0, out_err
    assert "Traceback" not in out_err
    assert lines[0] > SECONDS / 2
    assert (me[1] - me[0]) / 1024 < SLACK_MB
    assert (them[1] - them[0]) / 1024 < SLACK_MB
    t = final.totals
    assert t.conserved and t.all.overflow_packets == 0
    sent_seen = sum(f["packets"] for f in final.flows() if f["direction"] == "egress" and f["proto"] == "UDP")
    assert sent_seen == sent
