"""tshark's field dumps of the shared captures, the oracle of the tests
that hold our replay against tshark's dissectors (labels, names, TCP
health): one tshark run per capture, two at a time, cached (where pytest's
cache is on) by the capture's SHA-256, tshark's version and what was asked.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import subprocess
from pathlib import Path
from typing import Sequence

import pytest


def run_tshark(path: Path, fields: Sequence[str], options: Sequence[str] = ()) -> str:
    """tshark -T fields over `path` with `options` first; a capture cut
    short or damaged gives what tshark read of it (replay counts what comes
    first too)."""
    cmd = ["tshark", "-n", "-r", str(path), *options, "-T", "fields", "-E", "separator=/t"]
    for f in fields:
        cmd += ["-e", f]
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    damaged = "cut short" in p.stderr or "damaged or corrupt" in p.stderr
    if p.returncode != 0 and not p.stdout and not damaged:
        raise RuntimeError(f"tshark failed on {path}: {p.stderr.strip()}")
    return p.stdout


def dumps(request, tag: str, fields: Sequence[str], options: Sequence[str] = ()) -> dict[str, str]:
    """{capture name: run_tshark's output} for every shared capture."""
    from test_l7_tshark import FILES, PCAPS  # (it uses this module too)

    if not FILES:
        pytest.skip(f"the shared captures are missing ({PCAPS}); set PKTSTAT_BPF_PCAPS")
    version = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    asked = "\0".join([version, *options, "", *fields]).encode()
    cache = getattr(request.config, "cache", None)
    out: dict[str, str] = {}
    todo = []
    for name in FILES:
        ck = f"pktstat_bpf/tshark-{tag}/{hashlib.sha256((PCAPS / name).read_bytes() + asked).hexdigest()}"
        hit = cache.get(ck, None) if cache is not None else None
        if hit is not None:
            out[name] = hit
        else:
            todo.append((name, ck))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        futures = {ex.submit(run_tshark, PCAPS / name, fields, options): (name, ck) for name, ck in todo}
        for fut in concurrent.futures.as_completed(futures):
            name, ck = futures[fut]
            out[name] = fut.result()
            if cache is not None:
                cache.set(ck, out[name])
    return out
