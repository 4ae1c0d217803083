"""Nothing left behind, in every mode that attaches (TC through TCX and
legacy tc, XDP, cgroup), however a run ends: a normal exit, Ctrl-C
(SIGINT), SIGTERM, SIGKILL of the CLI, an exception inside a
``with Collector(...)`` block, a failure halfway through attaching.
Afterwards no program, link, filter, qdisc or map of ours exists, and what
was attached before (an administrator's clsact qdisc and u32 filters,
another XDP program, another cgroup program) is exactly as it was.

Our objects are identified by the ids the run held (read from the CLI's
/proc/<pid>/fdinfo while it ran, or from this process's), never by a
machine-wide listing: other tests may run pktstat-bpf at the same time.
The table MODES drives every test; a new mode adds a row.
"""

from __future__ import annotations

import contextlib
import gc
import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from cgroups import TestCgroup, cgroup2_mount
from kstate import (
    add_other_tc_filters,
    attach_other_cgroup_skb,
    attach_other_xdp,
    cgroup_programs,
    held,
    janitors_of,
    minus,
    nothing_alive,
    still_alive,
    xdp_prog,
)
from netns import NetnsPair, setns, sh, wait_for
from pktstat_bpf import Collector, PktstatError
from traffic import ETH, ICMP, IP4, UDP, ping, send_udp

OUR_PROGRAMS = {
    "tc_ingress",
    "tc_egress",
    "xdp_count",
    "owner_skb_egress",
    "owner_skb_ingress",
    "owner_sock_create",
    "owner_sock_release",
    "owner_sockops",
    "proc_tp_recvmsg4",
    "proc_tp_recvmsg6",
}


# ---- the modes -----------------------------------------------------------------------
@dataclass
class Target:
    """Where one mode attaches in a test: the CLI flags and Collector options
    that name it, the context the calling thread must be in, and what is
    attached there (`state`, compared before and after)."""

    cli: list[str]
    options: dict[str, Any]
    place: Callable[[], Any]
    state: Callable[[], Any]
    ours: Callable[[Any], bool]
    exec_prefix: list[str] = field(default_factory=list)

    def argv(self, *args: str) -> list[str]:
        return [*self.exec_prefix, sys.executable, "-m", "pktstat_bpf", *self.cli, *args]


def _net_state(ns: NetnsPair) -> dict[str, Any]:
    return {**ns.tc_state(), "xdp": xdp_prog(ns)}


def _net_ours(state: dict[str, Any]) -> bool:
    text = " ".join(str(v) for v in state.values())
    return any(name in text for name in OUR_PROGRAMS)


def _net_target(ns: NetnsPair, cli: list[str], options: dict[str, Any]) -> Target:
    return Target(
        cli=["-i", "va", *cli],
        options={"iface": "va", **options},
        place=ns.in_a,
        state=lambda: _net_state(ns),
        ours=_net_ours,
        exec_prefix=["ip", "netns", "exec", ns.ns_a],
    )


def _cgroup_target(cg: TestCgroup) -> Target:
    return Target(
        cli=["-c", cg.root],
        options={"mode": "cgroup", "cgroup": cg.root},
        place=contextlib.nullcontext,
        state=lambda: cgroup_programs(cg.root),
        ours=lambda progs: any(n in OUR_PROGRAMS for _, n in progs),
    )


def _process_target(_unused: Any) -> Target:
    """Process mode attaches to tracepoints (held as links) and, with the
    tracepoint backend, to the cgroup v2 root (cgroup/recvmsg4, recvmsg6)."""
    from pktstat_bpf.core.modes.process import cgroup_mount

    root = cgroup_mount()[0]
    return Target(
        cli=["-k"],
        options={"mode": "process"},
        place=contextlib.nullcontext,
        state=lambda: cgroup_programs(root) if root else [],
        ours=lambda progs: any(n in OUR_PROGRAMS for _, n in progs) or not root,
    )


@dataclass(frozen=True)
class Mode:
    """One way of attaching. `fail_at`: the fail_attach_at step (the test seam,
    PKTSTAT_BPF_TEST_FAULTS) that fails
    with something of ours already attached (TC: egress after ingress; XDP:
    just after the link; cgroup: cgroup_skb ingress after egress)."""

    name: str
    attach: str
    fail_at: int
    make: Callable[[Any, str], Target]
    needs: str = "netns"  # or "cgroup"


def _foreign_net(ns: NetnsPair, with_xdp: bool) -> None:
    add_other_tc_filters(ns)
    if with_xdp:
        attach_other_xdp(ns, "xdpgeneric")


def _tc(path: str) -> Callable[[Any, str], Target]:
    return lambda ns, pre: _net_target(ns, ["--tc-attach", path], {"tc_attach": path})


MODES = {
    "tcx": Mode("tcx", "tcx", 1, _tc("tcx")),
    "legacy": Mode("legacy", "tc-legacy", 1, _tc("legacy")),
    "xdp": Mode("xdp", "xdp-native", 1, lambda ns, pre: _net_target(ns, ["-x"], {"mode": "xdp"})),
    "cgroup": Mode("cgroup", "cgroup_skb", 8, lambda cg, pre: _cgroup_target(cg), needs="cgroup"),
    "process": Mode("process", "tracepoint", 5, lambda _, pre: _process_target(_), needs="nothing"),
}
SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}
#: What is attached before the run: "clean" (nothing), or "foreign": an
#: administrator's clsact qdisc with u32 filters on both directions (and,
#: for TC, another XDP program), or another cgroup_skb program.
PRE = {
    "tcx": ["clean", "foreign"],
    "legacy": ["clean", "foreign"],
    "xdp": ["foreign"],
    "cgroup": ["foreign"],
    "process": ["clean"],
}  # process mode: nothing of anyone else's at its hooks to disturb
CASES = [(m, p) for m in MODES for p in PRE[m]]


@pytest.fixture
def env(request, bpf):
    """(Mode, Target) for the test's parameters, with the pre-existing state set up."""
    mode_name, pre = request.param
    mode = MODES[mode_name]
    if mode.needs == "cgroup":
        if cgroup2_mount() is None:
            pytest.skip("no writable cgroup v2 mount")
        where = TestCgroup()
        if pre == "foreign":
            attach_other_cgroup_skb(where.root)
    elif mode.needs == "nothing":
        where = contextlib.nullcontext()
        where.destroy = lambda: None  # type: ignore[attr-defined]
    else:
        where = NetnsPair(ipv6=False)
        if pre == "foreign":
            _foreign_net(where, with_xdp=mode_name != "xdp")
    try:
        yield mode, mode.make(where, pre)
    finally:
        where.destroy()


def ids_of(request) -> str:
    return "-".join(request)


def _assert_left_as_before(target: Target, before: Any, ids: dict[str, set[int]]) -> None:
    assert wait_for(lambda: nothing_alive(ids), timeout=10), f"still alive: {still_alive(ids)}"
    after = target.state()
    assert not target.ours(after), after
    assert after == before


# ---- the CLI: normal exit, SIGINT, SIGTERM, SIGKILL ------------------------------------------
@pytest.mark.parametrize("env", CASES, indirect=True, ids=ids_of)
@pytest.mark.parametrize("ending", ["exit", "sigint", "sigterm", "sigkill"])
def test_cli_leaves_nothing_behind(env, ending):
    mode, target = env
    before = target.state()
    argv = target.argv("-t", "1500ms" if ending == "exit" else "0")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert f" via {mode.attach} " in line, line + p.stderr.read()
        during = held(p.pid)
        ours = target.state()
        assert target.ours(ours), ours
        assert during["prog"] and during["map"] and (during["link"] or mode.name == "legacy"), during
        if ending != "exit":
            p.send_signal(SIGNALS[ending])
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    if ending == "sigkill":
        assert p.returncode == -signal.SIGKILL
    else:
        assert (p.returncode, err) == (0, ""), err
        assert out.startswith(f"# {'tc' if mode.name in ('tcx', 'legacy') else mode.name} "), out
    _assert_left_as_before(target, before, during)
    if mode.name == "legacy":  # the janitor that removes filters after SIGKILL is gone too
        assert wait_for(lambda: not janitors_of(during["prog"]), timeout=10)


# ---- the Python API: an exception in the block, a failure halfway through attaching ------------
@pytest.mark.parametrize("env", CASES, indirect=True, ids=ids_of)
def test_exception_inside_with_collector_leaves_nothing_behind(env):
    _, target = env
    before, mine_before = target.state(), held()
    with target.place():
        with pytest.raises(RuntimeError, match="^boom$"):
            with Collector(**target.options) as c:
                during = minus(held(), mine_before)
                assert target.ours(target.state())
                raise RuntimeError("boom")
    assert not target.ours(target.state())
    assert target.state() == before
    # the maps stay readable until the collector goes (documented), then go with it
    assert c.snapshot().totals.conserved
    assert during["prog"] and during["map"]
    del c
    gc.collect()
    _assert_left_as_before(target, before, during)


@pytest.mark.parametrize("env", CASES, indirect=True, ids=ids_of)
def test_failure_halfway_through_attaching_leaves_nothing_behind(env, monkeypatch):
    mode, target = env
    before, mine_before = target.state(), held()
    with target.place(), monkeypatch.context() as m:
        m.setenv("PKTSTAT_BPF_TEST_FAULTS", f"fail_attach_at={mode.fail_at}")
        c = Collector(**target.options)
        with pytest.raises(PktstatError, match=r"injected test fault"):
            c.start()
        assert not c.running and c.status["attach"] == ""
    # nothing attached, and the programs and maps that start() loaded are freed at once
    assert minus(held(), mine_before) == {"prog": set(), "map": set(), "link": set()}
    assert target.state() == before
    # a new collector starts cleanly afterwards
    with target.place():
        c = Collector(**target.options)
        with c:
            assert c.status["attach"] == mode.attach
            assert target.ours(target.state())
        c.close()
    assert target.state() == before


# ---- two collectors at once -----------------------------------------------------------------------
def _flows(doc: dict) -> dict:
    keys = ("srcIp", "dstIp", "proto", "srcPort", "dstPort", "direction")
    return {tuple(f[k] for k in keys): (f["packets"], f["bytes"]) for f in doc["flows"]}


@pytest.mark.parametrize(
    "paths", [("tcx", "legacy"), ("legacy", "tcx"), ("tcx", "tcx"), ("legacy", "legacy")]
)
def test_two_cli_collectors_on_one_interface_both_see_all_traffic(netns_v4only: NetnsPair, paths):
    """Two pktstat-bpf processes on one interface at once, through TCX and
    legacy tc (each first or second), count the same traffic exactly, both
    directions; afterwards nothing of either is left."""
    ns = netns_v4only
    before = _net_state(ns)
    peer = ns.peer("udp", "5301")
    procs = []
    try:
        for path in paths:
            p = ns.exec_a(
                sys.executable,
                "-m",
                "pktstat_bpf",
                "-i",
                "va",
                "--tc-attach",
                path,
                "-t",
                "0",
                "-j",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append(p)
            assert f"via {'tcx' if path == 'tcx' else 'tc-legacy'} " in p.stderr.readline()
        ids = [held(p.pid) for p in procs]
        with ns.in_a():
            sp = send_udp(ns.B4, 5301, 11, 60)
            assert ping(ns.B4, 5, 32) == 5
        time.sleep(0.2)
        for p in procs:
            p.send_signal(signal.SIGINT)
        docs = []
        for p in procs:
            out, err = p.communicate(timeout=30)
            assert (p.returncode, err) == (0, ""), err
            docs.append(json.loads(out))
    finally:
        peer.kill()
        for p in procs:
            if p.poll() is None:
                p.kill()
    want = {
        (ns.A4, ns.B4, "UDP", sp, 5301, "egress"): (11, 11 * (ETH + IP4 + UDP + 60)),
        (ns.A4, ns.B4, "ICMPv4", 8, 0, "egress"): (5, 5 * (ETH + IP4 + ICMP + 32)),
        (ns.B4, ns.A4, "ICMPv4", 0, 0, "ingress"): (5, 5 * (ETH + IP4 + ICMP + 32)),
    }
    for doc in docs:
        flows = _flows(doc)
        assert {k: flows[k] for k in want} == want
        t = doc["totals"]
        assert t["packets"] == t["flowPackets"] + t["unparsedPackets"] + t["overflowPackets"]
    for i in ids:
        assert wait_for(lambda i=i: nothing_alive(i), timeout=10)
    assert _net_state(ns) == before


def test_two_legacy_collectors_of_one_process_leave_no_qdisc(netns_v4only: NetnsPair):
    """The collector that created the clsact qdisc stops first, while the
    other's filters are still on it: the qdisc goes with the last of them."""
    ns = netns_v4only
    with ns.in_a():
        first = Collector("va", tc_attach="legacy").start()
        second = Collector("va", tc_attach="legacy").start()
        assert first.status["created_qdisc"] and second.status["created_qdisc"]  # one owner, shared
        first.stop()
        assert "clsact" in ns.tc_state()["qdisc"] and "tc_ingress" in ns.tc_state()["ingress"]
        second.stop()
    assert not ns.ours_attached()
    assert "clsact" not in ns.tc_state()["qdisc"]


def _legacy_cli(ns: NetnsPair) -> subprocess.Popen:
    p = ns.exec_a(
        sys.executable,
        "-m",
        "pktstat_bpf",
        "-i",
        "va",
        "--tc-attach",
        "legacy",
        "-t",
        "0",
        "-j",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "via tc-legacy " in p.stderr.readline()
    return p


def _filters_of(ns: NetnsPair, procs: list[subprocess.Popen]) -> dict[int, set[int]]:
    """The tc programs each process holds that are attached on va."""
    state = " ".join(ns.tc_state().values())
    return {p.pid: {i for i in held(p.pid)["prog"] if f"id {i} " in state} for p in procs}


@pytest.mark.parametrize("end", ["sigint", "sigkill"])
@pytest.mark.parametrize("qdisc_before", [False, True], ids=["no-qdisc", "admin-qdisc"])
def test_two_legacy_processes_the_maker_of_the_qdisc_ending_first(netns_v4only: NetnsPair, end, qdisc_before):
    """Two pktstat-bpf processes on the legacy path on one interface. The
    first (which makes the clsact qdisc, where there is none) ends first,
    cleanly or killed and cleaned up by its janitor: the other's filters and
    the qdisc stay. When the other stops, the qdisc goes too, unless an
    administrator had made it: then it and its filters stay as they were."""
    ns = netns_v4only
    if qdisc_before:
        add_other_tc_filters(ns)
    before = _net_state(ns)
    maker = _legacy_cli(ns)
    other = _legacy_cli(ns)
    try:
        ids = _filters_of(ns, [maker, other])
        assert all(len(v) == 2 for v in ids.values()), ids  # ingress and egress each
        if end == "sigint":
            maker.send_signal(signal.SIGINT)
            assert maker.wait(timeout=30) == 0
        else:
            maker.kill()
            maker.wait(timeout=30)
        gone = lambda: all(f"id {i} " not in " ".join(ns.tc_state().values()) for i in ids[maker.pid])  # noqa: E731
        assert wait_for(gone, timeout=10)
        assert _filters_of(ns, [other])[other.pid] == ids[other.pid]
        assert "clsact" in ns.tc_state()["qdisc"]
        other.send_signal(signal.SIGINT)
        assert other.wait(timeout=30) == 0
    finally:
        for p in (maker, other):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert wait_for(lambda: _net_state(ns) == before, timeout=10), (_net_state(ns), before)
    assert ("clsact" in before["qdisc"]) == qdisc_before


def test_stop_from_another_namespace_undoes_the_attach_where_it_was_made(netns_v4only: NetnsPair):
    """A legacy collector stopped from a thread in another network namespace
    removes its own filters and qdisc, and leaves alone the interface that
    has the same ifindex there (with an empty clsact qdisc of its own)."""
    ns = netns_v4only
    decoy = f"pbtD{ns.ns_a[4:]}"
    with ns.in_a():
        index = socket.if_nametoindex("va")
    sh("ip", "netns", "add", decoy)
    try:
        sh(
            "ip",
            "link",
            "add",
            "vx",
            "index",
            str(index),
            "type",
            "veth",
            "peer",
            "name",
            "vy",
            "index",
            str(index + 100),
            netns=decoy,
        )
        sh("tc", "qdisc", "add", "dev", "vx", "clsact", netns=decoy)
        with ns.in_a():
            c = Collector("va", tc_attach="legacy").start()
        assert "tc_ingress" in ns.tc_state()["ingress"]
        with open("/proc/thread-self/ns/net") as here, open(f"/var/run/netns/{decoy}") as there:
            setns(there.fileno())
            try:
                c.stop()
            finally:
                setns(here.fileno())
        assert "clsact" in sh("tc", "qdisc", "show", "dev", "vx", netns=decoy).stdout
        assert not ns.ours_attached()
        assert "clsact" not in ns.tc_state()["qdisc"]
    finally:
        sh("ip", "netns", "del", decoy, check=False)
