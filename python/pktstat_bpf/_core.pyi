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
#: last_seen (M8[ns]).
record_dtype: np.dtype[np.void]
#: NumPy dtype of one direction's counters (``struct dir_stats``).
stats_dtype: np.dtype[np.void]

FLOW_DIR_INGRESS: int
FLOW_DIR_EGRESS: int
FLOW_DIR_NONE: int
FLOW_KIND_DATA: int
FLOW_KIND_RETRANSMIT: int
#: sock_owner flag bits by name (shared, released, unclaimed, inherited, scanned, created, claimed).
OWNER_FLAGS: dict[str, int]
FORCE_MISSING_ENV: str

class FeatureMissing(OSError):
    """The kernel lacks something a mode needs; the message says what (exit code 69)."""

class CaptureError(ValueError):
    """A capture file cannot be read (not pcap/pcapng, empty ...)."""

class LinkTypeError(CaptureError):
    """A capture file of a link type replay does not decode."""

def record_layout() -> dict[str, tuple[int, int]]:
    """Offset and size of each flow_record field as compiled (``__itemsize__``: (0, size))."""

def stats_layout() -> dict[str, tuple[int, int]]: ...
def _test_record() -> bytes: ...
def libbpf_version() -> str: ...
def possible_cpus() -> int: ...

# -- TC ------------------------------------------------------------------------

@type_check_only
class LegacyFilter(TypedDict):
    direction: str
    handle: int
    priority: int
    prog_id: int

def clsact_has_filters(ifindex: _Int) -> bool: ...
def remove_stale_filter(ifindex: _Int, direction: str, handle: _Int, priority: _Int, prog_id: _Int) -> bool: ...
def release_clsact(ifindex: _Int, created: bool, pid: _Int) -> bool: ...

@type_check_only
class _MapReaders:
    """What every engine class has for reading its maps (bind_map_readers)."""

    def read_flows(self, use_batch: bool = True) -> np.ndarray[Any, np.dtype[np.void]]: ...
    def read_stats(self) -> np.ndarray[Any, np.dtype[np.void]]: ...
    def count_flows(self) -> int: ...

class TcCollector(_MapReaders):
    def __init__(
        self,
        ifindex: _Int,
        max_entries: _Int = 65536,
        attach: str = "auto",
        l3_device: bool = False,
        _fail_attach_at: _Int = -1,
    ) -> None: ...
    def attach(self) -> None: ...
    def detach(self) -> None: ...
    @property
    def attached(self) -> bool: ...
    @property
    def attach_path(self) -> str: ...
    @property
    def created_qdisc(self) -> bool: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def legacy_filters(self) -> list[LegacyFilter]: ...

# -- XDP -----------------------------------------------------------------------

@type_check_only
class XdpState(TypedDict):
    prog_id: int
    mode: str
    name: str

def xdp_query(ifindex: _Int) -> XdpState: ...
def xdp_kernel_has_buff_len() -> bool: ...

class XdpCollector(_MapReaders):
    def __init__(
        self,
        ifindex: _Int,
        max_entries: _Int = 65536,
        mode: str = "auto",
        l3_device: bool = False,
        buff_len: bool | None = None,
        _fail_attach_at: _Int = -1,
    ) -> None: ...
    def attach(self) -> None: ...
    def detach(self) -> None: ...
    @property
    def attached(self) -> bool: ...
    @property
    def attach_path(self) -> str: ...
    @property
    def native_refusal(self) -> str: ...
    @property
    def buff_len(self) -> bool: ...
    @property
    def max_entries(self) -> int: ...

# -- cgroup ----------------------------------------------------------------------

@type_check_only
class DiagSocket(TypedDict):
    cookie: int
    inode: int
    cgroup_id: int
    has_cgroup: bool
    netns_cookie: int
    sport: int
    protocol: int
    state: int
    family: int

@type_check_only
class Owner(TypedDict):
    pid: int
    flags: int
    comm: bytes

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

def cgroup_id_of(dir: str) -> int: ...
def _diag_sockets() -> list[DiagSocket]: ...

class CgroupCollector(_MapReaders):
    def __init__(
        self,
        # std::string parameters: pybind11 takes str or bytes (paths need not be UTF-8)
        mount_root: str | bytes,
        rel_path: str | bytes,
        max_entries: _Int = 65536,
        owner_entries: _Int = 65536,
        path_cache: _Int = 16384,
        scan_sockets: bool = True,
        _fail_attach_at: _Int = -1,
        hier_root: str | bytes = "/",
    ) -> None: ...
    def attach(self) -> None: ...
    def detach(self) -> None: ...
    @property
    def attached(self) -> bool: ...
    @property
    def attach_path(self) -> str: ...
    @property
    def owner_sources(self) -> list[str]: ...
    @property
    def cgroup_id(self) -> int: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def scan_stats(self) -> ScanStats: ...
    def owner_stats(self) -> dict[str, int]: ...
    def owners(self) -> dict[int, Owner]: ...
    def resolve_cgroups(self, arg0: Sequence[_Int], /) -> dict[int, str]: ...

# -- process mode --------------------------------------------------------------------

@type_check_only
class ProcessEvents(TypedDict):
    unowned_packets: int
    unowned_bytes: int
    no_peer_packets: int
    no_peer_bytes: int

class ProcessCollector(_MapReaders):
    def __init__(
        self,
        max_entries: _Int = 65536,
        backend: str = "auto",
        cgroup_mount: str = "",
        hier_root: str = "/",
        path_cache: _Int = 16384,
        _fail_attach_at: _Int = -1,
        _force_missing: str = "",
    ) -> None: ...
    def attach(self) -> None: ...
    def detach(self) -> None: ...
    @property
    def attached(self) -> bool: ...
    @property
    def attach_path(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def refused(self) -> list[tuple[str, str]]:
        """Backends passed over, as (name, reason) pairs in the order tried."""
    @property
    def hooks(self) -> list[str]: ...
    @property
    def max_entries(self) -> int: ...
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

def replay_supports_dlt(arg0: _Int, /) -> bool: ...

class Replayer(_MapReaders):
    def __init__(self, max_entries: _Int = 65536) -> None: ...
    def replay_file(self, path: str, progress: _Progress = None, every: _Int = 65536) -> FileInfo: ...
    def open_file(self, path: str | bytes) -> FileInfo: ...
    def advance(self, until_ts_ns: _Int, progress: _Progress = None, every: _Int = 65536) -> bool: ...
    @property
    def next_ts(self) -> int: ...
    @property
    def file(self) -> FileInfo: ...
    def replay_frames(
        self, dlt: _Int, frames: Sequence[bytes], ts_ns: Sequence[_Int] = [], wire_len: Sequence[_Int] = []
    ) -> None: ...
    def clear(self) -> None: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def max_data(self) -> int: ...
    @property
    def counters(self) -> ReplayCounters: ...
