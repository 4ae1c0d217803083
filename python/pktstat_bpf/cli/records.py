"""The flow-record outputs of a run (``--ipfix``, ``--parquet``), opened before
the capture starts (a collector that refuses a TCP connection, or a directory
that cannot be written, ends the run before anything is attached) and handed
the records of a live run (any job: report, stream, exporter, table) or of a
streamed replay as its intervals end flows, or the final records of a
replay's report at its end."""

from __future__ import annotations

from typing import Any

from ..core.intervals import Interval
from ..core.snapshot import Snapshot
from ..output.flowrecords import FlowBatch, from_ended, from_snapshot
from .options import Options


class FlowOutputs:
    """The writers the flags ask for (none: a no-op)."""

    def __init__(self, opts: Options, *, direction: bool, owners: bool) -> None:
        self.writers: list[Any] = []
        try:
            if opts.parquet is not None:
                from ..output.parquet import ParquetWriter

                self.writers.append(ParquetWriter(opts.parquet, roll=opts.parquet_roll))
            if opts.ipfix is not None:
                from ..output.ipfix import Exporter

                transport, host, port = opts.ipfix
                self.writers.append(
                    Exporter(
                        opts.ipfix_target,
                        transport=transport,
                        host=host,
                        port=port,
                        domain=opts.ipfix_domain,
                        template_refresh=opts.ipfix_template_refresh,
                        direction=direction,
                        owners=owners,
                        apps=not opts.kprobes,  # process mode (-k) never labels flows
                        names=not owners,  # TC, XDP and replay read names (core/names.py MODES)
                    )
                )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> FlowOutputs:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        """On an error or interruption: close (what was written stays); on
        the way out of a run the outputs stay open for :meth:`final`."""
        if exc_type is not None:
            self.close()

    def write(self, batch: FlowBatch) -> None:
        for w in self.writers:
            w.write(batch)

    def interval(self, iv: Interval) -> None:
        """The records an interval of a live run (or a replay's step) handed
        out: flows that ended, active-timeout records. An interval without
        any still lets the writers keep time (a Parquet roll that is over
        is written, an IPFIX template refresh that is due is sent)."""
        if not self.writers:
            return
        if iv.ended is not None and len(iv.ended):
            self.write(from_ended(iv.ended))
        else:
            for w in self.writers:
                w.tick()

    def final(self, snap: Snapshot | None = None) -> None:
        """A replay's final records (reason: end of capture), if any (a live
        run's last interval has handed out its end records); then closes (a
        Parquet writer writes its last files)."""
        if self.writers:
            try:
                if snap is not None:
                    self.write(from_snapshot(snap))
            finally:
                self.close()

    def close(self) -> None:
        writers, self.writers = self.writers, []
        error: BaseException | None = None
        for w in writers:
            try:
                w.close()
            except BaseException as e:  # close every writer; the first error is the one a user sees
                error = error or e
        if error is not None:
            raise error
