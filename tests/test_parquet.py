"""Parquet output (--parquet DIR): Hive-partitioned files read back by DuckDB
(from PyPI: an oracle of its own) and by pktstat_bpf.read_flows equal the
run's records exactly; files roll and land in the partition of their hour;
a SIGKILLed writer leaves no partial file visible; a full disk (a tmpfs of
the test's own, in a private mount namespace) is one line and exit 1 with
nothing partial left behind."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pktstat_bpf
import pytest
from netns import NetnsPair
from pktstat_bpf.output.flowrecords import ACTIVE, IDLE, FlowBatch
from pktstat_bpf.output.parquet import ParquetWriter
from traffic import ping, send_udp

duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed (pip install '.[test]')")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (pip install '.[test]')")

OFFICE = Path(__file__).parent / "data" / "office.pcap"
KEY = ["src_ip", "dst_ip", "src_port", "dst_port", "proto"]


def _duck(directory: Path) -> list[tuple]:
    """Every row DuckDB reads from the Hive-partitioned files, as tuples of
    the key, counts, times (ns since the epoch), reason and partition."""
    q = f"""
        SELECT src_ip, dst_ip, src_port, dst_port, proto, packets, bytes,
               epoch_ns(first_seen), epoch_ns(last_seen), end_reason, CAST(date AS VARCHAR), CAST(hour AS INTEGER)
        FROM read_parquet('{directory}/**/*.parquet', hive_partitioning = true)
    """
    return sorted(duckdb.sql(q).fetchall())


def _expected(snap, reason: str = "end of capture") -> list[tuple]:
    df = snap.to_pandas()
    out = []
    for row in df.itertuples(index=False):
        end = row.last_seen
        out.append(
            (
                row.src_ip,
                row.dst_ip,
                row.src_port,
                row.dst_port,
                str(row.proto),
                row.packets,
                row.bytes,
                row.first_seen.value,
                end.value,
                reason,
                str(end.date()),
                end.hour,
            )
        )
    return sorted(out)


def test_replay_to_parquet_reads_back_exactly_in_duckdb_and_read_flows(bpf, tmp_path):
    out = tmp_path / "flows"
    p = subprocess.run(
        [sys.executable, "-m", "pktstat_bpf", "--pcap", str(OFFICE), "--parquet", str(out), "-j"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    snap = pktstat_bpf.replay(str(OFFICE))
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    assert len(files) == 1 and re.fullmatch(
        r"date=2024-03-14/hour=09/part-\d{8}T\d{6}-\d+-1\.parquet", files[0]
    )
    assert _duck(out) == _expected(snap) and len(snap.records) == 25  # 23 IP flows, 2 ARP flows

    df = pktstat_bpf.read_flows(out)
    want = snap.to_pandas()
    from pktstat_bpf.core import names
    from pktstat_bpf.core.frame import COLUMNS

    head = [
        *COLUMNS,
        *names.COLUMNS,
        "end_reason",
        "interval_start",
        "interval_end",
    ]  # (a replay reads names)
    assert list(df.columns[: len(head)]) == head
    got = df.sort_values(KEY + ["bytes"]).reset_index(drop=True)
    want = want.sort_values(KEY + ["bytes"]).reset_index(drop=True)
    for col in COLUMNS:
        assert [str(v) for v in got[col]] == [str(v) for v in want[col]], col
    assert set(got["end_reason"]) == {"end of capture"}
    assert (got["interval_end"] - got["interval_start"]).dt.total_seconds().round(6).unique().tolist() == [
        58.0181
    ]
    assert json.loads(p.stdout)["totals"]["flows"] == 25


def _batch(n: int, end_ns: np.ndarray, reason: int, sport0: int = 1000) -> FlowBatch:
    r = np.zeros(n, pktstat_bpf.RECORD_DTYPE)
    r["saddr"][:, 10:12] = 0xFF
    r["saddr"][:, 12:] = (10, 0, 0, 1)
    r["daddr"][:, 10:12] = 0xFF
    r["daddr"][:, 12:] = (10, 0, 0, 2)
    r["ipver"], r["proto"], r["dport"] = 4, 17, 53
    r["sport"] = sport0 + np.arange(n)
    r["packets"] = np.arange(n) + 1
    r["bytes"] = r["packets"] * 100
    r["first_seen"] = (end_ns - 10**9).astype("datetime64[ns]")
    r["last_seen"] = end_ns.astype("datetime64[ns]")
    start = np.full(n, int(end_ns.min()) - 10**9)
    return FlowBatch(
        r, np.full(n, reason, np.uint8), end_ns - 10**9, end_ns, start, end_ns.astype(np.int64), mode="tc"
    )


def test_writer_rolls_and_partitions_by_the_hour_of_flow_end(tmp_path):
    """Two batches in one roll interval make one file per hour; a batch in
    the next interval (roll 0: every write rolls) a file of its own. Idle
    and active reasons (what continuous capture will hand over) are kept."""
    hour = 1_710_406_800 * 10**9  # 2024-03-14T09:00Z
    w = ParquetWriter(tmp_path, roll=3600)
    w.write(_batch(3, np.array([hour + 5, hour + 3600 * 10**9 + 7, hour + 9]), IDLE))
    w.write(_batch(2, np.array([hour + 11, hour + 12]), ACTIVE, sport0=2000))
    assert list(tmp_path.rglob("*.parquet")) == []  # not before the interval ends
    w.flush()
    w.roll = 0
    w.write(_batch(1, np.array([hour + 13]), IDLE, sport0=3000))
    w.close()
    rel = sorted(str(f.relative_to(tmp_path)).split("/part-")[0] for f in w.files)
    assert rel == ["date=2024-03-14/hour=09", "date=2024-03-14/hour=09", "date=2024-03-14/hour=10"]
    rows = duckdb.sql(
        f"SELECT src_port, packets, end_reason, CAST(hour AS INTEGER) FROM read_parquet('{tmp_path}/**/*.parquet', "
        "hive_partitioning = true) ORDER BY src_port"
    ).fetchall()
    assert rows == [
        (1000, 1, "idle", 9),
        (1001, 2, "idle", 10),
        (1002, 3, "idle", 9),
        (2000, 1, "active", 9),
        (2001, 2, "active", 9),
        (3000, 1, "idle", 9),
    ]
    assert not [f for f in tmp_path.rglob("*") if f.name.startswith(".")]


def test_live_capture_to_parquet_equals_the_report(netns: NetnsPair, tmp_path):
    out = tmp_path / "live"
    p = netns.exec_a(
        sys.executable,
        "-m",
        "pktstat_bpf",
        "-i",
        "va",
        "-t",
        "0",
        "-j",
        "--parquet",
        str(out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "counting on va" in p.stderr.readline()
    with netns.in_a():
        for i in range(20):  # 20 short flows of each family
            send_udp(netns.B4, 8000 + i, 1 + i % 3, 50)
            send_udp(netns.B6, 9000 + i, 1 + i % 2, 70)
        assert ping(netns.B6, 2) == 2
    p.send_signal(signal.SIGINT)
    stdout, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    flows = json.loads(stdout)["flows"]
    got = duckdb.sql(
        f"SELECT src_ip, dst_ip, src_port, dst_port, proto, packets, bytes FROM "
        f"read_parquet('{out}/**/*.parquet', hive_partitioning = true)"
    ).fetchall()
    want = [
        (f["srcIp"], f["dstIp"], f["srcPort"], f["dstPort"], f["proto"], f["packets"], f["bytes"])
        for f in flows
    ]
    assert sorted(got) == sorted(want) and len(got) >= 42
    assert not netns.ours_attached()


KILLED_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from test_parquet import _batch
    from pktstat_bpf.output.parquet import ParquetWriter
    w = ParquetWriter(sys.argv[1], roll=0)
    hour = 1_710_406_800 * 10**9
    b = _batch(400_000, hour + np.arange(400_000), 3)
    for i in range(100):
        print("writing", flush=True)
        w.write(b)
""")


def test_a_sigkilled_writer_leaves_no_partial_file_visible(tmp_path):
    """Killed in the middle of its third file: the two files before are
    complete (DuckDB reads every row), the third is only a hidden temporary
    name that no *.parquet glob and no dataset reader sees."""
    p = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(3):
        assert p.stdout.readline() == "writing\n"
    deadline = time.monotonic() + 30
    while (
        not any(tmp_path.rglob(".part-*.tmp")) and time.monotonic() < deadline
    ):  # the third file is being written
        time.sleep(0.001)
    p.kill()
    p.wait()
    visible = sorted(tmp_path.rglob("*.parquet"))
    hidden = [f for f in tmp_path.rglob(".*") if f.is_file()]
    assert len(visible) == 2 and [f.name.endswith(".parquet.tmp") for f in hidden] == [True]
    for f in visible:
        assert pq.ParquetFile(f).metadata.num_rows == 400_000
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/**/*.parquet')").fetchall() == [
        (800_000,)
    ]
    assert len(pktstat_bpf.read_flows(tmp_path)) == 800_000


def test_a_full_disk_is_one_line_and_leaves_nothing_partial(bpf, tmp_path):
    """A 16 KiB tmpfs of the test's own (private mount namespace), filled:
    the replay's report is printed, then one line, exit 1, and neither a
    visible nor a temporary file is left."""
    mnt, log = tmp_path / "mnt", tmp_path / "after"
    mnt.mkdir()
    script = (
        f"mount -t tmpfs -o size=16k pbt-full {mnt} && "
        f"(dd if=/dev/zero of={mnt}/fill bs=4k 2>/dev/null; true) && "
        f"{sys.executable} -m pktstat_bpf --pcap {OFFICE} --parquet {mnt}/out; "
        f"echo rc=$? > {log}; find {mnt}/out -type f >> {log}"
    )
    p = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    after = log.read_text().splitlines()
    assert after == ["rc=1"], after
    assert p.stdout.startswith("# replay of ") and len(p.stdout.splitlines()) == 26  # 23 IP, 2 ARP flows
    assert re.fullmatch(
        rf"pktstat-bpf: error: --parquet: cannot write {mnt}/out/date=2024-03-14/hour=09/"
        r"part-\d{8}T\d{6}-\d+-1\.parquet: No space left on device\n",
        p.stderr,
    ), p.stderr
    assert not any(mnt.iterdir())  # the tmpfs was the namespace's own
