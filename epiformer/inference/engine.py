"""The inference engine: the one place that runs the model on DNA.

It owns the device, precision, batching, and the reverse-complement and shift ensembling; callers
hand it encoded or coded windows, or genome intervals and regions (placed by
:class:`~epiformer.inference.windows.ModelWindows`, which it extends), and get numpy arrays back (float32,
(windows, targets, output bins)). Variant windows run incrementally through
:mod:`epiformer.inference.incremental`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from epiformer.genome.encoding import CodedWindows, encode_tensor
from epiformer.genome.reader import Genome
from epiformer.inference.device import select_device
from epiformer.inference.windows import ModelWindows


@dataclass(frozen=True)
class RegionTracks:
    """Predicted values per target over consecutive bins starting at ``start`` (0-based)."""

    chrom: str
    start: int
    bin_size: int
    values: np.ndarray           # (targets, bins) float32
    target_names: list[str]

    @property
    def end(self) -> int:
        return self.start + self.values.shape[1] * self.bin_size

    def bin_starts(self) -> np.ndarray:
        return self.start + self.bin_size * np.arange(self.values.shape[1])


class Engine(ModelWindows):
    """Runs a model (an :class:`~epiformer.model.network.Epiformer` or a
    :class:`~epiformer.model.model_set.ModelSet`) in eval mode under ``torch.inference_mode``.

    ``reverse_complement`` averages each window with its reverse complement (the prediction of
    the reverse strand flipped back); ``shifts`` (bp) averages windows moved by a few bases
    (genome intervals only). ``bf16`` runs the model under bfloat16 autocast, on CUDA and on CPU
    alike, so a precision gives the same kind of numbers on every device. ``compile`` compiles
    each model's forward pass with ``torch.compile`` (:meth:`Epiformer.compile_for_inference
    <epiformer.model.network.Epiformer.compile_for_inference>`): slower to start, faster to run. Where
    its windows lie is :class:`~epiformer.inference.windows.ModelWindows`'s rule for its model and shifts.
    """

    def __init__(self, model: nn.Module, device: str | torch.device | None = "auto",
                 batch_size: int = 4, bf16: bool = False, reverse_complement: bool = True,
                 shifts: Sequence[int] = (0,), compile: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        super().__init__(self.model.config, shifts)
        self.batch_size = batch_size
        self.bf16 = bf16
        self.reverse_complement = reverse_complement
        if compile:
            for member in getattr(self.model, "members", [self.model]):
                member.compile_for_inference()
        self.oom_splits = 0       # batches split after running out of device memory

    @property
    def target_names(self) -> list[str]:
        return list(self.model.target_names)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on the engine's device when ``bf16`` is on, else nothing."""
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
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
            return np.zeros((0, len(self.target_names), self.config.n_output_bins), np.float32)
        return np.concatenate(outputs)

    def _run(self, batch: torch.Tensor) -> Iterator[np.ndarray]:
        with torch.inference_mode(), self.autocast():
            for lo in range(0, batch.shape[0], self.batch_size):
                yield self.run_batch(batch[lo: lo + self.batch_size])

    def ensembled(self, x: torch.Tensor) -> torch.Tensor:
        """The model set's output for encoded windows on the device (N, 4, seq_len), averaged with
        the reverse complement's when it is on: (N, targets, output bins), float32. Differentiable
        (interpretation takes its gradients); :meth:`predict` runs it without them."""
        if not self.reverse_complement:
            return self.model(x).float()
        both = self.model(torch.cat([x, x.flip(1, 2)])).float()
        return (both[: len(x)] + both[len(x):].flip(2)) / 2

    def run_batch(self, x: torch.Tensor) -> np.ndarray:
        """One batch, reverse complement included. Out of device memory, the batch is split in two
        and each half retried (down to one window), so a large batch slows down instead of failing."""
        try:
            return self.ensembled(x.to(self.device, non_blocking=True)).cpu().numpy()
        except torch.OutOfMemoryError:
            if len(x) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(x) // 2
            self.oom_splits += 1
            return np.concatenate([self.run_batch(x[:half]), self.run_batch(x[half:])])

    def predict_coded(self, windows: CodedWindows) -> np.ndarray:
        """Predictions for coded windows (:class:`~epiformer.genome.encoding.CodedWindows`, each
        :attr:`coded_length` long), averaged over the shifts -> (N, targets, output bins).

        Codes and float16 conservation go to the device one batch at a time (from pinned memory
        on CUDA, the next batch's copy overlapping this batch's work); one-hot encoding, the
        shifts and the reverse complement are made there."""
        if windows.codes.ndim != 2 or windows.codes.shape[1] != self.coded_length:
            raise ValueError(f"expected coded windows of shape (N, {self.coded_length}), got {tuple(windows.codes.shape)}")
        batches = [windows[lo: lo + self.batch_size] for lo in range(0, len(windows), self.batch_size)]
        outputs = []
        with torch.inference_mode(), self.autocast():
            pending = self.to_device(batches[0]) if batches else None
            for k in range(len(batches)):
                on_device = pending
                if k + 1 < len(batches):
                    pending = self.to_device(batches[k + 1])
                total = None
                for shift in range(len(self.shifts)):
                    prediction = self.run_batch(self.encoded(on_device, shift))
                    total = prediction if total is None else total + prediction
                outputs.append(total / len(self.shifts))
        if not outputs:
            return np.zeros((0, len(self.target_names), self.config.n_output_bins), np.float32)
        return np.concatenate(outputs)

    def encode_coded(self, windows: CodedWindows) -> torch.Tensor:
        """The model inputs of coded windows on the device, once per shift: (shifts, N, 4, seq_len)."""
        on_device = self.to_device(windows)
        return torch.stack([self.encoded(on_device, shift) for shift in range(len(self.shifts))])

    def to_device(self, windows: CodedWindows) -> CodedWindows:
        def move(array):
            tensor = torch.as_tensor(array)
            if self.device.type != "cuda":
                return tensor
            return (tensor if tensor.is_pinned() else tensor.pin_memory()).to(self.device, non_blocking=True)
        return CodedWindows(move(windows.codes), None if windows.conservation is None else move(windows.conservation))

    def encoded(self, on_device: CodedWindows, shift: int) -> torch.Tensor:
        """Model inputs (N, 4, seq_len) of the ``shift``-th shift of coded windows on the device."""
        lo = self.shifts[shift] - min(self.shifts)
        codes = on_device.codes[:, lo: lo + self.config.seq_len]
        cons = None if on_device.conservation is None else on_device.conservation[:, lo: lo + self.config.seq_len]
        return encode_tensor(codes, cons)

    def predict_intervals(self, genome: Genome, intervals: Sequence[tuple[str, int]]) -> np.ndarray:
        """Predictions for windows of ``seq_len`` starting at each (chrom, start), averaged over
        ``shifts`` (every shifted window a slice of one coded window read from the genome)."""
        coded = [(chrom, self.coded_start(start)) for chrom, start in intervals]
        return self.predict_coded(genome.coded_windows(coded, self.coded_length))

    def predict_region(self, genome: Genome, chrom: str, start: int, end: int) -> RegionTracks:
        """Tracks over a region (0-based, half-open) from :meth:`region_windows`: the whole output
        of its one window, or the tiled windows' outputs trimmed to the bins holding the region."""
        genome.check_interval(chrom, start, end)
        starts = self.region_windows(start, end)
        prediction = self.predict_intervals(genome, [(chrom, s) for s in starts])
        values = np.concatenate(list(prediction), axis=1)
        first = starts[0] + self.output_offset
        if len(starts) > 1:
            n_bins = -(-(end - first) // self.config.bin_size)
            values = values[:, :n_bins]
        return RegionTracks(chrom, first, self.config.bin_size, values, self.target_names)
