"""Snapshot -> pandas.DataFrame with typed columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import protocols, render

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .snapshot import Snapshot

COLUMNS = (
    "src_ip", "dst_ip", "src_port", "dst_port", "proto", "iface", "direction", "kind",
    "pid", "comm", "cgroup", "packets", "bytes", "bitrate", "first_seen", "last_seen",
)  # fmt: skip


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "Snapshot.to_pandas() needs pandas: pip install 'pktstat-bpf[pandas]'"
        ) from None
    return pandas


def to_pandas(snap: "Snapshot") -> "pandas.DataFrame":
    """One row per flow. Addresses are strings, ports uint16, counters
    uint64, proto/iface/direction categoricals, first/last seen
    datetime64[ns, UTC]. Extra columns of the snapshot (``snap.columns``)
    follow, under their own names."""
    pd = _pandas()
    r = snap.records
    n = len(r)
    proto_codes = r["proto"]
    proto_cats = sorted(set(int(p) for p in np.unique(proto_codes)))
    ifidx = r["ifindex"]
    if_cats = sorted(set(int(i) for i in np.unique(ifidx)))
    comm = np.array([render.decode_comm(c) for c in r["comm"]], dtype=object) if n else np.empty(0, object)
    cg_map = snap.cgroups
    cgroup = np.array([cg_map.get(int(c), "") if c else "" for c in r["cgroup_id"]], dtype=object)
    data = {
        "src_ip": render.addr_strings(r["saddr"], r["ipver"]),
        "dst_ip": render.addr_strings(r["daddr"], r["ipver"]),
        "src_port": r["sport"].astype(np.uint16),
        "dst_port": r["dport"].astype(np.uint16),
        "proto": pd.Categorical.from_codes(
            np.searchsorted(proto_cats, proto_codes), [protocols.name(p) for p in proto_cats]
        ),
        "iface": pd.Categorical.from_codes(
            np.searchsorted(if_cats, ifidx), [snap.ifnames.get(i, str(i) if i else "") for i in if_cats]
        ),
        "direction": pd.Categorical.from_codes(
            r["dir"].astype(np.int8), ["ingress", "egress", ""]
        ),
        "kind": pd.Categorical.from_codes(np.minimum(r["kind"], 1).astype(np.int8), list(render.KINDS)),
        "pid": r["pid"].astype(np.uint32),
        "comm": comm,
        "cgroup": cgroup,
        "packets": r["packets"].astype(np.uint64),
        "bytes": r["bytes"].astype(np.uint64),
        "bitrate": snap.bitrates(),
        "first_seen": pd.DatetimeIndex(r["first_seen"]).tz_localize("UTC"),
        "last_seen": pd.DatetimeIndex(r["last_seen"]).tz_localize("UTC"),
    }
    df = pd.DataFrame(data, columns=list(COLUMNS))
    for name, values in snap.columns.items():  # extra per-flow columns (interval totals, pod names ...)
        df[name] = values
    return df
