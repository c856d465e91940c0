"""Regions and interval files: ``chr:start-end`` text, BED files (gzip, headers, CRLF) on the
genome's names, chromosome sizes files."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from epiformer.errors import print_warning
from epiformer.genome.chrom_names import ChromNames
from epiformer.genome.reader import GenomeError
from epiformer.io.reading import open_text

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
