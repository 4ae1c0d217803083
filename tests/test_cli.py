"""CLI behaviour that needs no traffic: flags, bad input, exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pktstat_bpf
import pytest
from netns import sh
from pktstat_bpf.cli import main
from pktstat_bpf.cli.options import parse_args


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["-t", "10x"], "argument -t/--timeout: invalid duration '10x': expected e.g. 10s, 1m30s, 500ms"),
        (["--timeout=-5s"], "argument -t/--timeout: invalid duration '-5s': must not be negative"),
        (["-t"], "argument -t/--timeout: expected one argument"),
        (["--max-entries", "0"], "--max-entries must be positive, not 0"),
        (["--max-entries", "-5"], "--max-entries must be positive, not -5"),
        (["--max-entries", "abc"], "argument --max-entries: expected an integer, not 'abc'"),
        (["--max-entries", str(1 << 40)], f"--max-entries {1 << 40} is too large (at most 67108864)"),
        (
            ["--tc-attach", "bogus"],
            "argument --tc-attach: invalid choice: 'bogus' (choose from 'auto', 'tcx', 'legacy')",
        ),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["-i", "nope0", "-t", "1s"], "no such network interface: 'nope0'"),
        (["-i", "a/b", "-t", "1s"], "invalid interface name 'a/b'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = run(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"pktstat-bpf: error: {message}\n"
    assert r.stdout == ""


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.startswith(f"pktstat-bpf {pktstat_bpf.__version__} (libbpf v1.")


@pytest.mark.parametrize("flag", ["-?", "-h", "--help"])
def test_help_lists_flags_and_exit_codes(flag):
    r = run(flag)
    assert r.returncode == 0
    for f in (
        "-i IFACE, --iface IFACE",
        "-t DURATION, --timeout DURATION",
        "-j, --json",
        "--max-entries N",
        "--version",
        "77 insufficient privilege",
    ):
        assert f in r.stdout


def test_defaults_match_pktstat_bpf():
    a = parse_args([])
    assert a.timeout == 600.0 and a.json is False and a.max_entries == 65536 and a.iface is None


def test_main_returns_exit_code_without_exiting(capsys):
    assert main(["--max-entries", "0"]) == 2
    assert capsys.readouterr().err == "pktstat-bpf: error: --max-entries must be positive, not 0\n"


def _world_usable(path: str) -> bool:
    p = Path(path).resolve()
    for d in [p, *p.parents]:
        mode = d.stat().st_mode
        if d != p and not mode & stat.S_IXOTH:
            return False
    return bool(p.stat().st_mode & stat.S_IROTH)


def _unprivileged_python() -> str:
    """A Python 3.X interpreter the user nobody can run (the venv's may live
    under /root, which nobody cannot enter)."""
    if _world_usable(sys.executable):
        return sys.executable
    system = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    if os.path.exists(system) and _world_usable(system):
        return system
    pytest.skip("no Python interpreter that user nobody can execute")


def test_unprivileged_user_gets_exit_77_and_nothing_attached(bpf):
    site = str(Path(pktstat_bpf.__file__).parent.parent)
    if not _world_usable(site):
        pytest.skip(f"{site} is not readable by user nobody")
    r = subprocess.run(
        [
            "setpriv",
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            _unprivileged_python(),
            "-m",
            "pktstat_bpf",
            "-i",
            "lo",
            "-t",
            "1s",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": site, "PATH": "/usr/bin:/bin", "HOME": "/"},
    )
    assert r.returncode == 77, r.stderr
    assert r.stderr == (
        "pktstat-bpf: error: cannot load the BPF programs: permission denied; "
        "run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON\n"
    )
    assert "Traceback" not in r.stderr


def test_default_interface_is_the_default_routes(netns):
    """Without -i: the interface of the IPv4 default route of lowest metric,
    else IPv6's, else the first interface that is up; the CLI counts there."""
    ns = netns
    sh("ip", "link", "add", "pbtdummy0", "type", "veth", "peer", "name", "pbtdummy1", netns=ns.ns_a)
    for dev in ("pbtdummy0", "pbtdummy1"):
        sh("ip", "link", "set", dev, "up", netns=ns.ns_a)

    def detected() -> str:
        code = "from pktstat_bpf.core.iface import default_interface as d; print(d())"
        return sh(sys.executable, "-c", code, netns=ns.ns_a).stdout.strip()

    assert detected() == "va"  # no route: the first interface that is up (va was made first)
    sh("ip", "-6", "route", "add", "default", "dev", "pbtdummy0", netns=ns.ns_a)
    assert detected() == "pbtdummy0"  # IPv6 only
    sh("ip", "route", "add", "default", "dev", "pbtdummy0", "metric", "200", netns=ns.ns_a)
    sh("ip", "route", "add", "default", "via", ns.B4, "dev", "va", "metric", "100", netns=ns.ns_a)
    assert detected() == "va"  # IPv4 first, lowest metric
    r = subprocess.run(
        ["ip", "netns", "exec", ns.ns_a, sys.executable, "-m", "pktstat_bpf", "-t", "200ms", "-j"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("pktstat-bpf: counting on va via ")
    assert json.loads(r.stdout)["iface"] == "va"


def test_json_array_is_the_bare_array_pktstat_bpf_prints(bpf):
    """--json-array: the flows of -j's report, as pktstat-bpf's top-level
    array (jq '.[]' works unchanged); nothing else on stdout."""
    import json

    pcap = str(Path(__file__).parent / "data" / "office.pcap")
    wrapped, bare = run("--pcap", pcap, "-j"), run("--pcap", pcap, "--json-array")
    assert (wrapped.returncode, bare.returncode, bare.stderr) == (0, 0, "")
    flows = json.loads(bare.stdout)
    assert isinstance(flows, list) and flows == json.loads(wrapped.stdout)["flows"] and len(flows) > 1
    assert all(
        {"srcIp", "dstIp", "proto", "srcPort", "dstPort", "bytes", "packets", "bitrate"} <= f.keys()
        for f in flows
    )
