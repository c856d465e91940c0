"""The precompute job: model set + genome -> shard files -> one bigWig per target + manifest.json.

One process runs every batch and merges. Under torchrun each process (rank) runs shard
``rank/world_size`` on its own GPU and rank 0 merges when all are done. A scheduler job array runs
``--shard i/N`` per task and ``epiformer precompute-merge`` afterwards.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from epiformer.genome.chrom_names import ChromNames, name_examples
from epiformer.genome.interval_index import IntervalIndex
from epiformer.genome.intervals import genome_intervals
from epiformer.genome.reader import Genome
from epiformer.genome.targets import Target
from epiformer.inference.engine import Engine
from epiformer.inference.predictor import Predictor
from epiformer.inference.settings import InferenceSettings, ModelSetOptions
from epiformer.io.reading import sha256_file
from epiformer.model.model_set import ModelSet
from epiformer.parallel.sharded_jobs import job_shard
from epiformer.precompute.merge import MANIFEST, merge_tracks, merged_files
from epiformer.precompute.pipeline import BatchReader, measure_rate, run_shard
from epiformer.precompute.plan import PrecomputeError, TilePlan, plan_tiles, shard_batches
from epiformer.precompute.shards import ShardFile, claim_outdir, shard_path

# Distinct colours (Okabe-Ito, then more), as UCSC "R,G,B"; targets take them in order.
PALETTE = ("0,114,178", "213,94,0", "0,158,115", "204,121,167", "86,180,233", "230,159,0", "240,228,66",
           "0,0,0", "136,34,85", "68,170,153", "153,153,51", "170,68,153", "51,34,136", "221,204,119")


@dataclass
class PrecomputeOptions:
    """How to run the job beyond the inference settings: genome readers and reporting."""

    io_workers: int | None = None       # processes reading the genome; None: 2 on CUDA, 0 on CPU
    progress: bool = True
    specificity: bool = False           # the merge also writes each target minus the mean over targets
    log: Callable[[str], None] = field(default=print, repr=False)


def _file_stems(names: Sequence[str]) -> list[str]:
    stems: list[str] = []
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "track"
        while stem in stems:
            stem += "_"
        stems.append(stem)
    return stems


def describe_run(predictor: Predictor, plan: TilePlan, genome_name: str, blacklist: Path | None,
                 targets: Sequence[Target] | None) -> dict:
    """run.json: what the merge and the manifest need, and the fingerprint that ties shards to a run
    (the settings record without where it ran: shards may run on other machines)."""
    models, engine, genome = predictor.models, predictor.engine, predictor.genome
    settings = predictor.record()
    checkpoints = [{"file": Path(src).name, "path": str(Path(src).resolve()), "sha256": sha256_file(src),
                    "format": member.checkpoint_format, "targets": [member.target_names[i] for i in outputs]}
                   for src, member, outputs in zip(models.sources, models.members, models.outputs)]
    conservation = genome.conservation_path
    fingerprint = {
        **{k: v for k, v in settings.items() if k not in ("device", "threads", "code_version")},
        "genome": [Path(genome.fasta_path).name, sorted(genome.chrom_sizes.items())],
        "blacklist": sha256_file(blacklist) if blacklist else None,
        "plan": plan.digest(),
    }
    fingerprint = json.loads(json.dumps(fingerprint))  # as read back from run.json (tuples -> lists)
    described = {t.identifier: t.description for t in targets or []}
    names = engine.target_names
    return {
        "fingerprint": fingerprint,
        "fingerprint_sha256": hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest(),
        "plan": plan.to_dict(),
        "settings": settings,
        "targets": [{"name": name, "file_stem": stem, "color": PALETTE[i % len(PALETTE)],
                     "description": described.get(name) or f"predicted {name} accessibility"}
                    for i, (name, stem) in enumerate(zip(names, _file_stems(names)))],
        "genome": {"name": genome_name, "fasta": str(Path(genome.fasta_path).resolve()),
                   "conservation": str(conservation.resolve()) if conservation else settings["conservation"],
                   "blacklist": str(Path(blacklist).resolve()) if blacklist else None,
                   "chrom_sizes": dict(genome.chrom_sizes)},
        "models": checkpoints,
        "model_config": models.config.to_dict(),
        "params": {"seq_len": plan.seq_len, "bin_size": plan.bin_size, "crop_size": models.config.crop_size,
                   "output_bins": plan.output_bins, "batch_size": plan.batch_size, "chroms": plan.chroms,
                   "reverse_complement": engine.reverse_complement, "shifts": list(engine.shifts),
                   "precision": settings["precision"], "average": len(set(names)) < sum(map(len, models.outputs))},
    }


def _check_conservation(genome: Genome, chroms: Sequence[str]) -> None:
    cons = genome.conservation_chroms()
    missing = [c for c in chroms if c not in cons]
    if not missing:
        return
    raise PrecomputeError(
        f"conservation bigWig {genome.conservation_path} has no {name_examples(missing)} "
        f"({len(missing)} of {len(chroms)} chromosomes): "
        "use the conservation track of this genome assembly, or leave those out with --chroms")


def precompute(models: ModelSetOptions | ModelSet, fasta: str | os.PathLike, outdir: str | os.PathLike,
               settings: InferenceSettings, options: PrecomputeOptions | None = None, *,
               targets: Sequence[Target] | None = None, blacklist: str | os.PathLike | None = None,
               chroms: Sequence[str] | None = None, regions: Sequence[tuple[str, int, int]] | None = None,
               genome_name: str | None = None, shard: tuple[int, int] | None = None,
               dry_run: bool = False) -> dict:
    """Predict every target genome-wide and write ``outdir/tracks/*.bw`` and ``manifest.json``.

    ``settings`` are the inference settings (the same as every command's); ``shard`` (i, N) runs
    one shard of N and leaves the merge to :func:`merge_tracks`; under torchrun the rank and world
    size give the shard and rank 0 merges. ``dry_run`` plans, times a few batches and returns the
    projection without writing anything.
    """
    options = options or PrecomputeOptions()
    log = options.log
    outdir = Path(outdir)
    job = job_shard(shard, settings.device)
    index, n_shards = job.index, job.count
    with job.open_predictor(models, fasta, settings, log if job.primary else _quiet) as predictor:
        engine, genome = predictor.engine, predictor.genome
        chosen = list(chroms) if chroms else list(genome.chrom_sizes)
        if predictor.conservation:
            _check_conservation(genome, chosen)
        black = IntervalIndex(genome_intervals(blacklist, genome.chrom_sizes, "blacklist", log)) if blacklist else None
        if regions is not None:
            names = ChromNames(genome.chrom_sizes, "--bed")
            regions = names.intervals(regions)
            if (line := names.summary("regions")) is not None:
                log(line)
        io_workers = options.io_workers if options.io_workers is not None else default_io_workers(engine)
        plan = plan_tiles(genome, engine, settings.batch_size, chroms, regions, black)
        if plan.n_windows == 0:
            raise PrecomputeError("no window to predict: every tile is N, blacklisted or outside --bed")
        run = describe_run(predictor, plan, genome_name or Path(fasta).name.split(".")[0],
                           Path(blacklist) if blacklist else None, targets)
    mine = shard_batches(plan, index, n_shards)
    my_windows = sum(len(plan.batch_windows(b)) for b in mine)
    if job.primary:
        log(f"plan        {plan.n_windows:,} windows of {plan.seq_len:,} bp (outputs of {plan.stride:,} bp abut), "
            f"{plan.skipped:,} tiles skipped (all N, blacklisted or outside --bed), {plan.n_batches:,} batches "
            f"of {plan.batch_size}; {len(plan.chroms)} chromosomes")
    log(f"shard       {index}/{n_shards}: {my_windows:,} windows on {engine.device}"
        f"{' (bf16)' if engine.bf16 else ''}, {io_workers} I/O workers")
    reader_args = {"fasta": Path(fasta), "conservation": predictor.conservation,
                   "coded_offset": engine.coded_start(0), "coded_length": engine.coded_length,
                   "blacklist": black}
    if dry_run:
        reader = BatchReader(plan, mine[:21], **reader_args)
        rate = measure_rate(engine, reader, io_workers)
        projection = {"windows": plan.n_windows, "shard_windows": my_windows, "windows_per_s": rate,
                      "bp_per_s": rate * plan.stride, "projected_s": plan.n_windows / rate,
                      "projected_shard_s": my_windows / rate}
        log(f"dry run     {rate:.2f} windows/s ({rate * plan.stride / 1e6:.2f} Mb/s) measured on {engine.device}: "
            f"the whole run would take {_duration(projection['projected_s'])} on one such device"
            + (f", this shard {_duration(projection['projected_shard_s'])}" if n_shards > 1 else ""))
        return {"dry_run": projection, "plan": plan}
    claim_outdir(outdir, run, n_shards)
    with ShardFile(shard_path(outdir, index, n_shards), plan, index, n_shards, len(engine.target_names),
                   run["fingerprint_sha256"], predictor.record()["threads"]) as shard_file:
        if shard_file.done.all():
            log(f"shard       {index}/{n_shards} was already complete")
        stats = run_shard(engine, reader_args, shard_file, io_workers, options.progress,
                          label=f"shard {index}/{n_shards}")
    if stats["windows"]:
        log(f"predicted   {stats['windows']:,} windows in {_duration(stats['seconds'])} "
            f"({stats['windows_per_s']:.2f} windows/s)" +
            (f", resumed after {stats['resumed_from']:,}" if stats["resumed_from"] else ""))
    result = {"stats": stats, "plan": plan, "shard": (index, n_shards)}
    if not job.wait_for_ranks():
        return result
    if job.launched or n_shards == 1:
        result["manifest"] = merge_tracks(outdir, progress=options.progress, specificity=options.specificity)
        log(f"wrote       {merged_files(result['manifest'])} in {outdir / 'tracks'}, {outdir / MANIFEST}")
    else:
        log(f"when every shard is done: epiformer precompute-merge {outdir}"
            + (" --specificity" if options.specificity else ""))
    return result


def _quiet(_message: str) -> None:
    """Notes are printed by the first rank only."""


def default_io_workers(engine: Engine) -> int:
    """Processes reading the genome: 2 beside a GPU; none on CPU, where torch's threads already
    use every core and readers would only compete with them."""
    return 2 if engine.device.type == "cuda" else 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
