"""Reading variants from VCF (plain, gzipped or bgzipped; a tabix index beside it is not needed)
or TSV, one record at a time, with line numbers.

Multi-allelic records are split into one variant per alternate allele. Lines that cannot be
read, symbolic and structural alleles (``<DEL>``, ``*``, breakends), a VCF's ALT ``.`` (no
alternate allele), over-long indels and duplicates are reported as skipped with their line and
reason; the rest are yielded in file order.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from epiformer.errors import UserError
from epiformer.inference.settings import ScoringSettings
from epiformer.io.reading import open_text
from epiformer.variants.alleles import Variant, VariantError, make_variant


class VcfError(UserError, ValueError):
    """An input file that cannot be read at all, naming it."""


@dataclass(frozen=True)
class VariantRecord:
    """One variant of the input: its line, ID (VCF ID or chrom:pos:ref:alt) and allele."""

    line: int
    id: str
    variant: Variant


@dataclass(frozen=True)
class Skipped:
    """An input line (or one allele of it) that is not scored, and why."""

    line: int
    text: str
    reason: str


def _symbolic_reason(allele: str) -> str | None:
    """Why an allele is not a sequence that can be scored: a symbolic allele (``<DEL>``, ``<CN0>``,
    ``<*>``), ``*`` (a deletion described on another line) or a breakend (``N[chr1:123[``,
    ``G]chr2:5]``, ``.G``, ``G.``); None for any other allele."""
    if allele.startswith("<"):
        return f"symbolic allele {allele} (a structural or copy-number variant), not scored"
    if allele == "*":
        return "symbolic allele * (a deletion described on another line), not scored"
    if "[" in allele or "]" in allele or (len(allele) > 1 and "." in (allele[0], allele[-1])):
        return f"breakend {allele} (a symbolic structural rearrangement), not scored"
    return None


def read_variants(path: str | os.PathLike,
                  max_indel: int = ScoringSettings.max_indel) -> Iterator[VariantRecord | Skipped]:
    """Variants of a VCF (``.vcf`` or ``.vcf.gz``) or a TSV (columns chrom, pos, ref, alt[, id];
    a header line is allowed), in file order, with :class:`Skipped` entries for what is not scored.

    Positions are 1-based. Within one position, a repeated (chrom, pos, ref, alt) is skipped as a
    duplicate of its first line, so memory stays bounded on any file size.
    """
    path = Path(path)
    if not path.is_file():
        raise VcfError(f"variant file {path}: no such file")
    if path.suffix.lower() in (".tbi", ".csi"):
        raise VcfError(f"variant file {path} is a tabix index: pass the file it indexes, {path.with_suffix('')}")
    is_vcf = ".vcf" in path.name.lower()
    seen_at: dict[tuple, int] = {}
    here: tuple[str, str] | None = None
    try:
        with open_text(path) as handle:
            for line_no, raw in enumerate(handle, 1):
                line = raw.rstrip("\r\n")
                if not line.strip() or line.startswith("#"):
                    continue
                fields = line.split("\t") if "\t" in line else line.split()
                if not is_vcf and line_no == 1 and fields[1:2] and not fields[1].replace(",", "").isdigit():
                    continue
                columns = (0, 1, 3, 4, 2) if is_vcf else (0, 1, 2, 3, 4)
                if len(fields) < (5 if is_vcf else 4):
                    yield Skipped(line_no, line[:80], f"expected {'CHROM POS ID REF ALT' if is_vcf else 'chrom pos ref alt'}"
                                  f" columns, found {len(fields)}")
                    continue
                chrom, pos, ref, alts = (fields[i] for i in columns[:4])
                ident = fields[columns[4]] if len(fields) > columns[4] and fields[columns[4]] not in ("", ".") else None
                if (chrom, pos) != here:
                    here, seen_at = (chrom, pos), {}
                alt_list = alts.split(",")
                for alt in alt_list:
                    text = f"{chrom}:{pos}:{ref}:{alt}"
                    reason = _symbolic_reason(alt) or _symbolic_reason(ref) or \
                        ("no alternate allele (ALT is '.'), not scored" if is_vcf and alt == "." else None)
                    if reason:
                        yield Skipped(line_no, text, reason)
                        continue
                    try:
                        variant = make_variant(chrom, pos, ref, alt, max_indel)
                    except VariantError as err:
                        yield Skipped(line_no, text, str(err))
                        continue
                    key = (variant.ref, variant.alt)
                    if key in seen_at:
                        yield Skipped(line_no, text, f"duplicate of line {seen_at[key]}")
                        continue
                    seen_at[key] = line_no
                    name = (f"{ident}:{alt}" if len(alt_list) > 1 else ident) if ident else str(variant)
                    yield VariantRecord(line_no, name, variant)
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as err:
        raise VcfError(f"variant file {path} cannot be read: {err}") from None
