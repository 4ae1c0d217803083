"""What every live job sets up the same way, said once: diagnostics on
stderr, the signals that end a run, the Collector and the View the flags ask
for, and the line that says where counting happens."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
from typing import Any, Iterator, cast

from ..core.collector import Collector
from ..core.durations import format_duration
from ..core.render import escape_text
from ..views.view import FillWarning, View
from .options import PROG, Options
from .signals import STOP, StopSignals

log = logging.getLogger("pktstat_bpf")


def setup_logging(level: int) -> None:
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(_EscapingFormatter(f"{PROG}: %(message)s"))
    root = logging.getLogger("pktstat_bpf")
    root.handlers[:] = [handler]
    root.propagate = False
    # (every clamped level is a key: .get never returns None)
    root.setLevel(
        cast(int, {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}.get(max(-1, min(level, 1))))
    )
    # libbpf's own log (verifier output, probes) only with -vv.
    logging.getLogger("pktstat_bpf.libbpf").setLevel(logging.DEBUG if level >= 2 else logging.CRITICAL + 1)


class _EscapingFormatter(logging.Formatter):
    """Every diagnostic line escaped as the report is: an interface name,
    a cgroup path or a kernel log line carrying ESC or other control
    characters reaches stderr inert (:func:`~pktstat_bpf.core.render.escape_text`)."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_text(super().format(record))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg, unused-ignore]
    """A stderr that cannot be written (closed, full) has no one to tell:
    drop the line rather than print logging's own traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def collector_for(opts: Options) -> Collector:
    """The Collector the mode flags ask for (nothing is loaded yet). Only
    the report keeps the records of retired flows (it lists every flow of
    the run); the continuous views hand them out and forget them."""
    common: dict[str, Any] = {
        "max_entries": opts.max_entries,
        "drops": opts.drops,
        "idle_timeout": opts.idle_timeout,
        "active_timeout": opts.active_timeout,
        "max_flows": opts.max_flows,
        "keep_retired": not (opts.streaming or opts.tui or opts.prometheus is not None),
    }
    if opts.cgroup is not None:
        return Collector(mode="cgroup", cgroup=opts.cgroup, **common)
    if opts.kprobes:
        return Collector(mode="process", backend=opts.process_backend or "auto", **common)
    packets = {"arp": opts.arp, "tcp_health": opts.tcp_health}
    if opts.xdp:
        return Collector(opts.iface, "xdp", xdp_mode=opts.xdp_mode, **packets, **common)
    return Collector(opts.iface, "tc", tc_attach=opts.tc_attach, **packets, **common)


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
def live_session(
    opts: Options, collector: Collector | None = None
) -> Iterator[tuple[Collector, View, StopSignals]]:
    """The view, the started collector and the stop signals of a live job,
    undone in reverse order on the way out (the collector detaches)."""
    collector = collector if collector is not None else collector_for(opts)
    with STOP as stop, view_for(opts) as view, collector, _watch_iface(collector, stop):
        stop.raise_if_signalled()  # a signal while loading or attaching: interrupted, nothing counted
        yield collector, view, stop


@contextlib.contextmanager
def _watch_iface(collector: Collector, stop: StopSignals, every: float = 0.5) -> Iterator[None]:
    """In the interface modes, a thread that notices the interface going
    away (deleted, or its namespace gone): the kernel detaches the programs
    with it, so nothing more can be counted. It says so on stderr and ends
    the run as a signal would (the report of what was counted is written)
    and records it in ``stop.failure``: the job's exit code is then 1."""
    ifindex = collector.status.get("ifindex")
    if not ifindex:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(every):
            try:
                socket.if_indextoname(ifindex)
            except OSError:
                stop.failure = f"interface {collector.where} (index {ifindex}) is gone"
                log.warning("warning: %s: the capture ends here", stop.failure)
                stop.event.set()
                return

    t = threading.Thread(target=watch, name="pktstat-bpf iface watch", daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()
