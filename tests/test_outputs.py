"""Every output into a place that cannot take it: a 1 MB tmpfs that is full
(or fills up part-way through the output), /dev/full, a closed stdout
(``>&-``), and a pipe whose reader is gone. A failed write is one line on
stderr and exit code 1, never a report silently cut short with exit code 0
and never a traceback; a closed pipe is exit code 0 with nothing on stderr.
Live runs detach as usual (nothing of ours stays on the interface).

The tmpfs is mounted in a private mount namespace of the command
(``unshare -m``): it goes away with the command.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns import NetnsPair, wait_for
from test_replay import udp4, write_pcap
from traffic import send_udp

OUTPUTS = {
    "text": [],
    "json": ["-j"],
    "json-array": ["--json-array"],
    "jsonl": ["--jsonl", "-r", "100ms"],
    "plain": ["--plain", "-r", "100ms"],
}
STREAMS = {"jsonl", "plain"}
FREE = 64 * 1024  # what the "cut" tmpfs leaves free: less than a replay report of FLOWS flows
FLOWS = 3000


def _what(output: str) -> str:
    return "the stream" if output in STREAMS else "the report"


def _sinks(mnt: Path) -> dict[str, tuple[list[str], int | None]]:
    """How stdout is set up: a wrapper around the command, and the exit code
    expected (None: 1 with the write error)."""

    def tmpfs(fill: str) -> list[str]:
        script = (
            f'mount -t tmpfs -o size=1m pbt-out "{mnt}" && head -c {fill} /dev/zero > "{mnt}/fill" 2>/dev/null;'
            f' exec "$@" > "{mnt}/out"'
        )
        return ["unshare", "-m", "sh", "-c", script, "sh"]

    return {
        "tmpfs-full": (tmpfs("2M"), None),
        "tmpfs-cut": (tmpfs(str(1024 * 1024 - FREE)), None),
        "dev-full": (["sh", "-c", 'exec "$@" > /dev/full', "sh"], None),
        "closed": (["sh", "-c", 'exec "$@" >&-', "sh"], None),
    }


def _expect_error(p: subprocess.CompletedProcess, output: str, sink: str) -> None:
    reason = (
        "standard output is closed (Bad file descriptor)" if sink == "closed" else "No space left on device"
    )
    assert (p.returncode, p.stderr) == (1, f"pktstat-bpf: error: cannot write {_what(output)}: {reason}\n"), (
        p.stderr
    )


@pytest.fixture(scope="module")
def many_flows(tmp_path_factory, bpf) -> Path:
    """A capture of FLOWS UDP flows: its report is far more than FREE bytes."""
    recs = [
        (1_700_000_000 * 10**9 + i * 1000, udp4("10.0.0.1", "10.0.0.2", 1024 + i, 53, 20))
        for i in range(FLOWS)
    ]
    return write_pcap(tmp_path_factory.mktemp("pcap") / "many.pcap", recs)


@pytest.mark.parametrize("output", OUTPUTS)
def test_replay_outputs_that_cannot_be_written(many_flows, tmp_path, output):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = [sys.executable, "-m", "pktstat_bpf", "--pcap", str(many_flows), *OUTPUTS[output]]
    for sink, (wrap, _) in _sinks(mnt).items():
        p = subprocess.run([*wrap, *argv], capture_output=True, text=True, timeout=60)
        _expect_error(p, output, sink)
    # a reader that is gone: exit code 0, nothing on stderr
    p2 = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p2.stdout.close()
    assert (p2.wait(timeout=60), p2.stderr.read()) == (0, "")
    # and the whole output where there is room: the control case
    ok = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert (ok.returncode, ok.stderr) == (0, "")
    # every flow, once, and (streams) its end record once
    once = FLOWS * (2 if output in ("jsonl", "plain") else 1)
    assert len(ok.stdout) > 2 * FREE and ok.stdout.count("10.0.0.1") == once


@pytest.mark.parametrize("output", OUTPUTS)
def test_live_outputs_that_cannot_be_written(netns_v4only: NetnsPair, tmp_path, output):
    ns = netns_v4only
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = [sys.executable, "-m", "pktstat_bpf", "-i", "va", "-q", "-t", "1s", *OUTPUTS[output]]
    sinks = {k: v for k, v in _sinks(mnt).items() if k != "tmpfs-cut"}  # (a live report here is small)
    for sink, (wrap, _) in [*sinks.items(), ("pipe", ([], 0))]:
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns.ns_a, *wrap, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if sink == "pipe":
            p.stdout.close()
        assert wait_for(ns.ours_attached, timeout=20), p.stderr.read() if p.poll() is not None else ""
        with ns.in_a():
            send_udp(ns.B4, 9, 3, 10)  # a flow, so that the streams have a line to write
        try:
            err = p.stderr.read()
            code = p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
        if sink == "pipe":
            assert (code, err) == (0, ""), err
        else:
            _expect_error(subprocess.CompletedProcess(argv, code, "", err), output, sink)
        assert not ns.ours_attached(), sink
        time.sleep(0.05)


def test_tui_into_a_file_is_a_usage_error(tmp_path):
    p = subprocess.run(
        ["sh", "-c", 'exec "$@" > /dev/full', "sh", sys.executable, "-m", "pktstat_bpf", "-g"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (p.returncode, p.stderr.count("\n")) == (2, 1), p.stderr
    assert p.stderr.startswith("pktstat-bpf: error: -g/--tui needs a terminal"), p.stderr
