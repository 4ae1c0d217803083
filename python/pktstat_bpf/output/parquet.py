"""Parquet output of flow records (``--parquet DIR``), through pyarrow.

Records are kept in memory and written once per roll interval (``--parquet-roll``,
default 5 min; and at the end of the run) as one file per hour of flow end
(UTC), Hive-partitioned: ``DIR/date=YYYY-MM-DD/hour=HH/part-<roll start>-<pid>-<n>.parquet``.
A file is written under a hidden temporary name (``.part-....parquet.tmp``,
which pyarrow, pandas and DuckDB's ``*.parquet`` globs skip), synced, and
renamed: a reader only ever sees complete files. A killed writer loses the
records of the roll interval it was in (and may leave a temporary file, never
a visible partial one).

Columns: every column of :func:`pktstat_bpf.core.frame.to_pandas` (strings and
categoricals stored as plain strings: ``app``, the application label, is
null where no label applies), then ``end_reason`` (idle, active,
end of capture, forced, lack of resources), ``interval_start`` and
``interval_end`` (the interval the counts cover, timestamp[ns, UTC]).
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import frame, protocols
from ..core.errors import PktstatError, UsageError
from .flowrecords import REASONS, FlowBatch, concat

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import pyarrow

DEFAULT_ROLL = 300.0
HOUR_NS = 3600 * 10**9


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError("--parquet needs pyarrow: pip install 'pktstat-bpf[arrow]'") from None
    return pyarrow


def flow_table(batch: FlowBatch) -> pyarrow.Table:
    """The batch as an Arrow table: the DataFrame columns (with the name
    columns in the modes that read names), then end_reason, interval_start
    and interval_end."""
    pa = _pyarrow()
    pd = frame.pandas_module()
    df = frame.to_pandas(
        batch.records,
        batch.bitrates(),
        ifnames=batch.ifnames,
        cgroups=batch.cgroups,
        extra=batch.names,
        labels=protocols.app_labelled(batch.mode),
    )
    names = np.array([REASONS.get(i, str(i)) for i in range(256)], dtype=object)
    df["end_reason"] = names[batch.reason].astype(str) if len(batch) else np.zeros(0, str)
    for col, ns in (("interval_start", batch.interval_start_ns), ("interval_end", batch.interval_end_ns)):
        df[col] = pd.DatetimeIndex(ns.astype("datetime64[ns]")).tz_localize("UTC")
    table = pa.Table.from_pandas(df, preserve_index=False)
    # dictionary columns as plain strings: every file gets one schema, whatever its categories
    fields = [
        pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(fields)).replace_schema_metadata(None)


class ParquetWriter:
    """Flow records into Hive-partitioned Parquet files under `directory`,
    a file per hour of flow end per roll interval. The directory is made (and
    a file created and removed in it) at once: a directory that cannot be
    written raises :class:`UsageError` before any capture starts."""

    def __init__(self, directory: str | os.PathLike[str], roll: float = DEFAULT_ROLL) -> None:
        _pyarrow()
        self.directory = Path(directory)
        self.roll = roll
        self.files: list[Path] = []
        self._pending: list[FlowBatch] = []
        self._roll_started = time.monotonic()
        self._roll_wall = time.time()
        self._n = 0
        if self.directory.exists() and not self.directory.is_dir():
            raise UsageError(f"--parquet: {str(directory)!r} is not a directory")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".pktstat-bpf-probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise UsageError(f"--parquet: cannot write to {str(directory)!r}: {e.strerror or e}") from None

    def write(self, batch: FlowBatch) -> None:
        """Keep the batch; write the roll interval's files once it is over."""
        if len(batch):
            self._pending.append(batch)
        if time.monotonic() - self._roll_started >= self.roll:
            self.flush()

    def tick(self) -> None:
        """Write the roll interval's files if it is over (nothing new)."""
        if time.monotonic() - self._roll_started >= self.roll:
            self.flush()

    def flush(self) -> None:
        """Write what is kept: one file per hour of flow end."""
        pending, self._pending = self._pending, []
        roll_wall = self._roll_wall
        self._roll_started, self._roll_wall = time.monotonic(), time.time()
        if not pending:
            return
        batch = concat(pending)
        hours = batch.end_ns // HOUR_NS
        for hour in np.unique(hours):
            self._write_file(batch.take(hours == hour), int(hour), roll_wall)

    def _write_file(self, batch: FlowBatch, hour: int, roll_wall: float) -> None:
        import pyarrow.parquet as pq

        stamp = np.datetime64(hour * 3600, "s").astype(object)
        part = self.directory / f"date={stamp:%Y-%m-%d}" / f"hour={stamp:%H}"
        self._n += 1
        name = (
            f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(roll_wall))}-{os.getpid()}-{self._n}.parquet"
        )
        tmp, final = part / f".{name}.tmp", part / name
        try:
            part.mkdir(parents=True, exist_ok=True)
            pq.write_table(flow_table(batch), tmp, compression="zstd")
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            reason = os.strerror(e.errno) if e.errno else str(e)
            if e.errno is None and "No space left" in str(e):  # pyarrow's IOError carries no errno
                reason = os.strerror(errno.ENOSPC)
            raise PktstatError(f"--parquet: cannot write {final}: {reason}") from None
        self.files.append(final)

    def close(self) -> None:
        self.flush()


def read_flows(directory: str | os.PathLike[str]) -> pandas.DataFrame:
    """The flow records ``--parquet DIR`` wrote, as one DataFrame (with the
    ``date`` and ``hour`` partition columns); needs pyarrow and pandas.

    The same with DuckDB: ``duckdb.sql("SELECT * FROM read_parquet('DIR/**/*.parquet',
    hive_partitioning = true)")``."""
    pa = _pyarrow()
    import pyarrow.dataset as ds

    dataset = ds.dataset(str(directory), format="parquet", partitioning="hive")
    table = dataset.to_table()
    return table.to_pandas() if table.num_rows or table.num_columns else pa.table({}).to_pandas()
