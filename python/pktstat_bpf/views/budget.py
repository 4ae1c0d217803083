"""Traffic budgets: assertions over a Snapshot, for scripted network tests.

Each check raises :class:`BudgetExceeded` (an AssertionError) naming the
offending flows, so pytest shows exactly what broke the budget. Budgets
count what was *sent* (egress flows) unless given another ``direction``; a
capture file's flows have no direction and always count.

>>> from pktstat_bpf import budget
>>> snap = pktstat_bpf.replay("tests/data/office.pcap")
>>> budget.only_to(snap, ["192.168.1.0/24", "203.0.113.10", "198.51.100.0/24", "192.0.2.123",
...                       "224.0.0.251", "2001:db8::/32", "ff02::/16"])
>>> budget.at_most(snap, bytes=2_500_000, src_port=443, proto="TCP")   # the HTTPS download
>>> budget.nothing(snap, dst_port=25)                                  # no mail sent
>>> budget.at_most(snap, flows=2, dst_port=53)
Traceback (most recent call last):
    ...
pktstat_bpf.views.budget.BudgetExceeded: dst_port=53: 3 flows, budget 2:
  UDP [2001:db8:1::23]:... -> [2001:db8:1::1]:53 packets=1 bytes=97
  UDP 192.168.1.23:... -> 192.168.1.1:53 packets=1 bytes=81
  UDP 192.168.1.23:... -> 192.168.1.1:53 packets=1 bytes=74
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Sequence

from ..core import protocols, render
from ..core.snapshot import Snapshot
from .filters import BadNetwork, Network, parse_networks


class BudgetExceeded(AssertionError):
    """A traffic budget was exceeded; the message lists the offending flows."""


def _networks(nets: Iterable[str]) -> list[Network]:
    try:
        return parse_networks(nets)
    except BadNetwork as e:
        raise ValueError(f"not an IP address or network: {e.item!r}") from None


def _in(ip: str, nets: Sequence[Network]) -> bool:
    a = ipaddress.ip_address(ip)
    return any(a.version == n.version and a in n for n in nets)


def _ported(f: dict[str, Any]) -> bool:
    """False for ICMP, ARP, ESP/AH, GRE and OSPF, whose port slots hold
    other fields (type and code, opcode, SPI ...)."""
    name = str(f["proto"]).lower()
    return name != "arp" and protocols.NUMBERS.get(name) not in protocols.FIELDED


def _match(
    f: dict[str, Any],
    *,
    direction: str | None,
    dst: Sequence[Network] | None,
    dst_port: int | None,
    src: Sequence[Network] | None,
    src_port: int | None,
    proto: str | None,
) -> bool:
    if direction is not None and f.get("direction", "") not in (direction, ""):
        return False
    if dst is not None and not _in(f["dstIp"], dst):
        return False
    if src is not None and not _in(f["srcIp"], src):
        return False
    if dst_port is not None and (f["dstPort"] != dst_port or not _ported(f)):
        return False
    if src_port is not None and (f["srcPort"] != src_port or not _ported(f)):
        return False
    if proto is not None and f["proto"].lower() != proto.lower():
        return False
    return True


def _check_direction(snap: Snapshot, direction: str | None) -> None:
    seen = snap.extra.get("directions")
    if direction is not None and seen is not None and direction not in seen:
        raise ValueError(
            f"a {snap.mode} capture sees {' and '.join(seen)} only, so a budget on {direction} traffic "
            f"could never fail: pass direction={seen[0]!r} (or None)"
        )


def select(
    snap: Snapshot,
    *,
    direction: str | None = None,
    dst: Iterable[str] | str | None = None,
    dst_port: int | None = None,
    src: Iterable[str] | str | None = None,
    src_port: int | None = None,
    proto: str | None = None,
) -> list[dict[str, Any]]:
    """The flows (as dicts, see :meth:`Snapshot.flows`) matching every given
    filter. `dst`/`src` take addresses or CIDR networks; `proto` a name
    (``"TCP"``, any case); ports never match ICMP, ARP, ESP/AH, GRE or OSPF
    (whose port slots are other fields)."""
    _check_direction(snap, direction)
    dst_n = _networks([dst] if isinstance(dst, str) else dst) if dst is not None else None
    src_n = _networks([src] if isinstance(src, str) else src) if src is not None else None
    return [
        f
        for f in snap.flows()
        if _match(
            f, direction=direction, dst=dst_n, dst_port=dst_port, src=src_n, src_port=src_port, proto=proto
        )
    ]


def _describe(flows: list[dict[str, Any]], limit: int = 5) -> str:
    lines = []
    for f in flows[:limit]:
        src, dst = render.endpoints(f)
        what = [f"  {f['proto']} {src} -> {dst}"]
        if not _ported(f):
            what.append(f"type {f['srcPort']} code {f['dstPort']}")
        if f.get("direction"):
            what.append(f["direction"])
        lines.append(" ".join(what + [f"packets={f['packets']} bytes={f['bytes']}"]))
    if len(flows) > limit:
        lines.append(f"  ... and {len(flows) - limit} more")
    return "\n".join(lines)


def only_to(snap: Snapshot, allowed: Iterable[str], *, direction: str = "egress") -> None:
    """Assert that every packet sent (`direction`, default egress) went to one
    of the `allowed` addresses/networks."""
    nets = _networks([allowed] if isinstance(allowed, str) else allowed)
    bad = [f for f in select(snap, direction=direction) if not _in(f["dstIp"], nets)]
    if bad:
        total = sum(f["packets"] for f in bad)
        raise BudgetExceeded(
            f"{total} packets went to destinations outside {', '.join(map(str, nets))}:\n{_describe(bad)}"
        )


def at_most(
    snap: Snapshot,
    *,
    bytes: int | None = None,
    packets: int | None = None,
    flows: int | None = None,
    direction: str | None = "egress",
    **filters: Any,
) -> None:
    """Assert that the flows matching `filters` (see :func:`select`) add up to
    at most `bytes` bytes / `packets` packets / `flows` flows.

    Budgets are about what was *sent*: by default only egress flows count
    (on loopback every packet is seen twice, leaving and arriving). Pass
    ``direction="ingress"`` for received traffic, or ``None`` for both."""
    if bytes is None and packets is None and flows is None:
        raise ValueError("at_most() needs a limit: bytes=, packets= or flows=")
    sel = select(snap, direction=direction, **filters)
    got_b = sum(f["bytes"] for f in sel)
    got_p = sum(f["packets"] for f in sel)
    what = ", ".join(f"{k}={v}" for k, v in filters.items()) or "all traffic"
    for name, limit, got in (
        ("bytes", bytes, got_b),
        ("packets", packets, got_p),
        ("flows", flows, len(sel)),
    ):
        if limit is not None and got > limit:
            raise BudgetExceeded(f"{what}: {got} {name}, budget {limit}:\n{_describe(sel)}")


def nothing(snap: Snapshot, *, direction: str | None = "egress", **filters: Any) -> None:
    """Assert that no packet matching `filters` was sent (or seen in
    `direction`; None for both)."""
    at_most(snap, packets=0, direction=direction, **filters)
