"""The interactive table (``-g/--tui``): interval bitrates, lifetime packets
and bytes, one row per flow, refreshed every ``-r`` interval.

Built on the standard library's curses: it starts instantly, needs no
dependency, works in any terminal terminfo knows (tmux, screen, a serial
console, over SSH) and lets us keep the screen model small and testable.
:class:`TableModel` holds everything the keys change (sort, scroll, filter,
pause) and produces the rows as plain strings; :func:`run_tui` only draws them.

Keys: up/k, down/j, PgUp/PgDn, Home/g, End/G scroll; 0 bitrate, 1 packets,
2 bytes, 3 source, 4 destination, 5 application, 6 round trip, 7 retransmissions,
8 drops sort; / filter (case-insensitive substring
of the row, the flow's NAME included; Enter keeps it, Esc cancels, an empty filter clears it); p pause;
r redraw and jump to the top; q or x quit.
"""

from __future__ import annotations

import collections
import contextlib
import curses
import locale
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Callable, Iterator

from ..core.durations import Pacer
from ..core.errors import UsageError
from ..output.table import QUIT, TableModel, header_line
from .options import Options
from .records import FlowOutputs
from .session import live_session

log = logging.getLogger("pktstat_bpf")

if TYPE_CHECKING:
    import threading

    from ..core.collector import Collector
    from ..views.view import View


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
        _cursor(1)
        scr.move(height - 1, min(len(m.footer_line()), width - 1))
    else:
        _cursor(0)
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
    opts: Options,
    stop_event: threading.Event,
    clock: Callable[[], float] = time.monotonic,
    flows: FlowOutputs | None = None,
) -> None:
    """Read, draw and handle keys until q/x, -t or a signal; each
    interval's end records also go to --ipfix/--parquet (`flows`)."""
    st = collector.status
    m = TableModel(mode=collector.mode, where=collector.where, attach=st["attach"], refresh=opts.refresh)
    _cursor(0)
    scr.keypad(True)
    start = clock()
    deadline = start + opts.timeout if opts.timeout > 0 else None
    pacer = Pacer(opts.refresh, start, clock)
    _draw(scr, m)
    while True:
        now = clock()
        if stop_event.is_set() or (deadline is not None and now >= deadline):
            return
        if now >= pacer.next_at:
            iv = view.apply_interval(collector.drain(rows="live"))
            if flows is not None:
                flows.interval(iv)
            m.update(iv)
            pacer.advance()
            _draw(scr, m)
            continue
        wake = pacer.next_at if deadline is None else min(pacer.next_at, deadline)
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


def run_tui(opts: Options) -> int:
    """The -g job: a full-screen table until q/x, -t or Ctrl-C (exit 0)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("-g/--tui needs a terminal (use --jsonl or --plain to stream into a pipe)")
    os.environ.setdefault("ESCDELAY", "25")  # Esc in the filter prompt reacts at once
    locale.setlocale(locale.LC_ALL, "")  # let ncurses draw UTF-8 (escaped names may hold it)
    for stale in ("LINES", "COLUMNS"):  # ncurses would prefer these to the terminal's real size
        os.environ.pop(stale, None)
    check_terminal()  # before anything is loaded: a terminal curses cannot drive is a usage error
    owners = opts.cgroup is not None or opts.kprobes
    with (
        FlowOutputs(
            opts, direction=True, owners=owners
        ) as flows,  # (first: a refused collector ends it here)
        live_session(opts) as (collector, view, stop),
    ):
        log.debug("counting on %s via %s", collector.where, collector.status["attach"])
        with _logs_held(sys.stderr.isatty()):
            curses.wrapper(tui_loop, collector, view, opts, stop.event, flows=flows)
        if flows.writers:  # the last interval, counted before the detach, ends every flow
            collector.stop()
            flows.interval(view.apply_interval(collector.drain(end=True)))
            flows.final()
    return stop.job_exit_code


def check_terminal() -> None:
    """The terminal of $TERM must be one terminfo knows and that can move
    the cursor and clear the screen; else one line, exit code 2."""
    term = os.environ.get("TERM", "")
    if not term:
        raise UsageError("-g/--tui needs TERM set to the terminal's type (e.g. TERM=xterm-256color)")
    try:
        curses.setupterm(term, sys.stdout.fileno())
    except curses.error:
        raise UsageError(
            f"-g/--tui: unknown terminal type TERM={term!r} (terminfo has no entry for it)"
        ) from None
    if not (curses.tigetstr("cup") and curses.tigetstr("clear")):
        raise UsageError(
            f"-g/--tui: the terminal TERM={term!r} cannot move the cursor (use --plain or --jsonl)"
        )


def _cursor(visibility: int) -> None:
    """Show or hide the cursor, where the terminal can (not all can)."""
    try:
        curses.curs_set(visibility)
    except curses.error:
        pass


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
