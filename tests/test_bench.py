"""bench/run.py --quick: every benchmark runs in a tiny configuration, so the
bench code cannot rot between `make bench` runs. Not a benchmark: no figure
is asserted. What is asserted is that each benchmark ran to the end, and so
passed its own checks (our TC and XDP programs counted exactly the packets
each was given, read_flows returned every flow filled in, replay conserved
every frame), and that the report covers every target of issue 8.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parent.parent / "bench" / "run.py"
BENCHMARKS = (
    "hotpath",
    "datapath",
    "snapshot",
    "replay",
    "live",
    "exporter",
    "process",
    "drops",
    "drain",
    "layout",
)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=600)


def test_quick_run_reports_every_target(bpf, tmp_path):
    out = tmp_path / "results.json"
    p = _run("--quick", "--json", str(out))
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["machine"]["kernel"]
    from bench_datapath import live_frames_refused

    refused = live_frames_refused()  # the datapath's generator: a kernel may refuse it (its clean refusal)
    for name in BENCHMARKS:
        if name == "datapath" and refused:
            assert doc[name]["skipped"] == refused
            continue
        assert "error" not in doc[name] and "skipped" not in doc[name], (name, doc[name])

    hot = doc["hotpath"]
    for fam in ("tc", "xdp"):
        assert set(hot[fam]) == {"hot_ipv4", "hot_ipv6", "flows_1024", "flows_4096", "zipf_4096"}
        for case in hot[fam].values():
            assert all(len(v) == hot["rounds"] for v in case["rounds_ns"].values())
    health = doc["health"]
    for case in ("ack", "data"):
        assert health[case]["lean_ns"] > 0 and health[case]["ours_ns"] > 0 and health[case]["off_ns"] > 0
    dp = doc["datapath"]
    combos = {k for k, v in dp.items() if isinstance(v, dict)}
    assert refused or combos == {"60B_1_flows", "60B_1024_flows", "1514B_1_flows", "1514B_1024_flows"}
    for k in combos:
        assert set(dp[k]) >= {"none", "tc_empty", "tc_ours", "xdp_empty", "xdp_ours"}
    snap = doc["snapshot"]
    assert snap["flows"] == 16384 and snap["memory"]["record_bytes_per_flow"] == 160
    assert doc["replay"]["frames"] == 20_000
    if shutil.which("tshark"):
        assert doc["replay"]["target_speedup_x"] == 5 and doc["replay"]["speedup_vs_tshark_x"] > 0
    else:
        assert doc["replay"]["tshark"] == "not installed"

    drain = doc["drain"]
    assert [c["flows"] for c in drain["drain"]] == [10_000] and drain["per_packet"]["before_ns"] > 0
    layout = doc["layout"]
    assert {k for k, v in layout.items() if isinstance(v, dict)} == {
        "hot",
        "flows_1024",
        "flows_4096",
        "zipf_4096",
        "contention",
    }
    contention = layout["contention"]
    if "skipped" not in contention:  # a machine of two CPUs or more
        assert {k for k, v in contention.items() if isinstance(v, dict)} == {"hot", "flows_1024"}
        for case in ("hot", "flows_1024"):
            c = contention[case]
            assert (
                len(c["ours_per_cpu_ns"]) == len(contention["cpus"])
                and c["calls_on_all"] == 4 * layout["rounds"]
            )

    table = p.stdout
    assert table.startswith("Measured ") and "(--quick: tiny sizes, not figures)" in table
    for target in (
        "| 1 hot path |",
        f"| datapath | | skipped: {refused} | | SKIP |" if refused else "| 2 datapath |",
        "| 19 health |",
        "| 3 snapshot |",
        "| 4 replay |",
        "| 5 memory |",
        "| drain |",
        "| layout |",
    ):
        assert target in table
    hot_rows = [ln for ln in table.splitlines() if "hot IPv" in ln]
    assert len(hot_rows) == 4 and all(ln.endswith(("| PASS |", "| FAIL |")) for ln in hot_rows)
    # the table is a pure function of the JSON: `--table` prints it again
    again = _run("--table", "--json", str(out))
    assert (again.returncode, again.stdout) == (0, table)


def test_unknown_benchmark_is_a_usage_error():
    p = _run("--only", "hotpath,warp")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "bench/run.py: unknown benchmark warp (known: hotpath, health, datapath, snapshot, replay, live, exporter, process, flowrecords, drops, drain, layout, day)"
    ]


def test_table_of_a_missing_file_is_one_line(tmp_path):
    p = _run("--table", "--json", str(tmp_path / "none.json"))
    assert p.returncode == 1
    assert p.stderr.startswith(f"bench/run.py: cannot read {tmp_path / 'none.json'}: ")
    assert p.stderr.count("\n") == 1
