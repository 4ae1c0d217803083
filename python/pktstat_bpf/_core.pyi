"""Type stub of the engine module (src/cpp/bind*.cpp, pybind11).

Private: the public API is the Python package. Checked against the built
module by tests/test_typing.py (mypy's stubtest), so a binding added or
changed in C++ without this file fails the tests.
"""

from collections.abc import Callable, Sequence
from typing import Any, SupportsIndex, SupportsInt, TypedDict, type_check_only

import numpy as np

_Int = SupportsInt | SupportsIndex
#: progress(frames done, bytes of the file read, file size in bytes)
_Progress = Callable[[int, int, int], object] | None

#: NumPy dtype of one flow record (``struct flow_record`` in src/bpf/flow.h):
#: saddr, daddr ((16,)u1), sport, dport (u2), proto, dir, ipver (u1), ifindex,
#: pid (u4), cgroup_id (u8), comm (S16), packets, bytes (u8), first_seen,
#: last_seen (M8[ns]), syn_packets, fin_packets, rst_packets (u4: TCP packets
#: with SYN, FIN, RST set), tcp_flags (u1: the OR of the TCP flag bytes),
#: app (u1: the application label, src/bpf/l7.h enum l7_app: 0 not looked at
#: yet, 1 not recognised, then the protocols; interval and ended records carry
#: the flow's label over its life), app_tries (u1: payload packets looked at,
#: 0xff once labelled), app_empty (u1: packets without payload looked at).
record_dtype: np.dtype[np.void]
#: NumPy dtype of one direction's counters (``struct dir_stats``).
stats_dtype: np.dtype[np.void]
#: NumPy dtype of a flow active in a drained interval (``struct interval_record``,
#: src/cpp/flow_life.hpp): the record_dtype fields with the interval's packets,
#: bytes, first_seen and last_seen, then the flow's lifetime totals after the
#: interval: total_packets, total_bytes (u8), flow_first_seen (M8[ns]),
#: flow_tcp_flags (u1: the OR of the flow's TCP flags over its life; the
#: record's own tcp_flags and SYN/FIN/RST counts are the interval's).
interval_dtype: np.dtype[np.void]
#: NumPy dtype of a flow record handed out (``struct ended_record``): the
#: record_dtype fields with the flow's lifetime packets, bytes, first_seen and
#: last_seen, then delta_packets, delta_bytes (u8: since the flow's previous
#: record, so a flow's deltas sum to its totals) and reason (u1: FLOW_END_*).
ended_dtype: np.dtype[np.void]
#: one name of a flow (flow.h struct name_record): the flow key's fields, then the name's
name_dtype: np.dtype[np.void]
dns_name_dtype: np.dtype[np.void]
#: reason of an ended record: idle past the idle timeout (retired).
FLOW_END_IDLE: int
#: reason of an ended record: running past the active timeout since its last record (stays live).
FLOW_END_ACTIVE: int
#: reason of an ended record: the capture ended (drain(end=True); retired).
FLOW_END_END: int
#: reason of an ended record: the lifetime table was full (max_flows): the longest idle retired early.
FLOW_END_EVICTED: int

class FeatureMissing(OSError):
    """The kernel lacks something a mode needs; the message says what (exit code 69)."""

class TableTooLarge(OSError):
    """The flow table (max_entries) needs more kernel memory than there is; the message says how much (exit code 2)."""

class CaptureError(ValueError):
    """A capture file cannot be read (not pcap/pcapng, empty ...)."""

class LinkTypeError(CaptureError):
    """A capture file of a link type replay does not decode."""

class Interval:
    """One drained interval of a collector's (or a Replayer's) flow table.

    Every increment the programs made lands in exactly one interval, so the
    sums over all intervals are the run's totals, and per interval and
    direction ``stats`` obeys packets = flows + unparsed + overflow exactly.
    """

    #: the previous drain's ``now_ns`` (the load for the first one; 0 for a Replayer's first), epoch ns
    @property
    def start_ns(self) -> int: ...
    #: this drain's ``now_ns``, epoch ns
    @property
    def end_ns(self) -> int: ...
    #: interval_dtype: the flows active in the interval, with their lifetime totals
    @property
    def records(self) -> np.ndarray[Any, np.dtype[np.void]]: ...
    #: stats_dtype, one row per direction: the interval's conservation counters
    @property
    def stats(self) -> np.ndarray[Any, np.dtype[np.void]]: ...
    #: ended_dtype: records handed out by this drain (timeouts, end, evictions)
    @property
    def ended(self) -> np.ndarray[Any, np.dtype[np.void]]: ...
    #: name_dtype: the names the look read since the previous drain (TC, XDP, replay; empty otherwise)
    @property
    def names(self) -> np.ndarray[Any, np.dtype[np.void]]: ...
    #: names stored in the kernel's names map so far
    @property
    def names_written(self) -> int: ...
    #: names the kernel's names map had no room for so far
    @property
    def names_full(self) -> int: ...
    #: stats_dtype: the run's counters over every interval so far
    @property
    def totals(self) -> np.ndarray[Any, np.dtype[np.void]]: ...
    #: flows in the lifetime table after the drain
    @property
    def live_flows(self) -> int: ...
    #: flows retired early because the table was full, so far (FLOW_END_EVICTED)
    @property
    def evicted_flows(self) -> int: ...
    #: what the drain cost (ns): flipping the side and the wait for the programs (an RCU grace period)
    @property
    def wait_ns(self) -> int: ...
    #: what the drain cost (ns): reading and emptying the old side's flow map and counters
    @property
    def read_ns(self) -> int: ...
    #: what the drain cost (ns): folding the interval into the lifetime table (timeouts, end records)
    @property
    def fold_ns(self) -> int: ...

@type_check_only
class FlowLimits(TypedDict):
    idle_timeout_ns: int
    active_timeout_ns: int
    max_flows: int

def libbpf_version() -> str: ...

@type_check_only
class TestFaults(TypedDict):
    missing: set[str]
    fail_attach_at: int
    xdp_buff_len: bool | None
    progress_delay: float | None

def test_faults() -> TestFaults:
    """The test seam: PKTSTAT_BPF_TEST_FAULTS parsed now (src/cpp/test_knobs.hpp)."""

# -- TC ------------------------------------------------------------------------

@type_check_only
class LegacyFilter(TypedDict):
    direction: str
    handle: int
    priority: int
    prog_id: int

def remove_stale_filter(
    ifindex: _Int, direction: str, handle: _Int, priority: _Int, prog_id: _Int
) -> bool: ...
def release_clsact(ifindex: _Int, created: bool, pid: _Int) -> bool: ...
def sweep_stale_tc() -> int: ...

@type_check_only
class _MapReaders:
    """What every engine class has for its flow table (bind_flow_table).

    The kernel counts into one side of a two-sided table while a drain
    empties the other; the engine folds each drained interval into a
    lifetime table (per flow: packets, bytes, first and last seen).
    """

    def drain(
        self, now_ns: _Int | None = None, timeouts: bool = True, end: bool = False, use_batch: bool = True
    ) -> Interval:
        """Make the programs count into the other side, wait until none can
        still write the old one, read and empty it, and fold it into the
        lifetime table. ``now_ns`` (epoch ns) ends the interval: the wall
        clock by default (a Replayer: its latest frame's timestamp).
        ``timeouts``: hand out idle flows (retired) and flows past the
        active timeout (kept) at ``now_ns``; ``end``: then retire every flow.
        """

    def flows(self) -> np.ndarray[Any, np.dtype[np.void]]:
        """Every live flow's lifetime record (record_dtype), as of the last drain."""

    def names(self) -> np.ndarray[Any, np.dtype[np.void]]:
        """The names of every live flow, and of the flows the last drain
        ended (name_dtype), merged over the drains (empty where the
        programs read no names)."""

    @property
    def names_full(self) -> int:
        """Names the kernel's names map had no room for, as of the last drain."""

    def dns_names(self) -> np.ndarray[Any, np.dtype[np.void]]:
        """Every live flow named by a DNS answer seen before it (and those the
        last drain ended): the flow's key, the question's name in wire form,
        the answer's TTL and time seen (dns_name_dtype; empty where the
        programs read no names)."""

    @property
    def dns_addrs_full(self) -> int:
        """DNS answer addresses the kernel's dns_addrs map had no room for."""

    def set_flow_limits(
        self,
        idle_timeout_ns: _Int = 60_000_000_000,
        active_timeout_ns: _Int = 300_000_000_000,
        max_flows: _Int = 1_000_000,
    ) -> None:
        """The lifetime table's timeouts (0: never) and its bound on live flows."""

    @property
    def flow_limits(self) -> FlowLimits: ...
    @property
    def drains(self) -> int:
        """Drains so far."""

    def read_flows(self, use_batch: bool = True) -> np.ndarray[Any, np.dtype[np.void]]:
        """A drain without timeouts, then flows(): every flow's lifetime record."""

    def read_stats(self) -> np.ndarray[Any, np.dtype[np.void]]:
        """The run's counters: every drained interval plus what the side the programs count into holds now."""

@type_check_only
class _LiveCollector(_MapReaders):
    """What every live collector has: all-or-nothing attach, idempotent detach."""

    def attach(self) -> None: ...
    def detach(self) -> None: ...
    @property
    def attached(self) -> bool: ...
    @property
    def attach_path(self) -> str: ...
    @property
    def max_entries(self) -> int: ...

class TcCollector(_LiveCollector):
    def __init__(
        self,
        ifindex: _Int,
        max_entries: _Int = 65536,
        attach: str = "auto",
        l3_device: bool = False,
        arp: bool = True,
        tcp_health: bool = True,
    ) -> None: ...
    @property
    def created_qdisc(self) -> bool: ...
    @property
    def legacy_filters(self) -> list[LegacyFilter]: ...

# -- XDP -----------------------------------------------------------------------

@type_check_only
class XdpState(TypedDict):
    prog_id: int
    mode: str
    name: str

def xdp_query(ifindex: _Int) -> XdpState: ...

class XdpCollector(_LiveCollector):
    def __init__(
        self,
        ifindex: _Int,
        max_entries: _Int = 65536,
        mode: str = "auto",
        l3_device: bool = False,
        arp: bool = True,
        tcp_health: bool = True,
    ) -> None: ...
    @property
    def native_refusal(self) -> str: ...
    @property
    def buff_len(self) -> bool: ...

# -- cgroup ----------------------------------------------------------------------

@type_check_only
class ScanStats(TypedDict):
    netns: int
    sockets: int
    in_cgroup: int
    owned: int
    shared: int
    unclaimed: int
    listeners: int
    processes: int
    cgroups: int
    seconds: float

class CgroupCollector(_LiveCollector):
    def __init__(
        self,
        # std::string parameters: pybind11 takes str or bytes (paths need not be UTF-8)
        mount_root: str | bytes,
        rel_path: str | bytes,
        max_entries: _Int = 65536,
        owner_entries: _Int = 65536,
        path_cache: _Int = 16384,
        scan_sockets: bool = True,
        hier_root: str | bytes = "/",
    ) -> None: ...
    @property
    def owner_sources(self) -> list[str]: ...
    @property
    def cgroup_id(self) -> int: ...
    @property
    def scan_stats(self) -> ScanStats: ...
    def owner_stats(self) -> dict[str, int]: ...
    def resolve_cgroups(self, arg0: Sequence[_Int], /) -> dict[int, str]: ...

# -- process mode --------------------------------------------------------------------

@type_check_only
class ProcessEvents(TypedDict):
    unowned_packets: int
    unowned_bytes: int
    no_peer_packets: int
    no_peer_bytes: int
    owners_released: int
    owners_evicted: int

class ProcessCollector(_LiveCollector):
    def __init__(
        self,
        max_entries: _Int = 65536,
        backend: str = "auto",
        cgroup_mount: str = "",
        hier_root: str = "/",
        path_cache: _Int = 16384,
        owner_entries: _Int = 65536,
    ) -> None: ...
    @property
    def backend(self) -> str: ...
    @property
    def refused(self) -> list[tuple[str, str]]:
        """Backends passed over, as (name, reason) pairs in the order tried."""
    @property
    def hooks(self) -> list[str]: ...
    def proc_stats(self) -> ProcessEvents: ...
    def resolve_cgroups(self, arg0: Sequence[_Int], /) -> dict[int, str]: ...

# -- replay ------------------------------------------------------------------------

@type_check_only
class FileInfo(TypedDict):
    linktype: int
    linktype_name: str
    linktype_description: str
    frames: int
    damage: str

@type_check_only
class ReplayCounters(TypedDict):
    frames: int
    bytes: int
    kernel_frames: int
    engine_unparsed_frames: int
    engine_unparsed_bytes: int
    clipped_frames: int
    earliest_ts_ns: int
    latest_ts_ns: int

def capture_time_range(path: str | bytes) -> tuple[int, int] | None:
    """(earliest, latest) timestamp of a capture file's records in Unix ns, or None."""

class Replayer(_MapReaders):
    def __init__(self, max_entries: _Int = 65536, arp: bool = True, tcp_health: bool = True) -> None: ...
    def open_file(self, path: str | bytes) -> FileInfo: ...
    def advance(self, until_ts_ns: _Int, progress: _Progress = None, every: _Int = 65536) -> bool: ...
    @property
    def next_ts(self) -> int: ...
    @property
    def file(self) -> FileInfo: ...
    def clear(self) -> None: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def counters(self) -> ReplayCounters: ...

# -- drops (--drops) --------------------------------------------------------------

drop_dtype: np.dtype[np.void]

@type_check_only
class DropValue(TypedDict):
    packets: int
    bytes: int

@type_check_only
class DropCounters(TypedDict):
    packets: int
    bytes: int
    unparsed: int
    overflow: int
    reason_overflow: int

class DropWatcher:
    def __init__(self, ifindex: _Int = 0, netns: _Int = 0, max_entries: _Int = 16384) -> None: ...
    def attach(self) -> None: ...
    def detach(self) -> None: ...
    @property
    def attached(self) -> bool: ...
    @property
    def reasons(self) -> dict[int, str]: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def prog_id(self) -> int: ...
    def read_flows(self) -> np.ndarray: ...
    def read_reasons(self) -> dict[int, DropValue]: ...
    def read_stats(self) -> DropCounters: ...
