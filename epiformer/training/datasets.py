"""Training data: genome + conservation (optional) + per-cell-type bigWigs + blacklist -> HDF5 shards.

``generate_datasets`` tiles the genome (or takes given regions), drops windows on the blacklist
or with too many unknown bases, splits them by chromosome into train/valid/test and writes
shards of ``nchunk`` windows in parallel. ``ShardDataset`` reads them lazily for training, with
optional reverse-complement and shift augmentation, and reads a folder of the original script's
files too (:mod:`epiformer.training.original_datasets`); :func:`open_split` takes either.

Shard layout (``OUTPREFIX.{split}.{k}.h5``): ``sequence`` (n, seqlen) uint8 codes A=0 C=1 G=2
T=3 other=4; ``conservation`` (n, seqlen) float16, left out when the dataset is made without a
conservation track; ``targets`` (n, targets, bins) float32 (bases without data count as 0, or
with ``missing="nan"`` are left out and a bin without any data is NaN);
``labels`` (n, targets, bins) uint8 peak overlap; ``chrom``, ``start``, ``end``, ``name`` per
window (0-based half-open, ``name`` is ``chrom:start-end``); attributes ``targets`` and
``parameters`` (JSON, ``missing`` included), ``has_conservation`` and ``bins_without_data`` (per
target). ``OUTPREFIX.json`` lists the shards of every
split and says ``has_conservation`` too. Shards and manifests written before conservation was
optional lack the flag and always hold conservation.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from epiformer.errors import UserError, print_warning
from epiformer.genome.chrom_names import ChromNames, name_examples
from epiformer.genome.encoding import encode_codes, sequence_codes
from epiformer.genome.intervals import genome_intervals, read_bed_intervals, read_chrom_sizes
from epiformer.genome.reader import Genome
from epiformer.genome.targets import (
    MISSING_RULES,
    PeakSet,
    Target,
    bin_values,
    bins_without_data,
    fill_missing,
    read_targets,
)
from epiformer.io.writing import atomic_path
from epiformer.training.original_datasets import (
    OriginalDatasetError,
    OriginalFile,
    OriginalWindows,
    is_original_dataset,
    open_original,
    read_original_dataset,
)

SPLITS = ("train", "valid", "test")
EMPTY_BINS_WARNING = 0.05       # the share of a split's bins without data that makes generate-datasets warn
FORMAT = "epiformer-dataset"
FORMAT_VERSION = 1


class DatasetError(UserError, ValueError):
    """Inputs or shards that cannot be used, with a message naming the file and the problem."""


@dataclass
class DatasetParameters:
    """Everything that determines the content of the shards."""

    fasta: str
    chrom_sizes: str
    targets: str
    conservation: str | None = None
    blacklist: str | None = None
    bed: str | None = None
    seq_len: int = 98_304
    bin_size: int = 128
    stride: int | None = None
    nchunk: int = 5000
    max_n_frac: float = 0.0
    missing: str = "zero"
    valid_chroms: list[str] = field(default_factory=list)
    test_chroms: list[str] = field(default_factory=list)

    @property
    def has_conservation(self) -> bool:
        return self.conservation is not None

    def digest(self) -> str:
        """Short hash of the parameters, stored in each shard so a rerun can reuse finished ones."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def manifest_has_conservation(manifest: dict) -> bool:
    """Whether a dataset (its manifest) holds conservation; datasets made before conservation was
    optional lack the flag and always hold it."""
    return bool(manifest.get("has_conservation", True))


def genome_name(fasta: str | os.PathLike) -> str:
    """The assembly name taken from the FASTA file name: hg38.fa.gz -> hg38, hg38.2bit -> hg38."""
    name = Path(fasta).name
    for suffix in (".gz", ".bgz", ".fa", ".fasta", ".fna", ".2bit"):
        name = name.removesuffix(suffix)
    return name


def _chroms_without_data(path: Path, needed: dict[str, int], what: str) -> list[str]:
    """The chromosomes of ``needed`` (the genome's names) that a bigWig has no data for, its names
    mapped onto the genome's (:func:`~epiformer.genome.chrom_names.genome_chrom_name`); a bigWig without
    any of them is an error (another assembly, or names no rule maps)."""
    import pyBigWig

    if not path.is_file():
        raise DatasetError(f"{what} {path}: no such file")
    handle = pyBigWig.open(str(path))
    if handle is None or not handle.isBigWig():
        raise DatasetError(f"{what} {path} cannot be opened as a bigWig")
    chroms = handle.chroms()
    handle.close()
    in_file = ChromNames(needed, f"{what} {path}").in_file(chroms)
    missing = [c for c in needed if c not in in_file]
    if needed and not in_file:
        raise DatasetError(f"{what} {path} has none of the chromosomes with windows ({name_examples(missing)}); "
                           f"it has {name_examples(list(chroms))}: is it of another assembly?")
    return missing


def read_regions(path: str | os.PathLike, chrom_sizes: dict[str, int],
                 warn: Callable[[str], None] = print_warning) -> list[tuple[str, int, int]]:
    """BED regions (chrom, start, end) on the genome's names (those of ``chrom_sizes``); regions
    on a chromosome with no counterpart there are skipped, with one warning."""
    return genome_intervals(path, chrom_sizes, "BED file", warn, "the sizes file", "regions")


def plan_windows(params: DatasetParameters, chrom_sizes: dict[str, int],
                 warn: Callable[[str], None] = print_warning) -> list[tuple[str, int, int]]:
    """Windows of ``seq_len``: tiled from 0 with ``stride`` (the short last window is dropped), or
    one centred on each ``bed`` region; windows reaching past a chromosome end are dropped."""
    seq_len = params.seq_len
    if params.bed:
        windows = []
        for chrom, start, end in read_regions(params.bed, chrom_sizes, warn):
            lo = (start + end) // 2 - seq_len // 2
            if 0 <= lo and lo + seq_len <= chrom_sizes[chrom]:
                windows.append((chrom, lo, lo + seq_len))
        return sorted(set(windows), key=lambda w: (list(chrom_sizes).index(w[0]), w[1]))
    stride = params.stride or seq_len
    return [(chrom, int(s), int(s) + seq_len) for chrom, size in chrom_sizes.items()
            for s in range(0, size - seq_len + 1, stride)]


def drop_blacklisted(windows: list[tuple[str, int, int]], blacklist: str | os.PathLike,
                     chrom_sizes: dict[str, int], warn: Callable[[str], None] = print_warning
                     ) -> list[tuple[str, int, int]]:
    """Windows that overlap no blacklist interval (by even one base), using bedtools intersect.
    The blacklist's names map onto the genome's (those of ``chrom_sizes``); intervals on a
    chromosome with no counterpart are skipped, with one warning, and a blacklist of which none
    maps is an error."""
    import pybedtools

    names = ChromNames(chrom_sizes, f"blacklist {blacklist}", "the sizes file")
    listed = names.intervals(read_bed_intervals(blacklist, "blacklist"))
    if names.skipped and not listed:
        raise DatasetError(f"blacklist {blacklist} names none of the genome's chromosomes (it names "
                           f"{name_examples(sorted(names.skipped))}; the sizes file "
                           f"{name_examples(list(chrom_sizes))})")
    if names.skipped:
        warn(names.summary("intervals"))
    if not windows or not listed:
        return windows
    kept = pybedtools.BedTool([(c, s, e) for c, s, e in windows]).intersect(pybedtools.BedTool(listed), v=True)
    result = {(iv.chrom, iv.start, iv.end) for iv in kept}
    pybedtools.cleanup()
    return [w for w in windows if w in result]


def default_split(chroms_with_windows: list[str], valid: list[str] | None,
                  test: list[str] | None) -> tuple[list[str], list[str]]:
    """Validation/test chromosomes: as given, else chr9/chr8 when present, else the last two."""
    if valid is None:
        valid = ["chr9"] if "chr9" in chroms_with_windows else chroms_with_windows[-2:-1]
    if test is None:
        test = ["chr8"] if "chr8" in chroms_with_windows else chroms_with_windows[-1:]
    return list(valid), list(test)


@dataclass
class _ShardTask:
    split: str
    index: int
    windows: list[tuple[str, int, int]]
    path: Path


@dataclass
class _Rows:
    """The computed rows of consecutive windows of one shard (what a worker hands the writer):
    the windows kept, their arrays, how many were dropped for unknown bases and the bins without
    any data per target."""

    windows: list[tuple[str, int, int]]
    codes: np.ndarray                    # (k, seq_len) uint8
    conservation: np.ndarray | None      # (k, seq_len) float16
    targets: np.ndarray                  # (k, targets, bins) float32
    labels: np.ndarray                   # (k, targets, bins) uint8
    dropped: int
    empty_bins: np.ndarray               # (targets,) int64


class _Inputs:
    """The genome, the bigWigs and the peaks of a dataset, opened once per process."""

    def __init__(self, params: DatasetParameters, targets: list[Target], peaks: list[PeakSet | None]) -> None:
        import pyBigWig

        self.params, self.targets, self.peaks = params, targets, peaks
        self.genome = Genome(params.fasta, params.conservation)
        self.signals = [pyBigWig.open(str(t.file)) for t in targets]
        self.signal_names = [ChromNames(self.genome.chrom_sizes, f"bigWig {t.file}").in_file(bw.chroms())
                             for t, bw in zip(targets, self.signals)]      # the genome's name -> the bigWig's

    def close(self) -> None:
        for bw in self.signals:
            bw.close()
        self.genome.close()

    def rows(self, windows: list[tuple[str, int, int]]) -> _Rows:
        """Read, encode and bin consecutive windows; a window with too many unknown bases is dropped."""
        p, n_targets = self.params, len(self.targets)
        n_bins = p.seq_len // p.bin_size
        kept, codes, cons, values, labels = [], [], [], [], []
        empty = np.zeros(n_targets, np.int64)
        for chrom, lo, hi, group in _spans(windows, max(8 * p.seq_len, 1_000_000)):
            span_codes = sequence_codes(self.genome.sequence(chrom, lo, hi))
            span_cons = self.genome.conservation(chrom, lo, hi, np.float16) if p.has_conservation else None
            span_values = [bw.values(names[chrom], lo, hi, numpy=True)
                           for bw, names in zip(self.signals, self.signal_names)]
            span_missing = [np.isnan(v) for v in span_values]
            span_values = [fill_missing(v, p.missing, missing) for v, missing in zip(span_values, span_missing)]
            for start, end in group:
                window_codes = span_codes[start - lo: end - lo]
                if np.count_nonzero(window_codes == 4) > p.max_n_frac * p.seq_len:
                    continue
                kept.append((chrom, start, end))
                codes.append(window_codes)
                if span_cons is not None:
                    cons.append(span_cons[start - lo: end - lo])
                for k, missing in enumerate(span_missing):
                    empty[k] += bins_without_data(missing[start - lo: end - lo], p.bin_size)
                values.append([bin_values(v[start - lo: end - lo], p.bin_size, t.sum_stat, t.clip, t.scale)
                               for v, t in zip(span_values, self.targets)])
                labels.append([ps.labels(chrom, start, end, p.bin_size) if ps else np.zeros(n_bins, np.uint8)
                               for ps in self.peaks])
        shape = (len(kept), n_targets, n_bins)
        return _Rows(kept, np.array(codes, np.uint8).reshape(len(kept), p.seq_len),
                     np.array(cons, np.float16).reshape(len(kept), p.seq_len) if p.has_conservation else None,
                     np.array(values, np.float32).reshape(shape), np.array(labels, np.uint8).reshape(shape),
                     len(windows) - len(kept), empty)


_PROCESS_INPUTS: list[_Inputs] = []       # a worker process's inputs, opened by its initializer


def _open_worker_inputs(params: DatasetParameters, targets: list[Target], peaks: list[PeakSet | None]) -> None:
    _PROCESS_INPUTS.append(_Inputs(params, targets, peaks))


def _worker_rows(windows: list[tuple[str, int, int]]) -> _Rows:
    return _PROCESS_INPUTS[0].rows(windows)


ROWS_PER_BLOCK = 16      # windows a worker computes at a time


def _write_shards(tasks: list[_ShardTask], params: DatasetParameters, targets: list[Target],
                  peaks: list[PeakSet | None], workers: int, bar) -> list[tuple[str, str, int, int, list[int]]]:
    """Write the shards in order. Blocks of windows are computed in ``workers`` processes (here
    with one) and written by this process, each shard under a temporary name then renamed; the
    content does not depend on the number of workers."""
    from collections import deque
    from concurrent.futures import Future

    task_blocks = [[task.windows[lo: lo + ROWS_PER_BLOCK] for lo in range(0, len(task.windows), ROWS_PER_BLOCK)]
                   for task in tasks]
    blocks = [block for per_task in task_blocks for block in per_task]
    results = []
    if workers > 1 and len(blocks) > 1:
        # forkserver: the workers start from a clean process, whatever this one has run (a fork
        # after torch's or BLAS's thread pools have started can wait forever in the child)
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_open_worker_inputs,
                                   initargs=(params, targets, peaks),
                                   mp_context=multiprocessing.get_context("forkserver"))
        local = None
    else:
        pool, local = None, _Inputs(params, targets, peaks)
    in_flight: deque[Future] = deque()
    pending = iter(blocks)

    def next_rows() -> _Rows:
        if local is not None:
            return local.rows(next(pending))
        while len(in_flight) < 4 * workers:
            block = next(pending, None)
            if block is None:
                break
            in_flight.append(pool.submit(_worker_rows, block))
        return in_flight.popleft().result()

    try:
        for task, per_task in zip(tasks, task_blocks):
            results.append(_write_shard(task, params, targets, (next_rows() for _ in per_task), bar))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if local is not None:
            local.close()
    return results


def _write_shard(task: _ShardTask, params: DatasetParameters, targets: list[Target], blocks,
                 bar) -> tuple[str, str, int, int, list[int]]:
    """Write one shard from its blocks of rows; return (split, file name, windows written,
    windows dropped for unknown bases, bins without any data per target)."""
    import h5py

    p = params
    n_bins, n_targets, size = p.seq_len // p.bin_size, len(targets), len(task.windows)
    kept: list[tuple[str, int, int]] = []
    dropped, empty_bins = 0, np.zeros(n_targets, np.int64)
    with atomic_path(task.path) as tmp, h5py.File(tmp, "w") as h5:
        opts = {"compression": "lzf", "shuffle": True}
        per_base = {"shape": (size, p.seq_len), "maxshape": (None, p.seq_len), "chunks": (1, p.seq_len)}
        per_bin = {"shape": (size, n_targets, n_bins), "maxshape": (None, n_targets, n_bins),
                   "chunks": (1, n_targets, n_bins)}
        sequence = h5.create_dataset("sequence", dtype=np.uint8, **per_base, compression="lzf")
        conservation = (h5.create_dataset("conservation", dtype=np.float16, **per_base, **opts)
                        if p.has_conservation else None)
        values = h5.create_dataset("targets", dtype=np.float32, **per_bin, **opts)
        labels = h5.create_dataset("labels", dtype=np.uint8, **per_bin, **opts)
        for rows in blocks:
            lo, hi = len(kept), len(kept) + len(rows.windows)
            if hi > lo:
                sequence[lo:hi] = rows.codes
                if conservation is not None:
                    conservation[lo:hi] = rows.conservation
                values[lo:hi], labels[lo:hi] = rows.targets, rows.labels
            kept += rows.windows
            dropped += rows.dropped
            empty_bins += rows.empty_bins
            bar.update(len(rows.windows) + rows.dropped)
        for dataset in (sequence, conservation, values, labels):
            if dataset is not None:
                dataset.resize(len(kept), axis=0)
        text = h5py.string_dtype()
        h5.create_dataset("chrom", data=np.array([w[0] for w in kept], dtype=object), dtype=text)
        h5.create_dataset("start", data=np.array([w[1] for w in kept], np.int64))
        h5.create_dataset("end", data=np.array([w[2] for w in kept], np.int64))
        h5.create_dataset("name", data=np.array([f"{c}:{s}-{e}" for c, s, e in kept], dtype=object), dtype=text)
        h5.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "split": task.split,
                         "genome": genome_name(p.fasta), "has_conservation": p.has_conservation,
                         "digest": p.digest(), "parameters": json.dumps(asdict(p)),
                         "bins_without_data": json.dumps(empty_bins.tolist()),
                         "targets": json.dumps([t.to_dict() for t in targets])})
    return task.split, task.path.name, len(kept), dropped, empty_bins.tolist()


def _spans(windows: list[tuple[str, int, int]], max_span: int):
    """Group sorted windows that overlap on one chromosome into spans read once (overlapping
    windows share their bases): yields (chrom, span start, span end, [(start, end), ...])."""
    group: list[tuple[int, int]] = []
    chrom, span_end = None, 0
    for c, start, end in windows:
        if group and (c != chrom or start >= span_end or end - group[0][0] > max_span):
            yield chrom, group[0][0], span_end, group
            group = []
        if not group:
            chrom, span_end = c, end
        group.append((start, end))
        span_end = max(span_end, end)
    if group:
        yield chrom, group[0][0], span_end, group


def _finished(path: Path, digest: str) -> tuple[int, list[int]] | None:
    """Window count and bins without data per target of a shard already written with the same
    parameters, else None."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("digest") != digest:
                return None
            return int(h5["sequence"].shape[0]), json.loads(h5.attrs["bins_without_data"])
    except (OSError, KeyError, ValueError):
        return None


def generate_datasets(params: DatasetParameters, outprefix: str | os.PathLike, workers: int = 1,
                      progress: bool = True, warn: Callable[[str], None] | None = None) -> dict:
    """Check the inputs, plan windows and splits, write the shards and ``OUTPREFIX.json``.

    Returns the manifest (shards, window counts and bins without data per target, per split).
    Shards already written by an interrupted run with the same parameters are kept. A target
    with more than 5% of a split's bins without any data is named through ``warn`` (default:
    standard error).

    The FASTA's chromosome names are the truth: those of the sizes file, the blacklist, the
    ``bed`` regions, the bigWigs and the peaks map onto them
    (:func:`~epiformer.genome.chrom_names.genome_chrom_name`), and what names none is skipped with one
    warning per file. The windows of a chromosome that the conservation or a target's bigWig
    has no data for are skipped (not trained on as made-up zeros): one warning, and the
    manifest's ``skipped_chroms`` counts them.
    """
    warn = warn or print_warning
    from tqdm import tqdm

    listed = read_chrom_sizes(params.chrom_sizes)
    targets = read_targets(params.targets)
    if params.seq_len % params.bin_size:
        raise DatasetError(f"seqlen {params.seq_len} is not a multiple of binsize {params.bin_size}")
    if params.nchunk < 1:
        raise DatasetError(f"nchunk must be at least 1, got {params.nchunk}")
    if not 0.0 <= params.max_n_frac <= 1.0:
        raise DatasetError(f"max-n-frac must be between 0 and 1, got {params.max_n_frac}")
    if params.missing not in MISSING_RULES:
        raise DatasetError(f"missing must be one of {', '.join(MISSING_RULES)}, got {params.missing!r}")
    with Genome(params.fasta) as genome:
        names = ChromNames(genome.chrom_sizes, f"sizes file {params.chrom_sizes}", f"FASTA {params.fasta}")
        of_genome = {name: chrom for chrom, name in names.in_file(listed).items()}
        if not of_genome:
            raise DatasetError(f"sizes file {params.chrom_sizes} names none of the chromosomes of FASTA {params.fasta} "
                               f"({name_examples(list(listed))} vs {name_examples(list(genome.chrom_sizes))})")
        chrom_sizes = {of_genome[name]: size for name, size in listed.items() if name in of_genome}
        wrong = [f"{c} ({chrom_sizes[c]} vs {genome.chrom_sizes[c]})" for c in chrom_sizes
                 if genome.chrom_sizes[c] != chrom_sizes[c]]
        if wrong:
            raise DatasetError(f"sizes file {params.chrom_sizes} disagrees with FASTA {params.fasta} on "
                               f"{', '.join(wrong[:3])}: are they the same assembly?")
    if names.skipped:
        warn(names.summary())

    windows = plan_windows(params, chrom_sizes, warn)
    if params.blacklist:
        windows = drop_blacklisted(windows, params.blacklist, chrom_sizes, warn)
    used = {c: chrom_sizes[c] for c in dict.fromkeys(w[0] for w in windows)}
    tracks = [(target.file, f"bigWig of target {target.identifier}") for target in targets]
    if params.has_conservation:
        tracks.insert(0, (Path(params.conservation), "conservation bigWig"))
    without_data: dict[str, list[str]] = {}         # chromosome -> the bigWigs without data for it
    for path, what in tracks:
        for chrom in _chroms_without_data(path, used, what):
            without_data.setdefault(chrom, []).append(str(path))
    skipped_chroms = {chrom: {"windows": sum(w[0] == chrom for w in windows), "no_data_in": files}
                      for chrom, files in without_data.items()}
    if skipped_chroms:
        windows = [w for w in windows if w[0] not in without_data]
        used = {c: size for c, size in used.items() if c not in without_data}
        warn(f"warning: skipped the {sum(s['windows'] for s in skipped_chroms.values()):,} windows on "
             f"{len(skipped_chroms)} chromosome(s) that a bigWig has no data for, rather than train on made-up "
             "values: " + name_examples([f"{c} ({', '.join(Path(f).name for f in s['no_data_in'])})"
                                         for c, s in skipped_chroms.items()]))
    peaks = []
    for target in targets:
        names = ChromNames(chrom_sizes, f"peak file {target.peak}", "the sizes file")
        peaks.append(PeakSet(target.peak, names) if target.peak else None)
        if names.skipped:
            warn(names.summary("peaks"))
    if not windows:
        raise DatasetError("no window is left: every window reaches past a chromosome end, overlaps the "
                           "blacklist or lies on a chromosome a bigWig lacks (is seqlen larger than the chromosomes?)")
    valid, test = default_split(list(used), params.valid_chroms or None, params.test_chroms or None)
    unknown = [c for c in valid + test if c not in chrom_sizes]
    if unknown:
        raise DatasetError(f"split chromosome {', '.join(unknown)} is not in {params.chrom_sizes}")
    if set(valid) & set(test):
        raise DatasetError(f"chromosome {', '.join(sorted(set(valid) & set(test)))} is in both the "
                           "validation and the test split")
    params = replace(params, valid_chroms=valid, test_chroms=test)
    split_of = {c: "valid" if c in valid else "test" if c in test else "train" for c in chrom_sizes}

    outprefix = Path(outprefix)
    outprefix.parent.mkdir(parents=True, exist_ok=True)
    tasks: list[_ShardTask] = []
    for split in SPLITS:
        chosen = [w for w in windows if split_of[w[0]] == split]
        if not chosen:
            raise DatasetError(f"the {split} split is empty: no window on "
                               f"{', '.join(c for c in chrom_sizes if split_of[c] == split) or 'any chromosome'}"
                               " (choose chromosomes with --valid-chroms / --test-chroms)")
        for k in range(0, len(chosen), params.nchunk):
            tasks.append(_ShardTask(split, k // params.nchunk, chosen[k: k + params.nchunk],
                                    Path(f"{outprefix}.{split}.{k // params.nchunk}.h5")))

    digest = params.digest()
    results: list[tuple[str, str, int, int, list[int]]] = []
    todo = []
    for task in tasks:
        finished = _finished(task.path, digest)
        if finished is None:
            todo.append(task)
        else:
            count, empty_bins = finished
            results.append((task.split, task.path.name, count, len(task.windows) - count, empty_bins))
    bar = tqdm(total=sum(len(t.windows) for t in tasks), unit="window", disable=not progress,
               desc="generate-datasets", initial=sum(len(t.windows) for t in tasks if t not in todo))
    results += _write_shards(todo, params, targets, peaks, workers, bar)
    bar.close()

    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "genome": genome_name(params.fasta),
                "has_conservation": params.has_conservation, "parameters": asdict(params),
                "targets": [t.to_dict() for t in targets], "skipped_chroms": skipped_chroms, "splits": {}}
    for split in SPLITS:
        rows = sorted((r for r in results if r[0] == split), key=lambda r: int(r[1].rsplit(".", 2)[-2]))
        windows = sum(r[2] for r in rows)
        empty = [sum(r[4][k] for r in rows) for k in range(len(targets))]
        manifest["splits"][split] = {
            "chroms": [c for c in chrom_sizes if split_of[c] == split],
            "shards": [r[1] for r in rows], "windows": windows,
            "dropped_for_n": sum(r[3] for r in rows),
            "bins_without_data": {t.identifier: n for t, n in zip(targets, empty)}}
        n_bins = windows * (params.seq_len // params.bin_size)
        for target, n in zip(targets, empty):
            if n_bins and n > EMPTY_BINS_WARNING * n_bins:
                warn(f"warning: {n / n_bins:.0%} of the {split} split's bins have no data in the bigWig of "
                     f"target {target.identifier} ({target.file}); they count as "
                     f"{'0' if params.missing == 'zero' else 'NaN, masked in training'} (--missing {params.missing})")
    with atomic_path(f"{outprefix}.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return manifest


def read_dataset_manifest(outprefix_or_dir: str | os.PathLike) -> tuple[dict, Path]:
    """The manifest of a dataset, from its ``OUTPREFIX`` or a folder holding exactly one."""
    path = Path(outprefix_or_dir)
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        found = [f for f in found if _is_manifest(f)]
        if len(found) != 1:
            raise DatasetError(f"dataset folder {path} holds {len(found)} dataset manifests "
                               "(OUTPREFIX.json); name one with its OUTPREFIX")
        path = found[0]
    elif path.suffix != ".json":
        path = Path(f"{path}.json")
    if not path.is_file():
        raise DatasetError(f"dataset manifest {path}: no such file (run epiformer generate-datasets)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"dataset manifest {path} is not valid JSON: {err}") from None
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{path} is not an epiformer dataset manifest")
    return manifest, path.parent


def _is_manifest(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class SplitOptions:
    """How a folder of the original's HDF5 files is split and read: validation and test
    chromosomes (None: as :func:`default_split` chooses), the genome FASTA for files whose
    ``inputs/seq`` holds window names, and a targets.txt whose row i names target i (the files
    record no names: ``target_0`` ... without it). A dataset of generate-datasets is split
    already and names its targets: a targets.txt given for it must list the same names."""

    valid_chroms: list[str] | None = None
    test_chroms: list[str] | None = None
    fasta: str | None = None
    targets: str | None = None


@dataclass
class _Shard:
    """A file and the rows of it that belong to the split (the original's files mix chromosomes)."""

    path: Path
    rows: np.ndarray
    original: OriginalFile | None = None


class ShardDataset:
    """Windows of one split, read lazily from HDF5 shards; a torch ``Dataset``.

    Item ``i`` is ``(x, y)``: ``x`` (4, seq_len) float32 one-hot times exp(conservation)
    (``use_conservation=False`` leaves out the factor; the default, None, uses conservation when
    the shards hold it), ``y`` (targets, bins) float32. Shards made without conservation read as
    conservation 0 and refuse ``use_conservation=True``. With
    ``augment``, each item is reverse-complemented with probability 1/2 (sequence, conservation
    and targets flipped together) and shifted by up to ``max_shift`` bases (sequence and
    conservation move together, padded with N and 0; targets stay aligned to the window). With
    ``cons_dropout``, a window's conservation is set to 0 (a factor of 1) with that probability.
    Random draws use torch's generator, so DataLoader worker seeding applies. Files are opened
    on first use in each process, so DataLoader workers each hold their own handles.
    :meth:`from_original` reads a folder of the original script's files instead.
    """

    def __init__(self, paths: list[str | os.PathLike], augment: bool = False, max_shift: int = 3,
                 use_conservation: bool | None = None, target_index: int | None = None,
                 cons_dropout: float = 0.0) -> None:
        import h5py

        paths = [Path(p) for p in paths]
        if not paths:
            raise DatasetError("no shard files given")
        shards, targets, parameters, has_conservation = [], None, None, None
        for path in paths:
            try:
                with h5py.File(path, "r") as h5:
                    length = int(h5["sequence"].shape[0])
                    shard_targets = json.loads(h5.attrs["targets"])
                    shard_parameters = json.loads(h5.attrs["parameters"])
                    has_cons = bool(h5.attrs.get("has_conservation", "conservation" in h5))
            except (OSError, KeyError, ValueError) as err:
                raise DatasetError(f"shard {path} cannot be read (corrupt or not a dataset shard): "
                                   f"{str(err).splitlines()[0][:200]}") from None
            if targets is None:
                targets, parameters, has_conservation = shard_targets, shard_parameters, has_cons
            elif [t["identifier"] for t in shard_targets] != [t["identifier"] for t in targets] or \
                    shard_parameters["seq_len"] != parameters["seq_len"] or \
                    shard_parameters["bin_size"] != parameters["bin_size"]:
                raise DatasetError(f"shard {path} has other targets or window sizes than {paths[0]}")
            elif has_cons != has_conservation:
                raise DatasetError(f"shard {path} {'holds' if has_cons else 'has no'} conservation, "
                                   f"unlike {paths[0]}")
            shards.append(_Shard(path, np.arange(length)))
        self._setup(shards, targets, parameters, has_conservation, None, augment, max_shift, use_conservation,
                    target_index, cons_dropout)

    def _setup(self, shards: list[_Shard], targets: list[dict], parameters: dict, has_conservation: bool,
               original: OriginalWindows | None, augment: bool, max_shift: int, use_conservation: bool | None,
               target_index: int | None, cons_dropout: float = 0.0) -> None:
        self._shards, self.targets, self.parameters = shards, targets, parameters
        self.paths = [shard.path for shard in shards]
        self.has_conservation, self._original = has_conservation, original
        self.augment, self.max_shift, self.cons_dropout = augment, max_shift, cons_dropout
        self.target_index = target_index
        if use_conservation is None:
            use_conservation = self.has_conservation
        elif use_conservation and not self.has_conservation:
            raise DatasetError(f"shard {self.paths[0]} holds no conservation (the dataset was made without "
                               "--seqcons): read it with use_conservation=False")
        self.use_conservation = use_conservation
        if target_index is not None and not 0 <= target_index < len(self.targets):
            raise DatasetError(f"target index {target_index} is out of range: the dataset has "
                               f"{len(self.targets)} targets")
        self._offsets = np.cumsum([0] + [len(shard.rows) for shard in shards])
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()

    @classmethod
    def from_manifest(cls, outprefix_or_dir: str | os.PathLike, split: str, **kwargs) -> "ShardDataset":
        """The ``split`` (train, valid or test) of a dataset written by :func:`generate_datasets`."""
        manifest, folder = read_dataset_manifest(outprefix_or_dir)
        if split not in SPLITS:
            raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        shards = manifest["splits"][split]["shards"]
        if not shards:
            raise DatasetError(f"the {split} split of {folder} has no shards")
        return cls([folder / s for s in shards], **kwargs)

    @classmethod
    def from_original(cls, folder: str | os.PathLike, split: str, options: SplitOptions | None = None,
                      augment: bool = False, max_shift: int = 3, use_conservation: bool | None = None,
                      target_index: int | None = None, cons_dropout: float = 0.0) -> "ShardDataset":
        """The ``split`` of a folder of the original ``generate_datasets.py``'s files, split by
        the chromosome of each window (``segments/name``) and its targets named as ``options`` say."""
        options = options or SplitOptions()
        if split not in SPLITS:
            raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        try:
            files = read_original_dataset(folder, options.fasta)
        except OriginalDatasetError as err:
            raise DatasetError(str(err)) from None
        chroms = list(dict.fromkeys(w[0] for f in files for w in f.windows))
        valid, test = default_split(chroms, options.valid_chroms or None, options.test_chroms or None)
        unknown = [c for c in valid + test if c not in chroms]
        if unknown:
            raise DatasetError(f"split chromosome {', '.join(unknown)} has no window in {folder} (its windows are "
                               f"on {', '.join(chroms[:8])}{' ...' if len(chroms) > 8 else ''})")
        if set(valid) & set(test):
            raise DatasetError(f"chromosome {', '.join(sorted(set(valid) & set(test)))} is in both the "
                               "validation and the test split")
        chosen = set(valid if split == "valid" else test if split == "test" else
                     [c for c in chroms if c not in valid + test])
        shards = [_Shard(f.path, np.array([row for row, w in enumerate(f.windows) if w[0] in chosen], np.int64), f)
                  for f in files]
        shards = [shard for shard in shards if len(shard.rows)]
        if not shards:
            raise DatasetError(f"the {split} split of {folder} is empty: no window on "
                               f"{', '.join(sorted(chosen)) or 'any chromosome'} (choose chromosomes with "
                               "--valid-chroms / --test-chroms)")
        first = files[0]
        names = _named_targets(options.targets, first.n_targets, first.path) if options.targets else \
            [f"target_{i}" for i in range(first.n_targets)]
        targets = [{"identifier": name} for name in names]
        parameters = {"seq_len": first.seq_len, "bin_size": first.seq_len // first.n_bins, "format": "original",
                      "missing": "original", "fasta": options.fasta, "valid_chroms": valid, "test_chroms": test}
        dataset = cls.__new__(cls)
        dataset._setup(shards, targets, parameters, True, OriginalWindows(options.fasta), augment, max_shift,
                       use_conservation, target_index, cons_dropout)
        return dataset

    @property
    def target_names(self) -> list[str]:
        names = [t["identifier"] for t in self.targets]
        return names if self.target_index is None else [names[self.target_index]]

    @property
    def seq_len(self) -> int:
        return int(self.parameters["seq_len"])

    @property
    def missing(self) -> str:
        """How the targets count bigWig bases without data: ``zero`` or ``nan`` (datasets made before
        the choice existed), or ``original`` (the original's mean: one such base makes its bin NaN)."""
        return str(self.parameters.get("missing", "nan"))

    @property
    def genome(self) -> str | None:
        """The assembly name, from the FASTA the windows were read from (None when not known)."""
        fasta = self.parameters.get("fasta")
        return genome_name(fasta) if fasta else None

    @property
    def bin_size(self) -> int:
        return int(self.parameters["bin_size"])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _file(self, i: int):
        import h5py

        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if i not in self._handles:
            self._handles[i] = open_original(self.paths[i]) if self._shards[i].original else h5py.File(self.paths[i], "r")
        return self._handles[i]

    def window(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """Raw (sequence codes, conservation, targets, name) of one window, without augmentation
        (conservation 0 where the shards hold none)."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        shard = int(np.searchsorted(self._offsets, index, side="right") - 1)
        info = self._shards[shard]
        row = int(info.rows[index - int(self._offsets[shard])])
        h5 = self._file(shard)
        if info.original is not None:
            codes, cons, targets, name = self._original.read(h5, info.original, row)
        else:
            targets = h5["targets"][row]
            name = h5["name"][row]
            name = name.decode() if isinstance(name, bytes) else str(name)
            cons = h5["conservation"][row].astype(np.float32) if self.has_conservation else \
                np.zeros(self.seq_len, np.float32)
            codes = h5["sequence"][row]
        return codes, cons, self._chosen_targets(targets), name

    def _chosen_targets(self, targets: np.ndarray) -> np.ndarray:
        return targets if self.target_index is None else targets[self.target_index: self.target_index + 1]

    def window_targets(self):
        """Each window's targets, in order, without augmentation (a shard's block at a time)."""
        for shard_index, shard in enumerate(self._shards):
            if shard.original is not None:
                start = int(self._offsets[shard_index])
                yield from (self.window(start + k)[2] for k in range(len(shard.rows)))
                continue
            block = self._file(shard_index)["targets"][:]
            yield from (self._chosen_targets(block[row]) for row in shard.rows)

    def __getitem__(self, index: int):
        import torch

        codes, cons, targets, _ = self.window(index)
        if self.augment:
            codes, cons, targets = augment_window(codes, cons, targets, self.max_shift)
        if self.cons_dropout and torch.rand(()).item() < self.cons_dropout:
            cons = np.zeros_like(cons)
        x = encode_codes(codes, cons if self.use_conservation else None)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), \
            torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))


def open_split(dataset: str | os.PathLike, split: str, options: SplitOptions | None = None,
               **kwargs) -> ShardDataset:
    """One split of a dataset: a generate-datasets dataset (its folder or OUTPREFIX) or a folder of
    the original's files, recognised by their layout and split as ``options`` say."""
    options = options or SplitOptions()
    if is_original_dataset(dataset):
        return ShardDataset.from_original(dataset, split, options, **kwargs)
    read_dataset_manifest(dataset)              # a clear error when it is neither kind
    given = [flag for flag, value in (("--valid-chroms", options.valid_chroms), ("--test-chroms", options.test_chroms),
                                      ("--fa", options.fasta)) if value]
    if given:
        raise DatasetError(f"{', '.join(given)} applies to the original's datasets only: {dataset} was split and "
                           "its sequences stored by generate-datasets")
    ds = ShardDataset.from_manifest(dataset, split, **kwargs)
    if options.targets:
        held = [t["identifier"] for t in ds.targets]
        named = _named_targets(options.targets, len(held), ds.paths[0])
        if named != held:
            raise DatasetError(f"{options.targets} names the targets {named} but {ds.paths[0]} holds {held}: "
                               "generate-datasets recorded their names, and --targets may only repeat them "
                               "(in the same order)")
    return ds


def _named_targets(targets: str | os.PathLike, count: int, source: str | os.PathLike) -> list[str]:
    """The identifiers of a targets.txt, row i naming target i of a dataset file ``source`` that
    holds ``count`` targets; a different count is an error naming both files."""
    names = [t.identifier for t in read_targets(targets)]
    if len(names) != count:
        raise DatasetError(f"{targets} lists {len(names)} target(s) but {source} holds {count}: row i of "
                           "targets.txt names target i, so both must have as many")
    return names


def dataset_has_conservation(dataset: str | os.PathLike) -> bool:
    """Whether a dataset holds conservation (the original's files always do)."""
    return True if is_original_dataset(dataset) else manifest_has_conservation(read_dataset_manifest(dataset)[0])


_COMPLEMENT_CODES = np.array([3, 2, 1, 0, 4], dtype=np.uint8)


def reverse_complement_codes(codes: np.ndarray) -> np.ndarray:
    """Reverse complement of base codes (A=0 C=1 G=2 T=3 other=4)."""
    return _COMPLEMENT_CODES[codes[::-1]]


def shift_window(codes: np.ndarray, cons: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Move sequence and conservation by ``shift`` bases (positive: towards higher positions),
    filling the uncovered end with N and conservation 0."""
    if shift == 0:
        return codes, cons
    out_codes = np.full_like(codes, 4)
    out_cons = np.zeros_like(cons)
    if shift > 0:
        out_codes[shift:], out_cons[shift:] = codes[:-shift], cons[:-shift]
    else:
        out_codes[:shift], out_cons[:shift] = codes[-shift:], cons[-shift:]
    return out_codes, out_cons


def augment_window(codes: np.ndarray, cons: np.ndarray, targets: np.ndarray,
                   max_shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random reverse complement (p = 1/2) and shift in [-max_shift, max_shift], drawn with torch."""
    import torch

    if max_shift:
        shift = int(torch.randint(-max_shift, max_shift + 1, ()).item())
        codes, cons = shift_window(codes, cons, shift)
    if torch.rand(()).item() < 0.5:
        codes, cons, targets = reverse_complement_codes(codes), cons[::-1], targets[..., ::-1]
    return codes, cons, targets
