"""Draining (issue 16): what a drain costs, and what the two-sided table
costs a packet.

Drain: a TC collector's maps (loaded, never attached) with n active flows on
every CPU (10k, 100k, 1M), in rotated rounds: the raw read (one
bpf_map_lookup_batch walk of the map, no per-CPU sums, no records: the floor
of any reader) against a drain of the same n flows (flip the side, wait for
the programs through drain_sync, lookup_and_delete_batch, per-CPU sums,
records) and the drain with the lifetime-table update of the same n flows
(all of them already in the table: the steady state of a busy interval).
Goals: drain <= 1.3x the raw read, drain + table <= 1.5x.

Per packet: one hot IPv4 TCP flow through tc_ingress by BPF_PROG_TEST_RUN,
ours (the installed object: one read of flow_side, the side's counters, the
side's flow map from flow_sides) against the same program as it was before draining (src/bpf at
BEFORE_COMMIT, compiled here with the same flags), the alternative selection
(the same tc.bpf.c built with PKTSTAT_BENCH_SIDE_BRANCH: a branch between
the two named side maps instead of the side's map from the ARRAY_OF_MAPS
flow_sides) and the lean counter, each as the median difference to the empty program of the
same rounds. Goal: ours within +2 ns of before.
"""

from __future__ import annotations

import gc
import shutil
import statistics
from pathlib import Path
from typing import Any

from _bench import (
    OUT,
    SRC_BPF,
    bench_core,
    bench_object,
    commit_object,
    compiled,
    median_diff,
    package_object,
    ratio,
    root_reason,
    rotated_rounds,
    tcp_v4,
)
from bench_snapshot import prefill

SIZES = (10_000, 100_000, 1 << 20)
QUICK_SIZES = (10_000,)
ROUNDS = 5
BEFORE_COMMIT = "167c28c"  # the last commit before the two-sided tables
REPEAT = 200_000


def _drain_case(n: int, rounds: int) -> dict[str, Any]:
    from pktstat_bpf import _core

    ncpu = bench_core.possible_cpus()
    col = _core.TcCollector(1, max_entries=n)  # loaded only: its maps, never attached
    col.set_flow_limits(idle_timeout_ns=0, active_timeout_ns=0, max_flows=max(n, 1))
    fd = bench_core._bench_flows_fd(col)  # side 0: what a first drain (and every other one) reads
    parts: dict[str, list[float]] = {"wait": [], "read": [], "fold": []}

    def fill() -> None:
        prefill(fd, n, ncpu)

    fill()
    col.drain(timeouts=False)  # the lifetime table now holds the n flows
    col.drain(timeouts=False)  # back to side 0

    def measure(kind: str) -> float:
        fill()
        gc.collect()
        if kind == "raw":
            res = bench_core._bench_lookup_batch(fd)
            assert res["count"] == n, res
            col.drain(timeouts=False)  # empty side 0 again, keep the sides in step
            col.drain(timeouts=False)
            return res["seconds"]
        iv = col.drain(timeouts=False)
        assert len(iv.records) == n and int(iv.records["total_packets"].sum()) > 0, len(iv.records)
        col.drain(timeouts=False)  # side 1 (empty) back to side 0
        parts["wait"].append(iv.wait_ns / 1e9)
        parts["read"].append(iv.read_ns / 1e9)
        parts["fold"].append(iv.fold_ns / 1e9)
        return (iv.wait_ns + iv.read_ns + iv.fold_ns) / 1e9

    r = rotated_rounds(("raw", "drain"), measure, rounds)
    raw = statistics.median(r["raw"])
    wait, read, fold = (statistics.median(parts[k]) for k in ("wait", "read", "fold"))
    return {
        "flows": n,
        "raw_lookup_batch_ms": round(raw * 1e3, 2),
        "wait_ms": round(wait * 1e3, 2),
        "read_ms": round(read * 1e3, 2),
        "fold_ms": round(fold * 1e3, 2),
        "drain_ratio": ratio(read, raw),
        "drain_wait_ratio": ratio(wait + read, raw),
        "interval_ratio": ratio(read + fold, raw),
    }


def _before_object() -> Path:
    """tc.bpf.o as src/bpf was at BEFORE_COMMIT."""
    return commit_object(BEFORE_COMMIT, "tc")


def _branch_object() -> Path:
    """The shipped tc.bpf.c with the alternative side selection
    (PKTSTAT_BENCH_SIDE_BRANCH in flow_add.bpf.h)."""
    return compiled(SRC_BPF / "tc.bpf.c", OUT / "tc-side-branch.bpf.o", "-DPKTSTAT_BENCH_SIDE_BRANCH")


def _per_packet(repeat: int, rounds: int) -> dict[str, Any]:

    objs = {
        "floor": bench_core._BenchObject(str(bench_object("floor"))),
        "lean": bench_core._BenchObject(str(bench_object("lean"))),
        "before": bench_core._BenchObject(str(_before_object())),
        "ours": bench_core._BenchObject(str(package_object("tc"))),
        "branch": bench_core._BenchObject(str(_branch_object())),
    }
    names = {
        "floor": "tc_empty",
        "lean": "tc_lean",
        "before": "tc_ingress",
        "ours": "tc_ingress",
        "branch": "tc_ingress",
    }
    fds = {k: o.prog_fd(names[k]) for k, o in objs.items()}
    frame = tcp_v4()
    try:
        r = rotated_rounds(
            tuple(fds),
            lambda k: float(bench_core._bench_test_run(fds[k], frame, repeat)["duration_ns"]),
            rounds,
        )
    finally:
        for o in objs.values():
            o.close()
    lean, before, ours, branch = (median_diff(r[k], r["floor"]) for k in ("lean", "before", "ours", "branch"))
    return {
        "lean_ns": round(lean, 2),
        "before_ns": round(before, 2),
        "ours_ns": round(ours, 2),
        "branch_ns": round(branch, 2),  # a branch between the two named maps (PKTSTAT_BENCH_SIDE_BRANCH)
        "delta_ns": round(ours - before, 2),
    }


def run(quick: bool = False) -> dict[str, Any]:
    reason = root_reason()
    if reason:
        return {"skipped": reason}
    if not shutil.which("git"):
        return {"skipped": "git is needed to build the program as it was before draining"}
    rounds = 3 if quick else ROUNDS
    out: dict[str, Any] = {"per_packet": _per_packet(2_000 if quick else REPEAT, rounds)}
    out["drain"] = [_drain_case(n, rounds) for n in (QUICK_SIZES if quick else SIZES)]
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
