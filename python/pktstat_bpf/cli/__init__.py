"""The command line (``python -m pktstat_bpf`` / ``pktstat-bpf``): flags
parsed into typed options (:mod:`.options`), the set-up every live job shares
(:mod:`.session`), and the jobs: report, replay, stream, TUI, exporter."""

from .main import main

__all__ = ["main"]
