"""The tiling of a genome for precompute.

Every chromosome is covered by windows whose cropped outputs abut exactly (the engine's
:meth:`~epiformer.inference.engine.Engine.tile_starts` from base 0), so output bins sit on a 0-based grid of
``bin_size``. Windows whose output holds no A/C/G/T base, lies wholly in the blacklist or outside
the requested regions are left out. The remaining windows, in genome order, are cut into fixed
global batches; a shard takes every N-th batch, so a window is always predicted in the same batch
whatever the number of shards — the reason results are bit-identical across shardings.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from epiformer.errors import UserError
from epiformer.genome.encoding import sequence_codes
from epiformer.genome.interval_index import IntervalIndex
from epiformer.genome.reader import Genome
from epiformer.inference.engine import Engine


class PrecomputeError(UserError, ValueError):
    """A precompute run that cannot go on, with a message naming the file, flag or shard."""


@dataclass(frozen=True)
class TilePlan:
    """Windows to predict, in genome order, and their fixed batches."""

    chrom_sizes: dict[str, int]      # every chromosome of the genome, in FASTA order (bigWig header)
    chroms: list[str]                # the chromosomes tiled
    window_chrom: np.ndarray         # (windows,) index into ``chroms``
    window_start: np.ndarray         # (windows,) 0-based start of each input window (may be < 0)
    seq_len: int
    bin_size: int
    output_offset: int
    output_bins: int
    batch_size: int
    skipped: int                     # tiles left out (no A/C/G/T, blacklisted or outside --bed)

    @property
    def n_windows(self) -> int:
        return len(self.window_start)

    @property
    def n_batches(self) -> int:
        return -(-self.n_windows // self.batch_size)

    @property
    def stride(self) -> int:
        return self.output_bins * self.bin_size

    def batch_windows(self, batch: int) -> range:
        """Global indices of the windows in one batch."""
        return range(batch * self.batch_size, min((batch + 1) * self.batch_size, self.n_windows))

    def intervals(self, windows: range) -> list[tuple[str, int]]:
        """(chrom, window start) of some windows."""
        return [(self.chroms[self.window_chrom[w]], int(self.window_start[w])) for w in windows]

    def output_starts(self) -> np.ndarray:
        """0-based start of each window's first output bin."""
        return self.window_start + self.output_offset

    def to_dict(self) -> dict:
        """Everything but the window arrays (those are stored in the shard files)."""
        return {"chrom_sizes": self.chrom_sizes, "chroms": self.chroms, "seq_len": self.seq_len,
                "bin_size": self.bin_size, "output_offset": self.output_offset, "output_bins": self.output_bins,
                "batch_size": self.batch_size, "skipped": self.skipped}

    @classmethod
    def from_dict(cls, fields: dict, window_chrom: np.ndarray, window_start: np.ndarray) -> "TilePlan":
        return cls(window_chrom=np.asarray(window_chrom, np.int32), window_start=np.asarray(window_start, np.int64),
                   **fields)

    def digest(self) -> str:
        """A checksum of everything that decides which window lands in which batch."""
        h = hashlib.sha256()
        h.update(repr((sorted(self.chrom_sizes.items()), self.chroms, self.seq_len, self.bin_size,
                       self.output_offset, self.output_bins, self.batch_size)).encode())
        h.update(self.window_chrom.astype(np.int32).tobytes())
        h.update(self.window_start.astype(np.int64).tobytes())
        return h.hexdigest()


def shard_batches(plan: TilePlan, shard: int, n_shards: int) -> list[int]:
    """The global batches shard ``shard`` of ``n_shards`` predicts: every ``n_shards``-th batch."""
    return list(range(shard, plan.n_batches, n_shards))


def plan_tiles(genome: Genome, engine: Engine, batch_size: int, chroms: Sequence[str] | None = None,
               regions: Sequence[tuple[str, int, int]] | None = None,
               blacklist: IntervalIndex | None = None) -> TilePlan:
    """Tile ``chroms`` (default: all of the genome), keeping windows whose output holds an A/C/G/T
    base, is not wholly blacklisted and, with ``regions``, overlaps one of them."""
    for chrom in chroms or []:
        genome.check_interval(chrom, 0, 1)
    names = [c for c in genome.chrom_sizes if not chroms or c in set(chroms)]
    wanted = IntervalIndex(regions) if regions is not None else None
    span = engine.output_span
    kept_chrom: list[int] = []
    kept_start: list[int] = []
    skipped = 0
    for i, chrom in enumerate(names):
        size = genome.chrom_sizes[chrom]
        for start in engine.tile_starts(0, size):
            lo = start + engine.output_offset
            hi = min(lo + span, size)
            keep = (wanted is None or bool(wanted.overlaps(chrom, np.array([lo]), np.array([hi]))[0])) and \
                (blacklist is None or not blacklist.covers(chrom, lo, hi)) and \
                bool(np.any(sequence_codes(genome.sequence(chrom, lo, hi)) < 4))
            if keep:
                kept_chrom.append(i)
                kept_start.append(start)
            else:
                skipped += 1
    cfg = engine.config
    return TilePlan(chrom_sizes=dict(genome.chrom_sizes), chroms=names,
                    window_chrom=np.asarray(kept_chrom, dtype=np.int32),
                    window_start=np.asarray(kept_start, dtype=np.int64), seq_len=cfg.seq_len,
                    bin_size=cfg.bin_size, output_offset=engine.output_offset, output_bins=cfg.n_output_bins,
                    batch_size=batch_size, skipped=skipped)


def empty_bins(genome: Genome, plan: TilePlan, windows: range, blacklist: IntervalIndex | None) -> np.ndarray:
    """(windows, output bins) True where a bin gets no data: no A/C/G/T base in it, any overlap
    with the blacklist, or wholly past the chromosome end."""
    bin_size, n_bins = plan.bin_size, plan.output_bins
    out = np.zeros((len(windows), n_bins), dtype=bool)
    for row, (chrom, start) in enumerate(plan.intervals(windows)):
        lo = start + plan.output_offset
        codes = sequence_codes(genome.sequence(chrom, lo, lo + n_bins * bin_size))
        out[row] = (codes.reshape(n_bins, bin_size) == 4).all(axis=1)
        if blacklist is not None:
            bin_starts = lo + bin_size * np.arange(n_bins)
            out[row] |= blacklist.overlaps(chrom, bin_starts, bin_starts + bin_size)
    return out
