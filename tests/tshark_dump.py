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


# One dump of every shared capture for the tests that read names, DNS
# answers and TCP health (tshark's reassembly on, every occurrence of a field
# joined by "|"): each test reads its own fields of the lines its filter
# would have given, so tshark dissects each capture once for all three.
SHARED_FIELDS = [
    "frame.protocols",
    "frame.time_epoch",
    "tls.handshake.type",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "tls.handshake.extensions_server_name",
    "tls.handshake.extensions_alpn_str",
    "http.host",
    "dns.qry.name",
    "quic.version",
    "dns.flags.response",
    "dns.flags.rcode",
    "dns.a",
    "dns.aaaa",
    "tcp.analysis.retransmission",
    "tcp.analysis.ack_rtt",
]
SHARED_FILTER = (
    "tls.handshake.extensions_server_name or tls.handshake.extensions_alpn_str or http.host"
    " or dns.qry.name or quic.version or dns.flags.response == 1"
    " or tcp.analysis.retransmission or tcp.analysis.ack_rtt"
)
_shared: dict[str, str] = {}


def shared(request) -> dict[str, str]:
    """{capture name: the shared dump} (made once per session)."""
    if not _shared:
        options = ["-Y", SHARED_FILTER, "-E", "occurrence=a", "-E", "aggregator=|"]
        _shared.update(dumps(request, "shared", SHARED_FIELDS, options))
    return _shared


def rows(text: str) -> list[dict[str, str]]:
    """The lines of a shared dump as {field: value} ("" where absent)."""
    return [dict(zip(SHARED_FIELDS, line.split("\t"))) for line in text.splitlines()]


def first(v: str) -> str:
    """The first occurrence of a field joined by "|"."""
    return v.split("|")[0]
