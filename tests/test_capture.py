"""pktstat_bpf.capture(), traffic budgets and Arrow/Parquet output (the pytest
plugin: test_pytest_plugin.py)."""

from __future__ import annotations

import numpy as np
import pktstat_bpf
import pytest
from pktstat_bpf import _core
from pktstat_bpf.core.snapshot import Snapshot, Totals
from pktstat_bpf.views import budget
from traffic import ETH, IP4, IP6, UDP, send_udp


def _snap(flows):
    """A Snapshot built from (src, dst, proto, sport, dport, dir, packets, bytes)."""
    import ipaddress

    recs = np.zeros(len(flows), dtype=_core.record_dtype)
    for i, (src, dst, proto, sp, dp, d, p, b) in enumerate(flows):
        for field, ip in (("saddr", src), ("daddr", dst)):
            a = ipaddress.ip_address(ip)
            raw = a.packed if a.version == 6 else b"\0" * 10 + b"\xff\xff" + a.packed
            recs[field][i] = np.frombuffer(raw, np.uint8)
        recs["ipver"][i] = ipaddress.ip_address(src).version
        recs["proto"][i], recs["sport"][i], recs["dport"][i] = proto, sp, dp
        recs["dir"][i], recs["packets"][i], recs["bytes"][i] = d, p, b
    stats = np.zeros(3, dtype=_core.stats_dtype)
    return Snapshot(recs, Totals.from_arrays(stats, recs), 1.0, 0.0, 1.0, "tc", "lo")


SNAP = _snap(
    [
        ("127.0.0.1", "127.0.0.1", 6, 40000, 8080, 1, 10, 1000),
        ("10.0.0.1", "93.184.216.34", 6, 40001, 443, 1, 5, 700),
        ("10.0.0.1", "10.0.0.2", 17, 5353, 53, 1, 2, 120),
        ("93.184.216.34", "10.0.0.1", 6, 443, 40001, 0, 6, 9000),
        ("fd00::1", "fd00::2", 58, 128, 0, 1, 1, 118),
    ]
)


def test_only_to_passes_and_fails_with_the_offending_flows():
    budget.only_to(SNAP, ["127.0.0.0/8", "10.0.0.0/8", "93.184.216.34", "fd00::/8"])
    with pytest.raises(budget.BudgetExceeded) as e:
        budget.only_to(SNAP, ["127.0.0.0/8", "10.0.0.0/8"])
    msg = str(e.value)
    assert msg.startswith("6 packets went to destinations outside 127.0.0.0/8, 10.0.0.0/8:")
    assert "TCP 10.0.0.1:40001 -> 93.184.216.34:443 egress packets=5 bytes=700" in msg
    assert "fd00::2" in msg
    assert "9000" not in msg  # ingress is not "sent"


def test_at_most_counts_only_matching_flows():
    budget.at_most(SNAP, bytes=700, dst_port=443)
    budget.at_most(SNAP, packets=5, dst_port=443, proto="tcp")
    with pytest.raises(budget.BudgetExceeded, match=r"^dst_port=443: 700 bytes, budget 699:"):
        budget.at_most(SNAP, bytes=699, dst_port=443)
    budget.at_most(SNAP, flows=1, dst="fd00::/16")
    budget.nothing(SNAP, dst_port=22)
    with pytest.raises(budget.BudgetExceeded):
        budget.nothing(SNAP, proto="UDP")
    # an ICMP "port" is a type: dst_port never matches ICMP
    assert budget.select(SNAP, dst_port=0) == []
    with pytest.raises(ValueError, match="needs a limit"):
        budget.at_most(SNAP, dst_port=1)
    with pytest.raises(ValueError, match="not an IP address or network: 'nope'"):
        budget.only_to(SNAP, ["nope"])


def test_capture_context_counts_the_block_exactly(netns):
    peer = netns.peer("udp", "5100")
    try:
        with netns.in_a():
            with pktstat_bpf.capture(iface="va") as cap:
                sp = send_udp(netns.B4, 5100, 6, 64)
                sp6 = send_udp(netns.B6, 5100, 2, 10)
                assert cap.status["running"]
            snap = cap.snapshot()
            assert snap is cap.snapshot()  # final, stable
    finally:
        peer.kill()
    (f,) = budget.select(snap, src_port=sp)
    assert (f["packets"], f["bytes"]) == (6, 6 * (ETH + IP4 + UDP + 64))
    (f6,) = budget.select(snap, src_port=sp6)
    assert (f6["packets"], f6["bytes"]) == (2, 2 * (ETH + IP6 + UDP + 10))
    assert not cap.collector.running
    assert not netns.ours_attached()


def test_to_arrow_and_parquet_roundtrip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    t = SNAP.to_arrow()
    assert t.num_rows == 5
    assert t.schema.field("bytes").type == pa.uint64()
    assert t.schema.field("src_port").type == pa.uint16()
    assert pa.types.is_dictionary(t.schema.field("proto").type)
    assert t.schema.field("first_seen").type == pa.timestamp("ns", tz="UTC")
    path = tmp_path / "flows.parquet"
    SNAP.to_parquet(path)
    back = pq.read_table(path)
    assert back.column("bytes").to_pylist() == [1000, 700, 120, 9000, 118]
    assert sorted(set(back.column("proto").to_pylist())) == ["IPv6-ICMP", "TCP", "UDP"]
    import json

    header = json.loads(back.schema.metadata[b"pktstat_bpf"])
    assert header["mode"] == "tc" and header["totals"]["flows"] == 5


def test_a_budget_that_could_never_fail_is_refused():
    """XDP sees ingress only: an egress budget (the default) would always pass."""
    import dataclasses

    xdp = dataclasses.replace(SNAP, mode="xdp", extra={"directions": ["ingress"]})
    refused = r"a xdp capture sees ingress only, .* pass direction='ingress' \(or None\)"
    with pytest.raises(ValueError, match=refused):
        budget.nothing(xdp, dst_port=40001)
    with pytest.raises(budget.BudgetExceeded, match="6 packets"):
        budget.nothing(xdp, dst_port=40001, direction="ingress")
    budget.at_most(xdp, packets=6, direction=None, src_port=443)


def test_only_to_takes_one_address_too():
    outside = r"^14 packets went to destinations outside 127\.0\.0\.1/32:"
    with pytest.raises(budget.BudgetExceeded, match=outside):
        budget.only_to(SNAP, "127.0.0.1", direction=None)
    budget.only_to(SNAP, "10.0.0.1", direction="ingress")


def test_budget_messages_name_icmp_by_type_and_ipv6_in_brackets():
    with pytest.raises(budget.BudgetExceeded) as e:
        budget.nothing(SNAP, proto="IPv6-ICMP")
    assert str(e.value) == (
        "proto=IPv6-ICMP: 1 packets, budget 0:\n"
        "  IPv6-ICMP fd00::1 -> fd00::2 type 128 code 0 egress packets=1 bytes=118"
    )
