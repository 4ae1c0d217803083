"""IPFIX export (--ipfix) against a real collector: Debian's nfdump (nfcapd
listening on a port the test picks, nfdump reading what it stored). The
flows nfdump shows must be exactly the flows of the run's own report: same
addresses, ports (ICMP type and code), protocol, packets, bytes, and first
and last packet to the millisecond (IPFIX carries milliseconds: ours
truncated). From a replay of a real capture and from a live capture of IPv4
and IPv6 traffic on a veth pair; templates re-sent over UDP reach a
collector started after the exporter; a closed port is warned about once;
TCP delivers the same messages; the encoder's own bytes follow RFC 7011."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pktstat_bpf
import pytest
from netns import NetnsPair, wait_for
from pktstat_bpf.core import protocols
from pktstat_bpf.output import ipfix
from pktstat_bpf.output.flowrecords import END_OF_CAPTURE, from_snapshot
from traffic import ping, send_udp

OFFICE = Path(__file__).parent / "data" / "office.pcap"


def _nfdump_tools() -> None:
    for tool in ("nfcapd", "nfdump"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (make setup installs the Debian package 'nfdump')")


class Nfcapd:
    """nfcapd on 127.0.0.1:port (of namespace `netns`, or this one), storing
    into a temporary directory; :meth:`flows` stops it and reads its files
    with nfdump."""

    def __init__(self, port: int, netns: str | None = None) -> None:
        _nfdump_tools()
        self.dir = Path(tempfile.mkdtemp(prefix="pbt-nfcapd-"))
        self.port, self.netns = port, netns
        cmd = ["nfcapd", "-p", str(port), "-b", "127.0.0.1", "-w", str(self.dir), "-t", "3600"]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.log = ""
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(self._listening, timeout=10)

    def _listening(self) -> bool:
        cmd = ["ss", "-Hlun", f"sport = :{self.port}"]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return bool(subprocess.run(cmd, capture_output=True, text=True).stdout.strip())

    def stop(self) -> str:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            self.log = self.p.communicate(timeout=20)[0]
        return self.log

    def flows(self) -> list[dict]:
        """Stop nfcapd; the flows nfdump reads back (JSON)."""
        log = self.stop()
        files = sorted(
            f for f in self.dir.iterdir() if f.name.startswith("nfcapd.") and "current" not in f.name
        )
        assert files, f"nfcapd stored nothing: {log}"
        out = subprocess.run(
            ["nfdump", "-R", str(self.dir), "-o", "json"],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC"},
            check=True,
        ).stdout
        return json.loads(out) if out.strip() else []

    def cleanup(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def free_udp_port(netns: NetnsPair | None = None) -> int:
    def pick() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    if netns is None:
        return pick()
    with netns.in_a():
        return pick()


def _ms(rfc3339: str) -> str:
    """2024-03-14T09:00:11.810131000Z -> 2024-03-14T09:00:11.810 (truncated, as IPFIX's milliseconds)."""
    return rfc3339[:23]


def ours(flow: dict) -> tuple:
    """A flow of our JSON report as the tuple nfdump's record gives (-1: no such field)."""
    proto = protocols.NUMBERS[flow["proto"].lower()]
    if proto in protocols.ICMP:
        ports = (-1, -1, flow["srcPort"], flow["dstPort"])  # nfdump's JSON: icmp_type, icmp_code, no ports
    elif proto in protocols.FIELDED:  # ESP/AH, GRE, OSPF: their fields are not ports, exported as 0
        ports = (0, 0, -1, -1)
    else:
        ports = (flow["srcPort"], flow["dstPort"], -1, -1)
    return (
        flow["srcIp"],
        flow["dstIp"],
        *ports,
        proto,
        flow["packets"],
        flow["bytes"],
        _ms(flow["firstSeen"]),
        _ms(flow["lastSeen"]),
    )


def theirs(rec: dict) -> tuple:
    """A record of nfdump's JSON as a comparable tuple."""
    src = rec.get("src4_addr") or rec.get("src6_addr")
    dst = rec.get("dst4_addr") or rec.get("dst6_addr")
    icmp = (rec["icmp_type"], rec["icmp_code"]) if "icmp_type" in rec else (-1, -1)
    return (
        src,
        dst,
        rec.get("src_port", -1),
        rec.get("dst_port", -1),
        *icmp,
        rec["proto"],
        rec["in_packets"],
        rec["in_bytes"],
        rec["first"],
        rec["last"],
    )


def run_cli(*args: str, netns: NetnsPair | None = None, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pktstat_bpf", *args]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns.ns_a, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


# -- the encoder, byte by byte -------------------------------------------------


def test_messages_follow_rfc7011():
    """Header, template set and data sets decoded here by hand: version 10,
    lengths, sequence numbers counting data records, the domain, one
    template per family, records split into messages of at most 1400 octets."""
    snap = pktstat_bpf.replay(str(OFFICE))
    batch = from_snapshot(snap)
    enc = ipfix.Encoder(domain=7, direction=False)
    tmpl = enc.template_message(now=1_700_000_000)
    version, length, export, seq, domain = struct.unpack("!HHIII", tmpl[:16])
    assert (version, length, export, seq, domain) == (10, len(tmpl), 1_700_000_000, 0, 7)
    set_id, set_len = struct.unpack("!HH", tmpl[16:20])
    assert set_id == 2 and set_len == len(tmpl) - 16
    tid, count = struct.unpack("!HH", tmpl[20:24])
    fields = [struct.unpack("!HH", tmpl[24 + 4 * i : 28 + 4 * i]) for i in range(count)]
    assert tid == 256 and fields == [
        (8, 4),
        (12, 4),
        (7, 2),
        (11, 2),
        (4, 1),
        (32, 2),
        (1, 8),
        (2, 8),
        (152, 8),
        (153, 8),
        (136, 1),
        (10, 4),
        (6, 2),  # tcpControlBits
        (96, 16),  # applicationName: the appProto name, NUL-padded
    ]
    at = 24 + 4 * count
    tid6, count6 = struct.unpack("!HH", tmpl[at : at + 4])
    assert tid6 == 257 and count6 == count
    assert struct.unpack("!HH", tmpl[at + 4 : at + 8]) == (27, 16)

    messages = []
    for buf, size in enc.data_messages(batch, now=1_700_000_001):
        messages += [buf[i : i + size] for i in range(0, len(buf), size)]
    seen = 0
    v4 = int((snap.records["ipver"] == 4).sum())
    sizes = {t.id: t.dtype.itemsize for t in ipfix.templates(direction=False, owners=False)}
    assert sizes == {256: 70, 257: 94}
    for m in messages:
        version, length, export, seq, domain = struct.unpack("!HHIII", m[:16])
        set_id, set_len = struct.unpack("!HH", m[16:20])
        assert (version, length, export, seq, domain) == (10, len(m), 1_700_000_001, seen, 7)
        assert len(m) <= ipfix.UDP_MESSAGE and set_len == len(m) - 16
        size = sizes[set_id]  # the template's field lengths, summed
        assert set_id in (256, 257) and (set_len - 4) % size == 0
        seen += (set_len - 4) // size
        v4 -= (set_len - 4) // size if set_id == 256 else 0
    arp = int((snap.records["ipver"] == 0).sum())  # ARP flows: not IP flows, not exported
    assert arp == 2 and seen == len(snap.records) - arp == 23 and enc.sequence == 23 and v4 == 0


def test_owner_templates_carry_the_enterprise_elements():
    t4, t6 = ipfix.templates(direction=True, owners=True)
    assert (t4.id, t6.id) == (258, 259)
    ent = [(e.ie, e.length, e.pen) for e in t4.elements if e.pen]
    assert ent == [(1, 4, 32473), (2, 16, 32473), (3, 8, 32473), (4, 1, 32473)]
    rec = t4.record()
    assert struct.unpack("!HH", rec[:4]) == (258, len(t4.elements))
    # an enterprise specifier: the bit set, then the 4-octet PEN
    assert b"\x80\x01\x00\x04\x00\x00\x7e\xd9" in rec
    # flowDirection where directions are known, then applicationName (IE 96) in modes that label flows
    assert [e.ie for e in t4.elements if not e.pen][-2:] == [61, 96]
    t4, _ = ipfix.templates(direction=True, owners=True, apps=False)  # process mode: no labels
    assert [e.ie for e in t4.elements if not e.pen][-1] == 61


def test_sequence_numbers_across_batches_and_a_million_records():
    rec = np.zeros(1_000_000, pktstat_bpf.RECORD_DTYPE)
    rec["ipver"] = 4
    rec["saddr"][:, 10:12] = 0xFF
    rec["proto"] = 17
    rec["sport"] = np.arange(1_000_000) % 65536
    rec["packets"] = 1
    snap = pktstat_bpf.Snapshot(rec, pktstat_bpf.Totals(), 1.0, 0.0, 1.0, "tc")
    enc = ipfix.Encoder()
    enc.sequence = 2**32 - 5  # the wire's sequence number wraps
    seqs, records = [], 0
    for buf, size in enc.data_messages(from_snapshot(snap)):
        for at in range(0, len(buf), size):
            seqs.append(struct.unpack("!I", buf[at + 8 : at + 12])[0])
            assert seqs[-1] == (2**32 - 5 + records) % 2**32
            records += (struct.unpack("!H", buf[at + 18 : at + 20])[0] - 4) // 71
    per = (ipfix.UDP_MESSAGE - 20) // 71  # an IPv4 record with flowDirection and applicationName: 71 octets
    assert records == 1_000_000 and len(seqs) == -(-1_000_000 // per)
    assert enc.sequence == 2**32 - 5 + 1_000_000


# -- a real collector --------------------------------------------------------


def test_replay_to_nfcapd_shows_exactly_our_flows(bpf):
    port = free_udp_port()
    nf = Nfcapd(port)
    try:
        p = run_cli("--pcap", str(OFFICE), "-j", "--ipfix", f"127.0.0.1:{port}", "--ipfix-domain", "5")
        assert p.returncode == 0, p.stderr
        report = json.loads(p.stdout)
        got = nf.flows()
    finally:
        nf.cleanup()
    ip_flows = [f for f in report["flows"] if f["proto"] != "ARP"]  # ARP flows are not exported
    assert sorted(map(theirs, got)) == sorted(map(ours, ip_flows))
    arp_packets = sum(f["packets"] for f in report["flows"]) - sum(f["packets"] for f in ip_flows)
    assert (
        len(got) == 23 and sum(r["in_packets"] for r in got) == report["totals"]["flowPackets"] - arp_packets
    )
    assert arp_packets == 6 and report["totals"]["flowPackets"] == 6691 + 6
    assert {r.get("src6_addr") for r in got} - {None}  # both families
    assert "Observation domain 5 from: 127.0.0.1" in nf.log and "Sequence Errors: 0" in nf.log


def test_live_ipv4_and_ipv6_to_nfcapd_shows_exactly_our_flows(netns: NetnsPair):
    """-i va in namespace A; nfcapd on A's loopback (the IPFIX messages do
    not cross va). UDP of both families, and pings: the report's flows and
    nfdump's are the same set, with the sent counts in them."""
    port = free_udp_port(netns)
    nf = Nfcapd(port, netns.ns_a)
    try:
        p = netns.exec_a(
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-i",
            "va",
            "-t",
            "0",
            "-j",
            "--ipfix",
            f"127.0.0.1:{port}",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert "counting on va" in p.stderr.readline()
        with netns.in_a():
            sp4 = send_udp(netns.B4, 7001, 7, 100)
            sp6 = send_udp(netns.B6, 7002, 5, 300)
            assert ping(netns.B4, 3) == 3 and ping(netns.B6, 2) == 2
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        report = json.loads(out)
        got = nf.flows()
    finally:
        nf.cleanup()
    assert sorted(map(theirs, got)) == sorted(map(ours, report["flows"]))
    by = {(r.get("src4_addr") or r.get("src6_addr"), r.get("src_port"), r.get("dst_port")): r for r in got}
    assert (by[(netns.A4, sp4, 7001)]["in_packets"], by[(netns.A4, sp4, 7001)]["in_bytes"]) == (7, 7 * 142)
    assert (by[(netns.A6, sp6, 7002)]["in_packets"], by[(netns.A6, sp6, 7002)]["in_bytes"]) == (5, 5 * 362)
    pings = [r for r in got if r["proto"] in (1, 58) and r.get("icmp_type") in (8, 128)]
    assert sorted((r["proto"], r["in_packets"]) for r in pings if r["in_packets"] > 1) == [(1, 3), (58, 2)]
    assert not netns.ours_attached()


def test_templates_are_resent_to_a_collector_started_after_the_exporter(bpf):
    """The exporter's first templates reach a socket of the test's (which
    checks they are a template set, then closes); nfcapd starts on that
    port; the templates re-sent with the data (--ipfix-template-refresh 1s)
    let it decode every record. With the default refresh (60s) the same run
    leaves nfcapd unable to decode anything: the re-sending is what made it
    work."""
    for refresh, expect in (("1s", 23), (None, 0)):
        port = free_udp_port()
        early = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        early.bind(("127.0.0.1", port))
        early.settimeout(30)
        args = [sys.executable, "-m", "pktstat_bpf", "--pcap", "-", "-j", "--ipfix", f"127.0.0.1:{port}"]
        if refresh:
            args += ["--ipfix-template-refresh", refresh]
        # the capture arrives on stdin once nfcapd is up, long after the templates of the start
        p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = early.recv(65536)
        early.close()
        assert struct.unpack("!HHIII", first[:16])[0:2] == (10, len(first)) and first[16:18] == b"\x00\x02"
        nf = Nfcapd(port)
        try:
            time.sleep(1.2)
            out, err = p.communicate(OFFICE.read_bytes(), timeout=60)
            assert p.returncode == 0, err
            got = nf.flows() if expect else _flows_or_none(nf)
        finally:
            nf.cleanup()
        assert len(got) == expect
        if expect:
            ip_flows = [f for f in json.loads(out)["flows"] if f["proto"] != "ARP"]  # ARP: not exported
            assert sorted(map(theirs, got)) == sorted(map(ours, ip_flows))
        else:
            assert "Flows: 0," in nf.log


def _flows_or_none(nf: Nfcapd) -> list[dict]:
    nf.stop()
    out = subprocess.run(
        ["nfdump", "-R", str(nf.dir), "-o", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
    ).stdout
    try:
        return json.loads(out) if out.strip().startswith("[") else []
    except json.JSONDecodeError:
        return []


def test_a_closed_udp_port_is_warned_about_once_and_the_run_goes_on(bpf):
    port = free_udp_port()
    p = run_cli(
        "--pcap", str(OFFICE), "-j", "--ipfix", f"127.0.0.1:{port}", "--ipfix-template-refresh", "10ms"
    )
    assert p.returncode == 0
    assert len(json.loads(p.stdout)["flows"]) == 25  # 23 IP flows, 2 ARP flows
    warnings = [ln for ln in p.stderr.splitlines() if "warning" in ln]
    assert warnings == [
        f"pktstat-bpf: warning: --ipfix: 127.0.0.1:{port} refuses UDP messages (Connection "
        "refused): going on; messages sent while it does are lost"
    ]


def test_tcp_carries_the_same_records_once_with_templates(bpf):
    """A TCP collector of the test's own: one template set at the start of
    the connection, then data messages whose records decode to the report's."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    data = bytearray()

    def accept() -> None:
        conn, _ = srv.accept()
        with conn:
            while chunk := conn.recv(65536):
                data.extend(chunk)

    t = threading.Thread(target=accept)
    t.start()
    p = run_cli("--pcap", str(OFFICE), "-j", "--ipfix", f"tcp://127.0.0.1:{port}")
    t.join(10)
    srv.close()
    assert p.returncode == 0, p.stderr
    msgs, at = [], 0
    while at < len(data):
        length = struct.unpack("!H", data[at + 2 : at + 4])[0]
        msgs.append(bytes(data[at : at + length]))
        at += length
    assert at == len(data)
    sets = [struct.unpack("!H", m[16:18])[0] for m in msgs]
    assert sets[0] == 2 and 2 not in sets[1:]
    pairs = set()
    for m in msgs[1:]:
        set_id = struct.unpack("!H", m[16:18])[0]
        v6 = set_id in (257, 261)
        # a replay's records: no flowDirection; applicationName; 260/261: flows with names
        size = {256: 70, 257: 94, 260: 301, 261: 325}[set_id]
        for i in range(20, len(m), size):
            r = m[i : i + size]
            a = 16 if v6 else 4
            pairs.add(
                (
                    socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, r[:a]),
                    struct.unpack("!Q", r[2 * a + 7 : 2 * a + 15])[0],
                )
            )
    report = json.loads(p.stdout)["flows"]
    assert pairs == {(f["srcIp"], f["bytes"]) for f in report if f["proto"] != "ARP"}  # ARP: not exported


def test_a_refused_tcp_collector_ends_the_run_at_the_start(netns_v4only: NetnsPair):
    netns = netns_v4only
    port = free_udp_port(netns)
    p = run_cli("-i", "va", "-t", "1s", "--ipfix", f"tcp://127.0.0.1:{port}", netns=netns)
    assert p.returncode == 1 and p.stdout == ""
    assert (
        p.stderr
        == f"pktstat-bpf: error: --ipfix: cannot connect to tcp://127.0.0.1:{port}: Connection refused\n"
    )
    assert not netns.ours_attached()


def test_reason_and_times_of_the_final_records():
    snap = pktstat_bpf.replay(str(OFFICE))
    b = from_snapshot(snap)
    assert (b.reason == END_OF_CAPTURE).all()
    assert (b.start_ns == snap.records["first_seen"].view(np.int64)).all()
    assert (
        datetime.fromtimestamp(int(b.interval_end_ns[0]) / 1e9, timezone.utc)
        .isoformat()
        .startswith("2024-03-14T09:00:58")
    )
    np.testing.assert_allclose(b.bitrates(), snap.bitrates())


# -- owner modes: the enterprise elements ------------------------------------------


def _templates_and_records(data: bytes) -> list[dict]:
    """Decode a stream of IPFIX messages by their own templates: every data
    record as {(pen, ie): value} (integers; processName as bytes)."""
    layouts: dict[int, list[tuple[int, int, int]]] = {}
    out, at = [], 0
    while at < len(data):
        length = struct.unpack("!H", data[at + 2 : at + 4])[0]
        msg, at = data[at : at + length], at + length
        pos = 16
        while pos < len(msg):
            set_id, set_len = struct.unpack("!HH", msg[pos : pos + 4])
            body, pos = msg[pos + 4 : pos + set_len], pos + set_len
            if set_id == 2:
                i = 0
                while i < len(body):
                    tid, count = struct.unpack("!HH", body[i : i + 4])
                    i += 4
                    fields = []
                    for _ in range(count):
                        ie, flen = struct.unpack("!HH", body[i : i + 4])
                        i += 4
                        pen = 0
                        if ie & 0x8000:
                            pen = struct.unpack("!I", body[i : i + 4])[0]
                            ie, i = ie & 0x7FFF, i + 4
                        fields.append((pen, ie, flen))
                    layouts[tid] = fields
                continue
            size = sum(f[2] for f in layouts[set_id])
            for r in range(0, len(body) - size + 1, size):
                rec, off = {}, r
                for pen, ie, flen in layouts[set_id]:
                    raw = body[off : off + flen]
                    rec[(pen, ie)] = (
                        raw
                        if (pen, ie) in ((32473, 2), (0, 8), (0, 12), (0, 27), (0, 28))
                        else (int.from_bytes(raw, "big"))
                    )
                    off += flen
                out.append(rec)
    return out


def test_cgroup_mode_exports_pid_comm_and_cgroup_as_enterprise_elements(netns_v4only: NetnsPair, cg):
    """-c: templates 258/259 with the enterprise elements of PEN 32473;
    the sender's record carries its pid, comm and cgroup id (the cgroup
    directory's inode), and every record's counts are the report's."""
    netns = netns_v4only
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    data = bytearray()

    def accept() -> None:
        conn, _ = srv.accept()
        with conn:
            while chunk := conn.recv(65536):
                data.extend(chunk)

    t = threading.Thread(target=accept)
    t.start()
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-c",
            cg.root,
            "-t",
            "0",
            "-j",
            "--ipfix",
            f"tcp://127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "via cgroup_skb" in p.stderr.readline()
        sender = cg.child("sender")
        sport = int(cg.run(sender, "pbt-ipfix", "udp-send", netns.B4, "7123", "4", "33", netns=netns.ns_a)[0])
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
        t.join(10)
        srv.close()
    assert p.returncode == 0, err
    records = _templates_and_records(bytes(data))
    report = json.loads(out)["flows"]
    assert sorted((r[(0, 7)], r[(0, 11)], r[(0, 2)], r[(0, 1)], r[(32473, 1)]) for r in records) == sorted(
        (f["srcPort"], f["dstPort"], f["packets"], f["bytes"], f["pid"]) for f in report
    )
    mine = [r for r in records if r[(0, 7)] == sport and r[(0, 11)] == 7123]
    assert len(mine) == 1
    r = mine[0]
    assert r[(32473, 1)] == cg.pid_of("pbt-ipfix")
    assert r[(32473, 2)].rstrip(b"\0") == b"pbt-ipfix"
    assert r[(32473, 3)] == os.stat(sender).st_ino
    assert (r[(0, 2)], r[(0, 1)], r[(0, 61)], r[(0, 136)]) == (
        4,
        4 * (20 + 8 + 33),
        1,
        3,
    )  # egress, end of capture
    assert socket.inet_ntop(socket.AF_INET, r[(0, 12)]) == netns.B4


def test_live_records_of_retired_flows_reach_nfcapd_during_the_run(netns_v4only: NetnsPair):
    """A flow idle past --idle-timeout is handed out at once, its record
    carrying what it sent; when it sends again it is a new record, handed
    out when the capture ends. nfdump stores both, and they sum to the
    report's one row of the flow."""
    ns = netns_v4only
    port = free_udp_port(ns)
    nf = Nfcapd(port, ns.ns_a)
    try:
        p = ns.exec_a(
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-i",
            "va",
            "-t",
            "0",
            "-j",
            "-r",
            "100ms",
            "--idle-timeout",
            "300ms",
            "--ipfix",
            f"127.0.0.1:{port}",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert "counting on va" in p.stderr.readline()
        with ns.in_a():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(3):
                s.sendto(b"i" * 100, (ns.B4, 7011))
            time.sleep(0.9)  # retired: its record goes out now
            for _ in range(6):
                s.sendto(b"i" * 100, (ns.B4, 7011))
            sport = s.getsockname()[1]
            s.close()
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        report = json.loads(out)
        got = nf.flows()
    finally:
        nf.cleanup()
    mine = [r for r in got if r.get("src4_addr") == ns.A4 and r.get("src_port") == sport]
    assert sorted((r["in_packets"], r["in_bytes"]) for r in mine) == [(3, 3 * 142), (6, 6 * 142)]
    (row,) = [f for f in report["flows"] if f["srcPort"] == sport and f["srcIp"] == ns.A4]
    assert (row["packets"], row["bytes"]) == (9, 9 * 142)
    assert not ns.ours_attached()


def test_a_tcp_collector_that_goes_away_is_one_line_and_exit_1_after_the_report(bpf):
    """The collector accepts, then closes (with the templates unread: a
    reset); the replay's report is still written, then one line, exit 1."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def accept_and_close() -> None:
        conn, _ = srv.accept()
        time.sleep(0.2)  # the templates arrive, unread
        conn.close()

    t = threading.Thread(target=accept_and_close)
    t.start()
    p = run_cli("--pcap", str(OFFICE), "-j", "--ipfix", f"tcp://127.0.0.1:{port}")
    t.join(10)
    srv.close()
    assert p.returncode == 1
    assert len(json.loads(p.stdout)["flows"]) == 25  # 23 IP flows, 2 ARP flows
    assert p.stderr in (
        f"pktstat-bpf: error: --ipfix: cannot send to tcp://127.0.0.1:{port}: {reason}\n"
        for reason in ("Connection reset by peer", "Broken pipe")
    ), p.stderr


def test_collector_addresses():
    assert ipfix.parse_target("127.0.0.1:4739") == ("udp", "127.0.0.1", 4739)
    assert ipfix.parse_target("[::1]:4739") == ("udp", "::1", 4739)
    assert ipfix.parse_target("tcp://collector.example:4739") == ("tcp", "collector.example", 4739)
    assert ipfix.parse_target("udp://[fd00::1]:9995", "udp") == ("udp", "fd00::1", 9995)
    assert ipfix.parse_target("10.0.0.1:4739", "tcp") == ("tcp", "10.0.0.1", 4739)
    for bad in ("4739", "::1:4739", "[::1]", "host:0", "host:http"):
        with pytest.raises(ValueError):
            ipfix.parse_target(bad)


def test_a_udp_collector_on_ipv6_loopback_gets_templates_then_data(bpf):
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        s.settimeout(30)
        port = s.getsockname()[1]
        p = run_cli("--pcap", str(OFFICE), "--ipfix", f"[::1]:{port}", "--ipfix-domain", "0x10")
        assert p.returncode == 0, p.stderr
        msgs = [s.recv(65536) for _ in range(5)]
    sets = [struct.unpack("!H", m[16:18])[0] for m in msgs]
    domains = {struct.unpack("!I", m[12:16])[0] for m in msgs}
    # the templates; per family the flows without names, then those with (DNS, QUIC: 260/261)
    assert sets == [2, 256, 260, 257, 261] and domains == {16}
    assert [struct.unpack("!I", m[8:12])[0] for m in msgs] == [
        0,
        0,
        11,
        15,
        19,
    ]  # the records sent before each message: 11 + 4 IPv4, 4 + 4 IPv6


CORPUS = (
    Path(os.environ.get("PKTSTAT_BPF_PCAPS", Path(__file__).resolve().parents[2] / "shared" / "pcaps"))
    / "corpus"
)


def _expected_tuple(r: np.void, start_ns: int, end_ns: int) -> tuple:
    v6 = int(r["ipver"]) == 6
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    src = socket.inet_ntop(fam, bytes(r["saddr"]) if v6 else bytes(r["saddr"][12:]))
    dst = socket.inet_ntop(fam, bytes(r["daddr"]) if v6 else bytes(r["daddr"][12:]))
    proto = int(r["proto"])
    if proto in protocols.ICMP:
        ports = (-1, -1, int(r["sport"]), int(r["dport"]))
    elif proto in protocols.FIELDED:  # ESP/AH, GRE, OSPF: their fields are not ports, exported as 0
        ports = (0, 0, -1, -1)
    else:
        ports = (int(r["sport"]), int(r["dport"]), -1, -1)

    def ms(ns: int) -> str:
        t = datetime.fromtimestamp(ns // 1_000_000 / 1000, timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns // 1_000_000 % 1000:03d}"

    return (src, dst, *ports, proto, int(r["packets"]), int(r["bytes"]), ms(start_ns), ms(end_ns))


def test_every_capture_of_the_corpus_through_nfcapd(bpf):
    """Every capture of tcpdump's test corpus replayed in this process, the
    final records of all of them as one batch (FlowBatch concat) sent by one
    exporter: nfdump shows exactly those records, field for field."""
    from pktstat_bpf.output.flowrecords import concat

    files = (
        sorted(p for p in CORPUS.glob("*") if p.suffix in (".pcap", ".pcapng", ".cap"))
        if CORPUS.is_dir()
        else []
    )
    if not files:
        pytest.skip(f"the corpus captures are missing ({CORPUS}); set PKTSTAT_BPF_PCAPS")
    replayer = pktstat_bpf.Replayer(65536)
    batches = []
    for f in files:
        try:
            snap = replayer.replay(str(f))
        except (pktstat_bpf.PktstatError, OSError):
            continue  # unsupported link types, damaged files: test_replay.py's business
        if len(snap.records):
            batches.append(from_snapshot(snap))
    batch = concat(batches)
    assert len(batches) > 150 and len(batch) > 500
    port = free_udp_port()
    nf = Nfcapd(port)
    try:
        exporter = ipfix.Exporter(f"127.0.0.1:{port}", host="127.0.0.1", port=port, direction=False)
        for i in range(
            0, len(batch), 200
        ):  # paced: a burst of datagrams could overrun nfcapd's socket buffer
            exporter.write(batch.take(np.arange(i, min(i + 200, len(batch)))))
            time.sleep(0.02)
        exporter.close()
        time.sleep(0.2)
        got = nf.flows()
    finally:
        nf.cleanup()
    want = [
        _expected_tuple(r, int(s), int(e))
        for r, s, e in zip(batch.records, batch.start_ns, batch.end_ns)
        if int(r["ipver"]) != 0  # ARP flows are not exported
    ]
    assert sorted(map(theirs, got)) == sorted(want)
    assert "Sequence Errors: 0" in nf.log
