"""Micro-batching: windows from concurrent requests share forward passes.

One thread owns the engine. Request threads put jobs on a queue and wait on futures: coded
windows, or groups (a variant window's reference and its alternates, for
:meth:`~epiformer.engine.Engine.predict_alternates`). The thread takes the first waiting job,
gathers more of its kind until ``max_batch`` windows or ``max_delay_s`` have passed, runs them
as one batch and hands each result back. Groups of the same window from several requests run
as one: its reference once, with all their alternates.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Hashable

import numpy as np

from epiformer.engine import Engine, ReferenceState
from epiformer.genome import CodedWindows

AlternateJob = tuple[Hashable, CodedWindows, CodedWindows, "ReferenceState | None"]


@dataclass
class _Job:
    window: CodedWindows | None = None                                # one coded window
    group: AlternateJob | None = None                                 # key, reference, alternates, state
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> int:
        """Windows this job puts in a batch."""
        return 1 if self.group is None else 1 + len(self.group[2])


class BatchPredictor:
    """Runs ``engine`` on batches gathered from concurrent :meth:`submit` calls."""

    def __init__(self, engine: Engine, max_batch: int, max_delay_s: float) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.batches = 0          # batches run, the windows in them, and of the groups' windows
        self.windows = 0          # the references and alternates run (for tests and stats)
        self.references = 0
        self.alternates = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._held: _Job | None = None      # a job of the other kind, first in the next batch
        self._thread = threading.Thread(target=self._run, name="batch-predictor", daemon=True)
        self._thread.start()

    def submit(self, window: CodedWindows) -> Future:
        """Queue one coded window; the future's result is its prediction averaged over the
        shifts, (targets, bins)."""
        job = _Job(window)
        self._queue.put(job)
        return job.future

    def submit_group(self, key: Hashable, reference: CodedWindows, alternates: CodedWindows,
                     state: ReferenceState | None = None) -> Future:
        """Queue a window's coded reference and alternates, ``key`` naming the window, with the
        reference's state when already made; the future's result is (reference state,
        alternates predictions)."""
        job = _Job(group=(key, reference, alternates, state))
        self._queue.put(job)
        return job.future

    def predict(self, windows: list[CodedWindows], timeout: float | None = None) -> list[np.ndarray]:
        """Predictions for several windows (batched with whatever else is waiting)."""
        return self._wait([self.submit(w) for w in windows], timeout)

    def predict_groups(self, groups: list[AlternateJob],
                       timeout: float | None = None) -> list[tuple[ReferenceState, np.ndarray]]:
        """(reference state, alternates) of several groups (batched with what else waits)."""
        return self._wait([self.submit_group(*g) for g in groups], timeout)

    @staticmethod
    def _wait(futures: list[Future], timeout: float | None) -> list:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return [f.result(None if deadline is None else max(0.0, deadline - time.monotonic())) for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _gather(self, first: _Job) -> list[_Job]:
        """``first`` and the jobs of its kind that come within ``max_delay_s``, up to ``max_batch``
        windows; a job of the other kind is held for the next batch."""
        jobs, size = [first], first.size
        deadline = time.monotonic() + self.max_delay_s
        while size < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            if (job.group is None) != (first.group is None):
                self._held = job
                break
            jobs.append(job)
            size += job.size
        return [job for job in jobs if job.future.set_running_or_notify_cancel()]

    def _next(self) -> _Job | None:
        held, self._held = self._held, None
        return held if held is not None else self._queue.get()

    def _run(self) -> None:
        while (first := self._next()) is not None:
            jobs = self._gather(first)
            if not jobs:
                continue
            try:
                if first.group is None:
                    outputs = list(self.engine.predict_coded(CodedWindows.concatenate([job.window for job in jobs])))
                    self.windows += len(jobs)
                else:
                    outputs = self._run_groups([job.group for job in jobs])
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                for job in jobs:
                    job.future.set_exception(err)
                continue
            self.batches += 1
            for job, output in zip(jobs, outputs):
                job.future.set_result(output)

    def _run_groups(self, groups: list[AlternateJob]) -> list[tuple[ReferenceState, np.ndarray]]:
        """Groups of one window (by key) merged: its reference runs once (not at all when one of
        them brings its state), with all their alternates."""
        merged: dict[Hashable, list[int]] = {}
        for i, (key, _, _, _) in enumerate(groups):
            merged.setdefault(key, []).append(i)
        runs = [(groups[rows[0]][1], CodedWindows.concatenate([groups[i][2] for i in rows]),
                 next((groups[i][3] for i in rows if groups[i][3] is not None), None)) for rows in merged.values()]
        results = self.engine.predict_alternates(runs)
        self.references += sum(state is None for _, _, state in runs)
        self.alternates += sum(len(alts) for _, alts, _ in runs)
        outputs: list = [None] * len(groups)
        for rows, (state, alternates) in zip(merged.values(), results):
            lo = 0
            for i in rows:
                n = len(groups[i][2])
                outputs[i] = (state, alternates[lo: lo + n])
                lo += n
        return outputs
