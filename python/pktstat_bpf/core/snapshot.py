"""Snapshot: the flows and conservation counters of one moment of a capture."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from . import conversations, protocols, render

if TYPE_CHECKING:  # pragma: no cover
    import os

    import pandas
    import pyarrow


@dataclass(frozen=True)
class Counters:
    """Packets and bytes a program saw, and those it could not put in a flow:
    ``unparsed`` (not an IP packet it can key) and ``overflow`` (flow table
    full). ``packets == flow packets + unparsed_packets + overflow_packets``."""

    packets: int = 0
    bytes: int = 0
    unparsed_packets: int = 0
    unparsed_bytes: int = 0
    overflow_packets: int = 0
    overflow_bytes: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def __sub__(self, other: Counters) -> Counters:
        """What was counted between two readings (`other` the earlier one)."""
        return Counters(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def as_dict(self, camel: bool = False) -> dict[str, int]:
        d = dataclasses.asdict(self)
        if camel:
            d = {render.camel(k): v for k, v in d.items()}
        return d


@dataclass(frozen=True)
class Totals:
    """Conservation counters per direction (``none`` is replay, where a
    capture file has no direction), and the sum over flows. In modes that
    attribute traffic to processes, ``unowned_packets``/``unowned_bytes``
    count the events in flows without a pid (None elsewhere)."""

    ingress: Counters = Counters()
    egress: Counters = Counters()
    none: Counters = Counters()
    flow_packets: int = 0
    flow_bytes: int = 0
    flows: int = 0
    unowned_packets: int | None = None
    unowned_bytes: int | None = None

    @classmethod
    def from_arrays(
        cls, stats: np.ndarray, records: np.ndarray, unowned: tuple[int, int] | None = None
    ) -> Totals:
        names = stats.dtype.names or ()
        per_dir = [Counters(*(int(stats[d][f]) for f in names)) for d in range(len(stats))]
        ingress, egress, none = (per_dir + [Counters()] * 3)[:3]  # the engines give all three
        return cls(
            ingress,
            egress,
            none,
            flow_packets=int(records["packets"].sum(dtype=np.uint64)) if len(records) else 0,
            flow_bytes=int(records["bytes"].sum(dtype=np.uint64)) if len(records) else 0,
            flows=len(records),
            unowned_packets=None if unowned is None else int(unowned[0]),
            unowned_bytes=None if unowned is None else int(unowned[1]),
        )

    @property
    def all(self) -> Counters:
        return self.ingress + self.egress + self.none

    @property
    def conserved(self) -> bool:
        """True when every packet seen is in a flow, unparsed or overflow
        (exact when no packet is in flight while the snapshot is read)."""
        a = self.all
        return (
            a.packets == self.flow_packets + a.unparsed_packets + a.overflow_packets
            and a.bytes == self.flow_bytes + a.unparsed_bytes + a.overflow_bytes
        )

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = self.all.as_dict(camel=True)
        d["flows"] = self.flows
        d["flowPackets"] = self.flow_packets
        d["flowBytes"] = self.flow_bytes
        if self.unowned_packets is not None:
            d["unownedPackets"] = self.unowned_packets
            d["unownedBytes"] = self.unowned_bytes
        for name in ("ingress", "egress"):
            c = getattr(self, name)
            if c.packets:
                d[name] = c.as_dict(camel=True)
        return d


@dataclass(frozen=True)
class Snapshot:
    """Flows and counters read at one moment.

    ``records`` is a NumPy structured array (dtype ``pktstat_bpf.RECORD_DTYPE``)
    with one row per flow: addresses as 16 bytes (IPv4-mapped for IPv4), ports,
    protocol, direction, interface index, owner slots (pid, cgroup_id, comm),
    packets, bytes and first/last seen as ``datetime64[ns]`` (UTC).
    ``duration`` is the time the snapshot covers in seconds (capture time, or
    last minus first frame timestamp for a replay).
    ``columns`` holds extra per-flow arrays aligned with ``records`` (e.g.
    ``total_bytes`` of an interval, ``dst_pod`` names); they follow the rows
    through :meth:`sorted` and :meth:`select` and are rendered in camelCase.
    """

    records: np.ndarray
    totals: Totals
    duration: float
    started_at: float
    taken_at: float
    mode: str
    iface: str | None = None
    attach: str = ""
    max_entries: int = 0
    ifnames: Mapping[int, str] = field(default_factory=dict)
    cgroups: Mapping[int, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: True in modes that attribute flows to processes (pid, comm, cgroup)
    owners: bool = False
    #: The most flows one drained interval put in the kernel table (what
    #: ``max_entries`` must hold); 0 where the reading was one pass, when it
    #: is the number of records.
    peak_flows: int = 0
    #: True for the snapshot :meth:`conversations` makes: one row per
    #: conversation, oriented client to server
    paired: bool = False

    def __len__(self) -> int:
        return len(self.records)

    def bitrates(self) -> np.ndarray:
        """Lifetime average bitrate of each flow: 8 x bytes / duration."""
        if self.duration <= 0:
            return np.zeros(len(self.records))
        return self.records["bytes"].astype(np.float64) * (8.0 / self.duration)

    def sorted(self, by: str = "bitrate") -> Snapshot:
        """A copy with records ordered by `by` (bitrate, packets, bytes:
        descending), ties broken by bytes, packets, then the key, so output is
        deterministic."""
        r = self.records
        primary = {"bitrate": "bytes", "bytes": "bytes", "packets": "packets"}[by]
        secondary = "packets" if primary == "bytes" else "bytes"
        keys = [r["dport"], r["sport"], r["proto"], r["dir"]]
        keys += [r["daddr"][:, i] for i in range(15, -1, -1)]
        keys += [r["saddr"][:, i] for i in range(15, -1, -1)]
        keys += [~r[secondary], ~r[primary]]
        order = np.lexsort(keys) if len(r) else np.arange(0)
        return self.take(order)

    def take(self, index: np.ndarray) -> Snapshot:
        """A copy with the rows `index` (integer positions or a boolean
        mask) of `records` and of every extra column; totals are unchanged
        (they describe everything the programs saw)."""
        cols = {k: v[index] for k, v in self.columns.items()}
        return dataclasses.replace(self, records=self.records[index], columns=cols)

    def with_columns(self, **columns: np.ndarray) -> Snapshot:
        """A copy with extra per-flow columns added (aligned with records)."""
        for k, v in columns.items():
            if len(v) != len(self.records):
                raise ValueError(f"column {k!r} has {len(v)} rows, records {len(self.records)}")
        return dataclasses.replace(self, columns={**self.columns, **columns})

    def conversations(self) -> Snapshot:
        """The flows' two directions put together: a snapshot with one row
        per conversation (:mod:`~pktstat_bpf.core.conversations`), oriented
        client to server (the side that sent the first packet; where that
        is unknown, the server is the side with the lower port), its
        packets and bytes those of both directions and the columns
        ``c2s_packets``, ``c2s_bytes``, ``s2c_packets``, ``s2c_bytes``
        each way. Its :meth:`to_pandas` names the endpoints ``client_ip``,
        ``client_port``, ``server_ip``, ``server_port``, its JSON
        ``clientIp`` ... under ``conversations``, its text ``client:`` and
        ``server:``. The TCP health is both directions' (retransmissions and
        round trips add up; the smallest and largest round trip of either).
        Totals are the snapshot's; the flows' names (the
        columns ``server_name`` ... of core/names.py) are those of the
        client-to-server direction, else of the other one; other per-flow
        extra columns are not carried over.

        >>> conv = pktstat_bpf.replay("tests/data/office.pcap").conversations()
        >>> c = conv.sorted().to_pandas().iloc[0]
        >>> c["client_ip"], c["server_ip"], int(c["server_port"]), c["app"]
        ('192.168.1.23', '203.0.113.10', 443, 'TLS')
        >>> int(c["c2s_bytes"] + c["s2c_bytes"]) == int(c["bytes"])
        True
        """
        if self.paired:
            return self
        rows, cols = conversations.pair(self.records, columns=self.columns)
        return dataclasses.replace(self, records=rows, columns=cols, paired=True)

    def flows(self) -> list[dict[str, Any]]:
        """The flows as JSON-ready dicts, sorted by bitrate."""
        return self.sorted().flow_dicts()

    def flow_dicts(self) -> list[dict[str, Any]]:
        """The flows as JSON-ready dicts, in the order of ``records``."""
        return render.flow_dicts(
            self.records,
            self.duration,
            ifnames=self.ifnames,
            cgroups=self.cgroups,
            owners=self.owners,
            columns=self.columns,
            labels=protocols.app_labelled(self.mode),
            paired=self.paired,
        )

    def header(self) -> dict[str, Any]:
        """Mode, interface, attach path, duration and conservation counters."""
        h: dict[str, Any] = {"mode": self.mode}
        if self.iface:
            h["iface"] = self.iface
        if self.attach:
            h["attach"] = self.attach
        h["start"] = render.rfc3339(int(self.started_at * 1e9))
        h["end"] = render.rfc3339(int(self.taken_at * 1e9))
        h["duration"] = round(self.duration, 9)
        if self.max_entries:
            h["maxEntries"] = self.max_entries
        h.update(self.extra)
        h["totals"] = self.totals.as_dict()
        return h

    def to_json(self, indent: int | None = None) -> str:
        """``{"mode": ..., "totals": {...}, "flows": [...]}``; flows use the
        camelCase fields of pktstat-bpf's JSON (srcIp, dstIp, proto, srcPort,
        dstPort, bytes, packets, bitrate, ...)."""
        doc = self.header()
        doc["conversations" if self.paired else "flows"] = self.flows()
        return render.dumps(doc, indent=indent)

    def header_line(self) -> str:
        """The one-line summary printed above the text table (``#``-prefixed)."""
        t, a = self.totals, self.totals.all
        on = self.iface or self.extra.get("cgroup")
        where = f" on {render.escape_text(on)}" if on else ""
        if not where and self.extra.get("file"):
            where = f" of {render.escape_text(str(self.extra['file']))}"
        how = f" ({self.attach})" if self.attach else ""
        dirs = ""
        if t.ingress.packets or t.egress.packets:
            dirs = f" [ingress {t.ingress.packets}/{t.ingress.bytes}, egress {t.egress.packets}/{t.egress.bytes}]"
        return (
            f"# {self.mode}{where}{how}, {self.duration:.2f}s: {t.flows} flows, "
            f"{a.packets} packets, {a.bytes} bytes{dirs}; "
            f"unparsed {a.unparsed_packets} packets/{a.unparsed_bytes} bytes; "
            f"overflow {a.overflow_packets} packets/{a.overflow_bytes} bytes"
            + (
                f"; without owner {t.unowned_packets} packets/{t.unowned_bytes} bytes"
                if t.unowned_packets is not None
                else ""
            )
            + (f"; {len(self.records)} conversations" if self.paired else "")
            + (f"; {self.extra['note']}" if self.extra.get("note") else "")
            + (
                f"; drops {sum(self.extra['drops'].values())}"
                + (f" ({render.drop_reasons_text(self.extra['drops'])})" if self.extra["drops"] else "")
                if "drops" in self.extra
                else ""
            )
        )

    def to_text(self, header: bool = True) -> str:
        lines = [self.header_line()] if header else []
        lines += render.text_lines(self.flows())
        return "\n".join(lines) + "\n"

    def to_arrow(self) -> pyarrow.Table:
        """The flows as an Arrow table (needs pyarrow: ``pip install
        'pktstat-bpf[arrow]'``): the :meth:`to_pandas` columns, categoricals
        as dictionary arrays, timestamps as ``timestamp[ns, UTC]``; the JSON
        :meth:`header` (mode, totals ...) is in the schema's metadata under
        ``pktstat_bpf``.

        >>> t = pktstat_bpf.replay("tests/data/office.pcap").to_arrow()
        >>> t.num_rows, str(t.schema.field("bytes").type), str(t.schema.field("first_seen").type)
        (25, 'uint64', 'timestamp[ns, tz=UTC]')
        >>> json.loads(t.schema.metadata[b"pktstat_bpf"])["totals"]["packets"]
        6699
        """
        pyarrow = _pyarrow("to_arrow")
        table = pyarrow.Table.from_pandas(self.to_pandas(), preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"pktstat_bpf"] = render.dumps(self.header()).encode()
        return table.replace_schema_metadata(meta)

    def to_parquet(self, path: str | os.PathLike[str], **kwargs: Any) -> None:
        """Write the flows to a Parquet file (Spark, DuckDB, polars and
        ``pandas.read_parquet`` read it), with the :meth:`to_arrow` columns
        and metadata. Keyword arguments go to ``pyarrow.parquet.write_table``
        (``compression="zstd"`` ...).

        >>> snap = pktstat_bpf.replay("tests/data/office.pcap")
        >>> snap.to_parquet(tmp / "office.parquet")
        >>> df = pandas.read_parquet(tmp / "office.parquet")
        >>> df.groupby("proto", observed=True)["bytes"].sum().to_dict()
        {'ICMPv4': 5880, 'TCP': 3508613, 'UDP': 3157520, 'IPv6-ICMP': 392, 'ARP': 252}
        """
        _pyarrow("to_parquet")
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(), path, **kwargs)

    def to_pandas(self) -> pandas.DataFrame:
        """The flows as a DataFrame, one row per flow in the order of
        ``records`` (needs pandas: ``pip install 'pktstat-bpf[pandas]'``).

        Columns (:data:`pktstat_bpf.frame.COLUMNS`): ``src_ip``, ``dst_ip``
        (strings), ``src_port``, ``dst_port`` (uint16; the fields of ICMP, ARP,
        ESP/AH, GRE and OSPF for those: docs/python-api.md),
        ``proto`` (categorical: ``TCP``, ``UDP``, ``ICMPv4`` ...), ``app``
        (categorical, categories :data:`protocols.APP_NAMES` in their order:
        the application label, ``pending``, ``unknown``, ``HTTP``, ``TLS`` ...;
        missing for flows other than TCP and UDP and in process mode), ``iface``
        and ``direction`` (categoricals; ``""`` where not known), ``pid``
        (uint32), ``comm``, ``cgroup`` (strings; 0 and ``""`` outside the
        modes that attribute flows to processes), ``packets``, ``bytes``
        (uint64), ``bitrate`` (float64: 8 x bytes / duration),
        ``first_seen``, ``last_seen`` (datetime64[ns, UTC]), ``tcp_flags``
        (uint8: the OR of the TCP flag bytes seen), ``syn_packets``,
        ``fin_packets``, ``rst_packets`` (uint32; all 0 for flows other than
        TCP and in process mode); then the snapshot's extra :attr:`columns`. 1M flows take a few tenths of a
        second (no Python loop over flows).

        >>> df = pktstat_bpf.replay("tests/data/office.pcap").to_pandas()
        >>> [str(df.dtypes[c]) for c in ("src_port", "proto", "bytes", "bitrate", "first_seen")]
        ['uint16', 'category', 'uint64', 'float64', 'datetime64[ns, UTC]']
        >>> top = df.nlargest(2, "bytes")[["src_ip", "dst_ip", "dst_port", "proto", "bytes"]]
        >>> print(top.to_string(index=False))
                   src_ip            dst_ip  dst_port proto   bytes
             203.0.113.10      192.168.1.23     51514   TCP 2389110
        2001:db8:f00d::10    2001:db8:1::23     50123   UDP 1261712
        """
        from .frame import to_pandas

        df = to_pandas(
            self.records,
            self.bitrates(),
            ifnames=self.ifnames,
            cgroups=self.cgroups,
            extra=self.columns,
            labels=protocols.app_labelled(self.mode),
        )
        return df.rename(columns=conversations.FRAME_NAMES) if self.paired else df


def _pyarrow(method: str) -> Any:
    try:
        import pyarrow
    except ImportError:
        raise ImportError(f"Snapshot.{method}() needs pyarrow: pip install 'pktstat-bpf[arrow]'") from None
    return pyarrow
