"""The signals that end a run: SIGINT and SIGTERM, defined alike.

:data:`STOP` is installed first thing in :func:`~pktstat_bpf.cli.main.main`,
before the engine is imported or a program loaded. Its handler only records
the signal and writes a byte to a pipe: it never raises inside whatever code
the signal happens to land in (libbpf's log callback, an import, a map
creation), where an exception would be lost or turned into a traceback, and
it takes no lock. A relay thread reads the pipe and sets the event: setting
a :class:`threading.Event` from the handler itself would deadlock when the
signal lands while the main thread holds that event's lock (inside
``Event.wait`` between waking up and returning).
The jobs look at it between phases (:meth:`StopSignals.raise_if_signalled`
after loading and attaching; the capture waits on :attr:`StopSignals.event`),
so an interruption is raised in one place and :func:`main` turns it into one
line and exit code 130, for either signal (the documented "interrupted":
SIGTERM is the same request to stop as Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from ..core.errors import EXIT_OK, EXIT_RUNTIME

#: The signals that end a run.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """SIGINT/SIGTERM end the run (the report is still printed when the
    capture had started). Re-entrant: entering it again while installed
    keeps the first installation (and what it has recorded)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None
        #: Why the run ended early other than by a signal (the interface went
        #: away ...): the job ends as on a signal, with exit code 1.
        self.failure: str | None = None
        self._old: dict[int, object] = {}
        self._depth = 0
        self._wake: int | None = None  # the pipe's write end, while installed
        self._relay: threading.Thread | None = None

    def __enter__(self) -> StopSignals:
        if self._depth == 0:
            self.signal = None
            self.failure = None
            self.event.clear()
            self._start_relay()
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        self._depth += 1
        return self

    def _start_relay(self) -> None:
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._wake = w

        def relay() -> None:
            with open(r, "rb", buffering=0) as pipe:
                while pipe.read(1):  # b"" once the write end is closed
                    self.event.set()

        self._relay = threading.Thread(target=relay, name="pktstat-bpf signals", daemon=True)
        self._relay.start()

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum
        if self._wake is not None:
            with contextlib.suppress(OSError):  # a full pipe has a wake-up pending already
                os.write(self._wake, b"\0")

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.restore()

    def restore(self) -> None:
        """Put back the handlers that were there before."""
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._old.clear()
        if self._wake is not None:
            if self.signal is not None:
                self.event.set()  # (a byte still in the pipe is no longer relayed)
            os.close(self._wake)
            self._wake = None
            if self._relay is not None:
                self._relay.join()
                self._relay = None

    def keep(self) -> None:
        """When the outermost ``with`` ends, ignore SIGINT and SIGTERM
        instead of restoring the old handlers: the process is about to exit
        with its code decided, and a signal in its last instants (the
        interpreter's shutdown puts back the default action of a signal
        with a Python handler) must neither kill it nor raise into it."""
        self._old = dict.fromkeys(self._old, signal.SIG_IGN)

    def wait(self, timeout: float) -> None:
        self.event.wait(timeout if timeout > 0 else None)

    def raise_if_signalled(self) -> None:
        """A signal came: unwind as an interruption (:func:`main` gives the
        signal's exit code and one line)."""
        if self.signal is not None:
            raise KeyboardInterrupt

    @property
    def job_exit_code(self) -> int:
        """What a job that ran to its end returns: 0, or 1 after a failure."""
        return EXIT_RUNTIME if self.failure else EXIT_OK

    @property
    def name(self) -> str:
        """The signal that came (SIGINT if none was recorded)."""
        return signal.Signals(self.signal or signal.SIGINT).name


#: The process's one installation (the CLI's jobs all use it).
STOP = StopSignals()
