"""``with pktstat_bpf.capture(...) as cap:`` — measure the traffic of a block."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

from .collector import Collector
from .snapshot import Snapshot


class Capture:
    """The traffic of one ``with capture(...)`` block.

    Inside the block ``snapshot()`` reads the live counters; after it, the
    final snapshot taken when the block ended (programs already detached).
    """

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._final: Snapshot | None = None

    @property
    def status(self) -> dict[str, Any]:
        return self.collector.status

    def snapshot(self) -> Snapshot:
        if self._final is not None:
            return self._final
        return self.collector.snapshot()

    def _finish(self, settle: float) -> None:
        if settle > 0:
            time.sleep(settle)
        self.collector.stop()
        self._final = self.collector.snapshot()
        self.collector.close()


@contextlib.contextmanager
def capture(
    iface: str | None = None, mode: str = "tc", *, settle: float = 0.05, **options: Any
) -> Iterator[Capture]:
    """Count the traffic of a block of code.

    >>> import pktstat_bpf, urllib.request                      # doctest: +SKIP
    >>> with pktstat_bpf.capture(iface="lo") as cap:            # doctest: +SKIP
    ...     urllib.request.urlopen("http://127.0.0.1:8000/")
    >>> cap.snapshot().to_pandas()[["dst_port", "bytes"]]       # doctest: +SKIP

    `settle` seconds are waited before detaching, so that replies still in
    flight when the block ends are counted. Other keyword arguments go to
    :class:`Collector` (``max_entries``, ``tc_attach`` ...).
    """
    cap = Capture(Collector(iface, mode, **options).start())
    try:
        yield cap
    finally:
        cap._finish(settle)
