"""Flow keys: the one hasher of the package, and what is built on it.

A flow is identified by its whole ``struct flow_key`` (72 bytes at the start
of each record: tuple, direction, interface and owner). Everything that joins,
groups or searches flows in NumPy does it here, the same way: a 64-bit hash of
the key's words (splitmix64's finaliser, mixed word by word), a sort or search
of the hashes, and a check against the whole keys, so a hash collision can
never join two different flows (should one happen, the exact and slower path
on the keys themselves takes over).
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SEED = np.uint64(0x9E3779B97F4A7C15)


def _key_width(dtype: np.dtype) -> int:
    """Bytes of ``struct flow_key`` at the start of a record: the value follows it."""
    assert dtype.fields is not None
    return int(dtype.fields["packets"][1])


def flow_keys(records: np.ndarray) -> np.ndarray:
    """The flow key of each record as one opaque ``V72`` value, comparable
    and sortable byte-wise."""
    n = len(records)
    width = _key_width(records.dtype)
    raw = np.ascontiguousarray(records).view(np.uint8).reshape(n, records.dtype.itemsize)
    return np.ascontiguousarray(raw[:, :width]).view(f"V{width}").reshape(n)


def key_words(records: np.ndarray) -> np.ndarray:
    """The flow key of each record as 64-bit words, shape (N, 9): a view into
    `records` (no copy when it is contiguous)."""
    width = _key_width(records.dtype)
    if width % 8 or records.dtype.itemsize % 8:  # pragma: no cover - flow.h keeps both 8-aligned
        raise ValueError("flow key and record sizes must be multiples of 8")
    n = len(records)
    words = np.ascontiguousarray(records).view(np.uint64).reshape(n, records.dtype.itemsize // 8)
    return words[:, : width // 8]


def opaque_words(keys: np.ndarray) -> np.ndarray:
    """Opaque keys (a ``V<n>`` or ``S<n>`` array) as rows of 64-bit words,
    zero-padded to a multiple of 8 bytes."""
    n, width = len(keys), keys.dtype.itemsize
    if width % 8 == 0:
        return np.ascontiguousarray(keys).view(np.uint64).reshape(n, width // 8)
    raw = np.zeros((n, -(-width // 8) * 8), dtype=np.uint8)
    raw[:, :width] = np.ascontiguousarray(keys).view(np.uint8).reshape(n, width)
    return raw.view(np.uint64)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    h = (h ^ (h >> np.uint64(30))) * _M1
    h = (h ^ (h >> np.uint64(27))) * _M2
    return h ^ (h >> np.uint64(31))


def hash_words(words: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of a (N, K) uint64 array."""
    h = np.full(len(words), _SEED, dtype=np.uint64)
    for i in range(words.shape[1]):
        h = _mix(h ^ words[:, i])
    return h


def key_hashes(records: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each record's flow key (equal keys, equal hashes)."""
    return hash_words(key_words(records))


def group(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal rows of a (N, K) uint64 array: ``(first, codes)``, the position
    of one row of each distinct value and the group of each row (``codes``
    in ``range(len(first))``). Grouped on the rows' hashes, checked against
    the rows themselves."""
    n = len(words)
    _, first, codes = np.unique(hash_words(words), return_index=True, return_inverse=True)
    codes = codes.reshape(n)
    if not (words == words[first][codes]).all():  # pragma: no cover - a 64-bit hash collision
        _, first, codes = np.unique(words, axis=0, return_index=True, return_inverse=True)
        codes = codes.reshape(n)
    return first, codes


def search(order: np.ndarray, ordered: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates for each of `hashes` in a table whose hashes sorted are
    `ordered` (``ordered = table_hashes[order]``): ``(mine, hit)``, the table
    position of the equal hash for the queries at positions `hit`. The
    caller confirms each candidate on the whole key."""
    if len(ordered) == 0 or len(hashes) == 0:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    pos = np.minimum(np.searchsorted(ordered, hashes), len(ordered) - 1)
    hit = np.flatnonzero(ordered[pos] == hashes)
    return order[pos[hit]], hit


class KeyIndex:
    """The flow keys of one reading, indexed for :meth:`find`: sorted 64-bit
    key hashes, searched with ``searchsorted`` and confirmed against the
    full 72-byte keys. (Should two keys of one reading share a hash, it
    falls back to sorting the keys themselves, which is exact and slower.)"""

    def __init__(self, records: np.ndarray) -> None:
        self.words = key_words(records)
        self.hashes = hash_words(self.words)
        self.order = np.argsort(self.hashes, kind="stable")
        self.sorted = self.hashes[self.order]
        self._exact = None
        if len(self.sorted) > 1 and (self.sorted[1:] == self.sorted[:-1]).any():
            self._exact = flow_keys(records)

    def __len__(self) -> int:
        return len(self.hashes)

    def find(self, other: KeyIndex, records: np.ndarray) -> np.ndarray:
        """For each key of `other` (built from `records`), its position
        here, or -1."""
        out = np.full(len(other), -1, dtype=np.intp)
        if len(self) == 0 or len(other) == 0:
            return out
        if self._exact is not None:
            return match(self._exact, flow_keys(records))
        # sorted queries: searchsorted walks both arrays in order (cache friendly)
        mine, hit = search(self.order, self.sorted, other.sorted)
        theirs = other.order[hit]
        same = (self.words[mine] == other.words[theirs]).all(axis=1)
        out[theirs[same]] = mine[same]
        return out


def match(earlier: np.ndarray, later: np.ndarray) -> np.ndarray:
    """For each key in `later`, its position in `earlier`, or -1 where it is
    new. Both are outputs of :func:`flow_keys`; keys are unique in each."""
    if len(earlier) == 0 or len(later) == 0:
        return np.full(len(later), -1, dtype=np.intp)
    order = np.argsort(earlier, kind="stable")
    ordered = earlier[order]
    pos = np.minimum(np.searchsorted(ordered, later), len(ordered) - 1)
    return np.where(ordered[pos] == later, order[pos], -1)


def copy_records(records: np.ndarray) -> np.ndarray:
    """A copy of `records` byte for byte. (``ndarray.copy()`` of a structured
    array may copy field by field, leaving the bytes between fields, e.g.
    padding of ``struct flow_key``, uninitialised: the copy's flow keys would
    then not compare equal to the original's.)"""
    src = np.ascontiguousarray(records)
    out = np.empty_like(src)
    out.view(np.uint8)[...] = src.view(np.uint8)
    return out


def leading_records(rows: np.ndarray) -> np.ndarray:
    """The flow records at the start of each row of `rows` (an engine array
    whose rows begin with a ``struct flow_record``: an interval's or an
    ended record), as a contiguous array of the record dtype, byte for
    byte (padding included, so the keys compare equal)."""
    fields = rows.dtype.fields
    assert fields is not None
    pad, at = fields["_pad"][:2]  # the last field of struct flow_record (flow.h)
    end = at + pad.itemsize
    keep = [(name, f[0], f[1]) for name, f in fields.items() if f[1] + f[0].itemsize <= end]
    dtype = np.dtype(
        {
            "names": [k[0] for k in keep],
            "formats": [k[1] for k in keep],
            "offsets": [k[2] for k in keep],
            "itemsize": end,
        }
    )
    out = np.empty(len(rows), dtype=dtype)
    if len(rows):
        src = np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), rows.dtype.itemsize)
        out.view(np.uint8).reshape(len(rows), end)[...] = src[:, :end]
    return out


def merge_flows(records: np.ndarray) -> np.ndarray:
    """Records of the same flow (a flow retired and seen again) made one:
    packets and bytes summed, the earliest first seen, the latest last seen.
    Rows of distinct flows are kept as they are, in their order."""
    if len(records) < 2:
        return records
    first, codes = group(key_words(records))
    if len(first) == len(records):
        return records
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(first)))
    out = copy_records(records[first])
    for name in ("packets", "bytes"):
        out[name] = np.add.reduceat(records[name][order], starts)
    out["first_seen"] = np.minimum.reduceat(records["first_seen"].view(np.int64)[order], starts).view(
        records["first_seen"].dtype
    )
    out["last_seen"] = np.maximum.reduceat(records["last_seen"].view(np.int64)[order], starts).view(
        records["last_seen"].dtype
    )
    pos = np.argsort(first, kind="stable")  # in the order of each flow's first row
    return out[pos]
