"""When a flow is looked at (src/bpf/l7_probe.bpf.h, docs/counting.md):
the look finds the payload itself, so packets without payload are looked
at too, up to L7_EMPTY_BUDGET (64) of them per flow; payload packets up to
L7_BUDGET (3); a flow with nothing to look at (not TCP or UDP) stops at its
first packet. Checked on the flow values themselves (app, app_tries,
app_empty), replayed through the TC program from captures made here.
"""

from __future__ import annotations

from pathlib import Path

import pktstat_bpf
import pytest
from pktstat_bpf.core import protocols

scapy = pytest.importorskip("scapy.all")

L7_BUDGET, L7_EMPTY_BUDGET, L7_DONE = 3, 64, 0xFF  # src/bpf/l7.h
C, S = "10.2.0.1", "10.2.0.2"
SSH = b"SSH-2.0-OpenSSH_9.6\r\n"


def _replay(tmp_path: Path, frames: list) -> dict[tuple[int, int, int], tuple[str, int, int, int]]:
    """(proto, sport, dport) -> (label, app_tries, app_empty, packets)."""
    from scapy.all import wrpcap

    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + i * 0.001
    path = tmp_path / "budget.pcap"
    wrpcap(str(path), frames)
    r = pktstat_bpf.Replayer().replay(str(path)).records
    return {
        (int(x["proto"]), int(x["sport"]), int(x["dport"])): (
            protocols.APP_NAMES[int(x["app"])],
            int(x["app_tries"]),
            int(x["app_empty"]),
            int(x["packets"]),
        )
        for x in r
    }


def _tcp(sport: int, payload: bytes = b"", flags: str = "A") -> object:
    from scapy.all import IP, TCP, Ether

    return Ether() / IP(src=C, dst=S) / TCP(sport=sport, dport=2222, flags=flags) / payload


@pytest.mark.parametrize("empties", [0, 1, 2, L7_EMPTY_BUDGET - 2])  # after the SYN, itself one
def test_a_payload_after_packets_without_payload_is_labelled(bpf, tmp_path, empties):
    frames = [_tcp(41000, flags="S")] + [_tcp(41000) for _ in range(empties)] + [_tcp(41000, SSH, "PA")]
    got = _replay(tmp_path, frames)
    assert got[(6, 41000, 2222)] == ("SSH", L7_DONE, empties + 1, empties + 2)


def test_a_flow_without_payload_stops_looking_after_the_empty_budget(bpf, tmp_path):
    frames = [_tcp(41001) for _ in range(L7_EMPTY_BUDGET)] + [_tcp(41001, SSH, "PA")]
    got = _replay(tmp_path, frames)
    # the SSH banner came after 64 packets without payload: not looked at
    assert got[(6, 41001, 2222)] == ("pending", L7_BUDGET, L7_EMPTY_BUDGET, L7_EMPTY_BUDGET + 1)


def test_payload_looks_end_at_the_budget(bpf, tmp_path):
    frames = [_tcp(41002, b"\x5a\xa5" * 20, "PA") for _ in range(L7_BUDGET)] + [_tcp(41002, SSH, "PA")]
    got = _replay(tmp_path, frames)
    assert got[(6, 41002, 2222)] == ("unknown", L7_BUDGET, 0, L7_BUDGET + 1)


def test_a_flow_with_nothing_to_look_at_stops_at_once(bpf, tmp_path):
    from scapy.all import ICMP, IP, Ether

    frames = [Ether() / IP(src=C, dst=S) / ICMP(type=8, id=7, seq=i) for i in range(5)]
    got = _replay(tmp_path, frames)
    assert got[(1, 8, 0)] == ("pending", L7_BUDGET, 0, 5)
