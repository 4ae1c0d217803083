"""cgroup mode end to end: processes started inside a test-made cgroup v2
directory send known traffic (inside a test network namespace); flows carry
the right pid, comm and cgroup path with exact counts; sockets that existed
before the start are attributed; sockets shared across fork never carry a
wrong pid; cgroups made after the start resolve to their path; bad paths get
a one-line error; nothing stays attached after stop or SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest
from cgroups import TestCgroup, cgroup2_mount
from conftest import kernel_lacks, sock_tracepoints_missing
from netns import NetnsPair, sh, wait_for
from pktstat_bpf import Collector, PktstatError, UsageError
from pktstat_bpf.cli import main as cli_main
from traffic import ICMP, IP4, IP6, UDP, Sniffer

pytestmark = pytest.mark.kernel

# program names as bpftool shows them (from BTF: not cut at 15 characters)
CGROUP_PROGS = sorted(
    ("owner_skb_egress", "owner_skb_ingress", "owner_sock_create", "owner_sock_release", "owner_sockops")
)
OWNER_PROGS = set(CGROUP_PROGS) | {"owner_fork", "owner_send", "owner_recv", "owner_cgroup_mkdir"}


def rows(snap) -> list[dict]:
    return snap.flows()


def by_owner(snap, match) -> dict:
    """{(pid, comm, cgroup, direction): [packets, bytes]} over flows that `match`."""
    out: dict = defaultdict(lambda: [0, 0])
    for f in rows(snap):
        if match(f):
            k = (f["pid"], f["comm"], f["cgroup"], f["direction"])
            out[k][0] += f["packets"]
            out[k][1] += f["bytes"]
    return {k: tuple(v) for k, v in out.items()}


def attached_programs(cgdir: str) -> list[str]:
    r = sh("bpftool", "cgroup", "show", cgdir, "-j")
    return sorted(p["name"] for p in json.loads(r.stdout.strip() or "[]"))


def test_udp_and_icmp_flows_carry_pid_comm_cgroup_and_exact_counts(cg: TestCgroup, netns: NetnsPair):
    A4, B4, A6 = netns.A4, netns.B4, netns.A6
    senders, sinks = cg.child("senders"), cg.child("sinks")
    sink4 = cg.worker(sinks, "pbt-sink4", "udp-sink", "4", "0", netns=netns.ns_a)
    sink6 = cg.worker(sinks, "pbt-sink6", "udp-sink", "6", "0", netns=netns.ns_a)
    p4, p6 = int(sink4.stdout.readline().split()[1]), int(sink6.stdout.readline().split()[1])
    with Collector(mode="cgroup", cgroup=cg.root) as c:
        assert c.status["attach"] == "cgroup_skb"
        sp4 = int(cg.run(senders, "pbt-send4", "udp-send", A4, str(p4), "7", "100", netns=netns.ns_a)[0])
        sp6 = int(cg.run(senders, "pbt-send6", "udp-send", A6, str(p6), "5", "200", netns=netns.ns_a)[0])
        spt = int(
            cg.run(
                senders, "pbt-main", "udp-send-thread", "pbt-thread", A4, str(p4), "3", "10", netns=netns.ns_a
            )[0]
        )
        pinger = cg.worker(senders, "pbt-ping", "ping", B4, "4", "56", netns=netns.ns_a)
        assert pinger.communicate(timeout=30)[0].strip() == "4"
        time.sleep(0.2)
        snap = c.snapshot()
    S, K = cg.rel(senders), cg.rel(sinks)
    pid = cg.pid_of

    def udp(sp, dp):
        return lambda f: f["proto"] == "UDP" and f["srcPort"] == sp and f["dstPort"] == dp

    assert by_owner(snap, udp(sp4, p4)) == {
        (pid("pbt-send4"), "pbt-send4", S, "egress"): (7, 7 * (IP4 + UDP + 100)),
        (pid("pbt-sink4"), "pbt-sink4", K, "ingress"): (7, 7 * (IP4 + UDP + 100)),
    }
    assert by_owner(snap, udp(sp6, p6)) == {
        (pid("pbt-send6"), "pbt-send6", S, "egress"): (5, 5 * (IP6 + UDP + 200)),
        (pid("pbt-sink6"), "pbt-sink6", K, "ingress"): (5, 5 * (IP6 + UDP + 200)),
    }
    # made and used by a thread named pbt-thread: the pid is the process
    # (TGID), the comm the process's name
    assert by_owner(snap, udp(spt, p4)) == {
        (pid("pbt-main"), "pbt-main", S, "egress"): (3, 3 * (IP4 + UDP + 10)),
        (pid("pbt-sink4"), "pbt-sink4", K, "ingress"): (3, 3 * (IP4 + UDP + 10)),
    }
    icmp = by_owner(snap, lambda f: f["proto"] == "ICMPv4")
    assert icmp == {
        (pid("pbt-ping"), "pbt-ping", S, "egress"): (4, 4 * (IP4 + ICMP + 56)),
        (pid("pbt-ping"), "pbt-ping", S, "ingress"): (4, 4 * (IP4 + ICMP + 56)),
    }
    t = snap.totals
    assert t.conserved and t.all.overflow_packets == 0
    # processes that exited mid-capture keep their rows (they are all gone by now)
    assert all(f["pid"] for f in rows(snap))


def _sniffed_ip_flows(frames) -> dict:
    """Loopback frames carry a 14-byte dummy Ethernet header: IP = frame - 14."""
    out = {}
    for k, (n, b) in Sniffer.flows(frames, 6).items():
        out[k] = (n, b - 14 * n)
    return out


def test_tcp_server_started_before_the_collector_is_attributed(cg: TestCgroup, netns: NetnsPair):
    """A listener and an established connection that exist before the start
    (found by the start scan), and new connections accepted after it (they
    take the listener's owner): every packet on both ends carries the right
    pid, and the counts match an AF_PACKET capture of the loopback."""
    srv_dir, cli_dir = cg.child("server"), cg.child("clients")
    server = cg.worker(srv_dir, "pbt-server", "tcp-sink", "0", netns=netns.ns_a)
    port = int(server.stdout.readline().split()[1])
    held = cg.worker(
        cli_dir, "pbt-held", "tcp-hold", "127.0.0.1", str(port), netns=netns.ns_a, stdin=subprocess.PIPE
    )
    held_port = int(held.stdout.readline().split()[1])
    time.sleep(0.2)  # the handshake is over before the start

    with netns.in_a():
        sniffer = Sniffer("lo")
    with Collector(mode="cgroup", cgroup=cg.root) as c:
        scan = c.status["start_scan"]
        assert scan["owned"] >= 3 and scan["listeners"] >= 1  # listener, and both ends of `held`
        held.stdin.write("1500\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "sent"
        cport = int(
            cg.run(cli_dir, "pbt-client", "tcp-client", "127.0.0.1", str(port), "3000", netns=netns.ns_a)[0]
        )
        held.stdin.close()
        held.wait(timeout=10)
        time.sleep(0.3)
        snap = c.snapshot()
    with netns.in_a():
        frames = sniffer.stop()

    pids = {"pbt-server": server.pid, "pbt-held": held.pid}
    S, C = cg.rel(srv_dir), cg.rel(cli_dir)
    client_pid = cg.pid_of("pbt-client")
    for cp, name, pid in ((held_port, "pbt-held", held.pid), (cport, "pbt-client", client_pid)):
        tcp = [f for f in rows(snap) if f["proto"] == "TCP" and cp in (f["srcPort"], f["dstPort"])]
        # the client's socket: its process; the server's end: the server
        for f in tcp:
            if (
                f["srcPort"] == cp
                and f["direction"] == "egress"
                or f["dstPort"] == cp
                and f["direction"] == "ingress"
            ):
                assert (f["pid"], f["comm"], f["cgroup"]) == (pid, name, C), f
            else:
                assert (f["pid"], f["comm"], f["cgroup"]) == (pids["pbt-server"], "pbt-server", S), f
        got = defaultdict(lambda: [0, 0])
        for f in tcp:
            k = (f["srcIp"], f["dstIp"], 6, f["srcPort"], f["dstPort"], f["direction"])
            got[k][0] += f["packets"]
            got[k][1] += f["bytes"]
        want = {k: v for k, v in _sniffed_ip_flows(frames).items() if cp in (k[3], k[4])}
        assert want and {k: tuple(v) for k, v in got.items()} == want
        # data both ways went through: 1500 or 3000 payload bytes from the client
        sent = sum(v[1] for k, v in want.items() if k[3] == cp and k[-1] == "egress")
        assert sent > (1500 if name == "pbt-held" else 3000)
    ev = c.status["owner_events"]
    assert ev["inherited"] >= 1  # the new connection took the listener's owner


def test_udp_server_started_before_the_collector_is_attributed(cg: TestCgroup, netns: NetnsPair):
    sink_dir = cg.child("sink")
    sink = cg.worker(sink_dir, "pbt-early", "udp-sink", "4", "0", netns=netns.ns_a)
    port = int(sink.stdout.readline().split()[1])
    with Collector(mode="cgroup", cgroup=cg.root) as c:
        assert c.status["start_scan"]["owned"] == 1
        sp = int(
            cg.run(cg.child("x"), "pbt-late", "udp-send", netns.A4, str(port), "6", "40", netns=netns.ns_a)[0]
        )
        time.sleep(0.1)
        snap = c.snapshot()
    got = by_owner(snap, lambda f: f["srcPort"] == sp)
    assert got[(sink.pid, "pbt-early", cg.rel(sink_dir), "ingress")] == (6, 6 * (IP4 + UDP + 40))


def test_socket_shared_across_fork_never_carries_a_wrong_pid(cg: TestCgroup, netns: NetnsPair):
    sink = cg.worker(cg.child("sink"), "pbt-sink", "udp-sink", "4", "0", netns=netns.ns_a)
    port = int(sink.stdout.readline().split()[1])
    d = cg.child("forker")
    with Collector(mode="cgroup", cgroup=cg.root) as c:
        sp, parent, child = map(
            int, cg.run(d, "pbt-forker", "fork-send", netns.A4, str(port), "4", "20", netns=netns.ns_a)
        )
        time.sleep(0.1)
        snap = c.snapshot()
        claims = not kernel_lacks(
            "sock-tracepoints",
            None
            if "send/recv tracepoints" in c.status["owner_sources"]
            else "no sock_send_length/sock_recv_length tracepoints (Linux 6.3+)",
        )
    size = IP4 + UDP + 20
    got = by_owner(snap, lambda f: f["srcPort"] == sp and f["direction"] == "egress")
    assert child not in {f["pid"] for f in rows(snap)}
    # the header's "without owner" counters are the flows without a pid
    none = [f for f in rows(snap) if f["pid"] == 0]
    t = snap.totals
    assert (t.unowned_packets, t.unowned_bytes) == (
        sum(f["packets"] for f in none),
        sum(f["bytes"] for f in none),
    )
    assert t.unowned_packets >= sum(v[0] for k, v in got.items() if k[0] == 0) > 0
    doc = json.loads(snap.to_json())["totals"]
    assert (doc["unownedPackets"], doc["unownedBytes"]) == (t.unowned_packets, t.unowned_bytes)
    if not claims:  # before Linux 6.3 nothing sees the parent use it alone again: no pid after the fork
        assert got == {
            (parent, "pbt-forker", cg.rel(d), "egress"): (4, 4 * size),
            (0, "", cg.rel(d), "egress"): (8, 8 * size),
        }
        return
    # parent alone: its pid. After fork both hold the socket: the child's
    # packets (and the first after the child is gone) have no pid; once the
    # parent is seen using it alone again, its pid.
    assert got == {
        (parent, "pbt-forker", cg.rel(d), "egress"): (4 + 3, 7 * size),
        (0, "", cg.rel(d), "egress"): (1, size),
        (0, "pbt-forker", cg.rel(d), "egress"): (4, 4 * size),
    }


def test_daemonized_socket_passes_to_the_child(cg: TestCgroup, netns: NetnsPair):
    sink = cg.worker(cg.child("sink"), "pbt-sink", "udp-sink", "4", "0", netns=netns.ns_a)
    port = int(sink.stdout.readline().split()[1])
    d = cg.child("daemon")
    with Collector(mode="cgroup", cgroup=cg.root) as c:
        sp, child = map(
            int, cg.run(d, "pbt-daemon", "daemon-send", netns.A4, str(port), "5", "30", netns=netns.ns_a)
        )
        time.sleep(0.1)
        snap = c.snapshot()
        claims = not kernel_lacks(
            "sock-tracepoints",
            None
            if "send/recv tracepoints" in c.status["owner_sources"]
            else "no sock_send_length/sock_recv_length tracepoints (Linux 6.3+)",
        )
    size = IP4 + UDP + 30
    got = by_owner(snap, lambda f: f["srcPort"] == sp and f["direction"] == "egress")
    if not claims:  # before Linux 6.3: the child is never seen claiming it
        assert got == {(0, "", cg.rel(d), "egress"): (5, 5 * size)}
        return
    # the first packet: the socket's creator had forked, so nobody's; then
    # the child, seen using it alone, owns it
    assert got == {
        (0, "", cg.rel(d), "egress"): (1, size),
        (child, "pbt-daemon", cg.rel(d), "egress"): (4, 4 * size),
    }


def test_cgroup_created_after_start_resolves_to_its_path(cg: TestCgroup, netns: NetnsPair):
    sink = cg.worker(cg.child("sink"), "pbt-sink", "udp-sink", "4", "0", netns=netns.ns_a)
    port = int(sink.stdout.readline().split()[1])
    with Collector(mode="cgroup", cgroup=cg.root) as c:
        late = cg.child("late")
        nested = cg.child("late/deeper")
        sp1 = int(cg.run(late, "pbt-l1", "udp-send", netns.A4, str(port), "2", "5", netns=netns.ns_a)[0])
        sp2 = int(cg.run(nested, "pbt-l2", "udp-send", netns.A4, str(port), "3", "5", netns=netns.ns_a)[0])
        time.sleep(0.1)
        # gone before the first snapshot: only the cgroup_mkdir record knows them
        os.rmdir(nested)
        os.rmdir(late)
        snap = c.snapshot()
    a = by_owner(snap, lambda f: f["srcPort"] == sp1 and f["direction"] == "egress")
    b = by_owner(snap, lambda f: f["srcPort"] == sp2 and f["direction"] == "egress")
    assert a == {
        (cg.pid_of("pbt-l1"), "pbt-l1", cg.rel(cg.root) + "/late", "egress"): (2, 2 * (IP4 + UDP + 5))
    }
    assert b == {
        (cg.pid_of("pbt-l2"), "pbt-l2", cg.rel(cg.root) + "/late/deeper", "egress"): (3, 3 * (IP4 + UDP + 5))
    }


def test_root_cgroup_sees_sockets_of_every_cgroup(cg: TestCgroup, netns: NetnsPair):
    sink = cg.worker(cg.child("sink"), "pbt-sink", "udp-sink", "4", "0", netns=netns.ns_a)
    port = int(sink.stdout.readline().split()[1])
    d = cg.child("deep/er")
    with Collector(mode="cgroup", cgroup=cg.mount) as c:
        assert c.status["cgroup"] == "/"
        sp = int(cg.run(d, "pbt-rootseen", "udp-send", netns.A4, str(port), "3", "7", netns=netns.ns_a)[0])
        time.sleep(0.1)
        snap = c.snapshot()
    got = by_owner(snap, lambda f: f["srcPort"] == sp and f["pid"] in (sink.pid, cg.pid_of("pbt-rootseen")))
    assert got == {
        (cg.pid_of("pbt-rootseen"), "pbt-rootseen", cg.rel(d), "egress"): (3, 3 * (IP4 + UDP + 7)),
        (sink.pid, "pbt-sink", cg.rel(cg.root) + "/sink", "ingress"): (3, 3 * (IP4 + UDP + 7)),
    }


# ---- bad paths -------------------------------------------------------------------
def _one_line_error(argv, capsys) -> tuple[int, str]:
    code = cli_main(argv)
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    return code, err.strip()


def test_bad_paths_get_one_line_errors(tmp_path, capsys):
    mnt = cgroup2_mount()
    where = ", ".join(
        m for m, _ in __import__("pktstat_bpf.core.modes.cgroup", fromlist=["x"]).cgroup2_mounts()
    )
    hint = f" (cgroup v2 is mounted at {where})" if where else ""
    missing = str(tmp_path / "nope")
    assert _one_line_error(["-c", missing, "-t", "1s"], capsys) == (
        2,
        f"pktstat-bpf: error: no such cgroup: {missing!r} does not exist{hint}",
    )
    f = tmp_path / "file"
    f.write_text("x")
    assert _one_line_error(["-c", str(f)], capsys) == (
        2,
        f"pktstat-bpf: error: {str(f)!r} is not a directory: give a cgroup v2 directory{hint}",
    )
    assert _one_line_error(["-c", str(tmp_path)], capsys) == (
        2,
        f"pktstat-bpf: error: {str(tmp_path)!r} is not a cgroup v2 directory{hint}",
    )
    if mnt:
        procs = os.path.join(mnt, "cgroup.procs")  # a file on cgroup v2
        code, err = _one_line_error(["-c", procs], capsys)
        assert (code, err) == (
            2,
            f"pktstat-bpf: error: {procs!r} is not a directory: give a cgroup v2 directory{hint}",
        )
    v1 = "/sys/fs/cgroup/memory"
    if os.path.isdir(v1) and mnt and not mnt.startswith(v1):
        assert _one_line_error(["-c", v1], capsys) == (
            2,
            f"pktstat-bpf: error: {v1!r} is not a cgroup v2 directory{hint}",
        )
    assert _one_line_error(["-c", ""], capsys) == (
        2,
        "pktstat-bpf: error: -c/--cgroup needs the path of a cgroup v2 directory",
    )
    assert _one_line_error(["-c", str(tmp_path), "-x"], capsys) == (
        2,
        "pktstat-bpf: error: -x/--xdp and -c/--cgroup are different modes: choose one",
    )
    assert _one_line_error(["-c", str(tmp_path), "-i", "lo"], capsys) == (
        2,
        "pktstat-bpf: error: -c/--cgroup counts sockets, not an interface: drop -i/--iface",
    )


def test_no_cgroup_v2_mounted_is_a_missing_feature(tmp_path):
    from pktstat_bpf.core.errors import FeatureMissingError
    from pktstat_bpf.core.modes.cgroup import resolve_cgroup

    with pytest.raises(FeatureMissingError, match=r"^no cgroup v2 hierarchy is mounted") as e:
        resolve_cgroup(str(tmp_path), mounts=[])
    assert e.value.exit_code == 69
    with pytest.raises(UsageError):
        resolve_cgroup(str(tmp_path / "missing"), mounts=[])


# ---- nothing left behind ------------------------------------------------------------
def _owner_prog_ids() -> set[int]:
    progs = json.loads(sh("bpftool", "prog", "show", "-j").stdout)
    return {p["id"] for p in progs if p.get("name") in OWNER_PROGS}


def test_stop_detaches_everything_and_restart_works(cg: TestCgroup):
    with Collector(mode="cgroup", cgroup=cg.root) as c:
        assert attached_programs(cg.root) == CGROUP_PROGS
        c.stop()
        c.stop()  # idempotent
        assert attached_programs(cg.root) == []
        c.start()
        assert len(attached_programs(cg.root)) == 5
    assert attached_programs(cg.root) == []


def attach_steps() -> int:
    """Links cgroup mode makes: 5 cgroup programs, fork and mkdir tracepoints,
    and the send/recv tracepoints where the kernel has them."""
    return 7 if kernel_lacks("sock-tracepoints", sock_tracepoints_missing()) else 9


@pytest.mark.parametrize("fail_at", range(9))
def test_failure_mid_attach_rolls_back(cg: TestCgroup, fail_at, monkeypatch):
    before = _owner_prog_ids()
    monkeypatch.setenv("PKTSTAT_BPF_TEST_FAULTS", f"fail_attach_at={fail_at}")
    c = Collector(mode="cgroup", cgroup=cg.root)
    if fail_at >= attach_steps():  # a step this kernel does not have: the attach completes
        c.start()
        assert len(attached_programs(cg.root)) == 5
        c.close()
        assert attached_programs(cg.root) == []
        return
    with pytest.raises(PktstatError, match="injected test fault"):
        c.start()
    assert attached_programs(cg.root) == []
    c.close()
    del c
    assert wait_for(lambda: _owner_prog_ids() <= before, timeout=5)


def test_sigkill_leaves_nothing_attached(cg: TestCgroup):
    before = _owner_prog_ids()
    p = subprocess.Popen(
        [sys.executable, "-m", "pktstat_bpf", "-c", cg.root, "-t", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = p.stderr.readline()
    assert f"counting on {cg.root} via cgroup_skb" in line, line
    assert len(attached_programs(cg.root)) == 5
    mine = _owner_prog_ids() - before
    assert len(mine) >= attach_steps()  # five cgroup programs, and the fork/mkdir(/send/recv) tracepoints
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert wait_for(lambda: attached_programs(cg.root) == [], timeout=10)
    assert wait_for(lambda: not (_owner_prog_ids() & mine), timeout=10)


def test_cli_json_and_text_show_owners(cg: TestCgroup, netns: NetnsPair):
    sink = cg.worker(cg.child("sink"), "pbt-sink", "udp-sink", "4", "0", netns=netns.ns_a)
    port = int(sink.stdout.readline().split()[1])
    evil = "pbt\x1b[31mred"  # a comm with a terminal escape
    for as_json in (True, False):
        p = subprocess.Popen(
            [sys.executable, "-m", "pktstat_bpf", "-c", cg.root, "-t", "0", *(["-j"] if as_json else [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert "via cgroup_skb" in p.stderr.readline()
        sp = int(
            cg.run(cg.child("send"), evil, "udp-send", netns.A4, str(port), "2", "9", netns=netns.ns_a)[0]
        )
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=15)
        assert p.returncode == 0, err
        sender = cg.pid_of(evil)
        if as_json:
            doc = json.loads(out)
            assert (
                doc["mode"] == "cgroup" and doc["cgroup"] == cg.rel(cg.root) and doc["attach"] == "cgroup_skb"
            )
            (f,) = [f for f in doc["flows"] if f["srcPort"] == sp and f["direction"] == "egress"]
            assert (f["pid"], f["comm"], f["cgroup"]) == (sender, evil[:15], cg.rel(cg.root) + "/send")
            assert (f["packets"], f["bytes"]) == (2, 2 * (IP4 + UDP + 9))
            assert "\\u001b[31m" in out and "\x1b" not in out
        else:
            assert out.splitlines()[0].startswith(f"# cgroup on {cg.rel(cg.root)} (cgroup_skb), ")
            (line,) = [
                ln for ln in out.splitlines() if f"src: {netns.A4}:{sp}," in ln and f"pid: {sender}," in ln
            ]
            assert line.endswith(f", pid: {sender}, comm: pbt\\x1b[31mred, cgroup: {cg.rel(cg.root)}/send")
            assert "\x1b" not in out


# ---- path resolution (no privilege needed) -------------------------------------------
def test_mountinfo_parsing_and_hybrid_hosts(tmp_path):
    from pktstat_bpf.core.modes.cgroup import cgroup2_mounts, resolve_cgroup

    mnt = tmp_path / "cg v2"
    (mnt / "a b" / "c").mkdir(parents=True)
    info = tmp_path / "mountinfo"
    info.write_text(
        "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
        "35 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        f"40 30 0:32 / {str(mnt).replace(' ', chr(92) + '040')} rw shared:9 - cgroup2 cgroup2 rw\n"
        f"41 30 0:33 /docker/abc {tmp_path}/ctr rw - cgroup2 cgroup2 rw\n"
    )
    mounts = cgroup2_mounts(str(info))
    assert mounts == [(str(mnt), "/"), (f"{tmp_path}/ctr", "/docker/abc")]
    assert resolve_cgroup(str(mnt / "a b" / "c"), mounts) == (str(mnt), "/a b/c", "/")
    assert resolve_cgroup(str(mnt), mounts) == (str(mnt), "/", "/")
    with pytest.raises(UsageError, match=r"is not a cgroup v2 directory \(cgroup v2 is mounted at "):
        resolve_cgroup(str(tmp_path), mounts)


def test_sock_diag_reports_cookie_inode_and_cgroup_of_a_worker_socket(cg: TestCgroup, netns: NetnsPair):
    """The scan's raw material: sock_diag, read in the worker's namespace,
    names the socket's inode (the one /proc/<pid>/fd links to) and cgroup."""
    from _bench import bench_core

    d = cg.child("diag")
    sink = cg.worker(d, "pbt-diag", "udp-sink", "4", "0", netns=netns.ns_a)
    port = int(sink.stdout.readline().split()[1])
    links = [os.readlink(f"/proc/{sink.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{sink.pid}/fd")]
    (inode,) = [int(ln[len("socket:[") : -1]) for ln in links if ln.startswith("socket:[")]
    (s,) = [s for s in bench_core._diag_sockets() if s["inode"] == inode]
    want = (bench_core.cgroup_id_of(d), port, 17, 2)
    assert (s["cgroup_id"], s["sport"], s["protocol"], s["family"]) == want
    assert s["has_cgroup"] and s["cookie"] and s["netns_cookie"]
