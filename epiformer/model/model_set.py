"""Model sets: several checkpoints run as one predictor whose targets are the concatenation.

The published models are one single-output checkpoint per cell type; the project's own are
multi-output. A set is given as repeated ``-m`` specs: ``PATH``, ``NAME=PATH`` or a TSV of
``name, checkpoint[, output index]``. Checkpoints that predict the same target name (replicates,
folds) are averaged when asked.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from epiformer.errors import UserError
from epiformer.genome.targets import read_targets
from epiformer.model.checkpoints import load_model
from epiformer.model.config import ModelConfig
from epiformer.model.network import Epiformer


class ModelSetError(UserError, ValueError):
    """A model set that cannot be built, with a message naming the checkpoint or spec."""


@dataclass(frozen=True)
class ModelSpec:
    """One checkpoint of a set: its path, an optional target name and output index."""

    path: Path
    name: str | None = None
    output: int | None = None


def parse_model_specs(specs: Sequence[str]) -> list[ModelSpec]:
    """``PATH``, ``NAME=PATH`` or a ``.tsv`` listing name, checkpoint and optional output index."""
    parsed: list[ModelSpec] = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if sep and name and not Path(spec).exists():
            parsed.append(ModelSpec(Path(rest), name.strip()))
        elif spec.endswith((".tsv", ".txt")):
            parsed.extend(_read_model_table(Path(spec)))
        else:
            parsed.append(ModelSpec(Path(spec)))
    if not parsed:
        raise ModelSetError("no model given: pass -m CHECKPOINT (repeat it for a set)")
    return parsed


def _read_model_table(path: Path) -> list[ModelSpec]:
    if not path.is_file():
        raise ModelSetError(f"model table {path}: no such file")
    specs = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        fields = [f.strip() for f in line.split("\t")]
        if not line.strip() or line.startswith("#") or (line_no == 1 and fields[0].lower() == "name"):
            continue
        if len(fields) not in (2, 3):
            raise ModelSetError(f"{path}, line {line_no}: expected 'name<TAB>checkpoint[<TAB>output index]'")
        output = None
        if len(fields) == 3 and fields[2] != "":
            try:
                output = int(fields[2])
            except ValueError:
                raise ModelSetError(f"{path}, line {line_no}: output index must be an integer, "
                                    f"got {fields[2]!r}") from None
        checkpoint = Path(fields[1])
        if not checkpoint.is_absolute() and not checkpoint.exists():
            checkpoint = path.parent / checkpoint
        specs.append(ModelSpec(checkpoint, fields[0], output))
    return specs


class ModelSet(nn.Module):
    """Several models run on the same input; outputs concatenated (replicates averaged).

    Behaves like one :class:`Epiformer`: ``config`` (the shared window geometry),
    ``target_names`` and ``forward`` (batch, 4, seq_len) -> (batch, targets, bins).
    """

    def __init__(self, models: list[Epiformer], outputs: list[list[int]], names: list[list[str]],
                 average: bool = False, sources: list[str] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.outputs = outputs
        self.sources = sources or [f"model {i}" for i in range(len(models))]
        flat = [n for group in names for n in group]
        self.target_names = list(dict.fromkeys(flat))
        if len(self.target_names) != len(flat) and not average:
            duplicate = next(n for n in flat if flat.count(n) > 1)
            raise ModelSetError(f"target {duplicate!r} is predicted by {flat.count(duplicate)} checkpoints: "
                                "pass --average to average replicates, or name them differently")
        index = {n: i for i, n in enumerate(self.target_names)}
        self.register_buffer("_groups", torch.tensor([index[n] for n in flat]), persistent=False)
        self.register_buffer("_counts", torch.bincount(self._groups, minlength=len(self.target_names)),
                             persistent=False)
        first = models[0].config
        for model, source in zip(models, self.sources):
            if model.uses_conservation != models[0].uses_conservation:
                raise ModelSetError(f"{self.sources[0]} and {source} disagree on conservation (if_cons): "
                                    "a set must use one encoding")
            cfg = model.config
            if (cfg.seq_len, cfg.bin_size, cfg.crop_size) != (first.seq_len, first.bin_size, first.crop_size):
                raise ModelSetError(
                    f"checkpoints in one set must share seq_len, bin_size and crop_size: {self.sources[0]} has "
                    f"{first.seq_len}/{first.bin_size}/{first.crop_size}, {source} has "
                    f"{cfg.seq_len}/{cfg.bin_size}/{cfg.crop_size}")

    @property
    def config(self) -> ModelConfig:
        return self.members[0].config

    @property
    def uses_conservation(self) -> bool:
        return self.members[0].uses_conservation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine([model(x) for model in self.members])

    def combine(self, member_outputs: list[torch.Tensor]) -> torch.Tensor:
        """The set's output from each member's full output: chosen outputs concatenated, replicates averaged."""
        parts = [out[:, idx] for out, idx in zip(member_outputs, self.outputs)]
        stacked = torch.cat(parts, dim=1)
        if len(self.target_names) == stacked.shape[1]:
            return stacked
        out = torch.zeros(stacked.shape[0], len(self.target_names), stacked.shape[2],
                          dtype=stacked.dtype, device=stacked.device)
        out.index_add_(1, self._groups, stacked)
        return out / self._counts.to(stacked.dtype)[None, :, None]


def load_model_set(specs: Sequence[str], targets: str | os.PathLike | None = None, index: int | None = None,
                   average: bool = False, device: str | torch.device = "cpu") -> ModelSet:
    """Load every checkpoint of ``specs`` (see :func:`parse_model_specs`) as one :class:`ModelSet`.

    Original checkpoints carry no target names: they come from ``NAME=``, or from ``targets``
    (targets.txt) with ``index`` for a single-output checkpoint.
    """
    table = read_targets(targets) if targets else None
    models, outputs, names, sources = [], [], [], []
    for spec in parse_model_specs(specs):
        model = load_model(spec.path, device=device)
        n_out = model.config.multiout_dim
        chosen = list(range(n_out)) if spec.output is None else [spec.output]
        if spec.output is not None and not 0 <= spec.output < n_out:
            raise ModelSetError(f"checkpoint {spec.path} has {n_out} outputs; output index {spec.output} "
                                "is out of range")
        if spec.name is not None:
            if len(chosen) != 1:
                raise ModelSetError(f"NAME={spec.path} names one output, but {spec.path} has {n_out}: list it in "
                                    "a model table with an output index, or leave the name out")
            target_names = [spec.name]
        elif model.checkpoint_format == "epiformer":
            target_names = [model.target_names[i] for i in chosen]
        elif table is not None:
            target_names = _names_from_targets(spec.path, table, index, chosen, n_out, targets)
        else:
            raise ModelSetError(
                f"checkpoint {spec.path} carries no target names (original format): name it with "
                f"-m NAME={spec.path}, or pass --targets targets.txt (with --index N for a single-output "
                "checkpoint)")
        models.append(model)
        outputs.append(chosen)
        names.append(target_names)
        sources.append(str(spec.path))
    return ModelSet(models, outputs, names, average=average, sources=sources).to(device).eval()


def _names_from_targets(path: Path, table, index: int | None, chosen: list[int], n_out: int, targets) -> list[str]:
    if index is not None:
        if not 0 <= index < len(table):
            raise ModelSetError(f"--index {index} is out of range: {targets} lists {len(table)} targets")
        if n_out != 1:
            raise ModelSetError(f"--index names a single-output checkpoint, but {path} has {n_out} outputs")
        return [table[index].identifier]
    if n_out != len(table):
        raise ModelSetError(f"checkpoint {path} has {n_out} outputs but {targets} lists {len(table)} targets "
                            "(give --index N for a single-output checkpoint)")
    return [table[i].identifier for i in chosen]
