"""The NumPy record dtype matches flow.h as the C++ compiler laid it out."""

import numpy as np
from _bench import bench_core
from pktstat_bpf import _core


def test_dtype_offsets_and_sizes_come_from_the_compiled_structs():
    layout = bench_core.record_layout()
    dt = _core.record_dtype
    assert dt.itemsize == layout.pop("__itemsize__")[1] == 160
    assert set(dt.names) == set(layout)
    for name, (offset, size) in layout.items():
        fdt, foff = dt.fields[name][:2]
        assert foff == offset, name
        assert fdt.itemsize == size, name


def test_dtype_decodes_a_record_written_by_cpp():
    rec = np.frombuffer(bench_core._test_record(), dtype=_core.record_dtype)[0]
    assert bytes(rec["saddr"]) == bytes(range(1, 17))
    assert bytes(rec["daddr"]) == bytes(0xF0 - i for i in range(16))
    assert rec["sport"] == 0x1234 and rec["dport"] == 0xABCD
    assert rec["proto"] == 17 and rec["dir"] == bench_core.FLOW_DIR_EGRESS and rec["ipver"] == 6
    assert rec["kind"] == bench_core.FLOW_KIND_RETRANSMIT == 1
    assert rec["ifindex"] == 0x01020304
    assert rec["pid"] == 0x0BADCAFE
    assert rec["cgroup_id"] == 0x1122334455667788
    assert rec["comm"] == b"comm-0123456789"
    assert rec["packets"] == 0x0102030405060708
    assert rec["bytes"] == 0x1112131415161718
    assert rec["first_seen"] == np.datetime64(1700000000123456789, "ns")
    assert rec["last_seen"] == np.datetime64(1700000001987654321, "ns")
    assert rec["syn_packets"] == 0x21222324
    assert rec["fin_packets"] == 0x31323334
    assert rec["rst_packets"] == 0x41424344
    assert rec["tcp_flags"] == 0x92  # SYN | ACK | CWR
    assert rec["app"] == 9  # L7_APP_WIREGUARD
    assert rec["app_tries"] == 0xFF  # L7_DONE
    assert rec["app_empty"] == 0
    assert rec["retrans_packets"] == 0x51525354
    assert rec["rtt_samples"] == 0x61626364
    assert rec["retrans_bytes"] == 0x7172737475767778
    assert rec["rtt_sum"] == np.timedelta64(3_000_000, "ns")
    assert rec["rtt_min"] == np.timedelta64(500_000, "ns")
    assert rec["rtt_max"] == np.timedelta64(1_500_000, "ns")


def test_tcp_fields_follow_the_times_naturally_aligned():
    """struct flow_value: the three 32-bit counts, the flag byte, the
    application label, its tries and one named padding byte after the four
    64-bit words."""
    dt = _core.record_dtype
    at = {n: dt.fields[n][1] for n in dt.names}
    base = at["packets"]
    names = ("syn_packets", "fin_packets", "rst_packets", "tcp_flags", "app", "app_tries", "app_empty")
    assert [at[n] - base for n in names] == [32, 36, 40, 44, 45, 46, 47]
    # struct flow_health after them: two 32-bit counts, then four 64-bit words
    names = ("retrans_packets", "rtt_samples", "retrans_bytes", "rtt_sum", "rtt_min", "rtt_max")
    assert [at[n] - base for n in names] == [48, 52, 56, 64, 72, 80]


def test_stats_dtype_matches_dir_stats():
    layout = bench_core.stats_layout()
    assert _core.stats_dtype.itemsize == layout.pop("__itemsize__")[1] == 48
    for name, (offset, size) in layout.items():
        assert _core.stats_dtype.fields[name][1] == offset
        assert _core.stats_dtype.fields[name][0].itemsize == size


def test_every_key_byte_survives_numpy_copies():
    """NumPy copies structured arrays field by field: a byte no field names
    is left as the destination memory had it, and two copies of one flow
    would then differ in their key bytes (live.KeyIndex hashes whole key
    words). Every byte of the record is a field, padding included."""
    from pktstat_bpf.core.keys import KeyIndex

    dt = _core.record_dtype
    covered = np.zeros(dt.itemsize, dtype=bool)
    for name in dt.names:
        fdt, off = dt.fields[name][:2]
        covered[off : off + fdt.itemsize] = True
    assert covered.all(), f"bytes no field names: {np.nonzero(~covered)[0].tolist()}"

    rng = np.random.default_rng(2)
    a = np.zeros(64, dt)
    a["saddr"] = rng.integers(0, 256, (64, 16))
    a["sport"] = np.arange(64)
    dirty = np.empty(64, dt)
    dirty.view(np.uint8)[:] = 0xFF  # reused memory
    np.take(a, rng.permutation(64), out=dirty)
    assert (KeyIndex(a).find(KeyIndex(dirty), dirty) >= 0).all()  # every flow joins its copy
