"""Snapshot -> pandas.DataFrame with typed columns, without a Python loop
over flows.

Every per-flow string is made in NumPy: addresses are formatted into a
matrix of characters (one lookup table gather per 16-bit group or octet, the
longest run of zero groups found with a few array passes) and packed into
one UTF-8 buffer plus offsets; values that repeat (comm, cgroup path,
interface, protocol) are dictionary-encoded, formatted once per distinct
value and expanded with ``take``. Where pandas stores strings in Arrow (pandas
3 with pyarrow installed) the buffer becomes the column as it is; elsewhere
one ``astype(object)`` makes the Python strings.
(:mod:`~pktstat_bpf.core.addresses` formats the addresses.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from . import names, protocols, render
from .addresses import Text, address_text
from .keys import group

if TYPE_CHECKING:  # pragma: no cover
    import pandas


#: The columns of :func:`to_pandas`, in order.
COLUMNS = (
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "proto",
    "app",
    "iface",
    "direction",
    "kind",
    "pid",
    "comm",
    "cgroup",
    "packets",
    "bytes",
    "bitrate",
    "first_seen",
    "last_seen",
    "tcp_flags",
    "syn_packets",
    "fin_packets",
    "rst_packets",
    "retrans_packets",
    "retrans_bytes",
    "rtt_samples",
    "rtt_min",
    "rtt_mean",
    "rtt_max",
)


def pandas_module() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("Snapshot.to_pandas() needs pandas: pip install 'pktstat-bpf[pandas]'") from None
    return pandas


# -- columns -------------------------------------------------------------------

_STRING_DTYPE: list[Any] = []


def _string_dtype(pd: Any) -> Any:
    """The dtype this pandas gives a column of str: ``str`` (Arrow or
    Python storage) in pandas 3, object before."""
    if not _STRING_DTYPE:
        _STRING_DTYPE.append(pd.Series(["a"]).dtype)
    return _STRING_DTYPE[0]


def _arrow_strings(pd: Any) -> bool:
    dt = _string_dtype(pd)
    return isinstance(dt, pd.StringDtype) and dt.storage == "pyarrow"


def string_column(pd: Any, text: Text) -> Any:
    """A pandas string array (the default string dtype) from a Text."""
    if _arrow_strings(pd):
        return _string_dtype(pd).__from_arrow__(text.to_arrow())
    values = text.to_numpy()
    dt = _string_dtype(pd)
    return pd.array(values, dtype=dt) if isinstance(dt, pd.StringDtype) else values


def _coded_strings(pd: Any, codes: np.ndarray, values: Sequence[str]) -> Any:
    """A string array of ``values[codes]``: each distinct value made once."""
    if _arrow_strings(pd):
        try:
            return string_column(pd, Text.from_codes(codes, values))
        except UnicodeEncodeError:  # a lone surrogate: not UTF-8, so not an Arrow string
            pass
    uniq = np.array(list(values), dtype=object)
    dt = _string_dtype(pd)
    return pd.array(uniq[codes], dtype=dt) if isinstance(dt, pd.StringDtype) else uniq[codes]


def _categories(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, code of each value) of an unsigned integer array,
    in value order; one pass when all values are equal."""
    if len(values) == 0:
        return values[:0], np.zeros(0, np.int32)
    lo, hi = values.min(), values.max()
    if lo == hi:
        return np.array([lo], values.dtype), np.zeros(len(values), np.int32)
    if values.dtype.itemsize == 1:
        present = np.flatnonzero(np.bincount(values, minlength=256)).astype(values.dtype)
        lut = np.zeros(256, np.int32)
        lut[present] = np.arange(len(present))
        return present, lut[values]
    uniq, codes = np.unique(values, return_inverse=True)
    return uniq, codes.reshape(len(values)).astype(np.int32)


def _comm_codes(comm: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes and distinct decoded names of a ``S16`` comm array."""
    n = len(comm)
    words = np.ascontiguousarray(comm).view(np.uint64).reshape(n, 2)
    if n == 0 or not words.any():
        return np.zeros(n, np.int32), [""]
    first, codes = group(words)
    return codes.astype(np.int32), [render.decode_comm(bytes(comm[i])) for i in first]


def columns(
    pd: Any,
    records: np.ndarray,
    *,
    bitrate: np.ndarray,
    ifnames: Mapping[int, str],
    cgroups: Mapping[int, str],
    labels: bool = True,
) -> dict[str, Any]:
    """The :data:`COLUMNS` of `records` as arrays pandas takes as they are
    (`labels`: whether the mode labels flows, :func:`protocols.app_labelled`)."""
    r = records
    proto = np.ascontiguousarray(r["proto"])
    arp = r["ipver"] == protocols.ARP_IPVER
    if arp.any():  # ARP flows (ipver 0: flow.h) are a category of their own, beside IP protocol 254
        proto = proto.astype(np.uint16) | (arp.astype(np.uint16) << np.uint16(8))
    proto_vals, proto_codes = _categories(proto)
    proto_names = [
        protocols.flow_name(int(p) & 255, protocols.ARP_IPVER if p >> 8 else 4) for p in proto_vals
    ]
    if_vals, if_codes = _categories(np.ascontiguousarray(r["ifindex"]))
    comm_codes, comm_names = _comm_codes(r["comm"])
    cg_vals, cg_codes = _categories(np.ascontiguousarray(r["cgroup_id"]))
    cg_names = [cgroups.get(int(c), "") if c else "" for c in cg_vals]
    if_names = [ifnames.get(int(i), str(int(i)) if i else "") for i in if_vals]
    direction = np.minimum(r["dir"], 2).astype(np.int8)  # FLOW_DIR_NONE (and anything unknown): ""
    return {
        "src_ip": string_column(pd, address_text(r["saddr"], r["ipver"])),
        "dst_ip": string_column(pd, address_text(r["daddr"], r["ipver"])),
        "src_port": r["sport"].astype(np.uint16),
        "dst_port": r["dport"].astype(np.uint16),
        "proto": _categorical(pd, proto_codes, proto_names),
        # every name a category, in l7.h's order; -1 (no label applies) is missing
        "app": pd.Categorical.from_codes(protocols.app_codes(r, labels), list(protocols.APP_NAMES)),
        "iface": _categorical(pd, if_codes, if_names),
        "direction": pd.Categorical.from_codes(direction, list(protocols.FLOW_DIRECTIONS)),
        "kind": pd.Categorical.from_codes(np.minimum(r["kind"], 1).astype(np.int8), list(render.KINDS)),
        "pid": r["pid"].astype(np.uint32),
        "comm": _coded_strings(pd, comm_codes, comm_names),
        "cgroup": _coded_strings(pd, cg_codes, cg_names),
        "packets": r["packets"].astype(np.uint64),
        "bytes": r["bytes"].astype(np.uint64),
        "bitrate": np.asarray(bitrate, dtype=np.float64),
        "first_seen": _utc(pd, r["first_seen"]),
        "last_seen": _utc(pd, r["last_seen"]),
        "tcp_flags": r["tcp_flags"].astype(np.uint8),
        "syn_packets": r["syn_packets"].astype(np.uint32),
        "fin_packets": r["fin_packets"].astype(np.uint32),
        "rst_packets": r["rst_packets"].astype(np.uint32),
        "retrans_packets": r["retrans_packets"].astype(np.uint32),
        "retrans_bytes": r["retrans_bytes"].astype(np.uint64),
        "rtt_samples": r["rtt_samples"].astype(np.uint32),
        **rtt_columns(pd, r),
    }


def rtt_columns(pd: Any, r: np.ndarray) -> dict[str, Any]:
    """``rtt_min``, ``rtt_mean``, ``rtt_max`` of `r`'s flows as
    timedelta64[ns]: NaT where a flow has no round trip timed."""
    none = r["rtt_samples"] == 0
    n = np.where(none, 1, r["rtt_samples"]).astype(np.int64)
    mean = (r["rtt_sum"].astype(np.int64) // n).astype("timedelta64[ns]")
    out = {}
    for name, values in (("rtt_min", r["rtt_min"]), ("rtt_mean", mean), ("rtt_max", r["rtt_max"])):
        v = np.asarray(values).astype("timedelta64[ns]")
        v[none] = np.timedelta64("NaT")
        out[name] = pd.TimedeltaIndex(v)
    return out


def _categorical(pd: Any, codes: np.ndarray, names: Sequence[str]) -> Any:
    """A Categorical of ``names[codes]``; names may repeat (a mapping can
    give two interface indexes one name): categories are the distinct ones."""
    cats = list(dict.fromkeys(names))
    if len(cats) == len(names):
        return pd.Categorical.from_codes(codes, cats)
    remap = np.array([cats.index(name) for name in names], np.int32)
    return pd.Categorical.from_codes(remap[codes], cats)


def _utc(pd: Any, stamps: np.ndarray) -> Any:
    return pd.DatetimeIndex(np.ascontiguousarray(stamps).astype("datetime64[ns]", copy=False)).tz_localize(
        "UTC"
    )


def to_pandas(
    records: np.ndarray,
    bitrate: np.ndarray,
    *,
    ifnames: Mapping[int, str],
    cgroups: Mapping[int, str],
    extra: Mapping[str, np.ndarray],
    labels: bool = True,
) -> pandas.DataFrame:
    """One row per flow, in the order of `records`, with the typed
    :data:`COLUMNS`: addresses (``src_ip``, ``dst_ip``), ``comm`` and
    ``cgroup`` as strings (pandas' string dtype), ports uint16, ``proto``,
    ``iface`` and ``direction`` categoricals, ``pid`` uint32, ``packets``
    and ``bytes`` uint64, ``bitrate`` float64 (8 x bytes / duration),
    ``app`` a categorical of :data:`protocols.APP_NAMES` (missing where no
    label applies: not TCP or UDP, or not `labels`: process mode),
    ``first_seen``/``last_seen`` datetime64[ns, UTC], ``tcp_flags`` uint8
    (the OR of the TCP flag bytes; :func:`render.tcp_flags_text` spells it) and
    ``syn_packets``, ``fin_packets``, ``rst_packets`` uint32 (0 for flows
    other than TCP and in process mode), the TCP health (TC, XDP and
    replay; 0 or NaT elsewhere): ``retrans_packets`` uint32 and
    ``retrans_bytes`` uint64 (retransmitted segments), ``rtt_samples``
    uint32 and ``rtt_min``, ``rtt_mean``, ``rtt_max`` timedelta64[ns] (the
    flow's round trips; NaT without one). The `extra` per-flow
    columns follow, under their own names."""
    pd = pandas_module()
    cols = columns(pd, records, bitrate=bitrate, ifnames=ifnames, cgroups=cgroups, labels=labels)
    df = pd.DataFrame(cols, columns=list(COLUMNS), copy=False)
    for name, values in extra.items():  # extra per-flow columns (interval totals, pod names ...)
        if name == "drop_reasons":  # reason -> packets: "NO_SOCKET:2,NETFILTER_DROP:12" in a frame
            values = np.array(
                [None if r is None else render.drop_reasons_text(r) for r in values], dtype=object
            )
        if name in names.COUNT_COLUMNS:  # None where a flow has none
            values = pd.array(values, dtype="UInt32")
        elif name in names.COLUMNS:
            values = pd.array(values, dtype="str")
        df[name] = values
    return df
