"""The demo run: every stage on the synthetic genome, from data to precomputed tracks, scored
variants and interpretation; the one place that sits above all of them."""
from __future__ import annotations

import os
from pathlib import Path

from epiformer.demo.synthetic_genome import CELL_TYPES, DemoSpec, make_demo_data
from epiformer.demo.variant_truth import variant_auroc, variant_sign_metrics


def dataset_parameters(paths: dict[str, Path], **settings):
    """generate-datasets parameters for the files :func:`make_demo_data` wrote (with its blacklist
    unless ``blacklist`` is given)."""
    from epiformer.training.datasets import DatasetParameters

    settings = {"blacklist": str(paths["blacklist"]), **settings}
    return DatasetParameters(fasta=str(paths["fasta"]), conservation=str(paths["conservation"]),
                             chrom_sizes=str(paths["chrom_sizes"]), targets=str(paths["targets"]), **settings)


DEMO_INTERPRET_PEAKS = 100     # predicted peaks the demo's contribution tracks cover


# The tiny preset with less dropout, trained for nine epochs (what fits three minutes on 2 CPU
# cores) at a higher rate, with the default loss (Poisson plus the across-target multinomial term)
# and windows with a cell-type-specific peak drawn 3x as often; bench/bench_train.py shows what
# each choice brings.
DEMO_TRAINING = {"preset": "tiny", "num_epoches": 9, "batch_size": 16, "learning_rate": 3e-3,
                 "min_lr": 1e-4, "warmup_epoches": 0.5, "num_workers": 1,
                 "att_dropout": 0.1, "enc_dropout": 0.1, "ptw_dropout": 0.05, "specific_oversample": 3.0}


def run_demo(outdir: str | os.PathLike, seed: int = 0, device: str = "auto") -> dict:
    """The demo: demo genome -> training shards -> the ``tiny`` model trained for a few minutes ->
    its per-cell-type Pearson R on the held-out test chromosome -> the demo VCF's variant scores
    (and how well they separate motif-disrupting from neutral variants) -> genome-wide predicted
    bigWigs (precompute) -> contribution tracks of its strongest predicted peaks (interpret). A
    finished training run in ``outdir`` is reused. Returns the test metrics (one
    row per cell type, then the mean) and the precompute manifest."""
    import time

    from epiformer.genome.targets import read_targets
    from epiformer.inference.predictor import open_predictor
    from epiformer.inference.settings import InferenceSettings, ModelSetOptions
    from epiformer.interpret.interpret_job import InterpretOptions, interpret_job
    from epiformer.precompute import PrecomputeOptions, precompute
    from epiformer.training.datasets import generate_datasets
    from epiformer.training.trainer import evaluate, load_train_config, train
    from epiformer.variants.calibration import calibrate, calibration_path, find_calibration
    from epiformer.variants.score_job import ScoreOptions, score_variant_file
    from epiformer.variants.scorer import VariantScorer

    outdir = Path(outdir)
    config = load_train_config(None, **DEMO_TRAINING, seed=seed)
    model_config = config.model_config(len(CELL_TYPES))
    paths = make_demo_data(outdir / "data", DemoSpec(seed=seed))
    print(f"demo data   {outdir / 'data'}: {sum(DemoSpec().chrom_sizes.values()):,} bp genome, "
          f"{len(CELL_TYPES)} cell types, variants.vcf")
    params = dataset_parameters(paths, seq_len=model_config.seq_len, bin_size=model_config.bin_size,
                                stride=model_config.seq_len // 2, nchunk=500)
    dataset = outdir / "datasets" / "demo"
    manifest = generate_datasets(params, dataset, workers=2, progress=False)
    print("datasets    " + ", ".join(f"{split} {info['windows']} windows ({','.join(info['chroms'])})"
                                     for split, info in manifest["splits"].items()))
    run = outdir / "runs" / "demo"
    last = Path(f"{run}.last.pth.tar")
    if _finished_run(last, config.num_epoches):
        print(f"training    reusing {last}")
    else:
        print(f"training    tiny preset, {config.num_epoches} epochs on {manifest['splits']['train']['windows']} "
              "windows (a few minutes on 2 CPU cores)")
        train(config, dataset, run, resume=last.exists(), device=device)
    settings = InferenceSettings(device=device, conservation=str(paths["conservation"]))
    rows = evaluate(f"{run}.best_corr.pth.tar", dataset, split="test", out=f"{run}.test_metrics.tsv",
                    settings=settings)
    print(f"test chromosome {','.join(manifest['splits']['test']['chroms'])}, Pearson R of log2(x+1) per cell type, "
          "then the cell-type-specific R (centred across cell types, bins where one is open):")
    print("  " + "  ".join(f"{r['target']} {r['pearson_log2']:.3f}" for r in rows))
    print("  " + "  ".join(f"{r['target']} {r['specific_r']:.3f}" for r in rows))
    print(f"outputs     {run}.best_corr.pth.tar, {run}.learning_curves.png, {run}.test_metrics.tsv")
    models = ModelSetOptions((f"{run}.best_corr.pth.tar",))
    with open_predictor(models, paths["fasta"], settings) as predictor:
        scorer = VariantScorer(predictor, calibration=find_calibration(models.models))
        if scorer.percentiles_missing():
            scorer.calibration = calibrate(VariantScorer(predictor, cache_windows=0), count=500, progress=False,
                                           blacklist=paths["blacklist"])
            print(f"calibration {scorer.calibration.size} random SNVs: "
                  f"{scorer.calibration.save(calibration_path(models.models))}")
        scored = score_variant_file(scorer, paths["variants"], outdir / "variants" / "demo",
                                    ScoreOptions(progress=False, log=lambda _: None), restart=True)
    auroc = variant_auroc(outdir / "variants" / "demo.tsv", paths["variants"])
    signs = variant_sign_metrics(outdir / "variants" / "demo.tsv", paths["variants"])
    print(f"variants    {scored['scored']} scored; |SAD| ranks motif-disrupting above neutral variants with AUROC "
          + "  ".join(f"{k} {v:.3f}" for k, v in auroc.items()) + f": {outdir / 'variants' / 'demo.tsv'}")
    print(f"            in the cell types where their element is open, SAD has the true change's sign in "
          f"{signs['sign_accuracy']:.0%} of {signs['pairs']} pairs; Spearman with the true change {signs['spearman']:.3f}")
    started = time.perf_counter()
    result = precompute(models, paths["fasta"], outdir / "precompute", settings,
                        PrecomputeOptions(progress=False, specificity=True),
                        targets=read_targets(paths["targets"]), blacklist=paths["blacklist"], genome_name="demo")
    print(f"precompute  {len(result['manifest']['tracks'])} genome-wide bigWigs and their specificity tracks in "
          f"{time.perf_counter() - started:.0f} s: {outdir / 'precompute' / 'manifest.json'}")
    interpreted = interpret_job(models, paths["fasta"], settings, outdir / "precompute", top=DEMO_INTERPRET_PEAKS,
                                options=InterpretOptions(progress=False, restart=True), log=lambda _: None)
    print(f"interpret   gradient x input over the {DEMO_INTERPRET_PEAKS} strongest predicted peaks: "
          f"{len(interpreted['files'])} contribution bigWigs in {outdir / 'precompute' / 'tracks'}")
    return {"test": rows, "variants_auroc": auroc, "variants_sign": signs, "precompute": result["manifest"]}


def _finished_run(last: Path, num_epoches: int) -> bool:
    from epiformer.model.checkpoints import CheckpointError, read_checkpoint

    if not last.exists():
        return False
    try:
        return read_checkpoint(last).get("epoch") == num_epoches - 1
    except CheckpointError:
        return False
