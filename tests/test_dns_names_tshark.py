"""Names from DNS answers (docs/counting.md "Names from DNS answers") in
replay of the shared ndpi captures, against tshark's DNS dissector.

tshark's view: every DNS response with code NOERROR, its question
(``dns.qry.name``) and its answers' addresses (``dns.a``, ``dns.aaaa``),
with the response's time. Ours: each flow the replay named from a DNS
answer (``dns_name``). Every such name must be one tshark's responses gave
for the flow's destination or source address, in a response no later than
the flow's first packet; and the join must have named flows in several
captures (so the check cannot pass empty).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import subprocess
from collections import defaultdict

import pytest
from test_l7_tshark import FILES, PCAPS, UNSUPPORTED

NDPI = [f for f in FILES if f.startswith("ndpi/") and f not in UNSUPPORTED]


def _answers(name: str) -> dict[str, list[tuple[float, str]]]:
    """address -> [(time, question)] of the capture's NOERROR responses."""
    cmd = ["tshark", "-n", "-r", str(PCAPS / name), "-Y", "dns.flags.response == 1 && dns.flags.rcode == 0"]
    cmd += ["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|", "-E", "separator=/t"]
    for f in ("frame.time_epoch", "dns.qry.name", "dns.a", "dns.aaaa"):
        cmd += ["-e", f]
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    out: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for line in p.stdout.splitlines():
        t, q, a4, a6 = (line.split("\t") + ["", "", "", ""])[:4]
        if not t or not q:
            continue
        question = q.split("|")[0].lower()
        for addr in [*a4.split("|"), *a6.split("|")]:
            if addr:
                out[str(ipaddress.ip_address(addr))].append((float(t), question))
    return out


def _ours(name: str) -> list[dict]:
    import pktstat_bpf

    snap = pktstat_bpf.replay(str(PCAPS / name))
    return [d for d in snap.flow_dicts() if d.get("dnsName")]


@pytest.fixture(scope="module")
def compared(bpf) -> tuple[int, int, list[str]]:
    if not NDPI:
        pytest.skip(f"the shared captures are missing ({PCAPS}); set PKTSTAT_BPF_PCAPS")
    joined = files = 0
    wrong: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        views = dict(zip(NDPI, ex.map(_answers, NDPI)))
    for name, answers in views.items():
        if not answers:
            continue
        flows = _ours(name)
        files += bool(flows)
        for d in flows:
            joined += 1
            first = pktstat_bpf_time(d["firstSeen"])
            given = {
                q for addr in (d["dstIp"], d["srcIp"]) for t, q in answers.get(addr, []) if t <= first + 1e-6
            }
            if d["dnsName"].lower() not in given:
                wrong.append(f"{name}: {d['srcIp']} -> {d['dstIp']} {d['dnsName']} (tshark: {sorted(given)})")
    return joined, files, wrong


def pktstat_bpf_time(text: str) -> float:
    """An RFC 3339 firstSeen (UTC, ns) as epoch seconds."""
    import numpy as np

    return int(np.datetime64(text.rstrip("Z"), "ns").astype("int64")) / 1e9


def test_every_joined_name_is_a_dns_answer_for_its_address(compared):
    joined, files, wrong = compared
    assert wrong == []
    assert joined >= 95 and files >= 12, (joined, files)  # 101 in 13 at the time of writing
