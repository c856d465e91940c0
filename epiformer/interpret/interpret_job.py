"""``epiformer interpret``: per-base contribution and mutagenesis tracks of regions, into a
precompute folder.

For each region (a BED, or the strongest predicted peaks of the folder's tracks) and target:

* ``method="grad"``: gradient x input of the target's predicted signal summed over the output
  bins the region overlaps, through the engine's own ensemble (model set, reverse complement,
  shifts): per batch of windows, one forward pass and one backward pass per target. The input is one-hot x
  exp(conservation), so a base's contribution is the gradient at its own base times its factor.
* ``method="ism"``: saturation mutagenesis through the incremental tower (:mod:`epiformer.variants.mutagenesis`,
  the region's window and score window as ``epiformer ism``); the contribution is minus the
  mean SAD of the three substitutions (positive where changing the base lowers the signal), and
  ``TARGET.ism_A.bw`` ... ``TARGET.ism_T.bw`` hold each substitution's SAD (0 at the reference
  base), ``TARGET.ism_max.bw`` the largest |SAD| per position.

Regions are worked in parts of ``REGIONS_PER_PART``, part k by shard k mod N (``--shard I/N`` or
torchrun ranks), each part written under a temporary name to ``DIR/interpret.parts/``; a rerun
keeps finished parts. When every part exists, the bigWigs are written to ``DIR/tracks/`` and
``manifest.json`` gets an ``interpretation`` section with the files and the settings record.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from epiformer.errors import UserError
from epiformer.genome.intervals import genome_intervals
from epiformer.inference.settings import ScoringSettings
from epiformer.interpret.attribution import ISM_KINDS, gradient_contributions, mutagenesis_tracks
from epiformer.io.manifest import MANIFEST, read_manifest
from epiformer.io.reading import sha256_file
from epiformer.io.writing import atomic_path, bigwig_writer
from epiformer.parallel.sharded_jobs import JobShard, PartsFolder, job_shard
from epiformer.variants.mutagenesis import MAX_ISM_BP
from epiformer.variants.scorer import VariantScorer

METHODS = ("grad", "ism")


REGIONS_PER_PART = 16


PARTS = "interpret.parts"


TRACKS = "tracks"


class InterpretError(UserError, ValueError):
    """Regions or a folder that cannot be interpreted, naming the file or flag."""


@dataclass
class InterpretOptions:
    """How to interpret: the method, the shard of the regions, and whether to discard another run's parts."""

    method: str = "grad"
    shard: tuple[int, int] = (0, 1)
    restart: bool = False
    progress: bool = True


def merge_regions(regions: list[tuple[str, int, int]], chrom_order: list[str]) -> list[tuple[str, int, int]]:
    """Regions sorted in the genome's order, overlapping or abutting ones merged (one value per base)."""
    rank = {c: i for i, c in enumerate(chrom_order)}
    merged: list[tuple[str, int, int]] = []
    for chrom, start, end in sorted(regions, key=lambda r: (rank[r[0]], r[1], r[2])):
        if merged and merged[-1][0] == chrom and start <= merged[-1][2]:
            merged[-1] = (chrom, merged[-1][1], max(end, merged[-1][2]))
        else:
            merged.append((chrom, start, end))
    return merged


def read_regions(path: str | os.PathLike, chrom_sizes: dict[str, int], limit: int) -> list[tuple[str, int, int]]:
    """The regions of a BED file, checked against the genome and the longest region a window takes."""
    regions = []
    for line, (chrom, start, end) in enumerate(genome_intervals(path, chrom_sizes, "regions BED"), start=1):
        if end > chrom_sizes[chrom]:
            raise InterpretError(f"{path}, region {line}: {chrom}:{start + 1}-{end} runs past the end of {chrom}")
        if end - start > limit:
            raise InterpretError(f"{path}, region {line}: {end - start:,} bp; interpret takes regions of at most "
                                 f"{limit:,} bp (split longer ones)")
        regions.append((chrom, start, end))
    if not regions:
        raise InterpretError(f"{path} holds no region on the genome's chromosomes")
    return merge_regions(regions, list(chrom_sizes))


def top_regions(outdir: str | os.PathLike, count: int, width: int = 500) -> list[tuple[str, int, int]]:
    """The ``count`` strongest predicted peaks of a precompute folder's tracks: the bins highest in
    any target, at least ``width`` apart, each as a ``width`` bp region centred on its bin."""
    import pyBigWig

    outdir = Path(outdir)
    manifest = read_manifest(outdir)
    sizes = manifest["genome"]["chrom_sizes"]
    bin_size = manifest["params"]["bin_size"]
    best: list[tuple[float, str, int]] = []
    for chrom, size in sizes.items():
        peak = np.zeros(-(-size // bin_size), np.float32)
        for track in manifest["tracks"]:
            with pyBigWig.open(str(outdir / track["file"])) as bw:
                values = np.nan_to_num(np.asarray(bw.stats(chrom, 0, size, type="max", nBins=len(peak)),
                                                  dtype=np.float64))
            peak = np.maximum(peak, values.astype(np.float32))
        taken = np.zeros(len(peak), bool)
        for k in np.argsort(-peak, kind="stable")[: 4 * count]:
            if not taken[k]:
                best.append((float(peak[k]), chrom, int(k)))
                taken[max(0, k - width // bin_size): k + width // bin_size + 1] = True
    chosen = sorted(best, key=lambda b: -b[0])[:count]
    regions = []
    for _, chrom, k in chosen:
        centre = k * bin_size + bin_size // 2
        start = min(max(0, centre - width // 2), max(0, sizes[chrom] - width))
        regions.append((chrom, start, min(sizes[chrom], start + width)))
    return merge_regions(regions, list(sizes))


def interpret(scorer: VariantScorer, outdir: str | os.PathLike, regions: list[tuple[str, int, int]],
              options: InterpretOptions | None = None, launched: bool = False, log=print) -> dict:
    """Interpret ``regions`` into the precompute folder ``outdir``: this shard's parts, then (by
    the last shard to finish, or rank 0 under torchrun) the bigWigs and the manifest's record."""
    from tqdm import tqdm

    options = options or InterpretOptions()
    if options.method not in METHODS:
        raise InterpretError(f"--method must be one of {', '.join(METHODS)}, got {options.method!r}")
    outdir = Path(outdir)
    manifest = read_manifest(outdir)
    genome_sizes = dict(manifest["genome"]["chrom_sizes"])
    if genome_sizes != dict(scorer.genome.chrom_sizes):
        raise InterpretError(f"the FASTA {scorer.genome.fasta_path} is not the genome of {outdir} (other "
                             "chromosomes or sizes)")
    regions = merge_regions(regions, list(genome_sizes))
    settings = {**scorer.record(), "method": options.method}
    fingerprint = {"regions": regions, "method": options.method,
                   "settings": {k: v for k, v in settings.items() if k not in ("device", "threads", "code_version")}}
    parts = PartsFolder(outdir / PARTS, fingerprint, JobShard(*options.shard, launched=launched), InterpretError,
                        "interpret run (other regions, method or settings): pass --restart to discard it")
    parts.claim(options.restart)
    chunks = [regions[k: k + REGIONS_PER_PART] for k in range(0, len(regions), REGIONS_PER_PART)]

    def compute(chunk: list[tuple[str, int, int]]) -> list[np.ndarray]:
        if options.method == "grad":
            return gradient_contributions(scorer, chunk)
        return [mutagenesis_tracks(scorer, *region) for region in chunk]

    mine = parts.shard.own_parts(len(chunks))
    for k in tqdm(mine, desc=f"interpret ({options.method})", unit="part", disable=not options.progress):
        if not parts.done(k):
            parts.write(k, {f"region_{i}": v for i, v in enumerate(compute(chunks[k]))})
    unwritten = parts.finish(len(chunks), log, "tracks")
    if unwritten is not None:
        return unwritten
    return _write_tracks(outdir, manifest, scorer.engine.target_names, regions, parts, chunks, options.method,
                         settings)


def _write_tracks(outdir: Path, manifest: dict, targets: list[str], regions: list[tuple[str, int, int]],
                  parts: PartsFolder, chunks: list[list], method: str, settings: dict) -> dict:
    """The bigWigs at 1 bp over the regions, per target and kind, and the manifest's record."""
    values = [part[f"region_{i}"] for part, chunk in zip(parts.load_all(len(chunks)), chunks)
              for i in range(len(chunk))]
    kinds = ["contrib"] + (list(ISM_KINDS) if method == "ism" else [])
    stems = {t["name"]: Path(t["file"]).stem for t in manifest["tracks"]}
    sizes = list(manifest["genome"]["chrom_sizes"].items())
    tracks = []
    for t, target in enumerate(targets):
        for j, kind in enumerate(kinds):
            path = outdir / TRACKS / f"{stems.get(target, target)}.{kind}.bw"
            with bigwig_writer(path, sizes) as bw:
                for (chrom, start, _), region_values in zip(regions, values):
                    row = region_values[t] if method == "grad" else region_values[t, j]
                    known = np.flatnonzero(~np.isnan(row))
                    if len(known):
                        bw.addEntries(chrom, (start + known).tolist(), values=row[known].astype(np.float64).tolist(),
                                      span=1)
            tracks.append({"target": target, "kind": kind, "file": f"{TRACKS}/{path.name}",
                           "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    manifest["interpretation"] = {"method": method, "regions": len(regions),
                                  "bases": int(sum(end - start for _, start, end in regions)),
                                  "tracks": tracks, "settings": settings}
    with atomic_path(outdir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return {"files": [t["file"] for t in tracks], "interpretation": manifest["interpretation"]}


def region_limit(scorer: VariantScorer) -> int:
    """The longest region interpret takes: one window's output, and ism's limit."""
    return min(MAX_ISM_BP, scorer.engine.output_span)


def interpret_job(models, fasta: str | os.PathLike, settings, outdir: str | os.PathLike,
                  bed: str | os.PathLike | None = None, top: int | None = None,
                  options: InterpretOptions | None = None, scoring: ScoringSettings = ScoringSettings(),
                  log=print) -> dict:
    """The interpret command: the model set opened with ``settings`` (under torchrun each rank a
    shard on its own GPU), the regions of ``bed`` or the ``top`` strongest peaks of ``outdir``,
    and :func:`interpret`, scored with ``scoring``."""
    options = options or InterpretOptions()
    if (bed is None) == (top is None):
        raise InterpretError("give the regions with --bed REGIONS.bed or --top N, not both")
    if top is not None and top < 1:
        raise InterpretError(f"--top must be at least 1, got {top}")
    job = job_shard(options.shard if options.shard != (0, 1) else None, settings.device)
    with job.open_predictor(models, fasta, settings) as predictor:
        scorer = VariantScorer(predictor, scoring, cache_windows=0)
        regions = read_regions(bed, predictor.genome.chrom_sizes, region_limit(scorer)) if bed is not None \
            else top_regions(outdir, top)
        return interpret(scorer, outdir, regions, dataclasses.replace(options, shard=(job.index, job.count)),
                         job.launched, log)
