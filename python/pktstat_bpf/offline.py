"""Offline analysis: a capture file through the same TC program that counts
live traffic, by BPF_PROG_TEST_RUN (nothing is attached to any interface).

>>> snap = pktstat_bpf.replay("trace.pcapng")        # doctest: +SKIP
>>> print(snap.to_text())                            # doctest: +SKIP

Frames are keyed by their outermost IP header; bytes are each record's
original wire length (also where the capture was cut by a snaplen); the
frame timestamps drive first/last seen, and the snapshot's duration is the
last minus the first frame's timestamp.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Callable, Optional

from .collector import DEFAULT_MAX_ENTRIES, check_max_entries, translate_os_error
from . import render
from .errors import PktstatError, UsageError
from .snapshot import Snapshot, Totals

log = logging.getLogger("pktstat_bpf")

#: progress(frames done, bytes of the file read, file size in bytes)
Progress = Callable[[int, int, int], None]

LINK_TYPES = (
    "Ethernet (EN10MB)",
    "Linux cooked capture v1 and v2 (LINUX_SLL, LINUX_SLL2)",
    "raw IP (RAW, IPV4, IPV6)",
    "BSD loopback (NULL, LOOP)",
)


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

    Each :meth:`replay` starts from an empty flow table.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = check_max_entries(max_entries)
        from . import _core

        try:
            self._engine = _core.Replayer(self.max_entries)
        except OSError as e:
            raise translate_os_error(e, "cannot load the BPF programs") from None

    def replay(
        self, path: str | os.PathLike, *, progress: Optional[Progress] = None, strict: bool = False
    ) -> Snapshot:
        """See :func:`replay`."""
        from . import _core

        path = os.fspath(path)
        engine = self._engine
        engine.clear()
        try:
            info = engine.replay_file(path, progress)
        except _core.CaptureError as e:
            raise CaptureFileError(str(e)) from None
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR):
                raise UsageError(f"{path}: {os.strerror(e.errno)}") from None
            if e.errno in (errno.EACCES, errno.EPERM) and str(e).startswith(f"[Errno {e.errno}] open "):
                raise CaptureFileError(f"{path}: {os.strerror(e.errno)}") from None
            raise translate_os_error(e, f"cannot replay {path}") from None
        snap = _snapshot(engine, path, info)
        if info["damage"]:
            msg = (
                f"{path}: damaged after {info['frames']} frames ({info['damage']}); "
                f"the report covers those {info['frames']} frames"
            )
            if strict:
                raise DamagedCaptureError(msg, snap, info["frames"])
            log.warning("%s", msg)
        return snap


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


def _snapshot(engine, path: str, info: dict) -> Snapshot:
    records = engine.read_flows()
    stats = engine.read_stats()
    c = engine.counters
    first, last = c["earliest_ts_ns"], c["latest_ts_ns"]
    extra = {
        # exact to the nanosecond (started_at/taken_at are floats); these
        # replace the header's start/end in place
        "start": render.rfc3339(first),
        "end": render.rfc3339(last),
        "file": path,
        "linkType": info["linktype_name"] or str(info["linktype"]),
        "frames": info["frames"],
    }
    if c["clipped_frames"]:
        extra["clippedFrames"] = c["clipped_frames"]
    if info["damage"]:
        extra["damage"] = info["damage"]
    return Snapshot(
        records=records,
        totals=Totals.from_arrays(stats, records),
        duration=max(0, last - first) / 1e9,
        started_at=first / 1e9,
        taken_at=last / 1e9,
        mode="replay",
        max_entries=engine.max_entries,
        extra=extra,
    )
