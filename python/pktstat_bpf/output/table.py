"""The screen model of the interactive table (``-g/--tui``): everything the
keys change (sort, scroll, filter, pause) and the rows and header it selects,
as plain strings; :mod:`pktstat_bpf.cli.tui` only draws them with curses.

Keys: up/k, down/j, PgUp/PgDn, Home/g, End/G scroll; 0 bitrate, 1 packets,
2 bytes, 3 source, 4 destination, 5 application, 6 round trip, 7 retransmissions,
8 drops sort; / filter (case-insensitive substring
of the row, its NAME included; Enter keeps it, Esc cancels, an empty filter clears it); c flows
or conversations (the two directions put together: CLIENT and SERVER, sorted
by 3 and 4); p pause; r redraw and jump to the top; q or x quit.
"""

from __future__ import annotations

import curses
from dataclasses import dataclass, field

import numpy as np

from ..core import names, protocols, render
from ..core.durations import format_duration
from ..core.intervals import Interval
from ..core.keys import key_hashes
from ..views.view import nearly_full

SORTS = ("bitrate", "packets", "bytes", "src", "dst", "app", "rtt", "retrans", "drops")
SORT_KEYS = {ord(str(i)): name for i, name in enumerate(SORTS)}
QUIT = "quit"
HELP = "q quit  j/k up/down  PgUp/PgDn  0-8 sort  / filter  c conversations  p pause  r top"


def _app_rank() -> np.ndarray:
    """Sort "app": the rank of each APP_NAMES position (-1, no label, is the
    last entry) by the label as shown: names A-Z, then "?" (unknown), then
    the blank ones (pending, no label); ties keep the table's order."""
    names: list[str | None] = [*protocols.APP_NAMES, None]

    def key(i: int) -> tuple[bool, bool, str, int]:
        t = protocols.app_text(names[i])
        return t == "", t == "?", t.lower(), i

    rank = np.empty(len(names), np.int16)
    rank[sorted(range(len(names)), key=key)] = np.arange(len(names))
    return rank


_APP_RANK = _app_rank()


def order_rows(iv: Interval, by: str) -> np.ndarray:
    """Row order for sort `by`: bitrate, packets, bytes descending (the
    interval's bitrate; lifetime packets and bytes, as shown); src, dst
    ascending by address family, address, then port; app by the label as
    shown (A-Z, then ``?``, then blank), heaviest bitrate first within one;
    rtt by the interval's mean round trip, slowest first, flows without one
    last; retrans and drops by the lifetime counts shown, most first."""
    r = iv.delta.records
    if len(r) == 0:
        return np.arange(0)
    keys: list[np.ndarray] = [key_hashes(r)]  # last tie-break: stable from refresh to refresh
    if by in ("src", "dst"):
        a = "saddr" if by == "src" else "daddr"
        keys += [r["sport" if by == "src" else "dport"]]
        keys += [r[a][:, i] for i in range(15, -1, -1)]
        keys += [r["ipver"]]
    elif by == "app":
        keys += [~r["bytes"], _APP_RANK[protocols.app_codes(r, protocols.app_labelled(iv.delta.mode))]]
    elif by == "rtt":
        keys += [np.where(r["rtt_samples"] > 0, -rtt_means(r), 1)]
    elif by == "drops":
        keys += [~iv.delta.columns.get("drops", np.zeros(len(r), np.uint64)).astype(np.uint64)]
    else:
        val = {
            "bitrate": r["bytes"],
            "packets": iv.cumulative.records["packets"],
            "bytes": iv.cumulative.records["bytes"],
            "retrans": iv.cumulative.records["retrans_packets"],
        }[by]
        keys += [~val]
    return np.lexsort(keys)


@dataclass
class Column:
    title: str
    width: int  # 0: as wide as the widest cell shown
    right: bool = False
    most: int = 0  # a width of 0: at most this (longer cells end in "~")


BASE_COLUMNS = [
    Column("BITRATE", 12, True),
    Column("PACKETS", 10, True),
    Column("BYTES", 12, True),
    Column("PROTO", 9),
]
OWNER_COLUMNS = [Column("PID", 7, True), Column("COMM", 16), Column("CGROUP", 0)]
DROPS_COLUMN = Column("DROPS", 8, True)  # --drops: the flow's drops since the start
APP_COLUMN = Column("APP", 10)  # the application label (protocols.app_text), where the mode labels
FLAGS_COLUMN = Column("FLAGS", 8)  # TCP flags seen (render.TCP_FLAG_LETTERS), where any flow has them
RTT_COLUMN = Column("RTT", 8, True)  # the interval's mean round trip, where a shown flow was timed
RETRANS_COLUMN = Column("RETRANS", 8, True)  # retransmitted segments since the start, where any
#: who a flow talks to (names.shown: SNI, else HTTP Host, else DNS query, else DNS answer), where any flow has a name
NAME_COLUMN = Column("NAME", 0, most=28)


def has_apps(iv: Interval) -> bool:
    """Whether some flow of `iv` has been looked at for its application
    (labelled or unknown; never in process mode): the APP column is shown then."""
    r = iv.delta.records
    return protocols.app_labelled(iv.delta.mode) and bool((protocols.app_codes(r) >= 1).any())


def has_tcp_flags(iv: Interval) -> bool:
    """Whether any flow of `iv` saw a TCP header (never in process mode)."""
    return bool(iv.delta.records["tcp_flags"].any())


def rtt_means(r: np.ndarray) -> np.ndarray:
    """Each record's mean round trip in ns (int64; 0 without samples)."""
    n = r["rtt_samples"].astype(np.int64)
    return r["rtt_sum"].astype(np.int64) // np.maximum(n, 1)


def format_rtt(ns: int) -> str:
    """A round trip as the RTT cell shows it: 3 significant digits in ms
    (``0.35ms``, ``31ms``), in us below 10 us (``5.2us``), in s from 1 s."""
    if ns < 10_000:
        return f"{ns / 1e3:.3g}us"
    if ns < 999_500_000:  # (from there 3 digits of ms would be 1e+03)
        return f"{ns / 1e6:.3g}ms"
    return f"{ns / 1e9:.3g}s"


def has_health(iv: Interval) -> tuple[bool, bool]:
    """Whether the flows shown have round trips and retransmissions, over
    their lifetime (so the RTT and RETRANS columns stay from interval to
    interval while a flow is shown; TC, XDP and replay only). Not for
    conversations: a conversation row carries one direction's health."""
    if iv.delta.paired:
        return False, False
    r = iv.cumulative.records
    return bool(r["rtt_samples"].any()), bool(r["retrans_packets"].any())


def has_names(iv: Interval) -> bool:
    """Whether any flow of `iv` has a name to show (the NAME column)."""
    d = iv.delta
    return bool(any(d.columns.get(c, np.empty(0)).any() for c in names.SHOWN_COLUMNS))


def cells(iv: Interval, rows: np.ndarray) -> list[list[str]]:
    """The text of each cell of `rows` (positions in `iv`), escaped."""
    sub = iv.delta.take(rows)
    dicts = sub.flow_dicts()
    flags = has_tcp_flags(iv)
    apps = has_apps(iv)
    named = has_names(iv)
    rtt, retrans = has_health(iv)
    samples, means = sub.records["rtt_samples"], rtt_means(sub.records)
    lifetime_retrans = iv.cumulative.records["retrans_packets"][rows]
    out = []
    for i, d in enumerate(dicts):
        src, dst = render.endpoints(d)
        fields = protocols.header_text(d)  # ARP op, ESP/AH spi, GRE, OSPF: beside the destination
        if fields:
            dst += f" {fields}"
        proto = d["proto"] + (
            "/rtx" if d.get("kind") == "retransmit" else ""
        )  # process mode's retransmissions
        row = [
            render.format_bitrate(d["bitrate"]),
            str(d["totalPackets"]),
            str(d["totalBytes"]),
            proto,
            src,
            dst,
        ]
        if "drops" in sub.columns:
            row.insert(4, str(d.get("drops") or ""))
        if retrans:
            row.insert(4, str(int(lifetime_retrans[i]) or ""))
        if rtt:
            row.insert(4, format_rtt(int(means[i])) if samples[i] else "")
        if flags:
            row.insert(4, d.get("tcpFlags", ""))
        if apps:  # right after PROTO
            row.insert(4, render.escape_text(protocols.app_text(d.get("appProto"))))
        if named:  # right before SRC: a name is attacker-controlled, shown escaped
            row.insert(len(row) - 2, render.escape_text(names.shown(d)))
        if sub.owners:
            row += [
                str(d.get("pid", 0) or ""),
                render.escape_text(d.get("comm", "")),
                render.escape_text(d.get("cgroup", "")),
            ]
        out.append(row)
    return out


def header_line(iv: Interval | None, mode: str, where: str, attach: str) -> str:
    head = f"pktstat-bpf  {mode} on {render.escape_text(where)} ({attach})"
    if iv is None:
        return head + "  waiting for the first interval..."
    t, a = iv.cumulative.totals, iv.cumulative.totals.all
    rate = 8.0 * iv.delta.totals.all.bytes / iv.duration if iv.duration > 0 else 0.0
    dirs = ""
    if t.ingress.packets or t.egress.packets:  # as the text header: what each direction saw
        dirs = (
            f"  ingress: {t.ingress.packets}/{t.ingress.bytes}  egress: {t.egress.packets}/{t.egress.bytes}"
        )
    return (
        f"{head}  flows: {t.flows}  packets: {a.packets}  bytes: {a.bytes}  rate: {render.format_bitrate(rate)}"
        f"  unparsed: {a.unparsed_packets}/{a.unparsed_bytes}  overflow: {a.overflow_packets}/{a.overflow_bytes}"
        + (f"  unowned: {t.unowned_packets}/{t.unowned_bytes}" if t.unowned_packets is not None else "")
        + dirs
        + _drops_summary(iv)
    )


def _drops_summary(iv: Interval) -> str:
    """--drops: ``  drops: 14 (NETFILTER_DROP:12,NO_SOCKET:2)`` (since the start)."""
    reasons = iv.cumulative.extra.get("drops")
    if reasons is None:
        return ""
    text = f" ({render.drop_reasons_text(reasons)})" if reasons else ""
    return f"  drops: {sum(reasons.values())}{text}"


@dataclass
class TableModel:
    """The state the keys change, and the rows it selects."""

    mode: str = ""
    where: str = ""
    attach: str = ""
    refresh: float = 1.0
    sort: str = "bitrate"
    offset: int = 0
    filter: str = ""
    editing: str | None = None  # the filter being typed, or None
    paused: bool = False
    paired: bool = False  # conversations, not flows (c)
    interval: Interval | None = None
    latest: Interval | None = None
    page: int = 10
    _order: np.ndarray = field(default_factory=lambda: np.arange(0))
    _texts: list[list[str]] | None = None  # all rows' cells, when filtering
    _shown: Interval | None = None  # the interval shown, as flows

    # -- data -----------------------------------------------------------------
    def update(self, iv: Interval) -> None:
        self.latest = iv
        if not self.paused:
            self._show(iv)

    def _show(self, iv: Interval | None) -> None:
        self._shown = iv
        self.interval = iv.conversations() if iv is not None and self.paired else iv
        self._reorder()

    def _reorder(self) -> None:
        iv = self.interval
        self._texts = None
        if iv is None:
            self._order = np.arange(0)
            return
        order = order_rows(iv, self.sort)
        needle = (self.editing if self.editing is not None else self.filter).lower()
        if needle:
            texts = cells(iv, order)
            keep = [i for i, row in enumerate(texts) if needle in " ".join(row).lower()]
            order = order[keep]
            self._texts = [texts[i] for i in keep]
        self._order = order
        self.offset = max(0, min(self.offset, len(order) - self.page))

    @property
    def count(self) -> int:
        return len(self._order)

    def visible(self) -> list[list[str]]:
        lo, hi = self.offset, self.offset + self.page
        if self._texts is not None:
            return self._texts[lo:hi]
        if self.interval is None:
            return []
        return cells(self.interval, self._order[lo:hi])

    def columns(self) -> list[Column]:
        owners = self.interval is not None and self.interval.delta.owners
        drops = [DROPS_COLUMN] if self.interval is not None and "drops" in self.interval.delta.columns else []
        flags = [FLAGS_COLUMN] if self.interval is not None and has_tcp_flags(self.interval) else []
        apps = [APP_COLUMN] if self.interval is not None and has_apps(self.interval) else []
        named = [NAME_COLUMN] if self.interval is not None and has_names(self.interval) else []
        rtt, retrans = has_health(self.interval) if self.interval is not None else (False, False)
        return (
            BASE_COLUMNS
            + apps
            + flags
            + ([RTT_COLUMN] if rtt else [])
            + ([RETRANS_COLUMN] if retrans else [])
            + drops
            + named
            + (
                [Column("CLIENT", 0), Column("SERVER", 0)]
                if self.paired
                else [Column("SRC", 0), Column("DST", 0)]
            )
            + (OWNER_COLUMNS if owners else [])
        )

    # -- keys -----------------------------------------------------------------
    def scroll(self, n: int) -> None:
        self.offset = max(0, min(self.offset + n, self.count - self.page))

    def key(self, ch: int) -> str | None:
        if self.editing is not None:
            return self._edit(ch)
        if ch in (ord("q"), ord("x"), ord("Q"), ord("X")):
            return QUIT
        if ch in (curses.KEY_UP, ord("k")):
            self.scroll(-1)
        elif ch in (curses.KEY_DOWN, ord("j")):
            self.scroll(1)
        elif ch == curses.KEY_PPAGE:
            self.scroll(-self.page)
        elif ch in (curses.KEY_NPAGE, ord(" ")):
            self.scroll(self.page)
        elif ch in (curses.KEY_HOME, ord("g")):
            self.offset = 0
        elif ch in (curses.KEY_END, ord("G")):
            self.scroll(self.count)
        elif ch in SORT_KEYS:
            self.sort = SORT_KEYS[ch]
            self.offset = 0
            self._reorder()
        elif ch == ord("r"):
            self.offset = 0
            return "redraw"
        elif ch == ord("p"):
            self.paused = not self.paused
            if not self.paused and self.latest is not None:
                self._show(self.latest)
        elif ch == ord("/"):
            self.editing = self.filter
            self._reorder()
        elif ch == ord("c"):
            self.paired = not self.paired
            self.offset = 0
            self._show(self._shown)
        return None

    def _edit(self, ch: int) -> str | None:
        assert self.editing is not None
        if ch in (10, 13, curses.KEY_ENTER):
            self.filter, self.editing = self.editing, None
        elif ch == 27:  # Esc: back to the filter we had
            self.editing = None
        elif ch in (curses.KEY_BACKSPACE, 127, 8):
            self.editing = self.editing[:-1]
        elif 32 <= ch < 127:  # printable ASCII: addresses, ports, names
            self.editing += chr(ch)
        else:
            return None
        self.offset = 0
        self._reorder()
        return None

    # -- lines ------------------------------------------------------------------
    def status_line(self) -> str:
        parts = [f"sort: {self.sort}", f"refresh: {format_duration(self.refresh)}"]
        total = len(self.interval.delta) if self.interval is not None else 0
        rows = "conversations" if self.paired else "flows"
        if self.paired:
            parts.append("conversations")
        if self.filter or self.editing is not None:
            parts.append(
                f"filter: {render.escape_text(self.filter if self.editing is None else self.editing)!s}"
                f" ({self.count} of {total} {rows})"
            )
        if self.count:
            parts.append(f"rows {self.offset + 1}-{min(self.offset + self.page, self.count)} of {self.count}")
        if self.paused:
            parts.append("PAUSED")
        if self.latest is not None and nearly_full(self.latest.cumulative):
            snap = self.latest.cumulative
            parts.append(f"FLOW TABLE {100 * len(snap) // snap.max_entries}% FULL: raise --max-entries")
        return "  ".join(parts)

    def footer_line(self) -> str:
        if self.editing is not None:
            return f"/{self.editing}"
        return HELP

    def table_lines(self, width: int) -> list[str]:
        """Title line then one line per visible row, laid out for `width`."""
        cols = self.columns()
        rows = self.visible()
        widths = []
        for i, c in enumerate(cols):
            w = max([len(c.title)] + [len(r[i]) for r in rows]) if c.width == 0 else c.width
            w = min(w, max(c.most, len(c.title))) if c.most else w
            widths.append(w)

        def line(values: list[str]) -> str:
            parts = []
            for c, w, v in zip(cols, widths, values):
                v = v if len(v) <= w else v[: max(w - 1, 0)] + "~"
                parts.append(v.rjust(w) if c.right else v.ljust(w))
            return "  ".join(parts).rstrip()[:width]

        return [line([c.title for c in cols])] + [line(r) for r in rows]
