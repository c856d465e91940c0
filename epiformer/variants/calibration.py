"""Score calibration: percentiles of variant scores against a background scored by the same model.

``epiformer calibrate`` scores a background of variants and stores, per target and score, the
sorted absolute and signed values next to the first checkpoint (``CHECKPOINT.calibration.npz``)
with the settings record of the scores (model checksums, conservation track, precision, reverse
complement, shifts, scoring window) and how the background was drawn. The background is either
random SNVs (:func:`background_snvs`: uniform over the positions whose whole model window lies
inside a chromosome and clear of N runs and of the blacklist) or the variants of a VCF the user
gives (common variants, say), read as a stream. A score's percentile is the share of background
|scores| at or below its |score|; its signed quantile, in [-1, 1], places the signed score in the
background's signed scores (-1 below all, 0 at their median, 1 above all). Both are given only
for scores made with the same settings (:meth:`epiformer.variants.scorer.VariantScorer.percentiles_missing`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from epiformer.errors import UserError
from epiformer.genome.chrom_names import ChromNames
from epiformer.genome.encoding import sequence_codes
from epiformer.genome.intervals import genome_intervals
from epiformer.genome.reader import Genome
from epiformer.io.reading import sha256_file
from epiformer.io.writing import atomic_path
from epiformer.variants.alleles import Variant, VariantError, check_reference, on_genome_names
from epiformer.variants.effects import SCORE_FIELDS, SIGNED
from epiformer.variants.scorer import VariantScorer

CALIBRATED = ("sad", "log2fc", "max_diff", "d1", "d2")
SCAN_BP = 4_000_000             # bases read at a time when looking for N runs


class CalibrationError(UserError, ValueError):
    """A calibration file that cannot be used, naming it."""


@dataclass
class Calibration:
    """Sorted background scores: ``background[field]`` holds the |scores| and ``signed[field]``
    the signed ones (``SIGNED`` fields; empty for files of older versions), each (targets, n);
    ``settings`` is the record of the settings that made them, with how the background was drawn
    (empty for files of older versions)."""

    targets: list[str]
    background: dict[str, np.ndarray]
    settings: dict
    signed: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.background[CALIBRATED[0]].shape[1]

    @staticmethod
    def _ranks(background: np.ndarray, values: np.ndarray) -> np.ndarray:
        """How many background values lie below each value, values equal to it counted half
        (ties are common where effects are at float rounding, and would otherwise move a score a step)."""
        return 0.5 * (np.searchsorted(background, values, side="left") + np.searchsorted(background, values, side="right"))

    def percentiles(self, scores: np.ndarray) -> np.ndarray:
        """Percentiles (0-100) of scores (..., targets, len(SCORE_FIELDS)) -> (..., targets, len(CALIBRATED)):
        the share of the background |scores| below each |score|."""
        scores = np.asarray(scores)
        out = np.empty(scores.shape[:-1] + (len(CALIBRATED),), np.float32)
        for j, name in enumerate(CALIBRATED):
            values = np.abs(scores[..., SCORE_FIELDS.index(name)])
            for t in range(len(self.targets)):
                out[..., t, j] = 100.0 * self._ranks(self.background[name][t], values[..., t]) / self.size
        return out

    def signed_quantiles(self, scores: np.ndarray) -> np.ndarray:
        """Signed quantiles in [-1, 1] of scores (..., targets, len(SCORE_FIELDS)) -> (..., targets,
        len(SIGNED)): 2 x (the share of the background's signed scores below each score) - 1."""
        scores = np.asarray(scores)
        out = np.empty(scores.shape[:-1] + (len(SIGNED),), np.float32)
        for j, name in enumerate(SIGNED):
            values = scores[..., SCORE_FIELDS.index(name)]
            for t in range(len(self.targets)):
                out[..., t, j] = 2.0 * self._ranks(self.signed[name][t], values[..., t]) / self.size - 1.0
        return out

    @classmethod
    def from_scores(cls, targets: list[str], scores: np.ndarray, settings: dict) -> "Calibration":
        """The calibration of background scores (n, targets, len(SCORE_FIELDS))."""
        def sorted_field(name: str, absolute: bool) -> np.ndarray:
            values = scores[:, :, SCORE_FIELDS.index(name)]
            return np.sort(np.abs(values) if absolute else values, axis=0).T.copy()

        return cls(targets, {name: sorted_field(name, True) for name in CALIBRATED}, settings,
                   {name: sorted_field(name, False) for name in SIGNED})

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, targets=np.array(self.targets), settings=json.dumps(self.settings),
                     **{f"background_{k}": v for k, v in self.background.items()},
                     **{f"signed_{k}": v for k, v in self.signed.items()})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        try:
            with np.load(path) as data:
                settings = json.loads(str(data["settings"])) if "settings" in data.files else {}
                return cls(targets=[str(t) for t in data["targets"]], settings=settings,
                           background={k: data[f"background_{k}"] for k in CALIBRATED},
                           signed={k: data[f"signed_{k}"] for k in SIGNED if f"signed_{k}" in data.files})
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


def _n_runs(genome: Genome, chrom: str) -> list[tuple[int, int]]:
    """The runs of bases other than A/C/G/T on a chromosome, read a block at a time."""
    runs: list[tuple[int, int]] = []
    size = genome.chrom_sizes[chrom]
    for lo in range(0, size, SCAN_BP):
        unknown = np.concatenate([[False], sequence_codes(genome.sequence(chrom, lo, min(size, lo + SCAN_BP))) == 4,
                                  [False]])
        edges = np.flatnonzero(np.diff(unknown.astype(np.int8)))
        for start, end in zip(lo + edges[0::2], lo + edges[1::2]):
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], int(end))
            else:
                runs.append((int(start), int(end)))
    return runs


def allowed_intervals(genome: Genome, seq_len: int, blacklist: str | os.PathLike | None = None
                      ) -> dict[str, list[tuple[int, int]]]:
    """Where background SNVs may be drawn: per chromosome of at least ``seq_len`` bp, the
    positions whose window of ``seq_len`` centred on them lies inside the chromosome and clear of
    N runs and of the blacklist's regions."""
    half = seq_len // 2
    forbidden: dict[str, list[tuple[int, int]]] = {c: [] for c in genome.chrom_sizes}
    if blacklist is not None:
        for chrom, start, end in genome_intervals(blacklist, genome.chrom_sizes, "blacklist"):
            forbidden[chrom].append((start, end))
    allowed: dict[str, list[tuple[int, int]]] = {}
    for chrom, size in genome.chrom_sizes.items():
        if size < seq_len:
            continue
        blocked = sorted([(s - half + 1, e + half) for s, e in forbidden[chrom] + _n_runs(genome, chrom)])
        spans, cursor = [], half
        for start, end in blocked + [(size - half + 1, size)]:
            if start > cursor:
                spans.append((cursor, start))
            cursor = max(cursor, end)
        if spans:
            allowed[chrom] = spans
    return allowed


def background_snvs(genome: Genome, count: int, seq_len: int, blacklist: str | os.PathLike | None = None,
                    seed: int = 0) -> tuple[list[Variant], dict]:
    """``count`` substitutions drawn uniformly over :func:`allowed_intervals`, each to a random
    other base, and the record of the rule that drew them."""
    allowed = allowed_intervals(genome, seq_len, blacklist)
    spans = [(chrom, start, end) for chrom, pieces in allowed.items() for start, end in pieces]
    if not spans:
        raise CalibrationError(f"no position of the genome has a whole window of {seq_len:,} bp inside its "
                               "chromosome and clear of N runs and of the blacklist: nothing to draw background "
                               "SNVs from")
    lengths = np.array([end - start for _, start, end in spans], np.int64)
    offsets = np.cumsum(lengths)
    rng = np.random.default_rng(seed)
    out: list[Variant] = []
    for draw in rng.integers(0, int(offsets[-1]), count):
        k = int(np.searchsorted(offsets, draw, side="right"))
        chrom, start, _ = spans[k]
        pos = start + int(draw - (offsets[k] - lengths[k]))
        code = int(sequence_codes(genome.sequence(chrom, pos, pos + 1))[0])
        out.append(Variant(chrom, pos + 1, "ACGT"[code], "ACGT"[(code + int(rng.integers(1, 4))) % 4]))
    rule = {"kind": "random SNVs",
            "rule": f"uniform over positions whose {seq_len:,} bp window lies inside a chromosome of at least "
                    "that length, clear of N runs and of the blacklist; each to a random other base",
            "count": count, "seed": seed, "chroms": len(allowed), "allowed_bp": int(offsets[-1]),
            "blacklist": None if blacklist is None else {"file": Path(blacklist).name,
                                                         "sha256": sha256_file(blacklist)}}
    return out, rule


def calibrate(scorer: VariantScorer, count: int = 2000, seed: int = 0, progress: bool = True,
              blacklist: str | os.PathLike | None = None) -> Calibration:
    """Score ``count`` background SNVs (:func:`background_snvs`) with ``scorer`` and keep their
    sorted scores per target, with the scorer's settings record and the sampling rule."""
    variants, rule = background_snvs(scorer.genome, count, scorer.engine.config.seq_len, blacklist, seed)
    return _calibration(scorer, iter(variants), rule, progress, total=len(variants))


def calibrate_on_variants(scorer: VariantScorer, path: str | os.PathLike, progress: bool = True,
                          log=print) -> Calibration:
    """Calibrate on the variants of a VCF or TSV (common variants, say), read as a stream, each on
    the genome's name for its chromosome (:func:`~epiformer.variants.alleles.on_genome_names`); lines
    that cannot be scored (reference mismatches, unknown contigs, symbolic alleles, indels over
    the scorer's ``max_indel``) are counted and the first ones named through ``log``."""
    from epiformer.variants.vcf import Skipped, read_variants

    skipped: list[str] = []
    names = ChromNames(scorer.genome.chrom_sizes, f"variant file {path}", scorer.genome.fasta_path.name)

    def scorable():
        for entry in read_variants(path, scorer.scoring.max_indel):
            if isinstance(entry, Skipped):
                skipped.append(f"line {entry.line}: {entry.reason}")
                continue
            try:
                variant = on_genome_names(entry.variant, names)
                check_reference(scorer.genome, variant)
            except VariantError as err:
                skipped.append(f"line {entry.line}: {err}")
                continue
            yield variant

    rule = {"kind": "variants of a file", "file": Path(path).name, "sha256": sha256_file(path)}
    calibration = _calibration(scorer, scorable(), rule, progress)
    calibration.settings["background"]["skipped"] = len(skipped)
    if skipped:
        log(f"note: {len(skipped):,} line(s) of {path} are not in the background: " + "; ".join(skipped[:3])
            + (" ..." if len(skipped) > 3 else ""))
    return calibration


def _calibration(scorer: VariantScorer, variants, rule: dict, progress: bool, total: int | None = None) -> Calibration:
    """Score a stream of variants 256 at a time and keep the sorted scores."""
    from itertools import islice

    from tqdm import tqdm

    chunks = []
    with tqdm(total=total, desc="calibrate", unit="variant", disable=not progress) as bar:
        while chunk := list(islice(variants, 256)):
            chunks.append(np.stack([r.scores for r in scorer.score(chunk)]))
            bar.update(len(chunk))
    if not chunks:
        raise CalibrationError("the background holds no variant that could be scored")
    rule["variants"] = int(sum(len(c) for c in chunks))
    return Calibration.from_scores(scorer.engine.target_names, np.concatenate(chunks),
                                   {**scorer.record(), "background": rule})
