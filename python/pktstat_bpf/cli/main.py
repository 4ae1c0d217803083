"""``main(argv) -> int``: parse the flags, run the job they ask for, and turn
every way a run can end into one line and an exit code."""

from __future__ import annotations

import os
import sys

from ..core.errors import EXIT_INTERRUPTED, EXIT_OK, PktstatError
from .signals import STOP

TYPE_CHECKING = False  # (typing is not imported: this module comes before the signal handlers)
if TYPE_CHECKING:
    from typing import Sequence

    from .options import Options

PROG = "pktstat-bpf"  # (also options.PROG: said here so main needs no import before the signals are set)


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


def say(line: str) -> None:
    """One line on stderr, with what a user, an interface or a packet
    controls in it escaped (no terminal control character reaches it);
    nothing if stderr is closed."""
    from ..core.render import escape_text

    if sys.stderr is None:
        return
    try:
        sys.stderr.write(f"{PROG}: {escape_text(line)}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _quiet_stdout() -> None:
    """Point fd 1 at /dev/null (after a closed pipe or a failed write), so
    the interpreter's final flush of what is still buffered cannot fail
    again ("Exception ignored ...")."""
    if sys.stdout is None:
        return
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see ``--help``).

    SIGINT and SIGTERM are caught before anything else is imported or
    loaded (:mod:`.signals`). Called as the program (`argv` None) the
    handlers stay installed until the process exits."""
    with STOP:
        if argv is None:
            STOP.keep()
        return _run(argv)


def _run(argv: Sequence[str] | None) -> int:
    try:
        from .options import parse_args
        from .session import setup_logging

        try:
            opts = parse_args(argv)
        except PktstatError as e:  # a usage error, or a --kubeconfig ... checked with the flags
            say(f"error: {e}")
            return e.exit_code
        if opts.version:
            from ..core.about import __version__, libbpf_version
            from ..output.checked import CheckedOut

            CheckedOut(what="the version").put(f"{PROG} {__version__} (libbpf {libbpf_version()})\n")
            return EXIT_OK
        setup_logging(opts.verbose - opts.quiet)
        STOP.raise_if_signalled()
        return dispatch(opts)
    except PktstatError as e:
        from ..output.checked import OutputError

        if isinstance(e, OutputError):
            _quiet_stdout()
        say(f"error: {e}")
        return e.exit_code
    except KeyboardInterrupt:  # (raised by STOP.raise_if_signalled, between phases)
        say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error.
        _quiet_stdout()
        return EXIT_OK
