"""generate-datasets throughput on the demo genome against the original's per-base approach.

    python bench/bench_datasets.py                      # print the table
    python bench/bench_datasets.py --write BENCHMARKS.md

Both run in this process on the same demo genome (made first, in a temporary folder) and the
same windows (98,304 bp, stride 8,192, 8 cell types). The baseline follows the original script:
a Python loop over bases for the one-hot, per-base conservation lists, a per-bin ``np.mean`` over
Python lists per cell type, a loop over the peaks for labels, everything held in lists, then one
HDF5 write. It runs on the first ``--baseline-windows`` windows; windows/s are compared.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import publish  # noqa: E402

from epiformer.datasets import DatasetParameters, generate_datasets, plan_windows  # noqa: E402
from epiformer.demo import DemoSpec, dataset_parameters, make_demo_data  # noqa: E402
from epiformer.genome import read_chrom_sizes  # noqa: E402
from epiformer.targets import read_targets  # noqa: E402


def per_base_baseline(params: DatasetParameters, windows: list[tuple[str, int, int]], out: Path) -> int:
    """The original's approach, kept deliberately literal; returns the windows written."""
    import h5py
    import pyBigWig
    import pyfaidx

    fasta = pyfaidx.Fasta(params.fasta, as_raw=True)
    cons_bw = pyBigWig.open(params.conservation)
    targets = read_targets(params.targets)
    signals = [pyBigWig.open(str(t.file)) for t in targets]
    peaks = []
    for t in targets:
        rows = [line.split("\t") for line in Path(t.peak).read_text().splitlines()]
        peaks.append([(r[0], int(r[1]), int(r[2])) for r in rows])
    n_bins = params.seq_len // params.bin_size
    seqs, conss, values, labels, names = [], [], [], [], []
    for chrom, start, end in windows:
        seq = fasta[chrom][start:end]
        if "N" in seq or "n" in seq:
            continue
        onehot = []
        for base in seq.upper():
            onehot.append([1.0 if base == b else 0.0 for b in "ACGT"])
        cons = [0.0 if math.isnan(v) else v for v in cons_bw.values(chrom, start, end)]
        window_values, window_labels = [], []
        for bw, target, peak_list in zip(signals, targets, peaks):
            raw = bw.values(chrom, start, end)
            binned = []
            for i in range(n_bins):
                v = float(np.mean(raw[i * params.bin_size:(i + 1) * params.bin_size]))
                binned.append(min(max(v, 0.0), target.clip))
            window_values.append(binned)
            bin_labels = [0] * n_bins
            for c, s, e in peak_list:
                if c == chrom and s < end and e > start:
                    first = max(s - start, 0) // params.bin_size
                    last = (min(e, end) - 1 - start) // params.bin_size
                    bin_labels[first: last + 1] = [1] * (last + 1 - first)
            window_labels.append(bin_labels)
        seqs.append(onehot)
        conss.append(cons)
        values.append(window_values)
        labels.append(window_labels)
        names.append(f"{chrom}:{start}-{end}")
    with h5py.File(out, "w") as h5:
        h5.create_dataset("inputs/seq", data=np.array(seqs, dtype=np.float32), compression="lzf")
        h5.create_dataset("inputs/seqcons", data=np.array(conss), compression="lzf")
        h5.create_dataset("targets/value", data=np.array(values), compression="lzf")
        h5.create_dataset("targets/label", data=np.array(labels, dtype=np.float32), compression="lzf")
        h5.create_dataset("segments/name", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
    return len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-windows", type=int, default=24)
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_demo_data(tmp / "demo", DemoSpec())
        params = dataset_parameters(paths, blacklist=None, seq_len=98_304, stride=8_192, nchunk=100)
        windows = plan_windows(params, read_chrom_sizes(params.chrom_sizes))
        rows = []
        start = time.perf_counter()
        written = per_base_baseline(params, windows[: args.baseline_windows], tmp / "baseline.h5")
        baseline = args.baseline_windows / (time.perf_counter() - start)
        rows.append(("per-base loops (the original's approach), 1 process", baseline, written))
        for workers in sorted({1, os.cpu_count() or 1}):
            start = time.perf_counter()
            manifest = generate_datasets(params, tmp / f"w{workers}" / "demo", workers=workers, progress=False)
            seconds = time.perf_counter() - start
            written = sum(s["windows"] for s in manifest["splits"].values())
            rows.append((f"epiformer generate-datasets, {workers} process{'es' if workers > 1 else ''}",
                         len(windows) / seconds, written))
    publish("generate-datasets", [
        f"Demo genome ({sum(DemoSpec().chrom_sizes.values()) / 1e6:.0f} Mb, 8 cell types), windows of "
        f"98,304 bp every 8,192 bp ({len(windows)} windows; the baseline runs on the first "
        f"{args.baseline_windows}). Machine: {os.cpu_count()} cores.",
        "",
        "| method | windows/s | Mb of windows/s | speed-up |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {name} | {rate:.2f} | {rate * 98_304 / 1e6:.2f} | {rate / baseline:.1f}x |" for name, rate, _ in rows),
    ], args.write)


if __name__ == "__main__":
    main()
