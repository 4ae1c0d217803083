"""The exporter job (``--prometheus ADDR:PORT``): count, and serve
``/metrics``, until -t, Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
from contextlib import closing
from typing import Any

from ..core.about import __version__, libbpf_version
from ..exporter.metrics import FlowMetrics, prometheus_client_module
from ..exporter.server import MetricsServer, make_registry
from .options import Options
from .records import FlowOutputs
from .session import collector_for, live_session, until

log = logging.getLogger("pktstat_bpf")


def build_info(collector: Any) -> dict[str, str]:
    return {
        "version": __version__,
        "libbpf": libbpf_version(),
        "mode": collector.mode,
        "attach": collector.status["attach"],
    }


def run_exporter(opts: Options) -> int:
    """The ``--prometheus`` job: count, and serve /metrics, until -t,
    Ctrl-C or SIGTERM (exit 0); everything is detached on the way out.

    Order: the mode flags are checked and the port is bound before any
    program is loaded, so a bad or busy address fails with nothing attached;
    serving starts once the programs are attached. Each interval's end
    records go to --ipfix/--parquet as they come."""
    prometheus_client_module()
    assert opts.prometheus is not None
    host, port = opts.prometheus
    collector = collector_for(opts)  # validates the mode flags; attaches nothing yet
    metrics = FlowMetrics(
        top=opts.prometheus_top, max_entries=collector.max_entries, names=opts.prometheus_names
    )
    # healthy while readings keep coming: a stuck capture loop fails the liveness probe
    limit = 3 * opts.refresh + 10
    owners = opts.cgroup is not None or opts.kprobes
    # --ipfix/--parquet open first: a refused collector or an unwritable directory ends the run here
    with FlowOutputs(opts, direction=True, owners=owners) as flows:
        server = MetricsServer(host, port, make_registry(metrics), health=lambda: metrics.stale(limit))
        try:
            with live_session(opts, collector) as (collector, view, stop):
                metrics.set_info(build_info(collector))
                server.start()
                log.info(
                    "counting on %s via %s %s (Ctrl-C to stop); metrics on %s",
                    collector.where,
                    collector.status["attach"],
                    until(opts),
                    server.url,
                )
                # each interval's end records go to --ipfix/--parquet; the last one ends every flow
                ivs = collector.stream(opts.refresh, duration=opts.timeout or None, stop=stop.event)
                with closing(ivs):  # (the drain thread is joined before the detach)
                    for iv in ivs:
                        iv = view.apply_interval(iv)
                        flows.interval(iv)
                        metrics.update(iv)
        finally:
            server.close()
        flows.final()
    return stop.job_exit_code
