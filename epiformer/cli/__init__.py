"""The ``epiformer`` command: one module per command group, each registering its subcommands
(argument parsing only; every command calls one library function)."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from epiformer import __version__
from epiformer.cli import (
    demo_commands,
    interpret_commands,
    precompute_commands,
    prediction_commands,
    serving_commands,
    training_commands,
    variant_commands,
)
from epiformer.errors import UserError

GROUPS = (demo_commands, training_commands, prediction_commands, precompute_commands, serving_commands,
          variant_commands, interpret_commands)


def build_parser() -> argparse.ArgumentParser:
    """The ``epiformer`` parser with every command group's subcommands."""
    parser = argparse.ArgumentParser(
        prog="epiformer",
        description="Predict chromatin accessibility per cell type from DNA sequence, "
                    "precompute genome-wide tracks and serve them.")
    parser.add_argument("--version", action="version", version=f"epiformer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors print one line and exit with status 2."""
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
