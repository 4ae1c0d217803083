"""Hot path (target 1): what one packet costs in our TC and XDP programs, by
BPF_PROG_TEST_RUN with the kernel's own timer (ns per run, `repeat` runs per
call), over an empty program of the same type (the floor: the test-run loop
and the dispatch), against the leanest honest per-flow counter
(bench/bpf/lean.bpf.c). Each figure is the median over rotated rounds of the
difference to the floor measured in the same round.

Programs are the shipped objects of the installed package (tc.bpf.o
tc_ingress, xdp.bpf.o xdp_count, configured as the collectors configure
them) and the bench objects, all loaded by the same loader.

Cases: one hot IPv4 flow and one hot IPv6 flow (target: ours <= 1.2x lean);
then many flows (64k and 1M distinct, in turn, and a Zipf mix over 1M), where
bench/bpf/rotate.bpf.c rewrites the packet's source address before each run
and tail-calls the program under test; its own cost (and the tail call's) is
in that case's floor, a rotator calling the empty program. The many-flow maps
are filled by a first pass over every flow, so the rounds measure updates of
existing flows, not inserts.

After the rounds the benchmark checks that our program counted every run:
flows, packets and the conservation counters.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from _bench import (
    V4_SADDR_OFF,
    V4_SRC,
    bench_object,
    median_diff,
    package_object,
    pinned,
    ratio,
    root_reason,
    rotated_rounds,
    tcp_v4,
    tcp_v6,
)

REPEAT = 200_000
ROUNDS = 7
TARGET = 1.2
ZIPF_S = 1.1
KINDS = ("floor", "lean", "ours")


def _u32(v: int) -> bytes:
    return struct.pack("=I", v)


class Programs:
    """floor, lean and ours of one family ("tc" or "xdp"), loaded, with flow
    maps of `max_entries`."""

    def __init__(self, family: str, max_entries: int, frags: bool) -> None:
        from _bench import bench_core

        self.family = family
        sizes = {"flows": max_entries}
        self.objs = {
            "floor": bench_core._BenchObject(str(bench_object("floor")), xdp_frags=frags),
            "lean": bench_core._BenchObject(str(bench_object("lean")), max_entries=sizes, xdp_frags=frags),
        }
        if family == "tc":
            self.objs["ours"] = bench_core._BenchObject(str(package_object("tc")), max_entries=sizes)
        else:  # as XdpCollector loads it on a kernel with (or without) bpf_xdp_get_buff_len
            self.objs["ours"] = bench_core._BenchObject(
                str(package_object("xdp")),
                rodata={"cfg_buff_len": bytes([frags])},
                max_entries=sizes,
                xdp_frags=frags,
            )
        names = {"tc": ("tc_empty", "tc_lean", "tc_ingress"), "xdp": ("xdp_empty", "xdp_lean", "xdp_count")}
        self.fds = {k: self.objs[k].prog_fd(n) for k, n in zip(KINDS, names[family])}

    def close(self) -> None:
        for o in self.objs.values():
            o.close()


class Rotators:
    """One rotator per program of `progs`: each run rewrites the IPv4 source
    address with base + flow index, then tail-calls its program."""

    def __init__(self, progs: Programs, flows: int, frags: bool, zipf: np.ndarray | None = None) -> None:
        from _bench import bench_core

        assert flows & (flows - 1) == 0, "flows must be a power of two"
        ro = {
            "cfg_off": _u32(V4_SADDR_OFF),
            "cfg_base": _u32(V4_SRC),
            "cfg_mask": _u32(flows - 1),
            "cfg_zipf": bytes([zipf is not None]),
        }
        self.objs, self.fds = {}, {}
        for k in KINDS:
            o = bench_core._BenchObject(str(bench_object("rotate")), rodata=ro, xdp_frags=frags)
            bench_core._bench_update(o.map_fd(f"next_{progs.family}"), _u32(0), _u32(progs.fds[k]))
            if zipf is not None:
                idx = np.ascontiguousarray(zipf, dtype=np.uint32)
                keys = np.arange(len(idx), dtype=np.uint32)
                bench_core._bench_update_batch(o.map_fd("zipf_idx"), keys, idx, len(idx))
            self.objs[k] = o
            self.fds[k] = o.prog_fd(f"{progs.family}_rotate")

    def close(self) -> None:
        for o in self.objs.values():
            o.close()


def zipf_indices(flows: int, slots: int, s: float, seed: int = 3) -> np.ndarray:
    """`slots` flow indices drawn from a Zipf(s) law over `flows` flows; ranks
    are spread over the flows by a random permutation."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, flows + 1, dtype=np.float64) ** s
    cdf = np.cumsum(w / w.sum())
    ranks = np.minimum(np.searchsorted(cdf, rng.random(slots)), flows - 1)
    return rng.permutation(flows)[ranks].astype(np.uint32)


def _measure(fds: dict[str, int], frame: bytes, repeat: int, rounds: int) -> dict[str, Any]:
    from _bench import bench_core

    def one(kind: str) -> float:
        return float(bench_core._bench_test_run(fds[kind], frame, repeat)["duration_ns"])

    r = rotated_rounds(KINDS, one, rounds)
    lean, ours = median_diff(r["lean"], r["floor"]), median_diff(r["ours"], r["floor"])
    return {
        "floor_ns": float(np.median(r["floor"])),
        "lean_ns": lean,
        "ours_ns": ours,
        "ratio": ratio(ours, lean),
        "rounds_ns": r,
    }


def _check_ours(progs: Programs, flows: int, packets: int, nbytes: int) -> None:
    """Our program counted every run: `flows` flows holding `packets`
    packets, all of them in the ingress counters, none unparsed or lost."""
    from _bench import bench_core

    o = progs.objs["ours"]
    recs = bench_core._bench_read_flows(o.map_fd("flows"))
    stats = bench_core._bench_read_stats(o.map_fd("stats"))
    ing = stats[0]
    got = (len(recs), int(recs["packets"].sum()), int(ing["packets"]), int(ing["bytes"]))
    want = (flows, packets, packets, nbytes)
    if got != want or int(ing["unparsed_packets"]) or int(ing["overflow_packets"]):
        raise AssertionError(
            f"{progs.family}: our program counted (flows, packets, stats packets, bytes) {got}, "
            f"expected {want}; stats {stats[0]}"
        )


def _family(family: str, frags: bool, repeat: int, rounds: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    from _bench import bench_core

    out: dict[str, Any] = {}
    progs = Programs(family, 65536, frags)
    try:
        v4, v6 = tcp_v4(), tcp_v6()
        out["hot_ipv4"] = _measure(progs.fds, v4, repeat, rounds)
        out["hot_ipv6"] = _measure(progs.fds, v6, repeat, rounds)
        runs = rounds * repeat
        _check_ours(progs, 2, 2 * runs, runs * (len(v4) + len(v6)))
    finally:
        progs.close()

    for n in sizes:
        progs = Programs(family, n + n // 4, frags)
        rot = zipf_rot = None
        try:
            frame = tcp_v4()
            rot = Rotators(progs, n, frags)
            for k in KINDS:  # the first pass makes every flow
                bench_core._bench_test_run(rot.fds[k], frame, n)
            _check_ours(progs, n, n, n * len(frame))
            out[f"flows_{n}"] = _measure(rot.fds, frame, repeat, rounds)
            runs = n + rounds * repeat
            if n == sizes[-1]:
                zipf = zipf_indices(n, 65536, ZIPF_S)
                zipf_rot = Rotators(progs, n, frags, zipf)
                res = _measure(zipf_rot.fds, frame, repeat, rounds)
                res["zipf_s"] = ZIPF_S
                res["distinct_in_table"] = int(len(np.unique(zipf)))
                out[f"zipf_{n}"] = res
                runs += rounds * repeat
            _check_ours(progs, n, runs, runs * len(frame))
        finally:
            for r in (rot, zipf_rot):
                if r:
                    r.close()
            progs.close()
    return out


def run(quick: bool = False) -> dict[str, Any]:
    reason = root_reason()
    if reason:
        return {"skipped": reason}
    from _bench import bench_core

    repeat, rounds = (2_000, 3) if quick else (REPEAT, ROUNDS)
    sizes = (1024, 4096) if quick else (65536, 1 << 20)
    frags = bench_core.xdp_kernel_has_buff_len()
    result: dict[str, Any] = {"repeat": repeat, "rounds": rounds, "target_ratio": TARGET, "xdp_frags": frags}
    with pinned() as cpu:
        result["cpu"] = cpu
        for family in ("tc", "xdp"):
            result[family] = _family(family, frags, repeat, rounds, sizes)
    return result


if __name__ == "__main__":
    import json
    import sys

    res = run(quick="--quick" in sys.argv)
    for fam in ("tc", "xdp"):
        for case, r in res.get(fam, {}).items():
            r.pop("rounds_ns", None)
    print(json.dumps(res, indent=1))
