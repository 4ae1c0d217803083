"""Offline analysis: a capture file through the same TC program that counts
live traffic, by BPF_PROG_TEST_RUN (nothing is attached to any interface).

>>> snap = pktstat_bpf.replay("trace.pcapng")        # doctest: +SKIP
>>> print(snap.to_text())                            # doctest: +SKIP

Frames are keyed by their outermost IP header; bytes are each record's
original wire length (also where the capture was cut by a snaplen); the
frame timestamps drive first/last seen (the earliest and latest of a flow's
frames: a file need not be in time order), and the snapshot's duration is
the latest minus the earliest frame's timestamp.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional

import numpy as np

from . import names, render
from .collector import DEFAULT_MAX_ENTRIES, check_max_entries
from .errors import PktstatError, UsageError, translate_os_error
from .keys import merge_flows
from .snapshot import Snapshot, Totals

if TYPE_CHECKING:  # pragma: no cover
    from .engine import _core
    from .intervals import Interval

log = logging.getLogger("pktstat_bpf")

#: progress(frames done, bytes of the file read, file size in bytes)
Progress = Callable[[int, int, int], None]

ALL_FRAMES = (1 << 64) - 1  # advance() bound that runs every frame


class CaptureFileError(PktstatError):
    """The capture file cannot be replayed: not a pcap/pcapng file, empty,
    or of a link type replay does not decode (exit code 1)."""


class DamagedCaptureError(PktstatError):
    """Reading stopped early at damage in the file. ``snapshot`` holds what
    was counted up to there; ``frames`` how many frames were read."""

    def __init__(self, message: str, snapshot: Snapshot, frames: int) -> None:
        super().__init__(message)
        self.snapshot = snapshot
        self.frames = frames


class Replayer:
    """The replay engine, reusable across files: loading the program costs
    a fraction of a second, so a tool replaying many files keeps one.

    >>> r = pktstat_bpf.Replayer(max_entries=1 << 16)   # doctest: +SKIP
    >>> snaps = [r.replay(p) for p in paths]            # doctest: +SKIP

    Each :meth:`replay` starts from an empty flow table (and knows no TCP
    connection of an earlier capture). ``arp=False``
    counts ARP frames as unparsed instead of as ARP flows (``--no-arp``);
    ``tcp_health=False`` tracks no TCP retransmissions and round trips
    (``--no-tcp-health``).
    """

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, *, arp: bool = True, tcp_health: bool = True
    ) -> None:
        self.max_entries = check_max_entries(max_entries)
        self.arp = bool(arp)
        self.tcp_health = bool(tcp_health)
        from .engine import _core

        try:
            self._engine = _core.Replayer(self.max_entries, self.arp, self.tcp_health)
        except OSError as e:
            raise translate_os_error(e, "cannot load the BPF programs") from None

    def replay(
        self, path: str | os.PathLike, *, progress: Optional[Progress] = None, strict: bool = False
    ) -> Snapshot:
        """See :func:`replay`."""
        path = os.fspath(path)
        engine = self._engine
        self._open(path)
        engine.advance(ALL_FRAMES, progress)
        info = engine.file
        snap = _snapshot(engine, path, info)
        self._check_damage(path, info, snap, strict)
        return snap

    def intervals(
        self,
        path: str | os.PathLike,
        interval: float,
        *,
        progress: Optional[Progress] = None,
        strict: bool = False,
        rows: str = "recent",
    ) -> Iterator[Interval]:
        """Replay in steps of `interval` seconds of *capture* time, yielding
        an :class:`~pktstat_bpf.live.Interval` per step, as
        :meth:`Collector.stream` does live: per-flow packets, bytes and
        bitrate within the step, plus lifetime totals. Steps start at the
        earliest frame's timestamp (of a regular file: standard input is read
        once, so its steps start at its first frame's), and the last one ends
        at the latest frame's; frames run in file order, so a frame stamped
        before the step it is read in counts in that step. An
        idle stretch of more than one step (a gap in the capture) is one
        interval, after one empty step that lets stopped flows show once.
        The deltas of all intervals add up to what :meth:`replay` reports.
        Each step drains the flow table (docs/counting.md, "Continuous
        capture"): ``max_entries`` needs room for one step's flows only, and
        flows idle for a minute of capture time get their end record
        (``Interval.ended``). ``rows="live"``: every live flow in each
        interval (as the interactive table), not only the recent ones.
        Damage ends the steps as it ends :meth:`replay` (with `strict`, the
        :class:`DamagedCaptureError` comes after the last interval).
        """
        from .intervals import DrainTracker, RunTotals

        if not interval > 0:
            raise UsageError(f"interval must be positive, not {interval!r}")
        path = os.fspath(path)
        engine = self._engine
        self._open(path)
        step = max(1, round(interval * 1e9))
        tracker, run = DrainTracker(rows), RunTotals()
        more = engine.advance(0)  # reads the first frame, runs nothing
        start = engine.next_ts if more else 0
        if more and _seekable(path):
            # frames need not be in time order: the steps start at the earliest, as the report's
            # duration does; a frame stamped before the step it is read in counts in that step
            from .engine import _core

            span = _core.capture_time_range(path)
            if span is not None:
                start = min(start, span[0])
        end = start
        run.started_at = start / 1e9

        def drain(until: int, last: bool) -> Interval:
            """One step: drained at its end (capture time), idle flows retired then."""
            raw = engine.drain(until, True, last)
            run.fold(raw, None, False)

            def make(records: Any, totals: Totals, t0: float, t1: float, dur: float, cols: Any) -> Snapshot:
                first = (
                    start if t0 == run.started_at and t0 != begin / 1e9 else begin
                )  # (cumulative: the run's)
                return _snapshot(engine, path, engine.file, records, totals, first, until, cols)

            iv = tracker.advance(raw, make, run, None, begin / 1e9, engine.flows)
            return iv

        idle = 0
        while more:
            nxt = engine.next_ts
            begin = end
            if idle >= 1 and nxt >= end + step:
                # the rest of an idle stretch, up to the step the next frame is in, as one interval
                end = start + (nxt - start) // step * step
                yield drain(end, False)
                begin = end
            end += step
            more = engine.advance(min(end, ALL_FRAMES), progress)  # (frame times end in 2262)
            stop = end if more else max(engine.counters["latest_ts_ns"], start)
            iv = drain(stop, not more)
            idle = 0 if iv.active.any() else idle + 1
            yield iv
        info = engine.file
        if info["damage"]:
            live = engine.flows()
            records = merge_flows(np.concatenate([*run.retired, live])) if run.retired else live
            totals = run.totals(len(records)) if run.stats is not None else None
            snap = _snapshot(engine, path, info, records, totals)
            self._check_damage(path, info, snap, strict)

    def _open(self, path: str) -> None:
        from .engine import _core

        self._engine.clear()
        try:
            self._engine.open_file(os.fsencode(path))  # bytes: a file name need not be UTF-8
        except _core.CaptureError as e:
            raise CaptureFileError(str(e)) from None
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR):
                raise UsageError(f"{path}: {os.strerror(e.errno)}") from None
            if e.errno in (errno.EACCES, errno.EPERM) and str(e).startswith(f"[Errno {e.errno}] open "):
                raise CaptureFileError(f"{path}: {os.strerror(e.errno)}") from None
            raise translate_os_error(e, f"cannot replay {path}") from None

    @staticmethod
    def _check_damage(path: str, info: Mapping[str, Any], snap: Snapshot, strict: bool) -> None:
        if not info["damage"]:
            return
        msg = (
            f"{path}: damaged after {info['frames']} frames ({info['damage']}); "
            f"the report covers those {info['frames']} frames"
        )
        if strict:
            raise DamagedCaptureError(msg, snap, info["frames"])
        log.warning("%s", msg)


def replay(
    path: str | os.PathLike,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    progress: Optional[Progress] = None,
    strict: bool = False,
) -> Snapshot:
    """Count every frame of a pcap or pcapng file per flow; returns a Snapshot
    of mode ``"replay"`` whose flows have direction ``""`` and no interface.

    `progress`, if given, is called every 65536 frames (and once at the end)
    as ``progress(frames, bytes_of_file_read, file_size)``; it runs on the
    calling thread, so it may raise (e.g. KeyboardInterrupt) to stop.

    A file damaged part-way (e.g. cut short while being written) still
    yields what was counted before the damage: the Snapshot's ``extra``
    holds ``damage`` (libpcap's reason) and a warning is logged; with
    ``strict=True`` a :class:`DamagedCaptureError` carrying the snapshot is
    raised instead. A missing file or a directory raises :class:`UsageError`,
    anything else that cannot be read :class:`CaptureFileError`.
    """
    return Replayer(max_entries).replay(path, progress=progress, strict=strict)


def _seekable(path: str | bytes) -> bool:
    """A regular file (standard input and pipes can be read only once)."""
    try:
        return os.fsdecode(path) != "-" and stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _snapshot(
    engine: _core.Replayer,
    path: str,
    info: Mapping[str, Any],
    records: np.ndarray | None = None,
    totals: Totals | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    columns: Mapping[str, np.ndarray] | None = None,
) -> Snapshot:
    """A replay's Snapshot: of the whole file so far (a drain, then every
    flow), or of `records` with `totals` (an interval of capture time)."""
    if records is None:
        records = engine.read_flows()
    if totals is None:
        totals = Totals.from_arrays(engine.read_stats(), records)
    c = engine.counters
    first = c["earliest_ts_ns"] if start_ns is None else start_ns
    last = c["latest_ts_ns"] if end_ns is None else end_ns
    extra = {
        # exact to the nanosecond (started_at/taken_at are floats); these
        # replace the header's start/end in place
        "start": render.rfc3339(first),
        "end": render.rfc3339(last),
        "file": path,
        "linkType": info["linktype_name"] or str(info["linktype"]),
        "frames": info["frames"],
    }
    extra["namesFull"] = engine.names_full
    extra["dnsAddrsFull"] = engine.dns_addrs_full
    if c["clipped_frames"]:
        extra["clippedFrames"] = c["clipped_frames"]
    if info["damage"]:
        extra["damage"] = info["damage"]
    return Snapshot(
        records=records,
        totals=totals,
        duration=max(0, last - first) / 1e9,
        started_at=first / 1e9,
        taken_at=last / 1e9,
        mode="replay",
        max_entries=engine.max_entries,
        extra=extra,
        columns={**names.columns(records, engine.names(), engine.dns_names()), **(columns or {})},
    )
