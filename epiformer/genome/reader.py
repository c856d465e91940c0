"""Genome files: FASTA (plain or bgzip, through pysam) and .2bit sequence, and the conservation
bigWig, read window by window."""
from __future__ import annotations

import contextlib
import os
import re
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

from epiformer.errors import UserError, print_warning
from epiformer.genome.chrom_names import ChromNames, name_examples
from epiformer.genome.encoding import (
    CONSERVATION_DTYPE,
    CodedWindows,
    encode,
    reverse_complement_encoded,
    sequence_codes,
)
from epiformer.io.writing import atomic_path

BLOCK_BP = 4_000_000                # the most bases of neighbouring windows read from the files at once


class GenomeError(UserError, ValueError):
    """A genome file or interval that cannot be used, with a message naming it."""


TWOBIT_SIGNATURE = 0x1A412743      # the first 4 bytes of a .2bit (either byte order)


T = TypeVar("T")


def _library_call(action: Callable[[], T], what: str) -> tuple[T, list[str]]:
    """``action()``, a call into htslib (through pysam) or py2bit, with what the C library writes
    to standard error captured instead of shown: its result and messages, or a
    :class:`GenomeError` ``what: message`` when it fails. Standard error is the process's, so
    this is for opening and indexing files, not for reads from several threads."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            result, failure = action(), None
        except Exception as err:      # pysam and py2bit raise OSError, ValueError, RuntimeError and their own
            result, failure = None, err
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        said = capture.read().decode(errors="replace")
    messages = [re.sub(r"^\[[^]]*\]\s*", "", line.strip()) for line in said.splitlines() if line.strip()]
    if failure is not None:
        raise GenomeError(f"{what}: {'; '.join(messages) or failure}")
    return result, messages


def sequence_file_kind(path: str | os.PathLike) -> str:
    """The kind of a genome file, by its first bytes: ``2bit``, ``bgzip``, ``gzip`` (plain gzip,
    which cannot be read at random) or ``text`` (a plain FASTA)."""
    with open(path, "rb") as handle:
        head = handle.read(18)
    if head[:4] in (struct.pack("<I", TWOBIT_SIGNATURE), struct.pack(">I", TWOBIT_SIGNATURE)):
        return "2bit"
    if head[:4] == b"\x1f\x8b\x08\x04" and head[12:14] == b"BC":
        return "bgzip"
    return "gzip" if head[:2] == b"\x1f\x8b" else "text"


def index_fasta(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """The ``.fai`` index of a FASTA and, for a bgzip-compressed one, its ``.gzi`` (None for a
    plain FASTA), built beside it when missing or older than the FASTA: under temporary names,
    each renamed once complete, so an interrupted build leaves no index. A FASTA htslib cannot
    index, or one that names a sequence twice, is a :class:`GenomeError`."""
    import pysam

    path = Path(path)
    fai = Path(f"{path}.fai")
    gzi = Path(f"{path}.gzi") if sequence_file_kind(path) == "bgzip" else None
    written = path.stat().st_mtime
    if all(index.is_file() and index.stat().st_mtime >= written for index in (fai, gzi) if index):
        return fai, gzi
    what = f"FASTA file {path} cannot be indexed"
    with atomic_path(fai) as tmp_fai, (atomic_path(gzi) if gzi else contextlib.nullcontext()) as tmp_gzi:
        flags = ["--fai-idx", str(tmp_fai)] + (["--gzi-idx", str(tmp_gzi)] if gzi else [])
        _, messages = _library_call(lambda: pysam.faidx(str(path), *flags), what)
        if messages:
            raise GenomeError(f"FASTA file {path} cannot be used as it is: {'; '.join(messages)}")
    return fai, gzi


@dataclass(frozen=True)
class _SequenceFile:
    """An open FASTA or .2bit: chromosome sizes in file order, the reader of [start, end) of a
    chromosome (bases as stored, case kept) and its close."""

    sizes: dict[str, int]
    fetch: Callable[[str, int, int], str]
    close: Callable[[], None]


def _open_sequences(path: Path, warn: Callable[[str], None]) -> _SequenceFile:
    """A FASTA, plain or bgzip-compressed (pysam; indexed first when it has no index), or a
    UCSC .2bit (py2bit; soft-masked bases lower case, N blocks N). What the library warns of
    goes to ``warn``; a plain-gzip FASTA is an error that says how to bgzip it."""
    kind = sequence_file_kind(path)
    if kind == "gzip":
        bgz = path.with_name(path.name.removesuffix(".gz") + ".bgz")
        raise GenomeError(f"FASTA file {path} is compressed with plain gzip, which cannot be read at random: "
                          f"recompress it with bgzip (gunzip -c {path} | bgzip > {bgz}) and give {bgz} "
                          f"(its .fai and .gzi are built on first use, or by samtools faidx {bgz})")
    if kind == "2bit":
        import py2bit

        handle, messages = _library_call(lambda: py2bit.open(str(path), True), f".2bit file {path} cannot be read")
        opened = _SequenceFile(handle.chroms(), handle.sequence, handle.close)
    else:
        import pysam

        fai, gzi = index_fasta(path)
        handle, messages = _library_call(
            lambda: pysam.FastaFile(str(path), filepath_index=str(fai), filepath_index_compressed=gzi and str(gzi)),
            f"FASTA file {path} cannot be read")
        opened = _SequenceFile(dict(zip(handle.references, handle.lengths)), handle.fetch, handle.close)
    for message in messages:
        warn(f"warning: {path}: {message}")
    return opened


class Genome:
    """A genome (a FASTA, plain or bgzip-compressed, indexed on first use, or a .2bit) with an
    optional conservation bigWig. The bigWig's chromosome names map onto the genome's
    (:func:`genome_chrom_name`); a chromosome it lacks has conservation 0, and ``warn`` says so
    once, when one is first read.

    >>> genome = Genome("genome.fa", "phastCons.bw")
    >>> x = genome.encode("chr1", 1_000_000, 1_098_304)   # (4, 98304) model input
    """

    def __init__(self, fasta: str | os.PathLike, conservation: str | os.PathLike | None = None,
                 warn: Callable[[str], None] = print_warning) -> None:
        self.fasta_path = Path(fasta)
        if not self.fasta_path.is_file():
            raise GenomeError(f"FASTA file {self.fasta_path}: no such file")
        self._warn = warn
        self._sequences = _open_sequences(self.fasta_path, warn)
        self.chrom_sizes: dict[str, int] = dict(self._sequences.sizes)
        if not self.chrom_sizes:
            raise GenomeError(f"FASTA file {self.fasta_path} holds no sequences")
        self.conservation_path = Path(conservation) if conservation else None
        self._block: tuple[str, int, int, np.ndarray, np.ndarray | None] | None = None
        self._block_lock = threading.Lock()
        self._read_lock = threading.Lock()       # pysam and py2bit handles are not for several threads at once
        self._cons = None
        self._cons_names: dict[str, str] = {}    # the genome's chromosome -> the bigWig's name for it
        self._cons_chroms: dict[str, int] = {}
        self._cons_warned = False
        if self.conservation_path is not None:
            self._cons = _open_bigwig(self.conservation_path)
            sizes = self._cons.chroms()
            self._cons_names = ChromNames(self.chrom_sizes, f"conservation bigWig {self.conservation_path}") \
                .in_file(sizes)
            self._cons_chroms = {chrom: sizes[name] for chrom, name in self._cons_names.items()}

    def close(self) -> None:
        self._sequences.close()
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
        """Chromosome sizes in the conservation bigWig, under the genome's names (empty without one)."""
        return dict(self._cons_chroms)

    def sequence(self, chrom: str, start: int, end: int) -> str:
        """Bases of [start, end), case kept, N-padded where the interval leaves the chromosome."""
        self.check_interval(chrom, start, end)
        size = self.chrom_sizes[chrom]
        lo, hi = max(start, 0), min(end, size)
        if lo < hi:
            with self._read_lock:
                inner = self._sequences.fetch(chrom, lo, hi)
        else:
            inner = ""
        left = min(max(-start, 0), end - start)
        return "N" * left + inner + "N" * (end - start - left - len(inner))

    def conservation(self, chrom: str, start: int, end: int, dtype: np.dtype = np.float32) -> np.ndarray:
        """Per-base conservation of [start, end) (float32, or ``dtype``); NaN, no data and
        off-chromosome are 0.

        Without a conservation track, all zeros (so exp(conservation) is 1); on a chromosome the
        track lacks too, with one warning.
        """
        self.check_interval(chrom, start, end)
        out = np.zeros(end - start, dtype=dtype)
        if self._cons is None:
            return out
        if chrom not in self._cons_names:
            self._note_without_conservation()
            return out
        lo, hi = max(start, 0), min(end, self._cons_chroms[chrom])
        if lo < hi:
            values = np.asarray(self._cons.values(self._cons_names[chrom], lo, hi, numpy=True), dtype=np.float32)
            out[lo - start: hi - start] = np.nan_to_num(values, nan=0.0, copy=False)
        return out

    def _note_without_conservation(self) -> None:
        """Warn, once, that the conservation bigWig lacks some of the genome's chromosomes."""
        if self._cons_warned:
            return
        self._cons_warned = True
        lacking = [chrom for chrom in self.chrom_sizes if chrom not in self._cons_names]
        self._warn(f"warning: conservation bigWig {self.conservation_path} has no data for {len(lacking):,} of the "
                   f"{len(self.chrom_sizes):,} chromosomes of {self.fasta_path.name} ({name_examples(lacking)}): "
                   "their conservation is 0 (a factor of 1, as without a track)")

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
