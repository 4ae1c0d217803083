"""Nothing lost: in every mode (TC through TCX and legacy tc, XDP, cgroup,
replay) every packet a program sees is counted exactly once, in a flow, as
unparsed or as overflow, per direction and in bytes too, also when the flow
table is full; per-CPU values are summed without loss (traffic spread over
every CPU adds up exactly, each CPU's share read independently with
bpftool); counters are 64-bit end to end.

The table DRIVERS drives the tests: each driver knows how to make a mode see
known flows (a socket in a test namespace, a process in a test cgroup, a
capture file) and how big each counted packet is; a new mode adds one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pktstat_bpf
import pytest
from _bench import bench_core
from cgroups import TestCgroup, cgroup2_mount
from kstate import held, minus
from netns import NetnsPair, sh
from pktstat_bpf import Collector
from pktstat_bpf.core.snapshot import Totals
from test_replay import udp4, write_pcap
from traffic import ETH, IP4, UDP, send_flows, send_spread

TESTS = Path(__file__).parent
DIRS = {"ingress": 0, "egress": 1, "": 2}


def per_cpu_values(map_ids: set[int], sport: int, dport: int) -> list[dict] | None:
    """Each CPU's value of flow sport -> dport in the flow map among
    `map_ids`, as bpftool dumps it (an oracle independent of the engine's
    per-CPU sum); None if the map has no such flow. Read before the first
    snapshot: a snapshot drains the kernel's flow maps (both sides, "flows"
    and "flows1", are looked at)."""
    for m in map_ids:
        if json.loads(sh("bpftool", "map", "show", "id", str(m), "-j").stdout)["name"] not in (
            "flows",
            "flows1",
        ):
            continue
        for e in json.loads(sh("bpftool", "map", "dump", "id", str(m), "-j").stdout):
            key = e["formatted"]["key"]
            t = key.get("tuple", key)
            if (t["sport"], t["dport"]) == (sport, dport):
                return [v["value"] for v in e["formatted"]["values"]]
    return None


# ---- drivers ----------------------------------------------------------------------------
class NetDriver:
    """TC (tcx/legacy) counts what A sends; XDP what A receives from B."""

    def __init__(self, name: str, options: dict, direction: str) -> None:
        self.name, self.options, self.direction = name, options, direction
        self.l2 = ETH

    def __enter__(self):
        self.ns = NetnsPair(ipv6=False)
        return self

    def __exit__(self, *exc):
        self.ns.destroy()

    def _send(self, fn: str, *args) -> str:
        """Run traffic.<fn>(*args) where the packets must come from: A for
        TC, B (towards A) for XDP."""
        if self.direction == "egress":
            with self.ns.in_a():
                return json.dumps({"send_flows": send_flows, "send_spread": send_spread}[fn](*args))
        code = f"import json, traffic; print(json.dumps(traffic.{fn}(*{args!r})))"
        r = subprocess.run(
            ["ip", "netns", "exec", self.ns.ns_b, sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(TESTS)},
        )
        return r.stdout.strip()

    @property
    def dst(self) -> str:
        return self.ns.B4 if self.direction == "egress" else self.ns.A4

    def run(self, max_entries: int, fn: str, *args) -> tuple:
        """(snapshot, what traffic.fn returned, the per-CPU values of
        flow sport -> 7001 as bpftool reads them while the maps live)."""
        peer = self.ns.peer("udp", *map(str, range(7000, 7040))) if self.direction == "egress" else None
        try:
            mine = held()
            with self.ns.in_a():
                c = Collector(max_entries=max_entries, **self.options).start()
            try:
                result = json.loads(self._send(fn, *args))
                time.sleep(0.1)
                with self.ns.in_a():
                    c.stop()
                sport = result[0] if isinstance(result, list) else result
                values = per_cpu_values(minus(held(), mine)["map"], sport, 7001)
                return c.snapshot(), result, values
            finally:
                with self.ns.in_a():
                    c.close()
        finally:
            if peer:
                peer.kill()

    def flows(self, max_entries: int, counts: list[int], payload: int):
        snap, sport, _ = self.run(max_entries, "send_flows", self.dst, 7000, counts, payload)
        return snap, sport

    def spread(self, per_cpu: int, payload: int):
        snap, (sport, cpus), values = self.run(64, "send_spread", self.dst, 7001, per_cpu, payload)
        return snap, sport, cpus, values


class CgroupDriver:
    """cgroup mode counts what a process of the test cgroup sends."""

    name, direction, l2 = "cgroup", "egress", 0

    def __enter__(self):
        if cgroup2_mount() is None:
            pytest.skip("no writable cgroup v2 mount")
        self.ns = NetnsPair(ipv6=False)
        self.cg = TestCgroup()
        return self

    def __exit__(self, *exc):
        self.cg.destroy()
        self.ns.destroy()

    def run(self, max_entries: int, *worker_args: str) -> tuple:
        peer = self.ns.peer("udp", *map(str, range(7000, 7040)))
        try:
            mine = held()
            with Collector(mode="cgroup", cgroup=self.cg.root, max_entries=max_entries) as c:
                out = self.cg.run(self.cg.child("send"), "pbt-cons", *worker_args, netns=self.ns.ns_a)
                sport = int(out[0])
                time.sleep(0.1)
            values = per_cpu_values(minus(held(), mine)["map"], sport, 7001)
            snap = c.snapshot()
            c.close()
            return snap, sport, values
        finally:
            peer.kill()

    def flows(self, max_entries: int, counts: list[int], payload: int):
        args = ("udp-flows", self.ns.B4, "7000", str(payload), *map(str, counts))
        snap, sport, _ = self.run(max_entries, *args)
        return snap, sport

    def spread(self, per_cpu: int, payload: int):
        snap, sport, values = self.run(64, "udp-spread", self.ns.B4, "7001", str(per_cpu), str(payload))
        return snap, sport, sorted(os.sched_getaffinity(0)), values


class ReplayDriver:
    """Replay counts every frame of a capture file (no direction)."""

    name, direction, l2 = "replay", "", ETH
    sport = 4321

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def flows(self, max_entries: int, counts: list[int], payload: int):
        recs, t = [], 1_700_000_000 * 10**9
        for i, n in enumerate(counts):
            for _ in range(n):
                t += 1000
                recs.append((t, udp4("10.0.0.1", "10.0.0.2", self.sport, 7000 + i, payload)))
        path = write_pcap(self.tmp / "flows.pcap", recs, nano=True)
        return pktstat_bpf.replay(path, max_entries=max_entries), self.sport

    def spread(self, per_cpu: int, payload: int):
        """BPF_PROG_TEST_RUN runs on the calling thread's CPU: replay from a
        thread pinned to each CPU in turn, into one table."""
        from pktstat_bpf import _core

        mine = held()
        engine = _core.Replayer(64)
        cpus = sorted(os.sched_getaffinity(0))
        frame = udp4("10.0.0.1", "10.0.0.2", self.sport, 7001, payload)

        def on(cpu: int) -> None:
            os.sched_setaffinity(0, {cpu})  # this thread only
            ts = [10**18 + cpu * 10**9 + i for i in range(per_cpu)]
            bench_core.replay_frames(engine, 1, [frame] * per_cpu, ts)

        for cpu in cpus:
            t = threading.Thread(target=on, args=(cpu,))
            t.start()
            t.join()
        values = per_cpu_values(minus(held(), mine)["map"], self.sport, 7001)  # before a read drains the map
        records = engine.read_flows()
        snap = pktstat_bpf.Snapshot(
            records=records,
            totals=Totals.from_arrays(engine.read_stats(), records),
            duration=1.0,
            started_at=0,
            taken_at=1,
            mode="replay",
        )
        return snap, self.sport, cpus, values


@pytest.fixture(params=["tcx", "legacy", "xdp", "cgroup", "replay"])
def driver(request, bpf, tmp_path):
    make = {
        "tcx": lambda: NetDriver("tcx", {"iface": "va", "tc_attach": "tcx"}, "egress"),
        "legacy": lambda: NetDriver("legacy", {"iface": "va", "tc_attach": "legacy"}, "egress"),
        "xdp": lambda: NetDriver("xdp", {"iface": "va", "mode": "xdp"}, "ingress"),
        "cgroup": CgroupDriver,
        "replay": lambda: ReplayDriver(tmp_path),
    }[request.param]
    with make() as d:
        yield d


# ---- checks -----------------------------------------------------------------------------------
def assert_conserved_per_direction(snap) -> None:
    """packets = flow packets + unparsed + overflow, and the same for bytes,
    in each direction separately (not only in the sum)."""
    r = snap.records
    for name, d in DIRS.items():
        c = getattr(snap.totals, name or "none")
        mine = r[r["dir"] == d]
        assert c.packets == int(mine["packets"].sum()) + c.unparsed_packets + c.overflow_packets, (name, c)
        assert c.bytes == int(mine["bytes"].sum()) + c.unparsed_bytes + c.overflow_bytes, (name, c)
    assert snap.totals.conserved


def ours(snap, sport: int) -> dict[int, tuple[int, int]]:
    """{destination port: (packets, bytes)} of the flows from `sport`."""
    return {f["dstPort"]: (f["packets"], f["bytes"]) for f in snap.flows() if f["srcPort"] == sport}


def size(driver, payload: int) -> int:
    return driver.l2 + IP4 + UDP + payload


def test_totals_are_flows_plus_unparsed_plus_overflow(driver):
    counts = [3, 1, 4, 1, 5, 9, 2, 6]
    snap, sport = driver.flows(64, counts, 20)
    s = size(driver, 20)
    assert ours(snap, sport) == {7000 + i: (n, n * s) for i, n in enumerate(counts)}
    c = getattr(snap.totals, driver.direction or "none")
    assert (c.overflow_packets, c.overflow_bytes) == (0, 0)
    assert c.packets - c.unparsed_packets == sum(counts)  # ARP, should it come, is the unparsed rest
    assert_conserved_per_direction(snap)


def test_full_table_counts_the_rest_as_overflow_exactly(driver):
    """8 entries, 20 flows sent one after another: the first 8 are in the
    table with every packet, each packet of the other 12 is overflow."""
    counts = [2] * 8 + [3] * 12
    snap, sport = driver.flows(8, counts, 10)
    s = size(driver, 10)
    assert len(snap) == 8
    assert ours(snap, sport) == {7000 + i: (2, 2 * s) for i in range(8)}
    c = getattr(snap.totals, driver.direction or "none")
    assert (c.overflow_packets, c.overflow_bytes) == (12 * 3, 12 * 3 * s)
    assert c.packets - c.unparsed_packets == sum(counts)
    assert_conserved_per_direction(snap)
    # the headers carry the counters that prove it
    a = snap.totals.all
    line = snap.header_line()
    assert f": 8 flows, {a.packets} packets, {a.bytes} bytes" in line
    assert (
        f"; unparsed {a.unparsed_packets} packets/{a.unparsed_bytes} bytes; overflow 36 packets/{36 * s} bytes"
        in line
    )
    if driver.direction:
        assert f"{driver.direction} {c.packets}/{c.bytes}" in line
    totals = json.loads(snap.to_json())["totals"]
    assert (totals["overflowPackets"], totals["flowPackets"], totals["flows"]) == (36, 16, 8)
    if driver.direction:
        assert totals[driver.direction] == {
            "packets": c.packets,
            "bytes": c.bytes,
            "unparsedPackets": c.unparsed_packets,
            "unparsedBytes": c.unparsed_bytes,
            "overflowPackets": 36,
            "overflowBytes": 36 * s,
        }


def test_per_cpu_values_are_summed_without_loss(driver):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs at least two CPUs to spread traffic over")
    snap, sport, used, values = driver.spread(5, 30)
    s = size(driver, 30)
    # every CPU got its share (the traffic really was spread) ...
    assert [v["packets"] for v in values if v["packets"]] == [5] * len(used), values
    assert sum(v["bytes"] for v in values) == 5 * len(used) * s
    # ... and the engine's sum has all of it, with the earliest first and latest last seen
    (flow,) = [f for f in snap.records if f["sport"] == sport and f["dport"] == 7001]
    assert (int(flow["packets"]), int(flow["bytes"])) == (5 * len(used), 5 * len(used) * s)
    seen = [v for v in values if v["packets"]]
    span = max(v["last_seen_ns"] for v in seen) - min(v["first_seen_ns"] for v in seen)
    assert int(flow["last_seen"].astype("int64") - flow["first_seen"].astype("int64")) == span
    assert_conserved_per_direction(snap)


def test_counters_are_64_bit_end_to_end(bpf, tmp_path):
    """Five frames of 4 GiB - 1 bytes each (the largest pcap length) on one
    flow: 20 GiB, far past 32 bits, exact in the flow, the totals, the JSON
    and the text."""
    big = (1 << 32) - 1
    recs = [(10**18 + i, udp4("10.0.0.1", "10.0.0.2", 1, 2, 0), big) for i in range(5)]
    snap = pktstat_bpf.replay(write_pcap(tmp_path / "big.pcap", recs, nano=True, snaplen=1 << 18))
    assert [(f["packets"], f["bytes"]) for f in snap.flows()] == [(5, 5 * big)]
    assert (snap.totals.all.packets, snap.totals.all.bytes) == (5, 5 * big)
    doc = json.loads(snap.to_json())
    assert doc["totals"]["bytes"] == doc["flows"][0]["bytes"] == 5 * big == 21474836475
    assert f"bytes: {5 * big}, " in snap.to_text()


# ---- the 90% warning ---------------------------------------------------------------------------
def warning(n: int, m: int) -> str:
    return (
        f"pktstat-bpf: flow table is {100 * n // m}% full ({n} of {m} entries); "
        "new flows will be counted as overflow: raise --max-entries "
        "(the kernel table needs room for the flows of one interval)"
    )


OUTPUTS = {
    "report": [],
    "json": ["-j"],
    "jsonl": ["--jsonl"],
    "plain": ["--plain"],
    "unique": ["-u"],
    "prometheus": ["--prometheus", "127.0.0.1:0"],
}
LIVE_CASES = [("tc", o) for o in OUTPUTS] + [
    ("xdp", "report"),
    ("xdp", "jsonl"),
    ("cgroup", "report"),
    ("cgroup", "jsonl"),
    ("process", "report"),
    ("process", "jsonl"),
]


def _stderr_lines(err: str) -> list[str]:
    """stderr without the start-up line ("counting on ..."), which must come first."""
    lines = err.splitlines()
    assert lines and lines[0].startswith("pktstat-bpf: counting on "), err
    return lines[1:]


@pytest.mark.parametrize("mode, output", LIVE_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_nearly_full_table_warns_exactly_once_in_every_output(bpf, mode, output):
    """12 flows into a table of 10, then many more intervals (-r 100ms) with
    the table full: one warning line on stderr, whatever the output."""
    if mode == "cgroup" and cgroup2_mount() is None:
        pytest.skip("no writable cgroup v2 mount")
    ns = NetnsPair(ipv6=False)
    cg = TestCgroup() if mode == "cgroup" else None
    peer = ns.peer("udp", *map(str, range(7000, 7012)))
    try:
        flags = ["--max-entries", "10", "-r", "100ms", "-t", "0", *OUTPUTS[output]]
        if mode == "cgroup":
            argv = [sys.executable, "-m", "pktstat_bpf", "-c", cg.root, *flags]
        elif mode == "process":
            argv = [sys.executable, "-m", "pktstat_bpf", "-k", *flags]
        else:
            argv = ["ip", "netns", "exec", ns.ns_a, sys.executable, "-m", "pktstat_bpf", "-i", "va", *flags]
            argv += ["-x"] if mode == "xdp" else []
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = p.stderr.readline()
        if mode in ("tc", "process"):  # process mode: 12 destinations of one socket are 12 flows
            with ns.in_a():
                send_flows(ns.B4, 7000, [1] * 12, 8)
        elif mode == "xdp":
            code = "import traffic; traffic.send_flows('10.99.0.1', 7000, [1] * 12, 8)"
            subprocess.run(
                ["ip", "netns", "exec", ns.ns_b, sys.executable, "-c", code],
                check=True,
                env={**os.environ, "PYTHONPATH": str(TESTS)},
            )
        else:
            cg.run(cg.child("send"), "pbt-full", "udp-flows", ns.B4, "7000", "8", *["1"] * 12, netns=ns.ns_a)
        time.sleep(1.0)  # ten intervals with the table full
        p.send_signal(2)
        _, err = p.communicate(timeout=30)
    finally:
        peer.kill()
        if cg is not None:
            cg.destroy()
        ns.destroy()
    assert p.returncode == 0, first + err
    assert _stderr_lines(first + err) == [warning(10, 10)]
    assert "Traceback" not in err


def test_no_warning_below_90_percent(netns_v4only):
    ns = netns_v4only
    peer = ns.peer("udp", *map(str, range(7000, 7008)))  # (closed ports would answer: ICMP flows)
    try:
        p = ns.exec_a(
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-i",
            "va",
            "--max-entries",
            "10",
            "-r",
            "100ms",
            "--jsonl",
            "-t",
            "0",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = p.stderr.readline()
        with ns.in_a():
            send_flows(ns.B4, 7000, [1] * 8, 8)  # 80%
        time.sleep(0.5)
        p.send_signal(2)
        out, err = p.communicate(timeout=30)
    finally:
        peer.kill()
    assert p.returncode == 0
    assert _stderr_lines(first + err) == []
    assert len(out.splitlines()) >= 8


@pytest.mark.parametrize("output", ["report", "jsonl", "plain"])
def test_replay_warns_exactly_once(bpf, tmp_path, output):
    """12 flows in the first 12 ms of a 200 ms capture, replayed into a table
    of 10 (streams: in 10 ms steps, so the table is full for ~19 of them)."""
    t0 = 1_700_000_000 * 10**9
    recs = [(t0 + i * 10**6, udp4("10.0.0.1", "10.0.0.2", 1000, 7000 + i, 8)) for i in range(12)]
    recs += [(t0 + (20 + i) * 10**7 // 10, udp4("10.0.0.1", "10.0.0.2", 1000, 7000, 8)) for i in range(180)]
    path = write_pcap(tmp_path / "full.pcap", recs, nano=True)
    argv = [sys.executable, "-m", "pktstat_bpf", "--pcap", str(path), "--max-entries", "10", "-r", "10ms"]
    r = subprocess.run(argv + OUTPUTS[output], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [warning(10, 10)]
    if output == "jsonl":
        assert len({json.loads(line)["timestamp"] for line in r.stdout.splitlines()}) > 10


@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed (make setup installs it)")
@pytest.mark.parametrize("stderr", ["file", "terminal"])
def test_tui_warns_once_and_shows_the_full_table(netns_v4only, tmp_path, stderr):
    """The TUI shows the full table in its status line; the warning line is
    written once: to a redirected stderr at once, or, when stderr is the
    terminal curses draws on, after the screen is restored."""
    from test_tui import Tmux

    ns = netns_v4only
    errfile = tmp_path / "stderr"
    redirect = f"2>{errfile}" if stderr == "file" else ""
    peer = ns.peer("udp", *map(str, range(7000, 7012)))
    t = Tmux(
        f"ip netns exec {ns.ns_a} {sys.executable} -m pktstat_bpf -g -i va -r 100ms --max-entries 10 "
        f"{redirect}; echo EXIT=$?; sleep 60",
        cols=200,
        rows=30,
    )
    try:
        t.wait(lambda s: s and s[0].startswith("pktstat-bpf  tc on va (tcx)"), timeout=20)
        with ns.in_a():
            send_flows(ns.B4, 7000, [1] * 12, 8)
        screen = t.wait(lambda s: "FLOW TABLE 100% FULL: raise --max-entries" in s[1])
        assert "flows: 10 " in screen[0] and "overflow: 2/" in screen[0]
        time.sleep(0.5)  # five more intervals with the table full
        t.keys("q")
        screen = t.wait(lambda s: any(line.startswith("EXIT=") for line in s))
    finally:
        t.kill()
        peer.kill()
    assert "EXIT=0" in screen
    if stderr == "file":
        assert errfile.read_text().splitlines() == [warning(10, 10)]
        assert not any("flow table is" in line for line in screen)
    else:
        assert [line for line in screen if line.strip()][:2] == [warning(10, 10), "EXIT=0"]
