"""The application label (flow_value.app) in every output that shows a flow:
text, JSON (-j, --json-array, --jsonl and --plain with their end records),
Snapshot.flows(), the DataFrame, timeseries(), the TUI cells, sort and
filter, the Prometheus exporter's per-flow series, IPFIX (applicationName,
IE 96, decoded here by the RFC 7011 layout) and Parquet.

The capture is made here with scapy so that every flow's label is known
exactly: an HTTP request, a TLS ClientHello record, a DNS query, an SSH
banner, a TCP flow of three payload packets no signature matches (unknown),
a bare SYN (pending: no payload looked at) and an ICMP echo (no label: only
TCP and UDP flows carry one). Process mode labels nothing: its cases need
no privilege and run on records made here.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pktstat_bpf
import pytest
from pktstat_bpf.core import protocols, render

scapy = pytest.importorskip("scapy.all")

C, S = "10.1.0.1", "10.1.0.2"
#: (sport, dport) of each flow (source C, destination S) -> its label
LABELS = {
    (40001, 80): "HTTP",
    (40002, 443): "TLS",
    (40003, 53): "DNS",
    (40004, 22): "SSH",
    (40005, 9000): "unknown",
    (40006, 8080): "pending",
}
SHOWN = {"HTTP": "HTTP", "TLS": "TLS", "DNS": "DNS", "SSH": "SSH", "unknown": "?", "pending": ""}


def _frames() -> list:
    from scapy.all import DNS, DNSQR, ICMP, IP, TCP, UDP, Ether

    def tcp(sport: int, dport: int, payload: bytes = b"", flags: str = "PA", seq: int = 1) -> object:
        return Ether() / IP(src=C, dst=S) / TCP(sport=sport, dport=dport, flags=flags, seq=seq) / payload

    hello = bytes([0x16, 0x03, 0x01, 0x00, 0x30, 0x01, 0x00, 0x00, 0x2C, 0x03, 0x03]) + bytes(41)
    frames = [
        tcp(40001, 80, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        tcp(40002, 443, hello),
        Ether() / IP(src=C, dst=S) / UDP(sport=40003, dport=53) / DNS(rd=1, qd=DNSQR(qname="example.com")),
        tcp(40004, 22, b"SSH-2.0-OpenSSH_9.6\r\n"),
        tcp(40006, 8080, flags="S", seq=0),
        Ether() / IP(src=C, dst=S) / ICMP(type=8, code=0, id=1, seq=1),
    ]
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + i * 0.1
    # 3 payload packets no signature matches: unknown. Within one interval of the streams
    # below: the kernel counts a flow's tries per interval map (see test_cli_json_array_and_streams)
    for i in range(3):
        frames.append(tcp(40005, 9000, b"z" * 40, seq=1 + 40 * i))
        frames[-1].time = 1_700_000_000 + 0.6 + i * 0.001
    return frames


@pytest.fixture(scope="module")
def pcap(tmp_path_factory) -> Path:
    from scapy.all import wrpcap

    path = tmp_path_factory.mktemp("l7") / "labels.pcap"
    wrpcap(str(path), _frames())
    return path


def _by_ports(flows: list[dict]) -> dict[tuple[int, int], dict]:
    return {(f["srcPort"], f["dstPort"]): f for f in flows}


def _check_dicts(flows: list[dict]) -> None:
    """appProto exactly LABELS on the TCP/UDP flows, absent on ICMP."""
    ported = [f for f in flows if f["proto"] in ("TCP", "UDP")]
    assert {(f["srcPort"], f["dstPort"]): f["appProto"] for f in ported} == LABELS
    icmp = [f for f in flows if f["proto"] == "ICMPv4"]
    assert len(icmp) == 1 and "appProto" not in icmp[0]


def _cli(pcap: Path, *args: str) -> str:
    p = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", str(pcap), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_records_and_flows(bpf, pcap):
    snap = pktstat_bpf.Replayer().replay(str(pcap))
    r = snap.records
    got = {
        (int(x["sport"]), int(x["dport"])): protocols.APP_NAMES[int(x["app"])]
        for x in r
        if int(x["proto"]) in (6, 17)
    }
    assert got == LABELS
    _check_dicts(snap.flows())
    _check_dicts(snap.flow_dicts())


def test_text_report(bpf, pcap):
    lines = pktstat_bpf.Replayer().replay(str(pcap)).to_text().splitlines()[1:]
    assert len(lines) == 7
    for (sport, dport), name in LABELS.items():
        (line,) = [x for x in lines if f"src: {C}:{sport}," in x]
        proto = "UDP" if dport == 53 else "TCP"
        if SHOWN[name]:
            names = r"(, (sni|alpn|host|dns|quic): [^,]+)*"  # (its names follow the label)
            assert re.search(rf"proto: {proto}, app: {re.escape(SHOWN[name])}{names}, src: ", line), line
        else:
            assert f"proto: {proto}, src: " in line and "app:" not in line
    (icmp,) = [x for x in lines if "ICMPv4" in x]
    assert "app:" not in icmp
    assert lines == _cli(pcap).splitlines()[1:]


def test_cli_json_array_and_streams(bpf, pcap):
    _check_dicts(json.loads(_cli(pcap, "-j"))["flows"])
    _check_dicts(json.loads(_cli(pcap, "--json-array")))
    objs = [json.loads(x) for x in _cli(pcap, "--jsonl", "-r", "100ms").splitlines()]
    ends = [o for o in objs if o.get("event") == "end"]
    flows = [o for o in objs if "event" not in o]
    assert len(ends) == 7 and flows
    _check_dicts(ends)
    for o in flows:  # every interval's line carries the flow's label as known then
        if o["proto"] != "ICMPv4":
            assert o["appProto"] == LABELS[(o["srcPort"], o["dstPort"])] or o["appProto"] == "pending"
        else:
            assert "appProto" not in o
    plain = [x for x in _cli(pcap, "--plain", "-r", "100ms").splitlines() if " end: " in x]
    assert len(plain) == 7
    for (sport, _), name in LABELS.items():
        (line,) = [x for x in plain if f"src: {C}:{sport}," in x]
        assert (f", app: {SHOWN[name]}," in line) == bool(SHOWN[name])
        assert ("app:" in line) == bool(SHOWN[name])


def test_dataframe_and_timeseries(bpf, pcap):
    df = pktstat_bpf.Replayer().replay(str(pcap)).to_pandas()
    assert str(df["app"].dtype) == "category"
    assert list(df["app"].cat.categories) == list(protocols.APP_NAMES)
    ported = df[df["proto"].isin(["TCP", "UDP"])]
    got = {(int(a), int(b)): str(c) for a, b, c in zip(ported["src_port"], ported["dst_port"], ported["app"])}
    assert got == LABELS
    assert df.loc[df["proto"] == "ICMPv4", "app"].isna().all()

    ts = pktstat_bpf.timeseries(pcap, interval=10.0)  # one interval: one row per flow
    assert "app" in ts.columns and len(ts) == 7
    row = ts[ts["proto"].isin(["TCP", "UDP"])]
    got = {(int(a), int(b)): str(c) for a, b, c in zip(row["src_port"], row["dst_port"], row["app"])}
    assert got == LABELS
    assert ts.loc[ts["proto"] == "ICMPv4", "app"].isna().all()


def _interval(pcap: Path):
    (iv,) = pktstat_bpf.Replayer().intervals(str(pcap), 10.0)  # one interval: the whole capture
    return iv


def test_tui_column_filter_and_sort(bpf, pcap):
    import curses

    from pktstat_bpf.output.table import TableModel

    m = TableModel(mode="replay", where=pcap.name, page=20)
    m.update(_interval(pcap))
    titles = [c.title for c in m.columns()]
    assert titles[:6] == ["BITRATE", "PACKETS", "BYTES", "PROTO", "APP", "FLAGS"]
    rows = m.visible()
    cells = {row[titles.index("SRC")]: row[titles.index("APP")] for row in rows}
    want = {f"{C}:{sport}": SHOWN[name] for (sport, _), name in LABELS.items()}
    want[C] = ""  # ICMP: no label
    assert cells == want
    for ch in "/tls":
        m.key(ord(ch))
    assert [r[titles.index("SRC")] for r in m.visible()] == [f"{C}:40002"]
    m.key(27)
    m.key(ord("5"))  # sort by the label as shown: names A-Z, then ?, then blank ones
    assert "sort: app" in m.status_line()
    shown = [r[titles.index("APP")] for r in m.visible()]
    assert shown == ["DNS", "HTTP", "SSH", "TLS", "?", "", ""]
    assert "0-8 sort" in m.footer_line()
    m.key(curses.KEY_HOME)


def test_exporter_labels_flows(bpf, pcap):
    prometheus_client = pytest.importorskip("prometheus_client")
    from pktstat_bpf.exporter.metrics import FlowMetrics

    metrics = FlowMetrics(top=20)
    metrics.update(_interval(pcap))
    reg = prometheus_client.CollectorRegistry(auto_describe=False)
    reg.register(metrics)
    got = {}
    for fam in reg.collect():
        if fam.name == "pktstat_bpf_flow_bytes":
            for s in fam.samples:
                got[(int(s.labels["src_port"]), int(s.labels["dst_port"]), s.labels["proto"])] = s.labels[
                    "app"
                ]
    want = {(a, b, "UDP" if b == 53 else "TCP"): name for (a, b), name in LABELS.items()}
    want[(8, 0, "ICMPv4")] = ""  # the family's label names are fixed: "" where no label applies
    assert got == want
    assert set(got.values()) <= set(protocols.APP_NAMES) | {""}


def _ipfix_records(messages: list[bytes]) -> list[dict[str, object]]:
    """Data records decoded by RFC 7011's layout: templates first (field
    specifiers, enterprise bit), then each data set by its template."""
    tmpls: dict[int, list[tuple[int, int]]] = {}
    out = []
    for m in messages:
        version, length = struct.unpack("!HH", m[:4])
        assert version == 10 and length == len(m)
        at = 16
        while at < length:
            set_id, set_len = struct.unpack("!HH", m[at : at + 4])
            body, at = m[at + 4 : at + set_len], at + set_len
            if set_id == 2:
                i = 0
                while i < len(body):
                    tid, count = struct.unpack("!HH", body[i : i + 4])
                    i += 4
                    fields = []
                    for _ in range(count):
                        ie, flen = struct.unpack("!HH", body[i : i + 4])
                        i += 8 if ie & 0x8000 else 4
                        fields.append((ie, flen))
                    tmpls[tid] = fields
                continue
            fields = tmpls[set_id]
            size = sum(flen for _, flen in fields)
            for k in range(len(body) // size):
                rec, i = {}, k * size
                for ie, flen in fields:
                    rec[ie] = body[i : i + flen]
                    i += flen
                out.append(rec)
    return out


def test_ipfix_application_name_and_parquet(bpf, pcap):
    from pktstat_bpf.output import ipfix
    from pktstat_bpf.output.flowrecords import from_snapshot

    snap = pktstat_bpf.Replayer().replay(str(pcap))
    batch = from_snapshot(snap)
    enc = ipfix.Encoder(direction=False)
    tmpl = enc.template_message(now=1_700_000_000)
    msgs = [tmpl]
    for buf, size in enc.data_messages(batch, now=1_700_000_001):
        msgs += [bytes(buf[i : i + size]) for i in range(0, len(buf), size)]
    recs = _ipfix_records(msgs)
    assert len(recs) == 7
    got = {}
    for rec in recs:
        name = bytes(rec[96]).rstrip(b"\0").decode()  # applicationName: 16 octets, NUL-padded
        proto = rec[4][0]
        if proto == 1:
            assert name == ""
            continue
        got[struct.unpack("!H", rec[7])[0], struct.unpack("!H", rec[11])[0]] = name
    assert got == LABELS
    t4, t6 = ipfix.templates(direction=False, owners=False)
    assert t4.elements[-1] == ipfix.Element("applicationName", 96, 16, "S16")
    assert (96, 16) in [(e.ie, e.length) for e in t6.elements]

    pytest.importorskip("pyarrow")
    from pktstat_bpf.output.parquet import flow_table

    table = flow_table(batch)
    assert table.schema.field("app").type == table.schema.field("proto").type  # a plain string
    rows = table.to_pylist()
    got = {(r["src_port"], r["dst_port"]): r["app"] for r in rows if r["proto"] != "ICMPv4"}
    assert got == LABELS
    assert [r["app"] for r in rows if r["proto"] == "ICMPv4"] == [None]


def test_tshark_decodes_application_name(bpf, pcap, tmp_path):
    """tshark's cflow dissector reads our IE 96 as its applicationName,
    ``cflow.appl_name`` ("Application Name (NBAR)": the IANA element) (the
    IPFIX messages written into a pcap as UDP datagrams to port 4739)."""
    import shutil

    if not shutil.which("tshark"):
        pytest.skip("tshark is not installed")
    from pktstat_bpf.output import ipfix
    from pktstat_bpf.output.flowrecords import from_snapshot
    from scapy.all import IP, UDP, Ether, Raw, wrpcap

    enc = ipfix.Encoder(direction=False)
    msgs = [enc.template_message(now=1_700_000_000)]
    for buf, size in enc.data_messages(from_snapshot(pktstat_bpf.Replayer().replay(str(pcap)))):
        msgs += [bytes(buf[i : i + size]) for i in range(0, len(buf), size)]
    out = tmp_path / "ipfix.pcap"
    frames = [
        Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=4000, dport=4739) / Raw(m) for m in msgs
    ]
    wrpcap(str(out), frames)
    p = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(out),
            "-d",
            "udp.port==4739,cflow",
            "-T",
            "fields",
            "-e",
            "cflow.appl_name",
        ],
        capture_output=True,
        text=True,
    )
    names = sorted(n for line in p.stdout.splitlines() for n in line.split(",") if n)  # (ICMP: empty)
    assert names == sorted(LABELS.values()), p.stderr


# -- process mode: no label anywhere (no privilege needed) ----------------------


def _process_records() -> np.ndarray:
    r = np.zeros(2, pktstat_bpf.RECORD_DTYPE)
    r["ipver"], r["proto"], r["sport"], r["dport"] = 4, 6, [1000, 1001], 443
    r["saddr"][:, 10:12], r["daddr"][:, 10:12] = 0xFF, 0xFF
    r["packets"], r["bytes"] = 1, 100
    return r


def test_process_mode_shows_no_label():
    from pktstat_bpf.core import frame
    from pktstat_bpf.output import ipfix

    r = _process_records()
    assert not protocols.app_labelled("process") and protocols.app_labelled("replay")
    dicts = render.flow_dicts(r, 1.0, labels=False)
    assert all("appProto" not in d for d in dicts)
    assert all("app:" not in line for line in render.text_lines(dicts))
    assert [d["appProto"] for d in render.flow_dicts(r, 1.0)] == ["pending", "pending"]
    pd = pytest.importorskip("pandas")
    df = frame.to_pandas(r, np.zeros(2), ifnames={}, cgroups={}, extra={}, labels=False)
    assert df["app"].isna().all() and list(df["app"].cat.categories) == list(protocols.APP_NAMES)
    assert isinstance(df, pd.DataFrame)
    t4, _ = ipfix.templates(direction=True, owners=True, apps=False)
    assert 96 not in [e.ie for e in t4.elements]


def test_app_codes_are_bounded():
    r = _process_records()
    r["app"] = [3, 200]  # a value past the table (a newer program) is "unknown"
    assert protocols.app_codes(r).tolist() == [3, 1]
    assert protocols.app_text("unknown") == "?" and protocols.app_text("pending") == ""
    assert protocols.app_text(None) == "" and protocols.app_text("TLS") == "TLS"
