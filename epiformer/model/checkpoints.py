"""Loading and saving model checkpoints, in the original training script's format and our own.

Both are ``torch.save`` dictionaries with ``state_dict`` and ``param`` (the original's
hyperparameter names). Ours add ``format``, ``target_names``, ``genome``, ``metrics`` and
``code_version``; the original's carry no target names, so they are supplied by the caller or
default to ``target_0 .. target_{N-1}``.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from epiformer.errors import UserError
from epiformer.io.provenance import code_version
from epiformer.io.writing import atomic_path
from epiformer.model.config import ConfigError, ModelConfig
from epiformer.model.network import Epiformer

FORMAT = "epiformer-checkpoint"


FORMAT_VERSION = 1


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be loaded, with a message naming the file and the problem."""


def _safe_globals() -> list[Any]:
    """Non-tensor types that published checkpoints may pickle (numpy scalars in metrics)."""
    core = np._core if hasattr(np, "_core") else np.core
    scalar = core.multiarray.scalar
    dtype_classes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [scalar, np.dtype, *dtype_classes]


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint dictionary without executing arbitrary pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: the file is empty")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError,
            OSError, AttributeError, IndexError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path}: not a readable PyTorch checkpoint "
                              f"(truncated, corrupt or another format): {reason[:200]}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not isinstance(ckpt.get("param"), dict):
        found = ", ".join(map(str, list(ckpt)[:8])) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path}: not an Epiformer checkpoint: expected a dict "
                              f"with 'state_dict' and 'param', found {found or 'an empty dict'}")
    return ckpt


def _strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that nn.DataParallel / DistributedDataParallel add to keys."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               target_names: list[str] | None = None) -> Epiformer:
    """Load an original or project checkpoint as an :class:`Epiformer` in eval mode.

    ``target_names`` overrides the names stored in the checkpoint (required to name the
    outputs of an original checkpoint, which stores none).
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(ckpt["param"])
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: its 'param' does not describe a model: {err}") from None
    names = target_names or ckpt.get("target_names")
    if names is not None and len(names) != config.multiout_dim:
        raise CheckpointError(f"checkpoint {path} has {config.multiout_dim} outputs but "
                              f"{len(names)} target names were given")
    model = Epiformer(config, names)
    state = _strip_prefix(ckpt["state_dict"])
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})")
        raise CheckpointError(f"checkpoint {path}: weights do not match its configuration; "
                              + "; ".join(parts))
    model.load_state_dict(state)
    model.genome = ckpt.get("genome")
    model.metrics = ckpt.get("metrics") or {
        k: ckpt[k] for k in ("current_model_loss", "current_model_corr",
                             "current_valid_loss", "current_valid_corr") if k in ckpt}
    model.checkpoint_format = "epiformer" if ckpt.get("format") == FORMAT else "original"
    model.code_version = ckpt.get("code_version")
    trained_with = (ckpt.get("train_config") or {}).get("if_cons", config.extra.get("if_cons", True))
    model.uses_conservation = bool(trained_with)
    model.checkpoint_path = str(path)
    return model.to(device).eval()


def save_checkpoint(path: str | os.PathLike, model: Epiformer, *, genome: str | None = None,
                    metrics: dict[str, Any] | None = None, **state: Any) -> Path:
    """Write ``model`` atomically in the project format.

    Extra keyword arguments (optimizer, scheduler, epoch, ...) are stored as given.
    """
    model = getattr(model, "module", model)
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": model.state_dict(),
        "param": model.config.to_dict(),
        "target_names": list(model.target_names),
        "genome": genome,
        "metrics": metrics or {},
        "code_version": code_version(),
        **state,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def save_original_checkpoint(path: str | os.PathLike, model: Epiformer, *, if_cons: bool = True) -> Path:
    """Write ``model`` atomically as the original training script saved its checkpoints: the
    state_dict, ``param`` with the original's hyperparameter names (the model's, ``batch_first``
    and its training settings), the four metric fields and an optimizer entry, and no target
    names (a loader takes them from ``NAME=`` or a targets.txt, as for a published checkpoint)."""
    model = getattr(model, "module", model)
    param = {**model.config.to_dict(), "batch_first": True, "num_epoches": 100, "learning_rate": 1e-4,
             "batch_size": 8, "accum_iter": 8, "if_augment": True, "if_cons": if_cons, "penalty": 0}
    ckpt = {"state_dict": model.state_dict(), "optimizer": {}, "current_model_loss": float("nan"),
            "current_model_corr": float("nan"), "current_valid_loss": float("nan"),
            "current_valid_corr": float("nan"), "param": param}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path
