"""Micro-batching: windows from concurrent requests share forward passes.

One thread owns the engine. Request threads put encoded windows on a queue and wait on futures;
the thread takes the first waiting window, gathers more until ``max_batch`` windows or
``max_delay_s`` have passed, runs them as one batch and hands each result back.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from epiformer.engine import Engine


@dataclass
class _Job:
    window: np.ndarray
    future: Future = field(default_factory=Future)


class BatchPredictor:
    """Runs ``engine`` on batches gathered from concurrent :meth:`submit` calls."""

    def __init__(self, engine: Engine, max_batch: int = 16, max_delay_s: float = 0.01) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.batches = 0          # forward batches run, and the windows in them (for tests and stats)
        self.windows = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="batch-predictor", daemon=True)
        self._thread.start()

    def submit(self, window: np.ndarray) -> Future:
        """Queue one window encoded once per shift (shifts, 4, seq_len); the future's result is
        its prediction averaged over the shifts, (targets, bins)."""
        job = _Job(np.asarray(window, dtype=np.float32))
        self._queue.put(job)
        return job.future

    def predict(self, windows: list[np.ndarray], timeout: float | None = None) -> list[np.ndarray]:
        """Predictions for several windows (batched with whatever else is waiting)."""
        futures = [self.submit(w) for w in windows]
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
        jobs = [first]
        deadline = time.monotonic() + self.max_delay_s
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            jobs.append(job)
        return [job for job in jobs if job.future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            jobs = self._gather(first)
            if not jobs:
                continue
            try:
                outputs = self.engine.predict_encoded(np.stack([job.window for job in jobs], axis=1))
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                for job in jobs:
                    job.future.set_exception(err)
                continue
            self.batches += 1
            self.windows += len(jobs)
            for job, output in zip(jobs, outputs):
                job.future.set_result(output)
