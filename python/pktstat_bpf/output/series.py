"""Time series of flows: interval deltas as one long-format DataFrame.

:func:`pktstat_bpf.timeseries` turns the intervals of a live capture
(:meth:`Collector.stream`) or of a capture file (:meth:`Replayer.intervals`)
into one row per flow per interval, ready for ``pivot_table``, ``groupby``
and plotting:

>>> ts = pktstat_bpf.timeseries("tests/data/office.pcap", interval=5.0)
>>> cols = ts.columns.tolist()
>>> cols[:4], cols[cols.index("packets") : cols.index("packets") + 5]
(['timestamp', 'interval', 'flow', 'src_ip'], ['packets', 'bytes', 'bitrate', 'total_packets', 'total_bytes'])
>>> cols[cols.index("total_bytes") + 1 :][:3]   # then the names (a replay reads them)
['server_name', 'alpn', 'http_host']
>>> per_proto = ts.pivot_table(index="timestamp", columns="proto", values="bytes", aggfunc="sum",
...                            observed=True, fill_value=0)
>>> per_proto.sum().to_dict()          # the deltas add up to the whole capture's counts
{'ICMPv4': 5880, 'TCP': 3508613, 'UDP': 3157520, 'IPv6-ICMP': 392, 'ARP': 252}
>>> ts.groupby("flow", observed=True)["bytes"].sum().nlargest(2)
flow
TCP 203.0.113.10:443 -> 192.168.1.23:51514              2389110
UDP [2001:db8:f00d::10]:443 -> [2001:db8:1::23]:50123    1261712
Name: bytes, dtype: uint64

Live, the same from a stream of intervals::

    with pktstat_bpf.Collector(iface="eth0") as c:
        ts = pktstat_bpf.timeseries(c.stream(1.0, duration=60))
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable, Union

import numpy as np

from ..core import frame, protocols
from ..core import names as flow_names
from ..core.about import record_dtype
from ..core.collector import DEFAULT_MAX_ENTRIES
from ..core.errors import UsageError
from ..core.intervals import Interval
from ..core.keys import group, key_words

if TYPE_CHECKING:  # pragma: no cover
    import pandas

#: What :func:`timeseries` reads: intervals, or the path of a capture file.
Source = Union[Iterable[Interval], str, "os.PathLike[str]"]

#: The flow key's columns, as :data:`pktstat_bpf.core.frame.COLUMNS` names them.
_KEY = ("src_ip", "dst_ip", "src_port", "dst_port", "proto", "iface", "direction", "pid", "comm", "cgroup")
#: The columns of :func:`timeseries`, in order (extra per-flow columns of
#: the intervals, such as pod names, follow).
COLUMNS = (
    ("timestamp", "interval", "flow")
    + _KEY
    + ("app", "packets", "bytes", "bitrate", "total_packets", "total_bytes")
)


def timeseries(
    source: Source,
    interval: float | None = None,
    *,
    idle: bool = False,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> pandas.DataFrame:
    """One row per flow and interval (long format), from `source`: an
    iterable of :class:`~pktstat_bpf.live.Interval` (``Collector.stream(...)``,
    ``Replayer.intervals(...)``) or the path of a pcap/pcapng file, replayed
    in steps of `interval` seconds of capture time (default 1; `interval`
    applies only to a file).

    Columns (:data:`COLUMNS`): ``timestamp`` (the end of the interval,
    datetime64[ns, UTC]), ``interval`` (its length in seconds), ``flow`` (a
    categorical label naming the flow, unique per flow key: handy for
    ``pivot`` and legends), the flow key as in :meth:`Snapshot.to_pandas`
    (``src_ip`` ... ``cgroup``), ``app`` (the flow's application label at
    the end of the interval, as in :meth:`Snapshot.to_pandas`), ``packets``, ``bytes`` (uint64: counted *in
    this interval*), ``bitrate`` (float64: 8 x bytes / interval) and
    ``total_packets``, ``total_bytes`` (the flow's lifetime counts at the end
    of the interval). Rows are in time order, the heaviest flow of an
    interval first.

    A flow has a row for each interval it sent in; with ``idle=True``, also
    one (with 0) for each later interval while it is live (until it has been
    idle for the idle timeout: a minute of capture time), so that every
    interval of a flow's life is there (a dense series; a stream of
    intervals gives it with ``rows="live"``). The
    deltas of all rows add up to the cumulative counts of the last interval.
    """
    pd = frame.pandas_module()
    parts: list[dict[str, Any]] = []
    ifnames: dict[int, str] = {}
    cgroups: dict[int, str] = {}
    extra_names: dict[str, None] = {}
    labels = True
    for iv in _intervals(source, interval, max_entries, "live" if idle else "recent"):
        d = iv.delta
        labels = protocols.app_labelled(d.mode)
        keep = np.arange(len(d.records)) if idle else np.flatnonzero(iv.active)
        keep = keep[np.argsort(~d.records["bytes"][keep], kind="stable")]  # heaviest first
        parts.append(
            {
                "records": d.records[keep],
                "end": _end_ns(iv),
                "duration": iv.duration,
                "total_packets": iv.cumulative.records["packets"][keep],
                "total_bytes": iv.cumulative.records["bytes"][keep],
                "extra": {
                    k: v[keep] for k, v in d.columns.items() if k not in ("total_packets", "total_bytes")
                },
            }
        )
        ifnames.update(d.ifnames)
        cgroups.update(d.cgroups)
        extra_names.update(dict.fromkeys(parts[-1]["extra"]))
    return _frame(pd, parts, ifnames, cgroups, list(extra_names), labels)


def _intervals(source: Source, interval: float | None, max_entries: int, rows: str) -> Iterable[Interval]:
    if isinstance(source, (str, os.PathLike)):
        from ..core.replay import Replayer

        return Replayer(max_entries).intervals(source, 1.0 if interval is None else interval, rows=rows)
    if interval is not None:
        raise UsageError("interval applies to a capture file; a stream of intervals has its own")
    return source


def _end_ns(iv: Interval) -> int:
    """The end of the interval in Unix-epoch ns: exact for a replay (from
    the frames' timestamps), to the microsecond for a live capture."""
    end = iv.delta.extra.get("end") if iv.delta.mode == "replay" else None
    if isinstance(end, str) and end.endswith("Z"):
        return int(np.datetime64(end[:-1], "ns").astype(np.int64))
    return round(iv.end * 1e6) * 1000


def _frame(
    pd: Any,
    parts: list[dict[str, Any]],
    ifnames: dict[int, str],
    cgroups: dict[int, str],
    extras: list[str],
    labels: bool = True,
) -> pandas.DataFrame:
    sizes = [len(p["records"]) for p in parts]
    dtype = parts[0]["records"].dtype if parts else record_dtype()
    # field by field into zeros (np.concatenate would pack the structured dtype): bytes that no
    # field names are 0 in every row, so equal keys are equal byte for byte (see _flow_labels)
    records = np.zeros(sum(sizes), dtype)
    at = 0
    for p, size in zip(parts, sizes):
        records[at : at + size] = p["records"]
        at += size
    durations = np.repeat(np.array([p["duration"] for p in parts], np.float64), sizes)
    ends = np.repeat(np.array([p["end"] for p in parts], np.int64), sizes)
    nbytes = records["bytes"].astype(np.float64)
    bitrate = np.divide(nbytes * 8.0, durations, out=np.zeros(len(records)), where=durations > 0)
    cols = frame.columns(pd, records, bitrate=bitrate, ifnames=ifnames, cgroups=cgroups, labels=labels)
    data: dict[str, Any] = {
        "timestamp": pd.DatetimeIndex(ends.astype("datetime64[ns]")).tz_localize("UTC"),
        "interval": durations,
        "flow": _flow_labels(pd, records, cols),
    }
    data.update({k: cols[k] for k in _KEY})
    data.update({k: cols[k] for k in ("app", "packets", "bytes", "bitrate")})
    for name in ("total_packets", "total_bytes"):
        data[name] = (
            np.concatenate([p[name] for p in parts]).astype(np.uint64) if parts else np.zeros(0, np.uint64)
        )
    for name in extras:
        values: Any = np.concatenate(
            [p["extra"].get(name, np.full(len(p["records"]), None, object)) for p in parts]
        )
        if name in flow_names.COUNT_COLUMNS:  # typed as in Snapshot.to_pandas (core/frame.py)
            values = pd.array(values, dtype="UInt32")
        elif name in flow_names.COLUMNS:
            values = pd.array(values, dtype="str")
        data[name] = values
    return pd.DataFrame(data, columns=list(COLUMNS) + extras, copy=False)


def _flow_labels(pd: Any, records: np.ndarray, cols: dict[str, Any]) -> Any:
    """A categorical naming each row's flow (``TCP 10.0.0.1:443 ->
    10.0.0.2:51514 egress``), made once per distinct flow key; categories
    in order of the flows' bytes, heaviest first."""
    n = len(records)
    if n == 0:
        return pd.Categorical.from_codes(np.zeros(0, np.int32), [])
    first, codes = group(key_words(records))
    r = records[first]
    fields = {k: np.asarray(cols[k][first]) for k in ("src_ip", "dst_ip", "iface", "direction", "comm")}
    several_ifaces = len(set(fields["iface"])) > 1
    labels = []
    for i, rec in enumerate(r):
        proto = int(rec["proto"])
        src, dst = str(fields["src_ip"][i]), str(fields["dst_ip"][i])
        if proto in protocols.PORTED:
            src, dst = _endpoint(src, int(rec["sport"])), _endpoint(dst, int(rec["dport"]))
        name = protocols.flow_name(proto, int(rec["ipver"]))
        label = f"{name} {src} -> {dst}"
        if proto in protocols.ICMP:
            label += f" type {int(rec['sport'])} code {int(rec['dport'])}"
        extra = protocols.header_text(protocols.header_fields(name, int(rec["sport"]), int(rec["dport"])))
        if extra:  # ARP op, ESP/AH spi, GRE, OSPF
            label += f" {extra}"
        if fields["direction"][i]:
            label += f" {fields['direction'][i]}"
        if several_ifaces and fields["iface"][i]:
            label += f" on {fields['iface'][i]}"
        if rec["pid"] or fields["comm"][i]:
            label += f" {fields['comm'][i]}[{int(rec['pid'])}]"
        labels.append(label)
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):  # keys that differ only in what a label leaves out (cgroup ...)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} #{seen[label]}"
    # categories heaviest first, so pivoted columns and legends come in that order
    weight = np.bincount(codes, weights=records["bytes"].astype(np.float64), minlength=len(labels))
    order = np.argsort(-weight, kind="stable")
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return pd.Categorical.from_codes(rank[codes], [labels[i] for i in order])


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
