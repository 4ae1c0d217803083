"""Collector: attach a mode's counting programs, take snapshots, detach."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterator

from . import modes
from .drops import DropWatch, netns_inode
from .durations import Pacer
from .errors import PktstatError, UsageError, translate_os_error
from .snapshot import Snapshot, Totals

if TYPE_CHECKING:  # pragma: no cover
    from .intervals import Interval

log = logging.getLogger("pktstat_bpf")

DEFAULT_MAX_ENTRIES = 65536
MAX_MAX_ENTRIES = 1 << 26  # 64M flows: beyond this the kernel map alone needs many GB


def check_max_entries(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise UsageError(f"--max-entries must be an integer, not {n!r}")
    if n <= 0:
        raise UsageError(f"--max-entries must be positive, not {n}")
    if n > MAX_MAX_ENTRIES:
        raise UsageError(f"--max-entries {n} is too large (at most {MAX_MAX_ENTRIES})")
    return n


def _sweep_stale() -> None:
    """Undo what legacy tc attachments of runs that died left in this
    network namespace (their filters, and the clsact qdisc they made), in
    every mode: a run killed together with its janitor (``cgroup.kill``, an
    OOM kill, a pod deletion) is cleaned up by the next run's start."""
    from .engine import _core

    try:
        if n := _core.sweep_stale_tc():
            log.info("removed what %d legacy tc attachment(s) of pktstat-bpf runs that died left behind", n)
    except OSError as e:  # cleaning is best effort: it never stops this run
        log.debug("sweeping stale legacy tc attachments: %s", e)


class Collector:
    """Counts packets and bytes per flow.

    >>> with Collector(iface="lo") as c:          # doctest: +SKIP
    ...     ...                                   # traffic happens
    >>> snap = c.snapshot()                       # doctest: +SKIP
    >>> print(snap.to_text())                     # doctest: +SKIP

    ``mode="tc"`` (the default) attaches to TC ingress and egress of `iface`
    (default: the default-route interface), through TCX where the kernel has it
    and a legacy clsact filter otherwise (``tc_attach="tcx"|"legacy"`` forces
    one). Other keyword options belong to the mode (see ``pktstat_bpf.modes``);
    ``arp=False`` (TC, XDP) counts ARP frames as unparsed (``--no-arp``).

    ``drops=True`` also watches the packets the kernel drops, with its
    reasons (``--drops``; docs/counting.md, "Drops"): per flow (snapshot
    columns ``drops`` and ``drop_reasons``) and per reason (``extra["drops"]``).
    TC and XDP watch their interface's drops only; the other modes every drop.

    ``start()`` loads and attaches (all or nothing); ``stop()`` detaches and is
    idempotent; ``snapshot()`` works before and after ``stop()``, until the
    collector is closed or garbage collected.
    """

    def __init__(
        self,
        iface: str | None = None,
        mode: str = "tc",
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        drops: bool = False,
        **options: Any,
    ) -> None:
        self.max_entries = check_max_entries(max_entries)
        if iface is not None:
            options["iface"] = iface
        self._mode = modes.get(mode)(max_entries=self.max_entries, **options)
        self.mode = mode
        self._drops: DropWatch | None = None
        if drops:  # TC/XDP: their interface, in this namespace
            ifindex = int(getattr(self._mode, "ifindex", 0) or 0)
            self._drops = DropWatch(ifindex=ifindex, netns=netns_inode() if ifindex else 0)
        self._loaded = False
        self._attach_path = ""
        self._started_mono: float | None = None
        self._started_wall: float | None = None
        self._stopped_mono: float | None = None

    @property
    def iface(self) -> str | None:
        return getattr(self._mode, "iface", None)

    @property
    def where(self) -> str:
        """What the programs attach to (an interface, a cgroup ...)."""
        return self._mode.where

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> Collector:
        """Load (the first time) and attach, all or nothing: when attaching
        fails, nothing stays attached, and programs and maps loaded by this
        call are freed at once (a collector that ran before keeps its maps,
        so its counts stay readable)."""
        if self.running:
            return self
        fresh = not self._loaded
        if fresh:
            _sweep_stale()
            try:
                self._mode.load()
            except PktstatError:
                raise
            except OSError as e:
                self._mode.engine = None
                raise translate_os_error(e, "cannot load the BPF programs") from None
            if self._drops is not None:
                try:
                    self._drops.load()
                except OSError as e:
                    self._mode.engine = self._drops.engine = None
                    raise translate_os_error(e, "cannot load the drop watcher") from None
            self._loaded = True
        try:
            try:
                self._mode.attach()
                if self._drops is not None:
                    self._drops.attach()
            except BaseException:  # all or nothing, also on a restart (maps kept)
                if fresh:
                    self.close()
                else:
                    self.stop()
                raise
        except PktstatError:
            raise
        except LookupError:
            raise UsageError(f"{self._mode.where!r} disappeared") from None
        except OSError as e:
            raise translate_os_error(e, f"cannot attach to {self._mode.where}") from None
        self._attach_path = self._mode.attach_path
        self._started_mono = time.monotonic()
        self._started_wall = time.time()
        self._stopped_mono = None
        log.debug("attached to %s (%s)", self._mode.where, self._attach_path)
        return self

    def stop(self) -> None:
        """Detach the programs (idempotent). Maps stay readable."""
        if not self.running:
            return
        try:
            if self._drops is not None:
                self._drops.detach()
            self._mode.detach()
        finally:
            self._stopped_mono = time.monotonic()

    def close(self) -> None:
        """Detach and free the kernel maps."""
        self.stop()
        self._mode.engine = None
        if self._drops is not None:
            self._drops.engine = None
        self._loaded = False

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

    # -- state ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._loaded and self._mode.attached

    @property
    def status(self) -> dict[str, Any]:
        """Which path is live: mode, where, attach path (``tcx`` or
        ``tc-legacy`` ...), map size, plus the mode's own fields."""
        st = {
            "mode": self.mode,
            "attach": self._mode.attach_path if self._loaded else "",
            "max_entries": self.max_entries,
            "running": self.running,
        }
        st.update(self._mode.status())
        if self._drops is not None:
            st["drops"] = True
        return st

    def elapsed(self) -> float:
        if self._started_mono is None:
            return 0.0
        end = self._stopped_mono if self._stopped_mono is not None else time.monotonic()
        return end - self._started_mono

    def snapshot(self, *, use_batch: bool = True) -> Snapshot:
        """Read all flows and counters now."""
        if not self._loaded:
            raise PktstatError("collector was never started (call start() or use 'with')")
        records, stats = self._mode.read(use_batch)
        duration = self.elapsed()
        started = self._started_wall if self._started_wall is not None else time.time()
        extra = self._mode.report_extra() if hasattr(self._mode, "report_extra") else {}
        columns = {}
        if self._drops is not None:
            reading = self._drops.read()
            extra = {**extra, **reading.header()}
            columns = reading.columns(records)
        return Snapshot(
            records=records,
            totals=Totals.from_arrays(stats, records, self._mode.unowned(records)),
            duration=duration,
            started_at=started,
            taken_at=started + duration,
            mode=self.mode,
            iface=self.iface,
            attach=self._attach_path,
            max_entries=self.max_entries,
            ifnames=self._mode.ifnames,
            cgroups=self._mode.cgroups,
            extra=extra,
            columns=columns,
            owners=bool(self._mode.owners),
        )

    def stream(
        self,
        interval: float = 1.0,
        *,
        duration: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Interval]:
        """Yield an :class:`~pktstat_bpf.live.Interval` every `interval`
        seconds: per-flow packets, bytes and bitrate over that interval, plus
        lifetime totals. Starts the collector if it is not running (and then
        leaves it running: stopping stays with the caller).

        Ends after `duration` seconds of capture (counted from ``start()``),
        when `stop` is set, or when the collector is stopped; the last,
        possibly shorter, interval is yielded before it ends, so the deltas
        of all intervals add up to the final cumulative counts. Readings are
        paced on the monotonic clock without drift.

        >>> with Collector(iface="eth0") as c:              # doctest: +SKIP
        ...     for iv in c.stream(1.0, duration=5):
        ...         print(iv.delta.to_text(header=False))
        """
        from .intervals import IntervalTracker

        if not interval > 0:
            raise UsageError(f"interval must be positive, not {interval!r}")
        if not self.running:
            self.start()
        tracker = IntervalTracker()
        wait = stop.wait if stop is not None else time.sleep
        pacer = Pacer(interval, time.monotonic())
        while True:
            if stop is not None and stop.is_set():
                last = True
            else:
                now = time.monotonic()
                end_at = (self._started_mono or now) + duration if duration else None
                target = pacer.next_at if end_at is None else min(pacer.next_at, end_at)
                if target > now:
                    wait(target - now)
                last = (
                    (stop is not None and stop.is_set())
                    or not self.running
                    or (end_at is not None and time.monotonic() >= end_at)
                )
            prev = tracker.previous
            snap = self.snapshot()
            if last and prev is not None and snap.duration <= prev.duration:
                return  # nothing happened since the last reading
            yield tracker.advance(snap)
            if last:
                return
            pacer.advance()  # (a slow consumer skips readings rather than bursting)
