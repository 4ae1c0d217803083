"""The pytest plugin, tested with pytest's own ``pytester``: inner test files
run in a fresh pytest process that finds the plugin through its entry point
(nothing is passed with ``-p``), and their outcomes and reports are checked."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

INNER = textwrap.dedent(
    """
    import socket
    import pytest
    from pktstat_bpf.views.budget import BudgetExceeded

    FRAME = 14 + 20 + 8 + 20  # Ethernet, IPv4, UDP, 20 bytes

    def _send(dst, n, port=9):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(n):
                s.sendto(b"x" * 20, (dst, port))
            return s.getsockname()[1]

    def test_block_within_budget(traffic):
        with traffic.capture(iface="lo") as cap:
            sport = _send("127.0.0.1", 3)
            assert cap.status["running"] and traffic.running
        assert not traffic.running
        traffic.only_to(["127.0.0.1"])
        traffic.at_most(packets=3, bytes=3 * FRAME, dst_port=9, proto="UDP")
        traffic.nothing(dst_port=443)
        (f,) = traffic.select(dst_port=9, direction="egress")
        assert (f["srcPort"], f["packets"], f["bytes"]) == (sport, 3, 3 * FRAME)
        with pytest.raises(BudgetExceeded):
            traffic.at_most(packets=2, dst_port=9)

    def test_live_reading_inside_the_block(traffic):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with traffic.capture(iface="lo"):
                s.sendto(b"x" * 20, ("127.0.0.1", 9))
                s.sendto(b"x" * 20, ("127.0.0.1", 9))
                (live,) = traffic.select(dst_port=9, direction="egress")
                assert traffic.running  # a reading inside the block does not end the capture
                s.sendto(b"x" * 20, ("127.0.0.1", 9))
        (final,) = traffic.select(dst_port=9, direction="egress")
        assert (live["packets"], final["packets"]) == (2, 3)

    @pytest.mark.traffic(iface="lo")
    def test_marker_over_budget(traffic):
        _send("127.0.0.2", 2)
        traffic.only_to(["127.0.0.1"])

    @pytest.mark.traffic(iface="lo")
    def test_marker_bytes_budget(traffic):
        _send("127.0.0.1", 5)
        traffic.at_most(bytes=100, dst_port=9)

    def test_no_capture_yet(traffic):
        traffic.nothing()
    """
)


def test_traffic_fixture_counts_and_budgets(pytester: pytest.Pytester, netns) -> None:
    """In a fresh namespace, so the loopback carries only the inner tests' traffic."""
    pytester.makepyfile(test_inner=INNER)
    with netns.in_a():  # the inner pytest process inherits the namespace
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*BudgetExceeded: 2 packets went to destinations outside 127.0.0.1/32:",
            "*  UDP 127.0.0.1:* -> 127.0.0.2:9 egress packets=2 bytes=124",
            "*BudgetExceeded: dst_port=9: 310 bytes, budget 100:",
            "*RuntimeError: no capture yet: use traffic.capture(...) or @pytest.mark.traffic",
            "PASSED test_inner.py::test_block_within_budget",
            "PASSED test_inner.py::test_live_reading_inside_the_block",
            "FAILED test_inner.py::test_marker_over_budget - *",
            "FAILED test_inner.py::test_marker_bytes_budget - *",
        ],
        consecutive=False,
    )
    assert not netns.ours_attached("lo")  # every capture detached


def test_registered_through_the_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.traffic(iface=None, mode='tc', **options): capture the test body*"]
    )
    assert result.ret == 0
    result = pytester.runpytest_subprocess("--fixtures")
    result.stdout.fnmatch_lines(
        ["traffic -- *pktstat_bpf*pytest_plugin.py:*", "    Measure a test's network traffic*"]
    )
    off = pytester.runpytest_subprocess("-p", "no:pktstat_bpf", "--markers")
    assert "pytest.mark.traffic" not in off.stdout.str()


UNPRIVILEGED = textwrap.dedent(
    """
    import pytest

    def test_block(traffic):
        with traffic.capture(iface="lo"):
            pass

    @pytest.mark.traffic(iface="lo")
    def test_marker(traffic):
        traffic.nothing()
    """
)


# The project's skip policy (tests/conftest.py), for an inner pytest run.
PROJECT_POLICY = textwrap.dedent(
    f"""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pktstat_tests_conftest", {str(Path(__file__).parent / "conftest.py")!r})
    project = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(project)
    pytest_runtest_makereport = project.pytest_runtest_makereport
    pytest_make_collect_report = project.pytest_make_collect_report
    """
)


@pytest.mark.parametrize("require_all", [False, True])
def test_without_privilege_the_fixture_skips_or_with_require_all_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, bpf, require_all: bool
) -> None:
    """The inner pytest runs with every capability dropped (still uid 0, so
    it can read the interpreter and the test files), so loading the BPF
    programs really is refused. The plugin skips; under the project's own
    policy (tests/conftest.py) with PKTSTAT_BPF_REQUIRE_ALL=1, as in CI, the
    skip is a failure."""
    pytester.makepyfile(test_unprivileged=UNPRIVILEGED)
    pytester.makeconftest(PROJECT_POLICY)
    if require_all:
        monkeypatch.setenv("PKTSTAT_BPF_REQUIRE_ALL", "1")
    else:
        monkeypatch.delenv("PKTSTAT_BPF_REQUIRE_ALL", raising=False)
    result = pytester.run(
        "setpriv",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--no-new-privs",
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-rs",
        "test_unprivileged.py",
        timeout=120,
    )
    denied = "cannot load the BPF programs: permission denied"
    if require_all:
        result.assert_outcomes(failed=1, errors=1)
        result.stdout.fnmatch_lines(
            [f"*skip not allowed with PKTSTAT_BPF_REQUIRE_ALL=1: *pktstat_bpf cannot capture here: {denied}*"]
        )
    else:
        result.assert_outcomes(skipped=2)
        skipped = f"SKIPPED [[]1[]] *: pktstat_bpf cannot capture here: {denied}; run as root*"
        result.stdout.fnmatch_lines([skipped, skipped])  # the marker's capture, and the block's
