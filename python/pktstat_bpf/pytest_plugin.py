"""pytest plugin (entry point ``pktstat_bpf``): the ``traffic`` fixture.

::

    def test_client_stays_local(traffic):
        with traffic.capture(iface="lo"):
            run_client()
        traffic.only_to(["127.0.0.1"])
        traffic.at_most(bytes=64_000, dst_port=8080)

    @pytest.mark.traffic(iface="lo")          # or: capture the whole test
    def test_whole_body(traffic):
        run_client()
        traffic.only_to(["127.0.0.0/8"])       # stops the capture, then checks

A failed budget raises :class:`~pktstat_bpf.views.budget.BudgetExceeded` (an
``AssertionError``), so pytest reports the test as failed and shows the
offending flows. Where BPF programs cannot be loaded (not root, no BPF),
tests using the fixture are skipped with the reason (a project that must
not skip turns skips into failures in its own conftest.py).

The plugin is registered through the ``pytest11`` entry point, so installing
the package is enough; ``-p no:pktstat_bpf`` turns it off.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Iterable, Iterator

import pytest

from .core.capture import Capture, capture
from .core.errors import FeatureMissingError, PrivilegeError
from .core.snapshot import Snapshot
from .views import budget


class Traffic:
    """What the ``traffic`` fixture yields: one capture at a time and the
    budget checks of :mod:`pktstat_bpf.views.budget` on its snapshot.

    Outside a ``with traffic.capture(...)`` block the checks use the
    capture's final snapshot (ending a ``@pytest.mark.traffic`` capture
    first); inside one, a live reading.
    """

    def __init__(self) -> None:
        self._cap: Capture | None = None
        self._ctx: Any = None
        self._in_block = False

    def capture(self, iface: str | None = None, mode: str = "tc", **options: Any) -> _Block:
        """Start capturing (see :func:`pktstat_bpf.capture`); use the result
        as a context manager to capture a block. A capture still running is
        ended first (its snapshot is replaced by the new one's)."""
        self._finish()
        ctx = capture(iface, mode, **options)
        try:
            self._cap = ctx.__enter__()
        except (PrivilegeError, FeatureMissingError) as e:
            pytest.skip(f"pktstat_bpf cannot capture here: {e}")
        self._ctx = ctx
        return _Block(self)

    def _finish(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)

    @property
    def running(self) -> bool:
        """True while a capture is counting."""
        return self._ctx is not None

    def snapshot(self) -> Snapshot:
        """Inside a capture block, the counters now; otherwise the capture's
        final snapshot (a marker's capture is ended by the first call)."""
        if self._cap is None:
            raise RuntimeError("no capture yet: use traffic.capture(...) or @pytest.mark.traffic")
        if not self._in_block:
            self._finish()
        return self._cap.snapshot()

    def select(self, **filters: Any) -> list[dict[str, Any]]:
        """The flows matching `filters` (see :func:`pktstat_bpf.views.budget.select`)."""
        return budget.select(self.snapshot(), **filters)

    def only_to(self, allowed: Iterable[str], *, direction: str = "egress") -> None:
        """See :func:`pktstat_bpf.views.budget.only_to`."""
        budget.only_to(self.snapshot(), allowed, direction=direction)

    def at_most(self, **limits_and_filters: Any) -> None:
        """See :func:`pktstat_bpf.views.budget.at_most`."""
        budget.at_most(self.snapshot(), **limits_and_filters)

    def nothing(self, **filters: Any) -> None:
        """See :func:`pktstat_bpf.views.budget.nothing`."""
        budget.nothing(self.snapshot(), **filters)


class _Block:
    """``with traffic.capture(...) as cap:`` — ends the capture on exit."""

    def __init__(self, traffic: Traffic) -> None:
        self._t = traffic

    def __enter__(self) -> Capture:
        assert self._t._cap is not None
        self._t._in_block = True
        return self._t._cap

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._t._in_block = False
        self._t._finish()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "traffic(iface=None, mode='tc', **options): capture the test body's traffic for the traffic fixture",
    )


@pytest.fixture
def traffic(request: pytest.FixtureRequest) -> Iterator[Traffic]:
    """Measure a test's network traffic and assert budgets on it."""
    t = Traffic()
    marker = request.node.get_closest_marker("traffic")
    if marker is not None:
        t.capture(*marker.args, **marker.kwargs)
    try:
        yield t
    finally:
        t._finish()
