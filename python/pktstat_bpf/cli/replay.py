"""The replay job (``--pcap FILE``): a capture file through the counting
program, reported once or streamed per -r interval of capture time."""

from __future__ import annotations

import logging
import sys

from ..core.errors import EXIT_OK, EXIT_RUNTIME, PktstatError
from ..core.replay import DamagedCaptureError, Progress, Replayer
from ..core.snapshot import Snapshot
from ..output.progress import ProgressBar
from ..views.view import View, nearly_full
from .options import Options
from .records import FlowOutputs
from .report import write_report
from .session import StopSignals, view_for
from .signals import STOP
from .stream import stream_writer

log = logging.getLogger("pktstat_bpf")


def run_replay(opts: Options) -> int:
    """--pcap FILE: count the file's frames and report, or with --jsonl,
    --plain or -u stream them per -r interval of capture time. A file damaged
    part-way still gets its report (of the frames before the damage) on
    stdout, a warning on stderr, and exit code 1. SIGINT or SIGTERM while
    loading or replaying stops with no report: one line, exit code 130 (the
    KeyboardInterrupt :func:`main` turns into it); a progress bar on a
    terminal is erased first."""
    assert opts.pcap is not None
    streaming = opts.streaming
    snap: Snapshot | None = None
    code = EXIT_OK
    with FlowOutputs(opts, direction=False, owners=False) as flows, view_for(opts) as view:  # (outputs first)
        with STOP as stop:
            replayer = Replayer(
                opts.max_entries, arp=opts.arp, tcp_health=opts.tcp_health
            )  # (loading: the signal is seen once it returns)
            stop.raise_if_signalled()
            bar = ProgressBar(sys.stderr)
            try:
                if streaming:
                    _replay_stream(opts, replayer, view, stop, bar, flows)
                else:
                    snap = replayer.replay(opts.pcap, progress=_replay_progress(stop, bar), strict=True)
                    stop.raise_if_signalled()
            # a signal breaks a read of a pipe (--pcap -): an interruption then, not damage or a file error
            except DamagedCaptureError as e:
                stop.raise_if_signalled()
                bar.close()  # the warning starts on a clean line
                log.warning("warning: %s", e)
                snap, code = (None if streaming else e.snapshot), EXIT_RUNTIME
            except (PktstatError, OSError):
                stop.raise_if_signalled()
                raise
            finally:
                bar.close()
        if snap is not None:  # the report: of the frames before the damage, if any
            snap = view.apply(snap)
            write_report(snap, opts)
            flows.final(snap)  # --ipfix, --parquet: the replay's records
        elif streaming:
            flows.final()  # the steps handed out every record (up to the damage, if any)
    return code


def _replay_progress(stop: StopSignals, bar: Progress) -> Progress:
    """The replay's progress hook: the engine calls it (with the signal
    handlers run just before) every 65536 frames and at the end; raising
    there unwinds the replay loop."""

    def progress(frames: int, done: int, total: int) -> None:
        stop.raise_if_signalled()
        bar(frames, done, total)

    return progress


def _fill_warning_due(view: View, snap: Snapshot) -> bool:
    """True if applying the view to `snap` logs the fill warning."""
    return view.fill is not None and not view.fill.warned and nearly_full(snap)


def _replay_stream(
    opts: Options, replayer: Replayer, view: View, stop: StopSignals, bar: ProgressBar, flows: FlowOutputs
) -> None:
    """--pcap with --jsonl, --plain or -u: a line per flow per -r interval of
    capture time (DamagedCaptureError comes after the last interval); each
    step's end records also go to --ipfix/--parquet (`flows`)."""
    assert opts.pcap is not None
    writer = stream_writer(opts)
    try:
        shared_tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        shared_tty = False
    progress = _replay_progress(stop, bar)
    for iv in replayer.intervals(opts.pcap, opts.refresh, progress=progress, strict=True):
        stop.raise_if_signalled()
        if bar.drawn and (shared_tty or _fill_warning_due(view, iv.cumulative)):
            bar.close()  # a line on the terminal, or the fill warning, starts on a clean line
        iv = view.apply_interval(iv)
        flows.interval(iv)
        writer.write(iv)
