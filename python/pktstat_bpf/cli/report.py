"""The default job: capture for -t (or until a signal) and print one report;
or, with --jsonl/--plain/-u, stream every -r interval."""

from __future__ import annotations

import logging
from contextlib import closing

from ..core import render
from ..core.snapshot import Snapshot
from ..output.checked import CheckedOut
from .options import Options
from .records import FlowOutputs
from .session import live_session, until

log = logging.getLogger("pktstat_bpf")


def write_report(snap: Snapshot, opts: Options) -> None:
    """The final report in the format the flags chose: text, JSON (header and
    flows) or pktstat-bpf's bare array of flows; of conversations with
    --conversations."""
    if opts.conversations:
        snap = snap.conversations()
    if opts.json_array:
        out = render.dumps(snap.flows()) + "\n"
    elif opts.json:
        out = snap.to_json() + "\n"
    else:
        out = snap.to_text()
    CheckedOut().put(out)  # a failed write: OutputError (exit 1); a closed pipe: BrokenPipeError (exit 0)


def run_capture(opts: Options) -> int:
    owners = opts.cgroup is not None or opts.kprobes
    # the flow-record outputs open first: a refused collector ends the run before anything is attached
    with (
        FlowOutputs(opts, direction=True, owners=owners) as flows,
        live_session(opts) as (collector, view, stop),
    ):
        st = collector.status
        note = f"; {st['note']}" if st.get("note") else ""
        log.info(
            "counting on %s via %s %s (Ctrl-C to stop)%s", collector.where, st["attach"], until(opts), note
        )
        if opts.streaming:
            from .stream import run_stream

            run_stream(opts, collector, view, stop, flows)
            flows.final()  # the last interval handed out every flow's end record
            return stop.job_exit_code
        # each interval drains the kernel tables (they need room for one interval's flows only)
        # and hands the flows it ended to --ipfix/--parquet; the last one ends every flow
        with closing(collector.stream(opts.refresh, duration=opts.timeout or None, stop=stop.event)) as ivs:
            for iv in ivs:
                flows.interval(view.apply_interval(iv))
        collector.stop()
        flows.interval(view.apply_interval(collector.drain(end=True)))  # counted before the detach
        snap = collector.snapshot()
    snap = view.apply(snap)  # (the view warns once if the table is nearly full)
    write_report(snap, opts)
    flows.final()  # --ipfix, --parquet: closed (Parquet writes its last files)
    return stop.job_exit_code
