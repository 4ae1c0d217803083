"""Collector: attach the counting programs, take snapshots, detach."""

from __future__ import annotations

import errno
import logging
import time
from types import TracebackType
from typing import Any

from . import iface as _iface
from .errors import (
    PRIVILEGE_HINT,
    FeatureMissingError,
    PktstatError,
    PrivilegeError,
    UsageError,
)
from .snapshot import Snapshot, Totals

log = logging.getLogger("pktstat_bpf")

MODES = ("tc",)
TC_ATTACH = ("auto", "tcx", "legacy")
DEFAULT_MAX_ENTRIES = 65536
MAX_MAX_ENTRIES = 1 << 26  # 64M flows: beyond this the kernel map alone needs many GB


def _core():
    from . import _core

    return _core


def check_max_entries(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise UsageError(f"--max-entries must be an integer, not {n!r}")
    if n <= 0:
        raise UsageError(f"--max-entries must be positive, not {n}")
    if n > MAX_MAX_ENTRIES:
        raise UsageError(f"--max-entries {n} is too large (at most {MAX_MAX_ENTRIES})")
    return n


def translate_os_error(e: OSError, what: str) -> PktstatError:
    """Map an engine OSError to the exception (and exit code) a user sees."""
    if e.errno in (errno.EPERM, errno.EACCES):
        return PrivilegeError(f"{what}: permission denied; {PRIVILEGE_HINT}")
    if e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, 524):  # 524 = ENOTSUPP
        return FeatureMissingError(f"{what}: the kernel refused it ({e.strerror or e}); see README 'Requirements'")
    if e.errno == errno.ENOMEM:
        return PktstatError(f"{what}: out of memory (lower --max-entries?)")
    return PktstatError(f"{what}: {e.strerror or e}")


class Collector:
    """Counts packets and bytes per flow on one interface.

    >>> with Collector(iface="lo") as c:          # doctest: +SKIP
    ...     ...                                   # traffic happens
    ...     snap = c.snapshot()
    >>> snap.to_text()                            # doctest: +SKIP

    ``mode="tc"`` attaches to TC ingress and egress, through TCX where the
    kernel has it and a legacy clsact filter otherwise (``tc_attach`` forces
    one). ``stop()`` detaches and is idempotent; ``snapshot()`` works before and
    after it, until the collector is garbage collected or ``close()`` is called.
    """

    def __init__(
        self,
        iface: str | None = None,
        mode: str = "tc",
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        tc_attach: str = "auto",
        _fail_attach_at: int = -1,
    ) -> None:
        if mode not in MODES:
            raise UsageError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if tc_attach not in TC_ATTACH:
            raise UsageError(f"tc attach mode must be one of {', '.join(TC_ATTACH)}, not {tc_attach!r}")
        self.mode = mode
        self.iface = iface if iface is not None else _iface.default_interface()
        self.ifindex = _iface.ifindex(self.iface)
        self.max_entries = check_max_entries(max_entries)
        self.tc_attach = tc_attach
        self._fail_attach_at = _fail_attach_at
        self._engine: Any = None
        self._janitor: Any = None
        self._started_mono: float | None = None
        self._started_wall: float | None = None
        self._stopped_mono: float | None = None
        self._attach_path = ""

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> "Collector":
        if self._engine is not None and self._engine.attached:
            return self
        core = _core()
        if self._engine is None:
            try:
                self._engine = core.TcCollector(
                    self.ifindex,
                    self.max_entries,
                    self.tc_attach,
                    _iface.is_l3_device(self.iface),
                    self._fail_attach_at,
                )
            except OSError as e:
                raise translate_os_error(e, "cannot load the BPF programs") from None
        try:
            self._engine.attach()
        except LookupError:
            raise UsageError(f"network interface {self.iface!r} disappeared") from None
        except OSError as e:
            raise translate_os_error(e, f"cannot attach to {self.iface}") from None
        self._attach_path = self._engine.attach_path
        if self._attach_path == "tc-legacy":
            from ._janitor import Janitor

            self._janitor = Janitor.spawn(self.ifindex, self._engine.legacy_filters, self._engine.created_qdisc)
        self._started_mono = time.monotonic()
        self._started_wall = time.time()
        self._stopped_mono = None
        log.debug("attached to %s (%s)", self.iface, self._engine.attach_path)
        return self

    def stop(self) -> None:
        """Detach the programs (idempotent). Maps stay readable."""
        if self._engine is None or not self._engine.attached:
            return
        try:
            self._engine.detach()
        finally:
            self._stopped_mono = time.monotonic()
            if self._janitor is not None:
                self._janitor.release()
                self._janitor = None

    def close(self) -> None:
        """Detach and free the kernel maps."""
        self.stop()
        self._engine = None

    def __enter__(self) -> "Collector":
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- state ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._engine is not None and self._engine.attached

    @property
    def status(self) -> dict[str, Any]:
        """Which path is live: mode, interface, attach path (``tcx`` or
        ``tc-legacy``), whether we created the clsact qdisc, map size."""
        e = self._engine
        return {
            "mode": self.mode,
            "iface": self.iface,
            "ifindex": self.ifindex,
            "attach": e.attach_path if e is not None else "",
            "created_qdisc": bool(e.created_qdisc) if e is not None else False,
            "max_entries": self.max_entries,
            "running": self.running,
        }

    def elapsed(self) -> float:
        if self._started_mono is None:
            return 0.0
        end = self._stopped_mono if self._stopped_mono is not None else time.monotonic()
        return end - self._started_mono

    def snapshot(self, *, use_batch: bool = True) -> Snapshot:
        """Read all flows and counters now."""
        if self._engine is None:
            raise PktstatError("collector was never started (call start() or use 'with')")
        stats = self._engine.read_stats()
        records = self._engine.read_flows(use_batch)
        duration = self.elapsed()
        return Snapshot(
            records=records,
            totals=Totals.from_arrays(stats, records),
            duration=duration,
            started_at=self._started_wall or time.time(),
            taken_at=(self._started_wall or time.time()) + duration,
            mode=self.mode,
            iface=self.iface,
            attach=self._attach_path,
            max_entries=self.max_entries,
            ifnames={self.ifindex: self.iface},
        )
