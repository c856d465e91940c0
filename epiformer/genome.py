"""Genome access: FASTA sequence, conservation bigWig, chromosome sizes, and the model's encoding.

Coordinates are 0-based, half-open. Intervals may reach past either end of a chromosome: the
missing bases are ``N`` and their conservation is 0, as in a window at a chromosome edge.

The genome is a FASTA, plain or bgzip-compressed (read through pysam; its ``.fai``, and a bgzip
file's ``.gzi``, are built beside it when missing), or a UCSC ``.2bit`` (read through py2bit).
Its chromosome names are the truth for every other file: :func:`genome_chrom_name` is the one
rule that maps another file's names onto them, and :class:`ChromNames` counts the names it skips.
"""
from __future__ import annotations

import contextlib
import os
import re
import struct
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Container, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from .errors import UserError, print_warning
from .files import atomic_path, open_text

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


MITOCHONDRION = ("chrM", "chrMT", "MT", "M")     # the mitochondrion's spellings, each the others' counterpart


def genome_chrom_name(name: str, genome_names: Container[str]) -> str | None:
    """The genome's name for the chromosome another file (a bigWig, a BED, a sizes file, a VCF)
    calls ``name``. The one rule for names that differ between files: the genome's (the FASTA's)
    names are the truth; ``name`` maps to the one that is the same, else the same with or without
    ``chr``, else, for the mitochondrion, any of chrM, chrMT, MT and M. None when the genome has
    none of these (chrUn_*, *_random or *_alt contigs that one file has): the caller skips the
    name and counts it (:class:`ChromNames`)."""
    toggled = name[3:] if name.startswith("chr") else f"chr{name}"
    spellings = (name, toggled, *(MITOCHONDRION if name in MITOCHONDRION else ()))
    return next((spelling for spelling in spellings if spelling in genome_names), None)


def name_examples(names: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` names, comma separated, with `` ...`` when there are more."""
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


class ChromNames:
    """One file's chromosome names mapped onto the genome's by :func:`genome_chrom_name`; the
    names that map to none are counted, each with how many of the file's records (intervals,
    variants) it cost, for :meth:`summary`. ``where`` names the chromosomes mapped onto."""

    def __init__(self, genome_names: Iterable[str], source: str, where: str = "the genome") -> None:
        self.genome_names = frozenset(genome_names)
        self.source, self.where = source, where
        self.skipped: Counter[str] = Counter()
        self._found: dict[str, str | None] = {}

    def __call__(self, name: str) -> str | None:
        """The genome's name for ``name``, or None (one more record skipped on ``name``)."""
        if name not in self._found:
            self._found[name] = genome_chrom_name(name, self.genome_names)
        found = self._found[name]
        if found is None:
            self.skipped[name] += 1
        return found

    def in_file(self, names: Iterable[str]) -> dict[str, str]:
        """Genome name -> the file's name, for a file that lists chromosome ``names`` (a bigWig, a
        sizes file); a genome name that two of them map to takes the one spelled alike."""
        mapped: dict[str, str] = {}
        for name in sorted(names, key=lambda n: n not in self.genome_names):
            found = self(name)
            if found is not None:
                mapped.setdefault(found, name)
        return mapped

    def intervals(self, intervals: Iterable[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """``intervals`` (a BED's) on the genome's names; those on a chromosome with none are
        skipped (and counted)."""
        return [(chrom, start, end) for name, start, end in intervals if (chrom := self(name)) is not None]

    def summary(self, what: str | None = None) -> str | None:
        """One line on the names skipped (None when none was): with ``what`` (the records'
        plural, ``intervals``) how many records each cost, most first; without, the names alone."""
        if not self.skipped:
            return None
        names = sorted(self.skipped, key=lambda n: -self.skipped[n])
        count = f"{sum(self.skipped.values()):,} {what} on " if what else ""
        shown = [f"{n} ({self.skipped[n]:,})" for n in names] if what else names
        return (f"warning: {self.source}: skipped {count}{len(names):,} chromosome(s) not in {self.where} "
                f"(names match with or without 'chr', and chrM = MT): {name_examples(shown)}")


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
    with open_text(path) as handle:
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


def genome_intervals(path: str | os.PathLike, genome_names: Iterable[str], what: str = "BED file",
                     warn: Callable[[str], None] = print_warning, where: str = "the genome",
                     records: str = "intervals") -> list[tuple[str, int, int]]:
    """A BED file's intervals on the genome's chromosome names (:func:`genome_chrom_name`); those
    on a chromosome the genome (``where``) lacks are skipped, and ``warn`` says how many
    ``records`` in one line."""
    names = ChromNames(genome_names, f"{what} {path}", where)
    intervals = names.intervals(read_bed_intervals(path, what))
    if (line := names.summary(records)) is not None:
        warn(line)
    return intervals


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
