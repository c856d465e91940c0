"""The predictor every command and the server open: a model set, a genome and an engine made from
:class:`~epiformer.inference.settings.InferenceSettings`, with the settings record of its numbers."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from epiformer.genome.reader import Genome
from epiformer.inference.device import select_device
from epiformer.inference.engine import Engine
from epiformer.inference.settings import NO_CONSERVATION, InferenceError, InferenceSettings, ModelSetOptions
from epiformer.io.provenance import code_version
from epiformer.io.reading import sha256_file
from epiformer.model.model_set import ModelSet


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
