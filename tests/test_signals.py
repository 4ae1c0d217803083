"""SIGINT, SIGTERM and SIGKILL at moments spread over a whole run, from the
interpreter starting to the process exiting (imports, load, attach, capture,
report, detach), in every mode that attaches: TC through TCX and legacy tc,
XDP, cgroup and process mode.

Each time: never a traceback nor an "Exception ignored"; stderr is lines of
pktstat-bpf's own; the run ends in one of the documented ways: a complete
report and exit code 0 (a signal once counting has begun, or after), or
no report, ``pktstat-bpf: interrupted`` and exit code 130 (a signal while
loading or attaching; SIGTERM as SIGINT);
SIGKILL is -9. Afterwards nothing of the run is left in the kernel: the
programs, maps and links by the ids the process held (sampled from its
/proc fdinfo while it ran), the interface's tc filters and qdisc, XDP, the
cgroup's programs, the claim files under /run/pktstat-bpf (after SIGKILL of
a legacy run, its janitor removes the filters, then goes).

The first moment is the first instant pktstat-bpf's handlers are in place
(the process catches SIGTERM: its SigCgt mask); before it, the Python
interpreter is still starting up and a signal is the interpreter's. The
moments are fractions of a measured undisturbed run of each mode (the
time to the "counting on" line and to exit), staggered across modes so that
every signal meets 20+ different moments while each mode runs 5 times.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kstate import held, janitors_of, nothing_alive, still_alive
from netns import wait_for
from test_leftovers import MODES, PRE, env, ids_of  # noqa: F401 - env: the fixture, with its set-up

CASES = [(m, PRE[m][0]) for m in MODES]
SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}
LINE = {s: (130, "pktstat-bpf: interrupted") for s in (signal.SIGINT, signal.SIGTERM)}
#: Moments: (share of the time to the "counting on" line, seconds after it); the last ones fall in
#: the report and detach (the capture is 1 s).
MOMENTS = [
    (0.0, 0.0),
    (0.15, 0),
    (0.3, 0),
    (0.45, 0),
    (0.6, 0),
    (0.75, 0),
    (0.9, 0),
    (1.0, 0.02),
    (1.0, 0.4),
    (1.0, 0.98),
    (1.0, 1.02),
    (1.0, 1.08),
    (1.0, 1.15),
]
PER_RUN = 5
CLAIMS = Path("/run/pktstat-bpf")
#: The undisturbed run of each mode: seconds to the "counting on" line (measured once per mode)
COUNTING_AT: dict[str, float] = {}
#: The endings the sweep met, per signal and mode: a sweep that never met an interruption
#: (or never a report) has sampled the wrong moments
ENDINGS: dict[str, dict[str, set[int]]] = {s: {} for s in ("sigint", "sigterm", "sigkill")}


class Run:
    """The CLI with -t 1s -j, its stderr lines time-stamped as they come and
    the ids of the BPF objects it holds sampled every few ms."""

    def __init__(self, argv: list[str]) -> None:
        self.start = time.monotonic()
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self.ids: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}
        self.out = ""
        self._threads = [
            threading.Thread(target=f, daemon=True) for f in (self._read_err, self._read_out, self._sample)
        ]
        for t in self._threads:
            t.start()

    def _read_err(self) -> None:
        for line in self.p.stderr:
            self.lines.append((time.monotonic() - self.start, line))

    def _read_out(self) -> None:
        self.out = self.p.stdout.read()

    def _sample(self) -> None:
        while self.p.poll() is None:
            try:
                for k, v in held(self.p.pid).items():
                    self.ids[k] |= v
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
            time.sleep(0.003)

    def handlers_in_place(self, timeout: float = 10.0) -> bool:
        """Wait until the process catches SIGTERM (its SigCgt mask): from
        then on the signals are pktstat-bpf's to handle. (Before, the Python
        interpreter is still starting: a signal there is the interpreter's.)"""
        bit = 1 << (signal.SIGTERM - 1)
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.p.poll() is None:
            try:
                status = Path(f"/proc/{self.p.pid}/status").read_text()
            except OSError:
                return False
            caught = next(int(ln.split()[1], 16) for ln in status.splitlines() if ln.startswith("SigCgt:"))
            if caught & bit:
                return True
            time.sleep(0.0005)
        return False

    def counting_at(self) -> float | None:
        return next((t for t, line in self.lines if "counting on" in line), None)

    def finish(self) -> int:
        try:
            code = self.p.wait(timeout=60)
        finally:
            if self.p.poll() is None:
                self.p.kill()
        for t in self._threads:
            t.join(timeout=10)
        return code

    @property
    def err(self) -> str:
        return "".join(line for _, line in self.lines)


def _check_report(out: str, mode: str) -> None:
    doc = json.loads(out)  # complete: a cut report does not parse
    assert doc["mode"] == ("tc" if mode in ("tcx", "legacy") else mode), doc


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("env", CASES, indirect=True, ids=ids_of)
def test_a_signal_at_any_moment(env, sig):  # noqa: F811 - env: the fixture of test_leftovers
    mode, target = env
    before = target.state()
    argv = target.argv("-t", "1s", "-j")
    if mode.name not in COUNTING_AT:
        base = Run(argv)
        assert base.finish() == 0, base.err
        _check_report(base.out, mode.name)
        counting_at = base.counting_at()
        assert counting_at is not None, base.err
        COUNTING_AT[mode.name] = counting_at
    counting = COUNTING_AT[mode.name]
    endings = ENDINGS[sig].setdefault(mode.name, set())
    k = list(MODES).index(mode.name) + 2 * list(SIGNALS).index(sig)
    moments = [MOMENTS[(k + i * 3) % len(MOMENTS)] for i in range(PER_RUN)]
    signum = SIGNALS[sig]
    for share, after in moments:
        at = share * counting + after
        run = Run(argv)
        assert run.handlers_in_place(), run.err
        time.sleep(max(0.0, run.start + at - time.monotonic()))
        sent_at = time.monotonic() - run.start
        seen = run.counting_at()
        if run.p.poll() is None:
            run.p.send_signal(signum)
        code = run.finish()
        endings.add(code)
        where = f"{sig} at {sent_at:.3f}s (counting at {seen}): exit {code}\n{run.err}"
        assert "Traceback" not in run.err and "Exception ignored" not in run.err, where
        assert all(line.startswith("pktstat-bpf: ") for _, line in run.lines), where
        if signum == signal.SIGKILL:
            assert code in (-signal.SIGKILL, 0), where
        elif code == 0:
            _check_report(run.out, mode.name)
        else:
            assert seen is None, where  # counting had begun: the report is due
            assert (code, run.out, run.lines[-1][1].rstrip("\n")) == (
                *LINE[signum][:1],
                "",
                LINE[signum][1],
            ), where
        # nothing left: the objects the run held, the interface or cgroup as before, no claim naming it
        assert wait_for(lambda: nothing_alive(run.ids), timeout=15), (
            f"{where}\nstill alive: {still_alive(run.ids)}"
        )
        if mode.name == "legacy":
            assert wait_for(lambda: not janitors_of(run.ids["prog"]), timeout=15), where
        after_state = target.state()
        assert after_state == before and not target.ours(after_state), where
        claims = [c for c in CLAIMS.glob("clsact-*") if f"\n{run.p.pid} " in c.read_text()]
        assert not claims, where
    if len(ENDINGS[sig]) == len(CASES) and signum != signal.SIGKILL:  # the whole sweep of this signal ran
        met = set().union(*ENDINGS[sig].values())
        assert {0, LINE[signum][0]} <= met, ENDINGS[sig]


def test_a_signal_landing_inside_the_stop_events_lock_still_ends_the_wait():
    """The handler takes no lock: a signal that lands while the main thread
    holds the stop event's own lock (inside ``Event.wait``, between waking
    and returning; a capture loop waits there every interval) used to
    deadlock in ``Event.set``. Here the signal is raised while that lock is
    held; the run still sees it and its wait ends."""
    code = (
        "import signal, threading\n"
        "from pktstat_bpf.cli.signals import StopSignals\n"
        "stop = StopSignals()\n"
        "with stop:\n"
        "    with stop.event._cond:\n"
        "        signal.raise_signal(signal.SIGTERM)\n"
        "    assert stop.event.wait(5), 'the wait did not end'\n"
        "    print(stop.name)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert (p.returncode, p.stdout, p.stderr) == (0, "SIGTERM\n", "")
