"""Running a shard: genome reading in background workers, batched inference, writing in a thread.

Worker processes (a torch DataLoader) read and encode the next batches from the FASTA and the
conservation bigWig while the device runs the current one; a writer thread stores finished
batches in the shard file, so neither reading nor writing holds up the device.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from epiformer.genome.encoding import CodedWindows
from epiformer.genome.interval_index import IntervalIndex
from epiformer.genome.reader import Genome
from epiformer.inference.engine import Engine
from epiformer.io.writing import OutputError
from epiformer.precompute.plan import TilePlan, empty_bins
from epiformer.precompute.shards import ShardFile


class BatchReader(torch.utils.data.Dataset):
    """Item k: (global batch id, coded windows (codes, conservation or None), empty-bin mask (N, bins)).

    Each process opens its own genome handles on first use (file handles do not survive fork).
    """

    def __init__(self, plan: TilePlan, batches: Sequence[int], fasta: Path, conservation: Path | None,
                 coded_offset: int, coded_length: int, blacklist: IntervalIndex | None) -> None:
        self.plan = plan
        self.batches = list(batches)
        self.fasta, self.conservation = fasta, conservation
        self.coded_offset, self.coded_length = coded_offset, coded_length
        self.blacklist = blacklist
        self._genome: Genome | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.batches)

    def _open(self) -> Genome:
        if self._genome is None or self._pid != os.getpid():
            self._genome = Genome(self.fasta, self.conservation)
            self._pid = os.getpid()
        return self._genome

    def __getitem__(self, k: int) -> tuple[int, tuple, np.ndarray]:
        genome = self._open()
        batch = self.batches[k]
        windows = self.plan.batch_windows(batch)
        intervals = [(chrom, start + self.coded_offset) for chrom, start in self.plan.intervals(windows)]
        coded = genome.coded_windows(intervals, self.coded_length)
        return batch, (coded.codes, coded.conservation), empty_bins(genome, self.plan, windows, self.blacklist)


def predicted_batches(engine: Engine, reader: BatchReader, io_workers: int) -> Iterator[tuple[int, np.ndarray]]:
    """(global batch id, values (N, targets, bins) float16 with NaN in empty bins), in order.

    The reading processes start when this is called, not at the first ``next``."""
    loader = torch.utils.data.DataLoader(
        reader, batch_size=None, shuffle=False, num_workers=io_workers,
        pin_memory=engine.device.type == "cuda", prefetch_factor=4 if io_workers else None)
    encoded_batches = iter(loader)

    def predict() -> Iterator[tuple[int, np.ndarray]]:
        for batch, (codes, conservation), empty in encoded_batches:
            values = engine.predict_coded(CodedWindows(codes, conservation))
            values[np.broadcast_to(np.asarray(empty)[:, None, :], values.shape)] = np.nan
            yield int(batch), values.astype(np.float16)

    return predict()


def run_shard(engine: Engine, reader_args: dict, shard_file: ShardFile, io_workers: int = 2,
              progress: bool = True, label: str = "precompute") -> dict:
    """Predict every batch of ``shard_file`` not yet done and store it. Returns counts and timing."""
    plan = shard_file.plan
    todo = [k for k, done in enumerate(shard_file.done) if not done]
    local = {shard_file.batches[k]: k for k in todo}
    reader = BatchReader(plan, [shard_file.batches[k] for k in todo], **reader_args)
    total = sum(len(plan.batch_windows(b)) for b in shard_file.batches)
    already = total - sum(len(plan.batch_windows(b)) for b in reader.batches)
    writes: queue.Queue = queue.Queue(maxsize=4)
    failure: list[BaseException] = []

    def writer() -> None:
        while (item := writes.get()) is not None:
            if not failure:
                try:
                    shard_file.write(*item)
                except BaseException as err:  # handed to the main thread, which raises it
                    failure.append(err)

    started = time.perf_counter()
    stream = predicted_batches(engine, reader, io_workers)
    shard_file.open_for_writing()
    thread = threading.Thread(target=writer, name="shard-writer", daemon=True)
    thread.start()
    windows = 0
    bar = tqdm(total=total, initial=already, unit="win", desc=label, disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    try:
        for batch, values in stream:
            if failure:
                break
            writes.put((local[batch], values))
            windows += len(values)
            bar.update(len(values))
    finally:
        writes.put(None)
        thread.join()
        bar.close()
    if failure:
        if isinstance(failure[0], OSError):
            raise OutputError(f"cannot write {shard_file.path}: {failure[0]}") from None
        raise failure[0]
    seconds = time.perf_counter() - started
    return {"windows": windows, "resumed_from": already, "seconds": seconds,
            "windows_per_s": windows / seconds if windows else float("nan")}


def measure_rate(engine: Engine, reader: BatchReader, io_workers: int, min_seconds: float = 5.0,
                 max_batches: int = 20) -> float:
    """Windows per second of the pipeline on the current device: batches after a warm-up one are
    timed for ``min_seconds`` (or ``max_batches``); a one-batch plan times that batch."""
    started, windows = time.perf_counter(), 0
    for k, (_, values) in enumerate(predicted_batches(engine, reader, io_workers)):
        if k == 0 and len(reader) > 1:
            started = time.perf_counter()
            continue
        windows += len(values)
        if k >= max_batches or time.perf_counter() - started >= min_seconds:
            break
    return windows / (time.perf_counter() - started)
