"""How well variant scores find the demo's planted variants: AUROC of SAD for disrupting versus
neutral variants, and the sign of their effects per cell type."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from epiformer.io.reading import read_table


def read_variant_truth(vcf: str | os.PathLike) -> dict[str, dict]:
    """The truth the demo VCF carries, by variant ID: ``kind`` (INFO/TRUTH: disrupting or neutral)
    and ``effects``, the true change of the element's height in each cell type where it is open
    (INFO/CELLTYPES with INFO/EFFECT; a VCF without EFFECT gives None for each)."""
    truth = {}
    for line in Path(vcf).read_text().splitlines():
        if not line.startswith("#"):
            fields = line.split("\t")
            info = dict(item.split("=", 1) for item in fields[7].split(";"))
            cells = [c for c in info["CELLTYPES"].split(",") if c != "."]
            effects = [float(v) for v in info.get("EFFECT", ".").split(",") if v != "."] or [None] * len(cells)
            truth[fields[2]] = {"kind": info["TRUTH"], "effects": dict(zip(cells, effects))}
    return truth


def variant_auroc(scores_tsv: str | os.PathLike, vcf: str | os.PathLike) -> dict[str, float]:
    """How well |SAD| ranks the demo VCF's motif-disrupting variants above its neutral ones: per
    cell type of the scores (its ``<cell type>.sad`` column) that has both, the AUROC of the
    disrupting variants of elements open in it against all neutral variants (INFO/TRUTH and
    INFO/CELLTYPES hold the truth), and ``mean`` over those cell types."""
    truth = read_variant_truth(vcf)
    header, *rows = read_table(scores_tsv)[1]
    out = {}
    for column, name in enumerate(header):
        if not name.endswith(".sad"):
            continue
        cell = name.removesuffix(".sad")
        pos = np.array([abs(float(r[column])) for r in rows
                        if truth[r[0]]["kind"] == "disrupting" and cell in truth[r[0]]["effects"]])
        neg = np.array([abs(float(r[column])) for r in rows if truth[r[0]]["kind"] == "neutral"])
        if pos.size and neg.size:
            out[cell] = float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    out["mean"] = float(np.mean(list(out.values())))
    return out


SIGN_MIN_EFFECT = 0.05      # |true change| below this has no sign to get right


def variant_sign_metrics(scores_tsv: str | os.PathLike, vcf: str | os.PathLike) -> dict[str, float]:
    """Whether SAD says *where* a variant acts: over each motif-disrupting variant and each cell
    type its element is open in, ``sign_accuracy`` (the share of pairs with a true change of at
    least :data:`SIGN_MIN_EFFECT` whose SAD has the same sign), ``spearman`` (of SAD with the
    true change, INFO/EFFECT, over every pair), ``pairs``, and ``wrong_sign_size``: the median
    |SAD| of the wrong-sign pairs over that of the right-sign ones — near 0 when the model misses
    those sites (no response), near 1 when it answers them with the opposite sign."""
    from epiformer.training.metrics import spearman

    truth = read_variant_truth(vcf)
    header, *rows = read_table(scores_tsv)[1]
    sad, effect = [], []
    for r in rows:
        for cell, change in truth[r[0]]["effects"].items():
            if truth[r[0]]["kind"] == "disrupting" and change is not None:
                sad.append(float(r[header.index(f"{cell}.sad")]))
                effect.append(change)
    sad, effect = np.array(sad), np.array(effect)
    signed = np.abs(effect) >= SIGN_MIN_EFFECT
    right = np.sign(sad[signed]) == np.sign(effect[signed])
    size = np.abs(sad[signed])
    wrong_sign_size = (float(np.median(size[~right]) / np.median(size[right]))
                       if right.any() and not right.all() and np.median(size[right]) > 0 else float("nan"))
    return {"sign_accuracy": float(right.mean()) if right.size else float("nan"),
            "spearman": spearman(sad, effect), "pairs": int(sad.size), "wrong_sign_size": wrong_sign_size}
