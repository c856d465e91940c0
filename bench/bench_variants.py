"""Variant scoring and in-silico mutagenesis throughput on the current device.

    python bench/bench_variants.py                       # print the tables
    python bench/bench_variants.py --write BENCHMARKS.md

On a 2 Mb demo genome (made in a temporary folder), with randomly initialised models (speed does
not depend on the weights), reverse-complement ensembling on everywhere:

* Variants, a narrow paper-shaped model (the paper's tower and 8 transformer layers, 16,384 bp
  windows, embed 192, 96 output bins; on a CPU the full paper model would take hours here), on
  (a) ``--dispersed`` SNVs at random positions and (b) a clustered set, 4 loci x 50 SNVs within
  10 kb (a credible set each). ``epiformer score-variants`` (shared references, incremental
  alternates: its defaults) and the same with every alternate run whole and every variant centred
  (``--share-bins 0``), against the loop a user would write: each variant's reference and
  alternate windows, centred on it, 8 windows a forward call. The loop's rate does not depend on
  the set (two windows a variant), so it is measured on ``--loop-variants`` SNVs of each.
* Saturation mutagenesis of a ``--ism-bp`` region (tiny and paper configurations): incremental
  (the default), full recomputation of batched windows, and one forward call per substitution.
  The paper configuration runs incrementally on ``--paper-bp`` positions and whole on
  ``--paper-full-bp`` (on a CPU a few positions: each substitution's full windows cost the same,
  so the rate per substitution does not depend on the region's length beyond its one reference).
  The original notebook took 36 min 43 s for 714 bp x 3 alleles; the projection for that region
  uses the measured rate.
* The share of the paper configuration's forward pass after the convolutional tower (transformer
  and head), which every incremental substitution still runs whole: it bounds what skipping the
  tower can gain over a long mutagenesis. For dispersed variants, the bound is the reference
  window each still needs: at most 2x the loop.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_description, publish  # noqa: E402

from epiformer.demo.synthetic_genome import CELL_TYPES, DemoSpec, make_demo_data  # noqa: E402
from epiformer.genome.encoding import encode_codes  # noqa: E402
from epiformer.genome.reader import Genome  # noqa: E402
from epiformer.inference.device import select_device  # noqa: E402
from epiformer.inference.engine import Engine  # noqa: E402
from epiformer.inference.predictor import Predictor, open_predictor  # noqa: E402
from epiformer.inference.settings import InferenceSettings, ModelSetOptions, ScoringSettings  # noqa: E402
from epiformer.model.checkpoints import save_checkpoint  # noqa: E402
from epiformer.model.config import preset  # noqa: E402
from epiformer.model.network import Epiformer  # noqa: E402
from epiformer.variants.alleles import apply_edits, make_variant  # noqa: E402
from epiformer.variants.mutagenesis import saturation_mutagenesis  # noqa: E402
from epiformer.variants.score_job import ScoreOptions, score_variant_file  # noqa: E402
from epiformer.variants.scorer import VariantScorer  # noqa: E402

SEED_ISM = (714 * 3, 36 * 60 + 43)     # substitutions and seconds of the original notebook
# the paper's tower and transformer depth on 16,384 bp windows at a sixth of the width (CPU-sized)
NARROW_PAPER = preset("paper", seq_len=16_384, embed_size=192, max_len=128, crop_size=16, multiout_dim=len(CELL_TYPES))


def snv_at(genome: Genome, chrom: str, pos: int) -> tuple[str, int, str, str] | None:
    """The SNV at 0-based ``pos`` to the next base, or None on an N."""
    base = genome.sequence(chrom, pos, pos + 1).upper()
    return (chrom, pos + 1, base, "ACGT"[("ACGT".index(base) + 1) % 4]) if base in "ACGT" else None


def dispersed_snvs(genome: Genome, count: int, seed: int = 0) -> list[tuple[str, int, str, str]]:
    """SNVs at random A/C/G/T positions of the genome, sorted as in a VCF."""
    rng = np.random.default_rng(seed)
    chroms = list(genome.chrom_sizes)
    out: set[tuple[str, int, str, str]] = set()
    while len(out) < count:
        chrom = chroms[int(rng.integers(len(chroms)))]
        snv = snv_at(genome, chrom, int(rng.integers(20_000, genome.chrom_sizes[chrom] - 20_000)))
        if snv:
            out.add(snv)
    return sorted(out)


def clustered_snvs(genome: Genome, loci: int = 4, per_locus: int = 50, span: int = 10_000,
                   seed: int = 1) -> list[tuple[str, int, str, str]]:
    """``loci`` credible sets of ``per_locus`` SNVs within ``span`` bp each."""
    rng = np.random.default_rng(seed)
    chrom = next(iter(genome.chrom_sizes))
    out: set[tuple[str, int, str, str]] = set()
    for locus in rng.choice(np.arange(50_000, genome.chrom_sizes[chrom] - 50_000, 4 * span), loci, replace=False):
        found: set[tuple[str, int, str, str]] = set()
        while len(found) < per_locus:
            snv = snv_at(genome, chrom, int(locus) + int(rng.integers(span)))
            if snv:
                found.add(snv)
        out |= found
    return sorted(out)


def user_loop(engine: Engine, genome: Genome, snvs: list[tuple[str, int, str, str]], batch: int = 8) -> float:
    """Variants/s of the loop a user would write: each variant's reference and alternate windows,
    centred on it, ``batch`` windows a forward call (reverse complement in the engine)."""
    cfg = engine.config
    started = time.perf_counter()
    windows = []
    for chrom, pos, ref, alt in snvs:
        variant = make_variant(chrom, pos, ref, alt)
        start = engine.window_for(variant.start)
        windows += [encode_codes(*apply_edits(genome, chrom, start, cfg.seq_len, edits)) for edits in ([], [variant])]
        if len(windows) >= batch:
            engine.predict(np.stack(windows))
            windows = []
    if windows:
        engine.predict(np.stack(windows))
    return len(snvs) / (time.perf_counter() - started)


def scoring_rate(predictor: Predictor, snvs: list[tuple[str, int, str, str]], folder: Path, **scorer) -> float:
    """Variants/s of score-variants (the library path it runs) on ``snvs``."""
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "snvs.tsv"
    table.write_text("".join(f"{c}\t{p}\t{r}\t{a}\n" for c, p, r, a in snvs))
    started = time.perf_counter()
    scored = score_variant_file(VariantScorer(predictor, cache_windows=0, **scorer), table, folder / "scores",
                                ScoreOptions(progress=False, log=lambda _: None))
    return scored["scored"] / (time.perf_counter() - started)


def ism_rates(predictor: Predictor, chrom: str, start: int, length: int, full_length: int, per_call: bool) -> dict:
    """Substitutions/s of saturation mutagenesis: incremental (over ``length`` bp), full batched
    and (optionally) one call each (over ``full_length`` bp)."""
    rates = {}
    for name, incremental, bp in (("incremental", True, length), ("full windows, batched", False, full_length)):
        result = saturation_mutagenesis(VariantScorer(predictor), chrom, start, start + bp, incremental=incremental)
        rates[name] = 3 * bp / result.seconds
    if per_call:
        engine = predictor.engine
        single = Predictor(predictor.models, predictor.genome,
                           Engine(engine.model, device=engine.device, batch_size=1, bf16=engine.bf16), predictor.settings)
        result = saturation_mutagenesis(VariantScorer(single), chrom, start, start + full_length, incremental=False)
        rates["one forward call per substitution"] = 3 * full_length / result.seconds
    return rates


def rest_share(models, device: torch.device, batch: int, repeats: int = 2) -> float:
    """The share of a forward pass after the convolutional tower (transformer and head), which an
    incremental alternate still runs whole: the bound on what skipping the tower can gain."""
    x = torch.rand(batch, 4, models.config.seq_len, device=device)
    member = models.members[0]

    def seconds(run) -> float:
        with torch.inference_mode():
            run()
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                run()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - started)
        return min(times)

    with torch.inference_mode():
        tower = member.conv(x)
    return seconds(lambda: member.from_tower(tower)) / seconds(lambda: member(x))


def ism_ceiling(incremental: int, full: int, rest: float) -> float:
    """The most incremental mutagenesis of ``incremental`` substitutions can gain per substitution
    over full windows for ``full``, when each substitution still runs the ``rest`` share of a
    forward pass whole and each run predicts its reference once (costs in forward passes)."""
    return (incremental / (1 + incremental * rest)) / (full / (1 + full))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dispersed", type=int, default=48, help="dispersed SNVs (default: 48)")
    parser.add_argument("--loop-variants", type=int, default=24,
                        help="SNVs of each set the user's loop runs (default: 24)")
    parser.add_argument("--ism-bp", type=int, default=200, help="region length for the tiny model (default: 200)")
    parser.add_argument("--paper-bp", type=int, default=0,
                        help="region length for the paper configuration, incremental (default: 8 on CPU, 50 on CUDA)")
    parser.add_argument("--paper-full-bp", type=int, default=0,
                        help="the same, full windows (default: 2 on CPU, --paper-bp on CUDA)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the variant rows (median kept)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    args = parser.parse_args()
    device = select_device(args.device)
    cuda = device.type == "cuda"
    paper_bp = args.paper_bp or (50 if cuda else 8)
    paper_full_bp = args.paper_full_bp or (paper_bp if cuda else 2)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_demo_data(tmp / "demo", DemoSpec.scaled(total_mb=2.0, n_chroms=2, seed=3))
        torch.manual_seed(0)
        tiny_ckpt = save_checkpoint(tmp / "tiny.pth.tar", Epiformer(preset("tiny"), list(CELL_TYPES)).eval())
        narrow_ckpt = save_checkpoint(tmp / "narrow.pth.tar", Epiformer(NARROW_PAPER, list(CELL_TYPES)).eval())
        settings = InferenceSettings(device=str(device), batch_size=8, precision="bf16" if cuda else "fp32",
                                     conservation=str(paths["conservation"]))
        variant_rates: dict[str, dict[str, float]] = {}
        with open_predictor(ModelSetOptions((str(narrow_ckpt),)), paths["fasta"], settings) as narrow:
            genome = narrow.genome
            sets = {"dispersed": dispersed_snvs(genome, args.dispersed), "clustered": clustered_snvs(genome)}
            loop_engine = Engine(narrow.models, device=device, batch_size=8, bf16=cuda)
            runs: dict[tuple[str, str], list[float]] = {}
            for round_ in range(args.rounds):           # alternating rounds, medians kept: this machine's speed drifts
                for name, snvs in sets.items():
                    for key, rate in (
                            ("loop", lambda: user_loop(loop_engine, genome, snvs[: args.loop_variants])),
                            ("whole", lambda: scoring_rate(narrow, snvs, tmp / f"{name}-whole-{round_}",
                                                           incremental=False, scoring=ScoringSettings(share_bins=0))),
                            ("score-variants", lambda: scoring_rate(narrow, snvs, tmp / f"{name}-{round_}"))):
                        runs.setdefault((name, key), []).append(rate())
            for (name, key), rates in runs.items():
                variant_rates.setdefault(name, {})[key] = float(np.median(rates))
        with open_predictor(ModelSetOptions((str(tiny_ckpt),)), paths["fasta"],
                            dataclasses.replace(settings, batch_size=16)) as tiny:
            chrom = next(iter(tiny.genome.chrom_sizes))
            region = 200_000
            tiny_ism = ism_rates(tiny, chrom, region, args.ism_bp, args.ism_bp, per_call=True)
        torch.manual_seed(0)
        paper_model = Epiformer(preset("paper", multiout_dim=len(CELL_TYPES)), list(CELL_TYPES)).eval()
        paper_ckpt = save_checkpoint(tmp / "paper.pth.tar", paper_model)
        paper_settings = dataclasses.replace(settings, batch_size=8 if cuda else 2)
        with open_predictor(ModelSetOptions((str(paper_ckpt),)), paths["fasta"], paper_settings) as paper:
            paper_ism = ism_rates(paper, chrom, region, paper_bp, paper_full_bp, per_call=cuda)
            paper_rest = rest_share(paper.models, device, batch=paper_settings.batch_size)

    dispersed_ratio = variant_rates["dispersed"]["score-variants"] / variant_rates["dispersed"]["loop"]
    lines = [
        f"Device: {machine_description(device)}. Randomly initialised models; reverse-complement ensembling on.",
        "",
        f"Variant scoring, narrow paper-shaped model ({NARROW_PAPER.seq_len:,} bp, embed {NARROW_PAPER.embed_size}, "
        f"{NARROW_PAPER.num_encoder_layers} transformer layers, {NARROW_PAPER.n_output_bins} output bins; default "
        f"--share-bins {NARROW_PAPER.n_output_bins // 16}); (a) {len(sets['dispersed'])} dispersed SNVs, (b) 4 loci "
        f"x 50 SNVs within 10 kb; the loop on {args.loop_variants} of each; medians of {args.rounds} alternating rounds:",
        "",
        "| method | (a) dispersed, variants/s | vs loop | (b) clustered, variants/s | vs loop |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {label} | {variant_rates['dispersed'][key]:.2f} | "
          f"{variant_rates['dispersed'][key] / variant_rates['dispersed']['loop']:.2f}x | "
          f"{variant_rates['clustered'][key]:.2f} | {variant_rates['clustered'][key] / variant_rates['clustered']['loop']:.2f}x |"
          for key, label in (("loop", "a user's loop: reference and alternate window per variant, 8 a call"),
                             ("whole", "score-variants --share-bins 0, every alternate whole"),
                             ("score-variants", "score-variants (shared references, incremental alternates)"))),
        "",
        f"A dispersed variant shares its reference with no other: score-variants runs its reference window and "
        f"one incremental alternate against the loop's two windows, so even a free alternate would give at most "
        f"2x, and 1.8x needs the alternate to cost at most 11% of a window; from the rates above it cost "
        f"{max(0.0, 2 / dispersed_ratio - 1):.0%} of one here. Clustered variants share references and go beyond 2x.",
        "",
        f"Saturation mutagenesis (3 substitutions per position; tiny: {args.ism_bp} bp; paper configuration: "
        f"{paper_bp} bp incremental, {paper_full_bp} bp full windows, batch {paper_settings.batch_size}):",
        "",
        "| model | method | substitutions/s | vs full |",
        "| --- | --- | ---: | ---: |",
        *(f"| tiny | {name} | {rate:.1f} | {rate / tiny_ism['full windows, batched']:.2f}x |"
          for name, rate in tiny_ism.items()),
        *(f"| paper | {name} | {rate:.2f} | {rate / paper_ism['full windows, batched']:.2f}x |"
          for name, rate in paper_ism.items()),
        "",
        f"The original notebook's mutagenesis of 714 bp x 3 alleles took 36 min 43 s ({SEED_ISM[0] / SEED_ISM[1]:.2f} "
        f"substitutions/s, on its own hardware). At the paper configuration's incremental rate measured here the "
        f"same region takes {SEED_ISM[0] / paper_ism['incremental'] / 60:.1f} min on this device. In the paper "
        f"configuration the transformer and head, which every substitution runs whole (attention reaches every "
        f"bin), are {paper_rest:.0%} of a forward pass here, so over a long region incremental mutagenesis runs at "
        f"most {1 / paper_rest:.2f}x faster than full windows on this device (3.5x would need that share at or "
        f"below 29%). The regions above can reach {ism_ceiling(3 * paper_bp, 3 * paper_full_bp, paper_rest):.2f}x, "
        f"because each run also predicts its one reference, which weighs more on the full windows' "
        f"{paper_full_bp} bp.",
    ]
    publish("variants", lines, args.write)


if __name__ == "__main__":
    main()
