"""The names of flows (src/bpf/l7_names.bpf.h) in replay, against tshark's
dissectors on every capture of the shared ndpi and corpus sets.

tshark's view, computed at test time (its TCP reassembly on, so a
ClientHello or request split over segments is read whole, as ours must):
for each packet carrying the field, the flow of that packet (the outermost
IP header carrying TCP or UDP directly; source, destination, ports) and the
value. Ours: the same directional flow's column (its own name, or its
reverse direction's). A field is compared where tshark has it and the flow
is ours to name (not in a tunnel: tshark names the inner flow, we count the
outer).

Fields: ``tls.handshake.extensions_server_name`` (TLS over TCP; QUIC's
ClientHello is encrypted in its Initial packet and not read),
``tls.handshake.extensions_alpn_str``, ``http.host`` (HTTP over TCP: SSDP's
HTTP over UDP is not labelled HTTP), ``dns.qry.name`` (tshark's ``<Root>``
is our ``.``; names compare case-insensitively as DNS does) and
``quic.version``. Per field, at least 95% of the flows tshark names must
carry our same value; the disagreements left are listed in
docs/counting.md ("Names held against tshark").
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict

import pytest
import tshark_dump
from test_l7_tshark import FILES, PCAPS, TUNNELLED, UNSUPPORTED, WALKED

FIELDS = {
    "server_name": "tls.handshake.extensions_server_name",
    "alpn": "tls.handshake.extensions_alpn_str",
    "http_host": "http.host",
    "dns_query": "dns.qry.name",
    "quic_version": "quic.version",
}


@pytest.fixture(scope="session")
def tshark_names(request) -> dict[str, str]:
    """{file: tshark's dump of the shared captures (tests/tshark_dump.py)}."""
    return tshark_dump.shared(request)


_first = tshark_dump.first


def _presentation(name: str) -> str:
    """tshark's DNS name (UTF-8 labels shown decoded) in the presentation
    format we print: bytes outside printable ASCII as \\DDD."""
    return "".join(
        ch if 0x21 <= ord(ch) <= 0x7E else "".join(f"\\{b:03d}" for b in ch.encode()) for ch in name
    )


def tshark_view(text: str) -> dict[tuple, set[str]]:
    """{(field, src, dst, sport, dport): the values tshark gives the flow's packets}."""
    from pktstat_bpf.core import names

    view: dict[tuple, set[str]] = defaultdict(set)
    for c in tshark_dump.rows(text):
        layers = c["frame.protocols"].split(":")
        at = next((i for i, layer in enumerate(layers) if layer in ("ip", "ipv6")), None)
        if at is None or any(layer not in WALKED for layer in layers[:at]):
            continue
        after = [layer for layer in layers[at + 1 :] if not layer.startswith("ipv6.")]
        if not after or after[0] not in ("tcp", "udp") or any(layer in TUNNELLED for layer in after[1:]):
            continue
        t = after[0]
        v4 = layers[at] == "ip"
        src, dst = (c["ip.src"], c["ip.dst"]) if v4 else (c["ipv6.src"], c["ipv6.dst"])
        try:
            key = (
                str(ipaddress.ip_address(_first(src))),
                str(ipaddress.ip_address(_first(dst))),
                int(_first(c[f"{t}.srcport"])),
                int(_first(c[f"{t}.dstport"])),
            )
        except ValueError:
            continue
        quic = "quic" in after
        hello = "1" in c["tls.handshake.type"].split("|")
        for field, tfield in FIELDS.items():
            value = c.get(tfield, "")
            if not value or (value.startswith("<") and value.endswith(">") and value != "<Root>"):
                continue  # (tshark's own placeholders: "<Name too long>" ...)
            if field in ("server_name", "alpn") and (quic or t != "tcp" or not hello):
                continue  # QUIC's ClientHello is encrypted; a ServerHello's ALPN is the one chosen
            if field == "http_host" and t != "tcp":
                continue  # SSDP (HTTP over UDP) is not labelled HTTP
            if field == "quic_version":
                value = names.quic_version_name(int(_first(value), 16))
            elif field == "alpn":
                value = value.replace("|", ",")
            elif field == "dns_query":
                value = _presentation(_first(value))
            else:
                value = _first(value)
            if field == "dns_query" and value == "<Root>":
                value = "."
            view[(field, *key)].add(value)
    return view


@pytest.fixture(scope="module")
def comparison(bpf, tshark_names):
    """(per field: [flows tshark names, of which ours agree], the disagreements)."""
    import pktstat_bpf

    replayer = pktstat_bpf.Replayer(max_entries=1 << 16)
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    wrong = []
    for name in FILES:
        if name in UNSUPPORTED or not tshark_names[name]:
            continue
        ours: dict[tuple, str] = {}
        for d in replayer.replay(PCAPS / name).flow_dicts():
            for field in FIELDS:
                v = d.get(pktstat_bpf.core.render.camel(field))
                if v is not None:
                    ours[(field, d["srcIp"], d["dstIp"], d["srcPort"], d["dstPort"])] = v
        for key, values in tshark_view(tshark_names[name]).items():
            tally[key[0]][0] += 1
            got = ours.get(key)
            agree = got in values or (
                key[0] == "dns_query" and got is not None and got.lower() in {v.lower() for v in values}
            )
            if agree:
                tally[key[0]][1] += 1
            else:
                wrong.append((name, key, sorted(values)[:3], got))
    return dict(tally), wrong


def test_names_agree_with_tshark_per_field(comparison):
    tally, wrong = comparison
    rates = {f: (ok, n, round(ok / n, 4)) for f, (n, ok) in sorted(tally.items())}
    print("per field (ours agree, tshark's flows, rate):", rates)
    for w in wrong:
        print("disagrees:", w)
    assert {f: r for f, r in rates.items() if r[2] < 0.95} == {}, rates
    # not vacuous: hundreds of names of each kind in the corpora
    assert set(tally) == set(FIELDS)
    assert min(tally[f][0] for f in ("server_name", "http_host", "dns_query", "alpn")) >= 300
