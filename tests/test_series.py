"""pktstat_bpf.timeseries(): interval deltas as one long-format DataFrame,
from synthetic intervals (no privilege), from capture files and from a
live stream on a test veth."""

from __future__ import annotations

import ipaddress
import struct
import threading

import numpy as np
import pktstat_bpf
import pytest
from cumulative import IntervalTracker
from pktstat_bpf import _core
from pktstat_bpf.core.errors import UsageError
from pktstat_bpf.core.snapshot import Snapshot, Totals
from pktstat_bpf.output.series import COLUMNS

pd = pytest.importorskip("pandas")


def records(*rows: dict) -> np.ndarray:
    r = np.zeros(len(rows), _core.record_dtype)
    for i, row in enumerate(rows):
        for field, ip in (("saddr", row.get("src", "10.0.0.1")), ("daddr", row.get("dst", "10.0.0.2"))):
            a = ipaddress.ip_address(ip)
            raw = a.packed if a.version == 6 else bytes(10) + b"\xff\xff" + a.packed
            r[i][field] = np.frombuffer(raw, np.uint8)
            r[i]["ipver"] = a.version
        for name, default in (
            ("sport", 1000),
            ("dport", 53),
            ("proto", 17),
            ("dir", 1),
            ("ifindex", 2),
            ("pid", 0),
            ("packets", 1),
            ("bytes", 100),
        ):
            r[i][name] = row.get(name, default)
        r[i]["comm"] = row.get("comm", b"")
    return r


def reading(r: np.ndarray, at: float, mode: str = "tc", **kw) -> Snapshot:
    """A cumulative reading `at` seconds into a capture that started at Unix time 1000."""
    return Snapshot(
        r,
        Totals.from_arrays(np.zeros(3, _core.stats_dtype), r),
        at,
        1000.0,
        1000.0 + at,
        mode,
        iface="eth9",
        ifnames={2: "eth9"},
        **kw,
    )


A = {"sport": 1111, "dport": 53}  # UDP 10.0.0.1:1111 -> 10.0.0.2:53 egress
B = {"src": "fd00::1", "dst": "fd00::2", "proto": 6, "sport": 2222, "dport": 443}
C = {"src": "10.0.0.2", "dst": "10.0.0.1", "proto": 1, "sport": 0, "dport": 0, "dir": 0}  # ICMP echo reply


def intervals():
    """Three readings: A sends 1 then 3 packets then stops; B appears in the second; C in the third."""
    t = IntervalTracker()
    yield t.advance(reading(records({**A, "packets": 1, "bytes": 100}), 1.0))
    yield t.advance(
        reading(records({**A, "packets": 4, "bytes": 400}, {**B, "packets": 2, "bytes": 3000}), 2.0)
    )
    yield t.advance(
        reading(
            records(
                {**A, "packets": 4, "bytes": 400},
                {**B, "packets": 3, "bytes": 4500},
                {**C, "packets": 1, "bytes": 98},
            ),
            2.5,
        )
    )


def test_rows_are_the_interval_deltas_of_active_flows():
    ts = pktstat_bpf.timeseries(intervals())
    assert tuple(ts.columns) == COLUMNS
    got = [
        (r.timestamp.value, r.interval, r.flow, r.packets, r.bytes, r.bitrate, r.total_packets, r.total_bytes)
        for r in ts.itertuples()
    ]
    a, b = "UDP 10.0.0.1:1111 -> 10.0.0.2:53 egress", "TCP [fd00::1]:2222 -> [fd00::2]:443 egress"
    c = "ICMPv4 10.0.0.2 -> 10.0.0.1 type 0 code 0 ingress"
    s = 10**9
    assert got == [
        (1001 * s, 1.0, a, 1, 100, 800.0, 1, 100),
        (1002 * s, 1.0, b, 2, 3000, 24000.0, 2, 3000),  # the heaviest flow of an interval first
        (1002 * s, 1.0, a, 3, 300, 2400.0, 4, 400),
        (1002_500_000_000, 0.5, b, 1, 1500, 24000.0, 3, 4500),  # A was idle: no row
        (1002_500_000_000, 0.5, c, 1, 98, 1568.0, 1, 98),
    ]
    assert ts.dtypes["timestamp"] == "datetime64[ns, UTC]"
    assert (ts.dtypes["packets"], ts.dtypes["bytes"], ts.dtypes["total_bytes"]) == (np.uint64,) * 3
    assert (ts.dtypes["src_port"], ts.dtypes["bitrate"]) == (np.uint16, np.float64)
    assert list(ts.flow.cat.categories) == [b, a, c]  # heaviest flow first
    assert list(ts.iface.unique()) == ["eth9"] and set(ts.direction) == {"egress", "ingress"}


def test_pivot_and_groupby_give_the_totals():
    ts = pktstat_bpf.timeseries(intervals())
    wide = ts.pivot_table(
        index="timestamp", columns="proto", values="bytes", aggfunc="sum", observed=True, fill_value=0
    )
    assert wide.to_dict("list") == {"ICMPv4": [0, 0, 98], "TCP": [0, 3000, 1500], "UDP": [100, 300, 0]}
    assert ts.groupby("flow", observed=True)["packets"].sum().to_dict() == {
        "TCP [fd00::1]:2222 -> [fd00::2]:443 egress": 3,
        "UDP 10.0.0.1:1111 -> 10.0.0.2:53 egress": 4,
        "ICMPv4 10.0.0.2 -> 10.0.0.1 type 0 code 0 ingress": 1,
    }


def test_idle_rows_make_a_dense_series():
    ts = pktstat_bpf.timeseries(intervals(), idle=True)
    a = ts[ts.src_port == 1111]
    assert list(a.packets) == [1, 3, 0] and list(a.bitrate) == [800.0, 2400.0, 0.0]
    assert list(a.total_packets) == [1, 4, 4]
    assert len(ts) == 1 + 2 + 3


def test_labels_tell_apart_flows_that_differ_only_in_direction_pid_or_iface():
    t = IntervalTracker()
    r = records(
        {**A, "dir": 1},
        {**A, "dir": 0},
        {**A, "ifindex": 3},
        {**A, "pid": 7, "comm": b"dig"},
        {**A, "pid": 8, "comm": b"dig"},
        {**A, "pid": 8, "comm": b"dig", "dir": 0},
    )
    iv = t.advance(reading(r, 1.0, mode="cgroup"))
    labels = sorted(pktstat_bpf.timeseries([iv]).flow)
    base = "UDP 10.0.0.1:1111 -> 10.0.0.2:53"
    assert labels == sorted(
        [
            f"{base} egress on eth9",
            f"{base} ingress on eth9",
            f"{base} egress on 3",
            f"{base} egress on eth9 dig[7]",
            f"{base} egress on eth9 dig[8]",
            f"{base} ingress on eth9 dig[8]",
        ]
    )


def test_extra_columns_are_carried_and_an_empty_stream_gives_an_empty_frame():
    t = IntervalTracker()
    r = records(A, B)
    iv = t.advance(reading(r, 1.0).with_columns(dst_pod=np.array(["ns/web", None], dtype=object)))
    ts = pktstat_bpf.timeseries([iv])
    assert list(ts.columns) == list(COLUMNS) + ["dst_pod"]
    assert list(ts.dst_pod[ts.dst_port == 53]) == ["ns/web"] and ts.dst_pod[ts.dst_port == 443].isna().all()
    empty = pktstat_bpf.timeseries([])
    assert list(empty.columns) == list(COLUMNS) and len(empty) == 0
    assert empty.dtypes["bytes"] == np.uint64 and empty.dtypes["timestamp"] == "datetime64[ns, UTC]"


def test_interval_applies_only_to_a_file():
    with pytest.raises(UsageError, match="interval applies to a capture file"):
        pktstat_bpf.timeseries(intervals(), 1.0)


# -- capture files and live -------------------------------------------------------

T0 = 1_700_000_000 * 10**9


def udp4(src: str, dst: str, sport: int, dport: int, payload: int) -> bytes:
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        28 + payload,
        1,
        0,
        64,
        17,
        0,
        ipaddress.ip_address(src).packed,
        ipaddress.ip_address(dst).packed,
    )
    return bytes(12) + b"\x08\x00" + ip + struct.pack("!HHHH", sport, dport, 8 + payload, 0) + bytes(payload)


def write_pcap(path, frames) -> None:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
    for ts, frame in frames:
        out += struct.pack("<IIII", ts // 10**9, ts % 10**9, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))


def test_a_capture_file_in_steps_of_capture_time(bpf, tmp_path):
    path = tmp_path / "steps.pcap"
    f1, f2 = udp4("10.0.0.1", "10.0.0.2", 1000, 53, 10), udp4("10.0.0.2", "10.0.0.1", 53, 1000, 100)
    write_pcap(path, [(T0, f1), (T0 + 400_000_000, f1), (T0 + 1_200_000_000, f2), (T0 + 1_700_000_123, f1)])
    ts = pktstat_bpf.timeseries(path, interval=0.5)
    got = [(r.timestamp.value - T0, r.src_port, r.packets, r.bytes) for r in ts.itertuples()]
    assert got == [
        (500_000_000, 1000, 2, 2 * 52),
        (1_500_000_000, 53, 1, 142),  # [1.0, 1.5): f2; [0.5, 1.0) had nothing
        (1_700_000_123, 1000, 1, 52),  # the last step ends at the last frame, to the nanosecond
    ]
    assert list(ts.interval) == [0.5, 0.5, pytest.approx(0.200000123, abs=1e-12)]
    assert list(ts.direction.unique()) == [""] and list(ts.iface.unique()) == [""]
    assert ts.bitrate.iloc[0] == 8 * 104 / 0.5


def test_the_office_capture_adds_up_to_its_replay(bpf):
    ts = pktstat_bpf.timeseries("tests/data/office.pcap", interval=1.0)
    whole = pktstat_bpf.replay("tests/data/office.pcap").to_pandas()
    key = ["src_ip", "dst_ip", "src_port", "dst_port", "proto"]
    per_flow = ts.groupby(key, observed=True)[["packets", "bytes"]].sum()
    assert per_flow.to_dict("index") == whole.set_index(key)[["packets", "bytes"]].to_dict("index")
    # one timestamp per second of capture time that had a frame counted in a flow (IP, or
    # Ethernet/IPv4 ARP since issue 17), read from the file itself
    stamps = _frame_times("tests/data/office.pcap", keyed_only=True)
    first = stamps[0]
    seconds = sorted({(t - first) // 10**9 for t in stamps})
    want = [first + (s + 1) * 10**9 for s in seconds[:-1]] + [
        stamps[-1]
    ]  # the last step ends at the last frame
    assert sorted(v.value for v in ts.timestamp.unique()) == want


def _frame_times(path: str, keyed_only: bool) -> list[int]:
    """Timestamps (ns) of a microsecond pcap's Ethernet frames (`keyed_only`:
    IP frames and complete Ethernet/IPv4 ARP frames, untagged)."""
    data = open(path, "rb").read()
    at, out = 24, []
    while at < len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, at)
        ethertype = data[at + 16 + 12 : at + 16 + 14]
        arp = (
            ethertype == b"\x08\x06"
            and caplen >= 42
            and data[at + 30 : at + 36] == b"\x00\x01\x08\x00\x06\x04"
        )
        if not keyed_only or arp or ethertype in (b"\x08\x00", b"\x86\xdd"):
            out.append(sec * 10**9 + usec * 1000)
        at += 16 + caplen
    return sorted(out)


def test_a_live_stream(netns):
    import socket

    from traffic import ETH, IP4, UDP

    peer = netns.peer("udp", "5102")
    try:
        with netns.in_a(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            stop = threading.Event()
            seen = []
            with pktstat_bpf.Collector(iface="va") as c:

                def stream():
                    for iv in c.stream(0.25, stop=stop):
                        seen.append(iv)
                        if iv.index in (0, 2):  # lands in intervals 1 and 3, from one socket: one flow
                            for _ in range(3 if iv.index == 0 else 5):
                                sock.sendto(b"x" * 20, (netns.B4, 5102))
                        if iv.index == 4:
                            stop.set()
                        yield iv

                ts = pktstat_bpf.timeseries(stream())
            sport = sock.getsockname()[1]
    finally:
        peer.kill()
    mine = ts[(ts.dst_port == 5102) & (ts.direction == "egress")]
    assert list(mine.src_port) == [sport, sport]
    size = ETH + IP4 + UDP + 20
    assert list(mine.packets) == [3, 5] and list(mine.bytes) == [3 * size, 5 * size]
    assert list(mine.total_packets) == [3, 8] and mine.flow.nunique() == 1
    # the rows are those of intervals 1 and 3: their ends (to the microsecond) and lengths
    assert [t.value for t in mine.timestamp] == [round(seen[i].end * 1e6) * 1000 for i in (1, 3)]
    assert list(mine.interval) == [seen[1].duration, seen[3].duration]
