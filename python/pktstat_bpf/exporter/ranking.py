"""Ranking for the exporter: the heaviest keys (flows, processes) of a
capture by exponentially weighted traffic, in NumPy, linear in the keys of
an interval."""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from ..core.keys import group, hash_words, opaque_words, search

#: Time constant (seconds) of the exponentially weighted traffic that ranks
#: flows and processes for the top N.
RANK_WINDOW = 60.0
#: A flow or process that sent nothing for this long (seconds) is no longer
#: ranked or exported.
IDLE_FORGET = 600.0


def top_order(score: np.ndarray, tiebreak: np.ndarray, n: int) -> np.ndarray:
    """Positions of the `n` largest `score` values (ties: larger `tiebreak`
    first), in that order. Linear in ``len(score)`` plus ``n log n``."""
    m = len(score)
    n = min(n, m)
    if n <= 0:
        return np.empty(0, dtype=np.intp)
    cand = np.arange(m)
    if n < m:
        kth = np.partition(score, m - n)[m - n]
        above = np.flatnonzero(score > kth)
        tie = np.flatnonzero(score == kth)
        need = n - len(above)
        if need < len(tie):
            tb = tiebreak[tie]
            tie = tie[np.argpartition(-tb.astype(np.float64), need - 1)[:need]]
        cand = np.concatenate([above, tie])
    order = np.lexsort((-tiebreak[cand].astype(np.float64), -score[cand]))
    return cand[order]


def group_sums(keys: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Unique `keys` (``V<n>``), the exact (uint64) sum of each of `values`
    per key, and the position of one row of each key. Grouped on 64-bit
    hashes (a sort of integers), checked against the whole keys; should two
    different keys share a hash, on the keys themselves."""
    first, inverse = group(opaque_words(keys))
    return keys[first], sums(inverse, len(first), *values), first


def sums(inverse: np.ndarray, groups: int, *values: np.ndarray) -> list[np.ndarray]:
    """Exact uint64 sums of each of `values` per group (`inverse`: the
    group of each row, every group non-empty)."""
    out = []
    for v in values:
        acc = np.zeros(groups, np.uint64)
        np.add.at(acc, inverse, v.astype(np.uint64, copy=False))
        out.append(acc)
    return out


class TopTracker:
    """The heaviest keys of a capture by exponentially weighted traffic.

    Per interval, :meth:`advance` lets its time pass (weights decay by
    ``exp(-dt / window)``; a key idle for `forget` seconds is dropped), then
    :meth:`add` merges the keys that sent in it (unique): their bytes in it,
    the packets/bytes to export and one record each (for the labels). At
    most `capacity` keys are kept, the heaviest. With ``accumulate`` the
    exported values are summed over updates (sums of deltas, so they never
    go down, also when the engine retires a flow and sees it again);
    without, they are replaced.
    """

    def __init__(
        self,
        capacity: int,
        *,
        window: float = RANK_WINDOW,
        forget: float = IDLE_FORGET,
        accumulate: bool = False,
    ) -> None:
        self.capacity = capacity
        self.window = window
        self.forget = forget
        self.accumulate = accumulate
        self.keys: np.ndarray | None = None
        self.hashes = np.empty(0, dtype=np.uint64)
        self.score = np.empty(0, dtype=np.float64)
        self.values = np.empty((0, 2), dtype=np.uint64)
        self.idle = np.empty(0, dtype=np.float64)  # seconds since the key last sent
        self.rows: np.ndarray | None = None
        self.columns: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.score)

    def advance(self, dt: float) -> None:
        """Let `dt` seconds pass: weights decay, idle keys are forgotten."""
        if len(self.score) == 0:
            return
        self.score *= math.exp(-dt / self.window) if self.window > 0 else 0.0
        self.idle += dt
        keep = self.idle < self.forget
        if not keep.all():
            self._take(np.flatnonzero(keep))

    def add(
        self,
        keys: np.ndarray | Callable[[np.ndarray], np.ndarray],
        sent: np.ndarray,
        values: np.ndarray,
        rows: np.ndarray,
        columns: Mapping[str, np.ndarray] | None = None,
        hashes: np.ndarray | None = None,
        initial: np.ndarray | None = None,
    ) -> None:
        """Merge the keys (unique, ``V<n>``) that sent in the interval just
        :meth:`advance`-d over. `keys` may be a function giving the keys at
        some positions (only those are then made), with their 64-bit
        `hashes` given. `initial`: the values a key not tracked yet starts
        from (default `values`; with ``accumulate``, e.g. a flow's lifetime
        counts while `values` are the interval's)."""
        if self.capacity <= 0 or len(sent) == 0:
            return
        columns = columns or {}
        if callable(keys):
            key_at = keys
        else:
            key_at = keys.__getitem__
            if hashes is None:
                hashes = hash_words(opaque_words(keys))
        assert hashes is not None
        if self.keys is None:
            self.keys, self.rows = key_at(np.arange(0)), rows[:0]
            self.columns = {k: v[:0] for k, v in columns.items()}
            self.values = np.empty((0, values.shape[1]), dtype=np.uint64)  # as many values as given
        pos = self._find(key_at, hashes)
        found = pos >= 0
        at = pos[found]
        self.score[at] += sent[found]
        self.idle[at] = 0.0
        if self.accumulate:
            self.values[at] += values[found].astype(np.uint64)
        else:
            self.values[at] = values[found]
        self.rows[at] = rows[found]  # type: ignore[index]
        for k in self.columns:
            self.columns[k][at] = columns[k][found]
        new = np.flatnonzero(~found)
        if len(new) > self.capacity:  # only the heaviest new keys can make it
            new = new[top_order(sent[new].astype(np.float64), values[new, 1], self.capacity)]
        if len(new):
            self.keys = np.concatenate([self.keys, key_at(new)])
            self.hashes = np.concatenate([self.hashes, hashes[new]])
            self.score = np.concatenate([self.score, sent[new].astype(np.float64)])
            start = values if initial is None else initial
            self.values = np.concatenate([self.values, start[new].astype(np.uint64)])
            self.idle = np.concatenate([self.idle, np.zeros(len(new))])
            self.rows = np.concatenate([self.rows, rows[new]])
            self.columns = {k: np.concatenate([v, columns[k][new]]) for k, v in self.columns.items()}
        if len(self.score) > self.capacity:
            self._take(np.sort(top_order(self.score, self.values[:, 1], self.capacity)))

    def _find(self, key_at: Callable[[np.ndarray], np.ndarray], hashes: np.ndarray) -> np.ndarray:
        """Position of each incoming key among the tracked keys, or -1: a
        search of the sorted tracked hashes, confirmed on the whole key."""
        out = np.full(len(hashes), -1, dtype=np.intp)
        order = np.argsort(self.hashes)
        mine, hit = search(order, self.hashes[order], hashes)
        same = self.keys[mine] == key_at(hit)  # type: ignore[index]
        out[hit[same]] = mine[same]
        return out

    def _take(self, idx: np.ndarray) -> None:
        self.keys, self.hashes = self.keys[idx], self.hashes[idx]  # type: ignore[index]
        self.score, self.values, self.idle = self.score[idx], self.values[idx], self.idle[idx]
        self.rows = self.rows[idx]  # type: ignore[index]
        self.columns = {k: v[idx] for k, v in self.columns.items()}

    def top(self, n: int) -> np.ndarray:
        """Positions of the `n` heaviest keys, heaviest first (ties: more
        exported bytes first)."""
        return top_order(self.score, self.values[:, 1] if len(self.values) else self.score, n)
