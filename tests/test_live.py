"""Live views without privilege: interval deltas, filters, stream renderers,
the TUI's table model and the flags' validation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from cumulative import IntervalTracker
from pktstat_bpf import _core
from pktstat_bpf.core.keys import flow_keys, match
from pktstat_bpf.core.snapshot import Snapshot, Totals
from pktstat_bpf.output.stream import StreamWriter
from pktstat_bpf.views.filters import DEFAULT_INTERNAL, NetworkSet, UniqueFilter, connection_hashes
from pktstat_bpf.views.view import View


def addr(ip: str) -> tuple[list[int], int]:
    import ipaddress

    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return [0] * 10 + [255, 255] + list(a.packed), 4
    return list(a.packed), 6


def recs(*rows: dict) -> np.ndarray:
    """Records from dicts: src, dst, sport, dport, proto, packets, bytes, dir, pid, comm."""
    r = np.zeros(len(rows), _core.record_dtype)
    for i, row in enumerate(rows):
        d, v = addr(row.get("dst", "10.0.0.2"))
        s, _ = addr(row.get("src", "10.0.0.1" if v == 4 else "fd00::1"))
        r[i]["saddr"], r[i]["daddr"], r[i]["ipver"] = s, d, v
        r[i]["sport"], r[i]["dport"] = row.get("sport", 1000), row.get("dport", 53)
        r[i]["proto"] = row.get("proto", 17)
        r[i]["dir"] = row.get("dir", 1)
        r[i]["packets"], r[i]["bytes"] = row.get("packets", 1), row.get("bytes", 100)
        r[i]["pid"] = row.get("pid", 0)
        r[i]["comm"] = row.get("comm", b"")
        r[i]["cgroup_id"] = row.get("cgroup_id", 0)
    return r


#: modes whose flows carry pid/comm/cgroup (Snapshot.owners)
OWNER_MODES = ("cgroup", "process", "fake-owners")


def snap(r: np.ndarray, duration: float, stats=None, mode: str = "tc", cgroups=None) -> Snapshot:
    st = np.zeros(3, _core.stats_dtype) if stats is None else stats
    return Snapshot(
        r,
        Totals.from_arrays(st, r),
        duration,
        1000.0,
        1000.0 + duration,
        mode,
        iface="eth9",
        attach="tcx",
        cgroups=cgroups or {},
        owners=mode in OWNER_MODES,
    )


def stats(packets: int, bytes_: int, unparsed=(0, 0)) -> np.ndarray:
    st = np.zeros(3, _core.stats_dtype)
    st[1]["packets"], st[1]["bytes"] = packets, bytes_
    st[1]["unparsed_packets"], st[1]["unparsed_bytes"] = unparsed
    return st


# -- interval deltas -----------------------------------------------------------


def test_flow_keys_and_match_join_on_the_whole_key():
    a = recs({"sport": 1}, {"sport": 2}, {"sport": 3, "dir": 0})
    b = recs({"sport": 3, "dir": 0}, {"sport": 4}, {"sport": 1}, {"sport": 3, "dir": 1})
    assert flow_keys(a).dtype == np.dtype("V72")
    assert list(match(flow_keys(a), flow_keys(b))) == [2, -1, 0, -1]
    assert list(match(flow_keys(a[:0]), flow_keys(b))) == [-1] * 4
    assert len(match(flow_keys(a), flow_keys(b[:0]))) == 0


@pytest.mark.parametrize("fake_hash", ["unique-but-colliding", "duplicates"])
def test_key_index_never_joins_different_flows_on_a_hash_collision(monkeypatch, fake_hash):
    from pktstat_bpf.core import keys as live

    if fake_hash == "duplicates":  # two keys of one reading share a hash: exact fallback
        monkeypatch.setattr(live, "hash_words", lambda w: w[:, 4] & np.uint64(1))
    else:  # sport % 3: unique within `a`, but (4 -> 1) and (3, egress -> 0) collide with other keys of `a`
        monkeypatch.setattr(live, "hash_words", lambda w: (w[:, 4] & np.uint64(0xFFFF)) % np.uint64(3))
    a = recs({"sport": 1}, {"sport": 2}, {"sport": 3, "dir": 0})
    b = recs({"sport": 3, "dir": 0}, {"sport": 4}, {"sport": 1}, {"sport": 3, "dir": 1})
    ka, kb = live.KeyIndex(a), live.KeyIndex(b)
    assert list(ka.find(kb, b)) == [2, -1, 0, -1]


def test_tracker_deltas_add_up_and_a_stopped_flow_shows_zero_once():
    t = IntervalTracker()
    i0 = t.advance(snap(recs({"sport": 1, "packets": 2, "bytes": 200}), 1.0, stats(3, 284, (1, 84))))
    assert i0.index == 0 and i0.duration == 1.0 and i0.start == 1000.0 and i0.end == 1001.0
    assert list(i0.delta.records["packets"]) == [2] and list(i0.bitrates()) == [1600.0]
    i1 = t.advance(
        snap(
            recs({"sport": 2, "packets": 5, "bytes": 500}, {"sport": 1, "packets": 6, "bytes": 640}),
            1.5,
            stats(12, 1224, (1, 84)),
        )
    )
    assert i1.duration == 0.5 and i1.start == 1001.0 and i1.end == 1001.5
    assert list(i1.delta.records["packets"]) == [5, 4]
    assert list(i1.delta.records["bytes"]) == [500, 440]
    assert list(i1.bitrates()) == [8000.0, 7040.0]
    assert list(i1.delta.columns["total_bytes"]) == [500, 640]
    assert i1.delta.totals.all.packets == 9 and i1.delta.totals.all.bytes == 940
    assert i1.delta.totals.all.unparsed_packets == 0 and i1.delta.totals.conserved
    # flow 1 stops: bitrate 0 in the next interval, still "recent"; then not.
    i2 = t.advance(
        snap(
            recs({"sport": 1, "packets": 6, "bytes": 640}, {"sport": 2, "packets": 7, "bytes": 600}),
            2.5,
            stats(14, 1324, (1, 84)),
        )
    )
    assert list(i2.delta.records["sport"]) == [1, 2] and list(i2.bitrates()) == [0.0, 800.0]
    assert list(i2.active) == [False, True] and list(i2.recent) == [True, True]
    i3 = t.advance(
        snap(
            recs({"sport": 1, "packets": 6, "bytes": 640}, {"sport": 2, "packets": 7, "bytes": 600}),
            3.5,
            stats(14, 1324, (1, 84)),
        )
    )
    assert list(i3.active) == [False, False] and list(i3.recent) == [False, True]
    total = {}
    for iv in (i0, i1, i2, i3):
        for r in iv.delta.records:
            total[int(r["sport"])] = total.get(int(r["sport"]), 0) + int(r["bytes"])
    assert total == {1: 640, 2: 600}  # the deltas add up to the cumulative counts


def test_tracker_evicted_and_recreated_flow_never_goes_negative():
    t = IntervalTracker()
    t.advance(snap(recs({"packets": 10, "bytes": 1000}), 1.0))
    iv = t.advance(snap(recs({"packets": 2, "bytes": 150}), 2.0))
    assert list(iv.delta.records["packets"]) == [2] and list(iv.delta.records["bytes"]) == [150]


def test_interval_deltas_keep_the_flow_keys_byte_for_byte():
    """Bytes of the key that no dtype field names (struct padding, or a field
    this version of the dtype does not know yet) survive into the delta."""
    full = recs({"sport": 1, "packets": 2, "bytes": 200}, {"sport": 2, "packets": 3, "bytes": 300})
    # the record dtype as a version that does not know flow_tuple.kind would have it
    dt = full.dtype
    older = np.dtype(
        {
            "names": [n for n in dt.names if n != "kind"],
            "formats": [dt.fields[n][0] for n in dt.names if n != "kind"],
            "offsets": [dt.fields[n][1] for n in dt.names if n != "kind"],
            "itemsize": dt.itemsize,
        }
    )
    r = full.view(older)
    raw = r.view(np.uint8).reshape(len(r), r.dtype.itemsize)
    named = np.zeros(r.dtype.itemsize, bool)
    for name in r.dtype.names:
        fdt, off = r.dtype.fields[name][:2]
        named[off : off + fdt.itemsize] = True
    unnamed = np.flatnonzero(~named[: r.dtype.fields["packets"][1]])
    assert list(unnamed) == [dt.fields["kind"][1]]
    raw[:, unnamed] = 0x5A
    t = IntervalTracker()
    t.advance(snap(r, 1.0))
    iv = t.advance(snap(r, 2.0))
    assert (flow_keys(iv.delta.records) == flow_keys(r)).all()
    assert (iv.delta.records.view(np.uint8).reshape(2, -1)[:, unnamed] == 0x5A).all()


def test_interval_to_pandas_has_interval_and_lifetime_columns():
    pytest.importorskip("pandas")
    t = IntervalTracker()
    t.advance(snap(recs({"packets": 1, "bytes": 100}), 1.0))
    df = t.advance(snap(recs({"packets": 4, "bytes": 400}), 2.0)).to_pandas()
    row = df.iloc[0]
    assert (row["packets"], row["bytes"], row["total_packets"], row["total_bytes"]) == (3, 300, 4, 400)
    assert row["bitrate"] == 2400.0 and bool(row["active"])
    assert str(row["interval_start"]) == "1970-01-01 00:16:41+00:00"
    assert str(row["interval_end"]) == "1970-01-01 00:16:42+00:00"


# -- filters -------------------------------------------------------------------


def test_network_set_matches_by_family_and_prefix():
    ns = NetworkSet.parse("10.0.0.0/8, 192.168.1.7/24,fd00::/8,::ffff:0:0/96")
    assert ns.networks == ("10.0.0.0/8", "192.168.1.0/24", "fd00::/8", "::ffff:0:0/96")
    ips = ["10.255.0.1", "11.0.0.1", "192.168.1.200", "192.168.2.1", "fd12::1", "fe80::1", "::ffff:8.8.8.8"]
    r = recs(*({"dst": ip} for ip in ips))
    assert list(ns.contains(r["daddr"], r["ipver"])) == [True, False, True, False, True, False, True]
    # an IPv4 flow is not in an IPv6 network just because of the v4-mapped storage
    assert not NetworkSet.parse("::ffff:0:0/96").contains(recs({"dst": "8.8.8.8"})["daddr"], np.array([4]))[0]


def test_default_internal_networks():
    ns = NetworkSet.parse(",".join(DEFAULT_INTERNAL))
    inside = [
        "127.0.0.1",
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.1",
        "::1",
        "fe80::1",
        "fd99::2",
        "fc00::1",
    ]
    outside = ["8.8.8.8", "172.32.0.1", "192.169.0.1", "2001:db8::1", "::2", "fec0::1"]
    r = recs(*({"dst": ip} for ip in inside + outside))
    assert list(ns.external(r)) == [False] * len(inside) + [True] * len(outside)


@pytest.mark.parametrize(
    "text,bad",
    [
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("10.0.0.0/8,bogus", "bogus"),
        ("fd00::/129", "fd00::/129"),
        ("300.1.1.1", "300.1.1.1"),
    ],
)
def test_network_set_rejects_bad_cidrs_naming_them(text, bad):
    from pktstat_bpf.core.errors import UsageError

    with pytest.raises(UsageError) as e:
        NetworkSet.parse(text)
    assert str(e.value) == (
        f"--internal-networks: invalid network '{bad}' (expected a CIDR such as 10.0.0.0/8 or fd00::/8)"
    )


def test_unique_filter_remembers_connections_not_directions():
    u = UniqueFilter(1 << 10)
    a = recs({"sport": 1, "dir": 0}, {"sport": 1, "dir": 1}, {"sport": 2}, {"sport": 1, "pid": 7})
    assert list(u.first_seen(a)) == [True, False, True, True]
    assert list(u.first_seen(recs({"sport": 2}, {"sport": 3}))) == [False, True]
    assert u.nbytes == 8 << 10


def test_unique_filter_memory_is_fixed_and_collisions_only_reshow():
    u = UniqueFilter(16)  # tiny table: plenty of slot collisions
    many = recs(*({"sport": p} for p in range(1000)))
    assert u.first_seen(many).all()  # every new connection is shown
    again = u.first_seen(many)
    assert again.sum() >= 1000 - 16  # at most 16 remembered: the rest show again
    assert u.nbytes == 16 * 8
    h = connection_hashes(many)
    assert len(np.unique(h)) == 1000 and (h != 0).all()


# -- renderers -----------------------------------------------------------------


def _interval_with_pods():
    t = IntervalTracker()
    t.advance(snap(recs({"dst": "10.0.0.2", "dport": 80, "proto": 6, "packets": 1, "bytes": 60}), 1.0))
    iv = t.advance(snap(recs({"dst": "10.0.0.2", "dport": 80, "proto": 6, "packets": 3, "bytes": 180}), 2.0))

    class Pods:
        def label(self, ips):
            return np.array([{"10.0.0.2": "shop/web-1\x1b[2J"}.get(ip) for ip in ips], dtype=object)

    return View(pods=Pods()).apply_interval(iv)


def test_stream_writer_jsonl_and_text_share_the_flow_renderer():
    import io

    iv = _interval_with_pods()
    out = io.StringIO()
    assert StreamWriter(out, "jsonl").write(iv) == 1
    doc = json.loads(out.getvalue())
    assert doc == {
        "timestamp": "1970-01-01T00:16:42.000000000Z",
        "interval": 1.0,
        "srcIp": "10.0.0.1",
        "dstIp": "10.0.0.2",
        "proto": "TCP",
        "srcPort": 1000,
        "dstPort": 80,
        "bytes": 120,
        "packets": 2,
        "bitrate": 960.0,
        "appProto": "pending",  # TCP, app 0
        "direction": "egress",
        "firstSeen": "1970-01-01T00:00:00.000000000Z",
        "lastSeen": "1970-01-01T00:00:00.000000000Z",
        "totalPackets": 3,
        "totalBytes": 180,
        "dstPod": "shop/web-1\x1b[2J",
    }
    out = io.StringIO()
    StreamWriter(out, "text").write(iv)
    assert out.getvalue() == (
        "1970-01-01T00:16:42.000000000Z bitrate: 960.00 bps, packets: 2, bytes: 120, proto: TCP, "
        "src: 10.0.0.1:1000, dst: 10.0.0.2:80 (shop/web-1\\x1b[2J)\n"
    )


def test_stream_writer_unique_writes_a_connection_once():
    import io

    t = IntervalTracker()
    out = io.StringIO()
    w = StreamWriter(out, "jsonl", UniqueFilter(1 << 8))
    assert w.write(t.advance(snap(recs({"sport": 1, "packets": 1}), 1.0))) == 1
    assert w.write(t.advance(snap(recs({"sport": 1, "packets": 2}, {"sport": 2}), 2.0))) == 1
    assert w.write(t.advance(snap(recs({"sport": 1, "packets": 3}, {"sport": 2, "packets": 2}), 3.0))) == 0
    assert [json.loads(line)["srcPort"] for line in out.getvalue().splitlines()] == [1, 2]


def test_view_external_filters_rows_consistently():
    t = IntervalTracker()
    iv = t.advance(snap(recs({"dst": "10.0.0.2", "bytes": 1}, {"dst": "8.8.8.8", "bytes": 2}), 1.0))
    out = View(external=NetworkSet.parse("10.0.0.0/8")).apply_interval(iv)
    assert len(out.delta) == len(out.cumulative) == len(out.active) == len(out.recent) == 1
    assert out.delta.flows()[0]["dstIp"] == "8.8.8.8" and out.delta.flows()[0]["totalBytes"] == 2


# -- TUI model -----------------------------------------------------------------


@pytest.fixture
def owners_mode(monkeypatch):
    return "fake-owners"  # (a mode name snap() marks as owning flows)


def test_tui_cells_escape_what_processes_control(owners_mode):
    from pktstat_bpf.output.table import TableModel

    r = recs({"pid": 42, "comm": b"ev\x1b[31mil\n", "cgroup_id": 9})
    iv = IntervalTracker().advance(snap(r, 1.0, mode=owners_mode, cgroups={9: "/sys/fs/cgroup/x\x07\u202e"}))
    m = TableModel()
    m.update(iv)
    title, row = m.table_lines(200)
    assert title.split() == ["BITRATE", "PACKETS", "BYTES", "PROTO", "SRC", "DST", "PID", "COMM", "CGROUP"]
    assert row.split() == [
        "800.00",
        "bps",
        "1",
        "100",
        "UDP",
        "10.0.0.1:1000",
        "10.0.0.2:53",
        "42",
        "ev\\x1b[31mil\\n",
        "/sys/fs/cgroup/x\\x07\\u202e",
    ]
    assert all(ch.isprintable() for ch in row)


def test_tui_model_sorts_filters_scrolls_and_pauses():
    import curses

    from pktstat_bpf.output.table import QUIT, TableModel

    rows = [
        {"src": f"10.0.0.{i}", "sport": 100 + i, "dport": 60 - i, "packets": 10 - i, "bytes": 100 * i + 5}
        for i in range(1, 9)
    ]
    t = IntervalTracker()
    m = TableModel(page=3)
    m.update(t.advance(snap(recs(*rows), 1.0)))

    def srcs():
        return [line.split()[5] for line in m.table_lines(200)[1:]]

    assert srcs() == ["10.0.0.8:108", "10.0.0.7:107", "10.0.0.6:106"]  # bitrate (= bytes here)
    m.key(ord("1"))
    assert srcs() == ["10.0.0.1:101", "10.0.0.2:102", "10.0.0.3:103"]  # packets
    m.key(ord("j"))
    assert srcs() == ["10.0.0.2:102", "10.0.0.3:103", "10.0.0.4:104"]
    m.key(curses.KEY_NPAGE)
    assert srcs() == ["10.0.0.5:105", "10.0.0.6:106", "10.0.0.7:107"]
    m.key(curses.KEY_NPAGE)
    assert srcs() == ["10.0.0.6:106", "10.0.0.7:107", "10.0.0.8:108"]  # clamped at the end
    m.key(curses.KEY_PPAGE)
    m.key(curses.KEY_UP)
    assert srcs() == ["10.0.0.2:102", "10.0.0.3:103", "10.0.0.4:104"]
    assert m.key(ord("r")) == "redraw" and srcs()[0] == "10.0.0.1:101"
    m.key(ord("4"))  # destination: one address, then by port
    assert srcs() == ["10.0.0.8:108", "10.0.0.7:107", "10.0.0.6:106"]
    m.key(ord("3"))
    assert srcs() == ["10.0.0.1:101", "10.0.0.2:102", "10.0.0.3:103"]
    m.key(ord("j"))
    m.key(ord("0"))  # back to bitrate, and to the top
    assert srcs() == ["10.0.0.8:108", "10.0.0.7:107", "10.0.0.6:106"] and "sort: bitrate" in m.status_line()
    for ch in "/0.0.7":
        m.key(ord(ch))
    assert m.editing == "0.0.7" and srcs() == ["10.0.0.7:107"] and "(1 of 8 flows)" in m.status_line()
    m.key(27)  # Esc: back to no filter
    assert m.editing is None and m.filter == "" and len(srcs()) == 3
    for ch in "/UDP 10.0.0.5:":
        m.key(ord(ch))
    m.key(10)
    assert m.filter == "UDP 10.0.0.5:" and srcs() == ["10.0.0.5:105"]
    m.key(ord("/"))
    for _ in range(20):
        m.key(curses.KEY_BACKSPACE)
    m.key(10)
    assert m.filter == "" and m.count == 8
    m.key(ord("p"))
    m.update(t.advance(snap(recs(*rows, {"src": "10.9.9.9", "packets": 99, "bytes": 9999}), 2.0)))
    assert m.count == 8 and "PAUSED" in m.status_line()
    m.key(ord("p"))
    assert m.count == 9 and "PAUSED" not in m.status_line()
    assert m.key(ord("q")) == QUIT and m.key(ord("x")) == QUIT


# -- flags ---------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--external", "--internal-networks", "10.0.0.0/33"],
            "--internal-networks: invalid network '10.0.0.0/33' (expected a CIDR such as 10.0.0.0/8 or fd00::/8)",
        ),
        (
            ["--internal-networks", "10.0.0.0/8,,fd00::/8"],
            "--internal-networks: empty network in '10.0.0.0/8,,fd00::/8'",
        ),
        (["-g", "--jsonl"], "choose one output: -g/--tui or --jsonl"),
        (["-j", "--plain"], "choose one output: -j/--json or --plain"),
        (["-u", "-j"], "-u/--unique streams lines: use it with --jsonl or --plain (the default)"),
        (["-u", "-g"], "-u/--unique streams lines: use it with --jsonl or --plain (the default)"),
        (["-r", "0"], "-r/--refresh must be at least 10ms, not 0s"),
        (["-r", "5x"], "argument -r/--refresh: invalid duration '5x': expected e.g. 10s, 1m30s, 500ms"),
        (
            ["--kubeconfig", "/nonexistent/kubeconfig", "-i", "lo"],
            "--kubeconfig: no such file: '/nonexistent/kubeconfig'",
        ),
    ],
)
def test_live_flags_bad_input_is_one_line_and_exit_2(args, message):
    r = run(*args)
    assert (r.returncode, r.stderr, r.stdout) == (2, f"pktstat-bpf: error: {message}\n", "")


def test_tui_needs_a_terminal():
    r = run("-g", "-i", "lo")
    assert (r.returncode, r.stderr) == (
        2,
        "pktstat-bpf: error: -g/--tui needs a terminal (use --jsonl or --plain to stream into a pipe)\n",
    )


def test_help_lists_live_flags():
    out = run("--help").stdout
    for f in (
        "-g, --tui",
        "-r DURATION, --refresh DURATION",
        "--jsonl",
        "--plain",
        "-u, --unique",
        "--external",
        "--internal-networks CIDR,...",
        "--kubeconfig PATH",
    ):
        assert f in out
