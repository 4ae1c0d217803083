"""XDP mode end to end: traffic into a veth in a test-made namespace, exact
per-flow counts in native and generic mode (and with whole multi-buffer
frames), the refusals (driver without native XDP, offload, an interface that
already runs an XDP program), and nothing left behind after stop or SIGKILL.

XDP is only ever attached to interfaces these tests create (va, a bridge in
namespace A), never to anything in the root namespace."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kstate import attach_other_xdp, xdp_on, xdp_prog
from netns import NetnsPair, sh, wait_for
from pktstat_bpf import Collector, FeatureMissingError, PktstatError
from pktstat_bpf.cli import main as cli_main
from traffic import ETH, ICMP, IP4, IP6, UDP, Sniffer, ping

pytestmark = pytest.mark.kernel

TESTS = Path(__file__).parent
MODES = ["native", "generic"]


def table(snap) -> dict:
    return {
        (f["srcIp"], f["dstIp"], f["proto"], f["srcPort"], f["dstPort"], f.get("direction", "")): (
            f["packets"],
            f["bytes"],
        )
        for f in snap.flows()
    }


def in_b(netns: NetnsPair, code: str) -> str:
    """Run Python `code` (with tests/traffic.py importable) in namespace B."""
    r = subprocess.run(
        ["ip", "netns", "exec", netns.ns_b, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    return r.stdout.strip()


def udp_from_b(netns: NetnsPair, dst: str, port: int, count: int, payload: int) -> int:
    return int(
        in_b(netns, f"from traffic import send_udp; print(send_udp({dst!r}, {port}, {count}, {payload}))")
    )


# ---- counting ------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_ingress_counts_are_exact(netns: NetnsPair, mode):
    A4, B4, A6, B6 = netns.A4, netns.B4, netns.A6, netns.B6
    with netns.in_a():
        with Collector(iface="va", mode="xdp", xdp_mode=mode) as c:
            assert c.status["attach"] == f"xdp-{mode}"
            assert xdp_prog(netns)[1] == "xdp_count"
            sp4 = udp_from_b(netns, A4, 5101, 7, 100)
            sp6 = udp_from_b(netns, A6, 5101, 5, 200)
            assert ping(B4, 3, 56) == 3
            assert ping(B6, 4, 56) == 4
            time.sleep(0.2)
        snap = c.snapshot()
    flows = table(snap)
    assert flows[(B4, A4, "UDP", sp4, 5101, "ingress")] == (7, 7 * (ETH + IP4 + UDP + 100))
    assert flows[(B6, A6, "UDP", sp6, 5101, "ingress")] == (5, 5 * (ETH + IP6 + UDP + 200))
    assert flows[(B4, A4, "ICMPv4", 0, 0, "ingress")] == (3, 3 * (ETH + IP4 + ICMP + 56))
    assert flows[(B6, A6, "IPv6-ICMP", 129, 0, "ingress")] == (4, 4 * (ETH + IP6 + ICMP + 56))
    # XDP never sees what A sends: no egress flow, no egress counter
    assert all(k[-1] == "ingress" for k in flows)
    assert snap.totals.egress.packets == 0
    t = snap.totals
    assert t.all.packets == t.flow_packets + t.all.unparsed_packets + t.all.overflow_packets
    assert t.all.bytes == t.flow_bytes + t.all.unparsed_bytes + t.all.overflow_bytes
    assert snap.attach == f"xdp-{mode}"
    assert xdp_prog(netns) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("buff_len", [True, False])
def test_tcp_counts_match_an_af_packet_capture(netns_v4only: NetnsPair, mode, buff_len, monkeypatch):
    """Bulk TCP into A: generic XDP sees GRO super-frames of tens of KB;
    every byte of each must be counted, with the whole-frame length and with
    the linear fallback (where the kernel linearises for the program)."""
    ns = netns_v4only
    monkeypatch.setenv("PKTSTAT_BPF_TEST_FAULTS", f"xdp_buff_len={int(buff_len)}")
    srv = subprocess.Popen(
        ["ip", "netns", "exec", ns.ns_a, sys.executable, str(TESTS / "peer.py"), "tcp", "5102"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout.readline().strip() == "ready"
        with ns.in_a():
            sniffer = Sniffer("va")
            sniffer.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: drop nothing
            with Collector(iface="va", mode="xdp", xdp_mode=mode) as c:
                assert c.status["bytes"].startswith("full frame" if buff_len else "linear")
                time.sleep(0.05)
                sport = in_b(
                    ns, f"from traffic import tcp_exchange; print(tcp_exchange({ns.A4!r}, 5102, 300000)[0])"
                )
                time.sleep(0.3)
            frames = sniffer.stop()
            snap = c.snapshot()
    finally:
        srv.kill()
        srv.wait()
    sport = int(sport)
    want = {
        k: tuple(v)
        for k, v in Sniffer.flows(frames, 6).items()
        if k[-1] == "ingress" and sport in (k[3], k[4])
    }
    got = {(k[0], k[1], 6, *k[3:]): v for k, v in table(snap).items() if k[2] == "TCP"}
    assert want and sum(v[1] for v in want.values()) > 300000
    assert got == want


@pytest.mark.parametrize("mode", MODES)
def test_jumbo_multi_buffer_frames_count_whole(netns_v4only: NetnsPair, mode):
    """9000-byte MTU: native XDP on veth receives 8 KB datagrams as
    multi-buffer frames (it refuses a program without frags support on such a
    device); the count is the whole frame, not its first buffer."""
    ns = netns_v4only
    sh("ip", "link", "set", "va", "mtu", "9000", netns=ns.ns_a)
    sh("ip", "link", "set", "vb", "mtu", "9000", netns=ns.ns_b)
    with ns.in_a():
        with Collector(iface="va", mode="xdp", xdp_mode=mode) as c:
            assert c.status["bytes"] == "full frame (bpf_xdp_get_buff_len)"
            sp = udp_from_b(ns, ns.A4, 5103, 5, 8000)
            time.sleep(0.2)
        snap = c.snapshot()
    assert table(snap)[(ns.B4, ns.A4, "UDP", sp, 5103, "ingress")] == (5, 5 * (ETH + IP4 + UDP + 8000))


def test_native_without_frags_support_refuses_jumbo_mtu_cleanly(netns_v4only: NetnsPair, monkeypatch):
    ns = netns_v4only
    monkeypatch.setenv("PKTSTAT_BPF_TEST_FAULTS", "xdp_buff_len=0")
    sh("ip", "link", "set", "va", "mtu", "9000", netns=ns.ns_a)
    sh("ip", "link", "set", "vb", "mtu", "9000", netns=ns.ns_b)
    with ns.in_a():
        c = Collector(iface="va", mode="xdp", xdp_mode="native")
        with pytest.raises(FeatureMissingError, match=r"^the driver of va cannot run native XDP \("):
            c.start()
    assert xdp_prog(ns) is None


# ---- refusals ------------------------------------------------------------------
@pytest.fixture
def bridge(netns: NetnsPair) -> str:
    """A device in namespace A whose driver has no native XDP."""
    sh("ip", "link", "add", "pbtbr0", "type", "bridge", netns=netns.ns_a)
    sh("ip", "link", "set", "pbtbr0", "up", netns=netns.ns_a)
    return "pbtbr0"


def test_auto_falls_back_to_generic_and_says_so(netns: NetnsPair, bridge):
    with netns.in_a():
        with Collector(iface=bridge, mode="xdp") as c:
            st = c.status
            assert st["attach"] == "xdp-generic"
            assert st["native_refused"] == os.strerror(95)  # EOPNOTSUPP from the bridge driver
            assert xdp_prog(netns, bridge)[1] == "xdp_count"
        with Collector(iface="va", mode="xdp") as c:
            assert c.status["attach"] == "xdp-native" and "native_refused" not in c.status
    assert xdp_prog(netns, bridge) is None


def test_native_where_the_driver_cannot_fails_clearly(netns: NetnsPair, bridge):
    with netns.in_a():
        c = Collector(iface=bridge, mode="xdp", xdp_mode="native")
        with pytest.raises(FeatureMissingError) as e:
            c.start()
    assert str(e.value) == (
        f"the driver of {bridge} cannot run native XDP (attach XDP in native mode: {os.strerror(95)}); "
        "use --xdp_mode generic, or auto to fall back to it"
    )
    assert e.value.exit_code == 69
    assert xdp_prog(netns, bridge) is None


@pytest.mark.parametrize("dev", ["va", "bridge"])
def test_offload_fails_clearly_without_touching_the_interface(netns: NetnsPair, bridge, dev):
    dev = bridge if dev == "bridge" else dev
    with netns.in_a():
        c = Collector(iface=dev, mode="xdp", xdp_mode="offload")
        with pytest.raises(
            FeatureMissingError, match=rf"^XDP offload: the driver of {dev} cannot run this program"
        ):
            c.start()
    assert xdp_prog(netns, dev) is None


@pytest.mark.parametrize("other_mode", ["xdpgeneric", "xdpdrv"])
@pytest.mark.parametrize("our_mode", ["auto", "native", "generic"])
def test_interface_with_another_xdp_program_is_left_alone(netns: NetnsPair, other_mode, our_mode):
    other = attach_other_xdp(netns, other_mode)
    want_mode = "generic" if other_mode == "xdpgeneric" else "native"
    with netns.in_a():
        c = Collector(iface="va", mode="xdp", xdp_mode=our_mode)
        with pytest.raises(PktstatError) as e:
            c.start()
    assert str(e.value) == (
        f'va already has an XDP program (id {other} "other_xdp", {want_mode} mode); '
        "pktstat-bpf does not replace it: detach it first, or count with TC (omit -x)"
    )
    assert e.value.exit_code == 1
    assert xdp_prog(netns) == (other, "other_xdp")
    assert xdp_on(netns)["mode"] == (2 if want_mode == "generic" else 1)


def test_cli_reports_another_program_in_one_line(netns: NetnsPair):
    other = attach_other_xdp(netns, "xdpgeneric")
    p = netns.exec_a(
        sys.executable,
        "-m",
        "pktstat_bpf",
        "-i",
        "va",
        "-x",
        "-t",
        "1s",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = p.communicate(timeout=30)
    assert p.returncode == 1
    assert out == ""
    assert err == (
        f'pktstat-bpf: error: va already has an XDP program (id {other} "other_xdp", generic mode); '
        "pktstat-bpf does not replace it: detach it first, or count with TC (omit -x)\n"
    )
    assert xdp_prog(netns) == (other, "other_xdp")


def test_bad_xdp_mode_is_a_usage_error(capsys):
    assert cli_main(["-x", "--xdp_mode", "turbo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pktstat-bpf: error: argument --xdp_mode/--xdp-mode: invalid choice: 'turbo'")
    assert err.count("\n") == 1
    with pytest.raises(PktstatError, match="--xdp_mode must be one of auto, native, generic, offload"):
        Collector(iface="lo", mode="xdp", xdp_mode="turbo")


# ---- the CLI, and nothing left behind -----------------------------------------
def _cli_in_a(netns, *args):
    return netns.exec_a(
        sys.executable,
        "-m",
        "pktstat_bpf",
        "-i",
        "va",
        "-x",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("mode", MODES)
def test_cli_json_and_text_say_egress_is_not_seen(netns: NetnsPair, mode):
    p = _cli_in_a(netns, "--xdp_mode", mode, "-t", "0", "-j")
    line = p.stderr.readline()
    assert (
        f"counting on va via xdp-{mode} until interrupted (Ctrl-C to stop); XDP sees ingress only" in line
    ), line
    sp = udp_from_b(netns, netns.A4, 5104, 4, 32)
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    doc = json.loads(out)
    assert doc["mode"] == "xdp" and doc["attach"] == f"xdp-{mode}" and doc["iface"] == "va"
    assert doc["directions"] == ["ingress"]
    assert doc["note"] == "XDP sees ingress only: egress is not counted"
    assert "egress" not in doc["totals"]
    (flow,) = [f for f in doc["flows"] if f["srcPort"] == sp]
    assert flow == {
        **flow,
        "srcIp": netns.B4,
        "dstIp": netns.A4,
        "proto": "UDP",
        "dstPort": 5104,
        "packets": 4,
        "bytes": 4 * (ETH + IP4 + UDP + 32),
        "direction": "ingress",
        "iface": "va",
    }
    assert xdp_prog(netns) is None

    p = _cli_in_a(netns, "--xdp_mode", mode, "-t", "1s")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    header = out.splitlines()[0]
    assert header.startswith(f"# xdp on va (xdp-{mode}), 1.0")
    assert header.endswith("; XDP sees ingress only: egress is not counted")


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_leaves_nothing_behind(netns: NetnsPair, mode):
    p = _cli_in_a(netns, "--xdp_mode", mode, "-t", "0")
    line = p.stderr.readline()
    assert f"counting on va via xdp-{mode}" in line, line
    assert xdp_prog(netns)[1] == "xdp_count"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert wait_for(lambda: xdp_prog(netns) is None, timeout=10), xdp_on(netns)


def test_stop_detaches_and_restart_works(netns: NetnsPair):
    with netns.in_a():
        c = Collector(iface="va", mode="xdp", xdp_mode="generic").start()
        assert xdp_prog(netns)[1] == "xdp_count"
        c.stop()
        c.stop()  # idempotent
        assert xdp_prog(netns) is None
        c.start()
        assert xdp_prog(netns)[1] == "xdp_count"
        c.close()
    assert xdp_prog(netns) is None


def _ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, UDP + len(payload), 0) + payload
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        IP4 + len(udp),
        1,
        0,
        64,
        17,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    s = sum(struct.unpack("!10H", hdr))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return hdr[:10] + struct.pack("!H", ~s & 0xFFFF) + hdr[12:] + udp


def _ipv6_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, UDP + len(payload), 0xFFFF) + payload
    return (
        struct.pack("!IHBB", 6 << 28, len(udp), 17, 64)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + udp
    )


def test_l3_device_without_link_layer_header(netns: NetnsPair):
    """A tun device: generic XDP frames start at the IP header; the program
    tells IPv4 from IPv6 by the version nibble (XDP has no skb->protocol)."""
    import fcntl

    TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
    with netns.in_a():
        fd = os.open("/dev/net/tun", os.O_RDWR)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"pbttun0", IFF_TUN | IFF_NO_PI))
            sh("ip", "link", "set", "pbttun0", "up", netns=netns.ns_a)
            with Collector(iface="pbttun0", mode="xdp") as c:
                assert c.status["attach"] == "xdp-generic"  # tun has no native XDP for this
                for _ in range(3):
                    os.write(fd, _ipv4_udp("10.98.0.2", "10.98.0.1", 4444, 5555, b"z" * 10))
                for _ in range(2):
                    os.write(fd, _ipv6_udp("fd98::2", "fd98::1", 4446, 5557, b"y" * 30))
                time.sleep(0.2)
            snap = c.snapshot()
        finally:
            os.close(fd)
    assert table(snap) == {
        ("10.98.0.2", "10.98.0.1", "UDP", 4444, 5555, "ingress"): (3, 3 * (IP4 + UDP + 10)),
        ("fd98::2", "fd98::1", "UDP", 4446, 5557, "ingress"): (2, 2 * (IP6 + UDP + 30)),
    }
    assert snap.totals.all.unparsed_packets == 0
