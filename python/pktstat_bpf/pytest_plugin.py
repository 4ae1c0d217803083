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

Where BPF programs cannot be loaded (not root, no BPF), tests using the
fixture are skipped with the reason; set PKTSTAT_BPF_REQUIRE_ALL=1 to make that
an error instead.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

from . import budget
from .capture import Capture, capture
from .errors import FeatureMissingError, PrivilegeError
from .snapshot import Snapshot


class Traffic:
    """What the ``traffic`` fixture yields."""

    def __init__(self) -> None:
        self._cap: Capture | None = None
        self._ctx: Any = None

    def capture(self, iface: str | None = None, mode: str = "tc", **options: Any):
        """Capture the traffic of a ``with`` block (see pktstat_bpf.capture)."""
        self._finish()
        self._ctx = capture(iface, mode, **options)
        try:
            self._cap = self._ctx.__enter__()
        except (PrivilegeError, FeatureMissingError) as e:
            self._ctx = None
            if os.environ.get("PKTSTAT_BPF_REQUIRE_ALL") == "1":
                raise
            pytest.skip(f"pktstat_bpf cannot capture here: {e}")
        return _Block(self)

    def _finish(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)

    def snapshot(self) -> Snapshot:
        """The capture's snapshot (final once its block or the test ended)."""
        if self._cap is None:
            raise RuntimeError("no capture yet: use traffic.capture(...) or @pytest.mark.traffic")
        self._finish()
        return self._cap.snapshot()

    def select(self, **filters: Any) -> list[dict[str, Any]]:
        return budget.select(self.snapshot(), **filters)

    def only_to(self, allowed, **kw: Any) -> None:
        budget.only_to(self.snapshot(), allowed, **kw)

    def at_most(self, **kw: Any) -> None:
        budget.at_most(self.snapshot(), **kw)

    def nothing(self, **filters: Any) -> None:
        budget.nothing(self.snapshot(), **filters)


class _Block:
    def __init__(self, traffic: Traffic) -> None:
        self._t = traffic

    def __enter__(self) -> Capture:
        assert self._t._cap is not None
        return self._t._cap

    def __exit__(self, *exc: object) -> None:
        self._t._finish()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "traffic(iface=None, mode='tc', **options): capture the test body's traffic for the traffic fixture"
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
