"""``predict`` and ``pred-signals``: predicted tracks of regions, the second in the
original's form."""
from __future__ import annotations

import argparse
import dataclasses

from epiformer.cli.arguments import (
    add_inference_arguments,
    add_missing_argument,
    add_model_set_arguments,
    add_specific_min_argument,
    inference_settings,
    model_set_options,
)


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


def _predict(args: argparse.Namespace) -> None:
    from epiformer.inference.predictor import open_predictor
    from epiformer.inference.regions import predict_regions, read_regions_arg
    from epiformer.model.config import check_window_flags

    with open_predictor(model_set_options(args), args.fa, inference_settings(args)) as predictor:
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
    settings = inference_settings(args)
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``epiformer`` parser."""
    pr = sub.add_parser(
        "predict", help="predicted tracks for regions (bigWig, bedGraph or TSV)",
        description="Predict every target over regions. A region no longer than one window's output is "
                    "centred in one window (the whole output is written); a longer one is tiled with "
                    "windows whose outputs abut, every window on the bin grid of the precomputed tracks. Reverse-complement "
                    "ensembling is on by default.",
        epilog=EPILOG_PREDICT, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_set_arguments(pr, targets_help="targets.txt: names original checkpoints' outputs (with --index) and adds "
                                          "Pearson R and a PNG against the observed tracks")
    pr.add_argument("-r", "--region", action="append", required=True,
                    help="chr:start-end (1-based, inclusive) or a BED file; repeatable")
    pr.add_argument("-o", "--out", required=True, metavar="OUTPREFIX")
    pr.add_argument("--format", choices=["bigwig", "bedgraph", "tsv"], default="bigwig")
    pr.add_argument("--seqlen", type=int, help="check that the model takes windows of this length")
    pr.add_argument("--binsize", type=int, help="check that the model predicts bins of this size")
    add_missing_argument(pr)
    add_specific_min_argument(pr)
    add_inference_arguments(pr)
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
    add_inference_arguments(ps, genome=False)
    ps.set_defaults(func=_pred_signals)
