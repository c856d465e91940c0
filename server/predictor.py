"""On-demand predictions for the API: variants, edited regions and raw sequences.

One :class:`Predictor` per worker process, made after the fork. Genome reads are serialised (the
FASTA and bigWig handles are not thread-safe); forward passes go through the
:class:`~server.batching.BatchPredictor`; reference windows are cached, so a variant query in a
window seen before runs only its alternate allele.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np

from epiformer.calibration import CALIBRATED, find_calibration
from epiformer.engine import Engine, PredictionCache
from epiformer.genome import Genome, encode_codes, sequence_codes
from epiformer.modelset import load_model_set
from epiformer.variants import (Variant, VariantError, check_reference, encode_edited, score_variant,
                                scores_by_target, window_start)

from .batching import BatchPredictor
from .config import ServerConfig


class PredictionTimeout(RuntimeError):
    """The model did not answer within the request timeout."""


class NonFiniteOutput(ValueError):
    """The model answered inf or NaN for a request's input."""


class Predictor:
    """Model set + genome + batcher + reference cache (with requests for a window being computed
    waiting for that computation instead of repeating it)."""

    def __init__(self, cfg: ServerConfig, manifest: dict) -> None:
        models = load_model_set(cfg.models, targets=cfg.targets or None)
        self.engine = Engine(models, device=cfg.device, batch_size=cfg.max_batch, bf16=True)
        fasta = cfg.fasta or manifest["genome"]["fasta"]
        conservation = cfg.conservation or manifest["genome"].get("conservation")
        self.uses_conservation = models.uses_conservation and bool(conservation)
        self.genome = Genome(Path(fasta), Path(conservation) if self.uses_conservation else None)
        self.batcher = BatchPredictor(self.engine, cfg.max_batch, cfg.max_delay_ms / 1000)
        self.cache = PredictionCache(cfg.cache_windows)
        self.timeout = cfg.request_timeout_s
        self.names = self.engine.target_names
        self.calibration = find_calibration(models.sources, self.names)
        config = self.engine.config
        self.seq_len, self.bin_size = config.seq_len, config.bin_size
        self.output_offset, self.n_bins = self.engine.output_offset, config.n_output_bins
        self.genome_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: dict[tuple[str, int], Future] = {}

    def close(self) -> None:
        self.batcher.close()
        self.genome.close()

    def _run(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        try:
            outputs = self.batcher.predict(windows, timeout=self.timeout)
        except FutureTimeout:
            raise PredictionTimeout(f"the model did not answer within {self.timeout:g} s") from None
        if not all(np.isfinite(output).all() for output in outputs):
            raise NonFiniteOutput("the model's output is not finite for this input (are the conservation values "
                               "in range?)")
        return outputs

    def _reference(self, chrom: str, starts: list[int]) -> dict[int, np.ndarray]:
        """Reference predictions of windows: from the cache, from a request already computing them,
        or computed here in one batch (and shared with requests that ask meanwhile)."""
        found: dict[int, np.ndarray | Future] = {}
        mine: list[int] = []
        with self._pending_lock:
            for s in dict.fromkeys(starts):
                value = self.cache.get((chrom, s))
                if value is None:
                    value = self._pending.get((chrom, s))
                if value is None:
                    value = self._pending[(chrom, s)] = Future()
                    mine.append(s)
                found[s] = value
        if mine:
            try:
                with self.genome_lock:
                    inputs = [self._encode(chrom, s, []) for s in mine]
                for s, value in zip(mine, self._run(inputs)):
                    self.cache.put((chrom, s), value)
                    found[s].set_result(value)
            except BaseException as err:
                for s in mine:
                    if not found[s].done():
                        found[s].set_exception(err)
                raise
            finally:
                with self._pending_lock:
                    for s in mine:
                        self._pending.pop((chrom, s), None)
        try:
            return {s: v.result(self.timeout) if isinstance(v, Future) else v for s, v in found.items()}
        except FutureTimeout:
            raise PredictionTimeout(f"the model did not answer within {self.timeout:g} s") from None

    def _encode(self, chrom: str, start: int, edits: list[Variant]) -> np.ndarray:
        return encode_edited(self.genome, chrom, start, self.seq_len, edits, self.uses_conservation)

    def check(self, variant: Variant) -> None:
        with self.genome_lock:
            check_reference(self.genome, variant)

    def score_variants(self, variants: list[Variant], score_bp: int, with_tracks: bool) -> list[dict]:
        """Scores (and optionally ref/alt/diff tracks) of reference-checked variants."""
        starts = [window_start(v.start, self.seq_len, self.bin_size) for v in variants]
        by_chrom: dict[str, list[int]] = {}
        for v, s in zip(variants, starts):
            by_chrom.setdefault(v.chrom, []).append(s)
        references = {(c, s): value for c, group in by_chrom.items() for s, value in self._reference(c, group).items()}
        with self.genome_lock:
            inputs = [self._encode(v.chrom, s, [v]) for v, s in zip(variants, starts)]
        alts = self._run(inputs)
        results = []
        for v, s, alt in zip(variants, starts, alts):
            ref = references[(v.chrom, s)]
            output_start = s + self.output_offset
            scores, alt, bins = score_variant(ref, alt, v, output_start, self.bin_size, score_bp)
            result = {"variant": v.to_dict(), "window": {"chrom": v.chrom, "start": output_start,
                                                         "end": output_start + self.n_bins * self.bin_size,
                                                         "bin_size": self.bin_size,
                                                         "score_bins": [bins.start, bins.stop]},
                      "scores": scores_by_target(scores, self.names, self.bin_size)}
            if self.calibration is not None and self.calibration.score_bp == score_bp:
                pct = self.calibration.percentiles(scores)
                for name, row in zip(self.names, pct):
                    result["scores"][name]["percentiles"] = {f: float(v) for f, v in zip(CALIBRATED, row)}
            if with_tracks:
                result["tracks"] = self._by_target({"ref": ref, "alt": alt, "diff": alt - ref})
            results.append(result)
        return results

    def predict_region(self, chrom: str, start: int, end: int, edits: list[Variant]) -> dict:
        """Reference and edited predictions of the window centred on [start, end)."""
        with self.genome_lock:
            for edit in edits:
                if edit.chrom != chrom or edit.start < start or edit.end > end:
                    raise VariantError(f"edit {edit} is outside the region {chrom}:{start + 1}-{end}")
                check_reference(self.genome, edit)
        span = self.n_bins * self.bin_size
        if end - start > span:
            raise VariantError(f"the region is {end - start:,} bp; at most {span:,} bp (one window's output) "
                               "can be predicted with edits")
        s = window_start((start + end) // 2, self.seq_len, self.bin_size)
        ref = self._reference(chrom, [s])[s]
        if edits:
            with self.genome_lock:
                encoded = self._encode(chrom, s, edits)
            edited = self._run([encoded])[0]
        else:
            edited = ref
        return self._tracks(chrom, s + self.output_offset, {"reference": ref, "edited": edited})

    def predict_sequence(self, sequence: str, conservation: list[float] | None) -> dict:
        """Predictions for a raw sequence, centred in one window and N-padded to seq_len."""
        if len(sequence) > self.seq_len:
            raise VariantError(f"the sequence is {len(sequence):,} bp; the model takes at most {self.seq_len:,}")
        if conservation is not None and len(conservation) != len(sequence):
            raise VariantError(f"conservation has {len(conservation)} values for {len(sequence)} bases")
        left = (self.seq_len - len(sequence)) // 2
        codes = np.full(self.seq_len, 4, np.uint8)
        codes[left: left + len(sequence)] = sequence_codes(sequence)
        cons = np.zeros(self.seq_len, np.float32)
        if conservation is not None and self.uses_conservation:
            cons[left: left + len(sequence)] = np.asarray(conservation, np.float32)
        prediction = self._run([encode_codes(codes, cons)])[0]
        return self._tracks(None, self.output_offset - left, {"sequence": prediction})

    def _tracks(self, chrom: str | None, output_start: int, predictions: dict[str, np.ndarray]) -> dict:
        return {"chrom": chrom, "start": output_start, "end": output_start + self.n_bins * self.bin_size,
                "bin_size": self.bin_size, "targets": self.names,
                "tracks": self._by_target(predictions)}

    def _by_target(self, predictions: dict[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
        """{kind: {target: values}} with values rounded to 5 decimals."""
        return {kind: {n: np.round(values[i].astype(np.float64), 5).tolist() for i, n in enumerate(self.names)}
                for kind, values in predictions.items()}
