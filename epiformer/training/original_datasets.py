"""Datasets written by the original ``generate_datasets.py``, read as they are.

A folder of ``OUTPREFIX.{k}.h5`` files, each compressed with the LZ4 filter of ``hdf5plugin``:
``inputs/seq`` (n,) strings, ``inputs/seqcons`` (n, seq_len) conservation per base,
``targets/value`` (n, targets, bins), ``targets/label`` (only in chunks with a peak) and
``segments/name`` (n,) ``chrom:start-end`` (0-based, as bedtools wrote the windows). The files
hold windows of every chromosome in genome order; the splits are made here, by chromosome, from
``segments/name``. Files written with bedtools 2.27 or later hold the window's name
(``::chr1:0-16384``) in ``inputs/seq`` instead of its sequence: their sequence is re-read from
the genome FASTA at the window's coordinates. The files record no target names: the targets are
``target_0`` ... ``target_{N-1}``, as for the original's checkpoints, unless a targets.txt names
them (``SplitOptions.targets``, ``--targets``: row i names target i).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from epiformer.errors import UserError
from epiformer.genome.encoding import sequence_codes
from epiformer.genome.reader import Genome

REQUIRED = ("inputs/seq", "inputs/seqcons", "targets/value", "segments/name")
_NAME = re.compile(r"^(.+):(\d+)-(\d+)$")
_FILE_NUMBER = re.compile(r"\.(\d+)\.h5$")


class OriginalDatasetError(UserError, ValueError):
    """An original dataset that cannot be used, with a message naming the file and the problem."""


@dataclass
class OriginalFile:
    """One file of an original dataset: its windows (chrom, start, end), its shapes, and whether
    ``inputs/seq`` holds sequences or only window names."""

    path: Path
    windows: list[tuple[str, int, int]]
    seq_len: int
    n_targets: int
    n_bins: int
    names_for_sequences: bool


def original_files(folder: str | os.PathLike) -> list[Path]:
    """The HDF5 files of a folder, in the order the original wrote them (``OUTPREFIX.{k}.h5``)."""
    files = list(Path(folder).glob("*.h5"))
    return sorted(files, key=lambda p: (int(m.group(1)) if (m := _FILE_NUMBER.search(p.name)) else -1, p.name))


def open_original(path: str | os.PathLike):
    """An original file opened for reading, with the LZ4 filter of ``hdf5plugin`` registered."""
    import h5py
    import hdf5plugin  # noqa: F401  (importing it registers the filters)

    return h5py.File(path, "r")


def is_original_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder whose HDF5 files have the original's layout."""
    files = original_files(path) if Path(path).is_dir() else []
    if not files:
        return False
    try:
        with open_original(files[0]) as h5:
            return all(name in h5 for name in REQUIRED)
    except OSError:
        return False


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_name(path: Path, row: int, name: str) -> tuple[str, int, int]:
    match = _NAME.match(name.lstrip(":"))
    if not match:
        raise OriginalDatasetError(f"{path}: segments/name row {row} is {name!r}, not chrom:start-end")
    return match.group(1), int(match.group(2)), int(match.group(3))


def read_original_file(path: Path) -> OriginalFile:
    """The windows and shapes of one original file, checked against each other."""
    try:
        with open_original(path) as h5:
            missing = [name for name in REQUIRED if name not in h5]
            if missing:
                raise OriginalDatasetError(f"{path} lacks {', '.join(missing)}: not a file of the original "
                                           "generate_datasets.py")
            names = [_text(n) for n in h5["segments/name"][:]]
            seqcons, value, seq = h5["inputs/seqcons"], h5["targets/value"], h5["inputs/seq"]
            n = len(names)
            if seqcons.ndim != 2 or value.ndim != 3 or seqcons.shape[0] != n or value.shape[0] != n or len(seq) != n:
                raise OriginalDatasetError(
                    f"{path}: inputs/seqcons {seqcons.shape}, targets/value {value.shape}, inputs/seq ({len(seq)},) "
                    f"and segments/name ({n},) do not describe the same windows")
            first = _text(seq[0]) if n else ""
    except OSError as err:
        raise OriginalDatasetError(f"{path} cannot be read as HDF5: {str(err).splitlines()[0][:200]}") from None
    seq_len, n_targets, n_bins = seqcons.shape[1], value.shape[1], value.shape[2]
    if n_bins == 0 or seq_len % n_bins:
        raise OriginalDatasetError(f"{path}: windows of {seq_len} bp do not divide into {n_bins} bins")
    windows = [_parse_name(path, row, name) for row, name in enumerate(names)]
    for row, (chrom, start, end) in enumerate(windows):
        if end - start != seq_len:
            raise OriginalDatasetError(f"{path}: window {row} ({chrom}:{start}-{end}) is not {seq_len} bp long")
    return OriginalFile(path, windows, seq_len, n_targets, n_bins, names_for_sequences=len(first) != seq_len)


def read_original_dataset(folder: str | os.PathLike, fasta: str | os.PathLike | None) -> list[OriginalFile]:
    """Every file of an original dataset folder, with the same shapes throughout; a FASTA is
    required when a file holds window names in ``inputs/seq``."""
    files = [read_original_file(path) for path in original_files(folder)]
    if not files:
        raise OriginalDatasetError(f"{folder} holds no .h5 files")
    first = files[0]
    for f in files[1:]:
        if (f.seq_len, f.n_targets, f.n_bins) != (first.seq_len, first.n_targets, first.n_bins):
            raise OriginalDatasetError(
                f"{f.path} holds {f.n_targets} targets in windows of {f.seq_len} bp and {f.n_bins} bins, "
                f"unlike {first.path} ({first.n_targets}, {first.seq_len} bp, {first.n_bins} bins)")
    named = [f for f in files if f.names_for_sequences]
    if named and fasta is None:
        raise OriginalDatasetError(
            f"{named[0].path}: inputs/seq holds window names, not sequences (the original script wrote them so "
            "with bedtools 2.27 or later); pass the genome FASTA with --fa to read the sequences from it")
    return files


class OriginalWindows:
    """Reads one window of an original file: (base codes, conservation float32, targets float32,
    name); a file of window names has its sequence read from the genome, opened on first use."""

    def __init__(self, fasta: str | os.PathLike | None) -> None:
        self.fasta = fasta
        self._genome: Genome | None = None
        self._pid = os.getpid()

    def read(self, h5, info: OriginalFile, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        chrom, start, end = info.windows[row]
        if info.names_for_sequences:
            if self._genome is None or self._pid != os.getpid():     # each DataLoader worker opens its own
                self._genome, self._pid = Genome(self.fasta), os.getpid()
            if chrom not in self._genome.chrom_sizes or end > self._genome.chrom_sizes[chrom]:
                raise OriginalDatasetError(f"{info.path}: window {chrom}:{start}-{end} is not in the FASTA "
                                           f"{self.fasta}: is it the genome the dataset was made from?")
            codes = sequence_codes(self._genome.sequence(chrom, start, end))
        else:
            codes = sequence_codes(_text(h5["inputs/seq"][row]))
        cons = np.nan_to_num(h5["inputs/seqcons"][row].astype(np.float32))
        return codes, cons, h5["targets/value"][row].astype(np.float32), f"{chrom}:{start}-{end}"
