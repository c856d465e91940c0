"""How coded windows are run: the scorer hands already-coded work to a runner and gets predictions back.

A runner has one small interface (:class:`WindowRunner`): :meth:`~WindowRunner.predict` runs
coded windows, :meth:`~WindowRunner.predict_groups` runs variant windows (a reference with its
alternates, :class:`CodedGroup`), and ``max_windows`` says how many windows' coded work it takes
in one call. :class:`LocalRunner` runs them on an engine in the caller's thread; the server's
batching runner (``epiformer.server.batching.BatchPredictor``) gathers them across requests.
Nothing a runner does calls back into its caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Protocol, Sequence

import numpy as np

from epiformer.genome.encoding import CodedWindows
from epiformer.inference.engine import Engine
from epiformer.inference.incremental import ReferenceState, predict_alternates

Alternates = tuple[ReferenceState, np.ndarray]   # a group's reference state, its alternates (N, targets, bins)


@dataclass(frozen=True)
class CodedGroup:
    """A variant window's coded work: its reference (1 window), its alternates (N windows, each
    alone), and the reference's state when an earlier run made it (then the reference does not
    run again). ``key`` names the window, so that groups of one window may run as one."""

    key: Hashable
    reference: CodedWindows
    alternates: CodedWindows
    state: ReferenceState | None = None

    @property
    def size(self) -> int:
        """Windows the group puts in a batch."""
        return 1 + len(self.alternates)


class WindowRunner(Protocol):
    """Runs coded windows of one engine's model (its window length, targets and output bins)."""

    max_windows: int | None       # the most windows of coded work one call takes (None: any number)

    def predict(self, windows: CodedWindows) -> np.ndarray:
        """Predictions of coded windows, averaged over the shifts: (N, targets, output bins)."""
        ...

    def predict_groups(self, groups: Sequence[CodedGroup]) -> list[Alternates]:
        """Per group, its reference state and its alternates' predictions (N, targets, bins)."""
        ...


class LocalRunner:
    """Runs coded work on ``engine`` in the calling thread, a few batches' worth at a time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.max_windows = 4 * engine.batch_size

    def predict(self, windows: CodedWindows) -> np.ndarray:
        return self.engine.predict_coded(windows)

    def predict_groups(self, groups: Sequence[CodedGroup]) -> list[Alternates]:
        return predict_alternates(self.engine, [(g.reference, g.alternates, g.state) for g in groups])
