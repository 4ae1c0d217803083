"""Prometheus exporter (``--prometheus ADDR:PORT``): ``/metrics`` in the
Prometheus text format, through ``prometheus-client``.

Two parts, so that a scrape never delays reading the maps:

- :class:`FlowMetrics` turns each :class:`~pktstat_bpf.live.Interval` of a
  capture (``Collector.stream``) into a ready list of metric families, in the
  loop that reads the maps, and swaps it in as one reference. It is a
  prometheus-client *collector*: ``collect()`` only returns the last list
  made, so a scrape costs formatting, never a map read, and holds no lock
  the capture loop waits for.
- :class:`MetricsServer` serves a registry over HTTP, one thread per
  request: a slow or stuck scraper blocks only its own thread.

What is exported (``pktstat_bpf_`` prefix; see docs/exporter.md for the table):

- Exact counters over *all* flows by interface, direction, address family
  and protocol (``packets_total``, ``bytes_total``), and the conservation
  counters per direction (``seen_*``, ``unparsed_*``, ``overflow_*``), so
  ``sum(bytes_total) + unparsed + overflow == seen`` holds however few flows
  are exported one by one. They are sums of interval deltas, monotonic by
  construction, and cost a fixed number of series.
- The flow table's fill level (``flow_table_entries``, ``..._max_entries``).
- Per-flow counters (``flow_packets_total``, ``flow_bytes_total``) for the N
  heaviest flows only (``--prometheus-top N``; label ``app``, the flow's
  application label, one of a fixed set of names; with ``--prometheus-names``
  also ``name``, the flow's server name, HTTP Host or DNS query), and in modes that know the
  owning process, per-process counters (``process_*_total``) for the N
  heaviest processes: at most 2 N series each.
- TCP health (TC, XDP, replay; :mod:`.health`): ``rtt_seconds``, a histogram, and
  ``retrans_*_total`` per interface and direction; ``flow_retrans_packets_total`` per top flow.
- ``build_info``, the time of the last map reading, and the exporter's own
  process metrics (CPU, memory, file descriptors).

Ranking and monotonicity: a flow's rank is its traffic over roughly the last
minute, exponentially weighted (time constant :data:`RANK_WINDOW`), so a
burst shows at once and a flow does not flap in and out between two
refreshes. A per-flow series is labelled by the whole flow key and its value
is the flow's lifetime count in the kernel, so it only grows: a flow that
leaves the top N and comes back reappears with a higher value, never a
lower one, and ``rate()``/``increase()`` over the gap stay right.
Per-process counters are sums of interval deltas kept while the process is
tracked; a process idle for :data:`IDLE_FORGET` is forgotten and, should it
send again, starts from 0 again: a counter reset, which ``rate()`` and
``increase()`` treat exactly.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterable, Mapping, cast

import numpy as np

from ..core import names as flow_names
from ..core import protocols, render
from ..core.errors import PktstatError
from ..core.keys import flow_keys, key_hashes
from ..core.snapshot import Counters
from .health import HEALTH_MODES, HealthMetrics
from .ranking import IDLE_FORGET, RANK_WINDOW, TopTracker, group_sums, sums

if TYPE_CHECKING:  # pragma: no cover
    from ..core.intervals import Interval

PREFIX = "pktstat_bpf"
#: Default of ``--prometheus-top``.
DEFAULT_TOP = 100
#: Upper bound of ``--prometheus-top`` (each flow costs two series per node).
MAX_TOP = 10_000
#: Candidates kept for the ranking: this many times N (at least 256), so a
#: flow just below the top N keeps its weight when it climbs back.
TRACK_FACTOR = 4
FAMILIES = {4: "ipv4", 6: "ipv6", protocols.ARP_IPVER: "arp"}


def prometheus_client_module() -> ModuleType:
    try:
        import prometheus_client
    except ImportError:
        raise PktstatError(
            "--prometheus needs prometheus-client: pip install 'pktstat-bpf[prometheus]'"
        ) from None
    return prometheus_client


_PROCESS_KEY = np.dtype([("pid", "<u4"), ("cgroup_id", "<u8"), ("dir", "u1"), ("comm", "S16")])


class FlowMetrics:
    """A prometheus-client collector of a capture's flows: feed it every
    :class:`~pktstat_bpf.live.Interval` with :meth:`update` (in the loop that
    reads the maps); ``collect()`` returns the metric families prepared by
    the last update.

    >>> from prometheus_client import CollectorRegistry, generate_latest   # doctest: +SKIP
    >>> metrics = FlowMetrics(top=20, info={"mode": "tc"})                 # doctest: +SKIP
    >>> registry = CollectorRegistry(); registry.register(metrics)        # doctest: +SKIP
    >>> with Collector(iface="eth0") as c:                                 # doctest: +SKIP
    ...     for iv in c.stream(1.0, duration=10):
    ...         metrics.update(iv)
    >>> print(generate_latest(registry).decode())                          # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        top: int = DEFAULT_TOP,
        info: Mapping[str, str] | None = None,
        max_entries: int = 0,
        window: float = RANK_WINDOW,
        forget: float = IDLE_FORGET,
        names: bool = False,
    ) -> None:
        prometheus_client_module()
        self.top = top
        #: label ``name`` on the flow series (--prometheus-names; off by default: one value per name)
        self.names = names
        self.info = dict(info or {})
        capacity = max(TRACK_FACTOR * top, 256) if top > 0 else 0
        self.flows = TopTracker(capacity, window=window, forget=forget, accumulate=True)
        self.processes = TopTracker(capacity, window=window, forget=forget, accumulate=True)
        #: (ifindex, direction, family, proto) -> [packets, bytes]
        self.traffic: dict[tuple[int, int, int, int], list[int]] = {}
        self.conservation: dict[str, Counters] = {"ingress": Counters(), "egress": Counters()}
        self.table_entries = 0
        self.live_flows = 0
        #: flow records handed out (retired flows, active-timeout records), by reason
        self.ended: dict[str, int] = {}
        self.max_entries = max_entries
        self.last_read: float | None = None
        self.update_seconds = 0.0
        self.updates = 0
        #: --drops: the kernel's drops per reason since the start (None without --drops)
        self.drop_reasons: dict[str, int] | None = None
        self.updated_at = time.monotonic()
        self.owners = False
        self.kinds = False  # process mode: TCP retransmissions are flows of their own (label kind)
        self.apps = False  # modes that label flows (all but process): label app
        self.pods = False
        self.health = HealthMetrics()  # round trips, retransmissions per interface and direction
        self.tracks_health = False  # modes whose flows carry TCP health (TC, XDP, replay)
        self.ifnames: dict[int, str] = {}
        self.cgroups: Mapping[int, str] = {}
        self._families: tuple[Any, ...] = ()
        self._lock = threading.Lock()  # one update at a time (collect never takes it)
        self._prepare()

    # -- prometheus-client collector protocol --------------------------------------
    def collect(self) -> Iterable[Any]:
        return self._families

    def describe(self) -> Iterable[Any]:
        return ()  # unchecked collector: the families change with the data

    # -- feeding ---------------------------------------------------------------------
    def update(self, iv: Interval) -> None:
        """Account one interval and prepare the families the next scrapes see."""
        t0 = time.perf_counter()
        with self._lock:
            self._update(iv)
            self._prune_cgroups()
            self.updated_at = time.monotonic()
            self.update_seconds = time.perf_counter() - t0
            self._prepare()

    def _update(self, iv: Interval) -> None:
        d = iv.delta
        self.owners = bool(d.owners)
        self.kinds = d.mode == "process"
        self.apps = protocols.app_labelled(d.mode)
        self.pods = "src_pod" in d.columns
        self.tracks_health = d.mode in HEALTH_MODES
        self.ifnames.update(d.ifnames)
        self.cgroups = {**self.cgroups, **d.cgroups}  # (pruned to the tracked rows' ids below)
        self.max_entries = d.max_entries or self.max_entries
        # the most flows one drain found in the kernel table: what --max-entries must hold
        self.table_entries = max(self.table_entries, d.totals.flows)
        self.live_flows = iv.cumulative.totals.flows
        if iv.ended is not None:
            for reason in iv.ended.columns["end_reason"].tolist():
                self.ended[reason] = self.ended.get(reason, 0) + 1
        self.last_read = iv.end
        self.updates += 1
        if "drops" in iv.cumulative.extra:  # --drops: lifetime counts per reason, read as they are
            self.drop_reasons = dict(iv.cumulative.extra["drops"])
        for name in protocols.DIRECTIONS:
            c = getattr(d.totals, name)
            if name in self.conservation or c.packets:
                old = self.conservation.get(name, Counters())
                self.conservation[name] = Counters(
                    *(o + max(v, 0) for o, v in zip(old.as_dict().values(), c.as_dict().values()))
                )
        self.flows.advance(iv.duration)
        self.processes.advance(iv.duration)
        active = np.flatnonzero(iv.active)
        if len(active) == 0:
            return
        r = d.records if len(active) == len(d.records) else d.records[active]
        if self.tracks_health:
            self.health.add(r)
        # (ifindex, direction, family, protocol) packed exactly into one integer
        key = (r["ifindex"].astype(np.uint64) << np.uint64(24)) | (
            r["dir"].astype(np.uint64) << np.uint64(16)
        )
        key |= (r["ipver"].astype(np.uint64) << np.uint64(8)) | r["proto"].astype(np.uint64)
        uniq, inverse = np.unique(key, return_inverse=True)
        packets, bytes_ = sums(inverse.reshape(len(r)), len(uniq), r["packets"], r["bytes"])
        for k, p, b in zip(uniq.tolist(), packets.tolist(), bytes_.tolist()):
            k = (k >> 24, (k >> 16) & 0xFF, (k >> 8) & 0xFF, k & 0xFF)
            acc = self.traffic.setdefault(k, [0, 0])
            acc[0] += p
            acc[1] += b
        if self.top <= 0:
            return
        cols = {k: v[active] for k, v in d.columns.items() if k not in ("total_packets", "total_bytes")}
        life_retrans = iv.cumulative.records["retrans_packets"][active]  # (rows aligned with d's)
        lifetime = np.stack(
            [d.columns["total_packets"][active], d.columns["total_bytes"][active], life_retrans], axis=1
        )
        delta = np.stack([r["packets"], r["bytes"], r["retrans_packets"]], axis=1)
        # a flow's series: its lifetime counts when first ranked, then the sum of its deltas (never
        # down: a flow the engine retired and sees again starts a new lifetime there, not here)
        self.flows.add(
            lambda idx: flow_keys(r[idx]), r["bytes"], delta, r, cols, hashes=key_hashes(r), initial=lifetime
        )
        if self.owners:
            pk = np.empty(len(r), _PROCESS_KEY)
            for f in cast("tuple[str, ...]", _PROCESS_KEY.names):  # a structured dtype: names set
                pk[f] = r[f]
            uniq, (packets, bytes_), first = group_sums(
                pk.view(f"V{_PROCESS_KEY.itemsize}"), r["packets"], r["bytes"]
            )
            self.processes.add(uniq, bytes_, np.stack([packets, bytes_], axis=1), r[first])

    def _prune_cgroups(self) -> None:
        """Keep the cgroup paths of the flows and processes still tracked only."""
        ids = {
            int(i) for t in (self.flows, self.processes) if t.rows is not None for i in t.rows["cgroup_id"]
        }
        if len(self.cgroups) > len(ids):
            self.cgroups = {k: v for k, v in self.cgroups.items() if k in ids}

    def stale(self, limit: float) -> str | None:
        """Why the metrics are stale (no update for `limit` seconds), or None."""
        age = time.monotonic() - self.updated_at
        return f"no reading of the flow maps for {age:.1f}s" if age > limit else None

    def set_info(self, info: Mapping[str, str]) -> None:
        """Replace the labels of ``build_info`` (e.g. once the attach path is known)."""
        with self._lock:
            self.info = dict(info)
            self._prepare()

    # -- the families ------------------------------------------------------------------
    def _prepare(self) -> None:
        self._families = tuple(self._build())

    def _build(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        info = GaugeMetricFamily(
            f"{PREFIX}_build_info",
            "pktstat-bpf version, libbpf version, capture mode and attach path",
            labels=list(self.info),
        )
        info.add_metric(list(self.info.values()), 1)
        yield info

        labels = ["iface", "direction", "family", "proto"]
        by = "counted in flows (all flows, exact), by interface, direction, address family and protocol"
        fam_p = CounterMetricFamily(f"{PREFIX}_packets_total", f"Packets {by}", labels=labels)
        fam_b = CounterMetricFamily(f"{PREFIX}_bytes_total", f"Bytes {by}", labels=labels)
        for (ifindex, dirn, ipver, proto), (p, b) in sorted(self.traffic.items()):
            lv = [
                self._iface(ifindex),
                protocols.direction(dirn),
                FAMILIES.get(ipver, str(ipver)),
                protocols.flow_name(proto, ipver),
            ]
            fam_p.add_metric(lv, p)
            fam_b.add_metric(lv, b)
        yield fam_p
        yield fam_b

        for field, what in (
            ("", "Packets|Bytes the BPF programs saw (in flows, unparsed or overflow)"),
            ("unparsed_", "Packets|Bytes not counted in a flow: not an IP packet the parser can key"),
            ("overflow_", "Packets|Bytes not counted in a flow: the flow table was full"),
        ):
            name = field or "seen_"
            for unit, i in (("packets", 0), ("bytes", 1)):
                doc = what.split("|")[i] + ", by direction"
                fam = CounterMetricFamily(f"{PREFIX}_{name}{unit}_total", doc, labels=["direction"])
                for dir_name, c in self.conservation.items():
                    fam.add_metric([dir_name], getattr(c, f"{field}{unit}"))
                yield fam

        entries = GaugeMetricFamily(
            f"{PREFIX}_flow_table_entries",
            "The most flows one interval put in the kernel flow table since the start (--max-entries must hold them)",
        )
        entries.add_metric([], self.table_entries)
        yield entries
        live = GaugeMetricFamily(
            f"{PREFIX}_flows_live", "Flows in the lifetime table: those that sent within the idle timeout"
        )
        live.add_metric([], self.live_flows)
        yield live
        ended = CounterMetricFamily(
            f"{PREFIX}_flow_records",
            "Flow records handed out, by reason (idle: retired; active: a long flow's periodic record; "
            "evicted: retired early, the lifetime table was full)",
            labels=["reason"],
        )
        for reason, n in sorted(self.ended.items()):
            ended.add_metric([reason], n)
        yield ended
        size = GaugeMetricFamily(
            f"{PREFIX}_flow_table_max_entries",
            "Size of the kernel flow table (--max-entries); new flows beyond it are counted as overflow",
        )
        size.add_metric([], self.max_entries)
        yield size

        if self.drop_reasons is not None:
            drops = CounterMetricFamily(
                f"{PREFIX}_drops_total",
                "Packets the kernel dropped (--drops), by the kernel's drop reason",
                labels=["reason"],
            )
            for reason, packets in sorted(self.drop_reasons.items()):
                drops.add_metric([reason], packets)
            yield drops

        if self.tracks_health:
            yield from self.health.families(PREFIX, self._iface)
        yield from self._flow_families()
        if self.owners:
            yield from self._process_families()

        if self.last_read is not None:
            ts = GaugeMetricFamily(
                f"{PREFIX}_last_read_timestamp_seconds", "When the flow maps were last read (Unix time)"
            )
            ts.add_metric([], self.last_read)
            yield ts
        upd = GaugeMetricFamily(
            f"{PREFIX}_update_duration_seconds",
            "Time the last update of these metrics took (ranking and preparing the families), seconds",
        )
        upd.add_metric([], self.update_seconds)
        yield upd

    def _iface(self, ifindex: int) -> str:
        return self.ifnames.get(ifindex, str(ifindex)) if ifindex else ""

    def flow_label_names(self) -> list[str]:
        names = ["iface", "direction", "proto", "src", "dst", "src_port", "dst_port"]
        if self.apps:
            names += ["app"]
        if self.names:
            names += ["name"]
        if self.kinds:
            names += ["kind"]
        if self.owners:
            names += ["pid", "comm", "cgroup"]
        if self.pods:
            names += ["src_pod", "dst_pod"]
        return names

    def _flow_families(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        names = self.flow_label_names()
        note = f"of one flow (lifetime), for the {self.top} heaviest flows of about the last minute"
        fam_p = CounterMetricFamily(f"{PREFIX}_flow_packets_total", f"Packets {note}", labels=names)
        fam_b = CounterMetricFamily(f"{PREFIX}_flow_bytes_total", f"Bytes {note}", labels=names)
        fam_r = CounterMetricFamily(
            f"{PREFIX}_flow_retrans_packets_total", f"TCP segments sent again {note}", labels=names
        )
        t = self.flows
        idx = t.top(self.top)
        if len(idx):
            rows = t.rows[idx]  # type: ignore[index]
            cols = {k: v[idx] for k, v in t.columns.items()}
            dicts = render.flow_dicts(
                rows,
                1.0,
                ifnames=self.ifnames,
                cgroups=self.cgroups,
                owners=self.owners,
                columns=cols,
                labels=self.apps,
            )
            for i, row, d in zip(idx, rows, dicts):
                lv = [
                    d.get("iface", ""),
                    protocols.direction(int(row["dir"])),
                    d["proto"],
                    d["srcIp"],
                    d["dstIp"],
                ]
                lv += [str(d["srcPort"]), str(d["dstPort"])]
                if self.apps:  # one of protocols.APP_NAMES; "" where no label applies (not TCP/UDP)
                    lv += [d.get("appProto", "")]
                if self.names:  # SNI, else HTTP Host, else DNS query; "" where none; escaped
                    lv += [render.escape_text(flow_names.shown(d))]
                if self.kinds:
                    lv += [d.get("kind", "data")]
                if self.owners:
                    lv += [str(d["pid"]), render.escape_text(d["comm"]), render.escape_text(d["cgroup"])]
                if self.pods:
                    lv += [d.get("srcPod") or "", d.get("dstPod") or ""]
                p, b, rp = t.values[i]
                fam_p.add_metric(lv, int(p))
                fam_b.add_metric(lv, int(b))
                if self.tracks_health and row["proto"] == 6:
                    fam_r.add_metric(lv, int(rp))
        yield fam_p
        yield fam_b
        if self.tracks_health:
            yield fam_r

    def _process_families(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        names = ["pid", "comm", "cgroup", "direction"]
        note = (
            f"of one process, for the {self.top} heaviest processes of about the last minute; "
            "counted from when the exporter first saw them send"
        )
        fam_p = CounterMetricFamily(f"{PREFIX}_process_packets_total", f"Packets {note}", labels=names)
        fam_b = CounterMetricFamily(f"{PREFIX}_process_bytes_total", f"Bytes {note}", labels=names)
        t = self.processes
        for i in t.top(self.top):
            row = t.rows[i]  # type: ignore[index]
            cg = int(row["cgroup_id"])
            comm = render.escape_text(render.decode_comm(bytes(row["comm"])))
            cgroup = render.escape_text(self.cgroups.get(cg, "") if cg else "")
            lv = [str(int(row["pid"])), comm, cgroup, protocols.direction(int(row["dir"]))]
            p, b = t.values[i]
            fam_p.add_metric(lv, int(p))
            fam_b.add_metric(lv, int(b))
        yield fam_p
        yield fam_b
