"""Snapshot.to_pandas(): the typed columns, their exact values (the same as
the JSON output's), the vectorised address formatting against glibc's
inet_ntop, and the paths without pyarrow or without pandas."""

from __future__ import annotations

import ipaddress
import socket
import sys

import numpy as np
import pytest
from pktstat_bpf import _core
from pktstat_bpf.core import addresses, frame, protocols, render
from pktstat_bpf.core.snapshot import Snapshot, Totals

pd = pytest.importorskip("pandas")

T0 = 1_700_000_000_000_000_000  # ns


def _addr(ip: str) -> tuple[bytes, int]:
    a = ipaddress.ip_address(ip)
    return (a.packed if a.version == 6 else bytes(10) + b"\xff\xff" + a.packed), a.version


def records(*rows: dict) -> np.ndarray:
    r = np.zeros(len(rows), _core.record_dtype)
    for i, row in enumerate(rows):
        s, v = _addr(row.get("src", "10.0.0.1"))
        d, _ = _addr(row.get("dst", "10.0.0.2"))
        r[i]["saddr"], r[i]["daddr"], r[i]["ipver"] = (
            np.frombuffer(s, np.uint8),
            np.frombuffer(d, np.uint8),
            v,
        )
        for name, default in (
            ("sport", 1000),
            ("dport", 53),
            ("proto", 17),
            ("dir", 1),
            ("ifindex", 0),
            ("pid", 0),
            ("cgroup_id", 0),
            ("packets", 1),
            ("bytes", 100),
        ):
            r[i][name] = row.get(name, default)
        r[i]["comm"] = row.get("comm", b"")
        r[i]["first_seen"] = np.datetime64(T0 + row.get("first", 0), "ns")
        r[i]["last_seen"] = np.datetime64(T0 + row.get("last", 0), "ns")
    return r


def snapshot(r: np.ndarray, duration: float = 2.0, mode: str = "tc", **kw) -> Snapshot:
    return Snapshot(
        r, Totals.from_arrays(np.zeros(3, _core.stats_dtype), r), duration, 0.0, duration, mode, **kw
    )


FLOWS = records(
    {
        "src": "10.0.0.1",
        "dst": "93.184.216.34",
        "proto": 6,
        "sport": 40001,
        "dport": 443,
        "ifindex": 2,
        "packets": 5,
        "bytes": 700,
        "first": 1,
        "last": 1_500_000_000,
    },
    {
        "src": "93.184.216.34",
        "dst": "10.0.0.1",
        "proto": 6,
        "sport": 443,
        "dport": 40001,
        "dir": 0,
        "ifindex": 2,
        "packets": 2**40,
        "bytes": 2**63 + 5,
        "first": 2,
        "last": 3,
    },
    {
        "src": "fd00::1",
        "dst": "fe80::1:0:0:2",
        "proto": 58,
        "sport": 128,
        "dport": 0,
        "ifindex": 7,
        "pid": 4242,
        "comm": b"caf\xc3\xa9",
        "cgroup_id": 99,
    },
    {
        "src": "2001:db8::ffff:1:1",
        "dst": "::ffff:192.0.2.1",
        "proto": 132,
        "sport": 65535,
        "dport": 1,
        "dir": 2,
        "pid": 7,
        "comm": b"bad\xff\x1b",
        "cgroup_id": 5,
    },
)


def test_columns_and_dtypes_are_exactly_the_documented_ones():
    df = snapshot(FLOWS, ifnames={2: "eth0"}, cgroups={99: "/app.slice"}).to_pandas()
    assert (
        tuple(df.columns)
        == frame.COLUMNS
        == (
            "src_ip",
            "dst_ip",
            "src_port",
            "dst_port",
            "proto",
            "app",
            "iface",
            "direction",
            "kind",
            "pid",
            "comm",
            "cgroup",
            "packets",
            "bytes",
            "bitrate",
            "first_seen",
            "last_seen",
            "tcp_flags",
            "syn_packets",
            "fin_packets",
            "rst_packets",
            "retrans_packets",
            "retrans_bytes",
            "rtt_samples",
            "rtt_min",
            "rtt_mean",
            "rtt_max",
        )
    )
    dt = df.dtypes
    assert (dt["retrans_packets"], dt["retrans_bytes"], dt["rtt_samples"]) == (
        np.uint32,
        np.uint64,
        np.uint32,
    )
    for name in ("rtt_min", "rtt_mean", "rtt_max"):
        assert dt[name] == "timedelta64[ns]", name
        assert df[name].isna().all(), name  # these flows timed no round trip
    assert (dt["tcp_flags"], dt["syn_packets"], dt["fin_packets"], dt["rst_packets"]) == (
        np.uint8,
        np.uint32,
        np.uint32,
        np.uint32,
    )
    for name in ("src_ip", "dst_ip", "comm", "cgroup"):
        assert pd.api.types.is_string_dtype(dt[name]) and dt[name] != "category", name
        assert all(type(v) is str for v in df[name]), name
    assert (dt["src_port"], dt["dst_port"], dt["pid"]) == (np.uint16, np.uint16, np.uint32)
    assert (dt["packets"], dt["bytes"], dt["bitrate"]) == (np.uint64, np.uint64, np.float64)
    for name in ("proto", "iface", "direction", "kind"):
        assert isinstance(dt[name], pd.CategoricalDtype), name
    assert list(dt["direction"].categories) == ["ingress", "egress", ""]
    assert list(dt["kind"].categories) == ["data", "retransmit"]  # process mode's TCP retransmissions
    assert isinstance(dt["app"], pd.CategoricalDtype)
    assert list(dt["app"].categories) == list(protocols.APP_NAMES)  # all of them, in l7.h's order
    assert df["app"].astype(object).where(df["app"].notna(), None).tolist() == [
        "pending",  # TCP: not decided yet
        "pending",
        None,  # ICMPv6 and SCTP: no label applies
        None,
    ]
    for name in ("first_seen", "last_seen"):
        assert (
            isinstance(dt[name], pd.DatetimeTZDtype) and dt[name].unit == "ns" and str(dt[name].tz) == "UTC"
        )


def test_values_are_exact_and_agree_with_the_json_flows():
    snap = snapshot(FLOWS, ifnames={2: "eth0"}, cgroups={99: "/app.slice"})
    df = snap.to_pandas()
    rows = df.to_dict("records")
    assert [(r["src_ip"], r["dst_ip"], r["src_port"], r["dst_port"], r["proto"]) for r in rows] == [
        ("10.0.0.1", "93.184.216.34", 40001, 443, "TCP"),
        ("93.184.216.34", "10.0.0.1", 443, 40001, "TCP"),
        ("fd00::1", "fe80::1:0:0:2", 128, 0, "IPv6-ICMP"),
        ("2001:db8::ffff:1:1", "::ffff:192.0.2.1", 65535, 1, "SCTP"),
    ]
    assert [(r["iface"], r["direction"]) for r in rows] == [
        ("eth0", "egress"),
        ("eth0", "ingress"),
        ("7", "egress"),
        ("", ""),
    ]
    assert [(r["pid"], r["comm"], r["cgroup"]) for r in rows] == [
        (0, "", ""),
        (0, "", ""),
        (4242, "café", "/app.slice"),
        (7, "bad\\xff\x1b", ""),  # unknown cgroup id: ""
    ]
    assert [(r["packets"], r["bytes"]) for r in rows] == [(5, 700), (2**40, 2**63 + 5), (1, 100), (1, 100)]
    assert list(df["bitrate"]) == [700 * 4.0, (2**63 + 5) * 4.0, 400.0, 400.0]
    assert df["first_seen"][0] == pd.Timestamp(T0 + 1, unit="ns", tz="UTC")
    assert df["last_seen"][0].value == T0 + 1_500_000_000
    # the same strings and numbers as the JSON output (flows() is sorted by bitrate; match on ports)
    by_port = {(f["srcPort"], f["dstPort"]): f for f in snap.flows()}
    for r in rows:
        f = by_port[(r["src_port"], r["dst_port"])]
        assert (f["srcIp"], f["dstIp"], f["proto"], f["packets"], f["bytes"]) == (
            r["src_ip"],
            r["dst_ip"],
            r["proto"],
            r["packets"],
            r["bytes"],
        )
        assert f["firstSeen"] == render.rfc3339(r["first_seen"].value)


def test_empty_snapshot_has_the_same_columns_and_dtypes():
    full = snapshot(FLOWS).to_pandas()
    empty = snapshot(records()).to_pandas()
    assert len(empty) == 0 and list(empty.columns) == list(full.columns)
    for name in frame.COLUMNS:
        if name not in ("proto", "iface"):  # categoricals: no categories without rows
            assert empty.dtypes[name] == full.dtypes[name], name


def test_extra_columns_follow_the_typed_ones():
    snap = snapshot(FLOWS[:2]).with_columns(
        total_bytes=np.array([7, 8], np.uint64), dst_pod=np.array(["a/b", None])
    )
    df = snap.to_pandas()
    assert list(df.columns[-2:]) == ["total_bytes", "dst_pod"]
    assert list(df["total_bytes"]) == [7, 8] and df["dst_pod"][0] == "a/b"


def _glibc(raw: np.ndarray, ver: np.ndarray) -> list[str]:
    return [
        socket.inet_ntop(socket.AF_INET, bytes(a[12:]))
        if v == 4
        else socket.inet_ntop(socket.AF_INET6, bytes(a))
        for a, v in zip(raw, ver)
    ]


def test_address_formatting_matches_inet_ntop_on_every_zero_run_shape():
    rng = np.random.default_rng(2024)
    n = 20_000
    words = rng.integers(0, 65536, (n, 8)).astype(">u2")
    words[rng.random((n, 8)) < 0.55] = 0  # every pattern of zero runs: ties, leading, trailing, all zero
    words[: n // 20, :5], words[: n // 20, 5] = 0, 0xFFFF  # ::ffff:a.b.c.d
    words[n // 20 : n // 10, :6] = 0  # ::a.b.c.d, and ::1 / :: among them
    words[n // 10 : n // 10 + 300] = 0
    words[n // 10 + 300 : n // 10 + 600, :7] = 0
    small = rng.integers(0, 16, (n // 4, 8)).astype(">u2")  # one-digit groups: 0..f
    words = np.concatenate([words, small, rng.integers(0, 256, (n // 4, 8)).astype(">u2")])
    raw = words.view(np.uint8).reshape(len(words), 16)
    for ver in (np.full(len(raw), 6), np.full(len(raw), 4), rng.choice([4, 6], len(raw))):
        assert list(addresses.address_strings(raw, ver)) == _glibc(raw, ver)


def test_strings_without_pyarrow_are_the_same(monkeypatch):
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 256, (500, 16), dtype=np.uint8)
    raw[::3, :10] = 0
    ver = rng.choice([4, 6], 500)
    text = addresses.address_text(raw, ver)
    pytest.importorskip("pyarrow")  # imported: to_numpy takes the Arrow path
    with_arrow = list(text.to_numpy())
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert list(text.to_numpy()) == with_arrow == _glibc(raw, ver)
    # and non-ASCII text through the NumPy path
    t = addresses.Text.from_codes(np.array([1, 0, 1, 2]), ["", "café", "€/x"])
    assert list(t.to_numpy()) == ["café", "", "café", "€/x"]


def test_object_string_columns_as_older_pandas_make_them(monkeypatch):
    """pandas < 3 keeps strings in object columns: the same values come out."""
    snap = snapshot(FLOWS, ifnames={2: "eth0"}, cgroups={99: "/app.slice"})
    want = snap.to_pandas().astype({n: object for n in ("src_ip", "dst_ip", "comm", "cgroup")})
    monkeypatch.setattr(frame, "_STRING_DTYPE", [np.dtype(object)])
    cols = frame.columns(
        pd, snap.records, bitrate=snap.bitrates(), ifnames=snap.ifnames, cgroups=snap.cgroups
    )
    for name in ("src_ip", "dst_ip", "comm", "cgroup"):
        assert cols[name].dtype == object and list(cols[name]) == list(want[name]), name


def test_repeated_interface_names_make_one_category():
    r = records({"ifindex": 2}, {"ifindex": 3}, {"ifindex": 2})
    df = snapshot(r, ifnames={2: "veth", 3: "veth"}).to_pandas()
    assert list(df["iface"].cat.categories) == ["veth"] and list(df["iface"]) == ["veth"] * 3


def test_many_flows_between_few_hosts():
    """The dictionary-encoded columns (comm) expand to the right rows."""
    n = 10_000
    r = records(*({"src": f"10.0.{i % 7}.1", "comm": b"w%d" % (i % 3), "pid": i % 3 + 1} for i in range(n)))
    df = snapshot(r, mode="cgroup").to_pandas()
    assert list(df["src_ip"][:8]) == [f"10.0.{i % 7}.1" for i in range(8)]
    assert list(df["comm"][:6]) == ["w0", "w1", "w2", "w0", "w1", "w2"]
    assert df.groupby("comm")["pid"].first().to_dict() == {"w0": 1, "w1": 2, "w2": 3}


def test_clear_import_errors_without_pandas_or_pyarrow(monkeypatch, tmp_path):
    snap = snapshot(FLOWS)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(
        ImportError, match=r"^Snapshot.to_arrow\(\) needs pyarrow: pip install 'pktstat-bpf\[arrow\]'$"
    ):
        snap.to_arrow()
    with pytest.raises(
        ImportError, match=r"^Snapshot.to_parquet\(\) needs pyarrow: pip install 'pktstat-bpf\[arrow\]'$"
    ):
        snap.to_parquet(tmp_path / "x.parquet")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(
        ImportError, match=r"^Snapshot.to_pandas\(\) needs pandas: pip install 'pktstat-bpf\[pandas\]'$"
    ):
        snap.to_pandas()
    assert not (tmp_path / "x.parquet").exists()
