"""The Prometheus exporter without privilege: the exposition (read back with
prometheus-client's own parser), top-N ranking and monotonic per-flow
counters, the HTTP server, and the flags' validation."""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("prometheus_client", reason="prometheus-client is not installed (pip install '.[test]')")

import pktstat_bpf.exporter as exporter
from cumulative import IntervalTracker
from pktstat_bpf import _core
from pktstat_bpf.core.errors import PktstatError, UsageError
from pktstat_bpf.core.snapshot import Snapshot, Totals
from pktstat_bpf.exporter import FlowMetrics, MetricsServer, TopTracker, make_registry, parse_listen
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def _addr(ip: str) -> tuple[bytes, int]:
    a = ipaddress.ip_address(ip)
    return (bytes(10) + b"\xff\xff" + a.packed, 4) if a.version == 4 else (a.packed, 6)


def record(
    src="10.0.0.1",
    dst="10.0.0.2",
    sport=1000,
    dport=53,
    proto=17,
    direction=1,
    packets=1,
    bytes_=100,
    pid=0,
    comm=b"",
    cgroup_id=0,
    ifindex=7,
) -> tuple:
    s, v = _addr(src)
    d, _ = _addr(dst)
    return dict(
        saddr=s,
        daddr=d,
        ipver=v,
        sport=sport,
        dport=dport,
        proto=proto,
        dir=direction,
        packets=packets,
        bytes=bytes_,
        pid=pid,
        comm=comm,
        cgroup_id=cgroup_id,
        ifindex=ifindex,
    )


def records(*rows: dict) -> np.ndarray:
    r = np.zeros(len(rows), _core.record_dtype)
    for i, row in enumerate(rows):
        for k, v in row.items():
            r[i][k] = np.frombuffer(v, np.uint8) if k in ("saddr", "daddr") else v
    return r


class Capture:
    """Cumulative readings of a made-up capture, fed through IntervalTracker."""

    def __init__(self, mode: str = "tc", cgroups=None) -> None:
        self.tracker = IntervalTracker()
        self.t = 0.0
        self.mode = mode
        self.cgroups = cgroups or {}

    def reading(self, rows: list[dict], dt: float = 1.0, unparsed=(0, 0), overflow=(0, 0)):
        self.t += dt
        r = records(*rows)
        st = np.zeros(3, _core.stats_dtype)
        for d in (0, 1):
            mine = r[r["dir"] == d]
            st[d]["unparsed_packets"], st[d]["unparsed_bytes"] = unparsed if d == 1 else (0, 0)
            st[d]["overflow_packets"], st[d]["overflow_bytes"] = overflow if d == 1 else (0, 0)
            st[d]["packets"] = (
                int(mine["packets"].sum()) + st[d]["unparsed_packets"] + st[d]["overflow_packets"]
            )
            st[d]["bytes"] = int(mine["bytes"].sum()) + st[d]["unparsed_bytes"] + st[d]["overflow_bytes"]
        snap = Snapshot(
            r,
            Totals.from_arrays(st, r),
            self.t,
            1000.0,
            1000.0 + self.t,
            self.mode,
            iface="eth9",
            attach="tcx",
            max_entries=4096,
            ifnames={7: "eth9"},
            cgroups=self.cgroups,
            owners=self.mode in ("cgroup", "process") or self.mode.startswith("fake-owners"),
        )
        return self.tracker.advance(snap)


def scrape(metrics: FlowMetrics) -> dict[str, list]:
    """name -> [(labels, value)] of every sample, through the text format and
    prometheus-client's parser (what Prometheus itself would read)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(metrics)
    text = generate_latest(reg).decode()
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: dict, name: str, **labels) -> float:
    hits = [v for lab, v in samples.get(name, []) if all(lab.get(k) == str(w) for k, w in labels.items())]
    assert len(hits) == 1, (name, labels, samples.get(name))
    return hits[0]


# -- flags ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,want",
    [
        ("9100", ("127.0.0.1", 9100)),
        (":9100", ("127.0.0.1", 9100)),
        ("localhost:9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::]:9100", ("::", 9100)),
        ("[::1]:0", ("::1", 0)),
        ("10.1.2.3:65535", ("10.1.2.3", 65535)),
    ],
)
def test_parse_listen(text, want):
    assert parse_listen(text) == want


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", *args], capture_output=True, text=True, timeout=60
    )


USAGE = "expected ADDR:PORT or PORT, e.g. 127.0.0.1:9100, 0.0.0.0:9100 or [::1]:9100"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--prometheus", "99999"], "--prometheus: invalid port '99999' (expected 0-65535)"),
        (["--prometheus", "1.2.3.4:http"], "--prometheus: invalid port 'http' (expected 0-65535)"),
        (["--prometheus", "1.2.3.4:"], "--prometheus: invalid port '' (expected 0-65535)"),
        (
            ["--prometheus", "nohost:9100"],
            "--prometheus: invalid address 'nohost' (expected an IP address such as 127.0.0.1, 0.0.0.0 or ::)",
        ),
        (["--prometheus", "eth0"], f"--prometheus: invalid address 'eth0' ({USAGE})"),
        (["--prometheus", ""], f"--prometheus: empty address ({USAGE})"),
        (["--prometheus", "[::1]"], f"--prometheus: invalid address '[::1]' ({USAGE})"),
        (
            ["--prometheus", "::1:9100"],
            "--prometheus: invalid address '::1:9100': bracket an IPv6 address, e.g. [::1]:9100",
        ),
        (["--prometheus"], "argument --prometheus: expected one argument"),
        (["--prometheus-top", "5"], "--prometheus-top needs --prometheus"),
        (
            ["--prometheus", "9100", "--prometheus-top", "-1"],
            "--prometheus-top must be between 0 and 10000, not -1",
        ),
        (
            ["--prometheus", "9100", "--prometheus-top", "10001"],
            "--prometheus-top must be between 0 and 10000, not 10001",
        ),
        (
            ["--prometheus", "9100", "--prometheus-top", "many"],
            "argument --prometheus-top: expected an integer, not 'many'",
        ),
        (["--prometheus-names"], "--prometheus-names needs --prometheus"),
        (
            ["--prometheus", "9100", "--prometheus-names", "-c", "/sys/fs/cgroup"],
            "--prometheus-names: -c/--cgroup flows carry no names (TC and XDP read them)",
        ),
        (["--prometheus", "9100", "--jsonl"], "choose one output: --jsonl or --prometheus"),
        (
            ["--prometheus", "9100", "-u"],
            "-u/--unique streams lines: use it with --jsonl or --plain (the default)",
        ),
    ],
)
def test_bad_exporter_flags_are_one_line_and_exit_2(args, message):
    r = run(*args)
    assert (r.returncode, r.stderr, r.stdout) == (2, f"pktstat-bpf: error: {message}\n", "")


def test_exporter_runs_until_stopped_unless_t_is_given():
    from pktstat_bpf.cli.options import parse_args

    assert parse_args(["--prometheus", "9100"]).timeout == 0.0
    assert parse_args(["--prometheus", "9100", "-t", "30s"]).timeout == 30.0
    assert parse_args(["--prometheus", "9100"]).prometheus_top == 100
    assert parse_args([]).timeout == 600.0 and parse_args([]).prometheus is None


# -- the exposition ---------------------------------------------------------------------


def test_totals_are_exact_over_all_flows_while_flow_series_are_capped():
    cap = Capture()
    m = FlowMetrics(top=2, info={"version": "9.9", "libbpf": "v1.1", "mode": "tc", "attach": "tcx"})
    flows = [
        record(sport=1, packets=5, bytes_=710),
        record(sport=2, packets=3, bytes_=726),
        record(sport=3, packets=1, bytes_=60, proto=6),
        record(src="fd00::1", dst="fd00::2", sport=4, packets=2, bytes_=224),
        record(src="10.0.0.2", dst="10.0.0.1", proto=1, sport=0, dport=0, direction=0, packets=4, bytes_=392),
    ]
    m.update(cap.reading(flows, unparsed=(2, 84), overflow=(1, 60)))
    s = scrape(m)
    assert value(s, "pktstat_bpf_build_info", version="9.9", libbpf="v1.1", mode="tc", attach="tcx") == 1
    base = dict(iface="eth9", direction="egress", family="ipv4")
    assert value(s, "pktstat_bpf_packets_total", **base, proto="UDP") == 8
    assert value(s, "pktstat_bpf_bytes_total", **base, proto="UDP") == 1436
    assert value(s, "pktstat_bpf_bytes_total", **base, proto="TCP") == 60
    assert (
        value(s, "pktstat_bpf_bytes_total", iface="eth9", direction="egress", family="ipv6", proto="UDP")
        == 224
    )
    assert (
        value(
            s, "pktstat_bpf_packets_total", iface="eth9", direction="ingress", family="ipv4", proto="ICMPv4"
        )
        == 4
    )
    assert len(s["pktstat_bpf_bytes_total"]) == 4
    # conservation: flows + unparsed + overflow == seen, per direction
    assert value(s, "pktstat_bpf_unparsed_packets_total", direction="egress") == 2
    assert value(s, "pktstat_bpf_unparsed_bytes_total", direction="egress") == 84
    assert value(s, "pktstat_bpf_overflow_packets_total", direction="egress") == 1
    assert value(s, "pktstat_bpf_overflow_bytes_total", direction="egress") == 60
    assert value(s, "pktstat_bpf_seen_packets_total", direction="egress") == 8 + 1 + 2 + 2 + 1
    assert value(s, "pktstat_bpf_seen_bytes_total", direction="egress") == 1436 + 60 + 224 + 84 + 60
    assert value(s, "pktstat_bpf_seen_bytes_total", direction="ingress") == 392
    assert value(s, "pktstat_bpf_overflow_packets_total", direction="ingress") == 0
    assert value(s, "pktstat_bpf_flow_table_entries") == 5
    assert value(s, "pktstat_bpf_flow_table_max_entries") == 4096
    assert value(s, "pktstat_bpf_last_read_timestamp_seconds") == 1001.0
    # only the two heaviest flows, by name, with their lifetime counts
    flows_b = s["pktstat_bpf_flow_bytes_total"]
    assert [(lab["src_port"], v) for lab, v in flows_b] == [("2", 726), ("1", 710)]
    assert flows_b[0][0] == dict(
        iface="eth9",
        direction="egress",
        proto="UDP",
        src="10.0.0.1",
        dst="10.0.0.2",
        src_port="2",
        dst_port="53",
        app="pending",  # the application label (UDP, not decided: these records carry app 0)
    )
    assert [v for _, v in s["pktstat_bpf_flow_packets_total"]] == [3, 5]
    assert "pktstat_bpf_process_bytes_total" not in s  # tc mode has no owners

    # the next interval adds to the totals exactly; counters are sums of deltas
    flows[0] = record(sport=1, packets=9, bytes_=710 + 4 * 142)
    flows.append(record(sport=5, packets=1, bytes_=42))
    m.update(cap.reading(flows, unparsed=(2, 84), overflow=(1, 60)))
    s = scrape(m)
    assert value(s, "pktstat_bpf_packets_total", **base, proto="UDP") == 8 + 4 + 1
    assert value(s, "pktstat_bpf_bytes_total", **base, proto="UDP") == 1436 + 4 * 142 + 42
    assert (
        value(s, "pktstat_bpf_seen_bytes_total", direction="egress") == 1436 + 4 * 142 + 42 + 60 + 224 + 144
    )
    assert value(s, "pktstat_bpf_flow_table_entries") == 6


def test_top_zero_exports_no_flow_series_but_exact_totals():
    cap = Capture()
    m = FlowMetrics(top=0)
    m.update(cap.reading([record(sport=i, packets=i, bytes_=100 * i) for i in range(1, 50)]))
    s = scrape(m)
    assert value(
        s, "pktstat_bpf_bytes_total", iface="eth9", direction="egress", family="ipv4", proto="UDP"
    ) == 100 * sum(range(1, 50))
    assert "pktstat_bpf_flow_bytes_total" not in s


def test_flow_counter_never_goes_backwards_when_a_flow_leaves_the_top_and_returns():
    """top=1: X leads, Y overtakes (X leaves), X bursts and returns. X's series
    shows its lifetime count: 500, absent, 3500: never lower."""
    cap = Capture()
    m = FlowMetrics(top=1, window=2.0)
    seen = []

    def x_value():
        s = scrape(m)
        return {lab["src_port"]: v for lab, v in s.get("pktstat_bpf_flow_bytes_total", [])}

    x = dict(sport=1111)
    y = dict(sport=2222)
    m.update(cap.reading([record(**x, packets=5, bytes_=500)]))
    seen.append(x_value())
    m.update(cap.reading([record(**x, packets=5, bytes_=500), record(**y, packets=10, bytes_=2000)]))
    seen.append(x_value())
    m.update(cap.reading([record(**x, packets=5, bytes_=500), record(**y, packets=10, bytes_=2000)], dt=5.0))
    seen.append(x_value())  # both idle: Y still weighs more
    m.update(cap.reading([record(**x, packets=35, bytes_=3500), record(**y, packets=10, bytes_=2000)]))
    seen.append(x_value())
    assert seen == [{"1111": 500}, {"2222": 2000}, {"2222": 2000}, {"1111": 3500}]


def test_ranking_weighs_recent_traffic_and_forgets_idle_flows():
    t = TopTracker(capacity=3, window=10.0, forget=30.0)
    keys = np.array([b"a", b"b", b"c", b"d"], dtype="V1")
    rows = records(*[record(sport=i) for i in range(4)])
    vals = np.array([[1, 1000], [1, 900], [1, 800], [1, 10]], np.uint64)
    t.advance(1.0)
    t.add(keys, vals[:, 1].copy(), vals, rows)
    assert len(t) == 3  # capacity: the lightest candidate is dropped
    assert [bytes(k) for k in t.keys[t.top(3)]] == [b"a", b"b", b"c"]
    t.advance(10.0)  # weights decay by e: a 368, c 294; a burst of 100 puts c (394) ahead
    t.add(keys[2:3], np.array([100.0]), np.array([[2, 900]], np.uint64), rows[2:3])
    assert [bytes(k) for k in t.keys[t.top(2)]] == [b"c", b"a"]
    assert t.values[t.top(1)[0]].tolist() == [2, 900]  # lifetime values are replaced, not summed
    t.advance(25.0)  # a and b idle for 35 s: forgotten; c idle for 25 s: kept
    assert [bytes(k) for k in t.keys] == [b"c"]


def test_top_order_is_linear_selection_with_tie_breaks():
    score = np.array([5, 1, 5, 3, 5, 0], dtype=np.float64)
    tie = np.array([1, 9, 3, 9, 2, 9], dtype=np.uint64)
    assert exporter.top_order(score, tie, 2).tolist() == [2, 4]
    assert exporter.top_order(score, tie, 4).tolist() == [2, 4, 0, 3]
    assert exporter.top_order(score, tie, 99).tolist() == [2, 4, 0, 3, 1, 5]
    assert exporter.top_order(score, tie, 0).tolist() == []


@pytest.fixture
def owners_mode(monkeypatch):
    return "fake-owners"  # (a mode name Capture marks as owning flows)


def test_process_series_in_owner_modes_escape_what_processes_control(owners_mode):
    evil = b'ev\x1b[31m"il\n'
    cap = Capture(mode=owners_mode, cgroups={9: '/k8s/pod"x\x07'})
    m = FlowMetrics(top=10)
    rows = [
        record(sport=1, pid=42, comm=evil, cgroup_id=9, packets=2, bytes_=200),
        record(sport=2, pid=42, comm=evil, cgroup_id=9, packets=3, bytes_=300),
        record(sport=3, pid=7, comm=b"curl", packets=1, bytes_=50),
    ]
    m.update(cap.reading(rows))
    rows[2] = record(sport=3, pid=7, comm=b"curl", packets=4, bytes_=250)
    m.update(cap.reading(rows))
    s = scrape(m)
    proc = {
        (lab["pid"], lab["comm"], lab["cgroup"], lab["direction"]): v
        for lab, v in s["pktstat_bpf_process_bytes_total"]
    }
    assert proc == {
        ("42", 'ev\\x1b[31m"il\\n', '/k8s/pod"x\\x07', "egress"): 500,
        ("7", "curl", "", "egress"): 250,
    }
    pp = {lab["pid"]: v for lab, v in s["pktstat_bpf_process_packets_total"]}
    assert pp == {"42": 5, "7": 4}
    (lab, _), *_ = [x for x in s["pktstat_bpf_flow_bytes_total"] if x[0]["src_port"] == "1"]
    assert (lab["pid"], lab["comm"], lab["cgroup"]) == ("42", 'ev\\x1b[31m"il\\n', '/k8s/pod"x\\x07')
    text = generate_latest(_registry(m)).decode()
    assert "\x1b" not in text and "\x07" not in text


def _registry(m):
    reg = CollectorRegistry(auto_describe=False)
    reg.register(m)
    return reg


def test_pod_names_become_flow_labels():
    from pktstat_bpf.views.view import View

    class Pods:
        def label(self, ips):
            return np.array([{"10.0.0.2": "shop/web-0"}.get(i) for i in ips], dtype=object)

    cap = Capture()
    m = FlowMetrics(top=5)
    m.update(View(pods=Pods()).apply_interval(cap.reading([record(packets=1, bytes_=100)])))
    ((lab, v),) = scrape(m)["pktstat_bpf_flow_bytes_total"]
    assert (lab["src_pod"], lab["dst_pod"], v) == ("", "shop/web-0", 100)


def test_registry_adds_process_metrics():
    m = FlowMetrics(top=1)
    text = generate_latest(make_registry(m)).decode()
    assert "process_resident_memory_bytes" in text and "pktstat_bpf_flow_table_entries" in text


# -- the HTTP server --------------------------------------------------------------------


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Blocking:
    """A collector whose collect() waits for `release`: a scrape stuck
    half-way through."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def collect(self):
        self.entered.set()
        self.release.wait(20)
        return []


def test_server_serves_metrics_and_a_stuck_scrape_never_blocks_updates():
    cap = Capture()
    m = FlowMetrics(top=5)
    block = Blocking()
    reg = make_registry(m)
    with MetricsServer("127.0.0.1", 0, reg) as srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}/metrics"
        status, text = _get(srv.url)
        assert status == 200 and "pktstat_bpf_flow_table_entries 0.0" in text
        assert _get(f"http://127.0.0.1:{srv.port}/")[0] == 200
        assert _get(f"http://127.0.0.1:{srv.port}/nope") == (404, "404 Not Found: metrics are at /metrics\n")
        # a client that connects and never finishes its request
        idle = socket.create_connection(("127.0.0.1", srv.port))
        idle.sendall(b"GET /metrics HTTP/1.1\r\n")
        # a scrape stuck inside collection
        reg.register(block)
        stuck = threading.Thread(target=_get, args=(srv.url, 30), daemon=True)
        stuck.start()
        assert block.entered.wait(10)
        # ... while the capture loop goes on updating
        done = threading.Event()
        threading.Thread(
            target=lambda: (m.update(cap.reading([record(packets=3, bytes_=300)])), done.set()), daemon=True
        ).start()
        assert done.wait(5), "update() waited for a scrape"
        block.release.set()
        stuck.join(10)
        reg.unregister(block)
        status, text = _get(srv.url)
        assert status == 200
        assert (
            'pktstat_bpf_bytes_total{direction="egress",family="ipv4",iface="eth9",proto="UDP"} 300.0' in text
        )
        idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


def test_busy_port_and_foreign_address_are_clear_errors():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PktstatError) as e:
            MetricsServer("127.0.0.1", port, CollectorRegistry())
        assert (
            str(e.value) == f"--prometheus: cannot listen on 127.0.0.1:{port}: the address is already in use"
        )
        assert e.value.exit_code == 1
    with pytest.raises(UsageError) as e:
        MetricsServer("192.0.2.1", 9100, CollectorRegistry())  # TEST-NET-1: on no host
    assert str(e.value) == "--prometheus: cannot listen on 192.0.2.1:9100: the address is not on this host"


def test_ipv6_wildcard_serves_ipv4_too():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        srv = MetricsServer("::", 0, make_registry(FlowMetrics()))
    except PktstatError as e:
        pytest.skip(f"cannot bind [::]: {e}")
    with srv:
        assert _get(f"http://127.0.0.1:{srv.port}/metrics")[0] == 200
        assert _get(f"http://[::1]:{srv.port}/metrics")[0] == 200


def test_healthz_fails_when_readings_stop():
    cap = Capture()
    m = FlowMetrics()
    with MetricsServer("127.0.0.1", 0, make_registry(m), health=lambda: m.stale(0.5)) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        assert _get(f"{base}/healthz") == (200, "ok\n")
        time.sleep(0.7)
        status, text = _get(f"{base}/healthz")
        m_ = re.fullmatch(r"no reading of the flow maps for (\d+\.\d)s\n", text)
        assert status == 503 and m_ and 0.5 <= float(m_.group(1)) < 30, text
        m.update(cap.reading([record()]))
        assert _get(f"{base}/healthz") == (200, "ok\n")


def test_openmetrics_exposition_parses_too():
    """Prometheus asks for OpenMetrics first; prometheus-client's OpenMetrics
    parser reads the same values back."""
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    cap = Capture()
    m = FlowMetrics(top=1, info={"version": "1", "libbpf": "v1.1", "mode": "tc", "attach": "tcx"})
    m.update(cap.reading([record(packets=2, bytes_=200), record(sport=9, packets=1, bytes_=50)]))
    fams = {f.name: f for f in om_parse(om_latest(_registry(m)).decode())}
    (s,) = fams["pktstat_bpf_bytes"].samples
    assert (s.name, s.value, fams["pktstat_bpf_bytes"].type) == ("pktstat_bpf_bytes_total", 250, "counter")
    assert [x.value for x in fams["pktstat_bpf_flow_bytes"].samples] == [200]


def test_every_metric_is_documented():
    from pathlib import Path

    cap = Capture(mode="fake-owners-doc")
    m = FlowMetrics(top=5)
    m.update(cap.reading([record(pid=1, comm=b"x")]))
    names = {f.name for f in make_registry(m).collect() if f.name.startswith("pktstat_bpf_")}
    doc = (Path(__file__).resolve().parent.parent / "docs" / "exporter.md").read_text()
    documented = set(re.findall(r"`(pktstat_bpf_\w+?)(?:_total)?`", doc))
    assert len(names) == 19
    assert names <= documented, names - documented


def test_a_silent_connection_is_dropped(monkeypatch):
    monkeypatch.setattr(exporter.server._Handler, "timeout", 0.5)
    with MetricsServer("127.0.0.1", 0, make_registry(FlowMetrics())) as srv:
        idle = socket.create_connection(("127.0.0.1", srv.port))
        idle.sendall(b"GET /metrics HTTP/1.1\r\n")
        idle.settimeout(10)
        t0 = time.monotonic()
        assert idle.recv(100) == b""  # closed by the server
        assert time.monotonic() - t0 < 5
        idle.close()
