"""IP protocol numbers to names (IANA keywords; ICMP names as pktstat-bpf),
and what the port slots of the flows without ports carry (flow.h)."""

from __future__ import annotations

from typing import Any

import numpy as np

NAMES: dict[int, str] = {
    0: "HOPOPT",
    1: "ICMPv4",
    2: "IGMP",
    4: "IPv4",
    6: "TCP",
    8: "EGP",
    9: "IGP",
    17: "UDP",
    27: "RDP",
    33: "DCCP",
    41: "IPv6",
    43: "IPv6-Route",
    44: "IPv6-Frag",
    46: "RSVP",
    47: "GRE",
    50: "IPSEC-ESP",
    51: "IPSEC-AH",
    58: "IPv6-ICMP",
    59: "IPv6-NoNxt",
    60: "IPv6-Opts",
    88: "EIGRP",
    89: "OSPFIGP",
    94: "IPIP",
    97: "ETHERIP",
    98: "ENCAP",
    103: "PIM",
    108: "IPComp",
    112: "VRRP",
    113: "PGM",
    115: "L2TP",
    132: "SCTP",
    135: "Mobility-Header",
    136: "UDPLite",
    137: "MPLS-in-IP",
    139: "HIP",
    140: "Shim6",
    143: "Ethernet",
    253: "Experimental-253",
    254: "Experimental-254",
}
NUMBERS: dict[str, int] = {v.lower(): k for k, v in NAMES.items()}
NUMBERS["arp"] = 254  # ARP flows (ipver 0: flow.h)

#: Protocols whose port slots carry ICMP type and code.
ICMP = frozenset({1, 58})
#: Protocols with real port numbers.
PORTED = frozenset({6, 17, 132, 136})

#: ARP flows (flow.h): ``ipver`` 0 (not IP) with this protocol number,
#: pktstat-bpf's synthetic ARP number; the opcode in ``sport``.
ARP_IPVER, ARP = 0, 254
#: Protocols whose port slots carry header fields (flow.h): ICMP type and
#: code, the ESP/AH SPI, GRE's protocol type and flags, OSPF's type and version.
GRE, ESP, AH, OSPF = 47, 50, 51, 89
FIELDED = ICMP | {GRE, ESP, AH, OSPF}
#: Names of the values, as pktstat-bpf prints them; others print as numbers.
ARP_OPS = {1: "request", 2: "reply", 3: "rev-req", 4: "rev-reply"}
OSPF_TYPES = {1: "Hello", 2: "DBDesc", 3: "LSReq", 4: "LSUpd", 5: "LSAck"}
GRE_INNER = {
    0x0800: "IPv4",
    0x86DD: "IPv6",
    0x6558: "TransEth",
    0x8847: "MPLS",
    0x8848: "MPLS-MC",
    0x0806: "ARP",
}
_BY_NAME = {"ARP": ARP, NAMES[ESP]: ESP, NAMES[AH]: AH, NAMES[GRE]: GRE, NAMES[OSPF]: OSPF}


def flow_name(proto: int, ipver: int) -> str:
    """A flow's protocol name: ``ARP`` for ARP flows (``ipver`` 0), else :func:`name`."""
    return "ARP" if ipver == ARP_IPVER and proto == ARP else name(proto)


def header_fields(proto: str, sport: int, dport: int) -> dict[str, Any]:
    """The JSON fields (pktstat-bpf's names and values) that the port slots
    of a flow of protocol `proto` (a name) carry: ``arpOp``; ``spi``;
    ``greFlags``, ``greInner``; ``ospfType``, ``ospfVersion``. Empty for
    other protocols. 0 (or ``"0"``) is a field the capture did not hold."""
    p = _BY_NAME.get(proto)
    if p == ARP:
        return {"arpOp": ARP_OPS.get(sport, str(sport))}
    if p in (ESP, AH):
        return {"spi": (sport << 16) | dport}
    if p == GRE:
        return {"greFlags": dport, "greInner": GRE_INNER.get(sport, f"0x{sport:x}")}
    if p == OSPF:
        return {"ospfType": OSPF_TYPES.get(sport, str(sport)), "ospfVersion": dport}
    return {}


def header_text(fields: dict[str, Any]) -> str:
    """:func:`header_fields` as short text: ``request``, ``spi 0x0000d4a5``,
    ``inner IPv4 flags 0x0000``, ``Hello v2``; empty when there are none."""
    if "arpOp" in fields:
        return str(fields["arpOp"])
    if "spi" in fields:
        return f"spi 0x{fields['spi']:08x}"
    if "greInner" in fields:
        return f"inner {fields['greInner']} flags 0x{fields['greFlags']:04x}"
    if "ospfType" in fields:
        return f"{fields['ospfType']} v{fields['ospfVersion']}"
    return ""


#: ``enum flow_dir`` (flow.h) by value: a packet's direction, and the names
#: of :class:`~pktstat_bpf.Totals`' counters per direction (``none`` is replay,
#: where a capture file has no direction).
DIRECTIONS = ("ingress", "egress", "none")
#: A flow's ``direction`` as the outputs show it: none is left empty.
FLOW_DIRECTIONS = ("ingress", "egress", "")


def direction(d: int) -> str:
    """A direction label (``ingress``, ``egress``, ``none``); unknown values print as themselves."""
    return DIRECTIONS[d] if d < len(DIRECTIONS) else str(d)


def name(proto: int) -> str:
    """``6`` -> ``"TCP"``; unnamed numbers print as themselves."""
    return NAMES.get(proto, str(proto))


#: flow_value.app (src/bpf/l7.h enum l7_app) to the JSON ``appProto`` value:
#: pktstat-bpf's names for its nine protocols, ours for the others, and the
#: two states "pending" (no payload packet looked at yet) and "unknown"
#: (looked at, not recognised).
APP_NAMES: tuple[str, ...] = (
    "pending",
    "unknown",
    "HTTP",
    "TLS",
    "QUIC",
    "SSH",
    "RDP",
    "PostgreSQL",
    "MQTT",
    "WireGuard",
    "Memcached",
    "DTLS",
    "DNS",
    "SMTP",
    "IMAP",
    "POP3",
)


def app_name(app: int) -> str:
    """The ``appProto`` name of a flow_value.app byte (``app<n>`` past the table)."""
    return APP_NAMES[app] if app < len(APP_NAMES) else f"app{app}"


#: IP protocols whose flows carry an application label (l7.h: TCP and UDP
#: payloads are looked at); the others keep app 0 and show no label.
APP_CARRIERS = (6, 17)
#: The modes whose programs label flows: every mode but process (its
#: events carry no payload).
UNLABELLED_MODES = frozenset({"process"})


def app_labelled(mode: str) -> bool:
    """Whether the flows of `mode` carry application labels (not process mode)."""
    return mode not in UNLABELLED_MODES


def app_codes(records: np.ndarray, labelled: bool = True) -> np.ndarray:
    """Each record's position in :data:`APP_NAMES` (int8), or -1 where no
    label applies: flows other than TCP and UDP (and ARP flows), and every
    flow when not `labelled` (process mode). A value past the table (a
    newer kernel program) counts as "unknown", so the set stays bounded."""
    if not labelled or len(records) == 0:
        return np.full(len(records), -1, np.int8)
    return app_codes_of(records["app"], records["proto"], records["ipver"])


def app_codes_of(app: np.ndarray, proto: np.ndarray, ipver: np.ndarray) -> np.ndarray:
    """:func:`app_codes` of the three fields as arrays (any shape)."""
    codes = np.where(app < len(APP_NAMES), app, 1).astype(np.int8)
    carrier = ((proto == 6) | (proto == 17)) & (ipver != ARP_IPVER)  # APP_CARRIERS
    return np.where(carrier, codes, np.int8(-1))


def app_text(name: str | None) -> str:
    """An ``appProto`` value as the text line and TUI show it: the name of
    a recognised protocol, ``?`` for "unknown", empty for "pending" or no label."""
    if name is None or name == "pending":
        return ""
    return "?" if name == "unknown" else name
