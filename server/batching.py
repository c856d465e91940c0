"""Micro-batching: windows from concurrent requests share forward passes, taken from each client in turn.

:class:`BatchPredictor` is the server's :class:`~epiformer.inference.runners.WindowRunner`. One thread owns
the engine. Request threads queue jobs under their client (:data:`CLIENT`, set when a request is
admitted) and wait on futures: coded windows, or groups (a variant window's reference and its
alternates, for :func:`~epiformer.inference.incremental.predict_alternates`). The thread gathers a
batch of one kind from the clients' queues in turn (round-robin), each client's jobs in order,
until ``max_batch`` windows or ``max_delay_s`` have passed, runs it and hands each result back.
A group with more alternates than a batch holds runs in pieces (the reference with the first
alternates, then the rest with its state), one piece per turn, so a client's large request
delays another client's by about one batch per client waiting, not by its whole length.
Groups of the same window in one batch run as one: its reference once, with all their alternates.
A request waits until its deadline (:mod:`epiformer.inference.deadline`: :class:`DeadlineExceeded`,
raised before queuing when none is left), and an output that is not finite is an error
(:class:`NonFiniteOutput`).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np

from epiformer.genome.encoding import CodedWindows
from epiformer.inference.deadline import DeadlineExceeded, remaining
from epiformer.inference.engine import Engine
from epiformer.inference.incremental import ReferenceState, predict_alternates
from epiformer.inference.runners import Alternates, CodedGroup

NON_FINITE = "the model's output is not finite for this input (are the conservation values in range?)"
CLIENT: ContextVar[str] = ContextVar("epiformer_client", default="")   # whose turn a job waits for


class NonFiniteOutput(ValueError):
    """The model answered inf or NaN for a request's input."""


@dataclass
class _Job:
    client: str
    window: CodedWindows | None = None                                # one coded window
    group: CodedGroup | None = None
    future: Future = field(default_factory=Future)
    taken: int = 0                          # a group's alternates handed to batches so far
    state: ReferenceState | None = None     # its reference's state, once a piece has made it
    made: list[np.ndarray] = field(default_factory=list)   # its pieces' alternates so far


@dataclass
class _Piece:
    """A job's part of one batch: a window, or a group's next alternates (all that are left when
    ``last``)."""

    job: _Job
    group: CodedGroup | None
    last: bool

    @property
    def size(self) -> int:
        return 1 if self.group is None else self.group.size


class BatchPredictor:
    """Runs ``engine`` on batches gathered from concurrent requests' coded work, client by client."""

    max_windows = None          # a request's work is queued whole; the batches are made here

    def __init__(self, engine: Engine, max_batch: int, max_delay_s: float) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.batches = 0          # batches run, the windows in them, and of the groups' windows
        self.windows = 0          # the references and alternates run (for tests and stats)
        self.references = 0
        self.alternates = 0
        self._waiting: OrderedDict[str, deque[_Job]] = OrderedDict()   # by client, the next client's first
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="batch-predictor", daemon=True)
        self._thread.start()

    def predict(self, windows: CodedWindows) -> np.ndarray:
        """Predictions of coded windows, each queued alone and batched with whatever else is
        waiting: (N, targets, bins)."""
        outputs = self._wait([_Job(CLIENT.get(), windows[k: k + 1]) for k in range(len(windows))])
        if not all(np.isfinite(output).all() for output in outputs):
            raise NonFiniteOutput(NON_FINITE)
        return np.stack(outputs) if outputs else np.zeros((0, len(self.engine.target_names),
                                                           self.engine.config.n_output_bins), np.float32)

    def predict_groups(self, groups: Sequence[CodedGroup]) -> list[Alternates]:
        """(reference state, alternates) of several groups, batched with what else waits (the
        same window's groups merged)."""
        outputs = self._wait([_Job(CLIENT.get(), group=group) for group in groups])
        if not all(np.isfinite(state.prediction).all() and np.isfinite(alts).all() for state, alts in outputs):
            raise NonFiniteOutput(NON_FINITE)
        return outputs

    def _submit(self, job: _Job) -> Future:
        with self._ready:
            self._waiting.setdefault(job.client, deque()).append(job)
            self._ready.notify()
        return job.future

    def _wait(self, jobs: list[_Job]) -> list:
        """The jobs' results, waited for until the request's deadline; none is queued when the
        deadline has passed."""
        remaining()
        futures = [self._submit(job) for job in jobs]
        try:
            return [f.result(remaining()) for f in futures]
        except FutureTimeout:
            raise DeadlineExceeded() from None
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join(timeout=10)

    def _take(self, groups: bool | None, room: int) -> _Piece | None:
        """The next client's next piece of work of that kind (``groups``; None: either) within
        ``room`` windows (at least one alternate), that client then going last; None when no
        client has one. Jobs whose requests have left (or failed) are dropped."""
        for client, jobs in list(self._waiting.items()):
            while jobs and jobs[0].future.done():
                jobs.popleft()
            if not jobs:
                del self._waiting[client]
                continue
            job = jobs[0]
            if groups is not None and ((job.group is not None) != groups or (groups and room < 2)):
                continue
            piece = self._piece(job, room)
            if piece.last:
                jobs.popleft()
                if not job.future.set_running_or_notify_cancel():
                    continue
            self._waiting.move_to_end(client)
            if not jobs:
                del self._waiting[client]
            return piece
        return None

    @staticmethod
    def _piece(job: _Job, room: int) -> _Piece:
        """A job's next piece: its window, or its group's next alternates that fit in ``room``
        windows (at least one)."""
        group = job.group
        if group is None:
            return _Piece(job, None, True)
        count = max(1, room - 1)
        lo, hi = job.taken, min(job.taken + count, len(group.alternates))
        job.taken = hi
        if lo == 0 and hi == len(group.alternates):
            return _Piece(job, group, True)
        piece = CodedGroup(group.key, group.reference, group.alternates[lo:hi],
                           group.state if group.state is not None else job.state)
        return _Piece(job, piece, hi == len(group.alternates))

    def _gather(self) -> list[_Piece] | None:
        """The next batch: the next client's work, then more of its kind from the clients in
        turn as it comes within ``max_delay_s``, up to ``max_batch`` windows; None once closed."""
        with self._ready:
            first = None
            while first is None:
                if self._closed:
                    return None
                first = self._take(None, self.max_batch)
                if first is None:
                    self._ready.wait()
            pieces, size = [first], first.size
            deadline = time.monotonic() + self.max_delay_s
            while size < self.max_batch and not self._closed:
                piece = self._take(first.group is not None, self.max_batch - size)
                if piece is not None:
                    pieces.append(piece)
                    size += piece.size
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            return pieces

    def _run(self) -> None:
        while (pieces := self._gather()) is not None:
            try:
                if pieces[0].group is None:
                    outputs = list(self.engine.predict_coded(CodedWindows.concatenate([p.job.window for p in pieces])))
                    self.windows += len(pieces)
                else:
                    outputs = self._run_groups([p.group for p in pieces])
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                for piece in pieces:
                    if not piece.job.future.done():     # a piece before the last: its request may have left
                        piece.job.future.set_exception(err)
                continue
            self.batches += 1
            for piece, output in zip(pieces, outputs):
                self._finish(piece, output)

    @staticmethod
    def _finish(piece: _Piece, output) -> None:
        """A piece's output: the job's result when it was its last piece, else kept for it."""
        job = piece.job
        if piece.group is None or (piece.last and not job.made):
            job.future.set_result(output)
            return
        state, alternates = output
        job.state = state
        job.made.append(alternates)
        if piece.last:
            job.future.set_result((state, np.concatenate(job.made)))

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
