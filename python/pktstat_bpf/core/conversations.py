"""Conversations: the two directions of a flow put together, in NumPy.

Two records are one conversation when they share the protocol, the IP
version, the interface, the owner (pid, cgroup, comm) and the two endpoints
in either order (address and port; for protocols without ports, the
addresses alone, so an ICMP echo request and its reply pair up). The
direction (ingress/egress) does not count: a TC collector sees a
conversation as one egress and one ingress flow.

The client is the side that sent the conversation's first packet; where
that is unknown (one side never seen, or both sides first seen at the same
stamp, as a live clock's tick can make them) the server is the side with the
lower port; with equal ports (or none), the client is the side seen first
(or the only one seen). A conversation row is a record oriented
client to server (``saddr``/``sport`` the client): its packets, bytes and
TCP counts summed over both directions, first seen the earlier, last seen
the later, the TCP flags ORed, the application label the client's where it
recognised one (else the server's, a label beating ``unknown`` beating
``pending``), ``dir`` unknown; and the per-direction counts as the columns
:data:`COLUMNS`. The names of a conversation (core/names.py: server name,
HTTP Host, DNS query ...) are those of its client-to-server direction, or
else of the other direction, column by column; a DNS response's code,
answers and count those of its server-to-client direction first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from . import names as flow_names
from . import protocols
from .keys import copy_records, group

#: The per-direction columns of a conversation, aligned with its records.
COLUMNS = ("c2s_packets", "c2s_bytes", "s2c_packets", "s2c_bytes")
#: A conversation's endpoints in a DataFrame (a flow's column -> its name; JSON: render.PAIRED_NAMES).
FRAME_NAMES = {
    "src_ip": "client_ip",
    "dst_ip": "server_ip",
    "src_port": "client_port",
    "dst_port": "server_port",
}

#: The name columns a conversation takes from its server-to-client direction first: a DNS
#: response's code, answers and count (the others from its client-to-server direction first).
RESPONSE_COLUMNS = frozenset({"dns_rcode", "dns_answers", "dns_responses"})

_I64_MAX = np.iinfo(np.int64).max
_APP_UNKNOWN = 1  # src/bpf/l7.h L7_APP_UNKNOWN: above it, a protocol


def _endpoint_words(addr: np.ndarray, port: np.ndarray) -> np.ndarray:
    """(N, 3) uint64: the 16 address bytes as two big-endian words, then
    the port: rows compare as the endpoints do."""
    out = np.empty((len(addr), 3), dtype=np.uint64)
    out[:, :2] = np.ascontiguousarray(addr).view(">u8").reshape(len(addr), 2)
    out[:, 2] = port
    return out


def _less(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise lexicographic a < b of two (N, K) arrays."""
    less = np.zeros(len(a), dtype=bool)
    decided = np.zeros(len(a), dtype=bool)
    for k in range(a.shape[1]):
        less |= ~decided & (a[:, k] < b[:, k])
        decided |= a[:, k] != b[:, k]
    return less


@dataclass(frozen=True)
class Plan:
    """Which records make which conversation, and which side is its client:
    made once (:func:`plan`) and applied to records with the same keys in
    the same rows (an interval's deltas and its lifetime counts alike)."""

    first: np.ndarray  # a record of each conversation (its first)
    codes: np.ndarray  # the conversation of each record
    side: np.ndarray  # each record's sender: 0 the lower endpoint, 1 the higher
    client: np.ndarray  # each conversation's client side (0 or 1)

    def __len__(self) -> int:
        return len(self.first)


def plan(records: np.ndarray) -> Plan:
    """The conversations of `records` (``RECORD_DTYPE``) and their clients
    (see the module)."""
    n = len(records)
    if n == 0:
        empty = np.zeros(0, dtype=np.intp)
        return Plan(empty, empty, empty, empty)
    ported = np.isin(records["proto"], list(protocols.PORTED)) & (records["ipver"] != protocols.ARP_IPVER)
    src = _endpoint_words(records["saddr"], np.where(ported, records["sport"], 0).astype(np.uint64))
    dst = _endpoint_words(records["daddr"], np.where(ported, records["dport"], 0).astype(np.uint64))
    src_low = ~_less(dst, src)  # the source is the lower endpoint (or both are equal)
    low = np.where(src_low[:, None], src, dst)
    high = np.where(src_low[:, None], dst, src)
    head = (
        records["proto"].astype(np.uint64)
        | records["ipver"].astype(np.uint64) << np.uint64(8)
        | records["kind"].astype(np.uint64) << np.uint64(16)
        | records["ifindex"].astype(np.uint64) << np.uint64(32)
    )
    comm = np.ascontiguousarray(records["comm"]).view(np.uint64).reshape(n, -1)
    pid = records["pid"].astype(np.uint64)
    words = np.column_stack([head, pid, records["cgroup_id"], comm, low, high, np.zeros(n, dtype=np.uint64)])
    first, codes = group(words)
    side = np.where(src_low, 0, 1)
    first_ns = _per_side(np.minimum, records["first_seen"].view(np.int64), codes * 2 + side, len(first))
    seen = first_ns != _I64_MAX  # the sides that have a record
    # the client: the side that sent first where both were seen at different stamps; else the side
    # without the lower port; else (equal ports, no ports) the side seen first, or the only one seen
    low_port, high_port = low[first, 2], high[first, 2]
    by_time = np.where(first_ns[:, 0] <= first_ns[:, 1], 0, 1)
    known = seen.all(axis=1) & (first_ns[:, 0] != first_ns[:, 1])
    by_port = np.where(low_port < high_port, 1, 0)
    client = np.where(known, by_time, np.where(low_port != high_port, by_port, by_time))
    return Plan(first, codes, side, client)


def _per_side(ufunc: np.ufunc, values: np.ndarray, slot: np.ndarray, m: int) -> np.ndarray:
    """(m, 2): `ufunc` (np.minimum or np.add) of `values` per conversation and side."""
    if ufunc is np.minimum:
        acc = np.full(2 * m, _I64_MAX, dtype=np.int64)
    else:
        acc = np.zeros(2 * m, dtype=values.dtype)
    ufunc.at(acc, slot, values)
    return acc.reshape(m, 2)


def pair(
    records: np.ndarray,
    p: Plan | None = None,
    sums: Mapping[str, np.ndarray] | None = None,
    columns: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Records made conversations by plan `p` (default: :func:`plan` of
    them): ``(rows, columns)``, rows oriented client to server in the order
    of each conversation's first record (see the module); `columns` the
    per-direction counts (:data:`COLUMNS`), each of `sums` (numeric
    columns aligned with `records`) summed over the conversation, and the
    name columns of `columns` (a snapshot's: :func:`names`)."""
    p = plan(records) if p is None else p
    m = len(p)
    named = {k: v for k, v in (columns or {}).items() if k in flow_names.COLUMNS}
    if m == 0:
        cols = {c: np.zeros(0, dtype=np.uint64) for c in COLUMNS}
        cols |= {k: v[:0].copy() for k, v in named.items()}
        return records[:0].copy(), cols | {k: v[:0].copy() for k, v in (sums or {}).items()}
    slot = p.codes * 2 + p.side
    per = {name: _per_side(np.add, records[name], slot, m) for name in ("packets", "bytes")}
    idx, client = np.arange(m), p.client
    cols = {
        "c2s_packets": per["packets"][idx, client],
        "c2s_bytes": per["bytes"][idx, client],
        "s2c_packets": per["packets"][idx, 1 - client],
        "s2c_bytes": per["bytes"][idx, 1 - client],
    }
    for name, values in (sums or {}).items():
        acc = np.zeros(m, dtype=values.dtype)
        np.add.at(acc, p.codes, values)
        cols[name] = acc
    cols |= names(p, named)

    rows = copy_records(records[p.first])
    swap = p.side[p.first] != client  # the first record's sender is not the client
    for a, b in (("saddr", "daddr"), ("sport", "dport")):
        av, bv = rows[a].copy(), rows[b].copy()
        mask = swap[:, None] if av.ndim > 1 else swap
        rows[a] = np.where(mask, bv, av)
        rows[b] = np.where(mask, av, bv)
    rows["packets"] = per["packets"].sum(axis=1)
    rows["bytes"] = per["bytes"].sum(axis=1)
    first_ns = _per_side(np.minimum, records["first_seen"].view(np.int64), slot, m)
    rows["first_seen"] = first_ns.min(axis=1).view(records["first_seen"].dtype)
    last = np.full(m, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, p.codes, records["last_seen"].view(np.int64))
    rows["last_seen"] = last.view(records["last_seen"].dtype)
    flags = np.zeros(m, dtype=records["tcp_flags"].dtype)
    np.bitwise_or.at(flags, p.codes, records["tcp_flags"])
    rows["tcp_flags"] = flags
    for name in ("syn_packets", "fin_packets", "rst_packets"):
        acc = np.zeros(m, dtype=np.uint64)
        np.add.at(acc, p.codes, records[name])
        rows[name] = np.minimum(acc, np.iinfo(records[name].dtype).max)
    _health(rows, records, p.codes, m)
    rows["app"] = _apps(records["app"], slot, client, m)
    rows["dir"] = protocols.FLOW_DIRECTIONS.index("")
    return rows, cols


def _health(rows: np.ndarray, records: np.ndarray, codes: np.ndarray, m: int) -> None:
    """The TCP health of both directions into each conversation's row, as
    the engine merges it (flow_table.hpp add_health): counts and sums add,
    the round trips' minimum and maximum over the records that timed one."""
    for name in ("retrans_packets", "rtt_samples"):
        acc = np.zeros(m, dtype=np.uint64)
        np.add.at(acc, codes, records[name])
        rows[name] = np.minimum(acc, np.iinfo(records[name].dtype).max)
    acc = np.zeros(m, dtype=np.uint64)
    np.add.at(acc, codes, records["retrans_bytes"])
    rows["retrans_bytes"] = acc
    total = np.zeros(m, dtype=np.int64)
    np.add.at(total, codes, records["rtt_sum"].view(np.int64))
    rows["rtt_sum"] = total.view(records["rtt_sum"].dtype)
    timed = records["rtt_samples"] > 0
    lo = np.full(m, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(lo, codes[timed], records["rtt_min"][timed].view(np.int64))
    rows["rtt_min"] = np.where(rows["rtt_samples"] > 0, lo, 0).view(records["rtt_min"].dtype)
    hi = np.zeros(m, dtype=np.int64)
    np.maximum.at(hi, codes, records["rtt_max"].view(np.int64))
    rows["rtt_max"] = hi.view(records["rtt_max"].dtype)


def names(p: Plan, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The name columns (those of :data:`names.COLUMNS <pktstat_bpf.core.names.COLUMNS>`
    in `columns`) of each conversation, column by column: the value of its
    client-to-server direction, else the other direction's, else None; the
    columns of a DNS response (:data:`RESPONSE_COLUMNS`) the other way
    round, as the server sends them."""
    m = len(p)
    c2s = p.side == p.client[p.codes]
    out = {}
    for k, v in columns.items():
        if k not in flow_names.COLUMNS:
            continue
        first = ~c2s if k in RESPONSE_COLUMNS else c2s
        # rank each record: 2 set in the direction that comes first, 1 set in the other, 0 unset
        present = np.fromiter((x is not None for x in v), dtype=bool, count=len(v))
        rank = np.where(present, np.where(first, 2, 1), 0)
        order = np.lexsort((-rank, p.codes))  # per conversation, its best record first
        best = order[np.searchsorted(p.codes[order], np.arange(m))]
        col = v[best].copy()
        col[rank[best] == 0] = None
        out[k] = col
    return out


def any_of(p: Plan, mask: np.ndarray) -> np.ndarray:
    """A per-record boolean made per conversation: true where any of its records is."""
    out = np.zeros(len(p), dtype=bool)
    np.logical_or.at(out, p.codes, mask)
    return out


def _apps(app: np.ndarray, slot: np.ndarray, client: np.ndarray, m: int) -> np.ndarray:
    """Each conversation's label: the client side's protocol, else the
    server side's, else the higher state (``unknown`` over ``pending``)."""
    per = np.zeros(2 * m, dtype=app.dtype)
    np.maximum.at(per, slot, app)  # one record per side and owner: the max is its label
    per = per.reshape(m, 2)
    idx = np.arange(m)
    mine, theirs = per[idx, client], per[idx, 1 - client]
    return np.where(
        mine > _APP_UNKNOWN, mine, np.where(theirs > _APP_UNKNOWN, theirs, np.maximum(mine, theirs))
    )
