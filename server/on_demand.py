"""On-demand predictions for the API: variants, edited regions and raw sequences.

One :class:`ServerPredictor` per worker process, made after the fork, from the config's model set
and inference settings through :func:`epiformer.inference.predictor.open_predictor`, as every command.
Variants are scored by the library's :class:`~epiformer.variants.scorer.VariantScorer` (placement,
shared and cached references, alleles, scores, percentiles) and regions use the engine's window
rule; the server adds only what serving needs: the scorer's runner is the
:class:`~epiformer.server.batching.BatchPredictor`, which gathers forward passes across requests
and clients and checks that outputs are finite. Every wait ends at the request's deadline
(:mod:`epiformer.inference.deadline`, set when the request is admitted).
"""
from __future__ import annotations

import numpy as np

from epiformer.genome.encoding import CodedWindows, sequence_codes
from epiformer.inference.predictor import open_predictor
from epiformer.server.batching import BatchPredictor
from epiformer.server.server_config import ServerConfig
from epiformer.variants.alleles import Variant, VariantError, check_reference, resolve_mismatch
from epiformer.variants.calibration import CALIBRATED, find_calibration
from epiformer.variants.effects import SCORE_FIELDS, SIGNED, scores_by_target
from epiformer.variants.scorer import VariantScorer


class ServerPredictor:
    """Model set + genome + scorer + batcher of one worker."""

    def __init__(self, cfg: ServerConfig, manifest: dict) -> None:
        fasta = cfg.fasta or manifest["genome"]["fasta"]
        self.predictor = open_predictor(cfg.model_set(), fasta, cfg.inference_for(manifest), log=lambda _: None)
        self.engine, self.genome = self.predictor.engine, self.predictor.genome
        self.batcher = BatchPredictor(self.engine, cfg.inference.batch_size, cfg.max_delay_ms / 1000)
        self.scorer = VariantScorer(self.predictor, cfg.scoring, cache_windows=cfg.cache_windows,
                                    calibration=find_calibration(self.predictor.models.sources),
                                    runner=self.batcher)
        self.cache = self.scorer.cache
        self.names = self.engine.target_names
        config = self.engine.config
        self.seq_len, self.bin_size = config.seq_len, config.bin_size
        self.output_offset, self.n_bins = self.engine.output_offset, config.n_output_bins
        self.genome_lock = self.scorer.genome_lock
        self.predictor.record()     # checksums taken at start-up, not in the first request

    def close(self) -> None:
        self.batcher.close()
        self.predictor.close()

    def settings(self, score_bp: int | None = None) -> dict:
        """The settings record of this worker's numbers (with the scoring window for scores)."""
        return self.scorer.record(score_bp) if score_bp is not None else self.predictor.record()

    def check(self, variant: Variant) -> None:
        with self.genome_lock:
            check_reference(self.genome, variant)

    def resolve(self, variant: Variant, on_mismatch: str) -> tuple[Variant, str]:
        """The variant to score and its flag under a mismatch rule, as score-variants resolves it
        (:func:`~epiformer.variants.alleles.resolve_mismatch`), or :class:`VariantError`."""
        with self.genome_lock:
            return resolve_mismatch(self.genome, variant, on_mismatch)

    def score_variants(self, variants: list[Variant], score_bp: int, with_tracks: bool) -> list[dict]:
        """Scores (and optionally ref/alt/diff tracks) of reference-checked variants."""
        scored = self.scorer.score(variants, score_bp)
        results = []
        for s in scored:
            result = {"variant": s.variant.to_dict(),
                      "window": {"chrom": s.variant.chrom, "start": s.output_start,
                                 "end": s.output_start + self.n_bins * self.bin_size, "bin_size": self.bin_size,
                                 "score_bins": [s.bins.start, s.bins.stop]},
                      "scores": scores_by_target(s.scores, self.names, self.bin_size)}
            if s.percentiles is not None:
                for name, row, signed in zip(self.names, s.percentiles, s.signed_quantiles):
                    result["scores"][name]["percentiles"] = {f: float(v) for f, v in zip(CALIBRATED, row)}
                    result["scores"][name]["signed_quantiles"] = {f: float(v) for f, v in zip(SIGNED, signed)}
            if with_tracks:
                result["tracks"] = self._by_target({"ref": s.reference, "alt": s.alternate,
                                                    "diff": s.alternate - s.reference})
            results.append(result)
        return results

    def mutagenesis(self, chrom: str, start: int, end: int, score_bp: int, targets: list[str]) -> dict:
        """Every substitution of [start, end) scored in the region's window, as ``epiformer ism``
        places it, through the scorer (incremental alternates, batched with other requests):
        per target and position the SAD of A, C, G and T (0 at the reference, None at an N)."""
        window = self.engine.window_for((start + end) // 2)
        with self.genome_lock:
            reference = self.genome.sequence(chrom, start, end).upper()
        substitutions = [Variant(chrom, start + offset + 1, base, alt) for offset, base in enumerate(reference)
                         if base in "ACGT" for alt in "ACGT" if alt != base]
        scored = {(s.variant.pos, s.variant.alt): s.scores for s in self.scorer.score(substitutions, score_bp, window)}
        sad = SCORE_FIELDS.index("sad")
        rows = [self.names.index(t) for t in targets]
        effects = {t: [[None if base not in "ACGT" else 0.0 if alt == base else
                        float(scored[start + offset + 1, alt][row, sad]) for alt in "ACGT"]
                       for offset, base in enumerate(reference)] for t, row in zip(targets, rows)}
        return {"region": {"chrom": chrom, "start": start + 1, "end": end}, "reference": reference,
                "targets": targets, "score_bp": score_bp, "bases": list("ACGT"),
                "window": {"chrom": chrom, "start": window + self.engine.output_offset,
                           "end": window + self.engine.output_offset + self.n_bins * self.bin_size},
                "effects": effects, "substitutions": len(substitutions), "settings": self.settings(score_bp)}

    def predict_region(self, chrom: str, start: int, end: int, edits: list[Variant]) -> dict:
        """Reference and edited predictions of the region's window (the engine's window rule)."""
        with self.genome_lock:
            for edit in edits:
                if edit.chrom != chrom or edit.start < start or edit.end > end:
                    raise VariantError(f"edit {edit} is outside the region {chrom}:{start + 1}-{end}")
                check_reference(self.genome, edit)
        windows = self.engine.region_windows(start, end)
        if len(windows) > 1:
            raise VariantError(f"the region is {end - start:,} bp and does not fit in one window's output on the "
                               f"{self.bin_size} bp grid; at most {(self.n_bins - 1) * self.bin_size + 1:,} bp "
                               f"always does")
        s = windows[0]
        ref = self.scorer.references([(chrom, s)])[(chrom, s)]
        edited = self.scorer.predict_windows([(chrom, s, edits)])[0] if edits else ref
        return self._tracks(chrom, s + self.output_offset, {"reference": ref, "edited": edited})

    def predict_sequence(self, sequence: str, conservation: list[float] | None) -> dict:
        """Predictions for a raw sequence, centred in one window and N-padded to seq_len."""
        if len(sequence) > self.seq_len:
            raise VariantError(f"the sequence is {len(sequence):,} bp; the model takes at most {self.seq_len:,}")
        if conservation is not None and len(conservation) != len(sequence):
            raise VariantError(f"conservation has {len(conservation)} values for {len(sequence)} bases")
        codes = sequence_codes(sequence)
        values = np.asarray(conservation if conservation is not None else np.zeros(len(sequence)), np.float32)
        use_conservation = conservation is not None and self.predictor.models.uses_conservation
        left = (self.seq_len - len(sequence)) // 2
        # The coded window spans every shifted window; a shift moves the window, not the sequence.
        lo = left - self.engine.coded_start(0)
        a, b = max(lo, 0), min(lo + len(sequence), self.engine.coded_length)
        window_codes = np.full(self.engine.coded_length, 4, np.uint8)
        window_cons = np.zeros(self.engine.coded_length, np.float32)
        window_codes[a:b], window_cons[a:b] = codes[a - lo: b - lo], values[a - lo: b - lo]
        encoded = CodedWindows.of(window_codes, window_cons if use_conservation else None)
        prediction = self.batcher.predict(encoded)[0]
        return self._tracks(None, self.output_offset - left, {"sequence": prediction})

    def _tracks(self, chrom: str | None, output_start: int, predictions: dict[str, np.ndarray]) -> dict:
        return {"chrom": chrom, "start": output_start, "end": output_start + self.n_bins * self.bin_size,
                "bin_size": self.bin_size, "targets": self.names,
                "tracks": self._by_target(predictions), "settings": self.settings()}

    def _by_target(self, predictions: dict[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
        """{kind: {target: values}} with values rounded to 5 decimals."""
        return {kind: {n: np.round(values[i].astype(np.float64), 5).tolist() for i, n in enumerate(self.names)}
                for kind, values in predictions.items()}
