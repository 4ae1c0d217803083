"""The application label per flow (flow_value.app, src/bpf/l7.h) in replay,
against tshark's dissectors on every capture of the shared ndpi and corpus
sets.

tshark's view, computed at test time with TCP reassembly off (so a segment is
dissected by itself, as the kernel sees it): for each flow (source,
destination, transport, ports; the outermost IP header carrying TCP or UDP
directly), the protocol tshark gives the flow's first payload packet, mapped
to our label (TSHARK_LABELS). A flow is compared when that packet is the
flow's first: for TCP, a SYN of that direction came before it (the start of
the connection is in the capture); for UDP, its first datagram with payload.
Not compared: flows tshark finds inside a tunnel (its chain has an inner IP
or Ethernet header: tshark labels the inner flow, we label the outer), MPTCP
subflows that join a connection (their first payload is the middle of the
connection's stream), messages behind another protocol's header (DTLS in
CAPWAP, TLS after a PROXY header: the flow is that protocol's, and its
first bytes are that header), and packets tshark gives a protocol by port
alone (EVIDENCE).

Per protocol, at least 95% of the flows tshark assigns to it must carry our
same label. Every disagreement falls in a class that docs/counting.md lists
with its reason; CLASSES names them per file and flow, and a class that no
longer explains a disagreement fails the test.
"""

from __future__ import annotations

import ipaddress
import os
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import tshark_dump

PCAPS = Path(os.environ.get("PKTSTAT_BPF_PCAPS", Path(__file__).resolve().parents[2] / "shared" / "pcaps"))
SETS = ("ndpi", "corpus")
FILES = [
    f"{s}/{p.name}"
    for s in SETS
    if (PCAPS / s).is_dir()
    for p in sorted((PCAPS / s).iterdir())
    if p.is_file()
]
# link types replay refuses (tests/test_tcp_flags.py pins the refusal)
UNSUPPORTED = {"ndpi/dlt_ppp.pcap", "ndpi/someip_sd_sample.pcap"}

FIELDS = [
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.flags.mf",
    "ip.frag_offset",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.len",
    "tcp.flags.syn",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "tcp.options.mptcp.subtype",
    # what tshark's dissector decoded in the packet (EVIDENCE)
    "tls.record.content_type",
    "ssh.protocol",
    "ssh.packet_length",
    "dtls.record.content_type",
    "http.request.method",
    "http.response.code",
    "dns.flags",
    "quic.header_form",
]
# tshark's protocol names (frame.protocols) -> our label; mDNS and LLMNR are
# DNS messages on other ports, h2c's preface opens HTTP/2 in the clear
TSHARK_LABELS = {
    "http": "HTTP",
    "http2": "HTTP",
    "tls": "TLS",
    "quic": "QUIC",
    "ssh": "SSH",
    "rdp": "RDP",
    "pgsql": "PostgreSQL",
    "mqtt": "MQTT",
    "wg": "WireGuard",
    "memcache": "Memcached",
    "dtls": "DTLS",
    "dns": "DNS",
    "mdns": "DNS",
    "llmnr": "DNS",
    "smtp": "SMTP",
    "imap": "IMAP",
    "pop": "POP3",
}
# For these, tshark's label counts only where its dissector decoded a message
# header in the packet: it also gives the protocol to whatever bytes use the
# port (OpenVPN, WhatsApp or a lone CRLF on 443 or 22 is "tls" or "ssh").
EVIDENCE = {
    "TLS": ("tls.record.content_type",),
    "SSH": ("ssh.protocol", "ssh.packet_length"),
    "DTLS": ("dtls.record.content_type",),
    "HTTP": ("http.request.method", "http.response.code"),
    "DNS": ("dns.flags",),
    "QUIC": ("quic.header_form",),
}
MP_JOIN = "1"  # mptcp.subtype of a SYN that joins a subflow to a connection
WALKED = {"eth", "ethertype", "vlan", "ieee8021ad", "sll", "raw", "null", "loop"}
TUNNELLED = {"ip", "ipv6", "eth"}

# The disagreement classes of docs/counting.md ("Held against tshark"), with
# the flows each explains: (file, source port, destination port).
CLASSES: dict[str, set[tuple[str, int, int]]] = {
    # fuzzed or encrypted datagrams tshark decodes as a DNS header by port
    # (64,259 questions; DNSCrypt on the mDNS port); our header sanity
    # refuses them
    "garbage on a DNS port": {
        ("ndpi/dnscrypt-v2.pcap", 38650, 5353),
        ("ndpi/dnscrypt-v2.pcap", 5353, 38650),
        ("ndpi/dnscrypt-v2.pcap", 42883, 5353),
        ("ndpi/dnscrypt-v2.pcap", 5353, 42883),
        ("ndpi/dnscrypt-v2.pcap", 50893, 5353),
        ("ndpi/dnscrypt-v2.pcap", 5353, 50893),
        ("corpus/dns-badlabel.pcap", 53, 500),
        ("corpus/dns_fwdptr.pcap", 53, 500),
        ("corpus/rtp-seg-fault-1.pcapng", 1512, 53),
    },
}


@pytest.fixture(scope="session")
def tshark_apps(request) -> dict[str, str]:
    """{file: tshark's field dump} (its TCP reassembly off: labels come from each packet)."""
    options = ["-o", "tcp.desegment_tcp_streams:FALSE", "-E", "occurrence=f"]
    return tshark_dump.dumps(request, "apps", FIELDS, options)


def tshark_view(text: str) -> dict[tuple, str | None]:
    """{(src, dst, transport, sport, dport): our label of tshark's protocol
    for the flow's first payload packet, None where it is none of ours}, for
    the flows whose first payload packet is comparable (module docstring)."""
    first: dict[tuple, str | None] = {}
    syn: set[tuple] = set()
    joined: set[tuple] = set()
    seen: set[tuple] = set()
    for line in text.splitlines():
        c = dict(zip(FIELDS, line.split("\t")))
        layers = c["frame.protocols"].split(":")
        at = next((i for i, layer in enumerate(layers) if layer in ("ip", "ipv6")), None)
        if at is None or any(layer not in WALKED for layer in layers[:at]):
            continue
        v4 = layers[at] == "ip"
        src, dst = (c["ip.src"], c["ip.dst"]) if v4 else (c["ipv6.src"], c["ipv6.dst"])
        after = [layer for layer in layers[at + 1 :] if not layer.startswith("ipv6.")]
        if not src or not dst or not after or after[0] not in ("tcp", "udp"):
            continue
        if v4 and (c["ip.flags.mf"] in ("1", "True") or c["ip.frag_offset"] not in ("", "0")):
            continue
        t = after[0]
        try:
            key = (
                str(ipaddress.ip_address(src)),
                str(ipaddress.ip_address(dst)),
                t.upper(),
                int(c[f"{t}.srcport"]),
                int(c[f"{t}.dstport"]),
            )
        except ValueError:
            continue
        if t == "tcp":
            if c["tcp.flags.syn"] in ("1", "True"):
                syn.add(key)
                if c["tcp.options.mptcp.subtype"] == MP_JOIN:
                    joined.add(key)
            if not c["tcp.len"] or int(c["tcp.len"]) == 0:
                continue
        elif not c["udp.length"] or int(c["udp.length"]) <= 8:
            continue
        if key in seen:
            continue
        seen.add(key)
        rest = after[1:]
        if (t == "tcp" and (key not in syn or key in joined)) or any(layer in TUNNELLED for layer in rest):
            continue
        # MPTCP's TCP options; TPKT and COTP, RDP's own framing
        rest = [layer for layer in rest if layer not in ("mptcp", "tpkt", "cotp")]
        label = next((TSHARK_LABELS[layer] for layer in rest if layer in TSHARK_LABELS), None)
        if label is not None and TSHARK_LABELS.get(rest[0]) != label:
            continue  # behind another protocol's header (CAPWAP, PROXY): that one's flow
        if label in EVIDENCE and not any(c[f] for f in EVIDENCE[label]):
            continue
        first[key] = label
    return first


def ours_view(snap) -> dict[tuple, str]:
    from pktstat_bpf.core.protocols import app_name

    return {
        (d["srcIp"], d["dstIp"], d["proto"], d["srcPort"], d["dstPort"]): app_name(int(r["app"]))
        for d, r in zip(snap.flow_dicts(), snap.records)
    }


@pytest.fixture(scope="module")
def comparison(bpf, tshark_apps):
    """(per label: [flows tshark gives it, of which ours agree], the
    disagreements [(file, key, tshark's, ours)])."""
    import pktstat_bpf

    replayer = pktstat_bpf.Replayer(max_entries=1 << 16)
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    wrong = []
    for name in FILES:
        if name in UNSUPPORTED:
            continue
        ours = ours_view(replayer.replay(PCAPS / name))
        for key, label in tshark_view(tshark_apps[name]).items():
            if label is None:
                continue
            tally[label][0] += 1
            if ours.get(key) == label:
                tally[label][1] += 1
            else:
                wrong.append((name, key, label, ours.get(key)))
    return dict(tally), wrong


def test_labels_agree_with_tshark_per_protocol(comparison):
    tally, _ = comparison
    rates = {label: (ok, n, ok / n) for label, (n, ok) in sorted(tally.items())}
    print("per label (ours agree, tshark's flows, rate):", rates)
    assert {label: r for label, r in rates.items() if r[2] < 0.95} == {}, rates
    # the comparison is not vacuous: the corpora hold most of the labels, with
    # hundreds of flows for the common ones
    assert {"HTTP", "TLS", "QUIC", "DNS", "SSH", "RDP", "SMTP", "DTLS", "PostgreSQL"} <= set(tally)
    assert min(tally[label][0] for label in ("HTTP", "TLS", "DNS", "QUIC")) >= 200


def test_every_disagreement_is_in_a_documented_class(comparison):
    _, wrong = comparison
    explained = {flow for flows in CLASSES.values() for flow in flows}
    unexplained = [w for w in wrong if (w[0], w[1][3], w[1][4]) not in explained]
    assert unexplained == [], "(file, flow, tshark's, ours) outside every class of docs/counting.md"
    hit = Counter(cls for cls, flows in CLASSES.items() for w in wrong if (w[0], w[1][3], w[1][4]) in flows)
    assert set(hit) == set(CLASSES), "a class that explains nothing any more"
    doc = (Path(__file__).resolve().parents[1] / "docs" / "counting.md").read_text()
    for cls in CLASSES:
        assert cls in doc, cls
