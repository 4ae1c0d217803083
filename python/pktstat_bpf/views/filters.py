"""Vectorised flow filters for the live views: internal/external networks
(``--external``) and first-appearance de-duplication (``-u/--unique``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union, cast

import numpy as np

from ..core import protocols
from ..core.errors import UsageError
from ..core.keys import hash_words

#: Networks ``--external`` treats as internal unless ``--internal-networks``
#: says otherwise: loopback and the RFC 1918 ranges, IPv6 loopback,
#: link-local and unique local addresses.
DEFAULT_INTERNAL = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
)


Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class BadNetwork(ValueError):
    """`item` is not an IP address or network."""

    def __init__(self, item: str) -> None:
        super().__init__(item)
        self.item = item


def parse_networks(items: Iterable[str]) -> list[Network]:
    """Addresses and CIDRs (host bits ignored, as Go's ``net.ParseCIDR``
    does; a bare address is a /32 or /128); the first bad one raises
    :class:`BadNetwork`."""
    out: list[Network] = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise BadNetwork(item) from None
    return out


def _words(b: bytes) -> tuple[int, int]:
    return int.from_bytes(b[:8], "big"), int.from_bytes(b[8:], "big")


class NetworkSet:
    """A set of IPv4/IPv6 networks, tested against arrays of flow addresses.

    IPv4 networks match only IPv4 flows, IPv6 networks only IPv6 flows (an
    IPv6 packet that carries a v4-mapped address matches ``::ffff:0:0/96``,
    not ``10.0.0.0/8``). Host bits in a CIDR are ignored, as Go's
    ``net.ParseCIDR`` does; a bare address is a /32 or /128.

    >>> ns = NetworkSet.parse("10.0.0.0/8,fd00::/8")
    >>> ns.networks
    ('10.0.0.0/8', 'fd00::/8')
    """

    def __init__(self, networks: Iterable[Network]) -> None:
        self._nets = tuple(networks)
        rows = []
        for n in self._nets:
            if n.version == 4:
                addr = b"\0" * 10 + b"\xff\xff" + n.network_address.packed
                plen = 96 + n.prefixlen
            else:
                addr, plen = n.network_address.packed, n.prefixlen
            mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
            mhi, mlo = mask >> 64, mask & ((1 << 64) - 1)
            ahi, alo = _words(addr)
            rows.append((n.version, ahi & mhi, alo & mlo, mhi, mlo))
        self._rows = rows

    @classmethod
    def parse(cls, text: str | Sequence[str], flag: str = "--internal-networks") -> NetworkSet:
        """Parse ``"CIDR,CIDR,..."`` (or a list); a bad entry raises
        :class:`UsageError` naming it."""
        items = [raw.strip() for raw in (text.split(",") if isinstance(text, str) else text)]
        if "" in items:
            raise UsageError(f"{flag}: empty network in {text!r}")
        try:
            return cls(parse_networks(items))
        except BadNetwork as e:
            raise UsageError(
                f"{flag}: invalid network {e.item!r} (expected a CIDR such as 10.0.0.0/8 or fd00::/8)"
            ) from None

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(str(n) for n in self._nets)

    def contains(self, addrs: np.ndarray, ipver: np.ndarray) -> np.ndarray:
        """Boolean mask: which of the (N, 16) uint8 addresses (IPv4-mapped
        for IPv4, as in flow records) with families `ipver` are in the set."""
        n = len(addrs)
        out = np.zeros(n, dtype=bool)
        if n == 0 or not self._rows:
            return out
        words = np.ascontiguousarray(addrs, dtype=np.uint8).view(">u8").reshape(n, 2)
        hi, lo = words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)
        for version, ahi, alo, mhi, mlo in self._rows:
            out |= (ipver == version) & ((hi & np.uint64(mhi)) == ahi) & ((lo & np.uint64(mlo)) == alo)
        return out

    def external(self, records: np.ndarray) -> np.ndarray:
        """Boolean mask of the flow records whose destination is outside
        (never ARP: it does not leave the link)."""
        return ~self.contains(records["daddr"], records["ipver"]) & (records["ipver"] != protocols.ARP_IPVER)


#: Default size of the ``--unique`` table: 2**20 slots of 8 bytes = 8 MiB.
UNIQUE_SLOTS = 1 << 20


def connection_hashes(records: np.ndarray) -> np.ndarray:
    """A 64-bit fingerprint of each record's connection: addresses, ports,
    protocol, address family, pid and comm (not direction, interface or
    cgroup). Never 0 (0 marks an empty slot)."""
    n = len(records)
    fields = ["saddr", "daddr", "sport", "dport", "proto", "ipver", "pid", "comm"]
    dtype_fields = cast("Mapping[str, tuple[Any, ...]]", records.dtype.fields)  # structured: not None
    base = [(f, dtype_fields[f][0]) for f in fields]
    pad = -np.dtype(base).itemsize % 8
    conn = np.zeros(n, dtype=base + [("_pad", "u1", (pad,))] if pad else base)
    for f in fields:
        conn[f] = records[f]
    h = hash_words(conn.view(np.uint8).reshape(n, conn.dtype.itemsize).view("<u8"))
    h[h == 0] = 1
    return h


class UniqueFilter:
    """Remembers which connections were already shown, in a fixed footprint.

    A direct-mapped table of ``slots`` 64-bit fingerprints (8 bytes each;
    8 MiB by default) indexed by the fingerprint. Memory never grows, however
    many connections a long capture sees. The trade-off is one-sided, which
    suits a connection log:

    - a *new* connection is wrongly taken as seen only if its 64-bit
      fingerprint equals the one stored in its slot: about n / 2**64 over n
      connections, i.e. never in practice;
    - a connection *already shown* may be shown again once another
      connection took its slot: after n further distinct connections the
      chance is 1 - (1 - 1/slots)**n (about 1 % for 10 000 connections with
      the default 2**20 slots).

    An exact LRU of the same capacity would hold Python tuples of ~300 bytes
    each (~300 MiB) and loop in Python per flow; this table is checked for a
    whole interval with a few NumPy operations.
    """

    def __init__(self, slots: int = UNIQUE_SLOTS) -> None:
        if slots <= 0 or slots & (slots - 1):
            raise ValueError(f"slots must be a positive power of two, not {slots}")
        self.slots = slots
        self._table = np.zeros(slots, dtype=np.uint64)

    @property
    def nbytes(self) -> int:
        return self._table.nbytes

    def first_seen(self, records: np.ndarray) -> np.ndarray:
        """Boolean mask of the records whose connection was not seen before
        (the first of several records of one new connection in `records`
        counts as new), and remember them all."""
        n = len(records)
        new = np.zeros(n, dtype=bool)
        if n == 0:
            return new
        h = connection_hashes(records)
        uniq, first = np.unique(h, return_index=True)
        slot = (uniq & np.uint64(self.slots - 1)).astype(np.intp)
        unseen = self._table[slot] != uniq
        new[first[unseen]] = True
        self._table[slot[unseen]] = uniq[unseen]
        return new
