"""``epiformer demo`` and ``epiformer demo-data``: the offline demo and its synthetic genome."""
from __future__ import annotations

import argparse
import inspect

from epiformer.cli.arguments import positive_float
from epiformer.demo.grammar import drawn_grammar
from epiformer.demo.synthetic_genome import DEPTH


EPILOG_DEMO = """examples:
  epiformer demo -o demo_out
  epiformer demo -o demo_out --device cpu --seed 3
"""


EPILOG_DEMO_DATA = """examples:
  epiformer demo-data -o demo_data
  epiformer demo-data -o big_demo --size-mb 20 --chroms 6 --seed 7
  epiformer demo-data -o other --grammar drawn --cell-types 6 --sites-needed 3 --depth 10 --peak-scale 0.6

A drawn grammar (--grammar drawn) takes its cell types' factors from the packaged JASPAR
matrices with --seed: each cell type has factors of its own too weak to open an element alone,
one factor is shared by all, and two distinct factors within --spacing bp act together.
"""


def _demo(args: argparse.Namespace) -> None:
    from epiformer.demo.demo_pipeline import run_demo

    run_demo(args.outdir, seed=args.seed, device=args.device)


DRAWN_OPTIONS = ("cell_types", "factors_per_cell_type", "sites_needed", "spacing")   # drawn_grammar's
DRAWN_DEFAULTS = {name: inspect.signature(drawn_grammar).parameters[name].default for name in DRAWN_OPTIONS}


def _demo_data(args: argparse.Namespace) -> None:
    from epiformer.demo.grammar import BRAIN
    from epiformer.errors import UserError
    from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data

    design = {name: getattr(args, name) for name in DRAWN_OPTIONS if getattr(args, name) is not None}
    if args.grammar == "demo" and design:
        raise UserError(", ".join("--" + name.replace("_", "-") for name in design)
                        + " shape a drawn grammar: add --grammar drawn")
    grammar = BRAIN if args.grammar == "demo" else drawn_grammar(args.seed, **design)
    paths = make_demo_data(args.outdir, DemoSpec.scaled(args.size_mb, args.chroms, args.seed, grammar=grammar,
                                                        depth=args.depth, peak_scale=args.peak_scale))
    print(f"wrote the demo genome and tracks to {args.outdir}: "
          + ", ".join(p.name for p in paths.values()) + ", one .bw and .peaks.bed per cell type")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``epiformer`` parser."""
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
    design = demo_data.add_argument_group("genome design")
    design.add_argument("--grammar", choices=["demo", "drawn"], default="demo",
                        help="the demo's brain cell types and factors, or a grammar drawn with --seed (default: demo)")
    design.add_argument("--cell-types", type=int, choices=range(3, 13), metavar="3-12",
                        help=f"cell types of a drawn grammar (default: {DRAWN_DEFAULTS['cell_types']})")
    design.add_argument("--factors-per-cell-type", type=int, choices=range(1, 5), metavar="1-4",
                        help="factors of each cell type's own in a drawn grammar "
                             f"(default: {DRAWN_DEFAULTS['factors_per_cell_type']})")
    design.add_argument("--sites-needed", type=int, choices=[2, 3],
                        help="sites of a cell type's factors an element needs to open, unless two distinct "
                             f"ones lie within --spacing (drawn grammar; default: {DRAWN_DEFAULTS['sites_needed']})")
    design.add_argument("--spacing", type=int, choices=range(0, 151), metavar="0-150",
                        help="bp within which two distinct factors act together; 0: anywhere in the element "
                             f"(drawn grammar; default: {DRAWN_DEFAULTS['spacing']})")
    design.add_argument("--depth", type=positive_float, default=DEPTH,
                        help=f"read depth of the tracks' count noise; lower is noisier (default: {DEPTH:g})")
    design.add_argument("--peak-scale", type=positive_float, default=1.0,
                        help="peak heights relative to the background; lower is weaker (default: 1)")
    demo_data.set_defaults(func=_demo_data)
