"""Held-out accuracy of the tiny model on the demo genome: the `make demo` recipe and a longer one.

    python bench/bench_train.py                       # both recipes, print the table
    python bench/bench_train.py --write BENCHMARKS.md

Both train from scratch on the same demo genome and shards (train chr1-chr2, validation chr3),
then report Pearson R of log2(x+1) per cell type over every bin of the test chromosome (chr4),
the wall time of training, and how well |SAD| from score-variants ranks the demo VCF's
motif-disrupting variants above its neutral ones (AUROC per cell type: mean and lowest).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import publish  # noqa: E402

from epiformer.datasets import generate_datasets  # noqa: E402
from epiformer.demo import DEMO_TRAINING, DemoSpec, dataset_parameters, make_demo_data, variant_auroc  # noqa: E402
from epiformer.inference import InferenceSettings, ModelSetOptions, open_predictor  # noqa: E402
from epiformer.scorer import VariantScorer  # noqa: E402
from epiformer.scoring import ScoreOptions, score_variant_file  # noqa: E402
from epiformer.train import evaluate, load_train_config, train  # noqa: E402

LONG_TRAINING = {**DEMO_TRAINING, "num_epoches": 12, "att_dropout": 0.1, "enc_dropout": 0.1,
                 "ptw_dropout": 0.05, "learning_rate": 3e-3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["demo", "long"], choices=["demo", "long"])
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    args = parser.parse_args()

    recipes = {"demo": DEMO_TRAINING, "long": LONG_TRAINING}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_demo_data(tmp / "data", DemoSpec())
        params = dataset_parameters(paths, seq_len=8192, stride=4096, nchunk=500)
        generate_datasets(params, tmp / "ds" / "demo", workers=2, progress=False)
        for name in args.recipes:
            settings = recipes[name]
            start = time.perf_counter()
            train(load_train_config(None, **settings), tmp / "ds", tmp / name, progress=False)
            minutes = (time.perf_counter() - start) / 60
            test = evaluate(tmp / f"{name}.best_corr.pth.tar", tmp / "ds", split="test")
            per_type = ", ".join(f"{r['target']} {r['pearson_log2']:.3f}" for r in test[:-1])
            checkpoint = str(tmp / f"{name}.best_corr.pth.tar")
            settings = InferenceSettings(device="cpu", conservation=str(paths["conservation"]))
            with open_predictor(ModelSetOptions((checkpoint,)), paths["fasta"], settings) as predictor:
                score_variant_file(VariantScorer(predictor), paths["variants"], tmp / f"{name}.variants",
                                   ScoreOptions(progress=False, log=lambda _: None))
            auroc = variant_auroc(tmp / f"{name}.variants.tsv", paths["variants"])
            lowest = min(v for k, v in auroc.items() if k != "mean")
            changed = {k: v for k, v in settings.items() if DEMO_TRAINING.get(k) != v} if name != "demo" else {}
            recipe = "`make demo` recipe" if name == "demo" else "longer: demo recipe with " + ", ".join(
                f"{k}={v}" for k, v in changed.items())
            rows.append(f"| {recipe} | {settings['num_epoches']} | {minutes:.1f} | **{test[-1]['pearson_log2']:.3f}** "
                        f"| {per_type} | {auroc['mean']:.3f} ({lowest:.3f}) |")
            print(rows[-1], flush=True)
    publish("training", [
        f"tiny preset, demo genome (8,192 bp windows every 4,096 bp), {os.cpu_count()} CPU cores, "
        "training from scratch; Pearson R of log2(x+1) over every bin of the held-out test chromosome.",
        "",
        "| recipe | epochs | training minutes | mean test R | per cell type | variant AUROC mean (lowest) |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
        *rows,
    ], args.write)


if __name__ == "__main__":
    main()
