"""The ``epiformer`` command. Each subcommand parses its arguments and calls one library function."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from . import __version__

EPILOG_DEMO = """examples:
  epiformer demo -o demo_out
  epiformer demo -o demo_out --device cpu --seed 3
"""

EPILOG_INSPECT = """examples:
  epiformer inspect MGC.model.best_loss.pth.tar
  epiformer inspect run1.best_corr.pth.tar --json
"""


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.outdir, seed=args.seed, device=args.device)


def _inspect(args: argparse.Namespace) -> None:
    from .checkpoint import load_model

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
                          description="Write a small random genome and conservation track, build the "
                                      "tiny model and predict one window, printing the shapes.",
                          epilog=EPILOG_DEMO, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("-o", "--outdir", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    demo.set_defaults(func=_demo)

    inspect = sub.add_parser("inspect", help="describe a checkpoint (original or project format)",
                             description="Print a checkpoint's configuration, targets and metrics.",
                             epilog=EPILOG_INSPECT, formatter_class=argparse.RawDescriptionHelpFormatter)
    inspect.add_argument("checkpoint", help=".pth.tar file")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(func=_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors print one line and exit with status 2."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .files import OutputError
    from .genome import GenomeError

    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (CheckpointError, ConfigError, GenomeError, OutputError) as err:
        print(f"epiformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"epiformer {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
