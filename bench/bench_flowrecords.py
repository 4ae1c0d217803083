"""Flow records (issue 20): IPFIX encoding and Parquet writing of 1M flow
records, in records per second of wall time and of CPU time (this process).

The records are synthetic (half IPv4, half IPv6, random addresses and
ports, TCP/UDP/ICMP; a quarter named: TLS server names, DNS queries), handed
out as one batch of final records, encoded as a TC capture's are (the flows
with names in templates 260/261). IPFIX: the
encoder's UDP messages (1400 octets at most), every message made, not sent
(the encoding is the cost the capture loop pays; a send is one system call
per message). Parquet: ``ParquetWriter`` into a temporary directory (the
DataFrame columns, zstd, one file per hour, written, synced and renamed).
Target: at least 1M records/s of IPFIX encoding. No privilege needed."""

from __future__ import annotations

import shutil
import tempfile
import time

import numpy as np

FLOWS = 1 << 20
QUICK_FLOWS = 1 << 14
ROUNDS = 3
TARGET_IPFIX = 1_000_000


def _batch(n: int):
    from pktstat_bpf import RECORD_DTYPE, Snapshot, Totals
    from pktstat_bpf.output.flowrecords import from_snapshot

    rng = np.random.default_rng(20)
    r = np.zeros(n, RECORD_DTYPE)
    r["saddr"] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    r["daddr"] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    r["ipver"] = np.where(np.arange(n) % 2 == 0, 4, 6)
    v4 = r["ipver"] == 4
    r["saddr"][v4, :10], r["saddr"][v4, 10:12] = 0, 0xFF
    r["daddr"][v4, :10], r["daddr"][v4, 10:12] = 0, 0xFF
    r["sport"] = rng.integers(0, 65536, n)
    r["dport"] = rng.integers(0, 65536, n)
    r["proto"] = rng.choice([6, 17, 1], n)
    r["dir"], r["ifindex"] = rng.integers(0, 2, n), 2
    r["packets"] = rng.integers(1, 1000, n)
    r["bytes"] = r["packets"] * 700
    t0 = 1_700_000_000 * 10**9
    r["first_seen"] = (t0 + rng.integers(0, 3600 * 10**9, n)).astype("datetime64[ns]")
    r["last_seen"] = r["first_seen"] + rng.integers(0, 60 * 10**9, n).astype("timedelta64[ns]")
    return from_snapshot(
        Snapshot(r, Totals(), 3660.0, t0 / 1e9, t0 / 1e9 + 3660.0, "tc", columns=_names(r, rng))
    )


def _names(r: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A quarter of the flows named as a TC capture names them: TCP ones a
    TLS server name and ALPN list, UDP ones a DNS query with its type and
    response code (core/names.py's columns)."""
    from pktstat_bpf.core import names

    n = len(r)
    cols = {c: np.full(n, None, object) for c in names.COLUMNS}
    named = rng.random(n) < 0.25
    pool = np.array([f"host{i}.example.org" for i in range(1000)], object)
    tls = np.flatnonzero(named & (r["proto"] == 6))
    cols["server_name"][tls] = pool[rng.integers(0, 1000, len(tls))]
    cols["alpn"][tls] = "h2,http/1.1"
    dns = np.flatnonzero(named & (r["proto"] == 17))
    cols["dns_query"][dns] = pool[rng.integers(0, 1000, len(dns))]
    cols["dns_qtype"][dns] = np.array(["A", "AAAA", "HTTPS"], object)[rng.integers(0, 3, len(dns))]
    cols["dns_rcode"][dns] = "NOERROR"
    return cols


def _timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def run(quick: bool = False) -> dict:
    from pktstat_bpf.output.ipfix import Encoder
    from pktstat_bpf.output.parquet import ParquetWriter

    n = QUICK_FLOWS if quick else FLOWS
    batch = _batch(n)

    def encode() -> None:
        octets = sum(len(buf) for buf, _ in Encoder(names=True).data_messages(batch))
        assert octets > n * 50

    enc = [_timed(encode) for _ in range(ROUNDS)]
    wall, cpu = min(w for w, _ in enc), min(c for _, c in enc)
    res: dict = {"flows": n, "rounds": ROUNDS, "target_ipfix_records_per_s": TARGET_IPFIX}
    res["ipfix_encode_ms"] = round(wall * 1e3, 1)
    res["ipfix_records_per_s"] = round(n / wall)
    res["ipfix_records_per_cpu_s"] = round(n / cpu) if cpu > 0 else None

    times = []
    for _ in range(ROUNDS if quick else 2):
        d = tempfile.mkdtemp(prefix="pktstat-bench-parquet-")
        try:

            def write() -> None:
                w = ParquetWriter(d, roll=3600)
                w.write(batch)
                w.close()

            times.append(_timed(write))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    wall, cpu = min(w for w, _ in times), min(c for _, c in times)
    res["parquet_write_ms"] = round(wall * 1e3, 1)
    res["parquet_records_per_s"] = round(n / wall)
    res["parquet_records_per_cpu_s"] = round(n / cpu) if cpu > 0 else None
    return res
