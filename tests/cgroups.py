"""cgroup v2 directories for end-to-end tests.

A TestCgroup is a directory tree of the test's own under the cgroup v2 mount
(wherever it is: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid
host). Processes are started inside a child directory (they join it before
they exec, so every socket they make belongs to it), optionally inside a
test network namespace. destroy() kills what is left and removes the tree.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pktstat_bpf.core.modes.cgroup import cgroup2_mounts

WORKER = Path(__file__).with_name("cg_worker.py")
_counter = itertools.count()


def cgroup2_mount() -> str | None:
    for mnt, root in cgroup2_mounts():
        if root == "/" and os.access(mnt, os.W_OK):
            return mnt
    return None


class TestCgroup:
    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        mnt = cgroup2_mount()
        if mnt is None:
            raise RuntimeError("no writable cgroup v2 mount")
        self.mount = mnt
        self.root = os.path.join(mnt, f"pbt-{os.getpid()}-{next(_counter)}")
        os.mkdir(self.root)
        self.procs: list[subprocess.Popen] = []
        self.names: dict[str, int] = {}

    def child(self, name: str) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(path, exist_ok=True)
        return path

    def rel(self, path: str) -> str:
        """The path as the kernel names the cgroup (relative to the mount)."""
        return "/" + os.path.relpath(path, self.mount)

    def spawn(self, cgdir: str, *argv: str, netns: str | None = None, **kw) -> subprocess.Popen:
        """Start argv as a process of cgroup `cgdir` (in network namespace
        `netns`, if given). The shell joins the cgroup, then execs."""
        cmd = list(argv)
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("text", True)
        p = subprocess.Popen(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgdir, *cmd], **kw)
        self.procs.append(p)
        return p

    def worker(self, cgdir: str, name: str, *args: str, netns: str | None = None, **kw) -> subprocess.Popen:
        """tests/cg_worker.py named `name` in `cgdir` (see its docstring for
        the commands). The shell and `ip netns exec` exec: the worker keeps
        the pid Popen reports."""
        p = self.spawn(cgdir, sys.executable, str(WORKER), name, *args, netns=netns, **kw)
        self.names[name] = p.pid
        return p

    def pid_of(self, name: str) -> int:
        return self.names[name]

    def run(
        self, cgdir: str, name: str, *args: str, netns: str | None = None, timeout: float = 30
    ) -> list[str]:
        """Run a worker to completion; the words of its output."""
        p = self.worker(cgdir, name, *args, netns=netns, stderr=subprocess.PIPE)
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"worker {args} failed ({p.returncode}): {err}")
        return out.split()

    def destroy(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        dirs = sorted((d for d, _, _ in os.walk(self.root)), key=len, reverse=True)
        for d in dirs:
            kill = os.path.join(d, "cgroup.kill")
            try:
                if os.path.exists(kill):
                    Path(kill).write_text("1")
                else:  # kernels before 5.14
                    for pid in Path(d, "cgroup.procs").read_text().split():
                        os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for d in dirs:
            deadline = time.monotonic() + 5
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
