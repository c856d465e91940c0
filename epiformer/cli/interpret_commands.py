"""``interpret``: contribution and mutagenesis tracks of regions."""
from __future__ import annotations

import argparse

from epiformer.cli.arguments import (
    add_inference_arguments,
    add_model_set_arguments,
    add_scoring_arguments,
    inference_settings,
    model_set_options,
    scoring_settings,
)


def _interpret(args: argparse.Namespace) -> None:
    from epiformer.interpret.interpret_job import InterpretOptions, interpret_job
    from epiformer.parallel.sharded_jobs import parse_shard

    options = InterpretOptions(args.method, parse_shard(args.shard) if args.shard else (0, 1), args.restart,
                               not args.quiet)
    result = interpret_job(model_set_options(args), args.fa, inference_settings(args), args.out, args.bed,
                           args.top, options, scoring_settings(args))
    if result["files"]:
        record = result["interpretation"]
        print(f"interpreted {record['regions']} region(s), {record['bases']:,} bp ({record['method']}): "
              f"{len(result['files'])} bigWigs in {args.out}/tracks, recorded in {args.out}/manifest.json")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``epiformer`` parser."""
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
    add_model_set_arguments(ip)
    where = ip.add_mutually_exclusive_group(required=True)
    where.add_argument("--bed", help="regions (each at most one window's output and 5,000 bp)")
    where.add_argument("--top", type=int, help="the N strongest predicted peaks of DIR's tracks, 500 bp each")
    ip.add_argument("-o", "--out", required=True, metavar="DIR", help="the precompute folder to add the tracks to")
    ip.add_argument("--method", choices=["grad", "ism"], default="grad", help="default: grad")
    ip.add_argument("--shard", metavar="I/N", help="interpret the I-th of N parts (0-based); torchrun's ranks too")
    ip.add_argument("--restart", action="store_true", help="discard another run's finished parts")
    add_scoring_arguments(ip, placement=False)
    add_inference_arguments(ip)
    ip.add_argument("-q", "--quiet", action="store_true")
    ip.set_defaults(func=_interpret)
