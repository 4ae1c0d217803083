"""The one way output reaches stdout: every write and flush checked.

A write into a full disk, ``/dev/full``, a closed descriptor (``>&-``) or a
failing device must not end in a report silently cut short with exit code 0,
nor in a traceback: :class:`CheckedOut` turns it into :class:`OutputError`
(one line, exit code 1). A pipe whose reading end closed (``| head``) is not
an error: its :class:`BrokenPipeError` passes through for the CLI to end the
run with exit code 0, as documented.
"""

from __future__ import annotations

import errno
import os
from typing import IO, Callable, Protocol

from ..core.errors import PktstatError


class TextSink(Protocol):
    """Where lines go: a text stream, or a :class:`CheckedOut`."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


class OutputError(PktstatError):
    """Writing the output failed (exit code 1)."""


class CheckedOut:
    """A text stream (default: ``sys.stdout`` at the time of each write)
    whose writes and flushes raise :class:`OutputError` on failure."""

    def __init__(self, stream: IO[str] | None = None, what: str = "the report") -> None:
        self._stream = stream
        self.what = what

    @property
    def stream(self) -> IO[str] | None:
        import sys

        return self._stream if self._stream is not None else sys.stdout

    def write(self, text: str) -> None:
        """Write `text` through to the descriptor: when the stream has
        one, it is flushed first and the encoded text written with
        ``os.write`` until all of it is out (a buffered text stream may
        take a short write, on a filling disk, as success and drop the
        rest); else (a StringIO ...) written and flushed."""
        self._do(lambda s: _write_through(s, text))

    def flush(self) -> None:
        self._do(lambda s: s.flush())

    def put(self, text: str) -> None:
        """Write `text` (through to the descriptor, as :meth:`write`)."""
        self.write(text)

    def _do(self, op: Callable[[IO[str]], object]) -> None:
        s = self.stream
        if s is None:  # started with fd 1 closed: Python has no sys.stdout
            raise OutputError(
                f"cannot write {self.what}: standard output is closed ({os.strerror(errno.EBADF)})"
            )
        try:
            op(s)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(f"cannot write {self.what}: {e.strerror or e}") from None
        except ValueError as e:  # I/O on a closed file object
            raise OutputError(f"cannot write {self.what}: {e}") from None


def _write_through(stream: IO[str], text: str) -> None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # (io.UnsupportedOperation is both)
        stream.write(text)
        stream.flush()
        return
    stream.flush()  # what the stream still holds goes first
    encoding, errors = getattr(stream, "encoding", None), getattr(stream, "errors", None)
    view = memoryview(text.encode(encoding or "utf-8", errors or "strict"))
    while view:
        view = view[os.write(fd, view) :]
