"""``precompute`` and ``precompute-merge``: genome-wide tracks, sharded and resumable."""
from __future__ import annotations

import argparse

from epiformer.cli.arguments import (
    add_inference_arguments,
    add_model_set_arguments,
    chrom_list,
    inference_settings,
    model_set_options,
)


def _add_specificity_argument(parser: argparse.ArgumentParser) -> None:
    """--specificity: the merge also writes each target's difference from the mean (precompute, precompute-merge)."""
    parser.add_argument("--specificity", action="store_true",
                        help="also write tracks/TARGET.specificity.bw: log2(x+1) of each target minus its mean over "
                             "all targets, per bin (where a cell type differs from the rest; the hub and the page "
                             "show them)")


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


def _precompute(args: argparse.Namespace) -> None:
    from epiformer.genome.intervals import read_bed_intervals
    from epiformer.genome.targets import read_targets
    from epiformer.model.config import check_window_flags
    from epiformer.parallel.sharded_jobs import parse_shard
    from epiformer.precompute import PrecomputeOptions, precompute

    models = model_set_options(args).load()
    check_window_flags(models.config, args.seqlen, args.binsize)
    precompute(models, args.fa, args.out, inference_settings(args),
               PrecomputeOptions(io_workers=args.io_workers, progress=not args.quiet, specificity=args.specificity),
               targets=read_targets(args.targets) if args.targets else None, blacklist=args.blacklist,
               chroms=chrom_list(args.chroms) or None,
               regions=list(read_bed_intervals(args.bed, "--bed")) if args.bed else None,
               genome_name=args.genome, shard=parse_shard(args.shard) if args.shard else None,
               dry_run=args.dry_run)


def _precompute_merge(args: argparse.Namespace) -> None:
    from epiformer.precompute import merge_tracks, merged_files

    manifest = merge_tracks(args.outdir, progress=not args.quiet, specificity=args.specificity)
    print(f"wrote {merged_files(manifest)} in {args.outdir}/tracks and {args.outdir}/manifest.json")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``epiformer`` parser."""
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
    add_model_set_arguments(pc, targets_help="targets.txt: names and describes the tracks")
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
    add_inference_arguments(pc)
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
