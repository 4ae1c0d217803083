"""The interactive table (``-g/--tui``): interval bitrates, lifetime packets
and bytes, one row per flow, refreshed every ``-r`` interval.

Built on the standard library's curses: it starts instantly, needs no
dependency, works in any terminal terminfo knows (tmux, screen, a serial
console, over SSH) and lets us keep the screen model small and testable.
:class:`TableModel` holds everything the keys change (sort, scroll, filter,
pause) and produces the rows as plain strings; :func:`run_tui` only draws them.

Keys: up/k, down/j, PgUp/PgDn, Home/g, End/G scroll; 0 bitrate, 1 packets,
2 bytes, 3 source, 4 destination sort; / filter (case-insensitive substring
of the row; Enter keeps it, Esc cancels, an empty filter clears it); p pause;
r redraw and jump to the top; q or x quit.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import curses
import locale
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from . import render
from .durations import format_duration
from .errors import EXIT_OK, UsageError
from .live import Interval, IntervalTracker, key_hashes
from .views import nearly_full

if TYPE_CHECKING:
    import threading

    from .collector import Collector
    from .views import View

SORTS = ("bitrate", "packets", "bytes", "src", "dst")
SORT_KEYS = {ord(str(i)): name for i, name in enumerate(SORTS)}
QUIT = "quit"
HELP = "q quit  j/k up/down  PgUp/PgDn  0-4 sort  / filter  p pause  r top"


def order_rows(iv: Interval, by: str) -> np.ndarray:
    """Row order for sort `by`: bitrate, packets, bytes descending (the
    interval's bitrate; lifetime packets and bytes, as shown); src, dst
    ascending by address family, address, then port."""
    r = iv.delta.records
    if len(r) == 0:
        return np.arange(0)
    keys: list[np.ndarray] = [key_hashes(r)]  # last tie-break: stable from refresh to refresh
    if by in ("src", "dst"):
        a = "saddr" if by == "src" else "daddr"
        keys += [r["sport" if by == "src" else "dport"]]
        keys += [r[a][:, i] for i in range(15, -1, -1)]
        keys += [r["ipver"]]
    else:
        val = {"bitrate": r["bytes"], "packets": iv.cumulative.records["packets"],
               "bytes": iv.cumulative.records["bytes"]}[by]  # fmt: skip
        keys += [~val]
    return np.lexsort(keys)


@dataclass
class Column:
    title: str
    width: int
    right: bool = False


BASE_COLUMNS = [Column("BITRATE", 12, True), Column("PACKETS", 10, True), Column("BYTES", 12, True),
                Column("PROTO", 9)]  # fmt: skip
OWNER_COLUMNS = [Column("PID", 7, True), Column("COMM", 16), Column("CGROUP", 0)]


def cells(iv: Interval, rows: np.ndarray) -> list[list[str]]:
    """The text of each cell of `rows` (positions in `iv`), escaped."""
    sub = iv.delta.take(rows)
    dicts = render.flow_dicts(
        sub.records, sub.duration, ifnames=sub.ifnames, cgroups=sub.cgroups, owners=sub.owners, columns=sub.columns
    )
    out = []
    for d in dicts:
        src, dst = render.endpoints(d)
        proto = d["proto"] + ("/rtx" if d.get("kind") == "retransmit" else "")  # process mode's retransmissions
        row = [render.format_bitrate(d["bitrate"]), str(d["totalPackets"]), str(d["totalBytes"]), proto,
               src, dst]  # fmt: skip
        if sub.owners:
            row += [str(d.get("pid", 0) or ""), render.escape_text(d.get("comm", "")),
                    render.escape_text(d.get("cgroup", ""))]  # fmt: skip
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
        dirs = f"  ingress: {t.ingress.packets}/{t.ingress.bytes}  egress: {t.egress.packets}/{t.egress.bytes}"
    return (
        f"{head}  flows: {t.flows}  packets: {a.packets}  bytes: {a.bytes}  rate: {render.format_bitrate(rate)}"
        f"  unparsed: {a.unparsed_packets}/{a.unparsed_bytes}  overflow: {a.overflow_packets}/{a.overflow_bytes}"
        + (f"  unowned: {t.unowned_packets}/{t.unowned_bytes}" if t.unowned_packets is not None else "")
        + dirs
    )


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
    interval: Interval | None = None
    latest: Interval | None = None
    page: int = 10
    _order: np.ndarray = field(default_factory=lambda: np.arange(0))
    _texts: list[list[str]] | None = None  # all rows' cells, when filtering

    # -- data -----------------------------------------------------------------
    def update(self, iv: Interval) -> None:
        self.latest = iv
        if not self.paused:
            self._show(iv)

    def _show(self, iv: Interval | None) -> None:
        self.interval = iv
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
        return BASE_COLUMNS + [Column("SRC", 0), Column("DST", 0)] + (OWNER_COLUMNS if owners else [])

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
        if self.filter or self.editing is not None:
            parts.append(f"filter: {render.escape_text(self.filter if self.editing is None else self.editing)!s}"
                         f" ({self.count} of {total} flows)")  # fmt: skip
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
            widths.append(w)

        def line(values: list[str]) -> str:
            parts = []
            for c, w, v in zip(cols, widths, values):
                v = v if len(v) <= w else v[: max(w - 1, 0)] + "~"
                parts.append(v.rjust(w) if c.right else v.ljust(w))
            return "  ".join(parts).rstrip()[:width]

        return [line([c.title for c in cols])] + [line(r) for r in rows]


def _draw(scr: curses.window, m: TableModel) -> None:
    height, width = scr.getmaxyx()
    scr.erase()
    if height < 5 or width < 20:
        _put(scr, 0, 0, "terminal too small", width)
        scr.refresh()
        return
    m.page = height - 4
    m.scroll(0)
    _put(scr, 0, 0, header_line(m.interval, m.mode, m.where, m.attach), width, curses.A_BOLD)
    _put(scr, 1, 0, m.status_line(), width)
    lines = m.table_lines(width)
    _put(scr, 2, 0, lines[0].ljust(width), width, curses.A_REVERSE)
    for i, text in enumerate(lines[1:]):
        _put(scr, 3 + i, 0, text, width)
    _put(scr, height - 1, 0, m.footer_line(), width, curses.A_DIM if m.editing is None else curses.A_BOLD)
    if m.editing is not None:
        curses.curs_set(1)
        scr.move(height - 1, min(len(m.footer_line()), width - 1))
    else:
        curses.curs_set(0)
    scr.refresh()


def _put(scr: curses.window, y: int, x: int, text: str, width: int, attr: int = 0) -> None:
    try:  # writing the bottom-right cell "fails" after drawing it: harmless
        scr.addnstr(y, x, text, max(width - x, 0), attr)
    except curses.error:
        pass


def tui_loop(
    scr: curses.window,
    collector: Collector,
    view: View,
    args: argparse.Namespace,
    stop_event: threading.Event,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Read, draw and handle keys until q/x, -t or a signal."""
    st = collector.status
    m = TableModel(mode=collector.mode, where=collector.where, attach=st["attach"], refresh=args.refresh)
    tracker = IntervalTracker()
    curses.curs_set(0)
    scr.keypad(True)
    start = clock()
    deadline = start + args.timeout if args.timeout > 0 else None
    next_at = start + args.refresh
    _draw(scr, m)
    while True:
        now = clock()
        if stop_event.is_set() or (deadline is not None and now >= deadline):
            return
        if now >= next_at:
            m.update(view.apply_interval(tracker.advance(collector.snapshot())))
            next_at += args.refresh
            if next_at <= clock():
                next_at = clock() + args.refresh
            _draw(scr, m)
            continue
        wake = next_at if deadline is None else min(next_at, deadline)
        scr.timeout(max(1, min(int((wake - now) * 1000) + 1, 250)))
        ch = scr.getch()
        if ch == -1:
            continue
        if ch == curses.KEY_RESIZE:
            curses.update_lines_cols()
            scr.clear()
        elif m.key(ch) == QUIT:
            return
        elif ch == ord("r") and m.editing is None:
            scr.clear()
        _draw(scr, m)


def run_tui(args: argparse.Namespace) -> int:
    """The -g job: a full-screen table until q/x, -t or Ctrl-C (exit 0)."""
    from .cli import _StopSignals, collector_from_args, log
    from .views import view_from_args

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("-g/--tui needs a terminal (use --jsonl or --plain to stream into a pipe)")
    os.environ.setdefault("ESCDELAY", "25")  # Esc in the filter prompt reacts at once
    locale.setlocale(locale.LC_ALL, "")  # let ncurses draw UTF-8 (escaped names may hold it)
    for stale in ("LINES", "COLUMNS"):  # ncurses would prefer these to the terminal's real size
        os.environ.pop(stale, None)
    collector = collector_from_args(args)
    with view_from_args(args) as view, collector, _StopSignals() as stop:
        log.debug("counting on %s via %s", collector.where, collector.status["attach"])
        with _logs_held(sys.stderr.isatty()):
            curses.wrapper(tui_loop, collector, view, args, stop.event)
    return EXIT_OK


@contextlib.contextmanager
def _logs_held(hold: bool) -> Iterator[None]:
    """While curses owns the terminal, diagnostics written to it (the
    fill warning, a Kubernetes watch retry ...) would tear the screen:
    keep them, and write them once the terminal is restored. Without a
    terminal on stderr (``2>file``) they go out at once."""
    logger = logging.getLogger("pktstat_bpf")
    if not hold or not logger.handlers:
        yield
        return
    held = _HeldLogs()
    saved = logger.handlers[:]
    logger.handlers[:] = [held]
    try:
        yield
    finally:
        logger.handlers[:] = saved
        for record in held.records:
            logger.handle(record)


class _HeldLogs(logging.Handler):
    """Keeps the last `keep` records (bounded, should a watch retry all day)."""

    def __init__(self, keep: int = 1000) -> None:
        super().__init__()
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
