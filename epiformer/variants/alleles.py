"""Variants and sequence edits: parsing, the reference check and the mismatch rules, the genome's
chromosome names, and the coded windows of edited sequence."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from epiformer.errors import UserError
from epiformer.genome.chrom_names import ChromNames, genome_chrom_name
from epiformer.genome.encoding import CodedWindows, sequence_codes
from epiformer.genome.reader import Genome
from epiformer.inference.settings import ScoringSettings

BASES = re.compile(r"[ACGTNacgtn]+")


MAX_POSITION_DIGITS = 11


POSITION = re.compile(rf"[0-9]{{1,{MAX_POSITION_DIGITS}}}")      # ASCII digits only: int() takes others too


class VariantError(UserError, ValueError):
    """A variant or edit that cannot be scored, with the reason."""


@dataclass(frozen=True)
class Variant:
    """``pos`` is 1-based, as in VCF; ``ref`` and ``alt`` are the alleles (upper case)."""

    chrom: str
    pos: int
    ref: str
    alt: str

    @property
    def start(self) -> int:
        """0-based start of the reference allele."""
        return self.pos - 1

    @property
    def end(self) -> int:
        return self.start + len(self.ref)

    def __str__(self) -> str:
        return f"{self.chrom}:{self.pos}:{self.ref}:{self.alt}"

    def to_dict(self) -> dict:
        return {"chrom": self.chrom, "pos": self.pos, "ref": self.ref, "alt": self.alt}


def make_variant(chrom: object, pos: object, ref: object, alt: object,
                 max_indel: int = ScoringSettings.max_indel) -> Variant:
    """A checked :class:`Variant`: a positive integer position and A/C/G/T/N alleles (``-`` or
    an empty string for none, as some tools write indels)."""
    if not isinstance(chrom, str) or not chrom:
        raise VariantError("chrom must be a chromosome name")
    if isinstance(pos, bool) or not isinstance(pos, (int, str)) or not POSITION.fullmatch(str(pos)) or int(pos) < 1:
        shown = repr(pos) if len(str(pos)) <= 20 else f"{str(pos)[:20]!r}... ({len(str(pos))} characters)"
        raise VariantError(f"pos must be a positive integer (1-based) of at most {MAX_POSITION_DIGITS} digits, "
                           f"got {shown}")
    alleles = []
    for label, allele in (("ref", ref), ("alt", alt)):
        if not isinstance(allele, str):
            raise VariantError(f"{label} must be a string of bases")
        allele = "" if allele in ("-", ".") else allele
        if allele and not BASES.fullmatch(allele):
            raise VariantError(f"{label} {allele[:20]!r} holds letters other than A, C, G, T, N "
                               "(symbolic and structural alleles are not scored)")
        alleles.append(allele.upper())
    ref_allele, alt_allele = alleles
    if not ref_allele and not alt_allele:
        raise VariantError("ref and alt are both empty")
    if ref_allele == alt_allele:
        raise VariantError(f"ref and alt are the same ({ref_allele})")
    if max(len(ref_allele), len(alt_allele)) > max_indel + 1:
        raise VariantError(f"alleles longer than {max_indel + 1} bases are not scored")
    return Variant(chrom, int(pos), ref_allele, alt_allele)


def parse_variant(text: str, max_indel: int = ScoringSettings.max_indel) -> Variant:
    """``chr:pos:ref:alt``, or the same fields separated by whitespace (VCF columns CHROM POS REF
    ALT) or by ``-`` (``chr1-1000-A-G``); commas are allowed in the position."""
    text = text.strip()
    separator = ":" if ":" in text else (None if any(c.isspace() for c in text) else "-")
    fields = [f.strip() for f in text.split(separator)]
    if len(fields) != 4:
        raise VariantError(f"variant {text!r}: expected chrom:pos:ref:alt, e.g. chr1:1000:A:G")
    chrom, pos, ref, alt = fields
    return make_variant(chrom, pos.replace(",", ""), ref, alt, max_indel)


def check_reference(genome: Genome, variant: Variant) -> None:
    """Raise :class:`VariantError` when the chromosome or position is unknown or the genome's
    bases differ from ``ref``."""
    if variant.chrom not in genome.chrom_sizes:
        other = genome_chrom_name(variant.chrom, genome.chrom_sizes)
        hint = f" (the genome calls it {other!r})" if other else ""
        raise VariantError(f"chromosome {variant.chrom!r} is not in the genome{hint}")
    size = genome.chrom_sizes[variant.chrom]
    if variant.end > size or variant.start >= size:
        raise VariantError(f"position {variant.pos} is past the end of {variant.chrom} ({size:,} bp)")
    found = genome.sequence(variant.chrom, variant.start, variant.end).upper() if variant.ref else ""
    if found != variant.ref:
        raise VariantError(f"reference mismatch: the genome has {found or '(nothing)'} at {variant.chrom}:"
                           f"{variant.pos}, the variant says {variant.ref or '(nothing)'}")


def resolve_mismatch(genome: Genome, variant: Variant, rule: str) -> tuple[Variant, str]:
    """The variant to score and its flag (``ok``, ``swapped`` or ``ref_mismatch``), or
    :class:`VariantError` when it cannot be scored under the mismatch ``rule`` (skip, swap or
    score: :class:`~epiformer.inference.settings.ScoringSettings`)."""
    try:
        check_reference(genome, variant)
        return variant, "ok"
    except VariantError as err:
        if "reference mismatch" not in str(err) or rule == "skip":
            raise
        found = genome.sequence(variant.chrom, variant.start, variant.end).upper()
        if rule == "swap":
            swapped = Variant(variant.chrom, variant.pos, variant.alt, variant.ref)
            if len(variant.alt) == len(variant.ref) and found == variant.alt:
                return swapped, "swapped"
            raise VariantError(f"{err}; swapping does not help (the genome has neither allele)") from None
        if found == variant.alt:
            raise VariantError(f"{err}; the genome already has the alternate allele") from None
        return Variant(variant.chrom, variant.pos, found, variant.alt), "ref_mismatch"


def on_genome_names(variant: Variant, names: ChromNames) -> Variant:
    """``variant`` on the genome's name for its chromosome (a VCF's ``1`` is the FASTA's ``chr1``:
    :func:`~epiformer.genome.chrom_names.genome_chrom_name`), or :class:`VariantError` when the genome has no
    such chromosome (counted in ``names``)."""
    chrom = names(variant.chrom)
    if chrom is None:
        raise VariantError(f"chromosome {variant.chrom!r} is not in {names.where}")
    return variant if chrom == variant.chrom else replace(variant, chrom=chrom)


def apply_edits(genome: Genome, chrom: str, start: int, length: int,
                edits: list[Variant]) -> tuple[np.ndarray, np.ndarray | None]:
    """Base codes and conservation (:meth:`Genome.codes`: float16, None without a track) of the
    window [start, start + length) with ``edits`` applied (non-overlapping, any order); inserted
    bases get conservation 0."""
    edits = sorted(edits, key=lambda v: v.start)
    for a, b in zip(edits, edits[1:]):
        if b.start < a.end:
            raise VariantError(f"edits {a} and {b} overlap")
    grow = sum(max(0, len(v.ref) - len(v.alt)) for v in edits)
    span_end = start + length + grow
    codes, cons = genome.codes(chrom, start, span_end)
    pieces_codes, pieces_cons, cursor = [], [], start
    for v in edits:
        if v.start < start or v.end > span_end:
            raise VariantError(f"edit {v} is outside the window {chrom}:{start + 1}-{start + length}")
        pieces_codes += [codes[cursor - start: v.start - start], sequence_codes(v.alt)]
        if cons is not None:
            substituted = cons[v.start - start: v.start - start + min(len(v.ref), len(v.alt))]
            pieces_cons += [cons[cursor - start: v.start - start], substituted,
                            np.zeros(max(0, len(v.alt) - len(v.ref)), cons.dtype)]
        cursor = v.end
    pieces_codes.append(codes[cursor - start:])
    edited_codes = np.concatenate(pieces_codes)[:length]
    if cons is None:
        return edited_codes, None
    pieces_cons.append(cons[cursor - start:])
    return edited_codes, np.concatenate(pieces_cons)[:length]


def coded_edited(genome: Genome, chrom: str, start: int, length: int, edits: list[Variant]) -> CodedWindows:
    """The coded window [start, start + length) with edits applied, as it travels to the device."""
    return CodedWindows.of(*apply_edits(genome, chrom, start, length, edits))
