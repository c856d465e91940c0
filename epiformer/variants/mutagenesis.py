"""``epiformer ism``: saturation mutagenesis of a region — every position to each other base.

The region's window is placed by the variant scorer's rule (the window of the region's centre
bin), and its reference and each substitution predicted together through
:func:`~epiformer.inference.incremental.predict_substitutions` (incremental by default: the reference's tower runs once and
only the tower columns a changed base reaches are recomputed), once per shift. The effect of a substitution on a target is its SAD
over the bins within ``score_bp`` of the position, scored by the same scorer as variants.
Substituted bases keep their position's conservation.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from epiformer.genome.encoding import sequence_codes
from epiformer.inference.incremental import predict_substitutions
from epiformer.io.writing import atomic_path, settings_lines
from epiformer.variants.alleles import Variant, VariantError
from epiformer.variants.effects import SCORE_FIELDS
from epiformer.variants.scorer import VariantScorer

MAX_ISM_BP = 5_000


@dataclass
class ISMResult:
    """``effects`` is (targets, positions, 4): SAD of each base at each position (0 at the reference
    base, NaN where the reference is not A/C/G/T); ``settings`` the record that made them."""

    chrom: str
    start: int
    end: int
    reference: str
    targets: list[str]
    effects: np.ndarray
    seconds: float
    settings: dict


def saturation_mutagenesis(scorer: VariantScorer, chrom: str, start: int, end: int,
                           incremental: bool = True) -> ISMResult:
    """Every substitution in [start, end) (0-based), scored against one reference prediction."""
    engine, genome = scorer.engine, scorer.genome
    genome.check_interval(chrom, start, end)
    if end > genome.chrom_sizes[chrom]:
        raise VariantError(f"{chrom}:{start + 1}-{end} runs past the end of {chrom} ({genome.chrom_sizes[chrom]:,} bp)")
    limit = min(MAX_ISM_BP, engine.output_span)
    if end - start > limit:
        raise VariantError(f"the region is {end - start:,} bp; ism takes at most {limit:,}")
    first = engine.window_for((start + end) // 2)
    reference = genome.sequence(chrom, start, end).upper()
    codes = sequence_codes(reference)
    started = time.perf_counter()
    where = [(offset, base) for offset, code in enumerate(codes) if code != 4 for base in range(4) if base != code]
    ref_prediction, predictions = 0.0, 0.0
    for shift, window in zip(engine.shifts, engine.encode_coded(scorer.encode(chrom, first, [])).cpu().numpy()[:, 0]):
        substitutions = []
        for offset, base in where:
            pos = start + offset - first - shift
            substitutions.append((pos, np.eye(4, dtype=np.float32)[base] * window[:, pos].sum()))
        reference_shifted, shifted = predict_substitutions(engine, window, substitutions, incremental=incremental)
        ref_prediction, predictions = ref_prediction + reference_shifted, predictions + shifted
    ref_prediction = ref_prediction / len(engine.shifts)
    effects = np.full((len(engine.target_names), end - start, 4), np.nan, np.float32)
    for offset, code in enumerate(codes):
        if code != 4:
            effects[:, offset, code] = 0.0
    sad = SCORE_FIELDS.index("sad")
    for (offset, base), alt in zip(where, predictions / len(engine.shifts)):
        substitution = Variant(chrom, start + offset + 1, reference[offset], "ACGT"[base])
        effects[:, offset, base] = scorer.score_predictions(ref_prediction, alt, substitution, first)[:, sad]
    return ISMResult(chrom, start, end, reference, engine.target_names, effects, time.perf_counter() - started,
                     scorer.record())


def write_ism(result: ISMResult, outprefix: str | os.PathLike) -> list[Path]:
    """OUTPREFIX.h5 (effects, reference), OUTPREFIX.tsv (one row per position and base) and a
    heatmap per target, OUTPREFIX.TARGET.png."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outprefix = Path(outprefix)
    h5, tsv = Path(f"{outprefix}.h5"), Path(f"{outprefix}.tsv")
    with atomic_path(h5) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("effects", data=result.effects)
        f.attrs.update(chrom=result.chrom, start=result.start, end=result.end, reference=result.reference,
                       targets=result.targets, bases="ACGT", score="sad",
                       settings=json.dumps(result.settings, sort_keys=True))
    with atomic_path(tsv) as tmp, open(tmp, "w") as out:
        out.write(settings_lines(result.settings))
        out.write("chrom\tpos\tref\talt\t" + "\t".join(result.targets) + "\n")
        for offset, ref in enumerate(result.reference):
            for base in range(4):
                if "ACGT"[base] != ref and ref in "ACGT":
                    values = "\t".join(f"{v:.6g}" for v in result.effects[:, offset, base])
                    out.write(f"{result.chrom}\t{result.start + offset + 1}\t{ref}\t{'ACGT'[base]}\t{values}\n")
    written = [h5, tsv]
    for t, name in enumerate(result.targets):
        path = Path(f"{outprefix}.{name}.png")
        values = result.effects[t].T
        limit = float(np.nanmax(np.abs(values))) or 1.0
        fig, ax = plt.subplots(figsize=(min(24, 4 + len(result.reference) / 25), 2.4))
        image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_yticks(range(4), list("ACGT"))
        ax.set_xlabel(f"{result.chrom}:{result.start + 1:,}-{result.end:,} (reference bases: white)")
        ax.set_title(f"{name}: predicted change (SAD) for each substitution")
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append(path)
    return written
