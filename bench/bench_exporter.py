"""Prometheus exporter: the cost of one refresh (accounting an interval,
ranking the top N, preparing the families; paid in the capture loop) and of
one scrape (formatting the prepared families; paid in the scraper's thread),
on synthetic flow tables where every flow or a tenth of them sent in the
interval. No privilege needed."""

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
    r["proto"] = rng.choice([6, 17, 1], n)
    r["ipver"], r["dir"], r["ifindex"] = 6, rng.integers(0, 2, n), 1
    r["packets"] = rng.integers(1, 1000, n)
    r["bytes"] = r["packets"] * 700
    return r


def run(quick: bool = False) -> dict:
    from _bench import drained
    from pktstat_bpf.core.intervals import DrainTracker, RunTotals
    from pktstat_bpf.core.snapshot import Snapshot
    from pktstat_bpf.exporter import FlowMetrics
    from prometheus_client import CollectorRegistry, generate_latest

    rng = np.random.default_rng(11)
    out: dict = {}
    sizes = (65_536,) if quick else (65_536, 1_000_000)
    for n in sizes:
        base = _records(n, rng)
        for share in (1.0, 0.1):
            tracker, run = DrainTracker(), RunTotals(keep_retired=False)
            metrics = FlowMetrics(top=100)
            reg = CollectorRegistry(auto_describe=False)
            reg.register(metrics)
            r = base.copy()
            refresh, scrape = [], []
            for step in range(3 if quick else 6):
                hot = np.ones(n, dtype=bool)
                if step:  # the active flows send 3 packets, 2100 bytes in the interval
                    hot = rng.random(n) < share
                    r["packets"][hot] += 3
                    r["bytes"][hot] += 2100
                got = r[hot].copy()
                if step:
                    got["packets"], got["bytes"] = 3, 2100
                lifetime = np.stack([r["packets"][hot], r["bytes"][hot]], axis=1)
                raw = drained(got, lifetime, end_ns=(step + 1) * 1_000_000_000)
                run.fold(raw, None, False)

                def make(rec, totals, t0, t1, dur, cols):
                    return Snapshot(rec, totals, dur, t0, t1, "tc", ifnames={1: "eth0"}, columns=cols)

                iv = tracker.advance(raw, make, run, None, float(step))
                t = time.perf_counter()
                metrics.update(iv)
                refresh.append(time.perf_counter() - t)
                t = time.perf_counter()
                generate_latest(reg)
                scrape.append(time.perf_counter() - t)
            out[f"{n}_flows_{int(share * 100)}pct_active"] = {
                "refresh_ms": round(min(refresh[1:]) * 1e3, 2),
                "scrape_ms": round(min(scrape[1:]) * 1e3, 2),
            }
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=1))
