"""Addresses as text, in NumPy: ``struct flow_key``'s 16-byte addresses
(IPv4 stored v4-mapped, ``ipver`` 4) formatted exactly as glibc's
``inet_ntop`` formats them, without a Python loop over flows; and
:class:`Text`, N strings as one UTF-8 buffer plus offsets (Arrow's layout).
The one address formatter of the package.

>>> import numpy as np
>>> from pktstat_bpf.core import addresses
>>> raw = np.zeros((3, 16), np.uint8)
>>> raw[0, 10:] = [255, 255, 10, 0, 0, 1]                  # IPv4, stored v4-mapped
>>> raw[1, :2], raw[1, 15] = [0xfd, 0], 1
>>> raw[2, 10:] = [255, 255, 192, 0, 2, 7]                 # an IPv6 address ::ffff:192.0.2.7
>>> list(addresses.address_strings(raw, np.array([4, 6, 6])))
['10.0.0.1', 'fd00::1', '::ffff:192.0.2.7']
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

# -- addresses as text ---------------------------------------------------------
# A formatted address is a row of a uint8 matrix in which 0 means "no
# character here"; dropping the zeros row by row (one boolean index of the
# whole matrix) leaves the addresses one after the other, as Arrow stores
# strings.

_TABLES: dict[str, np.ndarray] = {}


def _table(name: str) -> np.ndarray:
    if not _TABLES:
        dec = [str(i).encode() for i in range(256)]
        _TABLES["v4_first"] = _packed(dec, 4).view(np.uint32).reshape(256)
        _TABLES["v4_dot"] = _packed([b"." + d for d in dec], 4).view(np.uint32).reshape(256)
        hx = [b"%x" % i for i in range(65536)]
        _TABLES["v6_first"] = _packed(hx, 5).view("V5").reshape(65536)
        _TABLES["v6_colon"] = _packed([b":" + h for h in hx], 5).view("V5").reshape(65536)
        _TABLES["v6_run"] = _packed([b":"], 5).view("V5").reshape(1)
        _TABLES["v6_mixed"] = _packed([b"::", b"::ffff:"], 7)
    return _TABLES[name]


def _packed(items: Sequence[bytes], width: int) -> np.ndarray:
    """Byte strings, each NUL-padded to `width`, as an (N, width) uint8 array."""
    return np.frombuffer(b"".join(s.ljust(width, b"\0") for s in items), np.uint8).reshape(-1, width).copy()


def _ipv4_chars(octets: np.ndarray) -> np.ndarray:
    """(N, 4) uint8 octets -> (N, 16) characters (``a.b.c.d``, NUL-padded)."""
    first, dot = _table("v4_first"), _table("v4_dot")
    out = np.empty((len(octets), 4), np.uint32)
    out[:, 0] = first[octets[:, 0]]
    out[:, 1:] = dot[octets[:, 1:]]
    return out.view(np.uint8).reshape(len(octets), 16)


#: eight 5-byte groups (``:`` and up to four hex digits) and a trailing ``:``
_V6_ROW = np.dtype([("group", "V5", (8,)), ("tail", "u1")])


def _ipv6_chars(raw: np.ndarray) -> np.ndarray:
    """(N, 16) uint8 addresses -> (N, 41) characters, as glibc's inet_ntop
    writes them (RFC 5952 with glibc's choices): lowercase hex groups
    without leading zeros; the first longest run of two or more zero groups
    as ``::``; ``::a.b.c.d`` and ``::ffff:a.b.c.d`` for the IPv4-compatible
    and IPv4-mapped forms."""
    n = len(raw)
    words = np.ascontiguousarray(raw).view(">u2").reshape(n, 8).astype(np.uint16)
    out = np.zeros(n, _V6_ROW)
    groups = out["group"]
    groups[:, 0] = _table("v6_first")[words[:, 0]]
    groups[:, 1:] = _table("v6_colon")[words[:, 1:]]
    zero = words == 0
    rows = np.flatnonzero((zero[:, :-1] & zero[:, 1:]).any(axis=1))  # the rows with a run to shorten
    if len(rows):
        z = zero[rows]
        run = np.zeros(z.shape, np.uint8)  # run[:, i]: length of the zero run ending at group i
        run[:, 0] = z[:, 0]
        for i in range(1, 8):
            run[:, i] = (run[:, i - 1] + 1) * z[:, i]
        length = run.max(axis=1)
        end = run.argmax(axis=1)  # where the first longest run ends
        start = end - length + 1
        col = np.arange(8)
        block = groups[rows]
        block[(col >= start[:, None]) & (col <= end[:, None])] = np.zeros(1, "V5")[0]
        block[np.arange(len(rows)), start] = _table("v6_run")[0]  # with its neighbour's ':' it makes '::'
        groups[rows] = block
        out["tail"][rows[end == 7]] = ord(":")
        w5 = words[rows, 5]
        mixed = (start == 0) & ((length == 6) | ((length == 5) & (w5 == 0xFFFF)))
        if mixed.any():
            m = rows[mixed]
            chars = np.zeros((len(m), 41), np.uint8)
            chars[:, :7] = _table("v6_mixed")[(length[mixed] == 5).astype(np.intp)]
            chars[:, 7:23] = _ipv4_chars(raw[m, 12:16])
            out[m] = chars.view(_V6_ROW).reshape(len(m))
    return out.view(np.uint8).reshape(n, 41)


class Text:
    """N strings as one UTF-8 buffer and N + 1 offsets (Arrow's layout)."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self.data = data
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_codes(cls, codes: np.ndarray, values: Sequence[str]) -> Text:
        """``values[codes]``, each distinct value encoded once."""
        encoded = [v.encode("utf-8") for v in values]
        lengths = (
            np.array([len(e) for e in encoded], np.int64)[codes] if len(codes) else np.zeros(0, np.int64)
        )
        offsets = np.zeros(len(codes) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if offsets[-1] == 0:
            return cls(np.zeros(0, np.uint8), offsets)
        pool = np.frombuffer(b"".join(encoded), np.uint8)
        starts = np.zeros(len(encoded), np.int64)
        np.cumsum([len(e) for e in encoded[:-1]], out=starts[1:])
        row = np.repeat(np.arange(len(codes)), lengths)
        return cls(pool[starts[codes][row] + np.arange(offsets[-1]) - offsets[row]], offsets)

    @classmethod
    def from_chars(cls, chars: np.ndarray) -> Text:
        """From an (N, W) uint8 matrix in which 0 marks no character."""
        keep = chars != 0
        offsets = np.zeros(len(chars) + 1, np.int64)
        np.cumsum(keep.sum(axis=1, dtype=np.int32), out=offsets[1:])
        return cls(chars[keep], offsets)

    def to_numpy(self) -> np.ndarray:
        """The strings as an object array of str: by pyarrow where something
        already imported it (a DataFrame, Parquet), else through a
        fixed-width NumPy array. Never imported here: the text and JSON
        outputs call this, and pyarrow takes longer to import (0.5 s on a
        busy machine, seconds in an emulated guest) than formatting takes."""
        n = len(self)
        if n == 0:
            return np.empty(0, object)
        if sys.modules.get("pyarrow") is not None:
            return self.to_arrow().to_numpy(zero_copy_only=False)
        lengths = np.diff(self.offsets)
        width = max(int(lengths.max()), 1)
        fixed = np.zeros((n, width), np.uint8)
        row = np.repeat(np.arange(n), lengths)
        fixed[row, np.arange(len(self.data)) - self.offsets[row]] = self.data
        packed = fixed.view(f"S{width}").reshape(n)
        ascii = not len(self.data) or int(self.data.max()) < 0x80
        text = packed.astype(f"U{width}") if ascii else np.char.decode(packed, "utf-8")
        return text.astype(object)

    def to_arrow(self) -> Any:
        """A pyarrow ``large_string`` array (64-bit offsets, as pandas keeps
        its Arrow strings: no cast on the way in)."""
        import pyarrow

        return pyarrow.Array.from_buffers(
            pyarrow.large_string(),
            len(self),
            [None, pyarrow.py_buffer(self.offsets), pyarrow.py_buffer(self.data)],
        )


def address_text(addrs: np.ndarray, ipver: np.ndarray) -> Text:
    """Addresses stored as 16 bytes (IPv4 v4-mapped, ``ipver`` 4; ARP's
    protocol addresses too, ``ipver`` 0) formatted as :func:`format_addr`
    formats them."""
    n = len(addrs)
    v4 = (np.asarray(ipver) == 4) | (np.asarray(ipver) == 0)
    if v4.all():
        return Text.from_chars(_ipv4_chars(np.ascontiguousarray(addrs[:, 12:16])))
    chars = np.zeros((n, 41), np.uint8)
    if v4.any():
        chars[v4, :16] = _ipv4_chars(np.ascontiguousarray(addrs[v4, 12:16]))
        chars[~v4] = _ipv6_chars(addrs[~v4])
    else:
        chars = _ipv6_chars(addrs)
    return Text.from_chars(chars)


def address_strings(addrs: np.ndarray, ipver: np.ndarray) -> np.ndarray:
    """:func:`address_text` as an object array of str."""
    return address_text(addrs, ipver).to_numpy()


def format_addr(raw: bytes, ipver: int) -> str:
    """One address (16 bytes, as in a flow key) as text."""
    return str(address_strings(np.frombuffer(raw, np.uint8).reshape(1, 16), np.array([ipver]))[0])
