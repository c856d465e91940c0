"""The one variant scorer: ``score-variants``, ``calibrate``, ``ism`` and ``/api/variants`` all
score through :class:`VariantScorer`.

It places each variant in its window (:meth:`Engine.window_for`: on the bin grid, the variant in
the centre bin), shares one reference prediction among the variants of a window and keeps it in a
cache, encodes the alternate allele in the same window (shift ensembling included), computes the
scores (:func:`~epiformer.variants.score_variant`) and, against a calibration made with the same
settings, their percentiles. Callers may replace how windows are run (the server batches them
across requests and adds timeouts); nothing else about scoring is theirs.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from .engine import PredictionCache
from .inference import COMPARED_SETTINGS, Predictor, settings_mismatch
from .variants import Variant, encode_edited, score_variant

Window = tuple[str, int, list]          # (chrom, window start, edits)


class Background(Protocol):
    """What the scorer needs of a calibration (:class:`epiformer.calibration.Calibration`)."""

    settings: dict

    def percentiles(self, scores: np.ndarray) -> np.ndarray: ...


@dataclass
class VariantScore:
    """One variant's scores, its window and the predictions they come from."""

    variant: Variant
    window_start: int
    output_start: int
    scores: np.ndarray                   # (targets, len(SCORE_FIELDS))
    bins: slice                          # the output bins scored
    reference: np.ndarray                # (targets, output bins)
    alternate: np.ndarray                # (targets, output bins), on the reference's bins
    percentiles: np.ndarray | None       # (targets, len(CALIBRATED)), or None (see the scorer's reason)


class VariantScorer:
    """Scores variants with a :class:`~epiformer.inference.Predictor`'s engine and genome.

    ``run`` predicts a list of windows, (chrom, start, edits) -> (N, targets, bins); the default
    runs them on the engine in batches. ``calibration`` gives percentiles when its settings
    match (see :meth:`percentiles_missing`). Genome reads are serialised, so one scorer may be
    used from several threads.
    """

    def __init__(self, predictor: Predictor, score_bp: int = 1024, cache_windows: int = 256,
                 calibration: Background | None = None,
                 run: Callable[[list[Window]], Sequence[np.ndarray]] | None = None,
                 timeout: float | None = None) -> None:
        self.predictor = predictor
        self.engine, self.genome = predictor.engine, predictor.genome
        self.score_bp = score_bp
        self.cache = PredictionCache(cache_windows)
        self.calibration = calibration
        self.timeout = timeout
        self._run = run or self.predict_windows
        self.genome_lock = threading.Lock()

    @property
    def use_conservation(self) -> bool:
        return self.predictor.conservation is not None

    def record(self, score_bp: int | None = None) -> dict:
        """The settings record of these scores (the predictor's, with the scoring window)."""
        return {**self.predictor.record(), "score_bp": self.score_bp if score_bp is None else score_bp}

    def percentiles_missing(self, score_bp: int | None = None) -> str | None:
        """Why scores made with ``score_bp`` get no percentiles, or None when they do."""
        if self.calibration is None:
            return "the model set has no calibration (epiformer calibrate makes one)"
        if not self.calibration.settings:
            return "the calibration records no settings (an older version made it): rerun epiformer calibrate"
        reason = settings_mismatch(self.calibration.settings, self.record(score_bp),
                                   keys=("score_bp", *COMPARED_SETTINGS))
        return f"the calibration was made with other settings: {reason}" if reason else None

    def encode(self, chrom: str, start: int, edits: list[Variant]) -> np.ndarray:
        """Model inputs of one window with edits, once per shift: (shifts, 4, seq_len)."""
        seq_len = self.engine.config.seq_len
        with self.genome_lock:
            return np.stack([encode_edited(self.genome, chrom, start + shift, seq_len, edits, self.use_conservation)
                             for shift in self.engine.shifts])

    def predict_windows(self, windows: list[Window]) -> np.ndarray:
        """Predictions of windows (chrom, start, edits), encoded and run one batch at a time."""
        size = self.engine.batch_size
        outputs = [self.engine.predict_encoded(np.stack([self.encode(*w) for w in windows[lo: lo + size]], axis=1))
                   for lo in range(0, len(windows), size)]
        if not outputs:
            cfg = self.engine.config
            return np.zeros((0, len(self.engine.target_names), cfg.n_output_bins), np.float32)
        return np.concatenate(outputs)

    def references(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], np.ndarray]:
        """Reference predictions of windows (chrom, start): cached, shared with a caller computing
        them, or run here together."""
        return self.cache.fetch(keys, lambda missing: self._run([(c, s, []) for c, s in missing]), self.timeout)

    def windows_needed(self, variants: Sequence[Variant]) -> int:
        """Model windows that scoring ``variants`` runs at most: one per distinct reference window
        and per distinct variant, each once per shift."""
        distinct = set(variants)
        references = {(v.chrom, self.engine.window_for(v.start)) for v in distinct}
        return (len(references) + len(distinct)) * len(self.engine.shifts)

    def score(self, variants: Sequence[Variant], score_bp: int | None = None) -> list[VariantScore]:
        """Scores of reference-checked variants, in order; a variant given twice is computed once."""
        distinct = list(dict.fromkeys(variants))
        if len(distinct) < len(variants):
            scored = dict(zip(distinct, self.score(distinct, score_bp)))
            return [scored[v] for v in variants]
        score_bp = self.score_bp if score_bp is None else score_bp
        cfg = self.engine.config
        starts = [self.engine.window_for(v.start) for v in variants]
        references = self.references([(v.chrom, s) for v, s in zip(variants, starts)])
        alternates = self._run([(v.chrom, s, [v]) for v, s in zip(variants, starts)]) if variants else []
        with_percentiles = self.calibration is not None and self.percentiles_missing(score_bp) is None
        results = []
        for v, s, alt in zip(variants, starts, alternates):
            ref = references[(v.chrom, s)]
            output_start = s + self.engine.output_offset
            scores, alt, bins = score_variant(ref, alt, v, output_start, cfg.bin_size, score_bp)
            percentiles = self.calibration.percentiles(scores) if with_percentiles else None
            results.append(VariantScore(v, s, output_start, scores, bins, ref, alt, percentiles))
        return results

    def score_predictions(self, reference: np.ndarray, alternate: np.ndarray, variant: Variant, window_start: int,
                          score_bp: int | None = None) -> np.ndarray:
        """Scores of a variant from predictions made elsewhere (ism's incremental ones) in the
        window at ``window_start``."""
        output_start = window_start + self.engine.output_offset
        return score_variant(reference, alternate, variant, output_start, self.engine.config.bin_size,
                             self.score_bp if score_bp is None else score_bp)[0]

