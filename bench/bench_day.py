"""A time-compressed day of continuous capture (issue 16): 2,000 new flows
per second of simulated time for 86,400 s, through the replay engine's
program by BPF_PROG_TEST_RUN (2,000 runs a second, each with the next
source address: bench/bpf/rotate.bpf.c; a key comes round again only after
131 s, when the idle timeout of 60 s has retired it), drained once per simulated second with the timeouts applied on
the simulated clock: what a node's exporter does for a day, in minutes.

Reports, sampled every simulated hour, the kernel memory of the flow maps
(fdinfo memlock: the maps are preallocated, so it is flat by construction),
the process RSS (the lifetime table: flat once the first idle timeout has
passed), the live flows of the lifetime table, and at the end: overflow
(0), packets in every interval against frames sent (equal), flows handed
out against flows made (equal). --quick simulates 10 minutes.
"""

from __future__ import annotations

import gc
import struct
import time
from typing import Any

from _bench import V4_SADDR_OFF, bench_core, bench_object, fd_memlock, root_reason, rss_bytes, udp_v4

NEW_PER_S = 2_000
IDLE_S = 60
DAY = 86_400
HOUR = 3_600
S = 1_000_000_000
T0 = 1_700_000_000 * S


def _u32(v: int) -> bytes:
    return struct.pack("<I", v)


def _ctx(ts_ns: int, wire: int) -> bytes:
    """A ``struct __sk_buff`` as far as ``cb[]``: the frame's timestamp and
    wire length where the replay program reads them (REPLAY_CB_*)."""
    return bytes(48) + struct.pack("<5I", ts_ns & 0xFFFFFFFF, ts_ns >> 32, wire, 0, 0)


def run(quick: bool = False) -> dict[str, Any]:
    reason = root_reason()
    if reason:
        return {"skipped": reason}
    from pktstat_bpf import _core

    seconds = 600 if quick else DAY
    r = _core.Replayer(max_entries=65536)
    r.set_flow_limits(idle_timeout_ns=IDLE_S * S, active_timeout_ns=0, max_flows=1_000_000)
    # the rotator rewrites the source address with 10.0.0.0 + a counter (mod 2^18) before each
    # run, then tail-calls the replay program: 2,000 runs are 2,000 new flows, and a key comes
    # round again after 131 s, past the idle timeout
    ro = {
        "cfg_off": _u32(V4_SADDR_OFF),
        "cfg_base": _u32(0x0A000000),
        "cfg_mask": _u32((1 << 18) - 1),
        "cfg_zipf": b"\0",
    }
    rot = bench_core._BenchObject(str(bench_object("rotate")), rodata=ro, xdp_frags=False)
    bench_core._bench_update(rot.map_fd("next_tc"), _u32(0), _u32(bench_core._bench_replay_prog_fd(r)))
    prog, frame = rot.prog_fd("tc_rotate"), udp_v4(60)
    fds = bench_core._bench_replay_fds(r)
    kernel = sum(fd_memlock(fd) for fd in fds)
    samples: list[dict[str, Any]] = []
    sent = ended = drained_packets = overflow = 0
    every = 100 if quick else HOUR
    gc.collect()
    t_start = time.perf_counter()
    for sec in range(seconds):
        base = T0 + sec * S
        bench_core._bench_test_run(prog, frame, NEW_PER_S, ctx=_ctx(base, len(frame)))
        sent += NEW_PER_S
        iv = r.drain(base + S, True, sec == seconds - 1)
        drained_packets += int(iv.records["packets"].sum())
        overflow += int(iv.stats["overflow_packets"].sum())
        ended += len(iv.ended)
        if (sec + 1) % every == 0:
            samples.append(
                {
                    "simulated_s": sec + 1,
                    "live_flows": iv.live_flows,
                    "rss_mb": round(rss_bytes() / 2**20, 1),
                    "kernel_map_mb": round(sum(fd_memlock(fd) for fd in fds) / 2**20, 1),
                }
            )
    rot.close()
    wall = time.perf_counter() - t_start
    # the per-CPU values grow with the CPUs: the kernel's accounting of a preallocated per-CPU
    # hash (htab_map_mem_usage) holds round_up(value_size, 8) x possible CPUs x (max_entries +
    # possible CPUs) for them, per side; the rest does not depend on the CPU count
    ncpu = bench_core.possible_cpus()
    value = _core.record_dtype.itemsize - 72  # struct flow_value (8-aligned) after the 72-byte key
    est64 = kernel + (64 - ncpu) * 2 * value * (65536 + ncpu)
    return {
        "simulated_s": seconds,
        "new_flows_per_s": NEW_PER_S,
        "wall_s": round(wall, 1),
        "kernel_map_mb_at_start": round(kernel / 2**20, 1),
        "possible_cpus": ncpu,
        "kernel_map_mb_64_cpus_computed": round(est64 / 2**20, 1),
        "samples": samples,
        "frames_sent": sent,
        "packets_drained": drained_packets,
        "flows_handed_out": ended,
        "overflow_packets": overflow,
        "exact": sent == drained_packets == ended and overflow == 0,
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
