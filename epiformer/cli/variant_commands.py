"""``score-variants``, ``calibrate`` and ``ism``: variant effects, their calibration and
saturation mutagenesis."""
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


EPILOG_SCORE = """examples:
  epiformer score-variants -m demo_out/runs/demo.best_corr.pth.tar --fa demo_out/data/genome.fa \\
      --seqcons demo_out/data/conservation.bw --vcf demo_out/data/variants.vcf -o demo_out/variants
  epiformer score-variants -m MGC=MGC.best_loss.pth.tar -m OPC=OPC.best_loss.pth.tar --fa hg38.fa \\
      --seqcons hg38.phastCons100way.bw --vcf gwas.vcf.gz -o gwas_scores --on-mismatch swap
"""


def _score_variants(args: argparse.Namespace) -> None:
    from epiformer.parallel.sharded_jobs import parse_shard
    from epiformer.variants.score_job import ScoreOptions, score_variants

    options = ScoreOptions(chunk=args.chunk, progress=not args.quiet)
    result = score_variants(model_set_options(args), args.fa, inference_settings(args), args.vcf, args.out,
                            options, scoring_settings(args), restart=args.restart,
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
    with open_predictor(model_set_options(args), args.fa, inference_settings(args)) as predictor:
        scorer = VariantScorer(predictor, scoring_settings(args), cache_windows=0)
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


def _ism(args: argparse.Namespace) -> None:
    from epiformer.genome.intervals import parse_region
    from epiformer.inference.predictor import open_predictor
    from epiformer.variants.mutagenesis import saturation_mutagenesis, write_ism
    from epiformer.variants.scorer import VariantScorer

    chrom, start, end = parse_region(args.region)
    with open_predictor(model_set_options(args), args.fa, inference_settings(args)) as predictor:
        result = saturation_mutagenesis(VariantScorer(predictor, scoring_settings(args)), chrom, start, end,
                                        incremental=not args.full)
    files = write_ism(result, args.out)
    n = 3 * sum(base in "ACGT" for base in result.reference)
    print(f"{n:,} substitutions over {end - start:,} bp in {result.seconds:.1f} s "
          f"({n / result.seconds:.1f}/s, {'full recomputation' if args.full else 'incremental'})")
    print("wrote " + ", ".join(str(f) for f in files))


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``epiformer`` parser."""
    sv = sub.add_parser(
        "score-variants", help="effect scores of the variants of a VCF or TSV, per target",
        description="Score every variant (SNVs and indels; multi-allelic records split) in a window around it: "
                    "per target the sums of the reference and alternate predictions over the bins within "
                    "--score-bp, SAD, log2FC, the bin of largest change, D1 and D2. Writes OUT.tsv, OUT.h5, "
                    "OUT.skipped.tsv (line and reason of every variant not scored) and, for a VCF, OUT.vcf with "
                    "INFO fields. Work is saved in OUT.parts as it goes; rerunning resumes.",
        epilog=EPILOG_SCORE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_set_arguments(sv)
    sv.add_argument("--vcf", required=True, help="VCF (.vcf or .vcf.gz) or TSV (chrom, pos, ref, alt[, id])")
    sv.add_argument("-o", "--out", required=True, metavar="OUTPREFIX")
    add_scoring_arguments(sv, reading=True)
    sv.add_argument("--restart", action="store_true", help="discard saved parts of a different earlier run")
    sv.add_argument("--chunk", type=int, default=512, help="input records per saved part (default: 512)")
    sv.add_argument("--shard", metavar="I/N", help="score chunks I, I+N, ... (job arrays); under torchrun, ranks are shards")
    add_inference_arguments(sv)
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
    add_model_set_arguments(cal)
    cal.add_argument("-n", type=int, help="random SNVs (default: 2000)")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--blacklist", help="BED of regions random SNVs keep a window's length away from")
    cal.add_argument("--background", metavar="VARIANTS", help="VCF (.vcf or .vcf.gz) or TSV of the variants to "
                     "calibrate on instead of random SNVs, e.g. common SNVs of gnomAD")
    add_scoring_arguments(cal)
    cal.add_argument("-o", "--out", help="calibration file (default: beside the first checkpoint)")
    add_inference_arguments(cal)
    cal.add_argument("-q", "--quiet", action="store_true")
    cal.set_defaults(func=_calibrate)

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
    add_model_set_arguments(ism)
    ism.add_argument("-r", "--region", required=True, help="chr:start-end, 1-based inclusive")
    ism.add_argument("-o", "--out", required=True, metavar="OUTPREFIX")
    add_scoring_arguments(ism, placement=False)
    ism.add_argument("--full", action="store_true", help="recompute whole windows (slower; same result)")
    add_inference_arguments(ism)
    ism.set_defaults(func=_ism)
