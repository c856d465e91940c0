"""Held-out accuracy of the tiny model on the demo genome: the `make demo` recipe, the previous one,
the demo recipe with each of its choices undone in turn or with conservation dropout added, and a
longer recipe.

    python bench/bench_train.py                       # every recipe, print the table
    python bench/bench_train.py --write BENCHMARKS.md

All train from scratch on the same demo genome and shards (train chr1-chr2, validation chr3),
then report on the test chromosome (chr4): Pearson R of log2(x+1) over every bin, the
cell-type-specific R (log2(x+1) centred across cell types, over bins where one is at least
epiformer.training.metrics.SPECIFIC_MIN), the wall time of training, and for the demo VCF's
motif-disrupting variants in the cell types their element is open in the share of SAD with the
true change's sign and SAD's Spearman correlation with it, and how well |SAD| ranks them above
the neutral variants (AUROC per cell type: mean and lowest).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import publish  # noqa: E402

from epiformer.demo.demo_pipeline import DEMO_TRAINING, dataset_parameters
from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data
from epiformer.demo.variant_truth import SIGN_MIN_EFFECT, variant_auroc, variant_sign_metrics
from epiformer.inference.predictor import open_predictor  # noqa: E402
from epiformer.inference.settings import InferenceSettings, ModelSetOptions  # noqa: E402
from epiformer.training.datasets import generate_datasets  # noqa: E402
from epiformer.training.metrics import SPECIFIC_MIN  # noqa: E402
from epiformer.training.trainer import evaluate, load_train_config, train  # noqa: E402
from epiformer.variants.score_job import ScoreOptions, score_variant_file  # noqa: E402
from epiformer.variants.scorer import VariantScorer  # noqa: E402

# Each row changes the `make demo` recipe in one way, to show what each of its choices brings.
RECIPES = {
    "demo": DEMO_TRAINING,
    "before": {"preset": "tiny", "num_epoches": 4, "batch_size": 16, "learning_rate": 2e-3, "min_lr": 1e-4,
               "warmup_epoches": 0.5, "num_workers": 1, "loss": "poisson"},
    "poisson": {**DEMO_TRAINING, "loss": "poisson"},
    "dropout": {**DEMO_TRAINING, "att_dropout": 0.4, "enc_dropout": 0.4, "ptw_dropout": 0.1},
    "cons_dropout": {**DEMO_TRAINING, "cons_dropout": 0.3},
    "long": {**DEMO_TRAINING, "num_epoches": 12},
}
TITLES = {"demo": "`make demo` recipe", "before": "the previous `make demo` recipe",
          "poisson": "without the multinomial term", "dropout": "with the preset's dropout",
          "cons_dropout": "with conservation dropout", "long": "longer"}


def recipe_label(name: str, settings: dict) -> str:
    """The row's title and how its settings differ from the `make demo` recipe's."""
    changed = [f"{k}={settings.get(k, 'unset')}" for k in {**DEMO_TRAINING, **settings}
               if DEMO_TRAINING.get(k) != settings.get(k)]
    return TITLES[name] + (f": {', '.join(changed)}" if changed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES),
                        help="rows to run (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="the `make demo` recipe is also run with these seeds (the other rows with seed 0)")
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    args = parser.parse_args()
    runs = [(name, 0) for name in args.recipes]
    if "demo" in args.recipes:
        runs[args.recipes.index("demo") + 1: args.recipes.index("demo") + 1] = [("demo", s) for s in args.seeds if s]

    rows, demo_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_demo_data(tmp / "data", DemoSpec())
        params = dataset_parameters(paths, seq_len=8192, stride=4096, nchunk=500)
        generate_datasets(params, tmp / "ds" / "demo", workers=2, progress=False)
        inference = InferenceSettings(device="cpu", conservation=str(paths["conservation"]))
        for name, seed in runs:
            recipe, run = RECIPES[name], tmp / f"{name}.{seed}"
            start = time.perf_counter()
            train(load_train_config(None, **recipe, seed=seed), tmp / "ds", run, progress=False)
            minutes = (time.perf_counter() - start) / 60
            checkpoint = str(run) + ".best_corr.pth.tar"
            test = evaluate(checkpoint, tmp / "ds", split="test")
            scores = Path(f"{run}.variants.tsv")
            with open_predictor(ModelSetOptions((checkpoint,)), paths["fasta"], inference) as predictor:
                score_variant_file(VariantScorer(predictor), paths["variants"], scores.with_suffix(""),
                                   ScoreOptions(progress=False, log=lambda _: None))
            auroc = variant_auroc(scores, paths["variants"])
            signs = variant_sign_metrics(scores, paths["variants"])
            lowest = min(v for k, v in auroc.items() if k != "mean")
            specific = ", ".join(f"{r['target']} {r['specific_r']:.2f}" for r in test[:-1])
            label = recipe_label(name, recipe) + (f" (seed {seed})" if seed else "")
            rows.append(f"| {label} | {recipe['num_epoches']} | {minutes:.1f} "
                        f"| **{test[-1]['pearson_log2']:.3f}** | **{test[-1]['specific_r']:.3f}** ({specific}) "
                        f"| {signs['sign_accuracy']:.1%} | {signs['spearman']:.3f} | {auroc['mean']:.3f} ({lowest:.3f}) |")
            print(rows[-1], flush=True)
            if name == "demo":
                demo_runs.append((test[-1]["pearson_log2"], test[-1]["specific_r"], signs["sign_accuracy"]))
    summary = []
    if len(demo_runs) > 1:
        r, specific, sign = np.array(demo_runs).T
        summary = ["", f"The `make demo` recipe over {len(demo_runs)} seeds: mean test R {r.mean():.3f} "
                   f"({r.min():.3f}-{r.max():.3f}), cell-type-specific R {specific.mean():.3f} "
                   f"({specific.min():.3f}-{specific.max():.3f}), SAD sign right {sign.mean():.1%} "
                   f"({sign.min():.1%}-{sign.max():.1%})."]
    publish("training", [
        f"tiny preset, demo genome (8,192 bp windows every 4,096 bp), {os.cpu_count()} CPU cores, training from "
        "scratch; on the held-out test chromosome: Pearson R of log2(x+1) over every bin, and the cell-type-specific "
        f"R (log2(x+1) centred across cell types, over the {test[-1]['specific_bins']:,} bins where one is at least "
        f"{SPECIFIC_MIN:g}). Variants: the demo VCF's motif-disrupting variants in each cell type their element is "
        f"open in ({signs['pairs']} pairs): SAD with the true change's sign (pairs with a true change of at least "
        f"{SIGN_MIN_EFFECT:g}) and SAD's Spearman correlation with it; and |SAD|'s AUROC against the neutral variants.",
        "",
        "| recipe | epochs | training minutes | mean test R | cell-type-specific R (per cell type) "
        "| SAD sign right | SAD Spearman | variant AUROC mean (lowest) |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
        *rows,
        *summary,
    ], args.write)


if __name__ == "__main__":
    main()
