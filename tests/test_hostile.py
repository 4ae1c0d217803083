"""No way in through the output: values a process or a packet controls reach
every output escaped or quoted, never as terminal control characters or
broken records.

In cgroup mode a process names itself (prctl PR_SET_NAME: ANSI escapes, a
newline, quotes, a backslash) and lives in a cgroup directory whose name
has spaces, an escape sequence, quotes, a backslash, a tab and a Unicode
direction override (newlines the kernel refuses in cgroup names), or bytes
that are not UTF-8. The text report, --plain, the TUI (read back from tmux)
and the Prometheus labels show them escaped; JSON and JSON Lines quote them
so that they decode to the very same text. Capture files with hostile
timestamps replay without a crash. The expected escaped forms are written
out here by hand, independently of render.escape_text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
import urllib.request
from pathlib import Path

import pktstat_bpf
import pytest
from cgroups import TestCgroup
from netns import NetnsPair
from test_replay import udp4, write_pcap
from traffic import IP4, UDP

COMM = "e\x1b[2J\n\"'\\z"  # 10 bytes: erase-screen, newline, quotes, backslash
COMM_ESCAPED = r'e\x1b[2J\n"' + "'" + r"\\z"
CGDIR = "a b\x1b[31m\"q'\\z\t\u202e"  # the kernel refuses a newline in a cgroup name
CGDIR_ESCAPED = r"a b\x1b[31m" + "\"q'" + r"\\z\t\u202e"


def no_control_characters(text: str) -> bool:
    """Nothing a terminal would act on, other than the line ends."""
    return not any(unicodedata.category(ch)[0] == "C" for ch in text.replace("\n", ""))


class Hostile:
    """A test cgroup with a child named CGDIR, a sink in namespace B, and a
    process named COMM in the child that sends 3 datagrams to it."""

    def __init__(self, cg: TestCgroup) -> None:
        self.ns = NetnsPair(ipv6=False)
        self.cg = cg
        self.dir = self.cg.child(CGDIR)
        self.peer = self.ns.peer("udp", "7400")

    def send(self) -> tuple[int, int]:
        """(pid, source port) of the sender; it has exited on return."""
        sport = int(
            self.cg.run(self.dir, COMM, "udp-send", self.ns.B4, "7400", "3", "20", netns=self.ns.ns_a)[0]
        )
        return self.cg.pid_of(COMM), sport

    @property
    def rel(self) -> str:
        return self.cg.rel(self.cg.root)

    def destroy(self) -> None:
        self.peer.kill()
        self.ns.destroy()


@pytest.fixture
def hostile(cg):
    h = Hostile(cg)
    yield h
    h.destroy()


def run_cli(h: Hostile, *flags: str, settle: float = 0.3) -> tuple[str, str, int, int]:
    """pktstat-bpf -c <test cgroup> FLAGS while the hostile process sends;
    Ctrl-C; (stdout, stderr, pid, source port)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "pktstat_bpf", "-c", h.cg.root, "-t", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = p.stderr.readline()
    assert "via cgroup_skb" in first, first + p.stderr.read()
    pid, sport = h.send()
    time.sleep(settle)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert (p.returncode, err) == (0, ""), err
    return out, first + err, pid, sport


def test_text_report_and_plain_stream_escape_comm_and_cgroup(hostile):
    size = 3 * (IP4 + UDP + 20)
    for flags in ((), ("--plain", "-r", "100ms")):
        out, _, pid, sport = run_cli(hostile, *flags)
        assert no_control_characters(out)
        lines = out.splitlines()
        # a newline in comm did not start a line of its own
        assert all(
            ln.startswith("# cgroup on ") or ln.startswith("bitrate: ") or re.match(r"^\d{4}-", ln)
            for ln in lines
        ), out  # (the stream's end records too: "<timestamp> end: ...")
        mine = [ln for ln in lines if f"src: {hostile.ns.A4}:{sport}," in ln]
        tail = f", pid: {pid}, comm: {COMM_ESCAPED}, cgroup: {hostile.rel}/{CGDIR_ESCAPED}"
        assert mine and all(ln.endswith(tail) for ln in mine), mine
        if not flags:  # (the stream has the interval it sent in, and one more with 0)
            assert len(mine) == 1 and f"packets: 3, bytes: {size}, proto: UDP" in mine[0]


def test_json_and_json_lines_quote_comm_and_cgroup_exactly(hostile):
    out, _, pid, sport = run_cli(hostile, "-j")
    assert out.isascii() and no_control_characters(out)
    (flow,) = [f for f in json.loads(out)["flows"] if f["srcPort"] == sport]
    assert (flow["pid"], flow["comm"], flow["cgroup"]) == (pid, COMM, f"{hostile.rel}/{CGDIR}")
    assert (flow["packets"], flow["bytes"]) == (3, 3 * (IP4 + UDP + 20))

    out, _, pid, sport = run_cli(hostile, "--jsonl", "-r", "100ms")
    assert out.isascii() and no_control_characters(out)
    rows = [json.loads(line) for line in out.splitlines()]  # each line is one whole object
    mine = [r for r in rows if r["srcPort"] == sport]
    assert mine and all(
        (r["pid"], r["comm"], r["cgroup"]) == (pid, COMM, f"{hostile.rel}/{CGDIR}") for r in mine
    )
    assert sum(r["packets"] for r in mine if "event" not in r) == 3
    assert [(r["event"], r["packets"]) for r in mine if "event" in r] == [("end", 3)]


def test_process_mode_escapes_comm_and_cgroup_in_text_and_quotes_them_in_json(hostile):
    """Process mode (-k) names every process of the host: the same hostile
    names, in its text report and JSON."""
    for as_json in (False, True):
        p = subprocess.Popen(
            [sys.executable, "-m", "pktstat_bpf", "-k", "-t", "0", *(["-j"] if as_json else [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert " via " in p.stderr.readline()
        pid, sport = hostile.send()
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        assert (p.returncode, err) == (0, ""), err
        assert out.isascii() and no_control_characters(out)
        if as_json:
            (f,) = [f for f in json.loads(out)["flows"] if f["pid"] == pid]
            assert (f["comm"], f["cgroup"], f["srcPort"]) == (COMM, f"{hostile.rel}/{CGDIR}", sport)
            assert (f["packets"], f["bytes"]) == (3, 3 * 20)  # process mode: payload bytes
        else:
            lines = out.splitlines()
            assert all(ln.startswith("# process ") or ln.startswith("bitrate: ") for ln in lines), out
            (line,) = [ln for ln in lines if f", pid: {pid}," in ln]
            assert f"src: 0.0.0.0:{sport}, " in line and "packets: 3, bytes: 60, proto: UDP" in line
            assert line.endswith(f", pid: {pid}, comm: {COMM_ESCAPED}, cgroup: {hostile.rel}/{CGDIR_ESCAPED}")


@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed (make setup installs it)")
@pytest.mark.parametrize("mode", ["cgroup", "process"])
def test_tui_shows_comm_and_cgroup_escaped(hostile, mode):
    from test_tui import Tmux

    flag = f"-c {hostile.cg.root}" if mode == "cgroup" else "-k"
    t = Tmux(f"{sys.executable} -m pktstat_bpf -g {flag} -r 200ms; echo EXIT=$?; sleep 60", cols=220, rows=20)
    try:
        t.wait(lambda s: s and s[0].startswith(f"pktstat-bpf  {mode} "), timeout=20)
        pid, sport = hostile.send()
        screen = t.wait(lambda s: any(f":{sport} " in line for line in s))
        (row,) = [line for line in screen if f":{sport} " in line]
        cells = row.split()
        assert cells[cells.index(str(pid)) + 1 :] == [COMM_ESCAPED, *f"{hostile.rel}/{CGDIR_ESCAPED}".split()]
        # the erase-screen in comm erased nothing: the header and titles are still there
        assert screen[0].startswith(f"pktstat-bpf  {mode} ") and "COMM" in screen[2] and "CGROUP" in screen[2]
        assert " unowned: " in " ".join(screen[:2])  # the events without a pid, in both modes
        t.keys("q")
        assert "EXIT=0" in t.wait(lambda s: any(line.startswith("EXIT=") for line in s))
    finally:
        t.kill()


def test_prometheus_labels_carry_comm_and_cgroup_escaped(hostile):
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-c",
            hostile.cg.root,
            "--prometheus",
            "127.0.0.1:0",
            "-r",
            "100ms",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(
            re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics$", p.stderr.readline().strip())[1]
        )
        pid, sport = hostile.send()
        time.sleep(0.5)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    assert (p.returncode, err) == (0, ""), err
    assert body.isascii() and "\x1b" not in body
    want = {"pid": str(pid), "comm": COMM_ESCAPED, "cgroup": f"{hostile.rel}/{CGDIR_ESCAPED}"}
    samples = {
        (f.name, s.name): s
        for f in text_string_to_metric_families(body)
        for s in f.samples
        if s.labels.get("pid") == str(pid)
    }
    flow = samples[("pktstat_bpf_flow_packets", "pktstat_bpf_flow_packets_total")]
    assert {k: flow.labels[k] for k in want} == want and flow.labels["src_port"] == str(sport)
    assert flow.value == 3
    proc = samples[("pktstat_bpf_process_packets", "pktstat_bpf_process_packets_total")]
    assert {k: proc.labels[k] for k in want} == want


def test_names_that_are_not_utf8_are_shown_as_byte_escapes(hostile):
    """A comm and a cgroup directory of bytes that are not UTF-8: the capture
    goes on, text shows \\xNN escapes (backslash escaped once more), JSON the
    same escapes as text, and -c on such a directory works too."""
    bad_dir = os.fsdecode(os.path.join(os.fsencode(hostile.cg.root), b"x\xff\xfey"))
    os.mkdir(bad_dir)
    bad_comm = os.fsdecode(b"c\xfe\xffd")
    sink = hostile.cg.worker(
        hostile.cg.child("sink"), "pbt-sink", "udp-sink", "4", "0", netns=hostile.ns.ns_a
    )
    port = sink.stdout.readline().split()[1]
    for target, json_flag in ((hostile.cg.root, True), (bad_dir, False)):
        p = subprocess.Popen(
            [
                os.fsencode(a)
                for a in (
                    sys.executable,
                    "-m",
                    "pktstat_bpf",
                    "-c",
                    target,
                    "-t",
                    "0",
                    *(["-j"] if json_flag else []),
                )
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert b"via cgroup_skb" in p.stderr.readline()
        sport = int(
            hostile.cg.run(
                bad_dir, bad_comm, "udp-send", hostile.ns.A4, port, "2", "5", netns=hostile.ns.ns_a
            )[0]
        )
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        raw, err = p.communicate(timeout=30)
        assert (p.returncode, err) == (0, b""), err
        out = raw.decode("ascii")  # all of it ASCII: the bytes were escaped
        cgroup = f"{hostile.rel}/x\\xff\\xfey"
        if json_flag:
            (f,) = [
                f for f in json.loads(out)["flows"] if f["srcPort"] == sport and f["direction"] == "egress"
            ]
            assert (f["comm"], f["cgroup"]) == ("c\\xfe\\xffd", cgroup)
        else:
            assert out.startswith(f"# cgroup on {hostile.rel}/x\\\\xff\\\\xfey (cgroup_skb), ")
            (line,) = [ln for ln in out.splitlines() if f":{sport}, dst:" in ln]
            assert line.endswith(f", comm: c\\\\xfe\\\\xffd, cgroup: {hostile.rel}/x\\\\xff\\\\xfey")
    # process mode names every cgroup of the host: one such name must not stop it (it did, with a
    # UnicodeDecodeError, where the engine handed the path to Python as UTF-8)
    p = subprocess.Popen(
        [sys.executable, "-m", "pktstat_bpf", "-k", "-t", "0", "-j"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert b" via " in p.stderr.readline()
    sport = int(
        hostile.cg.run(bad_dir, bad_comm, "udp-send", hostile.ns.A4, port, "2", "5", netns=hostile.ns.ns_a)[0]
    )
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    raw, err = p.communicate(timeout=30)
    assert (p.returncode, err) == (0, b""), err
    (f,) = [f for f in json.loads(raw.decode("ascii"))["flows"] if f["srcPort"] == sport]
    assert (f["comm"], f["cgroup"], f["packets"]) == ("c\\xfe\\xffd", f"{hostile.rel}/x\\xff\\xfey", 2)


# ---- capture files -------------------------------------------------------------------------------------
def _pcapng(path, ts_units: int) -> None:
    """A pcapng file with one Ethernet interface (microseconds) and one
    enhanced packet block stamped `ts_units`."""
    import struct

    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    frame = udp4("10.0.0.1", "10.0.0.2", 1, 2, 4)
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 1, 0, 65535))
    epb = block(
        6, struct.pack("<IIIII", 0, ts_units >> 32, ts_units & 0xFFFFFFFF, len(frame), len(frame)) + frame
    )
    path.write_bytes(shb + idb + epb)


@pytest.mark.parametrize("output", [[], ["-j"], ["--jsonl", "-r", "10ms"]], ids=["text", "json", "jsonl"])
def test_capture_times_past_2038_and_past_2262_replay_cleanly(bpf, tmp_path, output):
    """Seconds 0xffffff14 in a pcap record are 2106-02-07 (the field is
    unsigned, as Wireshark reads it; libpcap hands it over negative), and a
    pcapng time past what datetime64[ns] holds (2262) is clamped to its end:
    every output ends normally with the frames counted."""
    old = write_pcap(
        tmp_path / "2106.pcap", [((0xFFFFFF14 * 10**9) + 262153000, udp4("10.0.0.1", "10.0.0.2", 1, 2, 4))]
    )
    late = tmp_path / "late.pcapng"
    _pcapng(late, (1 << 64) - 2)  # microseconds: ~584 000 years
    for path, start in ((old, "2106-02-07T06:24:20.262153000Z"), (late, "2262-04-11T23:47:16.854775807Z")):
        r = subprocess.run(
            [sys.executable, "-m", "pktstat_bpf", "--pcap", str(path), *output],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        if output == ["-j"]:
            doc = json.loads(r.stdout)
            assert (doc["start"], doc["end"], doc["totals"]["flowPackets"]) == (start, start, 1)
            assert doc["flows"][0]["firstSeen"] == start
        elif output:
            row, end = [json.loads(line) for line in r.stdout.splitlines()]  # the flow, its end record
            assert (row["packets"], row["firstSeen"]) == (1, start)
            assert (end["event"], end["packets"], end["firstSeen"]) == ("end", 1, start)
        else:
            assert "packets: 1, bytes: 46, proto: UDP" in r.stdout
    snap = pktstat_bpf.replay(late)
    assert (snap.totals.all.packets, len(snap)) == (1, 1)


# ---- stderr: names escaped as on stdout -----------------------------------------------------------
IFNAME = "e\x1b[7mx"  # ESC is no space: the kernel takes it in an interface name
IFNAME_ESCAPED = r"e\x1b[7mx"


def test_cgroup_path_with_control_characters_is_escaped_on_stderr_as_on_stdout(hostile):
    p = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "-c", hostile.dir, "-t", "300ms"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert no_control_characters(p.stdout) and no_control_characters(p.stderr), (p.stdout, p.stderr)
    assert p.stdout.startswith(
        f"# cgroup on {hostile.cg.rel(hostile.cg.root)}/{CGDIR_ESCAPED} (cgroup_skb), "
    )
    assert (
        p.stderr
        == f"pktstat-bpf: counting on {hostile.dir[: -len(CGDIR)]}{CGDIR_ESCAPED} via cgroup_skb for 0.3s (Ctrl-C to stop)\n"
    )


@pytest.fixture
def hostile_iface(bpf):
    """A namespace with a veth pair, one end named IFNAME (both up)."""
    ns = f"pbtH{os.getpid()}{time.monotonic_ns() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "name", IFNAME, "type", "veth", "peer", "name", "pbtpeer"],
            check=True,
        )
        for dev in (IFNAME, "pbtpeer"):
            subprocess.run(["ip", "-n", ns, "link", "set", "dev", dev, "up"], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_interface_name_with_escape_is_escaped_on_stderr_as_on_stdout(hostile_iface):
    p = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            hostile_iface,
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-i",
            IFNAME,
            "-t",
            "300ms",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert no_control_characters(p.stdout) and no_control_characters(p.stderr), (p.stdout, p.stderr)
    assert p.stdout.startswith(f"# tc on {IFNAME_ESCAPED} (tcx), "), p.stdout
    assert p.stderr == f"pktstat-bpf: counting on {IFNAME_ESCAPED} via tcx for 0.3s (Ctrl-C to stop)\n"


@pytest.mark.parametrize("flags", [[], ["--jsonl", "-r", "100ms"], ["-x"]], ids=["report", "jsonl", "xdp"])
def test_an_interface_deleted_mid_capture_ends_the_run_with_a_warning(hostile_iface, flags):
    """The kernel detaches the programs with the interface: one warning line
    (the name escaped), the report of what was counted, exit code 1."""
    p = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            hostile_iface,
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-i",
            IFNAME,
            "-t",
            "30s",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = p.stderr.readline()
        assert first.startswith(f"pktstat-bpf: counting on {IFNAME_ESCAPED} via "), first + p.stderr.read()
        index = int(
            subprocess.run(
                ["ip", "netns", "exec", hostile_iface, "cat", f"/sys/class/net/{IFNAME}/ifindex"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        gone_at = time.monotonic()
        subprocess.run(["ip", "-n", hostile_iface, "link", "del", "dev", IFNAME], check=True)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert time.monotonic() - gone_at < 5
    assert (p.returncode, err) == (
        1,
        f"pktstat-bpf: warning: interface {IFNAME_ESCAPED} (index {index}) is gone: the capture ends here\n",
    ), err
    assert no_control_characters(out)
    if not flags or flags == ["-x"]:
        assert out.startswith(f"# {'xdp' if flags else 'tc'} on {IFNAME_ESCAPED} "), out


def test_a_capture_file_name_that_is_not_utf8(bpf, tmp_path):
    """--pcap with a name of bytes that are not UTF-8 (and ESC): replayed, the
    name escaped in the report; missing, one line with it escaped, exit 2."""
    name = os.path.join(os.fsencode(tmp_path), b"p\xff\x1b[31m.pcap")
    shown = r"p\udcff\x1b[31m.pcap"
    write_pcap(Path(os.fsdecode(name)), [(10**18, udp4("10.0.0.1", "10.0.0.2", 1, 2, 10))])
    argv = [os.fsencode(sys.executable), b"-m", b"pktstat_bpf", b"--pcap", name]
    p = subprocess.run(argv, capture_output=True, timeout=60)
    assert (p.returncode, p.stderr) == (0, b""), p.stderr
    assert p.stdout.decode("ascii").startswith(f"# replay of {tmp_path}/{shown}, "), p.stdout
    os.unlink(name)
    p = subprocess.run(argv, capture_output=True, timeout=60)
    assert (p.returncode, p.stderr.decode("ascii")) == (
        2,
        f"pktstat-bpf: error: {tmp_path}/{shown}: No such file or directory\n",
    )
