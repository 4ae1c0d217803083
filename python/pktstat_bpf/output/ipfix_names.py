"""The names of flows in IPFIX records (templates 260/261 of
:mod:`~pktstat_bpf.output.ipfix`): httpRequestHost (IANA 460, string of 64
octets, NUL-padded, cut at 64), and the enterprise elements of
:data:`~pktstat_bpf.output.ipfix.PEN` serverName (5, string of 64 octets:
the TLS/DTLS SNI), alpn (6, string of 32 octets: ``h2,http/1.1``),
dnsQueryName (7, string of 64 octets), dnsQueryType (8, unsigned16; 0:
none), dnsResponseCode (9, unsigned8; 255: no response seen) and
quicVersion (10, unsigned32; 0: none, or a version negotiation).

Only the flows that have a name are converted (most flows have none), in
NumPy, each distinct DNS type, code or QUIC version once.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..core import names as flow_names
from .flowrecords import FlowBatch

#: octets of a name element (a longer name is cut there)
NAME_STRING = 64
#: RFC 5612's enterprise number for documentation and examples: a placeholder
#: (ipfix.PEN)
PEN = 32473
#: (name, element id, octets, NumPy type, enterprise number) of each element
ELEMENTS = (
    ("httpRequestHost", 460, NAME_STRING, f"S{NAME_STRING}", 0),
    ("serverName", 5, NAME_STRING, f"S{NAME_STRING}", PEN),
    ("alpn", 6, 32, "S32", PEN),
    ("dnsQueryName", 7, NAME_STRING, f"S{NAME_STRING}", PEN),
    ("dnsQueryType", 8, 2, ">u2", PEN),
    ("dnsResponseCode", 9, 1, "u1", PEN),
    ("quicVersion", 10, 4, ">u4", PEN),
)


def _present(values: np.ndarray) -> np.ndarray:
    """Positions of the values that are not None."""
    return np.flatnonzero(np.not_equal(values, None))  # type: ignore[call-overload]


def named(batch: FlowBatch) -> np.ndarray:
    """Which records have at least one name (boolean mask)."""
    out = np.zeros(len(batch), bool)
    for values in batch.names.values():
        out[_present(values)] = True
    return out


def _strings(values: np.ndarray, size: int) -> np.ndarray:
    """Text (None: empty) as UTF-8 of at most `size` octets (the assignment
    to the fixed-size array cuts it there)."""
    out = np.zeros(len(values), f"S{size}")
    has = _present(values)
    if len(has):
        out[has] = np.char.encode(values[has].astype(str), "utf-8")
    return out


def _numbers(values: np.ndarray, number: Callable[[Any], int], dtype: str, none: int = 0) -> np.ndarray:
    """Names as their numbers (`none` where a flow has none): each distinct
    name converted once."""
    out = np.full(len(values), none, dtype)
    has = _present(values)
    if len(has):
        distinct, at = np.unique(values[has].astype(str), return_inverse=True)
        out[has] = np.array([number(str(v)) for v in distinct], dtype)[np.asarray(at).reshape(-1)]
    return out


def fill(out: np.ndarray, batch: FlowBatch, rows: np.ndarray, shape: tuple[int, ...]) -> None:
    """The name elements of the batch's `rows` into `out` (shaped `shape`)."""
    none = np.full(len(rows), None, object)

    def col(name: str) -> np.ndarray:
        return batch.names[name][rows] if name in batch.names else none

    out["httpRequestHost"] = _strings(col("http_host"), NAME_STRING).reshape(shape)
    out["serverName"] = _strings(col("server_name"), NAME_STRING).reshape(shape)
    out["alpn"] = _strings(col("alpn"), 32).reshape(shape)
    out["dnsQueryName"] = _strings(col("dns_query"), NAME_STRING).reshape(shape)
    out["dnsQueryType"] = _numbers(col("dns_qtype"), flow_names.qtype_number, "u2").reshape(shape)
    rcode = _numbers(col("dns_rcode"), flow_names.rcode_number, "u1", flow_names.NO_RCODE)
    out["dnsResponseCode"] = rcode.reshape(shape)
    out["quicVersion"] = _numbers(col("quic_version"), flow_names.quic_version_number, "u4").reshape(shape)
