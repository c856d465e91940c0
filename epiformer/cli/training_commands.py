"""``generate-datasets``, ``train``, ``evaluate`` and ``inspect``: training data, training,
held-out metrics and describing a checkpoint."""
from __future__ import annotations

import argparse
import json
import os
import sys

from epiformer.cli.arguments import (
    add_inference_arguments,
    add_missing_argument,
    add_specific_min_argument,
    chrom_list,
    inference_settings,
)
from epiformer.model.config import parse_bool


def _split_options(args: argparse.Namespace):
    from epiformer.training.datasets import SplitOptions

    return SplitOptions(chrom_list(args.valid_chroms), chrom_list(args.test_chroms), args.fa, args.targets)


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


def _bool(value: str) -> bool:
    """A yes-or-no flag's value (:func:`~epiformer.model.config.parse_bool`); argparse reports anything else."""
    try:
        return parse_bool(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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


EPILOG_INSPECT = """examples:
  epiformer inspect MGC.model.best_loss.pth.tar
  epiformer inspect run1.best_corr.pth.tar --json
"""


def _generate_datasets(args: argparse.Namespace) -> None:
    from epiformer.training.datasets import DatasetParameters, generate_datasets

    params = DatasetParameters(
        fasta=args.fa, conservation=args.seqcons, chrom_sizes=args.gsize, targets=args.target,
        blacklist=args.blacklist, bed=args.bed, seq_len=args.seqlen, bin_size=args.binsize,
        stride=args.stride, nchunk=args.nchunk, max_n_frac=args.max_n_frac, missing=args.missing,
        valid_chroms=chrom_list(args.valid_chroms), test_chroms=chrom_list(args.test_chroms))
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

    rows = evaluate(args.model, args.input, split=args.split, out=args.out, settings=inference_settings(args),
                    index=args.index, split_options=_split_options(args), specific_min=args.specific_min)
    print(f"{'target':<10} {'pearson_log2':>12} {'specific_r':>10} {'poisson_loss':>12} {'bins':>9} "
          f"{'specific_bins':>13} {'nan_bins':>8}")
    for row in rows:
        print(f"{row['target']:<10} {row['pearson_log2']:>12.4f} {row['specific_r']:>10.4f} "
              f"{row['poisson_loss']:>12.4f} {row['bins']:>9,} {row['specific_bins']:>13,} {row['nan_bins']:>8,}")
    if args.out:
        print(f"wrote {args.out}")


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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``epiformer`` parser."""
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
    add_missing_argument(gen)
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
    add_specific_min_argument(ev)
    add_inference_arguments(ev, genome=False, ensembles=False)
    ev.set_defaults(func=_evaluate)

    inspect = sub.add_parser("inspect", help="describe a checkpoint (original or project format)",
                             description="Print a checkpoint's configuration, targets and metrics.",
                             epilog=EPILOG_INSPECT, formatter_class=argparse.RawDescriptionHelpFormatter)
    inspect.add_argument("checkpoint", help=".pth.tar file")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(func=_inspect)
