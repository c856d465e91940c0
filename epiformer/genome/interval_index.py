"""Interval sets: sorted, merged intervals per chromosome for fast overlap queries (blacklists,
peaks, requested regions)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


class IntervalIndex:
    """Sorted, merged intervals per chromosome for fast 'does this bin overlap' queries."""

    def __init__(self, intervals: Sequence[tuple[str, int, int]]) -> None:
        by_chrom: dict[str, list[tuple[int, int]]] = {}
        for chrom, start, end in intervals:
            by_chrom.setdefault(chrom, []).append((start, end))
        self._index: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for chrom, spans in by_chrom.items():
            merged: list[list[int]] = []
            for start, end in sorted(spans):
                if merged and start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            array = np.asarray(merged, dtype=np.int64)
            self._index[chrom] = (array[:, 0], array[:, 1])
        self.count = sum(len(v[0]) for v in self._index.values())

    @property
    def chroms(self) -> set[str]:
        return set(self._index)

    def overlaps(self, chrom: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Whether each [start, end) overlaps any interval of ``chrom`` (boolean array)."""
        starts, ends = np.asarray(starts), np.asarray(ends)
        if chrom not in self._index:
            return np.zeros(starts.shape, dtype=bool)
        lo, hi = self._index[chrom]
        i = np.searchsorted(hi, starts, side="right")
        inside = i < len(lo)
        return inside & (lo[np.minimum(i, len(lo) - 1)] < ends)

    def covers(self, chrom: str, start: int, end: int) -> bool:
        """Whether [start, end) lies wholly inside one interval."""
        if chrom not in self._index:
            return False
        lo, hi = self._index[chrom]
        i = int(np.searchsorted(hi, start, side="right"))
        return i < len(lo) and lo[i] <= start and hi[i] >= end
