"""Live views: cost of one interval (joining two cumulative readings), of
the --external filter and of the --unique check, on synthetic flow tables.
No privilege needed: the records are made in memory with the real dtype."""

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
    from pktstat_bpf import _core
    from pktstat_bpf.core.intervals import IntervalTracker
    from pktstat_bpf.core.snapshot import Snapshot, Totals
    from pktstat_bpf.views.filters import DEFAULT_INTERNAL, NetworkSet, UniqueFilter

    rng = np.random.default_rng(7)
    stats = np.zeros(3, _core.stats_dtype)
    out: dict = {}
    sizes = (65_536,) if quick else (65_536, 1_000_000)
    repeat = 2 if quick else 3
    for n in sizes:
        a = _records(n, rng)
        b = a[rng.permutation(n)].copy()  # the map's order changes between reads
        b["packets"] += 1
        b["bytes"] += 100

        def snap(r, d):
            return Snapshot(r, Totals.from_arrays(stats, r), d, 0.0, d, "tc")

        sa, sb = snap(a, 1.0), snap(b, 2.0)

        def interval():
            t = IntervalTracker()
            t.advance(sa)
            return t.advance(sb)

        iv = interval()
        deltas = iv.delta.records["packets"]
        if int(deltas.min()) != 1 or int(deltas.max()) != 1:  # every flow joined its earlier reading
            from pktstat_bpf.core.keys import KeyIndex

            raise AssertionError(
                f"{n} flows: {int((deltas != 1).sum())} did not join their earlier reading "
                f"(deltas {sorted(set(deltas.tolist()))[:5]}; exact-key path: {KeyIndex(a)._exact is not None}, "
                f"{KeyIndex(b)._exact is not None})"
            )
        nets = NetworkSet.parse(",".join(DEFAULT_INTERNAL))
        out[f"{n}_flows"] = {
            "ms_per_two_readings_and_join": round(_best_ms(interval, repeat), 1),
            "ms_external_filter": round(_best_ms(lambda: nets.external(a), repeat), 1),
            "ms_unique_check": round(_best_ms(lambda: UniqueFilter().first_seen(a), repeat), 1),
        }
    out["unique_table_bytes"] = UniqueFilter().nbytes
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
