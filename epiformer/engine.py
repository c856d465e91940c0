"""The inference engine: the one place that turns encoded DNA into predictions.

It owns the device, precision and batching; callers hand it encoded windows (or genome
intervals) and get numpy arrays back.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

from .genome import Genome
from .model import Epiformer


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) picks CUDA when available, else CPU; otherwise the named device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} requested but CUDA is not available "
                           "(install a CUDA build of torch, or use --device cpu)")
    return chosen


class Engine:
    """Runs a model in eval mode under ``torch.inference_mode`` in batches on one device.

    ``bf16`` enables bfloat16 autocast on CUDA (ignored on CPU, where it is slower and
    less exact). Outputs are float32 numpy arrays of shape (N, targets, output bins).
    """

    def __init__(self, model: Epiformer, device: str | torch.device | None = "auto",
                 batch_size: int = 4, bf16: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.bf16 = bf16 and self.device.type == "cuda"

    @property
    def config(self):
        return self.model.config

    @property
    def target_names(self) -> list[str]:
        return self.model.target_names

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def predict(self, inputs: np.ndarray | torch.Tensor) -> np.ndarray:
        """Predictions for encoded windows (N, 4, seq_len) -> (N, targets, output bins)."""
        batch = torch.as_tensor(inputs, dtype=torch.float32)
        if batch.ndim == 2:
            batch = batch[None]
        seq_len = self.config.seq_len
        if batch.ndim != 3 or batch.shape[1] != 4 or batch.shape[2] != seq_len:
            raise ValueError(f"expected encoded windows of shape (N, 4, {seq_len}), "
                             f"got {tuple(batch.shape)}")
        outputs = list(self._run(batch))
        if not outputs:
            return np.zeros((0, self.config.multiout_dim, self.config.n_output_bins), np.float32)
        return np.concatenate(outputs)

    def _run(self, batch: torch.Tensor) -> Iterator[np.ndarray]:
        with torch.inference_mode(), self._autocast():
            for lo in range(0, batch.shape[0], self.batch_size):
                x = batch[lo: lo + self.batch_size].to(self.device, non_blocking=True)
                yield self.model(x).float().cpu().numpy()

    def predict_intervals(self, genome: Genome, intervals: list[tuple[str, int]]) -> np.ndarray:
        """Predictions for windows of ``seq_len`` starting at each (chrom, start) of ``genome``."""
        seq_len = self.config.seq_len
        encoded = np.stack([genome.encode(chrom, start, start + seq_len) for chrom, start in intervals]) \
            if intervals else np.zeros((0, 4, seq_len), np.float32)
        return self.predict(encoded)
