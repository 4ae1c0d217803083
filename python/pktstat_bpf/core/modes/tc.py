"""TC mode: the tc.bpf.c classifier on one interface's ingress and egress,
through TCX links or a legacy clsact filter."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from .. import iface as _iface
from ..errors import FeatureMissingError
from .base import InterfaceMode, check_choice

if TYPE_CHECKING:
    pass

TC_ATTACH = ("auto", "tcx", "legacy")


class TcMode(InterfaceMode):
    name = "tc"

    def __init__(
        self,
        *,
        iface: str | None = None,
        max_entries: int,
        tc_attach: str = "auto",
        arp: bool = True,
        tcp_health: bool = True,
    ) -> None:
        self.tc_attach = check_choice(tc_attach, TC_ATTACH, "tc attach mode")
        self.arp = bool(arp)
        self.tcp_health = bool(tcp_health)
        super().__init__(iface, max_entries)
        self._janitor: Any = None

    def load(self) -> None:
        from ..engine import _core

        self.engine = _core.TcCollector(
            self.ifindex,
            self.max_entries,
            self.tc_attach,
            _iface.is_l3_device(self.iface),
            self.arp,
            self.tcp_health,
        )

    def attach(self) -> None:
        try:
            self.engine.attach()
        except OSError as e:
            if self.tc_attach == "tcx" and e.errno == errno.EINVAL:  # what kernels before 6.6 answer
                raise FeatureMissingError(
                    "this kernel has no TCX links (Linux 6.6+): use --tc-attach legacy, or auto to fall back to it"
                ) from None
            raise
        if self.engine.attach_path == "tc-legacy":
            from .._janitor import Janitor

            self._janitor = Janitor.spawn(self.ifindex, self.engine.legacy_filters, self.engine.created_qdisc)

    def detach(self) -> None:
        if self.engine is None:
            return
        try:
            self.engine.detach()
        finally:
            if self._janitor is not None:
                self._janitor.release()
                self._janitor = None

    def status(self) -> dict[str, Any]:
        return {
            "iface": self.iface,
            "ifindex": self.ifindex,
            "created_qdisc": bool(self.engine is not None and self.engine.created_qdisc),
        }
