"""Per-base attributions of a region's predictions: gradient × input contributions, and in
silico mutagenesis tracks (the mean, smallest and largest effect of each base's substitutions)."""
from __future__ import annotations

import numpy as np
import torch

from epiformer.genome.encoding import CodedWindows
from epiformer.variants.mutagenesis import saturation_mutagenesis
from epiformer.variants.scorer import VariantScorer

ISM_KINDS = ("ism_A", "ism_C", "ism_G", "ism_T", "ism_max")


def gradient_contributions(scorer: VariantScorer, regions: list[tuple[str, int, int]]) -> list[np.ndarray]:
    """Gradient x input of each target's signal over the output bins each region overlaps,
    averaged over the engine's shifts: per region (targets, end - start). Regions run a batch of
    windows at a time; the windows are independent inputs, so one backward pass of the batch's
    summed signal gives each window its own gradient."""
    engine = scorer.engine
    cfg = engine.config
    out = []
    for lo_region in range(0, len(regions), engine.batch_size):
        batch = regions[lo_region: lo_region + engine.batch_size]
        windows = [engine.window_for((start + end) // 2) for _, start, end in batch]
        coded = CodedWindows.concatenate([scorer.encode(chrom, w, []) for (chrom, _, _), w in zip(batch, windows)])
        inputs = engine.encode_coded(coded)                                       # (shifts, B, 4, seq_len)
        bins = [((start - w - engine.output_offset) // cfg.bin_size, -(-(end - w - engine.output_offset) // cfg.bin_size))
                for (_, start, end), w in zip(batch, windows)]
        totals = [np.zeros((len(engine.target_names), end - start), np.float64) for _, start, end in batch]
        for shift, x in zip(engine.shifts, inputs):
            x = x.float().clone().requires_grad_(True)             # a plain tensor, not an inference one
            with torch.enable_grad(), engine.autocast():
                predicted = engine.ensembled(x)
                signal = torch.stack([predicted[k, :, lo:hi].sum(dim=1) for k, (lo, hi) in enumerate(bins)])
            for t in range(signal.shape[1]):
                (grad,) = torch.autograd.grad(signal[:, t].sum(), x, retain_graph=t + 1 < signal.shape[1])
                per_base = (grad * x.detach()).sum(dim=1).cpu().numpy()             # (B, seq_len)
                for k, ((_, start, end), w) in enumerate(zip(batch, windows)):
                    first = start - w - shift
                    totals[k][t] += per_base[k, first: first + end - start]
        out += [(total / len(engine.shifts)).astype(np.float32) for total in totals]
    return out


def mutagenesis_tracks(scorer: VariantScorer, chrom: str, start: int, end: int) -> np.ndarray:
    """Each substitution's SAD and the contribution from them: (targets, 1 + len(ISM_KINDS), end - start),
    the contribution first (NaN where the reference is not A/C/G/T)."""
    effects = saturation_mutagenesis(scorer, chrom, start, end).effects           # (targets, positions, 4)
    contribution = -effects.sum(axis=2) / 3                                       # the reference's entry is 0
    largest = np.abs(effects).max(axis=2)
    return np.concatenate([contribution[:, None], effects.transpose(0, 2, 1), largest[:, None]], axis=1)
