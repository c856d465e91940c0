"""Inference and scoring settings: how every command and the server turn a model set and a genome
into numbers, and variants into scores.

Two dataclasses hold them, each default written once: :class:`InferenceSettings` (how the model
set runs) and :class:`ScoringSettings` (how a variant is scored); the commands' flags, the
server's configuration and its API document read their defaults from these. One
factory (:func:`open_predictor`) opens the model set, the genome and the engine from it; one
record (:meth:`Predictor.record`) describes them in every output that holds a number, so a
score, a track or a percentile can be traced to what made it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from epiformer.errors import UserError
from epiformer.model.model_set import ModelSet, load_model_set

PRECISIONS = ("fp32", "bf16")


NO_CONSERVATION = "none"


# Settings that change the numbers: outputs made with different values are not comparable.
COMPARED_SETTINGS = ("targets", "checkpoints", "conservation", "precision", "reverse_complement", "shifts")


MISMATCH_RULES = ("skip", "swap", "score")


class InferenceError(UserError, ValueError):
    """Settings that cannot be used (device, precision, conservation, scoring), naming the setting."""


@dataclass(frozen=True)
class InferenceSettings:
    """How a model set is run: the same fields, and defaults, for every command and the server.

    ``conservation`` is the conservation bigWig, ``"none"`` to run a model trained with
    conservation without it on purpose (every base a factor of 1), or None when not given (an
    error for such a model). ``threads`` pins torch's CPU threads per process (None: torch's
    default); results are bit-identical only for the same device type and threads. ``compile``
    runs the model through ``torch.compile`` (the same numbers up to float rounding).
    """

    device: str = "auto"
    precision: str = "fp32"
    reverse_complement: bool = True
    shifts: tuple[int, ...] = (0,)
    batch_size: int = 8
    conservation: str | None = None
    threads: int | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InferenceError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.batch_size < 1:
            raise InferenceError(f"batch size must be at least 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise InferenceError(f"threads must be at least 1, got {self.threads}")
        shifts = tuple(int(s) for s in self.shifts) or (0,)
        object.__setattr__(self, "shifts", shifts)


@dataclass(frozen=True)
class ScoringSettings:
    """How a variant is scored: the same fields, and defaults, for every command that scores and the server.

    ``score_bp`` scores the output bins within this many bp of the variant (0: every output bin,
    the SAD of Enformer and basenji). ``share_bins`` (K): variants within K bins of a window's
    centre share that window's reference (None: the model's default,
    :meth:`~epiformer.inference.engine.Engine.default_share_bins`; 0 centres each variant's own window).
    ``max_indel`` is the longest indel scored, in bp. ``on_mismatch`` is the rule for a REF that
    differs from the genome (:func:`~epiformer.variants.alleles.resolve_mismatch`): ``skip`` the variant,
    ``swap`` REF and ALT when ALT is the genome's base, or ``score`` ALT over the genome's bases.
    """

    score_bp: int = 1024
    share_bins: int | None = None
    max_indel: int = 100
    on_mismatch: str = "skip"

    def __post_init__(self) -> None:
        if self.score_bp < 0:
            raise InferenceError(f"score_bp must be 0 (the whole output) or positive, got {self.score_bp}")
        if self.share_bins is not None and self.share_bins < 0:
            raise InferenceError(f"share_bins must be 0 or more, got {self.share_bins}")
        if self.max_indel < 0:
            raise InferenceError(f"max_indel must be 0 or more, got {self.max_indel}")
        if self.on_mismatch not in MISMATCH_RULES:
            raise InferenceError(f"on_mismatch must be one of {', '.join(MISMATCH_RULES)}, got {self.on_mismatch!r}")


@dataclass(frozen=True)
class ModelSetOptions:
    """Which checkpoints make the model set: ``-m`` specs, targets.txt naming, ``--index``, ``--average``."""

    models: tuple[str, ...]
    targets: str | None = None
    index: int | None = None
    average: bool = False

    def load(self, device: str | torch.device = "cpu") -> ModelSet:
        return load_model_set(list(self.models), targets=self.targets, index=self.index, average=self.average,
                              device=device)


def settings_mismatch(made: dict, wanted: dict, keys: Sequence[str] = COMPARED_SETTINGS) -> str | None:
    """Why numbers made with settings record ``made`` cannot stand beside those of ``wanted``
    (the first setting that differs), or None when they agree on every one of ``keys``."""
    for key in keys:
        if made.get(key) != wanted.get(key):
            return f"{key} differs ({_short(made.get(key))} there, {_short(wanted.get(key))} here)"
    return None


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
