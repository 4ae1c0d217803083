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
  heaviest flows only (``--prometheus-top N``), and in modes that know the
  owning process, per-process counters (``process_*_total``) for the N
  heaviest processes: at most 2 N series each.
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

import argparse
import errno
import ipaddress
import logging
import math
import socket
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import numpy as np

from . import protocols, render
from .errors import PktstatError, PrivilegeError, UsageError
from .live import flow_keys, hash_words, key_words
from .snapshot import Counters

if TYPE_CHECKING:  # pragma: no cover
    from .live import Interval

log = logging.getLogger("pktstat_bpf")

PREFIX = "pktstat_bpf"
#: Default of ``--prometheus-top``.
DEFAULT_TOP = 100
#: Upper bound of ``--prometheus-top`` (each flow costs two series per node).
MAX_TOP = 10_000
#: Time constant (seconds) of the exponentially weighted traffic that ranks
#: flows and processes for the top N.
RANK_WINDOW = 60.0
#: A flow or process that sent nothing for this long (seconds) is no longer
#: ranked or exported.
IDLE_FORGET = 600.0
#: Candidates kept for the ranking: this many times N (at least 256), so a
#: flow just below the top N keeps its weight when it climbs back.
TRACK_FACTOR = 4
#: Seconds a connection to the metrics server may stay silent before it is dropped.
REQUEST_TIMEOUT = 30.0

DIRECTIONS = ("ingress", "egress", "none")
FAMILIES = {4: "ipv4", 6: "ipv6"}


def _prometheus_client() -> ModuleType:
    try:
        import prometheus_client
    except ImportError:
        raise PktstatError(
            "--prometheus needs prometheus-client: pip install 'pktstat-bpf[prometheus]'"
        ) from None
    return prometheus_client


# -- the listen address ---------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[IPv6]:PORT``, ``PORT`` or ``:PORT`` -> (host, port).
    A missing address means 127.0.0.1: flow metadata is not published
    beyond this host unless asked for (``0.0.0.0:PORT``, ``[::]:PORT``).
    Port 0 picks a free port (the log line names it)."""
    t = text.strip()
    usage = "expected ADDR:PORT or PORT, e.g. 127.0.0.1:9100, 0.0.0.0:9100 or [::1]:9100"
    if not t:
        raise UsageError(f"--prometheus: empty address ({usage})")
    if t.startswith("["):
        host, sep, port = t[1:].partition("]:")
        if not sep:
            raise UsageError(f"--prometheus: invalid address {text!r} ({usage})")
    elif t.count(":") > 1:
        raise UsageError(f"--prometheus: invalid address {text!r}: bracket an IPv6 address, e.g. [::1]:9100")
    elif ":" in t:
        host, port = t.split(":")
    elif t.isdigit():
        host, port = "", t
    else:
        raise UsageError(f"--prometheus: invalid address {text!r} ({usage})")
    if not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--prometheus: invalid port {port!r} (expected 0-65535)")
    if not host or host == "localhost":
        host = "127.0.0.1"
    else:
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            expected = "expected an IP address such as 127.0.0.1, 0.0.0.0 or ::"
            raise UsageError(f"--prometheus: invalid address {host!r} ({expected})") from None
    return host, int(port)


def format_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The exporter's flags."""
    g = p.add_argument_group("Prometheus exporter")
    g.add_argument(
        "--prometheus", metavar="ADDR:PORT",
        help="serve /metrics for Prometheus (ADDR defaults to 127.0.0.1; 0.0.0.0:PORT for all addresses); "
        "runs until Ctrl-C/SIGTERM unless -t is given",
    )  # fmt: skip
    g.add_argument(
        "--prometheus-top", metavar="N", type=_int, default=None,
        help=f"export per-flow (and per-process) series for the N heaviest only (default {DEFAULT_TOP}; "
        "0: none; totals are always exact)",
    )  # fmt: skip


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None


def check_arguments(args: argparse.Namespace) -> None:
    """Validate the exporter's flags (exit 2 on bad input); sets
    ``args.prometheus_listen`` to (host, port) or None."""
    args.prometheus_listen = None
    if args.prometheus is None:
        if args.prometheus_top is not None:
            raise UsageError("--prometheus-top needs --prometheus")
        return
    args.prometheus_listen = parse_listen(args.prometheus)
    if args.prometheus_top is None:
        args.prometheus_top = DEFAULT_TOP
    if not 0 <= args.prometheus_top <= MAX_TOP:
        raise UsageError(f"--prometheus-top must be between 0 and {MAX_TOP}, not {args.prometheus_top}")


# -- ranking ----------------------------------------------------------------------


def top_order(score: np.ndarray, tiebreak: np.ndarray, n: int) -> np.ndarray:
    """Positions of the `n` largest `score` values (ties: larger `tiebreak`
    first), in that order. Linear in ``len(score)`` plus ``n log n``."""
    m = len(score)
    n = min(n, m)
    if n <= 0:
        return np.empty(0, dtype=np.intp)
    cand = np.arange(m)
    if n < m:
        kth = np.partition(score, m - n)[m - n]
        above = np.flatnonzero(score > kth)
        tie = np.flatnonzero(score == kth)
        need = n - len(above)
        if need < len(tie):
            tb = tiebreak[tie]
            tie = tie[np.argpartition(-tb.astype(np.float64), need - 1)[:need]]
        cand = np.concatenate([above, tie])
    order = np.lexsort((-tiebreak[cand].astype(np.float64), -score[cand]))
    return cand[order]


def _words(keys: np.ndarray) -> np.ndarray:
    """Opaque keys (a ``V<n>`` array) as rows of 64-bit words, zero-padded."""
    n, width = len(keys), keys.dtype.itemsize
    raw = np.zeros((n, -(-width // 8) * 8), dtype=np.uint8)
    raw[:, :width] = np.ascontiguousarray(keys).view(np.uint8).reshape(n, width)
    return raw.view(np.uint64)


def _group(keys: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Unique `keys` (``V<n>``), the exact (uint64) sum of each of `values`
    per key, and the position of one row of each key. Grouped on 64-bit
    hashes (a sort of integers), checked against the whole keys; should two
    different keys share a hash, on the keys themselves."""
    words = _words(keys)
    _, first, inverse = np.unique(hash_words(words), return_index=True, return_inverse=True)
    inverse = inverse.reshape(len(keys))
    if not (words == words[first][inverse]).all():  # pragma: no cover - a 64-bit collision
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        inverse = inverse.reshape(len(keys))
    return keys[first], _sums(inverse, len(first), *values), first


def _sums(inverse: np.ndarray, groups: int, *values: np.ndarray) -> list[np.ndarray]:
    """Exact uint64 sums of each of `values` per group (`inverse`: the
    group of each row, every group non-empty)."""
    out = []
    for v in values:
        acc = np.zeros(groups, np.uint64)
        np.add.at(acc, inverse, v.astype(np.uint64, copy=False))
        out.append(acc)
    return out


class TopTracker:
    """The heaviest keys of a capture by exponentially weighted traffic.

    Per interval, :meth:`advance` lets its time pass (weights decay by
    ``exp(-dt / window)``; a key idle for `forget` seconds is dropped), then
    :meth:`add` merges the keys that sent in it (unique): their bytes in it,
    the packets/bytes to export and one record each (for the labels). At
    most `capacity` keys are kept, the heaviest. With ``accumulate`` the
    exported values are summed over updates (per-process sums of deltas);
    without, they are replaced (a flow's lifetime count read from the
    kernel).
    """

    def __init__(self, capacity: int, *, window: float = RANK_WINDOW, forget: float = IDLE_FORGET,
                 accumulate: bool = False) -> None:  # fmt: skip
        self.capacity = capacity
        self.window = window
        self.forget = forget
        self.accumulate = accumulate
        self.keys: np.ndarray | None = None
        self.hashes = np.empty(0, dtype=np.uint64)
        self.score = np.empty(0, dtype=np.float64)
        self.values = np.empty((0, 2), dtype=np.uint64)
        self.idle = np.empty(0, dtype=np.float64)  # seconds since the key last sent
        self.rows: np.ndarray | None = None
        self.columns: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.score)

    def advance(self, dt: float) -> None:
        """Let `dt` seconds pass: weights decay, idle keys are forgotten."""
        if len(self.score) == 0:
            return
        self.score *= math.exp(-dt / self.window) if self.window > 0 else 0.0
        self.idle += dt
        keep = self.idle < self.forget
        if not keep.all():
            self._take(np.flatnonzero(keep))

    def add(self, keys: np.ndarray | Callable[[np.ndarray], np.ndarray], sent: np.ndarray, values: np.ndarray,
            rows: np.ndarray, columns: Mapping[str, np.ndarray] | None = None,
            hashes: np.ndarray | None = None) -> None:  # fmt: skip
        """Merge the keys (unique, ``V<n>``) that sent in the interval just
        :meth:`advance`-d over. `keys` may be a function giving the keys at
        some positions (only those are then made), with their 64-bit
        `hashes` given."""
        if self.capacity <= 0 or len(sent) == 0:
            return
        columns = columns or {}
        if callable(keys):
            key_at = keys
        else:
            key_at = keys.__getitem__
            if hashes is None:
                hashes = hash_words(_words(keys))
        assert hashes is not None
        if self.keys is None:
            self.keys, self.rows = key_at(np.arange(0)), rows[:0]
            self.columns = {k: v[:0] for k, v in columns.items()}
        pos = self._find(key_at, hashes)
        found = pos >= 0
        at = pos[found]
        self.score[at] += sent[found]
        self.idle[at] = 0.0
        if self.accumulate:
            self.values[at] += values[found].astype(np.uint64)
        else:
            self.values[at] = values[found]
        self.rows[at] = rows[found]  # type: ignore[index]
        for k in self.columns:
            self.columns[k][at] = columns[k][found]
        new = np.flatnonzero(~found)
        if len(new) > self.capacity:  # only the heaviest new keys can make it
            new = new[top_order(sent[new].astype(np.float64), values[new, 1], self.capacity)]
        if len(new):
            self.keys = np.concatenate([self.keys, key_at(new)])
            self.hashes = np.concatenate([self.hashes, hashes[new]])
            self.score = np.concatenate([self.score, sent[new].astype(np.float64)])
            self.values = np.concatenate([self.values, values[new].astype(np.uint64)])
            self.idle = np.concatenate([self.idle, np.zeros(len(new))])
            self.rows = np.concatenate([self.rows, rows[new]])
            self.columns = {k: np.concatenate([v, columns[k][new]]) for k, v in self.columns.items()}
        if len(self.score) > self.capacity:
            self._take(np.sort(top_order(self.score, self.values[:, 1], self.capacity)))

    def _find(self, key_at: Callable[[np.ndarray], np.ndarray], hashes: np.ndarray) -> np.ndarray:
        """Position of each incoming key among the tracked keys, or -1: a
        search of the sorted tracked hashes, confirmed on the whole key."""
        out = np.full(len(hashes), -1, dtype=np.intp)
        if len(self.hashes) == 0 or len(hashes) == 0:
            return out
        order = np.argsort(self.hashes)
        ordered = self.hashes[order]
        pos = np.minimum(np.searchsorted(ordered, hashes), len(ordered) - 1)
        hit = np.flatnonzero(ordered[pos] == hashes)
        mine = order[pos[hit]]
        same = self.keys[mine] == key_at(hit)  # type: ignore[index]
        out[hit[same]] = mine[same]
        return out

    def _take(self, idx: np.ndarray) -> None:
        self.keys, self.hashes = self.keys[idx], self.hashes[idx]  # type: ignore[index]
        self.score, self.values, self.idle = self.score[idx], self.values[idx], self.idle[idx]
        self.rows = self.rows[idx]  # type: ignore[index]
        self.columns = {k: v[idx] for k, v in self.columns.items()}

    def top(self, n: int) -> np.ndarray:
        """Positions of the `n` heaviest keys, heaviest first (ties: more
        exported bytes first)."""
        return top_order(self.score, self.values[:, 1] if len(self.values) else self.score, n)


# -- the metrics ------------------------------------------------------------------------


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
    ) -> None:
        _prometheus_client()
        self.top = top
        self.info = dict(info or {})
        capacity = max(TRACK_FACTOR * top, 256) if top > 0 else 0
        self.flows = TopTracker(capacity, window=window, forget=forget)
        self.processes = TopTracker(capacity, window=window, forget=forget, accumulate=True)
        #: (ifindex, direction, family, proto) -> [packets, bytes]
        self.traffic: dict[tuple[int, int, int, int], list[int]] = {}
        self.conservation: dict[str, Counters] = {"ingress": Counters(), "egress": Counters()}
        self.table_entries = 0
        self.max_entries = max_entries
        self.last_read: float | None = None
        self.update_seconds = 0.0
        self.updates = 0
        self.updated_at = time.monotonic()
        self.owners = False
        self.kinds = False  # process mode: TCP retransmissions are flows of their own (label kind)
        self.pods = False
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
    def update(self, iv: "Interval") -> None:
        """Account one interval and prepare the families the next scrapes see."""
        t0 = time.perf_counter()
        with self._lock:
            self._update(iv)
            self.updated_at = time.monotonic()
            self.update_seconds = time.perf_counter() - t0
            self._prepare()

    def _update(self, iv: "Interval") -> None:
        d = iv.delta
        self.owners = bool(d.owners)
        self.kinds = d.mode == "process"
        self.pods = "src_pod" in d.columns
        self.ifnames.update(d.ifnames)
        self.cgroups = d.cgroups
        self.max_entries = d.max_entries or self.max_entries
        self.table_entries = iv.cumulative.totals.flows
        self.last_read = iv.end
        self.updates += 1
        for name in DIRECTIONS:
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
        # (ifindex, direction, family, protocol) packed exactly into one integer
        key = (r["ifindex"].astype(np.uint64) << np.uint64(24)) | (
            r["dir"].astype(np.uint64) << np.uint64(16)
        )
        key |= (r["ipver"].astype(np.uint64) << np.uint64(8)) | r["proto"].astype(np.uint64)
        uniq, inverse = np.unique(key, return_inverse=True)
        packets, bytes_ = _sums(inverse.reshape(len(r)), len(uniq), r["packets"], r["bytes"])
        for k, p, b in zip(uniq.tolist(), packets.tolist(), bytes_.tolist()):
            k = (k >> 24, (k >> 16) & 0xFF, (k >> 8) & 0xFF, k & 0xFF)
            acc = self.traffic.setdefault(k, [0, 0])
            acc[0] += p
            acc[1] += b
        if self.top <= 0:
            return
        cols = {k: v[active] for k, v in d.columns.items() if k not in ("total_packets", "total_bytes")}
        lifetime = np.stack([d.columns["total_packets"][active], d.columns["total_bytes"][active]], axis=1)
        self.flows.add(
            lambda idx: flow_keys(r[idx]), r["bytes"], lifetime, r, cols, hashes=hash_words(key_words(r))
        )
        if self.owners:
            pk = np.empty(len(r), _PROCESS_KEY)
            for f in cast("tuple[str, ...]", _PROCESS_KEY.names):  # a structured dtype: names set
                pk[f] = r[f]
            uniq, (packets, bytes_), first = _group(
                pk.view(f"V{_PROCESS_KEY.itemsize}"), r["packets"], r["bytes"]
            )
            self.processes.add(uniq, bytes_, np.stack([packets, bytes_], axis=1), r[first])

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
                _direction(dirn),
                FAMILIES.get(ipver, str(ipver)),
                protocols.name(proto),
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

        entries = GaugeMetricFamily(f"{PREFIX}_flow_table_entries", "Flows in the kernel flow table")
        entries.add_metric([], self.table_entries)
        yield entries
        size = GaugeMetricFamily(
            f"{PREFIX}_flow_table_max_entries",
            "Size of the kernel flow table (--max-entries); new flows beyond it are counted as overflow",
        )
        size.add_metric([], self.max_entries)
        yield size

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
        t = self.flows
        idx = t.top(self.top)
        if len(idx):
            rows = t.rows[idx]  # type: ignore[index]
            cols = {k: v[idx] for k, v in t.columns.items()}
            dicts = render.flow_dicts(
                rows, 1.0, ifnames=self.ifnames, cgroups=self.cgroups, owners=self.owners, columns=cols
            )
            for i, row, d in zip(idx, rows, dicts):
                lv = [d.get("iface", ""), _direction(int(row["dir"])), d["proto"], d["srcIp"], d["dstIp"]]
                lv += [str(d["srcPort"]), str(d["dstPort"])]
                if self.kinds:
                    lv += [d.get("kind", "data")]
                if self.owners:
                    lv += [str(d["pid"]), render.escape_text(d["comm"]), render.escape_text(d["cgroup"])]
                if self.pods:
                    lv += [d.get("srcPod") or "", d.get("dstPod") or ""]
                p, b = t.values[i]
                fam_p.add_metric(lv, int(p))
                fam_b.add_metric(lv, int(b))
        yield fam_p
        yield fam_b

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
            lv = [str(int(row["pid"])), comm, cgroup, _direction(int(row["dir"]))]
            p, b = t.values[i]
            fam_p.add_metric(lv, int(p))
            fam_b.add_metric(lv, int(b))
        yield fam_p
        yield fam_b


def _direction(d: int) -> str:
    return DIRECTIONS[d] if d < len(DIRECTIONS) else str(d)


# -- the HTTP server ---------------------------------------------------------------------


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT  # a silent client is dropped, its thread freed

    def log_message(self, format: str, *args: Any) -> None:  # the base class's argument names
        pass


def _server_class(family: int) -> type:
    from socketserver import ThreadingMixIn

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a stuck scrape never holds up the exit
        address_family = family
        allow_reuse_address = True

        def server_bind(self) -> None:
            if family == socket.AF_INET6:
                # [::] serves IPv4 too, whatever the sysctl bindv6only says
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

        def handle_error(self, request: Any, client_address: Any) -> None:
            log.debug("metrics request from %s failed", client_address, exc_info=True)

    return Server


LANDING = b"""<html><head><title>pktstat-bpf exporter</title></head>
<body><h1>pktstat-bpf exporter</h1><p><a href="/metrics">Metrics</a></p></body></html>
"""


class MetricsServer:
    """``/metrics`` of a prometheus-client registry over HTTP, one thread
    per request; ``/healthz`` answers 200 ``ok``, or 503 with the reason
    `health()` gives (for liveness probes). The socket is bound in the
    constructor (so a bad or busy address fails before anything is
    attached); :meth:`start` begins serving; :meth:`close` stops
    (idempotent)."""

    def __init__(
        self, host: str, port: int, registry: Any, health: Callable[[], str | None] | None = None
    ) -> None:
        prometheus_client = _prometheus_client()
        where = format_listen(host, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        metrics_app = prometheus_client.make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., object]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return metrics_app(environ, start_response)
            if path == "/":
                start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
                return [LANDING]
            if path == "/healthz":
                problem = health() if health is not None else None
                status = "200 OK" if problem is None else "503 Service Unavailable"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [(problem or "ok").encode() + b"\n"]
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"404 Not Found: metrics are at /metrics\n"]

        try:
            self.httpd = _server_class(family)((host, port), _Handler)
        except OSError as e:
            raise _bind_error(e, where) from None
        self.httpd.set_app(app)
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{format_listen(self.host, self.port)}/metrics"

    def start(self) -> "MetricsServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        if self.httpd is not None:
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bind_error(e: OSError, where: str) -> PktstatError:
    if e.errno == errno.EADDRINUSE:
        return PktstatError(f"--prometheus: cannot listen on {where}: the address is already in use")
    if e.errno == errno.EADDRNOTAVAIL:
        return UsageError(f"--prometheus: cannot listen on {where}: the address is not on this host")
    if e.errno in (errno.EACCES, errno.EPERM):
        return PrivilegeError(
            f"--prometheus: cannot listen on {where}: permission denied (ports below 1024 need "
            "CAP_NET_BIND_SERVICE)"
        )
    return PktstatError(f"--prometheus: cannot listen on {where}: {e.strerror or e}")


def make_registry(metrics: FlowMetrics) -> Any:
    """A registry with `metrics` and the exporter's own process metrics
    (``process_*``: CPU, memory, file descriptors) and ``python_info``."""
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


# -- the CLI job -----------------------------------------------------------------------


def build_info(collector: Any) -> dict[str, str]:
    from . import __version__, _core

    return {
        "version": __version__,
        "libbpf": _core.libbpf_version(),
        "mode": collector.mode,
        "attach": collector.status["attach"],
    }


def run_exporter(args: argparse.Namespace) -> int:
    """The ``--prometheus`` job: count, and serve /metrics, until -t,
    Ctrl-C or SIGTERM (exit 0); everything is detached on the way out.

    Order: the mode flags are checked and the port is bound before any
    program is loaded, so a bad or busy address fails with nothing attached;
    serving starts once the programs are attached."""
    from .cli import _StopSignals, collector_from_args
    from .durations import format_duration
    from .errors import EXIT_OK
    from .views import view_from_args

    _prometheus_client()
    host, port = args.prometheus_listen
    collector = collector_from_args(args)  # validates the mode flags; attaches nothing yet
    metrics = FlowMetrics(top=args.prometheus_top, max_entries=collector.max_entries)
    # healthy while readings keep coming: a stuck capture loop fails the liveness probe
    limit = 3 * args.refresh + 10
    server = MetricsServer(host, port, make_registry(metrics), health=lambda: metrics.stale(limit))
    try:
        with view_from_args(args) as view, collector, _StopSignals() as stop:
            metrics.set_info(build_info(collector))
            server.start()
            until = f"for {format_duration(args.timeout)}" if args.timeout > 0 else "until interrupted"
            log.info(
                "counting on %s via %s %s (Ctrl-C to stop); metrics on %s",
                collector.where, collector.status["attach"], until, server.url,
            )  # fmt: skip
            for iv in collector.stream(args.refresh, duration=args.timeout or None, stop=stop.event):
                metrics.update(view.apply_interval(iv))
    finally:
        server.close()
    return EXIT_OK


__all__: Sequence[str] = (
    "FlowMetrics",
    "MetricsServer",
    "TopTracker",
    "make_registry",
    "parse_listen",
    "run_exporter",
)
