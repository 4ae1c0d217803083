"""Bounded soak test (`make soak`, a few minutes; never part of `make test`).

Sustained UDP traffic over many rotating flows on a veth pair, while

- the CLI (another process) streams JSON Lines every second, and
- in this process, one collector is read by two threads at once: one
  snapshots (and renders) in a loop, the other iterates Collector.stream().

Checks: every line the CLI writes is valid JSON and the CLI writes nothing
else to stderr than its start-up line; neither thread meets an error; the
memory (RSS) of both Python processes stays flat after warm-up (reported at
start and end); the counts are conserved exactly once traffic stops: the
snapshots' totals, the sum of the stream's interval deltas, and the sum of
the CLI's interval lines each equal the packets the sender sent.

SOAK_SECONDS (default 150) sets the duration; SOAK_RSS_SLACK_MB (default 24)
the allowed growth between the first and the last third of the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from pktstat_bpf import Collector

SECONDS = float(os.environ.get("SOAK_SECONDS", "150"))
SLACK_MB = float(os.environ.get("SOAK_RSS_SLACK_MB", "24"))
FLOWS = 2000
BASE_PORT = 20000

SENDER = """
import socket, sys, time
dst, seconds, flows, base = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end:
    for _ in range(500):
        socks[i % 8].sendto(b"s" * 64, (dst, base + i % flows))
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


def is_sent(flow: dict) -> bool:
    """A datagram of the sender (and not, say, an ICMP error about one)."""
    ours = BASE_PORT <= flow["dstPort"] < BASE_PORT + FLOWS
    return ours and flow["proto"] == "UDP" and flow["direction"] == "egress"


def test_soak(netns_v4only):
    ns = netns_v4only
    peer = ns.peer("udp", *[str(BASE_PORT + i) for i in range(0, FLOWS, 50)])  # some ports answer, most do not
    cli = ns.exec_a(
        sys.executable, "-m", "pktstat_bpf", "-i", "va", "--jsonl", "-r", "1s", "-t", f"{SECONDS + 30:.0f}s",
        "--max-entries", str(8 * FLOWS), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    cli_lines, cli_sent, bad = [0], [0], []

    def read_cli():
        for line in cli.stdout:
            try:
                row = json.loads(line)
            except ValueError:
                bad.append(line)
                continue
            cli_lines[0] += 1
            if is_sent(row):
                cli_sent[0] += row["packets"]

    reader = threading.Thread(target=read_cli, daemon=True)
    reader.start()
    started = cli.stderr.readline()
    assert "counting on va" in started, started

    samples: list[tuple[float, int, int]] = []
    errors: list[BaseException] = []
    counts = {"snapshots": 0, "intervals": 0}
    done = threading.Event()
    stream_sent = [0]
    t0 = time.monotonic()
    with ns.in_a():
        c = Collector(iface="va", max_entries=8 * FLOWS).start()

    def snapshots():
        try:
            while not done.is_set():
                snap = c.snapshot()
                snap.flows()  # render too: the path a report takes
                counts["snapshots"] += 1
                samples.append((time.monotonic() - t0, rss_kb(), rss_kb(cli.pid)))
                done.wait(0.2)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    snapper = threading.Thread(target=snapshots)
    snapper.start()
    with ns.in_a():
        sender = ns.exec_a(sys.executable, "-c", SENDER, ns.B4, str(SECONDS), str(FLOWS), str(BASE_PORT),
                           stdout=subprocess.PIPE, text=True)  # fmt: skip
    sent = [0]

    def wait_sender():
        sent[0] = int(sender.communicate(timeout=SECONDS + 60)[0])
        time.sleep(0.5)
        done.set()

    waiter = threading.Thread(target=wait_sender)
    waiter.start()
    try:
        for iv in c.stream(1.0, stop=done):  # the second reader of the same collector
            counts["intervals"] += 1
            d = iv.delta.records
            assert (d["packets"] < 1 << 63).all(), "a delta went negative"
            stream_sent[0] += sum(f["packets"] for f in iv.delta.flows() if is_sent(f))
    except BaseException as e:  # noqa: BLE001
        errors.append(e)
        done.set()
    waiter.join()
    snapper.join()
    with ns.in_a():
        c.stop()
    final = c.snapshot()
    c.close()
    time.sleep(1.5)  # one more CLI interval, so its last line counts the tail of the traffic
    cli.send_signal(signal.SIGINT)
    cli_err = cli.stderr.read()
    cli.wait(timeout=30)
    reader.join(timeout=10)
    peer.kill()

    third = [s for s in samples if s[0] < SECONDS / 3], [s for s in samples if s[0] > 2 * SECONDS / 3]
    me = (max(s[1] for s in third[0]), max(s[1] for s in third[1]))
    them = (max(s[2] for s in third[0]), max(s[2] for s in third[1]))
    final_sent = sum(f["packets"] for f in final.flows() if is_sent(f))
    print(
        f"\nsoak {SECONDS:.0f}s: {sent[0]} packets sent over {FLOWS} flows; {counts['snapshots']} snapshots "
        f"and {counts['intervals']} stream intervals in this process, {cli_lines[0]} JSON lines from the CLI\n"
        f"RSS of this process {samples[0][1] / 1024:.1f} MiB at start, {samples[-1][1] / 1024:.1f} MiB at end "
        f"(peak first third {me[0] / 1024:.1f}, last third {me[1] / 1024:.1f}); "
        f"CLI {samples[0][2] / 1024:.1f} -> {samples[-1][2] / 1024:.1f} MiB "
        f"(peak {them[0] / 1024:.1f}, {them[1] / 1024:.1f})\n"
        f"counted: snapshot {final_sent}, stream deltas {stream_sent[0]}, CLI lines {cli_sent[0]}"
    )
    assert not errors, errors
    assert not bad, bad[:3]
    assert (cli.returncode, cli_err) == (0, ""), cli_err
    assert cli_lines[0] > SECONDS / 2
    assert counts["snapshots"] > SECONDS and counts["intervals"] >= SECONDS - 2
    assert (me[1] - me[0]) / 1024 < SLACK_MB
    assert (them[1] - them[0]) / 1024 < SLACK_MB
    t = final.totals
    assert t.conserved and t.all.overflow_packets == 0
    assert final_sent == stream_sent[0] == cli_sent[0] == sent[0]
