"""Effect scores of a variant from its reference and alternate predictions: the bins scored, the
alternate moved onto the reference's bins, and Σref, Σalt, SAD, log2 fold change and the bin of
largest change per target."""
from __future__ import annotations

import numpy as np

from epiformer.variants.alleles import Variant, VariantError


def score_bins(output_start: int, bin_size: int, n_bins: int, variant: Variant, score_bp: int) -> slice:
    """Output bins overlapping [variant start − score_bp, variant end + score_bp), or with
    ``score_bp`` 0 every output bin (the SAD of Enformer and basenji)."""
    if score_bp < 0:
        raise VariantError(f"score_bp must be 0 (the whole output) or positive, got {score_bp}")
    if score_bp == 0:
        return slice(0, n_bins)
    lo = max(0, (variant.start - score_bp - output_start) // bin_size)
    hi = min(n_bins, -(-(variant.end + score_bp - output_start) // bin_size))
    if hi <= lo:
        raise VariantError(f"variant {variant} is outside the model's output window")
    return slice(lo, hi)


def to_reference_bins(alt: np.ndarray, output_start: int, bin_size: int, variant: Variant) -> np.ndarray:
    """An indel's alternate prediction (targets, bins) on the reference's bin grid.

    Left of the variant the alternate and reference windows agree base for base. Right of it the
    alternate sequence is shifted by len(alt) − len(ref) bp, so each reference bin there takes the
    alternate values at its shifted position, interpolated linearly between neighbouring bins.
    Substitutions are returned unchanged.
    """
    shift = len(variant.alt) - len(variant.ref)
    if shift == 0:
        return alt
    n_bins = alt.shape[-1]
    starts = output_start + bin_size * np.arange(n_bins)
    right = starts >= variant.end
    position = np.arange(n_bins) + shift / bin_size          # where each reference bin's data sits in alt
    lo = np.clip(np.floor(position).astype(int), 0, n_bins - 1)
    hi = np.clip(lo + 1, 0, n_bins - 1)
    weight = (position - np.floor(position)).astype(alt.dtype)
    shifted = alt[..., lo] * (1 - weight) + alt[..., hi] * weight
    return np.where(right, shifted, alt)


SCORE_FIELDS = ("ref_sum", "alt_sum", "sad", "log2fc", "max_diff", "max_diff_start", "d1", "d2")


# Scores whose sign turns when REF and ALT trade places (Σref and Σalt trade values).
SIGNED = ("sad", "log2fc", "max_diff")


def score_arrays(ref: np.ndarray, alt: np.ndarray, bins: slice, output_start: int, bin_size: int) -> np.ndarray:
    """(targets, len(SCORE_FIELDS)) scores from ref and alt predictions (targets, bins) over ``bins``:
    the one place scores are computed, for the CLI and the server alike."""
    r, a = ref[:, bins].astype(np.float64), alt[:, bins].astype(np.float64)
    diff = a - r
    top = np.argmax(np.abs(diff), axis=1)
    rows = np.arange(len(r))
    ref_sum, alt_sum = r.sum(axis=1), a.sum(axis=1)
    return np.stack([ref_sum, alt_sum, alt_sum - ref_sum, np.log2((alt_sum + 1) / (ref_sum + 1)), diff[rows, top],
                     output_start + (bins.start + top) * bin_size, np.abs(diff).sum(axis=1),
                     np.sqrt((diff ** 2).sum(axis=1))], axis=1)


def score_variant(ref: np.ndarray, alt: np.ndarray, variant: Variant, output_start: int, bin_size: int,
                  score_bp: int) -> tuple[np.ndarray, np.ndarray, slice]:
    """A variant's scores from its window's reference and alternate predictions (targets, bins):
    (scores (targets, len(SCORE_FIELDS)), the alternate prediction on the reference bins, the
    bins scored) — the one computation behind score-variants, calibrate and /api/variants."""
    alt = to_reference_bins(alt, output_start, bin_size, variant)
    bins = score_bins(output_start, bin_size, alt.shape[-1], variant, score_bp)
    return score_arrays(ref, alt, bins, output_start, bin_size), alt, bins


def scores_by_target(scores: np.ndarray, names: list[str], bin_size: int) -> dict[str, dict]:
    """:func:`score_arrays` output as a dict per target, ``max_diff_bin`` as [start, end]."""
    out = {}
    for name, row in zip(names, scores):
        values = {field: float(value) for field, value in zip(SCORE_FIELDS, row)}
        start = int(values.pop("max_diff_start"))
        out[name] = {**values, "max_diff_bin": [start, start + bin_size]}
    return out
