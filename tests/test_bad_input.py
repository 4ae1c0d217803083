"""Bad input, tried: every flag of the real CLI (run as a subprocess) with a
missing value, a garbage value, a name of something that does not exist, a
file where a directory is expected and a directory where a file is, empty
and garbage capture files, --max-entries 0, negative and too large, an
unprivileged user, and kernel features missing (simulated with
PKTSTAT_BPF_TEST_FAULTS=missing=..., the test seam, see docs/testing.md). Each case must end with
exactly one line on stderr, the documented exit code (README and docs/cli.md, "Exit codes"),
nothing on stdout, and nothing attached afterwards: the live cases run in a
test namespace (-i va) or on a test cgroup, which are checked after each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pktstat_bpf
import pytest
from cgroups import TestCgroup, cgroup2_mount
from kstate import cgroup_programs, xdp_prog
from netns import NetnsPair
from pktstat_bpf.core.modes.cgroup import cgroup2_mounts
from test_cli import _unprivileged_python, _world_usable
from traffic import ETH, IP4, UDP, send_udp

PRIV = "cannot load the BPF programs: permission denied; run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
NO_BPF = "cannot load the BPF programs: this kernel has no bpf() system call (CONFIG_BPF_SYSCALL)"
DURATION = "expected e.g. 10s, 1m30s, 500ms"
CIDR = "(expected a CIDR such as 10.0.0.0/8 or fd00::/8)"
IPFIX = "expected HOST:PORT, [IPV6]:PORT, or tcp://HOST:PORT"
LISTEN = "(expected ADDR:PORT or PORT, e.g. 127.0.0.1:9100, 0.0.0.0:9100 or [::1]:9100)"


class World:
    """What the cases run against: namespace A of a veth pair (the CLI runs
    there, so -i va, or the default interface, is a test interface), a test
    cgroup, and files of every wrong kind."""

    def __init__(self, tmp: Path) -> None:
        self.ns = NetnsPair(ipv6=False)
        self.cg = TestCgroup() if cgroup2_mount() else None
        # world-readable (user nobody reads the capture from here)
        self.dir = Path(tempfile.mkdtemp(prefix="pbt-bad-"))
        os.chmod(self.dir, 0o755)
        (self.dir / "empty.pcap").write_bytes(b"")
        (self.dir / "garbage.pcap").write_bytes(b"hello, world\n" * 10)
        (self.dir / "short.pcap").write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00")
        (self.dir / "afile").write_text("x\n")
        (self.dir / "adir").mkdir()
        (self.dir / "kc.empty").write_bytes(b"")
        (self.dir / "kc.bad").write_text("garbage: [\n")
        (self.dir / "kc.bin").write_bytes(b"\x00\xff\xfe")
        shutil.copy(
            Path(__file__).parent.parent / "fuzz" / "regressions" / "raw-ip-empty-record.pcap",
            self.dir / "one.pcap",
        )
        for p in self.dir.iterdir():
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        self.where = ", ".join(m for m, _ in cgroup2_mounts())

    def paths(self) -> dict[str, str]:
        return {"d": str(self.dir), "cg": self.cg.root if self.cg else "", "mounts": self.where}

    def run(
        self, argv: list[str], *, host: bool = False, env: dict | None = None, nobody: bool = False
    ) -> subprocess.CompletedProcess:
        """The CLI with `argv`: in namespace A (host=True: in this one, as
        cgroup paths are not visible under `ip netns exec`, which remounts
        /sys), as root or as user nobody."""
        if nobody:
            site = str(Path(pktstat_bpf.__file__).parent.parent)
            if not _world_usable(site):
                pytest.skip(f"{site} is not readable by user nobody")
            cmd = [
                "setpriv",
                "--reuid",
                "nobody",
                "--regid",
                "nogroup",
                "--clear-groups",
                _unprivileged_python(),
            ]
            full_env = {"PYTHONPATH": site, "PATH": "/usr/bin:/bin", "HOME": "/"}
        else:
            cmd, full_env = [sys.executable], dict(os.environ)
        full_env.update(env or {})
        cmd = [*cmd, "-m", "pktstat_bpf", *argv]
        if not host:
            cmd = ["ip", "netns", "exec", self.ns.ns_a, *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=full_env, timeout=60
        )

    def nothing_attached(self) -> bool:
        return (
            not self.ns.ours_attached()
            and xdp_prog(self.ns) is None
            and "clsact" not in self.ns.tc_state()["qdisc"]
            and (self.cg is None or cgroup_programs(self.cg.root) == [])
        )

    def destroy(self) -> None:
        self.ns.destroy()
        if self.cg:
            self.cg.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def world(bpf, tmp_path_factory):
    w = World(tmp_path_factory.mktemp("bad"))
    yield w
    w.destroy()


# (id, argv, exit code, message) -- placeholders: {d} the files, {cg} the test cgroup,
# {mounts} where cgroup v2 is mounted. Cases whose id starts with "cgroup" run on the host.
FLAGS = [
    # -i/--iface
    ("iface-missing", ["-i"], 2, "argument -i/--iface: expected one argument"),
    ("iface-unknown", ["-i", "nope0"], 2, "no such network interface: 'nope0'"),
    ("iface-empty", ["-i", ""], 2, "invalid interface name ''"),
    ("iface-too-long", ["-i", "a" * 16], 2, f"invalid interface name '{'a' * 16}'"),
    ("iface-a-path", ["-i", "{d}/afile"], 2, "invalid interface name '{d}/afile'"),
    # -t/--timeout
    ("timeout-missing", ["-t"], 2, "argument -t/--timeout: expected one argument"),
    ("timeout-garbage", ["-t", "10x"], 2, f"argument -t/--timeout: invalid duration '10x': {DURATION}"),
    ("timeout-empty", ["-t", ""], 2, f"argument -t/--timeout: invalid duration '': {DURATION}"),
    (
        "timeout-negative",
        ["-t=-5s"],
        2,
        "argument -t/--timeout: invalid duration '-5s': must not be negative",
    ),
    (
        "timeout-huge",
        ["-t", "99999999999h"],
        2,
        "argument -t/--timeout: invalid duration '99999999999h': longer than 876000h (100 years)",
    ),
    # -j/--json takes no value
    ("json-value", ["-j", "extra"], 2, "unrecognized arguments: extra"),
    # --max-entries
    ("max-entries-missing", ["--max-entries"], 2, "argument --max-entries: expected one argument"),
    ("max-entries-zero", ["--max-entries", "0"], 2, "--max-entries must be positive, not 0"),
    ("max-entries-negative", ["--max-entries", "-1"], 2, "--max-entries must be positive, not -1"),
    (
        "max-entries-garbage",
        ["--max-entries", "abc"],
        2,
        "argument --max-entries: expected an integer, not 'abc'",
    ),
    (
        "max-entries-fraction",
        ["--max-entries", "1.5"],
        2,
        "argument --max-entries: expected an integer, not '1.5'",
    ),
    ("max-entries-empty", ["--max-entries", ""], 2, "argument --max-entries: expected an integer, not ''"),
    (
        "max-entries-huge",
        ["--max-entries", str(1 << 40)],
        2,
        f"--max-entries {1 << 40} is too large (at most 67108864)",
    ),
    # the lifetime table: --idle-timeout, --active-timeout, --max-flows
    ("idle-timeout-missing", ["--idle-timeout"], 2, "argument --idle-timeout: expected one argument"),
    (
        "idle-timeout-garbage",
        ["--idle-timeout", "soon"],
        2,
        f"argument --idle-timeout: invalid duration 'soon': {DURATION}",
    ),
    ("active-timeout-missing", ["--active-timeout"], 2, "argument --active-timeout: expected one argument"),
    (
        "active-timeout-garbage",
        ["--active-timeout", "1x"],
        2,
        f"argument --active-timeout: invalid duration '1x': {DURATION}",
    ),
    ("max-flows-missing", ["--max-flows"], 2, "argument --max-flows: expected one argument"),
    ("max-flows-zero", ["--max-flows", "0"], 2, "--max-flows must be an integer from 1 to 4294967294, not 0"),
    (
        "max-flows-huge",
        ["--max-flows", str(1 << 32)],
        2,
        f"--max-flows must be an integer from 1 to 4294967294, not {1 << 32}",
    ),
    (
        "max-flows-garbage",
        ["--max-flows", "many"],
        2,
        "argument --max-flows: expected an integer, not 'many'",
    ),
    # --tc-attach
    ("tc-attach-missing", ["--tc-attach"], 2, "argument --tc-attach: expected one argument"),
    (
        "tc-attach-garbage",
        ["--tc-attach", "bogus"],
        2,
        "argument --tc-attach: invalid choice: 'bogus' (choose from 'auto', 'tcx', 'legacy')",
    ),
    (
        "tc-attach-with-xdp",
        ["-x", "--tc-attach", "legacy"],
        2,
        "--tc-attach chooses how TC mode attaches: drop it with -x/--xdp",
    ),
    (
        "tc-attach-with-cgroup",
        ["-c", "/sys/fs/cgroup", "--tc-attach", "tcx"],
        2,
        "--tc-attach chooses how TC mode attaches: drop it with -c/--cgroup",
    ),
    (
        "tc-attach-with-kprobes",
        ["-k", "--tc-attach", "legacy"],
        2,
        "--tc-attach chooses how TC mode attaches: drop it with -k/--kprobes",
    ),
    # --no-tcp-health
    (
        "no-tcp-health-with-value",
        ["--no-tcp-health=yes"],
        2,
        "argument --no-tcp-health: ignored explicit argument 'yes'",
    ),
    (
        "no-tcp-health-with-kprobes",
        ["-k", "--no-tcp-health"],
        2,
        "--no-tcp-health applies to TC, XDP and --pcap: the socket modes track no TCP health",
    ),
    # --no-arp
    ("no-arp-with-value", ["--no-arp=yes"], 2, "argument --no-arp: ignored explicit argument 'yes'"),
    (
        "no-arp-with-kprobes",
        ["-k", "--no-arp"],
        2,
        "--no-arp applies to TC, XDP and --pcap: sockets see no ARP",
    ),
    (
        "no-arp-with-cgroup",
        ["-c", "/sys/fs/cgroup", "--no-arp"],
        2,
        "--no-arp applies to TC, XDP and --pcap: sockets see no ARP",
    ),
    # -x, --xdp_mode
    ("xdp-mode-missing", ["--xdp_mode"], 2, "argument --xdp_mode/--xdp-mode: expected one argument"),
    (
        "xdp-mode-garbage",
        ["--xdp_mode", "bogus"],
        2,
        (
            "argument --xdp_mode/--xdp-mode: invalid choice: 'bogus' "
            "(choose from 'auto', 'native', 'generic', 'offload')"
        ),
    ),
    (
        "xdp-offload-on-veth",
        ["-x", "--xdp_mode", "offload"],
        69,
        (
            "XDP offload: the driver of va cannot run this "
            "program on the NIC (load BPF object xdp_bpf: Invalid argument); use --xdp_mode native or generic"
        ),
    ),
    ("xdp-value", ["-x", "yes"], 2, "unrecognized arguments: yes"),
    # -c/--cgroup
    ("cgroup-missing", ["-c"], 2, "argument -c/--cgroup: expected one argument"),
    ("cgroup-empty", ["-c", ""], 2, "-c/--cgroup needs the path of a cgroup v2 directory"),
    (
        "cgroup-nonexistent",
        ["-c", "{d}/nope"],
        2,
        "no such cgroup: '{d}/nope' does not exist (cgroup v2 is mounted at {mounts})",
    ),
    (
        "cgroup-a-file",
        ["-c", "{d}/afile"],
        2,
        "'{d}/afile' is not a directory: give a cgroup v2 directory (cgroup v2 is mounted at {mounts})",
    ),
    (
        "cgroup-a-cgroup-file",
        ["-c", "{cg}/cgroup.procs"],
        2,
        "'{cg}/cgroup.procs' is not a directory: give a cgroup v2 directory (cgroup v2 is mounted at {mounts})",
    ),
    (
        "cgroup-not-cgroupfs",
        ["-c", "{d}/adir"],
        2,
        "'{d}/adir' is not a cgroup v2 directory (cgroup v2 is mounted at {mounts})",
    ),
    ("cgroup-and-xdp", ["-x", "-c", "{cg}"], 2, "-x/--xdp and -c/--cgroup are different modes: choose one"),
    (
        "cgroup-and-iface",
        ["-c", "{cg}", "-i", "va"],
        2,
        "-c/--cgroup counts sockets, not an interface: drop -i/--iface",
    ),
    # -k/--kprobes, --process-backend
    ("kprobes-value", ["-k", "yes"], 2, "unrecognized arguments: yes"),
    (
        "kprobes-and-iface",
        ["-k", "-i", "va"],
        2,
        "-k/--kprobes counts the sockets of every process, not an interface: drop -i/--iface",
    ),
    ("kprobes-and-xdp", ["-k", "-x"], 2, "-x/--xdp and -k/--kprobes are different modes: choose one"),
    (
        "kprobes-and-cgroup",
        ["-k", "-c", "{d}/adir"],
        2,
        "-c/--cgroup and -k/--kprobes are different modes: choose one",
    ),
    (
        "process-backend-missing",
        ["-k", "--process-backend"],
        2,
        "argument --process-backend: expected one argument",
    ),
    (
        "process-backend-garbage",
        ["-k", "--process-backend", "bogus"],
        2,
        (
            "argument --process-backend: invalid "
            "choice: 'bogus' (choose from 'auto', 'tracepoint', 'fentry', 'kprobe')"
        ),
    ),
    (
        "process-backend-alone",
        ["--process-backend", "fentry"],
        2,
        "--process-backend chooses the hooks of process mode: use it with -k/--kprobes",
    ),
    # --drops
    ("drops-value", ["--drops", "yes"], 2, "unrecognized arguments: yes"),
    (
        "drops-with-pcap",
        ["--pcap", "{d}/one.pcap", "--drops"],
        2,
        "--pcap replays a file: --drops watches the kernel's live drops only",
    ),
    # --pcap
    ("pcap-missing", ["--pcap"], 2, "argument --pcap: expected one argument"),
    ("pcap-nonexistent", ["--pcap", "{d}/nope.pcap"], 2, "{d}/nope.pcap: No such file or directory"),
    ("pcap-a-directory", ["--pcap", "{d}/adir"], 2, "{d}/adir: Is a directory"),
    ("pcap-under-a-file", ["--pcap", "{d}/afile/x.pcap"], 2, "{d}/afile/x.pcap: Not a directory"),
    (
        "pcap-empty",
        ["--pcap", "{d}/empty.pcap"],
        1,
        "{d}/empty.pcap: empty file, not a pcap or pcapng capture",
    ),
    (
        "pcap-garbage-header",
        ["--pcap", "{d}/garbage.pcap"],
        1,
        "{d}/garbage.pcap: not a pcap or pcapng capture (unknown file format)",
    ),
    (
        "pcap-short-header",
        ["--pcap", "{d}/short.pcap"],
        1,
        (
            "{d}/short.pcap: not a pcap or pcapng capture "
            "(truncated dump file; tried to read 24 file header bytes, only got 2)"
        ),
    ),
    (
        "pcap-a-device",
        ["--pcap", "/dev/null"],
        1,
        (
            "/dev/null: not a pcap or pcapng capture "
            "(truncated dump file; tried to read 4 file header bytes, only got 0)"
        ),
    ),
    (
        "pcap-empty-stdin",
        ["--pcap", "-"],
        1,
        (
            "standard input: not a pcap or pcapng capture "
            "(truncated dump file; tried to read 4 file header bytes, only got 0)"
        ),
    ),
    (
        "pcap-and-iface",
        ["--pcap", "{d}/one.pcap", "-i", "va"],
        2,
        "--pcap replays a file: it takes no interface (-i)",
    ),
    (
        "pcap-and-tui",
        ["--pcap", "{d}/one.pcap", "-g"],
        2,
        "--pcap replays a file: -g/--tui shows live traffic only",
    ),
    (
        "pcap-and-xdp",
        ["--pcap", "{d}/one.pcap", "-x"],
        2,
        "--pcap replays a file through the TC program: drop -x/--xdp, -c/--cgroup and -k/--kprobes",
    ),
    (
        "pcap-and-kprobes",
        ["--pcap", "{d}/one.pcap", "-k"],
        2,
        "--pcap replays a file through the TC program: drop -x/--xdp, -c/--cgroup and -k/--kprobes",
    ),
    (
        "pcap-and-prometheus",
        ["--pcap", "{d}/one.pcap", "--prometheus", "9977"],
        2,
        "--pcap replays a file: --prometheus exports live counters only",
    ),
    (
        "pcap-max-entries-zero",
        ["--pcap", "{d}/one.pcap", "--max-entries", "0"],
        2,
        "--max-entries must be positive, not 0",
    ),
    # -g/--tui, -r/--refresh, the outputs
    (
        "tui-without-terminal",
        ["-g"],
        2,
        "-g/--tui needs a terminal (use --jsonl or --plain to stream into a pipe)",
    ),
    ("refresh-missing", ["-r"], 2, "argument -r/--refresh: expected one argument"),
    ("refresh-garbage", ["-r", "abc"], 2, f"argument -r/--refresh: invalid duration 'abc': {DURATION}"),
    ("refresh-zero", ["-r", "0"], 2, "-r/--refresh must be at least 10ms, not 0s"),
    ("refresh-too-short", ["-r", "5ms"], 2, "-r/--refresh must be at least 10ms, not 0.005s"),
    (
        "refresh-huge",
        ["-r", "99999999999h"],
        2,
        "argument -r/--refresh: invalid duration '99999999999h': longer than 876000h (100 years)",
    ),
    ("json-and-jsonl", ["-j", "--jsonl"], 2, "choose one output: -j/--json or --jsonl"),
    ("jsonl-and-plain", ["--jsonl", "--plain"], 2, "choose one output: --jsonl or --plain"),
    ("json-and-json-array", ["-j", "--json-array"], 2, "choose one output: -j/--json or --json-array"),
    ("json-array-value", ["--json-array=yes"], 2, "argument --json-array: ignored explicit argument 'yes'"),
    (
        "conversations-value",
        ["--conversations=yes"],
        2,
        "argument --conversations: ignored explicit argument 'yes'",
    ),
    (
        "conversations-and-prometheus",
        ["--conversations", "--prometheus", "9977"],
        2,
        "--conversations pairs the flows of the final report (text, -j, --json-array): "
        "drop -g/--tui, --jsonl, --plain, -u/--unique and --prometheus",
    ),
    ("tui-and-prometheus", ["-g", "--prometheus", "9977"], 2, "choose one output: -g/--tui or --prometheus"),
    (
        "unique-and-json",
        ["-u", "-j"],
        2,
        "-u/--unique streams lines: use it with --jsonl or --plain (the default)",
    ),
    ("jsonl-value", ["--jsonl", "yes"], 2, "unrecognized arguments: yes"),
    # --external, --internal-networks
    ("external-value", ["--external", "yes"], 2, "unrecognized arguments: yes"),
    ("internal-missing", ["--internal-networks"], 2, "argument --internal-networks: expected one argument"),
    ("internal-empty", ["--internal-networks", ""], 2, "--internal-networks: empty network in ''"),
    (
        "internal-bad-prefix",
        ["--internal-networks", "10.0.0.0/33"],
        2,
        f"--internal-networks: invalid network '10.0.0.0/33' {CIDR}",
    ),
    (
        "internal-garbage",
        ["--internal-networks", "garbage"],
        2,
        f"--internal-networks: invalid network 'garbage' {CIDR}",
    ),
    (
        "internal-bad-v6",
        ["--internal-networks", "::1/129"],
        2,
        f"--internal-networks: invalid network '::1/129' {CIDR}",
    ),
    # --kubeconfig
    ("kubeconfig-missing", ["--kubeconfig"], 2, "argument --kubeconfig: expected one argument"),
    ("kubeconfig-nonexistent", ["--kubeconfig", "{d}/nope"], 2, "--kubeconfig: no such file: '{d}/nope'"),
    (
        "kubeconfig-a-device",
        ["--kubeconfig", "/dev/zero"],
        2,
        "--kubeconfig: '/dev/zero' is not a regular file, so not a kubeconfig file",
    ),
    (
        "kubeconfig-a-directory",
        ["--kubeconfig", "{d}/adir"],
        2,
        "--kubeconfig: '{d}/adir' is a directory, not a kubeconfig file",
    ),
    (
        "kubeconfig-empty",
        ["--kubeconfig", "{d}/kc.empty"],
        2,
        "--kubeconfig: cannot use '{d}/kc.empty': Invalid kube-config. {d}/kc.empty file is empty",
    ),
    (
        "kubeconfig-garbage",
        ["--kubeconfig", "{d}/kc.bad"],
        2,
        "--kubeconfig: cannot use '{d}/kc.bad': while parsing a flow node",
    ),
    (
        "kubeconfig-binary",
        ["--kubeconfig", "{d}/kc.bin"],
        2,
        (
            "--kubeconfig: cannot use '{d}/kc.bin': 'utf-8' codec "
            "can't decode byte 0xff in position 1: invalid start byte"
        ),
    ),
    # --prometheus, --prometheus-top
    ("prometheus-missing", ["--prometheus"], 2, "argument --prometheus: expected one argument"),
    ("prometheus-garbage", ["--prometheus", "abc"], 2, f"--prometheus: invalid address 'abc' {LISTEN}"),
    (
        "prometheus-bad-port",
        ["--prometheus", "99999"],
        2,
        "--prometheus: invalid port '99999' (expected 0-65535)",
    ),
    (
        "prometheus-foreign-address",
        ["--prometheus", "192.0.2.1:9977"],
        2,
        "--prometheus: cannot listen on 192.0.2.1:9977: the address is not on this host",
    ),
    (
        "prometheus-unclosed-bracket",
        ["--prometheus", "[::1"],
        2,
        f"--prometheus: invalid address '[::1' {LISTEN}",
    ),
    (
        "prometheus-and-json",
        ["--prometheus", "9977", "-j"],
        2,
        "choose one output: -j/--json or --prometheus",
    ),
    ("prometheus-top-alone", ["--prometheus-top", "5"], 2, "--prometheus-top needs --prometheus"),
    (
        "prometheus-top-negative",
        ["--prometheus", "0", "--prometheus-top", "-1"],
        2,
        "--prometheus-top must be between 0 and 10000, not -1",
    ),
    (
        "prometheus-top-huge",
        ["--prometheus", "0", "--prometheus-top", "10001"],
        2,
        "--prometheus-top must be between 0 and 10000, not 10001",
    ),
    (
        "prometheus-top-garbage",
        ["--prometheus", "0", "--prometheus-top", "abc"],
        2,
        "argument --prometheus-top: expected an integer, not 'abc'",
    ),
    ("prometheus-names-alone", ["--prometheus-names"], 2, "--prometheus-names needs --prometheus"),
    (
        "prometheus-names-process-mode",
        ["-k", "--prometheus", "0", "--prometheus-names"],
        2,
        "--prometheus-names: -k/--kprobes flows carry no names (TC and XDP read them)",
    ),
    # --ipfix, --ipfix-transport, --ipfix-template-refresh, --ipfix-domain
    ("ipfix-missing", ["--ipfix"], 2, "argument --ipfix: expected one argument"),
    ("ipfix-garbage", ["--ipfix", "abc"], 2, f"--ipfix: invalid collector 'abc': {IPFIX}"),
    ("ipfix-no-host", ["--ipfix", ":4739"], 2, f"--ipfix: invalid collector ':4739': {IPFIX}"),
    (
        "ipfix-bad-port",
        ["--ipfix", "127.0.0.1:99999"],
        2,
        "--ipfix: invalid collector '127.0.0.1:99999': invalid port '99999' (expected 1-65535)",
    ),
    (
        "ipfix-unclosed-bracket",
        ["--ipfix", "[::1:4739"],
        2,
        f"--ipfix: invalid collector '[::1:4739': {IPFIX}",
    ),
    (
        "ipfix-bare-ipv6",
        ["--ipfix", "::1:4739"],
        2,
        "--ipfix: invalid collector '::1:4739': an IPv6 address goes in brackets: [IPV6]:PORT",
    ),
    (
        "ipfix-bad-scheme",
        ["--ipfix", "sctp://127.0.0.1:4739"],
        2,
        "--ipfix: invalid collector 'sctp://127.0.0.1:4739': unknown transport 'sctp' (udp or tcp)",
    ),
    (
        "ipfix-tcp-refused",
        ["-t", "1s", "--ipfix", "tcp://127.0.0.1:9"],
        1,
        "--ipfix: cannot connect to tcp://127.0.0.1:9: Connection refused",
    ),
    (
        "ipfix-tcp-refused-replay",
        ["--pcap", "{d}/one.pcap", "--ipfix", "127.0.0.1:9", "--ipfix-transport", "tcp"],
        1,
        "--ipfix: cannot connect to 127.0.0.1:9: Connection refused",
    ),
    (
        "ipfix-transport-missing",
        ["--ipfix", "127.0.0.1:4739", "--ipfix-transport"],
        2,
        "argument --ipfix-transport: expected one argument",
    ),
    (
        "ipfix-transport-garbage",
        ["--ipfix", "127.0.0.1:4739", "--ipfix-transport", "sctp"],
        2,
        "argument --ipfix-transport: invalid choice: 'sctp' (choose from 'udp', 'tcp')",
    ),
    (
        "ipfix-transport-disagrees",
        ["--ipfix", "tcp://127.0.0.1:4739", "--ipfix-transport", "udp"],
        2,
        "--ipfix tcp://127.0.0.1:4739 and --ipfix-transport udp disagree",
    ),
    ("ipfix-transport-alone", ["--ipfix-transport", "tcp"], 2, "--ipfix-transport needs --ipfix"),
    (
        "ipfix-refresh-missing",
        ["--ipfix", "127.0.0.1:4739", "--ipfix-template-refresh"],
        2,
        "argument --ipfix-template-refresh: expected one argument",
    ),
    (
        "ipfix-refresh-garbage",
        ["--ipfix", "127.0.0.1:4739", "--ipfix-template-refresh", "abc"],
        2,
        f"argument --ipfix-template-refresh: invalid duration 'abc': {DURATION}",
    ),
    (
        "ipfix-refresh-zero",
        ["--ipfix", "127.0.0.1:4739", "--ipfix-template-refresh", "0"],
        2,
        "--ipfix-template-refresh must be positive",
    ),
    ("ipfix-refresh-alone", ["--ipfix-template-refresh", "1s"], 2, "--ipfix-template-refresh needs --ipfix"),
    (
        "ipfix-domain-missing",
        ["--ipfix", "127.0.0.1:4739", "--ipfix-domain"],
        2,
        "argument --ipfix-domain: expected one argument",
    ),
    (
        "ipfix-domain-garbage",
        ["--ipfix", "127.0.0.1:4739", "--ipfix-domain", "abc"],
        2,
        "argument --ipfix-domain: expected an integer, not 'abc'",
    ),
    (
        "ipfix-domain-negative",
        ["--ipfix", "127.0.0.1:4739", "--ipfix-domain=-1"],
        2,
        "--ipfix-domain must be between 0 and 4294967295, not -1",
    ),
    (
        "ipfix-domain-huge",
        ["--ipfix", "127.0.0.1:4739", "--ipfix-domain", str(1 << 32)],
        2,
        "--ipfix-domain must be between 0 and 4294967295, not 4294967296",
    ),
    ("ipfix-domain-alone", ["--ipfix-domain", "1"], 2, "--ipfix-domain needs --ipfix"),
    # --ipfix and --parquet combine with every job: each opens its outputs before anything is attached
    (
        "ipfix-and-tui-no-terminal",
        ["-g", "--ipfix", "tcp://127.0.0.1:9"],
        2,
        "-g/--tui needs a terminal (use --jsonl or --plain to stream into a pipe)",
    ),
    (
        "ipfix-tcp-refused-jsonl",
        ["--jsonl", "-t", "1s", "--ipfix", "tcp://127.0.0.1:9"],
        1,
        "--ipfix: cannot connect to tcp://127.0.0.1:9: Connection refused",
    ),
    (
        "ipfix-tcp-refused-prometheus",
        ["--prometheus", "127.0.0.1:0", "-t", "1s", "--ipfix", "tcp://127.0.0.1:9"],
        1,
        "--ipfix: cannot connect to tcp://127.0.0.1:9: Connection refused",
    ),
    (
        "ipfix-tcp-refused-replay-stream",
        ["--pcap", "{d}/one.pcap", "--plain", "--ipfix", "tcp://127.0.0.1:9"],
        1,
        "--ipfix: cannot connect to tcp://127.0.0.1:9: Connection refused",
    ),
    # --parquet, --parquet-roll
    ("parquet-missing", ["--parquet"], 2, "argument --parquet: expected one argument"),
    ("parquet-empty", ["--parquet", ""], 2, "--parquet needs a directory"),
    (
        "parquet-a-file",
        ["-t", "1s", "--parquet", "{d}/afile"],
        2,
        "--parquet: '{d}/afile' is not a directory",
    ),
    (
        "parquet-under-a-file",
        ["-t", "1s", "--parquet", "{d}/afile/flows"],
        2,
        "--parquet: cannot write to '{d}/afile/flows': Not a directory",
    ),
    (
        "parquet-unwritable",
        ["-t", "1s", "--parquet", "/sys/pbt-flows"],
        2,
        "--parquet: cannot write to '/sys/pbt-flows': Operation not permitted",
    ),
    (
        "parquet-unwritable-replay",
        ["--pcap", "{d}/one.pcap", "--parquet", "/proc/pbt-flows"],
        2,
        "--parquet: cannot write to '/proc/pbt-flows': No such file or directory",
    ),
    (
        "parquet-roll-missing",
        ["--parquet", "{d}/pq", "--parquet-roll"],
        2,
        "argument --parquet-roll: expected one argument",
    ),
    (
        "parquet-roll-garbage",
        ["--parquet", "{d}/pq", "--parquet-roll", "abc"],
        2,
        f"argument --parquet-roll: invalid duration 'abc': {DURATION}",
    ),
    (
        "parquet-roll-zero",
        ["--parquet", "{d}/pq", "--parquet-roll", "0"],
        2,
        "--parquet-roll must be positive",
    ),
    ("parquet-roll-alone", ["--parquet-roll", "1m"], 2, "--parquet-roll needs --parquet"),
    (
        "parquet-unwritable-prometheus",
        ["--prometheus", "127.0.0.1:0", "-t", "1s", "--parquet", "/sys/pbt-flows"],
        2,
        "--parquet: cannot write to '/sys/pbt-flows': Operation not permitted",
    ),
    (
        "parquet-unwritable-unique",
        ["-u", "-t", "1s", "--parquet", "/sys/pbt-flows"],
        2,
        "--parquet: cannot write to '/sys/pbt-flows': Operation not permitted",
    ),
    # -v/-q, anything else
    ("verbose-value", ["-v", "3"], 2, "unrecognized arguments: 3"),
    ("quiet-value", ["-q", "3"], 2, "unrecognized arguments: 3"),
    ("unknown-flag", ["--bogus"], 2, "unrecognized arguments: --bogus"),
    ("positional", ["extra"], 2, "unrecognized arguments: extra"),
]

# Kernel features missing (PKTSTAT_BPF_TEST_FAULTS=missing=a+b): (id, features, argv, exit code, message)
MISSING = [
    ("no-bpf-tc", "bpf", ["-t", "1s"], 69, NO_BPF),
    ("no-bpf-xdp", "bpf", ["-x", "-t", "1s"], 69, NO_BPF),
    ("no-bpf-replay", "bpf", ["--pcap", "{d}/one.pcap"], 69, NO_BPF),
    ("cgroup-no-bpf", "bpf", ["-c", "{cg}", "-t", "1s"], 69, NO_BPF),
    (
        "cgroup-no-btf",
        "btf",
        ["-c", "{cg}", "-t", "1s"],
        69,
        (
            "cgroup mode needs the kernel's BTF "
            "(/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF=y), which this kernel does not provide"
        ),
    ),
    (
        "cgroup-no-cgroup2",
        "cgroup2",
        ["-c", "{cg}", "-t", "1s"],
        69,
        "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)",
    ),
    ("process-no-bpf", "bpf", ["-k", "-t", "1s"], 69, NO_BPF),
    (
        "process-no-btf",
        "btf",
        ["-k", "-t", "1s"],
        69,
        (
            "process mode needs the kernel's BTF "
            "(/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF=y), which this kernel does not provide"
        ),
    ),
    (
        "process-no-backend",
        "process-tracepoint+process-fentry+process-kprobe",
        ["-k", "-t", "1s"],
        69,
        (
            "no process-mode backend works on this kernel (tracepoint: disabled for a test (PKTSTAT_BPF_TEST_FAULTS); "
            "fentry: disabled for a test (PKTSTAT_BPF_TEST_FAULTS); kprobe: disabled for a test "
            "(PKTSTAT_BPF_TEST_FAULTS)); see README 'Process mode'"
        ),
    ),
    (
        "process-forced-missing",
        "process-tracepoint",
        ["-k", "--process-backend", "tracepoint", "-t", "1s"],
        69,
        "--process-backend tracepoint cannot run on this kernel: disabled for a test (PKTSTAT_BPF_TEST_FAULTS)",
    ),
    (
        "drops-no-reason",
        "drop_reason",
        ["--drops", "-t", "1s"],
        69,
        (
            "--drops needs the kernel's drop reasons (the "
            "kfree_skb tracepoint with its reason, Linux 5.17+, and enum skb_drop_reason in the kernel's BTF); this "
            "kernel's kfree_skb tracepoint has no reason"
        ),
    ),
    (
        "drops-no-btf",
        "btf",
        ["--drops", "-t", "1s"],
        69,
        (
            "--drops needs the kernel's drop reasons (the kfree_skb "
            "tracepoint with its reason, Linux 5.17+, and enum skb_drop_reason in the kernel's BTF); this kernel has no "
            "BTF (/sys/kernel/btf/vmlinux)"
        ),
    ),
    (
        "no-tcx",
        "tcx",
        ["--tc-attach", "tcx", "-t", "1s"],
        69,
        "this kernel has no TCX links (Linux 6.6+): use --tc-attach legacy, or auto to fall back to it",
    ),
    (
        "no-native-xdp",
        "xdp_native",
        ["-x", "--xdp_mode", "native", "-t", "1s"],
        69,
        (
            "the driver of va cannot run "
            "native XDP (attach XDP in native mode: Operation not supported); use --xdp_mode generic, or auto to fall back "
            "to it"
        ),
    ),
    (
        "no-generic-xdp",
        "xdp_generic",
        ["-x", "--xdp_mode", "generic", "-t", "1s"],
        69,
        "XDP cannot be attached to va (Operation not supported); count it with TC instead (omit -x)",
    ),
    (
        "no-xdp-at-all",
        "xdp_native+xdp_generic",
        ["-x", "-t", "1s"],
        69,
        (
            "XDP cannot be attached to va (native: "
            "Operation not supported; generic: Operation not supported); count it with TC instead (omit -x)"
        ),
    ),
]

# User nobody, in every mode: (id, argv)
UNPRIVILEGED = [
    ("tc", ["-t", "1s"]),
    ("tc-legacy", ["--tc-attach", "legacy", "-t", "1s"]),
    ("xdp", ["-x", "-t", "1s"]),
    ("cgroup", ["-c", "{cg}", "-t", "1s"]),
    ("process", ["-k", "-t", "1s"]),
    ("replay", ["--pcap", "{d}/one.pcap"]),
    ("stream", ["--jsonl", "-t", "1s"]),
    ("prometheus", ["--prometheus", "127.0.0.1:0", "-t", "1s"]),
]


def _fill(world: World, argv: list[str], message: str) -> tuple[list[str], str]:
    p = world.paths()
    return [a.format(**p) for a in argv], message.format(**p)


def _one_line_error(world: World, r: subprocess.CompletedProcess, code: int, message: str) -> None:
    assert (r.returncode, r.stdout) == (code, ""), r.stderr
    assert r.stderr == f"pktstat-bpf: error: {message}\n"
    assert world.nothing_attached()


def _needs_cgroup(world: World, case_id: str) -> bool:
    if not case_id.startswith("cgroup"):
        return False
    if world.cg is None:
        pytest.skip("no writable cgroup v2 mount")
    return True


@pytest.mark.parametrize("case_id, argv, code, message", FLAGS, ids=[c[0] for c in FLAGS])
def test_every_flag_rejects_bad_values_in_one_line(world, case_id, argv, code, message):
    host = _needs_cgroup(world, case_id)
    argv, message = _fill(world, argv, message)
    _one_line_error(world, world.run(argv, host=host), code, message)


@pytest.mark.parametrize("case_id, features, argv, code, message", MISSING, ids=[c[0] for c in MISSING])
def test_a_missing_kernel_feature_is_one_line_and_exit_69(world, case_id, features, argv, code, message):
    host = _needs_cgroup(world, case_id)
    argv, message = _fill(world, argv, message)
    r = world.run(argv, host=host, env={"PKTSTAT_BPF_TEST_FAULTS": f"missing={features}"})
    _one_line_error(world, r, code, message)


@pytest.mark.parametrize("case_id, argv", UNPRIVILEGED, ids=[c[0] for c in UNPRIVILEGED])
def test_an_unprivileged_user_gets_one_line_and_exit_77_in_every_mode(world, case_id, argv):
    host = case_id in ("cgroup", "replay")
    if case_id == "cgroup" and world.cg is None:
        pytest.skip("no writable cgroup v2 mount")
    argv, _ = _fill(world, argv, "")
    _one_line_error(world, world.run(argv, host=host, nobody=True), 77, PRIV)


# ---- fallbacks: a missing feature the mode can do without ---------------------------------------
@pytest.mark.parametrize(
    "features, argv, check",
    [
        ("tcx", ["-j"], lambda doc: doc["attach"] == "tc-legacy"),
        ("xdp_native", ["-x", "-j"], lambda doc: doc["attach"] == "xdp-generic"),
        ("map_batch", ["-j"], lambda doc: doc["attach"] == "tcx"),
    ],
    ids=["tcx-falls-back-to-legacy", "native-xdp-falls-back-to-generic", "no-batch-reads-iterate"],
)
def test_a_missing_feature_with_a_fallback_still_counts_exactly(netns_v4only, features, argv, check):
    """The fallback path is taken, said in the start-up line and the JSON,
    and counts the traffic exactly."""
    ns = netns_v4only
    env = {**os.environ, "PKTSTAT_BPF_TEST_FAULTS": f"missing={features}"}
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns.ns_a, sys.executable, "-m", "pktstat_bpf", "-i", "va", "-t", "0", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = p.stderr.readline()
    if "-x" in argv:
        code = "import traffic; print(traffic.send_udp('10.99.0.1', 7100, 6, 40))"
        sp = int(
            subprocess.run(
                ["ip", "netns", "exec", ns.ns_b, sys.executable, "-c", code],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
            ).stdout
        )
    else:
        with ns.in_a():
            sp = send_udp(ns.B4, 7100, 6, 40)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert (p.returncode, err) == (0, ""), err
    doc = json.loads(out)
    assert check(doc), doc["attach"]
    assert f" via {doc['attach']} " in first
    (flow,) = [f for f in doc["flows"] if f["srcPort"] == sp]
    assert (flow["packets"], flow["bytes"]) == (6, 6 * (ETH + IP4 + UDP + 40))
    assert not ns.ours_attached() and xdp_prog(ns) is None


def test_missing_sock_tracepoints_drop_that_owner_source(bpf):
    """cgroup mode before Linux 6.3: no send/recv tracepoints; the other
    owner sources stay, and the JSON says which are live."""
    if cgroup2_mount() is None:
        pytest.skip("no writable cgroup v2 mount")
    cg = TestCgroup()
    try:
        env = {**os.environ, "PKTSTAT_BPF_TEST_FAULTS": "missing=sock_tracepoints"}
        r = subprocess.run(
            [sys.executable, "-m", "pktstat_bpf", "-c", cg.root, "-t", "200ms", "-j"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["ownerSources"] == ["sock_create", "sock_ops", "start scan"]
        assert cgroup_programs(cg.root) == []
    finally:
        cg.destroy()


def test_missing_buff_len_helper_counts_the_linear_part(netns_v4only):
    code = (
        "from pktstat_bpf import Collector\n"
        "c = Collector('va', 'xdp').start(); print(c.status['bytes']); c.stop()\n"
    )
    env = {**os.environ, "PKTSTAT_BPF_TEST_FAULTS": "missing=xdp_buff_len"}
    r = subprocess.run(
        ["ip", "netns", "exec", netns_v4only.ns_a, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (r.returncode, r.stdout) == (0, "linear part of the frame\n"), r.stderr


# ---- the test seam itself ---------------------------------------------------------------------------
def test_the_test_seam_reads_every_fault(monkeypatch):
    from pktstat_bpf import _core

    spec = "missing=tcx+btf,fail_attach_at=3,xdp_buff_len=0,progress_delay=0.2"
    monkeypatch.setenv("PKTSTAT_BPF_TEST_FAULTS", spec)
    want = {"missing": {"tcx", "btf"}, "fail_attach_at": 3, "xdp_buff_len": False, "progress_delay": 0.2}
    assert _core.test_faults() == want
    monkeypatch.delenv("PKTSTAT_BPF_TEST_FAULTS")
    none = {"missing": set(), "fail_attach_at": -1, "xdp_buff_len": None, "progress_delay": None}
    assert _core.test_faults() == none


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bogus=1", "bogus=1: unknown fault"),
        ("tcx", "tcx: expected NAME=VALUE"),
        ("fail_attach_at=1.5", "fail_attach_at=1.5: not a step number"),
        ("xdp_buff_len=2", "xdp_buff_len=2: expected 0 or 1"),
        ("progress_delay=soon", "progress_delay=soon: not a number"),
    ],
)
def test_a_malformed_test_fault_is_refused_not_ignored(monkeypatch, spec, message):
    """A misspelt fault cannot let a test pass without the fault: the seam
    names it, and an engine object is not made with it."""
    from pktstat_bpf import _core

    monkeypatch.setenv("PKTSTAT_BPF_TEST_FAULTS", spec)
    with pytest.raises(ValueError) as e:
        _core.test_faults()
    assert str(e.value) == f"PKTSTAT_BPF_TEST_FAULTS: {message}"
    with pytest.raises(ValueError) as e:
        _core.Replayer(16)
    assert str(e.value) == f"PKTSTAT_BPF_TEST_FAULTS: {message}"


# ---- a table larger than memory allows -------------------------------------------------------------
def _memory_cgroup() -> tuple[str, str] | None:
    """(directory to make a limited child in, the limit file's name): the
    cgroup v1 memory controller, or a cgroup v2 mount delegating memory."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, opts = right.split(" ", 2)
            if fstype == "cgroup" and "memory" in opts.split()[-1].split(","):
                return left.split()[4], "memory.limit_in_bytes"
    for mnt, root in cgroup2_mounts():
        try:
            if root == "/" and "memory" in Path(mnt, "cgroup.subtree_control").read_text().split():
                return mnt, "memory.max"
        except OSError:
            pass
    return None


def _kernel_memlock(max_entries: int) -> int:
    """The kernel's own accounting ("memlock" in fdinfo, what bpftool map show
    reports) of the TC/replay flow table with `max_entries` entries, loaded in
    this process: its two sides (the maps of that size; issue 16)."""
    from pktstat_bpf import _core

    engine = _core.Replayer(max_entries)
    found = []
    try:
        for fd in os.listdir("/proc/self/fdinfo"):
            try:
                info = dict(
                    line.split(":", 1) for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
                )
            except (OSError, ValueError):
                continue
            flow_values = info.get("value_size", "").strip() == "88"  # (not the names map: 360)
            if info.get("max_entries", "").strip() == str(max_entries) and "memlock" in info and flow_values:
                found.append(int(info["memlock"]))
    finally:
        del engine
    assert len(found) == 2, f"{len(found)} maps of {max_entries} entries in this process, not the two sides"
    return sum(found)


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


@pytest.mark.parametrize("argv", [["-i", "va", "-t", "1s"], ["--pcap", "{d}/one.pcap"]], ids=["tc", "replay"])
def test_a_table_too_large_for_memory_is_one_line_and_exit_2(world, argv):
    """--max-entries at the limit (64M flows: ~25 GB here, both sides) in a process
    limited to 100 MB (a memory cgroup): refused before any map is made, in
    one line naming the memory the table needs (the kernel's own accounting
    of smaller tables, extrapolated: the table grows linearly in its
    power-of-two size) and what the limit leaves. (Never run unlimited: it
    would take the memory of the machine.)"""
    found = _memory_cgroup()
    if found is None:
        pytest.skip("no memory cgroup controller to limit the test process with")
    small = _kernel_memlock(1 << 15)
    per_entry = (_kernel_memlock(1 << 16) - small) // (1 << 15)
    need = small + per_entry * ((1 << 26) - (1 << 15))
    base, limit_file = found
    mem = Path(base) / f"pbt-mem-{os.getpid()}"
    mem.mkdir()
    try:
        (mem / limit_file).write_text(str(100 << 20))
        argv, _ = _fill(world, argv, "")
        inner = [sys.executable, "-m", "pktstat_bpf", "--max-entries", str(1 << 26), *argv]
        if "-i" in argv:  # not ip netns exec: it remounts /sys, and so hides the memory cgroup
            inner = ["nsenter", f"--net=/run/netns/{world.ns.ns_a}", *inner]
        t0 = time.monotonic()
        r = subprocess.run(
            ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(mem), *inner],
            capture_output=True,
            text=True,
            timeout=120,
        )
        took = time.monotonic() - t0
    finally:
        mem.rmdir()
    head = f"pktstat-bpf: error: --max-entries {1 << 26}: the flow table needs {_gb(need)} of kernel memory, but only "
    tail = f" is available (the memory cgroup limit of /{mem.name}); lower --max-entries\n"
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    assert r.stderr.startswith(head) and r.stderr.endswith(tail), r.stderr
    have = r.stderr[len(head) : -len(tail)]
    assert have.endswith(" MB") and 0 <= int(have[:-3]) <= 100 * 1.048576, have
    assert took < 30  # refused before the maps are made, not after minutes of trying
    assert world.nothing_attached()


def test_a_large_table_says_what_it_is_doing_and_works(world):
    """A table above 1 GB (8M flows: ~1.5 GB here) is announced in one line
    before its maps are made, and then counts as a default-sized one."""
    n = 1 << 23
    small = _kernel_memlock(1 << 15)
    need = small + (_kernel_memlock(1 << 16) - small) // (1 << 15) * (n - (1 << 15))
    pcap = str(Path(__file__).parent / "data" / "office.pcap")
    plain = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", pcap, "-j"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    big = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", pcap, "-j", "--max-entries", str(n)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (big.returncode, big.stderr) == (
        0,
        f"pktstat-bpf: creating a flow table of {_gb(need)} (--max-entries {n})...\n",
    )
    assert (plain.returncode, plain.stderr) == (0, "")
    report, expected = json.loads(big.stdout), json.loads(plain.stdout)
    assert (report.pop("maxEntries"), expected.pop("maxEntries")) == (n, 65536)
    assert report == expected and report["flows"] != []


def test_every_flag_is_in_the_matrix():
    """A flag added to the CLI without a bad-input case here fails this test
    (flags that take nothing, such as --help, are tried with a value)."""
    from pktstat_bpf.cli.options import build_parser

    tried = {a.split("=")[0] for case in FLAGS + MISSING for a in case[-3] if a.startswith("-")}
    untried = [
        action.option_strings
        for action in build_parser()._actions
        if not set(action.option_strings) & (tried | {"-h", "--version"})
    ]
    assert untried == []


def test_exit_codes_are_documented():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    manual = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    for code, meaning in (
        (0, "ok"),
        (1, "runtime error"),
        (2, "usage error"),
        (69, "kernel feature missing"),
        (77, "insufficient privilege"),
        (130, "interrupted"),
    ):
        assert f"{code} {meaning}" in readme
        assert f"{code} {meaning}" in manual
        assert f"| {code} | {meaning} |" in manual  # its row in the table of examples


def test_missing_cgroup_mkdir_tracepoint_falls_back_to_rescans(bpf):
    """Without tp_btf/cgroup_mkdir a cgroup made after the start is found by
    the rescan a snapshot makes for an unknown id, while it exists; one
    already removed by then cannot be named (with the tracepoint it can:
    test_cgroup.py)."""
    if cgroup2_mount() is None:
        pytest.skip("no writable cgroup v2 mount")
    cg, ns = TestCgroup(), NetnsPair(ipv6=False)
    try:
        sink = cg.worker(cg.child("sink"), "pbt-sink", "udp-sink", "4", "0", netns=ns.ns_a)
        port = sink.stdout.readline().split()[1]
        env = {**os.environ, "PKTSTAT_BPF_TEST_FAULTS": "missing=cgroup_mkdir"}
        p = subprocess.Popen(
            [sys.executable, "-m", "pktstat_bpf", "-c", cg.root, "-t", "0", "-j"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert "via cgroup_skb" in p.stderr.readline()
        kept, gone = cg.child("kept"), cg.child("gone")
        sp_kept = int(cg.run(kept, "pbt-kept", "udp-send", ns.A4, port, "2", "5", netns=ns.ns_a)[0])
        sp_gone = int(cg.run(gone, "pbt-gone", "udp-send", ns.A4, port, "3", "5", netns=ns.ns_a)[0])
        os.rmdir(gone)
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        cg.destroy()
        ns.destroy()
    assert (p.returncode, err) == (0, ""), err
    egress = {f["srcPort"]: f for f in json.loads(out)["flows"] if f["direction"] == "egress"}
    assert (egress[sp_kept]["cgroup"], egress[sp_kept]["packets"]) == (cg.rel(kept), 2)
    assert (egress[sp_gone]["cgroup"], egress[sp_gone]["packets"]) == ("", 3)
