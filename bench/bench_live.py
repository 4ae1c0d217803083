"""Live views: cost of one interval on the Python side (a drained interval
made into the outputs' Interval, with the stopped flows of the interval
before joined in), of the --external filter and of the --unique check, on
synthetic flow tables. No privilege needed: the records are made in memory
with the real dtypes."""

from __future__ import annotations

import time

import numpy as np


def _records(n: int, rng: np.random.Generator) -> np.ndarray:
    from pktstat_bpf import _core

    r = np.zeros(n, _core.record_dtype)
    r["saddr"] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    r["daddr"] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    r["sport"] = rng.integers(0, 65536, n)
    r["dport"] = rng.integers(0, 65536, n)
    r["proto"], r["ipver"], r["packets"], r["bytes"] = 6, 6, 5, 500
    return r


def _best_ms(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def run(quick: bool = False) -> dict:
    from _bench import drained
    from pktstat_bpf.core.intervals import DrainTracker, RunTotals
    from pktstat_bpf.core.snapshot import Snapshot
    from pktstat_bpf.views.filters import DEFAULT_INTERNAL, NetworkSet, UniqueFilter

    rng = np.random.default_rng(7)
    out: dict = {}
    sizes = (65_536,) if quick else (65_536, 1_000_000)
    repeat = 2 if quick else 3
    for n in sizes:
        a = _records(n, rng)
        b = a[rng.permutation(n)].copy()  # the map's order changes between reads
        b["packets"] += 1
        b["bytes"] += 100

        # two drains: every flow active in both (the map's order changes between them)
        da, db = drained(a, end_ns=1_000_000_000), drained(b, end_ns=2_000_000_000)

        def make(r, totals, t0, t1, dur, cols):
            return Snapshot(r, totals, dur, t0, t1, "tc", columns=cols)

        def interval():
            t, run = DrainTracker(), RunTotals(keep_retired=False)
            for raw in (da, db):
                run.fold(raw, None, False)
                iv = t.advance(raw, make, run, None, raw.end_ns / 1e9 - 1.0)
            return iv

        iv = interval()
        if len(iv.delta) != n or int(iv.delta.records["packets"].min()) != 6:
            raise AssertionError(f"{n} flows: the interval has {len(iv.delta)} rows")
        nets = NetworkSet.parse(",".join(DEFAULT_INTERNAL))
        out[f"{n}_flows"] = {
            "ms_per_two_drained_intervals": round(_best_ms(interval, repeat), 1),
            "ms_external_filter": round(_best_ms(lambda: nets.external(a), repeat), 1),
            "ms_unique_check": round(_best_ms(lambda: UniqueFilter().first_seen(a), repeat), 1),
        }
    out["unique_table_bytes"] = UniqueFilter().nbytes
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
