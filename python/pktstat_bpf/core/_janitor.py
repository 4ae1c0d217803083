"""Removes legacy tc filters left behind by a collector that died.

TCX links, XDP links and cgroup links are file descriptors: the kernel
detaches them when the process dies, even by SIGKILL. Legacy cls_bpf filters
are not; so a collector on the legacy path starts this janitor in its own
session (a terminal's Ctrl-C does not reach it), holding the read end of a
pipe. A clean stop writes ``done`` and closes the pipe; end-of-file without
``done`` means the collector died, and the janitor removes the filters that
still run the collector's programs, and lets go of the clsact qdisc for it:
removed if pktstat-bpf made it, no other pktstat-bpf process holds it and no
filter is left on it (``release_clsact``, see src/cpp/tc_attach.cpp).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from typing import Any


class Janitor:
    def __init__(self, proc: subprocess.Popen, wfd: int) -> None:
        self._proc = proc
        self._wfd = wfd

    @classmethod
    def spawn(cls, ifindex: int, filters: list[dict[str, Any]], created_qdisc: bool) -> Janitor:
        plan = json.dumps(
            {"ifindex": ifindex, "filters": filters, "created_qdisc": created_qdisc, "pid": os.getpid()}
        )
        rfd, wfd = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pktstat_bpf.core._janitor", plan],
                stdin=rfd,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(rfd)
        return cls(proc, wfd)

    def release(self) -> None:
        """Clean stop: the collector removed its filters itself."""
        try:
            os.write(self._wfd, b"done\n")
        except OSError:
            pass
        os.close(self._wfd)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self._proc.kill()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    plan = json.loads(sys.argv[1])
    data = b""
    while True:
        chunk = os.read(0, 64)
        if not chunk:
            break
        data += chunk
    if b"done" in data:
        return 0
    # Best effort, and on the collector's stderr: the kernel's answers to what
    # is already gone (a qdisc the collector removed before it died) are not news.
    logging.getLogger("pktstat_bpf").addHandler(logging.NullHandler())
    logging.getLogger("pktstat_bpf").propagate = False
    logging.getLogger("pktstat_bpf.libbpf").setLevel(logging.CRITICAL + 1)
    from .engine import _core

    ifindex = plan["ifindex"]
    for f in plan["filters"]:
        try:
            _core.remove_stale_filter(ifindex, f["direction"], f["handle"], f["priority"], f["prog_id"])
        except OSError:
            pass
    try:
        _core.release_clsact(ifindex, plan["created_qdisc"], plan["pid"])
        _core.sweep_stale_tc()  # the collector's record of the filters (tc_claims.hpp)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
