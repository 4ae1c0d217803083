"""Application labels live (issue 17): real clients against real servers
in the test's own namespaces, each flow's label (flow_value.app, read from
the snapshot's records) in both directions, in tc, xdp and cgroup mode.

Namespace B serves: Python's http.server (HTTP) and the same behind Python's
ssl with a certificate openssl makes for the test (TLS), OpenSSH's sshd, a
small DNS server (UDP and TCP), a listener that answers a PostgreSQL
StartupMessage with AuthenticationOk and ReadyForQuery, a small SMTP server,
an echo server (TCP and UDP) and a listener that closes what it accepts.
Namespace A runs the clients, each as its own process: curl (HTTP, and TLS
with -k), ssh (its banner and key exchange; the login is refused), dig and
dig +tcp, and tests/l7_client.py (pg8000, smtplib, fixed pseudo-random bytes
that must stay "unknown", a handshake without payload that must stay
"pending"). Every service has its own port, and no port is a well-known
one, so the labels can only come from the payloads.

One capture per mode serves all the services (the module fixture `run`):
TC on va sees both directions; XDP sees ingress only, so a collector on vb
(in namespace B) sees the client's packets and one on va the server's; the
cgroup collector sees the client processes (started in the test's cgroup)
both ways. WireGuard is tests/test_l7_wireguard.py's (a real tunnel, where
the kernel has the module: the guests of the kernel matrix).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from netns import NetnsPair, in_ns
from pktstat_bpf import Collector
from pktstat_bpf.core.protocols import app_name

pytestmark = pytest.mark.kernel

CLIENT = Path(__file__).with_name("l7_client.py")
TLS_NAME = "server.test"  # the name the TLS client asks for (SNI)
NAME_FIELDS = ("serverName", "alpn", "httpHost", "dnsQuery", "dnsQtype", "dnsRcode", "dnsAnswers")
SSHD = "/usr/sbin/sshd"

# service -> (protocol, server port, client->server label, server->client label)
SERVICES = {
    "http": ("TCP", 18080, "HTTP", "HTTP"),
    "tls": ("TCP", 18443, "TLS", "TLS"),
    "ssh": ("TCP", 12222, "SSH", "SSH"),
    "dns-udp": ("UDP", 15353, "DNS", "DNS"),
    "dns-tcp": ("TCP", 15353, "DNS", "DNS"),
    "postgresql": ("TCP", 15432, "PostgreSQL", "PostgreSQL"),
    "smtp": ("TCP", 12525, "SMTP", "SMTP"),
    "random-tcp": ("TCP", 17001, "unknown", "unknown"),
    "random-udp": ("UDP", 17002, "unknown", "unknown"),
    "handshake": ("TCP", 17003, "pending", "pending"),
}


def serve(target, *args) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()


def accept_loop(sock: socket.socket, handle) -> None:
    """Each connection of `sock` to handle(conn) in a thread of its own."""
    while True:
        try:
            c, _ = sock.accept()
        except OSError:
            return
        serve(lambda c=c: (handle_quietly(handle, c), c.close()))


def handle_quietly(handle, c: socket.socket) -> None:
    c.settimeout(5)
    with contextlib.suppress(OSError):
        handle(c)


def read_to_eof(c: socket.socket) -> None:
    while c.recv(65536):
        pass


def dns_answer(query: bytes) -> bytes:
    """The query's one question answered with one A record (10.99.0.2)."""
    end = 12
    while query[end]:
        end += 1 + query[end]
    question = query[12 : end + 5]
    header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    return header + question + struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("10.99.0.2")


def dns_tcp(c: socket.socket) -> None:
    while hdr := c.recv(2, socket.MSG_WAITALL):
        reply = dns_answer(c.recv(struct.unpack("!H", hdr)[0], socket.MSG_WAITALL))
        c.sendall(struct.pack("!H", len(reply)) + reply)


def postgres(c: socket.socket) -> None:
    """An SSLRequest refused ("N", as a server without SSL does), then the
    StartupMessage read whole and answered AuthenticationOk + ReadyForQuery."""
    while True:
        n = struct.unpack("!I", c.recv(4, socket.MSG_WAITALL))[0]
        if c.recv(n - 4, socket.MSG_WAITALL) != struct.pack("!I", 80877103):
            break
        c.sendall(b"N")
    c.sendall(b"R" + struct.pack("!II", 8, 0) + b"Z" + struct.pack("!I", 5) + b"I")
    read_to_eof(c)


def smtp(c: socket.socket) -> None:
    c.sendall(b"220 server.test ESMTP\r\n")
    for line in c.makefile("rb"):
        verb = line[:4].upper()
        if verb == b"QUIT":
            c.sendall(b"221 bye\r\n")
            return
        c.sendall(b"250-server.test\r\n250 8BITMIME\r\n" if verb == b"EHLO" else b"250 ok\r\n")


def echo_tcp(c: socket.socket) -> None:
    """Each segment back, from the next CPU in turn (as the client sends)."""
    cpus, i = sorted(os.sched_getaffinity(0)), 0
    while data := c.recv(65536):
        os.sched_setaffinity(0, {cpus[i % len(cpus)]})  # this thread only
        c.sendall(data)
        i += 1


def echo_udp(s: socket.socket) -> None:
    cpus, i = sorted(os.sched_getaffinity(0)), 0
    with contextlib.suppress(OSError):
        while True:
            data, peer = s.recvfrom(65536)
            if peer is None:  # shut down
                return
            os.sched_setaffinity(0, {cpus[i % len(cpus)]})
            s.sendto(data, peer)
            i += 1


def dns_udp(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            data, peer = s.recvfrom(65536)
            if peer is None:
                return
            s.sendto(dns_answer(data), peer)


class Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from namespace B\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class Servers:
    """Every server of SERVICES in namespace B; close() ends them all."""

    def __init__(self, ns: NetnsPair, tmp: Path) -> None:
        self.socks: list[socket.socket] = []
        self.https: list[http.server.HTTPServer] = []
        self.procs: list[subprocess.Popen] = []
        self.made_run_sshd = False
        self.sni_seen: list[str] = []
        try:
            self._start(ns, tmp)
        except BaseException:
            self.close()
            raise

    def _listen(self, kind: int, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((NetnsPair.B4, port))
        if kind == socket.SOCK_STREAM:
            s.listen(8)
        self.socks.append(s)
        return s

    def _start(self, ns: NetnsPair, tmp: Path) -> None:
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
            + ["-nodes", "-days", "1", "-subj", "/CN=server.test", "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
        )
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        tls.sni_callback = lambda sock, name, ctx: self.sni_seen.append(name)  # the server's own view
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "hostkey")],
            check=True,
            capture_output=True,
        )
        if not os.path.isdir("/run/sshd"):  # sshd's privilege separation directory
            os.mkdir("/run/sshd", 0o755)
            self.made_run_sshd = True
        with in_ns(ns.ns_b):
            for name, secure in (("http", False), ("tls", True)):
                h = http.server.ThreadingHTTPServer((ns.B4, SERVICES[name][1]), Quiet)
                if secure:
                    h.socket = tls.wrap_socket(h.socket, server_side=True)
                self.https.append(h)
                serve(h.serve_forever, 0.05)
            tcp = {"dns-tcp": dns_tcp, "postgresql": postgres, "smtp": smtp, "random-tcp": echo_tcp}
            tcp["handshake"] = read_to_eof
            for name, handle in tcp.items():
                serve(accept_loop, self._listen(socket.SOCK_STREAM, SERVICES[name][1]), handle)
            serve(dns_udp, self._listen(socket.SOCK_DGRAM, SERVICES["dns-udp"][1]))
            serve(echo_udp, self._listen(socket.SOCK_DGRAM, SERVICES["random-udp"][1]))
        sshd = [
            SSHD,
            "-D",
            "-e",
            "-f",
            "/dev/null",
            "-h",
            str(tmp / "hostkey"),
            "-p",
            str(SERVICES["ssh"][1]),
        ]
        sshd += ["-o", f"ListenAddress={ns.B4}", "-o", "PidFile=none", "-o", "LogLevel=ERROR"]
        self.procs.append(
            subprocess.Popen(["ip", "netns", "exec", ns.ns_b, *sshd], stderr=subprocess.PIPE, text=True)
        )
        with in_ns(ns.ns_b):  # sshd is listening when a connection is accepted
            for _ in range(100):
                with contextlib.suppress(OSError), socket.create_connection((ns.B4, SERVICES["ssh"][1]), 1):
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"sshd did not start: {self.procs[0].stderr.read()}")

    def close(self) -> None:
        for h in self.https:
            h.shutdown()
            h.server_close()
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for p in self.procs:
            p.kill()
            p.wait()
        if self.made_run_sshd:
            with contextlib.suppress(OSError):
                os.rmdir("/run/sshd")


def clients(b4: str) -> dict[str, list[str]]:
    """service -> the client's argv."""
    py = [sys.executable, str(CLIENT)]
    port = {name: str(s[1]) for name, s in SERVICES.items()}
    dig = ["dig", f"@{b4}", "-p", port["dns-udp"], "+tries=1", "+time=5", "pbt.test", "A"]
    ssh = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
    ssh += ["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-p", port["ssh"]]
    return {
        "http": ["curl", "-sSf", "-m", "5", f"http://{b4}:{port['http']}/"],
        # by name (curl sends no SNI for an address); curl offers ALPN h2,http/1.1
        "tls": ["curl", "-sSfk", "-m", "5", "--resolve", f"{TLS_NAME}:{port['tls']}:{b4}"]
        + [f"https://{TLS_NAME}:{port['tls']}/"],
        "ssh": [*ssh, f"nobody@{b4}", "true"],
        "dns-udp": dig,
        "dns-tcp": [*dig, "+tcp"],
        **{name: [*py, name, b4, port[name]] for name in ("random-tcp", "random-udp", "handshake")},
        "postgresql": [*py, "pg", b4, port["postgresql"]],
        "smtp": [*py, "smtp", b4, port["smtp"]],
    }


def labels(snaps, a4: str) -> tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str], list[dict]]]:
    """(service, "c2s" or "s2c") -> the label of each such flow of `snaps`,
    and the same -> each such flow's names (NAME_FIELDS it carries)."""
    out: dict[tuple[str, str], list[str]] = {}
    names: dict[tuple[str, str], list[dict]] = {}
    for snap in snaps:
        for d, r in zip(snap.flow_dicts(), snap.records):
            for name, (proto, port, _, _) in SERVICES.items():
                if d["proto"] != proto or port not in (d["srcPort"], d["dstPort"]):
                    continue
                way = "c2s" if (d["srcIp"], d["dstPort"]) == (a4, port) else "s2c"
                out.setdefault((name, way), []).append(app_name(int(r["app"])))
                names.setdefault((name, way), []).append({k: d[k] for k in NAME_FIELDS if k in d})
    return out, names


@pytest.fixture(scope="module", params=["tc", "xdp", "cgroup"])
def run(request, bpf, tmp_path_factory):
    """One capture of every service in `mode`: (mode, labels, client failures)."""
    from cgroups import TestCgroup, cgroup2_mount

    for tool in ("curl", "dig", "ssh", "ssh-keygen", "openssl", SSHD):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (make setup installs it)")
    pytest.importorskip("pg8000")
    mode = request.param
    ns = NetnsPair(ipv6=False)
    cg = None
    servers = None
    try:
        servers = Servers(ns, tmp_path_factory.mktemp(f"l7-{mode}"))
        if mode == "cgroup":
            if cgroup2_mount() is None:
                pytest.skip("no writable cgroup v2 mount")
            cg = TestCgroup()
            where = cg.child("clients")
        with contextlib.ExitStack() as stack:
            if mode == "xdp":  # ingress only: the server's side too
                with in_ns(ns.ns_b):
                    cols = [stack.enter_context(Collector(mode="xdp", iface="vb"))]
                with ns.in_a():
                    cols.append(stack.enter_context(Collector(mode="xdp", iface="va")))
            elif mode == "tc":
                with ns.in_a():
                    cols = [stack.enter_context(Collector(iface="va"))]
            else:
                cols = [stack.enter_context(Collector(mode="cgroup", cgroup=cg.root))]
            time.sleep(0.05)
            failed = {}
            for name, argv in clients(ns.B4).items():
                kw = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
                if cg:
                    p = cg.spawn(where, *argv, netns=ns.ns_a, **kw)
                else:
                    p = subprocess.Popen(["ip", "netns", "exec", ns.ns_a, *argv], **kw)
                out, _ = p.communicate(timeout=30)
                if p.returncode != (255 if name == "ssh" else 0):  # ssh: the login is refused
                    failed[name] = (p.returncode, out)
            time.sleep(0.3)  # the last FINs
        snaps = [c.snapshot() for c in cols]
        got, names = labels(snaps, ns.A4)
        yield mode, got, failed, names, list(servers.sni_seen)
    finally:
        if servers:
            servers.close()
        if cg:
            cg.destroy()
        ns.destroy()


@pytest.mark.parametrize("service", SERVICES)
def test_each_flow_labelled_both_ways(run, service):
    mode, got, failed, _, _ = run
    assert service not in failed, f"the {service} client failed: {failed.get(service)}"
    _, _, c2s, s2c = SERVICES[service]
    assert (got.get((service, "c2s")), got.get((service, "s2c"))) == ([c2s], [s2c]), (mode, service)


def test_each_flow_named(run):
    """TLS: the server name the server itself saw (its SNI callback) and the
    ALPN list curl offers; HTTP: the Host curl sent; DNS: dig's question and
    the server's answer (NOERROR, one record), on both directions where one
    program sees both (TC; XDP: each side's collector sees one direction,
    and a DNS response carries its own question). cgroup mode reads no names."""
    mode, _, failed, names, sni_seen = run
    assert not failed, failed
    b4, port = NetnsPair.B4, {name: s[1] for name, s in SERVICES.items()}
    tls = {"serverName": TLS_NAME, "alpn": "h2,http/1.1"}
    http = {"httpHost": f"{b4}:{port['http']}"}
    dns = {"dnsQuery": "pbt.test", "dnsQtype": "A"}
    answer = {**dns, "dnsRcode": "NOERROR", "dnsAnswers": 1}
    if mode == "cgroup":
        assert all(n == {} for flows in names.values() for n in flows), names
        return
    assert sni_seen == [TLS_NAME]
    want = {
        ("tls", "c2s"): [tls],
        ("http", "c2s"): [http],
        ("dns-udp", "c2s"): [dns],
        ("dns-udp", "s2c"): [answer],
        ("dns-tcp", "c2s"): [dns],
        ("dns-tcp", "s2c"): [answer],
        ("tls", "s2c"): [tls if mode == "tc" else {}],  # (TC: the reverse direction's names)
        ("http", "s2c"): [http if mode == "tc" else {}],
    }
    assert {k: names.get(k) for k in want} == want
    # flows of the other services carry no names
    assert all(
        n == {}
        for k, flows in names.items()
        if k[0] not in ("tls", "http", "dns-udp", "dns-tcp")
        for n in flows
    )
