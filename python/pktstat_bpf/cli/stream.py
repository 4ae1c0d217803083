"""The stream jobs (``--jsonl``, ``--plain``, ``-u``): a line per flow per
``-r`` interval, until -t, a signal or a closed stdout."""

from __future__ import annotations

from contextlib import closing

from ..core.collector import Collector
from ..output.checked import CheckedOut
from ..output.stream import StreamWriter
from ..views.filters import UniqueFilter
from ..views.view import View
from .options import Options
from .records import FlowOutputs
from .session import StopSignals


def stream_writer(opts: Options) -> StreamWriter:
    return StreamWriter(
        CheckedOut(what="the stream"),
        "jsonl" if opts.jsonl else "text",
        UniqueFilter() if opts.unique else None,
    )


def run_stream(
    opts: Options, collector: Collector, view: View, stop: StopSignals, flows: FlowOutputs | None = None
) -> None:
    """Stream until -t, a signal (`stop`) or a closed stdout; each
    interval's end records also go to --ipfix/--parquet (`flows`)."""
    writer = stream_writer(opts)
    # (closed on the way out, a failed write too: the drain thread is joined before the detach)
    with closing(collector.stream(opts.refresh, duration=opts.timeout or None, stop=stop.event)) as ivs:
        for iv in ivs:
            iv = view.apply_interval(iv)
            if flows is not None:
                flows.interval(iv)
            writer.write(iv)
