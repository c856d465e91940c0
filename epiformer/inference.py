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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .checkpoint import code_version
from .device import select_device
from .engine import Engine
from .errors import UserError
from .files import sha256_file
from .genome import Genome
from .modelset import ModelSet, load_model_set

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
    :meth:`~epiformer.engine.Engine.default_share_bins`; 0 centres each variant's own window).
    ``max_indel`` is the longest indel scored, in bp. ``on_mismatch`` is the rule for a REF that
    differs from the genome (:func:`~epiformer.variants.resolve_mismatch`): ``skip`` the variant,
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


def resolve_conservation(uses_conservation: bool, given: str | None) -> tuple[Path | None, str | None]:
    """The conservation track to read (or None) and a note to print, or :class:`InferenceError`
    when a model trained with conservation gets no track and no ``--no-conservation``."""
    if not uses_conservation:
        note = None
        if given and given != NO_CONSERVATION:
            note = "note: the model was trained without conservation (if_cons false); the conservation track is not used"
        return None, note
    if given == NO_CONSERVATION:
        return None, None
    if not given:
        raise InferenceError("the model was trained with conservation (if_cons true): give its track with --seqcons "
                             "(config: conservation), or --no-conservation (conservation: none) to run it without, "
                             "every base then a factor of 1")
    path = Path(given)
    if not path.is_file():
        raise InferenceError(f"conservation bigWig {path}: no such file")
    return path, None


class Predictor:
    """A model set, its genome and the engine that runs them, opened from one
    :class:`InferenceSettings` (see :func:`open_predictor`)."""

    def __init__(self, models: ModelSet, genome: Genome, engine: Engine, settings: InferenceSettings) -> None:
        self.models, self.genome, self.engine, self.settings = models, genome, engine, settings
        self._record: dict | None = None

    @property
    def conservation(self) -> Path | None:
        """The conservation track read, or None."""
        return self.genome.conservation_path

    @property
    def target_names(self) -> list[str]:
        return self.engine.target_names

    def record(self) -> dict:
        """The settings that made this predictor's numbers: targets, checkpoints and the
        conservation track (with checksums), precision, reverse complement, shifts, and where it
        ran (device type, CPU threads, code version)."""
        if self._record is None:
            if self.conservation is not None:
                conservation: object = {"file": self.conservation.name, "sha256": sha256_file(self.conservation)}
            else:
                conservation = NO_CONSERVATION if self.models.uses_conservation else "not used"
            self._record = {
                "targets": self.target_names,
                "checkpoints": [{"file": Path(s).name, "sha256": sha256_file(s)} for s in self.models.sources],
                "conservation": conservation,
                "precision": self.settings.precision,
                "reverse_complement": self.settings.reverse_complement,
                "shifts": list(self.settings.shifts),
                "device": self.engine.device.type,
                "threads": torch.get_num_threads() if self.engine.device.type == "cpu" else None,
                "compiled": self.settings.compile,
                "code_version": code_version(),
            }
        return dict(self._record)

    def close(self) -> None:
        self.genome.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def pin_threads(settings: InferenceSettings, device: torch.device) -> None:
    """Fix what decides the arithmetic: torch's CPU threads when set; deterministic kernels on CUDA."""
    if device.type == "cpu" and settings.threads:
        torch.set_num_threads(settings.threads)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


def open_predictor(models: ModelSetOptions | ModelSet, fasta: str | os.PathLike, settings: InferenceSettings,
                   log: Callable[[str], None] = print) -> Predictor:
    """The model set (loaded from ``models`` unless already one), the genome of ``fasta`` with the
    conservation track the settings and the model call for, and the engine, on the settings' device."""
    device = select_device(settings.device)
    pin_threads(settings, device)
    model_set = models if isinstance(models, ModelSet) else models.load()
    conservation, note = resolve_conservation(model_set.uses_conservation, settings.conservation)
    if note:
        log(note)
    engine = Engine(model_set, device=device, batch_size=settings.batch_size, bf16=settings.precision == "bf16",
                    reverse_complement=settings.reverse_complement, shifts=settings.shifts,
                    compile=settings.compile)
    return Predictor(model_set, Genome(fasta, conservation), engine, settings)

