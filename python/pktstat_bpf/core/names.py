"""What each flow's first payload packets name (src/bpf/l7_names.bpf.h): the
server name (SNI) and ALPN protocols of a TLS or DTLS ClientHello, the Host
of an HTTP/1.x request, the query name and type of DNS messages (with the
last response's code and answer count), the version of a QUIC long header.

The engine merges the kernel's names map per flow at each drain
(``engine.names()``, ``_core.name_dtype``); :func:`columns` joins them to a
snapshot's flows. A flow without names of its own takes those of its
reverse direction (a TLS server's replies show the name the client sent),
so both rows of a conversation say who it talks to.

A flow that names no server itself (no SNI, HTTP Host or DNS query, in
either direction) takes the name of the DNS answer the engine joined to it
(``engine.dns_names()``, ``_core.dns_name_dtype``): the question of an A or
AAAA answer for its remote address, seen before its first packet and within
the record's TTL (``dns_name``). ``name_source`` says where the flow's name
comes from: ``sni``, ``http``, ``dns-query`` (a DNS flow's own question) or
``dns-answer`` (the join); an SNI or Host wins over a DNS answer.

Names are decoded as text the way they came, never trusted: invalid UTF-8
becomes ``\\xNN`` escapes, and DNS labels are shown in the DNS presentation
format (a dot or backslash inside a label, and bytes outside printable
ASCII, as ``\\.``, ``\\\\`` and ``\\DDD``). Printing them escapes control
characters again where they are printed (render.escape_text).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

#: the modes whose programs read names (the cgroup programs' call chain has
#: no stack left for it; process mode sees no packets)
MODES = frozenset({"tc", "xdp", "replay"})
#: struct flow_name's kinds (flow.h enum flow_name_kind)
NAME_SNI, NAME_HTTP_HOST, NAME_DNS = 1, 2, 3
NO_RCODE = 0xFF

#: the per-flow columns :func:`columns` makes, in order
COLUMNS = (
    "server_name",
    "alpn",
    "http_host",
    "dns_query",
    "dns_qtype",
    "dns_rcode",
    "dns_answers",
    "dns_queries",
    "dns_responses",
    "quic_version",
    "dns_name",
    "name_source",
)
#: name_source's values, in the order they win
SOURCES = ("sni", "http", "dns-query", "dns-answer")
#: the integer columns (None, like the text ones, where a flow has none; a
#: DataFrame holds them as nullable UInt32)
COUNT_COLUMNS = frozenset({"dns_answers", "dns_queries", "dns_responses"})

QTYPES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    13: "HINFO",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    35: "NAPTR",
    41: "OPT",
    43: "DS",
    46: "RRSIG",
    47: "NSEC",
    48: "DNSKEY",
    64: "SVCB",
    65: "HTTPS",
    252: "AXFR",
    255: "ANY",
    257: "CAA",
}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
QUIC_VERSIONS = {0: "negotiation", 1: "1", 0x6B3343CF: "2", 0xFF00001D: "draft-29"}

_KEY = (
    "saddr",
    "daddr",
    "sport",
    "dport",
    "proto",
    "dir",
    "ipver",
    "kind",
    "ifindex",
    "pid",
    "cgroup_id",
    "comm",
)


def text(raw: bytes) -> str:
    """Bytes a packet carried as text: UTF-8 where valid, ``\\xNN`` otherwise."""
    return raw.decode("utf-8", "backslashreplace")


def dns_name(wire: bytes) -> str:
    """A name in DNS wire form (length-prefixed labels, root label last) in
    presentation format: ``www.example.org``; the root alone is ``.``."""
    labels, i = [], 0
    while i < len(wire) and wire[i]:
        n = wire[i]
        label = wire[i + 1 : i + 1 + n]
        i += 1 + n
        out = []
        for b in label:
            if b in (0x2E, 0x5C):  # . and \
                out.append("\\" + chr(b))
            elif 0x21 <= b <= 0x7E:
                out.append(chr(b))
            else:
                out.append(f"\\{b:03d}")
        labels.append("".join(out))
    return ".".join(labels) if labels else "."


def alpn_list(wire: bytes) -> str:
    """An ALPN protocol_name_list (length-prefixed names) as ``h2,http/1.1``
    (as tshark's ``tls.handshake.extensions_alpn_str`` values); a name cut
    short by the 32 bytes kept ends the list."""
    names, i = [], 0
    while i < len(wire):
        n = wire[i]
        if not n or i + 1 + n > len(wire):
            break
        names.append(text(wire[i + 1 : i + 1 + n]))
        i += 1 + n
    return ",".join(names)


def qtype_name(t: int) -> str:
    return QTYPES.get(t, f"TYPE{t}")


def rcode_name(r: int) -> str:
    return RCODES.get(r, f"RCODE{r}")


def quic_version_name(v: int) -> str:
    return QUIC_VERSIONS.get(v, f"0x{v:08x}")


def _number(text: str | None, names: Mapping[int, str], prefix: str) -> int:
    """The number behind a name of `names` or ``<prefix>N`` (None: 0)."""
    if text is None:
        return 0
    for k, v in names.items():
        if v == text:
            return k
    return int(text[len(prefix) :], 0) if text.startswith(prefix) else 0


def qtype_number(text: str | None) -> int:
    """``AAAA`` -> 28, ``TYPE65280`` -> 65280 (None -> 0)."""
    return _number(text, QTYPES, "TYPE")


def rcode_number(text: str | None) -> int:
    """``NXDOMAIN`` -> 3 (None -> 0xff: no response)."""
    return NO_RCODE if text is None else _number(text, RCODES, "RCODE")


def quic_version_number(text: str | None) -> int:
    """``1`` -> 1, ``0x0000abcd`` -> 0xabcd (None and ``negotiation`` -> 0)."""
    if text is None:
        return 0
    return int(text, 16) if text.startswith("0x") else _number(text, QUIC_VERSIONS, "\0")


def _keys(a: np.ndarray, reverse: bool = False) -> np.ndarray:
    """The flow key of each row as one comparable byte string; `reverse`:
    the key of the other direction (addresses and ports swapped, ingress
    and egress swapped)."""
    dt = np.dtype([(f, a.dtype.fields[f][0]) for f in _KEY])  # type: ignore[index]
    out = np.zeros(len(a), dtype=dt)
    for f in _KEY:
        out[f] = a[f]
    if reverse:
        out["saddr"], out["daddr"] = a["daddr"], a["saddr"]
        out["sport"], out["dport"] = a["dport"], a["sport"]
        d = np.asarray(a["dir"])
        out["dir"] = np.where(d < 2, 1 - np.minimum(d, 1), d)  # ingress <-> egress; none stays
    return out.view(f"V{dt.itemsize}")


def decode(names: np.ndarray) -> dict[str, list[Any]]:
    """Each row of a name_dtype array as the :data:`COLUMNS` values."""
    cols: dict[str, list[Any]] = {c: [] for c in COLUMNS[:-2]}  # (not dns_name, name_source)
    for r in names:
        kind, n = int(r["name_kind"]), int(r["name_len"])
        raw = bytes(r["name"][:n])
        cols["server_name"].append(text(raw) if kind == NAME_SNI else None)
        cols["http_host"].append(text(raw).rstrip(" \t") if kind == NAME_HTTP_HOST else None)
        dns = kind == NAME_DNS
        cols["dns_query"].append(dns_name(raw) if dns else None)
        cols["dns_qtype"].append(qtype_name(int(r["dns_qtype"])) if dns else None)
        rcode = int(r["dns_rcode"])
        cols["dns_rcode"].append(rcode_name(rcode) if rcode != NO_RCODE else None)
        cols["dns_answers"].append(int(r["dns_answers"]) if rcode != NO_RCODE else None)
        counted = (
            dns or int(r["dns_queries"]) or int(r["dns_responses"])
        )  # (a name not read is still counted)
        cols["dns_queries"].append(int(r["dns_queries"]) if counted else None)
        cols["dns_responses"].append(int(r["dns_responses"]) if counted else None)
        alen = int(r["alpn_len"])
        cols["alpn"].append(alpn_list(bytes(r["alpn"][:alen])) or None if alen else None)
        cols["quic_version"].append(quic_version_name(int(r["quic_version"])) if r["quic"] else None)
    return cols


def columns(records: np.ndarray, names: np.ndarray, dns: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The name columns for `records` (a snapshot's flows) from `names` (the
    engine's, name_dtype): a flow's own names, or else its reverse
    direction's; then ``dns_name`` from `dns` (the engine's DNS answers
    joined to flows, dns_name_dtype) where a flow has none of those, and
    ``name_source``. Object arrays, None where a flow has no such name."""
    out = _own(records, names)
    if dns is not None and len(dns) and len(records):
        at = _find(records, dns, (False,))
        for row in np.flatnonzero(at >= 0):
            if out["server_name"][row] is None and out["http_host"][row] is None:
                if out["dns_query"][row] is None:
                    r = dns[at[row]]
                    out["dns_name"][row] = dns_name(bytes(r["name"][: int(r["name_len"])]))
    for col, source in zip(("server_name", "http_host", "dns_query", "dns_name"), SOURCES):
        unset = np.fromiter(
            (x is None for x in out["name_source"]), dtype=bool, count=len(out["name_source"])
        )
        has = np.fromiter((x is not None for x in out[col]), dtype=bool, count=len(out[col]))
        out["name_source"][unset & has] = source
    return out


def _find(records: np.ndarray, table: np.ndarray, directions: tuple[bool, ...]) -> np.ndarray:
    """For each of `records`, the row of `table` with its key (or, in turn
    for the `directions` that are True, its reverse key); -1: none."""
    tkeys = _keys(table)
    order = np.argsort(tkeys, kind="stable")
    sorted_keys = tkeys[order]
    at = np.full(len(records), -1, dtype=np.intp)
    for reverse in directions:
        want = _keys(records, reverse)
        pos = np.minimum(np.searchsorted(sorted_keys, want), len(sorted_keys) - 1)
        hit = (sorted_keys[pos] == want) & (at < 0)
        at[hit] = order[pos[hit]]
    return at


def _own(records: np.ndarray, names: np.ndarray) -> dict[str, np.ndarray]:
    """The columns of the flows' own names (or their reverse direction's)."""
    n = len(records)
    out: dict[str, np.ndarray] = {c: np.full(n, None, dtype=object) for c in COLUMNS}
    if not n or not len(names):
        return out
    at = _find(records, names, (False, True))
    rows = np.flatnonzero(at >= 0)
    if not len(rows):
        return out
    used, inverse = np.unique(at[rows], return_inverse=True)
    dec = decode(names[used])
    for c in dec:
        vals = np.empty(len(used), dtype=object)
        vals[:] = dec[c]
        out[c][rows] = vals[np.asarray(inverse).reshape(-1)]
    return out


def header(counters: Mapping[str, int]) -> dict[str, int]:
    """The names map's counters for a JSON header: ``namesWritten`` and
    ``namesFull`` (names the map had no room for)."""
    return {"namesWritten": int(counters.get("written", 0)), "namesFull": int(counters.get("full", 0))}


#: the columns one name of a flow is chosen from, in order (:func:`shown`),
#: and their JSON fields
SHOWN_COLUMNS = ("server_name", "http_host", "dns_query", "dns_name")
SHOWN_FIELDS = ("serverName", "httpHost", "dnsQuery", "dnsName")


def shown(d: Mapping[str, Any]) -> str:
    """The one name a flow dict is shown by (the TUI's NAME column,
    ``--prometheus-names``' ``name`` label): its server name (SNI), else
    its HTTP Host, else its DNS query, else the name a DNS answer gave its
    remote address (``name_source`` says which); ``""`` without any. As it
    came: escape it where it is printed."""
    return next((str(d[f]) for f in SHOWN_FIELDS if d.get(f)), "")
