"""Score calibration: percentiles of variant scores against random SNVs scored by the same model.

``epiformer calibrate`` scores random single-base substitutions drawn uniformly from the A/C/G/T
positions of the genome and stores, per target and score, the sorted absolute values next to the
first checkpoint (``CHECKPOINT.calibration.npz``). A score's percentile is the share of background
|scores| at or below its |score|, so a value can be read without knowing the track's scale.
Percentiles are given only for the scoring window the calibration used (``score_bp``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .engine import Engine, PredictionCache
from .files import atomic_path, sha256_file
from .genome import Genome, sequence_codes
from .variants import SCORE_FIELDS, Variant
from .vcf import VariantRecord

CALIBRATED = ("sad", "log2fc", "max_diff", "d1", "d2")


class CalibrationError(ValueError):
    """A calibration file that cannot be used, naming it."""


@dataclass
class Calibration:
    """Sorted background |scores|: ``background[field]`` is (targets, n)."""

    targets: list[str]
    background: dict[str, np.ndarray]
    models: list[str]           # SHA-256 of the checkpoints
    score_bp: int

    @property
    def size(self) -> int:
        return self.background[CALIBRATED[0]].shape[1]

    def percentiles(self, scores: np.ndarray) -> np.ndarray:
        """Percentiles (0-100) of scores (..., targets, len(SCORE_FIELDS)) -> (..., targets, len(CALIBRATED))."""
        scores = np.asarray(scores)
        out = np.empty(scores.shape[:-1] + (len(CALIBRATED),), np.float32)
        for j, name in enumerate(CALIBRATED):
            values = np.abs(scores[..., SCORE_FIELDS.index(name)])
            for t in range(len(self.targets)):
                out[..., t, j] = 100.0 * np.searchsorted(self.background[name][t], values[..., t], side="right") / self.size
        return out

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, targets=np.array(self.targets), models=np.array(self.models), score_bp=self.score_bp,
                     **{f"background_{k}": v for k, v in self.background.items()})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        try:
            with np.load(path) as data:
                return cls(targets=[str(t) for t in data["targets"]], models=[str(m) for m in data["models"]],
                           score_bp=int(data["score_bp"]),
                           background={k: data[f"background_{k}"] for k in CALIBRATED})
        except (OSError, KeyError, ValueError) as err:
            raise CalibrationError(f"calibration file {path} cannot be read: {err}") from None


def calibration_path(sources: Sequence[str]) -> Path:
    """Where a model set's calibration lives: beside its first checkpoint."""
    return Path(f"{sources[0]}.calibration.npz")


def find_calibration(sources: Sequence[str], targets: list[str]) -> Calibration | None:
    """The calibration stored beside ``sources`` when it was made with these checkpoints and targets."""
    path = calibration_path(sources)
    if not path.is_file():
        return None
    calibration = Calibration.load(path)
    if calibration.targets != list(targets) or calibration.models != [sha256_file(s) for s in sources]:
        return None
    return calibration


def random_snvs(genome: Genome, count: int, seed: int = 0) -> list[VariantRecord]:
    """``count`` substitutions at uniformly drawn A/C/G/T positions, each to a random other base."""
    rng = np.random.default_rng(seed)
    names = list(genome.chrom_sizes)
    sizes = np.array([genome.chrom_sizes[c] for c in names], np.float64)
    out: list[VariantRecord] = []
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
        out.append(VariantRecord(len(out) + 1, f"background{len(out) + 1}", Variant(chrom, pos + 1, "ACGT"[code], alt)))
    return out


def calibrate(engine: Engine, genome: Genome, sources: Sequence[str], count: int = 2000, seed: int = 0,
              score_bp: int = 1024, progress: bool = True) -> Calibration:
    """Score ``count`` random SNVs and keep their sorted |scores| per target."""
    from tqdm import tqdm

    from .scoring import ScoreOptions, score_chunk

    options = ScoreOptions(score_bp=score_bp, progress=False)
    records = random_snvs(genome, count, seed)
    chunks = []
    for start in tqdm(range(0, len(records), 256), desc="calibrate", unit="chunk", disable=not progress):
        chunks.append(score_chunk(engine, genome, records[start: start + 256], options, PredictionCache(0),
                                  genome.conservation_path is not None)["scores"])
    scores = np.concatenate(chunks)
    background = {name: np.sort(np.abs(scores[:, :, SCORE_FIELDS.index(name)]).T, axis=1) for name in CALIBRATED}
    return Calibration(engine.target_names, background, [sha256_file(s) for s in sources], score_bp)
