"""Prometheus exporter (``--prometheus ADDR:PORT``): :mod:`.metrics` turns
each interval of a capture into metric families (prometheus-client's
collector protocol), :mod:`.ranking` keeps the heaviest flows and processes,
:mod:`.server` serves them over HTTP. The CLI job is ``cli/exporter.py``."""

from .metrics import FlowMetrics
from .ranking import TopTracker, top_order
from .server import MetricsServer, make_registry, parse_listen

__all__ = ["FlowMetrics", "MetricsServer", "TopTracker", "make_registry", "parse_listen", "top_order"]
