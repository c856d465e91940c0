"""The skeleton of a sharded, resumable offline job (score-variants, interpret, precompute).

A job's work is cut into parts numbered 0, 1, ...; shard I of N works parts I, I + N, ...
(``--shard I/N``, or torchrun's ranks, each on its own GPU). Each finished part is written at
once under a temporary name, so a stopped run resumes with the first unfinished part, and the
folder's ``run.json`` holds the fingerprint of the run its parts belong to, so parts of another
run are never mixed in. The outputs are written when every part exists: under torchrun by rank 0
once every rank is done, otherwise by whichever shard finishes last (:class:`PartsFolder`).
precompute's parts are batches in one shard file per shard, with a run.json of its own: it takes
the shard, its predictor, the run file reader and the wait for the ranks from here.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from epiformer.errors import UserError
from epiformer.inference.predictor import Predictor, open_predictor
from epiformer.inference.settings import InferenceSettings, ModelSetOptions
from epiformer.io.writing import atomic_path
from epiformer.model.model_set import ModelSet
from epiformer.parallel.torchrun import launched_shard, wait_for_all_ranks


class ShardError(UserError, ValueError):
    """A shard of an offline job that cannot be run, naming the flag."""


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (0-based I, as SLURM_ARRAY_TASK_ID with --array=0-(N-1)) -> (I, N)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ShardError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 3/10")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class JobShard:
    """The shard of an offline job this process runs, and the device it runs on."""

    index: int = 0
    count: int = 1
    device: str = "auto"
    launched: bool = False          # started by torchrun, whose ranks are the shards

    @property
    def primary(self) -> bool:
        """Whether this process speaks for the job: torchrun's rank 0, or any process run without torchrun."""
        return self.index == 0 or not self.launched

    def owns(self, part: int) -> bool:
        """Whether part ``part`` is this shard's to work (part k belongs to shard k mod N)."""
        return part % self.count == self.index

    def own_parts(self, total: int) -> list[int]:
        """This shard's parts among ``total``."""
        return [k for k in range(total) if self.owns(k)]

    def open_predictor(self, models: ModelSetOptions | ModelSet, fasta: str | os.PathLike,
                       settings: InferenceSettings, log: Callable[[str], None] = print) -> Predictor:
        """The predictor of ``settings`` opened on this shard's device."""
        return open_predictor(models, fasta, dataclasses.replace(settings, device=self.device), log)

    def wait_for_ranks(self) -> bool:
        """Under torchrun, block until every rank has done its work. Whether this process goes on
        to the job's outputs: rank 0 under torchrun, any process otherwise."""
        if self.launched:
            wait_for_all_ranks()
        return self.primary


def job_shard(shard: tuple[int, int] | None, device: str) -> JobShard:
    """This process's shard of an offline job given an optional ``--shard I/N``: under torchrun
    its rank and world size, each rank on its own GPU."""
    launched = launched_shard()
    if launched is None:
        index, count = shard or (0, 1)
        return JobShard(index, count, device)
    if shard is not None:
        raise ShardError("--shard cannot be combined with torchrun: torchrun's ranks are the shards")
    if device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{launched[2]}"
    return JobShard(launched[0], launched[1], device, launched=True)


def read_run_file(path: Path, error: type[UserError]) -> dict | None:
    """The run recorded in the run file ``path``, or None when there is none; one that cannot
    be read is ``error``, naming the file."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise error(f"{path} cannot be read ({err}); delete it to start the run again") from None


class PartsFolder:
    """A job's folder of part files (``part-NNNNNN.npz``, arrays by name) and its ``run.json``,
    the fingerprint of the run they belong to.

    ``another_run`` completes the ``error`` for a folder of another run's parts:
    "FOLDER holds another " + ``another_run``, naming what differs and how to go on.
    """

    def __init__(self, folder: Path, fingerprint: dict, shard: JobShard, error: type[UserError],
                 another_run: str) -> None:
        self.folder = Path(folder)
        self.fingerprint = json.loads(json.dumps(fingerprint))     # as read back from run.json (tuples -> lists)
        self.shard = shard
        self.error = error
        self.another_run = another_run

    @property
    def run_file(self) -> Path:
        """The folder's run.json."""
        return self.folder / "run.json"

    def path(self, part: int) -> Path:
        """The file of part ``part``."""
        return self.folder / f"part-{part:06d}.npz"

    def claim(self, restart: bool) -> None:
        """Record this run's fingerprint in the folder. A folder of another run's parts is an
        error, or with ``restart`` its parts are discarded."""
        previous = read_run_file(self.run_file, self.error)
        if previous is not None and previous != self.fingerprint:
            if not restart:
                raise self.error(f"{self.folder} holds another {self.another_run}")
            for stale in self.folder.glob("part-*.npz"):
                stale.unlink()
        with atomic_path(self.run_file) as tmp:
            tmp.write_text(json.dumps(self.fingerprint))

    def done(self, part: int) -> bool:
        """Whether part ``part`` is written."""
        return self.path(part).exists()

    def write(self, part: int, arrays: dict[str, np.ndarray]) -> None:
        """Write part ``part`` (under a temporary name, renamed when complete)."""
        with atomic_path(self.path(part)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def load(self, part: int) -> dict[str, np.ndarray]:
        """The arrays of part ``part``."""
        with np.load(self.path(part)) as data:
            return {key: data[key] for key in data.files}

    def load_all(self, total: int) -> Iterator[dict[str, np.ndarray]]:
        """The arrays of parts 0 to ``total`` - 1 in order, each loaded when it is reached."""
        return (self.load(k) for k in range(total))

    def missing(self, total: int) -> list[int]:
        """The parts among ``total`` not written yet."""
        return [k for k in range(total) if not self.done(k)]

    def finish(self, total: int, log: Callable[[str], None], outputs: str) -> dict | None:
        """End this shard's work on ``total`` parts. None when this process is to write the
        job's ``outputs`` now; otherwise the result of a process that writes none: no files, and
        how many parts the other shards have still to write (which it logs). Parts past
        ``total``, left by an earlier run, are removed."""
        if not self.shard.wait_for_ranks():
            return {"files": []}
        for stale in sorted(self.folder.glob("part-*.npz"))[total:]:
            stale.unlink()
        missing = self.missing(total)
        if not missing:
            return None
        log(f"shard {self.shard.index}/{self.shard.count} done; {len(missing)} of {total} parts are still to come "
            f"from the other shards: the last shard to finish writes the {outputs}")
        return {"files": [], "missing_parts": len(missing)}
