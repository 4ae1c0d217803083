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

import ipaddress
from collections import defaultdict

import pytest
import tshark_dump
from test_l7_tshark import FILES, PCAPS, UNSUPPORTED

NDPI = [f for f in FILES if f.startswith("ndpi/") and f not in UNSUPPORTED]


def _answers(text: str) -> dict[str, list[tuple[float, str]]]:
    """address -> [(time, question)] of the NOERROR responses of a capture's
    shared dump (tests/tshark_dump.py)."""
    out: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for c in tshark_dump.rows(text):
        if (
            tshark_dump.first(c["dns.flags.response"]) not in ("1", "True")
            or tshark_dump.first(c["dns.flags.rcode"]) != "0"
        ):
            continue
        t, q, a4, a6 = c["frame.time_epoch"], c["dns.qry.name"], c["dns.a"], c["dns.aaaa"]
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
def compared(bpf, request) -> tuple[int, int, list[str]]:
    if not NDPI:
        pytest.skip(f"the shared captures are missing ({PCAPS}); set PKTSTAT_BPF_PCAPS")
    joined = files = 0
    wrong: list[str] = []
    dumps = tshark_dump.shared(request)
    views = {name: _answers(dumps[name]) for name in NDPI}
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
