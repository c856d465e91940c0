"""Held-out accuracy of the tiny model on families of synthetic genomes: recipes chosen on the
development genomes, judged on evaluation genomes that the choice never saw.

    python bench/bench_train.py                       # every genome and recipe, print the tables
    python bench/bench_train.py --write BENCHMARKS.md
    python bench/bench_train.py --scale 0.25 --recipes demo poisson    # a quick look

The genomes (GENOMES) come from `epiformer demo-data`'s generator: the demo genome, and genomes of
drawn grammars (epiformer.demo.grammar: other JASPAR motif sets, 3 to 12 cell types, factors too
weak to open an element alone, a factor shared by every cell type, two distinct factors acting
together within a spacing, weaker and noisier tracks, 3 to 6 Mb of sequence), each from its own
fixed seed. Every recipe (RECIPES) trains from scratch (training seed 0) on each development
genome's shards (8,192 bp windows every 4,096 bp; train chr1-chr2, validation chr3) and is
scored on its test chromosome (chr4): Pearson R of log2(x+1) over every bin, the cell-type-
specific R (log2(x+1) centred across cell types, over bins where one is at least
epiformer.training.metrics.SPECIFIC_MIN), and for the genome's VCF of motif-disrupting variants
in the cell types their element is open in, the share of SAD with the true change's sign and
SAD's Spearman correlation with it, and how well |SAD| ranks them above the neutral variants
(AUROC, mean over cell types).

The chosen recipe is the one with the highest mean cell-type-specific R over the development
genomes whose worst genome is no lower than the `make demo` recipe's worst (the `make demo` recipe
when none is). The evaluation genomes then train the `make demo` recipe, the chosen one and the
`make demo` recipe for LONG_EPOCHS epochs (the longer recipe, beyond the demo's three minutes), and
the second table reports them per genome, with the mean and the worst. A diagnostic column says
what the wrong signs are: the median |SAD| of wrong-sign pairs over that of right-sign ones, near 0
when the model does not respond to those sites at all.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import publish  # noqa: E402

from epiformer.demo.demo_pipeline import DEMO_TRAINING, dataset_parameters  # noqa: E402
from epiformer.demo.grammar import BRAIN, Grammar, drawn_grammar  # noqa: E402
from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data  # noqa: E402
from epiformer.demo.variant_truth import SIGN_MIN_EFFECT, variant_auroc, variant_sign_metrics  # noqa: E402
from epiformer.inference.predictor import open_predictor  # noqa: E402
from epiformer.inference.settings import InferenceSettings, ModelSetOptions  # noqa: E402
from epiformer.training.datasets import generate_datasets  # noqa: E402
from epiformer.training.metrics import SPECIFIC_MIN  # noqa: E402
from epiformer.training.trainer import evaluate, load_train_config, train  # noqa: E402
from epiformer.variants.score_job import ScoreOptions, score_variant_file  # noqa: E402
from epiformer.variants.scorer import VariantScorer  # noqa: E402


@dataclass(frozen=True)
class GenomeDesign:
    """One genome of the family: its set, seed, grammar (the demo's, or one drawn with the seed:
    ``cell_types`` > 0), size (the demo's chromosome proportions) and tracks."""

    name: str
    role: str                   # "development" or "evaluation"
    seed: int
    cell_types: int = 0         # 0: the demo's brain grammar
    sites_needed: int = 2
    spacing: int = 40
    size_mb: float = 6.0
    depth: float = 25.0
    peak_scale: float = 1.0

    @cached_property
    def grammar(self) -> Grammar:
        return drawn_grammar(self.seed, self.cell_types, 2, self.sites_needed, self.spacing) if self.cell_types \
            else BRAIN

    def spec(self, scale: float) -> DemoSpec:
        """The generator's settings, the sizes times ``scale``."""
        factor = self.size_mb * 1e6 * scale / sum(DemoSpec().chrom_sizes.values())
        sizes = {chrom: int(round(size * factor / 1000)) * 1000 for chrom, size in DemoSpec().chrom_sizes.items()}
        return DemoSpec(seed=self.seed, chrom_sizes=sizes, grammar=self.grammar, depth=self.depth,
                        peak_scale=self.peak_scale)

    def describe(self, scale: float) -> str:
        together = f"within {self.spacing} bp" if self.spacing else "anywhere in the element"
        kind = (f"drawn grammar ({self.cell_types} cell types x 2 factors of their own, one factor shared; "
                f"{self.sites_needed} sites to open, or 2 distinct factors {together})" if self.cell_types
                else "the demo's brain grammar (8 cell types)")
        size = sum(self.spec(scale).chrom_sizes.values()) / 1e6
        return f"{self.name}: {kind}, {size:.2g} Mb, depth {self.depth:g}, peaks x{self.peak_scale:g}, seed {self.seed}"


GENOMES = [
    GenomeDesign("demo", "development", 0),
    GenomeDesign("dev-5ct", "development", 11, cell_types=5, size_mb=4.0),
    GenomeDesign("dev-8ct-noisy", "development", 12, cell_types=8, sites_needed=3, size_mb=5.0, depth=10.0,
                 peak_scale=0.7),
    GenomeDesign("eval-3ct", "evaluation", 21, cell_types=3, spacing=0, size_mb=3.0, depth=15.0),
    GenomeDesign("eval-6ct-weak", "evaluation", 22, cell_types=6, sites_needed=3, size_mb=4.0, depth=8.0,
                 peak_scale=0.6),
    GenomeDesign("eval-12ct", "evaluation", 23, cell_types=12, spacing=60, size_mb=6.0),
]

# Candidate recipes: the `make demo` recipe and one change each.
RECIPES: dict[str, dict[str, Any]] = {
    "demo": DEMO_TRAINING,
    "poisson": {**DEMO_TRAINING, "loss": "poisson"},
    "uniform": {**DEMO_TRAINING, "specific_oversample": 1.0},
    "epochs_7": {**DEMO_TRAINING, "num_epoches": 7},
    "oversample_6": {**DEMO_TRAINING, "specific_oversample": 6.0},
    "cons_dropout": {**DEMO_TRAINING, "cons_dropout": 0.3},
    "dropout": {**DEMO_TRAINING, "att_dropout": 0.4, "enc_dropout": 0.4, "ptw_dropout": 0.1},
    "multinomial_30": {**DEMO_TRAINING, "multinomial_weight": 30.0},
    "ema": {**DEMO_TRAINING, "ema_decay": 0.98},
}
LONG_EPOCHS = 20
TITLES = {"demo": "`make demo` recipe", "poisson": "without the multinomial term",
          "uniform": "every window drawn alike",
          "epochs_7": "the previous `make demo` recipe",
          "oversample_6": "windows with a specific peak drawn 6x as often",
          "cons_dropout": "with conservation dropout", "dropout": "with the preset's dropout",
          "multinomial_30": "the multinomial term weighted 3x", "ema": "a moving average of the weights",
          "long": "the `make demo` recipe, longer"}
METRICS = [("test_r", "test R"), ("specific_r", "cell-type-specific R"), ("sign", "SAD sign right"),
           ("spearman", "SAD Spearman"), ("auroc", "variant AUROC")]


def recipe_label(name: str, settings: dict) -> str:
    """The recipe's title and how its settings differ from the `make demo` recipe's."""
    changed = [f"{k}={settings.get(k, 'unset')}" for k in {**DEMO_TRAINING, **settings}
               if DEMO_TRAINING.get(k) != settings.get(k)]
    return TITLES[name] + (f" ({', '.join(changed)})" if changed else "")


class Family:
    """Each genome's data and shards, made once, in a temporary folder."""

    def __init__(self, folder: Path, scale: float) -> None:
        self.folder, self.scale = folder, scale
        self.made: dict[str, dict] = {}

    def data(self, design: GenomeDesign) -> dict:
        if design.name not in self.made:
            paths = make_demo_data(self.folder / design.name / "data", design.spec(self.scale))
            params = dataset_parameters(paths, seq_len=8192, stride=4096, nchunk=500)
            generate_datasets(params, self.folder / design.name / "ds" / design.name, workers=2, progress=False)
            self.made[design.name] = paths
        return self.made[design.name]

    def run(self, design: GenomeDesign, recipe_name: str, recipe: dict) -> dict[str, float]:
        """Train ``recipe`` on the genome and score it on the test chromosome and the VCF."""
        paths, home = self.data(design), self.folder / design.name
        run = home / recipe_name
        started = time.perf_counter()
        train(load_train_config(None, **recipe, seed=0), home / "ds", run, progress=False)
        minutes = (time.perf_counter() - started) / 60
        checkpoint = f"{run}.best_corr.pth.tar"
        test = evaluate(checkpoint, home / "ds", split="test")
        scores = Path(f"{run}.variants.tsv")
        inference = InferenceSettings(device="cpu", conservation=str(paths["conservation"]))
        with open_predictor(ModelSetOptions((checkpoint,)), paths["fasta"], inference) as predictor:
            score_variant_file(VariantScorer(predictor), paths["variants"], scores.with_suffix(""),
                               ScoreOptions(progress=False, log=lambda _: None))
        signs = variant_sign_metrics(scores, paths["variants"])
        result = {"test_r": test[-1]["pearson_log2"], "specific_r": test[-1]["specific_r"],
                  "sign": signs["sign_accuracy"], "spearman": signs["spearman"],
                  "wrong_sign_size": signs["wrong_sign_size"],
                  "auroc": variant_auroc(scores, paths["variants"])["mean"], "minutes": minutes,
                  "pairs": signs["pairs"], "specific_bins": test[-1]["specific_bins"]}
        print(f"{design.name} {recipe_name}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()), flush=True)
        return result


def summary(results: dict[str, dict[str, float]], key: str) -> tuple[float, float]:
    """Mean and worst of one metric over genomes."""
    values = [r[key] for r in results.values()]
    return float(np.mean(values)), float(np.min(values))


def table(title: str, designs: list[GenomeDesign], runs: dict[str, dict[str, dict]], labels: dict[str, str]) -> list[str]:
    """Per recipe: each genome's cell-type-specific R and SAD sign, then each metric's mean (worst)."""
    lines = [title, "", "| recipe | " + " | ".join(f"{d.name}: specific R, sign" for d in designs) + " | "
             + " | ".join(f"{label} mean (worst)" for _, label in METRICS)
             + " | wrong-sign / right-sign median abs(SAD), mean | minutes per run |",
             "| --- |" + " ---: |" * (len(designs) + len(METRICS) + 2)]
    for name, results in runs.items():
        cells = [f"{results[d.name]['specific_r']:.3f}, {results[d.name]['sign']:.0%}" for d in designs]
        stats = []
        for key, _ in METRICS:
            mean, worst = summary(results, key)
            stats.append(f"{mean:.0%} ({worst:.0%})" if key == "sign" else f"{mean:.3f} ({worst:.3f})")
        minutes = np.mean([r["minutes"] for r in results.values()])
        wrong_sign_size = np.nanmean([r["wrong_sign_size"] for r in results.values()])
        lines.append(f"| {labels[name]} | " + " | ".join(cells + stats) + f" | {wrong_sign_size:.2f} | {minutes:.1f} |")
    return lines


def choose(runs: dict[str, dict[str, dict]]) -> str:
    """The recipe with the best mean cell-type-specific R whose worst genome is no lower than the
    `make demo` recipe's worst."""
    floor = summary(runs["demo"], "specific_r")[1]
    allowed = [name for name, results in runs.items() if summary(results, "specific_r")[1] >= floor]
    return max(allowed, key=lambda name: summary(runs[name], "specific_r")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES),
                        help="candidate recipes tried on the development genomes (default: all; demo is always in)")
    parser.add_argument("--also-evaluate", nargs="+", default=[], choices=list(RECIPES), metavar="RECIPE",
                        help="candidates trained on the evaluation genomes too, whatever the choice (e.g. the "
                             "previous `make demo` recipe, to judge a change already made to it)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="genome sizes times this (default: 1; smaller for a quick look)")
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    args = parser.parse_args()
    candidates = {"demo": RECIPES["demo"], **{name: RECIPES[name] for name in args.recipes + args.also_evaluate}}
    development = [d for d in GENOMES if d.role == "development"]
    evaluation = [d for d in GENOMES if d.role == "evaluation"]
    labels = {name: recipe_label(name, recipe) for name, recipe in candidates.items()}

    with tempfile.TemporaryDirectory() as tmp:
        family = Family(Path(tmp), args.scale)
        dev_runs = {name: {d.name: family.run(d, name, recipe) for d in development}
                    for name, recipe in candidates.items()}
        chosen = choose(dev_runs)
        judged = {"demo": RECIPES["demo"], **{name: candidates[name] for name in args.also_evaluate},
                  chosen: candidates[chosen], "long": {**RECIPES["demo"], "num_epoches": LONG_EPOCHS}}
        labels["long"] = recipe_label("long", judged["long"])
        eval_runs = {name: {d.name: family.run(d, name, recipe) for d in evaluation} for name, recipe in judged.items()}

    specific = {name: summary(results, "specific_r") for name, results in eval_runs.items()}
    sign = {name: summary(results, "sign") for name, results in eval_runs.items()}

    def against_demo(name: str) -> str:
        """How ``name`` compares with the `make demo` recipe on the evaluation genomes."""
        (mean, worst), (demo_mean, demo_worst) = specific[name], specific["demo"]
        (sign_mean, sign_worst), (demo_sign, demo_sign_worst) = sign[name], sign["demo"]
        return (f"on the evaluation genomes its mean cell-type-specific R is {mean:.3f} against the `make demo` "
                f"recipe's {demo_mean:.3f} and its worst {worst:.3f} against {demo_worst:.3f} (SAD sign "
                f"{sign_mean:.0%} ({sign_worst:.0%}) against {demo_sign:.0%} ({demo_sign_worst:.0%}))")

    kept = specific[chosen][0] > specific["demo"][0] and specific[chosen][1] >= specific["demo"][1]
    verdict = ("the `make demo` recipe is the development set's choice" if chosen == "demo" else
               f"the development set chose {labels[chosen]}: {against_demo(chosen)}, so it is "
               + ("kept" if kept else "not kept"))
    also = [f"{labels[name]}: {against_demo(name)}." for name in args.also_evaluate if name != chosen]
    publish("training", [
        f"tiny preset, {os.cpu_count()} CPU cores, training from scratch (seed 0) on each genome's shards "
        f"(8,192 bp windows every 4,096 bp, train chr1-chr2, validation chr3); on its held-out test chromosome "
        f"(chr4): Pearson R of log2(x+1) over every bin, the cell-type-specific R (log2(x+1) centred across cell "
        f"types, over bins where one is at least {SPECIFIC_MIN:g}); on its VCF's motif-disrupting variants in each "
        f"cell type their element is open in: SAD with the true change's sign (true change at least "
        f"{SIGN_MIN_EFFECT:g}) and SAD's Spearman correlation with it; |SAD|'s AUROC against its neutral variants "
        f"(mean over cell types). Genome sizes x{args.scale:g}.",
        "",
        "Genomes (`epiformer demo-data`; each from its own seed):",
        "",
        *(f"- {d.role}: {d.describe(args.scale)}" for d in GENOMES),
        "",
        *table("Development genomes (the recipe is chosen here):", development, dev_runs, labels),
        "",
        *table("Evaluation genomes (never seen by the choice):", evaluation, eval_runs, labels),
        "",
        f"Choice: {verdict}.",
        *(["", "Also evaluated:", "", *(f"- {line}" for line in also)] if also else []),
    ], args.write)


if __name__ == "__main__":
    main()
