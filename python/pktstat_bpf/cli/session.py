"""What every live job sets up the same way, said once: diagnostics on
stderr, the signals that end a run, the Collector and the View the flags ask
for, and the line that says where counting happens."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from typing import Iterator, cast

from ..core.collector import Collector
from ..core.durations import format_duration
from ..views.view import FillWarning, View
from .options import PROG, Options

log = logging.getLogger("pktstat_bpf")


def setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    root = logging.getLogger("pktstat_bpf")
    root.handlers[:] = [handler]
    root.propagate = False
    # (every clamped level is a key: .get never returns None)
    root.setLevel(cast(int, {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}.get(max(-1, min(level, 1)))))
    # libbpf's own log (verifier output, probes) only with -vv.
    logging.getLogger("pktstat_bpf.libbpf").setLevel(logging.DEBUG if level >= 2 else logging.CRITICAL + 1)


class StopSignals:
    """SIGINT/SIGTERM end the run (the report is still printed)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]

    def wait(self, timeout: float) -> None:
        self.event.wait(timeout if timeout > 0 else None)

    def raise_if_signalled(self) -> None:
        """A signal came: unwind as an interruption (exit code 130)."""
        if self.signal is not None:
            raise KeyboardInterrupt


def collector_for(opts: Options) -> Collector:
    """The Collector the mode flags ask for (nothing is loaded yet)."""
    n, drops = opts.max_entries, opts.drops
    if opts.cgroup is not None:
        return Collector(mode="cgroup", max_entries=n, drops=drops, cgroup=opts.cgroup)
    if opts.kprobes:
        return Collector(mode="process", max_entries=n, drops=drops, backend=opts.process_backend or "auto")
    if opts.xdp:
        return Collector(opts.iface, "xdp", max_entries=n, drops=drops, xdp_mode=opts.xdp_mode)
    return Collector(opts.iface, "tc", max_entries=n, drops=drops, tc_attach=opts.tc_attach)


def view_for(opts: Options) -> View:
    """The View the flags ask for (with the fill warning every CLI output
    gives); starts the pod cache (one list call)."""
    pods = None
    if opts.kubeconfig:
        from ..views.kube import PodCache

        pods = PodCache(opts.kubeconfig).start()
    return View(external=opts.internal if opts.external else None, pods=pods, fill=FillWarning())


def until(opts: Options) -> str:
    return f"for {format_duration(opts.timeout)}" if opts.timeout > 0 else "until interrupted"


@contextlib.contextmanager
def live_session(opts: Options, collector: Collector | None = None) -> Iterator[tuple[Collector, View, StopSignals]]:
    """The view, the started collector and the stop signals of a live job,
    undone in reverse order on the way out (the collector detaches)."""
    collector = collector if collector is not None else collector_for(opts)
    with view_for(opts) as view, collector, StopSignals() as stop:
        yield collector, view, stop
