"""XDP mode: the xdp.bpf.c program on one interface's receive path, attached
through a BPF link (native driver XDP, generic skb XDP, or NIC offload).

XDP runs before the stack sees a frame, so it counts what arrives even when
later hooks drop it; it never sees what the host sends (egress). The status,
the JSON header and the text header say so.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from .. import iface as _iface
from ..errors import FeatureMissingError, PktstatError
from .base import InterfaceMode, check_choice

if TYPE_CHECKING:
    from ..engine import _core

XDP_MODES = ("auto", "native", "generic", "offload")
EGRESS_NOTE = "XDP sees ingress only: egress is not counted"


def describe_program(state: _core.XdpState) -> str:
    name = f' "{state["name"]}"' if state.get("name") else ""
    mode = f", {state['mode']} mode" if state.get("mode") else ""
    return f"id {state['prog_id']}{name}{mode}"


class XdpMode(InterfaceMode):
    name = "xdp"

    def __init__(
        self,
        *,
        iface: str | None = None,
        max_entries: int,
        xdp_mode: str = "auto",
        arp: bool = True,
        tcp_health: bool = True,
    ) -> None:
        self.xdp_mode = check_choice(xdp_mode, XDP_MODES, "--xdp_mode")
        self.arp = bool(arp)
        self.tcp_health = bool(tcp_health)
        super().__init__(iface, max_entries)

    def load(self) -> None:
        from ..engine import _core

        try:
            self.engine = _core.XdpCollector(
                self.ifindex,
                self.max_entries,
                self.xdp_mode,
                _iface.is_l3_device(self.iface),
                self.arp,
                self.tcp_health,
            )
        except OSError as e:
            if self.xdp_mode == "offload" and e.errno not in (errno.EPERM, errno.EACCES):
                raise FeatureMissingError(
                    f"XDP offload: the driver of {self.iface} cannot run this program on the NIC "
                    f"({e.strerror or e}); use --xdp_mode native or generic"
                ) from None
            raise

    def _busy(self, state: _core.XdpState) -> PktstatError:
        return PktstatError(
            f"{self.iface} already has an XDP program ({describe_program(state)}); "
            "pktstat-bpf does not replace it: detach it first, or count with TC (omit -x)"
        )

    def attach(self) -> None:
        from ..engine import _core

        state = _core.xdp_query(self.ifindex)
        if state["prog_id"]:
            raise self._busy(state)
        try:
            self.engine.attach()
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise self._busy(_core.xdp_query(self.ifindex)) from None
            if e.errno in (errno.EPERM, errno.EACCES):
                raise
            if self.xdp_mode in ("native", "offload"):
                what = "native XDP" if self.xdp_mode == "native" else "XDP offload"
                raise FeatureMissingError(
                    f"the driver of {self.iface} cannot run {what} ({e.strerror or e}); "
                    "use --xdp_mode generic, or auto to fall back to it"
                ) from None
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, 524):  # 524 = ENOTSUPP
                native = self.engine.native_refusal
                generic = os.strerror(e.errno)
                why = f"native: {native}; generic: {generic}" if native else generic
                raise FeatureMissingError(
                    f"XDP cannot be attached to {self.iface} ({why}); count it with TC instead (omit -x)"
                ) from None
            raise

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "iface": self.iface,
            "ifindex": self.ifindex,
            "xdp_mode": self.xdp_mode,
            "directions": ["ingress"],
            "egress": "not seen (XDP is a receive hook)",
            "note": EGRESS_NOTE,
        }
        if self.engine is not None:
            full = self.engine.buff_len
            st["bytes"] = "full frame (bpf_xdp_get_buff_len)" if full else "linear part of the frame"
            if self.engine.native_refusal:
                st["native_refused"] = self.engine.native_refusal
        return st

    def report_extra(self) -> dict[str, Any]:
        """Fields for the snapshot's JSON header (and its text header note)."""
        return {"directions": ["ingress"], "note": EGRESS_NOTE}
