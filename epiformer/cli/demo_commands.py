"""``epiformer demo`` and ``epiformer demo-data``: the offline demo and its synthetic genome."""
from __future__ import annotations

import argparse


EPILOG_DEMO = """examples:
  epiformer demo -o demo_out
  epiformer demo -o demo_out --device cpu --seed 3
"""


EPILOG_DEMO_DATA = """examples:
  epiformer demo-data -o demo_data
  epiformer demo-data -o big_demo --size-mb 20 --chroms 6 --seed 7
"""


def _demo(args: argparse.Namespace) -> None:
    from epiformer.demo.demo_pipeline import run_demo

    run_demo(args.outdir, seed=args.seed, device=args.device)


def _demo_data(args: argparse.Namespace) -> None:
    from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data

    paths = make_demo_data(args.outdir, DemoSpec.scaled(args.size_mb, args.chroms, args.seed))
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
    demo_data.set_defaults(func=_demo_data)
