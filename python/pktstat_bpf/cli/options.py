"""The command line's flags, parsed and checked once into typed
:class:`Options`; nothing below ``cli/`` sees an ``argparse.Namespace``.

Flags follow the Go pktstat-bpf (-i -t -j --max-entries --version -?) so its
users need not relearn them; new flags use long GNU-style names.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import NoReturn, Sequence

from ..core.collector import (
    DEFAULT_ACTIVE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_FLOWS,
    check_flow_limits,
    check_max_entries,
)
from ..core.durations import format_duration, parse_duration
from ..core.errors import UsageError
from ..core.modes.process import BACKENDS
from ..core.modes.tc import TC_ATTACH
from ..core.modes.xdp import XDP_MODES
from ..exporter.metrics import DEFAULT_TOP, MAX_TOP
from ..exporter.server import parse_listen
from ..output.ipfix import DEFAULT_TEMPLATE_REFRESH
from ..output.parquet import DEFAULT_ROLL
from ..views.filters import DEFAULT_INTERNAL, NetworkSet
from .record_flags import check_flow_records

PROG = "pktstat-bpf"
DEFAULT_TIMEOUT = 600.0

EPILOG = """\
exit codes: 0 ok, 1 runtime error, 2 usage error, 69 kernel feature missing,
77 insufficient privilege (needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON), 130 interrupted.
"""


@dataclass(frozen=True)
class Options:
    """What the flags ask for, checked (see ``--help`` for each)."""

    version: bool = False
    iface: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    json: bool = False
    json_array: bool = False
    conversations: bool = False
    max_entries: int = DEFAULT_MAX_ENTRIES
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    active_timeout: float = DEFAULT_ACTIVE_TIMEOUT
    max_flows: int = DEFAULT_MAX_FLOWS
    tc_attach: str = "auto"
    xdp: bool = False
    xdp_mode: str = "auto"
    arp: bool = True
    tcp_health: bool = True
    cgroup: str | None = None
    kprobes: bool = False
    process_backend: str | None = None
    drops: bool = False
    pcap: str | None = None
    tui: bool = False
    refresh: float = 1.0
    jsonl: bool = False
    plain: bool = False
    unique: bool = False
    external: bool = False
    internal: NetworkSet | None = None
    kubeconfig: str | None = None
    #: ``--prometheus`` as (host, port), or None
    prometheus: tuple[str, int] | None = None
    prometheus_top: int = DEFAULT_TOP
    prometheus_names: bool = False
    #: ``--ipfix`` as (transport, host, port), or None; ``ipfix_target`` as given
    ipfix: tuple[str, str, int] | None = None
    ipfix_target: str = ""
    ipfix_template_refresh: float = DEFAULT_TEMPLATE_REFRESH
    ipfix_domain: int = 0
    parquet: str | None = None
    parquet_roll: float = DEFAULT_ROLL
    verbose: int = 0
    quiet: int = 0

    @property
    def streaming(self) -> bool:
        """--jsonl, --plain or -u: a line per flow per interval."""
        return self.jsonl or self.plain or self.unique


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (via UsageError)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _int(text: str) -> int:
    """An integer flag: decimal, or 0x/0o/0b-prefixed."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        add_help=False,
        description="Per-flow packet and byte counts from eBPF programs in the kernel.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-?", "-h", "--help", action="help", help="show this help and exit")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument(
        "-i", "--iface", metavar="IFACE", help="interface to read from (default: the default-route interface)"
    )
    p.add_argument(
        "-t",
        "--timeout",
        metavar="DURATION",
        type=_duration,
        default=None,
        help="capture time, Go-style (10s, 1m30s; default 10m, with --prometheus until stopped; 0 = until Ctrl-C)",
    )
    p.add_argument("-j", "--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--json-array",
        action="store_true",
        help="print the report as pktstat-bpf's bare JSON array of flows (no header: "
        "the conservation counters are left out)",
    )
    p.add_argument(
        "--conversations",
        action="store_true",
        help="report conversations, not flows: the two directions of each put together, client to "
        "server, with packets and bytes each way (text, -j and --json-array; live and --pcap)",
    )
    p.add_argument(
        "--max-entries",
        metavar="N",
        type=_int,
        default=DEFAULT_MAX_ENTRIES,
        help=f"kernel flow table size (default {DEFAULT_MAX_ENTRIES}): room for the flows of one -r interval; "
        "flows beyond it are counted as overflow",
    )
    p.add_argument(
        "--idle-timeout",
        metavar="DURATION",
        type=_duration,
        default=DEFAULT_IDLE_TIMEOUT,
        help=f"retire a flow idle this long, with an end record (default {format_duration(DEFAULT_IDLE_TIMEOUT)}; 0: never)",
    )
    p.add_argument(
        "--active-timeout",
        metavar="DURATION",
        type=_duration,
        default=DEFAULT_ACTIVE_TIMEOUT,
        help=f"a record of a long flow this often (default {format_duration(DEFAULT_ACTIVE_TIMEOUT)}; 0: never)",
    )
    p.add_argument(
        "--max-flows",
        metavar="N",
        type=_int,
        default=DEFAULT_MAX_FLOWS,
        help=f"flows the user-space table holds (default {DEFAULT_MAX_FLOWS}); beyond, the longest idle is retired",
    )
    p.add_argument(
        "--tc-attach",
        choices=TC_ATTACH,
        default="auto",
        help="TC attach path: tcx (kernel >= 6.6), legacy clsact, or auto (tcx, else legacy)",
    )
    p.add_argument(
        "-x",
        "--xdp",
        action="store_true",
        help="count at XDP instead of TC (ingress only: XDP does not see egress)",
    )
    p.add_argument(
        "--xdp_mode",
        "--xdp-mode",
        dest="xdp_mode",
        choices=XDP_MODES,
        default="auto",
        help="XDP attach mode: native (driver), generic (any device), offload (NIC), "
        "or auto (native, else generic; default)",
    )
    p.add_argument(
        "--no-arp",
        dest="arp",
        action="store_false",
        help="count ARP frames as unparsed, not as ARP flows (TC, XDP and --pcap)",
    )
    p.add_argument(
        "--no-tcp-health",
        dest="tcp_health",
        action="store_false",
        help="track no TCP retransmissions and round trips (TC, XDP and --pcap; saves their cost per segment)",
    )
    p.add_argument(
        "-c",
        "--cgroup",
        metavar="PATH",
        help="count the sockets of a cgroup v2 directory and its descendants (cgroup_skb), "
        "with pid, comm and cgroup of each flow's process",
    )
    p.add_argument(
        "-k",
        "--kprobes",
        action="store_true",
        help="process mode: the TCP/UDP/ICMP traffic of every process of the host, with pid, comm and cgroup "
        "(socket layer; the name is pktstat-bpf's: the backend is chosen by probing, see --process-backend)",
    )
    p.add_argument(
        "--process-backend",
        choices=BACKENDS,
        default=None,
        help="process mode's hooks: tracepoint (BTF tracepoints, Linux 6.3+), fentry, kprobe, "
        "or auto (the first of these the kernel accepts; default)",
    )
    p.add_argument(
        "--drops",
        action="store_true",
        help="also count the packets the kernel drops, per flow and per drop reason (kfree_skb tracepoint, "
        "Linux 5.17+); with -i/-x the interface's drops only",
    )
    p.add_argument(
        "--pcap",
        metavar="FILE",
        help="replay a pcap/pcapng capture file through the counting program instead of capturing "
        "(no interface is touched; bytes are the frames' original lengths; with --jsonl/--plain/-u, "
        "streamed per -r interval of capture time)",
    )
    live = p.add_argument_group("live views")
    live.add_argument(
        "-g", "--tui", action="store_true", help="interactive full-screen table of interval rates"
    )
    live.add_argument(
        "-r",
        "--refresh",
        metavar="DURATION",
        type=_duration,
        default=1.0,
        help="interval of the TUI, of streams and of the exporter's map readings (default 1s)",
    )
    live.add_argument(
        "--jsonl", action="store_true", help="stream JSON Lines: one object per flow per interval"
    )
    live.add_argument("--plain", action="store_true", help="stream text lines (pktstat-kube compatible)")
    live.add_argument(
        "-u",
        "--unique",
        action="store_true",
        help="stream each connection only the first time it appears (text, or JSON Lines with --jsonl)",
    )
    live.add_argument(
        "--external",
        action="store_true",
        help="show only flows whose destination is outside --internal-networks",
    )
    live.add_argument(
        "--internal-networks",
        metavar="CIDR,...",
        default=",".join(DEFAULT_INTERNAL),
        help="networks --external treats as internal (default: loopback, RFC 1918, "
        "IPv6 loopback, link-local and ULA)",
    )
    live.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="name pod addresses namespace/pod from this cluster (list + watch; needs pktstat-bpf[kube])",
    )
    g = p.add_argument_group("Prometheus exporter")
    g.add_argument(
        "--prometheus",
        metavar="ADDR:PORT",
        help="serve /metrics for Prometheus (ADDR defaults to 127.0.0.1; 0.0.0.0:PORT for all addresses); "
        "runs until Ctrl-C/SIGTERM unless -t is given",
    )
    g.add_argument(
        "--prometheus-top",
        metavar="N",
        type=_int,
        default=None,
        help=f"export per-flow (and per-process) series for the N heaviest only (default {DEFAULT_TOP}; "
        "0: none; totals are always exact)",
    )
    g.add_argument(
        "--prometheus-names",
        action="store_true",
        help="label the per-flow series with the flow's name (TLS server name, else HTTP Host, else DNS "
        "query; one series per name: off by default)",
    )
    f = p.add_argument_group("flow records (the final records of a capture or replay)")
    f.add_argument(
        "--ipfix",
        metavar="HOST:PORT",
        help="send the flow records to an IPFIX collector (nfcapd, pmacct ...): UDP, or tcp://HOST:PORT",
    )
    f.add_argument(
        "--ipfix-transport", choices=("udp", "tcp"), default=None, help="--ipfix over udp (default) or tcp"
    )
    f.add_argument(
        "--ipfix-template-refresh",
        metavar="DURATION",
        type=_duration,
        default=None,
        help=f"re-send the IPFIX templates over UDP this often (default {format_duration(DEFAULT_TEMPLATE_REFRESH)})",
    )
    f.add_argument(
        "--ipfix-domain",
        metavar="N",
        type=_int,
        default=None,
        help="the IPFIX observation domain id (0-4294967295, default 0)",
    )
    f.add_argument(
        "--parquet",
        metavar="DIR",
        help="write the flow records as Parquet files under DIR (date=YYYY-MM-DD/hour=HH/part-...parquet)",
    )
    f.add_argument(
        "--parquet-roll",
        metavar="DURATION",
        type=_duration,
        default=None,
        help=f"start a new Parquet file this often (default {format_duration(DEFAULT_ROLL)})",
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more diagnostics on stderr (-vv: libbpf log)"
    )
    p.add_argument("-q", "--quiet", action="count", default=0, help="fewer diagnostics on stderr")
    return p


def parse_args(argv: Sequence[str] | None) -> Options:
    """The flags of `argv` (default ``sys.argv[1:]``), checked: raises
    :class:`UsageError` (exit code 2) on bad input."""
    ns = build_parser().parse_args(argv)
    check_max_entries(ns.max_entries)
    check_flow_limits(ns.idle_timeout, ns.active_timeout, ns.max_flows)
    modes = [
        f
        for f, on in (
            ("-x/--xdp", ns.xdp),
            ("-c/--cgroup", ns.cgroup is not None),
            ("-k/--kprobes", ns.kprobes),
        )
        if on
    ]
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} are different modes: choose one")
    if ns.process_backend is not None and not ns.kprobes:
        raise UsageError("--process-backend chooses the hooks of process mode: use it with -k/--kprobes")
    if ns.kprobes and ns.iface is not None:
        raise UsageError(
            "-k/--kprobes counts the sockets of every process, not an interface: drop -i/--iface"
        )
    if modes and ns.tc_attach != "auto":
        raise UsageError(f"--tc-attach chooses how TC mode attaches: drop it with {modes[0]}")
    if ns.cgroup is not None and ns.iface is not None:
        raise UsageError("-c/--cgroup counts sockets, not an interface: drop -i/--iface")
    if not ns.arp and (ns.cgroup is not None or ns.kprobes):
        raise UsageError("--no-arp applies to TC, XDP and --pcap: sockets see no ARP")
    if not ns.tcp_health and (ns.cgroup is not None or ns.kprobes):
        raise UsageError(
            "--no-tcp-health applies to TC, XDP and --pcap: the socket modes track no TCP health"
        )
    _check_outputs(ns)
    internal = NetworkSet.parse(ns.internal_networks)
    listen, top = _check_exporter(ns)
    if ns.pcap is not None:
        if ns.iface is not None:
            raise UsageError("--pcap replays a file: it takes no interface (-i)")
        if ns.tui:
            raise UsageError("--pcap replays a file: -g/--tui shows live traffic only")
        if ns.xdp or ns.cgroup is not None or ns.kprobes:
            raise UsageError(
                "--pcap replays a file through the TC program: drop -x/--xdp, -c/--cgroup and -k/--kprobes"
            )
        if listen is not None:
            raise UsageError("--pcap replays a file: --prometheus exports live counters only")
        if ns.drops:
            raise UsageError("--pcap replays a file: --drops watches the kernel's live drops only")
    flows = check_flow_records(ns)
    if ns.timeout is None:  # an exporter runs until stopped; a capture 10m, as pktstat-bpf's
        ns.timeout = 0.0 if listen is not None else DEFAULT_TIMEOUT
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(Options) if hasattr(ns, f.name)}
    return Options(**{**values, **flows, "internal": internal, "prometheus": listen, "prometheus_top": top})


def _check_outputs(ns: argparse.Namespace) -> None:
    """One output at a time; a positive refresh."""
    if ns.refresh < 0.01:
        raise UsageError(f"-r/--refresh must be at least 10ms, not {format_duration(ns.refresh)}")
    chosen = [
        f
        for f, on in (
            ("-g/--tui", ns.tui),
            ("-j/--json", ns.json),
            ("--json-array", ns.json_array),
            ("--jsonl", ns.jsonl),
            ("--plain", ns.plain),
            ("--prometheus", ns.prometheus is not None),
        )
        if on
    ]
    if len(chosen) > 1:
        raise UsageError(f"choose one output: {' or '.join(chosen)}")
    if ns.unique and (ns.tui or ns.json or ns.json_array or ns.prometheus is not None):
        raise UsageError("-u/--unique streams lines: use it with --jsonl or --plain (the default)")
    if ns.conversations and (ns.tui or ns.jsonl or ns.plain or ns.unique or ns.prometheus is not None):
        raise UsageError(
            "--conversations pairs the flows of the final report (text, -j, --json-array): "
            "drop -g/--tui, --jsonl, --plain, -u/--unique and --prometheus"
        )


def _check_exporter(ns: argparse.Namespace) -> tuple[tuple[str, int] | None, int]:
    """The exporter's flags: (host, port) or None, and the top N."""
    if ns.prometheus is None:
        if ns.prometheus_top is not None:
            raise UsageError("--prometheus-top needs --prometheus")
        if ns.prometheus_names:
            raise UsageError("--prometheus-names needs --prometheus")
        return None, DEFAULT_TOP
    if ns.prometheus_names and (ns.cgroup is not None or ns.kprobes):
        mode = "-c/--cgroup" if ns.cgroup is not None else "-k/--kprobes"
        raise UsageError(f"--prometheus-names: {mode} flows carry no names (TC and XDP read them)")
    listen = parse_listen(ns.prometheus)
    top = DEFAULT_TOP if ns.prometheus_top is None else ns.prometheus_top
    if not 0 <= top <= MAX_TOP:
        raise UsageError(f"--prometheus-top must be between 0 and {MAX_TOP}, not {top}")
    return listen, top
