"""Shard files: one HDF5 per shard holding its windows' predictions (float16) and a done-bitmap.

Datasets are contiguous and allocated in full when the file is created (under a temporary name,
then renamed), so later writes change raw values only, never the file's structure: a job killed
at any moment leaves a readable file. A batch's values are written and flushed before its done
flag, so a batch is either recorded as done with all its values, or predicted again on resume.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np

from epiformer.io.writing import atomic_path
from epiformer.parallel.sharded_jobs import read_run_file
from epiformer.precompute.plan import PrecomputeError, TilePlan, shard_batches

SHARD_DIR = "shards"
RUN_FILE = "run.json"
_SHARD_NAME = re.compile(r"shard-(\d+)-of-(\d+)\.h5$")


def shard_path(outdir: Path, shard: int, n_shards: int) -> Path:
    return Path(outdir) / SHARD_DIR / f"shard-{shard:05d}-of-{n_shards:05d}.h5"


def existing_shards(outdir: Path) -> dict[int, list[Path]]:
    """Shard files in ``outdir``, grouped by the shard count they were written for."""
    found: dict[int, list[Path]] = {}
    folder = Path(outdir) / SHARD_DIR
    for path in sorted(folder.glob("shard-*-of-*.h5")) if folder.is_dir() else []:
        match = _SHARD_NAME.search(path.name)
        if match:
            found.setdefault(int(match.group(2)), []).append(path)
    return found


def read_run(outdir: Path) -> dict | None:
    """The run description written by the first shard, or None."""
    return read_run_file(Path(outdir) / RUN_FILE, PrecomputeError)


def claim_outdir(outdir: Path, run: dict, n_shards: int) -> None:
    """Record ``run`` in ``outdir/run.json``, or check that the folder belongs to the same run.

    A folder holding another run's shards (other model, genome, parameters or shard count) is an
    error that names what differs, never a silent mix.
    """
    outdir = Path(outdir)
    previous = read_run(outdir)
    if previous is not None and previous["fingerprint"] != run["fingerprint"]:
        old, new = previous["fingerprint"], run["fingerprint"]
        differs = ", ".join(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
        raise PrecomputeError(
            f"{outdir} holds another precompute run's shards (different {differs}): "
            f"use a new output folder, or delete {outdir / SHARD_DIR} and {outdir / RUN_FILE} to start over")
    others = {count: paths for count, paths in existing_shards(outdir).items() if count != n_shards}
    if others:
        count = next(iter(others))
        raise PrecomputeError(
            f"{outdir} holds shards of this run split {count} ways ({others[count][0].name}, ...): "
            f"continue with {count} shards (--shard I/{count} or {count} torchrun processes), or delete "
            f"{outdir / SHARD_DIR} to start over with {n_shards}")
    if previous is None:
        with atomic_path(outdir / RUN_FILE) as tmp:
            tmp.write_text(json.dumps(run, indent=1) + "\n")


class ShardFile:
    """The predictions of one shard: ``values`` (rows, targets, output bins) float16, NaN where a
    bin has no data, and ``done`` (one flag per batch of the shard)."""

    def __init__(self, path: Path, plan: TilePlan, shard: int, n_shards: int, n_targets: int,
                 fingerprint: str, threads: int | None = None) -> None:
        self.path = Path(path)
        self.plan = plan
        self.batches = shard_batches(plan, shard, n_shards)
        rows = len(self.batches) * plan.batch_size
        shape = (rows, n_targets, plan.output_bins)
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path) as tmp, h5py.File(tmp, "w") as f:
                f.attrs["fingerprint"] = fingerprint
                f.attrs["shard"] = shard
                f.attrs["n_shards"] = n_shards
                f.attrs["threads"] = threads or 0
                f.create_dataset("values", shape, dtype="f2", fillvalue=np.nan, dcpl=_allocated())
                f.create_dataset("done", (len(self.batches),), dtype="u1", fillvalue=0, dcpl=_allocated())
                f.create_dataset("window_chrom", data=plan.window_chrom)
                f.create_dataset("window_start", data=plan.window_start)
        self._file = self._open("r")
        try:
            if self._file.attrs.get("fingerprint") != fingerprint or self._file["values"].shape != shape:
                raise PrecomputeError(f"shard file {self.path} belongs to another run: delete it and run this "
                                      "shard again")
            written_with = int(self._file.attrs.get("threads", 0))
            if written_with and threads and written_with != threads:
                raise PrecomputeError(f"shard file {self.path} was written with {written_with} CPU threads and "
                                      f"this process has {threads}: resume it with --threads {written_with}, as "
                                      "other thread counts round differently")
            self.done = self._file["done"][:].astype(bool)
        finally:
            self._file.close()

    def _open(self, mode: str) -> h5py.File:
        try:
            return h5py.File(self.path, mode)
        except OSError as err:
            if "lock" in str(err):
                raise PrecomputeError(f"shard file {self.path} is in use by another process: is this shard "
                                      "still running elsewhere?") from None
            raise PrecomputeError(f"shard file {self.path} is damaged ({err}): delete it and run this "
                                  "shard again") from None

    def open_for_writing(self) -> None:
        """Open the file for :meth:`write` (after any worker processes have been started, so that
        none inherits the open file and its lock)."""
        self._file = self._open("r+")
        self._values = self._file["values"]
        self._done = self._file["done"]

    def rows(self, local_batch: int) -> slice:
        """Rows of ``values`` that hold local batch ``local_batch``."""
        first = local_batch * self.plan.batch_size
        return slice(first, first + len(self.plan.batch_windows(self.batches[local_batch])))

    def write(self, local_batch: int, values: np.ndarray) -> None:
        """Store one batch's values, then mark it done (each flushed to disk)."""
        self._values[self.rows(local_batch)] = values.astype(np.float16)
        self._file.flush()
        self._done[local_batch] = 1
        self._file.flush()
        self.done[local_batch] = True

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ShardFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shard_threads(path: Path) -> int | None:
    """CPU threads of the process that wrote a shard file (None on a GPU)."""
    with h5py.File(path, "r") as f:
        return int(f.attrs.get("threads", 0)) or None


def read_shard_target(path: Path, target: int) -> tuple[np.ndarray, np.ndarray]:
    """(values of one target (rows, output bins) float16, done flags) of a finished shard file."""
    with h5py.File(path, "r") as f:
        return f["values"][:, target, :], f["done"][:].astype(bool)


def _allocated():
    """Dataset creation properties: storage allocated and filled when the file is created."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    return dcpl
