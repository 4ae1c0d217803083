"""Draining flow tables (issue 16): the programs count into one side of a
two-sided table while the engine drains the other, so every increment lands
in exactly one interval; the engine keeps lifetime totals, retires flows by
the idle and active timeouts, bounds its table by max_flows and hands out
flow-end records.

Live modes are checked with traffic running while the test drains every
10 ms: per interval and direction seen = flows + unparsed + overflow
exactly, and per flow the intervals sum to what was sent. Timeouts and the
lifetime table are checked through the Replayer, whose timestamps are the
frames' own.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from _bench import bench_core
from pktstat_bpf.core.replay import ALL_FRAMES
from test_replay import udp4

S = 1_000_000_000
T0 = 1_700_000_000 * S


def core():
    from pktstat_bpf import _core

    return _core


def interval_conserves(iv) -> None:
    recs = iv.records
    for d in range(3):
        st = iv.stats[d]
        mine = recs[recs["dir"] == d]
        assert int(st["packets"]) == int(mine["packets"].sum()) + int(st["unparsed_packets"]) + int(
            st["overflow_packets"]
        ), (d, st, len(mine))
        assert int(st["bytes"]) == int(mine["bytes"].sum()) + int(st["unparsed_bytes"]) + int(
            st["overflow_bytes"]
        )


def sums_by_dport(intervals, proto: int = 17) -> dict[int, tuple[int, int]]:
    out: dict[int, list[int]] = {}
    for iv in intervals:
        r = iv.records
        for rec in r[r["proto"] == proto]:
            t = out.setdefault(int(rec["dport"]), [0, 0])
            t[0] += int(rec["packets"])
            t[1] += int(rec["bytes"])
    return {k: (v[0], v[1]) for k, v in out.items()}


# -- the lifetime table, through the Replayer (capture time) -------------------


@pytest.fixture
def rp(bpf):
    r = core().Replayer(max_entries=4096)
    yield r


def run_frames(r, frames_ts) -> None:
    frames = [f for f, _ in frames_ts]
    ts = [t for _, t in frames_ts]
    bench_core.replay_frames(r, 1, frames, ts, [])


def test_intervals_sum_to_the_one_pass_totals_and_the_kernel_is_emptied(rp):
    r = rp
    r.set_flow_limits(idle_timeout_ns=0, active_timeout_ns=0)
    ivs = []
    for step in range(5):
        run_frames(
            r, [(udp4("10.0.0.1", "10.0.0.2", 1000 + step, 53, 10), T0 + step * S + i) for i in range(3)]
        )
        run_frames(r, [(udp4("10.0.0.1", "10.0.0.2", 999, 80, 20), T0 + step * S + 10)])
        ivs.append(r.drain(T0 + (step + 1) * S))
        assert len(r.flows()) == ivs[-1].live_flows == step + 2  # the lifetime table
    for iv in ivs:
        interval_conserves(iv)
        assert len(iv.ended) == 0
    # the flow of port 80 runs through every interval: totals grow by one packet each
    p80 = [iv.records[iv.records["dport"] == 80] for iv in ivs]
    assert [int(x["packets"][0]) for x in p80] == [1] * 5
    assert [int(x["total_packets"][0]) for x in p80] == [1, 2, 3, 4, 5]
    assert [int(x["flow_first_seen"][0].astype("int64")) for x in p80] == [T0 + 10] * 5
    assert ivs[0].start_ns == 0 and ivs[1].start_ns == T0 + S and ivs[-1].end_ns == T0 + 5 * S
    life = r.flows()
    assert sorted((int(x["dport"]), int(x["sport"]), int(x["packets"])) for x in life) == sorted(
        [(53, 1000 + s, 3) for s in range(5)] + [(80, 999, 5)]
    )
    tot = ivs[-1].totals[2]
    assert int(tot["packets"]) == 20 and int(tot["bytes"]) == 15 * 52 + 5 * 62
    assert int(r.read_stats()[2]["packets"]) == 20


def test_idle_flow_yields_one_end_record_with_its_totals(rp):
    r = rp
    r.set_flow_limits(idle_timeout_ns=60 * S, active_timeout_ns=0)
    run_frames(r, [(udp4("10.0.0.1", "10.0.0.2", 5000, 53, 10), T0 + i * S) for i in range(7)])
    iv = r.drain(T0 + 10 * S)
    assert len(iv.ended) == 0 and iv.live_flows == 1
    ended = []
    for t in range(20, 200, 10):  # nothing happens; the flow goes idle at T0 + 6 s + 60 s
        iv = r.drain(T0 + t * S)
        ended += [(t, e) for e in iv.ended]
    assert len(ended) == 1
    t, e = ended[0]
    assert t == 70  # the first drain at or after last seen + 60 s
    assert e["reason"] == core().FLOW_END_IDLE
    assert int(e["packets"]) == int(e["delta_packets"]) == 7
    assert int(e["bytes"]) == int(e["delta_bytes"]) == 7 * 52
    assert int(e["first_seen"].astype("int64")) == T0 and int(e["last_seen"].astype("int64")) == T0 + 6 * S
    assert len(r.flows()) == 0
    # the run's totals keep the retired flow
    assert int(r.read_stats()[2]["packets"]) == 7


def test_active_timeout_records_sum_to_the_flow_total(rp):
    r = rp
    r.set_flow_limits(idle_timeout_ns=60 * S, active_timeout_ns=30 * S)
    records = []
    sent = 0
    for sec in range(0, 100):
        run_frames(r, [(udp4("10.0.0.1", "10.0.0.2", 6000, 53, 10), T0 + sec * S + 1)])
        sent += 1
        records += list(r.drain(T0 + (sec + 1) * S).ended)
    records += list(r.drain(T0 + 101 * S, end=True).ended)
    reasons = [int(e["reason"]) for e in records]
    assert reasons == [core().FLOW_END_ACTIVE] * 3 + [core().FLOW_END_END]
    assert sum(int(e["delta_packets"]) for e in records) == sent == int(records[-1]["packets"])
    assert sum(int(e["delta_bytes"]) for e in records) == sent * 52
    # due at first seen + 30 s, then every 30 s from that record: drains at 31, 61, 91 s
    assert [int(e["packets"]) for e in records[:3]] == [31, 61, 91]


def test_max_flows_retires_the_longest_idle_and_counts_them(rp):
    r = rp
    r.set_flow_limits(idle_timeout_ns=0, active_timeout_ns=0, max_flows=3)
    ended = []
    for i in range(5):
        run_frames(r, [(udp4("10.0.0.1", "10.0.0.2", 7000 + i, 53, 10), T0 + i * S)])
        if i == 3:  # flow 7001 is used again: flow 7002 is now the longest idle
            run_frames(r, [(udp4("10.0.0.1", "10.0.0.2", 7001, 53, 10), T0 + i * S + 1)])
        iv = r.drain(T0 + i * S + 2)
        ended += list(iv.ended)
    assert [(int(e["sport"]), int(e["reason"])) for e in ended] == [
        (7000, core().FLOW_END_EVICTED),
        (7002, core().FLOW_END_EVICTED),
    ]
    assert iv.evicted_flows == 2 and iv.live_flows == 3
    assert sorted(int(x["sport"]) for x in r.flows()) == [7001, 7003, 7004]
    assert int(iv.totals[2]["packets"]) == 6


def test_stepped_replay_of_more_flows_than_the_kernel_table_has_no_overflow(bpf, tmp_path):
    """More distinct flows than max_entries, spread over capture time: drained
    per step they never overflow, and the totals equal a one-pass replay with
    a table large enough."""
    from test_replay import write_pcap

    recs = []
    for i in range(3000):  # 3000 flows over 30 s, 100 per second
        recs.append(
            (T0 + i * (S // 100), udp4("10.0.0.1", "10.0.0.2", 1024 + i % 60000, 53 + i // 60000, 1 + i % 7))
        )
    path = write_pcap(tmp_path / "many.pcap", recs)
    stepped = core().Replayer(max_entries=256)
    stepped.open_file(str(path))
    ivs = []
    t = T0 + S
    while stepped.advance(t):
        ivs.append(stepped.drain(t))
        t += S
    ivs.append(stepped.drain(t, end=True))
    for iv in ivs:
        interval_conserves(iv)
        assert int(iv.stats[2]["overflow_packets"]) == 0
    one = core().Replayer(max_entries=4096)
    one.open_file(str(path))
    one.advance(ALL_FRAMES)
    flat = one.read_flows()
    assert int(one.read_stats()[2]["overflow_packets"]) == 0
    ended = np.concatenate([iv.ended for iv in ivs])
    assert len(ended) == 3000 == len(flat)
    assert sorted(ended["packets"].tolist()) == sorted(flat["packets"].tolist())
    assert int(ended["bytes"].sum()) == int(flat["bytes"].sum())
    assert (ivs[-1].totals == one.read_stats()).all()
    overflow_one = core().Replayer(max_entries=256)
    overflow_one.open_file(str(path))
    overflow_one.advance(ALL_FRAMES)
    assert int(overflow_one.read_stats()[2]["overflow_packets"]) == 3000 - 256


# -- live: drains every 10 ms while traffic runs -------------------------------


def drain_while(collector, sender, period: float = 0.01):
    """Run `sender` in a thread and drain every `period` until it is done
    (and twice more after a pause, for packets still in flight)."""
    ivs = []
    t = threading.Thread(target=sender)
    t.start()
    while t.is_alive():
        ivs.append(collector.drain())
        time.sleep(period)
    t.join()
    time.sleep(0.2)
    ivs.append(collector.drain())
    ivs.append(collector.drain())
    return ivs


def udp_burst(dst: str, ports: list[int], per_port: int, payload: int) -> None:
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        for _ in range(per_port):
            for p in ports:
                s.sendto(b"d" * payload, (dst, p))


PORTS = [40001, 40002, 40003, 40004]
PER_PORT = 5000
PAYLOAD = 18  # 60-byte frames on the wire at TC (14 + 20 + 8 + 18)


def check_live(ivs, frame_len: int, dir_: int) -> None:
    for iv in ivs:
        interval_conserves(iv)
        assert int(iv.stats["overflow_packets"].sum()) == 0
    busy = [iv for iv in ivs if any(int(x["dport"]) in PORTS for x in iv.records)]
    assert len(busy) >= 3, f"the traffic fell into {len(busy)} intervals: drains did not overlap it"
    got = {}
    for iv in ivs:
        r = iv.records
        for rec in r[(r["proto"] == 17) & (r["dir"] == dir_)]:
            if int(rec["dport"]) in PORTS:
                t = got.setdefault(int(rec["dport"]), [0, 0])
                t[0] += int(rec["packets"])
                t[1] += int(rec["bytes"])
    assert got == {p: [PER_PORT, PER_PORT * frame_len] for p in PORTS}
    total = np.zeros(3, dtype=np.uint64)
    for iv in ivs:
        total += iv.stats["packets"].astype(np.uint64)
    assert (total == ivs[-1].totals["packets"]).all()


@pytest.mark.kernel
def test_tc_drains_exactly_under_traffic(netns):
    _core = core()
    with netns.in_a():
        c = _core.TcCollector(socket.if_nametoindex("va"))
        c.attach()
        try:

            def send():
                with netns.in_a():
                    udp_burst(netns.B4, PORTS, PER_PORT, PAYLOAD)

            ivs = drain_while(c, send)
        finally:
            c.detach()
    check_live(ivs, 14 + 20 + 8 + PAYLOAD, bench_core.FLOW_DIR_EGRESS)
    life = c.flows()
    mine = life[np.isin(life["dport"], PORTS) & (life["proto"] == 17)]
    assert sorted(mine["packets"].tolist()) == [PER_PORT] * 4


@pytest.mark.kernel
def test_xdp_drains_exactly_under_traffic(netns):
    _core = core()
    with open("/proc/thread-self/ns/net") as orig, open(f"/var/run/netns/{netns.ns_b}") as target:
        from netns import setns

        setns(target.fileno())
        try:
            c = _core.XdpCollector(socket.if_nametoindex("vb"), mode="generic")
            c.attach()
        finally:
            setns(orig.fileno())
    try:

        def send():
            with netns.in_a():
                udp_burst(netns.B4, PORTS, PER_PORT, PAYLOAD)

        ivs = drain_while(c, send)
    finally:
        c.detach()
    check_live(ivs, 14 + 20 + 8 + PAYLOAD, bench_core.FLOW_DIR_INGRESS)


@pytest.mark.kernel
def test_cgroup_drains_exactly_under_traffic(cg, netns_v4only):
    from pktstat_bpf import Collector

    ns = netns_v4only
    with Collector(mode="cgroup", cgroup=cg.root) as c:
        engine = c._mode.engine

        def send():
            args = ("udp-flows", ns.B4, str(PORTS[0]), str(PAYLOAD), *[str(PER_PORT)] * len(PORTS))
            cg.run(cg.child("send"), "pbt-drain", *args, netns=ns.ns_a, timeout=120)

        ivs = drain_while(engine, send)
    check_live(ivs, 20 + 8 + PAYLOAD, bench_core.FLOW_DIR_EGRESS)


@pytest.mark.kernel
def test_process_mode_drains_exactly_under_traffic(netns):
    from pktstat_bpf import Collector

    with Collector(mode="process") as c:
        engine = c._mode.engine

        def send():
            with netns.in_a():
                udp_burst(netns.B4, PORTS, PER_PORT, PAYLOAD)

        ivs = drain_while(engine, send)
    pid = os.getpid()
    for iv in ivs:  # every process's flows are in the intervals: all conserve
        interval_conserves(iv)
    got: dict[int, list[int]] = {}
    for iv in ivs:
        r = iv.records
        for rec in r[(r["pid"] == pid) & (r["proto"] == 17) & (r["dir"] == bench_core.FLOW_DIR_EGRESS)]:
            if int(rec["dport"]) in PORTS:
                t = got.setdefault(int(rec["dport"]), [0, 0])
                t[0] += int(rec["packets"])
                t[1] += int(rec["bytes"])
    assert got == {p: [PER_PORT, PER_PORT * PAYLOAD] for p in PORTS}  # one packet per call, its payload
    busy = [iv for iv in ivs if any(int(x["dport"]) in PORTS and int(x["pid"]) == pid for x in iv.records)]
    assert len(busy) >= 3


def _addr(raw) -> str:
    b = bytes(raw)
    return (
        socket.inet_ntop(socket.AF_INET, b[12:])
        if b[:12] == bytes(10) + b"\xff\xff"
        else socket.inet_ntop(socket.AF_INET6, b)
    )


@pytest.mark.kernel
def test_churn_of_short_connections_through_a_small_kernel_table(netns_v4only):
    """Thousands of short TCP connections (two flows each: far more flows
    than the kernel table's 4096 entries) with drains every 100 ms: no
    overflow, and every flow's packets and bytes over the intervals, and in
    its end records (idle timeout 1 s, then the end of the capture), are
    those an AF_PACKET capture saw."""
    from traffic import Sniffer, tcp_exchange

    ns = netns_v4only
    conns = 10_000
    ports: list[int] = []
    peer = ns.peer("tcp", "5003")
    ivs = []
    try:
        with ns.in_a():
            sniffer = Sniffer("va")
            # room for every frame of the run: the oracle must not drop any (checked below)
            sniffer.sock.setsockopt(socket.SOL_SOCKET, 33, 256 << 20)  # SO_RCVBUFFORCE
            c = core().TcCollector(socket.if_nametoindex("va"), max_entries=4096)
            c.set_flow_limits(idle_timeout_ns=1 * S, active_timeout_ns=0)
            c.attach()
            try:

                def churn():
                    with ns.in_a():
                        for _ in range(conns):
                            ports.append(tcp_exchange(ns.B4, 5003, 100)[0])

                ivs = drain_while(c, churn, period=0.1)
                ivs.append(c.drain(end=True))
            finally:
                c.detach()
            time.sleep(0.3)
            # struct tpacket_stats (SOL_PACKET, PACKET_STATISTICS): frames the capture dropped
            drops = struct.unpack("II", sniffer.sock.getsockopt(263, 6, 8))[1]
            frames = sniffer.stop()
    finally:
        peer.kill()
    assert drops == 0
    want = {k: tuple(v) for k, v in Sniffer.flows(frames, 6).items() if 5003 in (k[3], k[4])}
    assert len(ports) == conns
    assert len(want) == 2 * len(set(ports))  # a client port that comes round again is the same flow
    assert max(len(iv.records) for iv in ivs) < 4096 and len(ivs) >= 10
    dirs = {bench_core.FLOW_DIR_INGRESS: "ingress", bench_core.FLOW_DIR_EGRESS: "egress"}
    got: dict = {}
    ended: dict = {}
    for iv in ivs:
        interval_conserves(iv)
        assert int(iv.stats["overflow_packets"].sum()) == 0
        for arr, out, pk, by in (
            (iv.records, got, "packets", "bytes"),
            (iv.ended, ended, "delta_packets", "delta_bytes"),
        ):
            for r in arr[arr["proto"] == 6]:
                if 5003 not in (int(r["sport"]), int(r["dport"])):
                    continue
                k = (
                    _addr(r["saddr"]),
                    _addr(r["daddr"]),
                    6,
                    int(r["sport"]),
                    int(r["dport"]),
                    dirs[int(r["dir"])],
                )
                t = out.setdefault(k, [0, 0])
                t[0] += int(r[pk])
                t[1] += int(r[by])
    assert {k: tuple(v) for k, v in got.items()} == want
    assert {k: tuple(v) for k, v in ended.items()} == want
    reasons = {int(x) for iv in ivs for x in iv.ended["reason"]}
    assert reasons == {core().FLOW_END_IDLE, core().FLOW_END_END}
    assert ivs[-1].live_flows == 0


@pytest.mark.kernel
def test_cgroup_owners_of_closed_sockets_are_removed_at_a_drain(cg, netns_v4only):
    """A socket's owner entry stays while the socket's last packets can
    come (marked released), and goes at the first drain a grace period
    (1 s) after its release; its flows keep their pid; no live owner was
    evicted."""
    from pktstat_bpf import Collector

    ns = netns_v4only
    released = bench_core.OWNER_FLAGS["released"]
    with Collector(mode="cgroup", cgroup=cg.root) as c:
        engine = c._mode.engine
        for _ in range(5):
            cg.run(cg.child("send"), "pbt-reap", "udp-send", ns.B4, "7000", "2", "10", netns=ns.ns_a)
        engine.drain()
        mine = {k: o for k, o in bench_core.cgroup_owners(engine).items() if o["comm"] == b"pbt-reap"}
        assert len(mine) == 5 and all(o["flags"] & released for o in mine.values())
        pids = {o["pid"] for o in mine.values()}
        time.sleep(1.1)
        iv = engine.drain()
        assert not any(o["comm"] == b"pbt-reap" for o in bench_core.cgroup_owners(engine).values())
        stats = engine.owner_stats()
        assert stats["removed"] == 5 and stats["evicted"] == 0 and stats["reap_lost"] == 0
    flows = engine.flows()
    sent = flows[(flows["proto"] == 17) & (flows["dport"] == 7000)]
    assert sorted(int(p) for p in sent["pid"]) == sorted(pids) and sent["packets"].tolist() == [2] * 5
    assert iv.live_flows >= 5


@pytest.mark.kernel
def test_cgroup_owner_evicted_while_its_socket_lives_is_counted(cg):
    """An owner map too small for the sockets that live at once: each
    socket's release either finds its entry (released) or counts the
    eviction of a live socket's owner, and at least as many as had no entry
    just before they closed."""
    sockets = 64
    engine = core().CgroupCollector(os.fsencode(cg.mount), os.fsencode(cg.rel(cg.root)), owner_entries=16)
    engine.attach()
    try:
        code = (
            "import socket, sys\n"
            f"s = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range({sockets})]\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
        )
        p = cg.spawn(cg.child("hold"), sys.executable, "-c", code, stdin=subprocess.PIPE)
        assert p.stdout.readline().strip() == "ready"
        held = sum(1 for o in bench_core.cgroup_owners(engine).values() if o["pid"] == p.pid)
        p.communicate("\n", timeout=30)
        engine.drain()
        stats = engine.owner_stats()
    finally:
        engine.detach()
    assert held <= 16 + 2  # an LRU map keeps about its size (per-CPU free lists)
    assert stats["released"] + stats["evicted"] == sockets
    assert stats["evicted"] >= sockets - held
