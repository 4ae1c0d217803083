import json
import subprocess
import sys

import numpy as np
import pytest
from pktstat_bpf import _core
from pktstat_bpf.core import render
from pktstat_bpf.core.addresses import address_strings


@pytest.mark.parametrize(
    "bps,text",
    [
        (0, "0.00 bps"),
        (999.994, "999.99 bps"),
        (1000, "1.00 Kbps"),
        (1_234_567, "1.23 Mbps"),
        (5e9, "5.00 Gbps"),
        (2.5e12, "2.50 Tbps"),
    ],
)
def test_format_bitrate(bps, text):
    assert render.format_bitrate(bps) == text


def _flow(**kw):
    d = {
        "srcIp": "10.0.0.1",
        "dstIp": "10.0.0.2",
        "proto": "TCP",
        "srcPort": 53512,
        "dstPort": 443,
        "bytes": 51234,
        "packets": 42,
        "bitrate": 1_230_000.0,
    }
    d.update(kw)
    return d


def test_text_line_tcp_matches_pktstat_bpf():
    assert render.text_line(_flow()) == (
        "bitrate: 1.23 Mbps, packets: 42, bytes: 51234, proto: TCP, src: 10.0.0.1:53512, dst: 10.0.0.2:443"
    )


def test_text_line_icmp_shows_type_and_code():
    line = render.text_line(_flow(proto="ICMPv4", srcPort=8, dstPort=0))
    assert line.endswith("proto: ICMPv4, src: 10.0.0.1, dst: 10.0.0.2, type: 8, code: 0")


def test_text_line_ipv6_endpoints_are_bracketed():
    line = render.text_line(_flow(srcIp="fd00::1", dstIp="fd00::2", proto="UDP"))
    assert "src: [fd00::1]:53512, dst: [fd00::2]:443" in line


def test_text_line_without_ports():
    line = render.text_line(_flow(proto="GRE", srcPort=0, dstPort=0))
    assert line.endswith("proto: GRE, src: 10.0.0.1, dst: 10.0.0.2")


def test_hostile_owner_strings_are_escaped_in_text_and_quoted_in_json():
    comm = "evil\x1b[31m\nname\"'"
    cgroup = "/sys/fs/cgroup/a b/\x07\u202e"
    line = render.text_line(_flow(pid=7, comm=comm, cgroup=cgroup))
    assert "\x1b" not in line and "\n" not in line and "\x07" not in line and "\u202e" not in line
    assert "comm: evil\\x1b[31m\\nname\"'" in line
    assert "cgroup: /sys/fs/cgroup/a b/\\x07\\u202e" in line
    doc = render.dumps({"comm": comm, "cgroup": cgroup})
    assert "\x1b" not in doc and "\n" not in doc
    assert json.loads(doc) == {"comm": comm, "cgroup": cgroup}


def test_escape_text_keeps_backslashes_unambiguous():
    assert render.escape_text("a\\x1b") == "a\\\\x1b"
    assert render.escape_text("plain") == "plain"


def test_address_strings_v4_mapped_and_v6():
    a = np.zeros((3, 16), np.uint8)
    a[0, 10:12] = 0xFF
    a[0, 12:] = [192, 0, 2, 1]
    a[1, :2] = [0xFD, 0x00]
    a[1, 15] = 1
    a[2] = a[0]
    out = address_strings(a, np.array([4, 6, 6], np.uint8))
    assert list(out) == ["192.0.2.1", "fd00::1", "::ffff:192.0.2.1"]


def test_flow_dicts_from_records():
    recs = np.zeros(1, dtype=_core.record_dtype)
    recs["saddr"][0, 10:] = [0xFF, 0xFF, 10, 0, 0, 1]
    recs["daddr"][0, 10:] = [0xFF, 0xFF, 10, 0, 0, 2]
    recs["ipver"], recs["proto"], recs["sport"], recs["dport"] = 4, 17, 1000, 53
    recs["packets"], recs["bytes"], recs["dir"], recs["ifindex"] = 3, 300, 1, 5
    recs["first_seen"] = np.datetime64(1_700_000_000_000_000_000, "ns")
    recs["last_seen"] = np.datetime64(1_700_000_000_500_000_000, "ns")
    (d,) = render.flow_dicts(recs, 2.0, ifnames={5: "eth9"})
    assert d == {
        "srcIp": "10.0.0.1",
        "dstIp": "10.0.0.2",
        "proto": "UDP",
        "srcPort": 1000,
        "dstPort": 53,
        "bytes": 300,
        "packets": 3,
        "bitrate": 1200.0,
        "appProto": "pending",  # a UDP flow not decided yet (no payload looked at)
        "iface": "eth9",
        "direction": "egress",
        "firstSeen": "2023-11-14T22:13:20.000000000Z",
        "lastSeen": "2023-11-14T22:13:20.500000000Z",
    }


def test_text_and_json_outputs_do_not_import_pyarrow():
    """The report and the streams format addresses in NumPy: importing pyarrow
    for them took longer than the formatting (seconds in an emulated guest,
    stretching the first interval of a stream)."""
    code = """
import sys
import numpy as np
from pktstat_bpf import _core
from pktstat_bpf.core.snapshot import Snapshot, Totals
r = np.zeros(3, _core.record_dtype)
r["ipver"], r["proto"], r["packets"], r["bytes"] = 4, 17, 1, 100
r["saddr"][:, 10:12] = 255
snap = Snapshot(r, Totals.from_arrays(np.zeros(3, _core.stats_dtype), r), 1.0, 0.0, 1.0, "tc")
assert "0.0.0.0" in snap.to_text() and "0.0.0.0" in snap.to_json()
print("pyarrow" in sys.modules, "pandas" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
