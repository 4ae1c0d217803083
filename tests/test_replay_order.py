"""Replay of captures whose timestamps go backwards (merged captures, clock
steps): a flow's first and last seen are its earliest and latest frame, the
report's duration runs from the earliest to the latest frame of the file, and
the interval streams (--jsonl, timeseries()) agree with the report: the same
packets and bytes, over the same span of capture time."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pktstat_bpf
import pytest
from pktstat_bpf.core.durations import parse_duration
from test_replay import udp4, write_pcap

pytestmark = pytest.mark.kernel

S = 1_000_000_000
T0 = 1_700_000_000 * S
A = ("10.0.0.1", "10.0.0.2", 1111, 53)
B = ("10.0.0.3", "10.0.0.4", 2222, 80)
# (seconds after T0, flow, payload) in file order: the clock steps back twice
FRAMES = [(5.0, A, 10), (1.0, A, 20), (3.5, B, 30), (0.0, B, 40), (4.0, A, 50), (2.0, B, 60), (6.5, A, 70)]


def _records():
    return [(T0 + int(t * S), udp4(*flow, payload)) for t, flow, payload in FRAMES]


@pytest.fixture
def capture(tmp_path):
    return write_pcap(tmp_path / "backwards.pcap", _records())


def _want():
    """Per flow: packets, bytes, earliest and latest frame (ns)."""
    out = {}
    for t, flow, payload in FRAMES:
        ts, size = T0 + int(t * S), 14 + 20 + 8 + payload
        p, b, first, last = out.get(flow[2], (0, 0, ts, ts))
        out[flow[2]] = (p + 1, b + size, min(first, ts), max(last, ts))
    return out


def test_first_and_last_seen_are_the_earliest_and_latest_frame(bpf, capture):
    snap = pktstat_bpf.replay(capture)
    r = snap.records
    got = {
        int(x["sport"]): (
            int(x["packets"]),
            int(x["bytes"]),
            int(x["first_seen"].astype(np.int64)),
            int(x["last_seen"].astype(np.int64)),
        )
        for x in r
    }
    assert got == _want()
    assert snap.duration == 6.5
    assert (snap.started_at, snap.taken_at) == (T0 / S, T0 / S + 6.5)


@pytest.mark.parametrize("step", ["1s", "2s", "700ms"])
def test_streams_and_report_agree(bpf, capture, step):
    def run(*flags):
        r = subprocess.run(
            [sys.executable, "-m", "pktstat_bpf", "--pcap", str(capture), *flags],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        return r.stdout

    report = json.loads(run("-j"))
    docs = [json.loads(ln) for ln in run("--jsonl", "-r", step).splitlines()]
    lines = [d for d in docs if "event" not in d]
    # each flow's end record, once, at the end of the file: its totals
    ends = {d["srcPort"]: (d["reason"], d["packets"], d["bytes"]) for d in docs if "event" in d}
    assert ends == {sport: ("end", p, b) for sport, (p, b, _, _) in _want().items()}
    assert report["duration"] == 6.5
    for sport, (packets, size, _, _) in _want().items():
        mine = [d for d in lines if d["srcPort"] == sport]
        assert sum(d["packets"] for d in mine) == packets
        assert sum(d["bytes"] for d in mine) == size
        (flow,) = [f for f in report["flows"] if f["srcPort"] == sport]
        assert (flow["packets"], flow["bytes"]) == (packets, size)
        assert (flow["firstSeen"], flow["lastSeen"]) == (
            min(d["firstSeen"] for d in mine),
            max(d["lastSeen"] for d in mine),
        )
    # the intervals tile the capture from its earliest to its latest frame
    ivs = list(pktstat_bpf.Replayer().intervals(capture, parse_duration(step)))
    assert ivs[0].start == T0 / S and ivs[-1].end == T0 / S + 6.5
    assert all(a.end == b.start for a, b in zip(ivs, ivs[1:]))
    assert sum(iv.duration for iv in ivs) == pytest.approx(6.5, abs=1e-9)
    assert sum(iv.delta.totals.all.packets for iv in ivs) == len(FRAMES)
    assert ivs[-1].cumulative.duration == report["duration"]
