"""Interpretation tracks: bases of contribution track per second, gradient x input and mutagenesis.

    python bench/bench_interpret.py                      # print the table
    python bench/bench_interpret.py --write BENCHMARKS.md

On a 2 Mb demo genome (made in a temporary folder), with randomly initialised models (speed does
not depend on the weights), one output (the tracks of one cell type), reverse-complement
ensembling on, the engine's defaults otherwise: ``--regions`` regions of 500 bp for
``--method grad`` and ``--ism-bp`` bases for ``--method ism``, for the tiny model and the paper
configuration. The projection is for the peaks of a typical cell type, about 100,000 of 500 bp.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_precompute import duration  # noqa: E402
from report import machine_description, publish  # noqa: E402

from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data  # noqa: E402
from epiformer.inference.device import select_device  # noqa: E402
from epiformer.inference.predictor import Predictor, open_predictor  # noqa: E402
from epiformer.inference.settings import InferenceSettings, ModelSetOptions  # noqa: E402
from epiformer.interpret.attribution import gradient_contributions, mutagenesis_tracks  # noqa: E402
from epiformer.model.checkpoints import save_checkpoint  # noqa: E402
from epiformer.model.config import preset  # noqa: E402
from epiformer.model.network import Epiformer  # noqa: E402
from epiformer.variants.scorer import VariantScorer  # noqa: E402

PEAKS, PEAK_BP = 100_000, 500


def interpretation_rates(predictor: Predictor, regions: int, ism_bp: int) -> dict[str, float]:
    """Bases of contribution track per second: gradient x input over ``regions`` regions of 500 bp
    spread over the first chromosome, and mutagenesis over ``ism_bp`` bases."""
    scorer = VariantScorer(predictor, cache_windows=0)
    chrom, size = next(iter(predictor.genome.chrom_sizes.items()))
    starts = np.linspace(size // 4, 3 * size // 4, regions).astype(int)
    chosen = [(chrom, int(s), int(s) + PEAK_BP) for s in starts]
    gradient_contributions(scorer, chosen[:1])                                        # warm-up
    started = time.perf_counter()
    gradient_contributions(scorer, chosen)
    grad = regions * PEAK_BP / (time.perf_counter() - started)
    started = time.perf_counter()
    mutagenesis_tracks(scorer, chrom, size // 2, size // 2 + ism_bp)
    return {"grad": grad, "ism": ism_bp / (time.perf_counter() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, default=0, help="500 bp regions for grad (default: 4 on CPU, 64 on CUDA)")
    parser.add_argument("--ism-bp", type=int, default=0, help="bases for ism, paper configuration "
                        "(default: 4 on CPU, 100 on CUDA; the tiny model gets 10x)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    args = parser.parse_args()
    device = select_device(args.device)
    cuda = device.type == "cuda"
    regions, ism_bp = args.regions or (64 if cuda else 4), args.ism_bp or (100 if cuda else 4)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_demo_data(tmp / "demo", DemoSpec.scaled(total_mb=2.0, n_chroms=2, seed=3))
        for name, scale in (("tiny", 10), ("paper", 1)):
            torch.manual_seed(0)
            checkpoint = save_checkpoint(tmp / f"{name}.pth.tar", Epiformer(preset(name, multiout_dim=1), ["cell"]).eval())
            settings = InferenceSettings(device=str(device), precision="bf16" if cuda else "fp32",
                                         conservation=str(paths["conservation"]))
            with open_predictor(ModelSetOptions((str(checkpoint),)), paths["fasta"], settings) as predictor:
                rates = interpretation_rates(predictor, regions * scale, ism_bp * scale)
            rows += [(name, method, rate, regions * scale * PEAK_BP if method == "grad" else ism_bp * scale)
                     for method, rate in rates.items()]
    lines = [
        f"Device: {machine_description(device)}. One output (one cell type's tracks), reverse-complement "
        f"ensembling on, {'bf16' if cuda else 'fp32'}; grad on regions of {PEAK_BP} bp, ism on consecutive bases; "
        f"the projection is for {PEAKS:,} peaks of {PEAK_BP} bp ({PEAKS * PEAK_BP / 1e6:.0f} Mb) on this device.",
        "",
        "| model | method | bases measured | bases/s | all peaks of a cell type |",
        "| --- | --- | ---: | ---: | ---: |",
        *(f"| {name} | {method} | {bases:,} | {rate:,.1f} | {duration(PEAKS * PEAK_BP / rate)} |"
          for name, method, rate, bases in rows),
    ]
    publish("interpret", lines, args.write)


if __name__ == "__main__":
    main()
