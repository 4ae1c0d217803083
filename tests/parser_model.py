"""An independent Python model of the replay path and of the parser rules
stated in src/bpf/parse.bpf.h: what key (or unparsed) one frame must give.

Written from the rules, not from the C code, so a test comparing the two
catches a divergence of either from the rules. Used by the fuzz tests.
"""

from __future__ import annotations

import struct
from typing import Optional, Tuple

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
IPV6_EXT = (0, 43, 44, 51, 60, 139, 140)
L4_MIN = {6: 20, 17: 8, 136: 8, 132: 12, 1: 4, 58: 4, 47: 4, 50: 8, 51: 12, 89: 16}
ETH_P_ARP = 0x0806
MAX_EXTHDRS = 8

# (saddr16, daddr16, sport, dport, proto, ipver)
Key = Tuple[bytes, bytes, int, int, int, int]


def _be16(b: bytes, off: int) -> int:
    return (b[off] << 8) | b[off + 1]


def to_ethernet(frame: bytes, dlt: int, max_data: int) -> Optional[bytes]:
    """The test-run data the engine gives the kernel, or None when the engine
    counts the frame as unparsed itself."""
    n = len(frame)
    if dlt == 1:
        if n < 14:
            return None
        eth = frame
    else:
        if dlt == 113:  # Linux cooked v1: protocol at 14, 16-byte header
            if n < 16:
                return None
            etype, body = _be16(frame, 14), frame[16:]
        elif dlt == 276:  # SLL2: protocol first, 20-byte header
            if n < 20:
                return None
            etype, body = _be16(frame, 0), frame[20:]
        elif dlt in (12, 14, 101):
            v = frame[0] >> 4 if n else 0
            etype, body = {4: ETH_P_IP, 6: ETH_P_IPV6}.get(v, 0), frame
        elif dlt == 228:
            etype, body = ETH_P_IP, frame
        elif dlt == 229:
            etype, body = ETH_P_IPV6, frame
        elif dlt in (0, 108):
            if n < 4:
                return None
            af = struct.unpack("<I", frame[:4])[0]
            if af & 0xFFFF0000:
                af = struct.unpack(">I", frame[:4])[0]
            etype = ETH_P_IP if af == 2 else ETH_P_IPV6 if af in (24, 28, 30) else 0
            body = frame[4:]
        else:
            raise ValueError(f"dlt {dlt}")
        eth = bytes(12) + struct.pack("!H", etype) + body
    outer = _be16(eth, 12)
    if (outer == ETH_P_IP and len(eth) < 34) or (outer == ETH_P_IPV6 and len(eth) < 54):
        return None  # the kernel refuses these: counted unparsed by the engine
    return eth[:max_data]


def _ports(d: bytes, pos: int, room: int, proto: int) -> Tuple[int, int]:
    need = L4_MIN.get(proto, 0)
    if not need or need > room or pos + need > len(d):
        return 0, 0
    if proto in (1, 58):  # type, code
        return d[pos], d[pos + 1]
    if proto == 47:  # GRE: protocol type, flags and version
        return _be16(d, pos + 2), _be16(d, pos)
    if proto == 89:  # OSPF: message type, version
        return d[pos + 1], d[pos]
    if proto == 51:  # AH: the SPI at 4
        pos += 4
    return _be16(d, pos), _be16(d, pos + 2)  # ports; ESP's SPI


def parse(d: bytes, arp: bool = True) -> Optional[Key]:
    """The key of an Ethernet frame, or None when it is unparsed. ARP
    (Ethernet/IPv4 only, 28 bytes) is ipver 0, proto 254, the opcode in sport."""
    n = len(d)
    if n < 14:
        return None
    etype, off = _be16(d, 12), 14
    for _ in range(2):
        if etype not in VLAN_TYPES:
            break
        if off + 4 > n:
            return None
        etype, off = _be16(d, off + 2), off + 4
    if etype == ETH_P_IP:
        if off + 20 > n:
            return None
        ver, ihl = d[off] >> 4, d[off] & 15
        if ver != 4 or ihl < 5:
            return None
        hlen = ihl * 4
        if off + hlen > n:
            return None
        tot = _be16(d, off + 2) or 0xFFFF + hlen  # 0: TSO / BIG TCP
        if tot < hlen:
            return None
        proto = d[off + 9]
        src = bytes(10) + b"\xff\xff" + d[off + 12 : off + 16]
        dst = bytes(10) + b"\xff\xff" + d[off + 16 : off + 20]
        if _be16(d, off + 6) & 0x1FFF:
            return (src, dst, 0, 0, proto, 4)
        return (src, dst, *_ports(d, off + hlen, tot - hlen, proto), proto, 4)
    if etype == ETH_P_IPV6:
        if off + 40 > n or d[off] >> 4 != 6:
            return None
        src, dst = d[off + 8 : off + 24], d[off + 24 : off + 40]
        nh = d[off + 6]
        plen = _be16(d, off + 4)
        limit = plen + 40 if plen else 0xFFFF
        pos = 40
        for _ in range(MAX_EXTHDRS):
            if nh not in IPV6_EXT:
                break
            e = off + pos
            if nh == 44:
                if e + 8 > n:
                    return (src, dst, 0, 0, nh, 6)
                if _be16(d, e + 2) & 0xFFF8:
                    return (src, dst, 0, 0, d[e], 6)
                nh, pos = d[e], pos + 8
                continue
            if e + 2 > n:
                return (src, dst, 0, 0, nh, 6)
            pos += (d[e + 1] + 2) * 4 if nh == 51 else (d[e + 1] + 1) * 8
            nh = d[e]
        if pos < limit:
            return (src, dst, *_ports(d, off + pos, limit - pos, nh), nh, 6)
        return (src, dst, 0, 0, nh, 6)
    if etype == ETH_P_ARP and arp and off + 28 <= n:
        if _be16(d, off) != 1 or _be16(d, off + 2) != ETH_P_IP or d[off + 4] != 6 or d[off + 5] != 4:
            return None
        mapped = bytes(10) + b"\xff\xff"
        return (
            mapped + d[off + 14 : off + 18],
            mapped + d[off + 24 : off + 28],
            _be16(d, off + 6),
            0,
            254,
            0,
        )
    return None
