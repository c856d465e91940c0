"""Score calibration: percentiles of variant scores against random SNVs scored by the same model.

``epiformer calibrate`` scores random single-base substitutions drawn uniformly from the A/C/G/T
positions of the genome and stores, per target and score, the sorted absolute values next to the
first checkpoint (``CHECKPOINT.calibration.npz``) with the settings record of the scores (model
checksums, conservation track, precision, reverse complement, shifts, scoring window). A score's
percentile is the share of background |scores| at or below its |score|; it is given only for
scores made with the same settings (:meth:`epiformer.scorer.VariantScorer.percentiles_missing`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import UserError
from .files import atomic_path
from .genome import Genome, sequence_codes
from .scorer import VariantScorer
from .variants import SCORE_FIELDS, Variant

CALIBRATED = ("sad", "log2fc", "max_diff", "d1", "d2")


class CalibrationError(UserError, ValueError):
    """A calibration file that cannot be used, naming it."""


@dataclass
class Calibration:
    """Sorted background |scores|: ``background[field]`` is (targets, n); ``settings`` is the
    record of the settings that made them (empty for files of older versions)."""

    targets: list[str]
    background: dict[str, np.ndarray]
    settings: dict

    @property
    def size(self) -> int:
        return self.background[CALIBRATED[0]].shape[1]

    def percentiles(self, scores: np.ndarray) -> np.ndarray:
        """Percentiles (0-100) of scores (..., targets, len(SCORE_FIELDS)) -> (..., targets, len(CALIBRATED)):
        the share of the background below each |score|, values equal to it counted half (ties
        are common where effects are at float rounding, and would otherwise move a score a step)."""
        scores = np.asarray(scores)
        out = np.empty(scores.shape[:-1] + (len(CALIBRATED),), np.float32)
        for j, name in enumerate(CALIBRATED):
            values = np.abs(scores[..., SCORE_FIELDS.index(name)])
            for t in range(len(self.targets)):
                background = self.background[name][t]
                below = np.searchsorted(background, values[..., t], side="left")
                up_to = np.searchsorted(background, values[..., t], side="right")
                out[..., t, j] = 50.0 * (below + up_to) / self.size
        return out

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, targets=np.array(self.targets), settings=json.dumps(self.settings),
                     **{f"background_{k}": v for k, v in self.background.items()})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        try:
            with np.load(path) as data:
                settings = json.loads(str(data["settings"])) if "settings" in data.files else {}
                return cls(targets=[str(t) for t in data["targets"]], settings=settings,
                           background={k: data[f"background_{k}"] for k in CALIBRATED})
        except (OSError, KeyError, ValueError) as err:
            raise CalibrationError(f"calibration file {path} cannot be read: {err}") from None


def calibration_path(sources: Sequence[str]) -> Path:
    """Where a model set's calibration lives: beside its first checkpoint."""
    return Path(f"{sources[0]}.calibration.npz")


def find_calibration(sources: Sequence[str]) -> Calibration | None:
    """The calibration stored beside a model set's first checkpoint, if there is one (whether
    its settings fit is the scorer's question)."""
    path = calibration_path(sources)
    return Calibration.load(path) if path.is_file() else None


def random_snvs(genome: Genome, count: int, seed: int = 0) -> list[Variant]:
    """``count`` substitutions at uniformly drawn A/C/G/T positions, each to a random other base."""
    rng = np.random.default_rng(seed)
    names = list(genome.chrom_sizes)
    sizes = np.array([genome.chrom_sizes[c] for c in names], np.float64)
    out: list[Variant] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > 100 * count:
            raise CalibrationError("the genome has too few A/C/G/T bases to draw background variants from")
        chrom = names[rng.choice(len(names), p=sizes / sizes.sum())]
        pos = int(rng.integers(0, genome.chrom_sizes[chrom]))
        code = int(sequence_codes(genome.sequence(chrom, pos, pos + 1))[0])
        if code == 4:
            continue
        alt = "ACGT"[(code + int(rng.integers(1, 4))) % 4]
        out.append(Variant(chrom, pos + 1, "ACGT"[code], alt))
    return out


def calibrate(scorer: VariantScorer, count: int = 2000, seed: int = 0, progress: bool = True) -> Calibration:
    """Score ``count`` random SNVs with ``scorer`` and keep their sorted |scores| per target, with
    the scorer's settings record."""
    from tqdm import tqdm

    variants = random_snvs(scorer.genome, count, seed)
    chunks = []
    for start in tqdm(range(0, len(variants), 256), desc="calibrate", unit="chunk", disable=not progress):
        chunks.append(np.stack([r.scores for r in scorer.score(variants[start: start + 256])]))
    scores = np.concatenate(chunks)
    background = {name: np.sort(np.abs(scores[:, :, SCORE_FIELDS.index(name)]).T, axis=1) for name in CALIBRATED}
    return Calibration(scorer.engine.target_names, background, scorer.record())
