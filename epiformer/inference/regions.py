"""``epiformer predict``: regions -> predicted tracks per target, as bigWig, bedGraph or TSV,
optionally compared with the observed tracks of a targets.txt."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from epiformer.genome.chrom_names import ChromNames, genome_chrom_name
from epiformer.genome.intervals import genome_intervals, parse_region
from epiformer.genome.reader import GenomeError
from epiformer.genome.targets import Target, bin_values, fill_missing, read_targets
from epiformer.inference.engine import RegionTracks
from epiformer.inference.predictor import Predictor
from epiformer.inference.settings import ModelSetOptions
from epiformer.io.writing import atomic_path, bedgraph_text, bigwig_writer, settings_lines
from epiformer.model.checkpoints import read_checkpoint
from epiformer.training.metrics import SPECIFIC_MIN, TrackMetrics, nan_mean

FORMATS = ("bigwig", "bedgraph", "tsv")


def read_regions_arg(regions: Sequence[str], genome_names: Iterable[str]) -> list[tuple[str, int, int]]:
    """Each item is ``chr:start-end`` (1-based, inclusive) or a BED file (0-based), on the
    genome's chromosome names (:func:`~epiformer.genome.chrom_names.genome_chrom_name`; a BED's intervals on
    other chromosomes are skipped with a warning)."""
    names = frozenset(genome_names)
    out: list[tuple[str, int, int]] = []
    for item in regions:
        if os.path.isfile(item):
            out.extend(genome_intervals(item, names, "region BED"))
        else:
            chrom, start, end = parse_region(item)
            out.append((genome_chrom_name(chrom, names) or chrom, start, end))
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
    end, or on one the bigWig lacks, there is no base, so no value). The bigWig's chromosome names
    map onto the genome's (:func:`~epiformer.genome.chrom_names.genome_chrom_name`)."""
    import pyBigWig

    by_name = {t.identifier: t for t in targets}
    observed: dict[str, list[np.ndarray]] = {}
    for name in tracks[0].target_names:
        target = by_name.get(name)
        if target is None:
            continue
        with pyBigWig.open(str(target.file)) as bw:
            size = bw.chroms()
            in_file = ChromNames({t.chrom for t in tracks}, f"bigWig {target.file}").in_file(size)
            per_region = []
            for t in tracks:
                lo, hi = t.start, t.end
                raw = np.full(hi - lo, np.nan, np.float32)
                chrom = in_file.get(t.chrom)
                a, b = max(lo, 0), min(hi, size[chrom] if chrom else 0)
                if a < b:
                    raw[a - lo: b - lo] = fill_missing(bw.values(chrom, a, b, numpy=True), missing)
                per_region.append(bin_values(raw, t.bin_size, target.sum_stat, target.clip, target.scale))
            observed[name] = per_region
    return observed


def plot_predicted_vs_observed(track: RegionTracks, observed: dict[str, list[np.ndarray]], path: Path) -> None:
    """One panel per target: predicted and observed along the first region."""
    names = [n for n in track.target_names if n in observed]
    predicted = track.values[[track.target_names.index(n) for n in names]]
    plot_signals(track, names, predicted, np.stack([observed[n][0] for n in names]), "signal", path)


def predict_regions(predictor: Predictor, regions: list[tuple[str, int, int]], outprefix: str | os.PathLike,
                    fmt: str = "bigwig", targets_file: str | os.PathLike | None = None,
                    missing: str = "zero", specific_min: float = SPECIFIC_MIN, keep_tracks: bool = False) -> dict:
    """Predict every region (windows by :meth:`Engine.region_windows`), write the tracks with the
    predictor's settings record; with ``targets_file`` also compare with the observed tracks,
    binned with the ``missing`` rule: Pearson R of log2(x+1) and the cell-type-specific R (over
    bins where some target is at least ``specific_min``, among the targets observed;
    :mod:`epiformer.training.metrics`) per target and their means, and a PNG of the first region.
    ``keep_tracks`` adds the predicted ``tracks`` and the ``observed`` values to the result."""
    engine, genome = predictor.engine, predictor.genome
    tracks = [engine.predict_region(genome, chrom, start, end) for chrom, start, end in regions]
    files = write_tracks(tracks, outprefix, fmt, genome.chrom_sizes, predictor.record())
    result: dict = {"files": [str(f) for f in files], "pearson": {}, "specific": {}}
    if keep_tracks:
        result["tracks"] = tracks
    if targets_file:
        observed = observed_tracks(tracks, read_targets(targets_file), missing)
        if keep_tracks:
            result["observed"] = observed
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


def original_layout(folder: str | os.PathLike, species: str) -> dict[str, Path | None]:
    """The files the original ``pred_signals.py`` finds in its working folder (``-d``) for a
    species (``-s``): ``genome/SPECIES.fa`` (or ``.fa.gz``, ``.fa.bgz``, ``.2bit``: the genome as
    it shipped), ``genome/SPECIES.phastCons.bw`` (None when absent: every base a factor of 1, as
    there) and ``targets/SPECIES.targets.txt`` (None when absent)."""
    root = Path(folder)
    candidates = [root / "genome" / f"{species}{suffix}" for suffix in (".fa", ".fa.gz", ".fa.bgz", ".2bit")]
    fasta = next((path for path in candidates if path.is_file()), None)
    if fasta is None:
        raise GenomeError(f"-d {folder} -s {species}: no genome FASTA {candidates[0]} (nor .fa.gz, .fa.bgz or "
                          f".2bit; the original's layout is DIR/genome/{species}.fa, "
                          f"DIR/genome/{species}.phastCons.bw and DIR/targets/{species}.targets.txt)")
    conservation = root / "genome" / f"{species}.phastCons.bw"
    targets = root / "targets" / f"{species}.targets.txt"
    return {"fasta": fasta, "conservation": conservation if conservation.is_file() else None,
            "targets": targets if targets.is_file() else None}


def pred_signals_models(checkpoint: str, targets_file: str | os.PathLike | None,
                        index: int | None) -> ModelSetOptions:
    """The model set of the original ``pred_signals.py -m CHECKPOINT --index N``: a single-output
    checkpoint is named by row N of targets.txt; a multi-output one keeps all its outputs (named
    by targets.txt in order when it carries no names) and ``--index`` picks the one written."""
    outputs = read_checkpoint(checkpoint)["param"].get("multiout_dim", 1)
    return ModelSetOptions((checkpoint,), None if targets_file is None else str(targets_file),
                           index if outputs == 1 else None)


def signal_targets(names: list[str], targets_file: str | os.PathLike | None, index: int | None) -> list[str]:
    """The targets ``pred_signals`` writes: all the model's, or the one ``--index`` names (row N of
    targets.txt when there is one, else the model's N-th output)."""
    if index is None:
        return list(names)
    if targets_file is not None:
        table = read_targets(targets_file)
        if not 0 <= index < len(table):
            raise GenomeError(f"--index {index} is out of range: {targets_file} lists {len(table)} targets")
        if table[index].identifier not in names:
            raise GenomeError(f"--index {index} is {table[index].identifier} in {targets_file}, which the model "
                              f"does not predict (it predicts {', '.join(names)})")
        return [table[index].identifier]
    if not 0 <= index < len(names):
        raise GenomeError(f"--index {index} is out of range: the model has {len(names)} outputs")
    return [names[index]]


def predict_signals(predictor: Predictor, region: str, outprefix: str | os.PathLike, species: str,
                    targets: list[str], targets_file: str | os.PathLike | None = None) -> dict:
    """What the original ``pred_signals.py`` writes for one region, from the window centred on it
    (:meth:`Engine.region_windows`), with ``OUTPREFIX.SPECIES.REGION`` as the prefix:
    ``pred_signals.tsv`` (one row of output bins per target of ``targets``), ``true_signals.tsv``
    (their observed tracks binned alike, when ``targets_file`` lists them all), the plots of both
    raw and log2(x+1) as ``pred_rawsignals.png`` and ``pred_log2signals.png``, and the project's
    bigWig of every target with its settings record. Returns the files and the Pearson R of
    log2(x+1) per target."""
    prefix = f"{outprefix}.{species}.{region}"
    result = predict_regions(predictor, [parse_region(region)], prefix, "bigwig", targets_file,
                             keep_tracks=True)
    track = result.pop("tracks")[0]
    observed_by_name = result.pop("observed", {})
    predicted = track.values[[track.target_names.index(name) for name in targets]].astype(np.float64)
    observed = None
    if all(name in observed_by_name for name in targets):
        observed = np.stack([observed_by_name[name][0] for name in targets]).astype(np.float64)
    tables = {"pred_signals": predicted, "true_signals": observed}
    files = []
    for kind, values in tables.items():
        if values is not None:
            files.append(Path(f"{prefix}.{kind}.tsv"))
            with atomic_path(files[-1]) as tmp:
                np.savetxt(tmp, values)
    for kind, transform in (("raw", lambda v: v), ("log2", lambda v: np.log2(v + 1))):
        files.append(Path(f"{prefix}.pred_{kind}signals.png"))
        plot_signals(track, targets, transform(predicted), None if observed is None else transform(observed),
                     "signal" if kind == "raw" else "log2(signal + 1)", files[-1])
    result["files"] = [str(f) for f in files] + result["files"] + ([result.pop("plot")] if "plot" in result else [])
    return result


def plot_signals(track: RegionTracks, targets: list[str], predicted: np.ndarray, observed: np.ndarray | None,
                 ylabel: str, path: Path) -> None:
    """A PNG with one panel per target of ``targets``: its predicted values (rows of ``predicted``)
    along the region of ``track``, over its observed ones (rows of ``observed``) when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = (track.bin_starts() + track.bin_size / 2) / 1e6
    fig, axes = plt.subplots(len(targets), 1, figsize=(11, 1.4 * len(targets) + 0.8), sharex=True, squeeze=False)
    for row, (ax, name) in enumerate(zip(axes[:, 0], targets)):
        if observed is not None:
            ax.fill_between(x, observed[row], color="0.7", step="mid", label="observed")
        ax.plot(x, predicted[row], color="C3", lw=1, label="predicted")
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel(ylabel)
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=2)
    axes[-1, 0].set_xlabel(f"{track.chrom} position (Mb)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
