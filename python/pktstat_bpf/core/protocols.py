"""IP protocol numbers to names (IANA keywords; ICMP names as pktstat-bpf)."""

from __future__ import annotations

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

#: Protocols whose port slots carry ICMP type and code.
ICMP = frozenset({1, 58})
#: Protocols with real port numbers.
PORTED = frozenset({6, 17, 132, 136})


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
