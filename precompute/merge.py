"""Merging finished shards into one bigWig per target, and the manifest the track hub is built from."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from epiformer.io.manifest import MANIFEST
from epiformer.io.provenance import code_version
from epiformer.io.reading import sha256_file
from epiformer.io.writing import atomic_path, bigwig_writer
from epiformer.precompute.plan import PrecomputeError, TilePlan, shard_batches
from epiformer.precompute.shards import existing_shards, read_run, read_shard_target, shard_path, shard_threads

TRACK_DIR = "tracks"


def load_plan(outdir: Path, run: dict) -> TilePlan:
    """The plan a run's shards were written for (windows stored in every shard file)."""
    count = _shard_count(outdir)
    with h5py.File(shard_path(outdir, 0, count), "r") as f:
        return TilePlan.from_dict(run["plan"], f["window_chrom"][:], f["window_start"][:])


def _shard_count(outdir: Path) -> int:
    found = existing_shards(outdir)
    if not found:
        raise PrecomputeError(f"{outdir} holds no shard files: run epiformer precompute first")
    if len(found) > 1:
        raise PrecomputeError(f"{outdir} holds shards for {' and '.join(map(str, sorted(found)))} shards; "
                              "keep one set")
    return next(iter(found))


def check_complete(outdir: Path) -> int:
    """The shard count, after checking every shard file exists and is finished."""
    count = _shard_count(outdir)
    for shard in range(count):
        path = shard_path(outdir, shard, count)
        if not path.exists():
            raise PrecomputeError(f"shard {shard}/{count} has not started ({path} is missing): run it with "
                                  f"--shard {shard}/{count}")
        try:
            with h5py.File(path, "r") as f:
                done = f["done"][:]
        except OSError as err:
            raise PrecomputeError(f"shard file {path} cannot be read ({err}): is that shard still running?") from None
        if not done.all():
            raise PrecomputeError(f"shard {shard}/{count} is not finished ({int(done.sum())} of {len(done)} "
                                  f"batches): run it again with --shard {shard}/{count} to complete it")
    return count


def gather_target(outdir: Path, plan: TilePlan, n_shards: int, target: int) -> np.ndarray:
    """One target's values for every window of the plan, (windows, output bins) float16."""
    out = np.full((plan.n_windows, plan.output_bins), np.nan, dtype=np.float16)
    for shard in range(n_shards):
        values, _ = read_shard_target(shard_path(outdir, shard, n_shards), target)
        for k, batch in enumerate(shard_batches(plan, shard, n_shards)):
            windows = plan.batch_windows(batch)
            out[windows.start: windows.stop] = values[k * plan.batch_size: k * plan.batch_size + len(windows)]
    return out


def write_bigwig(path: Path, plan: TilePlan, values: np.ndarray) -> None:
    """One target's bigWig: every chromosome of the genome in the header, a bin_size span per bin,
    the last bin clipped to the chromosome end, empty bins left out; zoom levels added."""
    starts_all = plan.output_starts()[:, None] + plan.bin_size * np.arange(plan.output_bins)[None, :]
    with bigwig_writer(path, list(plan.chrom_sizes.items())) as bw:
        for i, chrom in enumerate(plan.chroms):
            rows = plan.window_chrom == i
            starts, vals = starts_all[rows].ravel(), values[rows].ravel().astype(np.float32)
            size = plan.chrom_sizes[chrom]
            keep = ~np.isnan(vals) & (starts < size)
            starts, vals = starts[keep], vals[keep]
            whole = starts + plan.bin_size <= size
            if whole.any():
                bw.addEntries(chrom, starts[whole], values=vals[whole], span=plan.bin_size)
            if not whole.all():
                bw.addEntries(chrom, [int(starts[-1])], values=[float(vals[-1])], span=int(size - starts[-1]))


SPECIFICITY_DEFINITION = "log2(x+1) of the target minus its mean over all targets, per bin"


def log_signal(values: np.ndarray) -> np.ndarray:
    """log2(x + 1) of predicted values, float32."""
    return np.log2(values.astype(np.float32).clip(0) + 1)


def merged_files(manifest: dict) -> str:
    """What a merge wrote, for its log line: "8 bigWigs" or "8 bigWigs and 8 specificity bigWigs"."""
    specific = len(manifest.get("specificity", {}).get("tracks", []))
    return f"{len(manifest['tracks'])} bigWigs" + (f" and {specific} specificity bigWigs" if specific else "")


def merge_tracks(outdir: str | Path, progress: bool = True, specificity: bool = False) -> dict:
    """Write ``tracks/NAME.bw`` for every target from the finished shards of ``outdir``, then
    ``manifest.json``. The bigWigs are identical bytes whatever the number of shards. With
    ``specificity``, also ``tracks/NAME.specificity.bw``: where each target differs from the others
    (:data:`SPECIFICITY_DEFINITION`, the quantity the cell-type-specific R scores), listed under
    ``specificity`` in the manifest."""
    outdir = Path(outdir)
    run = read_run(outdir)
    if run is None:
        raise PrecomputeError(f"{outdir} holds no precompute run (no run.json): run epiformer precompute first")
    n_shards = check_complete(outdir)
    plan = load_plan(outdir, run)
    if specificity and len(run["targets"]) < 2:
        raise PrecomputeError("--specificity needs two targets or more: with one there is no mean over "
                              "targets to differ from")
    tracks, log_total = [], np.zeros((plan.n_windows, plan.output_bins), np.float32) if specificity else None
    for t, target in enumerate(tqdm(run["targets"], desc="merge", unit="track", disable=not progress)):
        path = outdir / TRACK_DIR / f"{target['file_stem']}.bw"
        values = gather_target(outdir, plan, n_shards, t)
        write_bigwig(path, plan, values)
        if specificity:
            log_total += log_signal(values)
        tracks.append({"name": target["name"], "description": target["description"], "color": target["color"],
                       "file": f"{TRACK_DIR}/{path.name}", "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    derived = []
    if specificity:
        mean = log_total / len(run["targets"])
        for t, target in enumerate(tqdm(run["targets"], desc="specificity", unit="track", disable=not progress)):
            path = outdir / TRACK_DIR / f"{target['file_stem']}.specificity.bw"
            write_bigwig(path, plan, log_signal(gather_target(outdir, plan, n_shards, t)) - mean)
            derived.append({"target": target["name"], "kind": "specificity", "file": f"{TRACK_DIR}/{path.name}",
                            "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    else:
        for stale in (outdir / TRACK_DIR).glob("*.specificity.bw"):
            stale.unlink()
    threads = [shard_threads(shard_path(outdir, shard, n_shards)) for shard in range(n_shards)]
    manifest = {
        "format": "epiformer-precompute",
        "format_version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "genome": run["genome"],
        "tracks": tracks,
        "models": run["models"],
        "model_config": run["model_config"],
        "params": {**run["params"], "shards": n_shards, "windows": plan.n_windows, "skipped_windows": plan.skipped,
                   "stride": plan.stride, "first_window_start": -plan.output_offset},
        "fingerprint": run["fingerprint_sha256"],
        "settings": {**run["settings"], "threads": threads[0] if len(set(threads)) == 1 else threads},
    }
    if derived:
        manifest["specificity"] = {"definition": SPECIFICITY_DEFINITION, "tracks": derived}
    with atomic_path(outdir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
