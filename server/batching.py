"""Micro-batching: windows from concurrent requests share forward passes.

:class:`BatchPredictor` is the server's :class:`~epiformer.inference.runners.WindowRunner`. One thread owns
the engine. Request threads put jobs on a queue and wait on futures: coded windows, or groups (a
variant window's reference and its alternates, for
:func:`~epiformer.inference.incremental.predict_alternates`). The thread takes the first waiting job,
gathers more of its kind until ``max_batch`` windows or ``max_delay_s`` have passed, runs them
as one batch and hands each result back. Groups of the same window from several requests run
as one: its reference once, with all their alternates. A request waits at most ``timeout`` s
(:class:`PredictionTimeout`), and an output that is not finite is an error
(:class:`NonFiniteOutput`).
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np

from epiformer.genome.encoding import CodedWindows
from epiformer.inference.engine import Engine
from epiformer.inference.incremental import predict_alternates
from epiformer.inference.runners import Alternates, CodedGroup

NON_FINITE = "the model's output is not finite for this input (are the conservation values in range?)"


class PredictionTimeout(RuntimeError):
    """The model did not answer within the request timeout."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"the model did not answer within {timeout:g} s")


class NonFiniteOutput(ValueError):
    """The model answered inf or NaN for a request's input."""


@dataclass
class _Job:
    window: CodedWindows | None = None                                # one coded window
    group: CodedGroup | None = None
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> int:
        """Windows this job puts in a batch."""
        return 1 if self.group is None else self.group.size


class BatchPredictor:
    """Runs ``engine`` on batches gathered from concurrent requests' coded work."""

    max_windows = None          # a request's work is queued whole; the batches are made here

    def __init__(self, engine: Engine, max_batch: int, max_delay_s: float, timeout: float | None = None) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.timeout = timeout
        self.batches = 0          # batches run, the windows in them, and of the groups' windows
        self.windows = 0          # the references and alternates run (for tests and stats)
        self.references = 0
        self.alternates = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._held: _Job | None = None      # a job of the other kind, first in the next batch
        self._thread = threading.Thread(target=self._run, name="batch-predictor", daemon=True)
        self._thread.start()

    def predict(self, windows: CodedWindows) -> np.ndarray:
        """Predictions of coded windows, each queued alone and batched with whatever else is
        waiting: (N, targets, bins)."""
        outputs = self._wait([self._submit(_Job(windows[k: k + 1])) for k in range(len(windows))])
        if not all(np.isfinite(output).all() for output in outputs):
            raise NonFiniteOutput(NON_FINITE)
        return np.stack(outputs) if outputs else np.zeros((0, len(self.engine.target_names),
                                                           self.engine.config.n_output_bins), np.float32)

    def predict_groups(self, groups: Sequence[CodedGroup]) -> list[Alternates]:
        """(reference state, alternates) of several groups, batched with what else waits (the
        same window's groups merged)."""
        outputs = self._wait([self._submit(_Job(group=group)) for group in groups])
        if not all(np.isfinite(state.prediction).all() and np.isfinite(alts).all() for state, alts in outputs):
            raise NonFiniteOutput(NON_FINITE)
        return outputs

    def _submit(self, job: _Job) -> Future:
        self._queue.put(job)
        return job.future

    def _wait(self, futures: list[Future]) -> list:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            return [f.result(None if deadline is None else max(0.0, deadline - time.monotonic())) for f in futures]
        except FutureTimeout:
            raise PredictionTimeout(self.timeout) from None
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

    def _run_groups(self, groups: list[CodedGroup]) -> list[Alternates]:
        """Groups of one window (by key) merged: its reference runs once (not at all when one of
        them brings its state), with all their alternates."""
        merged: dict[Hashable, list[int]] = {}
        for i, group in enumerate(groups):
            merged.setdefault(group.key, []).append(i)
        runs = [(groups[rows[0]].reference, CodedWindows.concatenate([groups[i].alternates for i in rows]),
                 next((groups[i].state for i in rows if groups[i].state is not None), None)) for rows in merged.values()]
        results = predict_alternates(self.engine, runs)
        self.references += sum(state is None for _, _, state in runs)
        self.alternates += sum(len(alts) for _, alts, _ in runs)
        outputs: list = [None] * len(groups)
        for rows, (state, alternates) in zip(merged.values(), results):
            lo = 0
            for i in rows:
                n = len(groups[i].alternates)
                outputs[i] = (state, alternates[lo: lo + n])
                lo += n
        return outputs
