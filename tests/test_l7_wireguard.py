"""The WireGuard label live (issue 17): a real WireGuard tunnel between the
test's two namespaces (the kernel's wireguard module, configured by
wireguard-tools' `wg`), its outer UDP flows labelled `WireGuard` both ways
from their payloads, in tc mode (on va, both directions) and xdp mode (on va
and vb, ingress each). The tunnel's ports are not 51820, so the label can
only come from the messages: the handshake initiation (type 1, 148 bytes)
goes from A to B, the response (type 2, 92 bytes) back, then transport data
(type 4) carries what the test sends through the tunnel.

Where the kernel has no wireguard (this host's 6.18: `ip link add type
wireguard` says "Unknown device type"), there is nothing to run and no test
is made; the guests of the kernel matrix load the module and expect it
(PKTSTAT_BPF_EXPECT=...,wireguard, tests/vm/test-kernels.sh), where its
absence fails. Cgroup mode cannot see this traffic: WireGuard's UDP socket
is the kernel's own, in no cgroup of the test (docs/counting.md).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import EXPECT, kernel_lacks
from netns import NetnsPair, sh
from pktstat_bpf import Collector
from pktstat_bpf.core.protocols import app_name

pytestmark = pytest.mark.kernel

PORT_A, PORT_B = 40820, 40821  # the tunnel's outer UDP ports (not WireGuard's 51820)
TUN_A, TUN_B = "10.98.0.1", "10.98.0.2"  # inside the tunnel


def wireguard_missing() -> str | None:
    """Why this kernel cannot make a WireGuard link (None: it can)."""
    if not Path("/sys/module/wireguard").exists():
        return "no wireguard module loaded (/sys/module/wireguard)"
    if not shutil.which("wg"):
        return "wireguard-tools' wg is not installed (make setup installs it)"
    return None


def _tunnel(ns: NetnsPair, tmp: Path) -> None:
    keys = {}
    for side in ("a", "b"):
        key = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
        (tmp / f"{side}.key").write_text(key)
        pub = subprocess.run(["wg", "pubkey"], input=key, capture_output=True, text=True, check=True)
        keys[side] = pub.stdout.strip()
    for side, netns, port, peer, peer_ip, peer_port, tun, peer_tun in (
        ("a", ns.ns_a, PORT_A, "b", ns.B4, PORT_B, TUN_A, TUN_B),
        ("b", ns.ns_b, PORT_B, "a", ns.A4, PORT_A, TUN_B, TUN_A),
    ):
        sh("ip", "link", "add", "wg0", "type", "wireguard", netns=netns)
        sh("wg", "set", "wg0", "listen-port", str(port), "private-key", str(tmp / f"{side}.key"), netns=netns)
        sh(
            "wg",
            *("set", "wg0", "peer", keys[peer], "endpoint", f"{peer_ip}:{peer_port}"),
            *("allowed-ips", f"{peer_tun}/32"),
            netns=netns,
        )
        sh("ip", "addr", "add", f"{tun}/24", "dev", "wg0", netns=netns)
        sh("ip", "link", "set", "wg0", "up", netns=netns)


def _send_through(ns: NetnsPair) -> None:
    """Datagrams into the tunnel from A (the first one starts the handshake),
    then from B (its transport data back)."""
    for netns, src, dst in ((ns.ns_a, TUN_A, TUN_B), (ns.ns_b, TUN_B, TUN_A)):
        code = (
            "import socket,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(('{src}',0))\n"
            f"for i in range(5): s.sendto(b'x'*40,('{dst}',9)); time.sleep(0.1)\n"
        )
        subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", code], check=True, timeout=30)


REASON = wireguard_missing()

if REASON is None:

    @pytest.mark.parametrize("mode", ["tc", "xdp"])
    def test_wireguard_tunnel_labelled_both_ways(bpf, tmp_path, mode):
        ns = NetnsPair(ipv6=False)
        try:
            _tunnel(ns, tmp_path)
            with contextlib.ExitStack() as stack:
                cols = []
                if mode == "xdp":
                    with ns.in_b():
                        cols.append(stack.enter_context(Collector(mode="xdp", iface="vb")))
                with ns.in_a():
                    cols.append(stack.enter_context(Collector(mode=mode, iface="va")))
                time.sleep(0.05)
                _send_through(ns)
                time.sleep(0.3)
                snaps = [c.snapshot() for c in cols]
            got: dict[tuple[str, int, int], list[str]] = {}
            for snap in snaps:
                for d, r in zip(snap.flow_dicts(), snap.records):
                    if d["proto"] == "UDP" and {d["srcPort"], d["dstPort"]} == {PORT_A, PORT_B}:
                        key = (d["srcIp"], d["srcPort"], d["dstPort"])
                        got.setdefault(key, []).append(app_name(int(r["app"])))
            assert got == {
                (ns.A4, PORT_A, PORT_B): ["WireGuard"],
                (ns.B4, PORT_B, PORT_A): ["WireGuard"],
            }, mode
        finally:
            ns.destroy()

elif "wireguard" in EXPECT:

    def test_wireguard_expected_here():
        kernel_lacks("wireguard", REASON)
