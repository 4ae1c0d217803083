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
single-flow figure. After the rounds: every run was counted (the
conservation counters: packets, none unparsed or overflowed) and each table
holds exactly its flows.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from _bench import (
    REPO,
    _clang_flags,
    bench_object,
    median_diff,
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


def shared_object() -> Path:
    """The shipped tc.bpf.c with one shared hash (PKTSTAT_BENCH_SHARED_HASH)."""
    out = REPO / "build" / "bench" / "tc-shared-hash.bpf.o"
    out.parent.mkdir(parents=True, exist_ok=True)
    src = REPO / "src" / "bpf" / "tc.bpf.c"
    cmd = ["clang", *_clang_flags(), "-DPKTSTAT_BENCH_SHARED_HASH", "-c", str(src), "-o", str(out)]
    subprocess.run(cmd, check=True)
    return out


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


def _measure(fds: dict[str, int], frame: bytes, repeat: int, rounds: int) -> dict[str, Any]:
    from _bench import bench_core

    r = rotated_rounds(
        KINDS, lambda k: float(bench_core._bench_test_run(fds[k], frame, repeat)["duration_ns"]), rounds
    )
    out: dict[str, Any] = {"floor_ns": float(np.median(r["floor"]))}
    for k in KINDS[1:]:
        out[f"{k}_ns"] = round(median_diff(r[k], r["floor"]), 2)
    out["ours_to_lean"] = ratio(out["ours_ns"], out["lean_ns"])
    out["shared_to_lean"] = ratio(out["shared_ns"], out["lean_ns"])
    out["shared_to_ours"] = ratio(out["shared_ns"], out["ours_ns"])
    return out


def _check(objs: dict[str, Any], flows: int, runs: int) -> None:
    """Ours and shared counted every run in a flow, and hold `flows` flows."""
    from _bench import bench_core

    for k in ("ours", "shared"):
        ing = bench_core._bench_read_stats(objs[k].map_fd("stats"))[0]
        held = int(bench_core._bench_lookup_batch(objs[k].map_fd("flows"))["count"])
        got = (int(ing["packets"]), int(ing["unparsed_packets"]), int(ing["overflow_packets"]), held)
        if got != (runs, 0, 0, flows):
            raise AssertionError(
                f"layout {k}: (packets, unparsed, overflow, flows) {got}, expected {(runs, 0, 0, flows)}"
            )


def run(quick: bool = False) -> dict[str, Any]:
    reason = root_reason()
    if reason:
        return {"skipped": reason}
    from _bench import bench_core
    from bench_hotpath import Rotators, zipf_indices

    repeat, rounds, sizes = (2_000, 3, (1024, 4096)) if quick else (REPEAT, ROUNDS, SIZES)
    frame = tcp_v4()
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
    return result


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
