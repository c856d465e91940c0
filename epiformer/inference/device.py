"""The device a command runs on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked to exist."""
from __future__ import annotations

import torch

from epiformer.errors import UserError


class DeviceError(UserError, RuntimeError):
    """A device that cannot be used here, naming it."""


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) picks CUDA when available, else CPU; otherwise the named device, checked
    to exist (:class:`DeviceError` otherwise)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"device {device!r} is not one of auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device} requested but CUDA is not available here (torch "
                              f"{torch.__version__}, {'a CPU build' if torch.version.cuda is None else 'no GPU visible'}): "
                              "install a CUDA build of torch, or use --device cpu")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device} requested but only {torch.cuda.device_count()} GPU(s) are visible")
    elif chosen.type != "cpu":
        raise DeviceError(f"device {device!r} is not supported: use auto, cpu, cuda or cuda:N")
    return chosen
