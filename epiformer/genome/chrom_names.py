"""Chromosome names: the FASTA's names are the truth; another file's names are matched to them by
one rule (``chr`` toggled, the mitochondrion's spellings), and the rest are counted and skipped."""
from __future__ import annotations

from collections import Counter
from typing import Container, Iterable, Sequence

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
