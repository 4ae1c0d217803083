"""Names where flows are shown beyond text and JSON (issue 18, "Shown
everywhere"): the TUI's NAME column and its filter, the exporter's ``name``
label (``--prometheus-names``), conversations, and a live collector's time
series.

The replayed capture is test_names.py's, made with scapy, every name known
(a split ClientHello, DNS with 20 answers and an NXDOMAIN, HTTP, hostile
names with control characters); the live cases send a DNS query of a known
name from a test namespace.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import pktstat_bpf
import pytest
from pktstat_bpf.core.render import escape_text
from test_names import HOSTILE_HOST, HOSTILE_SNI, SNI, C, S, _frames, dns_wire

#: the name each flow of the capture is shown by (SNI, else HTTP Host, else DNS query), by
#: (client port, server port); both directions show it. 41002's ClientHello was not read,
#: 42004's DNS name was too long to be read.
SHOWN = {
    (41001, 443): SNI,
    (41002, 443): "",
    (41003, 443): HOSTILE_SNI.decode("utf-8", "backslashreplace"),
    (41004, 80): HOSTILE_HOST.decode(),
    (42001, 53): "many.example",
    (42002, 53): "nope.example",
    (42003, 53): "www\\.example\\.org",
    (42004, 53): "",
}
#: flows seen both ways (the others are the client's packets only)
BOTH_WAYS = {41001, 41002, 41003, 41004, 42001, 42002}


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    from scapy.all import wrpcap

    path = tmp_path_factory.mktemp("names-views") / "names.pcap"
    wrpcap(str(path), _frames())
    return path


@pytest.fixture(scope="module")
def interval(bpf, pcap):
    (iv,) = pktstat_bpf.Replayer().intervals(str(pcap), 10.0)  # the capture lasts 29 ms
    return iv


def _shown_by_flow() -> dict[tuple[str, str], str]:
    """(src, dst) as the table writes them -> the NAME cell, escaped."""
    want = {}
    for (cport, sport), name in SHOWN.items():
        want[(f"{C}:{cport}", f"{S}:{sport}")] = escape_text(name)
        if cport in BOTH_WAYS:
            want[(f"{S}:{sport}", f"{C}:{cport}")] = escape_text(name)
    return want


# -- the TUI ---------------------------------------------------------------------------


def test_tui_name_column_is_escaped_and_the_filter_matches_names(interval):
    from pktstat_bpf.output.table import TableModel

    m = TableModel(mode="replay", where="names.pcap", page=50)
    m.update(interval)
    titles = [c.title for c in m.columns()]
    assert titles[titles.index("NAME") + 1] == "SRC"  # right before the endpoints
    col = {t: i for i, t in enumerate(titles)}
    got = {(r[col["SRC"]], r[col["DST"]]): r[col["NAME"]] for r in m.visible()}
    assert got == _shown_by_flow()
    assert got[(f"{C}:41003", f"{S}:443")] == "\\x1b[31mevil\\n\\\\xff.example"
    assert got[(f"{C}:41004", f"{S}:80")] == "a\\x07b.example"
    lines = m.table_lines(200)
    assert not any(ch in line for line in lines for ch in "\x1b\x07\n")
    # the name as the filter: the flows to it, both ways, case-insensitive
    for ch in "/Split.Example\n":
        m.key(ord(ch))
    assert sorted((r[col["SRC"]], r[col["DST"]]) for r in m.visible()) == [
        (f"{C}:41001", f"{S}:443"),
        (f"{S}:443", f"{C}:41001"),
    ]
    assert "filter: Split.Example (2 of 14 flows)" in m.status_line()
    # a DNS name, in conversations: one row, the client's
    m.key(ord("/"))
    for ch in "\b" * 13 + "nope.example\n":
        m.key(127 if ch == "\b" else ord(ch))
    m.key(ord("c"))
    titles = [c.title for c in m.columns()]
    col = {t: i for i, t in enumerate(titles)}
    (row,) = m.visible()
    assert (row[col["CLIENT"]], row[col["SERVER"]], row[col["NAME"]]) == (
        f"{C}:42002",
        f"{S}:53",
        "nope.example",
    )


def test_tui_name_column_keeps_its_width_and_is_absent_without_names(bpf, tmp_path):
    from pktstat_bpf.output.table import NAME_COLUMN, TableModel
    from scapy.all import IP, UDP, Ether, wrpcap

    long_name = "x" * 40 + ".example"
    frames = [
        Ether()
        / IP(src=C, dst=S)
        / UDP(sport=43001, dport=53)
        / (
            b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
            + dns_wire([b"x" * 40, b"example"])
            + b"\x00\x01\x00\x01"
        ),
        Ether() / IP(src=C, dst=S) / UDP(sport=43002, dport=9) / b"plain",
    ]
    wrpcap(str(tmp_path / "long.pcap"), frames)
    (iv,) = pktstat_bpf.Replayer().intervals(str(tmp_path / "long.pcap"), 10.0)
    m = TableModel(mode="replay", where="long.pcap", page=10)
    m.update(iv)
    titles = [c.title for c in m.columns()]
    cells = {r[titles.index("SRC")]: r[titles.index("NAME")] for r in m.visible()}
    assert cells == {f"{C}:43001": long_name, f"{C}:43002": ""}
    title, *rows = m.table_lines(300)
    at = title.index("NAME")
    width = title.index("SRC") - 2 - at
    assert width == NAME_COLUMN.most == 28
    assert sorted(r[at : at + width].rstrip() for r in rows) == ["", long_name[:27] + "~"]
    # a capture without names: no NAME column
    wrpcap(str(tmp_path / "plain.pcap"), frames[1:])
    (iv,) = pktstat_bpf.Replayer().intervals(str(tmp_path / "plain.pcap"), 10.0)
    m.update(iv)
    assert "NAME" not in [c.title for c in m.columns()]


# -- the exporter ----------------------------------------------------------------------


def _flow_labels(metrics) -> list[dict[str, str]]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    reg = CollectorRegistry(auto_describe=False)
    reg.register(metrics)
    out = []
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        out += [s.labels for s in fam.samples if s.name == "pktstat_bpf_flow_bytes_total"]
    return out


def test_exporter_name_label_only_with_names_on(interval):
    pytest.importorskip("prometheus_client")
    from pktstat_bpf.exporter.metrics import FlowMetrics

    named = FlowMetrics(top=50, names=True)
    named.update(interval)
    got = {}
    for lab in _flow_labels(named):
        got[(lab["src"] + ":" + lab["src_port"], lab["dst"] + ":" + lab["dst_port"])] = lab["name"]
    assert got == _shown_by_flow()  # escaped as the TUI shows them ("" where none)
    plain = FlowMetrics(top=50)
    plain.update(interval)
    labels = _flow_labels(plain)
    assert len(labels) == len(got) and all("name" not in lab for lab in labels)


def test_prometheus_names_flag_is_parsed():
    from pktstat_bpf.cli.options import parse_args

    assert parse_args(["--prometheus", "9100", "--prometheus-names"]).prometheus_names is True
    assert parse_args(["--prometheus", "9100"]).prometheus_names is False
    assert parse_args(["-x", "--prometheus", "9100", "--prometheus-names"]).prometheus_names is True


def _dns_query(qid: int, name: bytes) -> bytes:
    return struct.pack(">6H", qid, 0x0100, 1, 0, 0, 0) + dns_wire(name.split(b".")) + b"\x00\x01\x00\x01"


def test_live_exporter_labels_a_dns_flow_with_its_query(netns_v4only):
    """pktstat-bpf --prometheus --prometheus-names on a veth: a DNS query of
    a known name sent there is a flow series labelled with that name."""
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    ns = netns_v4only
    p = ns.exec_a(
        sys.executable,
        "-m",
        "pktstat_bpf",
        "-i",
        "va",
        "-r",
        "200ms",
        "--prometheus",
        "127.0.0.1:0",
        "--prometheus-names",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics$", p.stderr.readline().strip())
        assert m, p.stderr.read()
        with ns.in_a(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(_dns_query(0x4242, b"live.names.example"), (ns.B4, 53))
            sport = sock.getsockname()[1]
            deadline, found = time.monotonic() + 15, None
            while found is None and time.monotonic() < deadline:
                with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics", timeout=5) as r:
                    text = r.read().decode()
                for fam in text_string_to_metric_families(text):
                    for s in fam.samples:
                        if s.name == "pktstat_bpf_flow_packets_total" and s.labels["src_port"] == str(sport):
                            found = s
                time.sleep(0.2)
        assert found is not None, text
        assert (found.labels["name"], found.labels["app"], found.labels["dst_port"], found.value) == (
            "live.names.example",
            "DNS",
            "53",
            1.0,
        )
    finally:
        p.terminate()
        p.communicate(timeout=30)
    assert p.returncode == 0 and not ns.ours_attached("va")


# -- conversations ---------------------------------------------------------------------


def test_conversations_carry_the_names(bpf, pcap):
    snap = pktstat_bpf.replay(str(pcap))
    conv = {(d["clientPort"], d["serverPort"]): d for d in snap.conversations().flow_dicts()}
    assert {
        k: v.get("serverName") or v.get("httpHost") or v.get("dnsQuery") or "" for k, v in conv.items()
    } == (SHOWN)
    hello = conv[41001, 443]
    assert (hello["serverName"], hello["alpn"], hello["appProto"]) == (SNI, "h2,http/1.1", "TLS")
    # DNS: the query from the client's direction, the response's code, answers and count from the
    # server's (as each direction's own flow says: test_names.py)
    dns = {k: conv[42001, 53].get(k) for k in ("dnsQuery", "dnsQtype", "dnsRcode", "dnsAnswers")}
    assert dns == {"dnsQuery": "many.example", "dnsQtype": "AAAA", "dnsRcode": "NOERROR", "dnsAnswers": 20}
    assert (conv[42001, 53]["dnsQueries"], conv[42001, 53]["dnsResponses"]) == (1, 1)
    assert conv[42002, 53]["dnsRcode"] == "NXDOMAIN"
    assert "serverName" not in conv[41002, 443] and "dnsQuery" not in conv[42004, 53]
    df = snap.conversations().to_pandas().set_index(["client_port", "server_port"])
    assert df.loc[(41004, 80), "http_host"] == "a\x07b.example"  # data, as it came
    assert int(df.loc[(42001, 53), "dns_answers"]) == 20 and str(df["dns_answers"].dtype) == "UInt32"


def test_cli_conversations_report_and_json_carry_the_names(bpf, pcap):
    run = [sys.executable, "-m", "pktstat_bpf", "--pcap", str(pcap), "--conversations"]
    doc = json.loads(subprocess.run([*run, "-j"], capture_output=True, text=True, check=True).stdout)
    conv = {(d["clientPort"], d["serverPort"]): d for d in doc["conversations"]}
    assert conv[41001, 443]["serverName"] == SNI and conv[42002, 53]["dnsQuery"] == "nope.example"
    text = subprocess.run(run, capture_output=True, check=True).stdout
    assert b"\x1b" not in text and b"\x07" not in text
    lines = {re.search(rb"client: [\d.]+:(\d+)", ln).group(1): ln for ln in text.splitlines()[1:]}
    assert b", sni: split.example.org, alpn: h2,http/1.1," in lines[b"41001"]
    assert b", dns: many.example AAAA NOERROR," in lines[b"42001"]
    assert b", host: a\\x07b.example," in lines[b"41004"]


# -- a live collector's time series ---------------------------------------------------


def test_live_timeseries_carries_the_name_columns(netns_v4only):
    ns = netns_v4only
    with ns.in_a(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        stop = threading.Event()
        with pktstat_bpf.Collector(iface="va") as c:

            def stream():
                for iv in c.stream(0.25, stop=stop):
                    if iv.index == 0:
                        sock.sendto(_dns_query(7, b"ts.names.example"), (ns.B4, 53))
                    if iv.index == 2:
                        stop.set()
                    yield iv

            ts = pktstat_bpf.timeseries(stream())
        sport = sock.getsockname()[1]
    cols = ts.columns.tolist()
    assert cols[cols.index("total_bytes") + 1 :][:10] == [
        "server_name",
        "alpn",
        "http_host",
        "dns_query",
        "dns_qtype",
        "dns_rcode",
        "dns_answers",
        "dns_queries",
        "dns_responses",
        "quic_version",
    ]
    (row,) = ts[(ts.src_port == sport) & (ts.dst_port == 53)].itertuples()
    assert (row.dns_query, row.dns_qtype, row.dns_queries, row.app, row.packets) == (
        "ts.names.example",
        "A",
        1,
        "DNS",
        1,
    )
    assert [str(ts[c].dtype) for c in ("dns_query", "dns_queries")] == ["str", "UInt32"]
    assert ts.loc[ts.src_port == sport, ["server_name", "http_host", "dns_rcode"]].isna().all().all()


def test_replay_timeseries_types_the_name_columns_as_to_pandas(bpf, pcap):
    from pktstat_bpf.core import names

    ts = pktstat_bpf.timeseries(str(pcap), interval=10.0)
    df = pktstat_bpf.replay(str(pcap)).to_pandas()
    assert {c: str(ts[c].dtype) for c in names.COLUMNS} == {c: str(df[c].dtype) for c in names.COLUMNS}
    (resp,) = ts[(ts.src_port == 53) & (ts.dst_port == 42001)].itertuples()
    assert (resp.dns_query, resp.dns_rcode, resp.dns_answers, resp.dns_responses) == (
        "many.example",
        "NOERROR",
        20,
        1,
    )
