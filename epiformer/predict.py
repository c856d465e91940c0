"""``epiformer predict``: regions -> predicted tracks per target, as bigWig, bedGraph or TSV,
optionally compared with the observed tracks of a targets.txt."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .engine import RegionTracks
from .files import atomic_path, bedgraph_text, bigwig_writer, settings_lines
from .genome import GenomeError, parse_region, read_bed_intervals
from .inference import Predictor
from .metrics import SPECIFIC_MIN, TrackMetrics, nan_mean
from .targets import Target, bin_values, fill_missing, read_targets

FORMATS = ("bigwig", "bedgraph", "tsv")


def read_regions_arg(regions: Sequence[str]) -> list[tuple[str, int, int]]:
    """Each item is ``chr:start-end`` (1-based, inclusive) or a BED file (0-based)."""
    out: list[tuple[str, int, int]] = []
    for item in regions:
        if os.path.isfile(item):
            out.extend(read_bed_intervals(item, "region BED"))
        else:
            out.append(parse_region(item))
    if not out:
        raise GenomeError("no region given (-r chr:start-end or a BED file)")
    return out


def _merge(tracks: list[RegionTracks], chrom_order: list[str]) -> list[RegionTracks]:
    """Sort by position and drop bins already covered by an earlier region (bigWig needs no overlap)."""
    ordered = sorted(tracks, key=lambda t: (chrom_order.index(t.chrom), t.start))
    merged: list[RegionTracks] = []
    for track in ordered:
        if merged and merged[-1].chrom == track.chrom and track.start < merged[-1].end:
            skip = -(-(merged[-1].end - track.start) // track.bin_size)
            if skip >= track.values.shape[1]:
                continue
            track = RegionTracks(track.chrom, track.start + skip * track.bin_size, track.bin_size,
                                 track.values[:, skip:], track.target_names)
        merged.append(track)
    return merged


def write_tracks(tracks: list[RegionTracks], outprefix: str | os.PathLike, fmt: str,
                 chrom_sizes: dict[str, int], settings: dict) -> list[Path]:
    """Write tracks: one bigWig or bedGraph per target (``OUTPREFIX.TARGET.bw``), or one TSV, with
    the ``settings`` record (TSV and bedGraph header lines; ``OUTPREFIX.settings.json`` beside bigWigs).

    Bins are clipped to the chromosome; bins entirely outside it are left out.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    names = tracks[0].target_names
    rows = []
    for t in _merge(tracks, list(chrom_sizes)):
        size = chrom_sizes[t.chrom]
        for j, s in enumerate(t.bin_starts().tolist()):
            lo, hi = max(s, 0), min(s + t.bin_size, size)
            if lo < hi:
                rows.append((t.chrom, lo, hi, t.values[:, j]))
    if fmt == "tsv":
        path = Path(f"{outprefix}.tsv")
        with atomic_path(path) as tmp, open(tmp, "w") as handle:
            handle.write(settings_lines(settings))
            handle.write("chrom\tstart\tend\t" + "\t".join(names) + "\n")
            handle.writelines(f"{c}\t{lo}\t{hi}\t" + "\t".join(f"{v:.5g}" for v in values) + "\n"
                              for c, lo, hi, values in rows)
        return [path]
    written = []
    for i, name in enumerate(names):
        path = Path(f"{outprefix}.{name}.{'bw' if fmt == 'bigwig' else 'bedGraph'}")
        if fmt == "bedgraph":
            with atomic_path(path) as tmp:
                tmp.write_text(settings_lines(settings) + bedgraph_text(
                    f'name="{name}" description="predicted {name}"', ((c, lo, hi, v[i]) for c, lo, hi, v in rows)))
        else:
            with bigwig_writer(path, list(chrom_sizes.items())) as bw:
                if rows:
                    bw.addEntries([r[0] for r in rows], [r[1] for r in rows], ends=[r[2] for r in rows],
                                  values=[float(r[3][i]) for r in rows])
        written.append(path)
    if fmt == "bigwig":
        record = Path(f"{outprefix}.settings.json")
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
        written.append(record)
    return written


def observed_tracks(tracks: list[RegionTracks], targets: list[Target],
                    missing: str = "zero") -> dict[str, list[np.ndarray]]:
    """Observed values of each predicted target found in targets.txt, binned like the prediction
    and like generate-datasets (bases without data by the ``missing`` rule; beyond a chromosome's
    end there is no base, so no value)."""
    import pyBigWig

    by_name = {t.identifier: t for t in targets}
    observed: dict[str, list[np.ndarray]] = {}
    for name in tracks[0].target_names:
        target = by_name.get(name)
        if target is None:
            continue
        with pyBigWig.open(str(target.file)) as bw:
            size = bw.chroms()
            per_region = []
            for t in tracks:
                lo, hi = t.start, t.end
                raw = np.full(hi - lo, np.nan, np.float32)
                a, b = max(lo, 0), min(hi, size.get(t.chrom, 0))
                if a < b:
                    raw[a - lo: b - lo] = fill_missing(bw.values(t.chrom, a, b, numpy=True), missing)
                per_region.append(bin_values(raw, t.bin_size, target.sum_stat, target.clip, target.scale))
            observed[name] = per_region
    return observed


def plot_predicted_vs_observed(track: RegionTracks, observed: dict[str, list[np.ndarray]], path: Path) -> None:
    """One panel per target: predicted and observed along the first region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in track.target_names if n in observed]
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 1.3 * len(names) + 0.8), sharex=True, squeeze=False)
    x = (track.bin_starts() + track.bin_size / 2) / 1e6
    for ax, name in zip(axes[:, 0], names):
        i = track.target_names.index(name)
        ax.fill_between(x, observed[name][0], color="0.7", step="mid", label="observed")
        ax.plot(x, track.values[i], color="C3", lw=1, label="predicted")
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=2)
    axes[-1, 0].set_xlabel(f"{track.chrom} position (Mb)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def predict_regions(predictor: Predictor, regions: list[tuple[str, int, int]], outprefix: str | os.PathLike,
                    fmt: str = "bigwig", targets_file: str | os.PathLike | None = None,
                    missing: str = "zero", specific_min: float = SPECIFIC_MIN) -> dict:
    """Predict every region (windows by :meth:`Engine.region_windows`), write the tracks with the
    predictor's settings record; with ``targets_file`` also compare with the observed tracks,
    binned with the ``missing`` rule: Pearson R of log2(x+1) and the cell-type-specific R (over
    bins where some target is at least ``specific_min``, among the targets observed;
    :mod:`epiformer.metrics`) per target and their means, and a PNG of the first region."""
    engine, genome = predictor.engine, predictor.genome
    tracks = [engine.predict_region(genome, chrom, start, end) for chrom, start, end in regions]
    files = write_tracks(tracks, outprefix, fmt, genome.chrom_sizes, predictor.record())
    result: dict = {"files": [str(f) for f in files], "pearson": {}, "specific": {}}
    if targets_file:
        observed = observed_tracks(tracks, read_targets(targets_file), missing)
        if observed:
            names = list(observed)
            rows = [tracks[0].target_names.index(name) for name in names]
            metrics = TrackMetrics(len(names), specific_min=specific_min)
            for k, t in enumerate(tracks):
                metrics.update(torch.from_numpy(np.asarray(t.values[rows], np.float64))[None],
                               torch.from_numpy(np.stack([observed[name][k] for name in names]).astype(np.float64))[None])
            values = metrics.compute()
            result["pearson"] = dict(zip(names, values["pearson"]))
            result["specific"] = dict(zip(names, values["specific"]))
            result.update(pearson_mean=nan_mean(values["pearson"]), specific_mean=nan_mean(values["specific"]),
                          specific_bins=values["specific_bins"][0], specific_min=specific_min)
            png = Path(f"{outprefix}.predicted_vs_observed.png")
            plot_predicted_vs_observed(tracks[0], observed, png)
            result["plot"] = str(png)
    return result
