"""The shipped TC and XDP objects (as the build compiles them for the engine's
skeletons: build/bench/bpf, made with the benchmark module _bench_core by
make test) run directly by BPF_PROG_TEST_RUN, loaded as the collectors load them: the live clock (CLOCK_MONOTONIC read at most once
per tick per CPU, count.bpf.h) and the XDP frame length (the linear part for a
single-buffer frame, bpf_xdp_get_buff_len for a multi-buffer one).
"""

from __future__ import annotations

import struct
import time

import pytest

# More than one tick at any HZ (>= 100) plus the time jiffies may lag.
TICK_SLACK_NS = 20_000_000


def _object(name: str) -> str:
    from _bench import package_object

    return str(package_object(name))


def _frame(size: int) -> bytes:
    """Ethernet + IPv4 + UDP 10.0.0.1:40000 -> 10.0.0.2:9, `size` bytes."""
    eth = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, size - 14, 1, 0x4000, 64, 17, 0, 0x0A000001, 0x0A000002)
    udp = struct.pack("!HHHH", 40000, 9, size - 34, 0)
    return (eth + ip + udp).ljust(size, b"\0")


def _mono() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def test_live_stamps_are_the_monotonic_clock_to_within_a_tick(bpf):
    from _bench import bench_core

    o = bench_core._BenchObject(_object("tc"))
    fd = o.prog_fd("tc_ingress")
    frame = _frame(60)
    b1 = _mono()
    bench_core._bench_test_run(fd, frame)
    a1 = _mono()
    time.sleep(0.1)
    b2 = _mono()
    bench_core._bench_test_run(fd, frame)
    a2 = _mono()

    recs = bench_core._bench_read_flows(o.map_fd("flows"))  # offset 0: CLOCK_MONOTONIC ns as stored
    assert len(recs) == 1 and int(recs[0]["packets"]) == 2 and int(recs[0]["bytes"]) == 120
    first, last = (int(recs[0][f].astype("int64")) for f in ("first_seen", "last_seen"))
    # never after the packet, at most about a tick before it
    assert b1 - TICK_SLACK_NS <= first <= a1
    assert b2 - TICK_SLACK_NS <= last <= a2
    assert last > a1  # a later tick reads the clock again
    o.close()


@pytest.mark.parametrize("size", [60, 1000, 6000, 12000])
def test_xdp_counts_the_whole_frame_single_or_multi_buffer(bpf, size):
    """6000 and 12000 bytes do not fit one test-run buffer: the kernel hands
    the program a multi-buffer frame, counted whole; smaller frames are their
    linear part."""
    from _bench import bench_core

    if not bench_core.xdp_kernel_has_buff_len():
        pytest.skip("the kernel has no bpf_xdp_get_buff_len (multi-buffer XDP)")
    o = bench_core._BenchObject(_object("xdp"), rodata={"cfg_buff_len": b"\x01"}, xdp_frags=True)
    res = bench_core._bench_test_run(o.prog_fd("xdp_count"), _frame(size), repeat=3)
    assert res["retval"] == 2  # XDP_PASS
    recs = bench_core._bench_read_flows(o.map_fd("flows"))
    stats = bench_core._bench_read_stats(o.map_fd("stats"))
    assert [(int(r["packets"]), int(r["bytes"]), int(r["sport"]), int(r["dport"])) for r in recs] == [
        (3, 3 * size, 40000, 9)
    ]
    ing = stats[0]
    assert (int(ing["packets"]), int(ing["bytes"]), int(ing["unparsed_packets"])) == (3, 3 * size, 0)
    o.close()
