"""Flag groups shared by several commands, each added by one helper, and the settings objects
read back from them."""
from __future__ import annotations

import argparse
import dataclasses

from epiformer.inference.settings import MISMATCH_RULES, PRECISIONS, InferenceSettings, ScoringSettings


def add_specific_min_argument(parser: argparse.ArgumentParser) -> None:
    """--specific-min: which bins the cell-type-specific R covers (evaluate, predict -t)."""
    from epiformer.training.metrics import SPECIFIC_MIN

    parser.add_argument("--specific-min", type=float, default=SPECIFIC_MIN, metavar="X",
                        help="the cell-type-specific R (log2(x+1) centred across targets per bin) covers bins where "
                             f"some target's observed value is at least X (default: {SPECIFIC_MIN:g}, in the "
                             "targets' units)")


def add_missing_argument(parser: argparse.ArgumentParser) -> None:
    """--missing: how bigWig bases without data count in observed per-bin values."""
    parser.add_argument("--missing", choices=["zero", "nan"], default="zero",
                        help="bigWig bases without data count as 0 (default; the deepTools and basenji "
                             "convention, so tracks that omit zero-coverage stretches bin like ones that write "
                             "them) or are left out of their bin (nan; a bin without any data is masked)")


MODEL_HELP = ("checkpoint; repeat for a set, NAME= names an original checkpoint's output, or a TSV of name, "
              "checkpoint, output index")


def add_model_set_arguments(parser: argparse.ArgumentParser,
                             targets_help: str = "targets.txt naming original checkpoints' outputs",
                             required: bool = True) -> None:
    """The arguments that name a model set: -m, and the flags that name original checkpoints' outputs."""
    parser.add_argument("-m", "--model", action="append", required=required, metavar="[NAME=]CHECKPOINT",
                        help=MODEL_HELP)
    parser.add_argument("--targets", "-t", help=targets_help)
    parser.add_argument("--index", type=int, help="row of targets.txt a single-output original checkpoint predicts")
    parser.add_argument("--average", action="store_true", help="average checkpoints that predict the same target")


def add_scoring_arguments(parser: argparse.ArgumentParser, placement: bool = True, reading: bool = False) -> None:
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


def scoring_settings(args: argparse.Namespace) -> ScoringSettings:
    """The scoring settings of the flags :func:`add_scoring_arguments` added (the others at their defaults)."""
    names = {f.name for f in dataclasses.fields(ScoringSettings)}
    return ScoringSettings(**{name: value for name, value in vars(args).items() if name in names})


def add_inference_arguments(parser: argparse.ArgumentParser, genome: bool = True, ensembles: bool = True,
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
        group.add_argument("--shifts", type=shift_list,
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


def model_set_options(args: argparse.Namespace):
    """The model set of -m/--targets/--index/--average."""
    from epiformer.inference.settings import ModelSetOptions

    return ModelSetOptions(tuple(args.model), args.targets, args.index, args.average)


def inference_settings(args: argparse.Namespace):
    """The inference settings of the flags :func:`add_inference_arguments` added."""
    from epiformer.inference.settings import NO_CONSERVATION, InferenceSettings

    conservation = NO_CONSERVATION if getattr(args, "no_conservation", False) else getattr(args, "seqcons", None)
    return InferenceSettings(device=args.device, precision=args.precision,
                             reverse_complement=not getattr(args, "no_rc", False),
                             shifts=getattr(args, "shifts", None) or (0,), batch_size=args.batch_size,
                             conservation=conservation, threads=args.threads,
                             compile=args.compile)


def shift_list(value: str) -> tuple[int, ...]:
    """``--shifts=-2,0,2`` -> (-2, 0, 2); argparse reports anything else as a bad value."""
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers of bp, e.g. -2,0,2; got {value!r}") from None


def chrom_list(value: str | None) -> list[str]:
    return [c for c in (value or "").replace(",", " ").split() if c]


def positive_float(value: str) -> float:
    """An argparse type: a number above 0."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value!r}")
    return number
