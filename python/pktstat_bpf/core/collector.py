"""Collector: attach a mode's counting programs, take snapshots, detach."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generator

import numpy as np

from . import modes, names
from .drops import DropWatch, netns_inode
from .errors import PktstatError, UsageError, translate_os_error
from .intervals import DrainTracker, Interval, RunTotals
from .keys import merge_flows
from .pacing import paced
from .snapshot import Snapshot, Totals

if TYPE_CHECKING:  # pragma: no cover
    from .drops import DropReading
    from .intervals import Drained

log = logging.getLogger("pktstat_bpf")

DEFAULT_MAX_ENTRIES = 65536
MAX_MAX_ENTRIES = 1 << 26  # 64M flows: beyond this the kernel map alone needs many GB


#: The lifetime table's defaults (``--idle-timeout``, ``--active-timeout``,
#: ``--max-flows``): a flow idle for a minute is retired; a long one gets a
#: record every 5 minutes, as flow exporters do.
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_ACTIVE_TIMEOUT = 300.0
DEFAULT_MAX_FLOWS = 1_000_000
MAX_MAX_FLOWS = (1 << 32) - 2


def check_flow_limits(idle: Any, active: Any, max_flows: Any) -> dict[str, int]:
    """The lifetime table's limits as the engine takes them (timeouts in
    ns, 0 = never), or a UsageError naming the flag."""
    out = {}
    for flag, v, key in (
        ("--idle-timeout", idle, "idle_timeout_ns"),
        ("--active-timeout", active, "active_timeout_ns"),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise UsageError(f"{flag} must be a duration of 0 (never) or more seconds, not {v!r}")
        out[key] = round(v * 1e9)
    if isinstance(max_flows, bool) or not isinstance(max_flows, int) or not 1 <= max_flows <= MAX_MAX_FLOWS:
        raise UsageError(f"--max-flows must be an integer from 1 to {MAX_MAX_FLOWS}, not {max_flows!r}")
    out["max_flows"] = max_flows
    return out


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
    ``tcp_health=False`` (TC, XDP) tracks no TCP retransmissions and round
    trips (``--no-tcp-health``; docs/counting.md "TCP health").

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
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        active_timeout: float = DEFAULT_ACTIVE_TIMEOUT,
        max_flows: int = DEFAULT_MAX_FLOWS,
        keep_retired: bool = True,
        **options: Any,
    ) -> None:
        self.max_entries = check_max_entries(max_entries)
        self.flow_limits = check_flow_limits(idle_timeout, active_timeout, max_flows)
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
        self._run = RunTotals(keep_retired)
        self._tracker: DrainTracker | None = None
        self._streaming = 0
        self._last_unowned: tuple[int, int] | None = None
        self._drops_reading: DropReading | None = None
        self._names: np.ndarray | None = None  # the engine's names as of the last drain (tc, xdp)
        self._dns_names: np.ndarray | None = None  # and the flows DNS answers named
        # held by whatever reads or changes the engine and the run's totals: a stream
        # drains in a thread of its own while its consumer may snapshot, stop or close
        self._lock = threading.RLock()

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
        with self._lock:
            return self._start()

    def _start(self) -> Collector:
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
            self._mode.engine.set_flow_limits(**self.flow_limits)
            self._run = RunTotals(self._run.keep_retired)
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
        self._started_wall = self._run.started_at = time.time()
        self._stopped_mono = None
        log.debug("attached to %s (%s)", self._mode.where, self._attach_path)
        return self

    def stop(self) -> None:
        """Detach the programs (idempotent). Maps stay readable."""
        with self._lock:  # (after a drain under way)
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
        with self._lock:
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

    # -- reading ------------------------------------------------------------
    def _drain(self, timeouts: bool = True, end: bool = False) -> Drained:
        """One drain of the kernel tables into the lifetime table, accounted
        in the run's totals (and its retired flows)."""
        if not self._loaded:
            raise PktstatError("collector was never started (call start() or use 'with')")
        raw = self._mode.engine.drain(None, timeouts, end)
        if self.mode in names.MODES:
            self._names = self._mode.engine.names()
            self._dns_names = self._mode.engine.dns_names()
        unowned = self._mode.unowned(raw.records)
        self._last_unowned = self._run.fold(raw, unowned, self._mode.unowned_running)
        return raw

    def _make(
        self,
        records: np.ndarray,
        totals: Totals,
        started_at: float,
        taken_at: float,
        duration: float,
        columns: dict[str, np.ndarray],
    ) -> Snapshot:
        extra = self._mode.report_extra() if hasattr(self._mode, "report_extra") else {}
        if self._drops_reading is not None:
            extra = {**extra, **self._drops_reading.header()}
        if self._names is not None:
            columns = {**names.columns(records, self._names, self._dns_names), **columns}
            extra = {**extra, "namesFull": self._mode.engine.names_full}
            extra["dnsAddrsFull"] = self._mode.engine.dns_addrs_full
        return Snapshot(
            records=records,
            totals=totals,
            duration=duration,
            started_at=started_at,
            taken_at=taken_at,
            mode=self.mode,
            iface=self.iface,
            attach=self._attach_path,
            max_entries=self.max_entries,
            ifnames=self._mode.ifnames,
            cgroups=self._mode.cgroups,
            extra=extra,
            columns=columns,
            owners=bool(self._mode.owners),
            peak_flows=self._run.peak_flows,
        )

    def _drop_columns(self, records: np.ndarray) -> dict[str, Any]:
        return self._drops_reading.columns(records) if self._drops_reading is not None else {}

    def _read_drops(self) -> None:
        self._drops_reading = self._drops.read() if self._drops is not None else None

    def snapshot(self) -> Snapshot:
        """Every flow of the run so far, with its lifetime counts: the flows
        of the lifetime table and those retired (idle or evicted) since the
        start, one row per flow. Drains the kernel tables first, except
        while a :meth:`stream` runs (then it is as of the stream's last
        drain, which is ahead of the intervals its loop has taken when the
        loop is behind)."""
        with self._lock:
            if not self._loaded:
                raise PktstatError("collector was never started (call start() or use 'with')")
            if not self._streaming or self._run.stats is None:
                self._drain(timeouts=False)
            live = self._mode.engine.flows()
            records = merge_flows(np.concatenate([*self._run.retired, live])) if self._run.retired else live
            self._mode.name_cgroups(records)
            self._read_drops()
            duration = self.elapsed()
            started = self._started_wall if self._started_wall is not None else time.time()
            totals = dataclasses.replace(self._run.totals(len(records)))
            return self._make(
                records, totals, started, started + duration, duration, self._drop_columns(records)
            )

    def drain(self, *, end: bool = False, rows: str = "recent") -> Interval:
        """One interval: drain the kernel tables now and return what was
        counted since the previous drain (see :meth:`stream`). `end`: the
        capture ends here, every flow is retired with an end record."""
        with self._lock:
            if self._tracker is None or self._tracker.rows != rows:
                self._tracker = DrainTracker(rows)
            raw = self._drain(timeouts=True, end=end)
            self._mode.name_cgroups(raw.records, raw.ended)
            self._read_drops()
            live = self._mode.engine.flows if rows == "live" else None
            start = max(raw.start_ns / 1e9, self._started_wall or 0.0)  # the previous drain, or the attach
            return self._tracker.advance(
                raw, self._make, self._run, self._last_unowned, start, live, self._drop_columns
            )

    def stream(
        self,
        interval: float = 1.0,
        *,
        duration: float | None = None,
        stop: threading.Event | None = None,
        rows: str = "recent",
    ) -> Generator[Interval, None, None]:
        """Yield an :class:`~pktstat_bpf.Interval` every `interval`
        seconds: per-flow packets, bytes and bitrate over that interval, plus
        lifetime totals, and the records of flows that ended. Starts the
        collector if it is not running (and then leaves it running: stopping
        stays with the caller).

        Each interval is one drain of the kernel tables (docs/counting.md,
        "Continuous capture"): the kernel table needs room only for the
        flows of one interval, flows idle past the idle timeout are retired
        (with an end record) and every packet lands in exactly one interval.
        ``rows="live"`` gives every live flow in each interval instead of
        the recent ones.

        Ends after `duration` seconds of capture (counted from ``start()``),
        when `stop` is set, or when the collector is stopped; the last,
        possibly shorter, interval ends the capture (every flow gets its end
        record), so the deltas of all intervals add up to the run's totals.

        The drains run in a thread of their own, paced on the monotonic
        clock without drift, whatever the loop does with each interval: a
        loop slower than `interval` falls behind (the intervals wait for it
        in memory, in order, none dropped or merged; a backlog of more than
        64 is logged once), but the kernel table still holds one interval's
        flows. What a drain raises is raised in the loop. Leaving the loop
        early (``break``, an exception) stops the drains before the
        generator is gone; intervals drained and not yet taken go with it
        (their counts stay in the run's totals and :meth:`snapshot`).

        >>> with Collector(iface="eth0") as c:              # doctest: +SKIP
        ...     for iv in c.stream(1.0, duration=5):
        ...         print(iv.delta.to_text(header=False))
        """
        if not interval > 0:
            raise UsageError(f"interval must be positive, not {interval!r}")
        if not self.running:
            self.start()
        end_at = (self._started_mono or time.monotonic()) + duration if duration else None
        self._tracker = None
        self._streaming += 1
        try:  # the drains run in a thread of their own, on their pace (core/pacing.py)
            yield from paced(
                lambda last: self.drain(end=last, rows=rows),
                interval,
                end_at=end_at,
                stop=stop,
                ended=lambda: not self.running,
                name=f"pktstat-bpf drains ({self.where})",
            )
        finally:
            self._streaming -= 1
