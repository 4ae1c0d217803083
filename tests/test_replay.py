"""Replay of capture files: the Python API, the CLI (--pcap), file formats,
timestamps, original lengths, link types, and every error a user can meet."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pktstat_bpf
import pytest
from pktstat_bpf import CaptureFileError, DamagedCaptureError, UsageError

PCAPS = Path(os.environ.get("PKTSTAT_BPF_PCAPS", Path(__file__).resolve().parents[2] / "shared" / "pcaps"))
T0 = 1_700_000_000  # seconds

A4, B4, C4 = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def udp4(src: str, dst: str, sport: int, dport: int, payload: int) -> bytes:
    """Ethernet + IPv4 + UDP + payload, built by hand (no checksum needed)."""
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + 8 + payload,
        1,
        0,
        64,
        17,
        0,
        bytes(map(int, src.split("."))),
        bytes(map(int, dst.split("."))),
    )
    return bytes(12) + b"\x08\x00" + ip + struct.pack("!HHHH", sport, dport, 8 + payload, 0) + bytes(payload)


def write_pcap(path: Path, records, linktype: int = 1, nano: bool = False, snaplen: int = 65535) -> Path:
    """records: (ts_ns, frame[, orig_len]) each; frame is what was captured."""
    out = bytearray(
        struct.pack("<IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)
    )
    for rec in records:
        ts, frame = rec[0], rec[1]
        orig = rec[2] if len(rec) > 2 else len(frame)
        sec, frac = divmod(ts, 1_000_000_000)
        out += struct.pack("<IIII", sec, frac if nano else frac // 1000, len(frame), orig) + frame
    path.write_bytes(bytes(out))
    return path


def table(snap) -> dict:
    return {
        (f["srcIp"], f["dstIp"], f["proto"], f["srcPort"], f["dstPort"]): (f["packets"], f["bytes"])
        for f in snap.flows()
    }


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def mixed(tmp_path) -> tuple[Path, list]:
    """Three flows over 2.5 s, nanosecond timestamps, one ARP frame."""
    recs = [
        (T0 * 10**9 + 500, udp4(A4, B4, 1000, 53, 10)),
        (T0 * 10**9 + 1_000_000_001, udp4(A4, B4, 1000, 53, 30)),
        (T0 * 10**9 + 1_500_000_000, udp4(B4, A4, 53, 1000, 100)),
        (T0 * 10**9 + 2_000_000_000, bytes(12) + b"\x08\x06" + bytes(28)),
        (T0 * 10**9 + 2_500_000_500, udp4(A4, C4, 2000, 123, 0)),
    ]
    return write_pcap(tmp_path / "mixed.pcap", recs, nano=True), recs


def test_replay_counts_flows_times_and_totals_exactly(bpf, mixed):
    path, recs = mixed
    snap = pktstat_bpf.replay(path)
    assert snap.mode == "replay"
    assert table(snap) == {
        (A4, B4, "UDP", 1000, 53): (2, (42 + 10) + (42 + 30)),
        (B4, A4, "UDP", 53, 1000): (1, 42 + 100),
        (A4, C4, "UDP", 2000, 123): (1, 42),
    }
    t = snap.totals
    assert (t.none.packets, t.none.bytes) == (5, 52 + 72 + 142 + 42 + 42)
    assert (t.none.unparsed_packets, t.none.unparsed_bytes) == (1, 42)  # the ARP frame
    assert t.ingress.packets == t.egress.packets == 0
    assert t.conserved
    # duration: last minus first frame timestamp, to the nanosecond
    assert snap.duration == pytest.approx(2.5, abs=1e-9)
    assert snap.started_at == pytest.approx(T0 + 500e-9, abs=1e-6)
    assert snap.taken_at == pytest.approx(T0 + 2.5000005, abs=1e-6)
    flows = {(f["srcIp"], f["srcPort"]): f for f in snap.flows()}
    f = flows[(A4, 1000)]
    assert f["firstSeen"] == "2023-11-14T22:13:20.000000500Z"
    assert f["lastSeen"] == "2023-11-14T22:13:21.000000001Z"
    assert f["bitrate"] == pytest.approx(8 * 124 / 2.5)
    assert "direction" not in f and "iface" not in f
    assert snap.extra["linkType"] == "EN10MB" and snap.extra["frames"] == 5


def test_cli_json_and_text(bpf, mixed):
    path, _ = mixed
    p = cli("--pcap", str(path), "-j")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""  # no progress bar when stderr is not a terminal
    doc = json.loads(p.stdout)
    assert doc["mode"] == "replay" and doc["file"] == str(path) and doc["linkType"] == "EN10MB"
    assert doc["duration"] == 2.5000000
    assert doc["start"] == "2023-11-14T22:13:20.000000500Z"
    assert doc["totals"]["packets"] == 5 and doc["totals"]["unparsedPackets"] == 1
    assert doc["totals"]["flowPackets"] == 4 and doc["totals"]["flows"] == 3
    assert [(f["srcIp"], f["dstIp"], f["packets"], f["bytes"]) for f in doc["flows"]] == [
        (B4, A4, 1, 142),
        (A4, B4, 2, 124),
        (A4, C4, 1, 42),
    ]
    p = cli("--pcap", str(path))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == (
        f"# replay of {path}, 2.50s: 3 flows, 5 packets, 350 bytes; unparsed 1 packets/42 bytes; "
        "overflow 0 packets/0 bytes"
    )
    assert (
        lines[1]
        == "bitrate: 454.40 bps, packets: 1, bytes: 142, proto: UDP, app: ?, src: 10.0.0.2:53, dst: 10.0.0.1:1000"
    )


def test_bytes_are_the_original_length_when_a_snaplen_cut_the_frame(bpf, tmp_path):
    full = udp4(A4, B4, 7, 8, 1400)
    path = write_pcap(
        tmp_path / "snap.pcap",
        [(T0 * 10**9, full[:64], len(full)), (T0 * 10**9 + 1, full[:34], 9000)],
        snaplen=64,
    )
    snap = pktstat_bpf.replay(path)
    # the second frame has no UDP header captured: same addresses, ports 0
    assert table(snap) == {(A4, B4, "UDP", 7, 8): (1, len(full)), (A4, B4, "UDP", 0, 0): (1, 9000)}


def test_microsecond_and_nanosecond_files_agree(bpf, tmp_path):
    recs = [(T0 * 10**9 + i * 1000, udp4(A4, B4, 1, 2, i)) for i in range(10)]
    us = pktstat_bpf.replay(write_pcap(tmp_path / "us.pcap", recs))
    ns = pktstat_bpf.replay(write_pcap(tmp_path / "ns.pcap", recs, nano=True))
    assert table(us) == table(ns) == {(A4, B4, "UDP", 1, 2): (10, sum(42 + i for i in range(10)))}
    assert us.duration == ns.duration == pytest.approx(9e-6)


def test_pcapng_and_linux_cooked(bpf, tmp_path):
    scapy_utils = pytest.importorskip("scapy.utils")
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import CookedLinux

    pkts = []
    for i in range(4):
        p = (
            CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, proto=0x0800)
            / IP(src=A4, dst=B4)
            / UDP(sport=99, dport=100 + (i % 2))
        )
        p.time = T0 + i
        pkts.append(p)
    path = tmp_path / "sll.pcapng"
    scapy_utils.wrpcapng(str(path), pkts)
    assert path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"  # really pcapng
    snap = pktstat_bpf.replay(path)
    assert snap.extra["linkType"] == "LINUX_SLL"
    assert table(snap) == {(A4, B4, "UDP", 99, 100): (2, 2 * 44), (A4, B4, "UDP", 99, 101): (2, 2 * 44)}
    assert snap.duration == pytest.approx(3.0)


def test_full_flow_table_counts_overflow(bpf, tmp_path):
    recs = [(T0 * 10**9 + i, udp4(A4, B4, 1000 + i, 80, 0)) for i in range(10)]
    snap = pktstat_bpf.replay(write_pcap(tmp_path / "many.pcap", recs), max_entries=4)
    a = snap.totals.all
    assert len(snap) == 4
    assert (a.overflow_packets, a.overflow_bytes) == (6, 6 * 42)
    assert snap.totals.conserved


def test_replayer_is_reusable_and_starts_empty(bpf, mixed, tmp_path):
    r = pktstat_bpf.Replayer(max_entries=64)
    other = write_pcap(tmp_path / "one.pcap", [(T0 * 10**9, udp4(C4, A4, 5, 6, 1))])
    first = r.replay(mixed[0])
    second = r.replay(other)
    assert len(first) == 3 and table(second) == {(C4, A4, "UDP", 5, 6): (1, 43)}
    assert second.totals.all.packets == 1


def test_progress_callback(bpf, tmp_path):
    recs = [(T0 * 10**9 + i, udp4(A4, B4, 1, 2, 0)) for i in range(70_000)]
    path = write_pcap(tmp_path / "big.pcap", recs)
    calls = []
    snap = pktstat_bpf.replay(path, progress=lambda *a: calls.append(a))
    size = path.stat().st_size
    assert calls[0][0] == 65536 and 0 < calls[0][1] <= size and calls[0][2] == size
    assert calls[-1] == (70_000, size, size)
    assert snap.totals.all.packets == 70_000


def test_progress_callback_can_stop_the_replay(bpf, tmp_path):
    recs = [(T0 * 10**9 + i, udp4(A4, B4, 1, 2, 0)) for i in range(70_000)]
    path = write_pcap(tmp_path / "big.pcap", recs)

    def stop(*a):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pktstat_bpf.replay(path, progress=stop)


def test_progress_bar_draws_only_on_a_terminal_after_the_delay():
    import io

    from pktstat_bpf.output.progress import ProgressBar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    quiet = io.StringIO()
    bar = ProgressBar(quiet, delay=0)
    bar(10, 50, 100)
    bar.close()
    assert quiet.getvalue() == ""
    tty = Tty()
    bar = ProgressBar(tty, delay=3600)
    bar(10, 50, 100)
    assert tty.getvalue() == ""  # a short job draws nothing
    bar = ProgressBar(tty, delay=0)
    bar(1000, 50, 100)
    out = tty.getvalue()
    assert out.startswith("\rreplay [") and " 50% 1,000 frames" in out and "#" in out
    bar.close()
    assert tty.getvalue().endswith("\r\x1b[K")


# ---- damaged and bad files -----------------------------------------------------
def test_truncated_file_keeps_what_was_counted(bpf, tmp_path, caplog):
    recs = [(T0 * 10**9 + i * 10**9, udp4(A4, B4, 1, 2, 100)) for i in range(5)]
    good = write_pcap(tmp_path / "good.pcap", recs).read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(good[: 24 + 3 * (16 + 142) + 16 + 50])  # 3 whole records, the 4th cut short
    snap = pktstat_bpf.replay(path)
    assert table(snap) == {(A4, B4, "UDP", 1, 2): (3, 3 * 142)}
    assert snap.extra["damage"].startswith("truncated dump file")
    assert "damaged after 3 frames" in caplog.text
    with pytest.raises(DamagedCaptureError) as e:
        pktstat_bpf.replay(path, strict=True)
    assert e.value.frames == 3 and len(e.value.snapshot) == 1

    p = cli("--pcap", str(path), "-j")
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1
    assert p.stderr.startswith(f"pktstat-bpf: warning: {path}: damaged after 3 frames (truncated dump file;")
    doc = json.loads(p.stdout)
    assert doc["totals"]["packets"] == 3 and doc["damage"].startswith("truncated dump file")


def test_file_cut_inside_a_record_header(bpf, tmp_path):
    recs = [(T0 * 10**9, udp4(A4, B4, 1, 2, 0))] * 2
    good = write_pcap(tmp_path / "g.pcap", recs).read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(good[: 24 + 58 + 7])
    p = cli("--pcap", str(path))
    assert p.returncode == 1
    assert "damaged after 1 frames" in p.stderr and p.stdout.startswith("# replay of")


@pytest.mark.parametrize(
    "make, code, message",
    [
        (lambda d: d / "missing.pcap", 2, "{p}: No such file or directory"),
        (lambda d: d, 2, "{p}: Is a directory"),
        (
            lambda d: (d / "empty.pcap", (d / "empty.pcap").write_bytes(b""))[0],
            1,
            "{p}: empty file, not a pcap or pcapng capture",
        ),
        (
            lambda d: (d / "junk.pcap", (d / "junk.pcap").write_bytes(b"hello, world\n" * 10))[0],
            1,
            "{p}: not a pcap or pcapng capture (unknown file format)",
        ),
        (
            lambda d: (d / "short.pcap", (d / "short.pcap").write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00"))[0],
            1,
            "{p}: not a pcap or pcapng capture (truncated dump file; tried to read 24 file header bytes, "
            "only got 2)",
        ),
    ],
    ids=["missing", "directory", "empty", "garbage", "short-header"],
)
def test_bad_files_get_one_line_and_an_exit_code(bpf, tmp_path, make, code, message):
    p = make(tmp_path)
    r = cli("--pcap", str(p))
    assert (r.returncode, r.stdout) == (code, "")
    assert r.stderr == f"pktstat-bpf: error: {message.format(p=p)}\n"
    with pytest.raises(UsageError if code == 2 else CaptureFileError, match="^" + re.escape(str(p))):
        pktstat_bpf.replay(p)


# libpcap's names for the link types of the captures in ../shared/pcaps/unsupported
LINKTYPE_NAMES = {
    9: "PPP (PPP)",
    50: "PPP_SERIAL (PPP over serial)",
    104: "C_HDLC (Cisco HDLC)",
    107: "FRELAY (Frame Relay)",
    127: "IEEE802_11_RADIO (802.11 plus radiotap header)",
}
UNSUPPORTED = sorted((PCAPS / "unsupported").glob("*")) if (PCAPS / "unsupported").is_dir() else []


def _linktype(path: Path) -> int:
    head = path.read_bytes()[:24]
    order = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    return struct.unpack(order + "I", head[20:24])[0] & 0x0FFFFFFF


@pytest.mark.parametrize("path", UNSUPPORTED, ids=lambda p: p.name)
def test_unsupported_link_types_are_refused(bpf, path):
    r = cli("--pcap", str(path))
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        f"pktstat-bpf: error: {path}: link type {LINKTYPE_NAMES[_linktype(path)]} is not supported; "
        "replay reads Ethernet, Linux cooked (SLL, SLL2), raw IPv4/IPv6 and BSD loopback captures\n"
    )


def test_unsupported_directory_is_present():
    if not UNSUPPORTED:
        pytest.skip(f"the unsupported captures are missing ({PCAPS / 'unsupported'}); set PKTSTAT_BPF_PCAPS")
    assert len(UNSUPPORTED) >= 10


def test_pcap_with_an_interface_is_a_usage_error(tmp_path):
    r = cli("--pcap", str(tmp_path / "x.pcap"), "-i", "lo")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "pktstat-bpf: error: --pcap replays a file: it takes no interface (-i)\n"


def test_replay_touches_no_interface(netns, mixed):
    """Replay in a namespace of its own: nothing is attached anywhere there."""
    path, _ = mixed
    with netns.in_a():
        before = netns.tc_state()
        snap = pktstat_bpf.replay(path)
        after = netns.tc_state()
    assert len(snap) == 3
    assert before == after
    assert not netns.ours_attached()
    assert after["tcx"] == "" and "clsact" not in after["qdisc"]


# ---- interval streams over capture time ---------------------------------------
@pytest.fixture
def gappy(tmp_path) -> Path:
    """Frames at +0, +1.0s-500ns, +1.5s, +2.0s (ARP), +2.5s, then a gap to +9.5s."""
    base = T0 * 10**9 + 500
    recs = [
        (base, udp4(A4, B4, 1000, 53, 10)),
        (base + 999_999_501, udp4(A4, B4, 1000, 53, 30)),
        (base + 1_499_999_500, udp4(B4, A4, 53, 1000, 100)),
        (base + 1_999_999_500, bytes(12) + b"\x08\x06" + bytes(28)),
        (base + 2_500_000_000, udp4(A4, C4, 2000, 123, 0)),
        (base + 9_500_000_000, udp4(A4, C4, 2000, 123, 0)),
    ]
    return write_pcap(tmp_path / "gappy.pcap", recs, nano=True)


def test_intervals_step_through_capture_time(bpf, gappy):
    ivs = list(pktstat_bpf.Replayer().intervals(gappy, 1.0))
    start = T0 + 500e-9
    # steps of 1 s from the first frame; the idle stretch after one empty step
    # is one interval; the last ends at the last frame
    assert [(round(iv.start - start, 6), round(iv.end - start, 6)) for iv in ivs] == [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 9),
        (9, 9.5),
    ]
    assert [iv.delta.totals.all.packets for iv in ivs] == [2, 2, 1, 0, 0, 1]
    assert ivs[1].delta.totals.all.unparsed_packets == 1
    assert [table(iv.delta.take(iv.active)) for iv in ivs] == [
        {(A4, B4, "UDP", 1000, 53): (2, 124)},
        {(B4, A4, "UDP", 53, 1000): (1, 142)},
        {(A4, C4, "UDP", 2000, 123): (1, 42)},
        {},
        {},
        {(A4, C4, "UDP", 2000, 123): (1, 42)},
    ]
    # the deltas add up to the whole replay
    whole = pktstat_bpf.replay(gappy)
    assert sum(iv.delta.totals.all.bytes for iv in ivs) == whole.totals.all.bytes == 124 + 142 + 42 + 42 + 42
    # the last step ends the capture: every flow's end record, with its lifetime counts
    assert table(ivs[-1].ended) == table(whole)
    assert set(ivs[-1].ended.columns["end_reason"]) == {"end"}
    assert all(iv.ended is None for iv in ivs[:-1])


def test_cli_streams_json_lines_per_interval_of_capture_time(bpf, gappy):
    p = cli("--pcap", str(gappy), "--jsonl", "-r", "2s")
    assert p.returncode == 0, p.stderr
    docs = [json.loads(line) for line in p.stdout.splitlines()]
    rows = [r for r in docs if "event" not in r]
    # after the flow lines, the end of the file ends every flow: one end record each, its totals
    ends = [
        (r["timestamp"], r["reason"], r["srcIp"], r["dstIp"], r["packets"], r["bytes"])
        for r in docs[len(rows) :]
    ]
    assert sorted(ends) == [
        ("2023-11-14T22:13:29.500000000Z", "end", A4, B4, 2, 124),
        ("2023-11-14T22:13:29.500000000Z", "end", A4, C4, 2, 84),
        ("2023-11-14T22:13:29.500000000Z", "end", B4, A4, 1, 142),
    ]
    got = [
        (r["timestamp"], r["srcIp"], r["dstIp"], r["packets"], r["bytes"], r["interval"], r["bitrate"])
        for r in rows
    ]
    assert got == [
        ("2023-11-14T22:13:22.000000000Z", B4, A4, 1, 142, 2.0, 568.0),
        ("2023-11-14T22:13:22.000000000Z", A4, B4, 2, 124, 2.0, 496.0),
        ("2023-11-14T22:13:24.000000000Z", A4, C4, 1, 42, 2.0, 168.0),
        ("2023-11-14T22:13:24.000000000Z", A4, B4, 0, 0, 2.0, 0.0),
        ("2023-11-14T22:13:24.000000000Z", B4, A4, 0, 0, 2.0, 0.0),
        ("2023-11-14T22:13:26.000000000Z", A4, C4, 0, 0, 2.0, 0.0),
        ("2023-11-14T22:13:29.500000000Z", A4, C4, 1, 42, 1.5, 224.0),
    ]


def test_cli_stream_of_a_damaged_file_warns_and_exits_1(bpf, gappy, tmp_path):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(gappy.read_bytes()[:-10])
    p = cli("--pcap", str(cut), "--plain")
    assert p.returncode == 1
    assert (
        p.stderr.startswith(f"pktstat-bpf: warning: {cut}: damaged after 5 frames")
        and p.stderr.count("\n") == 1
    )
    lines = [x for x in p.stdout.splitlines() if not x.split(" ", 1)[1].startswith("end: ")]
    # steps [0,1) and [1,2), then the last ends at the last frame read (+2.5 s)
    assert len(lines) == 5
    assert lines[-2] == (
        "2023-11-14T22:13:22.500000000Z bitrate: 672.00 bps, packets: 1, bytes: 42, proto: UDP, "
        "src: 10.0.0.1:2000, dst: 10.0.0.3:123"
    )


def test_pcap_with_tui_is_a_usage_error(tmp_path):
    r = cli("--pcap", str(tmp_path / "x.pcap"), "-g")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "pktstat-bpf: error: --pcap replays a file: -g/--tui shows live traffic only\n"


def test_replay_releases_the_gil(bpf, tmp_path):
    """Another Python thread keeps running while a file is replayed."""
    import threading
    import time

    recs = [(T0 * 10**9 + i, udp4(A4, B4, 1, 2, 0)) for i in range(200_000)]
    path = write_pcap(tmp_path / "big.pcap", recs)
    r = pktstat_bpf.Replayer()
    ticks: list[float] = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    t.start()
    t0 = time.monotonic()
    snap = r.replay(path, progress=None)
    t1 = time.monotonic()
    done.set()
    t.join()
    assert snap.totals.all.packets == 200_000
    middle = [x for x in ticks if t0 + 0.2 * (t1 - t0) < x < t0 + 0.8 * (t1 - t0)]
    assert len(middle) >= 5, (t1 - t0, len(ticks))


def test_standard_input_is_dash(bpf, mixed):
    path, _ = mixed
    p = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", "-", "-j"],
        input=path.read_bytes(),
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    want = json.loads(cli("--pcap", str(path), "-j").stdout)
    assert doc["file"] == "-" and doc["flows"] == want["flows"] and doc["totals"] == want["totals"]
    p = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", "-"], input=b"", capture_output=True, timeout=60
    )
    assert p.returncode == 1
    assert p.stderr == (
        b"pktstat-bpf: error: standard input: not a pcap or pcapng capture (truncated dump file; "
        b"tried to read 4 file header bytes, only got 0)\n"
    )


# ---- signals, the progress bar on a terminal, a corrupt record header ----------
def write_big_pcap(path: Path, frames: int, per_second: int = 10_000) -> Path:
    """`frames` UDP frames of one flow, `per_second` to each second of capture
    time: a file that takes seconds to replay, written in a fraction of one."""
    frame = udp4(A4, B4, 1, 2, 0)
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for sec, start in enumerate(range(0, frames, per_second)):
            n = min(per_second, frames - start)
            f.write((struct.pack("<IIII", T0 + sec, 0, len(frame), len(frame)) + frame) * n)
    return path


@pytest.fixture(scope="module")
def huge(tmp_path_factory) -> Path:
    """2M frames over 200 s of capture time: several seconds of replay."""
    return write_big_pcap(tmp_path_factory.mktemp("huge") / "huge.pcap", 2_000_000)


def _wait_until_open(proc: subprocess.Popen, path: Path, timeout: float = 30) -> None:
    """Until `proc` has opened `path` (the program is loaded, replay begins)."""
    import time

    deadline = time.monotonic() + timeout
    fds = Path(f"/proc/{proc.pid}/fd")
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if any(os.readlink(fd) == str(path) for fd in fds.iterdir()):
                return
        except OSError:  # an fd closed while listing
            pass
        time.sleep(0.01)
    raise AssertionError(f"{path} never opened")


@pytest.mark.parametrize("out", [[], ["--jsonl"]], ids=["report", "jsonl"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_replay_with_one_line_and_exit_130(bpf, huge, sig, out):
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", str(huge), *out],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_open(proc, huge)
        time.sleep(0.5)  # well inside the replay
        assert proc.poll() is None, "the replay ended before the signal: make the file bigger"
        sent = time.monotonic()
        proc.send_signal(getattr(signal, sig))
        stdout, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr == "pktstat-bpf: interrupted\n"  # one line, no traceback
    assert took < 2.0  # stopped, not run to the end (a whole replay takes several seconds)
    if not out:
        assert stdout == ""  # interrupted before a report could be made
    else:
        lines = stdout.splitlines()  # the intervals written until then, each whole
        assert len(lines) < 200 and all(json.loads(x)["packets"] == 10_000 for x in lines)


def _reading_standard_input(pid: int, read_nr: int) -> bool:
    """True while `pid`'s main thread is blocked in read(2) of its standard input (or a dup of it)."""
    try:
        nr, fd = Path(f"/proc/{pid}/syscall").read_text().split()[:2]
        fd_path = f"/proc/{pid}/fd/{int(fd, 16)}"
        return int(nr) == read_nr and os.readlink(fd_path) == os.readlink(f"/proc/{pid}/fd/0")
    except (OSError, ValueError):  # running (no arguments shown), or an fd just closed
        return False


@pytest.mark.parametrize(
    "written",
    [b"", struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)],
    ids=["nothing", "file-header"],
)
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_while_waiting_for_standard_input_is_no_file_error(bpf, sig, written):
    """The signal breaks the read of the pipe: that is an interruption, not a bad or damaged file."""
    import platform
    import signal
    import time

    read_nr = {"x86_64": 0, "aarch64": 63}.get(platform.machine())
    if read_nr is None:
        pytest.skip("read(2)'s number on this architecture is not listed")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=False,
    )
    try:
        proc.stdin.write(written)
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while not _reading_standard_input(proc.pid, read_nr):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(getattr(signal, sig))
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, stdout, stderr) == (130, b"", b"pktstat-bpf: interrupted\n")


def _on_a_terminal(*args: str, stdout_too: bool = False) -> tuple[int, str, str]:
    """Run the CLI with stderr (and with `stdout_too`, stdout) on a pty and
    a progress delay of 0.2 s; returns the exit code, what the terminal got,
    and stdout when it is a pipe."""
    import pty

    master, slave = pty.openpty()
    env = dict(os.environ, PKTSTAT_BPF_TEST_FAULTS="progress_delay=0.2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pktstat_bpf", *args],
        stdout=slave if stdout_too else subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the pty
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    out = b"" if stdout_too else proc.stdout.read()
    proc.wait(timeout=60)
    return proc.returncode, b"".join(chunks).decode(), out.decode()


@pytest.fixture(scope="module")
def longish(tmp_path_factory) -> Path:
    """500,000 frames over 50 s: longer than 0.2 s to replay."""
    return write_big_pcap(tmp_path_factory.mktemp("longish") / "longish.pcap", 500_000)


BAR = re.compile(r"\rreplay \[#*-*\] +\d+% [\d,]+ frames [\d,]+k/s")


@pytest.mark.parametrize("out", [[], ["--jsonl"], ["--plain"]], ids=["report", "jsonl", "plain"])
def test_progress_bar_on_a_terminal_for_report_and_stream(bpf, longish, out):
    code, tty, stdout = _on_a_terminal("--pcap", str(longish), *out)
    assert code == 0, tty
    assert BAR.search(tty), tty
    assert tty.endswith("\r\x1b[K")  # erased at the end, nothing else on stderr
    assert BAR.sub("", tty).replace("\r\x1b[K", "") == ""
    if not out:
        assert stdout.startswith(f"# replay of {longish}, 49.00s: 1 flows, 500000 packets, 21000000 bytes;")
    else:
        lines = stdout.splitlines()  # one line per second of capture time, then the flow's end record
        assert len(lines) == 51 and ("event" in lines[-1] or " end: end, " in lines[-1])


def test_progress_bar_and_stream_lines_on_one_terminal(bpf, longish):
    """Each line starts on a clean line: the bar is erased before it is written."""
    code, tty, _ = _on_a_terminal("--pcap", str(longish), "--jsonl", stdout_too=True)
    assert code == 0, tty
    assert BAR.search(tty), tty
    lines = [x for x in tty.split("\r\n") if '{"' in x and '"event": "end"' not in x]
    assert len(lines) == 50
    for x in lines:
        before, _, rest = x.partition("{")
        assert before == "" or before.endswith("\r\x1b[K"), repr(x[:120])  # a bar, then erased
        assert json.loads("{" + rest)["packets"] == 10_000


def test_no_progress_bar_within_the_delay_on_a_terminal(bpf, mixed):
    code, tty, stdout = _on_a_terminal("--pcap", str(mixed[0]))
    assert (code, tty) == (0, "")
    assert stdout.startswith(f"# replay of {mixed[0]}, 2.50s:")


def test_corrupt_record_header_reports_the_frames_before_it(bpf, tmp_path, caplog):
    recs = [(T0 * 10**9 + i * 10**9, udp4(A4, B4, 1, 2, 100)) for i in range(5)]
    data = bytearray(write_pcap(tmp_path / "good.pcap", recs).read_bytes())
    struct.pack_into("<I", data, 24 + 2 * (16 + 142) + 8, 0xFFFFFFF0)  # the 3rd record's caplen
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    reason = "invalid packet capture length 4294967280, bigger than snaplen of 65535"
    warning = (
        f"pktstat-bpf: warning: {path}: damaged after 2 frames ({reason}); the report covers those 2 frames\n"
    )

    snap = pktstat_bpf.replay(path)
    assert table(snap) == {(A4, B4, "UDP", 1, 2): (2, 2 * 142)}
    assert snap.extra["damage"] == reason and snap.extra["frames"] == 2
    assert f"damaged after 2 frames ({reason})" in caplog.text
    with pytest.raises(DamagedCaptureError) as e:
        pktstat_bpf.replay(path, strict=True)
    assert e.value.frames == 2 and table(e.value.snapshot) == {(A4, B4, "UDP", 1, 2): (2, 284)}

    p = cli("--pcap", str(path), "-j")
    assert (p.returncode, p.stderr) == (1, warning)
    doc = json.loads(p.stdout)
    assert (doc["frames"], doc["damage"], doc["duration"]) == (2, reason, 1.0)
    assert doc["totals"]["packets"] == 2 and doc["totals"]["bytes"] == 284 and doc["totals"]["flows"] == 1
    assert [(f["packets"], f["bytes"]) for f in doc["flows"]] == [(2, 284)]

    p = cli("--pcap", str(path))
    assert (p.returncode, p.stderr) == (1, warning)
    assert p.stdout == (
        f"# replay of {path}, 1.00s: 1 flows, 2 packets, 284 bytes; unparsed 0 packets/0 bytes; "
        "overflow 0 packets/0 bytes\n"
        "bitrate: 2.27 Kbps, packets: 2, bytes: 284, proto: UDP, app: ?, src: 10.0.0.1:1, dst: 10.0.0.2:2\n"
    )

    p = cli("--pcap", str(path), "--jsonl")
    assert (p.returncode, p.stderr) == (1, warning)
    rows = [json.loads(x) for x in p.stdout.splitlines()]
    # two steps, then the end record of the flow (the damage ends the capture)
    assert [(r["packets"], r["totalPackets"], r["totalBytes"]) for r in rows] == [
        (1, 1, 142),
        (1, 2, 284),
        (2, 2, 284),
    ]
    assert [r.get("event") for r in rows] == [None, None, "end"]


def test_intervals_of_every_live_flow_add_up_to_the_replay(bpf):
    """``rows="live"`` (the interactive table's rows): the last step retires
    every flow, and those rows still show their last deltas (they once
    indexed a table the drain had emptied)."""
    office = Path(__file__).parent / "data" / "office.pcap"
    replayer = pktstat_bpf.Replayer()
    steps = list(replayer.intervals(office, 1.0, rows="live"))
    whole = replayer.replay(office)
    assert sum(int(iv.delta.records["packets"].sum()) for iv in steps) == int(whole.records["packets"].sum())
    assert sum(int(iv.delta.records["bytes"].sum()) for iv in steps) == int(whole.records["bytes"].sum())
    assert len(steps[-1].ended) == len(whole.records)
