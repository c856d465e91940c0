"""Genome access: FASTA sequence, conservation bigWig, chromosome sizes, and the model's encoding.

Coordinates are 0-based, half-open. Intervals may reach past either end of a chromosome: the
missing bases are ``N`` and their conservation is 0, as in a window at a chromosome edge.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Container, Iterator, Sequence

import numpy as np
import torch

from .errors import UserError

BASES = "ACGT"

# Byte -> row of the one-hot table: A, C, G, T (either case) -> 0..3; everything else -> 4 (zeros).
_CODE = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _CODE[ord(_b)] = _CODE[ord(_b.lower())] = _i
_ONE_HOT = np.vstack([np.eye(4, dtype=np.float32), np.zeros((1, 4), dtype=np.float32)])
CONSERVATION_DTYPE = np.float16     # conservation as windows travel to the device (phastCons 0..1: steps of 2^-11)
BLOCK_BP = 4_000_000                # the most bases of neighbouring windows read from the files at once

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


@dataclass(frozen=True)
class CodedWindows:
    """Windows as they travel to the model's device: base codes (uint8, :func:`sequence_codes`)
    and conservation (``CONSERVATION_DTYPE``, or None without a track), each (N, length); numpy
    arrays or, after a DataLoader, tensors. :func:`encode_tensor` makes the model input of them
    on the device. An engine's windows are longer than the model's by the span of its shifts
    (:meth:`epiformer.engine.Engine.coded_length`)."""

    codes: np.ndarray
    conservation: np.ndarray | None

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows: slice) -> "CodedWindows":
        return CodedWindows(self.codes[rows], None if self.conservation is None else self.conservation[rows])

    @staticmethod
    def concatenate(parts: Sequence["CodedWindows"]) -> "CodedWindows":
        """The windows of ``parts`` in order (all with conservation, or all without)."""
        codes = np.concatenate([np.asarray(p.codes) for p in parts])
        if any(p.conservation is None for p in parts):
            return CodedWindows(codes, None)
        return CodedWindows(codes, np.concatenate([np.asarray(p.conservation) for p in parts]))

    @staticmethod
    def of(codes: np.ndarray, conservation: np.ndarray | None) -> "CodedWindows":
        """One window's codes and conservation (float32 is rounded to ``CONSERVATION_DTYPE``)."""
        cons = None if conservation is None else np.asarray(conservation).astype(CONSERVATION_DTYPE)[None]
        return CodedWindows(np.asarray(codes, np.uint8)[None], cons)


_ONE_HOT_TABLES: dict[torch.device, torch.Tensor] = {}      # _ONE_HOT, once per device


def encode_tensor(codes: torch.Tensor, conservation: torch.Tensor | None = None) -> torch.Tensor:
    """The model input, on the tensors' device: one-hot of base codes (N, L) in A, C, G, T order
    (code 4, N and the rest, a zero column) times exp(conservation) -> (N, 4, L) float32. The
    result is a transposed view of (N, L, 4), the layout the model's tower reads fastest."""
    table = _ONE_HOT_TABLES.get(codes.device)
    if table is None:
        table = _ONE_HOT_TABLES[codes.device] = torch.as_tensor(_ONE_HOT, device=codes.device)
    x = table[codes.long()]
    if conservation is not None:
        x *= torch.exp(conservation.float())[..., None]
    return x.transpose(-1, -2)


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
        self._block: tuple[str, int, int, np.ndarray, np.ndarray | None] | None = None
        self._block_lock = threading.Lock()
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

    def conservation(self, chrom: str, start: int, end: int, dtype: np.dtype = np.float32) -> np.ndarray:
        """Per-base conservation of [start, end) (float32, or ``dtype``); NaN, no data and
        off-chromosome are 0.

        Without a conservation track, all zeros (so exp(conservation) is 1).
        """
        self.check_interval(chrom, start, end)
        out = np.zeros(end - start, dtype=dtype)
        if self._cons is None:
            return out
        if chrom not in self._cons_chroms:
            raise GenomeError(f"conservation bigWig {self.conservation_path} has no chromosome {chrom!r}")
        lo, hi = max(start, 0), min(end, self._cons_chroms[chrom])
        if lo < hi:
            values = np.asarray(self._cons.values(chrom, lo, hi, numpy=True), dtype=np.float32)
            out[lo - start: hi - start] = np.nan_to_num(values, nan=0.0, copy=False)
        return out

    def codes(self, chrom: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Base codes (uint8) and conservation (``CONSERVATION_DTYPE``; None without a track) of
        [start, end). The last span read is kept: a request inside it (a window's alternates,
        the windows of a block :meth:`coded_windows` read) is a slice of it."""
        self.check_interval(chrom, start, end)
        with self._block_lock:
            block = self._block
            if block is None or block[0] != chrom or start < block[1] or end > block[2]:
                cons = self.conservation(chrom, start, end, CONSERVATION_DTYPE) if self._cons is not None else None
                block = self._block = (chrom, start, end, sequence_codes(self.sequence(chrom, start, end)), cons)
        _, lo, _, codes, cons = block
        return codes[start - lo: end - lo], None if cons is None else cons[start - lo: end - lo]

    def coded_windows(self, intervals: Sequence[tuple[str, int]], length: int) -> CodedWindows:
        """The windows [start, start + length) of each (chrom, start), as they travel to the device
        (:class:`CodedWindows`). Windows that overlap or nearly abut (a precompute batch's tiles)
        are read from the files as one block of up to ``BLOCK_BP``, not one by one."""
        codes = np.empty((len(intervals), length), np.uint8)
        cons = np.empty((len(intervals), length), CONSERVATION_DTYPE) if self._cons is not None else None
        order = sorted(range(len(intervals)), key=lambda r: intervals[r])
        first = 0
        while first < len(order):
            chrom, lo = intervals[order[first]]
            last = first
            while (last + 1 < len(order) and intervals[order[last + 1]][0] == chrom
                   and intervals[order[last + 1]][1] <= intervals[order[last]][1] + 2 * length
                   and intervals[order[last + 1]][1] + length - lo <= max(BLOCK_BP, length)):
                last += 1
            block_codes, block_cons = self.codes(chrom, lo, intervals[order[last]][1] + length)
            for row in order[first: last + 1]:
                offset = intervals[row][1] - lo
                codes[row] = block_codes[offset: offset + length]
                if cons is not None:
                    cons[row] = block_cons[offset: offset + length]
            first = last + 1
        return CodedWindows(codes, cons)

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
