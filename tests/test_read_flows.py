"""read_flows and the record buffer it reuses (flow_table.cpp): the buffer of
a snapshot NumPy has released is kept for the next read, so a steady refresh
does not fault in fresh pages each time. A reused buffer must never be one a
live array still uses, must hold only the new read's rows, and a small
snapshot must never pin a large buffer."""

from __future__ import annotations

import struct

import numpy as np
from _bench import bench_core

TS = 1_700_000_000_000_000_000


def _frames(n: int, sport0: int) -> list[bytes]:
    """n UDP flows 10.0.0.1:sport0+i -> 10.0.0.2:53 (Ethernet)."""
    out = []
    for i in range(n):
        ip = struct.pack("!BBHHHBBHII", 0x45, 0, 28, 1, 0, 64, 17, 0, 0x0A000001, 0x0A000002)
        udp = struct.pack("!HHHH", sport0 + i, 53, 8, 0)
        out.append(bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + udp)
    return out


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _sports(recs: np.ndarray) -> list[int]:
    return sorted(int(p) for p in recs["sport"])


def test_a_released_buffer_is_reused_and_never_aliases_a_live_one(bpf):
    from pktstat_bpf import _core

    _core._drop_spare_records()
    r = _core.Replayer(max_entries=4096)
    bench_core.replay_frames(r, 1, _frames(100, 1000), [TS] * 100)
    a = r.read_flows()
    b = r.read_flows()  # a is alive: a fresh buffer
    assert not np.shares_memory(a, b)
    assert _sports(a) == _sports(b) == list(range(1000, 1100))
    a_ptr = _ptr(a)
    del a  # its buffer becomes the spare
    c = r.read_flows()
    assert _ptr(c) == a_ptr and not np.shares_memory(b, c)
    assert _sports(c) == list(range(1000, 1100)) and int(c["packets"].sum()) == 100

    # fewer flows in the reused buffer: only this read's rows, nothing stale
    r.clear()
    bench_core.replay_frames(r, 1, _frames(7, 5000), [TS] * 7)
    del c
    d = r.read_flows()
    assert _ptr(d) == a_ptr
    assert _sports(d) == list(range(5000, 5007)) and [int(p) for p in d["packets"]] == [1] * 7
    assert _sports(b) == list(range(1000, 1100))  # the live array is untouched


def test_a_small_snapshot_does_not_pin_a_large_buffer(bpf):
    from pktstat_bpf import _core

    _core._drop_spare_records()
    big = _core.Replayer(max_entries=65536)
    small = _core.Replayer(max_entries=256)
    bench_core.replay_frames(big, 1, _frames(3, 2000), [TS] * 3)
    bench_core.replay_frames(small, 1, _frames(2, 3000), [TS] * 2)
    x = big.read_flows()
    big_ptr = _ptr(x)
    del x  # spare: room for 65536 records
    y = small.read_flows()
    assert _ptr(y) != big_ptr and _sports(y) == [3000, 3001]
    z = big.read_flows()  # the large spare is still there for the large map
    assert _ptr(z) == big_ptr and _sports(z) == [2000, 2001, 2002]
