"""Snapshot (target 3) and memory (target 5).

A TC collector's flow map (the engine's, loaded, not attached) is filled
from user space with 1M distinct flows (64k client addresses, 16 ports
each, to one server), every flow with a value on every CPU (the most
folding read_flows can have to do). Then, in rotated rounds:
the raw bpf_map_lookup_batch of the whole map into buffers allocated
before the clock starts (no decoding: the floor), and the engine's
read_flows (batch read, per-CPU sums, records, the NumPy array Python
gets). Target: read_flows <= 1.3x the raw read, in the steady state of a
refresh loop: each read drops the previous records first, so the engine
reuses their buffer (flow_table.cpp); the first read of a process, into
fresh memory, is reported too (read_flows_cold_ms). Then Snapshot.to_pandas on
the result, and once more with every flow from its own address (to_pandas
formats each distinct address once: its worst case). Both as a share of one
core when refreshed every second.

Memory: the kernel's own accounting of the flow map (fdinfo memlock; the
per-CPU hash is preallocated, so it is the same empty or full) per flow,
and the resident size of this process while it holds the 1M records and
their DataFrame.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from typing import Any

import numpy as np
from _bench import fd_memlock, ratio, root_reason, rotated_rounds, rss_bytes

FLOWS = 1 << 20
QUICK_FLOWS = 1 << 14
ROUNDS = 5
TARGET = 1.3
PORTS_PER_HOST = 16  # 1M flows from 64k client addresses

TUPLE_DTYPE = np.dtype(
    {
        "names": ["saddr", "daddr", "sport", "dport", "proto", "dir", "ipver", "ifindex"],
        "formats": ["(16,)u1", "(16,)u1", "<u2", "<u2", "u1", "u1", "u1", "<u4"],
        "offsets": [0, 16, 32, 34, 36, 37, 38, 40],
        "itemsize": 44,
    }
)  # (struct flow_tuple, checked against the engine's record layout below)
VALUE_DTYPE = np.dtype(
    [
        ("packets", "<u8"),
        ("bytes", "<u8"),
        ("first_seen", "<u8"),
        ("last_seen", "<u8"),
        ("syn_packets", "<u4"),
        ("fin_packets", "<u4"),
        ("rst_packets", "<u4"),
        ("tcp_flags", "u1"),
        ("_pad", "(3,)u1"),
        ("health", "(40,)u1"),  # struct flow_health, left zero
    ]
)  # (struct flow_value, its size checked against the engine's record below)


def _check_layout() -> None:
    from _bench import bench_core

    lay = bench_core.record_layout()
    if lay["packets"][0] + VALUE_DTYPE.itemsize != lay["__itemsize__"][1]:
        raise AssertionError("struct flow_value changed size (update VALUE_DTYPE in bench/bench_snapshot.py)")
    for name in TUPLE_DTYPE.names:
        if lay[name][0] != TUPLE_DTYPE.fields[name][1]:
            raise AssertionError(f"flow_tuple.{name} moved: {lay[name]} (update bench/bench_snapshot.py)")


def set_v4(addrs: np.ndarray, index: np.ndarray) -> None:
    """IPv4-mapped 10.x.y.z addresses, x.y.z from `index`."""
    addrs[:, 10:12] = 0xFF
    addrs[:, 12] = 10
    addrs[:, 13] = (index >> 16) & 0xFF
    addrs[:, 14] = (index >> 8) & 0xFF
    addrs[:, 15] = index & 0xFF


def prefill(
    fd: int, n: int, ncpu: int, ports_per_host: int = PORTS_PER_HOST, seed: int = 5
) -> tuple[int, int]:
    """n distinct IPv4 TCP flows to one server, `ports_per_host` client ports
    per client address, with a value on each of the ncpu CPUs; returns their
    total (packets, bytes)."""
    from _bench import bench_core

    rng = np.random.default_rng(seed)
    keys = np.zeros(n, TUPLE_DTYPE)
    i = np.arange(n, dtype=np.uint32)
    set_v4(keys["saddr"], i // ports_per_host)
    keys["daddr"][:, 10:12] = 0xFF
    keys["daddr"][:, 12:16] = (192, 0, 2, 1)
    keys["sport"] = 1024 + (i % ports_per_host) * 3000 + rng.integers(0, 3000, n)
    keys["dport"] = 443
    keys["proto"], keys["ipver"], keys["ifindex"] = 6, 4, 1
    vals = np.zeros((n, ncpu), VALUE_DTYPE)
    vals["packets"] = rng.integers(1, 1000, (n, ncpu))
    vals["bytes"] = vals["packets"] * 800
    t0 = 1_000_000_000_000
    vals["first_seen"] = t0 + rng.integers(0, 10**9, (n, ncpu))
    vals["last_seen"] = vals["first_seen"] + 10**9
    bench_core._bench_update_batch(fd, keys, vals, n)
    return int(vals["packets"].sum()), int(vals["bytes"].sum())


def run(quick: bool = False) -> dict[str, Any]:
    reason = root_reason()
    if reason:
        return {"skipped": reason}
    import pandas  # noqa: F401  (imported before the RSS baseline)
    from _bench import bench_core
    from pktstat_bpf import _core
    from pktstat_bpf.core.snapshot import Snapshot, Totals

    _check_layout()
    n = QUICK_FLOWS if quick else FLOWS
    rounds = 3 if quick else ROUNDS
    ncpu = bench_core.possible_cpus()
    col = _core.TcCollector(1, max_entries=n)  # loaded only: its map, never attached
    fd = bench_core._bench_flows_fd(col)
    packets, nbytes = prefill(fd, n, ncpu)
    gc.collect()

    recs_holder: list = []
    # read_flows drains the kernel map (issue 16): every measure fills side 0
    # again and leaves the collector counting into side 0; the lifetime table
    # sums every fill, so after k fills it holds k x (packets, bytes).
    fills, fills_at_read = [1], [1]

    def measure(kind: str) -> float:
        if fills[0] > 1 or kind == "raw" or recs_holder:
            prefill(fd, n, ncpu)
            fills[0] += 1
        if kind == "raw":
            res = bench_core._bench_lookup_batch(fd)
            assert res["count"] == n, res
            col.drain(timeouts=False)  # empty side 0 ...
            col.drain(timeouts=False)  # ... and count into it again
            return res["seconds"]
        recs_holder.clear()
        gc.collect()
        t = time.perf_counter()
        recs = col.read_flows()
        dt = time.perf_counter() - t
        col.drain(timeouts=False)  # back to side 0
        recs_holder.append(recs)
        fills_at_read[0] = fills[0]
        return dt

    rss0 = rss_bytes()
    _core._drop_spare_records()
    cold_s = measure("read_flows")  # into fresh memory: the first read of a process
    r = rotated_rounds(("raw", "read_flows"), measure, rounds)
    recs = recs_holder[-1]
    packets, nbytes = packets * fills_at_read[0], nbytes * fills_at_read[0]
    if (len(recs), int(recs["packets"].sum()), int(recs["bytes"].sum())) != (n, packets, nbytes):
        raise AssertionError(f"read_flows returned {len(recs)} flows, not the {n} filled (or wrong sums)")
    raw_s, ours_s = statistics.median(r["raw"]), statistics.median(r["read_flows"])
    rss_records = rss_bytes()

    stats = col.read_stats()
    snap = Snapshot(recs, Totals.from_arrays(stats, recs), 1.0, 0.0, 1.0, "tc", iface="lo", ifnames={1: "lo"})
    pd_times = []
    df = None
    for _ in range(1 if quick else 3):
        df = None
        gc.collect()
        t = time.perf_counter()
        df = snap.to_pandas()
        pd_times.append(time.perf_counter() - t)
    assert len(df) == n and int(df["packets"].sum()) == packets
    rss_frame = rss_bytes()
    pandas_s = statistics.median(pd_times)
    # the worst case for to_pandas: every flow from its own address
    distinct = recs.copy()
    set_v4(distinct["saddr"], np.arange(n, dtype=np.uint32))
    snap2 = dataclasses.replace(snap, records=distinct)
    t = time.perf_counter()
    assert len(snap2.to_pandas()) == n
    pandas_distinct_s = time.perf_counter() - t
    del snap2, distinct
    memlock = fd_memlock(fd)
    result = {
        "flows": n,
        "cpus": ncpu,
        "rounds": rounds,
        "raw_lookup_batch_ms": round(raw_s * 1e3, 1),
        "read_flows_ms": round(ours_s * 1e3, 1),
        "ratio": ratio(ours_s, raw_s),
        "read_flows_cold_ms": round(cold_s * 1e3, 1),
        "cold_ratio": ratio(cold_s, raw_s),
        "target_ratio": TARGET,
        "read_flows_core_share_at_1s": round(ours_s, 4),
        "to_pandas_ms": round(pandas_s * 1e3, 1),
        "to_pandas_core_share_at_1s": round(pandas_s, 4),
        "to_pandas_src_addrs": n // PORTS_PER_HOST,
        "to_pandas_all_distinct_addrs_ms": round(pandas_distinct_s * 1e3, 1),
        "snapshot_and_pandas_core_share_at_1s": round(ours_s + pandas_s, 4),
        "rounds_s": r,
        "memory": {
            "kernel_map_bytes": memlock,
            "kernel_bytes_per_flow": round(memlock / n, 1),  # one side; the table has two (issue 16)
            "record_bytes_per_flow": recs.dtype.itemsize,
            "rss_before_mb": round(rss0 / 1e6, 1),
            "rss_holding_records_mb": round(rss_records / 1e6, 1),
            "rss_holding_records_and_dataframe_mb": round(rss_frame / 1e6, 1),
            "dataframe_deep_mb": round(df.memory_usage(deep=True).sum() / 1e6, 1),
        },
    }
    del df, snap, recs, recs_holder[:]
    return result


if __name__ == "__main__":
    import json
    import sys

    res = run(quick="--quick" in sys.argv)
    res.pop("rounds_s", None)
    print(json.dumps(res, indent=1))
