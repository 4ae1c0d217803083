"""The exporter scraped by a real Prometheus server.

Both run inside namespace A of a NetnsPair: the exporter counts on `va` and
listens on A's loopback, Prometheus (the Debian package) scrapes it there
every second with a temporary config and data directory, and the test asks
Prometheus's HTTP API (from a thread inside A) what it stored. Scrapes go
over A's `lo`, never over `va`, so the counts on `va` are only the traffic
the test sends: derived below from headers + payload.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from netns import NetnsPair
from traffic import ETH, ICMP, IP4, IP6, UDP, ping

pytest.importorskip("prometheus_client", reason="prometheus-client is not installed (pip install '.[test]')")

SCRAPE = "1s"  # Prometheus scrape interval


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    path = shutil.which("prometheus", path=os.environ.get("PATH", "") + ":/usr/bin:/usr/sbin")
    if not path:
        pytest.skip(
            "the prometheus server is not installed (make setup installs the Debian package 'prometheus')"
        )
    return path


def free_port(netns: NetnsPair) -> int:
    """A free TCP port on namespace A's loopback."""
    with netns.in_a(), socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    def __init__(self, netns: NetnsPair, *args: str) -> None:
        self.p = netns.exec_a(
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-i",
            "va",
            "--prometheus",
            "127.0.0.1:0",
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.p.stderr.readline()
        m = re.search(
            r"counting on va via tcx .*; metrics on http://127\.0\.0\.1:(\d+)/metrics$", line.strip()
        )
        if not m:
            self.p.kill()
            raise AssertionError(f"exporter did not start: {line!r} {self.p.stderr.read()}")
        self.port = int(m.group(1))

    def stop(self, sig: int | None = signal.SIGTERM) -> tuple[int, str, str]:
        """Send `sig` (None: let it end by itself) and collect the exit code and output."""
        if sig is not None and self.p.poll() is None:
            self.p.send_signal(sig)
        out, err = self.p.communicate(timeout=30)
        return self.p.returncode, out, err


class Prometheus:
    """A Prometheus server in namespace A, in a temporary directory that
    :meth:`stop` removes."""

    def __init__(self, binary: str, netns: NetnsPair, target: int) -> None:
        self.netns = netns
        self.dir = Path(tempfile.mkdtemp(prefix="pktstat-prometheus-"))
        self.port = free_port(netns)
        cfg = self.dir / "prometheus.yml"
        cfg.write_text(
            f"global:\n  scrape_interval: {SCRAPE}\n  scrape_timeout: {SCRAPE}\n"
            f"scrape_configs:\n  - job_name: pktstat\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target}']\n"
        )
        self.log = open(self.dir / "prometheus.log", "w")
        self.p = netns.exec_a(
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait(lambda: self._get("/-/ready") is not None, "Prometheus to be ready")
        except BaseException:
            self.stop()
            raise

    def _get(self, path: str):
        with self.netns.in_a():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                    return r.read().decode()
            except OSError:
                return None

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        q = {"query": promql}
        if at is not None:
            q["time"] = f"{at:.3f}"
        body = self._get("/api/v1/query?" + urllib.parse.urlencode(q))
        assert body is not None, f"Prometheus did not answer {promql!r}: {self.logs()}"
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def series(self, promql: str) -> dict[str, float]:
        """``{labels as text: value}`` of an instant query (labels sorted, no __name__/job/instance)."""
        out = {}
        for r in self.query(promql):
            lab = {k: v for k, v in r["metric"].items() if k not in ("__name__", "job", "instance")}
            out[",".join(f"{k}={v}" for k, v in sorted(lab.items()))] = float(r["value"][1])
        return out

    def scalar(self, promql: str) -> float:
        (r,) = self.query(promql) or [None]
        assert r is not None, f"no result for {promql!r}"
        return float(r["value"][1])

    def wait(self, pred, what: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.p.poll() is not None:
                raise AssertionError(f"Prometheus exited with {self.p.returncode}: {self.logs()}")
            v = pred()
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def logs(self) -> str:
        try:
            return (self.dir / "prometheus.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Sender:
    """One UDP socket, so one flow."""

    def __init__(self, dst: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
        self.dst, self.port = dst, port

    def burst(self, count: int, payload: int) -> None:
        for _ in range(count):
            self.sock.sendto(b"p" * payload, (self.dst, self.port))

    @property
    def sport(self) -> int:
        return self.sock.getsockname()[1]


def test_prometheus_stores_exact_counts_and_flow_counters_never_go_backwards(
    netns: NetnsPair, prometheus_bin
):
    peer = netns.peer("udp", "5301", "5302")
    exp = Exporter(netns, "-r", "200ms", "--prometheus-top", "1")
    prom = None
    try:
        prom = Prometheus(prometheus_bin, netns, exp.port)
        prom.wait(lambda: prom.series('up{job="pktstat"}') == {"": 1.0}, "the first successful scrape")
        flow = "pktstat_bpf_flow_bytes_total"
        v4, v6 = ETH + IP4 + UDP, ETH + IP6 + UDP
        started = time.time()

        def key(sender: Sender, src: str) -> str:
            return (
                f"direction=egress,dst={sender.dst},dst_port={sender.port},iface=va,proto=UDP,src={src},"
                f"src_port={sender.sport}"
            )

        def flows() -> dict[str, float]:
            """The flow series by key, their app label checked and left out: datagrams of "p"
            are "unknown" once 3 of one interval matched nothing, "pending" before; ICMP
            has none ("" is no label in Prometheus)."""
            out = {}
            for k, v in prom.series(flow).items():
                labels = k.split(",")
                assert [x for x in labels if x.startswith("app=")] in (
                    [],
                    ["app=unknown"],
                    ["app=pending"],
                ), k
                out[",".join(x for x in labels if not x.startswith("app="))] = v
            return out

        with netns.in_a():
            x, y = Sender(netns.B4, 5301), Sender(netns.B6, 5302)
            # 1: X leads (the echo requests and replies weigh less)
            x.burst(5, 100)
            assert ping(netns.B4, 4) == 4
        prom.wait(lambda: flows() == {key(x, netns.A4): 5 * (v4 + 100)}, "X alone in the top 1")
        # 2: Y overtakes X, which leaves the top 1
        with netns.in_a():
            y.burst(10, 300)
        prom.wait(lambda: flows() == {key(y, netns.A6): 10 * (v6 + 300)}, "Y alone in the top 1")
        # 3: X bursts, overtakes Y and returns with its lifetime count
        with netns.in_a():
            x.burst(30, 300)
        x_total = 5 * (v4 + 100) + 30 * (v4 + 300)
        prom.wait(lambda: flows() == {key(x, netns.A4): x_total}, "X back in the top 1")
        end = time.time()
        prom.wait(
            lambda: prom.scalar("pktstat_bpf_last_read_timestamp_seconds") > end + 0.5,
            "a scrape of a reading taken after the traffic",
        )

        # exact totals over all flows, though only one flow is exported at a time
        def total(name: str, **lab: str) -> float:
            sel = ",".join(f'{k}="{v}"' for k, v in {"iface": "va", **lab}.items())
            return prom.scalar(f"pktstat_bpf_{name}_total{{{sel}}}")

        egress4 = {"direction": "egress", "family": "ipv4"}
        assert total("packets", **egress4, proto="UDP") == 35
        assert total("bytes", **egress4, proto="UDP") == x_total
        assert total("packets", direction="egress", family="ipv6", proto="UDP") == 10
        assert total("bytes", direction="egress", family="ipv6", proto="UDP") == 10 * (v6 + 300)
        for d in ("egress", "ingress"):
            assert total("packets", direction=d, family="ipv4", proto="ICMPv4") == 4
            assert total("bytes", direction=d, family="ipv4", proto="ICMPv4") == 4 * (ETH + IP4 + ICMP + 56)
        assert prom.series('pktstat_bpf_bytes_total{direction="ingress",proto="UDP"}') == {}
        # conservation in PromQL: flows + unparsed + overflow == seen, per direction
        balance = prom.series(
            "sum by (direction) (pktstat_bpf_bytes_total) + on (direction) pktstat_bpf_unparsed_bytes_total"
            " + on (direction) pktstat_bpf_overflow_bytes_total - on (direction) pktstat_bpf_seen_bytes_total"
        )
        assert balance == {"direction=egress": 0.0, "direction=ingress": 0.0}
        assert prom.series("pktstat_bpf_overflow_packets_total") == {
            "direction=egress": 0.0,
            "direction=ingress": 0.0,
        }
        assert prom.scalar("pktstat_bpf_flow_table_max_entries") == 65536
        assert prom.scalar("pktstat_bpf_flows_live") >= 4  # X, Y, echo request, echo reply (+ NDP)
        # the kernel table holds one interval's flows: its fill level is the most of one interval
        assert 1 <= prom.scalar("pktstat_bpf_flow_table_entries") <= 4
        assert prom.scalar("count(pktstat_bpf_flow_bytes_total)") == 1
        (info,) = prom.query("pktstat_bpf_build_info")
        assert (info["metric"]["mode"], info["metric"]["attach"]) == ("tc", "tcx")
        assert info["metric"]["libbpf"].startswith("v1.")

        # X's counter as Prometheus stored it: rising, through its absence, never reset
        window = f"{int(time.time() - started) + 5}s"
        (rng,) = prom.query(f'{flow}{{src_port="{x.sport}"}}[{window}]')
        values = [float(v) for _, v in rng["values"]]
        assert values[0] == 5 * (v4 + 100) and values[-1] == x_total
        assert values == sorted(values) and set(values) == {5 * (v4 + 100), x_total}
        assert prom.scalar(f'resets({flow}{{src_port="{x.sport}"}}[{window}])') == 0
        x.sock.close(), y.sock.close()

        rc, out, err = exp.stop(signal.SIGTERM)
        assert (rc, out) == (0, ""), err
        assert "Traceback" not in err
        assert not netns.ours_attached("va")
    finally:
        if exp.p.poll() is None:
            exp.p.kill()
        if prom is not None:
            prom.stop()
            assert not prom.dir.exists()
        peer.kill()


def test_flow_counter_goes_on_across_the_engines_retirement_of_the_flow(netns: NetnsPair, prometheus_bin):
    """The engine retires a flow idle past --idle-timeout and starts a new
    lifetime when it sends again; its series goes on from where it was:
    Prometheus stores a counter that never goes down, whose increase over
    the run is what the flow sent."""
    peer = netns.peer("udp", "5311")
    exp = Exporter(netns, "-r", "100ms", "--idle-timeout", "400ms")
    prom = None
    try:
        prom = Prometheus(prometheus_bin, netns, exp.port)
        prom.wait(lambda: prom.series('up{job="pktstat"}') == {"": 1.0}, "the first successful scrape")
        started = time.time()
        v4 = ETH + IP4 + UDP + 100
        with netns.in_a():
            x = Sender(netns.B4, 5311)
            x.burst(4, 100)
        sel = f'pktstat_bpf_flow_bytes_total{{src_port="{x.sport}"}}'

        def value() -> float:
            got = prom.series(sel)
            return next(iter(got.values())) if got else -1.0

        prom.wait(lambda: value() == 4 * v4, "the first burst")
        prom.wait(
            lambda: prom.series('pktstat_bpf_flow_records_total{reason="idle"}') != {}, "the flow retired"
        )
        with netns.in_a():
            x.burst(6, 100)
        prom.wait(lambda: value() == 10 * v4, "the second burst, on top of the first")
        window = f"{int(time.time() - started) + 5}s"
        assert prom.scalar(f"resets({sel}[{window}])") == 0
        (rng,) = prom.query(f"{sel}[{window}]")
        values = [float(v) for _, v in rng["values"]]
        assert values == sorted(values) and set(values) == {4 * v4, 10 * v4}
        x.sock.close()
        rc, out, err = exp.stop(signal.SIGTERM)
        assert (rc, out) == (0, ""), err
    finally:
        if exp.p.poll() is None:
            exp.p.kill()
        if prom is not None:
            prom.stop()
        peer.kill()


def test_exporter_ends_at_timeout_and_on_sigint_detaching_everything(netns: NetnsPair):
    exp = Exporter(netns, "-r", "100ms", "-t", "1500ms")
    with netns.in_a():
        with urllib.request.urlopen(f"http://127.0.0.1:{exp.port}/metrics", timeout=5) as r:
            text = r.read().decode()
    assert 'pktstat_bpf_build_info{attach="tcx",libbpf="v1.' in text
    assert netns.ours_attached("va")
    rc, out, err = exp.stop(None)  # ends by itself at -t
    assert (rc, out) == (0, ""), err
    assert not netns.ours_attached("va")
    with netns.in_a(), pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", exp.port), timeout=2).close()

    exp = Exporter(netns, "-r", "100ms")
    time.sleep(0.3)
    rc, out, err = exp.stop(signal.SIGINT)
    assert (rc, out) == (0, ""), err
    assert "Traceback" not in err and not netns.ours_attached("va")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_exporter_exits_at_once_while_a_scraper_holds_connections_open(netns: NetnsPair, sig: int):
    """A scraper that keeps connections open (one idle after a complete
    scrape, one in the middle of its request) does not delay the exit: a
    request thread waits up to the 30 s request timeout, and the server's
    close must not join it."""
    exp = Exporter(netns, "-r", "100ms")
    with netns.in_a():
        scraped = socket.create_connection(("127.0.0.1", exp.port), timeout=5)
        scraped.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert scraped.recv(12) == b"HTTP/1.0 200"  # answered; the connection stays open
        half = socket.create_connection(("127.0.0.1", exp.port), timeout=5)
        half.sendall(b"GET /metrics HTTP/1.1\r\n")  # and a request that never ends
    time.sleep(0.3)
    t0 = time.monotonic()
    exp.p.send_signal(sig)
    try:
        out, err = exp.p.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        exp.p.kill()
        raise AssertionError("the exporter did not exit within 2 s of the signal") from None
    finally:
        scraped.close()
        half.close()
    assert time.monotonic() - t0 < 2
    assert (exp.p.returncode, out) == (0, ""), err
    assert "Traceback" not in err and not netns.ours_attached("va")


def test_busy_port_fails_before_anything_is_attached(netns: NetnsPair):
    with netns.in_a(), socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = netns.exec_a(
            sys.executable,
            "-m",
            "pktstat_bpf",
            "-i",
            "va",
            "--prometheus",
            f"127.0.0.1:{port}",
            "-vv",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = p.communicate(timeout=60)
    assert (p.returncode, out) == (1, "")
    # the one line, and nothing before it: no program was loaded (-vv would show libbpf's log)
    assert (
        err
        == f"pktstat-bpf: error: --prometheus: cannot listen on 127.0.0.1:{port}: the address is already in use\n"
    )
    assert not netns.ours_attached("va")
