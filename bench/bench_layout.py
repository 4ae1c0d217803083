"""The flow map's layout (issue 16), chosen by figures: today's per-CPU hash
(the shipped tc.bpf.o, `ours`) against one hash shared by the CPUs whose
counts are updated with atomic adds (`shared`: the same tc.bpf.c built with
PKTSTAT_BENCH_SHARED_HASH, src/bpf/flow_add.bpf.h; never shipped), beside
the lean per-CPU counter (bench/bpf/lean.bpf.c), each over the empty program
of its round, by BPF_PROG_TEST_RUN as bench_hotpath.py measures them.

A shared value sits in the hash element itself, where a per-CPU hash keeps a
pointer to per-CPU values: one memory access fewer per packet, which counts
once the table is larger than the caches; it pays a locked add per counter,
and its memory does not grow with the CPU count.

Cases: one hot flow; 64k and 1M flows through bench/bpf/rotate.bpf.c (its
own cost in that case's floor, a rotator calling the empty program), the
maps filled by a first pass; a Zipf(1.1) mix over the 1M flows. Goal (issue
16): at most 0.8x the lean counter at 64k flows, without giving back the
single-flow figure.

Contention (`contention`): a shared value is one cache line every CPU
writes, so a flow whose packets arrive on several CPUs at once makes that
line move between them at each locked add, which no one-CPU run shows. The
same programs driven from every CPU of the machine at once: one thread per
CPU pinned to it, each calling BPF_PROG_TEST_RUN with `repeat` on its
program (the kernel runs it on the calling CPU, migration disabled), all
released together by a barrier (_bench.on_cpus). In the same rotated rounds
each kind also runs on one CPU alone (the CPUs in turn, the others running
the empty program meanwhile): figures are ns per packet per CPU over the
empty program run the same way. Cases: one hot flow (the same program fd
and packet on every CPU), and 64k flows (made in order by a first pass),
each CPU with its own rotator walking them in a random order of its own
(through the rotator's index table): neither in step with the other CPUs
nor with the order the flows' memory was handed out in, so the one-CPU
figure of this case is above the in-order `flows_65536` one.

Runs at once, checked: the kernel's timer counts only the time a test run
was on its CPU (it stops when the loop yields to another task), so on a
shared machine two runs taking turns with other tasks read like two runs
alone. The threads run under SCHED_FIFO (FIFO) for the calls, and a call on
every CPU counts only if its runs were at once for MIN_TOGETHER of their
time at least (a lower bound from the kernel's times and the wall clock,
_together), else it is made again (TOGETHER_TRIES); `together_min` is the
least of the calls kept. Where the hypervisor puts the vCPUs matters too:
close together (a round trip of tens of ns, most likely one core's two
threads) they share their caches and the shared layout's contention all but
vanishes. So before each call on every CPU the first and the last CPU pass
a flag back and forth (C++, plain spinning): `*_round_trip_ns`, beside
`*_rounds_ns`, says where they were in each round.

After the rounds: every run was counted (the conservation counters:
packets, none unparsed or overflowed), each table holds exactly its flows,
and their packets add up to the runs (no atomic add lost under contention).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _bench import (
    OUT,
    SRC_BPF,
    bench_object,
    compiled,
    median_diff,
    on_cpus,
    package_object,
    pinned,
    ratio,
    root_reason,
    rotated_rounds,
    tcp_v4,
)

KINDS = ("floor", "lean", "ours", "shared")
PROGS = {"floor": "tc_empty", "lean": "tc_lean", "ours": "tc_ingress", "shared": "tc_ingress"}
REPEAT, ROUNDS = 200_000, 9
SIZES = (65536, 1 << 20)
ZIPF_S = 1.1
GOAL_64K = 0.8  # shared (or ours) at most this times the lean counter at 64k flows
CONTENDED_FLOWS = 65536  # the many-flow case on every CPU at once
FIFO = 1  # SCHED_FIFO priority of the test-run threads of the contention cases
MIN_TOGETHER, TOGETHER_TRIES = 0.9, 10  # a call on every CPU: at once for this share of it, or again
IDLE_REPEAT = 10_000  # the empty program's runs per call on the CPUs left out of a one-CPU call
REST = 0.1  # after a call under SCHED_FIFO, a rest of this share of its time (see _rest)
ROUND_TRIP_BATCHES = 200  # before each call on every CPU: how far apart the first and last CPU are


def shared_object() -> Path:
    """The shipped tc.bpf.c with one shared hash (PKTSTAT_BENCH_SHARED_HASH)."""
    return compiled(SRC_BPF / "tc.bpf.c", OUT / "tc-shared-hash.bpf.o", "-DPKTSTAT_BENCH_SHARED_HASH")


def _load(max_entries: int) -> dict[str, Any]:
    from _bench import bench_core

    paths = {"floor": bench_object("floor"), "lean": bench_object("lean")}
    paths |= {"ours": package_object("tc"), "shared": shared_object()}
    objs: dict[str, Any] = {}
    try:
        for k in KINDS:
            sizes = {} if k == "floor" else {"flows": max_entries}
            objs[k] = bench_core._BenchObject(str(paths[k]), max_entries=sizes)
    except Exception:
        for o in objs.values():
            o.close()
        raise
    return objs


def _ratios(out: dict[str, Any]) -> dict[str, Any]:
    out["ours_to_lean"] = ratio(out["ours_ns"], out["lean_ns"])
    out["shared_to_lean"] = ratio(out["shared_ns"], out["lean_ns"])
    out["shared_to_ours"] = ratio(out["shared_ns"], out["ours_ns"])
    return out


def _measure(fds: dict[str, int], frame: bytes, repeat: int, rounds: int) -> dict[str, Any]:
    from _bench import bench_core

    r = rotated_rounds(
        KINDS, lambda k: float(bench_core._bench_test_run(fds[k], frame, repeat)["duration_ns"]), rounds
    )
    out: dict[str, Any] = {"floor_ns": float(np.median(r["floor"]))}
    for k in KINDS[1:]:
        out[f"{k}_ns"] = round(median_diff(r[k], r["floor"]), 2)
    return _ratios(out)


def _together(runs: list[tuple[dict[str, Any], int, int]], repeat: int) -> float:
    """A lower bound of the share of a call's kernel time during which every
    CPU ran its call: the kernel's timer counts only the time the program
    loop was on its CPU (d_i), so the time all were at once is at least
    sum(d_i) - (n - 1) * the wall time from the first start to the last end."""
    d = [res["duration_ns"] * repeat for res, _, _ in runs]
    wall = max(e for _, _, e in runs) - min(s for _, s, _ in runs)
    return (sum(d) - (len(d) - 1) * wall) / max(d)


def _rest(runs: list[Any]) -> list[Any]:
    """Sleep REST times the calls' wall time, and return them. Calls under
    SCHED_FIFO back to back would leave other tasks nothing but the share
    the kernel keeps for them (5%, taken in one piece that breaks a call in
    two); with the rest they run meanwhile."""
    time.sleep(REST * (max(e for _, _, e in runs) - min(s for _, s, _ in runs)) / 1e9)
    return runs


def _measure_cpus(
    fds: list[dict[str, int]], frame: bytes, repeat: int, rounds: int, cpus: list[int], min_together: float
) -> dict[str, Any]:
    """The kinds on every CPU of `cpus` at once and on one CPU alone (the
    CPUs in turn), in the same rotated rounds; fds[i]: kind -> the program
    CPU i runs. ns per packet per CPU over the empty program run alike. A
    call on every CPU whose runs were not at once for `min_together` of
    their time (_together) is made again (TOGETHER_TRIES at most)."""
    from _bench import bench_core

    per_cpu: dict[str, list[list[float]]] = {k: [[] for _ in cpus] for k in KINDS}
    alone_calls = dict.fromkeys(KINDS, 0)
    together: list[float] = []
    round_trip: dict[str, list[float]] = {k: [] for k in KINDS}
    runs_of = {k: rounds * repeat for k in KINDS}  # the calls on one CPU; those on all added below

    def one(name: str) -> float:
        k, _, mode = name.partition("@")
        if mode == "one":  # on CPU i; the others run the empty program meanwhile
            i = alone_calls[k] % len(cpus)
            alone_calls[k] += 1
            done = threading.Event()

            def alone(j: int) -> float:
                if j != i:
                    while not done.is_set():
                        bench_core._bench_test_run(fds[j]["floor"], frame, IDLE_REPEAT)
                    return 0.0
                try:
                    return float(bench_core._bench_test_run(fds[i][k], frame, repeat)["duration_ns"])
                finally:
                    done.set()

            return _rest(on_cpus(cpus, alone, FIFO))[i][0]
        for _ in range(TOGETHER_TRIES):
            rt = bench_core._bench_cpu_round_trip_ns(cpus[0], cpus[-1], ROUND_TRIP_BATCHES)
            runs_of[k] += repeat * len(cpus)
            runs = _rest(on_cpus(cpus, lambda i: bench_core._bench_test_run(fds[i][k], frame, repeat), FIFO))
            if _together(runs, repeat) >= min_together:
                break
        together.append(_together(runs, repeat))
        round_trip[k].append(round(rt, 1))
        for i, (res, _, _) in enumerate(runs):
            per_cpu[k][i].append(float(res["duration_ns"]))
        return float(np.mean([res["duration_ns"] for res, _, _ in runs]))

    r = rotated_rounds([f"{k}@{m}" for m in ("one", "all") for k in KINDS], one, rounds)
    out: dict[str, Any] = {
        "floor_one_cpu_ns": float(np.median(r["floor@one"])),
        "floor_ns": float(np.median(r["floor@all"])),
    }
    for k in KINDS[1:]:
        out[f"{k}_ns"] = round(median_diff(r[f"{k}@all"], r["floor@all"]), 2)
        out[f"{k}_one_cpu_ns"] = round(median_diff(r[f"{k}@one"], r["floor@one"]), 2)
        out[f"{k}_per_cpu_ns"] = [round(median_diff(v, f), 2) for v, f in zip(per_cpu[k], per_cpu["floor"])]
        out[f"{k}_contention_x"] = ratio(out[f"{k}_ns"], out[f"{k}_one_cpu_ns"])
        out[f"{k}_rounds_ns"] = [round(a - f, 1) for a, f in zip(r[f"{k}@all"], r["floor@all"])]
        out[f"{k}_round_trip_ns"] = round_trip[k]
    out["together_min"] = round(min(together), 3)
    out["calls_on_all"] = len(together)
    out["tries_on_all"] = (sum(runs_of.values()) - len(KINDS) * rounds * repeat) // (repeat * len(cpus))
    out["runs"] = runs_of
    return _ratios(out)


def _check(objs: dict[str, Any], flows: int, runs_of: int | dict[str, int]) -> None:
    """Ours and shared counted every run in a flow (runs_of: the same for
    both, or per kind), hold `flows` flows, and their packets add up to the
    runs."""
    from _bench import bench_core

    for k in ("ours", "shared"):
        runs = runs_of[k] if isinstance(runs_of, dict) else runs_of
        ing = bench_core._bench_read_stats(objs[k].map_fd("stats"))[0]
        recs = bench_core._bench_read_flows(objs[k].map_fd("flows"))
        got = (
            int(ing["packets"]),
            int(ing["unparsed_packets"]),
            int(ing["overflow_packets"]),
            len(recs),
            int(recs["packets"].sum()),
        )
        want = (runs, 0, 0, flows, runs)
        if got != want:
            raise AssertionError(
                f"layout {k}: (packets, unparsed, overflow, flows, their packets) {got}, expected {want}"
            )


def _contention(cpus: list[int], repeat: int, rounds: int, flows: int, min_together: float) -> dict[str, Any]:
    """The hot flow, then `flows` flows, on every CPU of `cpus` at once (one
    set of programs: the hot flow is the rotator's flow 0)."""
    from _bench import bench_core
    from bench_hotpath import Rotators

    frame = tcp_v4()
    out: dict[str, Any] = {"cpus": cpus, "min_together": min_together, "fifo_priority": FIFO}
    objs = _load(flows + flows // 4)
    rots: list[Rotators] = []
    try:
        progs = {k: objs[k].prog_fd(PROGS[k]) for k in KINDS}
        out["hot"] = _measure_cpus([progs] * len(cpus), frame, repeat, rounds, cpus, min_together)
        runs = out["hot"].pop("runs")
        _check(objs, 1, runs)

        rots.append(Rotators("tc", progs, flows, False))
        for fd in rots[0].fds.values():  # the first pass makes every flow, in order
            bench_core._bench_test_run(fd, frame, flows)
        # then each CPU walks them in a random order of its own (through the
        # rotator's index table of 65,536 slots): not in step with the other
        # CPUs, nor with the order the flows' memory was handed out in
        for i in range(len(cpus)):
            order = np.random.default_rng(i).permutation(flows)
            rots.append(Rotators("tc", progs, flows, False, np.tile(order, 65536 // flows)))
        res = _measure_cpus([r.fds for r in rots[1:]], frame, repeat, rounds, cpus, min_together)
        _check(objs, flows, {k: runs[k] + flows + n for k, n in res.pop("runs").items()})
        out[f"flows_{flows}"] = res
    finally:
        for r in rots:
            r.close()
        for o in objs.values():
            o.close()
    return out


def run(quick: bool = False) -> dict[str, Any]:
    reason = root_reason()
    if reason:
        return {"skipped": reason}
    from _bench import bench_core
    from bench_hotpath import Rotators, zipf_indices

    repeat, rounds, sizes = (2_000, 3, (1024, 4096)) if quick else (REPEAT, ROUNDS, SIZES)
    frame = tcp_v4()
    cpus = sorted(os.sched_getaffinity(0))
    result: dict[str, Any] = {"repeat": repeat, "rounds": rounds, "goal_64k_to_lean": GOAL_64K}
    with pinned() as cpu:
        result["cpu"] = cpu
        objs = _load(65536)
        try:
            result["hot"] = _measure({k: objs[k].prog_fd(PROGS[k]) for k in KINDS}, frame, repeat, rounds)
            _check(objs, 1, rounds * repeat)
        finally:
            for o in objs.values():
                o.close()
        for n in sizes:
            objs = _load(n + n // 4)
            progs = {k: objs[k].prog_fd(PROGS[k]) for k in KINDS}
            rots: list[Rotators] = []
            try:
                rots.append(Rotators("tc", progs, n, False))
                for fd in rots[0].fds.values():  # the first pass makes every flow
                    bench_core._bench_test_run(fd, frame, n)
                result[f"flows_{n}"] = _measure(rots[0].fds, frame, repeat, rounds)
                runs = n + rounds * repeat
                if n == sizes[-1]:
                    rots.append(Rotators("tc", progs, n, False, zipf_indices(n, 65536, ZIPF_S)))
                    result[f"zipf_{n}"] = _measure(rots[1].fds, frame, repeat, rounds) | {"zipf_s": ZIPF_S}
                    runs += rounds * repeat
                _check(objs, n, runs)
            finally:
                for r in rots:
                    r.close()
                for o in objs.values():
                    o.close()
    if len(cpus) < 2:
        result["contention"] = {"skipped": f"one CPU only ({cpus})"}
    else:
        result["contention"] = (
            _contention(cpus, repeat, rounds, 1024, 0.0)
            if quick
            else _contention(cpus, repeat, rounds, CONTENDED_FLOWS, MIN_TOGETHER)
        )
    return result


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
