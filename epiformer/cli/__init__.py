"""The ``epiformer`` command. Each subcommand parses its arguments and calls one library function."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Callable, Sequence

from epiformer import __version__
from epiformer.inference.settings import MISMATCH_RULES, PRECISIONS, InferenceSettings, ScoringSettings
from epiformer.model.config import parse_bool

EPILOG_DEMO = """examples:
  epiformer demo -o demo_out
  epiformer demo -o demo_out --device cpu --seed 3
"""

EPILOG_DEMO_DATA = """examples:
  epiformer demo-data -o demo_data
  epiformer demo-data -o big_demo --size-mb 20 --chroms 6 --seed 7
"""

EPILOG_GENERATE = """examples:
  # the original command line, unchanged (hg38: chr9 validation, chr8 test by default)
  epiformer generate-datasets --target targets.txt --seqcons hg38.phastCons100way.bw \\
      --fa hg38.fa --gsize hg38.chrom.sizes --blacklist hg38-blacklist.v2.bed \\
      --seqlen 98304 --nchunk 1000 --binsize 128 -o datasets/brain
  # the demo genome, 8 kb windows overlapping by half, two processes
  epiformer generate-datasets --target demo_data/targets.txt --seqcons demo_data/conservation.bw \\
      --fa demo_data/genome.fa --gsize demo_data/chrom.sizes --blacklist demo_data/blacklist.bed \\
      --seqlen 8192 --stride 4096 -o demo_datasets/demo --workers 2
  # a genome without a conservation track (train then builds a model with if_cons false)
  epiformer generate-datasets --target targets.txt --fa genome.fa --gsize genome.chrom.sizes -o datasets/nocons
"""

EPILOG_TRAIN = """examples:
  epiformer train --preset tiny -i demo_out/datasets -o runs/demo --num_epoches 4
  epiformer train -c brain.yaml -i datasets/brain -o runs/MGC --index 4        # one target, as the original
  torchrun --nproc_per_node=4 -m epiformer.cli train -c brain.yaml -i datasets/brain -o runs/brain
  epiformer train -c brain.yaml -i datasets/brain -o runs/brain --resume
  epiformer train -c brain.yaml -i original_h5/ --fa hg38.fa -o runs/brain      # the original's datasets
  epiformer train -c brain.yaml -i original_h5/ -t targets.txt -o runs/brain    # their targets named by targets.txt
"""

EPILOG_EVALUATE = """examples:
  epiformer evaluate -m runs/demo.best_corr.pth.tar -i demo_out/datasets -o runs/demo.test.tsv
  epiformer evaluate -m MGC.model.best_loss.pth.tar -i original_h5/ --test-chroms chr8 --index 4
  epiformer evaluate -m runs/brain.best_corr.pth.tar -i original_h5/ -t targets.txt   # trained with -t targets.txt
"""

EPILOG_PREDICT = """examples:
  epiformer predict -m demo_out/runs/demo.best_corr.pth.tar -d demo_out/data/genome.fa \\
      -s demo_out/data/conservation.bw -r chr4:100,001-200,000 -o pred -t demo_out/data/targets.txt
  # two original single-output checkpoints as one set
  epiformer predict -m MGC=MGC.best_loss.pth.tar -m OPC=OPC.best_loss.pth.tar -d hg38.fa \\
      -s hg38.phastCons100way.bw -r regions.bed -o pred --format tsv
  # the original's flags: one single-output checkpoint named by row 4 of targets.txt
  epiformer predict -m MGC.best_loss.pth.tar -t targets.txt --index 4 -d hg38.fa -s cons.bw \\
      -r chr1:1,000,001-1,100,000 --seqlen 98304 --binsize 128 -o MGC
"""

EPILOG_PRED_SIGNALS = """examples:
  # the original README's Step 3, unchanged but for the program name (run in the folder holding
  # genome/human.fa, genome/human.phastCons.bw and targets/human.targets.txt)
  epiformer pred-signals -m model/MGC.model-1663637197.best_loss.pth.tar -s human \\
      -r chr2:127068747-127150006 -d ./ --index 4 --seqlen 98304 --binsize 128 -o pred/MGC.human
"""

EPILOG_PRECOMPUTE = """examples:
  # the demo genome and model (a few seconds on a CPU)
  epiformer precompute -m demo_out/runs/demo.best_corr.pth.tar --fa demo_out/data/genome.fa \\
      --seqcons demo_out/data/conservation.bw --blacklist demo_out/data/blacklist.bed -o demo_out/precompute
  # with each cell type's difference from the mean over cell types (the specificity tracks)
  epiformer precompute -m runs/brain.best_corr.pth.tar --fa hg38.fa --seqcons hg38.phastCons100way.bw \\
      --genome hg38 -o hg38_tracks --specificity
  # hg38 with published single-output checkpoints: first the projected time, then the run
  epiformer precompute -m MGC=MGC.best_loss.pth.tar -m OPC=OPC.best_loss.pth.tar --fa hg38.fa \\
      --seqcons hg38.phastCons100way.bw --blacklist hg38-blacklist.v2.bed --genome hg38 -o hg38_tracks --dry-run
  # one multi-GPU node: one shard per GPU, rank 0 merges
  torchrun --nproc_per_node=8 -m epiformer.cli precompute -m models.tsv --fa hg38.fa \\
      --seqcons hg38.phastCons100way.bw --genome hg38 -o hg38_tracks
  # a job array task (SLURM: --array=0-15), then the merge once all have finished
  epiformer precompute -m models.tsv --fa hg38.fa --seqcons cons.bw -o hg38_tracks --shard $SLURM_ARRAY_TASK_ID/16
  epiformer precompute-merge hg38_tracks
  epiformer precompute-merge hg38_tracks --specificity
"""

EPILOG_MERGE = """examples:
  epiformer precompute-merge hg38_tracks
  epiformer precompute-merge hg38_tracks --specificity
"""

EPILOG_HUB = """examples:
  epiformer hub demo_out/precompute -o demo_out/hub
  # files served from a CDN or object store: absolute URLs in the hub
  epiformer hub hg38_tracks -o hg38_hub --base-url https://data.example.org/epiformer/hg38_hub \\
      --email me@example.org
"""

EPILOG_SERVE = """examples:
  epiformer serve demo_out/precompute -m demo_out/runs/demo.best_corr.pth.tar
  epiformer serve hg38_tracks -m models.tsv --fa hg38.fa --seqcons hg38.phastCons100way.bw \\
      --host 0.0.0.0 --port 8000 --public-url https://tracks.example.org
  # the same in production, configured by the environment
  EPIFORMER_PRECOMPUTE_DIR=hg38_tracks EPIFORMER_MODELS=models.tsv EPIFORMER_BIND=0.0.0.0:8000 \\
      gunicorn -c server/gunicorn.conf.py 'epiformer.server:create_app()'
"""

EPILOG_SCORE = """examples:
  epiformer score-variants -m demo_out/runs/demo.best_corr.pth.tar --fa demo_out/data/genome.fa \\
      --seqcons demo_out/data/conservation.bw --vcf demo_out/data/variants.vcf -o demo_out/variants
  epiformer score-variants -m MGC=MGC.best_loss.pth.tar -m OPC=OPC.best_loss.pth.tar --fa hg38.fa \\
      --seqcons hg38.phastCons100way.bw --vcf gwas.vcf.gz -o gwas_scores --on-mismatch swap
"""

EPILOG_INSPECT = """examples:
  epiformer inspect MGC.model.best_loss.pth.tar
  epiformer inspect run1.best_corr.pth.tar --json
"""


def _demo(args: argparse.Namespace) -> None:
    from epiformer.demo.demo_pipeline import run_demo

    run_demo(args.outdir, seed=args.seed, device=args.device)


def _demo_data(args: argparse.Namespace) -> None:
    from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data

    paths = make_demo_data(args.outdir, DemoSpec.scaled(args.size_mb, args.chroms, args.seed))
    print(f"wrote the demo genome and tracks to {args.outdir}: "
          + ", ".join(p.name for p in paths.values()) + ", one .bw and .peaks.bed per cell type")


def _generate_datasets(args: argparse.Namespace) -> None:
    from epiformer.training.datasets import DatasetParameters, generate_datasets

    params = DatasetParameters(
        fasta=args.fa, conservation=args.seqcons, chrom_sizes=args.gsize, targets=args.target,
        blacklist=args.blacklist, bed=args.bed, seq_len=args.seqlen, bin_size=args.binsize,
        stride=args.stride, nchunk=args.nchunk, max_n_frac=args.max_n_frac, missing=args.missing,
        valid_chroms=_chrom_list(args.valid_chroms), test_chroms=_chrom_list(args.test_chroms))
    manifest = generate_datasets(params, args.out, workers=args.workers, progress=not args.quiet)
    for split, info in manifest["splits"].items():
        print(f"{split:<5} {info['windows']:>7,} windows in {len(info['shards'])} shard(s) "
              f"({', '.join(info['chroms'])}); {info['dropped_for_n']} dropped for unknown bases")
    print(f"manifest: {args.out}.json")


def _train(args: argparse.Namespace) -> None:
    from epiformer.training.trainer import MODEL_FIELDS, TRAIN_FIELDS, load_train_config, train

    names = list(TRAIN_FIELDS) + list(MODEL_FIELDS)
    overrides = {name: getattr(args, name) for name in names}
    cfg = load_train_config(args.config, **overrides)
    record = train(cfg, args.input, args.out, index=args.index, resume=args.resume, device=args.device,
                   progress=not args.quiet, split_options=_split_options(args))
    if record and int(os.environ.get("RANK", "0")) == 0:
        print(f"done: validation Pearson R (log2) {record['valid_pearson_mean']:.3f}; checkpoints "
              f"{args.out}.{{last,best_loss,best_corr}}.pth.tar")


def _evaluate(args: argparse.Namespace) -> None:
    from epiformer.training.trainer import evaluate

    rows = evaluate(args.model, args.input, split=args.split, out=args.out, settings=_inference_settings(args),
                    index=args.index, split_options=_split_options(args), specific_min=args.specific_min)
    print(f"{'target':<10} {'pearson_log2':>12} {'specific_r':>10} {'poisson_loss':>12} {'bins':>9} "
          f"{'specific_bins':>13} {'nan_bins':>8}")
    for row in rows:
        print(f"{row['target']:<10} {row['pearson_log2']:>12.4f} {row['specific_r']:>10.4f} "
              f"{row['poisson_loss']:>12.4f} {row['bins']:>9,} {row['specific_bins']:>13,} {row['nan_bins']:>8,}")
    if args.out:
        print(f"wrote {args.out}")


def _add_specificity_argument(parser: argparse.ArgumentParser) -> None:
    """--specificity: the merge also writes each target's difference from the mean (precompute, precompute-merge)."""
    parser.add_argument("--specificity", action="store_true",
                        help="also write tracks/TARGET.specificity.bw: log2(x+1) of each target minus its mean over "
                             "all targets, per bin (where a cell type differs from the rest; the hub and the page "
                             "show them)")


def _add_specific_min_argument(parser: argparse.ArgumentParser) -> None:
    """--specific-min: which bins the cell-type-specific R covers (evaluate, predict -t)."""
    from epiformer.training.metrics import SPECIFIC_MIN

    parser.add_argument("--specific-min", type=float, default=SPECIFIC_MIN, metavar="X",
                        help="the cell-type-specific R (log2(x+1) centred across targets per bin) covers bins where "
                             f"some target's observed value is at least X (default: {SPECIFIC_MIN:g}, in the "
                             "targets' units)")


def _split_options(args: argparse.Namespace):
    from epiformer.training.datasets import SplitOptions

    return SplitOptions(_chrom_list(args.valid_chroms), _chrom_list(args.test_chroms), args.fa, args.targets)


def _add_missing_argument(parser: argparse.ArgumentParser) -> None:
    """--missing: how bigWig bases without data count in observed per-bin values."""
    parser.add_argument("--missing", choices=["zero", "nan"], default="zero",
                        help="bigWig bases without data count as 0 (default; the deepTools and basenji "
                             "convention, so tracks that omit zero-coverage stretches bin like ones that write "
                             "them) or are left out of their bin (nan; a bin without any data is masked)")


def _add_split_arguments(parser) -> None:
    """--valid-chroms and --test-chroms, with the default split of :func:`~epiformer.training.datasets.default_split`."""
    parser.add_argument("--valid-chroms", help="validation chromosomes, comma-separated "
                        "(default: chr9 if present, else the second-to-last chromosome with windows)")
    parser.add_argument("--test-chroms", help="test chromosomes, comma-separated "
                        "(default: chr8 if present, else the last chromosome with windows)")


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """-i DATASET and how a folder of the original's HDF5 files is split, read and named (train, evaluate)."""
    parser.add_argument("-i", "--input", required=True, metavar="DATASET",
                        help="dataset folder or OUTPREFIX from generate-datasets, or a folder of the original "
                             "generate_datasets.py's OUTPREFIX.{k}.h5 files (recognised by their layout)")
    original = parser.add_argument_group("datasets of the original generate_datasets.py")
    _add_split_arguments(original)
    original.add_argument("--fa", help="genome FASTA, for files whose inputs/seq holds window names "
                          "(written so with bedtools 2.27 or later)")
    original.add_argument("--targets", "-t", metavar="TARGETS_TXT",
                          help="targets.txt whose row i names target i (the files record no names: target_0 ... "
                               "without it); for a generate-datasets dataset it must list the names it holds")


def _predict(args: argparse.Namespace) -> None:
    from epiformer.inference.predictor import open_predictor
    from epiformer.inference.regions import predict_regions, read_regions_arg
    from epiformer.model.config import check_window_flags

    with open_predictor(_model_set_options(args), args.fa, _inference_settings(args)) as predictor:
        check_window_flags(predictor.models.config, args.seqlen, args.binsize)
        regions = read_regions_arg(args.region, predictor.genome.chrom_sizes)
        result = predict_regions(predictor, regions, args.out, args.format, args.targets,
                                 missing=args.missing, specific_min=args.specific_min)
    print("wrote " + ", ".join(result["files"]))
    for name, r in result["pearson"].items():
        print(f"  {name:<10} Pearson R (log2) against observed {r:.3f}, cell-type-specific R "
              f"{result['specific'][name]:.3f}")
    if result["pearson"]:
        print(f"  {'mean':<10} Pearson R (log2) against observed {result['pearson_mean']:.3f}, cell-type-specific R "
              f"{result['specific_mean']:.3f} (over {result['specific_bins']:,} bins where a target is at least "
              f"{args.specific_min:g})")
    if "plot" in result:
        print(f"plot: {result['plot']}")


def _pred_signals(args: argparse.Namespace) -> None:
    from epiformer.inference.predictor import open_predictor
    from epiformer.inference.regions import original_layout, pred_signals_models, predict_signals, signal_targets
    from epiformer.inference.settings import NO_CONSERVATION
    from epiformer.model.config import check_window_flags

    layout = original_layout(args.path2dir, args.species)
    targets = args.target or layout["targets"]
    settings = _inference_settings(args)
    if not args.no_conservation:
        if layout["conservation"] is None:
            print(f"note: no genome/{args.species}.phastCons.bw in {args.path2dir}: every base counts with a "
                  "conservation factor of 1, as in the original")
        settings = dataclasses.replace(settings, conservation=str(layout["conservation"] or NO_CONSERVATION))
    models = pred_signals_models(args.model, targets, args.index)
    with open_predictor(models, layout["fasta"], settings) as predictor:
        check_window_flags(predictor.models.config, args.seqlen, args.binsize)
        names = signal_targets(predictor.models.target_names, targets, args.index)
        result = predict_signals(predictor, args.region, args.outprfx, args.species, names, targets)
    for name in names:
        if name in result["pearson"]:
            print(f"Model_Corr ({name}, Pearson R of log2(x+1) against the observed track): "
                  f"{result['pearson'][name]:.4f}")
    print("wrote " + ", ".join(result["files"]))


def _precompute(args: argparse.Namespace) -> None:
    from epiformer.genome.intervals import read_bed_intervals
    from epiformer.genome.targets import read_targets
    from epiformer.model.config import check_window_flags
    from epiformer.parallel.sharded_jobs import parse_shard
    from epiformer.precompute import PrecomputeOptions, precompute

    models = _model_set_options(args).load()
    check_window_flags(models.config, args.seqlen, args.binsize)
    precompute(models, args.fa, args.out, _inference_settings(args),
               PrecomputeOptions(io_workers=args.io_workers, progress=not args.quiet, specificity=args.specificity),
               targets=read_targets(args.targets) if args.targets else None, blacklist=args.blacklist,
               chroms=_chrom_list(args.chroms) or None,
               regions=list(read_bed_intervals(args.bed, "--bed")) if args.bed else None,
               genome_name=args.genome, shard=parse_shard(args.shard) if args.shard else None,
               dry_run=args.dry_run)


def _precompute_merge(args: argparse.Namespace) -> None:
    from epiformer.precompute import merge_tracks, merged_files

    manifest = merge_tracks(args.outdir, progress=not args.quiet, specificity=args.specificity)
    print(f"wrote {merged_files(manifest)} in {args.outdir}/tracks and {args.outdir}/manifest.json")


def _hub(args: argparse.Namespace) -> None:
    from epiformer.trackhub import HubOptions, build_hub

    options = HubOptions(email=args.email, base_url=args.base_url, assembly_hub=args.assembly_hub,
                         organism=args.organism, scientific_name=args.scientific_name, annotation=args.annotation)
    if args.name:
        options.name = args.name
    result = build_hub(args.precompute_dir, args.out, options)
    kind = "assembly hub" if result["assembly_hub"] else "hub"
    print(f"wrote the {kind} for {result['genome']} with {len(result['tracks'])} tracks: {result['hub']} "
          f"(also {', '.join(f for f in result['files'] if f != 'hub.txt')})")


def _serve(args: argparse.Namespace) -> None:
    from epiformer.server.production import hub_dir, serve
    from epiformer.server.server_config import load_config

    overrides = {"precompute_dir": args.precompute_dir, "models": args.model, "fasta": args.fa,
                 "conservation": "none" if args.no_conservation else args.seqcons, "targets": args.targets,
                 "index": args.index, "average": args.average or None, "device": args.device,
                 "precision": args.precision, "reverse_complement": False if args.no_rc else None,
                 "shifts": list(args.shifts) if args.shifts else None, "bind": f"{args.host}:{args.port}",
                 "workers": args.workers, "public_url": args.public_url, "hub_dir": args.hub_dir,
                 "allowed_hosts": args.allowed_hosts, "compile": args.compile, "annotation": args.annotation}
    cfg = load_config({k: v for k, v in overrides.items() if v is not None})
    base = cfg.public_url or f"http://{args.host}:{args.port}"
    print(f"hub         {hub_dir(cfg)}/hub.txt")
    print(f"serving     {base}/  (hub {base}/hub/hub.txt, API {base}/api/openapi.json); Ctrl-C stops it")
    serve(cfg)
    print("stopped")


def _score_variants(args: argparse.Namespace) -> None:
    from epiformer.parallel.sharded_jobs import parse_shard
    from epiformer.variants.score_job import ScoreOptions, score_variants

    options = ScoreOptions(chunk=args.chunk, progress=not args.quiet)
    result = score_variants(_model_set_options(args), args.fa, _inference_settings(args), args.vcf, args.out,
                            options, _scoring_settings(args), restart=args.restart,
                            shard=parse_shard(args.shard) if args.shard else None)
    print(f"scored {result['scored']:,} variants, skipped {result['skipped']:,} (reasons in {args.out}.skipped.tsv)"
          + (f"; resumed {result['resumed_parts']} finished part(s)" if result["resumed_parts"] else ""))
    if result["files"]:
        print("wrote " + ", ".join(str(p) for p in result["files"]))


def _calibrate(args: argparse.Namespace) -> None:
    from epiformer.inference.predictor import open_predictor
    from epiformer.variants.calibration import CalibrationError, calibrate, calibrate_on_variants, calibration_path
    from epiformer.variants.scorer import VariantScorer

    if args.background and (args.n is not None or args.blacklist):
        raise CalibrationError("-n and --blacklist shape the random SNVs; with --background the file's variants are the "
                        "background")
    with open_predictor(_model_set_options(args), args.fa, _inference_settings(args)) as predictor:
        scorer = VariantScorer(predictor, _scoring_settings(args), cache_windows=0)
        if args.background:
            calibration = calibrate_on_variants(scorer, args.background, progress=not args.quiet)
        else:
            calibration = calibrate(scorer, count=args.n or 2000, seed=args.seed, progress=not args.quiet,
                                    blacklist=args.blacklist)
        path = calibration.save(args.out or calibration_path(predictor.models.sources))
    settings = calibration.settings
    what = f"variants of {args.background}" if args.background else "random SNVs"
    median = {t: float(calibration.background["sad"][i][calibration.size // 2]) for i, t in enumerate(calibration.targets)}
    print(f"calibrated on {calibration.size:,} {what} (--score-bp {settings['score_bp']}, {settings['precision']}"
          f", reverse complement {'on' if settings['reverse_complement'] else 'off'}, shifts "
          f"{','.join(map(str, settings['shifts']))}): {path}")
    if not args.background:
        print(f"drawn from {settings['background']['allowed_bp']:,} bp on {settings['background']['chroms']} "
              "chromosome(s): positions whose whole window lies inside the chromosome, clear of N runs"
              + (" and of the blacklist" if args.blacklist else ""))
    print("median |SAD| " + "  ".join(f"{t} {v:.3g}" for t, v in median.items()))


def _interpret(args: argparse.Namespace) -> None:
    from epiformer.interpret.interpret_job import InterpretOptions, interpret_job
    from epiformer.parallel.sharded_jobs import parse_shard

    options = InterpretOptions(args.method, parse_shard(args.shard) if args.shard else (0, 1), args.restart,
                               not args.quiet)
    result = interpret_job(_model_set_options(args), args.fa, _inference_settings(args), args.out, args.bed,
                           args.top, options, _scoring_settings(args))
    if result["files"]:
        record = result["interpretation"]
        print(f"interpreted {record['regions']} region(s), {record['bases']:,} bp ({record['method']}): "
              f"{len(result['files'])} bigWigs in {args.out}/tracks, recorded in {args.out}/manifest.json")


def _ism(args: argparse.Namespace) -> None:
    from epiformer.genome.intervals import parse_region
    from epiformer.inference.predictor import open_predictor
    from epiformer.variants.mutagenesis import saturation_mutagenesis, write_ism
    from epiformer.variants.scorer import VariantScorer

    chrom, start, end = parse_region(args.region)
    with open_predictor(_model_set_options(args), args.fa, _inference_settings(args)) as predictor:
        result = saturation_mutagenesis(VariantScorer(predictor, _scoring_settings(args)), chrom, start, end,
                                        incremental=not args.full)
    files = write_ism(result, args.out)
    n = 3 * sum(base in "ACGT" for base in result.reference)
    print(f"{n:,} substitutions over {end - start:,} bp in {result.seconds:.1f} s "
          f"({n / result.seconds:.1f}/s, {'full recomputation' if args.full else 'incremental'})")
    print("wrote " + ", ".join(str(f) for f in files))


MODEL_HELP = ("checkpoint; repeat for a set, NAME= names an original checkpoint's output, or a TSV of name, "
              "checkpoint, output index")


def _add_model_set_arguments(parser: argparse.ArgumentParser,
                             targets_help: str = "targets.txt naming original checkpoints' outputs",
                             required: bool = True) -> None:
    """The arguments that name a model set: -m, and the flags that name original checkpoints' outputs."""
    parser.add_argument("-m", "--model", action="append", required=required, metavar="[NAME=]CHECKPOINT",
                        help=MODEL_HELP)
    parser.add_argument("--targets", "-t", help=targets_help)
    parser.add_argument("--index", type=int, help="row of targets.txt a single-output original checkpoint predicts")
    parser.add_argument("--average", action="store_true", help="average checkpoints that predict the same target")


def _add_scoring_arguments(parser: argparse.ArgumentParser, placement: bool = True, reading: bool = False) -> None:
    """The scoring settings' flags (epiformer.inference.settings.ScoringSettings, whose defaults they show):
    --score-bp, what a score sums; with ``placement`` --share-bins, where a variant's window is;
    with ``reading`` (variants read from a file) --max-indel and --on-mismatch."""
    group = parser.add_argument_group("scoring settings (the same for every command that scores and the server)")
    group.add_argument("--score-bp", type=int, default=ScoringSettings.score_bp,
                       help=f"score the bins within this many bp of the variant (default: {ScoringSettings.score_bp});"
                            " 0 scores every output bin, as Enformer's and basenji's SAD")
    if placement:
        group.add_argument("--share-bins", type=int, metavar="K", default=ScoringSettings.share_bins,
                           help="variants within K bins of a window's centre share that window's reference "
                                "(windows centred on every 2K+1-th bin; default: a 32nd of the model's output, "
                                "3 for the demo model, 40 for the paper's; 0 centres each variant's own window)")
    if reading:
        group.add_argument("--on-mismatch", choices=MISMATCH_RULES, default=ScoringSettings.on_mismatch,
                           help="a REF that differs from the genome: skip it, swap REF/ALT when ALT is the genome's "
                                f"base, or score ALT over the genome's bases (default: {ScoringSettings.on_mismatch})")
        group.add_argument("--max-indel", type=int, default=ScoringSettings.max_indel,
                           help=f"longest indel scored, in bp (default: {ScoringSettings.max_indel})")


def _scoring_settings(args: argparse.Namespace) -> ScoringSettings:
    """The scoring settings of the flags :func:`_add_scoring_arguments` added (the others at their defaults)."""
    names = {f.name for f in dataclasses.fields(ScoringSettings)}
    return ScoringSettings(**{name: value for name, value in vars(args).items() if name in names})


def _add_inference_arguments(parser: argparse.ArgumentParser, genome: bool = True, ensembles: bool = True,
                             defaults: bool = True) -> None:
    """The inference settings' flags (epiformer.inference.settings.InferenceSettings), the same for every
    command that predicts: the genome and its conservation, device, precision, ensembling, batch
    size, threads. ``defaults=False`` leaves unset flags None (serve: the config decides)."""
    group = parser.add_argument_group("inference settings (the same for every command and the server)")
    cons = group.add_mutually_exclusive_group()
    if genome:
        group.add_argument("--fa", "-d", required=defaults, help="genome FASTA, plain or bgzip-compressed (indexed "
                                                                   "if no .fai), or .2bit")
        cons.add_argument("--seqcons", "-s", help="conservation bigWig (phastCons) of the same assembly; a model "
                                                  "trained with conservation needs it, or --no-conservation")
    cons.add_argument("--no-conservation", action="store_true",
                      help="run a model trained with conservation without it (every base a factor of 1); recorded")
    group.add_argument("--device", default="auto" if defaults else None, help="auto, cpu, cuda or cuda:N (default: auto)")
    precision = group.add_mutually_exclusive_group()
    precision.add_argument("--precision", choices=PRECISIONS, default="fp32" if defaults else None,
                           help="fp32, or bf16 autocast (on CUDA and CPU alike; default: fp32)")
    precision.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="--precision bf16")
    if ensembles:
        group.add_argument("--no-rc", action="store_true", help="no reverse-complement ensembling")
        group.add_argument("--shifts", type=_shift_list,
                           help="shift ensembling, comma-separated bp offsets, e.g. --shifts=-2,0,2 (default: 0)")
    group.add_argument("--compile", action="store_true", default=False if defaults else None,
                       help="run the model through torch.compile: tens of seconds to start, then faster "
                            "(needs a C++ compiler on CPU; the same numbers up to float rounding)")
    if defaults:
        group.add_argument("--batch-size", type=int, default=InferenceSettings.batch_size,
                           help=f"windows per batch (default: {InferenceSettings.batch_size})")
        group.add_argument("--threads", type=int,
                           help="torch CPU threads per process (default: torch's; results are bit-identical only "
                                "for the same device type and threads)")


def _model_set_options(args: argparse.Namespace):
    """The model set of -m/--targets/--index/--average."""
    from epiformer.inference.settings import ModelSetOptions

    return ModelSetOptions(tuple(args.model), args.targets, args.index, args.average)


def _inference_settings(args: argparse.Namespace):
    """The inference settings of the flags :func:`_add_inference_arguments` added."""
    from epiformer.inference.settings import NO_CONSERVATION, InferenceSettings

    conservation = NO_CONSERVATION if getattr(args, "no_conservation", False) else getattr(args, "seqcons", None)
    return InferenceSettings(device=args.device, precision=args.precision,
                             reverse_complement=not getattr(args, "no_rc", False),
                             shifts=getattr(args, "shifts", None) or (0,), batch_size=args.batch_size,
                             conservation=conservation, threads=args.threads,
                             compile=args.compile)


def _shift_list(value: str) -> tuple[int, ...]:
    """``--shifts=-2,0,2`` -> (-2, 0, 2); argparse reports anything else as a bad value."""
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers of bp, e.g. -2,0,2; got {value!r}") from None


def _bool(value: str) -> bool:
    """A yes-or-no flag's value (:func:`~epiformer.model.config.parse_bool`); argparse reports anything else."""
    try:
        return parse_bool(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _chrom_list(value: str | None) -> list[str]:
    return [c for c in (value or "").replace(",", " ").split() if c]


def _inspect(args: argparse.Namespace) -> None:
    from epiformer.model.checkpoints import load_model

    model = load_model(args.checkpoint)
    summary = {
        "checkpoint": args.checkpoint,
        "format": model.checkpoint_format,
        "parameters": model.num_parameters(),
        "targets": model.target_names,
        "genome": model.genome,
        "code_version": model.code_version,
        "config": model.config.to_dict(),
        "metrics": model.metrics,
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=1, default=str)
        print()
        return
    cfg = model.config
    print(f"{args.checkpoint}: {summary['format']} checkpoint, {summary['parameters']:,} parameters")
    print(f"  input  {cfg.seq_len:,} bp -> {cfg.n_output_bins} bins of {cfg.bin_size} bp "
          f"(crop {cfg.crop_size} each side)")
    print(f"  model  embed {cfg.embed_size}, {cfg.num_heads} heads, {cfg.num_encoder_layers} layers, "
          f"feed-forward {cfg.dim_feedforward}, {cfg.num_cnn_layer} tower blocks")
    print(f"  targets ({len(model.target_names)}): {', '.join(model.target_names)}")
    if model.genome:
        print(f"  genome {model.genome}")
    for key, value in summary["metrics"].items():
        print(f"  {key} {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="epiformer",
        description="Predict chromatin accessibility per cell type from DNA sequence, "
                    "precompute genome-wide tracks and serve them.")
    parser.add_argument("--version", action="version", version=f"epiformer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="run the offline demo",
                          description="Write the demo genome and its tracks (as demo-data does), build "
                                      "training shards (as generate-datasets does), train the tiny model "
                                      "(as train does; a finished run is reused) and report its Pearson R "
                                      "and cell-type-specific R per cell type on the held-out test "
                                      "chromosome; score the demo VCF (how well SAD finds the disrupting "
                                      "variants, and in which cell types), precompute the genome-wide and "
                                      "specificity tracks and the contributions of the strongest peaks.",
                          epilog=EPILOG_DEMO, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("-o", "--outdir", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    demo.set_defaults(func=_demo)

    demo_data = sub.add_parser(
        "demo-data", help="write the synthetic demo genome, tracks, targets.txt and variants",
        description="Write a small genome whose per-cell-type accessibility is driven by real "
                    "JASPAR motifs: genome.fa (+ .fai), chrom.sizes, conservation.bw, blacklist.bed, "
                    "a signal bigWig and a peak BED per cell type, targets.txt, variants.vcf "
                    "(INFO/TRUTH: disrupting or neutral) and elements.bed (what was planted).",
        epilog=EPILOG_DEMO_DATA, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_data.add_argument("-o", "--outdir", required=True, help="output folder")
    demo_data.add_argument("--size-mb", type=float, default=6.0, help="total genome size in Mb (default: 6)")
    demo_data.add_argument("--chroms", type=int, default=4, help="number of chromosomes (default: 4)")
    demo_data.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo_data.set_defaults(func=_demo_data)

    gen = sub.add_parser(
        "generate-datasets", help="build training shards (HDF5) from a genome and bigWig tracks",
        description="Tile the genome in windows of --seqlen (or centre one on each --bed region), "
                    "drop windows that overlap the blacklist or hold bases other than A/C/G/T, split "
                    "them by chromosome and write HDF5 shards of --nchunk windows per split: "
                    "OUT.train.K.h5, OUT.valid.K.h5, OUT.test.K.h5 and the manifest OUT.json. "
                    "Shards finished by an interrupted run with the same parameters are kept.",
        epilog=EPILOG_GENERATE, formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--target", required=True, help="targets.txt (tab-separated, with a header)")
    gen.add_argument("--seqcons", help="conservation bigWig (phastCons); without it the shards hold no "
                     "conservation, say so, and train builds a model without it (if_cons false)")
    gen.add_argument("--fa", required=True, help="genome FASTA, plain or bgzip-compressed (indexed if no .fai), "
                                                 "or .2bit")
    gen.add_argument("--gsize", required=True, help="chromosome sizes (chrom<TAB>size)")
    gen.add_argument("--blacklist", help="BED of regions to exclude (any overlap drops a window)")
    gen.add_argument("--seqlen", type=int, default=98_304, help="window length in bp (default: 98304)")
    gen.add_argument("--binsize", type=int, default=128, help="bin size in bp (default: 128)")
    gen.add_argument("--nchunk", type=int, default=1000, help="windows per shard (default: 1000)")
    gen.add_argument("-o", "--out", required=True, metavar="OUTPREFIX", help="output prefix")
    gen.add_argument("--bed", help="regions to use instead of tiling: one window centred on each")
    gen.add_argument("--stride", type=int, help="tiling step in bp (default: seqlen, no overlap)")
    _add_split_arguments(gen)
    gen.add_argument("--max-n-frac", type=float, default=0.0,
                     help="largest fraction of non-ACGT bases a window may hold (default: 0)")
    _add_missing_argument(gen)
    gen.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                     help="parallel processes (default: up to 4)")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_generate_datasets)

    from epiformer.training.trainer import MODEL_FIELDS, TRAIN_FIELDS, setting_type

    tr = sub.add_parser(
        "train", help="train a model on generate-datasets shards (one process or under torchrun)",
        description="Train with a config file (YAML or TOML, the original's hyperparameter names) and "
                    "command-line overrides. Under torchrun every process trains a share of each "
                    "global batch (DistributedDataParallel; NCCL on GPUs, gloo on CPU). Writes "
                    "OUT.last/best_loss/best_corr.pth.tar, OUT.metrics.jsonl and OUT.learning_curves.png.",
        epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("-c", "--config", default=os.environ.get("EPIFORMER_TRAIN_CONFIG") or None,
                    help="YAML or TOML file of hyperparameters (default: $EPIFORMER_TRAIN_CONFIG when set, so the "
                         "original's command line runs unchanged with the hyperparameters its script held)")
    _add_dataset_arguments(tr)
    tr.add_argument("-o", "--out", required=True, metavar="OUTPREFIX", help="prefix of the files written")
    tr.add_argument("--index", type=int, help="train only this target (row of targets.txt, from 0)")
    tr.add_argument("--resume", action="store_true", help="continue from OUTPREFIX.last.pth.tar")
    tr.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar or epoch lines")
    hyper = tr.add_argument_group("hyperparameters (override the config file)")
    notes = {"if_cons": "scale the input by exp(conservation) (default: true when the dataset has "
                        "conservation, false when it was made without --seqcons)"}
    for name, spec in {**TRAIN_FIELDS, **MODEL_FIELDS}.items():
        kind = {"int": int, "float": float, "bool": _bool, "str": str}.get(setting_type(spec), str)
        hyper.add_argument(f"--{name}", type=kind, metavar=setting_type(spec).upper(), help=notes.get(name))
    tr.set_defaults(func=_train)

    ev = sub.add_parser(
        "evaluate", help="per-target metrics of a checkpoint on the test chromosomes",
        description="Poisson loss and Pearson R of log2(x+1) per target over every bin of a split, and the "
                    "cell-type-specific R: log2(x+1) centred across targets at each bin, correlated over the bins "
                    "where some target is at least --specific-min.",
        epilog=EPILOG_EVALUATE, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("-m", "--model", required=True, help="checkpoint (.pth.tar)")
    _add_dataset_arguments(ev)
    ev.add_argument("--split", default="test", choices=["train", "valid", "test"], help="default: test")
    ev.add_argument("--index", type=int, help="the target a single-output checkpoint predicts")
    ev.add_argument("-o", "--out", help="also write the table as TSV")
    _add_specific_min_argument(ev)
    _add_inference_arguments(ev, genome=False, ensembles=False)
    ev.set_defaults(func=_evaluate)

    pr = sub.add_parser(
        "predict", help="predicted tracks for regions (bigWig, bedGraph or TSV)",
        description="Predict every target over regions. A region no longer than one window's output is "
                    "centred in one window (the whole output is written); a longer one is tiled with "
                    "windows whose outputs abut, every window on the bin grid of the precomputed tracks. Reverse-complement "
                    "ensembling is on by default.",
        epilog=EPILOG_PREDICT, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_set_arguments(pr, targets_help="targets.txt: names original checkpoints' outputs (with --index) and adds "
                                          "Pearson R and a PNG against the observed tracks")
    pr.add_argument("-r", "--region", action="append", required=True,
                    help="chr:start-end (1-based, inclusive) or a BED file; repeatable")
    pr.add_argument("-o", "--out", required=True, metavar="OUTPREFIX")
    pr.add_argument("--format", choices=["bigwig", "bedgraph", "tsv"], default="bigwig")
    pr.add_argument("--seqlen", type=int, help="check that the model takes windows of this length")
    pr.add_argument("--binsize", type=int, help="check that the model predicts bins of this size")
    _add_missing_argument(pr)
    _add_specific_min_argument(pr)
    _add_inference_arguments(pr)
    pr.set_defaults(func=_predict)

    ps = sub.add_parser(
        "pred-signals", help="the original pred_signals.py: one region from the original's folder layout",
        description="The original pred_signals.py's command line with its meanings: -s is the species and -d the "
                    "working folder holding genome/SPECIES.fa, genome/SPECIES.phastCons.bw (optional) and "
                    "targets/SPECIES.targets.txt (or -t). The window is centred on the region (chr:start-end, "
                    "1-based); a region longer than one window's output is tiled, as predict does. Writes "
                    "OUTPRFX.SPECIES.REGION.pred_signals.tsv (one row of bins per target), "
                    "true_signals.tsv (when targets.txt lists the target), pred_rawsignals.png and "
                    "pred_log2signals.png, and the project's bigWig (OUTPRFX.SPECIES.REGION.TARGET.bw). "
                    "Prediction runs in eval mode with the project's inference settings (reverse-complement "
                    "ensembling on unless --no-rc).",
        epilog=EPILOG_PRED_SIGNALS, formatter_class=argparse.RawDescriptionHelpFormatter)
    ps.add_argument("-m", "--model", required=True, metavar="CHECKPOINT", help="path to the model checkpoint")
    ps.add_argument("-s", "--species", required=True, help="species: names genome/SPECIES.* and targets/SPECIES.*")
    ps.add_argument("-r", "--region", required=True, help="genomic region chr:start-end (1-based, inclusive)")
    ps.add_argument("-d", "--path2dir", default=".", metavar="DIR", help="the working folder (default: .)")
    ps.add_argument("-t", "--target", help="targets.txt (default: DIR/targets/SPECIES.targets.txt when present)")
    ps.add_argument("--index", type=int, help="row of targets.txt: names a single-output checkpoint's output, or "
                                              "picks the output written from a multi-output one")
    ps.add_argument("--seqlen", type=int, help="check that the model takes windows of this length")
    ps.add_argument("--binsize", type=int, help="check that the model predicts bins of this size")
    ps.add_argument("-o", "--outprfx", required=True, metavar="OUTPRFX", help="output prefix")
    _add_inference_arguments(ps, genome=False)
    ps.set_defaults(func=_pred_signals)

    pc = sub.add_parser(
        "precompute", help="predict every target genome-wide: one bigWig per target (sharded, resumable)",
        description="Tile every chromosome (or --chroms, --bed) with windows whose cropped outputs abut, "
                    "predict them in batches while worker processes read the genome, "
                    "and store results per shard in OUTDIR/shards (a killed run resumes where it "
                    "stopped). Then merge them into OUTDIR/tracks/TARGET.bw and OUTDIR/manifest.json. "
                    "Under torchrun each process is one shard and rank 0 merges; --shard I/N runs one "
                    "shard (job arrays) and precompute-merge joins them. Bins in N gaps or overlapping "
                    "the blacklist get no data.",
        epilog=EPILOG_PRECOMPUTE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_set_arguments(pc, targets_help="targets.txt: names and describes the tracks")
    pc.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder")
    pc.add_argument("--blacklist", help="BED: bins overlapping it get no data")
    pc.add_argument("--chroms", help="only these chromosomes, comma-separated (default: all in the FASTA)")
    pc.add_argument("--bed", help="only windows whose output overlaps these regions (BED)")
    pc.add_argument("--genome", help="assembly name for the manifest and hub, e.g. hg38 (default: FASTA name)")
    pc.add_argument("--shard", metavar="I/N", help="run shard I of N (0-based), e.g. $SLURM_ARRAY_TASK_ID/16")
    _add_specificity_argument(pc)
    pc.add_argument("--dry-run", action="store_true",
                    help="print the number of windows and a projected run time from a short timing; write nothing")
    pc.add_argument("--io-workers", type=int,
                    help="processes reading the genome (default: 2 on CUDA; 0 on CPU, where compute uses every core)")
    pc.add_argument("--seqlen", type=int, help="check that the model takes windows of this length")
    pc.add_argument("--binsize", type=int, help="check that the model predicts bins of this size")
    _add_inference_arguments(pc)
    pc.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pc.set_defaults(func=_precompute)

    merge = sub.add_parser("precompute-merge", help="merge the finished shards of a precompute folder",
                           description="Check that every shard of OUTDIR is finished, then write one bigWig "
                                       "per target and manifest.json (identical whatever the shard count).",
                           epilog=EPILOG_MERGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    merge.add_argument("outdir", help="the -o folder of epiformer precompute")
    merge.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_specificity_argument(merge)
    merge.set_defaults(func=_precompute_merge)

    hub = sub.add_parser(
        "hub", help="write a UCSC/IGV track hub from a precompute folder",
        description="Write hub.txt (single-file form, useOneFile on: the URL for UCSC and igv.js), the classic "
                    "hub.multi.txt + genomes.txt + GENOME/trackDb.txt, description.html, the tracks (hard links "
                    "named by content), the genome as .2bit, chrom.sizes and FASTA, and igv.js / IGV desktop "
                    "sessions. Genomes UCSC does not host get an assembly hub.",
        epilog=EPILOG_HUB, formatter_class=argparse.RawDescriptionHelpFormatter)
    hub.add_argument("precompute_dir", help="the -o folder of epiformer precompute")
    hub.add_argument("-o", "--out", required=True, metavar="HUBDIR", help="output folder")
    hub.add_argument("--base-url", help="absolute URL HUBDIR will be served from (default: relative URLs)")
    hub.add_argument("--email", default="epiformer-hub@example.org", help="contact shown by UCSC")
    hub.add_argument("--name", help="hub and track name prefix (default: epiformer)")
    kind = hub.add_mutually_exclusive_group()
    kind.add_argument("--assembly-hub", dest="assembly_hub", action="store_true", default=None,
                      help="always write an assembly hub (the genome's sequence in the hub)")
    kind.add_argument("--ucsc-genome", dest="assembly_hub", action="store_false",
                      help="the genome is one UCSC hosts under the manifest's genome name")
    hub.add_argument("--organism", help="organism shown by UCSC for an assembly hub")
    hub.add_argument("--scientific-name", help="scientific name for an assembly hub")
    hub.add_argument("--annotation", metavar="GENES", help="a GTF (exons and CDS by transcript_id) or BED of genes "
                     "or elements, added as a bigBed track beside the predictions")
    hub.set_defaults(func=_hub)

    serve = sub.add_parser(
        "serve", help="serve the hub, tracks, genome and API (gunicorn + Flask)",
        description="Build the hub of PRECOMPUTE_DIR when it has none (or an outdated one), then run the "
                    "Flask app under gunicorn: the hub's files with byte ranges, the JSON API (/api/...) "
                    "and the page. Settings may also come from EPIFORMER_* variables (server/config.py); "
                    "the genome and conservation track default to the ones precompute used, the other "
                    "inference settings to the same defaults as every command.",
        epilog=EPILOG_SERVE, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("precompute_dir", help="the -o folder of epiformer precompute")
    _add_model_set_arguments(serve, required=False)
    _add_inference_arguments(serve, defaults=False)
    serve.add_argument("--hub-dir", help="hub folder (default: PRECOMPUTE_DIR/hub)")
    serve.add_argument("--annotation", metavar="GENES", help="a GTF or BED of genes for the hub and the page "
                       "(as epiformer hub --annotation)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per GPU, or 2)")
    serve.add_argument("--public-url", help="URL users reach the server at, for the hub links")
    serve.add_argument("--allowed-hosts", help="host names (comma-separated) whose requests may choose the links "
                                               "when there is no --public-url (default: --host and localhost)")
    serve.set_defaults(func=_serve)

    sv = sub.add_parser(
        "score-variants", help="effect scores of the variants of a VCF or TSV, per target",
        description="Score every variant (SNVs and indels; multi-allelic records split) in a window around it: "
                    "per target the sums of the reference and alternate predictions over the bins within "
                    "--score-bp, SAD, log2FC, the bin of largest change, D1 and D2. Writes OUT.tsv, OUT.h5, "
                    "OUT.skipped.tsv (line and reason of every variant not scored) and, for a VCF, OUT.vcf with "
                    "INFO fields. Work is saved in OUT.parts as it goes; rerunning resumes.",
        epilog=EPILOG_SCORE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_set_arguments(sv)
    sv.add_argument("--vcf", required=True, help="VCF (.vcf or .vcf.gz) or TSV (chrom, pos, ref, alt[, id])")
    sv.add_argument("-o", "--out", required=True, metavar="OUTPREFIX")
    _add_scoring_arguments(sv, reading=True)
    sv.add_argument("--restart", action="store_true", help="discard saved parts of a different earlier run")
    sv.add_argument("--chunk", type=int, default=512, help="input records per saved part (default: 512)")
    sv.add_argument("--shard", metavar="I/N", help="score chunks I, I+N, ... (job arrays); under torchrun, ranks are shards")
    _add_inference_arguments(sv)
    sv.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sv.set_defaults(func=_score_variants)

    cal = sub.add_parser(
        "calibrate", help="score a background of variants once so variant scores come with percentiles",
        description="Score a background and store, per target and score, its sorted absolute and signed values "
                    "beside the first checkpoint (CHECKPOINT.calibration.npz). The background is N random "
                    "single-base substitutions, drawn uniformly over the positions whose whole model window lies "
                    "inside a chromosome and clear of N runs and of --blacklist, or the variants of "
                    "--background FILE (common variants, say; read as a stream). score-variants and the server "
                    "then report each score's percentile and signed quantile against it (for the same settings).",
        epilog="examples:\n  epiformer calibrate -m demo_out/runs/demo.best_corr.pth.tar --fa demo_out/data/genome.fa "
               "--seqcons demo_out/data/conservation.bw -n 2000 --blacklist demo_out/data/blacklist.bed\n"
               "  epiformer calibrate -m brain.pth.tar --fa hg38.fa --seqcons hg38.phastCons100way.bw "
               "--background gnomad.common_snvs.vcf.gz\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_set_arguments(cal)
    cal.add_argument("-n", type=int, help="random SNVs (default: 2000)")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--blacklist", help="BED of regions random SNVs keep a window's length away from")
    cal.add_argument("--background", metavar="VARIANTS", help="VCF (.vcf or .vcf.gz) or TSV of the variants to "
                     "calibrate on instead of random SNVs, e.g. common SNVs of gnomAD")
    _add_scoring_arguments(cal)
    cal.add_argument("-o", "--out", help="calibration file (default: beside the first checkpoint)")
    _add_inference_arguments(cal)
    cal.add_argument("-q", "--quiet", action="store_true")
    cal.set_defaults(func=_calibrate)

    ip = sub.add_parser(
        "interpret", help="per-base contribution (and mutagenesis) tracks of regions, into a precompute folder",
        description="For each region of --bed (or the --top N strongest predicted peaks of DIR's tracks) and "
                    "target: gradient x input of the target's signal over the bins the region covers (--method "
                    "grad), or the mean effect of mutating each base through the incremental tower (--method ism, "
                    "which also writes one bigWig per alternate base and the largest |effect|). Writes "
                    "DIR/tracks/TARGET.contrib.bw (and TARGET.ism_A..T, ism_max) at 1 bp and records them in "
                    "DIR/manifest.json. Sharded and resumable like precompute.",
        epilog="examples:\n  epiformer interpret -m demo_out/runs/demo.best_corr.pth.tar --fa demo_out/data/genome.fa "
               "--seqcons demo_out/data/conservation.bw --bed peaks.bed -o demo_out/precompute\n"
               "  epiformer interpret -m brain.pth.tar --fa hg38.fa --seqcons cons.bw --top 1000 --method ism "
               "-o precomputed/ --shard 0/8\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_set_arguments(ip)
    where = ip.add_mutually_exclusive_group(required=True)
    where.add_argument("--bed", help="regions (each at most one window's output and 5,000 bp)")
    where.add_argument("--top", type=int, help="the N strongest predicted peaks of DIR's tracks, 500 bp each")
    ip.add_argument("-o", "--out", required=True, metavar="DIR", help="the precompute folder to add the tracks to")
    ip.add_argument("--method", choices=["grad", "ism"], default="grad", help="default: grad")
    ip.add_argument("--shard", metavar="I/N", help="interpret the I-th of N parts (0-based); torchrun's ranks too")
    ip.add_argument("--restart", action="store_true", help="discard another run's finished parts")
    _add_scoring_arguments(ip, placement=False)
    _add_inference_arguments(ip)
    ip.add_argument("-q", "--quiet", action="store_true")
    ip.set_defaults(func=_interpret)

    ism = sub.add_parser(
        "ism", help="saturation mutagenesis of a region: every position to each other base",
        description="Predict every single-base substitution in a region (at most 5,000 bp and one window's "
                    "output) against one reference prediction; the effect is the SAD over the bins within "
                    "--score-bp of the position, per target. Writes OUT.h5, OUT.tsv and a heatmap per target "
                    "(OUT.TARGET.png). By default only the tower columns a changed base reaches are recomputed "
                    "(exact); --full recomputes whole windows.",
        epilog="examples:\n  epiformer ism -m demo_out/runs/demo.best_corr.pth.tar --fa demo_out/data/genome.fa "
               "--seqcons demo_out/data/conservation.bw -r chr4:100,001-100,300 -o demo_out/ism\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_set_arguments(ism)
    ism.add_argument("-r", "--region", required=True, help="chr:start-end, 1-based inclusive")
    ism.add_argument("-o", "--out", required=True, metavar="OUTPREFIX")
    _add_scoring_arguments(ism, placement=False)
    ism.add_argument("--full", action="store_true", help="recompute whole windows (slower; same result)")
    _add_inference_arguments(ism)
    ism.set_defaults(func=_ism)

    inspect = sub.add_parser("inspect", help="describe a checkpoint (original or project format)",
                             description="Print a checkpoint's configuration, targets and metrics.",
                             epilog=EPILOG_INSPECT, formatter_class=argparse.RawDescriptionHelpFormatter)
    inspect.add_argument("checkpoint", help=".pth.tar file")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(func=_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors print one line and exit with status 2."""
    from epiformer.errors import UserError

    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except UserError as err:
        print(f"epiformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"epiformer {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0

