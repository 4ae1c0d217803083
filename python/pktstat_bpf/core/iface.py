"""Network interfaces: names, indexes, the default-route interface."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from pathlib import Path

from .errors import UsageError

_SYS_NET = Path("/sys/class/net")
# ARPHRD_* types whose frames start with an Ethernet header at TC/XDP.
_ETHERNET_TYPES = {1, 772}  # ARPHRD_ETHER, ARPHRD_LOOPBACK
_SIOCGIFHWADDR = 0x8927


def ifindex(name: str) -> int:
    """Index of interface `name`; UsageError if there is none."""
    if not name or "/" in name or len(name) >= 16:
        raise UsageError(f"invalid interface name {name!r}")
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise UsageError(f"no such network interface: {name!r}") from None


def link_type(name: str) -> int:
    """The ARPHRD_* type of interface `name`, asked of the kernel in the
    calling thread's network namespace (sysfs may show another one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s.fileno(), _SIOCGIFHWADDR, struct.pack("16s16x", name.encode()))
    return struct.unpack_from("H", ifr, 16)[0]


def is_l3_device(name: str) -> bool:
    """True for devices without a link-layer header (tun, wireguard, ipip)."""
    try:
        return link_type(name) not in _ETHERNET_TYPES
    except OSError:
        return False


def _default_v4() -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        f = line.split()
        if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000" and int(f[3], 16) & 1:
            out.append((int(f[6]), f[0]))
    return out


def _default_v6() -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    try:
        lines = Path("/proc/net/ipv6_route").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        f = line.split()
        if len(f) >= 10 and f[0] == "0" * 32 and f[1] == "00" and f[9] != "lo":
            out.append((int(f[5], 16), f[9]))
    return out


def default_interface() -> str:
    """The interface of the default route (lowest metric, IPv4 first, then
    IPv6); else the first non-loopback interface that is up."""
    for routes in (_default_v4(), _default_v6()):
        if routes:
            return min(routes)[1]
    for _, name in sorted(socket.if_nameindex()):
        if name == "lo":
            continue
        try:
            flags = int((_SYS_NET / name / "flags").read_text(), 16)
        except (OSError, ValueError):
            continue
        if flags & 0x1:  # IFF_UP
            return name
    raise UsageError("no default-route interface found; name one with -i/--iface")


def ifname(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index) if index else ""


__all__ = ["ifindex", "ifname", "default_interface", "is_l3_device"]

if os.name != "posix":  # pragma: no cover
    raise ImportError("pktstat_bpf runs on Linux only")
