"""Interval rates and streams end to end: Collector.stream, --jsonl, --plain,
-u, --external on known traffic in test-made namespaces."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from netns import NetnsPair
from pktstat_bpf import Collector
from traffic import ETH, IP4, IP6, UDP, send_udp

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


class Sender:
    """One UDP socket (so one flow) that sends bursts on request."""

    def __init__(self, dst: str, port: int) -> None:
        self.dst, self.port = dst, port
        self.sock = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)

        self.sport = 0

    def burst(self, count: int, payload: int) -> None:
        for _ in range(count):
            self.sock.sendto(b"s" * payload, (self.dst, self.port))
        self.sport = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def cli(netns: NetnsPair, *args: str) -> subprocess.Popen:
    p = netns.exec_a(
        sys.executable,
        "-m",
        "pktstat_bpf",
        "-i",
        "va",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = p.stderr.readline()
    assert "counting on va via tcx" in line, line + p.stderr.read()
    return p


def udp_lines(out: str, port: int, event: str | None = None) -> list[dict]:
    """The flow lines to UDP `port` (or its end records, with `event="end"`)."""
    docs = [json.loads(line) for line in out.splitlines()]
    return [d for d in docs if d["proto"] == "UDP" and d["dstPort"] == port and d.get("event") == event]


def test_collector_stream_deltas_are_exact_and_add_up(netns: NetnsPair):
    peer = netns.peer("udp", "5101")
    size = ETH + IP4 + UDP + 100
    try:
        with netns.in_a():
            s = Sender(netns.B4, 5101)
            stop = threading.Event()
            with Collector(iface="va") as c:
                seen = []
                for iv in c.stream(0.3, stop=stop):
                    seen.append(iv)
                    if iv.index == 0:
                        s.burst(4, 100)  # lands in interval 1
                    elif iv.index == 1:
                        s.burst(3, 100)  # interval 2, then silence
                    elif iv.index == 3:
                        stop.set()  # the stream yields one last interval and ends
            s.close()
            final = c.snapshot()
    finally:
        peer.kill()
    key = (netns.A4, netns.B4, s.sport, 5101)

    def mine(iv):
        out = [d for d in iv.delta.flows() if (d["srcIp"], d["dstIp"], d["srcPort"], d["dstPort"]) == key]
        return out[0] if out else None

    assert [iv.index for iv in seen] == [0, 1, 2, 3, 4]
    per = [mine(iv) for iv in seen]
    assert per[0] is None
    assert (per[1]["packets"], per[1]["bytes"], per[1]["totalPackets"]) == (4, 4 * size, 4)
    assert (per[2]["packets"], per[2]["bytes"], per[2]["totalPackets"]) == (3, 3 * size, 7)
    assert (per[3]["packets"], per[3]["bitrate"], per[3]["totalBytes"]) == (0, 0.0, 7 * size)
    for iv, d in zip(seen[1:3], per[1:3]):
        assert d["bitrate"] == pytest.approx(8 * d["bytes"] / iv.duration)
        assert 0.25 < iv.duration < 0.6
    # intervals tile the capture and their deltas add up to the final counts
    for a, b in zip(seen, seen[1:]):
        assert a.end == b.start
    assert sum(iv.delta.totals.all.packets for iv in seen) == seen[-1].cumulative.totals.all.packets
    assert all(iv.delta.totals.conserved for iv in seen)
    (f,) = [d for d in final.flows() if (d["srcIp"], d["dstIp"], d["srcPort"], d["dstPort"]) == key]
    assert (f["packets"], f["bytes"]) == (7, 7 * size)


def drain_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pktstat-bpf drains")]


def test_a_slow_loop_does_not_stretch_the_intervals(netns: NetnsPair):
    """The drains keep their 50 ms pace while the loop is busy for a second
    on its first interval (issue 16): the intervals it then gets are each
    about 50 ms long, tile the capture, and hold the packets sent meanwhile
    exactly once, spread over them as they were sent."""
    peer = netns.peer("udp", "5103")
    size = ETH + IP4 + UDP + 20
    try:
        with netns.in_a():
            s = Sender(netns.B4, 5103)
            stop = threading.Event()
            seen = []
            with Collector(iface="va") as c:
                for iv in c.stream(0.05, stop=stop):
                    seen.append(iv)
                    if len(seen) == 1:
                        for _ in range(10):  # a busy loop: 1 s on one interval
                            s.burst(3, 20)
                            time.sleep(0.1)
                        stop.set()
                assert not drain_threads()
            s.close()
    finally:
        peer.kill()
    key = (netns.A4, netns.B4, s.sport, 5103)
    per = [
        sum(
            d["packets"]
            for d in iv.delta.flows()
            if (d["srcIp"], d["dstIp"], d["srcPort"], d["dstPort"]) == key
        )
        for iv in seen
    ]
    assert [iv.index for iv in seen] == list(range(len(seen))) and len(seen) >= 12, per
    assert max(iv.duration for iv in seen[:-1]) < 0.15, [round(iv.duration, 3) for iv in seen]
    for a, b in zip(seen, seen[1:]):
        assert a.end == b.start
    assert sum(per) == 30 and sum(1 for n in per if n) >= 5, per
    assert sum(iv.delta.totals.all.packets for iv in seen) == seen[-1].cumulative.totals.all.packets
    (f,) = [d for d in c.snapshot().flows() if (d["srcIp"], d["dstIp"], d["srcPort"], d["dstPort"]) == key]
    assert (f["packets"], f["bytes"]) == (30, 30 * size)


def test_leaving_the_loop_stops_the_drains_and_a_failing_drain_is_raised_in_it(netns: NetnsPair):
    """A break ends the drain thread at once (its next drain was 0.5 s
    away); the collector then drains on its own again (snapshot()). A drain
    that fails (the collector closed under the stream) raises in the loop."""
    from pktstat_bpf.core.errors import PktstatError

    with netns.in_a():
        with Collector(iface="va") as c:
            for _ in c.stream(0.5):
                t0 = time.monotonic()
                break
            assert time.monotonic() - t0 < 0.25 and not drain_threads()
            send_udp(netns.B4, 5104, 1, 10)
            assert c.snapshot().totals.all.packets >= 1  # not streaming: drained first
            with pytest.raises(PktstatError, match="never started"):
                for _ in c.stream(0.05):
                    c.close()  # the next drain finds no engine: raised here
            assert not drain_threads()


def test_jsonl_one_object_per_flow_per_interval_until_timeout(netns: NetnsPair):
    peer = netns.peer("udp", "5102")
    size4, size6 = ETH + IP4 + UDP + 50, ETH + IP6 + UDP + 200
    try:
        p = cli(netns, "--jsonl", "-r", "400ms", "-t", "2500ms")
        with netns.in_a():
            s4, s6 = Sender(netns.B4, 5102), Sender(netns.B6, 5102)
            s4.burst(5, 50)
            s6.burst(2, 200)
            time.sleep(0.9)
            s4.burst(3, 50)
        out, err = p.communicate(timeout=20)
        s4.close(), s6.close()
    finally:
        peer.kill()
    assert p.returncode == 0, err
    assert "Traceback" not in err
    lines = udp_lines(out, 5102)
    v4 = [d for d in lines if d["srcPort"] == s4.sport and d["dstIp"] == netns.B4]
    v6 = [d for d in lines if d["srcPort"] == s6.sport and d["dstIp"] == netns.B6]
    assert sum(d["packets"] for d in v4) == 8 and sum(d["bytes"] for d in v4) == 8 * size4
    assert sum(d["packets"] for d in v6) == 2 and sum(d["bytes"] for d in v6) == 2 * size6
    assert v4[-1]["totalPackets"] == 8 and v4[-1]["totalBytes"] == 8 * size4
    # a flow shows while it sends, then once with bitrate 0, then no more
    assert [d["packets"] for d in v6] == [2, 0] and v6[1]["bitrate"] == 0.0
    assert v4[-1]["packets"] == 0 and v4[-1]["bitrate"] == 0.0
    # ... and so for IPv4, once after each of its two bursts (5, then 3 packets)
    shape = "".join("P" if d["packets"] else "Z" for d in v4)
    assert re.fullmatch(r"P+ZP+Z", shape), v4
    first = shape.index("Z")
    assert sum(d["packets"] for d in v4[:first]) == 5 and sum(d["packets"] for d in v4[first:]) == 3
    assert all((d["bitrate"] == 0.0) == (d["packets"] == 0) for d in v4)
    for d in v4 + v6:
        assert RFC3339_UTC.match(d["timestamp"]), d["timestamp"]
        assert d["bitrate"] == pytest.approx(8 * d["bytes"] / d["interval"])
        assert d["direction"] == "egress" and d["iface"] == "va"
    stamps = [d["timestamp"] for d in json.loads("[" + ",".join(out.splitlines()) + "]")]
    assert stamps == sorted(stamps)
    # the capture's end hands out each flow's record once: all of its packets, after its last line
    ends = udp_lines(out, 5102, "end")
    e4 = [d for d in ends if d["srcPort"] == s4.sport and d["dstIp"] == netns.B4]
    e6 = [d for d in ends if d["srcPort"] == s6.sport and d["dstIp"] == netns.B6]
    assert [(d["reason"], d["packets"], d["bytes"], d["totalPackets"], d["totalBytes"]) for d in e4] == [
        ("end", 8, 8 * size4, 8, 8 * size4)
    ]
    assert [(d["reason"], d["packets"], d["totalBytes"]) for d in e6] == [("end", 2, 2 * size6)]
    assert "bitrate" not in e4[0] and e4[0]["timestamp"] >= v4[-1]["timestamp"]


def test_plain_text_lines_and_sigterm_exit_0(netns: NetnsPair):
    peer = netns.peer("udp", "5103")
    try:
        p = cli(netns, "--plain", "-r", "300ms", "-t", "0")
        with netns.in_a():
            sp = send_udp(netns.B6, 5103, 4, 10)
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
    finally:
        peer.kill()
    assert p.returncode == 0, err
    want = (
        f" bitrate: .+, packets: 4, bytes: {4 * (ETH + IP6 + UDP + 10)}, proto: UDP, (app: \\?, )?"
        f"src: \\[{netns.A6}\\]:{sp}, dst: \\[{netns.B6}\\]:5103$"
    )
    hits = [line for line in out.splitlines() if re.search(want, line)]
    assert len(hits) == 1, out
    assert RFC3339_UTC.match(hits[0].split(" ", 1)[0])
    assert re.search(f"packets: 0, bytes: 0, proto: UDP, (app: \\?, )?src: \\[{netns.A6}\\]:{sp}", out)


def test_unique_prints_each_connection_once(netns: NetnsPair):
    peer = netns.peer("udp", "5104", "5105")
    try:
        p = cli(netns, "-u", "--jsonl", "-r", "300ms", "-t", "2s")
        with netns.in_a():
            a, b = Sender(netns.B4, 5104), Sender(netns.B4, 5105)
            a.burst(2, 10)
            time.sleep(0.7)
            a.burst(2, 10)
            b.burst(1, 10)
            time.sleep(0.7)
            a.burst(1, 10)
            b.burst(1, 10)
        out, err = p.communicate(timeout=20)
        a.close(), b.close()
    finally:
        peer.kill()
    assert p.returncode == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    conns = [(d["srcIp"], d["srcPort"], d["dstIp"], d["dstPort"], d["proto"]) for d in docs]
    assert len(conns) == len(set(conns))  # nothing twice
    assert (netns.A4, a.sport, netns.B4, 5104, "UDP") in conns
    assert (netns.A4, b.sport, netns.B4, 5105, "UDP") in conns
    (first_a,) = [d for d in docs if d["srcPort"] == a.sport]
    assert first_a["packets"] == 2  # shown in the interval it first sent in


def test_plain_unique_is_the_default_stream_format(netns: NetnsPair):
    peer = netns.peer("udp", "5106")
    try:
        p = cli(netns, "-u", "-r", "300ms", "-t", "1500ms")
        with netns.in_a():
            s = Sender(netns.B4, 5106)
            s.burst(1, 10)
            time.sleep(0.6)
            s.burst(1, 10)
        out, err = p.communicate(timeout=20)
        s.close()
    finally:
        peer.kill()
    assert p.returncode == 0, err
    mine = [line for line in out.splitlines() if f"src: {netns.A4}:{s.sport}, dst: {netns.B4}:5106" in line]
    assert len(mine) == 1 and "packets: 1, bytes: 52, proto: UDP" in mine[0]


def test_external_keeps_only_destinations_outside(netns: NetnsPair):
    peer = netns.peer("udp", "5107")
    try:
        # A's own /32 and B's IPv6 /64 are "internal": only A -> B4 is external.
        p = cli(
            netns,
            "--jsonl",
            "--external",
            "--internal-networks",
            f"{netns.A4}/32,fd99::/64",
            "-r",
            "300ms",
            "-t",
            "1200ms",
        )
        with netns.in_a():
            s4 = send_udp(netns.B4, 5107, 3, 20)
            s6 = send_udp(netns.B6, 5107, 3, 20)
        out, err = p.communicate(timeout=20)
    finally:
        peer.kill()
    assert p.returncode == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert docs and all(d["dstIp"] not in (netns.A4, netns.B6, netns.A6) for d in docs)
    mine = [d for d in docs if d["srcPort"] == s4 and d["dstPort"] == 5107 and "event" not in d]
    assert sum(d["packets"] for d in mine) == 3
    ends = [d for d in docs if d["srcPort"] == s4 and d["dstPort"] == 5107 and "event" in d]
    assert [(d["event"], d["reason"], d["packets"]) for d in ends] == [("end", "end", 3)]
    assert not [d for d in docs if d["srcPort"] == s6]


def test_external_with_default_networks_hides_private_destinations(netns_v4only: NetnsPair):
    ns = netns_v4only
    peer = ns.peer("udp", "5108")
    try:
        p = cli(ns, "-j", "--external", "-t", "1s")
        with ns.in_a():
            send_udp(ns.B4, 5108, 3, 20)
        out, err = p.communicate(timeout=20)
    finally:
        peer.kill()
    assert p.returncode == 0, err
    doc = json.loads(out)
    assert doc["flows"] == []  # 10.99.0.0/24 is inside 10.0.0.0/8
    assert doc["totals"]["flowPackets"] >= 3  # counted, just not shown


def test_closed_stdout_ends_cleanly_with_exit_0(netns: NetnsPair):
    peer = netns.peer("udp", "5109")
    stop = threading.Event()

    def traffic():
        with netns.in_a():
            s = Sender(netns.B4, 5109)
            for _ in range(200):  # bounded: at most ~10 s
                if stop.wait(0.05):
                    break
                s.burst(1, 10)
            s.close()

    t = threading.Thread(target=traffic)
    t.start()
    try:
        r = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                netns.ns_a,
                "bash",
                "-c",
                f"{sys.executable} -m pktstat_bpf -i va --jsonl -r 100ms -t 0 | head -n 2; echo rc=${{PIPESTATUS[0]}} >&2",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        stop.set()
        t.join()
        peer.kill()
    assert len(r.stdout.splitlines()) == 2 and all(json.loads(x) for x in r.stdout.splitlines())
    assert r.stderr.splitlines()[-1] == "rc=0", r.stderr
    assert "Traceback" not in r.stderr and "error" not in r.stderr
    assert not netns.ours_attached()
