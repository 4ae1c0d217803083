"""The TUI for real: pktstat-bpf -g runs in tmux inside a test namespace,
keys go in with `tmux send-keys`, the screen comes back with `tmux
capture-pane`, and the counts on it are those of the traffic the test sent."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from netns import NetnsPair, wait_for
from traffic import ETH, IP4, IP6, UDP, send_udp

pytestmark = pytest.mark.skipif(
    not shutil.which("tmux"), reason="tmux is not installed (make setup installs it)"
)

ROWS, COLS = 30, 140
PAGE = ROWS - 4  # header, status, titles, footer


class Tmux:
    def __init__(self, cmd: str, cols: int = COLS, rows: int = ROWS) -> None:
        self.sock = f"pbt-tui-{os.getpid()}-{time.monotonic_ns()}"
        self("new-session", "-d", "-x", str(cols), "-y", str(rows), cmd)

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.sock, *args], capture_output=True, text=True, timeout=10
        ).stdout

    def screen(self) -> list[str]:
        return self("capture-pane", "-p").splitlines()

    def keys(self, *keys: str) -> None:
        self("send-keys", *keys)

    def wait(self, pred, timeout: float = 10.0) -> list[str]:
        """Wait until pred(screen lines) holds on a settled screen (two
        captures in a row agree: tmux may be caught mid-repaint); return it."""
        last: list[list[str]] = [[]]

        def check():
            prev, last[0] = last[0], self.screen()
            return last[0] == prev and pred(last[0])

        assert wait_for(check, timeout=timeout, interval=0.05), "\n".join(last[0])
        return last[0]

    def kill(self) -> None:
        self("kill-server")


def stable(rows):
    """Rows without their bitrate cell."""
    return [r[1:] for r in rows]


def rows_of(screen: list[str]) -> list[list[str]]:
    """The table rows: [bitrate, packets, bytes, proto, src, dst] (the APP
    and FLAGS cells between proto and src, where shown, left out)."""
    out = []
    m = re.search(r"  SRC ", screen[2]) if len(screen) > 2 else None
    at = m.start() + 2 if m else 0  # SRC is left-aligned: its cells start under its title
    for line in screen[3:-1]:
        f = line.split()
        if m and len(f) >= 7 and f[1] in ("bps", "Kbps", "Mbps", "Gbps"):
            out.append([f"{f[0]} {f[1]}"] + f[2:5] + line[at:].split()[:2])
    return out


def bitrates(rows) -> list[float]:
    """The rows' bitrate cells in bit/s."""
    scale = {"bps": 1, "Kbps": 1e3, "Mbps": 1e6, "Gbps": 1e9}
    return [float(r[0].split()[0]) * scale[r[0].split()[1]] for r in rows]


def status(screen: list[str]) -> str:
    return screen[1]


def endpoint_key(text: str):
    m = re.match(r"^\[?([0-9a-f.:]+?)\]?(?::(\d+))?$", text)
    ip = ipaddress.ip_address(m.group(1))
    return (ip.version, ip.packed, int(m.group(2) or 0))


@pytest.fixture
def tui(netns: NetnsPair):
    peer = netns.peer("udp", "5201", "5202", "5203", "5204", "5205")
    cmd = (
        f"S1=$(stty -g); ip netns exec {netns.ns_a} {sys.executable} -m pktstat_bpf -g -i va -r 300ms --no-arp; rc=$?; "
        f'S2=$(stty -g); [ "$S1" = "$S2" ] && echo TTY-RESTORED; echo EXIT=$rc; sleep 60'
    )
    t = Tmux(cmd)
    try:
        t.wait(lambda s: s and s[0].startswith("pktstat-bpf  tc on va (tcx)"), timeout=20)
        yield t
    finally:
        t.kill()
        peer.kill()


def test_tui_sort_scroll_filter_pause_resize_quit(netns: NetnsPair, tui: Tmux):
    A4, B4, A6, B6 = netns.A4, netns.B4, netns.A6, netns.B6
    s4, s6 = ETH + IP4 + UDP, ETH + IP6 + UDP
    with netns.in_a():
        many = send_udp(B4, 5201, 200, 10)  # the most packets: 200 x 52 bytes
        big = send_udp(B6, 5202, 10, 1400)  # the most bytes: 10 x 1462 bytes
        # 60 one-packet flows: more rows than two pages (the sockets all open
        # at once, so 60 distinct source ports: one closed before the next
        # opens may give its port again, two flows becoming one)
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(60)]
        try:
            for s in socks:
                s.sendto(b"u" * 8, (B4, 5203))
        finally:
            for s in socks:
                s.close()
    want_many = ["200", str(200 * (s4 + 10)), "UDP", f"{A4}:{many}", f"{B4}:5201"]
    want_big = ["10", str(10 * (s6 + 1400)), "UDP", f"[{A6}]:{big}", f"[{B6}]:5202"]

    # bitrate (the default): a steady sender is on top while it sends
    stop = threading.Event()

    def steady():
        with netns.in_a(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(100):  # bounded: at most 100 packets, ~5 s
                if stop.wait(0.05):
                    break
                s.sendto(b"s" * 16, (B4, 5204))

    th = threading.Thread(target=steady)
    th.start()
    try:
        screen = tui.wait(
            lambda s: rows_of(s) and rows_of(s)[0][5] == f"{B4}:5204" and rows_of(s)[0][0] != "0.00 bps"
        )
        assert "sort: bitrate" in status(screen)
    finally:
        stop.set()
        th.join()

    # 1: packets, 2: bytes -- exact counts of what we sent
    tui.keys("1")
    screen = tui.wait(lambda s: "sort: packets" in status(s))
    assert rows_of(screen)[0][1:] == want_many
    tui.keys("2")
    screen = tui.wait(lambda s: "sort: bytes" in status(s))
    assert rows_of(screen)[0][1:] == want_big

    # 3: source, 4: destination, ascending
    for key, col, name in (("3", 4, "src"), ("4", 5, "dst")):
        tui.keys(key)
        screen = tui.wait(lambda s, name=name: f"sort: {name}" in status(s))
        shown = [endpoint_key(r[col]) for r in rows_of(screen)]
        assert len(shown) == PAGE and shown == sorted(shown)

    # scrolling on the source order (stable: no new flows now)
    tui.keys("3")
    top = tui.wait(lambda s: "sort: src" in status(s))
    n = int(re.search(r"rows 1-\d+ of (\d+)", status(top)).group(1))
    assert n >= 2 + 60 + 1 > 2 * PAGE and len(rows_of(top)) == PAGE
    tui.keys("j")
    down = tui.wait(lambda s: f"rows 2-{PAGE + 1} of" in status(s))
    # (rows compared without the bitrate column: interval rates decay as time passes)
    assert stable(rows_of(down))[:-1] == stable(rows_of(top))[1:]
    tui.keys("Down")
    tui.wait(lambda s: f"rows 3-{PAGE + 2} of" in status(s))
    tui.keys("k")
    tui.wait(lambda s: f"rows 2-{PAGE + 1} of" in status(s))
    tui.keys("Up")
    tui.wait(lambda s: f"rows 1-{PAGE} of" in status(s))
    tui.keys("NPage")
    paged = tui.wait(lambda s: f"rows {PAGE + 1}-{2 * PAGE} of" in status(s))
    assert endpoint_key(rows_of(paged)[0][4]) >= endpoint_key(rows_of(top)[-1][4])
    tui.keys("PPage")
    assert stable(rows_of(tui.wait(lambda s: f"rows 1-{PAGE} of" in status(s)))) == stable(rows_of(top))
    tui.keys("NPage")
    tui.wait(lambda s: f"rows {PAGE + 1}-" in status(s))
    tui.keys("r")  # redraw, back to the top
    assert stable(rows_of(tui.wait(lambda s: f"rows 1-{PAGE} of" in status(s)))) == stable(rows_of(top))

    # filter by substring, narrowing as one types; Enter keeps it
    # (the needle names the destination endpoint: a bare "5202" could also
    # match a random source port such as 52029)
    needle = f"{B6}]:5202"
    tui.keys("/", needle)
    screen = tui.wait(lambda s: s[-1] == "/" + needle and "(1 of" in status(s))
    tui.keys("Enter")
    screen = tui.wait(lambda s: s[-1].startswith("q quit") and f"filter: {needle} (1 of" in status(s))
    assert [r[1:] for r in rows_of(screen)] == [want_big]
    tui.keys("/", *["BSpace"] * len(needle), "Enter")
    tui.wait(lambda s: "filter:" not in status(s) and f"rows 1-{PAGE} of" in status(s))

    # pause: new flows stay off the screen until p again
    tui.keys("1", "p")
    tui.wait(lambda s: "PAUSED" in status(s))
    with netns.in_a():
        late = send_udp(B4, 5205, 300, 4)
    time.sleep(1.0)  # three intervals
    paused_screen = tui.screen()
    assert not any(r[4] == f"{A4}:{late}" for r in rows_of(paused_screen)), "\n".join(paused_screen)
    tui.keys("p")
    screen = tui.wait(
        lambda s: "PAUSED" not in status(s) and rows_of(s) and rows_of(s)[0][4] == f"{A4}:{late}"
    )
    assert rows_of(screen)[0][1:3] == ["300", str(300 * (s4 + 4))]

    # 0: back to bitrate from packets -- a new steady sender (fewer packets
    # than the 300 and 200 above it) goes from below the top to the top
    stop.clear()
    sport = []

    def steady2():
        with netns.in_a(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(100):  # bounded: at most 100 packets, ~5 s
                s.sendto(b"z" * 16, (B4, 5204))
                sport[:] = [s.getsockname()[1]]
                if stop.wait(0.05):
                    break

    def sender_row(s):
        return next((i for i, r in enumerate(rows_of(s)) if sport and r[4] == f"{A4}:{sport[0]}"), None)

    th = threading.Thread(target=steady2)
    th.start()
    try:
        screen = tui.wait(
            lambda s: (
                "sort: packets" in status(s)
                and (sender_row(s) or 0) > 0
                and rows_of(s)[sender_row(s)][0] != "0.00 bps"
            )
        )
        assert rows_of(screen)[0][4] == f"{A4}:{late}"  # most packets, idle now
        assert bitrates(rows_of(screen)) != sorted(bitrates(rows_of(screen)), reverse=True)
        tui.keys("0")
        screen = tui.wait(
            lambda s: (
                "sort: bitrate" in status(s)
                and f"rows 1-{PAGE} of" in status(s)
                and sender_row(s) == 0
                and rows_of(s)[0][0] != "0.00 bps"
            )
        )
        rates = bitrates(rows_of(screen))
        assert len(rates) == PAGE and rates == sorted(rates, reverse=True)
    finally:
        stop.set()
        th.join()

    # resize: everything is laid out again for the new size
    tui("resize-window", "-x", "72", "-y", "12")
    screen = tui.wait(lambda s: len(s) == 12 and "rows 1-8 of" in status(s))
    assert all(len(line) <= 72 for line in screen)
    # (at 72 columns the dst column may be cut, so count rows by their bitrate cell)
    body = [line for line in screen[3:-1] if re.match(r"^\s*[\d.]+ [KMGT]?bps\s", line)]
    assert screen[0].startswith("pktstat-bpf  tc on va (tcx)") and len(body) == 8
    assert screen[-1].startswith("q quit")
    tui("resize-window", "-x", str(COLS), "-y", str(ROWS))
    screen = tui.wait(lambda s: len(s) == ROWS and f"rows 1-{PAGE} of" in status(s))
    assert "unparsed:" in screen[0] and "overflow: 0/0" in screen[0]

    # q quits with exit code 0 and the terminal as it was
    tui.keys("q")
    screen = tui.wait(lambda s: any(line.startswith("EXIT=") for line in s))
    assert "EXIT=0" in screen and "TTY-RESTORED" in screen
    assert not netns.ours_attached()


def test_tui_x_quits_and_sigterm_ends_it_cleanly(netns: NetnsPair):
    for how in ("x", "TERM"):
        cmd = (
            f"ip netns exec {netns.ns_a} {sys.executable} -m pktstat_bpf -g -i va -r 200ms; "
            f"echo EXIT=$?; sleep 60"
        )
        t = Tmux(cmd, cols=100, rows=20)
        try:
            t.wait(lambda s: s and s[0].startswith("pktstat-bpf  tc on va"), timeout=20)
            if how == "x":
                t.keys("x")
            else:
                shell = t("list-panes", "-F", "#{pane_pid}").split()[0]
                (child,) = subprocess.run(
                    ["pgrep", "-P", shell], capture_output=True, text=True
                ).stdout.split()
                with open(f"/proc/{child}/cmdline") as f:
                    assert "pktstat_bpf" in f.read()
                os.kill(int(child), signal.SIGTERM)
            screen = t.wait(lambda s: any(line.startswith("EXIT=") for line in s))
            assert "EXIT=0" in screen, screen
        finally:
            t.kill()
    assert not netns.ours_attached()


@pytest.mark.parametrize(
    "term, message",
    [
        ("TERM=dumb", "-g/--tui: the terminal TERM='dumb' cannot move the cursor (use --plain or --jsonl)"),
        (
            "TERM=pbt-no-such-term",
            "-g/--tui: unknown terminal type TERM='pbt-no-such-term' (terminfo has no entry for it)",
        ),
        ("-u TERM", "-g/--tui needs TERM set to the terminal's type (e.g. TERM=xterm-256color)"),
        ("TERM=", "-g/--tui needs TERM set to the terminal's type (e.g. TERM=xterm-256color)"),
    ],
)
def test_tui_in_a_terminal_curses_cannot_drive_is_one_line(netns: NetnsPair, term, message):
    """In a real terminal (tmux) whose TERM is unset, dumb or unknown: one
    line, exit code 2, nothing loaded (so nothing attached), no traceback."""
    cmd = (
        f"env {term} ip netns exec {netns.ns_a} {sys.executable} -m pktstat_bpf -g -i va -t 1s; "
        f"echo EXIT=$?; sleep 60"
    )
    t = Tmux(cmd, cols=200, rows=10)
    try:
        screen = t.wait(lambda s: any(line.startswith("EXIT=") for line in s))
    finally:
        t.kill()
    lines = [line for line in screen if line.strip()]
    assert lines == [f"pktstat-bpf: error: {message}", "EXIT=2"], screen
    assert not netns.ours_attached()


def test_tui_in_a_10x5_window_says_too_small_and_quits(netns: NetnsPair):
    cmd = f"ip netns exec {netns.ns_a} {sys.executable} -m pktstat_bpf -g -i va -r 200ms; echo EXIT=$?; sleep 60"
    t = Tmux(cmd, cols=10, rows=5)
    try:
        t.wait(lambda s: bool(s) and s[0].startswith("terminal t"), timeout=20)
        assert wait_for(netns.ours_attached, timeout=5)
        t.keys("q")
        screen = t.wait(lambda s: any(line.startswith("EXIT=") for line in s))
        assert "EXIT=0" in screen, screen
        assert "Traceback" not in "\n".join(screen)
    finally:
        t.kill()
    assert not netns.ours_attached()
