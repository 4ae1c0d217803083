"""What every output (final report, TUI, streams) does to flows before they
are rendered: keep only external destinations (``--external``) and name pod
addresses (``--kubeconfig``). One implementation, applied the same way to a
Snapshot or to an Interval."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import render
from .filters import DEFAULT_INTERNAL, NetworkSet
from .live import Interval
from .snapshot import Snapshot


@dataclass
class View:
    """`external`: keep only flows whose destination is outside these
    networks. `pods`: a started :class:`~pktstat_bpf.kube.PodCache` (or any
    object with ``label(ips) -> array``) that adds ``src_pod``/``dst_pod``
    columns."""

    external: NetworkSet | None = None
    pods: Any = None

    def mask(self, snap: Snapshot) -> np.ndarray | None:
        if self.external is None:
            return None
        return self.external.external(snap.records)

    def _label(self, snap: Snapshot) -> Snapshot:
        if self.pods is None:
            return snap
        r = snap.records
        return snap.with_columns(
            src_pod=self.pods.label(render.addr_strings(r["saddr"], r["ipver"])),
            dst_pod=self.pods.label(render.addr_strings(r["daddr"], r["ipver"])),
        )

    def apply(self, snap: Snapshot) -> Snapshot:
        m = self.mask(snap)
        return self._label(snap if m is None else snap.take(m))

    def apply_interval(self, iv: Interval) -> Interval:
        m = self.mask(iv.delta)
        if m is not None:
            iv = Interval(iv.index, iv.delta.take(m), iv.cumulative.take(m), iv.active[m], iv.recent[m])
        if self.pods is not None:
            iv = dataclasses.replace(iv, delta=self._label(iv.delta), cumulative=self._label(iv.cumulative))
        return iv

    def close(self) -> None:
        if self.pods is not None:
            self.pods.stop()

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The view flags, shared by every output."""
    p.add_argument(
        "--external", action="store_true",
        help="show only flows whose destination is outside --internal-networks",
    )  # fmt: skip
    p.add_argument(
        "--internal-networks", metavar="CIDR,...", default=",".join(DEFAULT_INTERNAL),
        help="networks --external treats as internal (default: loopback, RFC 1918, "
        "IPv6 loopback, link-local and ULA)",
    )  # fmt: skip
    p.add_argument(
        "--kubeconfig", metavar="PATH",
        help="name pod addresses namespace/pod from this cluster (list + watch; needs pktstat-bpf[kube])",
    )  # fmt: skip


def check_arguments(args: argparse.Namespace) -> None:
    """Validate what can be validated without side effects (exit 2 on bad
    input): the CIDR list."""
    args.internal = NetworkSet.parse(args.internal_networks)


def view_from_args(args: argparse.Namespace) -> View:
    """The View the flags ask for; starts the pod cache (one list call)."""
    pods = None
    if args.kubeconfig:
        from .kube import PodCache

        pods = PodCache(args.kubeconfig).start()
    return View(external=args.internal if args.external else None, pods=pods)
