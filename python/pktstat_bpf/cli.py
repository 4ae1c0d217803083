"""Command line: ``python -m pktstat_bpf`` / ``pktstat-bpf``.

Flags follow the Go pktstat-bpf (-i -t -j --max-entries --version -?) so its
users need not relearn them; new flags use long GNU-style names.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Sequence, cast

from . import __version__, exporter, render, views
from .collector import DEFAULT_MAX_ENTRIES, Collector, check_max_entries
from .durations import format_duration, parse_duration
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, PktstatError, UsageError
from .modes.process import BACKENDS
from .modes.tc import TC_ATTACH
from .modes.xdp import XDP_MODES
from .snapshot import Snapshot

if TYPE_CHECKING:  # pragma: no cover
    from .offline import Progress, Replayer
    from .progress import ProgressBar

PROG = "pktstat-bpf"
DEFAULT_TIMEOUT = 600.0
log = logging.getLogger("pktstat_bpf")

EPILOG = """\
exit codes: 0 ok, 1 runtime error, 2 usage error, 69 kernel feature missing,
77 insufficient privilege (needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON), 130 interrupted.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (via UsageError)."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
        raise UsageError(message)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        add_help=False,
        description="Per-flow packet and byte counts from eBPF programs in the kernel.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-?", "-h", "--help", action="help", help="show this help and exit")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("-i", "--iface", metavar="IFACE", help="interface to read from (default: the default-route interface)")
    p.add_argument(
        "-t", "--timeout", metavar="DURATION", type=_duration, default=None,
        help="capture time, Go-style (10s, 1m30s; default 10m, with --prometheus until stopped; 0 = until Ctrl-C)",
    )  # fmt: skip
    p.add_argument("-j", "--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--json-array", action="store_true",
        help="print the report as pktstat-bpf's bare JSON array of flows (no header: "
             "the conservation counters are left out)",
    )  # fmt: skip
    p.add_argument(
        "--max-entries", metavar="N", type=_int, default=DEFAULT_MAX_ENTRIES,
        help=f"flow table size (default {DEFAULT_MAX_ENTRIES}); flows beyond it are counted as overflow",
    )  # fmt: skip
    p.add_argument(
        "--tc-attach", choices=TC_ATTACH, default="auto",
        help="TC attach path: tcx (kernel >= 6.6), legacy clsact, or auto (tcx, else legacy)",
    )  # fmt: skip
    p.add_argument(
        "-x", "--xdp", action="store_true",
        help="count at XDP instead of TC (ingress only: XDP does not see egress)",
    )  # fmt: skip
    p.add_argument(
        "--xdp_mode", "--xdp-mode", dest="xdp_mode", choices=XDP_MODES, default="auto",
        help="XDP attach mode: native (driver), generic (any device), offload (NIC), "
        "or auto (native, else generic; default)",
    )  # fmt: skip
    p.add_argument(
        "-c", "--cgroup", metavar="PATH",
        help="count the sockets of a cgroup v2 directory and its descendants (cgroup_skb), "
        "with pid, comm and cgroup of each flow's process",
    )  # fmt: skip
    p.add_argument(
        "-k", "--kprobes", action="store_true",
        help="process mode: the TCP/UDP/ICMP traffic of every process of the host, with pid, comm and cgroup "
        "(socket layer; the name is pktstat-bpf's: the backend is chosen by probing, see --process-backend)",
    )  # fmt: skip
    p.add_argument(
        "--process-backend", choices=BACKENDS, default=None,
        help="process mode's hooks: tracepoint (BTF tracepoints, Linux 6.3+), fentry, kprobe, "
        "or auto (the first of these the kernel accepts; default)",
    )  # fmt: skip
    p.add_argument(
        "--pcap", metavar="FILE",
        help="replay a pcap/pcapng capture file through the counting program instead of capturing "
        "(no interface is touched; bytes are the frames' original lengths; with --jsonl/--plain/-u, "
        "streamed per -r interval of capture time)",
    )  # fmt: skip
    live = p.add_argument_group("live views")
    live.add_argument("-g", "--tui", action="store_true", help="interactive full-screen table of interval rates")
    live.add_argument(
        "-r", "--refresh", metavar="DURATION", type=_duration, default=1.0,
        help="interval of the TUI, of streams and of the exporter's map readings (default 1s)",
    )  # fmt: skip
    live.add_argument("--jsonl", action="store_true", help="stream JSON Lines: one object per flow per interval")
    live.add_argument("--plain", action="store_true", help="stream text lines (pktstat-kube compatible)")
    live.add_argument(
        "-u", "--unique", action="store_true",
        help="stream each connection only the first time it appears (text, or JSON Lines with --jsonl)",
    )  # fmt: skip
    views.add_arguments(live)
    exporter.add_arguments(p)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more diagnostics on stderr (-vv: libbpf log)")
    p.add_argument("-q", "--quiet", action="count", default=0, help="fewer diagnostics on stderr")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.timeout is None:  # an exporter runs until stopped; a capture 10m, as pktstat-bpf's
        args.timeout = 0.0 if args.prometheus is not None else DEFAULT_TIMEOUT
    check_max_entries(args.max_entries)
    modes = [f for f, on in (("-x/--xdp", args.xdp), ("-c/--cgroup", args.cgroup is not None),
                             ("-k/--kprobes", args.kprobes)) if on]  # fmt: skip
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} are different modes: choose one")
    if args.process_backend is not None and not args.kprobes:
        raise UsageError("--process-backend chooses the hooks of process mode: use it with -k/--kprobes")
    if args.kprobes and args.iface is not None:
        raise UsageError("-k/--kprobes counts the sockets of every process, not an interface: drop -i/--iface")
    if args.cgroup is not None and args.iface is not None:
        raise UsageError("-c/--cgroup counts sockets, not an interface: drop -i/--iface")
    check_live_arguments(args)
    if args.pcap is not None:
        if args.iface is not None:
            raise UsageError("--pcap replays a file: it takes no interface (-i)")
        if args.tui:
            raise UsageError("--pcap replays a file: -g/--tui shows live traffic only")
        if args.xdp or args.cgroup is not None or args.kprobes:
            raise UsageError("--pcap replays a file through the TC program: drop -x/--xdp, -c/--cgroup and -k/--kprobes")
        if args.prometheus is not None:
            raise UsageError("--pcap replays a file: --prometheus exports live counters only")
    return args


def check_live_arguments(args: argparse.Namespace) -> None:
    """One output at a time; a positive refresh; valid CIDRs."""
    if args.refresh < 0.01:
        raise UsageError(f"-r/--refresh must be at least 10ms, not {format_duration(args.refresh)}")
    chosen = [f for f, on in (("-g/--tui", args.tui), ("-j/--json", args.json), ("--json-array", args.json_array),
                              ("--jsonl", args.jsonl), ("--plain", args.plain),
                              ("--prometheus", args.prometheus is not None)) if on]  # fmt: skip
    if len(chosen) > 1:
        raise UsageError(f"choose one output: {' or '.join(chosen)}")
    if args.unique and (args.tui or args.json or args.json_array or args.prometheus is not None):
        raise UsageError("-u/--unique streams lines: use it with --jsonl or --plain (the default)")
    views.check_arguments(args)
    exporter.check_arguments(args)


def _setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    root = logging.getLogger("pktstat_bpf")
    root.handlers[:] = [handler]
    root.propagate = False
    # (every clamped level is a key: .get never returns None)
    root.setLevel(cast(int, {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}.get(max(-1, min(level, 1)))))
    # libbpf's own log (verifier output, probes) only with -vv.
    logging.getLogger("pktstat_bpf.libbpf").setLevel(logging.DEBUG if level >= 2 else logging.CRITICAL + 1)


class _StopSignals:
    """SIGINT/SIGTERM end the capture (the report is still printed)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_StopSignals":
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


def write_report(snap: Snapshot, args: argparse.Namespace) -> None:
    """The final report in the format the flags chose: text, JSON (header and
    flows) or pktstat-bpf's bare array of flows."""
    if args.json_array:
        out = render.dumps(snap.flows()) + "\n"
    elif args.json:
        out = snap.to_json() + "\n"
    else:
        out = snap.to_text()
    sys.stdout.write(out)
    sys.stdout.flush()


def collector_from_args(args: argparse.Namespace) -> Collector:
    """The Collector the mode flags ask for."""
    if args.cgroup is not None:
        return Collector(mode="cgroup", max_entries=args.max_entries, cgroup=args.cgroup)
    if args.kprobes:
        return Collector(mode="process", max_entries=args.max_entries, backend=args.process_backend or "auto")
    if args.xdp:
        return Collector(args.iface, "xdp", max_entries=args.max_entries, xdp_mode=args.xdp_mode)
    return Collector(args.iface, "tc", max_entries=args.max_entries, tc_attach=args.tc_attach)


def run_capture(args: argparse.Namespace) -> int:
    """The default job: capture for --timeout (or until a signal), then
    report; or, with --jsonl/--plain/-u, stream every --refresh interval."""
    collector = collector_from_args(args)
    with views.view_from_args(args) as view, collector, _StopSignals() as stop:
        st = collector.status
        until = f"for {format_duration(args.timeout)}" if args.timeout > 0 else "until interrupted"
        note = f"; {st['note']}" if st.get("note") else ""
        log.info("counting on %s via %s %s (Ctrl-C to stop)%s", collector.where, st["attach"], until, note)
        if args.jsonl or args.plain or args.unique:
            from .stream import run_stream

            run_stream(args, collector, view, stop.event)
            return EXIT_OK
        stop.wait(args.timeout)
        collector.stop()
        snap = collector.snapshot()
    write_report(view.apply(snap), args)  # (the view warns once if the table is nearly full)
    return EXIT_OK


def run_replay(args: argparse.Namespace) -> int:
    """--pcap FILE: count the file's frames and report, or with --jsonl,
    --plain or -u stream them per -r interval of capture time. A file damaged
    part-way still gets its report (of the frames before the damage) on
    stdout, a warning on stderr, and exit code 1. SIGINT or SIGTERM while
    loading or replaying stops with no report: one line, exit code 130 (the
    KeyboardInterrupt :func:`main` turns into it); a progress bar on a
    terminal is erased first."""
    from .offline import DamagedCaptureError, Replayer
    from .progress import ProgressBar

    streaming = bool(args.jsonl or args.plain or args.unique)
    snap: Snapshot | None = None
    code = EXIT_OK
    with views.view_from_args(args) as view:
        with _StopSignals() as stop:
            replayer = Replayer(args.max_entries)  # (loading: the signal is seen once it returns)
            _stop_if_signalled(stop)
            bar = ProgressBar(sys.stderr)
            try:
                if streaming:
                    _replay_stream(args, replayer, view, stop, bar)
                else:
                    snap = replayer.replay(args.pcap, progress=_replay_progress(stop, bar), strict=True)
                    _stop_if_signalled(stop)
            # a signal breaks a read of a pipe (--pcap -): an interruption then, not damage or a file error
            except DamagedCaptureError as e:
                _stop_if_signalled(stop)
                bar.close()  # the warning starts on a clean line
                log.warning("warning: %s", e)
                snap, code = (None if streaming else e.snapshot), EXIT_RUNTIME
            except (PktstatError, OSError):
                _stop_if_signalled(stop)
                raise
            finally:
                bar.close()
        if snap is not None:  # the report: of the frames before the damage, if any
            write_report(view.apply(snap), args)
    return code


def _stop_if_signalled(stop: _StopSignals) -> None:
    if stop.signal is not None:
        raise KeyboardInterrupt


def _replay_progress(stop: _StopSignals, bar: Progress) -> Progress:
    """The replay's progress hook: the engine calls it (with the signal
    handlers run just before) every 65536 frames and at the end; raising
    there unwinds the replay loop."""

    def progress(frames: int, done: int, total: int) -> None:
        _stop_if_signalled(stop)
        bar(frames, done, total)

    return progress


def _fill_warning_due(view: views.View, snap: Snapshot) -> bool:
    """True if applying the view to `snap` logs the fill warning."""
    return view.fill is not None and not view.fill.warned and views.nearly_full(snap)


def _replay_stream(
    args: argparse.Namespace, replayer: Replayer, view: views.View, stop: _StopSignals, bar: ProgressBar
) -> None:
    """--pcap with --jsonl, --plain or -u: a line per flow per -r interval of
    capture time (DamagedCaptureError comes after the last interval)."""
    from .filters import UniqueFilter
    from .stream import StreamWriter

    writer = StreamWriter(sys.stdout, "jsonl" if args.jsonl else "text",
                          UniqueFilter() if args.unique else None)  # fmt: skip
    try:
        shared_tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        shared_tty = False
    progress = _replay_progress(stop, bar)
    for iv in replayer.intervals(args.pcap, args.refresh, progress=progress, strict=True):
        _stop_if_signalled(stop)
        if bar.drawn and (shared_tty or _fill_warning_due(view, iv.cumulative)):
            bar.close()  # a line on the terminal, or the fill warning, starts on a clean line
        writer.write(view.apply_interval(iv))


def dispatch(args: argparse.Namespace) -> int:
    """Pick the job the flags ask for (replay, TUI, stream ... or the default
    capture-and-report)."""
    if args.pcap is not None:
        return run_replay(args)
    if args.tui:
        from .tui import run_tui

        return run_tui(args)
    if args.prometheus is not None:
        return exporter.run_exporter(args)
    return run_capture(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see ``--help``)."""
    try:
        args = parse_args(argv)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.version:
        from . import _core

        print(f"{PROG} {__version__} (libbpf {_core.libbpf_version()})")
        return EXIT_OK
    _setup_logging(args.verbose - args.quiet)
    try:
        return dispatch(args)
    except PktstatError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
