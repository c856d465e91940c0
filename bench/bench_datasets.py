"""generate-datasets at genome scale against the original script's approach, per Mb of genome.

    python bench/bench_datasets.py                      # print the table
    python bench/bench_datasets.py --write BENCHMARKS.md

A synthetic genome of ``--genome-mb`` (default 54 Mb, made first in a temporary folder) with
``--cell-types`` targets (default 5) tiled as the original tiles it: windows of 98,304 bp from 0,
no overlap, with the demo's blacklist. The baseline follows the original generate_datasets.py:
bedtools makes the windows, drops those on the blacklist and writes their sequences (getfasta, tab
separated); per window each bigWig's values come back as a Python list and are binned by a
Python loop of ``np.mean`` over list slices; bedtools intersects the windows with the peaks; the
chunk is held in lists and written with LZ4 at the end. It runs on the first
``--baseline-windows`` windows. generate-datasets runs on the whole genome with 1 and 2 worker
processes, and once more under cProfile to show where its time goes.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import publish  # noqa: E402

from epiformer.demo.demo_pipeline import dataset_parameters  # noqa: E402
from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data  # noqa: E402
from epiformer.genome.intervals import read_chrom_sizes  # noqa: E402
from epiformer.genome.targets import read_targets  # noqa: E402
from epiformer.training.datasets import DatasetParameters, generate_datasets, plan_windows  # noqa: E402

HG38_MB = 3_100
# cProfile functions by where their time goes: (label, test on "file:function")
STAGES = (("bigWig decoding (pyBigWig)", lambda name: "pyBigWig" in name),
          ("HDF5 writes and compression (h5py)", lambda name: "h5py" in name),
          ("FASTA reads (pysam)", lambda name: "pysam" in name or "reader.py:sequence" in name),
          ("bedtools and BED parsing", lambda name: "bedtools" in name or "read_bed_intervals" in name
           or "subprocess" in name),
          ("binning, labels and the rest (numpy, Python)", lambda name: True))


def original_approach(params: DatasetParameters, n_windows: int, workdir: Path) -> tuple[int, float]:
    """The original script's approach on the first ``n_windows`` windows: (windows written, seconds)."""
    import h5py
    import hdf5plugin
    import pyBigWig

    started = time.perf_counter()
    targets = read_targets(params.targets)
    windows = workdir / "windows.bed"
    subprocess.run(f"bedtools makewindows -g {params.chrom_sizes} -w {params.seq_len} | "
                   f"awk '$3 - $2 == {params.seq_len}' | head -n {n_windows} | "
                   f"bedtools intersect -a - -b {params.blacklist} -v > {windows}", shell=True, check=True)
    seqs = subprocess.run(["bedtools", "getfasta", "-fi", params.fasta, "-bed", str(windows), "-tab"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    seq_of = dict(line.split("\t", 1) for line in seqs)
    peaks = " ".join(str(t.peak) for t in targets)
    overlaps = subprocess.run(f"bedtools intersect -loj -a {windows} -b {peaks}", shell=True, capture_output=True,
                              text=True, check=True).stdout.splitlines()
    signals = [pyBigWig.open(str(t.file)) for t in targets]
    conservation = pyBigWig.open(params.conservation)
    n_bins = params.seq_len // params.bin_size
    inputs, seqcons, values, labels, names = [], [], [], [], []
    for line in windows.read_text().splitlines():
        chrom, start, end = line.split("\t")[:3]
        start, end = int(start), int(end)
        seq = seq_of[f"{chrom}:{start}-{end}"]
        if "N" in seq or "n" in seq:
            continue
        per_target = []
        for bw, target in zip(signals, targets):
            raw = bw.values(chrom, start, end)                     # a Python list, as the original reads it
            binned = []
            for i in range(n_bins):
                binned.append(np.mean(raw[i * params.bin_size: (i + 1) * params.bin_size]))
            per_target.append(np.clip(binned, 0, target.clip))
        inputs.append(seq)
        seqcons.append(np.nan_to_num(conservation.values(chrom, start, end)))
        values.append(np.array(per_target))
        labels.append(np.zeros((len(targets), n_bins), np.float32))
        names.append(f"{chrom}:{start}-{end}")
    row_of = {name: row for row, name in enumerate(names)}
    for line in overlaps:            # peak labels from the -loj rows: window, peak file index, peak
        fields = line.split("\t")
        row = row_of.get(f"{fields[0]}:{fields[1]}-{fields[2]}")
        if row is not None and len(fields) > 6 and fields[3] != ".":
            first = (int(fields[5]) - int(fields[1])) // params.bin_size
            last = (int(fields[6]) - int(fields[1])) // params.bin_size + 1
            labels[row][int(fields[3]) - 1, max(first, 0): last] = 1
    with h5py.File(workdir / "original.0.h5", "w") as h5:
        lz4 = hdf5plugin.LZ4(nbytes=0)
        h5.create_dataset("inputs/seq", data=np.array(inputs, dtype=object), dtype=h5py.string_dtype(), **lz4)
        h5.create_dataset("inputs/seqcons", data=np.array(seqcons), **lz4)
        h5.create_dataset("targets/value", data=np.array(values), **lz4)
        h5.create_dataset("targets/label", data=np.array(labels), **lz4)
        h5.create_dataset("segments/name", data=np.array(names, dtype=object), dtype=h5py.string_dtype(), **lz4)
    return len(names), time.perf_counter() - started


def stage_shares(profile: cProfile.Profile) -> dict[str, float]:
    """Shares of the profiled time by stage (each function's own time, by its module)."""
    totals = {label: 0.0 for label, _ in STAGES}
    for (filename, _, function), (_, _, own, _, _) in pstats.Stats(profile).stats.items():
        name = f"{filename}:{function}"
        totals[next(label for label, test in STAGES if test(name))] += own
    whole = sum(totals.values())
    return {label: seconds / whole for label, seconds in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genome-mb", type=float, default=54.0)
    parser.add_argument("--cell-types", type=int, default=5)
    parser.add_argument("--baseline-windows", type=int, default=80)
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = DemoSpec.scaled(args.genome_mb, n_chroms=6, seed=0)
        paths = make_demo_data(tmp / "demo", spec)
        rows = paths["targets"].read_text().splitlines()
        targets = tmp / "demo" / "targets5.txt"
        targets.write_text("\n".join(rows[: 1 + args.cell_types]) + "\n")
        params = dataset_parameters({**paths, "targets": targets}, seq_len=98_304, nchunk=1000)
        windows = plan_windows(params, read_chrom_sizes(params.chrom_sizes))
        genome_mb = sum(spec.chrom_sizes.values()) / 1e6
        (tmp / "original").mkdir()
        written, seconds = original_approach(params, args.baseline_windows, tmp / "original")
        baseline = written * params.seq_len / 1e6 / seconds          # Mb of windows per second
        results = []
        for workers in (1, 2):
            started = time.perf_counter()
            manifest = generate_datasets(params, tmp / f"w{workers}" / "ds", workers=workers, progress=False)
            seconds = time.perf_counter() - started
            n = sum(s["windows"] for s in manifest["splits"].values())
            results.append((workers, n, seconds))
        profile = cProfile.Profile()
        profile.enable()
        generate_datasets(params, tmp / "profiled" / "ds", workers=1, progress=False)
        profile.disable()
        shares = stage_shares(profile)

    one = results[0][1] * params.seq_len / 1e6 / results[0][2]
    lines = [
        f"Synthetic genome of {genome_mb:.0f} Mb ({len(spec.chrom_sizes)} chromosomes), {args.cell_types} cell "
        f"types, windows of 98,304 bp tiled from 0 without overlap ({len(windows)} windows), the demo's blacklist; "
        f"{os.cpu_count()} cores. The original's approach runs on the first {args.baseline_windows} windows "
        f"({written} kept); rates are per Mb of windows written.",
        "",
        "| method | windows/s | Mb of windows/s | s per Mb | vs the original's approach |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| the original script's approach (bedtools, bigWig values as lists, per-bin np.mean), 1 process | "
        f"{baseline * 1e6 / params.seq_len:.1f} | {baseline:.2f} | {1 / baseline:.3f} | 1.0x |",
        *(f"| epiformer generate-datasets, {w} worker process{'es' if w > 1 else ''} | {n / s:.1f} | "
          f"{n * params.seq_len / 1e6 / s:.1f} | {s / (n * params.seq_len / 1e6):.3f} | "
          f"{n * params.seq_len / 1e6 / s / baseline:.1f}x |" for w, n, s in results),
        "",
        f"Two workers against one: {results[0][2] / results[1][2]:.2f}x (on {os.cpu_count()} cores, the writing "
        f"process shares them with the workers). The whole {genome_mb:.0f} Mb genome took {results[0][2]:.1f} s with "
        f"one worker; at that rate hg38 ({HG38_MB:,} Mb) with {args.cell_types} cell types takes "
        f"{HG38_MB / one / 60:.1f} min.",
        "",
        "Where one worker's time goes (cProfile, own time by module):",
        "",
        "| stage | share |",
        "| --- | ---: |",
        *(f"| {label} | {share:.0%} |" for label, share in shares.items()),
        "",
        f"Decoding the {args.cell_types + 1} bigWigs (the cell types and conservation) with pyBigWig is "
        f"{shares[STAGES[0][0]]:.0%} of one worker's time: with everything else free, one worker would run at most "
        f"{one / baseline / shares[STAGES[0][0]]:.0f}x the original's approach.",
    ]
    publish("generate-datasets", lines, args.write)


if __name__ == "__main__":
    main()
