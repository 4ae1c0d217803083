"""TC mode end to end: real traffic on a veth pair in test-made namespaces,
exact per-flow counts, both attach paths, and nothing left behind."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import kernel_lacks, tcx_missing
from netns import NetnsPair, sh, wait_for
from pktstat_bpf import Collector, FeatureMissingError, PktstatError
from traffic import ETH, ICMP, IP4, IP6, UDP, Sniffer, ping, send_udp, tcp_exchange

pytestmark = pytest.mark.kernel

ATTACH = {"tcx": "tcx", "legacy": "tc-legacy"}


def no_tcx() -> str | None:
    """Why this kernel has no TCX (None: it has); fails where PKTSTAT_BPF_EXPECT lists tcx."""
    return kernel_lacks("tcx", tcx_missing())


def auto_path() -> str:
    """The attach path --tc-attach auto takes here."""
    return "tc-legacy" if no_tcx() else "tcx"


def refused_without_tcx(netns: NetnsPair, attach: str) -> bool:
    """On a kernel without TCX, forcing it must fail in one line (exit code
    69) with nothing attached and no qdisc made; True if that was checked."""
    if attach != "tcx" or not no_tcx():
        return False
    before = netns.tc_state()["qdisc"]
    with netns.in_a():
        c = Collector(iface="va", tc_attach="tcx")
        with pytest.raises(FeatureMissingError) as e:
            c.start()
    assert (
        str(e.value)
        == "this kernel has no TCX links (Linux 6.6+): use --tc-attach legacy, or auto to fall back to it"
    )
    assert e.value.exit_code == 69
    assert not netns.ours_attached() and netns.tc_state()["qdisc"] == before
    return True


def table(snap) -> dict:
    """{(src, dst, proto, sport, dport, direction): (packets, bytes)}"""
    return {
        (f["srcIp"], f["dstIp"], f["proto"], f["srcPort"], f["dstPort"], f.get("direction", "")): (
            f["packets"],
            f["bytes"],
        )
        for f in snap.flows()
    }


def assert_conserved(snap):
    t = snap.totals
    a = t.all
    assert a.packets == t.flow_packets + a.unparsed_packets + a.overflow_packets
    assert a.bytes == t.flow_bytes + a.unparsed_bytes + a.overflow_bytes
    assert t.conserved


def udp_echo(dst: str, port: int, count: int, payload: int, timeout: float = 3.0) -> int:
    """Send `count` datagrams of `payload` bytes to an echoing peer, one at a
    time, each echo received (same payload) before the next goes; returns the
    source port."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((dst, port))
        for i in range(count):
            data = bytes([i]) * payload
            s.send(data)
            assert s.recv(65536) == data
        return s.getsockname()[1]


@pytest.mark.parametrize("attach", ["tcx", "legacy"])
def test_udp_and_icmp_counts_are_exact_both_directions(netns: NetnsPair, attach):
    if refused_without_tcx(netns, attach):
        return
    A4, B4, A6, B6 = netns.A4, netns.B4, netns.A6, netns.B6
    peer = netns.peer("udp-echo", "5001")  # each datagram comes back: ingress UDP too
    try:
        with netns.in_a():
            with Collector(iface="va", tc_attach=attach) as c:
                assert c.status["attach"] == ATTACH[attach]
                sp4 = udp_echo(B4, 5001, 7, 100)
                sp6 = udp_echo(B6, 5001, 5, 200)
                assert ping(B4, 3, 56) == 3
                assert ping(B6, 4, 56) == 4
                time.sleep(0.2)
            snap = c.snapshot()
    finally:
        peer.kill()
    flows = table(snap)
    assert flows[(A4, B4, "UDP", sp4, 5001, "egress")] == (7, 7 * (ETH + IP4 + UDP + 100))
    assert flows[(A6, B6, "UDP", sp6, 5001, "egress")] == (5, 5 * (ETH + IP6 + UDP + 200))
    assert flows[(B4, A4, "UDP", 5001, sp4, "ingress")] == (7, 7 * (ETH + IP4 + UDP + 100))
    assert flows[(B6, A6, "UDP", 5001, sp6, "ingress")] == (5, 5 * (ETH + IP6 + UDP + 200))
    assert flows[(A4, B4, "ICMPv4", 8, 0, "egress")] == (3, 3 * (ETH + IP4 + ICMP + 56))
    assert flows[(B4, A4, "ICMPv4", 0, 0, "ingress")] == (3, 3 * (ETH + IP4 + ICMP + 56))
    assert flows[(A6, B6, "IPv6-ICMP", 128, 0, "egress")] == (4, 4 * (ETH + IP6 + ICMP + 56))
    assert flows[(B6, A6, "IPv6-ICMP", 129, 0, "ingress")] == (4, 4 * (ETH + IP6 + ICMP + 56))
    assert snap.attach == ATTACH[attach]
    assert_conserved(snap)
    # the per-direction totals cover at least what we sent
    assert snap.totals.egress.packets >= 7 + 5 + 3 + 4
    assert snap.totals.ingress.packets >= 7 + 5 + 3 + 4


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_tcp_counts_match_an_af_packet_capture(netns: NetnsPair, family):
    dst = netns.B4 if family == "v4" else netns.B6
    peer = netns.peer("tcp", "5002")
    try:
        with netns.in_a():
            sniffer = Sniffer("va")
            with Collector(iface="va") as c:
                time.sleep(0.05)
                sport, dport = tcp_exchange(dst, 5002, 3000)
                time.sleep(0.3)
            frames = sniffer.stop()
            snap = c.snapshot()
    finally:
        peer.kill()
    want = {k: tuple(v) for k, v in Sniffer.flows(frames, 6).items() if sport in (k[3], k[4])}
    got = {k: v for k, v in table(snap).items() if k[2] == "TCP" and sport in (k[3], k[4])}
    assert want, "the oracle saw no TCP frames"
    assert {(k[0], k[1], 6, *k[3:]): v for k, v in got.items()} == want
    # handshake, 3000 bytes of data and teardown, in both directions
    assert sum(v[0] for k, v in want.items() if k[-1] == "egress") >= 4
    assert sum(v[0] for k, v in want.items() if k[-1] == "ingress") >= 3
    assert sum(v[1] for k, v in want.items() if k[-1] == "egress") > 3000
    assert_conserved(snap)


def test_full_map_counts_overflow_exactly(netns_v4only: NetnsPair):
    ns = netns_v4only
    ports = [6000 + i for i in range(100)]
    peer = ns.peer("udp", *map(str, ports))
    try:
        with ns.in_a():
            # ARP unparsed (arp=False): a neighbour entry that expired makes ARP frames
            # mid-test (the kernel matrix's slow guests), which must not take table entries
            with Collector(iface="va", max_entries=16, arp=False) as c:
                send_udp(ns.B4, ports[0], 1, 10)  # resolves ARP first
                time.sleep(0.1)
                for p in ports[1:]:
                    send_udp(ns.B4, p, 1, 10)
                time.sleep(0.2)
            snap = c.snapshot()
    finally:
        peer.kill()
    size = ETH + IP4 + UDP + 10
    t = snap.totals
    assert len(snap) == 16
    assert all(f["proto"] == "UDP" and f["packets"] == 1 for f in snap.flows())
    assert t.all.overflow_packets == 100 - 16
    assert t.all.overflow_bytes == (100 - 16) * size
    assert t.egress.packets - t.egress.unparsed_packets == 100  # ARP is the unparsed rest
    assert_conserved(snap)


@pytest.mark.parametrize("attach", ["tcx", "legacy"])
@pytest.mark.parametrize("preexisting_qdisc", [False, True])
def test_stop_leaves_nothing_behind(netns: NetnsPair, attach, preexisting_qdisc):
    if refused_without_tcx(netns, attach):
        return
    if preexisting_qdisc:
        sh("tc", "qdisc", "add", "dev", "va", "clsact", netns=netns.ns_a)
    with netns.in_a():
        c = Collector(iface="va", tc_attach=attach).start()
        during = netns.tc_state()
        if attach == "tcx":
            assert during["tcx"] == "ingress:tc_ingress egress:tc_egress"
        else:
            assert "tc_ingress" in during["ingress"] and "tc_egress" in during["egress"]
        c.stop()
        c.stop()  # idempotent
    after = netns.tc_state()
    assert not netns.ours_attached()
    assert after["ingress"] == after["egress"] == after["tcx"] == ""
    assert ("clsact" in after["qdisc"]) == preexisting_qdisc


def _cli_in_a(netns, *args):
    return netns.exec_a(
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


@pytest.mark.parametrize("attach", ["tcx", "legacy"])
@pytest.mark.parametrize("preexisting_qdisc", [False, True])
def test_sigkill_leaves_nothing_behind(netns: NetnsPair, attach, preexisting_qdisc):
    if refused_without_tcx(netns, attach):
        return
    if preexisting_qdisc:
        sh("tc", "qdisc", "add", "dev", "va", "clsact", netns=netns.ns_a)
    p = _cli_in_a(netns, "-t", "0", "--tc-attach", attach)
    line = p.stderr.readline()
    assert "counting on va via" in line, line
    assert netns.ours_attached()
    p.send_signal(signal.SIGKILL)
    p.wait()
    # the janitor (legacy tc) is a process of its own: allow for an emulated CPU
    assert wait_for(lambda: not netns.ours_attached(), timeout=60), netns.tc_state()
    assert wait_for(lambda: ("clsact" in netns.tc_state()["qdisc"]) == preexisting_qdisc, timeout=60)


@pytest.mark.parametrize("attach", ["tcx", "legacy"])
def test_failure_on_second_attach_rolls_back_the_first(netns: NetnsPair, attach, monkeypatch):
    if refused_without_tcx(netns, attach):
        return
    monkeypatch.setenv("PKTSTAT_BPF_TEST_FAULTS", "fail_attach_at=1")
    with netns.in_a():
        c = Collector(iface="va", tc_attach=attach)
        with pytest.raises(PktstatError, match="injected test fault"):
            c.start()
    after = netns.tc_state()
    assert not netns.ours_attached()
    assert "clsact" not in after["qdisc"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_signal_ends_capture_with_a_report(netns: NetnsPair, sig):
    peer = netns.peer("udp", "5003")
    try:
        p = _cli_in_a(netns, "-t", "0", "-j")
        assert f"counting on va via {auto_path()}" in p.stderr.readline()
        with netns.in_a():
            sp = send_udp(netns.B4, 5003, 4, 32)
        time.sleep(0.2)
        p.send_signal(sig)
        # legacy tc: the stop waits for the janitor, a Python process that may
        # still be starting on an emulated CPU
        out, err = p.communicate(timeout=60)
    finally:
        peer.kill()
    assert p.returncode == 0, err
    doc = json.loads(out)
    assert doc["mode"] == "tc" and doc["iface"] == "va" and doc["attach"] == auto_path()
    (flow,) = [f for f in doc["flows"] if f["srcPort"] == sp]
    assert flow == {
        **flow,
        "srcIp": netns.A4,
        "dstIp": netns.B4,
        "proto": "UDP",
        "dstPort": 5003,
        "packets": 4,
        "bytes": 4 * (ETH + IP4 + UDP + 32),
        "direction": "egress",
        "iface": "va",
    }
    assert flow["bitrate"] == pytest.approx(8 * flow["bytes"] / doc["duration"])
    t = doc["totals"]
    assert t["packets"] == t["flowPackets"] + t["unparsedPackets"] + t["overflowPackets"]
    assert not netns.ours_attached()


def test_cli_text_report_after_timeout(netns: NetnsPair):
    peer = netns.peer("udp", "5004")
    try:
        p = _cli_in_a(netns, "-t", "1500ms")
        assert f"counting on va via {auto_path()} for 1.5s" in p.stderr.readline()
        with netns.in_a():
            sp = send_udp(netns.B6, 5004, 3, 10)
        out, err = p.communicate(timeout=15)
    finally:
        peer.kill()
    assert p.returncode == 0, err
    lines = out.splitlines()
    head = re.match(rf"# tc on va \({auto_path()}\), (\d+\.\d\d)s: ", lines[0])
    assert head and float(head[1]) >= 1.5, lines[0]  # -t, plus the time detaching took
    # the label: "?" once 3 payload packets matched nothing, none while pending (the kernel
    # counts the tries per interval: packets spread over drains may leave it pending)
    want = (
        rf"packets: 3, bytes: {3 * (ETH + IP6 + UDP + 10)}, proto: UDP, (app: \?, )?"
        rf"src: \[{netns.A6}\]:{sp}, dst: \[{netns.B6}\]:5004"
    )
    assert any(re.search(want, line) and line.startswith("bitrate: ") for line in lines[1:]), out


def test_two_collectors_on_one_interface_both_see_everything(netns: NetnsPair):
    """A TCX and a legacy collector (two legacy ones where the kernel has no TCX)."""
    peer = netns.peer("udp", "5005")
    first = "legacy" if no_tcx() else "tcx"
    try:
        with netns.in_a():
            with (
                Collector(iface="va", tc_attach=first) as c1,
                Collector(iface="va", tc_attach="legacy") as c2,
            ):
                sp = send_udp(netns.B4, 5005, 9, 50)
                time.sleep(0.1)
            s1, s2 = c1.snapshot(), c2.snapshot()
    finally:
        peer.kill()
    key = (netns.A4, netns.B4, "UDP", sp, 5005, "egress")
    assert table(s1)[key] == table(s2)[key] == (9, 9 * (ETH + IP4 + UDP + 50))
    assert not netns.ours_attached()
    assert "clsact" not in netns.tc_state()["qdisc"]


def test_drain_by_batch_and_by_iteration_agree(netns: NetnsPair):
    """The engine drains the kernel table with lookup_and_delete_batch, or
    by iteration and delete where the kernel has no batch ops: the same
    traffic sent before each gives the same flows and counts either way."""
    got = []
    with netns.in_a():
        with Collector(iface="va") as c:
            for use_batch in (False, True):
                for p in range(20):
                    send_udp(netns.B4, 7000 + p, 2, 5)
                time.sleep(0.1)
                raw = c._mode.engine.drain(None, False, False, use_batch)
                r = raw.records
                got.append(
                    {
                        (int(x["dport"]), int(x["dir"])): (int(x["packets"]), int(x["bytes"]))
                        for x in r
                        if 7000 <= x["dport"] < 7020
                    }
                )
    assert got[0] == got[1]
    assert got[0] == {(7000 + p, 1): (2, 2 * (ETH + IP4 + UDP + 5)) for p in range(20)}
