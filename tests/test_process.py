"""Process mode end to end, for every backend the kernel has: processes the
test starts (in a test cgroup and test network namespaces) talk TCP, UDP
(connected, unconnected, sendmsg, sendmmsg/recvmmsg), ICMP over ping
sockets and raw sockets (echo, and a port-unreachable error); every flow must carry the right pid, comm and
cgroup path and exactly the calls and bytes the processes themselves
counted. All backends must give the same table. A backend the kernel does
not have must be refused in one line, with nothing attached (and must work
where PKTSTAT_BPF_EXPECT says the kernel has it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from cgroups import TestCgroup
from conftest import kernel_lacks
from netns import NetnsPair, sh, wait_for
from pktstat_bpf import Collector, FeatureMissingError, UsageError
from pktstat_bpf.cli import main as cli_main

pytestmark = pytest.mark.kernel

BACKENDS = ("tracepoint", "fentry", "kprobe")
WORKER = Path(__file__).with_name("proc_worker.py")
PROGRAM_PREFIX = "proc_"


def backend_refusal(backend: str) -> str | None:
    """Why the kernel cannot run `backend` (None: it can), from loading it."""
    c = Collector(mode="process", backend=backend)
    try:
        c.start()
    except FeatureMissingError as e:
        return str(e)
    finally:
        c.close()
    return None


_REFUSALS: dict[str, str | None] = {}


def usable(backend: str) -> str | None:
    if backend not in _REFUSALS:
        _REFUSALS[backend] = backend_refusal(backend)
    return kernel_lacks(f"process-{backend}", _REFUSALS[backend])


def our_programs() -> set[int]:
    out = json.loads(sh("bpftool", "prog", "show", "-j").stdout or "[]")
    return {p["id"] for p in out if p.get("name", "").startswith(PROGRAM_PREFIX)}


class Scenario:
    """Servers in namespace B (started before the collector), clients in A,
    all inside the test cgroup; each reports what it sent and received."""

    def __init__(self, cg: TestCgroup, ns: NetnsPair) -> None:
        self.cg, self.ns = cg, ns
        self.clients_dir, self.servers_dir = cg.child("clients"), cg.child("servers")
        sh("sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647", netns=ns.ns_a)
        self.procs: dict[str, tuple[subprocess.Popen, str]] = {}
        self.ports: dict[str, int] = {}
        self.reports: dict[str, dict] = {}

    def _start(self, name: str, cgdir: str, netns: str, *args: str) -> subprocess.Popen:
        p = self.cg.spawn(
            cgdir, sys.executable, str(WORKER), name, *args, netns=netns, stderr=subprocess.PIPE
        )
        self.procs[name] = (p, cgdir)
        return p

    def start_servers(self) -> None:
        for name, args in (
            ("pbt-tsrv", ("tcp-server", "0", "1500")),
            ("pbt-tsrv6", ("tcp-server", "0", "700", "6")),
            ("pbt-usrv4", ("udp-server", "4", "0", "14")),
            ("pbt-usrv6", ("udp-server", "6", "0", "3")),
        ):
            p = self._start(name, self.servers_dir, self.ns.ns_b, *args)
            line = p.stdout.readline().split()
            assert line and line[0] == "ready", (name, line, p.stderr.read() if p.poll() is not None else "")
            self.ports[name] = int(line[1])

    def run_clients(self) -> None:
        B4, B6 = self.ns.B4, self.ns.B6
        t, u4, u6 = str(self.ports["pbt-tsrv"]), str(self.ports["pbt-usrv4"]), str(self.ports["pbt-usrv6"])
        t6 = str(self.ports["pbt-tsrv6"])
        for name, args in (
            ("pbt-tcli", ("tcp-client", B4, t, "3000")),
            ("pbt-tcli6", ("tcp-client", B6, t6, "2000")),
            ("pbt-uthr", ("udp-client", "thread", B4, u4, "2", "80")),
            ("pbt-uconn", ("udp-client", "connected", B4, u4, "5", "100")),
            ("pbt-uunc", ("udp-client", "unconnected", B4, u4, "4", "200")),
            ("pbt-umsg6", ("udp-client", "msg", B6, u6, "3", "300")),
            ("pbt-ummsg", ("udp-client", "mmsg", B4, u4, "3", "50")),
            ("pbt-ping4", ("ping", B4, "3", "56")),
            ("pbt-ping6", ("ping", B6, "2", "24")),
            ("pbt-raw4", ("rawping", B4, "2", "32")),
            ("pbt-icmperr", ("icmp-error", B4, "9", "10")),  # port 9 (discard): nobody listens in B
            ("pbt-icmperr6", ("icmp-error", B6, "9", "20")),
        ):
            p = self._start(name, self.clients_dir, self.ns.ns_a, *args)
            self._finish(name, p)
        for name in ("pbt-tsrv", "pbt-tsrv6", "pbt-usrv4", "pbt-usrv6"):
            self._finish(name, self.procs[name][0])

    def _finish(self, name: str, p: subprocess.Popen) -> None:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, (name, err)
        self.reports[name] = json.loads(out.strip().splitlines()[-1])

    def pid(self, name: str) -> int:
        return self.procs[name][0].pid

    def expected(self) -> dict:
        """{(pid, comm, cgroup, direction, proto, src, sport, dst, dport, kind): (packets, bytes)}"""
        A4, B4, A6, B6 = self.ns.A4, self.ns.B4, self.ns.A6, self.ns.B6
        out: dict = {}
        r, cgr = self.reports, self.cg.rel

        def add(name, proto, local, lport, remote, rport, icmp=None):
            rep, cgdir = r[name], cgr(self.procs[name][1])
            key = (self.pid(name), name, cgdir)
            if rep["sent"][0]:
                sp, dp = (icmp[0], icmp[1]) if icmp else (lport, rport)
                out[key + ("egress", proto, local, sp, remote, dp, "")] = tuple(rep["sent"])
            if rep["recv"][0]:
                sp, dp = (icmp[2], icmp[3]) if icmp else (rport, lport)
                out[key + ("ingress", proto, remote, sp, local, dp, "")] = tuple(rep["recv"])

        tport, u4, u6 = self.ports["pbt-tsrv"], self.ports["pbt-usrv4"], self.ports["pbt-usrv6"]
        port = {n: r[n]["port"] for n in r}
        add("pbt-tcli", "TCP", A4, port["pbt-tcli"], B4, tport)
        add("pbt-tsrv", "TCP", B4, tport, A4, port["pbt-tcli"])
        t6 = self.ports["pbt-tsrv6"]
        add("pbt-tcli6", "TCP", A6, port["pbt-tcli6"], B6, t6)
        add("pbt-tsrv6", "TCP", B6, t6, A6, port["pbt-tcli6"])
        # sent and received by a thread that is not the main one: the process's pid (TGID)
        add("pbt-uthr", "UDP", A4, port["pbt-uthr"], B4, u4)
        add("pbt-uconn", "UDP", A4, port["pbt-uconn"], B4, u4)
        add("pbt-uunc", "UDP", "0.0.0.0", port["pbt-uunc"], B4, u4)
        add("pbt-umsg6", "UDP", "::", port["pbt-umsg6"], B6, u6)
        add("pbt-ummsg", "UDP", "0.0.0.0", port["pbt-ummsg"], B4, u4)
        add("pbt-ping4", "ICMPv4", "0.0.0.0", 0, B4, 0, icmp=(8, 0, 0, 0))
        add("pbt-ping6", "IPv6-ICMP", "::", 0, B6, 0, icmp=(128, 0, 129, 0))
        add("pbt-raw4", "ICMPv4", "0.0.0.0", 0, B4, 0, icmp=(8, 0, 0, 0))
        # one process: a UDP datagram out, the port-unreachable error in on its raw socket
        rep, key = r["pbt-icmperr"], (self.pid("pbt-icmperr"), "pbt-icmperr", cgr(self.clients_dir))
        out[key + ("egress", "UDP", "0.0.0.0", port["pbt-icmperr"], B4, 9, "")] = tuple(rep["sent"])
        out[key + ("ingress", "ICMPv4", B4, 3, "0.0.0.0", 3, "")] = tuple(rep["recv"])
        rep, key = r["pbt-icmperr6"], (self.pid("pbt-icmperr6"), "pbt-icmperr6", cgr(self.clients_dir))
        out[key + ("egress", "UDP", "::", port["pbt-icmperr6"], B6, 9, "")] = tuple(rep["sent"])
        out[key + ("ingress", "IPv6-ICMP", B6, 1, "::", 4, "")] = tuple(rep["recv"])
        # the UDP servers (bound to the wildcard) answer each client
        for n in ("pbt-uconn", "pbt-uunc", "pbt-ummsg", "pbt-uthr"):
            out_k = (self.pid("pbt-usrv4"), "pbt-usrv4", cgr(self.servers_dir))
            sent = r[n]["sent"]
            out[out_k + ("ingress", "UDP", A4, port[n], "0.0.0.0", u4, "")] = tuple(sent)
            out[out_k + ("egress", "UDP", "0.0.0.0", u4, A4, port[n], "")] = tuple(r[n]["recv"])
        k6 = (self.pid("pbt-usrv6"), "pbt-usrv6", cgr(self.servers_dir))
        out[k6 + ("ingress", "UDP", A6, port["pbt-umsg6"], "::", u6, "")] = tuple(r["pbt-umsg6"]["sent"])
        out[k6 + ("egress", "UDP", "::", u6, A6, port["pbt-umsg6"], "")] = tuple(r["pbt-umsg6"]["recv"])
        return out

    def table(self, snap) -> dict:
        pids = {self.pid(n) for n in self.procs}
        out: dict = defaultdict(lambda: [0, 0])
        for f in snap.flows():
            if f["pid"] in pids:
                k = (
                    f["pid"],
                    f["comm"],
                    f["cgroup"],
                    f["direction"],
                    f["proto"],
                    f["srcIp"],
                    f["srcPort"],
                    f["dstIp"],
                    f["dstPort"],
                    f.get("kind", ""),
                )
                out[k][0] += f["packets"]
                out[k][1] += f["bytes"]
        return {k: tuple(v) for k, v in out.items()}

    def normalised(self, table: dict) -> dict:
        """The table with pids and ports replaced by the processes' names,
        so tables of separate runs compare."""
        names = {self.pid(n): n for n in self.procs}
        ports = {self.reports[n]["port"]: f"port:{n}" for n in self.reports}
        ports.update({p: f"port:{n}" for n, p in self.ports.items()})
        out = {}
        for k, v in table.items():
            pid, comm, cgdir, d, proto, src, sp, dst, dp, kind = k
            if proto in ("TCP", "UDP"):
                sp, dp = ports.get(sp, sp), ports.get(dp, dp)
            out[(names[pid], comm, cgdir, d, proto, src, sp, dst, dp, kind)] = v
        return out

    def stop(self) -> None:
        for p, _ in self.procs.values():
            if p.poll() is None:
                p.kill()


def run_scenario(cg: TestCgroup, ns: NetnsPair, backend: str):
    sc = Scenario(cg, ns)
    try:
        sc.start_servers()
        with Collector(mode="process", backend=backend) as c:
            assert c.status["attach"] == backend and c.status["backend"] == backend
            sc.run_clients()
            time.sleep(0.1)
        snap = c.snapshot()
        c.close()
    finally:
        sc.stop()
    return sc, snap


def assert_conserved(snap) -> None:
    t = snap.totals
    assert t.all.packets == t.flow_packets + t.all.unparsed_packets + t.all.overflow_packets
    assert t.all.bytes == t.flow_bytes + t.all.unparsed_bytes + t.all.overflow_bytes


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_flow_of_every_process_exactly(cg: TestCgroup, netns: NetnsPair, backend: str):
    reason = usable(backend)
    if reason:
        before = our_programs()
        with pytest.raises(FeatureMissingError) as e:
            Collector(mode="process", backend=backend).start()
        assert str(e.value) == reason and f"--process-backend {backend} cannot run on this kernel: " in reason
        assert "\n" not in reason
        assert our_programs() <= before
        return
    sc, snap = run_scenario(cg, netns, backend)
    # every process has exited: its rows stay
    assert all(p.poll() is not None for p, _ in sc.procs.values())
    got, want = sc.table(snap), sc.expected()
    assert {k: v for k, v in got.items() if want.get(k) != v} == {
        k: v for k, v in want.items() if got.get(k) != v
    }
    assert snap.extra["backend"] == backend and snap.mode == "process"
    assert snap.extra["noPeerPackets"] == 0
    assert_conserved(snap)
    # events without a pid (the host's others, if any) are counted as such, exactly
    r = snap.records
    if snap.totals.all.overflow_packets == 0:
        assert snap.totals.unowned_packets == int(r["packets"][r["pid"] == 0].sum())
        assert snap.totals.unowned_bytes == int(r["bytes"][r["pid"] == 0].sum())
    assert f"; without owner {snap.totals.unowned_packets} packets/" in snap.header_line()


def test_all_backends_give_the_same_table(cg: TestCgroup, netns: NetnsPair):
    tables = {}
    for b in BACKENDS:
        if usable(b) is None:
            sc, snap = run_scenario(cg, netns, b)
            tables[b] = sc.normalised(sc.table(snap))
    assert tables, "no process-mode backend works on this kernel"

    def comparable(t: dict) -> dict:
        # How many recv() calls a TCP byte stream takes depends on when its
        # segments arrive (each run matches its processes' own count, see
        # above): across runs, TCP compares by bytes, datagrams by both.
        return {k: (v[1] if k[4] == "TCP" else v) for k, v in t.items()}

    first = comparable(next(iter(tables.values())))
    assert len(first) >= 20
    for b, t in tables.items():
        assert comparable(t) == first, b


def retrans_segs(ns: str) -> int:
    lines = [
        ln.split()
        for ln in sh("cat", "/proc/net/snmp", netns=ns).stdout.splitlines()
        if ln.startswith("Tcp:")
    ]
    return int(lines[1][lines[0].index("RetransSegs")])


@pytest.mark.parametrize("backend", BACKENDS)
def test_tcp_retransmissions_are_their_own_flows_of_the_sender(
    cg: TestCgroup, netns: NetnsPair, backend: str
):
    if usable(backend):
        return  # refused: checked by test_every_flow_of_every_process_exactly
    srv = cg.spawn(
        cg.child("s"), sys.executable, str(WORKER), "pbt-rsrv", "tcp-server", "0", "0", netns=netns.ns_b
    )
    port = int(srv.stdout.readline().split()[1])
    cli = cg.spawn(
        cg.child("c"),
        sys.executable,
        str(WORKER),
        "pbt-rtx",
        "tcp-hold",
        netns.B4,
        str(port),
        "100",
        netns=netns.ns_a,
        stdin=subprocess.PIPE,
    )
    cport = int(cli.stdout.readline().split()[1])
    with Collector(mode="process", backend=backend) as c:
        sh("ip", "link", "set", "vb", "down", netns=netns.ns_b)  # B stops answering
        before = retrans_segs(netns.ns_a)
        cli.stdin.write("go\n")
        cli.stdin.flush()
        assert cli.stdout.readline().strip() == "sent"
        assert wait_for(lambda: retrans_segs(netns.ns_a) - before >= 3, timeout=20)
        snap = c.snapshot()  # retransmissions go on: read the kernel's count right after
        retrans = retrans_segs(netns.ns_a) - before
    rows = [f for f in snap.flows() if f["pid"] == cli.pid]
    cli.kill()
    srv.kill()
    rtx = [f for f in rows if f.get("kind") == "retransmit"]
    data = [f for f in rows if "kind" not in f]
    assert len(rtx) == 1 and len(data) == 1
    (r,) = rtx
    assert (r["comm"], r["cgroup"], r["direction"], r["proto"]) == (
        "pbt-rtx",
        cg.rel(cg.child("c")),
        "egress",
        "TCP",
    )
    assert (r["srcIp"], r["srcPort"], r["dstIp"], r["dstPort"]) == (netns.A4, cport, netns.B4, port)
    assert abs(r["packets"] - retrans) <= 1  # one may happen between the two readings
    assert r["bytes"] == 100 * r["packets"]
    assert (data[0]["packets"], data[0]["bytes"]) == (1, 100)


def test_cli_process_mode_json(bpf):
    backend = next((b for b in BACKENDS if usable(b) is None), None)
    assert backend, "no process-mode backend works on this kernel"
    out = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "-k", "-t", "3s", "-j"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["mode"] == "process" and doc["attach"] == backend and doc["backend"] == backend
    assert {"noPeerPackets", "noPeerBytes", "ownersEvicted"} <= set(doc)
    assert {"unownedPackets", "unownedBytes"} <= set(doc["totals"])
    assert doc["totals"]["packets"] == doc["totals"]["flowPackets"] + doc["totals"]["overflowPackets"]


@pytest.mark.parametrize("syscall_tracepoints", [True, False], ids=["tracefs", "sys_enter"])
def test_datagram_destinations_with_and_without_the_syscall_tracepoints(
    cg: TestCgroup, netns: NetnsPair, syscall_tracepoints: bool
):
    """The tracepoint backend learns where an unconnected socket sends from
    the send syscalls' own tracepoints where tracefs shows them, else from a
    check at every system call's entry: the same flows either way."""
    if usable("tracepoint"):
        return  # refused: checked by test_every_flow_of_every_process_exactly
    mount = syscall_tracepoints and not Path("/sys/kernel/tracing/events").is_dir()
    if mount:  # as systemd does at boot; undone at the end
        sh("mount", "-t", "tracefs", "tracefs", "/sys/kernel/tracing")
    fault = "" if syscall_tracepoints else "missing=syscall_tracepoints"
    env = {**os.environ, "PKTSTAT_BPF_TEST_FAULTS": fault}
    srv = cg.spawn(
        cg.child("s"),
        sys.executable,
        str(WORKER),
        "pbt-dsrv",
        "udp-server",
        "4",
        "0",
        "4",
        netns=netns.ns_b,
        stderr=subprocess.PIPE,
    )
    port = int(srv.stdout.readline().split()[1])
    p = subprocess.Popen(
        [sys.executable, "-m", "pktstat_bpf", "-k", "--process-backend", "tracepoint", "-t", "0", "-j"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert "via tracepoint" in p.stderr.readline()
        cli = cg.spawn(
            cg.child("c"),
            sys.executable,
            str(WORKER),
            "pbt-dcli",
            "udp-client",
            "unconnected",
            netns.B4,
            str(port),
            "4",
            "30",
            netns=netns.ns_a,
            stderr=subprocess.PIPE,
        )
        rep = json.loads(cli.communicate(timeout=60)[0].strip().splitlines()[-1])
        time.sleep(0.1)
        p.send_signal(2)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        srv.kill()
        if mount:
            sh("umount", "/sys/kernel/tracing", check=False)
    assert p.returncode == 0, err
    doc = json.loads(out)
    entry = "tracepoint/syscalls/sys_enter_sendto" if syscall_tracepoints else "tp_btf/sys_enter"
    assert entry in doc["hooks"], doc["hooks"]
    mine = {
        (f["direction"], f["srcIp"], f["srcPort"], f["dstIp"], f["dstPort"]): (f["packets"], f["bytes"])
        for f in doc["flows"]
        if f["pid"] == cli.pid
    }
    assert mine == {
        ("egress", "0.0.0.0", rep["port"], netns.B4, port): (4, 120),
        ("ingress", netns.B4, port, "0.0.0.0", rep["port"]): (4, 120),
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["-k", "-i", "lo"],
            "-k/--kprobes counts the sockets of every process, not an interface: drop -i/--iface",
        ),
        (["-k", "-x"], "-x/--xdp and -k/--kprobes are different modes: choose one"),
        (["-k", "-c", "/sys/fs/cgroup"], "-c/--cgroup and -k/--kprobes are different modes: choose one"),
        (
            ["--process-backend", "fentry"],
            "--process-backend chooses the hooks of process mode: use it with -k/--kprobes",
        ),
        (
            ["-k", "--process-backend", "ebpf"],
            "argument --process-backend: invalid choice: 'ebpf' (choose from 'auto', 'tracepoint', 'fentry', 'kprobe')",
        ),
        (
            ["-k", "--pcap", "x.pcap"],
            "--pcap replays a file through the TC program: drop -x/--xdp, -c/--cgroup and -k/--kprobes",
        ),
    ],
)
def test_cli_usage_errors(capsys, argv, message):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"pktstat-bpf: error: {message}\n"


def test_forced_missing_backend_falls_back_and_reports_why(bpf, monkeypatch):
    """auto takes the next backend when one is missing; the status says why."""
    working = [b for b in BACKENDS if usable(b) is None]
    assert working, "no process-mode backend works on this kernel"
    monkeypatch.setenv("PKTSTAT_BPF_TEST_FAULTS", f"missing=process-{working[0]}")
    c = Collector(mode="process")
    if len(working) == 1:
        with pytest.raises(FeatureMissingError) as e:
            c.start()
        assert str(e.value).startswith("no process-mode backend works on this kernel (")
        assert str(e.value).endswith("); see README 'Process mode'")
        assert f"{working[0]}: disabled for a test (PKTSTAT_BPF_TEST_FAULTS)" in str(e.value)
        return
    with c:
        st = c.status
        assert st["backend"] == working[1]
        assert st["backends_refused"][working[0]] == "disabled for a test (PKTSTAT_BPF_TEST_FAULTS)"


@pytest.mark.parametrize("step", [0, 3, 6])
def test_failed_attach_leaves_nothing(bpf, step, monkeypatch):
    backend = next((b for b in BACKENDS if usable(b) is None), None)
    assert backend
    before = our_programs()
    monkeypatch.setenv("PKTSTAT_BPF_TEST_FAULTS", f"fail_attach_at={step}")
    c = Collector(mode="process", backend=backend)
    with pytest.raises(Exception, match="injected test fault"):
        c.start()
    assert not c.running
    c.close()
    assert wait_for(lambda: our_programs() <= before)


def test_full_table_conserves_every_event(cg: TestCgroup, netns: NetnsPair):
    """16 entries, 40 flows of one datagram each (to ports nobody listens
    on): at most 16 of ours fit (other processes of the host may take some),
    every packet is in a flow or overflow, per direction, exactly."""
    backend = next((b for b in BACKENDS if usable(b) is None), None)
    assert backend, "no process-mode backend works on this kernel"
    with Collector(mode="process", backend=backend, max_entries=16) as c:
        sport = int(
            cg.run(
                cg.child("many"),
                "pbt-many",
                "udp-flows",
                netns.B4,
                "7000",
                "10",
                *["1"] * 40,
                netns=netns.ns_a,
            )[0]
        )
        time.sleep(0.1)
        snap = c.snapshot()
    assert len(snap) == 16
    mine = [f for f in snap.flows() if f["srcPort"] == sport and f["comm"] == "pbt-many"]
    assert 0 < len(mine) <= 16 and all((f["packets"], f["bytes"]) == (1, 10) for f in mine)
    t = snap.totals
    assert t.egress.overflow_packets >= 40 - len(mine)
    for name, d in (("ingress", 0), ("egress", 1)):
        cnt, rows = getattr(t, name), snap.records[snap.records["dir"] == d]
        assert cnt.packets == int(rows["packets"].sum()) + cnt.unparsed_packets + cnt.overflow_packets
        assert cnt.bytes == int(rows["bytes"].sum()) + cnt.unparsed_bytes + cnt.overflow_bytes
    assert t.conserved
    assert "overflow" in snap.header_line() and json.loads(snap.to_json())["totals"]["flows"] == 16


def test_unknown_backend_is_a_usage_error():
    with pytest.raises(
        UsageError, match="--process-backend must be one of auto, tracepoint, fentry, kprobe, not 'x'"
    ):
        Collector(mode="process", backend="x")


_UDPLITE = """
import json, socket
out = []
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    r = socket.socket(fam, socket.SOCK_DGRAM, 136)  # IPPROTO_UDPLITE
    s = socket.socket(fam, socket.SOCK_DGRAM, 136)
    r.bind((host, 0))
    for _ in range(3):
        s.sendto(b"l" * 33, (host, r.getsockname()[1]))
        r.recvfrom(1000)
    out.append((s.getsockname()[1], r.getsockname()[1]))
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_udplite_is_counted_as_udp_is(backend: str):
    """UDP-Lite datagrams, IPv4 and IPv6, unconnected: one packet per call,
    the payload as bytes, the peer from each datagram, in every backend."""
    if usable(backend):
        return  # refused: checked by test_every_flow_of_every_process_exactly
    with Collector(mode="process", backend=backend) as c:
        p = subprocess.run(
            [sys.executable, "-c", _UDPLITE], capture_output=True, text=True, timeout=60, check=True
        )
        time.sleep(0.1)
        snap = c.snapshot()
    (s4, r4), (s6, r6) = json.loads(p.stdout)
    mine = {
        (f["direction"], f["proto"], f["srcIp"], f["srcPort"], f["dstIp"], f["dstPort"]): (
            f["packets"],
            f["bytes"],
        )
        for f in snap.flows()
        if f["proto"] == "UDPLite" and {f["srcPort"], f["dstPort"]} in ({s4, r4}, {s6, r6})
    }
    assert mine == {
        ("egress", "UDPLite", "0.0.0.0", s4, "127.0.0.1", r4): (3, 99),
        ("ingress", "UDPLite", "127.0.0.1", s4, "127.0.0.1", r4): (3, 99),
        ("egress", "UDPLite", "::", s6, "::1", r6): (3, 99),
        ("ingress", "UDPLite", "::1", s6, "::1", r6): (3, 99),
    }
