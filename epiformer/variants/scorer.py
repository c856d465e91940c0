"""The one variant scorer: ``score-variants``, ``calibrate``, ``ism`` and ``/api/variants`` all
score through :class:`VariantScorer`.

It places each variant in its window (:meth:`Engine.variant_window`: on the bin grid, within
``share_bins`` bins of the centre, so that nearby variants share one window), shares one
reference prediction among the variants of a window, encodes the alternate allele in the same
window (shift ensembling included), computes the scores (:func:`~epiformer.variants.effects.score_variant`)
and, against a calibration made with the same settings, their percentiles. The coded windows go
to a runner (:class:`~epiformer.inference.runners.WindowRunner`): by default the engine in this thread, in
the server a batcher shared by concurrent requests. A window's reference and its alternates run
together (:func:`~epiformer.inference.incremental.predict_alternates`): the convolutional tower runs once on the reference,
and an SNV or MNV reruns it only near its bases.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from epiformer.genome.encoding import CodedWindows
from epiformer.inference.incremental import ReferenceState
from epiformer.inference.prediction_cache import PredictionCache
from epiformer.inference.predictor import Predictor
from epiformer.inference.runners import Alternates, CodedGroup, LocalRunner, WindowRunner
from epiformer.inference.settings import COMPARED_SETTINGS, InferenceError, ScoringSettings, settings_mismatch
from epiformer.variants.alleles import Variant, coded_edited
from epiformer.variants.effects import score_variant

Window = tuple[str, int, list]          # (chrom, window start, edits)
REFERENCE_STATE = "reference state"     # cache keys (chrom, start, REFERENCE_STATE): a window's ReferenceState
Group = tuple[str, int, list, "ReferenceState | None"]   # (chrom, window start, variants scored in it, each
                                                        # alone, the reference's state when already made)


class Background(Protocol):
    """What the scorer needs of a calibration (:class:`epiformer.variants.calibration.Calibration`)."""

    settings: dict
    signed: dict

    def percentiles(self, scores: np.ndarray) -> np.ndarray: ...

    def signed_quantiles(self, scores: np.ndarray) -> np.ndarray: ...


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
    signed_quantiles: np.ndarray | None = None   # (targets, len(SIGNED)) in [-1, 1], given with the percentiles


class VariantScorer:
    """Scores variants with a :class:`~epiformer.inference.predictor.Predictor`'s engine and genome, as
    ``scoring`` says (:class:`~epiformer.inference.settings.ScoringSettings`: the scoring window, the
    placement rule, and for callers reading variants the largest indel and the mismatch rule).

    ``runner`` runs the coded windows (:class:`~epiformer.inference.runners.WindowRunner`; by default a
    :class:`~epiformer.inference.runners.LocalRunner` on the predictor's engine); waiting for a window
    another thread is predicting ends at the request's deadline (:mod:`epiformer.inference.deadline`).
    ``cache_windows`` reference states are kept (each holds its window's tower outputs;
    position-sorted input meets a window again only at the next chunk, so a few suffice).
    ``scoring.share_bins`` (K) is how far from its window's centre a variant may be
    (:meth:`Engine.variant_window`; None: :meth:`Engine.default_share_bins`, 0 centres every
    variant). ``incremental`` False scores every
    alternate as a whole window (the slow path, for comparison). ``calibration`` gives
    percentiles when its settings match (see :meth:`percentiles_missing`). Genome reads are
    serialised, so one scorer may be used from several threads.
    """

    def __init__(self, predictor: Predictor, scoring: ScoringSettings = ScoringSettings(), cache_windows: int = 16,
                 calibration: Background | None = None,
                 runner: WindowRunner | None = None, incremental: bool = True) -> None:
        self.predictor = predictor
        self.engine, self.genome = predictor.engine, predictor.genome
        self.scoring = scoring
        self.share_bins = self.engine.default_share_bins() if scoring.share_bins is None else scoring.share_bins
        limit = self.engine.config.n_output_bins // 4
        if not 0 <= self.share_bins <= limit:
            raise InferenceError(f"--share-bins must be from 0 to {limit} for this model (a quarter of its "
                                 f"{self.engine.config.n_output_bins} output bins), got {self.share_bins}")
        self.cache = PredictionCache(cache_windows)
        self.calibration = calibration
        self.runner = runner or LocalRunner(self.engine)
        self.incremental = incremental
        self.genome_lock = threading.Lock()

    def record(self, score_bp: int | None = None) -> dict:
        """The settings record of these scores (the predictor's, with the scoring window and the
        placement rule)."""
        return {**self.predictor.record(), "score_bp": self.scoring.score_bp if score_bp is None else score_bp,
                "share_bins": self.share_bins}

    def percentiles_missing(self, score_bp: int | None = None) -> str | None:
        """Why scores made with ``score_bp`` get no percentiles, or None when they do."""
        if self.calibration is None:
            return "the model set has no calibration (epiformer calibrate makes one)"
        if not self.calibration.settings or not self.calibration.signed:
            return ("the calibration records no settings or no signed scores (an older version made it): rerun "
                    "epiformer calibrate")
        reason = settings_mismatch(self.calibration.settings, self.record(score_bp),
                                   keys=("score_bp", "share_bins", *COMPARED_SETTINGS))
        return f"the calibration was made with other settings: {reason}" if reason else None

    def window_for(self, variant: Variant) -> int:
        """Start of the window ``variant`` is scored in."""
        return self.engine.variant_window(variant.start, self.share_bins)

    def encode(self, chrom: str, start: int, edits: list[Variant]) -> CodedWindows:
        """The coded window (every shift a slice of it) of the model window at ``start`` with edits."""
        with self.genome_lock:
            return coded_edited(self.genome, chrom, self.engine.coded_start(start), self.engine.coded_length, edits)

    def predict_windows(self, windows: list[Window]) -> list[np.ndarray]:
        """Predictions of windows (chrom, start, edits), coded and handed to the runner as many at
        a time as it takes."""
        size = self.runner.max_windows or max(len(windows), 1)
        return [prediction for lo in range(0, len(windows), size)
                for prediction in self.runner.predict(CodedWindows.concatenate(
                    [self.encode(*w) for w in windows[lo: lo + size]]))]

    def coded_group(self, chrom: str, start: int, variants: Sequence[Variant],
                    state: ReferenceState | None = None) -> CodedGroup:
        """A window's reference and its variants' alternates, each alone, coded."""
        return CodedGroup((chrom, start), self.encode(chrom, start, []),
                          CodedWindows.concatenate([self.encode(chrom, start, [v]) for v in variants]), state)

    def predict_groups(self, groups: list[Group]) -> list[Alternates]:
        """Reference states and alternate predictions of groups (chrom, start, variants, state),
        coded and handed to the runner as many windows at a time as it takes (a group with more
        alternates goes alone)."""
        limit = self.runner.max_windows
        results: list[Alternates] = []
        lo = 0
        while lo < len(groups):
            hi, windows = lo + 1, 1 + len(groups[lo][2])
            while hi < len(groups) and (limit is None or windows + 1 + len(groups[hi][2]) <= limit):
                windows += 1 + len(groups[hi][2])
                hi += 1
            results += self.runner.predict_groups([self.coded_group(*group) for group in groups[lo:hi]])
            lo = hi
        return results

    def references(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], np.ndarray]:
        """Reference predictions of windows (chrom, start): cached, shared with a caller computing
        them, or run here together."""
        with self.cache.claim(keys) as claim:
            if claim.mine:
                claim.fill(self.predict_windows([(c, s, []) for c, s in claim.mine]))
        return claim.wait()

    def windows_needed(self, variants: Sequence[Variant]) -> int:
        """Model windows that scoring ``variants`` runs at most: one per distinct reference window
        and per distinct variant, each once per shift."""
        distinct = set(variants)
        references = {(v.chrom, self.window_for(v)) for v in distinct}
        return (len(references) + len(distinct)) * len(self.engine.shifts)

    def score(self, variants: Sequence[Variant], score_bp: int | None = None,
              window_start: int | None = None) -> list[VariantScore]:
        """Scores of reference-checked variants, in order; a variant given twice is computed once.
        Each variant is scored in its own window (:meth:`window_for`), or all of them in the one
        at ``window_start`` (as saturation mutagenesis of a region places them)."""
        distinct = list(dict.fromkeys(variants))
        if len(distinct) < len(variants):
            scored = dict(zip(distinct, self.score(distinct, score_bp, window_start)))
            return [scored[v] for v in variants]
        score_bp = self.scoring.score_bp if score_bp is None else score_bp
        cfg = self.engine.config
        starts = [self.window_for(v) if window_start is None else window_start for v in variants]
        if self.incremental:
            references, alternates = self._alternates(variants, starts)
        else:
            references = self.references([(v.chrom, s) for v, s in zip(variants, starts)])
            alternates = self.predict_windows([(v.chrom, s, [v]) for v, s in zip(variants, starts)])
        with_percentiles = self.calibration is not None and self.percentiles_missing(score_bp) is None
        results = []
        for v, s, alt in zip(variants, starts, alternates):
            ref = references[(v.chrom, s)]
            output_start = s + self.engine.output_offset
            scores, alt, bins = score_variant(ref, alt, v, output_start, cfg.bin_size, score_bp)
            percentiles, signed = (self.calibration.percentiles(scores), self.calibration.signed_quantiles(scores)) \
                if with_percentiles else (None, None)
            results.append(VariantScore(v, s, output_start, scores, bins, ref, alt, percentiles, signed))
        return results

    def _alternates(self, variants: Sequence[Variant], starts: Sequence[int]) -> tuple[dict, list[np.ndarray]]:
        """References by window, and each variant's alternate. Each variant's alternate and each
        window's reference state (its prediction and tower outputs) are cached, or waited for
        while another caller makes them: a variant asked again (the page asks a variant's tracks
        one target at a time) runs nothing, and a window met again runs only its new alternates."""
        states: dict[tuple[str, int], ReferenceState] = {}
        made: dict[tuple, np.ndarray] = {}          # alternates made along the way, by (chrom, start, variant)

        def run(groups: list[Group]) -> list[ReferenceState]:
            results = self.predict_groups(groups)
            for (chrom, start, group_variants, _), (state, alts) in zip(groups, results):
                states[chrom, start] = state
                made.update({(chrom, start, v): alt for v, alt in zip(group_variants, alts)})
            return [state for state, _ in results]

        def window_states(wanted: dict[tuple[str, int], list[Variant]], alternates: bool = True) -> None:
            """The reference states of the windows of ``wanted`` into ``states``: a cached one
            runs the variants ``wanted`` with it when ``alternates`` are asked for; any other
            runs with them, and is kept. A state another caller is making is not waited for:
            the batcher runs a window's groups that meet in one batch with one reference."""
            found = self.cache.peek([(chrom, start, REFERENCE_STATE) for chrom, start in wanted])
            known = [(c, s, vs, found[c, s, REFERENCE_STATE]) for (c, s), vs in wanted.items()
                     if (c, s, REFERENCE_STATE) in found]
            states.update({(c, s): state for c, s, _, state in known})
            missing = [(c, s, vs, None) for (c, s), vs in wanted.items() if (c, s, REFERENCE_STATE) not in found]
            for (chrom, start, _, _), state in zip(missing, run(missing) if missing else []):
                self.cache.put((chrom, start, REFERENCE_STATE), state)
            if alternates and known:
                run(known)

        def alternates_of(missing: list[tuple]) -> list[np.ndarray]:
            wanted: dict[tuple[str, int], list[Variant]] = {}
            for chrom, start, variant in missing:
                wanted.setdefault((chrom, start), []).append(variant)
            window_states(wanted)
            return [made[key] for key in missing]

        keys = [(v.chrom, s, v) for v, s in zip(variants, starts)]
        with self.cache.claim(keys) as claim:
            if claim.mine:
                claim.fill(alternates_of(claim.mine))
        found = claim.wait()
        unknown: dict[tuple[str, int], list[Variant]] = {}
        for chrom, start, variant in keys:           # alternates all cached: their windows' states
            if (chrom, start) not in states:
                unknown.setdefault((chrom, start), []).append(variant)
        window_states(unknown, alternates=False)
        return {w: state.prediction for w, state in states.items()}, [found[key] for key in keys]

    def score_predictions(self, reference: np.ndarray, alternate: np.ndarray, variant: Variant, window_start: int,
                          score_bp: int | None = None) -> np.ndarray:
        """Scores of a variant from predictions made elsewhere (ism's incremental ones) in the
        window at ``window_start``."""
        output_start = window_start + self.engine.output_offset
        return score_variant(reference, alternate, variant, output_start, self.engine.config.bin_size,
                             self.scoring.score_bp if score_bp is None else score_bp)[0]

