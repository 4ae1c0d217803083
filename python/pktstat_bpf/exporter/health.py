"""TCP health in the Prometheus exporter: round trips as a histogram and
retransmitted segments as counters, per interface and direction (a fixed
number of series, however many flows).

The kernel keeps, per flow and interval, only the count, sum, smallest and
largest of the round trips it timed (docs/counting.md, "TCP health"), not
each one. So the histogram ``rtt_seconds`` observes, for every flow and
interval with round trips, **the flow-interval's mean, weighted by its
number of round trips**: the mean lands in its bucket that many times.
``_count`` is then exactly the number of round trips timed and ``_sum``
exactly their total (``_sum / _count`` is the exact mean round trip); the
buckets are exact for a flow-interval with one round trip and place the
others at their mean, so a quantile from them is one of flow-interval means,
not of single round trips.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from ..core import protocols

#: Upper bounds of the round-trip buckets in seconds (``le``), 1-2.5-5 from 10 us
#: to 10 s: a host's own answer (microseconds) to a satellite link's (seconds).
RTT_BUCKETS = tuple(round(m * 10.0**e, 9) for e in range(-5, 1) for m in (1, 2.5, 5)) + (10.0,)
#: The modes whose flows carry TCP health (cgroup and process mode do not track it yet).
HEALTH_MODES = frozenset({"tc", "xdp", "replay"})


class HealthMetrics:
    """Accumulates the round trips and retransmissions of every interval's
    flows per (ifindex, direction)."""

    def __init__(self) -> None:
        #: (ifindex, direction) -> bucket counts (the last one: above the largest bound)
        self.buckets: dict[tuple[int, int], np.ndarray] = {}
        #: (ifindex, direction) -> [round trips, their total in ns]
        self.rtt: dict[tuple[int, int], list[int]] = {}
        #: (ifindex, direction) -> [retransmitted segments, their bytes]
        self.retrans: dict[tuple[int, int], list[int]] = {}

    def add(self, r: np.ndarray) -> None:
        """Account the interval's records `r` (their health is the interval's).
        Every interface and direction with TCP flows has its series from then
        on (at 0 until something is counted), so a rate starts from 0."""
        tcp = r[r["proto"] == 6]
        for key in set(zip(tcp["ifindex"].tolist(), tcp["dir"].tolist())):
            self.buckets.setdefault(key, np.zeros(len(RTT_BUCKETS) + 1, np.uint64))
            self.rtt.setdefault(key, [0, 0])
            self.retrans.setdefault(key, [0, 0])
        for i in np.flatnonzero((r["rtt_samples"] > 0) | (r["retrans_packets"] > 0)).tolist():
            key = (int(r["ifindex"][i]), int(r["dir"][i]))  # (a TCP flow's: registered above)
            rp = int(r["retrans_packets"][i])
            acc = self.retrans[key]
            acc[0] += rp
            acc[1] += int(r["retrans_bytes"][i])
            n = int(r["rtt_samples"][i])
            if n:
                total = int(r["rtt_sum"][i].astype(np.int64))
                self.buckets[key][int(np.searchsorted(RTT_BUCKETS, total / n / 1e9, side="left"))] += n
                self.rtt[key][0] += n
                self.rtt[key][1] += total

    def families(self, prefix: str, iface: Callable[[int], str]) -> Iterable[Any]:
        """``<prefix>_rtt_seconds`` (histogram), ``..._retrans_packets_total`` and
        ``..._retrans_bytes_total`` (counters), labelled ``iface``, ``direction``."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        labels = ["iface", "direction"]
        hist = HistogramMetricFamily(
            f"{prefix}_rtt_seconds",
            "TCP round trips timed (TCP timestamps, from the hook to the far end and back), by interface and "
            "direction: each flow-interval's mean, counted once per round trip; _sum and _count exact",
            labels=labels,
        )
        for key, counts in sorted(self.buckets.items()):
            cum = np.cumsum(counts).tolist()
            bounds = [f"{b:g}" for b in RTT_BUCKETS] + ["+Inf"]
            hist.add_metric(self._labels(key, iface), list(zip(bounds, cum)), self.rtt[key][1] / 1e9)
        yield hist
        what = "TCP segments sent again (retransmitted or out of order), by interface and direction"
        fam_p = CounterMetricFamily(f"{prefix}_retrans_packets_total", what, labels=labels)
        fam_b = CounterMetricFamily(f"{prefix}_retrans_bytes_total", f"Bytes of {what}", labels=labels)
        for key, (p, b) in sorted(self.retrans.items()):
            fam_p.add_metric(self._labels(key, iface), p)
            fam_b.add_metric(self._labels(key, iface), b)
        yield fam_p
        yield fam_b

    @staticmethod
    def _labels(key: tuple[int, int], iface: Callable[[int], str]) -> list[str]:
        return [iface(key[0]), protocols.direction(key[1])]
