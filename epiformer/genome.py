"""Genome access: FASTA sequence, conservation bigWig, chromosome sizes, and the model's encoding.

Coordinates are 0-based, half-open. Intervals may reach past either end of a chromosome: the
missing bases are ``N`` and their conservation is 0, as in a window at a chromosome edge.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Container, Iterator

import numpy as np

from .errors import UserError

BASES = "ACGT"

# Byte -> row of the one-hot table: A, C, G, T (either case) -> 0..3; everything else -> 4 (zeros).
_CODE = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _CODE[ord(_b)] = _CODE[ord(_b.lower())] = _i
_ONE_HOT = np.vstack([np.eye(4, dtype=np.float32), np.zeros((1, 4), dtype=np.float32)])

_COMPLEMENT = str.maketrans(
    "ACGTRYKMBDHVNSWacgtrykmbdhvnsw",
    "TGCAYRMKVHDBNSWtgcayrmkvhdbnsw",
)


class GenomeError(UserError, ValueError):
    """A genome file or interval that cannot be used, with a message naming it."""


def sequence_codes(seq: str | bytes) -> np.ndarray:
    """Base codes (uint8: A=0, C=1, G=2, T=3, anything else=4) of a sequence, case-insensitive."""
    raw = seq.encode("latin-1", errors="replace") if isinstance(seq, str) else bytes(seq)
    return _CODE[np.frombuffer(raw, dtype=np.uint8)]


def one_hot(seq: str | bytes) -> np.ndarray:
    """(4, L) float32 one-hot in A, C, G, T order; N, IUPAC codes and other letters are zero columns."""
    return one_hot_codes(sequence_codes(seq))


def one_hot_codes(codes: np.ndarray) -> np.ndarray:
    """(4, L) float32 one-hot of base codes from :func:`sequence_codes`."""
    return _ONE_HOT[codes].T.copy()


def encode(seq: str | bytes, conservation: np.ndarray | None = None) -> np.ndarray:
    """The model input for one sequence: one-hot (4, L) times exp(conservation) per base."""
    return encode_codes(sequence_codes(seq), conservation)


def encode_codes(codes: np.ndarray, conservation: np.ndarray | None = None) -> np.ndarray:
    """The model input from base codes (:func:`sequence_codes`): one-hot times exp(conservation)."""
    x = one_hot_codes(codes)
    if conservation is not None:
        cons = np.asarray(conservation, dtype=np.float32)
        if cons.shape != (x.shape[1],):
            raise ValueError(f"conservation has shape {cons.shape}, sequence length is {x.shape[1]}")
        x *= np.exp(np.nan_to_num(cons, nan=0.0))
    return x


def reverse_complement(seq: str) -> str:
    """Reverse complement, keeping case; IUPAC codes map to their complements."""
    return seq.translate(_COMPLEMENT)[::-1]


def reverse_complement_encoded(x: np.ndarray) -> np.ndarray:
    """Reverse complement of encoded DNA (..., 4, L): A<->T, C<->G is a flip of the channel axis."""
    return x[..., ::-1, ::-1].copy()


def reverse_track(values: np.ndarray) -> np.ndarray:
    """Reverse a per-base or per-bin track (conservation, targets) along its last axis."""
    return np.asarray(values)[..., ::-1].copy()


def other_chrom_name(name: str, known: Container[str]) -> str | None:
    """``name`` under the other naming convention (``chr1`` and ``1``) when ``known`` holds it:
    the hint for files that name chromosomes differently."""
    other = name[3:] if name.startswith("chr") else f"chr{name}"
    return other if other in known else None


REGION_SPAN = re.compile(r"[0-9]{1,12}(-[0-9]{1,12})?")    # ASCII digits only: int() takes others too


def parse_region(text: str) -> tuple[str, int, int]:
    """``chr:start-end`` as typed in a genome browser (1-based, inclusive; commas allowed) ->
    (chrom, start, end) 0-based half-open. ``chr:pos`` is the single base at pos."""
    chrom, sep, span = text.strip().rpartition(":")
    span = span.replace(",", "").replace("_", "")
    try:
        if not sep or not chrom or not REGION_SPAN.fullmatch(span):
            raise ValueError
        first, dash, last = span.partition("-")
        start, end = int(first), int(last) if dash else int(first)
    except ValueError:
        raise GenomeError(f"region {text!r} is not chr:start-end (1-based, e.g. chr1:1,000,001-1,100,000)") from None
    if start < 1 or end < start:
        raise GenomeError(f"region {text!r}: need 1 <= start <= end (1-based, inclusive)")
    return chrom, start - 1, end


def read_bed_intervals(path: str | os.PathLike, what: str = "BED file") -> Iterator[tuple[str, int, int]]:
    """(chrom, start, end) of each line of a BED file; header, comment and blank lines are skipped.

    A line without integer start/end, or with end <= start, is a :class:`GenomeError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise GenomeError(f"{what} {path}: no such file")
    with open(path) as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            fields = line.split()
            try:
                chrom, start, end = fields[0], int(fields[1]), int(fields[2])
            except (IndexError, ValueError):
                raise GenomeError(f"{path}, line {line_no}: expected 'chrom<TAB>start<TAB>end', "
                                  f"got {line.rstrip()[:80]!r}") from None
            if end <= start:
                raise GenomeError(f"{path}, line {line_no}: end {end} is not after start {start}")
            yield chrom, start, end


def read_chrom_sizes(path: str | os.PathLike) -> dict[str, int]:
    """Read a two-column ``chrom<TAB>size`` file (UCSC chrom.sizes or a .fai index)."""
    path = Path(path)
    if not path.is_file():
        raise GenomeError(f"chromosome sizes file {path}: no such file")
    sizes: dict[str, int] = {}
    with open(path) as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 2:
                fields = line.split()
            try:
                name, size = fields[0], int(fields[1])
            except (IndexError, ValueError):
                raise GenomeError(f"{path}, line {line_no}: expected 'chrom<TAB>size', "
                                  f"got {line.rstrip()!r}") from None
            if size <= 0:
                raise GenomeError(f"{path}, line {line_no}: size of {name} must be positive")
            if name in sizes:
                raise GenomeError(f"{path}, line {line_no}: chromosome {name} listed twice")
            sizes[name] = size
    if not sizes:
        raise GenomeError(f"chromosome sizes file {path} lists no chromosomes")
    return sizes


class Genome:
    """A FASTA (indexed on first use) with an optional conservation bigWig.

    >>> genome = Genome("genome.fa", "phastCons.bw")
    >>> x = genome.encode("chr1", 1_000_000, 1_098_304)   # (4, 98304) model input
    """

    def __init__(self, fasta: str | os.PathLike, conservation: str | os.PathLike | None = None) -> None:
        import pyfaidx

        self.fasta_path = Path(fasta)
        if not self.fasta_path.is_file():
            raise GenomeError(f"FASTA file {self.fasta_path}: no such file")
        try:
            self._fasta = pyfaidx.Fasta(str(self.fasta_path), as_raw=True,
                                        sequence_always_upper=False, build_index=True)
        except (pyfaidx.FastaIndexingError, pyfaidx.FastaNotFoundError, ValueError, OSError) as err:
            raise GenomeError(f"FASTA file {self.fasta_path} cannot be indexed: {err}") from None
        self.chrom_sizes: dict[str, int] = {name: len(rec) for name, rec in self._fasta.records.items()}
        if not self.chrom_sizes:
            raise GenomeError(f"FASTA file {self.fasta_path} holds no sequences")
        self.conservation_path = Path(conservation) if conservation else None
        self._cons = None
        if self.conservation_path is not None:
            self._cons = _open_bigwig(self.conservation_path)
            self._cons_chroms: dict[str, int] = self._cons.chroms()

    def close(self) -> None:
        self._fasta.close()
        if self._cons is not None:
            self._cons.close()

    def __enter__(self) -> "Genome":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_interval(self, chrom: str, start: int, end: int) -> None:
        """Raise :class:`GenomeError` for an unknown chromosome or an empty/reversed interval."""
        if chrom not in self.chrom_sizes:
            known = ", ".join(list(self.chrom_sizes)[:5])
            raise GenomeError(f"chromosome {chrom!r} is not in {self.fasta_path.name} "
                              f"(it has {len(self.chrom_sizes)}: {known}{', ...' if len(self.chrom_sizes) > 5 else ''})")
        if start >= end:
            raise GenomeError(f"interval {chrom}:{start}-{end} is empty: start must be below end")

    def conservation_chroms(self) -> dict[str, int]:
        """Chromosome sizes in the conservation bigWig (empty without one)."""
        return dict(self._cons_chroms) if self._cons is not None else {}

    def sequence(self, chrom: str, start: int, end: int) -> str:
        """Bases of [start, end), case kept, N-padded where the interval leaves the chromosome."""
        self.check_interval(chrom, start, end)
        size = self.chrom_sizes[chrom]
        lo, hi = max(start, 0), min(end, size)
        inner = self._fasta[chrom][lo:hi] if lo < hi else ""
        left = min(max(-start, 0), end - start)
        return "N" * left + inner + "N" * (end - start - left - len(inner))

    def conservation(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Per-base conservation of [start, end) as float32; NaN, no data and off-chromosome are 0.

        Without a conservation track, all zeros (so exp(conservation) is 1).
        """
        self.check_interval(chrom, start, end)
        out = np.zeros(end - start, dtype=np.float32)
        if self._cons is None:
            return out
        if chrom not in self._cons_chroms:
            raise GenomeError(f"conservation bigWig {self.conservation_path} has no chromosome {chrom!r}")
        lo, hi = max(start, 0), min(end, self._cons_chroms[chrom])
        if lo < hi:
            values = np.asarray(self._cons.values(chrom, lo, hi, numpy=True), dtype=np.float32)
            out[lo - start: hi - start] = np.nan_to_num(values, nan=0.0)
        return out

    def encode(self, chrom: str, start: int, end: int, reverse: bool = False) -> np.ndarray:
        """Model input (4, end - start) for an interval; ``reverse`` gives its reverse complement."""
        x = encode(self.sequence(chrom, start, end), self.conservation(chrom, start, end))
        return reverse_complement_encoded(x) if reverse else x


def _open_bigwig(path: Path):
    import pyBigWig

    if not path.is_file():
        raise GenomeError(f"bigWig file {path}: no such file")
    try:
        handle = pyBigWig.open(str(path))
    except RuntimeError:
        handle = None
    if handle is None or not handle.isBigWig():
        raise GenomeError(f"bigWig file {path} cannot be opened as a bigWig")
    return handle
