"""--drops: the kernel's own drops with their reasons (kfree_skb tracepoint),
per flow and per reason, against oracles that are not ours: an nftables drop
rule's own counter, UDP to a closed port (the kernel's UdpNoPorts counter),
and a full socket receive buffer (the namespace's UdpRcvbufErrors, as
``nstat`` shows it). Every case runs in namespaces the test makes, with a TC
collector on ``va`` in namespace A, whose drop watcher sees only the drops
on that interface of that namespace (so other tests' traffic never counts),
and the assertions look at the test's own flow only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from netns import NetnsPair, sh
from pktstat_bpf import Collector

pytestmark = pytest.mark.kernel

A4, B4 = NetnsPair.A4, NetnsPair.B4


def send_from_b(ns: NetnsPair, dst: str, port: int, count: int, payload: int, src_port: int) -> None:
    """`count` datagrams of `payload` bytes from B:src_port to dst:port."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind(('', int(sys.argv[5])))\n"
        "for _ in range(int(sys.argv[3])): s.sendto(b'd' * int(sys.argv[4]), (sys.argv[1], int(sys.argv[2])))\n"
    )
    sh(sys.executable, "-c", code, dst, str(port), str(count), str(payload), str(src_port), netns=ns.ns_b)


def snmp(ns: str, group: str) -> dict[str, int]:
    """The namespace's /proc/net/snmp counters of `group` (Udp, Ip ...)."""
    lines = [
        ln.split()
        for ln in sh("cat", "/proc/net/snmp", netns=ns).stdout.splitlines()
        if ln.startswith(group + ":")
    ]
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}


def flow_row(snap, src: str, sport: int, dst: str, dport: int) -> dict:
    rows = [
        f
        for f in snap.flows()
        if (f["srcIp"], f["srcPort"], f["dstIp"], f["dstPort"]) == (src, sport, dst, dport)
    ]
    assert len(rows) == 1, rows
    return rows[0]


def settle(c: Collector, want, timeout: float = 5.0):
    """Snapshots until `want(snapshot)` holds (the program runs in softirq:
    a drop may land just after the sender returns)."""
    end = time.monotonic() + timeout
    while True:
        snap = c.snapshot()
        if want(snap) or time.monotonic() > end:
            return snap
        time.sleep(0.05)


@pytest.fixture
def pair(netns_v4only):
    """IPv4 only: IPv6 would bring MLD reports, which a host frees with
    kfree_skb() (reason NOT_SPECIFIED: counted, see docs/counting.md)."""
    return netns_v4only


def nft(ns: NetnsPair, script: str) -> None:
    if shutil.which("nft", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
        pytest.skip("nft is not installed (make setup installs nftables)")
    cmd = ["ip", "netns", "exec", ns.ns_a, "nft", "-f", "-"]
    subprocess.run(cmd, input=script, text=True, check=True, capture_output=True)


def test_an_nft_drop_rule_gives_exactly_its_drops_with_reason_netfilter_drop(pair):
    n, port, sport = 17, 7001, 40001
    nft(
        pair,
        f"table inet pbt {{\n chain in {{\n type filter hook input priority 0\n udp dport {port} counter drop\n }}\n}}\n",
    )
    with pair.in_a(), Collector("va", "tc", drops=True) as c:
        send_from_b(pair, A4, port, n, 100, sport)
        snap = settle(c, lambda s: s.extra["drops"].get("NETFILTER_DROP", 0) >= n)
    ruleset = json.loads(sh("nft", "-j", "list", "table", "inet", "pbt", netns=pair.ns_a).stdout)
    counter = next(
        e["counter"] for r in ruleset["nftables"] if "rule" in r for e in r["rule"]["expr"] if "counter" in e
    )
    assert counter["packets"] == n  # the rule's own count: the oracle
    row = flow_row(snap, B4, sport, A4, port)
    assert (row["packets"], row["drops"], row["dropReasons"]) == (n, n, {"NETFILTER_DROP": n})
    assert snap.extra["drops"]["NETFILTER_DROP"] == n
    line = next(ln for ln in snap.to_text().splitlines() if f":{sport}," in ln)
    assert line.endswith(f", drops: {n} (NETFILTER_DROP)")
    assert snap.header_line().endswith(f"; drops {n} (NETFILTER_DROP)")
    doc = json.loads(snap.to_json())
    # bytes: the IP packets' lengths (20 + 8 + 100), as TC counted them less the Ethernet header
    assert doc["dropCounters"] == {"packets": n, "bytes": n * 128, "unparsed": 0, "overflow": 0}
    assert row["bytes"] == n * (128 + 14)


def test_udp_to_a_closed_port_is_no_socket_on_that_flow(pair):
    n, port, sport = 9, 7002, 40002
    before = snmp(pair.ns_a, "Udp")["NoPorts"]
    with pair.in_a(), Collector("va", "tc", drops=True) as c:
        send_from_b(pair, A4, port, n, 60, sport)
        snap = settle(c, lambda s: s.extra["drops"].get("NO_SOCKET", 0) >= n)
    no_ports = snmp(pair.ns_a, "Udp")["NoPorts"] - before
    assert no_ports == n  # the kernel's own count of datagrams without a socket
    row = flow_row(snap, B4, sport, A4, port)
    assert (row["drops"], row["dropReasons"]) == (n, {"NO_SOCKET": n})
    assert snap.extra["drops"] == {"NO_SOCKET": n}
    df = snap.to_pandas()
    hit = df[(df["src_port"] == sport) & (df["dst_port"] == port)]
    assert (int(hit["drops"].iloc[0]), hit["drop_reasons"].iloc[0]) == (n, "NO_SOCKET")


def test_a_full_receive_buffer_gives_socket_rcvbuff_as_the_socket_counters_say(pair):
    n, port, sport = 300, 7003, 40003
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)\n"  # the kernel's minimum
        f"s.bind(('{A4}', {port})); print('ready', flush=True); sys.stdin.read()\n"
    )
    with pair.in_a(), Collector("va", "tc", drops=True) as c:
        receiver = pair.exec_a(
            sys.executable, "-c", code, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert receiver.stdout.readline().strip() == "ready"
            before = snmp(pair.ns_a, "Udp")
            send_from_b(pair, A4, port, n, 1000, sport)
            time.sleep(0.3)
            after = snmp(pair.ns_a, "Udp")
            snap = settle(
                c,
                lambda s: (
                    s.extra["drops"].get("SOCKET_RCVBUFF", 0)
                    >= after["RcvbufErrors"] - before["RcvbufErrors"]
                ),
            )
        finally:
            receiver.communicate("")
    rcvbuf = after["RcvbufErrors"] - before["RcvbufErrors"]
    assert 0 < rcvbuf < n  # some were queued, the rest dropped
    row = flow_row(snap, B4, sport, A4, port)
    assert row["dropReasons"] == {"SOCKET_RCVBUFF": rcvbuf}
    assert row["drops"] == rcvbuf
    assert after["InErrors"] - before["InErrors"] == rcvbuf


def test_a_drop_watcher_on_an_interface_ignores_drops_elsewhere(pair):
    """Drops on lo of namespace A (UDP to a closed port) are not va's."""
    with pair.in_a(), Collector("va", "tc", drops=True) as c:
        lo = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(5): s.sendto(b'l', ('127.0.0.1', 7004))"
        sh(sys.executable, "-c", lo, netns=pair.ns_a)
        send_from_b(pair, A4, 7005, 3, 10, 40005)
        snap = settle(c, lambda s: s.extra["drops"].get("NO_SOCKET", 0) >= 3)
        time.sleep(0.2)
        snap = c.snapshot()
    assert snap.extra["drops"] == {"NO_SOCKET": 3}
    assert snmp(pair.ns_a, "Udp")["NoPorts"] == 8  # the 5 on lo happened: they are just not va's
    assert c.status["drops"] is True


def test_the_reason_names_are_the_kernels_own(bpf):
    """Names come from the running kernel's BTF (bpftool prints the same enum)."""
    from pktstat_bpf.core.engine import _core

    dump = sh("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c").stdout
    body = dump[dump.index("enum skb_drop_reason {") :]
    body = body[: body.index("};")]
    theirs = {}
    for ln in body.splitlines()[1:]:
        name, _, value = ln.strip().rstrip(",").partition(" = ")
        long = "SKB_DROP_REASON_"
        theirs[int(value)] = name[len(long) :] if name.startswith(long) else name.removeprefix("SKB_")
    assert _core.DropWatcher().reasons == theirs  # (read at construction; nothing attached)
    assert {"NOT_DROPPED_YET", "NOT_SPECIFIED", "NO_SOCKET", "NETFILTER_DROP", "SOCKET_RCVBUFF"} <= set(
        theirs.values()
    )


def test_cli_drops_in_text_and_json(pair):
    """--drops end to end: the flow line and the header of the text report,
    and the JSON fields."""
    port, sport, n = 7006, 40006, 4
    outs = {}
    for fmt in ([], ["-j"], ["--jsonl", "-r", "500ms"]):
        p = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                pair.ns_a,
                sys.executable,
                "-m",
                "pktstat_bpf",
                "-i",
                "va",
                "--drops",
                "-t",
                "0",
                *fmt,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert " via " in p.stderr.readline()  # the start-up line: attached
        send_from_b(pair, A4, port, n, 20, sport)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)  # (not -t: sending may take seconds in an emulated guest)
        outs[fmt[0] if fmt else ""] = p.communicate(timeout=60)
        sport += 1
    text, _ = outs[""]
    assert f"src: {B4}:40006, dst: {A4}:{port}, drops: {n} (NO_SOCKET)" in text
    header = text.splitlines()[0]
    assert header.endswith(f"; drops {n} (NO_SOCKET)"), header
    doc = json.loads(outs["-j"][0])
    row = next(f for f in doc["flows"] if f["srcPort"] == 40007)
    assert (row["drops"], row["dropReasons"], doc["drops"]) == (n, {"NO_SOCKET": n}, {"NO_SOCKET": n})
    # JSON Lines: the drops since the start on each line of the flow (its last line has them all)
    lines = [json.loads(ln) for ln in outs["--jsonl"][0].splitlines()]
    ours = [ln for ln in lines if ln["srcPort"] == 40008 and "event" not in ln]
    assert sum(ln["packets"] for ln in ours) == n
    assert (ours[-1]["drops"], ours[-1]["dropReasons"]) == (n, {"NO_SOCKET": n})


def test_the_drop_dtype_is_the_compiled_struct():
    """The NumPy dtype of drop records is built from offsetof of the C++
    struct (drop_key + drop_value, src/bpf/drops.h); each field's offset and
    size agree with it, and the key is the 52 bytes drops.h asserts."""
    from pktstat_bpf.core.engine import _core

    dt = _core.drop_dtype
    layout = {name: (dt.fields[name][1], dt.fields[name][0].itemsize) for name in dt.names}
    assert dt.itemsize == 72 and layout["saddr"] == (0, 16) and layout["ifindex"] == (40, 4)
    assert layout["reason"] == (44, 4) and layout["netns"] == (48, 4) and layout["packets"] == (56, 8)


def test_the_exporter_counts_drops_per_reason(pair):
    """--prometheus --drops: pktstat_bpf_drops_total{reason=...}, the
    lifetime count per reason, as the kernel's own NoPorts counter says."""
    import urllib.request

    n, port = 6, 7020
    cmd = [sys.executable, "-m", "pktstat_bpf", "-i", "va", "--drops", "-r", "200ms", "-t", "20s"]
    p = pair.exec_a(
        *cmd, "--prometheus", "127.0.0.1:9719", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    want = [f'pktstat_bpf_drops_total{{reason="NO_SOCKET"}} {float(n)}']
    drops: list[str] = []
    try:
        p.stderr.readline()  # attached
        send_from_b(pair, A4, port, n, 10, 40020)
        end = time.monotonic() + 10
        while drops != want and time.monotonic() < end:  # until a reading after all the drops was exported
            time.sleep(0.2)
            with pair.in_a():
                body = urllib.request.urlopen("http://127.0.0.1:9719/metrics", timeout=5).read().decode()
            drops = [ln for ln in body.splitlines() if ln.startswith("pktstat_bpf_drops_total")]
    finally:
        p.terminate()
        p.communicate(timeout=30)
    assert snmp(pair.ns_a, "Udp")["NoPorts"] == n
    assert drops == want


def test_the_tui_shows_a_drops_column_and_the_reasons_in_its_header():
    """Table model of the TUI (no terminal): a DROPS column where the
    snapshot has drop columns, and the per-reason sums in the header."""
    import numpy as np
    from cumulative import IntervalTracker
    from pktstat_bpf.core.engine import _core
    from pktstat_bpf.core.snapshot import Snapshot, Totals
    from pktstat_bpf.output.table import TableModel, header_line

    r = np.zeros(2, dtype=_core.record_dtype)
    r["ipver"], r["proto"], r["dport"], r["packets"], r["bytes"] = 4, 17, (53, 7001), (3, 17), (300, 2176)
    r["saddr"][:, 10:12] = r["daddr"][:, 10:12] = 0xFF
    stats = np.zeros(3, dtype=_core.stats_dtype)
    drops = np.array([0, 17], dtype=np.uint64)
    reasons = np.array([None, {"NETFILTER_DROP": 12, "NO_SOCKET": 5}], dtype=object)
    snap = Snapshot(
        records=r,
        totals=Totals.from_arrays(stats, r),
        duration=1.0,
        started_at=0.0,
        taken_at=1.0,
        mode="tc",
        extra={"drops": {"NETFILTER_DROP": 12, "NO_SOCKET": 5, "NOT_SPECIFIED": 1}},
        columns={"drops": drops, "drop_reasons": reasons},
    )
    iv = IntervalTracker().advance(snap)
    model = TableModel(mode="tc", where="va", attach="tcx")
    model.update(iv)
    titles = [c.title for c in model.columns()]
    assert titles == ["BITRATE", "PACKETS", "BYTES", "PROTO", "DROPS", "SRC", "DST"]
    rows = {row[-1]: row[titles.index("DROPS")] for row in model.visible()}
    assert rows == {"0.0.0.0:53": "", "0.0.0.0:7001": "17"}
    assert header_line(iv, "tc", "va", "tcx").endswith(
        "  drops: 18 (NETFILTER_DROP:12,NO_SOCKET:5,NOT_SPECIFIED:1)"
    )
