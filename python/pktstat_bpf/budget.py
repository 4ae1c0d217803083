"""Traffic budgets: assertions over a Snapshot, for scripted network tests.

>>> from pktstat_bpf.budget import only_to, at_most        # doctest: +SKIP
>>> only_to(snap, ["127.0.0.0/8", "::1"])                   # doctest: +SKIP
>>> at_most(snap, bytes=10_000, dst_port=443)               # doctest: +SKIP

Each check raises :class:`BudgetExceeded` (an AssertionError) naming the
offending flows, so pytest shows exactly what broke the budget.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Sequence

from . import protocols
from .snapshot import Snapshot



class BudgetExceeded(AssertionError):
    pass


def _networks(nets: Iterable[str]) -> list:
    out = []
    for n in nets:
        try:
            out.append(ipaddress.ip_network(n, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {n!r}") from None
    return out


def _in(ip: str, nets: Sequence) -> bool:
    a = ipaddress.ip_address(ip)
    return any(a.version == n.version and a in n for n in nets)


def _match(f: dict[str, Any], *, direction, dst, dst_port, src, src_port, proto) -> bool:
    if direction is not None and f.get("direction", "") not in (direction, ""):
        return False
    if dst is not None and not _in(f["dstIp"], dst):
        return False
    if src is not None and not _in(f["srcIp"], src):
        return False
    if dst_port is not None and (f["dstPort"] != dst_port or protocols.NUMBERS.get(f["proto"].lower()) in protocols.ICMP):
        return False
    if src_port is not None and (f["srcPort"] != src_port or protocols.NUMBERS.get(f["proto"].lower()) in protocols.ICMP):
        return False
    if proto is not None and f["proto"].lower() != proto.lower():
        return False
    return True


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
    """The flows (as dicts, see Snapshot.flows) matching every given filter.
    `dst`/`src` take addresses or CIDR networks; `proto` a name ("TCP")."""
    dst_n = _networks([dst] if isinstance(dst, str) else dst) if dst is not None else None
    src_n = _networks([src] if isinstance(src, str) else src) if src is not None else None
    return [
        f
        for f in snap.flows()
        if _match(f, direction=direction, dst=dst_n, dst_port=dst_port, src=src_n, src_port=src_port, proto=proto)
    ]


def _describe(flows: list[dict[str, Any]], limit: int = 5) -> str:
    lines = [
        f"  {f['proto']} {f['srcIp']}:{f['srcPort']} -> {f['dstIp']}:{f['dstPort']}"
        f" {f.get('direction', '')} packets={f['packets']} bytes={f['bytes']}"
        for f in flows[:limit]
    ]
    if len(flows) > limit:
        lines.append(f"  ... and {len(flows) - limit} more")
    return "\n".join(lines)


def only_to(snap: Snapshot, allowed: Iterable[str], *, direction: str = "egress") -> None:
    """Assert that every packet sent (`direction`, default egress) went to one
    of the `allowed` addresses/networks."""
    nets = _networks(allowed)
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
    for name, limit, got in (("bytes", bytes, got_b), ("packets", packets, got_p), ("flows", flows, len(sel))):
        if limit is not None and got > limit:
            raise BudgetExceeded(f"{what}: {got} {name}, budget {limit}:\n{_describe(sel)}")


def nothing(snap: Snapshot, *, direction: str | None = "egress", **filters: Any) -> None:
    """Assert that no packet matching `filters` was sent (or seen in
    `direction`; None for both)."""
    at_most(snap, packets=0, direction=direction, **filters)
