"""``main(argv) -> int``: parse the flags, run the job they ask for, and turn
every way a run can end into one line and an exit code."""

from __future__ import annotations

import os
import sys
from typing import Sequence

from ..core.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PktstatError, UsageError
from .options import PROG, Options, parse_args
from .session import setup_logging


def dispatch(opts: Options) -> int:
    """Pick the job the flags ask for (replay, TUI, exporter, or the default
    capture: report or stream)."""
    if opts.pcap is not None:
        from .replay import run_replay

        return run_replay(opts)
    if opts.tui:
        from .tui import run_tui

        return run_tui(opts)
    if opts.prometheus is not None:
        from .exporter import run_exporter

        return run_exporter(opts)
    from .report import run_capture

    return run_capture(opts)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see ``--help``)."""
    try:
        opts = parse_args(argv)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if opts.version:
        from ..core.about import __version__, libbpf_version

        print(f"{PROG} {__version__} (libbpf {libbpf_version()})")
        return EXIT_OK
    setup_logging(opts.verbose - opts.quiet)
    try:
        return dispatch(opts)
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
