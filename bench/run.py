#!/usr/bin/env python3
"""Run every benchmark of bench/ (`make bench`), write their figures as one
JSON document (bench/results.json) and print a short markdown table: each
target of issue 8 as a ratio measured in this run, with its verdict.

    bench/run.py                  everything (a few minutes, as root)
    bench/run.py --quick          tiny sizes: proves the benchmarks run (the test suite does this)
    bench/run.py --only hotpath,snapshot
    bench/run.py --table          print the table of an existing results.json again

Exit status: 0 when every benchmark ran (a missed target is a figure, not an
error), 1 when one failed (its error is in the JSON and on stderr), 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# name -> module; the order they run in (the CPU-bound kernel ones first)
BENCHMARKS = {
    "hotpath": "bench_hotpath",
    "health": "bench_health",
    "datapath": "bench_datapath",
    "snapshot": "bench_snapshot",
    "replay": "bench_replay",
    "live": "bench_live",
    "exporter": "bench_exporter",
    "process": "bench_process",
    "flowrecords": "bench_flowrecords",
    "drops": "bench_drops",
    "drain": "bench_drain",
    "layout": "bench_layout",
    "day": "bench_day",
}
DEFAULT_JSON = HERE / "results.json"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in _read("/proc/cpuinfo").splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        (
            int(ln.split()[1]) * 1024
            for ln in _read("/proc/meminfo").splitlines()
            if ln.startswith("MemTotal:")
        ),
        0,
    )
    info: dict[str, Any] = {
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": round(mem / 2**30, 1),
        "clocksource": _read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }
    for kind in ("vm", "container"):
        try:
            virt = subprocess.run(["systemd-detect-virt", f"--{kind}"], capture_output=True, text=True)
            info[kind] = virt.stdout.strip() or "unknown"
        except OSError:
            info[kind] = "unknown"
    try:
        from pktstat_bpf import __version__, _core

        info["pktstat_bpf"] = __version__
        info["libbpf"] = _core.libbpf_version()
    except ImportError as e:
        info["pktstat_bpf"] = f"not importable: {e}"
    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    if commit.returncode == 0:
        info["commit"] = commit.stdout.strip()
    return info


def run(names: list[str], quick: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": quick,
        "machine": machine(),
    }
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            res = importlib.import_module(BENCHMARKS[name]).run(quick=quick)
        except Exception as e:
            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {e}"}
        res["seconds"] = round(time.perf_counter() - t, 1)
        doc[name] = res
        print(f"bench: {name} done in {res['seconds']} s", file=sys.stderr, flush=True)
    doc["machine"]["load_average_at_end"] = list(os.getloadavg())
    return doc


# ---- the table -----------------------------------------------------------------

Row = tuple[str, str, str, str, str]  # target, measure, result, goal, verdict


def _verdict(value: float | None, goal: float, at_most: bool) -> str:
    if value is None:
        return "n/a"
    return "PASS" if (value <= goal if at_most else value >= goal) else "FAIL"


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def _count(n: int) -> str:
    return f"{n >> 20}M" if n >= 1 << 20 else f"{n >> 10}k" if n >= 1 << 10 else str(n)


def _hotpath_rows(h: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    goal = h.get("target_ratio", 1.2)
    for fam in ("tc", "xdp"):
        for case, r in h.get(fam, {}).items():
            kind, what = case.split("_")
            if kind == "hot":
                label = f"hot {what.replace('ip', 'IP')} flow"
            elif kind == "flows":
                label = f"{_count(int(what))} flows in turn"
            else:
                label = f"Zipf({r.get('zipf_s')}) mix over {_count(int(what))} flows"
            measure = f"{fam.upper()} {label}: ns over empty, ours / lean"
            result = f"{r['ours_ns']:.0f} / {r['lean_ns']:.0f} ns = {_x(r['ratio'])}"
            if kind == "hot":
                rows.append(("1 hot path", measure, result, f"<= {goal}x", _verdict(r["ratio"], goal, True)))
            else:
                rows.append(("1 hot path", measure, result, "report", ""))
    return rows + _label_rows(h.get("label"))


def _health_rows(h: dict[str, Any]) -> list[Row]:
    """TCP health's cost (bench_health), TC, one established connection."""
    goal = h.get("target_ratio", 1.3)
    what = {"ack": "pure ACK echoing a timestamp", "data": "data segment with timestamps"}
    rows: list[Row] = []
    for case, label in what.items():
        r = h[case]
        result = (
            f"health on {r['ours_ns']:.0f} ns = {_x(r['ratio'])}; off {r['off_ns']:.0f} ns = "
            f"{_x(r['off_ratio'])} (lean {r['lean_ns']:.0f} ns)"
        )
        measure = f"TC {label}: ns over empty, ours / lean"
        rows.append(("19 health", measure, result, f"<= {goal}x", _verdict(r["ratio"], goal, True)))
    return rows


def _label_rows(lab: dict[str, Any] | None) -> list[Row]:
    """The application label's cost (bench_hotpath's `label`), TC."""
    if not lab:
        return []
    if "skipped" in lab:
        return [("label", "", f"skipped: {lab['skipped']}", "", "SKIP")]

    def figures(r: dict[str, Any]) -> str:
        return (
            f"{r['ours_ns']:.0f} / {r['before_ns']:.0f} / {r['lean_ns']:.0f} / {r['peer_ns']:.0f} ns "
            f"({r['ours_minus_before_ns']:+.1f} ns over before; {_x(r['ours_to_peer'])} pktstat-bpf's)"
        )

    head = "ns over empty, ours / before the label / lean / pktstat-bpf"
    est = lab["established"]
    quiet = est["ours_best_ns"] - est["before_best_ns"]
    goal_ns, goal_peer = lab["goal_ns_over_before"], lab["goal_ratio_to_peer"]
    frame = f"{lab['frame_bytes']}B TLS frames"
    rows: list[Row] = [
        (
            "label",
            f"TC established labelled flow, {frame}: {head}",
            f"{figures(est)}; quietest rounds: {quiet:+.0f} ns over before",
            f"<= +{goal_ns:.0f} ns",
            _verdict(est["ours_minus_before_ns"], goal_ns, True),
        ),
        (
            "label",
            f"TC established labelled flow, {frame}: ours / pktstat-bpf",
            _x(est["ours_to_peer"]),
            f"<= {goal_peer}x",
            _verdict(est["ours_to_peer"], goal_peer, True),
        ),
    ]
    n = _count(lab["flows"])
    for case, what in (
        ("first_packet", "first payload packet (insert, looked at)"),
        ("looking", "2nd and 3rd payload packets (looked at)"),
        ("spent", "4th packet (budget spent)"),
    ):
        rows.append(("label", f"TC {n} new flows in turn, {what}: {head}", figures(lab[case]), "report", ""))
    return rows


def _datapath_rows(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for c in d.values():
        if not isinstance(c, dict) or "none" not in c:
            continue
        none = c["none"]
        parts = [f"nothing: {none['mpps']:.2f} Mpps, {none['cpu_ns_per_packet']:.0f} ns CPU/pkt"]
        for mode in ("tc", "xdp"):
            rate, rate_e = _x(c[f"{mode}_rate_vs_none"]), _x(c[f"{mode}_rate_vs_empty"])
            cpu, cpu_e = c[f"{mode}_cpu_ns_over_none"], c[f"{mode}_cpu_ns_over_empty"]
            parts.append(
                f"{mode.upper()}: rate {rate} ({rate_e} of empty), "
                f"CPU +{cpu:.0f} ns/pkt (+{cpu_e:.0f} over empty)"
            )
        flows = f"{_count(c['flows'])} flow{'s' if c['flows'] > 1 else ''}"
        measure = f"{c['frame_bytes'] + 4}B frames, {flows}, veth live frames"
        rows.append(("2 datapath", measure, "; ".join(parts), "report", ""))
    return rows


def _snapshot_rows(s: dict[str, Any]) -> list[Row]:
    n, goal = _count(s["flows"]), s.get("target_ratio", 1.3)
    numpy_result = (
        f"{s['read_flows_ms']:.0f} / {s['raw_lookup_batch_ms']:.0f} ms = {_x(s['ratio'])} "
        f"(first read, fresh memory: {_x(s['cold_ratio'])}); "
        f"{s['read_flows_core_share_at_1s']:.0%} of a core at 1 s"
    )
    pandas_result = (
        f"{s['to_pandas_ms']:.0f} ms ({s['to_pandas_core_share_at_1s']:.0%} of a core at 1 s); "
        f"all addresses distinct: {s['to_pandas_all_distinct_addrs_ms']:.0f} ms"
    )
    return [
        (
            "3 snapshot",
            f"{n} flows to NumPy: read_flows / raw lookup_batch",
            numpy_result,
            f"<= {goal}x",
            _verdict(s["ratio"], goal, True),
        ),
        # issue 7: 1M flows "well under a second", held to the worst case (every address distinct)
        (
            "3 snapshot",
            f"{n} flows to pandas (Snapshot.to_pandas)",
            pandas_result,
            "< 1000 ms",
            _verdict(max(s["to_pandas_ms"], s["to_pandas_all_distinct_addrs_ms"]), 1000, True),
        ),
    ]


def _memory_rows(s: dict[str, Any]) -> list[Row]:
    n, m = _count(s["flows"]), s["memory"]
    rss = (
        f"{m['rss_holding_records_mb']:.0f} MB ({m['rss_holding_records_and_dataframe_mb']:.0f} MB); "
        f"records {m['record_bytes_per_flow']} B/flow"
    )
    return [
        (
            "5 memory",
            "kernel flow map per flow (per-CPU hash, preallocated)",
            f"{m['kernel_bytes_per_flow']:.0f} B ({s['cpus']} CPUs)",
            "report",
            "",
        ),
        ("5 memory", f"Python RSS holding {n} flows (+ DataFrame)", rss, "report", ""),
    ]


def _replay_rows(r: dict[str, Any]) -> list[Row]:
    goal, speedup = r.get("target_speedup_x", 5), r.get("speedup_vs_tshark_x")
    result = f"{r['replay_frames_per_s'] / 1e6:.2f} M frames/s"
    if speedup is not None:
        result += f" vs tshark {r['tshark_frames_per_s'] / 1e6:.2f} M = {speedup:.1f}x"
    measure = f"{r['frames'] / 1e6:g}M-frame pcap, frames/s vs tshark -z conv,ip"
    return [("4 replay", measure, result, f">= {goal}x", _verdict(speedup, goal, False))]


def _live_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for k, v in r.items():
        if isinstance(v, dict) and "ms_per_two_readings_and_join" in v:
            ms = (
                " / ".join(
                    str(v[f])
                    for f in ("ms_per_two_readings_and_join", "ms_external_filter", "ms_unique_check")
                )
                + " ms"
            )
            rows.append(
                (
                    "live views",
                    f"{k.replace('_', ' ')}: interval join / external filter / unique",
                    ms,
                    "report",
                    "",
                )
            )
    return rows


def _exporter_rows(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "exporter",
            f"{k.replace('_', ' ')}: refresh / scrape",
            f"{v['refresh_ms']} / {v['scrape_ms']} ms",
            "report",
            "",
        )
        for k, v in r.items()
        if isinstance(v, dict) and "refresh_ms" in v
    ]


def _process_rows(r: dict[str, Any]) -> list[Row]:
    result = (
        f"+{r['overhead_ns_per_call']} ns per call ({r['overhead_share']:.0%} of an unwatched round trip: "
        f"{r['cpu_ns_per_round_trip_unwatched']} -> {r['cpu_ns_per_round_trip_watched']} ns CPU)"
    )
    return [
        (
            "process mode",
            f"{r['backend']} backend: UDP sendto + recvfrom on loopback, CPU per call",
            result,
            "report",
            "",
        )
    ]


def _flowrecords_rows(r: dict[str, Any]) -> list[Row]:
    n, goal = _count(r["flows"]), r.get("target_ipfix_records_per_s", 1_000_000)
    return [
        (
            "flow records",
            f"IPFIX encoding of {n} records (UDP messages)",
            f"{r['ipfix_records_per_s'] / 1e6:.2f} M records/s ({r['ipfix_records_per_cpu_s'] / 1e6:.2f} M per CPU s)",
            f">= {goal / 1e6:g} M/s",
            _verdict(r["ipfix_records_per_s"], goal, False),
        ),
        (
            "flow records",
            f"Parquet writing of {n} records (every DataFrame column, zstd)",
            f"{r['parquet_records_per_s'] / 1e6:.2f} M records/s ({r['parquet_records_per_cpu_s'] / 1e6:.2f} M per CPU s)",
            "report",
            "",
        ),
    ]


def _drops_rows(r: dict[str, Any]) -> list[Row]:
    result = (
        f"+{r['overhead_ns_per_drop']} ns CPU per drop ({r['overhead_share']:.0%} of an unwatched drop: "
        f"{r['cpu_ns_per_drop_unwatched']} ns); the program itself {r['program_ns_per_run']} ns per run"
    )
    return [("drops", "--drops: UDP to a closed port on loopback, CPU per drop", result, "report", "")]


def _drain_rows(d: dict[str, Any]) -> list[Row]:
    p = d["per_packet"]
    per_packet = (
        f"{p['ours_ns']:.0f} ns vs {p['before_ns']:.0f} ns ({p['delta_ns']:+.0f} ns; "
        f"branch between the maps {p['branch_ns']:.0f} ns; lean {p['lean_ns']:.0f} ns)"
    )
    measure = "per packet, one hot flow (TC): two-sided table vs the program before draining"
    rows: list[Row] = [("drain", measure, per_packet, "<= +2 ns", _verdict(p["delta_ns"], 2, True))]
    for c in d["drain"]:
        n = f"{c['flows']:,}"
        drain = (
            f"{c['read_ms']:.1f} / {c['raw_lookup_batch_ms']:.1f} ms = {_x(c['drain_ratio'])} "
            f"(+ wait {c['wait_ms']:.1f} ms)"
        )
        interval = f"{c['read_ms'] + c['fold_ms']:.1f} ms = {_x(c['interval_ratio'])}"
        rows.append(
            (
                "drain",
                f"{n} flows: drain (lookup_and_delete_batch) / raw lookup_batch",
                drain,
                "<= 1.3x",
                _verdict(c["drain_ratio"], 1.3, True),
            )
        )
        rows.append(
            (
                "drain",
                f"{n} flows: drain + lifetime table / raw lookup_batch",
                interval,
                "<= 1.5x",
                _verdict(c["interval_ratio"], 1.5, True),
            )
        )
    return rows


def _contention_rows(d: dict[str, Any]) -> list[Row]:
    """Each case on every CPU at once: ns per packet per CPU (alone: on one CPU in the same rounds)."""
    if "skipped" in d:
        return [
            ("layout", "flow map layout (TC) on several CPUs at once", f"skipped: {d['skipped']}", "", "SKIP")
        ]
    cpus = ",".join(map(str, d["cpus"]))
    rows: list[Row] = []
    for case, r in d.items():
        if not isinstance(r, dict):
            continue
        name = "one hot flow" if case == "hot" else f"{int(case.partition('_')[2]):,} flows"
        result = ", ".join(
            f"{label} {r[f'{k}_ns']:.0f} ns (alone {r[f'{k}_one_cpu_ns']:.0f})"
            for k, label in (("ours", "per-CPU"), ("shared", "shared"), ("lean", "lean"))
        )
        result += f"; shared / per-CPU {_x(r['shared_to_ours'])}; at once >= {r['together_min']:.2f}"
        measure = f"flow map layout (TC), {name} on CPUs {cpus} at once: ns per packet per CPU"
        rows.append(("layout", measure, result, "report", ""))
    return rows


def _layout_rows(d: dict[str, Any]) -> list[Row]:
    goal = d["goal_64k_to_lean"]
    rows: list[Row] = []
    for case, r in d.items():
        if case == "contention":
            rows += _contention_rows(r)
            continue
        if not isinstance(r, dict):
            continue
        result = (
            f"per-CPU {r['ours_ns']:.0f} ns ({_x(r['ours_to_lean'])}), shared {r['shared_ns']:.0f} ns "
            f"({_x(r['shared_to_lean'])}); lean {r['lean_ns']:.0f} ns"
        )
        kind, _, n = case.partition("_")
        name = {
            "hot": "one hot flow",
            "flows": f"{int(n or 0):,} flows",
            "zipf": f"Zipf over {int(n or 0):,} flows",
        }
        measure = f"flow map layout (TC), {name[kind]}: per-CPU hash / shared hash with atomic adds, x lean"
        if case == "flows_65536":
            best = min(r["ours_to_lean"], r["shared_to_lean"])
            rows.append(("layout", measure, result, f"<= {goal}x lean", _verdict(best, goal, True)))
        else:
            rows.append(("layout", measure, result, "report", ""))
    return rows


def _day_rows(d: dict[str, Any]) -> list[Row]:
    warm = [s for s in d["samples"] if s["live_flows"]][1:]  # after the first sample: warmed up
    rss = [s["rss_mb"] for s in warm]
    kern = [s["kernel_map_mb"] for s in warm]
    hours = d["simulated_s"] / 3600
    flat = bool(rss) and max(rss) - min(rss) <= 1.0 and max(kern) == min(kern)
    return [
        (
            "day",
            f"{hours:g} h simulated, {d['new_flows_per_s']:,} new flows/s: RSS / kernel map memory after warm-up",
            f"RSS {min(rss, default=0):.1f}-{max(rss, default=0):.1f} MB, kernel {min(kern, default=0):.1f} MB "
            f"({d['wall_s']:.0f} s)",
            "flat",
            "PASS" if flat else "FAIL",
        ),
        (
            "day",
            "frames sent / packets drained / flows handed out; overflow",
            f"{d['frames_sent']:,} / {d['packets_drained']:,} / {d['flows_handed_out']:,}; {d['overflow_packets']}",
            "equal; 0",
            "PASS" if d["exact"] else "FAIL",
        ),
    ]


# (benchmark, rows of its results), in the order of the targets
ROWS: list[tuple[str, Callable[[dict[str, Any]], list[Row]]]] = [
    ("hotpath", _hotpath_rows),
    ("health", _health_rows),
    ("datapath", _datapath_rows),
    ("snapshot", _snapshot_rows),
    ("replay", _replay_rows),
    ("snapshot", _memory_rows),
    ("live", _live_rows),
    ("exporter", _exporter_rows),
    ("process", _process_rows),
    ("flowrecords", _flowrecords_rows),
    ("drops", _drops_rows),
    ("drain", _drain_rows),
    ("layout", _layout_rows),
    ("day", _day_rows),
]


def _header(doc: dict[str, Any]) -> str:
    m = doc.get("machine", {})
    load = m.get("load_average_at_start") or ["?"]
    quick = " (--quick: tiny sizes, not figures)" if doc.get("quick") else ""
    parts = [
        f"Measured {doc.get('date', '?')}{quick}",
        f"on {m.get('cpus', '?')} x {m.get('cpu', '?')} "
        f"(VM: {m.get('vm', '?')}, container: {m.get('container', '?')})",
        f"{m.get('memory_gb', '?')} GB",
        f"Linux {m.get('kernel', '?')}",
        f"clocksource {m.get('clocksource', '?')}",
        f"libbpf {m.get('libbpf', '?')}",
        f"load average {load[0] if isinstance(load[0], str) else round(load[0], 1)} at start",
    ]
    if m.get("commit"):
        parts.append(f"commit {m['commit']}")
    return parts[0] + " " + ", ".join(parts[1:]) + "."


def table(doc: dict[str, Any]) -> str:
    """The markdown report of a results document (docs/performance.md)."""
    lines = [_header(doc), "", "| Target | Measure | Result | Goal | Verdict |", "|---|---|---|---|---|"]
    failed: set[str] = set()
    for name, rows_of in ROWS:
        res = doc.get(name)
        if res is None or name in failed:
            continue
        if "error" in res or "skipped" in res:
            failed.add(name)
            what = f"error: {res['error']}" if "error" in res else f"skipped: {res['skipped']}"
            lines.append(f"| {name} | | {what} | | {'ERROR' if 'error' in res else 'SKIP'} |")
            continue
        try:
            rows = rows_of(res)
        except (KeyError, TypeError, ValueError) as e:
            rows = [(name, "", f"cannot tabulate: {e!r}", "", "ERROR")]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: prove the benchmarks run")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--json", default=str(DEFAULT_JSON), help="results file (default bench/results.json)")
    p.add_argument("--table", action="store_true", help="print the table of a --json file; run nothing")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.table:
        try:
            doc = json.loads(Path(args.json).read_text())
        except (OSError, ValueError) as e:
            print(f"bench/run.py: cannot read {args.json}: {e}", file=sys.stderr)
            return 1
        sys.stdout.write(table(doc))
        return 0
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"bench/run.py: unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})",
            file=sys.stderr,
        )
        return 2
    doc = run(names, args.quick)
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    sys.stdout.write(table(doc))
    print(f"bench: figures in {args.json}", file=sys.stderr)
    return 1 if any("error" in doc[n] for n in names) else 0


if __name__ == "__main__":
    sys.exit(main())
