"""cgroup.kill of a collector's whole cgroup, in every mode and attach path:
what systemctl stop (KillMode=control-group), docker kill, a pod deletion
and an OOM kill do. The collector and the legacy-tc janitor die together.

Links (TCX, XDP, cgroup, tracepoints) go with the process. Legacy tc
filters and the clsact qdisc stay, with the collector's record of them in
/run/pktstat-bpf; the next run on that network namespace, in any mode,
removes them at its start (and nothing else: an administrator's clsact
qdisc and u32 filters stay as they were). Kernel state is read with tc,
bpftool and bpf() (tests/kstate.py), never through the engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cgroups import TestCgroup, cgroup2_mount
from kstate import (
    add_other_bpf_tc_filter,
    add_other_tc_filters,
    alive,
    held,
    janitors_of,
    nothing_alive,
    still_alive,
    xdp_prog,
)
from netns import NetnsPair, wait_for

CLAIM_DIR = Path("/run/pktstat-bpf")
SWEPT = "pktstat-bpf: removed what 1 legacy tc attachment(s) of pktstat-bpf runs that died left behind\n"

#: mode -> (CLI flags, the attach path the status line names, how to enter namespace A)
MODES = {
    "legacy": (["-i", "va", "--tc-attach", "legacy"], "tc-legacy", "ip"),
    "tcx": (["-i", "va", "--tc-attach", "tcx"], "tcx", "ip"),
    "xdp": (["-i", "va", "-x"], "xdp-native", "ip"),
    "cgroup": (["-c", "{target}"], "cgroup_skb", "nsenter"),
    "process": (["-k"], "tracepoint", "nsenter"),
}


@pytest.fixture
def world(bpf):
    if cgroup2_mount() is None:
        pytest.skip("no writable cgroup v2 mount")
    ns, cg = NetnsPair(ipv6=False), TestCgroup()
    try:
        yield ns, cg
    finally:
        cg.destroy()
        ns.destroy()


def _argv(ns: NetnsPair, cg: TestCgroup, mode: str, *extra: str) -> list[str]:
    """The CLI in namespace A: `ip netns exec` where it needs va's sysfs,
    nsenter (which keeps this /sys, so cgroup paths resolve) for the modes
    that name no interface."""
    flags, _, enter = MODES[mode]
    flags = [f.format(target=cg.child("target")) for f in flags]
    prefix = (
        ["ip", "netns", "exec", ns.ns_a] if enter == "ip" else ["nsenter", f"--net=/var/run/netns/{ns.ns_a}"]
    )
    return [*prefix, sys.executable, "-m", "pktstat_bpf", *flags, *extra]


def _ours(ns: NetnsPair) -> str:
    """Namespace A's record and claim files (pktstat-bpf's, for va's netns)."""
    st = os.stat(f"/var/run/netns/{ns.ns_a}")
    tag = f"-{st.st_dev}-{st.st_ino}-"
    return " ".join(sorted(p.name.split(tag)[0] for p in CLAIM_DIR.glob("*") if tag in p.name))


def _tc_prog_ids(ns: NetnsPair) -> set[int]:
    s = ns.tc_state()
    return {int(w.split()[0]) for k in ("ingress", "egress") for w in s[k].split(" id ")[1:]}


def _state(ns: NetnsPair) -> dict:
    return {**ns.tc_state(), "xdp": xdp_prog(ns), "files": _ours(ns)}


def _killed_run(ns: NetnsPair, cg: TestCgroup, mode: str) -> dict[str, set[int]]:
    """Start `mode` in a cgroup of its own, kill the whole cgroup once it
    counts; the ids of the BPF objects it held."""
    _, attach, _ = MODES[mode]
    run = cg.child("run")
    p = cg.spawn(run, *_argv(ns, cg, mode, "-t", "20s"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = p.stderr.readline()
    assert f" via {attach} " in line, line
    ids = held(p.pid)
    assert ids["prog"] and ids["map"], ids
    Path(run, "cgroup.kill").write_text("1")
    assert p.wait(timeout=10) == -9
    assert wait_for(lambda: Path(run, "cgroup.procs").read_text() == "", timeout=10)  # the janitor too
    return ids


def _later_run(ns: NetnsPair, cg: TestCgroup, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(_argv(ns, cg, mode, "-t", "1s"), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mode", list(MODES))
def test_cgroup_kill_leaves_only_legacy_filters_and_the_next_run_removes_them(world, mode):
    ns, cg = world
    before = _state(ns)
    assert before["files"] == "" and "clsact" not in before["qdisc"]
    ids = _killed_run(ns, cg, mode)
    if mode == "legacy":
        # filters, programs, the qdisc pktstat-bpf made, its claim, and the record naming the filters
        left = _state(ns)
        assert "clsact" in left["qdisc"] and "tc_ingress" in left["ingress"] and "tc_egress" in left["egress"]
        assert left["files"] == "clsact legacy"
        attached = _tc_prog_ids(ns)
        assert len(attached) == 2 and attached <= ids["prog"] and all(alive("prog", i) for i in attached)
        (record,) = CLAIM_DIR.glob(f"legacy{_ours_tag(ns)}*")
        lines = record.read_text().splitlines()
        assert lines[0] == "va" and {int(f.split()[3]) for f in lines[2:]} == attached
        assert [f.split()[0] for f in lines[2:]] == ["ingress", "egress"]
        assert not janitors_of(attached)
    else:  # everything went with the process
        assert wait_for(lambda: nothing_alive(ids), timeout=10), still_alive(ids)
        assert _state(ns) == before
    r = _later_run(ns, cg, mode)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(SWEPT) == (mode == "legacy"), r.stderr
    assert wait_for(lambda: nothing_alive(ids), timeout=10), still_alive(ids)
    assert _state(ns) == before


def _ours_tag(ns: NetnsPair) -> str:
    st = os.stat(f"/var/run/netns/{ns.ns_a}")
    return f"-{st.st_dev}-{st.st_ino}-"


@pytest.mark.parametrize("pre", ["clean", "admin"], ids=["no-qdisc", "admin-qdisc"])
@pytest.mark.parametrize("later", list(MODES))
def test_a_later_run_in_any_mode_removes_what_a_killed_legacy_run_left(world, later, pre):
    """A legacy run killed with its cgroup; the next run, in any mode, starts
    by removing its filters and the qdisc it made, and then counts and exits
    0. An administrator's clsact qdisc and u32 filters stay as they were."""
    ns, cg = world
    if pre == "admin":  # and a BPF filter of someone else's, named like ours
        add_other_tc_filters(ns)
        add_other_bpf_tc_filter(ns, "ingress")
        assert "tc_ingress" in ns.tc_state()["ingress"]
    before = _state(ns)
    ids = _killed_run(ns, cg, "legacy")
    left = _state(ns)
    assert len(_tc_prog_ids(ns) & ids["prog"]) == 2 and "tc_egress" in left["egress"]
    assert left["files"] == ("legacy" if pre == "admin" else "clsact legacy")  # no claim on the admin's qdisc
    r = _later_run(ns, cg, later)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(SWEPT), r.stderr
    assert f" via {MODES[later][1]} " in r.stderr
    assert wait_for(lambda: nothing_alive(ids), timeout=10), still_alive(ids)
    after = _state(ns)
    assert after == before
    assert ("u32" in after["ingress"] and "clsact" in after["qdisc"]) == (pre == "admin")


def test_a_live_legacy_collector_is_left_alone(world):
    """The sweep of a run that starts while another legacy collector counts
    on the interface leaves that one's filters, qdisc and record alone."""
    ns, cg = world
    p = subprocess.Popen(
        _argv(ns, cg, "legacy", "-t", "20s"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert " via tc-legacy " in p.stderr.readline()
        attached = _tc_prog_ids(ns)
        files = _ours(ns)
        r = _later_run(ns, cg, "xdp")
        assert r.returncode == 0 and not r.stderr.startswith(SWEPT), r.stderr
        assert _tc_prog_ids(ns) == attached and len(attached) == 2
        assert _ours(ns) == files == "clsact legacy"
    finally:
        p.kill()
        p.wait()


def test_sigkill_of_the_collector_alone_is_undone_by_its_janitor(world):
    """SIGKILL of the legacy collector alone: its janitor (alive) removes the
    filters, the qdisc, the claim and the record; a later run finds nothing
    to remove and says nothing about it."""
    ns, cg = world
    before = _state(ns)
    p = subprocess.Popen(
        _argv(ns, cg, "legacy", "-t", "20s"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert " via tc-legacy " in p.stderr.readline()
        ids = held(p.pid)
        attached = _tc_prog_ids(ns)
        assert len(attached) == 2 and janitors_of(attached)
    finally:
        p.kill()
        p.wait()
    assert wait_for(lambda: not janitors_of(attached), timeout=10)
    assert wait_for(lambda: nothing_alive(ids), timeout=10), still_alive(ids)
    assert {k: v for k, v in _state(ns).items() if k != "files"} == {
        k: v for k, v in before.items() if k != "files"
    }
    r = _later_run(ns, cg, "tcx")
    assert r.returncode == 0 and r.stderr.startswith("pktstat-bpf: counting on va via tcx "), r.stderr
    assert _state(ns) == before
